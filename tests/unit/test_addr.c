/* test_addr.c - unit tests for addresses, CIDRs, durations, country codes. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>

#include "addr.h"
#include "check.h"
#include "country.h"
#include "duration.h"

static void
test_addr_port(void)
{
	struct addr_port ap;
	const char *why = NULL;
	char buf[ADDR_PORT_STRLEN];

	CHECK_INT_EQ(addr_port_parse("127.0.0.1:25", &ap, &why), 0);
	CHECK_INT_EQ(ap.ss.ss_family, AF_INET);
	CHECK_STR_EQ(addr_port_str(&ap, buf, sizeof(buf)), "127.0.0.1:25");
	CHECK_INT_EQ(addr_port_parse("[::1]:465", &ap, &why), 0);
	CHECK_INT_EQ(ap.ss.ss_family, AF_INET6);
	CHECK_STR_EQ(addr_port_str(&ap, buf, sizeof(buf)), "[::1]:465");
	CHECK_INT_EQ(addr_port_parse("[2001:db8::1]:65535", &ap, &why), 0);
	CHECK_INT_EQ(addr_port_port(&ap), 65535);
	CHECK(!addr_port_wildcard(&ap));
	{
		struct addr_port any4, any6, lo;

		CHECK_INT_EQ(addr_port_parse("0.0.0.0:25", &any4, &why), 0);
		CHECK_INT_EQ(addr_port_parse("[::]:25", &any6, &why), 0);
		CHECK_INT_EQ(addr_port_parse("127.0.0.1:25", &lo, &why), 0);
		CHECK(addr_port_wildcard(&any4) && addr_port_wildcard(&any6));
		CHECK(!addr_port_wildcard(&lo));
		CHECK_INT_EQ(addr_port_port(&lo), 25);
		CHECK(!addr_port_equal(&any4, &lo));
		CHECK_INT_EQ(addr_port_parse("127.0.0.1:25", &ap, &why), 0);
		CHECK(addr_port_equal(&ap, &lo));
	}

	CHECK_INT_EQ(addr_port_parse("127.0.0.1", &ap, &why), -1);
	CHECK_STR_EQ(why, "missing ':PORT'");
	CHECK_INT_EQ(addr_port_parse("::1:25", &ap, &why), -1);
	CHECK_INT_EQ(addr_port_parse("127.0.0.1:0", &ap, &why), -1);
	CHECK_INT_EQ(addr_port_parse("127.0.0.1:65536", &ap, &why), -1);
	CHECK_INT_EQ(addr_port_parse("127.0.0.1:2x", &ap, &why), -1);
	CHECK_INT_EQ(addr_port_parse("localhost:25", &ap, &why), -1);
	CHECK_INT_EQ(addr_port_parse("[127.0.0.1]:25", &ap, &why), -1);
	CHECK_INT_EQ(addr_port_parse("[::1]25", &ap, &why), -1);
	CHECK_INT_EQ(addr_port_parse(":25", &ap, &why), -1);
	CHECK_INT_EQ(addr_port_parse("", &ap, &why), -1);
	/* Link-local: no bind or connect works without a zone, and moat
	 * takes none; said as such, not as "not an IPv6 address". */
	CHECK_INT_EQ(addr_port_parse("[fe80::1]:25", &ap, &why), -1);
	CHECK(strstr(why, "link-local") != NULL);
	CHECK_INT_EQ(addr_port_parse("[fe80::1%eth0]:25", &ap, &why), -1);
	CHECK(strstr(why, "link-local") != NULL);
	CHECK_INT_EQ(addr_port_parse("[2001:db8::1%eth0]:25", &ap, &why), -1);
	CHECK(strstr(why, "zone") != NULL);
	CHECK_INT_EQ(addr_port_parse("[::1%]:25", &ap, &why), -1);
	CHECK_INT_EQ(addr_port_parse("[fe9f::1]:25", &ap, &why), -1);
	CHECK_INT_EQ(addr_port_parse("[fec0::1]:25", &ap, &why), 0);
}

