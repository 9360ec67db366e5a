/* tls.h - OpenSSL server contexts of one configuration, SNI included. */
#ifndef MOAT_TLS_H
#define MOAT_TLS_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

#include "config.h"

/*
 * The default context from [tls] and one per [[tls.sni]] entry. A
 * generation (gen.h) owns its set and frees it with its last reference;
 * every session holds a reference to its generation for as long as it
 * lives, so a reload that builds a new set never pulls contexts from under
 * a handshake in progress.
 */
struct tls_set;

/* Days left under which loading warns of a certificate (certwatch.h
 * follows it while moat runs). */
#define CERT_WARN_DAYS 14

/*
 * Builds the contexts of cfg. Every problem goes to report as
 * "FILE: message" with OpenSSL's reason; returns NULL after reporting.
 * The caller owns the result.
 */
struct tls_set *tls_set_new(const struct config *cfg,
    config_report_fn *report, void *arg);
void tls_set_free(struct tls_set *t);
/* Whether t (NULL too) has no context to hand out: no listener uses TLS. */
bool tls_set_empty(const struct tls_set *t);

/*
 * A server-side SSL on fd in accept state, ready for SSL_do_handshake().
 * context (the listener's name; at most 32 bytes count) tags the session
 * tickets it issues: a ticket resumes only on a listener of the same name,
 * never across protocols. The SSL needs t alive (SNI callback); the
 * caller keeps a reference for as long as the SSL exists and frees it
 * with SSL_free(). Its write BIO gathers records (tlsout.h): the caller
 * flushes it when it has written all it has for now, and before it
 * closes fd. NULL on failure.
 */
SSL *tls_ssl_new(struct tls_set *t, int fd, const char *context);

/*
 * Visits the leaf certificate of each context of t, for status and
 * metrics: the [tls] one first with name "default", then one per
 * [[tls.sni]] entry with its first name; not_after is the end of its
 * validity in Unix seconds (0 if unreadable).
 */
typedef void tls_cert_fn(void *arg, const char *name, int64_t not_after);
void tls_set_certs(const struct tls_set *t, tls_cert_fn *fn, void *arg);

/*
 * The reason of the most recent OpenSSL error, such as "unsupported
 * protocol", or NULL when the queue is empty; clears the queue.
 */
const char *tls_error_reason(char *buf, size_t len);

#endif
