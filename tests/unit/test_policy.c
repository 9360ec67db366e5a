/* test_policy.c - unit tests for the verdict of policy/policy.c. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "addr.h"
#include "check.h"
#include "config.h"
#include "geo.h"
#include "policy.h"

#define S 1000ULL
#define H (3600 * S)
#define WALL 1767225600000ULL

static bool ci;

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

/* A configuration with the defaults of config.example.toml, built by
 * hand so the test does not depend on the loader. */
struct test_cfg {
	struct config cfg;
	struct cidr allow[4], deny[4];
	char *allow_cc[4], *deny_cc[4];
};

static void
cidrs(struct cfg_cidrs *out, struct cidr *v, const char *const *list)
{
	const char *why;

	out->v = v;
	out->n = 0;
	for (; list != NULL && *list != NULL; list++)
		if (cidr_parse(*list, &v[out->n++], &why) == -1)
			abort();
}

static struct config *
cfg_make(struct test_cfg *t, const char *const *allow,
    const char *const *deny)
{
	memset(t, 0, sizeof(*t));
	cidrs(&t->cfg.policy.allow, t->allow, allow);
	cidrs(&t->cfg.policy.deny, t->deny, deny);
	t->cfg.policy.rate.connections.limit = 5;
	t->cfg.policy.rate.connections.window_ms = 10 * S;
	t->cfg.policy.rate.concurrent_per_ip = 20;
	t->cfg.policy.rate.auth_failures.limit = 5;
	t->cfg.policy.rate.auth_failures.window_ms = 600 * S;
	t->cfg.ban.duration_ms = H;
	t->cfg.ban.escalation = 2.0;
	t->cfg.ban.max_duration_ms = 168 * H;
	t->cfg.policy.rate.aggregate_ipv4 = 32;
	t->cfg.policy.rate.aggregate_ipv6 = 128;
	return &t->cfg;
}

static const char *const allow1[] = { "192.0.2.10", "2001:db8:a::/48",
    NULL };
static const char *const deny1[] = { "192.0.2.0/24", "2001:db8::/32",
    NULL };

/* Connects and, if admitted, ends the session at once. */
static enum policy_verdict
hit(struct policy *p, const char *a, uint64_t now, struct policy_result *r)
{
	enum policy_verdict v = policy_admit(p, ip(a), now, r);

	if (v == POLICY_ALLOW)
		policy_release(p, ip(a), r->tag);
	return v;
}

static void
test_order(void)
{
	struct test_cfg tc;
	struct policy_result r;
	struct policy *p;
	const char *why;
	char *err;

	p = policy_new(cfg_make(&tc, allow1, deny1), NULL, &err);
	CHECK(p != NULL);

	/* The allow list beats the deny list... */
	CHECK_INT_EQ(hit(p, "192.0.2.10", 0, &r), POLICY_ALLOW);
	CHECK_INT_EQ(r.reason, POLICY_ALLOWLIST);
	CHECK_INT_EQ(hit(p, "::ffff:192.0.2.10", 0, &r), POLICY_ALLOW);
	CHECK_INT_EQ(hit(p, "192.0.2.11", 0, &r), POLICY_REJECT);
	CHECK_INT_EQ(r.reason, POLICY_DENYLIST);
	CHECK_STR_EQ(policy_reason_str(r.reason), "denylist");
	CHECK_STR_EQ(policy_reason_category(r.reason), "policy");
	CHECK_INT_EQ(hit(p, "2001:db8:a::1", 0, &r), POLICY_ALLOW);
	CHECK_INT_EQ(hit(p, "2001:db8:b::1", 0, &r), POLICY_REJECT);
	CHECK_INT_EQ(hit(p, "198.51.100.1", 0, &r), POLICY_ALLOW);
	CHECK_INT_EQ(r.reason, POLICY_OK);

	/* ...and the rate limit: never counted. */
	for (int i = 0; i < 100; i++)
		CHECK_INT_EQ(hit(p, "192.0.2.10", 1, &r), POLICY_ALLOW);
	for (int i = 0; i < 100; i++)
		CHECK_INT_EQ(policy_note(p, ip("192.0.2.10"),
		    POLICY_EV_AUTH_FAIL, 1, &r), POLICY_ALLOW);
	CHECK_INT_EQ(policy_note(p, ip("192.0.2.10"), POLICY_EV_SMUGGLING, 1,
	    &r), POLICY_ALLOW);
	CHECK_INT_EQ(r.reason, POLICY_ALLOWLIST);
	CHECK_INT_EQ(hit(p, "192.0.2.10", 2, &r), POLICY_ALLOW);
	/* ...and bans: an operator cannot ban it either. */
	CHECK_INT_EQ(policy_ban(p, ip("192.0.2.10"), 0, 3, &r, &why), -1);
	CHECK_STR_EQ(why, "the address is on the allow list");

	/* A ban beats the deny list (cheapest check first). */
	CHECK_INT_EQ(policy_ban(p, ip("192.0.2.12"), 0, 3, &r, &why), 0);
	CHECK(r.ban_new);
	CHECK_INT_EQ(r.ban_ms, H);
	CHECK_INT_EQ(hit(p, "192.0.2.12", 4, &r), POLICY_REJECT);
	CHECK_INT_EQ(r.reason, POLICY_BANNED);
	CHECK_INT_EQ(r.ban_ms, H - 1);		/* time left */
	CHECK_STR_EQ(policy_reason_category(r.reason), "banned");
	CHECK(!r.ban_new);
	policy_free(p);
}

