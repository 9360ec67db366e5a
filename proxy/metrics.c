/* metrics.c - counters for operators, served in Prometheus text format. */
#include "metrics.h"

#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <ev.h>

#include "acceptpause.h"
#include "addr.h"
#include "backendwatch.h"
#include "control.h"
#include "events.h"
#include "gen.h"
#include "geo.h"
#include "guard.h"
#include "listener.h"
#include "log.h"
#include "moat_version.h"
#include "sbuf.h"
#include "tls.h"

/* Label sets per family before new ones fold into "other". */
#define SERIES_MAX 256
/* An HTTP request may not be longer. A scraper sends its request at
 * once: a head that takes longer only holds a place; the response may
 * take longer to read. */
#define HTTP_REQ_MAX 4096
#define HTTP_HEAD_TIMEOUT 3.
#define HTTP_TIMEOUT 10.
#define HTTP_CLIENTS_MAX 32
/* A scraper asks one request at a time (moat answers each on its own
 * connection): more from one address (an IPv6 /64) would only crowd out
 * the others. */
#define HTTP_PER_SOURCE_MAX 4
/* A scrape larger than this is cut (it would take ~40 000 series). */
#define SCRAPE_MAX (4 * 1024 * 1024)

#define container_of(p, type, member) \
	((type *)(void *)((char *)(p) - offsetof(type, member)))

/* --- counters --------------------------------------------------------- */

struct series {
	char *l[2];
	uint64_t v;
};

struct family {
	const char *name;
	const char *help;
	const char *label[2];	/* label[1] NULL: one label */
	struct series *s;
	size_t n, cap;
};

enum {
	F_CONN,
	F_REJECT,
	F_TLS_OK,
	F_TLS_FAIL,
	F_AUTH_FAIL,
	F_SMUGGLING,
	F_GLITCH,
	F_BANS,
	F_BACKEND_FAIL,
	F_BACKEND_STRAY,
	F_BYTES,
	F_COUNT
};

static struct family fams[F_COUNT] = {
	[F_CONN] = { "moat_connections_total",
	    "Connections judged at accept, by listener and verdict.",
	    { "listener", "verdict" }, NULL, 0, 0 },
	[F_REJECT] = { "moat_rejects_total",
	    "Connections refused at accept, by listener and policy reason.",
	    { "listener", "reason" }, NULL, 0, 0 },
	[F_TLS_OK] = { "moat_tls_handshakes_total",
	    "Completed TLS handshakes, by protocol version and cipher.",
	    { "version", "cipher" }, NULL, 0, 0 },
	[F_TLS_FAIL] = { "moat_tls_handshake_failures_total",
	    "Failed TLS handshakes, by reason.",
	    { "reason", NULL }, NULL, 0, 0 },
	[F_AUTH_FAIL] = { "moat_auth_failures_total",
	    "Failed authentication replies seen, by listener.",
	    { "listener", NULL }, NULL, 0, 0 },
	[F_SMUGGLING] = { "moat_smuggling_aborts_total",
	    "Sessions ended for an SMTP smuggling attempt, by listener.",
	    { "listener", NULL }, NULL, 0, 0 },
	[F_GLITCH] = { "moat_protocol_glitches_total",
	    "Protocol glitches (early talkers, HTTP on a mail port), by "
	    "listener.", { "listener", NULL }, NULL, 0, 0 },
	[F_BANS] = { "moat_bans_total",
	    "Bans made, by reason.",
	    { "reason", NULL }, NULL, 0, 0 },
	[F_BACKEND_FAIL] = { "moat_backend_connect_failures_total",
	    "Sessions whose backend could not be reached or failed before "
	    "its greeting, by listener.",
	    { "listener", NULL }, NULL, 0, 0 },
	[F_BACKEND_STRAY] = { "moat_backend_stray_replies_total",
	    "Sessions ended by a backend reply no command asked for (a "
	    "hang-up line aside), by listener.",
	    { "listener", NULL }, NULL, 0, 0 },
	[F_BYTES] = { "moat_relayed_bytes_total",
	    "Bytes relayed, by listener and direction (client_to_backend is "
	    "what clients sent).",
	    { "listener", "direction" }, NULL, 0, 0 },
};

