/* test_config.c - unit tests for the config loader: values, defaults, errors. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/ssl.h>

#include "check.h"
#include "config.h"

/* Collects diagnostics so tests can look for one line among them. */
struct diags {
	char text[8192];
	int errors, warnings;
};

static void
collect(void *arg, enum config_severity sev, const char *line)
{
	struct diags *d = arg;
	size_t off = strlen(d->text);

	if (sev == CONFIG_ERROR)
		d->errors++;
	else
		d->warnings++;
	snprintf(d->text + off, sizeof(d->text) - off, "%s\n", line);
}

static struct config *
load(const char *toml, struct diags *d)
{
	memset(d, 0, sizeof(*d));
	return config_load_buf("t.toml", "/base", toml, strlen(toml), collect,
	    d);
}

#define LISTENER							\
	"[[listener]]\nname = \"smtp\"\nlisten = [\"127.0.0.1:2525\"]\n"	\
	"protocol = \"smtp\"\ntls = \"none\"\nbackend = \"127.0.0.1:25\"\n"

/* Expects the config to fail with a line containing want. */
static void
expect_error(const char *toml, const char *want, int line)
{
	struct diags d;
	struct config *cfg = load(toml, &d);

	if (cfg != NULL || strstr(d.text, want) == NULL) {
		check_failed++;
		fprintf(stderr, "%s:%d: expected error \"%s\", got%s:\n%s",
		    __FILE__, line, want, cfg ? " success" : "", d.text);
	} else
		check_passed++;
	config_free(cfg);
}
#define EXPECT_ERROR(toml, want) expect_error(toml, want, __LINE__)

/* Expects the config to load without errors; returns it (caller frees). */
static struct config *
expect_ok(const char *toml, int line)
{
	struct diags d;
	struct config *cfg = load(toml, &d);

	if (cfg == NULL || d.errors > 0) {
		check_failed++;
		fprintf(stderr, "%s:%d: expected success, got:\n%s", __FILE__,
		    line, d.text);
	} else
		check_passed++;
	return cfg;
}
#define EXPECT_OK(toml) expect_ok(toml, __LINE__)

static void
test_defaults(void)
{
	struct diags d;
	struct config *cfg = load(LISTENER, &d);
	const struct cfg_listener *lis;

	CHECK(cfg != NULL);
	if (cfg == NULL) {
		fputs(d.text, stderr);
		return;
	}
	CHECK_INT_EQ(d.errors, 0);
	CHECK_INT_EQ(cfg->nlisteners, 1);
	lis = &cfg->listeners[0];
	CHECK_STR_EQ(lis->name, "smtp");
	CHECK_INT_EQ(lis->backend_proxy, CFG_BPROXY_V2);
	CHECK_INT_EQ(lis->handshake_ms, 10000);
	CHECK_INT_EQ(lis->idle_ms, 300000);
	CHECK_INT_EQ(lis->connect_ms, 5000);
	CHECK_INT_EQ(lis->max_line, 2048);
	CHECK_INT_EQ(lis->line, 1);
	CHECK(!lis->require_tls);
	CHECK(cfg->daemon.user == NULL);
	CHECK_INT_EQ(cfg->daemon.workers, 1);
	CHECK_INT_EQ(cfg->daemon.max_sessions, 10000);
	CHECK_INT_EQ(cfg->daemon.reserved_sessions, 1000);
	CHECK_STR_EQ(cfg->daemon.control_socket, "/run/moat/control.sock");
	CHECK_STR_EQ(cfg->daemon.state_file, "/var/lib/moat/state");
	CHECK(!cfg->daemon.metrics_enabled);
	CHECK_INT_EQ(cfg->daemon.log_level, LOG_LEVEL_INFO);
	CHECK_INT_EQ(cfg->tls.min_version, TLS1_2_VERSION);
	CHECK(!cfg->tls.session_tickets);
	CHECK_INT_EQ(cfg->tls.ticket_rotation_ms, 3600000);
	CHECK_INT_EQ(cfg->policy.rate.connections.limit, 30);
	CHECK_INT_EQ(cfg->policy.rate.connections.window_ms, 60000);
	CHECK_INT_EQ(cfg->policy.rate.concurrent_per_ip, 20);
	CHECK_INT_EQ(cfg->policy.rate.auth_failures.limit, 5);
	CHECK_INT_EQ(cfg->policy.rate.auth_failures.window_ms, 600000);
	CHECK_INT_EQ(cfg->policy.rate.aggregate_ipv4, 32);
	CHECK_INT_EQ(cfg->policy.rate.aggregate_ipv6, 128);
	CHECK_INT_EQ(cfg->policy.rate.max_tracked, 100000);
	CHECK_INT_EQ(cfg->ban.forget_after_ms, 0);
	CHECK_INT_EQ(cfg->ban.max_entries, 1000000);
	CHECK_INT_EQ(cfg->ban.duration_ms, 3600000);
	CHECK(cfg->ban.escalation == 2.0);
	CHECK_INT_EQ(cfg->ban.max_duration_ms, 7LL * 24 * 3600 * 1000);
	CHECK_INT_EQ(cfg->firewall.backend, CFG_FW_NFTABLES);
	CHECK_STR_EQ(cfg->firewall.table, "moat");
	CHECK_STR_EQ(cfg->firewall.set4, "blocked4");
	CHECK_STR_EQ(cfg->firewall.set6, "blocked6");
	CHECK(cfg->firewall.create);
	CHECK_STR_EQ(cfg->events.file, "/var/log/moat/events.jsonl");
	CHECK(cfg->policy.geo.database == NULL);
	CHECK_INT_EQ(cfg->policy.geo.unknown, CFG_GEO_UNKNOWN_ALLOW);
	config_free(cfg);
}

