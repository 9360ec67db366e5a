/* test_state.c - unit tests for the state file of policy/state.c. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "addr.h"
#include "ban.h"
#include "check.h"
#include "state.h"

#define H 3600000ULL
#define WALL 1767225600000ULL		/* 2026-01-01T00:00:00Z */

static const struct ban_params params = {
	.duration_ms = H, .escalation = 2.0, .max_duration_ms = 168 * H,
};

static const uint8_t *
ip(const char *s)
{
	static uint8_t bufs[8][16];
	static int k;
	struct cidr c;
	const char *why;

	if (cidr_parse(s, &c, &why) == -1 || c.plen != 128)
		abort();
	k = (k + 1) % 8;
	memcpy(bufs[k], c.addr, 16);
	return bufs[k];
}

/* Collects the diagnostics of a parse. */
struct log {
	char lines[16][600];
	int n;
	struct state_ban bans[16];
	int nb;
};

static void
log_report(void *arg, const char *line)
{
	struct log *l = arg;

	if (l->n < 16)
		snprintf(l->lines[l->n], sizeof(l->lines[0]), "%s", line);
	l->n++;
}

static void
log_ban(void *arg, const struct state_ban *b)
{
	struct log *l = arg;

	if (l->nb < 16)
		l->bans[l->nb] = *b;
	l->nb++;
}

static long
parse(const char *text, struct log *l)
{
	memset(l, 0, sizeof(*l));
	return state_parse("state", text, strlen(text), log_ban, log_report,
	    l);
}

static bool
logged(const struct log *l, const char *needle)
{
	for (int i = 0; i < l->n && i < 16; i++)
		if (strstr(l->lines[i], needle) != NULL)
			return true;
	return false;
}

/* Dates path at unix_ms, when the tests' clock says it was written. */
static void
stamp(const char *path, uint64_t unix_ms)
{
	struct timespec ts[2];

	ts[0].tv_sec = ts[1].tv_sec = (time_t)(unix_ms / 1000);
	ts[0].tv_nsec = ts[1].tv_nsec = (long)(unix_ms % 1000) * 1000000;
	CHECK(utimensat(AT_FDCWD, path, ts, 0) == 0);
}

/* Makes dir (a mkdtemp template) and writes text to dir/state, dated
 * WALL. */
static void
scratch_state(char *dir, char *path, size_t pathlen, const char *text)
{
	FILE *f;

	CHECK(mkdtemp(dir) != NULL);
	snprintf(path, pathlen, "%s/state", dir);
	f = fopen(path, "w");
	CHECK(f != NULL && fputs(text, f) >= 0 && fclose(f) == 0);
	stamp(path, WALL);
}

