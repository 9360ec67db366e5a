/* config.c - reads moat's TOML configuration and validates every key. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <openssl/ssl.h>

#include "ban.h"
#include "cidr.h"
#include "country.h"
#include "duration.h"
#include "toml.h"

/* Past this many errors the rest are noise caused by the first ones. */
#define MAX_ERRORS 50
/* A config file is small; a larger one is a mistake (or /dev/zero). */
#define CONFIG_MAX_BYTES (16u << 20)
/* allow_files/deny_files may be large feeds. */
#define LISTFILE_MAX_BYTES (512u << 20)
#define NAME_MAX_LEN 32

struct loader {
	const char *name;	/* file name used in diagnostics */
	const char *basedir;
	config_report_fn *report;
	void *arg;
	int nerrors;
	struct config *cfg;
	/* Values whose key gave an error (the first few): the checks that
	 * span sections leave them out, rather than judge a default. */
	const struct toml_value *bad[32];
	size_t nbad;
	/* Where each policy.deny entry was written, so that a warning
	 * about one names its own line: runs of entries from one source
	 * (file NULL: the config itself). */
	struct toml_pos *deny_pos;
	size_t deny_cap;
	struct list_src {
		const char *file;
		size_t start;
	} *deny_src;
	size_t ndeny_src;
};

struct key_spec;
typedef void key_fn(struct loader *, const struct toml_value *,
    struct toml_pos, void *);

struct key_spec {
	const char *name;
	key_fn *fn;
};

static const char *key_homes(const char *, size_t, const char *, char *,
    size_t);
static void vdiag(struct loader *, bool, const char *, struct toml_pos,
    const char *, va_list) __attribute__((format(printf, 5, 0)));

/*
 * Messages quote what the file says (names, values), and they go to a
 * terminal, syslog and moatctl: a control byte there (an escape sequence,
 * a newline starting a forged line) becomes '?'. toml_quote() spells
 * them out where a key or value is quoted on purpose.
 */
static void
printable(char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			*s = '?';
}

static void
vdiag(struct loader *l, bool is_error, const char *file, struct toml_pos pos,
    const char *fmt, va_list ap)
{
	char msg[512], line[1024];

	if (is_error && ++l->nerrors > MAX_ERRORS)
		return;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	if (is_error && l->nerrors == MAX_ERRORS)
		snprintf(msg, sizeof(msg), "too many errors, giving up");
	printable(msg);
	if (pos.line > 0)
		snprintf(line, sizeof(line), "%s:%d:%d: %s%s", file, pos.line,
		    pos.col, is_error ? "" : "warning: ", msg);
	else
		snprintf(line, sizeof(line), "%s: %s%s", file,
		    is_error ? "" : "warning: ", msg);
	l->report(l->arg, is_error ? CONFIG_ERROR : CONFIG_WARNING, line);
}

static void err_at(struct loader *, struct toml_pos, const char *, ...)
	__attribute__((format(printf, 3, 4)));
static void warn_at(struct loader *, struct toml_pos, const char *, ...)
	__attribute__((format(printf, 3, 4)));
static void err_file(struct loader *, const char *, struct toml_pos,
    const char *, ...) __attribute__((format(printf, 4, 5)));
static void warn_file(struct loader *, const char *, struct toml_pos,
    const char *, ...) __attribute__((format(printf, 4, 5)));

static void
err_at(struct loader *l, struct toml_pos pos, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vdiag(l, true, l->name, pos, fmt, ap);
	va_end(ap);
}

static void
warn_at(struct loader *l, struct toml_pos pos, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vdiag(l, false, l->name, pos, fmt, ap);
	va_end(ap);
}

static void
err_file(struct loader *l, const char *file, struct toml_pos pos,
    const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vdiag(l, true, file, pos, fmt, ap);
	va_end(ap);
}

static void
warn_file(struct loader *l, const char *file, struct toml_pos pos,
    const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vdiag(l, false, file, pos, fmt, ap);
	va_end(ap);
}

static void *
xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size);

	if (p == NULL) {
		perror("moat: calloc");
		abort();
	}
	return p;
}

static void *
xreallocarray(void *p, size_t n, size_t size)
{
	/* n * size overflows only past any memory a config could fill. */
	if ((p = realloc(p, n * size)) == NULL) {
		perror("moat: realloc");
		abort();
	}
	return p;
}

static char *
xstrdup(const char *s)
{
	char *p = strdup(s);

	if (p == NULL) {
		perror("moat: strdup");
		abort();
	}
	return p;
}

/* Levenshtein distance, capped: only used to suggest a close key name. */
static size_t
edit_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b), i, j;
	size_t row[NAME_MAX_LEN + 1];

	if (la > NAME_MAX_LEN || lb > NAME_MAX_LEN)
		return SIZE_MAX;
	for (j = 0; j <= lb; j++)
		row[j] = j;
	for (i = 1; i <= la; i++) {
		size_t diag = row[0];

		row[0] = i;
		for (j = 1; j <= lb; j++) {
			size_t up = row[j], best;

			best = diag + (a[i - 1] != b[j - 1]);
			if (up + 1 < best)
				best = up + 1;
			if (row[j - 1] + 1 < best)
				best = row[j - 1] + 1;
			diag = up;
			row[j] = best;
		}
	}
	return row[lb];
}

/*
 * Calls the handler of every key in t; anything not in specs is an error
 * at the key's own position, with a suggestion when one is close.
 */
static void
walk_table(struct loader *l, const struct toml_value *t, const char *section,
    const struct key_spec *specs, size_t nspecs, void *ctx)
{
	size_t i, j, n = toml_table_len(t);

	for (i = 0; i < n; i++) {
		struct toml_pos kpos;
		size_t klen;
		const char *key = toml_table_key(t, i, &klen, &kpos);
		const struct key_spec *hit = NULL;
		const char *close = NULL;
		char kq[128], homes[128];
		size_t best = 3;

		for (j = 0; j < nspecs; j++) {
			size_t d;

			if (strlen(specs[j].name) == klen &&
			    strcmp(specs[j].name, key) == 0) {
				hit = &specs[j];
				break;
			}
			d = edit_distance(key, specs[j].name);
			if (d < best) {
				best = d;
				close = specs[j].name;
			}
		}
		if (hit != NULL) {
			int before = l->nerrors;

			hit->fn(l, toml_table_at(t, i), kpos, ctx);
			if (l->nerrors > before &&
			    l->nbad < sizeof(l->bad) / sizeof(l->bad[0]))
				l->bad[l->nbad++] = toml_table_at(t, i);
			continue;
		}
		toml_quote(key, klen, kq, sizeof(kq));
		/* A known key under the wrong header (appended at the end of
		 * the file, say) is no typo: name its table instead. */
		if (key_homes(key, klen, section, homes, sizeof(homes)) !=
		    NULL)
			err_at(l, kpos, "unknown key '%s' in %s (it belongs in "
			    "%s)", kq, section, homes);
		else if (close != NULL)
			err_at(l, kpos, "unknown key '%s' in %s (did you mean "
			    "'%s'?)", kq, section, close);
		else
			err_at(l, kpos, "unknown key '%s' in %s", kq, section);
	}
}

static const char *
type_with_article(enum toml_type t)
{
	switch (t) {
	case TOML_TABLE:
		return "a table";
	case TOML_ARRAY:
		return "an array";
	case TOML_STRING:
		return "a string";
	case TOML_INTEGER:
		return "an integer";
	case TOML_FLOAT:
		return "a float";
	case TOML_BOOL:
		return "a boolean";
	default:
		return "a date/time";
	}
}

static bool
want_type(struct loader *l, const struct toml_value *v, enum toml_type t,
    const char *what)
{
	if (toml_type(v) == t)
		return true;
	err_at(l, toml_value_pos(v), "%s must be %s, not %s", what,
	    type_with_article(t), type_with_article(toml_type(v)));
	return false;
}

/* Strings with NUL bytes cannot be paths or names; refuse them early. */
static const char *
get_string(struct loader *l, const struct toml_value *v, const char *what)
{
	const char *s;
	size_t len;

	if (!want_type(l, v, TOML_STRING, what))
		return NULL;
	s = toml_string(v, &len);
	if (strlen(s) != len) {
		err_at(l, toml_value_pos(v), "%s must not contain NUL", what);
		return NULL;
	}
	return s;
}

static bool
get_uint(struct loader *l, const struct toml_value *v, const char *what,
    int64_t min, int64_t max, uint32_t *out)
{
	int64_t n;

	if (!want_type(l, v, TOML_INTEGER, what))
		return false;
	n = toml_integer(v);
	if (n < min || n > max) {
		err_at(l, toml_value_pos(v), "%s must be between %lld and "
		    "%lld, not %lld", what, (long long)min, (long long)max,
		    (long long)n);
		return false;
	}
	*out = (uint32_t)n;
	return true;
}

static bool
get_bool(struct loader *l, const struct toml_value *v, const char *what,
    bool *out)
{
	if (!want_type(l, v, TOML_BOOL, what))
		return false;
	*out = toml_bool(v);
	return true;
}

static bool
get_duration(struct loader *l, const struct toml_value *v, const char *what,
    uint64_t *ms)
{
	const char *s, *why;
	char reason[128];

	if (toml_type(v) == TOML_INTEGER) {
		err_at(l, toml_value_pos(v), "%s needs a unit: write \"%llds\" "
		    "rather than %lld", what, (long long)toml_integer(v),
		    (long long)toml_integer(v));
		return false;
	}
	if ((s = get_string(l, v, what)) == NULL)
		return false;
	if (duration_parse(s, ms, &why) == -1) {
		err_at(l, toml_value_pos(v), "invalid duration \"%s\" for %s: "
		    "%s", s, what, duration_why(s, reason, sizeof(reason)));
		return false;
	}
	return true;
}

static bool
get_enum(struct loader *l, const struct toml_value *v, const char *what,
    const char *const *names, int *out)
{
	const char *s;
	char list[256] = "";
	size_t off = 0;
	int i;

	if ((s = get_string(l, v, what)) == NULL)
		return false;
	for (i = 0; names[i] != NULL; i++) {
		if (strcmp(s, names[i]) == 0) {
			*out = i;
			return true;
		}
		off += (size_t)snprintf(list + off, sizeof(list) - off,
		    "%s\"%s\"", i == 0 ? "" : names[i + 1] ? ", " : " or ",
		    names[i]);
		if (off >= sizeof(list))
			off = sizeof(list) - 1;
	}
	err_at(l, toml_value_pos(v), "%s must be %s, not \"%s\"", what, list,
	    s);
	return false;
}

/* Relative paths are taken from the config file's directory, so a config
 * and its certificates can move together. */
static char *
resolve_path(struct loader *l, const char *s)
{
	char *p;

	if (s[0] == '/' || l->basedir == NULL)
		return xstrdup(s);
	if (asprintf(&p, "%s/%s", l->basedir, s) == -1) {
		perror("moat: asprintf");
		abort();
	}
	return p;
}

static bool
get_path(struct loader *l, const struct toml_value *v, const char *what,
    char **out)
{
	const char *s = get_string(l, v, what);

	if (s == NULL)
		return false;
	if (*s == '\0') {
		err_at(l, toml_value_pos(v), "%s must not be empty", what);
		return false;
	}
	free(*out);
	*out = resolve_path(l, s);
	return true;
}

static void
origin_add(struct config *cfg, const char *value, const char *key,
    struct toml_pos pos)
{
	cfg->origins = xreallocarray(cfg->origins, cfg->norigins + 1,
	    sizeof(*cfg->origins));
	cfg->origins[cfg->norigins++] = (struct cfg_origin){ value, key,
	    pos.line, pos.col };
}

/*
 * After a refusal e: who read, when not root. A reload after the switch
 * to daemon.user, or moat -t run by someone, where ls as root would show
 * a readable file.
 */
static const char *
read_as(int e, char *buf, size_t len)
{
	struct passwd *pw;

	buf[0] = '\0';
	if ((e == EACCES || e == EPERM) && geteuid() != 0) {
		pw = getpwuid(geteuid());
		if (pw != NULL)
			snprintf(buf, len, " (read as user '%s')", pw->pw_name);
		else
			snprintf(buf, len, " (read as uid %u)",
			    (unsigned)geteuid());
	}
	return buf;
}