static void
test_values(void)
{
	struct diags d;
	struct config *cfg = load(
	    "[daemon]\nworkers = 0\nmetrics = \"127.0.0.1:9425\"\n"
	    "state_file = \"state\"\ndrain_timeout = \"1m\"\n"
	    "max_sessions = 500\nreserved_sessions = 20\n"
	    "log_level = \"warning\"\n"
	    "[[listener]]\nname = \"pop3\"\n"
	    "listen = [\"127.0.0.1:1110\", \"[::1]:1110\"]\n"
	    "protocol = \"pop3\"\ntls = \"none\"\nbackend = \"[::1]:110\"\n"
	    "backend_proxy = \"v1\"\naccept_proxy = true\n"
	    "accept_proxy_from = [\"10.0.0.0/8\", \"fd00::/8\"]\n"
	    "timeouts = { handshake = \"3s\", idle = \"1h\", "
	    "connect = \"1500ms\" }\nmax_line = 4096\n"
	    "[policy]\nallow = [\"192.0.2.10\"]\n"
	    "deny = [\"198.51.100.0/24\", \"2001:db8:bad::/48\"]\n"
	    "[policy.rate]\nconnections = { limit = 5, window = \"10s\" }\n"
	    "concurrent_per_ip = 0\n"
	    "[ban]\nduration = \"10m\"\nescalation = 3\n"
	    "max_duration = \"1d\"\n"
	    "[firewall]\nbackend = \"ipset\"\nset4 = \"bad4\"\n"
	    "create = false\n"
	    "[events]\nfile = \"\"\nsyslog = true\n"
	    "[tls]\nsession_tickets = true\nticket_rotation = \"10m\"\n", &d);
	const struct cfg_listener *lis;

	CHECK(cfg != NULL);
	if (cfg == NULL) {
		fputs(d.text, stderr);
		return;
	}
	CHECK_INT_EQ(cfg->daemon.workers, 0);
	CHECK(cfg->daemon.metrics_enabled);
	CHECK(cfg->tls.session_tickets);
	CHECK_INT_EQ(cfg->tls.ticket_rotation_ms, 600000);
	CHECK_STR_EQ(cfg->daemon.state_file, "/base/state");
	CHECK_INT_EQ(cfg->daemon.drain_ms, 60000);
	CHECK_INT_EQ(cfg->daemon.max_sessions, 500);
	CHECK_INT_EQ(cfg->daemon.reserved_sessions, 20);
	CHECK_INT_EQ(cfg->daemon.log_level, LOG_LEVEL_WARNING);
	lis = &cfg->listeners[0];
	CHECK_INT_EQ(lis->protocol, CFG_PROTO_POP3);
	CHECK_INT_EQ(lis->nlisten, 2);
	CHECK_INT_EQ(lis->backend.ss.ss_family, AF_INET6);
	CHECK_INT_EQ(lis->backend_proxy, CFG_BPROXY_V1);
	CHECK(lis->accept_proxy);
	CHECK_INT_EQ(lis->accept_proxy_from.n, 2);
	CHECK_INT_EQ(lis->handshake_ms, 3000);
	CHECK_INT_EQ(lis->idle_ms, 3600000);
	CHECK_INT_EQ(lis->connect_ms, 1500);
	CHECK_INT_EQ(lis->max_line, 4096);
	CHECK_INT_EQ(cfg->policy.allow.n, 1);
	CHECK_INT_EQ(cfg->policy.deny.n, 2);
	CHECK_INT_EQ(cfg->policy.rate.connections.limit, 5);
	CHECK_INT_EQ(cfg->policy.rate.connections.window_ms, 10000);
	CHECK_INT_EQ(cfg->policy.rate.concurrent_per_ip, 0);
	CHECK_INT_EQ(cfg->ban.duration_ms, 600000);
	CHECK(cfg->ban.escalation == 3.0);
	CHECK_INT_EQ(cfg->firewall.backend, CFG_FW_IPSET);
	CHECK_STR_EQ(cfg->firewall.set4, "bad4");
	CHECK(!cfg->firewall.create);
	CHECK(cfg->events.file == NULL);
	CHECK(cfg->events.syslog);
	/* SMTP is not involved, so no open-relay warning. */
	CHECK_INT_EQ(d.warnings, 0);
	config_free(cfg);
}

