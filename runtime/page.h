/*
 * page.h - the per-page state word.
 *
 * Every page of a region is described by one 64-bit atomic word. A handler
 * that wants to change what is mapped at a page first claims it by moving the
 * word to PG_BUSY with a compare-and-swap; only the claimant may move it on.
 * So two handlers never resolve one page, and no lock is taken on the fault
 * path.
 *
 *   bits  0..3   state (enum page_state)
 *   bit   4      STALE: the page was removed (MADV_DONTNEED, munmap) while
 *                busy; its claimant must not leave it mapped
 *   bit   5      DIRTY: written since its copy in the backend was made
 *   bits  8..19  pin count
 *   bits 20..63  backend slot + 1 (0 = no slot)
 */
#ifndef UPG_PAGE_H
#define UPG_PAGE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

enum page_state {
	PG_NONE = 0,     /* never touched, or dropped: reads as zeros */
	PG_ZERO,         /* mapped to the shared zero page */
	PG_RESIDENT,     /* mapped with private contents */
	PG_BUSY,         /* claimed by a handler that is changing its mapping */
};

#define PG_STATE_MASK 0xfull
#define PG_STALE (1ull << 4)
#define PG_DIRTY (1ull << 5)
#define PG_PIN_SHIFT 8
#define PG_PIN_MASK (0xfffull << PG_PIN_SHIFT)
#define PG_SLOT_SHIFT 20

typedef _Atomic uint64_t page_word;

static inline enum page_state pg_state(uint64_t w)
{
	return (enum page_state)(w & PG_STATE_MASK);
}

static inline uint64_t pg_with_state(uint64_t w, enum page_state s)
{
	return (w & ~PG_STATE_MASK) | (uint64_t)s;
}

/* Move *p from `old` to `new`; on failure `old` holds the current word.
 * Acquire on success so the claimant sees what the previous owner wrote;
 * release so its own writes are visible to the next claimant. */
static inline bool pg_cas(page_word *p, uint64_t *old, uint64_t new)
{
	return atomic_compare_exchange_weak_explicit(p, old, new, memory_order_acq_rel,
						     memory_order_relaxed);
}

static inline uint64_t pg_load(page_word *p)
{
	return atomic_load_explicit(p, memory_order_acquire);
}

/* Release a claimed page into state s, clearing STALE. A CAS loop, not a
 * store: an event handler may set STALE on a busy page at any time. Returns
 * the word as it was just before, so the caller can see PG_STALE. */
static inline uint64_t pg_finish(page_word *p, enum page_state s)
{
	uint64_t cur = atomic_load_explicit(p, memory_order_relaxed);

	while (!pg_cas(p, &cur, pg_with_state(cur & ~PG_STALE, s)))
		;
	return cur;
}

#endif /* UPG_PAGE_H */