/* A path that the daemon will read at start: say now if it cannot. */
static bool
get_readable_path(struct loader *l, const struct toml_value *v,
    const char *what, char **out)
{
	struct stat st;

	if (!get_path(l, v, what, out))
		return false;
	if (access(*out, R_OK) == -1 || stat(*out, &st) == -1) {
		char as[96];
		int e = errno;

		err_at(l, toml_value_pos(v), "%s: cannot read %s: %s%s", what,
		    *out, strerror(e), read_as(e, as, sizeof(as)));
		return false;
	}
	if (!S_ISREG(st.st_mode)) {
		err_at(l, toml_value_pos(v), "%s: %s is not a regular file",
		    what, *out);
		return false;
	}
	origin_add(l->cfg, *out, what, toml_value_pos(v));
	return true;
}

static void
strings_clear(struct cfg_strings *s)
{
	size_t i;

	for (i = 0; i < s->n; i++)
		free(s->v[i]);
	free(s->v);
	s->v = NULL;
	s->n = 0;
}

static void
strings_add(struct cfg_strings *s, char *owned)
{
	s->v = xreallocarray(s->v, s->n + 1, sizeof(*s->v));
	s->v[s->n++] = owned;
}

static void
cidrs_add(struct cfg_cidrs *c, const struct cidr *p)
{
	/* Grow geometrically: list files can hold a million prefixes. */
	if ((c->n & (c->n - 1)) == 0 || c->n < 16)
		c->v = xreallocarray(c->v, c->n < 16 ? 16 : c->n * 2,
		    sizeof(*c->v));
	c->v[c->n++] = *p;
}

/* Accepts an array only; a lone string is refused, with the way to write
 * it as an array. */
static bool
get_array(struct loader *l, const struct toml_value *v, const char *what)
{
	if (toml_type(v) == TOML_ARRAY)
		return true;
	err_at(l, toml_value_pos(v), "%s must be an array of strings, as in "
	    "[\"...\"]", what);
	return false;
}

/*
 * IPv4 lives under ::ffff:0:0/96 (addr.h), so an IPv6 prefix that covers
 * it, such as "::/8" or "::ffff:0:0/96" from a list of IPv6 martians,
 * matches every IPv4 client too, which IPv6 notation hardly ever means:
 * warn at file and pos. (0.0.0.0/0 says it plainly and is not warned about.)
 */
static void
warn_v4_cover(struct loader *l, const char *file, struct toml_pos pos,
    const char *what, const char *s, const struct cidr *c)
{

	if (strchr(s, ':') == NULL || !cidr_covers_v4(c))
		return;
	warn_file(l, file, pos, "%s%s\"%.64s\" matches every IPv4 client as "
	    "well: it covers ::ffff:0:0/96, where moat keeps IPv4 addresses "
	    "(0.0.0.0/0 says so plainly; remove it if only IPv6 is meant)",
	    what ? what : "", what ? ": " : "", s);
}

/* "" when a prefix of c covers every address, "IPv4 " when one covers
 * all of IPv4, else NULL: for warnings about lists that take in all. */
static const char *
covers_all(const struct cfg_cidrs *c)
{
	const char *all = NULL;

	for (size_t i = 0; i < c->n; i++) {
		if (c->v[i].plen == 0)
			return "";
		if (cidr_covers_v4(&c->v[i]))
			all = "IPv4 ";
	}
	return all;
}

/* Remembers where the entry just added to out was written, if out is
 * policy.deny (file NULL: in the config itself). */
static void
note_entry(struct loader *l, const struct cfg_cidrs *out, const char *file,
    struct toml_pos pos)
{
	size_t n = out->n;

	if (out != &l->cfg->policy.deny)
		return;
	if (n > l->deny_cap) {
		l->deny_cap = l->deny_cap < 16 ? 16 : l->deny_cap * 2;
		l->deny_pos = xreallocarray(l->deny_pos, l->deny_cap,
		    sizeof(*l->deny_pos));
	}
	l->deny_pos[n - 1] = pos;
	if (l->ndeny_src == 0 || l->deny_src[l->ndeny_src - 1].file != file) {
		l->deny_src = xreallocarray(l->deny_src, l->ndeny_src + 1,
		    sizeof(*l->deny_src));
		l->deny_src[l->ndeny_src++] = (struct list_src){ file, n - 1 };
	}
}

static void
get_cidrs(struct loader *l, const struct toml_value *v, const char *what,
    struct cfg_cidrs *out)
{
	size_t i;

	if (!get_array(l, v, what))
		return;
	for (i = 0; i < toml_array_len(v); i++) {
		const struct toml_value *e = toml_array_at(v, i);
		const char *s = get_string(l, e, what), *why;
		struct cidr c;

		if (s == NULL)
			continue;
		if (cidr_parse(s, &c, &why) == -1) {
			err_at(l, toml_value_pos(e), "invalid address or CIDR "
			    "\"%s\" in %s: %s", s, what, why);
			continue;
		}
		warn_v4_cover(l, l->name, toml_value_pos(e), what, s, &c);
		cidrs_add(out, &c);
		note_entry(l, out, NULL, toml_value_pos(e));
	}
}

/*
 * Reads a list file: one address or CIDR per line, '#' starts a comment,
 * blank lines ignored. Errors name the list file, line and column.
 */
static void
read_list_file(struct loader *l, const char *path, struct toml_pos where,
    struct cfg_cidrs *out)
{
	FILE *f;
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	int fd, lineno = 0;
	struct stat st;

	/* O_NONBLOCK: a FIFO with no writer would hold the start, or the
	 * main loop of a reload (signals, moatctl) for good. */
	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)) == -1) {
		char as[96];
		int e = errno;

		err_at(l, where, "cannot read list file %s: %s%s", path,
		    strerror(e), read_as(e, as, sizeof(as)));
		return;
	}
	/* A FIFO or a device (/dev/zero) has no size to bound it; /dev/null,
	 * a placeholder for an empty list, is read as one. */
	if (fstat(fd, &st) == -1 || (!S_ISREG(st.st_mode) &&
	    !(S_ISCHR(st.st_mode) && st.st_rdev == makedev(1, 3)))) {
		err_at(l, where, "list file %s is not a regular file", path);
		close(fd);
		return;
	}
	if (st.st_size > LISTFILE_MAX_BYTES) {
		err_at(l, where, "list file %s is larger than %u MiB", path,
		    LISTFILE_MAX_BYTES >> 20);
		close(fd);
		return;
	}
	if ((f = fdopen(fd, "r")) == NULL) {
		err_at(l, where, "cannot read list file %s: %s", path,
		    strerror(errno));
		close(fd);
		return;
	}
	while ((n = getline(&line, &cap, f)) != -1) {
		char *p = line, *end, *hash;
		const char *why;
		struct cidr c;

		lineno++;
		if ((hash = memchr(line, '#', (size_t)n)) != NULL)
			*hash = '\0', n = hash - line;
		if (memchr(line, '\0', (size_t)n) != NULL) {
			err_file(l, path, (struct toml_pos){ lineno, 1 },
			    "NUL byte in list file");
			continue;
		}
		/* A UTF-8 byte order mark, as Windows editors write it; the
		 * config itself may start with one too (toml.c). */
		if (lineno == 1 && strncmp(p, "\xef\xbb\xbf", 3) == 0)
			p += 3;
		while (*p == ' ' || *p == '\t')
			p++;
		end = p + strlen(p);
		while (end > p && (end[-1] == '\n' || end[-1] == '\r' ||
		    end[-1] == ' ' || end[-1] == '\t'))
			*--end = '\0';
		if (*p == '\0')
			continue;
		if (cidr_parse(p, &c, &why) == -1) {
			err_file(l, path, (struct toml_pos){ lineno,
			    (int)(p - line) + 1 }, "invalid address or CIDR "
			    "\"%.64s\": %s", p, why);
			if (l->nerrors > MAX_ERRORS)
				break;
			continue;
		}
		warn_v4_cover(l, path, (struct toml_pos){ lineno,
		    (int)(p - line) + 1 }, NULL, p, &c);
		cidrs_add(out, &c);
		note_entry(l, out, path, (struct toml_pos){ lineno,
		    (int)(p - line) + 1 });
	}
	if (ferror(f))
		err_at(l, where, "error reading list file %s: %s", path,
		    strerror(errno));
	free(line);
	fclose(f);
}

static void
get_list_files(struct loader *l, const struct toml_value *v, const char *what,
    struct cfg_strings *files, struct cfg_cidrs *out)
{
	size_t i;

	if (!get_array(l, v, what))
		return;
	for (i = 0; i < toml_array_len(v); i++) {
		const struct toml_value *e = toml_array_at(v, i);
		char *path = NULL;

		if (!get_path(l, e, what, &path))
			continue;
		read_list_file(l, path, toml_value_pos(e), out);
		strings_add(files, path);
		origin_add(l->cfg, path, what, toml_value_pos(e));
	}
}

static void
get_countries(struct loader *l, const struct toml_value *v, const char *what,
    struct cfg_strings *out)
{
	size_t i;

	if (!get_array(l, v, what))
		return;
	for (i = 0; i < toml_array_len(v); i++) {
		const struct toml_value *e = toml_array_at(v, i);
		const char *s = get_string(l, e, what);
		char up[3] = "";

		if (s == NULL)
			continue;
		if (strlen(s) == 2) {
			up[0] = s[0] >= 'a' && s[0] <= 'z' ? s[0] - 32 : s[0];
			up[1] = s[1] >= 'a' && s[1] <= 'z' ? s[1] - 32 : s[1];
		}
		if (!country_code_valid(s)) {
			/* "uk" must not be told to become "UK", which is
			 * wrong too: suggest only a code that is valid. */
			if (strcmp(up, "UK") == 0)
				err_at(l, toml_value_pos(e), "\"%s\" is not "
				    "an ISO 3166-1 code; the United Kingdom "
				    "is \"GB\"", s);
			else if (strcmp(up, s) != 0 && country_code_valid(up))
				err_at(l, toml_value_pos(e), "country codes "
				    "are upper case: write \"%s\" in %s", up,
				    what);
			else
				err_at(l, toml_value_pos(e), "\"%s\" in %s is "
				    "not an ISO 3166-1 alpha-2 country code",
				    s, what);
			continue;
		}
		if (strcmp(s, "EU") == 0 || strcmp(s, "AP") == 0)
			warn_at(l, toml_value_pos(e), "\"%s\" in %s does not "
			    "stand for %s: a database gives it, if at all, "
			    "only to networks registered there with no "
			    "country named, not to clients of the countries "
			    "there; list the countries themselves", s, what,
			    s[0] == 'E' ? "the European Union" :
			    "Asia-Pacific");
		strings_add(out, xstrdup(s));
	}
}

static bool
name_valid(const char *s, size_t max)
{
	size_t n = strlen(s);

	if (n == 0 || n > max)
		return false;
	for (; *s; s++) {
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		    (*s >= '0' && *s <= '9') || *s == '_' || *s == '-' ||
		    *s == '.'))
			return false;
	}
	return true;
}

/*
 * moat listens on an IPv4 address only in its own form: its IPv6
 * listening sockets are IPv6-only, so "[::ffff:192.0.2.1]:25" would fail
 * at bind. Returns false after saying how to write it.
 */
static bool
check_not_v4mapped(struct loader *l, struct toml_pos pos, const char *what,
    const char *s, const struct addr_port *ap)
{
	const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&ap->ss;
	char v4[INET_ADDRSTRLEN];

	if (ap->ss.ss_family != AF_INET6 ||
	    !addr_is_v4mapped(sin6->sin6_addr.s6_addr))
		return true;
	inet_ntop(AF_INET, sin6->sin6_addr.s6_addr + 12, v4, sizeof(v4));
	err_at(l, pos, "%s: \"%s\" is an IPv4 address in IPv6 form, which "
	    "moat cannot listen on: write \"%s:%u\"", what, s, v4,
	    ntohs(sin6->sin6_port));
	return false;
}

