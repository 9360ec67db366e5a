/* guard.h - the proxy's side of policy: verdicts, feedback, bans, events. */
#ifndef MOAT_GUARD_H
#define MOAT_GUARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <ev.h>

#include "policy.h"

struct config;
struct cfg_listener;
struct geo;

/*
 * One guard per process: it owns the policy tables, the geo database and
 * the state file, and turns verdicts into block events (and, later,
 * firewall writes). guard_open() loads the state file so bans survive a
 * restart, and saves it a few seconds after each change and at close.
 * Returns 0, or -1 with a message in err.
 */
int guard_open(struct ev_loop *loop, const struct config *cfg, char *err,
    size_t errlen);
/*
 * Swaps in new lists, limits and geo database; windows and bans stay.
 * On error (geo database unreadable) the old ones stay. Warnings about
 * the new configuration (guard_geo_warning) go to report. Safe while
 * workers run: the database is opened and the lists are built before
 * the policy's lock takes them.
 */
int guard_reload(const struct config *cfg, config_report_fn *report,
    void *arg, char *err, size_t errlen);
/*
 * Then, after a guard_reload() that worked: a changed [firewall] gets a
 * new writer, an unchanged one reads its sets back and fills in what they
 * lack, and bans the allow list now covers are lifted (report, as for
 * guard_reload, says how many). Workers read the writer without a lock,
 * so while guard_fw_changes(cfg) they must be parked around
 * guard_reload_fw(); otherwise it is safe while they run.
 */
bool guard_fw_changes(const struct config *cfg);
void guard_reload_fw(const struct config *cfg, config_report_fn *report,
    void *arg);
void guard_close(void);

/*
 * Writes to msg what an operator must be told about g, cfg's open geo
 * database, or "" when nothing: an IPv4-only database finds no IPv6
 * client, so while a listener can take IPv6 clients (an IPv6 address,
 * PROXY headers) [policy.geo] unknown decides for every one of them. The
 * line names the file and is prefixed "warning: " like the config
 * loader's. guard_open() logs it, guard_reload() reports it; returns
 * msg.
 */
const char *guard_geo_warning(const struct config *cfg,
    const struct geo *g, char *msg, size_t len);
/*
 * Says which database g is and how old ("geo: " and geo_summary()), to
 * report, or to the log when report is NULL: moat -t, guard_open() and
 * guard_reload() all say it. Nothing when g is NULL.
 */
void guard_geo_report(const struct geo *g, config_report_fn *report,
    void *arg);

/*
 * Asks whether addr may use listener lc. On refusal, emits a reject event
 * (and a ban event for a new ban) and returns false with *reason saying
 * why; guard_refusal() gives the line to send, except to an
 * already-banned address (POLICY_BANNED), which gets no reply at all, so
 * it costs no session and no handshake. sid may be NULL (no session yet).
 * An admitted session that was counted towards concurrent_per_ip gets a
 * nonzero *tag and must call guard_release() with it once when it ends;
 * the allow list admits without counting (tag 0). An admission is not
 * in the metrics until guard_admitted(): the cap may still refuse it.
 * Cheap when nothing listens for events: no formatting, no I/O.
 */
bool guard_admit(const uint8_t addr[16], const struct cfg_listener *lc,
    const char *sid, enum policy_reason *reason, uint32_t *tag);

/* Counts an admitted connection in the metrics: one guard_admit() let in
 * and the cap took, or one admitted outside policy (a trusted load
 * balancer's own, such as a health check). */
void guard_admitted(const struct cfg_listener *lc);

/*
 * The protocol-correct refusal for reason on lc (SMTP 554 5.7.1, POP3
 * -ERR), CRLF included, naming only a reason category. Kept apart from
 * guard_admit() so a session waiting for its handshake holds the reason,
 * not the line.
 */
void guard_refusal(const struct cfg_listener *lc, enum policy_reason reason,
    char *buf, size_t len);
void guard_release(const uint8_t addr[16], uint32_t tag);

/*
 * Feedback from the protocol filters. Returns true if the address is now
 * banned (the session should end). Emits a ban event for a new ban.
 */
bool guard_note(const uint8_t addr[16], const struct cfg_listener *lc,
    const char *sid, enum policy_event ev);

/*
 * Operator actions (moatctl ban/unban). guard_ban() bans addr for
 * duration_ms (0: the configured [ban] duration with escalation) and
 * returns 0, or -1 with *why set (an allow-listed address cannot be
 * banned). guard_unban() returns true if a ban was lifted; it deletes
 * the address from the firewall set either way. Both emit events and
 * reach the firewall like automatic bans.
 */
int guard_ban(const uint8_t addr[16], uint64_t duration_ms, const char **why);
bool guard_unban(const uint8_t addr[16]);

/*
 * fn runs for every new ban, on the thread that made it, after the event:
 * the server ends the address's open sessions there (worker_kick). open
 * is true when policy counted sessions of the address, and for every
 * operator's ban; else the server looks for some itself (policy forgets
 * sessions its window table dropped: a new aggregation, eviction), so
 * that a flood of addresses holding none costs no walk. NULL stops it.
 * Set it before the worker threads start; it must stay callable until
 * they are joined.
 */
typedef void guard_ban_fn(void *arg, const uint8_t addr[16], bool open);
void guard_on_ban(guard_ban_fn *fn, void *arg);

/* Whether bans reach a firewall set (backend other than "none", and
 * running). */
bool guard_fw_on(void);

/* The firewall writer's state in words ("off", "ok; ...", "failing
 * (permission); ..."), for moatctl status; returns buf or a constant. */
const char *guard_fw_state(char *buf, size_t len);
/* Since when (Unix seconds) the firewall writer fails; 0 when it works. */
int64_t guard_fw_failing_since(void);

/* The policy tables, for the control socket and metrics; NULL before
 * guard_open(). */
struct policy *guard_policy(void);
/* The country database in use, for moatctl status; NULL when there is
 * none. Replaced only by a reload, on the main loop's thread. */
const struct geo *guard_geo_db(void);
/* Lookups that failed (a damaged database) since the start, across
 * reloads: for moat_geo_lookup_errors_total. */
uint64_t guard_geo_errors(void);
uint64_t guard_now_ms(void);

#endif
