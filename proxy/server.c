/* server.c - the running daemon: listeners, sessions, signals, reload. */
#include "server.h"

#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <ev.h>

#include "backendwatch.h"
#include "certwatch.h"
#include "config.h"
#include "control.h"
#include "events.h"
#include "gen.h"
#include "geo.h"
#include "guard.h"
#include "heap.h"
#include "listener.h"
#include "log.h"
#include "metrics.h"
#include "mono.h"
#include "privdrop.h"
#include "sdnotify.h"
#include "session.h"
#include "slots.h"
#include "ticketkeys.h"
#include "worker.h"

/* An address every worker listens on, and the [[listener]] it serves. */
struct lgroup {
	struct addr_port ap;
	const struct cfg_listener *lc;
};

struct server {
	struct ev_loop *loop;
	struct gen *gen;		/* what new sessions start under */
	const char *config_path;	/* NULL: the built-in config */
	struct lgroup *groups;
	size_t ngroups;
	struct worker **w;		/* each on a thread of its own */
	size_t nw;
	struct slots *slots;		/* the global cap, shared */
	ev_signal sighup, sigterm, sigint, sigquit, sigusr1;
	ev_async done;			/* a worker may have finished */
	struct event_log *events;
	ev_timer drain;
	ev_timer heap;		/* heap_tick() */
	ev_timer follow;	/* event_log_follow() */
	bool draining;
	bool net_admin_gone;	/* CAP_NET_ADMIN given up at start */
	/* Set up once, at start: a reload that names others warns until
	 * the restart, and not when it names these again. */
	char *start_control;		/* "" for none */
	char *start_user;		/* "" for none */
	uint32_t start_workers;		/* as configured: 0 is per core */
	bool start_metrics;
	struct addr_port start_metrics_at;
	struct control_server hooks;	/* for control and metrics */
	struct control *control;
	struct metrics_http *metrics;
	char config_abs[PATH_MAX];	/* config_path made absolute */
};

#define container_of(p, type, member) \
	((type *)(void *)((char *)(p) - offsetof(type, member)))

