/* state.c - the state file: bans and repeat counts that survive restarts. */
#include "state.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "addr.h"
#include "utc.h"

#define HEADER "moat-state"

struct parser {
	const char *name;
	state_report_fn *report;
	void *arg;
	unsigned reported, suppressed;
};

static void report(struct parser *ps, unsigned long line, const char *fmt,
    ...) __attribute__((format(printf, 3, 4)));

static void
report(struct parser *ps, unsigned long line, const char *fmt, ...)
{
	char msg[256], out[512];
	va_list ap;

	if (ps->reported >= STATE_MAX_REPORTS) {
		ps->suppressed++;
		return;
	}
	ps->reported++;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (line > 0)
		snprintf(out, sizeof(out), "%s:%lu: %s", ps->name, line, msg);
	else
		snprintf(out, sizeof(out), "%s: %s", ps->name, msg);
	if (ps->report != NULL)
		ps->report(ps->arg, out);
}

/* Splits off the next field (a run of non-space bytes) of [*p, end). */
static bool
field(const char **p, const char *end, const char **f, size_t *flen)
{
	const char *s = *p;

	if (s < end && *s == ' ')
		s++;
	*f = s;
	while (s < end && *s != ' ')
		s++;
	*flen = (size_t)(s - *f);
	*p = s;
	return *flen > 0;
}

/* Strict unsigned decimal: digits only, no sign, no overflow past max. */
static bool
number(const char *s, size_t len, uint64_t max, uint64_t *out)
{
	uint64_t v = 0;

	if (len == 0 || len > 20)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned d;

		if (s[i] < '0' || s[i] > '9')
			return false;
		d = (unsigned)(s[i] - '0');
		if (v > (max - d) / 10)
			return false;
		v = v * 10 + d;
	}
	*out = v;
	return true;
}

static bool
address(const char *s, size_t len, uint8_t out[16])
{
	char tmp[INET6_ADDRSTRLEN + 1];
	struct cidr c;
	const char *why;

	if (len >= sizeof(tmp) || memchr(s, '/', len) != NULL)
		return false;
	memcpy(tmp, s, len);
	tmp[len] = '\0';
	if (cidr_parse(tmp, &c, &why) == -1 || c.plen != 128)
		return false;
	memcpy(out, c.addr, 16);
	return true;
}

/* Parses "ban ADDR EXPIRY COUNT REASON" after the word "ban". */
static const char *
parse_ban(const char *p, const char *end, struct state_ban *b)
{
	const char *f;
	size_t flen;
	uint64_t v;

	memset(b, 0, sizeof(*b));
	if (!field(&p, end, &f, &flen) || !address(f, flen, b->addr))
		return "bad address";
	/* 2^53: exact in a double, and some 285,000 years out. */
	if (!field(&p, end, &f, &flen) || !number(f, flen, 1ULL << 53, &v))
		return "bad expiry (milliseconds since 1970)";
	b->expiry_unix_ms = v;
	if (!field(&p, end, &f, &flen) || !number(f, flen, UINT32_MAX, &v) ||
	    v == 0)
		return "bad ban count (1 or more)";
	b->count = (uint32_t)v;
	if (!field(&p, end, &f, &flen) ||
	    ban_reason_parse(f, flen, &b->reason) == -1)
		return "bad reason (manual, rate, auth or smuggling)";
	if (p != end)
		return "unexpected text after the reason";
	return NULL;
}

