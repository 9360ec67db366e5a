/* test_toml.c - unit tests for the TOML parser: positions, errors, limits. */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "toml.h"

/*
 * Allocation failure injection. meson links this test with
 * -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc, so the parser's calls
 * land here; without those flags the wrappers are unused and the
 * out-of-memory test skips itself.
 */
/* Weak, so that the file still links without --wrap. */
void *__real_malloc(size_t) __attribute__((weak));
void *__real_calloc(size_t, size_t) __attribute__((weak));
void *__real_realloc(void *, size_t) __attribute__((weak));
void *__wrap_malloc(size_t);
void *__wrap_calloc(size_t, size_t);
void *__wrap_realloc(void *, size_t);

static long alloc_calls;
static long alloc_fail_at = -1;	/* call number that fails, -1 for none */

static bool
alloc_fails(void)
{
	return alloc_calls++ == alloc_fail_at;
}

void *
__wrap_malloc(size_t n)
{
	return alloc_fails() ? NULL : __real_malloc(n);
}

void *
__wrap_calloc(size_t n, size_t size)
{
	return alloc_fails() ? NULL : __real_calloc(n, size);
}

void *
__wrap_realloc(void *old, size_t n)
{
	return alloc_fails() ? NULL : __real_realloc(old, n);
}

/* Parses an exact-size heap copy, so ASan catches any read past len. */
static struct toml_value *
parse(const char *s, size_t len, struct toml_error *err)
{
	struct toml_value *v;
	char *copy;

	if ((copy = malloc(len > 0 ? len : 1)) == NULL)
		abort();
	memcpy(copy, s, len);
	v = toml_parse(copy, len, err);
	free(copy);
	return v;
}

#define PARSE(lit, err)	parse((lit), sizeof(lit) - 1, (err))

/* Expects doc to fail at line:col with msg; frees the tree if it did not. */
#define CHECK_ERROR(lit, l, c, m)					\
	do {								\
		struct toml_error err_;					\
		struct toml_value *v_ = PARSE(lit, &err_);		\
		CHECK(v_ == NULL);					\
		toml_free(v_);						\
		if (v_ == NULL) {					\
			CHECK_INT_EQ(err_.pos.line, (l));		\
			CHECK_INT_EQ(err_.pos.col, (c));		\
			CHECK_STR_EQ(err_.msg, (m));			\
		}							\
	} while (0)

#define CHECK_VALID(lit)						\
	do {								\
		struct toml_error err_;					\
		struct toml_value *v_ = PARSE(lit, &err_);		\
		if (v_ == NULL)						\
			fprintf(stderr, "%s:%d: %d:%d: %s\n", __FILE__,	\
			    __LINE__, err_.pos.line, err_.pos.col,	\
			    err_.msg);					\
		CHECK(v_ != NULL);					\
		toml_free(v_);						\
	} while (0)

#define CHECK_INVALID(lit)						\
	do {								\
		struct toml_error err_;					\
		struct toml_value *v_ = PARSE(lit, &err_);		\
		CHECK(v_ == NULL);					\
		toml_free(v_);						\
	} while (0)

#define CHECK_POS(pos, l, c)						\
	do {								\
		struct toml_pos p_ = (pos);				\
		CHECK_INT_EQ(p_.line, (l));				\
		CHECK_INT_EQ(p_.col, (c));				\
	} while (0)

/* Finds key in t and returns where it was written. */
static struct toml_pos
key_pos(const struct toml_value *t, const char *key)
{
	struct toml_pos pos = { 0, 0 };
	const char *k;
	size_t i, n;

	for (i = 0; i < toml_table_len(t); i++) {
		k = toml_table_key(t, i, &n, &pos);
		if (n == strlen(key) && memcmp(k, key, n) == 0)
			return pos;
	}
	pos.line = pos.col = 0;
	return pos;
}