/* Session length, seconds. */
static const double hist_bounds[] = {
	0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600,
};
#define HIST_N (sizeof(hist_bounds) / sizeof(hist_bounds[0]))

struct hist {
	char *listener;
	uint64_t bucket[HIST_N];	/* not cumulative; summed on output */
	uint64_t count;
	double sum;
};

static struct {
	pthread_mutex_t mu;
	struct hist *h;
	size_t nh, caph;
	struct metrics_totals t;
} m = { .mu = PTHREAD_MUTEX_INITIALIZER };

static void
start_time(void)
{
	struct timespec ts;

	if (m.t.start_unix == 0) {
		clock_gettime(CLOCK_REALTIME, &ts);
		m.t.start_unix = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
	}
}

/* Finds or adds the series (a, b) of f; NULL when out of memory. Called
 * with the mutex held. */
static struct series *
series_get(struct family *f, const char *a, const char *b)
{
	struct series *s;
	size_t i;

	if (a == NULL)
		a = "";
	if (f->label[1] == NULL)
		b = NULL;
	else if (b == NULL)
		b = "";
	for (i = 0; i < f->n; i++) {
		s = &f->s[i];
		if (strcmp(s->l[0], a) == 0 &&
		    (b == NULL || strcmp(s->l[1], b) == 0))
			return s;
	}
	/* The last slot is kept for "other", so that it always exists. */
	if (f->n >= SERIES_MAX - 1 && (strcmp(a, "other") != 0 ||
	    (b != NULL && strcmp(b, "other") != 0)))
		return series_get(f, "other", b ? "other" : NULL);
	if (f->n >= SERIES_MAX)
		return NULL;
	if (f->n == f->cap) {
		size_t cap = f->cap ? f->cap * 2 : 8;

		if ((s = realloc(f->s, cap * sizeof(*s))) == NULL)
			return NULL;
		f->s = s;
		f->cap = cap;
	}
	s = &f->s[f->n];
	memset(s, 0, sizeof(*s));
	if ((s->l[0] = strdup(a)) == NULL ||
	    (b != NULL && (s->l[1] = strdup(b)) == NULL)) {
		free(s->l[0]);
		return NULL;
	}
	f->n++;
	return s;
}

static void
count(int fam, const char *a, const char *b, uint64_t n)
{
	struct series *s;

	if ((s = series_get(&fams[fam], a, b)) != NULL)
		s->v += n;
}

void
metrics_init(void)
{
	pthread_mutex_lock(&m.mu);
	start_time();
	pthread_mutex_unlock(&m.mu);
}

void
metrics_admit(const char *listener, const char *reason)
{
	pthread_mutex_lock(&m.mu);
	start_time();
	m.t.connections++;
	if (reason == NULL) {
		m.t.accepted++;
		count(F_CONN, listener, "accepted", 1);
	} else {
		m.t.rejected++;
		count(F_CONN, listener, "rejected", 1);
		count(F_REJECT, listener, reason, 1);
	}
	pthread_mutex_unlock(&m.mu);
}

void
metrics_tls_handshake(const char *version, const char *cipher)
{
	pthread_mutex_lock(&m.mu);
	m.t.tls_handshakes++;
	count(F_TLS_OK, version, cipher, 1);
	pthread_mutex_unlock(&m.mu);
}

void
metrics_tls_failure(const char *reason)
{
	pthread_mutex_lock(&m.mu);
	m.t.tls_failures++;
	count(F_TLS_FAIL, reason, NULL, 1);
	pthread_mutex_unlock(&m.mu);
}

