/* guard.c - the proxy's side of policy: verdicts, feedback, bans, events. */
#include "guard.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "events.h"
#include "fw.h"
#include "geo.h"
#include "log.h"
#include "metrics.h"
#include "mono.h"
#include "state.h"
#include "utc.h"

/* How long a changed ban table may wait before it is written out: long
 * enough to batch a burst of bans into one fsync, short enough that a
 * crash loses little. */
#define STATE_SAVE_DELAY 2.0
/* A save runs on the main loop, which answers moatctl, metrics scrapes
 * and signals; a big table (a flood of new addresses) takes a second or
 * more to render and write, so saves come at most this share of the
 * time. */
#define STATE_SAVE_SHARE 0.05

static struct {
	struct ev_loop *loop;
	struct policy *policy;
	struct geo *geo;
	char *geo_path;
	uint64_t geo_errors_past;	/* failed lookups of replaced databases */
	uint64_t geo_errors_said;	/* of guard.geo, in the last warning */
	uint64_t geo_errors_ms;		/* when that was logged, 0: never */
	ev_timer save;
	char save_err[256];	/* the failing save's reason, "" if none */
	uint64_t save_err_ms;	/* when it was last logged */
	struct fw *fw;		/* kernel set writer; never NULL once open */
	enum fw_problem fw_problem;	/* the writer's last report */
	int64_t fw_since;	/* Unix seconds: when it started failing */
	enum fw_problem fw_replaced;	/* of a writer a reload replaced
					 * while failing, until the new one
					 * writes or fails */
	bool fw_closing;	/* the writer's last reports: no refill */
	struct {		/* the [firewall] it was started with */
		enum cfg_firewall backend;
		bool create;
		char table[32], set4[32], set6[32];
	} fwc;
	bool open;
} guard;

/* Who ends the open sessions of a newly banned address (guard.h); read
 * on every thread that bans, so kept apart from guard and atomic. */
static _Atomic(guard_ban_fn *) on_ban;
static void *on_ban_arg;

uint64_t
guard_now_ms(void)
{
	/* Ahead by the base, so that a restored ban's past fits (state.h). */
	return mono_ms() + STATE_CLOCK_BASE_MS;
}

static uint64_t
wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

struct policy *
guard_policy(void)
{
	return guard.policy;
}

const struct geo *
guard_geo_db(void)
{
	return guard.geo;
}

uint64_t
guard_geo_errors(void)
{
	return guard.geo_errors_past +
	    (guard.geo != NULL ? geo_errors(guard.geo) : 0);
}

/*
 * A database damaged in its data section opens and then fails lookups
 * (geo.h), whose clients count as unknown: with deny_countries and
 * unknown = "allow", everyone gets in. Said at once, then at most every
 * GEO_WARN_EVERY while more fail.
 */
#define GEO_WARN_EVERY (10 * 60 * 1000)

static void
guard_geo_watch(void)
{
	uint64_t n, now = mono_ms();

	if (guard.geo == NULL || (n = geo_errors(guard.geo)) <=
	    guard.geo_errors_said)
		return;
	if (guard.geo_errors_ms != 0 &&
	    now - guard.geo_errors_ms < GEO_WARN_EVERY)
		return;
	log_warnx("geo: %llu lookup%s in %s failed%s: the database looks "
	    "damaged, and those clients count as unknown ([policy.geo] "
	    "unknown); put a good copy in its place and reload",
	    (unsigned long long)(n - guard.geo_errors_said),
	    n - guard.geo_errors_said == 1 ? "" : "s", geo_path(guard.geo),
	    guard.geo_errors_said == 0 ? "" : " since the last warning");
	guard.geo_errors_said = n;
	guard.geo_errors_ms = now;
}

/*
 * A save that fails is retried at every tick; the log says so when the
 * reason changes and every STATE_WARN_EVERY while it lasts, not at each
 * try, and says when a save works again. The last save, at stop, has no
 * retry: its failure is always said, as the loss it is.
 */
#define STATE_WARN_EVERY (10 * 60 * 1000)

