/* smtp.c - the SMTP protocol filter: STARTTLS, EHLO rewriting, guards. */
#include "smtp.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmdflow.h"
#include "smtp_parse.h"

/*
 * Two cursors run over the conversation. The client side cuts the
 * client's bytes into commands (or message text after 354, or SASL
 * responses after 334) and either forwards each command or answers it
 * locally; the backend side cuts the backend's bytes into replies. Both
 * meet in one FIFO of pending commands in the order the client sent
 * them: a forwarded command waits there for its reply from the backend,
 * a locally answered one holds its reply text and is written to the
 * client only when every command before it has been answered, so the
 * client always sees replies in its own order (RFC 2920 pipelining).
 *
 * Commands that change what the next client bytes mean (DATA, AUTH,
 * STARTTLS) stop the client cursor until their reply is in: the client
 * side is then in CM_WAIT and its bytes stay unconsumed.
 */

enum pend_kind {
	PEND_GREETING = 0,
	PEND_EHLO,
	PEND_HELO,
	PEND_MAIL,
	PEND_RSET,
	PEND_DATA,
	PEND_MESSAGE,		/* the final reply to a message */
	PEND_AUTH,
	PEND_OTHER,
	PEND_INTERNAL,		/* moat's own RSET: the reply is swallowed */
	PEND_LOCAL,		/* answered by moat: text in local */
	PEND_STARTTLS,		/* accepted or refused when at the head */
};

enum client_mode {
	CM_WAIT = 0,		/* hold client bytes: a reply decides */
	CM_CMD,			/* commands */
	CM_SASL,		/* one SASL response line, after 334 */
	CM_BODY,		/* message text, after 354 */
	CM_DISCARD,		/* STARTTLS accepted: drop until the handshake */
	CM_DEAD,		/* closing: drop everything */
};

struct smtp {
	const struct cfg_listener *lc;
	enum client_mode cmode;
	struct pendq q;
	struct cmdflow flow;
	struct smtp_data data;
	bool tls;		/* the client side runs TLS */
	bool greeted;		/* the greeting went to the client */
	bool need_ehlo;		/* after STARTTLS, until EHLO/HELO succeeds */
	bool in_txn;		/* MAIL accepted, message not yet ended */
	bool authed;		/* AUTH succeeded */
	bool sasl_sent;		/* this AUTH carried a response other
				 * than "*" */
	bool rset_due;		/* moat's RSET still to be sent */
	bool ehlo_wait;		/* client bytes held for that EHLO's reply */
	/* The reply being relayed. */
	bool mid_reply;		/* lines of it were seen already */
	bool rewrite;		/* an EHLO 250 reply: capabilities rewritten */
	bool have_held;
	int held_code;
	size_t heldlen;
	/* SMTP_REPLY_MAX bytes while an EHLO reply is rewritten, else NULL:
	 * idle sessions are most sessions, and this was most of their
	 * filter's memory. */
	char *held;
};

static const char R_LONG[] = "500 5.5.2 Error: line too long\r\n";
static const char R_BADCHAR[] =
    "500 5.5.2 Error: bad characters in command\r\n";
static const char R_XCLIENT[] =
    "550 5.7.0 Error: insufficient authorization\r\n";
static const char R_BDAT[] =
    "502 5.5.1 Error: BDAT not supported (CHUNKING is not offered)\r\n";
static const char R_NEEDTLS[] =
    "530 5.7.0 Must issue a STARTTLS command first\r\n";
static const char R_NEEDEHLO[] = "503 5.5.1 Error: send EHLO first\r\n";
static const char R_TLSACTIVE[] = "503 5.5.1 Error: TLS already active\r\n";
static const char R_NOTLS[] =
    "502 5.5.1 Error: command not implemented\r\n";
static const char R_TLSSYNTAX[] = "501 5.5.4 Syntax: STARTTLS\r\n";
static const char R_TLSTXN[] =
    "503 5.5.1 Error: MAIL transaction in progress\r\n";
static const char R_TLSAUTH[] =
    "503 5.5.1 Error: STARTTLS after AUTH is not allowed\r\n";
static const char R_READY[] = "220 2.0.0 Ready to start TLS\r\n";
static const char R_TOOMANY[] =
    "421 4.7.0 Error: too many long lines, closing connection\r\n";
static const char R_ENDLESS[] =
    "421 4.7.0 Error: line too long, closing connection\r\n";
