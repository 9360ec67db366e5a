/* events.c - block events as JSON Lines, for operators and moatctl tail. */
#include "events.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "addr.h"
#include "log.h"

/* Long enough for every field at its longest; a longer line is dropped. */
#define EVENT_LINE_MAX 2048

struct event_log {
	char *path;		/* NULL: no file; "-": stdout */
	int fd;			/* -1 when there is no file */
	bool syslog;
	bool failing;		/* the last write failed: said once */
	bool torn;		/* a partial line lacks its newline */
};

static struct event_log *current;
static uint64_t dropped, written;

static struct {
	events_sub_fn *fn;
	void *arg;
} subs[EVENTS_SUBSCRIBERS];
static size_t nsubs;

int
events_subscribe(events_sub_fn *fn, void *arg)
{
	if (nsubs == EVENTS_SUBSCRIBERS)
		return -1;
	subs[nsubs].fn = fn;
	subs[nsubs].arg = arg;
	nsubs++;
	return 0;
}

void
events_unsubscribe(events_sub_fn *fn, void *arg)
{
	size_t i;

	for (i = 0; i < nsubs; i++)
		if (subs[i].fn == fn && subs[i].arg == arg) {
			subs[i] = subs[--nsubs];
			return;
		}
}

struct event_log *
event_log_open(const char *path, bool use_syslog, char *errbuf,
    size_t errlen)
{
	struct event_log *log = calloc(1, sizeof(*log));

	if (log == NULL) {
		snprintf(errbuf, errlen, "out of memory");
		return NULL;
	}
	log->fd = -1;
	log->syslog = use_syslog;
	if (path != NULL) {
		if ((log->path = strdup(path)) == NULL) {
			snprintf(errbuf, errlen, "out of memory");
			free(log);
			return NULL;
		}
		if (strcmp(path, "-") == 0)
			log->fd = STDOUT_FILENO;
		else if ((log->fd = open(path, O_WRONLY | O_APPEND | O_CREAT |
		    O_CLOEXEC | O_NOCTTY, 0640)) == -1) {
			snprintf(errbuf, errlen, "events file %s: %s", path,
			    strerror(errno));
			free(log->path);
			free(log);
			return NULL;
		}
	}
	if (use_syslog)
		openlog("moat", LOG_PID | LOG_NDELAY, LOG_MAIL);
	return log;
}

int
event_log_reopen(struct event_log *log)
{
	int fd;

	if (log == NULL || log->path == NULL || log->fd == STDOUT_FILENO)
		return 0;
	fd = open(log->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC |
	    O_NOCTTY, 0640);
	if (fd == -1) {
		log_warn("events: cannot reopen %s, still writing to the old "
		    "file", log->path);
		return -1;
	}
	close(log->fd);
	log->fd = fd;
	log->failing = false;
	return 0;
}

void
event_log_close(struct event_log *log)
{
	if (log == NULL)
		return;
	if (current == log)
		current = NULL;
	if (log->fd > STDOUT_FILENO)
		close(log->fd);
	free(log->path);
	free(log);
}

void
events_set(struct event_log *log)
{
	current = log;
}

struct event_log *
events_get(void)
{
	return current;
}

uint64_t
events_dropped(void)
{
	return dropped;
}

uint64_t
events_written(void)
{
	return written;
}

/* Appends s as a JSON string. Control bytes are escaped and bytes above
 * 0x7e replaced: event fields may quote client input, and a line must
 * stay one valid UTF-8 JSON object whatever a client sent. */
static size_t
json_str(char *buf, size_t off, size_t len, const char *s)
{
	static const char hex[] = "0123456789abcdef";

	if (off < len)
		buf[off] = '"';
	off++;
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		char esc[7];
		size_t n = 0, i;

		if (c == '"' || c == '\\') {
			esc[n++] = '\\';
			esc[n++] = (char)c;
		} else if (c < 0x20) {
			esc[n++] = '\\';
			esc[n++] = 'u';
			esc[n++] = '0';
			esc[n++] = '0';
			esc[n++] = hex[c >> 4];
			esc[n++] = hex[c & 15];
		} else if (c > 0x7e)
			esc[n++] = '?';
		else
			esc[n++] = (char)c;
		for (i = 0; i < n; i++, off++)
			if (off < len)
				buf[off] = esc[i];
	}
	if (off < len)
		buf[off] = '"';
	return off + 1;
}

static size_t
json_raw(char *buf, size_t off, size_t len, const char *s)
{
	for (; *s; s++, off++)
		if (off < len)
			buf[off] = *s;
	return off;
}

