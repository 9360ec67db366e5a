/* test_fw.c - the firewall queue (merging, re-asserting, reports) with a
 * fake backend in place of the kernel. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "config.h"
#include "fw.h"

#define MAXC 1024

/* What the fake kernel saw, one row per element per commit. */
struct seen {
	uint8_t addr[16];
	enum fw_op op;
	bool replace;
	uint64_t timeout_ms;
	int batch;
};

static struct {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool gate_closed;
	bool in_commit;
	enum fw_problem fail;		/* commit fails with this */
	bool fail_v4_only;		/* ... for IPv4 elements only */
	enum fw_problem fail6;		/* IPv6 elements fail with this */
	int fail_from;			/* ... from this batch on (0: all) */
	enum fw_family open_bad_fam;	/* open says this set is unusable */
	bool open_both_bad;		/* open: set4 FW_TYPE, set6 FW_MISSING */
	bool refill;			/* commit says a set is new */
	struct fw_elem *staged[MAXC];
	int nstaged;
	struct seen seen[256];
	int nseen, batches;
	struct fw_report reports[16];
	char messages[16][64];
	uint8_t addrs[16][16];		/* reports[i].addr, copied */
	int nreports;
	int opens;
} fk = { .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER };

static void *
fake_open(const struct config *cfg, struct fw_status *st)
{
	(void)cfg;
	fk.opens++;
	if (fk.open_bad_fam != FW_FAM_NONE) {
		struct fw_status *fst = &st[fk.open_bad_fam];

		fst->problem = FW_TYPE;
		snprintf(fst->message, sizeof(fst->message), "set %d unusable",
		    fk.open_bad_fam);
	}
	if (fk.open_both_bad) {
		st[FW_FAM_V4].problem = FW_TYPE;
		snprintf(st[FW_FAM_V4].message, sizeof(st->message), "set4 "
		    "of the wrong type");
		st[FW_FAM_V6].problem = FW_MISSING;
		snprintf(st[FW_FAM_V6].message, sizeof(st->message), "set6 "
		    "missing");
	}
	return &fk;
}

static int
fake_stage(void *ctx, struct fw_elem *e)
{
	(void)ctx;
	if (fk.nstaged < MAXC)
		fk.staged[fk.nstaged++] = e;
	return 0;
}

static void
fake_list(void *ctx, fw_list_fn *fn, void *arg)
{
	(void)ctx, (void)fn, (void)arg;
}

static int
fake_list_wrap(void *ctx, fw_list_fn *fn, void *arg, struct fw_status *st)
{
	(void)st;
	fake_list(ctx, fn, arg);
	return 0;
}

static int
fake_commit(void *ctx, struct fw_status *st)
{
	int i, ret = 0;

	(void)ctx;
	pthread_mutex_lock(&fk.mu);
	fk.in_commit = true;
	pthread_cond_broadcast(&fk.cv);
	while (fk.gate_closed)
		pthread_cond_wait(&fk.cv, &fk.mu);
	fk.batches++;
	for (i = 0; i < fk.nstaged; i++) {
		struct fw_elem *e = fk.staged[i];
		struct seen *s = &fk.seen[fk.nseen++ % 256];

		memcpy(s->addr, e->addr, 16);
		s->op = e->op;
		s->replace = e->replace;
		s->timeout_ms = e->timeout_ms;
		s->batch = fk.batches;
		enum fw_problem p = fk.fail6 != FW_OK &&
		    !fw_addr_is_v4(e->addr) ? fk.fail6 : fk.fail;

		if (fk.batches < fk.fail_from)
			p = FW_OK;
		e->err = p != FW_OK && (!fk.fail_v4_only ||
		    fw_addr_is_v4(e->addr)) ? 1 : 0;
		if (e->err != 0) {
			struct fw_status *fst = &st[fw_addr_family(e->addr)];

			fst->problem = p;
			snprintf(fst->message, sizeof(fst->message),
			    "fake failure %d", (int)p);
			ret = -1;
		}
	}
	st->refill = fk.refill;
	fk.refill = false;
	fk.nstaged = 0;
	fk.in_commit = false;
	pthread_mutex_unlock(&fk.mu);
	return ret;
}

static void
fake_close(void *ctx)
{
	(void)ctx;
}

