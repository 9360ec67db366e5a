/* test_refusals.c - unit tests for the summarised refusal log. */
#include <arpa/inet.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <ev.h>

#include "check.h"
#include "log.h"
#include "refusals.h"

static FILE *captured;
static int saved_stderr = -1;

/* Sends stderr (where log lines go) to a temporary file. */
static void
capture_start(void)
{
	fflush(stderr);
	captured = tmpfile();
	saved_stderr = dup(2);
	if (captured != NULL)
		dup2(fileno(captured), 2);
}

/* Restores stderr; returns what was logged (caller frees). */
static char *
capture_end(void)
{
	char *text;
	long n;

	fflush(stderr);
	dup2(saved_stderr, 2);
	close(saved_stderr);
	if (captured == NULL)
		return strdup("");
	n = ftell(captured);
	rewind(captured);
	text = calloc(1, (size_t)(n > 0 ? n : 0) + 1);
	if (text != NULL && n > 0 && fread(text, 1, (size_t)n, captured) !=
	    (size_t)n)
		text[0] = '\0';
	fclose(captured);
	return text;
}

/* n (host order) as the IPv4-mapped form policy uses. */
static void
addr4(uint8_t a[16], uint32_t n)
{
	static const uint8_t mapped[12] = { [10] = 0xff, [11] = 0xff };
	uint32_t be = htonl(n);

	memcpy(a, mapped, sizeof(mapped));
	memcpy(a + 12, &be, sizeof(be));
}

/* The first refusal of an address for a reason is logged in full; the
 * repeats become one summary line per reason. */
static void
test_first_in_full_rest_summarised(struct ev_loop *loop)
{
	static const char banned[] = "banned", deny[] = "denylist";
	static const char capacity[] = "capacity";
	uint8_t a[16], b[16];
	char *out;
	int i;

	addr4(a, 0xc6336407);		/* 198.51.100.7 */
	addr4(b, 0xc6336408);
	capture_start();
	for (i = 0; i < 1000; i++)
		refusals_log(loop, a, banned, "smtps", NULL, NULL);
	refusals_log(loop, b, banned, "smtps", "00000000000000aa", NULL);
	refusals_log(loop, a, deny, "pop3", NULL, NULL);
	refusals_log(loop, a, deny, "pop3", NULL, NULL);
	refusals_log(loop, a, capacity, "smtp", "00000000000000ab",
	    "sessions=10 held=9");
	refusals_log(loop, a, capacity, "smtp", NULL, "sessions=10 held=10");
	refusals_flush();
	out = capture_end();
	CHECK(out != NULL);
	if (out == NULL)
		return;
	CHECK_INT_EQ(check_count(out, "- reject ip=198.51.100.7 reason=banned "
	    "listener=smtps\n"), 1);
	CHECK_INT_EQ(check_count(out, "00000000000000aa reject ip=198.51.100.8 "
	    "reason=banned listener=smtps\n"), 1);
	CHECK_INT_EQ(check_count(out, "reject ip=198.51.100.7 reason=denylist"),
	    1);
	CHECK_INT_EQ(check_count(out, "refusals: 999 more of reason=banned in "
	    "the last 10 s"), 1);
	CHECK_INT_EQ(check_count(out, "refusals: 1 more of reason=denylist"), 1);
	CHECK_INT_EQ(check_count(out, "00000000000000ab reject ip=198.51.100.7 "
	    "reason=capacity listener=smtp sessions=10 held=9\n"), 1);
	CHECK_INT_EQ(check_count(out, "refusals: 1 more of reason=capacity"),
	    1);
	CHECK_INT_EQ(check_count(out, "\n"), 7);
	free(out);
}

/* Many addresses: at most REFUSALS_FULL_MAX full lines an interval, the
 * rest counted; after a flush everything starts afresh. */
static void
test_full_lines_capped(struct ev_loop *loop)
{
	static const char banned[] = "banned";
	uint8_t a[16];
	char *out;
	uint32_t i;

	capture_start();
	for (i = 0; i < REFUSALS_FULL_MAX + 50; i++) {
		addr4(a, 0x0a000000 + i);
		refusals_log(loop, a, banned, "smtp", NULL, NULL);
	}
	refusals_flush();
	addr4(a, 0x0a000000);
	refusals_log(loop, a, banned, "smtp", NULL, NULL);
	refusals_flush();
	out = capture_end();
	CHECK(out != NULL);
	if (out == NULL)
		return;
	CHECK_INT_EQ(check_count(out, " reject ip="), REFUSALS_FULL_MAX + 1);
	CHECK_INT_EQ(check_count(out, "refusals: 50 more of reason=banned"), 1);
	free(out);
}

/* The summary timer is not a reason for the loop to keep running. */
static void
test_timer_does_not_hold_loop(struct ev_loop *loop)
{
	static const char banned[] = "banned";
	uint8_t a[16];
	char *out;

	addr4(a, 0xc0000201);
	capture_start();
	refusals_log(loop, a, banned, "smtp", NULL, NULL);
	refusals_log(loop, a, banned, "smtp", NULL, NULL);
	ev_run(loop, 0);	/* returns at once: nothing holds the loop */
	refusals_flush();
	out = capture_end();
	CHECK(out != NULL && check_count(out, "refusals: 1 more") == 1);
	free(out);
}

static pthread_barrier_t started;

static void *
worker_thread(void *arg)
{
	static const char banned[] = "banned";
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
	uint8_t a[16];

	refusals_worker((unsigned)(uintptr_t)arg);
	/* As in moat, every worker is known by its first summary (which
	 * comes 10 s after its start). */
	pthread_barrier_wait(&started);
	addr4(a, 0xc0000202);
	refusals_log(loop, a, banned, "smtp", NULL, NULL);
	refusals_log(loop, a, banned, "smtp", NULL, NULL);
	refusals_flush();
	ev_loop_destroy(loop);
	return NULL;
}

/* With several workers, each summary names its worker: two "1 more"
 * lines would otherwise read as one said twice. Last, since the count
 * of workers stays. */
static void
test_workers_named(void)
{
	pthread_t t[2];
	uintptr_t i;
	char *out;

	pthread_barrier_init(&started, NULL, 2);
	capture_start();
	for (i = 0; i < 2; i++)
		CHECK(pthread_create(&t[i], NULL, worker_thread, (void *)i) ==
		    0);
	for (i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	pthread_barrier_destroy(&started);
	out = capture_end();
	CHECK(out != NULL);
	if (out == NULL)
		return;
	CHECK_INT_EQ(check_count(out, "refusals: 1 more of reason=banned in "
	    "the last 10 s (worker 0)\n"), 1);
	CHECK_INT_EQ(check_count(out, "refusals: 1 more of reason=banned in "
	    "the last 10 s (worker 1)\n"), 1);
	free(out);
}

int
main(void)
{
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);

	log_init(0);
	CHECK(loop != NULL);
	if (loop == NULL)
		return check_report("refusals");
	test_first_in_full_rest_summarised(loop);
	test_full_lines_capped(loop);
	test_timer_does_not_hold_loop(loop);
	test_workers_named();
	ev_loop_destroy(loop);
	return check_report("refusals");
}
