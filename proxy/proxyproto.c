/* proxyproto.c - PROXY protocol v1/v2: header writers and a strict parser. */
#include "proxyproto.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

static const uint8_t v2_sig[12] = {
	0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
};

#define V2_CMD_LOCAL 0x0
#define V2_CMD_PROXY 0x1
#define V2_FAM_UNSPEC 0x00
#define V2_FAM_TCP4 0x11
#define V2_FAM_UDP4 0x12
#define V2_FAM_TCP6 0x21
#define V2_FAM_UDP6 0x22
#define V2_FAM_UNIX_STREAM 0x31
#define V2_FAM_UNIX_DGRAM 0x32
#define V2_ADDRLEN_INET 12
#define V2_ADDRLEN_INET6 36
#define V2_ADDRLEN_UNIX 216

#define PP2_TYPE_SSL 0x20
#define PP2_SUBTYPE_SSL_VERSION 0x21
#define PP2_SUBTYPE_SSL_CIPHER 0x23
#define PP2_CLIENT_SSL 0x01

const char *
proxyproto_rc_str(enum proxyproto_rc rc)
{
	switch (rc) {
	case PROXYPROTO_OK:
		return "ok";
	case PROXYPROTO_AGAIN:
		return "again";
	case PROXYPROTO_ERROR:
		return "error";
	}
	return "?";
}

/* A decimal port: 1-5 digits, no leading zero, at most 65535. */
static int
parse_port(const char *s, size_t n, uint16_t *port)
{
	unsigned long v = 0;
	size_t i;

	if (n == 0 || n > 5 || (n > 1 && s[0] == '0'))
		return -1;
	for (i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (unsigned long)(s[i] - '0');
	}
	if (v > 65535)
		return -1;
	*port = (uint16_t)v;
	return 0;
}

static int
parse_ip(int af, const char *s, size_t n, uint16_t port,
    struct sockaddr_storage *ss, socklen_t *sslen)
{
	char tmp[INET6_ADDRSTRLEN];

	if (n == 0 || n >= sizeof(tmp))
		return -1;
	memcpy(tmp, s, n);
	tmp[n] = '\0';
	memset(ss, 0, sizeof(*ss));
	if (af == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)ss;

		if (inet_pton(AF_INET, tmp, &sin->sin_addr) != 1)
			return -1;
		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		*sslen = sizeof(*sin);
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

		if (inet_pton(AF_INET6, tmp, &sin6->sin6_addr) != 1)
			return -1;
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		*sslen = sizeof(*sin6);
	}
	return 0;
}

/* "PROXY TCP4 1.2.3.4 5.6.7.8 1111 2222" without the CRLF. */
static enum proxyproto_rc
parse_v1_line(const char *line, size_t n, struct proxyproto_hdr *out,
    const char **why)
{
	const char *f[4];
	size_t flen[4];
	const char *p, *end = line + n;
	uint16_t sport, dport;
	int af, i;

	p = line + 6;	/* past "PROXY " */
	if ((size_t)(end - p) >= 7 && memcmp(p, "UNKNOWN", 7) == 0 &&
	    (end - p == 7 || p[7] == ' ')) {
		out->local = true;
		return PROXYPROTO_OK;
	}
	if ((size_t)(end - p) < 5 || (memcmp(p, "TCP4 ", 5) != 0 &&
	    memcmp(p, "TCP6 ", 5) != 0)) {
		*why = "v1: unknown protocol";
		return PROXYPROTO_ERROR;
	}
	af = p[3] == '4' ? AF_INET : AF_INET6;
	p += 5;
	for (i = 0; i < 4; i++) {
		const char *sp = memchr(p, ' ', (size_t)(end - p));

		if (i < 3 && sp == NULL) {
			*why = "v1: too few fields";
			return PROXYPROTO_ERROR;
		}
		if (i == 3) {
			if (sp != NULL) {
				*why = "v1: too many fields";
				return PROXYPROTO_ERROR;
			}
			sp = end;
		}
		f[i] = p;
		flen[i] = (size_t)(sp - p);
		if (flen[i] == 0) {
			*why = "v1: empty field";
			return PROXYPROTO_ERROR;
		}
		p = sp + 1;
	}
	if (parse_port(f[2], flen[2], &sport) == -1 ||
	    parse_port(f[3], flen[3], &dport) == -1) {
		*why = "v1: bad port";
		return PROXYPROTO_ERROR;
	}
	if (parse_ip(af, f[0], flen[0], sport, &out->src, &out->srclen) ==
	    -1 || parse_ip(af, f[1], flen[1], dport, &out->dst,
	    &out->dstlen) == -1) {
		*why = "v1: bad address";
		return PROXYPROTO_ERROR;
	}
	return PROXYPROTO_OK;
}

