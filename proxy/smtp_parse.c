/* smtp_parse.c - pure, incremental SMTP command, reply and DATA parsers. */
#include "smtp_parse.h"

#include <stdbool.h>
#include <string.h>

#if defined(__SSE2__) && !defined(MOAT_NO_SIMD)
#define SKIP_SSE2 1
#include <emmintrin.h>
#endif

static int
lower(int c)
{
	return c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c;
}

enum smtp_parse_rc
smtp_line_parse(const uint8_t *p, size_t len, size_t max, struct smtp_line *l)
{
	size_t look = len < max ? len : max;
	const uint8_t *nl = memchr(p, '\n', look);

	if (nl == NULL)
		return len >= max ? SMTP_PARSE_ERROR : SMTP_PARSE_AGAIN;
	l->p = p;
	l->consumed = (size_t)(nl - p) + 1;
	l->len = l->consumed - 1;
	l->bare_lf = true;
	if (l->len > 0 && p[l->len - 1] == '\r') {
		l->len--;
		l->bare_lf = false;
	}
	return SMTP_PARSE_OK;
}

static const struct {
	const char *name;
	enum smtp_verb verb;
} smtp_verbs[] = {
	{ "helo", SMTP_VERB_HELO },
	{ "ehlo", SMTP_VERB_EHLO },
	{ "mail", SMTP_VERB_MAIL },
	{ "rcpt", SMTP_VERB_RCPT },
	{ "data", SMTP_VERB_DATA },
	{ "bdat", SMTP_VERB_BDAT },
	{ "rset", SMTP_VERB_RSET },
	{ "noop", SMTP_VERB_NOOP },
	{ "quit", SMTP_VERB_QUIT },
	{ "help", SMTP_VERB_HELP },
	{ "vrfy", SMTP_VERB_VRFY },
	{ "expn", SMTP_VERB_EXPN },
	{ "auth", SMTP_VERB_AUTH },
	{ "starttls", SMTP_VERB_STARTTLS },
	{ "xclient", SMTP_VERB_XCLIENT },
	{ "xforward", SMTP_VERB_XFORWARD },
};

const char *
smtp_verb_str(enum smtp_verb v)
{
	size_t i;

	for (i = 0; i < sizeof(smtp_verbs) / sizeof(smtp_verbs[0]); i++)
		if (smtp_verbs[i].verb == v)
			return smtp_verbs[i].name;
	return "other";
}

enum smtp_parse_rc
smtp_cmd_parse(const uint8_t *p, size_t len, struct smtp_cmd *cmd)
{
	size_t i, n, vlen;

	if (memchr(p, '\r', len) != NULL || memchr(p, '\0', len) != NULL)
		return SMTP_PARSE_ERROR;
	/*
	 * The verb ends at the first space, and must hold no other blank
	 * or control byte, nor follow one: backends split on tabs too and
	 * skip leading blanks, and if "AUTH<TAB>PLAIN" or " DATA" were an
	 * unknown command here, moat's idea of the session and the
	 * backend's would part (plaintext AUTH, XCLIENT, DATA unguarded).
	 */
	for (vlen = 0; vlen < len && p[vlen] != ' '; vlen++)
		if (p[vlen] < 0x21 || p[vlen] == 0x7f)
			return SMTP_PARSE_ERROR;
	if (vlen == 0 && len > 0)
		return SMTP_PARSE_ERROR;
	cmd->verb = SMTP_VERB_OTHER;
	for (i = 0; i < sizeof(smtp_verbs) / sizeof(smtp_verbs[0]); i++) {
		const char *name = smtp_verbs[i].name;

		if (strlen(name) != vlen)
			continue;
		for (n = 0; n < vlen && lower(p[n]) == name[n]; n++)
			;
		if (n == vlen) {
			cmd->verb = smtp_verbs[i].verb;
			break;
		}
	}
	while (vlen < len && p[vlen] == ' ')
		vlen++;
	cmd->arg = p + vlen;
	cmd->arglen = len - vlen;
	return SMTP_PARSE_OK;
}

enum smtp_parse_rc
smtp_reply_parse(const uint8_t *p, size_t len, size_t max,
    struct smtp_reply_line *r)
{
	struct smtp_line l;
	enum smtp_parse_rc rc;
	size_t i;

	/* A bad code is an error as soon as it shows, not at the LF. */
	for (i = 0; i < 3 && i < len; i++)
		if (p[i] < (i == 0 ? '2' : '0') || p[i] > (i == 0 ? '5' : '9'))
			return SMTP_PARSE_ERROR;
	if ((rc = smtp_line_parse(p, len, max, &l)) != SMTP_PARSE_OK)
		return rc;
	if (l.len < 3)
		return SMTP_PARSE_ERROR;
	r->code = (p[0] - '0') * 100 + (p[1] - '0') * 10 + (p[2] - '0');
	r->consumed = l.consumed;
	if (l.len == 3) {
		r->last = true;
		r->text = p + 3;
		r->textlen = 0;
		return SMTP_PARSE_OK;
	}
	if (p[3] != ' ' && p[3] != '-')
		return SMTP_PARSE_ERROR;
	r->last = p[3] == ' ';
	r->text = p + 4;
	r->textlen = l.len - 4;
	return SMTP_PARSE_OK;
}

