/* acceptpause.c - a listening socket that stops accepting for a moment
 * when descriptors or memory run out, instead of spinning. */
#include "acceptpause.h"

#include <errno.h>
#include <poll.h>
#include <stddef.h>

#include "log.h"
#include "mono.h"

#define ACCEPT_PAUSE 0.5	/* seconds without accepting */
#define STARVED_REMIND_MS 60000	/* a reminder while that goes on */

#define container_of(p, type, member) \
	((type *)(void *)((char *)(p) - offsetof(type, member)))

/*
 * The pause is over. With no descriptor free, accept4() fails even on an
 * empty queue (the file comes first), so the last failure may have come
 * after the last connection was taken: then the socket is not readable
 * any more and only this can tell that the shortage is over.
 */
static void
acceptpause_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct acceptpause *p = container_of(w, struct acceptpause, timer);
	struct pollfd pf = { .fd = p->io->fd, .events = POLLIN };

	(void)revents;
	if (poll(&pf, 1, 0) == 0)
		acceptpause_drained(p);
	ev_io_start(loop, p->io);
}

void
acceptpause_init(struct acceptpause *p, ev_io *io, const char *name)
{
	p->io = io;
	p->name = name;
	p->starved = false;
	p->starved_ms = p->told_ms = 0;
	ev_timer_init(&p->timer, acceptpause_cb, ACCEPT_PAUSE, 0.);
}

bool
acceptpause_failed(struct ev_loop *loop, struct acceptpause *p)
{
	uint64_t now;
	int e = errno;

	switch (e) {
	case EAGAIN:
		acceptpause_drained(p);
		return true;
	case EINTR:
	case ECONNABORTED:
	case EPROTO:
	case EPERM:
		return false;
	default:
		break;
	}
	/*
	 * Closing sessions free a descriptor or two at a time, so single
	 * accepts succeed in between: the shortage is over only once the
	 * queue is empty.
	 */
	now = mono_ms();
	errno = e;		/* for log_warn */
	if (!p->starved) {
		log_warn("%s: accept, pausing until it works again", p->name);
		p->starved = true;
		p->starved_ms = p->told_ms = now;
	} else if (now - p->told_ms >= STARVED_REMIND_MS) {
		log_warn("%s: accept still failing after %llu s", p->name,
		    (unsigned long long)(now - p->starved_ms) / 1000);
		p->told_ms = now;
	}
	ev_io_stop(loop, p->io);
	ev_timer_set(&p->timer, ACCEPT_PAUSE, 0.);
	ev_timer_start(loop, &p->timer);
	errno = e;
	return true;
}

void
acceptpause_drained(struct acceptpause *p)
{
	if (!p->starved)
		return;
	log_warnx("%s: accepting again after %.1f s", p->name,
	    (double)(mono_ms() - p->starved_ms) / 1000.);
	p->starved = false;
}

void
acceptpause_stop(struct ev_loop *loop, struct acceptpause *p)
{
	ev_timer_stop(loop, &p->timer);
}
