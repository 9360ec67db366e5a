/* pop3.c - the POP3 protocol filter: STLS, CAPA rewriting, guards. */
#include "pop3.h"

#include <stdlib.h>
#include <string.h>

#include "cmdflow.h"
#include "pop3_parse.h"
#include "smtp_parse.h"

/*
 * The same two cursors and FIFO as smtp.c: commands are forwarded or
 * answered locally, and every response (forwarded or local) reaches the
 * client in the order of its command. A response is a status line, and
 * for some commands with +OK a body up to a line holding a single dot.
 */

enum pend_kind {
	PEND_GREETING = 0,
	PEND_USER,
	PEND_PASS,
	PEND_APOP,
	PEND_AUTH,		/* AUTH mechanism: SASL may follow */
	PEND_MULTI,		/* +OK has a body: LIST, UIDL, RETR, TOP, AUTH */
	PEND_CAPA,		/* +OK has a body, rewritten */
	PEND_OTHER,
	PEND_LOCAL,
	PEND_STLS,		/* accepted or refused when at the head */
};

enum client_mode {
	CM_WAIT = 0,
	CM_CMD,
	CM_SASL,
	CM_DISCARD,
	CM_DEAD,
};

enum body_mode {
	BODY_NONE = 0,
	BODY_DATA,		/* scanned for its end only */
	BODY_CAPA,		/* line by line, rewritten */
};

struct pop3 {
	const struct cfg_listener *lc;
	enum client_mode cmode;
	enum body_mode body;
	struct pop3_multi multi;
	struct pendq q;
	struct cmdflow flow;
	bool tls;
	bool greeted;
	bool authed;
	bool user_seen;		/* a USER went out since the last PASS or
				 * STLS */
	bool sasl_cancel;	/* the last SASL response was "*" */
	bool sasl_sent;		/* this AUTH carried a response other
				 * than "*" */
};

/*
 * require_tls refusals follow RFC 3206 section 4, the AUTH response code
 * ("an attempt to authenticate in violation of policy"), as Dovecot's
 * disable_plaintext_auth does; RFC 2595 4 has the server refuse until
 * STLS. No [PRIVACY] code is registered for POP3 (RFC 2449 8 registry).
 */
static const char R_NEEDTLS[] =
    "-ERR [AUTH] Plaintext authentication disallowed, issue STLS first\r\n";
static const char R_LONG[] = "-ERR line too long\r\n";
static const char R_TOOMANY[] =
    "-ERR too many long lines, closing connection\r\n";
static const char R_ENDLESS[] =
    "-ERR line too long, closing connection\r\n";
static const char R_BADCHAR[] = "-ERR bad characters in command\r\n";
static const char R_TLSACTIVE[] =
    "-ERR Command not permitted when TLS active\r\n";
static const char R_NOTLS[] = "-ERR STLS not available\r\n";
static const char R_TLSSTATE[] =
    "-ERR STLS only permitted in AUTHORIZATION state\r\n";
static const char R_READY[] = "+OK Begin TLS negotiation\r\n";
static const char R_NOUSER[] = "-ERR No username given\r\n";
static const char R_XCLIENT[] = "-ERR insufficient authorization\r\n";
static const char R_BADREPLY[] =
    "-ERR [SYS/TEMP] backend protocol error, closing connection\r\n";
static const char R_BADSASL[] =
    "-ERR malformed authentication response, closing connection\r\n";

static void *
pop3_new(const struct cfg_listener *lc)
{
	struct pop3 *s;

	if ((s = calloc(1, sizeof(*s))) == NULL)
		return NULL;
	s->lc = lc;
	s->cmode = CM_WAIT;
	s->tls = lc->tls == CFG_TLS_IMPLICIT;
	cmdflow_init(&s->flow, lc);
	pendq_init(&s->q, PEND_GREETING, PEND_LOCAL, PEND_STLS);
	return s;
}

static void
pop3_free(void *state)
{
	struct pop3 *s = state;

	pendq_free(&s->q);
	free(s);
}