long
state_parse(const char *name, const char *buf, size_t len,
    state_ban_fn *ban, state_report_fn *report_fn, void *arg)
{
	struct parser ps = { name, report_fn, arg, 0, 0 };
	const char *p = buf, *end = buf + len;
	unsigned long line = 0, nban_lines = 0;
	long good = 0;
	bool seen_end = false;

	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *le = nl ? nl : end;
		const char *word;
		size_t wlen;

		line++;
		if (le > p && le[-1] == '\r')
			le--;
		if (memchr(p, '\0', (size_t)(le - p)) != NULL) {
			if (line == 1)
				goto bad_header;
			report(&ps, line, "NUL byte; line skipped");
			goto next;
		}
		if (line == 1) {
			uint64_t v;
			size_t hl = sizeof(HEADER) - 1;

			if ((size_t)(le - p) < hl + 2 ||
			    memcmp(p, HEADER " ", hl + 1) != 0)
				goto bad_header;
			if (!number(p + hl + 1, (size_t)(le - p) - hl - 1,
			    UINT32_MAX, &v)) {
				goto bad_header;
			}
			if (v != STATE_VERSION) {
				report(&ps, line, "state file version %" PRIu64
				    " is not supported (this moat reads "
				    "version %d); file ignored", v,
				    STATE_VERSION);
				return -1;
			}
			if (nl == NULL) {
				report(&ps, line, "file ends after the header "
				    "line (truncated)");
				return 0;
			}
			goto next;
		}
		if (nl == NULL) {
			report(&ps, line, "last line has no newline: the file "
			    "was cut off; line skipped");
			break;
		}
		if (p == le || *p == '#')
			goto next;
		if (seen_end) {
			report(&ps, line, "text after the 'end' line; "
			    "skipped");
			goto next;
		}
		{
			const char *q = p;

			if (!field(&q, le, &word, &wlen)) {
				report(&ps, line, "unexpected leading space; "
				    "line skipped");
				goto next;
			}
			if (wlen == 3 && memcmp(word, "ban", 3) == 0) {
				struct state_ban b;
				const char *why;

				nban_lines++;
				why = parse_ban(q, le, &b);
				if (why != NULL) {
					report(&ps, line, "%s; ban skipped",
					    why);
					goto next;
				}
				good++;
				if (ban != NULL)
					ban(arg, &b);
			} else if (wlen == 3 && memcmp(word, "end", 3) == 0) {
				const char *f;
				size_t flen;
				uint64_t v;

				seen_end = true;
				if (!field(&q, le, &f, &flen) ||
				    !number(f, flen, UINT64_MAX, &v) ||
				    q != le)
					report(&ps, line, "bad 'end' line");
				else if (v != nban_lines)
					report(&ps, line, "'end' counts %"
					    PRIu64 " bans but %lu were found; "
					    "the file was damaged", v,
					    nban_lines);
			} else
				report(&ps, line, "unknown record '%.*s'; "
				    "line skipped", (int)(wlen > 20 ? 20 :
				    wlen), word);
		}
next:
		p = nl ? nl + 1 : end;
	}
	if (line == 0)
		goto bad_header;
	if (!seen_end)
		report(&ps, 0, "no 'end' line: the file was cut off after "
		    "line %lu; kept the %ld good bans before it", line, good);
	if (ps.suppressed > 0 && ps.report != NULL) {
		char out[512];

		snprintf(out, sizeof(out), "%s: %u more problems not shown",
		    name, ps.suppressed);
		ps.report(arg, out);
	}
	return good;
bad_header:
	report(&ps, line > 0 ? 1 : 0, "not a moat state file (expected "
	    "'%s %d' on the first line); file ignored", HEADER,
	    STATE_VERSION);
	return -1;
}

/* ---- writing ----------------------------------------------------------- */

struct fmt_buf {
	char *p;
	size_t len, cap;
	bool oom;
	uint64_t now, wall;
	unsigned long n;
};

static void
fmt_add(struct fmt_buf *fb, const char *s, size_t n)
{
	if (fb->oom)
		return;
	if (fb->len + n + 1 > fb->cap) {
		size_t ncap = fb->cap ? fb->cap : 4096;
		char *np;

		while (fb->len + n + 1 > ncap)
			ncap *= 2;
		np = realloc(fb->p, ncap);
		if (np == NULL) {
			fb->oom = true;
			return;
		}
		fb->p = np;
		fb->cap = ncap;
	}
	memcpy(fb->p + fb->len, s, n);
	fb->len += n;
	fb->p[fb->len] = '\0';
}

static void
fmt_ban(void *arg, const uint8_t addr[16], const struct ban_info *b)
{
	struct fmt_buf *fb = arg;
	char ip[INET6_ADDRSTRLEN], line[128];
	uint64_t expiry;
	int n;

	if (b->expiry_ms >= fb->now)
		expiry = fb->wall + (b->expiry_ms - fb->now);
	else
		expiry = fb->now - b->expiry_ms > fb->wall ? 0 :
		    fb->wall - (fb->now - b->expiry_ms);
	n = snprintf(line, sizeof(line), "ban %s %" PRIu64 " %" PRIu32
	    " %s\n", addr_v6_str(addr, ip, sizeof(ip)), expiry, b->count,
	    ban_reason_str(b->reason));
	fmt_add(fb, line, (size_t)n);
	fb->n++;
}

