/* test_syslogsink.c - unit tests for the syslog client that never waits. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "syslogsink.h"

#define PRI (LOG_MAIL | LOG_NOTICE)

static char dir[] = "/tmp/moat-syslogsink-XXXXXX";
static char path[sizeof(dir) + 8];

/* A syslog daemon's end: a datagram socket bound at path. */
static int
reader_open(void)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
	if (fd == -1 || bind(fd, (struct sockaddr *)&sun, sizeof(sun)) == -1) {
		perror("reader");
		exit(1);
	}
	return fd;
}

/* syslog-ng's end when it binds /dev/log as a stream: a listener. */
static int
stream_listen(void)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
	if (fd == -1 || bind(fd, (struct sockaddr *)&sun, sizeof(sun)) == -1 ||
	    listen(fd, 8) == -1) {
		perror("stream reader");
		exit(1);
	}
	return fd;
}

/* What a stream reader has read: len bytes at p, room for cap. */
struct rbuf {
	char *p;
	size_t cap;
};

/* Appends what the stream holds now to buf (grown as needed); the new
 * length. */
static size_t
stream_drain(int fd, struct rbuf *rb, size_t have)
{
	char **buf = &rb->p;
	size_t cap = rb->cap;
	ssize_t n;

	for (;;) {
		if (cap - have < 65536) {
			cap = have + 1024 * 1024;
			if ((*buf = realloc(*buf, cap)) == NULL) {
				perror("realloc");
				exit(1);
			}
		}
		rb->cap = cap;
		n = recv(fd, *buf + have, cap - have, MSG_DONTWAIT);
		if (n <= 0)
			return have;
		have += (size_t)n;
	}
}

static void
reader_close(int fd)
{
	close(fd);
	unlink(path);
}

/* Receives one datagram without waiting, NUL-terminated; its length or
 * -1 when none waits. */
static ssize_t
reader_recv(int fd, char *buf, size_t len)
{
	ssize_t n = recv(fd, buf, len - 1, MSG_DONTWAIT);

	if (n >= 0)
		buf[n] = '\0';
	return n;
}

static void
test_absent(void)
{
	struct syslog_sink *sink = syslog_sink_open(path, "moat", PRI);

	/* No daemon is not an error at open, and costs a drop per send. */
	CHECK(sink != NULL);
	errno = 0;
	CHECK_INT_EQ(syslog_sink_send(sink, "x", 1), -1);
	CHECK_INT_EQ(errno, ENOENT);
	syslog_sink_close(sink);
}

static void
test_format(void)
{
	struct syslog_sink *sink;
	char buf[256], mon[4], tag[64], want[64];
	int fd = reader_open(), day, h, m, s, pri, off = 0;

	sink = syslog_sink_open(path, "moat", PRI);
	CHECK_INT_EQ(syslog_sink_send(sink, "{\"event\":\"reject\"}", 18), 0);
	CHECK(reader_recv(fd, buf, sizeof(buf)) > 0);
	/* "<21>Dec  3 14:09:54 moat[123]: ...": day padded with a space. */
	CHECK_INT_EQ(sscanf(buf, "<%d>%3s %2d %2d:%2d:%2d %63s %n", &pri, mon,
	    &day, &h, &m, &s, tag, &off), 7);
	CHECK_INT_EQ(pri, 21);
	CHECK(strstr("JanFebMarAprMayJunJulAugSepOctNovDec", mon) != NULL);
	CHECK(buf[7] == ' ' && (buf[8] == ' ' || (buf[8] >= '1' &&
	    buf[8] <= '3')) && buf[9] >= '0' && buf[9] <= '9');
	snprintf(want, sizeof(want), "moat[%ld]:", (long)getpid());
	CHECK_STR_EQ(tag, want);
	CHECK_STR_EQ(buf + off, "{\"event\":\"reject\"}");
	syslog_sink_close(sink);
	reader_close(fd);
}

