/* test_proxyproto.c - PROXY v1/v2 writers and parser; SMTP reply parser. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>

#include "backend.h"
#include "check.h"
#include "proxyproto.h"

static struct sockaddr_storage
sa4(const char *ip, uint16_t port)
{
	struct sockaddr_storage ss;
	struct sockaddr_in *s = (struct sockaddr_in *)&ss;

	memset(&ss, 0, sizeof(ss));
	s->sin_family = AF_INET;
	s->sin_port = htons(port);
	inet_pton(AF_INET, ip, &s->sin_addr);
	return ss;
}

static struct sockaddr_storage
sa6(const char *ip, uint16_t port)
{
	struct sockaddr_storage ss;
	struct sockaddr_in6 *s = (struct sockaddr_in6 *)&ss;

	memset(&ss, 0, sizeof(ss));
	s->sin6_family = AF_INET6;
	s->sin6_port = htons(port);
	inet_pton(AF_INET6, ip, &s->sin6_addr);
	return ss;
}

static const char *
ip_of(const struct sockaddr_storage *ss, char *buf, size_t len)
{
	if (ss->ss_family == AF_INET)
		return inet_ntop(AF_INET,
		    &((const struct sockaddr_in *)ss)->sin_addr, buf, len);
	return inet_ntop(AF_INET6,
	    &((const struct sockaddr_in6 *)ss)->sin6_addr, buf, len);
}

static unsigned
port_of(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)ss)->sin_port);
	return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
}

static enum proxyproto_rc
parse_str(const char *s, struct proxyproto_hdr *h, size_t *hl)
{
	const char *why;

	return proxyproto_parse((const uint8_t *)s, strlen(s), h, hl, &why);
}

/* Every strict prefix of a valid header is AGAIN, the whole is OK. */
static void
check_prefixes(const uint8_t *p, size_t len)
{
	struct proxyproto_hdr h;
	const char *why;
	size_t i, hl;

	for (i = 0; i < len; i++)
		CHECK_INT_EQ(proxyproto_parse(p, i, &h, &hl, &why),
		    PROXYPROTO_AGAIN);
	CHECK_INT_EQ(proxyproto_parse(p, len, &h, &hl, &why), PROXYPROTO_OK);
	CHECK_INT_EQ(hl, len);
}

