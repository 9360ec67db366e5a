/* sni.h - the name a TLS client asks for (RFC 6066 server_name). */
#ifndef MOAT_SNI_H
#define MOAT_SNI_H

#include <stdbool.h>
#include <stddef.h>

/*
 * The host name in the body of a ClientHello's server_name extension (the
 * bytes after its type and length, as the client sent them), copied into
 * name with a NUL. False when there is none, or the extension is
 * malformed, the name is empty, holds a NUL byte or does not fit in size:
 * the caller then picks the default certificate, and OpenSSL refuses the
 * malformed cases on its own.
 */
bool sni_host_name(const unsigned char *ext, size_t len, char *name,
    size_t size);

/*
 * Compares a configured name ("mail.example.org", or "*.example.org" for
 * exactly one non-empty label) with the one a client asked for, ignoring
 * case.
 */
bool sni_name_matches(const char *pattern, const char *name);

#endif