char *
state_format(const struct ban_table *t, uint64_t now_ms, uint64_t wall_ms,
    size_t *len)
{
	static const char comment[] = "# address, expiry (ms since 1970, "
	    "UTC), bans so far, reason of the last\n";
	struct fmt_buf fb = { .now = now_ms, .wall = wall_ms };
	char line[64];
	int n;

	n = snprintf(line, sizeof(line), HEADER " %d\n", STATE_VERSION);
	fmt_add(&fb, line, (size_t)n);
	fmt_add(&fb, comment, sizeof(comment) - 1);
	ban_foreach(t, now_ms, fmt_ban, &fb);
	n = snprintf(line, sizeof(line), "end %lu\n", fb.n);
	fmt_add(&fb, line, (size_t)n);
	if (fb.oom) {
		free(fb.p);
		return NULL;
	}
	*len = fb.len;
	return fb.p;
}

static int
write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);

		if (w == -1) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

int
state_write(const char *path, const struct ban_table *t, uint64_t now_ms,
    uint64_t wall_ms, char *err, size_t errlen)
{
	char *buf;
	size_t len;
	int rc;

	buf = state_format(t, now_ms, wall_ms, &len);
	if (buf == NULL) {
		snprintf(err, errlen, "%s: out of memory", path);
		return -1;
	}
	rc = state_write_buf(path, buf, len, err, errlen);
	free(buf);
	return rc;
}

int
state_write_buf(const char *path, const char *buf, size_t len, char *err,
    size_t errlen)
{
	char *tmp = NULL, *dir, *slash;
	int fd = -1, dfd, saved;
	struct stat st;

	/* The rename would replace what is there: a FIFO, socket or device
	 * is something else's (state_read() leaves it alone too). */
	if (stat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "%s: cannot write state file: not a "
		    "regular file, left as it is", path);
		return -1;
	}
	if (asprintf(&tmp, "%s.tmpXXXXXX", path) == -1) {
		tmp = NULL;
		errno = ENOMEM;
		goto fail;
	}
	fd = mkstemp(tmp);
	if (fd == -1)
		goto fail;
	if (fchmod(fd, 0600) == -1 || write_all(fd, buf, len) == -1 ||
	    fsync(fd) == -1)
		goto fail;
	if (close(fd) == -1) {
		fd = -1;
		goto fail;
	}
	fd = -1;
	if (rename(tmp, path) == -1)
		goto fail;
	free(tmp);
	/* The rename is durable only once the directory is on disk too. */
	dir = strdup(path);
	if (dir != NULL) {
		slash = strrchr(dir, '/');
		if (slash == dir)
			slash[1] = '\0';
		else if (slash != NULL)
			*slash = '\0';
		dfd = open(slash ? dir : ".", O_RDONLY | O_DIRECTORY |
		    O_CLOEXEC);
		if (dfd != -1) {
			(void)fsync(dfd);
			close(dfd);
		}
		free(dir);
	}
	return 0;
fail:
	saved = errno;
	snprintf(err, errlen, "%s: cannot write state file: %s", path,
	    strerror(saved));
	if (fd != -1)
		close(fd);
	if (tmp != NULL) {
		unlink(tmp);
		free(tmp);
	}
	return -1;
}

/* ---- reading ----------------------------------------------------------- */

/* How far in the future a file's mtime may lie before the clock is said
 * to look wrong (a clock stepped back a little by NTP is no news). */
#define STATE_CLOCK_SLACK_MS (5 * 60 * 1000ULL)

struct restore {
	struct ban_table *t;
	uint64_t now, wall;
	long n;
	long cut;		/* bans with more than BAN_MAX_MS left */
	bool oom;
};

static void
restore_ban(void *arg, const struct state_ban *b)
{
	struct restore *r = arg;
	uint64_t expiry;

	if (b->expiry_unix_ms >= r->wall) {
		uint64_t left = b->expiry_unix_ms - r->wall;

		/* No ban is made longer (config, moatctl) and kernel sets
		 * refuse much longer ones: more left means a clock behind
		 * (no RTC, before NTP) or an edited file. */
		if (left > BAN_MAX_MS) {
			left = BAN_MAX_MS;
			r->cut++;
		}
		expiry = r->now > UINT64_MAX - left ? UINT64_MAX :
		    r->now + left;
	} else {
		uint64_t ago = r->wall - b->expiry_unix_ms;

		/* Before the monotonic clock's start (a reboot) an expiry
		 * is clamped to 0, which would measure the forgetting from
		 * the boot: judge it by the wall clock here. */
		if (ago >= ban_forget_ms(r->t))
			return;
		expiry = ago > r->now ? 0 : r->now - ago;
	}
	switch (ban_restore(r->t, b->addr, b->reason, expiry, b->count,
	    r->now)) {
	case -1:
		r->oom = true;
		break;
	case 1:
		r->n++;
		break;
	default:
		break;		/* forgotten already */
	}
}

