/* metrics.h - counters for operators, served in Prometheus text format. */
#ifndef MOAT_METRICS_H
#define MOAT_METRICS_H

#include <stdint.h>

#include "addr.h"
#include "policy.h"

struct ev_loop;
struct control_server;
struct metrics_http;
struct sbuf;

/*
 * The counters are process-wide and always kept, whether or not an
 * endpoint serves them (moatctl status reads the totals). Callers pass
 * label values that may be freed afterwards: they are copied. Each family
 * holds at most a few hundred label sets; later ones are counted under
 * "other", so a flood of odd TLS failure reasons cannot grow memory.
 * Every call is cheap and thread-safe (one mutex).
 */

/* Notes the start time (moat_start_time_seconds, uptime). */
void metrics_init(void);

/* At accept: reason NULL for an admitted connection, else the policy
 * reason ("denylist", "banned", "rate", ...). */
void metrics_admit(const char *listener, const char *reason);
/* A completed TLS handshake, by protocol version and cipher name. */
void metrics_tls_handshake(const char *version, const char *cipher);
/* A failed handshake, by OpenSSL's reason (or "eof", "timeout"). */
void metrics_tls_failure(const char *reason);
/* Feedback from the protocol filters (auth failures, smuggling, ...). */
void metrics_policy_event(const char *listener, enum policy_event ev);
/* A new ban, by its reason ("rate", "auth", "smuggling", "manual"). */
void metrics_ban(const char *reason);
/* The backend could not be reached (connect, PROXY header, XCLIENT), or
 * failed before its greeting reached the client. */
void metrics_backend_failure(const char *listener);
/* A session ended on a backend reply no command asked for. */
void metrics_backend_stray(const char *listener);
/* A session ended: its length and the bytes it relayed. */
void metrics_session_end(const char *listener, double seconds,
    uint64_t from_client, uint64_t to_client);

/* Totals since start, for moatctl status. */
struct metrics_totals {
	uint64_t connections, accepted, rejected;
	uint64_t tls_handshakes, tls_failures;
	uint64_t auth_failures, smuggling, backend_failures;
	uint64_t bans;
	double start_unix;	/* when the process started, Unix seconds */
};
void metrics_totals(struct metrics_totals *t);

/*
 * Appends the whole exposition (counters, gauges from srv: sessions, bans
 * active, events, certificate expiry) to out. srv may be NULL.
 */
void metrics_render(struct sbuf *out, const struct control_server *srv);

/*
 * Serves GET /metrics on ap (HTTP/1.0, one request per connection,
 * requests bounded in size and time, everything else 404). srv is
 * borrowed. NULL with a message in err when the address cannot be bound.
 */
struct metrics_http *metrics_http_open(struct ev_loop *loop,
    const struct addr_port *ap, const struct control_server *srv, char *err,
    size_t errlen);
void metrics_http_close(struct metrics_http *m);

#endif
