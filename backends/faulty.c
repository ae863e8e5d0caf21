/* faulty.c - see faulty.h. */
#include "faulty.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

struct faulty {
	struct backend base;
	struct backend *inner;
	pthread_mutex_t lock;     /* rules, seen, fired */
	unsigned nrules;
	struct faulty_rule rules[FAULTY_MAX_RULES];
	uint64_t seen[FAULTY_MAX_RULES];  /* operations each rule matched */
	uint64_t fired;
};

/* What a rule does to one operation; kept for an I/O until it is reaped. */
struct verdict {
	bool fire;
	enum faulty_action action;
	int err;
	uint32_t offset;
	struct backend_io *io;
};

struct faulty_queue {
	struct backend_queue base;
	struct backend_queue *inner;
	unsigned depth, nmarked;
	struct verdict marked[];  /* depth entries: at most one per I/O in flight */
};

static struct faulty *to_faulty(struct backend *b)
{
	return container_of(b, struct faulty, base);
}

static struct faulty_queue *to_queue(struct backend_queue *q)
{
	return container_of(q, struct faulty_queue, base);
}

/* Count the operation against every rule it matches; the first one due
 * fires. */
static struct verdict decide(struct faulty *f, unsigned what, uint64_t slot)
{
	struct verdict v = { .fire = false };

	pthread_mutex_lock(&f->lock);
	for (unsigned i = 0; i < f->nrules; i++) {
		const struct faulty_rule *r = &f->rules[i];
		uint64_t n;

		if (!(r->match & what) ||
		    (what != FAULTY_ALLOC && r->slot != FAULTY_ANY_SLOT && r->slot != slot))
			continue;
		n = f->seen[i]++;
		if (v.fire || n < r->skip || (r->count && n - r->skip >= r->count))
			continue;
		v = (struct verdict){ true, r->action, r->err, r->offset, NULL };
	}
	f->fired += v.fire;
	pthread_mutex_unlock(&f->lock);
	return v;
}

static int fq_queue(struct backend_queue *bq, struct backend_io *io, unsigned what)
{
	struct faulty_queue *q = to_queue(bq);
	struct verdict v;
	int ret;

	if (q->nmarked == q->depth)
		return -EAGAIN;
	ret = what == FAULTY_READ ? backend_queue_read(q->inner, io)
				  : backend_queue_write(q->inner, io);
	if (ret)
		return ret;
	/* Decided only once queued, so a retried -EAGAIN counts once. */
	v = decide(to_faulty(bq->backend), what, io->slot);
	if (v.fire) {
		v.io = io;
		q->marked[q->nmarked++] = v;
	}
	return 0;
}

static int fq_queue_read(struct backend_queue *q, struct backend_io *io)
{
	return fq_queue(q, io, FAULTY_READ);
}

static int fq_queue_write(struct backend_queue *q, struct backend_io *io)
{
	return fq_queue(q, io, FAULTY_WRITE);
}

static void apply(struct faulty_queue *q, struct backend_io *io)
{
	uint32_t len = q->base.backend->page_size;

	for (unsigned i = 0; i < q->nmarked; i++) {
		struct verdict *v = &q->marked[i];

		if (v->io != io)
			continue;
		if (v->action == FAULTY_FAIL) {
			io->result = v->err;
		} else if (io->result == (int32_t)len) {
			/* The inner backend checked the crc already: check again,
			 * the same way, after the damage. */
			((unsigned char *)io->buf)[v->offset] ^= 0xff;
			if (crc32c(0, io->buf, len) != io->crc)
				io->result = -EBADMSG;
		}
		*v = q->marked[--q->nmarked];
		return;
	}
}

static int fq_reap(struct backend_queue *bq, struct backend_io **done, unsigned max, unsigned min)
{
	struct faulty_queue *q = to_queue(bq);
	int n = backend_reap(q->inner, done, max, min);

	for (int i = 0; i < n && q->nmarked; i++)
		apply(q, done[i]);
	return n;
}

static int fq_submit(struct backend_queue *bq)
{
	return backend_submit(to_queue(bq)->inner);
}

static int fq_queue_fd(struct backend_queue *bq)
{
	return backend_queue_fd(to_queue(bq)->inner);
}

