/* datafile.c - see datafile.h. */
#define LOG_PREFIX "datafile: "
#include "datafile.h"

#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fd.h"
#include "log.h"
#include "uring_queue.h"

struct data_file {
	_Atomic int fd;         /* -1: free */
	uint64_t offset;
	bool rdonly;            /* held the whole range when attached */
};

struct datafile {
	struct backend base;
	pthread_mutex_t lock;   /* attach and detach */
	struct data_file files[DATAFILE_MAX_FILES];
};

struct data_queue {
	struct backend_queue base;
	struct uring_queue u;
};

static struct datafile *to_datafile(struct backend *b)
{
	return container_of(b, struct datafile, base);
}

static struct data_queue *to_queue(struct backend_queue *q)
{
	return container_of(q, struct data_queue, base);
}

static int df_queue_io(struct backend_queue *bq, struct backend_io *io, bool write)
{
	struct data_queue *q = to_queue(bq);
	struct datafile *d = to_datafile(bq->backend);
	unsigned fi = (unsigned)((io->slot & ~DATAFILE_SLOT_TAG) >> DATAFILE_FILE_SHIFT);
	uint64_t page = io->slot & (DATAFILE_MAX_PAGES - 1);
	uint32_t len = d->base.page_size;
	struct io_uring_sqe *sqe;
	uint64_t off;
	int fd;

	if (!datafile_slot_is_file(io->slot) || fi >= DATAFILE_MAX_FILES)
		return -EINVAL;
	fd = atomic_load_explicit(&d->files[fi].fd, memory_order_acquire);
	if (fd < 0)
		return -EBADF;
	if (q->u.outstanding == q->u.depth || !(sqe = io_uring_get_sqe(&q->u.ring)))
		return -EAGAIN;
	off = d->files[fi].offset + page * len;
	if (write)
		io_uring_prep_write(sqe, fd, io->buf, len, off);
	else
		io_uring_prep_read(sqe, fd, io->buf, len, off);
	io_uring_sqe_set_data64(sqe, (uintptr_t)io | (write ? 0 : 1));
	q->u.outstanding++;
	return 0;
}

BACKEND_DEFINE_QUEUE_RW(df, df_queue_io)

static int df_submit(struct backend_queue *bq)
{
	return io_uring_submit(&to_queue(bq)->u.ring);
}

/* Up to max completions into done[]. A read short of a page hit the end of
 * the file: the rest of the page reads as zeros, unless the file is
 * read-only (it held the whole range when attached: it was truncated under
 * us, -EIO). A short write failed. */
static unsigned df_harvest(struct uring_queue *u, struct backend_io **done, unsigned max)
{
	struct data_queue *q = container_of(u, struct data_queue, u);
	struct datafile *d = to_datafile(q->base.backend);
	uint32_t len = q->base.backend->page_size;
	struct io_uring_cqe *cqe;
	unsigned n = 0;

	while (n < max && io_uring_peek_cqe(&q->u.ring, &cqe) == 0) {
		struct backend_io *io = (struct backend_io *)(uintptr_t)(cqe->user_data & ~1ull);
		bool read = cqe->user_data & 1;

		unsigned fi = (unsigned)((io->slot & ~DATAFILE_SLOT_TAG) >> DATAFILE_FILE_SHIFT);

		if (cqe->res < 0) {
			io->result = cqe->res;
		} else if ((uint32_t)cqe->res < len && read && d->files[fi].rdonly) {
			io->result = -EIO;
		} else if ((uint32_t)cqe->res < len && read) {
			memset((char *)io->buf + cqe->res, 0, len - (uint32_t)cqe->res);
			io->result = (int32_t)len;
		} else {
			io->result = (uint32_t)cqe->res < len ? -EIO : (int32_t)len;
		}
		io_uring_cqe_seen(&q->u.ring, cqe);
		done[n++] = io;
	}
	q->u.outstanding -= n;
	return n;
}

static int df_reap(struct backend_queue *bq, struct backend_io **done, unsigned max, unsigned min)
{
	return uring_queue_reap(&to_queue(bq)->u, done, max, min, df_harvest, NULL);
}

static int df_queue_fd(struct backend_queue *bq)
{
	return to_queue(bq)->u.efd;
}

static void df_queue_close(struct backend_queue *bq)
{
	struct data_queue *q = to_queue(bq);
	struct backend_io *done[64];

	while (q->u.outstanding && df_reap(bq, done, 64, 1) >= 0)
		;
	uring_queue_exit(&q->u);
	free(q);
}