static void
guard_save_now(bool last)
{
	char err[sizeof(guard.save_err)];
	uint64_t now;
	double took, every;
	int rc;

	if (guard.policy == NULL || !policy_state_dirty(guard.policy))
		return;
	now = guard_now_ms();
	rc = policy_state_save(guard.policy, now, wall_ms(), err, sizeof(err));
	took = (double)(guard_now_ms() - now) / 1000.0;
	every = took / STATE_SAVE_SHARE;
	every = every > STATE_SAVE_DELAY ? every : STATE_SAVE_DELAY;
	if (ev_is_active(&guard.save) && every != guard.save.repeat) {
		/* Said when it starts and ends, not at every change. */
		if (every > STATE_SAVE_DELAY &&
		    guard.save.repeat <= STATE_SAVE_DELAY)
			log_info("state: saving took %.2f s; saving every "
			    "%.0f s or more while it takes that long", took,
			    every);
		else if (every <= STATE_SAVE_DELAY)
			log_info("state: saving every %.0f s again",
			    STATE_SAVE_DELAY);
		guard.save.repeat = every;
		ev_timer_again(guard.loop, &guard.save);
	}
	if (rc == 0) {
		if (guard.save_err[0] != '\0')
			/* A warning, as the failures were: at log_level
			 * "warning" the log must not end on them. */
			log_warnx("state: saved again after failures");
		guard.save_err[0] = '\0';
		return;
	}
	if (last) {
		log_warnx("%s: the bans since the last good save are lost to "
		    "the next start", err);
		return;
	}
	if (strcmp(err, guard.save_err) == 0 &&
	    now - guard.save_err_ms < STATE_WARN_EVERY)
		return;
	log_warnx("%s (bans are still enforced, but would not survive a "
	    "restart; retrying every %.0f s)", err, guard.save.repeat);
	snprintf(guard.save_err, sizeof(guard.save_err), "%s", err);
	guard.save_err_ms = now;
}

static void
guard_save_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop, (void)w, (void)revents;
	guard_save_now(false);
	guard_geo_watch();
}

static void
state_report(void *arg, const char *line)
{
	(void)arg;
	log_warnx("%s", line);
}

/* Opens the configured database, anew at every reload (the file may
 * have been replaced); daemon.user, when set, is the one opening it. */
static int
guard_geo(const struct config *cfg, struct geo **out, char *err,
    size_t errlen)
{
	const char *path = cfg->policy.geo.database;
	char *msg = NULL, line[1024];

	*out = NULL;
	if (path == NULL)
		return 0;
	if ((*out = geo_open(path, &msg)) == NULL) {
		config_locate(cfg, path, msg ? msg : path, line, sizeof(line));
		if (cfg->daemon.user != NULL && geteuid() != 0)
			snprintf(err, errlen, "%s (opened as daemon.user "
			    "'%s')", line, cfg->daemon.user);
		else
			snprintf(err, errlen, "%s", line);
		free(msg);
		return -1;
	}
	return 0;
}

void
guard_geo_report(const struct geo *g, config_report_fn *report, void *arg)
{
	char sum[1024], line[1100];

	if (g == NULL)
		return;
	snprintf(line, sizeof(line), "geo: %s",
	    geo_summary(g, (int64_t)(wall_ms() / 1000), sum, sizeof(sum)));
	if (report != NULL)
		report(arg, CONFIG_INFO, line);
	else
		log_info("%s", line);
}

/*
 * What lets an IPv6 client reach lc, said in why: an IPv6 listening
 * address, or PROXY headers, which may carry one whatever moat listens
 * on. False when only IPv4 clients can come.
 */
static bool
guard_ipv6_way(const struct cfg_listener *lc, char *why, size_t len)
{
	char ap[ADDR_PORT_STRLEN];
	size_t i;

	for (i = 0; i < lc->nlisten; i++)
		if (lc->listen[i].ss.ss_family == AF_INET6) {
			snprintf(why, len, "listens on %s", addr_port_str(
			    &lc->listen[i], ap, sizeof(ap)));
			return true;
		}
	if (lc->accept_proxy) {
		snprintf(why, len, "takes client addresses from PROXY "
		    "headers");
		return true;
	}
	return false;
}

const char *
guard_geo_warning(const struct config *cfg, const struct geo *g, char *msg,
    size_t len)
{
	const char *verdict;
	char why[ADDR_PORT_STRLEN + 16], line[1024];
	size_t i;

	msg[0] = '\0';
	if (g == NULL || geo_ip_version(g) != 4)
		return msg;
	for (i = 0; i < cfg->nlisteners; i++)
		if (guard_ipv6_way(&cfg->listeners[i], why, sizeof(why)))
			break;
	if (i == cfg->nlisteners)
		return msg;
	if (cfg->policy.geo.unknown == CFG_GEO_UNKNOWN_DENY)
		verdict = "\"deny\" refuses them all";
	else if (cfg->policy.geo.allow_countries.n > 0 ||
	    cfg->policy.geo.deny_countries.n > 0)
		verdict = "\"allow\" admits them all, whatever "
		    "allow_countries and deny_countries say";
	else
		verdict = "\"allow\" admits them all";
	snprintf(line, sizeof(line), "%s: warning: an IPv4-only database "
	    "(ip_version 4), but listener '%s' %s: IPv6 clients are never "
	    "found in it and get the policy for unknown countries: "
	    "[policy.geo] unknown = %s", cfg->policy.geo.database,
	    cfg->listeners[i].name, why, verdict);
	return config_locate(cfg, cfg->policy.geo.database, line, msg, len);
}

