/* policy.c - the verdict per connection and the feedback from sessions. */
#include "policy.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cidr.h"
#include "geo.h"
#include "window.h"

/* Country codes as bits: 26 x 26 two-letter codes. */
#define COUNTRY_BITS (26 * 26)

struct country_set {
	uint8_t bits[(COUNTRY_BITS + 7) / 8];
	bool any;
};

/* What a reload replaces; built outside the lock, swapped inside it. */
struct rules {
	struct cidr_set *allow, *deny;
	struct geo *geo;		/* borrowed; NULL: no geofencing */
	struct country_set allow_cc, deny_cc;
	bool unknown_deny;
	struct window_params wp;
	struct ban_params bp;
	char *state_file;
};

struct policy {
	pthread_mutex_t lock;
	struct rules r;
	struct window_table *win;
	struct ban_table *bans;
	bool dirty;
};

static const char *const reason_names[] = {
	[POLICY_OK] = "ok",
	[POLICY_ALLOWLIST] = "allowlist",
	[POLICY_BANNED] = "banned",
	[POLICY_DENYLIST] = "denylist",
	[POLICY_GEO] = "geo",
	[POLICY_RATE] = "rate",
	[POLICY_CONCURRENCY] = "concurrency",
	[POLICY_AUTH] = "auth",
	[POLICY_SMUGGLING] = "smuggling",
	[POLICY_MANUAL] = "manual",
};

static const char *const reason_categories[] = {
	[POLICY_OK] = "ok",
	[POLICY_ALLOWLIST] = "ok",
	[POLICY_BANNED] = "banned",
	[POLICY_DENYLIST] = "policy",
	[POLICY_GEO] = "policy",
	[POLICY_RATE] = "rate limit",
	[POLICY_CONCURRENCY] = "too many connections",
	[POLICY_AUTH] = "too many failures",
	[POLICY_SMUGGLING] = "protocol violation",
	[POLICY_MANUAL] = "banned",
};

const char *
policy_reason_str(enum policy_reason r)
{
	return (unsigned)r < sizeof(reason_names) / sizeof(reason_names[0]) ?
	    reason_names[r] : "?";
}

const char *
policy_reason_category(enum policy_reason r)
{
	return (unsigned)r < sizeof(reason_categories) /
	    sizeof(reason_categories[0]) ? reason_categories[r] : "policy";
}

const char *
policy_event_str(enum policy_event e)
{
	switch (e) {
	case POLICY_EV_AUTH_FAIL:
		return "auth_fail";
	case POLICY_EV_AUTH_OK:
		return "auth_ok";
	case POLICY_EV_GLITCH:
		return "glitch";
	case POLICY_EV_SMUGGLING:
		return "smuggling";
	}
	return "?";
}

static int
country_index(const char *cc)
{
	if (cc[0] < 'A' || cc[0] > 'Z' || cc[1] < 'A' || cc[1] > 'Z' ||
	    cc[2] != '\0')
		return -1;
	return (cc[0] - 'A') * 26 + (cc[1] - 'A');
}

static void
country_set_build(struct country_set *s, const struct cfg_strings *list)
{
	memset(s, 0, sizeof(*s));
	for (size_t i = 0; i < list->n; i++) {
		int k = country_index(list->v[i]);

		/* The loader accepts only valid upper-case codes. */
		if (k >= 0)
			s->bits[k / 8] |= (uint8_t)(1u << (k % 8));
	}
	s->any = list->n > 0;
}

static bool
country_set_has(const struct country_set *s, const char *cc)
{
	int k = country_index(cc);

	return k >= 0 && (s->bits[k / 8] & (1u << (k % 8))) != 0;
}

static void
set_err(char **err, const char *msg)
{
	if (err != NULL)
		*err = strdup(msg);
}

static void
rules_clear(struct rules *r)
{
	cidr_set_free(r->allow);
	cidr_set_free(r->deny);
	free(r->state_file);
	memset(r, 0, sizeof(*r));
}

