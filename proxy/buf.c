/* buf.c - bounded byte buffers for one direction of one connection. */
#include "buf.h"

#include <stdlib.h>
#include <string.h>

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
	free(b->data);
	b->data = NULL;
	b->off = 0;
	b->len = 0;
}

uint8_t *
buf_tail(struct buf *b)
{
	if (b->data == NULL) {
		b->data = malloc(b->cap);
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
	b->off = b->len == 0 ? 0 : b->off + n;
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
