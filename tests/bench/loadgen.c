/* loadgen.c - the load generator of the benchmark suite (run.sh).
 *
 * One thread, one libev loop, many non-blocking connections, each driven
 * through a short script of steps (connect, TLS handshake, send a command,
 * expect a reply, stream a body, ...). Modes:
 *
 *   handshake  N full TLS 1.3 handshakes, C at a time: connect, handshake,
 *              send close_notify, wait for the proxy to close. No session
 *              is ever resumed. Counts NewSessionTickets received.
 *   stream     C concurrent sessions, N in all, each moving M MiB:
 *                --proto smtp  EHLO, MAIL, RCPT, DATA of M MiB, QUIT
 *                              (client to backend, into the SMTP sink)
 *                --proto pop3  USER, PASS, RETR of an M MiB message, QUIT
 *                              (backend to client, from the POP3 source)
 *                --proto raw   M MiB of raw bytes into a sink, or with
 *                              --echo read back from an echo backend
 *   smtp       N SMTP STARTTLS sessions, C at a time: greeting, EHLO,
 *              STARTTLS, handshake, EHLO, MAIL, RCPT, DATA of --data KiB
 *              (default 10), QUIT
 *   latency    one SMTP session (implicit TLS, or --plain), R NOOP round
 *              trips after a warm-up: p50/p90/p99/max. With --direct
 *              HOST:PORT a second, plaintext session goes straight to the
 *              backend and the two take turns, one round trip each, so
 *              that both see the same machine noise; the result then
 *              also has direct_p50_us... and added_p50_us/added_p99_us
 *   idle       N implicit-TLS SMTP sessions held open after the greeting;
 *              prints "ESTABLISHED ..." once all are up, then holds them
 *              until SIGTERM/SIGINT or --hold seconds
 *   reject     N connections, C at a time, from --source, each waiting for
 *              the server to close it without a word (a banned address)
 *
 * Every run is bounded: --max-time (default 120 s), and --timeout
 * (default 10 s) for a connection that moves no byte (a long transfer
 * that keeps moving is not cut short). The result is one line on stdout:
 *
 *   RESULT mode=... ok=N fail=N wall_s=... per_s=... [mb=... mb_per_s=...]
 *          [p50_us=... p99_us=...] [tickets=...] lg_cpu_s=... complete=0|1
 *
 * (lg_cpu_s is the load generator's own CPU time.)
 *
 * MB are 10^6 bytes of payload (message text), not counting TLS framing.
 * The client offers only TLS 1.3, one cipher suite and one group
 * (defaults TLS_AES_128_GCM_SHA256 and X25519) so that every proxy runs
 * the same handshake; certificates are not verified.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <ev.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "mailtext.h"

#define MIB       (1024u * 1024u)
#define IN_MAX    (16 * 1024)
#define MAX_SRC   16

enum op {
	OP_CONNECT = 0,
	OP_TLS,			/* client handshake */
	OP_SEND,		/* arg */
	OP_EXPECT,		/* a reply whose first char is code */
	OP_SEND_BODY,		/* body_bytes of message text, then ".\r\n" */
	OP_RECV_BODY,		/* message text up to "\r\n.\r\n" */
	OP_RAW,			/* raw bytes out (and back with --echo) */
	OP_NOOPS,		/* latency round trips */
	OP_HOLD,		/* idle: stay open */
	OP_CLOSE_WAIT,		/* close_notify (TLS), then wait for EOF */
	OP_DONE,
};

struct step {
	enum op op;
	const char *arg;
	char code;
};

enum mode {
	MODE_HANDSHAKE = 0,
	MODE_STREAM,
	MODE_SMTP,
	MODE_LATENCY,
	MODE_IDLE,
	MODE_REJECT,
};

struct conn {
	ev_io io;
	int fd;
	SSL *ssl;
	const struct step *step;
	bool entered;		/* the current step was set up */
	bool shut_sent;
	const char *wbuf;	/* pending write */
	size_t wlen;
	uint64_t left;		/* bulk bytes still to send */
	uint64_t back;		/* echo: bytes still to read back */
	uint64_t moved;		/* payload bytes of this session */
	int dot;		/* end-of-data matcher */
	size_t body_off;
	unsigned rounds;
	double t0;
	double deadline;
	size_t slot;		/* index in active[] */
	int id;			/* latency: 0 through the proxy, 1 direct */
	size_t inlen;
	char in[IN_MAX];
};

static struct {
	enum mode mode;
	int proto_pop3, proto_raw, echo, plain;
	struct sockaddr_in target, direct;
	int have_direct;
	struct sockaddr_in src[MAX_SRC];
	int nsrc, next_src;
	/* Not const: OpenSSL's setter macros cast the const away. */
	char *sni, *groups;
	const char *suites;
	unsigned long n, conc, rounds, warmup;
	double mib, data_kib, timeout, max_time, hold;
	uint64_t body_bytes;
	size_t line;		/* message line bytes, without CRLF */
	SSL_CTX *ctx;
	const struct step *script;
	/* progress */
	unsigned long started, ok, fail, establishing, held, dropped;
	unsigned long fail_reason[OP_DONE + 1];
	unsigned long tickets;
	uint64_t bytes;
	double t_start, t_end, t_established;
	double *lat[2];		/* latency samples: proxy, direct */
	size_t nlat[2];
	struct conn *lat_conn[2];
	int lat_ready, lat_conns, turn;
	int errors_shown;
	struct conn **active;
	size_t nactive;
	bool stopping;
} g;

