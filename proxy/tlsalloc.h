/* tlsalloc.h - OpenSSL's record buffers on cache-line boundaries. */
#ifndef MOAT_TLSALLOC_H
#define MOAT_TLSALLOC_H

#include <stdbool.h>

/*
 * OpenSSL copies each record's text from moat's relay buffer into its
 * write buffer, and how fast the copy runs depends on how the two
 * addresses line up (buf.c says how much). This hands OpenSSL an
 * allocator that puts every block the size of a single record buffer on
 * a 64-byte boundary; other blocks (the larger read-ahead buffer among
 * them) go straight to malloc and free, as before.
 *
 * Sessions release their record buffers whenever they drain
 * (SSL_MODE_RELEASE_BUFFERS), so those blocks come and go several times
 * per handshake; aligned allocation costs glibc more than malloc, so each
 * thread keeps a few freed ones in a pool (bufpool.h) for reuse.
 * tlsalloc_thread_end() gives them back when the thread's loop ends.
 *
 * Call tlsalloc_init() first thing in main(): OpenSSL accepts an
 * allocator only before its first allocation. It returns false if that
 * has already happened, in which case OpenSSL keeps its default
 * allocator, which is only slower.
 */
bool tlsalloc_init(void);
void tlsalloc_thread_end(void);

#endif
