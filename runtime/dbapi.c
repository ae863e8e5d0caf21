/*
 * dbapi.c - the database API on file regions: flush, evict, pin.
 *
 * These run on the application's thread, which claims pages (PG_BUSY) like
 * a handler does and owns them until it releases them. It never waits for
 * a busy page while it holds claimed ones: the reclaimer may be waiting for
 * one of those (claim_frame), so the batch is finished first.
 */
#define LOG_PREFIX "dbapi: "
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "ctx.h"
#include "datafile.h"
#include "log.h"
#include "paging.h"
#include "region.h"
#include "uffd.h"

#define FLUSH_BATCH PAGING_BATCH

struct flush_page {
	uint64_t idx, w;
};

struct flusher {
	struct paging *pg;
	struct upg_region *r;
	struct backend_queue *q;
	uint8_t *bufs;
	bool wp;                 /* pages can be made clean (write-protected) */
	unsigned n;
	struct flush_page p[FLUSH_BATCH];
	struct backend_io io[FLUSH_BATCH];
	int err;                 /* the first write error */
};

/* Whether [off, off + len) is a range of r's bytes. */
static bool in_region(const struct upg_region *r, uint64_t off, uint64_t len)
{
	return r && len && off < r->size && len <= r->size - off;
}

/* The pages [*first, *end) of r that [off, off + len) covers; -EINVAL for
 * a range outside r or a region the database API does not serve. */

static int page_range(const struct upg_region *r, uint64_t off, uint64_t len, bool file,
		      uint64_t *first, uint64_t *end)
{
	if (!in_region(r, off, len) || !r->ctx->paging || (file && !r->file))
		return -EINVAL;
	*first = off >> r->page_shift;
	*end = (off + len + region_page_size(r) - 1) >> r->page_shift;
	return 0;
}

/* Write the batch's copies, wait, release the pages: clean where written
 * (and write-protected), dirty still where not. */
static void flush_batch(struct flusher *fl)
{
	struct paging *pg = fl->pg;
	struct upg_region *r = fl->r;
	struct backend_io *done[FLUSH_BATCH];
	unsigned queued = 0, reaped = 0, ok = 0;

	for (unsigned i = 0; i < fl->n; i++) {
		fl->io[i] = (struct backend_io){
			.slot = region_file_slot(r, fl->p[i].idx),
			.buf = fl->bufs + i * pg->page_size,
			.result = -EIO,
		};
		if (backend_queue_write(fl->q, &fl->io[i]) == 0)
			queued++;
	}
	backend_submit(fl->q);
	while (reaped < queued) {
		int got = backend_reap(fl->q, done, FLUSH_BATCH, queued - reaped);

		if (got < 0)
			break;
		reaped += (unsigned)got;
	}
	for (unsigned i = 0; i < fl->n; i++) {
		uint64_t w = fl->p[i].w, idx = fl->p[i].idx;
		bool written = fl->io[i].result >= 0;

		if (!written && !fl->err)
			fl->err = fl->io[i].result;
		ok += written;
		if (pg_state(w) == PG_COOLING) {
			if (written)
				atomic_store_explicit(&pg->fe[pg_val(w) % pg->nframes].dirty,
						      false, memory_order_relaxed);
			page_release(r, idx, pg_make(0, PG_COOLING, pg_val(w), 0));
			continue;
		}
		/* A write-protected page marked dirty has its protection
		 * lifted by its next write fault (paging_wp_fault). */
		page_release(r, idx, pg_make(0, PG_RESIDENT, pg_val(w),
					     written && fl->wp ? 0 : PG_DIRTY));
	}
	atomic_fetch_add_explicit(&pg->api_file_writes, ok, memory_order_relaxed);
	fl->n = 0;
}

/* Claim page idx if it has something to write, copying it into the batch.
 * Returns false if it is busy (the caller waits for it). */