static char *pattern;		/* 1 MiB of message lines */
static char scratch[256 * 1024];

static const struct step script_handshake[] = {
	{ OP_CONNECT, NULL, 0 }, { OP_TLS, NULL, 0 },
	{ OP_CLOSE_WAIT, NULL, 0 }, { OP_DONE, NULL, 0 },
};
static const struct step script_reject[] = {
	{ OP_CONNECT, NULL, 0 }, { OP_CLOSE_WAIT, NULL, 0 },
	{ OP_DONE, NULL, 0 },
};
static const struct step script_stream_smtp[] = {
	{ OP_CONNECT, NULL, 0 }, { OP_TLS, NULL, 0 },
	{ OP_EXPECT, NULL, '2' },
	{ OP_SEND, "EHLO loadgen.invalid\r\n", 0 }, { OP_EXPECT, NULL, '2' },
	{ OP_SEND, "MAIL FROM:<bench@loadgen.invalid>\r\n", 0 },
	{ OP_EXPECT, NULL, '2' },
	{ OP_SEND, "RCPT TO:<sink@bench.invalid>\r\n", 0 },
	{ OP_EXPECT, NULL, '2' },
	{ OP_SEND, "DATA\r\n", 0 }, { OP_EXPECT, NULL, '3' },
	{ OP_SEND_BODY, NULL, 0 }, { OP_EXPECT, NULL, '2' },
	{ OP_SEND, "QUIT\r\n", 0 }, { OP_EXPECT, NULL, '2' },
	{ OP_DONE, NULL, 0 },
};
static const struct step script_stream_pop3[] = {
	{ OP_CONNECT, NULL, 0 }, { OP_TLS, NULL, 0 },
	{ OP_EXPECT, NULL, '+' },
	{ OP_SEND, "USER bench\r\n", 0 }, { OP_EXPECT, NULL, '+' },
	{ OP_SEND, "PASS bench\r\n", 0 }, { OP_EXPECT, NULL, '+' },
	{ OP_SEND, NULL, 0 },	/* RETR <MiB>, filled in main() */
	{ OP_EXPECT, NULL, '+' }, { OP_RECV_BODY, NULL, 0 },
	{ OP_SEND, "QUIT\r\n", 0 }, { OP_EXPECT, NULL, '+' },
	{ OP_DONE, NULL, 0 },
};
static struct step script_pop3[sizeof(script_stream_pop3) /
    sizeof(script_stream_pop3[0])];
static const struct step script_stream_raw[] = {
	{ OP_CONNECT, NULL, 0 }, { OP_TLS, NULL, 0 }, { OP_RAW, NULL, 0 },
	{ OP_CLOSE_WAIT, NULL, 0 }, { OP_DONE, NULL, 0 },
};
static const struct step script_smtp[] = {
	{ OP_CONNECT, NULL, 0 },
	{ OP_EXPECT, NULL, '2' },
	{ OP_SEND, "EHLO loadgen.invalid\r\n", 0 }, { OP_EXPECT, NULL, '2' },
	{ OP_SEND, "STARTTLS\r\n", 0 }, { OP_EXPECT, NULL, '2' },
	{ OP_TLS, NULL, 0 },
	{ OP_SEND, "EHLO loadgen.invalid\r\n", 0 }, { OP_EXPECT, NULL, '2' },
	{ OP_SEND, "MAIL FROM:<bench@loadgen.invalid>\r\n", 0 },
	{ OP_EXPECT, NULL, '2' },
	{ OP_SEND, "RCPT TO:<sink@bench.invalid>\r\n", 0 },
	{ OP_EXPECT, NULL, '2' },
	{ OP_SEND, "DATA\r\n", 0 }, { OP_EXPECT, NULL, '3' },
	{ OP_SEND_BODY, NULL, 0 }, { OP_EXPECT, NULL, '2' },
	{ OP_SEND, "QUIT\r\n", 0 }, { OP_EXPECT, NULL, '2' },
	{ OP_DONE, NULL, 0 },
};
static const struct step script_latency_tls[] = {
	{ OP_CONNECT, NULL, 0 }, { OP_TLS, NULL, 0 },
	{ OP_EXPECT, NULL, '2' },
	{ OP_SEND, "EHLO loadgen.invalid\r\n", 0 }, { OP_EXPECT, NULL, '2' },
	{ OP_NOOPS, NULL, 0 },
	{ OP_SEND, "QUIT\r\n", 0 }, { OP_EXPECT, NULL, '2' },
	{ OP_DONE, NULL, 0 },
};
static const struct step script_latency_plain[] = {
	{ OP_CONNECT, NULL, 0 },
	{ OP_EXPECT, NULL, '2' },
	{ OP_SEND, "EHLO loadgen.invalid\r\n", 0 }, { OP_EXPECT, NULL, '2' },
	{ OP_NOOPS, NULL, 0 },
	{ OP_SEND, "QUIT\r\n", 0 }, { OP_EXPECT, NULL, '2' },
	{ OP_DONE, NULL, 0 },
};
static const struct step script_idle[] = {
	{ OP_CONNECT, NULL, 0 }, { OP_TLS, NULL, 0 },
	{ OP_EXPECT, NULL, '2' }, { OP_HOLD, NULL, 0 },
	{ OP_DONE, NULL, 0 },
};

static const char *const op_names[] = {
	"connect", "tls", "send", "expect", "send_body", "recv_body", "raw",
	"noops", "hold", "close_wait", "done",
};

