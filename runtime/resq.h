/*
 * resq.h - single-producer single-consumer rings of page references.
 *
 * Each handler pushes the pages it makes resident; the reclaimer pops them,
 * in that order, as eviction candidates. A reference names a page by region
 * id and index (page_ref()), never by pointer: it may outlive its region,
 * and whoever pops it looks the id up and checks the page's state.
 */
#ifndef UPG_RESQ_H
#define UPG_RESQ_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#define PAGE_REF_INDEX_BITS 40

static inline uint64_t page_ref(uint32_t region_id, uint64_t index)
{
	return (uint64_t)region_id << PAGE_REF_INDEX_BITS | index;
}
static inline uint32_t page_ref_region(uint64_t ref)
{
	return (uint32_t)(ref >> PAGE_REF_INDEX_BITS);
}
static inline uint64_t page_ref_index(uint64_t ref)
{
	return ref & ((1ull << PAGE_REF_INDEX_BITS) - 1);
}

struct resq {
	_Atomic uint64_t head __attribute__((aligned(64)));  /* producer */
	_Atomic uint64_t tail __attribute__((aligned(64)));  /* consumer */
	uint64_t mask;
	uint64_t *ring;
};

/* capacity: a power of two. -ENOMEM. */
int resq_init(struct resq *q, uint64_t capacity);
void resq_fini(struct resq *q);

/* Producer only. False when full (the reference is dropped). */
static inline bool resq_push(struct resq *q, uint64_t ref)
{
	uint64_t h = atomic_load_explicit(&q->head, memory_order_relaxed);

	if (h - atomic_load_explicit(&q->tail, memory_order_acquire) > q->mask)
		return false;
	q->ring[h & q->mask] = ref;
	atomic_store_explicit(&q->head, h + 1, memory_order_release);
	return true;
}

/* Consumer only. False when empty. */
static inline bool resq_pop(struct resq *q, uint64_t *ref)
{
	uint64_t t = atomic_load_explicit(&q->tail, memory_order_relaxed);

	if (t == atomic_load_explicit(&q->head, memory_order_acquire))
		return false;
	*ref = q->ring[t & q->mask];
	atomic_store_explicit(&q->tail, t + 1, memory_order_release);
	return true;
}

#endif /* UPG_RESQ_H */
