/* test_smtp_filter.c - the SMTP filter driven through its ops, no sockets. */
#include <stdbool.h>
#include <string.h>

#include "check.h"
#include "cmdflow.h"
#include "filter_fake.h"
#include "smtp.h"

/*
 * meson links this test with -Wl,--wrap=calloc, so the filter's calloc
 * calls land here: the test can refuse the reply FIFO its full-size ring.
 */
void *__real_calloc(size_t, size_t);
void *__wrap_calloc(size_t, size_t);

static bool refuse_big_fifo;

void *
__wrap_calloc(size_t n, size_t size)
{
	if (refuse_big_fifo && n == CMDFLOW_PENDING_MAX &&
	    size == sizeof(struct pend))
		return NULL;
	return __real_calloc(n, size);
}

#define GREETING "220 mail.example ESMTP\r\n"
#define EHLO_REPLY "250-mail.example\r\n250-PIPELINING\r\n" \
	"250-SIZE 10240000\r\n250-STARTTLS\r\n250-AUTH PLAIN LOGIN\r\n" \
	"250-AUTH=PLAIN LOGIN\r\n250-XCLIENT NAME ADDR\r\n" \
	"250-XFORWARD NAME\r\n250-8BITMIME\r\n250 CHUNKING\r\n"

static struct filter_io *
greeted(enum cfg_tls_mode tls, bool require_tls)
{
	struct filter_io *io = fake_new(&filter_smtp, CFG_PROTO_SMTP, tls,
	    require_tls, 2048);

	fake_backend(io, GREETING);
	CHECK_STR_EQ(fake_take_client(io), GREETING);
	return io;
}

/* A STARTTLS listener's session, greeted and just past STARTTLS. */
static struct filter_io *
after_starttls(void)
{
	struct filter_io *io = greeted(CFG_TLS_STARTTLS, false);

	fake_client(io, "STARTTLS\r\n");
	fake_take_client(io);
	fake_handshake(io);
	return io;
}

static void
test_ehlo_rewrite(void)
{
	struct filter_io *io = greeted(CFG_TLS_STARTTLS, false);

	fake_client(io, "EHLO client\r\n");
	CHECK_STR_EQ(fake_take_backend(io), "EHLO client\r\n");
	fake_backend(io, EHLO_REPLY);
	CHECK_STR_EQ(fake_take_client(io), "250-mail.example\r\n250-PIPELINING\r\n"
	    "250-SIZE 10240000\r\n250-AUTH PLAIN LOGIN\r\n"
	    "250-AUTH=PLAIN LOGIN\r\n250-8BITMIME\r\n250 STARTTLS\r\n");
	/* A one-line reply grows a second line. */
	fake_client(io, "EHLO client\r\n");
	fake_backend(io, "250 mail.example\r\n");
	CHECK_STR_EQ(fake_take_client(io), "250-mail.example\r\n250 STARTTLS\r\n");
	/* HELO and a refused EHLO are relayed untouched. */
	fake_client(io, "EHLO x\r\n");
	fake_backend(io, "550 5.7.1 go away\r\n");
	CHECK_STR_EQ(fake_take_client(io), "550 5.7.1 go away\r\n");
	fake_free(io);

	/* require_tls hides AUTH before TLS. */
	io = greeted(CFG_TLS_STARTTLS, true);
	fake_client(io, "EHLO client\r\n");
	fake_backend(io, EHLO_REPLY);
	CHECK_STR_EQ(fake_take_client(io), "250-mail.example\r\n250-PIPELINING\r\n"
	    "250-SIZE 10240000\r\n250-8BITMIME\r\n250 STARTTLS\r\n");
	fake_free(io);

	/* Implicit TLS and plain listeners never offer STARTTLS. */
	io = greeted(CFG_TLS_IMPLICIT, false);
	fake_client(io, "EHLO client\r\n");
	fake_backend(io, EHLO_REPLY);
	CHECK_STR_EQ(fake_take_client(io), "250-mail.example\r\n250-PIPELINING\r\n"
	    "250-SIZE 10240000\r\n250-AUTH PLAIN LOGIN\r\n"
	    "250-AUTH=PLAIN LOGIN\r\n250 8BITMIME\r\n");
	fake_client(io, "STARTTLS\r\n");
	CHECK_STR_EQ(fake_take_client(io), "503 5.5.1 Error: TLS already active\r\n");
	fake_free(io);
	io = greeted(CFG_TLS_NONE, false);
	fake_client(io, "STARTTLS\r\n");
	CHECK_STR_EQ(fake_take_client(io),
	    "502 5.5.1 Error: command not implemented\r\n");
	CHECK_STR_EQ(fake_take_backend(io), "");
	fake_free(io);
}

