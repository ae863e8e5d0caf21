/*
 * uring_queue.h - what the io_uring backends' queues share: a ring with an
 * eventfd for completions, a count of I/O not yet reaped, and reap() on top
 * of a backend's own harvest.
 */
#ifndef UPG_URING_QUEUE_H
#define UPG_URING_QUEUE_H

#include <liburing.h>

#include "backend.h"

struct uring_queue {
	struct io_uring ring;
	int efd;
	unsigned depth;
	unsigned outstanding;   /* queued and not yet reaped */
};

/* A ring of depth entries (SUBMIT_ALL) with its eventfd registered: 0 or
 * -errno, nothing left behind. */
int uring_queue_init(struct uring_queue *u, unsigned depth);
void uring_queue_exit(struct uring_queue *u);
/* Move a ring just set up out of the way of the program's descriptors
 * (fd.h). */
void uring_ring_high(struct io_uring *ring);

/*
 * The reap contract of backend.h over a backend's harvest (settle what has
 * completed, hand out up to max, lower outstanding by as many): waits for at
 * least min (capped at what is outstanding), calling before_wait (may be
 * NULL) before each wait, then rearms the eventfd. before_wait returns 0,
 * or -errno when waiting could never end (nothing in flight): reap then
 * returns what it has, or that error. Returns the count or -errno.
 */
int uring_queue_reap(struct uring_queue *u, struct backend_io **done, unsigned max, unsigned min,
		     unsigned (*harvest)(struct uring_queue *u, struct backend_io **done,
					 unsigned max),
		     int (*before_wait)(struct uring_queue *u));

#endif /* UPG_URING_QUEUE_H */
