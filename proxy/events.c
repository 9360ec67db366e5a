/* events.c - block events as JSON Lines, for operators and moatctl tail. */
#include "events.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include <ev.h>

#include "addr.h"
#include "log.h"
#include "mono.h"
#include "syslogsink.h"

/* Long enough for every field at its longest; a longer line is dropped. */
#define EVENT_LINE_MAX 2048

/*
 * What the log has said about a sink's trouble: a warning when writes
 * start failing and a line when they work again, but at most one warning
 * in EVENTS_SAY_MS. A reader that keeps falling behind and catching up
 * (journald in a flood) would otherwise cost two log lines for every few
 * events; the counters hold every loss meanwhile.
 */
#define EVENTS_SAY_MS 10000

struct said {
	bool failing;		/* a warning said, and no recovery since */
	uint64_t ms;		/* the last warning's time, 0: none yet */
	/* For status, said or not: from the first failure to the next
	 * success. */
	bool down;
	int64_t down_since;	/* Unix seconds */
	char why[128];		/* the last failure's error */
};

struct event_log {
	char *path;		/* NULL: no file; "-": stdout */
	int fd;			/* -1 when there is no file */
	bool sock;		/* fd is a socket: sent with MSG_DONTWAIT */
	struct syslog_sink *syslog;	/* NULL: events not sent to syslog */
	struct said failing;	/* writes to the file fail */
	struct said syslog_failing;	/* sends to syslog fail */
	bool torn;		/* a partial line lacks its newline */
	bool lost;		/* the path names another file: said once */
};

/*
 * Sessions on every worker thread emit events. One mutex covers the sink
 * (current and the file behind it), the counters and the subscriber
 * table; a line is written in one write(2) under it, so lines from
 * different threads never mix and the counters stay exact.
 */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct event_log *current;
/* dropped and written count the file's lines (with no file, written
 * counts what syslog took); syslog_dropped counts events that syslog did
 * not take, file or not. */
static uint64_t dropped, written, syslog_dropped;

/* Events for a follower on another thread wait here, copied, until its
 * loop runs; past this many the newest are not shown to it. */
#define EVENTS_QUEUE_MAX 4096

/* An event and everything it points at, in one allocation. */
struct queued {
	struct queued *next;
	struct event ev;
	uint8_t ip[16];
	uint64_t ms;
	size_t len;		/* of the line at the start of text */
	char text[];		/* the line, then the strings of ev */
};

struct sub {
	bool used;
	events_sub_fn *fn;
	void *arg;
	struct ev_loop *loop;	/* fn runs here, on thread */
	pthread_t thread;
	ev_async wake;
	struct queued *head, **tail;
	size_t n;
	uint64_t lost;		/* not shown since the last delivery */
};

static struct sub subs[EVENTS_SUBSCRIBERS];

/* A follower on the emitting thread, called once mu is released. */
struct direct {
	events_sub_fn *fn;
	void *arg;
};

#define container_of(p, type, member) \
	((type *)(void *)((char *)(p) - offsetof(type, member)))

/* Takes sub's queue (call with mu held). */
static struct queued *
sub_take(struct sub *sb, uint64_t *lost)
{
	struct queued *q = sb->head;

	sb->head = NULL;
	sb->tail = &sb->head;
	sb->n = 0;
	*lost = sb->lost;
	sb->lost = 0;
	return q;
}

/* Hands queued events to fn in order, on the subscriber's thread. */
static void
sub_deliver(events_sub_fn *fn, void *arg, struct queued *q, uint64_t lost)
{
	struct queued *next;

	if (lost > 0)
		log_warnx("events: %llu events were not shown to moatctl tail "
		    "(its queue was full)", (unsigned long long)lost);
	/* The queue was full when events were lost: they came after the
	 * last one queued. */
	for (; q != NULL; q = next) {
		next = q->next;
		fn(arg, next == NULL ? lost : 0, &q->ev, q->ms, q->text,
		    q->len);
		free(q);
	}
}

static void
sub_wake_cb(struct ev_loop *loop, ev_async *w, int revents)
{
	struct sub *sb = container_of(w, struct sub, wake);
	struct queued *q;
	events_sub_fn *fn;
	uint64_t lost;
	void *arg;

	(void)loop, (void)revents;
	pthread_mutex_lock(&mu);
	fn = sb->fn;
	arg = sb->arg;
	q = sub_take(sb, &lost);
	pthread_mutex_unlock(&mu);
	sub_deliver(fn, arg, q, lost);
}

