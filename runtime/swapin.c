/* swapin.c - the handler's side of paging: pages coming back in. */
#define LOG_PREFIX "swapin: "
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "ctx.h"
#include "log.h"
#include "paging.h"
#include "region.h"
#include "snapshot.h"
#include "uffd.h"

static struct backend_io *buf_get(struct paging_handler *ph)
{
	unsigned i = ph->next_buf;

	if (!ph->nfree)
		return NULL;
	if (i >= PAGING_HANDLER_BUFS || !(ph->free_map[i / 64] & (1ull << (i % 64)))) {
		/* A new run: where 64 in a row are free if any, so that the
		 * pages read after this one get adjacent buffers too. */
		unsigned w = 0;

		while (w < PAGING_HANDLER_BUFS / 64 && ph->free_map[w] != ~0ull)
			w++;
		if (w < PAGING_HANDLER_BUFS / 64) {
			i = w * 64;
		} else {
			for (i = 0; !ph->free_map[i / 64]; i += 64)
				;
			i += (unsigned)__builtin_ctzll(ph->free_map[i / 64]);
		}
	}
	ph->free_map[i / 64] &= ~(1ull << (i % 64));
	ph->nfree--;
	ph->next_buf = i + 1;
	return &ph->ios[i];
}

static void buf_put(struct paging_handler *ph, struct backend_io *io)
{
	unsigned i = (unsigned)(io - ph->ios);

	ph->free_map[i / 64] |= 1ull << (i % 64);
	ph->nfree++;
	if (ph->owner && ph->owner[i]) {
		void *owner = ph->owner[i];

		ph->owner[i] = NULL;
		ph->io_done(owner);
	}
}

/* Marks in the cookie of an I/O (page refs use 60 bits): read ahead, or
 * for a write fault. */
#define IO_READAHEAD (1ull << 63)
#define IO_WRITE (1ull << 62)

/* How long a read that failed for want of memory waits to go out again. */
#define REREAD_NS 1000000ull

/* Pages brought back clean between two looks at how many got written. */
#define MAP_WINDOW 1024u

/*
 * Whether a page coming back whose copy in swap is current is mapped clean
 * (write-protected: its first write faults, and it is dropped without I/O
 * if none comes) or dirty (no fault; written back when evicted). Dirty for
 * a write fault, and when more than a quarter of the pages brought back
 * clean lately were written anyway; even then one in eight comes back clean,
 * to keep measuring. pages: how many pages the answer is for.
 */
static bool map_clean(struct handler *h, bool write, unsigned pages)
{
	struct paging *pg = h->ctx->paging;
	uint64_t n;

	if (write || !(h->ctx->features & UPG_FEAT_WP))
		return false;
	if (atomic_load_explicit(&pg->map_dirty, memory_order_relaxed) && (++h->paging.probe & 7))
		return false;
	n = atomic_fetch_add_explicit(&pg->clean_maps, pages, memory_order_relaxed) + pages;
	if (n % MAP_WINDOW < pages) {
		uint64_t written = atomic_exchange_explicit(&pg->clean_written, 0,
							    memory_order_relaxed);

		atomic_store_explicit(&pg->map_dirty, written * 4 > MAP_WINDOW,
				      memory_order_relaxed);
	}
	return true;
}

/* Whether page idx of r, in state w, is to be read in: in swap, or in a file
 * region and not in memory (a page of a file region never touched is in
 * its file). */
static inline bool readable_page(const struct upg_region *r, uint64_t w)
{
	return pg_state(w) == PG_SWAPPED || (r->file && pg_state(w) == PG_NONE);
}

/* A read-only file region's pages are always mapped clean: their
 * write-protection is what refuses writes (paging_wp_fault). */
static inline bool map_clean_page(struct handler *h, const struct upg_region *r, bool write,
				  unsigned pages)
{
	if (r->rdonly)
		return h->ctx->features & UPG_FEAT_WP;
	return map_clean(h, write, pages);
}

