/* bench_policy.c - speed and memory of the policy engine's data structures.
 *
 * Not a test: it prints figures and always exits 0. Run it from an
 * optimised build (meson's default buildtype here is debugoptimized; for
 * release figures set up a build with -Dbuildtype=release), without the
 * sanitizers:
 *
 *   meson setup /tmp/build-rel -Dbuildtype=release
 *   ninja -C /tmp/build-rel tests/bench/bench_policy
 *   /tmp/build-rel/tests/bench/bench_policy [PREFIXES]
 *
 * It prints: the CIDR set's build time for PREFIXES (default 1,000,000)
 * random prefixes (80% IPv4 /20../32, 20% IPv6 /32../128), lookups per second, sliding-window
 * updates per second over 100,000 addresses, bytes per tracked address
 * (from mallinfo2(), i.e. what malloc really handed out, and from the
 * table's own accounting), ban lookups per second and whole
 * policy_admit calls per second with the 1M-prefix deny list loaded,
 * new bans per second into a full ban table, and how long saving that
 * table holds the policy lock.
 */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ban.h"
#include "cidr.h"
#include "config.h"
#include "policy.h"
#include "state.h"
#include "window.h"

static volatile uint64_t sink;

static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* xorshift64*: fast, and the same sequence every run. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint64_t
rng(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545f4914f6cdd1dULL;
}

static void
random_v4(uint8_t a[16])
{
	uint32_t v = (uint32_t)rng();

	memset(a, 0, 10);
	a[10] = a[11] = 0xff;
	memcpy(a + 12, &v, 4);
}

static void
random_v6(uint8_t a[16])
{
	uint64_t x = rng(), y = rng();

	memcpy(a, &x, 8);
	memcpy(a + 8, &y, 8);
	a[0] = (uint8_t)(0x20 | (a[0] & 0x0f));	/* 2000::/4 */
}

static void
random_prefix(struct cidr *c)
{
	if (rng() % 5 != 0) {
		random_v4(c->addr);
		/* /20../32, like a blocklist: mostly small networks. */
		c->plen = (uint8_t)(96 + 20 + rng() % 13);
	} else {
		random_v6(c->addr);
		c->plen = (uint8_t)(32 + rng() % 97);	/* /32../128 */
	}
	/* Clear the host bits, as the loader would have. */
	for (int i = c->plen; i < 128; i++)
		c->addr[i / 8] &= (uint8_t)~(0x80 >> (i % 8));
}

static size_t
heap_used(void)
{
	struct mallinfo2 mi = mallinfo2();

	return mi.uordblks + mi.hblkhd;
}

static struct cidr *bench_prefixes;
static size_t bench_n;

static struct cidr_set *
bench_cidr(size_t n)
{
	enum { Q = 10000000 };
	struct cidr_set *s;
	uint8_t (*q)[16];
	double t0, t1;
	size_t h0, hits = 0;

	bench_prefixes = malloc(n * sizeof(*bench_prefixes));
	bench_n = n;
	for (size_t i = 0; i < n; i++)
		random_prefix(&bench_prefixes[i]);
	h0 = heap_used();
	t0 = now_s();
	s = cidr_set_new(bench_prefixes, n);
	t1 = now_s();
	printf("cidr: built %zu prefixes in %.3f s (%zu ranges after "
	    "merging, %.1f MB; malloc says %.1f MB)\n", n, t1 - t0,
	    cidr_set_ranges(s), (double)cidr_set_bytes(s) / 1e6,
	    (double)(heap_used() - h0) / 1e6);

	/* Queries made in advance so rng() is not measured. Half are
	 * addresses inside a listed prefix. */
	q = malloc(Q * sizeof(*q));
	for (size_t i = 0; i < Q; i++) {
		if (i % 2 == 0)
			memcpy(q[i], bench_prefixes[rng() % n].addr, 16);
		else if (rng() % 5 != 0)
			random_v4(q[i]);
		else
			random_v6(q[i]);
	}
	t0 = now_s();
	for (size_t i = 0; i < Q; i++)
		hits += cidr_set_lookup(s, q[i]);
	t1 = now_s();
	sink += hits;
	printf("cidr: %.1f M lookups/s (%.0f ns each; %zu of %d hit)\n",
	    Q / (t1 - t0) / 1e6, (t1 - t0) / Q * 1e9, hits, Q);
	free(q);
	return s;
}

