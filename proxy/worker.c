/* worker.c - one event loop with its own listening sockets and sessions. */
#include "worker.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <ev.h>

#include "gen.h"
#include "listener.h"
#include "log.h"
#include "refusals.h"
#include "session.h"

/* What the main thread asks of a worker; under mu. */
struct job {
	uint64_t seq;		/* nonzero: the main thread waits for it */
	bool apply;
	struct gen *gen;	/* a reference for the worker */
	const struct worker_listen *ls;
	size_t nls;
	bool park;
	bool drain;
	bool close;
};

struct worker {
	unsigned id;
	struct ev_loop *loop;
	bool started;		/* the thread runs */
	pthread_t thread;
	struct session_list sessions;
	struct listener **ls;
	size_t nls;
	bool draining;
	ev_async wake;		/* a job is waiting */
	ev_async kick;		/* banned addresses are waiting */
	ev_prepare publish;	/* stores the session count for others */
	worker_done_fn *done;
	void *done_arg;

	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct job job;		/* under mu */
	uint64_t seq, acked;	/* under mu */
	bool held;		/* under mu: parked, until unparked */
	uint8_t (*kicks)[16];	/* under mu: addresses banned meanwhile */
	size_t nkicks, capkicks;	/* under mu */

	atomic_size_t nsessions;
	atomic_uint_fast64_t accepted;
	atomic_bool finished;
};

#define container_of(p, type, member) \
	((type *)(void *)((char *)(p) - offsetof(type, member)))

static bool
ap_eq(const struct addr_port *a, const struct addr_port *b)
{
	return a->len == b->len && memcmp(&a->ss, &b->ss, a->len) == 0;
}

static void
worker_accept(void *arg, struct listener *l, int fd,
    const struct sockaddr *peer, socklen_t peerlen)
{
	struct worker *w = arg;

	atomic_fetch_add_explicit(&w->accepted, 1, memory_order_relaxed);
	session_start(w->loop, &w->sessions, listener_config(l), fd,
	    peer, peerlen);
}

static void
worker_finish(struct worker *w)
{
	atomic_store(&w->finished, true);
	/* worker_main() tells the main thread once the loop has returned. */
	ev_break(w->loop, EVBREAK_ALL);
}

static void
worker_sessions_empty(void *arg)
{
	struct worker *w = arg;

	if (w->draining)
		worker_finish(w);
}

static void
worker_close_listeners(struct worker *w)
{
	size_t k;

	for (k = 0; k < w->nls; k++)
		listener_close(w->ls[k]);
	free(w->ls);
	w->ls = NULL;
	w->nls = 0;
}

/* On w's thread (or before it starts): the listening sockets of ls, g as
 * the generation. Takes over g's reference and every fd in ls. */
static void
worker_do_apply(struct worker *w, struct gen *g,
    const struct worker_listen *ls, size_t n)
{
	struct listener **nl = NULL, *l;
	size_t i, k, m = 0;

	if (n > 0 && (nl = calloc(n, sizeof(*nl))) == NULL) {
		log_warnx("worker %u: out of memory; it stops accepting",
		    w->id);
		for (i = 0; i < n; i++)
			if (ls[i].fd != -1)
				close(ls[i].fd);
		n = 0;
	}
	for (i = 0; i < n; i++) {
		l = NULL;
		if (ls[i].fd == -1) {
			for (k = 0; k < w->nls; k++)
				if (w->ls[k] != NULL && ap_eq(listener_addr(
				    w->ls[k]), &ls[i].ap)) {
					l = w->ls[k];
					w->ls[k] = NULL;
					break;
				}
		} else
			l = listener_start(w->loop, &ls[i].ap, ls[i].fd,
			    worker_accept, w);
		if (l == NULL)
			continue;
		listener_set_config(l, ls[i].lc);
		nl[m++] = l;
	}
	worker_close_listeners(w);
	w->ls = nl;
	w->nls = m;
	gen_unref(w->sessions.gen);
	w->sessions.gen = g;
}

static void
worker_do_drain(struct worker *w)
{
	w->draining = true;
	worker_close_listeners(w);
	if (w->sessions.n == 0)
		worker_finish(w);
}