static const struct fw_backend fake = {
	.name = "fake",
	.open = fake_open,
	.add = fake_stage,
	.del = fake_stage,
	.list = fake_list_wrap,
	.commit = fake_commit,
	.close = fake_close,
};

/* On the writer's thread when there is no loop: under fk.mu, as the
 * tests poll fk.nreports (nreports()) while it writes. */
static void
on_report(void *arg, const struct fw_report *r)
{
	(void)arg;
	pthread_mutex_lock(&fk.mu);
	if (fk.nreports < 16) {
		fk.reports[fk.nreports] = *r;
		snprintf(fk.messages[fk.nreports], 64, "%s", r->message);
		/* r and what it points to live only for this call. */
		if (r->addr != NULL) {
			memcpy(fk.addrs[fk.nreports], r->addr, 16);
			fk.reports[fk.nreports].addr = fk.addrs[fk.nreports];
		}
		fk.reports[fk.nreports].message = fk.messages[fk.nreports];
		fk.nreports++;
	}
	pthread_mutex_unlock(&fk.mu);
}

static int
nreports(void)
{
	int n;

	pthread_mutex_lock(&fk.mu);
	n = fk.nreports;
	pthread_mutex_unlock(&fk.mu);
	return n;
}

static const uint8_t *
v4(uint8_t last)
{
	static uint8_t b[8][16];
	static int k;

	k = (k + 1) % 8;
	memset(b[k], 0, 16);
	b[k][10] = b[k][11] = 0xff;
	b[k][12] = 192;
	b[k][13] = 0;
	b[k][14] = 2;
	b[k][15] = last;
	return b[k];
}

/* The last row the fake saw for addr, or NULL. */
static const struct seen *
last_seen(const uint8_t *addr)
{
	int i;

	for (i = fk.nseen - 1; i >= 0; i--)
		if (memcmp(fk.seen[i].addr, addr, 16) == 0)
			return &fk.seen[i];
	return NULL;
}

static int
count_seen(const uint8_t *addr, int batch)
{
	int i, n = 0;

	for (i = 0; i < fk.nseen; i++)
		if (memcmp(fk.seen[i].addr, addr, 16) == 0 &&
		    fk.seen[i].batch == batch)
			n++;
	return n;
}

static void
gate(bool closed)
{
	pthread_mutex_lock(&fk.mu);
	fk.gate_closed = closed;
	pthread_cond_broadcast(&fk.cv);
	pthread_mutex_unlock(&fk.mu);
}

/* Waits until the writer sits in a commit (held by the gate). */
static void
wait_in_commit(void)
{
	pthread_mutex_lock(&fk.mu);
	while (!fk.in_commit)
		pthread_cond_wait(&fk.cv, &fk.mu);
	pthread_mutex_unlock(&fk.mu);
}

static struct fw *
open_fake(void)
{
	struct config cfg;

	memset(&cfg, 0, sizeof(cfg));
	cfg.firewall.backend = CFG_FW_NFTABLES;
	cfg.firewall.create = true;
	return fw_open_backend(NULL, &cfg, &fake, on_report, NULL);
}

