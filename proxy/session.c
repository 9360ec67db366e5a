/* session.c - one proxied connection: an explicit state machine and the relay. */
#include "session.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <ev.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>

#include "addr.h"
#include "backend.h"
#include "backendwatch.h"
#include "buf.h"
#include "duration.h"
#include "events.h"
#include "filter.h"
#include "gen.h"
#include "guard.h"
#include "log.h"
#include "metrics.h"
#include "mono.h"
#include "proxyproto.h"
#include "refusals.h"
#include "slots.h"
#include "smtp_refused.h"
#include "tls.h"
#include "tlsalloc.h"
#include "tlsout.h"

/*
 * Each direction has an input buffer (bytes read, waiting for the filter)
 * and an output buffer (bytes the filter passed, waiting to be written),
 * held only while they hold bytes (buf.h), so an idle session has none.
 * Client to backend, the way mail is submitted, uses RELAY_BUF_UP: the
 * client's records are taken several at a time (conn_read()) and go to
 * the backend in a quarter of the writes. Backend to client, OpenSSL
 * makes one record of each 16 KiB whatever it is given, and the client's
 * write BIO already sends them four to a write (tlsout.h): reading the
 * backend in larger blocks only cost more (kernel time and cache). A TLS
 * record is at most 16 KiB, so one SSL_read always fits an empty buffer.
 */
#define RELAY_BUF BUF_BLOCK
#define RELAY_BUF_UP BUF_BLOCK_LARGE
/* OpenSSL's read-ahead buffer once a session relays: four records. */
#define TLS_READ_BUF (64 * 1024 + 256)
_Static_assert(RELAY_BUF >= FILTER_INPUT_MAX,
    "filters wait for lines this long");
/* Rounds of one relay pass (relay_pump()). */
#define PUMP_ROUNDS 16
/* Pumps a busy session runs in a row before the loop goes round. */
#define KICK_CHAIN 8
/* How long a refused client may take to read our reply and hang up (and,
 * on SMTP, to say QUIT: smtp_refused.h). */
#define LINGER_MS 5000
/* Longest error detail a close line carries. */
#define WHY_MAX 160

#define container_of(p, type, member) \
	((type *)(void *)((char *)(p) - offsetof(type, member)))
#define container_of_const(p, type, member) \
	((const type *)(const void *)((const char *)(p) - \
	    offsetof(type, member)))

enum session_state {
	SESSION_NEW = 0,
	SESSION_PROXY_HEADER,	/* reading the load balancer's header */
	SESSION_ADMIT,		/* asking policy */
	SESSION_HANDSHAKE,	/* TLS with the client */
	SESSION_CONNECT,	/* connecting to the backend */
	SESSION_XCLIENT,	/* EHLO + XCLIENT with the backend */
	SESSION_GREETING,	/* relaying; no backend byte reached the
				 * client yet */
	SESSION_RELAY,		/* both ways through the filter */
	SESSION_REJECT,		/* final reply to the client, then close */
	SESSION_DEAD,		/* freed when the current callback returns */
};

enum io_rc {
	IO_OK,
	IO_AGAIN,
	IO_EOF,
	IO_ERR,
};

/* One side of the session. The session owns both, and each owns its fd,
 * SSL and buffers. */
struct conn {
	int fd;			/* -1: not connected, or gone */
	SSL *ssl;		/* client side with TLS only */
	bool ssl_broken;	/* a fatal TLS error: no close_notify */
	ev_io io;
	int watching;		/* events io runs with; 0 when stopped */
	struct buf in;		/* read from this side, for the filter */
	struct buf out;		/* for this side, from the filter */
	int rd_ev;		/* what the next read waits for */
	bool rd_ready;		/* the socket may hold bytes: read it */
	enum io_rc rd_next;	/* what the next read returns (IO_OK: read) */
	int wr_ev;		/* what the next write waits for */
	bool wr_retry;		/* an SSL_write waits to be called again */
	bool rd_eof;		/* this side sent all it will send */
	bool shut_pending;	/* send our end of stream when out drains */
	bool notified;		/* SSL_shutdown() took our close_notify */
	bool wr_shut;		/* our end of stream was sent */
	bool gone;		/* the client reset: its output is dropped */
	uint64_t nin, nout;
};

/* The filter instance; what a filter sees of its session. */
struct filter_io {
	const struct filter_ops *ops;
	void *state;
};

struct session {
	struct session *prev, *next;
	struct session_list *list;
	struct ev_loop *loop;
	struct gen *gen;
	const struct cfg_listener *lc;
	char id[17];
	enum session_state state;
	bool dead;
	bool kick;		/* pump again next loop iteration */
	bool kick_queued;	/* in list->kicked */
	uint8_t kick_chain;	/* pumps run in a row (kick_queue()) */
	bool starttls;		/* the filter asked for TLS */
	const char *filter_close;	/* the filter asked to end */
	const char *close_reason;	/* why the session ended */
	const char *end_reason;	/* why it is ending (reject, EOF) */
	size_t moved;		/* input handed over whole (filter_out()) */
	char *why;		/* detail for the close line (session_why()) */
	struct conn client;
	struct conn backend;
	struct filter_io filter;
	/* The generation the client's TLS was built from when that is not
	 * gen (a reload came between accept and handshake); NULL else. */
	struct gen *tls_gen;
	ev_timer timer;
	ev_tstamp started;	/* mono_s() */
	ev_tstamp last_active;	/* mono_s(): the last byte moved */
	ev_tstamp greeted;	/* mono_s(): the backend's first words read,
				 * 0 before */
	/* The client as believed: the PROXY header's when there was one. */
	union sockaddr_ip peer, local;
	socklen_t locallen;
	char ip[INET6_ADDRSTRLEN];
	uint8_t addr[16];	/* the same, for policy */
	unsigned port;
	int xc_step;
	bool admitted;		/* policy let it in */
	bool bad_greeting;	/* filter_bad_greeting(): not "answers" */
	uint32_t tag;		/* nonzero: holds a guard_release() */
	bool lb_own;		/* a trusted load balancer's own connection
				 * (PROXY LOCAL): outside policy */
	bool slotted;		/* holds a slot of list->slots for slot */
	uint8_t slot[16];
	/* Implicit TLS: POLICY_OK, or the refusal sent after the handshake. */
	enum policy_reason refusal;
	struct smtp_refused refused;	/* SMTP: answering after the 554 */
};

/* Sessions start on every worker thread: ids come from one atomic
 * counter, seeded once at random (so ids differ across restarts). */
static _Atomic uint64_t session_next_id;

static void
session_new_id(char *buf, size_t len)
{
	uint64_t id, seed;

	if ((id = atomic_load(&session_next_id)) == 0) {
		if (RAND_bytes((unsigned char *)&seed, sizeof(seed)) != 1)
			seed = (uint64_t)getpid() << 32;
		(void)atomic_compare_exchange_strong(&session_next_id, &id,
		    seed | 1);
	}
	id = atomic_fetch_add(&session_next_id, 1);
	snprintf(buf, len, "%016" PRIx64, id);
}

static void client_io_cb(struct ev_loop *, ev_io *, int);
static void backend_io_cb(struct ev_loop *, ev_io *, int);
static void session_timer_cb(struct ev_loop *, ev_timer *, int);
static void start_handshake(struct session *);
static void start_connect(struct session *);
static void relay_pump(struct session *);
static bool conn_fill(struct session *, struct conn *);
static bool run_filter(struct session *, struct conn *, struct conn *);
static void backend_write_gone(struct session *, struct conn *);
static void client_gone(struct session *, struct conn *);

static const char *
session_state_str(enum session_state st)
{
	switch (st) {
	case SESSION_NEW:
		return "new";
	case SESSION_PROXY_HEADER:
		return "proxy_header";
	case SESSION_ADMIT:
		return "admit";
	case SESSION_HANDSHAKE:
		return "handshake";
	case SESSION_CONNECT:
		return "connect";
	case SESSION_XCLIENT:
		return "xclient";
	case SESSION_GREETING:
		return "greeting";
	case SESSION_RELAY:
		return "relay";
	case SESSION_REJECT:
		return "reject";
	case SESSION_DEAD:
		return "dead";
	}
	return "?";
}

static void
set_timer_ms(struct session *s, uint64_t ms)
{
	ev_timer_stop(s->loop, &s->timer);
	if (ms == 0)
		return;
	ev_timer_set(&s->timer, (ev_tstamp)ms / 1000., 0.);
	ev_timer_start(s->loop, &s->timer);
}

/* The only place that assigns s->state; each state owns the timer. */
static void
enter_state(struct session *s, enum session_state st)
{
	log_debug("%s state %s -> %s", s->id, session_state_str(s->state),
	    session_state_str(st));
	s->state = st;
	switch (st) {
	case SESSION_PROXY_HEADER:
	case SESSION_HANDSHAKE:
		set_timer_ms(s, s->lc->handshake_ms);
		break;
	case SESSION_CONNECT:
	case SESSION_XCLIENT:
	case SESSION_GREETING:
		/* Not re-armed by the client: talking before the greeting
		 * must not keep a silent backend's session open. */
		set_timer_ms(s, s->lc->connect_ms);
		break;
	case SESSION_RELAY:
		s->last_active = mono_s();
		set_timer_ms(s, s->lc->idle_ms);
		break;
	case SESSION_REJECT:
		set_timer_ms(s, LINGER_MS);
		break;
	case SESSION_NEW:
	case SESSION_ADMIT:
	case SESSION_DEAD:
		set_timer_ms(s, 0);
		break;
	}
}

/*
 * Marks the session for freeing; it stops doing anything at once and is
 * freed by session_done() when the current callback returns.
 */
static void
session_kill(struct session *s, const char *reason)
{
	if (s->dead)
		return;
	s->dead = true;
	s->close_reason = reason;
	enter_state(s, SESSION_DEAD);
}

/* Both sides go through the filter (the greeting may still be due). */
static bool
relaying(const struct session *s)
{
	return s->state == SESSION_GREETING || s->state == SESSION_RELAY;
}

/*
 * The client still waits for the backend's first words: it has seen no
 * byte of the backend's, and moat has not passed its end of stream on
 * (which may be why a backend goes). A client that half-closed behind
 * early commands, held until the greeting, waits for their replies.
 * Losing the backend now is a backend failure, and the client is told so
 * (backend_fail()); later a backend that goes is relayed as such, like
 * any end of the session.
 */
static bool
backend_awaited(const struct session *s)
{
	return (s->state == SESSION_XCLIENT ||
	    s->state == SESSION_GREETING) && !s->client.gone &&
	    !s->backend.wr_shut && !s->backend.shut_pending;
}

