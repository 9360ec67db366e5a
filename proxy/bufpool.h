/* bufpool.h - a bounded cache of equal-sized blocks, one per thread. */
#ifndef MOAT_BUFPOOL_H
#define MOAT_BUFPOOL_H

#include <stddef.h>

/*
 * Relay buffers exist only while bytes are in flight (buf.h), so a busy
 * session takes and returns blocks many times a second. The pool keeps up
 * to max returned blocks for the next taker, so that costs a pointer swap
 * instead of malloc and free; past max, blocks go back to the allocator,
 * so an idle daemon holds at most max blocks per pool. A pool is not
 * locked: use one per thread (buf.c keeps one in thread-local storage),
 * or pass one explicitly to code that runs on a single thread.
 *
 * Blocks are plain heap memory, starting on a cache line (BUFPOOL_ALIGN;
 * see buf.c for why), so one returned to another pool than the one it
 * came from, or to free(), is harmless. The free blocks are linked
 * through their first bytes: size must hold a pointer.
 */
#define BUFPOOL_ALIGN 64

struct bufpool {
	size_t size;		/* bytes per block */
	size_t max;		/* blocks kept at most */
	size_t n;		/* blocks kept now */
	void *head;		/* the kept blocks, linked */
	size_t out;		/* blocks taken and not returned */
};

void bufpool_init(struct bufpool *p, size_t size, size_t max);
/* Returns a block of p->size bytes (uninitialised) or NULL when out of
 * memory; give it back with bufpool_put(). */
void *bufpool_get(struct bufpool *p);
/* Takes back a block from bufpool_get() of a pool of the same size;
 * NULL is ignored. */
void bufpool_put(struct bufpool *p, void *block);
/* Frees the kept blocks; blocks still taken stay valid. */
void bufpool_clear(struct bufpool *p);

#endif