static size_t
json_key_str(char *buf, size_t off, size_t len, const char *key,
    const char *val)
{
	off = json_raw(buf, off, len, ",\"");
	off = json_raw(buf, off, len, key);
	off = json_raw(buf, off, len, "\":");
	if (val == NULL)
		return json_raw(buf, off, len, "null");
	return json_str(buf, off, len, val);
}

static size_t
json_key_int(char *buf, size_t off, size_t len, const char *key, int64_t v)
{
	char num[32];

	if (v < 0)
		return off;
	snprintf(num, sizeof(num), "%lld", (long long)v);
	off = json_raw(buf, off, len, ",\"");
	off = json_raw(buf, off, len, key);
	off = json_raw(buf, off, len, "\":");
	return json_raw(buf, off, len, num);
}

int
event_format(const struct event *ev, uint64_t unix_ms, char *buf, size_t len)
{
	char ts[64], ip[64];
	struct tm tm;
	time_t secs = (time_t)(unix_ms / 1000);
	size_t off = 0;

	gmtime_r(&secs, &tm);
	snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%03uZ",
	    tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
	    tm.tm_min, tm.tm_sec, (unsigned)(unix_ms % 1000));
	off = json_raw(buf, off, len, "{\"ts\":\"");
	off = json_raw(buf, off, len, ts);
	off = json_raw(buf, off, len, "\"");
	off = json_key_str(buf, off, len, "event",
	    ev->event ? ev->event : "unknown");
	off = json_key_str(buf, off, len, "ip",
	    ev->ip ? addr_v6_str(ev->ip, ip, sizeof(ip)) : NULL);
	off = json_key_str(buf, off, len, "listener", ev->listener);
	off = json_key_str(buf, off, len, "reason", ev->reason);
	if (ev->country != NULL)
		off = json_key_str(buf, off, len, "country", ev->country);
	off = json_key_int(buf, off, len, "count", ev->count);
	off = json_key_int(buf, off, len, "window_s", ev->window_s);
	off = json_key_int(buf, off, len, "ban_s", ev->ban_s);
	if (ev->firewall != NULL)
		off = json_key_str(buf, off, len, "firewall", ev->firewall);
	if (ev->session != NULL)
		off = json_key_str(buf, off, len, "session", ev->session);
	if (ev->detail != NULL)
		off = json_key_str(buf, off, len, "detail", ev->detail);
	off = json_raw(buf, off, len, "}\n");
	if (off >= len)
		return -1;
	buf[off] = '\0';
	return (int)off;
}

static uint64_t
now_unix_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void
event_drop(struct event_log *log, const char *why)
{
	dropped++;
	if (!log->failing)
		log_warnx("events: cannot write to %s: %s; moat keeps serving "
		    "and counts dropped events", log->path, why);
	log->failing = true;
}

void
events_emit(const struct event *ev)
{
	struct event_log *log = current;
	char line[EVENT_LINE_MAX];
	uint64_t ms;
	size_t i;
	int n;
	ssize_t w;

	if (nsubs == 0 && (log == NULL || (log->fd == -1 && !log->syslog)))
		return;
	ms = now_unix_ms();
	n = event_format(ev, ms, line, sizeof(line));
	if (n < 0) {
		dropped++;
		return;
	}
	for (i = 0; i < nsubs; i++)
		subs[i].fn(subs[i].arg, ev, ms, line, (size_t)n);
	if (log == NULL || (log->fd == -1 && !log->syslog))
		return;
	if (log->syslog)
		syslog(LOG_NOTICE, "%.*s", n - 1, line);
	if (log->fd == -1) {
		written++;
		return;
	}
	/* A line cut short on a full disk whose newline could not be
	 * written either: end it first, or this event would be glued to
	 * it and both lost to a reader. */
	if (log->torn) {
		do
			w = write(log->fd, "\n", 1);
		while (w == -1 && errno == EINTR);
		if (w != 1) {
			event_drop(log, w == -1 ? strerror(errno) :
			    "short write (disk full?)");
			return;
		}
		log->torn = false;
	}
	/* One write per line: O_APPEND keeps lines whole between writers,
	 * and a reader never sees half an event. */
	do
		w = write(log->fd, line, (size_t)n);
	while (w == -1 && errno == EINTR);
	if (w == n) {
		if (log->failing)
			log_info("events: writing to %s again (%llu events "
			    "dropped so far)", log->path,
			    (unsigned long long)dropped);
		log->failing = false;
		written++;
		return;
	}
	if (w >= 0) {
		/* A partial line would corrupt the stream for readers;
		 * finish it with a newline so the next line parses. */
		if (write(log->fd, "\n", 1) != 1)
			log->torn = true;
		event_drop(log, "short write (disk full?)");
	} else
		event_drop(log, strerror(errno));
}
