/*
 * test_concurrency.c - many threads faulting on the same pages at once, and
 * regions coming and going while other regions fault.
 *
 * Each page must be resolved exactly once (zero_filled + zero_mapped ==
 * pages) however many threads fault on it together; every thread's writes
 * must survive; no thread may be left asleep on a fault. Threads are joined
 * with a deadline (join_or_fail) so that a lost wake-up fails with a message
 * rather than with the test's timeout.
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

#include "itest.h"

#define NPAGES 4096
#define NTHREADS 8
#define JOIN_S 20.0

enum order { SAME_ORDER, SHUFFLED };
enum access { WRITE_ONLY, READ_THEN_WRITE };

struct race {
	uint8_t *base;
	size_t psize;
	enum order order;
	enum access access;
	uint64_t round;
	pthread_barrier_t barrier;
	_Atomic long bad_reads;     /* a slot read nonzero before its owner wrote it */
};

struct racer {
	pthread_t thread;
	struct race *race;
	unsigned t;
};

static void *racer_main(void *arg)
{
	struct racer *me = arg;
	struct race *race = me->race;
	uint64_t seed = me->t + 1 + race->round * 131;
	uint32_t *order = malloc(NPAGES * sizeof(*order));
	long bad = 0;

	if (!order)
		abort();
	if (race->order == SHUFFLED)
		shuffle_indices(order, NPAGES, me->t + 1 + race->round * 977);
	else
		for (uint32_t i = 0; i < NPAGES; i++)
			order[i] = i;
	pthread_barrier_wait(&race->barrier);
	for (uint32_t i = 0; i < NPAGES; i++) {
		uint64_t page = order[i];
		volatile uint64_t *w = (volatile uint64_t *)(race->base + page * race->psize);

		/* Half of the first touches are reads: the page may be mapped
		 * to the zero page first and copied on write by the kernel. */
		if (race->access == READ_THEN_WRITE && (xorshift64(&seed) & 1))
			bad += w[me->t] != 0;
		w[me->t] = pattern_word(me->t, page, me->t);
	}
	atomic_fetch_add(&race->bad_reads, bad);
	free(order);
	return NULL;
}

/* Every page: word t holds thread t's word, every other word is zero. */
static long check_race_page(const uint8_t *base, size_t psize, uint64_t page)
{
	const uint64_t *w = (const uint64_t *)(base + page * psize);

	for (unsigned t = 0; t < NTHREADS; t++)
		if (w[t] != pattern_word(t, page, t))
			return t;
	return all_zero(w + NTHREADS, psize - NTHREADS * 8) ? -1 : NTHREADS;
}

/* One race: a fresh context and region, NTHREADS threads over all pages. */
static void race_once(const struct upg_config *cfg, enum order order, enum access access,
		      uint64_t round)
{
	size_t ps = itest_page();
	upg_ctx *ctx = ctx_new(cfg);
	upg_region *r = region_new_per_page(ctx, (uint64_t)NPAGES * ps, 0);
	/* Static: a thread left stuck by a failed test must not point into a
	 * stack frame the failure unwound. */
	static struct race race;
	static struct racer racers[NTHREADS];
	struct upg_stats st;

	race = (struct race){
		.base = upg_region_addr(r), .psize = ps, .order = order, .access = access,
		.round = round,
	};

	pthread_barrier_init(&race.barrier, NULL, NTHREADS);
	for (unsigned t = 0; t < NTHREADS; t++) {
		racers[t] = (struct racer){ .race = &race, .t = t };
		cr_assert_eq(pthread_create(&racers[t].thread, NULL, racer_main, &racers[t]), 0);
	}
	join_or_fail(&racers[0].thread, sizeof(racers[0]), NTHREADS, ctx, JOIN_S);
	pthread_barrier_destroy(&race.barrier);

	cr_assert_eq(atomic_load(&race.bad_reads), 0, "%ld slots read nonzero before written",
		     atomic_load(&race.bad_reads));
	for (uint64_t p = 0; p < NPAGES; p++) {
		long bad = check_race_page(race.base, ps, p);

		cr_assert_eq(bad, -1, "page %llu: word %ld wrong", (unsigned long long)p, bad);
	}

	/* Each page resolved exactly once, however many threads faulted. */
	stats_wait(ctx, st, st.zero_filled + st.zero_mapped >= NPAGES, 10000);
	itest_sleep_ms(20);
	st = stats_of(ctx);
	cr_assert_eq(st.zero_filled + st.zero_mapped, NPAGES,
		     "%llu pages resolved (%llu filled, %llu zero-mapped) for %d pages",
		     (unsigned long long)(st.zero_filled + st.zero_mapped),
		     (unsigned long long)st.zero_filled, (unsigned long long)st.zero_mapped,
		     NPAGES);
	cr_assert_geq(st.faults, NPAGES);
	cr_assert_eq(st.errors, 0);
	cr_assert_eq(st.faults_stale, 0);
	cr_assert_eq(st.faults_read + st.faults_write + st.faults_wp + st.faults_minor, st.faults);
	if (access == WRITE_ONLY) {
		cr_assert_eq(st.zero_mapped, 0, "no thread read, yet pages were zero-mapped");
		cr_assert_eq(st.faults_read, 0);
		cr_assert_eq(st.resident_bytes, (uint64_t)NPAGES * ps);
	} else {
		/* Pages first resolved for a read stay zero-mapped as far as
		 * upager knows; the kernel copied them on write. */
		cr_assert_eq(st.resident_bytes, st.zero_filled * ps);
	}
	cr_assert_eq(upg_region_destroy(r), 0);
	upg_ctx_destroy(ctx);
}

