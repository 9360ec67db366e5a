/* backendwatch.c - a backend that stops answering is said once as a
 * warning, with reminders and its return, not only per session. */
#include "backendwatch.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "duration.h"
#include "log.h"
#include "mono.h"
#include "utc.h"

#define WATCH_MAX 64		/* backends tracked (failing or lately) */
#define REMIND_MS 60000		/* a warning a minute at most, per backend */

struct watch {
	bool used, failing;
	bool quiet;		/* this failure came too soon to be said */
	char listener[40];
	char backend[ADDR_PORT_STRLEN];
	char why[160];		/* the last failure's error */
	time_t since;		/* wall clock, for status */
	uint64_t since_ms, told_ms;	/* monotonic */
	uint64_t sessions, untold;	/* failed since, and since told */
	uint64_t spells;	/* quiet failures over since told */
	const char *hint;	/* for this failure's first warning */
	/* Replies sent unasked (backendwatch_stray()), which a failing
	 * backend cannot send, and which do not make it failing. */
	uint64_t stray_ms, strays;	/* told at, and not told since */
	/* For status, while the last came within STRAY_SHOWN_MS. */
	time_t stray_first;	/* wall clock */
	uint64_t stray_last_ms, stray_total;
	char stray_line[84];
};

/* A backend that sent a stray reply is listed this long after the last. */
#define STRAY_SHOWN_MS (10 * 60000)

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct watch watches[WATCH_MAX];	/* under mu */
/* Backends failing now: the healthy path (every session's greeting)
 * reads this and takes no lock while it is 0. */
static atomic_size_t nfailing;

/* A backend keeps its slot after it answers again, so that one that
 * flaps is told of once a minute, not at every failure; a new one takes
 * a free slot, or the one that works and was told of longest ago. */
static struct watch *
find(const char *listener, const char *backend, bool make)
{
	struct watch *w, *spare = NULL;

	for (w = watches; w < watches + WATCH_MAX; w++) {
		if (w->used && strcmp(w->listener, listener) == 0 &&
		    strcmp(w->backend, backend) == 0)
			return w;
		if (!w->failing && (spare == NULL || (spare->used &&
		    (!w->used || w->told_ms < spare->told_ms))))
			spare = w;
	}
	if (!make || spare == NULL)
		return NULL;
	memset(spare, 0, sizeof(*spare));
	spare->used = true;
	snprintf(spare->listener, sizeof(spare->listener), "%s", listener);
	snprintf(spare->backend, sizeof(spare->backend), "%s", backend);
	return spare;
}

/* How long w's failure has lasted at now, in whole seconds, into d. */
static const char *
lasted(const struct watch *w, uint64_t now, char *d, size_t len)
{
	return duration_str((now - w->since_ms) / 1000 * 1000, d, len);
}

/*
 * What goes with a failure, or a stray reply, that may come from the
 * PROXY header: the listener's backend_proxy and the backend's set up
 * must agree on it.
 */
const char *
backendwatch_hint(const char *why, enum cfg_backend_proxy bp)
{
	bool sends = bp == CFG_BPROXY_V1 || bp == CFG_BPROXY_V2;

	if (why == NULL)	/* a stray reply */
		return !sends ? "" : "; a backend that does not expect the "
		    "PROXY header moat sends first (backend_proxy) answers it "
		    "as a command: have it accept the header from moat's "
		    "address (Postfix: smtpd_upstream_proxy_protocol = haproxy; "
		    "Dovecot: haproxy = yes on its listener, moat's address in "
		    "haproxy_trusted_networks), or choose another backend_proxy "
		    "(moat.toml(5))";
	/* The mail server's TLS port (465, 995) where its plaintext one
	 * belongs: it answers in TLS, closes on the header or waits. */
	if (strncmp(why, "answers in TLS", 14) == 0 ||
	    strstr(why, "greeting is no ") != NULL)
		return "; backend must be the mail server's plaintext port "
		    "(SMTP 25 or 587, POP3 110), where it greets in the clear: "
		    "moat does the TLS";
	if (sends)
		return strstr(why, "before greeting") == NULL ? "" :
		    "; a backend that does not take PROXY headers from moat's "
		    "address closes at once (Dovecot: haproxy_trusted_networks), "
		    "and so does a TLS port (465, 995): backend must be the "
		    "plaintext one";
	if (strstr(why, "before greeting") == NULL &&
	    strncmp(why, "no greeting", 11) != 0 &&
	    strstr(why, "during XCLIENT") == NULL)
		return "";
	return "; a backend that waits for a PROXY header (Postfix: "
	    "smtpd_upstream_proxy_protocol = haproxy; Dovecot: haproxy = yes) "
	    "greets no one without it: backend_proxy = \"v2\" or \"v1\" "
	    "sends one; a TLS port (465, 995) waits too: backend must be the "
	    "plaintext one";
}

