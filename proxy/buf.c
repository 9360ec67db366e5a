/* buf.c - bounded byte buffers for one direction of one connection. */
#include "buf.h"

#include <stdlib.h>
#include <string.h>

#include "bufpool.h"

/* Zero until the thread's first buffer of each size; see pool_for(). */
static _Thread_local struct bufpool pool, pool_large;

/*
 * Where a block's bytes start, and how much longer than its capacity a
 * block is. OpenSSL copies every record's plaintext from our buffer into
 * its write buffer; moat has OpenSSL put that buffer on a 64-byte
 * boundary (tlsalloc.h), where the record's text begins 8 bytes in, so
 * text starting 8 bytes into a 64-byte aligned block makes each copy move
 * whole cache lines between equally aligned addresses. (Reading, records
 * lie at every offset of OpenSSL's read-ahead buffer, so no start suits
 * them all.) That matters more than it sounds: Debian 12's glibc (2.36)
 * copies 16 KiB with rep movsb, which on AMD Zen (measured on EPYC) moves
 * 3 GB/s instead of 46 whenever the destination is 1 to 31 bytes past the
 * source within a page, a distance the heap layout used to produce often
 * enough that relaying backend to client took up to twice the CPU.
 */
#define BUF_ORIGIN 8
#define BLOCK_SLACK 64		/* room for the origin, in whole cache lines */

/* The thread's pool for blocks of cap bytes, or NULL for other sizes. */
static struct bufpool *
pool_for(size_t cap)
{
	if (cap == BUF_BLOCK) {
		if (pool.size == 0)
			bufpool_init(&pool, BUF_BLOCK + BLOCK_SLACK,
			    BUF_POOL_KEEP);
		return &pool;
	}
	if (cap == BUF_BLOCK_LARGE) {
		if (pool_large.size == 0)
			bufpool_init(&pool_large, BUF_BLOCK_LARGE + BLOCK_SLACK,
			    BUF_POOL_KEEP_LARGE);
		return &pool_large;
	}
	return NULL;
}

static void
storage_put(struct buf *b)
{
	struct bufpool *p;

	if (b->data != NULL) {
		if ((p = pool_for(b->cap)) != NULL)
			bufpool_put(p, b->data);
		else
			free(b->data);
	}
	b->data = NULL;
	b->off = 0;
	b->len = 0;
}

void
buf_pool_clear(void)
{
	bufpool_clear(&pool);
	bufpool_clear(&pool_large);
}

void
buf_init(struct buf *b, size_t cap)
{
	b->data = NULL;
	b->cap = cap;
	b->off = 0;
	b->len = 0;
}

void
buf_clear(struct buf *b)
{
	storage_put(b);
}

void
buf_trim(struct buf *b)
{
	if (b->len == 0)
		storage_put(b);
}

uint8_t *
buf_tail(struct buf *b)
{
	struct bufpool *p;
	void *v;

	if (b->data == NULL) {
		if ((p = pool_for(b->cap)) != NULL)
			b->data = bufpool_get(p);
		else if (posix_memalign(&v, BUFPOOL_ALIGN,
		    b->cap + BLOCK_SLACK) == 0)
			b->data = v;
		if (b->data == NULL)
			return NULL;
		b->off = BUF_ORIGIN;
	}
	if (b->off != BUF_ORIGIN) {
		if (b->len > 0)
			memmove(b->data + BUF_ORIGIN, b->data + b->off,
			    b->len);
		b->off = BUF_ORIGIN;
	}
	return b->data + BUF_ORIGIN + b->len;
}

void
buf_commit(struct buf *b, size_t n)
{
	b->len += n;
}

void
buf_consume(struct buf *b, size_t n)
{
	b->len -= n;
	if (b->len == 0)
		storage_put(b);
	else
		b->off += n;
}

int
buf_append(struct buf *b, const void *p, size_t n)
{
	uint8_t *t;

	if (n > buf_room(b))
		return -1;
	if (n == 0)
		return 0;
	if ((t = buf_tail(b)) == NULL)
		return -1;
	memcpy(t, p, n);
	b->len += n;
	return 0;
}

bool
buf_move_all(struct buf *dst, struct buf *src)
{
	if (dst->len != 0 || src->len == 0 || dst->cap != src->cap)
		return false;
	storage_put(dst);	/* an empty block it may still hold */
	dst->data = src->data;
	dst->off = src->off;
	dst->len = src->len;
	src->data = NULL;
	src->off = 0;
	src->len = 0;
	return true;
}