static void
test_starttls(void)
{
	struct filter_io *io = greeted(CFG_TLS_STARTTLS, true);

	fake_client(io, "EHLO client\r\n");
	fake_backend(io, EHLO_REPLY);
	fake_take_client(io);
	fake_take_backend(io);
	/* require_tls: refused locally, never forwarded */
	fake_client(io, "MAIL FROM:<a@b>\r\nAUTH PLAIN AGFAAGI=\r\n");
	CHECK_STR_EQ(fake_take_client(io),
	    "530 5.7.0 Must issue a STARTTLS command first\r\n"
	    "530 5.7.0 Must issue a STARTTLS command first\r\n");
	CHECK_STR_EQ(fake_take_backend(io), "");
	/* One write: STARTTLS and an injected command. */
	fake_client(io, "STARTTLS\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n"
	    "DATA\r\n");
	CHECK_STR_EQ(fake_take_client(io), "220 2.0.0 Ready to start TLS\r\n");
	CHECK_STR_EQ(fake_take_backend(io), "");
	CHECK(io->starttls);
	/* Bytes before the handshake: dropped, never answered. */
	fake_client(io, "NOOP\r\n");
	fake_handshake(io);
	CHECK_STR_EQ(fake_take_client(io), "");
	CHECK_STR_EQ(fake_take_backend(io), "");
	/* moat's RSET goes out with the first command after TLS, and its
	 * reply is swallowed; MAIL before EHLO is refused. */
	fake_client(io, "MAIL FROM:<a@b>\r\n");
	CHECK_STR_EQ(fake_take_backend(io), "RSET\r\n");
	CHECK_STR_EQ(fake_take_client(io), "");
	fake_backend(io, "250 2.0.0 Ok\r\n");
	CHECK_STR_EQ(fake_take_client(io), "503 5.5.1 Error: send EHLO first\r\n");
	fake_client(io, "EHLO client\r\n");
	CHECK_STR_EQ(fake_take_backend(io), "EHLO client\r\n");
	fake_backend(io, EHLO_REPLY);
	CHECK_STR_EQ(fake_take_client(io), "250-mail.example\r\n250-PIPELINING\r\n"
	    "250-SIZE 10240000\r\n250-AUTH PLAIN LOGIN\r\n"
	    "250-AUTH=PLAIN LOGIN\r\n250 8BITMIME\r\n");
	fake_client(io, "STARTTLS\r\n");
	CHECK_STR_EQ(fake_take_client(io), "503 5.5.1 Error: TLS already active\r\n");
	fake_client(io, "MAIL FROM:<a@b>\r\n");
	CHECK_STR_EQ(fake_take_backend(io), "MAIL FROM:<a@b>\r\n");
	fake_free(io);

	/* STARTTLS inside a transaction, pipelined behind MAIL. */
	io = greeted(CFG_TLS_STARTTLS, false);
	fake_client(io, "EHLO c\r\nMAIL FROM:<a@b>\r\nSTARTTLS\r\nNOOP\r\n");
	CHECK_STR_EQ(fake_take_backend(io), "EHLO c\r\nMAIL FROM:<a@b>\r\n");
	fake_backend(io, "250 mail\r\n250 2.1.0 Ok\r\n");
	CHECK_STR_EQ(fake_take_client(io), "250-mail\r\n250 STARTTLS\r\n"
	    "250 2.1.0 Ok\r\n503 5.5.1 Error: MAIL transaction in progress\r\n");
	CHECK(!io->starttls);
	CHECK_STR_EQ(fake_take_backend(io), "NOOP\r\n");
	fake_free(io);

	/* STARTTLS after a successful AUTH is refused. */
	io = greeted(CFG_TLS_STARTTLS, false);
	fake_client(io, "AUTH PLAIN AGFAAGI=\r\n");
	fake_backend(io, "235 2.7.0 Authentication successful\r\n");
	fake_take_client(io);
	fake_client(io, "STARTTLS\r\n");
	CHECK_STR_EQ(fake_take_client(io),
	    "503 5.5.1 Error: STARTTLS after AUTH is not allowed\r\n");
	fake_free(io);
}

/*
 * A client that pipelines its first commands behind the EHLO it owes
 * after STARTTLS: they wait for that EHLO's reply and then pass, and
 * are refused only when the EHLO failed. Commands behind an ordinary
 * EHLO are not held.
 */