static void
test_positions(void)
{
	static const char doc[] =
	    "# comment\n"				/* 1 */
	    "name = \"mx\"\n"				/* 2 */
	    "[server]\n"				/* 3 */
	    "port = 25\n"				/* 4 */
	    "  host . name = 'a'\n"			/* 5 */
	    "[ a.\"b\" ]\r\n"				/* 6 */
	    "x = [1,\n"					/* 7 */
	    "\t2]\n"					/* 8 */
	    "[[srv]]\n"					/* 9 */
	    "w = 0.5\n"					/* 10 */
	    "t = { k = 1, l.m = true }\n"		/* 11 */
	    "s = \"\"\"\n"				/* 12 */
	    "two\n"					/* 13 */
	    "lines\"\"\" ; z = 1\n";			/* 14 */
	struct toml_error err;
	struct toml_value *root;
	const struct toml_value *server, *host, *a, *b, *x, *srv, *t, *l;

	/* The stray "; z = 1" makes it invalid: check that first. */
	root = PARSE(doc, &err);
	CHECK(root == NULL);
	CHECK_POS(err.pos, 14, 10);
	CHECK_STR_EQ(err.msg, "expected newline after value, found ';'");

	root = parse(doc, sizeof(doc) - 1 - strlen(" ; z = 1\n"), &err);
	CHECK(root != NULL);
	if (root == NULL)
		return;
	CHECK_POS(toml_value_pos(root), 1, 1);
	CHECK_POS(key_pos(root, "name"), 2, 1);
	CHECK_POS(toml_value_pos(toml_table_get(root, "name")), 2, 8);

	server = toml_table_get(root, "server");
	CHECK(server != NULL && toml_type(server) == TOML_TABLE);
	CHECK_POS(key_pos(root, "server"), 3, 2);
	CHECK_POS(toml_value_pos(server), 3, 1);
	CHECK_POS(key_pos(server, "port"), 4, 1);
	CHECK_POS(toml_value_pos(toml_table_get(server, "port")), 4, 8);
	CHECK_INT_EQ(toml_integer(toml_table_get(server, "port")), 25);

	/* Dotted keys: every part where it is written. */
	host = toml_table_get(server, "host");
	CHECK_POS(key_pos(server, "host"), 5, 3);
	CHECK_POS(toml_value_pos(host), 5, 3);
	CHECK_POS(key_pos(host, "name"), 5, 10);
	CHECK_POS(toml_value_pos(toml_table_get(host, "name")), 5, 17);

	/* Header keys, quoted or not, and the implicit super-table. */
	a = toml_table_get(root, "a");
	b = toml_table_get(a, "b");
	CHECK_POS(key_pos(root, "a"), 6, 3);
	CHECK_POS(toml_value_pos(a), 6, 3);
	CHECK_POS(key_pos(a, "b"), 6, 5);
	CHECK_POS(toml_value_pos(b), 6, 1);

	x = toml_table_get(b, "x");
	CHECK_POS(key_pos(b, "x"), 7, 1);
	CHECK_POS(toml_value_pos(x), 7, 5);
	CHECK_INT_EQ(toml_array_len(x), 2);
	CHECK_POS(toml_value_pos(toml_array_at(x, 0)), 7, 6);
	CHECK_POS(toml_value_pos(toml_array_at(x, 1)), 8, 2);

	srv = toml_table_get(root, "srv");
	CHECK(toml_type(srv) == TOML_ARRAY);
	CHECK_POS(key_pos(root, "srv"), 9, 3);
	CHECK_POS(toml_value_pos(srv), 9, 1);
	CHECK_POS(toml_value_pos(toml_array_at(srv, 0)), 9, 1);
	CHECK_POS(key_pos(toml_array_at(srv, 0), "w"), 10, 1);

	t = toml_table_get(toml_array_at(srv, 0), "t");
	CHECK_POS(toml_value_pos(t), 11, 5);
	CHECK_POS(key_pos(t, "k"), 11, 7);
	CHECK_POS(toml_value_pos(toml_table_get(t, "k")), 11, 11);
	l = toml_table_get(t, "l");
	CHECK_POS(key_pos(t, "l"), 11, 14);
	CHECK_POS(key_pos(l, "m"), 11, 16);
	CHECK_POS(toml_value_pos(toml_table_get(l, "m")), 11, 20);

	/* Positions after a multi-line string count its lines. */
	CHECK_POS(toml_value_pos(toml_table_get(toml_array_at(srv, 0), "s")),
	    12, 5);
	CHECK_STR_EQ(toml_string(toml_table_get(toml_array_at(srv, 0), "s"),
	    NULL), "two\nlines");
	toml_free(root);

	/* A header defining an implicit table moves the table's position. */
	root = PARSE("[a.b]\n[a]\n", &err);
	CHECK(root != NULL);
	if (root != NULL) {
		CHECK_POS(key_pos(root, "a"), 1, 2);
		CHECK_POS(toml_value_pos(toml_table_get(root, "a")), 2, 1);
		toml_free(root);
	}

	/* A byte order mark is not part of the first line's columns. */
	root = PARSE("\xef\xbb\xbfk = 1\n", &err);
	CHECK(root != NULL);
	if (root != NULL) {
		CHECK_POS(key_pos(root, "k"), 1, 1);
		CHECK_POS(toml_value_pos(toml_table_get(root, "k")), 1, 5);
		toml_free(root);
	}
}