static void
test_errors(void)
{
	/* Each message names the file, the position and the problem. */
	EXPECT_ERROR(LISTENER "[daemon]\nworkerz = 2\n",
	    "t.toml:8:1: unknown key 'workerz' in [daemon] (did you mean "
	    "'workers'?)");
	EXPECT_ERROR(LISTENER "[daemon]\nworkers = \"2\"\n",
	    "t.toml:8:11: daemon.workers must be an integer, not a string");
	EXPECT_ERROR(LISTENER "[daemon]\nworkers = -1\n",
	    "t.toml:8:11: daemon.workers must be between 0 and 256");
	EXPECT_ERROR(LISTENER "[daemon]\nmax_sessions = 100\n"
	    "reserved_sessions = 100\n",
	    "t.toml:9:1: daemon.reserved_sessions (100) must be smaller "
	    "than daemon.max_sessions (100)");
	EXPECT_ERROR(LISTENER "[daemon]\nmax_sessions = -1\n",
	    "t.toml:8:16: daemon.max_sessions must be between 0 and 1000000");
	EXPECT_ERROR(LISTENER "[policy]\ndeny = [\"10.0.0.0/33\"]\n",
	    "t.toml:8:9: invalid address or CIDR \"10.0.0.0/33\" in "
	    "policy.deny: IPv4 prefix length must be 0 to 32");
	EXPECT_ERROR(LISTENER "[ban]\nduration = \"1hour\"\n",
	    "t.toml:8:12: invalid duration \"1hour\" for ban.duration");
	EXPECT_ERROR(LISTENER "[ban]\nduration = 60\n",
	    "ban.duration needs a unit: write \"60s\"");
	EXPECT_ERROR(LISTENER LISTENER, "t.toml:7:1: duplicate listener name "
	    "'smtp' (first used at line 1)");
	EXPECT_ERROR(LISTENER "[tls]\ncertificate = \"/nonexistent/c.pem\"\n",
	    "t.toml:8:15: tls.certificate: cannot read /nonexistent/c.pem");
	EXPECT_ERROR("[[listener]]\nname = \"x\"\n",
	    "t.toml:1:1: listener 'x' needs listen");
	EXPECT_ERROR("[[listener]]\nlisten = [\"1.2.3.4:5\"]\n",
	    "needs a name");
	EXPECT_ERROR("[daemon]\n", "no [[listener]] is configured");
	EXPECT_ERROR(LISTENER "tls = \"implicit\"\n",
	    "duplicate key");
	EXPECT_ERROR("[[listener]]\nname = \"s\"\nlisten = [\"127.0.0.1:1\"]\n"
	    "protocol = \"smtp\"\ntls = \"implicit\"\nbackend = "
	    "\"127.0.0.1:25\"\n", "a listener uses TLS, so [tls] needs "
	    "certificate and key");
	EXPECT_ERROR("[[listener]]\nname = \"p\"\nlisten = [\"127.0.0.1:1\"]\n"
	    "protocol = \"pop3\"\ntls = \"none\"\nbackend = \"127.0.0.1:1\"\n"
	    "backend_proxy = \"xclient\"\n", "t.toml:7:17: listener 'p': "
	    "backend_proxy = \"xclient\" is an SMTP extension");
	EXPECT_ERROR(LISTENER "tls_mode = 1\n",
	    "t.toml:7:1: unknown key 'tls_mode' in [[listener]]");
	EXPECT_ERROR(LISTENER "protocol_x = 1\n", "unknown key 'protocol_x'");
	EXPECT_ERROR(LISTENER "accept_proxy = true\n",
	    "t.toml:7:16: listener 'smtp': accept_proxy = true needs "
	    "accept_proxy_from");
	EXPECT_ERROR(LISTENER "require_tls = true\n",
	    "require_tls = true needs tls = \"starttls\"");
	EXPECT_ERROR(LISTENER "listen2 = []\n", "unknown key 'listen2'");
	EXPECT_ERROR("[[listener]]\nname = \"a\"\nlisten = [\"127.0.0.1:1\"]\n"
	    "protocol = \"smtp\"\ntls = \"none\"\nbackend = \"127.0.0.1:1\"\n"
	    "[[listener]]\nname = \"b\"\nlisten = [\"127.0.0.1:1\"]\n"
	    "protocol = \"smtp\"\ntls = \"none\"\nbackend = \"127.0.0.1:1\"\n",
	    "listener 'b': 127.0.0.1:1 is already used by listener 'a'");
	EXPECT_ERROR(LISTENER "protocol = \"imap\"\n", "duplicate key");
	EXPECT_ERROR("[[listener]]\nname = \"a\"\nlisten = [\"127.0.0.1:1\"]\n"
	    "protocol = \"imap\"\ntls = \"none\"\nbackend = \"127.0.0.1:1\"\n",
	    "t.toml:4:12: listener.protocol must be \"smtp\" or \"pop3\", "
	    "not \"imap\"");
	EXPECT_ERROR(LISTENER "[policy.geo]\nallow_countries = [\"UK\"]\n",
	    "the United Kingdom is \"GB\"");
	EXPECT_ERROR(LISTENER "[policy.geo]\ndeny_countries = [\"cn\"]\n",
	    "country codes are upper case: write \"CN\"");
	EXPECT_ERROR(LISTENER "[policy.geo]\ndeny_countries = [\"CN\"]\n",
	    "country lists need database");
	EXPECT_ERROR(LISTENER "[policy.rate]\nconnections = { limit = 5 }\n",
	    "policy.rate.connections needs both limit and window");
	EXPECT_ERROR(LISTENER "[policy.rate]\nconnections = { limit = 5, "
	    "window = \"1m\", burst = 3 }\n", "unknown key 'burst'");
	EXPECT_ERROR(LISTENER "[policy.rate]\nconnections = { limit = 5, "
	    "window = \"1m\", \"limit\\u0000x\" = 3 }\n",
	    "unknown key 'limit\\x00x'");
	EXPECT_ERROR(LISTENER "[policy.rate]\nauth_failures = { limit = 70000, "
	    "window = \"1m\" }\n", "must be between 0 and 65535");
	EXPECT_ERROR(LISTENER "[policy.rate]\naggregate_ipv6 = 129\n",
	    "policy.rate.aggregate_ipv6 must be between 16 and 128");
	EXPECT_ERROR(LISTENER "[ban]\nescalation = 0.5\n",
	    "ban.escalation must be between 1.0");
	EXPECT_ERROR(LISTENER "[ban]\nduration = \"2d\"\nmax_duration = "
	    "\"1d\"\n", "t.toml:9:1: ban.max_duration (1d) is shorter than "
	    "ban.duration (2d)");
	EXPECT_ERROR(LISTENER "[ban]\nduration = \"8d\"\n",
	    "t.toml:8:1: ban.max_duration (7d) is shorter than ban.duration "
	    "(8d)");
	EXPECT_ERROR(LISTENER "[firewall]\nbackend = \"iptables\"\n",
	    "firewall.backend must be \"nftables\", \"ipset\" or \"none\"");
	EXPECT_ERROR(LISTENER "[firewall]\nset4 = \"a b\"\n",
	    "firewall.set4 \"a b\" must be 1 to 31");
	EXPECT_ERROR(LISTENER "[tls]\nmin_version = 1.3\n",
	    "tls.min_version must be a string");
	EXPECT_ERROR(LISTENER "[daemon]\nlog_level = \"notice\"\n",
	    "daemon.log_level must be \"warning\", \"info\" or \"debug\", "
	    "not \"notice\"");
	EXPECT_ERROR(LISTENER "[daemon]\nlog_level = 6\n",
	    "daemon.log_level");
	EXPECT_ERROR(LISTENER "[tls]\nmin_version = \"1.1\"\n",
	    "tls.min_version must be \"1.2\" or \"1.3\", not \"1.1\"");
	EXPECT_ERROR(LISTENER "[tls]\nsession_tickets = \"yes\"\n",
	    "tls.session_tickets");
	EXPECT_ERROR(LISTENER "[tls]\nticket_rotation = \"500ms\"\n",
	    "t.toml:8:19: tls.ticket_rotation must be between 1s and 24h");
	EXPECT_ERROR(LISTENER "[tls]\nticket_rotation = \"2d\"\n",
	    "tls.ticket_rotation must be between 1s and 24h");
	EXPECT_ERROR(LISTENER "[tls]\nticket_rotation = 3600\n",
	    "tls.ticket_rotation needs a unit");
	EXPECT_ERROR(LISTENER "[tls]\nticket_lifetime = \"1h\"\n",
	    "unknown key 'ticket_lifetime'");
	EXPECT_ERROR(LISTENER "[daemon]\nuser = \"no-such-user-moat\"\n",
	    "daemon.user: no such user");
	EXPECT_ERROR(LISTENER "[policy]\nallow_files = [\"/nonexistent\"]\n",
	    "cannot read list file /nonexistent");
	EXPECT_ERROR("a = \n", "t.toml:1:");
	EXPECT_ERROR(LISTENER "daemon = 3\n", "unknown key 'daemon' in "
	    "[[listener]]");
	/* A known key under the wrong header (appended at the end of the
	 * file) is named with its table, not taken for a typo. */
	EXPECT_ERROR(LISTENER "[events]\nfile = \"-\"\nlog_level = \"debug\"\n",
	    "t.toml:9:1: unknown key 'log_level' in [events] (it belongs in "
	    "[daemon])");
	EXPECT_ERROR("workers = 2\n" LISTENER, "t.toml:1:1: unknown key "
	    "'workers' in the top level (it belongs in [daemon])");
	EXPECT_ERROR(LISTENER "idle = \"5m\"\n", "unknown key 'idle' in "
	    "[[listener]] (it belongs in listener.timeouts)");
	EXPECT_ERROR(LISTENER "[events]\ncertificate = \"c.pem\"\n",
	    "unknown key 'certificate' in [events] (it belongs in [tls] or "
	    "[[tls.sni]])");
	EXPECT_ERROR(LISTENER "[[daemon]]\n", "daemon must be a table, not an "
	    "array");
}

