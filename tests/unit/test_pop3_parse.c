/* test_pop3_parse.c - the POP3 line, command, status and body parsers. */
#include <string.h>

#include "check.h"
#include "pop3_parse.h"

#define U(s) ((const uint8_t *)(s))

static void
test_commands(void)
{
	struct pop3_cmd c;
	struct pop3_line l;

	CHECK_INT_EQ(pop3_line_parse(U("USER a\r\n"), 8, 512, &l),
	    POP3_PARSE_OK);
	CHECK_INT_EQ(l.len, 6);
	CHECK_INT_EQ(pop3_line_parse(U("USER a"), 6, 512, &l),
	    POP3_PARSE_AGAIN);
	CHECK_INT_EQ(pop3_line_parse(U("USER aaaa"), 9, 8, &l),
	    POP3_PARSE_ERROR);
	pop3_cmd_parse(U("user alice"), 10, &c);
	CHECK_INT_EQ(c.verb, POP3_VERB_USER);
	CHECK_INT_EQ(c.arglen, 5);
	pop3_cmd_parse(U("stls"), 4, &c);
	CHECK_INT_EQ(c.verb, POP3_VERB_STLS);
	pop3_cmd_parse(U("LIST"), 4, &c);
	CHECK_INT_EQ(c.verb, POP3_VERB_LIST);
	CHECK_INT_EQ(c.arglen, 0);
	pop3_cmd_parse(U("TOP 1 0"), 7, &c);
	CHECK_INT_EQ(c.verb, POP3_VERB_TOP);
	pop3_cmd_parse(U("XTND"), 4, &c);
	CHECK_INT_EQ(c.verb, POP3_VERB_OTHER);
	CHECK_INT_EQ(pop3_cmd_parse(U("PASS a\rb"), 8, &c), POP3_PARSE_ERROR);
	/* Where a backend may see another keyword than moat: refused. */
	CHECK_INT_EQ(pop3_cmd_parse(U("USER\talice"), 10, &c),
	    POP3_PARSE_ERROR);
	CHECK_INT_EQ(pop3_cmd_parse(U(" USER alice"), 11, &c),
	    POP3_PARSE_ERROR);
	CHECK_INT_EQ(pop3_cmd_parse(U("AUTH\tPLAIN"), 10, &c),
	    POP3_PARSE_ERROR);
	/* A tab in a password is the password's. */
	CHECK_INT_EQ(pop3_cmd_parse(U("PASS a\tb"), 8, &c), POP3_PARSE_OK);
	CHECK_INT_EQ(c.verb, POP3_VERB_PASS);
}

static void
test_status(void)
{
	struct pop3_status st;

	CHECK_INT_EQ(pop3_status_parse(U("+OK Dovecot ready.\r\n"), 20, 4096,
	    &st), POP3_PARSE_OK);
	CHECK_INT_EQ(st.kind, POP3_STATUS_OK);
	CHECK(st.code == NULL);
	CHECK_INT_EQ(pop3_status_parse(U("-ERR [AUTH] Authentication "
	    "failed.\r\n"), 36, 4096, &st), POP3_PARSE_OK);
	CHECK_INT_EQ(st.kind, POP3_STATUS_ERR);
	CHECK_INT_EQ(st.codelen, 4);
	CHECK(memcmp(st.code, "AUTH", 4) == 0);
	pop3_status_parse(U("-ERR [SYS/TEMP] busy\r\n"), 22, 4096, &st);
	CHECK_INT_EQ(st.codelen, 8);
	CHECK_INT_EQ(pop3_status_parse(U("+ \r\n"), 4, 4096, &st),
	    POP3_PARSE_OK);
	CHECK_INT_EQ(st.kind, POP3_STATUS_CONT);
	CHECK_INT_EQ(pop3_status_parse(U("+\r\n"), 3, 4096, &st),
	    POP3_PARSE_OK);
	CHECK_INT_EQ(st.kind, POP3_STATUS_CONT);
	CHECK_INT_EQ(pop3_status_parse(U("+OK"), 3, 4096, &st),
	    POP3_PARSE_AGAIN);
	CHECK_INT_EQ(pop3_status_parse(U("HTTP"), 4, 4096, &st),
	    POP3_PARSE_ERROR);
	CHECK_INT_EQ(pop3_status_parse(U("+OKAY\r\n"), 7, 4096, &st),
	    POP3_PARSE_ERROR);
	CHECK_INT_EQ(pop3_status_parse(U("-ERR [unterminated\r\n"), 20, 4096,
	    &st), POP3_PARSE_OK);
	CHECK(st.code == NULL);
}

