/* toml-decoder.c - toml-test decoder: TOML on stdin, tagged JSON on stdout. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "toml.h"

static void put_value(const struct toml_value *, FILE *);

/* JSON string: quotes, backslashes and every control byte escaped. The
 * input is valid UTF-8 (the parser checked it), so other bytes pass. */
static void
put_string(const char *s, size_t n, FILE *out)
{
	unsigned char c;
	size_t i;

	putc('"', out);
	for (i = 0; i < n; i++) {
		c = (unsigned char)s[i];
		switch (c) {
		case '"':
			fputs("\\\"", out);
			break;
		case '\\':
			fputs("\\\\", out);
			break;
		case '\b':
			fputs("\\b", out);
			break;
		case '\f':
			fputs("\\f", out);
			break;
		case '\n':
			fputs("\\n", out);
			break;
		case '\r':
			fputs("\\r", out);
			break;
		case '\t':
			fputs("\\t", out);
			break;
		default:
			if (c < 0x20 || c == 0x7f)
				fprintf(out, "\\u%04x", c);
			else
				putc(c, out);
			break;
		}
	}
	putc('"', out);
}

/* The shortest %g form that reads back as the same double. */
static void
format_float(double d, char *buf, size_t sz)
{
	int prec;

	if (isnan(d)) {
		snprintf(buf, sz, "nan");
		return;
	}
	if (isinf(d)) {
		snprintf(buf, sz, "%s", d < 0 ? "-inf" : "inf");
		return;
	}
	for (prec = 1; prec < 17; prec++) {
		snprintf(buf, sz, "%.*g", prec, d);
		if (strtod(buf, NULL) == d)
			return;
	}
	snprintf(buf, sz, "%.17g", d);
}

static void
format_datetime(const struct toml_value *v, char *buf, size_t sz)
{
	const struct toml_datetime *dt = toml_datetime(v);
	enum toml_type t = toml_type(v);
	size_t n = 0;
	int frac, off;

	if (t != TOML_TIME_LOCAL)
		n += (size_t)snprintf(buf + n, sz - n, "%04d-%02d-%02d",
		    dt->year, dt->month, dt->day);
	if (t == TOML_DATE_LOCAL)
		return;
	n += (size_t)snprintf(buf + n, sz - n, "%s%02d:%02d:%02d",
	    t == TOML_TIME_LOCAL ? "" : "T", dt->hour, dt->minute, dt->second);
	if (dt->frac_digits > 0) {
		frac = dt->nanosecond;
		for (off = dt->frac_digits; off < 9; off++)
			frac /= 10;
		n += (size_t)snprintf(buf + n, sz - n, ".%0*d",
		    dt->frac_digits, frac);
	}
	if (t != TOML_DATETIME)
		return;
	if (dt->offset_z) {
		snprintf(buf + n, sz - n, "Z");
		return;
	}
	off = dt->offset_min < 0 ? -dt->offset_min : dt->offset_min;
	snprintf(buf + n, sz - n, "%c%02d:%02d", dt->offset_min < 0 ? '-' : '+',
	    off / 60, off % 60);
}

static void
put_scalar(const char *type, const char *s, size_t n, FILE *out)
{
	fprintf(out, "{\"type\":\"%s\",\"value\":", type);
	put_string(s, n, out);
	putc('}', out);
}

static void
put_value(const struct toml_value *v, FILE *out)
{
	const char *s, *type;
	char buf[128];
	size_t i, n;

	switch (toml_type(v)) {
	case TOML_TABLE:
		putc('{', out);
		for (i = 0; i < toml_table_len(v); i++) {
			if (i > 0)
				putc(',', out);
			s = toml_table_key(v, i, &n, NULL);
			put_string(s, n, out);
			putc(':', out);
			put_value(toml_table_at(v, i), out);
		}
		putc('}', out);
		return;
	case TOML_ARRAY:
		putc('[', out);
		for (i = 0; i < toml_array_len(v); i++) {
			if (i > 0)
				putc(',', out);
			put_value(toml_array_at(v, i), out);
		}
		putc(']', out);
		return;
	case TOML_STRING:
		s = toml_string(v, &n);
		put_scalar("string", s, n, out);
		return;
	case TOML_INTEGER:
		snprintf(buf, sizeof(buf), "%" PRId64, toml_integer(v));
		type = "integer";
		break;
	case TOML_FLOAT:
		format_float(toml_float(v), buf, sizeof(buf));
		type = "float";
		break;
	case TOML_BOOL:
		snprintf(buf, sizeof(buf), "%s",
		    toml_bool(v) ? "true" : "false");
		type = "bool";
		break;
	default:
		format_datetime(v, buf, sizeof(buf));
		type = toml_type_str(toml_type(v));
		break;
	}
	put_scalar(type, buf, strlen(buf), out);
}

int
main(void)
{
	struct toml_error err;
	struct toml_value *root;
	char *buf = NULL, *nbuf;
	size_t len = 0, cap = 0, n;

	/* Binary read to the end: the input may hold NUL bytes. */
	for (;;) {
		if (len == cap) {
			cap = cap ? cap * 2 : 65536;
			if ((nbuf = realloc(buf, cap)) == NULL) {
				fprintf(stderr, "0:0: out of memory\n");
				free(buf);
				return 2;
			}
			buf = nbuf;
		}
		n = fread(buf + len, 1, cap - len, stdin);
		len += n;
		if (n == 0)
			break;
	}
	if (ferror(stdin)) {
		fprintf(stderr, "0:0: cannot read standard input\n");
		free(buf);
		return 2;
	}
	root = toml_parse(buf, len, &err);
	free(buf);
	if (root == NULL) {
		fprintf(stderr, "%d:%d: %s\n", err.pos.line, err.pos.col,
		    err.msg);
		return 1;
	}
	put_value(root, stdout);
	putc('\n', stdout);
	toml_free(root);
	if (fflush(stdout) != 0 || ferror(stdout))
		return 2;
	return 0;
}