static void
test_merge(void)
{
	struct fw *fw = open_fake();
	const struct seen *s;
	struct fw_stats st;
	int b;

	CHECK(fw != NULL);
	CHECK_STR_EQ(fw_name(fw), "fake");
	CHECK(fw_enabled(fw));
	/* Hold the writer in its first commit so the rest queues up. */
	gate(true);
	fw_add(fw, v4(1), 1000000);
	wait_in_commit();
	fw_add(fw, v4(2), 10000);
	fw_add(fw, v4(2), 60000);	/* longer wins */
	fw_add(fw, v4(2), 20000);	/* shorter changes nothing */
	fw_add(fw, v4(3), 5000);
	fw_del(fw, v4(4));
	fw_add(fw, v4(5), 30000);
	fw_del(fw, v4(5));		/* delete cancels the add */
	gate(false);
	CHECK(fw_sync(fw, 5000));
	b = fk.batches;
	CHECK_INT_EQ(b, 2);
	CHECK_INT_EQ(count_seen(v4(2), b), 1);
	s = last_seen(v4(2));
	CHECK(s != NULL && s->op == FW_OP_ADD && !s->replace &&
	    s->timeout_ms > 59000 && s->timeout_ms <= 60000);
	s = last_seen(v4(3));
	CHECK(s != NULL && s->op == FW_OP_ADD && s->timeout_ms <= 5000);
	s = last_seen(v4(4));
	CHECK(s != NULL && s->op == FW_OP_DEL);
	s = last_seen(v4(5));
	CHECK(s != NULL && s->op == FW_OP_DEL);
	CHECK_INT_EQ(count_seen(v4(5), b), 1);

	/* The kernel holds .2 for 60 s: a shorter ban is not written, a
	 * longer one replaces the element to extend its timeout. */
	fw_add(fw, v4(2), 30000);
	CHECK(fw_sync(fw, 5000));
	CHECK_INT_EQ(fk.batches, b);
	fw_add(fw, v4(2), 120000);
	CHECK(fw_sync(fw, 5000));
	s = last_seen(v4(2));
	CHECK(s != NULL && s->op == FW_OP_ADD && s->replace &&
	    s->timeout_ms > 119000);

	/* Unban then ban again: the new, shorter timeout is written. */
	gate(true);
	fw_add(fw, v4(9), 1000);
	wait_in_commit();
	fw_del(fw, v4(2));
	fw_add(fw, v4(2), 7000);
	gate(false);
	CHECK(fw_sync(fw, 5000));
	s = last_seen(v4(2));
	CHECK(s != NULL && s->op == FW_OP_ADD && s->replace &&
	    s->timeout_ms <= 7000);

	fw_stats(fw, &st);
	CHECK(st.queued >= 12);
	CHECK(st.merged >= 4);
	CHECK(st.failed == 0);
	CHECK_INT_EQ(fk.nreports, 0);
	fw_close(fw);
}

static void
test_reports_once(void)
{
	struct fw *fw;
	struct fw_stats st;
	int i;

	memset(fk.seen, 0, sizeof(fk.seen));
	fk.nseen = fk.batches = fk.nreports = 0;
	fw = open_fake();
	fk.fail = FW_PERM;
	for (i = 0; i < 3; i++) {
		fw_add(fw, v4((uint8_t)(20 + i)), 600000);
		CHECK(fw_sync(fw, 5000));
	}
	CHECK_INT_EQ(fk.batches, 3);
	CHECK_INT_EQ(fk.nreports, 1);
	CHECK_INT_EQ(fk.reports[0].problem, FW_PERM);
	CHECK_STR_EQ(fk.reports[0].backend, "fake");
	CHECK(fk.reports[0].addr != NULL);
	fw_stats(fw, &st);
	CHECK_INT_EQ(st.failed, 3);
	CHECK_INT_EQ(st.written, 0);

	/* Writes work again: said once; the same problem would be new. */
	fk.fail = FW_OK;
	fw_add(fw, v4(30), 600000);
	CHECK(fw_sync(fw, 5000));
	CHECK_INT_EQ(fk.nreports, 2);
	CHECK_INT_EQ(fk.reports[1].problem, FW_OK);
	fk.fail = FW_TYPE;
	fw_add(fw, v4(31), 600000);
	CHECK(fw_sync(fw, 5000));
	CHECK_INT_EQ(fk.nreports, 3);
	CHECK_INT_EQ(fk.reports[2].problem, FW_TYPE);
	fk.fail = FW_OK;
	fw_close(fw);
}

/*
 * One set fails while the other works: writes of the good one do not
 * say "works again" (they did, and alternated with the error at every
 * write); a write of the failing family that works does.
 */
/* Writes one change of a v4 address; checks the reports then made. */
static void
write_v4(struct fw *fw, uint8_t last, int nreports, enum fw_problem last_p)
{
	fw_add(fw, v4(last), 600000);
	CHECK(fw_sync(fw, 5000));
	CHECK_INT_EQ(fk.nreports, nreports);
	if (fk.nreports == nreports && nreports > 0)
		CHECK_INT_EQ(fk.reports[nreports - 1].problem, last_p);
}

