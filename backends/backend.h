/*
 * backend.h - where non-resident pages live, behind one ops table.
 *
 * A backend instance (struct backend) is opened once per context. I/O is
 * asynchronous and goes through queues: each handler thread opens its own
 * queue (for io_uring backends, its own ring), so submitting and reaping
 * never cross threads and take no lock. A queue signals completions on an
 * eventfd the handler polls beside the userfaultfd.
 *
 * Pages are addressed by slot: a backend-defined page-sized location (a
 * swap-file slot, a page of a data file, a key on a remote server). Backends
 * that place pages themselves allocate slots (alloc_slots); fixed-layout
 * ones (a data file) leave it NULL and take the page index as the slot.
 *
 * Every member may be NULL where the backend has no such operation; callers
 * go through the backend_*() wrappers, which turn NULL into -EOPNOTSUPP.
 * Implementations embed struct backend / struct backend_queue in their own
 * state and get back to it with container_of.
 */
#ifndef UPG_BACKEND_H
#define UPG_BACKEND_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <unistd.h>

#include "crc32c.h"

#define container_of(ptr, type, member) \
	((type *)((char *)(ptr) - offsetof(type, member)))

struct backend;
struct backend_queue;
struct iovec;

/* One page-sized transfer. The caller lends it, and its buffer, to the
 * backend from queue_read/queue_write until it is reaped: neither may
 * change meanwhile (the crc of a write is taken when it is queued). */
struct backend_io {
	uint64_t slot;
	void *buf;            /* page_size bytes, aligned to 4096 (O_DIRECT) */
	int32_t result;       /* on completion: bytes moved, or -errno
			       * (-EBADMSG: the page read back corrupt) */
	uint32_t crc;         /* crc32c of the page: set by the backend on
			       * write, checked by it on read against the
			       * value the caller kept from the write */
	void *cookie;         /* the caller's, untouched */
};

struct backend_ops {
	const char *name;
	void (*close)(struct backend *b);

	int (*queue_open)(struct backend *b, unsigned depth, struct backend_queue **out);
	/* Waits for the queue's outstanding I/O (results dropped), so the
	 * caller's buffers are free once it returns. */
	void (*queue_close)(struct backend_queue *q);
	/* An fd that becomes readable when completions are ready. reap()
	 * rearms it: once a reap has left nothing to harvest, it turns
	 * readable when new completions arrive (perhaps spuriously, never
	 * too late). */
	int (*queue_fd)(struct backend_queue *q);
	/* Register the caller's I/O buffers (its frame pool) with the queue so
	 * that I/O into them skips per-request page pinning. Optional: without
	 * it, or for a buffer outside them, I/O works the same, only slower. */
	int (*queue_register_buffers)(struct backend_queue *q, const struct iovec *iov,
				      unsigned n);

	/* Reserve n slots, contiguous where possible (pages evicted together
	 * are read back together). Returns how many were reserved (0 when
	 * full) or -errno. */
	int (*alloc_slots)(struct backend *b, unsigned n, uint64_t *slots);
	void (*free_slots)(struct backend *b, const uint64_t *slots, unsigned n);

	/* Queue I/O; nothing reaches the device until submit(). -EAGAIN when
	 * the queue is full (reap, then retry). */
	int (*queue_read)(struct backend_queue *q, struct backend_io *io);
	int (*queue_write)(struct backend_queue *q, struct backend_io *io);
	/* Returns how many I/Os it submitted, or -errno. */
	int (*submit)(struct backend_queue *q);
	/* Up to max finished I/Os into done[]; wait for at least min. Returns
	 * the count or -errno. min is capped at the number of I/Os queued and
	 * not yet reaped, and waiting submits what is queued: reap never waits
	 * for I/O that cannot come. */
	int (*reap)(struct backend_queue *q, struct backend_io **done, unsigned max, unsigned min);

	/* The pages at these slots are dead: drop their data (TRIM, hole
	 * punch, delete). */
	int (*discard)(struct backend *b, const uint64_t *slots, unsigned n);
};

struct backend {
	const struct backend_ops *ops;
	uint32_t page_size;
};

struct backend_queue {
	struct backend *backend;
};

/* Define prefix_queue_read and prefix_queue_write for a backend that queues
 * both with one function fn(q, io, bool write). */
#define BACKEND_DEFINE_QUEUE_RW(prefix, fn)                                          \
	static int prefix##_queue_read(struct backend_queue *q, struct backend_io *io)  \
	{                                                                            \
		return fn(q, io, false);                                             \
	}                                                                            \
	static int prefix##_queue_write(struct backend_queue *q, struct backend_io *io) \
	{                                                                            \
		return fn(q, io, true);                                              \
	}

#define BACKEND_CALL(obj, b, op, ...) \
	((b)->ops->op ? (b)->ops->op(obj, ##__VA_ARGS__) : -EOPNOTSUPP)

static inline int backend_alloc_slots(struct backend *b, unsigned n, uint64_t *slots)
{
	return BACKEND_CALL(b, b, alloc_slots, n, slots);
}
static inline void backend_free_slots(struct backend *b, const uint64_t *slots, unsigned n)
{
	if (b->ops->free_slots)
		b->ops->free_slots(b, slots, n);
}
static inline int backend_discard(struct backend *b, const uint64_t *slots, unsigned n)
{
	return BACKEND_CALL(b, b, discard, slots, n);
}
static inline int backend_queue_open(struct backend *b, unsigned depth, struct backend_queue **out)
{
	return BACKEND_CALL(b, b, queue_open, depth, out);
}
static inline void backend_queue_close(struct backend_queue *q)
{
	if (q && q->backend->ops->queue_close)
		q->backend->ops->queue_close(q);
}
static inline int backend_queue_fd(struct backend_queue *q)
{
	return BACKEND_CALL(q, q->backend, queue_fd);
}
static inline int backend_queue_register_buffers(struct backend_queue *q,
						 const struct iovec *iov, unsigned n)
{
	return BACKEND_CALL(q, q->backend, queue_register_buffers, iov, n);
}
static inline int backend_queue_read(struct backend_queue *q, struct backend_io *io)
{
	return BACKEND_CALL(q, q->backend, queue_read, io);
}
static inline int backend_queue_write(struct backend_queue *q, struct backend_io *io)
{
	return BACKEND_CALL(q, q->backend, queue_write, io);
}
static inline int backend_submit(struct backend_queue *q)
{
	return BACKEND_CALL(q, q->backend, submit);
}
static inline int backend_reap(struct backend_queue *q, struct backend_io **done, unsigned max,
			       unsigned min)
{
	return BACKEND_CALL(q, q->backend, reap, done, max, min);
}
/* For backends whose queue_fd is an eventfd: consume its count, so that it
 * turns readable again only for completions that come after. Call it when
 * a reap found the queue empty, then look once more. */
static inline void backend_eventfd_clear(int efd)
{
	uint64_t v;

	if (read(efd, &v, sizeof(v)) < 0) {
		/* EAGAIN: nothing was signalled. */
	}
}

static inline void backend_close(struct backend *b)
{
	if (b && b->ops->close)
		b->ops->close(b);
}

#endif /* UPG_BACKEND_H */