static void
test_cidr(void)
{
	struct cidr c;
	const char *why = NULL;
	char buf[CIDR_STRLEN];
	uint8_t a[16];
	struct sockaddr_in sin = { .sin_family = AF_INET };

	CHECK_INT_EQ(cidr_parse("192.0.2.0/24", &c, &why), 0);
	CHECK_INT_EQ(c.plen, 120);
	CHECK_STR_EQ(cidr_str(&c, buf, sizeof(buf)), "192.0.2.0/24");
	CHECK_INT_EQ(cidr_parse("192.0.2.10", &c, &why), 0);
	CHECK_INT_EQ(c.plen, 128);
	CHECK_STR_EQ(cidr_str(&c, buf, sizeof(buf)), "192.0.2.10/32");
	CHECK_INT_EQ(cidr_parse("2001:db8::/48", &c, &why), 0);
	CHECK_INT_EQ(c.plen, 48);
	CHECK_STR_EQ(cidr_str(&c, buf, sizeof(buf)), "2001:db8::/48");
	CHECK_INT_EQ(cidr_parse("0.0.0.0/0", &c, &why), 0);
	CHECK_INT_EQ(c.plen, 96);
	CHECK_INT_EQ(cidr_parse("::/0", &c, &why), 0);
	CHECK_INT_EQ(c.plen, 0);

	CHECK_INT_EQ(cidr_parse("192.0.2.1/24", &c, &why), -1);
	CHECK_STR_EQ(why, "address has bits set beyond the prefix length");
	CHECK_INT_EQ(cidr_parse("192.0.2.0/33", &c, &why), -1);
	CHECK_INT_EQ(cidr_parse("2001:db8::/129", &c, &why), -1);
	CHECK_INT_EQ(cidr_parse("192.0.2.0/", &c, &why), -1);
	CHECK_INT_EQ(cidr_parse("192.0.2.0/2a", &c, &why), -1);
	CHECK_INT_EQ(cidr_parse("192.0.2.256", &c, &why), -1);
	CHECK_INT_EQ(cidr_parse("/24", &c, &why), -1);
	CHECK_INT_EQ(cidr_parse("192.0.2.0/0024", &c, &why), -1);

	/* An IPv4 client, seen directly or IPv4-mapped, matches IPv4 rules. */
	CHECK_INT_EQ(cidr_parse("192.0.2.0/24", &c, &why), 0);
	inet_pton(AF_INET, "192.0.2.77", &sin.sin_addr);
	CHECK_INT_EQ(addr_to_v6((struct sockaddr *)&sin, a), 0);
	CHECK(addr_is_v4mapped(a));
	CHECK(cidr_contains(&c, a));
	inet_pton(AF_INET6, "::ffff:192.0.2.9", a);
	CHECK(cidr_contains(&c, a));
	inet_pton(AF_INET6, "::ffff:192.0.3.9", a);
	CHECK(!cidr_contains(&c, a));
	CHECK_STR_EQ(addr_v6_str(a, buf, sizeof(buf)), "192.0.3.9");
	CHECK_INT_EQ(cidr_parse("2001:db8::/33", &c, &why), 0);
	inet_pton(AF_INET6, "2001:db8:7fff::1", a);
	CHECK(cidr_contains(&c, a));
	inet_pton(AF_INET6, "2001:db8:8000::1", a);
	CHECK(!cidr_contains(&c, a));

	/* This host's own addresses, which never go into kernel sets. */
	inet_pton(AF_INET6, "::ffff:127.3.2.1", a);
	CHECK(addr_is_local(a));
	inet_pton(AF_INET6, "::ffff:0.0.0.0", a);
	CHECK(addr_is_local(a));
	inet_pton(AF_INET6, "::1", a);
	CHECK(addr_is_local(a));
	inet_pton(AF_INET6, "::", a);
	CHECK(addr_is_local(a));
	inet_pton(AF_INET6, "::ffff:128.0.0.1", a);
	CHECK(!addr_is_local(a));
	inet_pton(AF_INET6, "::2", a);
	CHECK(!addr_is_local(a));
}

static void
test_duration(void)
{
	uint64_t ms = 0;
	const char *why = NULL;
	char buf[64];

	CHECK_INT_EQ(duration_parse("10s", &ms, &why), 0);
	CHECK_INT_EQ(ms, 10000);
	CHECK_INT_EQ(duration_parse("5m", &ms, &why), 0);
	CHECK_INT_EQ(ms, 300000);
	CHECK_INT_EQ(duration_parse("1h30m", &ms, &why), 0);
	CHECK_INT_EQ(ms, 5400000);
	CHECK_INT_EQ(duration_parse("7d", &ms, &why), 0);
	CHECK_INT_EQ(ms, 604800000);
	CHECK_INT_EQ(duration_parse("250ms", &ms, &why), 0);
	CHECK_INT_EQ(ms, 250);
	CHECK_INT_EQ(duration_parse("2w", &ms, &why), 0);
	CHECK_INT_EQ(ms, 1209600000);

	CHECK_INT_EQ(duration_parse("10", &ms, &why), -1);
	CHECK_INT_EQ(duration_parse("", &ms, &why), -1);
	CHECK_INT_EQ(duration_parse("s", &ms, &why), -1);
	CHECK_INT_EQ(duration_parse("10x", &ms, &why), -1);
	CHECK_INT_EQ(duration_parse("-5s", &ms, &why), -1);
	CHECK_INT_EQ(duration_parse("1 h", &ms, &why), -1);
	CHECK_INT_EQ(duration_parse("99999999999999999999d", &ms, &why), -1);
	CHECK_STR_EQ(why, "duration is too long");
	CHECK_INT_EQ(duration_parse("1d2h3m4s5ms", &ms, &why), 0);
	CHECK_INT_EQ(ms, 93784005);
	CHECK_INT_EQ(duration_parse("1m1m", &ms, &why), -1);
	CHECK_STR_EQ(why, "units go from the largest to the smallest, each "
	    "once, as in \"1h30m\"");
	CHECK_INT_EQ(duration_parse("30m1h", &ms, &why), -1);
	CHECK_INT_EQ(duration_parse("1s500ms", &ms, &why), 0);
	CHECK_INT_EQ(ms, 1500);

	CHECK_STR_EQ(duration_str(5400000, buf, sizeof(buf)), "1h30m");
	CHECK_STR_EQ(duration_str(0, buf, sizeof(buf)), "0s");
	CHECK_STR_EQ(duration_str(604800000, buf, sizeof(buf)), "7d");
	CHECK_STR_EQ(duration_str(1500, buf, sizeof(buf)), "1s500ms");
}

static void
test_country(void)
{
	CHECK(country_code_valid("DE"));
	CHECK(country_code_valid("AD"));
	CHECK(country_code_valid("ZW"));
	CHECK(country_code_valid("GB"));
	CHECK(!country_code_valid("UK"));
	CHECK(!country_code_valid("de"));
	CHECK(!country_code_valid("DEU"));
	CHECK(!country_code_valid(""));
	CHECK(!country_code_valid("ZZ"));
}

int
main(void)
{
	test_addr_port();
	test_cidr();
	test_duration();
	test_country();
	return check_report("test_addr");
}
