/* certwatch.c - a certificate that nears its end while moat runs is said
 * in the log then, not only at the start and at reloads. */
#include "certwatch.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "utc.h"

#define WATCH_MAX 64		/* certificates followed; more go unsaid */
#define DAY 86400

/* Where a certificate stands: CERT_WARN_DAYS while it has that many days
 * or more, then the whole days left, 0 under a day, -1 once expired. Each
 * step down is said. */
static int
stage(int64_t not_after, int64_t now)
{
	int64_t left = not_after - now;

	if (left <= 0)
		return -1;
	if (left >= (int64_t)CERT_WARN_DAYS * DAY)
		return CERT_WARN_DAYS;
	return (int)(left / DAY);
}

struct seen {
	char name[256];
	int stage;
};

static struct seen seen[WATCH_MAX];	/* the main thread's */
static size_t nseen;

bool
certwatch_note(const char *name, const char *path, int64_t not_after,
    int64_t now, bool quiet, char *msg, size_t len)
{
	struct seen *s;
	char when[32];
	int st = stage(not_after, now);
	bool say;
	size_t i;

	for (i = 0; i < nseen && strcmp(seen[i].name, name) != 0; i++)
		;
	if (i == nseen) {
		if (nseen == WATCH_MAX)
			return false;
		nseen++;
		snprintf(seen[i].name, sizeof(seen[i].name), "%s", name);
		seen[i].stage = CERT_WARN_DAYS;
		quiet = true;	/* new: loading said it */
	}
	s = &seen[i];
	/* A renewed certificate (a reload) steps back up without a word. */
	say = !quiet && st < s->stage;
	s->stage = st;
	if (!say)
		return false;
	utc_human(not_after, when, sizeof(when));
	if (st < 0)
		snprintf(msg, len, "certificate '%s' (%s) expired on %s: clients "
		    "refuse it now; renew it and reload moat", name, path, when);
	else if (st == 0)
		snprintf(msg, len, "certificate '%s' (%s) expires on %s, in less "
		    "than a day; renew it and reload moat", name, path, when);
	else
		snprintf(msg, len, "certificate '%s' (%s) expires on %s, in %d "
		    "day%s; renew it and reload moat", name, path, when, st,
		    st == 1 ? "" : "s");
	return true;
}

struct tick {
	const struct config *cfg;
	int64_t now;
	bool quiet;
};

/* The file the certificate named so came from. */
static const char *
path_of(const struct config *cfg, const char *name)
{
	size_t i, j;

	if (strcmp(name, "default") == 0)
		return cfg->tls.certificate != NULL ? cfg->tls.certificate :
		    "?";
	for (i = 0; i < cfg->tls.nsni; i++)
		for (j = 0; j < cfg->tls.sni[i].names.n; j++)
			if (strcmp(cfg->tls.sni[i].names.v[j], name) == 0)
				return cfg->tls.sni[i].certificate;
	return "?";
}

static void
tick_one(void *arg, const char *name, int64_t not_after)
{
	struct tick *t = arg;
	char msg[1024];

	if (not_after == 0)
		return;
	if (certwatch_note(name, path_of(t->cfg, name), not_after, t->now,
	    t->quiet, msg, sizeof(msg)))
		log_warnx("%s", msg);
}

void
certwatch_loaded(const struct tls_set *t, const struct config *cfg,
    int64_t now)
{
	struct tick tk = { cfg, now, true };

	nseen = 0;	/* names gone stay out; the rest start afresh */
	tls_set_certs(t, tick_one, &tk);
}

void
certwatch_tick(const struct tls_set *t, const struct config *cfg,
    int64_t now)
{
	struct tick tk = { cfg, now, false };

	tls_set_certs(t, tick_one, &tk);
}
