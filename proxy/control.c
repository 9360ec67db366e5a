/* control.c - the control socket that moatctl talks to. */
#include "control.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <ev.h>

#include "acceptpause.h"
#include "addr.h"
#include "backendwatch.h"
#include "ban.h"
#include "duration.h"
#include "events.h"
#include "gen.h"
#include "geo.h"
#include "guard.h"
#include "log.h"
#include "metrics.h"
#include "moat_version.h"
#include "privdrop.h"
#include "sbuf.h"
#include "tls.h"
#include "utc.h"

/* A request line may not be longer; the client is told and dropped. */
#define CTL_LINE_MAX 1024
/* Clients at once; more are told "too many clients" and closed. */
#define CTL_CLIENTS_MAX 64
/* A reply (bans of a huge table) is cut at this size. */
#define CTL_REPLY_MAX (8 * 1024 * 1024)
/* What all clients' unread replies may hold together: 64 clients that
 * ask for big lists and never read would hold half a gigabyte. */
#define CTL_QUEUED_MAX (4 * CTL_REPLY_MAX)
/* Events queued for one tail client; past it, events are dropped and
 * counted for that client, so a stalled reader never holds moat up. */
#define CTL_TAIL_MAX (256 * 1024)
/* A client that neither asks nor reads for this long is closed; a tail
 * client, once it has left events unread that long. */
#define CTL_IDLE 60.
#define CTL_WORDS 8

#define container_of(p, type, member) \
	((type *)(void *)((char *)(p) - offsetof(type, member)))

struct cclient {
	struct cclient *prev, *next;
	struct control *ctl;
	int fd;
	ev_io io;
	int watching;
	ev_timer timer;
	char in[CTL_LINE_MAX + 1];
	size_t inlen;
	struct sbuf out;
	bool closing;		/* close once out is sent */
	bool eof;		/* the client sent all it will */
	bool json;		/* the current/tail request asked for JSON */
	bool tail;
	char tail_event[32];	/* "" for every event */
	bool tail_has_ip;
	uint8_t tail_ip[16];
	uint64_t tail_dropped;	/* not yet reported to the client */
};

struct control {
	struct ev_loop *loop;
	const struct control_server *srv;
	char *path;
	dev_t dev;
	ino_t ino;
	int fd;
	ev_io io;
	struct acceptpause pause;	/* when descriptors run out */
	struct cclient *clients;
	size_t nclients;
	size_t ntail;		/* clients following events */
	bool subscribed;	/* only while ntail > 0 */
};

/* What one command produces: ok or an error, and data lines. */
struct reply {
	bool ok;
	char err[256];
	struct sbuf body;
};

static void cclient_update(struct cclient *c);
static events_sub_fn control_event_cb;

/* --- clients ---------------------------------------------------------- */

static void
cclient_free(struct cclient *c)
{
	struct control *ctl = c->ctl;

	ev_io_stop(ctl->loop, &c->io);
	ev_timer_stop(ctl->loop, &c->timer);
	close(c->fd);
	sbuf_clear(&c->out);
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		ctl->clients = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	ctl->nclients--;
	if (c->tail)
		ctl->ntail--;
	free(c);
	/*
	 * Following events costs every event a JSON line even when no file
	 * wants it (a reject flood): stop when the last follower goes. Here,
	 * after c is gone, because what is still queued is handed over now.
	 */
	if (ctl->ntail == 0 && ctl->subscribed) {
		ctl->subscribed = false;
		events_unsubscribe(control_event_cb, ctl);
	}
}

/*
 * Watches for what the client needs next. A request is read only once
 * the reply before it has gone out, so a client that asks and never
 * reads holds one reply, not one per line it sent. A tail client is read
 * only for its end, and its idle timer runs while events wait for it:
 * one that reads nothing for CTL_IDLE gives its slot back.
 */
static void
cclient_update(struct cclient *c)
{
	int ev = 0;

	if (c->tail) {
		if (!c->closing)
			ev |= EV_READ;
		if (c->out.len == 0)
			ev_timer_stop(c->ctl->loop, &c->timer);
		else if (!ev_is_active(&c->timer))
			ev_timer_again(c->ctl->loop, &c->timer);
	} else if (!c->closing && !c->eof && c->out.len == 0 &&
	    c->inlen < CTL_LINE_MAX)
		ev |= EV_READ;
	if (c->out.len > 0)
		ev |= EV_WRITE;
	if (ev == c->watching)
		return;
	ev_io_stop(c->ctl->loop, &c->io);
	c->watching = ev;
	if (ev != 0) {
		ev_io_set(&c->io, c->fd, ev);
		ev_io_start(c->ctl->loop, &c->io);
	}
}

static void
reply_init(struct reply *r)
{
	r->ok = true;
	r->err[0] = '\0';
	sbuf_init(&r->body, CTL_REPLY_MAX);
}

static void __attribute__((format(printf, 2, 3)))
reply_fail(struct reply *r, const char *fmt, ...)
{
	va_list ap;

	r->ok = false;
	va_start(ap, fmt);
	vsnprintf(r->err, sizeof(r->err), fmt, ap);
	va_end(ap);
}

/* Bytes queued for all clients, not yet read by them. */
static size_t
ctl_queued(const struct control *ctl)
{
	const struct cclient *c;
	size_t n = 0;

	for (c = ctl->clients; c != NULL; c = c->next)
		n += c->out.len;
	return n;
}

/* Queues the reply to c: the status line, the data lines, the end. */
static void
cclient_send(struct cclient *c, struct reply *r)
{
	struct sbuf *out = &c->out;
	size_t queued;
	char *nl;

	if (r->ok && sbuf_overflow(&r->body)) {
		sbuf_clear(&r->body);
		reply_fail(r, "reply larger than %d bytes", CTL_REPLY_MAX);
	}
	if (r->body.len > 0 && (queued = ctl_queued(c->ctl)) +
	    r->body.len > CTL_QUEUED_MAX) {
		sbuf_clear(&r->body);
		reply_fail(r, "other clients have %zu MiB of replies unread; "
		    "try again once they have read them", queued >> 20);
	}
	for (nl = r->err; (nl = strpbrk(nl, "\r\n")) != NULL; )
		*nl = ' ';
	if (r->ok)
		(void)sbuf_adds(out, "ok\n");
	else
		(void)sbuf_printf(out, "error %s\n", r->err);
	if (!r->ok && c->json && r->body.len == 0) {
		(void)sbuf_adds(&r->body, "{\"ok\":false,\"error\":");
		(void)sbuf_json_str(&r->body, r->err);
		(void)sbuf_adds(&r->body, "}\n");
	}
	if (r->body.len > 0)
		(void)sbuf_add(out, r->body.p, r->body.len);
	if (!c->tail)
		(void)sbuf_adds(out, ".\n");
	sbuf_clear(&r->body);
	if (sbuf_overflow(out)) {
		log_warnx("control: a reply did not fit (over %d bytes, or "
		    "out of memory); closing that client", CTL_REPLY_MAX);
		c->closing = true;
	}
}