static struct ev_loop *loop;
static void conn_cb(struct ev_loop *, ev_io *, int);
static void spawn(void);
static void finish(void);

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int
parse_addr(const char *s, struct sockaddr_in *sin, int port_required)
{
	char host[64];
	const char *colon = strrchr(s, ':');
	size_t hl = colon != NULL ? (size_t)(colon - s) : strlen(s);

	if ((colon == NULL && port_required) || hl >= sizeof(host))
		return -1;
	memcpy(host, s, hl);
	host[hl] = '\0';
	memset(sin, 0, sizeof(*sin));
	sin->sin_family = AF_INET;
	sin->sin_port = colon != NULL ? htons((uint16_t)atoi(colon + 1)) : 0;
	return inet_pton(AF_INET, host, &sin->sin_addr) == 1 ? 0 : -1;
}

static void
conn_error(struct conn *c, const char *what)
{
	char buf[256];
	unsigned long e;

	if (g.errors_shown++ >= 5)
		return;
	e = ERR_peek_last_error();
	if (e != 0)
		ERR_error_string_n(e, buf, sizeof(buf));
	else
		snprintf(buf, sizeof(buf), "%s", errno ? strerror(errno) : "-");
	fprintf(stderr, "loadgen: connection failed at step %s: %s (%s)\n",
	    op_names[c->step->op], what, buf);
}

static void
conn_free(struct conn *c)
{
	ev_io_stop(loop, &c->io);
	if (c->ssl != NULL)
		SSL_free(c->ssl);
	if (c->fd >= 0)
		close(c->fd);
	if (g.mode == MODE_LATENCY && g.lat_conn[c->id] == c)
		g.lat_conn[c->id] = NULL;
	g.active[c->slot] = g.active[--g.nactive];
	g.active[c->slot]->slot = c->slot;
	free(c);
	ERR_clear_error();
}

static void
conn_end(struct conn *c, bool ok, const char *why)
{
	if (c->step->op != OP_HOLD)	/* held ones were counted out */
		g.establishing--;
	if (ok) {
		g.ok++;
		g.bytes += c->moved;
	} else {
		g.fail++;
		g.fail_reason[c->step->op]++;
		conn_error(c, why);
	}
	conn_free(c);
	if (!g.stopping)
		spawn();
}

/* n bytes moved on c: its --timeout starts again (unless it has none). */
static ssize_t
moved(struct conn *c, ssize_t n)
{
	if (n > 0 && c->deadline > 0)
		c->deadline = now() + g.timeout;
	return n;
}

/*
 * The transport, plain or TLS. Returns bytes moved, 0 at end of stream,
 * -1 when it would block (*want says for what), -2 on error.
 */
static ssize_t
c_read(struct conn *c, void *buf, size_t len, int *want)
{
	if (c->ssl != NULL && SSL_is_init_finished(c->ssl)) {
		int n = SSL_read(c->ssl, buf, (int)(len > INT32_MAX ?
		    INT32_MAX : len));

		if (n > 0)
			return moved(c, n);
		switch (SSL_get_error(c->ssl, n)) {
		case SSL_ERROR_WANT_READ:
			*want = EV_READ;
			return -1;
		case SSL_ERROR_WANT_WRITE:
			*want = EV_WRITE;
			return -1;
		case SSL_ERROR_ZERO_RETURN:
			return 0;
		case SSL_ERROR_SYSCALL:
			return errno == 0 ? 0 : -2;
		default:
			return -2;
		}
	}
	ssize_t n = read(c->fd, buf, len);

	if (n >= 0)
		return moved(c, n);
	if (errno == EAGAIN || errno == EINTR) {
		*want = EV_READ;
		return -1;
	}
	return errno == ECONNRESET ? 0 : -2;
}

static ssize_t
c_write(struct conn *c, const void *buf, size_t len, int *want)
{
	if (c->ssl != NULL && SSL_is_init_finished(c->ssl)) {
		int n = SSL_write(c->ssl, buf, (int)(len > INT32_MAX ?
		    INT32_MAX : len));

		if (n > 0)
			return moved(c, n);
		switch (SSL_get_error(c->ssl, n)) {
		case SSL_ERROR_WANT_READ:
			*want = EV_READ;
			return -1;
		case SSL_ERROR_WANT_WRITE:
			*want = EV_WRITE;
			return -1;
		default:
			return -2;
		}
	}
	ssize_t n = write(c->fd, buf, len);

	if (n >= 0)
		return moved(c, n);
	if (errno == EAGAIN || errno == EINTR) {
		*want = EV_WRITE;
		return -1;
	}
	return -2;
}

/* Writes c->wbuf; 1 when all is written, 0 blocked, -1 failed. */
static int
flush(struct conn *c, int *want)
{
	while (c->wlen > 0) {
		ssize_t n = c_write(c, c->wbuf, c->wlen, want);

		if (n == -1)
			return 0;
		if (n < 0)
			return -1;
		c->wbuf += n;
		c->wlen -= (size_t)n;
	}
	return 1;
}

/* Reads into c->in; 1 when bytes came, 0 blocked, -1 EOF or error. */
static int
fill(struct conn *c, int *want)
{
	ssize_t n;

	if (c->inlen == IN_MAX)
		return -1;	/* a reply longer than we accept */
	n = c_read(c, c->in + c->inlen, IN_MAX - c->inlen, want);
	if (n == -1)
		return 0;
	if (n <= 0)
		return -1;
	c->inlen += (size_t)n;
	return 1;
}

/*
 * Looks for a complete final reply at the start of c->in: SMTP replies
 * end with a line "NNN " (continuations are "NNN-"), POP3 status lines
 * are one line. Returns the reply's length, 0 when incomplete.
 */