/*
 * What a config's author meant, where TOML wants it otherwise: quotes
 * around a duration or an address (not a date format for one with a
 * colon), true and false in lower case, and where an array whose ']'
 * was forgotten began.
 */
static void
test_meant_errors(void)
{
	static const struct {
		const char *doc;
		int line, col;
		const char *msg;
	} cases[] = {
		{ "idle = 5m\n", 1, 8, "invalid number '5m' (a string needs "
		    "quotes)" },
		{ "b = 10.0.0.5:110\n", 1, 5, "invalid number '10.0.0.5:110' "
		    "(a string needs quotes)" },
		{ "b = 2001:db8::1\n", 1, 5, "invalid number '2001:db8::1' "
		    "(a string needs quotes)" },
		{ "b = 192.0.2.1\n", 1, 5, "invalid number '192.0.2.1' (a "
		    "string needs quotes)" },
		{ "tls = implicit\n", 1, 7, "invalid number 'implicit' (a "
		    "string needs quotes)" },
		{ "tls = starttls\n", 1, 7, "invalid value 'starttls' (a "
		    "string needs quotes)" },
		{ "on = True\n", 1, 6, "invalid value 'True' (true and false "
		    "are lower case)" },
		{ "a = 01\n", 1, 5, "leading zeros not allowed in '01'" },
		{ "a = [\"x\",\n  \"y\"\nb = 1\n", 3, 1, "expected ',' or "
		    "']' in array, found 'b' (the array opened at line 1)" },
		{ "a = [\"x\" \"y\"]\n", 1, 10, "expected ',' or ']' in "
		    "array, found '\"'" },
	};
	struct toml_error err;
	struct toml_value *v;
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		v = parse(cases[i].doc, strlen(cases[i].doc), &err);
		CHECK(v == NULL);
		toml_free(v);
		if (v != NULL)
			continue;
		CHECK_INT_EQ(err.pos.line, cases[i].line);
		CHECK_INT_EQ(err.pos.col, cases[i].col);
		CHECK_STR_EQ(err.msg, cases[i].msg);
	}
	CHECK_VALID("a = 1.5e-3\nd = 1979-05-27\nt = 07:32:00\n");
}