void
server_report_log(void *arg, enum config_severity sev, const char *line)
{
	(void)arg;
	if (sev != CONFIG_INFO)
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
report_tee(void *arg, enum config_severity sev, const char *line)
{
	struct reload_report *rr = arg;

	server_report_log(NULL, sev, line);
	if (rr != NULL && rr->fn != NULL)
		rr->fn(rr->arg, sev, line);
}

static void __attribute__((format(printf, 3, 4)))
reload_say(struct reload_report *rr, enum config_severity sev,
    const char *fmt, ...)
{
	char line[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	report_tee(rr, sev, line);
}

/* The group of gs at ap, or NULL. */
static const struct lgroup *
server_group(const struct lgroup *gs, size_t n, const struct addr_port *ap)
{
	size_t k;

	for (k = 0; k < n; k++)
		if (addr_port_equal(&gs[k].ap, ap))
			return &gs[k];
	return NULL;
}

static bool
server_has_group(const struct lgroup *gs, size_t n, const struct addr_port *ap)
{
	return server_group(gs, n, ap) != NULL;
}

/* One of moat's open sockets whose port a bind of ap collides with (a
 * wildcard and an address under it, either way round), or NULL. */
static const struct addr_port *
server_overlap(const struct lgroup *gs, size_t n, const struct addr_port *ap)
{
	size_t k;

	for (k = 0; k < n; k++)
		if (addr_port_clash(&gs[k].ap, ap, false) != ADDR_CLASH_NONE)
			return &gs[k].ap;
	return NULL;
}

/*
 * The listening sockets of a generation before they are handed to the
 * workers: every address of g, with fresh sockets for the addresses not
 * already open (fd -1 in wl: the worker keeps its own).
 */
struct lplan {
	struct lgroup *ng;		/* n of total */
	struct worker_listen *wl;	/* nw rows of total */
	size_t n, total;
};

static void
lplan_discard(struct server *srv, struct lplan *pl)
{
	size_t j, k;

	for (j = 0; j < pl->n; j++)
		for (k = 0; k < srv->nw; k++)
			if (pl->wl[k * pl->total + j].fd != -1)
				close(pl->wl[k * pl->total + j].fd);
	free(pl->ng);
	free(pl->wl);
	memset(pl, 0, sizeof(*pl));
}

/*
 * Binds the addresses of g that are not open yet (a SO_REUSEPORT group
 * with one socket per worker); addresses that stay keep their sockets, so
 * there is no gap in accepting and no rebind race. Nothing changes for
 * the workers until lplan_commit(). Any address that cannot be bound
 * fails the whole plan: at start and on reload alike, a configuration is
 * applied whole or not at all.
 */
static int
lplan_bind(struct server *srv, struct gen *g, struct lplan *pl,
    struct reload_report *rr)
{
	const struct config *cfg = gen_config(g);
	char name[ADDR_PORT_STRLEN];
	struct worker_listen *row;
	size_t i, j, k;
	int *fds = NULL, e;
	bool kept;

	memset(pl, 0, sizeof(*pl));
	for (i = 0; i < cfg->nlisteners; i++)
		pl->total += cfg->listeners[i].nlisten;
	if (pl->total > 0 && ((pl->ng = calloc(pl->total,
	    sizeof(*pl->ng))) == NULL || (pl->wl = calloc(pl->total * srv->nw,
	    sizeof(*pl->wl))) == NULL || (fds = calloc(srv->nw,
	    sizeof(*fds))) == NULL)) {
		reload_say(rr, CONFIG_ERROR, "listeners: out of memory");
		lplan_discard(srv, pl);
		return -1;
	}
	for (i = 0; i < cfg->nlisteners; i++) {
		const struct cfg_listener *lc = &cfg->listeners[i];

		for (j = 0; j < lc->nlisten; j++) {
			kept = server_has_group(srv->groups, srv->ngroups,
			    &lc->listen[j]);
			if (!kept && listener_bind(&lc->listen[j], fds,
			    srv->nw) == -1) {
				const struct addr_port *own = rr == NULL ?
				    NULL : server_overlap(srv->groups,
				    srv->ngroups, &lc->listen[j]);
				char oname[ADDR_PORT_STRLEN];

				e = errno;
				addr_port_str(&lc->listen[j], name,
				    sizeof(name));
				if (e == EADDRINUSE && own != NULL) {
					addr_port_str(own, oname,
					    sizeof(oname));
					reload_say(rr, CONFIG_ERROR,
					    "listener '%s': cannot listen on "
					    "%s: moat's own socket on %s "
					    "holds the port, and a reload "
					    "opens new sockets before it "
					    "closes old ones; changing "
					    "between a wildcard and an "
					    "address on one port needs a "
					    "restart", lc->name, name, oname);
					free(fds);
					lplan_discard(srv, pl);
					return -1;
				}
				/* A low port needs root: at start, moat was
				 * not started as root; on a reload after the
				 * drop, it is out of reach until a restart. */
				reload_say(rr, CONFIG_ERROR,
				    "listener '%s': cannot listen on %s: "
				    "%s%s", lc->name, name, strerror(e),
				    e != EACCES ? listener_hint(e) :
				    geteuid() == 0 ? "" :
				    rr == NULL ? " (a port below 1024 needs "
				    "moat to start as root)" :
				    " (moat no longer runs as root; a new "
				    "port below 1024 needs a restart)");
				free(fds);
				lplan_discard(srv, pl);
				return -1;
			}
			pl->ng[pl->n].ap = lc->listen[j];
			pl->ng[pl->n].lc = lc;
			for (k = 0; k < srv->nw; k++) {
				row = &pl->wl[k * pl->total + pl->n];
				row->ap = lc->listen[j];
				row->lc = lc;
				row->fd = kept ? -1 : fds[k];
			}
			pl->n++;
		}
	}
	free(fds);
	return 0;
}

/* Appends " key a -> b" to buf (at bytes used) when a and b differ. */
static size_t
diff_add(char *buf, size_t len, size_t at, const char *key, const char *a,
    const char *b)
{
	int n;

	if (strcmp(a, b) == 0 || at >= len)
		return at;
	n = snprintf(buf + at, len - at, "%s %s %s -> %s", at > 0 ? "," : "",
	    key, a, b);
	return n < 0 ? at : at + (size_t)n;
}

/* What new sessions on a kept address get that the old ones did not, as
 * " tls none -> starttls, ..." in buf; "" when nothing the reply names. */
static const char *
listener_diff(const struct cfg_listener *o, const struct cfg_listener *n,
    char *buf, size_t len)
{
	char ob[ADDR_PORT_STRLEN], nb[ADDR_PORT_STRLEN];
	size_t at;

	buf[0] = '\0';
	at = diff_add(buf, len, 0, "protocol", cfg_protocol_str(o->protocol),
	    cfg_protocol_str(n->protocol));
	at = diff_add(buf, len, at, "tls", cfg_tls_mode_str(o->tls),
	    cfg_tls_mode_str(n->tls));
	at = diff_add(buf, len, at, "backend", addr_port_str(&o->backend, ob,
	    sizeof(ob)), addr_port_str(&n->backend, nb, sizeof(nb)));
	(void)diff_add(buf, len, at, "backend_proxy",
	    cfg_backend_proxy_str(o->backend_proxy),
	    cfg_backend_proxy_str(n->backend_proxy));
	return buf;
}

/* Hands the plan to every worker; vanished addresses are closed by each
 * worker. Cannot fail. What opens, closes or serves new sessions
 * otherwise goes to the log and to whoever asked for the reload. */
static void
lplan_commit(struct server *srv, struct gen *g, struct lplan *pl,
    struct reload_report *rr)
{
	char name[ADDR_PORT_STRLEN], diff[512];
	const struct lgroup *was;
	size_t j, k;

	for (j = 0; j < pl->n; j++) {
		const struct cfg_listener *lc = pl->ng[j].lc;

		addr_port_str(&pl->ng[j].ap, name, sizeof(name));
		was = server_group(srv->groups, srv->ngroups, &pl->ng[j].ap);
		if (was != NULL) {
			if (*listener_diff(was->lc, lc, diff,
			    sizeof(diff)) != '\0')
				reload_say(rr, CONFIG_INFO, "listener '%s' on "
				    "%s, for new sessions:%s", lc->name, name,
				    diff);
		} else if (srv->nw > 1)
			reload_say(rr, CONFIG_INFO, "listening on %s "
			    "(listener '%s', %zu workers)", name, lc->name,
			    srv->nw);
		else
			reload_say(rr, CONFIG_INFO, "listening on %s "
			    "(listener '%s')", name, lc->name);
	}
	for (k = 0; k < srv->ngroups; k++)
		if (!server_has_group(pl->ng, pl->n, &srv->groups[k].ap))
			reload_say(rr, CONFIG_INFO, "stopped listening on %s "
			    "(listener '%s'; its sessions carry on)",
			    addr_port_str(&srv->groups[k].ap, name,
			    sizeof(name)), srv->groups[k].lc->name);
	for (k = 0; k < srv->nw; k++)
		worker_apply(srv->w[k], g, &pl->wl[k * pl->total], pl->n);
	free(srv->groups);
	srv->groups = pl->ng;
	srv->ngroups = pl->n;
	free(pl->wl);
	memset(pl, 0, sizeof(*pl));
}

/* Every worker stops accepting (drain). */
static void
server_close_listeners(struct server *srv)
{
	char name[ADDR_PORT_STRLEN];
	size_t k;

	for (k = 0; k < srv->nw; k++)
		worker_drain(srv->w[k]);
	for (k = 0; k < srv->ngroups; k++)
		log_info("stopped listening on %s", addr_port_str(
		    &srv->groups[k].ap, name, sizeof(name)));
	free(srv->groups);
	srv->groups = NULL;
	srv->ngroups = 0;
}

static size_t
server_sessions(struct server *srv)
{
	size_t k, n = 0;

	for (k = 0; k < srv->nw; k++)
		n += worker_sessions(srv->w[k]);
	return n;
}

/*
 * Each session holds two descriptors (client, backend): whether the open
 * files limit lets max_sessions be reached. The text of the warning in
 * buf when it does not, else "".
 */
static const char *
nofile_short(const struct config *cfg, char *buf, size_t len)
{
	struct rlimit rl;
	rlim_t want = (rlim_t)cfg->daemon.max_sessions * 2;

	buf[0] = '\0';
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 &&
	    cfg->daemon.max_sessions > 0 && rl.rlim_cur != RLIM_INFINITY &&
	    rl.rlim_cur < want)
		snprintf(buf, len, "open files limit %llu is below what daemon."
		    "max_sessions = %u needs (%llu); raise LimitNOFILE or "
		    "ulimit -n", (unsigned long long)rl.rlim_cur,
		    cfg->daemon.max_sessions, (unsigned long long)want);
	return buf;
}

/* Raises the soft RLIMIT_NOFILE to the hard limit, once, at start, and
 * says so when even that is too low for max_sessions. */
static void
server_nofile(const struct config *cfg)
{
	struct rlimit rl;
	char msg[256];

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
	if (*nofile_short(cfg, msg, sizeof(msg)) != '\0')
		log_warnx("%s", msg);
}

/* The global session cap of cfg; sessions already counted stay. */
static void
server_limits(struct server *srv, const struct config *cfg)
{
	if (srv->slots != NULL)
		slots_set_limits(srv->slots, cfg->daemon.max_sessions,
		    cfg->daemon.reserved_sessions);
}

/*
 * The events sink of cfg. When it is the running one (same file, same
 * syslog) *out is NULL and commit only reopens the file, which lets
 * logrotate move it; otherwise *out is a new sink. Opening is the only
 * step that can fail, and it changes nothing that runs.
 */
static int
events_prepare(struct server *srv, const struct config *cfg,
    struct event_log **out, struct reload_report *rr)
{
	const struct config *old = srv->events != NULL ?
	    gen_config(srv->gen) : NULL;
	char err[300];

	*out = NULL;
	if (old != NULL && old->events.syslog == cfg->events.syslog &&
	    ((old->events.file == NULL && cfg->events.file == NULL) ||
	    (old->events.file != NULL && cfg->events.file != NULL &&
	    strcmp(old->events.file, cfg->events.file) == 0)))
		return 0;
	if ((*out = event_log_open(cfg->events.file, cfg->events.syslog, err,
	    sizeof(err))) == NULL) {
		reload_say(rr, CONFIG_ERROR, "%s", err);
		return -1;
	}
	return 0;
}

static void
events_commit(struct server *srv, struct event_log *log,
    struct reload_report *rr)
{
	struct event_log *old = srv->events;

	if (log == NULL) {
		if (event_log_reopen(srv->events) == -1)
			reload_say(rr, CONFIG_WARNING,
			    "warning: the events file could not be reopened; "
			    "events still go to the old one");
		return;
	}
	/* The new sink is current before the old one closes: an event that
	 * another worker emits meanwhile lands in one of them. */
	events_set(log);
	srv->events = log;
	event_log_close(old);
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

/* daemon.workers, with 0 as one per core moat may run on: its CPU
 * affinity (taskset, systemd's CPUAffinity=, a cpuset), not every core
 * online, or the extra workers would only take turns on the same ones. */
static size_t
server_nworkers(const struct config *cfg)
{
	long n = cfg->daemon.workers;
	cpu_set_t set;

	if (n == 0) {
		if (sched_getaffinity(0, sizeof(set), &set) == 0)
			n = CPU_COUNT(&set);
		else
			n = sysconf(_SC_NPROCESSORS_ONLN);
		if (n < 1)
			n = 1;
	}
	return (size_t)n;
}

/* The files whose directories moat must be able to write: own[3]. */
static void
server_own_files(const struct config *cfg, const char *own[3])
{
	size_t n = 0;

	if (cfg->daemon.state_file != NULL)
		own[n++] = cfg->daemon.state_file;
	if (cfg->events.file != NULL)
		own[n++] = cfg->events.file;
	own[n] = NULL;
}

/*
 * Before anything opens there (the control socket may share the state
 * file's directory): the directories of the state and events files.
 */
/* user: whose the directories are to be (NULL: the current user). */
static int
own_dirs(const struct config *cfg, const char *user, bool dry_run,
    char *out, size_t len)
{
	const char *own[3];
	char err[512];
	size_t which = 0;

	server_own_files(cfg, own);
	if (privdrop_dirs(user, own, dry_run, &which, err, sizeof(err)) == 0)
		return 0;
	config_at(cfg, own[which], err, out, len);
	return -1;
}

static int
server_dirs(const struct config *cfg)
{
	char err[1024];

	if (own_dirs(cfg, cfg->daemon.user, false, err, sizeof(err)) == -1) {
		log_warnx("%s", err);
		return -1;
	}
	return 0;
}

/*
 * The same at a reload, for a state or events file moved to a directory
 * not made yet, for the user moat runs as since the start: a daemon.user
 * the reload names takes effect at the restart only, and nothing may be
 * given to it before (root's saves would then fail). A directory made
 * for a reload that fails later stays, as one the start made would.
 */
static int
reload_dirs(const struct server *srv, const struct config *cfg,
    struct reload_report *rr)
{
	const char *user = srv->start_user != NULL &&
	    srv->start_user[0] != '\0' ? srv->start_user : NULL;
	char err[1024];

	if (own_dirs(cfg, user, false, err, sizeof(err)) == 0)
		return 0;
	if (user != NULL && geteuid() != 0)
		reload_say(rr, CONFIG_ERROR, "%s (moat runs as '%s' now; a "
		    "restart makes the directory as root)", err, user);
	else
		reload_say(rr, CONFIG_ERROR, "%s", err);
	return -1;
}

static bool
differs(const char *running, const char *cfg)
{
	return running != NULL && strcmp(running, cfg ? cfg : "") != 0;
}

/* Keys only a restart applies, against what the start set up: said at
 * every reload until then, and not when the file names that again. */
static void
warn_restart_only(const struct server *srv, const struct config *cfg,
    struct reload_report *rr)
{
	const struct addr_port *m = &srv->start_metrics_at;

	if (differs(srv->start_control, cfg->daemon.control_socket))
		reload_say(rr, CONFIG_WARNING, "warning: daemon.control_socket "
		    "changes at the next restart");
	if (srv->start_metrics != cfg->daemon.metrics_enabled ||
	    (srv->start_metrics && !addr_port_equal(m, &cfg->daemon.metrics)))
		reload_say(rr, CONFIG_WARNING,
		    "warning: daemon.metrics changes at the next restart");
	/* The key as written, not the count it makes: under workers = 0 a
	 * changed CPU affinity is no change of the configuration. */
	if (cfg->daemon.workers != srv->start_workers)
		reload_say(rr, CONFIG_WARNING,
		    "warning: daemon.workers changes at the next restart");
	if (differs(srv->start_user, cfg->daemon.user))
		reload_say(rr, CONFIG_WARNING,
		    "warning: daemon.user changes at the next restart");
}

/*
 * The reload of SIGHUP and moatctl: a new config, TLS contexts, lists and
 * events sink, or, on any error, the running ones kept. Every diagnostic
 * goes to the log and to report (may be NULL). Returns 0 when the new
 * configuration is in force, -1 when the old one stays.
 */
static int
server_reload_config(struct server *srv, config_report_fn *report,
    void *arg)
{
	struct reload_report rr = { report, arg };
	const struct config *old;
	struct config *cfg;
	struct event_log *log = NULL;
	struct lplan pl;
	struct gen *g;
	char err[300] = "", msg[256];
	size_t k;
	bool park;
	int rc;

	if (srv->draining) {
		reload_say(&rr, CONFIG_ERROR,
		    "reload refused: moat is shutting down");
		return -1;
	}
	if (srv->config_path != NULL) {
		log_info("reload: reading %s", srv->config_path);
		cfg = config_load(srv->config_path, report_tee, &rr);
		if (cfg == NULL) {
			reload_say(&rr, CONFIG_ERROR,
			    "reload failed: %s has errors, "
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
		reload_say(&rr, CONFIG_ERROR,
		    "reload failed: TLS setup has errors, "
		    "keeping the running configuration");
		return -1;
	}
	/* What can fail comes first and changes nothing that runs: a
	 * configuration is applied whole or not at all. */
	if (reload_dirs(srv, gen_config(g), &rr) == -1 ||
	    events_prepare(srv, gen_config(g), &log, &rr) == -1 ||
	    lplan_bind(srv, g, &pl, &rr) == -1) {
		reload_say(&rr, CONFIG_ERROR,
		    "reload failed: keeping the running configuration");
		event_log_close(log);
		gen_unref(g);
		return -1;
	}
	/* Workers go on meanwhile (a large geo database or list takes a
	 * while); they wait only while a changed [firewall] gets its new
	 * writer, which they read without a lock. */
	rc = guard_reload(gen_config(g), report_tee, &rr, err, sizeof(err));
	if (rc == -1) {
		reload_say(&rr, CONFIG_ERROR, "reload failed: %s; keeping the "
		    "running configuration", err);
		lplan_discard(srv, &pl);
		event_log_close(log);
		gen_unref(g);
		return -1;
	}
	/* The new events sink first: the unban events of bans the new
	 * allow list lifts belong in it. */
	events_commit(srv, log, &rr);
	park = guard_fw_changes(gen_config(g));
	for (k = 0; park && k < srv->nw; k++)
		worker_park(srv->w[k]);
	guard_reload_fw(gen_config(g), report_tee, &rr);
	for (k = 0; park && k < srv->nw; k++)
		worker_unpark(srv->w[k]);
	lplan_commit(srv, g, &pl, &rr);
	backendwatch_keep_only(gen_config(g));
	certwatch_loaded(gen_tls(g), gen_config(g), (int64_t)time(NULL));
	old = gen_config(srv->gen);
	warn_restart_only(srv, gen_config(g), &rr);
	if (*nofile_short(gen_config(g), msg, sizeof(msg)) != '\0')
		reload_say(&rr, CONFIG_WARNING, "warning: %s", msg);
	/* privdrop() kept the capability only for a writer named at start;
	 * the new writer's EPERM advice would send the operator astray. */
	if (srv->net_admin_gone &&
	    gen_config(g)->firewall.backend != CFG_FW_NONE)
		reload_say(&rr, CONFIG_WARNING,
		    "warning: firewall.backend = \"%s\" takes effect at the "
		    "next restart: moat started with \"none\" and gave up "
		    "CAP_NET_ADMIN when it became daemon.user",
		    cfg_firewall_str(gen_config(g)->firewall.backend));
	/* Windows are kept per address or per prefix: under another prefix
	 * length no count carries over. */
	if (old->policy.rate.aggregate_ipv4 !=
	    gen_config(g)->policy.rate.aggregate_ipv4 ||
	    old->policy.rate.aggregate_ipv6 !=
	    gen_config(g)->policy.rate.aggregate_ipv6)
		reload_say(&rr, CONFIG_WARNING,
		    "warning: policy.rate.aggregate_ipv4 "
		    "or aggregate_ipv6 changed: connection and auth-failure "
		    "counts start afresh and open sessions no longer count "
		    "towards concurrent_per_ip (bans stay)");
	gen_unref(srv->gen);
	srv->gen = g;
	log_set_level(gen_config(g)->daemon.log_level);
	server_limits(srv, gen_config(g));
	/* The key store outlives generations: only a reload that took
	 * effect may change how long tickets live. */
	ticketkeys_configure(gen_config(g)->tls.ticket_rotation_ms);
	/* Tickets off: no resumption state outlives a connection
	 * (moat.toml(5)); keys made before would otherwise wait in memory
	 * until a ticket next asked for them. */
	if (!gen_config(g)->tls.session_tickets)
		ticketkeys_wipe();
	if (srv->nw > 1)
		reload_say(&rr, CONFIG_INFO,
		    "reload done: %zu listening sockets in "
		    "each of %zu workers, %zu sessions carry on", srv->ngroups,
		    srv->nw, server_sessions(srv));
	else
		reload_say(&rr, CONFIG_INFO,
		    "reload done: %zu listening sockets, "
		    "%zu sessions carry on", srv->ngroups,
		    server_sessions(srv));
	return 0;
}

/*
 * A reload that fails still reopens the running events file: SIGHUP is
 * logrotate's signal too, and neither one typo in the config nor a drain
 * (which refuses reloads) may leave the events going to the rotated file.
 */
static int
server_reload(struct server *srv, config_report_fn *report, void *arg)
{
	struct reload_report rr = { report, arg };
	int rc = server_reload_config(srv, report, arg);

	/* A reopen that fails says so in the log (event_log_reopen). */
	if (rc == -1 && srv->events != NULL &&
	    event_log_reopen(srv->events) == 0)
		reload_say(&rr, CONFIG_INFO, "the events file was reopened all "
		    "the same");
	return rc;
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
	return server_sessions(arg);
}

static bool
hook_listener(void *arg, size_t i, const struct cfg_listener **lc,
    const struct addr_port **ap)
{
	struct server *srv = arg;

	if (i >= srv->ngroups)
		return false;
	*lc = srv->groups[i].lc;
	*ap = &srv->groups[i].ap;
	return true;
}

static bool
hook_worker(void *arg, size_t i, size_t *sessions, uint64_t *accepted)
{
	struct server *srv = arg;

	if (i >= srv->nw)
		return false;
	*sessions = worker_sessions(srv->w[i]);
	*accepted = worker_accepted(srv->w[i]);
	return true;
}

static int
hook_reload(void *arg, config_report_fn *report, void *rarg)
{
	return server_reload(arg, report, rarg);
}

static int
hook_reopen(void *arg)
{
	struct server *srv = arg;

	log_info("reopening the events file");
	return event_log_reopen(srv->events);
}

/*
 * What moat reads again as daemon.user: at each reload the config file,
 * the list files, the certificates and keys; at start the geo database
 * (opened after the drop). A file only root can read passes everything
 * else and then fails the first SIGHUP, or the start. Said by moat -t
 * (check: the geo database is an error there) and once running, as a
 * warning. Returns -1 when the start would fail.
 */
static int
server_check_reread(const struct config *cfg, const char *config_path,
    bool check)
{
	const struct cfg_strings *lists[2] = { &cfg->policy.allow_files,
	    &cfg->policy.deny_files };
	const char **files;
	int *errs, rc = 0;
	size_t n = 0, max, i, j;

	if (cfg->daemon.user == NULL)
		return 0;
	max = 2 + 2 * (cfg->tls.nsni + 1) + lists[0]->n + lists[1]->n;
	files = calloc(max, sizeof(*files));
	errs = calloc(max, sizeof(*errs));
	if (files == NULL || errs == NULL)
		goto out;
	files[n++] = config_path;
	files[n++] = check ? cfg->policy.geo.database : NULL;
	for (i = 0; i <= cfg->tls.nsni; i++) {
		files[n++] = i == 0 ? cfg->tls.certificate :
		    cfg->tls.sni[i - 1].certificate;
		files[n++] = i == 0 ? cfg->tls.key : cfg->tls.sni[i - 1].key;
	}
	for (j = 0; j < 2; j++)
		for (i = 0; i < lists[j]->n; i++)
			files[n++] = lists[j]->v[i];
	if (privdrop_readable(cfg->daemon.user, files, n, errs) == -1)
		goto out;	/* cannot tell: the start says it */
	for (i = 0; i < n; i++) {
		char line[1024], at[1200];

		if (errs[i] == 0)
			continue;
		if (i == 1) {
			snprintf(line, sizeof(line), "%s cannot read %s: %s; "
			    "moat opens it after becoming that user, so it "
			    "would not start", cfg->daemon.user, files[i],
			    strerror(errs[i]));
			rc = -1;
		} else
			snprintf(line, sizeof(line), "warning: %s cannot read "
			    "%s: %s; moat reads it again as that user at each "
			    "reload (SIGHUP), which will fail until it can",
			    cfg->daemon.user, files[i], strerror(errs[i]));
		config_at(cfg, files[i], line, at, sizeof(at));
		if (check)
			fprintf(stderr, "%s\n", at);
		else
			log_warnx("%s", at);
	}
out:
	free(files);
	free(errs);
	return rc;
}

/*
 * For moat -t: the state and events files, where they exist, as
 * daemon.user, which must read and write them once it runs (privdrop()
 * refuses the start otherwise). One that a run as root left behind, or
 * that logrotate made with create, passes everything else.
 */
static int
server_check_own(const struct config *cfg)
{
	const char *own[3];
	char line[1024], at[1200];
	int errs[2], rc = 0;
	size_t n, i;

	if (cfg->daemon.user == NULL)
		return 0;
	server_own_files(cfg, own);
	for (n = 0; own[n] != NULL; n++)
		;
	for (i = 0; i < n; i++)
		if (own[i][0] == '\0' || strcmp(own[i], "-") == 0)
			own[i] = NULL;	/* standard output */
	if (privdrop_writable(cfg->daemon.user, own, n, errs) == -1)
		return 0;	/* cannot tell: the start says it */
	for (i = 0; i < n; i++) {
		if (errs[i] == 0)
			continue;
		snprintf(line, sizeof(line), "%s cannot read and write %s: "
		    "%s; moat would not start: give the file to that user "
		    "(chown %s %s)", cfg->daemon.user, own[i],
		    strerror(errs[i]), cfg->daemon.user, own[i]);
		fprintf(stderr, "%s\n", config_at(cfg, own[i], line, at,
		    sizeof(at)));
		rc = -1;
	}
	return rc;
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
	char err[1024], dir[4096];

	if (cfg->daemon.user == NULL)
		return 0;
	if (srv->config_path != NULL && srv->config_path[0] != '/') {
		if (realpath(srv->config_path, srv->config_abs) == NULL) {
			log_warn("%s", srv->config_path);
			return -1;
		}
		srv->config_path = srv->config_abs;
	}
	server_own_files(cfg, own);
	if (privdrop(cfg->daemon.user,
	    cfg->firewall.backend != CFG_FW_NONE,
	    cfg->daemon.state_file != NULL ? privdrop_dirname(
	    cfg->daemon.state_file, dir, sizeof(dir)) : "/",
	    own, err, sizeof(err)) == -1) {
		log_warnx("%s", err);
		return -1;
	}
	srv->net_admin_gone = cfg->firewall.backend == CFG_FW_NONE;
	(void)server_check_reread(cfg, srv->config_path, false);
	return 0;
}

/* The control socket and the metrics endpoint; failures are fatal at
 * start, as an operator who configured them relies on them. */
static int
server_ops_open(struct server *srv)
{
	const struct config *cfg = gen_config(srv->gen);
	char err[512] = "";

	srv->hooks.arg = srv;
	srv->hooks.gen = hook_gen;
	srv->hooks.sessions = hook_sessions;
	srv->hooks.listener = hook_listener;
	srv->hooks.worker = hook_worker;
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
	/* NULL (no memory) only loses the warnings. */
	srv->start_control = strdup(cfg->daemon.control_socket ?
	    cfg->daemon.control_socket : "");
	srv->start_user = strdup(cfg->daemon.user ? cfg->daemon.user : "");
	srv->start_metrics = cfg->daemon.metrics_enabled;
	srv->start_workers = cfg->daemon.workers;
	srv->start_metrics_at = cfg->daemon.metrics;
	return 0;
}

/* Any thread: a worker may have finished draining. */
static void
server_worker_done(void *arg)
{
	struct server *srv = arg;

	ev_async_send(srv->loop, &srv->done);
}

static void
server_done_cb(struct ev_loop *loop, ev_async *w, int revents)
{
	struct server *srv = container_of(w, struct server, done);
	size_t k;

	(void)revents;
	if (!srv->draining)
		return;
	for (k = 0; k < srv->nw; k++)
		if (!worker_finished(srv->w[k]))
			return;
	ev_break(loop, EVBREAK_ALL);
}

static void
server_close_all(struct server *srv)
{
	size_t k;

	for (k = 0; k < srv->nw; k++)
		worker_close_all(srv->w[k]);
}

static void
server_drain_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct server *srv = container_of(w, struct server, drain);

	(void)loop;
	(void)revents;
	log_info("drain: grace period over, closing %zu sessions",
	    server_sessions(srv));
	server_close_all(srv);
}

static void
server_follow_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct server *srv = container_of(w, struct server, follow);

	(void)loop, (void)revents;
	event_log_follow(srv->events);
}

static void
server_heap_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct server *srv = container_of(w, struct server, heap);
	size_t n;

	(void)loop, (void)revents;
	/* Here too, so that a quiet spell keeps no ticket key longer
	 * than ticketkeys.h says. */
	ticketkeys_expire(mono_ms());
	certwatch_tick(gen_tls(srv->gen), gen_config(srv->gen),
	    (int64_t)time(NULL));
	if ((n = heap_tick()) > 0)
		log_debug("heap: %zu KiB that closed sessions freed given back",
		    n >> 10);
}

static void
server_sigterm_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
	struct server *srv = w->data;
	const struct config *cfg = gen_config(srv->gen);
	size_t n;

	(void)revents;
	if (srv->draining) {
		log_info("second signal: closing %zu sessions now",
		    server_sessions(srv));
		server_close_all(srv);
		return;
	}
	srv->draining = true;
	sdnotify("STOPPING=1");
	n = server_sessions(srv);
	server_close_listeners(srv);
	/*
	 * The grace period runs even when no session was counted: a worker
	 * thread publishes its count once per loop iteration, and may have
	 * accepted connections from its queue just before its listeners
	 * closed. Once every worker is done the loop ends anyway.
	 */
	if (n == 0)
		log_info("shutting down");
	else
		log_info("draining %zu sessions for up to %llu ms", n,
		    (unsigned long long)cfg->daemon.drain_ms);
	ev_timer_set(&srv->drain, (ev_tstamp)cfg->daemon.drain_ms / 1000.,
	    0.);
	ev_timer_start(loop, &srv->drain);
}

