/* backendprobe.h - moat -T: each listener's backend met as a session
 * meets it, before any client does. */
#ifndef MOAT_BACKENDPROBE_H
#define MOAT_BACKENDPROBE_H

#include <stdio.h>

#include "config.h"

/*
 * moat -t cannot see whether a backend expects the PROXY header moat
 * sends, or lets moat use XCLIENT: a mismatch shows only once clients
 * come, each of their sessions ending. For each listener this connects
 * to its backend within timeouts.connect, sends what a session sends
 * first (the PROXY header with this connection's own addresses; for
 * "xclient", EHLO and a look for XCLIENT in the reply), reads the
 * greeting, waits half a second for a reply nobody asked for (the
 * answer to a header taken for a command), says QUIT and hangs up. One
 * line per listener to out, with the same hints as the running moat's
 * warnings. Returns how many backends failed.
 */
int backendprobe_run(const struct config *cfg, FILE *out);

#endif
