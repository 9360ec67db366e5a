/* slots.c - the global session cap, with a reserve for light users. */
#include "slots.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "addr.h"
#include "siphash.h"

/*
 * A source (addr_source_len): counted per IPv6 address, one host would
 * be a newcomer at every connection and take the reserve meant for
 * others.
 */
static void
source_of(const uint8_t addr[16], uint8_t out[16])
{
	size_t len = addr_source_len(addr);

	memcpy(out, addr, len);
	memset(out + len, 0, 16 - len);
}

/*
 * An open-addressing table of (source, count) with linear probing and
 * backward-shift deletion (no tombstones), keyed with SipHash under a
 * random key since clients choose their addresses. It holds one entry per
 * address with at least one session, so at most max_sessions entries; it
 * grows at 1/2 load and never shrinks (a flood's peak is what it must
 * hold again next time).
 */
struct slot {
	uint8_t addr[16];
	uint32_t n;		/* 0: empty */
};

struct slots {
	pthread_mutex_t mu;	/* over everything below */
	struct slot *tab;
	size_t cap;		/* a power of two */
	size_t addrs;		/* entries in use */
	size_t used;		/* sessions in all */
	uint32_t max, reserved;
	uint64_t key[2];
};

#define SLOTS_INITIAL 256

struct slots *
slots_new(void)
{
	struct slots *sl;

	if ((sl = calloc(1, sizeof(*sl))) == NULL)
		return NULL;
	if ((sl->tab = calloc(SLOTS_INITIAL, sizeof(*sl->tab))) == NULL) {
		free(sl);
		return NULL;
	}
	sl->cap = SLOTS_INITIAL;
	siphash_key_init(sl->key);
	pthread_mutex_init(&sl->mu, NULL);
	return sl;
}

void
slots_free(struct slots *sl)
{
	if (sl == NULL)
		return;
	pthread_mutex_destroy(&sl->mu);
	free(sl->tab);
	free(sl);
}

void
slots_set_limits(struct slots *sl, uint32_t max, uint32_t reserved)
{
	pthread_mutex_lock(&sl->mu);
	sl->max = max;
	sl->reserved = reserved < max ? reserved : 0;
	pthread_mutex_unlock(&sl->mu);
}

static size_t
slots_home(const struct slots *sl, const uint8_t addr[16])
{
	return (size_t)siphash13(addr, 16, sl->key) & (sl->cap - 1);
}

/* The index of addr's entry, or of the empty one where it would go. */
static size_t
slots_find(const struct slots *sl, const uint8_t addr[16])
{
	size_t i = slots_home(sl, addr);

	while (sl->tab[i].n != 0 && memcmp(sl->tab[i].addr, addr, 16) != 0)
		i = (i + 1) & (sl->cap - 1);
	return i;
}

static int
slots_grow(struct slots *sl)
{
	struct slot *old = sl->tab;
	size_t i, j, oldcap = sl->cap;

	if ((sl->tab = calloc(oldcap * 2, sizeof(*sl->tab))) == NULL) {
		sl->tab = old;
		return -1;
	}
	sl->cap = oldcap * 2;
	for (i = 0; i < oldcap; i++)
		if (old[i].n != 0) {
			j = slots_find(sl, old[i].addr);
			sl->tab[j] = old[i];
		}
	free(old);
	return 0;
}

static enum slots_verdict
slots_take_locked(struct slots *sl, const uint8_t addr[16], bool exempt)
{
	size_t i;
	uint32_t held;

	if (sl->max > 0 && sl->used >= sl->max)
		return SLOTS_FULL;
	i = slots_find(sl, addr);
	held = sl->tab[i].n;
	/*
	 * In the reserve: fewer than SLOTS_FEW, and strictly below the
	 * average (held * addrs < used), so the address that holds the
	 * most is refused first.
	 */
	if (sl->max > 0 && !exempt && sl->used >= sl->max - sl->reserved &&
	    held > 0 && (held >= SLOTS_FEW ||
	    (uint64_t)held * sl->addrs >= sl->used))
		return SLOTS_RESERVE;
	if (held == 0) {
		/* A memory failure costs the cap its precision, not a
		 * session: the slot is counted in used only. */
		if ((sl->addrs + 1) * 2 > sl->cap && slots_grow(sl) == -1) {
			sl->used++;
			return SLOTS_OK;
		}
		i = slots_find(sl, addr);
		memcpy(sl->tab[i].addr, addr, 16);
		sl->addrs++;
	}
	sl->tab[i].n++;
	sl->used++;
	return SLOTS_OK;
}

enum slots_verdict
slots_take(struct slots *sl, const uint8_t addr[16], bool exempt)
{
	enum slots_verdict v;
	uint8_t src[16];

	source_of(addr, src);
	pthread_mutex_lock(&sl->mu);
	v = slots_take_locked(sl, src, exempt);
	pthread_mutex_unlock(&sl->mu);
	return v;
}

static void
slots_give_locked(struct slots *sl, const uint8_t addr[16])
{
	size_t i, j, k;

	if (sl->used > 0)
		sl->used--;
	i = slots_find(sl, addr);
	if (sl->tab[i].n == 0 || --sl->tab[i].n > 0)
		return;
	/* Backward-shift deletion: pull later entries of the run into the
	 * hole unless that would move them before their home. */
	sl->addrs--;
	j = i;
	for (;;) {
		j = (j + 1) & (sl->cap - 1);
		if (sl->tab[j].n == 0)
			break;
		k = slots_home(sl, sl->tab[j].addr);
		/* k cyclically in (i, j]: the entry stays. */
		if (i <= j ? (i < k && k <= j) : (i < k || k <= j))
			continue;
		sl->tab[i] = sl->tab[j];
		i = j;
	}
	sl->tab[i].n = 0;
}

void
slots_give(struct slots *sl, const uint8_t addr[16])
{
	uint8_t src[16];

	source_of(addr, src);
	pthread_mutex_lock(&sl->mu);
	slots_give_locked(sl, src);
	pthread_mutex_unlock(&sl->mu);
}

size_t
slots_used(struct slots *sl)
{
	size_t n;

	pthread_mutex_lock(&sl->mu);
	n = sl->used;
	pthread_mutex_unlock(&sl->mu);
	return n;
}

uint32_t
slots_held(struct slots *sl, const uint8_t addr[16])
{
	uint32_t n;
	uint8_t src[16];

	source_of(addr, src);
	pthread_mutex_lock(&sl->mu);
	n = sl->tab[slots_find(sl, src)].n;
	pthread_mutex_unlock(&sl->mu);
	return n;
}

size_t
slots_addresses(struct slots *sl)
{
	size_t n;

	pthread_mutex_lock(&sl->mu);
	n = sl->addrs;
	pthread_mutex_unlock(&sl->mu);
	return n;
}

const char *
slots_verdict_str(enum slots_verdict v)
{
	switch (v) {
	case SLOTS_OK:
		return "ok";
	case SLOTS_FULL:
		return "capacity";
	case SLOTS_RESERVE:
		return "capacity_reserve";
	}
	return "?";
}
