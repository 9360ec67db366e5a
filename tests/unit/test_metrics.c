/* test_metrics.c - unit tests for the metrics' bound on label sets. */
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "log.h"
#include "metrics.h"
#include "sbuf.h"

/* The value of the line that starts with series, or -1. */
static long
value_of(const char *text, const char *series)
{
	const char *p = text;
	size_t n = strlen(series);
	long v;

	while ((p = strstr(p, series)) != NULL) {
		if ((p == text || p[-1] == '\n') && p[n] == ' ' &&
		    sscanf(p + n, " %ld", &v) == 1)
			return v;
		p += n;
	}
	return -1;
}

/* More distinct reasons than a family keeps: the rest are counted under
 * "other", none dropped (moatctl(8), METRICS). */
static void
test_label_sets_past_the_cap_go_to_other(void)
{
	struct sbuf out;
	char reason[32];
	size_t lines = 0;
	const char *p;
	int i;

	for (i = 0; i < 300; i++) {
		snprintf(reason, sizeof(reason), "r%d", i);
		metrics_tls_failure(reason);
	}
	metrics_tls_failure("r0");
	metrics_tls_failure("r299");
	sbuf_init(&out, 1 << 20);
	metrics_render(&out, NULL);
	CHECK(!sbuf_overflow(&out));
	CHECK(out.p != NULL);
	if (out.p == NULL)
		return;
	CHECK_INT_EQ(value_of(out.p, "moat_tls_handshake_failures_total"
	    "{reason=\"r0\"}"), 2);
	CHECK_INT_EQ(value_of(out.p, "moat_tls_handshake_failures_total"
	    "{reason=\"r254\"}"), 1);
	CHECK_INT_EQ(value_of(out.p, "moat_tls_handshake_failures_total"
	    "{reason=\"r255\"}"), -1);
	/* r255..r299 (45), and r299 once more. */
	CHECK_INT_EQ(value_of(out.p, "moat_tls_handshake_failures_total"
	    "{reason=\"other\"}"), 46);
	for (p = out.p; (p = strstr(p, "\nmoat_tls_handshake_failures_total{"))
	    != NULL; p++)
		lines++;
	CHECK_INT_EQ(lines, 256);
	sbuf_clear(&out);
}

int
main(void)
{
	log_init(0);
	metrics_init();
	test_label_sets_past_the_cap_go_to_other();
	return check_report("metrics");
}
