/* backendprobe.c - moat -T: each listener's backend met as a session
 * meets it, before any client does. */
#include "backendprobe.h"

#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "backend.h"
#include "backendwatch.h"
#include "duration.h"
#include "log.h"
#include "mono.h"
#include "pop3.h"
#include "pop3_parse.h"

/* A backend that took the PROXY header for a command answers at once. */
#define STRAY_WAIT_MS 500
#define QUIT_WAIT_MS 2000

struct probe {
	const struct cfg_listener *lc;
	int fd;
	uint8_t buf[BACKEND_REPLY_MAX];
	size_t len;
	char why[256];		/* what failed */
	const char *hint;
};

/* Reads once more: 1, 0 at the end of stream, -1 with errno (ETIMEDOUT
 * past deadline). */
static int
read_more(struct probe *p, uint64_t deadline)
{
	struct pollfd pfd = { .fd = p->fd, .events = POLLIN };
	uint64_t now;
	ssize_t n;
	int r;

	for (;;) {
		if ((now = mono_ms()) >= deadline) {
			errno = ETIMEDOUT;
			return -1;
		}
		if ((r = poll(&pfd, 1, (int)(deadline - now))) == -1) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (r == 0)
			continue;	/* the deadline, said above */
		if (p->len == sizeof(p->buf)) {
			errno = EMSGSIZE;
			return -1;
		}
		n = read(p->fd, p->buf + p->len, sizeof(p->buf) - p->len);
		if (n == -1 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n == -1)
			return -1;
		p->len += (size_t)n;
		return n > 0;
	}
}

/* One whole reply at the start of the buffer: its length, 0 while it is
 * not whole, -1 when it is no reply of the protocol. *good: 2xx, +OK. */
static long
reply_len(const struct probe *p, bool *good)
{
	struct pop3_status st;
	size_t len;
	int code;

	if (p->lc->protocol == CFG_PROTO_SMTP) {
		switch (backend_reply_parse(p->buf, p->len, &len, &code)) {
		case BACKEND_REPLY_OK:
			*good = code / 100 == 2;
			return (long)len;
		case BACKEND_REPLY_AGAIN:
			return 0;
		default:
			return -1;
		}
	}
	switch (pop3_status_parse(p->buf, p->len, POP3_REPLY_MAX, &st)) {
	case POP3_PARSE_OK:
		*good = st.kind == POP3_STATUS_OK;
		return (long)st.consumed;
	case POP3_PARSE_AGAIN:
		return 0;
	default:
		return -1;
	}
}

/* The first line of what the buffer holds, printable, quoted. */
static const char *
first_line(const struct probe *p, char *buf, size_t len)
{
	buf[0] = '"';
	log_line_text(p->buf, p->len, buf + 1, len - 2);
	strcat(buf, "\"");
	return buf;
}

static void
consume(struct probe *p, size_t n)
{
	memmove(p->buf, p->buf + n, p->len - n);
	p->len -= n;
}

/* Reads one whole reply; false with p->why set (what names the step). */
static bool
read_reply(struct probe *p, uint64_t ms, const char *what, bool *good,
    long *len)
{
	uint64_t deadline = mono_ms() + ms;
	char d[32];
	int r;

	while ((*len = reply_len(p, good)) == 0) {
		if ((r = read_more(p, deadline)) == 1)
			continue;
		if (r == 0)
			snprintf(p->why, sizeof(p->why), "closed %s", what);
		else if (errno == ETIMEDOUT && strcmp(what,
		    "before greeting") == 0)
			snprintf(p->why, sizeof(p->why), "no greeting within %s",
			    duration_str(ms, d, sizeof(d)));
		else if (errno == ETIMEDOUT)
			snprintf(p->why, sizeof(p->why), "no reply %s within %s",
			    what, duration_str(ms, d, sizeof(d)));
		else
			snprintf(p->why, sizeof(p->why), "%s %s",
			    strerror(errno), what);
		return false;
	}
	if (*len < 0) {
		const char *proto = p->lc->protocol == CFG_PROTO_SMTP ?
		    "SMTP" : "POP3";
		char l[128];

		if (strcmp(what, "before greeting") == 0)
			snprintf(p->why, sizeof(p->why), "its greeting is no "
			    "%s reply: %s", proto, first_line(p, l, sizeof(l)));
		else
			snprintf(p->why, sizeof(p->why), "its reply %s is no "
			    "%s reply: %s", what, proto,
			    first_line(p, l, sizeof(l)));
		return false;
	}
	return true;
}

static bool
connect_within(struct probe *p)
{
	struct pollfd pfd;
	uint64_t deadline = mono_ms() + p->lc->connect_ms, now;
	char d[32];
	int err;

	if ((p->fd = backend_connect(&p->lc->backend)) == -1) {
		snprintf(p->why, sizeof(p->why), "cannot connect: %s",
		    strerror(errno));
		return false;
	}
	pfd.fd = p->fd;
	pfd.events = POLLOUT;
	while ((err = backend_connect_result(p->fd)) == EINPROGRESS) {
		if ((now = mono_ms()) >= deadline) {
			snprintf(p->why, sizeof(p->why), "cannot connect "
			    "within %s", duration_str(p->lc->connect_ms, d,
			    sizeof(d)));
			return false;
		}
		(void)poll(&pfd, 1, (int)(deadline - now));
	}
	if (err != 0) {
		snprintf(p->why, sizeof(p->why), "cannot connect: %s",
		    strerror(err));
		return false;
	}
	return true;
}

