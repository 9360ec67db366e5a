/* toml.c - TOML 1.0 parser: checks a whole document and builds its tree. */
#include "toml.h"

#include <errno.h>
#include <limits.h>
#include <locale.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/*
 * A value deeper than this below the root is refused. It bounds the
 * recursion of the parser, of toml_free() and of every caller that walks
 * the tree, whatever the input.
 */
#define TOML_MAX_DEPTH		100
/*
 * A document with more values than this (tables, arrays and their items
 * included) is refused. Each value costs some 100 bytes of memory, so a
 * file of 16 MiB written as "1," over and over would otherwise take 700 MB
 * to load; long address lists belong in files of their own.
 */
#define TOML_MAX_VALUES		(1u << 19)
/* A table with more keys than this gets a hash index, so that documents
 * with 100k keys in one table stay linear. */
#define TABLE_LINEAR_MAX	8
/* Characters of a key or token quoted in an error message. */
#define MSG_QUOTE_MAX		48

/*
 * How a table or an array came to exist. The redefinition rules of TOML
 * depend only on this: what may later define, extend or append to it.
 */
enum toml_kind {
	KIND_SCALAR = 0,
	TAB_IMPLICIT,	/* inside a [a.b.c] path: a header may define it once */
	TAB_HEADER,	/* defined by [header] or [[header]], or the root */
	TAB_DOTTED,	/* made by a dotted key: no header may define it */
	TAB_INLINE,	/* { ... }: frozen, and so is everything inside it */
	ARR_STATIC,	/* [ ... ]: frozen */
	ARR_TABLES,	/* built by [[header]]: more elements may follow */
};

struct toml_entry {
	char			*key;	/* NUL-terminated copy */
	size_t			 keylen;
	uint32_t		 hash;
	struct toml_pos		 pos;
	struct toml_value	*val;	/* NULL while its value is parsed */
};

struct toml_table {
	struct toml_entry	*ent;	/* in order of first definition */
	size_t			 len;
	size_t			 cap;
	/* Open addressing; a slot holds an entry index + 1, or 0 if free.
	 * idxcap is a power of two, or 0 while the table is small. */
	uint32_t		*idx;
	size_t			 idxcap;
};

struct toml_array {
	struct toml_value	**item;
	size_t			  len;
	size_t			  cap;
};

struct toml_value {
	enum toml_type		 type;
	enum toml_kind		 kind;
	struct toml_pos		 pos;
	union {
		struct toml_table	 tab;
		struct toml_array	 arr;
		struct {
			char	*s;
			size_t	 len;
		}			 str;
		int64_t			 i;
		double			 f;
		bool			 b;
		struct toml_datetime	 dt;
	} u;
};

/* Growable byte buffer for decoded strings and keys. */
struct sbuf {
	char	*d;
	size_t	 len;
	size_t	 cap;
};

/* One part of a dotted key; its bytes live in parser.kb. */
struct key_part {
	size_t		 off;
	size_t		 len;
	struct toml_pos	 pos;
};

struct parser {
	const char		*buf;
	size_t			 len;
	size_t			 at;	/* next byte to read */
	size_t			 bol;	/* where the current line starts */
	size_t			 line;
	struct toml_error	*err;
	bool			 failed;
	struct toml_value	*root;
	struct toml_value	*cur;	/* table of the current section */
	int			 cur_depth;
	struct sbuf		 sb;	/* decoded string, cleaned number */
	struct sbuf		 kb;	/* decoded parts of the current key */
	struct key_part		 part[TOML_MAX_DEPTH];
	size_t			 nparts;
	locale_t		 cloc;	/* "C" locale for strtod_l */
	size_t			 nvalues;
};

static struct toml_value *parse_value(struct parser *, int);
static void value_free(struct toml_value *);

/* Errors */

static struct toml_pos
pos_at(const struct parser *p, size_t off)
{
	struct toml_pos pos;
	size_t col = off - p->bol + 1;

	pos.line = p->line > INT_MAX ? INT_MAX : (int)p->line;
	pos.col = col > INT_MAX ? INT_MAX : (int)col;
	return pos;
}

static void perr_v(struct parser *, struct toml_pos, const char *, va_list)
    __attribute__((format(printf, 3, 0)));
static void perr_pos(struct parser *, struct toml_pos, const char *, ...)
    __attribute__((format(printf, 3, 4)));
static void perr(struct parser *, size_t, const char *, ...)
    __attribute__((format(printf, 3, 4)));

static void
perr_v(struct parser *p, struct toml_pos pos, const char *fmt, va_list ap)
{
	/* The first error is the precise one; later ones are fallout. */
	if (p->failed)
		return;
	p->failed = true;
	p->err->pos = pos;
	vsnprintf(p->err->msg, sizeof(p->err->msg), fmt, ap);
}

static void
perr_pos(struct parser *p, struct toml_pos pos, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	perr_v(p, pos, fmt, ap);
	va_end(ap);
}

/* Reports an error at byte offset off, which must be on the current line. */
static void
perr(struct parser *p, size_t off, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	perr_v(p, pos_at(p, off), fmt, ap);
	va_end(ap);
}

/*
 * Reports a key at kp that clashes with entry e, and where e was first
 * defined: in a long file that is what the reader goes looking for.
 */
static void __attribute__((format(printf, 4, 5)))
perr_clash(struct parser *p, const struct key_part *kp,
    const struct toml_entry *e, const char *fmt, ...)
{
	char msg[sizeof(((struct toml_error *)0)->msg)];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	/* A table a header promoted from implicit moved to that header. */
	perr_pos(p, kp->pos, "%s (first at line %d)", msg,
	    (e->val != NULL ? e->val->pos : e->pos).line);
}

/* Length of the valid UTF-8 sequence at s (n bytes readable), or 0. */
static size_t
utf8_len(const unsigned char *s, size_t n)
{
	unsigned char lo = 0x80, hi = 0xbf;
	size_t need, i;

	if (s[0] < 0x80)
		return 1;
	if (s[0] < 0xc2)
		return 0;
	if (s[0] < 0xe0)
		need = 1;
	else if (s[0] < 0xf0) {
		need = 2;
		if (s[0] == 0xe0)
			lo = 0xa0;	/* overlong */
		else if (s[0] == 0xed)
			hi = 0x9f;	/* UTF-16 surrogates */
	} else if (s[0] < 0xf5) {
		need = 3;
		if (s[0] == 0xf0)
			lo = 0x90;	/* overlong */
		else if (s[0] == 0xf4)
			hi = 0x8f;	/* beyond U+10FFFF */
	} else
		return 0;
	if (n < need + 1 || s[1] < lo || s[1] > hi)
		return 0;
	for (i = 2; i <= need; i++)
		if ((s[i] & 0xc0) != 0x80)
			return 0;
	return need + 1;
}

static uint32_t
utf8_decode(const unsigned char *s, size_t n)
{
	uint32_t cp;
	size_t i;

	if (n == 1)
		return s[0];
	cp = s[0] & (0xff >> (n + 1));
	for (i = 1; i < n; i++)
		cp = (cp << 6) | (s[i] & 0x3f);
	return cp;
}

