/* gen.h - a configuration generation: the config and its TLS contexts. */
#ifndef MOAT_GEN_H
#define MOAT_GEN_H

#include "config.h"
#include "tls.h"

/*
 * What sessions started under: each session keeps a reference to the
 * generation current at its accept, so a reload (a new generation) never
 * changes or frees the settings of a session already running. The last
 * unref frees the config and drops the TLS contexts. gen_ref and gen_unref
 * may run on any worker thread; a generation is never changed once built.
 */
struct gen;

/*
 * Takes ownership of cfg (freed on failure too) and builds its TLS
 * contexts, reporting problems through report. NULL on failure.
 */
struct gen *gen_new(struct config *cfg, config_report_fn *report, void *arg);
/* The same config as old with freshly loaded certificates (a reload with
 * the built-in configuration). */
struct gen *gen_new_certs(struct gen *old, config_report_fn *report,
    void *arg);
struct gen *gen_ref(struct gen *g);
void gen_unref(struct gen *g);

const struct config *gen_config(const struct gen *g);
struct tls_set *gen_tls(const struct gen *g);

#endif
