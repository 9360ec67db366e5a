/* moatctl.c - the operator's client for moat's control socket. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "addr.h"
#include "ban.h"
#include "duration.h"
#include "events.h"
#include "moat_version.h"

#define DEFAULT_SOCKET "/run/moat/control.sock"
#define REQUEST_MAX 1024
/* How long a reply may take (a reload reads files and builds TLS). */
#define REPLY_TIMEOUT 120

enum {
	EXIT_OK = 0,
	EXIT_FAIL = 1,		/* moat said no, or cannot be reached */
	EXIT_USAGE = 2,
};

static void __attribute__((noreturn))
usage(int code)
{
	fprintf(code ? stderr : stdout,
	    "usage: moatctl [-s SOCKET] [--json] COMMAND [ARG...]\n"
	    "\n"
	    "commands:\n"
	    "  status                      version, uptime, listeners, "
	    "sessions, bans,\n"
	    "                              lists, geo database, firewall,\n"
	    "                              certificate expiry\n"
	    "  bans [IP|CIDR]              active bans (in that prefix): "
	    "address, reason,\n"
	    "                              time left, count\n"
	    "  ban IP [DURATION]           ban IP (default: the configured "
	    "[ban] duration)\n"
	    "  unban IP                    lift a ban\n"
	    "  reload                      reload the configuration (as "
	    "SIGHUP); show errors\n"
	    "  reopen                      reopen the events file (after "
	    "logrotate)\n"
	    "  tail [--event E] [--ip IP]  follow block events as they "
	    "happen\n"
	    "\n"
	    "options:\n"
	    "  -s, --socket SOCKET  control socket (default %s)\n"
	    "  -j, --json           machine output: one JSON object per "
	    "reply, JSON lines\n"
	    "                       for tail\n"
	    "  -h, --help           this help\n"
	    "  -V, --version        print the version\n"
	    "\n"
	    "DURATION is a number with a unit: 30s, 10m, 2h, 7d, 1h30m.\n"
	    "Exit status: 0 done, 1 moat refused or cannot be reached, 2 "
	    "usage error.\n", DEFAULT_SOCKET);
	exit(code);
}

static void __attribute__((noreturn, format(printf, 1, 2)))
bad_usage(const char *fmt, ...)
{
	va_list ap;

	fputs("moatctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs("\n\n", stderr);
	usage(EXIT_USAGE);
}

/*
 * Prints s as a JSON string the way moat does (sbuf_json_str): control
 * characters escaped, bytes past ASCII as '?', so that the line parses
 * whatever a path or a stray reply holds.
 */
static void
json_str(FILE *f, const char *s)
{
	unsigned char c;

	fputc('"', f);
	for (; (c = (unsigned char)*s) != '\0'; s++) {
		if (c == '"' || c == '\\')
			fprintf(f, "\\%c", c);
		else if (c < 0x20)
			fprintf(f, "\\u%04x", c);
		else
			fputc(c > 0x7e ? '?' : c, f);
	}
	fputc('"', f);
}

/*
 * Says why the command failed: on stderr for people; with --json as the
 * object moat sends when it refuses, on stdout, because a script reads
 * only that and must get an answer whoever failed, moat or moatctl.
 */
static void __attribute__((format(printf, 2, 3)))
fail(bool json, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (json) {
		fputs("{\"ok\":false,\"error\":", stdout);
		json_str(stdout, msg);
		fputs("}\n", stdout);
	} else
		fprintf(stderr, "moatctl: %s\n", msg);
}

/* Why reading a reply failed; SO_RCVTIMEO expiring reads as EAGAIN. */
static const char *
read_error(int e)
{
	static char msg[96];

	if (e != EAGAIN && e != EWOULDBLOCK)
		return strerror(e);
	snprintf(msg, sizeof(msg), "no reply from moat within %d s (is it "
	    "stuck? its log may say why)", REPLY_TIMEOUT);
	return msg;
}

static bool
valid_ip(const char *s)
{
	unsigned char buf[16];

	return inet_pton(AF_INET, s, buf) == 1 ||
	    inet_pton(AF_INET6, s, buf) == 1;
}

/* Whether s is one word of the request line: no space, no control
 * byte. */
static bool
one_word(const char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s <= ' ' || *s == 0x7f)
			return false;
	return true;
}

