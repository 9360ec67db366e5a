/* main.c - moat's command line: run, check a config, print versions. */
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <maxminddb.h>
#include <openssl/crypto.h>
#include <openssl/opensslv.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backendprobe.h"
#include "config.h"
#include "defaults.h"
#include "log.h"
#include "moat_version.h"
#include "server.h"
#include "tlsalloc.h"

/* What -V, -p and -h printed: a full disk or a closed pipe is an error,
 * or `moat -p > moat.toml` leaves a cut file and says nothing. */
static int
stdout_done(void)
{
	if (fflush(stdout) == EOF || ferror(stdout)) {
		fprintf(stderr, "moat: standard output: %s\n",
		    strerror(errno));
		return 1;
	}
	return 0;
}

static void __attribute__((noreturn))
usage(int code)
{
	fprintf(code ? stderr : stdout,
	    "usage: moat [-tTv] [-c FILE]\n"
	    "       moat -V | -p | -h\n"
	    "\n"
	    "  -c FILE  configuration file (default: the built-in demo "
	    "configuration)\n"
	    "  -t       check the configuration and exit\n"
	    "  -T       check it, then meet each listener's backend as a "
	    "session would\n"
	    "  -v       more verbose logging (twice for debug)\n"
	    "  -V       print the versions of moat and its libraries\n"
	    "  -p       print the built-in configuration\n"
	    "  -h       this help\n");
	exit(code ? code : stdout_done());
}

static void
print_versions(void)
{
	printf("moat %s\n", MOAT_VERSION);
	printf("OpenSSL %s (built with %s)\n",
	    OpenSSL_version(OPENSSL_VERSION_STRING), OPENSSL_VERSION_STR);
	printf("libev %d.%d\n", ev_version_major(), ev_version_minor());
	/* These three have no run-time version call; pkg-config's at build. */
	printf("libnftnl %s\n", BUILT_LIBNFTNL_VERSION);
	printf("libmnl %s\n", BUILT_LIBMNL_VERSION);
	printf("libipset %s\n", BUILT_LIBIPSET_VERSION);
	printf("libmaxminddb %s\n", MMDB_lib_version());
}

/*
 * Standard input, output and error that were closed (a daemon started
 * with >&- 2>&-) become /dev/null: else the next open() takes 0, 1 or 2,
 * and the log or the events of file = "-" go into an event loop's
 * descriptor, or a client's socket.
 */
static int
stdio_open(void)
{
	int fd;

	for (fd = 0; fd <= 2; fd++)
		if (fcntl(fd, F_GETFD) == -1 && errno == EBADF &&
		    open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY) != fd)
			return -1;
	return 0;
}

int
main(int argc, char *argv[])
{
	/* Before anything can make OpenSSL allocate (tlsalloc.h). */
	bool aligned = tlsalloc_init();
	const char *path = NULL;
	config_report_fn *report;
	struct config *cfg;
	bool check = false, probe = false;
	int ch, verbose = 0;

	if (stdio_open() == -1)
		return 1;
	while ((ch = getopt(argc, argv, "c:htTpvV")) != -1) {
		switch (ch) {
		case 'c':
			/* moat -c a.toml -c b.toml: which one runs would be a
			 * guess; say so rather than take the last. */
			if (path != NULL) {
				fprintf(stderr, "moat: -c given twice ('%s' and "
				    "'%s'); moat reads one configuration "
				    "file\n", path, optarg);
				usage(2);
			}
			path = optarg;
			break;
		case 'T':
			probe = true;
			check = true;
			break;
		case 't':
			check = true;
			break;
		case 'v':
			verbose++;
			break;
		case 'V':
			print_versions();
			return stdout_done();
		case 'p':
			fputs(default_config, stdout);
			return stdout_done();
		case 'h':
			usage(0);
		default:
			usage(2);
		}
	}
	if (optind != argc) {
		fprintf(stderr, "moat: unexpected argument '%s'%s\n",
		    argv[optind], path == NULL ? " (a configuration file "
		    "goes after -c)" : "");
		usage(2);
	}
	if (!check)
		server_hold_signals();
	log_init(verbose);
	if (!aligned)
		log_debug("OpenSSL allocated before main(): its record "
		    "buffers keep the default alignment");

	report = check ? config_report_stderr : server_report_log;
	if (path != NULL)
		cfg = config_load(path, report, NULL);
	else
		cfg = config_load_buf("<built-in configuration>", ".",
		    default_config, strlen(default_config), report, NULL);
	if (cfg == NULL) {
		if (path == NULL && check)
			fprintf(stderr, "moat: the built-in configuration "
			    "expects cert.pem and key.pem in the current "
			    "directory; or give one with -c FILE\n");
		else if (path == NULL)
			log_warnx("the built-in configuration expects cert.pem "
			    "and key.pem in the current directory; or give one "
			    "with -c FILE");
		return 1;
	}
	if (check) {
		int rc = server_check(cfg), failed;

		if (rc == 0)
			fprintf(stderr, "%s: configuration OK\n", cfg->path);
		/* A backend that disagrees fails every session: an error. */
		if (rc == 0 && probe && (failed = backendprobe_run(cfg,
		    stderr)) > 0) {
			fprintf(stderr, "%s: %d of %zu listeners' backends do "
			    "not answer as their sessions would need\n",
			    cfg->path, failed, cfg->nlisteners);
			rc = 1;
		}
		config_free(cfg);
		return rc == 0 ? 0 : 1;
	}
	return server_run(cfg, path);
}
