/* acceptpause.h - a listening socket that stops accepting for a moment
 * when descriptors or memory run out, instead of spinning. */
#ifndef MOAT_ACCEPTPAUSE_H
#define MOAT_ACCEPTPAUSE_H

#include <stdbool.h>
#include <stdint.h>

#include <ev.h>

/*
 * accept4() that fails for want of descriptors or memory leaves the
 * connection in the queue, so the socket stays readable and libev calls
 * again at once: a loop at full CPU with a log line each time. Instead
 * the watcher stops for half a second; the log says so once when it
 * starts, with a reminder a minute while it lasts, and once when the
 * queue is empty again. Caller-owned; name labels the log lines
 * ("listener 0.0.0.0:25", "metrics") and must outlive p.
 */
struct acceptpause {
	ev_io *io;		/* the watcher to pause */
	ev_timer timer;
	const char *name;
	bool starved;		/* since an accept failed, until the queue
				 * is empty again */
	uint64_t starved_ms;	/* since when */
	uint64_t told_ms;	/* when the log last said so */
};

void acceptpause_init(struct acceptpause *p, ev_io *io, const char *name);

/* accept4() failed with errno: false for what the caller retries at once
 * (EINTR, ECONNABORTED, EPROTO, EPERM); true when the caller returns: the
 * queue is empty (EAGAIN), or the watcher is paused and the log told.
 * Keeps errno. */
bool acceptpause_failed(struct ev_loop *loop, struct acceptpause *p);

/* The queue is empty (EAGAIN): says once that a shortage is over. */
void acceptpause_drained(struct acceptpause *p);

/* Before the watcher goes: no timer may start it again. */
void acceptpause_stop(struct ev_loop *loop, struct acceptpause *p);

#endif