static void
test_ehlo_pipelined_after_starttls(void)
{
	struct filter_io *io = greeted(CFG_TLS_STARTTLS, false);

	fake_client(io, "EHLO c\r\n");
	fake_backend(io, "250 mail\r\n");
	fake_take_client(io);
	fake_take_backend(io);
	fake_client(io, "STARTTLS\r\n");
	CHECK_STR_EQ(fake_take_client(io), "220 2.0.0 Ready to start TLS\r\n");
	fake_handshake(io);
	fake_client(io, "EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n");
	CHECK_STR_EQ(fake_take_backend(io), "RSET\r\nEHLO c\r\n");
	fake_backend(io, "250 2.0.0 Ok\r\n250-mail\r\n250 8BITMIME\r\n");
	CHECK_STR_EQ(fake_take_client(io), "250-mail\r\n250 8BITMIME\r\n");
	CHECK_STR_EQ(fake_take_backend(io),
	    "MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n");
	fake_backend(io, "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n");
	CHECK_STR_EQ(fake_take_client(io), "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n");
	fake_free(io);

	/* The EHLO fails: what follows it is still refused. */
	io = after_starttls();
	fake_client(io, "EHLO\r\nMAIL FROM:<a@b>\r\n");
	CHECK_STR_EQ(fake_take_backend(io), "RSET\r\nEHLO\r\n");
	fake_backend(io, "250 2.0.0 Ok\r\n501 5.5.4 Syntax: EHLO hostname\r\n");
	CHECK_STR_EQ(fake_take_client(io), "501 5.5.4 Syntax: EHLO hostname\r\n"
	    "503 5.5.1 Error: send EHLO first\r\n");
	CHECK_STR_EQ(fake_take_backend(io), "");
	fake_free(io);

	/* The backend shuts down instead of answering moat's own RSET:
	 * its 421 reaches the client. */
	io = after_starttls();
	fake_client(io, "EHLO c\r\n");
	CHECK_STR_EQ(fake_take_backend(io), "RSET\r\nEHLO c\r\n");
	fake_backend(io, "421 4.3.2 Shutting down\r\n");
	CHECK_STR_EQ(fake_take_client(io), "421 4.3.2 Shutting down\r\n");
	fake_free(io);

	/* An AUTH pipelined behind an ordinary EHLO still holds its SASL
	 * response when that EHLO's reply comes in. */
	io = greeted(CFG_TLS_IMPLICIT, false);
	fake_client(io, "EHLO c\r\nAUTH LOGIN\r\nYWxpY2U=\r\n");
	CHECK_STR_EQ(fake_take_backend(io), "EHLO c\r\nAUTH LOGIN\r\n");
	fake_backend(io, "250 mail\r\n");
	CHECK_STR_EQ(fake_take_client(io), "250 mail\r\n");
	CHECK_STR_EQ(fake_take_backend(io), "");
	fake_backend(io, "334 VXNlcm5hbWU6\r\n");
	CHECK_STR_EQ(fake_take_backend(io), "YWxpY2U=\r\n");
	fake_free(io);
}

static void
test_pipelining_order(void)
{
	struct filter_io *io = greeted(CFG_TLS_NONE, false);

	fake_client(io, "EHLO c\r\nXCLIENT ADDR=1.2.3.4\r\nNOOP\r\n"
	    "BDAT 3 LAST\r\nXFORWARD NAME=x\r\nRSET\r\n");
	CHECK_STR_EQ(fake_take_backend(io), "EHLO c\r\nNOOP\r\nRSET\r\n");
	CHECK_STR_EQ(fake_take_client(io), "");
	fake_backend(io, "250-mail\r\n250 PIPELINING\r\n");
	CHECK_STR_EQ(fake_take_client(io), "250-mail\r\n250 PIPELINING\r\n"
	    "550 5.7.0 Error: insufficient authorization\r\n");
	fake_backend(io, "250 2.0.0 Ok\r\n250 2.0.0 Ok\r\n");
	CHECK_STR_EQ(fake_take_client(io), "250 2.0.0 Ok\r\n"
	    "502 5.5.1 Error: BDAT not supported (CHUNKING is not offered)\r\n"
	    "550 5.7.0 Error: insufficient authorization\r\n"
	    "250 2.0.0 Ok\r\n");
	CHECK_INT_EQ(io->nsig[FILTER_SIG_GLITCH], 2);
	/* A command with a bare LF is normalised; a CR inside is refused. */
	fake_client(io, "NOOP\nNO\rOP\r\n");
	CHECK_STR_EQ(fake_take_backend(io), "NOOP\r\n");
	fake_backend(io, "250 Ok\r\n");
	CHECK_STR_EQ(fake_take_client(io),
	    "250 Ok\r\n500 5.5.2 Error: bad characters in command\r\n");
	fake_free(io);
}

static const char *
message_through(const char *body, struct filter_io **iop)
{
	struct filter_io *io = greeted(CFG_TLS_STARTTLS, false);

	fake_client(io, "EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n"
	    "DATA\r\n");
	fake_backend(io, "250 mail\r\n250 Ok\r\n250 Ok\r\n354 go\r\n");
	fake_take_client(io);
	fake_take_backend(io);
	fake_client(io, body);
	*iop = io;
	return fake_take_backend(io);
}

