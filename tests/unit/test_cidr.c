/* test_cidr.c - unit tests for the CIDR sets of policy/cidr.c. */
#include <stdlib.h>
#include <string.h>

#include "addr.h"
#include "check.h"
#include "cidr.h"

/* Builds a set from a NULL-terminated list of CIDR strings. */
static struct cidr_set *
set_of(const char *const *list)
{
	struct cidr v[64];
	size_t n = 0;
	const char *why;

	for (; list[n] != NULL; n++) {
		if (cidr_parse(list[n], &v[n], &why) == -1) {
			fprintf(stderr, "bad test cidr %s: %s\n", list[n], why);
			abort();
		}
	}
	return cidr_set_new(v, n);
}

static bool
has(const struct cidr_set *s, const char *ip)
{
	struct cidr c;
	const char *why;

	if (cidr_parse(ip, &c, &why) == -1 || c.plen != 128) {
		fprintf(stderr, "bad test address %s\n", ip);
		abort();
	}
	return cidr_set_lookup(s, c.addr);
}

static void
test_empty(void)
{
	struct cidr_set *s = cidr_set_new(NULL, 0);

	CHECK(s != NULL);
	CHECK(!has(s, "192.0.2.1"));
	CHECK(!has(s, "::"));
	CHECK(!has(s, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"));
	CHECK_INT_EQ(cidr_set_ranges(s), 0);
	cidr_set_free(s);
	CHECK(!has(NULL, "192.0.2.1"));
}

static void
test_ipv4(void)
{
	static const char *const l[] = { "192.0.2.0/24", "198.51.100.7",
	    "10.0.0.0/8", NULL };
	struct cidr_set *s = set_of(l);

	CHECK(has(s, "192.0.2.0"));
	CHECK(has(s, "192.0.2.255"));
	CHECK(!has(s, "192.0.1.255"));
	CHECK(!has(s, "192.0.3.0"));
	CHECK(has(s, "198.51.100.7"));		/* a /32 */
	CHECK(!has(s, "198.51.100.6"));
	CHECK(!has(s, "198.51.100.8"));
	CHECK(has(s, "10.255.255.255"));
	CHECK(!has(s, "11.0.0.0"));
	CHECK(!has(s, "9.255.255.255"));
	/* IPv4-mapped IPv6 is IPv4. */
	CHECK(has(s, "::ffff:192.0.2.77"));
	CHECK(!has(s, "::ffff:192.0.3.1"));
	/* An IPv4-compatible (::a.b.c.d) or NAT64 address is not. */
	CHECK(!has(s, "::192.0.2.1"));
	CHECK(!has(s, "64:ff9b::192.0.2.1"));
	cidr_set_free(s);
}

static void
test_ipv6(void)
{
	static const char *const l[] = { "2001:db8::/48", "2001:db8:ffff::1",
	    "fe80::/10", NULL };
	struct cidr_set *s = set_of(l);

	CHECK(has(s, "2001:db8::"));
	CHECK(has(s, "2001:db8:0:ffff:ffff:ffff:ffff:ffff"));
	CHECK(!has(s, "2001:db8:1::"));
	CHECK(!has(s, "2001:db7:ffff:ffff:ffff:ffff:ffff:ffff"));
	CHECK(has(s, "2001:db8:ffff::1"));	/* a /128 */
	CHECK(!has(s, "2001:db8:ffff::2"));
	CHECK(!has(s, "2001:db8:ffff::"));
	CHECK(has(s, "febf:ffff::1"));
	CHECK(!has(s, "fec0::"));
	/* IPv6 rules never match IPv4 clients. */
	CHECK(!has(s, "192.0.2.1"));
	cidr_set_free(s);
}

static void
test_overlap(void)
{
	/* Nested, overlapping, duplicate and adjacent prefixes. */
	static const char *const l[] = { "10.0.0.0/8", "10.1.0.0/16",
	    "10.1.2.3", "10.0.0.0/8", "11.0.0.0/8", "192.0.2.128/25",
	    "192.0.2.0/25", "2001:db8::/32", "2001:db8:5::/48",
	    "2001:db9::/32", NULL };
	struct cidr_set *s = set_of(l);

	CHECK(has(s, "10.1.2.3"));
	CHECK(has(s, "10.200.0.1"));
	CHECK(has(s, "11.255.255.255"));
	CHECK(!has(s, "12.0.0.0"));
	CHECK(has(s, "192.0.2.0"));
	CHECK(has(s, "192.0.2.127"));
	CHECK(has(s, "192.0.2.128"));
	CHECK(has(s, "192.0.2.255"));
	CHECK(!has(s, "192.0.3.0"));
	CHECK(has(s, "2001:db8:5::1"));
	CHECK(has(s, "2001:db9:ffff::1"));
	CHECK(!has(s, "2001:dba::"));
	/* 10/8+11/8 merge, the two /25s merge, the /32s merge. */
	CHECK_INT_EQ(cidr_set_ranges(s), 3);
	cidr_set_free(s);
}

static void
test_zero(void)
{
	static const char *const all4[] = { "0.0.0.0/0", NULL };
	static const char *const all6[] = { "::/0", NULL };
	static const char *const some6[] = { "::/64", NULL };
	static const char *const v4m[] = { "::ffff:0.0.0.0/96", NULL };
	struct cidr_set *s;

	s = set_of(all4);
	CHECK(has(s, "0.0.0.0"));
	CHECK(has(s, "255.255.255.255"));
	CHECK(has(s, "::ffff:1.2.3.4"));
	CHECK(!has(s, "::1"));
	CHECK(!has(s, "2001:db8::1"));
	cidr_set_free(s);

	s = set_of(all6);
	CHECK(has(s, "::"));
	CHECK(has(s, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"));
	CHECK(has(s, "1.2.3.4"));		/* ::/0 holds IPv4 too */
	CHECK(has(s, "255.255.255.255"));
	cidr_set_free(s);

	/* ::/64 covers ::ffff:0:0/96, hence all of IPv4. */
	s = set_of(some6);
	CHECK(has(s, "::1"));
	CHECK(has(s, "8.8.8.8"));
	CHECK(!has(s, "0:0:0:1::"));
	cidr_set_free(s);

	s = set_of(v4m);
	CHECK(has(s, "8.8.8.8"));
	CHECK(!has(s, "::1"));
	cidr_set_free(s);
}

static void
test_edges(void)
{
	static const char *const l[] = { "0.0.0.0/32", "255.255.255.255/32",
	    "::/128", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128",
	    "128.0.0.0/1", NULL };
	struct cidr_set *s = set_of(l);

	CHECK(has(s, "0.0.0.0"));
	CHECK(!has(s, "0.0.0.1"));
	CHECK(has(s, "255.255.255.255"));
	CHECK(has(s, "128.0.0.0"));
	CHECK(!has(s, "127.255.255.255"));
	CHECK(has(s, "::"));
	CHECK(!has(s, "::1"));
	CHECK(has(s, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"));
	CHECK(!has(s, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe"));
	cidr_set_free(s);
}

/* Host bits below the prefix length are ignored, not trusted. */
static void
test_host_bits(void)
{
	struct cidr c = { .plen = 120 };
	struct cidr_set *s;
	uint8_t a[16] = { [10] = 0xff, [11] = 0xff, 192, 0, 2, 99 };

	memcpy(c.addr, a, 16);
	c.addr[15] = 200;
	s = cidr_set_new(&c, 1);
	CHECK(cidr_set_lookup(s, a));
	cidr_set_free(s);
}

/* A large random set against a linear scan, with and without the index.
 * The scan makes each query cost N checks: 4,000 queries keep the test
 * within seconds in the -O0 ThreadSanitizer build, which took 40 s over
 * 20,000. */
static void
test_random(void)
{
	enum { N = 20000, Q = 4000 };
	struct cidr *v = calloc(N, sizeof(*v));
	struct cidr_set *s;
	unsigned seed = 12345;
	int bad = 0;

	for (int i = 0; i < N; i++) {
		bool v4 = (rand_r(&seed) & 1) != 0;

		for (int k = 0; k < 16; k++)
			v[i].addr[k] = (uint8_t)rand_r(&seed);
		if (v4) {
			memset(v[i].addr, 0, 10);
			v[i].addr[10] = v[i].addr[11] = 0xff;
			v[i].plen = (uint8_t)(96 + 8 + rand_r(&seed) % 25);
		} else {
			v[i].addr[0] = 0x20;	/* crowd them together */
			v[i].plen = (uint8_t)(16 + rand_r(&seed) % 113);
		}
	}
	s = cidr_set_new(v, N);
	CHECK(s != NULL);
	for (int q = 0; q < Q; q++) {
		uint8_t a[16];
		bool want = false;

		/* Half near a prefix, half anywhere. */
		if (q % 2 == 0)
			memcpy(a, v[rand_r(&seed) % N].addr, 16);
		else {
			for (int k = 0; k < 16; k++)
				a[k] = (uint8_t)rand_r(&seed);
			if (q % 4 == 1) {
				memset(a, 0, 10);
				a[10] = a[11] = 0xff;
			} else
				a[0] = 0x20;
		}
		a[15] ^= (uint8_t)(rand_r(&seed) & 3);
		for (int i = 0; i < N && !want; i++)
			want = cidr_contains(&v[i], a);
		if (cidr_set_lookup(s, a) != want)
			bad++;
	}
	CHECK_INT_EQ(bad, 0);
	cidr_set_free(s);
	free(v);
}

static bool
covers(const struct cidr_set *s, const char *prefix)
{
	struct cidr c;
	const char *why;

	if (cidr_parse(prefix, &c, &why) == -1) {
		fprintf(stderr, "bad test cidr %s: %s\n", prefix, why);
		abort();
	}
	return cidr_set_covers(s, &c);
}

/* Whole prefixes inside a set, as the deny-inside-allow warning asks. */
static void
test_covers(void)
{
	static const char *const l[] = { "10.0.0.0/9", "10.128.0.0/9",
	    "192.0.2.0/25", "2001:db8::/33", "2001:db8:8000::/33",
	    "fe80::/10", NULL };
	static const char *const all[] = { "::/0", NULL };
	struct cidr_set *s = set_of(l), *a = set_of(all);

	/* Two touching halves merge, so the whole /8 is covered. */
	CHECK(covers(s, "10.0.0.0/8"));
	CHECK(covers(s, "10.200.1.0/24"));
	CHECK(covers(s, "10.255.255.255"));
	CHECK(!covers(s, "10.0.0.0/7"));
	CHECK(!covers(s, "11.0.0.0/8"));
	CHECK(covers(s, "192.0.2.0/25"));
	CHECK(covers(s, "192.0.2.127"));
	CHECK(!covers(s, "192.0.2.0/24"));
	CHECK(!covers(s, "192.0.2.128"));
	CHECK(!covers(s, "0.0.0.0/0"));
	CHECK(covers(s, "2001:db8::/32"));
	CHECK(covers(s, "2001:db8:ffff::/48"));
	CHECK(!covers(s, "2001:db8::/31"));
	CHECK(covers(s, "fe80::1"));
	CHECK(!covers(s, "fec0::/10"));
	CHECK(!covers(s, "::/0"));
	/* ::/0 is entered for IPv4 too. */
	CHECK(covers(a, "0.0.0.0/0"));
	CHECK(covers(a, "::/0"));
	CHECK(covers(a, "203.0.113.9"));
	CHECK(!covers(NULL, "203.0.113.9"));
	cidr_set_free(s);
	cidr_set_free(a);
}

int
main(void)
{
	test_empty();
	test_ipv4();
	test_ipv6();
	test_overlap();
	test_zero();
	test_edges();
	test_host_bits();
	test_random();
	test_covers();
	return check_report("cidr");
}