/*
 * Configs that moat -t once passed although moat could not start with
 * them, and hints that contradicted each other (the audit of 2026-12).
 */
/*
 * The checks across sections run also when a key gave an error, so one
 * run says every problem; a value that failed is not judged again by
 * them (it holds its default).
 */
/* What the file says is quoted in messages without its control bytes:
 * they reach a terminal, syslog and moatctl. */
static void
test_messages_are_printable(void)
{
	struct diags d;
	struct config *cfg;
	size_t i;

	EXPECT_ERROR(LISTENER "\"\\u001b[2Jx\" = 1\n",
	    "unknown key '\\x1B[2Jx' in [[listener]]");
	EXPECT_ERROR(LISTENER "\"a\\u0000b\" = 1\n",
	    "unknown key 'a\\x00b' in [[listener]]");
	cfg = load(LISTENER "[daemon]\nuser = \"x\\u001b]0;owned\\u0007\\ny\"\n"
	    "\"\\u001b\" = 2\n", &d);
	CHECK(d.errors > 0);
	for (i = 0; d.text[i] != '\0'; i++)
		CHECK(d.text[i] == '\n' || ((unsigned char)d.text[i] >= 0x20 &&
		    d.text[i] != 0x7f));
	config_free(cfg);
}

static void
test_every_problem_at_once(void)
{
	struct diags d;
	struct config *cfg;

	cfg = load(LISTENER "[policy]\ndeny = [\"198.51.100.300/24\"]\n"
	    "[daemon]\nmax_sessions = 10\nreserved_sessions = 20\n", &d);
	CHECK(cfg == NULL);
	CHECK_INT_EQ(d.errors, 2);
	CHECK(strstr(d.text, "t.toml:8:9: invalid address") != NULL);
	CHECK(strstr(d.text, "t.toml:11:1: daemon.reserved_sessions (20) must "
	    "be smaller than daemon.max_sessions (10)") != NULL);
	config_free(cfg);

	/* A max_duration that failed is not "shorter than duration". */
	cfg = load(LISTENER "[ban]\nduration = \"30d\"\n"
	    "max_duration = \"soon\"\n", &d);
	CHECK(cfg == NULL);
	CHECK_INT_EQ(d.errors, 1);
	CHECK(strstr(d.text, "shorter") == NULL);
	config_free(cfg);
	cfg = load(LISTENER "[daemon]\nmax_sessions = -1\n"
	    "reserved_sessions = 20\n", &d);
	CHECK(cfg == NULL);
	CHECK_INT_EQ(d.errors, 1);
	config_free(cfg);

	/* A listener that failed is no "no listener", and one without a
	 * name does not trip the metrics check. */
	cfg = load("[[listener]]\nlisten = [\"127.0.0.1:2525\"]\n"
	    "protocol = \"smtp\"\ntls = \"implicit\"\n"
	    "backend = \"127.0.0.1:25\"\n[daemon]\n"
	    "metrics = \"127.0.0.1:2525\"\n", &d);
	CHECK(cfg == NULL);
	CHECK(strstr(d.text, "needs a name") != NULL);
	CHECK(strstr(d.text, "no [[listener]]") == NULL);
	CHECK(strstr(d.text, "[tls] needs certificate and key") != NULL);
	config_free(cfg);
	cfg = load("listener = 3\n", &d);
	CHECK(cfg == NULL);
	CHECK_INT_EQ(d.errors, 1);
	config_free(cfg);
}