int
events_subscribe(struct ev_loop *loop, events_sub_fn *fn, void *arg)
{
	struct sub *sb = NULL;
	size_t i;

	pthread_mutex_lock(&mu);
	for (i = 0; i < EVENTS_SUBSCRIBERS && sb == NULL; i++)
		if (!subs[i].used)
			sb = &subs[i];
	if (sb == NULL) {
		pthread_mutex_unlock(&mu);
		return -1;
	}
	memset(sb, 0, sizeof(*sb));
	sb->fn = fn;
	sb->arg = arg;
	sb->loop = loop;
	sb->thread = pthread_self();
	sb->tail = &sb->head;
	ev_async_init(&sb->wake, sub_wake_cb);
	ev_async_start(loop, &sb->wake);
	sb->used = true;
	pthread_mutex_unlock(&mu);
	return 0;
}

void
events_unsubscribe(events_sub_fn *fn, void *arg)
{
	struct queued *q = NULL;
	struct sub *sb = NULL;
	uint64_t lost = 0;
	size_t i;

	pthread_mutex_lock(&mu);
	for (i = 0; i < EVENTS_SUBSCRIBERS && sb == NULL; i++)
		if (subs[i].used && subs[i].fn == fn && subs[i].arg == arg)
			sb = &subs[i];
	if (sb != NULL) {
		q = sub_take(sb, &lost);
		sb->used = false;
	}
	pthread_mutex_unlock(&mu);
	if (sb == NULL)
		return;
	/* No thread sends to it any more (sends happen under mu, on used
	 * slots only); what was queued still reaches the follower. */
	ev_async_stop(sb->loop, &sb->wake);
	sub_deliver(fn, arg, q, lost);
}

/* Appends s (may be NULL) to q's text at *off; returns the copy. */
static const char *
queued_str(struct queued *q, size_t *off, const char *s)
{
	char *p;
	size_t n;

	if (s == NULL)
		return NULL;
	n = strlen(s) + 1;
	p = q->text + *off;
	memcpy(p, s, n);
	*off += n;
	return p;
}

/* A copy of ev and its line that outlives the caller; NULL when out of
 * memory. */
static struct queued *
queued_new(const struct event *ev, uint64_t ms, const char *line, size_t len)
{
	const char *strs[] = { ev->event, ev->listener, ev->reason,
	    ev->country, ev->firewall, ev->session, ev->detail };
	struct queued *q;
	size_t i, need = len + 1, off;

	for (i = 0; i < sizeof(strs) / sizeof(strs[0]); i++)
		if (strs[i] != NULL)
			need += strlen(strs[i]) + 1;
	if ((q = malloc(sizeof(*q) + need)) == NULL)
		return NULL;
	q->next = NULL;
	q->ev = *ev;
	q->ms = ms;
	q->len = len;
	memcpy(q->text, line, len);
	q->text[len] = '\0';
	off = len + 1;
	if (ev->ip != NULL) {
		memcpy(q->ip, ev->ip, 16);
		q->ev.ip = q->ip;
	}
	q->ev.event = queued_str(q, &off, ev->event);
	q->ev.listener = queued_str(q, &off, ev->listener);
	q->ev.reason = queued_str(q, &off, ev->reason);
	q->ev.country = queued_str(q, &off, ev->country);
	q->ev.firewall = queued_str(q, &off, ev->firewall);
	q->ev.session = queued_str(q, &off, ev->session);
	q->ev.detail = queued_str(q, &off, ev->detail);
	return q;
}

/*
 * Opens the events file for appending. Non-blocking, because a FIFO may
 * stand there (a log shipper's): without O_NONBLOCK the open waits for a
 * reader and a write waits while the reader lags, and either would stop
 * every worker that emits. With it, a FIFO nobody reads fails here
 * (ENXIO) and a full one costs dropped events; a regular file is
 * unaffected.
 */
static int
events_file_open(const char *path, const char **why)
{
	int fd;

	fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_NONBLOCK |
	    O_CLOEXEC | O_NOCTTY, 0640);
	if (fd == -1)
		*why = errno == ENXIO ? "a FIFO that no process reads" :
		    strerror(errno);
	return fd;
}

