/* resq.c - see resq.h. */
#include "resq.h"

#include <errno.h>
#include <stdlib.h>

int resq_init(struct resq *q, uint64_t capacity)
{
	atomic_init(&q->head, 0);
	atomic_init(&q->tail, 0);
	q->mask = capacity - 1;
	q->ring = malloc(capacity * sizeof(*q->ring));
	return q->ring ? 0 : -ENOMEM;
}

void resq_fini(struct resq *q)
{
	free(q->ring);
	q->ring = NULL;
}