static void
test_passes_only_what_starts(void)
{
	struct config *cfg;

	/* Beyond what kernel sets take. */
	EXPECT_ERROR(LISTENER "[ban]\nduration = \"100000w\"\n",
	    "t.toml:8:12: ban.duration must be at most 3650d (ten years)");
	EXPECT_ERROR(LISTENER "[ban]\nmax_duration = \"3651d\"\n",
	    "t.toml:8:16: ban.max_duration must be at most 3650d");
	config_free(EXPECT_OK(LISTENER "[ban]\nduration = \"3650d\"\n"
	    "max_duration = \"3650d\"\n"));
	/* ban.c reads forget_after = 0 as "unset", a week: refuse it. */
	EXPECT_ERROR(LISTENER "[ban]\nforget_after = \"0s\"\n",
	    "t.toml:8:16: ban.forget_after must be at least 1s");
	cfg = EXPECT_OK(LISTENER "[ban]\nforget_after = \"1s\"\n");
	if (cfg != NULL)
		CHECK_INT_EQ(cfg->ban.forget_after_ms, 1000);
	config_free(cfg);

	/* limit = 0 turns a window off and needs no window. */
	cfg = EXPECT_OK(LISTENER "[policy.rate]\nconnections = { limit = 0 }\n"
	    "auth_failures = { limit = 0 }\n");
	if (cfg != NULL) {
		CHECK_INT_EQ(cfg->policy.rate.connections.limit, 0);
		CHECK_INT_EQ(cfg->policy.rate.auth_failures.limit, 0);
	}
	config_free(cfg);
	EXPECT_ERROR(LISTENER "[policy.rate]\nauth_failures = { window = "
	    "\"1m\" }\n", "policy.rate.auth_failures needs both limit and "
	    "window");

	/* privdrop() refuses root at start. */
	EXPECT_ERROR(LISTENER "[daemon]\nuser = \"root\"\n",
	    "t.toml:8:8: daemon.user 'root' is root; name an unprivileged "
	    "user or omit the key");

	/* A wildcard address holds its port for its whole family. */
	EXPECT_ERROR(LISTENER "[[listener]]\nname = \"b\"\n"
	    "listen = [\"0.0.0.0:2525\"]\nprotocol = \"smtp\"\n"
	    "tls = \"none\"\nbackend = \"127.0.0.1:25\"\n",
	    "t.toml:9:11: listener 'b': 0.0.0.0:2525 overlaps "
	    "127.0.0.1:2525 of listener 'smtp'");
	EXPECT_ERROR("[[listener]]\nname = \"a\"\nlisten = [\"[::]:25\", "
	    "\"[::1]:25\"]\nprotocol = \"smtp\"\ntls = \"none\"\n"
	    "backend = \"127.0.0.1:1\"\n",
	    "t.toml:3:22: listener 'a': [::1]:25 overlaps [::]:25 listed "
	    "before it");
	EXPECT_ERROR("[[listener]]\nname = \"a\"\nlisten = [\"[::1]:25\", "
	    "\"[::1]:25\"]\nprotocol = \"smtp\"\ntls = \"none\"\n"
	    "backend = \"127.0.0.1:1\"\n",
	    "t.toml:3:23: listener 'a' lists [::1]:25 twice");
	/* IPv6 listening sockets are IPv6-only: the families never meet. */
	config_free(EXPECT_OK("[[listener]]\nname = \"a\"\n"
	    "listen = [\"0.0.0.0:25\", \"[::1]:25\"]\nprotocol = \"smtp\"\n"
	    "tls = \"none\"\nbackend = \"127.0.0.1:1\"\n"
	    "[[listener]]\nname = \"b\"\n"
	    "listen = [\"[::]:26\", \"127.0.0.1:26\"]\nprotocol = \"smtp\"\n"
	    "tls = \"none\"\nbackend = \"127.0.0.1:1\"\n"));

	/* The metrics endpoint binds beside the listeners. */
	EXPECT_ERROR("[daemon]\nmetrics = \"127.0.0.1:2525\"\n" LISTENER,
	    "t.toml:2:11: daemon.metrics: 127.0.0.1:2525 is already used by "
	    "listener 'smtp'");
	EXPECT_ERROR("[daemon]\nmetrics = \"0.0.0.0:2525\"\n" LISTENER,
	    "t.toml:2:11: daemon.metrics: 0.0.0.0:2525 overlaps "
	    "127.0.0.1:2525 of listener 'smtp'");
	/* Its socket is dual-stack (metrics.c): [::] takes IPv4 too. */
	EXPECT_ERROR("[daemon]\nmetrics = \"[::]:2525\"\n" LISTENER,
	    "t.toml:2:11: daemon.metrics: [::]:2525 overlaps 127.0.0.1:2525 "
	    "of listener 'smtp'");
	config_free(EXPECT_OK("[daemon]\nmetrics = \"[::1]:2525\"\n"
	    LISTENER));
	config_free(EXPECT_OK("[daemon]\nmetrics = \"127.0.0.1:2526\"\n"
	    LISTENER));

	/* An IPv4-mapped address fails at bind on an IPv6-only socket. */
	EXPECT_ERROR("[[listener]]\nname = \"a\"\n"
	    "listen = [\"[::ffff:127.0.0.1]:25\"]\nprotocol = \"smtp\"\n"
	    "tls = \"none\"\nbackend = \"127.0.0.1:1\"\n",
	    "t.toml:3:11: listener.listen: \"[::ffff:127.0.0.1]:25\" is an "
	    "IPv4 address in IPv6 form, which moat cannot listen on: write "
	    "\"127.0.0.1:25\"");
	EXPECT_ERROR("[daemon]\nmetrics = \"[::ffff:127.0.0.1]:9425\"\n"
	    LISTENER, "write \"127.0.0.1:9425\"");

	/* A backend that is moat's own listener would loop. */
#define LOOP(listen, backend)						\
	"[[listener]]\nname = \"sub\"\nlisten = [\"" listen "\"]\n"	\
	"protocol = \"smtp\"\ntls = \"none\"\nbackend = \"" backend "\"\n"
	EXPECT_ERROR(LOOP("0.0.0.0:587", "127.0.0.1:587"),
	    "t.toml:6:11: listener 'sub': backend 127.0.0.1:587 reaches the "
	    "listener's own socket on 0.0.0.0:587, so moat would connect to "
	    "itself");
	EXPECT_ERROR(LOOP("127.0.0.1:587", "127.0.0.1:587"), "own socket");
	EXPECT_ERROR(LOOP("0.0.0.0:587", "127.9.9.9:587"), "own socket");
	EXPECT_ERROR(LOOP("127.0.0.1:587", "0.0.0.0:587"), "own socket");
	EXPECT_ERROR(LOOP("[::]:587", "[::1]:587"), "own socket");
	EXPECT_ERROR(LOOP("[::1]:587", "[::]:587"), "own socket");
	EXPECT_ERROR(LOOP("192.0.2.1:587", "192.0.2.1:587"), "own socket");
	EXPECT_ERROR(LOOP("0.0.0.0:587", "[::ffff:127.0.0.1]:587"),
	    "own socket");
	config_free(EXPECT_OK(LOOP("0.0.0.0:587", "127.0.0.1:10587")));
	config_free(EXPECT_OK(LOOP("0.0.0.0:587", "192.0.2.1:587")));
	config_free(EXPECT_OK(LOOP("127.0.0.1:587", "127.0.0.2:587")));
	config_free(EXPECT_OK(LOOP("0.0.0.0:587", "[::1]:587")));
	config_free(EXPECT_OK(LOOP("[::]:587", "127.0.0.1:587")));
	/* Into another listener, whichever comes first in the file. */
	EXPECT_ERROR(LOOP("127.0.0.1:465", "127.0.0.1:587")
	    LOOP("0.0.0.0:587", "127.0.0.1:10587"),
	    "t.toml:6:11: listener 'sub': backend 127.0.0.1:587 reaches "
	    "listener 'sub' on 0.0.0.0:587");
#undef LOOP
	EXPECT_ERROR(LISTENER "[[listener]]\nname = \"b\"\n"
	    "listen = [\"127.0.0.1:2465\"]\nprotocol = \"smtp\"\n"
	    "tls = \"none\"\nbackend = \"127.0.0.1:2525\"\n",
	    "t.toml:12:11: listener 'b': backend 127.0.0.1:2525 reaches "
	    "listener 'smtp' on 127.0.0.1:2525");
	EXPECT_ERROR("[[listener]]\nname = \"b\"\n"
	    "listen = [\"127.0.0.1:2465\"]\nprotocol = \"smtp\"\n"
	    "tls = \"none\"\nbackend = \"127.0.0.1:2525\"\n" LISTENER,
	    "t.toml:6:11: listener 'b': backend 127.0.0.1:2525 reaches "
	    "listener 'smtp' on 127.0.0.1:2525");

	/* A hint must name a valid code: "uk" becomes "GB", not "UK". */
	EXPECT_ERROR(LISTENER "[policy.geo]\ndeny_countries = [\"uk\"]\n",
	    "t.toml:8:19: \"uk\" is not an ISO 3166-1 code; the United "
	    "Kingdom is \"GB\"");
	EXPECT_ERROR(LISTENER "[policy.geo]\ndeny_countries = [\"zz\"]\n",
	    "\"zz\" in policy.geo.deny_countries is not an ISO 3166-1");
	EXPECT_ERROR(LISTENER "[policy.geo]\ndeny_countries = [\"dE\"]\n",
	    "country codes are upper case: write \"DE\"");
}

