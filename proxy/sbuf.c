/* sbuf.c - growable text buffers with a ceiling, for replies and scrapes. */
#include "sbuf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void
sbuf_init(struct sbuf *sb, size_t max)
{
	memset(sb, 0, sizeof(*sb));
	sb->max = max;
}

void
sbuf_clear(struct sbuf *sb)
{
	free(sb->p);
	sb->p = NULL;
	sb->len = sb->cap = 0;
	sb->overflow = false;
}

void
sbuf_consume(struct sbuf *sb, size_t n)
{
	if (n >= sb->len) {
		sb->len = 0;
		if (sb->p != NULL)
			sb->p[0] = '\0';
		return;
	}
	memmove(sb->p, sb->p + n, sb->len - n);
	sb->len -= n;
	sb->p[sb->len] = '\0';
}

/* Makes room for n more bytes and the NUL; -1 past the ceiling. */
static int
sbuf_reserve(struct sbuf *sb, size_t n)
{
	size_t want, cap;
	char *p;

	if (sb->overflow || n > sb->max - sb->len) {
		sb->overflow = true;
		return -1;
	}
	want = sb->len + n + 1;
	if (want <= sb->cap)
		return 0;
	cap = sb->cap ? sb->cap : 256;
	while (cap < want)
		cap *= 2;
	if ((p = realloc(sb->p, cap)) == NULL) {
		sb->overflow = true;
		return -1;
	}
	sb->p = p;
	sb->cap = cap;
	return 0;
}

int
sbuf_add(struct sbuf *sb, const void *p, size_t n)
{
	if (sbuf_reserve(sb, n) == -1)
		return -1;
	memcpy(sb->p + sb->len, p, n);
	sb->len += n;
	sb->p[sb->len] = '\0';
	return 0;
}

int
sbuf_adds(struct sbuf *sb, const char *s)
{
	return sbuf_add(sb, s, strlen(s));
}

int
sbuf_printf(struct sbuf *sb, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0 || sbuf_reserve(sb, (size_t)n) == -1) {
		sb->overflow = true;
		return -1;
	}
	va_start(ap, fmt);
	(void)vsnprintf(sb->p + sb->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	sb->len += (size_t)n;
	return 0;
}

int
sbuf_json_str(struct sbuf *sb, const char *s)
{
	static const char hex[] = "0123456789abcdef";
	char esc[7];

	if (s == NULL)
		return sbuf_adds(sb, "null");
	if (sbuf_add(sb, "\"", 1) == -1)
		return -1;
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\') {
			esc[0] = '\\';
			esc[1] = (char)c;
			(void)sbuf_add(sb, esc, 2);
		} else if (c < 0x20) {
			memcpy(esc, "\\u00", 4);
			esc[4] = hex[c >> 4];
			esc[5] = hex[c & 15];
			(void)sbuf_add(sb, esc, 6);
		} else if (c > 0x7e)
			(void)sbuf_add(sb, "?", 1);
		else
			(void)sbuf_add(sb, s, 1);
	}
	return sbuf_add(sb, "\"", 1);
}