static void
test_round_trip(void)
{
	char dir[] = "/tmp/moat-test-state.XXXXXX", path[64], err[256];
	struct ban_table *t = ban_table_new(&params), *u;
	struct ban_info b;
	struct stat st;
	struct log l;
	uint64_t now = 50 * H;		/* monotonic, before the restart */

	CHECK(mkdtemp(dir) != NULL);
	snprintf(path, sizeof(path), "%s/state", dir);
	CHECK(ban_add(t, ip("192.0.2.1"), BAN_AUTH, 0, now, &b));
	CHECK(ban_add(t, ip("2001:db8::25"), BAN_SMUGGLING, 0, now, &b));
	CHECK(ban_add(t, ip("198.51.100.9"), BAN_MANUAL, 30 * H, now, &b));
	/* A third offence that has expired: kept for its count. */
	CHECK_INT_EQ(ban_restore(t, ip("203.0.113.3"), BAN_RATE, now - H, 3,
	    now), 1);
	/* One that ended 8 days ago, remembered for 7: still in the file
	 * when the file was written before the record's forgetting. */
	CHECK_INT_EQ(ban_restore(t, ip("203.0.113.4"), BAN_RATE, 2 * H, 2,
	    now), 1);

	CHECK_INT_EQ(state_write(path, t, now, WALL, err, sizeof(err)), 0);
	CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600);
	stamp(path, WALL);

	/* Restart ten minutes later: the monotonic clock started afresh. */
	u = ban_table_new(&params);
	memset(&l, 0, sizeof(l));
	CHECK_INT_EQ(state_read(path, u, 5000, WALL + 600000, log_report, &l),
	    5);
	CHECK_INT_EQ(l.n, 0);
	CHECK(ban_lookup(u, ip("192.0.2.1"), 5000, &b));
	CHECK_INT_EQ(b.expiry_ms, 5000 + H - 600000);	/* time left kept */
	CHECK_INT_EQ(b.count, 1);
	CHECK_INT_EQ(b.reason, BAN_AUTH);
	CHECK(ban_lookup(u, ip("2001:db8::25"), 5000, &b));
	CHECK_INT_EQ(b.reason, BAN_SMUGGLING);
	CHECK(ban_lookup(u, ip("198.51.100.9"), 5000, &b));
	CHECK_INT_EQ(b.expiry_ms, 5000 + 30 * H - 600000);
	CHECK(!ban_lookup(u, ip("203.0.113.3"), 5000, &b));
	/* ...but its count escalates the next ban. */
	CHECK(ban_add(u, ip("203.0.113.3"), BAN_RATE, 0, 6000, &b));
	CHECK_INT_EQ(b.count, 4);
	CHECK_INT_EQ(b.duration_ms, 8 * H);
	CHECK(ban_add(u, ip("203.0.113.4"), BAN_RATE, 0, 6000, &b));
	CHECK_INT_EQ(b.count, 3);

	/*
	 * A reboot six days later: 203.0.113.4's ban ended 8 days before,
	 * longer than records are remembered (7 days), so it is not
	 * restored; measured from the boot it would have been kept another
	 * week and escalated its next ban. The others ended 6 days ago.
	 */
	{
		struct ban_table *v = ban_table_new(&params);

		CHECK_INT_EQ(state_read(path, v, 5000, WALL + 144 * H,
		    log_report, &l), 4);
		CHECK(ban_add(v, ip("203.0.113.4"), BAN_RATE, 0, 6000, &b));
		CHECK_INT_EQ(b.count, 1);
		CHECK(ban_add(v, ip("203.0.113.3"), BAN_RATE, 0, 6000, &b));
		CHECK_INT_EQ(b.count, 4);
		ban_table_free(v);
	}

	/* Writing again replaces the file; no temporary is left behind. */
	CHECK_INT_EQ(state_write(path, u, 6000, WALL + 601000, err,
	    sizeof(err)), 0);
	{
		char cmd[128];

		snprintf(cmd, sizeof(cmd), "test $(ls %s | wc -l) -eq 1", dir);
		CHECK(system(cmd) == 0);
	}
	ban_table_free(u);

	/* A missing file is the first start, not an error. */
	unlink(path);
	u = ban_table_new(&params);
	CHECK_INT_EQ(state_read(path, u, 0, WALL, log_report, &l), 0);

	/* A save killed before its rename left its temporary file: the next
	 * start removes it, and says so; files of other names stay. */
	{
		static const char *const names[] = {
			"state.tmpAb3xYz", "state.tmpAb3xY", "other.tmpAb3xYz",
			"state.tmp123456x",
		};
		char f[128];
		size_t i;

		for (i = 0; i < 4; i++) {
			snprintf(f, sizeof(f), "%s/%s", dir, names[i]);
			CHECK(close(open(f, O_WRONLY | O_CREAT, 0600)) == 0);
		}
		memset(&l, 0, sizeof(l));
		CHECK_INT_EQ(state_read(path, u, 0, WALL, log_report, &l), 0);
		snprintf(f, sizeof(f), "%s/state.tmpAb3xYz: removed the "
		    "temporary file of a save that did not finish", dir);
		CHECK(logged(&l, f));
		CHECK_INT_EQ(l.n, 1);
		for (i = 0; i < 4; i++) {
			snprintf(f, sizeof(f), "%s/%s", dir, names[i]);
			CHECK((access(f, F_OK) == 0) == (i != 0));
			unlink(f);
		}
	}
	/* An unwritable place gives an error naming the file. */
	CHECK_INT_EQ(state_write("/nonexistent/dir/state", t, now, WALL, err,
	    sizeof(err)), -1);
	CHECK(strstr(err, "/nonexistent/dir/state") != NULL);
	ban_table_free(u);
	ban_table_free(t);
	rmdir(dir);
}

