/*
 * reclaim.c - the reclaimer thread: keeps the context's memory under its
 * limit, like kswapd.
 *
 * Above the high watermark it works down to the low one. Candidates come
 * from the handlers' rings (resq.h), oldest first. A candidate still
 * resident is moved into the cooling pool at the head of the frame ring
 * (UFFDIO_MOVE: atomic, so no write can be lost); at the tail, pages that
 * stayed there are written to swap if dirty, or just dropped if their copy
 * in swap is current, and the frames are freed a batch at a time. With the
 * FIFO policy the pool holds only the batch being written.
 *
 * This is the only thread that waits for I/O or calls madvise on registered
 * memory; it is a QSBR reader while it holds region pointers, and goes
 * offline around every wait.
 */
#define LOG_PREFIX "reclaim: "
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <time.h>

#include "ctx.h"
#include "log.h"
#include "paging.h"
#include "region.h"
#include "uffd.h"

/* io.slot of a page no slot could be found for. */
#define NO_SLOT UINT64_MAX

struct victim {
	struct upg_region *r;
	uint64_t idx, pos, ref1;
	struct backend_io io;
};

static struct qsbr_reader *reader(struct paging *pg)
{
	return &pg->ctx->qsbr_readers[pg->ctx->nhandlers];
}

static void drain_rings(struct paging *pg)
{
	struct upg_ctx *ctx = pg->ctx;

	for (unsigned i = 0; i <= ctx->nhandlers; i++) {
		struct resq *q = i < ctx->nhandlers ? &ctx->handlers[i].paging.resq : prefetch_resq(pg);
		uint64_t ref;

		if (!q)
			continue;
		while (pg->lru_head - pg->lru_tail <= pg->lru_mask && resq_pop(q, &ref))
			pg->lru[pg->lru_head++ & pg->lru_mask] = ref;
	}
}

/*
 * Candidates the rings could not carry (a handler's ring was full while the
 * reclaimer was busy) are found again by walking the regions' state words
 * like a clock hand, from where the last walk stopped: looks at up to
 * SCAN_LOOK pages for up to `want` resident ones.
 */
#define SCAN_LOOK 65536u

static void scan_for_candidates(struct paging *pg, unsigned want)
{
	struct upg_ctx *ctx = pg->ctx;
	uint32_t ids = __atomic_load_n(&ctx->id_next, __ATOMIC_ACQUIRE);

	for (unsigned looked = 0; want && looked < SCAN_LOOK && ids; looked++) {
		struct upg_region *r;
		uint64_t w;

		if (pg->scan_region >= ids) {
			pg->scan_region = 0;
			pg->scan_index = 0;
		}
		r = region_by_id(ctx, pg->scan_region);
		if (r && pg->scan_index % REGION_WORDS_PER_PAGE == 0)
			pg->scan_index = region_next_touched(r, pg->scan_index);
		if (!r || pg->scan_index >= r->npages) {
			pg->scan_region++;
			pg->scan_index = 0;
			continue;
		}
		w = pg_load(&r->state[pg->scan_index]);
		if (pg_state(w) == PG_RESIDENT && !(w & PG_PIN_MASK) &&
		    pg->lru_head - pg->lru_tail <= pg->lru_mask) {
			pg->lru[pg->lru_head++ & pg->lru_mask] = page_ref(r->id, pg->scan_index);
			want--;
			/* Not exact (it may be one never lost): a bound on the
			 * walks, which stop once as many were found. */
			if (atomic_load_explicit(&pg->lost, memory_order_relaxed))
				atomic_fetch_sub_explicit(&pg->lost, 1, memory_order_relaxed);
		}
		pg->scan_index++;
	}
}

static bool lru_pop(struct paging *pg, uint64_t *ref)
{
	if (pg->lru_tail == pg->lru_head)
		return false;
	*ref = pg->lru[pg->lru_tail++ & pg->lru_mask];
	return true;
}

/* Free frame f of a page that left the pool, if nobody did already: whoever
 * clears the reference does the accounting. */
static void frame_release(struct paging *pg, struct frame *f, uint64_t ref1)
{
	if (atomic_compare_exchange_strong(&f->ref, &ref1, 0)) {
		atomic_fetch_sub_explicit(&pg->cooling_pages, 1, memory_order_relaxed);
		paging_unreserve(pg, 1);
	}
}

