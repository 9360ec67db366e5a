/* test_smtp_parse.c - the SMTP line, command, reply and DATA parsers. */
#include <string.h>

#include "check.h"
#include "smtp_parse.h"

#define U(s) ((const uint8_t *)(s))

static void
test_lines(void)
{
	struct smtp_line l;

	CHECK_INT_EQ(smtp_line_parse(U("EHLO x\r\nNOOP"), 12, 512, &l),
	    SMTP_PARSE_OK);
	CHECK_INT_EQ(l.len, 6);
	CHECK_INT_EQ(l.consumed, 8);
	CHECK(!l.bare_lf);
	CHECK_INT_EQ(smtp_line_parse(U("NOOP\n"), 5, 512, &l), SMTP_PARSE_OK);
	CHECK(l.bare_lf);
	CHECK_INT_EQ(l.len, 4);
	CHECK_INT_EQ(smtp_line_parse(U("NOOP\r"), 5, 512, &l),
	    SMTP_PARSE_AGAIN);
	CHECK_INT_EQ(smtp_line_parse(U(""), 0, 512, &l), SMTP_PARSE_AGAIN);
	/* max counts the terminator: 6 bytes + CRLF = 8 */
	CHECK_INT_EQ(smtp_line_parse(U("123456\r\n"), 8, 8, &l),
	    SMTP_PARSE_OK);
	CHECK_INT_EQ(smtp_line_parse(U("1234567\r\n"), 9, 8, &l),
	    SMTP_PARSE_ERROR);
	CHECK_INT_EQ(smtp_line_parse(U("12345678"), 8, 8, &l),
	    SMTP_PARSE_ERROR);
	CHECK_INT_EQ(smtp_line_parse(U("1234567"), 7, 8, &l),
	    SMTP_PARSE_AGAIN);
}

static void
test_commands(void)
{
	struct smtp_cmd c;

	CHECK_INT_EQ(smtp_cmd_parse(U("ehlo client.example"), 19, &c),
	    SMTP_PARSE_OK);
	CHECK_INT_EQ(c.verb, SMTP_VERB_EHLO);
	CHECK_INT_EQ(c.arglen, 14);
	CHECK(memcmp(c.arg, "client.example", 14) == 0);
	smtp_cmd_parse(U("StartTLS"), 8, &c);
	CHECK_INT_EQ(c.verb, SMTP_VERB_STARTTLS);
	CHECK_INT_EQ(c.arglen, 0);
	smtp_cmd_parse(U("STARTTLSX"), 9, &c);
	CHECK_INT_EQ(c.verb, SMTP_VERB_OTHER);
	smtp_cmd_parse(U("MAIL FROM:<a@b>"), 15, &c);
	CHECK_INT_EQ(c.verb, SMTP_VERB_MAIL);
	smtp_cmd_parse(U("xclient ADDR=1.2.3.4"), 20, &c);
	CHECK_INT_EQ(c.verb, SMTP_VERB_XCLIENT);
	smtp_cmd_parse(U("XFORWARD NAME=x"), 15, &c);
	CHECK_INT_EQ(c.verb, SMTP_VERB_XFORWARD);
	smtp_cmd_parse(U("BDAT 10 LAST"), 12, &c);
	CHECK_INT_EQ(c.verb, SMTP_VERB_BDAT);
	smtp_cmd_parse(U(""), 0, &c);
	CHECK_INT_EQ(c.verb, SMTP_VERB_OTHER);
	CHECK_INT_EQ(smtp_cmd_parse(U("NOOP\rRSET"), 9, &c),
	    SMTP_PARSE_ERROR);
	CHECK_INT_EQ(smtp_cmd_parse(U("NOOP\0"), 5, &c), SMTP_PARSE_ERROR);
	/* Where a backend would see another verb than moat: refused. */
	CHECK_INT_EQ(smtp_cmd_parse(U("AUTH\tPLAIN x"), 12, &c),
	    SMTP_PARSE_ERROR);
	CHECK_INT_EQ(smtp_cmd_parse(U(" AUTH PLAIN"), 11, &c),
	    SMTP_PARSE_ERROR);
	CHECK_INT_EQ(smtp_cmd_parse(U("\tDATA"), 5, &c), SMTP_PARSE_ERROR);
	CHECK_INT_EQ(smtp_cmd_parse(U("DATA\t"), 5, &c), SMTP_PARSE_ERROR);
	CHECK_INT_EQ(smtp_cmd_parse(U("XCLIENT\vADDR=1"), 14, &c),
	    SMTP_PARSE_ERROR);
	CHECK_INT_EQ(smtp_cmd_parse(U("MA\x7fIL"), 5, &c), SMTP_PARSE_ERROR);
	/* Blanks after the verb are the backend's business. */
	CHECK_INT_EQ(smtp_cmd_parse(U("MAIL FROM:<a@b>\tSIZE=1"), 22, &c),
	    SMTP_PARSE_OK);
	CHECK_INT_EQ(c.verb, SMTP_VERB_MAIL);
	CHECK_INT_EQ(smtp_cmd_parse(U("RCPT  TO:<a@b>"), 14, &c),
	    SMTP_PARSE_OK);
	CHECK_INT_EQ(c.verb, SMTP_VERB_RCPT);
	CHECK_STR_EQ(smtp_verb_str(SMTP_VERB_AUTH), "auth");
}

