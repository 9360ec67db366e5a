/* pop3_parse.h - pure, incremental POP3 command, status and body parsers. */
#ifndef MOAT_POP3_PARSE_H
#define MOAT_POP3_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Like smtp_parse.h: views into the caller's bytes, valid until they
 * change; no allocation, no I/O.
 */
enum pop3_parse_rc {
	POP3_PARSE_OK = 0,
	POP3_PARSE_AGAIN,
	POP3_PARSE_ERROR,
};

struct pop3_line {
	const uint8_t *p;	/* content without CRLF / LF */
	size_t len;
	size_t consumed;	/* with the terminator */
};

/* The first line of p, at most max bytes with its LF; ERROR when no LF
 * is among the first max bytes. */
enum pop3_parse_rc pop3_line_parse(const uint8_t *p, size_t len, size_t max,
    struct pop3_line *l);

enum pop3_verb {
	POP3_VERB_OTHER = 0,
	POP3_VERB_USER,
	POP3_VERB_PASS,
	POP3_VERB_APOP,
	POP3_VERB_AUTH,
	POP3_VERB_STLS,
	POP3_VERB_CAPA,
	POP3_VERB_QUIT,
	POP3_VERB_STAT,
	POP3_VERB_LIST,
	POP3_VERB_RETR,
	POP3_VERB_DELE,
	POP3_VERB_NOOP,
	POP3_VERB_RSET,
	POP3_VERB_TOP,
	POP3_VERB_UIDL,
	POP3_VERB_XCLIENT,	/* Dovecot: a trusted proxy names the client */
};

struct pop3_cmd {
	enum pop3_verb verb;
	const uint8_t *arg;	/* after the keyword and its spaces */
	size_t arglen;
};

/* Classifies a command line; ERROR when it holds a CR or a NUL, starts
 * with a space, or its keyword holds a tab or another control byte. */
enum pop3_parse_rc pop3_cmd_parse(const uint8_t *p, size_t len,
    struct pop3_cmd *cmd);

enum pop3_status_kind {
	POP3_STATUS_OK = 0,	/* +OK */
	POP3_STATUS_ERR,	/* -ERR */
	POP3_STATUS_CONT,	/* "+ " or "+": a SASL challenge */
};

struct pop3_status {
	enum pop3_status_kind kind;
	const uint8_t *code;	/* inside "[...]" (RFC 2449 8), or NULL */
	size_t codelen;
	size_t consumed;
};

/* The status line at p, bounded by max; ERROR when it is none of the
 * three or too long. */
enum pop3_parse_rc pop3_status_parse(const uint8_t *p, size_t len,
    size_t max, struct pop3_status *st);

/*
 * The body of a multi-line response (RFC 1939 3), relayed as data: only
 * its end, a line holding a single dot, is looked for, so body lines of
 * any length pass. Dot-stuffed lines ("..x") do not end it. Init at the
 * start of each body (just after the status line).
 */
struct pop3_multi {
	int st;
};

void pop3_multi_init(struct pop3_multi *m);
/* OK: the body ends at p + *n (terminator included); AGAIN: all len
 * bytes belong to it (*n == len). */
enum pop3_parse_rc pop3_multi_scan(struct pop3_multi *m, const uint8_t *p,
    size_t len, size_t *n);

#endif
