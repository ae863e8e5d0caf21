/*
 * fork.c - fork(2) of a process whose regions are paged.
 *
 * Contexts do not ask for fork events: the kernel gives the child the
 * regions as plain private memory, copy-on-write, where pages are mapped,
 * and zeros where they are not. So at the fork nothing may be on its way
 * out: upg_ctx_fork_prepare() parks the reclaimer with the cooling pool
 * written out and empty, and lifts the limit for the moment of the fork.
 *
 * Pages out stay there: the child reads them at the parent's slots,
 * through the same swap files, or under the parent's keys on the same
 * servers. The parent keeps every slot it had (slots that die are set
 * aside, not freed) until each child is done: a child holds the write end
 * of a pipe of the parent's, which closes when it exits or executes a
 * program. Beyond SWAP_MAX_FILES files or key spaces (forks of forks) or
 * PAGING_MAX_FORKS children at once, every page out is brought back into
 * the mapping before the fork instead, which costs their reads and, for
 * the time of the fork, the memory of all of them.
 *
 * In the child, the context starts over in place (same upg_ctx, same region
 * objects, so pointers held by the program stay good): a new userfaultfd
 * with the regions registered again, paging with swap files (or keys) of
 * its own (after the parent's, read-only), new threads. Its mapped pages
 * are the ones the kernel copied: resident and dirty (writes to them are not
 * tracked). They are shared with the parent until either writes, and
 * UFFDIO_MOVE refuses shared pages, so the child evicts by write-protect
 * (or mprotect) and copy.
 */
#define LOG_PREFIX "fork: "
#include <errno.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "ctx.h"
#include "fd.h"
#include "log.h"
#include "page.h"
#include "paging.h"
#include "region.h"
#include "segv.h"

/* Rounds of bringing pages back before giving up (a page the program made
 * unreadable stays out). A page touched may still read as out for a moment
 * (its handler releases the word after mapping it), or be read ahead while
 * the walk is past it: a round that finds any goes round again. */
#define FORK_PASSES 64

static void wait_parked(struct paging *pg)
{
	struct timespec ms = { 0, 1000000 };

	paging_kick(pg);
	while (!atomic_load(&pg->parked) && !atomic_load(&pg->stop))
		nanosleep(&ms, NULL);
}

/* Read one byte of every page of r that is not mapped in, so that a
 * handler brings it back. Pages in holes are NONE: never touched. Returns
 * how many were out. */
static uint64_t bring_back(struct upg_region *r)
{
	uintptr_t base = region_base(r);
	uint64_t out = 0;

	for (uint64_t i = region_next_touched(r, 0); i < r->npages; i = region_walk_next(r, i)) {
		uint64_t w = pg_load(&r->state[i]);

		switch (pg_state(w)) {
		case PG_SWAPPED:
		case PG_COOLING:
		case PG_BUSY:
			(void)*(volatile const uint8_t *)(base + (i << r->page_shift));
			out++;
			break;
		default:
			break;
		}
	}
	return out;
}

int upg_ctx_fork_prepare(upg_ctx *ctx)
{
	struct paging *pg = ctx ? ctx->paging : NULL;
	uint64_t out = 1;

	if (!ctx)
		return -EINVAL;
	if (!pg)
		return 0;
	atomic_fetch_add(&pg->hold, 1);
	wait_parked(pg);
	/* The child reads what is out at the parent's slots (in its swap
	 * files, or under its keys on the servers), which stay as they are
	 * until it is done with them. */
	if (paging_freeze(pg) == 0)
		return 0;
	/* ctx->lock keeps the list still; handlers do not take it. */
	pthread_mutex_lock(&ctx->lock);
	for (unsigned pass = 0; pass < FORK_PASSES && out; pass++) {
		struct timespec ms = { 0, 1000000 };

		if (pass > 1)
			nanosleep(&ms, NULL);
		out = 0;
		for (struct upg_region *r = ctx->regions; r; r = r->next)
			if (!atomic_load(&r->dying))
				out += bring_back(r);
	}
	pthread_mutex_unlock(&ctx->lock);
	return out ? -EAGAIN : 0;
}

/* After fork the parent's pages are shared with the child, and UFFDIO_MOVE
 * refuses shared pages (EBUSY): reclaim could not bring memory back under
 * the limit. An atomic "or 0" into each resident page makes the kernel give
 * the parent its own copy without changing a byte, whatever other threads
 * write meanwhile. */
static void own_pages(struct upg_region *r)
{
	uintptr_t base = region_base(r);

	for (uint64_t i = region_next_touched(r, 0); i < r->npages; i = region_walk_next(r, i))
		if (pg_state(pg_load(&r->state[i])) == PG_RESIDENT)
			__atomic_fetch_or((uint8_t *)(base + (i << r->page_shift)), 0,
					  __ATOMIC_RELAXED);
}

void upg_ctx_fork_parent(upg_ctx *ctx)
{
	struct paging *pg = ctx ? ctx->paging : NULL;

	if (!pg)
		return;
	pthread_mutex_lock(&ctx->lock);
	for (struct upg_region *r = ctx->regions; r; r = r->next)
		if (!atomic_load(&r->dying))
			own_pages(r);
	pthread_mutex_unlock(&ctx->lock);
	paging_forked(pg);
	if (atomic_fetch_sub(&pg->hold, 1) == 1)
		paging_kick(pg);
}