static void
conn_init(struct conn *c, int fd, void (*cb)(struct ev_loop *, ev_io *, int),
    size_t in_cap, size_t out_cap)
{
	c->fd = fd;
	ev_io_init(&c->io, cb, fd, 0);
	buf_init(&c->in, in_cap);
	buf_init(&c->out, out_cap);
	c->rd_ev = EV_READ;
	c->wr_ev = EV_WRITE;
	c->rd_ready = true;
	c->rd_next = IO_OK;
}

static void
conn_watch(struct session *s, struct conn *c, int ev)
{
	if (c->watching == ev)
		return;
	ev_io_stop(s->loop, &c->io);
	c->watching = 0;
	if (ev != 0 && c->fd >= 0) {
		ev_io_set(&c->io, c->fd, ev);
		ev_io_start(s->loop, &c->io);
		c->watching = ev;
	}
}

/*
 * A relay that stopped after PUMP_ROUNDS with bytes still moving (maybe
 * held inside OpenSSL, where no socket event would announce them) must
 * go on by itself. A fed event runs at once, before the events already
 * pending: cheap, and the way short bursts stay quick, but a session
 * that never runs dry (a fast client and backend, as on a LAN) kept its
 * worker for as long as it moved data, and every other session on it
 * waited (NOOP round trips took up to 3 s during four bulk uploads on
 * loopback). So a session goes on at once KICK_CHAIN - 1 times in a
 * row; then it is queued, and an idle watcher of the highest priority
 * (which keeps the loop from blocking meanwhile) feeds the queue once
 * per loop iteration, after the timers and the other sessions' socket
 * events have been collected. Queueing after every 64 or 256 KiB read
 * instead kept the waits shorter but cost 10-19 % more CPU with 100
 * streams (ab.sh). tests/bench/fair.sh measures the waits.
 */
static void
kick_cb(struct ev_loop *loop, ev_idle *w, int revents)
{
	struct session_list *list = container_of(w, struct session_list,
	    kick);
	size_t i, n = list->nkicked;

	(void)revents;
	ev_idle_stop(loop, w);
	list->nkicked = 0;
	/* Fed events run after this returns: a session that stops again
	 * queues itself anew then, not into this round. */
	for (i = 0; i < n; i++) {
		struct session *s = list->kicked[i];

		s->kick_queued = false;
		ev_feed_event(loop, &s->client.io, EV_CUSTOM);
	}
}

static void
kick_queue(struct session *s)
{
	struct session_list *list = s->list;
	struct session **k;
	size_t cap;

	if (s->kick_queued)
		return;
	if (++s->kick_chain < KICK_CHAIN) {
		ev_feed_event(s->loop, &s->client.io, EV_CUSTOM);
		return;
	}
	s->kick_chain = 0;
	if (list->nkicked == list->kicked_cap) {
		cap = list->kicked_cap ? list->kicked_cap * 2 : 16;
		if ((k = realloc(list->kicked, cap * sizeof(*k))) == NULL) {
			/* At once, as before, rather than never. */
			ev_feed_event(s->loop, &s->client.io, EV_CUSTOM);
			return;
		}
		list->kicked = k;
		list->kicked_cap = cap;
	}
	if (!list->kick_ready) {
		ev_idle_init(&list->kick, kick_cb);
		ev_set_priority(&list->kick, EV_MAXPRI);
		list->kick_ready = true;
	}
	list->kicked[list->nkicked++] = s;
	s->kick_queued = true;
	ev_idle_start(s->loop, &list->kick);
}

static void
kick_forget(struct session *s)
{
	struct session_list *list = s->list;
	size_t i;

	if (!s->kick_queued)
		return;
	for (i = 0; i < list->nkicked; i++)
		if (list->kicked[i] == s) {
			list->kicked[i] = list->kicked[--list->nkicked];
			break;
		}
	s->kick_queued = false;
	if (list->nkicked == 0)
		ev_idle_stop(s->loop, &list->kick);
}

/* Closes one side for good: watcher, TLS, socket and buffers. */
static void
conn_clear(struct session *s, struct conn *c)
{
	conn_watch(s, c, 0);
	ev_io_stop(s->loop, &c->io);	/* drops a pending kick too */
	if (c->ssl != NULL)
		SSL_free(c->ssl);
	c->ssl = NULL;
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	buf_clear(&c->in);
	buf_clear(&c->out);
}

/* What s->why points at when there was no memory for the detail. */
static char why_lost[] = "out of memory for the detail";

static void
why_free(struct session *s)
{
	if (s->why != why_lost)
		free(s->why);
	s->why = NULL;
}

/*
 * Keeps the detail for the close line; a later one replaces it. Few
 * sessions end with one, so it is allocated rather than room in each.
 */
static void
session_why(struct session *s, const char *why)
{
	char *p = strndup(why, WHY_MAX - 1);

	why_free(s);
	s->why = p != NULL ? p : why_lost;
}

/* The one place a session is freed. */
static void
session_free(struct session *s)
{
	struct session_list *list = s->list;
	char b1[200];
	uint64_t ms;

	ms = (uint64_t)((mono_s() - s->started) * 1000.);
	/* A refused session's story is its reject line (refusals.h). */
	(s->admitted ? log_info : log_debug)("%s close reason=%s%s%s "
	    "client_in=%" PRIu64 " client_out=%" PRIu64 " duration_ms=%"
	    PRIu64, s->id,
	    s->close_reason ? s->close_reason : "closed",
	    s->why != NULL ? " error=" : "",
	    s->why != NULL ? log_value(s->why, b1, sizeof(b1)) : "",
	    s->client.nin, s->client.nout, ms);
	why_free(s);
	if (s->admitted)	/* metrics */
		metrics_session_end(s->lc->name, (double)ms / 1000.,
		    s->client.nin, s->client.nout);
	kick_forget(s);
	conn_clear(s, &s->client);
	conn_clear(s, &s->backend);
	if (s->tls_gen != NULL)		/* after the SSL it holds */
		gen_unref(s->tls_gen);
	ev_timer_stop(s->loop, &s->timer);
	if (s->tag != 0)
		guard_release(s->addr, s->tag);
	if (s->slotted)
		slots_give(list->slots, s->slot);
	if (s->filter.ops != NULL && s->filter.ops->free != NULL &&
	    s->filter.state != NULL)
		s->filter.ops->free(s->filter.state);
	if (s->prev != NULL)
		s->prev->next = s->next;
	else
		list->head = s->next;
	if (s->next != NULL)
		s->next->prev = s->prev;
	gen_unref(s->gen);
	free(s);
	if (--list->n == 0 && list->on_empty != NULL)
		list->on_empty(list->arg);
}

/*
 * Whether reading c must wait for the SSL_write that waits to be called
 * again. A TLS 1.3 peer's KeyUpdate request read meanwhile has its answer
 * held back behind that write; a second one, even within the same
 * SSL_read, has OpenSSL write inside SSL_read and fail ("bad length"),
 * which ended the session of a client that re-keys during a long
 * download. A peer that does not read what we write has no reply to wait
 * for from us either, so its input may wait too.
 */
static bool
read_waits_for_write(const struct conn *c)
{
	return c->ssl != NULL && c->wr_retry;
}

/* Whether c's write BIO holds records for a flush (tlsout.h). */
static bool
tls_held(const struct conn *c)
{
	return c->ssl != NULL && BIO_wpending(SSL_get_wbio(c->ssl)) > 0;
}

static int
conn_events(const struct conn *c)
{
	int ev = 0;

	if (c->fd < 0 || c->gone)
		return 0;
	if (!c->rd_eof && !buf_full(&c->in) && !read_waits_for_write(c))
		ev |= c->rd_ev;
	if (buf_len(&c->out) > 0 || c->shut_pending)
		ev |= c->wr_ev;
	if (tls_held(c))
		ev |= EV_WRITE;
	return ev;
}

/* Sets what both sockets are watched for, from the state. */
static void
session_update_io(struct session *s)
{
	int cev = 0, bev = 0;

	switch (s->state) {
	case SESSION_PROXY_HEADER:
		cev = EV_READ;
		break;
	case SESSION_HANDSHAKE:
		cev = s->client.rd_ev;
		break;
	case SESSION_CONNECT:
		bev = EV_WRITE;
		break;
	case SESSION_XCLIENT:
		bev = conn_events(&s->backend);
		break;
	case SESSION_GREETING:
	case SESSION_RELAY:
	case SESSION_REJECT:
		cev = conn_events(&s->client);
		bev = conn_events(&s->backend);
		break;
	case SESSION_NEW:
	case SESSION_ADMIT:
	case SESSION_DEAD:
		break;
	}
	conn_watch(s, &s->client, cev);
	conn_watch(s, &s->backend, bev);
	if (s->kick) {
		s->kick = false;
		kick_queue(s);
	} else
		s->kick_chain = 0;
}

/* Every callback ends here: free a dead session, else re-arm. */
static void
session_done(struct session *s)
{
	if (s->dead)
		session_free(s);
	else
		session_update_io(s);
}

static void
set_client_addr(struct session *s)
{
	uint8_t a[16];

	s->ip[0] = '\0';
	s->port = 0;
	memset(s->addr, 0, sizeof(s->addr));
	if (addr_to_v6(&s->peer.sa, a) == 0) {
		addr_v6_str(a, s->ip, sizeof(s->ip));
		memcpy(s->addr, a, sizeof(s->addr));
	}
	if (s->peer.sa.sa_family == AF_INET)
		s->port = ntohs(s->peer.sin.sin_port);
	else if (s->peer.sa.sa_family == AF_INET6)
		s->port = ntohs(s->peer.sin6.sin6_port);
}

/*
 * The backend is out of reach, the filter ended the session or the
 * client idled: drop the backend side, queue msg (may be NULL) to the
 * client, and linger until the client has read it and hung up.
 */
static void
session_reject(struct session *s, const char *msg, const char *reason)
{
	struct conn *b = &s->backend;

	conn_clear(s, b);
	b->rd_eof = true;
	b->wr_shut = true;
	b->shut_pending = false;
	s->starttls = false;	/* the last word: no handshake follows it */
	if (msg != NULL)
		(void)buf_append(&s->client.out, msg, strlen(msg));
	s->end_reason = reason;
	enter_state(s, SESSION_REJECT);
	relay_pump(s);
}

