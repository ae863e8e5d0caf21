/*
 * swap_alloc.h - the swap slot allocator: slots handed out in clusters over
 * a set of files, highest priority first, equal priorities striped.
 *
 * Like the kernel's swap clusters: each file is cut into clusters of
 * SWAP_CLUSTER_SLOTS slots. Each file allocates from a current cluster,
 * front to back, so the pages of one batch get adjacent slots (and can be
 * read back with one I/O); when the current cluster is used up the file
 * takes a free cluster, else one with free slots left. Files of one priority
 * take clusters in turn (round-robin by cluster); a lower priority is used
 * only when every file above it is full. A cluster whose slots are all free
 * goes back to the free-cluster list. Every operation costs O(slots + files),
 * never a scan of a file.
 *
 * A slot number encodes its file and its page within the file (see
 * swap_slot()); it fits in 43 bits. Thread-safe: one mutex, taken on the
 * reclaim path, never per fault.
 */
#ifndef UPG_SWAP_ALLOC_H
#define UPG_SWAP_ALLOC_H

#include <stdint.h>

#define SWAP_CLUSTER_SLOTS 64u
#define SWAP_MAX_FILES 32u
#define SWAP_SLOT_FILE_SHIFT 38
#define SWAP_SLOT_PAGE_MASK ((1ull << SWAP_SLOT_FILE_SHIFT) - 1)
/* Pages a file may have: its cluster numbers fit in 32 bits. */
#define SWAP_MAX_FILE_PAGES (1ull << SWAP_SLOT_FILE_SHIFT)

static inline uint64_t swap_slot(unsigned file, uint64_t page)
{
	return (uint64_t)file << SWAP_SLOT_FILE_SHIFT | page;
}
static inline unsigned swap_slot_file(uint64_t slot)
{
	return (unsigned)(slot >> SWAP_SLOT_FILE_SHIFT);
}
static inline uint64_t swap_slot_page(uint64_t slot)
{
	return slot & SWAP_SLOT_PAGE_MASK;
}

struct swap_alloc;

/* Clusters emptied by swap_alloc_free() and kept out of circulation until
 * swap_alloc_release(): the caller punches their holes meanwhile, with no
 * lock held and no risk of punching a slot that was handed out again. */
#define SWAP_HOLD_MAX 64u
struct swap_hold {
	unsigned n;
	struct {
		uint32_t file, cluster;
	} c[SWAP_HOLD_MAX];
};

struct swap_alloc_usage {
	uint64_t slots_total;
	uint64_t slots_used;
	uint64_t clusters_free;
	uint64_t bad_frees;  /* slots freed that were not allocated: caller bugs */
};

/*
 * swap_alloc_create - an allocator over nfiles files (1..SWAP_MAX_FILES) of
 * clusters[i] clusters (1..2^32-1) and priority prio[i].
 *
 * Returns 0 with *out set, or -EINVAL / -ENOMEM.
 */
int swap_alloc_create(unsigned nfiles, const uint32_t *clusters, const int *prio,
		      struct swap_alloc **out);
void swap_alloc_destroy(struct swap_alloc *a);

/*
 * swap_alloc_get - reserve up to n slots into slots[].
 *
 * Slots come in order from the current cluster of the chosen file, moving
 * on to the next cluster (of the next file of the same priority) when one is
 * used up. Returns how many were reserved: fewer than n only when every file
 * is full, 0 when nothing is left.
 */
unsigned swap_alloc_get(struct swap_alloc *a, unsigned n, uint64_t *slots);

/*
 * swap_alloc_free - give n slots back.
 *
 * Slots not currently allocated (or out of range) are skipped and counted in
 * bad_frees. With hold NULL, emptied clusters go straight back to the free
 * list and all n slots are freed. Otherwise emptied clusters are appended
 * to hold instead, and freeing stops early when hold is full: the return
 * value says how many of the n slots were processed.
 */
unsigned swap_alloc_free(struct swap_alloc *a, const uint64_t *slots, unsigned n,
			 struct swap_hold *hold);

/* Put the clusters of hold on the free list and empty hold. */
void swap_alloc_release(struct swap_alloc *a, struct swap_hold *hold);

void swap_alloc_get_usage(struct swap_alloc *a, struct swap_alloc_usage *u);

#endif /* UPG_SWAP_ALLOC_H */
