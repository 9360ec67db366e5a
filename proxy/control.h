/* control.h - the control socket that moatctl talks to. */
#ifndef MOAT_CONTROL_H
#define MOAT_CONTROL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

struct ev_loop;
struct gen;
struct control;

/*
 * What the control socket and the metrics endpoint ask of the running
 * daemon. The server fills it in and keeps it alive while either runs.
 *   gen        the generation new sessions start under (config, TLS)
 *   sessions   sessions open now
 *   listener   the i-th listening socket: its [[listener]] and address;
 *              false past the last
 *   worker     the i-th worker (event-loop thread): sessions open and
 *              connections accepted; false past the last
 *   reload     the SIGHUP reload; every diagnostic goes to report as
 *              well as to the log; 0 when the new config is in force, -1
 *              when the old one stays
 *   reopen     reopens the events file (logrotate); 0 when done or when
 *              there is no file, -1 when the file cannot be opened and
 *              the old one stays in use (the reason is logged)
 */
struct control_server {
	void *arg;
	const struct gen *(*gen)(void *arg);
	size_t (*sessions)(void *arg);
	bool (*listener)(void *arg, size_t i, const struct cfg_listener **lc,
	    const struct addr_port **ap);
	bool (*worker)(void *arg, size_t i, size_t *sessions,
	    uint64_t *accepted);
	int (*reload)(void *arg, config_report_fn *report, void *rarg);
	int (*reopen)(void *arg);
};

/*
 * Creates the unix socket at path (mode 0600; its directory is made with
 * mode 0750 when missing), unlinking a stale socket but refusing when
 * another process answers on it, and starts serving on loop. srv is
 * borrowed. Returns NULL with a message in err.
 *
 * Protocol (one request at a time per connection, many connections):
 *   request   = [ "json" SP ] command *( SP arg ) LF     ; <= 1024 bytes
 *   response  = ( "ok" / "error" SP message ) LF *data-line "." LF
 * Data lines never consist of a single "."; with "json" the data is one
 * JSON object per response. "tail" answers "ok" and then streams one
 * line per event (JSON lines with "json") until the client hangs up.
 */
struct control *control_open(struct ev_loop *loop, const char *path,
    const struct control_server *srv, char *err, size_t errlen);

/*
 * What control_open() would refuse before it binds, for moat -t: a
 * directory in path that is a file, or a file at path that is not a
 * socket. A socket there passes, live or stale: -t is run beside the
 * moat it checks a reload for. Returns 0, or -1 with a message in err.
 */
int control_check(const char *path, char *err, size_t errlen);
/* Closes every client and removes the socket file. NULL is fine. */
void control_close(struct control *c);

#endif
