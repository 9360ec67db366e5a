/* filter_fake.h - a session without sockets for driving filters in tests. */
#ifndef MOAT_FILTER_FAKE_H
#define MOAT_FILTER_FAKE_H

/*
 * Defines the filter_* functions that session.c provides in the daemon,
 * over in-memory buffers, so a filter runs alone in unit tests and fuzz
 * targets. Include it in exactly one file of a program. The pump mimics
 * relay_pump(): offer client bytes, offer backend bytes, "write" what the
 * filter queued (into a transcript per side), until nothing moves; a
 * STARTTLS request discards the unconsumed client bytes, as the session
 * does when the handshake starts.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "filter.h"

#define FAKE_CAP (16 * 1024)
#ifndef FAKE_LOG
#define FAKE_LOG (256 * 1024)
#endif

struct fake_side {
	uint8_t in[FAKE_CAP];	/* read from this side, for the filter */
	size_t inlen;
	bool eof;
	uint8_t out[FAKE_CAP];	/* queued for this side */
	size_t outlen;
	size_t room;		/* output capacity (<= FAKE_CAP) */
	char log[FAKE_LOG];	/* everything "written" to this side */
	size_t loglen;
};

struct filter_io {
	const struct filter_ops *ops;
	void *state;
	struct cfg_listener lc;
	struct fake_side client, backend;
	bool tls;
	bool starttls;		/* asked, not yet started */
	bool aborted;
	const char *closed;
	int nsig[8];
	/* As session_signal() when a client reaches its auth_failures
	 * limit: the ban_at-th failure or glitch ends the session (0: no
	 * limit). */
	int ban_at;
	const char *sigreason[8];
	char sigs[4096];	/* "auth_fail:smtp_auth;" ... */
	size_t discarded;	/* client bytes dropped at STARTTLS */
	int nstray, nlastwords;	/* filter_stray_reply() calls */
	char stray[128];	/* the last stray reply's line */
	int nbadgreeting;	/* filter_bad_greeting() calls */
};

size_t
filter_room_backend(const struct filter_io *io)
{
	if (io->aborted)
		return FAKE_CAP;
	return io->backend.room - io->backend.outlen;
}

size_t
filter_room_client(const struct filter_io *io)
{
	return io->client.room - io->client.outlen;
}

static inline int
fake_append(struct fake_side *s, const void *p, size_t len)
{
	if (len > s->room - s->outlen)
		return -1;
	memcpy(s->out + s->outlen, p, len);
	s->outlen += len;
	return 0;
}

int
filter_to_backend(struct filter_io *io, const void *p, size_t len)
{
	if (io->aborted)
		return 0;	/* the session drops them too */
	return fake_append(&io->backend, p, len);
}

int
filter_to_client(struct filter_io *io, const void *p, size_t len)
{
	return fake_append(&io->client, p, len);
}

void
filter_starttls(struct filter_io *io)
{
	io->starttls = true;
}

void
filter_close(struct filter_io *io, const char *reason)
{
	if (io->closed == NULL)
		io->closed = reason;
}

void
filter_close_saying(struct filter_io *io, const char *line,
    const char *reason)
{
	if (io->ops->between_replies(io->state))
		(void)fake_append(&io->client, line, strlen(line));
	filter_close(io, reason);
}

bool
filter_closing(const struct filter_io *io)
{
	return io->closed != NULL;
}

bool
filter_client_tls(const struct filter_io *io)
{
	return io->tls;
}

void
filter_abort_backend(struct filter_io *io)
{
	io->aborted = true;
	io->backend.outlen = 0;	/* queued bytes die with the socket */
	io->backend.inlen = 0;
}

void
filter_stray_reply(struct filter_io *io, const uint8_t *line, size_t len,
    bool last_words)
{
	size_t i;

	/* The line, as the session quotes it: up to its CR or LF. */
	for (i = 0; i < len && i + 1 < sizeof(io->stray) && line[i] != '\r' &&
	    line[i] != '\n'; i++)
		io->stray[i] = (char)line[i];
	io->stray[i] = '\0';
	io->nstray++;
	if (last_words)
		io->nlastwords++;
}

void
filter_bad_greeting(struct filter_io *io, const uint8_t *line, size_t len)
{
	(void)line;
	(void)len;
	io->nbadgreeting++;
}

void
filter_signal(struct filter_io *io, enum filter_signal sig, const char *reason)
{
	size_t n = strlen(io->sigs);

	io->nsig[sig]++;
	io->sigreason[sig] = reason;
	if (io->ban_at > 0 && io->closed == NULL &&
	    io->nsig[FILTER_SIG_AUTH_FAIL] + io->nsig[FILTER_SIG_GLITCH] +
	    io->nsig[FILTER_SIG_FOREIGN] >= io->ban_at)
		io->closed = "banned";
	if (n + strlen(reason) + 32 < sizeof(io->sigs)) {
		strcat(io->sigs, filter_signal_str(sig));
		strcat(io->sigs, ":");
		strcat(io->sigs, reason);
		strcat(io->sigs, ";");
	}
}

