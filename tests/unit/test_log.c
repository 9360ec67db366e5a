/* test_log.c - one message is one log line, whatever text it quotes. */
#include "check.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

/* Logs through a temporary stderr; returns what follows the tag (the
 * "<N>" prefix depends on whether stderr is a terminal). */
static const char *
logged(char *out, size_t len, const char *text)
{
	FILE *f = tmpfile();
	int saved = dup(STDERR_FILENO);
	size_t n;
	const char *tag;

	CHECK(f != NULL && saved >= 0);
	fflush(stderr);
	CHECK(dup2(fileno(f), STDERR_FILENO) >= 0);
	log_info("ehlo=%s end", text);
	fflush(stderr);
	CHECK(dup2(saved, STDERR_FILENO) >= 0);
	close(saved);
	rewind(f);
	n = fread(out, 1, len - 1, f);
	out[n] = '\0';
	fclose(f);
	tag = strstr(out, "moat: ");
	return tag != NULL && n > 0 ? tag + strlen("moat: ") : "";
}

int
main(void)
{
	char out[4096];

	log_init(0);
	CHECK_STR_EQ(logged(out, sizeof(out),
	    "x\r\n<4>moat: reject ip=203.0.113.9\x1b[2J\x7f"),
	    "ehlo=x?\?<4>moat: reject ip=203.0.113.9?[2J? end\n");

	/* A tab and bytes above ASCII pass: neither breaks a line. */
	CHECK_STR_EQ(logged(out, sizeof(out), "a\tb \xc3\xa9"),
	    "ehlo=a\tb \xc3\xa9 end\n");
	return check_report("test_log");
}
