/* fw.c - the queue in front of the kernel set writers, and its thread. */
#include "fw.h"

#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "addr.h"
#include "mono.h"
#include "siphash.h"

/* Failed adds are tried again after this long, doubling up to the cap. */
#define RETRY_FIRST_MS	2000
#define RETRY_MAX_MS	60000
#define REPORTS_MAX	64
/* An emptied map keeps its slots up to this many (48 KiB); a bigger one
 * (a burst of bans, a refill) gives them back. */
#define AMAP_KEEP	1024

/* ---- an address map (open addressing, linear probing) ----------------- */

struct slot {
	uint8_t addr[16];
	bool used;
	bool reset;		/* an add that follows a pending delete */
	enum fw_op op;
	uint64_t deadline_ms;
	uint64_t queued_ms;
};

struct amap {
	struct slot *s;
	size_t cap, n;		/* cap is a power of two or 0 */
	uint64_t key[2];
};

static size_t
amap_home(const struct amap *m, const uint8_t addr[16])
{
	return (size_t)siphash13(addr, 16, m->key) & (m->cap - 1);
}

static struct slot *
amap_find(const struct amap *m, const uint8_t addr[16])
{
	size_t i;

	if (m->n == 0)
		return NULL;
	for (i = amap_home(m, addr); m->s[i].used; i = (i + 1) & (m->cap - 1))
		if (memcmp(m->s[i].addr, addr, 16) == 0)
			return &m->s[i];
	return NULL;
}

static int amap_grow(struct amap *m);

/* Returns the slot for addr, new ones zeroed but for the address; NULL
 * when out of memory. */
static struct slot *
amap_get(struct amap *m, const uint8_t addr[16], bool *isnew)
{
	struct slot *sl;
	size_t i;

	if ((sl = amap_find(m, addr)) != NULL) {
		*isnew = false;
		return sl;
	}
	if ((m->n + 1) * 4 > m->cap * 3 && amap_grow(m) == -1)
		return NULL;
	for (i = amap_home(m, addr); m->s[i].used; i = (i + 1) & (m->cap - 1))
		;
	memset(&m->s[i], 0, sizeof(m->s[i]));
	memcpy(m->s[i].addr, addr, 16);
	m->s[i].used = true;
	m->n++;
	*isnew = true;
	return &m->s[i];
}

static int
amap_grow(struct amap *m)
{
	struct amap nm = { .key = { m->key[0], m->key[1] } };
	struct slot *sl;
	bool isnew;
	size_t i;

	nm.cap = m->cap ? m->cap * 2 : 64;
	if ((nm.s = calloc(nm.cap, sizeof(*nm.s))) == NULL)
		return -1;
	for (i = 0; i < m->cap; i++)
		if (m->s[i].used) {
			sl = amap_get(&nm, m->s[i].addr, &isnew);
			*sl = m->s[i];
		}
	free(m->s);
	*m = nm;
	return 0;
}

/* Backward-shift deletion keeps probe chains whole without tombstones. */
static void
amap_remove(struct amap *m, struct slot *sl)
{
	size_t i = (size_t)(sl - m->s), j = i, k;

	for (;;) {
		m->s[i].used = false;
		for (;;) {
			j = (j + 1) & (m->cap - 1);
			if (!m->s[j].used)
				goto done;
			k = amap_home(m, m->s[j].addr);
			/* Move j into i unless its home lies in (i, j]. */
			if (i <= j ? (i < k && k <= j) : (i < k || k <= j))
				continue;
			break;
		}
		m->s[i] = m->s[j];
		i = j;
	}
done:
	m->n--;
}

static void
amap_free(struct amap *m)
{
	free(m->s);
	m->s = NULL;
	m->cap = m->n = 0;
}

/* Empties m; the slots of a big one are freed (it grows again when
 * needed), so that the memory of a burst is not held for good. */
static void
amap_clear(struct amap *m)
{
	if (m->cap > AMAP_KEEP)
		amap_free(m);
	else if (m->n > 0)
		memset(m->s, 0, m->cap * sizeof(*m->s));
	m->n = 0;
}

/* ---- the writer -------------------------------------------------------- */

struct report_item {
	enum fw_problem problem;
	bool refill;
	bool note;
	bool has_addr;
	uint8_t addr[16];
	char message[320];
};

struct fw {
	const struct fw_backend *be;
	bool said_local;		/* a loopback ban was noted (under mu) */
	struct config cfgcopy;		/* set names, create, max_entries */
	char *table, *set4, *set6;
	struct ev_loop *loop;
	ev_async async;
	fw_report_fn *report;
	void *report_arg;

