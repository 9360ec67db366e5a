/* smtp.h - the SMTP protocol filter: STARTTLS, EHLO rewriting, guards. */
#ifndef MOAT_SMTP_H
#define MOAT_SMTP_H

#include "filter.h"

/*
 * The filter for protocol = "smtp" listeners of every tls mode. It relays
 * the backend's greeting, matches replies to pipelined commands (RFC
 * 2920), rewrites the EHLO capability list, answers STARTTLS, XCLIENT,
 * XFORWARD, BDAT and the require_tls refusals itself, checks the DATA
 * stream line by line against smuggling, bounds command and reply lines,
 * and reports auth results and glitches through filter_signal().
 */
extern const struct filter_ops filter_smtp;

/* Longest backend reply line (terminator included). */
#define SMTP_REPLY_MAX 4096
/* Pipelining, line and skip bounds: cmdflow.h (shared with POP3). */

#endif