static int df_queue_open(struct backend *b, unsigned depth, struct backend_queue **out)
{
	struct data_queue *q;
	int ret;

	if (!depth)
		return -EINVAL;
	q = calloc(1, sizeof(*q));
	if (!q)
		return -ENOMEM;
	q->base.backend = b;
	ret = uring_queue_init(&q->u, depth);
	if (ret < 0) {
		free(q);
		return ret;
	}
	*out = &q->base;
	return 0;
}

static void df_close(struct backend *b)
{
	struct datafile *d = to_datafile(b);

	for (unsigned i = 0; i < DATAFILE_MAX_FILES; i++)
		datafile_detach(b, i);
	pthread_mutex_destroy(&d->lock);
	free(d);
}

static const struct backend_ops datafile_ops = {
	.name = "datafile",
	.close = df_close,
	.queue_open = df_queue_open,
	.queue_close = df_queue_close,
	.queue_fd = df_queue_fd,
	.queue_read = df_queue_read,
	.queue_write = df_queue_write,
	.submit = df_submit,
	.reap = df_reap,
	/* Fixed layout: no alloc_slots, free_slots, discard. */
};

int datafile_open(uint32_t page_size, struct backend **out)
{
	struct datafile *d;

	if (!page_size || page_size % 4096)
		return -EINVAL;
	d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	d->base.ops = &datafile_ops;
	d->base.page_size = page_size;
	pthread_mutex_init(&d->lock, NULL);
	for (unsigned i = 0; i < DATAFILE_MAX_FILES; i++)
		atomic_init(&d->files[i].fd, -1);
	*out = &d->base;
	return 0;
}

static int open_file(const char *path, uint64_t end, bool rdonly, bool create)
{
	int fd = fd_high(open(path, (rdonly ? O_RDONLY : O_RDWR) |
				      (create && !rdonly ? O_CREAT : 0) | O_CLOEXEC, 0644));
	struct stat st;
	int ret;

	if (fd < 0) {
		ret = -errno;
		pr_perr(ret, "%s", path);
		return ret;
	}
	if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
		pr_err("%s: not a regular file", path);
		close(fd);
		return -EINVAL;
	}
	if (rdonly && (uint64_t)st.st_size < end) {
		pr_err("%s: %llu bytes, too short for a read-only mapping up to %llu", path,
		       (unsigned long long)st.st_size, (unsigned long long)end);
		close(fd);
		return -EINVAL;
	}
	/* Set after open: open(O_CREAT|O_DIRECT) creates the file even when it
	 * then fails with EINVAL. */
	if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_DIRECT)) {
		if (errno != EINVAL) {
			ret = -errno;
			close(fd);
			return ret;
		}
		pr_warn("%s: the filesystem has no O_DIRECT, using buffered I/O", path);
	}
	return fd;
}

int datafile_attach(struct backend *b, const char *path, uint64_t offset, uint64_t size,
		    bool rdonly, bool create, unsigned *file)
{
	struct datafile *d = to_datafile(b);
	int fd, ret = -ENOSPC;

	if (!path || offset % 4096 || size / b->page_size > DATAFILE_MAX_PAGES ||
	    offset + size < offset)
		return -EINVAL;
	fd = open_file(path, offset + size, rdonly, create);
	if (fd < 0)
		return fd;
	pthread_mutex_lock(&d->lock);
	for (unsigned i = 0; i < DATAFILE_MAX_FILES; i++) {
		if (atomic_load_explicit(&d->files[i].fd, memory_order_relaxed) >= 0)
			continue;
		d->files[i].offset = offset;
		d->files[i].rdonly = rdonly;
		atomic_store_explicit(&d->files[i].fd, fd, memory_order_release);
		*file = i;
		ret = 0;
		break;
	}
	pthread_mutex_unlock(&d->lock);
	if (ret < 0)
		close(fd);
	return ret;
}

void datafile_detach(struct backend *b, unsigned file)
{
	struct datafile *d = to_datafile(b);
	int fd;

	pthread_mutex_lock(&d->lock);
	fd = atomic_exchange_explicit(&d->files[file].fd, -1, memory_order_acq_rel);
	pthread_mutex_unlock(&d->lock);
	if (fd >= 0)
		close(fd);
}

void datafile_forked(struct backend *b)
{
	if (b)
		pthread_mutex_init(&to_datafile(b)->lock, NULL);
}

int datafile_sync(struct backend *b, unsigned file)
{
	int fd = atomic_load_explicit(&to_datafile(b)->files[file].fd, memory_order_acquire);

	if (fd < 0)
		return -EBADF;
	return fdatasync(fd) ? -errno : 0;
}
