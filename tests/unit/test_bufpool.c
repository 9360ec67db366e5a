/* test_bufpool.c - unit tests for the block pool and the relay buffers. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "bufpool.h"
#include "check.h"

/* A returned block is the next one handed out: no allocator round trip. */
static void
test_reuse(void)
{
	struct bufpool p;
	void *a, *b, *c;

	bufpool_init(&p, 4096, 4);
	a = bufpool_get(&p);
	CHECK(a != NULL);
	memset(a, 0xab, 4096);	/* the whole block is usable */
	CHECK_INT_EQ(p.out, 1);
	bufpool_put(&p, a);
	CHECK_INT_EQ(p.n, 1);
	CHECK_INT_EQ(p.out, 0);
	b = bufpool_get(&p);
	CHECK(b == a);
	CHECK_INT_EQ(p.n, 0);
	c = bufpool_get(&p);
	CHECK(c != NULL && c != b);
	bufpool_put(&p, b);
	bufpool_put(&p, c);
	bufpool_put(&p, NULL);	/* ignored */
	CHECK_INT_EQ(p.n, 2);
	bufpool_clear(&p);
	CHECK_INT_EQ(p.n, 0);
	CHECK(p.head == NULL);
	/* Usable again after a clear. */
	a = bufpool_get(&p);
	CHECK(a != NULL);
	bufpool_put(&p, a);
	bufpool_clear(&p);
}

/* However many blocks come back, the pool keeps at most max; the rest go
 * back to the allocator (ASan's leak check sees any that would not). */
static void
test_bounded(void)
{
	struct bufpool p;
	void *v[50];
	size_t i;

	bufpool_init(&p, 1024, 8);
	for (i = 0; i < 50; i++) {
		v[i] = bufpool_get(&p);
		CHECK(v[i] != NULL);
	}
	CHECK_INT_EQ(p.out, 50);
	for (i = 0; i < 50; i++)
		bufpool_put(&p, v[i]);
	CHECK_INT_EQ(p.n, 8);
	CHECK_INT_EQ(p.out, 0);
	/* The kept ones are handed out again, then fresh ones. */
	for (i = 0; i < 10; i++)
		v[i] = bufpool_get(&p);
	CHECK_INT_EQ(p.n, 0);
	for (i = 0; i < 10; i++)
		bufpool_put(&p, v[i]);
	CHECK_INT_EQ(p.n, 8);
	bufpool_clear(&p);
}

/* Blocks smaller than a pointer still work: the link needs that much. */
static void
test_tiny_blocks(void)
{
	struct bufpool p;
	void *a, *b;

	bufpool_init(&p, 1, 2);
	CHECK(p.size >= sizeof(void *));
	a = bufpool_get(&p);
	b = bufpool_get(&p);
	bufpool_put(&p, a);
	bufpool_put(&p, b);
	CHECK(bufpool_get(&p) == b);
	bufpool_put(&p, b);
	bufpool_clear(&p);
}

/* A relay buffer of either pooled size holds storage only while it holds
 * bytes. */
static void
test_buf_drains(size_t cap)
{
	struct buf b;
	uint8_t *t, *first;
	size_t i;

	buf_init(&b, cap);
	CHECK(b.data == NULL);
	CHECK_INT_EQ(buf_room(&b), cap);
	CHECK_INT_EQ(buf_append(&b, "hello", 5), 0);
	CHECK(b.data != NULL);
	first = b.data;
	buf_consume(&b, 2);
	CHECK_INT_EQ(buf_len(&b), 3);
	CHECK(memcmp(buf_data(&b), "llo", 3) == 0);
	CHECK(b.data != NULL);		/* bytes held: the storage stays */
	buf_consume(&b, 3);
	CHECK(b.data == NULL);		/* drained: given back */
	/* A read that brought nothing gives the storage back too. */
	t = buf_tail(&b);
	CHECK(t != NULL);
	CHECK(b.data == first);		/* the pool's block again */
	buf_trim(&b);
	CHECK(b.data == NULL);
	/* buf_trim keeps what holds bytes. */
	CHECK_INT_EQ(buf_append(&b, "x", 1), 0);
	buf_trim(&b);
	CHECK(b.data != NULL && buf_len(&b) == 1);
	buf_clear(&b);
	CHECK(b.data == NULL && buf_len(&b) == 0);
	/* Full, refused, then drained in pieces. */
	for (i = 0; i < cap / 1024; i++) {
		char k[1024];

		memset(k, (int)i, sizeof(k));
		CHECK_INT_EQ(buf_append(&b, k, sizeof(k)), 0);
	}
	CHECK(buf_full(&b));
	CHECK_INT_EQ(buf_append(&b, "y", 1), -1);
	CHECK_INT_EQ(buf_data(&b)[1024], 1);
	buf_consume(&b, cap - 1);
	CHECK_INT_EQ(buf_data(&b)[0], (cap / 1024 - 1) & 0xff);
	buf_consume(&b, 1);
	CHECK(b.data == NULL);
	buf_pool_clear();
}