static void
test_errors(void)
{
	CHECK_ERROR("a = 1\nb = 2\na = 3\n", 3, 1,
	    "duplicate key 'a' (first at line 1)");
	CHECK_ERROR("[srv]\nport = 1\nport = 2\n", 3, 1,
	    "duplicate key 'port' (first at line 2)");
	CHECK_ERROR("s = \"x\\qy\"\n", 1, 7, "invalid escape '\\q' in string");
	CHECK_ERROR("port 25\n", 1, 6, "expected '=' after key, found '2'");
	CHECK_ERROR("a = 1\r\nb = \r\n", 2, 5,
	    "expected value, found newline");
	CHECK_ERROR("a = \"\"\"\nline\n  \\q\"\"\"\n", 3, 3,
	    "invalid escape '\\q' in string");
	CHECK_ERROR("a = 1\rb = 2\n", 1, 6,
	    "carriage return not followed by newline");
	CHECK_ERROR("a = \"\xc3\x28\"\n", 1, 6, "invalid UTF-8 in string");
	CHECK_ERROR("# \xed\xa0\x80\n", 1, 3, "invalid UTF-8 in comment");
	test_meant_errors();
	CHECK_ERROR("a = \"\\ud800\"\n", 1, 6,
	    "escape '\\ud800' is not a Unicode scalar value");
	CHECK_ERROR("a = \"\\U00110000\"\n", 1, 6,
	    "escape '\\U00110000' is not a Unicode scalar value");
	CHECK_ERROR("a = 1\0\n", 1, 6,
	    "expected newline after value, found U+0000");
	CHECK_ERROR("a = \"x\0\"\n", 1, 7,
	    "control character U+0000 not allowed in string");
	CHECK_ERROR("a = 9223372036854775808\n", 1, 5,
	    "integer '9223372036854775808' out of range");
	CHECK_ERROR("a = 0x8000000000000000\n", 1, 5,
	    "integer '0x8000000000000000' out of range");
	CHECK_ERROR("a = 1e400\n", 1, 5, "float out of range");
	CHECK_ERROR("d = 2023-02-29\n", 1, 13,
	    "day 29 out of range for 2023-02");
	CHECK_ERROR("d = 2023-01-01T24:00:00\n", 1, 16, "hour 24 out of range");
	CHECK_ERROR("[a]\n[a]\n", 2, 2, "table 'a' already defined (first at line 1)");
	CHECK_ERROR("a = {b = 1}\n[a.c]\n", 2, 2,
	    "cannot extend inline table 'a' (first at line 1)");
	CHECK_ERROR("a = [1]\n[[a]]\n", 2, 3,
	    "cannot append to static array 'a' (first at line 1)");
	CHECK_ERROR("[a.b.c]\n[a]\nb.c.d = 1\n", 3, 3,
	    "cannot extend table 'c' with dotted keys: it has its own "
	    "[header] (first at line 1)");
	CHECK_ERROR("a = {b = 1,}\n", 1, 11,
	    "trailing comma not allowed in inline table");
	CHECK_ERROR("a = {b = 1, \t}\n", 1, 11,
	    "trailing comma not allowed in inline table");
	CHECK_ERROR("a = {b = 1\n}\n", 1, 11,
	    "newline not allowed in inline table");
	CHECK_ERROR("a = [1, 2\n", 1, 5, "unterminated array");
	CHECK_ERROR("a = \"\"\"x\n\n", 1, 5, "unterminated multi-line string");
	CHECK_ERROR("\"a\nb\" = 1\n", 1, 3, "newline in single-line string");
	CHECK_ERROR("a = 01\n", 1, 5, "leading zeros not allowed in '01'");
	CHECK_ERROR("a = -0x1\n", 1, 5,
	    "sign not allowed on a base-16 integer");
	CHECK_ERROR("x = 1\n[[x]]\n", 2, 3,
	    "key 'x' is already an integer (first at line 1)");
	/* A table named first by [a.b] is defined where its own [a] is. */
	CHECK_ERROR("[a.b]\n\n[a]\n[a]\n", 4, 2,
	    "table 'a' already defined (first at line 3)");
	CHECK_ERROR("x = [\n1]\n\nx = 2\n", 4, 1,
	    "duplicate key 'x' (first at line 1)");

	/* Error messages quote long keys shortened and escape controls. */
	CHECK_ERROR("\"a\\u0001b\" = 1\n\"a\\u0001b\" = 2\n", 2, 1,
	    "duplicate key 'a\\x01b' (first at line 1)");

	/* An empty document is a valid empty table; no NULL deref on NULL. */
	CHECK_VALID("");
	{
		struct toml_error err;
		struct toml_value *v = toml_parse(NULL, 0, &err);

		CHECK(v != NULL && toml_table_len(v) == 0);
		toml_free(v);
		/* err may be NULL. */
		CHECK(toml_parse("=", 1, NULL) == NULL);
	}
}

