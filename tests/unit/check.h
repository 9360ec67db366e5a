/* check.h - the smallest assertion kit for moat's C unit tests. */
#ifndef MOAT_CHECK_H
#define MOAT_CHECK_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/*
 * Failed checks print file:line and the expression, and the test goes on
 * so one run shows every broken case. check_report() prints the counts and
 * returns the process exit code.
 */
static int check_passed, check_failed;

#define CHECK(cond)							\
	do {								\
		if (cond)						\
			check_passed++;					\
		else {							\
			check_failed++;					\
			fprintf(stderr, "%s:%d: CHECK(%s) failed\n",	\
			    __FILE__, __LINE__, #cond);			\
		}							\
	} while (0)

#define CHECK_INT_EQ(a, b)						\
	do {								\
		long long check_a_ = (long long)(a);			\
		long long check_b_ = (long long)(b);			\
		if (check_a_ == check_b_)				\
			check_passed++;					\
		else {							\
			check_failed++;					\
			fprintf(stderr, "%s:%d: %s == %s failed: %lld "	\
			    "!= %lld\n", __FILE__, __LINE__, #a, #b,	\
			    check_a_, check_b_);			\
		}							\
	} while (0)

#define CHECK_STR_EQ(a, b)						\
	do {								\
		const char *check_a_ = (a), *check_b_ = (b);		\
		if (check_a_ != NULL && check_b_ != NULL &&		\
		    strcmp(check_a_, check_b_) == 0)			\
			check_passed++;					\
		else {							\
			check_failed++;					\
			fprintf(stderr, "%s:%d: %s == %s failed: "	\
			    "\"%s\" != \"%s\"\n", __FILE__, __LINE__,	\
			    #a, #b, check_a_ ? check_a_ : "(null)",	\
			    check_b_ ? check_b_ : "(null)");		\
		}							\
	} while (0)

/* How many times needle occurs in hay, without overlaps. */
static inline size_t
check_count(const char *hay, const char *needle)
{
	size_t n = 0;

	while ((hay = strstr(hay, needle)) != NULL) {
		n++;
		hay += strlen(needle);
	}
	return n;
}

static inline uint32_t
check_rand(uint32_t *seed)
{
	*seed = *seed * 1103515245u + 12345u;
	return *seed >> 16;
}

/*
 * Fills m with up to cap bytes of random message text as the body
 * scanners meet it: lines mostly under 80 bytes, some of several hundred,
 * some empty; some starting with '.', a few that are "." alone; with
 * noise, now and then a bare CR, a bare LF or a NUL, and lines that end
 * in LF alone. Returns the length.
 */
static inline size_t
check_mail_text(uint32_t *seed, uint8_t *m, size_t cap, bool noise)
{
	static const char text[] = "abcdefghijklmnopqrstuvwxyz .\t=+/";
	size_t len = 0, want = check_rand(seed) % (cap + 1), n, k;
	uint32_t r;

	while (len + 2 <= want) {
		r = check_rand(seed);
		n = r % 8 == 0 ? r % 500 : r % 90;
		if (r % 41 == 0)
			n = 1;	/* with the dot below: a "." line */
		if (r % 11 == 0)
			n = 0;
		if (n > want - len - 2)
			n = want - len - 2;
		for (k = 0; k < n; k++)
			m[len + k] = (uint8_t)text[check_rand(seed) %
			    (sizeof(text) - 1)];
		if (n > 0 && r % 7 == 0)
			m[len] = '.';
		if (r % 41 == 0)
			m[len] = '.';
		if (noise && n > 0 && check_rand(seed) % 50 == 0)
			m[len + check_rand(seed) % n] = (uint8_t)"\r\n"[r % 3];
		len += n;
		if (!noise || check_rand(seed) % 8 != 0)
			m[len++] = '\r';
		m[len++] = '\n';
		if (noise && check_rand(seed) % 60 == 0)
			m[len - 1 - r % 2] = 'x';
	}
	return len;
}

static inline int
check_report(const char *name)
{
	printf("%s: %d passed, %d failed\n", name, check_passed,
	    check_failed);
	return check_failed == 0 ? 0 : 1;
}

#endif
