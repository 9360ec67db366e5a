/* test_pop3_filter.c - the POP3 filter driven through its ops, no sockets. */
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "filter_fake.h"
#include "pop3.h"

#define GREETING "+OK Dovecot ready.\r\n"
#define CAPA_REPLY "+OK\r\nCAPA\r\nTOP\r\nUIDL\r\nRESP-CODES\r\n" \
	"PIPELINING\r\nAUTH-RESP-CODE\r\nSTLS\r\nUSER\r\nSASL PLAIN LOGIN\r\n.\r\n"

static struct filter_io *
greeted(enum cfg_tls_mode tls, bool require_tls)
{
	struct filter_io *io = fake_new(&filter_pop3, CFG_PROTO_POP3, tls,
	    require_tls, 2048);

	fake_backend(io, GREETING);
	CHECK_STR_EQ(fake_take_client(io), GREETING);
	return io;
}

static void
test_capa(void)
{
	struct filter_io *io = greeted(CFG_TLS_STARTTLS, false);

	fake_client(io, "CAPA\r\n");
	CHECK_STR_EQ(fake_take_backend(io), "CAPA\r\n");
	fake_backend(io, CAPA_REPLY);
	CHECK_STR_EQ(fake_take_client(io), "+OK\r\nCAPA\r\nTOP\r\nUIDL\r\n"
	    "RESP-CODES\r\nPIPELINING\r\nAUTH-RESP-CODE\r\nUSER\r\n"
	    "SASL PLAIN LOGIN\r\nSTLS\r\n.\r\n");
	fake_free(io);

	io = greeted(CFG_TLS_STARTTLS, true);
	fake_client(io, "CAPA\r\n");
	CHECK_STR_EQ(fake_take_backend(io), "CAPA\r\n");
	fake_backend(io, CAPA_REPLY);
	CHECK_STR_EQ(fake_take_client(io), "+OK\r\nCAPA\r\nTOP\r\nUIDL\r\n"
	    "RESP-CODES\r\nPIPELINING\r\nAUTH-RESP-CODE\r\nSTLS\r\n.\r\n");
	/* require_tls: refused by moat, never forwarded */
	fake_client(io, "USER alice\r\nPASS x\r\nAPOP a b\r\nAUTH PLAIN\r\n");
	CHECK_STR_EQ(fake_take_backend(io), "");
	CHECK_STR_EQ(fake_take_client(io),
	    "-ERR [AUTH] Plaintext authentication disallowed, issue STLS first\r\n"
	    "-ERR [AUTH] Plaintext authentication disallowed, issue STLS first\r\n"
	    "-ERR [AUTH] Plaintext authentication disallowed, issue STLS first\r\n"
	    "-ERR [AUTH] Plaintext authentication disallowed, issue STLS first\r\n");
	/* One write: STLS and injected commands. */
	fake_client(io, "STLS\r\nUSER a\r\nPASS b\r\n");
	CHECK_STR_EQ(fake_take_client(io), "+OK Begin TLS negotiation\r\n");
	CHECK_STR_EQ(fake_take_backend(io), "");
	fake_client(io, "CAPA\r\n");
	fake_handshake(io);
	CHECK_STR_EQ(fake_take_client(io), "");
	CHECK_STR_EQ(fake_take_backend(io), "");
	fake_client(io, "CAPA\r\n");
	fake_backend(io, CAPA_REPLY);
	CHECK_STR_EQ(fake_take_client(io), "+OK\r\nCAPA\r\nTOP\r\nUIDL\r\n"
	    "RESP-CODES\r\nPIPELINING\r\nAUTH-RESP-CODE\r\nUSER\r\n"
	    "SASL PLAIN LOGIN\r\n.\r\n");
	fake_client(io, "STLS\r\n");
	CHECK_STR_EQ(fake_take_client(io),
	    "-ERR Command not permitted when TLS active\r\n");
	fake_free(io);
}