/* Checks the command and its arguments and writes the request line. */
static bool
build_request(char *req, size_t len, bool json, int argc, char **argv,
    bool *tail)
{
	const char *cmd = argv[0], *why;
	bool have_event = false, have_ip = false;
	uint64_t ms;
	size_t off;
	int i;

	*tail = false;
	/* The request is one line of words: an argument holding a space or
	 * a line break would be read as more words or another command
	 * ("bans '10.0.0.0/8<LF>unban IP'" ran the unban). */
	for (i = 0; i < argc; i++)
		if (!one_word(argv[i]))
			bad_usage("%s: an argument holds a space or a control "
			    "character", cmd);
	/* What moat's "try help" leads a moatctl user to type. */
	if (strcmp(cmd, "help") == 0 && argc == 1)
		usage(0);
	if (strcmp(cmd, "status") == 0 || strcmp(cmd, "reload") == 0 ||
	    strcmp(cmd, "reopen") == 0) {
		if (argc != 1)
			bad_usage("%s takes no arguments", cmd);
	} else if (strcmp(cmd, "bans") == 0) {
		struct cidr c;

		if (argc > 2)
			bad_usage("usage: bans [IP or CIDR]");
		if (argc == 2 && cidr_parse(argv[1], &c, &why) == -1)
			bad_usage("bans: invalid address or prefix '%s': %s",
			    argv[1], why);
	} else if (strcmp(cmd, "ban") == 0) {
		if (argc < 2 || argc > 3)
			bad_usage("usage: ban IP [DURATION]");
		if (!valid_ip(argv[1]))
			bad_usage("ban: '%s' is not an IPv4 or IPv6 address",
			    argv[1]);
		if (argc == 3) {
			if (duration_parse(argv[2], &ms, &why) == -1)
				bad_usage("ban: invalid duration '%s': %s",
				    argv[2], why);
			if (ms < 1000)
				bad_usage("ban: a ban lasts at least 1s");
			if (ms > BAN_MAX_MS)
				bad_usage("ban: a ban lasts at most "
				    BAN_MAX_TEXT);
		}
	} else if (strcmp(cmd, "unban") == 0) {
		if (argc != 2)
			bad_usage("usage: unban IP");
		if (!valid_ip(argv[1]))
			bad_usage("unban: '%s' is not an IPv4 or IPv6 "
			    "address", argv[1]);
	} else if (strcmp(cmd, "tail") == 0) {
		*tail = true;
		for (i = 1; i < argc; i++) {
			if (strcmp(argv[i], "--event") == 0 && i + 1 < argc &&
			    !have_event) {
				if (!event_name_known(argv[++i]))
					bad_usage("tail: unknown event '%s' "
					    "(events: %s)", argv[i],
					    EVENT_NAMES);
				have_event = true;
			} else if (strcmp(argv[i], "--ip") == 0 &&
			    i + 1 < argc && !have_ip) {
				if (!valid_ip(argv[++i]))
					bad_usage("tail: '%s' is not an IPv4 "
					    "or IPv6 address", argv[i]);
				have_ip = true;
			} else
				bad_usage("usage: tail [--event E] [--ip IP]");
		}
	} else {
		bad_usage("unknown command '%s'", cmd);
	}
	off = (size_t)snprintf(req, len, "%s", json ? "json" : "");
	for (i = 0; i < argc && off < len; i++)
		off += (size_t)snprintf(req + off, len - off, "%s%s",
		    off > 0 ? " " : "", argv[i]);
	/* moat reads at most REQUEST_MAX bytes, the LF included. */
	if (off + 1 > REQUEST_MAX)
		bad_usage("request too long (at most %d bytes)", REQUEST_MAX);
	req[off++] = '\n';
	req[off] = '\0';
	return true;
}

