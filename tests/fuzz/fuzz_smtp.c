/* fuzz_smtp.c - libFuzzer target: the SMTP parsers and the SMTP filter. */
/*
 * Build and run like fuzz_toml.c (from the source root):
 *   CC=clang meson setup build-fuzz -Dfuzz=true \
 *       -Db_sanitize=address,undefined -Db_lundef=false
 *   ninja -C build-fuzz tests/fuzz/fuzz_smtp
 *   build-fuzz/tests/fuzz/fuzz_smtp /tmp/smtp-corpus tests/fuzz/corpus/smtp \
 *       -dict=tests/fuzz/smtp.dict -max_total_time=300
 * The first input byte picks what runs: the parsers over the rest (byte 0
 * even), or the filter driven by a fake session (fuzz_filter_driver.h).
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "fuzz_filter_driver.h"
#include "smtp.h"
#include "smtp_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static void
parsers(const uint8_t *p, size_t len)
{
	struct smtp_line l;
	struct smtp_cmd c;
	struct smtp_reply_line r;
	struct smtp_data d;
	enum smtp_data_why why;
	enum smtp_parse_rc rc;
	const char *what;
	size_t off, n;

	for (off = 0; off < len;) {
		rc = smtp_line_parse(p + off, len - off, 512, &l);
		if (rc != SMTP_PARSE_OK)
			break;
		INVARIANT(l.consumed >= 1 && l.consumed <= len - off &&
		    l.consumed <= 512 && l.len < l.consumed);
		if (smtp_cmd_parse(l.p, l.len, &c) == SMTP_PARSE_OK) {
			INVARIANT(c.arg >= l.p && c.arg + c.arglen == l.p +
			    l.len);
			INVARIANT(memchr(l.p, '\r', l.len) == NULL);
		}
		off += l.consumed;
	}
	for (off = 0; off < len;) {
		rc = smtp_reply_parse(p + off, len - off, 4096, &r);
		if (rc != SMTP_PARSE_OK)
			break;
		INVARIANT(r.code >= 200 && r.code <= 599);
		INVARIANT(r.consumed <= len - off && r.consumed <= 4096);
		INVARIANT(r.text + r.textlen <= p + off + r.consumed);
		off += r.consumed;
	}
	smtp_data_init(&d);
	for (off = 0; off < len;) {
		rc = smtp_data_scan(&d, p + off, len - off, &n, &why);
		INVARIANT(n <= len - off);
		if (rc == SMTP_PARSE_ERROR) {
			INVARIANT(why != SMTP_DATA_OK);
			break;
		}
		/* What it passes holds no bare CR/LF and no NUL. */
		{
			size_t i;

			for (i = 0; i < n; i++) {
				INVARIANT(p[off + i] != '\0');
				if (p[off + i] == '\n')
					INVARIANT(i > 0 && p[off + i - 1] ==
					    '\r');
			}
		}
		/* The end is a line "." where a line starts. */
		if (rc == SMTP_PARSE_OK)
			INVARIANT(n >= 3 && memcmp(p + off + n - 3, ".\r\n",
			    3) == 0 && (off + n == 3 || p[off + n - 4] ==
			    '\n'));
		if (rc == SMTP_PARSE_AGAIN && n < len - off)
			break;	/* a held CR at the end */
		if (n == 0)
			break;
		off += n;
	}
	(void)smtp_foreign_parse(p, len, &what);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	if (data[0] & 0x80)
		drive_filter(&filter_smtp, CFG_PROTO_SMTP, data + 1, size - 1);
	else
		parsers(data + 1, size - 1);
	return 0;
}