/* Many idle buffers hold nothing; many busy ones come back to a bounded
 * pool; buffers of another size bypass the pool. */
static void
test_buf_many(void)
{
	struct buf *v;
	struct buf odd;
	size_t i, n = 200;

	v = calloc(n, sizeof(*v));
	CHECK(v != NULL);
	if (v == NULL)
		return;
	for (i = 0; i < n; i++) {
		buf_init(&v[i], BUF_BLOCK);
		CHECK_INT_EQ(buf_append(&v[i], "data", 4), 0);
	}
	for (i = 0; i < n; i++) {
		buf_consume(&v[i], 4);
		CHECK(v[i].data == NULL);
	}
	buf_init(&odd, 100);
	CHECK_INT_EQ(buf_append(&odd, "z", 1), 0);
	buf_clear(&odd);
	free(v);
	buf_pool_clear();	/* ASan: nothing may be left */
}

/* A small block given back is never handed to a large buffer: the large
 * one takes (and, under ASan, can fill) all of its 64 KiB. */
static void
test_buf_sizes_apart(void)
{
	struct buf small, large;
	uint8_t *block, *t;

	buf_init(&small, BUF_BLOCK);
	buf_init(&large, BUF_BLOCK_LARGE);
	CHECK_INT_EQ(buf_append(&small, "s", 1), 0);
	block = small.data;
	buf_clear(&small);		/* into the small pool */
	t = buf_tail(&large);
	CHECK(t != NULL && large.data != block);
	if (t != NULL)
		memset(t, 'L', buf_room(&large));
	buf_commit(&large, buf_room(&large));
	CHECK(buf_full(&large));
	buf_clear(&large);
	t = buf_tail(&small);
	CHECK(t != NULL && small.data == block);	/* the small pool kept it */
	buf_clear(&small);
	buf_pool_clear();
}

/* Whole contents change hands without a copy, only into an empty buffer
 * of the same capacity. */
static void
test_buf_move_all(void)
{
	struct buf a, b, large;
	const uint8_t *block;

	buf_init(&a, BUF_BLOCK);
	buf_init(&b, BUF_BLOCK);
	buf_init(&large, BUF_BLOCK_LARGE);
	CHECK(!buf_move_all(&b, &a));		/* nothing to move */
	CHECK_INT_EQ(buf_append(&a, "xxhello", 7), 0);
	buf_consume(&a, 2);
	block = buf_data(&a);
	CHECK(!buf_move_all(&large, &a));	/* another size */
	CHECK(buf_move_all(&b, &a));
	CHECK(buf_data(&b) == block);		/* no copy */
	CHECK_INT_EQ(buf_len(&b), 5);
	CHECK(memcmp(buf_data(&b), "hello", 5) == 0);
	CHECK(a.data == NULL && buf_len(&a) == 0);
	/* The source reads on into fresh storage; the destination, not
	 * empty now, takes no more moves but appends behind what it has. */
	CHECK_INT_EQ(buf_append(&a, "more", 4), 0);
	CHECK(!buf_move_all(&b, &a));
	CHECK_INT_EQ(buf_append(&b, buf_data(&a), 4), 0);
	CHECK(memcmp(buf_data(&b), "hellomore", 9) == 0);
	buf_clear(&a);
	buf_clear(&b);
	buf_clear(&large);
	buf_pool_clear();
}

/* Held bytes start 8 bytes past a cache line, as OpenSSL's record text
 * does in its buffers (buf.c), in pooled blocks, in other sizes and after
 * the bytes are moved up to make room. */
static void
test_buf_alignment(size_t cap)
{
	struct buf b;
	uint8_t *t;

	buf_init(&b, cap);
	t = buf_tail(&b);
	CHECK(t != NULL && (uintptr_t)t % 64 == 8);
	CHECK_INT_EQ(buf_append(&b, "abcdefgh", 8), 0);
	buf_consume(&b, 3);
	CHECK((uintptr_t)buf_data(&b) % 64 == 11);
	t = buf_tail(&b);		/* moves "defgh" up front */
	CHECK(t != NULL && (uintptr_t)buf_data(&b) % 64 == 8);
	CHECK(memcmp(buf_data(&b), "defgh", 5) == 0);
	CHECK(t == buf_data(&b) + 5);
	CHECK_INT_EQ(buf_room(&b), cap - 5);
	buf_clear(&b);
	buf_pool_clear();
}

int
main(void)
{
	test_reuse();
	test_bounded();
	test_tiny_blocks();
	test_buf_drains(BUF_BLOCK);
	test_buf_drains(BUF_BLOCK_LARGE);
	test_buf_many();
	test_buf_sizes_apart();
	test_buf_move_all();
	test_buf_alignment(BUF_BLOCK);
	test_buf_alignment(BUF_BLOCK_LARGE);
	test_buf_alignment(1000);
	return check_report("bufpool");
}
