/* addr.c - literal addresses, IP:PORT endpoints and CIDR prefixes. */
#include "addr.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const uint8_t v4mapped_prefix[12] = {
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff
};

bool
addr_is_v4mapped(const uint8_t addr[16])
{
	return memcmp(addr, v4mapped_prefix, sizeof(v4mapped_prefix)) == 0;
}

bool
addr_is_local(const uint8_t addr[16])
{
	static const uint8_t zero[16], one[16] = { [15] = 1 };

	if (addr_is_v4mapped(addr))
		return addr[12] == 127 || memcmp(addr + 12, zero, 4) == 0;
	return memcmp(addr, zero, 16) == 0 || memcmp(addr, one, 16) == 0;
}

size_t
addr_source_len(const uint8_t addr[16])
{
	return addr_is_v4mapped(addr) ? 16 : 8;
}

int
addr_to_v6(const struct sockaddr *sa, uint8_t out[16])
{
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;

		memcpy(out, v4mapped_prefix, sizeof(v4mapped_prefix));
		memcpy(out + 12, &sin->sin_addr, 4);
		return 0;
	}
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 =
		    (const struct sockaddr_in6 *)sa;

		memcpy(out, &sin6->sin6_addr, 16);
		return 0;
	}
	return -1;
}

/* Parses a bare literal; IPv4 comes back in its mapped form. */
static int
addr_literal_parse(const char *s, uint8_t out[16], bool *is_v4)
{
	struct in_addr a4;
	struct in6_addr a6;

	if (inet_pton(AF_INET, s, &a4) == 1) {
		memcpy(out, v4mapped_prefix, sizeof(v4mapped_prefix));
		memcpy(out + 12, &a4, 4);
		*is_v4 = true;
		return 0;
	}
	if (inet_pton(AF_INET6, s, &a6) == 1) {
		memcpy(out, &a6, 16);
		*is_v4 = false;
		return 0;
	}
	return -1;
}

static int
port_parse(const char *s, uint16_t *port)
{
	unsigned long v = 0;

	if (*s == '\0')
		return -1;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return -1;
		v = v * 10 + (unsigned long)(*s - '0');
		if (v > 65535)
			return -1;
	}
	if (v == 0)
		return -1;
	*port = (uint16_t)v;
	return 0;
}

#define LINKLOCAL_WHY "link-local addresses (fe80::/10) are not taken: " \
	"they need an interface (a zone such as %eth0), which moat cannot name"

int
addr_port_parse(const char *s, struct addr_port *out, const char **why)
{
	char host[INET6_ADDRSTRLEN + 1];
	const char *colon, *hstart, *hend;
	uint16_t port;
	size_t hlen;

	memset(out, 0, sizeof(*out));
	if (s[0] == '[') {
		hstart = s + 1;
		hend = strchr(hstart, ']');
		if (hend == NULL || hend[1] != ':') {
			*why = "expected [IPv6]:PORT";
			return -1;
		}
		colon = hend + 1;
	} else {
		hstart = s;
		colon = strrchr(s, ':');
		if (colon == NULL) {
			*why = "missing ':PORT'";
			return -1;
		}
		if (memchr(s, ':', (size_t)(colon - s)) != NULL) {
			*why = "IPv6 addresses need brackets, as in [::1]:25";
			return -1;
		}
		hend = colon;
	}
	hlen = (size_t)(hend - hstart);
	if (hlen == 0 || hlen >= sizeof(host)) {
		*why = "expected IP:PORT or [IPv6]:PORT";
		return -1;
	}
	memcpy(host, hstart, hlen);
	host[hlen] = '\0';
	if (port_parse(colon + 1, &port) == -1) {
		*why = "port must be a number from 1 to 65535";
		return -1;
	}
	if (s[0] == '[') {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&out->ss;

		char *zone = strchr(host, '%');

		if (zone != NULL)
			*zone = '\0';	/* said below, after what it qualifies */
		if (inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1) {
			*why = "not an IPv6 address";
			return -1;
		}
		/* Without the interface (sin6_scope_id) the kernel refuses
		 * to bind or connect to one: "Invalid argument". */
		if (IN6_IS_ADDR_LINKLOCAL(&sin6->sin6_addr)) {
			*why = LINKLOCAL_WHY;
			return -1;
		}
		if (zone != NULL) {
			*why = "a zone (%...) is not taken: moat cannot name "
			    "an interface";
			return -1;
		}
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		out->len = sizeof(*sin6);
	} else {
		struct sockaddr_in *sin = (struct sockaddr_in *)&out->ss;

		if (inet_pton(AF_INET, host, &sin->sin_addr) != 1) {
			*why = "not an IPv4 address (host names are not "
			    "accepted)";
			return -1;
		}
		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		out->len = sizeof(*sin);
	}
	return 0;
}

