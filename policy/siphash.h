/* siphash.h - a keyed hash for client addresses in policy's hash tables. */
#ifndef MOAT_SIPHASH_H
#define MOAT_SIPHASH_H

#include <stddef.h>
#include <stdint.h>

/*
 * SipHash-1-3 (Aumasson and Bernstein) of len bytes under a 128-bit key.
 * The tables that count clients are keyed by addresses the client picks
 * (an IPv6 /64 gives an attacker 2^64 of them), so an unkeyed hash would
 * let one craft a chain of colliding keys; with a random key per table that
 * costs the attacker nothing useful. 1-3 rounds are enough for hash-flooding
 * resistance, which is all we need here (this is not a MAC).
 */
uint64_t siphash13(const void *data, size_t len, const uint64_t key[2]);

/* Fills key with random bytes from getrandom(2); falls back to a mix of
 * clock and address bits if the kernel call fails (it does not block). */
void siphash_key_init(uint64_t key[2]);

#endif
