/* test_window.c - unit tests for the sliding windows of policy/window.c. */
#include <stdlib.h>
#include <string.h>

#include "addr.h"
#include "check.h"
#include "window.h"

static const uint8_t *
ip(const char *s)
{
	static uint8_t bufs[8][16];
	static int k;
	struct cidr c;
	const char *why;

	if (cidr_parse(s, &c, &why) == -1 || c.plen != 128)
		abort();
	k = (k + 1) % 8;
	memcpy(bufs[k], c.addr, 16);
	return bufs[k];
}

static struct window_table *
table(uint32_t limit, uint64_t window_ms)
{
	struct window_params wp = {
		.conn_limit = limit, .conn_window_ms = window_ms,
		.auth_limit = limit, .auth_window_ms = window_ms,
		.aggregate_v4 = 32, .aggregate_v6 = 128,
	};

	return window_table_new(&wp);
}

/* Admits and closes at once: only the rate counts. */
static enum window_verdict
conn(struct window_table *t, const char *a, uint64_t now)
{
	uint32_t count, open, tag;
	enum window_verdict v = window_admit(t, ip(a), now, &count, &open,
	    &tag);

	if (v == WINDOW_OK)
		window_close(t, ip(a), tag);
	return v;
}

static void
test_exact_limit(void)
{
	struct window_table *t = table(5, 10000);
	uint32_t count, open, g;

	for (int i = 0; i < 5; i++)
		CHECK_INT_EQ(conn(t, "192.0.2.1", 1000 + (uint64_t)i), WINDOW_OK);
	/* The 6th within the window: just past the limit. */
	CHECK_INT_EQ(window_admit(t, ip("192.0.2.1"), 1005, &count, &open, &g),
	    WINDOW_RATE);
	CHECK_INT_EQ(count, 5);
	/* Rejected attempts do not count. */
	CHECK_INT_EQ(window_conn_count(t, ip("192.0.2.1"), 1005), 5);
	/* Another address is not affected. */
	CHECK_INT_EQ(conn(t, "192.0.2.2", 1005), WINDOW_OK);
	CHECK_INT_EQ(conn(t, "2001:db8::1", 1005), WINDOW_OK);
	window_table_free(t);
}

static void
test_boundary(void)
{
	/* W = 10 s: slots of ceil(10000 / 7) = 1429 ms, forgotten after
	 * 8 slots, i.e. at most W + W/7 + 8 ms. */
	struct window_table *t = table(5, 10000);

	for (int i = 0; i < 5; i++)
		CHECK_INT_EQ(conn(t, "192.0.2.1", 0), WINDOW_OK);
	CHECK_INT_EQ(conn(t, "192.0.2.1", 9999), WINDOW_RATE);
	/* Where a fixed 10 s bucket would start afresh: still full. */
	CHECK_INT_EQ(conn(t, "192.0.2.1", 10000), WINDOW_RATE);
	CHECK_INT_EQ(conn(t, "192.0.2.1", 11431), WINDOW_RATE);
	CHECK_INT_EQ(window_conn_count(t, ip("192.0.2.1"), 11431), 5);
	CHECK_INT_EQ(window_conn_count(t, ip("192.0.2.1"), 10000 + 10000 / 7 + 8),
	    0);
	CHECK_INT_EQ(conn(t, "192.0.2.1", 11432), WINDOW_OK);
	window_table_free(t);

	/* Events at the end of one fixed bucket and the start of the next
	 * (the classic 2 x limit burst) are held to the limit. */
	t = table(5, 10000);
	for (int i = 0; i < 5; i++)
		CHECK_INT_EQ(conn(t, "192.0.2.9", 9990), WINDOW_OK);
	for (int i = 0; i < 5; i++)
		CHECK_INT_EQ(conn(t, "192.0.2.9", 10010), WINDOW_RATE);
	window_table_free(t);
}

/*
 * Property: for a random stream of attempts, (a) no interval of length W
 * holds more than limit admitted events, and (b) an attempt is rejected
 * only when the last 8 slots (< W + W/7 + 8 ms) held limit admitted events.
 */