/* ---- [daemon] ---------------------------------------------------------- */

static void
k_daemon_user(struct loader *l, const struct toml_value *v,
    struct toml_pos kp, void *ctx)
{
	const char *s = get_string(l, v, "daemon.user");
	struct passwd *pw;

	(void)kp, (void)ctx;
	if (s == NULL)
		return;
	if ((pw = getpwnam(s)) == NULL) {
		err_at(l, toml_value_pos(v), "daemon.user: no such user \"%s\" "
		    "(create it, or remove the key to keep the starting user)",
		    s);
		return;
	}
	/* privdrop() refuses it at start; -t must not pass what cannot. */
	if (pw->pw_uid == 0) {
		err_at(l, toml_value_pos(v), "daemon.user '%s' is root; name an "
		    "unprivileged user or omit the key", s);
		return;
	}
	free(l->cfg->daemon.user);
	l->cfg->daemon.user = xstrdup(s);
}

static void
k_daemon_workers(struct loader *l, const struct toml_value *v,
    struct toml_pos kp, void *ctx)
{
	(void)kp, (void)ctx;
	get_uint(l, v, "daemon.workers", 0, 256, &l->cfg->daemon.workers);
}

static void
k_daemon_control(struct loader *l, const struct toml_value *v,
    struct toml_pos kp, void *ctx)
{
	(void)kp, (void)ctx;
	if (!get_path(l, v, "daemon.control_socket",
	    &l->cfg->daemon.control_socket))
		return;
	if (strlen(l->cfg->daemon.control_socket) >= 108)
		err_at(l, toml_value_pos(v), "daemon.control_socket: path is "
		    "longer than a unix socket address allows (107 bytes)");
	else
		origin_add(l->cfg, l->cfg->daemon.control_socket,
		    "daemon.control_socket", toml_value_pos(v));
}

static void
k_daemon_state(struct loader *l, const struct toml_value *v,
    struct toml_pos kp, void *ctx)
{
	(void)kp, (void)ctx;
	if (get_path(l, v, "daemon.state_file", &l->cfg->daemon.state_file))
		origin_add(l->cfg, l->cfg->daemon.state_file,
		    "daemon.state_file", toml_value_pos(v));
}

static void
k_daemon_metrics(struct loader *l, const struct toml_value *v,
    struct toml_pos kp, void *ctx)
{
	const char *s = get_string(l, v, "daemon.metrics"), *why;

	(void)kp, (void)ctx;
	if (s == NULL)
		return;
	if (addr_port_parse(s, &l->cfg->daemon.metrics, &why) == -1) {
		err_at(l, toml_value_pos(v), "daemon.metrics: invalid address "
		    "\"%s\": %s", s, why);
		return;
	}
	if (!check_not_v4mapped(l, toml_value_pos(v), "daemon.metrics", s,
	    &l->cfg->daemon.metrics))
		return;
	l->cfg->daemon.metrics_enabled = true;
}

static void
k_daemon_drain(struct loader *l, const struct toml_value *v,
    struct toml_pos kp, void *ctx)
{
	(void)kp, (void)ctx;
	get_duration(l, v, "daemon.drain_timeout", &l->cfg->daemon.drain_ms);
}

static void
k_daemon_log_level(struct loader *l, const struct toml_value *v,
    struct toml_pos kp, void *ctx)
{
	static const char *const names[] = { "warning", "info", "debug",
	    NULL };
	static const enum log_level levels[] = { LOG_LEVEL_WARNING,
	    LOG_LEVEL_INFO, LOG_LEVEL_DEBUG };
	int i;

	(void)kp, (void)ctx;
	if (get_enum(l, v, "daemon.log_level", names, &i))
		l->cfg->daemon.log_level = levels[i];
}

static void
k_daemon_max_sessions(struct loader *l, const struct toml_value *v,
    struct toml_pos kp, void *ctx)
{
	(void)kp, (void)ctx;
	get_uint(l, v, "daemon.max_sessions", 0, 1000000,
	    &l->cfg->daemon.max_sessions);
}

static void
k_daemon_reserved(struct loader *l, const struct toml_value *v,
    struct toml_pos kp, void *ctx)
{
	(void)kp, (void)ctx;
	get_uint(l, v, "daemon.reserved_sessions", 0, 1000000,
	    &l->cfg->daemon.reserved_sessions);
}

static const struct key_spec daemon_keys[] = {
	{ "user", k_daemon_user },
	{ "workers", k_daemon_workers },
	{ "control_socket", k_daemon_control },
	{ "state_file", k_daemon_state },
	{ "metrics", k_daemon_metrics },
	{ "drain_timeout", k_daemon_drain },
	{ "log_level", k_daemon_log_level },
	{ "max_sessions", k_daemon_max_sessions },
	{ "reserved_sessions", k_daemon_reserved },
};

/* ---- [tls] ------------------------------------------------------------- */

static void
k_tls_cert(struct loader *l, const struct toml_value *v, struct toml_pos kp,
    void *ctx)
{
	(void)kp, (void)ctx;
	get_readable_path(l, v, "tls.certificate", &l->cfg->tls.certificate);
}

static void
k_tls_key(struct loader *l, const struct toml_value *v, struct toml_pos kp,
    void *ctx)
{
	(void)kp, (void)ctx;
	get_readable_path(l, v, "tls.key", &l->cfg->tls.key);
}

static void
k_tls_min(struct loader *l, const struct toml_value *v, struct toml_pos kp,
    void *ctx)
{
	static const char *const names[] = { "1.2", "1.3", NULL };
	int i;

	(void)kp, (void)ctx;
	if (toml_type(v) == TOML_FLOAT) {
		err_at(l, toml_value_pos(v), "tls.min_version must be a "
		    "string: write \"1.2\" or \"1.3\" in quotes");
		return;
	}
	if (get_enum(l, v, "tls.min_version", names, &i))
		l->cfg->tls.min_version = i == 0 ? TLS1_2_VERSION :
		    TLS1_3_VERSION;
}

/*
 * A name a client can send in SNI (RFC 6066: no trailing dot), with an
 * optional leading "*." for one label: labels of 1 to 63 letters, digits
 * and inner hyphens. Anything else would never match, silently.
 */
static bool
sni_name_ok(const char *s)
{
	size_t n;

	if (strlen(s) > 253)
		return false;
	if (s[0] == '*' && s[1] == '.')
		s += 2;
	for (;;) {
		n = strspn(s, "abcdefghijklmnopqrstuvwxyz"
		    "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-");
		if (n == 0 || n > 63 || s[0] == '-' || s[n - 1] == '-')
			return false;
		if (s[n] == '\0')
			return true;
		if (s[n] != '.')
			return false;
		s += n + 1;
	}
}

/* The [[tls.sni]] entry before sni that already has name, or NULL. */
static const struct cfg_sni *
sni_owner(const struct config *cfg, const struct cfg_sni *sni,
    const char *name)
{
	const struct cfg_sni *o;
	size_t j;

	for (o = cfg->tls.sni; o <= sni; o++)
		for (j = 0; j < o->names.n; j++)
			if (strcmp(o->names.v[j], name) == 0)
				return o;
	return NULL;
}

static void
k_sni_names(struct loader *l, const struct toml_value *v, struct toml_pos kp,
    void *ctx)
{
	struct cfg_sni *sni = ctx;
	const struct cfg_sni *o;
	size_t i;

	(void)kp;
	if (!get_array(l, v, "tls.sni.names"))
		return;
	for (i = 0; i < toml_array_len(v); i++) {
		const struct toml_value *e = toml_array_at(v, i);
		const char *s = get_string(l, e, "tls.sni.names");
		char *low, *p;

		if (s == NULL)
			continue;
		if (!sni_name_ok(s)) {
			err_at(l, toml_value_pos(e), "tls.sni.names: \"%s\" is "
			    "not a host name (a leading \"*.\" is the only "
			    "wildcard allowed, and no trailing dot)", s);
			continue;
		}
		low = xstrdup(s);
		for (p = low; *p; p++)
			if (*p >= 'A' && *p <= 'Z')
				*p += 32;
		/* The first entry with a name wins: a second is a mistake
		 * that would never show. */
		if ((o = sni_owner(l->cfg, sni, low)) != NULL) {
			err_at(l, toml_value_pos(e), "tls.sni.names: \"%s\" is "
			    "already in %s [[tls.sni]] entry", s, o == sni ?
			    "this" : "an earlier");
			free(low);
			continue;
		}
		strings_add(&sni->names, low);
	}
}

static void
k_sni_cert(struct loader *l, const struct toml_value *v, struct toml_pos kp,
    void *ctx)
{
	struct cfg_sni *sni = ctx;

	(void)kp;
	get_readable_path(l, v, "tls.sni.certificate", &sni->certificate);
}

static void
k_sni_key(struct loader *l, const struct toml_value *v, struct toml_pos kp,
    void *ctx)
{
	struct cfg_sni *sni = ctx;

	(void)kp;
	get_readable_path(l, v, "tls.sni.key", &sni->key);
}

static const struct key_spec sni_keys[] = {
	{ "names", k_sni_names },
	{ "certificate", k_sni_cert },
	{ "key", k_sni_key },
};

static void
k_tls_sni(struct loader *l, const struct toml_value *v, struct toml_pos kp,
    void *ctx)
{
	struct config *cfg = l->cfg;
	size_t i, n;

	(void)ctx;
	if (toml_type(v) != TOML_ARRAY) {
		err_at(l, kp, "tls.sni must be written as [[tls.sni]] "
		    "sections");
		return;
	}
	n = toml_array_len(v);
	cfg->tls.sni = xcalloc(n, sizeof(*cfg->tls.sni));
	for (i = 0; i < n; i++) {
		const struct toml_value *t = toml_array_at(v, i);
		struct cfg_sni *sni = &cfg->tls.sni[cfg->tls.nsni];
		int before = l->nerrors;

		if (!want_type(l, t, TOML_TABLE, "each tls.sni entry"))
			continue;
		cfg->tls.nsni++;
		walk_table(l, t, "[[tls.sni]]", sni_keys,
		    sizeof(sni_keys) / sizeof(sni_keys[0]), sni);
		/* Not after a bad name was reported: that said it. */
		if (sni->names.n == 0 && (toml_table_get(t, "names") == NULL ||
		    l->nerrors == before))
			err_at(l, toml_value_pos(t), "[[tls.sni]] needs "
			    "names = [\"host.example\", ...]");
		if (sni->certificate == NULL || sni->key == NULL)
			err_at(l, toml_value_pos(t), "[[tls.sni]] needs both "
			    "certificate and key");
	}
}

static void
k_tls_tickets(struct loader *l, const struct toml_value *v,
    struct toml_pos kp, void *ctx)
{
	(void)kp, (void)ctx;
	get_bool(l, v, "tls.session_tickets", &l->cfg->tls.session_tickets);
}

static void
k_tls_rotation(struct loader *l, const struct toml_value *v,
    struct toml_pos kp, void *ctx)
{
	uint64_t *ms = &l->cfg->tls.ticket_rotation_ms;

	(void)kp, (void)ctx;
	if (!get_duration(l, v, "tls.ticket_rotation", ms))
		return;
	if (*ms < CFG_TICKET_ROTATION_MIN_MS ||
	    *ms > CFG_TICKET_ROTATION_MAX_MS)
		err_at(l, toml_value_pos(v), "tls.ticket_rotation must be "
		    "between 1s and 24h (a ticket is accepted for two "
		    "rotation periods)");
}

static const struct key_spec tls_keys[] = {
	{ "certificate", k_tls_cert },
	{ "key", k_tls_key },
	{ "min_version", k_tls_min },
	{ "session_tickets", k_tls_tickets },
	{ "ticket_rotation", k_tls_rotation },
	{ "sni", k_tls_sni },
};

/* ---- [[listener]] ------------------------------------------------------ */

