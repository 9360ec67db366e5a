/* server.h - the running daemon: listeners, sessions, signals, reload. */
#ifndef MOAT_SERVER_H
#define MOAT_SERVER_H

#include "config.h"

/*
 * Runs the daemon in the foreground until SIGTERM/SIGINT has drained it.
 * Takes ownership of cfg. config_path is re-read on SIGHUP (NULL when the
 * embedded default is in use: a reload then only reloads certificates).
 * Returns the process exit code.
 */
int server_run(struct config *cfg, const char *config_path);

/*
 * Holds SIGHUP, SIGUSR1, SIGTERM and SIGINT until server_run() has its
 * handlers: call it first thing, before the config is read. Loading a
 * large config or its lists takes a while, and a `systemctl reload` or a
 * logrotate right after the start would otherwise kill moat silently with
 * the default action (systemd does not restart after a SIGHUP death).
 * Held signals are handled once the event loop runs.
 */
void server_hold_signals(void);

/*
 * The checks of `moat -t` that need more than the config file itself:
 * builds every TLS context (certificate chain, key match, SNI entries).
 * Reports problems through config_report_fn-style lines on stderr.
 * Returns 0 when everything would start.
 */
int server_check(const struct config *cfg);

/*
 * A config_report_fn for the log: a start's and a reload's findings carry
 * the priority prefix journald reads (warnings and errors at warning
 * level), where moat -t prints them bare (config_report_stderr).
 */
void server_report_log(void *arg, enum config_severity sev,
    const char *line);

#endif