/* Queue the read of page idx of r, claimed by the caller (word w before). */
static bool queue_swapin(struct handler *h, struct upg_region *r, uint64_t idx, uint64_t w,
			 uint64_t mark)
{
	struct paging_handler *ph = &h->paging;
	struct backend_io *io = buf_get(ph);

	io->slot = r->file ? region_file_slot(r, idx) : pg_val(w) - 1;
	io->crc = r->crc[idx];
	io->cookie = (void *)(uintptr_t)(page_ref(r->id, idx) | mark);
	if (backend_queue_read(paging_queue(ph->queue, ph->fqueue, io->slot), io) == 0)
		return true;
	buf_put(ph, io);
	return false;
}

/*
 * Readahead. The context follows a few streams, whichever handler takes
 * their faults, each up or down the pages of one region (a list freed from
 * its end walks its heap downwards). A fault (major, or on a page still
 * being read) past a stream's last one and no further than what it has read
 * continues it, and its window doubles, up to RA_MAX pages; a major fault
 * elsewhere starts a new stream in place of the one that matters least
 * (ra_start). A stream only started turns downwards when the next fault is
 * on the page just below its first. A read of a page already mapped raises
 * no fault, so the stream is seen only where it catches up with its reads:
 * there, once less than half a window is still ahead of it, reads are
 * issued up to a whole window ahead, in one go, in ascending page order
 * whichever way the stream goes (consecutive pages, one request each 64,
 * one copy to map them), onto the queue of the handler that saw the fault.
 * Pages in swap are claimed and read; they are mapped when their reads
 * complete.
 */
#define RA_MAX 512u
#define RA_FIRST_WIN 4u
/* How much longer a stream that was continued is kept than one that was
 * only started, in stream starts: random major faults start one each, and
 * must not push out a scan being followed. */
#define RA_KEEP 1024u

/* Page idx's position along a stream going down or up (and a position's
 * page: the map is its own inverse). Positions grow the way it goes. */
static inline uint64_t ra_pos(bool down, const struct upg_region *r, uint64_t idx)
{
	return down ? r->npages - 1 - idx : idx;
}

/* The stream page idx of r continues (NULL if none): it comes after the
 * stream's last fault and no further than what it has read. Under ra_lock. */
static struct ra_stream *ra_find(struct paging *pg, const struct upg_region *r, uint64_t idx)
{
	for (unsigned i = 0; i < PAGING_RA_STREAMS; i++) {
		struct ra_stream *st = &pg->ra[i];
		uint64_t pos;

		if (!st->win || st->region != r->id)
			continue;
		pos = ra_pos(st->down, r, idx);
		if (pos > st->last && pos <= st->next)
			return st;
		if (!st->down && st->win == RA_FIRST_WIN && st->next == st->last + 1 &&
		    idx + 1 == st->last) {
			st->down = true;
			st->last = ra_pos(true, r, st->last);
			st->next = st->last + 1;
			return st;
		}
	}
	return NULL;
}

/* A new stream at idx, in place of an empty one, else of the one unused the
 * longest, a continued stream counting RA_KEEP starts younger. Under
 * ra_lock. */
static struct ra_stream *ra_start(struct paging *pg, const struct upg_region *r, uint64_t idx)
{
	struct ra_stream *st = NULL;
	uint64_t best = UINT64_MAX;

	for (unsigned i = 0; i < PAGING_RA_STREAMS; i++) {
		struct ra_stream *s = &pg->ra[i];
		uint64_t score = !s->win ? 0 : s->used + (s->win > RA_FIRST_WIN ? RA_KEEP : 0);

		if (score < best) {
			best = score;
			st = s;
		}
	}
	*st = (struct ra_stream){ .region = r->id, .last = idx, .next = idx + 1,
				  .win = RA_FIRST_WIN, .used = ++pg->ra_clock };
	return st;
}

/* Claim and queue the reads of pages [first, end) of r that are in swap,
 * in order; stops when buffers or the budget run out. Returns the page it
 * stopped at. */
