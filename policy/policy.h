/* policy.h - the verdict per connection and the feedback from sessions. */
#ifndef MOAT_POLICY_H
#define MOAT_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ban.h"
#include "config.h"
#include "state.h"

struct geo;

/*
 * The policy engine: allow and deny CIDR sets (cidr.h), geofencing
 * (geo.h), sliding windows per client (window.h) and bans (ban.h), behind
 * one small surface for the proxy.
 *
 * Order of policy_admit, first match wins:
 *   1. allow list  -> ALLOW; never counted, rate-limited or banned
 *   2. ban table   -> REJECT "banned" (one hash lookup; nothing else runs)
 *   3. deny list   -> REJECT "denylist"
 *   4. geo         -> REJECT "geo" (allow_countries / deny_countries /
 *                     unknown = "deny")
 *   5. connection rate -> REJECT "rate", and the address is banned
 *   6. auth failures at the limit -> REJECT "auth", and the address is
 *                     banned (another address of an aggregated prefix
 *                     made them, or the ban ran out before the window)
 *   7. concurrent sessions -> REJECT "concurrency" (no ban: a busy
 *                     legitimate relay trips this too)
 *   8. ALLOW: the connection is counted and a session opened; the caller
 *      must call policy_release with the result's tag exactly once when
 *      that session ends.
 *
 * Feedback (policy_note): an auth failure and a protocol glitch both count
 * in the auth_failures window, and reaching its limit bans ("auth"); an
 * auth success changes nothing (resetting would let someone with one good
 * account interleave logins between guesses); an SMTP smuggling attempt
 * bans at once ("smuggling"): a bare-LF/bare-CR end-of-data sequence is
 * never sent by a correct client, and answering it with a ban is cheap
 * insurance for the backend behind us.
 *
 * Bans escalate per address (ban.h). Counts are kept per client key, which
 * is the address or, with aggregation, its /N prefix (window.h); bans are
 * always per address, so each address of an aggregated subnet that trips
 * the shared limit is banned in its turn.
 *
 * Time: now_ms is the caller's monotonic clock in milliseconds; wall_ms
 * (state file only) is Unix time in milliseconds read at the same moment.
 *
 * Threads: every call takes an internal mutex, so worker threads may share
 * one policy. Calls are short (hash lookups, a binary search, one geo
 * lookup) and do no I/O, except the state file functions, which block on
 * the disk and are meant for rare calls.
 */
struct policy;

enum policy_verdict {
	POLICY_ALLOW = 0,
	POLICY_REJECT,
};

enum policy_reason {
	POLICY_OK = 0,		/* admitted by the normal checks */
	POLICY_ALLOWLIST,	/* admitted by the allow list */
	POLICY_BANNED,		/* banned before this call */
	POLICY_DENYLIST,
	POLICY_GEO,
	POLICY_RATE,		/* connection rate; bans */
	POLICY_CONCURRENCY,
	POLICY_AUTH,		/* auth failures (and glitches); bans */
	POLICY_SMUGGLING,	/* bans */
	POLICY_MANUAL,		/* policy_ban */
};

enum policy_event {
	POLICY_EV_AUTH_FAIL = 0,
	POLICY_EV_AUTH_OK,
	POLICY_EV_GLITCH,	/* early talker, HTTP on a mail port, ... */
	POLICY_EV_SMUGGLING,
};

struct policy_result {
	enum policy_verdict verdict;
	enum policy_reason reason;
	char country[3];	/* "" unless geofencing looked it up */
	char continent[3];
	uint32_t count;		/* rate/auth: events in the window;
				 * concurrency: sessions open */
	uint32_t limit;		/* the limit count was held against */
	uint64_t window_ms;	/* rate/auth: the window's length */
	bool ban_new;		/* this call made a ban: log it, push it to
				 * the firewall with a timeout of ban_ms */
	uint64_t ban_ms;	/* new ban: its length; banned: time left */
	uint32_t ban_count;	/* bans of this address so far */
	uint32_t open;		/* new ban: sessions counted open for the
				 * address (its prefix, when aggregated) */
	uint32_t tag;		/* ALLOW, counted: for policy_release;
				 * else 0 */
};

/* Names for events and logs: "ok", "allowlist", "banned", "denylist",
 * "geo", "rate", "concurrency", "auth", "smuggling", "manual". */
const char *policy_reason_str(enum policy_reason r);
/*
 * What a client may be told, for the proxy's "554 5.7.1 ..." or "-ERR ..."
 * text: "policy" (deny list, geo), "banned", "rate limit", "too many
 * connections", "too many failures", "protocol violation". It never names
 * the rule that matched.
 */
const char *policy_reason_category(enum policy_reason r);
const char *policy_event_str(enum policy_event e);

/*
 * Builds a policy from cfg (copied: cfg may be freed afterwards). geo is
 * borrowed: the caller keeps it open until policy_reload has replaced it
 * or policy_free has run; it may be NULL only when cfg has no
 * [policy.geo] database. Returns NULL with *err (malloc'd, caller frees)
 * on failure. Call policy_state_load next to bring bans back.
 */
struct policy *policy_new(const struct config *cfg, struct geo *geo,
    char **err);
void policy_free(struct policy *p);