/*
 * The bans to write again, copied under the policy lock and queued to the
 * writer after it: queueing costs a lookup in the writer's large maps for
 * each ban (cache misses, about 0.3 s per million), which every accept
 * on every worker would otherwise wait for at each reload. A ban made or
 * extended in between was queued by its own thread, and the writer keeps
 * the later timeout. A ban the full table drops for room in between
 * (guard_fw_evict, on a worker) would be written again after its delete:
 * those are noted meanwhile and settled after the queueing. The copy is
 * bounded: past REFILL_COPY_MAX bans, the rest are queued under the lock
 * as before, the copied ones still after it.
 */
#define REFILL_COPY_MAX (1u << 20)
#define REFILL_EVICTED_MAX 4096

struct fw_left {
	uint8_t addr[16];
	uint64_t left_ms;
};

struct fw_assert {
	uint64_t now;
	size_t total;		/* bans in force seen */
	size_t n, cap;		/* in v */
	struct fw_left *v;	/* NULL (no memory): queued at once */
};

/* What the table drops for room while a refill's copy waits. */
static struct {
	pthread_mutex_t mu;
	bool on;		/* a refill is between copy and queue */
	size_t n;
	bool over;		/* more than REFILL_EVICTED_MAX */
	uint8_t addr[REFILL_EVICTED_MAX][16];
} refill_ev = { .mu = PTHREAD_MUTEX_INITIALIZER };

/* Queues the copied bans to the writer. */
static void
guard_fw_queue(const struct fw_assert *fa)
{
	size_t i;

	for (i = 0; i < fa->n; i++)
		fw_add(guard.fw, fa->v[i].addr, fa->v[i].left_ms);
}

static void
guard_fw_assert(void *arg, const uint8_t addr[16], const struct ban_info *b)
{
	struct fw_assert *fa = arg;
	struct fw_left *v;

	if (b->expiry_ms <= fa->now)
		return;
	fa->total++;
	if (fa->v != NULL && fa->n == fa->cap && fa->cap < REFILL_COPY_MAX &&
	    (v = realloc(fa->v, 2 * fa->cap * sizeof(*v))) != NULL) {
		fa->v = v;
		fa->cap *= 2;
	}
	if (fa->v == NULL || fa->n == fa->cap) {
		/* No room to copy (the bound, or no memory): queued under
		 * the lock; what was copied still goes after it. */
		fw_add(guard.fw, addr, b->expiry_ms - fa->now);
		return;
	}
	memcpy(fa->v[fa->n].addr, addr, 16);
	fa->v[fa->n++].left_ms = b->expiry_ms - fa->now;
}

static void guard_fw_sync(const uint8_t addr[16], bool replace);

/* Bans dropped for room while the refill queued: written out again. */
static void
guard_fw_settle_evicted(void)
{
	uint8_t (*a)[16] = NULL;
	size_t i, n;
	bool over;

	pthread_mutex_lock(&refill_ev.mu);
	refill_ev.on = false;
	n = refill_ev.n;
	over = refill_ev.over;
	if (n > 0 && (a = malloc(n * sizeof(*a))) != NULL)
		memcpy(a, refill_ev.addr, n * sizeof(*a));
	pthread_mutex_unlock(&refill_ev.mu);
	for (i = 0; a != NULL && i < n; i++)
		guard_fw_sync(a[i], false);
	free(a);
	if (over || (n > 0 && a == NULL))
		log_warnx("firewall: bans dropped for room while the bans in "
		    "force were written again may stay in the kernel sets "
		    "until their timeout");
}

/* Queues every ban in force again: the writer found the sets without
 * them (created anew, emptied) or was started afresh. */
static void
guard_fw_refill(const char *why)
{
	struct fw_assert fa = { guard_now_ms(), 0, 0, 1024, NULL };

	if (!fw_enabled(guard.fw))
		return;
	fa.v = malloc(fa.cap * sizeof(*fa.v));
	pthread_mutex_lock(&refill_ev.mu);
	refill_ev.on = true;
	refill_ev.n = 0;
	refill_ev.over = false;
	pthread_mutex_unlock(&refill_ev.mu);
	policy_bans(guard.policy, fa.now, guard_fw_assert, &fa);
	if (fa.v != NULL)
		guard_fw_queue(&fa);
	free(fa.v);
	guard_fw_settle_evicted();
	/* The kernel dropped bans meanwhile (a flushed ruleset): worth a
	 * warning, even though moat repairs it. */
	if (why != NULL && fa.total > 0)
		log_warnx("firewall: %s; writing the %zu bans in force again",
		    why, fa.total);
}