static uint64_t ra_read(struct handler *h, struct upg_region *r, uint64_t first, uint64_t end)
{
	struct paging *pg = h->ctx->paging;
	uint64_t j;

	for (j = first; j < end && h->paging.nfree; j++) {
		uint64_t w = pg_load(&r->state[j]);

		if (!readable_page(r, w))
			continue;
		if (!paging_reserve(pg))
			break;
		if (!pg_cas(&r->state[j], &w, pg_with_state(w, PG_BUSY))) {
			paging_unreserve(pg, 1);
			continue;
		}
		if (!queue_swapin(h, r, j, w, IO_READAHEAD)) {
			paging_unreserve(pg, 1);
			page_release(r, j, w);
			break;
		}
		stat_inc(&h->stats.readahead_pages);
	}
	return j;
}

static void readahead(struct handler *h, struct upg_region *r, uint64_t idx, bool major)
{
	struct paging *pg = h->ctx->paging;
	uint32_t advice = atomic_load_explicit(&r->advice, memory_order_relaxed);
	struct ra_stream *st;
	uint64_t pos, j, end, passed, got, first, stop;
	bool down;

	if (advice == UPG_ADVICE_RANDOM)
		return;
	pthread_mutex_lock(&pg->ra_lock);
	st = ra_find(pg, r, idx);
	if (!st) {
		/* A major fault may start a stream; it reads ahead once the
		 * next fault continues it, or at once, a whole window, where
		 * the application said the region is read sequentially. */
		if (major)
			st = ra_start(pg, r, idx);
		if (!major || advice != UPG_ADVICE_SEQUENTIAL) {
			pthread_mutex_unlock(&pg->ra_lock);
			return;
		}
		st->win = RA_MAX;
	}
	down = st->down;
	pos = ra_pos(down, r, idx);
	passed = st->last + 1;
	st->win = 2 * st->win < RA_MAX ? 2 * st->win : RA_MAX;
	st->last = pos;
	st->used = ++pg->ra_clock;
	j = st->next > pos + 1 ? st->next : pos + 1;
	if (j - (pos + 1) >= st->win / 2 + 1)
		end = j;    /* enough on its way */
	else
		end = pos + 1 + st->win < r->npages ? pos + 1 + st->win : r->npages;
	/* Where the next extension starts; put back below if fewer are read. */
	st->next = end;
	pthread_mutex_unlock(&pg->ra_lock);

	/* The stream went past the pages read ahead before this one. */
	for (; passed < pos; passed++) {
		uint64_t p = ra_pos(down, r, passed);
		uint64_t w = pg_load(&r->state[p]);

		while ((w & PG_RA) && !pg_cas(&r->state[p], &w, w & ~PG_RA))
			;
		if (w & PG_RA)
			stat_inc(&h->stats.readahead_hits);
	}
	if (j == end)
		return;
	if (!down) {
		got = ra_read(h, r, j, end);
	} else {
		/* Positions [j, end) are pages [npages - end, npages - j): the
		 * nearest ones only if buffers are short. Cut short, the
		 * stream counts nothing read past j. */
		stop = r->npages - j;
		first = end - j > h->paging.nfree ? stop - h->paging.nfree : r->npages - end;
		got = ra_read(h, r, first, stop) == stop ? r->npages - first : j;
	}
	if (got < end) {
		pthread_mutex_lock(&pg->ra_lock);
		if (st->region == r->id && st->down == down && st->next == end)
			st->next = got > pos + 1 ? got : pos + 1;
		pthread_mutex_unlock(&pg->ra_lock);
	}
}

void paging_stream(struct handler *h, struct upg_region *r, uint64_t idx)
{
	unsigned before = h->paging.nfree;

	readahead(h, r, idx, false);
	if (h->paging.nfree != before)
		paging_submit(&h->paging);
}

fault_result paging_swapin(struct handler *h, struct upg_region *r, uint64_t idx, uint64_t w,
			   bool write)
{
	struct paging *pg = h->ctx->paging;
	struct paging_handler *ph = &h->paging;

	if (!ph->nfree || !paging_reserve(pg))
		return FAULT_DEFER;
	if (!pg_cas(&r->state[idx], &w, pg_with_state(w, PG_BUSY))) {
		paging_unreserve(pg, 1);
		return FAULT_AGAIN;
	}
	if (!queue_swapin(h, r, idx, w, write ? IO_WRITE : 0)) {
		/* Nothing queued: put everything back and let the thread retry. */
		paging_unreserve(pg, 1);
		page_release(r, idx, w);
		uffd_wake(h->ctx->uffd, region_page_addr(r, idx), region_page_size(r));
		stat_inc(&h->stats.read_errors);
		return FAULT_ERROR;
	}
	readahead(h, r, idx, true);
	paging_submit(ph);
	stat_inc(&h->stats.faults_major);
	return FAULT_QUEUED;
}