struct read_ctx {
	struct restore r;
	state_report_fn *report;
	void *arg;
};

static void
read_ban(void *arg, const struct state_ban *b)
{
	restore_ban(&((struct read_ctx *)arg)->r, b);
}

static void
read_report(void *arg, const char *line)
{
	struct read_ctx *c = arg;

	if (c->report != NULL)
		c->report(c->arg, line);
}

/*
 * A file moat cannot use would be replaced by the next save, and with it
 * whatever an operator might still recover from it: it is renamed to
 * PATH.bad-YYYYmmddTHHMMSSZ first, the time making each one distinct.
 */
static void
keep_aside(const char *path, uint64_t wall_ms, state_report_fn *report_fn,
    void *arg)
{
	char aside[4096], stamp[32], msg[4400];
	time_t t = (time_t)(wall_ms / 1000);
	struct tm tm;

	if (gmtime_r(&t, &tm) == NULL ||
	    strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &tm) == 0)
		snprintf(stamp, sizeof(stamp), "%llu",
		    (unsigned long long)t);
	if ((size_t)snprintf(aside, sizeof(aside), "%s.bad-%s", path, stamp) >=
	    sizeof(aside))
		return;
	if (rename(path, aside) == -1)
		snprintf(msg, sizeof(msg), "%s: cannot keep it aside as %s: %s; "
		    "the next save replaces it", path, aside, strerror(errno));
	else
		snprintf(msg, sizeof(msg), "%s: kept aside as %s; bans from "
		    "now on go to a new %s", path, aside, path);
	if (report_fn != NULL)
		report_fn(arg, msg);
}

/*
 * Removes the temporary files of saves that never reached their rename
 * (moat killed mid-save, say by a stop timeout during a large save):
 * nothing else ever would, and each may be as large as the table.
 */
static void
remove_temps(const char *path, state_report_fn *report_fn, void *arg)
{
	char dir[4096], full[4200], msg[4400];
	const char *slash = strrchr(path, '/'), *base;
	size_t blen;
	struct dirent *de;
	DIR *d;

	if (slash == NULL) {
		snprintf(dir, sizeof(dir), ".");
		base = path;
	} else {
		if ((size_t)(slash - path) >= sizeof(dir))
			return;
		snprintf(dir, sizeof(dir), "%.*s", slash == path ? 1 :
		    (int)(slash - path), path);
		base = slash + 1;
	}
	blen = strlen(base);
	if ((d = opendir(dir)) == NULL)
		return;
	while ((de = readdir(d)) != NULL) {
		/* mkstemp()'s form: PATH.tmp and six characters. */
		if (strlen(de->d_name) != blen + 4 + 6 ||
		    strncmp(de->d_name, base, blen) != 0 ||
		    strncmp(de->d_name + blen, ".tmp", 4) != 0)
			continue;
		if ((size_t)snprintf(full, sizeof(full), "%s/%s", dir,
		    de->d_name) >= sizeof(full))
			continue;
		if (unlink(full) == 0)
			snprintf(msg, sizeof(msg), "%s: removed the temporary "
			    "file of a save that did not finish", full);
		else
			snprintf(msg, sizeof(msg), "%s: cannot remove the "
			    "temporary file of a save that did not finish: %s",
			    full, strerror(errno));
		if (report_fn != NULL)
			report_fn(arg, msg);
	}
	closedir(d);
}

/*
 * The time bans have left is measured by the wall clock: a file last
 * written later than the clock says it is now (no RTC, before NTP) means
 * the clock is wrong, and so is every ban's time left. Not fatal: said.
 */
static void
clock_check(const char *path, const struct stat *st, uint64_t wall_ms,
    state_report_fn *report_fn, void *arg)
{
	char msg[4400], then[32], now[32];
	uint64_t file_ms;

	if (st->st_mtim.tv_sec < 0 || report_fn == NULL)
		return;
	file_ms = (uint64_t)st->st_mtim.tv_sec * 1000 +
	    (uint64_t)st->st_mtim.tv_nsec / 1000000;
	if (file_ms <= wall_ms + STATE_CLOCK_SLACK_MS)
		return;
	snprintf(msg, sizeof(msg), "%s: last written %s, later than the "
	    "clock says it is now (%s): the clock looks wrong, and with it "
	    "the time the bans have left", path,
	    utc_iso((int64_t)(file_ms / 1000), then, sizeof(then)),
	    utc_iso((int64_t)(wall_ms / 1000), now, sizeof(now)));
	report_fn(arg, msg);
}

