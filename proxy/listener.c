/* listener.c - listening sockets that hand accepted connections over. */
#include "listener.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <ev.h>

#include "acceptpause.h"
#include "log.h"

#define LISTEN_BACKLOG 511
#define ACCEPTS_PER_EVENT 64	/* then let other watchers run */

struct listener {
	ev_io io;
	struct acceptpause pause;	/* when descriptors run out */
	struct ev_loop *loop;
	int fd;
	struct addr_port ap;
	const struct cfg_listener *lc;
	listener_accept_fn *fn;
	void *arg;
	char name[ADDR_PORT_STRLEN + 16];	/* "listener ADDR" */
};

#define container_of(p, type, member) \
	((type *)(void *)((char *)(p) - offsetof(type, member)))

/*
 * Whether l's queue holds another connection. accept4 would tell, but
 * at a price when the answer is no: Linux makes the new socket and its
 * file before it looks at the queue, then frees them (4.5 us a call
 * against 0.2 for this poll, measured on the benchmark machine), and
 * moat, when it keeps up, finds the queue empty after most accepts.
 */
static bool
listener_pending(const struct listener *l)
{
	struct pollfd p = { .fd = l->fd, .events = POLLIN };

	return poll(&p, 1, 0) == 1;
}

static void
listener_accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct listener *l = container_of(w, struct listener, io);
	struct sockaddr_storage ss;
	socklen_t sslen;
	int fd, i;

	(void)revents;
	for (i = 0; i < ACCEPTS_PER_EVENT; i++) {
		sslen = sizeof(ss);
		fd = accept4(l->fd, (struct sockaddr *)&ss, &sslen,
		    SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd == -1) {
			if (acceptpause_failed(loop, &l->pause))
				return;
			continue;
		}
		l->fn(l->arg, l, fd, (struct sockaddr *)&ss, sslen);
		if (!listener_pending(l)) {
			acceptpause_drained(&l->pause);
			return;
		}
	}
}

/* A socket bound to ap, listening unless probe; -1 with errno set on
 * failure, which the caller says with the listener's name. */
static int
listener_socket(const struct addr_port *ap, bool reuseport, bool probe)
{
	struct linger reset = { .l_onoff = 1, .l_linger = 0 };
	int fd, on = 1, saved;

	fd = socket(ap->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK |
	    SOCK_CLOEXEC, 0);
	if (fd == -1)
		return -1;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) == -1)
		goto fail;
	if (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on,
	    sizeof(on)) == -1)
		goto fail;
	if (ap->ss.ss_family == AF_INET6 && setsockopt(fd, IPPROTO_IPV6,
	    IPV6_V6ONLY, &on, sizeof(on)) == -1)
		goto fail;
	/*
	 * Replies are small and interactive: no Nagle delay. Accepted
	 * sockets inherit the option, which saves a call per connection.
	 */
	if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on)) == -1)
		goto fail;
	/*
	 * Close with a reset: what session.c wants for the repeats of a
	 * flood from a banned address, which it then closes without a call
	 * of its own (about 4 % of a reject's CPU). It clears it on every
	 * other connection before using it (session_start()).
	 */
	if (setsockopt(fd, SOL_SOCKET, SO_LINGER, &reset,
	    sizeof(reset)) == -1)
		goto fail;
	if (bind(fd, (const struct sockaddr *)&ap->ss, ap->len) == -1)
		goto fail;
	if (!probe && listen(fd, LISTEN_BACKLOG) == -1)
		goto fail;
	return fd;
fail:
	saved = errno;
	close(fd);
	errno = saved;
	return -1;
}

int
listener_bind(const struct addr_port *ap, int *fds, size_t n)
{
	size_t i;
	int fd, saved;

	if (n == 1) {
		fds[0] = listener_socket(ap, false, false);
		return fds[0] == -1 ? -1 : 0;
	}
	/*
	 * SO_REUSEPORT would let any process of our uid join the group and
	 * take a share of the connections. A bind without it fails while
	 * anyone listens on the address, so this probe turns a second moat
	 * (or anything else there) into the plain "address in use" of a
	 * single socket before the group is made.
	 */
	if ((fd = listener_socket(ap, false, true)) == -1)
		return -1;
	close(fd);
	for (i = 0; i < n; i++)
		if ((fds[i] = listener_socket(ap, true, false)) == -1) {
			saved = errno;
			while (i > 0)
				close(fds[--i]);
			errno = saved;
			return -1;
		}
	return 0;
}

const char *
listener_hint(int err)
{
	switch (err) {
	case EADDRINUSE:
		return " (another program listens there; ss -ltnp shows which)";
	case EADDRNOTAVAIL:
		return " (no interface of this host has that address)";
	default:
		return "";
	}
}

struct listener *
listener_start(struct ev_loop *loop, const struct addr_port *ap, int fd,
    listener_accept_fn *fn, void *arg)
{
	struct listener *l;

	if ((l = calloc(1, sizeof(*l))) == NULL) {
		log_warnx("listener: out of memory");
		close(fd);
		return NULL;
	}
	l->loop = loop;
	l->fd = fd;
	l->ap = *ap;
	l->fn = fn;
	l->arg = arg;
	snprintf(l->name, sizeof(l->name), "listener ");
	addr_port_str(ap, l->name + strlen(l->name),
	    sizeof(l->name) - strlen(l->name));
	ev_io_init(&l->io, listener_accept_cb, fd, EV_READ);
	acceptpause_init(&l->pause, &l->io, l->name);
	ev_io_start(loop, &l->io);
	return l;
}

void
listener_close(struct listener *l)
{
	if (l == NULL)
		return;
	ev_io_stop(l->loop, &l->io);
	acceptpause_stop(l->loop, &l->pause);
	close(l->fd);
	free(l);
}

void
listener_set_config(struct listener *l, const struct cfg_listener *lc)
{
	l->lc = lc;
}

const struct cfg_listener *
listener_config(const struct listener *l)
{
	return l->lc;
}

const struct addr_port *
listener_addr(const struct listener *l)
{
	return &l->ap;
}
