/* backend.c - plaintext servers that every proxy under benchmark forwards to.
 *
 * One process, one libev loop, one listening socket, one mode:
 *
 *   sink   read and discard everything (the handshake figure)
 *   echo   write back whatever is read (raw byte streams)
 *   smtp   a minimal SMTP sink: 220 greeting, EHLO advertising PIPELINING,
 *          250 to MAIL/RCPT/RSET/NOOP, 354 to DATA then 250 after the
 *          end-of-data dot, 221 to QUIT; 220 to XCLIENT as Postfix does
 *   pop3   a minimal POP3 source: +OK to USER/PASS/NOOP/STAT, and RETR N
 *          sends a message of N MiB (lines of LINE bytes, default 510,
 *          and CRLF; dot-terminated)
 *   auth   nginx mail's auth_http responder: every request gets
 *          "Auth-Status: OK" pointing at --auth-to HOST:PORT
 *
 * In every mode a PROXY protocol v1 or v2 header at the start of a
 * connection is recognised and skipped, so a proxy may send one or not.
 *
 *   backend -l 127.0.0.1:PORT -m MODE [-a HOST:PORT] [-L LINE]
 *
 * It prints "ready" on stdout once listening and runs until SIGTERM or
 * SIGINT, then prints one line of totals on stderr. Not a test: it is a
 * peer for loadgen and the proxies (see run.sh).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <ev.h>

#include "mailtext.h"

#define IN_MAX   (64 * 1024)	/* read buffer; lines longer are cut */
#define OUT_MAX  (64 * 1024)	/* queued replies / echoed bytes */
#define MIB      (1024u * 1024u)

enum mode {
	M_SINK = 0,
	M_ECHO,
	M_SMTP,
	M_POP3,
	M_AUTH,
};

enum hdr_state {
	HDR_CHECK = 0,		/* looking for a PROXY header */
	HDR_SKIP,		/* skipping the rest of a v2 header */
	HDR_DONE,
};

struct conn {
	ev_io io;
	int fd;
	enum hdr_state hdr;
	size_t skip;		/* v2 header bytes still to drop */
	bool data;		/* SMTP: inside DATA */
	int dot;		/* SMTP: end-of-data matcher state */
	bool closing;		/* close once out is flushed */
	uint64_t body_left;	/* POP3: message bytes still to send */
	size_t body_off;	/* POP3: offset into the message pattern */
	bool body_dot;		/* POP3: the final ".\r\n" is due */
	size_t inlen, outlen, outoff;
	char in[IN_MAX];
	char out[OUT_MAX];
};

static enum mode mode;
static char auth_reply[256];
static size_t auth_reply_len;
static char *pattern;		/* POP3: one MiB of message lines */
static uint64_t total_conns, total_bytes_in, total_bytes_out, total_msgs;
static unsigned live_conns;

static const char V2SIG[12] = "\r\n\r\n\0\r\nQUIT\n";

static void conn_cb(struct ev_loop *, ev_io *, int);

static void
die(const char *what)
{
	fprintf(stderr, "backend: %s: %s\n", what, strerror(errno));
	exit(1);
}

static int
parse_addr(const char *s, struct sockaddr_in *sin)
{
	char host[64];
	const char *colon = strrchr(s, ':');

	if (colon == NULL || (size_t)(colon - s) >= sizeof(host))
		return -1;
	memcpy(host, s, (size_t)(colon - s));
	host[colon - s] = '\0';
	memset(sin, 0, sizeof(*sin));
	sin->sin_family = AF_INET;
	sin->sin_port = htons((uint16_t)atoi(colon + 1));
	return inet_pton(AF_INET, host, &sin->sin_addr) == 1 ? 0 : -1;
}

static void
conn_free(struct ev_loop *loop, struct conn *c)
{
	ev_io_stop(loop, &c->io);
	close(c->fd);
	free(c);
	live_conns--;
}