/* Memory was freed, or a madvise of ours returned: wake the handlers holding
 * faults back for want of memory, or copies that an event of ours failed. */
static void wake_waiting(struct paging *pg)
{
	for (unsigned i = 0; i < pg->ctx->nhandlers; i++) {
		struct paging_handler *ph = &pg->ctx->handlers[i].paging;

		if (atomic_exchange_explicit(&ph->waiting, false, memory_order_acq_rel))
			eventfd_write(ph->wake_fd, 1);
	}
}

/* A read-ahead page leaves before the fault stream reached it. */
static void ra_wasted(struct paging *pg, uint64_t w)
{
	if (w & PG_RA)
		stat_inc(&pg->stats.readahead_waste);
}

/* Move up to max of the oldest resident pages into the frames at the head
 * (evict.c). Returns how many moved. */
static unsigned cool_batch(struct paging *pg, unsigned max)
{
	struct upg_ctx *ctx = pg->ctx;
	struct evictee v[PAGING_BATCH];
	unsigned n = 0, moved = 0, busy_requeued = 0;
	uint64_t ref;

	if (max > PAGING_BATCH)
		max = PAGING_BATCH;
	while (n < max && lru_pop(pg, &ref)) {
		struct upg_region *r = region_by_id(ctx, page_ref_region(ref));
		uint64_t idx = page_ref_index(ref), w;

		if (!r || idx >= r->npages)
			continue;
		w = pg_load(&r->state[idx]);
		/* Stale references (page gone or already out) and pinned
		 * pages are passed over; a page busy for a moment (a fault
		 * on it) stays a candidate. A flag changing under us is
		 * retried. */
		while (pg_state(w) == PG_RESIDENT && !(w & PG_PIN_MASK) &&
		       !pg_cas(&r->state[idx], &w, pg_with_state(w, PG_BUSY)))
			;
		if (pg_state(w) == PG_BUSY && busy_requeued++ < max) {
			pg->lru[pg->lru_head++ & pg->lru_mask] = ref;
			continue;
		}
		if (pg_state(w) != PG_RESIDENT || (w & PG_PIN_MASK))
			continue;
		v[n] = (struct evictee){ .r = r, .idx = idx, .w = w, .pos = pg->head + n };
		n++;
	}
	evict_out(pg, v, n);
	/* The WP and mprotect paths dropped the pages with madvise, whose
	 * REMOVE events failed the handlers' copies meanwhile: they can retry
	 * now. */
	if (n && pg->path != UPG_EVICT_MOVE)
		wake_waiting(pg);
	for (unsigned i = 0; i < n; i++) {
		struct upg_region *r = v[i].r;
		struct frame *f = &pg->fe[v[i].pos % pg->nframes];

		if (!v[i].ok) {
			/* Its frame stays empty and is skipped at the tail. */
			page_release(r, v[i].idx, v[i].w);
			continue;
		}
		f->slot1 = pg_val(v[i].w);
		atomic_store_explicit(&f->dirty, v[i].w & PG_DIRTY, memory_order_relaxed);
		atomic_store_explicit(&f->ref, page_ref(r->id, v[i].idx) + 1, memory_order_release);
		atomic_fetch_add_explicit(&pg->cooling_pages, 1, memory_order_relaxed);
		atomic_fetch_sub_explicit(&r->resident_pages, 1, memory_order_relaxed);
		stat_inc(&pg->stats.evicted);
		ra_wasted(pg, v[i].w);
		moved++;
		/* Touched meanwhile: woken, it faults again and brings it back;
		 * removed meanwhile: what was moved is dropped. */
		page_release(r, v[i].idx, pg_make(0, PG_COOLING, v[i].pos, 0));
	}
	pg->head += n;
	return moved;
}