static void
test_user_forgotten(void)
{
	struct filter_io *io = greeted(CFG_TLS_STARTTLS, false);

	fake_client(io, "USER alice\r\n");
	fake_backend(io, "+OK\r\n");
	CHECK_STR_EQ(fake_take_backend(io), "USER alice\r\n");
	fake_client(io, "STLS\r\n");
	fake_handshake(io);
	fake_take_client(io);
	/* RFC 2595 4: the USER from before STLS does not count. */
	fake_client(io, "PASS alicepw\r\n");
	CHECK_STR_EQ(fake_take_backend(io), "");
	CHECK_STR_EQ(fake_take_client(io), "-ERR No username given\r\n");
	fake_client(io, "USER alice\r\nPASS alicepw\r\n");
	CHECK_STR_EQ(fake_take_backend(io), "USER alice\r\nPASS alicepw\r\n");
	fake_backend(io, "+OK\r\n+OK Logged in.\r\n");
	CHECK_INT_EQ(io->nsig[FILTER_SIG_AUTH_OK], 1);
	fake_client(io, "STLS\r\n");
	CHECK_STR_EQ(fake_take_client(io), "+OK\r\n+OK Logged in.\r\n"
	    "-ERR Command not permitted when TLS active\r\n");
	fake_free(io);
}

static void
test_multiline(void)
{
	struct filter_io *io = greeted(CFG_TLS_IMPLICIT, false);
	static char big[6000];
	char reply[7000];

	fake_client(io, "USER alice\r\nPASS alicepw\r\nSTAT\r\nLIST\r\n"
	    "RETR 1\r\nUIDL 1\r\nTOP 1 0\r\nNOOP\r\n");
	CHECK_STR_EQ(fake_take_backend(io), "USER alice\r\nPASS alicepw\r\nSTAT\r\n"
	    "LIST\r\nRETR 1\r\nUIDL 1\r\nTOP 1 0\r\nNOOP\r\n");
	memset(big, 'y', sizeof(big) - 1);
	snprintf(reply, sizeof(reply), "+OK\r\n+OK Logged in.\r\n+OK 1 20\r\n"
	    "+OK 1 messages:\r\n1 20\r\n.\r\n+OK 20 octets\r\n"
	    "..stuffed\r\n%s\r\n.x\r\n.\r\n+OK 1 abc\r\n+OK\r\nH: v\r\n\r\n"
	    ".\r\n+OK\r\n", big);
	fake_backend(io, reply);
	CHECK_STR_EQ(fake_take_client(io), reply);
	CHECK_INT_EQ(io->nsig[FILTER_SIG_AUTH_OK], 1);
	/* "-ERR" to RETR has no body. */
	fake_client(io, "RETR 9\r\nNOOP\r\n");
	fake_backend(io, "-ERR no such message\r\n+OK\r\n");
	CHECK_STR_EQ(fake_take_client(io), "-ERR no such message\r\n+OK\r\n");
	fake_free(io);
}

static void
test_auth_signals(void)
{
	struct filter_io *io = greeted(CFG_TLS_NONE, false);

	/* Pipelined: the -ERR to USER is not counted, the one to PASS is. */
	fake_client(io, "USER a\r\nPASS b\r\nUSER alice\r\nPASS x\r\n");
	fake_backend(io, "-ERR no\r\n-ERR [AUTH] Authentication failed.\r\n"
	    "+OK\r\n-ERR [SYS/TEMP] try later\r\n");
	CHECK_INT_EQ(io->nsig[FILTER_SIG_AUTH_FAIL], 1);
	CHECK_STR_EQ(io->sigreason[FILTER_SIG_AUTH_FAIL], "pop3_pass");
	CHECK_INT_EQ(io->nsig[FILTER_SIG_AUTH_TEMPFAIL], 1);
	fake_client(io, "APOP alice 0123456789abcdef\r\n");
	fake_backend(io, "-ERR [IN-USE] locked\r\n");
	CHECK_INT_EQ(io->nsig[FILTER_SIG_AUTH_TEMPFAIL], 2);
	/* SASL: "+" continuations skipped, payloads forwarded. */
	fake_client(io, "AUTH PLAIN\r\n");
	fake_backend(io, "+ \r\n");
	fake_client(io, "AGFsaWNlAHdyb25n\r\n");
	CHECK(strstr(fake_take_backend(io), "AGFsaWNlAHdyb25n\r\n") != NULL);
	CHECK_INT_EQ(io->nsig[FILTER_SIG_AUTH_FAIL], 1);
	fake_backend(io, "-ERR [AUTH] Authentication failed.\r\n");
	CHECK_INT_EQ(io->nsig[FILTER_SIG_AUTH_FAIL], 2);
	CHECK_STR_EQ(io->sigreason[FILTER_SIG_AUTH_FAIL], "pop3_auth");
	/* AUTH without a mechanism lists them: no verdict. */
	fake_client(io, "AUTH\r\n");
	fake_backend(io, "+OK\r\nPLAIN\r\nLOGIN\r\n.\r\n");
	CHECK_INT_EQ(io->nsig[FILTER_SIG_AUTH_FAIL], 2);
	CHECK_INT_EQ(io->nsig[FILTER_SIG_AUTH_OK], 0);
	CHECK(strstr(io->sigs, "AGFs") == NULL);
	fake_free(io);
}

