/* backendwatch.h - a backend that stops answering is said once as a
 * warning, with reminders and its return, not only per session. */
#ifndef MOAT_BACKENDWATCH_H
#define MOAT_BACKENDWATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "addr.h"
#include "config.h"
#include "sbuf.h"

/*
 * Each session whose backend fails has its own info line; at log_level
 * "warning" those are gone, and at info they scroll by among the others.
 * So the first failure of a listener's backend is a warning naming the
 * listener, the backend and the error; while failures go on, a reminder a
 * minute counts them; the first session whose backend greets again ends
 * it with a warning too (it closes one), saying how long and how many.
 * One that flaps gets at most a warning a minute.
 * moatctl status lists the backends failing now. Shared by every worker
 * (under a lock taken only while a backend fails). listener is copied.
 */
void backendwatch_fail(const char *listener, const struct addr_port *backend,
    const char *why);
void backendwatch_ok(const char *listener, const struct addr_port *backend);

/*
 * After a reload: a failing backend no listener of cfg has any more (the
 * listener gone or renamed, its backend moved) is forgotten, without a
 * word, so that status does not list it for good. Its sessions still
 * say what happened to them.
 */
void backendwatch_keep_only(const struct config *cfg);

/*
 * Appends the backends failing now: to human, one line each under
 * label ("backends     smtps -> 127.0.0.1:10025 failing since
 * 2026-12-05T03:00:00Z, 12 sessions: Connection refused"); to json, the
 * members of an array. Returns how many.
 */
size_t backendwatch_status(struct sbuf *human, struct sbuf *json,
    const char *label);

#endif
