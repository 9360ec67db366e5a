/* server.c - the running daemon: listeners, sessions, signals, reload. */
#include "server.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <ev.h>

#include "config.h"
#include "control.h"
#include "events.h"
#include "gen.h"
#include "geo.h"
#include "guard.h"
#include "listener.h"
#include "log.h"
#include "metrics.h"
#include "privdrop.h"
#include "session.h"
#include "slots.h"

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
	struct control_server hooks;	/* for control and metrics */
	struct control *control;
	struct metrics_http *metrics;
	char config_abs[PATH_MAX];	/* config_path made absolute */
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

/* A reload's diagnostics: to the log, and to whoever asked for the
 * reload (moatctl) when fn is set. */
struct reload_report {
	config_report_fn *fn;
	void *arg;
};

static void
report_tee(void *arg, bool is_error, const char *line)
{
	struct reload_report *rr = arg;

	report_log(NULL, is_error, line);
	if (rr != NULL && rr->fn != NULL)
		rr->fn(rr->arg, is_error, line);
}

static void __attribute__((format(printf, 3, 4)))
reload_say(struct reload_report *rr, bool is_error, const char *fmt, ...)
{
	char line[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	report_tee(rr, is_error, line);
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
 * Each session holds two descriptors (client, backend): raise the soft
 * RLIMIT_NOFILE to the hard limit so that max_sessions can be reached,
 * and say so when even that is too low. Once, at start.
 */
static void
server_nofile(const struct config *cfg)
{
	struct rlimit rl;
	rlim_t want = (rlim_t)cfg->daemon.max_sessions * 2;

	if (getrlimit(RLIMIT_NOFILE, &rl) == -1) {
		log_warn("getrlimit");
		return;
	}
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) == -1)
			log_warn("setrlimit RLIMIT_NOFILE %llu",
			    (unsigned long long)rl.rlim_max);
		else
			log_debug("open files limit raised to %llu",
			    (unsigned long long)rl.rlim_max);
	}
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 &&
	    cfg->daemon.max_sessions > 0 && rl.rlim_cur != RLIM_INFINITY &&
	    rl.rlim_cur < want)
		log_warnx("open files limit %llu is below what daemon."
		    "max_sessions = %u needs (%llu); raise LimitNOFILE or "
		    "ulimit -n", (unsigned long long)rl.rlim_cur,
		    cfg->daemon.max_sessions, (unsigned long long)want);
}

/* The global session cap of cfg; sessions already counted stay. */
static void
server_limits(struct server *srv, const struct config *cfg)
{
	if (srv->sessions.slots != NULL)
		slots_set_limits(srv->sessions.slots, cfg->daemon.max_sessions,
		    cfg->daemon.reserved_sessions);
}

/*
 * Opens the events sink of cfg, or (same sink) reopens the file so that
 * logrotate can move it. At start a failure is fatal; on reload it keeps
 * the sink that works.
 */
static int
server_events(struct server *srv, const struct config *cfg, bool initial,
    struct reload_report *rr)
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
		reload_say(rr, true, "%s%s", err, initial ? "" :
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

/*
 * The reload of SIGHUP and moatctl: a new config, TLS contexts, lists and
 * events sink, or, on any error, the running ones kept. Every diagnostic
 * goes to the log and to report (may be NULL). Returns 0 when the new
 * configuration is in force, -1 when the old one stays.
 */
static int
server_reload(struct server *srv, config_report_fn *report, void *arg)
{
	struct reload_report rr = { report, arg };
	const struct config *old;
	struct config *cfg;
	struct gen *g;
	char err[300] = "";

	if (srv->draining) {
		reload_say(&rr, true, "reload refused: moat is shutting down");
		return -1;
	}
	if (srv->config_path != NULL) {
		log_info("reload: reading %s", srv->config_path);
		cfg = config_load(srv->config_path, report_tee, &rr);
		if (cfg == NULL) {
			reload_say(&rr, true, "reload failed: %s has errors, "
			    "keeping the running configuration",
			    srv->config_path);
			return -1;
		}
		g = gen_new(cfg, report_tee, &rr);
	} else {
		log_info("reload: built-in configuration, certificates only");
		g = gen_new_certs(srv->gen, report_tee, &rr);
	}
	if (g == NULL) {
		reload_say(&rr, true, "reload failed: TLS setup has errors, "
		    "keeping the running configuration");
		return -1;
	}
	if (guard_reload(gen_config(g), err, sizeof(err)) == -1 ||
	    server_events(srv, gen_config(g), false, &rr) == -1) {
		if (err[0] != '\0')
			reload_say(&rr, true, "reload failed: %s; keeping the "
			    "running configuration", err);
		gen_unref(g);
		return -1;
	}
	(void)server_apply_listeners(srv, g, false);
	old = gen_config(srv->gen);
	/* These two are bound once, before privileges are dropped. */
	if (strcmp(old->daemon.control_socket ? old->daemon.control_socket :
	    "", gen_config(g)->daemon.control_socket ?
	    gen_config(g)->daemon.control_socket : "") != 0)
		reload_say(&rr, false, "warning: daemon.control_socket "
		    "changes at the next restart");
	if (old->daemon.metrics_enabled !=
	    gen_config(g)->daemon.metrics_enabled ||
	    (old->daemon.metrics_enabled &&
	    (old->daemon.metrics.len != gen_config(g)->daemon.metrics.len ||
	    memcmp(&old->daemon.metrics.ss, &gen_config(g)->daemon.metrics.ss,
	    old->daemon.metrics.len) != 0)))
		reload_say(&rr, false, "warning: daemon.metrics changes at "
		    "the next restart");
	gen_unref(srv->gen);
	srv->gen = g;
	server_limits(srv, gen_config(g));
	reload_say(&rr, false, "reload done: %zu listening sockets, %zu "
	    "sessions carry on", srv->nls, srv->sessions.n);
	return 0;
}

static void
server_sighup_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
	struct server *srv = container_of(w, struct server, sighup);

	(void)loop;
	(void)revents;
	(void)server_reload(srv, NULL, NULL);
}