/*
 * Regression: the failure that reaches the limit bans, and the verdicts
 * the backend sent behind it on pipelined passwords never reach the
 * client: a "+OK" there told a guesser past the limit that he was right.
 */
static void
test_ban_stops_pipelined_verdicts(void)
{
	struct filter_io *io = greeted(CFG_TLS_NONE, false);

	io->ban_at = 2;
	fake_client(io, "USER alice\r\nPASS a\r\nUSER alice\r\nPASS b\r\n"
	    "USER alice\r\nPASS alicepw\r\n");
	CHECK_STR_EQ(fake_take_backend(io), "USER alice\r\nPASS a\r\n"
	    "USER alice\r\nPASS b\r\nUSER alice\r\nPASS alicepw\r\n");
	fake_backend(io, "+OK\r\n-ERR [AUTH] Authentication failed.\r\n"
	    "+OK\r\n-ERR [AUTH] Authentication failed.\r\n"
	    "+OK\r\n+OK Logged in.\r\n");
	CHECK_STR_EQ(io->closed, "banned");
	CHECK_STR_EQ(fake_take_client(io), "+OK\r\n"
	    "-ERR [AUTH] Authentication failed.\r\n+OK\r\n"
	    "-ERR [AUTH] Authentication failed.\r\n");
	CHECK_INT_EQ(io->nsig[FILTER_SIG_AUTH_OK], 0);
	fake_free(io);

	/* A glitch at the limit: what the client pipelined behind it
	 * never reaches the backend. */
	io = greeted(CFG_TLS_NONE, false);
	io->ban_at = 1;
	fake_client(io, "XCLIENT ADDR=1.2.3.4\r\nUSER alice\r\nPASS x\r\n");
	CHECK_STR_EQ(io->closed, "banned");
	CHECK_STR_EQ(fake_take_backend(io), "");
	fake_free(io);
}

/* Regression: replies to exchanges that tried no credentials are not
 * counted as failed logins. */