/* Put a page that could not be written back into the application again. */
static void give_back(struct paging *pg, struct victim *v, struct frame *f)
{
	struct upg_ctx *ctx = pg->ctx;
	uintptr_t addr = region_page_addr(v->r, v->idx);
	int ret;

	/* EAGAIN: an event is pending, which a handler reads in a moment. */
	while ((ret = evict_back(pg, addr, v->pos, false)) == -EAGAIN)
		sched_yield();
	if (ret < 0) {
		/* The range is gone (unmapped, being destroyed). */
		page_release(v->r, v->idx, pg_make(0, PG_NONE, 0, 0));
		uffd_wake(ctx->uffd, addr, pg->page_size);
		frame_release(pg, f, v->ref1);
		return;
	}
	if (ret == 1) {
		/* Copied: the frame holds memory until it is freed, at the end
		 * of this batch; beyond the limit for that moment. */
		atomic_fetch_add_explicit(&pg->mem_pages, 1, memory_order_relaxed);
		atomic_fetch_add_explicit(&pg->cooling_pages, 1, memory_order_relaxed);
		atomic_store_explicit(&f->stale, true, memory_order_relaxed);
	}
	page_release(v->r, v->idx, pg_make(0, PG_RESIDENT, f->slot1, PG_DIRTY));
	if (atomic_compare_exchange_strong(&f->ref, &v->ref1, 0)) {
		atomic_fetch_sub_explicit(&pg->cooling_pages, 1, memory_order_relaxed);
		atomic_fetch_add_explicit(&v->r->resident_pages, 1, memory_order_relaxed);
	}
	if (pg->lru_head - pg->lru_tail <= pg->lru_mask)
		pg->lru[pg->lru_head++ & pg->lru_mask] = v->ref1 - 1;
}

/* Claim the page in frame pos for write-back. NULL if the frame is empty or
 * its page left (moved back, removed). */
static struct upg_region *claim_frame(struct paging *pg, uint64_t pos, uint64_t *ref1_out,
				      uint64_t *idx_out)
{
	struct frame *f = &pg->fe[pos % pg->nframes];

	for (;;) {
		uint64_t ref1 = atomic_load_explicit(&f->ref, memory_order_acquire), w;
		struct upg_region *r;
		page_word *pw;

		if (!ref1)
			return NULL;
		r = region_by_id(pg->ctx, page_ref_region(ref1 - 1));
		if (!r) {
			/* Its region is being destroyed: the page is lost anyway. */
			frame_release(pg, f, ref1);
			return NULL;
		}
		pw = &r->state[page_ref_index(ref1 - 1)];
		w = pg_load(pw);
		if (pg_state(w) == PG_COOLING && pg_val(w) == pos &&
		    pg_cas(pw, &w, pg_with_state(w, PG_BUSY))) {
			*ref1_out = ref1;
			*idx_out = page_ref_index(ref1 - 1);
			return r;
		}
		/* A handler is moving it back, or it is being removed: both
		 * clear the frame's reference in a moment. */
		sched_yield();
	}
}

static void written(struct paging *pg, struct victim *v)
{
	struct frame *f = &pg->fe[v->pos % pg->nframes];

	if (v->io.result < 0) {
		/* Said once per run of the same failure, not once per page. */
		int error = v->io.slot == NO_SLOT ? 1 : v->io.result;

		if (pg->write_error != error) {
			if (v->io.slot == NO_SLOT)
				pr_err("the swap files are full; pages stay in memory");
			else
				pr_perr(v->io.result, "write-back failed; the page stays in memory");
			pg->write_error = error;
		}
		stat_inc(&pg->stats.write_errors);
		if (v->io.slot != NO_SLOT)
			paging_discard(pg, v->io.slot);
		give_back(pg, v, f);
		return;
	}
	pg->write_error = 0;
	stat_inc(v->r->file ? &pg->stats.file_writes : &pg->stats.swap_outs);
	v->r->crc[v->idx] = v->io.crc;
	/* (A data-file page was written over its own copy.) */
	if (f->slot1 && f->slot1 - 1 != v->io.slot)
		paging_discard(pg, f->slot1 - 1);
	page_release(v->r, v->idx, pg_make(0, PG_SWAPPED, v->io.slot + 1, 0));
	frame_release(pg, f, v->ref1);
}

/* Free the frames [from, to) of the ring: one madvise per contiguous run. */
static void free_frames(struct paging *pg, uint64_t from, uint64_t to)
{
	uint64_t stale = 0;

	for (uint64_t pos = from; pos < to; pos++)
		stale += atomic_exchange_explicit(&pg->fe[pos % pg->nframes].stale, false,
						  memory_order_relaxed);
	while (from < to) {
		uint64_t start = from % pg->nframes, n = to - from;

		if (start + n > pg->nframes)
			n = pg->nframes - start;
		madvise(frame_addr(pg, start), n * pg->page_size, MADV_DONTNEED);
		from += n;
	}
	atomic_fetch_sub_explicit(&pg->cooling_pages, stale, memory_order_relaxed);
	paging_unreserve(pg, stale);
}