/*
 * The firewall writer's reports, on the loop thread: each problem arrives
 * once (fw.h), with the fix in its message; it is logged and raised as a
 * firewall_error event. Bans stay enforced at accept either way. Whoever
 * follows the events learns there too when writes work again, and which
 * problem (the last reported) ended. A set that lost its elements
 * (refill) gets every ban in force again.
 */
static void
guard_fw_report(void *arg, const struct fw_report *r)
{
	struct event ev = EVENT_INIT;
	enum fw_problem was = guard.fw_problem != FW_OK ? guard.fw_problem :
	    guard.fw_replaced;

	(void)arg;
	if (r->refill) {
		/* A closing writer writes nothing more: its successor
		 * gets the bans in force. */
		if (!guard.fw_closing)
			guard_fw_refill(r->message);
		return;
	}
	if (!r->note) {
		if (r->problem != FW_OK && was == FW_OK)
			guard.fw_since = (int64_t)time(NULL);
		guard.fw_problem = r->problem;
		guard.fw_replaced = FW_OK;
	}
	if (r->problem == FW_OK) {
		/* The end of a problem is a warning, as its start was. */
		if (r->note || was == FW_OK) {
			log_info("firewall: %s", r->message);
			return;
		}
		log_warnx("firewall: %s", r->message);
		ev.event = "firewall_recovered";
		ev.reason = fw_problem_str(was);
		ev.firewall = r->backend;
		ev.detail = r->message;
		events_emit(&ev);
		return;
	}
	log_warnx("firewall: %s", r->message);
	ev.event = "firewall_error";
	ev.ip = r->addr;
	ev.reason = fw_problem_str(r->problem);
	ev.firewall = r->backend;
	ev.detail = r->message;
	events_emit(&ev);
}

/*
 * Starts the writer for cfg and gives it every ban in force, so that
 * timeouts are right again after a restart or a changed [firewall].
 * replaced: the problem of the writer it replaces (FW_OK: none). The new
 * writer reports its own problems, and its first write that works says
 * "works again" for the old one (status shows "ok" until a problem).
 */
static int
guard_fw_start(const struct config *cfg, enum fw_problem replaced,
    char *err, size_t errlen)
{
	guard.fw_problem = FW_OK;
	guard.fw_replaced = FW_OK;
	if ((guard.fw = fw_open(guard.loop, cfg, guard_fw_report,
	    NULL)) == NULL) {
		snprintf(err, errlen, "firewall: %s", strerror(errno));
		return -1;
	}
	if (replaced != FW_OK && cfg->firewall.backend != CFG_FW_NONE) {
		guard.fw_replaced = replaced;
		fw_inherit_failing(guard.fw);
	}
	guard_fw_refill(NULL);
	guard.fwc.backend = cfg->firewall.backend;
	guard.fwc.create = cfg->firewall.create;
	snprintf(guard.fwc.table, sizeof(guard.fwc.table), "%s",
	    cfg->firewall.table);
	snprintf(guard.fwc.set4, sizeof(guard.fwc.set4), "%s",
	    cfg->firewall.set4);
	snprintf(guard.fwc.set6, sizeof(guard.fwc.set6), "%s",
	    cfg->firewall.set6);
	return 0;
}

/*
 * Queues what the policy holds for addr now: the ban with the time it has
 * left, or its removal. Done under the policy's lock (policy_ban_settle),
 * so a ban and an unban of one address on two threads reach the writer's
 * queue in the order they were made, and the last change queued is the
 * truth. replace: an operator's ban, which replaces the one the kernel
 * holds, a shorter one too.
 */
struct fw_sync {
	bool replace;
	uint64_t now;
};

static void
sync_visit(void *arg, const uint8_t addr[16], const struct ban_info *b)
{
	const struct fw_sync *st = arg;

	if (b == NULL)
		fw_del(guard.fw, addr);
	else if (st->replace)
		fw_set(guard.fw, addr, b->expiry_ms - st->now);
	else
		fw_add(guard.fw, addr, b->expiry_ms - st->now);
}

static void
guard_fw_sync(const uint8_t addr[16], bool replace)
{
	struct fw_sync st = { replace, guard_now_ms() };

	if (fw_enabled(guard.fw))
		policy_ban_settle(guard.policy, addr, st.now, sync_visit, &st);
}