/* The client is told to come back later; reason ends the session. */
static void
unavailable(struct session *s, const char *why, const char *reason)
{
	char msg[256];

	session_why(s, why);
	if (s->lc->protocol == CFG_PROTO_SMTP)
		snprintf(msg, sizeof(msg), "421 4.3.0 %s service temporarily "
		    "unavailable\r\n", s->lc->name);
	else
		snprintf(msg, sizeof(msg), "-ERR [SYS/TEMP] %s service "
		    "temporarily unavailable\r\n", s->lc->name);
	session_reject(s, msg, reason);
}

static void
backend_fail(struct session *s, const char *why)
{
	char b1[200], b2[ADDR_PORT_STRLEN];

	log_info("%s backend_fail backend=%s reason=%s ip=%s", s->id,
	    addr_port_str(&s->lc->backend, b2, sizeof(b2)),
	    log_value(why, b1, sizeof(b1)), s->ip);
	metrics_backend_failure(s->lc->name);
	backendwatch_fail(s->lc->name, &s->lc->backend, why,
	    s->lc->backend_proxy);
	unavailable(s, why, "backend_unavailable");
}

/* moat itself is out of descriptors, memory or local ports (EADDRNOTAVAIL
 * from connect: every port of ip_local_port_range to the backend is in
 * use): the backend was not tried, so neither the log nor the metric may
 * blame it. */
static bool
short_of_resources(int err)
{
	return err == EMFILE || err == ENFILE || err == ENOBUFS ||
	    err == ENOMEM || err == EADDRNOTAVAIL;
}

static void
resources_fail(struct session *s, int err)
{
	log_warnx("%s cannot open a connection to the backend: %s (moat's "
	    "own shortage%s; the backend was not tried) ip=%s", s->id,
	    strerror(err), err == EADDRNOTAVAIL ? ", no local port free: "
	    "see net.ipv4.ip_local_port_range" : "", s->ip);
	unavailable(s, strerror(err), "no_resources");
}

/* An SMTP refusal: the client will be heard out (refused_listen()). */
static void
refused_start(struct session *s)
{
	smtp_refused_init(&s->refused);
	buf_clear(&s->client.in);
	buf_init(&s->client.in, SMTP_REFUSED_LINE_MAX);
}

/* Sends the policy's refusal and ends the session after it. */
static void
session_refuse(struct session *s, enum policy_reason reason)
{
	char reply[160];

	guard_refusal(s->lc, reason, reply, sizeof(reply));
	session_reject(s, reply, "rejected");
}

/*
 * Acts on the policy verdict for s. A banned address costs nothing more:
 * no reply, no TLS. Others read a protocol-correct refusal, after the
 * handshake on implicit-TLS listeners (s->refusal holds the reason till
 * then); on SMTP that is a 554, and what the client says next is answered
 * until its QUIT (RFC 5321 3.1).
 */
static void
session_verdict(struct session *s, bool admitted, enum policy_reason reason,
    uint32_t tag)
{
	if (!admitted) {
		refusals_log(s->loop, s->addr, policy_reason_str(reason),
		    s->lc->name, s->id, NULL);
		if (reason == POLICY_BANNED) {
			session_kill(s, "banned");
			return;
		}
		if (s->lc->protocol == CFG_PROTO_SMTP)
			refused_start(s);
		if (s->lc->tls == CFG_TLS_IMPLICIT) {
			s->refusal = reason;
			start_handshake(s);
		} else {
			session_refuse(s, reason);
		}
		return;
	}
	s->admitted = true;
	/* The allow list admits without counting (tag 0): nothing to
	 * release, even once a reload has taken the address off the list. */
	s->tag = tag;
	log_info("%s connect listener=%s ip=%s port=%u", s->id, s->lc->name,
	    s->ip, s->port);
	/* TCP_NODELAY comes from the listening socket (listener.c). */
	if (s->filter.ops->new != NULL &&
	    (s->filter.state = s->filter.ops->new(s->lc)) == NULL) {
		session_kill(s, "out_of_memory");
		return;
	}
	if (s->lc->tls == CFG_TLS_IMPLICIT)
		start_handshake(s);
	else
		start_connect(s);
}

static void
session_admit(struct session *s)
{
	enum policy_reason reason;
	uint32_t tag;
	bool ok;

	enter_state(s, SESSION_ADMIT);
	if (s->lb_own) {
		/* Its health checks come every few seconds, forever: counted
		 * as a client's connections, they would get the balancer,
		 * and everyone behind it, banned. It is trusted already
		 * (accept_proxy_from), like the allow list. */
		guard_admitted(s->lc);
		session_verdict(s, true, POLICY_ALLOWLIST, 0);
		return;
	}
	if ((ok = guard_admit(s->addr, s->lc, s->id, &reason, &tag)))
		guard_admitted(s->lc);
	session_verdict(s, ok, reason, tag);
}

/* --- PROXY header from a trusted load balancer ------------------------ */

static bool
proxy_trusted(const struct session *s)
{
	const struct cfg_cidrs *from = &s->lc->accept_proxy_from;
	uint8_t a[16];
	size_t i;

	if (addr_to_v6(&s->peer.sa, a) == -1)
		return false;
	for (i = 0; i < from->n; i++)
		if (cidr_contains(&from->v[i], a))
			return true;
	return false;
}

/* One event about a connection that has no country or counts to add. */
static void
emit_plain(const char *what, const uint8_t addr[16], const char *listener,
    const char *reason, const char *sid)
{
	struct event ev = EVENT_INIT;

	ev.event = what;
	ev.ip = addr;
	ev.listener = listener;
	ev.reason = reason;
	ev.session = sid;
	events_emit(&ev);
}

/*
 * A connection to an accept_proxy listener from outside accept_proxy_from:
 * no header from there would be believed. A refusal like the policy's (an
 * event, a metric, a log line unless a flood of them is being summed up),
 * closed without a reply.
 */
static void
proxy_untrusted(struct session *s)
{
	static const char reason[] = "proxy_untrusted";

	refusals_log(s->loop, s->addr, reason, s->lc->name, s->id, NULL);
	metrics_admit(s->lc->name, reason);
	emit_plain("reject", s->addr, s->lc->name, reason, s->id);
	session_why(s, "untrusted source");
	session_kill(s, reason);
}

/*
 * The header is bad, late or missing: a refusal for the counts (status,
 * moat_rejects_total), or the balancer's sessions would vanish from them
 * when it is set up wrong. A connection that ends without sending a
 * byte (a balancer's TCP health check) is not counted (counted false).
 */
#define PROXY_DISCARD_MAX (64 * 1024)

/* Drops what the client sent so far; MSG_TRUNC: not even copied. */
static void
proxy_discard(int fd)
{
	size_t left = PROXY_DISCARD_MAX;
	ssize_t r;

	while (left > 0 && (r = recv(fd, NULL, left,
	    MSG_TRUNC | MSG_DONTWAIT)) > 0)
		left -= (size_t)r < left ? (size_t)r : left;
}

static void
proxy_fail(struct session *s, const char *why, bool counted)
{
	char b1[200];

	log_info("%s proxy_fail reason=%s ip=%s", s->id,
	    log_value(why, b1, sizeof(b1)), s->ip);
	if (counted)
		metrics_admit(s->lc->name, "proxy_fail");
	session_why(s, why);
	session_kill(s, "proxy_fail");
}

/*
 * Peeks at what has arrived and consumes only header bytes: what follows
 * the header (a TLS ClientHello) must stay in the socket for OpenSSL.
 * Bytes of an incomplete header are consumed into client.in so the
 * socket does not stay readable (and the loop spin) while we wait.
 */
static void
do_proxy_header(struct session *s)
{
	struct conn *c = &s->client;
	struct proxyproto_hdr h;
	enum proxyproto_rc rc;
	const char *why;
	size_t have = buf_len(&c->in), hlen;
	uint8_t *p;
	ssize_t n;

	if ((p = buf_tail(&c->in)) == NULL) {
		proxy_fail(s, "out of memory", true);
		return;
	}
	n = recv(c->fd, p, PROXYPROTO_MAX - have, MSG_PEEK);
	if (n == 0) {
		proxy_fail(s, "eof", have > 0);
		return;
	}
	if (n == -1) {
		if (errno != EAGAIN && errno != EINTR)
			proxy_fail(s, strerror(errno), have > 0);
		buf_trim(&c->in);
		return;
	}
	rc = proxyproto_parse(buf_data(&c->in), have + (size_t)n, &h, &hlen,
	    &why);
	if (rc == PROXYPROTO_ERROR) {
		/*
		 * Read what came, up to PROXY_DISCARD_MAX: bytes left unread
		 * would make the close a reset, and the sender (a balancer
		 * set up without the header, whose client's ClientHello may
		 * be 2 KB, or someone testing by hand from its address)
		 * should read the same orderly end as after a late header.
		 */
		proxy_discard(c->fd);
		proxy_fail(s, why, true);
		return;
	}
	if (rc == PROXYPROTO_AGAIN) {
		if (recv(c->fd, p, (size_t)n, 0) != n) {
			proxy_fail(s, "short read", true);
			return;
		}
		buf_commit(&c->in, (size_t)n);
		return;
	}
	if (recv(c->fd, p, hlen - have, 0) != (ssize_t)(hlen - have)) {
		proxy_fail(s, "short read", true);
		return;
	}
	buf_clear(&c->in);
	s->lb_own = h.local;
	if (!h.local) {
		/* The parser gives only IPv4 and IPv6 (proxyproto.h). */
		memcpy(&s->peer, &h.src, h.srclen);
		memcpy(&s->local, &h.dst, h.dstlen);
		s->locallen = h.dstlen;
		set_client_addr(s);
	}
	log_info("%s proxy version=%d ip=%s port=%u%s", s->id, h.version,
	    s->ip, s->port, h.local ? " local=yes" : "");
	session_admit(s);
}

/* --- TLS with the client ---------------------------------------------- */

/* A failed handshake: a log line, a metric and a tls_fail event. */
static void
tls_failed(struct session *s, const char *reason)
{
	char b1[200];

	log_info("%s tls_fail reason=%s ip=%s", s->id,
	    log_value(reason, b1, sizeof(b1)), s->ip);
	metrics_tls_failure(reason);
	emit_plain("tls_fail", s->addr, s->lc->name, reason, s->id);
}

/*
 * The TLS contexts a handshake starting now takes: those of the current
 * generation, so that a STARTTLS after a reload gets the new certificate,
 * min_version and ticket setting, not those of its accept (a replaced
 * certificate, tickets turned off). The listener's own settings stay the
 * session's generation's. Without TLS contexts there now, the session's.
 */
static struct tls_set *
handshake_tls(struct session *s)
{
	struct gen *now = s->list->gen;

	if (now == s->gen || tls_set_empty(gen_tls(now)))
		return gen_tls(s->gen);
	if (s->tls_gen == NULL)
		s->tls_gen = gen_ref(now);
	return gen_tls(s->tls_gen);
}