/* --- what the control socket and the metrics endpoint see ------------ */

static const struct gen *
hook_gen(void *arg)
{
	struct server *srv = arg;

	return srv->gen;
}

static size_t
hook_sessions(void *arg)
{
	struct server *srv = arg;

	return srv->sessions.n;
}

static bool
hook_listener(void *arg, size_t i, const struct cfg_listener **lc,
    const struct addr_port **ap)
{
	struct server *srv = arg;

	if (i >= srv->nls)
		return false;
	*lc = listener_config(srv->ls[i]);
	*ap = listener_addr(srv->ls[i]);
	return true;
}

static int
hook_reload(void *arg, config_report_fn *report, void *rarg)
{
	return server_reload(arg, report, rarg);
}

static void
hook_reopen(void *arg)
{
	struct server *srv = arg;

	log_info("reopening the events file");
	(void)event_log_reopen(srv->events);
}

/*
 * Becomes daemon.user (privdrop.h) when set: CAP_NET_ADMIN stays only if
 * a firewall writer needs it, and the working directory is the state
 * file's. A relative config path is made absolute first so that SIGHUP
 * still finds the file after the chdir.
 */
static int
server_privdrop(struct server *srv)
{
	const struct config *cfg = gen_config(srv->gen);
	const char *own[3];
	char err[512], dir[4096];
	size_t n;

	if (cfg->daemon.user == NULL)
		return 0;
	if (srv->config_path != NULL && srv->config_path[0] != '/') {
		if (realpath(srv->config_path, srv->config_abs) == NULL) {
			log_warn("%s", srv->config_path);
			return -1;
		}
		srv->config_path = srv->config_abs;
	}
	n = 0;
	if (cfg->daemon.state_file != NULL)
		own[n++] = cfg->daemon.state_file;
	if (cfg->events.file != NULL)
		own[n++] = cfg->events.file;
	own[n] = NULL;
	if (privdrop(cfg->daemon.user,
	    cfg->firewall.backend != CFG_FW_NONE,
	    cfg->daemon.state_file != NULL ? privdrop_dirname(
	    cfg->daemon.state_file, dir, sizeof(dir)) : "/",
	    own, err, sizeof(err)) == -1) {
		log_warnx("%s", err);
		return -1;
	}
	return 0;
}

/* The control socket and the metrics endpoint; failures are fatal at
 * start, as an operator who configured them relies on them. */
static int
server_ops_open(struct server *srv)
{
	const struct config *cfg = gen_config(srv->gen);
	char err[512];

	srv->hooks.arg = srv;
	srv->hooks.gen = hook_gen;
	srv->hooks.sessions = hook_sessions;
	srv->hooks.listener = hook_listener;
	srv->hooks.reload = hook_reload;
	srv->hooks.reopen = hook_reopen;
	if (cfg->daemon.control_socket != NULL &&
	    cfg->daemon.control_socket[0] != '\0' &&
	    (srv->control = control_open(srv->loop,
	    cfg->daemon.control_socket, &srv->hooks, err,
	    sizeof(err))) == NULL) {
		log_warnx("%s", err);
		return -1;
	}
	if (cfg->daemon.metrics_enabled &&
	    (srv->metrics = metrics_http_open(srv->loop, &cfg->daemon.metrics,
	    &srv->hooks, err, sizeof(err))) == NULL) {
		log_warnx("%s", err);
		control_close(srv->control);
		srv->control = NULL;
		return -1;
	}
	return 0;
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
	metrics_init();
	server_nofile(gen_config(srv.gen));
	if ((srv.sessions.slots = slots_new()) == NULL) {
		log_warnx("out of memory");
		gen_unref(srv.gen);
		return 1;
	}
	server_limits(&srv, gen_config(srv.gen));
	srv.sessions.on_empty = server_sessions_empty;
	srv.sessions.arg = &srv;
	/*
	 * What needs root comes first (ports, the control socket); then
	 * daemon.user takes over, and the rest (events file, state file,
	 * geo database, firewall writer thread) opens as that user, as it
	 * will be reopened on reload. The writer thread inherits
	 * CAP_NET_ADMIN from here.
	 */
	if (server_apply_listeners(&srv, srv.gen, true) == -1 ||
	    server_ops_open(&srv) == -1 ||
	    server_privdrop(&srv) == -1 ||
	    server_events(&srv, gen_config(srv.gen), true, NULL) == -1 ||
	    guard_open(srv.loop, gen_config(srv.gen), err, sizeof(err)) == -1) {
		if (err[0] != '\0')
			log_warnx("%s", err);
		metrics_http_close(srv.metrics);
		control_close(srv.control);
		server_close_listeners(&srv);
		guard_close();
		event_log_close(srv.events);
		gen_unref(srv.gen);
		slots_free(srv.sessions.slots);
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
	metrics_http_close(srv.metrics);
	control_close(srv.control);
	guard_close();
	event_log_close(srv.events);
	gen_unref(srv.gen);
	slots_free(srv.sessions.slots);
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