static size_t
reply_len(const struct conn *c, char code)
{
	size_t off = 0;

	for (;;) {
		const char *nl = memchr(c->in + off, '\n', c->inlen - off);
		size_t l;

		if (nl == NULL)
			return 0;
		l = (size_t)(nl - (c->in + off));
		if (code == '+' || l < 4 || c->in[off + 3] != '-')
			return off + l + 1;
		off += l + 1;
	}
}

/* Runs message text through the end-of-data matcher (state as in
 * backend.c); returns bytes consumed, *end set at the terminator. */
static size_t
body_scan(struct conn *c, const char *p, size_t len, bool *end)
{
	size_t i = 0;

	*end = false;
	while (i < len) {
		if (c->dot == 0) {
			const char *cr = memchr(p + i, '\r', len - i);

			if (cr == NULL)
				return len;
			i = (size_t)(cr - p) + 1;
			c->dot = 1;
			continue;
		}
		char ch = p[i++];

		switch (c->dot) {
		case 1:
			c->dot = ch == '\n' ? 2 : ch == '\r' ? 1 : 0;
			break;
		case 2:
			c->dot = ch == '.' ? 3 : ch == '\r' ? 1 : 0;
			break;
		case 3:
			c->dot = ch == '\r' ? 4 : 0;
			break;
		case 4:
			if (ch == '\n') {
				*end = true;
				return i;
			}
			c->dot = ch == '\r' ? 1 : 0;
			break;
		}
	}
	return i;
}

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double
percentile(const double *v, size_t n, double p)
{
	size_t i;

	if (n == 0)
		return 0;
	i = (size_t)ceil(p / 100.0 * (double)n);
	return v[i == 0 ? 0 : i - 1];
}

/* Latency: the two sessions take turns, one round trip each. */
static bool
my_turn(const struct conn *c)
{
	const struct conn *o = g.lat_conn[!c->id];

	if (g.lat_conns == 1 || g.turn == c->id)
		return true;
	return o == NULL || o->step->op != OP_NOOPS ||
	    o->rounds == g.warmup + g.rounds;
}

static void
kick_other(const struct conn *c)
{
	struct conn *o = g.lat_conn[!c->id];

	if (g.lat_conns == 2 && o != NULL)
		ev_feed_event(loop, &o->io, EV_READ);
}

/*
 * Runs the connection's script until it blocks. Returns false when the
 * connection was freed.
 */