/* --- commands --------------------------------------------------------- */

static const char *
secs_str(uint64_t ms, char *buf, size_t len)
{
	if (ms == 0)
		return duration_str(0, buf, len);
	/* Whole seconds: an operator does not need the milliseconds. */
	return duration_str((ms + 999) / 1000 * 1000, buf, len);
}

struct cert_list {
	struct sbuf *human, *json;
	int64_t now;
	size_t n;
};

static void
status_cert(void *arg, const char *name, int64_t not_after)
{
	struct cert_list *cl = arg;
	char when[32], left[64];
	int64_t secs = not_after - cl->now;

	utc_iso(not_after, when, sizeof(when));
	if (secs >= 0)
		secs_str((uint64_t)secs * 1000, left, sizeof(left));
	(void)sbuf_printf(cl->human, "%-12s %s expires %s (%s%s)\n",
	    cl->n == 0 ? "certificates" : "", name, when,
	    secs >= 0 ? "in " : "EXPIRED", secs >= 0 ? left : "");
	(void)sbuf_adds(cl->json, cl->n == 0 ? "" : ",");
	(void)sbuf_adds(cl->json, "{\"name\":");
	(void)sbuf_json_str(cl->json, name);
	(void)sbuf_printf(cl->json, ",\"not_after\":\"%s\","
	    "\"expires_in_s\":%lld}", when, (long long)secs);
	cl->n++;
}

/* The workers line (sessions/accepted of each) and its JSON array. */
static void
status_workers(const struct control_server *srv, struct sbuf *h,
    struct sbuf *j)
{
	uint64_t accepted;
	size_t i, n = 0, sessions;

	while (srv->worker(srv->arg, n, &sessions, &accepted))
		n++;
	(void)sbuf_printf(h, "%-12s %zu (sessions/accepted:", "workers", n);
	for (i = 0; srv->worker(srv->arg, i, &sessions, &accepted); i++) {
		(void)sbuf_printf(h, "%s %zu: %zu/%llu", i ? "," : "", i,
		    sessions, (unsigned long long)accepted);
		(void)sbuf_printf(j, "%s{\"sessions\":%zu,\"accepted\":%llu}",
		    i ? "," : "", sessions, (unsigned long long)accepted);
	}
	(void)sbuf_adds(h, ")\n");
}

/* An events sink failing now: to the events line, and its JSON member
 * (file_failing, syslog_failing). */
static void
status_sink_failing(struct sbuf *h, struct sbuf *j, const char *sink,
    const char *prefix, int64_t since, const char *why)
{
	char when[32];

	utc_iso(since, when, sizeof(when));
	(void)sbuf_printf(h, " (failing since %s: %s%s)", when, prefix, why);
	(void)sbuf_printf(j, ",\"%s_failing\":{\"since\":\"%s\",\"error\":",
	    sink, when);
	(void)sbuf_json_str(j, why);
	(void)sbuf_adds(j, "}");
}