static void
queue(struct conn *c, const char *s, size_t len)
{
	if (c->outoff > 0 && c->outlen + len > OUT_MAX) {
		memmove(c->out, c->out + c->outoff, c->outlen - c->outoff);
		c->outlen -= c->outoff;
		c->outoff = 0;
	}
	if (c->outlen + len > OUT_MAX) {
		c->closing = true;	/* a client that never reads replies */
		return;
	}
	memcpy(c->out + c->outlen, s, len);
	c->outlen += len;
}

static void
queue_str(struct conn *c, const char *s)
{
	queue(c, s, strlen(s));
}

/*
 * Skips a PROXY header at the start of in[0..len). Returns the number of
 * bytes consumed, or -1 when more bytes are needed to decide.
 */
static long
skip_proxy_header(struct conn *c, const char *p, size_t len)
{
	size_t n;

	if (c->hdr == HDR_SKIP) {
		n = len < c->skip ? len : c->skip;
		c->skip -= n;
		if (c->skip == 0)
			c->hdr = HDR_DONE;
		return (long)n;
	}
	n = len < sizeof(V2SIG) ? len : sizeof(V2SIG);
	if (memcmp(p, V2SIG, n) == 0) {
		if (len < 16)
			return -1;
		c->skip = 16 + (((size_t)(uint8_t)p[14] << 8) | (uint8_t)p[15]);
		c->hdr = HDR_SKIP;
		return skip_proxy_header(c, p, len);
	}
	n = len < 6 ? len : 6;
	if (memcmp(p, "PROXY ", n) == 0) {
		const char *nl = memchr(p, '\n', len);

		if (nl == NULL)
			return len < 108 ? -1 : (long)len;
		c->hdr = HDR_DONE;
		return nl + 1 - p;
	}
	c->hdr = HDR_DONE;
	return 0;
}

/* Consumes message text until the end-of-data line; true at its end.
 * State dot: 0 mid-line, 1 after CR, 2 at line start, 3 after ".",
 * 4 after ".\r". DATA starts at a line start. */
static bool
smtp_body(struct conn *c, const char *p, size_t len, size_t *used)
{
	size_t i = 0;

	while (i < len) {
		if (c->dot == 0) {
			const char *cr = memchr(p + i, '\r', len - i);

			if (cr == NULL) {
				i = len;
				break;
			}
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
				*used = i;
				return true;
			}
			c->dot = ch == '\r' ? 1 : 0;
			break;
		}
	}
	*used = i;
	return false;
}

static void
smtp_line(struct conn *c, const char *l, size_t len)
{
	if (len >= 4 && strncasecmp(l, "EHLO", 4) == 0)
		queue_str(c, "250-bench.invalid\r\n250-PIPELINING\r\n"
		    "250-8BITMIME\r\n250-SIZE 0\r\n250 ENHANCEDSTATUSCODES\r\n");
	else if (len >= 4 && strncasecmp(l, "HELO", 4) == 0)
		queue_str(c, "250 bench.invalid\r\n");
	else if (len >= 4 && strncasecmp(l, "DATA", 4) == 0) {
		queue_str(c, "354 End data with <CR><LF>.<CR><LF>\r\n");
		c->data = true;
		c->dot = 2;
	} else if (len >= 4 && strncasecmp(l, "QUIT", 4) == 0) {
		queue_str(c, "221 2.0.0 Bye\r\n");
		c->closing = true;
	} else if (len >= 7 && strncasecmp(l, "XCLIENT", 7) == 0)
		queue_str(c, "220 bench.invalid ESMTP sink\r\n");
	else if (len >= 8 && strncasecmp(l, "STARTTLS", 8) == 0)
		queue_str(c, "454 4.7.0 TLS not available\r\n");
	else if (len >= 4 && (strncasecmp(l, "MAIL", 4) == 0 ||
	    strncasecmp(l, "RCPT", 4) == 0 || strncasecmp(l, "RSET", 4) == 0 ||
	    strncasecmp(l, "NOOP", 4) == 0))
		queue_str(c, "250 2.0.0 Ok\r\n");
	else
		queue_str(c, "502 5.5.2 Error: command not recognized\r\n");
}