static void
start_handshake(struct session *s)
{
	struct conn *c = &s->client;

	c->ssl = tls_ssl_new(handshake_tls(s), c->fd, s->lc->name);
	if (c->ssl == NULL) {
		char reason[200];

		tls_failed(s, tls_error_reason(reason, sizeof(reason)) ?
		    reason : "no_tls_context");
		session_kill(s, "tls_fail");
		return;
	}
	c->rd_ev = EV_READ;
	enter_state(s, SESSION_HANDSHAKE);
	/* Nothing arrived yet in the usual case: wait for the ClientHello. */
}

static void
do_handshake(struct session *s)
{
	struct conn *c = &s->client;
	char reason[200], b1[200];
	const char *r, *sni;
	int rc, err, saved;

	ERR_clear_error();
	rc = SSL_do_handshake(c->ssl);
	if (rc == 1) {
		c->rd_ev = EV_READ;
		c->wr_ev = EV_WRITE;
		/*
		 * Read-ahead room for several records from now on (the next
		 * time OpenSSL allocates its buffer, which it frees while
		 * idle). Not during the handshake: a stalled one would hold
		 * the larger buffer.
		 */
		SSL_set_default_read_buffer_len(c->ssl, TLS_READ_BUF);
		sni = SSL_get_servername(c->ssl, TLSEXT_NAMETYPE_host_name);
		log_info("%s tls version=%s cipher=%s sni=%s", s->id,
		    SSL_get_version(c->ssl), SSL_get_cipher_name(c->ssl),
		    log_value(sni, b1, sizeof(b1)));
		metrics_tls_handshake(SSL_get_version(c->ssl),
		    SSL_get_cipher_name(c->ssl));
		if (s->backend.fd >= 0) {
			/* STARTTLS: the relay goes on, now encrypted. */
			if (s->filter.ops->tls_started != NULL)
				s->filter.ops->tls_started(s->filter.state,
				    &s->filter);
			enter_state(s, SESSION_RELAY);
			/*
			 * Whatever the backend sent while the handshake ran
			 * (nobody read it then) answers no command: read
			 * before the client's first one, the filter sees it
			 * for what it is, not as that command's reply.
			 */
			s->backend.rd_ready = true;
			if (conn_fill(s, &s->backend) && !s->dead)
				(void)run_filter(s, &s->backend, &s->client);
			if (!s->dead)
				relay_pump(s);
		} else if (s->refusal != POLICY_OK) {
			session_refuse(s, s->refusal);
		} else {
			start_connect(s);
		}
		return;
	}
	saved = errno;
	err = SSL_get_error(c->ssl, rc);
	if (err == SSL_ERROR_WANT_READ) {
		c->rd_ev = EV_READ;
		return;
	}
	if (err == SSL_ERROR_WANT_WRITE) {
		c->rd_ev = EV_WRITE;
		return;
	}
	c->ssl_broken = true;
	if (tlsout_hello_too_large(SSL_get_rbio(c->ssl))) {
		ERR_clear_error();
		r = "client hello too large";
	} else if ((r = tls_error_reason(reason, sizeof(reason))) == NULL)
		r = err == SSL_ERROR_SYSCALL && saved != 0 ? strerror(saved) :
		    "eof";
	tls_failed(s, r);
	session_why(s, r);
	session_kill(s, "tls_fail");
}

/* --- the backend ------------------------------------------------------ */

static void
start_connect(struct session *s)
{
	int fd;

	enter_state(s, SESSION_CONNECT);
	if ((fd = backend_connect(&s->lc->backend)) == -1) {
		if (short_of_resources(errno))
			resources_fail(s, errno);
		else
			backend_fail(s, strerror(errno));
		return;
	}
	conn_init(&s->backend, fd, backend_io_cb, RELAY_BUF, RELAY_BUF_UP);
	/* A connection still being made has nothing to read yet; its
	 * first bytes (a greeting) announce themselves. */
	s->backend.rd_ready = false;
}

static void
start_xclient(struct session *s)
{
	s->xc_step = 0;
	enter_state(s, SESSION_XCLIENT);
}

static void
do_connect(struct session *s)
{
	struct conn *b = &s->backend;
	struct proxyproto_tls tls, *tp = NULL;
	uint8_t hdr[PROXYPROTO_WRITE_MAX];
	char b1[ADDR_PORT_STRLEN];
	int err, n;

	if ((err = backend_connect_result(b->fd)) != 0) {
		backend_fail(s, strerror(err));
		return;
	}
	if (s->locallen == 0 && (s->lc->backend_proxy == CFG_BPROXY_V1 ||
	    s->lc->backend_proxy == CFG_BPROXY_V2)) {
		/* Only a PROXY header needs our own address. */
		s->locallen = sizeof(s->local);
		if (getsockname(s->client.fd, &s->local.sa,
		    &s->locallen) == -1)
			s->locallen = 0;
	}
	if (s->client.ssl != NULL) {
		tls.version = SSL_get_version(s->client.ssl);
		tls.cipher = SSL_get_cipher_name(s->client.ssl);
		tp = &tls;
	}
	n = backend_proxy_header(hdr, sizeof(hdr), s->lc->backend_proxy,
	    &s->peer.sa, &s->local.sa, tp);
	if (n < 0) {
		backend_fail(s, "cannot build PROXY header");
		return;
	}
	/* One write on a fresh socket: it fits, or the backend is broken. */
	if (n > 0 && send(b->fd, hdr, (size_t)n, MSG_NOSIGNAL) != n) {
		backend_fail(s, "cannot write PROXY header");
		return;
	}
	log_debug("%s backend_connected backend=%s proxy=%s", s->id,
	    addr_port_str(&s->lc->backend, b1, sizeof(b1)),
	    cfg_backend_proxy_str(s->lc->backend_proxy));
	if (s->lc->backend_proxy == CFG_BPROXY_XCLIENT &&
	    s->lc->protocol == CFG_PROTO_SMTP) {
		start_xclient(s);
		return;
	}
	enter_state(s, SESSION_GREETING);
	relay_pump(s);
}

/* --- reading and writing one side ------------------------------------- */

/*
 * A reset from c, read or met by a write, that ends its stream rather
 * than the session: one that answers our close_notify or our last bytes
 * once we finished writing; one from a backend that closed while the
 * client still sent and whose kernel refused what we passed on; or one
 * from a client while relaying. Linux reports a reset only after every
 * byte that came before it was read, and (6.18 at least) in place of an
 * end of stream that came before it; nothing is lost. What moat holds
 * goes on to the client (backend_write_gone()), or the backend's answers
 * to what the client sent are still read (client_gone()).
 */
static bool
reset_ends_stream(struct session *s, struct conn *c)
{
	if (c->wr_shut)
		return true;
	if (s->state != SESSION_RELAY)
		return false;
	if (c == &s->backend)
		backend_write_gone(s, c);
	else
		client_gone(s, c);
	return true;
}

static enum io_rc
ssl_result(struct session *s, struct conn *c, int ret, int *ev)
{
	char reason[WHY_MAX];
	int err, saved = errno;
	const char *r;

	err = SSL_get_error(c->ssl, ret);
	switch (err) {
	case SSL_ERROR_WANT_READ:
		*ev = EV_READ;
		return IO_AGAIN;
	case SSL_ERROR_WANT_WRITE:
		*ev = EV_WRITE;
		return IO_AGAIN;
	case SSL_ERROR_ZERO_RETURN:
		return IO_EOF;
	case SSL_ERROR_SYSCALL:
		/*
		 * A peer that closes with our close_notify unread makes its
		 * kernel answer with RST; once we finished writing, that is
		 * an ordinary close.
		 */
		if (ERR_peek_error() == 0 && (saved == 0 ||
		    ((saved == ECONNRESET || saved == EPIPE) &&
		    reset_ends_stream(s, c))))
			return IO_EOF;
		break;
	default:
		break;
	}
	c->ssl_broken = true;
	if ((r = tls_error_reason(reason, sizeof(reason))) == NULL)
		r = saved != 0 ? strerror(saved) : "tls error";
	session_why(s, r);
	return IO_ERR;
}

static enum io_rc
conn_read(struct session *s, struct conn *c)
{
	size_t room = buf_room(&c->in), n, got;
	enum io_rc rc;
	uint8_t *p;
	ssize_t r;

	if (c->rd_next != IO_OK) {
		rc = c->rd_next;
		c->rd_next = IO_OK;
		return rc;
	}
	if ((p = buf_tail(&c->in)) == NULL) {
		session_why(s, "out of memory");
		return IO_ERR;
	}
	if (c->ssl != NULL) {
		/*
		 * SSL_read gives one record (16 KiB at most) a call. Records
		 * OpenSSL already read ahead are taken in the same go, so
		 * that the filter and the write see the buffer's worth at
		 * once: fewer, larger writes to the backend. A successful
		 * read leaves the error queue empty: one clear will do.
		 */
		ERR_clear_error();
		got = 0;
		do {
			if (SSL_read_ex(c->ssl, p + got, room - got, &n) != 1) {
				rc = ssl_result(s, c, 0, &c->rd_ev);
				if (rc == IO_AGAIN && c->rd_ev == EV_READ)
					c->rd_ready = false;
				if (got == 0)
					return rc;
				/* Deliver these first; an end or error
				 * after them is the next read's answer,
				 * with the reason already kept. */
				if (rc != IO_AGAIN)
					c->rd_next = rc;
				break;
			}
			got += n;
			c->rd_ev = EV_READ;
		} while (got < room && SSL_has_pending(c->ssl));
		n = got;
	} else {
		r = read(c->fd, p, room);
		if (r == 0)
			return IO_EOF;
		if (r == -1) {
			if (errno == EAGAIN) {
				c->rd_ready = false;
				return IO_AGAIN;
			}
			if (errno == EINTR)
				return IO_AGAIN;
			if (errno == ECONNRESET && reset_ends_stream(s, c))
				return IO_EOF;
			session_why(s, strerror(errno));
			return IO_ERR;
		}
		n = (size_t)r;
		/* A short read emptied the socket: the next bytes announce
		 * themselves, so the pump need not find out with EAGAIN. */
		if (n < room)
			c->rd_ready = false;
	}
	buf_commit(&c->in, n);
	c->nin += n;
	return IO_OK;
}

