/* mailtext.h - the message text loadgen sends and backend's POP3 serves. */
#ifndef MOAT_BENCH_MAILTEXT_H
#define MOAT_BENCH_MAILTEXT_H

#include <stddef.h>

#define MAILTEXT_LINE_DEFAULT 510	/* bytes a line, without CRLF */
#define MAILTEXT_LINE_MAX 998		/* RFC 5322 */

/*
 * Fills buf with lines of `line` letters (1..MAILTEXT_LINE_MAX) and CRLF,
 * none starting with a dot, so that buf ends a line however the sizes
 * divide: the last line takes the remainder, and a remainder too short
 * for a line of its own lengthens the one before. Repeated end to end,
 * buf stays valid message text. len must be at least line + 2.
 */
static inline void
mailtext_fill(char *buf, size_t len, size_t line)
{
	size_t pos = 0, n, i;

	while (pos < len) {
		n = line;
		if (len - pos - 2 < n + 3)	/* the rest: this line */
			n = len - pos - 2;
		for (i = 0; i < n; i++)
			buf[pos + i] = (char)('a' + (pos + i) % 26);
		buf[pos + n] = '\r';
		buf[pos + n + 1] = '\n';
		pos += n + 2;
	}
}

#endif