void
metrics_policy_event(const char *listener, enum policy_event ev)
{
	pthread_mutex_lock(&m.mu);
	switch (ev) {
	case POLICY_EV_AUTH_FAIL:
		m.t.auth_failures++;
		count(F_AUTH_FAIL, listener, NULL, 1);
		break;
	case POLICY_EV_SMUGGLING:
		m.t.smuggling++;
		count(F_SMUGGLING, listener, NULL, 1);
		break;
	case POLICY_EV_GLITCH:
		count(F_GLITCH, listener, NULL, 1);
		break;
	case POLICY_EV_AUTH_OK:
		break;
	}
	pthread_mutex_unlock(&m.mu);
}

void
metrics_ban(const char *reason)
{
	pthread_mutex_lock(&m.mu);
	m.t.bans++;
	count(F_BANS, reason, NULL, 1);
	pthread_mutex_unlock(&m.mu);
}

void
metrics_backend_failure(const char *listener)
{
	pthread_mutex_lock(&m.mu);
	m.t.backend_failures++;
	count(F_BACKEND_FAIL, listener, NULL, 1);
	pthread_mutex_unlock(&m.mu);
}

void
metrics_backend_stray(const char *listener)
{
	pthread_mutex_lock(&m.mu);
	count(F_BACKEND_STRAY, listener, NULL, 1);
	pthread_mutex_unlock(&m.mu);
}

static struct hist *
hist_get(const char *listener)
{
	struct hist *h;
	size_t i;

	for (i = 0; i < m.nh; i++)
		if (strcmp(m.h[i].listener, listener) == 0)
			return &m.h[i];
	if (m.nh >= SERIES_MAX)
		return NULL;
	if (m.nh == m.caph) {
		size_t cap = m.caph ? m.caph * 2 : 4;

		if ((h = realloc(m.h, cap * sizeof(*h))) == NULL)
			return NULL;
		m.h = h;
		m.caph = cap;
	}
	h = &m.h[m.nh];
	memset(h, 0, sizeof(*h));
	if ((h->listener = strdup(listener)) == NULL)
		return NULL;
	m.nh++;
	return h;
}

void
metrics_session_end(const char *listener, double seconds,
    uint64_t from_client, uint64_t to_client)
{
	struct hist *h;
	size_t i;

	if (listener == NULL)
		listener = "";
	if (seconds < 0)
		seconds = 0;
	pthread_mutex_lock(&m.mu);
	count(F_BYTES, listener, "client_to_backend", from_client);
	count(F_BYTES, listener, "backend_to_client", to_client);
	if ((h = hist_get(listener)) != NULL) {
		for (i = 0; i < HIST_N; i++)
			if (seconds <= hist_bounds[i]) {
				h->bucket[i]++;
				break;
			}
		h->count++;
		h->sum += seconds;
	}
	pthread_mutex_unlock(&m.mu);
}

void
metrics_totals(struct metrics_totals *t)
{
	pthread_mutex_lock(&m.mu);
	start_time();
	*t = m.t;
	pthread_mutex_unlock(&m.mu);
}

/* --- exposition ------------------------------------------------------- */

/* A label value: backslash, double quote and newline escaped. */
static void
label_value(struct sbuf *out, const char *v)
{
	(void)sbuf_add(out, "\"", 1);
	for (; *v; v++) {
		if (*v == '\\')
			(void)sbuf_adds(out, "\\\\");
		else if (*v == '"')
			(void)sbuf_adds(out, "\\\"");
		else if (*v == '\n')
			(void)sbuf_adds(out, "\\n");
		else
			(void)sbuf_add(out, v, 1);
	}
	(void)sbuf_add(out, "\"", 1);
}

static void
header(struct sbuf *out, const char *name, const char *type,
    const char *help)
{
	(void)sbuf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help,
	    name, type);
}

static void
render_family(struct sbuf *out, const struct family *f)
{
	size_t i;

	header(out, f->name, "counter", f->help);
	for (i = 0; i < f->n; i++) {
		(void)sbuf_printf(out, "%s{%s=", f->name, f->label[0]);
		label_value(out, f->s[i].l[0]);
		if (f->label[1] != NULL) {
			(void)sbuf_printf(out, ",%s=", f->label[1]);
			label_value(out, f->s[i].l[1]);
		}
		(void)sbuf_printf(out, "} %llu\n",
		    (unsigned long long)f->s[i].v);
	}
}