/* The expiry of the ban policy_ban_settle finds, 0 for none. */
static void
ban_expiry(void *arg, const uint8_t addr[16], const struct ban_info *b)
{
	(void)addr;
	*(uint64_t *)arg = b != NULL ? b->expiry_ms : 0;
}

static void
test_rate_and_ban(void)
{
	struct test_cfg tc;
	struct policy_result r;
	uint64_t expiry;
	struct policy *p = policy_new(cfg_make(&tc, allow1, deny1), NULL,
	    NULL);
	struct policy_stats st;

	for (int i = 0; i < 5; i++) {
		CHECK_INT_EQ(hit(p, "203.0.113.7", 1000, &r), POLICY_ALLOW);
		CHECK_INT_EQ(r.count, (uint32_t)i + 1);
	}
	/* The 6th within 10 s is rejected and bans. */
	CHECK_INT_EQ(hit(p, "203.0.113.7", 2000, &r), POLICY_REJECT);
	CHECK_INT_EQ(r.reason, POLICY_RATE);
	CHECK_STR_EQ(policy_reason_category(r.reason), "rate limit");
	CHECK_INT_EQ(r.count, 5);
	CHECK_INT_EQ(r.limit, 5);
	CHECK_INT_EQ(r.window_ms, 10 * S);
	CHECK(r.ban_new);
	CHECK_INT_EQ(r.ban_ms, H);
	CHECK_INT_EQ(r.ban_count, 1);
	/* Then it is simply banned; no new ban is made. */
	CHECK_INT_EQ(hit(p, "203.0.113.7", 3000, &r), POLICY_REJECT);
	CHECK_INT_EQ(r.reason, POLICY_BANNED);
	CHECK(!r.ban_new);
	/* Another address is not. */
	CHECK_INT_EQ(hit(p, "203.0.113.8", 3000, &r), POLICY_ALLOW);
	/* After the ban, and with the window long past: admitted. */
	CHECK_INT_EQ(hit(p, "203.0.113.7", 2000 + H, &r), POLICY_ALLOW);
	/* A second offence is banned twice as long. */
	for (int i = 0; i < 4; i++)
		hit(p, "203.0.113.7", 2000 + H, &r);
	CHECK_INT_EQ(hit(p, "203.0.113.7", 2000 + H, &r), POLICY_REJECT);
	CHECK_INT_EQ(r.ban_ms, 2 * H);
	CHECK_INT_EQ(r.ban_count, 2);

	/* An operator's unban starts the client afresh: its next connection
	 * is admitted, not counted against the old window and banned again. */
	CHECK(policy_unban(p, ip("203.0.113.9"), 3000) == false);
	for (int i = 0; i < 7; i++)
		hit(p, "203.0.113.9", 3000, &r);
	CHECK_INT_EQ(r.reason, POLICY_BANNED);
	expiry = 0;
	policy_ban_settle(p, ip("203.0.113.9"), 3000, ban_expiry, &expiry);
	CHECK_INT_EQ(expiry, 3000 + H);
	CHECK(policy_unban(p, ip("203.0.113.9"), 3000));
	policy_ban_settle(p, ip("203.0.113.9"), 3000, ban_expiry, &expiry);
	CHECK_INT_EQ(expiry, 0);
	/* The first offender's ban is over at its end. */
	policy_ban_settle(p, ip("203.0.113.7"), 2000 + H + 2 * H - 1,
	    ban_expiry, &expiry);
	CHECK_INT_EQ(expiry, 2000 + H + 2 * H);
	policy_ban_settle(p, ip("203.0.113.7"), 2000 + H + 2 * H, ban_expiry,
	    &expiry);
	CHECK_INT_EQ(expiry, 0);
	CHECK_INT_EQ(hit(p, "203.0.113.9", 3001, &r), POLICY_ALLOW);
	CHECK_INT_EQ(r.count, 1);

	policy_stats(p, 2000 + H, &st);
	CHECK_INT_EQ(st.bans_active, 1);
	CHECK_INT_EQ(st.tracked, 3);
	CHECK_INT_EQ(st.allow_ranges, 2);
	policy_free(p);
}