static void
stls_decide(void *arg, struct filter_io *io)
{
	struct pop3 *s = arg;

	if (s->authed) {
		(void)filter_to_client(io, R_TLSSTATE, sizeof(R_TLSSTATE) - 1);
		s->cmode = CM_CMD;
		return;
	}
	(void)filter_to_client(io, R_READY, sizeof(R_READY) - 1);
	filter_starttls(io);
	s->cmode = CM_DISCARD;
}

/* Writes what moat answered itself at the head of the FIFO. */
static bool
q_drain(struct pop3 *s, struct filter_io *io)
{
	return pendq_drain(&s->q, io, stls_decide, s);
}

/* --- the backend side -------------------------------------------------- */

static bool
ieq_word(const uint8_t *p, size_t len, const char *word)
{
	size_t i, n = strlen(word);

	if (len < n || (len > n && p[n] != ' '))
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

/* CAPA lines that stay: STLS is moat's; USER and SASL hide before TLS
 * when the listener requires it. */
static bool
capa_keep(const struct pop3 *s, const uint8_t *p, size_t len)
{
	if (ieq_word(p, len, "STLS"))
		return false;
	if (s->lc->require_tls && !s->tls &&
	    (ieq_word(p, len, "USER") || ieq_word(p, len, "SASL")))
		return false;
	return true;
}

static bool
code_is(const struct pop3_status *st, const char *code)
{
	size_t n = strlen(code);

	return st->code != NULL && st->codelen >= n &&
	    memcmp(st->code, code, n) == 0;
}

static void
auth_verdict(const struct pop3 *s, struct filter_io *io,
    const struct pop3_status *st, const char *reason)
{
	/* Past AUTHORIZATION, USER, PASS, APOP and AUTH are unknown
	 * commands (RFC 1939 3): no credentials were tried. */
	if (s->authed)
		return;
	if (st->kind == POP3_STATUS_OK)
		filter_signal(io, FILTER_SIG_AUTH_OK, reason);
	else if (code_is(st, "SYS/") || code_is(st, "IN-USE") ||
	    code_is(st, "LOGIN-DELAY"))
		/* RFC 3206 / 2449: not the credentials' fault. */
		filter_signal(io, FILTER_SIG_AUTH_TEMPFAIL, reason);
	else
		filter_signal(io, FILTER_SIG_AUTH_FAIL, reason);
}

/* A status line is in; what it means for the command at the head. */
static void
status_done(struct pop3 *s, struct filter_io *io, const struct pop3_status *st)
{
	struct pend *e = pendq_head(&s->q);
	bool ok = st->kind == POP3_STATUS_OK;

	if (e == NULL) {
		/* unsolicited (-ERR on timeout): relayed, and the last */
		filter_close(io, "backend_closing");
		return;
	}
	switch (e->kind) {
	case PEND_GREETING:
		s->greeted = true;
		if (s->cmode == CM_WAIT)
			s->cmode = CM_CMD;
		break;
	case PEND_AUTH:
		if (st->kind == POP3_STATUS_CONT) {
			s->cmode = CM_SASL;
			return;
		}
		/*
		 * No credentials were tried when the client cancelled with
		 * "*" (RFC 5034 4), nor when the server refused an AUTH
		 * line without an initial response: an unknown mechanism
		 * (a client set to try NTLM or GSSAPI first), which Dovecot
		 * answers with the same -ERR [AUTH] as a wrong password.
		 */
		if (ok || (s->sasl_sent && !s->sasl_cancel))
			auth_verdict(s, io, st, "pop3_auth");
		s->sasl_cancel = false;
		s->sasl_sent = false;
		s->authed |= ok;
		s->cmode = CM_CMD;
		break;
	case PEND_PASS:
	case PEND_APOP:
		auth_verdict(s, io, st, e->kind == PEND_PASS ? "pop3_pass" :
		    "pop3_apop");
		s->authed |= ok;
		break;
	case PEND_MULTI:
	case PEND_CAPA:
		if (ok) {
			s->body = e->kind == PEND_CAPA ? BODY_CAPA : BODY_DATA;
			pop3_multi_init(&s->multi);
			return;		/* popped at the end of the body */
		}
		break;
	case PEND_USER:
	case PEND_OTHER:
	case PEND_LOCAL:
	case PEND_STLS:
		break;
	}
	pendq_pop(&s->q);
}

static void
bad_backend(struct pop3 *s, struct filter_io *io)
{
	filter_close_saying(io, R_BADREPLY, "backend_bad_reply");
	s->cmode = CM_DEAD;
}

/*
 * A status line no command asked for, at p. The backend may say -ERR as
 * it hangs up (Dovecot's inactivity or shutdown line), which goes on to
 * the client, and the session ends behind it (status_done()): one that
 * said it and stayed (Dovecot answering a PROXY header it does not
 * expect) would leave the client taking the next reply for the answer
 * to its next command. Anything else would be read so at once, and the
 * two would stay out of step, with auth verdicts counted against the
 * wrong commands. After STLS was accepted even the -ERR must not follow
 * the plaintext "+OK Begin TLS negotiation". True when the session ends
 * for it now.
 */
static bool
unsolicited(struct pop3 *s, struct filter_io *io, const uint8_t *p,
    const struct pop3_status *st)
{
	if (pendq_head(&s->q) != NULL ||
	    (st->kind == POP3_STATUS_ERR && s->cmode != CM_DISCARD))
		return false;
	filter_stray_reply(io, p, st->consumed, false);
	filter_close_saying(io, R_BADREPLY, "backend_unsolicited");
	s->cmode = CM_DEAD;
	return true;
}

/* One CAPA body line; 0 when it must wait, else bytes consumed. */
static size_t
capa_line(struct pop3 *s, struct filter_io *io, const uint8_t *p, size_t len,
    bool eof)
{
	struct pop3_line l;
	enum pop3_parse_rc rc;

	rc = pop3_line_parse(p, len, POP3_REPLY_MAX, &l);
	if (rc == POP3_PARSE_AGAIN)
		return eof ? len : 0;
	if (rc == POP3_PARSE_ERROR) {
		bad_backend(s, io);
		return len;
	}
	if (filter_room_client(io) < l.consumed + 16 +
	    pendq_locals_len(&s->q, 1))
		return 0;
	if (l.len == 1 && l.p[0] == '.') {
		if (s->lc->tls == CFG_TLS_STARTTLS && !s->tls)
			(void)filter_to_client(io, "STLS\r\n", 6);
		(void)filter_to_client(io, ".\r\n", 3);
		s->body = BODY_NONE;
		pendq_pop(&s->q);
		(void)q_drain(s, io);
	} else if (capa_keep(s, l.p, l.len)) {
		(void)filter_to_client(io, l.p, l.consumed);
	}
	return l.consumed;
}

static size_t
pop3_backend(void *state, struct filter_io *io, const uint8_t *p,
    size_t len, bool eof)
{
	struct pop3 *s = state;
	struct pop3_status st;
	enum pop3_parse_rc rc;
	size_t off = 0, n, room, locals;

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
		if (s->body == BODY_CAPA) {
			if ((n = capa_line(s, io, p + off, len - off, eof)) ==
			    0)
				break;
			off += n;
			continue;
		}
		if (s->body == BODY_DATA) {
			/* Room for the local replies queued behind the end
			 * too, so that reaching it can write them at once. */
			room = filter_room_client(io);
			locals = pendq_locals_len(&s->q, 1);
			room = room > locals ? room - locals : 0;
			n = len - off < room ? len - off : room;
			if (n == 0)
				break;
			rc = pop3_multi_scan(&s->multi, p + off, n, &n);
			(void)filter_to_client(io, p + off, n);
			off += n;
			if (rc == POP3_PARSE_OK) {
				s->body = BODY_NONE;
				pendq_pop(&s->q);
				(void)q_drain(s, io);
			}
			continue;
		}
		rc = pop3_status_parse(p + off, len - off, POP3_REPLY_MAX, &st);
		if (rc == POP3_PARSE_AGAIN) {
			if (eof)
				off = len;
			break;
		}
		if (rc == POP3_PARSE_ERROR) {
			if (!s->greeted)
				filter_bad_greeting(io, p + off, len - off);
			bad_backend(s, io);
			return len;
		}
		if (unsolicited(s, io, p + off, &st))
			return len;
		if (filter_room_client(io) < st.consumed +
		    pendq_locals_len(&s->q, 1))
			break;
		(void)filter_to_client(io, p + off, st.consumed);
		if (pendq_head(&s->q) == NULL)	/* an -ERR unasked */
			filter_stray_reply(io, p + off, st.consumed, true);
		status_done(s, io, &st);
		(void)q_drain(s, io);
		off += st.consumed;
	}
	return off;
}