static void
render_hist(struct sbuf *out)
{
	const char *name = "moat_session_duration_seconds";
	uint64_t cum;
	size_t i, j;

	header(out, name, "histogram",
	    "Length of sessions from accept to close, by listener.");
	for (i = 0; i < m.nh; i++) {
		const struct hist *h = &m.h[i];

		cum = 0;
		for (j = 0; j < HIST_N; j++) {
			cum += h->bucket[j];
			(void)sbuf_printf(out, "%s_bucket{listener=", name);
			label_value(out, h->listener);
			(void)sbuf_printf(out, ",le=\"%g\"} %llu\n",
			    hist_bounds[j], (unsigned long long)cum);
		}
		(void)sbuf_printf(out, "%s_bucket{listener=", name);
		label_value(out, h->listener);
		(void)sbuf_printf(out, ",le=\"+Inf\"} %llu\n",
		    (unsigned long long)h->count);
		(void)sbuf_printf(out, "%s_sum{listener=", name);
		label_value(out, h->listener);
		(void)sbuf_printf(out, "} %.6f\n", h->sum);
		(void)sbuf_printf(out, "%s_count{listener=", name);
		label_value(out, h->listener);
		(void)sbuf_printf(out, "} %llu\n",
		    (unsigned long long)h->count);
	}
}

/* Per event-loop thread: how the kernel spread the connections. */
static void
render_workers(struct sbuf *out, const struct control_server *srv)
{
	uint64_t accepted;
	size_t i, n = 0, sessions;

	while (srv->worker(srv->arg, n, &sessions, &accepted))
		n++;
	header(out, "moat_workers", "gauge", "Event-loop threads (daemon."
	    "workers).");
	(void)sbuf_printf(out, "moat_workers %zu\n", n);
	header(out, "moat_worker_connections_total", "counter",
	    "Connections taken at accept, admitted or refused, by "
	    "worker.");
	for (i = 0; srv->worker(srv->arg, i, &sessions, &accepted); i++)
		(void)sbuf_printf(out, "moat_worker_connections_total{worker="
		    "\"%zu\"} %llu\n", i, (unsigned long long)accepted);
	header(out, "moat_worker_sessions", "gauge",
	    "Sessions open now, by worker.");
	for (i = 0; srv->worker(srv->arg, i, &sessions, &accepted); i++)
		(void)sbuf_printf(out, "moat_worker_sessions{worker=\"%zu\"} "
		    "%zu\n", i, sessions);
}

struct cert_out {
	struct sbuf *out;
	int64_t now;
	bool timestamp;		/* not_after rather than seconds left */
};

static void
render_cert(void *arg, const char *name, int64_t not_after)
{
	struct cert_out *co = arg;

	if (not_after == 0)
		return;
	(void)sbuf_printf(co->out, "%s{certificate=", co->timestamp ?
	    "moat_certificate_not_after_timestamp_seconds" :
	    "moat_certificate_expiry_seconds");
	label_value(co->out, name);
	(void)sbuf_printf(co->out, "} %lld\n", (long long)(co->timestamp ?
	    not_after : not_after - co->now));
}

