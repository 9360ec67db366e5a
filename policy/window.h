/* window.h - per-address sliding-window counters with a bounded memory. */
#ifndef MOAT_WINDOW_H
#define MOAT_WINDOW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * The table tracks, per client key, new connections in a sliding window,
 * auth failures (and other misbehaviour) in a second sliding window, and
 * the sessions open right now.
 *
 * Keys. A key is the client address masked to a prefix length:
 * aggregate_v4 bits of an IPv4 address (32 = each address alone, 24 = one
 * counter per /24) and aggregate_v6 bits of an IPv6 one (128 or 64), so an
 * attacker who owns a subnet cannot multiply his allowance by rotating
 * through it. Aggregation applies to all three counters.
 *
 * Sliding window algorithm. Each window of length W is cut into
 * WINDOW_SLOTS - 1 = 7 sub-intervals of s = ceil(W / 7) milliseconds on
 * the monotonic clock, and the table keeps a ring of WINDOW_SLOTS = 8
 * counters: the current sub-interval and the 7 before it. The count at time
 * t is the sum of all 8, i.e. the events in [floor(t/s)*s - 7s, t], a span
 * at least 7s >= W and less than 8s long. An event is admitted only while
 * that count is below the limit, so:
 *
 *   - exact on the safe side: no interval of length W ever holds more than
 *     `limit` admitted events (every such interval ending at t lies inside
 *     the counted span), unlike fixed buckets which let 2 x limit through
 *     around a bucket edge, or the two-bucket weighted estimate which also
 *     approaches 2 x limit when the previous bucket's events are bunched at
 *     its end;
 *   - error bound: an event is forgotten between W and 8s <= W + W/7 + 8 ms
 *     after it happened, never earlier. The only error is that a client may
 *     be held to the limit for up to W/7 (about 14%) longer than W; with
 *     {limit = 30, window = "1m"} an event leaves the count between 60 and
 *     68.6 seconds later.
 *
 * Only admitted connections are counted (a client that is rejected does not
 * push its own window further out), and every failure is counted.
 * Counters are 16 bits, so limits are clamped to WINDOW_LIMIT_MAX; since a
 * window never holds more than `limit` admitted events no slot overflows.
 *
 * Memory. Entries live in one array grown by doubling up to `max_entries`,
 * chained from a power-of-two bucket array of 32-bit indices, and linked in
 * least-recently-seen order. struct window_entry is 80 bytes and the bucket
 * array adds 4 to 8 per entry: at most 88 bytes per tracked key
 * (window_entry_bytes() tells; the benchmark measures it). When the table is
 * full the least recently seen key is dropped; keys with open sessions are
 * skipped among the 8 oldest, so eviction rarely forgets a concurrency
 * count (if all 8 have sessions the oldest goes anyway: a table that full is
 * a flood that the proxy's global connection cap must absorb). A key whose
 * windows have run empty and that holds no session is worth nothing: when
 * the oldest key is such a one, a new key takes its place even below the
 * cap, so idle clients do not pile up. (A flood of more distinct keys than
 * the cap can push an attacker's own counts out; aggregation is the answer
 * to that, since it shrinks the key space he controls.)
 *
 * Time is a uint64_t of milliseconds from the caller's monotonic clock.
 * Not thread-safe: policy.c serialises access.
 */
struct window_table;

#define WINDOW_SLOTS 8
#define WINDOW_LIMIT_MAX 65535
#define WINDOW_DEFAULT_MAX_ENTRIES 100000

struct window_params {
	uint32_t conn_limit;		/* 0: the connection window is off */
	uint64_t conn_window_ms;
	uint32_t auth_limit;		/* 0: the failure window is off */
	uint64_t auth_window_ms;
	uint8_t aggregate_v4;		/* 0..32, usually 32 or 24 */
	uint8_t aggregate_v6;		/* 0..128, usually 128 or 64 */
	uint32_t conc_limit;		/* 0: no cap on open sessions */
	size_t max_entries;		/* 0: WINDOW_DEFAULT_MAX_ENTRIES */
};

/* Returns NULL when out of memory. */
struct window_table *window_table_new(const struct window_params *wp);
void window_table_free(struct window_table *t);

/*
 * New limits, windows or aggregation (a reload). Counts already made are
 * kept. When a window length changes the slot width changes too, and each
 * key's past events are folded into its current slot: they are then
 * forgotten one new window later, never earlier than before. When an
 * aggregation length changes the table is cleared, since old keys no longer
 * name the same clients, and the sessions open then no longer count. A
 * smaller max_entries evicts the oldest keys, those with open sessions
 * last.
 */
/* now_ms 0 folds each key at its own last-seen time. */
void window_table_reconfigure(struct window_table *t,
    const struct window_params *wp, uint64_t now_ms);

enum window_verdict {
	WINDOW_OK = 0,
	WINDOW_RATE,		/* the connection window is full */
	WINDOW_AUTH,		/* the failure window is full */
	WINDOW_CONCURRENCY,	/* too many sessions open */
};

/*
 * A connection attempt, in one hash lookup. If the connection window
 * already holds conn_limit events returns WINDOW_RATE; else if the failure
 * window holds auth_limit failures returns WINDOW_AUTH (with aggregation
 * another address of the prefix may have made them: it is one client);
 * in these two cases nothing is counted. Else if conc_limit sessions are
 * open returns WINDOW_CONCURRENCY, the attempt counted in the connection
 * window (a client that holds its sessions and keeps connecting is rate
 * limited as any other) but no session opened. Otherwise counts the
 * connection, opens a session (the caller must window_close it later with
 * *tag) and returns WINDOW_OK.
 * *count gets the connection window's count (after counting, or the full
 * count; for WINDOW_AUTH the failure count), *open the sessions open
 * (after opening, or the count at the limit).
 */
enum window_verdict window_admit(struct window_table *t,
    const uint8_t addr[16], uint64_t now_ms, uint32_t *count,
    uint32_t *open, uint32_t *tag);

/* Counts a failure and returns the failure window's count including it;
 * the caller compares it with auth_limit. */
uint32_t window_fail(struct window_table *t, const uint8_t addr[16],
    uint64_t now_ms);

/*
 * A session ends: one fewer open (never below 0) in the entry that
 * counted it, which tag (from window_admit) names. When that entry was
 * dropped (evicted, a smaller max_entries, a new aggregation) nothing
 * changes, even if its key has a new entry, whose sessions are others';
 * tag 0 (nothing was counted) changes nothing either.
 */
void window_close(struct window_table *t, const uint8_t addr[16],
    uint32_t tag);
/* Clears the connection and failure counts of addr's key (its open
 * sessions stay counted): an operator's unban starts the client afresh,
 * rather than banning it again on its next connection. */
void window_forget(struct window_table *t, const uint8_t addr[16]);

/* Read-only peeks, for tests and moatctl; they do not refresh recency. */
uint32_t window_conn_count(struct window_table *t, const uint8_t addr[16],
    uint64_t now_ms);
uint32_t window_fail_count(struct window_table *t, const uint8_t addr[16],
    uint64_t now_ms);
uint32_t window_open_count(struct window_table *t, const uint8_t addr[16]);

/* Keys tracked, heap bytes held, and the constant cost per key. */
size_t window_entries(const struct window_table *t);
/* Keys dropped from the full table to make room for a new one while
 * their windows still counted something or sessions were open: counts
 * forgotten (a flood of addresses, or max_entries too small). */
uint64_t window_evicted(const struct window_table *t);
size_t window_bytes(const struct window_table *t);
size_t window_entry_bytes(void);

/* The key an address counts under: addr masked to the aggregation. */
void window_key(const struct window_table *t, const uint8_t addr[16],
    uint8_t key[16]);

#endif