/* --- the client side --------------------------------------------------- */

static void
answer(struct pop3 *s, struct filter_io *io, const char *reply)
{
	pendq_push(&s->q, PEND_LOCAL, reply);
	(void)q_drain(s, io);
}

static bool
command(struct pop3 *s, struct filter_io *io, const struct pop3_line *l)
{
	struct pop3_cmd c;
	enum pend_kind kind = PEND_OTHER;

	if (pop3_cmd_parse(l->p, l->len, &c) == POP3_PARSE_ERROR) {
		filter_signal(io, FILTER_SIG_GLITCH, "bad_command");
		answer(s, io, R_BADCHAR);
		return true;
	}
	switch (c.verb) {
	case POP3_VERB_STLS:
		if (s->tls)
			answer(s, io, R_TLSACTIVE);
		else if (s->lc->tls != CFG_TLS_STARTTLS)
			answer(s, io, R_NOTLS);
		else if (s->authed)
			answer(s, io, R_TLSSTATE);
		else {
			pendq_push(&s->q, PEND_STLS, NULL);
			s->cmode = CM_WAIT;
			(void)q_drain(s, io);
		}
		return true;
	case POP3_VERB_XCLIENT:
		/* Dovecot lets a trusted proxy (login_trusted_networks) set
		 * the client's address with it: only moat may be that proxy. */
		filter_signal(io, FILTER_SIG_GLITCH, "client_xclient");
		answer(s, io, R_XCLIENT);
		return true;
	case POP3_VERB_USER:
	case POP3_VERB_PASS:
	case POP3_VERB_APOP:
	case POP3_VERB_AUTH:
		if (s->lc->require_tls && !s->tls) {
			answer(s, io, R_NEEDTLS);
			return true;
		}
		if (c.verb == POP3_VERB_AUTH &&
		    !cmdflow_auth_args_ok(c.arg, c.arglen)) {
			filter_signal(io, FILTER_SIG_GLITCH, "bad_command");
			answer(s, io, R_BADCHAR);
			return true;
		}
		break;
	default:
		break;
	}
	switch (c.verb) {
	case POP3_VERB_USER:
		kind = PEND_USER;
		break;
	case POP3_VERB_PASS:
		/*
		 * RFC 2595 4: a USER from before STLS is forgotten, though
		 * the backend still holds it; PASS only follows a USER (RFC
		 * 1939 7), and Dovecot forgets the name at each PASS. A PASS
		 * without a USER is answered here, so it is not counted as
		 * a failed login.
		 */
		if (!s->user_seen) {
			answer(s, io, R_NOUSER);
			return true;
		}
		kind = PEND_PASS;
		break;
	case POP3_VERB_APOP:
		kind = PEND_APOP;
		break;
	case POP3_VERB_AUTH:
		kind = c.arglen > 0 ? PEND_AUTH : PEND_MULTI;
		s->sasl_sent = cmdflow_auth_response(c.arg, c.arglen);
		break;
	case POP3_VERB_CAPA:
		kind = PEND_CAPA;
		break;
	case POP3_VERB_LIST:
	case POP3_VERB_UIDL:
		kind = c.arglen > 0 ? PEND_OTHER : PEND_MULTI;
		break;
	case POP3_VERB_RETR:
	case POP3_VERB_TOP:
		kind = PEND_MULTI;
		break;
	default:
		break;
	}
	if (!cmdflow_forward(io, l->p, l->len))
		return false;
	if (c.verb == POP3_VERB_USER)
		s->user_seen = true;
	else if (c.verb == POP3_VERB_PASS)
		s->user_seen = false;	/* used up, even by a failure */
	pendq_push(&s->q, kind, NULL);
	if (kind == PEND_AUTH)
		s->cmode = CM_WAIT;
	return true;
}

