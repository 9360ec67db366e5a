/* addrindex.h - a hash index over an array of records keyed by address. */
#ifndef MOAT_ADDRINDEX_H
#define MOAT_ADDRINDEX_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "siphash.h"

/*
 * The ban table and the rate windows both keep fixed-size records in one
 * growable array, found by a 16-byte address through chains of array
 * indexes. The index owns only its bucket array and its hash key; the
 * records stay the caller's, which tells where in a record the address
 * and the chain link are. Addresses are hashed with a secret per-index
 * SipHash key, so a client cannot aim its addresses at one chain.
 * Lookups are inline: they sit on the path of every connection.
 */
#define ADDRINDEX_NIL UINT32_MAX

struct addrindex {
	uint32_t *bucket;
	uint32_t nbucket;	/* a power of two */
	uint64_t seed[2];
	size_t stride;		/* bytes per record */
	size_t key_off;		/* of the record's uint8_t[16] address */
	size_t next_off;	/* of the record's uint32_t chain link */
};

/* Zeroed x: a new random key, no buckets yet (rebuild before use). */
void addrindex_init(struct addrindex *x, size_t stride, size_t key_off,
    size_t next_off);
void addrindex_free(struct addrindex *x);
/* Chains records [0, n) of base into nb buckets (rounded up to a power
 * of two, kept when 0); 0, or -1 with the index unchanged. */
int addrindex_rebuild(struct addrindex *x, void *base, uint32_t n,
    uint32_t nb);
/*
 * Doubles the record array base of *cap records (n in use), at most to
 * max, and the buckets with it (at least one per record). Returns the
 * new array, or NULL (base still valid and indexed) when it cannot grow.
 */
void *addrindex_grow(struct addrindex *x, void *base, uint32_t n,
    uint32_t *cap, uint32_t max);

static inline const uint8_t *
addrindex_key(const struct addrindex *x, const void *base, uint32_t i)
{
	return (const uint8_t *)base + (size_t)i * x->stride + x->key_off;
}

static inline uint32_t
addrindex_next(const struct addrindex *x, const void *base, uint32_t i)
{
	uint32_t v;

	memcpy(&v, (const uint8_t *)base + (size_t)i * x->stride +
	    x->next_off, sizeof(v));
	return v;
}

static inline uint32_t *
addrindex_link(const struct addrindex *x, void *base, uint32_t i)
{
	return (uint32_t *)(void *)((uint8_t *)base + (size_t)i * x->stride +
	    x->next_off);
}

static inline uint32_t *
addrindex_head(const struct addrindex *x, const uint8_t key[16])
{
	return &x->bucket[(uint32_t)siphash13(key, 16, x->seed) &
	    (x->nbucket - 1)];
}

/* The record holding key, or ADDRINDEX_NIL. */
static inline uint32_t
addrindex_find(const struct addrindex *x, const void *base,
    const uint8_t key[16])
{
	uint32_t i = *addrindex_head(x, key);

	while (i != ADDRINDEX_NIL &&
	    memcmp(addrindex_key(x, base, i), key, 16) != 0)
		i = addrindex_next(x, base, i);
	return i;
}

/* Chains record i (its address already set). */
static inline void
addrindex_push(const struct addrindex *x, void *base, uint32_t i)
{
	uint32_t *b = addrindex_head(x, addrindex_key(x, base, i));

	*addrindex_link(x, base, i) = *b;
	*b = i;
}

/* The link that points at record i (a bucket or another record's). */
static inline uint32_t *
addrindex_ref(const struct addrindex *x, void *base, uint32_t i)
{
	uint32_t *pp = addrindex_head(x, addrindex_key(x, base, i));

	while (*pp != i)
		pp = addrindex_link(x, base, *pp);
	return pp;
}

static inline void
addrindex_unlink(const struct addrindex *x, void *base, uint32_t i)
{
	*addrindex_ref(x, base, i) = *addrindex_link(x, base, i);
}

#endif
