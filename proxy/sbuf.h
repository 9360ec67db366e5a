/* sbuf.h - growable text buffers with a ceiling, for replies and scrapes. */
#ifndef MOAT_SBUF_H
#define MOAT_SBUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * A string that grows up to max bytes. Appends that would pass the
 * ceiling (or fail to allocate) are refused whole and set the sticky
 * overflow flag, so a caller builds a reply without checking each step
 * and looks at sbuf_overflow() once at the end. The text is always
 * NUL-terminated when p is not NULL.
 */
struct sbuf {
	char *p;
	size_t len;
	size_t cap;
	size_t max;
	bool overflow;
};

void sbuf_init(struct sbuf *sb, size_t max);
void sbuf_clear(struct sbuf *sb);
/* Drops the first n bytes (what a writer has sent). */
void sbuf_consume(struct sbuf *sb, size_t n);

int sbuf_add(struct sbuf *sb, const void *p, size_t n);
int sbuf_adds(struct sbuf *sb, const char *s);
int sbuf_printf(struct sbuf *sb, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* s as a JSON string with quotes; NULL as null. Bytes above 0x7e become
 * '?', so the output is ASCII whatever s holds. */
int sbuf_json_str(struct sbuf *sb, const char *s);

static inline bool
sbuf_overflow(const struct sbuf *sb)
{
	return sb->overflow;
}

#endif