	pthread_t thread;
	bool running;
	pthread_mutex_t mu;
	pthread_cond_t wake, done;
	struct amap pending;		/* under mu */
	uint64_t seq_queued, seq_done;	/* under mu */
	bool stop;
	bool resync;			/* under mu: read the kernel back */
	bool inherit_failing;		/* under mu: fw_inherit_failing() */
	struct fw_stats stats;		/* under mu */
	struct report_item reports[REPORTS_MAX]; /* under mu */
	size_t nreports;

	/* Writer thread only. */
	void *ctx;
	struct amap work, known, retry;
	uint64_t retry_at_ms, retry_delay_ms;
	bool reported[FW_NPROBLEMS][FW_NFAMILIES];
	/* Writes failed and the loop was told. Writes work again once the
	 * writer opens and every family that failed has been written since:
	 * one set may fail while the other works, and "works again" must not
	 * alternate with the error at every write of the good one. */
	bool failing;
	/* By family; FW_FAM_NONE: the open failed, no element to blame. */
	bool fam_failing[FW_NFAMILIES];
	fw_lift_fn *lift;		/* under mu: a fw_lift() not yet done */
	void *lift_arg;
	struct fw_elem *elems;
	size_t elems_cap;
	size_t prune_mark;
};

int
fw_ensure_sets(void *ctx, int (*ensure)(void *ctx, int fam,
    struct fw_status *st), struct fw_status *st)
{
	int fam;

	for (fam = 0; fam < 2; fam++) {
		struct fw_status *fst = &st[FW_FAM_V4 + fam];

		memset(fst, 0, sizeof(*fst));
		if (ensure(ctx, fam, fst) == 0) {
			fst->problem = FW_OK;
			fst->fam = FW_FAM_V4 + fam;
			continue;
		}
		/* Each set's problem is its own: both broken, both said. */
		fst->fam = FW_FAM_V4 + fam;
		if (fst->problem == FW_PERM || fst->problem == FW_NOSUPPORT) {
			st[FW_FAM_NONE] = *fst;
			st[FW_FAM_NONE].fam = FW_FAM_NONE;
			return -1;
		}
	}
	return 0;
}

bool
fw_addr_is_v4(const uint8_t addr[16])
{
	static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	    0xff, 0xff };

	return memcmp(addr, mapped, 12) == 0;
}

enum fw_family
fw_addr_family(const uint8_t addr[16])
{
	return fw_addr_is_v4(addr) ? FW_FAM_V4 : FW_FAM_V6;
}

const char *
fw_addr_str(const uint8_t addr[16], char *buf, size_t len)
{
	if (fw_addr_is_v4(addr)) {
		if (inet_ntop(AF_INET, addr + 12, buf, (socklen_t)len) == NULL)
			snprintf(buf, len, "?");
	} else if (inet_ntop(AF_INET6, addr, buf, (socklen_t)len) == NULL)
		snprintf(buf, len, "?");
	return buf;
}

const char *
fw_problem_str(enum fw_problem p)
{
	switch (p) {
	case FW_OK:		return "ok";
	case FW_PERM:		return "permission";
	case FW_NOSUPPORT:	return "no_kernel_support";
	case FW_MISSING:	return "missing_set";
	case FW_TYPE:		return "wrong_set_type";
	case FW_OTHER:
	case FW_NPROBLEMS:	break;
	}
	return "error";
}

const char *
fw_name(const struct fw *fw)
{
	return fw != NULL ? fw->be->name : "none";
}

bool
fw_enabled(const struct fw *fw)
{
	return fw != NULL && fw->be != &fw_backend_none;
}

bool
fw_takes(const struct fw *fw, const uint8_t addr[16])
{
	return fw_enabled(fw) && !addr_is_local(addr);
}

/* Hands reports to the loop thread (or delivers them at once). */
static void
fw_deliver(struct fw *fw)
{
	struct report_item items[REPORTS_MAX];
	struct fw_report r;
	size_t i, n;

	pthread_mutex_lock(&fw->mu);
	n = fw->nreports;
	memcpy(items, fw->reports, n * sizeof(items[0]));
	fw->nreports = 0;
	pthread_mutex_unlock(&fw->mu);
	for (i = 0; i < n && fw->report != NULL; i++) {
		r.problem = items[i].problem;
		r.backend = fw->be->name;
		r.message = items[i].message;
		r.addr = items[i].has_addr ? items[i].addr : NULL;
		r.refill = items[i].refill;
		r.note = items[i].note;
		fw->report(fw->report_arg, &r);
	}
}

static void
fw_async_cb(struct ev_loop *loop, ev_async *w, int revents)
{
	struct fw *fw = (struct fw *)(void *)((char *)w -
	    offsetof(struct fw, async));

	(void)loop, (void)revents;
	fw_deliver(fw);
}

