/*
 * fork.c - fork(2) of a process whose regions are paged.
 *
 * Contexts do not ask for fork events: the kernel gives the child the
 * regions as plain private memory, copy-on-write, and reads as zeros what
 * was not mapped. So before the fork every page that upager holds out of
 * the mapping (swap, cooling pool, a move in progress) is brought back by
 * touching it, with new evictions stopped and the limit lifted, so that
 * none leaves again until the parent side is done. This costs the memory
 * and the reads of everything paged out, for the time of the fork; reading
 * the parent's swap from the child instead would need the parent to keep
 * every slot intact until the child is done with it.
 */
#include <errno.h>
#include <time.h>
#include <unistd.h>

#include "ctx.h"
#include "page.h"
#include "paging.h"
#include "region.h"

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

	for (uint64_t i = 0; i < r->npages; i++) {
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

	for (uint64_t i = 0; i < r->npages; i++)
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
	if (atomic_fetch_sub(&pg->hold, 1) == 1)
		paging_kick(pg);
}

void upg_ctx_fork_child(upg_ctx *ctx)
{
	if (!ctx || ctx->uffd < 0)
		return;
	close(ctx->uffd);
	ctx->uffd = -1;
}