/* A wall clock behind at start (no RTC, before NTP), or an edited file,
 * never restores a ban longer than any moat makes: the kernel sets would
 * refuse it. */
static void
test_read_far_expiry(void)
{
	char dir[] = "/tmp/moat-test-state.XXXXXX", path[64], text[512];
	struct ban_table *t = ban_table_new(&params);
	struct ban_info b;
	struct log l;

	snprintf(text, sizeof(text), "moat-state 1\n"
	    "ban 192.0.2.1 %llu 1 manual\n"
	    "ban 192.0.2.2 %llu 1 manual\n"
	    "ban 192.0.2.3 %llu 1 manual\n"
	    "end 3\n",
	    (unsigned long long)(WALL + BAN_MAX_MS + 1),
	    (unsigned long long)(WALL + 20 * BAN_MAX_MS),
	    (unsigned long long)(WALL + BAN_MAX_MS));
	scratch_state(dir, path, sizeof(path), text);
	memset(&l, 0, sizeof(l));
	CHECK_INT_EQ(state_read(path, t, 5000, WALL, log_report, &l), 3);
	CHECK(ban_lookup(t, ip("192.0.2.1"), 5000, &b));
	CHECK_INT_EQ(b.expiry_ms, 5000 + BAN_MAX_MS);
	CHECK(ban_lookup(t, ip("192.0.2.2"), 5000, &b));
	CHECK_INT_EQ(b.expiry_ms, 5000 + BAN_MAX_MS);
	CHECK(ban_lookup(t, ip("192.0.2.3"), 5000, &b));
	CHECK_INT_EQ(b.expiry_ms, 5000 + BAN_MAX_MS);
	snprintf(text, sizeof(text), "%s: 2 bans had more than 3650d left "
	    "(the clock looks behind, or the file was edited): cut to that",
	    path);
	CHECK(logged(&l, text));
	CHECK_INT_EQ(l.n, 1);
	ban_table_free(t);

	/* Written a day later than the clock now says: said too. */
	t = ban_table_new(&params);
	stamp(path, WALL + 24 * H);
	memset(&l, 0, sizeof(l));
	CHECK_INT_EQ(state_read(path, t, 5000, WALL, log_report, &l), 3);
	snprintf(text, sizeof(text), "%s: last written 2026-01-02T00:00:00Z, "
	    "later than the clock says it is now (2026-01-01T00:00:00Z): the "
	    "clock looks wrong, and with it the time the bans have left",
	    path);
	CHECK(logged(&l, text));
	CHECK_INT_EQ(l.n, 2);
	/* A few minutes' difference is no news. */
	stamp(path, WALL + 60000);
	memset(&l, 0, sizeof(l));
	CHECK_INT_EQ(state_read(path, t, 5000, WALL, log_report, &l), 3);
	CHECK_INT_EQ(l.n, 1);
	ban_table_free(t);
	unlink(path);
	rmdir(dir);
}

/* A file of more records than ban.max_entries: the count is what the
 * table holds, and the report says how many were dropped. */
