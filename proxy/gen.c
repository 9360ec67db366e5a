/* gen.c - a configuration generation: the config and its TLS contexts. */
#include "gen.h"

#include <stdlib.h>

struct gen {
	int refs;
	struct config *cfg;	/* owned unless cfg_owner is set */
	struct gen *cfg_owner;	/* the generation whose config we share */
	struct tls_set *tls;
};

struct gen *
gen_new(struct config *cfg, config_report_fn *report, void *arg)
{
	struct gen *g;

	if ((g = calloc(1, sizeof(*g))) == NULL) {
		report(arg, true, "out of memory");
		config_free(cfg);
		return NULL;
	}
	g->refs = 1;
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
		report(arg, true, "out of memory");
		return NULL;
	}
	g->refs = 1;
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
	g->refs++;
	return g;
}

void
gen_unref(struct gen *g)
{
	if (g == NULL || --g->refs > 0)
		return;
	tls_set_unref(g->tls);
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