static void
test_lagging_reader(void)
{
	struct syslog_sink *sink;
	char buf[256];
	int fd = reader_open(), i, sent = 0, rc = 0;

	/* A reader that does not read: its queue fills and sends come
	 * back at once with EAGAIN instead of waiting for it. */
	sink = syslog_sink_open(path, "moat", PRI);
	for (i = 0; i < 100000 && (rc = syslog_sink_send(sink, "m", 1)) == 0;
	    i++)
		sent++;
	CHECK_INT_EQ(rc, -1);
	CHECK(errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS);
	CHECK(sent > 0 && sent < 100000);
	/* Once it reads, messages go again on the same socket. */
	while (reader_recv(fd, buf, sizeof(buf)) > 0)
		sent--;
	CHECK_INT_EQ(sent, 0);
	CHECK_INT_EQ(syslog_sink_send(sink, "n", 1), 0);
	CHECK(reader_recv(fd, buf, sizeof(buf)) > 0);
	syslog_sink_close(sink);
	reader_close(fd);
}

static void
test_restart(void)
{
	struct timespec pause = { 1, 100 * 1000 * 1000 };
	struct syslog_sink *sink;
	char buf[256];
	size_t n;
	int fd = reader_open();

	sink = syslog_sink_open(path, "moat", PRI);
	CHECK_INT_EQ(syslog_sink_send(sink, "a", 1), 0);
	/* The daemon restarts: a new socket at the same path. A connect is
	 * tried at most once a second; after that the message is sent on a
	 * new connection, not lost. */
	reader_close(fd);
	fd = reader_open();
	nanosleep(&pause, NULL);
	CHECK_INT_EQ(syslog_sink_send(sink, "b", 1), 0);
	CHECK(reader_recv(fd, buf, sizeof(buf)) > 0);
	n = strlen(buf);
	CHECK(n > 3 && strcmp(buf + n - 3, ": b") == 0);
	syslog_sink_close(sink);
	reader_close(fd);
}

static void
test_stream(void)
{
	struct sockaddr_un peer;
	socklen_t plen = sizeof(peer);
	struct syslog_sink *sink;
	struct rbuf rb = { NULL, 0 };
	char tag[64];
	size_t have;
	int lfd = stream_listen(), fd, pri, off = 0;

	/* A stream /dev/log: each message ends with a NUL, as syslog(3)
	 * ends them there. */
	sink = syslog_sink_open(path, "moat", PRI);
	CHECK_INT_EQ(syslog_sink_send(sink, "{\"event\":\"ban\"}", 15), 0);
	CHECK_INT_EQ(syslog_sink_send(sink, "two", 3), 0);
	fd = accept(lfd, (struct sockaddr *)&peer, &plen);
	CHECK(fd != -1);
	have = stream_drain(fd, &rb, 0);
	CHECK(have > 0 && rb.p[have - 1] == '\0');
	CHECK_INT_EQ(sscanf(rb.p, "<%d>%*3s %*2d %*2d:%*2d:%*2d %63s %n", &pri,
	    tag, &off), 2);
	CHECK_INT_EQ(pri, 21);
	CHECK_STR_EQ(rb.p + off, "{\"event\":\"ban\"}");
	off = (int)strlen(rb.p) + 1;
	CHECK((size_t)off < have);
	CHECK(strlen(rb.p + off) > 5 && strcmp(rb.p + off + strlen(rb.p + off) -
	    5, ": two") == 0);
	CHECK_INT_EQ((size_t)off + strlen(rb.p + off) + 1, have);
	free(rb.p);
	syslog_sink_close(sink);
	close(fd);
	reader_close(lfd);
}

/* Whether rb.p (have bytes) holds exactly want whole messages, each a
 * header and then len copies of one letter, ended by a NUL, and then
 * one whose text is "end". */
static int
stream_whole(const char *buf, size_t have, int want, size_t len)
{
	const char *p = buf, *end = buf + have, *body, *nul;
	int got = 0;
	size_t i;

	while (p < end) {
		if ((nul = memchr(p, '\0', (size_t)(end - p))) == NULL)
			return 0;
		if (nul + 1 == end)
			return got == want && nul - p > 5 &&
			    memcmp(nul - 5, ": end", 5) == 0;
		body = nul - len;
		if (body < p + 3 || memcmp(body - 2, ": ", 2) != 0)
			return 0;
		for (i = 0; i < len; i++)
			if (body[i] != body[0])
				return 0;
		got++;
		p = nul + 1;
	}
	return 0;
}

