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
 *   bit   5      DIRTY: written since its copy in swap was made (or never
 *                written out)
 *   bit   6      WAITERS: a fault came while the page was busy; whoever
 *                releases it wakes the range
 *   bit   7      RA: read ahead and not yet reached by the fault stream
 *   bits  8..19  pin count
 *   bits 20..63  RESIDENT, SWAPPED: swap slot + 1 of the page's copy
 *                (0 = none), or for a page of a file region its data-file
 *                slot + 1 (datafile.h); COOLING: the frame holding it; BUSY:
 *                what the state before held, for the claimant
 *
 * In a file region, NONE means "in its file, never read": a fault reads it
 * like a SWAPPED page (fault.c).
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
	PG_BUSY,         /* claimed by a thread that is changing its mapping */
	PG_SWAPPED,      /* not mapped; contents in swap at the slot */
	PG_COOLING,      /* not mapped; contents in a cooling frame */
	PG_POISONED,     /* contents lost (I/O error): a touch gets SIGBUS */
};

#define PG_STATE_MASK 0xfull
#define PG_STALE (1ull << 4)
#define PG_DIRTY (1ull << 5)
#define PG_WAITERS (1ull << 6)
#define PG_RA (1ull << 7)
#define PG_PIN_SHIFT 8
#define PG_PIN_MASK (0xfffull << PG_PIN_SHIFT)
#define PG_SLOT_SHIFT 20
#define PG_FLAGS_MASK ((1ull << PG_SLOT_SHIFT) - 1)

typedef _Atomic uint64_t page_word;

static inline enum page_state pg_state(uint64_t w)
{
	return (enum page_state)(w & PG_STATE_MASK);
}

static inline uint64_t pg_with_state(uint64_t w, enum page_state s)
{
	return (w & ~PG_STATE_MASK) | (uint64_t)s;
}

/* The value in bits 20..63 (slot + 1, or a frame index). */
static inline uint64_t pg_val(uint64_t w)
{
	return w >> PG_SLOT_SHIFT;
}

/* A word in state s holding value v, keeping w's pins. */
static inline uint64_t pg_make(uint64_t w, enum page_state s, uint64_t v, uint64_t flags)
{
	return (w & PG_PIN_MASK) | flags | (v << PG_SLOT_SHIFT) | (uint64_t)s;
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

/* Release a claimed page into state s, clearing STALE and WAITERS. A CAS
 * loop, not a store: an event handler may set STALE, and a handler WAITERS,
 * on a busy page at any time. Returns the word as it was just before, so
 * the caller can see PG_STALE and PG_WAITERS. */
static inline uint64_t pg_finish(page_word *p, enum page_state s)
{
	uint64_t cur = atomic_load_explicit(p, memory_order_relaxed);

	while (!pg_cas(p, &cur, pg_with_state(cur & ~(PG_STALE | PG_WAITERS), s)))
		;
	return cur;
}

/* The same, replacing everything but the pins with `next` (a pg_make()
 * word). */
static inline uint64_t pg_finish_to(page_word *p, uint64_t next)
{
	uint64_t cur = atomic_load_explicit(p, memory_order_relaxed);

	while (!pg_cas(p, &cur, (cur & PG_PIN_MASK) | (next & ~PG_PIN_MASK)))
		;
	return cur;
}

#endif /* UPG_PAGE_H */