/* Names the byte at off for a message: 'x', newline, U+0007, ... */
static const char *
char_name(const struct parser *p, size_t off, char *out, size_t outsz)
{
	const unsigned char *s = (const unsigned char *)p->buf + off;
	size_t n;

	if (off >= p->len)
		return "end of input";
	if (s[0] == '\n' || (s[0] == '\r' && off + 1 < p->len && s[1] == '\n'))
		return "newline";
	if (s[0] == '\'')
		return "\"'\"";
	if (s[0] >= 0x20 && s[0] < 0x7f) {
		snprintf(out, outsz, "'%c'", s[0]);
		return out;
	}
	n = utf8_len(s, p->len - off);
	if (n == 0)
		snprintf(out, outsz, "invalid UTF-8 byte 0x%02X", s[0]);
	else
		snprintf(out, outsz, "U+%04X", (unsigned)utf8_decode(s, n));
	return out;
}

/* Makes key or token bytes printable for a message, cut if long. */
static const char *
quote_bytes(const char *s, size_t n, char *out, size_t outsz)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t i = 0, o = 0, k;

	while (i < n) {
		k = utf8_len(u + i, n - i);
		if (o + 8 >= outsz || o >= MSG_QUOTE_MAX) {
			memcpy(out + o, "...", 4);
			return out;
		}
		if (k == 0 || u[i] < 0x20 || u[i] == 0x7f) {
			snprintf(out + o, outsz - o, "\\x%02X", u[i]);
			o += 4;
			i++;
			continue;
		}
		if (o + k + 4 >= outsz)
			break;
		memcpy(out + o, u + i, k);
		o += k;
		i += k;
	}
	out[o] = '\0';
	if (i < n && o + 4 < outsz)
		memcpy(out + o, "...", 4);
	return out;
}

const char *
toml_quote(const char *s, size_t n, char *out, size_t outsz)
{
	return quote_bytes(s, n, out, outsz);
}

/* Buffers */

static int
sbuf_add(struct parser *p, struct sbuf *b, const void *s, size_t n)
{
	size_t cap;
	char *d;

	if (n > b->cap - b->len) {
		if (n > SIZE_MAX / 4 - b->len) {
			perr(p, p->at, "out of memory");
			return -1;
		}
		cap = b->cap ? b->cap : 64;
		while (cap - b->len < n)
			cap *= 2;
		if ((d = realloc(b->d, cap)) == NULL) {
			perr(p, p->at, "out of memory");
			return -1;
		}
		b->d = d;
		b->cap = cap;
	}
	if (n > 0)
		memcpy(b->d + b->len, s, n);
	b->len += n;
	return 0;
}

/* Tables and arrays */

static struct toml_value *
value_new(struct parser *p, enum toml_type type, struct toml_pos pos)
{
	struct toml_value *v;

	if (++p->nvalues > TOML_MAX_VALUES) {
		perr_pos(p, pos, "more than %u values in one document",
		    TOML_MAX_VALUES);
		return NULL;
	}
	if ((v = calloc(1, sizeof(*v))) == NULL) {
		perr_pos(p, pos, "out of memory");
		return NULL;
	}
	v->type = type;
	v->pos = pos;
	return v;
}

static void
value_free(struct toml_value *v)
{
	size_t i;

	if (v == NULL)
		return;
	switch (v->type) {
	case TOML_TABLE:
		for (i = 0; i < v->u.tab.len; i++) {
			free(v->u.tab.ent[i].key);
			value_free(v->u.tab.ent[i].val);
		}
		free(v->u.tab.ent);
		free(v->u.tab.idx);
		break;
	case TOML_ARRAY:
		for (i = 0; i < v->u.arr.len; i++)
			value_free(v->u.arr.item[i]);
		free(v->u.arr.item);
		break;
	case TOML_STRING:
		free(v->u.str.s);
		break;
	default:
		break;
	}
	free(v);
}

/* FNV-1a: keys come from the operator's own config, not from the wire. */
static uint32_t
hash_key(const char *k, size_t n)
{
	uint32_t h = 2166136261u;
	size_t i;

	for (i = 0; i < n; i++) {
		h ^= (unsigned char)k[i];
		h *= 16777619u;
	}
	return h;
}

static struct toml_entry *
table_find(const struct toml_table *t, const char *k, size_t n)
{
	struct toml_entry *e;
	uint32_t h;
	size_t i, mask;

	if (t->idxcap == 0) {
		for (i = 0; i < t->len; i++) {
			e = &t->ent[i];
			if (e->keylen == n && memcmp(e->key, k, n) == 0)
				return e;
		}
		return NULL;
	}
	h = hash_key(k, n);
	mask = t->idxcap - 1;
	for (i = h & mask; t->idx[i] != 0; i = (i + 1) & mask) {
		e = &t->ent[t->idx[i] - 1];
		if (e->hash == h && e->keylen == n && memcmp(e->key, k, n) == 0)
			return e;
	}
	return NULL;
}

static void
index_put(struct toml_table *t, size_t ent)
{
	size_t i, mask = t->idxcap - 1;

	for (i = t->ent[ent].hash & mask; t->idx[i] != 0; i = (i + 1) & mask)
		continue;
	t->idx[i] = (uint32_t)(ent + 1);
}

/*
 * Appends key k (n bytes) with value val to table tv. The key must not be
 * present. On failure val is freed, so the caller never has to.
 */
static int
table_add(struct parser *p, struct toml_value *tv, const char *k, size_t n,
    struct toml_pos pos, struct toml_value *val)
{
	struct toml_table *t = &tv->u.tab;
	struct toml_entry *ent, *e;
	uint32_t *idx;
	size_t cap, i;
	char *key;

	if (t->len >= UINT32_MAX - 1) {
		perr_pos(p, pos, "too many keys in one table");
		goto fail;
	}
	if (t->len == t->cap) {
		cap = t->cap ? t->cap * 2 : 4;
		if (cap > SIZE_MAX / sizeof(*ent) ||
		    (ent = realloc(t->ent, cap * sizeof(*ent))) == NULL)
			goto oom;
		t->ent = ent;
		t->cap = cap;
	}
	/* Keep the load factor at or under one half. */
	if (t->len + 1 > TABLE_LINEAR_MAX && (t->len + 1) * 2 > t->idxcap) {
		cap = t->idxcap ? t->idxcap * 2 : 32;
		while (cap < (t->len + 1) * 2)
			cap *= 2;
		if ((idx = calloc(cap, sizeof(*idx))) == NULL)
			goto oom;
		free(t->idx);
		t->idx = idx;
		t->idxcap = cap;
		for (i = 0; i < t->len; i++)
			index_put(t, i);
	}
	if ((key = malloc(n + 1)) == NULL)
		goto oom;
	if (n > 0)
		memcpy(key, k, n);
	key[n] = '\0';
	e = &t->ent[t->len];
	e->key = key;
	e->keylen = n;
	e->hash = hash_key(k, n);
	e->pos = pos;
	e->val = val;
	t->len++;
	if (t->idxcap != 0)
		index_put(t, t->len - 1);
	return 0;
 oom:
	perr_pos(p, pos, "out of memory");
 fail:
	value_free(val);
	return -1;
}

