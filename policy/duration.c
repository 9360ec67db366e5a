/* duration.c - durations written with units, as in "10s", "5m" or "1h30m". */
#include "duration.h"

#include <stdio.h>
#include <string.h>

static const struct {
	const char *name;
	uint64_t ms;
} units[] = {
	{ "w", 7ULL * 24 * 3600 * 1000 },
	{ "d", 24ULL * 3600 * 1000 },
	{ "h", 3600ULL * 1000 },
	{ "m", 60ULL * 1000 },
	{ "s", 1000 },
	{ "ms", 1 },
};

/* About 292 million years; anything longer is a typo. */
#define DURATION_MAX_MS (UINT64_MAX / 1000)

int
duration_parse(const char *s, uint64_t *ms, const char **why)
{
	uint64_t total = 0;
	const char *p = s;

	if (*p == '\0') {
		*why = "empty duration";
		return -1;
	}
	while (*p) {
		uint64_t n = 0, mult = 0;
		const char *digits = p;
		size_t i, ulen;

		while (*p >= '0' && *p <= '9') {
			if (n > (DURATION_MAX_MS - 9) / 10) {
				*why = "duration is too long";
				return -1;
			}
			n = n * 10 + (uint64_t)(*p - '0');
			p++;
		}
		if (p == digits) {
			*why = "expected a number followed by a unit "
			    "(ms, s, m, h, d, w), as in \"10s\"";
			return -1;
		}
		ulen = 0;
		while (p[ulen] >= 'a' && p[ulen] <= 'z')
			ulen++;
		for (i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
			if (strlen(units[i].name) == ulen &&
			    strncmp(p, units[i].name, ulen) == 0) {
				mult = units[i].ms;
				break;
			}
		}
		if (mult == 0) {
			if (ulen > 0)
				*why = "unknown unit; use ms, s, m, h, d or w";
			else if (*p == '\0')
				*why = "missing unit (ms, s, m, h, d, w), as in "
				    "\"10s\"";
			else
				*why = "write a number and a unit with nothing "
				    "between them, as in \"5m\" or \"1h30m\"";
			return -1;
		}
		p += ulen;
		if (n > DURATION_MAX_MS / mult ||
		    total > DURATION_MAX_MS - n * mult) {
			*why = "duration is too long";
			return -1;
		}
		total += n * mult;
	}
	*ms = total;
	return 0;
}

const char *
duration_str(uint64_t ms, char *buf, size_t len)
{
	size_t i, off = 0;

	if (len == 0)
		return buf;
	buf[0] = '\0';
	if (ms == 0) {
		snprintf(buf, len, "0s");
		return buf;
	}
	/* Weeks read oddly in logs; stop at days. */
	for (i = 1; i < sizeof(units) / sizeof(units[0]) && off < len; i++) {
		uint64_t n = ms / units[i].ms;
		int w;

		if (n == 0)
			continue;
		w = snprintf(buf + off, len - off, "%llu%s",
		    (unsigned long long)n, units[i].name);
		if (w < 0)
			break;
		off += (size_t)w;
		ms -= n * units[i].ms;
	}
	return buf;
}