static void
fw_post(struct fw *fw, enum fw_problem p, const uint8_t *addr,
    const char *message, bool refill, bool note)
{
	struct report_item *it;

	pthread_mutex_lock(&fw->mu);
	if (fw->nreports < REPORTS_MAX) {
		it = &fw->reports[fw->nreports++];
		it->problem = p;
		it->refill = refill;
		it->note = note;
		it->has_addr = addr != NULL;
		if (addr != NULL)
			memcpy(it->addr, addr, 16);
		/* Cut to fit: a long one (a list of sets) loses its end. */
		snprintf(it->message, sizeof(it->message), "%.*s",
		    (int)(sizeof(it->message) - 1), message);
	}
	pthread_mutex_unlock(&fw->mu);
	if (fw->loop != NULL)
		ev_async_send(fw->loop, &fw->async);
	else
		fw_deliver(fw);
}

/*
 * A problem is reported once per kind and set until writes work again,
 * with addr, an element of that set, if any.
 */
static void
fw_problem(struct fw *fw, const struct fw_status *st, const uint8_t *addr)
{
	enum fw_problem p = st->problem;
	enum fw_family fam = st->fam != FW_FAM_NONE ? st->fam :
	    addr != NULL ? fw_addr_family(addr) : FW_FAM_NONE;

	if (p <= FW_OK || p >= FW_NPROBLEMS)
		p = FW_OTHER;
	if ((unsigned)fam >= FW_NFAMILIES)
		fam = FW_FAM_NONE;	/* a backend's slip indexes nothing */
	fw->failing = true;
	fw->fam_failing[fam] = true;
	/* Two sets broken alike are two problems to fix. */
	if (fw->reported[p][fam])
		return;
	fw->reported[p][fam] = true;
	fw_post(fw, p, addr, st->message[0] != '\0' ? st->message :
	    "firewall write failed", false, false);
}

static void
fw_recovered(struct fw *fw)
{
	char msg[128];

	if (!fw->failing || fw->fam_failing[FW_FAM_NONE] ||
	    fw->fam_failing[FW_FAM_V4] || fw->fam_failing[FW_FAM_V6])
		return;
	fw->failing = false;
	memset(fw->reported, 0, sizeof(fw->reported));
	snprintf(msg, sizeof(msg), "%s: kernel set writes work again",
	    fw->be->name);
	fw_post(fw, FW_OK, NULL, msg, false, false);
}

/* Forgets elements of known that the kernel has expired by now. */
static void
fw_prune_known(struct fw *fw, uint64_t now)
{
	size_t i;

	for (i = 0; i < fw->known.cap; ) {
		if (fw->known.s[i].used && fw->known.s[i].deadline_ms <= now)
			amap_remove(&fw->known, &fw->known.s[i]);
		else
			i++;
	}
}

static void
fw_seed_known(void *arg, const uint8_t addr[16], uint64_t remaining_ms)
{
	struct fw *fw = arg;
	struct slot *sl;
	bool isnew;

	if ((sl = amap_get(&fw->known, addr, &isnew)) != NULL)
		sl->deadline_ms = remaining_ms == 0 ? UINT64_MAX :
		    mono_ms() + remaining_ms;
}

/* What the kernel holds now (bans from before a restart, or nothing in
 * a set just created): adds re-assert a timeout only when it differs. */
static void
fw_relist(struct fw *fw)
{
	struct fw_status st = { FW_OK, "", false, 0 };

	amap_clear(&fw->known);
	if (fw->be->list != NULL &&
	    fw->be->list(fw->ctx, fw_seed_known, fw, &st) == -1)
		amap_clear(&fw->known);
}

/* A set was created or is usable again: it lacks the bans written
 * before, so the caller is asked for every ban in force. */
static void
fw_refill(struct fw *fw)
{
	char msg[128];

	fw_relist(fw);
	snprintf(msg, sizeof(msg), "%s: a set was created or is usable "
	    "again", fw->be->name);
	fw_post(fw, FW_OK, NULL, msg, true, true);
}

static bool
fw_ensure_open(struct fw *fw)
{
	struct fw_status st[FW_NFAMILIES];
	enum fw_family fam;
	bool refill = false;

	if (fw->ctx != NULL)
		return true;
	memset(st, 0, sizeof(st));
	if ((fw->ctx = fw->be->open(&fw->cfgcopy, st)) == NULL) {
		st[FW_FAM_NONE].fam = FW_FAM_NONE;
		fw_problem(fw, &st[FW_FAM_NONE], NULL);
		return false;
	}
	/* Open, but a set may be unusable (its family fails per element),
	 * or new ("created"): each set is said on its own. */
	for (fam = FW_FAM_V4; fam <= FW_FAM_V6; fam++) {
		st[fam].fam = fam;
		if (st[fam].problem != FW_OK)
			fw_problem(fw, &st[fam], NULL);
		else if (st[fam].message[0] != '\0')
			fw_post(fw, FW_OK, NULL, st[fam].message, false, true);
		refill = refill || st[fam].refill;
	}
	if (refill)
		fw_refill(fw);
	else
		fw_relist(fw);
	return true;
}

