/* filter.h - protocol filters that sit between the client and the backend. */
#ifndef MOAT_FILTER_H
#define MOAT_FILTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

/*
 * The relay reads the client into one buffer and the backend into
 * another, and hands each to the session's filter, which decides what
 * goes where: forward (to the other side), answer locally (back to the
 * same side), rewrite, drop, ask for a STARTTLS upgrade, or end the
 * session. The filter never does I/O and never sees TLS: it works on
 * plaintext views, which makes it testable and fuzzable alone.
 *
 * Backpressure: a filter forwards only as much as filter_room_*() allows,
 * and returns how many input bytes it consumed. Unconsumed bytes stay in
 * the session's input buffer and are offered again (with anything new
 * appended) when the output side has drained. A filter that consumes
 * nothing while its input buffer is full and its output empty is stuck,
 * and the session closes (it must bound its lines itself before that),
 * unless it says it awaits the backend: a client that pipelined more
 * than the buffer holds is then slowed down, not dropped.
 */
struct filter_io;	/* the session, as seen by its filter */

struct filter_ops {
	const char *name;
	/* Per-session state for listener lc; NULL on failure. NULL new:
	 * the filter is stateless and its callbacks get state NULL. */
	void *(*new)(const struct cfg_listener *lc);
	/*
	 * Bytes from the client (or the backend). eof means no more will
	 * come from that side: keep offering what fits and, once nothing
	 * waits for room, consume the rest (forward or drop it), since the
	 * end of stream is passed on only after every byte was consumed.
	 * Returns the number of bytes of p consumed. May call every
	 * filter_* function below; must not keep p.
	 */
	size_t (*client_data)(void *state, struct filter_io *io,
	    const uint8_t *p, size_t len, bool eof);
	size_t (*backend_data)(void *state, struct filter_io *io,
	    const uint8_t *p, size_t len, bool eof);
	/* The client side finished a STARTTLS handshake; may be NULL. */
	void (*tls_started)(void *state, struct filter_io *io);
	/* True while client bytes wait for replies the backend still owes,
	 * which will let them on; may be NULL (never). */
	bool (*awaiting)(void *state);
	/* True while the backend owes its verdict on credentials the client
	 * sent (a password, a SASL response); may be NULL (never). */
	bool (*verdict_owed)(void *state);
	/* True when every reply that reached the client is whole (none of
	 * its lines, nor a multi-line body, is yet to come), so that a
	 * line of moat's read now would be one of its own; may be NULL
	 * (never). */
	bool (*between_replies)(void *state);
	void (*free)(void *state);
};

/* Free space in the output buffer towards the backend / the client. */
size_t filter_room_backend(const struct filter_io *io);
size_t filter_room_client(const struct filter_io *io);
/* Queue all of p or nothing: 0, or -1 when it does not fit. */
int filter_to_backend(struct filter_io *io, const void *p, size_t len);
int filter_to_client(struct filter_io *io, const void *p, size_t len);
/*
 * Asks for a TLS handshake with the client once everything queued to it
 * (the "220 ready" reply) is flushed. Client bytes that the filter has
 * not consumed by then are discarded: plaintext pipelined after STARTTLS
 * must never reach the backend as if it came over TLS.
 */
void filter_starttls(struct filter_io *io);
/* Ends the session after the client's queue is flushed; reason goes to
 * the close log line (a static string). */
void filter_close(struct filter_io *io, const char *reason);
/*
 * True once the session is to end: filter_close(), or a signal that got
 * the client banned (an auth failure or glitch at the limit). The filter
 * then stops where it is and consumes the rest unread, so that neither a
 * reply the backend sent behind the one that banned (a pipelined
 * password's verdict) nor a command pipelined behind it gets through.
 */
bool filter_closing(const struct filter_io *io);

/*
 * filter_close(), after line (the protocol's closing line) to the client
 * if it stands between whole replies (filter_ops.between_replies): inside
 * a reply relayed in part the client would read it as part of that reply,
 * and after STARTTLS's plaintext ready line it waits for a handshake.
 */
void filter_close_saying(struct filter_io *io, const char *line,
    const char *reason);
/* True once the client side runs TLS (implicit or after STARTTLS). */
bool filter_client_tls(const struct filter_io *io);

/*
 * Drops the backend connection at once: bytes queued to it and not yet
 * written are discarded, nothing more is read from it, and the session
 * ends once the client's queue is flushed (pair it with filter_close()
 * for the close reason). The SMTP smuggling guard uses it so that a
 * message that held a bare LF/CR never completes at the backend.
 */
void filter_abort_backend(struct filter_io *io);

/*
 * The backend sent a reply no command asked for; line starts with its
 * line (first, or for a hang-up the last), which the session logs and
 * may warn about: a backend
 * that does not expect the PROXY header moat sends answers it so, right
 * after its greeting. last_words: a 421 / -ERR, which a backend says as
 * it hangs up; the filter passes it on and ends the session behind it.
 * Any other ends the session with the filter's protocol error line.
 */
void filter_stray_reply(struct filter_io *io, const uint8_t *line,
    size_t len, bool last_words);

/*
 * The backend's first words are not the protocol's: line starts with
 * them (len bytes, not NUL-terminated). An SSH or HTTP server, or a TLS
 * port, at the backend address says so; the session counts and warns of
 * it as a backend failure. The filter still ends the session with its
 * protocol error line.
 */
void filter_bad_greeting(struct filter_io *io, const uint8_t *line,
    size_t len);

/*
 * What a filter observed that policy cares about. Each goes through
 * session_signal() in session.c, the one place that logs it, emits the
 * block event and feeds the policy module.
 */
enum filter_signal {
	FILTER_SIG_AUTH_OK = 0,	/* final success reply to AUTH/PASS/APOP */
	FILTER_SIG_AUTH_FAIL,	/* final permanent failure: event auth_fail */
	FILTER_SIG_AUTH_TEMPFAIL, /* 454, -ERR [SYS/TEMP], [IN-USE]: apart */
	FILTER_SIG_SMUGGLING,	/* event smuggling: reason names the variant */
	FILTER_SIG_GLITCH,	/* event protocol: early talker, long lines,
				 * client XCLIENT, bad commands */
	FILTER_SIG_FOREIGN,	/* event protocol: HTTP or TLS bytes on a mail
				 * port; the filter closes the session */
};

/*
 * Reports sig; reason is a static word for logs and events ("smtp_auth",
 * "pop3_pass", "bare_lf", "early_talker"), never protocol payload. Does
 * not destroy the session.
 */
void filter_signal(struct filter_io *io, enum filter_signal sig,
    const char *reason);
const char *filter_signal_str(enum filter_signal sig);

/*
 * Longest line a filter can wait for: the session's input buffers hold at
 * least this much, so a filter that has seen this many bytes without an
 * end of line must decide (listener max_line above it is capped).
 */
#define FILTER_INPUT_MAX (16 * 1024)

/* The filter for a listener: SMTP or POP3 by lc->protocol, whatever its
 * tls mode. */
const struct filter_ops *filter_for(const struct cfg_listener *lc);

extern const struct filter_ops filter_passthrough;

#endif