static void
cmd_status(struct control *ctl, struct cclient *c, struct reply *r)
{
	const struct control_server *srv = ctl->srv;
	const struct config *cfg = gen_config(srv->gen(srv->arg));
	const struct cfg_listener *lc;
	const struct addr_port *ap;
	struct metrics_totals t;
	struct policy_stats st;
	struct policy *p;
	struct sbuf h, j, wj, bj, sj, ej, certs_h, certs_j;
	struct cert_list cl;
	struct timespec now;
	char a[ADDR_PORT_STRLEN], b[ADDR_PORT_STRLEN], up[64], fwbuf[160];
	char geosum[1024], why[128], when[32], fwsince[64] = "";
	const struct geo *geo;
	int64_t since;
	const char *fw_state;
	uint64_t uptime_ms;
	size_t i, sessions = srv->sessions(srv->arg), bans_active = 0;
	size_t tails = 0;
	struct cclient *cc;
	bool have_policy;

	metrics_totals(&t);
	clock_gettime(CLOCK_REALTIME, &now);
	uptime_ms = (uint64_t)(((double)now.tv_sec +
	    (double)now.tv_nsec / 1e9 - t.start_unix) * 1000.);
	if ((have_policy = (p = guard_policy()) != NULL)) {
		policy_stats(p, guard_now_ms(), &st);
		bans_active = st.bans_active;
	}
	fw_state = guard_fw_state(fwbuf, sizeof(fwbuf));
	sbuf_init(&h, CTL_REPLY_MAX);
	sbuf_init(&j, CTL_REPLY_MAX);
	sbuf_init(&wj, CTL_REPLY_MAX);
	sbuf_init(&bj, CTL_REPLY_MAX);
	sbuf_init(&sj, CTL_REPLY_MAX);
	sbuf_init(&ej, CTL_REPLY_MAX);
	(void)sbuf_printf(&h, "moat %s, pid %ld, up %s\n", MOAT_VERSION,
	    (long)getpid(), secs_str(uptime_ms, up, sizeof(up)));
	(void)sbuf_printf(&h, "%-12s %s\n", "config", cfg->path);
	(void)sbuf_printf(&j, "{\"ok\":true,\"version\":\"%s\",\"pid\":%ld,"
	    "\"uptime_s\":%llu,\"config\":", MOAT_VERSION, (long)getpid(),
	    (unsigned long long)(uptime_ms / 1000));
	(void)sbuf_json_str(&j, cfg->path);
	(void)sbuf_adds(&j, ",\"listeners\":[");
	for (i = 0; srv->listener(srv->arg, i, &lc, &ap); i++) {
		addr_port_str(ap, a, sizeof(a));
		addr_port_str(&lc->backend, b, sizeof(b));
		(void)sbuf_printf(&h, "%-12s %-12s %-22s %s, tls %s -> %s "
		    "(%s)\n", i == 0 ? "listeners" : "", lc->name, a,
		    cfg_protocol_str(lc->protocol),
		    cfg_tls_mode_str(lc->tls), b,
		    cfg_backend_proxy_str(lc->backend_proxy));
		(void)sbuf_adds(&j, i == 0 ? "{\"name\":" : ",{\"name\":");
		(void)sbuf_json_str(&j, lc->name);
		(void)sbuf_printf(&j, ",\"address\":\"%s\",\"protocol\":\"%s\","
		    "\"tls\":\"%s\",\"backend\":\"%s\","
		    "\"backend_proxy\":\"%s\"}", a,
		    cfg_protocol_str(lc->protocol),
		    cfg_tls_mode_str(lc->tls), b,
		    cfg_backend_proxy_str(lc->backend_proxy));
	}
	if (i == 0)
		(void)sbuf_printf(&h, "%-12s none (draining)\n", "listeners");
	(void)sbuf_printf(&h, "%-12s %zu now; since start %llu connections "
	    "(%llu accepted, %llu rejected), %llu TLS handshakes, %llu "
	    "failed\n", "sessions", sessions,
	    (unsigned long long)t.connections,
	    (unsigned long long)t.accepted, (unsigned long long)t.rejected,
	    (unsigned long long)t.tls_handshakes,
	    (unsigned long long)t.tls_failures);
	(void)sbuf_printf(&h, "%-12s %llu auth, %llu backend, %llu smuggling "
	    "(since start)\n", "failures", (unsigned long long)t.auth_failures,
	    (unsigned long long)t.backend_failures,
	    (unsigned long long)t.smuggling);
	status_workers(srv, &h, &wj);
	(void)backendwatch_status(&h, &bj, &sj, "backends");
	(void)sbuf_printf(&h, "%-12s %zu active, %llu since start\n", "bans",
	    bans_active, (unsigned long long)t.bans);
	if (have_policy)
		(void)sbuf_printf(&h, "%-12s allow %zu ranges, deny %zu "
		    "ranges\n", "policy", st.allow_ranges, st.deny_ranges);
	if ((geo = guard_geo_db()) != NULL) {
		(void)sbuf_printf(&h, "%-12s %s\n", "geo", geo_summary(geo,
		    (int64_t)now.tv_sec, geosum, sizeof(geosum)));
		if (geo_errors(geo) > 0)
			(void)sbuf_printf(&h, "%-12s %llu lookups failed "
			    "(damaged?)\n", "",
			    (unsigned long long)geo_errors(geo));
	} else
		(void)sbuf_printf(&h, "%-12s none\n", "geo");
	(void)sbuf_printf(&h, "%-12s %s, %s\n", "firewall",
	    cfg_firewall_str(cfg->firewall.backend), fw_state);
	for (cc = ctl->clients; cc != NULL; cc = cc->next)
		tails += cc->tail;
	(void)sbuf_printf(&h, "%-12s %llu written, %llu dropped", "events",
	    (unsigned long long)events_written(),
	    (unsigned long long)events_dropped());
	if (events_file_failing(&since, why, sizeof(why)))
		status_sink_failing(&h, &ej, "file", "", since, why);
	if (cfg->events.syslog)
		(void)sbuf_printf(&h, ", %llu not sent to syslog",
		    (unsigned long long)events_syslog_dropped());
	if (events_syslog_failing(&since, why, sizeof(why)))
		status_sink_failing(&h, &ej, "syslog", "syslog ", since, why);
	(void)sbuf_printf(&h, "; %zu following (tail)\n", tails);
	if ((since = guard_fw_failing_since()) != 0)
		snprintf(fwsince, sizeof(fwsince), ",\"failing_since\":\"%s\"",
		    utc_iso(since, when, sizeof(when)));
	(void)sbuf_printf(&j, "],\"sessions\":%zu,\"workers\":[%.*s],"
	    "\"backends_failing\":[%.*s],\"backends_stray\":[%.*s],"
	    "\"totals\":{"
	    "\"connections\":%llu,\"accepted\":%llu,\"rejected\":%llu,"
	    "\"tls_handshakes\":%llu,\"tls_failures\":%llu,"
	    "\"auth_failures\":%llu,\"smuggling\":%llu,"
	    "\"backend_failures\":%llu,\"bans\":%llu},"
	    "\"bans_active\":%zu,\"firewall\":{\"backend\":\"%s\","
	    "\"state\":\"%s\"%s},\"events\":{\"written\":%llu,"
	    "\"dropped\":%llu,\"syslog_dropped\":%llu,\"tail_clients\":%zu"
	    "%.*s},\"certificates\":[",
	    sessions, (int)wj.len, wj.p ? wj.p : "",
	    (int)bj.len, bj.p ? bj.p : "",
	    (int)sj.len, sj.p ? sj.p : "",
	    (unsigned long long)t.connections,
	    (unsigned long long)t.accepted, (unsigned long long)t.rejected,
	    (unsigned long long)t.tls_handshakes,
	    (unsigned long long)t.tls_failures,
	    (unsigned long long)t.auth_failures,
	    (unsigned long long)t.smuggling,
	    (unsigned long long)t.backend_failures,
	    (unsigned long long)t.bans, bans_active,
	    cfg_firewall_str(cfg->firewall.backend), fw_state,
	    fwsince,
	    (unsigned long long)events_written(),
	    (unsigned long long)events_dropped(),
	    (unsigned long long)events_syslog_dropped(), tails,
	    (int)ej.len, ej.p ? ej.p : "");
	sbuf_init(&certs_h, CTL_REPLY_MAX);
	sbuf_init(&certs_j, CTL_REPLY_MAX);
	cl.human = &certs_h;
	cl.json = &certs_j;
	cl.now = (int64_t)now.tv_sec;
	cl.n = 0;
	tls_set_certs(gen_tls(srv->gen(srv->arg)), status_cert, &cl);
	if (cl.n == 0)
		(void)sbuf_printf(&h, "%-12s none\n", "certificates");
	else
		(void)sbuf_add(&h, certs_h.p, certs_h.len);
	if (certs_j.len > 0)
		(void)sbuf_add(&j, certs_j.p, certs_j.len);
	(void)sbuf_adds(&j, "]");
	if (have_policy)
		(void)sbuf_printf(&j, ",\"policy\":{\"allow_ranges\":%zu,"
		    "\"deny_ranges\":%zu}", st.allow_ranges, st.deny_ranges);
	if (geo != NULL) {
		(void)sbuf_adds(&j, ",\"geo\":{\"path\":");
		(void)sbuf_json_str(&j, geo_path(geo));
		(void)sbuf_adds(&j, ",\"type\":");
		(void)sbuf_json_str(&j, geo_database_type(geo));
		(void)sbuf_printf(&j, ",\"build_epoch\":%llu,"
		    "\"ip_version\":%u,\"lookup_errors\":%llu}",
		    (unsigned long long)geo_build_epoch(geo),
		    geo_ip_version(geo),
		    (unsigned long long)geo_errors(geo));
	} else
		(void)sbuf_adds(&j, ",\"geo\":null");
	(void)sbuf_adds(&j, "}\n");
	if (!have_policy)
		(void)sbuf_adds(&h, "note         the policy engine is not "
		    "running\n");
	if (c->json)
		(void)sbuf_add(&r->body, j.p, j.len);
	else
		(void)sbuf_add(&r->body, h.p, h.len);
	if (sbuf_overflow(&h) || sbuf_overflow(&j) || sbuf_overflow(&bj) ||
	    sbuf_overflow(&sj) ||
	    sbuf_overflow(&certs_h))
		r->body.overflow = true;
	sbuf_clear(&h);
	sbuf_clear(&j);
	sbuf_clear(&wj);
	sbuf_clear(&bj);
	sbuf_clear(&sj);
	sbuf_clear(&ej);
	sbuf_clear(&certs_h);
	sbuf_clear(&certs_j);
}