/*
 * Queues a failed change for another try while it can matter: an add
 * while its ban lasts, a delete while the element it removes could still
 * be in the kernel (until the deadline the kernel was last given for it;
 * one never written there needs no delete). held_ms is that deadline, 0
 * when unknown.
 */
static void
fw_retry_later(struct fw *fw, const struct fw_elem *e, uint64_t held_ms,
    uint64_t now)
{
	struct slot *sl;
	uint64_t until = e->deadline_ms;	/* a retried delete's held_ms */
	bool isnew;

	if (e->op == FW_OP_DEL && held_ms > until)
		until = held_ms;
	if (until <= now + 1000)
		return;
	if ((sl = amap_get(&fw->retry, e->addr, &isnew)) == NULL)
		return;
	if (e->op == FW_OP_DEL) {
		sl->op = FW_OP_DEL;
		sl->reset = false;
		sl->deadline_ms = until;
		sl->queued_ms = e->queued_ms;
	} else if (isnew || sl->deadline_ms < e->deadline_ms) {
		sl->op = FW_OP_ADD;
		sl->deadline_ms = e->deadline_ms;
		sl->queued_ms = e->queued_ms;
		sl->reset = sl->reset || e->replace;
	}
}

/* The deadline the kernel was last given for addr, 0 if none is known. */
static uint64_t
fw_held_until(struct fw *fw, const uint8_t addr[16])
{
	const struct slot *k = amap_find(&fw->known, addr);

	return k != NULL ? k->deadline_ms : 0;
}

/* The first failed element of elems[start..start+m) of family fam (any
 * for FW_FAM_NONE); NULL if none failed. */
static const uint8_t *
first_failed(const struct fw *fw, size_t start, size_t m,
    enum fw_family fam)
{
	size_t i;

	for (i = start; i < start + m; i++) {
		const struct fw_elem *e = &fw->elems[i];

		if (e->err == 0)
			continue;
		if (fam == FW_FAM_NONE || fw_addr_family(e->addr) == fam)
			return e->addr;
	}
	return NULL;
}

/*
 * Says what a commit of elems[start..start+m) found: each set's problem
 * on its own (two broken sets are two reports, each once), one that
 * concerns neither set with the first failed element, and notes.
 */
static void
fw_commit_said(struct fw *fw, struct fw_status *st, int rc, size_t start,
    size_t m)
{
	enum fw_family fam;
	bool refill = false;

	for (fam = FW_FAM_NONE; fam < FW_NFAMILIES; fam++) {
		st[fam].fam = fam;
		refill = refill || st[fam].refill;
		if (st[fam].problem == FW_OK && st[fam].message[0] != '\0')
			fw_post(fw, FW_OK, NULL, st[fam].message, false, true);
	}
	if (refill)
		fw_refill(fw);
	for (fam = FW_FAM_NONE; fam < FW_NFAMILIES; fam++)
		if (st[fam].problem != FW_OK)
			fw_problem(fw, &st[fam], first_failed(fw, start, m,
			    fam));
	/* A failure no status explains is still a failure. */
	if (rc == -1 && st[FW_FAM_NONE].problem == FW_OK &&
	    st[FW_FAM_V4].problem == FW_OK && st[FW_FAM_V6].problem == FW_OK)
		fw_problem(fw, &st[FW_FAM_NONE], first_failed(fw, start, m,
		    FW_FAM_NONE));
}

/*
 * Writes fw->work: turns each change into an element (skipping adds the
 * kernel already holds for longer), commits in batches and records the
 * outcome. Runs on the writer thread without the lock.
 */
