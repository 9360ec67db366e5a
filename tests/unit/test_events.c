/* test_events.c - unit tests for the block-event line format. */
#include <arpa/inet.h>
#include <string.h>

#include "check.h"
#include "events.h"

static void
test_full_line(void)
{
	struct event ev = EVENT_INIT;
	uint8_t ip[16];
	char buf[1024];

	inet_pton(AF_INET6, "::ffff:192.0.2.7", ip);
	ev.event = "ban";
	ev.ip = ip;
	ev.listener = "smtps";
	ev.reason = "auth";
	ev.country = "DE";
	ev.count = 5;
	ev.window_s = 600;
	ev.ban_s = 3600;
	ev.firewall = "nftables";
	/* 2026-11-23T11:20:00.042Z */
	CHECK(event_format(&ev, 1795432800042ULL, buf, sizeof(buf)) > 0);
	CHECK_STR_EQ(buf, "{\"ts\":\"2026-11-23T11:20:00.042Z\","
	    "\"event\":\"ban\",\"ip\":\"192.0.2.7\",\"listener\":\"smtps\","
	    "\"reason\":\"auth\",\"country\":\"DE\",\"count\":5,"
	    "\"window_s\":600,\"ban_s\":3600,\"firewall\":\"nftables\"}\n");
}

static void
test_minimal_and_escaping(void)
{
	struct event ev = EVENT_INIT;
	uint8_t ip[16];
	char buf[1024];

	inet_pton(AF_INET6, "2001:db8::1", ip);
	ev.event = "smuggling";
	ev.ip = ip;
	ev.detail = "bare \"LF\"\n\x01\\ \xc3\xa9";
	CHECK(event_format(&ev, 0, buf, sizeof(buf)) > 0);
	/* Required keys are present even when unknown; control bytes and
	 * non-ASCII client bytes never break the JSON line. */
	CHECK_STR_EQ(buf, "{\"ts\":\"1970-01-01T00:00:00.000Z\","
	    "\"event\":\"smuggling\",\"ip\":\"2001:db8::1\",\"listener\":null,"
	    "\"reason\":null,\"detail\":\"bare \\\"LF\\\"\\u000a\\u0001\\\\ "
	    "??\"}\n");
}

static void
test_too_long(void)
{
	struct event ev = EVENT_INIT;
	char buf[40];

	ev.event = "reject";
	CHECK_INT_EQ(event_format(&ev, 0, buf, sizeof(buf)), -1);
}

int
main(void)
{
	test_full_line();
	test_minimal_and_escaping();
	test_too_long();
	return check_report("test_events");
}