static int
connect_socket(const char *path, bool json)
{
	struct sockaddr_un sun;
	struct timeval tv = { REPLY_TIMEOUT, 0 };
	int fd;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sun.sun_path)) {
		fail(json, "cannot connect to %s: path too long", path);
		return -1;
	}
	memcpy(sun.sun_path, path, strlen(path));
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1) {
		fail(json, "socket: %s", strerror(errno));
		return -1;
	}
	/*
	 * Before connect(), which it bounds too: on a unix socket connect()
	 * waits while moat's queue of connections not yet accepted is full,
	 * as when moat is stuck and earlier moatctl runs gave up on it; they
	 * stay queued, and without the timeout every later run would wait
	 * for ever.
	 */
	(void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == -1) {
		struct stat st;
		int e = errno;

		/* "refused" reads as "moat is down"; a wrong -s is likelier. */
		if (e == ECONNREFUSED && stat(path, &st) == 0 &&
		    !S_ISSOCK(st.st_mode))
			fail(json, "cannot connect to %s: it is a %s, not a "
			    "socket (see -s and daemon.control_socket)", path,
			    S_ISDIR(st.st_mode) ? "directory" : "file");
		else if (e == EAGAIN || e == EWOULDBLOCK)
			fail(json, "cannot connect to %s: moat accepted no "
			    "connection within %d s (is it stuck? its log may "
			    "say why)", path, REPLY_TIMEOUT);
		else
			fail(json, "cannot connect to %s: %s%s", path,
			    strerror(e), e == ENOENT || e == ECONNREFUSED ?
			    " (is moat running? see -s and "
			    "daemon.control_socket)" : e == EACCES ? " (the "
			    "socket is for root, or the user moat started "
			    "as)" : "");
		close(fd);
		return -1;
	}
	return fd;
}

/* MSG_NOSIGNAL: moat may hang up first (a refusal), and SIGPIPE would
 * end moatctl before it reads why. */
static bool
send_all(int fd, const char *p, size_t n)
{
	ssize_t w;

	while (n > 0) {
		w = send(fd, p, n, MSG_NOSIGNAL);
		if (w == -1 && errno == EINTR)
			continue;
		if (w <= 0)
			return false;
		p += w;
		n -= (size_t)w;
	}
	return true;
}

