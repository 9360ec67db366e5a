/* test_certwatch.c - when a running moat warns of a certificate's end. */
#include <stdbool.h>
#include <string.h>

#include "certwatch.h"
#include "check.h"

#define DAY 86400
#define T0 1800000000	/* 2027-01-15T08:00:00Z */

static char msg[1024];

static bool
note(const char *name, int64_t not_after, int64_t now, bool quiet)
{
	msg[0] = '\0';
	return certwatch_note(name, "/etc/moat/cert.pem", not_after, now,
	    quiet, msg, sizeof(msg));
}

static void
test_marks(void)
{
	int64_t end = T0 + 20 * DAY;
	int64_t t;
	int said = 0;
	char last[sizeof(msg)] = "";

	/* First seen: where it stands is noted, nothing said (loading
	 * said it), even inside the last 14 days. */
	CHECK(!note("default", end, T0, false));
	CHECK(!note("default", end, T0 + 6 * DAY - 1, false));
	CHECK(note("default", end, T0 + 6 * DAY + 1, false));
	CHECK(strstr(msg, "certificate 'default' (/etc/moat/cert.pem) "
	    "expires on 2027-02-04 08:00 UTC, in 13 days; renew it and "
	    "reload moat") != NULL);
	/* Once a day from then on, checked every 10 s. */
	for (t = T0 + 6 * DAY + 11; t < end - DAY; t += 10)
		if (note("default", end, t, false)) {
			said++;
			memcpy(last, msg, sizeof(last));
		}
	CHECK_INT_EQ(said, 12);
	CHECK(strstr(last, "in 1 day;") != NULL);
	CHECK(note("default", end, end - DAY + 5, false));
	CHECK(strstr(msg, "in less than a day") != NULL);
	CHECK(!note("default", end, end - 1, false));
	CHECK(note("default", end, end, false));
	CHECK(strstr(msg, "expired on 2027-02-04 08:00 UTC: clients refuse "
	    "it now") != NULL);
	CHECK(!note("default", end, end + 30 * DAY, false));

	/* Renewed (a reload): back up without a word, and watched again. */
	CHECK(!note("default", end + 90 * DAY, end + DAY, false));
	CHECK(!note("default", end + 90 * DAY, end + 76 * DAY - 1, false));
	CHECK(note("default", end + 90 * DAY, end + 76 * DAY + 1, false));

	/* A quiet look notes the step without saying it. */
	CHECK(!note("mx.example.org", T0 + 3 * DAY, T0, false));
	CHECK(!note("mx.example.org", T0 + 3 * DAY, T0 + DAY + 1, true));
	CHECK(!note("mx.example.org", T0 + 3 * DAY, T0 + DAY + 2, false));
	CHECK(note("mx.example.org", T0 + 3 * DAY, T0 + 2 * DAY + 1, false));
	CHECK(strstr(msg, "certificate 'mx.example.org'") != NULL);
}

/* A load forgets: what it notes is where each stands now, unsaid. */
static void
test_loaded(void)
{
	certwatch_loaded(NULL, NULL, T0);
	CHECK(!note("default", T0 + DAY / 2, T0, false));
	CHECK(note("default", T0 + DAY / 2, T0 + DAY, false));
	certwatch_loaded(NULL, NULL, T0);
	CHECK(!note("default", T0 + DAY / 2, T0 + 2 * DAY, false));
}

int
main(void)
{
	test_marks();
	test_loaded();
	return check_report("certwatch");
}