int
cidr_parse(const char *s, struct cidr *out, const char **why)
{
	char host[INET6_ADDRSTRLEN + 1];
	const char *slash;
	size_t hlen;
	bool is_v4;
	unsigned long plen, max;
	int i;

	memset(out, 0, sizeof(*out));
	slash = strchr(s, '/');
	hlen = slash ? (size_t)(slash - s) : strlen(s);
	if (hlen == 0 || hlen >= sizeof(host)) {
		*why = "expected an address or ADDRESS/PREFIX";
		return -1;
	}
	memcpy(host, s, hlen);
	host[hlen] = '\0';
	if (addr_literal_parse(host, out->addr, &is_v4) == -1) {
		*why = "not an IPv4 or IPv6 address";
		return -1;
	}
	max = is_v4 ? 32 : 128;
	plen = max;
	if (slash) {
		const char *p = slash + 1;

		if (*p == '\0' || strlen(p) > 3) {
			*why = "bad prefix length";
			return -1;
		}
		plen = 0;
		for (; *p; p++) {
			if (*p < '0' || *p > '9') {
				*why = "bad prefix length";
				return -1;
			}
			plen = plen * 10 + (unsigned long)(*p - '0');
		}
		if (plen > max) {
			*why = is_v4 ? "IPv4 prefix length must be 0 to 32" :
			    "IPv6 prefix length must be 0 to 128";
			return -1;
		}
	}
	out->plen = (uint8_t)(is_v4 ? plen + 96 : plen);
	for (i = out->plen; i < 128; i++) {
		if (out->addr[i / 8] & (0x80 >> (i % 8))) {
			*why = "address has bits set beyond the prefix length";
			return -1;
		}
	}
	return 0;
}

bool
cidr_contains(const struct cidr *c, const uint8_t addr[16])
{
	int full = c->plen / 8, rest = c->plen % 8;

	if (memcmp(c->addr, addr, (size_t)full) != 0)
		return false;
	if (rest == 0)
		return true;
	return ((c->addr[full] ^ addr[full]) & (0xff << (8 - rest))) == 0;
}

bool
cidr_covers_v4(const struct cidr *c)
{
	static const uint8_t v4_any[16] = { [10] = 0xff, [11] = 0xff };

	return c->plen <= 96 && cidr_contains(c, v4_any);
}

bool
addr_port_equal(const struct addr_port *a, const struct addr_port *b)
{
	return a->len == b->len && memcmp(&a->ss, &b->ss, a->len) == 0;
}

uint16_t
addr_port_port(const struct addr_port *a)
{
	if (a->ss.ss_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)&a->ss)->sin_port);
	return ntohs(((const struct sockaddr_in6 *)&a->ss)->sin6_port);
}

bool
addr_port_wildcard(const struct addr_port *a)
{
	if (a->ss.ss_family == AF_INET)
		return ((const struct sockaddr_in *)&a->ss)->sin_addr.s_addr ==
		    htonl(INADDR_ANY);
	return IN6_IS_ADDR_UNSPECIFIED(
	    &((const struct sockaddr_in6 *)&a->ss)->sin6_addr);
}

enum addr_clash
addr_port_clash(const struct addr_port *a, const struct addr_port *b,
    bool a_dual)
{
	if (addr_port_port(a) != addr_port_port(b))
		return ADDR_CLASH_NONE;
	if (a->ss.ss_family == b->ss.ss_family) {
		if (addr_port_equal(a, b))
			return ADDR_CLASH_SAME;
		if (addr_port_wildcard(a) || addr_port_wildcard(b))
			return ADDR_CLASH_WILDCARD;
		return ADDR_CLASH_NONE;
	}
	if (a_dual && a->ss.ss_family == AF_INET6 && addr_port_wildcard(a))
		return ADDR_CLASH_DUAL;
	return ADDR_CLASH_NONE;
}

const char *
addr_v6_str(const uint8_t addr[16], char *buf, size_t len)
{
	if (addr_is_v4mapped(addr)) {
		if (inet_ntop(AF_INET, addr + 12, buf, (socklen_t)len) == NULL)
			snprintf(buf, len, "?");
	} else if (inet_ntop(AF_INET6, addr, buf, (socklen_t)len) == NULL)
		snprintf(buf, len, "?");
	return buf;
}

const char *
addr_port_str(const struct addr_port *ap, char *buf, size_t len)
{
	char host[INET6_ADDRSTRLEN];

	if (ap->ss.ss_family == AF_INET) {
		const struct sockaddr_in *sin =
		    (const struct sockaddr_in *)&ap->ss;

		inet_ntop(AF_INET, &sin->sin_addr, host, sizeof(host));
		snprintf(buf, len, "%s:%u", host, ntohs(sin->sin_port));
	} else if (ap->ss.ss_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 =
		    (const struct sockaddr_in6 *)&ap->ss;

		inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof(host));
		snprintf(buf, len, "[%s]:%u", host, ntohs(sin6->sin6_port));
	} else
		snprintf(buf, len, "?");
	return buf;
}

const char *
cidr_str(const struct cidr *c, char *buf, size_t len)
{
	char host[INET6_ADDRSTRLEN];
	bool v4 = addr_is_v4mapped(c->addr) && c->plen >= 96;

	addr_v6_str(c->addr, host, sizeof(host));
	snprintf(buf, len, "%s/%u", host, v4 ? c->plen - 96u : c->plen);
	return buf;
}