static void
bench_window(void)
{
	enum { ADDRS = 100000, OPS = 10000000 };
	struct window_params wp = {
		.conn_limit = 30, .conn_window_ms = 60000,
		.auth_limit = 5, .auth_window_ms = 600000,
		.conc_limit = 20, .aggregate_v4 = 32, .aggregate_v6 = 128,
		.max_entries = ADDRS,
	};
	struct window_table *t;
	uint8_t (*a)[16] = malloc(ADDRS * sizeof(*a));
	size_t h0, h1;
	double t0, t1;
	uint32_t c, o, g;
	uint64_t now = 1;

	for (size_t i = 0; i < ADDRS; i++)
		random_v4(a[i]);
	h0 = heap_used();
	t = window_table_new(&wp);
	for (size_t i = 0; i < ADDRS; i++) {
		window_admit(t, a[i], now, &c, &o, &g);
		window_close(t, a[i], g);
	}
	h1 = heap_used();
	printf("window: %zu addresses tracked: %.1f bytes each by malloc, "
	    "%.1f by the table's accounting (entry %zu + buckets)\n",
	    window_entries(t), (double)(h1 - h0) / (double)window_entries(t),
	    (double)window_bytes(t) / (double)window_entries(t),
	    window_entry_bytes());

	/* Steady state: random addresses, time advancing 1 ms per 1000. */
	t0 = now_s();
	for (size_t i = 0; i < OPS; i++) {
		size_t k = rng() % ADDRS;

		if (i % 1000 == 0)
			now++;
		if (window_admit(t, a[k], now, &c, &o, &g) == WINDOW_OK)
			window_close(t, a[k], g);
	}
	t1 = now_s();
	printf("window: %.1f M connection updates/s (admit + close; %.0f ns "
	    "each)\n", OPS / (t1 - t0) / 1e6, (t1 - t0) / OPS * 1e9);
	t0 = now_s();
	for (size_t i = 0; i < OPS; i++)
		sink += window_fail(t, a[rng() % ADDRS], now);
	t1 = now_s();
	printf("window: %.1f M failure updates/s\n", OPS / (t1 - t0) / 1e6);

	/* Churn: ten times more addresses than the cap, each new. */
	t0 = now_s();
	for (size_t i = 0; i < OPS / 10; i++) {
		uint8_t x[16];

		random_v6(x);
		window_admit(t, x, now, &c, &o, &g);
		window_close(t, x, g);
	}
	t1 = now_s();
	printf("window: %.1f M new addresses/s with eviction at the cap "
	    "(%zu tracked)\n", OPS / 10 / (t1 - t0) / 1e6, window_entries(t));
	window_table_free(t);
	free(a);
}