/* After a batch of n write-backs: when none went through, swap is stuck,
 * and faults stop waiting for reclaim (paging_reserve) until one does. */
static void swap_health(struct paging *pg, unsigned n)
{
	uint64_t errors = atomic_load_explicit(&pg->stats.write_errors, memory_order_relaxed);
	bool stuck = errors - pg->errors_seen >= n;

	pg->errors_seen = errors;
	if (stuck == atomic_load_explicit(&pg->swap_stuck, memory_order_relaxed))
		return;
	if (stuck)
		pr_err("swap refuses every write: pages stay in memory, beyond the limit, "
		       "until it takes writes again");
	else
		pr_info("swap takes writes again: back under the limit");
	atomic_store_explicit(&pg->swap_stuck, stuck, memory_order_relaxed);
}

/* Wait for the n I/Os submitted on q (results in their ios). */
static void reap_all(struct backend_queue *q, struct backend_io **done, unsigned n)
{
	unsigned reaped = 0;

	while (reaped < n) {
		int ret = backend_reap(q, done, PAGING_BATCH, n - reaped);

		if (ret < 0)
			break;
		reaped += (unsigned)ret;
	}
}

/* Write back (or drop) the pages of one batch at the tail. Returns how many
 * frames it went past. Called online; returns online. */
static unsigned writeback_batch(struct paging *pg)
{
	struct upg_ctx *ctx = pg->ctx;
	uint64_t end = pg->tail + PAGING_BATCH < pg->head ? pg->tail + PAGING_BATCH : pg->head;
	struct victim v[PAGING_BATCH];
	struct backend_io *done[PAGING_BATCH];
	uint64_t slots[PAGING_BATCH];
	uint64_t start = pg->tail;
	unsigned n = 0, nswap = 0, got = 0, queued[2] = { 0, 0 };
	int ret;

	for (uint64_t pos = pg->tail; pos < end; pos++) {
		struct frame *f = &pg->fe[pos % pg->nframes];
		uint64_t ref1, idx;
		struct upg_region *r = claim_frame(pg, pos, &ref1, &idx);

		if (!r)
			continue;
		if ((!atomic_load_explicit(&f->dirty, memory_order_relaxed) && f->slot1) ||
		    r->rdonly) {
			/* Its copy in swap or its file is current: no write.
			 * (A read-only file region's page is never written;
			 * it is dirty only where write-protect is missing.) */
			page_release(r, idx, pg_make(0, PG_SWAPPED, f->slot1, 0));
			frame_release(pg, f, ref1);
			stat_inc(&pg->stats.dropped_clean);
			continue;
		}
		v[n++] = (struct victim){ .r = r, .idx = idx, .pos = pos, .ref1 = ref1 };
		/* A data-file page goes back to its own place. */
		nswap += !r->file;
	}

	if (nswap) {
		ret = backend_alloc_slots(pg->backend, nswap, slots);
		if (ret < 0 && ret != -ENOSPC)
			pr_perr(ret, "cannot allocate swap slots");
		got = ret > 0 ? (unsigned)ret : 0;
	}
	for (unsigned i = 0, s = 0; i < n; i++) {
		struct backend_queue *q = v[i].r->file ? pg->fqueue : pg->queue;

		if (!v[i].r->file && s++ >= got) {
			/* Swap is full: the page stays in memory. */
			v[i].io.slot = NO_SLOT;
			v[i].io.result = -ENOSPC;
			written(pg, &v[i]);
			continue;
		}
		v[i].io = (struct backend_io){
			.slot = v[i].r->file ? region_file_slot(v[i].r, v[i].idx) : slots[s - 1],
			.buf = frame_addr(pg, v[i].pos),
			.cookie = &v[i],
		};
		if (backend_queue_write(q, &v[i].io) < 0) {
			v[i].io.cookie = NULL;
			v[i].io.result = -EIO;
			written(pg, &v[i]);
			continue;
		}
		queued[q == pg->fqueue]++;
	}
	if (queued[0] || queued[1]) {
		/* Submitted online: a data file is closed only after a grace
		 * period once its region is gone, and a submitted I/O holds
		 * the file. Wait offline: region destroys must not wait for the
		 * disk. The pages stay BUSY meanwhile, so their regions' memory
		 * stays. */
		backend_submit(pg->queue);
		backend_submit(pg->fqueue);
		qsbr_offline(reader(pg));
		reap_all(pg->queue, done, queued[0]);
		reap_all(pg->fqueue, done, queued[1]);
		qsbr_online(&ctx->qsbr, reader(pg));
		for (unsigned i = 0; i < n; i++) {
			if (v[i].io.cookie != &v[i])
				continue;     /* handled above */
			v[i].r = region_by_id(ctx, page_ref_region(v[i].ref1 - 1));
			if (!v[i].r) {
				paging_discard(pg, v[i].io.slot);
				frame_release(pg, &pg->fe[v[i].pos % pg->nframes], v[i].ref1);
				continue;
			}
			written(pg, &v[i]);
		}
	}
	if (n)
		swap_health(pg, n);
	qsbr_offline(reader(pg));
	free_frames(pg, pg->tail, end);
	qsbr_online(&ctx->qsbr, reader(pg));
	pg->tail = end;
	wake_waiting(pg);
	return (unsigned)(end - start);
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { 0, (long)ms * 1000000L };

	nanosleep(&ts, NULL);
}