static void
pop3_line(struct conn *c, const char *l, size_t len)
{
	char buf[64];

	if (len >= 4 && strncasecmp(l, "RETR", 4) == 0) {
		unsigned long mib = len > 5 ? strtoul(l + 5, NULL, 10) : 0;

		if (mib == 0 || mib > 65536) {
			queue_str(c, "-ERR no such message\r\n");
			return;
		}
		snprintf(buf, sizeof(buf), "+OK %llu octets\r\n",
		    (unsigned long long)mib * MIB);
		queue_str(c, buf);
		c->body_left = (uint64_t)mib * MIB;
		c->body_off = 0;
	} else if (len >= 4 && strncasecmp(l, "QUIT", 4) == 0) {
		queue_str(c, "+OK bye\r\n");
		c->closing = true;
	} else if (len >= 4 && strncasecmp(l, "CAPA", 4) == 0)
		queue_str(c, "+OK\r\nUSER\r\nPIPELINING\r\n.\r\n");
	else if (len >= 4 && strncasecmp(l, "STAT", 4) == 0)
		queue_str(c, "+OK 1 1048576\r\n");
	else
		queue_str(c, "+OK\r\n");
}

/* Hands the complete lines of in[] to the mode's line handler and the
 * message text to the SMTP body matcher; returns bytes consumed. */
static size_t
lines(struct conn *c, const char *p, size_t len)
{
	size_t off = 0;

	while (off < len && !c->closing) {
		if (mode == M_SMTP && c->data) {
			size_t used;

			if (smtp_body(c, p + off, len - off, &used)) {
				c->data = false;
				total_msgs++;
				queue_str(c, "250 2.0.0 Ok: queued\r\n");
			}
			off += used;
			continue;
		}
		if (mode == M_POP3 && c->body_left > 0)
			break;	/* pipelined commands wait for the message */
		const char *nl = memchr(p + off, '\n', len - off);

		if (nl == NULL) {
			if (len - off >= IN_MAX)	/* cut an over-long line */
				off = len;
			break;
		}
		size_t l = (size_t)(nl - (p + off));

		if (mode == M_SMTP)
			smtp_line(c, p + off, l);
		else
			pop3_line(c, p + off, l);
		off += l + 1;
	}
	return off;
}

static void
on_input(struct conn *c)
{
	size_t used = 0;

	if (c->hdr != HDR_DONE) {
		long n = skip_proxy_header(c, c->in, c->inlen);

		if (n < 0)
			return;
		used = (size_t)n;
		while (c->hdr == HDR_SKIP && used < c->inlen)
			used += (size_t)skip_proxy_header(c, c->in + used,
			    c->inlen - used);
	}
	switch (mode) {
	case M_SINK:
		used = c->inlen;
		break;
	case M_ECHO:
		if (c->hdr == HDR_DONE) {
			size_t room = OUT_MAX - c->outlen;
			size_t n = c->inlen - used < room ? c->inlen - used : room;

			memcpy(c->out + c->outlen, c->in + used, n);
			c->outlen += n;
			used += n;
		}
		break;
	case M_SMTP:
	case M_POP3:
		if (c->hdr == HDR_DONE)
			used += lines(c, c->in + used, c->inlen - used);
		break;
	case M_AUTH:
		if (memmem(c->in, c->inlen, "\r\n\r\n", 4) != NULL) {
			queue(c, auth_reply, auth_reply_len);
			c->closing = true;
		}
		used = memmem(c->in, c->inlen, "\r\n\r\n", 4) != NULL ||
		    c->inlen == IN_MAX ? c->inlen : 0;
		break;
	}
	if (used > 0) {
		memmove(c->in, c->in + used, c->inlen - used);
		c->inlen -= used;
	}
}

