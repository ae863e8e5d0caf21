/* swapfile.c - see swapfile.h. */
#define LOG_PREFIX "swapfile: "
#include "swapfile.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <liburing.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "fd.h"
#include "log.h"
#include "uring_queue.h"

struct swap_file {
	uint64_t pages;
	char *path;             /* set if we created it: removed at close */
	dev_t dev;
	ino_t ino;
};

struct swapfile {
	struct backend base;
	struct swap_alloc *alloc;   /* over files nforeign.. (its file j is ours j + nforeign) */
	unsigned nfiles;
	/* Files 0..nforeign-1 are a forking parent's (swapfile_config.inherit):
	 * read at the slots the parent gave its pages, never allocated from,
	 * freed or punched. */
	unsigned nforeign;
	unsigned files_buffered;
	int fds[SWAP_MAX_FILES];  /* -1 until opened; registered with each ring */
	struct swap_file files[SWAP_MAX_FILES];
	_Atomic uint64_t holes_punched, punch_errors;
	_Atomic uint64_t transfers, requests;
};

/* A registered buffer: [base, end) is buffer `index` of the ring. */
struct fixed_buf {
	uintptr_t base, end;
	unsigned index;
};

/*
 * Transfers to consecutive pages of one file, queued one after the other
 * before a submit, go to the device as one request: the SQE of the first
 * becomes a readv/writev over all their buffers (a group). Pages evicted
 * together have consecutive slots, and so do the pages read ahead of a
 * sequential stream.
 */
#define GROUP_MAX 64u

struct io_group {
	unsigned n;
	struct backend_io *ios[GROUP_MAX];
	struct iovec iov[GROUP_MAX];
};

struct swap_queue {
	struct backend_queue base;
	struct uring_queue u;
	unsigned unsubmitted;   /* queued since the last submit */
	unsigned nbufs;
	struct fixed_buf *bufs; /* sorted by base, disjoint */

	/* The last SQE prepared and not yet submitted, for merging. */
	struct io_uring_sqe *last;
	struct backend_io *last_io;     /* its I/O, if not a group yet */
	struct io_group *last_group;
	unsigned last_file;
	uint64_t last_end;              /* file offset just past it */
	bool last_write;

	struct io_group *groups;        /* depth / 2 of them */
	struct io_group **free_groups;
	unsigned nfree_groups;
	/* Settled I/Os not yet handed out by reap (a group settles at once). */
	struct backend_io **ready;
	unsigned ready_head, ready_tail;
};

/* Tags in the low bits of a CQE's user_data (a struct backend_io or struct
 * io_group pointer). */
#define UD_READ 1ull
#define UD_GROUP 2ull
#define UD_TAGS 3ull

static struct swapfile *to_swapfile(struct backend *b)
{
	return container_of(b, struct swapfile, base);
}

static struct swap_queue *to_queue(struct backend_queue *q)
{
	return container_of(q, struct swap_queue, base);
}