static const char R_BADREPLY[] =
    "421 4.3.0 Error: backend protocol error, closing connection\r\n";
static const char R_BADSASL[] =
    "421 4.7.0 Error: malformed authentication response, closing "
    "connection\r\n";

static void *
smtp_new(const struct cfg_listener *lc)
{
	struct smtp *s;

	if ((s = calloc(1, sizeof(*s))) == NULL)
		return NULL;
	s->lc = lc;
	s->cmode = CM_WAIT;
	s->tls = lc->tls == CFG_TLS_IMPLICIT;
	cmdflow_init(&s->flow, lc);
	pendq_init(&s->q, PEND_GREETING, PEND_LOCAL, PEND_STARTTLS);
	return s;
}

static void
smtp_free(void *state)
{
	struct smtp *s = state;

	free(s->held);
	pendq_free(&s->q);
	free(s);
}

/* --- the FIFO ---------------------------------------------------------- */

static void
starttls_decide(void *arg, struct filter_io *io)
{
	struct smtp *s = arg;

	const char *refuse = NULL;

	if (s->in_txn)
		refuse = R_TLSTXN;
	else if (s->authed)
		refuse = R_TLSAUTH;	/* RSET cannot undo the backend's AUTH */
	if (refuse != NULL) {
		(void)filter_to_client(io, refuse, strlen(refuse));
		s->cmode = CM_CMD;
		return;
	}
	(void)filter_to_client(io, R_READY, sizeof(R_READY) - 1);
	filter_starttls(io);
	s->cmode = CM_DISCARD;
}

/* Writes what moat answered itself at the head of the FIFO. */
static bool
q_drain(struct smtp *s, struct filter_io *io)
{
	return pendq_drain(&s->q, io, starttls_decide, s);
}

/* --- the backend side -------------------------------------------------- */

static bool
ieq(const uint8_t *p, size_t len, const char *word)
{
	size_t i, n = strlen(word);

	if (len != n)
		return false;
	for (i = 0; i < n; i++) {
		int c = p[i];

		if (c >= 'a' && c <= 'z')
			c -= 'a' - 'A';
		if (c != word[i])
			return false;
	}
	return true;
}

/*
 * Whether an EHLO keyword line stays. Gone always: STARTTLS (moat offers
 * its own), XCLIENT and XFORWARD (only moat may use them), CHUNKING and
 * BINARYMIME (BDAT is not relayed: the smuggling guard checks DATA
 * only). AUTH goes too before TLS when the listener requires TLS.
 */
static bool
ehlo_keep(const struct smtp *s, const uint8_t *text, size_t len)
{
	size_t k;

	for (k = 0; k < len && text[k] != ' ' && text[k] != '='; k++)
		;
	if (ieq(text, k, "STARTTLS") || ieq(text, k, "XCLIENT") ||
	    ieq(text, k, "XFORWARD") || ieq(text, k, "CHUNKING") ||
	    ieq(text, k, "BINARYMIME"))
		return false;
	if (ieq(text, k, "AUTH") && s->lc->require_tls && !s->tls)
		return false;
	return true;
}

static void
emit_line(struct filter_io *io, int code, bool last, const void *text,
    size_t len)
{
	char pre[5];

	snprintf(pre, sizeof(pre), "%03d%c", code, last ? ' ' : '-');
	/* The caller checked the room for all three. */
	(void)filter_to_client(io, pre, 4);
	(void)filter_to_client(io, text, len);
	(void)filter_to_client(io, "\r\n", 2);
}

static void
hold_line(struct smtp *s, struct filter_io *io, int code, const void *text,
    size_t len)
{
	if (s->have_held)
		emit_line(io, s->held_code, false, s->held, s->heldlen);
	memcpy(s->held, text, len);
	s->heldlen = len;
	s->held_code = code;
	s->have_held = true;
}

static void
auth_verdict(struct filter_io *io, const struct smtp_reply_line *r)
{
	/* RFC 4954: 235 success; 454/4xx temporary; 535 bad credentials,
	 * 534/538 and other 5.7.x policy refusals permanent. A 5.5.x
	 * syntax or sequence error is not a password guess, nor is 501,
	 * the answer to a client's "*" cancel (Postfix: 501 5.7.0). */
	if (r->code / 100 == 2)
		filter_signal(io, FILTER_SIG_AUTH_OK, "smtp_auth");
	else if (r->code / 100 == 4)
		filter_signal(io, FILTER_SIG_AUTH_TEMPFAIL, "smtp_auth");
	else if (r->code == 535 || r->code == 534 || r->code == 538 ||
	    (r->code != 501 && r->textlen >= 4 &&
	    memcmp(r->text, "5.7.", 4) == 0))
		filter_signal(io, FILTER_SIG_AUTH_FAIL, "smtp_auth");
}