static void
test_one_family_fails(void)
{
	static const uint8_t six[16] = { 0x20, 0x01, 0x0d, 0xb8, [15] = 7 };
	struct fw *fw;
	int i;

	fk.nreports = 0;
	fw = open_fake();
	fk.fail = FW_TYPE;
	fk.fail_v4_only = true;
	write_v4(fw, 40, 1, FW_TYPE);
	for (i = 0; i < 3; i++) {
		fw_add(fw, six, 600000 + (uint64_t)i * 60000);
		CHECK(fw_sync(fw, 5000));
	}
	CHECK_INT_EQ(fk.nreports, 1);
	fk.fail = FW_OK;
	fk.fail_v4_only = false;
	write_v4(fw, 41, 2, FW_OK);
	/* Both sets of the wrong type: each is named, not only the first. */
	fk.fail = FW_TYPE;
	write_v4(fw, 42, 3, FW_TYPE);
	fw_add(fw, six, 900000);
	CHECK(fw_sync(fw, 5000));
	CHECK_INT_EQ(fk.nreports, 4);
	CHECK(fk.reports[3].addr != NULL && !fw_addr_is_v4(fk.reports[3].addr));
	write_v4(fw, 43, 4, FW_TYPE);
	fk.fail = FW_OK;
	fw_close(fw);

	/* The IPv4 set was unusable at open and works now: an IPv4 write
	 * says so, without waiting for an IPv6 ban that may never come. */
	fk.nreports = 0;
	fk.open_bad_fam = FW_FAM_V4;
	fk.fail = FW_TYPE;
	fk.fail_v4_only = true;
	fw = open_fake();
	write_v4(fw, 44, 1, FW_TYPE);
	fk.open_bad_fam = FW_FAM_NONE;
	fk.fail = FW_OK;
	fk.fail_v4_only = false;
	write_v4(fw, 45, 2, FW_OK);
	fw_close(fw);

	/* A writer that replaces a failing one says "works again" at its
	 * first write that works, once; not at the next. */
	fk.nreports = 0;
	fw = open_fake();
	fw_inherit_failing(fw);
	write_v4(fw, 46, 1, FW_OK);
	CHECK(fk.nreports == 1 && !fk.reports[0].note);
	write_v4(fw, 47, 1, FW_OK);
	fw_close(fw);
	/* Its own problem first: the error, then "works again". */
	fk.nreports = 0;
	fw = open_fake();
	fw_inherit_failing(fw);
	fk.fail = FW_TYPE;
	write_v4(fw, 48, 1, FW_TYPE);
	fk.fail = FW_OK;
	write_v4(fw, 49, 2, FW_OK);
	fw_close(fw);
}

/* Counts the problem reports of kind p, and those with an address of
 * family fam among them. */
static int
count_reports(enum fw_problem p, enum fw_family fam, int *with_fam)
{
	int i, n = 0;

	*with_fam = 0;
	for (i = 0; i < fk.nreports; i++) {
		if (fk.reports[i].note || fk.reports[i].problem != p)
			continue;
		n++;
		if (fk.reports[i].addr != NULL &&
		    fw_addr_family(fk.reports[i].addr) == fam)
			(*with_fam)++;
	}
	return n;
}

/*
 * Both sets broken, each its own way: each problem is reported, once,
 * whether found at open or in one commit of an IPv4 and an IPv6 element
 * (a single status per commit said one of them, twice, and never the
 * other).
 */
static void
test_both_families_fail(void)
{
	static const uint8_t six[16] = { 0x20, 0x01, 0x0d, 0xb8, [15] = 9 };
	struct fw *fw;
	int i, with;

	/* At open, before any ban. */
	fk.nreports = 0;
	fk.open_both_bad = true;
	fw = open_fake();
	for (i = 0; i < 500 && nreports() < 2; i++)
		usleep(10000);	/* the writer opens on its own thread */
	fw_close(fw);
	fk.open_both_bad = false;
	CHECK_INT_EQ(fk.nreports, 2);
	CHECK_INT_EQ(count_reports(FW_TYPE, FW_FAM_V4, &with), 1);
	CHECK_INT_EQ(count_reports(FW_MISSING, FW_FAM_V6, &with), 1);

	/* In one commit, after an open that found both sets good. */
	fk.nreports = 0;
	fw = open_fake();
	gate(true);
	fw_add(fw, v4(60), 600000);
	wait_in_commit();
	pthread_mutex_lock(&fk.mu);
	fk.fail_from = fk.batches + 2;	/* not the held one: the next */
	pthread_mutex_unlock(&fk.mu);
	fk.fail = FW_TYPE;
	fk.fail6 = FW_MISSING;
	fw_add(fw, v4(61), 600000);
	fw_add(fw, six, 600000);
	gate(false);
	CHECK(fw_sync(fw, 5000));
	CHECK_INT_EQ(count_reports(FW_TYPE, FW_FAM_V4, &with), 1);
	CHECK_INT_EQ(with, 1);
	CHECK_INT_EQ(count_reports(FW_MISSING, FW_FAM_V6, &with), 1);
	CHECK_INT_EQ(with, 1);
	/* Written again, together: nothing new to say. */
	fw_add(fw, v4(62), 600000);
	fw_add(fw, six, 900000);
	CHECK(fw_sync(fw, 5000));
	CHECK_INT_EQ(count_reports(FW_TYPE, FW_FAM_V4, &with), 1);
	CHECK_INT_EQ(count_reports(FW_MISSING, FW_FAM_V6, &with), 1);
	fk.fail = fk.fail6 = FW_OK;
	fk.fail_from = 0;
	fw_close(fw);
}

