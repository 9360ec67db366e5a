/* smtp_refused.h - what an SMTP client refused at connect is still told. */
#ifndef MOAT_SMTP_REFUSED_H
#define MOAT_SMTP_REFUSED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct buf;

/*
 * RFC 5321 3.1: a server that opens with 554 instead of 220 must wait for
 * the client's QUIT before closing, and should answer other commands with
 * 503. A client refused by policy is owed that and no more: a line must
 * end within SMTP_REFUSED_LINE_MAX bytes, at most SMTP_REFUSED_COMMANDS_MAX
 * commands get their 503, and the caller bounds the whole exchange in
 * time. Past a bound moat answers nothing more and closes, as it would
 * have after the 554 alone.
 */
#define SMTP_REFUSED_LINE_MAX 512	/* RFC 5321 4.5.3.1.4, CRLF included */
#define SMTP_REFUSED_COMMANDS_MAX 10
#define SMTP_REFUSED_503 "503 5.5.1 Error: access denied\r\n"
#define SMTP_REFUSED_221 "221 2.0.0 Bye\r\n"

/* Zeroed: not listening (no refusal, or one that is not SMTP's). */
struct smtp_refused {
	bool listening;		/* the client may still be answered */
	unsigned answered;	/* 503 replies sent */
};

void smtp_refused_init(struct smtp_refused *r);

/*
 * Answers the complete lines at the start of p (len > 0 bytes; eof: the
 * client sends no more), appending each reply to out, and returns how
 * many bytes of p it took; a partial line is left for the next call.
 * Once r->listening is false the exchange is over (QUIT answered, a
 * bound hit, the client gone, or out refused a reply): the caller sends
 * its end of stream when out has drained and drops whatever else comes.
 * Does no I/O and keeps no pointer into p.
 */
size_t smtp_refused_feed(struct smtp_refused *r, const uint8_t *p,
    size_t len, bool eof, struct buf *out);

#endif
