/* pop3_parse.c - pure, incremental POP3 command, status and body parsers. */
#include "pop3_parse.h"

#include <string.h>

enum pop3_parse_rc
pop3_line_parse(const uint8_t *p, size_t len, size_t max, struct pop3_line *l)
{
	size_t look = len < max ? len : max;
	const uint8_t *nl = memchr(p, '\n', look);

	if (nl == NULL)
		return len >= max ? POP3_PARSE_ERROR : POP3_PARSE_AGAIN;
	l->p = p;
	l->consumed = (size_t)(nl - p) + 1;
	l->len = l->consumed - 1;
	if (l->len > 0 && p[l->len - 1] == '\r')
		l->len--;
	return POP3_PARSE_OK;
}

static const struct {
	const char *name;
	enum pop3_verb verb;
} pop3_verbs[] = {
	{ "USER", POP3_VERB_USER }, { "PASS", POP3_VERB_PASS },
	{ "APOP", POP3_VERB_APOP }, { "AUTH", POP3_VERB_AUTH },
	{ "STLS", POP3_VERB_STLS }, { "CAPA", POP3_VERB_CAPA },
	{ "QUIT", POP3_VERB_QUIT }, { "STAT", POP3_VERB_STAT },
	{ "LIST", POP3_VERB_LIST }, { "RETR", POP3_VERB_RETR },
	{ "DELE", POP3_VERB_DELE }, { "NOOP", POP3_VERB_NOOP },
	{ "RSET", POP3_VERB_RSET }, { "TOP", POP3_VERB_TOP },
	{ "UIDL", POP3_VERB_UIDL },
};

enum pop3_parse_rc
pop3_cmd_parse(const uint8_t *p, size_t len, struct pop3_cmd *cmd)
{
	size_t i, k, vlen;

	if (memchr(p, '\r', len) != NULL || memchr(p, '\0', len) != NULL)
		return POP3_PARSE_ERROR;
	for (vlen = 0; vlen < len && p[vlen] != ' '; vlen++)
		;
	cmd->verb = POP3_VERB_OTHER;
	for (i = 0; i < sizeof(pop3_verbs) / sizeof(pop3_verbs[0]); i++) {
		const char *name = pop3_verbs[i].name;

		if (strlen(name) != vlen)
			continue;
		for (k = 0; k < vlen; k++) {
			int c = p[k];

			if (c >= 'a' && c <= 'z')
				c -= 'a' - 'A';
			if (c != name[k])
				break;
		}
		if (k == vlen) {
			cmd->verb = pop3_verbs[i].verb;
			break;
		}
	}
	while (vlen < len && p[vlen] == ' ')
		vlen++;
	cmd->arg = p + vlen;
	cmd->arglen = len - vlen;
	return POP3_PARSE_OK;
}

/* Whether p starts with word, followed by the end or a space. */
static bool
word_at(const uint8_t *p, size_t len, const char *word)
{
	size_t n = strlen(word);

	return len >= n && memcmp(p, word, n) == 0 &&
	    (len == n || p[n] == ' ');
}

enum pop3_parse_rc
pop3_status_parse(const uint8_t *p, size_t len, size_t max,
    struct pop3_status *st)
{
	struct pop3_line l;
	enum pop3_parse_rc rc;
	const uint8_t *end;
	size_t skip;

	/* Garbage is an error as soon as it shows, not at the LF. */
	if (len > 0 && p[0] != '+' && p[0] != '-')
		return POP3_PARSE_ERROR;
	if ((rc = pop3_line_parse(p, len, max, &l)) != POP3_PARSE_OK)
		return rc;
	st->code = NULL;
	st->codelen = 0;
	st->consumed = l.consumed;
	if (word_at(l.p, l.len, "+OK")) {
		st->kind = POP3_STATUS_OK;
		skip = 3;
	} else if (word_at(l.p, l.len, "-ERR")) {
		st->kind = POP3_STATUS_ERR;
		skip = 4;
	} else if (word_at(l.p, l.len, "+")) {
		st->kind = POP3_STATUS_CONT;
		return POP3_PARSE_OK;
	} else {
		return POP3_PARSE_ERROR;
	}
	if (skip + 2 < l.len && l.p[skip + 1] == '[' &&
	    (end = memchr(l.p + skip + 2, ']', l.len - skip - 2)) != NULL) {
		st->code = l.p + skip + 2;
		st->codelen = (size_t)(end - st->code);
	}
	return POP3_PARSE_OK;
}

enum {
	M_BOL = 0,	/* at the start of a line */
	M_MID,		/* inside a line */
	M_DOT,		/* the line so far is "." */
	M_DOTCR,	/* the line so far is ".\r" */
};

void
pop3_multi_init(struct pop3_multi *m)
{
	m->st = M_BOL;
}

enum pop3_parse_rc
pop3_multi_scan(struct pop3_multi *m, const uint8_t *p, size_t len,
    size_t *n)
{
	size_t i;

	for (i = 0; i < len; i++) {
		uint8_t c = p[i];

		switch (m->st) {
		case M_BOL:
			m->st = c == '.' ? M_DOT : c == '\n' ? M_BOL : M_MID;
			break;
		case M_MID: {
			/* Body text is long runs between LFs: let memchr skip
			 * them rather than stepping through every byte. */
			const uint8_t *lf = memchr(p + i, '\n', len - i);

			if (lf == NULL) {
				i = len;
				break;
			}
			i = (size_t)(lf - p);
			m->st = M_BOL;
			break;
		}
		case M_DOT:
		case M_DOTCR:
			if (c == '\n') {
				*n = i + 1;
				m->st = M_BOL;
				return POP3_PARSE_OK;
			}
			m->st = c == '\r' && m->st == M_DOT ? M_DOTCR : M_MID;
			break;
		default:
			m->st = M_MID;
			break;
		}
	}
	*n = len;
	return POP3_PARSE_AGAIN;
}
