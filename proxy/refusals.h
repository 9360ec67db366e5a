/* refusals.h - refusal log lines that stay readable during a flood. */
#ifndef MOAT_REFUSALS_H
#define MOAT_REFUSALS_H

#include <stdbool.h>
#include <stdint.h>

struct ev_loop;

/*
 * Refused connections (banned, deny list, geo, rate, concurrency, the
 * session cap) are logged like this: the first refusal of an address for a
 * reason in each REFUSALS_INTERVAL gets a full line ("SID reject ip=...
 * reason=... listener=... DETAIL"), and so do at most REFUSALS_FULL_MAX
 * lines per interval in all; the rest are counted and summarised once the
 * interval is over ("refusals: 1234 more of reason=banned in the last
 * 10 s"). So a flood costs a counter increment per connection and a few
 * lines per interval, and at 3 a.m. the log still names every address that
 * was refused. Block events are not affected: every refusal still emits
 * one (guard.h).
 *
 * State is per thread (each event loop logs its own refusals); loop is
 * the calling thread's loop, where a timer writes the summaries. sid may
 * be NULL (refused at accept, before any session existed); reason must be
 * a string that lives forever (policy_reason_str()); detail, if not NULL,
 * ends the full line (figures that explain it).
 */
#define REFUSALS_INTERVAL 10.0
#define REFUSALS_FULL_MAX 100

/* Returns true when this refusal got its full line, false when it was
 * only counted (a repeat within the interval: a flood). */
bool refusals_log(struct ev_loop *loop, const uint8_t addr[16],
    const char *reason, const char *listener, const char *sid,
    const char *detail);

/* The calling thread is worker id: with more than one worker, its
 * summaries say "(worker id)", as moatctl status numbers them. */
void refusals_worker(unsigned id);

/* Writes the summaries due now and forgets the thread's state (its loop
 * is ending); refusals_log() may be called again afterwards. */
void refusals_flush(void);

#endif