static bool
advance(struct conn *c)
{
	int want = 0, r;

	for (;;) {
		const struct step *s = c->step;
		bool entering = !c->entered;

		c->entered = true;
		switch (s->op) {
		case OP_CONNECT: {
			int err = 0;
			socklen_t el = sizeof(err);

			if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err,
			    &el) == -1 || err != 0) {
				/* A refusal may come as a reset (moat sends
				 * one to banned addresses): as good as EOF. */
				if (err == ECONNRESET && g.mode == MODE_REJECT) {
					conn_end(c, true, NULL);
					return false;
				}
				errno = err;
				conn_end(c, false, "connect");
				return false;
			}
			break;
		}
		case OP_TLS:
			if (entering) {
				if ((c->ssl = SSL_new(g.ctx)) == NULL ||
				    !SSL_set_fd(c->ssl, c->fd)) {
					conn_end(c, false, "SSL_new");
					return false;
				}
				SSL_set_connect_state(c->ssl);
				if (g.sni != NULL)
					SSL_set_tlsext_host_name(c->ssl, g.sni);
			}
			r = SSL_do_handshake(c->ssl);
			if (r != 1) {
				int e = SSL_get_error(c->ssl, r);

				if (e == SSL_ERROR_WANT_READ)
					want = EV_READ;
				else if (e == SSL_ERROR_WANT_WRITE)
					want = EV_WRITE;
				else {
					conn_end(c, false, "handshake");
					return false;
				}
				goto block;
			}
			break;
		case OP_SEND:
			if (entering) {
				c->wbuf = s->arg;
				c->wlen = strlen(s->arg);
			}
			if ((r = flush(c, &want)) == 0)
				goto block;
			if (r < 0) {
				conn_end(c, false, "write");
				return false;
			}
			break;
		case OP_EXPECT: {
			size_t l;

			while ((l = reply_len(c, s->code)) == 0) {
				if ((r = fill(c, &want)) == 0)
					goto block;
				if (r < 0) {
					conn_end(c, false, "read");
					return false;
				}
			}
			if (c->in[0] != s->code) {
				if (g.errors_shown < 5)
					fprintf(stderr, "loadgen: unexpected "
					    "reply: %.*s\n", (int)(l > 200 ?
					    200 : l), c->in);
				conn_end(c, false, "reply");
				return false;
			}
			memmove(c->in, c->in + l, c->inlen - l);
			c->inlen -= l;
			break;
		}
		case OP_SEND_BODY:
			if (entering) {
				c->left = g.body_bytes;
				c->body_off = 0;
			}
			for (;;) {
				if (c->wlen == 0 && c->left > 0) {
					size_t n = MIB - c->body_off;

					if (n > c->left)
						n = (size_t)c->left;
					if (n > 256 * 1024)
						n = 256 * 1024;
					c->wbuf = pattern + c->body_off;
					c->wlen = n;
					c->body_off = (c->body_off + n) % MIB;
					c->left -= n;
					c->moved += n;
				} else if (c->wlen == 0 && c->left == 0 &&
				    c->body_off != SIZE_MAX) {
					c->wbuf = ".\r\n";
					c->wlen = 3;
					c->body_off = SIZE_MAX;
				} else if (c->wlen == 0)
					break;
				if ((r = flush(c, &want)) == 0)
					goto block;
				if (r < 0) {
					conn_end(c, false, "write body");
					return false;
				}
			}
			break;
		case OP_RECV_BODY: {
			bool end = false;
			size_t n;

			if (entering) {
				c->dot = 2;
				n = body_scan(c, c->in, c->inlen, &end);
				c->moved += n;
				memmove(c->in, c->in + n, c->inlen - n);
				c->inlen -= n;
			}
			while (!end) {
				ssize_t got = c_read(c, scratch,
				    sizeof(scratch), &want);

				if (got == -1)
					goto block;
				if (got <= 0) {
					conn_end(c, false, "read body");
					return false;
				}
				n = body_scan(c, scratch, (size_t)got, &end);
				c->moved += n;
				if (end && n < (size_t)got) {
					/* Nothing follows the body in these
					 * scripts; more than a line buffer's
					 * worth is the server's error. */
					if ((size_t)got - n > sizeof(c->in)) {
						conn_end(c, false,
						    "data after the body");
						return false;
					}
					memcpy(c->in, scratch + n,
					    (size_t)got - n);
					c->inlen = (size_t)got - n;
				}
			}
			break;
		}
		case OP_RAW:
			if (entering) {
				c->left = g.body_bytes;
				c->back = g.echo ? g.body_bytes : 0;
				c->body_off = 0;
			}
			while (c->left > 0 || c->wlen > 0 || c->back > 0) {
				bool progress = false;
				int w2 = 0;

				if (c->wlen == 0 && c->left > 0) {
					size_t n = MIB - c->body_off;

					if (n > c->left)
						n = (size_t)c->left;
					if (n > 64 * 1024)
						n = 64 * 1024;
					c->wbuf = pattern + c->body_off;
					c->wlen = n;
					c->body_off = (c->body_off + n) % MIB;
					c->left -= n;
					if (!g.echo)
						c->moved += n;
				}
				if (c->wlen > 0) {
					size_t before = c->wlen;

					if ((r = flush(c, &w2)) < 0) {
						conn_end(c, false, "write raw");
						return false;
					}
					progress = c->wlen != before;
					want |= r == 0 ? w2 : 0;
				}
				if (c->back > 0) {
					ssize_t got = c_read(c, scratch,
					    sizeof(scratch), &w2);

					if (got == -1)
						want |= w2;
					else if (got <= 0) {
						conn_end(c, false, "read raw");
						return false;
					} else {
						c->back -= (uint64_t)got >
						    c->back ? c->back :
						    (uint64_t)got;
						c->moved += (uint64_t)got;
						progress = true;
					}
				}
				if (!progress)
					goto block;
				want = 0;
			}
			break;
		case OP_NOOPS:
			if (entering) {
				c->rounds = 0;
				c->t0 = 0;
				if (++g.lat_ready == g.lat_conns)
					kick_other(c);
			}
			for (;;) {
				if (c->wlen == 0 && c->t0 == 0) {
					if (c->rounds == g.warmup + g.rounds)
						break;
					if (!my_turn(c)) {
						want = EV_READ;
						goto block;
					}
					c->wbuf = "NOOP\r\n";
					c->wlen = 6;
					c->t0 = now();
				}
				if ((r = flush(c, &want)) == 0)
					goto block;
				if (r < 0) {
					conn_end(c, false, "write noop");
					return false;
				}
				size_t l;

				while ((l = reply_len(c, '2')) == 0) {
					if ((r = fill(c, &want)) == 0)
						goto block;
					if (r < 0) {
						conn_end(c, false, "read noop");
						return false;
					}
				}
				if (c->rounds >= g.warmup)
					g.lat[c->id][g.nlat[c->id]++] =
					    (now() - c->t0) * 1e6;
				c->t0 = 0;
				c->rounds++;
				memmove(c->in, c->in + l, c->inlen - l);
				c->inlen -= l;
				g.turn = !c->id;
				kick_other(c);
			}
			break;
		case OP_HOLD:
			if (entering) {
				g.establishing--;
				g.held++;
				c->deadline = 0;
				if (g.held == g.n) {
					g.t_established = now();
					printf("ESTABLISHED conns=%lu wall_s=%.3f\n",
					    g.held, g.t_established - g.t_start);
					fflush(stdout);
				}
				spawn();	/* room for one more */
			}
			for (;;) {
				ssize_t got = c_read(c, scratch,
				    sizeof(scratch), &want);

				if (got == -1)
					goto block;
				if (got <= 0) {
					g.held--;
					g.dropped++;
					g.fail++;
					conn_free(c);
					return false;
				}
			}
		case OP_CLOSE_WAIT:
			if (c->ssl != NULL && !c->shut_sent) {
				r = SSL_shutdown(c->ssl);
				if (r < 0) {
					int e = SSL_get_error(c->ssl, r);

					if (e == SSL_ERROR_WANT_WRITE) {
						want = EV_WRITE;
						goto block;
					}
				}
				c->shut_sent = true;
			}
			for (;;) {
				ssize_t got = c_read(c, scratch,
				    sizeof(scratch), &want);

				if (got == -1)
					goto block;
				if (got == -2) {
					/* A reset at accept reads as 0; this
					 * is a failure after the work. */
					conn_end(c, false, "closing");
					return false;
				}
				if (got == 0)
					break;
			}
			break;
		case OP_DONE:
			conn_end(c, true, NULL);
			return false;
		}
		c->step++;
		c->entered = false;
		want = 0;
	}