static void
test_duration_hints(void)
{
	EXPECT_ERROR(LISTENER "[ban]\nduration = \"10S\"\n",
	    "t.toml:8:12: invalid duration \"10S\" for ban.duration: units "
	    "are lower case: write \"10s\"");
	EXPECT_ERROR(LISTENER "[ban]\nduration = \"5M\"\n",
	    "units are lower case: write \"5m\" (m is minutes)");
	EXPECT_ERROR(LISTENER "[ban]\nduration = \"1H30M\"\n",
	    "units are lower case: write \"1h30m\" (m is minutes)");
	EXPECT_ERROR(LISTENER "[ban]\nduration = \"250MS\"\n",
	    "units are lower case: write \"250ms\"\n");
	EXPECT_ERROR(LISTENER "[ban]\nduration = \"1.5h\"\n",
	    "invalid duration \"1.5h\" for ban.duration: fractions are not "
	    "allowed: write \"1h30m\"");
	EXPECT_ERROR(LISTENER "[ban]\nduration = \"0.5s\"\n",
	    "fractions are not allowed: write \"500ms\"");
	EXPECT_ERROR(LISTENER "[ban]\nduration = \"2,5D\"\n",
	    "fractions are not allowed: write \"2d12h\"");
	/* Finer than a millisecond: no spelling to offer. */
	EXPECT_ERROR(LISTENER "[ban]\nduration = \"1.0001s\"\n",
	    "fractions are not allowed; combine whole units, as in "
	    "\"1h30m\"");
	EXPECT_ERROR(LISTENER "[ban]\nduration = \"5 minutes\"\n",
	    "write a number and a unit with nothing between them");
	EXPECT_ERROR(LISTENER "[ban]\nduration = \"5min\"\n",
	    "unknown unit; use ms, s, m, h, d or w");
}

static void
test_open_relay_warning(void)
{
	struct diags d;
	struct config *cfg = load(LISTENER "backend_proxy = \"none\"\n", &d);

	CHECK(cfg != NULL);
	CHECK_INT_EQ(d.warnings, 1);
	CHECK(strstr(d.text, "t.toml:7:17: warning: listener 'smtp': "
	    "backend_proxy = \"none\"") != NULL);
	CHECK(strstr(d.text, "OPEN RELAY") != NULL);
	config_free(cfg);
}

/* require_tls on an implicit-TLS listener changes nothing: said once. */
static void
test_require_tls_implicit_warning(void)
{
	struct diags d;
	struct config *cfg = load("[tls]\ncertificate = \"/etc/passwd\"\nkey = "
	    "\"/etc/passwd\"\n[[listener]]\nname = \"smtps\"\nlisten = "
	    "[\"127.0.0.1:4650\"]\nprotocol = \"smtp\"\ntls = \"implicit\"\n"
	    "require_tls = true\nbackend = \"127.0.0.1:25\"\n"
	    "backend_proxy = \"v2\"\n", &d);

	CHECK(cfg != NULL);
	CHECK_INT_EQ(d.warnings, 1);
	CHECK(strstr(d.text, "t.toml:4:1: warning: listener 'smtps': "
	    "require_tls has no effect with tls = \"implicit\"") != NULL);
	config_free(cfg);
}

/* A POP3 listener with timeouts (may be ""): its idle time, warnings. */
static void
check_pop3_idle(const char *timeouts, uint64_t want_ms, int want_warnings,
    int line)
{
	char toml[512];
	struct diags d;
	struct config *cfg;

	snprintf(toml, sizeof(toml), "[[listener]]\nname = \"pop3\"\n"
	    "listen = [\"127.0.0.1:1110\"]\nprotocol = \"pop3\"\n"
	    "tls = \"none\"\nbackend = \"127.0.0.1:110\"\n%s", timeouts);
	cfg = load(toml, &d);
	if (cfg == NULL || d.warnings != want_warnings ||
	    cfg->listeners[0].idle_ms != want_ms) {
		check_failed++;
		fprintf(stderr, "%s:%d: idle_ms %llu, %d warnings:\n%s",
		    __FILE__, line, cfg == NULL ? 0ULL :
		    (unsigned long long)cfg->listeners[0].idle_ms,
		    d.warnings, d.text);
	} else
		check_passed++;
	config_free(cfg);
}

/* A POP3 listener idles 10 minutes unless told (RFC 1939 3). */
static void
test_pop3_idle(void)
{
	struct diags d;
	struct config *cfg;

	check_pop3_idle("", 600000, 0, __LINE__);
	check_pop3_idle("timeouts = { connect = \"2s\" }\n", 600000, 0,
	    __LINE__);
	check_pop3_idle("timeouts = { idle = \"10m\" }\n", 600000, 0, __LINE__);
	check_pop3_idle("timeouts = { idle = \"5m\" }\n", 300000, 1, __LINE__);
	cfg = load(LISTENER "timeouts = { idle = \"5m\" }\n", &d);
	CHECK(cfg != NULL);
	CHECK_INT_EQ(d.warnings, 0);	/* SMTP: RFC 5321's own 5 minutes */
	config_free(cfg);
	cfg = load("[[listener]]\nname = \"pop3\"\nlisten = "
	    "[\"127.0.0.1:1110\"]\nprotocol = \"pop3\"\ntls = \"none\"\n"
	    "backend = \"127.0.0.1:110\"\ntimeouts = { idle = \"1m\" }\n", &d);
	CHECK(strstr(d.text, "t.toml:7:12: warning: listener 'pop3': "
	    "timeouts.idle is shorter than the 10 minutes RFC 1939") != NULL);
	config_free(cfg);
}