static void
test_random_stream(void)
{
	enum { N = 20000 };
	const uint32_t limit = 7;
	const uint64_t w = 3000, s = (w + 6) / 7, horizon = 8 * s;
	struct window_table *t = table(limit, w);
	uint64_t *ok = malloc(N * sizeof(*ok)), now = 0;
	size_t nok = 0, lo_w = 0, lo_h = 0;
	unsigned seed = 7;
	int over = 0, false_reject = 0;

	for (int i = 0; i < N; i++) {
		now += (uint64_t)(rand_r(&seed) % 700);
		while (lo_w < nok && ok[lo_w] + w <= now)
			lo_w++;
		while (lo_h < nok && ok[lo_h] + horizon <= now)
			lo_h++;
		if (conn(t, "198.51.100.1", now) == WINDOW_OK) {
			ok[nok++] = now;
			if (nok - lo_w > limit)
				over++;
		} else if (nok - lo_h < limit)
			false_reject++;
	}
	CHECK_INT_EQ(over, 0);
	CHECK_INT_EQ(false_reject, 0);
	CHECK(nok > N / 10);
	free(ok);
	window_table_free(t);
}

static void
test_fail_window(void)
{
	struct window_table *t = table(5, 600000);

	for (uint32_t i = 1; i <= 6; i++)
		CHECK_INT_EQ(window_fail(t, ip("203.0.113.5"), i * 1000), i);
	CHECK_INT_EQ(window_fail_count(t, ip("203.0.113.5"), 7000), 6);
	/* Still all there a window after the first (never early)... */
	CHECK_INT_EQ(window_fail_count(t, ip("203.0.113.5"), 1000 + 600000),
	    6);
	/* ...and all gone W + W/7 + 8 ms after the last. */
	CHECK_INT_EQ(window_fail_count(t, ip("203.0.113.5"),
	    6000 + 600000 + 600000 / 7 + 8), 0);
	/* Failures do not touch the connection window. */
	CHECK_INT_EQ(window_conn_count(t, ip("203.0.113.5"), 7000), 0);
	window_table_free(t);
}

static void
test_concurrency(void)
{
	struct window_params wp = { .conc_limit = 2, .aggregate_v4 = 32,
	    .aggregate_v6 = 128 };
	struct window_table *t = window_table_new(&wp);
	uint32_t c, o, g1, g2, g3, g;

	CHECK_INT_EQ(window_admit(t, ip("192.0.2.1"), 0, &c, &o, &g1),
	    WINDOW_OK);
	CHECK_INT_EQ(o, 1);
	CHECK(g1 != 0);
	CHECK_INT_EQ(window_admit(t, ip("192.0.2.1"), 1, &c, &o, &g2),
	    WINDOW_OK);
	CHECK_INT_EQ(g2, g1);
	CHECK_INT_EQ(window_admit(t, ip("192.0.2.1"), 2, &c, &o, &g),
	    WINDOW_CONCURRENCY);
	CHECK_INT_EQ(o, 2);
	CHECK_INT_EQ(g, 0);
	CHECK_INT_EQ(window_admit(t, ip("192.0.2.2"), 2, &c, &o, &g),
	    WINDOW_OK);
	CHECK(g != g1);
	window_close(t, ip("192.0.2.1"), g1);
	CHECK_INT_EQ(window_open_count(t, ip("192.0.2.1")), 1);
	CHECK_INT_EQ(window_admit(t, ip("192.0.2.1"), 3, &c, &o, &g3),
	    WINDOW_OK);
	window_close(t, ip("192.0.2.1"), g);	/* another key's tag */
	window_close(t, ip("192.0.2.1"), 0);	/* nothing was counted */
	CHECK_INT_EQ(window_open_count(t, ip("192.0.2.1")), 2);
	window_close(t, ip("192.0.2.1"), g2);
	window_close(t, ip("192.0.2.1"), g3);
	window_close(t, ip("192.0.2.1"), g3);	/* one too many: stays 0 */
	window_close(t, ip("192.0.2.77"), g1);	/* unknown: ignored */
	CHECK_INT_EQ(window_open_count(t, ip("192.0.2.1")), 0);
	window_table_free(t);

	/* Attempts refused for concurrency are new connections all the
	 * same: holding its sessions, a client that keeps connecting fills
	 * its connection window (and policy bans it), as any other. */
	wp.conn_limit = 5;
	wp.conn_window_ms = 60000;
	t = window_table_new(&wp);
	CHECK_INT_EQ(window_admit(t, ip("192.0.2.1"), 0, &c, &o, &g1),
	    WINDOW_OK);
	CHECK_INT_EQ(window_admit(t, ip("192.0.2.1"), 0, &c, &o, &g2),
	    WINDOW_OK);
	for (int i = 3; i <= 5; i++) {
		CHECK_INT_EQ(window_admit(t, ip("192.0.2.1"), 1, &c, &o, &g),
		    WINDOW_CONCURRENCY);
		CHECK_INT_EQ(c, (uint32_t)i);
		CHECK_INT_EQ(g, 0);
	}
	CHECK_INT_EQ(window_admit(t, ip("192.0.2.1"), 2, &c, &o, &g),
	    WINDOW_RATE);
	CHECK_INT_EQ(c, 5);
	CHECK_INT_EQ(window_open_count(t, ip("192.0.2.1")), 2);
	window_table_free(t);
}