/*
 * A ban in force that the full ban table dropped (ban.max_entries): out
 * of the kernel set too, so that a flood of new addresses never holds
 * more bans there, nor in the writer's own tables, than the table does.
 * Called under the policy's lock, like sync_visit; fw_del only queues.
 * Nothing is logged per address (a flood would fill the log): the
 * metrics count them.
 */
static void
guard_fw_evict(void *arg, const uint8_t addr[16])
{
	(void)arg;
	if (!fw_enabled(guard.fw))
		return;
	/* The delete and its note together: a refill that settles between
	 * them would miss a delete its own add then undoes. */
	pthread_mutex_lock(&refill_ev.mu);
	fw_del(guard.fw, addr);
	if (refill_ev.on) {
		if (refill_ev.n < REFILL_EVICTED_MAX)
			memcpy(refill_ev.addr[refill_ev.n++], addr, 16);
		else
			refill_ev.over = true;
	}
	pthread_mutex_unlock(&refill_ev.mu);
}

/* An event's firewall field: the backend whose sets take addr's ban or
 * unban, if any. */
static const char *
fw_for(const uint8_t addr[16])
{
	return fw_takes(guard.fw, addr) ? fw_name(guard.fw) : NULL;
}

/* A ban lifted: out of the kernel set, logged and written as an event. */
static void
note_unban(const uint8_t addr[16], const char *reason)
{
	struct event ev = EVENT_INIT;
	char ip[64];

	log_info("unban ip=%s reason=%s", addr_v6_str(addr, ip, sizeof(ip)),
	    reason);
	guard_fw_sync(addr, false);
	ev.event = "unban";
	ev.ip = addr;
	ev.reason = reason;
	ev.firewall = fw_for(addr);
	events_emit(&ev);
}

/* A ban lifted because the allow list now covers its address: out of
 * the kernel set too, or the kernel would still drop it. */
static void
guard_lift(void *arg, const uint8_t addr[16], const struct ban_info *b)
{
	size_t *lifted = arg;

	(void)b;
	note_unban(addr, "allowlist");
	(*lifted)++;
}

/* On the writer thread: a kernel element moat holds no ban for, whose
 * address the allow list covers (fw_lift). The policy outlives the
 * writer (guard_close). */
static bool
guard_kernel_allowed(void *arg, const uint8_t addr[16])
{
	(void)arg;
	return policy_allowlisted(guard.policy, addr);
}

/* The allow list beats bans: those moat holds, and what the kernel still
 * holds from before (a state file set aside), at start and each reload.
 * Returns how many of moat's bans in force it lifted. */
static size_t
guard_lift_allowed(void)
{
	size_t lifted = 0;

	(void)policy_unban_allowed(guard.policy, guard_now_ms(), guard_lift,
	    &lifted);
	fw_lift(guard.fw, guard_kernel_allowed, NULL);
	return lifted;
}

/*
 * Whether the running writer's set for the family fam (0 IPv4, 1 IPv6)
 * is the one cfg names: same backend and set name, and for nftables the
 * same table (ipset sets have no table).
 */
static bool
guard_fw_same_set(const struct config *cfg, int fam)
{
	if (guard.fwc.backend != cfg->firewall.backend ||
	    cfg->firewall.backend == CFG_FW_NONE)
		return false;
	if (strcmp(fam == 0 ? guard.fwc.set4 : guard.fwc.set6,
	    fam == 0 ? cfg->firewall.set4 : cfg->firewall.set6) != 0)
		return false;
	return cfg->firewall.backend == CFG_FW_IPSET ||
	    strcmp(guard.fwc.table, cfg->firewall.table) == 0;
}

struct fw_unwrite {
	uint64_t now;
	bool keep[2];		/* IPv4, IPv6: the new writer's set too */
	size_t n;
};

static void
guard_fw_unassert(void *arg, const uint8_t addr[16], const struct ban_info *b)
{
	struct fw_unwrite *fu = arg;

	if (b->expiry_ms > fu->now && !fu->keep[fw_addr_is_v4(addr) ? 0 : 1]) {
		fw_del(guard.fw, addr);
		fu->n++;
	}
}

/*
 * A reload changed [firewall]: the writer about to close takes the bans
 * in force out of its sets, or the drop rules that name them would keep
 * dropping those clients, an unbanned one too, until the timeouts end.
 * A set the new writer writes too keeps its elements: the new writer
 * finds them there. Waits for the deletes (the workers are parked), so
 * that they are done before the new writer adds anything.
 */
