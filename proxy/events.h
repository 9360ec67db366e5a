/* events.h - block events as JSON Lines, for operators and moatctl tail. */
#ifndef MOAT_EVENTS_H
#define MOAT_EVENTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/*
 * One event. Unknown fields stay NULL (strings) or negative (numbers) and
 * are left out of the line. Every line carries ts (RFC 3339, UTC,
 * milliseconds), event, ip, listener and reason, as DESIGN.md promises.
 */
struct event {
	const char *event;	/* "reject", "ban", "unban", "auth_fail", ... */
	const uint8_t *ip;	/* 16-byte form (IPv4-mapped for IPv4) */
	const char *listener;
	const char *reason;
	const char *country;
	int64_t count;
	int64_t window_s;
	int64_t ban_s;
	const char *firewall;
	const char *session;	/* session id, to match log lines */
	const char *detail;	/* short free text; never secrets */
};

/*
 * Every name the event field takes, separated by ", "; moatctl tail
 * --event accepts these only, as any other would follow nothing.
 */
#define EVENT_NAMES "reject, ban, unban, auth_fail, tls_fail, smuggling, " \
    "protocol, firewall_error, firewall_recovered"

/* Whether name is one of EVENT_NAMES (moat and moatctl both ask). */
static inline bool
event_name_known(const char *name)
{
	const char *p = EVENT_NAMES;
	size_t n = strlen(name);

	if (n == 0 || strchr(name, ',') != NULL)
		return false;
	for (;;) {
		if (strncmp(p, name, n) == 0 &&
		    (p[n] == ',' || p[n] == '\0'))
			return true;
		if ((p = strchr(p, ',')) == NULL)
			return false;
		p += 2;		/* ", " */
	}
}

/* An event with every optional field unset. */
#define EVENT_INIT { .count = -1, .window_s = -1, .ban_s = -1 }

struct event_log;

/*
 * Opens the sink: a file appended to, "-" for stdout, or NULL for none;
 * syslog adds a copy of each line to syslog (LOG_MAIL, LOG_NOTICE), sent
 * to /dev/log without ever waiting (syslogsink.h). Returns NULL with a
 * message in errbuf when the file cannot be opened; a syslog daemon that
 * cannot be reached is not an error (it is tried again as events come).
 */
struct event_log *event_log_open(const char *path, bool syslog,
    char *errbuf, size_t errlen);
/* Reopens the file after logrotate moved it; 0 or -1 (old one kept). */
int event_log_reopen(struct event_log *log);
/*
 * Opens the file again when its path no longer names the file written
 * (deleted, or moved with no signal after it); a FIFO or device is left
 * alone. For a timer of the thread that also reopens and closes log.
 */
void event_log_follow(struct event_log *log);
/* How often the server calls event_log_follow(), in seconds. */
#define EVENTS_FOLLOW_S 5.
void event_log_close(struct event_log *log);

/*
 * The process-wide log that events_emit() writes to; the server sets it
 * at start and on reload. events_emit() may run on any thread (one mutex
 * keeps lines whole and counters exact); it never blocks for long and
 * never fails the caller: a line that cannot be written (full disk,
 * unwritable file) is counted as dropped, and the first drop is logged
 * once. An event that syslog does not take (its reader lags, or it
 * cannot be reached) is counted apart, by events_syslog_dropped(), and
 * said once in the log too. Either sink's trouble is warned of at most
 * once in 10 s, however often a lagging reader catches up meanwhile.
 *
 * events_written() counts lines written to the file, or with syslog and
 * no file, events sent to syslog; events_dropped() the file's lines lost.
 */
void events_set(struct event_log *log);
struct event_log *events_get(void);
void events_emit(const struct event *ev);
uint64_t events_dropped(void);
uint64_t events_written(void);
uint64_t events_syslog_dropped(void);
/*
 * Whether writing to the events file (sending to syslog) fails now, from
 * its first failure to the next success: since when, in Unix seconds,
 * and the last error into why. For status and metrics.
 */
bool events_file_failing(int64_t *since, char *why, size_t len);
bool events_syslog_failing(int64_t *since, char *why, size_t len);

/*
 * Live followers (moatctl tail). events_emit() hands each event to every
 * subscriber with its formatted line (JSON, newline included, len bytes)
 * and its time, whether or not a sink is open. fn always runs on the
 * thread that subscribed, on loop: at once when the event comes from that
 * thread, otherwise from a copy queued for it (ev_async) and handed over
 * in order when loop runs next; lost counts the events just after this
 * one that the queue had no room for (its loop was busy), whatever they
 * were, and is 0 otherwise. fn must not block and must not emit
 * events. At most EVENTS_SUBSCRIBERS at once; events_subscribe returns 0
 * or -1 (full). events_unsubscribe (on the same thread) first hands over
 * what is still queued.
 */
#define EVENTS_SUBSCRIBERS 4
struct ev_loop;
typedef void events_sub_fn(void *arg, uint64_t lost, const struct event *ev,
    uint64_t unix_ms, const char *line, size_t len);
int events_subscribe(struct ev_loop *loop, events_sub_fn *fn, void *arg);
void events_unsubscribe(events_sub_fn *fn, void *arg);

/*
 * Formats ev as one JSON object with a trailing newline into buf; returns
 * the length, or -1 if it did not fit. Pure: used by tests and tail.
 */
int event_format(const struct event *ev, uint64_t unix_ms, char *buf,
    size_t len);

#endif
