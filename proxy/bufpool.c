/* bufpool.c - a bounded cache of equal-sized blocks, one per thread. */
#include "bufpool.h"

#include <stdlib.h>
#include <string.h>

void
bufpool_init(struct bufpool *p, size_t size, size_t max)
{
	p->size = size < sizeof(void *) ? sizeof(void *) : size;
	p->max = max;
	p->n = 0;
	p->head = NULL;
	p->out = 0;
}

void *
bufpool_get(struct bufpool *p)
{
	void *b = p->head;

	if (b != NULL) {
		memcpy(&p->head, b, sizeof(void *));
		p->n--;
	} else if (posix_memalign(&b, BUFPOOL_ALIGN, p->size) != 0) {
		return NULL;
	}
	p->out++;
	return b;
}

void
bufpool_put(struct bufpool *p, void *block)
{
	if (block == NULL)
		return;
	if (p->out > 0)
		p->out--;
	if (p->n >= p->max) {
		free(block);
		return;
	}
	memcpy(block, &p->head, sizeof(void *));
	p->head = block;
	p->n++;
}

void
bufpool_clear(struct bufpool *p)
{
	void *b;

	while ((b = p->head) != NULL) {
		memcpy(&p->head, b, sizeof(void *));
		free(b);
	}
	p->n = 0;
}