/*
 * Standard output as the events sink ("-"). Lines are written under mu,
 * so a reader that stops reading a pipe or a socket there would stop
 * every worker, as a FIFO's would: a pipe is opened again as a file
 * description of moat's own, non-blocking (fd 1's, which stderr may
 * share, stays as it was), and a socket (journald's stream) is sent to
 * with MSG_DONTWAIT. A lagging reader then costs dropped events. A
 * terminal or a file is written as it is.
 */
static int
events_stdout(bool *sock)
{
	struct stat st;
	int fd;

	*sock = false;
	if (fstat(STDOUT_FILENO, &st) == -1)
		return STDOUT_FILENO;
	if (S_ISSOCK(st.st_mode))
		*sock = true;
	else if (S_ISFIFO(st.st_mode) && (fd = open("/proc/self/fd/1",
	    O_WRONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY)) != -1)
		return fd;
	return STDOUT_FILENO;
}

struct event_log *
event_log_open(const char *path, bool use_syslog, char *errbuf,
    size_t errlen)
{
	struct event_log *log = calloc(1, sizeof(*log));
	const char *why;

	if (log == NULL) {
		snprintf(errbuf, errlen, "out of memory");
		return NULL;
	}
	log->fd = -1;
	if (use_syslog && (log->syslog = syslog_sink_open(SYSLOG_SINK_DEVLOG,
	    "moat", LOG_MAIL | LOG_NOTICE)) == NULL) {
		snprintf(errbuf, errlen, "out of memory");
		free(log);
		return NULL;
	}
	if (path != NULL) {
		if ((log->path = strdup(path)) == NULL) {
			snprintf(errbuf, errlen, "out of memory");
			syslog_sink_close(log->syslog);
			free(log);
			return NULL;
		}
		if (strcmp(path, "-") == 0)
			log->fd = events_stdout(&log->sock);
		else if ((log->fd = events_file_open(path, &why)) == -1) {
			snprintf(errbuf, errlen, "events file %s: %s", path,
			    why);
			syslog_sink_close(log->syslog);
			free(log->path);
			free(log);
			return NULL;
		}
	}
	return log;
}

/* Writes go to fd from now on. */
static void
use_file(struct event_log *log, int fd)
{
	pthread_mutex_lock(&mu);
	close(log->fd);
	log->fd = fd;
	/* log->failing stays: a full disk is often cured by rotating the
	 * file away, and the new file's first line must say it works. */
	log->torn = false;	/* the old file's partial line stays there */
	pthread_mutex_unlock(&mu);
}

int
event_log_reopen(struct event_log *log)
{
	const char *why;
	int fd;

	if (log == NULL || log->path == NULL || strcmp(log->path, "-") == 0)
		return 0;
	if ((fd = events_file_open(log->path, &why)) == -1) {
		log_warnx("events: cannot reopen %s, still writing to the old "
		    "file: %s", log->path, why);
		return -1;
	}
	use_file(log, fd);
	return 0;
}

void
event_log_follow(struct event_log *log)
{
	struct stat open_st, path_st;
	const char *why;
	int fd;

	if (log == NULL || log->path == NULL || strcmp(log->path, "-") == 0 ||
	    log->fd == -1)
		return;
	/* A FIFO or a device is the operator's own arrangement. Only this
	 * thread replaces log->fd, so it is read here without mu. */
	if (fstat(log->fd, &open_st) == -1 || !S_ISREG(open_st.st_mode))
		return;
	if (stat(log->path, &path_st) == 0 &&
	    path_st.st_dev == open_st.st_dev &&
	    path_st.st_ino == open_st.st_ino) {
		log->lost = false;
		return;
	}
	if ((fd = events_file_open(log->path, &why)) == -1) {
		if (!log->lost)
			log_warnx("events: %s was moved or deleted, and a new "
			    "one cannot be made (%s); events go to the old "
			    "file (nowhere, if it was deleted) until it can",
			    log->path, why);
		log->lost = true;
		return;
	}
	log_info("events: %s was moved or deleted; writing to a new one",
	    log->path);
	use_file(log, fd);
	log->lost = false;
}

