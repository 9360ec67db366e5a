/* cmdflow.h - what the SMTP and POP3 filters share on the client side. */
#ifndef MOAT_CMDFLOW_H
#define MOAT_CMDFLOW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "filter.h"

/*
 * Both filters keep one FIFO of the commands still owed a reply, in the
 * client's order (RFC 2920 pipelining, RFC 2449 for POP3), and cut the
 * client's bytes into lines with the same guards. Entry kinds are the
 * filter's own enum; two of them mean something here: a "local" entry
 * holds reply text moat wrote itself, and a "tls" entry (STARTTLS/STLS)
 * will need up to CMDFLOW_LOCAL_MAX bytes of room when it is decided.
 */
#define CMDFLOW_PENDING_MAX 64
#define CMDFLOW_PENDING_INLINE 8	/* entries kept in the filter itself */
#define CMDFLOW_LOCAL_MAX 128	/* room kept for one locally made reply */
#define CMDFLOW_LONG_LINES_MAX 3	/* over-long lines before closing */
#define CMDFLOW_SKIP_MAX (64 * 1024)	/* one line's bytes skipped at most */
#define CMDFLOW_SASL_LINE_MAX 12288	/* GSSAPI tokens are long */

struct pend {
	int kind;
	const char *local;
};

/*
 * Idle sessions are most sessions and owe one reply or none, so the FIFO
 * lives in the filter's state while it is short; a pipelined burst moves
 * it to a CMDFLOW_PENDING_MAX array on the heap, given back when the FIFO
 * empties.
 */
struct pendq {
	struct pend *big;	/* NULL: the entries are in small */
	struct pend small[CMDFLOW_PENDING_INLINE];
	size_t head, len;
	int local_kind, tls_kind;	/* the filter's two special kinds */
};

void pendq_init(struct pendq *q, int first_kind, int local_kind,
    int tls_kind);
void pendq_free(struct pendq *q);
struct pend *pendq_head(struct pendq *q);
/* Entries from pendq_head() are invalid once popped. */
void pendq_pop(struct pendq *q);
/* Callers stop reading commands before the FIFO fills (aborts if not). */
void pendq_push(struct pendq *q, int kind, const char *local);
/* Whether an entry of kind is still owed its reply. */
bool pendq_has(struct pendq *q, int kind);
/*
 * Whether one more command (and a local reply to it) fits now. False
 * also when the FIFO could not grow for lack of memory: the client waits
 * for replies to drain it, as it would at CMDFLOW_PENDING_MAX.
 */
bool pendq_room(struct pendq *q, const struct filter_io *io);
/* Bytes the run of local and tls entries from index from on will need. */
size_t pendq_locals_len(const struct pendq *q, size_t from);
/*
 * Writes the replies of the local entries at the head and pops them; a
 * tls entry at the head is popped and handed to decide(arg, io) once
 * there is room for its reply. False when one did not fit (it stays).
 */
bool pendq_drain(struct pendq *q, struct filter_io *io,
    void (*decide)(void *arg, struct filter_io *io), void *arg);

/* The client's line discipline. Zero it, then cmdflow_init(). */
struct cmdflow {
	size_t maxline;		/* listener max_line, bounded by the filter */
	int long_lines;
	bool checked;		/* the first bytes were looked at */
	bool early;		/* early talking was reported */
	bool skipping;		/* dropping the rest of an over-long line */
	size_t skipped;
};

/* What the caller's client loop does next. */
enum cmdflow_rc {
	CMDFLOW_GO = 0,		/* carry on at the new offset */
	CMDFLOW_HOLD,		/* stop here, wait for bytes or room */
	CMDFLOW_DEAD,		/* the session is closing: drop everything */
};

void cmdflow_init(struct cmdflow *f, const struct cfg_listener *lc);
/* A new cut after STARTTLS/STLS: nothing half-skipped survives it. */
void cmdflow_reset(struct cmdflow *f);

/*
 * Before any command: refuses a foreign protocol (HTTP, TLS on a
 * plaintext port) and reports a client talking before the greeting.
 * GO: go on with commands. HOLD: return *used now. DEAD: closing.
 */
enum cmdflow_rc cmdflow_gate(struct cmdflow *f, struct filter_io *io,
    const uint8_t *p, size_t len, bool eof, bool greeted, size_t *used);

/*
 * While skipping an over-long line, drops bytes up to and including its
 * LF, advancing *off; an endless one ends the session (DEAD), saying
 * endless (filter_close_saying()).
 */
enum cmdflow_rc cmdflow_skip(struct cmdflow *f, struct filter_io *io,
    const uint8_t *p, size_t len, size_t *off, const char *endless);

/*
 * Counts an over-long line: GO when the caller should answer it and go
 * on (skipping is now set), DEAD after too many (the session ends,
 * saying toomany: filter_close_saying()).
 */
enum cmdflow_rc cmdflow_long_line(struct cmdflow *f, struct filter_io *io,
    const char *toomany);

/*
 * One SASL response line at p: forwarded with CRLF, never logged, *off
 * advanced (GO). HOLD: incomplete or no room. DEAD: malformed; the
 * session ends saying bad (the backend, midway through the exchange,
 * cannot be told).
 */
enum cmdflow_rc cmdflow_sasl(struct filter_io *io, const uint8_t *p,
    size_t len, bool eof, size_t *off, const char *bad);

/*
 * Whether an AUTH command's arguments (mechanism, then maybe an initial
 * response) carry a response other than "=", the empty one (RFC 4954 4,
 * RFC 5034 4); and whether a SASL response line, terminator included, is
 * the "*" that cancels the exchange. A server that refuses an AUTH before
 * any response was sent (a mechanism it does not offer) saw no password.
 */
bool cmdflow_auth_response(const uint8_t *arg, size_t len);
bool cmdflow_sasl_cancel(const uint8_t *p, size_t len);
/*
 * Whether an AUTH command's arguments hold only printable ASCII and
 * spaces. Postfix also splits them on tabs, vertical tabs and form feeds:
 * "AUTH PLAIN<TAB>response" checks a password there, while the split at
 * spaces alone sees a mechanism without one, and the failure would go
 * uncounted. No client needs such bytes (RFC 4954 4, RFC 5034 4).
 */
bool cmdflow_auth_args_ok(const uint8_t *arg, size_t len);

/* Forwards one line and a CRLF; false when it does not fit. */
bool cmdflow_forward(struct filter_io *io, const uint8_t *p, size_t len);

#endif