/*
 * A session whose entry was dropped releases nothing, not even once its
 * key has a new entry: the new entry's sessions are others', and taking
 * one of them off would let the address past concurrent_per_ip.
 */
static void
test_release_after_drop(void)
{
	struct window_params wp = { .conc_limit = 2, .aggregate_v4 = 32,
	    .aggregate_v6 = 128, .max_entries = 1000 };
	struct window_table *t = window_table_new(&wp);
	uint32_t c, o, old1, old2, g;
	char a[32];

	/* The address of the held sessions is the oldest of 1,101. */
	CHECK_INT_EQ(window_admit(t, ip("192.0.2.1"), 0, &c, &o, &old1),
	    WINDOW_OK);
	CHECK_INT_EQ(window_admit(t, ip("192.0.2.1"), 0, &c, &o, &old2),
	    WINDOW_OK);
	for (int i = 0; i < 999; i++) {
		snprintf(a, sizeof(a), "198.51.%d.%d", i / 250, i % 250);
		CHECK_INT_EQ(conn(t, a, 1), WINDOW_OK);
	}
	/* A smaller table keeps the address with sessions, though it is
	 * the least recently seen. */
	wp.max_entries = 10;
	window_table_reconfigure(t, &wp, 2);
	CHECK_INT_EQ(window_entries(t), 10);
	CHECK_INT_EQ(window_open_count(t, ip("192.0.2.1")), 2);
	CHECK_INT_EQ(window_admit(t, ip("192.0.2.1"), 2, &c, &o, &g),
	    WINDOW_CONCURRENCY);
	window_table_free(t);

	/* A new aggregation drops every entry; sessions counted before it
	 * no longer count and their ends change nothing after it. */
	wp.max_entries = 1000;
	t = window_table_new(&wp);
	CHECK_INT_EQ(window_admit(t, ip("192.0.2.1"), 0, &c, &o, &old1),
	    WINDOW_OK);
	CHECK_INT_EQ(window_admit(t, ip("192.0.2.1"), 0, &c, &o, &old2),
	    WINDOW_OK);
	wp.aggregate_v4 = 31;
	window_table_reconfigure(t, &wp, 1);
	CHECK_INT_EQ(window_admit(t, ip("192.0.2.1"), 1, &c, &o, &g),
	    WINDOW_OK);
	CHECK_INT_EQ(window_admit(t, ip("192.0.2.0"), 1, &c, &o, &g),
	    WINDOW_OK);
	CHECK_INT_EQ(window_admit(t, ip("192.0.2.1"), 1, &c, &o, &g),
	    WINDOW_CONCURRENCY);
	window_close(t, ip("192.0.2.1"), old1);
	window_close(t, ip("192.0.2.1"), old2);
	CHECK_INT_EQ(window_open_count(t, ip("192.0.2.1")), 2);
	CHECK_INT_EQ(window_admit(t, ip("192.0.2.1"), 1, &c, &o, &g),
	    WINDOW_CONCURRENCY);
	window_table_free(t);

	/* Evicted with its sessions (all of the oldest hold one), then
	 * seen again: the old sessions' ends leave the new count alone. */
	wp.aggregate_v4 = 32;
	wp.max_entries = 2;
	t = window_table_new(&wp);
	CHECK_INT_EQ(window_admit(t, ip("192.0.2.1"), 0, &c, &o, &old1),
	    WINDOW_OK);
	CHECK_INT_EQ(window_admit(t, ip("192.0.2.2"), 0, &c, &o, &g),
	    WINDOW_OK);
	CHECK_INT_EQ(window_admit(t, ip("192.0.2.3"), 0, &c, &o, &g),
	    WINDOW_OK);	/* .1 goes */
	CHECK_INT_EQ(window_admit(t, ip("192.0.2.1"), 0, &c, &o, &g),
	    WINDOW_OK);	/* .2 goes; .1 anew */
	CHECK(g != old1);
	window_close(t, ip("192.0.2.1"), old1);
	CHECK_INT_EQ(window_open_count(t, ip("192.0.2.1")), 1);
	window_close(t, ip("192.0.2.1"), g);
	CHECK_INT_EQ(window_open_count(t, ip("192.0.2.1")), 0);
	window_table_free(t);
}