static void
test_smuggling(void)
{
	static const char *variants[] = {
		"Subject: a\r\n\r\nx\n.\nMAIL FROM:<s@x>\r\n",
		"Subject: a\r\n\r\nx\n.\r\nMAIL FROM:<s@x>\r\n",
		"Subject: a\r\n\r\nx\r\n.\nMAIL FROM:<s@x>\r\n",
		"Subject: a\r\n\r\nx\r.\rMAIL FROM:<s@x>\r\n",
		"Subject: a\r\n\r\nx\r.\nMAIL FROM:<s@x>\r\n",
		"Subject: a\r\n\r\nx\n.\rMAIL FROM:<s@x>\r\n",
		"Subject: a\r\n\r\nx\r\n.\rMAIL FROM:<s@x>\r\n",
		"Subject: a\r\n\r\nx\r.\r\nMAIL FROM:<s@x>\r\n",
	};
	struct filter_io *io;
	const char *fw;
	size_t i;

	for (i = 0; i < sizeof(variants) / sizeof(variants[0]); i++) {
		fw = message_through(variants[i], &io);
		CHECK(strstr(fw, "MAIL") == NULL);
		CHECK(strstr(fw, "\n.") == NULL && strstr(fw, "\r.") == NULL);
		CHECK(io->aborted);
		CHECK_STR_EQ(io->closed, "smuggling");
		CHECK_INT_EQ(io->nsig[FILTER_SIG_SMUGGLING], 1);
		CHECK(strncmp(fake_take_client(io), "554 5.6.0 Message rejected: ",
		    28) == 0);
		fake_free(io);
	}
	/* NUL before the dot. */
	{
		static const char nul[] = "Subject: a\r\n\r\nx\r\n\0.\r\n";

		io = greeted(CFG_TLS_NONE, false);
		fake_client(io, "MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n");
		fake_backend(io, "250 Ok\r\n250 Ok\r\n354 go\r\n");
		fake_take_backend(io);
		fake_client_bytes(io, nul, sizeof(nul) - 1);
		CHECK(io->aborted);
		CHECK_STR_EQ(io->sigreason[FILTER_SIG_SMUGGLING], "nul");
		fake_free(io);
	}
	/* Clean lines arriving in pieces pass; the bad one aborts. */
	io = greeted(CFG_TLS_NONE, false);
	fake_client(io, "MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n");
	fake_backend(io, "250 Ok\r\n250 Ok\r\n354 go\r\n");
	fake_take_backend(io);
	fake_take_client(io);
	fake_client(io, "line one\r\nline t");
	CHECK_STR_EQ(fake_take_backend(io), "line one\r\nline t");
	fake_client(io, "wo\r");
	CHECK_STR_EQ(fake_take_backend(io), "wo");
	fake_client(io, "\nbad\n");
	CHECK(io->aborted);
	CHECK_STR_EQ(fake_take_client(io), "554 5.6.0 Message rejected: bare LF in "
	    "message (SMTP smuggling guard)\r\n");
	CHECK_STR_EQ(io->sigreason[FILTER_SIG_SMUGGLING], "bare_lf");
	fake_free(io);

	/* A good message, and pipelining after its end. */
	fw = message_through("Subject: a\r\n\r\n..dot\r\nbody\r\n.\r\nQUIT\r\n",
	    &io);
	CHECK_STR_EQ(fw, "Subject: a\r\n\r\n..dot\r\nbody\r\n.\r\nQUIT\r\n");
	CHECK(!io->aborted);
	fake_backend(io, "250 2.0.0 Ok: queued\r\n221 Bye\r\n");
	CHECK_STR_EQ(fake_take_client(io), "250 2.0.0 Ok: queued\r\n221 Bye\r\n");
	fake_free(io);

	/* Body bytes sent with DATA wait for the 354. */
	io = greeted(CFG_TLS_NONE, false);
	fake_client(io, "MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nx\n.\n");
	CHECK_STR_EQ(fake_take_backend(io), "MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n"
	    "DATA\r\n");
	fake_backend(io, "250 Ok\r\n554 no valid recipients\r\n");
	CHECK(!io->aborted);
	fake_backend(io, "554 5.5.1 Error: no valid recipients\r\n");
	/* DATA refused: the rest are commands again ("x", "."). */
	CHECK_STR_EQ(fake_take_backend(io), "x\r\n.\r\n");
	fake_free(io);
}