static void
test_multi(void)
{
	struct pop3_multi m;
	size_t n;
	const char *body = "a\r\n..\r\n.x\r\n\r\n.\r\n+OK next\r\n";

	pop3_multi_init(&m);
	CHECK_INT_EQ(pop3_multi_scan(&m, U(body), strlen(body), &n),
	    POP3_PARSE_OK);
	CHECK_INT_EQ(n, 16);
	pop3_multi_init(&m);
	CHECK_INT_EQ(pop3_multi_scan(&m, U(".\r\n"), 3, &n), POP3_PARSE_OK);
	CHECK_INT_EQ(n, 3);
	/* Split anywhere, the end is found at the same place. */
	{
		size_t cut, total = strlen(body);

		for (cut = 0; cut <= 16; cut++) {
			size_t a, b = 0;
			enum pop3_parse_rc rc;

			pop3_multi_init(&m);
			rc = pop3_multi_scan(&m, U(body), cut, &a);
			if (rc == POP3_PARSE_AGAIN)
				rc = pop3_multi_scan(&m, U(body) + cut,
				    total - cut, &b);
			CHECK_INT_EQ(rc, POP3_PARSE_OK);
			CHECK_INT_EQ(a + b, 16);
		}
	}
	/* After a long line (found by memchr() on the SSE2 path), an empty
	 * one, then the end. */
	{
		static char lines[300];

		memset(lines, 'x', 200);
		memcpy(lines + 200, "\n\n.\r\n+OK", 9);
		pop3_multi_init(&m);
		CHECK_INT_EQ(pop3_multi_scan(&m, U(lines), 209, &n),
		    POP3_PARSE_OK);
		CHECK_INT_EQ(n, 205);
	}
	/* A line longer than any command bound is just data. */
	{
		static char big[10000];

		memset(big, 'x', sizeof(big));
		pop3_multi_init(&m);
		CHECK_INT_EQ(pop3_multi_scan(&m, U(big), sizeof(big), &n),
		    POP3_PARSE_AGAIN);
		CHECK_INT_EQ(n, sizeof(big));
	}
}

/* The body scanner as first written, one byte per step. */
static bool
ref_end(const uint8_t *p, size_t len, size_t *n)
{
	int st = 0;	/* 0 line start, 1 inside, 2 ".", 3 ".\r" */
	size_t i;

	for (i = 0; i < len; i++) {
		if (st == 0)
			st = p[i] == '.' ? 2 : p[i] == '\n' ? 0 : 1;
		else if (st == 1)
			st = p[i] == '\n' ? 0 : 1;
		else if (p[i] == '\n') {
			*n = i + 1;
			return true;
		} else
			st = p[i] == '\r' && st == 2 ? 3 : 1;
	}
	return false;
}

static void
test_multi_fast(void)
{
	static const uint8_t alphabet[] = "aaaaaaaaaaaa..\r\n\n";
	uint32_t seed = 777;
	uint8_t m[80];
	size_t trial, i, len, step, off, n, want = 0;
	struct pop3_multi st;
	enum pop3_parse_rc rc;
	unsigned bad = 0;
	bool end;

	for (trial = 0; trial < 20000; trial++) {
		len = trial % sizeof(m);
		for (i = 0; i < len; i++)
			m[i] = alphabet[check_rand(&seed) %
			    (sizeof(alphabet) - 1)];
		end = ref_end(m, len, &want);
		step = 1 + trial % 19;
		pop3_multi_init(&st);
		rc = POP3_PARSE_AGAIN;
		for (off = 0; off < len && rc == POP3_PARSE_AGAIN; off += n) {
			rc = pop3_multi_scan(&st, m + off,
			    len - off < step ? len - off : step, &n);
		}
		if (end != (rc == POP3_PARSE_OK) || (end && off != want))
			bad++;
	}
	CHECK_INT_EQ(bad, 0);
}

/* The same on text shaped like mail, in pieces of up to 900 bytes: the
 * SSE2 path and its memchr() jumps over long lines. */
static void
test_multi_text(void)
{
	static uint8_t m[4000];
	uint32_t seed = 99;
	size_t trial, len, step, off, n, want = 0;
	struct pop3_multi st;
	enum pop3_parse_rc rc;
	unsigned bad = 0, ends = 0;
	bool end;

	for (trial = 0; trial < 6000; trial++) {
		len = check_mail_text(&seed, m, sizeof(m), trial % 2 == 1);
		end = ref_end(m, len, &want);
		ends += end;
		step = 1 + check_rand(&seed) % (trial % 3 == 0 ? 40 : 900);
		pop3_multi_init(&st);
		rc = POP3_PARSE_AGAIN;
		for (off = 0; off < len && rc == POP3_PARSE_AGAIN; off += n)
			rc = pop3_multi_scan(&st, m + off,
			    len - off < step ? len - off : step, &n);
		if (end != (rc == POP3_PARSE_OK) || (end && off != want))
			bad++;
	}
	CHECK_INT_EQ(bad, 0);
	/* Both outcomes are common enough to test something. */
	CHECK(ends > 600 && ends < 5400);
}

int
main(void)
{
	test_commands();
	test_status();
	test_multi();
	test_multi_fast();
	test_multi_text();
	return check_report("pop3_parse");
}
