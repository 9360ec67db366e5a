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
 * and the session closes (it must bound its lines itself before that).
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
/* True once the client side runs TLS (implicit or after STARTTLS). */
bool filter_client_tls(const struct filter_io *io);

/* The filter for a listener: issue 3 relays everything unchanged. */
const struct filter_ops *filter_for(const struct cfg_listener *lc);

extern const struct filter_ops filter_passthrough;

#endif