struct listener_ctx {
	struct cfg_listener *lis;
	bool has_name, has_listen, has_protocol, has_tls, has_backend;
	bool tls_bad, from_bad;	/* said already: no follow-on errors */
	struct toml_pos accept_proxy_pos, tls_pos, bproxy_pos, timeouts_pos;
	struct toml_pos backend_pos;	/* line 0 unless backend parsed */
	struct toml_pos *listen_pos;	/* of each lis->listen entry */
};

static void
k_lis_name(struct loader *l, const struct toml_value *v, struct toml_pos kp,
    void *ctx)
{
	struct listener_ctx *lc = ctx;
	const char *s = get_string(l, v, "listener.name");

	(void)kp;
	lc->has_name = true;
	if (s == NULL)
		return;
	if (!name_valid(s, NAME_MAX_LEN)) {
		err_at(l, toml_value_pos(v), "listener.name \"%s\" must be 1 "
		    "to %d letters, digits, '.', '_' or '-' (it appears in "
		    "logs and metrics)", s, NAME_MAX_LEN);
		return;
	}
	lc->lis->name = xstrdup(s);
}

static void
k_lis_listen(struct loader *l, const struct toml_value *v,
    struct toml_pos kp, void *ctx)
{
	struct listener_ctx *lc = ctx;
	struct cfg_listener *lis = lc->lis;
	size_t i, n;

	(void)kp;
	lc->has_listen = true;
	if (!get_array(l, v, "listener.listen"))
		return;
	n = toml_array_len(v);
	if (n == 0) {
		err_at(l, toml_value_pos(v), "listener.listen is empty");
		return;
	}
	lis->listen = xcalloc(n, sizeof(*lis->listen));
	lc->listen_pos = xcalloc(n, sizeof(*lc->listen_pos));
	for (i = 0; i < n; i++) {
		const struct toml_value *e = toml_array_at(v, i);
		const char *s = get_string(l, e, "listener.listen"), *why;

		if (s == NULL)
			continue;
		if (addr_port_parse(s, &lis->listen[lis->nlisten], &why)
		    == -1) {
			err_at(l, toml_value_pos(e), "listener.listen: invalid "
			    "address \"%s\": %s", s, why);
			continue;
		}
		if (!check_not_v4mapped(l, toml_value_pos(e),
		    "listener.listen", s, &lis->listen[lis->nlisten]))
			continue;
		lc->listen_pos[lis->nlisten++] = toml_value_pos(e);
	}
}

static void
k_lis_protocol(struct loader *l, const struct toml_value *v,
    struct toml_pos kp, void *ctx)
{
	static const char *const names[] = { "smtp", "pop3", NULL };
	struct listener_ctx *lc = ctx;
	int i;

	(void)kp;
	lc->has_protocol = true;
	if (get_enum(l, v, "listener.protocol", names, &i))
		lc->lis->protocol = (enum cfg_protocol)i;
}

static void
k_lis_tls(struct loader *l, const struct toml_value *v, struct toml_pos kp,
    void *ctx)
{
	static const char *const names[] = { "none", "implicit", "starttls",
	    NULL };
	struct listener_ctx *lc = ctx;
	int i;

	(void)kp;
	lc->has_tls = true;
	lc->tls_pos = toml_value_pos(v);
	if (get_enum(l, v, "listener.tls", names, &i))
		lc->lis->tls = (enum cfg_tls_mode)i;
	else
		lc->tls_bad = true;
}

static void
k_lis_require_tls(struct loader *l, const struct toml_value *v,
    struct toml_pos kp, void *ctx)
{
	struct listener_ctx *lc = ctx;

	(void)kp;
	get_bool(l, v, "listener.require_tls", &lc->lis->require_tls);
}

static void
k_lis_backend(struct loader *l, const struct toml_value *v,
    struct toml_pos kp, void *ctx)
{
	struct listener_ctx *lc = ctx;
	const char *s = get_string(l, v, "listener.backend"), *why;

	(void)kp;
	lc->has_backend = true;
	if (s == NULL)
		return;
	if (addr_port_parse(s, &lc->lis->backend, &why) == -1)
		err_at(l, toml_value_pos(v), "listener.backend: invalid "
		    "address \"%s\": %s", s, why);
	else
		lc->backend_pos = toml_value_pos(v);
}

static void
k_lis_bproxy(struct loader *l, const struct toml_value *v,
    struct toml_pos kp, void *ctx)
{
	static const char *const names[] = { "none", "v1", "v2", "xclient",
	    NULL };
	struct listener_ctx *lc = ctx;
	int i;

	(void)kp;
	lc->bproxy_pos = toml_value_pos(v);
	if (get_enum(l, v, "listener.backend_proxy", names, &i))
		lc->lis->backend_proxy = (enum cfg_backend_proxy)i;
}

static void
k_lis_accept_proxy(struct loader *l, const struct toml_value *v,
    struct toml_pos kp, void *ctx)
{
	struct listener_ctx *lc = ctx;

	(void)kp;
	lc->accept_proxy_pos = toml_value_pos(v);
	get_bool(l, v, "listener.accept_proxy", &lc->lis->accept_proxy);
}

static void
k_lis_accept_from(struct loader *l, const struct toml_value *v,
    struct toml_pos kp, void *ctx)
{
	struct listener_ctx *lc = ctx;
	const char *all;
	int before = l->nerrors;

	get_cidrs(l, v, "listener.accept_proxy_from",
	    &lc->lis->accept_proxy_from);
	lc->from_bad = l->nerrors != before;
	/* Whoever may send the header may claim any address in it. */
	if ((all = covers_all(&lc->lis->accept_proxy_from)) != NULL)
		warn_at(l, kp, "listener.accept_proxy_from trusts every "
		    "%saddress: any client can send a PROXY header naming an "
		    "allow-listed address and pass the deny lists, "
		    "geofencing, rates and bans; list only the load "
		    "balancers", all);
}

/* Handshake and connect timeouts below this are warned about. */
#define TIMEOUT_SHORT_MS 1000

static void
k_to_handshake(struct loader *l, const struct toml_value *v,
    struct toml_pos kp, void *ctx)
{
	struct cfg_listener *lis = ctx;

	(void)kp;
	get_duration(l, v, "timeouts.handshake", &lis->handshake_ms);
}

static void
k_to_idle(struct loader *l, const struct toml_value *v, struct toml_pos kp,
    void *ctx)
{
	struct cfg_listener *lis = ctx;

	(void)kp;
	get_duration(l, v, "timeouts.idle", &lis->idle_ms);
}

static void
k_to_connect(struct loader *l, const struct toml_value *v,
    struct toml_pos kp, void *ctx)
{
	struct cfg_listener *lis = ctx;

	(void)kp;
	get_duration(l, v, "timeouts.connect", &lis->connect_ms);
}

static const struct key_spec timeout_keys[] = {
	{ "handshake", k_to_handshake },
	{ "idle", k_to_idle },
	{ "connect", k_to_connect },
};

static void
k_lis_timeouts(struct loader *l, const struct toml_value *v,
    struct toml_pos kp, void *ctx)
{
	struct listener_ctx *lc = ctx;
	struct cfg_listener *lis = lc->lis;

	(void)kp;
	if (!want_type(l, v, TOML_TABLE, "listener.timeouts"))
		return;
	lc->timeouts_pos = toml_value_pos(v);
	walk_table(l, v, "listener.timeouts", timeout_keys,
	    sizeof(timeout_keys) / sizeof(timeout_keys[0]), lis);
	if (lis->handshake_ms == 0 || lis->idle_ms == 0 ||
	    lis->connect_ms == 0)
		err_at(l, toml_value_pos(v), "listener.timeouts must all be "
		    "longer than zero");
	else {
		if (lis->handshake_ms < TIMEOUT_SHORT_MS)
			warn_at(l, toml_value_pos(v), "listener.timeouts."
			    "handshake is under a second: clients on slow or "
			    "distant links need several round trips for a "
			    "handshake and will fail it (default 10s)");
		if (lis->connect_ms < TIMEOUT_SHORT_MS)
			warn_at(l, toml_value_pos(v), "listener.timeouts."
			    "connect is under a second: it also bounds the "
			    "wait for the backend's greeting, which a busy "
			    "backend may take longer to send (default 5s)");
	}
}

static void
k_lis_max_line(struct loader *l, const struct toml_value *v,
    struct toml_pos kp, void *ctx)
{
	struct listener_ctx *lc = ctx;

	(void)kp;
	/* RFC 5321 4.5.3.1.4 requires at least 512 octets per command line. */
	get_uint(l, v, "listener.max_line", 512, 16384, &lc->lis->max_line);
}

static const struct key_spec listener_keys[] = {
	{ "name", k_lis_name },
	{ "listen", k_lis_listen },
	{ "protocol", k_lis_protocol },
	{ "tls", k_lis_tls },
	{ "require_tls", k_lis_require_tls },
	{ "backend", k_lis_backend },
	{ "backend_proxy", k_lis_bproxy },
	{ "accept_proxy", k_lis_accept_proxy },
	{ "accept_proxy_from", k_lis_accept_from },
	{ "timeouts", k_lis_timeouts },
	{ "max_line", k_lis_max_line },
};

/*
 * The idle default follows the protocol: RFC 5321 4.5.3.2.7 gives an
 * SMTP server 5 minutes, RFC 1939 3 lets a POP3 server log out an idle
 * client only after at least 10.
 */
#define IDLE_BY_PROTOCOL UINT64_MAX
#define IDLE_SMTP_MS (5 * 60 * 1000)
#define IDLE_POP3_MS (10 * 60 * 1000)

static void
listener_defaults(struct cfg_listener *lis)
{
	lis->protocol = CFG_PROTO_SMTP;
	lis->tls = CFG_TLS_NONE;
	lis->backend_proxy = CFG_BPROXY_V2;
	lis->handshake_ms = 10 * 1000;
	lis->idle_ms = IDLE_BY_PROTOCOL;
	lis->connect_ms = 5 * 1000;
	lis->max_line = 2048;
}

/*
 * Says at pos that who's address a cannot be bound beside b, which owner
 * holds (NULL: who itself, in an earlier entry). a_dual as above.
 */
static void
check_clash(struct loader *l, struct toml_pos pos, const char *who,
    const struct addr_port *a, const struct addr_port *b, const char *owner,
    bool a_dual)
{
	enum addr_clash c = addr_port_clash(a, b, a_dual);
	char as[ADDR_PORT_STRLEN], bs[ADDR_PORT_STRLEN];
	const char *why;

	if (c == ADDR_CLASH_NONE)
		return;
	addr_port_str(a, as, sizeof(as));
	addr_port_str(b, bs, sizeof(bs));
	if (c == ADDR_CLASH_SAME) {
		if (owner != NULL)
			err_at(l, pos, "%s: %s is already used by %s", who, as,
			    owner);
		else
			err_at(l, pos, "%s lists %s twice", who, as);
		return;
	}
	why = c == ADDR_CLASH_WILDCARD ? "a wildcard address takes its port on "
	    "every address of its family" : "the metrics socket on [::] takes "
	    "its port on IPv4 addresses too";
	if (owner != NULL)
		err_at(l, pos, "%s: %s overlaps %s of %s (%s)", who, as, bs,
		    owner, why);
	else
		err_at(l, pos, "%s: %s overlaps %s listed before it (%s)", who,
		    as, bs, why);
}

/*
 * One port on IPv4 and on IPv6 with another protocol or TLS mode: legal,
 * since the two bind apart, but a client of a name with both kinds of
 * address then gets one service or the other by its address family,
 * which nobody means. Two specific addresses may well serve two names,
 * so a wildcard on either side is what makes it sure. Returns whether it
 * warned.
 */