static void
test_auth_not_guesses(void)
{
	struct filter_io *io = greeted(CFG_TLS_NONE, false);

	/* A cancelled SASL exchange (RFC 5034 4), in either step. */
	fake_client(io, "AUTH PLAIN\r\n");
	fake_backend(io, "+ \r\n");
	fake_client(io, "*\r\n");
	fake_backend(io, "-ERR Authentication aborted by client.\r\n");
	fake_client(io, "AUTH LOGIN\r\n");
	fake_backend(io, "+ VXNlcm5hbWU6\r\n");
	fake_client(io, "YWxpY2U=\r\n");
	fake_backend(io, "+ UGFzc3dvcmQ6\r\n");
	fake_client(io, "*\n");
	fake_backend(io, "-ERR Authentication aborted by client.\r\n");
	CHECK_INT_EQ(io->nsig[FILTER_SIG_AUTH_FAIL], 0);
	/* A password after a cancel counts again. */
	fake_client(io, "AUTH LOGIN\r\n");
	fake_backend(io, "+ VXNlcm5hbWU6\r\n");
	fake_client(io, "YWxpY2U=\r\n");
	fake_backend(io, "+ UGFzc3dvcmQ6\r\n");
	fake_client(io, "eA==\r\n");
	fake_backend(io, "-ERR [AUTH] Authentication failed.\r\n");
	CHECK_INT_EQ(io->nsig[FILTER_SIG_AUTH_FAIL], 1);
	/* The server refuses the AUTH line itself (Dovecot: unknown
	 * mechanism): nothing was tried, also after a real failure. An
	 * empty initial response "=" is no credential either. But a
	 * response sent, even one the server cannot decode, counts. */
	for (int i = 0; i < 3; i++) {
		static const char *const line[] = { "AUTH NTLM\r\n",
		    "AUTH GSSAPI =\r\n", "AUTH PLAIN AGFsaWNlAHdyb25n\r\n" };

		fake_client(io, line[i]);
		fake_backend(io, i < 2 ? "-ERR [AUTH] Unsupported "
		    "authentication mechanism.\r\n" :
		    "-ERR [AUTH] Authentication failed.\r\n");
		CHECK_INT_EQ(io->nsig[FILTER_SIG_AUTH_FAIL], i < 2 ? 1 : 2);
	}
	fake_client(io, "AUTH PLAIN\r\n");
	fake_backend(io, "+ \r\n");
	fake_client(io, "!!notbase64\r\n");
	fake_backend(io, "-ERR [AUTH] Invalid base64 data in continued "
	    "response\r\n");
	CHECK_INT_EQ(io->nsig[FILTER_SIG_AUTH_FAIL], 3);
	fake_client(io, "AUTH NTLM\r\n");
	fake_backend(io, "-ERR [AUTH] Unsupported authentication "
	    "mechanism.\r\n");
	CHECK_INT_EQ(io->nsig[FILTER_SIG_AUTH_FAIL], 3);
	/* A blank other than a space in AUTH's arguments: where moat and the
	 * server could split the line apart, moat answers it. */
	(void)fake_take_backend(io);
	(void)fake_take_client(io);
	fake_client(io, "AUTH PLAIN\tAGFsaWNlAHdyb25n\r\n");
	CHECK_STR_EQ(fake_take_backend(io), "");
	CHECK_STR_EQ(fake_take_client(io), "-ERR bad characters in "
	    "command\r\n");
	CHECK_INT_EQ(io->nsig[FILTER_SIG_GLITCH], 1);
	/* A PASS uses its USER up: the next PASS has none. */
	fake_take_backend(io);
	fake_take_client(io);
	fake_client(io, "USER alice\r\nPASS x\r\nPASS y\r\n");
	CHECK_STR_EQ(fake_take_backend(io), "USER alice\r\nPASS x\r\n");
	fake_backend(io, "+OK\r\n-ERR [AUTH] Authentication failed.\r\n");
	CHECK_STR_EQ(fake_take_client(io), "+OK\r\n"
	    "-ERR [AUTH] Authentication failed.\r\n"
	    "-ERR No username given\r\n");
	CHECK_INT_EQ(io->nsig[FILTER_SIG_AUTH_FAIL], 4);
	/* After login these are unknown commands, not guesses. */
	fake_client(io, "USER alice\r\nPASS alicepw\r\n");
	fake_backend(io, "+OK\r\n+OK Logged in.\r\n");
	CHECK_INT_EQ(io->nsig[FILTER_SIG_AUTH_OK], 1);
	fake_client(io, "USER bob\r\nPASS x\r\nAPOP a b\r\n"
	    "AUTH PLAIN eA==\r\n");
	fake_backend(io, "-ERR Unknown command: USER\r\n"
	    "-ERR Unknown command: PASS\r\n-ERR Unknown command: APOP\r\n"
	    "-ERR Unknown command: AUTH\r\n");
	CHECK_INT_EQ(io->nsig[FILTER_SIG_AUTH_FAIL], 4);
	CHECK_INT_EQ(io->nsig[FILTER_SIG_AUTH_OK], 1);
	fake_free(io);
}

/* Regression: Dovecot takes the client's address from an XCLIENT sent
 * through a trusted proxy; moat refuses it and never forwards it. */
static void
test_xclient(void)
{
	struct filter_io *io = greeted(CFG_TLS_NONE, false);

	fake_client(io, "XCLIENT ADDR=192.0.2.99\r\nxclient PORT=1\r\n"
	    "NOOP\r\n");
	CHECK_STR_EQ(fake_take_backend(io), "NOOP\r\n");
	fake_backend(io, "+OK\r\n");
	CHECK_STR_EQ(fake_take_client(io), "-ERR insufficient authorization\r\n"
	    "-ERR insufficient authorization\r\n+OK\r\n");
	CHECK_INT_EQ(io->nsig[FILTER_SIG_GLITCH], 2);
	CHECK_STR_EQ(io->sigreason[FILTER_SIG_GLITCH], "client_xclient");
	CHECK(io->closed == NULL);
	fake_free(io);
}

