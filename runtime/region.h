/*
 * region.h - regions and their per-page state.
 *
 * A region is one anonymous mapping registered with the context's
 * userfaultfd, plus one page_word per page (page.h). The state array lives
 * in the runtime's own memory: a calloc'd array for small regions, an
 * untouched MAP_NORESERVE mapping for large ones, so a sparse region costs
 * nothing until touched.
 */
#ifndef UPG_REGION_H
#define UPG_REGION_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "datafile.h"
#include "page.h"

struct upg_ctx;
struct upg_snap;

struct range {
	uintptr_t start;
	uintptr_t end;
};

struct upg_region {
	struct upg_ctx *ctx;
	struct upg_region *prev, *next;     /* ctx->regions, under ctx->lock */
	_Atomic uintptr_t base;     /* changes only when mremap moves the whole region */
	uint64_t size;
	uint64_t npages;
	unsigned page_shift;
	uint32_t id;                /* index in ctx->by_id: how queues name it */
	page_word *state;
	size_t state_bytes;
	bool state_mapped;          /* state came from mmap, not calloc */
	uint32_t *crc;              /* crc32c of each page's copy in swap
				     * (paging contexts only; same allocation
				     * rules as state) */
	size_t crc_bytes;
	_Atomic uint64_t resident_pages;    /* pages whose word says PG_RESIDENT */
	_Atomic bool in_registry;
	_Atomic bool dying;
	/* A file region (the database API): its pages live in file number
	 * file_no of the context's data-file backend, page i at slot
	 * region_file_slot(r, i), and never go to swap. */
	bool file;
	bool rdonly;
	uint32_t file_no;
	/* enum upg_advice for the whole region (NORMAL, SEQUENTIAL, RANDOM):
	 * steers readahead (swapin.c). */
	_Atomic uint32_t advice;
	/* The snapshot in progress (snapshot.h), or NULL. */
	_Atomic(struct upg_snap *) snap;

	/* Parts of the range the application unmapped (munmap, or mremap of
	 * part of it away): never touched again by upager. Offsets from base. */
	pthread_mutex_t lock;       /* ranks after the registry's */
	struct range *holes;
	size_t nholes;
};

static inline uintptr_t region_base(const struct upg_region *r)
{
	return atomic_load_explicit(&r->base, memory_order_relaxed);
}

static inline uint64_t region_page_size(const struct upg_region *r)
{
	return 1ull << r->page_shift;
}

/* Where page idx of r is now. */
static inline uintptr_t region_page_addr(const struct upg_region *r, uint64_t idx)
{
	return region_base(r) + (idx << r->page_shift);
}

/* The data-file slot of page idx of a file region. */
static inline uint64_t region_file_slot(const struct upg_region *r, uint64_t idx)
{
	return datafile_slot(r->file_no, idx);
}

/* Page index of addr, which must lie inside r. */
static inline uint64_t region_index(const struct upg_region *r, uintptr_t addr)
{
	return (addr - region_base(r)) >> r->page_shift;
}

/*
 * The pages in [start, end) (absolute addresses, clipped to r) lost their
 * contents: MADV_DONTNEED or munmap. Their state returns to PG_NONE; a page
 * being resolved is marked PG_STALE instead, for its claimant to see.
 * Called by the handler that read the event.
 */
void region_forget(struct upg_region *r, uintptr_t start, uintptr_t end);

/* [start, end) of r is no longer mapped by the application. Removes r from
 * the registry once nothing of it is left. */
void region_unmapped(struct upg_region *r, uintptr_t start, uintptr_t end);

/* The application moved [from, from+len) to `to` (UFFD_EVENT_REMAP). */
void region_remapped(struct upg_region *r, uintptr_t from, uintptr_t to, uint64_t len);

/*
 * Release page idx of r, claimed by the caller, into the word `next` (a
 * pg_make() word; pins are kept), then wake the faults that came while it
 * was busy (PG_WAITERS): they were left to the claimant. If the application
 * removed the page meanwhile (PG_STALE), it is forgotten (region_forget)
 * right after. Returns the word as it was.
 */
uint64_t page_release(struct upg_region *r, uint64_t idx, uint64_t next);

/* Words per page of a state array. */
#define REGION_WORDS_PER_PAGE (4096 / sizeof(page_word))
/*
 * The first page index from idx on whose word may be other than PG_NONE,
 * or r->npages. A large region's state array is a mapping of its own whose
 * pages never touched are zeros: walks over every page (the reclaimer's
 * scan, fork, forgetting a range) skip them without reading them (a read
 * would map them, and a region of 64 GiB has 128 MiB of words), as
 * /proc/self/pagemap tells (where the kernel swapped words out too).
 */
uint64_t region_next_touched(const struct upg_region *r, uint64_t idx);
/* The page after idx in such a walk:
 *   for (i = region_next_touched(r, 0); i < r->npages; i = region_walk_next(r, i)) */
static inline uint64_t region_walk_next(const struct upg_region *r, uint64_t idx)
{
	idx++;
	return idx % REGION_WORDS_PER_PAGE ? idx : region_next_touched(r, idx);
}
/* Register what the application still maps of r with r->ctx->uffd (a
 * forked child's new one: fork.c). */
int region_register(struct upg_region *r);
/* The live region with this id, or NULL. Caller is an online QSBR reader. */
struct upg_region *region_by_id(struct upg_ctx *ctx, uint32_t id);

/* Destroy every region of ctx (upg_ctx_destroy). */
void regions_destroy_all(struct upg_ctx *ctx);

#endif /* UPG_REGION_H */