static void
fw_write(struct fw *fw)
{
	struct fw_status st[FW_NFAMILIES];
	struct fw_elem *e;
	struct slot *sl, *k;
	uint64_t now = mono_ms(), lat, merged = 0;
	uint64_t written = 0, failed = 0, batches = 0, latsum = 0, latmax = 0;
	size_t i, n, start, m;
	bool wrote[FW_NFAMILIES] = { false }, bad[FW_NFAMILIES] = { false };
	enum fw_family fam;
	int rc;

	if (fw->work.n == 0)
		return;
	if (fw->work.n > fw->elems_cap) {
		if ((e = realloc(fw->elems, fw->work.n * sizeof(*e))) == NULL)
			return;		/* work stays; tried next time */
		fw->elems = e;
		fw->elems_cap = fw->work.n;
	}
	if (fw->known.n > fw->prune_mark) {
		fw_prune_known(fw, now);
		fw->prune_mark = fw->known.n * 2 > 1024 ? fw->known.n * 2 :
		    1024;
	}
	n = 0;
	for (i = 0; i < fw->work.cap; i++) {
		sl = &fw->work.s[i];
		if (!sl->used)
			continue;
		e = &fw->elems[n];
		memset(e, 0, sizeof(*e));
		memcpy(e->addr, sl->addr, 16);
		e->op = sl->op;
		e->queued_ms = sl->queued_ms;
		e->deadline_ms = sl->deadline_ms;
		/* This change is newer than any retry waiting for the
		 * address: a retried add would undo an unban. */
		if ((k = amap_find(&fw->retry, sl->addr)) != NULL)
			amap_remove(&fw->retry, k);
		k = amap_find(&fw->known, sl->addr);
		if (sl->op == FW_OP_DEL && sl->deadline_ms != 0 &&
		    sl->deadline_ms <= now) {
			merged++;	/* a retried delete: the kernel's
					 * timeout has removed it */
			continue;
		}
		if (sl->op == FW_OP_ADD) {
			if (sl->deadline_ms <= now + 500) {
				merged++;	/* over before it could matter */
				continue;
			}
			if (k != NULL && !sl->reset &&
			    k->deadline_ms >= sl->deadline_ms) {
				merged++;	/* the kernel holds it longer */
				continue;
			}
			e->replace = k != NULL || sl->reset;
			e->timeout_ms = sl->deadline_ms - now;
		}
		n++;
	}
	amap_clear(&fw->work);
	if (fw->retry.n == 0)
		fw->retry_at_ms = 0;

	if (n > 0 && !fw_ensure_open(fw)) {
		for (i = 0; i < n; i++)
			fw_retry_later(fw, &fw->elems[i],
			    fw_held_until(fw, fw->elems[i].addr), now);
		failed += n;
		n = 0;
	}
	for (start = 0; start < n; start += m) {
		m = n - start < FW_BATCH_MAX ? n - start : FW_BATCH_MAX;
		for (i = start; i < start + m; i++) {
			e = &fw->elems[i];
			if (e->op == FW_OP_ADD)
				(void)fw->be->add(fw->ctx, e);
			else
				(void)fw->be->del(fw->ctx, e);
		}
		memset(st, 0, sizeof(st));
		rc = fw->be->commit(fw->ctx, st);
		batches++;
		now = mono_ms();
		for (i = start; i < start + m; i++) {
			e = &fw->elems[i];
			fam = fw_addr_family(e->addr);
			if (e->err != 0) {
				bad[fam] = true;
				failed++;
				fw_retry_later(fw, e, fw_held_until(fw,
				    e->addr), now);
				if ((k = amap_find(&fw->known, e->addr)) !=
				    NULL && e->op == FW_OP_DEL)
					amap_remove(&fw->known, k);
				continue;
			}
			wrote[fam] = true;
			written++;
			lat = (now - e->queued_ms) * 1000;
			latsum += lat;
			if (lat > latmax)
				latmax = lat;
			k = amap_find(&fw->known, e->addr);
			if (e->op == FW_OP_DEL) {
				if (k != NULL)
					amap_remove(&fw->known, k);
			} else {
				bool isnew;

				if (k == NULL)
					k = amap_get(&fw->known, e->addr,
					    &isnew);
				if (k != NULL)
					k->deadline_ms = e->deadline_ms;
			}
		}
		fw_commit_said(fw, st, rc, start, m);
	}
	if (wrote[FW_FAM_V4] || wrote[FW_FAM_V6])
		fw->fam_failing[FW_FAM_NONE] = false;
	for (fam = FW_FAM_V4; fam <= FW_FAM_V6; fam++)
		if (!bad[fam] && wrote[fam])
			fw->fam_failing[fam] = false;
	fw_recovered(fw);
	if (fw->retry.n > 0 && fw->retry_at_ms == 0) {
		fw->retry_delay_ms = fw->retry_delay_ms == 0 ?
		    RETRY_FIRST_MS : fw->retry_delay_ms * 2;
		if (fw->retry_delay_ms > RETRY_MAX_MS)
			fw->retry_delay_ms = RETRY_MAX_MS;
		fw->retry_at_ms = mono_ms() + fw->retry_delay_ms;
	}
	if (failed == 0 && fw->retry.n == 0)
		fw->retry_delay_ms = 0;
	/* Room for more than a batch was for a burst: given back. */
	if (fw->elems_cap > FW_BATCH_MAX) {
		free(fw->elems);
		fw->elems = NULL;
		fw->elems_cap = 0;
	}

	pthread_mutex_lock(&fw->mu);
	fw->stats.merged += merged;
	fw->stats.written += written;
	fw->stats.failed += failed;
	fw->stats.batches += batches;
	fw->stats.latency_us_sum += latsum;
	if (latmax > fw->stats.latency_us_max)
		fw->stats.latency_us_max = latmax;
	pthread_mutex_unlock(&fw->mu);
}

