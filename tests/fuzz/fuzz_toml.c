/* fuzz_toml.c - libFuzzer target: parse any bytes, then walk the whole tree. */
/*
 * Build (from the source root):
 *   CC=clang meson setup build-fuzz -Dfuzz=true \
 *       -Db_sanitize=address,undefined -Db_lundef=false
 *   ninja -C build-fuzz tests/fuzz/fuzz_toml
 *
 * Smoke run (what CI does, a minute):
 *   mkdir -p /tmp/toml-corpus
 *   build-fuzz/tests/fuzz/fuzz_toml /tmp/toml-corpus tests/fuzz/corpus/toml \
 *       -dict=tests/fuzz/toml.dict -max_total_time=60
 * New inputs go to the first directory, so the seeds stay untouched.
 *
 * Replay the seeds only (also registered as the meson test fuzz-toml-seeds):
 *   build-fuzz/tests/fuzz/fuzz_toml -runs=0 tests/fuzz/corpus/toml
 *
 * A crash leaves crash-<sha1> in the working directory; rerun it with
 * fuzz_toml crash-<sha1>, fix, and add the input to tests/unit/test_toml.c
 * or to the corpus.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "toml.h"

int LLVMFuzzerTestOneInput(const uint8_t *, size_t);

/* The checks must fire in any build, NDEBUG or not. */
#define INVARIANT(cond)							\
	do {								\
		if (!(cond))						\
			abort();					\
	} while (0)

static size_t lines;	/* lines in the current input, for bounds */

static void
check_pos(struct toml_pos pos)
{
	INVARIANT(pos.line >= 1 && (size_t)pos.line <= lines);
	INVARIANT(pos.col >= 1);
}

static void
walk(const struct toml_value *v, int depth)
{
	const struct toml_datetime *dt;
	const struct toml_value *child;
	struct toml_pos pos;
	const char *s;
	size_t i, n, klen;

	/* The parser promises a bounded depth; a walker relies on it. */
	INVARIANT(depth <= 200);
	check_pos(toml_value_pos(v));
	INVARIANT(toml_type_str(toml_type(v)) != NULL);

	/* Every accessor, whatever the type: wrong ones answer empty. */
	n = toml_table_len(v);
	for (i = 0; i < n; i++) {
		s = toml_table_key(v, i, &klen, &pos);
		INVARIANT(s != NULL && s[klen] == '\0');
		check_pos(pos);
		child = toml_table_at(v, i);
		INVARIANT(child != NULL);
		/* Keys are unique, so a NUL-free key finds this very value. */
		if (strlen(s) == klen)
			INVARIANT(toml_table_get(v, s) == child);
		walk(child, depth + 1);
	}
	INVARIANT(toml_table_key(v, n, NULL, NULL) == NULL);
	INVARIANT(toml_table_at(v, n) == NULL);

	n = toml_array_len(v);
	for (i = 0; i < n; i++) {
		child = toml_array_at(v, i);
		INVARIANT(child != NULL);
		walk(child, depth + 1);
	}
	INVARIANT(toml_array_at(v, n) == NULL);

	s = toml_string(v, &n);
	INVARIANT((s != NULL) == (toml_type(v) == TOML_STRING));
	if (s != NULL)
		INVARIANT(s[n] == '\0');
	(void)toml_integer(v);
	(void)toml_float(v);
	(void)toml_bool(v);
	dt = toml_datetime(v);
	if (dt != NULL) {
		INVARIANT(dt->month >= 0 && dt->month <= 12);
		INVARIANT(dt->day >= 0 && dt->day <= 31);
		INVARIANT(dt->hour >= 0 && dt->hour <= 23);
		INVARIANT(dt->minute >= 0 && dt->minute <= 59);
		INVARIANT(dt->second >= 0 && dt->second <= 60);
		INVARIANT(dt->nanosecond >= 0 && dt->nanosecond < 1000000000);
		INVARIANT(dt->frac_digits >= 0 && dt->frac_digits <= 9);
		INVARIANT(dt->offset_min > -24 * 60 &&
		    dt->offset_min < 24 * 60);
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct toml_error err;
	struct toml_value *root;
	size_t i;

	lines = 1;
	for (i = 0; i < size; i++)
		if (data[i] == '\n')
			lines++;
	root = toml_parse((const char *)data, size, &err);
	if (root == NULL) {
		check_pos(err.pos);
		INVARIANT(memchr(err.msg, '\0', sizeof(err.msg)) != NULL);
		INVARIANT(err.msg[0] != '\0');
		return 0;
	}
	INVARIANT(toml_type(root) == TOML_TABLE);
	walk(root, 0);
	toml_free(root);
	return 0;
}