/* Reads what the policy needs out of cfg. */
static int
rules_build(struct rules *r, const struct config *cfg, struct geo *geo,
    char **err)
{
	memset(r, 0, sizeof(*r));
	if (cfg->policy.geo.database != NULL) {
		r->geo = geo;
		country_set_build(&r->allow_cc,
		    &cfg->policy.geo.allow_countries);
		country_set_build(&r->deny_cc,
		    &cfg->policy.geo.deny_countries);
		r->unknown_deny =
		    cfg->policy.geo.unknown == CFG_GEO_UNKNOWN_DENY;
		if (geo == NULL && (r->allow_cc.any || r->deny_cc.any ||
		    r->unknown_deny)) {
			set_err(err, "policy.geo: country rules are set but "
			    "the geo database is not open");
			return -1;
		}
	}
	r->wp.conn_limit = cfg->policy.rate.connections.limit;
	r->wp.conn_window_ms = cfg->policy.rate.connections.window_ms;
	r->wp.auth_limit = cfg->policy.rate.auth_failures.limit;
	r->wp.auth_window_ms = cfg->policy.rate.auth_failures.window_ms;
	r->wp.conc_limit = cfg->policy.rate.concurrent_per_ip;
	r->wp.aggregate_v4 = cfg->policy.rate.aggregate_ipv4;
	r->wp.aggregate_v6 = cfg->policy.rate.aggregate_ipv6;
	r->wp.max_entries = cfg->policy.rate.max_tracked;
	r->bp.duration_ms = cfg->ban.duration_ms;
	r->bp.escalation = cfg->ban.escalation;
	r->bp.max_duration_ms = cfg->ban.max_duration_ms;
	r->bp.forget_ms = cfg->ban.forget_after_ms;
	r->bp.max_entries = cfg->ban.max_entries;
	r->allow = cidr_set_new(cfg->policy.allow.v, cfg->policy.allow.n);
	r->deny = cidr_set_new(cfg->policy.deny.v, cfg->policy.deny.n);
	if (cfg->daemon.state_file != NULL)
		r->state_file = strdup(cfg->daemon.state_file);
	if (r->allow == NULL || r->deny == NULL ||
	    (cfg->daemon.state_file != NULL && r->state_file == NULL)) {
		rules_clear(r);
		set_err(err, "policy: out of memory");
		return -1;
	}
	return 0;
}

struct policy *
policy_new(const struct config *cfg, struct geo *geo, char **err)
{
	struct policy *p;

	if (err != NULL)
		*err = NULL;
	p = calloc(1, sizeof(*p));
	if (p == NULL) {
		set_err(err, "policy: out of memory");
		return NULL;
	}
	if (rules_build(&p->r, cfg, geo, err) == -1) {
		free(p);
		return NULL;
	}
	p->win = window_table_new(&p->r.wp);
	p->bans = ban_table_new(&p->r.bp);
	if (p->win == NULL || p->bans == NULL) {
		window_table_free(p->win);
		ban_table_free(p->bans);
		rules_clear(&p->r);
		free(p);
		set_err(err, "policy: out of memory");
		return NULL;
	}
	pthread_mutex_init(&p->lock, NULL);
	return p;
}

void
policy_free(struct policy *p)
{
	if (p == NULL)
		return;
	window_table_free(p->win);
	ban_table_free(p->bans);
	rules_clear(&p->r);
	pthread_mutex_destroy(&p->lock);
	free(p);
}

int
policy_reload(struct policy *p, const struct config *cfg, struct geo *geo,
    char **err)
{
	struct rules nr, old;

	if (err != NULL)
		*err = NULL;
	/* The sets of a big list take a while to build: not under the lock. */
	if (rules_build(&nr, cfg, geo, err) == -1)
		return -1;
	pthread_mutex_lock(&p->lock);
	old = p->r;
	p->r = nr;
	/* A new daemon.state_file gets the bans in force at the next save,
	 * not at the next ban: a restart must find them there. */
	if (nr.state_file != NULL && (old.state_file == NULL ||
	    strcmp(old.state_file, nr.state_file) != 0))
		p->dirty = true;
	/* The window table needs a monotonic "now" to fold changed windows;
	 * the newest time it has seen is as good and needs no clock here. */
	window_table_reconfigure(p->win, &p->r.wp, 0);
	ban_table_reconfigure(p->bans, &p->r.bp);
	pthread_mutex_unlock(&p->lock);
	rules_clear(&old);
	return 0;
}

static void
result_init(struct policy_result *res)
{
	memset(res, 0, sizeof(*res));
}

static void
set_ban(struct policy_result *res, const struct ban_info *b, bool made,
    uint64_t now)
{
	res->ban_new = made;
	res->ban_ms = made ? b->duration_ms :
	    b->expiry_ms > now ? b->expiry_ms - now : 0;
	res->ban_count = b->count;
}

/* Bans addr (lock held); when that worked res gets the new ban and the
 * sessions it leaves open, which the proxy ends. *b as ban_add sets it. */
