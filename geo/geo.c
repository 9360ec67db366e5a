/* geo.c - country and continent of an address, from a MaxMind database. */
#include "geo.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <maxminddb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct geo {
	MMDB_s db;
	char *path;
};

static const uint8_t v4mapped[12] = {
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff
};

static void
set_err(char **errmsg, const char *path, const char *why)
{
	if (errmsg == NULL)
		return;
	if (asprintf(errmsg, "%s: %s", path, why) == -1)
		*errmsg = NULL;
}

/*
 * Without a memfd copy (geo_mmdb_open()'s fallback): libmaxminddb maps
 * the file shared, so the pages under every lookup are the file's: one
 * rewritten in place (cp over it, curl -o, a truncation) changes them,
 * and a lookup past a new, shorter end is SIGBUS for the whole daemon.
 * Put a private copy at the same address instead (mremap(2) replaces the
 * mapping in one step), so the file is read only here and libmaxminddb's
 * pointers into it stay valid; MMDB_close() unmaps the copy as it would
 * the file.
 */
static int
geo_detach(struct geo *g)
{
	size_t len = (size_t)g->db.file_size;
	void *at = (void *)(uintptr_t)g->db.file_content;
	void *copy;

	copy = mmap(NULL, len, PROT_READ | PROT_WRITE,
	    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (copy == MAP_FAILED)
		return -1;
	memcpy(copy, at, len);
	if (mprotect(copy, len, PROT_READ) == -1 ||
	    mremap(copy, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, at) ==
	    MAP_FAILED) {
		munmap(copy, len);
		return -1;
	}
	return 0;
}

/*
 * Copies path into a memfd with read(2) and returns its descriptor, or -1
 * (errno set). Even the open reads the file through a shared mapping, so
 * a file cut short meanwhile (cp over it during a reload) would be SIGBUS
 * there too; read(2) only comes back short. The copy is moat's alone, so
 * libmaxminddb can map it as it likes.
 */
static int
geo_copy(const char *path)
{
	char buf[1 << 16];
	ssize_t r, w, off;
	int in, out, saved;

	if ((in = open(path, O_RDONLY | O_CLOEXEC)) == -1)
		return -1;
	if ((out = memfd_create("moat-geo", MFD_CLOEXEC)) == -1) {
		saved = errno;
		close(in);
		errno = saved;
		return -1;
	}
	while ((r = read(in, buf, sizeof(buf))) != 0) {
		if (r == -1) {
			if (errno == EINTR)
				continue;
			goto fail;
		}
		for (off = 0; off < r; off += w)
			if ((w = write(out, buf + off, (size_t)(r - off))) ==
			    -1)
				goto fail;
	}
	close(in);
	return out;
fail:
	saved = errno;
	close(in);
	close(out);
	errno = saved;
	return -1;
}

/* Opens the database from a private copy when the kernel allows memfds
 * and /proc is there, from the file itself (then detached) otherwise. */
static int
geo_mmdb_open(const char *path, MMDB_s *db, bool *copied)
{
	char fdpath[64];
	int fd, rc;

	*copied = false;
	if ((fd = geo_copy(path)) == -1) {
		if (errno != ENOSYS && errno != EPERM && errno != EMFILE &&
		    errno != ENFILE && errno != ENOMEM)
			return MMDB_FILE_OPEN_ERROR;
		return MMDB_open(path, MMDB_MODE_MMAP, db);
	}
	snprintf(fdpath, sizeof(fdpath), "/proc/self/fd/%d", fd);
	rc = MMDB_open(fdpath, MMDB_MODE_MMAP, db);
	if (rc == MMDB_FILE_OPEN_ERROR) {
		close(fd);
		return MMDB_open(path, MMDB_MODE_MMAP, db);
	}
	close(fd);	/* the mapping keeps the copy */
	*copied = rc == MMDB_SUCCESS;
	return rc;
}

struct geo *
geo_open(const char *path, char **errmsg)
{
	struct geo *g;
	const char *type;
	bool copied;
	int rc;

	if (errmsg != NULL)
		*errmsg = NULL;
	g = calloc(1, sizeof(*g));
	if (g == NULL || (g->path = strdup(path)) == NULL) {
		free(g);
		set_err(errmsg, path, "out of memory");
		return NULL;
	}
	rc = geo_mmdb_open(path, &g->db, &copied);
	if (rc != MMDB_SUCCESS) {
		/* MMDB_strerror says "Error opening the specified MaxMind
		 * DB file" for a missing file; errno says which error. */
		if (rc == MMDB_FILE_OPEN_ERROR) {
			char why[256];

			snprintf(why, sizeof(why), "%s (%s)",
			    MMDB_strerror(rc), strerror(errno));
			set_err(errmsg, path, why);
		} else
			set_err(errmsg, path, MMDB_strerror(rc));
		free(g->path);
		free(g);
		return NULL;
	}
	type = g->db.metadata.database_type;
	if (type == NULL || (strstr(type, "Country") == NULL &&
	    strstr(type, "City") == NULL)) {
		char why[256];

		snprintf(why, sizeof(why), "database type is \"%s\"; moat "
		    "needs a GeoIP2/GeoLite2 Country or City database",
		    type ? type : "(none)");
		set_err(errmsg, path, why);
		geo_close(g);
		return NULL;
	}
	if (!copied && geo_detach(g) == -1) {
		char why[256];

		snprintf(why, sizeof(why), "cannot copy the database into "
		    "memory: %s", strerror(errno));
		set_err(errmsg, path, why);
		geo_close(g);
		return NULL;
	}
	return g;
}

void
geo_close(struct geo *g)
{
	if (g == NULL)
		return;
	MMDB_close(&g->db);
	free(g->path);
	free(g);
}

/* Copies a two-letter code at path from entry into out, or "". */
static int
get_code(MMDB_entry_s *entry, char out[3], const char *key,
    const char *subkey)
{
	MMDB_entry_data_s data;
	int rc;

	out[0] = '\0';
	rc = MMDB_get_value(entry, &data, key, subkey, NULL);
	if (rc == MMDB_LOOKUP_PATH_DOES_NOT_MATCH_DATA_ERROR)
		return 0;	/* the record has no such key: unknown */
	if (rc != MMDB_SUCCESS)
		return -1;
	if (data.has_data && data.type == MMDB_DATA_TYPE_UTF8_STRING &&
	    data.data_size == 2) {
		memcpy(out, data.utf8_string, 2);
		out[2] = '\0';
	}
	return 0;
}

int
geo_lookup(const struct geo *g, const uint8_t addr[16], char country[3],
    char continent[3])
{
	struct sockaddr_storage ss;
	MMDB_lookup_result_s res;
	int mmdb_err = MMDB_SUCCESS;

	country[0] = continent[0] = '\0';
	memset(&ss, 0, sizeof(ss));
	if (memcmp(addr, v4mapped, sizeof(v4mapped)) == 0) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&ss;

		sin->sin_family = AF_INET;
		memcpy(&sin->sin_addr, addr + 12, 4);
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

		sin6->sin6_family = AF_INET6;
		memcpy(&sin6->sin6_addr, addr, 16);
	}
	/* libmaxminddb takes a non-const handle but only reads it. */
	res = MMDB_lookup_sockaddr((MMDB_s *)(uintptr_t)&g->db,
	    (const struct sockaddr *)&ss, &mmdb_err);
	if (mmdb_err == MMDB_IPV6_LOOKUP_IN_IPV4_DATABASE_ERROR)
		return 0;	/* an IPv4-only database knows no IPv6 */
	if (mmdb_err != MMDB_SUCCESS)
		return -1;
	if (!res.found_entry)
		return 0;
	if (get_code(&res.entry, country, "country", "iso_code") == -1 ||
	    get_code(&res.entry, continent, "continent", "code") == -1) {
		country[0] = continent[0] = '\0';
		return -1;
	}
	return 1;
}

