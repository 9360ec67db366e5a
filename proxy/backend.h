/* backend.h - reaching the plaintext backend: connect, PROXY, XCLIENT. */
#ifndef MOAT_BACKEND_H
#define MOAT_BACKEND_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "addr.h"
#include "config.h"
#include "proxyproto.h"

/* Longest SMTP reply (all lines) read during the XCLIENT exchange. */
#define BACKEND_REPLY_MAX 4096

/*
 * Starts a non-blocking connect to ap. Returns the socket (watch it for
 * writability, then ask backend_connect_result), or -1 with errno set.
 */
int backend_connect(const struct addr_port *ap);
/* 0 once connected, EINPROGRESS while pending, else the error number. */
int backend_connect_result(int fd);

/*
 * Writes what mode puts in front of the first protocol byte: a PROXY v1
 * or v2 header (v2 with the SSL TLV when tls is not NULL); nothing for
 * "none" and "xclient". Returns its length (0 for nothing) or -1.
 */
int backend_proxy_header(uint8_t *buf, size_t cap, enum cfg_backend_proxy mode,
    const struct sockaddr *client, const struct sockaddr *local,
    const struct proxyproto_tls *tls);

enum backend_reply_rc {
	BACKEND_REPLY_OK = 0,	/* a complete reply of *len bytes */
	BACKEND_REPLY_AGAIN,	/* need more bytes */
	BACKEND_REPLY_ERROR,	/* not SMTP, or longer than the bound */
};

/*
 * Parses one complete SMTP reply ("250-a\r\n250 b\r\n") at the start of
 * p: pure and bounded by BACKEND_REPLY_MAX. On OK, *code is the reply
 * code and *len the bytes it spans.
 */
enum backend_reply_rc backend_reply_parse(const uint8_t *p, size_t len,
    size_t *replylen, int *code);

/*
 * The commands of the XCLIENT exchange, CRLF-terminated and NUL-
 * terminated; they return the length or -1 when cap is too small.
 *
 * HELO and PROTO are not sent: the client has not spoken when moat
 * introduces it, and after XCLIENT the backend sends a new greeting to
 * which the client answers with its own EHLO/HELO, which Postfix then
 * records (a PROTO=ESMTP of ours would make a HELO client ESMTP to
 * Postfix: "with ESMTP" in Received, and reject_unauth_pipelining blind
 * to it). NAME is sent as [UNAVAILABLE], as moat does no DNS: without
 * it Postfix would keep moat's own name for the client, and it does no
 * lookup of its own after XCLIENT, so it knows the client as
 * "unknown[address]".
 */
int backend_ehlo_cmd(char *buf, size_t cap);
int backend_xclient_cmd(char *buf, size_t cap, const struct sockaddr *client);

#endif