/* Runs what the main thread asked, then acknowledges it. */
static void
worker_wake_cb(struct ev_loop *loop, ev_async *a, int revents)
{
	struct worker *w = container_of(a, struct worker, wake);
	struct job job;

	(void)loop, (void)revents;
	pthread_mutex_lock(&w->mu);
	job = w->job;
	memset(&w->job, 0, sizeof(w->job));
	pthread_mutex_unlock(&w->mu);
	if (job.apply)
		worker_do_apply(w, job.gen, job.ls, job.nls);
	if (job.close)
		session_list_close_all(&w->sessions, "shutdown");
	if (job.drain && !w->draining)
		worker_do_drain(w);
	pthread_mutex_lock(&w->mu);
	if (job.seq > w->acked)
		w->acked = job.seq;
	pthread_cond_broadcast(&w->cv);
	while (job.park && w->held)
		pthread_cond_wait(&w->cv, &w->mu);
	pthread_mutex_unlock(&w->mu);
}

/* Ends the sessions of the addresses banned since the last time, on w's
 * loop: any thread may ban, only this one may touch its sessions. */
static void
worker_kick_cb(struct ev_loop *loop, ev_async *a, int revents)
{
	struct worker *w = container_of(a, struct worker, kick);
	uint8_t (*v)[16];
	size_t i, n;

	(void)loop, (void)revents;
	pthread_mutex_lock(&w->mu);
	v = w->kicks;
	n = w->nkicks;
	w->kicks = NULL;
	w->nkicks = w->capkicks = 0;
	pthread_mutex_unlock(&w->mu);
	for (i = 0; i < n; i++)
		(void)session_list_close_addr(&w->sessions, v[i], "banned");
	free(v);
}

static void
worker_publish_cb(struct ev_loop *loop, ev_prepare *p, int revents)
{
	struct worker *w = container_of(p, struct worker, publish);

	(void)loop, (void)revents;
	atomic_store_explicit(&w->nsessions, w->sessions.n,
	    memory_order_relaxed);
}

struct worker *
worker_new(unsigned id, struct slots *slots, worker_done_fn *done,
    void *arg)
{
	struct worker *w;

	if ((w = calloc(1, sizeof(*w))) == NULL)
		return NULL;
	w->id = id;
	if ((w->loop = ev_loop_new(EVFLAG_AUTO)) == NULL) {
		free(w);
		return NULL;
	}
	w->done = done;
	w->done_arg = arg;
	w->sessions.slots = slots;
	w->sessions.on_empty = worker_sessions_empty;
	w->sessions.arg = w;
	pthread_mutex_init(&w->mu, NULL);
	pthread_cond_init(&w->cv, NULL);
	atomic_init(&w->nsessions, 0);
	atomic_init(&w->accepted, 0);
	atomic_init(&w->finished, false);
	ev_async_init(&w->kick, worker_kick_cb);
	ev_async_start(w->loop, &w->kick);
	ev_async_init(&w->wake, worker_wake_cb);
	ev_async_start(w->loop, &w->wake);
	ev_prepare_init(&w->publish, worker_publish_cb);
	ev_prepare_start(w->loop, &w->publish);
	return w;
}

static void *
worker_main(void *arg)
{
	struct worker *w = arg;

	refusals_worker(w->id);
	ev_run(w->loop, 0);
	/* Drained, or the process ends: nothing may outlive the loop. */
	w->sessions.on_empty = NULL;
	session_list_close_all(&w->sessions, "shutdown");
	worker_close_listeners(w);
	atomic_store_explicit(&w->nsessions, 0, memory_order_relaxed);
	atomic_store(&w->finished, true);
	w->done(w->done_arg);
	return NULL;
}