/* One mistake, one error: no second one that follows from the first. */
static void
test_no_follow_on_errors(void)
{
	static const char *const cases[] = {
		"[[listener]]\nname = \"bad name\"\nlisten = "
		    "[\"127.0.0.1:2525\"]\nprotocol = \"smtp\"\ntls = "
		    "\"none\"\nbackend = \"127.0.0.1:25\"\n",
		"[[listener]]\nname = \"smtp\"\nlisten = "
		    "[\"127.0.0.1:2525\"]\nprotocol = \"smtp\"\ntls = "
		    "\"STARTTLS\"\nrequire_tls = true\nbackend = "
		    "\"127.0.0.1:25\"\n",
		LISTENER "accept_proxy = true\naccept_proxy_from = "
		    "[\"10.0.0.300/8\"]\n",
		"[tls]\ncertificate = \"/etc/passwd\"\nkey = \"/etc/passwd\""
		    "\n[[tls.sni]]\nnames = [\"bad name\"]\ncertificate = "
		    "\"/etc/passwd\"\nkey = \"/etc/passwd\"\n" LISTENER,
	};
	struct diags d;
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct config *cfg = load(cases[i], &d);

		CHECK(cfg == NULL);
		if (d.errors != 1) {
			check_failed++;
			fprintf(stderr, "%s:%d: case %zu: %d errors:\n%s",
			    __FILE__, __LINE__, i, d.errors, d.text);
		} else
			check_passed++;
	}
	/* Absent or empty is still said. */
	EXPECT_ERROR("[tls]\ncertificate = \"/etc/passwd\"\nkey = "
	    "\"/etc/passwd\"\n[[tls.sni]]\nnames = []\ncertificate = "
	    "\"/etc/passwd\"\nkey = \"/etc/passwd\"\n" LISTENER,
	    "[[tls.sni]] needs names");
	EXPECT_ERROR(LISTENER "accept_proxy = true\naccept_proxy_from = []\n",
	    "accept_proxy = true needs accept_proxy_from");
	EXPECT_ERROR("[[listener]]\nlisten = [\"127.0.0.1:2525\"]\n",
	    "[[listener]] needs a name");
}

/* Values that load but hurt: each gets a warning, or is refused. */
static void
test_risky_values(void)
{
	static const struct {
		const char *toml, *want;	/* want NULL: no warning */
	} cases[] = {
		{ "accept_proxy = true\naccept_proxy_from = [\"10.0.0.0/8\", "
		    "\"0.0.0.0/0\"]\n", "t.toml:9:1: warning: listener."
		    "accept_proxy_from trusts every IPv4 address: any client" },
		{ "accept_proxy = true\naccept_proxy_from = [\"::/0\"]\n",
		    "warning: listener.accept_proxy_from trusts every "
		    "address" },
		{ "accept_proxy = true\naccept_proxy_from = [\"10.0.0.0/8\"]"
		    "\n", NULL },
		{ "timeouts = { handshake = \"500ms\" }\n", "t.toml:8:12: "
		    "warning: listener.timeouts.handshake is under a second" },
		{ "timeouts = { connect = \"999ms\" }\n", "warning: listener."
		    "timeouts.connect is under a second: it also bounds" },
		{ "timeouts = { handshake = \"1s\", connect = \"1s\" }\n",
		    NULL },
		{ "timeouts = { idle = \"1m\" }\n", "warning: listener 'smtp':"
		    " timeouts.idle is shorter than the 5 minutes RFC 5321" },
		{ "[policy.geo]\ndatabase = \"/etc/passwd\"\nallow_countries = "
		    "[\"DE\", \"EU\"]\n", "t.toml:10:26: warning: \"EU\" in "
		    "policy.geo.allow_countries does not stand for the "
		    "European Union" },
		{ "[policy.geo]\ndatabase = \"/etc/passwd\"\ndeny_countries = "
		    "[\"AP\"]\n", "does not stand for Asia-Pacific" },
		{ "[policy]\nallow = [\"10.0.0.0/8\"]\ndeny = [\"10.1.2.0/24\","
		    " \"192.0.2.0/24\"]\n", "t.toml:10:9: warning: deny entry "
		    "\"10.1.2.0/24\" lies wholly inside policy.allow, which "
		    "wins, so it refuses nobody\n" },
		{ "[policy]\ndeny = [\"2001:db8::/48\", \"10.0.0.0/8\", "
		    "\"2001:db8:1::/48\"]\nallow = [\"2001:db8::/32\"]\n",
		    "t.toml:9:9: warning: deny entry \"2001:db8::/48\" lies "
		    "wholly inside policy.allow, which wins, so it refuses "
		    "nobody; so does 1 more deny entry\n" },
		/* Overlapping only: the rest of the deny entry still works. */
		{ "[policy]\nallow = [\"10.1.2.0/24\"]\ndeny = "
		    "[\"10.0.0.0/8\"]\n", NULL },
		{ "[daemon]\nmax_sessions = 0\nreserved_sessions = 10\n",
		    "t.toml:10:1: warning: daemon.reserved_sessions does "
		    "nothing while daemon.max_sessions = 0" },
		{ "[daemon]\nmax_sessions = 0\n", NULL },
		{ "[[listener]]\nname = \"pop3\"\nlisten = [\"[::]:2525\"]\n"
		    "protocol = \"pop3\"\ntls = \"none\"\nbackend = "
		    "\"127.0.0.1:110\"\nbackend_proxy = \"v2\"\n", "t.toml:10:11: "
		    "warning: listener 'pop3': [::]:2525 is pop3 with tls = "
		    "\"none\", but 127.0.0.1:2525 of listener 'smtp' is "
		    "smtp with tls = \"none\": which one a client reaches on "
		    "port 2525 depends on whether it comes over IPv4 or IPv6" },
		{ "[[listener]]\nname = \"smtp6\"\nlisten = [\"[::1]:2525\"]\n"
		    "protocol = \"smtp\"\ntls = \"none\"\nbackend = "
		    "\"[::1]:25\"\nbackend_proxy = \"v2\"\n", NULL },
		/* Two specific addresses may serve two names. */
		{ "[[listener]]\nname = \"pop3\"\nlisten = [\"[::1]:2525\"]\n"
		    "protocol = \"pop3\"\ntls = \"none\"\nbackend = "
		    "\"127.0.0.1:110\"\nbackend_proxy = \"v2\"\n", NULL },
	};
	struct diags d;
	struct config *cfg;
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char toml[1024];

		snprintf(toml, sizeof(toml), "%s%s", LISTENER
		    "backend_proxy = \"v2\"\n", cases[i].toml);
		cfg = load(toml, &d);
		CHECK(cfg != NULL);
		CHECK_INT_EQ(d.errors, 0);
		if (d.errors > 0)
			fprintf(stderr, "case %zu: %s", i, d.text);
		if (cases[i].want == NULL)
			CHECK_INT_EQ(d.warnings, 0);
		else if (strstr(d.text, cases[i].want) == NULL) {
			check_failed++;
			fprintf(stderr, "%s:%d: case %zu: no \"%s\" in:\n%s",
			    __FILE__, __LINE__, i, cases[i].want, d.text);
		}
		config_free(cfg);
	}
	/* Said once per pair of listeners, however many addresses meet. */
	cfg = load(LISTENER "backend_proxy = \"v2\"\n[[listener]]\nname = "
	    "\"p\"\nlisten = [\"0.0.0.0:2600\", \"0.0.0.0:2601\"]\nprotocol = "
	    "\"pop3\"\ntls = \"none\"\nbackend = \"127.0.0.1:110\"\n"
	    "backend_proxy = \"v2\"\n[[listener]]\nname = \"s\"\nlisten = "
	    "[\"[::]:2600\", \"[::]:2601\"]\nprotocol = \"smtp\"\ntls = "
	    "\"none\"\nbackend = \"127.0.0.1:25\"\nbackend_proxy = \"v2\"\n",
	    &d);
	CHECK(cfg != NULL);
	CHECK_INT_EQ(d.warnings, 1);
	CHECK(strstr(d.text, "warning: listener 's': [::]:2600 is smtp with "
	    "tls = \"none\", but 0.0.0.0:2600 of listener 'p' is pop3") !=
	    NULL);
	config_free(cfg);
	cfg = load(LISTENER "backend_proxy = \"v2\"\n[policy]\nallow = "
	    "[\"0.0.0.0/0\"]\n", &d);
	CHECK(cfg != NULL);
	CHECK(strstr(d.text, "t.toml:9:1: warning: policy.allow covers every "
	    "IPv4 address: no such client is ever refused") != NULL);
	config_free(cfg);
	EXPECT_ERROR(LISTENER "[firewall]\nset4 = \"blocked\"\nset6 = "
	    "\"blocked\"\n", "t.toml:9:1: firewall.set4 and firewall.set6 "
	    "are both \"blocked\": one set holds IPv4 addresses");
	cfg = EXPECT_OK(LISTENER "[firewall]\nbackend = \"none\"\nset4 = "
	    "\"blocked\"\nset6 = \"blocked\"\n");
	config_free(cfg);
	EXPECT_ERROR(LISTENER "[daemon]\nmetrics = \"127.0.0.1:25\"\n",
	    "t.toml:8:11: daemon.metrics: listener 'smtp' has its backend at "
	    "127.0.0.1:25, moat's own metrics endpoint");
	EXPECT_ERROR(LISTENER "[daemon]\nmetrics = \"0.0.0.0:25\"\n",
	    "listener 'smtp' has its backend at 127.0.0.1:25, moat's own");
}

