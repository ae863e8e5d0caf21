/*
 * test_events.c - the application changing a region's layout under upager:
 * MADV_DONTNEED (REMOVE events), munmap (UNMAP), mremap (REMAP).
 *
 * The kernel lets madvise/munmap/mremap return once a handler has read the
 * event, not once upager has acted on it; tests wait for the effect they
 * check (stats_wait, wait_region_addr). Accesses that might never complete
 * are made on a helper thread joined with a deadline (touch_or_fail).
 *
 * Each layout test runs with the base page and with 16 KiB upager pages,
 * changing the layout on upager-page boundaries; the *_within_page tests
 * change it inside one upager page.
 */
#include <pthread.h>
#include <stdatomic.h>

#include "itest.h"

#define N 32        /* upager pages per region */
#define JOIN_S 15.0

static uint8_t *pg(void *base, uint64_t psize, uint64_t i)
{
	return (uint8_t *)base + i * psize;
}

/* Reserve len bytes aligned to align, PROT_NONE: a place to mremap to. */
static void *reserve(size_t len, size_t align)
{
	uint8_t *p = mmap(NULL, len + align, PROT_NONE,
			  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	uint8_t *a;

	cr_assert_neq(p, MAP_FAILED, "mmap reservation: %s", strerror(errno));
	a = (uint8_t *)(((uintptr_t)p + align - 1) & ~(uintptr_t)(align - 1));
	if (a > p)
		munmap(p, (size_t)(a - p));
	munmap(a + len, (size_t)(p + align - a));
	return a;
}

/* Map anonymous memory exactly at addr, or return NULL if something is
 * there already (or the kernel lacks MAP_FIXED_NOREPLACE). */
static void *map_at(void *addr, size_t len)
{
	void *p = mmap(addr, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);

	if (p == MAP_FAILED)
		return NULL;
	if (p != addr) {
		munmap(p, len);
		return NULL;
	}
	return p;
}

static void wait_region_addr(upg_region *r, void *want, int timeout_ms)
{
	uint64_t deadline = itest_now_ns() + itest_scaled_ms(timeout_ms) * 1000000ull;

	while (upg_region_addr(r) != want && itest_now_ns() < deadline)
		usleep(200);
	cr_assert_eq(upg_region_addr(r), want, "region address %p, moved to %p",
		     upg_region_addr(r), want);
}

/* Run fn(arg) on a thread and fail if it does not finish in time: the
 * accesses it makes may fault on a page upager never resolves. */
struct toucher {
	pthread_t thread;
	void (*fn)(void *);
	void *arg;
};

static void *toucher_main(void *arg)
{
	struct toucher *t = arg;

	t->fn(t->arg);
	return NULL;
}

static void touch_or_fail(upg_ctx *ctx, void (*fn)(void *), void *arg)
{
	/* Static, like everything a toucher is handed: a thread left stuck by
	 * a failed test must not point into a stack frame the failure
	 * unwound. */
	static struct toucher t;

	t = (struct toucher){ .fn = fn, .arg = arg };
	cr_assert_eq(pthread_create(&t.thread, NULL, toucher_main, &t), 0);
	join_or_fail(&t.thread, sizeof(t), 1, ctx, JOIN_S);
}

/* ------------------------------------------------------------------------
 * MADV_DONTNEED
 */

static void dontneed(uint64_t psize)
{
	upg_ctx *ctx = ctx_new(NULL);
	upg_region *r = region_new_per_page(ctx, N * psize, psize);
	uint8_t *p = upg_region_addr(r);
	int zeropage = !!(upg_ctx_features(ctx) & UPG_FEAT_ZEROPAGE);
	struct upg_stats st, st0;

	if (!(upg_ctx_features(ctx) & UPG_FEAT_EVENT_REMOVE))
		cr_skip_test("kernel lacks UFFD_FEATURE_EVENT_REMOVE");
	fill_pages(p, psize, 0, N, 1);
	stats_wait(ctx, st0, st0.zero_filled == N && st0.resident_bytes == N * psize, 5000);

	/* Drop pages [8, 24). */
	cr_assert_eq(madvise(pg(p, psize, 8), 16 * psize, MADV_DONTNEED), 0);
	stats_wait(ctx, st, st.events_remove >= 1, 5000);
	stats_wait(ctx, st, st.resident_bytes == (N - 16) * psize, 5000);
	cr_assert_eq(check_pages(p, psize, 0, 8, 1), -1, "page before the dropped range changed");
	cr_assert_eq(check_pages(p, psize, 24, N - 24, 1), -1, "page after the dropped range changed");

	/* Dropped pages read as zeros, through upager again... */
	cr_assert_eq(check_zero(p, psize, 8, 8), -1);
	stats_wait(ctx, st, st.zero_mapped + st.zero_filled == N + 8, 5000);
	cr_assert_eq(st.zero_mapped, zeropage ? 8 : 0);
	/* ... and can be written again. */
	fill_pages(p, psize, 16, 8, 2);
	stats_wait(ctx, st, st.zero_mapped + st.zero_filled == N + 16, 5000);
	stats_wait(ctx, st, st.resident_bytes == (N - 16 + 8 + (zeropage ? 0 : 8)) * psize, 5000);
	cr_assert_eq(check_pages(p, psize, 16, 8, 2), -1);
	cr_assert_eq(check_pages(p, psize, 0, 8, 1), -1);
	cr_assert_eq(check_pages(p, psize, 24, N - 24, 1), -1);
	stats_wait(ctx, st, new_faults(&st) == N + 16, 5000);
	cr_assert_eq(st.faults_stale, 0);
	cr_assert_eq(st.errors, 0);

	/* The whole region, twice: nothing left resident, all zeros. */
	cr_assert_eq(madvise(p, N * psize, MADV_DONTNEED), 0);
	cr_assert_eq(madvise(p, N * psize, MADV_DONTNEED), 0);
	stats_wait(ctx, st, st.resident_bytes == 0, 5000);
	cr_assert_eq(check_zero(p, psize, 0, N), -1);
	cr_assert_eq(upg_region_destroy(r), 0);
	upg_ctx_destroy(ctx);
}

Test(events, dontneed, .timeout = 30)
{
	dontneed(itest_page());
}

Test(events, dontneed_16k, .timeout = 30)
{
	dontneed(16 * KiB);
}

/*
 * Regression: madvise returns once a handler has read the REMOVE event, not
 * once upager has forgotten the pages. A read fault right after it can reach
 * another handler first: it finds the page still PG_RESIDENT, maps the zero
 * page and leaves it PG_ZERO without taking the page off resident_pages;
 * the event handler then finds PG_ZERO and takes nothing off either
 * (fault.c, resolve_missing; region.c, region_forget). resident_bytes stays
 * up for good. A large region, and its last pages, make the event
 * handler's walk long enough for the fault to overtake it.
 */
#define ACCT_PAGES 65536
#define ACCT_TOUCH 8

struct churn_args {
	uint8_t *p;
	size_t psize;
	unsigned rounds;
	_Atomic long bad;
};

static void drop_and_reread(void *arg)
{
	struct churn_args *a = arg;
	size_t len = ACCT_PAGES * a->psize;

	for (unsigned i = 0; i < a->rounds; i++) {
		for (uint64_t k = ACCT_PAGES - ACCT_TOUCH; k < ACCT_PAGES; k++)
			touch_write(pg(a->p, a->psize, k), 1);
		madvise(a->p, len, MADV_DONTNEED);
		for (uint64_t k = ACCT_PAGES; k-- > ACCT_PAGES - ACCT_TOUCH;)
			if (touch_read(pg(a->p, a->psize, k)) != 0)
				atomic_fetch_add(&a->bad, 1);
		madvise(a->p, len, MADV_DONTNEED);
	}
}

static void dontneed_then_reread(uint64_t feature_mask)
{
	static struct churn_args a;
	size_t ps = itest_page();
	struct upg_config cfg;
	upg_ctx *ctx;
	upg_region *r;
	struct upg_stats st;

	upg_config_init(&cfg);
	cfg.feature_mask = feature_mask;
	ctx = ctx_new(&cfg);
	r = region_new_per_page(ctx, ACCT_PAGES * ps, 0);
	a = (struct churn_args){ .p = upg_region_addr(r), .psize = ps, .rounds = 200 };
	touch_or_fail(ctx, drop_and_reread, &a);
	cr_assert_eq(atomic_load(&a.bad), 0, "dropped pages read nonzero");
	/* Everything was dropped last: nothing may count as resident. */
	stats_wait(ctx, st, st.events_remove >= 2 * a.rounds, 5000);
	itest_sleep_ms(20);
	st = stats_of(ctx);
	cr_assert_eq(st.resident_bytes, 0, "%llu bytes still counted resident after the whole "
		     "region was dropped", (unsigned long long)st.resident_bytes);
	cr_assert_eq(st.errors, 0);
	cr_assert_eq(upg_region_destroy(r), 0);
	upg_ctx_destroy(ctx);
}

Test(events, dontneed_then_reread_accounting, .timeout = 60)
{
	dontneed_then_reread(0);
}

/*
 * The same without UFFDIO_POISON. Regression, seen under ASan above: a
 * second message about one access (the thread faulted again while its first
 * was deferred), read before the REMOVE event and resolved after the
 * kernel's zap, found a page upager holds resident unmapped, and took a
 * removal under way for a lost mapping: poisoned it (a SIGBUS) or, as here,
 * mapped zeros and counted an error.
 */
Test(events, dontneed_then_reread_without_poison, .timeout = 60)
{
	dontneed_then_reread(UPG_FEAT_POISON);
}

/* One base page dropped inside a resident 16K upager page: it reads as
 * zeros, its neighbours keep their contents. */
Test(events, dontneed_within_page, .timeout = 30)
{
	const uint64_t psize = 16 * KiB;
	size_t bp = itest_page();
	upg_ctx *ctx = ctx_new(NULL);
	upg_region *r = region_new_per_page(ctx, 4 * psize, psize);
	uint8_t *p = upg_region_addr(r);
	struct upg_stats st;

	fill_pages(p, bp, 0, 4 * psize / bp, 1);
	/* Base page 1 of upager page 1; base page 0 of upager page 2. */
	uint64_t drop[2] = { psize / bp + 1, 2 * psize / bp };

	for (int i = 0; i < 2; i++) {
		cr_assert_eq(madvise(pg(p, bp, drop[i]), bp, MADV_DONTNEED), 0);
		stats_wait(ctx, st, st.events_remove >= (uint64_t)i + 1, 5000);
	}
	for (uint64_t b = 0; b < 4 * psize / bp; b++) {
		if (b == drop[0] || b == drop[1])
			cr_assert(all_zero(pg(p, bp, b), bp), "dropped base page %llu not zero",
				  (unsigned long long)b);
		else
			cr_assert_eq(pattern_check(pg(p, bp, b), bp, 1, b), -1,
				     "base page %llu lost its contents", (unsigned long long)b);
	}
	/* And written again. */
	for (int i = 0; i < 2; i++)
		pattern_fill(pg(p, bp, drop[i]), bp, 1, drop[i]);
	cr_assert_eq(check_pages(p, bp, 0, 4 * psize / bp, 1), -1);
	cr_assert_eq(stats_of(ctx).errors, 0);
	cr_assert_eq(upg_region_destroy(r), 0);
	upg_ctx_destroy(ctx);
}

/* ------------------------------------------------------------------------
 * munmap
 */

static void munmap_part(uint64_t psize)
{
	upg_ctx *ctx = ctx_new(NULL);
	upg_region *r = region_new_per_page(ctx, N * psize, psize);
	uint8_t *p = upg_region_addr(r);
	struct upg_stats st;
	void *sentinel;

	if (!(upg_ctx_features(ctx) & UPG_FEAT_EVENT_UNMAP))
		cr_skip_test("kernel lacks UFFD_FEATURE_EVENT_UNMAP");
	fill_pages(p, psize, 0, 4, 1);
	fill_pages(p, psize, 8, 2, 1);
	fill_pages(p, psize, 20, 4, 1);
	stats_wait(ctx, st, st.resident_bytes == 10 * psize, 5000);

	/* Unmap pages [8, 16); two of them were resident. */
	cr_assert_eq(munmap(pg(p, psize, 8), 8 * psize), 0);
	stats_wait(ctx, st, st.events_unmap >= 1, 5000);
	stats_wait(ctx, st, st.resident_bytes == 8 * psize, 5000);

	/* The rest still works: old contents kept, untouched pages fault
	 * through upager. */
	cr_assert_eq(check_pages(p, psize, 0, 4, 1), -1);
	cr_assert_eq(check_pages(p, psize, 20, 4, 1), -1);
	cr_assert_eq(check_zero(p, psize, 4, 4), -1);
	fill_pages(p, psize, 16, 4, 2);
	fill_pages(p, psize, 24, N - 24, 2);
	stats_wait(ctx, st, st.zero_filled + st.zero_mapped == 10 + 4 + 4 + (N - 24), 5000);
	cr_assert_eq(check_pages(p, psize, 16, 4, 2), -1);
	cr_assert_eq(check_pages(p, psize, 24, N - 24, 2), -1);
	cr_assert_eq(st.faults_stale, 0);
	cr_assert_eq(st.errors, 0);

	/* Someone else's mapping in the hole must survive the region. */
	sentinel = map_at(pg(p, psize, 8), 8 * psize);
	if (sentinel)
		fill_pages(sentinel, psize, 0, 8, 9);
	cr_assert_eq(upg_region_destroy(r), 0);
	if (sentinel) {
		cr_assert(!range_unmapped(sentinel, 8 * psize),
			  "destroy unmapped a mapping placed in the region's hole");
		cr_assert_eq(check_pages(sentinel, psize, 0, 8, 9), -1);
		munmap(sentinel, 8 * psize);
	} else {
		cr_log_warn("hole was taken: sentinel part skipped");
	}
	cr_assert(range_released(p, 8 * psize), "destroy left the head mapped");
	cr_assert(range_released(pg(p, psize, 16), (N - 16) * psize), "destroy left the tail mapped");
	upg_ctx_destroy(ctx);
}

Test(events, munmap_part, .timeout = 30)
{
	munmap_part(itest_page());
}

Test(events, munmap_part_16k, .timeout = 30)
{
	munmap_part(16 * KiB);
}

/*
 * munmap ranges that overlap what is already unmapped: the kernel reports
 * the whole range asked for. The region must keep working where it is still
 * mapped, and destroy must unmap exactly what is left of it.
 */
Test(events, munmap_overlapping, .timeout = 30)
{
	size_t ps = itest_page();
	upg_ctx *ctx = ctx_new(NULL);
	upg_region *r = region_new_per_page(ctx, 64 * ps, 0);
	uint8_t *p = upg_region_addr(r);
	struct upg_stats st, st0;
	void *s1, *s2;

	if (!(upg_ctx_features(ctx) & UPG_FEAT_EVENT_UNMAP))
		cr_skip_test("kernel lacks UFFD_FEATURE_EVENT_UNMAP");
	fill_pages(p, ps, 0, 4, 1);
	fill_pages(p, ps, 56, 4, 1);
	stats_wait(ctx, st, st.zero_filled == 8, 5000);
	cr_assert_eq(munmap(pg(p, ps, 16), 32 * ps), 0);   /* [16, 48) */
	stats_wait(ctx, st, st.events_unmap >= 1, 5000);
	cr_assert_eq(munmap(pg(p, ps, 8), 48 * ps), 0);    /* [8, 56), over the first */
	stats_wait(ctx, st0, st0.events_unmap >= 2, 5000);

	/* [0, 8) and [56, 64) are still the region's. */
	cr_assert_eq(check_pages(p, ps, 0, 4, 1), -1);
	cr_assert_eq(check_pages(p, ps, 56, 4, 1), -1);
	cr_assert_eq(check_zero(p, ps, 4, 4), -1);
	fill_pages(p, ps, 60, 4, 2);
	cr_assert_eq(check_pages(p, ps, 60, 4, 2), -1);
	/* Eight new pages: wait for them to be resolved (or for a fault to be
	 * taken for stale), without asserting, and settle. */
	stats_poll(ctx, st, st.faults_stale > 0 ||
		   st.zero_filled + st.zero_mapped >= st0.zero_filled + st0.zero_mapped + 8, 5000);
	st = stats_settle(ctx, 20, 5000);
	/* Not fatal: what destroy does below matters more. */
	cr_expect_eq(st.faults_stale, 0, "%llu faults on pages the region still maps were taken "
		     "for stale: the region left the registry", (unsigned long long)st.faults_stale);
	cr_expect_eq(st.zero_filled + st.zero_mapped, st0.zero_filled + st0.zero_mapped + 8);

	/* Mappings of others in the holes survive destroy. */
	s1 = map_at(pg(p, ps, 8), 8 * ps);
	s2 = map_at(pg(p, ps, 48), 8 * ps);
	if (!s1 || !s2)
		cr_skip_test("holes were taken by other mappings");
	fill_pages(s1, ps, 0, 8, 7);
	fill_pages(s2, ps, 0, 8, 8);
	cr_assert_eq(upg_region_destroy(r), 0);
	cr_assert(!range_unmapped(s1, 8 * ps), "destroy unmapped a mapping at [8, 16)");
	cr_assert(!range_unmapped(s2, 8 * ps), "destroy unmapped a mapping at [48, 56)");
	cr_assert_eq(check_pages(s1, ps, 0, 8, 7), -1);
	cr_assert_eq(check_pages(s2, ps, 0, 8, 8), -1);
	cr_assert(range_released(p, 8 * ps), "destroy left [0, 8) mapped");
	cr_assert(range_released(pg(p, ps, 56), 8 * ps), "destroy left [56, 64) mapped");
	munmap(s1, 8 * ps);
	munmap(s2, 8 * ps);
	upg_ctx_destroy(ctx);
}

/* The whole region unmapped by the application, then destroyed. */
Test(events, munmap_whole_then_destroy, .timeout = 30)
{
	size_t ps = itest_page();
	upg_ctx *ctx = ctx_new(NULL);
	upg_region *r = region_new_per_page(ctx, N * ps, 0);
	uint8_t *p = upg_region_addr(r);
	struct upg_stats st;
	upg_region *r2;
	void *sentinel;

	if (!(upg_ctx_features(ctx) & UPG_FEAT_EVENT_UNMAP))
		cr_skip_test("kernel lacks UFFD_FEATURE_EVENT_UNMAP");
	fill_pages(p, ps, 0, 4, 1);
	stats_wait(ctx, st, st.resident_bytes == 4 * ps, 5000);
	cr_assert_eq(munmap(p, N * ps), 0);
	stats_wait(ctx, st, st.events_unmap >= 1, 5000);
	stats_wait(ctx, st, st.resident_bytes == 0, 5000);

	/* The range is free again: someone maps it, and a new region is
	 * created (perhaps at the same address). */
	sentinel = map_at(p, N * ps);
	if (sentinel)
		fill_pages(sentinel, ps, 0, N, 3);
	r2 = region_new_per_page(ctx, N * ps, 0);
	fill_pages(upg_region_addr(r2), ps, 0, N, 4);

	cr_assert_eq(upg_region_destroy(r), 0);
	cr_assert_eq(stats_of(ctx).regions, 1);
	cr_assert_eq(check_pages(upg_region_addr(r2), ps, 0, N, 4), -1,
		     "destroying an unmapped region hurt another region");
	if (sentinel) {
		cr_assert(!range_unmapped(sentinel, N * ps),
			  "destroy unmapped a mapping placed where the region was");
		cr_assert_eq(check_pages(sentinel, ps, 0, N, 3), -1);
		munmap(sentinel, N * ps);
	}
	cr_assert_eq(upg_region_destroy(r2), 0);
	cr_assert_eq(stats_of(ctx).errors, 0);
	upg_ctx_destroy(ctx);
}

/* Unmapping part of one upager page: the rest of that page must still be
 * usable. */
struct touch_args {
	uint8_t *p;
	size_t len;
	uint64_t gen;
	_Atomic long bad;
};

static void read_then_fill(void *arg)
{
	struct touch_args *a = arg;
	size_t bp = itest_page();

	for (size_t off = 0; off < a->len; off += bp) {
		if (!all_zero(a->p + off, bp))
			atomic_fetch_add(&a->bad, 1);
		pattern_fill(a->p + off, bp, a->gen, off / bp);
	}
}

Test(events, munmap_within_page, .timeout = 40)
{
	const uint64_t psize = 16 * KiB;
	size_t bp = itest_page();
	upg_ctx *ctx = ctx_new(NULL);
	upg_region *r = region_new_per_page(ctx, 4 * psize, psize);
	uint8_t *p = upg_region_addr(r);
	static struct touch_args a1, a2;
	struct upg_stats st;

	a1 = (struct touch_args){ .p = pg(p, psize, 1), .len = bp, .gen = 5 };
	a2 = (struct touch_args){ .p = pg(p, psize, 1) + 2 * bp, .len = psize - 2 * bp, .gen = 6 };

	/* Base page 1 of the untouched upager page 1 goes away. */
	cr_assert_eq(munmap(pg(p, psize, 1) + bp, bp), 0);
	stats_wait(ctx, st, st.events_unmap >= 1, 5000);

	/* Its neighbours, before and after, are still the region's. */
	touch_or_fail(ctx, read_then_fill, &a1);
	touch_or_fail(ctx, read_then_fill, &a2);
	cr_assert_eq(atomic_load(&a1.bad) + atomic_load(&a2.bad), 0);
	cr_assert_eq(pattern_check(a1.p, bp, 5, 0), -1);
	for (size_t off = 0; off < a2.len; off += bp)
		cr_assert_eq(pattern_check(a2.p + off, bp, 6, off / bp), -1);
	fill_pages(p, psize, 2, 2, 7);
	cr_assert_eq(check_pages(p, psize, 2, 2, 7), -1);
	cr_assert_eq(upg_region_destroy(r), 0);
	upg_ctx_destroy(ctx);
}

/* mremap that shrinks a region unmaps its tail. */
Test(events, mremap_shrink, .timeout = 30)
{
	size_t ps = itest_page();
	upg_ctx *ctx = ctx_new(NULL);
	upg_region *r = region_new_per_page(ctx, N * ps, 0);
	uint8_t *p = upg_region_addr(r);
	struct upg_stats st;
	void *q, *sentinel;

	fill_pages(p, ps, 0, N, 1);
	stats_wait(ctx, st, st.resident_bytes == N * ps, 5000);
	q = mremap(p, N * ps, N / 2 * ps, 0);
	cr_assert_eq(q, (void *)p, "mremap shrink: %s", strerror(errno));
	stats_wait(ctx, st, st.resident_bytes == N / 2 * ps, 5000);
	cr_assert_eq(check_pages(p, ps, 0, N / 2, 1), -1);
	cr_assert_eq(upg_region_addr(r), (void *)p);

	sentinel = map_at(pg(p, ps, N / 2), N / 2 * ps);
	if (sentinel)
		fill_pages(sentinel, ps, 0, N / 2, 2);
	cr_assert_eq(upg_region_destroy(r), 0);
	if (sentinel) {
		cr_assert(!range_unmapped(sentinel, N / 2 * ps), "destroy unmapped the tail's new tenant");
		cr_assert_eq(check_pages(sentinel, ps, 0, N / 2, 2), -1);
		munmap(sentinel, N / 2 * ps);
	}
	cr_assert(range_released(p, N / 2 * ps));
	upg_ctx_destroy(ctx);
}

/* ------------------------------------------------------------------------
 * mremap
 */

static void mremap_whole(uint64_t psize)
{
	upg_ctx *ctx = ctx_new(NULL);
	upg_region *r = region_new_per_page(ctx, N * psize, psize);
	uint8_t *p = upg_region_addr(r), *to;
	struct upg_stats st, st0;
	void *sentinel;

	if (!(upg_ctx_features(ctx) & UPG_FEAT_EVENT_REMAP))
		cr_skip_test("kernel lacks UFFD_FEATURE_EVENT_REMAP");
	fill_pages(p, psize, 0, 8, 1);
	stats_wait(ctx, st0, st0.zero_filled == 8, 5000);
	st0 = stats_settle(ctx, 20, 5000);

	to = reserve(N * psize, psize);
	cr_assert_eq(mremap(p, N * psize, N * psize, MREMAP_MAYMOVE | MREMAP_FIXED, to),
		     (void *)to, "mremap: %s", strerror(errno));
	wait_region_addr(r, to, 5000);
	stats_wait(ctx, st, st.events_remap >= 1, 5000);
	cr_assert_eq(upg_region_size(r), N * psize);

	/* Touched pages moved with their contents, without a fault. */
	cr_assert_eq(check_pages(to, psize, 0, 8, 1), -1);
	st = stats_settle(ctx, 20, 5000);
	cr_assert_eq(new_faults(&st), new_faults(&st0), "moved pages faulted");
	/* Untouched pages fault through upager at the new address. */
	cr_assert_eq(check_zero(to, psize, 8, 8), -1);
	fill_pages(to, psize, 16, N - 16, 2);
	stats_wait(ctx, st, st.zero_filled + st.zero_mapped == N, 5000);
	stats_wait(ctx, st, new_faults(&st) == new_faults(&st0) + N - 8, 5000);
	cr_assert_eq(st.faults_stale, 0);
	cr_assert_eq(check_pages(to, psize, 16, N - 16, 2), -1);
	cr_assert_eq(check_pages(to, psize, 0, 8, 1), -1);

	/* Destroy unmaps the region where it is now, not where it was. */
	sentinel = map_at(p, N * psize);
	if (sentinel)
		fill_pages(sentinel, psize, 0, N, 3);
	cr_assert_eq(upg_region_destroy(r), 0);
	cr_assert(range_released(to, N * psize), "destroy left the moved region mapped");
	if (sentinel) {
		cr_assert(!range_unmapped(sentinel, N * psize),
			  "destroy unmapped the region's old address");
		cr_assert_eq(check_pages(sentinel, psize, 0, N, 3), -1);
		munmap(sentinel, N * psize);
	}
	upg_ctx_destroy(ctx);
}

Test(events, mremap_whole, .timeout = 30)
{
	mremap_whole(itest_page());
}

Test(events, mremap_whole_16k, .timeout = 30)
{
	mremap_whole(16 * KiB);
}

struct moved {
	uint8_t *to;
	uint64_t psize;
	_Atomic long bad;
};

/* At the moved part: pages 0..3 were never touched, 4..7 hold gen 1 as
 * pages 12..15 of the region. Touched right after mremap returned. */
static void touch_moved(void *arg)
{
	struct moved *m = arg;

	for (uint64_t i = 0; i < 4; i++) {
		if (!all_zero(pg(m->to, m->psize, i), m->psize))
			atomic_fetch_add(&m->bad, 1);
		pattern_fill(pg(m->to, m->psize, i), m->psize, 2, 8 + i);
	}
	for (uint64_t i = 4; i < 8; i++)
		if (pattern_check(pg(m->to, m->psize, i), m->psize, 1, 8 + i) >= 0)
			atomic_fetch_add(&m->bad, 1);
}

static void mremap_part(uint64_t psize)
{
	upg_ctx *ctx = ctx_new(NULL);
	upg_region *r = region_new_per_page(ctx, N * psize, psize);
	uint8_t *p = upg_region_addr(r);
	static struct moved m;
	struct upg_stats st;

	m = (struct moved){ .psize = psize };

	if (!(upg_ctx_features(ctx) & UPG_FEAT_EVENT_REMAP))
		cr_skip_test("kernel lacks UFFD_FEATURE_EVENT_REMAP");
	fill_pages(p, psize, 0, 4, 1);
	fill_pages(p, psize, 12, 4, 1);

	/* Move pages [8, 16) away and use them at once. */
	m.to = reserve(8 * psize, psize);
	cr_assert_eq(mremap(pg(p, psize, 8), 8 * psize, 8 * psize, MREMAP_MAYMOVE | MREMAP_FIXED,
			    m.to), (void *)m.to, "mremap: %s", strerror(errno));
	touch_or_fail(ctx, touch_moved, &m);
	cr_assert_eq(atomic_load(&m.bad), 0, "moved pages have wrong contents");
	stats_wait(ctx, st, st.events_remap >= 1, 5000);

	/* The region stays where it was, and works around the hole. */
	cr_assert_eq(upg_region_addr(r), (void *)p);
	cr_assert_eq(check_pages(p, psize, 0, 4, 1), -1);
	cr_assert_eq(check_zero(p, psize, 4, 4), -1);
	fill_pages(p, psize, 16, N - 16, 3);
	cr_assert_eq(check_pages(p, psize, 16, N - 16, 3), -1);
	cr_assert_eq(stats_of(ctx).errors, 0);

	/* The moved part is the application's now: destroy leaves it. */
	cr_assert_eq(upg_region_destroy(r), 0);
	cr_assert(!range_unmapped(m.to, 8 * psize), "destroy unmapped the moved part");
	for (uint64_t i = 0; i < 4; i++)
		cr_assert_eq(pattern_check(pg(m.to, psize, i), psize, 2, 8 + i), -1);
	for (uint64_t i = 4; i < 8; i++)
		cr_assert_eq(pattern_check(pg(m.to, psize, i), psize, 1, 8 + i), -1);
	cr_assert(range_released(p, 8 * psize));
	cr_assert(range_released(pg(p, psize, 16), (N - 16) * psize));
	munmap(m.to, 8 * psize);
	upg_ctx_destroy(ctx);
}

Test(events, mremap_part, .timeout = 40)
{
	mremap_part(itest_page());
}

Test(events, mremap_part_16k, .timeout = 40)
{
	mremap_part(16 * KiB);
}

/* mremap growing a region: the kernel grows it in place if it can, else
 * moves it (a whole-region REMAP, which the region follows). Either way the
 * new tail is registered with the context's userfaultfd (the VMA grew) but
 * belongs to no region. Faults there must still complete. */
Test(events, mremap_grow, .timeout = 40)
{
	size_t ps = itest_page();
	upg_ctx *ctx = ctx_new(NULL);
	upg_region *r = region_new_per_page(ctx, N * ps, 0);
	static struct touch_args tail;
	uint8_t *p;

	fill_pages(upg_region_addr(r), ps, 0, N, 1);
	p = mremap(upg_region_addr(r), N * ps, 2 * N * ps, MREMAP_MAYMOVE);
	cr_assert_neq(p, MAP_FAILED, "mremap: %s", strerror(errno));
	wait_region_addr(r, p, 5000);
	tail = (struct touch_args){ .p = pg(p, ps, N), .len = N * ps, .gen = 4 };

	touch_or_fail(ctx, read_then_fill, &tail);
	cr_assert_eq(atomic_load(&tail.bad), 0, "grown tail not zero");
	for (size_t i = 0; i < N; i++)
		cr_assert_eq(pattern_check(tail.p + i * ps, ps, 4, i), -1);
	cr_assert_eq(check_pages(p, ps, 0, N, 1), -1);
	cr_assert_eq(upg_region_size(r), N * ps);

	/* Destroy takes the region's range only. */
	cr_assert_eq(upg_region_destroy(r), 0);
	cr_assert(range_released(p, N * ps));
	cr_assert(!range_unmapped(tail.p, N * ps), "destroy unmapped the grown tail");
	for (size_t i = 0; i < N; i++)
		cr_assert_eq(pattern_check(tail.p + i * ps, ps, 4, i), -1);
	munmap(tail.p, N * ps);
	upg_ctx_destroy(ctx);
}

/*
 * Room for a region of len bytes to grow by len in place: a PROT_NONE
 * mapping right after it, which the caller unmaps just before it grows the
 * region. Regions are placed wherever the kernel finds room, often right
 * below another mapping; if the range after the region is taken, the region
 * is moved (a whole-region REMAP, which it follows) to the start of a
 * reservation twice its size, whose second half is the room.
 */
static void *claim_room_after(upg_ctx *ctx, upg_region *r, size_t len, int *moved)
{
	uint8_t *p = upg_region_addr(r), *to;
	void *room = mmap(p + len, len, PROT_NONE,
			  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE, -1, 0);

	if (room == p + len)
		return room;
	if (room != MAP_FAILED)          /* a kernel that took the address as a hint */
		munmap(room, len);
	if (!(upg_ctx_features(ctx) & UPG_FEAT_EVENT_REMAP))
		cr_skip_test("the range after the region is taken, and moving the region "
			     "elsewhere needs UFFD_FEATURE_EVENT_REMAP");
	to = reserve(2 * len, itest_page());
	cr_assert_eq(mremap(p, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, to), (void *)to,
		     "mremap to make room: %s", strerror(errno));
	wait_region_addr(r, to, 5000);
	(*moved)++;
	return to + len;
}

/* mremap growing a region where it is (no MREMAP_MAYMOVE): the region does
 * not move and keeps working; the new tail is the application's. */
Test(events, mremap_grow_in_place, .timeout = 40)
{
	size_t ps = itest_page(), len = N * ps;
	upg_ctx *ctx = ctx_new(NULL);
	static struct touch_args tail;
	struct upg_stats st;
	uint8_t *hole, *p = NULL, *q = MAP_FAILED;
	upg_region *r;
	int attempt, moved = 0;

	/* Mappings are placed top-down, in the highest gap that fits: a hole
	 * of len bytes left right below a mapping of ours usually gets the
	 * region, with our mapping as the room after it. If the region lands
	 * elsewhere, claim_room_after makes room. */
	hole = reserve(2 * len, ps);
	cr_assert_eq(munmap(hole, len), 0);
	r = region_new_per_page(ctx, len, 0);
	if (upg_region_addr(r) != hole)
		cr_assert_eq(munmap(hole + len, len), 0);

	fill_pages(upg_region_addr(r), ps, 0, N / 2, 1);
	stats_wait(ctx, st, st.zero_filled == N / 2, 5000);

	/* Between unmapping the room and growing into it another thread of
	 * this process (a handler, Criterion) may map something there: then
	 * make room again. */
	for (attempt = 0; attempt < 5 && q == MAP_FAILED; attempt++) {
		void *room = attempt == 0 && upg_region_addr(r) == hole
			     ? hole + len : claim_room_after(ctx, r, len, &moved);

		p = upg_region_addr(r);
		cr_assert_eq(munmap(room, len), 0);
		q = mremap(p, len, 2 * len, 0);
		cr_assert(q != MAP_FAILED || errno == ENOMEM, "mremap in place: %s", strerror(errno));
	}
	cr_assert_neq(q, MAP_FAILED, "room after the region taken %d times in a row", attempt);
	cr_assert_eq(q, p, "mremap without MREMAP_MAYMOVE moved the region");
	cr_log_info("grown in place after %d attempt(s), the region moved %d time(s) to make room",
		    attempt, moved);

	/* The region stayed where it was, with its size. */
	itest_sleep_ms(10);
	cr_assert_eq(upg_region_addr(r), (void *)p, "region followed a move that did not happen");
	cr_assert_eq(upg_region_size(r), len);

	/* The grown tail works, as plain memory. */
	tail = (struct touch_args){ .p = pg(p, ps, N), .len = len, .gen = 4 };
	touch_or_fail(ctx, read_then_fill, &tail);
	cr_assert_eq(atomic_load(&tail.bad), 0, "grown tail not zero");
	for (size_t i = 0; i < N; i++)
		cr_assert_eq(pattern_check(tail.p + i * ps, ps, 4, i), -1);

	/* The region keeps its pages and still pages in the rest. */
	cr_assert_eq(check_pages(p, ps, 0, N / 2, 1), -1);
	cr_assert_eq(check_zero(p, ps, N / 2, N / 4), -1);
	fill_pages(p, ps, 3 * N / 4, N / 4, 2);
	stats_wait(ctx, st, st.zero_filled + st.zero_mapped == N, 5000);
	cr_assert_eq(check_pages(p, ps, 3 * N / 4, N / 4, 2), -1);
	st = stats_settle(ctx, 20, 5000);
	cr_assert_eq(st.resident_bytes, (N / 2 + N / 4 + ((upg_ctx_features(ctx) &
		     UPG_FEAT_ZEROPAGE) ? 0 : N / 4)) * ps, "the grown tail counted as the region's");
	cr_assert_eq(st.errors, 0);

	/* Destroy takes the region's range only. */
	cr_assert_eq(upg_region_destroy(r), 0);
	cr_assert(range_released(p, len), "destroy left the region mapped");
	cr_assert(!range_unmapped(tail.p, len), "destroy unmapped the grown tail");
	for (size_t i = 0; i < N; i++)
		cr_assert_eq(pattern_check(tail.p + i * ps, ps, 4, i), -1);
	munmap(tail.p, len);
	upg_ctx_destroy(ctx);
}

/* ------------------------------------------------------------------------
 * A mapping taken away behind upager's back, with no event: MADV_GUARD_INSTALL
 * zaps the pages under it without telling userfaultfd (Linux 6.13), and
 * MADV_GUARD_REMOVE leaves them empty. upager believes them resident; the
 * next touch must not read zeros as if nothing happened.
 */
#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#define MADV_GUARD_REMOVE 103
#endif

static _Atomic unsigned lost_reports;
static _Atomic(void *) lost_addr;

static void on_lost(void *arg, void *addr, int err)
{
	(void)arg;
	(void)err;
	atomic_store(&lost_addr, addr);
	atomic_fetch_add(&lost_reports, 1);
}

static void lost_mapping(uint64_t mask)
{
	const size_t ps = itest_page();
	const uint64_t victim = 5;
	struct upg_config cfg;
	struct sigaction old;
	struct upg_stats st;
	upg_ctx *ctx;
	upg_region *r;
	uint8_t *base, *p;
	uint64_t wrong = 0;
	int got;

	features_or_skip();
	upg_config_init(&cfg);
	cfg.feature_mask = mask;
	cfg.on_error = on_lost;
	atomic_store(&lost_reports, 0);
	ctx = ctx_new(&cfg);
	r = region_new_per_page(ctx, N * ps, 0);
	base = upg_region_addr(r);
	fill_pages(base, ps, 0, N, 7);
	p = pg(base, ps, victim);
	if (madvise(p, ps, MADV_GUARD_INSTALL) < 0) {
		int err = errno;

		upg_region_destroy(r);
		upg_ctx_destroy(ctx);
		cr_skip_test("MADV_GUARD_INSTALL on a userfaultfd range: %s (Linux 6.13 has it)",
			     strerror(err));
	}
	cr_assert_eq(madvise(p, ps, MADV_GUARD_REMOVE), 0, "MADV_GUARD_REMOVE: %s",
		     strerror(errno));
	st = stats_of(ctx);
	cr_assert_eq(st.events_remove, 0, "the guard raised an event: this test tests nothing");

	sigbus_catch(&old);
	got = page_verify(p, ps, 7, victim);
	for (uint64_t i = 0; i < N; i++)
		if (i != victim && page_verify(pg(base, ps, i), ps, 7, i) != 0)
			wrong++;
	sigbus_restore(&old);
	cr_assert_eq(wrong, 0, "%llu untouched pages read back wrong", (unsigned long long)wrong);
	if (upg_ctx_features(ctx) & UPG_FEAT_POISON)
		cr_assert_eq(got, -1, "the lost page read back without SIGBUS (%s)",
			     got ? "wrong data" : "its old data?");
	else
		cr_assert_eq(got, 1, "without UFFDIO_POISON the lost page comes back as zeros");
	/* The poison marker woke the thread before the handler reported:
	 * the callback runs, then the counter moves. */
	stats_wait(ctx, st, st.errors >= 1, 5000);
	if (upg_ctx_features(ctx) & UPG_FEAT_POISON)
		cr_assert_eq(st.resident_bytes, (N - 1) * ps,
			     "the poisoned page still counts as resident (%llu bytes resident)",
			     (unsigned long long)st.resident_bytes);
	cr_assert_eq(atomic_load(&lost_reports), 1, "the error callback ran %u times",
		     atomic_load(&lost_reports));
	cr_assert_eq(atomic_load(&lost_addr), (void *)p, "the callback named another page");
	upg_region_destroy(r);
	upg_ctx_destroy(ctx);
}

Test(events, lost_mapping_poisons, .timeout = 30) { lost_mapping(0); }

/* Without UFFDIO_POISON there is no way to hold the page: zeros go in, and
 * the loss is still reported. */
Test(events, lost_mapping_reported_without_poison, .timeout = 30)
{
	lost_mapping(UPG_FEAT_POISON);
}