long
state_read(const char *path, struct ban_table *t, uint64_t now_ms,
    uint64_t wall_ms, state_report_fn *report_fn, void *arg)
{
	struct read_ctx c = { { t, now_ms, wall_ms, 0, 0, false }, report_fn,
	    arg };
	struct stat st;
	char *buf = NULL, msg[512];
	uint64_t limit;
	size_t len = 0, held;
	long rc;
	int fd;

	remove_temps(path, report_fn, arg);
	/* Not blocking: a FIFO there would wait for a writer forever. */
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (fd == -1) {
		int e = errno;

		if (e == ENOENT)
			return 0;
		/* A socket cannot be opened (ENXIO): said as what it is. */
		if (stat(path, &st) == 0 && !S_ISREG(st.st_mode))
			goto not_regular;
		snprintf(msg, sizeof(msg), "%s: cannot open state file: %s",
		    path, strerror(e));
		goto fail;
	}
	if (fstat(fd, &st) == -1) {
		snprintf(msg, sizeof(msg), "%s: cannot stat state file: %s",
		    path, strerror(errno));
		close(fd);
		goto fail;
	}
	if (!S_ISREG(st.st_mode)) {
		close(fd);
		goto not_regular;
	}
	limit = (uint64_t)ban_max_entries(t) * STATE_LINE_MAX + 4096;
	if (limit < STATE_MAX_BYTES)
		limit = STATE_MAX_BYTES;
	if ((uint64_t)st.st_size > limit || (uint64_t)st.st_size >= SIZE_MAX) {
		snprintf(msg, sizeof(msg), "%s: %llu bytes, more than a table "
		    "of ban.max_entries = %zu writes; ignored", path,
		    (unsigned long long)st.st_size, ban_max_entries(t));
		close(fd);
		goto fail;
	}
	buf = malloc((size_t)st.st_size + 1);
	if (buf == NULL) {
		snprintf(msg, sizeof(msg), "%s: out of memory", path);
		close(fd);
		goto fail;
	}
	while (len < (size_t)st.st_size) {
		ssize_t r = read(fd, buf + len, (size_t)st.st_size - len);

		if (r == -1 && errno == EINTR)
			continue;
		if (r == -1) {
			snprintf(msg, sizeof(msg), "%s: read: %s", path,
			    strerror(errno));
			close(fd);
			goto fail;
		}
		if (r == 0)
			break;
		len += (size_t)r;
	}
	close(fd);
	rc = state_parse(path, buf, len, read_ban, read_report, &c);
	free(buf);
	if (rc == -1) {
		keep_aside(path, wall_ms, report_fn, arg);
		return -1;
	}
	clock_check(path, &st, wall_ms, report_fn, arg);
	/* The table drops records to stay within max_entries: count what
	 * it holds, and say what it dropped. */
	held = ban_entries(t);
	if (c.r.n > (long)held && held >= ban_max_entries(t) &&
	    report_fn != NULL) {
		snprintf(msg, sizeof(msg), "%s: %ld records, more than "
		    "ban.max_entries = %zu: kept %zu, dropped %ld", path,
		    c.r.n, ban_max_entries(t), held, c.r.n - (long)held);
		report_fn(arg, msg);
	}
	if (c.r.cut > 0 && report_fn != NULL) {
		snprintf(msg, sizeof(msg), "%s: %ld bans had more than %llud "
		    "left (the clock looks behind, or the file was edited): "
		    "cut to that", path, c.r.cut,
		    (unsigned long long)(BAN_MAX_MS / 86400000));
		report_fn(arg, msg);
	}
	if (c.r.oom && report_fn != NULL) {
		snprintf(msg, sizeof(msg), "%s: out of memory; some bans were "
		    "not restored", path);
		report_fn(arg, msg);
	}
	return (long)held;
not_regular:
	/* Never renamed aside: it is something else's. */
	snprintf(msg, sizeof(msg), "%s: not a regular file (%s); no bans "
	    "restored", path, S_ISFIFO(st.st_mode) ? "a FIFO" :
	    S_ISSOCK(st.st_mode) ? "a socket" : S_ISDIR(st.st_mode) ?
	    "a directory" : "a device");
	if (report_fn != NULL)
		report_fn(arg, msg);
	return -1;
fail:
	/* Unread, the bans in it would be lost to the next save: keep it. */
	free(buf);
	if (report_fn != NULL)
		report_fn(arg, msg);
	keep_aside(path, wall_ms, report_fn, arg);
	return -1;
}