static void run_race(const struct upg_config *cfg, enum order order, enum access access,
		     unsigned rounds)
{
	for (unsigned i = 0; i < rounds; i++)
		race_once(cfg, order, access, i);
}

Test(concurrency, same_pages_same_order, .timeout = 60)
{
	run_race(NULL, SAME_ORDER, WRITE_ONLY, 2);
}

Test(concurrency, same_pages_shuffled, .timeout = 60)
{
	run_race(NULL, SHUFFLED, WRITE_ONLY, 2);
}

/*
 * Reads and writes racing on the same pages. A reader's fault maps the zero
 * page; a writer then copies it on write in the kernel, which clears the pte
 * for a moment. A third thread faulting then may see the cleared pte and go
 * to sleep after the claimant's wake-up: its message must still wake it.
 * Several rounds, because the window is small.
 */
Test(concurrency, mixed_read_write_same_order, .timeout = 90)
{
	run_race(NULL, SAME_ORDER, READ_THEN_WRITE, 8);
}

Test(concurrency, mixed_read_write_shuffled, .timeout = 90)
{
	run_race(NULL, SHUFFLED, READ_THEN_WRITE, 8);
}

/* More handlers than CPUs, unpinned: handlers race each other for the same
 * page's messages. */
Test(concurrency, same_pages_many_handlers, .timeout = 90)
{
	struct upg_config cfg;

	upg_config_init(&cfg);
	cfg.handler_threads = 6;
	cfg.pin_handlers = 0;
	run_race(&cfg, SHUFFLED, READ_THEN_WRITE, 4);
}

/* ------------------------------------------------------------------------
 * A fault retried while its page is still claimed
 */

struct remover {
	pthread_t thread;
	upg_ctx *ctx;
	size_t psize;
	unsigned id;
	_Atomic int *stop;
	_Atomic long *bad;
};

/* Keep the context's userfaultfd busy with REMOVE events: while one is
 * pending the kernel fails UFFDIO_COPY/ZEROPAGE with EAGAIN. */
static void *remover_main(void *arg)
{
	struct remover *me = arg;
	upg_region *r;
	uint8_t *p;

	if (upg_region_create(me->ctx, 16 * me->psize, NULL, &r) < 0) {
		atomic_fetch_add(me->bad, 1);
		return NULL;
	}
	p = upg_region_addr(r);
	while (!atomic_load(me->stop)) {
		touch_write(p, 1);
		madvise(p, 16 * me->psize, MADV_DONTNEED);
	}
	upg_region_destroy(r);
	return NULL;
}

/* Fault every page of an own region, drop it, again. */
static void *refaulter_main(void *arg)
{
	struct remover *me = arg;
	const uint64_t n = 1024;
	size_t ps = me->psize;
	upg_region *r;
	uint8_t *p;

	if (upg_region_create(me->ctx, n * ps, NULL, &r) < 0) {
		atomic_fetch_add(me->bad, 1);
		return NULL;
	}
	p = upg_region_addr(r);
	for (uint64_t round = 0; round < 8; round++) {
		fill_pages(p, ps, 0, n, me->id * 100 + round);
		if (check_pages(p, ps, 0, n, me->id * 100 + round) >= 0)
			atomic_fetch_add(me->bad, 1);
		madvise(p, n * ps, MADV_DONTNEED);
	}
	upg_region_destroy(r);
	return NULL;
}

/*
 * Regression: a handler whose UFFDIO_COPY fails with EAGAIN (a REMOVE event
 * pending on the userfaultfd) wakes the faulting thread before it releases
 * its claim on the page. The thread faults again at once; the handler that
 * reads that second message finds the page still claimed, takes it for a
 * concurrent fault another handler will wake, and drops it: the thread
 * sleeps forever (fault.c, resolve_missing, the PG_BUSY -> FAULT_SHARED
 * path).
 */