static void
guard_fw_unwrite(const struct config *cfg)
{
	struct fw_unwrite fu = { guard_now_ms(), { false, false }, 0 };
	struct fw_stats before, after;
	unsigned long long removed, failed;

	if (!fw_enabled(guard.fw))
		return;
	fu.keep[0] = guard_fw_same_set(cfg, 0);
	fu.keep[1] = guard_fw_same_set(cfg, 1);
	if (fu.keep[0] && fu.keep[1])
		return;
	(void)fw_sync(guard.fw, 1000);	/* what was queued before */
	fw_stats(guard.fw, &before);
	policy_bans(guard.policy, fu.now, guard_fw_unassert, &fu);
	if (fu.n == 0)
		return;
	(void)fw_sync(guard.fw, 60000);
	fw_stats(guard.fw, &after);
	removed = (unsigned long long)(after.written - before.written);
	failed = (unsigned long long)(after.failed - before.failed);
	if (removed + failed < fu.n)
		log_info("firewall: removing %zu element%s of the bans in "
		    "force from the old %s sets", fu.n, fu.n == 1 ? "" : "s",
		    fw_name(guard.fw));
	else if (failed > 0)
		log_warnx("firewall: removed %llu of the %zu elements of the "
		    "bans in force from the old %s sets; %llu could not be "
		    "removed and stay there until their timeout", removed,
		    fu.n, fw_name(guard.fw), failed);
	else
		log_info("firewall: removed %zu element%s of the bans in force "
		    "from the old %s sets", fu.n, fu.n == 1 ? "" : "s",
		    fw_name(guard.fw));
}

/* Closes the writer; its last reports, delivered while it closes, are
 * heard but ask for no refill (guard_fw_report). */
static void
guard_fw_close(void)
{
	guard.fw_closing = true;
	fw_close(guard.fw);
	guard.fw_closing = false;
}

static bool
guard_fw_changed(const struct config *cfg)
{
	return guard.fwc.backend != cfg->firewall.backend ||
	    guard.fwc.create != cfg->firewall.create ||
	    strcmp(guard.fwc.table, cfg->firewall.table) != 0 ||
	    strcmp(guard.fwc.set4, cfg->firewall.set4) != 0 ||
	    strcmp(guard.fwc.set6, cfg->firewall.set6) != 0;
}

int
guard_open(struct ev_loop *loop, const struct config *cfg, char *err,
    size_t errlen)
{
	char *perr = NULL, warn[1024];
	long n;

	if (guard_geo(cfg, &guard.geo, err, errlen) == -1)
		return -1;
	if ((guard.policy = policy_new(cfg, guard.geo, &perr)) == NULL) {
		snprintf(err, errlen, "policy: %s", perr ? perr : "failed");
		free(perr);
		geo_close(guard.geo);
		guard.geo = NULL;
		return -1;
	}
	guard.loop = loop;
	/* Bans are made on worker threads too, which may not arm a timer of
	 * this loop: it ticks instead and saves what policy_state_dirty()
	 * reports (read under the policy's own lock). */
	ev_timer_init(&guard.save, guard_save_cb, STATE_SAVE_DELAY,
	    STATE_SAVE_DELAY);
	n = policy_state_load(guard.policy, guard_now_ms(), wall_ms(),
	    state_report, NULL);
	/* Only now: what the load dropped for room is in its own warning,
	 * not in moat_bans_evicted_total (ban.c), and the firewall is not
	 * written yet. */
	policy_on_evict(guard.policy, guard_fw_evict, NULL);
	if (n > 0) {
		struct policy_stats st;

		/* Ended bans are kept too, so that a repeat offence
		 * escalates: not counted as bans. */
		policy_stats(guard.policy, guard_now_ms(), &st);
		log_info("state: %zu bans restored from %s (%zu ended, kept "
		    "for escalation)", st.bans_active, cfg->daemon.state_file,
		    st.ban_records - st.bans_active);
	}
	if (guard_fw_start(cfg, FW_OK, err, errlen) == -1) {
		policy_free(guard.policy);
		geo_close(guard.geo);
		memset(&guard, 0, sizeof(guard));
		return -1;
	}
	/* Bans from before that the allow list now covers: the kernel may
	 * still hold them from the last run. */
	(void)guard_lift_allowed();
	if (loop != NULL)
		ev_timer_start(loop, &guard.save);
	guard_geo_report(guard.geo, NULL, NULL);
	if (*guard_geo_warning(cfg, guard.geo, warn, sizeof(warn)) != '\0')
		log_warnx("%s", warn);
	guard.open = true;
	return 0;
}

/* A lowered ban.max_entries takes effect with the reload that says so,
 * not as a silent mass drop at some later ban. */
