/* tlsalloc.c - OpenSSL's record buffers on cache-line boundaries. */
#include "tlsalloc.h"

#include <malloc.h>
#include <stdint.h>
#include <stdlib.h>

#include <openssl/crypto.h>

#include "bufpool.h"

/*
 * Record buffers are a little over 16 KiB (the largest record plus
 * header, tag and alignment slack); every request from MIN to BLOCK
 * bytes gets a BLOCK-sized block from the thread's pool, which hands out
 * blocks on a cache line (BUFPOOL_ALIGN), so freed ones serve any later
 * request of that range.
 */
#define MIN (16 * 1024)
#define BLOCK (20 * 1024)
#define KEEP 16			/* freed blocks a thread keeps */

/* Zero until the thread's first block; see thread_pool(). */
static _Thread_local struct bufpool pool;

static struct bufpool *
thread_pool(void)
{
	if (pool.size == 0)
		bufpool_init(&pool, BLOCK, KEEP);
	return &pool;
}

static void *
tls_malloc(size_t n, const char *file, int line)
{
	(void)file;
	(void)line;
	if (n < MIN || n > BLOCK)
		return malloc(n);
	return bufpool_get(thread_pool());
}

/*
 * Rare on record buffers (growing a handshake message is the usual
 * case); the result need not stay aligned, and pool blocks are heap
 * blocks that realloc() takes.
 */
static void *
tls_realloc(void *p, size_t n, const char *file, int line)
{
	(void)file;
	(void)line;
	return realloc(p, n);
}

/*
 * Free calls do not say how large a block is, but the heap does: any
 * block on a cache line that holds BLOCK bytes and less than a cache
 * line more can serve as a pool block, so the pool takes it. Only the
 * quarter of blocks that are aligned pay for the size lookup.
 */
static void
tls_free(void *p, const char *file, int line)
{
	size_t usable;

	(void)file;
	(void)line;
	if (p != NULL && (uintptr_t)p % BUFPOOL_ALIGN == 0) {
		usable = malloc_usable_size(p);
		if (usable >= BLOCK && usable < BLOCK + BUFPOOL_ALIGN) {
			bufpool_put(thread_pool(), p);
			return;
		}
	}
	free(p);
}

bool
tlsalloc_init(void)
{
	return CRYPTO_set_mem_functions(tls_malloc, tls_realloc,
	    tls_free) == 1;
}

void
tlsalloc_thread_end(void)
{
	bufpool_clear(&pool);
}