void
smtp_data_init(struct smtp_data *d)
{
	/* The CRLF of the DATA command counts: a "." first ends the message. */
	d->linelen = 0;
	d->dot = false;
}

#if defined(SKIP_SSE2)
/* The 32 bytes at q as two halves. */
static void
load32(const uint8_t *q, __m128i *a, __m128i *b)
{
	*a = _mm_loadu_si128((const void *)q);
	*b = _mm_loadu_si128((const void *)(q + 16));
}

/* The cheap test: whether a or b holds a byte <= CR (so also TAB and
 * other controls), which the exact compares then settle. */
static bool
any_low(__m128i a, __m128i b)
{
	const __m128i cr = _mm_set1_epi8('\r');

	return _mm_movemask_epi8(_mm_or_si128(
	    _mm_cmpeq_epi8(_mm_min_epu8(a, cr), a),
	    _mm_cmpeq_epi8(_mm_min_epu8(b, cr), b))) != 0;
}

/* Bit k set where byte k of the 32 in a, b is c. */
static uint32_t
mask32(__m128i a, __m128i b, char c)
{
	const __m128i v = _mm_set1_epi8(c);

	return (uint32_t)_mm_movemask_epi8(_mm_cmpeq_epi8(a, v)) |
	    (uint32_t)_mm_movemask_epi8(_mm_cmpeq_epi8(b, v)) << 16;
}
#endif

/*
 * The first index from i on whose byte is CR, LF or NUL (len if none).
 * Message text is mostly long runs of ordinary bytes, and stepping the
 * scanner's state machine over each of them was most of the cost of
 * relaying DATA. With SSE2 (every x86-64) 32 bytes are tested a round;
 * elsewhere eight at a time with the classic "has a zero byte" test, which
 * can flag a byte above a real hit, never miss one, so a flagged word is
 * settled byte by byte.
 */
static size_t
skip_text(const uint8_t *p, size_t i, size_t len)
{
#if defined(SKIP_SSE2)
	const __m128i cr = _mm_set1_epi8('\r'), lf = _mm_set1_epi8('\n');
	const __m128i nul = _mm_setzero_si128();
	__m128i a, b;
	unsigned mask;

	/* 32 bytes a round; the exact compares only after the cheap test. */
	while (len - i >= 32) {
		load32(p + i, &a, &b);
		if (any_low(a, b)) {
			mask = (unsigned)_mm_movemask_epi8(_mm_or_si128(
			    _mm_or_si128(_mm_cmpeq_epi8(a, cr),
			    _mm_cmpeq_epi8(a, lf)), _mm_cmpeq_epi8(a, nul))) |
			    (unsigned)_mm_movemask_epi8(_mm_or_si128(
			    _mm_or_si128(_mm_cmpeq_epi8(b, cr),
			    _mm_cmpeq_epi8(b, lf)), _mm_cmpeq_epi8(b, nul))) << 16;
			if (mask != 0)
				return i + (size_t)__builtin_ctz(mask);
		}
		i += 32;
	}
#else
	static const uint64_t ones = 0x0101010101010101u;
	static const uint64_t highs = 0x8080808080808080u;
	uint64_t w, hit;

	while (len - i >= 8) {
		memcpy(&w, p + i, 8);
		hit = ((w - ones) & ~w) |
		    (((w ^ ones * '\r') - ones) & ~(w ^ ones * '\r')) |
		    (((w ^ ones * '\n') - ones) & ~(w ^ ones * '\n'));
		if (hit & highs)
			break;
		i += 8;
	}
#endif
	while (i < len && p[i] != '\r' && p[i] != '\n' && p[i] != '\0')
		i++;
	return i;
}

#if defined(SKIP_SSE2)
/*
 * The first 32-byte block from i on that holds a byte <= CR, or where
 * fewer than 33 bytes are left: the cheap test with nothing else in the
 * loop.
 */
static size_t
skip_blocks(const uint8_t *p, size_t i, size_t len)
{
	__m128i a, b;

	while (len - i > 32) {
		load32(p + i, &a, &b);
		if (any_low(a, b))
			break;
		i += 32;
	}
	return i;
}