Test(concurrency, refault_while_claimed_after_eagain, .timeout = 90)
{
	static _Atomic int stop;
	static _Atomic long bad;
	static struct remover th[4];
	upg_ctx *ctx = ctx_new(NULL);
	struct upg_stats st;

	for (unsigned i = 0; i < 4; i++) {
		th[i] = (struct remover){ .ctx = ctx, .psize = itest_page(), .id = i,
					  .stop = &stop, .bad = &bad };
		cr_assert_eq(pthread_create(&th[i].thread, NULL,
					    i < 1 ? remover_main : refaulter_main, &th[i]), 0);
	}
	/* The faulters first; then stop the remover. */
	join_or_fail(&th[1].thread, sizeof(th[0]), 3, ctx, JOIN_S);
	atomic_store(&stop, 1);
	join_or_fail(&th[0].thread, sizeof(th[0]), 1, ctx, JOIN_S);
	cr_assert_eq(atomic_load(&bad), 0, "wrong contents or failed creates");
	st = stats_of(ctx);
	cr_assert_eq(st.errors, 0);
	cr_assert_gt(st.events_remove, 0);
	upg_ctx_destroy(ctx);
}

/* ------------------------------------------------------------------------
 * Churn: regions created and destroyed while others fault
 */

#define CHURNERS 2
#define FAULTERS 3
#define FAULT_PAGES 512
#define STRESS_NS (1500ull * 1000000ull)

struct stress {
	upg_ctx *ctx;
	size_t psize;
	uint64_t deadline;
	pthread_barrier_t barrier;
	_Atomic long errors;        /* API calls that failed */
	_Atomic long bad;           /* pages with wrong contents */
	_Atomic long rounds;        /* work done, to show the test did something */
};

struct stress_thread {
	pthread_t thread;
	struct stress *s;
	unsigned id;
};

/* Create a region of a varying size, touch a few pages, check, destroy. */
static void *churner_main(void *arg)
{
	struct stress_thread *me = arg;
	struct stress *s = me->s;
	uint64_t seed = 0x1234 + me->id, n = 0;

	pthread_barrier_wait(&s->barrier);
	while (itest_now_ns() < s->deadline || n < 20) {
		uint64_t npages = 1 + xorshift64(&seed) % 64;
		upg_region *r;
		uint8_t *p;

		if (upg_region_create(s->ctx, npages * s->psize, NULL, &r) < 0) {
			atomic_fetch_add(&s->errors, 1);
			continue;
		}
		p = upg_region_addr(r);
		for (uint64_t k = 0; k < npages; k += 7)
			pattern_fill(p + k * s->psize, s->psize, n, k);
		for (uint64_t k = 0; k < npages; k += 7)
			if (pattern_check(p + k * s->psize, s->psize, n, k) >= 0)
				atomic_fetch_add(&s->bad, 1);
		/* Page 1 is never written: a read fault. */
		if (npages > 1 && !all_zero(p + s->psize, s->psize))
			atomic_fetch_add(&s->bad, 1);
		if (upg_region_destroy(r) < 0)
			atomic_fetch_add(&s->errors, 1);
		n++;
	}
	atomic_fetch_add(&s->rounds, (long)n);
	return NULL;
}

/* Own one region; fault all of it in a shuffled order, check, drop it with
 * MADV_DONTNEED (a REMOVE event), and again. */
static void *faulter_main(void *arg)
{
	struct stress_thread *me = arg;
	struct stress *s = me->s;
	size_t ps = s->psize;
	uint32_t order[FAULT_PAGES];
	upg_region *r;
	uint8_t *p;
	uint64_t n = 0;

	if (upg_region_create(s->ctx, FAULT_PAGES * ps, NULL, &r) < 0) {
		atomic_fetch_add(&s->errors, 1);
		pthread_barrier_wait(&s->barrier);
		return NULL;
	}
	p = upg_region_addr(r);
	pthread_barrier_wait(&s->barrier);
	while (itest_now_ns() < s->deadline || n < 5) {
		shuffle_indices(order, FAULT_PAGES, me->id * 1000 + n);
		for (uint32_t i = 0; i < FAULT_PAGES; i++) {
			uint8_t *page = p + (size_t)order[i] * ps;

			/* Every third page is read first. */
			if (order[i] % 3 == 0 && !all_zero(page, ps))
				atomic_fetch_add(&s->bad, 1);
			pattern_fill(page, ps, n, order[i]);
		}
		if (check_pages(p, ps, 0, FAULT_PAGES, n) >= 0)
			atomic_fetch_add(&s->bad, 1);
		if (madvise(p, FAULT_PAGES * ps, MADV_DONTNEED) < 0)
			atomic_fetch_add(&s->errors, 1);
		/* A sample reads back as zeros; the rest stays unmapped, for
		 * write faults in the next round. */
		for (uint32_t k = 1; k < FAULT_PAGES; k += 5)
			if (!all_zero(p + (size_t)k * ps, ps))
				atomic_fetch_add(&s->bad, 1);
		n++;
	}
	atomic_fetch_add(&s->rounds, (long)n);
	if (upg_region_destroy(r) < 0)
		atomic_fetch_add(&s->errors, 1);
	return NULL;
}