void
event_log_close(struct event_log *log)
{
	if (log == NULL)
		return;
	pthread_mutex_lock(&mu);
	if (current == log)
		current = NULL;
	pthread_mutex_unlock(&mu);
	if (log->fd > STDOUT_FILENO)
		close(log->fd);
	syslog_sink_close(log->syslog);
	free(log->path);
	free(log);
}

void
events_set(struct event_log *log)
{
	pthread_mutex_lock(&mu);
	current = log;
	pthread_mutex_unlock(&mu);
}

struct event_log *
events_get(void)
{
	struct event_log *log;

	pthread_mutex_lock(&mu);
	log = current;
	pthread_mutex_unlock(&mu);
	return log;
}

/* One of the counters, read under mu. */
static uint64_t
counter_read(const uint64_t *counter)
{
	uint64_t n;

	pthread_mutex_lock(&mu);
	n = *counter;
	pthread_mutex_unlock(&mu);
	return n;
}

uint64_t
events_dropped(void)
{
	return counter_read(&dropped);
}

uint64_t
events_syslog_dropped(void)
{
	return counter_read(&syslog_dropped);
}

uint64_t
events_written(void)
{
	return counter_read(&written);
}

static bool
down_read(const struct said *sd, int64_t *since, char *why, size_t len)
{
	if (!sd->down)
		return false;
	*since = sd->down_since;
	snprintf(why, len, "%s", sd->why);
	return true;
}

bool
events_file_failing(int64_t *since, char *why, size_t len)
{
	bool down;

	pthread_mutex_lock(&mu);
	down = current != NULL && current->fd != -1 &&
	    down_read(&current->failing, since, why, len);
	pthread_mutex_unlock(&mu);
	return down;
}