/*
 * Applies a new configuration and geo database (SIGHUP). Lists, country
 * rules, limits, durations and the state file path change; the windows,
 * open-session counts and bans already counted are kept (window.h says
 * what a changed window length or aggregation does to them). On failure
 * (out of memory, or country rules without a database) returns -1 with
 * *err and the policy is unchanged. After it returns, the old geo handle
 * is no longer used by the policy and may be closed.
 */
int policy_reload(struct policy *p, const struct config *cfg,
    struct geo *geo, char **err);
/* After a reload that lowered ban.max_entries: the ban records past it
 * dropped at once (ban_table_trim), rather than all together at the next
 * ban. Returns how many went; *live (may be NULL) as ban_table_trim. */
size_t policy_trim_bans(struct policy *p, uint64_t now_ms, size_t *live);

/* The verdict at accept time; see the order above. Fills *res. */
enum policy_verdict policy_admit(struct policy *p, const uint8_t addr[16],
    uint64_t now_ms, struct policy_result *res);

/*
 * Feedback from a session. Returns POLICY_REJECT when the address is (now
 * or already) banned, so the caller may end the session; res->ban_new
 * says whether this call made the ban. Allow-listed addresses are never
 * counted (POLICY_ALLOW, reason POLICY_ALLOWLIST).
 */
enum policy_verdict policy_note(struct policy *p, const uint8_t addr[16],
    enum policy_event ev, uint64_t now_ms, struct policy_result *res);

/*
 * A session that policy_admit counted has ended; tag is the one its
 * result gave. A session that was not counted (the allow list; tag 0)
 * releases nothing, nor does one whose count a reload or a full table
 * dropped: a release then would free a place another session holds.
 */
void policy_release(struct policy *p, const uint8_t addr[16], uint32_t tag);

/*
 * Operator bans (moatctl). duration_ms 0 means the escalated length.
 * policy_ban refuses (-1, *why static) an allow-listed address, since the
 * allow list beats everything; otherwise returns 0 with res describing the
 * ban (ban_new true). policy_unban forgets the address's record and returns
 * true if a ban was in force (the caller then deletes it from the
 * firewall).
 */
int policy_ban(struct policy *p, const uint8_t addr[16], uint64_t duration_ms,
    uint64_t now_ms, struct policy_result *res, const char **why);
bool policy_unban(struct policy *p, const uint8_t addr[16], uint64_t now_ms);

/*
 * Lifts the bans of addresses on the allow list, which beats everything:
 * bans from before a reload that allow-listed them, or restored from the
 * state file. Their records go (repeat counts too, as with policy_unban);
 * fn is called (without the lock) for each ban that was in force, so the
 * caller can delete it from the firewall. Returns the number of records
 * dropped.
 */
size_t policy_unban_allowed(struct policy *p, uint64_t now_ms,
    ban_visit_fn *fn, void *arg);
/* Whether addr is on the allow list in force. */
bool policy_allowlisted(struct policy *p, const uint8_t addr[16]);

/*
 * Calls fn once, under the lock, with the ban in force on addr at now or
 * NULL. Kernel sets are written by a queue in the order changes reach it,
 * and a ban and an unban of one address from two threads can reach it in
 * the other order than the one they were made in; a caller that queues the
 * state it finds here, inside fn, cannot be overtaken that way. fn must
 * not call back into p.
 */
void policy_ban_settle(struct policy *p, const uint8_t addr[16],
    uint64_t now_ms, ban_visit_fn *fn, void *arg);

/* Visits every ban in force at now (for moatctl, and to re-assert the
 * firewall's timeouts after a restart). fn must not call back into p. */
void policy_bans(struct policy *p, uint64_t now_ms, ban_visit_fn *fn,
    void *arg);

/*
 * fn is called, under the lock, with the address of each ban in force
 * that the ban table drops to stay within ban.max_entries (ban.h), so
 * that the caller deletes its firewall element too: a flood from many
 * addresses then never holds more bans in the kernel than in the table.
 * Queue, do not block, in fn; it must not call back into p. NULL stops
 * it.
 */
void policy_on_evict(struct policy *p, ban_evict_fn *fn, void *arg);

/*
 * The state file named by daemon.state_file (no-op returning 0 when unset).
 * _load restores bans at start (see state.h: bad lines are reported through
 * report and skipped, a bad header ignores the file); returns the number
 * restored or -1. _save writes atomically and returns 0 or -1 with err.
 * _dirty says whether bans changed since the last successful save, so the
 * caller can save after a burst of bans rather than after each.
 */
long policy_state_load(struct policy *p, uint64_t now_ms, uint64_t wall_ms,
    state_report_fn *report, void *arg);
int policy_state_save(struct policy *p, uint64_t now_ms, uint64_t wall_ms,
    char *err, size_t errlen);
bool policy_state_dirty(struct policy *p);

struct policy_stats {
	size_t allow_ranges, deny_ranges;	/* after merging */
	size_t tracked;				/* client keys in windows */
	uint64_t tracked_evicted;		/* live ones dropped for room
						 * (rate.max_tracked) */
	size_t ban_records, bans_active;
	uint64_t bans_evicted;			/* bans in force dropped for
						 * room (ban.max_entries) */
	size_t bytes;				/* heap held by the tables */
};
void policy_stats(struct policy *p, uint64_t now_ms, struct policy_stats *st);

#endif