struct ban_list {
	struct reply *r;
	bool json;
	uint64_t now;
	size_t n;
	/* For "bans CIDR": only the addresses in it. */
	const struct cidr *in;
	/* For "ban": the one address to find. */
	const uint8_t *want;
	struct ban_info found;
	bool have;
};

/*
 * Whether a ban of addr falls in the operator's prefix. IPv4 lives under
 * ::ffff:0:0/96, which short IPv6 prefixes cover too; to an operator
 * "bans ::/0" means every IPv6 ban, so an IPv4 ban only matches a prefix
 * inside ::ffff:0:0/96 (one written as IPv4, or as that block itself).
 */
static bool
ban_in_prefix(const struct cidr *in, const uint8_t addr[16])
{
	return cidr_contains(in, addr) &&
	    (!addr_is_v4mapped(addr) || in->plen >= 96);
}

static void
bans_visit(void *arg, const uint8_t addr[16], const struct ban_info *b)
{
	struct ban_list *bl = arg;
	struct sbuf *o = &bl->r->body;
	uint64_t left = b->expiry_ms > bl->now ? b->expiry_ms - bl->now : 0;
	char ip[64], d[64];

	if (bl->want != NULL) {
		if (memcmp(addr, bl->want, 16) == 0) {
			bl->found = *b;
			bl->have = true;
		}
		return;
	}
	if (left == 0 || (bl->in != NULL && !ban_in_prefix(bl->in, addr)))
		return;
	addr_v6_str(addr, ip, sizeof(ip));
	if (bl->json) {
		(void)sbuf_adds(o, bl->n == 0 ? "{\"ip\":\"" : ",{\"ip\":\"");
		(void)sbuf_printf(o, "%s\",\"reason\":\"%s\","
		    "\"remaining_s\":%llu,\"count\":%u}", ip,
		    ban_reason_str(b->reason),
		    (unsigned long long)((left + 999) / 1000), b->count);
	} else {
		if (bl->n == 0)
			(void)sbuf_printf(o, "%-40s %-10s %-12s %s\n",
			    "ADDRESS", "REASON", "REMAINING", "COUNT");
		(void)sbuf_printf(o, "%-40s %-10s %-12s %u\n", ip,
		    ban_reason_str(b->reason), secs_str(left, d, sizeof(d)),
		    b->count);
	}
	bl->n++;
}

/* "bans [CIDR]": a prefix lists part of a table too large for one reply
 * (a flood), or answers "is this address banned?". */
static void
cmd_bans(struct cclient *c, struct reply *r, char **w, size_t nw)
{
	struct policy *p = guard_policy();
	struct ban_list bl;
	struct cidr in;
	const char *why;

	if (nw > 2) {
		reply_fail(r, "usage: bans [IP or CIDR]");
		return;
	}
	if (nw == 2 && cidr_parse(w[1], &in, &why) == -1) {
		reply_fail(r, "invalid address or prefix '%s': %s", w[1], why);
		return;
	}
	if (p == NULL) {
		reply_fail(r, "the policy engine is not running");
		return;
	}
	memset(&bl, 0, sizeof(bl));
	bl.r = r;
	bl.json = c->json;
	bl.now = guard_now_ms();
	bl.in = nw == 2 ? &in : NULL;
	if (c->json)
		(void)sbuf_adds(&r->body, "{\"ok\":true,\"bans\":[");
	policy_bans(p, bl.now, bans_visit, &bl);
	if (sbuf_overflow(&r->body)) {
		sbuf_clear(&r->body);
		reply_fail(r, "%zu bans%s do not fit one reply (%d bytes): "
		    "list a part of them with bans CIDR", bl.n,
		    nw == 2 ? " in that prefix" : "", CTL_REPLY_MAX);
		return;
	}
	if (c->json)
		(void)sbuf_printf(&r->body, "],\"count\":%zu}\n", bl.n);
	else if (bl.n == 0)
		(void)sbuf_adds(&r->body, nw == 2 ? "no active bans in that "
		    "prefix\n" : "no active bans\n");
}

/* A single address (no prefix) into the 16-byte form. */
static int
parse_ip(const char *s, uint8_t out[16], struct reply *r)
{
	struct cidr cidr;
	const char *why;

	if (cidr_parse(s, &cidr, &why) == -1 || strchr(s, '/') != NULL) {
		reply_fail(r, "invalid address '%s': %s", s,
		    strchr(s, '/') ? "give one address, not a prefix" : why);
		return -1;
	}
	memcpy(out, cidr.addr, 16);
	return 0;
}

