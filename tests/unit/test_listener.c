/* test_listener.c - every queued connection is handed over, and accept4 is
 * never asked to find the queue empty. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <netinet/in.h>

#include <ev.h>

#include "addr.h"
#include "check.h"
#include "listener.h"

/*
 * Linked with --wrap=accept4: counts the listener's calls, and those that
 * found nothing to accept, which cost Linux a socket and a file made and
 * freed again (listener.c).
 */
int __real_accept4(int, struct sockaddr *, socklen_t *, int);
int __wrap_accept4(int, struct sockaddr *, socklen_t *, int);
static unsigned calls, empty;

int
__wrap_accept4(int fd, struct sockaddr *sa, socklen_t *len, int flags)
{
	int r = __real_accept4(fd, sa, len, flags);

	calls++;
	if (r == -1 && errno == EAGAIN)
		empty++;
	return r;
}

static unsigned handed;

static void
on_accept(void *arg, struct listener *l, int fd, const struct sockaddr *peer,
    socklen_t peerlen)
{
	(void)arg;
	(void)l;
	(void)peerlen;
	CHECK(peer->sa_family == AF_INET);
	handed++;
	close(fd);
}

/* n connections to port, established (so queued) when this returns. */
static void
connect_n(uint16_t port, int *fds, unsigned n)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	unsigned i;

	sin.sin_port = htons(port);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	for (i = 0; i < n; i++) {
		if ((fds[i] = socket(AF_INET, SOCK_STREAM, 0)) == -1 ||
		    connect(fds[i], (struct sockaddr *)&sin, sizeof(sin)) == -1)
			abort();
	}
}

/* Runs loop until want connections were handed over (or 200 rounds). */
static void
run_until(struct ev_loop *loop, unsigned want)
{
	int i;

	for (i = 0; i < 200 && handed < want; i++)
		ev_run(loop, EVRUN_ONCE | EVRUN_NOWAIT);
}

/* A burst of n queued at once, then one alone, then n again. */
static void
test_burst(unsigned n)
{
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
	struct sockaddr_in sin;
	struct addr_port ap;
	struct listener *l;
	socklen_t len = sizeof(sin);
	int fd, *clients;
	unsigned i;

	if (loop == NULL || (clients = calloc(n, sizeof(*clients))) == NULL)
		abort();
	/* Port 0 (the kernel picks one), which addr_port_parse() refuses. */
	memset(&ap, 0, sizeof(ap));
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	memcpy(&ap.ss, &sin, sizeof(sin));
	ap.len = sizeof(sin);
	CHECK_INT_EQ(listener_bind(&ap, &fd, 1), 0);
	if (getsockname(fd, (struct sockaddr *)&sin, &len) == -1)
		abort();
	l = listener_start(loop, &ap, fd, on_accept, NULL);
	CHECK(l != NULL);
	calls = empty = handed = 0;

	connect_n(ntohs(sin.sin_port), clients, n);
	run_until(loop, n);
	CHECK_INT_EQ(handed, n);
	CHECK_INT_EQ(calls, n);
	CHECK_INT_EQ(empty, 0);
	for (i = 0; i < n; i++)
		close(clients[i]);

	connect_n(ntohs(sin.sin_port), clients, 1);
	run_until(loop, n + 1);
	CHECK_INT_EQ(handed, n + 1);
	CHECK_INT_EQ(calls, n + 1);
	CHECK_INT_EQ(empty, 0);
	close(clients[0]);

	connect_n(ntohs(sin.sin_port), clients, n);
	run_until(loop, 2 * n + 1);
	CHECK_INT_EQ(handed, 2 * n + 1);
	CHECK_INT_EQ(calls, 2 * n + 1);
	CHECK_INT_EQ(empty, 0);
	for (i = 0; i < n; i++)
		close(clients[i]);

	/* Nothing queued: nothing asked. */
	run_until(loop, 2 * n + 2);
	CHECK_INT_EQ(calls, 2 * n + 1);

	listener_close(l);
	ev_loop_destroy(loop);
	free(clients);
}

int
main(void)
{
	test_burst(1);
	test_burst(10);
	/* More than one callback takes (ACCEPTS_PER_EVENT). */
	test_burst(150);
	return check_report("listener");
}