static void
test_v4_cover_warning(void)
{
	struct diags d;
	struct config *cfg;

	/* From a list of IPv6 martians: these deny every IPv4 client too. */
	cfg = load(LISTENER "backend_proxy = \"v2\"\n[policy]\ndeny = "
	    "[\"::/8\", \"::ffff:0:0/96\", \"::/96\", \"fe80::/10\", "
	    "\"0.0.0.0/0\", \"::ffff:192.0.2.0/120\"]\n", &d);
	CHECK(cfg != NULL);
	CHECK_INT_EQ(d.errors, 0);
	CHECK_INT_EQ(d.warnings, 2);
	CHECK(strstr(d.text, "t.toml:9:9: warning: policy.deny: \"::/8\" "
	    "matches every IPv4 client as well") != NULL);
	CHECK(strstr(d.text, "t.toml:9:17: warning: policy.deny: "
	    "\"::ffff:0:0/96\" matches") != NULL);
	config_free(cfg);
}

static void
test_list_file(void)
{
	char path[] = "/tmp/moat-test-list-XXXXXX", toml[256];
	struct diags d;
	struct config *cfg;
	FILE *f;
	int fd = mkstemp(path);

	CHECK(fd != -1);
	f = fdopen(fd, "w");
	fputs("# blocklist\n192.0.2.0/24\n\n  2001:db8::/32  # v6\r\n"
	    "198.51.100.7\n", f);
	fclose(f);
	snprintf(toml, sizeof(toml), LISTENER "[policy]\ndeny_files = "
	    "[\"%s\"]\ndeny = [\"203.0.113.0/24\"]\n", path);
	cfg = load(toml, &d);
	CHECK(cfg != NULL);
	if (cfg != NULL)
		CHECK_INT_EQ(cfg->policy.deny.n, 4);
	config_free(cfg);

	f = fopen(path, "w");
	fputs("192.0.2.0/24\n  10.1.2.3/8\n", f);
	fclose(f);
	cfg = load(toml, &d);
	CHECK(cfg == NULL);
	{
		char want[256];

		snprintf(want, sizeof(want), "%s:2:3: invalid address or CIDR "
		    "\"10.1.2.3/8\": address has bits set", path);
		CHECK(strstr(d.text, want) != NULL);
	}

	/* A byte order mark (a list saved by a Windows editor) opens the
	 * file; it is no part of the first address. */
	f = fopen(path, "w");
	fputs("\xef\xbb\xbf" "192.0.2.0/24\n198.51.100.7\n", f);
	fclose(f);
	cfg = load(toml, &d);
	CHECK(cfg != NULL);
	if (cfg != NULL)
		CHECK_INT_EQ(cfg->policy.deny.n, 3);
	config_free(cfg);

	/* A deny entry that the allow list covers is named where the list
	 * file has it, among thousands that may not be. */
	f = fopen(path, "w");
	fputs("192.0.2.0/24\n\n  10.9.0.0/16\n10.8.0.0/16\n", f);
	fclose(f);
	snprintf(toml, sizeof(toml), LISTENER "[policy]\ndeny = "
	    "[\"203.0.113.0/24\"]\ndeny_files = [\"%s\"]\nallow = "
	    "[\"10.0.0.0/8\"]\n", path);
	cfg = load(toml, &d);
	CHECK(cfg != NULL);
	CHECK_INT_EQ(d.warnings, 1);
	{
		char want[256];

		snprintf(want, sizeof(want), "%s:3:3: warning: deny entry "
		    "\"10.9.0.0/16\" lies wholly inside policy.allow, which "
		    "wins, so it refuses nobody; so does 1 more deny entry\n",
		    path);
		CHECK(strstr(d.text, want) != NULL);
		if (strstr(d.text, want) == NULL)
			fprintf(stderr, "%s", d.text);
	}
	config_free(cfg);
	unlink(path);
}

int
main(void)
{
	test_defaults();
	test_values();
	test_errors();
	test_messages_are_printable();
	test_every_problem_at_once();
	test_passes_only_what_starts();
	test_duration_hints();
	test_open_relay_warning();
	test_require_tls_implicit_warning();
	test_pop3_idle();
	test_v4_cover_warning();
	test_risky_values();
	test_no_follow_on_errors();
	test_list_file();
	return check_report("test_config");
}