static void
cmd_ban(struct cclient *c, struct reply *r, char **w, size_t nw)
{
	struct ban_list bl;
	uint8_t addr[16];
	uint64_t ms = 0;
	const char *why;
	char ip[64], d[64];

	if (nw < 2 || nw > 3) {
		reply_fail(r, "usage: ban IP [DURATION]");
		return;
	}
	if (parse_ip(w[1], addr, r) == -1)
		return;
	if (nw == 3) {
		if (duration_parse(w[2], &ms, &why) == -1) {
			reply_fail(r, "invalid duration '%s': %s", w[2], why);
			return;
		}
		if (ms < 1000) {
			reply_fail(r, "invalid duration '%s': a ban lasts at "
			    "least 1s", w[2]);
			return;
		}
		if (ms > BAN_MAX_MS) {
			reply_fail(r, "invalid duration '%s': a ban lasts at "
			    "most " BAN_MAX_TEXT, w[2]);
			return;
		}
	}
	if (guard_ban(addr, ms, &why) == -1) {
		reply_fail(r, "cannot ban %s: %s", w[1], why);
		return;
	}
	memset(&bl, 0, sizeof(bl));
	bl.r = r;
	bl.now = guard_now_ms();
	bl.want = addr;
	policy_bans(guard_policy(), bl.now, bans_visit, &bl);
	addr_v6_str(addr, ip, sizeof(ip));
	if (bl.have)
		ms = bl.found.expiry_ms > bl.now ?
		    bl.found.expiry_ms - bl.now : 0;
	log_info("control: ban ip=%s duration_s=%llu", ip,
	    (unsigned long long)((ms + 999) / 1000));
	if (c->json)
		(void)sbuf_printf(&r->body, "{\"ok\":true,\"ip\":\"%s\","
		    "\"duration_s\":%llu,\"count\":%u}\n", ip,
		    (unsigned long long)((ms + 999) / 1000),
		    bl.have ? bl.found.count : 1);
	else
		(void)sbuf_printf(&r->body, "banned %s for %s (ban %u of "
		    "this address)\n", ip, secs_str(ms, d, sizeof(d)),
		    bl.have ? bl.found.count : 1);
}

static void
cmd_unban(struct cclient *c, struct reply *r, char **w, size_t nw)
{
	uint8_t addr[16];
	char ip[64];

	if (nw != 2) {
		reply_fail(r, "usage: unban IP");
		return;
	}
	if (parse_ip(w[1], addr, r) == -1)
		return;
	addr_v6_str(addr, ip, sizeof(ip));
	if (!guard_unban(addr)) {
		if (guard_fw_on())
			log_info("control: unban ip=%s: not banned, deleted "
			    "from the firewall set", ip);
		reply_fail(r, "%s is not banned%s", ip, guard_fw_on() ?
		    "; deleted from the firewall set all the same, in case "
		    "it was there" : "");
		return;
	}
	log_info("control: unban ip=%s", ip);
	if (c->json)
		(void)sbuf_printf(&r->body, "{\"ok\":true,\"ip\":\"%s\"}\n",
		    ip);
	else
		(void)sbuf_printf(&r->body, "unbanned %s\n", ip);
}

struct reload_lines {
	struct sbuf human, json;
	size_t n;
};

static void
reload_collect(void *arg, enum config_severity sev, const char *line)
{
	struct reload_lines *rl = arg;

	(void)sbuf_printf(&rl->human, "%s%s\n", line[0] == '.' ? " " : "",
	    line);
	(void)sbuf_adds(&rl->json, rl->n == 0 ? "{\"error\":" :
	    ",{\"error\":");
	(void)sbuf_printf(&rl->json, "%s,\"message\":",
	    sev == CONFIG_ERROR ? "true" : "false");
	(void)sbuf_json_str(&rl->json, line);
	(void)sbuf_adds(&rl->json, "}");
	rl->n++;
}

static void
cmd_reload(struct control *ctl, struct cclient *c, struct reply *r)
{
	struct reload_lines rl;
	int rc;

	memset(&rl, 0, sizeof(rl));
	sbuf_init(&rl.human, CTL_REPLY_MAX / 2);
	sbuf_init(&rl.json, CTL_REPLY_MAX / 2);
	log_info("control: reload requested");
	rc = ctl->srv->reload(ctl->srv->arg, reload_collect, &rl);
	if (rc == -1)
		reply_fail(r, "reload failed, the running configuration "
		    "stays");
	if (c->json) {
		(void)sbuf_printf(&r->body, "{\"ok\":%s,",
		    rc == 0 ? "true" : "false");
		if (rc == -1) {
			(void)sbuf_adds(&r->body, "\"error\":");
			(void)sbuf_json_str(&r->body, r->err);
			(void)sbuf_adds(&r->body, ",");
		}
		(void)sbuf_adds(&r->body, "\"messages\":[");
		if (rl.json.len > 0)
			(void)sbuf_add(&r->body, rl.json.p, rl.json.len);
		(void)sbuf_adds(&r->body, "]}\n");
	} else {
		/* A reload that took effect said "reload done: ..." last. */
		if (rl.human.len > 0)
			(void)sbuf_add(&r->body, rl.human.p, rl.human.len);
	}
	sbuf_clear(&rl.human);
	sbuf_clear(&rl.json);
}

static void
cmd_reopen(struct control *ctl, struct cclient *c, struct reply *r)
{
	const struct config *cfg = gen_config(ctl->srv->gen(ctl->srv->arg));

	if (ctl->srv->reopen(ctl->srv->arg) == -1) {
		/*
		 * No event is lost, but they go on into the file logrotate
		 * moved away, which nothing will rotate again: the operator
		 * has to act, so this is a refusal (exit 1), not a note. The
		 * system's reason reached only the log.
		 */
		reply_fail(r, "cannot reopen the events file %.100s; moat "
		    "still writes to the old file (see moat's log for why: "
		    "is the directory there and writable by moat?)",
		    cfg->events.file != NULL ? cfg->events.file : "");
		return;
	}
	if (c->json)
		(void)sbuf_adds(&r->body, "{\"ok\":true}\n");
	else
		(void)sbuf_adds(&r->body, "events file reopened\n");
}

static void
cmd_tail(struct cclient *c, struct reply *r, char **w, size_t nw)
{
	size_t i;

	c->tail_event[0] = '\0';
	c->tail_has_ip = false;
	for (i = 1; i < nw; i++) {
		if (strcmp(w[i], "--event") == 0 && i + 1 < nw) {
			if (!event_name_known(w[++i]) ||
			    strlen(w[i]) >= sizeof(c->tail_event)) {
				reply_fail(r, "unknown event '%.40s'", w[i]);
				return;
			}
			snprintf(c->tail_event, sizeof(c->tail_event), "%s",
			    w[i]);
		} else if (strcmp(w[i], "--ip") == 0 && i + 1 < nw) {
			if (parse_ip(w[++i], c->tail_ip, r) == -1)
				return;
			c->tail_has_ip = true;
		} else {
			reply_fail(r, "usage: tail [--event E] [--ip IP]");
			return;
		}
	}
	if (!c->ctl->subscribed) {
		if (events_subscribe(c->ctl->loop, control_event_cb, c->ctl) ==
		    -1) {
			reply_fail(r, "no room to follow events now");
			return;
		}
		c->ctl->subscribed = true;
	}
	c->tail = true;
	c->ctl->ntail++;
}