static void
test_abuse(void)
{
	struct filter_io *io;
	char line[3000];

	io = greeted(CFG_TLS_NONE, false);
	fake_client(io, "POST / HTTP/1.0\r\n");
	CHECK_STR_EQ(io->closed, "foreign_protocol");
	fake_free(io);

	io = greeted(CFG_TLS_NONE, false);
	fake_long_line(line, sizeof(line), "");
	fake_client(io, line);
	CHECK_STR_EQ(fake_take_client(io), "-ERR line too long\r\n");
	fake_client(io, line);
	fake_client(io, line);
	CHECK_STR_EQ(io->closed, "line_too_long");
	fake_free(io);

	io = fake_new(&filter_pop3, CFG_PROTO_POP3, CFG_TLS_NONE, false, 2048);
	fake_client(io, "CAPA\r\n");
	CHECK_STR_EQ(io->sigreason[FILTER_SIG_GLITCH], "early_talker");
	fake_backend(io, GREETING);
	CHECK_STR_EQ(fake_take_backend(io), "CAPA\r\n");
	fake_backend(io, "garbage\r\n");
	CHECK_STR_EQ(io->closed, "backend_bad_reply");
	CHECK_INT_EQ(io->nbadgreeting, 0);
	fake_free(io);

	/* As the greeting (an SSH server at the backend address), it is a
	 * backend failure. */
	io = fake_new(&filter_pop3, CFG_PROTO_POP3, CFG_TLS_NONE, false, 2048);
	fake_backend(io, "SSH-2.0-OpenSSH_9.2p1\r\n");
	CHECK_STR_EQ(io->closed, "backend_bad_reply");
	CHECK_INT_EQ(io->nbadgreeting, 1);
	fake_free(io);
}

/* moat's closing lines wait for the end of a body the backend relays in
 * part (RETR, CAPA): inside it an -ERR would be read as a body line. */
static void
test_closing_lines_not_inside_a_body(void)
{
	struct filter_io *io = greeted(CFG_TLS_NONE, false);
	char line[3000];
	int i;

	fake_long_line(line, sizeof(line), "");
	fake_client(io, "RETR 1\r\n");
	CHECK_STR_EQ(fake_take_backend(io), "RETR 1\r\n");
	fake_backend(io, "+OK 100 octets\r\nSubject: x\r\n");
	for (i = 0; i < 3; i++)
		fake_client(io, line);
	CHECK_STR_EQ(io->closed, "line_too_long");
	CHECK_STR_EQ(fake_take_client(io), "+OK 100 octets\r\nSubject: x\r\n");
	fake_free(io);

	/* After STLS's plaintext +OK the client waits for a handshake:
	 * a broken backend line ends the session without a word. */
	io = greeted(CFG_TLS_STARTTLS, false);
	fake_client(io, "STLS\r\n");
	CHECK_STR_EQ(fake_take_client(io), "+OK Begin TLS negotiation\r\n");
	fake_backend(io, "garbage\r\n");
	CHECK_STR_EQ(io->closed, "backend_bad_reply");
	CHECK_STR_EQ(fake_take_client(io), "");
	fake_free(io);

	/* A CAPA line longer than a reply may be. */
	io = greeted(CFG_TLS_NONE, false);
	fake_client(io, "CAPA\r\n");
	fake_backend(io, "+OK\r\nTOP\r\n");
	memcpy(line, "X-", 2);
	memset(line + sizeof(line) - 3, 'a', 2);	/* no LF */
	line[sizeof(line) - 1] = '\0';
	fake_backend(io, line);
	fake_backend(io, line);
	CHECK_STR_EQ(io->closed, "backend_bad_reply");
	CHECK(strstr(fake_take_client(io), "-ERR") == NULL);
	fake_free(io);
}

/* Regression (issue 9): a line that never ends closes the session
 * instead of being skipped for as long as the client sends. */
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
	CHECK(io->closed == NULL);
	CHECK_STR_EQ(fake_take_client(io), "-ERR line too long\r\n");
	for (i = 0; i < 40 && io->closed == NULL; i++)
		fake_client(io, chunk);
	CHECK_STR_EQ(io->closed, "line_too_long");
	CHECK_STR_EQ(fake_take_client(io),
	    "-ERR line too long, closing connection\r\n");
	CHECK_STR_EQ(fake_take_backend(io), "");
	fake_free(io);
}

/* A pipelined burst longer than the FIFO's small ring, and a session
 * that ends with its replies still owed (LeakSanitizer checks the free). */
