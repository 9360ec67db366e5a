/* window.c - per-address sliding-window counters with a bounded memory. */
#include "window.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "addrindex.h"

#define NIL ADDRINDEX_NIL
#define WINDOW_INITIAL 1024
/* How many of the oldest keys eviction looks at for one without sessions. */
#define EVICT_SCAN 8

/* 80 bytes; the layout is what the "bytes per key" figure promises. */
struct window_entry {
	uint8_t key[16];
	uint64_t last_ms;		/* both rings are current as of this */
	uint32_t next;			/* hash chain */
	uint32_t older, newer;		/* recency list */
	uint32_t sessions;
	/* Which life of key this is: a session releases only the entry it
	 * was counted in, not one made for its key after this was dropped
	 * (eviction, a smaller max_entries, a new aggregation). */
	uint32_t tag;
	uint16_t conn[WINDOW_SLOTS];
	uint16_t fail[WINDOW_SLOTS];
};

struct window_table {
	struct window_params p;
	uint64_t conn_slot_ms, fail_slot_ms;
	struct window_entry *e;
	uint32_t n, cap;		/* used, allocated */
	struct addrindex ix;		/* over e, by key */
	uint32_t newest, oldest;
	uint32_t last_tag;
	uint64_t evicted;		/* live keys dropped for room */
};

_Static_assert(sizeof(struct window_entry) == 80,
    "window_entry grew: update the bytes-per-key figure in window.h");

static uint64_t
slot_ms(uint64_t window_ms)
{
	uint64_t s = (window_ms + WINDOW_SLOTS - 2) / (WINDOW_SLOTS - 1);

	return s == 0 ? 1 : s;
}

static void
params_fix(struct window_params *p)
{
	if (p->conn_limit > WINDOW_LIMIT_MAX)
		p->conn_limit = WINDOW_LIMIT_MAX;
	if (p->auth_limit > WINDOW_LIMIT_MAX)
		p->auth_limit = WINDOW_LIMIT_MAX;
	if (p->aggregate_v4 > 32)
		p->aggregate_v4 = 32;
	if (p->aggregate_v6 > 128)
		p->aggregate_v6 = 128;
	if (p->max_entries == 0)
		p->max_entries = WINDOW_DEFAULT_MAX_ENTRIES;
	if (p->max_entries >= NIL)
		p->max_entries = NIL - 1;
}

/*
 * Sum of the ring at now, given it was last brought up to date at last:
 * slot epoch j lives in ring[j % 8] and is still valid if it is among the
 * last 8 epochs both as of last (not overwritten) and as of now (not
 * expired).
 */
static uint32_t
ring_sum(const uint16_t *ring, uint64_t last, uint64_t now, uint64_t s)
{
	uint64_t eo = last / s, en = now / s, j, lo, hi;
	uint32_t sum = 0;

	if (now < last)
		en = eo;
	hi = en < eo ? en : eo;
	lo = en >= WINDOW_SLOTS - 1 ? en - (WINDOW_SLOTS - 1) : 0;
	if (eo >= WINDOW_SLOTS - 1 && eo - (WINDOW_SLOTS - 1) > lo)
		lo = eo - (WINDOW_SLOTS - 1);
	for (j = lo; j <= hi; j++)
		sum += ring[j % WINDOW_SLOTS];
	return sum;
}

/* Clears the slots of the epochs between last and now (exclusive, then
 * inclusive), so the ring is current as of now. */
static void
ring_advance(uint16_t *ring, uint64_t last, uint64_t now, uint64_t s)
{
	uint64_t eo = last / s, en = now / s;

	if (en <= eo)
		return;
	if (en - eo >= WINDOW_SLOTS) {
		memset(ring, 0, WINDOW_SLOTS * sizeof(*ring));
		return;
	}
	for (uint64_t j = eo + 1; j <= en; j++)
		ring[j % WINDOW_SLOTS] = 0;
}

static void
ring_add(uint16_t *ring, uint64_t now, uint64_t s)
{
	uint16_t *c = &ring[(now / s) % WINDOW_SLOTS];

	if (*c < UINT16_MAX)
		(*c)++;
}

/* Brings both rings of e up to now; a clock going back counts as now. */
static void
entry_advance(const struct window_table *t, struct window_entry *e,
    uint64_t now)
{
	if (now <= e->last_ms)
		return;
	ring_advance(e->conn, e->last_ms, now, t->conn_slot_ms);
	ring_advance(e->fail, e->last_ms, now, t->fail_slot_ms);
	e->last_ms = now;
}