static void
cmd_help(struct cclient *c, struct reply *r)
{
	static const char *const cmds[] = {
		"status", "bans [IP|CIDR]", "ban IP [DURATION]", "unban IP",
		"reload", "reopen", "tail [--event E] [--ip IP]", "help",
	};
	size_t i;

	if (c->json)
		(void)sbuf_adds(&r->body, "{\"ok\":true,\"commands\":[");
	for (i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		if (c->json) {
			(void)sbuf_adds(&r->body, i ? "," : "");
			(void)sbuf_json_str(&r->body, cmds[i]);
		} else
			(void)sbuf_printf(&r->body, "%s\n", cmds[i]);
	}
	if (c->json)
		(void)sbuf_adds(&r->body, "]}\n");
}

/* Runs one request line (NUL-terminated, no newline). */
static void
cclient_command(struct cclient *c, char *line)
{
	struct control *ctl = c->ctl;
	struct reply r;
	char *w[CTL_WORDS], *save = NULL, *tok;
	size_t nw = 0;

	reply_init(&r);
	c->json = false;
	for (tok = strtok_r(line, " \t\r", &save); tok != NULL;
	    tok = strtok_r(NULL, " \t\r", &save)) {
		if (nw == 0 && !c->json && strcmp(tok, "json") == 0) {
			c->json = true;
			continue;
		}
		if (nw == CTL_WORDS) {
			reply_fail(&r, "too many arguments");
			goto out;
		}
		w[nw++] = tok;
	}
	if (nw == 0) {
		reply_fail(&r, "empty request; try help");
		goto out;
	}
	if (strcmp(w[0], "status") == 0 && nw == 1)
		cmd_status(ctl, c, &r);
	else if (strcmp(w[0], "bans") == 0)
		cmd_bans(c, &r, w, nw);
	else if (strcmp(w[0], "ban") == 0)
		cmd_ban(c, &r, w, nw);
	else if (strcmp(w[0], "unban") == 0)
		cmd_unban(c, &r, w, nw);
	else if (strcmp(w[0], "reload") == 0 && nw == 1)
		cmd_reload(ctl, c, &r);
	else if (strcmp(w[0], "reopen") == 0 && nw == 1)
		cmd_reopen(ctl, c, &r);
	else if (strcmp(w[0], "tail") == 0)
		cmd_tail(c, &r, w, nw);
	else if (strcmp(w[0], "help") == 0 && nw == 1)
		cmd_help(c, &r);
	else if (strcmp(w[0], "status") == 0 ||
	    strcmp(w[0], "reload") == 0 || strcmp(w[0], "reopen") == 0 ||
	    strcmp(w[0], "help") == 0)
		reply_fail(&r, "%s takes no arguments", w[0]);
	else
		reply_fail(&r, "unknown command '%.40s'; try help", w[0]);
out:
	cclient_send(c, &r);
}

/* Runs every complete line in the input, unless the client tails now. */
static void
cclient_process(struct cclient *c)
{
	char *nl;
	size_t n;

	while (!c->tail && !c->closing && c->out.len == 0 &&
	    (nl = memchr(c->in, '\n', c->inlen)) != NULL) {
		*nl = '\0';
		n = (size_t)(nl - c->in) + 1;
		cclient_command(c, c->in);
		memmove(c->in, c->in + n, c->inlen - n);
		c->inlen -= n;
	}
	nl = memchr(c->in, '\n', c->inlen);
	if (!c->tail && !c->closing && nl == NULL &&
	    c->inlen == CTL_LINE_MAX) {
		struct reply r;

		reply_init(&r);
		reply_fail(&r, "request longer than %d bytes",
		    CTL_LINE_MAX);
		cclient_send(c, &r);
		c->closing = true;
	}
	if (!c->tail && !c->closing && nl == NULL && c->eof)
		c->closing = true;	/* every request answered */
	if (c->tail)
		c->inlen = 0;	/* a tail client has nothing more to say */
}

/* The line that says how many events c missed, into note; its length,
 * 0 when none were. */
static int
tail_note(const struct cclient *c, char *note, size_t len)
{
	int n;

	if (c->tail_dropped == 0)
		return 0;
	n = snprintf(note, len, c->json ?
	    "{\"event\":\"tail_dropped\",\"count\":%llu}\n" :
	    "# %llu events dropped: this reader or moat fell behind\n",
	    (unsigned long long)c->tail_dropped);
	return n < 0 || (size_t)n >= len ? 0 : n;
}

/*
 * Says at once what c missed, once it has read all it was sent: without
 * an event to come (the flood was over) the count would wait for one.
 */
static void
tail_catch_up(struct cclient *c)
{
	char note[96];
	int nn;

	if (!c->tail || c->closing || c->out.len > 0 ||
	    (nn = tail_note(c, note, sizeof(note))) == 0)
		return;
	(void)sbuf_add(&c->out, note, (size_t)nn);
	c->tail_dropped = 0;
}

static void
cclient_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct cclient *c = container_of(w, struct cclient, io);
	ssize_t n;

	if (revents & EV_WRITE) {
		n = write(c->fd, c->out.p, c->out.len);
		if (n == -1 && errno != EAGAIN && errno != EINTR) {
			cclient_free(c);
			return;
		}
		if (n > 0) {
			sbuf_consume(&c->out, (size_t)n);
			ev_timer_again(loop, &c->timer);
			if (c->out.len == 0)
				cclient_process(c);	/* the next request */
			tail_catch_up(c);
		}
		if (c->out.len == 0 && c->closing) {
			cclient_free(c);
			return;
		}
	}
	if (revents & EV_READ) {
		n = read(c->fd, c->in + c->inlen, CTL_LINE_MAX - c->inlen);
		if (n == -1 && errno != EAGAIN && errno != EINTR) {
			cclient_free(c);
			return;
		}
		if (n == 0) {
			/* The client said all it will: answer what it asked
			 * (echo status | nc -U), then close. */
			if (c->inlen > 0 && c->inlen < CTL_LINE_MAX &&
			    memchr(c->in, '\n', c->inlen) == NULL)
				c->in[c->inlen++] = '\n';
			c->eof = true;
			if (c->tail)
				c->closing = true;
			cclient_process(c);
			if (c->out.len == 0 && c->closing) {
				cclient_free(c);
				return;
			}
		} else if (n > 0) {
			c->inlen += (size_t)n;
			if (!c->tail)
				ev_timer_again(loop, &c->timer);
			cclient_process(c);
		}
	}
	cclient_update(c);
}

static void
cclient_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct cclient *c = container_of(w, struct cclient, timer);

	(void)loop;
	(void)revents;
	if (c->tail)
		log_info("control: closing a tail reader that read nothing "
		    "for %.0f s while events waited (%llu dropped for it since "
		    "its last line)", CTL_IDLE,
		    (unsigned long long)c->tail_dropped);
	cclient_free(c);
}

