/* pop3_parse.c - pure, incremental POP3 command, status and body parsers. */
#include "pop3_parse.h"

#include <string.h>

#if defined(__SSE2__) && !defined(MOAT_NO_SIMD)
#define SCAN_SSE2 1
#define QUIET_ROUNDS 3
#include <emmintrin.h>
#endif

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
	{ "UIDL", POP3_VERB_UIDL }, { "XCLIENT", POP3_VERB_XCLIENT },
};

enum pop3_parse_rc
pop3_cmd_parse(const uint8_t *p, size_t len, struct pop3_cmd *cmd)
{
	size_t i, k, vlen;

	if (memchr(p, '\r', len) != NULL || memchr(p, '\0', len) != NULL)
		return POP3_PARSE_ERROR;
	/*
	 * The verb ends at the first space, and must hold no other blank
	 * or control byte, nor follow one: backends split on tabs too and
	 * skip leading blanks, and if "AUTH<TAB>PLAIN" or " DATA" were an
	 * unknown command here, moat's idea of the session and the
	 * backend's would part (plaintext AUTH, XCLIENT, DATA unguarded).
	 */
	for (vlen = 0; vlen < len && p[vlen] != ' '; vlen++)
		if (p[vlen] < 0x21 || p[vlen] == 0x7f)
			return POP3_PARSE_ERROR;
	if (vlen == 0 && len > 0)
		return POP3_PARSE_ERROR;
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

/*
 * Inside a line, only an LF followed by '.' can lead to the end. From i
 * on, returns the first such LF, or a point at most 32 bytes before the
 * end from where the byte-by-byte scan takes over, or len if no LF is
 * left. With mail's short lines a memchr() call per line, as before,
 * cost more than the rest of the scan. Without SSE2 it returns i.
 */
static size_t
skip_to_lf_dot(const uint8_t *p, size_t i, size_t len)
{
#if defined(SCAN_SSE2)
	const __m128i lf = _mm_set1_epi8('\n'), dot = _mm_set1_epi8('.');
	const uint8_t *next;
	unsigned m, any, quiet = 0;
	__m128i a, b;

	/*
	 * 32 bytes a round: the pairs (k, k + 1) for k in the round (the
	 * loads overlap by one). Mail lines end every 78 bytes or so, at
	 * no foreseeable place, so this does not branch on whether a round
	 * holds an LF; only after QUIET_ROUNDS rounds without one, in a line
	 * so long that its end is worth a memchr(), does it jump.
	 */
	while (len - i > 32) {
		a = _mm_cmpeq_epi8(_mm_loadu_si128((const void *)(p + i)), lf);
		b = _mm_cmpeq_epi8(_mm_loadu_si128((const void *)(p + i + 16)),
		    lf);
		m = (unsigned)_mm_movemask_epi8(_mm_and_si128(a,
		    _mm_cmpeq_epi8(_mm_loadu_si128((const void *)(p + i + 1)),
		    dot))) | (unsigned)_mm_movemask_epi8(_mm_and_si128(b,
		    _mm_cmpeq_epi8(_mm_loadu_si128((const void *)(p + i + 17)),
		    dot))) << 16;
		if (m != 0)
			return i + (size_t)__builtin_ctz(m);
		any = (unsigned)_mm_movemask_epi8(_mm_or_si128(a, b));
		quiet = any != 0 ? 0 : quiet + 1;
		i += 32;
		if (quiet < QUIET_ROUNDS)
			continue;
		/* Long lines come in runs: the next one jumps sooner. */
		quiet = QUIET_ROUNDS - 1;
		if ((next = memchr(p + i, '\n', len - i)) == NULL)
			return len;
		i = (size_t)(next - p);
		if (len - i < 2 || p[i + 1] == '.')
			return i;
		i++;
	}
#else
	(void)p;
	(void)len;
#endif
	return i;
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
			 * them rather than stepping through every byte. A line
			 * start that is no '.' changes nothing either. */
			const uint8_t *lf;

			i = skip_to_lf_dot(p, i, len);
			lf = memchr(p + i, '\n', len - i);
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