/* What page idx of r is in the child, from its word in the parent at the
 * fork. shared: the child reads the parent's swap (else everything out of
 * the mapping was brought back, or is lost). Returns the new word, and
 * counts a resident page in *resident. */
static uint64_t adopt_word(struct upg_region *r, uint64_t idx, uint64_t w, bool shared,
			   uint64_t *resident)
{
	uint64_t file_slot1 = r->file ? region_file_slot(r, idx) + 1 : 0;
	unsigned char in_core = 0;

	switch (pg_state(w)) {
	case PG_NONE:
	case PG_ZERO:
	case PG_POISONED:
		return w & (PG_STATE_MASK | PG_PIN_MASK);   /* no slot of the parent's */
	case PG_SWAPPED:
		if (shared || r->file)
			return pg_make(w, PG_SWAPPED, pg_val(w), 0);
		return pg_make(w, PG_POISONED, 0, 0);
	case PG_BUSY:
		/* A fault being resolved at the fork (no page was going out:
		 * the reclaimer was parked): a first touch (no slot), a read
		 * from swap, or a write to a page in place. Whether it was
		 * mapped in time decides. */
		if (mincore((void *)region_page_addr(r, idx), region_page_size(r), &in_core) == 0 &&
		    (in_core & 1)) {
			(*resident)++;
			return pg_make(w, PG_RESIDENT, file_slot1, PG_DIRTY);
		}
		if (!pg_val(w))
			return pg_make(w, PG_NONE, 0, 0);
		if (shared || r->file)
			return pg_make(w, PG_SWAPPED, pg_val(w), 0);
		return pg_make(w, PG_POISONED, 0, 0);
	case PG_RESIDENT:
		/* Dirty: the child's writes are not tracked until it evicts. */
		(*resident)++;
		return pg_make(w, PG_RESIDENT, file_slot1, PG_DIRTY);
	default:
		/* In the cooling pool (only when the program made it
		 * unreadable): its copy is the parent's. A file region's clean
		 * page is still in its file. */
		if (r->file && !(w & PG_DIRTY))
			return pg_make(w, PG_NONE, 0, 0);
		return pg_make(w, PG_POISONED, 0, 0);
	}
}

static void adopt_pages(struct upg_ctx *ctx, struct upg_region *r)
{
	bool shared = ctx->paging && ctx->paging->parent_pipe >= 0;
	uint64_t resident = 0;

	pthread_mutex_init(&r->lock, NULL);
	atomic_store(&r->snap, NULL);       /* the parent's, with its thread */
	for (uint64_t i = region_next_touched(r, 0); i < r->npages; i = region_walk_next(r, i)) {
		uint64_t w = pg_load(&r->state[i]);

		if (w)
			atomic_store_explicit(&r->state[i], adopt_word(r, i, w, shared, &resident),
					      memory_order_relaxed);
	}
	atomic_store(&r->resident_pages, resident);
	/* In no candidate ring: counted lost, the reclaimer's scan finds them. */
	if (ctx->paging) {
		atomic_fetch_add(&ctx->paging->mem_pages, resident);
		atomic_fetch_add(&ctx->paging->lost, resident);
	}
}

/* Let go of what the parent's threads own, in the child's copy: their
 * descriptors of their own and their buffers. */
static void forget_parent_threads(upg_ctx *ctx)
{
	for (unsigned i = 0; i < ctx->nhandlers; i++) {
		close(ctx->handlers[i].epfd);
		if (ctx->paging)
			paging_handler_forget(&ctx->handlers[i], ctx->paging);
	}
	free(ctx->handlers);
	free(ctx->qsbr_readers);
	ctx->handlers = NULL;
	ctx->qsbr_readers = NULL;
	ctx->nhandlers = 0;
	close(ctx->uffd);
	close(ctx->stop_fd);
	if (ctx->pagemap_fd >= 0)
		close(ctx->pagemap_fd);     /* it reads the parent's */
	ctx->uffd = ctx->stop_fd = ctx->pagemap_fd = -1;
}

int upg_ctx_fork_child(upg_ctx *ctx)
{
	int ret;

	if (!ctx)
		return -EINVAL;
	if (ctx->uffd < 0)
		return -EBADF;   /* let go already */
	/* Locks a thread of the parent may have held at the fork. */
	ctx_locks_init(ctx);
	pthread_mutex_init(&ctx->registry.lock, NULL);
	segv_forked();
	forget_parent_threads(ctx);

	ctx->features &= ~UPG_FEAT_MOVE;    /* shared pages: see above */
	ret = ctx_open_fds(ctx);
	if (ret < 0)
		goto err;
	ctx->stop_fd = fd_high(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
	if (ctx->stop_fd < 0) {
		ret = -errno;
		goto err;
	}
	ret = paging_fork_child(ctx);
	if (ret < 0)
		goto err;
	for (struct upg_region *r = ctx->regions; r; r = r->next) {
		if (atomic_load(&r->dying))
			continue;
		adopt_pages(ctx, r);
		ret = region_register(r);
		if (ret < 0) {
			pr_perr(ret, "cannot register a region again");
			goto err;
		}
	}
	ret = ctx_start(ctx);
	if (ret < 0)
		goto err;
	if (ctx->paging)
		paging_kick(ctx->paging);
	return 0;
err:
	/* Closing the userfaultfd unregisters what was: the regions are
	 * plain memory now, and the context is not to be used. */
	if (ctx->uffd >= 0)
		close(ctx->uffd);
	ctx->uffd = -1;
	pr_perr(ret, "the child of a fork cannot page its regions");
	return ret;
}