static void
test_v1_parse(void)
{
	struct proxyproto_hdr h;
	char ip[INET6_ADDRSTRLEN];
	size_t hl;
	const char *ok4 = "PROXY TCP4 192.0.2.7 198.51.100.1 56324 465\r\n";
	const char *ok6 = "PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n";
	static const char *bad[] = {
		"GET / HTTP/1.0\r\n",
		"PROXY TCP5 1.2.3.4 1.2.3.4 1 2\r\n",
		"PROXY TCP4 1.2.3.4 1.2.3.4 1 2 3\r\n",
		"PROXY TCP4 1.2.3.4 1.2.3.4 1\r\n",
		"PROXY TCP4 1.2.3.4  1.2.3.4 1 2\r\n",
		"PROXY TCP4 1.2.3.4 1.2.3.4 01 2\r\n",
		"PROXY TCP4 1.2.3.4 1.2.3.4 1 65536\r\n",
		"PROXY TCP4 1.2.3.4 1.2.3.4 -1 2\r\n",
		"PROXY TCP4 1.2.3.256 1.2.3.4 1 2\r\n",
		"PROXY TCP4 ::1 ::1 1 2\r\n",
		"PROXY TCP6 1.2.3.4 1.2.3.4 1 2\r\n",
		"PROXY TCP4 1.2.3.4 1.2.3.4 1 2\n",
		"PROXY TCP4 1.2.3.4 1.2.3.4 1 2\rX",
		"proxy TCP4 1.2.3.4 1.2.3.4 1 2\r\n",
		"PROXY\r\n",
	};
	char longline[200];
	size_t i;

	CHECK_INT_EQ(parse_str(ok4, &h, &hl), PROXYPROTO_OK);
	CHECK_INT_EQ(hl, strlen(ok4));
	CHECK_INT_EQ(h.version, 1);
	CHECK(!h.local);
	CHECK_STR_EQ(ip_of(&h.src, ip, sizeof(ip)), "192.0.2.7");
	CHECK_STR_EQ(ip_of(&h.dst, ip, sizeof(ip)), "198.51.100.1");
	CHECK_INT_EQ(port_of(&h.src), 56324);
	CHECK_INT_EQ(port_of(&h.dst), 465);
	check_prefixes((const uint8_t *)ok4, strlen(ok4));

	CHECK_INT_EQ(parse_str(ok6, &h, &hl), PROXYPROTO_OK);
	CHECK_STR_EQ(ip_of(&h.src, ip, sizeof(ip)), "2001:db8::1");
	CHECK_INT_EQ(port_of(&h.src), 1);
	CHECK_INT_EQ(port_of(&h.dst), 65535);

	/* What follows the header is not part of it. */
	CHECK_INT_EQ(parse_str("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n\x16\x03",
	    &h, &hl), PROXYPROTO_OK);
	CHECK_INT_EQ(hl, strlen("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"));

	CHECK_INT_EQ(parse_str("PROXY UNKNOWN\r\n", &h, &hl), PROXYPROTO_OK);
	CHECK(h.local);
	CHECK_INT_EQ(parse_str("PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n", &h,
	    &hl), PROXYPROTO_OK);
	CHECK(h.local);

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		enum proxyproto_rc rc = parse_str(bad[i], &h, &hl);

		if (rc != PROXYPROTO_ERROR)
			fprintf(stderr, "bad[%zu] accepted\n", i);
		CHECK_INT_EQ(rc, PROXYPROTO_ERROR);
	}
	/* A NUL inside (strlen would stop at it). */
	CHECK_INT_EQ(proxyproto_parse((const uint8_t *)"PROXY TCP4 1\0", 13,
	    &h, &hl, &(const char *){ NULL }), PROXYPROTO_ERROR);

	/* No CRLF within 107 bytes. */
	memset(longline, 'x', sizeof(longline));
	memcpy(longline, "PROXY TCP4 ", 11);
	CHECK_INT_EQ(proxyproto_parse((const uint8_t *)longline, 106, &h, &hl,
	    &(const char *){ NULL }), PROXYPROTO_AGAIN);
	CHECK_INT_EQ(proxyproto_parse((const uint8_t *)longline, 107, &h, &hl,
	    &(const char *){ NULL }), PROXYPROTO_ERROR);
	CHECK_INT_EQ(proxyproto_parse((const uint8_t *)longline,
	    sizeof(longline), &h, &hl, &(const char *){ NULL }),
	    PROXYPROTO_ERROR);
}

static void
test_v1_write(void)
{
	struct sockaddr_storage s = sa4("192.0.2.1", 1234);
	struct sockaddr_storage d = sa4("10.0.0.1", 25);
	struct sockaddr_storage s6 = sa6("2001:db8::5", 4321);
	char buf[PROXYPROTO_WRITE_MAX];
	struct proxyproto_hdr h;
	size_t hl;
	int n;

	n = proxyproto_write_v1(buf, sizeof(buf), (struct sockaddr *)&s,
	    (struct sockaddr *)&d);
	CHECK_STR_EQ(buf, "PROXY TCP4 192.0.2.1 10.0.0.1 1234 25\r\n");
	CHECK_INT_EQ(n, (int)strlen(buf));
	n = proxyproto_write_v1(buf, sizeof(buf), (struct sockaddr *)&s6,
	    (struct sockaddr *)&d);
	CHECK_STR_EQ(buf, "PROXY TCP6 2001:db8::5 ::ffff:10.0.0.1 4321 25\r\n");
	CHECK_INT_EQ(parse_str(buf, &h, &hl), PROXYPROTO_OK);
	CHECK_INT_EQ(proxyproto_write_v1(buf, 10, (struct sockaddr *)&s,
	    (struct sockaddr *)&d), -1);
	n = proxyproto_write_v1(buf, sizeof(buf), NULL, NULL);
	CHECK_STR_EQ(buf, "PROXY UNKNOWN\r\n");
	CHECK_INT_EQ(n, 15);
}

/*
 * A load balancer on IPv6 reports an IPv4 client as "::ffff:a.b.c.d": the
 * backend is told of the IPv4 client moat's policy and logs know, not of
 * the mapped form (which Dovecot would log and match as it is).
 */
