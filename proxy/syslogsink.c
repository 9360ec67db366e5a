/* syslogsink.c - a syslog client that drops a message rather than wait. */
#include "syslogsink.h"

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "mono.h"

/*
 * glibc's syslog(3) sends on a blocking socket, so a syslog daemon that
 * lags (its queue holds net.unix.max_dgram_qlen datagrams, 10 by default)
 * stops the caller until it reads. Events are sent with
 * every worker waiting on one mutex; this client never waits: what the
 * daemon cannot take now is dropped, and the caller counts it.
 */

/*
 * Most daemons (journald, rsyslog, busybox) bind /dev/log as a datagram
 * socket; syslog-ng may bind it as a stream. On a stream, messages are
 * ended by a NUL, as glibc's syslog(3) ends them there, so any daemon
 * that serves glibc's clients reads these. A stream can take part of a
 * message; its tail is kept and sent before the next one, so a daemon
 * that lags never gets two messages run together.
 */

/* A connect is tried at most this often, in milliseconds. */
#define SYSLOG_SINK_RETRY_MS 1000

struct syslog_sink {
	struct sockaddr_un sun;
	socklen_t sunlen;	/* 0: the path does not fit in sun_path */
	int fd;			/* -1: not connected */
	bool stream;		/* fd is a SOCK_STREAM socket */
	int pri;
	int err;		/* why the last connect failed */
	uint64_t tried_ms;	/* the last connect (open makes the first) */
	size_t taglen;
	char tag[64];		/* "ident[pid]: " */
	char *tail;		/* stream: what is owed of the last message */
	size_t tail_len;
};

/* Forgets the connection and any part of a message owed on it. */
static void
sink_disconnect(struct syslog_sink *sink)
{
	if (sink->fd != -1)
		close(sink->fd);
	sink->fd = -1;
	free(sink->tail);
	sink->tail = NULL;
	sink->tail_len = 0;
}

/* A connected socket of the given type at the sink's path, or -1 with
 * errno. A unix connect neither waits nor completes later: a stream
 * listener whose backlog is full answers EAGAIN at once. */