static enum proxyproto_rc
parse_v1(const uint8_t *p, size_t len, struct proxyproto_hdr *out,
    size_t *hdrlen, const char **why)
{
	static const char magic[] = "PROXY ";
	size_t i, n = len < PROXYPROTO_V1_MAX ? len : PROXYPROTO_V1_MAX;

	for (i = 0; i < n && i < 6; i++)
		if (p[i] != (uint8_t)magic[i]) {
			*why = "not a PROXY header";
			return PROXYPROTO_ERROR;
		}
	for (; i < n; i++) {
		if (p[i] == '\r') {
			if (i + 1 == n)
				break;	/* LF may still come */
			if (p[i + 1] != '\n') {
				*why = "v1: CR without LF";
				return PROXYPROTO_ERROR;
			}
			out->version = 1;
			*hdrlen = i + 2;
			return parse_v1_line((const char *)p, i, out, why);
		}
		/* Printable ASCII only: no NUL, bare LF or controls. */
		if (p[i] < 0x20 || p[i] > 0x7e) {
			*why = "v1: bad character";
			return PROXYPROTO_ERROR;
		}
	}
	if (len >= PROXYPROTO_V1_MAX) {
		*why = "v1: line too long";
		return PROXYPROTO_ERROR;
	}
	return PROXYPROTO_AGAIN;
}

/*
 * Length of the address block a family needs, or -1 for a byte the
 * protocol does not define.
 */
static int
v2_addrlen(unsigned fam)
{
	switch (fam) {
	case V2_FAM_UNSPEC:
		return 0;
	case V2_FAM_TCP4:
	case V2_FAM_UDP4:
		return V2_ADDRLEN_INET;
	case V2_FAM_TCP6:
	case V2_FAM_UDP6:
		return V2_ADDRLEN_INET6;
	case V2_FAM_UNIX_STREAM:
	case V2_FAM_UNIX_DGRAM:
		return V2_ADDRLEN_UNIX;
	default:
		return -1;
	}
}

static enum proxyproto_rc
parse_v2(const uint8_t *p, size_t len, struct proxyproto_hdr *out,
    size_t *hdrlen, const char **why)
{
	size_t i, n, total, addrlen, off;
	unsigned cmd = 0, fam = 0;

	for (i = 0; i < len && i < sizeof(v2_sig); i++)
		if (p[i] != v2_sig[i]) {
			*why = "not a PROXY header";
			return PROXYPROTO_ERROR;
		}
	if (len > 12) {
		if ((p[12] >> 4) != 2) {
			*why = "v2: bad version";
			return PROXYPROTO_ERROR;
		}
		cmd = p[12] & 0x0f;
		if (cmd != V2_CMD_LOCAL && cmd != V2_CMD_PROXY) {
			*why = "v2: bad command";
			return PROXYPROTO_ERROR;
		}
	}
	if (len > 13) {
		fam = p[13];
		if (cmd == V2_CMD_PROXY && v2_addrlen(fam) < 0) {
			*why = "v2: bad address family";
			return PROXYPROTO_ERROR;
		}
	}
	if (len < 16)
		return PROXYPROTO_AGAIN;
	n = (size_t)p[14] << 8 | p[15];
	total = 16 + n;
	if (total > PROXYPROTO_V2_MAX) {
		*why = "v2: header too long";
		return PROXYPROTO_ERROR;
	}
	addrlen = cmd == V2_CMD_PROXY ? (size_t)v2_addrlen(fam) : 0;
	if (n < addrlen) {
		*why = "v2: address block too short";
		return PROXYPROTO_ERROR;
	}
	if (len < total)
		return PROXYPROTO_AGAIN;

	out->version = 2;
	*hdrlen = total;
	if (cmd == V2_CMD_LOCAL ||
	    (fam != V2_FAM_TCP4 && fam != V2_FAM_TCP6)) {
		/*
		 * LOCAL, UNSPEC, or a UDP or UNIX family: the protocol asks a
		 * receiver that does not take a family to treat it as UNSPEC,
		 * so the balancer's own address is the only one there is.
		 */
		out->local = true;
		return PROXYPROTO_OK;
	}
	/* TLVs must tile the rest of the block exactly. */
	for (off = 16 + addrlen; off < total; ) {
		size_t vlen;

		if (total - off < 3) {
			*why = "v2: truncated TLV";
			return PROXYPROTO_ERROR;
		}
		vlen = (size_t)p[off + 1] << 8 | p[off + 2];
		if (vlen > total - off - 3) {
			*why = "v2: TLV overruns header";
			return PROXYPROTO_ERROR;
		}
		off += 3 + vlen;
	}
	memset(&out->src, 0, sizeof(out->src));
	memset(&out->dst, 0, sizeof(out->dst));
	if (fam == V2_FAM_TCP4) {
		struct sockaddr_in *s = (struct sockaddr_in *)&out->src;
		struct sockaddr_in *d = (struct sockaddr_in *)&out->dst;

		s->sin_family = d->sin_family = AF_INET;
		memcpy(&s->sin_addr, p + 16, 4);
		memcpy(&d->sin_addr, p + 20, 4);
		memcpy(&s->sin_port, p + 24, 2);
		memcpy(&d->sin_port, p + 26, 2);
		out->srclen = out->dstlen = sizeof(*s);
	} else {
		struct sockaddr_in6 *s = (struct sockaddr_in6 *)&out->src;
		struct sockaddr_in6 *d = (struct sockaddr_in6 *)&out->dst;

		s->sin6_family = d->sin6_family = AF_INET6;
		memcpy(&s->sin6_addr, p + 16, 16);
		memcpy(&d->sin6_addr, p + 32, 16);
		memcpy(&s->sin6_port, p + 48, 2);
		memcpy(&d->sin6_port, p + 50, 2);
		out->srclen = out->dstlen = sizeof(*s);
	}
	return PROXYPROTO_OK;
}