block:
	if (want == 0)
		want = EV_READ;
	if (want != (c->io.events & (EV_READ | EV_WRITE))) {
		ev_io_stop(loop, &c->io);
		ev_io_set(&c->io, c->fd, want);
		ev_io_start(loop, &c->io);
	}
	return true;
}

static void
conn_cb(struct ev_loop *l, ev_io *w, int revents)
{
	(void)l, (void)revents;
	advance((struct conn *)w);
}

static int
new_conn(void)
{
	struct conn *c;
	int one = 1;

	if ((c = calloc(1, sizeof(*c))) == NULL)
		return -1;
	c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0) {
		if (g.errors_shown++ < 5)
			fprintf(stderr, "loadgen: socket: %s\n",
			    strerror(errno));
		free(c);
		return -1;
	}
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (g.nsrc > 0) {
		struct sockaddr_in *src = &g.src[g.next_src++ % g.nsrc];

		setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one,
		    sizeof(one));
		if (bind(c->fd, (struct sockaddr *)src, sizeof(*src)) == -1) {
			if (g.errors_shown++ < 5)
				fprintf(stderr, "loadgen: bind: %s\n",
				    strerror(errno));
			close(c->fd);
			free(c);
			return -1;
		}
	}
	c->step = g.script;
	const struct sockaddr_in *to = &g.target;

	if (g.mode == MODE_LATENCY) {
		c->id = (int)g.started;		/* 0 proxy, 1 direct */
		g.lat_conn[c->id] = c;
		if (c->id == 1) {
			c->step = script_latency_plain;
			to = &g.direct;
		}
	}
	c->deadline = now() + g.timeout;
	c->slot = g.nactive;
	g.active[g.nactive++] = c;
	g.started++;
	g.establishing++;
	ev_io_init(&c->io, conn_cb, c->fd, EV_WRITE);
	if (connect(c->fd, (const struct sockaddr *)to, sizeof(*to)) ==
	    -1 && errno != EINPROGRESS) {
		c->entered = true;
		conn_end(c, false, "connect");
		return 0;
	}
	c->entered = true;
	ev_io_start(loop, &c->io);
	return 0;
}

/* Keeps conc connections in flight until n were started. */
static void
spawn(void)
{
	static bool spawning;

	if (spawning)
		return;		/* conn_end() inside new_conn() */
	spawning = true;
	while (!g.stopping && g.started < g.n && g.establishing < g.conc) {
		if (new_conn() == -1) {
			g.fail++;
			g.started++;
		}
	}
	spawning = false;
	if (g.nactive == 0 && g.started >= g.n)
		finish();
}

static void
finish(void)
{
	if (g.stopping)
		return;
	g.stopping = true;
	g.t_end = now();
	ev_break(loop, EVBREAK_ALL);
}

static void
tick_cb(struct ev_loop *l, ev_timer *w, int revents)
{
	double t = now();

	(void)l, (void)w, (void)revents;
	for (size_t i = 0; i < g.nactive; ) {
		struct conn *c = g.active[i];

		if (c->deadline > 0 && t > c->deadline) {
			errno = ETIMEDOUT;
			conn_end(c, false, "timeout");
			continue;	/* slot i now holds another */
		}
		i++;
	}
	if (t - g.t_start > g.max_time)
		finish();
	if (g.mode == MODE_IDLE && g.hold > 0 && g.t_established > 0 &&
	    t - g.t_established > g.hold)
		finish();
}

static void
signal_cb(struct ev_loop *l, ev_signal *w, int revents)
{
	(void)l, (void)w, (void)revents;
	finish();
}

static int
new_ticket(SSL *ssl, SSL_SESSION *sess)
{
	(void)ssl, (void)sess;
	g.tickets++;
	return 0;	/* not kept: no session is ever resumed */
}

static void
usage(void)
{
	fprintf(stderr,
	    "usage: loadgen MODE -t HOST:PORT [options]\n"
	    "  MODE: handshake | stream | smtp | latency | idle | reject\n"
	    "  -n N            connections/sessions in all (default 1000)\n"
	    "  -c C            concurrency (default 16)\n"
	    "  -s IP[,IP...]   source addresses, used in turn\n"
	    "  --proto P       stream: smtp | pop3 | raw (default smtp)\n"
	    "  --echo          stream --proto raw: read the bytes back\n"
	    "  --mib M         stream: MiB per session (default 16)\n"
	    "  --data KIB      smtp: message KiB (default 10)\n"
	    "  --line L        stream, smtp: message line bytes (default 510)\n"
	    "  --rounds R      latency: round trips (default 10000)\n"
	    "  --warmup W      latency: untimed round trips (default 200)\n"
	    "  --plain         latency: no TLS (direct to the backend)\n"
	    "  --direct H:P    latency: alternate with a plaintext session\n"
	    "                  straight to the backend at H:P\n"
	    "  --hold S        idle: seconds to hold once established\n"
	    "                  (default: until SIGTERM or --max-time)\n"
	    "  --sni NAME      server name to send\n"
	    "  --groups G      TLS groups (default X25519)\n"
	    "  --ciphersuites S  TLS 1.3 suites (default TLS_AES_128_GCM_SHA256)\n"
	    "  --timeout S     per connection without progress (default 10)\n"
	    "  --max-time S    whole run (default 120)\n");
	exit(2);
}

static char x25519[] = "X25519";

