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
 * A backend that closes or stays silent before its greeting may be one
 * that wants a PROXY header it does not get, or that refuses the one it
 * gets: bp, the listener's backend_proxy, picks the hint for that.
 */
void backendwatch_fail(const char *listener, const struct addr_port *backend,
    const char *why, enum cfg_backend_proxy bp);
void backendwatch_ok(const char *listener, const struct addr_port *backend);

/*
 * A session of listener ended on a reply its backend sent unasked (line:
 * its first line, printable): a warning at most once a minute per
 * listener and backend, counting the sessions since. The backend is not
 * failing (it answered), so it is not listed as such. bp says which
 * hint goes with it: a backend that does not expect the PROXY header
 * moat sends answers it as a command.
 */
void backendwatch_stray(const char *listener, const struct addr_port *backend,
    const char *line, enum cfg_backend_proxy bp);

/*
 * The hint that goes with a failure why of a listener whose
 * backend_proxy is bp, or with a stray reply (why NULL): "" or text that
 * starts with "; ", naming the settings of both sides that must agree
 * on a PROXY header. Also for moat -T (backendprobe.h).
 */
const char *backendwatch_hint(const char *why, enum cfg_backend_proxy bp);

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
 * members of an array. Then those whose sessions ended on a stray reply
 * in the last 10 minutes, to human and, as another array's members, to
 * stray_json. Returns how many lines.
 */
size_t backendwatch_status(struct sbuf *human, struct sbuf *json,
    struct sbuf *stray_json, const char *label);
/* How many backends fail now. */
size_t backendwatch_failing(void);

#endif