static int
sink_socket(const struct syslog_sink *sink, int type)
{
	int fd = socket(AF_UNIX, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd == -1)
		return -1;
	while (connect(fd, (const struct sockaddr *)&sink->sun,
	    sink->sunlen) == -1) {
		int e = errno;

		if (e == EINTR)
			continue;
		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

static int
sink_connect(struct syslog_sink *sink)
{
	int fd;

	sink->tried_ms = mono_ms();
	if (sink->sunlen == 0) {
		sink->err = ENAMETOOLONG;
		return -1;
	}
	sink->stream = false;
	if ((fd = sink_socket(sink, SOCK_DGRAM)) == -1 && errno ==
	    EPROTOTYPE) {
		/* The daemon listens on a stream socket. */
		sink->stream = true;
		fd = sink_socket(sink, SOCK_STREAM);
	}
	if (fd == -1) {
		sink->err = errno;
		return -1;
	}
	sink->fd = fd;
	return 0;
}

static bool
sink_may_connect(const struct syslog_sink *sink)
{
	return mono_ms() - sink->tried_ms >= SYSLOG_SINK_RETRY_MS;
}

/* Errors after which the socket is worth connecting again: the daemon
 * went away (and may be back under the same path). */
static bool
sink_gone(int err)
{
	return err == ECONNREFUSED || err == ENOTCONN || err == ECONNRESET ||
	    err == EPIPE || err == ENOENT;
}

/*
 * Sends what is owed of the last message on a stream. 0 when nothing is
 * owed any more, -1 with errno (EAGAIN when the daemon has not read
 * enough yet).
 */
static int
sink_flush_tail(struct syslog_sink *sink)
{
	ssize_t w;

	while (sink->tail_len > 0) {
		w = send(sink->fd, sink->tail, sink->tail_len, MSG_DONTWAIT |
		    MSG_NOSIGNAL);
		if (w == -1 && errno == EINTR)
			continue;
		if (w == -1)
			return -1;
		memmove(sink->tail, sink->tail + w, sink->tail_len -
		    (size_t)w);
		sink->tail_len -= (size_t)w;
	}
	free(sink->tail);
	sink->tail = NULL;
	return 0;
}

/* Keeps the part of iov past its first sent bytes, to be sent before
 * the next message. 0, or -1 with errno when out of memory. */
static int
sink_keep_tail(struct syslog_sink *sink, const struct iovec *iov, int n,
    size_t sent)
{
	size_t total = 0, off = 0;
	int i;

	for (i = 0; i < n; i++)
		total += iov[i].iov_len;
	if ((sink->tail = malloc(total - sent)) == NULL)
		return -1;
	for (i = 0; i < n; i++) {
		size_t skip = sent > iov[i].iov_len ? iov[i].iov_len : sent;

		memcpy(sink->tail + off, (const char *)iov[i].iov_base + skip,
		    iov[i].iov_len - skip);
		off += iov[i].iov_len - skip;
		sent -= skip;
	}
	sink->tail_len = off;
	return 0;
}

/* One message: header, tag and msg (and a NUL on a stream). 0, or -1
 * with errno. */
static int
sink_put(struct syslog_sink *sink, const char *msg, size_t len)
{
	static const char months[12][4] = { "Jan", "Feb", "Mar", "Apr",
	    "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
	static const char nul = '\0';
	struct iovec iov[4];
	struct msghdr mh;
	struct tm tm;
	time_t now = time(NULL);
	char head[80];
	ssize_t w;
	size_t total;
	int n;

	if (sink->tail_len > 0 && sink_flush_tail(sink) == -1)
		return -1;
	if (localtime_r(&now, &tm) == NULL)
		memset(&tm, 0, sizeof(tm));
	/* "Dec  3": the day is padded with a space, as RFC 3164 has it. */
	n = snprintf(head, sizeof(head), "<%d>%s %2d %02d:%02d:%02d ",
	    sink->pri, months[tm.tm_mon >= 0 && tm.tm_mon < 12 ?
	    tm.tm_mon : 0], tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
	if (n < 0 || (size_t)n >= sizeof(head)) {
		errno = EINVAL;
		return -1;
	}
	iov[0].iov_base = head;
	iov[0].iov_len = (size_t)n;
	iov[1].iov_base = sink->tag;
	iov[1].iov_len = sink->taglen;
	/* sendmsg() only reads it; struct iovec has no const member. */
	iov[2].iov_base = (void *)(uintptr_t)msg;
	iov[2].iov_len = len;
	iov[3].iov_base = (void *)(uintptr_t)&nul;
	iov[3].iov_len = 1;
	memset(&mh, 0, sizeof(mh));
	mh.msg_iov = iov;
	mh.msg_iovlen = sink->stream ? 4 : 3;
	do
		w = sendmsg(sink->fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
	while (w == -1 && errno == EINTR);
	if (w == -1)
		return -1;
	total = (size_t)n + sink->taglen + len + (sink->stream ? 1 : 0);
	if ((size_t)w < total && sink_keep_tail(sink, iov,
	    (int)mh.msg_iovlen, (size_t)w) == -1) {
		/* The daemon has half a message and would run the next one
		 * into it: start afresh. */
		sink_disconnect(sink);
		errno = ENOMEM;
		return -1;
	}
	return 0;
}

struct syslog_sink *
syslog_sink_open(const char *path, const char *ident, int pri)
{
	struct syslog_sink *sink = calloc(1, sizeof(*sink));
	int n;

	if (sink == NULL)
		return NULL;
	sink->fd = -1;
	sink->pri = pri;
	sink->sun.sun_family = AF_UNIX;
	if (strlen(path) < sizeof(sink->sun.sun_path)) {
		memcpy(sink->sun.sun_path, path, strlen(path) + 1);
		sink->sunlen = (socklen_t)(offsetof(struct sockaddr_un,
		    sun_path) + strlen(path) + 1);
	}
	n = snprintf(sink->tag, sizeof(sink->tag), "%s[%ld]: ", ident,
	    (long)getpid());
	sink->taglen = n < 0 ? 0 : (size_t)n < sizeof(sink->tag) ?
	    (size_t)n : sizeof(sink->tag) - 1;
	/* Load the time zone now, while /etc/localtime is surely readable;
	 * localtime_r() does not look at it again. */
	tzset();
	(void)sink_connect(sink);
	return sink;
}

int
syslog_sink_send(struct syslog_sink *sink, const char *msg, size_t len)
{
	int attempt, err = 0;

	for (attempt = 0; attempt < 2; attempt++) {
		if (sink->fd == -1 && (!sink_may_connect(sink) ||
		    sink_connect(sink) == -1)) {
			errno = sink->err;
			return -1;
		}
		if (sink_put(sink, msg, len) == 0)
			return 0;
		/* EAGAIN, EWOULDBLOCK, ENOBUFS: the reader lags, and this
		 * client exists so as not to wait for it. */
		err = errno;
		if (!sink_gone(err))
			return -1;
		sink_disconnect(sink);
		sink->err = err;
	}
	errno = err;
	return -1;
}

void
syslog_sink_close(struct syslog_sink *sink)
{
	if (sink == NULL)
		return;
	sink_disconnect(sink);
	free(sink);
}