static void
test_read_over_max_entries(void)
{
	char dir[] = "/tmp/moat-test-state.XXXXXX", path[64], text[2048];
	struct ban_params p = params;
	struct ban_table *t;
	struct log l;
	size_t off;

	p.max_entries = 10;
	t = ban_table_new(&p);
	off = (size_t)snprintf(text, sizeof(text), "moat-state 1\n");
	for (int i = 0; i < 25; i++)
		off += (size_t)snprintf(text + off, sizeof(text) - off,
		    "ban 192.0.2.%d %llu 1 rate\n", i + 1,
		    (unsigned long long)(WALL + H));
	snprintf(text + off, sizeof(text) - off, "end 25\n");
	scratch_state(dir, path, sizeof(path), text);
	memset(&l, 0, sizeof(l));
	CHECK_INT_EQ(state_read(path, t, 5000, WALL, log_report, &l), 10);
	CHECK_INT_EQ(ban_entries(t), 10);
	snprintf(text, sizeof(text), "%s: 25 records, more than "
	    "ban.max_entries = 10: kept 10, dropped 15", path);
	CHECK(logged(&l, text));
	CHECK_INT_EQ(l.n, 1);
	ban_table_free(t);
	unlink(path);
	rmdir(dir);
}

/*
 * A host that reboots every day, moat starting 20 s after the boot: a
 * record whose ban ended 29 days ago, remembered for 30, is restored on
 * the first boot and forgotten on the next, rather than dated to each
 * boot by every save.
 */
static void
test_reboots_forget(void)
{
	char dir[] = "/tmp/moat-test-state.XXXXXX", path[64], text[256],
	    err[256];
	struct ban_params p = params;
	struct ban_table *t;
	struct log l;
	uint64_t now = STATE_CLOCK_BASE_MS + 20000;

	p.forget_ms = 30 * 24 * H;
	snprintf(text, sizeof(text), "moat-state 1\nban 192.0.2.7 %llu 3 "
	    "auth\nend 1\n", (unsigned long long)(WALL - 29 * 24 * H));
	scratch_state(dir, path, sizeof(path), text);
	t = ban_table_new(&p);
	memset(&l, 0, sizeof(l));
	CHECK_INT_EQ(state_read(path, t, now, WALL, log_report, &l), 1);
	CHECK_INT_EQ(state_write(path, t, now, WALL, err, sizeof(err)), 0);
	ban_table_free(t);
	stamp(path, WALL + 24 * H);
	t = ban_table_new(&p);
	memset(&l, 0, sizeof(l));
	CHECK_INT_EQ(state_read(path, t, now, WALL + 24 * H, log_report, &l),
	    0);
	CHECK_INT_EQ(ban_entries(t), 0);
	ban_table_free(t);
	unlink(path);
	rmdir(dir);
}

/* state_read() and state_write() at path, a file of type fmt: both
 * refuse it at once, say so, and leave it as it is. */
static void
check_left_alone(const char *path, struct ban_table *t, const char *kind,
    mode_t fmt)
{
	char want[160], err[256];
	struct stat st;
	struct log l;

	memset(&l, 0, sizeof(l));
	CHECK_INT_EQ(state_read(path, t, 0, WALL, log_report, &l), -1);
	snprintf(want, sizeof(want), "%s: not a regular file (%s); no bans "
	    "restored", path, kind);
	CHECK(logged(&l, want));
	CHECK_INT_EQ(l.n, 1);
	CHECK_INT_EQ(state_write(path, t, 0, WALL, err, sizeof(err)), -1);
	snprintf(want, sizeof(want), "%s: cannot write state file: not a "
	    "regular file, left as it is", path);
	CHECK_STR_EQ(err, want);
	CHECK(stat(path, &st) == 0 && (st.st_mode & S_IFMT) == fmt);
}

/* A FIFO or socket at state_file (a daemon.control_socket named there)
 * is never waited on (a FIFO used to block the start for good), never
 * renamed aside and never saved over. */
static void
test_read_not_regular(void)
{
	char dir[] = "/tmp/moat-test-state.XXXXXX", path[64];
	struct ban_table *t = ban_table_new(&params);
	struct sockaddr_un sun;
	int s;

	CHECK(mkdtemp(dir) != NULL);
	snprintf(path, sizeof(path), "%s/state", dir);
	CHECK(mkfifo(path, 0600) == 0);
	alarm(10);
	check_left_alone(path, t, "a FIFO", S_IFIFO);
	alarm(0);
	unlink(path);

	s = socket(AF_UNIX, SOCK_STREAM, 0);
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
	CHECK(bind(s, (struct sockaddr *)&sun, sizeof(sun)) == 0);
	check_left_alone(path, t, "a socket", S_IFSOCK);
	close(s);
	unlink(path);
	CHECK_INT_EQ(ban_entries(t), 0);
	ban_table_free(t);
	rmdir(dir);
}