static void
test_replies(void)
{
	struct smtp_reply_line r;

	CHECK_INT_EQ(smtp_reply_parse(U("250-mail.example\r\n"), 18, 4096,
	    &r), SMTP_PARSE_OK);
	CHECK_INT_EQ(r.code, 250);
	CHECK(!r.last);
	CHECK_INT_EQ(r.textlen, 12);
	CHECK_INT_EQ(r.consumed, 18);
	smtp_reply_parse(U("535 5.7.8 no\r\n"), 14, 4096, &r);
	CHECK_INT_EQ(r.code, 535);
	CHECK(r.last);
	CHECK_INT_EQ(smtp_reply_parse(U("250\r\n"), 5, 4096, &r),
	    SMTP_PARSE_OK);
	CHECK(r.last);
	CHECK_INT_EQ(r.textlen, 0);
	CHECK_INT_EQ(smtp_reply_parse(U("25"), 2, 4096, &r),
	    SMTP_PARSE_AGAIN);
	CHECK_INT_EQ(smtp_reply_parse(U("HTTP/1.1 200"), 12, 4096, &r),
	    SMTP_PARSE_ERROR);
	CHECK_INT_EQ(smtp_reply_parse(U("199 x\r\n"), 7, 4096, &r),
	    SMTP_PARSE_ERROR);
	CHECK_INT_EQ(smtp_reply_parse(U("250x\r\n"), 6, 4096, &r),
	    SMTP_PARSE_ERROR);
	CHECK_INT_EQ(smtp_reply_parse(U("25\r\n"), 4, 4096, &r),
	    SMTP_PARSE_ERROR);
	CHECK_INT_EQ(smtp_reply_parse(U("250 aaaaaaaa"), 12, 8, &r),
	    SMTP_PARSE_ERROR);
}

/* Scans s in one piece; returns rc, *n and *why. */
static enum smtp_parse_rc
scan(const char *s, size_t len, size_t *n, enum smtp_data_why *why)
{
	struct smtp_data d;

	smtp_data_init(&d);
	return smtp_data_scan(&d, U(s), len, n, why);
}