static void
test_stream_lagging_reader(void)
{
	enum { LEN = 150 * 1024 };
	struct timespec pause = { 0, 10 * 1000 * 1000 };
	struct syslog_sink *sink;
	struct rbuf rb = { NULL, 0 };
	char *msg = malloc(LEN);
	size_t have;
	int lfd = stream_listen(), fd, i, sent = 0, rc = 0;

	/* Messages larger than what the socket takes at once: a daemon that
	 * does not read gets part of one, and the rest goes first when the
	 * next is sent, so it never sees two run together or half a one. */
	CHECK(msg != NULL);
	sink = syslog_sink_open(path, "moat", PRI);
	fd = accept(lfd, NULL, NULL);
	for (i = 0; i < 1000; i++) {
		memset(msg, 'a' + i % 26, LEN);
		if ((rc = syslog_sink_send(sink, msg, LEN)) != 0)
			break;
		sent++;
	}
	CHECK_INT_EQ(rc, -1);
	CHECK(errno == EAGAIN || errno == EWOULDBLOCK);
	CHECK(sent > 0 && sent < 1000);
	/* The daemon reads again; what is owed goes out before "end". */
	have = stream_drain(fd, &rb, 0);
	for (i = 0; i < 100 && syslog_sink_send(sink, "end", 3) != 0; i++) {
		nanosleep(&pause, NULL);
		have = stream_drain(fd, &rb, have);
	}
	CHECK(i < 100);
	for (i = 0; i < 100 && (have < 4 || memcmp(rb.p + have - 4, "end",
	    4) != 0); i++) {
		nanosleep(&pause, NULL);
		have = stream_drain(fd, &rb, have);
	}
	CHECK(stream_whole(rb.p, have, sent, LEN));
	free(rb.p);
	free(msg);
	syslog_sink_close(sink);
	close(fd);
	reader_close(lfd);
}

static void
test_stream_restart(void)
{
	struct timespec pause = { 1, 100 * 1000 * 1000 };
	struct syslog_sink *sink;
	struct rbuf rb = { NULL, 0 };
	size_t have;
	int lfd = stream_listen(), fd;

	sink = syslog_sink_open(path, "moat", PRI);
	CHECK_INT_EQ(syslog_sink_send(sink, "a", 1), 0);
	fd = accept(lfd, NULL, NULL);
	/* The daemon restarts, as a datagram reader this time: the sink
	 * finds the broken stream, connects again and sends there. */
	close(fd);
	reader_close(lfd);
	lfd = reader_open();
	nanosleep(&pause, NULL);
	CHECK_INT_EQ(syslog_sink_send(sink, "b", 1), 0);
	have = stream_drain(lfd, &rb, 0);
	CHECK(have > 3 && memcmp(rb.p + have - 3, ": b", 3) == 0);
	free(rb.p);
	syslog_sink_close(sink);
	reader_close(lfd);
}

static void
test_path_too_long(void)
{
	char lpath[200];
	struct syslog_sink *sink;

	memset(lpath, 'a', sizeof(lpath) - 1);
	lpath[0] = '/';
	lpath[sizeof(lpath) - 1] = '\0';
	sink = syslog_sink_open(lpath, "moat", PRI);
	CHECK(sink != NULL);
	CHECK_INT_EQ(syslog_sink_send(sink, "x", 1), -1);
	CHECK_INT_EQ(errno, ENAMETOOLONG);
	syslog_sink_close(sink);
}

int
main(void)
{
	if (mkdtemp(dir) == NULL) {
		perror("mkdtemp");
		return 1;
	}
	snprintf(path, sizeof(path), "%s/log", dir);
	test_absent();
	test_format();
	test_lagging_reader();
	test_restart();
	test_stream();
	test_stream_lagging_reader();
	test_stream_restart();
	test_path_too_long();
	syslog_sink_close(NULL);
	rmdir(dir);
	return check_report("test_syslogsink");
}