static void
test_auth_signals(void)
{
	struct filter_io *io = greeted(CFG_TLS_IMPLICIT, false);

	fake_client(io, "AUTH PLAIN AGFAAGI=\r\nNOOP\r\n");
	CHECK_STR_EQ(fake_take_backend(io), "AUTH PLAIN AGFAAGI=\r\n");
	fake_backend(io, "535 5.7.8 Error: authentication failed\r\n");
	CHECK_STR_EQ(fake_take_backend(io), "NOOP\r\n");
	CHECK_INT_EQ(io->nsig[FILTER_SIG_AUTH_FAIL], 1);
	CHECK_STR_EQ(io->sigreason[FILTER_SIG_AUTH_FAIL], "smtp_auth");
	fake_backend(io, "250 Ok\r\n");
	/* AUTH LOGIN: 334s are skipped, SASL lines forwarded. */
	fake_client(io, "AUTH LOGIN\r\n");
	fake_backend(io, "334 VXNlcm5hbWU6\r\n");
	fake_client(io, "YWxpY2U=\r\n");
	fake_backend(io, "334 UGFzc3dvcmQ6\r\n");
	fake_client(io, "d3Jvbmc=\r\n");
	CHECK_STR_EQ(fake_take_backend(io), "AUTH LOGIN\r\nYWxpY2U=\r\n"
	    "d3Jvbmc=\r\n");
	CHECK_INT_EQ(io->nsig[FILTER_SIG_AUTH_FAIL], 1);
	fake_backend(io, "535 5.7.8 Error: authentication failed\r\n");
	CHECK_INT_EQ(io->nsig[FILTER_SIG_AUTH_FAIL], 2);
	/* Temporary failure counted apart. */
	fake_client(io, "AUTH PLAIN AGFAAGI=\r\n");
	fake_backend(io, "454 4.7.0 Temporary authentication failure\r\n");
	CHECK_INT_EQ(io->nsig[FILTER_SIG_AUTH_FAIL], 2);
	CHECK_INT_EQ(io->nsig[FILTER_SIG_AUTH_TEMPFAIL], 1);
	/* A 535 to RCPT is not an auth failure; a syntax error neither. */
	fake_client(io, "MAIL FROM:<a@b>\r\nRCPT TO:<535@x>\r\n");
	fake_backend(io, "250 Ok\r\n550 <535@x>: 535 rejected\r\n");
	fake_client(io, "AUTH\r\n");
	fake_backend(io, "501 5.5.4 Syntax: AUTH mechanism\r\n");
	CHECK_INT_EQ(io->nsig[FILTER_SIG_AUTH_FAIL], 2);
	/* A "*" cancel (RFC 4954 4) is answered 501, by Postfix with a
	 * 5.7.0: the client gave up, it guessed nothing. */
	fake_client(io, "AUTH LOGIN\r\n");
	fake_backend(io, "334 VXNlcm5hbWU6\r\n");
	fake_client(io, "*\r\n");
	fake_backend(io, "501 5.7.0 Authentication aborted\r\n");
	CHECK_INT_EQ(io->nsig[FILTER_SIG_AUTH_FAIL], 2);
	/* Postfix refuses a mechanism it does not offer with the 535 of a
	 * wrong password, before any response: nothing was guessed. */
	fake_client(io, "AUTH NTLM\r\n");
	fake_backend(io, "535 5.7.8 Error: authentication failed: Invalid "
	    "authentication mechanism\r\n");
	fake_client(io, "AUTH EXTERNAL =\r\n");
	fake_backend(io, "535 5.7.8 Error: authentication failed: Invalid "
	    "authentication mechanism\r\n");
	CHECK_INT_EQ(io->nsig[FILTER_SIG_AUTH_FAIL], 2);
	/* A response after a 334 counts, whatever the server makes of it. */
	fake_client(io, "AUTH PLAIN\r\n");
	fake_backend(io, "334 \r\n");
	fake_client(io, "!!\r\n");
	fake_backend(io, "535 5.7.8 Error: authentication failed: Invalid "
	    "base64 data in continued response\r\n");
	CHECK_INT_EQ(io->nsig[FILTER_SIG_AUTH_FAIL], 3);
	/* Postfix splits AUTH's arguments on tabs, vertical tabs and form
	 * feeds too and would check this password; moat answers it. */
	(void)fake_take_backend(io);
	(void)fake_take_client(io);
	fake_client(io, "AUTH PLAIN\tAGFAAGI=\r\nAUTH PLAIN\x0b"
	    "AGFAAGI=\r\nauth LOGIN \x0cYWxpY2U=\r\n");
	CHECK_STR_EQ(fake_take_backend(io), "");
	CHECK_STR_EQ(fake_take_client(io),
	    "500 5.5.2 Error: bad characters in command\r\n"
	    "500 5.5.2 Error: bad characters in command\r\n"
	    "500 5.5.2 Error: bad characters in command\r\n");
	CHECK_INT_EQ(io->nsig[FILTER_SIG_GLITCH], 3);
	CHECK_INT_EQ(io->nsig[FILTER_SIG_AUTH_FAIL], 3);
	fake_client(io, "AUTH PLAIN AGFAAGI=\r\n");
	fake_backend(io, "235 2.7.0 Authentication successful\r\n");
	CHECK_INT_EQ(io->nsig[FILTER_SIG_AUTH_OK], 1);
	CHECK(strstr(io->sigs, "AGFA") == NULL);
	fake_free(io);

	/* A SASL line moat cannot pass on gets an answer before the end. */
	io = greeted(CFG_TLS_IMPLICIT, false);
	fake_client(io, "AUTH LOGIN\r\n");
	fake_backend(io, "334 VXNlcm5hbWU6\r\n");
	(void)fake_take_client(io);
	fake_client_bytes(io, "YWx\0pY2U=\r\n", 11);
	CHECK_STR_EQ(fake_take_client(io), "421 4.7.0 Error: malformed "
	    "authentication response, closing connection\r\n");
	CHECK(io->closed != NULL && strcmp(io->closed, "bad_sasl_line") == 0);
	CHECK(strstr(fake_take_backend(io), "YWx") == NULL);
	fake_free(io);
}