void
metrics_render(struct sbuf *out, const struct control_server *srv)
{
	struct policy_stats st;
	struct policy *p;
	const struct geo *geo;
	struct cert_out co;
	char why[128];
	int64_t since;
	size_t i;

	pthread_mutex_lock(&m.mu);
	start_time();
	header(out, "moat_info", "gauge", "Version of the running moat.");
	(void)sbuf_adds(out, "moat_info{version=");
	label_value(out, MOAT_VERSION);
	(void)sbuf_adds(out, "} 1\n");
	header(out, "moat_start_time_seconds", "gauge",
	    "When moat started, in Unix seconds.");
	(void)sbuf_printf(out, "moat_start_time_seconds %.3f\n",
	    m.t.start_unix);
	for (i = 0; i < F_COUNT; i++)
		render_family(out, &fams[i]);
	render_hist(out);
	pthread_mutex_unlock(&m.mu);

	if ((p = guard_policy()) != NULL) {
		policy_stats(p, guard_now_ms(), &st);
		header(out, "moat_bans_active", "gauge",
		    "Addresses banned now.");
		(void)sbuf_printf(out, "moat_bans_active %zu\n",
		    st.bans_active);
		header(out, "moat_bans_evicted_total", "counter",
		    "Bans in force dropped from the full ban table "
		    "(ban.max_entries), and from the firewall sets with them.");
		(void)sbuf_printf(out, "moat_bans_evicted_total %llu\n",
		    (unsigned long long)st.bans_evicted);
		header(out, "moat_tracked_clients", "gauge",
		    "Client keys held in the rate windows.");
		(void)sbuf_printf(out, "moat_tracked_clients %zu\n",
		    st.tracked);
		header(out, "moat_tracked_evicted_total", "counter",
		    "Client keys dropped from the full rate windows "
		    "(policy.rate.max_tracked) while they still counted "
		    "something: their counts were forgotten.");
		(void)sbuf_printf(out, "moat_tracked_evicted_total %llu\n",
		    (unsigned long long)st.tracked_evicted);
		header(out, "moat_geo_lookup_errors_total", "counter",
		    "Country lookups that failed (a damaged database); "
		    "those clients count as unknown.");
		(void)sbuf_printf(out, "moat_geo_lookup_errors_total %llu\n",
		    (unsigned long long)guard_geo_errors());
	}
	/* Its date, not its age: an alert on a stale database is
	 * time() - this, in PromQL. */
	if ((geo = guard_geo_db()) != NULL) {
		header(out, "moat_geo_database_build_timestamp_seconds",
		    "gauge", "When the country database in force was built, "
		    "in Unix seconds.");
		(void)sbuf_printf(out, "moat_geo_database_build_timestamp_"
		    "seconds %llu\n", (unsigned long long)geo_build_epoch(geo));
	}
	header(out, "moat_events_written_total", "counter",
	    "Block events written to the events sink.");
	(void)sbuf_printf(out, "moat_events_written_total %llu\n",
	    (unsigned long long)events_written());
	header(out, "moat_events_dropped_total", "counter",
	    "Block events that could not be written (full disk, ...).");
	(void)sbuf_printf(out, "moat_events_dropped_total %llu\n",
	    (unsigned long long)events_dropped());
	header(out, "moat_events_syslog_dropped_total", "counter",
	    "Block events not sent to syslog (its reader lagged, or it "
	    "could not be reached).");
	(void)sbuf_printf(out, "moat_events_syslog_dropped_total %llu\n",
	    (unsigned long long)events_syslog_dropped());
	header(out, "moat_events_failing", "gauge", "1 while writing to an "
	    "events sink fails, from its first failure to the next success.");
	(void)sbuf_printf(out, "moat_events_failing{sink=\"file\"} %d\n"
	    "moat_events_failing{sink=\"syslog\"} %d\n",
	    events_file_failing(&since, why, sizeof(why)),
	    events_syslog_failing(&since, why, sizeof(why)));
	if (guard_fw_on()) {
		header(out, "moat_firewall_failing", "gauge", "1 while writes "
		    "to the firewall sets fail (bans are enforced in moat "
		    "only).");
		(void)sbuf_printf(out, "moat_firewall_failing %d\n",
		    guard_fw_failing_since() != 0);
	}
	header(out, "moat_backends_failing", "gauge", "Backends whose "
	    "sessions fail now (moatctl status names them).");
	(void)sbuf_printf(out, "moat_backends_failing %zu\n",
	    backendwatch_failing());
	if (srv == NULL)
		return;
	header(out, "moat_sessions", "gauge", "Sessions open now.");
	(void)sbuf_printf(out, "moat_sessions %zu\n", srv->sessions(srv->arg));
	render_workers(out, srv);
	co.out = out;
	co.now = (int64_t)time(NULL);
	co.timestamp = false;
	header(out, "moat_certificate_expiry_seconds", "gauge",
	    "Seconds until the certificate expires (negative: expired).");
	tls_set_certs(gen_tls(srv->gen(srv->arg)), render_cert, &co);
	co.timestamp = true;
	header(out, "moat_certificate_not_after_timestamp_seconds", "gauge",
	    "End of the certificate's validity, in Unix seconds.");
	tls_set_certs(gen_tls(srv->gen(srv->arg)), render_cert, &co);
}

