/* refusals.c - refusal log lines that stay readable during a flood. */
#include "refusals.h"

#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <netinet/in.h>

#include <ev.h>

#include "addr.h"
#include "log.h"
#include "mono.h"

/* Addresses remembered per thread; a collision only costs a full line. */
#define SEEN_SLOTS 256
/* Distinct reasons (policy_reason_str() has fewer). */
#define REASONS 16

struct seen {
	uint8_t addr[16];
	const char *reason;
	ev_tstamp until;	/* refusals before this are summarised */
};

struct tally {
	const char *reason;
	unsigned long long n;
};

/* Worker threads that said who they are; with more than one, each names
 * itself in its summaries, or two "1234 more" lines within a second
 * would read as a repeat. */
static atomic_uint nworkers;
static _Thread_local int worker = -1;

static _Thread_local struct {
	struct ev_loop *loop;	/* NULL: nothing logged yet */
	ev_timer timer;		/* writes the summaries of an interval */
	ev_tstamp start;	/* the interval being counted */
	unsigned full;		/* full lines in it */
	struct seen seen[SEEN_SLOTS];
	struct tally tally[REASONS];
} rf;

void
refusals_worker(unsigned id)
{
	worker = (int)id;
	atomic_fetch_add(&nworkers, 1);
}

static void
summarise(void)
{
	char who[32] = "";
	size_t i;

	if (worker >= 0 && atomic_load(&nworkers) > 1)
		snprintf(who, sizeof(who), " (worker %d)", worker);
	for (i = 0; i < REASONS && rf.tally[i].reason != NULL; i++) {
		if (rf.tally[i].n > 0)
			log_info("refusals: %llu more of reason=%s in the last "
			    "%.0f s%s", rf.tally[i].n, rf.tally[i].reason,
			    REFUSALS_INTERVAL, who);
		rf.tally[i].n = 0;
	}
}

static void
refusals_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)w, (void)revents;
	ev_ref(loop);		/* balances the ev_unref() at start */
	summarise();
	rf.start = mono_s();
	rf.full = 0;
}

static size_t
seen_slot(const uint8_t addr[16], const char *reason)
{
	uint64_t h = 1469598103934665603ULL ^ (uintptr_t)reason;
	size_t i;

	for (i = 0; i < 16; i++)
		h = (h ^ addr[i]) * 1099511628211ULL;
	return (size_t)(h ^ (h >> 32)) % SEEN_SLOTS;
}

static void
count(const char *reason)
{
	size_t i;

	for (i = 0; i < REASONS; i++) {
		if (rf.tally[i].reason == NULL)
			rf.tally[i].reason = reason;
		if (rf.tally[i].reason == reason) {
			rf.tally[i].n++;
			break;
		}
	}
	if (!ev_is_active(&rf.timer)) {
		/* The timer alone must not keep the loop running. */
		ev_timer_set(&rf.timer, rf.start + REFUSALS_INTERVAL -
		    mono_s(), 0.);
		ev_timer_start(rf.loop, &rf.timer);
		ev_unref(rf.loop);
	}
}

bool
refusals_log(struct ev_loop *loop, const uint8_t addr[16],
    const char *reason, const char *listener, const char *sid,
    const char *detail)
{
	ev_tstamp now = mono_s();
	struct seen *e;
	char ip[INET6_ADDRSTRLEN];

	if (rf.loop == NULL) {
		rf.loop = loop;
		ev_timer_init(&rf.timer, refusals_timer_cb, 0., 0.);
		rf.start = now;
	}
	if (now - rf.start >= REFUSALS_INTERVAL && !ev_is_active(&rf.timer)) {
		rf.start = now;
		rf.full = 0;
	}
	e = &rf.seen[seen_slot(addr, reason)];
	if ((e->reason == reason && now < e->until &&
	    memcmp(e->addr, addr, 16) == 0) || rf.full >= REFUSALS_FULL_MAX) {
		count(reason);
		return false;
	}
	memcpy(e->addr, addr, 16);
	e->reason = reason;
	e->until = now + REFUSALS_INTERVAL;
	rf.full++;
	log_info("%s reject ip=%s reason=%s listener=%s%s%s", sid ? sid : "-",
	    addr_v6_str(addr, ip, sizeof(ip)), reason, listener,
	    detail ? " " : "", detail ? detail : "");
	return true;
}

void
refusals_flush(void)
{
	if (rf.loop == NULL)
		return;
	if (ev_is_active(&rf.timer)) {
		ev_ref(rf.loop);
		ev_timer_stop(rf.loop, &rf.timer);
	}
	summarise();
	memset(&rf, 0, sizeof(rf));
}