/* Any thread: a new ban ends the address's sessions in every worker, as
 * the kernel set would (guard_on_ban). */
static void
server_ban_cb(void *arg, const uint8_t addr[16], bool open)
{
	struct server *srv = arg;
	size_t k;

	/* The session cap counts every session by its TCP peer, whatever
	 * policy's window table still knows (one behind a load balancer
	 * is counted under the balancer's address, though). */
	if (!open && slots_held(srv->slots, addr) == 0)
		return;
	for (k = 0; k < srv->nw; k++)
		worker_kick(srv->w[k], addr);
}

static int
server_workers_new(struct server *srv)
{
	size_t k, n = server_nworkers(gen_config(srv->gen));

	if ((srv->w = calloc(n, sizeof(*srv->w))) == NULL)
		return -1;
	for (k = 0; k < n; k++) {
		if ((srv->w[k] = worker_new((unsigned)k, srv->slots,
		    server_worker_done, srv)) == NULL)
			return -1;
		srv->nw++;
	}
	return 0;
}

static int
server_workers_start(struct server *srv)
{
	size_t k;

	for (k = 0; k < srv->nw; k++)
		if (worker_start(srv->w[k]) == -1) {
			log_warn("worker %zu: cannot start its thread", k);
			return -1;
		}
	return 0;
}