static void
test_write_v4_mapped(void)
{
	struct sockaddr_storage ms = sa6("::ffff:192.0.2.7", 40007);
	struct sockaddr_storage md = sa6("::ffff:127.0.0.1", 110);
	struct sockaddr_storage d6 = sa6("2001:db8::1", 110);
	char line[PROXYPROTO_WRITE_MAX], ip[INET6_ADDRSTRLEN];
	uint8_t buf[PROXYPROTO_WRITE_MAX];
	struct proxyproto_hdr h;
	const char *why;
	size_t hl;
	int n;

	n = proxyproto_write_v1(line, sizeof(line), (struct sockaddr *)&ms,
	    (struct sockaddr *)&md);
	CHECK_STR_EQ(line, "PROXY TCP4 192.0.2.7 127.0.0.1 40007 110\r\n");
	CHECK_INT_EQ(n, (int)strlen(line));
	n = proxyproto_write_v2(buf, sizeof(buf), (struct sockaddr *)&ms,
	    (struct sockaddr *)&md, NULL);
	CHECK_INT_EQ(n, 16 + 12);
	CHECK_INT_EQ(buf[13], 0x11);
	CHECK_INT_EQ(proxyproto_parse(buf, (size_t)n, &h, &hl, &why),
	    PROXYPROTO_OK);
	CHECK_INT_EQ(h.src.ss_family, AF_INET);
	CHECK_STR_EQ(ip_of(&h.src, ip, sizeof(ip)), "192.0.2.7");
	CHECK_INT_EQ(port_of(&h.src), 40007);
	CHECK_STR_EQ(ip_of(&h.dst, ip, sizeof(ip)), "127.0.0.1");
	CHECK_INT_EQ(port_of(&h.dst), 110);
	/* Beside a real IPv6 address it can only stay mapped. */
	n = proxyproto_write_v1(line, sizeof(line), (struct sockaddr *)&ms,
	    (struct sockaddr *)&d6);
	CHECK_STR_EQ(line,
	    "PROXY TCP6 ::ffff:192.0.2.7 2001:db8::1 40007 110\r\n");
}

