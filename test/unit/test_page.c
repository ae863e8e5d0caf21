/* Unit tests: the per-page state word. */
#include <criterion/criterion.h>
#include <pthread.h>

#include "ctx.h"
#include "page.h"
#include "region.h"

/* Many threads race to claim one word; exactly one claim may succeed per
 * round, which is what keeps two handlers from resolving one page. */
#define THREADS 8
#define ROUNDS 20000

static page_word word;
static _Atomic unsigned long claims;
static pthread_barrier_t barrier;

static void *claimer(void *arg)
{
	for (int round = 0; round < ROUNDS; round++) {
		uint64_t old = pg_load(&word);

		pthread_barrier_wait(&barrier);
		while (pg_state(old) == PG_NONE) {
			if (pg_cas(&word, &old, pg_with_state(old, PG_BUSY))) {
				atomic_fetch_add(&claims, 1);
				break;
			}
		}
		pthread_barrier_wait(&barrier);
		if (arg == NULL && pg_state(pg_load(&word)) == PG_BUSY)
			pg_finish(&word, PG_NONE);   /* thread 0 resets for the next round */
		pthread_barrier_wait(&barrier);
	}
	return NULL;
}

Test(page, one_claim_per_round, .timeout = 60)
{
	pthread_t t[THREADS];

	pthread_barrier_init(&barrier, NULL, THREADS);
	for (long i = 0; i < THREADS; i++)
		pthread_create(&t[i], NULL, claimer, i ? (void *)i : NULL);
	for (int i = 0; i < THREADS; i++)
		pthread_join(t[i], NULL);
	cr_assert_eq(atomic_load(&claims), ROUNDS);
}

Test(page, encoding)
{
	uint64_t w = pg_with_state((5ull << PG_SLOT_SHIFT) | PG_DIRTY | (3ull << PG_PIN_SHIFT), PG_RESIDENT);

	cr_assert_eq(pg_state(w), PG_RESIDENT);
	cr_assert_eq(w >> PG_SLOT_SHIFT, 5);
	cr_assert_eq((w & PG_PIN_MASK) >> PG_PIN_SHIFT, 3);
	cr_assert(w & PG_DIRTY);
	cr_assert_eq(pg_state(pg_with_state(w, PG_ZERO)), PG_ZERO);
	cr_assert_eq(pg_with_state(w, PG_ZERO) & ~PG_STATE_MASK, w & ~PG_STATE_MASK);
}

/* A page removed while busy is marked stale for its claimant, not reset
 * under it; idle pages return to NONE keeping only their pins. */
Test(page, forget_marks_busy_pages_stale)
{
	page_word st[4];
	struct upg_ctx ctx = { .paging = NULL };
	struct upg_region r = { .ctx = &ctx, .size = 4 * 4096, .npages = 4, .page_shift = 12,
				.state = st };

	atomic_init(&r.base, 0x40000000);
	atomic_init(&r.resident_pages, 2);
	atomic_init(&st[0], pg_with_state(0, PG_BUSY));
	atomic_init(&st[1], pg_with_state(PG_DIRTY | (1ull << PG_PIN_SHIFT), PG_RESIDENT));
	atomic_init(&st[2], pg_with_state(0, PG_ZERO));
	atomic_init(&st[3], pg_with_state(0, PG_RESIDENT));
	region_forget(&r, 0x40000000, 0x40000000 + 3 * 4096);

	cr_assert_eq(pg_state(st[0]), PG_BUSY);
	cr_assert(st[0] & PG_STALE);
	cr_assert_eq(st[1], 1ull << PG_PIN_SHIFT, "pins survive, the rest is reset");
	cr_assert_eq(st[2], 0);
	cr_assert_eq(pg_state(st[3]), PG_RESIDENT, "outside the range");
	cr_assert_eq(atomic_load(&r.resident_pages), 1);

	uint64_t before = pg_finish(&st[0], PG_RESIDENT);

	cr_assert(before & PG_STALE, "the claimant sees the removal");
	cr_assert_eq(st[0], (uint64_t)PG_RESIDENT);
}