int
main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "target", required_argument, NULL, 't' },
		{ "count", required_argument, NULL, 'n' },
		{ "concurrency", required_argument, NULL, 'c' },
		{ "source", required_argument, NULL, 's' },
		{ "proto", required_argument, NULL, 'P' },
		{ "echo", no_argument, NULL, 'E' },
		{ "mib", required_argument, NULL, 'M' },
		{ "data", required_argument, NULL, 'D' },
		{ "line", required_argument, NULL, 'L' },
		{ "rounds", required_argument, NULL, 'R' },
		{ "warmup", required_argument, NULL, 'W' },
		{ "plain", no_argument, NULL, 'p' },
		{ "direct", required_argument, NULL, 'd' },
		{ "hold", required_argument, NULL, 'H' },
		{ "sni", required_argument, NULL, 'S' },
		{ "groups", required_argument, NULL, 'G' },
		{ "ciphersuites", required_argument, NULL, 'C' },
		{ "timeout", required_argument, NULL, 'T' },
		{ "max-time", required_argument, NULL, 'X' },
		{ NULL, 0, NULL, 0 },
	};
	const char *target = NULL, *mode;
	char retr[32], *src, *tok, *save;
	ev_timer tick;
	ev_signal s1, s2;
	int ch;

	if (argc < 2 || argv[1][0] == '-')
		usage();
	mode = argv[1];
	g.n = 1000;
	g.conc = 16;
	g.mib = 16;
	g.data_kib = 10;
	g.line = MAILTEXT_LINE_DEFAULT;
	g.rounds = 10000;
	g.warmup = 200;
	g.timeout = 10;
	g.max_time = 120;
	g.groups = x25519;
	g.suites = "TLS_AES_128_GCM_SHA256";
	optind = 2;
	while ((ch = getopt_long(argc, argv, "t:n:c:s:", opts, NULL)) != -1) {
		switch (ch) {
		case 't':
			target = optarg;
			break;
		case 'n':
			g.n = strtoul(optarg, NULL, 10);
			break;
		case 'c':
			g.conc = strtoul(optarg, NULL, 10);
			break;
		case 's':
			src = optarg;
			for (tok = strtok_r(src, ",", &save); tok != NULL &&
			    g.nsrc < MAX_SRC; tok = strtok_r(NULL, ",", &save))
				if (parse_addr(tok, &g.src[g.nsrc++], 0) == -1)
					usage();
			break;
		case 'P':
			g.proto_pop3 = strcmp(optarg, "pop3") == 0;
			g.proto_raw = strcmp(optarg, "raw") == 0;
			if (!g.proto_pop3 && !g.proto_raw &&
			    strcmp(optarg, "smtp") != 0)
				usage();
			break;
		case 'E':
			g.echo = 1;
			break;
		case 'M':
			g.mib = strtod(optarg, NULL);
			break;
		case 'D':
			g.data_kib = strtod(optarg, NULL);
			break;
		case 'L':
			g.line = strtoul(optarg, NULL, 10);
			if (g.line < 1 || g.line > MAILTEXT_LINE_MAX)
				usage();
			break;
		case 'R':
			g.rounds = strtoul(optarg, NULL, 10);
			break;
		case 'W':
			g.warmup = strtoul(optarg, NULL, 10);
			break;
		case 'p':
			g.plain = 1;
			break;
		case 'd':
			if (parse_addr(optarg, &g.direct, 1) == -1)
				usage();
			g.have_direct = 1;
			break;
		case 'H':
			g.hold = strtod(optarg, NULL);
			break;
		case 'S':
			g.sni = optarg;
			break;
		case 'G':
			g.groups = optarg;
			break;
		case 'C':
			g.suites = optarg;
			break;
		case 'T':
			g.timeout = strtod(optarg, NULL);
			break;
		case 'X':
			g.max_time = strtod(optarg, NULL);
			break;
		default:
			usage();
		}
	}
	if (target == NULL || parse_addr(target, &g.target, 1) == -1 ||
	    g.n == 0 || g.conc == 0)
		usage();

	if (strcmp(mode, "handshake") == 0) {
		g.mode = MODE_HANDSHAKE;
		g.script = script_handshake;
	} else if (strcmp(mode, "stream") == 0) {
		g.mode = MODE_STREAM;
		g.body_bytes = (uint64_t)(g.mib * MIB);
		if (g.proto_raw)
			g.script = script_stream_raw;
		else if (g.proto_pop3) {
			/* The POP3 source sends RETR N as an N MiB message. */
			memcpy(script_pop3, script_stream_pop3,
			    sizeof(script_pop3));
			snprintf(retr, sizeof(retr), "RETR %lu\r\n",
			    (unsigned long)(g.mib < 1 ? 1 : g.mib));
			for (size_t i = 0; i < sizeof(script_pop3) /
			    sizeof(script_pop3[0]); i++)
				if (script_pop3[i].op == OP_SEND &&
				    script_pop3[i].arg == NULL)
					script_pop3[i].arg = retr;
			g.script = script_pop3;
		} else
			g.script = script_stream_smtp;
		if (g.conc > g.n)
			g.conc = g.n;
	} else if (strcmp(mode, "smtp") == 0) {
		g.mode = MODE_SMTP;
		g.script = script_smtp;
		g.body_bytes = (uint64_t)(g.data_kib * 1024);
	} else if (strcmp(mode, "latency") == 0) {
		g.mode = MODE_LATENCY;
		g.script = g.plain ? script_latency_plain : script_latency_tls;
		g.n = g.conc = g.lat_conns = g.have_direct ? 2 : 1;
		g.turn = 0;
		if ((g.lat[0] = calloc(g.rounds, sizeof(double))) == NULL ||
		    (g.lat[1] = calloc(g.rounds, sizeof(double))) == NULL)
			return 1;
	} else if (strcmp(mode, "idle") == 0) {
		g.mode = MODE_IDLE;
		g.script = script_idle;
	} else if (strcmp(mode, "reject") == 0) {
		g.mode = MODE_REJECT;
		g.script = script_reject;
	} else
		usage();

	if ((pattern = malloc(MIB)) == NULL)
		return 1;
	mailtext_fill(pattern, MIB, g.line);
	/* Whole lines of message text: on to the end of the last one. */
	while (g.body_bytes % MIB != 0 &&
	    pattern[g.body_bytes % MIB - 1] != '\n')
		g.body_bytes++;

	if ((g.active = calloc(g.n + g.conc + 1, sizeof(*g.active))) == NULL)
		return 1;
	if (g.mode != MODE_REJECT && !g.plain) {
		g.ctx = SSL_CTX_new(TLS_client_method());
		if (g.ctx == NULL ||
		    !SSL_CTX_set_min_proto_version(g.ctx, TLS1_3_VERSION) ||
		    !SSL_CTX_set_ciphersuites(g.ctx, g.suites) ||
		    !SSL_CTX_set1_groups_list(g.ctx, g.groups)) {
			ERR_print_errors_fp(stderr);
			return 1;
		}
		SSL_CTX_set_verify(g.ctx, SSL_VERIFY_NONE, NULL);
		SSL_CTX_set_options(g.ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
		SSL_CTX_set_session_cache_mode(g.ctx, SSL_SESS_CACHE_CLIENT |
		    SSL_SESS_CACHE_NO_INTERNAL_STORE);
		SSL_CTX_sess_set_new_cb(g.ctx, new_ticket);
		SSL_CTX_set_mode(g.ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
		    SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
		    (g.mode == MODE_IDLE ? SSL_MODE_RELEASE_BUFFERS : 0));
	}
	signal(SIGPIPE, SIG_IGN);
	loop = EV_DEFAULT;
	ev_timer_init(&tick, tick_cb, 0.1, 0.1);
	ev_timer_start(loop, &tick);
	ev_signal_init(&s1, signal_cb, SIGTERM);
	ev_signal_start(loop, &s1);
	ev_signal_init(&s2, signal_cb, SIGINT);
	ev_signal_start(loop, &s2);

	g.t_start = now();
	spawn();
	if (!g.stopping)
		ev_run(loop, 0);
	if (g.t_end == 0)
		g.t_end = now();

	double wall = g.t_end - g.t_start;
	double busy = g.mode == MODE_IDLE && g.t_established > 0 ?
	    g.t_established - g.t_start : wall;

	printf("RESULT mode=%s", mode);
	if (g.mode == MODE_STREAM)
		printf(" proto=%s%s", g.proto_pop3 ? "pop3" : g.proto_raw ?
		    "raw" : "smtp", g.echo ? "-echo" : "");
	printf(" n=%lu conc=%lu ok=%lu fail=%lu wall_s=%.4f per_s=%.1f",
	    g.n, g.conc, g.ok, g.fail, busy,
	    busy > 0 ? (double)(g.mode == MODE_IDLE ? g.held : g.ok) / busy : 0);
	if (g.mode == MODE_STREAM || g.mode == MODE_SMTP)
		printf(" mb=%.3f mb_per_s=%.2f", (double)g.bytes / 1e6,
		    busy > 0 ? (double)g.bytes / 1e6 / busy : 0);
	if (g.mode == MODE_HANDSHAKE || g.mode == MODE_SMTP)
		printf(" tickets=%lu", g.tickets);
	if (g.mode == MODE_IDLE)
		printf(" held=%lu dropped=%lu", g.held, g.dropped);
	if (g.mode == MODE_LATENCY) {
		static const char *const pfx[2] = { "", "direct_" };
		double p50[2], p99[2];

		for (int k = 0; k < g.lat_conns; k++) {
			double *v = g.lat[k], sum = 0;
			size_t n = g.nlat[k];

			qsort(v, n, sizeof(*v), cmp_double);
			for (size_t i = 0; i < n; i++)
				sum += v[i];
			p50[k] = percentile(v, n, 50);
			p99[k] = percentile(v, n, 99);
			printf(" %srtts=%zu %sp50_us=%.1f %sp90_us=%.1f "
			    "%sp99_us=%.1f %smax_us=%.1f %smean_us=%.1f",
			    pfx[k], n, pfx[k], p50[k], pfx[k],
			    percentile(v, n, 90), pfx[k], p99[k], pfx[k],
			    n ? v[n - 1] : 0, pfx[k], n ? sum / (double)n : 0);
		}
		if (g.lat_conns == 2)
			printf(" added_p50_us=%.1f added_p99_us=%.1f",
			    p50[0] - p50[1], p99[0] - p99[1]);
	}
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	printf(" lg_cpu_s=%.3f", (double)ru.ru_utime.tv_sec +
	    (double)ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
	    (double)ru.ru_stime.tv_usec / 1e6);
	for (int i = 0; i <= OP_DONE; i++)
		if (g.fail_reason[i] > 0)
			printf(" fail_%s=%lu", op_names[i], g.fail_reason[i]);
	printf(" complete=%d\n", g.mode == MODE_IDLE ? g.held == g.n :
	    g.ok == g.n);
	return 0;
}
