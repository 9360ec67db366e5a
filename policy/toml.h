/* toml.h - TOML 1.0 parser: bytes in, an immutable tree of values out. */
#ifndef MOAT_TOML_H
#define MOAT_TOML_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum toml_type {
	TOML_TABLE = 0,
	TOML_ARRAY,
	TOML_STRING,
	TOML_INTEGER,
	TOML_FLOAT,
	TOML_BOOL,
	TOML_DATETIME,		/* offset date-time: 1979-05-27T07:32:00Z */
	TOML_DATETIME_LOCAL,	/* 1979-05-27T07:32:00 */
	TOML_DATE_LOCAL,	/* 1979-05-27 */
	TOML_TIME_LOCAL,	/* 07:32:00 */
};

/* Positions are 1-based; col counts bytes from the start of the line. */
struct toml_pos {
	int line;
	int col;
};

struct toml_error {
	struct toml_pos pos;
	char msg[200];
};

struct toml_datetime {
	int year, month, day;		/* zero for TOML_TIME_LOCAL */
	int hour, minute, second;	/* zero for TOML_DATE_LOCAL */
	int nanosecond;
	int frac_digits;		/* digits written after '.', 0 if none;
					 * at most 9: finer digits are cut */
	int offset_min;			/* minutes east of UTC (TOML_DATETIME) */
	bool offset_z;			/* written as 'Z' or 'z' */
};

struct toml_value;

/*
 * Parses len bytes of a TOML 1.0 document. Returns the root table, owned
 * by the caller and released with toml_free(), or NULL with *err set to
 * the position and reason of the first error. The input need not be
 * NUL-terminated and is not referenced after the call returns.
 *
 * The whole input must be valid UTF-8 (a leading BOM is skipped); NUL and
 * other control bytes, and a CR not followed by LF, are errors. A value
 * nested deeper than 100 levels below the root (arrays, tables, key parts)
 * is an error, so walking the tree recursively is safe. Multi-line strings
 * store CRLF as LF. err may be NULL.
 */
struct toml_value *toml_parse(const char *buf, size_t len,
    struct toml_error *err);
void toml_free(struct toml_value *root);

enum toml_type toml_type(const struct toml_value *v);
/* "table", "array", "string", "integer", "float", "boolean", "datetime",
 * "datetime-local", "date-local", "time-local". */
const char *toml_type_str(enum toml_type t);
/*
 * Where the value was written; for a table, its header or first key:
 * the '[' of the header that defined it ([a.b] or [[a.b]]), the '{' of
 * an inline table, the key part that created it for a table made by a
 * dotted key or as the middle of a header path, 1:1 for the root.
 */
struct toml_pos toml_value_pos(const struct toml_value *v);

/* Tables keep keys in the order they were first defined. */
size_t toml_table_len(const struct toml_value *t);
/* Key bytes (NUL-terminated, may contain NUL from \u0000 escapes; *len
 * excludes the terminator) and where the key was first written: in a
 * header [a.b] the key 'b' is where b stands in that header. NULL if i is
 * out of range; len and pos may be NULL. */
const char *toml_table_key(const struct toml_value *t, size_t i, size_t *len,
    struct toml_pos *pos);
const struct toml_value *toml_table_at(const struct toml_value *t, size_t i);
/* NULL if absent, or if i is out of range for toml_table_at(). Keys with
 * an embedded NUL cannot be looked up by name: walk them by index. */
const struct toml_value *toml_table_get(const struct toml_value *t,
    const char *key);

/* Key or string bytes (n of them, NULs included) made printable for a
 * message into out: control bytes and broken UTF-8 as \xNN, cut with
 * "..." past a few dozen characters. Returns out. */
const char *toml_quote(const char *s, size_t n, char *out, size_t outsz);

size_t toml_array_len(const struct toml_value *a);
const struct toml_value *toml_array_at(const struct toml_value *a, size_t i);

/* Valid only for the matching type; the returned memory lives as long as
 * the tree. Strings are NUL-terminated, *len (if not NULL) excludes it.
 * On the wrong type they answer NULL, 0, 0.0 or false rather than crash,
 * as do the table and array calls above. */
const char *toml_string(const struct toml_value *v, size_t *len);
int64_t toml_integer(const struct toml_value *v);
double toml_float(const struct toml_value *v);
bool toml_bool(const struct toml_value *v);
const struct toml_datetime *toml_datetime(const struct toml_value *v);

#endif
