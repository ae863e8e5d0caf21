/* snapshot.c - see snapshot.h and upg_snapshot in upager.h. */
#define LOG_PREFIX "snapshot: "
#include "snapshot.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "ctx.h"
#include "fd.h"
#include "log.h"
#include "paging.h"
#include "thread.h"
#include "uffd.h"

/* Copies aside are given back this many pages at a time. */
#define TRIM_PAGES 256u

struct upg_snap {
	struct upg_region *r;
	uint64_t npages, ps;
	_Atomic uint64_t *pending;    /* one bit per page: image still to take */
	uint8_t *copies;              /* copies aside, at the page's offset */
	size_t copies_bytes;
	int fd;                       /* target file, or -1 */
	uint8_t *dst;                 /* or target region */
	struct backend_queue *q[2];   /* swap, files: pages not in memory */
	uint8_t *buf;                 /* one page, aligned for O_DIRECT */
	pthread_t thread;
	bool joined;                  /* copied during the call (no write-protect) */
	int err;
};

static bool take_bit(struct upg_snap *s, uint64_t idx)
{
	uint64_t bit = 1ull << (idx % 64);

	return atomic_fetch_and_explicit(&s->pending[idx / 64], ~bit, memory_order_acq_rel) & bit;
}

void snapshot_save(struct upg_snap *s, uint64_t idx, const void *src)
{
	uint64_t bit = 1ull << (idx % 64);

	if (!(atomic_load_explicit(&s->pending[idx / 64], memory_order_acquire) & bit))
		return;
	/* The copy before the bit: the thread reads the copy once the bit is
	 * clear. Zeros need no copy: the area reads as zeros. */
	if (src && !paging_copy_in(s->copies + idx * s->ps, src, s->ps))
		memset(s->copies + idx * s->ps, 0, s->ps);    /* unmapped: reads as zeros */
	take_bit(s, idx);
}

/* Read page idx of r, not in memory (word w), from slot into s->buf. */
static int read_slot(struct upg_snap *s, struct upg_region *r, uint64_t idx, uint64_t slot)
{
	struct backend_queue *q = paging_queue(s->q[0], s->q[1], slot);
	struct backend_io io = { .slot = slot, .buf = s->buf, .crc = r->crc[idx] }, *done;
	int ret = backend_queue_read(q, &io);

	if (ret < 0)
		return ret;
	backend_submit(q);
	ret = backend_reap(q, &done, 1, 1);
	return ret < 0 ? ret : io.result < 0 ? io.result : 0;
}

/* The image of page idx, still pending: claimed, read where it is. Returns
 * the page's bytes (NULL: zeros). */
static const void *take_page(struct upg_snap *s, uint64_t idx)
{
	struct upg_region *r = s->r;
	struct paging *pg = r->ctx->paging;
	page_word *pw = &r->state[idx];
	const void *src = NULL;
	uint64_t w;
	int ret = 0;

	for (w = pg_load(pw);;) {
		if (pg_state(w) == PG_BUSY) {
			sched_yield();
			w = pg_load(pw);
			continue;
		}
		if (pg_cas(pw, &w, pg_with_state(w, PG_BUSY)))
			break;
	}
	if (!take_bit(s, idx)) {
		/* Kept aside meanwhile by whoever had it claimed. */
		page_release(r, idx, w);
		return s->copies + idx * s->ps;
	}
	switch (pg_state(w)) {
	case PG_RESIDENT:
		/* Write-protected since the start: a write would have kept it. */
		if (!paging_copy_in(s->buf, (const void *)region_page_addr(r, idx), s->ps))
			ret = -EFAULT;
		src = s->buf;
		break;
	case PG_COOLING:
		memcpy(s->buf, frame_addr(pg, pg_val(w)), s->ps);
		src = s->buf;
		break;
	case PG_SWAPPED:
		ret = read_slot(s, r, idx, r->file ? region_file_slot(r, idx) : pg_val(w) - 1);
		src = s->buf;
		break;
	case PG_NONE:
		if (r->file) {
			ret = read_slot(s, r, idx, region_file_slot(r, idx));
			src = s->buf;
		}
		break;
	case PG_POISONED:
		ret = -EIO;
		break;
	default:
		break;
	}
	page_release(r, idx, w);
	if (ret < 0) {
		if (!s->err)
			s->err = ret;
		return NULL;
	}
	return src;
}

static int put_page(struct upg_snap *s, uint64_t idx, const void *src)
{
	static const uint8_t zeros[4096];

	if (s->dst) {
		if (src)
			memcpy(s->dst + idx * s->ps, src, s->ps);
		else
			memset(s->dst + idx * s->ps, 0, s->ps);
		return 0;
	}
	for (uint64_t done = 0; done < s->ps; done += sizeof(zeros)) {
		const void *from = src ? (const uint8_t *)src + done : zeros;

		if (pwrite(s->fd, from, sizeof(zeros), (off_t)(idx * s->ps + done)) !=
		    (ssize_t)sizeof(zeros))
			return -errno ? -errno : -EIO;
	}
	return 0;
}