static bool
entry_idle(const struct window_table *t, const struct window_entry *e,
    uint64_t now)
{
	return e->sessions == 0 &&
	    ring_sum(e->conn, e->last_ms, now, t->conn_slot_ms) == 0 &&
	    ring_sum(e->fail, e->last_ms, now, t->fail_slot_ms) == 0;
}

void
window_key(const struct window_table *t, const uint8_t addr[16],
    uint8_t key[16])
{
	static const uint8_t v4mapped[12] = {
		0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff
	};
	unsigned plen, i;

	if (memcmp(addr, v4mapped, sizeof(v4mapped)) == 0)
		plen = 96u + t->p.aggregate_v4;
	else
		plen = t->p.aggregate_v6;
	memcpy(key, addr, 16);
	for (i = plen / 8; i < 16; i++) {
		if (i == plen / 8 && plen % 8 != 0)
			key[i] &= (uint8_t)(0xff << (8 - plen % 8));
		else
			key[i] = 0;
	}
}

static void
lru_unlink(struct window_table *t, uint32_t i)
{
	struct window_entry *e = &t->e[i];

	if (e->older != NIL)
		t->e[e->older].newer = e->newer;
	else
		t->oldest = e->newer;
	if (e->newer != NIL)
		t->e[e->newer].older = e->older;
	else
		t->newest = e->older;
}

static void
lru_push(struct window_table *t, uint32_t i)
{
	struct window_entry *e = &t->e[i];

	e->newer = NIL;
	e->older = t->newest;
	if (t->newest != NIL)
		t->e[t->newest].newer = i;
	t->newest = i;
	if (t->oldest == NIL)
		t->oldest = i;
}

static void
lru_touch(struct window_table *t, uint32_t i)
{
	if (t->newest == i)
		return;
	lru_unlink(t, i);
	lru_push(t, i);
}

static uint32_t
find(const struct window_table *t, const uint8_t key[16])
{
	return addrindex_find(&t->ix, t->e, key);
}

/* Makes room for one more entry; -1 if the array cannot grow. */
static int
grow(struct window_table *t)
{
	struct window_entry *ne = addrindex_grow(&t->ix, t->e, t->n, &t->cap,
	    (uint32_t)t->p.max_entries);

	if (ne == NULL)
		return -1;
	t->e = ne;
	return 0;
}

/* Picks a slot to reuse: an idle oldest key, else the first of the oldest
 * EVICT_SCAN without sessions, else the oldest. Unlinks it. */
static uint32_t
evict(struct window_table *t)
{
	uint32_t i = t->oldest, k;

	for (k = 0; k < EVICT_SCAN && i != NIL; k++, i = t->e[i].newer)
		if (t->e[i].sessions == 0)
			break;
	if (i == NIL || k == EVICT_SCAN)
		i = t->oldest;
	addrindex_unlink(&t->ix, t->e, i);
	lru_unlink(t, i);
	return i;
}

/* Finds key or inserts it (evicting if needed); the entry is brought up to
 * now and made the newest. NIL only if memory ran out with nothing to
 * evict, i.e. a table of zero entries. */
static uint32_t
lookup_insert(struct window_table *t, const uint8_t addr[16], uint64_t now)
{
	uint8_t key[16];
	uint32_t i;
	struct window_entry *e;

	window_key(t, addr, key);
	i = find(t, key);
	if (i != NIL) {
		entry_advance(t, &t->e[i], now);
		lru_touch(t, i);
		return i;
	}
	/* A key whose counts all expired is worth nothing: reuse it before
	 * growing, so idle clients never pile up to the cap. */
	if (t->oldest != NIL && entry_idle(t, &t->e[t->oldest], now)) {
		i = t->oldest;
		addrindex_unlink(&t->ix, t->e, i);
		lru_unlink(t, i);
	} else if (t->n < t->cap || grow(t) == 0)
		i = t->n++;
	else if (t->oldest != NIL) {
		i = evict(t);
		if (!entry_idle(t, &t->e[i], now))
			t->evicted++;
	} else
		return NIL;
	e = &t->e[i];
	memset(e, 0, sizeof(*e));
	memcpy(e->key, key, 16);
	e->last_ms = now;
	/* 0 names no entry; a wrap after 2^32 - 1 entries could only
	 * matter to a session older than all of them, of the same key. */
	if (++t->last_tag == 0)
		t->last_tag = 1;
	e->tag = t->last_tag;
	addrindex_push(&t->ix, t->e, i);
	lru_push(t, i);
	return i;
}