const char *
geo_database_type(const struct geo *g)
{
	return g->db.metadata.database_type;
}

uint64_t
geo_build_epoch(const struct geo *g)
{
	return g->db.metadata.build_epoch;
}

const char *
geo_path(const struct geo *g)
{
	return g->path;
}

unsigned
geo_ip_version(const struct geo *g)
{
	return g->db.metadata.ip_version;
}

char *
geo_summary(const struct geo *g, int64_t now, char *buf, size_t len)
{
	time_t built = (time_t)g->db.metadata.build_epoch;
	int64_t days = (now - (int64_t)built) / 86400;
	char date[16] = "?";
	char age[32];
	struct tm tm;

	if (gmtime_r(&built, &tm) != NULL)
		strftime(date, sizeof(date), "%Y-%m-%d", &tm);
	if ((int64_t)built > now)
		snprintf(age, sizeof(age), "in the future");
	else if (days == 0)
		snprintf(age, sizeof(age), "today");
	else
		snprintf(age, sizeof(age), "%lld day%s ago", (long long)days,
		    days == 1 ? "" : "s");
	snprintf(buf, len, "%s: %s, built %s (%s), %s", g->path,
	    g->db.metadata.database_type, date, age,
	    g->db.metadata.ip_version == 4 ? "IPv4 only" : "IPv4 and IPv6");
	return buf;
}