static void
test_eviction(void)
{
	struct window_params wp = { .conn_limit = 10,
	    .conn_window_ms = 60000, .aggregate_v4 = 32, .aggregate_v6 = 128,
	    .max_entries = 4 };
	struct window_table *t = window_table_new(&wp);
	uint32_t c, o, g;
	char a[32];

	for (int i = 1; i <= 4; i++) {
		snprintf(a, sizeof(a), "192.0.2.%d", i);
		CHECK_INT_EQ(conn(t, a, (uint64_t)i), WINDOW_OK);
	}
	CHECK_INT_EQ(window_entries(t), 4);
	/* .1 is seen again: .2 becomes the least recently seen. */
	CHECK_INT_EQ(conn(t, "192.0.2.1", 5), WINDOW_OK);
	CHECK_INT_EQ(conn(t, "192.0.2.5", 6), WINDOW_OK);
	CHECK_INT_EQ(window_entries(t), 4);
	CHECK_INT_EQ(window_conn_count(t, ip("192.0.2.2"), 7), 0);
	CHECK_INT_EQ(window_conn_count(t, ip("192.0.2.1"), 7), 2);
	CHECK_INT_EQ(window_conn_count(t, ip("192.0.2.3"), 7), 1);
	CHECK_INT_EQ(window_conn_count(t, ip("192.0.2.5"), 7), 1);

	/* A key with an open session is passed over: .3 is oldest but
	 * holds a session, so .4 goes. */
	CHECK_INT_EQ(window_admit(t, ip("192.0.2.3"), 8, &c, &o, &g), WINDOW_OK);
	CHECK_INT_EQ(conn(t, "192.0.2.4", 8), WINDOW_OK);	/* .4 newest */
	CHECK_INT_EQ(conn(t, "192.0.2.1", 9), WINDOW_OK);
	CHECK_INT_EQ(conn(t, "192.0.2.5", 9), WINDOW_OK);
	/* order now, oldest first: .3 (session), .4, .1, .5 */
	CHECK_INT_EQ(conn(t, "192.0.2.6", 10), WINDOW_OK);
	CHECK_INT_EQ(window_open_count(t, ip("192.0.2.3")), 1);
	CHECK_INT_EQ(window_conn_count(t, ip("192.0.2.3"), 10), 2);
	CHECK_INT_EQ(window_conn_count(t, ip("192.0.2.4"), 10), 0);
	CHECK_INT_EQ(window_entries(t), 4);

	/* Keys whose windows ran out are reused before anything live. */
	CHECK_INT_EQ(conn(t, "192.0.2.7", 1000000), WINDOW_OK);
	CHECK_INT_EQ(window_open_count(t, ip("192.0.2.3")), 1);
	window_table_free(t);

	/* Many more addresses than the cap: the table stays at the cap. */
	wp.max_entries = 1000;
	t = window_table_new(&wp);
	for (int i = 0; i < 5000; i++) {
		uint8_t x[16] = { 0x20, 0x01, 0x0d, 0xb8 };

		memcpy(x + 8, &i, sizeof(i));
		window_admit(t, x, 100, &c, &o, &g);
		window_close(t, x, g);
	}
	CHECK_INT_EQ(window_entries(t), 1000);
	CHECK(window_bytes(t) <= 1000 * 88 + 1024);
	/* Each key past the cap pushed out one that still counted. */
	CHECK_INT_EQ(window_evicted(t), 4000);
	/* Keys whose windows ran out go without a count. */
	for (int i = 0; i < 2000; i++) {
		uint8_t x[16] = { 0x20, 0x01, 0x0d, 0xb9 };

		memcpy(x + 8, &i, sizeof(i));
		window_admit(t, x, 10000000, &c, &o, &g);
		window_close(t, x, g);
	}
	CHECK_INT_EQ(window_evicted(t), 4000 + 1000);
	window_table_free(t);
}