Test(concurrency, churn_while_faulting, .timeout = 90)
{
	static struct stress s;
	static struct stress_thread th[CHURNERS + FAULTERS];
	struct upg_stats st;

	s = (struct stress){ .psize = itest_page() };
	s.ctx = ctx_new(NULL);
	pthread_barrier_init(&s.barrier, NULL, CHURNERS + FAULTERS);
	s.deadline = itest_now_ns() + STRESS_NS;
	for (unsigned i = 0; i < CHURNERS + FAULTERS; i++) {
		th[i] = (struct stress_thread){ .s = &s, .id = i };
		cr_assert_eq(pthread_create(&th[i].thread, NULL,
					    i < CHURNERS ? churner_main : faulter_main, &th[i]), 0);
	}
	join_or_fail(&th[0].thread, sizeof(th[0]), CHURNERS + FAULTERS, s.ctx,
		     JOIN_S + STRESS_NS / 1e9);
	pthread_barrier_destroy(&s.barrier);

	cr_assert_eq(atomic_load(&s.errors), 0, "%ld API calls failed", atomic_load(&s.errors));
	cr_assert_eq(atomic_load(&s.bad), 0, "%ld pages had wrong contents", atomic_load(&s.bad));
	cr_assert_gt(atomic_load(&s.rounds), 0);
	st = stats_of(s.ctx);
	cr_assert_eq(st.regions, 0);
	cr_assert_eq(st.errors, 0, "%llu faults could not be resolved",
		     (unsigned long long)st.errors);
	cr_assert_gt(st.events_remove, 0);
	upg_ctx_destroy(s.ctx);
}

/* Threads that each create, fault and destroy their own regions, with no
 * shared region at all: creation and destruction contend only inside
 * upager (registry, grace periods). */
static void *own_region_main(void *arg)
{
	struct stress_thread *me = arg;
	struct stress *s = me->s;
	size_t ps = s->psize;

	pthread_barrier_wait(&s->barrier);
	for (unsigned n = 0; n < 200; n++) {
		upg_region *r;
		uint8_t *p;

		if (upg_region_create(s->ctx, 8 * ps, NULL, &r) < 0) {
			atomic_fetch_add(&s->errors, 1);
			continue;
		}
		p = upg_region_addr(r);
		fill_pages(p, ps, 0, 8, me->id * 1000 + n);
		if (check_pages(p, ps, 0, 8, me->id * 1000 + n) >= 0)
			atomic_fetch_add(&s->bad, 1);
		if (upg_region_destroy(r) < 0)
			atomic_fetch_add(&s->errors, 1);
		atomic_fetch_add(&s->rounds, 1);
	}
	return NULL;
}

Test(concurrency, parallel_create_destroy, .timeout = 60)
{
	static struct stress s;
	static struct stress_thread th[4];
	struct upg_stats st;

	s = (struct stress){ .psize = itest_page() };
	s.ctx = ctx_new(NULL);
	pthread_barrier_init(&s.barrier, NULL, 4);
	for (unsigned i = 0; i < 4; i++) {
		th[i] = (struct stress_thread){ .s = &s, .id = i };
		cr_assert_eq(pthread_create(&th[i].thread, NULL, own_region_main, &th[i]), 0);
	}
	join_or_fail(&th[0].thread, sizeof(th[0]), 4, s.ctx, JOIN_S);
	pthread_barrier_destroy(&s.barrier);
	cr_assert_eq(atomic_load(&s.errors), 0);
	cr_assert_eq(atomic_load(&s.bad), 0);
	cr_assert_eq(atomic_load(&s.rounds), 800);
	/* Each page filled once, by its fault or ahead of it (zero-ahead). */
	stats_wait(s.ctx, st, st.zero_filled + st.zero_ahead == 800 * 8, 5000);
	cr_assert_eq(st.regions, 0);
	cr_assert_eq(st.errors, 0);
	upg_ctx_destroy(s.ctx);
}