/* Fills the output with POP3 message text from the pattern. */
static void
pop3_fill(struct conn *c)
{
	while (c->body_left > 0 && c->outlen < OUT_MAX) {
		size_t n = MIB - c->body_off;

		if (n > c->body_left)
			n = (size_t)c->body_left;
		if (n > OUT_MAX - c->outlen)
			n = OUT_MAX - c->outlen;
		memcpy(c->out + c->outlen, pattern + c->body_off, n);
		c->outlen += n;
		c->body_off = (c->body_off + n) % MIB;
		c->body_left -= n;
		if (c->body_left == 0)
			c->body_dot = true;
	}
	if (c->body_dot && OUT_MAX - c->outlen >= 3) {
		memcpy(c->out + c->outlen, ".\r\n", 3);
		c->outlen += 3;
		c->body_dot = false;
	}
}

/* Writes what is queued; returns -1 when the connection died. */
static int
flush_out(struct conn *c)
{
	for (;;) {
		if (mode == M_POP3 && c->outoff == c->outlen) {
			c->outoff = c->outlen = 0;
			pop3_fill(c);
		}
		if (c->outoff == c->outlen)
			break;
		ssize_t n = write(c->fd, c->out + c->outoff,
		    c->outlen - c->outoff);

		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				return 0;
			return -1;
		}
		total_bytes_out += (uint64_t)n;
		c->outoff += (size_t)n;
	}
	c->outoff = c->outlen = 0;
	return 0;
}

static void
conn_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct conn *c = (struct conn *)w;
	bool eof = false;

	if (revents & EV_READ) {
		for (int rounds = 0; rounds < 16; rounds++) {
			char *dst = c->in + c->inlen;
			size_t room = IN_MAX - c->inlen;
			static char drain[IN_MAX];
			ssize_t n;

			if (mode == M_SINK) {	/* no need to keep bytes */
				dst = drain;
				room = sizeof(drain);
			}
			if (room == 0)
				break;	/* backpressure: replies not read */
			n = read(c->fd, dst, room);
			if (n == 0) {
				eof = true;
				break;
			}
			if (n < 0) {
				if (errno == EAGAIN || errno == EINTR)
					break;
				conn_free(loop, c);
				return;
			}
			total_bytes_in += (uint64_t)n;
			if (mode == M_SINK)
				continue;
			c->inlen += (size_t)n;
			on_input(c);
			if ((size_t)n < room)
				break;
		}
	}
	if (flush_out(c) == -1) {
		conn_free(loop, c);
		return;
	}
	/* Input held back for lack of room (echo) or behind a message
	 * (pop3) is offered again now that output drained. */
	if (c->inlen > 0 && mode != M_SINK && !c->closing) {
		size_t before = c->inlen;

		on_input(c);
		if (c->inlen != before && flush_out(c) == -1) {
			conn_free(loop, c);
			return;
		}
	}
	if (eof || (c->closing && c->outlen == 0 && c->body_left == 0 &&
	    !c->body_dot)) {
		conn_free(loop, c);
		return;
	}
	/* Wait for room to write when output is pending; stop reading
	 * while the input buffer is full (the peer must read first). */
	int ev = 0;

	if (c->outlen > 0 || c->body_left > 0 || c->body_dot)
		ev |= EV_WRITE;
	if (c->inlen < IN_MAX && c->outlen < OUT_MAX / 2 && c->body_left == 0)
		ev |= EV_READ;
	if (ev == 0)
		ev = EV_WRITE;
	if (ev != (c->io.events & (EV_READ | EV_WRITE))) {
		ev_io_stop(loop, &c->io);
		ev_io_set(&c->io, c->fd, ev);
		ev_io_start(loop, &c->io);
	}
}

