/* addrindex.c - growing and rebuilding the address index. */
#include "addrindex.h"

#include <stdlib.h>

void
addrindex_init(struct addrindex *x, size_t stride, size_t key_off,
    size_t next_off)
{
	x->bucket = NULL;
	x->nbucket = 0;
	x->stride = stride;
	x->key_off = key_off;
	x->next_off = next_off;
	siphash_key_init(x->seed);
}

void
addrindex_free(struct addrindex *x)
{
	free(x->bucket);
	x->bucket = NULL;
	x->nbucket = 0;
}

int
addrindex_rebuild(struct addrindex *x, void *base, uint32_t n, uint32_t nb)
{
	uint32_t *b, want = 1, i;

	if (nb == 0)
		nb = x->nbucket;
	while (want < nb)
		want *= 2;
	if (want != x->nbucket) {
		if ((b = malloc((size_t)want * sizeof(*b))) == NULL)
			return -1;
		free(x->bucket);
		x->bucket = b;
		x->nbucket = want;
	}
	for (i = 0; i < x->nbucket; i++)
		x->bucket[i] = ADDRINDEX_NIL;
	for (i = 0; i < n; i++)
		addrindex_push(x, base, i);
	return 0;
}

void *
addrindex_grow(struct addrindex *x, void *base, uint32_t n, uint32_t *cap,
    uint32_t max)
{
	uint32_t ncap = *cap * 2;
	void *nbase;

	if (ncap > max)
		ncap = max;
	if (ncap <= *cap)
		return NULL;
	if ((nbase = realloc(base, (size_t)ncap * x->stride)) == NULL)
		return NULL;
	*cap = ncap;
	/* The records moved but their indexes did not: only a bucket
	 * array smaller than the records needs redoing. If that fails the
	 * old chains still index the moved records. */
	if (x->nbucket < ncap)
		(void)addrindex_rebuild(x, nbase, n, ncap);
	return nbase;
}