void *paging_reclaimer_main(void *arg)
{
	struct paging *pg = arg;
	struct pollfd pfd = { .fd = pg->kick_fd, .events = POLLIN };
	eventfd_t ignored;

	pthread_setname_np(pthread_self(), "upager-reclaim");
	while (!atomic_load(&pg->stop)) {
		unsigned progress = 0;

		paging_forks_check(pg);

		/* fork: no new evictions; the cooling pool is written out and
		 * emptied, then the reclaimer stays parked. */
		if (atomic_load(&pg->hold)) {
			qsbr_online(&pg->ctx->qsbr, reader(pg));
			progress = pg->head > pg->tail ? writeback_batch(pg) : 0;
			qsbr_offline(reader(pg));
			atomic_store(&pg->parked, pg->head == pg->tail);
			if (!progress)
				sleep_ms(1);
			continue;
		}
		atomic_store(&pg->parked, false);
		qsbr_online(&pg->ctx->qsbr, reader(pg));
		drain_rings(pg);
		if (atomic_load_explicit(&pg->mem_pages, memory_order_relaxed) <= pg->high_wm) {
			qsbr_offline(reader(pg));
			atomic_store(&pg->sleeping, true);
			if (atomic_load_explicit(&pg->mem_pages, memory_order_relaxed) <= pg->high_wm)
				poll(&pfd, 1, 50);
			atomic_store(&pg->sleeping, false);
			eventfd_read(pg->kick_fd, &ignored);
			continue;
		}
		while (atomic_load_explicit(&pg->mem_pages, memory_order_relaxed) > pg->low_wm &&
		       !atomic_load(&pg->stop) && !atomic_load(&pg->hold)) {
			unsigned moved = 0;

			drain_rings(pg);
			if (pg->lru_tail == pg->lru_head &&
			    atomic_load_explicit(&pg->lost, memory_order_relaxed))
				scan_for_candidates(pg, 4 * PAGING_BATCH);
			while (atomic_load_explicit(&pg->cooling_pages, memory_order_relaxed) <
				       pg->cool_target + PAGING_BATCH &&
			       pg->head - pg->tail < pg->nframes && pg->lru_tail != pg->lru_head)
				moved += cool_batch(pg, (unsigned)(pg->nframes - (pg->head - pg->tail)));
			progress = moved;
			if (atomic_load_explicit(&pg->cooling_pages, memory_order_relaxed) >
				    pg->cool_target ||
			    pg->head - pg->tail >= pg->nframes || !moved)
				progress += pg->head > pg->tail ? writeback_batch(pg) : 0;
			/* Swap refuses writes: one batch per round probes it;
			 * more would only churn pages out and back in. */
			if (!progress || atomic_load_explicit(&pg->swap_stuck, memory_order_relaxed))
				break;
		}
		qsbr_offline(reader(pg));
		if (!progress)
			sleep_ms(1);
		else if (atomic_load_explicit(&pg->swap_stuck, memory_order_relaxed))
			sleep_ms(10);   /* retrying a failing disk: not in a tight loop */
	}
	qsbr_offline(reader(pg));
	return NULL;
}