/* --- the HTTP endpoint ------------------------------------------------ */

struct mclient {
	struct mclient *prev, *next;
	struct metrics_http *mh;
	int fd;
	uint8_t peer[16];	/* addr_to_v6() form */
	ev_io io;
	ev_timer timer;
	char req[HTTP_REQ_MAX];
	size_t reqlen;
	struct sbuf out;	/* the response, once the request is read */
	bool responding;
	bool lingering;		/* response sent: reading to EOF */
};

struct metrics_http {
	struct ev_loop *loop;
	const struct control_server *srv;
	int fd;
	ev_io io;
	struct acceptpause pause;	/* when descriptors run out */
	struct mclient *clients;
	size_t nclients;
};

static void
mclient_free(struct mclient *c)
{
	struct metrics_http *mh = c->mh;

	ev_io_stop(mh->loop, &c->io);
	ev_timer_stop(mh->loop, &c->timer);
	close(c->fd);
	sbuf_clear(&c->out);
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		mh->clients = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	mh->nclients--;
	free(c);
}

/* head: the headers of the response alone (HEAD); extra: more header
 * lines, each ending in CRLF. */
static void
mclient_respond(struct mclient *c, const char *status, struct sbuf *body,
    bool head, const char *extra)
{
	struct ev_loop *loop = c->mh->loop;

	(void)sbuf_printf(&c->out, "HTTP/1.0 %s\r\n"
	    "Content-Type: %s\r\n"
	    "Content-Length: %zu\r\n%s"
	    "Connection: close\r\n\r\n", status, body != NULL ?
	    "text/plain; version=0.0.4; charset=utf-8" :
	    "text/plain; charset=utf-8",
	    body != NULL ? body->len : strlen(status) + 1, extra);
	if (body != NULL && !head)
		(void)sbuf_add(&c->out, body->p ? body->p : "", body->len);
	else if (body == NULL)
		(void)sbuf_printf(&c->out, "%s\n", status);
	c->responding = true;
	ev_io_stop(loop, &c->io);
	ev_io_set(&c->io, c->fd, EV_WRITE);
	ev_io_start(loop, &c->io);
	ev_timer_stop(loop, &c->timer);
	ev_timer_set(&c->timer, HTTP_TIMEOUT, 0.);
	ev_timer_start(loop, &c->timer);
}

/* Looks at a complete request head; answers it. */
static void
mclient_request(struct mclient *c)
{
	struct sbuf body;
	char *sp1, *sp2, *eol;
	size_t mlen, plen;
	bool head, nul;

	c->req[c->reqlen] = '\0';
	nul = memchr(c->req, '\0', c->reqlen) != NULL;
	eol = strpbrk(c->req, "\r\n");
	if (eol != NULL)
		*eol = '\0';
	sp1 = strchr(c->req, ' ');
	sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
	if (nul || sp1 == NULL || sp2 == NULL ||
	    strncmp(sp2 + 1, "HTTP/1.", 7) != 0) {
		mclient_respond(c, "400 Bad Request", NULL, false, "");
		return;
	}
	mlen = (size_t)(sp1 - c->req);
	plen = (size_t)(sp2 - (sp1 + 1));
	if (!((plen == 8 && memcmp(sp1 + 1, "/metrics", 8) == 0) ||
	    (plen > 8 && memcmp(sp1 + 1, "/metrics?", 9) == 0))) {
		mclient_respond(c, "404 Not Found", NULL, false, "");
		return;
	}
	head = mlen == 4 && memcmp(c->req, "HEAD", 4) == 0;
	if (!head && (mlen != 3 || memcmp(c->req, "GET", 3) != 0)) {
		mclient_respond(c, "405 Method Not Allowed", NULL, false,
		    "Allow: GET, HEAD\r\n");
		return;
	}
	sbuf_init(&body, SCRAPE_MAX);
	metrics_render(&body, c->mh->srv);
	if (sbuf_overflow(&body))
		log_warnx("metrics: scrape larger than %d bytes, cut",
		    SCRAPE_MAX);
	sbuf_init(&c->out, SCRAPE_MAX + 512);
	mclient_respond(c, "200 OK", &body, head, "");
	sbuf_clear(&body);
}