int
worker_start(struct worker *w)
{
	sigset_t all, old;
	int rc;

	/* Signals belong to the main thread's loop alone. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rc = pthread_create(&w->thread, NULL, worker_main, w);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0) {
		errno = rc;
		return -1;
	}
	w->started = true;
	return 0;
}

void
worker_free(struct worker *w)
{
	if (w == NULL)
		return;
	if (w->started)
		pthread_join(w->thread, NULL);
	w->sessions.on_empty = NULL;
	session_list_close_all(&w->sessions, "shutdown");
	worker_close_listeners(w);
	gen_unref(w->sessions.gen);
	ev_async_stop(w->loop, &w->kick);
	free(w->kicks);
	ev_async_stop(w->loop, &w->wake);
	ev_prepare_stop(w->loop, &w->publish);
	ev_loop_destroy(w->loop);
	pthread_cond_destroy(&w->cv);
	pthread_mutex_destroy(&w->mu);
	free(w);
}

/* Hands job to a running worker; waits for it when wait. */
static void
worker_post(struct worker *w, const struct job *job, bool wait)
{
	uint64_t seq = 0;

	pthread_mutex_lock(&w->mu);
	if (job->apply) {
		w->job.apply = true;
		w->job.gen = job->gen;
		w->job.ls = job->ls;
		w->job.nls = job->nls;
	}
	w->job.park |= job->park;
	w->job.drain |= job->drain;
	w->job.close |= job->close;
	if (wait)
		w->job.seq = seq = ++w->seq;
	pthread_mutex_unlock(&w->mu);
	ev_async_send(w->loop, &w->wake);
	if (!wait)
		return;
	pthread_mutex_lock(&w->mu);
	while (w->acked < seq)
		pthread_cond_wait(&w->cv, &w->mu);
	pthread_mutex_unlock(&w->mu);
}

void
worker_apply(struct worker *w, struct gen *g, const struct worker_listen *ls,
    size_t n)
{
	struct job job;

	g = gen_ref(g);
	if (!w->started) {
		worker_do_apply(w, g, ls, n);
		return;
	}
	memset(&job, 0, sizeof(job));
	job.apply = true;
	job.gen = g;
	/* The worker reads ls before it acknowledges: the caller's copy is
	 * enough, as worker_post waits. */
	job.ls = ls;
	job.nls = n;
	worker_post(w, &job, true);
}

void
worker_park(struct worker *w)
{
	struct job job;

	if (!w->started || atomic_load(&w->finished))
		return;
	pthread_mutex_lock(&w->mu);
	w->held = true;
	pthread_mutex_unlock(&w->mu);
	memset(&job, 0, sizeof(job));
	job.park = true;
	worker_post(w, &job, true);
}

void
worker_unpark(struct worker *w)
{
	pthread_mutex_lock(&w->mu);
	w->held = false;
	pthread_cond_broadcast(&w->cv);
	pthread_mutex_unlock(&w->mu);
}

void
worker_drain(struct worker *w)
{
	struct job job;

	if (!w->started) {
		if (!w->draining)
			worker_do_drain(w);
		return;
	}
	memset(&job, 0, sizeof(job));
	job.drain = true;
	worker_post(w, &job, !atomic_load(&w->finished));
}

void
worker_close_all(struct worker *w)
{
	struct job job;

	if (!w->started) {
		session_list_close_all(&w->sessions, "shutdown");
		return;
	}
	memset(&job, 0, sizeof(job));
	job.close = true;
	worker_post(w, &job, false);
}

void
worker_kick(struct worker *w, const uint8_t addr[16])
{
	uint8_t (*v)[16];
	size_t cap;

	pthread_mutex_lock(&w->mu);
	if (w->nkicks == w->capkicks) {
		cap = w->capkicks ? w->capkicks * 2 : 8;
		if ((v = realloc(w->kicks, cap * sizeof(*v))) == NULL) {
			/* The kernel set and accept still stop the address;
			 * only its open sessions carry on. */
			pthread_mutex_unlock(&w->mu);
			log_warnx("worker %u: out of memory; sessions of a "
			    "banned address stay open", w->id);
			return;
		}
		w->kicks = v;
		w->capkicks = cap;
	}
	memcpy(w->kicks[w->nkicks++], addr, 16);
	pthread_mutex_unlock(&w->mu);
	ev_async_send(w->loop, &w->kick);
}

bool
worker_finished(struct worker *w)
{
	return atomic_load(&w->finished);
}

size_t
worker_sessions(struct worker *w)
{
	if (!w->started)
		return w->sessions.n;
	return atomic_load_explicit(&w->nsessions, memory_order_relaxed);
}

uint64_t
worker_accepted(struct worker *w)
{
	return atomic_load_explicit(&w->accepted, memory_order_relaxed);
}