static void
test_abuse(void)
{
	struct filter_io *io;
	char line[3000];

	/* Cross-protocol first bytes close at once, unanswered. */
	io = fake_new(&filter_smtp, CFG_PROTO_SMTP, CFG_TLS_STARTTLS, false,
	    2048);
	fake_client(io, "GET / HTTP/1.1\r\n");
	CHECK_STR_EQ(io->closed, "foreign_protocol");
	CHECK_INT_EQ(io->nsig[FILTER_SIG_FOREIGN], 1);
	fake_backend(io, GREETING);
	CHECK_STR_EQ(fake_take_client(io), "");
	fake_free(io);
	io = greeted(CFG_TLS_STARTTLS, false);
	fake_client_bytes(io, "\x16\x03\x01\x02\x00\x01", 6);
	CHECK_STR_EQ(io->closed, "foreign_protocol");
	CHECK_STR_EQ(io->sigreason[FILTER_SIG_FOREIGN], "tls_on_plaintext");
	fake_free(io);

	/* Early talker: reported, then served after the greeting. */
	io = fake_new(&filter_smtp, CFG_PROTO_SMTP, CFG_TLS_NONE, false, 2048);
	fake_client(io, "EHLO early\r\n");
	CHECK_STR_EQ(io->sigreason[FILTER_SIG_GLITCH], "early_talker");
	CHECK_STR_EQ(fake_take_backend(io), "");
	fake_backend(io, GREETING);
	CHECK_STR_EQ(fake_take_backend(io), "EHLO early\r\n");
	fake_free(io);

	/* Long lines: 500 twice, the third closes. */
	io = greeted(CFG_TLS_NONE, false);
	fake_long_line(line, sizeof(line), "NOOP ");
	fake_client(io, line);
	fake_client(io, "NOOP\r\n");
	CHECK_STR_EQ(fake_take_backend(io), "NOOP\r\n");
	fake_backend(io, "250 Ok\r\n");
	CHECK_STR_EQ(fake_take_client(io),
	    "500 5.5.2 Error: line too long\r\n250 Ok\r\n");
	fake_client(io, line);
	CHECK(io->closed == NULL);
	fake_client(io, line);
	CHECK_STR_EQ(io->closed, "line_too_long");
	CHECK_INT_EQ(io->nsig[FILTER_SIG_GLITCH], 3);
	fake_free(io);

	/* A broken backend reply ends the session; as its greeting it is
	 * a backend failure (an HTTP server at the backend address). */
	io = fake_new(&filter_smtp, CFG_PROTO_SMTP, CFG_TLS_NONE, false, 2048);
	fake_backend(io, "HTTP/1.0 200 OK\r\n");
	CHECK_STR_EQ(io->closed, "backend_bad_reply");
	CHECK_INT_EQ(io->nbadgreeting, 1);
	fake_free(io);

	/* Later, it is the session's end alone. */
	io = greeted(CFG_TLS_NONE, false);
	fake_client(io, "NOOP\r\n");
	CHECK_STR_EQ(fake_take_backend(io), "NOOP\r\n");
	fake_backend(io, "garbage\r\n");
	CHECK_STR_EQ(io->closed, "backend_bad_reply");
	CHECK_INT_EQ(io->nbadgreeting, 0);
	fake_free(io);
}

/*
 * Regression (issue 9, test_faults.py test_client_long_lines[endless]): a
 * line that never ends was skipped forever after the first 500, so the
 * session lived as long as the client kept sending.
 */
static void
test_endless_line_closes(void)
{
	struct filter_io *io = greeted(CFG_TLS_NONE, false);
	char chunk[4096];
	int i;

	memset(chunk, 'x', sizeof(chunk) - 1);
	chunk[sizeof(chunk) - 1] = '\0';
	for (i = 0; i < 4 && io->closed == NULL; i++)
		fake_client(io, chunk);
	CHECK(io->closed == NULL);	/* skipping: still within bounds */
	CHECK_STR_EQ(fake_take_client(io), "500 5.5.2 Error: line too long\r\n");
	for (i = 0; i < 40 && io->closed == NULL; i++)
		fake_client(io, chunk);
	CHECK_STR_EQ(io->closed, "line_too_long");
	CHECK_STR_EQ(fake_take_client(io),
	    "421 4.7.0 Error: line too long, closing connection\r\n");
	CHECK_STR_EQ(fake_take_backend(io), "");
	fake_free(io);
}

/*
 * moat's closing lines wait for the end of a reply the backend relays in
 * part: inside "214-part one" a 421 would be read as that reply's last
 * line. There the session only closes.
 */