/* A reply is complete: what it means for the command at the head. */
static void
reply_done(struct smtp *s, struct filter_io *io,
    const struct smtp_reply_line *r)
{
	struct pend *e = pendq_head(&s->q);
	bool ok = r->code / 100 == 2;

	if (e == NULL) {
		/* unsolicited (421 on timeout): relayed, and the last */
		filter_close(io, "backend_closing");
		return;
	}
	switch (e->kind) {
	case PEND_GREETING:
		s->greeted = true;
		if (s->cmode == CM_WAIT)
			s->cmode = CM_CMD;
		break;
	case PEND_EHLO:
	case PEND_HELO:
		if (ok) {
			s->need_ehlo = false;
			s->in_txn = false;
		}
		if (s->ehlo_wait && s->cmode == CM_WAIT)
			s->cmode = CM_CMD;
		s->ehlo_wait = false;
		break;
	case PEND_MAIL:
		if (ok)
			s->in_txn = true;
		break;
	case PEND_RSET:
		if (ok)
			s->in_txn = false;
		break;
	case PEND_DATA:
		if (r->code == 354) {
			smtp_data_init(&s->data);
			s->cmode = CM_BODY;
		} else {
			s->cmode = CM_CMD;
		}
		break;
	case PEND_MESSAGE:
		s->in_txn = false;
		break;
	case PEND_AUTH:
		if (r->code == 334) {
			s->cmode = CM_SASL;
			return;		/* the exchange goes on */
		}
		/* Postfix refuses a mechanism it does not offer with 535
		 * 5.7.8, as it does a wrong password: nothing was tried. */
		if (ok || s->sasl_sent)
			auth_verdict(io, r);
		s->sasl_sent = false;
		if (ok)
			s->authed = true;
		s->cmode = CM_CMD;
		break;
	case PEND_OTHER:
	case PEND_INTERNAL:
	case PEND_LOCAL:
	case PEND_STARTTLS:
		break;
	}
	pendq_pop(&s->q);
}

/*
 * Relays one reply line; false when it does not fit yet (nothing was
 * written then). Local replies queued behind a final line must fit too,
 * or nothing would ever write them.
 */
static bool
reply_line(struct smtp *s, struct filter_io *io, const uint8_t *p,
    const struct smtp_reply_line *r)
{
	struct pend *e = pendq_head(&s->q);
	size_t need = r->consumed + 2;

	if (!s->mid_reply)
		s->rewrite = e != NULL && e->kind == PEND_EHLO &&
		    r->code == 250;
	if (s->rewrite)
		need += s->heldlen + 32 + (r->last ? 32 : 0);
	if (r->last)
		need += pendq_locals_len(&s->q, 1);
	if (filter_room_client(io) < need)
		return false;
	if (s->rewrite && s->held == NULL &&
	    (s->held = malloc(SMTP_REPLY_MAX)) == NULL) {
		filter_close(io, "out_of_memory");
		return false;
	}
	if (e != NULL && e->kind == PEND_INTERNAL && r->code != 421) {
		/* Swallowed: the client never sent it. A 421 (the backend
		 * shutting down, RFC 5321 3.8) is passed on, or the client
		 * would see its connection end without a word. */
	} else if (!s->rewrite) {
		(void)filter_to_client(io, p, r->consumed);
	} else {
		/* The first line is the server's name; then keywords. */
		if (!s->mid_reply || ehlo_keep(s, r->text, r->textlen))
			hold_line(s, io, r->code, r->text, r->textlen);
		if (r->last) {
			if (s->lc->tls == CFG_TLS_STARTTLS && !s->tls)
				hold_line(s, io, 250, "STARTTLS", 8);
			emit_line(io, s->held_code, true, s->held,
			    s->heldlen);
			s->have_held = false;
			s->heldlen = 0;
			free(s->held);
			s->held = NULL;
		}
	}
	s->mid_reply = !r->last;
	if (r->last) {
		if (e == NULL)	/* a 421 unasked, relayed whole now */
			filter_stray_reply(io, p, r->consumed, true);
		reply_done(s, io, r);
		(void)q_drain(s, io);
	}
	return true;
}

