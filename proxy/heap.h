/* heap.h - giving memory that closed sessions freed back to the system. */
#ifndef MOAT_HEAP_H
#define MOAT_HEAP_H

#include <stddef.h>

/*
 * malloc keeps what closed sessions freed for reuse: after a flood of
 * 10,000 connections moat would hold its peak for good. heap_init(),
 * called once before moat serves, measures the resident memory that is
 * not malloc's callers' (code, mappings, the geo database copy);
 * heap_tick(), called every HEAP_TICK seconds from the main loop, hands
 * freed memory back (malloc_trim) once HEAP_SLACK bytes more than that
 * are resident but unused, and measures again. Returns the bytes
 * released, 0 when it did nothing. Main thread only.
 */
#define HEAP_TICK 10.
#define HEAP_SLACK ((size_t)8 << 20)

void heap_init(void);
size_t heap_tick(void);

#endif
