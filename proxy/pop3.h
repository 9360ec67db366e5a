/* pop3.h - the POP3 protocol filter: STLS, CAPA rewriting, guards. */
#ifndef MOAT_POP3_H
#define MOAT_POP3_H

#include "filter.h"

/*
 * The filter for protocol = "pop3" listeners of every tls mode: relays
 * the greeting, matches responses to pipelined commands (RFC 2449
 * PIPELINING), passes multi-line bodies (RETR, TOP, LIST, UIDL, CAPA,
 * AUTH) through as data, rewrites CAPA, answers STLS and the require_tls
 * refusals itself, bounds command lines, and reports auth results and
 * glitches through filter_signal().
 */
extern const struct filter_ops filter_pop3;

/* Longest backend status line (terminator included). */
#define POP3_REPLY_MAX 4096
/* Pipelining, line and skip bounds: cmdflow.h (shared with SMTP). */

#endif