/* The redefinition rules of TOML 1.0, one line each. */
static void
test_redefinition(void)
{
	CHECK_VALID("[a.b]\n[a]\n");
	CHECK_VALID("[a]\nb.c = 1\nb.d = 2\n[a.b.e]\n");
	CHECK_VALID("[[a]]\n[a.b]\n[[a]]\n[a.b]\n");
	CHECK_VALID("[[a.b]]\n[a]\n");
	CHECK_VALID("a.b.c = 1\na.d = 2\n[a.b.e]\n");
	CHECK_VALID("t = {a.b = 1, a.c = 2}\n");
	CHECK_VALID("[a.b.c]\n[a]\nb.d = 1\n");

	CHECK_INVALID("[a]\n[a]\n");
	CHECK_INVALID("[a]\nb.c = 1\n[a.b]\n");
	CHECK_INVALID("a.b = 1\n[a]\n");
	CHECK_INVALID("[a.b.c]\n[a]\nb.d = 1\n[a.b]\n");
	CHECK_INVALID("[a.b]\n[a]\nb.c = 1\n");
	CHECK_INVALID("a = {}\na.b = 1\n");
	CHECK_INVALID("a = {b = {}}\n[a.b.c]\n");
	CHECK_INVALID("a = [{}]\n[a.b]\n");
	CHECK_INVALID("a = []\n[[a]]\n");
	CHECK_INVALID("[[a]]\n[a]\n");
	CHECK_INVALID("[a]\n[[a]]\n");
	CHECK_INVALID("[[a.b]]\n[[a]]\n");
	CHECK_INVALID("a = 1\na.b = 2\n");
	CHECK_INVALID("t = {a = {b = 1}, a.c = 2}\n");
	CHECK_INVALID("t = {a.b = 1, a = 2}\n");
}

static void
test_values(void)
{
	struct toml_error err;
	struct toml_value *root;
	const struct toml_datetime *dt;
	const struct toml_value *v;

	root = PARSE("i1 = -9223372036854775808\n"
	    "i2 = 0x7fff_FFFF_ffff_ffff\n"
	    "i3 = 0o17\n"
	    "i4 = 0b1010\n"
	    "i5 = +1_000\n"
	    "f1 = -1.5e-3\n"
	    "f2 = -inf\n"
	    "f3 = nan\n"
	    "f4 = 1_0.2_5\n"
	    "d1 = 1979-05-27 07:32:00.123456789123-07:30\n"
	    "d2 = 2000-02-29t23:59:60z\n"
	    "d3 = 07:32:00.5\n"
	    "d4 = 1979-05-27\n"
	    "s1 = 'C:\\x'\n"
	    "s2 = '''\n\"\"''''\n"
	    "s3 = \"\"\"a\\\n    \t\n b\"\"\"\n", &err);
	CHECK(root != NULL);
	if (root == NULL) {
		fprintf(stderr, "%d:%d: %s\n", err.pos.line, err.pos.col,
		    err.msg);
		return;
	}
	CHECK(toml_integer(toml_table_get(root, "i1")) == INT64_MIN);
	CHECK(toml_integer(toml_table_get(root, "i2")) == INT64_MAX);
	CHECK_INT_EQ(toml_integer(toml_table_get(root, "i3")), 15);
	CHECK_INT_EQ(toml_integer(toml_table_get(root, "i4")), 10);
	CHECK_INT_EQ(toml_integer(toml_table_get(root, "i5")), 1000);
	CHECK(toml_float(toml_table_get(root, "f1")) == -1.5e-3);
	CHECK(isinf(toml_float(toml_table_get(root, "f2"))) &&
	    toml_float(toml_table_get(root, "f2")) < 0);
	CHECK(isnan(toml_float(toml_table_get(root, "f3"))));
	CHECK(toml_float(toml_table_get(root, "f4")) == 10.25);

	v = toml_table_get(root, "d1");
	CHECK(toml_type(v) == TOML_DATETIME);
	dt = toml_datetime(v);
	CHECK_INT_EQ(dt->year, 1979);
	CHECK_INT_EQ(dt->second, 0);
	CHECK_INT_EQ(dt->nanosecond, 123456789);
	CHECK_INT_EQ(dt->frac_digits, 9);
	CHECK_INT_EQ(dt->offset_min, -450);
	CHECK(!dt->offset_z);
	dt = toml_datetime(toml_table_get(root, "d2"));
	CHECK(dt->offset_z && dt->second == 60 && dt->day == 29);
	v = toml_table_get(root, "d3");
	CHECK(toml_type(v) == TOML_TIME_LOCAL);
	CHECK_INT_EQ(toml_datetime(v)->nanosecond, 500000000);
	CHECK_INT_EQ(toml_datetime(v)->frac_digits, 1);
	CHECK(toml_type(toml_table_get(root, "d4")) == TOML_DATE_LOCAL);

	CHECK_STR_EQ(toml_string(toml_table_get(root, "s1"), NULL), "C:\\x");
	CHECK_STR_EQ(toml_string(toml_table_get(root, "s2"), NULL),
	    "\"\"'");
	CHECK_STR_EQ(toml_string(toml_table_get(root, "s3"), NULL), "ab");

	/* Asking for the wrong type gets an empty answer. */
	v = toml_table_get(root, "s1");
	CHECK_INT_EQ(toml_integer(v), 0);
	CHECK(toml_datetime(v) == NULL);
	CHECK_INT_EQ(toml_table_len(v), 0);
	CHECK(toml_table_at(v, 0) == NULL);
	CHECK(toml_array_at(v, 0) == NULL);
	CHECK(toml_string(toml_table_get(root, "i1"), NULL) == NULL);
	CHECK(toml_table_get(root, "absent") == NULL);
	CHECK(toml_table_key(root, 1000, NULL, NULL) == NULL);
	CHECK_STR_EQ(toml_type_str(TOML_BOOL), "boolean");
	CHECK_STR_EQ(toml_type_str(TOML_DATETIME_LOCAL), "datetime-local");
	toml_free(root);
}