/* The swap-in of page idx of r failed: poison it, so that whoever touches
 * it gets SIGBUS rather than wrong data. */
static void poison(struct handler *h, struct upg_region *r, uint64_t idx, uint64_t slot, int err)
{
	struct upg_ctx *ctx = h->ctx;
	uintptr_t addr = region_page_addr(r, idx);

	if (atomic_load_explicit(&h->stats.read_errors, memory_order_relaxed) < 8)
		pr_perr(err, "swap-in of page %#lx failed, page poisoned", (unsigned long)addr);
	if (ctx->cfg.on_error)
		ctx->cfg.on_error(ctx->cfg.on_error_arg, (void *)addr, err);
	stat_inc(&h->stats.read_errors);
	stat_inc(&h->stats.poisoned);
	paging_discard(ctx->paging, slot);
	page_release(r, idx, pg_make(0, PG_POISONED, 0, 0));
	/* Without UFFDIO_POISON, the woken thread faults again and its
	 * handler signals it (fault.c, deliver_poison). */
	if (!(ctx->features & UPG_FEAT_POISON) || uffd_poison(ctx->uffd, addr, region_page_size(r), 0) < 0)
		uffd_wake(ctx->uffd, addr, region_page_size(r));
}

/* A page read in for nothing: back to zeros, slot and budget released. */
static void drop(struct handler *h, struct upg_region *r, uint64_t idx, uint64_t slot)
{
	struct paging *pg = h->ctx->paging;

	page_release(r, idx, pg_make(0, PG_NONE, 0, 0));
	paging_discard(pg, slot);
	paging_unreserve(pg, 1);
	uffd_wake(h->ctx->uffd, region_page_addr(r, idx), region_page_size(r));
}

/* Finish a read: returns false if it must be retried (io kept). */
static bool swapin_done(struct handler *h, struct backend_io *io)
{
	struct upg_ctx *ctx = h->ctx;
	struct paging *pg = ctx->paging;
	uint64_t ref = (uintptr_t)io->cookie & ~(IO_READAHEAD | IO_WRITE), idx = page_ref_index(ref);
	uint64_t ra = ((uintptr_t)io->cookie & IO_READAHEAD) ? PG_RA : 0;
	struct upg_region *r = region_by_id(ctx, page_ref_region(ref));
	uint64_t flags;
	uintptr_t addr;
	int ret;

	if (!r) {
		/* Destroyed while reading: this page was ours to clean up. */
		paging_discard(pg, io->slot);
		paging_unreserve(pg, 1);
		return true;
	}
	if (io->result == -ENOMEM || io->result == -EAGAIN) {
		/* The kernel found no memory for the read (a memory cgroup
		 * at its limit): read it again a little later (paging_reap).
		 * Poisoning would lose a page that is still in swap. */
		stat_inc(&h->stats.read_retries);
		return false;
	}
	if (io->result < 0) {
		paging_unreserve(pg, 1);
		poison(h, r, idx, io->slot, io->result);
		return true;
	}
	addr = region_page_addr(r, idx);
	if (pg_load(&r->state[idx]) & PG_STALE) {
		/* Removed by the application while we read: it reads zeros
		 * now, not the old copy. (A removal that lands between this
		 * check and the copy is not caught: the kernel's own window.) */
		drop(h, r, idx, io->slot);
		return true;
	}
	snapshot_keep(r, idx, io->buf);
	/* Keep the slot: clean, the page is mapped read-only so that its
	 * first write tells us. */
	flags = map_clean_page(h, r, (uintptr_t)io->cookie & IO_WRITE, 1) ? 0 : PG_DIRTY;
	ret = uffd_copy(ctx->uffd, addr, io->buf, region_page_size(r),
			flags ? 0 : UFFDIO_COPY_MODE_WP);
	if (ret == -EAGAIN || ret == -ENOMEM) {
		/* The layout is changing: an event is pending, which the
		 * kernel hands out only once no fault is, so the faulting
		 * thread is not woken to fault again; the copy is retried.
		 * ENOMEM (the kernel found no page, as in a memory cgroup at
		 * its limit) is retried too: dropping the read would lose the
		 * page, and its next fault would read zeros. */
		stat_inc(&h->stats.ioctl_retries);
		return false;
	}
	stat_inc(datafile_slot_is_file(io->slot) ? &h->stats.file_reads : &h->stats.swap_ins);
	if (ret == -ENOENT || ret == -ESRCH) {
		/* The range went away under us (unmap, destroy), or the
		 * process is exiting. */
		drop(h, r, idx, io->slot);
		return true;
	}
	if (ret < 0 && ret != -EEXIST) {
		/* Anything else loses the contents: said, never zeros. */
		paging_unreserve(pg, 1);
		poison(h, r, idx, io->slot, ret);
		return true;
	}
	page_release(r, idx, pg_make(0, PG_RESIDENT, io->slot + 1, flags | ra));
	paging_resident(h, r, idx);
	return true;
}