/* --- tail ------------------------------------------------------------- */

static void
tail_human(struct sbuf *o, const struct event *ev, uint64_t unix_ms)
{
	/* v holds a firewall error's detail whole, its fix included. */
	char ts[40], ip[64], v[1024];
	time_t secs = (time_t)(unix_ms / 1000);
	struct tm tm;

	gmtime_r(&secs, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
	(void)sbuf_printf(o, "%s.%03uZ %s %s", ts,
	    (unsigned)(unix_ms % 1000), ev->event ? ev->event : "unknown",
	    ev->ip ? addr_v6_str(ev->ip, ip, sizeof(ip)) : "-");
	if (ev->listener != NULL)
		(void)sbuf_printf(o, " listener=%s", ev->listener);
	/* Free text (an OpenSSL or firewall message) is quoted, so that
	 * the line stays key=value for grep and awk. */
	if (ev->reason != NULL)
		(void)sbuf_printf(o, " reason=%s",
		    log_value(ev->reason, v, sizeof(v)));
	if (ev->country != NULL)
		(void)sbuf_printf(o, " country=%s", ev->country);
	if (ev->count >= 0)
		(void)sbuf_printf(o, " count=%lld", (long long)ev->count);
	if (ev->window_s >= 0)
		(void)sbuf_printf(o, " window_s=%lld",
		    (long long)ev->window_s);
	if (ev->ban_s >= 0)
		(void)sbuf_printf(o, " ban_s=%lld", (long long)ev->ban_s);
	if (ev->firewall != NULL)
		(void)sbuf_printf(o, " firewall=%s", ev->firewall);
	if (ev->session != NULL)
		(void)sbuf_printf(o, " session=%s", ev->session);
	if (ev->detail != NULL)
		(void)sbuf_printf(o, " detail=%s",
		    log_value(ev->detail, v, sizeof(v)));
	(void)sbuf_adds(o, "\n");
}

/* Whether c follows events like ev (--event, --ip). */
static bool
tail_wants(const struct cclient *c, const struct event *ev)
{
	if (c->tail_event[0] != '\0' && (ev->event == NULL ||
	    strcmp(c->tail_event, ev->event) != 0))
		return false;
	return !c->tail_has_ip || (ev->ip != NULL &&
	    memcmp(ev->ip, c->tail_ip, 16) == 0);
}

static void
control_event_cb(void *arg, uint64_t lost, const struct event *ev,
    uint64_t unix_ms, const char *line, size_t len)
{
	struct control *ctl = arg;
	struct cclient *c;
	struct sbuf tmp;
	char note[96];
	int nn;

	for (c = ctl->clients; c != NULL; c = c->next) {
		if (!c->tail || c->closing)
			continue;
		/* Events that never reached this thread (it was busy) are
		 * unknown: counted for every follower, whatever it follows. */
		if (!tail_wants(c, ev)) {
			c->tail_dropped += lost;
			tail_catch_up(c);
			cclient_update(c);
			continue;
		}
		nn = tail_note(c, note, sizeof(note));
		sbuf_init(&tmp, 4096);
		if (c->json)
			(void)sbuf_add(&tmp, line, len);
		else
			tail_human(&tmp, ev, unix_ms);
		if (sbuf_overflow(&tmp) ||
		    c->out.len + (size_t)nn + tmp.len > CTL_TAIL_MAX) {
			c->tail_dropped++;
		} else {
			if (nn > 0)
				(void)sbuf_add(&c->out, note, (size_t)nn);
			(void)sbuf_add(&c->out, tmp.p, tmp.len);
			c->tail_dropped = 0;
			cclient_update(c);
		}
		c->tail_dropped += lost;
		sbuf_clear(&tmp);
	}
}

/* --- the socket ------------------------------------------------------- */

static void
control_accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct control *ctl = container_of(w, struct control, io);
	struct cclient *c;
	struct ucred cred;
	socklen_t clen;
	int fd, i;
	static const char busy[] = "error too many clients\n.\n";
	static const char denied[] = "error permission denied\n.\n";

	(void)revents;
	for (i = 0; i < 16; i++) {
		fd = accept4(ctl->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd == -1) {
			if (acceptpause_failed(loop, &ctl->pause))
				return;
			continue;
		}
		/* The socket's mode already keeps others out; this also
		 * holds if an operator loosened it by hand. */
		clen = sizeof(cred);
		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) ==
		    -1 || (cred.uid != 0 && cred.uid != geteuid())) {
			(void)!write(fd, denied, sizeof(denied) - 1);
			close(fd);
			continue;
		}
		if (ctl->nclients >= CTL_CLIENTS_MAX ||
		    (c = calloc(1, sizeof(*c))) == NULL) {
			(void)!write(fd, busy, sizeof(busy) - 1);
			close(fd);
			continue;
		}
		c->ctl = ctl;
		c->fd = fd;
		sbuf_init(&c->out, CTL_REPLY_MAX + 4096);
		ev_io_init(&c->io, cclient_io_cb, fd, EV_READ);
		ev_timer_init(&c->timer, cclient_timer_cb, 0., CTL_IDLE);
		ev_timer_again(loop, &c->timer);
		c->next = ctl->clients;
		if (ctl->clients != NULL)
			ctl->clients->prev = c;
		ctl->clients = c;
		ctl->nclients++;
		cclient_update(c);
	}
}

/*
 * The control socket is opened first at start, so it is what a moat
 * started without root meets first under the default /run/moat.
 */
static const char *
root_hint(int e)
{
	return e == EACCES && geteuid() != 0 ? " (moat starts as root and "
	    "then runs as daemon.user)" : privdrop_rofs_hint(e);
}

/*
 * The socket's own directory and the one above it, into dir and parent;
 * true when neither exists, so that the socket cannot be made: moat
 * makes only that last level, as it does for its other files, lest a
 * typo build a tree of directories from / as root.
 */
static bool
no_parent(const char *path, char *dir, char *parent, size_t len)
{
	struct stat st;

	privdrop_dirname(path, dir, len);
	privdrop_dirname(dir, parent, len);
	return stat(dir, &st) == -1 && errno == ENOENT &&
	    stat(parent, &st) == -1 && errno == ENOENT;
}

