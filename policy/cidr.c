/* cidr.c - immutable CIDR sets as merged, sorted address ranges. */
#include "cidr.h"

#include <stdlib.h>
#include <string.h>

/* Below this many ranges a plain binary search is as fast as the index. */
#define CIDR_INDEX_MIN 4096
#define CIDR_INDEX_SLOTS 65536

struct u128 {
	uint64_t hi, lo;
};

struct range4 {
	uint32_t first, last;
};

struct range6 {
	struct u128 first, last;
};

struct cidr_set {
	/* Starts and ends in separate arrays: the search touches only the
	 * starts, so more of them share a cache line. */
	uint32_t *first4, *last4;
	size_t n4;
	struct u128 *first6, *last6;
	size_t n6;
	/*
	 * idx[k] = number of ranges whose start has top 16 bits below k,
	 * for k in 0..65536; NULL for small sets. The range holding a key
	 * with top bits k is then idx[k]-1 or within [idx[k], idx[k+1]).
	 */
	uint32_t *idx4, *idx6;
	size_t bytes;
};

static const uint8_t v4mapped_prefix[12] = {
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff
};

static uint64_t
load_be64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

static uint32_t
load_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	    (uint32_t)p[2] << 8 | p[3];
}

/* The mask of the first bits (0..64) of a 64-bit word. */
static uint64_t
mask64(unsigned bits)
{
	return bits == 0 ? 0 : bits >= 64 ? ~0ULL : ~0ULL << (64 - bits);
}

static int
u128_cmp(const struct u128 *a, const struct u128 *b)
{
	if (a->hi != b->hi)
		return a->hi < b->hi ? -1 : 1;
	if (a->lo != b->lo)
		return a->lo < b->lo ? -1 : 1;
	return 0;
}

static int
range4_cmp(const void *a, const void *b)
{
	const struct range4 *x = a, *y = b;

	if (x->first != y->first)
		return x->first < y->first ? -1 : 1;
	return 0;
}

static int
range6_cmp(const void *a, const void *b)
{
	const struct range6 *x = a, *y = b;

	return u128_cmp(&x->first, &y->first);
}

/*
 * The addresses c covers, as a range of IPv4 keys in *r4 when c lies inside
 * ::ffff:0:0/96 (returns true), else of 128-bit keys in *r6. Bits below
 * the prefix length are ignored; plen above 128 counts as 128.
 */
static bool
prefix_range(const struct cidr *c, struct range4 *r4, struct range6 *r6)
{
	unsigned plen = c->plen > 128 ? 128 : c->plen;
	uint64_t mh, ml;

	if (plen >= 96 && memcmp(c->addr, v4mapped_prefix, 12) == 0) {
		uint32_t m = plen == 96 ? 0 : ~0U << (32 - (plen - 96));

		r4->first = load_be32(c->addr + 12) & m;
		r4->last = r4->first | ~m;
		return true;
	}
	mh = mask64(plen > 64 ? 64 : plen);
	ml = mask64(plen > 64 ? plen - 64 : 0);
	r6->first.hi = load_be64(c->addr) & mh;
	r6->first.lo = load_be64(c->addr + 8) & ml;
	r6->last.hi = r6->first.hi | ~mh;
	r6->last.lo = r6->first.lo | ~ml;
	return false;
}

/* Sorts and merges in place; returns the number of ranges kept. */
static size_t
merge4(struct range4 *r, size_t n)
{
	size_t out = 0;

	if (n == 0)
		return 0;
	qsort(r, n, sizeof(*r), range4_cmp);
	for (size_t i = 1; i < n; i++) {
		/* Overlapping or touching (last + 1 == first): one range.
		 * last == UINT32_MAX swallows everything after it. */
		if (r[out].last == UINT32_MAX ||
		    r[i].first <= r[out].last + 1) {
			if (r[i].last > r[out].last)
				r[out].last = r[i].last;
		} else
			r[++out] = r[i];
	}
	return out + 1;
}

static size_t
merge6(struct range6 *r, size_t n)
{
	size_t out = 0;

	if (n == 0)
		return 0;
	qsort(r, n, sizeof(*r), range6_cmp);
	for (size_t i = 1; i < n; i++) {
		struct u128 next = r[out].last;
		bool at_max = next.hi == UINT64_MAX && next.lo == UINT64_MAX;

		if (!at_max) {
			next.lo++;
			if (next.lo == 0)
				next.hi++;
		}
		if (at_max || u128_cmp(&r[i].first, &next) <= 0) {
			if (u128_cmp(&r[i].last, &r[out].last) > 0)
				r[out].last = r[i].last;
		} else
			r[++out] = r[i];
	}
	return out + 1;
}

static uint32_t *
index_build(size_t n, uint32_t (*top16)(const struct cidr_set *, size_t),
    const struct cidr_set *s)
{
	uint32_t *idx;
	size_t i = 0;

	if (n < CIDR_INDEX_MIN)
		return NULL;
	idx = malloc((CIDR_INDEX_SLOTS + 1) * sizeof(*idx));
	if (idx == NULL)
		return NULL;	/* the set still works, only slower */
	for (size_t k = 0; k <= CIDR_INDEX_SLOTS; k++) {
		while (i < n && top16(s, i) < k)
			i++;
		idx[k] = (uint32_t)i;
	}
	return idx;
}