static void
test_data(void)
{
	static const struct {
		const char *in;
		size_t len;
		enum smtp_data_why why;
	} bad[] = {
		{ "a\r\nb\n.\nMAIL", 12, SMTP_DATA_BARE_LF },
		{ "a\n.\r\n", 5, SMTP_DATA_BARE_LF },
		{ "a\r\n.\n", 5, SMTP_DATA_BARE_LF },
		{ "a\r.\r", 4, SMTP_DATA_BARE_CR },
		{ "a\r.\n", 4, SMTP_DATA_BARE_CR },
		{ "a\n.\r", 4, SMTP_DATA_BARE_LF },
		{ "a\r\n.\rx", 6, SMTP_DATA_BARE_CR },
		{ "a\r.\r\n", 5, SMTP_DATA_BARE_CR },
		{ "a\r\n\0.\r\n", 7, SMTP_DATA_NUL },
	};
	enum smtp_data_why why;
	struct smtp_data d;
	size_t i, n;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		CHECK_INT_EQ(scan(bad[i].in, bad[i].len, &n, &why),
		    SMTP_PARSE_ERROR);
		CHECK_INT_EQ(why, bad[i].why);
	}
	/* The good end, dot-stuffing, an empty message. */
	CHECK_INT_EQ(scan("a\r\n..b\r\n.\r\nQUIT\r\n", 17, &n, &why),
	    SMTP_PARSE_OK);
	CHECK_INT_EQ(n, 11);
	CHECK_INT_EQ(scan(".\r\n", 3, &n, &why), SMTP_PARSE_OK);
	CHECK_INT_EQ(n, 3);
	CHECK_INT_EQ(scan(".x\r\n", 4, &n, &why), SMTP_PARSE_AGAIN);
	CHECK_INT_EQ(n, 4);
	/* A CR at the end waits for its LF. */
	CHECK_INT_EQ(scan("abc\r", 4, &n, &why), SMTP_PARSE_AGAIN);
	CHECK_INT_EQ(n, 3);
	/* Byte by byte reaches the same end. */
	{
		const char *m = "x\r\n.y\r\n.\r\n";
		size_t off = 0, step, total = strlen(m);
		enum smtp_parse_rc rc = SMTP_PARSE_AGAIN;

		smtp_data_init(&d);
		for (step = 1; off < total && rc == SMTP_PARSE_AGAIN;
		    step++) {
			size_t have = step < total ? step : total;

			rc = smtp_data_scan(&d, U(m) + off, have - off, &n,
			    &why);
			off += n;
		}
		CHECK_INT_EQ(rc, SMTP_PARSE_OK);
		CHECK_INT_EQ(off, total);
	}
	CHECK_STR_EQ(smtp_data_why_str(SMTP_DATA_BARE_LF), "bare_lf");
}

/*
 * The scanner as first written, one byte per step: the fast one must
 * agree with it on every input, however the input is split.
 */
static enum smtp_parse_rc
ref_scan(struct smtp_data *d, const uint8_t *p, size_t len, size_t *n,
    enum smtp_data_why *why)
{
	size_t i = 0;

	*why = SMTP_DATA_OK;
	while (i < len) {
		if (p[i] == '\r') {
			if (i + 1 == len)
				break;
			if (p[i + 1] != '\n') {
				*n = i;
				*why = SMTP_DATA_BARE_CR;
				return SMTP_PARSE_ERROR;
			}
			i += 2;
			if (d->dot) {
				*n = i;
				smtp_data_init(d);
				return SMTP_PARSE_OK;
			}
			d->linelen = 0;
			continue;
		}
		if (p[i] == '\n' || p[i] == '\0') {
			*n = i;
			*why = p[i] == '\n' ? SMTP_DATA_BARE_LF : SMTP_DATA_NUL;
			return SMTP_PARSE_ERROR;
		}
		d->dot = d->linelen == 0 && p[i] == '.';
		d->linelen++;
		i++;
	}
	*n = i;
	return SMTP_PARSE_AGAIN;
}

/* Feeds m in pieces of at most step bytes; returns the final rc and
 * where it stopped (offset plus why). */
static enum smtp_parse_rc
feed(bool fast, const uint8_t *m, size_t len, size_t step, size_t *at,
    enum smtp_data_why *why)
{
	struct smtp_data d;
	enum smtp_parse_rc rc = SMTP_PARSE_AGAIN;
	size_t off = 0, n, have = 0;

	smtp_data_init(&d);
	while (rc == SMTP_PARSE_AGAIN) {
		/* Held bytes (a CR at the end) are offered again with more. */
		have = have + step < len ? have + step : len;
		rc = fast ? smtp_data_scan(&d, m + off, have - off, &n, why) :
		    ref_scan(&d, m + off, have - off, &n, why);
		off += n;
		if (rc == SMTP_PARSE_AGAIN && have == len)
			break;
	}
	*at = off;
	return rc;
}

/*
 * The fast scanner against the byte-by-byte one on random messages, fed in
 * random steps. The alphabet decides which paths run: dense hits stop a
 * skip at every position within a word; sparse ones, among TABs, other
 * controls next to CR and high bytes, let whole 32-byte rounds pass and
 * make the SIMD path's cheap test flag rounds that hold no hit.
 */
