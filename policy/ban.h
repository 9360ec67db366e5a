/* ban.h - the ban table: who is banned until when, and how often before. */
#ifndef MOAT_BAN_H
#define MOAT_BAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * One record per banned address (the full 16-byte form, never a prefix:
 * the firewall sets hold single addresses). A record keeps the expiry of
 * the current ban on the caller's monotonic clock, how many bans the
 * address has had, and why the last one happened.
 *
 * Escalation: the n-th ban lasts duration * escalation^(n-1), capped at
 * max_duration. To escalate, a record outlives its ban: it is remembered
 * for forget_ms after the ban expires (by default max_duration), and a new
 * ban within that time counts as a repeat. Records past that are dropped
 * lazily: when a lookup meets one, and two at a time by a sweep that each
 * ban_add runs, so the table needs no timer.
 *
 * Lookups are one keyed hash and a short chain walk, so a banned client is
 * rejected for the cost of a hash. Records live in one array with chains of
 * 32-bit indices (40 bytes per record plus 4 to 8 for the buckets). The
 * table is capped at max_entries records; when full, expired records are
 * swept first, then the record that would be forgotten soonest among a
 * few is dropped. A ban still in force that goes so is handed to the
 * evict callback (ban_table_on_evict), which takes it out of the kernel
 * set too: the set never holds more bans than the table.
 *
 * Not thread-safe: policy.c serialises access.
 */
struct ban_table;

enum ban_reason {
	BAN_MANUAL = 0,		/* moatctl ban */
	BAN_RATE,		/* too many connections in the window */
	BAN_AUTH,		/* too many auth failures (and glitches) */
	BAN_SMUGGLING,		/* SMTP smuggling attempt */
	BAN_REASON_COUNT
};

#define BAN_DEFAULT_MAX_ENTRIES 1000000

/* The longest ban, in configuration and from moatctl. Kernel sets refuse
 * timeouts far beyond it (nftables: some 585 years), which left such a
 * ban out of the set; an address meant to stay out for good belongs in
 * policy.deny. */
#define BAN_MAX_MS (3650ULL * 86400 * 1000)
#define BAN_MAX_TEXT "3650d (ten years); for good, list it in policy.deny"

/* Bans counted per address at most: far past any escalation's cap, and
 * what a larger count restored from the state file is taken for. */
#define BAN_COUNT_MAX 1000000u

struct ban_params {
	uint64_t duration_ms;		/* first ban */
	double escalation;		/* >= 1.0 */
	uint64_t max_duration_ms;	/* cap; below duration means duration */
	uint64_t forget_ms;		/* 0: max_duration */
	size_t max_entries;		/* 0: BAN_DEFAULT_MAX_ENTRIES */
};

struct ban_info {
	uint64_t expiry_ms;		/* monotonic */
	uint64_t duration_ms;		/* of the ban just made (ban_add) */
	uint32_t count;			/* bans so far, this one included */
	enum ban_reason reason;
};

/* "manual", "rate", "auth", "smuggling". */
const char *ban_reason_str(enum ban_reason r);
/* The reverse over len bytes; -1 for an unknown word. */
int ban_reason_parse(const char *s, size_t len, enum ban_reason *r);

/* The length of the n-th ban (n >= 1) under p. */
uint64_t ban_duration(const struct ban_params *p, uint32_t n);

/* NULL when out of memory. */
struct ban_table *ban_table_new(const struct ban_params *p);
void ban_table_free(struct ban_table *t);
/* A copy of t (records and index), to be read while t changes under its
 * owner's lock: two copies of memory, no per-record work. NULL when out
 * of memory. */
struct ban_table *ban_table_copy(const struct ban_table *t);
/* New durations apply to future bans; bans in force keep their expiry.
 * A lower max_entries waits for ban_table_trim(). */
void ban_table_reconfigure(struct ban_table *t, const struct ban_params *p);
/* Drops records past max_entries at once, as a full table makes room
 * (the evict callback sees each ban in force that goes): the records
 * dropped, and in *live (may be NULL) how many of them were bans in
 * force. */
size_t ban_table_trim(struct ban_table *t, uint64_t now, size_t *live);

/*
 * fn(arg, addr) is called when a full table drops the record of a ban
 * still in force to make room (in ban_add or ban_restore, so under the
 * owner's lock), before the record goes. fn must not change the table.
 * NULL stops it. A copy (ban_table_copy) calls nothing.
 */
typedef void ban_evict_fn(void *arg, const uint8_t addr[16]);
void ban_table_on_evict(struct ban_table *t, ban_evict_fn *fn, void *arg);

/* True if addr is banned at now; fills *out (may be NULL) when it is. */
bool ban_lookup(struct ban_table *t, const uint8_t addr[16], uint64_t now,
    struct ban_info *out);

/*
 * Bans addr. duration_ms 0 means the escalated length for this repeat.
 * If addr is already banned an automatic ban (duration_ms 0) changes
 * nothing and returns false; an explicit duration (an operator's) replaces
 * the expiry and counts as a new ban. Returns true when a ban was made,
 * with *out describing it; false with *out describing the ban in force
 * (or zeroed if out of memory).
 */
bool ban_add(struct ban_table *t, const uint8_t addr[16],
    enum ban_reason reason, uint64_t duration_ms, uint64_t now,
    struct ban_info *out);

/* Sets a record as read from the state file (expiry may be in the past:
 * the record then only carries the repeat count). 1 when kept, 0 when
 * already forgotten, -1 if out of memory. */
int ban_restore(struct ban_table *t, const uint8_t addr[16],
    enum ban_reason reason, uint64_t expiry_ms, uint32_t count,
    uint64_t now);
/* How long a record outlives its ban (ban.forget_after). */
uint64_t ban_forget_ms(const struct ban_table *t);
/* The most records t holds (ban.max_entries). */
size_t ban_max_entries(const struct ban_table *t);

/* Forgets addr entirely (an operator's unban also forgives the repeat
 * count). Returns true if a ban was in force. */
bool ban_del(struct ban_table *t, const uint8_t addr[16], uint64_t now);

/* Visits every record still remembered at now, banned or not. The
 * callback must not change the table. */
typedef void ban_visit_fn(void *arg, const uint8_t addr[16],
    const struct ban_info *b);
void ban_foreach(const struct ban_table *t, uint64_t now, ban_visit_fn *fn,
    void *arg);

/* Records held, of which in force at now (counted at most once a
 * second: bans that ran out within the last second may be in it); heap
 * bytes. */
size_t ban_entries(const struct ban_table *t);
size_t ban_active(struct ban_table *t, uint64_t now);
size_t ban_bytes(const struct ban_table *t);
/* Bans in force dropped to make room, since t was made, while an evict
 * callback was set. */
uint64_t ban_evicted(const struct ban_table *t);

#endif
