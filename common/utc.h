/* utc.h - wall-clock times as moat writes them. */
#ifndef MOAT_UTC_H
#define MOAT_UTC_H

#include <stddef.h>
#include <stdint.h>

/* "2026-12-06T03:00:00Z", as status, JSON and the state file carry it
 * (the number of seconds if the time has no such form); returns buf. */
const char *utc_iso(int64_t unix_s, char *buf, size_t len);
/* "2026-12-06 03:00 UTC", for log lines that people read; returns buf. */
const char *utc_human(int64_t unix_s, char *buf, size_t len);

#endif
