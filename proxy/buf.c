/* buf.c - bounded byte buffers for one direction of one connection. */
#include "buf.h"

#include <stdlib.h>
#include <string.h>

#include "bufpool.h"

/* Zero until the thread's first buffer of each size; see pool_for(). */
static _Thread_local struct bufpool pool, pool_large;

/*
 * Blocks are allocated this much longer than their capacity, so that
 * none is a whole number of pages. OpenSSL copies every record's
 * plaintext from our buffer into its own write buffer, which malloc
 * often places right after one of our blocks; after a block of 16 KiB
 * the copy's destination then lies 24 bytes past its source, modulo
 * 4096. Debian 12's glibc (2.36) copies 16 KiB with rep movsb, and on AMD
 * Zen (measured on EPYC) rep movsb moves 3 GB/s instead of 46 whenever
 * the destination is 1 to 31 bytes past the source within the page: the
 * copy then cost as much as the encryption, and relaying backend to
 * client took nearly twice the CPU. 64 more bytes make the distance 88.
 */
#define BLOCK_PAD 64

/* The thread's pool for blocks of cap bytes, or NULL for other sizes. */
static struct bufpool *
pool_for(size_t cap)
{
	if (cap == BUF_BLOCK) {
		if (pool.size == 0)
			bufpool_init(&pool, BUF_BLOCK + BLOCK_PAD,
			    BUF_POOL_KEEP);
		return &pool;
	}
	if (cap == BUF_BLOCK_LARGE) {
		if (pool_large.size == 0)
			bufpool_init(&pool_large, BUF_BLOCK_LARGE + BLOCK_PAD,
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

	if (b->data == NULL) {
		p = pool_for(b->cap);
		b->data = p != NULL ? bufpool_get(p) : malloc(b->cap);
		if (b->data == NULL)
			return NULL;
		b->off = 0;
	}
	if (b->off > 0) {
		if (b->len > 0)
			memmove(b->data, b->data + b->off, b->len);
		b->off = 0;
	}
	return b->data + b->len;
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
