/* server.c - the running daemon: listeners, sessions, signals, reload. */
#include "server.h"

#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <ev.h>

#include "config.h"
#include "events.h"
#include "gen.h"
#include "geo.h"
#include "guard.h"
#include "listener.h"
#include "log.h"
#include "session.h"

struct server {
	struct ev_loop *loop;
	struct gen *gen;		/* what new sessions start under */
	const char *config_path;	/* NULL: the built-in config */
	struct listener **ls;
	size_t nls;
	struct session_list sessions;
	ev_signal sighup, sigterm, sigint, sigusr1;
	struct event_log *events;
	ev_timer drain;
	bool draining;
};

#define container_of(p, type, member) \
	((type *)(void *)((char *)(p) - offsetof(type, member)))

/* Reload diagnostics go to the log: stderr may be long gone. */
static void
report_log(void *arg, bool is_error, const char *line)
{
	(void)arg;
	if (is_error)
		log_warnx("%s", line);
	else
		log_info("%s", line);
}

static void
server_accept(void *arg, struct listener *l, int fd,
    const struct sockaddr *peer, socklen_t peerlen)
{
	struct server *srv = arg;

	session_start(srv->loop, &srv->sessions, srv->gen,
	    listener_config(l), fd, peer, peerlen);
}

static bool
addr_port_eq(const struct addr_port *a, const struct addr_port *b)
{
	return a->len == b->len && memcmp(&a->ss, &b->ss, a->len) == 0;
}

/*
 * Makes the listening sockets match g: sockets whose address stays are
 * kept (no gap in accepting, no rebind race) and point at their new
 * [[listener]]; new addresses are bound, vanished ones closed. At start
 * (initial) any bind failure is fatal to the start; on reload it is
 * logged and the rest goes on.
 */
static int
server_apply_listeners(struct server *srv, struct gen *g, bool initial)
{
	const struct config *cfg = gen_config(g);
	struct listener **ls = NULL, *l;
	size_t i, j, k, n = 0, total = 0;

	for (i = 0; i < cfg->nlisteners; i++)
		total += cfg->listeners[i].nlisten;
	if (total > 0 && (ls = calloc(total, sizeof(*ls))) == NULL) {
		log_warnx("listeners: out of memory");
		return -1;
	}
	for (i = 0; i < cfg->nlisteners; i++) {
		const struct cfg_listener *lc = &cfg->listeners[i];

		for (j = 0; j < lc->nlisten; j++) {
			l = NULL;
			for (k = 0; k < srv->nls; k++)
				if (srv->ls[k] != NULL && addr_port_eq(
				    listener_addr(srv->ls[k]),
				    &lc->listen[j])) {
					l = srv->ls[k];
					srv->ls[k] = NULL;
					break;
				}
			if (l == NULL)
				l = listener_open(srv->loop, &lc->listen[j],
				    server_accept, srv);
			if (l == NULL) {
				if (initial) {
					for (k = 0; k < n; k++)
						listener_close(ls[k]);
					free(ls);
					return -1;
				}
				continue;
			}
			listener_set_config(l, lc);
			ls[n++] = l;
		}
	}
	for (k = 0; k < srv->nls; k++)
		listener_close(srv->ls[k]);
	free(srv->ls);
	srv->ls = ls;
	srv->nls = n;
	return 0;
}

static void
server_close_listeners(struct server *srv)
{
	size_t k;

	for (k = 0; k < srv->nls; k++)
		listener_close(srv->ls[k]);
	free(srv->ls);
	srv->ls = NULL;
	srv->nls = 0;
}

/*
 * Opens the events sink of cfg, or (same sink) reopens the file so that
 * logrotate can move it. At start a failure is fatal; on reload it keeps
 * the sink that works.
 */
static int
server_events(struct server *srv, const struct config *cfg, bool initial)
{
	const struct config *old = initial ? NULL : gen_config(srv->gen);
	struct event_log *log;
	char err[300];

	if (old != NULL && old->events.syslog == cfg->events.syslog &&
	    ((old->events.file == NULL && cfg->events.file == NULL) ||
	    (old->events.file != NULL && cfg->events.file != NULL &&
	    strcmp(old->events.file, cfg->events.file) == 0))) {
		(void)event_log_reopen(srv->events);
		return 0;
	}
	if ((log = event_log_open(cfg->events.file, cfg->events.syslog, err,
	    sizeof(err))) == NULL) {
		log_warnx("%s%s", err, initial ? "" :
		    "; keeping the running configuration");
		return -1;
	}
	event_log_close(srv->events);
	srv->events = log;
	events_set(log);
	return 0;
}

static void
server_sigusr1_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
	struct server *srv = container_of(w, struct server, sigusr1);

	(void)loop;
	(void)revents;
	log_info("reopening the events file");
	(void)event_log_reopen(srv->events);
}

static void
server_reload(struct server *srv)
{
	struct config *cfg;
	struct gen *g;
	char err[300] = "";

	if (srv->draining)
		return;
	if (srv->config_path != NULL) {
		log_info("reload: reading %s", srv->config_path);
		cfg = config_load(srv->config_path, report_log, NULL);
		if (cfg == NULL) {
			log_warnx("reload failed: %s has errors, keeping the "
			    "running configuration", srv->config_path);
			return;
		}
		g = gen_new(cfg, report_log, NULL);
	} else {
		log_info("reload: built-in configuration, certificates only");
		g = gen_new_certs(srv->gen, report_log, NULL);
	}
	if (g == NULL) {
		log_warnx("reload failed: TLS setup has errors, keeping the "
		    "running configuration");
		return;
	}
	if (guard_reload(gen_config(g), err, sizeof(err)) == -1 ||
	    server_events(srv, gen_config(g), false) == -1) {
		if (err[0] != '\0')
			log_warnx("reload failed: %s; keeping the running "
			    "configuration", err);
		gen_unref(g);
		return;
	}
	(void)server_apply_listeners(srv, g, false);
	gen_unref(srv->gen);
	srv->gen = g;
	log_info("reload done: %zu listening sockets, %zu sessions carry on",
	    srv->nls, srv->sessions.n);
}