static enum io_rc
conn_write(struct session *s, struct conn *c)
{
	size_t len = buf_len(&c->out), n;
	ssize_t r;

	if (c->ssl != NULL) {
		/*
		 * After WANT_WRITE OpenSSL needs the same bytes again; the
		 * buffer still starts with them (it only grows at the tail
		 * until a write succeeds) and may move, which
		 * SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER allows.
		 */
		ERR_clear_error();
		if (SSL_write_ex(c->ssl, buf_data(&c->out), len, &n) != 1) {
			enum io_rc rc = ssl_result(s, c, 0, &c->wr_ev);

			c->wr_retry = rc == IO_AGAIN;
			/*
			 * A peer that sent close_notify and then reset: OpenSSL
			 * calls the failed write a ZERO_RETURN. The writing
			 * has ended as for any reset, or the relay would try
			 * the write again at every turn.
			 */
			if (rc == IO_EOF && !reset_ends_stream(s, c)) {
				session_why(s, "peer closed");
				return IO_ERR;
			}
			return rc;
		}
		c->wr_retry = false;
		c->wr_ev = EV_WRITE;
	} else {
		/* With our end of stream next, the FIN rides the last
		 * bytes (tlsout_fin_follows()). */
		r = send(c->fd, buf_data(&c->out), len, MSG_NOSIGNAL |
		    (c->shut_pending ? MSG_MORE : 0));
		if (r == -1) {
			if (errno == EAGAIN || errno == EINTR)
				return IO_AGAIN;
			/* The peer closed, and its kernel refused this:
			 * the writing ends, not the session. */
			if ((errno == EPIPE || errno == ECONNRESET) &&
			    reset_ends_stream(s, c))
				return IO_EOF;
			session_why(s, strerror(errno));
			return IO_ERR;
		}
		n = (size_t)r;
	}
	buf_consume(&c->out, n);
	c->nout += n;
	return IO_OK;
}

static const char *
side_str(const struct session *s, const struct conn *c)
{
	return c == &s->client ? "client" : "backend";
}

/*
 * c failed, and s->why says how. While the client awaits the backend
 * that is a backend failure, answered with its reply (the session moves
 * on to SESSION_REJECT, whose pump a running relay_pump() may go on
 * with); otherwise the session ends at once. do_xclient() checks the
 * state after each step.
 */
static void
conn_failed(struct session *s, struct conn *c)
{
	char why[WHY_MAX + 32];

	if (c == &s->backend && backend_awaited(s)) {
		snprintf(why, sizeof(why), "%s %s",
		    s->why != NULL ? s->why : "failed",
		    s->state == SESSION_XCLIENT ? "during XCLIENT" :
		    "before greeting");
		backend_fail(s, why);
		return;
	}
	session_kill(s, c == &s->client ? "client_error" : "backend_error");
}

/* Reads once from c if it has room; returns whether anything changed. */
static bool
conn_fill(struct session *s, struct conn *c)
{
	enum io_rc rc;

	if (c->fd < 0 || c->rd_eof || buf_full(&c->in) ||
	    read_waits_for_write(c))
		return false;
	/*
	 * Nothing to read until the socket says so, unless OpenSSL holds
	 * bytes it read ahead: a read bound to fail with EAGAIN was a third
	 * of the relay's system calls.
	 */
	if (!c->rd_ready && c->rd_ev == EV_READ && c->rd_next == IO_OK &&
	    (c->ssl == NULL || !SSL_has_pending(c->ssl)))
		return false;
	if ((rc = conn_read(s, c)) != IO_OK)
		buf_trim(&c->in);	/* an idle side holds no buffer */
	switch (rc) {
	case IO_OK:
		s->last_active = mono_s();
		return true;
	case IO_AGAIN:
		return false;
	case IO_EOF:
		log_debug("%s eof side=%s", s->id, side_str(s, c));
		/* do_xclient() reads a reply that came before the end. */
		if (c == &s->backend && s->state == SESSION_GREETING &&
		    backend_awaited(s)) {
			backend_fail(s, "closed before greeting");
			return false;
		}
		c->rd_eof = true;
		if (s->end_reason == NULL)
			s->end_reason = c == &s->client ? "client_closed" :
			    "backend_closed";
		return true;
	case IO_ERR:
		conn_failed(s, c);
		return false;
	}
	return false;
}

/*
 * The backend closed while the client still sent: a backend that ends a
 * session (an error limit, a shutdown, its own timeout) may have written
 * its last words before it closed, and they may still wait in moat or
 * in the kernel, behind the reset that our write met. Ending the session
 * here would cut the client off before them; a client connected to the
 * backend directly reads them all. So only the writing ends: what the
 * client sends from now on is dropped (run_filter()), and the backend is
 * read to its end of stream, which goes on to the client as usual.
 */
static void
backend_write_gone(struct session *s, struct conn *b)
{
	log_info("%s backend_closed_writing discarded=%zu", s->id,
	    buf_len(&b->out));
	buf_clear(&b->out);
	b->shut_pending = false;
	b->wr_shut = true;
}

/*
 * The client reset the connection while relaying, with a command in
 * flight perhaps: a password the backend is still checking. A client
 * that guesses, reads a success at once and resets while a failure is
 * delayed (Dovecot waits 2 s) would otherwise never have its failures
 * counted. So the client's side ends both ways and what the filter
 * passes to it is dropped, but while the backend owes a verdict on
 * credentials (verdict_owed()) it gets our end of stream as after a
 * client's close and is read, through the filter, which counts the
 * verdict; then, or at once when none is owed, the session ends
 * (relay_pump()), not after a mailbox streamed to no one.
 */
static void
client_gone(struct session *s, struct conn *c)
{
	log_info("%s client_reset discarded=%zu", s->id, buf_len(&c->out));
	buf_clear(&c->out);
	c->gone = true;
	c->rd_eof = true;
	c->shut_pending = false;
	c->wr_shut = true;
	if (s->end_reason == NULL)
		s->end_reason = "client_error";
}

/*
 * Sends the records c's write BIO holds (tlsout.h). False while some
 * remain, because the socket is full (conn_events() then watches it) or
 * because c failed (conn_failed()).
 */
static bool
tls_drained(struct session *s, struct conn *c)
{
	BIO *w = SSL_get_wbio(c->ssl);
	int e;

	if (BIO_flush(w) == 1)
		return true;
	if (!BIO_should_retry(w)) {
		e = errno;
		/* A client that reset: client_gone() drops what remains. */
		if ((e == EPIPE || e == ECONNRESET) &&
		    reset_ends_stream(s, c))
			return false;
		session_why(s, strerror(e));
		conn_failed(s, c);
	}
	return false;
}

/*
 * Writes what c->out holds, then our end of stream if it is due. With
 * more, the caller will call again before it waits for events, so TLS
 * records may stay gathered for a larger write (tlsout.h); without it
 * they are sent.
 */
static bool
conn_flush(struct session *s, struct conn *c, bool more)
{
	struct conn *o;
	bool progress = false;
	int rc;

	if (c->fd < 0)
		return false;
	if (c->gone) {
		buf_clear(&c->out);
		return false;
	}
	if (buf_len(&c->out) > 0) {
		switch (conn_write(s, c)) {
		case IO_OK:
			s->last_active = mono_s();
			progress = true;
			break;
		case IO_AGAIN:
			return false;
		case IO_EOF:
			/* reset_ends_stream() ended this side's writing. */
			return true;
		case IO_ERR:
			conn_failed(s, c);
			return false;
		}
	}
	if (buf_len(&c->out) > 0 || (more && !c->shut_pending))
		return progress;
	if (c->shut_pending && c->ssl != NULL)
		tlsout_fin_follows(SSL_get_wbio(c->ssl));
	if (tls_held(c)) {
		if (!tls_drained(s, c))
			return progress;
		progress = true;
	}
	if (!c->shut_pending)
		return progress;
	if (c->ssl != NULL && !c->ssl_broken && !c->notified) {
		/*
		 * One call sends close_notify; we do not wait for theirs (a
		 * second call would read for it, hence notified).
		 */
		ERR_clear_error();
		rc = SSL_shutdown(c->ssl);
		if (rc < 0) {
			switch (SSL_get_error(c->ssl, rc)) {
			case SSL_ERROR_WANT_WRITE:
				c->wr_ev = EV_WRITE;
				return progress;
			case SSL_ERROR_WANT_READ:
				c->wr_ev = EV_READ;
				return progress;
			default:
				ERR_clear_error();
				break;
			}
		}
		c->notified = true;
		progress = true;
		/* OpenSSL flushed the alert but ignored a full socket. */
		if (!tls_drained(s, c))
			return progress;
	}
	/*
	 * When this end of stream is the session's last act (the peer has
	 * ended too, and the other side is finished both ways), the close()
	 * that follows at once sends the same FIN: skip the syscall. (A TLS
	 * peer that sent bytes after its close_notify, which RFC 8446 6.1
	 * says are ignored, has them unread: close() resets, and the last
	 * records held for the FIN go with the reset. Such a peer alone.)
	 */
	o = c == &s->client ? &s->backend : &s->client;
	if (!c->rd_eof || !o->rd_eof || !o->wr_shut)
		(void)shutdown(c->fd, SHUT_WR);
	log_debug("%s shutdown side=%s", s->id, side_str(s, c));
	c->shut_pending = false;
	c->wr_shut = true;
	return true;
}

/* --- the relay -------------------------------------------------------- */

size_t
filter_room_backend(const struct filter_io *io)
{
	const struct session *s = container_of_const(io, struct session,
	    filter);

	return buf_room(&s->backend.out);
}

size_t
filter_room_client(const struct filter_io *io)
{
	const struct session *s = container_of_const(io, struct session,
	    filter);

	return buf_room(&s->client.out);
}

/*
 * Bytes for one side's output. When a filter passes all it was offered,
 * unchanged, into an empty output buffer (message text in DATA or RETR,
 * mostly), the input buffer's storage changes hands instead of being
 * copied; run_filter() learns how much from s->moved.
 */
static int
filter_out(struct session *s, struct conn *from, struct conn *to,
    const void *p, size_t len)
{
	if (len > 0 && buf_len(&from->in) == len &&
	    p == buf_data(&from->in) && buf_move_all(&to->out, &from->in)) {
		s->moved += len;
		return 0;
	}
	return buf_append(&to->out, p, len);
}

int
filter_to_backend(struct filter_io *io, const void *p, size_t len)
{
	struct session *s = container_of(io, struct session, filter);

	return filter_out(s, &s->client, &s->backend, p, len);
}

int
filter_to_client(struct filter_io *io, const void *p, size_t len)
{
	struct session *s = container_of(io, struct session, filter);

	return filter_out(s, &s->backend, &s->client, p, len);
}

void
filter_starttls(struct filter_io *io)
{
	struct session *s = container_of(io, struct session, filter);

	s->starttls = true;
}

