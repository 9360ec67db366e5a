/* cmdflow.c - the pending-reply FIFO and client line discipline. */
#include "cmdflow.h"

#include <stdlib.h>
#include <string.h>

#include "smtp_parse.h"

/*
 * Between two pendq_room() calls a filter pushes at most two entries it
 * asked for (a command and a local reply to it) and at most two it did
 * not (end of message, moat's own RSET). The small ring gives way while
 * that much still fits in it.
 */
#define PENDQ_SPARE 4

static size_t
pendq_cap(const struct pendq *q)
{
	return q->big != NULL ? CMDFLOW_PENDING_MAX : CMDFLOW_PENDING_INLINE;
}

/* Where the i-th entry from the head is in the current ring. */
static size_t
pendq_index(const struct pendq *q, size_t i)
{
	return (q->head + i) % pendq_cap(q);
}

static struct pend *
pendq_at(struct pendq *q, size_t i)
{
	return &(q->big != NULL ? q->big : q->small)[pendq_index(q, i)];
}

void
pendq_init(struct pendq *q, int first_kind, int local_kind, int tls_kind)
{
	q->big = NULL;
	q->local_kind = local_kind;
	q->tls_kind = tls_kind;
	q->small[0].kind = first_kind;
	q->small[0].local = NULL;
	q->head = 0;
	q->len = 1;
}

void
pendq_free(struct pendq *q)
{
	free(q->big);
	q->big = NULL;
}

struct pend *
pendq_head(struct pendq *q)
{
	return q->len > 0 ? pendq_at(q, 0) : NULL;
}

void
pendq_pop(struct pendq *q)
{
	q->head = (q->head + 1) % pendq_cap(q);
	if (--q->len == 0 && q->big != NULL) {
		pendq_free(q);
		q->head = 0;
	}
}

void
pendq_push(struct pendq *q, int kind, const char *local)
{
	struct pend *e;

	if (q->len >= pendq_cap(q))
		abort();
	e = pendq_at(q, q->len);
	e->kind = kind;
	e->local = local;
	q->len++;
}

bool
pendq_has(struct pendq *q, int kind)
{
	size_t i;

	for (i = 0; i < q->len; i++)
		if (pendq_at(q, i)->kind == kind)
			return true;
	return false;
}

/* Moves the entries, in order, to a full-size ring; false without memory. */
static bool
pendq_grow(struct pendq *q)
{
	struct pend *big;
	size_t i;

	if ((big = calloc(CMDFLOW_PENDING_MAX, sizeof(*big))) == NULL)
		return false;
	for (i = 0; i < q->len; i++)
		big[i] = *pendq_at(q, i);
	q->big = big;
	q->head = 0;
	return true;
}

bool
pendq_room(struct pendq *q, const struct filter_io *io)
{
	if (q->big == NULL && q->len + PENDQ_SPARE > CMDFLOW_PENDING_INLINE &&
	    !pendq_grow(q))
		return false;
	/* One slot stays free for a local reply to the command itself;
	 * with nothing pending the reply is written at once, so the
	 * client side must have room for it. */
	return q->len < CMDFLOW_PENDING_MAX - 1 &&
	    (q->len > 0 || filter_room_client(io) >= CMDFLOW_LOCAL_MAX);
}

size_t
pendq_locals_len(const struct pendq *q, size_t from)
{
	size_t i, n = 0;

	for (i = from; i < q->len; i++) {
		const struct pend *e =
		    &(q->big != NULL ? q->big : q->small)[pendq_index(q, i)];

		if (e->kind == q->local_kind)
			n += strlen(e->local);
		else if (e->kind == q->tls_kind)
			n += CMDFLOW_LOCAL_MAX;
		else
			break;
	}
	return n;
}

bool
pendq_drain(struct pendq *q, struct filter_io *io,
    void (*decide)(void *arg, struct filter_io *io), void *arg)
{
	struct pend *e;

	while ((e = pendq_head(q)) != NULL) {
		if (e->kind == q->local_kind) {
			if (filter_to_client(io, e->local, strlen(e->local)) ==
			    -1)
				return false;
			pendq_pop(q);
		} else if (e->kind == q->tls_kind) {
			if (filter_room_client(io) < CMDFLOW_LOCAL_MAX)
				return false;
			pendq_pop(q);
			decide(arg, io);
		} else {
			break;
		}
	}
	return true;
}

void
cmdflow_init(struct cmdflow *f, const struct cfg_listener *lc)
{
	f->maxline = lc->max_line > 0 ? lc->max_line : 2048;
	if (f->maxline > FILTER_INPUT_MAX)
		f->maxline = FILTER_INPUT_MAX;
}

