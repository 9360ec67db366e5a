/* smtp_refused.c - the 503s and the 221 owed to an SMTP client after 554. */
#include "smtp_refused.h"

#include <string.h>

#include "buf.h"
#include "smtp_parse.h"

void
smtp_refused_init(struct smtp_refused *r)
{
	r->listening = true;
	r->answered = 0;
}

/* Whether line l is QUIT; any line that is not gets the 503. */
static bool
is_quit(const struct smtp_line *l)
{
	struct smtp_cmd cmd;

	return smtp_cmd_parse(l->p, l->len, &cmd) == SMTP_PARSE_OK &&
	    cmd.verb == SMTP_VERB_QUIT;
}

size_t
smtp_refused_feed(struct smtp_refused *r, const uint8_t *p, size_t len,
    bool eof, struct buf *out)
{
	struct smtp_line l;
	size_t off = 0;
	const char *reply;
	bool quit;

	while (r->listening) {
		switch (smtp_line_parse(p + off, len - off,
		    SMTP_REFUSED_LINE_MAX, &l)) {
		case SMTP_PARSE_OK:
			break;
		case SMTP_PARSE_AGAIN:
			/* A client gone mid-line gets no answer to it. */
			if (eof)
				r->listening = false;
			return off;
		case SMTP_PARSE_ERROR:
			r->listening = false;	/* too long a line */
			return off;
		}
		off += l.consumed;
		quit = is_quit(&l);
		reply = quit ? SMTP_REFUSED_221 : SMTP_REFUSED_503;
		if (buf_append(out, reply, strlen(reply)) == -1 || quit ||
		    ++r->answered == SMTP_REFUSED_COMMANDS_MAX)
			r->listening = false;
	}
	return off;
}