/*
 * A reply no command asked for, at line p. RFC 5321 3.8 lets a server
 * say 421 as it closes (Postfix on its timeout), which goes on to the
 * client, and the session ends behind it (reply_done()): a backend that
 * said it and stayed would leave the client taking the next reply for
 * the answer to its next command. Anything else would be read so at
 * once, and the two would stay out of step, with AUTH verdicts counted
 * against the wrong commands. After STARTTLS was accepted even the 421
 * must not follow the plaintext "220 Ready to start TLS". True when the
 * session ends for it now.
 */
static bool
unsolicited(struct smtp *s, struct filter_io *io, const uint8_t *p,
    const struct smtp_reply_line *r)
{
	if (pendq_head(&s->q) != NULL || s->mid_reply ||
	    (r->code == 421 && s->cmode != CM_DISCARD))
		return false;
	filter_stray_reply(io, p, r->consumed, false);
	filter_close_saying(io, R_BADREPLY, "backend_unsolicited");
	s->cmode = CM_DEAD;
	return true;
}

static size_t
smtp_backend(void *state, struct filter_io *io, const uint8_t *p,
    size_t len, bool eof)
{
	struct smtp *s = state;
	struct smtp_reply_line r;
	enum smtp_parse_rc rc;
	size_t off = 0;

	if (s->cmode == CM_DEAD)
		return len;
	while (off < len) {
		if (filter_closing(io)) {
			/* Banned by what came before (filter.h). */
			s->cmode = CM_DEAD;
			return len;
		}
		if (!q_drain(s, io))
			break;
		rc = smtp_reply_parse(p + off, len - off, SMTP_REPLY_MAX, &r);
		if (rc == SMTP_PARSE_AGAIN) {
			if (eof)
				off = len;	/* a torn last line */
			break;
		}
		if (rc == SMTP_PARSE_ERROR) {
			if (!s->greeted)
				filter_bad_greeting(io, p + off, len - off);
			filter_close_saying(io, R_BADREPLY,
			    "backend_bad_reply");
			s->cmode = CM_DEAD;
			return len;
		}
		if (unsolicited(s, io, p + off, &r))
			return len;
		if (!reply_line(s, io, p + off, &r))
			break;
		off += r.consumed;
	}
	return off;
}

/* --- the client side --------------------------------------------------- */

static void
answer(struct smtp *s, struct filter_io *io, const char *reply)
{
	pendq_push(&s->q, PEND_LOCAL, reply);
	(void)q_drain(s, io);
}

static enum pend_kind
pend_kind_of(enum smtp_verb v)
{
	switch (v) {
	case SMTP_VERB_EHLO:
		return PEND_EHLO;
	case SMTP_VERB_HELO:
		return PEND_HELO;
	case SMTP_VERB_MAIL:
		return PEND_MAIL;
	case SMTP_VERB_RSET:
		return PEND_RSET;
	case SMTP_VERB_DATA:
		return PEND_DATA;
	case SMTP_VERB_AUTH:
		return PEND_AUTH;
	default:
		return PEND_OTHER;
	}
}