static bool
check_split_port(struct loader *l, struct toml_pos pos,
    const struct cfg_listener *a, const struct addr_port *aa,
    const struct cfg_listener *b, const struct addr_port *ba)
{
	char as[ADDR_PORT_STRLEN], bs[ADDR_PORT_STRLEN];

	if (addr_port_port(aa) != addr_port_port(ba) ||
	    aa->ss.ss_family == ba->ss.ss_family ||
	    (a->protocol == b->protocol && a->tls == b->tls) ||
	    (!addr_port_wildcard(aa) && !addr_port_wildcard(ba)))
		return false;
	warn_at(l, pos, "listener '%s': %s is %s with tls = \"%s\", but %s "
	    "of listener '%s' is %s with tls = \"%s\": which one a client "
	    "reaches on port %u depends on whether it comes over IPv4 or "
	    "IPv6", a->name, addr_port_str(aa, as, sizeof(as)),
	    cfg_protocol_str(a->protocol), cfg_tls_mode_str(a->tls),
	    addr_port_str(ba, bs, sizeof(bs)), b->name ? b->name : "?",
	    cfg_protocol_str(b->protocol), cfg_tls_mode_str(b->tls),
	    addr_port_port(aa));
	return true;
}

/*
 * Whether a connection to backend be would reach moat's own socket on
 * listen address ln. connect() to a wildcard address goes to loopback
 * (Linux), and a wildcard listener takes loopback too; IPv6 listeners
 * take no IPv4 (listener.c), which an IPv4-mapped backend is. A listener
 * on an address of the host other than loopback is caught only when
 * named exactly, since the loader does not look at the host's interfaces.
 */
static bool
backend_hits_listener(const struct addr_port *be, const struct addr_port *ln)
{
	static const uint8_t zero[16], lo4[4] = { 127, 0, 0, 1 },
	    lo6[16] = { [15] = 1 };
	uint8_t b[16], l[16];
	bool v4, b_any, l_lo;

	if (addr_port_port(be) != addr_port_port(ln) ||
	    addr_to_v6((const struct sockaddr *)&be->ss, b) == -1 ||
	    addr_to_v6((const struct sockaddr *)&ln->ss, l) == -1 ||
	    (v4 = addr_is_v4mapped(b)) != addr_is_v4mapped(l))
		return false;
	if (memcmp(b, l, 16) == 0)
		return true;
	b_any = v4 ? memcmp(b + 12, zero, 4) == 0 : memcmp(b, zero, 16) == 0;
	l_lo = v4 ? memcmp(l + 12, lo4, 4) == 0 : memcmp(l, lo6, 16) == 0;
	if (addr_port_wildcard(ln))
		return addr_is_local(b);
	return b_any && l_lo;
}

/*
 * A backend that is one of moat's own listen addresses (a typo such as
 * 127.0.0.1:587 for :10587) makes every session connect to moat again,
 * and again: within milliseconds the policy sees a flood from moat's own
 * address and bans it, which the kernel set then applies to everything
 * on loopback. Said for every pair, whichever listener comes first.
 */
static void
check_backend_loops(struct loader *l, const struct toml_pos *bpos)
{
	const struct config *cfg = l->cfg;
	char bs[ADDR_PORT_STRLEN], ls[ADDR_PORT_STRLEN];
	size_t i, j, k;

	for (i = 0; i < cfg->nlisteners; i++) {
		const struct cfg_listener *a = &cfg->listeners[i];

		if (a->name == NULL || bpos[i].line == 0)
			continue;
		for (j = 0; j < cfg->nlisteners; j++) {
			const struct cfg_listener *b = &cfg->listeners[j];

			if (b->name == NULL)
				continue;
			for (k = 0; k < b->nlisten; k++) {
				if (!backend_hits_listener(&a->backend,
				    &b->listen[k]))
					continue;
				addr_port_str(&a->backend, bs, sizeof(bs));
				addr_port_str(&b->listen[k], ls, sizeof(ls));
				if (i == j)
					err_at(l, bpos[i], "listener '%s': "
					    "backend %s reaches the listener's "
					    "own socket on %s, so moat would "
					    "connect to itself over and over "
					    "(the backend is the mail "
					    "server's port)", a->name, bs, ls);
				else
					err_at(l, bpos[i], "listener '%s': "
					    "backend %s reaches listener "
					    "'%s' on %s, so moat would connect "
					    "to itself and that listener "
					    "would see every client as moat's "
					    "own address (the backend is the "
					    "mail server's port)", a->name, bs,
					    b->name, ls);
				break;
			}
		}
	}
}

static void
check_listener(struct loader *l, struct listener_ctx *lc,
    struct toml_pos pos, size_t index)
{
	struct config *cfg = l->cfg;
	struct cfg_listener *lis = lc->lis;
	char who[NAME_MAX_LEN + 16], owner[NAME_MAX_LEN + 16];
	size_t i, j, k;
	bool split;

	if (lis->name == NULL) {
		if (!lc->has_name)
			err_at(l, pos, "[[listener]] needs a name = \"...\" "
			    "(used in logs, events and metrics)");
		return;
	}
	if (!lc->has_listen)
		err_at(l, pos, "listener '%s' needs listen = [\"IP:PORT\", "
		    "...]", lis->name);
	if (!lc->has_protocol)
		err_at(l, pos, "listener '%s' needs protocol = \"smtp\" or "
		    "\"pop3\"", lis->name);
	if (!lc->has_tls)
		err_at(l, pos, "listener '%s' needs tls = \"implicit\", "
		    "\"starttls\" or \"none\"", lis->name);
	if (!lc->has_backend)
		err_at(l, pos, "listener '%s' needs backend = \"IP:PORT\"",
		    lis->name);
	if (lis->backend_proxy == CFG_BPROXY_XCLIENT &&
	    lis->protocol != CFG_PROTO_SMTP)
		err_at(l, lc->bproxy_pos, "listener '%s': backend_proxy = "
		    "\"xclient\" is an SMTP extension; POP3 backends need "
		    "\"v1\" or \"v2\"", lis->name);
	if (lis->idle_ms == IDLE_BY_PROTOCOL)
		lis->idle_ms = lis->protocol == CFG_PROTO_POP3 ?
		    IDLE_POP3_MS : IDLE_SMTP_MS;
	else if (lis->protocol == CFG_PROTO_POP3 &&
	    lis->idle_ms < IDLE_POP3_MS)
		warn_at(l, lc->timeouts_pos, "listener '%s': timeouts.idle is "
		    "shorter than the 10 minutes RFC 1939 gives a POP3 "
		    "client between commands; mail clients that poll slowly "
		    "will be cut off", lis->name);
	else if (lis->protocol == CFG_PROTO_SMTP &&
	    lis->idle_ms < IDLE_SMTP_MS)
		warn_at(l, lc->timeouts_pos, "listener '%s': timeouts.idle is "
		    "shorter than the 5 minutes RFC 5321 4.5.3.2.7 gives an "
		    "SMTP client between commands; senders that pause (a "
		    "large message being prepared, a slow DNS lookup) will "
		    "be cut off", lis->name);
	if (lis->require_tls && lis->tls == CFG_TLS_NONE && !lc->tls_bad)
		err_at(l, lc->tls_pos.line ? lc->tls_pos : pos, "listener "
		    "'%s': require_tls = true needs tls = \"starttls\" (on "
		    "a plaintext listener there is no TLS to require)",
		    lis->name);
	else if (lis->require_tls && lis->tls == CFG_TLS_IMPLICIT)
		warn_at(l, pos, "listener '%s': require_tls has no effect with "
		    "tls = \"implicit\", where every command comes over TLS "
		    "already", lis->name);
	if (lis->accept_proxy && lis->accept_proxy_from.n == 0 &&
	    !lc->from_bad)
		err_at(l, lc->accept_proxy_pos, "listener '%s': accept_proxy "
		    "= true needs accept_proxy_from = [\"CIDR\", ...] naming "
		    "the load balancers allowed to send the header",
		    lis->name);
	if (!lis->accept_proxy && lis->accept_proxy_from.n > 0)
		warn_at(l, pos, "listener '%s': accept_proxy_from is ignored "
		    "while accept_proxy = false", lis->name);
	if (lis->protocol == CFG_PROTO_SMTP &&
	    lis->backend_proxy == CFG_BPROXY_NONE && lc->has_backend)
		warn_at(l, lc->bproxy_pos.line ? lc->bproxy_pos : pos,
		    "listener '%s': backend_proxy = \"none\" hides every "
		    "client's address from the backend, which then sees all "
		    "mail coming from moat's own address; a backend that "
		    "trusts that address (Postfix mynetworks includes "
		    "127.0.0.0/8) becomes an OPEN RELAY. Use \"v2\", \"v1\" "
		    "or \"xclient\" and configure the backend for it",
		    lis->name);

	/* Names and addresses must not collide with earlier listeners:
	 * the second bind would fail at start. */
	snprintf(who, sizeof(who), "listener '%s'", lis->name);
	for (i = 0; i < index; i++) {
		const struct cfg_listener *o = &cfg->listeners[i];

		if (o->name != NULL && strcmp(o->name, lis->name) == 0)
			err_at(l, pos, "duplicate listener name '%s' (first "
			    "used at line %d)", lis->name, o->line);
		snprintf(owner, sizeof(owner), "listener '%s'",
		    o->name ? o->name : "?");
		split = false;
		for (j = 0; j < lis->nlisten; j++)
			for (k = 0; k < o->nlisten; k++) {
				check_clash(l, lc->listen_pos[j], who,
				    &lis->listen[j], &o->listen[k], owner,
				    false);
				/* Once per pair of listeners. */
				split = split || check_split_port(l,
				    lc->listen_pos[j], lis, &lis->listen[j], o,
				    &o->listen[k]);
			}
	}
	for (j = 0; j < lis->nlisten; j++)
		for (k = 0; k < j; k++)
			check_clash(l, lc->listen_pos[j], who, &lis->listen[j],
			    &lis->listen[k], NULL, false);
}

static void
k_listener(struct loader *l, const struct toml_value *v, struct toml_pos kp,
    void *ctx)
{
	struct config *cfg = l->cfg;
	struct toml_pos *bpos;
	size_t i, n;

	(void)ctx;
	if (toml_type(v) != TOML_ARRAY) {
		err_at(l, kp, "listeners are written as [[listener]] sections "
		    "(an array of tables)");
		return;
	}
	n = toml_array_len(v);
	cfg->listeners = xcalloc(n, sizeof(*cfg->listeners));
	bpos = xcalloc(n ? n : 1, sizeof(*bpos));
	for (i = 0; i < n; i++) {
		const struct toml_value *t = toml_array_at(v, i);
		struct listener_ctx lc;

		if (!want_type(l, t, TOML_TABLE, "each listener"))
			continue;
		memset(&lc, 0, sizeof(lc));
		lc.lis = &cfg->listeners[cfg->nlisteners];
		listener_defaults(lc.lis);
		lc.lis->line = toml_value_pos(t).line;
		walk_table(l, t, "[[listener]]", listener_keys,
		    sizeof(listener_keys) / sizeof(listener_keys[0]), &lc);
		check_listener(l, &lc, toml_value_pos(t), cfg->nlisteners);
		free(lc.listen_pos);
		bpos[cfg->nlisteners] = lc.backend_pos;
		cfg->nlisteners++;
	}
	check_backend_loops(l, bpos);
	free(bpos);
}

/* ---- [policy] ---------------------------------------------------------- */

static void
k_pol_allow(struct loader *l, const struct toml_value *v, struct toml_pos kp,
    void *ctx)
{
	const char *all;

	(void)ctx;
	get_cidrs(l, v, "policy.allow", &l->cfg->policy.allow);
	if ((all = covers_all(&l->cfg->policy.allow)) != NULL)
		warn_at(l, kp, "policy.allow covers every %saddress: no such "
		    "client is ever refused, rate-limited or banned", all);
}

static void
k_pol_deny(struct loader *l, const struct toml_value *v, struct toml_pos kp,
    void *ctx)
{
	(void)kp, (void)ctx;
	get_cidrs(l, v, "policy.deny", &l->cfg->policy.deny);
}

static void
k_pol_allow_files(struct loader *l, const struct toml_value *v,
    struct toml_pos kp, void *ctx)
{
	(void)kp, (void)ctx;
	get_list_files(l, v, "policy.allow_files",
	    &l->cfg->policy.allow_files, &l->cfg->policy.allow);
}

static void
k_pol_deny_files(struct loader *l, const struct toml_value *v,
    struct toml_pos kp, void *ctx)
{
	(void)kp, (void)ctx;
	get_list_files(l, v, "policy.deny_files", &l->cfg->policy.deny_files,
	    &l->cfg->policy.deny);
}

