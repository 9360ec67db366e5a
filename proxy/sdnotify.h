/* sdnotify.h - telling systemd (Type=notify) that moat runs or stops. */
#ifndef MOAT_SDNOTIFY_H
#define MOAT_SDNOTIFY_H

/*
 * Sends state ("READY=1", "STOPPING=1") as one datagram to the socket
 * that $NOTIFY_SOCKET names (a path, or @ for an abstract name), as
 * sd_notify(3) does; without that variable, nothing. A failure is
 * logged, never fatal: systemd then judges by its own timeouts.
 */
void sdnotify(const char *state);

#endif
