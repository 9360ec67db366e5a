/* geo.c - country and continent of an address, from a MaxMind database. */
#include "geo.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <maxminddb.h>
#include <stdatomic.h>
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
	_Atomic uint64_t errors;	/* lookups that failed (geo_errors) */
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
 * Copies path into a memfd with read(2); returns its descriptor, or -1
 * with errno set and *step saying what failed. libmaxminddb then maps the
 * copy, not the file: it maps what it opens shared, so a file rewritten
 * in place (cp over it, curl -o, a truncation) would change the pages
 * under every lookup, and one cut short would be SIGBUS for the whole
 * daemon, at a lookup or already while it opens. read(2) only comes back
 * short, and nobody else writes the copy.
 */
static int
geo_copy(const char *path, const char **step)
{
	char buf[1 << 16];
	ssize_t r, w, off;
	int in, out = -1, saved;

	*step = "cannot open it";
	if ((in = open(path, O_RDONLY | O_CLOEXEC)) == -1)
		return -1;
	*step = "cannot copy it into memory";
	if ((out = memfd_create("moat-geo", MFD_CLOEXEC)) == -1)
		goto fail;
	while ((r = read(in, buf, sizeof(buf))) != 0) {
		if (r == -1) {
			if (errno == EINTR)
				continue;
			*step = "cannot read it";
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
	if (out != -1)
		close(out);
	errno = saved;
	return -1;
}

struct geo *
geo_open(const char *path, char **errmsg)
{
	struct geo *g;
	const char *type, *step;
	char why[256], fdpath[64];
	int fd, rc, saved;

	if (errmsg != NULL)
		*errmsg = NULL;
	g = calloc(1, sizeof(*g));
	if (g == NULL || (g->path = strdup(path)) == NULL) {
		free(g);
		set_err(errmsg, path, "out of memory");
		return NULL;
	}
	if ((fd = geo_copy(path, &step)) == -1) {
		snprintf(why, sizeof(why), "%s (%s)", step, strerror(errno));
		goto fail;
	}
	/* libmaxminddb opens by name: the copy's name is under /proc. */
	snprintf(fdpath, sizeof(fdpath), "/proc/self/fd/%d", fd);
	rc = MMDB_open(fdpath, MMDB_MODE_MMAP, &g->db);
	saved = errno;
	close(fd);	/* the mapping keeps the copy */
	if (rc != MMDB_SUCCESS) {
		if (rc == MMDB_FILE_OPEN_ERROR)
			snprintf(why, sizeof(why), "cannot map its copy in "
			    "memory (%s: %s)", fdpath, strerror(saved));
		else
			/* An empty or truncated file (a download cut off)
			 * gets only "invalid metadata" or "read failed". */
			snprintf(why, sizeof(why), "%s%s", MMDB_strerror(rc),
			    rc == MMDB_INVALID_METADATA_ERROR ||
			    rc == MMDB_IO_ERROR ? " (not a MaxMind database, "
			    "or one cut short)" : "");
		goto fail;
	}
	type = g->db.metadata.database_type;
	if (type == NULL || (strstr(type, "Country") == NULL &&
	    strstr(type, "City") == NULL)) {
		snprintf(why, sizeof(why), "database type is \"%s\"; moat "
		    "needs a GeoIP2/GeoLite2 Country or City database",
		    type ? type : "(none)");
		set_err(errmsg, path, why);
		geo_close(g);
		return NULL;
	}
	return g;
fail:
	set_err(errmsg, path, why);
	free(g->path);
	free(g);
	return NULL;
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
		goto fail;
	if (!res.found_entry)
		return 0;
	if (get_code(&res.entry, country, "country", "iso_code") == -1 ||
	    get_code(&res.entry, continent, "continent", "code") == -1) {
		country[0] = continent[0] = '\0';
		goto fail;
	}
	return 1;
fail:
	/* Only the counter changes: lookups stay safe to share. */
	atomic_fetch_add_explicit(&((struct geo *)(uintptr_t)g)->errors, 1,
	    memory_order_relaxed);
	return -1;
}

uint64_t
geo_errors(const struct geo *g)
{
	return atomic_load_explicit(&((struct geo *)(uintptr_t)g)->errors,
	    memory_order_relaxed);
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