static void
k_geo_db(struct loader *l, const struct toml_value *v, struct toml_pos kp,
    void *ctx)
{
	(void)kp, (void)ctx;
	get_readable_path(l, v, "policy.geo.database",
	    &l->cfg->policy.geo.database);
}

static void
k_geo_allow(struct loader *l, const struct toml_value *v, struct toml_pos kp,
    void *ctx)
{
	(void)kp, (void)ctx;
	get_countries(l, v, "policy.geo.allow_countries",
	    &l->cfg->policy.geo.allow_countries);
}

static void
k_geo_deny(struct loader *l, const struct toml_value *v, struct toml_pos kp,
    void *ctx)
{
	(void)kp, (void)ctx;
	get_countries(l, v, "policy.geo.deny_countries",
	    &l->cfg->policy.geo.deny_countries);
}

static void
k_geo_unknown(struct loader *l, const struct toml_value *v,
    struct toml_pos kp, void *ctx)
{
	static const char *const names[] = { "allow", "deny", NULL };
	int i;

	(void)kp, (void)ctx;
	if (get_enum(l, v, "policy.geo.unknown", names, &i))
		l->cfg->policy.geo.unknown = (enum cfg_geo_unknown)i;
}

static const struct key_spec geo_keys[] = {
	{ "database", k_geo_db },
	{ "allow_countries", k_geo_allow },
	{ "deny_countries", k_geo_deny },
	{ "unknown", k_geo_unknown },
};

static void
k_pol_geo(struct loader *l, const struct toml_value *v, struct toml_pos kp,
    void *ctx)
{
	struct config *cfg = l->cfg;

	(void)kp, (void)ctx;
	if (!want_type(l, v, TOML_TABLE, "policy.geo"))
		return;
	walk_table(l, v, "[policy.geo]", geo_keys,
	    sizeof(geo_keys) / sizeof(geo_keys[0]), NULL);
	if (cfg->policy.geo.allow_countries.n > 0 &&
	    cfg->policy.geo.deny_countries.n > 0)
		err_at(l, toml_value_pos(v), "[policy.geo]: set "
		    "allow_countries or deny_countries, not both "
		    "(allow_countries already rejects every other country)");
	if ((cfg->policy.geo.allow_countries.n > 0 ||
	    cfg->policy.geo.deny_countries.n > 0) &&
	    cfg->policy.geo.database == NULL)
		err_at(l, toml_value_pos(v), "[policy.geo]: country lists "
		    "need database = \"/path/to/GeoLite2-Country.mmdb\"");
	/* Without a database every address is unknown: a deny would
	 * shut out the world, so say it rather than ignore it. */
	else if (cfg->policy.geo.unknown == CFG_GEO_UNKNOWN_DENY &&
	    cfg->policy.geo.database == NULL)
		err_at(l, toml_value_pos(v), "[policy.geo]: unknown = "
		    "\"deny\" needs database = "
		    "\"/path/to/GeoLite2-Country.mmdb\"");
}

static void
get_window(struct loader *l, const struct toml_value *v, const char *what,
    struct cfg_window *w)
{
	size_t i, n;
	bool has_limit = false, has_window = false;
	char kq[128];

	if (!want_type(l, v, TOML_TABLE, what))
		return;
	n = toml_table_len(v);
	for (i = 0; i < n; i++) {
		struct toml_pos kpos;
		size_t klen;
		const char *key = toml_table_key(v, i, &klen, &kpos);
		const struct toml_value *e = toml_table_at(v, i);
		char sub[64];

		snprintf(sub, sizeof(sub), "%s.%s", what, key);
		if (klen == 5 && strcmp(key, "limit") == 0) {
			has_limit = true;
			/* The window counters are 16 bits wide. */
			get_uint(l, e, sub, 0, 65535, &w->limit);
		} else if (klen == 6 && strcmp(key, "window") == 0) {
			has_window = true;
			if (get_duration(l, e, sub, &w->window_ms) &&
			    (w->window_ms < 1000 ||
			    w->window_ms > 7ULL * 24 * 3600 * 1000))
				err_at(l, toml_value_pos(e), "%s must be "
				    "between 1s and 7d", sub);
		} else
			err_at(l, kpos, "unknown key '%s' in %s (expected "
			    "limit and window)", toml_quote(key, klen, kq,
			    sizeof(kq)), what);
	}
	/* limit = 0 turns the limit off, and then no window matters. */
	if (!has_limit || (!has_window && w->limit > 0))
		err_at(l, toml_value_pos(v), "%s needs both limit and window, "
		    "as in { limit = 30, window = \"1m\" } (or limit = 0 to "
		    "turn it off)", what);
}

static void
k_rate_conn(struct loader *l, const struct toml_value *v, struct toml_pos kp,
    void *ctx)
{
	(void)kp, (void)ctx;
	get_window(l, v, "policy.rate.connections",
	    &l->cfg->policy.rate.connections);
}

static void
k_rate_conc(struct loader *l, const struct toml_value *v, struct toml_pos kp,
    void *ctx)
{
	(void)kp, (void)ctx;
	get_uint(l, v, "policy.rate.concurrent_per_ip", 0, 1000000,
	    &l->cfg->policy.rate.concurrent_per_ip);
}

static void
k_rate_auth(struct loader *l, const struct toml_value *v, struct toml_pos kp,
    void *ctx)
{
	(void)kp, (void)ctx;
	get_window(l, v, "policy.rate.auth_failures",
	    &l->cfg->policy.rate.auth_failures);
}

static void
k_rate_agg4(struct loader *l, const struct toml_value *v, struct toml_pos kp,
    void *ctx)
{
	(void)kp, (void)ctx;
	get_uint(l, v, "policy.rate.aggregate_ipv4", 8, 32,
	    &l->cfg->policy.rate.aggregate_ipv4);
}

static void
k_rate_agg6(struct loader *l, const struct toml_value *v, struct toml_pos kp,
    void *ctx)
{
	(void)kp, (void)ctx;
	get_uint(l, v, "policy.rate.aggregate_ipv6", 16, 128,
	    &l->cfg->policy.rate.aggregate_ipv6);
}

static void
k_rate_max_tracked(struct loader *l, const struct toml_value *v,
    struct toml_pos kp, void *ctx)
{
	(void)kp, (void)ctx;
	get_uint(l, v, "policy.rate.max_tracked", 1000, 100000000,
	    &l->cfg->policy.rate.max_tracked);
}

static const struct key_spec rate_keys[] = {
	{ "connections", k_rate_conn },
	{ "concurrent_per_ip", k_rate_conc },
	{ "auth_failures", k_rate_auth },
	{ "aggregate_ipv4", k_rate_agg4 },
	{ "aggregate_ipv6", k_rate_agg6 },
	{ "max_tracked", k_rate_max_tracked },
};

static void
k_pol_rate(struct loader *l, const struct toml_value *v, struct toml_pos kp,
    void *ctx)
{
	(void)kp, (void)ctx;
	if (!want_type(l, v, TOML_TABLE, "policy.rate"))
		return;
	walk_table(l, v, "[policy.rate]", rate_keys,
	    sizeof(rate_keys) / sizeof(rate_keys[0]), NULL);
}

static const struct key_spec policy_keys[] = {
	{ "allow", k_pol_allow },
	{ "deny", k_pol_deny },
	{ "allow_files", k_pol_allow_files },
	{ "deny_files", k_pol_deny_files },
	{ "geo", k_pol_geo },
	{ "rate", k_pol_rate },
};

/* ---- [ban] ------------------------------------------------------------- */

static void
k_ban_duration(struct loader *l, const struct toml_value *v,
    struct toml_pos kp, void *ctx)
{
	(void)kp, (void)ctx;
	if (!get_duration(l, v, "ban.duration", &l->cfg->ban.duration_ms))
		return;
	if (l->cfg->ban.duration_ms < 1000)
		err_at(l, toml_value_pos(v), "ban.duration must be at least "
		    "1s");
	else if (l->cfg->ban.duration_ms > BAN_MAX_MS)
		err_at(l, toml_value_pos(v), "ban.duration must be at most "
		    BAN_MAX_TEXT);
}

static void
k_ban_escalation(struct loader *l, const struct toml_value *v,
    struct toml_pos kp, void *ctx)
{
	double d;

	(void)kp, (void)ctx;
	if (toml_type(v) == TOML_INTEGER)
		d = (double)toml_integer(v);
	else if (want_type(l, v, TOML_FLOAT, "ban.escalation"))
		d = toml_float(v);
	else
		return;
	if (!(d >= 1.0 && d <= 100.0)) {
		err_at(l, toml_value_pos(v), "ban.escalation must be between "
		    "1.0 (no escalation) and 100.0");
		return;
	}
	l->cfg->ban.escalation = d;
}

static void
k_ban_max(struct loader *l, const struct toml_value *v, struct toml_pos kp,
    void *ctx)
{
	(void)kp, (void)ctx;
	if (get_duration(l, v, "ban.max_duration",
	    &l->cfg->ban.max_duration_ms) &&
	    l->cfg->ban.max_duration_ms > BAN_MAX_MS)
		err_at(l, toml_value_pos(v), "ban.max_duration must be at most "
		    BAN_MAX_TEXT);
}

static void
k_ban_forget(struct loader *l, const struct toml_value *v, struct toml_pos kp,
    void *ctx)
{
	(void)kp, (void)ctx;
	/* 0 is how ban.c spells "unset" (max_duration): written out, it would
	 * silently mean a week rather than "forget at once". */
	if (get_duration(l, v, "ban.forget_after",
	    &l->cfg->ban.forget_after_ms) && l->cfg->ban.forget_after_ms < 1000)
		err_at(l, toml_value_pos(v), "ban.forget_after must be at least "
		    "1s (omit it to forget after ban.max_duration)");
}

static void
k_ban_max_entries(struct loader *l, const struct toml_value *v,
    struct toml_pos kp, void *ctx)
{
	(void)kp, (void)ctx;
	get_uint(l, v, "ban.max_entries", 1000, 100000000,
	    &l->cfg->ban.max_entries);
}

static const struct key_spec ban_keys[] = {
	{ "duration", k_ban_duration },
	{ "escalation", k_ban_escalation },
	{ "max_duration", k_ban_max },
	{ "forget_after", k_ban_forget },
	{ "max_entries", k_ban_max_entries },
};

/* ---- [firewall] -------------------------------------------------------- */

static void
get_fw_name(struct loader *l, const struct toml_value *v, const char *what,
    char **out)
{
	const char *s = get_string(l, v, what);

	if (s == NULL)
		return;
	/* ipset names are at most 31 bytes; keep nftables to the same. */
	if (!name_valid(s, 31) || strchr(s, '.') != NULL) {
		err_at(l, toml_value_pos(v), "%s \"%s\" must be 1 to 31 "
		    "letters, digits, '_' or '-'", what, s);
		return;
	}
	free(*out);
	*out = xstrdup(s);
}

static void
k_fw_backend(struct loader *l, const struct toml_value *v,
    struct toml_pos kp, void *ctx)
{
	static const char *const names[] = { "nftables", "ipset", "none",
	    NULL };
	int i;

	(void)kp, (void)ctx;
	if (get_enum(l, v, "firewall.backend", names, &i))
		l->cfg->firewall.backend = (enum cfg_firewall)i;
}

static void
k_fw_table(struct loader *l, const struct toml_value *v, struct toml_pos kp,
    void *ctx)
{
	(void)kp, (void)ctx;
	get_fw_name(l, v, "firewall.table", &l->cfg->firewall.table);
}

static void
k_fw_set4(struct loader *l, const struct toml_value *v, struct toml_pos kp,
    void *ctx)
{
	(void)kp, (void)ctx;
	get_fw_name(l, v, "firewall.set4", &l->cfg->firewall.set4);
}

static void
k_fw_set6(struct loader *l, const struct toml_value *v, struct toml_pos kp,
    void *ctx)
{
	(void)kp, (void)ctx;
	get_fw_name(l, v, "firewall.set6", &l->cfg->firewall.set6);
}

