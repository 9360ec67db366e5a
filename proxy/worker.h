/* worker.h - one event loop with its own listening sockets and sessions. */
#ifndef MOAT_WORKER_H
#define MOAT_WORKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "addr.h"
#include "config.h"

struct ev_loop;
struct gen;
struct slots;
struct worker;

/*
 * A worker accepts on its own sockets (one per configured address; with
 * several workers, members of a SO_REUSEPORT group, listener.h) and runs
 * the sessions it accepted, on a loop and a thread of its own; the main
 * thread's loop keeps signals, reloads, the control socket and metrics,
 * so that none of them holds up a session.
 * Everything they share (policy, slots, events, metrics, generations) is
 * safe to use from any thread.
 *
 * Every function here is called by the main thread. Those that change a
 * running worker hand it a request through an ev_async; worker_apply
 * and worker_park wait until the worker has done it.
 */

/* One listening address as a worker should have it after a reload: fd is
 * its new socket (taken over), or -1 to keep the one it has for ap. */
struct worker_listen {
	struct addr_port ap;
	const struct cfg_listener *lc;	/* in the generation applied */
	int fd;
};

/* Called whenever a worker may have finished draining, on the worker's
 * thread: it should only wake the main loop (ev_async_send), where
 * worker_finished() says which workers are done. */
typedef void worker_done_fn(void *arg);

/*
 * Worker id; slots is the shared session cap. NULL when out of memory or
 * when no loop can be made.
 */
struct worker *worker_new(unsigned id, struct slots *slots,
    worker_done_fn *done, void *arg);
/* Starts the worker's thread (after privileges are dropped:
 * threads keep the credentials they start with). 0 or -1 with errno. */
int worker_start(struct worker *w);
/* Joins the thread (after worker_finished), closes whatever is left and
 * frees. */
void worker_free(struct worker *w);

/*
 * Makes w's listening sockets ls[0..n-1] (others are closed) and g the
 * generation its new sessions start under (w takes a reference). Waits
 * until done. Sessions keep the generation they started with.
 */
void worker_apply(struct worker *w, struct gen *g,
    const struct worker_listen *ls, size_t n);
/* Holds a running worker between its callbacks until worker_unpark, so
 * that the main thread may replace what workers read without a lock
 * (the firewall writer of a reload). Waits until it is held. */
void worker_park(struct worker *w);
void worker_unpark(struct worker *w);

/* Stops accepting (its sockets are closed when this returns); the worker
 * finishes when its last session ends. */
void worker_drain(struct worker *w);
/* Ends every session now (drain deadline, second signal). */
void worker_close_all(struct worker *w);
/* Ends w's open sessions from addr, which was just banned, soon after on
 * w's own loop. Unlike the rest, any thread may call it (a ban is made
 * wherever a session trips a limit). */
void worker_kick(struct worker *w, const uint8_t addr[16]);

/* Drained and without sessions (its loop returned). */
bool worker_finished(struct worker *w);

/* Sessions open now (as of the worker's last loop iteration, once it
 * runs) and connections accepted since start. */
size_t worker_sessions(struct worker *w);
uint64_t worker_accepted(struct worker *w);

#endif
