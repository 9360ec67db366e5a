/* mono.h - time on the monotonic clock, for timeouts and durations. */
#ifndef MOAT_MONO_H
#define MOAT_MONO_H

#include <stdint.h>

/*
 * The wall clock (and libev's ev_now(), which follows it) is stepped by
 * NTP or an operator; measured on it, a timeout outlasts a step back by
 * the size of the step and a duration can come out negative. These never
 * go back. Their zero is arbitrary: compare them only with each other.
 */
uint64_t mono_ms(void);
double mono_s(void);

#endif