/* Appends val to array av; on failure val is freed. */
static int
array_add(struct parser *p, struct toml_value *av, struct toml_value *val)
{
	struct toml_array *a = &av->u.arr;
	struct toml_value **item;
	size_t cap;

	if (a->len == a->cap) {
		cap = a->cap ? a->cap * 2 : 4;
		if (cap > SIZE_MAX / sizeof(*item) ||
		    (item = realloc(a->item, cap * sizeof(*item))) == NULL) {
			perr_pos(p, val->pos, "out of memory");
			value_free(val);
			return -1;
		}
		a->item = item;
		a->cap = cap;
	}
	a->item[a->len++] = val;
	return 0;
}

/* Lexing */

static bool
is_bare(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
	    (c >= '0' && c <= '9') || c == '_' || c == '-';
}

static bool
is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

static int
hex_val(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static int
peek(const struct parser *p, size_t ahead)
{
	if (ahead >= p->len - p->at)
		return -1;
	return (unsigned char)p->buf[p->at + ahead];
}

static void
skip_ws(struct parser *p)
{
	while (p->at < p->len &&
	    (p->buf[p->at] == ' ' || p->buf[p->at] == '\t'))
		p->at++;
}

/* Consumes LF or CRLF: 1 if one was there, 0 if not, -1 on a bare CR. */
static int
eat_newline(struct parser *p)
{
	if (peek(p, 0) == '\n') {
		p->at++;
	} else if (peek(p, 0) == '\r') {
		if (peek(p, 1) != '\n') {
			perr(p, p->at,
			    "carriage return not followed by newline");
			return -1;
		}
		p->at += 2;
	} else
		return 0;
	p->line++;
	p->bol = p->at;
	return 1;
}

/*
 * Length of the character at p->at if it may appear in a comment or a
 * string (what), 0 after reporting why not. Newlines are the caller's.
 */
static size_t
text_char(struct parser *p, const char *what)
{
	unsigned char c = (unsigned char)p->buf[p->at];
	size_t n;

	if (c == '\t' || (c >= 0x20 && c < 0x7f))
		return 1;
	if (c < 0x80) {
		perr(p, p->at, "control character U+%04X not allowed in %s",
		    c, what);
		return 0;
	}
	n = utf8_len((const unsigned char *)p->buf + p->at, p->len - p->at);
	if (n == 0)
		perr(p, p->at, "invalid UTF-8 in %s", what);
	return n;
}

static int
skip_comment(struct parser *p)
{
	size_t n;

	p->at++;
	while (p->at < p->len) {
		if (p->buf[p->at] == '\n' ||
		    (p->buf[p->at] == '\r' && peek(p, 1) == '\n'))
			break;
		if ((n = text_char(p, "comment")) == 0)
			return -1;
		p->at += n;
	}
	return 0;
}

/* Skips whitespace, newlines and comments, as allowed inside arrays. */
static int
skip_space(struct parser *p)
{
	int r;

	for (;;) {
		skip_ws(p);
		if (peek(p, 0) == '#' && skip_comment(p) < 0)
			return -1;
		if ((r = eat_newline(p)) <= 0)
			return r;
	}
}

/* Strings */

static int
put_utf8(struct parser *p, struct sbuf *out, uint32_t cp)
{
	unsigned char b[4];
	size_t n;

	if (cp < 0x80) {
		b[0] = (unsigned char)cp;
		n = 1;
	} else if (cp < 0x800) {
		b[0] = (unsigned char)(0xc0 | (cp >> 6));
		b[1] = (unsigned char)(0x80 | (cp & 0x3f));
		n = 2;
	} else if (cp < 0x10000) {
		b[0] = (unsigned char)(0xe0 | (cp >> 12));
		b[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
		b[2] = (unsigned char)(0x80 | (cp & 0x3f));
		n = 3;
	} else {
		b[0] = (unsigned char)(0xf0 | (cp >> 18));
		b[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
		b[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
		b[3] = (unsigned char)(0x80 | (cp & 0x3f));
		n = 4;
	}
	return sbuf_add(p, out, b, n);
}

/* Decodes the escape sequence at p->at (a backslash) into out. */
static int
parse_escape(struct parser *p, struct sbuf *out)
{
	size_t at = p->at, ndig, i;
	char tmp[32], c;
	uint32_t cp = 0;
	int d;

	switch (peek(p, 1)) {
	case 'b':
		c = '\b';
		break;
	case 't':
		c = '\t';
		break;
	case 'n':
		c = '\n';
		break;
	case 'f':
		c = '\f';
		break;
	case 'r':
		c = '\r';
		break;
	case '"':
		c = '"';
		break;
	case '\\':
		c = '\\';
		break;
	case 'u':
	case 'U':
		ndig = peek(p, 1) == 'u' ? 4 : 8;
		for (i = 0; i < ndig; i++) {
			if ((d = hex_val((unsigned char)peek(p, 2 + i))) < 0) {
				perr(p, at, "\\%c escape needs %zu hex digits",
				    p->buf[at + 1], ndig);
				return -1;
			}
			cp = cp << 4 | (uint32_t)d;
		}
		if ((cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff) {
			perr(p, at, "escape '%.*s' is not a Unicode scalar "
			    "value", (int)(ndig + 2), p->buf + at);
			return -1;
		}
		p->at += 2 + ndig;
		return put_utf8(p, out, cp);
	case -1:
		perr(p, at, "unterminated string");
		return -1;
	default:
		if (peek(p, 1) > 0x20 && peek(p, 1) < 0x7f)
			perr(p, at, "invalid escape '\\%c' in string",
			    p->buf[at + 1]);
		else
			perr(p, at, "invalid escape '\\' followed by %s",
			    char_name(p, at + 1, tmp, sizeof(tmp)));
		return -1;
	}
	p->at += 2;
	return sbuf_add(p, out, &c, 1);
}

/* "..." */
static int
parse_basic(struct parser *p, struct sbuf *out)
{
	size_t start = p->at, n;

	p->at++;
	for (;;) {
		if (p->at >= p->len) {
			perr(p, start, "unterminated string");
			return -1;
		}
		switch (p->buf[p->at]) {
		case '"':
			p->at++;
			return 0;
		case '\\':
			if (parse_escape(p, out) < 0)
				return -1;
			continue;
		case '\n':
		case '\r':
			perr(p, p->at, "newline in single-line string");
			return -1;
		default:
			break;
		}
		if ((n = text_char(p, "string")) == 0 ||
		    sbuf_add(p, out, p->buf + p->at, n) < 0)
			return -1;
		p->at += n;
	}
}

/* '...' */
static int
parse_literal(struct parser *p, struct sbuf *out)
{
	size_t start = p->at, n;

	p->at++;
	for (;;) {
		if (p->at >= p->len) {
			perr(p, start, "unterminated string");
			return -1;
		}
		if (p->buf[p->at] == '\'') {
			p->at++;
			return 0;
		}
		if (p->buf[p->at] == '\n' || p->buf[p->at] == '\r') {
			perr(p, p->at, "newline in single-line string");
			return -1;
		}
		if ((n = text_char(p, "string")) == 0 ||
		    sbuf_add(p, out, p->buf + p->at, n) < 0)
			return -1;
		p->at += n;
	}
}

/*
 * """...""" and '''...''' (q is the quote). A newline right after the
 * opening delimiter is dropped; CRLF is stored as LF. Up to two quotes
 * just before the closing delimiter belong to the string.
 */
static int
parse_multi(struct parser *p, struct sbuf *out, char q)
{
	struct toml_pos start = pos_at(p, p->at);
	size_t n, k;
	int r;

	p->at += 3;
	if (eat_newline(p) < 0)
		return -1;
	for (;;) {
		if (p->at >= p->len) {
			perr_pos(p, start, "unterminated multi-line string");
			return -1;
		}
		if (p->buf[p->at] == q) {
			for (n = 1; n < 5 && peek(p, n) == q; n++)
				continue;
			if (sbuf_add(p, out, p->buf + p->at,
			    n >= 3 ? n - 3 : n) < 0)
				return -1;
			p->at += n;
			if (n >= 3)
				return 0;
			continue;
		}
		if (p->buf[p->at] == '\n' || p->buf[p->at] == '\r') {
			if (eat_newline(p) < 0 || sbuf_add(p, out, "\n", 1) < 0)
				return -1;
			continue;
		}
		if (q == '"' && p->buf[p->at] == '\\') {
			/* A backslash ending a line trims all whitespace and
			 * newlines after it. */
			k = 1;
			while (peek(p, k) == ' ' || peek(p, k) == '\t')
				k++;
			if (peek(p, k) == '\n' ||
			    (peek(p, k) == '\r' && peek(p, k + 1) == '\n')) {
				p->at += k;
				do
					skip_ws(p);
				while ((r = eat_newline(p)) > 0);
				if (r < 0)
					return -1;
				continue;
			}
			if (parse_escape(p, out) < 0)
				return -1;
			continue;
		}
		if ((n = text_char(p, "string")) == 0 ||
		    sbuf_add(p, out, p->buf + p->at, n) < 0)
			return -1;
		p->at += n;
	}
}

/* Any string form at p->at, decoded into out; keys refuse multi-line. */
static int
parse_string(struct parser *p, struct sbuf *out, bool key)
{
	char q = p->buf[p->at];

	if (peek(p, 1) == q && peek(p, 2) == q) {
		if (key) {
			perr(p, p->at, "multi-line string not allowed as key");
			return -1;
		}
		return parse_multi(p, out, q);
	}
	return q == '"' ? parse_basic(p, out) : parse_literal(p, out);
}

/* Keys */

static const char *
part_key(const struct parser *p, const struct key_part *kp)
{
	return p->kb.d != NULL ? p->kb.d + kp->off : "";
}

static const char *
part_name(const struct parser *p, const struct key_part *kp, char *out,
    size_t outsz)
{
	return quote_bytes(part_key(p, kp), kp->len, out, outsz);
}

/* Reads a possibly dotted key into p->part[]; leaves p->at after it. */
static int
parse_key(struct parser *p)
{
	struct key_part *kp;
	char tmp[32];
	size_t start;
	int c;

	p->nparts = 0;
	p->kb.len = 0;
	for (;;) {
		skip_ws(p);
		if (p->nparts == TOML_MAX_DEPTH) {
			perr(p, p->at, "key nested deeper than %d levels",
			    TOML_MAX_DEPTH);
			return -1;
		}
		kp = &p->part[p->nparts];
		kp->pos = pos_at(p, p->at);
		kp->off = p->kb.len;
		c = peek(p, 0);
		if (c >= 0 && is_bare((unsigned char)c)) {
			start = p->at;
			while (p->at < p->len &&
			    is_bare((unsigned char)p->buf[p->at]))
				p->at++;
			if (sbuf_add(p, &p->kb, p->buf + start,
			    p->at - start) < 0)
				return -1;
		} else if (c == '"' || c == '\'') {
			if (parse_string(p, &p->kb, true) < 0)
				return -1;
		} else {
			perr(p, p->at, "expected key, found %s",
			    char_name(p, p->at, tmp, sizeof(tmp)));
			return -1;
		}
		kp->len = p->kb.len - kp->off;
		p->nparts++;
		skip_ws(p);
		if (peek(p, 0) != '.')
			return 0;
		p->at++;
	}
}

static const char *
type_article(const struct toml_value *v)
{
	switch (v->type) {
	case TOML_TABLE:
		return v->kind == TAB_INLINE ? "an inline table" : "a table";
	case TOML_ARRAY:
		return v->kind == ARR_TABLES ? "an array of tables" :
		    "an array";
	case TOML_STRING:
		return "a string";
	case TOML_INTEGER:
		return "an integer";
	case TOML_FLOAT:
		return "a float";
	case TOML_BOOL:
		return "a boolean";
	default:
		return "a date or time";
	}
}

/*
 * Puts the dotted key in p->part[] under table t (at depth), creating
 * the tables in between, and adds the last part with no value yet. Its
 * table and index come back in *tabp, *ip.
 */
static int
insert_key(struct parser *p, struct toml_value *t, int depth,
    struct toml_value **tabp, size_t *ip)
{
	struct key_part *kp;
	struct toml_entry *e;
	struct toml_value *v;
	char name[MSG_QUOTE_MAX + 16];
	size_t i;

	if (depth + (int)p->nparts > TOML_MAX_DEPTH) {
		perr_pos(p, p->part[TOML_MAX_DEPTH - depth].pos,
		    "key nested deeper than %d levels", TOML_MAX_DEPTH);
		return -1;
	}
	for (i = 0; i + 1 < p->nparts; i++) {
		kp = &p->part[i];
		e = table_find(&t->u.tab, part_key(p, kp), kp->len);
		if (e == NULL) {
			if ((v = value_new(p, TOML_TABLE, kp->pos)) == NULL)
				return -1;
			v->kind = TAB_DOTTED;
			if (table_add(p, t, part_key(p, kp), kp->len, kp->pos,
			    v) < 0)
				return -1;
			t = v;
			continue;
		}
		v = e->val;
		if (v->type != TOML_TABLE) {
			perr_clash(p, kp, e, "key '%s' is already %s",
			    part_name(p, kp, name, sizeof(name)),
			    type_article(v));
			return -1;
		}
		if (v->kind == TAB_INLINE) {
			perr_clash(p, kp, e, "cannot extend inline table '%s'",
			    part_name(p, kp, name, sizeof(name)));
			return -1;
		}
		if (v->kind == TAB_HEADER) {
			perr_clash(p, kp, e, "cannot extend table '%s' with "
			    "dotted keys: it has its own [header]",
			    part_name(p, kp, name, sizeof(name)));
			return -1;
		}
		/* From now on a header can no longer define it. */
		v->kind = TAB_DOTTED;
		t = v;
	}
	kp = &p->part[p->nparts - 1];
	if ((e = table_find(&t->u.tab, part_key(p, kp), kp->len)) != NULL) {
		perr_clash(p, kp, e, "duplicate key '%s'",
		    part_name(p, kp, name, sizeof(name)));
		return -1;
	}
	if (table_add(p, t, part_key(p, kp), kp->len, kp->pos, NULL) < 0)
		return -1;
	*tabp = t;
	*ip = t->u.tab.len - 1;
	return 0;
}

/* key = value, into table t at depth. */
static int
parse_keyval(struct parser *p, struct toml_value *t, int depth)
{
	struct toml_value *tab, *v;
	char tmp[32];
	size_t i;
	int vdepth;

	if (parse_key(p) < 0)
		return -1;
	if (peek(p, 0) != '=') {
		perr(p, p->at, "expected '=' after key, found %s",
		    char_name(p, p->at, tmp, sizeof(tmp)));
		return -1;
	}
	p->at++;
	skip_ws(p);
	vdepth = depth + (int)p->nparts;
	if (insert_key(p, t, depth, &tab, &i) < 0)
		return -1;
	/* The value cannot touch tab: inline tables are new tables. */
	if ((v = parse_value(p, vdepth)) == NULL)
		return -1;
	tab->u.tab.ent[i].val = v;
	return 0;
}

/* [a.b.c] or [[a.b.c]] at p->at. */
static int
parse_header(struct parser *p)
{
	struct toml_pos hpos = pos_at(p, p->at);
	struct toml_value *t = p->root, *v, *elem;
	struct toml_entry *e = NULL;
	struct key_part *kp = NULL;
	char name[MSG_QUOTE_MAX + 16], tmp[32];
	bool aot = peek(p, 1) == '[';
	int depth = 0;
	size_t i;

	p->at += aot ? 2 : 1;
	if (parse_key(p) < 0)
		return -1;
	if (peek(p, 0) != ']' || (aot && peek(p, 1) != ']')) {
		if (peek(p, 0) == ']')
			p->at++;
		perr(p, p->at, "expected '%s' to close table header, found %s",
		    aot ? "]]" : "]", char_name(p, p->at, tmp, sizeof(tmp)));
		return -1;
	}
	p->at += aot ? 2 : 1;

	for (i = 0; i < p->nparts; i++) {
		kp = &p->part[i];
		/* The array of tables costs a level of its own. */
		if (++depth + (aot && i + 1 == p->nparts) > TOML_MAX_DEPTH) {
			perr_pos(p, kp->pos, "table nested deeper than %d "
			    "levels", TOML_MAX_DEPTH);
			return -1;
		}
		e = table_find(&t->u.tab, part_key(p, kp), kp->len);
		if (i + 1 == p->nparts)
			break;
		if (e == NULL) {
			if ((v = value_new(p, TOML_TABLE, kp->pos)) == NULL)
				return -1;
			v->kind = TAB_IMPLICIT;
			if (table_add(p, t, part_key(p, kp), kp->len, kp->pos,
			    v) < 0)
				return -1;
			t = v;
			continue;
		}
		v = e->val;
		if (v->type == TOML_TABLE && v->kind != TAB_INLINE) {
			t = v;
			continue;
		}
		if (v->type == TOML_ARRAY && v->kind == ARR_TABLES) {
			/* [a.b] after [[a]] goes into the last a. */
			if (++depth > TOML_MAX_DEPTH) {
				perr_pos(p, kp->pos, "table nested deeper "
				    "than %d levels", TOML_MAX_DEPTH);
				return -1;
			}
			t = v->u.arr.item[v->u.arr.len - 1];
			continue;
		}
		if (v->type == TOML_TABLE)
			perr_clash(p, kp, e, "cannot extend inline table '%s'",
			    part_name(p, kp, name, sizeof(name)));
		else if (v->type == TOML_ARRAY)
			perr_clash(p, kp, e, "cannot extend static array '%s'",
			    part_name(p, kp, name, sizeof(name)));
		else
			perr_clash(p, kp, e, "key '%s' is already %s",
			    part_name(p, kp, name, sizeof(name)),
			    type_article(v));
		return -1;
	}

	/* kp and e now stand for the last part of the name. */
	if (!aot) {
		if (e == NULL) {
			if ((v = value_new(p, TOML_TABLE, hpos)) == NULL)
				return -1;
			v->kind = TAB_HEADER;
			if (table_add(p, t, part_key(p, kp), kp->len, kp->pos,
			    v) < 0)
				return -1;
		} else if ((v = e->val)->type == TOML_TABLE &&
		    v->kind == TAB_IMPLICIT) {
			v->kind = TAB_HEADER;
			v->pos = hpos;
		} else {
			if (v->type == TOML_TABLE)
				perr_clash(p, kp, e, "table '%s' already "
				    "defined", part_name(p, kp, name,
				    sizeof(name)));
			else
				perr_clash(p, kp, e, "key '%s' is already %s",
				    part_name(p, kp, name, sizeof(name)),
				    type_article(v));
			return -1;
		}
		p->cur = v;
		p->cur_depth = depth;
		return 0;
	}

	if (e == NULL) {
		if ((v = value_new(p, TOML_ARRAY, hpos)) == NULL)
			return -1;
		v->kind = ARR_TABLES;
		if (table_add(p, t, part_key(p, kp), kp->len, kp->pos, v) < 0)
			return -1;
	} else if ((v = e->val)->type != TOML_ARRAY || v->kind != ARR_TABLES) {
		if (v->type == TOML_ARRAY)
			perr_clash(p, kp, e, "cannot append to static array "
			    "'%s'", part_name(p, kp, name, sizeof(name)));
		else
			perr_clash(p, kp, e, "key '%s' is already %s",
			    part_name(p, kp, name, sizeof(name)),
			    type_article(v));
		return -1;
	}
	if ((elem = value_new(p, TOML_TABLE, hpos)) == NULL)
		return -1;
	elem->kind = TAB_HEADER;
	if (array_add(p, v, elem) < 0)
		return -1;
	p->cur = elem;
	p->cur_depth = depth + 1;
	return 0;
}

/* Numbers and dates */

/*
 * Reads digits of base at t[*i], with single underscores only between
 * digits. Returns 1 and moves *i past them, 0 if there is no digit at
 * t[*i], -1 if an underscore is misplaced.
 */
static int
scan_digits(const char *t, size_t n, size_t *i, int base)
{
	size_t j = *i;

	if (j >= n || hex_val((unsigned char)t[j]) < 0 ||
	    hex_val((unsigned char)t[j]) >= base)
		return 0;
	while (j < n) {
		if (hex_val((unsigned char)t[j]) >= 0 &&
		    hex_val((unsigned char)t[j]) < base)
			j++;
		else if (t[j] == '_') {
			if (j + 1 >= n ||
			    hex_val((unsigned char)t[j + 1]) < 0 ||
			    hex_val((unsigned char)t[j + 1]) >= base)
				return -1;
			j++;
		} else
			break;
	}
	*i = j;
	return 1;
}

/* Accumulates the digits in t (underscores skipped) up to limit. */
static int
digits_value(const char *t, size_t n, int base, uint64_t limit, uint64_t *out)
{
	uint64_t v = 0, d;
	size_t i;

	for (i = 0; i < n; i++) {
		if (t[i] == '_')
			continue;
		d = (uint64_t)hex_val((unsigned char)t[i]);
		if (v > (limit - d) / (uint64_t)base)
			return -1;
		v = v * (uint64_t)base + d;
	}
	*out = v;
	return 0;
}

static int
parse_float_text(struct parser *p, const char *t, size_t n, size_t start,
    double *out)
{
	char *end;
	size_t i;
	double d;

	p->sb.len = 0;
	for (i = 0; i < n; i++)
		if (t[i] != '_' && sbuf_add(p, &p->sb, t + i, 1) < 0)
			return -1;
	if (sbuf_add(p, &p->sb, "", 1) < 0)
		return -1;
	/* strtod obeys LC_NUMERIC; TOML always means '.'. */
	if (p->cloc == (locale_t)0)
		p->cloc = newlocale(LC_ALL_MASK, "C", (locale_t)0);
	if (p->cloc == (locale_t)0) {
		perr(p, start, "cannot create the C locale");
		return -1;
	}
	errno = 0;
	d = strtod_l(p->sb.d, &end, p->cloc);
	if (*end != '\0') {
		perr(p, start, "invalid float");
		return -1;
	}
	if (errno == ERANGE && isinf(d)) {
		perr(p, start, "float out of range");
		return -1;
	}
	*out = d;
	return 0;
}

/* 5m or 192.0.2.1 written without quotes: no number has such a
 * letter, a colon or two dots. */
static bool
meant_as_string(const char *t, size_t n)
{
	size_t i, dots = 0;

	for (i = 0; i < n; i++) {
		if (strchr("0123456789+-._eE", t[i]) == NULL)
			return true;
		dots += t[i] == '.';
	}
	return dots > 1;
}

/* An integer or a float in token t (n bytes) written at start. */
static int
parse_number(struct parser *p, const char *t, size_t n, size_t start,
    struct toml_value *v)
{
	char tok[MSG_QUOTE_MAX + 16];
	uint64_t mag;
	size_t i = 0, j;
	bool neg = false, sign = false;
	int base;

	if (t[0] == '+' || t[0] == '-') {
		neg = t[0] == '-';
		sign = true;
		i = 1;
	}
	if (n - i == 3 && (memcmp(t + i, "inf", 3) == 0 ||
	    memcmp(t + i, "nan", 3) == 0)) {
		v->type = TOML_FLOAT;
		v->u.f = t[i] == 'i' ? INFINITY : NAN;
		if (neg)
			v->u.f = -v->u.f;
		return 0;
	}
	if (n - i >= 2 && t[i] == '0' &&
	    (t[i + 1] == 'x' || t[i + 1] == 'o' || t[i + 1] == 'b')) {
		base = t[i + 1] == 'x' ? 16 : t[i + 1] == 'o' ? 8 : 2;
		if (sign) {
			perr(p, start, "sign not allowed on a base-%d integer",
			    base);
			return -1;
		}
		j = i += 2;
		if (scan_digits(t, n, &j, base) <= 0 || j != n)
			goto bad;
		if (digits_value(t + i, n - i, base, INT64_MAX, &mag) < 0)
			goto range;
		v->type = TOML_INTEGER;
		v->u.i = (int64_t)mag;
		return 0;
	}

	j = i;
	if (scan_digits(t, n, &j, 10) <= 0)
		goto bad;
	if (t[i] == '0' && j - i > 1) {
		perr(p, start, "leading zeros not allowed in '%s'",
		    quote_bytes(t, n, tok, sizeof(tok)));
		return -1;
	}
	if (j == n) {
		if (digits_value(t + i, n - i, 10,
		    neg ? (uint64_t)INT64_MAX + 1 : INT64_MAX, &mag) < 0)
			goto range;
		v->type = TOML_INTEGER;
		if (!neg)
			v->u.i = (int64_t)mag;
		else if (mag > INT64_MAX)
			v->u.i = INT64_MIN;
		else
			v->u.i = -(int64_t)mag;
		return 0;
	}
	if (t[j] == '.') {
		j++;
		if (scan_digits(t, n, &j, 10) <= 0)
			goto bad;
	}
	if (j < n && (t[j] == 'e' || t[j] == 'E')) {
		j++;
		if (j < n && (t[j] == '+' || t[j] == '-'))
			j++;
		if (scan_digits(t, n, &j, 10) <= 0)
			goto bad;
	}
	if (j != n)
		goto bad;
	v->type = TOML_FLOAT;
	return parse_float_text(p, t, n, start, &v->u.f);
 bad:
	perr(p, start, "invalid number '%s'%s", quote_bytes(t, n, tok,
	    sizeof(tok)), meant_as_string(t, n) ? " (a string needs quotes)" :
	    "");
	return -1;
 range:
	perr(p, start, "integer '%s' out of range", quote_bytes(t, n, tok,
	    sizeof(tok)));
	return -1;
}

/* Reads n decimal digits at t, or returns -1. */
static int
fixed_digits(const char *t, size_t n)
{
	int v = 0;
	size_t i;

	for (i = 0; i < n; i++) {
		if (!is_digit((unsigned char)t[i]))
			return -1;
		v = v * 10 + (t[i] - '0');
	}
	return v;
}

static int
days_in_month(int year, int month)
{
	static const int days[12] = {
		31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31
	};

	if (month == 2 && year % 4 == 0 && (year % 100 != 0 || year % 400 == 0))
		return 29;
	return days[month - 1];
}

/* HH:MM:SS[.frac] at t[*i]. */
static int
parse_time(struct parser *p, const char *t, size_t n, size_t *i,
    size_t start, struct toml_datetime *dt)
{
	const char *s = t + *i;
	size_t j, nd;

	if (n - *i < 8 || s[2] != ':' || s[5] != ':' ||
	    (dt->hour = fixed_digits(s, 2)) < 0 ||
	    (dt->minute = fixed_digits(s + 3, 2)) < 0 ||
	    (dt->second = fixed_digits(s + 6, 2)) < 0) {
		perr(p, start + *i, "invalid time: expected HH:MM:SS");
		return -1;
	}
	if (dt->hour > 23) {
		perr(p, start + *i, "hour %02d out of range", dt->hour);
		return -1;
	}
	if (dt->minute > 59) {
		perr(p, start + *i + 3, "minute %02d out of range", dt->minute);
		return -1;
	}
	/* 60 is a leap second, which RFC 3339 allows. */
	if (dt->second > 60) {
		perr(p, start + *i + 6, "second %02d out of range", dt->second);
		return -1;
	}
	*i += 8;
	if (*i < n && t[*i] == '.') {
		for (j = *i + 1, nd = 0; j < n && is_digit((unsigned char)t[j]);
		    j++, nd++) {
			/* Keep nanoseconds; finer digits are cut off. */
			if (nd < 9) {
				dt->nanosecond = dt->nanosecond * 10 +
				    (t[j] - '0');
				dt->frac_digits++;
			}
		}
		if (nd == 0) {
			perr(p, start + *i,
			    "expected digits after '.' in time");
			return -1;
		}
		for (; nd < 9; nd++)
			dt->nanosecond *= 10;
		*i = j;
	}
	return 0;
}

/* A date, time or date-time in token t (n bytes) written at start. */
static int
parse_datetime(struct parser *p, const char *t, size_t n, size_t start,
    struct toml_value *v)
{
	struct toml_datetime *dt = &v->u.dt;
	char tok[MSG_QUOTE_MAX + 16];
	size_t i = 0;
	int oh, om;

	memset(dt, 0, sizeof(*dt));
	if (n >= 3 && t[2] == ':') {
		if (parse_time(p, t, n, &i, start, dt) < 0)
			return -1;
		v->type = TOML_TIME_LOCAL;
		goto end;
	}
	if (n < 10 || t[4] != '-' || t[7] != '-' ||
	    (dt->year = fixed_digits(t, 4)) < 0 ||
	    (dt->month = fixed_digits(t + 5, 2)) < 0 ||
	    (dt->day = fixed_digits(t + 8, 2)) < 0) {
		perr(p, start, "invalid date '%s': expected YYYY-MM-DD",
		    quote_bytes(t, n, tok, sizeof(tok)));
		return -1;
	}
	if (dt->month < 1 || dt->month > 12) {
		perr(p, start + 5, "month %02d out of range", dt->month);
		return -1;
	}
	if (dt->day < 1 || dt->day > days_in_month(dt->year, dt->month)) {
		perr(p, start + 8, "day %02d out of range for %04d-%02d",
		    dt->day, dt->year, dt->month);
		return -1;
	}
	i = 10;
	v->type = TOML_DATE_LOCAL;
	if (i == n)
		return 0;
	if (t[i] != 'T' && t[i] != 't' && t[i] != ' ') {
		perr(p, start + i,
		    "invalid date-time: expected 'T' after date");
		return -1;
	}
	i++;
	if (parse_time(p, t, n, &i, start, dt) < 0)
		return -1;
	v->type = TOML_DATETIME_LOCAL;
	if (i == n)
		return 0;
	if (t[i] == 'Z' || t[i] == 'z') {
		dt->offset_z = true;
		i++;
	} else if (t[i] == '+' || t[i] == '-') {
		if (n - i < 6 || t[i + 3] != ':' ||
		    (oh = fixed_digits(t + i + 1, 2)) < 0 ||
		    (om = fixed_digits(t + i + 4, 2)) < 0) {
			perr(p, start + i, "invalid offset: expected +HH:MM");
			return -1;
		}
		if (oh > 23 || om > 59) {
			perr(p, start + i, "offset out of range");
			return -1;
		}
		dt->offset_min = (oh * 60 + om) * (t[i] == '-' ? -1 : 1);
		i += 6;
	} else {
		perr(p, start + i, "invalid date-time: unexpected %s",
		    quote_bytes(t + i, 1, tok, sizeof(tok)));
		return -1;
	}
	v->type = TOML_DATETIME;
 end:
	if (i != n) {
		perr(p, start + i, "unexpected '%s' after %s",
		    quote_bytes(t + i, n - i, tok, sizeof(tok)),
		    toml_type_str(v->type));
		return -1;
	}
	return 0;
}

static bool
is_token(unsigned char c)
{
	return is_bare(c) || c == '+' || c == '.' || c == ':';
}

/*
 * A year and '-', or an hour and ':': meant as a date or a time. An
 * address written without quotes (10.0.0.5:110, 2001:db8::1) is not,
 * and is told it needs them rather than a date format.
 */
static bool
looks_like_date(const char *t, size_t n)
{
	size_t i = 0;

	while (i < n && is_digit((unsigned char)t[i]))
		i++;
	return i < n && ((t[i] == '-' && i == 4) || (t[i] == ':' && i == 2));
}

/* Booleans, numbers and dates: one run of token bytes, then checked. */
static struct toml_value *
parse_scalar(struct parser *p, struct toml_pos pos)
{
	struct toml_value *v;
	const char *t = p->buf + p->at;
	char tok[MSG_QUOTE_MAX + 16];
	size_t start = p->at, n;
	int r = 0;

	while (p->at < p->len && is_token((unsigned char)p->buf[p->at]))
		p->at++;
	/* A date and a time may be parted by a space instead of 'T'. */
	n = p->at - start;
	if (n == 10 && t[4] == '-' && peek(p, 0) == ' ' &&
	    peek(p, 1) >= '0' && peek(p, 1) <= '9' &&
	    peek(p, 2) >= '0' && peek(p, 2) <= '9' && peek(p, 3) == ':') {
		p->at++;
		while (p->at < p->len && is_token((unsigned char)p->buf[p->at]))
			p->at++;
		n = p->at - start;
	}
	if ((v = value_new(p, TOML_BOOL, pos)) == NULL)
		return NULL;
	if (n == 4 && memcmp(t, "true", 4) == 0)
		v->u.b = true;
	else if (n == 5 && memcmp(t, "false", 5) == 0)
		v->u.b = false;
	else if (!is_digit((unsigned char)t[0]) && t[0] != '+' &&
	    t[0] != '-' && t[0] != 'i' && t[0] != 'n') {
		perr(p, start, "invalid value '%s' (%s)",
		    quote_bytes(t, n, tok, sizeof(tok)),
		    (n == 4 && strncasecmp(t, "true", 4) == 0) ||
		    (n == 5 && strncasecmp(t, "false", 5) == 0) ?
		    "true and false are lower case" :
		    "a string needs quotes");
		r = -1;
	} else if (looks_like_date(t, n))
		r = parse_datetime(p, t, n, start, v);
	else
		r = parse_number(p, t, n, start, v);
	if (r < 0) {
		value_free(v);
		return NULL;
	}
	return v;
}

/* Values */

static struct toml_value *
parse_array(struct parser *p, struct toml_pos pos, int depth)
{
	struct toml_value *v, *item;
	char tmp[32];

	if ((v = value_new(p, TOML_ARRAY, pos)) == NULL)
		return NULL;
	v->kind = ARR_STATIC;
	p->at++;
	for (;;) {
		if (skip_space(p) < 0)
			goto fail;
		if (peek(p, 0) == ']')
			break;
		if (p->at >= p->len) {
			perr_pos(p, pos, "unterminated array");
			goto fail;
		}
		if ((item = parse_value(p, depth + 1)) == NULL ||
		    array_add(p, v, item) < 0)
			goto fail;
		if (skip_space(p) < 0)
			goto fail;
		if (peek(p, 0) == ',') {
			p->at++;
			continue;
		}
		if (peek(p, 0) == ']')
			break;
		if (p->at >= p->len)
			perr_pos(p, pos, "unterminated array");
		else if (pos_at(p, p->at).line != pos.line)
			/* A ']' forgotten: what follows is the next key, far
			 * from the array it is taken for. */
			perr(p, p->at, "expected ',' or ']' in array, found %s "
			    "(the array opened at line %d)",
			    char_name(p, p->at, tmp, sizeof(tmp)), pos.line);
		else
			perr(p, p->at, "expected ',' or ']' in array, found %s",
			    char_name(p, p->at, tmp, sizeof(tmp)));
		goto fail;
	}
	p->at++;
	return v;
 fail:
	value_free(v);
	return NULL;
}

static struct toml_value *
parse_inline_table(struct parser *p, struct toml_pos pos, int depth)
{
	struct toml_value *v;
	char tmp[32];
	size_t comma;
	int c;

	if ((v = value_new(p, TOML_TABLE, pos)) == NULL)
		return NULL;
	v->kind = TAB_INLINE;
	p->at++;
	skip_ws(p);
	if (peek(p, 0) == '}') {
		p->at++;
		return v;
	}
	for (;;) {
		skip_ws(p);
		c = peek(p, 0);
		if (c == '\n' || c == '\r' || c == -1)
			goto newline;
		if (parse_keyval(p, v, depth) < 0)
			goto fail;
		skip_ws(p);
		c = peek(p, 0);
		if (c == '}') {
			p->at++;
			return v;
		}
		if (c == ',') {
			comma = p->at++;
			skip_ws(p);
			if (peek(p, 0) == '}') {
				perr(p, comma, "trailing comma not allowed in "
				    "inline table");
				goto fail;
			}
			continue;
		}
		if (c == '\n' || c == '\r' || c == -1)
			goto newline;
		perr(p, p->at, "expected ',' or '}' in inline table, found %s",
		    char_name(p, p->at, tmp, sizeof(tmp)));
		goto fail;
	}
 newline:
	if (c == -1)
		perr_pos(p, pos, "unterminated inline table");
	else
		perr(p, p->at, "newline not allowed in inline table");
 fail:
	value_free(v);
	return NULL;
}

static struct toml_value *
parse_value(struct parser *p, int depth)
{
	struct toml_pos pos = pos_at(p, p->at);
	struct toml_value *v;
	char tmp[32];
	int c = peek(p, 0);

	if (depth > TOML_MAX_DEPTH) {
		perr(p, p->at, "value nested deeper than %d levels",
		    TOML_MAX_DEPTH);
		return NULL;
	}
	switch (c) {
	case '"':
	case '\'':
		p->sb.len = 0;
		if (parse_string(p, &p->sb, false) < 0 ||
		    sbuf_add(p, &p->sb, "", 1) < 0 ||
		    (v = value_new(p, TOML_STRING, pos)) == NULL)
			return NULL;
		v->u.str.len = p->sb.len - 1;
		if ((v->u.str.s = malloc(p->sb.len)) == NULL) {
			perr_pos(p, pos, "out of memory");
			free(v);
			return NULL;
		}
		memcpy(v->u.str.s, p->sb.d, p->sb.len);
		return v;
	case '[':
		return parse_array(p, pos, depth);
	case '{':
		return parse_inline_table(p, pos, depth);
	default:
		if (c >= 0 && is_token((unsigned char)c))
			return parse_scalar(p, pos);
		perr(p, p->at, "expected value, found %s",
		    char_name(p, p->at, tmp, sizeof(tmp)));
		return NULL;
	}
}

/* Document */

static int
parse_document(struct parser *p)
{
	const char *after;
	char tmp[32];
	int c, r;

	/* A UTF-8 byte order mark may open the document, and only there. */
	if (p->len >= 3 && memcmp(p->buf, "\xef\xbb\xbf", 3) == 0)
		p->at = p->bol = 3;
	while (p->at < p->len) {
		skip_ws(p);
		c = peek(p, 0);
		after = NULL;
		if (c == '[') {
			if (parse_header(p) < 0)
				return -1;
			after = "table header";
		} else if (c != '#' && c != '\n' && c != '\r' && c != -1) {
			if (parse_keyval(p, p->cur, p->cur_depth) < 0)
				return -1;
			after = "value";
		}
		skip_ws(p);
		if (peek(p, 0) == '#' && skip_comment(p) < 0)
			return -1;
		if ((r = eat_newline(p)) < 0)
			return -1;
		if (r == 0 && p->at < p->len) {
			if (after != NULL)
				perr(p, p->at, "expected newline after %s, "
				    "found %s", after,
				    char_name(p, p->at, tmp, sizeof(tmp)));
			else
				perr(p, p->at, "unexpected %s",
				    char_name(p, p->at, tmp, sizeof(tmp)));
			return -1;
		}
	}
	return 0;
}

struct toml_value *
toml_parse(const char *buf, size_t len, struct toml_error *err)
{
	struct toml_error scratch;
	struct toml_pos start = { 1, 1 };
	struct parser *p;
	struct toml_value *root = NULL;

	if (err == NULL)
		err = &scratch;
	memset(err, 0, sizeof(*err));
	/* The parser holds a few kilobytes of key parts: keep it off the
	 * stack of whatever thread loads the config. */
	if ((p = calloc(1, sizeof(*p))) == NULL) {
		err->pos = start;
		snprintf(err->msg, sizeof(err->msg), "out of memory");
		return NULL;
	}
	p->buf = buf;
	p->len = buf != NULL ? len : 0;
	p->line = 1;
	p->err = err;
	if ((root = value_new(p, TOML_TABLE, start)) != NULL) {
		root->kind = TAB_HEADER;
		p->root = p->cur = root;
		if (parse_document(p) < 0) {
			value_free(root);
			root = NULL;
		}
	}
	free(p->sb.d);
	free(p->kb.d);
	if (p->cloc != (locale_t)0)
		freelocale(p->cloc);
	free(p);
	return root;
}

void
toml_free(struct toml_value *root)
{
	value_free(root);
}

/* Accessors: a call on the wrong type gets an empty answer, not a crash. */

enum toml_type
toml_type(const struct toml_value *v)
{
	return v->type;
}

const char *
toml_type_str(enum toml_type t)
{
	switch (t) {
	case TOML_TABLE:
		return "table";
	case TOML_ARRAY:
		return "array";
	case TOML_STRING:
		return "string";
	case TOML_INTEGER:
		return "integer";
	case TOML_FLOAT:
		return "float";
	case TOML_BOOL:
		return "boolean";
	case TOML_DATETIME:
		return "datetime";
	case TOML_DATETIME_LOCAL:
		return "datetime-local";
	case TOML_DATE_LOCAL:
		return "date-local";
	case TOML_TIME_LOCAL:
		return "time-local";
	}
	return "unknown";
}

struct toml_pos
toml_value_pos(const struct toml_value *v)
{
	return v->pos;
}

size_t
toml_table_len(const struct toml_value *t)
{
	return t->type == TOML_TABLE ? t->u.tab.len : 0;
}

const char *
toml_table_key(const struct toml_value *t, size_t i, size_t *len,
    struct toml_pos *pos)
{
	const struct toml_entry *e;

	if (t->type != TOML_TABLE || i >= t->u.tab.len)
		return NULL;
	e = &t->u.tab.ent[i];
	if (len != NULL)
		*len = e->keylen;
	if (pos != NULL)
		*pos = e->pos;
	return e->key;
}

const struct toml_value *
toml_table_at(const struct toml_value *t, size_t i)
{
	if (t->type != TOML_TABLE || i >= t->u.tab.len)
		return NULL;
	return t->u.tab.ent[i].val;
}

const struct toml_value *
toml_table_get(const struct toml_value *t, const char *key)
{
	const struct toml_entry *e;

	if (t->type != TOML_TABLE)
		return NULL;
	e = table_find(&t->u.tab, key, strlen(key));
	return e != NULL ? e->val : NULL;
}

size_t
toml_array_len(const struct toml_value *a)
{
	return a->type == TOML_ARRAY ? a->u.arr.len : 0;
}

const struct toml_value *
toml_array_at(const struct toml_value *a, size_t i)
{
	if (a->type != TOML_ARRAY || i >= a->u.arr.len)
		return NULL;
	return a->u.arr.item[i];
}

const char *
toml_string(const struct toml_value *v, size_t *len)
{
	if (v->type != TOML_STRING) {
		if (len != NULL)
			*len = 0;
		return NULL;
	}
	if (len != NULL)
		*len = v->u.str.len;
	return v->u.str.s;
}

int64_t
toml_integer(const struct toml_value *v)
{
	return v->type == TOML_INTEGER ? v->u.i : 0;
}

double
toml_float(const struct toml_value *v)
{
	return v->type == TOML_FLOAT ? v->u.f : 0.0;
}

bool
toml_bool(const struct toml_value *v)
{
	return v->type == TOML_BOOL ? v->u.b : false;
}

const struct toml_datetime *
toml_datetime(const struct toml_value *v)
{
	switch (v->type) {
	case TOML_DATETIME:
	case TOML_DATETIME_LOCAL:
	case TOML_DATE_LOCAL:
	case TOML_TIME_LOCAL:
		return &v->u.dt;
	default:
		return NULL;
	}
}
