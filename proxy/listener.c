/* listener.c - listening sockets that hand accepted connections over. */
#include "listener.h"

#include <errno.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <ev.h>

#include "log.h"

#define LISTEN_BACKLOG 511
#define ACCEPTS_PER_EVENT 64	/* then let other watchers run */
#define ACCEPT_PAUSE 0.5	/* seconds without accepting after EMFILE */

struct listener {
	ev_io io;
	ev_timer pause;
	struct ev_loop *loop;
	int fd;
	struct addr_port ap;
	const struct cfg_listener *lc;
	listener_accept_fn *fn;
	void *arg;
};

#define container_of(p, type, member) \
	((type *)(void *)((char *)(p) - offsetof(type, member)))

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
			char name[ADDR_PORT_STRLEN];

			switch (errno) {
			case EAGAIN:
				return;
			case EINTR:
			case ECONNABORTED:
			case EPROTO:
			case EPERM:
				continue;
			case EMFILE:
			case ENFILE:
			case ENOBUFS:
			case ENOMEM:
				/*
				 * The pending connection stays in the queue
				 * and keeps the socket readable: stop
				 * watching for a moment instead of spinning.
				 */
				log_warn("listener %s: accept, pausing",
				    addr_port_str(&l->ap, name,
				    sizeof(name)));
				ev_io_stop(loop, &l->io);
				ev_timer_set(&l->pause, ACCEPT_PAUSE, 0.);
				ev_timer_start(loop, &l->pause);
				return;
			default:
				log_warn("listener %s: accept",
				    addr_port_str(&l->ap, name,
				    sizeof(name)));
				return;
			}
		}
		l->fn(l->arg, l, fd, (struct sockaddr *)&ss, sslen);
	}
}

static void
listener_pause_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct listener *l = container_of(w, struct listener, pause);

	(void)revents;
	ev_io_start(loop, &l->io);
}

struct listener *
listener_open(struct ev_loop *loop, const struct addr_port *ap,
    listener_accept_fn *fn, void *arg)
{
	struct listener *l;
	char name[ADDR_PORT_STRLEN];
	int fd, on = 1, saved;

	addr_port_str(ap, name, sizeof(name));
	fd = socket(ap->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK |
	    SOCK_CLOEXEC, 0);
	if (fd == -1) {
		log_warn("listener %s: socket", name);
		return NULL;
	}
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) == -1)
		goto fail;
	if (ap->ss.ss_family == AF_INET6 && setsockopt(fd, IPPROTO_IPV6,
	    IPV6_V6ONLY, &on, sizeof(on)) == -1)
		goto fail;
	if (bind(fd, (const struct sockaddr *)&ap->ss, ap->len) == -1)
		goto fail;
	if (listen(fd, LISTEN_BACKLOG) == -1)
		goto fail;
	if ((l = calloc(1, sizeof(*l))) == NULL)
		goto fail;
	l->loop = loop;
	l->fd = fd;
	l->ap = *ap;
	l->fn = fn;
	l->arg = arg;
	ev_io_init(&l->io, listener_accept_cb, fd, EV_READ);
	ev_timer_init(&l->pause, listener_pause_cb, ACCEPT_PAUSE, 0.);
	ev_io_start(loop, &l->io);
	log_info("listening on %s", name);
	return l;
fail:
	saved = errno;
	log_warn("listener %s", name);
	close(fd);
	errno = saved;
	return NULL;
}

void
listener_close(struct listener *l)
{
	char name[ADDR_PORT_STRLEN];

	if (l == NULL)
		return;
	ev_io_stop(l->loop, &l->io);
	ev_timer_stop(l->loop, &l->pause);
	close(l->fd);
	log_info("stopped listening on %s",
	    addr_port_str(&l->ap, name, sizeof(name)));
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
