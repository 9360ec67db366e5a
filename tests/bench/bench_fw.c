/* bench_fw.c - bans per second into kernel sets: moat's writer vs CLI. */
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "fw.h"

/*
 * Runs in a network namespace of its own (unshare(CLONE_NEWNET) first
 * thing), so the host's ruleset and ipsets are never touched; the
 * namespace and everything in it vanish when the process exits.
 *
 * For nftables and for ipset it measures:
 *   - moat's writer fed a burst of N bans (one queue, batched commits):
 *     bans per second until the kernel holds all of them, and the mean
 *     and worst time from fw_add() to commit;
 *   - moat's writer fed one ban at a time, waiting for each (latency of
 *     a lone ban, nothing to batch);
 *   - `nft add element` / `ipset add` run once per ban, the way
 *     log-driven banning tools do it, for M bans.
 * and prints the ratios. Usage: bench_fw [N [M]] (default 5000 300).
 * Needs root. Not a test: it measures, it does not pass or fail.
 */

static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void
addr4(uint8_t a[16], unsigned net, unsigned i)
{
	memset(a, 0, 16);
	a[10] = a[11] = 0xff;
	a[12] = 10;
	a[13] = (uint8_t)net;
	a[14] = (uint8_t)(i >> 8);
	a[15] = (uint8_t)i;
}

static void
quiet(void *arg, const struct fw_report *r)
{
	(void)arg;
	fprintf(stderr, "  [%s] %s\n", fw_problem_str(r->problem), r->message);
}

struct result {
	double burst_rate, burst_mean_us, burst_max_us;
	double single_us;
	double cli_rate, cli_us;
};

static int
run_writer(enum cfg_firewall be, unsigned n, unsigned m, struct result *res)
{
	struct config cfg;
	struct fw_stats st;
	struct fw *fw;
	uint8_t a[16];
	double t0, t1;
	unsigned i;

	memset(&cfg, 0, sizeof(cfg));
	cfg.firewall.backend = be;
	cfg.firewall.table = (char *)(uintptr_t)"moat";
	cfg.firewall.set4 = (char *)(uintptr_t)"blocked4";
	cfg.firewall.set6 = (char *)(uintptr_t)"blocked6";
	cfg.firewall.create = true;
	if ((fw = fw_open(NULL, &cfg, quiet, NULL)) == NULL)
		return -1;
	/* Warm up: opens the socket and creates the sets. */
	addr4(a, 250, 1);
	fw_add(fw, a, 3600000);
	fw_sync(fw, 10000);

	t0 = now_s();
	for (i = 0; i < n; i++) {
		addr4(a, 1 + i / 65536, i % 65536);
		fw_add(fw, a, 3600000);
	}
	if (!fw_sync(fw, 120000))
		fprintf(stderr, "  writer did not finish\n");
	t1 = now_s();
	fw_stats(fw, &st);
	res->burst_rate = n / (t1 - t0);
	res->burst_mean_us = st.written > 1 ? (double)st.latency_us_sum /
	    (double)(st.written - 1) : 0;
	res->burst_max_us = (double)st.latency_us_max;
	printf("  %-8s burst: %u bans in %.3f s, %llu batches, %llu "
	    "failed\n", be == CFG_FW_NFTABLES ? "nftables" : "ipset", n,
	    t1 - t0, (unsigned long long)st.batches,
	    (unsigned long long)st.failed);

	t0 = now_s();
	for (i = 0; i < m; i++) {
		addr4(a, 200, i);
		fw_add(fw, a, 3600000);
		fw_sync(fw, 10000);
	}
	t1 = now_s();
	res->single_us = (t1 - t0) * 1e6 / m;
	fw_close(fw);
	return 0;
}

static int
run_cli(const char *const argv_fmt[], unsigned m, double *rate,
    double *us)
{
	char ip[32], *argv[16];
	double t0, t1;
	unsigned i, k;
	pid_t pid;
	int status, fails = 0;

	t0 = now_s();
	for (i = 0; i < m; i++) {
		snprintf(ip, sizeof(ip), "10.201.%u.%u", i / 256, i % 256);
		for (k = 0; argv_fmt[k] != NULL && k < 15; k++)
			argv[k] = strcmp(argv_fmt[k], "IP") == 0 ? ip :
			    (char *)(uintptr_t)argv_fmt[k];
		argv[k] = NULL;
		if ((pid = fork()) == 0) {
			execvp(argv[0], argv);
			_exit(127);
		}
		if (pid < 0 || waitpid(pid, &status, 0) < 0 ||
		    !WIFEXITED(status) || WEXITSTATUS(status) != 0)
			fails++;
	}
	t1 = now_s();
	*rate = m / (t1 - t0);
	*us = (t1 - t0) * 1e6 / m;
	if (fails > 0)
		fprintf(stderr, "  %s: %d of %u runs failed\n", argv_fmt[0],
		    fails, m);
	return fails == (int)m ? -1 : 0;
}

static void
print(const char *name, const struct result *r, const char *cli)
{
	printf("\n%s\n", name);
	printf("  moat writer, burst      %10.0f bans/s   mean %8.0f us  "
	    "max %8.0f us (queue to kernel)\n", r->burst_rate,
	    r->burst_mean_us, r->burst_max_us);
	printf("  moat writer, one by one %10.0f bans/s   %8.0f us per ban\n",
	    1e6 / r->single_us, r->single_us);
	printf("  %-23s %10.0f bans/s   %8.0f us per ban\n", cli,
	    r->cli_rate, r->cli_us);
	printf("  ratio: burst %.0fx, one by one %.1fx the bans/s of %s\n",
	    r->burst_rate / r->cli_rate, r->cli_us / r->single_us, cli);
}

int
main(int argc, char **argv)
{
	static const char *const nft_add[] = { "nft", "add", "element",
	    "inet", "moat", "blocked4", "{", "IP", "timeout", "3600s", "}",
	    NULL };
	static const char *const ipset_add[] = { "ipset", "add", "blocked4",
	    "IP", "timeout", "3600", "-exist", NULL };
	struct result nft, ips;
	unsigned n = argc > 1 ? (unsigned)atoi(argv[1]) : 5000;
	unsigned m = argc > 2 ? (unsigned)atoi(argv[2]) : 300;

	if (n == 0 || n > 1000000 || m == 0 || m > 65536) {
		fprintf(stderr, "usage: bench_fw [N [M]]\n");
		return 2;
	}
	if (unshare(CLONE_NEWNET) == -1) {
		fprintf(stderr, "bench_fw: unshare(CLONE_NEWNET): %s (run as "
		    "root)\n", strerror(errno));
		return 1;
	}
	printf("bench_fw: %u bans per burst, %u one by one, in a private "
	    "network namespace\n", n, m);
	memset(&nft, 0, sizeof(nft));
	memset(&ips, 0, sizeof(ips));
	if (run_writer(CFG_FW_NFTABLES, n, m, &nft) == -1 ||
	    run_cli(nft_add, m, &nft.cli_rate, &nft.cli_us) == -1)
		fprintf(stderr, "nftables part failed\n");
	if (run_writer(CFG_FW_IPSET, n, m, &ips) == -1 ||
	    run_cli(ipset_add, m, &ips.cli_rate, &ips.cli_us) == -1)
		fprintf(stderr, "ipset part failed\n");
	print("nftables (inet moat blocked4)", &nft, "nft add element");
	print("ipset (blocked4 hash:ip)", &ips, "ipset add");
	return 0;
}
