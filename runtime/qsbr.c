/* qsbr.c - see qsbr.h. */
#include "qsbr.h"

#include <sched.h>

void qsbr_init(struct qsbr *q, struct qsbr_reader *readers, unsigned nreaders)
{
	atomic_init(&q->epoch, 1);
	q->readers = readers;
	q->nreaders = nreaders;
	for (unsigned i = 0; i < nreaders; i++)
		atomic_init(&readers[i].seen, 0);
}

void qsbr_online(struct qsbr *q, struct qsbr_reader *r)
{
	atomic_store_explicit(&r->seen, atomic_load_explicit(&q->epoch, memory_order_relaxed),
			      memory_order_relaxed);
	/* The store must be visible before any shared pointer is loaded,
	 * or a writer could miss this reader and free what it is about to
	 * read. A store-load ordering needs the full fence. */
	atomic_thread_fence(memory_order_seq_cst);
}

void qsbr_offline(struct qsbr_reader *r)
{
	/* Release: every read of shared data happens before the writer can
	 * see this reader as gone. */
	atomic_store_explicit(&r->seen, 0, memory_order_release);
}

void qsbr_quiescent(struct qsbr *q, struct qsbr_reader *r)
{
	atomic_store_explicit(&r->seen, atomic_load_explicit(&q->epoch, memory_order_acquire),
			      memory_order_release);
	atomic_thread_fence(memory_order_seq_cst);
}

void qsbr_synchronize(struct qsbr *q)
{
	uint64_t target;

	/* Order the unlink (done by the caller) before reading the readers. */
	target = atomic_fetch_add_explicit(&q->epoch, 1, memory_order_seq_cst) + 1;
	for (unsigned i = 0; i < q->nreaders; i++) {
		for (;;) {
			uint64_t s = atomic_load_explicit(&q->readers[i].seen, memory_order_acquire);

			if (s == 0 || s >= target)
				break;
			sched_yield();
		}
	}
}