void
filter_close(struct filter_io *io, const char *reason)
{
	struct session *s = container_of(io, struct session, filter);

	s->filter_close = reason;
}

/*
 * The reply to a PROXY header the backend does not expect comes right
 * after its greeting, before any command of the client's reached it; a
 * 421 or -ERR then (Dovecot's "Unknown command") is that, not a hang-up.
 */
#define STRAY_HEADER_S 2.0

void
filter_stray_reply(struct filter_io *io, const uint8_t *line, size_t len,
    bool last_words)
{
	struct session *s = container_of(io, struct session, filter);
	char text[84], b1[sizeof(text) + 2];
	bool header;

	header = (s->lc->backend_proxy == CFG_BPROXY_V1 ||
	    s->lc->backend_proxy == CFG_BPROXY_V2) &&
	    s->backend.nout == 0 && buf_len(&s->backend.out) == 0 &&
	    mono_s() - s->greeted < STRAY_HEADER_S;
	log_line_text(line, len, text, sizeof(text));
	log_info("%s backend_stray reply=%s ip=%s", s->id,
	    log_value(text, b1, sizeof(b1)), s->ip);
	/* A backend's hang-up line says nothing wrong of it. */
	if (!last_words || header) {
		metrics_backend_stray(s->lc->name);
		backendwatch_stray(s->lc->name, &s->lc->backend, text,
		    s->lc->backend_proxy);
	}
}

void
filter_bad_greeting(struct filter_io *io, const uint8_t *line, size_t len)
{
	struct session *s = container_of(io, struct session, filter);
	const char *proto = s->lc->protocol == CFG_PROTO_SMTP ? "SMTP" :
	    "POP3";
	char text[84], why[128], b1[sizeof(text) + 2];

	s->bad_greeting = true;
	log_line_text(line, len, text, sizeof(text));
	/* A TLS record's header: an alert or handshake, version 3.x. */
	if (len >= 2 && (line[0] == 0x15 || line[0] == 0x16) &&
	    line[1] == 0x03)
		snprintf(why, sizeof(why), "answers in TLS, not %s", proto);
	else
		snprintf(why, sizeof(why), "greeting is no %s reply: \"%s\"",
		    proto, text);
	log_info("%s backend_bad_greeting greeting=%s ip=%s", s->id,
	    log_value(text, b1, sizeof(b1)), s->ip);
	metrics_backend_failure(s->lc->name);
	backendwatch_fail(s->lc->name, &s->lc->backend, why,
	    s->lc->backend_proxy);
}

bool
filter_closing(const struct filter_io *io)
{
	const struct session *s = container_of_const(io, struct session,
	    filter);

	return s->filter_close != NULL;
}

void
filter_abort_backend(struct filter_io *io)
{
	struct session *s = container_of(io, struct session, filter);
	struct conn *b = &s->backend;

	/*
	 * What is still queued for the backend goes with the socket: the
	 * backend sees the connection end where the last write stopped.
	 */
	if (buf_len(&b->out) > 0)
		log_info("%s backend_abort discarded=%zu", s->id,
		    buf_len(&b->out));
	conn_clear(s, b);
	b->rd_eof = true;
	b->wr_shut = true;
	b->shut_pending = false;
}

/*
 * The one place where what a filter observed (auth results, smuggling,
 * glitches) becomes a log line, a block event and policy feedback. The
 * reason is a static word; payloads never come here.
 */
static void
session_signal(struct session *s, enum filter_signal sig, const char *reason)
{
	struct event ev = EVENT_INIT;
	const char *name = NULL;
	enum policy_event pev = POLICY_EV_GLITCH;

	switch (sig) {
	case FILTER_SIG_AUTH_OK:
		break;		/* counted by policy, not an event */
	case FILTER_SIG_AUTH_FAIL:
		name = "auth_fail";
		break;
	case FILTER_SIG_AUTH_TEMPFAIL:
		break;		/* counted apart: not a guess */
	case FILTER_SIG_SMUGGLING:
		name = "smuggling";
		break;
	case FILTER_SIG_GLITCH:
	case FILTER_SIG_FOREIGN:
		name = "protocol";
		break;
	}
	log_info("%s %s reason=%s ip=%s listener=%s", s->id,
	    filter_signal_str(sig), reason, s->ip, s->lc->name);
	if (name != NULL) {
		ev.event = name;
		ev.ip = s->addr;
		ev.listener = s->lc->name;
		ev.reason = reason;
		ev.session = s->id;
		if (sig == FILTER_SIG_FOREIGN)
			ev.detail = "foreign protocol";
		events_emit(&ev);
	}
	/*
	 * Feedback to policy: failures and glitches count in the address's
	 * window; a temporary failure is the server's trouble, not a guess.
	 * When the address is now banned the session ends after the reply
	 * already queued for the client.
	 */
	switch (sig) {
	case FILTER_SIG_AUTH_FAIL:
		pev = POLICY_EV_AUTH_FAIL;
		break;
	case FILTER_SIG_AUTH_OK:
		pev = POLICY_EV_AUTH_OK;
		break;
	case FILTER_SIG_SMUGGLING:
		pev = POLICY_EV_SMUGGLING;
		break;
	case FILTER_SIG_GLITCH:
	case FILTER_SIG_FOREIGN:
		pev = POLICY_EV_GLITCH;
		break;
	case FILTER_SIG_AUTH_TEMPFAIL:
		return;
	}
	if (s->lb_own)
		return;		/* outside policy (session_admit) */
	if (guard_note(s->addr, s->lc, s->id, pev) && s->filter_close == NULL)
		s->filter_close = "banned";
}

void
filter_signal(struct filter_io *io, enum filter_signal sig, const char *reason)
{
	struct session *s = container_of(io, struct session, filter);

	session_signal(s, sig, reason);
}

bool
filter_client_tls(const struct filter_io *io)
{
	const struct session *s = container_of_const(io, struct session,
	    filter);

	return s->client.ssl != NULL && relaying(s);
}

/*
 * An SMTP client refused with 554 is answered (smtp_refused.h) until it
 * says QUIT, goes or hits a bound; relay_shutdowns() holds our end of
 * stream back until then, and the linger timer bounds it all. Meanwhile
 * its input buffer holds one line at most: an unwanted client that sends
 * a byte and waits must not pin a relay block for the linger.
 */
static bool
refused_listen(struct session *s)
{
	struct conn *c = &s->client;
	size_t n = 0;

	if (buf_len(&c->in) > 0) {
		n = smtp_refused_feed(&s->refused, buf_data(&c->in),
		    buf_len(&c->in), c->rd_eof, &c->out);
		buf_consume(&c->in, n);
	} else if (c->rd_eof) {
		s->refused.listening = false;
	}
	if (s->refused.listening)
		return n > 0;
	/* The rest is dropped unread (run_filter()), in large reads again. */
	buf_clear(&c->in);
	buf_init(&c->in, RELAY_BUF_UP);
	return true;
}

/*
 * Offers from->in to the filter. When the peer is gone (rejected, or
 * its end of stream already sent) the bytes are dropped, unless a
 * refused SMTP client is still being answered.
 */
static bool
run_filter(struct session *s, struct conn *from, struct conn *to)
{
	size_t len = buf_len(&from->in), n;

	if (from == &s->client && s->refused.listening)
		return refused_listen(s);
	if (len == 0)
		return false;
	if (to->fd < 0 || (to->wr_shut && !to->gone) || to->shut_pending) {
		buf_consume(&from->in, len);
		return true;
	}
	s->moved = 0;
	/* Before the filter: a stray reply in the greeting's own read is
	 * "right after" it (filter_stray_reply()). */
	if (from == &s->backend && s->greeted == 0)
		s->greeted = mono_s();
	if (from == &s->client)
		n = s->filter.ops->client_data(s->filter.state, &s->filter,
		    buf_data(&from->in), len, from->rd_eof);
	else
		n = s->filter.ops->backend_data(s->filter.state, &s->filter,
		    buf_data(&from->in), len, from->rd_eof);
	if (n > len || s->moved > n)
		fatalx("filter %s consumed more than offered, or passed on "
		    "what it did not consume", s->filter.ops->name);
	buf_consume(&from->in, n - s->moved);	/* moved: already gone */
	/* The backend's first words are on their way to the client: from
	 * now on the idle timeout applies. */
	if (n > 0 && from == &s->backend && s->state == SESSION_GREETING) {
		enter_state(s, SESSION_RELAY);
		if (!s->bad_greeting)
			backendwatch_ok(s->lc->name, &s->lc->backend);
	}
	if (n == 0 && buf_full(&from->in) && buf_len(&to->out) == 0 &&
	    buf_len(&s->client.out) == 0 && (from != &s->client ||
	    s->filter.ops->awaiting == NULL ||
	    !s->filter.ops->awaiting(s->filter.state))) {
		session_kill(s, "filter_stall");
		return false;
	}
	return n > 0;
}

/* Whether the backend owes a verdict on credentials the client sent. */
static bool
verdict_owed(const struct session *s)
{
	return s->filter.ops->verdict_owed != NULL &&
	    s->filter.state != NULL &&
	    s->filter.ops->verdict_owed(s->filter.state);
}

/* Passes an end of stream on once everything before it was written. */
static bool
relay_shutdowns(struct session *s)
{
	struct conn *c = &s->client, *b = &s->backend;
	bool progress = false;

	if (c->rd_eof && buf_len(&c->in) == 0 && !b->wr_shut &&
	    !b->shut_pending && buf_len(&b->out) == 0) {
		b->shut_pending = true;
		progress = true;
	}
	if (b->rd_eof && buf_len(&b->in) == 0 && !c->wr_shut &&
	    !c->shut_pending && buf_len(&c->out) == 0 &&
	    !s->refused.listening) {
		c->shut_pending = true;
		progress = true;
	}
	return progress;
}

/*
 * Moves bytes until neither side can make progress or PUMP_ROUNDS have
 * passed (then kick_queue() has the session go on): read client,
 * filter, write backend; read backend, filter, write client. A side is
 * not read while its input buffer is full, and the filter does not move
 * bytes into a full output buffer, which is all the backpressure there
 * is. May kill the session.
 */