/* A file moat cannot read is kept aside, never overwritten by the next
 * save: what an operator may still recover survives. */
static void
test_read_rejected(void)
{
	char dir[] = "/tmp/moat-test-state.XXXXXX", path[64], err[256];
	char aside[96], buf[64];
	struct ban_table *t = ban_table_new(&params);
	struct ban_info b;
	struct log l;
	FILE *f;

	scratch_state(dir, path, sizeof(path),
	    "moat-stat 1\nban 192.0.2.1 1767225600000 3 auth\nend 1\n");
	memset(&l, 0, sizeof(l));
	/* WALL is 2026-01-01T00:00:00Z. */
	CHECK_INT_EQ(state_read(path, t, 0, WALL, log_report, &l), -1);
	CHECK(logged(&l, "not a moat state file"));
	snprintf(aside, sizeof(aside), "%s.bad-20260101T000000Z", path);
	CHECK(logged(&l, "kept aside as"));
	CHECK(logged(&l, aside));
	CHECK(access(path, F_OK) == -1 && errno == ENOENT);
	CHECK((f = fopen(aside, "r")) != NULL);
	CHECK(fgets(buf, sizeof(buf), f) != NULL);
	CHECK_STR_EQ(buf, "moat-stat 1\n");
	fclose(f);
	/* The next save starts a new file beside it. */
	CHECK(ban_add(t, ip("192.0.2.9"), BAN_MANUAL, H, 0, &b));
	CHECK_INT_EQ(state_write(path, t, 0, WALL, err, sizeof(err)), 0);
	CHECK(access(aside, F_OK) == 0);
	unlink(path);
	unlink(aside);
	rmdir(dir);
	ban_table_free(t);
}

/*
 * What a full table writes, the reader takes: every record fits in
 * STATE_LINE_MAX, the limit grows with ban.max_entries, and a file larger
 * than that (sparse here) is refused by its size, named, and kept aside.
 */
static void
test_size_limit(void)
{
	char dir[] = "/tmp/moat-test-state.XXXXXX", path[64], err[256];
	char aside[96], line[64];
	struct ban_params small = params;
	struct ban_table *t;
	struct ban_info b;
	struct stat st;
	struct log l;
	uint8_t a[16];
	size_t i;
	int fd, r;

	CHECK(mkdtemp(dir) != NULL);
	snprintf(path, sizeof(path), "%s/state", dir);
	small.max_entries = 1000;
	t = ban_table_new(&small);
	/* The longest address text there is, every reason, the largest
	 * count and expiry a record can hold. */
	memcpy(a, ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), 16);
	for (i = 0; i < small.max_entries; i++) {
		a[14] = (uint8_t)(i >> 8);
		a[15] = (uint8_t)i;
		CHECK(ban_add(t, a, (enum ban_reason)(i % BAN_REASON_COUNT),
		    3650 * 24 * H, 0, &b));
	}
	for (r = 0; r < BAN_REASON_COUNT; r++)
		CHECK(strlen(ban_reason_str((enum ban_reason)r)) < 20);
	CHECK_INT_EQ(state_write(path, t, 0, UINT64_MAX / 2, err, sizeof(err)),
	    0);
	CHECK(stat(path, &st) == 0);
	CHECK((uint64_t)st.st_size <= small.max_entries *
	    (uint64_t)(4 + 45 + 1 + 20 + 1 + 10 + 1 + 20 + 1) + 4096);
	CHECK(4 + 45 + 1 + 20 + 1 + 10 + 1 + 20 + 1 <= STATE_LINE_MAX);
	ban_table_free(t);

	/* One byte past the floor, with the default table: refused unread. */
	CHECK((fd = open(path, O_WRONLY | O_TRUNC)) != -1);
	CHECK(ftruncate(fd, (off_t)STATE_MAX_BYTES + 1) == 0);
	close(fd);
	t = ban_table_new(&params);
	memset(&l, 0, sizeof(l));
	CHECK_INT_EQ(state_read(path, t, 0, WALL, log_report, &l), -1);
	snprintf(line, sizeof(line), "%llu bytes, more than a table",
	    (unsigned long long)STATE_MAX_BYTES + 1);
	CHECK(logged(&l, line));
	CHECK(logged(&l, "ban.max_entries = 1000000"));
	snprintf(aside, sizeof(aside), "%s.bad-20260101T000000Z", path);
	CHECK(logged(&l, aside));
	CHECK(access(aside, F_OK) == 0);
	ban_table_free(t);
	unlink(aside);
	rmdir(dir);
}