enum proxyproto_rc
proxyproto_parse(const uint8_t *p, size_t len, struct proxyproto_hdr *out,
    size_t *hdrlen, const char **why)
{
	memset(out, 0, sizeof(*out));
	*hdrlen = 0;
	*why = NULL;
	if (len == 0)
		return PROXYPROTO_AGAIN;
	if (p[0] == 'P')
		return parse_v1(p, len, out, hdrlen, why);
	if (p[0] == v2_sig[0])
		return parse_v2(p, len, out, hdrlen, why);
	*why = "not a PROXY header";
	return PROXYPROTO_ERROR;
}

/*
 * An IPv4-mapped IPv6 address ("::ffff:192.0.2.1", what a load balancer
 * listening on IPv6 reports for an IPv4 client) as the IPv4 address it
 * stands for: policy, the logs and XCLIENT know that client by it, and a
 * backend that keeps the mapped form (Dovecot's rip=) would log and match
 * another address. Returns sa itself, or v4 filled in.
 */
static const struct sockaddr *
unmap_v4(const struct sockaddr *sa, struct sockaddr_in *v4)
{
	const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;

	if (sa == NULL || sa->sa_family != AF_INET6 ||
	    !IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr))
		return sa;
	memset(v4, 0, sizeof(*v4));
	v4->sin_family = AF_INET;
	v4->sin_port = sin6->sin6_port;
	memcpy(&v4->sin_addr, &sin6->sin6_addr.s6_addr[12], 4);
	return (const struct sockaddr *)v4;
}

/*
 * Brings src and dst to one family: both IPv4, or both IPv6 with any IPv4
 * one mapped. Returns the family, or AF_UNSPEC when either is neither.
 */
static int
pair_family(const struct sockaddr *src, const struct sockaddr *dst,
    struct sockaddr_in6 *s6, struct sockaddr_in6 *d6)
{
	const struct sockaddr *in[2] = { src, dst };
	struct sockaddr_in6 *o[2] = { s6, d6 };
	int i;

	if (src == NULL || dst == NULL)
		return AF_UNSPEC;
	if ((src->sa_family != AF_INET && src->sa_family != AF_INET6) ||
	    (dst->sa_family != AF_INET && dst->sa_family != AF_INET6))
		return AF_UNSPEC;
	if (src->sa_family == AF_INET && dst->sa_family == AF_INET)
		return AF_INET;
	for (i = 0; i < 2; i++) {
		memset(o[i], 0, sizeof(*o[i]));
		if (in[i]->sa_family == AF_INET6) {
			memcpy(o[i], in[i], sizeof(*o[i]));
		} else {
			const struct sockaddr_in *v4 =
			    (const struct sockaddr_in *)in[i];

			o[i]->sin6_family = AF_INET6;
			o[i]->sin6_port = v4->sin_port;
			o[i]->sin6_addr.s6_addr[10] = 0xff;
			o[i]->sin6_addr.s6_addr[11] = 0xff;
			memcpy(&o[i]->sin6_addr.s6_addr[12], &v4->sin_addr, 4);
		}
	}
	return AF_INET6;
}

