/* ban.c - the ban table: who is banned until when, and how often before. */
#include "ban.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "addrindex.h"

#define NIL ADDRINDEX_NIL
#define BAN_INITIAL 256
#define SWEEP_STEP 2
#define EVICT_SWEEP 256
#define EVICT_SCAN 8
/* How long ban_active() may answer without counting again. */
#define LIVE_MS 1000

struct ban_entry {
	uint8_t addr[16];
	uint64_t expiry_ms;
	uint32_t next;
	uint32_t count;
	uint8_t reason;
};

struct ban_table {
	struct ban_params p;
	struct ban_entry *e;
	uint32_t n, cap;
	struct addrindex ix;		/* over e, by addr */
	uint32_t cursor;		/* where the lazy sweep goes on */
	/* While live_valid: live records expire after live_at, kept
	 * exact by every change (set_expiry, remove_at). */
	bool live_valid;
	uint64_t live_at;
	size_t live;
	ban_evict_fn *evict;		/* a ban in force dropped for room */
	void *evict_arg;
	uint64_t evicted;
};

static const char *const reason_names[BAN_REASON_COUNT] = {
	[BAN_MANUAL] = "manual",
	[BAN_RATE] = "rate",
	[BAN_AUTH] = "auth",
	[BAN_SMUGGLING] = "smuggling",
};

const char *
ban_reason_str(enum ban_reason r)
{
	return (unsigned)r < BAN_REASON_COUNT ? reason_names[r] : "?";
}

int
ban_reason_parse(const char *s, size_t len, enum ban_reason *r)
{
	for (int i = 0; i < BAN_REASON_COUNT; i++) {
		if (strlen(reason_names[i]) == len &&
		    memcmp(reason_names[i], s, len) == 0) {
			*r = (enum ban_reason)i;
			return 0;
		}
	}
	return -1;
}

static uint64_t
cap_ms(const struct ban_params *p)
{
	return p->max_duration_ms > p->duration_ms ? p->max_duration_ms :
	    p->duration_ms;
}

uint64_t
ban_duration(const struct ban_params *p, uint32_t n)
{
	double d = (double)p->duration_ms, cap = (double)cap_ms(p);
	double f = p->escalation;

	/* escalation^(n-1) by squaring rather than pow() (no libm): at most
	 * 32 steps for any count, none without escalation, and it stops at
	 * the cap. A factor grown to infinity still compares above it. */
	if (n > 1 && f > 1.0 && d > 0)
		for (uint32_t k = n - 1; k != 0 && d < cap; k >>= 1) {
			if (k & 1)
				d *= f;
			f *= f;
		}
	return d >= cap ? cap_ms(p) : (uint64_t)d;
}

static void
params_fix(struct ban_params *p)
{
	if (!(p->escalation >= 1.0))
		p->escalation = 1.0;
	if (p->forget_ms == 0)
		p->forget_ms = cap_ms(p);
	if (p->max_entries == 0)
		p->max_entries = BAN_DEFAULT_MAX_ENTRIES;
	if (p->max_entries >= NIL)
		p->max_entries = NIL - 1;
}

static uint32_t
find(const struct ban_table *t, const uint8_t addr[16])
{
	return t->n == 0 ? NIL : addrindex_find(&t->ix, t->e, addr);
}

static void
set_expiry(struct ban_table *t, struct ban_entry *e, uint64_t expiry_ms)
{
	if (t->live_valid)
		t->live = t->live + (expiry_ms > t->live_at) -
		    (e->expiry_ms > t->live_at);
	e->expiry_ms = expiry_ms;
}

/* Removes record i, moving the last record into its place. */
static void
remove_at(struct ban_table *t, uint32_t i)
{
	uint32_t last = t->n - 1;

	if (t->live_valid && t->e[i].expiry_ms > t->live_at)
		t->live--;

	addrindex_unlink(&t->ix, t->e, i);
	if (i != last) {
		*addrindex_ref(&t->ix, t->e, last) = i;
		t->e[i] = t->e[last];
	}
	t->n--;
}

static bool
forgotten(const struct ban_table *t, const struct ban_entry *e, uint64_t now)
{
	return now >= e->expiry_ms && now - e->expiry_ms >= t->p.forget_ms;
}