static const struct fixed_buf *find_buf(const struct swap_queue *q, const void *buf, size_t len)
{
	uintptr_t a = (uintptr_t)buf;
	unsigned lo = 0, hi = q->nbufs;

	/* The last buffer starting at or below a. */
	while (lo < hi) {
		unsigned mid = lo + (hi - lo) / 2;

		if (q->bufs[mid].base <= a)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo && a + len <= q->bufs[lo - 1].end ? &q->bufs[lo - 1] : NULL;
}

/* Nothing prepared may change once submitted. Returns how many I/Os were
 * queued since the last submit. */
static unsigned submitted(struct swap_queue *q)
{
	struct swapfile *s = to_swapfile(q->base.backend);
	unsigned n = q->unsubmitted;

	atomic_fetch_add_explicit(&s->transfers, n, memory_order_relaxed);
	atomic_fetch_add_explicit(&s->requests, io_uring_sq_ready(&q->u.ring), memory_order_relaxed);
	q->last = NULL;
	q->unsubmitted = 0;
	return n;
}

/* Fold io (at byte offset off of file fi) into the last SQE if it is the
 * next transfer of the same kind to the same file. */
static bool merge(struct swap_queue *q, struct backend_io *io, unsigned fi, uint64_t off,
		  bool write)
{
	uint32_t len = q->base.backend->page_size;
	struct io_group *g = q->last_group;

	if (!q->last || q->last_file != fi || q->last_write != write || q->last_end != off ||
	    (g && g->n == GROUP_MAX))
		return false;
	if (!g) {
		struct backend_io *first = q->last_io;

		if (!q->nfree_groups)
			return false;
		g = q->free_groups[--q->nfree_groups];
		g->n = 1;
		g->ios[0] = first;
		g->iov[0] = (struct iovec){ first->buf, len };
		if (write)
			io_uring_prep_writev(q->last, (int)fi, g->iov, 1, off - len);
		else
			io_uring_prep_readv(q->last, (int)fi, g->iov, 1, off - len);
		q->last->flags |= IOSQE_FIXED_FILE;
		io_uring_sqe_set_data64(q->last, (uintptr_t)g | UD_GROUP | (write ? 0 : UD_READ));
		q->last_group = g;
	}
	g->ios[g->n] = io;
	g->iov[g->n] = (struct iovec){ io->buf, len };
	g->n++;
	q->last->len = g->n;    /* readv/writev: the number of iovecs */
	q->last_end = off + len;
	return true;
}

static int queue_io(struct backend_queue *bq, struct backend_io *io, bool write)
{
	struct swap_queue *q = to_queue(bq);
	struct swapfile *s = to_swapfile(bq->backend);
	unsigned fi = swap_slot_file(io->slot);
	uint64_t page = swap_slot_page(io->slot);
	uint32_t len = s->base.page_size;
	const struct fixed_buf *fb;
	struct io_uring_sqe *sqe;

	if (fi >= s->nfiles || page >= s->files[fi].pages)
		return -EINVAL;
	if (q->u.outstanding == q->u.depth)
		return -EAGAIN;
	if (write)
		io->crc = crc32c(0, io->buf, len);
	if (merge(q, io, fi, page * len, write)) {
		q->u.outstanding++;
		q->unsubmitted++;
		return 0;
	}
	sqe = io_uring_get_sqe(&q->u.ring);
	if (!sqe)
		return -EAGAIN;
	fb = find_buf(q, io->buf, len);
	if (write) {
		if (fb)
			io_uring_prep_write_fixed(sqe, (int)fi, io->buf, len, page * len, (int)fb->index);
		else
			io_uring_prep_write(sqe, (int)fi, io->buf, len, page * len);
	} else {
		if (fb)
			io_uring_prep_read_fixed(sqe, (int)fi, io->buf, len, page * len, (int)fb->index);
		else
			io_uring_prep_read(sqe, (int)fi, io->buf, len, page * len);
	}
	sqe->flags |= IOSQE_FIXED_FILE;
	io_uring_sqe_set_data64(sqe, (uintptr_t)io | (write ? 0 : UD_READ));
	q->u.outstanding++;
	q->unsubmitted++;
	q->last = sqe;
	q->last_io = io;
	q->last_group = NULL;
	q->last_file = fi;
	q->last_end = (page + 1) * len;
	q->last_write = write;
	return 0;
}

BACKEND_DEFINE_QUEUE_RW(sf, queue_io)

static int sf_submit(struct backend_queue *bq)
{
	struct swap_queue *q = to_queue(bq);
	unsigned n = submitted(q);
	int ret = io_uring_submit(&q->u.ring);

	return ret < 0 ? ret : (int)n;
}

/* The result of page k of a transfer that moved res bytes (or failed). */
static void settle(struct swap_queue *q, struct backend_io *io, int res, unsigned k, bool read)
{
	uint32_t len = q->base.backend->page_size;

	if (res < 0)
		io->result = res;
	else if ((uint64_t)res < (uint64_t)(k + 1) * len)
		io->result = -EIO;  /* short: the file was truncated under us */
	else if (read && crc32c(0, io->buf, len) != io->crc)
		io->result = -EBADMSG;
	else
		io->result = (int32_t)len;
	q->ready[q->ready_tail++ % q->u.depth] = io;
}

/* Settle what has completed, then hand out up to max I/Os. */
static unsigned harvest(struct swap_queue *q, struct backend_io **done, unsigned max)
{
	struct io_uring_cqe *cqe;
	unsigned head, seen = 0, n = 0;

	io_uring_for_each_cqe(&q->u.ring, head, cqe) {
		uintptr_t ud = (uintptr_t)cqe->user_data;
		bool read = ud & UD_READ;

		if (ud & UD_GROUP) {
			struct io_group *g = (struct io_group *)(ud & ~UD_TAGS);

			for (unsigned k = 0; k < g->n; k++)
				settle(q, g->ios[k], cqe->res, k, read);
			q->free_groups[q->nfree_groups++] = g;
		} else {
			settle(q, (struct backend_io *)(ud & ~UD_TAGS), cqe->res, 0, read);
		}
		seen++;
	}
	io_uring_cq_advance(&q->u.ring, seen);
	while (n < max && q->ready_head != q->ready_tail)
		done[n++] = q->ready[q->ready_head++ % q->u.depth];
	q->u.outstanding -= n;
	return n;
}

static unsigned uring_harvest(struct uring_queue *u, struct backend_io **done, unsigned max)
{
	return harvest(container_of(u, struct swap_queue, u), done, max);
}

static int uring_submitted(struct uring_queue *u)
{
	submitted(container_of(u, struct swap_queue, u));
	return 0;
}

static int sf_reap(struct backend_queue *bq, struct backend_io **done, unsigned max, unsigned min)
{
	return uring_queue_reap(&to_queue(bq)->u, done, max, min, uring_harvest, uring_submitted);
}

static int sf_queue_fd(struct backend_queue *bq)
{
	return to_queue(bq)->u.efd;
}

static int cmp_buf(const void *a, const void *b)
{
	const struct fixed_buf *x = a, *y = b;

	return x->base < y->base ? -1 : x->base > y->base;
}

static int sf_queue_register_buffers(struct backend_queue *bq, const struct iovec *iov,
				     unsigned n)
{
	struct swap_queue *q = to_queue(bq);
	struct fixed_buf *bufs;
	int ret;

	if (q->nbufs)
		return -EBUSY;
	if (!n)
		return -EINVAL;
	bufs = calloc(n, sizeof(*bufs));
	if (!bufs)
		return -ENOMEM;
	for (unsigned i = 0; i < n; i++)
		bufs[i] = (struct fixed_buf){ (uintptr_t)iov[i].iov_base,
					      (uintptr_t)iov[i].iov_base + iov[i].iov_len, i };
	qsort(bufs, n, sizeof(*bufs), cmp_buf);
	for (unsigned i = 1; i < n; i++) {
		if (bufs[i].base < bufs[i - 1].end) {
			free(bufs);
			return -EINVAL;
		}
	}
	ret = io_uring_register_buffers(&q->u.ring, iov, n);
	if (ret < 0) {
		free(bufs);
		return ret;
	}
	q->bufs = bufs;
	q->nbufs = n;
	return 0;
}

static void sf_queue_close(struct backend_queue *bq)
{
	struct swap_queue *q = to_queue(bq);

	/* Wait for what is in flight: no transfer may touch the caller's
	 * buffers once this returns. Its results are dropped. */
	while (q->u.outstanding) {
		struct backend_io *done[GROUP_MAX];
		int ret;

		if (harvest(q, done, GROUP_MAX))
			continue;
		submitted(q);
		ret = io_uring_submit_and_wait(&q->u.ring, 1);
		if (ret < 0 && ret != -EINTR)
			break;
	}
	uring_queue_exit(&q->u);
	free(q->bufs);
	free(q->groups);
	free(q->free_groups);
	free(q->ready);
	free(q);
}

static int sf_queue_open(struct backend *b, unsigned depth, struct backend_queue **out)
{
	struct swapfile *s = to_swapfile(b);
	struct swap_queue *q;
	int ret;

	if (!depth)
		return -EINVAL;
	q = calloc(1, sizeof(*q));
	if (!q)
		return -ENOMEM;
	q->base.backend = b;
	q->nfree_groups = depth / 2;
	q->groups = calloc(q->nfree_groups, sizeof(*q->groups));
	q->free_groups = calloc(q->nfree_groups, sizeof(*q->free_groups));
	q->ready = calloc(depth, sizeof(*q->ready));
	ret = -ENOMEM;
	if (!q->ready || (q->nfree_groups && (!q->groups || !q->free_groups)) ||
	    (ret = uring_queue_init(&q->u, depth)) < 0) {
		free(q->groups);
		free(q->free_groups);
		free(q->ready);
		free(q);
		return ret;
	}
	for (unsigned i = 0; i < q->nfree_groups; i++)
		q->free_groups[i] = &q->groups[i];
	ret = io_uring_register_files(&q->u.ring, s->fds, s->nfiles);
	if (ret < 0) {
		pr_perr(ret, "io_uring registration");
		sf_queue_close(&q->base);
		return ret;
	}
	*out = &q->base;
	return 0;
}

static int sf_alloc_slots(struct backend *b, unsigned n, uint64_t *slots)
{
	struct swapfile *s = to_swapfile(b);
	unsigned got = swap_alloc_get(s->alloc, n > INT_MAX ? INT_MAX : n, slots);

	for (unsigned i = 0; i < got; i++)
		slots[i] += swap_slot(s->nforeign, 0);
	return (int)got;
}

/* Of slots[0..n), those of our own files, as the allocator numbers them,
 * into own[] (at most SWAP_HOLD_MAX); returns how many of slots[] it took. */
static unsigned own_slots(const struct swapfile *s, const uint64_t *slots, unsigned n,
			  uint64_t *own, unsigned *nown)
{
	unsigned i;

	*nown = 0;
	for (i = 0; i < n && *nown < SWAP_HOLD_MAX; i++)
		if (swap_slot_file(slots[i]) >= s->nforeign)
			own[(*nown)++] = slots[i] - swap_slot(s->nforeign, 0);
	return i;
}

static void sf_free_slots(struct backend *b, const uint64_t *slots, unsigned n)
{
	struct swapfile *s = to_swapfile(b);
	uint64_t own[SWAP_HOLD_MAX];
	unsigned took, nown;

	for (; n; slots += took, n -= took) {
		took = own_slots(s, slots, n, own, &nown);
		swap_alloc_free(s->alloc, own, nown, NULL);
	}
}

/* Punch the holes of the held clusters, adjacent ones in one call. */
static void punch_held(struct swapfile *s, const struct swap_hold *h)
{
	uint64_t cbytes = (uint64_t)s->base.page_size * SWAP_CLUSTER_SLOTS;
	unsigned i, j;

	for (i = 0; i < h->n; i = j) {
		for (j = i + 1; j < h->n && h->c[j].file == h->c[i].file &&
				h->c[j].cluster == h->c[j - 1].cluster + 1;
		     j++)
			;
		/* Not every filesystem can punch holes: the space stays used,
		 * nothing else goes wrong. */
		if (fallocate(s->fds[s->nforeign + h->c[i].file], FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
			      (off_t)(h->c[i].cluster * cbytes), (off_t)((j - i) * cbytes)))
			atomic_fetch_add_explicit(&s->punch_errors, 1, memory_order_relaxed);
		else
			atomic_fetch_add_explicit(&s->holes_punched, 1, memory_order_relaxed);
	}
}

static int sf_discard(struct backend *b, const uint64_t *slots, unsigned n)
{
	struct swapfile *s = to_swapfile(b);
	struct swap_hold hold = { 0 };
	uint64_t own[SWAP_HOLD_MAX];
	unsigned took, nown;

	/* Emptied clusters are held out of the allocator while their holes are
	 * punched, so no slot handed out meanwhile loses its data. */
	for (; n; slots += took, n -= took) {
		const uint64_t *o = own;

		took = own_slots(s, slots, n, own, &nown);
		while (nown) {
			unsigned done = swap_alloc_free(s->alloc, o, nown, &hold);

			o += done;
			nown -= done;
			if (nown) {     /* hold is full */
				punch_held(s, &hold);
				swap_alloc_release(s->alloc, &hold);
			}
		}
	}
	punch_held(s, &hold);
	swap_alloc_release(s->alloc, &hold);
	return 0;
}

static void sf_close(struct backend *b)
{
	struct swapfile *s = to_swapfile(b);

	for (unsigned i = 0; i < s->nfiles; i++) {
		struct swap_file *f = &s->files[i];
		struct stat st;

		/* Only if the path still names our file. */
		if (f->path && !stat(f->path, &st) && st.st_dev == f->dev && st.st_ino == f->ino)
			unlink(f->path);
		free(f->path);
		if (s->fds[i] >= 0)
			close(s->fds[i]);
	}
	swap_alloc_destroy(s->alloc);
	free(s);
}

static const struct backend_ops swapfile_ops = {
	.name = "swapfile",
	.close = sf_close,
	.queue_open = sf_queue_open,
	.queue_close = sf_queue_close,
	.queue_fd = sf_queue_fd,
	.queue_register_buffers = sf_queue_register_buffers,
	.alloc_slots = sf_alloc_slots,
	.free_slots = sf_free_slots,
	.queue_read = sf_queue_read,
	.queue_write = sf_queue_write,
	.submit = sf_submit,
	.reap = sf_reap,
	.discard = sf_discard,
};

/* Open (create, or truncate) file i and preallocate size bytes. On error
 * the caller's sf_close() closes the fd and removes what was created. */
static int file_open(struct swapfile *s, unsigned i, const char *path, uint64_t size)
{
	struct swap_file *f = &s->files[i];
	bool created = false;
	struct stat st;
	int fd, ret;

	if (!stat(path, &st) && S_ISDIR(st.st_mode)) {
		fd = open(path, O_RDWR | O_TMPFILE | O_CLOEXEC, 0600);
	} else {
		fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		created = fd >= 0;
		if (fd < 0 && errno == EEXIST)
			fd = open(path, O_RDWR | O_TRUNC | O_CLOEXEC);
	}
	if (fd < 0) {
		ret = -errno;
		pr_perr(ret, "%s", path);
		return ret;
	}
	fd = fd_high(fd);
	s->fds[i] = fd;
	if (fstat(fd, &st))
		return -errno;
	f->dev = st.st_dev;
	f->ino = st.st_ino;
	if (created && !(f->path = strdup(path))) {
		unlink(path);
		return -ENOMEM;
	}
	if (!S_ISREG(st.st_mode)) {
		pr_err("%s: not a regular file", path);
		return -EINVAL;
	}
	/* Swapped-out memory is nobody else's business, whatever the umask or
	 * an existing file's mode said. */
	if (fchmod(fd, 0600)) {
		ret = -errno;
		pr_perr(ret, "%s: chmod 0600", path);
		return ret;
	}
	/* Set after open: open(O_CREAT|O_DIRECT) creates the file even when it
	 * then fails with EINVAL. */
	if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_DIRECT)) {
		if (errno != EINVAL)
			return -errno;
		pr_warn("%s: the filesystem has no O_DIRECT, using buffered I/O", path);
		s->files_buffered++;
	}
	/* Reserve the blocks now, so that a full disk fails here rather than
	 * at some write much later; without fallocate, the file stays sparse.
	 * tmpfs gives up with EINTR whenever a signal is pending: go again. */
	do
		ret = fallocate(fd, 0, 0, (off_t)size) ? -errno : 0;
	while (ret == -EINTR);
	if (ret && (ret != -EOPNOTSUPP || ftruncate(fd, (off_t)size))) {
		ret = -errno;
		pr_perr(ret, "%s: cannot allocate %llu bytes", path, (unsigned long long)size);
		if (!created && ftruncate(fd, 0)) {
			/* Best effort: blocks fallocate got before failing. */
		}
		return ret;
	}
	f->pages = size / s->base.page_size;
	return 0;
}