static uint32_t
top16_4(const struct cidr_set *s, size_t i)
{
	return s->first4[i] >> 16;
}

static uint32_t
top16_6(const struct cidr_set *s, size_t i)
{
	return (uint32_t)(s->first6[i].hi >> 48);
}

struct cidr_set *
cidr_set_new(const struct cidr *v, size_t n)
{
	struct cidr_set *s;
	struct range4 *r4 = NULL;
	struct range6 *r6 = NULL;
	size_t n4 = 0, n6 = 0;

	s = calloc(1, sizeof(*s));
	if (s == NULL)
		return NULL;
	if (n > 0) {
		/* Worst case every prefix lands in both arrays (::/0). */
		r4 = malloc(n * sizeof(*r4));
		r6 = malloc(n * sizeof(*r6));
		if (r4 == NULL || r6 == NULL)
			goto fail;
	}
	for (size_t i = 0; i < n; i++) {
		if (prefix_range(&v[i], &r4[n4], &r6[n6])) {
			n4++;
			continue;
		}
		n6++;
		if (cidr_covers_v4(&v[i])) {
			r4[n4].first = 0;
			r4[n4].last = UINT32_MAX;
			n4++;
		}
	}
	n4 = merge4(r4, n4);
	n6 = merge6(r6, n6);

	if (n4 > 0) {
		s->first4 = malloc(n4 * sizeof(*s->first4));
		s->last4 = malloc(n4 * sizeof(*s->last4));
		if (s->first4 == NULL || s->last4 == NULL)
			goto fail;
		for (size_t i = 0; i < n4; i++) {
			s->first4[i] = r4[i].first;
			s->last4[i] = r4[i].last;
		}
	}
	if (n6 > 0) {
		s->first6 = malloc(n6 * sizeof(*s->first6));
		s->last6 = malloc(n6 * sizeof(*s->last6));
		if (s->first6 == NULL || s->last6 == NULL)
			goto fail;
		for (size_t i = 0; i < n6; i++) {
			s->first6[i] = r6[i].first;
			s->last6[i] = r6[i].last;
		}
	}
	s->n4 = n4;
	s->n6 = n6;
	free(r4);
	free(r6);
	s->idx4 = index_build(n4, top16_4, s);
	s->idx6 = index_build(n6, top16_6, s);
	s->bytes = sizeof(*s) + n4 * 2 * sizeof(uint32_t) +
	    n6 * 2 * sizeof(struct u128) +
	    ((s->idx4 ? 1 : 0) + (s->idx6 ? 1 : 0)) *
	    (CIDR_INDEX_SLOTS + 1) * sizeof(uint32_t);
	return s;
fail:
	free(r4);
	free(r6);
	cidr_set_free(s);
	return NULL;
}

void
cidr_set_free(struct cidr_set *s)
{
	if (s == NULL)
		return;
	free(s->first4);
	free(s->last4);
	free(s->first6);
	free(s->last6);
	free(s->idx4);
	free(s->idx6);
	free(s);
}

/* The number of ranges starting at or below key: the one that may hold
 * key is the last of them, index one less. */
static size_t
find4(const struct cidr_set *s, uint32_t key)
{
	size_t lo = 0, hi = s->n4;

	if (s->idx4 != NULL) {
		lo = s->idx4[key >> 16];
		hi = s->idx4[(key >> 16) + 1];
	}
	/* First range starting above key, in [lo, hi). */
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (s->first4[mid] <= key)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static size_t
find6(const struct cidr_set *s, const struct u128 *key)
{
	size_t lo = 0, hi = s->n6;

	if (s->idx6 != NULL) {
		lo = s->idx6[key->hi >> 48];
		hi = s->idx6[(key->hi >> 48) + 1];
	}
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (u128_cmp(&s->first6[mid], key) <= 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

bool
cidr_set_lookup(const struct cidr_set *s, const uint8_t addr[16])
{
	size_t i;

	if (s == NULL)
		return false;
	if (memcmp(addr, v4mapped_prefix, 12) == 0) {
		uint32_t key = load_be32(addr + 12);

		i = find4(s, key);
		return i > 0 && key <= s->last4[i - 1];
	} else {
		struct u128 key = { load_be64(addr), load_be64(addr + 8) };

		i = find6(s, &key);
		return i > 0 && u128_cmp(&key, &s->last6[i - 1]) <= 0;
	}
}

/*
 * Ranges are merged, so c is covered whole exactly when the range holding
 * its first address reaches its last. An IPv6 prefix is looked up among
 * the IPv6 ranges only, which miss IPv4 entries: a prefix shorter than
 * /96 that is covered only with their help reads as not covered.
 */
bool
cidr_set_covers(const struct cidr_set *s, const struct cidr *c)
{
	struct range4 r4;
	struct range6 r6;
	size_t i;

	if (s == NULL)
		return false;
	if (prefix_range(c, &r4, &r6)) {
		i = find4(s, r4.first);
		return i > 0 && r4.last <= s->last4[i - 1];
	}
	i = find6(s, &r6.first);
	return i > 0 && u128_cmp(&r6.last, &s->last6[i - 1]) <= 0;
}

size_t
cidr_set_ranges(const struct cidr_set *s)
{
	return s == NULL ? 0 : s->n4 + s->n6;
}

size_t
cidr_set_bytes(const struct cidr_set *s)
{
	return s == NULL ? 0 : s->bytes;
}