static bool flush_page(struct flusher *fl, uint64_t idx)
{
	struct paging *pg = fl->pg;
	struct upg_region *r = fl->r;
	page_word *pw = &r->state[idx];
	uint64_t w = pg_load(pw);
	uint8_t *buf = fl->bufs + fl->n * pg->page_size;
	int ret;

	for (;;) {
		if (pg_state(w) == PG_BUSY)
			return false;
		if (w & PG_PIN_MASK)
			return true;
		if (pg_state(w) == PG_RESIDENT && (w & PG_DIRTY)) {
			if (pg_cas(pw, &w, pg_with_state(w, PG_BUSY)))
				break;
			continue;
		}
		if (pg_state(w) == PG_COOLING &&
		    atomic_load_explicit(&pg->fe[pg_val(w) % pg->nframes].dirty,
					 memory_order_relaxed)) {
			if (pg_cas(pw, &w, pg_with_state(w, PG_BUSY)))
				break;
			continue;
		}
		return true;
	}
	fl->p[fl->n] = (struct flush_page){ idx, w };
	if (pg_state(w) == PG_COOLING) {
		/* Out of the application's reach: nobody writes it. */
		memcpy(buf, frame_addr(pg, pg_val(w)), pg->page_size);
	} else {
		/* Protected first, so that the copy is the page at one instant
		 * and a write after it is seen (the writer waits meanwhile:
		 * the page is busy). */
		if (fl->wp) {
			while ((ret = uffd_writeprotect(r->ctx->uffd, region_page_addr(r, idx),
							pg->page_size, 1)) == -EAGAIN)
				sched_yield();
			if (ret < 0) {
				/* Unmapped under us: nothing to write. */
				page_release(r, idx, w);
				return true;
			}
		}
		if (!paging_copy_in(buf, (void *)region_page_addr(r, idx), pg->page_size)) {
			page_release(r, idx, w);    /* unmapped under us */
			return true;
		}
	}
	if (++fl->n == FLUSH_BATCH)
		flush_batch(fl);
	return true;
}

/* Write back the dirty pages [first, end) of file region r. */
static int write_back(struct upg_region *r, uint64_t first, uint64_t end)
{
	struct paging *pg = r->ctx->paging;
	struct flusher *fl = calloc(1, sizeof(*fl));
	int ret;

	if (!fl)
		return -ENOMEM;
	fl->pg = pg;
	fl->r = r;
	fl->wp = r->ctx->features & UPG_FEAT_WP;
	fl->bufs = aligned_alloc(4096, FLUSH_BATCH * pg->page_size);
	ret = fl->bufs ? backend_queue_open(pg->files, FLUSH_BATCH, &fl->q) : -ENOMEM;
	if (ret < 0) {
		free(fl->bufs);
		free(fl);
		return ret;
	}
	for (uint64_t idx = first; idx < end;) {
		if (flush_page(fl, idx)) {
			idx++;
			continue;
		}
		/* Busy (being read, or written out by the reclaimer): finish
		 * ours, then wait for it. */
		if (fl->n)
			flush_batch(fl);
		sched_yield();
	}
	if (fl->n)
		flush_batch(fl);
	ret = fl->err;
	backend_queue_close(fl->q);
	free(fl->bufs);
	free(fl);
	return ret;
}

int upg_flush(upg_region *r, uint64_t off, uint64_t len, uint32_t flags)
{
	uint64_t first, end;
	int ret = page_range(r, off, len, true, &first, &end);

	if (ret < 0 || r->rdonly || (flags & ~(uint32_t)UPG_FLUSH_NOSYNC))
		return ret < 0 ? ret : -EINVAL;
	ret = write_back(r, first, end);
	if (ret == 0 && !(flags & UPG_FLUSH_NOSYNC))
		ret = datafile_sync(r->ctx->paging->files, r->file_no);
	if (ret == 0)
		atomic_fetch_add_explicit(&r->ctx->paging->flushes, 1, memory_order_relaxed);
	return ret;
}

/* Drop the claimed clean pages [idx, idx + n) of r: their file holds them. */
static void drop_run(struct upg_region *r, uint64_t idx, uint64_t n)
{
	struct paging *pg = r->ctx->paging;

	if (!n)
		return;
	/* Raises a REMOVE event per page, which finds them busy (STALE) and
	 * leaves them to us. */
	madvise((void *)region_page_addr(r, idx), n * pg->page_size, MADV_DONTNEED);
	for (uint64_t i = idx; i < idx + n; i++)
		page_release(r, i, pg_make(0, PG_NONE, 0, 0));
	atomic_fetch_sub_explicit(&r->resident_pages, n, memory_order_relaxed);
	paging_unreserve(pg, n);
}

/* Drop the clean, unpinned resident pages of [first, end) of file region r,
 * a run of contiguous ones at a time. */