int swapfile_open(const struct swapfile_config *cfg, struct backend **out)
{
	const struct swapfile *parent = cfg && cfg->inherit ? to_swapfile(cfg->inherit) : NULL;
	unsigned nforeign = parent ? parent->nfiles : 0;
	uint32_t clusters[SWAP_MAX_FILES];
	int prio[SWAP_MAX_FILES];
	uint64_t cbytes;
	struct swapfile *s;
	int ret;

	if (!cfg || !cfg->page_size || cfg->page_size % 4096 || cfg->page_size > (1u << 30) ||
	    !cfg->count || cfg->count > SWAP_MAX_FILES - nforeign || !cfg->files ||
	    (parent && parent->base.page_size != cfg->page_size)) {
		pr_err("bad configuration: page size %u, %u files", cfg ? cfg->page_size : 0,
		       cfg ? cfg->count : 0);
		return -EINVAL;
	}
	cbytes = (uint64_t)cfg->page_size * SWAP_CLUSTER_SLOTS;
	for (unsigned i = 0; i < cfg->count; i++) {
		const struct swapfile_spec *sp = &cfg->files[i];

		if (!sp->path || sp->size < cbytes || sp->size / cbytes >= UINT32_MAX) {
			pr_err("%s: size %llu is not between one cluster (%llu) and 2^32 clusters",
			       sp->path ? sp->path : "(null)", (unsigned long long)sp->size,
			       (unsigned long long)cbytes);
			return -EINVAL;
		}
		clusters[i] = (uint32_t)(sp->size / cbytes);
		prio[i] = sp->priority;
	}
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->base.ops = &swapfile_ops;
	s->base.page_size = cfg->page_size;
	s->nfiles = nforeign + cfg->count;
	s->nforeign = nforeign;
	for (unsigned i = 0; i < s->nfiles; i++)
		s->fds[i] = -1;
	for (unsigned i = 0; i < nforeign; i++) {
		/* The same open file (O_DIRECT or not), ours to close. */
		s->fds[i] = fd_high(fcntl(parent->fds[i], F_DUPFD_CLOEXEC, 0));
		if (s->fds[i] < 0) {
			ret = -errno;
			goto fail;
		}
		s->files[i] = (struct swap_file){ .pages = parent->files[i].pages,
						  .dev = parent->files[i].dev,
						  .ino = parent->files[i].ino };
	}
	for (unsigned i = 0; i < cfg->count; i++) {
		ret = file_open(s, nforeign + i, cfg->files[i].path, clusters[i] * cbytes);
		if (ret)
			goto fail;
	}
	ret = swap_alloc_create(cfg->count, clusters, prio, &s->alloc);
	if (ret)
		goto fail;
	*out = &s->base;
	return 0;
fail:
	sf_close(&s->base);
	return ret;
}

unsigned swapfile_nfiles(struct backend *b)
{
	return to_swapfile(b)->nfiles;
}

void swapfile_get_stats(struct backend *b, struct swapfile_stats *st)
{
	struct swapfile *s = to_swapfile(b);
	struct swap_alloc_usage u;

	swap_alloc_get_usage(s->alloc, &u);
	st->slots_total = u.slots_total;
	st->slots_used = u.slots_used;
	st->clusters_free = u.clusters_free;
	st->bad_frees = u.bad_frees;
	st->holes_punched = atomic_load_explicit(&s->holes_punched, memory_order_relaxed);
	st->punch_errors = atomic_load_explicit(&s->punch_errors, memory_order_relaxed);
	st->files_buffered = s->files_buffered;
	st->transfers = atomic_load_explicit(&s->transfers, memory_order_relaxed);
	st->requests = atomic_load_explicit(&s->requests, memory_order_relaxed);
}