static void
test_nul_keys(void)
{
	struct toml_error err;
	struct toml_value *root;
	const char *k, *s;
	size_t n;

	root = PARSE("\"a\\u0000b\" = \"x\\u0000y\"\n'a' = 1\n", &err);
	CHECK(root != NULL);
	if (root == NULL)
		return;
	CHECK_INT_EQ(toml_table_len(root), 2);
	k = toml_table_key(root, 0, &n, NULL);
	CHECK_INT_EQ(n, 3);
	CHECK(memcmp(k, "a\0b", 4) == 0);
	s = toml_string(toml_table_at(root, 0), &n);
	CHECK_INT_EQ(n, 3);
	CHECK(memcmp(s, "x\0y", 4) == 0);
	/* "a" must find the plain key, not stop early inside "a\0b". */
	CHECK_INT_EQ(toml_integer(toml_table_get(root, "a")), 1);
	toml_free(root);

	/* Both keys differ only past a NUL: not duplicates. */
	CHECK_VALID("\"\\u0000a\" = 1\n\"\\u0000b\" = 2\n");
	CHECK_INVALID("\"\\u0000a\" = 1\n\"\\u0000a\" = 2\n");
}

static void
test_order(void)
{
	struct toml_error err;
	struct toml_value *root;
	const char *want[] = { "z", "a", "m", "b", "y", "c", "x", "d", "w",
	    "e", "v", "f" };
	char doc[256];
	size_t i, n = 0;

	/* Twelve keys: past the point where the table is hashed. */
	for (i = 0; i < sizeof(want) / sizeof(want[0]); i++)
		n += (size_t)snprintf(doc + n, sizeof(doc) - n, "%s = %zu\n",
		    want[i], i);
	root = parse(doc, n, &err);
	CHECK(root != NULL);
	if (root == NULL)
		return;
	CHECK_INT_EQ(toml_table_len(root), 12);
	for (i = 0; i < 12; i++) {
		CHECK_STR_EQ(toml_table_key(root, i, NULL, NULL), want[i]);
		CHECK_INT_EQ(toml_integer(toml_table_get(root, want[i])), i);
	}
	toml_free(root);

	/* Sub-tables keep the order of first mention, header or dotted. */
	root = PARSE("b.x = 1\n[c]\n[a.y]\n[[d]]\n", &err);
	CHECK(root != NULL);
	if (root != NULL) {
		CHECK_STR_EQ(toml_table_key(root, 0, NULL, NULL), "b");
		CHECK_STR_EQ(toml_table_key(root, 1, NULL, NULL), "c");
		CHECK_STR_EQ(toml_table_key(root, 2, NULL, NULL), "a");
		CHECK_STR_EQ(toml_table_key(root, 3, NULL, NULL), "d");
		toml_free(root);
	}
}

static char *
repeat(const char *head, const char *unit, size_t times, const char *tail,
    size_t *len)
{
	size_t hl = strlen(head), ul = strlen(unit), tl = strlen(tail), i;
	char *s;

	if ((s = malloc(hl + ul * times + tl + 1)) == NULL)
		abort();
	memcpy(s, head, hl);
	for (i = 0; i < times; i++)
		memcpy(s + hl + i * ul, unit, ul);
	memcpy(s + hl + ul * times, tail, tl + 1);
	*len = hl + ul * times + tl;
	return s;
}

