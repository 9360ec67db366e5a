/* duration.c - durations written with units, as in "10s", "5m" or "1h30m". */
#include "duration.h"

#include <stdbool.h>
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
/* Digits after a decimal point that duration_why() still converts: a
 * tenth digit would be finer than a millisecond, even in weeks. */
#define FRACTION_MAX_DIGITS 9

/* Reasons duration_why() can improve on with a corrected spelling. */
static const char why_case[] = "units are lower case: ms, s, m, h, d, w";
static const char why_fraction[] = "fractions are not allowed; combine "
    "whole units, as in \"1h30m\"";

static bool
is_alpha(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static char
to_lower(char c)
{
	return c >= 'A' && c <= 'Z' ? (char)(c + 32) : c;
}

/* The unit spelled by the len bytes at p, in any case; 0 if none. */
static uint64_t
unit_ms(const char *p, size_t len, bool any_case)
{
	size_t i, j;

	for (i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (strlen(units[i].name) != len)
			continue;
		for (j = 0; j < len; j++)
			if ((any_case ? to_lower(p[j]) : p[j]) !=
			    units[i].name[j])
				break;
		if (j == len)
			return units[i].ms;
	}
	return 0;
}

int
duration_parse(const char *s, uint64_t *ms, const char **why)
{
	uint64_t total = 0, last = 0;
	const char *p = s;

	if (*p == '\0') {
		*why = "empty duration";
		return -1;
	}
	while (*p) {
		uint64_t n = 0, mult;
		const char *digits = p;
		size_t ulen;

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
		if ((*p == '.' || *p == ',') && p[1] >= '0' && p[1] <= '9') {
			*why = why_fraction;
			return -1;
		}
		ulen = 0;
		while (is_alpha(p[ulen]))
			ulen++;
		mult = unit_ms(p, ulen, false);
		if (mult == 0) {
			if (ulen > 0 && unit_ms(p, ulen, true) != 0)
				*why = why_case;
			else if (ulen > 0)
				*why = "unknown unit; use ms, s, m, h, d or w";
			else if (*p == '\0')
				*why = "missing unit (ms, s, m, h, d, w), as in "
				    "\"10s\"";
			else
				*why = "write a number and a unit with nothing "
				    "between them, as in \"5m\" or \"1h30m\"";
			return -1;
		}
		/* "1m1m" or "30m1h" is more likely a slip than a sum. */
		if (last != 0 && mult >= last) {
			*why = "units go from the largest to the smallest, "
			    "each once, as in \"1h30m\"";
			return -1;
		}
		last = mult;
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

/*
 * What duration_parse() would take for s if units could be written in
 * upper case and numbers could have a fraction: the milliseconds in *ms,
 * and whether a fraction or an upper-case "M" was seen. Returns -1 when
 * that does not help either, or when a fraction is finer than 1ms.
 */
static int
lenient_parse(const char *s, uint64_t *ms, bool *fraction, bool *upper_m)
{
	uint64_t total = 0;
	const char *p = s;

	*fraction = *upper_m = false;
	if (*p == '\0')
		return -1;
	while (*p) {
		uint64_t n = 0, frac = 0, scale = 1, mult, part;
		const char *digits = p;
		size_t ulen, nfrac = 0;

		while (*p >= '0' && *p <= '9') {
			if (n > (DURATION_MAX_MS - 9) / 10)
				return -1;
			n = n * 10 + (uint64_t)(*p++ - '0');
		}
		if (p == digits)
			return -1;
		if (*p == '.' || *p == ',') {
			p++;
			while (*p >= '0' && *p <= '9') {
				if (++nfrac > FRACTION_MAX_DIGITS)
					return -1;
				frac = frac * 10 + (uint64_t)(*p++ - '0');
				scale *= 10;
			}
			if (nfrac == 0)
				return -1;
			*fraction = true;
		}
		ulen = 0;
		while (is_alpha(p[ulen]))
			ulen++;
		if ((mult = unit_ms(p, ulen, true)) == 0)
			return -1;
		if (ulen == 1 && *p == 'M')
			*upper_m = true;
		p += ulen;
		/* frac < 10^9 and mult <= 1w in ms: the product fits. */
		if (frac * mult % scale != 0 || n > DURATION_MAX_MS / mult)
			return -1;
		part = n * mult + frac * mult / scale;
		if (total > DURATION_MAX_MS - part)
			return -1;
		total += part;
	}
	*ms = total;
	return 0;
}

const char *
duration_why(const char *s, char *buf, size_t len)
{
	const char *why = NULL;
	char spelled[64];
	uint64_t ms;
	bool fraction, upper_m;
	size_t i;

	if (duration_parse(s, &ms, &why) == 0)
		why = "";
	else if ((why == why_case || why == why_fraction) &&
	    strlen(s) < sizeof(spelled) &&
	    lenient_parse(s, &ms, &fraction, &upper_m) == 0) {
		if (fraction) {
			snprintf(buf, len, "fractions are not allowed: write "
			    "\"%s\"", duration_str(ms, spelled,
			    sizeof(spelled)));
			return buf;
		}
		/* Only the case is wrong: keep the writer's own spelling. */
		for (i = 0; s[i] != '\0'; i++)
			spelled[i] = to_lower(s[i]);
		spelled[i] = '\0';
		snprintf(buf, len, "units are lower case: write \"%s\"%s",
		    spelled, upper_m ? " (m is minutes)" : "");
		return buf;
	}
	snprintf(buf, len, "%s", why);
	return buf;
}