static bool
send_all(struct probe *p, const void *b, size_t n, const char *what)
{
	if (send(p->fd, b, n, MSG_NOSIGNAL) == (ssize_t)n)
		return true;
	snprintf(p->why, sizeof(p->why), "cannot write %s: %s", what,
	    strerror(errno));
	return false;
}

/* The PROXY header a session sends, with this connection's addresses. */
static bool
send_header(struct probe *p)
{
	struct sockaddr_storage me, it;
	socklen_t ml = sizeof(me), il = sizeof(it);
	uint8_t hdr[PROXYPROTO_WRITE_MAX];
	int n;

	if (getsockname(p->fd, (struct sockaddr *)&me, &ml) == -1 ||
	    getpeername(p->fd, (struct sockaddr *)&it, &il) == -1 ||
	    (n = backend_proxy_header(hdr, sizeof(hdr), p->lc->backend_proxy,
	    (struct sockaddr *)&me, (struct sockaddr *)&it, NULL)) < 0) {
		snprintf(p->why, sizeof(p->why), "cannot build the PROXY "
		    "header");
		return false;
	}
	return n == 0 || send_all(p, hdr, (size_t)n, "the PROXY header");
}

/* After EHLO: whether the reply offers XCLIENT to us. */
static bool
offers_xclient(const struct probe *p, size_t len)
{
	size_t i = 0, j;

	while (i + 4 <= len) {
		if (len - i >= 11 && strncasecmp((const char *)p->buf + i + 4,
		    "XCLIENT", 7) == 0 && (p->buf[i + 11] == ' ' ||
		    p->buf[i + 11] == '\r' || p->buf[i + 11] == '\n'))
			return true;
		for (j = i; j < len && p->buf[j] != '\n'; j++)
			;
		i = j + 1;
	}
	return false;
}

/* What a session meets first, step by step; false with p->why set. */
static bool
probe_steps(struct probe *p, char *greeting, size_t glen)
{
	char ehlo[300], l[128];
	bool good;
	long len;
	int r;

	if (!connect_within(p) || !send_header(p))
		return false;
	if (!read_reply(p, p->lc->connect_ms, "before greeting", &good,
	    &len)) {
		p->hint = backendwatch_hint(p->why, p->lc->backend_proxy);
		return false;
	}
	first_line(p, greeting, glen);
	if (!good) {
		snprintf(p->why, sizeof(p->why), "greets with a refusal: %s",
		    greeting);
		return false;
	}
	consume(p, (size_t)len);
	/* Whatever comes now, before we said a word, answers the header. */
	if (p->len == 0 && (r = read_more(p, mono_ms() + STRAY_WAIT_MS)) !=
	    1 && !(r == -1 && errno == ETIMEDOUT)) {
		snprintf(p->why, sizeof(p->why), "%s right after its greeting",
		    r == 0 ? "closed" : strerror(errno));
		return false;
	}
	if (p->len > 0) {
		snprintf(p->why, sizeof(p->why), "sent a reply no command "
		    "asked for, %s", first_line(p, l, sizeof(l)));
		p->hint = backendwatch_hint(NULL, p->lc->backend_proxy);
		return false;
	}
	if (p->lc->backend_proxy == CFG_BPROXY_XCLIENT) {
		if ((r = backend_ehlo_cmd(ehlo, sizeof(ehlo))) < 0 ||
		    !send_all(p, ehlo, (size_t)r, "EHLO") ||
		    !read_reply(p, p->lc->connect_ms, "to EHLO", &good, &len))
			return false;
		if (!good || !offers_xclient(p, (size_t)len)) {
			snprintf(p->why, sizeof(p->why), "does not offer "
			    "XCLIENT to moat's address (Postfix: "
			    "smtpd_authorized_xclient_hosts)");
			return false;
		}
		consume(p, (size_t)len);
	}
	/* A polite end; its reply does not matter. */
	if (send_all(p, "QUIT\r\n", 6, "QUIT"))
		(void)read_reply(p, QUIT_WAIT_MS, "to QUIT", &good, &len);
	return true;
}

int
backendprobe_run(const struct config *cfg, FILE *out)
{
	struct probe *p;
	char b[ADDR_PORT_STRLEN], greeting[128];
	size_t i;
	int failed = 0;

	if ((p = calloc(1, sizeof(*p))) == NULL) {
		fprintf(out, "moat: out of memory\n");
		return 1;
	}
	for (i = 0; i < cfg->nlisteners; i++) {
		memset(p, 0, sizeof(*p));
		p->lc = &cfg->listeners[i];
		p->fd = -1;
		p->hint = "";
		addr_port_str(&p->lc->backend, b, sizeof(b));
		if (probe_steps(p, greeting, sizeof(greeting)))
			fprintf(out, "listener '%s': backend %s (backend_proxy "
			    "\"%s\") answers: %s\n", p->lc->name, b,
			    cfg_backend_proxy_str(p->lc->backend_proxy),
			    greeting);
		else {
			fprintf(out, "listener '%s': backend %s (backend_proxy "
			    "\"%s\") FAILS: %s%s\n", p->lc->name, b,
			    cfg_backend_proxy_str(p->lc->backend_proxy),
			    p->why, p->hint);
			failed++;
		}
		if (p->fd != -1)
			close(p->fd);
	}
	free(p);
	return failed;
}