/*
 * A burst of bans grows the queue's maps and the elements of the write
 * with it; once written, that memory is given back (it was kept for good:
 * some 285 bytes a ban, 340 MB after a million).
 */
static void
test_burst_memory(void)
{
	struct fw *fw = open_fake();
	struct fw_stats st;
	uint8_t a[16];
	size_t idle;
	int i;

	CHECK(fw_sync(fw, 5000));
	idle = fw_queue_bytes(fw);
	memset(a, 0, 16);
	a[0] = 0x20;
	a[1] = 0x01;
	/* Queued while the writer is held, so that one write takes all. */
	gate(true);
	fw_add(fw, a, 100000);
	wait_in_commit();
	for (i = 1; i <= 20000; i++) {
		a[13] = (uint8_t)(i >> 16);
		a[14] = (uint8_t)(i >> 8);
		a[15] = (uint8_t)i;
		fw_add(fw, a, 100000);
	}
	CHECK(fw_queue_bytes(fw) > 20000 * 16);
	gate(false);
	CHECK(fw_sync(fw, 10000));
	fw_stats(fw, &st);
	CHECK_INT_EQ(st.written, 20001);
	/* What a small write needs stays; the burst's is gone. */
	fw_add(fw, a, 200000);
	CHECK(fw_sync(fw, 5000));
	CHECK(fw_queue_bytes(fw) <= idle + 64 * 1024);
	fw_close(fw);
}

/* An operator's ban replaces a longer one; a re-created set and a resync
 * make the writer forget what it believed the kernel held. */
static void
test_set_and_refill(void)
{
	struct fw *fw = open_fake();
	const struct seen *s;
	int b, i;

	fk.nreports = 0;
	fw_add(fw, v4(20), 600000);
	CHECK(fw_sync(fw, 5000));
	fw_set(fw, v4(20), 5000);
	CHECK(fw_sync(fw, 5000));
	s = last_seen(v4(20));
	CHECK(s != NULL && s->op == FW_OP_ADD && s->replace &&
	    s->timeout_ms <= 5000);

	/* Held already (and longer): not written again, until the kernel is
	 * read back (the fake lists nothing: the set was emptied). The second
	 * ban is shorter because an equal one a millisecond later would end
	 * later and rightly be written. */
	fw_add(fw, v4(21), 600000);
	CHECK(fw_sync(fw, 5000));
	b = fk.batches;
	fw_add(fw, v4(21), 300000);
	CHECK(fw_sync(fw, 5000));
	CHECK_INT_EQ(fk.batches, b);
	fw_resync(fw);
	fw_add(fw, v4(21), 600000);
	CHECK(fw_sync(fw, 5000));
	CHECK_INT_EQ(fk.batches, b + 1);
	CHECK_INT_EQ(count_seen(v4(21), b + 1), 1);

	/* A commit that created a set asks for every ban again. */
	fk.refill = true;
	fw_add(fw, v4(22), 600000);
	CHECK(fw_sync(fw, 5000));
	for (i = 0; i < fk.nreports && !fk.reports[i].refill; i++)
		;
	CHECK(i < fk.nreports);
	CHECK_INT_EQ(fk.reports[i].problem, FW_OK);
	b = fk.batches;
	fw_add(fw, v4(21), 600000);
	CHECK(fw_sync(fw, 5000));
	CHECK_INT_EQ(fk.batches, b + 1);
	fw_close(fw);
}

