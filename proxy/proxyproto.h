/* proxyproto.h - PROXY protocol v1/v2: header writers and a strict parser. */
#ifndef MOAT_PROXYPROTO_H
#define MOAT_PROXYPROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define PROXYPROTO_V1_MAX 107		/* the spec's bound, CRLF included */
#define PROXYPROTO_V2_MAX (16 + 1024)	/* longest v2 header accepted */
#define PROXYPROTO_MAX PROXYPROTO_V2_MAX

/* Room a writer needs at most: v2 with addresses and the SSL TLV. */
#define PROXYPROTO_WRITE_MAX 256

enum proxyproto_rc {
	PROXYPROTO_OK = 0,	/* a complete header; *hdrlen says its size */
	PROXYPROTO_AGAIN,	/* a valid prefix; call again with more */
	PROXYPROTO_ERROR,	/* not a PROXY header, or a malformed one */
};

/* What a parsed header says about the connection. */
struct proxyproto_hdr {
	int version;		/* 1 or 2 */
	/*
	 * true for v2 LOCAL, v2 UNSPEC and v1 UNKNOWN: the sender (a health
	 * check) vouches for no client, so keep the connection's own
	 * addresses. src and dst are unset then.
	 */
	bool local;
	struct sockaddr_storage src;
	struct sockaddr_storage dst;
	socklen_t srclen, dstlen;
};

/* TLS facts for the v2 PP2_TYPE_SSL TLV; NULL when the client is clear. */
struct proxyproto_tls {
	const char *version;	/* "TLSv1.3" */
	const char *cipher;	/* "TLS_AES_256_GCM_SHA384" */
};

/*
 * Parses the start of p. Pure and bounded: p is re-read from its start on
 * every call, and a header may never exceed PROXYPROTO_MAX bytes. AGAIN is
 * returned only while p is a valid prefix of some header, so every byte of
 * an AGAIN prefix belongs to the header (callers may consume it). On ERROR
 * *why names the problem for logs.
 */
enum proxyproto_rc proxyproto_parse(const uint8_t *p, size_t len,
    struct proxyproto_hdr *out, size_t *hdrlen, const char **why);

/*
 * Writers: return the header's length, or -1 when cap is too small.
 * Addresses of other families give "PROXY UNKNOWN" (v1) or an UNSPEC
 * header (v2). IPv4-mapped IPv6 addresses count as IPv4, so a pair of
 * them is written as IPv4; mixed IPv4/IPv6 pairs are written as IPv6
 * with the IPv4 one mapped. The v1 writer NUL-terminates (not counted).
 */
int proxyproto_write_v1(char *buf, size_t cap, const struct sockaddr *src,
    const struct sockaddr *dst);
int proxyproto_write_v2(uint8_t *buf, size_t cap, const struct sockaddr *src,
    const struct sockaddr *dst, const struct proxyproto_tls *tls);

const char *proxyproto_rc_str(enum proxyproto_rc rc);

#endif