static void
test_parse_good(void)
{
	struct log l;

	CHECK_INT_EQ(parse("moat-state 1\n"
	    "# comment\n"
	    "\n"
	    "ban 192.0.2.1 1767225600000 3 auth\r\n"
	    "ban 2001:db8::1 0 1 manual\n"
	    "end 2\n", &l), 2);
	CHECK_INT_EQ(l.n, 0);
	CHECK_INT_EQ(l.nb, 2);
	CHECK(memcmp(l.bans[0].addr, ip("192.0.2.1"), 16) == 0);
	CHECK_INT_EQ(l.bans[0].expiry_unix_ms, 1767225600000ULL);
	CHECK_INT_EQ(l.bans[0].count, 3);
	CHECK_INT_EQ(l.bans[0].reason, BAN_AUTH);
	CHECK_INT_EQ(l.bans[1].reason, BAN_MANUAL);

	CHECK_INT_EQ(parse("moat-state 1\nend 0\n", &l), 0);
	CHECK_INT_EQ(l.n, 0);
}

static void
test_parse_corrupt(void)
{
	struct log l;

	/* Not ours: the whole file is ignored, with file and line. */
	CHECK_INT_EQ(parse("", &l), -1);
	CHECK(logged(&l, "state: not a moat state file"));
	CHECK_INT_EQ(parse("ban 192.0.2.1 1 1 auth\nend 1\n", &l), -1);
	CHECK(logged(&l, "state:1: not a moat state file"));
	CHECK_INT_EQ(l.nb, 0);
	CHECK_INT_EQ(parse("moat-state\n", &l), -1);
	CHECK_INT_EQ(parse("moat-state x\n", &l), -1);
	CHECK_INT_EQ(parse("moat-state 2\nend 0\n", &l), -1);
	CHECK(logged(&l, "state:1: state file version 2 is not supported"));
	CHECK_INT_EQ(parse("moat-sta\0e 1\n", &l), -1);

	/* Bad lines are skipped, each named; good ones are kept. */
	CHECK_INT_EQ(parse("moat-state 1\n"
	    "ban 192.0.2.1 1767225600000 3 auth\n"
	    "ban 192.0.2.300 1767225600000 3 auth\n"
	    "ban 192.0.2.0/24 1767225600000 3 auth\n"
	    "ban 192.0.2.2 -5 3 auth\n"
	    "ban 192.0.2.2 99999999999999999999999 3 auth\n"
	    "ban 192.0.2.2 1767225600000 0 auth\n"
	    "ban 192.0.2.2 1767225600000 3 typo\n"
	    "ban 192.0.2.2 1767225600000 3 auth extra\n"
	    "ban 192.0.2.2  1767225600000 3 auth\n"
	    "bam 192.0.2.2 1767225600000 3 auth\n"
	    "ban 2001:db8::7 1767225600000 1 rate\n"
	    "end 10\n", &l), 2);
	CHECK_INT_EQ(l.nb, 2);
	CHECK(logged(&l, "state:3: bad address"));
	CHECK(logged(&l, "state:4: bad address"));
	CHECK(logged(&l, "state:5: bad expiry"));
	CHECK(logged(&l, "state:6: bad expiry"));
	CHECK(logged(&l, "state:7: bad ban count"));
	CHECK(logged(&l, "state:8: bad reason"));
	CHECK(logged(&l, "state:9: unexpected text"));
	CHECK(logged(&l, "state:10: bad expiry"));	/* two spaces */
	CHECK(logged(&l, "state:11: unknown record 'bam'"));
	CHECK_INT_EQ(l.n, 9);

	/* Cut off in the middle of a line: that line is dropped. */
	CHECK_INT_EQ(parse("moat-state 1\n"
	    "ban 192.0.2.1 1767225600000 3 auth\n"
	    "ban 192.0.2.2 17672", &l), 1);
	CHECK(logged(&l, "state:3: last line has no newline"));
	CHECK(logged(&l, "state: no 'end' line"));
	/* Cut off at a line end: noticed by the missing end line. */
	CHECK_INT_EQ(parse("moat-state 1\n"
	    "ban 192.0.2.1 1767225600000 3 auth\n", &l), 1);
	CHECK(logged(&l, "no 'end' line"));
	CHECK_INT_EQ(parse("moat-state 1", &l), 0);
	CHECK(logged(&l, "truncated"));
	/* A wrong count in the end line, text after it, NUL bytes. */
	CHECK_INT_EQ(parse("moat-state 1\n"
	    "ban 192.0.2.1 1767225600000 3 auth\n"
	    "end 2\n"
	    "ban 192.0.2.2 1767225600000 3 auth\n", &l), 1);
	CHECK(logged(&l, "state:3: 'end' counts 2 bans but 1 were found"));
	CHECK(logged(&l, "state:4: text after the 'end' line"));
	{
		static const char nul[] = "moat-state 1\nban 192.0.2.1 1 1 "
		    "a\0th\nend 1\n";

		memset(&l, 0, sizeof(l));
		CHECK_INT_EQ(state_parse("state", nul, sizeof(nul) - 1,
		    log_ban, log_report, &l), 0);
		CHECK(logged(&l, "state:2: NUL byte"));
	}

	/* Many bad lines: ten reported, then a summary. */
	{
		char big[4096] = "moat-state 1\n";

		for (int i = 0; i < 30; i++)
			strcat(big, "junk\n");
		strcat(big, "end 0\n");
		CHECK_INT_EQ(parse(big, &l), 0);
		CHECK_INT_EQ(l.n, 11);
		CHECK(logged(&l, "20 more problems not shown"));
	}
}

