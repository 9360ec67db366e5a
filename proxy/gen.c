/* gen.c - a configuration generation: the config and its TLS contexts. */
#include "gen.h"

#include <stdatomic.h>
#include <stdlib.h>

/*
 * Sessions on every worker thread take and drop references, and the last
 * one may go on any of them: the count is atomic, and the release of the
 * last reference orders every use of the generation before its free.
 */
struct gen {
	atomic_int refs;
	struct config *cfg;	/* owned unless cfg_owner is set */
	struct gen *cfg_owner;	/* the generation whose config we share */
	struct tls_set *tls;
};

struct gen *
gen_new(struct config *cfg, config_report_fn *report, void *arg)
{
	struct gen *g;

	if ((g = calloc(1, sizeof(*g))) == NULL) {
		report(arg, CONFIG_ERROR, "out of memory");
		config_free(cfg);
		return NULL;
	}
	atomic_init(&g->refs, 1);
	g->cfg = cfg;
	if ((g->tls = tls_set_new(cfg, report, arg)) == NULL) {
		config_free(cfg);
		free(g);
		return NULL;
	}
	return g;
}

struct gen *
gen_new_certs(struct gen *old, config_report_fn *report, void *arg)
{
	struct gen *g;

	if ((g = calloc(1, sizeof(*g))) == NULL) {
		report(arg, CONFIG_ERROR, "out of memory");
		return NULL;
	}
	atomic_init(&g->refs, 1);
	g->cfg = old->cfg;
	if ((g->tls = tls_set_new(g->cfg, report, arg)) == NULL) {
		free(g);
		return NULL;
	}
	/* Share the owner itself, so chains of reloads stay one deep. */
	g->cfg_owner = gen_ref(old->cfg_owner ? old->cfg_owner : old);
	return g;
}

struct gen *
gen_ref(struct gen *g)
{
	atomic_fetch_add_explicit(&g->refs, 1, memory_order_relaxed);
	return g;
}

void
gen_unref(struct gen *g)
{
	if (g == NULL || atomic_fetch_sub_explicit(&g->refs, 1,
	    memory_order_acq_rel) > 1)
		return;
	tls_set_free(g->tls);
	if (g->cfg_owner != NULL)
		gen_unref(g->cfg_owner);
	else
		config_free(g->cfg);
	free(g);
}

const struct config *
gen_config(const struct gen *g)
{
	return g->cfg;
}

struct tls_set *
gen_tls(const struct gen *g)
{
	return g->tls;
}