/* Joins every worker thread and frees what the workers held. */
static void
server_workers_free(struct server *srv)
{
	size_t k;

	for (k = 0; k < srv->nw; k++)
		worker_drain(srv->w[k]);
	/* After a normal drain no session is left to close; after a start
	 * that failed at a later worker's thread, the workers already
	 * running hold sessions that would keep them (and moat) alive
	 * until their idle timeouts. */
	server_close_all(srv);
	for (k = 0; k < srv->nw; k++)
		worker_free(srv->w[k]);
	free(srv->w);
	srv->w = NULL;
	srv->nw = 0;
}

/* Sessions end (and release policy) before the guard closes, and tail
 * followers get every event before the control socket does. */
static void
server_teardown(struct server *srv)
{
	guard_on_ban(NULL, NULL);
	server_workers_free(srv);
	free(srv->groups);
	srv->groups = NULL;
	metrics_http_close(srv->metrics);
	control_close(srv->control);
	free(srv->start_control);
	free(srv->start_user);
	guard_close();
	event_log_close(srv->events);
	gen_unref(srv->gen);
	slots_free(srv->slots);
}

static void
held_signals(sigset_t *set)
{
	sigemptyset(set);
	sigaddset(set, SIGHUP);
	sigaddset(set, SIGUSR1);
	sigaddset(set, SIGTERM);
	sigaddset(set, SIGINT);
	sigaddset(set, SIGQUIT);
}