static void
relay_pump(struct session *s)
{
	struct conn *c = &s->client, *b = &s->backend;
	bool progress = true;
	int round;

	for (round = 0; progress && round < PUMP_ROUNDS; round++) {
		progress = conn_fill(s, c);
		if (!s->dead)
			progress |= run_filter(s, c, b);
		if (!s->dead)
			progress |= conn_flush(s, b, false);
		if (!s->dead)
			progress |= conn_fill(s, b);
		if (!s->dead)
			progress |= run_filter(s, b, c);
		if (!s->dead)
			progress |= conn_flush(s, c, true);
		if (!s->dead && c->gone && !verdict_owed(s)) {
			session_kill(s, s->end_reason);
			return;
		}
		if (!s->dead)
			progress |= relay_shutdowns(s);
		if (s->dead)
			return;
		/*
		 * Nothing else moved: the records the rounds gathered go now.
		 * A write that found the socket full may succeed this time,
		 * which makes room for the filter: another round, not an end
		 * with nobody watching the backend.
		 */
		if (!progress && tls_held(c)) {
			progress = conn_flush(s, c, false);
			if (s->dead)
				return;
		}
		if (s->filter_close != NULL && relaying(s)) {
			session_reject(s, NULL, s->filter_close);
			return;
		}
		if (s->starttls && buf_len(&c->out) == 0 && c->ssl == NULL) {
			s->starttls = false;
			if (buf_len(&c->in) > 0)
				log_info("%s starttls_discard bytes=%zu",
				    s->id, buf_len(&c->in));
			buf_consume(&c->in, buf_len(&c->in));
			start_handshake(s);
			if (!s->dead)
				do_handshake(s);
			return;
		}
	}
	if (c->rd_eof && c->wr_shut && b->rd_eof && b->wr_shut) {
		session_kill(s, s->end_reason);
		return;
	}
	/*
	 * The backend has said all it will and the client has it, with our
	 * end of stream: what the client sends now goes nowhere, and each
	 * byte would re-arm the idle timer, holding the session, its slot
	 * and its count for as long as the client trickles. A client of
	 * the backend itself would have been cut off: the linger is all
	 * this one gets to hang up.
	 */
	if (s->state == SESSION_RELAY && b->rd_eof && c->wr_shut) {
		session_reject(s, NULL, s->end_reason);
		return;
	}
	if (progress)
		s->kick = true;
}

static void
do_xclient(struct session *s)
{
	struct conn *b = &s->backend;
	enum backend_reply_rc rc;
	char cmd[512], why[64];
	bool progress = true;
	size_t len;
	int code, n;

	while (progress) {
		progress = conn_flush(s, b, false);
		if (s->state == SESSION_XCLIENT)
			progress |= conn_fill(s, b);
		if (s->state != SESSION_XCLIENT)
			return;		/* failed (conn_failed()) */
		rc = backend_reply_parse(buf_data(&b->in), buf_len(&b->in),
		    &len, &code);
		if (rc == BACKEND_REPLY_ERROR) {
			backend_fail(s, "bad SMTP reply during XCLIENT");
			return;
		}
		if (rc == BACKEND_REPLY_AGAIN) {
			if (b->rd_eof) {
				backend_fail(s, "closed during XCLIENT");
				return;
			}
			continue;
		}
		switch (s->xc_step) {
		case 0:		/* the greeting */
		case 1:		/* the EHLO reply */
			if (code != (s->xc_step == 0 ? 220 : 250)) {
				snprintf(why, sizeof(why), "%s refused: %d",
				    s->xc_step == 0 ? "greeting" : "EHLO",
				    code);
				backend_fail(s, why);
				return;
			}
			buf_consume(&b->in, len);
			n = s->xc_step == 0 ? backend_ehlo_cmd(cmd,
			    sizeof(cmd)) : backend_xclient_cmd(cmd,
			    sizeof(cmd), &s->peer.sa);
			if (n < 0 || buf_append(&b->out, cmd, (size_t)n) ==
			    -1) {
				backend_fail(s, "cannot build XCLIENT");
				return;
			}
			s->xc_step++;
			progress = true;
			break;
		default:	/* the XCLIENT reply: the client's greeting */
			if (code != 220) {
				snprintf(why, sizeof(why), "XCLIENT refused: "
				    "%d", code);
				backend_fail(s, why);
				return;
			}
			log_debug("%s xclient ok", s->id);
			/* That reply, still in b->in, is the client's
			 * greeting: the client has seen nothing yet. */
			enter_state(s, SESSION_GREETING);
			relay_pump(s);
			return;
		}
	}
}

/* --- events ----------------------------------------------------------- */

static void
session_step(struct session *s, bool from_backend)
{
	switch (s->state) {
	case SESSION_PROXY_HEADER:
		do_proxy_header(s);
		break;
	case SESSION_HANDSHAKE:
		do_handshake(s);
		break;
	case SESSION_CONNECT:
		/* Only writability of the backend means anything here. */
		if (from_backend)
			do_connect(s);
		break;
	case SESSION_XCLIENT:
		do_xclient(s);
		break;
	case SESSION_GREETING:
	case SESSION_RELAY:
	case SESSION_REJECT:
		relay_pump(s);
		break;
	case SESSION_NEW:
	case SESSION_ADMIT:
	case SESSION_DEAD:
		break;
	}
}

static void
client_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct session *s = container_of(w, struct session, client.io);

	(void)loop;
	if (revents & EV_READ)
		s->client.rd_ready = true;
	session_step(s, false);
	session_done(s);
}

static void
backend_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct session *s = container_of(w, struct session, backend.io);

	(void)loop;
	if (revents & EV_READ)
		s->backend.rd_ready = true;
	session_step(s, true);
	session_done(s);
}

/* Whether the filter has relayed every reply whole, so that a line of
 * moat's written now reaches the client as a reply of its own. */
static bool
replies_whole(const struct session *s)
{
	return s->filter.ops != NULL && s->filter.ops->between_replies != NULL &&
	    s->filter.state != NULL &&
	    s->filter.ops->between_replies(s->filter.state);
}

void
filter_close_saying(struct filter_io *io, const char *line,
    const char *reason)
{
	struct session *s = container_of(io, struct session, filter);

	if (replies_whole(s))
		(void)filter_to_client(io, line, strlen(line));
	filter_close(io, reason);
}

/*
 * Nothing moved either way for the idle time. The client reads what the
 * backend's own timeout would have said (Postfix 421 4.4.2, Dovecot's
 * -ERR) and, on TLS, a close_notify: mail clients report a connection
 * that just drops as broken ("unexpected eof", "non-properly
 * terminated"). A client side already closed gets nothing more, nor one
 * that a line would not reach as a reply of its own (replies_whole()):
 * a backend stalled inside a reply (a RETR body, a multi-line 250), a
 * STARTTLS "ready" whose handshake is next, a session already ending.
 */
static void
idle_timeout(struct session *s)
{
	if (s->client.wr_shut || s->client.ssl_broken ||
	    (s->state == SESSION_RELAY && !replies_whole(s))) {
		session_kill(s, "idle_timeout");
		return;
	}
	session_reject(s, s->lc->protocol == CFG_PROTO_SMTP ?
	    "421 4.4.2 Error: timeout exceeded, closing connection\r\n" :
	    "-ERR Disconnected for inactivity\r\n", "idle_timeout");
}

/*
 * The linger is over. A refused SMTP client still being answered has
 * not had our end of stream yet (relay_shutdowns() held it back): it
 * gets it now, one try and no waiting, with a close_notify on TLS, so
 * that it reads an orderly end and not a truncation.
 */
static void
linger_over(struct session *s)
{
	struct conn *c = &s->client;

	if (s->refused.listening && !c->wr_shut) {
		c->shut_pending = true;
		(void)conn_flush(s, c, false);
	}
	session_kill(s, s->end_reason);
}

/*
 * Mail protocols are server-first: a backend that accepted but has not
 * greeted within the connect timeout is hung (or a silent service on the
 * wrong port), and the client would otherwise wait for the idle timeout.
 */
static void
greeting_timeout(struct session *s)
{
	char why[64], d[32];

	snprintf(why, sizeof(why), "no greeting within %s",
	    duration_str(s->lc->connect_ms, d, sizeof(d)));
	backend_fail(s, why);
}

static void
session_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct session *s = container_of(w, struct session, timer);
	ev_tstamp left;

	(void)revents;
	switch (s->state) {
	case SESSION_PROXY_HEADER:
		proxy_fail(s, "timeout", true);
		break;
	case SESSION_HANDSHAKE:
		tls_failed(s, "timeout");
		session_kill(s, "handshake_timeout");
		break;
	case SESSION_CONNECT:
	case SESSION_XCLIENT:
		backend_fail(s, "timeout");
		break;
	case SESSION_GREETING:
		greeting_timeout(s);
		break;
	case SESSION_RELAY:
		/* Activity only stamps last_active; re-arm for the rest. */
		left = s->last_active + (ev_tstamp)s->lc->idle_ms / 1000. -
		    mono_s();
		if (left > 0.01) {
			ev_timer_set(w, left, 0.);
			ev_timer_start(loop, w);
		} else {
			idle_timeout(s);
		}
		break;
	case SESSION_REJECT:
		linger_over(s);
		break;
	case SESSION_NEW:
	case SESSION_ADMIT:
	case SESSION_DEAD:
		break;
	}
	session_done(s);
}

/* A refusal by the global cap: a metric, an event and, as for the
 * policy's refusals, a line unless a flood of them is being summed up.
 * sid is NULL when no session exists. */
static void
capacity_report(struct ev_loop *loop, const struct session_list *list,
    const struct cfg_listener *lc, const uint8_t addr[16], const char *sid,
    enum slots_verdict v)
{
	char detail[64];

	snprintf(detail, sizeof(detail), "sessions=%zu held=%" PRIu32,
	    slots_used(list->slots), slots_held(list->slots, addr));
	refusals_log(loop, addr, slots_verdict_str(v), lc->name, sid, detail);
	metrics_admit(lc->name, "capacity");
	emit_plain("reject", addr, lc->name, slots_verdict_str(v), sid);
}

/* The cap's refusal line on plaintext and STARTTLS listeners. */
static void
capacity_text(const struct cfg_listener *lc, char *buf, size_t len)
{
	if (lc->protocol == CFG_PROTO_SMTP)
		snprintf(buf, len, "421 4.7.0 %s too many connections, "
		    "try again later\r\n", lc->name);
	else
		snprintf(buf, len, "-ERR [SYS/TEMP] %s too many "
		    "connections, try again later\r\n", lc->name);
}

/* Refuses s for the cap: 421 / -ERR on plaintext and STARTTLS listeners,
 * a bare close on implicit TLS, where a reply would cost a handshake. */
static void
session_refuse_capacity(struct session *s, enum slots_verdict v)
{
	char msg[160];

	capacity_report(s->loop, s->list, s->lc, s->addr, s->id, v);
	if (s->lc->tls == CFG_TLS_IMPLICIT) {
		session_kill(s, "capacity");
		return;
	}
	capacity_text(s->lc, msg, sizeof(msg));
	session_reject(s, msg, "capacity");
}