/*
 * Mail is mostly lines of 78 bytes or less, and skip_text() stops at every
 * line end, where the state machine then runs: with such lines that cost
 * more than all the rest of the scan. From i on, this passes over 32
 * bytes at a time for as long as the byte-by-byte scan would pass them
 * without a decision: no NUL, every CR followed by LF and every LF
 * preceded by CR, and no line starting with '.' (a dot line may end the
 * message). It looks one byte past each block, for the LF of a CR that
 * ends it. *linelen is the length of the current line so far and must not
 * be a lone "."; returns where it stopped.
 */
static size_t
data_run(const uint8_t *p, size_t i, size_t len, size_t *linelen)
{
	size_t ll = *linelen, j;
	uint32_t cr, lf, nul, starts;
	__m128i a, b;

	while (len - i > 32) {
		/* In a block without a byte <= CR only the first byte can
		 * start a line, and 31 bytes of text follow: no dot line. */
		j = skip_blocks(p, i, len);
		ll += j - i;
		i = j;
		if (len - i <= 32)
			break;
		load32(p + i, &a, &b);
		cr = mask32(a, b, '\r');
		lf = mask32(a, b, '\n');
		nul = mask32(a, b, '\0');
		starts = lf << 1 | (ll == 0 ? 1u : 0u);
		if (lf != cr << 1 || (cr >> 31 != 0 && p[i + 32] != '\n') ||
		    nul != 0)
			break;
		/* Lines are rarely shorter than 32 bytes: few starts. */
		for (; starts != 0; starts &= starts - 1)
			if (p[i + (size_t)__builtin_ctz(starts)] == '.')
				break;
		if (starts != 0)
			break;
		if (cr >> 31 != 0) {
			ll = 0;
			i += 33;
		} else {
			ll = lf != 0 ? (size_t)__builtin_clz(lf) : ll + 32;
			i += 32;
		}
	}
	*linelen = ll;
	return i;
}
#endif

enum smtp_parse_rc
smtp_data_scan(struct smtp_data *d, const uint8_t *p, size_t len, size_t *n,
    enum smtp_data_why *why)
{
	size_t i = 0, j, linelen = d->linelen;
	bool dot = d->dot;
	uint8_t c;

	*why = SMTP_DATA_OK;
	while (i < len) {
#if defined(SKIP_SSE2)
		if (!dot && len - i > 32 &&
		    (i = data_run(p, i, len, &linelen)) == len)
			break;
#endif
		c = p[i];
		if (c == '\r') {
			if (i + 1 == len)
				break;	/* wait for what follows the CR */
			if (p[i + 1] != '\n') {
				*n = i;
				*why = SMTP_DATA_BARE_CR;
				return SMTP_PARSE_ERROR;
			}
			i += 2;
			if (dot) {
				*n = i;
				smtp_data_init(d);
				return SMTP_PARSE_OK;
			}
			linelen = 0;
			continue;
		}
		if (c == '\n' || c == '\0') {
			*n = i;
			*why = c == '\n' ? SMTP_DATA_BARE_LF : SMTP_DATA_NUL;
			return SMTP_PARSE_ERROR;
		}
		dot = linelen == 0 && c == '.';
		j = skip_text(p, i + 1, len);
		if (j > i + 1)
			dot = false;
		linelen += j - i;
		i = j;
	}
	d->linelen = linelen;
	d->dot = dot;
	*n = i;
	return SMTP_PARSE_AGAIN;
}

const char *
smtp_data_why_str(enum smtp_data_why why)
{
	switch (why) {
	case SMTP_DATA_OK:
		return "ok";
	case SMTP_DATA_BARE_LF:
		return "bare_lf";
	case SMTP_DATA_BARE_CR:
		return "bare_cr";
	case SMTP_DATA_NUL:
		return "nul";
	}
	return "?";
}

enum smtp_parse_rc
smtp_foreign_parse(const uint8_t *p, size_t len, const char **what)
{
	static const char *const http[] = {
		"GET ", "POST ", "HEAD ", "PUT ", "CONNECT ", "OPTIONS ",
		"DELETE ", "PATCH ", "TRACE ",
	};
	bool undecided = false;
	size_t i, k, m;

	if (len == 0)
		return SMTP_PARSE_AGAIN;
	/* A TLS record: handshake type, then major version 3. */
	if (p[0] == 0x16) {
		if (len < 2)
			return SMTP_PARSE_AGAIN;
		if (p[1] == 0x03) {
			*what = "tls_on_plaintext";
			return SMTP_PARSE_ERROR;
		}
	}
	/* HTTP methods are case-sensitive; mail verbs are not, so a "get"
	 * would not be HTTP anyway. */
	for (i = 0; i < sizeof(http) / sizeof(http[0]); i++) {
		k = strlen(http[i]);
		m = len < k ? len : k;
		if (memcmp(p, http[i], m) != 0)
			continue;
		if (m == k) {
			*what = "http";
			return SMTP_PARSE_ERROR;
		}
		undecided = true;
	}
	return undecided ? SMTP_PARSE_AGAIN : SMTP_PARSE_OK;
}