/* One command line; false when it must wait for room. */
static bool
command(struct smtp *s, struct filter_io *io, const struct smtp_line *l)
{
	struct smtp_cmd c;
	bool plain_ok;

	if (smtp_cmd_parse(l->p, l->len, &c) == SMTP_PARSE_ERROR) {
		filter_signal(io, FILTER_SIG_GLITCH, "bad_command");
		answer(s, io, R_BADCHAR);
		return true;
	}
	switch (c.verb) {
	case SMTP_VERB_STARTTLS:
		if (s->tls)
			answer(s, io, R_TLSACTIVE);
		else if (s->lc->tls != CFG_TLS_STARTTLS)
			answer(s, io, R_NOTLS);
		else if (c.arglen > 0)
			answer(s, io, R_TLSSYNTAX);
		else {
			pendq_push(&s->q, PEND_STARTTLS, NULL);
			s->cmode = CM_WAIT;
			(void)q_drain(s, io);
		}
		return true;
	case SMTP_VERB_XCLIENT:
	case SMTP_VERB_XFORWARD:
		filter_signal(io, FILTER_SIG_GLITCH, "client_xclient");
		answer(s, io, R_XCLIENT);
		return true;
	case SMTP_VERB_BDAT:
		answer(s, io, R_BDAT);
		return true;
	case SMTP_VERB_AUTH:
	case SMTP_VERB_MAIL:
		if (s->lc->require_tls && !s->tls) {
			answer(s, io, R_NEEDTLS);
			return true;
		}
		if (c.verb == SMTP_VERB_AUTH &&
		    !cmdflow_auth_args_ok(c.arg, c.arglen)) {
			filter_signal(io, FILTER_SIG_GLITCH, "bad_command");
			answer(s, io, R_BADCHAR);
			return true;
		}
		break;
	default:
		break;
	}
	/* RFC 3207 4.2: after TLS the client starts again with EHLO. */
	plain_ok = c.verb == SMTP_VERB_EHLO || c.verb == SMTP_VERB_HELO ||
	    c.verb == SMTP_VERB_NOOP || c.verb == SMTP_VERB_RSET ||
	    c.verb == SMTP_VERB_QUIT || c.verb == SMTP_VERB_HELP;
	if (s->need_ehlo && !plain_ok) {
		answer(s, io, R_NEEDEHLO);
		return true;
	}
	if (!cmdflow_forward(io, l->p, l->len))
		return false;
	pendq_push(&s->q, pend_kind_of(c.verb), NULL);
	if (c.verb == SMTP_VERB_AUTH)
		s->sasl_sent = cmdflow_auth_response(c.arg, c.arglen);
	if (c.verb == SMTP_VERB_DATA || c.verb == SMTP_VERB_AUTH)
		s->cmode = CM_WAIT;
	/*
	 * Whether the first EHLO after TLS succeeds decides what may follow
	 * it (need_ehlo): commands pipelined behind it wait for its reply
	 * instead of being refused as if the client had sent no EHLO.
	 */
	if (s->need_ehlo && (c.verb == SMTP_VERB_EHLO ||
	    c.verb == SMTP_VERB_HELO)) {
		s->ehlo_wait = true;
		s->cmode = CM_WAIT;
	}
	return true;
}

static void
smuggling(struct smtp *s, struct filter_io *io, enum smtp_data_why why)
{
	char msg[160];
	const char *what = why == SMTP_DATA_BARE_LF ? "bare LF" :
	    why == SMTP_DATA_BARE_CR ? "bare CR" : "NUL byte";

	/*
	 * Everything forwarded of this message so far was whole CRLF lines
	 * (and maybe a clean partial line) without an end of data: dropping
	 * the backend connection now makes it discard the message.
	 */
	filter_signal(io, FILTER_SIG_SMUGGLING, smtp_data_why_str(why));
	filter_abort_backend(io);
	snprintf(msg, sizeof(msg), "554 5.6.0 Message rejected: %s in "
	    "message (SMTP smuggling guard)\r\n", what);
	(void)filter_to_client(io, msg, strlen(msg));
	filter_close(io, "smuggling");
	s->cmode = CM_DEAD;
}

/* Message text; returns the bytes consumed. */
static size_t
body(struct smtp *s, struct filter_io *io, const uint8_t *p, size_t len,
    bool eof)
{
	size_t room = filter_room_backend(io), lim, n;
	enum smtp_data_why why;
	enum smtp_parse_rc rc;

	lim = len < room ? len : room;
	rc = smtp_data_scan(&s->data, p, lim, &n, &why);
	if (rc == SMTP_PARSE_ERROR) {
		smuggling(s, io, why);
		return len;
	}
	if (n > 0)
		(void)filter_to_backend(io, p, n);
	if (rc == SMTP_PARSE_OK) {
		pendq_push(&s->q, PEND_MESSAGE, NULL);
		s->cmode = CM_CMD;	/* pipelining may go on */
		return n;
	}
	if (n == 0 && eof && lim == len)
		return len;	/* a lone CR at the end of the stream */
	return n;
}

static bool
long_line(struct smtp *s, struct filter_io *io)
{
	if (cmdflow_long_line(&s->flow, io, R_TOOMANY) == CMDFLOW_DEAD) {
		s->cmode = CM_DEAD;
		return false;
	}
	answer(s, io, R_LONG);
	return true;
}