static uint32_t
lookup(struct window_table *t, const uint8_t addr[16])
{
	uint8_t key[16];

	window_key(t, addr, key);
	return find(t, key);
}

static void
set_params(struct window_table *t, const struct window_params *wp)
{
	t->p = *wp;
	params_fix(&t->p);
	t->conn_slot_ms = slot_ms(t->p.conn_window_ms);
	t->fail_slot_ms = slot_ms(t->p.auth_window_ms);
}

struct window_table *
window_table_new(const struct window_params *wp)
{
	struct window_table *t = calloc(1, sizeof(*t));

	if (t == NULL)
		return NULL;
	set_params(t, wp);
	addrindex_init(&t->ix, sizeof(*t->e),
	    offsetof(struct window_entry, key),
	    offsetof(struct window_entry, next));
	t->newest = t->oldest = NIL;
	t->cap = WINDOW_INITIAL < t->p.max_entries ? WINDOW_INITIAL :
	    (uint32_t)t->p.max_entries;
	t->e = malloc((size_t)t->cap * sizeof(*t->e));
	if (t->e == NULL || addrindex_rebuild(&t->ix, t->e, 0, t->cap) == -1) {
		window_table_free(t);
		return NULL;
	}
	return t;
}

void
window_table_free(struct window_table *t)
{
	if (t == NULL)
		return;
	free(t->e);
	addrindex_free(&t->ix);
	free(t);
}

/*
 * Keeps at most keep entries, compacted to the front of the array in
 * their recency order: first those with open sessions, newest first,
 * since a count dropped there lets the address past concurrent_per_ip
 * until its sessions end; then the newest of the rest.
 */
static void
compact(struct window_table *t, uint32_t keep)
{
	struct window_entry *ne;
	bool *kept;
	uint32_t i, k = 0, n = t->n < keep ? t->n : keep, c = 0;

	ne = malloc((size_t)(n > 0 ? n : 1) * sizeof(*ne));
	kept = calloc(t->n > 0 ? t->n : 1, sizeof(*kept));
	if (ne == NULL || kept == NULL) {
		/* Cannot copy: forget everything rather than break the cap. */
		n = 0;
	} else {
		for (i = t->newest; i != NIL && c < n; i = t->e[i].older)
			if (t->e[i].sessions > 0)
				kept[i] = true, c++;
		for (i = t->newest; i != NIL && c < n; i = t->e[i].older)
			if (!kept[i])
				kept[i] = true, c++;
		/* Oldest first, so the list can be rebuilt by pushing. */
		for (i = t->oldest; i != NIL; i = t->e[i].newer)
			if (kept[i])
				ne[k++] = t->e[i];
	}
	t->newest = t->oldest = NIL;
	t->n = n;
	if (ne != NULL && kept != NULL)
		memcpy(t->e, ne, (size_t)n * sizeof(*ne));
	free(ne);
	free(kept);
	for (i = 0; i < n; i++)
		lru_push(t, i);
	(void)addrindex_rebuild(&t->ix, t->e, n, 0);
}

/* Puts everything a ring still counts into its current slot. */
static void
ring_fold(uint16_t *ring, uint64_t now, uint64_t new_s)
{
	uint32_t sum = 0;

	for (int j = 0; j < WINDOW_SLOTS; j++)
		sum += ring[j];
	memset(ring, 0, WINDOW_SLOTS * sizeof(*ring));
	ring[(now / new_s) % WINDOW_SLOTS] =
	    (uint16_t)(sum > UINT16_MAX ? UINT16_MAX : sum);
}

void
window_table_reconfigure(struct window_table *t,
    const struct window_params *wp, uint64_t now_ms)
{
	struct window_params old = t->p;
	uint64_t old_cs = t->conn_slot_ms, old_fs = t->fail_slot_ms;

	set_params(t, wp);
	/* Old keys no longer name the same clients; their sessions'
	 * releases find no entry of their tag and change nothing. */
	if (old.aggregate_v4 != t->p.aggregate_v4 ||
	    old.aggregate_v6 != t->p.aggregate_v6)
		compact(t, 0);
	else if (old_cs != t->conn_slot_ms || old_fs != t->fail_slot_ms) {
		for (uint32_t i = 0; i < t->n; i++) {
			struct window_entry *e = &t->e[i];
			uint64_t now = now_ms > e->last_ms ? now_ms : e->last_ms;

			/* Up to date under the old slot widths first. */
			ring_advance(e->conn, e->last_ms, now, old_cs);
			ring_advance(e->fail, e->last_ms, now, old_fs);
			if (old_cs != t->conn_slot_ms)
				ring_fold(e->conn, now, t->conn_slot_ms);
			if (old_fs != t->fail_slot_ms)
				ring_fold(e->fail, now, t->fail_slot_ms);
			e->last_ms = now;
		}
	}
	if (t->n > t->p.max_entries)
		compact(t, (uint32_t)t->p.max_entries);
	if (t->cap > t->p.max_entries) {
		struct window_entry *ne = realloc(t->e,
		    t->p.max_entries * sizeof(*ne));

		if (ne != NULL) {
			t->e = ne;
			t->cap = (uint32_t)t->p.max_entries;
		}
	}
}