static void
test_closing_lines_not_inside_a_reply(void)
{
	struct filter_io *io = greeted(CFG_TLS_NONE, false);
	char line[3000], chunk[4096];
	int i;

	fake_long_line(line, sizeof(line), "NOOP ");
	fake_client(io, "HELP\r\n");
	CHECK_STR_EQ(fake_take_backend(io), "HELP\r\n");
	fake_backend(io, "214-part one\r\n");
	for (i = 0; i < 3; i++)
		fake_client(io, line);
	CHECK_STR_EQ(io->closed, "line_too_long");
	CHECK_STR_EQ(fake_take_client(io), "214-part one\r\n");
	fake_free(io);

	/* An endless line. */
	io = greeted(CFG_TLS_NONE, false);
	memset(chunk, 'x', sizeof(chunk) - 1);
	chunk[sizeof(chunk) - 1] = '\0';
	fake_client(io, "HELP\r\n");
	fake_backend(io, "214-part one\r\n");
	for (i = 0; i < 44 && io->closed == NULL; i++)
		fake_client(io, chunk);
	CHECK_STR_EQ(io->closed, "line_too_long");
	CHECK(strstr(fake_take_client(io), "421") == NULL);
	fake_free(io);

	/* A broken line inside the backend's reply. */
	io = greeted(CFG_TLS_NONE, false);
	fake_client(io, "HELP\r\n");
	fake_backend(io, "214-part one\r\n");
	fake_backend(io, "\x01\x02garbage\r\n");
	CHECK_STR_EQ(io->closed, "backend_bad_reply");
	CHECK_STR_EQ(fake_take_client(io), "214-part one\r\n");
	fake_free(io);
}

/*
 * A client pipelining n commands in one write, every fifth one refused
 * by moat itself: the backend is answered until it has seen them all.
 * Returns how many commands the backend had before its first reply.
 */
static size_t
burst(struct filter_io *io, size_t n)
{
	static char in[16 * 1024], want[16 * 1024];
	const char *refusal =
	    "502 5.5.1 Error: BDAT not supported (CHUNKING is not offered)\r\n";
	size_t i, first = 0, forwarded = 0, got;
	char *client;

	in[0] = want[0] = '\0';
	for (i = 0; i < n; i++) {
		strcat(in, i % 5 == 4 ? "BDAT 1 LAST\r\n" : "NOOP\r\n");
		strcat(want, i % 5 == 4 ? refusal : "250 Ok\r\n");
	}
	fake_client(io, in);
	if ((client = calloc(1, sizeof(want))) == NULL)
		abort();
	strcat(client, fake_take_client(io));
	while ((got = check_count(fake_take_backend(io), "NOOP\r\n")) > 0) {
		if (first == 0)
			first = got;
		forwarded += got;
		while (got-- > 0)
			fake_backend(io, "250 Ok\r\n");
		strcat(client, fake_take_client(io));
	}
	CHECK_INT_EQ(forwarded, n - n / 5);
	CHECK_STR_EQ(client, want);	/* every reply, in the client's order */
	free(client);
	return first;
}

/*
 * Idle sessions keep their reply FIFO small; a pipelined burst moves it
 * to the heap and back, and without memory for that the client is only
 * slowed down.
 */
static void
test_pipelining_burst(void)
{
	struct filter_io *io = greeted(CFG_TLS_NONE, false);

	CHECK_INT_EQ(burst(io, 40), 32);	/* all of it at once */
	CHECK_INT_EQ(burst(io, 3), 3);		/* the small ring again */
	/* More than the FIFO holds: the rest waits for replies. */
	CHECK_INT_EQ(burst(io, 150), 51);
	refuse_big_fifo = true;
	CHECK_INT_EQ(burst(io, 40), 4);
	refuse_big_fifo = false;
	CHECK(io->closed == NULL);
	/* The session ends with twenty replies owed (LeakSanitizer checks
	 * that the full-size ring goes with it). */
	fake_client(io, "NOOP\r\nNOOP\r\nNOOP\r\nNOOP\r\nNOOP\r\n"
	    "NOOP\r\nNOOP\r\nNOOP\r\nNOOP\r\nNOOP\r\nNOOP\r\nNOOP\r\n"
	    "NOOP\r\nNOOP\r\nNOOP\r\nNOOP\r\nNOOP\r\nNOOP\r\nNOOP\r\n"
	    "NOOP\r\n");
	CHECK_INT_EQ(check_count(fake_take_backend(io), "NOOP\r\n"), 20);
	fake_free(io);
}

/*
 * Regression: a glitch that reaches the limit bans, and a password the
 * client pipelined behind it never reaches the backend.
 */
static void
test_ban_stops_pipelined_commands(void)
{
	struct filter_io *io = greeted(CFG_TLS_NONE, false);

	fake_client(io, "EHLO c.example\r\n");
	fake_backend(io, "250 mail.example\r\n");
	(void)fake_take_backend(io);
	(void)fake_take_client(io);
	io->ban_at = 2;
	fake_client(io, "AUTH PLAIN\tAGFAAGI=\r\nAUTH PLAIN\tAGFAAGI=\r\n"
	    "AUTH PLAIN AGFAAGI=\r\n");
	CHECK_STR_EQ(io->closed, "banned");
	CHECK_STR_EQ(fake_take_backend(io), "");
	CHECK_STR_EQ(fake_take_client(io),
	    "500 5.5.2 Error: bad characters in command\r\n"
	    "500 5.5.2 Error: bad characters in command\r\n");
	fake_free(io);
}

/* Whether a shutdown's 421 may go to the client now (session.c). */
static bool
between(struct filter_io *io)
{
	return io->ops->between_replies(io->state);
}

