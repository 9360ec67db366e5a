/* test_slots.c - unit tests for the global session cap and its reserve. */
#include <stdint.h>
#include <string.h>

#include "check.h"
#include "slots.h"

static void
addr4(uint8_t a[16], uint32_t n)
{
	memset(a, 0, 16);
	a[10] = a[11] = 0xff;
	a[12] = (uint8_t)(n >> 24);
	a[13] = (uint8_t)(n >> 16);
	a[14] = (uint8_t)(n >> 8);
	a[15] = (uint8_t)n;
}

/* One source fills the slots below the mark; the reserve still admits
 * newcomers, never the hog, and the cap holds. */
static void
test_reserve(void)
{
	struct slots *sl = slots_new();
	uint8_t hog[16], a[16];
	uint32_t i;

	CHECK(sl != NULL);
	slots_set_limits(sl, 100, 10);
	addr4(hog, 0xc0000201);
	for (i = 0; i < 90; i++)
		CHECK_INT_EQ(slots_take(sl, hog, false), SLOTS_OK);
	CHECK_INT_EQ(slots_take(sl, hog, false), SLOTS_RESERVE);
	CHECK_INT_EQ(slots_held(sl, hog), 90);
	/* An exempt source (load balancer) may go on up to the cap. */
	CHECK_INT_EQ(slots_take(sl, hog, true), SLOTS_OK);
	slots_give(sl, hog);
	/* Newcomers get one slot each, then a second only if below the
	 * average and below SLOTS_FEW. */
	addr4(a, 1);
	CHECK_INT_EQ(slots_take(sl, a, false), SLOTS_OK);
	CHECK_INT_EQ(slots_take(sl, a, false), SLOTS_OK);
	CHECK_INT_EQ(slots_take(sl, a, false), SLOTS_RESERVE);
	CHECK_INT_EQ(slots_held(sl, a), 2);
	for (i = 2; i < 10; i++) {
		addr4(a, i);
		CHECK_INT_EQ(slots_take(sl, a, false), SLOTS_OK);
	}
	CHECK_INT_EQ(slots_used(sl), 100);
	addr4(a, 1000);
	CHECK_INT_EQ(slots_take(sl, a, false), SLOTS_FULL);
	CHECK_INT_EQ(slots_take(sl, a, true), SLOTS_FULL);
	/* Giving back makes room again. */
	slots_give(sl, hog);
	CHECK_INT_EQ(slots_take(sl, a, false), SLOTS_OK);
	CHECK_INT_EQ(slots_addresses(sl), 11);
	slots_free(sl);
}

/* No cap: anything goes; counts stay exact through growth and deletes. */
static void
test_counts(void)
{
	struct slots *sl = slots_new();
	uint8_t a[16];
	uint32_t i, bad = 0;

	slots_set_limits(sl, 0, 0);
	for (i = 0; i < 5000; i++) {
		addr4(a, i % 1500);
		if (slots_take(sl, a, false) != SLOTS_OK)
			bad++;
	}
	CHECK_INT_EQ(bad, 0);
	CHECK_INT_EQ(slots_used(sl), 5000);
	CHECK_INT_EQ(slots_addresses(sl), 1500);
	addr4(a, 7);
	CHECK_INT_EQ(slots_held(sl, a), 4);	/* 7, 1507, 3007, 4507 */
	/* Give back in a different order; every other entry must stay
	 * findable after each backward shift. */
	for (i = 0; i < 10000; i++) {
		uint32_t k = i < 5000 ? 4999 - i : i - 5000;

		if ((k % 2 == 1) != (i < 5000))
			continue;	/* odd ones last to first, then even */
		addr4(a, k % 1500);
		if (slots_held(sl, a) == 0)
			bad++;
		slots_give(sl, a);
	}
	CHECK_INT_EQ(bad, 0);
	CHECK_INT_EQ(slots_used(sl), 0);
	CHECK_INT_EQ(slots_addresses(sl), 0);
	/* A reserve as large as the cap is ignored rather than locking. */
	slots_set_limits(sl, 3, 3);
	addr4(a, 1);
	CHECK_INT_EQ(slots_take(sl, a, false), SLOTS_OK);
	CHECK_INT_EQ(slots_take(sl, a, false), SLOTS_OK);
	CHECK_STR_EQ(slots_verdict_str(SLOTS_FULL), "capacity");
	slots_free(sl);
}

/* An IPv6 host picks addresses from its /64: they count as one source,
 * so they do not pass for newcomers in the reserve. Other /64s do. */
static void
test_ipv6_per_64(void)
{
	struct slots *sl = slots_new();
	uint8_t a[16];
	uint32_t i;

	CHECK(sl != NULL);
	slots_set_limits(sl, 10, 5);
	memset(a, 0, 16);
	a[0] = 0x20;
	a[1] = 0x01;
	a[2] = 0x0d;
	a[3] = 0xb8;
	for (i = 0; i < 5; i++) {
		a[15] = (uint8_t)(i + 1);
		CHECK_INT_EQ(slots_take(sl, a, false), SLOTS_OK);
	}
	a[15] = 0x77;
	CHECK_INT_EQ(slots_take(sl, a, false), SLOTS_RESERVE);
	CHECK_INT_EQ(slots_held(sl, a), 5);
	CHECK_INT_EQ(slots_addresses(sl), 1);
	a[7] = 1;	/* the next /64 */
	CHECK_INT_EQ(slots_take(sl, a, false), SLOTS_OK);
	slots_give(sl, a);
	a[7] = 0;
	for (i = 0; i < 5; i++) {
		a[15] = (uint8_t)(0x90 + i);	/* any address of the /64 */
		slots_give(sl, a);
	}
	CHECK_INT_EQ(slots_used(sl), 0);
	CHECK_INT_EQ(slots_addresses(sl), 0);
	slots_free(sl);
}

int
main(void)
{
	test_reserve();
	test_counts();
	test_ipv6_per_64();
	return check_report("test_slots");
}