static void
mclient_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct mclient *c = container_of(w, struct mclient, io);
	ssize_t n;

	(void)revents;
	if (c->lingering) {
		/* Closing with unread input would reset the connection and
		 * could destroy the response before the client reads it. */
		n = read(c->fd, c->req, sizeof(c->req));
		if (n == 0 || (n == -1 && errno != EAGAIN && errno != EINTR))
			mclient_free(c);
		return;
	}
	if (c->responding) {
		n = write(c->fd, c->out.p, c->out.len);
		if (n == -1 && (errno == EAGAIN || errno == EINTR))
			return;
		if (n <= 0) {
			mclient_free(c);
			return;
		}
		sbuf_consume(&c->out, (size_t)n);
		if (c->out.len == 0) {
			(void)shutdown(c->fd, SHUT_WR);
			c->lingering = true;
			ev_io_stop(loop, &c->io);
			ev_io_set(&c->io, c->fd, EV_READ);
			ev_io_start(loop, &c->io);
			ev_timer_stop(loop, &c->timer);
			ev_timer_set(&c->timer, 2., 0.);
			ev_timer_start(loop, &c->timer);
		}
		return;
	}
	n = read(c->fd, c->req + c->reqlen, sizeof(c->req) - 1 - c->reqlen);
	if (n == -1 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		mclient_free(c);
		return;
	}
	c->reqlen += (size_t)n;
	c->req[c->reqlen] = '\0';
	/* A NUL is no part of a request, and would hide its end from
	 * string functions: answered at once, by mclient_request(). */
	if (memmem(c->req, c->reqlen, "\r\n\r\n", 4) != NULL ||
	    memmem(c->req, c->reqlen, "\n\n", 2) != NULL ||
	    memchr(c->req, '\0', c->reqlen) != NULL) {
		mclient_request(c);
		return;
	}
	if (c->reqlen == sizeof(c->req) - 1) {
		sbuf_init(&c->out, 1024);
		mclient_respond(c, "431 Request Header Fields Too Large",
		    NULL, false, "");
	}
}

static void
mclient_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct mclient *c = container_of(w, struct mclient, timer);

	(void)loop;
	(void)revents;
	mclient_free(c);
}

/* Whether the address (an IPv6 one's /64) already holds its share of
 * the connections. */
static bool
metrics_source_full(const struct metrics_http *mh, const uint8_t peer[16])
{
	const struct mclient *c;
	size_t len = addr_source_len(peer);
	int n = 0;

	for (c = mh->clients; c != NULL; c = c->next)
		if (memcmp(c->peer, peer, len) == 0 &&
		    ++n >= HTTP_PER_SOURCE_MAX)
			return true;
	return false;
}

/*
 * All places are taken (of src's source, when src is not NULL: else of
 * all): the one held longest by a client that has not finished its
 * request, or else by one that has all of its answer and is only waiting
 * to hang up, goes to the newcomer, so that connections that send
 * nothing, or do not read, cannot keep a scraper out for as long as they
 * reconnect, not even one on the same address. False when every such
 * place is still being answered (a scrape too large for the socket
 * buffers, not read).
 */
static bool
metrics_make_room(struct metrics_http *mh, const uint8_t *src)
{
	struct mclient *c, *head = NULL, *done = NULL;
	size_t len = src != NULL ? addr_source_len(src) : 0;

	for (c = mh->clients; c != NULL; c = c->next) {	/* newest first */
		if (src != NULL && memcmp(c->peer, src, len) != 0)
			continue;
		if (!c->responding && !c->lingering)
			head = c;
		else if (c->lingering)
			done = c;
	}
	if (head == NULL && (head = done) == NULL)
		return false;
	mclient_free(head);
	return true;
}

