/* buf.h - bounded byte buffers for one direction of one connection. */
#ifndef MOAT_BUF_H
#define MOAT_BUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * A FIFO of at most cap bytes. Storage exists only while bytes are held:
 * it is taken when something is about to be written in, and given back
 * as soon as the buffer is empty again (buf_consume() to zero,
 * buf_trim(), buf_clear()), so an idle connection holds no buffer at all.
 * Buffers of BUF_BLOCK or BUF_BLOCK_LARGE bytes come from small pools per
 * thread (bufpool.h), so a busy connection does not pay malloc and free
 * per read. The owner (a connection) embeds it; pointers from
 * buf_data()/buf_tail() stay valid until the next call that changes the
 * buffer.
 */
#define BUF_BLOCK (16 * 1024)
#define BUF_BLOCK_LARGE (64 * 1024)
/* Returned blocks each thread keeps for reuse (the rest are freed). */
#define BUF_POOL_KEEP 32
#define BUF_POOL_KEEP_LARGE 8

struct buf {
	uint8_t *data;		/* NULL until first needed */
	size_t cap;
	size_t off;		/* first unread byte */
	size_t len;		/* bytes held */
};

void buf_init(struct buf *b, size_t cap);
/* Gives the storage back; the buffer is empty and reusable afterwards. */
void buf_clear(struct buf *b);
/* Gives the storage back if nothing is held (after buf_tail() for a read
 * that brought nothing). */
void buf_trim(struct buf *b);
/* Frees the blocks the calling thread's pools keep (its loop is ending). */
void buf_pool_clear(void);

static inline size_t
buf_len(const struct buf *b)
{
	return b->len;
}

static inline const uint8_t *
buf_data(const struct buf *b)
{
	return b->data + b->off;
}

/* Free space, whether or not storage is allocated yet. */
static inline size_t
buf_room(const struct buf *b)
{
	return b->cap - b->len;
}

static inline bool
buf_full(const struct buf *b)
{
	return b->len == b->cap;
}

/*
 * Makes all free space contiguous after the held bytes and returns where
 * to write; NULL when allocation fails. Commit what was written with
 * buf_commit(). Moving held bytes is safe for OpenSSL's write retries
 * because sessions set SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER.
 */
uint8_t *buf_tail(struct buf *b);
void buf_commit(struct buf *b, size_t n);
/* Drops the first n held bytes; the storage goes back when none remain. */
void buf_consume(struct buf *b, size_t n);
/* Appends all of p or nothing: returns 0, or -1 when it does not fit or
 * allocation fails. */
int buf_append(struct buf *b, const void *p, size_t n);
/*
 * Moves everything src holds into dst without copying, when dst holds
 * nothing and both have the same capacity: dst takes src's storage and src
 * is left empty. Returns false (and changes nothing) otherwise.
 */
bool buf_move_all(struct buf *dst, struct buf *src);

#endif