int
main(int argc, char *argv[])
{
	const char *path = DEFAULT_SOCKET;
	char req[REQUEST_MAX + 2], why[512], *line = NULL, *held = NULL;
	char **args;
	size_t cap = 0, nargs = 0, heldlen = 0;
	ssize_t n;
	bool json = false, tail, ok, ended = false, must_end, hold;
	bool werr = false;
	struct timeval tv = { REPLY_TIMEOUT, 0 };
	FILE *in, *out;
	int i, fd, send_errno;

	if ((args = calloc((size_t)argc + 1, sizeof(*args))) == NULL) {
		fail(false, "%s", strerror(errno));
		return EXIT_FAIL;
	}
	/* Options may come before or after the command; "--" ends them. */
	for (i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (strcmp(a, "--") == 0) {
			for (i++; i < argc; i++)
				args[nargs++] = argv[i];
			break;
		}
		if (strcmp(a, "-j") == 0 || strcmp(a, "--json") == 0)
			json = true;
		else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0)
			usage(EXIT_OK);
		else if (strcmp(a, "-V") == 0 || strcmp(a, "--version") == 0) {
			printf("moatctl %s\n", MOAT_VERSION);
			free(args);
			return EXIT_OK;
		} else if (strcmp(a, "-s") == 0 || strcmp(a, "--socket") == 0) {
			if (i + 1 >= argc)
				bad_usage("%s needs a path", a);
			path = argv[++i];
		} else if (strncmp(a, "--socket=", 9) == 0)
			path = a + 9;
		else if (a[0] == '-' && nargs == 0)
			bad_usage("unknown option '%s'", a);
		else
			args[nargs++] = argv[i];
	}
	if (nargs == 0)
		bad_usage("no command given");
	if (path[0] == '\0')
		bad_usage("empty socket path");
	build_request(req, sizeof(req), json, (int)nargs, args, &tail);
	free(args);

	if ((fd = connect_socket(path, json)) == -1)
		return EXIT_FAIL;
	/*
	 * moat refuses some clients (permission, too many clients) before it
	 * reads a word and may have hung up already: its reason is still
	 * there to read, so a send that found moat gone counts only when no
	 * reply follows. Any other failure means no reply will come.
	 */
	send_errno = send_all(fd, req, strlen(req)) ? 0 : errno;
	if (send_errno != 0 && send_errno != EPIPE &&
	    send_errno != ECONNRESET) {
		fail(json, "%s: cannot send the request: %s", path,
		    strerror(send_errno));
		close(fd);
		return EXIT_FAIL;
	}
	if (!tail)
		(void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if ((in = fdopen(fd, "r")) == NULL) {
		fail(json, "%s: %s", path, strerror(errno));
		close(fd);
		return EXIT_FAIL;
	}
	if ((n = getline(&line, &cap, in)) <= 0) {
		if (send_errno != 0)
			fail(json, "%s: cannot send the request: %s", path,
			    strerror(send_errno));
		else
			fail(json, "%s: %s", path, n == -1 && ferror(in) ?
			    read_error(errno) : "moat closed the connection "
			    "without a reply");
		fclose(in);
		free(line);
		return EXIT_FAIL;
	}
	line[strcspn(line, "\n")] = '\0';
	ok = strcmp(line, "ok") == 0;
	if (!ok && strncmp(line, "error", 5) != 0) {
		fail(json, "%s: unexpected reply '%.80s'", path, line);
		fclose(in);
		free(line);
		return EXIT_FAIL;
	}
	if (!ok) {
		snprintf(why, sizeof(why), "%s", line[5] == ' ' ? line + 6 :
		    "moat refused the request");
		if (!json)
			fail(false, "%s", why);
	}
	/*
	 * Only a tail that was granted streams until someone hangs up; every
	 * other reply ends with ".". With --json such a reply is held until
	 * that end, so that stdout gets one whole object, the reply or an
	 * error, never half of one. Otherwise data lines go to stdout, except
	 * the details of a refusal in human form, which belong with the
	 * message on stderr.
	 */
	must_end = !(ok && tail);
	hold = json && must_end;
	if (hold)
		out = open_memstream(&held, &heldlen);
	else
		out = ok || json ? stdout : stderr;
	if (out == NULL) {
		fail(json, "%s", strerror(errno));
		fclose(in);
		free(line);
		return EXIT_FAIL;
	}
	while ((n = getline(&line, &cap, in)) > 0) {
		/* A last line without its LF was cut off: not printed, as
		 * half a JSON object or event is worse than none. */
		if (line[n - 1] != '\n')
			break;
		if (strcmp(line, ".\n") == 0) {
			ended = true;
			break;
		}
		if (fputs(line, out) == EOF ||
		    (tail && !hold && fflush(out) == EOF)) {
			werr = true;
			break;
		}
	}
	if (werr) {
		fail(false, "cannot write the reply: %s", strerror(errno));
		ok = false;
	} else if (!ended) {
		/* moat ends a tail with "." too, when it stops; a tail cut
		 * off without it did not end as the user meant. */
		fail(json, "%s: %s", path, n == -1 && ferror(in) ?
		    read_error(errno) : must_end ? "reply cut short" :
		    "the stream ended without moat's end mark: moat was "
		    "killed, or it dropped this reader for reading nothing "
		    "for 60 s while events waited, or it stopped while this "
		    "reader was too far behind to be sent the rest");
		ok = false;
	}
	fclose(in);
	free(line);
	if (hold) {
		if (fclose(out) == EOF) {
			fail(false, "cannot keep the reply: %s",
			    strerror(errno));
			ok = false;
		} else if (ended && !werr && heldlen > 0) {
			(void)fwrite(held, 1, heldlen, stdout);
		} else if (ended && !werr && !ok) {
			/* Refused before moat read the request, so before
			 * it knew to answer in JSON. */
			fail(true, "%s", why);
		}
		free(held);
	}
	if (fflush(stdout) == EOF) {
		fprintf(stderr, "moatctl: standard output: %s\n",
		    strerror(errno));
		return EXIT_FAIL;
	}
	return ok ? EXIT_OK : EXIT_FAIL;
}