static bool
new_ban(struct policy *p, const uint8_t addr[16], enum ban_reason why,
    uint64_t duration_ms, uint64_t now, struct policy_result *res,
    struct ban_info *b)
{
	if (!ban_add(p->bans, addr, why, duration_ms, now, b))
		return false;
	p->dirty = true;
	set_ban(res, b, true, now);
	res->open = window_open_count(p->win, addr);
	return true;
}

/* Geofencing: true if the address may pass. Fills the codes in res. */
static bool
geo_pass(const struct rules *r, const uint8_t addr[16],
    struct policy_result *res)
{
	bool known;

	if (r->geo == NULL)
		return true;
	known = geo_lookup(r->geo, addr, res->country, res->continent) == 1 &&
	    res->country[0] != '\0';
	if (!known)
		return !r->unknown_deny;
	if (r->allow_cc.any)
		return country_set_has(&r->allow_cc, res->country);
	return !country_set_has(&r->deny_cc, res->country);
}

enum policy_verdict
policy_admit(struct policy *p, const uint8_t addr[16], uint64_t now_ms,
    struct policy_result *res)
{
	struct ban_info b;
	uint32_t count, open;

	result_init(res);
	pthread_mutex_lock(&p->lock);
	if (cidr_set_lookup(p->r.allow, addr)) {
		res->reason = POLICY_ALLOWLIST;
		goto allow;
	}
	if (ban_lookup(p->bans, addr, now_ms, &b)) {
		res->reason = POLICY_BANNED;
		set_ban(res, &b, false, now_ms);
		goto reject;
	}
	if (cidr_set_lookup(p->r.deny, addr)) {
		res->reason = POLICY_DENYLIST;
		goto reject;
	}
	if (!geo_pass(&p->r, addr, res)) {
		res->reason = POLICY_GEO;
		goto reject;
	}
	switch (window_admit(p->win, addr, now_ms, &count, &open,
	    &res->tag)) {
	case WINDOW_OK:
		res->reason = POLICY_OK;
		res->count = count;
		res->limit = p->r.wp.conn_limit;
		res->window_ms = p->r.wp.conn_window_ms;
		goto allow;
	case WINDOW_RATE:
		res->reason = POLICY_RATE;
		res->count = count;
		res->limit = p->r.wp.conn_limit;
		res->window_ms = p->r.wp.conn_window_ms;
		(void)new_ban(p, addr, BAN_RATE, 0, now_ms, res, &b);
		goto reject;
	case WINDOW_AUTH:
		/* The failures of the key (with aggregation, of another
		 * address of its prefix) leave no room: banned as if this
		 * address had failed, before it gets another try. */
		res->reason = POLICY_AUTH;
		res->count = count;
		res->limit = p->r.wp.auth_limit;
		res->window_ms = p->r.wp.auth_window_ms;
		(void)new_ban(p, addr, BAN_AUTH, 0, now_ms, res, &b);
		goto reject;
	case WINDOW_CONCURRENCY:
		res->reason = POLICY_CONCURRENCY;
		res->count = open;
		res->limit = p->r.wp.conc_limit;
		goto reject;
	}
reject:
	pthread_mutex_unlock(&p->lock);
	res->verdict = POLICY_REJECT;
	return POLICY_REJECT;
allow:
	pthread_mutex_unlock(&p->lock);
	res->verdict = POLICY_ALLOW;
	return POLICY_ALLOW;
}

enum policy_verdict
policy_note(struct policy *p, const uint8_t addr[16], enum policy_event ev,
    uint64_t now_ms, struct policy_result *res)
{
	struct ban_info b;
	enum ban_reason why = BAN_AUTH;
	bool ban = false;

	result_init(res);
	pthread_mutex_lock(&p->lock);
	if (cidr_set_lookup(p->r.allow, addr)) {
		res->reason = POLICY_ALLOWLIST;
		goto allow;
	}
	switch (ev) {
	case POLICY_EV_AUTH_OK:
		res->reason = POLICY_OK;
		goto allow;
	case POLICY_EV_AUTH_FAIL:
	case POLICY_EV_GLITCH:
		res->reason = POLICY_AUTH;
		res->limit = p->r.wp.auth_limit;
		res->window_ms = p->r.wp.auth_window_ms;
		res->count = window_fail(p->win, addr, now_ms);
		ban = res->limit > 0 && res->count >= res->limit;
		break;
	case POLICY_EV_SMUGGLING:
		res->reason = POLICY_SMUGGLING;
		why = BAN_SMUGGLING;
		ban = true;
		break;
	}
	if (ban) {
		if (!new_ban(p, addr, why, 0, now_ms, res, &b) &&
		    b.count > 0) {
			/* Banned already, by another session. */
			set_ban(res, &b, false, now_ms);
		}
		goto reject;
	}
	if (ban_lookup(p->bans, addr, now_ms, &b)) {
		set_ban(res, &b, false, now_ms);
		goto reject;
	}
allow:
	pthread_mutex_unlock(&p->lock);
	res->verdict = POLICY_ALLOW;
	return POLICY_ALLOW;
reject:
	pthread_mutex_unlock(&p->lock);
	res->verdict = POLICY_REJECT;
	return POLICY_REJECT;
}

