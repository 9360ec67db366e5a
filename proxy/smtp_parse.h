/* smtp_parse.h - pure, incremental SMTP command, reply and DATA parsers. */
#ifndef MOAT_SMTP_PARSE_H
#define MOAT_SMTP_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Every parser here works on the bytes at hand and never keeps them: the
 * views it returns point into the caller's buffer and stay valid until
 * that buffer changes. None allocates, none does I/O.
 */
enum smtp_parse_rc {
	SMTP_PARSE_OK = 0,	/* a complete item */
	SMTP_PARSE_AGAIN,	/* need more bytes */
	SMTP_PARSE_ERROR,	/* malformed or over the bound */
};

/* One line: content without its terminator. */
struct smtp_line {
	const uint8_t *p;
	size_t len;
	size_t consumed;	/* content plus CRLF (or bare LF) */
	bool bare_lf;		/* ended by LF without CR */
};

/*
 * Finds the first line in p. A line ends at LF (CRLF or bare LF; a CR
 * just before the LF is not content). max bounds the line including its
 * terminator: ERROR when no LF is among the first max bytes, AGAIN when
 * fewer than max bytes are there and none is an LF.
 */
enum smtp_parse_rc smtp_line_parse(const uint8_t *p, size_t len, size_t max,
    struct smtp_line *l);

enum smtp_verb {
	SMTP_VERB_OTHER = 0,
	SMTP_VERB_HELO,
	SMTP_VERB_EHLO,
	SMTP_VERB_MAIL,
	SMTP_VERB_RCPT,
	SMTP_VERB_DATA,
	SMTP_VERB_BDAT,
	SMTP_VERB_RSET,
	SMTP_VERB_NOOP,
	SMTP_VERB_QUIT,
	SMTP_VERB_HELP,
	SMTP_VERB_VRFY,
	SMTP_VERB_EXPN,
	SMTP_VERB_AUTH,
	SMTP_VERB_STARTTLS,
	SMTP_VERB_XCLIENT,
	SMTP_VERB_XFORWARD,
};

struct smtp_cmd {
	enum smtp_verb verb;
	const uint8_t *arg;	/* after the verb and its spaces; may be empty */
	size_t arglen;
};

/*
 * Classifies a command line (content as returned by smtp_line_parse).
 * The verb is matched without regard to case and must be followed by
 * the end of the line or a space. Returns ERROR when the line holds a
 * CR or a NUL, starts with a space, or its verb holds a tab or another
 * control byte: such a line is never passed to a backend.
 */
enum smtp_parse_rc smtp_cmd_parse(const uint8_t *p, size_t len,
    struct smtp_cmd *cmd);
const char *smtp_verb_str(enum smtp_verb v);

/* One reply line: "250-text", "250 text" or "250". */
struct smtp_reply_line {
	int code;		/* 100..599 */
	bool last;		/* "250 " or "250": the reply's final line */
	const uint8_t *text;	/* after the separator, without CRLF */
	size_t textlen;
	size_t consumed;	/* the whole line with its terminator */
};

/*
 * Parses the first reply line in p, bounded by max bytes (terminator
 * included). ERROR: no three-digit code from 2xx to 5xx (1xx is not
 * SMTP), a bad separator, or no LF among the first max bytes.
 */
enum smtp_parse_rc smtp_reply_parse(const uint8_t *p, size_t len, size_t max,
    struct smtp_reply_line *r);

/*
 * The message after DATA/354, checked for the smuggling variants before a
 * byte of it reaches a backend. Every line must end with CRLF and hold no
 * other CR, LF or NUL; the message ends with a line holding a single dot.
 * Unknown state is zero: smtp_data_init() at the start of each message.
 */
struct smtp_data {
	size_t linelen;		/* bytes of the current line seen so far */
	bool dot;		/* the current line so far is "." */
};

enum smtp_data_why {
	SMTP_DATA_OK = 0,
	SMTP_DATA_BARE_LF,
	SMTP_DATA_BARE_CR,
	SMTP_DATA_NUL,
};

void smtp_data_init(struct smtp_data *d);
/*
 * Scans at most len bytes of p. *n is how many of them are safe to pass
 * on (a CR at the end waits for its LF and is not counted).
 * OK: the end-of-data line ".\r\n" ends at p + *n.
 * AGAIN: all of p[0..*n) is clean message text; call again with the
 *   rest (starting at p + *n) and more.
 * ERROR: *why names what was found at p + *n; nothing from this message
 *   may complete at the backend.
 */
enum smtp_parse_rc smtp_data_scan(struct smtp_data *d, const uint8_t *p,
    size_t len, size_t *n, enum smtp_data_why *why);
/* "bare_lf", "bare_cr", "nul" (event reasons). */
const char *smtp_data_why_str(enum smtp_data_why why);

/*
 * Whether the first bytes of a session are not SMTP or POP3 at all:
 * ERROR (with *what naming it) for an HTTP request line or a TLS record
 * (0x16 0x03), OK when they are not, AGAIN when too few bytes are there
 * to tell. Shared by the POP3 filter.
 */
enum smtp_parse_rc smtp_foreign_parse(const uint8_t *p, size_t len,
    const char **what);

#endif
