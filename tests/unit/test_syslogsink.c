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
	test_path_too_long();
	syslog_sink_close(NULL);
	rmdir(dir);
	return check_report("test_syslogsink");
}