const char *
filter_signal_str(enum filter_signal sig)
{
	static const char *const names[] = { "auth_ok", "auth_fail",
		"auth_tempfail", "smuggling", "glitch", "foreign_protocol" };

	return (unsigned)sig < 6 ? names[sig] : "?";
}

static inline struct filter_io *
fake_new(const struct filter_ops *ops, enum cfg_protocol proto,
    enum cfg_tls_mode tls, bool require_tls, uint32_t max_line)
{
	struct filter_io *io = calloc(1, sizeof(*io));

	if (io == NULL)
		abort();
	io->ops = ops;
	io->lc.name = (char *)"test";
	io->lc.protocol = proto;
	io->lc.tls = tls;
	io->lc.require_tls = require_tls;
	io->lc.max_line = max_line;
	io->client.room = FAKE_CAP;
	io->backend.room = FAKE_CAP;
	io->tls = tls == CFG_TLS_IMPLICIT;
	if ((io->state = ops->new(&io->lc)) == NULL)
		abort();
	return io;
}

static inline void
fake_free(struct filter_io *io)
{
	io->ops->free(io->state);
	free(io);
}

static inline void
fake_flush(struct fake_side *s)
{
	size_t n = s->outlen;

	if (n > FAKE_LOG - 1 - s->loglen)
		n = FAKE_LOG - 1 - s->loglen;
	memcpy(s->log + s->loglen, s->out, n);
	s->loglen += n;
	s->log[s->loglen] = '\0';
	s->outlen = 0;
}

static inline bool
fake_offer(struct filter_io *io, bool client)
{
	struct fake_side *from = client ? &io->client : &io->backend;
	size_t n;

	if (from->inlen == 0)
		return false;
	if (io->closed != NULL || (io->aborted && client)) {
		from->inlen = 0;
		return true;
	}
	n = client ? io->ops->client_data(io->state, io, from->in,
	    from->inlen, from->eof) : io->ops->backend_data(io->state, io,
	    from->in, from->inlen, from->eof);
	if (n > from->inlen)
		abort();
	memmove(from->in, from->in + n, from->inlen - n);
	from->inlen -= n;
	return n > 0;
}

/* Runs the filter until nothing moves; flush says whether outputs are
 * written (drained) between rounds. */
static inline void
fake_pump(struct filter_io *io)
{
	bool progress = true;
	int rounds = 0;

	while (progress && rounds++ < 10000) {
		progress = fake_offer(io, true);
		progress |= fake_offer(io, false);
		if (io->client.outlen > 0 || io->backend.outlen > 0)
			progress = true;
		fake_flush(&io->client);
		fake_flush(&io->backend);
		if (io->starttls && !io->tls) {
			io->discarded += io->client.inlen;
			io->client.inlen = 0;
		}
	}
}

static inline void
fake_input(struct fake_side *s, const void *p, size_t len)
{
	if (len > FAKE_CAP - s->inlen)
		len = FAKE_CAP - s->inlen;
	memcpy(s->in + s->inlen, p, len);
	s->inlen += len;
}

/* A command line of size - 1 bytes (CRLF included) into buf: prefix,
 * then 'a's, longer than any listener's max_line when size is. */
static inline char *
fake_long_line(char *buf, size_t size, const char *prefix)
{
	memset(buf, 'a', size);
	memcpy(buf, prefix, strlen(prefix));
	memcpy(buf + size - 3, "\r\n", 3);
	return buf;
}

static inline void
fake_client(struct filter_io *io, const char *str)
{
	fake_input(&io->client, str, strlen(str));
	fake_pump(io);
}

static inline void
fake_client_bytes(struct filter_io *io, const void *p, size_t len)
{
	fake_input(&io->client, p, len);
	fake_pump(io);
}

static inline void
fake_backend(struct filter_io *io, const char *str)
{
	fake_input(&io->backend, str, strlen(str));
	fake_pump(io);
}

/* The TLS handshake the filter asked for succeeded. */
static inline void
fake_handshake(struct filter_io *io)
{
	io->discarded += io->client.inlen;
	io->client.inlen = 0;
	io->starttls = false;
	io->tls = true;
	if (io->ops->tls_started != NULL)
		io->ops->tls_started(io->state, io);
	fake_pump(io);
}

/* Returns what was written to a side since the last call, and forgets it
 * (a static buffer: copy before the next call). */
static inline const char *
fake_take(struct fake_side *s)
{
	static char buf[FAKE_LOG];

	memcpy(buf, s->log, s->loglen + 1);
	s->loglen = 0;
	s->log[0] = '\0';
	return buf;
}

/* What the filter wrote to the client (or the backend) since last asked. */
static inline const char *
fake_take_client(struct filter_io *io)
{
	return fake_take(&io->client);
}

static inline const char *
fake_take_backend(struct filter_io *io)
{
	return fake_take(&io->backend);
}

#endif
