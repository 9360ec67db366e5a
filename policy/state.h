/* state.h - the state file: bans and repeat counts that survive restarts. */
#ifndef MOAT_STATE_H
#define MOAT_STATE_H

#include <stddef.h>
#include <stdint.h>

#include "ban.h"

/*
 * Format: text, one record per line, fields separated by one space.
 *
 *   moat-state 1
 *   # comments and blank lines are allowed after the header
 *   ban 192.0.2.1 1767225600000 3 auth
 *   ban 2001:db8::1 1767225600000 1 manual
 *   end 2
 *
 * The first line names the format and its version; "ban" lines carry the
 * address, the absolute expiry in milliseconds since the Unix epoch (UTC,
 * so the time left survives a restart; an expiry in the past is a record
 * kept only for its repeat count), the number of bans so far and the
 * reason of the last one; "end N" closes the file and counts the ban lines,
 * so a truncated file is noticed even when it was cut at a line end.
 *
 * Errors: a missing or unknown header rejects the whole file (it is not
 * ours, or not a version we understand). Otherwise every bad line is
 * skipped and reported as "NAME:LINE: message", and the good lines are kept:
 * losing a few bans is better than losing all of them, and a bad line can
 * never produce a ban longer than what a good line says. An unterminated
 * last line is treated as cut off and skipped; a missing or wrong "end"
 * line is reported. At most STATE_MAX_REPORTS lines are reported, then one
 * line with the number of the others.
 */

#define STATE_VERSION 1
#define STATE_MAX_REPORTS 10
/*
 * A larger file is refused unread (a state_file pointing at the wrong
 * thing): the larger of STATE_MAX_BYTES and what a full table of the
 * configured ban.max_entries can write, STATE_LINE_MAX bytes a record
 * (~1M bans take about 60 MB).
 */
#define STATE_MAX_BYTES (256u * 1024 * 1024)
#define STATE_LINE_MAX 128

struct state_ban {
	uint8_t addr[16];
	uint64_t expiry_unix_ms;
	uint32_t count;
	enum ban_reason reason;
};

/* Receives each good ban line in file order. */
typedef void state_ban_fn(void *arg, const struct state_ban *b);
/* Receives one diagnostic line, without a newline. */
typedef void state_report_fn(void *arg, const char *line);

/*
 * Parses len bytes (not NUL-terminated; NUL bytes are an error on their
 * line). Pure: no I/O, no global state; safe to fuzz. name is used in
 * diagnostics only. Returns the number of good ban lines, or -1 if the
 * file was rejected as a whole (then ban was never called).
 */
long state_parse(const char *name, const char *buf, size_t len,
    state_ban_fn *ban, state_report_fn *report, void *arg);

/*
 * Renders every record of t into a malloc'd buffer (*len bytes, also
 * NUL-terminated), converting monotonic expiries with the pair of clocks
 * (now_ms monotonic, wall_ms Unix milliseconds read at the same moment).
 * NULL when out of memory.
 */
char *state_format(const struct ban_table *t, uint64_t now_ms,
    uint64_t wall_ms, size_t *len);

/*
 * Writes the records of t to path atomically: a temporary file in the same
 * directory, fsync, rename over path, fsync of the directory; a crash leaves
 * the old file or the new one, never a mix. Blocking I/O: call it from a
 * place that may stall for a disk flush (after bans change, debounced, and
 * at shutdown), not per connection. Something other than a regular file
 * at path (a FIFO, a socket) is never replaced. Returns 0, or -1 with a
 * message naming the file in err.
 */
int state_write(const char *path, const struct ban_table *t, uint64_t now_ms,
    uint64_t wall_ms, char *err, size_t errlen);

/* The same for bytes already rendered by state_format (so a caller can
 * render under its lock and write outside it). */
int state_write_buf(const char *path, const char *buf, size_t len,
    char *err, size_t errlen);

/*
 * Reads path into t (records are restored with ban_restore). A missing file
 * is no error (the first start); one that is not a regular file is
 * reported and left alone, never waited on. Temporary files that saves left beside
 * path (PATH.tmpXXXXXX, moat killed before the rename) are removed first
 * and reported. Returns the number of records t holds afterwards, or -1
 * when the file could not be read or was rejected; diagnostics go to report
 * either way. The monotonic expiry is now_ms + (expiry - wall_ms); one that
 * lies further back than the monotonic clock's start is clamped to 0, and
 * more than BAN_MAX_MS left is cut to that (and reported). Records whose
 * ban ended longer ago than they are remembered are skipped; past
 * ban.max_entries the table drops records as it does for new bans, and
 * how many is reported.
 */
long state_read(const char *path, struct ban_table *t, uint64_t now_ms,
    uint64_t wall_ms, state_report_fn *report, void *arg);

/*
 * Where the monotonic clock of the ban table's caller should start, at
 * least: 2^42 ms, some 139 years. Right after a boot CLOCK_MONOTONIC is
 * small, and a ban that ended before it could only be restored as ended
 * at 0, the boot; saved again, its end moved to the boot, so on a host
 * that reboots more often than ban.forget_after an offender was never
 * forgotten. From this base any past within 139 years fits.
 */
#define STATE_CLOCK_BASE_MS (1ULL << 42)

#endif
