/* cidr.h - immutable sets of CIDR prefixes with fast membership lookups. */
#ifndef MOAT_CIDR_H
#define MOAT_CIDR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "addr.h"

/*
 * A set of prefixes over 128-bit keys (IPv4 as ::ffff:a.b.c.d, as in
 * struct cidr) answering "is this address covered by any prefix?".
 *
 * Design: the policy only asks for membership, never for the longest
 * matching rule, so the set is stored as its union: every prefix becomes
 * the closed range [first, last] of addresses it covers, the ranges are
 * sorted and overlapping or touching ones merged. A lookup is then one
 * binary search for the last range starting at or below the address and
 * one comparison with its end. Compared with a path-compressed trie this
 * needs no pointers (two flat arrays, 8 bytes per IPv4 range and 32 per
 * IPv6 range, often fewer ranges than prefixes after merging), builds in
 * O(n log n) with one sort and is cache friendly.
 *
 * IPv4 ranges (everything inside ::ffff:0:0/96) live in their own array of
 * 32-bit keys, since most lists and most clients are IPv4 and 32-bit
 * compares halve the memory touched. A prefix shorter than /96 that covers
 * the mapped block (::/0, ::/64, ...) also covers all of IPv4 and is
 * entered in both arrays. For sets larger than CIDR_INDEX_MIN ranges a
 * 65,536-entry index on the top 16 bits narrows the binary search to the
 * ranges that can match, so a 1,000,000-prefix set costs a handful of
 * compares per lookup.
 *
 * A set never changes after cidr_set_new; a reload builds a new one and
 * swaps the pointer, so readers need no lock against the builder.
 */
struct cidr_set;

/*
 * Builds a set from n prefixes (n may be 0; v may then be NULL). Bits below
 * a prefix length are ignored; plen above 128 is treated as 128. Returns
 * NULL only when out of memory. The caller frees it with cidr_set_free.
 */
struct cidr_set *cidr_set_new(const struct cidr *v, size_t n);
void cidr_set_free(struct cidr_set *s);

/* True if addr (16-byte form, IPv4 mapped) is inside any prefix of s.
 * s may be NULL, meaning the empty set. */
bool cidr_set_lookup(const struct cidr_set *s, const uint8_t addr[16]);
/* True if every address of c is inside s (s NULL: the empty set). For
 * warnings, not verdicts: an IPv6 prefix that only IPv4 entries help to
 * cover reads as not covered. */
bool cidr_set_covers(const struct cidr_set *s, const struct cidr *c);

/* Ranges kept after merging, and heap bytes held; for logs and benchmarks. */
size_t cidr_set_ranges(const struct cidr_set *s);
size_t cidr_set_bytes(const struct cidr_set *s);

#endif