static void
k_fw_create(struct loader *l, const struct toml_value *v, struct toml_pos kp,
    void *ctx)
{
	(void)kp, (void)ctx;
	get_bool(l, v, "firewall.create", &l->cfg->firewall.create);
}

static const struct key_spec firewall_keys[] = {
	{ "backend", k_fw_backend },
	{ "create", k_fw_create },
	{ "table", k_fw_table },
	{ "set4", k_fw_set4 },
	{ "set6", k_fw_set6 },
};

/* ---- [events] ---------------------------------------------------------- */

static void
k_ev_file(struct loader *l, const struct toml_value *v, struct toml_pos kp,
    void *ctx)
{
	const char *s;

	(void)kp, (void)ctx;
	if ((s = get_string(l, v, "events.file")) == NULL)
		return;
	free(l->cfg->events.file);
	l->cfg->events.file = NULL;
	if (*s == '\0')
		return;
	if (strcmp(s, "-") == 0)
		l->cfg->events.file = xstrdup("-");
	else
		l->cfg->events.file = resolve_path(l, s);
	origin_add(l->cfg, l->cfg->events.file, "events.file",
	    toml_value_pos(v));
}

static void
k_ev_syslog(struct loader *l, const struct toml_value *v, struct toml_pos kp,
    void *ctx)
{
	(void)kp, (void)ctx;
	get_bool(l, v, "events.syslog", &l->cfg->events.syslog);
}

static const struct key_spec events_keys[] = {
	{ "file", k_ev_file },
	{ "syslog", k_ev_syslog },
};

/* ---- top level --------------------------------------------------------- */

#define SECTION(fn, spec, label)					\
static void								\
fn(struct loader *l, const struct toml_value *v, struct toml_pos kp,	\
    void *ctx)								\
{									\
	(void)kp, (void)ctx;						\
	if (want_type(l, v, TOML_TABLE, label))				\
		walk_table(l, v, "[" label "]", spec,			\
		    sizeof(spec) / sizeof(spec[0]), NULL);		\
}

SECTION(k_daemon, daemon_keys, "daemon")
SECTION(k_tls, tls_keys, "tls")
SECTION(k_policy, policy_keys, "policy")
SECTION(k_ban, ban_keys, "ban")
SECTION(k_firewall, firewall_keys, "firewall")
SECTION(k_events, events_keys, "events")

static const struct key_spec top_keys[] = {
	{ "daemon", k_daemon },
	{ "tls", k_tls },
	{ "listener", k_listener },
	{ "policy", k_policy },
	{ "ban", k_ban },
	{ "firewall", k_firewall },
	{ "events", k_events },
};

#define HOME(spec, label) { spec, sizeof(spec) / sizeof(spec[0]), label }

static const struct {
	const struct key_spec *spec;
	size_t n;
	const char *label;
} key_tables[] = {
	HOME(daemon_keys, "[daemon]"),
	HOME(tls_keys, "[tls]"),
	HOME(sni_keys, "[[tls.sni]]"),
	HOME(listener_keys, "[[listener]]"),
	HOME(timeout_keys, "listener.timeouts"),
	HOME(policy_keys, "[policy]"),
	HOME(geo_keys, "[policy.geo]"),
	HOME(rate_keys, "[policy.rate]"),
	HOME(ban_keys, "[ban]"),
	HOME(firewall_keys, "[firewall]"),
	HOME(events_keys, "[events]"),
	HOME(top_keys, "the top level"),
};

/* The tables other than section that have a key named key, as
 * "[tls] or [[tls.sni]]" in buf; NULL if none. */
static const char *
key_homes(const char *key, size_t klen, const char *section, char *buf,
    size_t len)
{
	size_t i, j, off = 0;

	buf[0] = '\0';
	for (i = 0; i < sizeof(key_tables) / sizeof(key_tables[0]); i++) {
		if (strcmp(key_tables[i].label, section) == 0)
			continue;
		for (j = 0; j < key_tables[i].n; j++)
			if (strlen(key_tables[i].spec[j].name) == klen &&
			    memcmp(key_tables[i].spec[j].name, key, klen) == 0)
				break;
		if (j == key_tables[i].n || off >= len)
			continue;
		off += (size_t)snprintf(buf + off, len - off, "%s%s",
		    off > 0 ? " or " : "", key_tables[i].label);
	}
	return buf[0] != '\0' ? buf : NULL;
}

/* daemon.reserved_sessions not given: a tenth of max_sessions. */
#define RESERVED_UNSET UINT32_MAX

static void
config_defaults(struct config *cfg)
{
	cfg->daemon.control_socket = xstrdup("/run/moat/control.sock");
	cfg->daemon.state_file = xstrdup("/var/lib/moat/state");
	cfg->daemon.workers = 1;
	cfg->daemon.drain_ms = 30 * 1000;
	cfg->daemon.log_level = LOG_LEVEL_INFO;
	cfg->daemon.max_sessions = 10000;
	cfg->daemon.reserved_sessions = RESERVED_UNSET;
	cfg->tls.min_version = TLS1_2_VERSION;
	cfg->tls.ticket_rotation_ms = 3600 * 1000;
	cfg->policy.geo.unknown = CFG_GEO_UNKNOWN_ALLOW;
	cfg->policy.rate.connections.limit = 30;
	cfg->policy.rate.connections.window_ms = 60 * 1000;
	cfg->policy.rate.concurrent_per_ip = 20;
	cfg->policy.rate.auth_failures.limit = 5;
	cfg->policy.rate.auth_failures.window_ms = 10 * 60 * 1000;
	cfg->policy.rate.aggregate_ipv4 = 32;
	cfg->policy.rate.aggregate_ipv6 = 128;
	cfg->policy.rate.max_tracked = 100000;
	cfg->ban.max_entries = 1000000;
	cfg->ban.duration_ms = 3600 * 1000;
	cfg->ban.escalation = 2.0;
	cfg->ban.max_duration_ms = 7ULL * 24 * 3600 * 1000;
	cfg->firewall.backend = CFG_FW_NFTABLES;
	cfg->firewall.table = xstrdup("moat");
	cfg->firewall.set4 = xstrdup("blocked4");
	cfg->firewall.set6 = xstrdup("blocked6");
	cfg->firewall.create = true;
	cfg->events.file = xstrdup("/var/log/moat/events.jsonl");
}

/*
 * Where key was written in [section], for checks made after the walk: the
 * section's own position when the key was not written, no position when
 * neither was.
 */
static struct toml_pos
key_pos(const struct toml_value *root, const char *section, const char *key)
{
	const struct toml_value *t = toml_table_get(root, section);
	struct toml_pos pos = { 0, 0 };
	size_t i, klen;
	const char *k;

	if (t == NULL)
		return pos;
	if (toml_type(t) != TOML_TABLE)
		return toml_value_pos(t);
	for (i = 0; i < toml_table_len(t); i++) {
		k = toml_table_key(t, i, &klen, &pos);
		if (k != NULL && strlen(k) == klen && strcmp(k, key) == 0)
			return pos;
	}
	return toml_value_pos(t);
}

/* Whether backend be reaches the metrics endpoint on m: on [::] it is
 * the one socket that is not IPv6-only (metrics.c), so it takes the port
 * on IPv4 addresses too, as 0.0.0.0 would. */
static bool
backend_hits_metrics(const struct addr_port *be, const struct addr_port *m)
{
	struct addr_port m4;
	const char *why;
	char s[16];

	if (backend_hits_listener(be, m))
		return true;
	if (m->ss.ss_family != AF_INET6 || !addr_port_wildcard(m))
		return false;
	snprintf(s, sizeof(s), "0.0.0.0:%u", (unsigned)addr_port_port(m));
	return addr_port_parse(s, &m4, &why) == 0 &&
	    backend_hits_listener(be, &m4);
}

/*
 * The metrics endpoint binds beside the listeners; an address the
 * listeners hold already would make the start fail.
 */
static void
check_metrics(struct loader *l, const struct toml_value *root)
{
	const struct config *cfg = l->cfg;
	const struct addr_port *m = &cfg->daemon.metrics;
	const struct toml_value *d = toml_table_get(root, "daemon"), *v;
	struct toml_pos pos = { 0, 0 };
	char owner[NAME_MAX_LEN + 16];
	size_t i, j;

	if (!cfg->daemon.metrics_enabled)
		return;
	if (d != NULL && toml_type(d) == TOML_TABLE &&
	    (v = toml_table_get(d, "metrics")) != NULL)
		pos = toml_value_pos(v);
	for (i = 0; i < cfg->nlisteners; i++) {
		const struct cfg_listener *lis = &cfg->listeners[i];

		if (lis->name == NULL)
			continue;	/* said already */
		snprintf(owner, sizeof(owner), "listener '%s'", lis->name);
		for (j = 0; j < lis->nlisten; j++)
			check_clash(l, pos, "daemon.metrics", m,
			    &lis->listen[j], owner, true);
		if (backend_hits_metrics(&lis->backend, m)) {
			char bs[ADDR_PORT_STRLEN];

			err_at(l, pos, "daemon.metrics: listener '%s' has its "
			    "backend at %s, moat's own metrics endpoint "
			    "(the backend is the mail server's port)",
			    lis->name, addr_port_str(&lis->backend, bs,
			    sizeof(bs)));
		}
	}
}

/* Whether section.key (section NULL: a top-level key) was read without
 * an error, or is absent and has its default. With more bad keys than
 * are remembered, none is trusted. */
static bool
key_ok(const struct loader *l, const struct toml_value *root,
    const char *section, const char *key)
{
	const struct toml_value *v = root;
	size_t i;

	if (section != NULL) {
		v = toml_table_get(root, section);
		if (v != NULL && toml_type(v) != TOML_TABLE)
			return false;
	}
	if (v == NULL || (v = toml_table_get(v, key)) == NULL)
		return true;
	if (l->nbad == sizeof(l->bad) / sizeof(l->bad[0]))
		return false;
	for (i = 0; i < l->nbad; i++)
		if (l->bad[i] == v)
			return false;
	return true;
}

/*
 * Allow wins over deny, so a deny entry inside the allow list refuses
 * nobody: most likely the two lists were meant the other way round, or an
 * allow entry is wider than meant. Said once, with a count, since a deny
 * file may hold thousands.
 */
static void
check_deny_in_allow(struct loader *l)
{
	const struct cfg_cidrs *allow = &l->cfg->policy.allow;
	const struct cfg_cidrs *deny = &l->cfg->policy.deny;
	const struct list_src *src = NULL;
	struct cidr_set *set;
	size_t i, n = 0, first = 0;
	char cs[CIDR_STRLEN], more[64] = "";

	if (allow->n == 0 || deny->n == 0 || l->ndeny_src == 0 ||
	    (set = cidr_set_new(allow->v, allow->n)) == NULL)
		return;
	for (i = 0; i < deny->n; i++)
		if (cidr_set_covers(set, &deny->v[i]) && n++ == 0)
			first = i;
	cidr_set_free(set);
	if (n == 0)
		return;
	for (i = 0; i < l->ndeny_src && l->deny_src[i].start <= first; i++)
		src = &l->deny_src[i];
	cidr_str(&deny->v[first], cs, sizeof(cs));
	if (n > 1)
		snprintf(more, sizeof(more), "; so do%s %zu more deny entr%s",
		    n == 2 ? "es" : "", n - 1, n == 2 ? "y" : "ies");
	warn_file(l, src->file ? src->file : l->name, l->deny_pos[first],
	    "deny entry \"%s\" lies wholly inside policy.allow, which wins, "
	    "so it refuses nobody%s", cs, more);
}

/*
 * Saves replace daemon.state_file by a rename, and the start renames a
 * file it cannot read aside: the events file or the control socket there
 * would be lost. Said at the state file's key when it was written.
 */
