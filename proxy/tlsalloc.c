/* tlsalloc.c - OpenSSL's record buffers on cache-line boundaries. */
#include "tlsalloc.h"

#include <malloc.h>
#include <stdint.h>
#include <stdlib.h>

#include <openssl/crypto.h>

/*
 * Record buffers are a little over 16 KiB (the largest record plus
 * header, tag and alignment slack); every request from MIN to BLOCK
 * bytes gets a BLOCK-sized block on an ALIGN boundary, so freed ones
 * serve any later request of that range.
 */
#define MIN (16 * 1024)
#define BLOCK (20 * 1024)
#define ALIGN 64
#define KEEP 16			/* freed blocks a thread keeps */

static _Thread_local struct {
	void *block[KEEP];
	unsigned n;
} cache;

/* glibc's usable size of a BLOCK-sized aligned block; 0 until known. */
static size_t block_usable;

static void *
tls_malloc(size_t n, const char *file, int line)
{
	void *p;

	(void)file;
	(void)line;
	if (n < MIN || n > BLOCK)
		return malloc(n);
	if (cache.n > 0)
		return cache.block[--cache.n];
	if (posix_memalign(&p, ALIGN, BLOCK) != 0)
		return NULL;
	if (block_usable == 0)
		__atomic_store_n(&block_usable, malloc_usable_size(p),
		    __ATOMIC_RELAXED);
	return p;
}

/*
 * Rare on record buffers (growing a handshake message is the usual
 * case); the result need not stay aligned, and posix_memalign memory may
 * be realloc'ed.
 */
static void *
tls_realloc(void *p, size_t n, const char *file, int line)
{
	(void)file;
	(void)line;
	return realloc(p, n);
}

/*
 * Any block of exactly our blocks' usable size on an ALIGN boundary can
 * serve as one of them, so that test is enough to tell what to keep; it
 * reads the chunk header only for the quarter of blocks that are aligned.
 */
static void
tls_free(void *p, const char *file, int line)
{
	(void)file;
	(void)line;
	if (p != NULL && (uintptr_t)p % ALIGN == 0 && cache.n < KEEP &&
	    malloc_usable_size(p) ==
	    __atomic_load_n(&block_usable, __ATOMIC_RELAXED)) {
		cache.block[cache.n++] = p;
		return;
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
	while (cache.n > 0)
		free(cache.block[--cache.n]);
}