static void
test_concurrency(void)
{
	struct test_cfg tc;
	struct policy_result r;
	struct policy *p;
	uint32_t tag;

	cfg_make(&tc, NULL, NULL);
	tc.cfg.policy.rate.concurrent_per_ip = 2;
	tc.cfg.policy.rate.connections.limit = 0;	/* off */
	p = policy_new(&tc.cfg, NULL, NULL);
	CHECK_INT_EQ(policy_admit(p, ip("192.0.2.1"), 0, &r), POLICY_ALLOW);
	tag = r.tag;
	CHECK(tag != 0);
	CHECK_INT_EQ(policy_admit(p, ip("192.0.2.1"), 0, &r), POLICY_ALLOW);
	CHECK_INT_EQ(policy_admit(p, ip("192.0.2.1"), 0, &r), POLICY_REJECT);
	CHECK_INT_EQ(r.reason, POLICY_CONCURRENCY);
	CHECK_INT_EQ(r.count, 2);
	CHECK_INT_EQ(r.tag, 0);
	CHECK(!r.ban_new);
	CHECK_INT_EQ(policy_admit(p, ip("192.0.2.2"), 0, &r), POLICY_ALLOW);
	policy_release(p, ip("192.0.2.1"), tag);
	CHECK_INT_EQ(policy_admit(p, ip("192.0.2.1"), 0, &r), POLICY_ALLOW);
	/* Connections are unlimited with limit 0. */
	for (int i = 0; i < 1000; i++)
		CHECK_INT_EQ(hit(p, "192.0.2.3", 0, &r), POLICY_ALLOW);
	/* A new ban says how many sessions the address still has open (the
	 * proxy ends them); an address with none says 0. */
	tc.cfg.policy.rate.auth_failures.limit = 1;
	CHECK_INT_EQ(policy_reload(p, &tc.cfg, NULL, NULL), 0);
	CHECK_INT_EQ(policy_note(p, ip("192.0.2.1"), POLICY_EV_AUTH_FAIL, 0,
	    &r), POLICY_REJECT);
	CHECK(r.ban_new);
	CHECK_INT_EQ(r.open, 2);
	CHECK_INT_EQ(policy_note(p, ip("192.0.2.9"), POLICY_EV_AUTH_FAIL, 0,
	    &r), POLICY_REJECT);
	CHECK(r.ban_new);
	CHECK_INT_EQ(r.open, 0);
	policy_free(p);
}

