/* utc.c - wall-clock times as moat writes them. */
#include "utc.h"

#include <stdbool.h>
#include <stdio.h>
#include <time.h>

/* Literal formats, so that -Wformat-nonliteral checks them. */
static const char *
utc_fmt(int64_t unix_s, bool iso, char *buf, size_t len)
{
	time_t t = (time_t)unix_s;
	struct tm tm;
	size_t n = 0;

	if (gmtime_r(&t, &tm) != NULL)
		n = iso ? strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm) :
		    strftime(buf, len, "%Y-%m-%d %H:%M UTC", &tm);
	if (n == 0)
		snprintf(buf, len, "%lld", (long long)unix_s);
	return buf;
}

const char *
utc_iso(int64_t unix_s, char *buf, size_t len)
{
	return utc_fmt(unix_s, true, buf, len);
}

const char *
utc_human(int64_t unix_s, char *buf, size_t len)
{
	return utc_fmt(unix_s, false, buf, len);
}
