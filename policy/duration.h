/* duration.h - durations written with units, as in "10s", "5m" or "1h30m". */
#ifndef MOAT_DURATION_H
#define MOAT_DURATION_H

#include <stddef.h>
#include <stdint.h>

/*
 * Accepts one or more <integer><unit> groups, units ms, s, m, h, d, w, with
 * no sign and no spaces ("90s", "1h30m", "7d"). Stores milliseconds in *ms.
 * Returns 0, or -1 with *why set to a static reason.
 */
int duration_parse(const char *s, uint64_t *ms, const char **why);

/*
 * The reason duration_parse() rejects s, with the spelling it takes where
 * that is clear: units in upper case ("10S": write "10s") and fractions
 * ("1.5h": write "1h30m"). Writes to buf and returns it; "" if s parses.
 */
const char *duration_why(const char *s, char *buf, size_t len);

/* Shortest exact spelling, e.g. 5400000 -> "1h30m"; returns buf. */
const char *duration_str(uint64_t ms, char *buf, size_t len);

#endif