static void
metrics_accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct metrics_http *mh = container_of(w, struct metrics_http, io);
	struct sockaddr_storage ss;
	socklen_t sslen;
	struct mclient *c;
	uint8_t peer[16];
	int fd, i;

	(void)revents;
	for (i = 0; i < 16; i++) {
		sslen = sizeof(ss);
		fd = accept4(mh->fd, (struct sockaddr *)&ss, &sslen,
		    SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd == -1) {
			if (acceptpause_failed(loop, &mh->pause))
				return;
			continue;
		}
		if (addr_to_v6((struct sockaddr *)&ss, peer) == -1)
			memset(peer, 0, sizeof(peer));
		if ((metrics_source_full(mh, peer) &&
		    !metrics_make_room(mh, peer)) ||
		    (mh->nclients >= HTTP_CLIENTS_MAX &&
		    !metrics_make_room(mh, NULL)) ||
		    (c = calloc(1, sizeof(*c))) == NULL) {
			close(fd);
			continue;
		}
		c->mh = mh;
		c->fd = fd;
		memcpy(c->peer, peer, sizeof(peer));
		sbuf_init(&c->out, 1024);
		ev_io_init(&c->io, mclient_io_cb, fd, EV_READ);
		ev_timer_init(&c->timer, mclient_timer_cb, HTTP_HEAD_TIMEOUT,
		    0.);
		ev_io_start(loop, &c->io);
		ev_timer_start(loop, &c->timer);
		c->next = mh->clients;
		if (mh->clients != NULL)
			mh->clients->prev = c;
		mh->clients = c;
		mh->nclients++;
	}
}

struct metrics_http *
metrics_http_open(struct ev_loop *loop, const struct addr_port *ap,
    const struct control_server *srv, char *err, size_t errlen)
{
	struct metrics_http *mh;
	char name[ADDR_PORT_STRLEN];
	int on = 1, off = 0;

	if ((mh = calloc(1, sizeof(*mh))) == NULL) {
		snprintf(err, errlen, "metrics: out of memory");
		return NULL;
	}
	mh->loop = loop;
	mh->srv = srv;
	mh->fd = socket(ap->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK |
	    SOCK_CLOEXEC, 0);
	if (mh->fd == -1 ||
	    setsockopt(mh->fd, SOL_SOCKET, SO_REUSEADDR, &on,
	    sizeof(on)) == -1 ||
	    /* [::] takes IPv4 too, as moat.toml(5) says and the config
	     * check assumes, whatever net.ipv6.bindv6only says. */
	    (ap->ss.ss_family == AF_INET6 && setsockopt(mh->fd,
	    IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof(off)) == -1) ||
	    bind(mh->fd, (const struct sockaddr *)&ap->ss, ap->len) == -1 ||
	    listen(mh->fd, 16) == -1) {
		int e = errno;

		snprintf(err, errlen, "metrics: cannot listen on %s: %s%s",
		    addr_port_str(ap, name, sizeof(name)), strerror(e),
		    listener_hint(e));
		if (mh->fd != -1)
			close(mh->fd);
		free(mh);
		return NULL;
	}
	ev_io_init(&mh->io, metrics_accept_cb, mh->fd, EV_READ);
	acceptpause_init(&mh->pause, &mh->io, "metrics");
	ev_io_start(loop, &mh->io);
	pthread_mutex_lock(&m.mu);
	start_time();
	pthread_mutex_unlock(&m.mu);
	return mh;
}

void
metrics_http_close(struct metrics_http *mh)
{
	if (mh == NULL)
		return;
	while (mh->clients != NULL)
		mclient_free(mh->clients);
	ev_io_stop(mh->loop, &mh->io);
	acceptpause_stop(mh->loop, &mh->pause);
	close(mh->fd);
	free(mh);
}