static void
test_v2(void)
{
	struct sockaddr_storage s = sa4("192.0.2.9", 40000);
	struct sockaddr_storage d = sa4("127.0.0.1", 465);
	struct sockaddr_storage s6 = sa6("2001:db8::9", 40001);
	struct sockaddr_storage d6 = sa6("::1", 995);
	struct proxyproto_tls tls = { "TLSv1.3", "TLS_AES_256_GCM_SHA384" };
	uint8_t buf[PROXYPROTO_WRITE_MAX];
	struct proxyproto_hdr h;
	char ip[INET6_ADDRSTRLEN];
	const char *why;
	size_t hl, off;
	int n;

	n = proxyproto_write_v2(buf, sizeof(buf), (struct sockaddr *)&s,
	    (struct sockaddr *)&d, NULL);
	CHECK_INT_EQ(n, 16 + 12);
	CHECK_INT_EQ(buf[12], 0x21);
	CHECK_INT_EQ(buf[13], 0x11);
	check_prefixes(buf, (size_t)n);
	CHECK_INT_EQ(proxyproto_parse(buf, (size_t)n, &h, &hl, &why),
	    PROXYPROTO_OK);
	CHECK_INT_EQ(h.version, 2);
	CHECK_STR_EQ(ip_of(&h.src, ip, sizeof(ip)), "192.0.2.9");
	CHECK_INT_EQ(port_of(&h.src), 40000);
	CHECK_INT_EQ(port_of(&h.dst), 465);

	/* IPv6 with the SSL TLV, which the parser skips over. */
	n = proxyproto_write_v2(buf, sizeof(buf), (struct sockaddr *)&s6,
	    (struct sockaddr *)&d6, &tls);
	CHECK(n > 16 + 36);
	CHECK_INT_EQ(buf[13], 0x21);
	off = 16 + 36;
	CHECK_INT_EQ(buf[off], 0x20);			/* PP2_TYPE_SSL */
	CHECK_INT_EQ((buf[off + 1] << 8 | buf[off + 2]), n - (int)off - 3);
	CHECK_INT_EQ(buf[off + 3], 0x01);		/* PP2_CLIENT_SSL */
	CHECK_INT_EQ(buf[off + 8], 0x21);		/* SSL_VERSION */
	CHECK_INT_EQ(buf[off + 10], 7);
	CHECK(memcmp(buf + off + 11, "TLSv1.3", 7) == 0);
	CHECK_INT_EQ(buf[off + 18], 0x23);		/* SSL_CIPHER */
	check_prefixes(buf, (size_t)n);
	CHECK_INT_EQ(proxyproto_parse(buf, (size_t)n, &h, &hl, &why),
	    PROXYPROTO_OK);
	CHECK_STR_EQ(ip_of(&h.src, ip, sizeof(ip)), "2001:db8::9");
	CHECK_STR_EQ(ip_of(&h.dst, ip, sizeof(ip)), "::1");
	CHECK_INT_EQ(port_of(&h.dst), 995);

	/* A broken TLV length is an error. */
	buf[off + 2] = (uint8_t)(buf[off + 2] + 1);
	CHECK_INT_EQ(proxyproto_parse(buf, (size_t)n, &h, &hl, &why),
	    PROXYPROTO_ERROR);
	buf[off + 2] = (uint8_t)(buf[off + 2] - 1);

	/* Too small an output buffer. */
	CHECK_INT_EQ(proxyproto_write_v2(buf, 40, (struct sockaddr *)&s6,
	    (struct sockaddr *)&d6, &tls), -1);

	/* LOCAL: a health check, addresses ignored. */
	n = proxyproto_write_v2(buf, sizeof(buf), (struct sockaddr *)&s,
	    (struct sockaddr *)&d, NULL);
	buf[12] = 0x20;
	CHECK_INT_EQ(proxyproto_parse(buf, (size_t)n, &h, &hl, &why),
	    PROXYPROTO_OK);
	CHECK(h.local);

	/* Bad version, bad command, undefined family, short address block. */
	buf[12] = 0x11;
	CHECK_INT_EQ(proxyproto_parse(buf, 13, &h, &hl, &why),
	    PROXYPROTO_ERROR);
	buf[12] = 0x22;
	CHECK_INT_EQ(proxyproto_parse(buf, 13, &h, &hl, &why),
	    PROXYPROTO_ERROR);
	buf[12] = 0x21;
	buf[13] = 0x13;
	CHECK_INT_EQ(proxyproto_parse(buf, 14, &h, &hl, &why),
	    PROXYPROTO_ERROR);
	buf[13] = 0x41;
	CHECK_INT_EQ(proxyproto_parse(buf, 14, &h, &hl, &why),
	    PROXYPROTO_ERROR);
	buf[13] = 0x31;	/* UNIX but only 12 address bytes */
	CHECK_INT_EQ(proxyproto_parse(buf, (size_t)n, &h, &hl, &why),
	    PROXYPROTO_ERROR);
	buf[13] = 0x21;	/* TCP6 but only 12 address bytes */
	CHECK_INT_EQ(proxyproto_parse(buf, (size_t)n, &h, &hl, &why),
	    PROXYPROTO_ERROR);
	/* Longer than we accept. */
	buf[13] = 0x11;
	buf[14] = 0xff;
	buf[15] = 0xff;
	CHECK_INT_EQ(proxyproto_parse(buf, 16, &h, &hl, &why),
	    PROXYPROTO_ERROR);
	/* A damaged signature. */
	buf[5] = 'X';
	CHECK_INT_EQ(proxyproto_parse(buf, 6, &h, &hl, &why),
	    PROXYPROTO_ERROR);
	CHECK_INT_EQ(proxyproto_parse(buf, 0, &h, &hl, &why),
	    PROXYPROTO_AGAIN);
}

/*
 * UDP and UNIX are defined families moat does not take: the protocol has a
 * receiver read them as UNSPEC, the balancer's own connection, once the
 * address block is as long as the family says.
 */
static void
test_v2_other_families(void)
{
	static const uint8_t fams[] = { 0x12, 0x22, 0x31, 0x32 };
	static const size_t lens[] = { 12, 36, 216, 216 };
	uint8_t buf[16 + 216 + 8];
	struct proxyproto_hdr h;
	size_t hl, i, n;
	const char *why;

	for (i = 0; i < sizeof(fams); i++) {
		n = 16 + lens[i];
		memset(buf, 0xa5, sizeof(buf));
		memcpy(buf, "\r\n\r\n\0\r\nQUIT\n", 12);
		buf[12] = 0x21;
		buf[13] = fams[i];
		buf[14] = (uint8_t)(lens[i] >> 8);
		buf[15] = (uint8_t)lens[i];
		CHECK_INT_EQ(proxyproto_parse(buf, n - 1, &h, &hl, &why),
		    PROXYPROTO_AGAIN);
		CHECK_INT_EQ(proxyproto_parse(buf, n + 8, &h, &hl, &why),
		    PROXYPROTO_OK);
		CHECK(h.local);
		CHECK_INT_EQ(h.version, 2);
		CHECK_INT_EQ(hl, n);
		/* One byte short of the family's address block. */
		buf[15] = (uint8_t)(lens[i] - 1);
		CHECK_INT_EQ(proxyproto_parse(buf, n + 8, &h, &hl, &why),
		    PROXYPROTO_ERROR);
		CHECK_STR_EQ(why, "v2: address block too short");
	}
}