/* The warning that a failure starts; also the first word of one that
 * came too soon after the last warning and has lasted since. */
static void
say_fails(struct watch *w, uint64_t now)
{
	char d[32], so_far[96] = "", spells[96] = "";

	if (w->sessions > 1)
		snprintf(so_far, sizeof(so_far), " for %s now, %llu sessions",
		    lasted(w, now, d, sizeof(d)),
		    (unsigned long long)w->sessions);
	if (w->spells > 0)
		snprintf(spells, sizeof(spells), " (and %llu times for a "
		    "moment in the last %llu s)", (unsigned long long)w->spells,
		    (unsigned long long)(now - w->told_ms) / 1000);
	log_warnx("backend %s of listener '%s' fails%s: %s%s; its clients are "
	    "told the service is temporarily unavailable until it answers "
	    "again%s", w->backend, w->listener, so_far, w->why, spells,
	    w->hint);
	w->told_ms = now;
	w->untold = 0;
	w->spells = 0;
	w->quiet = false;
}

void
backendwatch_fail(const char *listener, const struct addr_port *ap,
    const char *why, enum cfg_backend_proxy bp)
{
	struct watch *w;
	uint64_t now = mono_ms();
	char d[32], backend[ADDR_PORT_STRLEN];

	addr_port_str(ap, backend, sizeof(backend));
	pthread_mutex_lock(&mu);
	/* Past WATCH_MAX at once the sessions' own lines still say it. */
	if ((w = find(listener, backend, true)) == NULL)
		goto out;
	snprintf(w->why, sizeof(w->why), "%s", why);
	w->hint = backendwatch_hint(why, bp);
	if (!w->failing) {
		w->failing = true;
		w->since = time(NULL);
		w->since_ms = now;
		w->sessions = 0;
		atomic_fetch_add(&nfailing, 1);
		/* A backend that flaps: its next failure is told of once
		 * a minute has passed since the last warning. */
		w->quiet = w->told_ms != 0 && now - w->told_ms < REMIND_MS;
	}
	w->sessions++;
	w->untold++;
	if (w->quiet ? now - w->told_ms >= REMIND_MS : w->sessions == 1)
		say_fails(w, now);
	else if (now - w->told_ms >= REMIND_MS) {
		log_warnx("backend %s of listener '%s' still fails after %s: "
		    "%llu sessions since the last line, %llu in all (last: %s)",
		    backend, listener, lasted(w, now, d, sizeof(d)),
		    (unsigned long long)w->untold,
		    (unsigned long long)w->sessions, why);
		w->told_ms = now;
		w->untold = 0;
	}
out:
	pthread_mutex_unlock(&mu);
}

void
backendwatch_ok(const char *listener, const struct addr_port *ap)
{
	struct watch *w;
	char d[32], backend[ADDR_PORT_STRLEN];

	if (atomic_load_explicit(&nfailing, memory_order_relaxed) == 0)
		return;
	addr_port_str(ap, backend, sizeof(backend));
	pthread_mutex_lock(&mu);
	if ((w = find(listener, backend, false)) != NULL && w->failing) {
		w->failing = false;
		atomic_fetch_sub(&nfailing, 1);
		/* A warning, as it ends one: at log_level "warning" the
		 * failure would otherwise be the last word. A failure that
		 * was not said ends without a word too. */
		if (w->quiet)
			w->spells++;
		else
			log_warnx("backend %s of listener '%s' answers again "
			    "after %s; %llu sessions failed meanwhile", backend,
			    listener, lasted(w, mono_ms(), d, sizeof(d)),
			    (unsigned long long)w->sessions);
	}
	pthread_mutex_unlock(&mu);
}