static void
test_pipelining_burst(void)
{
	struct filter_io *io = greeted(CFG_TLS_NONE, false);
	int i;

	fake_client(io, "NOOP\r\nNOOP\r\nNOOP\r\nNOOP\r\nNOOP\r\nNOOP\r\n"
	    "NOOP\r\nNOOP\r\nNOOP\r\nNOOP\r\nNOOP\r\nSTAT\r\n");
	CHECK_STR_EQ(fake_take_backend(io), "NOOP\r\nNOOP\r\nNOOP\r\n"
	    "NOOP\r\nNOOP\r\nNOOP\r\nNOOP\r\nNOOP\r\nNOOP\r\nNOOP\r\n"
	    "NOOP\r\nSTAT\r\n");
	for (i = 0; i < 6; i++)
		fake_backend(io, "+OK\r\n");
	CHECK_STR_EQ(fake_take_client(io),
	    "+OK\r\n+OK\r\n+OK\r\n+OK\r\n+OK\r\n+OK\r\n");
	CHECK(io->closed == NULL);
	fake_free(io);
}

/* Whether a shutdown's -ERR may go to the client now (session.c). */
static void
test_between_replies(void)
{
	struct filter_io *io = greeted(CFG_TLS_STARTTLS, false);
	bool (*between)(void *) = io->ops->between_replies;

	CHECK(between(io->state));
	fake_client(io, "RETR 1\r\nNOOP\r\n");
	CHECK(between(io->state));
	fake_backend(io, "+OK 20 octets\r\n");
	CHECK(!between(io->state));	/* the body is to come */
	fake_backend(io, "line\r\n");
	CHECK(!between(io->state));
	fake_backend(io, ".\r\n+OK\r\n");
	CHECK(between(io->state));
	fake_client(io, "CAPA\r\n");
	fake_backend(io, "+OK\r\nUSER\r\n");
	CHECK(!between(io->state));
	fake_backend(io, ".\r\n");
	CHECK(between(io->state));
	fake_take_client(io);
	fake_client(io, "STLS\r\n");
	CHECK_STR_EQ(fake_take_client(io), "+OK Begin TLS negotiation\r\n");
	CHECK(!between(io->state));
	fake_handshake(io);
	CHECK(between(io->state));
	fake_free(io);
}

/*
 * Status lines no command asked for. An -ERR (Dovecot's inactivity or
 * shutdown line) goes on and the session ends behind it: Dovecot's
 * "-ERR Unknown command." for a PROXY header it does not expect comes
 * without a hang-up, and the client would read it as the answer to its
 * next command. A +OK ends the session with moat's protocol error.
 */
static void
test_stray_replies(void)
{
	struct filter_io *io = greeted(CFG_TLS_NONE, false);

	fake_backend(io, "-ERR Unknown command.\r\n");
	CHECK_STR_EQ(fake_take_client(io), "-ERR Unknown command.\r\n");
	CHECK_STR_EQ(io->closed, "backend_closing");
	CHECK_STR_EQ(io->stray, "-ERR Unknown command.");
	CHECK(io->nstray == 1 && io->nlastwords == 1);
	fake_client(io, "USER a\r\n");
	fake_backend(io, "+OK\r\n");
	CHECK_STR_EQ(fake_take_backend(io), "");
	CHECK_STR_EQ(fake_take_client(io), "");
	fake_free(io);

	io = greeted(CFG_TLS_NONE, false);
	fake_backend(io, "+OK Logging out\r\n");
	CHECK_STR_EQ(fake_take_client(io), "-ERR [SYS/TEMP] backend protocol "
	    "error, closing connection\r\n");
	CHECK_STR_EQ(io->closed, "backend_unsolicited");
	CHECK_STR_EQ(io->stray, "+OK Logging out");
	CHECK(io->nstray == 1 && io->nlastwords == 0);
	fake_free(io);

	/* One that waits for room to the client is said once. */
	io = greeted(CFG_TLS_NONE, false);
	io->client.room = 4;
	fake_backend(io, "-ERR shutting down\r\n");
	CHECK_STR_EQ(fake_take_client(io), "");
	io->client.room = FAKE_CAP;
	fake_pump(io);
	CHECK_STR_EQ(fake_take_client(io), "-ERR shutting down\r\n");
	CHECK(io->nstray == 1 && io->nlastwords == 1);
	fake_free(io);

	io = greeted(CFG_TLS_NONE, false);
	fake_client(io, "NOOP\r\n");
	fake_backend(io, "-ERR no\r\n");
	CHECK_STR_EQ(fake_take_client(io), "-ERR no\r\n");
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
	test_capa();
	test_user_forgotten();
	test_multiline();
	test_auth_signals();
	test_auth_not_guesses();
	test_ban_stops_pipelined_verdicts();
	test_xclient();
	test_abuse();
	test_closing_lines_not_inside_a_body();
	return check_report("pop3_filter");
}