bool
events_syslog_failing(int64_t *since, char *why, size_t len)
{
	bool down;

	pthread_mutex_lock(&mu);
	down = current != NULL && current->syslog != NULL &&
	    down_read(&current->syslog_failing, since, why, len);
	pthread_mutex_unlock(&mu);
	return down;
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

/* Whether to warn of a failure (why) now; then the next success is
 * said. */
static bool
say_fail(struct said *sd, const char *why)
{
	uint64_t now = mono_ms();

	if (!sd->down) {
		sd->down = true;
		sd->down_since = (int64_t)time(NULL);
	}
	snprintf(sd->why, sizeof(sd->why), "%s", why);

	if (sd->failing || (sd->ms != 0 && now - sd->ms < EVENTS_SAY_MS))
		return false;
	sd->failing = true;
	sd->ms = now;
	return true;
}

/* Whether to say that a sink works again (its failure was said). */
static bool
say_ok(struct said *sd)
{
	bool was = sd->failing;

	sd->failing = false;
	sd->down = false;
	return was;
}

static void
event_drop(struct event_log *log, const char *why)
{
	dropped++;
	if (say_fail(&log->failing, why))
		log_warnx("events: cannot write to %s: %s; moat keeps serving "
		    "and counts dropped events", log->path, why);
}

/*
 * Queues a copy for each follower on another thread and wakes its loop;
 * returns how many run on this one (their fn and arg in direct). Called
 * with mu held.
 */
static size_t
emit_queue(const struct event *ev, uint64_t ms, const char *line, size_t len,
    struct direct *direct)
{
	pthread_t self = pthread_self();
	struct queued *q;
	size_t i, nd = 0;

	for (i = 0; i < EVENTS_SUBSCRIBERS; i++) {
		struct sub *sb = &subs[i];

		if (!sb->used)
			continue;
		if (pthread_equal(sb->thread, self)) {
			direct[nd].fn = sb->fn;
			direct[nd++].arg = sb->arg;
			continue;
		}
		if (sb->n >= EVENTS_QUEUE_MAX ||
		    (q = queued_new(ev, ms, line, len)) == NULL) {
			sb->lost++;
			continue;
		}
		*sb->tail = q;
		sb->tail = &q->next;
		sb->n++;
		ev_async_send(sb->loop, &sb->wake);
	}
	return nd;
}

static bool
subs_any(void)
{
	size_t i;

	for (i = 0; i < EVENTS_SUBSCRIBERS; i++)
		if (subs[i].used)
			return true;
	return false;
}

/* One write(2) to log's file, never waiting on a socket; EINTR retried. */
static ssize_t
sink_put(const struct event_log *log, const void *p, size_t n)
{
	ssize_t w;

	do
		w = log->sock ? send(log->fd, p, n, MSG_DONTWAIT |
		    MSG_NOSIGNAL) : write(log->fd, p, n);
	while (w == -1 && errno == EINTR);
	return w;
}

/*
 * Sends one formatted line (n bytes, newline included) to syslog without
 * waiting: one that syslog cannot take now is counted, and the log says
 * once that sending fails and once that it works again. Returns whether
 * it was sent. Called with mu held.
 */
static bool
syslog_write(struct event_log *log, const char *line, int n)
{
	char why[96];
	int err;

	if (syslog_sink_send(log->syslog, line, (size_t)n - 1) == 0) {
		if (say_ok(&log->syslog_failing))
			log_warnx("events: syslog (%s) takes events again "
			    "(%llu not sent to it so far)", SYSLOG_SINK_DEVLOG,
			    (unsigned long long)syslog_dropped);
		return true;
	}
	err = errno;
	syslog_dropped++;
	snprintf(why, sizeof(why), "%s (%s)", err == EAGAIN ||
	    err == EWOULDBLOCK || err == ENOBUFS ? "is not keeping up" :
	    "cannot be reached", strerror(err));
	if (say_fail(&log->syslog_failing, why))
		log_warnx("events: syslog (%s) %s: events not sent to it are "
		    "counted", SYSLOG_SINK_DEVLOG, why);
	return false;
}

/* Writes one formatted line (n bytes, newline included) to log. Called
 * with mu held. */
static void
sink_write(struct event_log *log, const char *line, int n)
{
	bool sent = false;
	ssize_t w;

	if (log->syslog != NULL)
		sent = syslog_write(log, line, n);
	if (log->fd == -1) {
		if (sent)
			written++;
		return;
	}
	/* A line cut short on a full disk whose newline could not be
	 * written either: end it first, or this event would be glued to
	 * it and both lost to a reader. */
	if (log->torn) {
		w = sink_put(log, "\n", 1);
		if (w != 1) {
			event_drop(log, w == -1 ? strerror(errno) :
			    "short write (disk full?)");
			return;
		}
		log->torn = false;
	}
	/* One write per line: O_APPEND keeps lines whole between writers,
	 * and a reader never sees half an event. */
	w = sink_put(log, line, (size_t)n);
	if (w == n) {
		if (say_ok(&log->failing))
			log_warnx("events: writing to %s again (%llu events "
			    "dropped so far)", log->path,
			    (unsigned long long)dropped);
		written++;
		return;
	}
	if (w >= 0) {
		/* A partial line would corrupt the stream for readers: cut
		 * it off again (the offset is the end of what this write
		 * appended), or where the file cannot be cut, finish it with
		 * a newline so at least the next line parses. */
		off_t end = w > 0 ? lseek(log->fd, 0, SEEK_CUR) : 0;

		if (w > 0 && (end < (off_t)w ||
		    ftruncate(log->fd, end - (off_t)w) == -1) &&
		    sink_put(log, "\n", 1) != 1)
			log->torn = true;
		event_drop(log, "short write (disk full?)");
	} else
		event_drop(log, errno == EAGAIN ? "its reader is not keeping "
		    "up" : strerror(errno));
}

void
events_emit(const struct event *ev)
{
	struct direct direct[EVENTS_SUBSCRIBERS];
	struct event_log *log;
	char line[EVENT_LINE_MAX];
	uint64_t ms;
	size_t i, nd;
	int n;

	pthread_mutex_lock(&mu);
	log = current;
	if (!subs_any() && (log == NULL || (log->fd == -1 &&
	    log->syslog == NULL))) {
		pthread_mutex_unlock(&mu);
		return;
	}
	ms = now_unix_ms();
	n = event_format(ev, ms, line, sizeof(line));
	if (n < 0) {
		dropped++;
		pthread_mutex_unlock(&mu);
		return;
	}
	nd = emit_queue(ev, ms, line, (size_t)n, direct);
	if (log != NULL && (log->fd != -1 || log->syslog != NULL))
		sink_write(log, line, n);
	pthread_mutex_unlock(&mu);
	/* Followers on this thread get it at once, as before there were
	 * workers; fn may touch its own loop, so not under mu. */
	for (i = 0; i < nd; i++)
		direct[i].fn(direct[i].arg, 0, ev, ms, line, (size_t)n);
}