/* How many of the reads done[0..n) can be mapped with one copy: good reads
 * of consecutive pages of one region into adjacent buffers. */
static unsigned run_length(struct backend_io **done, unsigned n)
{
	uint64_t ref0 = (uintptr_t)done[0]->cookie & ~(IO_READAHEAD | IO_WRITE);
	unsigned k;

	for (k = 0; k < n; k++) {
		uint64_t ref = (uintptr_t)done[k]->cookie & ~(IO_READAHEAD | IO_WRITE);

		if (done[k]->result < 0 || ref != ref0 + k || done[k] != done[0] + k ||
		    ((uintptr_t)done[k]->cookie & IO_WRITE))
			break;
	}
	return k;
}

/*
 * Map a run of n reads (run_length) with one UFFDIO_COPY. Returns false,
 * changing nothing, when it cannot (a page removed meanwhile, a layout
 * change, part of the range mapped): each read then goes its own way.
 */
static bool map_run(struct handler *h, struct backend_io **done, unsigned n)
{
	struct upg_ctx *ctx = h->ctx;
	uint64_t ref = (uintptr_t)done[0]->cookie & ~(IO_READAHEAD | IO_WRITE);
	struct upg_region *r = region_by_id(ctx, page_ref_region(ref));
	uint64_t idx = page_ref_index(ref), flags;

	if (!r)
		return false;
	for (unsigned k = 0; k < n; k++)
		if (pg_load(&r->state[idx + k]) & PG_STALE)
			return false;
	for (unsigned k = 0; k < n; k++)
		snapshot_keep(r, idx + k, done[k]->buf);
	flags = map_clean_page(h, r, false, n) ? 0 : PG_DIRTY;
	if (uffd_copy(ctx->uffd, region_page_addr(r, idx), done[0]->buf, n * region_page_size(r),
		      flags ? 0 : UFFDIO_COPY_MODE_WP) < 0)
		return false;
	stat_add(r->file ? &h->stats.file_reads : &h->stats.swap_ins, n);
	for (unsigned k = 0; k < n; k++) {
		uint64_t ra = ((uintptr_t)done[k]->cookie & IO_READAHEAD) ? PG_RA : 0;

		page_release(r, idx + k, pg_make(0, PG_RESIDENT, done[k]->slot + 1, flags | ra));
		paging_resident(h, r, idx + k);
	}
	return true;
}

/* Map what q has read. */
static void reap_queue(struct handler *h, struct backend_queue *q)
{
	struct paging_handler *ph = &h->paging;
	struct backend_io *done[64];
	int got;

	/* At most as many in flight as buffers, and pending has room for all. */
	while ((got = backend_reap(q, done, 64, 0)) > 0) {
		for (unsigned i = 0, len; i < (unsigned)got; i += len) {
			len = run_length(done + i, (unsigned)got - i);
			if (len > 1 && map_run(h, done + i, len)) {
				for (unsigned k = 0; k < len; k++)
					buf_put(ph, done[i + k]);
				continue;
			}
			len = 1;
			if (swapin_done(h, done[i]))
				buf_put(ph, done[i]);
			else
				ph->pending[ph->npending++] = done[i];
		}
	}
}