/* Makes the socket's own directory (mode 0750) when missing. */
static int
make_dir(const char *path, char *err, size_t errlen)
{
	char dir[sizeof(((struct sockaddr_un *)0)->sun_path)];
	char parent[sizeof(dir)];
	int e;

	if (no_parent(path, dir, parent, sizeof(dir))) {
		snprintf(err, errlen, "control socket %s: neither %s nor %s "
		    "exists (moat makes only the socket's own directory; "
		    "check the path)", path, dir, parent);
		return -1;
	}
	if (mkdir(dir, 0750) == 0) {
		log_info("created %s", dir);
		return 0;
	}
	if ((e = errno) == EEXIST)
		return 0;
	snprintf(err, errlen, "control socket: cannot create directory %s: "
	    "%s%s", dir, strerror(e), root_hint(e));
	return -1;
}

/* Removes a socket file nobody answers on; refuses a live one or a file
 * that is not a socket. */
static int
clear_stale(const char *path, const struct sockaddr_un *sun, char *err,
    size_t errlen)
{
	struct stat st;
	int fd, rc;

	if (lstat(path, &st) == -1) {
		int e = errno;

		if (e == ENOENT)
			return 0;
		snprintf(err, errlen, "control socket %s: %s%s", path,
		    strerror(e), root_hint(e));
		return -1;
	}
	if (!S_ISSOCK(st.st_mode)) {
		snprintf(err, errlen, "control socket: %s exists and is not "
		    "a socket", path);
		return -1;
	}
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
	    0)) == -1) {
		snprintf(err, errlen, "control socket: %s", strerror(errno));
		return -1;
	}
	rc = connect(fd, (const struct sockaddr *)sun, sizeof(*sun));
	close(fd);
	if (rc == 0 || errno == EAGAIN) {
		snprintf(err, errlen, "control socket: another moat answers "
		    "on %s", path);
		return -1;
	}
	if (errno != ECONNREFUSED && errno != ENOENT) {
		snprintf(err, errlen, "control socket: %s: %s", path,
		    strerror(errno));
		return -1;
	}
	log_info("control: removing stale socket %s", path);
	if (unlink(path) == -1 && errno != ENOENT) {
		snprintf(err, errlen, "control socket: cannot remove stale "
		    "%s: %s", path, strerror(errno));
		return -1;
	}
	return 0;
}

int
control_check(const char *path, char *err, size_t errlen)
{
	char buf[sizeof(((struct sockaddr_un *)0)->sun_path)];
	char parent[sizeof(buf)];
	struct stat st;
	char *p;

	snprintf(buf, sizeof(buf), "%s", path);
	for (p = buf + 1; (p = strchr(p, '/')) != NULL; p++) {
		*p = '\0';
		if (stat(buf, &st) == 0 && !S_ISDIR(st.st_mode)) {
			snprintf(err, errlen, "%s is not a directory, so the "
			    "control socket %s cannot be made", buf, path);
			return -1;
		}
		*p = '/';
	}
	if (no_parent(path, buf, parent, sizeof(buf))) {
		snprintf(err, errlen, "control socket %s: neither %s nor %s "
		    "exists (moat makes only the socket's own directory; "
		    "check the path)", path, buf, parent);
		return -1;
	}
	if (lstat(path, &st) == 0 && !S_ISSOCK(st.st_mode)) {
		snprintf(err, errlen, "%s exists and is not a socket, where "
		    "moat makes its control socket", path);
		return -1;
	}
	if (privdrop_read_only(path, buf, sizeof(buf)) != NULL) {
		snprintf(err, errlen, "%s is on a read-only file system, so the "
		    "control socket %s cannot be made", buf, path);
		return -1;
	}
	return 0;
}

struct control *
control_open(struct ev_loop *loop, const char *path,
    const struct control_server *srv, char *err, size_t errlen)
{
	struct control *ctl;
	struct sockaddr_un sun;
	struct stat st;
	mode_t old;
	int rc, e;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sun.sun_path)) {
		snprintf(err, errlen, "control socket: path too long: %s",
		    path);
		return NULL;
	}
	memcpy(sun.sun_path, path, strlen(path));
	if (make_dir(path, err, errlen) == -1 ||
	    clear_stale(path, &sun, err, errlen) == -1)
		return NULL;
	if ((ctl = calloc(1, sizeof(*ctl))) == NULL ||
	    (ctl->path = strdup(path)) == NULL) {
		free(ctl);
		snprintf(err, errlen, "control socket: out of memory");
		return NULL;
	}
	ctl->loop = loop;
	ctl->srv = srv;
	ctl->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
	    0);
	if (ctl->fd == -1)
		goto fail;
	/* Created 0600 from the start: no window where others connect. */
	old = umask(0177);
	rc = bind(ctl->fd, (const struct sockaddr *)&sun, sizeof(sun));
	umask(old);
	if (rc == -1 || chmod(path, 0600) == -1 || listen(ctl->fd, 16) == -1 ||
	    stat(path, &st) == -1)
		goto fail;
	ctl->dev = st.st_dev;
	ctl->ino = st.st_ino;
	ev_io_init(&ctl->io, control_accept_cb, ctl->fd, EV_READ);
	acceptpause_init(&ctl->pause, &ctl->io, "control");
	ev_io_start(loop, &ctl->io);
	log_info("control socket %s", path);
	return ctl;
fail:
	e = errno;
	snprintf(err, errlen, "control socket %s: %s%s", path, strerror(e),
	    root_hint(e));
	if (ctl->fd != -1)
		close(ctl->fd);
	free(ctl->path);
	free(ctl);
	return NULL;
}

void
control_close(struct control *ctl)
{
	struct stat st;
	struct cclient *c;

	if (ctl == NULL)
		return;
	if (ctl->subscribed) {
		ctl->subscribed = false;
		events_unsubscribe(control_event_cb, ctl);
	}
	while ((c = ctl->clients) != NULL) {
		/* Tail readers learn that the stream ended on purpose; the
		 * mark goes even past a full queue, and with everything
		 * before it if the socket takes it all. */
		if (c->tail) {
			char note[96];
			int nn = tail_note(c, note, sizeof(note));

			if (nn > 0)
				(void)sbuf_add(&c->out, note, (size_t)nn);
			(void)sbuf_adds(&c->out, ".\n");
		}
		if (c->out.len > 0)
			(void)!write(c->fd, c->out.p, c->out.len);
		cclient_free(c);
	}
	ev_io_stop(ctl->loop, &ctl->io);
	acceptpause_stop(ctl->loop, &ctl->pause);
	close(ctl->fd);
	/* Only our own socket: a newer moat may have replaced it. */
	if (stat(ctl->path, &st) == 0 && st.st_dev == ctl->dev &&
	    st.st_ino == ctl->ino)
		(void)unlink(ctl->path);
	free(ctl->path);
	free(ctl);
}
