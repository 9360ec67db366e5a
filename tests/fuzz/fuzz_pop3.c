/* fuzz_pop3.c - libFuzzer target: the POP3 parsers and the POP3 filter. */
/*
 * Build and run like fuzz_smtp.c:
 *   build-fuzz/tests/fuzz/fuzz_pop3 /tmp/pop3-corpus tests/fuzz/corpus/pop3 \
 *       -dict=tests/fuzz/pop3.dict -max_total_time=300
 * Byte 0 with the top bit set drives the filter (fuzz_filter_driver.h),
 * otherwise the parsers run over the rest.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "fuzz_filter_driver.h"
#include "pop3.h"
#include "pop3_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *, size_t);

/* The oracle for the body scanner: the first line that is "." (with or
 * without its CR) ends the body; *end is just past its LF. */
static bool
first_dot_line(const uint8_t *p, size_t len, size_t *end)
{
	const uint8_t *lf;
	size_t i = 0, e;

	while ((lf = memchr(p + i, '\n', len - i)) != NULL) {
		e = (size_t)(lf - p);
		if (p[i] == '.' && (e - i == 1 || (e - i == 2 &&
		    p[i + 1] == '\r'))) {
			*end = e + 1;
			return true;
		}
		i = e + 1;
	}
	return false;
}

static void
parsers(const uint8_t *p, size_t len)
{
	struct pop3_line l;
	struct pop3_cmd c;
	struct pop3_status st;
	struct pop3_multi m, m2;
	enum pop3_parse_rc rc;
	size_t off, n, n2, cut;

	for (off = 0; off < len;) {
		if (pop3_line_parse(p + off, len - off, 512, &l) !=
		    POP3_PARSE_OK)
			break;
		INVARIANT(l.consumed <= len - off && l.len < l.consumed);
		if (pop3_cmd_parse(l.p, l.len, &c) == POP3_PARSE_OK)
			INVARIANT(c.arg + c.arglen == l.p + l.len);
		off += l.consumed;
	}
	for (off = 0; off < len;) {
		if (pop3_status_parse(p + off, len - off, 4096, &st) !=
		    POP3_PARSE_OK)
			break;
		INVARIANT(st.consumed <= len - off);
		if (st.code != NULL)
			INVARIANT(st.code + st.codelen < p + off +
			    st.consumed);
		off += st.consumed;
	}
	/* The end of a body is found at the same place however it is cut. */
	pop3_multi_init(&m);
	rc = pop3_multi_scan(&m, p, len, &n);
	INVARIANT(n <= len);
	INVARIANT((rc == POP3_PARSE_OK) == first_dot_line(p, len, &n2));
	INVARIANT(rc != POP3_PARSE_OK || n == n2);
	cut = len > 0 ? p[0] % (len + 1) : 0;
	pop3_multi_init(&m2);
	if (pop3_multi_scan(&m2, p, cut, &n2) == POP3_PARSE_OK) {
		INVARIANT(rc == POP3_PARSE_OK && n2 == n);
	} else {
		enum pop3_parse_rc rc2 = pop3_multi_scan(&m2, p + cut,
		    len - cut, &n2);

		INVARIANT(rc2 == rc);
		if (rc == POP3_PARSE_OK)
			INVARIANT(cut + n2 == n);
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	if (data[0] & 0x80)
		drive_filter(&filter_pop3, CFG_PROTO_POP3, data + 1, size - 1);
	else
		parsers(data + 1, size - 1);
	return 0;
}