static unsigned
data_fast_trials(const uint8_t *alphabet, size_t nalpha, size_t maxlen)
{
	uint32_t seed = 12345;
	uint8_t m[400];
	size_t trial, i, len, step, at1, at2;
	enum smtp_data_why w1, w2;
	unsigned bad = 0;

	for (trial = 0; trial < 20000; trial++) {
		len = trial % maxlen;
		for (i = 0; i < len; i++)
			m[i] = alphabet[check_rand(&seed) % nalpha];
		step = 1 + trial % 23;
		if (trial % 3 == 0)
			step = 1 + trial % 97;
		if (feed(true, m, len, step, &at1, &w1) !=
		    feed(false, m, len, step, &at2, &w2) || at1 != at2 ||
		    w1 != w2)
			bad++;
	}
	return bad;
}

static void
test_data_fast(void)
{
	static const uint8_t dense[] = "aaaaaaaaaaaaaaaa..\r\r\n\n";
	uint8_t sparse[256];
	size_t i;

	/* sizeof(dense) counts its NUL, which is a byte to find too. */
	CHECK_INT_EQ(data_fast_trials(dense, sizeof(dense), 96), 0);
	for (i = 0; i < sizeof(sparse); i++)
		sparse[i] = (uint8_t)("abcdefghij.\t\x0b\x0c\x0e\x01\x80\xff"
		    "xyz "[i % 22]);
	sparse[0] = '\r';
	sparse[1] = '\n';
	sparse[2] = '\0';
	sparse[3] = '\r';
	CHECK_INT_EQ(data_fast_trials(sparse, sizeof(sparse), 400), 0);
}

/*
 * The same on text shaped like mail: the 32-byte blocks of the SSE2 path
 * pass whole lines and stop at dot lines, at a CR that ends a block and
 * at every kind of damage.
 */
static void
test_data_text(void)
{
	static uint8_t m[4000];
	uint32_t seed = 4242;
	size_t trial, len, step, at1, at2;
	enum smtp_data_why w1, w2;
	unsigned bad = 0;

	for (trial = 0; trial < 6000; trial++) {
		len = check_mail_text(&seed, m, sizeof(m), trial % 2 == 1);
		step = 1 + check_rand(&seed) % (trial % 3 == 0 ? 40 : 900);
		if (feed(true, m, len, step, &at1, &w1) !=
		    feed(false, m, len, step, &at2, &w2) || at1 != at2 ||
		    w1 != w2)
			bad++;
	}
	CHECK_INT_EQ(bad, 0);
}

static void
test_foreign(void)
{
	const char *what = NULL;

	CHECK_INT_EQ(smtp_foreign_parse(U("GET / HTTP/1.1\r\n"), 16, &what),
	    SMTP_PARSE_ERROR);
	CHECK_STR_EQ(what, "http");
	CHECK_INT_EQ(smtp_foreign_parse(U("CONNECT x:25"), 12, &what),
	    SMTP_PARSE_ERROR);
	CHECK_INT_EQ(smtp_foreign_parse(U("\x16\x03\x01"), 3, &what),
	    SMTP_PARSE_ERROR);
	CHECK_STR_EQ(what, "tls_on_plaintext");
	CHECK_INT_EQ(smtp_foreign_parse(U("\x16"), 1, &what),
	    SMTP_PARSE_AGAIN);
	CHECK_INT_EQ(smtp_foreign_parse(U("PO"), 2, &what), SMTP_PARSE_AGAIN);
	CHECK_INT_EQ(smtp_foreign_parse(U("EHLO x\r\n"), 8, &what),
	    SMTP_PARSE_OK);
	CHECK_INT_EQ(smtp_foreign_parse(U("get x"), 5, &what), SMTP_PARSE_OK);
	CHECK_INT_EQ(smtp_foreign_parse(U("POSTX"), 5, &what),
	    SMTP_PARSE_OK);
}

int
main(void)
{
	test_lines();
	test_commands();
	test_replies();
	test_data();
	test_data_fast();
	test_data_text();
	test_foreign();
	return check_report("smtp_parse");
}