static void
server_sighup_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
	struct server *srv = container_of(w, struct server, sighup);

	(void)loop;
	(void)revents;
	server_reload(srv);
}

static void
server_sessions_empty(void *arg)
{
	struct server *srv = arg;

	if (srv->draining)
		ev_break(srv->loop, EVBREAK_ALL);
}

static void
server_drain_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct server *srv = container_of(w, struct server, drain);

	(void)loop;
	(void)revents;
	log_info("drain: grace period over, closing %zu sessions",
	    srv->sessions.n);
	session_list_close_all(&srv->sessions, "shutdown");
	ev_break(srv->loop, EVBREAK_ALL);
}

static void
server_sigterm_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
	struct server *srv = w->data;
	const struct config *cfg = gen_config(srv->gen);

	(void)revents;
	if (srv->draining) {
		log_info("second signal: closing %zu sessions now",
		    srv->sessions.n);
		session_list_close_all(&srv->sessions, "shutdown");
		ev_break(loop, EVBREAK_ALL);
		return;
	}
	srv->draining = true;
	server_close_listeners(srv);
	if (srv->sessions.n == 0) {
		log_info("shutting down");
		ev_break(loop, EVBREAK_ALL);
		return;
	}
	log_info("draining %zu sessions for up to %llu ms", srv->sessions.n,
	    (unsigned long long)cfg->daemon.drain_ms);
	ev_timer_set(&srv->drain, (ev_tstamp)cfg->daemon.drain_ms / 1000.,
	    0.);
	ev_timer_start(loop, &srv->drain);
}

int
server_run(struct config *cfg, const char *config_path)
{
	struct server srv;
	char err[300] = "";

	memset(&srv, 0, sizeof(srv));
	signal(SIGPIPE, SIG_IGN);
	srv.config_path = config_path;
	if ((srv.loop = ev_default_loop(EVFLAG_AUTO)) == NULL) {
		log_warnx("cannot start the event loop");
		config_free(cfg);
		return 1;
	}
	if ((srv.gen = gen_new(cfg, report_log, NULL)) == NULL)
		return 1;
	if (server_events(&srv, gen_config(srv.gen), true) == -1 ||
	    guard_open(srv.loop, gen_config(srv.gen), err, sizeof(err)) == -1) {
		if (err[0] != '\0')
			log_warnx("%s", err);
		event_log_close(srv.events);
		gen_unref(srv.gen);
		return 1;
	}
	srv.sessions.on_empty = server_sessions_empty;
	srv.sessions.arg = &srv;
	if (server_apply_listeners(&srv, srv.gen, true) == -1) {
		guard_close();
		event_log_close(srv.events);
		gen_unref(srv.gen);
		return 1;
	}
	ev_signal_init(&srv.sighup, server_sighup_cb, SIGHUP);
	ev_signal_init(&srv.sigterm, server_sigterm_cb, SIGTERM);
	ev_signal_init(&srv.sigint, server_sigterm_cb, SIGINT);
	ev_signal_init(&srv.sigusr1, server_sigusr1_cb, SIGUSR1);
	srv.sigterm.data = &srv;
	srv.sigint.data = &srv;
	ev_timer_init(&srv.drain, server_drain_cb, 0., 0.);
	ev_signal_start(srv.loop, &srv.sighup);
	ev_signal_start(srv.loop, &srv.sigterm);
	ev_signal_start(srv.loop, &srv.sigint);
	ev_signal_start(srv.loop, &srv.sigusr1);
	log_info("moat running: %zu listening sockets", srv.nls);

	ev_run(srv.loop, 0);

	ev_signal_stop(srv.loop, &srv.sighup);
	ev_signal_stop(srv.loop, &srv.sigterm);
	ev_signal_stop(srv.loop, &srv.sigint);
	ev_signal_stop(srv.loop, &srv.sigusr1);
	ev_timer_stop(srv.loop, &srv.drain);
	srv.sessions.on_empty = NULL;
	session_list_close_all(&srv.sessions, "shutdown");
	server_close_listeners(&srv);
	guard_close();
	event_log_close(srv.events);
	gen_unref(srv.gen);
	ev_loop_destroy(srv.loop);
	log_info("stopped");
	return 0;
}

int
server_check(const struct config *cfg)
{
	struct tls_set *t;

	struct geo *geo;
	char *msg = NULL;
	int rc = 0;

	if ((t = tls_set_new(cfg, config_report_stderr, NULL)) == NULL)
		rc = 1;
	else
		tls_set_unref(t);
	/* The loader only knows the database is readable; this knows it is
	 * a country database libmaxminddb can use. */
	if (cfg->policy.geo.database != NULL) {
		if ((geo = geo_open(cfg->policy.geo.database, &msg)) == NULL) {
			fprintf(stderr, "%s\n", msg ? msg :
			    cfg->policy.geo.database);
			free(msg);
			rc = 1;
		} else
			geo_close(geo);
	}
	return rc;
}