int
proxyproto_write_v1(char *buf, size_t cap, const struct sockaddr *src,
    const struct sockaddr *dst)
{
	struct sockaddr_in s4, d4;
	struct sockaddr_in6 s6, d6;
	char sa[INET6_ADDRSTRLEN], da[INET6_ADDRSTRLEN];
	unsigned sp, dp;
	int n;

	src = unmap_v4(src, &s4);
	dst = unmap_v4(dst, &d4);
	switch (pair_family(src, dst, &s6, &d6)) {
	case AF_INET: {
		const struct sockaddr_in *s = (const struct sockaddr_in *)src;
		const struct sockaddr_in *d = (const struct sockaddr_in *)dst;

		inet_ntop(AF_INET, &s->sin_addr, sa, sizeof(sa));
		inet_ntop(AF_INET, &d->sin_addr, da, sizeof(da));
		sp = ntohs(s->sin_port);
		dp = ntohs(d->sin_port);
		n = snprintf(buf, cap, "PROXY TCP4 %s %s %u %u\r\n", sa, da,
		    sp, dp);
		break;
	}
	case AF_INET6:
		inet_ntop(AF_INET6, &s6.sin6_addr, sa, sizeof(sa));
		inet_ntop(AF_INET6, &d6.sin6_addr, da, sizeof(da));
		n = snprintf(buf, cap, "PROXY TCP6 %s %s %u %u\r\n", sa, da,
		    (unsigned)ntohs(s6.sin6_port),
		    (unsigned)ntohs(d6.sin6_port));
		break;
	default:
		n = snprintf(buf, cap, "PROXY UNKNOWN\r\n");
		break;
	}
	if (n < 0 || (size_t)n >= cap)
		return -1;
	return n;
}

/* Appends one TLV; returns the new offset or 0 when it does not fit. */
static size_t
put_tlv(uint8_t *buf, size_t cap, size_t off, uint8_t type, const void *v,
    size_t vlen)
{
	if (vlen > 0xffff || cap - off < 3 + vlen)
		return 0;
	buf[off] = type;
	buf[off + 1] = (uint8_t)(vlen >> 8);
	buf[off + 2] = (uint8_t)vlen;
	if (vlen > 0)
		memcpy(buf + off + 3, v, vlen);
	return off + 3 + vlen;
}

int
proxyproto_write_v2(uint8_t *buf, size_t cap, const struct sockaddr *src,
    const struct sockaddr *dst, const struct proxyproto_tls *tls)
{
	struct sockaddr_in s4, d4;
	struct sockaddr_in6 s6, d6;
	size_t off, body, ssl_off;
	int fam;

	src = unmap_v4(src, &s4);
	dst = unmap_v4(dst, &d4);
	fam = pair_family(src, dst, &s6, &d6);

	if (cap < 16 + V2_ADDRLEN_INET6)
		return -1;
	memcpy(buf, v2_sig, sizeof(v2_sig));
	buf[12] = 0x20 | V2_CMD_PROXY;
	off = 16;
	if (fam == AF_INET) {
		const struct sockaddr_in *s = (const struct sockaddr_in *)src;
		const struct sockaddr_in *d = (const struct sockaddr_in *)dst;

		buf[13] = V2_FAM_TCP4;
		memcpy(buf + 16, &s->sin_addr, 4);
		memcpy(buf + 20, &d->sin_addr, 4);
		memcpy(buf + 24, &s->sin_port, 2);
		memcpy(buf + 26, &d->sin_port, 2);
		off += V2_ADDRLEN_INET;
	} else if (fam == AF_INET6) {
		buf[13] = V2_FAM_TCP6;
		memcpy(buf + 16, &s6.sin6_addr, 16);
		memcpy(buf + 32, &d6.sin6_addr, 16);
		memcpy(buf + 48, &s6.sin6_port, 2);
		memcpy(buf + 50, &d6.sin6_port, 2);
		off += V2_ADDRLEN_INET6;
	} else {
		buf[13] = V2_FAM_UNSPEC;
		tls = NULL;	/* receivers ignore everything after UNSPEC */
	}
	if (tls != NULL) {
		/*
		 * PP2_TYPE_SSL: client flags, a 32-bit verify result, then
		 * sub-TLVs. No client certificate is ever requested, so
		 * verify is non-zero ("not verified") and only
		 * PP2_CLIENT_SSL is set.
		 */
		static const uint8_t head[5] = { PP2_CLIENT_SSL, 0, 0, 0, 1 };

		ssl_off = off;
		if (cap - off < 3 + sizeof(head))
			return -1;
		memcpy(buf + off + 3, head, sizeof(head));
		off += 3 + sizeof(head);
		if (tls->version != NULL && (off = put_tlv(buf, cap, off,
		    PP2_SUBTYPE_SSL_VERSION, tls->version,
		    strlen(tls->version))) == 0)
			return -1;
		if (tls->cipher != NULL && (off = put_tlv(buf, cap, off,
		    PP2_SUBTYPE_SSL_CIPHER, tls->cipher,
		    strlen(tls->cipher))) == 0)
			return -1;
		buf[ssl_off] = PP2_TYPE_SSL;
		buf[ssl_off + 1] = (uint8_t)((off - ssl_off - 3) >> 8);
		buf[ssl_off + 2] = (uint8_t)(off - ssl_off - 3);
	}
	body = off - 16;
	buf[14] = (uint8_t)(body >> 8);
	buf[15] = (uint8_t)body;
	return (int)off;
}