static void
test_between_replies(void)
{
	struct filter_io *io = fake_new(&filter_smtp, CFG_PROTO_SMTP,
	    CFG_TLS_STARTTLS, false, 2048);

	CHECK(between(io));	/* nothing relayed yet */
	fake_backend(io, "220-first line of a greeting\r\n");
	CHECK(!between(io));
	fake_backend(io, "220 ready\r\n");
	CHECK(between(io));
	fake_client(io, "EHLO a\r\nNOOP\r\n");
	CHECK(between(io));	/* replies owed, none begun */
	fake_backend(io, "250-mx\r\n250-PIPELINING\r\n");
	CHECK(!between(io));
	fake_backend(io, "250 8BITMIME\r\n250 ok\r\n");
	CHECK(between(io));
	fake_client(io, "DATA\r\n");
	fake_backend(io, "354 go\r\n");
	fake_client(io, "Subject: x\r\n");
	CHECK(between(io));	/* the client talks, the server may too */
	fake_client(io, ".\r\n");
	fake_backend(io, "250 queued\r\n");
	fake_take_client(io);
	/* "220 Ready to start TLS": the handshake comes next, no line. */
	fake_client(io, "STARTTLS\r\n");
	CHECK_STR_EQ(fake_take_client(io), "220 2.0.0 Ready to start TLS\r\n");
	CHECK(!between(io));
	fake_handshake(io);
	CHECK(between(io));
	fake_free(io);
}

/*
 * Replies no command asked for. A 421 (the backend hanging up, RFC 5321
 * 3.8) goes on and the session ends behind it, whether or not the
 * backend then closes; anything else (Postfix's answer to a PROXY header
 * it does not expect) ends it with moat's protocol error. Neither is
 * ever taken for the reply to the client's next command.
 */
static void
test_stray_replies(void)
{
	struct filter_io *io = greeted(CFG_TLS_NONE, false);

	fake_backend(io, "421 4.4.2 mx Error: timeout exceeded\r\n");
	CHECK_STR_EQ(fake_take_client(io),
	    "421 4.4.2 mx Error: timeout exceeded\r\n");
	CHECK_STR_EQ(io->closed, "backend_closing");
	CHECK_STR_EQ(io->stray, "421 4.4.2 mx Error: timeout exceeded");
	CHECK(io->nstray == 1 && io->nlastwords == 1);
	fake_client(io, "EHLO a\r\n");
	fake_backend(io, "250 mx\r\n");
	CHECK_STR_EQ(fake_take_backend(io), "");
	CHECK_STR_EQ(fake_take_client(io), "");
	fake_free(io);

	/* One stray of several lines is one. */
	io = greeted(CFG_TLS_NONE, false);
	fake_backend(io, "421-4.3.2 shutting\r\n421 4.3.2 down\r\n");
	CHECK_STR_EQ(fake_take_client(io),
	    "421-4.3.2 shutting\r\n421 4.3.2 down\r\n");
	CHECK(io->nstray == 1 && io->nlastwords == 1);
	CHECK_STR_EQ(io->stray, "421 4.3.2 down");
	CHECK_STR_EQ(io->closed, "backend_closing");
	fake_free(io);

	io = greeted(CFG_TLS_NONE, false);
	fake_backend(io, "502 5.5.2 Error: command not recognized\r\n");
	CHECK_STR_EQ(fake_take_client(io), "421 4.3.0 Error: backend protocol "
	    "error, closing connection\r\n");
	CHECK_STR_EQ(io->closed, "backend_unsolicited");
	CHECK_STR_EQ(io->stray, "502 5.5.2 Error: command not recognized");
	CHECK(io->nstray == 1 && io->nlastwords == 0);
	fake_free(io);

	/* One that waits for room to the client is said once. */
	io = greeted(CFG_TLS_NONE, false);
	io->client.room = 4;
	fake_backend(io, "421 4.3.2 shutting down\r\n");
	CHECK_STR_EQ(fake_take_client(io), "");
	io->client.room = FAKE_CAP;
	fake_pump(io);
	CHECK_STR_EQ(fake_take_client(io), "421 4.3.2 shutting down\r\n");
	CHECK(io->nstray == 1 && io->nlastwords == 1);
	fake_free(io);

	/* Owed replies are not strays. */
	io = greeted(CFG_TLS_NONE, false);
	fake_client(io, "NOOP\r\nNOOP\r\n");
	fake_backend(io, "250 ok\r\n421 4.4.2 bye\r\n");
	CHECK_STR_EQ(fake_take_client(io), "250 ok\r\n421 4.4.2 bye\r\n");
	CHECK(io->nstray == 0 && io->closed == NULL);
	fake_free(io);
}

int
main(void)
{
	test_stray_replies();
	test_between_replies();
	test_pipelining_burst();
	test_endless_line_closes();
	test_closing_lines_not_inside_a_reply();
	test_ehlo_rewrite();
	test_starttls();
	test_ehlo_pipelined_after_starttls();
	test_pipelining_order();
	test_smuggling();
	test_auth_signals();
	test_ban_stops_pipelined_commands();
	test_abuse();
	return check_report("smtp_filter");
}