static bool
long_line(struct pop3 *s, struct filter_io *io)
{
	if (cmdflow_long_line(&s->flow, io, R_TOOMANY) == CMDFLOW_DEAD) {
		s->cmode = CM_DEAD;
		return false;
	}
	answer(s, io, R_LONG);
	return true;
}

static size_t
pop3_client(void *state, struct filter_io *io, const uint8_t *p, size_t len,
    bool eof)
{
	struct pop3 *s = state;
	struct pop3_line l;
	enum pop3_parse_rc rc;
	enum cmdflow_rc fr;
	size_t off = 0, start;

	if (s->cmode == CM_DEAD || s->cmode == CM_DISCARD)
		return len;
	switch (cmdflow_gate(&s->flow, io, p, len, eof, s->greeted, &off)) {
	case CMDFLOW_GO:
		break;
	case CMDFLOW_HOLD:
		return off;
	case CMDFLOW_DEAD:
		s->cmode = CM_DEAD;
		return len;
	}
	while (off < len) {
		if (filter_closing(io)) {
			/* Banned by what came before (filter.h). */
			s->cmode = CM_DEAD;
			return len;
		}
		if (!q_drain(s, io))
			break;
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
			s->sasl_cancel = cmdflow_sasl_cancel(p + start,
			    off - start);
			s->sasl_sent |= !s->sasl_cancel;
			s->cmode = CM_WAIT;
			continue;
		}
		rc = pop3_line_parse(p + off, len - off, s->flow.maxline, &l);
		if (rc == POP3_PARSE_AGAIN) {
			if (eof)
				off = len;
			break;
		}
		if (rc == POP3_PARSE_ERROR) {
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
pop3_tls_started(void *state, struct filter_io *io)
{
	struct pop3 *s = state;

	(void)io;
	/* RFC 2595 4: forget what the client said before STLS. */
	s->tls = true;
	s->user_seen = false;
	cmdflow_reset(&s->flow);
	s->cmode = CM_CMD;
}

/* Replies still owed: once the client's queue is empty (when the
 * session asks), what is left of them comes from the backend. */
static bool
pop3_awaiting(void *state)
{
	struct pop3 *s = state;

	return s->q.len > 0;
}

/* A PASS, an APOP or an AUTH with a response awaits its verdict. */
static bool
pop3_verdict_owed(void *state)
{
	struct pop3 *s = state;

	return (s->sasl_sent && !s->sasl_cancel) ||
	    pendq_has(&s->q, PEND_PASS) || pendq_has(&s->q, PEND_APOP);
}

/* Status lines are relayed whole; a multi-line body (RETR, LIST, CAPA)
 * is relayed as it comes, up to its dot. */
static bool
pop3_between_replies(void *state)
{
	struct pop3 *s = state;

	return s->body == BODY_NONE && s->cmode != CM_DISCARD &&
	    s->cmode != CM_DEAD;
}

const struct filter_ops filter_pop3 = {
	.name = "pop3",
	.new = pop3_new,
	.client_data = pop3_client,
	.backend_data = pop3_backend,
	.tls_started = pop3_tls_started,
	.awaiting = pop3_awaiting,
	.verdict_owed = pop3_verdict_owed,
	.between_replies = pop3_between_replies,
	.free = pop3_free,
};