static void drop_clean(struct upg_region *r, uint64_t first, uint64_t end)
{
	uint64_t run = 0, run_start = 0;

	for (uint64_t idx = first; idx < end; idx++) {
		page_word *pw = &r->state[idx];
		uint64_t w = pg_load(pw);
		bool claimed = false;

		while (pg_state(w) == PG_RESIDENT && !(w & (PG_DIRTY | PG_PIN_MASK)) &&
		       !(claimed = pg_cas(pw, &w, pg_with_state(w, PG_BUSY))))
			;
		if (claimed && run && run_start + run == idx && run < PAGING_BATCH) {
			run++;
			continue;
		}
		drop_run(r, run_start, run);
		run = claimed;
		run_start = idx;
	}
	drop_run(r, run_start, run);
}

int upg_evict(upg_region *r, uint64_t off, uint64_t len)
{
	uint64_t first, end;
	int ret = page_range(r, off, len, true, &first, &end);

	if (ret < 0)
		return ret;
	if (!r->rdonly && (ret = write_back(r, first, end)) < 0)
		return ret;
	drop_clean(r, first, end);
	return 0;
}

int upg_advise(upg_region *r, uint64_t off, uint64_t len, uint32_t advice)
{
	uint64_t first, end;
	int ret;

	switch (advice) {
	case UPG_ADVICE_NORMAL:
	case UPG_ADVICE_SEQUENTIAL:
	case UPG_ADVICE_RANDOM:
		/* Zero-ahead follows them too: no mem_limit needed. */
		if (!in_region(r, off, len))
			return -EINVAL;
		atomic_store_explicit(&r->advice, advice, memory_order_relaxed);
		return 0;
	}
	ret = page_range(r, off, len, false, &first, &end);
	if (ret < 0)
		return ret;
	switch (advice) {
	case UPG_ADVICE_WILLNEED:
		return upg_prefetch(r, &(struct upg_range){ off, len }, 1, 0);
	case UPG_ADVICE_DONTNEED:
		return upg_evict(r, off, len);
	case UPG_ADVICE_COLD:
		if (!r->file)
			return -EINVAL;
		drop_clean(r, first, end);
		return 0;
	default:
		return -EINVAL;
	}
}

int upg_pin(upg_region *r, uint64_t off, uint64_t len)
{
	uint64_t first, end, idx;
	int ret = page_range(r, off, len, false, &first, &end);
	struct paging *pg;

	if (ret < 0)
		return ret;
	pg = r->ctx->paging;
	for (idx = first; idx < end; idx++) {
		page_word *pw = &r->state[idx];
		uint64_t w = pg_load(pw);

		do {
			if ((w & PG_PIN_MASK) == PG_PIN_MASK)
				break;
		} while (!pg_cas(pw, &w, w + (1ull << PG_PIN_SHIFT)));
		if ((w & PG_PIN_MASK) == PG_PIN_MASK) {
			/* Full: undo what this call pinned. */
			if (idx > first)
				upg_unpin(r, first << r->page_shift, (idx - first) << r->page_shift);
			return -EOVERFLOW;
		}
		if (!(w & PG_PIN_MASK))
			atomic_fetch_add_explicit(&pg->pinned_pages, 1, memory_order_relaxed);
	}
	/* Bring the pages in: once mapped, a pinned page is not taken again
	 * (reclaim passes pinned pages over). */
	for (idx = first; idx < end; idx++)
		(void)*(volatile const uint8_t *)region_page_addr(r, idx);
	return 0;
}

int upg_unpin(upg_region *r, uint64_t off, uint64_t len)
{
	uint64_t first, end, freed = 0;
	int ret = page_range(r, off, len, false, &first, &end);
	struct paging *pg;

	if (ret < 0)
		return ret;
	pg = r->ctx->paging;
	for (uint64_t idx = first; idx < end; idx++) {
		page_word *pw = &r->state[idx];
		uint64_t w = pg_load(pw);

		do {
			if (!(w & PG_PIN_MASK))
				break;
		} while (!pg_cas(pw, &w, w - (1ull << PG_PIN_SHIFT)));
		if (!(w & PG_PIN_MASK))
			ret = -EPERM;
		else if ((w & PG_PIN_MASK) == (1ull << PG_PIN_SHIFT))
			freed++;
	}
	atomic_fetch_sub_explicit(&pg->pinned_pages, freed, memory_order_relaxed);
	/* Reclaim dropped them as candidates while pinned: have it walk the
	 * regions for them (reclaim.c, scan_for_candidates). */
	atomic_fetch_add_explicit(&pg->lost, freed, memory_order_relaxed);
	return ret;
}