void
server_hold_signals(void)
{
	sigset_t set;

	held_signals(&set);
	sigprocmask(SIG_BLOCK, &set, NULL);
}

static void
server_release_signals(void)
{
	sigset_t set;

	held_signals(&set);
	sigprocmask(SIG_UNBLOCK, &set, NULL);
}

static void
server_ignore_signals(void)
{
	struct sigaction sa;
	int sigs[] = { SIGHUP, SIGUSR1, SIGTERM, SIGINT, SIGQUIT };

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = SIG_IGN;
	sigemptyset(&sa.sa_mask);
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		sigaction(sigs[i], &sa, NULL);
}

int
server_run(struct config *cfg, const char *config_path)
{
	struct server srv;
	struct event_log *log = NULL;
	struct lplan pl;
	char err[300] = "";

	memset(&srv, 0, sizeof(srv));
	signal(SIGPIPE, SIG_IGN);
	srv.config_path = config_path;
	if ((srv.loop = ev_default_loop(EVFLAG_AUTO)) == NULL) {
		log_warnx("cannot start the event loop");
		config_free(cfg);
		return 1;
	}
	if ((srv.gen = gen_new(cfg, server_report_log, NULL)) == NULL)
		return 1;
	log_set_level(gen_config(srv.gen)->daemon.log_level);
	ticketkeys_configure(gen_config(srv.gen)->tls.ticket_rotation_ms);
	certwatch_loaded(gen_tls(srv.gen), gen_config(srv.gen),
	    (int64_t)time(NULL));
	metrics_init();
	server_nofile(gen_config(srv.gen));
	ev_async_init(&srv.done, server_done_cb);
	ev_async_start(srv.loop, &srv.done);
	if ((srv.slots = slots_new()) == NULL ||
	    server_workers_new(&srv) == -1) {
		log_warnx("out of memory");
		server_workers_free(&srv);
		slots_free(srv.slots);
		gen_unref(srv.gen);
		return 1;
	}
	server_limits(&srv, gen_config(srv.gen));
	/* Caught from here on, though handled only once the loop runs;
	 * held until now (server_hold_signals()), so that none that came
	 * while the config loaded is lost or kills us. */
	ev_signal_init(&srv.sighup, server_sighup_cb, SIGHUP);
	ev_signal_init(&srv.sigterm, server_sigterm_cb, SIGTERM);
	ev_signal_init(&srv.sigint, server_sigterm_cb, SIGINT);
	/* Its default would dump core and cut every session and the last
	 * bans off; nginx's operators know it as the graceful stop. */
	ev_signal_init(&srv.sigquit, server_sigterm_cb, SIGQUIT);
	ev_signal_init(&srv.sigusr1, server_sigusr1_cb, SIGUSR1);
	srv.sigterm.data = &srv;
	srv.sigint.data = &srv;
	srv.sigquit.data = &srv;
	ev_timer_init(&srv.drain, server_drain_cb, 0., 0.);
	ev_timer_init(&srv.heap, server_heap_cb, HEAP_TICK, HEAP_TICK);
	ev_timer_init(&srv.follow, server_follow_cb, EVENTS_FOLLOW_S,
	    EVENTS_FOLLOW_S);
	ev_signal_start(srv.loop, &srv.sighup);
	ev_signal_start(srv.loop, &srv.sigterm);
	ev_signal_start(srv.loop, &srv.sigint);
	ev_signal_start(srv.loop, &srv.sigquit);
	ev_signal_start(srv.loop, &srv.sigusr1);
	server_release_signals();
	/*
	 * What needs root comes first (the control socket, ports); then
	 * daemon.user takes over, and the rest (events file, state file,
	 * geo database, firewall writer thread, worker threads) opens as
	 * that user, as it will be reopened on reload. The writer thread
	 * inherits CAP_NET_ADMIN from here. The control socket goes before
	 * the ports: a moat that finds another one answering there exits
	 * before its ports ever accept a connection it would then drop.
	 */
	if (server_dirs(gen_config(srv.gen)) == -1 || server_ops_open(&srv) == -1 ||
	    lplan_bind(&srv, srv.gen, &pl, NULL) == -1)
		goto fail;
	lplan_commit(&srv, srv.gen, &pl, NULL);
	if (server_privdrop(&srv) == -1 ||
	    events_prepare(&srv, gen_config(srv.gen), &log, NULL) == -1)
		goto fail;
	events_commit(&srv, log, NULL);
	if (guard_open(srv.loop, gen_config(srv.gen), err,
	    sizeof(err)) == -1)
		goto fail;
	guard_on_ban(server_ban_cb, &srv);
	if (server_workers_start(&srv) == -1)
		goto fail;
	if (srv.nw > 1)
		log_info("moat running: %zu listening sockets, %zu workers",
		    srv.ngroups, srv.nw);
	else
		log_info("moat running: %zu listening sockets", srv.ngroups);
	/* systemd's start succeeds only now, or fails with what stopped
	 * moat (a port in use) instead of a restart loop behind it. */
	sdnotify("READY=1");

	heap_init();
	ev_timer_start(srv.loop, &srv.heap);
	ev_timer_start(srv.loop, &srv.follow);
	ev_run(srv.loop, 0);

	/* Stopping the watchers gives the signals their default action
	 * back, which would end moat in the final save below and lose the
	 * last bans: they are held first, then ignored until exit (the
	 * other threads hold them all). SIGKILL still ends it. */
	server_hold_signals();
	ev_signal_stop(srv.loop, &srv.sighup);
	ev_signal_stop(srv.loop, &srv.sigterm);
	ev_signal_stop(srv.loop, &srv.sigint);
	ev_signal_stop(srv.loop, &srv.sigquit);
	ev_signal_stop(srv.loop, &srv.sigusr1);
	server_ignore_signals();
	ev_timer_stop(srv.loop, &srv.drain);
	ev_timer_stop(srv.loop, &srv.heap);
	ev_timer_stop(srv.loop, &srv.follow);
	server_teardown(&srv);
	ev_async_stop(srv.loop, &srv.done);
	ev_loop_destroy(srv.loop);
	log_info("stopped");
	return 0;
fail:
	if (err[0] != '\0')
		log_warnx("%s", err);
	server_teardown(&srv);
	return 1;
}