struct ban_table *
ban_table_new(const struct ban_params *p)
{
	struct ban_table *t = calloc(1, sizeof(*t));

	if (t == NULL)
		return NULL;
	t->p = *p;
	params_fix(&t->p);
	addrindex_init(&t->ix, sizeof(*t->e), offsetof(struct ban_entry, addr),
	    offsetof(struct ban_entry, next));
	t->cap = BAN_INITIAL;
	t->e = malloc((size_t)t->cap * sizeof(*t->e));
	if (t->e == NULL || addrindex_rebuild(&t->ix, t->e, 0, t->cap) == -1) {
		ban_table_free(t);
		return NULL;
	}
	return t;
}

void
ban_table_free(struct ban_table *t)
{
	if (t == NULL)
		return;
	free(t->e);
	addrindex_free(&t->ix);
	free(t);
}

struct ban_table *
ban_table_copy(const struct ban_table *t)
{
	struct ban_table *c = malloc(sizeof(*c));

	if (c == NULL)
		return NULL;
	*c = *t;
	c->evict = NULL;
	c->evict_arg = NULL;
	c->cap = t->n > 0 ? t->n : 1;
	c->e = malloc((size_t)c->cap * sizeof(*c->e));
	c->ix.bucket = malloc((size_t)t->ix.nbucket * sizeof(*c->ix.bucket));
	if (c->e == NULL || c->ix.bucket == NULL) {
		ban_table_free(c);
		return NULL;
	}
	memcpy(c->e, t->e, (size_t)t->n * sizeof(*c->e));
	memcpy(c->ix.bucket, t->ix.bucket,
	    (size_t)t->ix.nbucket * sizeof(*c->ix.bucket));
	return c;
}

void
ban_table_reconfigure(struct ban_table *t, const struct ban_params *p)
{
	t->p = *p;
	params_fix(&t->p);
	/* A smaller cap is enforced by ban_table_trim(). */
}

void
ban_table_on_evict(struct ban_table *t, ban_evict_fn *fn, void *arg)
{
	t->evict = fn;
	t->evict_arg = arg;
}

/* Drops up to k forgotten records from the cursor on. */
static void
sweep(struct ban_table *t, uint64_t now, uint32_t k)
{
	while (k-- > 0 && t->n > 0) {
		if (t->cursor >= t->n)
			t->cursor = 0;
		if (forgotten(t, &t->e[t->cursor], now))
			remove_at(t, t->cursor);	/* recheck same slot */
		else
			t->cursor++;
	}
}

/*
 * Drops records until at most keep stay; returns how many bans in force
 * went. The work per record is bounded: a full table during a flood of
 * new addresses gets a record per connection, under the lock every worker
 * takes, so sweeping all of it each time (milliseconds at a million
 * records) would stall every accept. A part is swept; if nothing there is
 * forgotten yet, a live record goes even if a forgotten one waits further
 * on. A ban in force that goes is handed to the evict callback, so that
 * its kernel element goes too.
 */
static size_t
shed(struct ban_table *t, uint64_t now, size_t keep)
{
	size_t live = 0;

	while (t->n > keep) {
		uint32_t victim = NIL;

		sweep(t, now, EVICT_SWEEP);
		if (t->n <= keep)
			break;
		/* Everything is live: drop the record forgotten soonest
		 * among a few, starting at the cursor. */
		for (uint32_t k = 0; k < EVICT_SCAN && k < t->n; k++) {
			uint32_t i = (t->cursor + k) % t->n;

			if (victim == NIL ||
			    t->e[i].expiry_ms < t->e[victim].expiry_ms)
				victim = i;
		}
		t->cursor++;
		/* Counted only with a callback: the drops while the
		 * state file is read, before there is one, are in the
		 * start's log line instead. */
		if (now < t->e[victim].expiry_ms) {
			live++;
			if (t->evict != NULL) {
				t->evicted++;
				t->evict(t->evict_arg, t->e[victim].addr);
			}
		}
		remove_at(t, victim);
	}
	return live;
}

size_t
ban_table_trim(struct ban_table *t, uint64_t now, size_t *live)
{
	size_t before = t->n, l = shed(t, now, t->p.max_entries);

	if (live != NULL)
		*live = l;
	return before - t->n;
}

/* Ensures one free slot; -1 if memory is short and nothing can go. */
static int
make_room(struct ban_table *t, uint64_t now)
{
	(void)shed(t, now, t->p.max_entries - 1);
	if (t->n == t->cap) {
		struct ban_entry *ne = addrindex_grow(&t->ix, t->e, t->n,
		    &t->cap, (uint32_t)t->p.max_entries);

		if (ne == NULL)
			return -1;
		t->e = ne;
	}
	return 0;
}

static void
info_of(const struct ban_entry *e, struct ban_info *out)
{
	out->expiry_ms = e->expiry_ms;
	out->duration_ms = 0;
	out->count = e->count;
	out->reason = (enum ban_reason)e->reason;
}

