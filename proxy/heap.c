/* heap.c - giving memory that closed sessions freed back to the system. */
#include "heap.h"

#include <malloc.h>
#include <stdio.h>
#include <unistd.h>

/* Resident bytes of this process, or 0 if /proc cannot tell. */
static size_t
resident(void)
{
	unsigned long size, pages;
	FILE *f = fopen("/proc/self/statm", "re");
	int n;

	if (f == NULL)
		return 0;
	n = fscanf(f, "%lu %lu", &size, &pages);
	fclose(f);
	return n == 2 ? (size_t)pages * (size_t)sysconf(_SC_PAGESIZE) : 0;
}

/* Resident memory that malloc's callers do not hold. */
static size_t
unused(void)
{
	struct mallinfo2 mi = mallinfo2();
	size_t rss = resident(), used = mi.uordblks + mi.hblkhd;

	return rss > used ? rss - used : 0;
}

/* What trimming cannot give back (code, mappings, the geo database
 * copy): measured before moat serves and again after each trim, so it
 * follows what moat maps besides malloc's heap. */
static size_t floor_bytes;

void
heap_init(void)
{
	floor_bytes = unused();
}

size_t
heap_tick(void)
{
	size_t before = resident(), after, now = unused();

	if (now < floor_bytes)
		floor_bytes = now;
	if (now - floor_bytes < HEAP_SLACK)
		return 0;
	(void)malloc_trim(0);
	after = resident();
	floor_bytes = unused();
	return before > after ? before - after : 0;
}
