/* test_log.c - one message is one log line, whatever text it quotes. */
#include "check.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

enum what { INFO, WARNING, DEBUG };

/* Logs through a temporary stderr; returns what follows the tag (the
 * "<N>" prefix depends on whether stderr is a terminal), "" if nothing
 * was written. */
static const char *
logged_at(enum what what, char *out, size_t len, const char *text)
{
	FILE *f = tmpfile();
	int saved = dup(STDERR_FILENO);
	size_t n;
	const char *tag;

	CHECK(f != NULL && saved >= 0);
	fflush(stderr);
	CHECK(dup2(fileno(f), STDERR_FILENO) >= 0);
	if (what == WARNING)
		log_warnx("ehlo=%s end", text);
	else if (what == DEBUG)
		log_debug("ehlo=%s end", text);
	else
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

static const char *
logged(char *out, size_t len, const char *text)
{
	return logged_at(INFO, out, len, text);
}

/* daemon.log_level, and what -v does to it. */
static void
test_levels(void)
{
	char out[256];

	log_init(0);			/* before the configuration: info */
	CHECK_STR_EQ(logged_at(INFO, out, sizeof(out), "a"), "ehlo=a end\n");
	CHECK_STR_EQ(logged_at(DEBUG, out, sizeof(out), "a"), "");
	log_set_level(LOG_LEVEL_WARNING);
	CHECK_STR_EQ(logged_at(INFO, out, sizeof(out), "a"), "");
	CHECK_STR_EQ(logged_at(WARNING, out, sizeof(out), "a"),
	    "ehlo=a end\n");
	log_set_level(LOG_LEVEL_DEBUG);
	CHECK_STR_EQ(logged_at(DEBUG, out, sizeof(out), "a"), "ehlo=a end\n");
	log_set_level(LOG_LEVEL_INFO);	/* a reload back to info */
	CHECK_STR_EQ(logged_at(DEBUG, out, sizeof(out), "a"), "");
	CHECK_STR_EQ(logged_at(INFO, out, sizeof(out), "a"), "ehlo=a end\n");

	log_init(1);			/* -v: info even when set to warning */
	log_set_level(LOG_LEVEL_WARNING);
	CHECK_STR_EQ(logged_at(INFO, out, sizeof(out), "a"), "ehlo=a end\n");
	CHECK_STR_EQ(logged_at(DEBUG, out, sizeof(out), "a"), "");
	log_init(2);			/* -vv: debug whatever is set */
	log_set_level(LOG_LEVEL_WARNING);
	CHECK_STR_EQ(logged_at(DEBUG, out, sizeof(out), "a"), "ehlo=a end\n");
	log_init(0);
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
	test_levels();
	return check_report("test_log");
}
