/* check.h - the smallest assertion kit for moat's C unit tests. */
#ifndef MOAT_CHECK_H
#define MOAT_CHECK_H

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

static inline int
check_report(const char *name)
{
	printf("%s: %d passed, %d failed\n", name, check_passed,
	    check_failed);
	return check_failed == 0 ? 0 : 1;
}

#endif