static int fq_queue_register_buffers(struct backend_queue *bq, const struct iovec *iov,
				     unsigned n)
{
	return backend_queue_register_buffers(to_queue(bq)->inner, iov, n);
}

static void fq_queue_close(struct backend_queue *bq)
{
	struct faulty_queue *q = to_queue(bq);

	backend_queue_close(q->inner);
	free(q);
}

static int fq_queue_open(struct backend *b, unsigned depth, struct backend_queue **out)
{
	struct faulty_queue *q;
	int ret;

	if (!depth)
		return -EINVAL;
	q = calloc(1, sizeof(*q) + depth * sizeof(q->marked[0]));
	if (!q)
		return -ENOMEM;
	ret = backend_queue_open(to_faulty(b)->inner, depth, &q->inner);
	if (ret) {
		free(q);
		return ret;
	}
	q->base.backend = b;
	q->depth = depth;
	*out = &q->base;
	return 0;
}

static int fq_alloc_slots(struct backend *b, unsigned n, uint64_t *slots)
{
	struct faulty *f = to_faulty(b);
	struct verdict v = decide(f, FAULTY_ALLOC, FAULTY_ANY_SLOT);

	if (v.fire)
		return v.err;
	return backend_alloc_slots(f->inner, n, slots);
}

static void fq_free_slots(struct backend *b, const uint64_t *slots, unsigned n)
{
	backend_free_slots(to_faulty(b)->inner, slots, n);
}

static int fq_discard(struct backend *b, const uint64_t *slots, unsigned n)
{
	return backend_discard(to_faulty(b)->inner, slots, n);
}

static void fq_close(struct backend *b)
{
	struct faulty *f = to_faulty(b);

	backend_close(f->inner);
	pthread_mutex_destroy(&f->lock);
	free(f);
}

static const struct backend_ops faulty_ops = {
	.name = "faulty",
	.close = fq_close,
	.queue_open = fq_queue_open,
	.queue_close = fq_queue_close,
	.queue_fd = fq_queue_fd,
	.queue_register_buffers = fq_queue_register_buffers,
	.alloc_slots = fq_alloc_slots,
	.free_slots = fq_free_slots,
	.queue_read = fq_queue_read,
	.queue_write = fq_queue_write,
	.submit = fq_submit,
	.reap = fq_reap,
	.discard = fq_discard,
};

static bool rule_ok(const struct faulty_rule *r, uint32_t page_size)
{
	if (!r->match || (r->match & ~(unsigned)(FAULTY_READ | FAULTY_WRITE | FAULTY_ALLOC)))
		return false;
	if (r->action == FAULTY_CORRUPT)
		return r->match == FAULTY_READ && r->offset < page_size;
	/* An I/O that "fails" with a result >= 0 would pass for a success. */
	return r->action == FAULTY_FAIL &&
	       (r->match == FAULTY_ALLOC ? r->err <= 0 : r->err < 0);
}

int faulty_set(struct backend *b, const struct faulty_rule *rules, unsigned n)
{
	struct faulty *f = to_faulty(b);

	if (n > FAULTY_MAX_RULES)
		return -EINVAL;
	for (unsigned i = 0; i < n; i++)
		if (!rule_ok(&rules[i], b->page_size))
			return -EINVAL;
	pthread_mutex_lock(&f->lock);
	for (unsigned i = 0; i < n; i++) {
		f->rules[i] = rules[i];
		f->seen[i] = 0;
	}
	f->nrules = n;
	pthread_mutex_unlock(&f->lock);
	return 0;
}

uint64_t faulty_fired(struct backend *b)
{
	struct faulty *f = to_faulty(b);
	uint64_t n;

	pthread_mutex_lock(&f->lock);
	n = f->fired;
	pthread_mutex_unlock(&f->lock);
	return n;
}

int faulty_open(struct backend *inner, const struct faulty_rule *rules, unsigned n,
		struct backend **out)
{
	struct faulty *f = calloc(1, sizeof(*f));
	int ret;

	if (!f) {
		backend_close(inner);
		return -ENOMEM;
	}
	f->base.ops = &faulty_ops;
	f->base.page_size = inner->page_size;
	f->inner = inner;
	pthread_mutex_init(&f->lock, NULL);
	ret = faulty_set(&f->base, rules, n);
	if (ret) {
		fq_close(&f->base);
		return ret;
	}
	*out = &f->base;
	return 0;
}