static void
test_aggregation(void)
{
	struct window_params wp = { .conn_limit = 3, .conn_window_ms = 60000,
	    .aggregate_v4 = 24, .aggregate_v6 = 64 };
	struct window_table *t = window_table_new(&wp);
	uint8_t k[16];

	/* Rotating through a /24 does not help. */
	CHECK_INT_EQ(conn(t, "192.0.2.1", 0), WINDOW_OK);
	CHECK_INT_EQ(conn(t, "192.0.2.2", 0), WINDOW_OK);
	CHECK_INT_EQ(conn(t, "192.0.2.3", 0), WINDOW_OK);
	CHECK_INT_EQ(conn(t, "192.0.2.4", 0), WINDOW_RATE);
	CHECK_INT_EQ(conn(t, "192.0.3.1", 0), WINDOW_OK);
	/* Nor through a /64. */
	CHECK_INT_EQ(conn(t, "2001:db8:0:1::1", 0), WINDOW_OK);
	CHECK_INT_EQ(conn(t, "2001:db8:0:1::2", 0), WINDOW_OK);
	CHECK_INT_EQ(conn(t, "2001:db8:0:1:ffff::3", 0), WINDOW_OK);
	CHECK_INT_EQ(conn(t, "2001:db8:0:1:8000::", 0), WINDOW_RATE);
	CHECK_INT_EQ(conn(t, "2001:db8:0:2::1", 0), WINDOW_OK);
	window_key(t, ip("192.0.2.200"), k);
	CHECK(memcmp(k, ip("192.0.2.0"), 16) == 0);
	window_table_free(t);

	/* The failures of a /64 refuse its other addresses too. */
	wp.conn_limit = 0;
	wp.auth_limit = 2;
	wp.auth_window_ms = 60000;
	t = window_table_new(&wp);
	CHECK_INT_EQ(window_fail(t, ip("2001:db8:0:3::1"), 0), 1);
	CHECK_INT_EQ(conn(t, "2001:db8:0:3::2", 0), WINDOW_OK);
	CHECK_INT_EQ(window_fail(t, ip("2001:db8:0:3::2"), 0), 2);
	CHECK_INT_EQ(conn(t, "2001:db8:0:3::3", 0), WINDOW_AUTH);
	CHECK_INT_EQ(conn(t, "2001:db8:0:4::1", 0), WINDOW_OK);
	CHECK_INT_EQ(conn(t, "2001:db8:0:3::3", 60000 + 60000 / 7 + 8),
	    WINDOW_OK);
	window_table_free(t);

	/* concurrent_per_ip holds a prefix's sessions together too, as
	 * moat.toml(5) says. */
	wp.auth_limit = 0;
	wp.conc_limit = 2;
	t = window_table_new(&wp);
	{
		uint32_t count, open, tag;

		CHECK_INT_EQ(window_admit(t, ip("192.0.2.1"), 0, &count,
		    &open, &tag), WINDOW_OK);
		CHECK_INT_EQ(window_admit(t, ip("192.0.2.2"), 0, &count,
		    &open, &tag), WINDOW_OK);
		CHECK_INT_EQ(window_admit(t, ip("192.0.2.3"), 0, &count,
		    &open, &tag), WINDOW_CONCURRENCY);
		CHECK_INT_EQ(open, 2);
		CHECK_INT_EQ(window_admit(t, ip("192.0.3.1"), 0, &count,
		    &open, &tag), WINDOW_OK);
	}
	window_table_free(t);
	wp.conc_limit = 0;

	/* Odd lengths mask inside a byte. */
	wp.aggregate_v4 = 20;
	t = window_table_new(&wp);
	window_key(t, ip("192.0.31.255"), k);
	CHECK(memcmp(k, ip("192.0.16.0"), 16) == 0);
	window_table_free(t);
}