void
policy_release(struct policy *p, const uint8_t addr[16], uint32_t tag)
{
	if (tag == 0)
		return;
	pthread_mutex_lock(&p->lock);
	window_close(p->win, addr, tag);
	pthread_mutex_unlock(&p->lock);
}

int
policy_ban(struct policy *p, const uint8_t addr[16], uint64_t duration_ms,
    uint64_t now_ms, struct policy_result *res, const char **why)
{
	struct ban_info b;
	int rc = 0;

	result_init(res);
	res->reason = POLICY_MANUAL;
	res->verdict = POLICY_REJECT;
	pthread_mutex_lock(&p->lock);
	if (cidr_set_lookup(p->r.allow, addr)) {
		*why = "the address is on the allow list";
		rc = -1;
	} else if (duration_ms == 0 && ban_lookup(p->bans, addr, now_ms,
	    &b)) {
		/* Already banned: a plain "ban IP" restarts the ban at the
		 * next escalation step, as an operator would expect. */
		duration_ms = ban_duration(&p->r.bp, b.count + 1);
	}
	if (rc == 0) {
		if (!new_ban(p, addr, BAN_MANUAL, duration_ms, now_ms, res,
		    &b)) {
			*why = "out of memory";
			rc = -1;
		}
	}
	pthread_mutex_unlock(&p->lock);
	return rc;
}

bool
policy_unban(struct policy *p, const uint8_t addr[16], uint64_t now_ms)
{
	bool was;

	pthread_mutex_lock(&p->lock);
	was = ban_del(p->bans, addr, now_ms);
	window_forget(p->win, addr);
	p->dirty = true;
	pthread_mutex_unlock(&p->lock);
	return was;
}

struct allowed_visit {
	const struct cidr_set *allow;
	uint64_t now;
	struct allowed_ban {
		uint8_t addr[16];
		struct ban_info b;
	} *v;
	size_t n, cap;
};

static void
visit_allowed(void *arg, const uint8_t addr[16], const struct ban_info *b)
{
	struct allowed_visit *av = arg;
	struct allowed_ban *nv;
	size_t cap;

	if (!cidr_set_lookup(av->allow, addr))
		return;
	if (av->n == av->cap) {
		cap = av->cap ? av->cap * 2 : 16;
		if ((nv = realloc(av->v, cap * sizeof(*nv))) == NULL)
			return;		/* lifted at the next reload */
		av->v = nv;
		av->cap = cap;
	}
	memcpy(av->v[av->n].addr, addr, 16);
	av->v[av->n].b = *b;
	av->n++;
}

size_t
policy_unban_allowed(struct policy *p, uint64_t now_ms, ban_visit_fn *fn,
    void *arg)
{
	struct allowed_visit av = { NULL, now_ms, NULL, 0, 0 };
	size_t i;

	pthread_mutex_lock(&p->lock);
	av.allow = p->r.allow;
	/* ban_foreach must not see the table change: collect, then drop. */
	ban_foreach(p->bans, now_ms, visit_allowed, &av);
	for (i = 0; i < av.n; i++)
		(void)ban_del(p->bans, av.v[i].addr, now_ms);
	if (av.n > 0)
		p->dirty = true;
	pthread_mutex_unlock(&p->lock);
	/* Outside the lock: the caller logs and writes events. */
	for (i = 0; i < av.n; i++)
		if (av.v[i].b.expiry_ms > now_ms && fn != NULL)
			fn(arg, av.v[i].addr, &av.v[i].b);
	free(av.v);
	return av.n;
}

bool
policy_allowlisted(struct policy *p, const uint8_t addr[16])
{
	bool in;

	pthread_mutex_lock(&p->lock);
	in = cidr_set_lookup(p->r.allow, addr);
	pthread_mutex_unlock(&p->lock);
	return in;
}