/* Queues the deletion of each known element lift() says must go, unless
 * a newer change for it is queued already. */
static void
fw_do_lift(struct fw *fw, fw_lift_fn *lift, void *arg)
{
	struct slot *sl, *w;
	char msg[160];
	size_t i, n = 0;
	uint64_t now = mono_ms();
	bool isnew;

	for (i = 0; i < fw->known.cap; i++) {
		sl = &fw->known.s[i];
		if (!sl->used || !lift(arg, sl->addr))
			continue;
		if ((w = amap_get(&fw->work, sl->addr, &isnew)) == NULL)
			break;
		if (!isnew)
			continue;
		w->op = FW_OP_DEL;
		w->reset = false;
		w->deadline_ms = 0;
		w->queued_ms = now;
		n++;
	}
	if (n == 0)
		return;
	snprintf(msg, sizeof(msg), "%s: deleting %zu element%s the allow "
	    "list covers, left from bans moat no longer holds", fw->be->name,
	    n, n == 1 ? "" : "s");
	fw_post(fw, FW_OK, NULL, msg, false, true);
}

/* Moves due retries into work (the lock is not needed: both are ours). */
static void
fw_take_retries(struct fw *fw, uint64_t now)
{
	struct slot *sl, *w;
	bool isnew;
	size_t i;

	if (fw->retry.n == 0 || now < fw->retry_at_ms)
		return;
	for (i = 0; i < fw->retry.cap; i++) {
		sl = &fw->retry.s[i];
		if (!sl->used)
			continue;
		if ((w = amap_get(&fw->work, sl->addr, &isnew)) == NULL)
			break;
		if (isnew)
			*w = *sl;	/* a newer change wins otherwise */
	}
	amap_clear(&fw->retry);
	fw->retry_at_ms = 0;
}

static void *
fw_thread(void *arg)
{
	struct fw *fw = arg;
	struct amap tmp;
	struct timespec ts;
	uint64_t seq, now, wait;
	bool stop, resync;
	fw_lift_fn *lift;
	void *lift_arg;

	/* Open at once: a missing permission or a bad set is said at start,
	 * not at the first ban. A failure is retried with the next write. */
	(void)fw_ensure_open(fw);
	pthread_mutex_lock(&fw->mu);
	for (;;) {
		while (fw->pending.n == 0 && !fw->stop && !fw->resync &&
		    fw->lift == NULL) {
			if (fw->retry.n == 0) {
				pthread_cond_wait(&fw->wake, &fw->mu);
				continue;
			}
			now = mono_ms();
			if (now >= fw->retry_at_ms)
				break;
			wait = fw->retry_at_ms - now;
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_sec += (time_t)(wait / 1000);
			ts.tv_nsec += (long)(wait % 1000) * 1000000;
			if (ts.tv_nsec >= 1000000000) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000;
			}
			pthread_cond_timedwait(&fw->wake, &fw->mu, &ts);
		}
		/* Take the whole queue: fw_add keeps filling the other. */
		tmp = fw->work;
		fw->work = fw->pending;
		fw->pending = tmp;
		seq = fw->seq_queued;
		stop = fw->stop;
		resync = fw->resync;
		fw->resync = false;
		lift = fw->lift;
		lift_arg = fw->lift_arg;
		fw->lift = NULL;
		if (fw->inherit_failing) {
			/* Failing with no element to blame, as after an
			 * open that failed: any write ends it. */
			fw->inherit_failing = false;
			fw->failing = true;
			fw->fam_failing[FW_FAM_NONE] = true;
		}
		pthread_mutex_unlock(&fw->mu);

		/* Before the adds queued after fw_resync() are weighed. */
		if (resync && fw->ctx != NULL)
			fw_relist(fw);
		if (lift != NULL && fw_ensure_open(fw))
			fw_do_lift(fw, lift, lift_arg);
		if (!stop)
			fw_take_retries(fw, mono_ms());
		fw_write(fw);

		pthread_mutex_lock(&fw->mu);
		fw->seq_done = seq;
		pthread_cond_broadcast(&fw->done);
		if (stop && fw->pending.n == 0)
			break;
	}
	pthread_mutex_unlock(&fw->mu);
	return NULL;
}

