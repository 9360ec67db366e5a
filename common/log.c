/* log.c - diagnostics for operators: stderr with syslog priority prefixes. */
#include "log.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/*
 * Worker threads log too: the -v count and tag are set before any thread
 * starts; the level changes on a reload while workers log, and the prefix
 * choice may be made lazily by whichever thread logs first, so both are
 * atomic. stdio's own lock keeps each line whole.
 */
static int log_verbose;
static atomic_int log_max = LOG_LEVEL_INFO;
static atomic_int log_prefix = -1;
static const char *log_tag = "moat";

void
log_init(int verbose)
{
	log_verbose = verbose;
	atomic_store(&log_prefix, !isatty(STDERR_FILENO));
	log_set_level(LOG_LEVEL_INFO);
}

void
log_set_level(enum log_level level)
{
	if (log_verbose >= 2)
		level = LOG_LEVEL_DEBUG;
	else if (log_verbose == 1 && level < LOG_LEVEL_INFO)
		level = LOG_LEVEL_INFO;
	atomic_store_explicit(&log_max, (int)level, memory_order_relaxed);
}

void
log_set_tag(const char *tag)
{
	log_tag = tag;
}

static void log_emit(enum log_level, const char *, va_list, const char *)
	__attribute__((format(printf, 2, 0)));

static void
log_emit(enum log_level level, const char *fmt, va_list ap, const char *errstr)
{
	char line[2048];
	int n, prefix;

	if ((int)level > atomic_load_explicit(&log_max, memory_order_relaxed))
		return;
	if ((prefix = atomic_load(&log_prefix)) < 0) {
		prefix = !isatty(STDERR_FILENO);
		atomic_store(&log_prefix, prefix);
	}

	n = vsnprintf(line, sizeof(line), fmt, ap);
	if (n < 0)
		return;
	/* Messages quote network and file text; a line break or escape in
	 * it must not start a line of its own or reach the terminal. */
	for (char *c = line; *c != '\0'; c++)
		if (((unsigned char)*c < ' ' && *c != '\t') || *c == 0x7f)
			*c = '?';
	/* One write per line so concurrent writers never interleave. */
	if (prefix)
		fprintf(stderr, "<%d>%s: %s%s%s\n", (int)level, log_tag, line,
		    errstr ? ": " : "", errstr ? errstr : "");
	else
		fprintf(stderr, "%s: %s%s%s\n", log_tag, line,
		    errstr ? ": " : "", errstr ? errstr : "");
}

#define LOG_BODY(level, errstr)				\
	do {						\
		va_list ap;				\
		va_start(ap, fmt);			\
		log_emit(level, fmt, ap, errstr);	\
		va_end(ap);				\
	} while (0)

void
log_warn(const char *fmt, ...)
{
	const char *e = strerror(errno);

	LOG_BODY(LOG_LEVEL_WARNING, e);
}

void
log_warnx(const char *fmt, ...)
{
	LOG_BODY(LOG_LEVEL_WARNING, NULL);
}

void
log_info(const char *fmt, ...)
{
	LOG_BODY(LOG_LEVEL_INFO, NULL);
}

void
log_debug(const char *fmt, ...)
{
	LOG_BODY(LOG_LEVEL_DEBUG, NULL);
}

void
fatal(const char *fmt, ...)
{
	const char *e = strerror(errno);

	LOG_BODY(LOG_LEVEL_ERR, e);
	exit(1);
}

void
fatalx(const char *fmt, ...)
{
	LOG_BODY(LOG_LEVEL_ERR, NULL);
	exit(1);
}

/* A byte of a peer's as logged: '"' as '\'', the unprintable as '?'. */
static char
log_char(unsigned char c)
{
	return c == '"' ? '\'' : c < ' ' || c >= 0x7f ? '?' : (char)c;
}

const char *
log_line_text(const void *p, size_t n, char *buf, size_t len)
{
	const unsigned char *u = p;
	size_t i;

	for (i = 0; i < n && i + 1 < len && u[i] != '\r' && u[i] != '\n';
	    i++)
		buf[i] = log_char(u[i]);
	buf[i] = '\0';
	return buf;
}

/*
 * Quoted when it holds spaces, so lines stay key=value. Bytes other than
 * printable ASCII become '?': a client's SNI may hold a line break, and
 * must not start a forged line of its own.
 */
const char *
log_value(const char *v, char *buf, size_t len)
{
	const unsigned char *u = (const unsigned char *)v;
	size_t i, o = 0;

	if (v == NULL)
		return "-";
	for (i = 0; u[i] != '\0'; i++)
		if (u[i] <= ' ' || u[i] >= 0x7f || u[i] == '"' || u[i] == '=')
			break;
	if (u[i] == '\0')
		return v;
	buf[o++] = '"';
	for (i = 0; u[i] != '\0' && o + 2 < len; i++)
		buf[o++] = log_char(u[i]);
	buf[o++] = '"';
	buf[o] = '\0';
	return buf;
}