static void
bench_policy(void)
{
	enum { ADDRS = 100000, OPS = 5000000 };
	struct config cfg;
	struct policy_result r;
	struct policy *p;
	uint8_t (*a)[16] = malloc(ADDRS * sizeof(*a));
	double t0, t1;
	size_t rejects = 0;
	char *err;

	memset(&cfg, 0, sizeof(cfg));
	cfg.policy.deny.v = bench_prefixes;
	cfg.policy.deny.n = bench_n;
	cfg.policy.rate.connections.limit = 30;
	cfg.policy.rate.connections.window_ms = 60000;
	cfg.policy.rate.concurrent_per_ip = 20;
	cfg.policy.rate.auth_failures.limit = 5;
	cfg.policy.rate.auth_failures.window_ms = 600000;
	cfg.ban.duration_ms = 3600000;
	cfg.ban.escalation = 2.0;
	cfg.ban.max_duration_ms = 7 * 24 * 3600000ULL;
	cfg.policy.rate.aggregate_ipv4 = 32;
	cfg.policy.rate.aggregate_ipv6 = 128;
	p = policy_new(&cfg, NULL, &err);
	if (p == NULL) {
		printf("policy: %s\n", err);
		free(err);
		return;
	}
	for (size_t i = 0; i < ADDRS; i++)
		random_v4(a[i]);
	/* Ban a tenth of them. */
	for (size_t i = 0; i < ADDRS; i += 10) {
		const char *why;

		policy_ban(p, a[i], 0, 1, &r, &why);
	}
	t0 = now_s();
	for (size_t i = 0; i < OPS; i++) {
		size_t k = rng() % ADDRS;

		if (policy_admit(p, a[k], 2 + i / 1000, &r) == POLICY_ALLOW)
			policy_release(p, a[k], r.tag);
		else
			rejects++;
	}
	t1 = now_s();
	printf("policy: %.1f M admit(+release)/s with %zu deny prefixes and "
	    "%d bans (%.0f ns each; %zu rejected)\n", OPS / (t1 - t0) / 1e6,
	    bench_n, ADDRS / 10, (t1 - t0) / OPS * 1e9, rejects);
	t0 = now_s();
	for (size_t i = 0; i < OPS; i++)
		sink += policy_admit(p, a[(rng() % (ADDRS / 10)) * 10], 3, &r);
	t1 = now_s();
	printf("policy: %.1f M rejects/s of banned addresses (%.0f ns "
	    "each)\n", OPS / (t1 - t0) / 1e6, (t1 - t0) / OPS * 1e9);
	policy_free(p);
	free(a);
}

/*
 * A flood of new addresses (one /64, aggregated) fills the ban table;
 * every further ban then has to make room, under the lock every accept
 * takes. And the state file of such a table: what the lock holds (a copy)
 * against rendering it.
 */
static void
bench_ban_full(void)
{
	struct ban_params bp = { 3600000, 2.0, 7 * 24 * 3600000ULL, 0, 0 };
	struct ban_table *t = ban_table_new(&bp), *c;
	struct ban_info b;
	uint8_t a[16] = { 0x20, 0x01, 0x0d, 0xb8 };
	double t0, t1, t2;
	size_t len;
	char *text;
	uint32_t i;

	if (t == NULL)
		return;
	for (i = 0; i < BAN_DEFAULT_MAX_ENTRIES; i++) {
		memcpy(a + 12, &i, sizeof(i));
		ban_add(t, a, BAN_RATE, 0, 1000, &b);
	}
	t0 = now_s();
	for (i = 0; i < 100000; i++) {
		uint32_t k = BAN_DEFAULT_MAX_ENTRIES + i;

		memcpy(a + 12, &k, sizeof(k));
		ban_add(t, a, BAN_RATE, 0, 2000, &b);
	}
	t1 = now_s();
	printf("ban: %.2f M new bans/s into a full table of %zu live records "
	    "(%.2f us each)\n", 100000 / (t1 - t0) / 1e6, ban_entries(t),
	    (t1 - t0) / 100000 * 1e6);
	t0 = now_s();
	c = ban_table_copy(t);
	t1 = now_s();
	text = c != NULL ? state_format(c, 3000, 1767225600000ULL, &len) :
	    NULL;
	t2 = now_s();
	if (text != NULL)
		printf("state: saving %zu records holds the policy lock %.1f ms "
		    "(a copy); rendering %zu bytes outside it takes %.0f ms\n",
		    ban_entries(t), (t1 - t0) * 1e3, len, (t2 - t1) * 1e3);
	free(text);
	ban_table_free(c);
	ban_table_free(t);
}

int
main(int argc, char **argv)
{
	size_t n = argc > 1 ? strtoul(argv[1], NULL, 10) : 1000000;
	struct cidr_set *s;

	s = bench_cidr(n);
	bench_window();
	bench_policy();
	bench_ban_full();
	cidr_set_free(s);
	free(bench_prefixes);
	return 0;
}
