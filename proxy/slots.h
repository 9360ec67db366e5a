/* slots.h - the global session cap, with a reserve for light users. */
#ifndef MOAT_SLOTS_H
#define MOAT_SLOTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Counts the sessions each client source (an IPv4 address, an IPv6 /64)
 * holds, across all listeners, and decides whether one more may start
 * ([daemon] max_sessions and reserved_sessions). With max sessions in all
 * and a reserve of r:
 *
 *   - below max - r (the high-water mark) every connection gets a slot;
 *   - from the mark up to max only a source that holds fewer than
 *     SLOTS_FEW sessions and fewer than the average per active source
 *     gets one: the last slots go to newcomers, never to the source that
 *     filled the others;
 *   - at max nobody does.
 *
 * So one source (or a few) holding thousands of idle connections cannot
 * lock everybody else out; the per-address limit itself is
 * policy.rate.concurrent_per_ip, enforced by policy. An exempt address (a
 * trusted load balancer that carries many clients) skips the reserve rule
 * but not the cap. max 0 means no cap. One table serves every worker
 * thread: each call takes the table's mutex, so the cap is exact across
 * workers.
 */
#define SLOTS_FEW 2

enum slots_verdict {
	SLOTS_OK = 0,		/* a slot was taken: slots_give() it back */
	SLOTS_FULL,		/* at max_sessions */
	SLOTS_RESERVE,		/* in the reserve and holding too many */
};

struct slots;

/* Returns NULL when out of memory. */
struct slots *slots_new(void);
void slots_free(struct slots *sl);
/* New limits (reload); sessions already counted stay counted. */
void slots_set_limits(struct slots *sl, uint32_t max, uint32_t reserved);
/* Takes a slot for addr (16-byte form; counted for its source) or says
 * why not. */
enum slots_verdict slots_take(struct slots *sl, const uint8_t addr[16],
    bool exempt);
/* Gives back a slot slots_take() gave; addr must be the same bytes. */
void slots_give(struct slots *sl, const uint8_t addr[16]);
/* Sessions in all, sessions of addr's source, sources holding any. */
size_t slots_used(struct slots *sl);
uint32_t slots_held(struct slots *sl, const uint8_t addr[16]);
size_t slots_addresses(struct slots *sl);
const char *slots_verdict_str(enum slots_verdict v);

#endif