bool
ban_lookup(struct ban_table *t, const uint8_t addr[16], uint64_t now,
    struct ban_info *out)
{
	uint32_t i = find(t, addr);

	if (i == NIL)
		return false;
	if (now < t->e[i].expiry_ms) {
		if (out != NULL)
			info_of(&t->e[i], out);
		return true;
	}
	if (forgotten(t, &t->e[i], now))
		remove_at(t, i);
	return false;
}

/* Finds or creates the record of addr; NIL when out of memory. */
static uint32_t
record(struct ban_table *t, const uint8_t addr[16], uint64_t now)
{
	uint32_t i = find(t, addr);

	if (i != NIL && forgotten(t, &t->e[i], now)) {
		t->e[i].count = 0;
		set_expiry(t, &t->e[i], 0);
	}
	if (i != NIL)
		return i;
	if (make_room(t, now) == -1)
		return NIL;
	i = t->n++;
	memset(&t->e[i], 0, sizeof(t->e[i]));
	memcpy(t->e[i].addr, addr, 16);
	addrindex_push(&t->ix, t->e, i);
	return i;
}

bool
ban_add(struct ban_table *t, const uint8_t addr[16], enum ban_reason reason,
    uint64_t duration_ms, uint64_t now, struct ban_info *out)
{
	struct ban_entry *e;
	uint32_t i;

	memset(out, 0, sizeof(*out));
	sweep(t, now, SWEEP_STEP);
	i = record(t, addr, now);
	if (i == NIL)
		return false;
	e = &t->e[i];
	if (now < e->expiry_ms && duration_ms == 0) {
		info_of(e, out);
		return false;
	}
	if (e->count < BAN_COUNT_MAX)
		e->count++;
	if (duration_ms == 0)
		duration_ms = ban_duration(&t->p, e->count);
	set_expiry(t, e, now + duration_ms);
	e->reason = (uint8_t)reason;
	info_of(e, out);
	out->duration_ms = duration_ms;
	return true;
}

int
ban_restore(struct ban_table *t, const uint8_t addr[16],
    enum ban_reason reason, uint64_t expiry_ms, uint32_t count, uint64_t now)
{
	uint32_t i = record(t, addr, now);

	if (i == NIL)
		return -1;
	set_expiry(t, &t->e[i], expiry_ms);
	t->e[i].count = count < BAN_COUNT_MAX ? count : BAN_COUNT_MAX;
	t->e[i].reason = (uint8_t)reason;
	if (forgotten(t, &t->e[i], now)) {
		remove_at(t, i);
		return 0;
	}
	return 1;
}

uint64_t
ban_forget_ms(const struct ban_table *t)
{
	return t->p.forget_ms;
}

size_t
ban_max_entries(const struct ban_table *t)
{
	return t->p.max_entries;
}

bool
ban_del(struct ban_table *t, const uint8_t addr[16], uint64_t now)
{
	uint32_t i = find(t, addr);
	bool active;

	if (i == NIL)
		return false;
	active = now < t->e[i].expiry_ms;
	remove_at(t, i);
	return active;
}

void
ban_foreach(const struct ban_table *t, uint64_t now, ban_visit_fn *fn,
    void *arg)
{
	struct ban_info b;

	for (uint32_t i = 0; i < t->n; i++) {
		if (forgotten(t, &t->e[i], now))
			continue;
		info_of(&t->e[i], &b);
		fn(arg, t->e[i].addr, &b);
	}
}

size_t
ban_entries(const struct ban_table *t)
{
	return t->n;
}

/*
 * A count of a million records takes milliseconds under the lock every
 * accept takes, and a metrics scrape asks for it: counted at most once a
 * second, and kept by each change in between, so that only bans that ran
 * out since are still counted.
 */
size_t
ban_active(struct ban_table *t, uint64_t now)
{
	size_t k = 0;

	if (t->live_valid && now >= t->live_at && now - t->live_at < LIVE_MS)
		return t->live;
	for (uint32_t i = 0; i < t->n; i++)
		if (now < t->e[i].expiry_ms)
			k++;
	t->live = k;
	t->live_at = now;
	t->live_valid = true;
	return k;
}

size_t
ban_bytes(const struct ban_table *t)
{
	return sizeof(*t) + (size_t)t->cap * sizeof(struct ban_entry) +
	    (size_t)t->ix.nbucket * sizeof(uint32_t);
}

uint64_t
ban_evicted(const struct ban_table *t)
{
	return t->evicted;
}