struct fw *
fw_open_backend(struct ev_loop *loop, const struct config *cfg,
    const struct fw_backend *be, fw_report_fn *report, void *arg)
{
	struct fw *fw;
	sigset_t all, old;
	int err;

	if ((fw = calloc(1, sizeof(*fw))) == NULL)
		return NULL;
	pthread_mutex_init(&fw->mu, NULL);
	pthread_cond_init(&fw->wake, NULL);
	pthread_cond_init(&fw->done, NULL);
	fw->be = be;
	fw->loop = loop;
	fw->report = report;
	fw->report_arg = arg;
	fw->table = strdup(cfg->firewall.table ? cfg->firewall.table : "moat");
	fw->set4 = strdup(cfg->firewall.set4 ? cfg->firewall.set4 :
	    "blocked4");
	fw->set6 = strdup(cfg->firewall.set6 ? cfg->firewall.set6 :
	    "blocked6");
	if (fw->table == NULL || fw->set4 == NULL || fw->set6 == NULL) {
		fw_close(fw);
		errno = ENOMEM;
		return NULL;
	}
	fw->cfgcopy.firewall.backend = cfg->firewall.backend;
	fw->cfgcopy.firewall.table = fw->table;
	fw->cfgcopy.firewall.set4 = fw->set4;
	fw->cfgcopy.firewall.set6 = fw->set6;
	fw->cfgcopy.firewall.create = cfg->firewall.create;
	fw->cfgcopy.ban.max_entries = cfg->ban.max_entries;
	siphash_key_init(fw->pending.key);
	memcpy(fw->work.key, fw->pending.key, sizeof(fw->work.key));
	memcpy(fw->known.key, fw->pending.key, sizeof(fw->known.key));
	memcpy(fw->retry.key, fw->pending.key, sizeof(fw->retry.key));
	if (be == &fw_backend_none)
		return fw;
	if (loop != NULL) {
		ev_async_init(&fw->async, fw_async_cb);
		ev_async_start(loop, &fw->async);
	}
	/* Signals belong to the main thread's loop alone (worker.c). */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	err = pthread_create(&fw->thread, NULL, fw_thread, fw);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (err != 0) {
		fw_close(fw);
		errno = err;
		return NULL;
	}
	fw->running = true;
	return fw;
}

struct fw *
fw_open(struct ev_loop *loop, const struct config *cfg, fw_report_fn *report,
    void *arg)
{
	const struct fw_backend *be;

	switch (cfg->firewall.backend) {
	case CFG_FW_NFTABLES:
		be = &fw_backend_nft;
		break;
	case CFG_FW_IPSET:
		be = &fw_backend_ipset;
		break;
	case CFG_FW_NONE:
	default:
		be = &fw_backend_none;
		break;
	}
	return fw_open_backend(loop, cfg, be, report, arg);
}

void
fw_close(struct fw *fw)
{
	if (fw == NULL)
		return;
	if (fw->running) {
		(void)fw_sync(fw, 1000);
		pthread_mutex_lock(&fw->mu);
		fw->stop = true;
		pthread_cond_signal(&fw->wake);
		pthread_mutex_unlock(&fw->mu);
		pthread_join(fw->thread, NULL);
		fw->running = false;
	}
	if (fw->loop != NULL && fw->be != &fw_backend_none) {
		ev_async_stop(fw->loop, &fw->async);
		fw_deliver(fw);
	}
	if (fw->ctx != NULL)
		fw->be->close(fw->ctx);
	pthread_mutex_destroy(&fw->mu);
	pthread_cond_destroy(&fw->wake);
	pthread_cond_destroy(&fw->done);
	amap_free(&fw->pending);
	amap_free(&fw->work);
	amap_free(&fw->known);
	amap_free(&fw->retry);
	free(fw->elems);
	free(fw->table);
	free(fw->set4);
	free(fw->set6);
	free(fw);
}

/*
 * Loopback and unspecified addresses (addr_is_local) are never written: a
 * drop rule on 127.0.0.1 or ::1 drops the host's own traffic on lo, the
 * replies of a backend on loopback to moat among it, so that a rate ban
 * of a local webmail would cut every client off. moat still refuses them
 * itself.
 */