/* Parses head, open*times, mid, close*times; returns whether it parsed. */
static bool
parses_nested(const char *head, const char *open, const char *mid,
    const char *close, size_t times, struct toml_error *err)
{
	struct toml_value *v;
	char *a, *b, *doc;
	size_t al, bl;

	a = repeat(head, open, times, mid, &al);
	b = repeat("", close, times, "\n", &bl);
	if ((doc = malloc(al + bl)) == NULL)
		abort();
	memcpy(doc, a, al);
	memcpy(doc + al, b, bl);
	v = parse(doc, al + bl, err);
	free(a);
	free(b);
	free(doc);
	toml_free(v);
	return v != NULL;
}

static void
test_depth(void)
{
	struct toml_error err;
	struct toml_value *v;
	char *doc;
	size_t len;

	/* a is at depth 1; 99 more arrays fit, one more does not. */
	CHECK(parses_nested("a = ", "[", "", "]", 100, &err));
	CHECK(!parses_nested("a = ", "[", "", "]", 101, &err));
	CHECK_STR_EQ(err.msg, "value nested deeper than 100 levels");
	CHECK(parses_nested("a = ", "{b=", "1", "}", 99, &err));
	CHECK(!parses_nested("a = ", "{b=", "1", "}", 100, &err));
	/* Far too deep must fail cleanly, not blow the stack. */
	CHECK(!parses_nested("a = ", "[", "", "]", 200000, &err));
	CHECK(!parses_nested("a = ", "{b=", "1", "}", 200000, &err));
	CHECK(!parses_nested("a = ", "[{b=", "1", "}]", 100000, &err));

	doc = repeat("k", ".k", 99, " = 1\n", &len);
	v = parse(doc, len, &err);
	CHECK(v != NULL);
	toml_free(v);
	free(doc);
	doc = repeat("k", ".k", 100, " = 1\n", &len);
	CHECK(parse(doc, len, &err) == NULL);
	CHECK_STR_EQ(err.msg, "key nested deeper than 100 levels");
	free(doc);
	doc = repeat("[k", ".k", 99, "]\nx.y = 1\n", &len);
	CHECK(parse(doc, len, &err) == NULL);
	CHECK_INT_EQ(err.pos.line, 2);
	free(doc);
	doc = repeat("[[k", ".k", 100, "]]\n", &len);
	CHECK(parse(doc, len, &err) == NULL);
	free(doc);
	doc = repeat("x = ", "[", 5000, "", &len);
	CHECK(parse(doc, len, &err) == NULL);
	free(doc);
}

/* Every allocation of a parse fails once in turn: no crash, no leak. */
static void
test_oom(void)
{
	static const char *const docs[] = {
		"a = 1\n",
		"[a.b]\nc = 'x'\n[[d]]\ne = [1, {f = 2.5}]\n[[d]]\n",
		("k0=0\nk1=1\nk2=2\nk3=3\nk4=4\nk5=5\nk6=6\nk7=7\nk8=8\n"
		    "k9=9\nk10=10\nk11 = \"\"\"\nlong string\"\"\"\n"),
		"x.y.z = 2000-01-01T00:00:00Z\nt = {a.b = [[]], c = {}}\n",
	};
	struct toml_error err;
	struct toml_value *v;
	long total, i;
	size_t d;
	int bad = 0;

	for (d = 0; d < sizeof(docs) / sizeof(docs[0]); d++) {
		alloc_calls = 0;
		v = toml_parse(docs[d], strlen(docs[d]), &err);
		total = alloc_calls;
		CHECK(v != NULL);
		toml_free(v);
		if (total == 0) {
			printf("unit-toml: malloc not wrapped, skipping the "
			    "out-of-memory test\n");
			return;
		}
		for (i = 0; i < total; i++) {
			alloc_calls = 0;
			alloc_fail_at = i;
			v = toml_parse(docs[d], strlen(docs[d]), &err);
			alloc_fail_at = -1;
			if (v != NULL ||
			    strcmp(err.msg, "out of memory") != 0) {
				fprintf(stderr, "doc %zu, allocation %ld: %s\n",
				    d, i, v != NULL ? "parsed" : err.msg);
				bad++;
			}
			toml_free(v);
		}
	}
	CHECK_INT_EQ(bad, 0);
}

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Writes line i of big document number f into buf. */
static size_t
large_line(size_t f, size_t i, char *buf, size_t sz)
{
	switch (f) {
	case 0:
		return (size_t)snprintf(buf, sz, "key%zu = %zu\n", i, i);
	case 1:
		return (size_t)snprintf(buf, sz, "[t.key%zu]\nv = %zu\n", i, i);
	case 2:
		return (size_t)snprintf(buf, sz, "[[aot]]\nv = %zu\n", i);
	default:
		return (size_t)snprintf(buf, sz, "t.key%zu = %zu\n", i, i);
	}
}