static void
test_reply(void)
{
	size_t len;
	int code;
	const char *r1 = "220 mail ESMTP\r\n";
	const char *r2 = "250-mail\r\n250-XCLIENT NAME ADDR\r\n250 8BITMIME\r\n"
	    "trailing";
	char big[BACKEND_REPLY_MAX + 10];

	CHECK_INT_EQ(backend_reply_parse((const uint8_t *)r1, strlen(r1), &len,
	    &code), BACKEND_REPLY_OK);
	CHECK_INT_EQ(code, 220);
	CHECK_INT_EQ(len, strlen(r1));
	CHECK_INT_EQ(backend_reply_parse((const uint8_t *)r1, 10, &len, &code),
	    BACKEND_REPLY_AGAIN);
	CHECK_INT_EQ(backend_reply_parse((const uint8_t *)r2, strlen(r2), &len,
	    &code), BACKEND_REPLY_OK);
	CHECK_INT_EQ(code, 250);
	CHECK_INT_EQ(len, strlen(r2) - strlen("trailing"));
	CHECK_INT_EQ(backend_reply_parse((const uint8_t *)r2, 20, &len, &code),
	    BACKEND_REPLY_AGAIN);
	CHECK_INT_EQ(backend_reply_parse((const uint8_t *)"250-a\r\n220 b\r\n",
	    14, &len, &code), BACKEND_REPLY_ERROR);
	CHECK_INT_EQ(backend_reply_parse((const uint8_t *)"hello\r\n", 7, &len,
	    &code), BACKEND_REPLY_ERROR);
	CHECK_INT_EQ(backend_reply_parse((const uint8_t *)"250\r\n", 5, &len,
	    &code), BACKEND_REPLY_OK);
	memset(big, 'x', sizeof(big));
	memcpy(big, "250-", 4);
	CHECK_INT_EQ(backend_reply_parse((const uint8_t *)big, sizeof(big),
	    &len, &code), BACKEND_REPLY_ERROR);
}

static void
test_xclient(void)
{
	struct sockaddr_storage s = sa4("192.0.2.44", 5555);
	struct sockaddr_storage s6 = sa6("2001:db8::44", 6666);
	struct sockaddr_storage m = sa6("::ffff:192.0.2.45", 7);
	char buf[256];

	CHECK(backend_xclient_cmd(buf, sizeof(buf), (struct sockaddr *)&s) > 0);
	CHECK_STR_EQ(buf, "XCLIENT NAME=[UNAVAILABLE] ADDR=192.0.2.44 "
	    "PORT=5555\r\n");
	CHECK(backend_xclient_cmd(buf, sizeof(buf), (struct sockaddr *)&s6) >
	    0);
	CHECK_STR_EQ(buf, "XCLIENT NAME=[UNAVAILABLE] ADDR=IPV6:2001:db8::44 "
	    "PORT=6666\r\n");
	CHECK(backend_xclient_cmd(buf, sizeof(buf), (struct sockaddr *)&m) > 0);
	CHECK_STR_EQ(buf, "XCLIENT NAME=[UNAVAILABLE] ADDR=192.0.2.45 "
	    "PORT=7\r\n");
	CHECK_INT_EQ(backend_xclient_cmd(buf, 10, (struct sockaddr *)&s), -1);
	CHECK(backend_ehlo_cmd(buf, sizeof(buf)) > 7);
	CHECK(strncmp(buf, "EHLO ", 5) == 0);
}

int
main(void)
{
	test_v1_parse();
	test_v1_write();
	test_write_v4_mapped();
	test_v2();
	test_v2_other_families();
	test_reply();
	test_xclient();
	return check_report("proxyproto");
}