static size_t
smtp_client(void *state, struct filter_io *io, const uint8_t *p, size_t len,
    bool eof)
{
	struct smtp *s = state;
	struct smtp_line l;
	enum smtp_parse_rc rc;
	enum cmdflow_rc fr;
	size_t off = 0, n, start;

	if (s->cmode == CM_DEAD || s->cmode == CM_DISCARD)
		return len;	/* never forwarded, never answered */
	switch (cmdflow_gate(&s->flow, io, p, len, eof, s->greeted, &off)) {
	case CMDFLOW_GO:
		break;
	case CMDFLOW_HOLD:
		return off;
	case CMDFLOW_DEAD:
		s->cmode = CM_DEAD;
		return len;
	}
	if (s->rset_due) {
		if (!cmdflow_forward(io, (const uint8_t *)"RSET", 4))
			return 0;
		pendq_push(&s->q, PEND_INTERNAL, NULL);
		s->rset_due = false;
	}
	while (off < len) {
		if (filter_closing(io)) {
			/* Banned by what came before (filter.h). */
			s->cmode = CM_DEAD;
			return len;
		}
		if (!q_drain(s, io))
			break;
		if (s->cmode == CM_BODY) {
			if ((n = body(s, io, p + off, len - off, eof)) == 0)
				break;
			off += n;
			continue;
		}
		if (s->cmode != CM_CMD && s->cmode != CM_SASL)
			break;
		if (s->flow.skipping) {
			fr = cmdflow_skip(&s->flow, io, p, len, &off,
			    R_ENDLESS);
			if (fr == CMDFLOW_DEAD)
				s->cmode = CM_DEAD;
			if (fr != CMDFLOW_GO)
				break;
			continue;
		}
		/* Room for a local reply, and for its FIFO entry. */
		if (!pendq_room(&s->q, io))
			break;
		if (s->cmode == CM_SASL) {
			/* A SASL response: forwarded, never logged. */
			start = off;
			fr = cmdflow_sasl(io, p, len, eof, &off, R_BADSASL);
			if (fr == CMDFLOW_DEAD) {
				s->cmode = CM_DEAD;
				return len;
			}
			if (fr == CMDFLOW_HOLD)
				break;
			s->sasl_sent |= !cmdflow_sasl_cancel(p + start,
			    off - start);
			s->cmode = CM_WAIT;
			continue;
		}
		rc = smtp_line_parse(p + off, len - off, s->flow.maxline, &l);
		if (rc == SMTP_PARSE_AGAIN) {
			if (eof)
				off = len;	/* a torn last command */
			break;
		}
		if (rc == SMTP_PARSE_ERROR) {
			if (!long_line(s, io))
				return len;
			off += s->flow.maxline;
			continue;
		}
		if (!command(s, io, &l))
			break;
		off += l.consumed;
	}
	return off;
}

static void
smtp_tls_started(void *state, struct filter_io *io)
{
	struct smtp *s = state;

	(void)io;
	/*
	 * RFC 3207 4.2: forget what the client said before. The backend
	 * saw that client's EHLO; STARTTLS was only accepted outside a
	 * transaction and before AUTH, so an RSET plus the EHLO that moat
	 * insists on (need_ehlo) leave it where a fresh session would be.
	 */
	s->tls = true;
	s->need_ehlo = true;
	s->in_txn = false;
	cmdflow_reset(&s->flow);
	s->cmode = CM_CMD;
	s->rset_due = true;
}

/* Replies still owed: once the client's queue is empty (when the
 * session asks), what is left of them comes from the backend. */
static bool
smtp_awaiting(void *state)
{
	struct smtp *s = state;

	return s->q.len > 0;
}

/* An AUTH with a response (initial or after a 334) awaits its verdict. */
static bool
smtp_verdict_owed(void *state)
{
	struct smtp *s = state;

	return s->sasl_sent;
}

/* No reply is relayed in part (mid_reply, an EHLO reply held for its
 * rewriting), and the client waits for no TLS handshake instead. */
static bool
smtp_between_replies(void *state)
{
	struct smtp *s = state;

	return !s->mid_reply && s->cmode != CM_DISCARD && s->cmode != CM_DEAD;
}

const struct filter_ops filter_smtp = {
	.name = "smtp",
	.new = smtp_new,
	.client_data = smtp_client,
	.backend_data = smtp_backend,
	.tls_started = smtp_tls_started,
	.awaiting = smtp_awaiting,
	.verdict_owed = smtp_verdict_owed,
	.between_replies = smtp_between_replies,
	.free = smtp_free,
};