void
cmdflow_reset(struct cmdflow *f)
{
	f->skipping = false;
	f->skipped = 0;
}

enum cmdflow_rc
cmdflow_gate(struct cmdflow *f, struct filter_io *io, const uint8_t *p,
    size_t len, bool eof, bool greeted, size_t *used)
{
	enum smtp_parse_rc rc;
	const char *what;

	if (!f->checked) {
		rc = smtp_foreign_parse(p, len, &what);
		if (rc == SMTP_PARSE_AGAIN && !eof) {
			*used = 0;
			return CMDFLOW_HOLD;
		}
		if (rc == SMTP_PARSE_ERROR) {
			filter_signal(io, FILTER_SIG_FOREIGN, what);
			filter_close(io, "foreign_protocol");
			return CMDFLOW_DEAD;
		}
		f->checked = true;
	}
	if (greeted)
		return CMDFLOW_GO;
	/*
	 * RFC 5321 3.1, RFC 1939 4: the client waits for the greeting.
	 * What it sent is held until then, also past its end of stream (a
	 * script piping commands into nc): the greeting deadline bounds
	 * the wait, and the commands still get their replies.
	 */
	if (!f->early) {
		f->early = true;
		filter_signal(io, FILTER_SIG_GLITCH, "early_talker");
	}
	*used = 0;
	return CMDFLOW_HOLD;
}

enum cmdflow_rc
cmdflow_skip(struct cmdflow *f, struct filter_io *io, const uint8_t *p,
    size_t len, size_t *off, const char *endless)
{
	const uint8_t *nl = memchr(p + *off, '\n', len - *off);

	if (nl == NULL) {
		f->skipped += len - *off;
		*off = len;
		if (f->skipped > CMDFLOW_SKIP_MAX) {
			filter_close_saying(io, endless, "line_too_long");
			return CMDFLOW_DEAD;
		}
		return CMDFLOW_HOLD;
	}
	*off = (size_t)(nl - p) + 1;
	cmdflow_reset(f);
	return CMDFLOW_GO;
}

enum cmdflow_rc
cmdflow_long_line(struct cmdflow *f, struct filter_io *io,
    const char *toomany)
{
	filter_signal(io, FILTER_SIG_GLITCH, "line_too_long");
	if (++f->long_lines >= CMDFLOW_LONG_LINES_MAX) {
		filter_close_saying(io, toomany, "line_too_long");
		return CMDFLOW_DEAD;
	}
	f->skipping = true;
	return CMDFLOW_GO;
}

bool
cmdflow_forward(struct filter_io *io, const uint8_t *p, size_t len)
{
	if (filter_room_backend(io) < len + 2)
		return false;
	(void)filter_to_backend(io, p, len);
	(void)filter_to_backend(io, "\r\n", 2);
	return true;
}

enum cmdflow_rc
cmdflow_sasl(struct filter_io *io, const uint8_t *p, size_t len, bool eof,
    size_t *off, const char *bad)
{
	struct smtp_line l;
	enum smtp_parse_rc rc;

	rc = smtp_line_parse(p + *off, len - *off, CMDFLOW_SASL_LINE_MAX, &l);
	if (rc == SMTP_PARSE_AGAIN) {
		if (eof)
			*off = len;	/* torn */
		return CMDFLOW_HOLD;
	}
	if (rc == SMTP_PARSE_ERROR || memchr(l.p, '\r', l.len) != NULL ||
	    memchr(l.p, '\0', l.len) != NULL) {
		filter_signal(io, FILTER_SIG_GLITCH, "bad_sasl_line");
		filter_close_saying(io, bad, "bad_sasl_line");
		return CMDFLOW_DEAD;
	}
	if (!cmdflow_forward(io, l.p, l.len))
		return CMDFLOW_HOLD;
	*off += l.consumed;
	return CMDFLOW_GO;
}

bool
cmdflow_auth_response(const uint8_t *arg, size_t len)
{
	size_t i = 0;

	while (i < len && arg[i] != ' ')
		i++;
	while (i < len && arg[i] == ' ')
		i++;
	while (len > i && arg[len - 1] == ' ')
		len--;
	return len > i && !(len - i == 1 && arg[i] == '=');
}

bool
cmdflow_auth_args_ok(const uint8_t *arg, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++)
		if (arg[i] < 0x20 || arg[i] > 0x7e)
			return false;
	return true;
}

bool
cmdflow_sasl_cancel(const uint8_t *p, size_t len)
{
	return (len == 2 && memcmp(p, "*\n", 2) == 0) ||
	    (len == 3 && memcmp(p, "*\r\n", 3) == 0);
}
