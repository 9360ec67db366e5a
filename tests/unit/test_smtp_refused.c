/* test_smtp_refused.c - unit tests for the replies after an SMTP 554. */
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "buf.h"
#include "check.h"
#include "smtp_refused.h"

/* Feeds s whole; returns the bytes taken and leaves the replies in out. */
static size_t
feed(struct smtp_refused *r, const char *s, bool eof, struct buf *out)
{
	return smtp_refused_feed(r, (const uint8_t *)s, strlen(s), eof, out);
}

/* Whether out holds exactly the text want. */
static bool
holds(const struct buf *out, const char *want)
{
	size_t n = strlen(want);

	if (buf_len(out) != n)
		return false;
	return n == 0 || memcmp(buf_data(out), want, n) == 0;
}

static void
test_quit_after_commands(void)
{
	struct smtp_refused r = { 0 };
	struct buf out;

	CHECK(!r.listening);	/* zeroed: not listening */
	buf_init(&out, BUF_BLOCK);
	smtp_refused_init(&r);
	/* Pipelined, in any case, bare LF too; what follows QUIT stays. */
	CHECK_INT_EQ(feed(&r, "EHLO x\r\nnoop\nQuit\r\nNOOP\r\n", false,
	    &out), 19);
	CHECK(holds(&out, SMTP_REFUSED_503 SMTP_REFUSED_503
	    SMTP_REFUSED_221));
	CHECK(!r.listening);
	buf_clear(&out);
}

static void
test_partial_line_waits(void)
{
	struct smtp_refused r;
	struct buf out;

	buf_init(&out, BUF_BLOCK);
	smtp_refused_init(&r);
	CHECK_INT_EQ(feed(&r, "HELO x\r\nQU", false, &out), 8);
	CHECK(holds(&out, SMTP_REFUSED_503));
	CHECK(r.listening);
	CHECK_INT_EQ(feed(&r, "QUIT\r\n", false, &out), 6);
	CHECK(holds(&out, SMTP_REFUSED_503 SMTP_REFUSED_221));
	CHECK(!r.listening);
	buf_clear(&out);
	/* A client gone mid-line is not answered and not waited for. */
	smtp_refused_init(&r);
	CHECK_INT_EQ(feed(&r, "QUIT", true, &out), 0);
	CHECK(holds(&out, ""));
	CHECK(!r.listening);
}

static void
test_bounds(void)
{
	struct smtp_refused r;
	struct buf out;
	char line[SMTP_REFUSED_LINE_MAX + 8];
	size_t i;

	buf_init(&out, BUF_BLOCK);
	smtp_refused_init(&r);
	for (i = 0; i < SMTP_REFUSED_COMMANDS_MAX + 5; i++)
		(void)feed(&r, "NOOP\r\n", false, &out);
	CHECK_INT_EQ(buf_len(&out),
	    SMTP_REFUSED_COMMANDS_MAX * strlen(SMTP_REFUSED_503));
	CHECK(!r.listening);
	buf_clear(&out);
	/* A line of the longest length is answered, one byte more is not. */
	smtp_refused_init(&r);
	memset(line, 'x', sizeof(line));
	memcpy(line + SMTP_REFUSED_LINE_MAX - 2, "\r\n", 3);
	CHECK_INT_EQ(feed(&r, line, false, &out), SMTP_REFUSED_LINE_MAX);
	CHECK(holds(&out, SMTP_REFUSED_503));
	CHECK(r.listening);
	buf_clear(&out);
	memcpy(line + SMTP_REFUSED_LINE_MAX - 2, "x\r\n", 4);
	CHECK_INT_EQ(feed(&r, line, false, &out), 0);
	CHECK(holds(&out, ""));
	CHECK(!r.listening);
	buf_pool_clear();
}

int
main(void)
{
	test_quit_after_commands();
	test_partial_line_waits();
	test_bounds();
	return check_report("smtp_refused");
}