static void
test_none_and_helpers(void)
{
	struct config cfg;
	struct fw *fw;
	char buf[64];
	uint8_t a6[16] = { 0x20, 0x01, 0x0d, 0xb8 };

	memset(&cfg, 0, sizeof(cfg));
	cfg.firewall.backend = CFG_FW_NONE;
	fw = fw_open(NULL, &cfg, on_report, NULL);
	CHECK(fw != NULL);
	CHECK(!fw_enabled(fw));
	CHECK_STR_EQ(fw_name(fw), "none");
	fw_add(fw, v4(1), 1000);	/* no-ops */
	fw_del(fw, v4(1));
	CHECK(fw_sync(fw, 10));
	fw_close(fw);
	CHECK_STR_EQ(fw_name(NULL), "none");

	CHECK(fw_addr_is_v4(v4(7)));
	CHECK(!fw_addr_is_v4(a6));
	CHECK_STR_EQ(fw_addr_str(v4(7), buf, sizeof(buf)), "192.0.2.7");
	CHECK_STR_EQ(fw_addr_str(a6, buf, sizeof(buf)), "2001:db8::");
	CHECK_STR_EQ(fw_problem_str(FW_PERM), "permission");
	CHECK_STR_EQ(fw_problem_str(FW_TYPE), "wrong_set_type");
}

/* Many addresses: the queue's hash grows and shrinks without losing any. */
/* Waits up to ms for a commit after batch b that touches addr. */
static bool
wait_batch_with(const uint8_t *addr, int b, int ms)
{
	const struct seen *s;

	for (; ms > 0; ms -= 50) {
		pthread_mutex_lock(&fk.mu);
		s = last_seen(addr);
		pthread_mutex_unlock(&fk.mu);
		if (s != NULL && s->batch > b)
			return true;
		usleep(50 * 1000);
	}
	return false;
}

/*
 * Failed changes are tried again later, and a later change wins over a
 * waiting retry: an add that failed and was then unbanned must not come
 * back; a delete that failed is sent again.
 */
static void
test_retries(void)
{
	struct fw *fw = open_fake();
	const struct seen *s;
	int b;

	fk.nseen = fk.batches = fk.nreports = 0;
	fw_add(fw, v4(31), 600000);
	CHECK(fw_sync(fw, 5000));

	fk.fail = FW_MISSING;
	fw_add(fw, v4(30), 600000);
	fw_del(fw, v4(31));
	CHECK(fw_sync(fw, 5000));
	s = last_seen(v4(31));
	CHECK(s != NULL && s->op == FW_OP_DEL);

	fk.fail = FW_OK;
	fw_del(fw, v4(30));		/* the unban, after the failed ban */
	CHECK(fw_sync(fw, 5000));
	b = fk.batches;
	s = last_seen(v4(30));
	CHECK(s != NULL && s->op == FW_OP_DEL && s->batch == b);

	/* The first retry comes 2 s after the failure. */
	CHECK(wait_batch_with(v4(31), b, 8000));
	s = last_seen(v4(31));
	CHECK(s != NULL && s->op == FW_OP_DEL && s->batch > b);
	s = last_seen(v4(30));
	CHECK(s != NULL && s->op == FW_OP_DEL && s->batch == b);

	/* Once written, nothing is retried. */
	b = fk.batches;
	usleep(2500 * 1000);
	CHECK_INT_EQ(fk.batches, b);
	fw_close(fw);
}

static void
test_many(void)
{
	struct fw *fw = open_fake();
	struct fw_stats st;
	uint8_t a[16];
	int i;

	fk.nseen = fk.batches = fk.nreports = 0;
	gate(true);
	memset(a, 0, 16);
	a[0] = 0x20;
	a[1] = 0x01;
	fw_add(fw, a, 100000);
	wait_in_commit();
	for (i = 0; i < 1000; i++) {
		a[14] = (uint8_t)(i >> 8);
		a[15] = (uint8_t)i;
		fw_add(fw, a, 100000 + (uint64_t)i);
		if (i % 3 == 0)
			fw_del(fw, a);
	}
	gate(false);
	CHECK(fw_sync(fw, 5000));
	fw_stats(fw, &st);
	CHECK_INT_EQ(st.written, 1001);
	CHECK(st.batches >= 2 + 1000 / FW_BATCH_MAX - 1);
	fw_close(fw);
}

int
main(void)
{
	test_merge();
	test_reports_once();
	test_one_family_fails();
	test_both_families_fail();
	test_set_and_refill();
	test_none_and_helpers();
	test_retries();
	test_many();
	test_burst_memory();
	return check_report("fw");
}