enum window_verdict
window_admit(struct window_table *t, const uint8_t addr[16],
    uint64_t now_ms, uint32_t *count, uint32_t *open, uint32_t *tag)
{
	struct window_entry *e;
	uint32_t i, c, f;

	*count = *open = *tag = 0;
	i = lookup_insert(t, addr, now_ms);
	if (i == NIL)
		return WINDOW_OK;	/* no memory at all: fail open */
	e = &t->e[i];
	c = ring_sum(e->conn, e->last_ms, now_ms, t->conn_slot_ms);
	*open = e->sessions;
	if (t->p.conn_limit > 0 && c >= t->p.conn_limit) {
		*count = c;
		return WINDOW_RATE;
	}
	f = ring_sum(e->fail, e->last_ms, now_ms, t->fail_slot_ms);
	if (t->p.auth_limit > 0 && f >= t->p.auth_limit) {
		*count = f;
		return WINDOW_AUTH;
	}
	if (t->p.conc_limit > 0 && e->sessions >= t->p.conc_limit) {
		/* Still a new connection: a client that holds its sessions
		 * and keeps connecting fills its window and is banned. */
		ring_add(e->conn, e->last_ms, t->conn_slot_ms);
		*count = c + 1;
		return WINDOW_CONCURRENCY;
	}
	ring_add(e->conn, e->last_ms, t->conn_slot_ms);
	*count = c + 1;
	if (e->sessions < UINT32_MAX)
		e->sessions++;
	*open = e->sessions;
	*tag = e->tag;
	return WINDOW_OK;
}

uint32_t
window_fail(struct window_table *t, const uint8_t addr[16], uint64_t now_ms)
{
	struct window_entry *e;
	uint32_t i;

	i = lookup_insert(t, addr, now_ms);
	if (i == NIL)
		return 0;
	e = &t->e[i];
	ring_add(e->fail, e->last_ms, t->fail_slot_ms);
	return ring_sum(e->fail, e->last_ms, e->last_ms, t->fail_slot_ms);
}

void
window_close(struct window_table *t, const uint8_t addr[16], uint32_t tag)
{
	uint32_t i;

	if (tag == 0 || (i = lookup(t, addr)) == NIL || t->e[i].tag != tag)
		return;
	if (t->e[i].sessions > 0)
		t->e[i].sessions--;
}

void
window_forget(struct window_table *t, const uint8_t addr[16])
{
	uint32_t i = lookup(t, addr);

	if (i == NIL)
		return;
	memset(t->e[i].conn, 0, sizeof(t->e[i].conn));
	memset(t->e[i].fail, 0, sizeof(t->e[i].fail));
}

uint32_t
window_conn_count(struct window_table *t, const uint8_t addr[16],
    uint64_t now_ms)
{
	uint32_t i = lookup(t, addr);

	return i == NIL ? 0 :
	    ring_sum(t->e[i].conn, t->e[i].last_ms, now_ms, t->conn_slot_ms);
}

uint32_t
window_fail_count(struct window_table *t, const uint8_t addr[16],
    uint64_t now_ms)
{
	uint32_t i = lookup(t, addr);

	return i == NIL ? 0 :
	    ring_sum(t->e[i].fail, t->e[i].last_ms, now_ms, t->fail_slot_ms);
}

uint32_t
window_open_count(struct window_table *t, const uint8_t addr[16])
{
	uint32_t i = lookup(t, addr);

	return i == NIL ? 0 : t->e[i].sessions;
}

size_t
window_entries(const struct window_table *t)
{
	return t->n;
}

uint64_t
window_evicted(const struct window_table *t)
{
	return t->evicted;
}

size_t
window_bytes(const struct window_table *t)
{
	return sizeof(*t) + (size_t)t->cap * sizeof(struct window_entry) +
	    (size_t)t->ix.nbucket * sizeof(uint32_t);
}

size_t
window_entry_bytes(void)
{
	return sizeof(struct window_entry);
}