static void
test_notes(void)
{
	struct test_cfg tc;
	struct policy_result r;
	struct policy *p = policy_new(cfg_make(&tc, allow1, NULL), NULL,
	    NULL);

	/* Five wrong passwords ban; a success in between changes nothing. */
	for (int i = 1; i <= 4; i++) {
		CHECK_INT_EQ(policy_note(p, ip("198.51.100.5"),
		    POLICY_EV_AUTH_FAIL, (uint64_t)i * S, &r), POLICY_ALLOW);
		CHECK_INT_EQ(r.count, i);
		CHECK_INT_EQ(policy_note(p, ip("198.51.100.5"),
		    POLICY_EV_AUTH_OK, (uint64_t)i * S, &r), POLICY_ALLOW);
	}
	CHECK_INT_EQ(policy_note(p, ip("198.51.100.5"), POLICY_EV_AUTH_FAIL,
	    5 * S, &r), POLICY_REJECT);
	CHECK_INT_EQ(r.reason, POLICY_AUTH);
	CHECK_INT_EQ(r.count, 5);
	CHECK_INT_EQ(r.limit, 5);
	CHECK_INT_EQ(r.window_ms, 600 * S);
	CHECK(r.ban_new);
	CHECK_INT_EQ(r.ban_ms, H);
	/* Another session of the same address: already banned. */
	CHECK_INT_EQ(policy_note(p, ip("198.51.100.5"), POLICY_EV_AUTH_FAIL,
	    6 * S, &r), POLICY_REJECT);
	CHECK(!r.ban_new);
	CHECK_INT_EQ(policy_admit(p, ip("198.51.100.5"), 7 * S, &r),
	    POLICY_REJECT);
	CHECK_INT_EQ(r.reason, POLICY_BANNED);

	/* Glitches count with auth failures. */
	for (int i = 0; i < 4; i++)
		policy_note(p, ip("198.51.100.6"), POLICY_EV_GLITCH, 0, &r);
	CHECK_INT_EQ(policy_note(p, ip("198.51.100.6"), POLICY_EV_AUTH_FAIL,
	    0, &r), POLICY_REJECT);
	CHECK(r.ban_new);

	/* Smuggling bans at once. */
	CHECK_INT_EQ(policy_note(p, ip("2001:db8::99"), POLICY_EV_SMUGGLING,
	    0, &r), POLICY_REJECT);
	CHECK_INT_EQ(r.reason, POLICY_SMUGGLING);
	CHECK(r.ban_new);
	CHECK_STR_EQ(policy_event_str(POLICY_EV_SMUGGLING), "smuggling");

	/* Unban: admitted again, and forgiven. */
	CHECK(policy_unban(p, ip("2001:db8::99"), 1));
	CHECK(!policy_unban(p, ip("2001:db8::99"), 1));
	CHECK_INT_EQ(policy_admit(p, ip("2001:db8::99"), 1, &r),
	    POLICY_ALLOW);
	policy_free(p);

	/* With a /64 aggregated, its failures bar its other addresses: the
	 * next one is refused and banned before it can try a password. */
	cfg_make(&tc, NULL, NULL);
	tc.cfg.policy.rate.aggregate_ipv6 = 64;
	p = policy_new(&tc.cfg, NULL, NULL);
	for (int i = 1; i <= 5; i++)
		policy_note(p, ip(i % 2 ? "2001:db8:5::1" : "2001:db8:5::2"),
		    POLICY_EV_AUTH_FAIL, (uint64_t)i * S, &r);
	CHECK_INT_EQ(policy_admit(p, ip("2001:db8:5::3"), 6 * S, &r),
	    POLICY_REJECT);
	CHECK_INT_EQ(r.reason, POLICY_AUTH);
	CHECK_INT_EQ(r.count, 5);
	CHECK(r.ban_new);
	CHECK_INT_EQ(policy_admit(p, ip("2001:db8:5::3"), 7 * S, &r),
	    POLICY_REJECT);
	CHECK_INT_EQ(r.reason, POLICY_BANNED);
	CHECK_INT_EQ(policy_admit(p, ip("2001:db8:6::3"), 7 * S, &r),
	    POLICY_ALLOW);
	policy_release(p, ip("2001:db8:6::3"), r.tag);
	policy_free(p);
}

static void
count_ban(void *arg, const uint8_t addr[16], const struct ban_info *b)
{
	(void)addr, (void)b;
	(*(int *)arg)++;
}