static void
test_reconfigure(void)
{
	struct window_params wp = { .conn_limit = 5, .conn_window_ms = 10000,
	    .auth_limit = 5, .auth_window_ms = 10000, .conc_limit = 10,
	    .aggregate_v4 = 32, .aggregate_v6 = 128 };
	struct window_table *t = window_table_new(&wp);
	uint32_t c, o, g;

	for (int i = 0; i < 4; i++)
		CHECK_INT_EQ(conn(t, "192.0.2.1", 100), WINDOW_OK);
	window_fail(t, ip("192.0.2.1"), 100);
	CHECK_INT_EQ(window_admit(t, ip("192.0.2.1"), 100, &c, &o, &g), WINDOW_OK);

	/* A lower limit: the counts stay and apply at once. */
	wp.conn_limit = 3;
	window_table_reconfigure(t, &wp, 200);
	CHECK_INT_EQ(window_conn_count(t, ip("192.0.2.1"), 200), 5);
	CHECK_INT_EQ(conn(t, "192.0.2.1", 200), WINDOW_RATE);
	CHECK_INT_EQ(window_open_count(t, ip("192.0.2.1")), 1);

	/* A longer window: the counts are kept, forgotten a new window
	 * later at most. */
	wp.conn_window_ms = 60000;
	window_table_reconfigure(t, &wp, 300);
	CHECK_INT_EQ(window_conn_count(t, ip("192.0.2.1"), 300), 5);
	CHECK_INT_EQ(window_fail_count(t, ip("192.0.2.1"), 300), 1);
	CHECK_INT_EQ(window_conn_count(t, ip("192.0.2.1"), 59000), 5);
	CHECK_INT_EQ(window_conn_count(t, ip("192.0.2.1"),
	    300 + 60000 + 60000 / 7 + 8), 0);

	/* A new aggregation makes new keys: the table starts over. */
	wp.aggregate_v4 = 24;
	window_table_reconfigure(t, &wp, 400);
	CHECK_INT_EQ(window_entries(t), 0);
	window_table_free(t);
}

static void
test_clock_back(void)
{
	struct window_table *t = table(2, 1000);

	CHECK_INT_EQ(conn(t, "192.0.2.1", 5000), WINDOW_OK);
	CHECK_INT_EQ(conn(t, "192.0.2.1", 10), WINDOW_OK);
	CHECK_INT_EQ(conn(t, "192.0.2.1", 0), WINDOW_RATE);
	CHECK_INT_EQ(window_entry_bytes(), 80);
	window_table_free(t);
}

int
main(void)
{
	test_exact_limit();
	test_boundary();
	test_random_stream();
	test_fail_window();
	test_concurrency();
	test_release_after_drop();
	test_eviction();
	test_aggregation();
	test_reconfigure();
	test_clock_back();
	return check_report("window");
}