void
backendwatch_stray(const char *listener, const struct addr_port *ap,
    const char *line, enum cfg_backend_proxy bp)
{
	struct watch *w;
	uint64_t now = mono_ms();
	char backend[ADDR_PORT_STRLEN], since[64] = "";

	addr_port_str(ap, backend, sizeof(backend));
	pthread_mutex_lock(&mu);
	if ((w = find(listener, backend, true)) == NULL)
		goto out;
	if (w->stray_last_ms == 0 || now - w->stray_last_ms >= STRAY_SHOWN_MS) {
		w->stray_first = time(NULL);
		w->stray_total = 0;
	}
	w->stray_last_ms = now;
	w->stray_total++;
	snprintf(w->stray_line, sizeof(w->stray_line), "%s", line);
	w->strays++;
	if (w->stray_ms != 0 && now - w->stray_ms < REMIND_MS)
		goto out;
	if (w->stray_ms != 0)
		snprintf(since, sizeof(since), " (%llu sessions so in the last "
		    "%llu s)", (unsigned long long)w->strays,
		    (unsigned long long)(now - w->stray_ms) / 1000);
	log_warnx("backend %s of listener '%s' sent a reply no command asked "
	    "for, \"%s\", and the session ended%s%s", backend, listener, line,
	    since, backendwatch_hint(NULL, bp));
	w->stray_ms = now;
	w->strays = 0;
out:
	pthread_mutex_unlock(&mu);
}

void
backendwatch_keep_only(const struct config *cfg)
{
	struct watch *w;
	char backend[ADDR_PORT_STRLEN];
	size_t i;

	pthread_mutex_lock(&mu);
	for (w = watches; w < watches + WATCH_MAX; w++) {
		if (!w->used)
			continue;
		for (i = 0; i < cfg->nlisteners; i++)
			if (strcmp(cfg->listeners[i].name, w->listener) == 0 &&
			    strcmp(addr_port_str(&cfg->listeners[i].backend,
			    backend, sizeof(backend)), w->backend) == 0)
				break;
		if (i < cfg->nlisteners)
			continue;
		if (w->failing)
			atomic_fetch_sub(&nfailing, 1);
		memset(w, 0, sizeof(*w));
	}
	pthread_mutex_unlock(&mu);
}

/* The backends whose sessions lately ended on stray replies. */
static size_t
status_strays(struct sbuf *human, struct sbuf *json, const char *label,
    size_t n)
{
	const struct watch *w;
	uint64_t now = mono_ms();
	char first[32], last[32];
	size_t k = 0;

	for (w = watches; w < watches + WATCH_MAX; w++) {
		if (!w->used || w->stray_last_ms == 0 ||
		    now - w->stray_last_ms >= STRAY_SHOWN_MS)
			continue;
		utc_iso((int64_t)w->stray_first, first, sizeof(first));
		/* The wall clock of the last, from its age. */
		utc_iso((int64_t)time(NULL) - (int64_t)((now -
		    w->stray_last_ms) / 1000), last, sizeof(last));
		(void)sbuf_printf(human, "%-12s %s -> %s sent replies no command "
		    "asked for: %llu sessions ended so since %s, the last at "
		    "%s: \"%s\"\n", n + k == 0 ? label : "", w->listener,
		    w->backend, (unsigned long long)w->stray_total, first, last,
		    w->stray_line);
		(void)sbuf_adds(json, k == 0 ? "{\"listener\":" :
		    ",{\"listener\":");
		(void)sbuf_json_str(json, w->listener);
		(void)sbuf_printf(json, ",\"backend\":\"%s\",\"since\":\"%s\","
		    "\"last\":\"%s\",\"sessions\":%llu,\"reply\":", w->backend,
		    first, last, (unsigned long long)w->stray_total);
		(void)sbuf_json_str(json, w->stray_line);
		(void)sbuf_adds(json, "}");
		k++;
	}
	return k;
}

size_t
backendwatch_status(struct sbuf *human, struct sbuf *json,
    struct sbuf *stray_json, const char *label)
{
	const struct watch *w;
	char ts[32];
	size_t n = 0;

	pthread_mutex_lock(&mu);
	for (w = watches; w < watches + WATCH_MAX; w++) {
		if (!w->failing)
			continue;
		utc_iso((int64_t)w->since, ts, sizeof(ts));
		(void)sbuf_printf(human, "%-12s %s -> %s failing since %s, "
		    "%llu sessions: %s\n", n == 0 ? label : "", w->listener,
		    w->backend, ts, (unsigned long long)w->sessions, w->why);
		(void)sbuf_adds(json, n == 0 ? "{\"listener\":" :
		    ",{\"listener\":");
		(void)sbuf_json_str(json, w->listener);
		(void)sbuf_printf(json, ",\"backend\":\"%s\",\"since\":\"%s\","
		    "\"sessions\":%llu,\"error\":", w->backend, ts,
		    (unsigned long long)w->sessions);
		(void)sbuf_json_str(json, w->why);
		(void)sbuf_adds(json, "}");
		n++;
	}
	n += status_strays(human, stray_json, label, n);
	pthread_mutex_unlock(&mu);
	return n;
}

size_t
backendwatch_failing(void)
{
	return atomic_load_explicit(&nfailing, memory_order_relaxed);
}