/*
 * The global cap (slots.h), before the PROXY header and policy. A trusted
 * load balancer carries many clients, so it is exempt from the reserve
 * rule, not from the cap. Returns false when the session was refused (and
 * is ending).
 */
static bool
session_take_slot(struct session *s)
{
	enum slots_verdict v;

	v = slots_take(s->list->slots, s->addr,
	    s->lc->accept_proxy && proxy_trusted(s));
	if (v == SLOTS_OK) {
		memcpy(s->slot, s->addr, sizeof(s->slot));
		s->slotted = true;
		return true;
	}
	session_refuse_capacity(s, v);
	return false;
}

/*
 * Accepted sockets come with SO_LINGER set to close with a reset
 * (listener.c); this makes close() orderly again, sending what is queued
 * and then end of stream, as every connection but a flood's needs.
 */
static void
linger_clear(int fd)
{
	struct linger lg = { .l_onoff = 0, .l_linger = 0 };

	(void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
}

/*
 * Closes a connection refused without a reply. The first refusal of an
 * address in a while gets an orderly close (the client reads end of
 * stream); the repeats of a flood keep the reset they were accepted with,
 * so the kernel frees each socket at once instead of running the FIN
 * exchange and holding it in TIME_WAIT.
 */
static void
close_refused(int fd, bool flood)
{
	if (!flood)
		linger_clear(fd);
	close(fd);
}

/* What the accept4 address decided before a session existed. */
struct screen {
	bool slotted;		/* a slot of list->slots was taken */
	bool admitted;
	uint32_t tag;		/* nonzero: holds a guard_release() */
	enum policy_reason reason;
};

/*
 * A connection the cap leaves no slot for, policy having judged it: the
 * one line it is due (the cap's 421 / -ERR, or the policy's refusal) is
 * written at once on plaintext and STARTTLS listeners, and the socket is
 * closed. No session is made, so while the cap is full a flood costs no
 * memory and no descriptor beyond accept4 and close.
 */
static void
refuse_unslotted(struct ev_loop *loop, struct session_list *list,
    const struct cfg_listener *lc, int fd, const uint8_t addr[16],
    const char *sid, const struct screen *sc, enum slots_verdict v)
{
	char msg[160];

	if (sc->admitted) {
		if (sc->tag != 0)
			guard_release(addr, sc->tag);
		capacity_report(loop, list, lc, addr, sid, v);
		capacity_text(lc, msg, sizeof(msg));
	} else {
		/* policy's own event is out already (guard_admit) */
		refusals_log(loop, addr, policy_reason_str(sc->reason),
		    lc->name, sid, NULL);
		guard_refusal(lc, sc->reason, msg, sizeof(msg));
	}
	/* A fresh socket's buffer takes one line; a short write loses
	 * only the courtesy. */
	if (lc->tls != CFG_TLS_IMPLICIT)
		(void)send(fd, msg, strlen(msg), MSG_NOSIGNAL | MSG_DONTWAIT);
	close_refused(fd, false);
}

/*
 * Without accept_proxy the TCP peer is the client, so policy and the cap
 * decide from the accept4 address before anything is allocated: a flood
 * from a banned address (one the kernel set has not stopped yet) costs
 * accept4, a hash lookup, an event when events are wanted, and close.
 * Policy comes first, so that a full cap neither turns a ban into a 421
 * nor keeps a flood out of its connection-rate window (and its ban), and
 * an allowed address is spared the reserve rule; the cap itself holds for
 * everyone. Returns true when fd was refused and closed here (a banned
 * address, or no slot left); otherwise *sc says what the session must do.
 */
static bool
screen_at_accept(struct ev_loop *loop, struct session_list *list,
    const struct cfg_listener *lc, int fd, const uint8_t addr[16],
    const char *sid, struct screen *sc)
{
	enum slots_verdict v;
	bool flood;

	sc->slotted = false;
	sc->tag = 0;
	sc->admitted = guard_admit(addr, lc, sid, &sc->reason, &sc->tag);
	if (!sc->admitted && sc->reason == POLICY_BANNED) {
		flood = !refusals_log(loop, addr,
		    policy_reason_str(sc->reason), lc->name, sid, NULL);
		close_refused(fd, flood);
		return true;
	}
	if (list->slots != NULL) {
		v = slots_take(list->slots, addr,
		    sc->admitted && sc->reason == POLICY_ALLOWLIST);
		if (v != SLOTS_OK) {
			refuse_unslotted(loop, list, lc, fd, addr, sid, sc, v);
			return true;
		}
		sc->slotted = true;
	}
	if (sc->admitted)
		guard_admitted(lc);
	return false;
}

/* Undoes what screen_at_accept() took, when no session can carry it. */
static void
screen_undo(struct session_list *list, const uint8_t addr[16],
    const struct screen *sc)
{
	if (sc->tag != 0)
		guard_release(addr, sc->tag);
	if (sc->slotted)
		slots_give(list->slots, addr);
}

void
session_start(struct ev_loop *loop, struct session_list *list,
    const struct cfg_listener *lc, int fd,
    const struct sockaddr *peer, socklen_t peerlen)
{
	struct session *s;
	struct screen sc;
	uint8_t a[16];
	char id[sizeof(s->id)];
	bool screened = false;

	/* Taken first, so that a refusal's event and log line name the
	 * connection as the session's own lines do. */
	session_new_id(id, sizeof(id));
	if (!lc->accept_proxy && addr_to_v6(peer, a) == 0) {
		if (screen_at_accept(loop, list, lc, fd, a, id, &sc))
			return;
		screened = true;
	}
	linger_clear(fd);
	if ((s = calloc(1, sizeof(*s))) == NULL) {
		log_warnx("session: out of memory");
		if (screened)
			screen_undo(list, a, &sc);
		close(fd);
		return;
	}
	memcpy(s->id, id, sizeof(s->id));
	s->loop = loop;
	s->list = list;
	s->gen = gen_ref(list->gen);
	s->lc = lc;
	s->state = SESSION_NEW;
	s->started = mono_s();
	s->filter.ops = filter_for(lc);
	conn_init(&s->client, fd, client_io_cb, RELAY_BUF_UP, RELAY_BUF);
	conn_init(&s->backend, -1, backend_io_cb, RELAY_BUF, RELAY_BUF_UP);
	ev_timer_init(&s->timer, session_timer_cb, 0., 0.);
	if (peerlen > sizeof(s->peer))
		peerlen = sizeof(s->peer);
	memcpy(&s->peer, peer, peerlen);
	set_client_addr(s);

	s->next = list->head;
	if (list->head != NULL)
		list->head->prev = s;
	list->head = s;
	list->n++;

	if (screened) {
		if (sc.slotted) {
			memcpy(s->slot, a, sizeof(s->slot));
			s->slotted = true;
		}
		enter_state(s, SESSION_ADMIT);
		session_verdict(s, sc.admitted, sc.reason, sc.tag);
	} else if (list->slots == NULL || session_take_slot(s)) {
		if (!lc->accept_proxy)
			session_admit(s);
		else if (!proxy_trusted(s))
			proxy_untrusted(s);
		else
			enter_state(s, SESSION_PROXY_HEADER);
	}
	session_done(s);
}

/*
 * Whether the client reads whole replies only, so that a line of moat's
 * written now would reach it as one: its side is open and not ending,
 * no STARTTLS handshake is due, and the filter relays no reply in part
 * (filter_ops.between_replies). Before the backend's first words
 * (connect, XCLIENT, greeting) the client has read nothing at all, and
 * the line stands in for the greeting, as after a backend failure
 * (unavailable()); during a handshake it could not be written.
 */
static bool
goodbye_fits(const struct session *s)
{
	const struct conn *c = &s->client;

	if (s->dead || c->fd < 0 || c->gone || c->ssl_broken || c->wr_shut ||
	    c->shut_pending || s->starttls)
		return false;
	switch (s->state) {
	case SESSION_CONNECT:
	case SESSION_XCLIENT:
	case SESSION_GREETING:
		return true;
	case SESSION_RELAY:
		return replies_whole(s);
	case SESSION_NEW:
	case SESSION_PROXY_HEADER:
	case SESSION_ADMIT:
	case SESSION_HANDSHAKE:
	case SESSION_REJECT:
	case SESSION_DEAD:
		break;
	}
	return false;
}

/*
 * moat stops (drain_timeout is over, or a second signal came) and s is
 * closed now. RFC 5321 3.8: a server that shuts down should say 421
 * first; a POP3 client reads -ERR likewise, and on TLS a close_notify,
 * so that it reads an orderly end and not a truncation. Where a line
 * would land inside a reply (goodbye_fits()) the client gets none, as
 * before. A session lingering after its last reply gets what it still
 * had coming (linger_over()). One try and no waiting, as there: a
 * client whose socket is full reads what fitted.
 */
static void
session_goodbye(struct session *s)
{
	struct conn *c = &s->client;
	const char *msg;

	if (s->state == SESSION_REJECT) {
		c->shut_pending = !c->wr_shut;
		(void)conn_flush(s, c, false);
		return;
	}
	if (!goodbye_fits(s))
		return;
	msg = s->lc->protocol == CFG_PROTO_SMTP ?
	    "421 4.3.2 Service shutting down, closing connection\r\n" :
	    "-ERR Service shutting down\r\n";
	if (buf_append(&c->out, msg, strlen(msg)) == -1)
		return;
	c->shut_pending = true;
	(void)conn_flush(s, c, false);
}

void
session_list_close_all(struct session_list *list, const char *reason)
{
	struct session *s;

	while ((s = list->head) != NULL) {
		session_goodbye(s);
		session_kill(s, reason);
		session_free(s);
	}
	free(list->kicked);
	list->kicked = NULL;
	list->nkicked = list->kicked_cap = 0;
	refusals_flush();
	buf_pool_clear();
	tlsalloc_thread_end();
	tlsout_thread_end();
}

size_t
session_list_close_addr(struct session_list *list, const uint8_t addr[16],
    const char *reason)
{
	struct session *s, *next;
	size_t n = 0;

	for (s = list->head; s != NULL; s = next) {
		next = s->next;
		/* Refused sessions and those ending after a last reply (the
		 * one whose failure made the ban) finish on their own. */
		if (!s->admitted || s->dead || s->state == SESSION_REJECT ||
		    s->filter_close != NULL ||
		    memcmp(s->addr, addr, sizeof(s->addr)) != 0)
			continue;
		session_kill(s, reason);
		session_free(s);
		n++;
	}
	return n;
}
