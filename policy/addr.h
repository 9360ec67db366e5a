/* addr.h - literal addresses, IP:PORT endpoints and CIDR prefixes. */
#ifndef MOAT_ADDR_H
#define MOAT_ADDR_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* An endpoint written "192.0.2.1:25" or "[2001:db8::1]:25". */
struct addr_port {
	struct sockaddr_storage ss;
	socklen_t len;
};

/* Room for a TCP peer, which is all a session keeps (sockaddr_storage is
 * four times its size, in every session). */
union sockaddr_ip {
	struct sockaddr sa;
	struct sockaddr_in sin;
	struct sockaddr_in6 sin6;
};

/*
 * A prefix, always stored as IPv6: IPv4 lives under ::ffff:0:0/96 so that
 * one trie serves both families and IPv4-mapped clients match IPv4 rules.
 * plen counts from the start of the 128 bits (an IPv4 /24 is 120).
 */
struct cidr {
	uint8_t addr[16];
	uint8_t plen;
};

#define ADDR_PORT_STRLEN 64	/* "[" INET6_ADDRSTRLEN "]:65535" and NUL */
#define CIDR_STRLEN 56

/*
 * The parsers return 0, or -1 with *why pointing at a static reason that
 * reads well after "invalid address 'x': ". Host bits set below the prefix
 * length are an error, since they usually mean a typo.
 */
int addr_port_parse(const char *s, struct addr_port *out, const char **why);
int cidr_parse(const char *s, struct cidr *out, const char **why);
/* Turns a socket address into the 16-byte form used by struct cidr;
 * returns -1 for families other than AF_INET and AF_INET6. */
int addr_to_v6(const struct sockaddr *sa, uint8_t out[16]);
bool cidr_contains(const struct cidr *c, const uint8_t addr[16]);
/* Whether c holds every IPv4 address (all of ::ffff:0:0/96): 0.0.0.0/0,
 * but also IPv6 prefixes such as ::/0 or ::/8. */
bool cidr_covers_v4(const struct cidr *c);
bool addr_is_v4mapped(const uint8_t addr[16]);
/* Whether addr (16-byte form) is this host's own: loopback (127.0.0.0/8,
 * ::1) or unspecified (0.0.0.0, ::). */
bool addr_is_local(const uint8_t addr[16]);
/* The leading bytes of addr that name one client source for the session
 * cap and the metrics endpoint: the whole IPv4 address (16), an IPv6
 * address's /64 (8), since one host may pick any address of its /64. */
size_t addr_source_len(const uint8_t addr[16]);

/* Endpoints compared, and taken apart, as listeners need them. */
bool addr_port_equal(const struct addr_port *a, const struct addr_port *b);
uint16_t addr_port_port(const struct addr_port *a);
/* 0.0.0.0 or [::]: every address of its family. */
bool addr_port_wildcard(const struct addr_port *a);

/*
 * Whether sockets on a and b cannot both be bound. Listening sockets on
 * IPv6 are IPv6-only (listener.c), so 0.0.0.0:25 and [::]:25 share
 * nothing; within a family a wildcard address takes the port on every
 * address, and a bind beside it fails even with SO_REUSEADDR. a_dual says
 * that a, when it is [::], also takes the port on IPv4, as the metrics
 * socket (metrics.c sets no IPV6_V6ONLY) does.
 */
enum addr_clash {
	ADDR_CLASH_NONE = 0,
	ADDR_CLASH_SAME,	/* the same address and port */
	ADDR_CLASH_WILDCARD,	/* a wildcard and an address under it */
	ADDR_CLASH_DUAL,	/* a dual-stack [::] and an IPv4 address */
};
enum addr_clash addr_port_clash(const struct addr_port *a,
    const struct addr_port *b, bool a_dual);

/* Writers for logs and events; they return buf. */
const char *addr_port_str(const struct addr_port *ap, char *buf, size_t len);
const char *cidr_str(const struct cidr *c, char *buf, size_t len);
/* The bare address of a 16-byte form, IPv4-mapped shown as IPv4. */
const char *addr_v6_str(const uint8_t addr[16], char *buf, size_t len);

#endif