static void
accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	(void)revents;
	for (int i = 0; i < 64; i++) {
		int fd = accept4(w->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		int one = 1;
		struct conn *c;

		if (fd < 0) {
			if (errno != EAGAIN && errno != EINTR &&
			    errno != ECONNABORTED)
				fprintf(stderr, "backend: accept: %s\n",
				    strerror(errno));
			return;
		}
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		if ((c = calloc(1, sizeof(*c))) == NULL) {
			close(fd);
			return;
		}
		c->fd = fd;
		total_conns++;
		live_conns++;
		if (mode == M_SMTP)
			queue_str(c, "220 bench.invalid ESMTP sink\r\n");
		else if (mode == M_POP3)
			queue_str(c, "+OK bench POP3 source ready\r\n");
		ev_io_init(&c->io, conn_cb, fd, c->outlen > 0 ? EV_WRITE :
		    EV_READ);
		ev_io_start(loop, &c->io);
		if (c->outlen > 0)
			conn_cb(loop, &c->io, EV_WRITE);
	}
}

static void
stop_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
	(void)w, (void)revents;
	ev_break(loop, EVBREAK_ALL);
}

static void
usage(void)
{
	fprintf(stderr, "usage: backend -l HOST:PORT -m sink|echo|smtp|pop3|auth"
	    " [-a HOST:PORT] [-L LINE]\n");
	exit(2);
}

int
main(int argc, char **argv)
{
	const char *listen_at = NULL, *auth_to = NULL;
	struct sockaddr_in sin;
	struct ev_loop *loop = EV_DEFAULT;
	ev_io lw;
	ev_signal s1, s2;
	size_t line = MAILTEXT_LINE_DEFAULT;
	int ch, fd, one = 1;

	while ((ch = getopt(argc, argv, "l:m:a:L:")) != -1) {
		switch (ch) {
		case 'l':
			listen_at = optarg;
			break;
		case 'm':
			if (strcmp(optarg, "sink") == 0)
				mode = M_SINK;
			else if (strcmp(optarg, "echo") == 0)
				mode = M_ECHO;
			else if (strcmp(optarg, "smtp") == 0)
				mode = M_SMTP;
			else if (strcmp(optarg, "pop3") == 0)
				mode = M_POP3;
			else if (strcmp(optarg, "auth") == 0)
				mode = M_AUTH;
			else
				usage();
			break;
		case 'a':
			auth_to = optarg;
			break;
		case 'L':
			line = strtoul(optarg, NULL, 10);
			if (line < 1 || line > MAILTEXT_LINE_MAX)
				usage();
			break;
		default:
			usage();
		}
	}
	if (listen_at == NULL || parse_addr(listen_at, &sin) == -1)
		usage();
	if (mode == M_AUTH) {
		struct sockaddr_in to;
		char host[INET_ADDRSTRLEN];

		if (auth_to == NULL || parse_addr(auth_to, &to) == -1)
			usage();
		inet_ntop(AF_INET, &to.sin_addr, host, sizeof(host));
		auth_reply_len = (size_t)snprintf(auth_reply, sizeof(auth_reply),
		    "HTTP/1.0 200 OK\r\nAuth-Status: OK\r\nAuth-Server: %s\r\n"
		    "Auth-Port: %u\r\n\r\n", host, ntohs(to.sin_port));
	}
	if (mode == M_POP3) {
		if ((pattern = malloc(MIB)) == NULL)
			die("malloc");
		mailtext_fill(pattern, MIB, line);
	}
	signal(SIGPIPE, SIG_IGN);
	if ((fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
	    0)) < 0)
		die("socket");
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0)
		die("bind");
	if (listen(fd, 4096) < 0)
		die("listen");
	ev_io_init(&lw, accept_cb, fd, EV_READ);
	ev_io_start(loop, &lw);
	ev_signal_init(&s1, stop_cb, SIGTERM);
	ev_signal_start(loop, &s1);
	ev_signal_init(&s2, stop_cb, SIGINT);
	ev_signal_start(loop, &s2);
	printf("ready\n");
	fflush(stdout);
	ev_run(loop, 0);
	fprintf(stderr, "backend: conns=%llu live=%u in=%llu out=%llu msgs=%llu\n",
	    (unsigned long long)total_conns, live_conns,
	    (unsigned long long)total_bytes_in,
	    (unsigned long long)total_bytes_out,
	    (unsigned long long)total_msgs);
	return 0;
}