void paging_reap(struct handler *h)
{
	struct paging_handler *ph = &h->paging;
	unsigned n = ph->npending;
	uint64_t now = 0;
	bool reread = false;

	if (!ph->queue)
		return;
	ph->npending = 0;
	for (unsigned i = 0; i < n; i++) {
		struct backend_io *io = ph->pending[i];

		/* A read that failed for want of memory goes out again, once
		 * a millisecond at most; it waits if the queue is full. */
		if (io->result < 0) {
			if (!now)
				now = mono_ns();
			if (now >= ph->reread_at) {
				io->result = 0;
				if (backend_queue_read(paging_queue(ph->queue, ph->fqueue, io->slot),
						       io) == 0) {
					reread = true;
					continue;
				}
				io->result = -ENOMEM;
			}
			ph->pending[ph->npending++] = io;
			continue;
		}
		if (swapin_done(h, io))
			buf_put(ph, io);
		else
			ph->pending[ph->npending++] = io;
	}
	if (reread) {
		paging_submit(ph);
		ph->reread_at = now + REREAD_NS;
	}
	reap_queue(h, ph->queue);
	reap_queue(h, ph->fqueue);
}

fault_result paging_uncool(struct handler *h, struct upg_region *r, uint64_t idx, uint64_t w,
			   bool write)
{
	struct upg_ctx *ctx = h->ctx;
	struct paging *pg = ctx->paging;
	uint64_t pos = pg_val(w);
	struct frame *f = &pg->fe[pos % pg->nframes];
	uintptr_t addr = region_page_addr(r, idx);
	bool clean, copy;
	int ret;

	if (!pg_cas(&r->state[idx], &w, pg_with_state(w, PG_BUSY)))
		return FAULT_AGAIN;
	/* Clean: its copy in swap is current, and write-protect tells us
	 * when that stops being true. */
	clean = f->slot1 && !atomic_load_explicit(&f->dirty, memory_order_relaxed) &&
		map_clean_page(h, r, write, 1);
	/* A copy leaves the frame holding memory too, for a while. */
	copy = !evict_back_moves(pg, clean);
	if (copy && !paging_reserve(pg)) {
		page_release(r, idx, pg_make(0, PG_COOLING, pos, 0));
		return FAULT_DEFER;
	}
	snapshot_keep(r, idx, frame_addr(pg, pos));
	ret = evict_back(pg, addr, pos, clean);
	if (ret < 0 && copy)
		paging_unreserve(pg, 1);
	if (ret == -EAGAIN || ret == -ENOMEM) {
		/* An event is pending, or the kernel found no page for the
		 * copy: retry the fault after a while. */
		page_release(r, idx, pg_make(0, PG_COOLING, pos, 0));
		stat_inc(&h->stats.ioctl_retries);
		return FAULT_DEFER;
	}
	if (ret < 0) {
		page_release(r, idx, pg_make(0, PG_COOLING, pos, 0));
		uffd_wake(ctx->uffd, addr, region_page_size(r));
		if (atomic_load_explicit(&h->stats.errors, memory_order_relaxed) < 8)
			pr_perr(ret, "cannot move a cooling page back to %#lx", (unsigned long)addr);
		stat_inc(&h->stats.errors);
		return FAULT_ERROR;
	}
	page_release(r, idx, pg_make(0, PG_RESIDENT, f->slot1, clean ? 0 : PG_DIRTY));
	if (copy)
		atomic_store_explicit(&f->stale, true, memory_order_relaxed);
	else
		atomic_fetch_sub_explicit(&pg->cooling_pages, 1, memory_order_relaxed);
	atomic_store_explicit(&f->ref, 0, memory_order_release);
	stat_inc(&h->stats.faults_cooling);
	paging_resident(h, r, idx);
	return FAULT_DONE;
}

/* A write to page idx of r, claimed (word w before), while a snapshot of r
 * runs: the snapshot keeps the page as it is first, then the write goes on.
 * Claimed, so that the snapshot's start (which write-protects the region
 * once every handler has seen it begin) cannot slip between the two. */