static void
fw_queue(struct fw *fw, const uint8_t addr[16], enum fw_op op,
    uint64_t timeout_ms, bool exact)
{
	uint64_t now = mono_ms(), deadline = now + timeout_ms;
	struct slot *sl;
	bool isnew, say;
	char a[64], msg[256];

	if (!fw_enabled(fw) || !fw->running)
		return;
	if (addr_is_local(addr)) {
		if (op != FW_OP_ADD)
			return;
		pthread_mutex_lock(&fw->mu);
		say = !fw->said_local;
		fw->said_local = true;
		pthread_mutex_unlock(&fw->mu);
		if (say) {
			snprintf(msg, sizeof(msg), "%s is banned by moat "
			    "alone, not in the kernel sets, where it would "
			    "drop this host's own traffic (a loopback "
			    "backend's too); add it to [policy] allow if "
			    "local clients should never be banned (said once)",
			    fw_addr_str(addr, a, sizeof(a)));
			fw_post(fw, FW_OK, NULL, msg, false, true);
		}
		return;
	}
	pthread_mutex_lock(&fw->mu);
	fw->stats.queued++;
	fw->seq_queued++;
	if ((sl = amap_get(&fw->pending, addr, &isnew)) == NULL) {
		pthread_mutex_unlock(&fw->mu);
		return;		/* out of memory: userspace still bans */
	}
	if (isnew) {
		sl->op = op;
		sl->reset = op == FW_OP_ADD && exact;
		sl->deadline_ms = op == FW_OP_ADD ? deadline : 0;
		sl->queued_ms = now;
	} else {
		fw->stats.merged++;
		if (op == FW_OP_DEL) {
			sl->op = FW_OP_DEL;
			sl->reset = false;
			sl->deadline_ms = 0;
		} else if (sl->op == FW_OP_DEL || exact) {
			sl->op = FW_OP_ADD;
			sl->reset = true;	/* unban then ban: new timeout */
			sl->deadline_ms = deadline;
		} else if (deadline > sl->deadline_ms)
			sl->deadline_ms = deadline;
	}
	pthread_cond_signal(&fw->wake);
	pthread_mutex_unlock(&fw->mu);
}

void
fw_add(struct fw *fw, const uint8_t addr[16], uint64_t timeout_ms)
{
	fw_queue(fw, addr, FW_OP_ADD, timeout_ms, false);
}

void
fw_set(struct fw *fw, const uint8_t addr[16], uint64_t timeout_ms)
{
	fw_queue(fw, addr, FW_OP_ADD, timeout_ms, true);
}

void
fw_del(struct fw *fw, const uint8_t addr[16])
{
	fw_queue(fw, addr, FW_OP_DEL, 0, false);
}

void
fw_lift(struct fw *fw, fw_lift_fn *lift, void *arg)
{
	if (!fw_enabled(fw) || !fw->running)
		return;
	pthread_mutex_lock(&fw->mu);
	fw->lift = lift;
	fw->lift_arg = arg;
	pthread_cond_signal(&fw->wake);
	pthread_mutex_unlock(&fw->mu);
}

void
fw_inherit_failing(struct fw *fw)
{
	if (!fw_enabled(fw) || !fw->running)
		return;
	pthread_mutex_lock(&fw->mu);
	fw->inherit_failing = true;
	pthread_mutex_unlock(&fw->mu);
}

void
fw_resync(struct fw *fw)
{
	if (!fw_enabled(fw) || !fw->running)
		return;
	pthread_mutex_lock(&fw->mu);
	fw->resync = true;
	pthread_cond_signal(&fw->wake);
	pthread_mutex_unlock(&fw->mu);
}

bool
fw_sync(struct fw *fw, uint64_t timeout_ms)
{
	struct timespec ts;
	uint64_t target;
	bool ok;

	if (!fw_enabled(fw) || !fw->running)
		return true;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += (time_t)(timeout_ms / 1000);
	ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
	if (ts.tv_nsec >= 1000000000) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000;
	}
	pthread_mutex_lock(&fw->mu);
	target = fw->seq_queued;
	while (fw->seq_done < target)
		if (pthread_cond_timedwait(&fw->done, &fw->mu, &ts) ==
		    ETIMEDOUT)
			break;
	ok = fw->seq_done >= target;
	pthread_mutex_unlock(&fw->mu);
	return ok;
}

size_t
fw_queue_bytes(struct fw *fw)
{
	size_t n;

	if (fw == NULL)
		return 0;
	pthread_mutex_lock(&fw->mu);
	n = (fw->pending.cap + fw->work.cap) * sizeof(struct slot) +
	    fw->elems_cap * sizeof(struct fw_elem);
	pthread_mutex_unlock(&fw->mu);
	return n;
}

void
fw_stats(struct fw *fw, struct fw_stats *st)
{
	memset(st, 0, sizeof(*st));
	if (fw == NULL)
		return;
	pthread_mutex_lock(&fw->mu);
	*st = fw->stats;
	pthread_mutex_unlock(&fw->mu);
}