/* Random damage to a good file: never a crash (ASan/UBSan watch). */
static void
test_parse_garbage(void)
{
	static const char good[] = "moat-state 1\n"
	    "ban 192.0.2.1 1767225600000 3 auth\n"
	    "ban 2001:db8::1 1767225600000 1 manual\n"
	    "end 2\n";
	char buf[sizeof(good)];
	unsigned seed = 99;
	int sane = 0;

	for (int i = 0; i < 20000; i++) {
		struct log l;
		size_t len = sizeof(good) - 1 - (size_t)(rand_r(&seed) % 8);
		long rc;

		memcpy(buf, good, sizeof(good));
		for (int k = rand_r(&seed) % 4; k >= 0; k--)
			buf[rand_r(&seed) % len] = (char)rand_r(&seed);
		memset(&l, 0, sizeof(l));
		rc = state_parse("fuzz", buf, len, log_ban, log_report, &l);
		if (rc >= -1 && rc <= 2 && (rc == -1 || rc == l.nb))
			sane++;
	}
	CHECK_INT_EQ(sane, 20000);
}

int
main(void)
{
	test_round_trip();
	test_read_far_expiry();
	test_read_over_max_entries();
	test_reboots_forget();
	test_read_not_regular();
	test_read_rejected();
	test_size_limit();
	test_parse_good();
	test_parse_corrupt();
	test_parse_garbage();
	return check_report("state");
}
