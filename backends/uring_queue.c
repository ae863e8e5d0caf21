/* uring_queue.c - see uring_queue.h. */
#define LOG_PREFIX "uring: "
#include "uring_queue.h"

#include <errno.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "fd.h"
#include "log.h"

int uring_queue_init(struct uring_queue *u, unsigned depth)
{
	/* SUBMIT_ALL: one bad SQE must not leave the rest sitting unsubmitted. */
	struct io_uring_params p = { .flags = IORING_SETUP_SUBMIT_ALL };
	int ret;

	u->depth = depth;
	u->outstanding = 0;
	u->efd = fd_high(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
	if (u->efd < 0)
		return -errno;
	ret = io_uring_queue_init_params(depth, &u->ring, &p);
	if (ret < 0) {
		pr_perr(ret, "io_uring setup (depth %u)", depth);
		close(u->efd);
		return ret;
	}
	uring_ring_high(&u->ring);
	ret = io_uring_register_eventfd(&u->ring, u->efd);
	if (ret < 0) {
		pr_perr(ret, "io_uring registration");
		uring_queue_exit(u);
	}
	return ret;
}

void uring_ring_high(struct io_uring *ring)
{
	int fd = fd_high(ring->ring_fd);

	/* The ring stays mapped; liburing enters it by ring_fd (or by
	 * enter_ring_fd, the same until a ring fd is registered). */
	ring->ring_fd = ring->enter_ring_fd = fd;
}

void uring_queue_exit(struct uring_queue *u)
{
	io_uring_queue_exit(&u->ring);
	close(u->efd);
}

int uring_queue_reap(struct uring_queue *u, struct backend_io **done, unsigned max, unsigned min,
		     unsigned (*harvest)(struct uring_queue *u, struct backend_io **done,
					 unsigned max),
		     int (*before_wait)(struct uring_queue *u))
{
	unsigned got;

	/* Never wait for I/O that was not queued: that would be forever. */
	if (min > max)
		min = max;
	if (min > u->outstanding)
		min = u->outstanding;
	got = harvest(u, done, max);
	while (got < min) {
		/* Submits what is still queued, too. */
		int ret;

		ret = before_wait ? before_wait(u) : 0;
		if (ret == 0)
			ret = io_uring_submit_and_wait(&u->ring, 1);
		if (ret < 0 && ret != -EINTR)
			return got ? (int)got : ret;
		got += harvest(u, done + got, max - got);
	}
	if (got < max) {
		/* The ring is empty: consume the eventfd's count, then look once
		 * more for a completion that came in between. */
		backend_eventfd_clear(u->efd);
		got += harvest(u, done + got, max - got);
	}
	return (int)got;
}