static void
test_reload(void)
{
	struct test_cfg tc, tc2;
	struct policy_result r;
	struct policy *p = policy_new(cfg_make(&tc, NULL, NULL), NULL, NULL);
	uint32_t tag50;
	int n = 0;

	for (int i = 0; i < 3; i++)
		CHECK_INT_EQ(hit(p, "192.0.2.1", 0, &r), POLICY_ALLOW);
	CHECK_INT_EQ(policy_admit(p, ip("192.0.2.50"), 0, &r), POLICY_ALLOW);
	tag50 = r.tag;
	for (int i = 0; i < 5; i++)
		policy_note(p, ip("192.0.2.2"), POLICY_EV_AUTH_FAIL, 0, &r);
	CHECK(r.ban_new);

	/* New lists; same limits. Windows and bans carry over. */
	static const char *const deny2[] = { "198.51.100.0/24", NULL };
	CHECK_INT_EQ(policy_reload(p, cfg_make(&tc2, NULL, deny2), NULL,
	    NULL), 0);
	memset(&tc, 0xa5, sizeof(tc));	/* the old config is gone */
	CHECK_INT_EQ(hit(p, "198.51.100.1", 1, &r), POLICY_REJECT);
	CHECK_INT_EQ(hit(p, "192.0.2.1", 1, &r), POLICY_ALLOW);
	CHECK_INT_EQ(hit(p, "192.0.2.1", 1, &r), POLICY_ALLOW);
	CHECK_INT_EQ(hit(p, "192.0.2.1", 1, &r), POLICY_REJECT);
	CHECK_INT_EQ(r.reason, POLICY_RATE);
	CHECK_INT_EQ(hit(p, "192.0.2.2", 1, &r), POLICY_REJECT);
	CHECK_INT_EQ(r.reason, POLICY_BANNED);
	policy_bans(p, 1, count_ban, &n);
	CHECK_INT_EQ(n, 2);

	/* The allow list now holds a banned address: it wins. */
	static const char *const allow2[] = { "192.0.2.2", NULL };
	CHECK_INT_EQ(policy_reload(p, cfg_make(&tc, allow2, NULL), NULL,
	    NULL), 0);
	CHECK_INT_EQ(hit(p, "192.0.2.2", 2, &r), POLICY_ALLOW);
	CHECK_INT_EQ(r.reason, POLICY_ALLOWLIST);
	/* ...and its ban is lifted, for the firewall to delete it. */
	n = 0;
	CHECK_INT_EQ(policy_unban_allowed(p, 2, count_ban, &n), 1);
	CHECK_INT_EQ(n, 1);
	n = 0;
	policy_bans(p, 2, count_ban, &n);
	CHECK_INT_EQ(n, 1);		/* 192.0.2.1 stays banned */
	CHECK_INT_EQ(policy_unban_allowed(p, 2, count_ban, &n), 0);

	/* Open sessions survive a reload: this one ends after it. */
	policy_release(p, ip("192.0.2.50"), tag50);
	policy_free(p);
}

static void
test_state(void)
{
	char dir[] = "/tmp/moat-test-policy.XXXXXX", path[64], err[256];
	struct test_cfg tc;
	struct policy_result r;
	struct policy *p;
	const char *why;

	CHECK(mkdtemp(dir) != NULL);
	snprintf(path, sizeof(path), "%s/state", dir);
	cfg_make(&tc, NULL, NULL);
	tc.cfg.daemon.state_file = path;
	p = policy_new(&tc.cfg, NULL, NULL);
	CHECK_INT_EQ(policy_state_load(p, 0, WALL, NULL, NULL), 0);
	CHECK(!policy_state_dirty(p));
	for (int i = 0; i < 5; i++)
		policy_note(p, ip("192.0.2.7"), POLICY_EV_AUTH_FAIL, 0, &r);
	CHECK_INT_EQ(policy_ban(p, ip("2001:db8::7"), 2 * H, 0, &r, &why), 0);
	CHECK(policy_state_dirty(p));
	CHECK_INT_EQ(policy_state_save(p, 10 * S, WALL, err, sizeof(err)), 0);
	CHECK(!policy_state_dirty(p));
	policy_free(p);

	/* A restart: both bans are back with their time left. */
	p = policy_new(&tc.cfg, NULL, NULL);
	CHECK_INT_EQ(policy_state_load(p, 0, WALL + 60 * S, NULL, NULL), 2);
	CHECK_INT_EQ(policy_admit(p, ip("192.0.2.7"), 0, &r), POLICY_REJECT);
	CHECK_INT_EQ(r.reason, POLICY_BANNED);
	CHECK_INT_EQ(r.ban_ms, H - 10 * S - 60 * S);
	CHECK_INT_EQ(policy_admit(p, ip("2001:db8::7"), 0, &r), POLICY_REJECT);
	policy_free(p);
	unlink(path);
	rmdir(dir);

	/* No state_file: saving and loading do nothing. */
	tc.cfg.daemon.state_file = NULL;
	p = policy_new(&tc.cfg, NULL, NULL);
	CHECK_INT_EQ(policy_state_save(p, 0, WALL, err, sizeof(err)), 0);
	CHECK_INT_EQ(policy_state_load(p, 0, WALL, NULL, NULL), 0);
	policy_free(p);
}