static void
guard_trim_bans(const struct config *cfg, config_report_fn *report,
    void *arg)
{
	char msg[512];
	size_t live, n = policy_trim_bans(guard.policy, guard_now_ms(), &live);

	if (n == 0)
		return;
	snprintf(msg, sizeof(msg), "warning: ban.max_entries = %u: %zu ban "
	    "records dropped to fit, %zu of them bans in force, whose "
	    "addresses are admitted again (no unban events)",
	    cfg->ban.max_entries, n, live);
	report(arg, CONFIG_WARNING, msg);
}

int
guard_reload(const struct config *cfg, config_report_fn *report, void *arg,
    char *err, size_t errlen)
{
	struct geo *geo = NULL, *old = guard.geo;
	char *perr = NULL, warn[1024];

	if (!guard.open)
		return 0;
	if (guard_geo(cfg, &geo, err, errlen) == -1)
		return -1;
	if (policy_reload(guard.policy, cfg, geo, &perr) == -1) {
		snprintf(err, errlen, "policy: %s", perr ? perr : "failed");
		free(perr);
		geo_close(geo);
		return -1;
	}
	guard_trim_bans(cfg, report, arg);
	if (old != NULL)
		guard.geo_errors_past += geo_errors(old);
	guard.geo_errors_said = 0;
	guard.geo_errors_ms = 0;
	guard.geo = geo;
	geo_close(old);
	guard_geo_report(geo, report, arg);
	if (*guard_geo_warning(cfg, geo, warn, sizeof(warn)) != '\0')
		report(arg, CONFIG_WARNING, warn);
	return 0;
}

bool
guard_fw_changes(const struct config *cfg)
{
	return guard.open && guard_fw_changed(cfg);
}

void
guard_reload_fw(const struct config *cfg, config_report_fn *report,
    void *arg)
{
	char err[1024], msg[128];
	size_t lifted;

	if (!guard.open)
		return;
	if (guard_fw_changed(cfg)) {
		/* The old sets lose the bans in force (those the new
		 * writer shares keep them); the new writer gets them all. */
		log_info("firewall: [firewall] changed, restarting the %s "
		    "writer", cfg_firewall_str(cfg->firewall.backend));
		guard_fw_unwrite(cfg);
		guard_fw_close();
		if (guard_fw_start(cfg, guard.fw_problem, err,
		    sizeof(err)) == -1) {
			log_warnx("%s; banned addresses are still rejected by "
			    "moat itself", err);
			guard.fw = fw_open_backend(NULL, cfg, &fw_backend_none,
			    NULL, NULL);
		}
	} else {
		/* The sets may have been emptied meanwhile (nft flush
		 * ruleset, systemctl reload nftables): read them back and
		 * write what they lack. */
		fw_resync(guard.fw);
		guard_fw_refill(NULL);
	}
	/* Each is in the log and the events; the reply says how many. */
	if ((lifted = guard_lift_allowed()) > 0) {
		snprintf(msg, sizeof(msg), "%zu bans lifted: the allow list "
		    "covers their addresses now", lifted);
		report(arg, CONFIG_INFO, msg);
	}
}

void
guard_close(void)
{
	if (!guard.open)
		return;
	if (guard.loop != NULL)
		ev_timer_stop(guard.loop, &guard.save);
	guard_save_now(true);
	policy_on_evict(guard.policy, NULL, NULL);
	guard_fw_close();
	policy_free(guard.policy);
	geo_close(guard.geo);
	memset(&guard, 0, sizeof(guard));
}

static void
emit_result(const char *what, const uint8_t addr[16],
    const struct cfg_listener *lc, const char *sid,
    const struct policy_result *res)
{
	struct event ev = EVENT_INIT;

	ev.event = what;
	ev.ip = addr;
	ev.listener = lc ? lc->name : NULL;
	ev.reason = policy_reason_str(res->reason);
	ev.session = sid;
	if (strcmp(what, "ban") == 0)
		ev.firewall = fw_for(addr);
	if (res->country[0] != '\0')
		ev.country = res->country;
	if (res->limit > 0) {
		ev.count = res->count;
		if (res->window_ms > 0)
			ev.window_s = (int64_t)(res->window_ms / 1000);
	}
	if (res->ban_ms > 0 && (res->ban_new ||
	    res->reason == POLICY_BANNED))
		ev.ban_s = (int64_t)((res->ban_ms + 999) / 1000);
	events_emit(&ev);
}