static void
check_state_file(struct loader *l, const struct toml_value *root)
{
	const struct config *cfg = l->cfg;
	const struct {
		const char *section, *key, *what, *path;
	} other[] = {
		{ "daemon", "control_socket", "control socket",
		    cfg->daemon.control_socket },
		{ "events", "file", "events file", cfg->events.file },
	};
	const struct toml_value *d = toml_table_get(root, "daemon");
	bool written = d != NULL && toml_type(d) == TOML_TABLE &&
	    toml_table_get(d, "state_file") != NULL;

	if (cfg->daemon.state_file == NULL ||
	    !key_ok(l, root, "daemon", "state_file"))
		return;
	for (size_t i = 0; i < sizeof(other) / sizeof(other[0]); i++) {
		if (other[i].path == NULL ||
		    strcmp(other[i].path, cfg->daemon.state_file) != 0 ||
		    !key_ok(l, root, other[i].section, other[i].key))
			continue;
		err_at(l, written ? key_pos(root, "daemon", "state_file") :
		    key_pos(root, other[i].section, other[i].key),
		    "daemon.state_file and %s.%s are both %s: saving the bans "
		    "would replace the %s", other[i].section, other[i].key,
		    cfg->daemon.state_file, other[i].what);
	}
}

/*
 * Checks that span sections, after every key has been read: also when
 * some key gave an error, so that moat -t says every problem at once,
 * but never about a value that failed (it holds its default).
 */
static void
config_check(struct loader *l, const struct toml_value *root)
{
	struct config *cfg = l->cfg;
	const struct toml_value *tls = toml_table_get(root, "tls");
	struct toml_pos tpos = tls ? toml_value_pos(tls) :
	    (struct toml_pos){ 0, 0 };
	size_t i;
	bool need_tls = false, tls_ok;

	if (cfg->nlisteners == 0 && key_ok(l, root, NULL, "listener"))
		err_at(l, (struct toml_pos){ 0, 0 }, "no [[listener]] is "
		    "configured; moat would have nothing to do");
	for (i = 0; i < cfg->nlisteners; i++)
		if (cfg->listeners[i].tls != CFG_TLS_NONE)
			need_tls = true;
	tls_ok = key_ok(l, root, "tls", "certificate") &&
	    key_ok(l, root, "tls", "key");
	if (need_tls && (cfg->tls.certificate == NULL ||
	    cfg->tls.key == NULL) && tls_ok)
		err_at(l, tpos, "a listener uses TLS, so [tls] needs "
		    "certificate and key");
	else if ((cfg->tls.certificate == NULL) !=
	    (cfg->tls.key == NULL) && tls_ok)
		err_at(l, tpos, "[tls] needs both certificate and key");
	if (cfg->daemon.reserved_sessions == RESERVED_UNSET)
		cfg->daemon.reserved_sessions = cfg->daemon.max_sessions / 10;
	else if (cfg->daemon.max_sessions == 0 &&
	    cfg->daemon.reserved_sessions > 0 &&
	    key_ok(l, root, "daemon", "max_sessions"))
		warn_at(l, key_pos(root, "daemon", "reserved_sessions"),
		    "daemon.reserved_sessions does nothing while "
		    "daemon.max_sessions = 0 sets no cap to keep slots "
		    "below");
	else if (key_ok(l, root, "daemon", "max_sessions") &&
	    key_ok(l, root, "daemon", "reserved_sessions") &&
	    cfg->daemon.max_sessions > 0 &&
	    cfg->daemon.reserved_sessions >= cfg->daemon.max_sessions)
		err_at(l, key_pos(root, "daemon", "reserved_sessions"),
		    "daemon.reserved_sessions (%" PRIu32 ") must be smaller "
		    "than daemon.max_sessions (%" PRIu32 ")",
		    cfg->daemon.reserved_sessions, cfg->daemon.max_sessions);
	if (cfg->ban.max_duration_ms < cfg->ban.duration_ms &&
	    key_ok(l, root, "ban", "max_duration") &&
	    key_ok(l, root, "ban", "duration")) {
		char maxs[64], durs[64];
		const struct toml_value *ban = toml_table_get(root, "ban");
		/* One of the two was written; the other may be a default. */
		const char *key = ban != NULL && toml_type(ban) == TOML_TABLE &&
		    toml_table_get(ban, "max_duration") != NULL ?
		    "max_duration" : "duration";

		err_at(l, key_pos(root, "ban", key), "ban.max_duration (%s) is "
		    "shorter than ban.duration (%s)",
		    duration_str(cfg->ban.max_duration_ms, maxs, sizeof(maxs)),
		    duration_str(cfg->ban.duration_ms, durs, sizeof(durs)));
	}
	check_metrics(l, root);
	check_state_file(l, root);
	check_deny_in_allow(l);
	if (cfg->firewall.backend != CFG_FW_NONE &&
	    strcmp(cfg->firewall.set4, cfg->firewall.set6) == 0 &&
	    key_ok(l, root, "firewall", "set4") &&
	    key_ok(l, root, "firewall", "set6"))
		err_at(l, key_pos(root, "firewall", "set6"), "firewall.set4 "
		    "and firewall.set6 are both \"%s\": one set holds IPv4 "
		    "addresses, the other IPv6, so they need two names",
		    cfg->firewall.set6);
}

void
config_free(struct config *cfg)
{
	size_t i;

	if (cfg == NULL)
		return;
	free(cfg->path);
	free(cfg->daemon.user);
	free(cfg->daemon.control_socket);
	free(cfg->daemon.state_file);
	free(cfg->tls.certificate);
	free(cfg->tls.key);
	for (i = 0; i < cfg->tls.nsni; i++) {
		strings_clear(&cfg->tls.sni[i].names);
		free(cfg->tls.sni[i].certificate);
		free(cfg->tls.sni[i].key);
	}
	free(cfg->tls.sni);
	for (i = 0; i < cfg->nlisteners; i++) {
		free(cfg->listeners[i].name);
		free(cfg->listeners[i].listen);
		free(cfg->listeners[i].accept_proxy_from.v);
	}
	free(cfg->listeners);
	free(cfg->policy.allow.v);
	free(cfg->policy.deny.v);
	strings_clear(&cfg->policy.allow_files);
	strings_clear(&cfg->policy.deny_files);
	free(cfg->policy.geo.database);
	strings_clear(&cfg->policy.geo.allow_countries);
	strings_clear(&cfg->policy.geo.deny_countries);
	free(cfg->firewall.table);
	free(cfg->firewall.set4);
	free(cfg->firewall.set6);
	free(cfg->events.file);
	free(cfg->origins);
	free(cfg);
}

/* Where cfg wrote value, one of its own strings, or NULL. */
static const struct cfg_origin *
origin_of(const struct config *cfg, const char *value)
{
	for (size_t i = 0; value != NULL && i < cfg->norigins; i++)
		if (cfg->origins[i].value == value)
			return &cfg->origins[i];
	return NULL;
}

const char *
config_at(const struct config *cfg, const char *value, const char *msg,
    char *out, size_t len)
{
	const struct cfg_origin *o = origin_of(cfg, value);
	const char *warn = "";

	if (o == NULL) {
		snprintf(out, len, "%s: %s", cfg->path, msg);
		return out;
	}
	if (strncmp(msg, "warning: ", 9) == 0)
		msg += 9, warn = "warning: ";
	snprintf(out, len, "%s:%d:%d: %s%s: %s", cfg->path, o->line, o->col,
	    warn, o->key, msg);
	return out;
}

const char *
config_locate(const struct config *cfg, const char *file, const char *msg,
    char *out, size_t len)
{
	size_t flen = file ? strlen(file) : 0;
	const char *rest, *warn = "";
	char tmp[2048];

	if (origin_of(cfg, file) == NULL || strncmp(msg, file, flen) != 0 ||
	    strncmp(msg + flen, ": ", 2) != 0) {
		snprintf(out, len, "%s", msg);
		return out;
	}
	/* "FILE: [warning: ]text" said at the key as "[warning: ]FILE:
	 * text". */
	rest = msg + flen + 2;
	if (strncmp(rest, "warning: ", 9) == 0)
		rest += 9, warn = "warning: ";
	snprintf(tmp, sizeof(tmp), "%s%s: %s", warn, file, rest);
	return config_at(cfg, file, tmp, out, len);
}

struct config *
config_load_buf(const char *name, const char *basedir, const char *buf,
    size_t len, config_report_fn *report, void *arg)
{
	struct loader l = {
		.name = name, .basedir = basedir, .report = report, .arg = arg,
	};
	struct toml_error terr;
	struct toml_value *root;

	root = toml_parse(buf, len, &terr);
	if (root == NULL) {
		err_at(&l, terr.pos, "%s", terr.msg);
		return NULL;
	}
	l.cfg = xcalloc(1, sizeof(*l.cfg));
	l.cfg->path = xstrdup(name);
	config_defaults(l.cfg);
	walk_table(&l, root, "the top level", top_keys,
	    sizeof(top_keys) / sizeof(top_keys[0]), NULL);
	config_check(&l, root);
	toml_free(root);
	free(l.deny_pos);
	free(l.deny_src);
	if (l.nerrors > 0) {
		config_free(l.cfg);
		return NULL;
	}
	return l.cfg;
}

struct config *
config_load(const char *path, config_report_fn *report, void *arg)
{
	struct loader l = { .name = path, .report = report, .arg = arg };
	struct config *cfg = NULL;
	struct stat st;
	char *buf = NULL, *dir = NULL, *abs, *slash;
	size_t off = 0;
	ssize_t n;
	int fd;

	/* O_NONBLOCK: not held up by a FIFO, which fstat() then refuses. */
	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)) == -1) {
		char as[96];
		int e = errno;

		err_at(&l, (struct toml_pos){ 0, 0 }, "cannot open: %s%s",
		    strerror(e), read_as(e, as, sizeof(as)));
		return NULL;
	}
	if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode)) {
		err_at(&l, (struct toml_pos){ 0, 0 }, "not a regular file");
		goto out;
	}
	if (st.st_size > CONFIG_MAX_BYTES) {
		err_at(&l, (struct toml_pos){ 0, 0 }, "larger than %u MiB; "
		    "is this really a config file?", CONFIG_MAX_BYTES >> 20);
		goto out;
	}
	buf = xcalloc(1, (size_t)st.st_size + 1);
	while (off < (size_t)st.st_size) {
		n = read(fd, buf + off, (size_t)st.st_size - off);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0) {
			err_at(&l, (struct toml_pos){ 0, 0 }, "read error: %s",
			    n == 0 ? "file shrank while reading" :
			    strerror(errno));
			goto out;
		}
		off += (size_t)n;
	}
	dir = xstrdup(path);
	if ((slash = strrchr(dir, '/')) != NULL)
		slash[slash == dir ? 1 : 0] = '\0';
	else {
		free(dir);
		dir = xstrdup(".");
	}
	/* Paths taken from a relative directory would move with moat's
	 * working directory, which becomes the state file's after the
	 * privilege drop: they are made absolute now. */
	if (dir[0] != '/' && (abs = realpath(dir, NULL)) != NULL) {
		free(dir);
		dir = abs;
	}
	cfg = config_load_buf(path, dir, buf, off, report, arg);
out:
	close(fd);
	free(buf);
	free(dir);
	return cfg;
}

void
config_report_stderr(void *arg, enum config_severity sev, const char *line)
{
	(void)arg, (void)sev;
	fprintf(stderr, "%s\n", line);
}

const char *
cfg_protocol_str(enum cfg_protocol p)
{
	return p == CFG_PROTO_POP3 ? "pop3" : "smtp";
}

const char *
cfg_tls_mode_str(enum cfg_tls_mode t)
{
	switch (t) {
	case CFG_TLS_IMPLICIT:
		return "implicit";
	case CFG_TLS_STARTTLS:
		return "starttls";
	default:
		return "none";
	}
}

const char *
cfg_backend_proxy_str(enum cfg_backend_proxy b)
{
	switch (b) {
	case CFG_BPROXY_V1:
		return "v1";
	case CFG_BPROXY_V2:
		return "v2";
	case CFG_BPROXY_XCLIENT:
		return "xclient";
	default:
		return "none";
	}
}

const char *
cfg_firewall_str(enum cfg_firewall f)
{
	switch (f) {
	case CFG_FW_IPSET:
		return "ipset";
	case CFG_FW_NONE:
		return "none";
	default:
		return "nftables";
	}
}