void
policy_ban_settle(struct policy *p, const uint8_t addr[16], uint64_t now_ms,
    ban_visit_fn *fn, void *arg)
{
	struct ban_info b;

	pthread_mutex_lock(&p->lock);
	fn(arg, addr, ban_lookup(p->bans, addr, now_ms, &b) ? &b : NULL);
	pthread_mutex_unlock(&p->lock);
}

struct active_visit {
	uint64_t now;
	ban_visit_fn *fn;
	void *arg;
};

static void
visit_active(void *arg, const uint8_t addr[16], const struct ban_info *b)
{
	struct active_visit *v = arg;

	if (b->expiry_ms > v->now)
		v->fn(v->arg, addr, b);
}

void
policy_bans(struct policy *p, uint64_t now_ms, ban_visit_fn *fn, void *arg)
{
	struct active_visit v = { now_ms, fn, arg };

	pthread_mutex_lock(&p->lock);
	ban_foreach(p->bans, now_ms, visit_active, &v);
	pthread_mutex_unlock(&p->lock);
}

long
policy_state_load(struct policy *p, uint64_t now_ms, uint64_t wall_ms,
    state_report_fn *report, void *arg)
{
	long n = 0;

	pthread_mutex_lock(&p->lock);
	if (p->r.state_file != NULL)
		n = state_read(p->r.state_file, p->bans, now_ms, wall_ms,
		    report, arg);
	pthread_mutex_unlock(&p->lock);
	return n;
}

int
policy_state_save(struct policy *p, uint64_t now_ms, uint64_t wall_ms,
    char *err, size_t errlen)
{
	struct ban_table *copy;
	char *buf = NULL, *path = NULL;
	size_t len = 0;
	int rc = 0;

	/*
	 * Copy under the lock, render and write without it: rendering a
	 * full table takes most of a second and the write waits for the
	 * disk, while every worker's accept needs the lock. Two savers
	 * racing would each rename a complete file; the caller saves from
	 * one place anyway.
	 */
	pthread_mutex_lock(&p->lock);
	if (p->r.state_file == NULL) {
		pthread_mutex_unlock(&p->lock);
		return 0;
	}
	copy = ban_table_copy(p->bans);
	path = strdup(p->r.state_file);
	if (copy != NULL && path != NULL)
		p->dirty = false;
	pthread_mutex_unlock(&p->lock);
	if (copy != NULL && path != NULL)
		buf = state_format(copy, now_ms, wall_ms, &len);
	ban_table_free(copy);
	if (buf == NULL || path == NULL) {
		snprintf(err, errlen, "state file: out of memory");
		rc = -1;
	} else if (state_write_buf(path, buf, len, err, errlen) == -1)
		rc = -1;
	if (rc == -1) {
		pthread_mutex_lock(&p->lock);
		p->dirty = true;
		pthread_mutex_unlock(&p->lock);
	}
	free(buf);
	free(path);
	return rc;
}

size_t
policy_trim_bans(struct policy *p, uint64_t now_ms, size_t *live)
{
	size_t n;

	pthread_mutex_lock(&p->lock);
	n = ban_table_trim(p->bans, now_ms, live);
	/* The state file must not bring them back at the next start. */
	if (n > 0)
		p->dirty = true;
	pthread_mutex_unlock(&p->lock);
	return n;
}

void
policy_on_evict(struct policy *p, ban_evict_fn *fn, void *arg)
{
	pthread_mutex_lock(&p->lock);
	ban_table_on_evict(p->bans, fn, arg);
	pthread_mutex_unlock(&p->lock);
}

bool
policy_state_dirty(struct policy *p)
{
	bool d;

	pthread_mutex_lock(&p->lock);
	d = p->dirty;
	pthread_mutex_unlock(&p->lock);
	return d;
}

void
policy_stats(struct policy *p, uint64_t now_ms, struct policy_stats *st)
{
	pthread_mutex_lock(&p->lock);
	st->allow_ranges = cidr_set_ranges(p->r.allow);
	st->deny_ranges = cidr_set_ranges(p->r.deny);
	st->tracked = window_entries(p->win);
	st->tracked_evicted = window_evicted(p->win);
	st->ban_records = ban_entries(p->bans);
	st->bans_active = ban_active(p->bans, now_ms);
	st->bans_evicted = ban_evicted(p->bans);
	st->bytes = cidr_set_bytes(p->r.allow) + cidr_set_bytes(p->r.deny) +
	    window_bytes(p->win) + ban_bytes(p->bans);
	pthread_mutex_unlock(&p->lock);
}