static void *snapshot_main(void *arg)
{
	struct upg_snap *s = arg;
	struct upg_region *r = s->r;

	for (uint64_t idx = 0; idx < s->npages; idx++) {
		const void *src;
		int ret;

		if (atomic_load_explicit(&s->pending[idx / 64], memory_order_acquire) &
		    (1ull << (idx % 64)))
			src = take_page(s, idx);
		else
			src = s->copies + idx * s->ps;
		ret = put_page(s, idx, src);
		if (ret < 0 && !s->err)
			s->err = ret;
		if ((idx + 1) % TRIM_PAGES == 0)
			madvise(s->copies + (idx + 1 - TRIM_PAGES) * s->ps, TRIM_PAGES * s->ps,
				MADV_DONTNEED);
	}
	/* Done: no hook may still be in snapshot_save once this returns. */
	atomic_store_explicit(&r->snap, NULL, memory_order_release);
	qsbr_synchronize(&r->ctx->qsbr);
	if (s->fd >= 0 && fdatasync(s->fd) && !s->err)
		s->err = -errno;
	return NULL;
}

static void snapshot_free(struct upg_snap *s)
{
	backend_queue_close(s->q[0]);
	backend_queue_close(s->q[1]);
	if (s->copies)
		munmap(s->copies, s->copies_bytes);
	free((void *)s->pending);
	free(s->buf);
	if (s->fd >= 0)
		close(s->fd);
	free(s);
}

int upg_snapshot(upg_region *r, const struct upg_snapshot_target *t, upg_snap **out)
{
	struct upg_snap *s, *none = NULL;
	struct upg_ctx *ctx;
	int ret;

	if (!r || !t || !out || t->size < sizeof(*t) || t->reserved || !t->path == !t->region ||
	    t->region == r || (t->region && upg_region_size(t->region) < r->size))
		return -EINVAL;
	ctx = r->ctx;
	if (!ctx->paging)
		return -EINVAL;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->r = r;
	s->fd = -1;
	s->npages = r->npages;
	s->ps = region_page_size(r);
	s->pending = calloc((s->npages + 63) / 64, sizeof(*s->pending));
	s->copies_bytes = r->size;
	s->copies = mmap(NULL, r->size, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	s->buf = aligned_alloc(4096, s->ps);
	if (s->copies == MAP_FAILED)
		s->copies = NULL;
	else    /* trimmed page by page as the copy goes out */
		madvise(s->copies, r->size, MADV_NOHUGEPAGE);
	ret = !s->pending || !s->copies || !s->buf ? -ENOMEM : 0;
	/* The region's one snapshot, before the target is touched (a file
	 * is truncated). Nothing is pending yet: the hooks pass. */
	if (!ret && !atomic_compare_exchange_strong(&r->snap, &none, s))
		ret = -EBUSY;
	if (!ret)
		ret = backend_queue_open(ctx->paging->backend, 1, &s->q[0]);
	if (!ret)
		ret = backend_queue_open(ctx->paging->files, 1, &s->q[1]);
	if (!ret && t->path) {
		s->fd = fd_high(open(t->path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
		ret = s->fd < 0 ? -errno : 0;
	}
	s->dst = t->region ? upg_region_addr(t->region) : NULL;
	if (ret < 0) {
		if (ret != -EBUSY) {
			atomic_store(&r->snap, NULL);
			qsbr_synchronize(&ctx->qsbr);
		}
		snapshot_free(s);
		return ret;
	}
	/* Every handler sees the snapshot before its pages are marked:
	 * from here a write fault claims its page around keeping it and
	 * lifting the protection (swapin.c). */
	qsbr_synchronize(&ctx->qsbr);
	for (uint64_t i = 0; i < (s->npages + 63) / 64; i++)
		atomic_store_explicit(&s->pending[i],
				      i < s->npages / 64 ? ~0ull : (1ull << (s->npages % 64)) - 1,
				      memory_order_release);
	/* Without write-protect no write can be caught: the image is copied
	 * now, and the caller holds its writers off meanwhile. */
	while ((ctx->features & UPG_FEAT_WP) &&
	       (ret = uffd_writeprotect(ctx->uffd, region_base(r), r->size, 1)) == -EAGAIN)
		sched_yield();
	if (!ret)
		ret = rt_thread_start(&s->thread, -1, snapshot_main, s);
	if (!ret && !(ctx->features & UPG_FEAT_WP)) {
		pthread_join(s->thread, NULL);
		s->joined = true;
	}
	if (ret < 0) {
		atomic_store(&r->snap, NULL);
		qsbr_synchronize(&ctx->qsbr);
		snapshot_free(s);
		return ret;
	}
	*out = s;
	return 0;
}

int upg_snapshot_wait(upg_snap *s)
{
	int ret;

	if (!s)
		return -EINVAL;
	if (!s->joined)
		pthread_join(s->thread, NULL);
	ret = s->err;
	snapshot_free(s);
	return ret;
}