int
server_check(const struct config *cfg)
{
	struct tls_set *t;
	struct geo *geo;
	char *msg = NULL, msg2[512], err[1024], warn[1024];
	int rc = 0;

	/* The start would stop here: a directory it cannot make or that
	 * daemon.user cannot write. */
	if (own_dirs(cfg, cfg->daemon.user, true, err, sizeof(err)) == -1) {
		fprintf(stderr, "%s\n", err);
		rc = 1;
	}
	if (cfg->daemon.control_socket != NULL &&
	    cfg->daemon.control_socket[0] != '\0' &&
	    control_check(cfg->daemon.control_socket, msg2,
	    sizeof(msg2)) == -1) {
		fprintf(stderr, "%s\n", config_at(cfg,
		    cfg->daemon.control_socket, msg2, err, sizeof(err)));
		rc = 1;
	}
	if ((t = tls_set_new(cfg, config_report_stderr, NULL)) == NULL)
		rc = 1;
	else
		tls_set_free(t);
	if (server_check_reread(cfg, cfg->path, true) == -1)
		rc = 1;
	if (server_check_own(cfg) == -1)
		rc = 1;
	/* The loader only knows the database is readable; this knows it is
	 * a country database libmaxminddb can use, and for which clients. */
	if (cfg->policy.geo.database != NULL) {
		if ((geo = geo_open(cfg->policy.geo.database, &msg)) == NULL) {
			fprintf(stderr, "%s\n", config_locate(cfg,
			    cfg->policy.geo.database, msg ? msg :
			    cfg->policy.geo.database, err, sizeof(err)));
			free(msg);
			rc = 1;
		} else {
			guard_geo_report(geo, config_report_stderr, NULL);
			if (*guard_geo_warning(cfg, geo, warn,
			    sizeof(warn)) != '\0')
				fprintf(stderr, "%s\n", warn);
			geo_close(geo);
		}
	}
	return rc;
}
