/* log.h - diagnostics for operators: stderr with syslog priority prefixes. */
#ifndef MOAT_LOG_H
#define MOAT_LOG_H

#include <stdarg.h>
#include <stddef.h>

enum log_level {
	LOG_LEVEL_ERR = 3,
	LOG_LEVEL_WARNING = 4,
	LOG_LEVEL_INFO = 6,
	LOG_LEVEL_DEBUG = 7,
};

/*
 * Lines go to stderr as "<N>moat: text" when stderr is not a terminal, so
 * journald files them under the right priority; on a terminal the prefix is
 * dropped. Messages above the current level are discarded.
 *
 * The level starts at LOG_LEVEL_INFO. log_init() takes the -v count: once
 * keeps at least info whatever log_set_level() says later, twice turns on
 * debug. log_set_level() sets the configured level (daemon.log_level,
 * again on every reload); any thread may log meanwhile. Warnings and
 * errors are always written.
 */
void log_init(int verbose);
void log_set_level(enum log_level level);
void log_set_tag(const char *tag);

void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warnx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void fatal(const char *fmt, ...)
	__attribute__((format(printf, 1, 2), noreturn));
void fatalx(const char *fmt, ...)
	__attribute__((format(printf, 1, 2), noreturn));

/*
 * v as a value of a key=value line: as it is when it holds only printable
 * ASCII other than space, '"' and '='; else quoted into buf (len >= 3),
 * other bytes as '?', '"' as '\'', cut to fit. "-" for NULL.
 */
const char *log_value(const char *v, char *buf, size_t len);

/*
 * The first line of the n bytes at p (up to CR, LF or n), as text fit to
 * quote: bytes that are not printable ASCII as '?', '"' as '\'', cut to
 * fit buf (len >= 1). For what a peer sent, which may hold anything,
 * NUL included. Returns buf.
 */
const char *log_line_text(const void *p, size_t n, char *buf, size_t len);

#endif
