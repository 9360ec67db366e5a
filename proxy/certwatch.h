/* certwatch.h - a certificate that nears its end while moat runs is said
 * in the log then, not only at the start and at reloads. */
#ifndef MOAT_CERTWATCH_H
#define MOAT_CERTWATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "tls.h"

/*
 * The check, the start and each reload warn of a certificate that has
 * less than 14 days left (tls.c); a moat that runs for months would say
 * nothing more while the renewal fails. certwatch_loaded(), at the start
 * and after each reload, notes where each certificate stands without a
 * word, as loading said it; certwatch_tick() runs every few seconds on
 * the main thread: a warning when one crosses into its last 14 days,
 * then one a day while the days left go down, one when less than a day
 * is left, one when it has expired.
 */
void certwatch_loaded(const struct tls_set *t, const struct config *cfg,
    int64_t now);
void certwatch_tick(const struct tls_set *t, const struct config *cfg,
    int64_t now);

/*
 * The decision, apart for tests: what is said of certificate name (file
 * path) ending at not_after, seen at now. Returns true with the warning
 * in msg when it crossed a mark since name was last seen; quiet notes
 * where it stands without a word.
 */
bool certwatch_note(const char *name, const char *path, int64_t not_after,
    int64_t now, bool quiet, char *msg, size_t len);

#endif