/* 100k keys in one table, 100k headers, 100k [[array]] elements. */
static void
test_large(void)
{
	struct toml_error err;
	struct toml_value *root;
	const struct toml_value *t;
	size_t f, i, n, cap = 4 << 20;
	double start, took;
	char *doc;

	if ((doc = malloc(cap)) == NULL)
		abort();
	for (f = 0; f < 4; f++) {
		for (i = n = 0; i < 100000; i++)
			n += large_line(f, i, doc + n, cap - n);
		start = now();
		root = parse(doc, n, &err);
		took = now() - start;
		CHECK(root != NULL);
		if (root == NULL)
			continue;
		/* Quadratic behaviour would take minutes here. */
		if (took > 5.0)
			fprintf(stderr, "document %zu took %.2fs\n", f, took);
		CHECK(took < 5.0);
		t = root;
		if (f == 1 || f == 3)
			t = toml_table_get(root, "t");
		if (f == 2) {
			t = toml_table_get(root, "aot");
			CHECK_INT_EQ(toml_array_len(t), 100000);
		} else {
			CHECK_INT_EQ(toml_table_len(t), 100000);
			CHECK(toml_table_get(t, "key99999") != NULL);
			CHECK(toml_table_get(t, "key100000") == NULL);
			CHECK_STR_EQ(toml_table_key(t, 54321, NULL, NULL),
			    "key54321");
		}
		toml_free(root);
	}
	/* A duplicate at the end of a big table is still found. */
	for (i = n = 0; i < 100000; i++)
		n += large_line(0, i, doc + n, cap - n);
	n += (size_t)snprintf(doc + n, cap - n, "key77 = 2\n");
	CHECK(parse(doc, n, &err) == NULL);
	CHECK_INT_EQ(err.pos.line, 100001);
	CHECK_STR_EQ(err.msg, "duplicate key 'key77' (first at line 78)");
	free(doc);
}

/*
 * The root table, one array and its items: 524,288 values load, one more
 * does not, and the error points at the item that went over.
 */
static void
test_value_cap(void)
{
	struct toml_error err;
	struct toml_value *v;
	char *doc;
	size_t len;

	doc = repeat("a = [", "1,", 524286, "]\n", &len);
	v = parse(doc, len, &err);
	CHECK(v != NULL);
	if (v != NULL)
		CHECK_INT_EQ(toml_array_len(toml_table_get(v, "a")), 524286);
	toml_free(v);
	free(doc);
	doc = repeat("a = [", "1,", 524287, "]\n", &len);
	CHECK(parse(doc, len, &err) == NULL);
	CHECK_STR_EQ(err.msg, "more than 524288 values in one document");
	CHECK_INT_EQ(err.pos.line, 1);
	CHECK_INT_EQ(err.pos.col, 6 + 2 * 524286);
	free(doc);
	/* Inline tables and empty arrays count like any other value. */
	doc = repeat("a = [", "{},", 600000, "]\n", &len);
	CHECK(parse(doc, len, &err) == NULL);
	CHECK_STR_EQ(err.msg, "more than 524288 values in one document");
	free(doc);
}

int
main(void)
{
	test_positions();
	test_errors();
	test_redefinition();
	test_values();
	test_nul_keys();
	test_order();
	test_depth();
	test_large();
	test_value_cap();
	test_oom();
	return check_report("unit-toml");
}