static void
note_ban(const uint8_t addr[16], const struct cfg_listener *lc,
    const char *sid, const struct policy_result *res)
{
	guard_ban_fn *fn;
	char ip[64];

	addr_v6_str(addr, ip, sizeof(ip));
	log_info("%s ban ip=%s reason=%s ban_s=%llu bans=%u", sid ? sid : "-",
	    ip, policy_reason_str(res->reason),
	    (unsigned long long)(res->ban_ms / 1000), res->ban_count);
	guard_fw_sync(addr, res->reason == POLICY_MANUAL);
	emit_result("ban", addr, lc, sid, res);
	metrics_ban(policy_reason_str(res->reason));
	/* Ending them walks every worker's sessions: not for each address
	 * of a flood that holds none (guard.h). An operator's ban walks
	 * always, as sessions the allow list admitted were never counted. */
	if ((fn = atomic_load(&on_ban)) != NULL)
		fn(on_ban_arg, addr, res->open > 0 ||
		    res->reason == POLICY_MANUAL);
}

void
guard_on_ban(guard_ban_fn *fn, void *arg)
{
	if (fn != NULL)
		on_ban_arg = arg;
	atomic_store(&on_ban, fn);
}

bool
guard_admit(const uint8_t addr[16], const struct cfg_listener *lc,
    const char *sid, enum policy_reason *reason, uint32_t *tag)
{
	struct policy_result res;

	*reason = POLICY_OK;
	*tag = 0;
	if (guard.policy == NULL)
		return true;
	if (policy_admit(guard.policy, addr, guard_now_ms(), &res) ==
	    POLICY_ALLOW) {
		*reason = res.reason;
		*tag = res.tag;
		return true;
	}
	metrics_admit(lc->name, policy_reason_str(res.reason));
	*reason = res.reason;
	emit_result("reject", addr, lc, sid, &res);
	if (res.ban_new)
		note_ban(addr, lc, sid, &res);
	return false;
}

void
guard_admitted(const struct cfg_listener *lc)
{
	metrics_admit(lc->name, NULL);
}

void
guard_refusal(const struct cfg_listener *lc, enum policy_reason reason,
    char *buf, size_t len)
{
	if (lc->protocol == CFG_PROTO_SMTP)
		snprintf(buf, len, "554 5.7.1 Access denied: %s\r\n",
		    policy_reason_category(reason));
	else
		snprintf(buf, len, "-ERR Access denied: %s\r\n",
		    policy_reason_category(reason));
}

void
guard_release(const uint8_t addr[16], uint32_t tag)
{
	if (guard.policy != NULL)
		policy_release(guard.policy, addr, tag);
}

bool
guard_note(const uint8_t addr[16], const struct cfg_listener *lc,
    const char *sid, enum policy_event ev)
{
	struct policy_result res;

	if (guard.policy == NULL)
		return false;
	metrics_policy_event(lc ? lc->name : NULL, ev);
	policy_note(guard.policy, addr, ev, guard_now_ms(), &res);
	if (res.ban_new)
		note_ban(addr, lc, sid, &res);
	return res.verdict == POLICY_REJECT;
}

int
guard_ban(const uint8_t addr[16], uint64_t duration_ms, const char **why)
{
	struct policy_result res;

	if (guard.policy == NULL) {
		*why = "moat is not running";
		return -1;
	}
	if (policy_ban(guard.policy, addr, duration_ms, guard_now_ms(), &res,
	    why) == -1)
		return -1;
	note_ban(addr, NULL, NULL, &res);
	return 0;
}

bool
guard_unban(const uint8_t addr[16])
{
	if (guard.policy == NULL)
		return false;
	if (!policy_unban(guard.policy, addr, guard_now_ms())) {
		/* The set may hold what moat has forgotten (a lost state
		 * file, a ban by hand): the operator wants the address in. */
		guard_fw_sync(addr, false);
		return false;
	}
	note_unban(addr, "manual");
	return true;
}

bool
guard_fw_on(void)
{
	return guard.fw != NULL && fw_enabled(guard.fw);
}

int64_t
guard_fw_failing_since(void)
{
	return guard_fw_on() && guard.fw_problem != FW_OK ? guard.fw_since :
	    0;
}

const char *
guard_fw_state(char *buf, size_t len)
{
	struct fw_stats st;
	char since[32];

	if (!guard_fw_on())
		return "off";
	fw_stats(guard.fw, &st);
	if (guard.fw_problem != FW_OK) {
		snprintf(buf, len, "failing since %s (%s); %llu elements "
		    "written, bans enforced in moat",
		    utc_iso(guard.fw_since, since, sizeof(since)),
		    fw_problem_str(guard.fw_problem),
		    (unsigned long long)st.written);
	}
	else
		snprintf(buf, len, "ok; %llu elements written in %llu batches",
		    (unsigned long long)st.written,
		    (unsigned long long)st.batches);
	return buf;
}