static void
test_geo(const char *shared)
{
	char mmdb[1024], *err = NULL;
	struct test_cfg tc;
	struct policy_result r;
	struct policy *p;
	struct geo *g;
	char *de_us[] = { "DE", "US" }, *cn[] = { "CN" };

	snprintf(mmdb, sizeof(mmdb), "%s/testdata/geo/test-country.mmdb",
	    shared);
	g = geo_open(mmdb, &err);
	CHECK(g != NULL);
	if (g == NULL) {
		fprintf(stderr, "%s\n", err);
		free(err);
		return;
	}
	cfg_make(&tc, allow1, NULL);
	tc.cfg.policy.geo.database = mmdb;
	tc.cfg.policy.geo.allow_countries.v = de_us;
	tc.cfg.policy.geo.allow_countries.n = 2;

	/* Country rules without an open database are refused. */
	CHECK(policy_new(&tc.cfg, NULL, &err) == NULL);
	CHECK(err != NULL && strstr(err, "geo database") != NULL);
	free(err);

	p = policy_new(&tc.cfg, g, &err);
	CHECK(p != NULL);
	CHECK_INT_EQ(hit(p, "198.51.100.7", 0, &r), POLICY_REJECT);
	CHECK_INT_EQ(r.reason, POLICY_GEO);
	CHECK_STR_EQ(r.country, "CN");
	CHECK_STR_EQ(r.continent, "AS");
	CHECK_STR_EQ(policy_reason_category(r.reason), "policy");
	CHECK_INT_EQ(hit(p, "192.0.2.1", 0, &r), POLICY_ALLOW);
	CHECK_STR_EQ(r.country, "DE");
	CHECK_INT_EQ(hit(p, "::ffff:203.0.113.9", 0, &r), POLICY_ALLOW);
	CHECK_STR_EQ(r.country, "US");
	CHECK_INT_EQ(hit(p, "2001:db8:1::1", 0, &r), POLICY_REJECT);	/* FR */
	CHECK_INT_EQ(hit(p, "10.0.0.1", 0, &r), POLICY_ALLOW);	/* unknown */
	CHECK_STR_EQ(r.country, "");

	/* Reload: deny CN, unknown = deny. The rate counts stay. */
	tc.cfg.policy.geo.allow_countries.n = 0;
	tc.cfg.policy.geo.deny_countries.v = cn;
	tc.cfg.policy.geo.deny_countries.n = 1;
	tc.cfg.policy.geo.unknown = CFG_GEO_UNKNOWN_DENY;
	/* ...refused without a database, leaving the old rules in force. */
	CHECK_INT_EQ(policy_reload(p, &tc.cfg, NULL, &err), -1);
	free(err);
	CHECK_INT_EQ(hit(p, "2001:db8:1::1", 0, &r), POLICY_REJECT);
	CHECK_INT_EQ(policy_reload(p, &tc.cfg, g, &err), 0);
	CHECK_INT_EQ(hit(p, "198.51.100.7", 0, &r), POLICY_REJECT);
	CHECK_INT_EQ(hit(p, "2001:db8:1::1", 0, &r), POLICY_ALLOW);
	CHECK_INT_EQ(hit(p, "10.0.0.1", 0, &r), POLICY_REJECT);
	CHECK_INT_EQ(r.reason, POLICY_GEO);
	CHECK_INT_EQ(hit(p, "192.0.2.10", 0, &r), POLICY_ALLOW); /* allowed */
	/* 192.0.2.1 had one connection before the reload: 4 more pass. */
	for (int i = 0; i < 4; i++)
		CHECK_INT_EQ(hit(p, "192.0.2.1", 0, &r), POLICY_ALLOW);
	CHECK_INT_EQ(hit(p, "192.0.2.1", 0, &r), POLICY_REJECT);
	CHECK_INT_EQ(r.reason, POLICY_RATE);
	CHECK_STR_EQ(r.country, "DE");
	policy_free(p);
	geo_close(g);
}

int
main(void)
{
	const char *shared = getenv("MOAT_SHARED"), *env_ci = getenv("CI");

	ci = env_ci != NULL && strcmp(env_ci, "true") == 0;
	test_order();
	test_rate_and_ban();
	test_concurrency();
	test_notes();
	test_reload();
	test_state();
	if (shared != NULL && access(shared, R_OK) == 0)
		test_geo(shared);
	else {
		printf("policy: MOAT_SHARED is not set; geofencing tests "
		    "skipped\n");
		if (ci)
			CHECK(false);
	}
	return check_report("policy");
}