static fault_result snapshot_wp_fault(struct handler *h, struct upg_region *r, uint64_t idx,
				      uint64_t w)
{
	uintptr_t addr = region_page_addr(r, idx);
	int ret;

	snapshot_keep(r, idx, (const void *)addr);
	ret = uffd_writeprotect(h->ctx->uffd, addr, region_page_size(r), 0);
	if (ret == -EAGAIN) {
		page_release(r, idx, w);
		return FAULT_DEFER;
	}
	if (!(w & PG_DIRTY))
		stat_inc(&h->stats.faults_dirty);
	page_release(r, idx, w | PG_DIRTY);
	if (ret < 0)
		uffd_wake(h->ctx->uffd, addr, region_page_size(r));
	return FAULT_DONE;
}

fault_result paging_wp_fault(struct handler *h, struct upg_region *r, uint64_t idx, pid_t tid)
{
	page_word *pw = &r->state[idx];
	uint64_t w = pg_load(pw);
	uintptr_t addr = region_page_addr(r, idx);

	if (r->rdonly) {
		/* A write to a read-only file region: refused, as the kernel
		 * refuses one to a read-only mapping. The page stays
		 * protected; the signal interrupts the writer's fault. */
		if (tid > 0)
			syscall(SYS_tgkill, getpid(), tid, SIGSEGV);
		else
			kill(getpid(), SIGSEGV);
		return FAULT_ERROR;
	}

	for (;;) {
		if (pg_state(w) == PG_BUSY) {
			/* Being moved out: the writer faults again after. */
			if (pg_cas(pw, &w, w | PG_WAITERS))
				return FAULT_SHARED;
			continue;
		}
		if (pg_state(w) == PG_RESIDENT && snapshot_of(r)) {
			if (pg_cas(pw, &w, pg_with_state(w, PG_BUSY)))
				return snapshot_wp_fault(h, r, idx, w);
			continue;
		}
		if (pg_state(w) != PG_RESIDENT || (w & PG_DIRTY))
			break;
		if (pg_cas(pw, &w, w | PG_DIRTY)) {
			stat_inc(&h->stats.faults_dirty);
			atomic_fetch_add_explicit(&h->ctx->paging->clean_written, 1,
						  memory_order_relaxed);
			break;
		}
	}
	/* Lift the protection (and wake the writer) once the page is known
	 * dirty: a write now cannot go unnoticed. If the page is no longer
	 * mapped, this only wakes the writer, which faults again. */
	switch (uffd_writeprotect(h->ctx->uffd, addr, region_page_size(r), 0)) {
	case 0:
		return FAULT_DONE;
	case -EAGAIN:
		return FAULT_DEFER;
	default:
		uffd_wake(h->ctx->uffd, addr, region_page_size(r));
		return FAULT_DONE;
	}
}

int paging_prefetch_page(struct handler *h, struct upg_region *r, uint64_t idx)
{
	struct paging *pg = h->ctx->paging;
	struct paging_handler *ph = &h->paging;
	uint64_t w = pg_load(&r->state[idx]);

	if (pg_state(w) == PG_COOLING) {
		/* On its way out: back in, as a touch would bring it. */
		switch (paging_uncool(h, r, idx, w, false)) {
		case FAULT_DEFER:
			return 0;
		default:
			return 1;
		}
	}
	if (!readable_page(r, w))
		return 1;
	if (!ph->nfree || !paging_reserve(pg))
		return 0;
	if (!pg_cas(&r->state[idx], &w, pg_with_state(w, PG_BUSY))) {
		paging_unreserve(pg, 1);
		return 1;     /* someone else is on it */
	}
	if (!queue_swapin(h, r, idx, w, 0)) {
		paging_unreserve(pg, 1);
		page_release(r, idx, w);
		return 0;
	}
	/* queue_swapin took the buffer before next_buf. */
	if (ph->owner)
		ph->owner[ph->next_buf - 1] = ph->cur_owner;
	stat_inc(&h->stats.prefetch_pages);
	return 2;
}

bool paging_pending(struct handler *h)
{
	return h->paging.npending != 0;
}
