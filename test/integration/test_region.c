/*
 * test_region.c - regions through the public API: lifecycle, argument
 * checking, upager page sizes, sparse and many regions, statistics, strings.
 */
#include <stddef.h>

#include "itest.h"

/* ------------------------------------------------------------------------
 * Lifecycle and argument checking
 */

Test(region, create_destroy, .timeout = 20)
{
	size_t ps = itest_page();
	upg_ctx *ctx = ctx_new(NULL);
	upg_region *r = region_new(ctx, 16 * ps, 0);
	struct upg_stats st;
	uint8_t *p = upg_region_addr(r);

	cr_assert_not_null(p);
	cr_assert_eq((uintptr_t)p % ps, 0, "region not page aligned: %p", (void *)p);
	cr_assert_eq(upg_region_size(r), 16 * ps);
	cr_assert_eq(upg_region_page_size(r), ps, "page_size 0 must mean the base page");
	st = stats_of(ctx);
	cr_assert_eq(st.regions, 1);
	cr_assert_eq(st.resident_bytes, 0);

	fill_pages(p, ps, 0, 16, 1);
	cr_assert_eq(check_pages(p, ps, 0, 16, 1), -1);

	cr_assert_eq(upg_region_destroy(r), 0);
	st = stats_of(ctx);
	cr_assert_eq(st.regions, 0);
	cr_assert_eq(st.resident_bytes, 0);
	cr_assert(range_released(p, 16 * ps), "destroy left the range mapped");

	cr_assert_eq(upg_region_destroy(NULL), 0, "destroying NULL is a no-op returning 0");
	upg_ctx_destroy(ctx);
	upg_ctx_destroy(NULL);
}

/* A context destroyed with regions still in it destroys them. */
Test(region, ctx_destroy_takes_regions, .timeout = 20)
{
	size_t ps = itest_page();
	upg_ctx *ctx = ctx_new(NULL);
	void *addr[4];

	for (int i = 0; i < 4; i++) {
		upg_region *r = region_new(ctx, 8 * ps, 0);

		addr[i] = upg_region_addr(r);
		fill_pages(addr[i], ps, 0, 2, (uint64_t)i);
		cr_assert_eq(check_pages(addr[i], ps, 0, 2, (uint64_t)i), -1);
	}
	cr_assert_eq(stats_of(ctx).regions, 4);
	upg_ctx_destroy(ctx);
	for (int i = 0; i < 4; i++)
		cr_assert(range_released(addr[i], 8 * ps), "region %d still mapped", i);
}

Test(region, init_functions, .timeout = 10)
{
	struct upg_region_opts opts;
	struct upg_config cfg;

	memset(&opts, 0xff, sizeof(opts));
	memset(&cfg, 0xff, sizeof(cfg));
	upg_region_opts_init(&opts);
	upg_config_init(&cfg);
	cr_assert_eq(opts.size, sizeof(opts));
	cr_assert_eq(opts.flags, 0);
	cr_assert_eq(opts.page_size, 0);
	cr_assert_eq(cfg.size, sizeof(cfg));
	cr_assert_eq(cfg.handler_threads, 0);
	cr_assert_eq(cfg.pin_handlers, 1, "pin_handlers defaults to 1");
	cr_assert_eq(cfg.feature_mask, 0);
	cr_assert_eq(cfg.mem_limit, 0);
}

static int create_with(upg_ctx *ctx, uint64_t size, uint64_t page_size, uint32_t flags,
		       upg_region **out)
{
	struct upg_region_opts opts;

	upg_region_opts_init(&opts);
	opts.page_size = page_size;
	opts.flags = flags;
	return upg_region_create(ctx, size, &opts, out);
}

/* The count of this process's mappings once the context's threads, just
 * started, are done mapping what they map at start (their stacks' guard
 * pages, a sanitizer's per-thread memory). */
static long maps_settled(void)
{
	long n = proc_maps_count(), prev = -1;

	for (int i = 0; i < 100 && n != prev; i++) {
		itest_sleep_ms(10);
		prev = n;
		n = proc_maps_count();
	}
	return n;
}

Test(region, bad_input, .timeout = 20)
{
	size_t ps = itest_page();
	upg_ctx *ctx = ctx_new(NULL);
	upg_region *r = (upg_region *)&r;   /* not NULL: a failure must not leave junk used */
	struct upg_region_opts opts;
	long maps = maps_settled();

	cr_assert_eq(upg_region_create(ctx, 0, NULL, &r), -EINVAL, "size 0");
	cr_assert_eq(upg_region_create(ctx, ps + 1, NULL, &r), -EINVAL, "size not page multiple");
	cr_assert_eq(upg_region_create(ctx, ps / 2, NULL, &r), -EINVAL, "size below a page");
	cr_assert_eq(upg_region_create(ctx, 16 * ps, NULL, NULL), -EINVAL, "NULL out");
	cr_assert_eq(upg_region_create(NULL, 16 * ps, NULL, &r), -EINVAL, "NULL ctx");

	/* Page sizes: power of two, >= 4096 (the base page), <= 2 MiB. */
	cr_assert_eq(create_with(ctx, 24 * KiB, 3 * ps, 0, &r), -EINVAL, "page size 3 pages");
	cr_assert_eq(create_with(ctx, 48 * KiB, 12 * KiB, 0, &r), -EINVAL, "page size 12K");
	cr_assert_eq(create_with(ctx, 16 * ps, 2048, 0, &r), -EINVAL, "page size 2048");
	cr_assert_eq(create_with(ctx, 16 * ps, 1, 0, &r), -EINVAL, "page size 1");
	cr_assert_eq(create_with(ctx, 16 * ps, ps + 8, 0, &r), -EINVAL, "page size not pow2");
	cr_assert_eq(create_with(ctx, 8 * MiB, 4 * MiB, 0, &r), -EINVAL, "page size 4M");
	cr_assert_eq(create_with(ctx, 1ull << 32, 1ull << 31, 0, &r), -EINVAL, "page size 2G");
	/* Size must be a multiple of the upager page, not just the base page. */
	cr_assert_eq(create_with(ctx, 5 * ps, 16 * KiB, 0, &r), -EINVAL, "size not 16K multiple");
	cr_assert_eq(create_with(ctx, 3 * MiB, 2 * MiB, 0, &r), -EINVAL, "size not 2M multiple");

	/* Unknown flags, in any bit. */
	cr_assert_eq(create_with(ctx, 16 * ps, 0, 1, &r), -EINVAL, "flag bit 0");
	cr_assert_eq(create_with(ctx, 16 * ps, 0, 0x80000000u, &r), -EINVAL, "flag bit 31");

	/* An opts struct too small to hold the fields this version has. */
	upg_region_opts_init(&opts);
	opts.size = 4;
	cr_assert_eq(upg_region_create(ctx, 16 * ps, &opts, &r), -EINVAL, "opts.size 4");

	/* Nothing of the failed calls stays behind. */
	cr_assert_eq(stats_of(ctx).regions, 0);
	cr_assert_eq(proc_maps_count(), maps, "failed creates changed the mappings");

	/* The boundaries themselves are valid. */
	cr_assert_eq(create_with(ctx, 2 * MiB, 2 * MiB, 0, &r), 0, "page size 2M");
	cr_assert_eq(upg_region_page_size(r), 2 * MiB);
	cr_assert_eq((uintptr_t)upg_region_addr(r) % (2 * MiB), 0, "2M page not 2M aligned");
	cr_assert_eq(upg_region_destroy(r), 0);
	cr_assert_eq(create_with(ctx, ps, ps, 0, &r), 0, "one base page");
	cr_assert_eq(upg_region_destroy(r), 0);
	upg_ctx_destroy(ctx);
}

Test(region, bad_config, .timeout = 20)
{
	struct upg_config cfg;
	upg_ctx *ctx = NULL;

	features_or_skip();
	cr_assert_eq(upg_ctx_create(NULL, NULL), -EINVAL, "NULL out");
	upg_config_init(&cfg);
	cfg.size = 4;
	cr_assert_eq(upg_ctx_create(&cfg, &ctx), -EINVAL, "cfg.size too small");
	cr_assert_null(ctx);
	upg_config_init(&cfg);
	cfg.handler_threads = 100000;
	cr_assert_eq(upg_ctx_create(&cfg, &ctx), -EINVAL, "absurd handler count");
	cr_assert_null(ctx);
}

/* ------------------------------------------------------------------------
 * Upager pages larger than the base page
 */

/*
 * 8 upager pages: the first 4 are read once (one byte), the last 4 written
 * once. Each touch must map the whole upager page: one fault per upager
 * page, whatever is touched after. (Advised random: no zero-ahead, which
 * maps further pages after writes in order.)
 */
static void large_pages(uint64_t psize)
{
	size_t ps = itest_page();
	const uint64_t n = 8;
	upg_ctx *ctx = ctx_new(NULL);
	upg_region *r = region_new(ctx, n * psize, psize);
	uint8_t *p = upg_region_addr(r);
	uint64_t zeropage = upg_ctx_features(ctx) & UPG_FEAT_ZEROPAGE;
	struct upg_stats st;

	cr_assert_eq(upg_region_page_size(r), psize);
	cr_assert_eq((uintptr_t)p % psize, 0, "region not aligned to its page size");
	cr_assert_eq(upg_advise(r, 0, n * psize, UPG_ADVICE_RANDOM), 0);

	/* One byte read in each of pages 0..3, at different offsets. */
	for (uint64_t i = 0; i < 4; i++) {
		size_t off = (size_t)(i * (psize / 4) + (i == 3 ? psize / 4 - 1 : 0));

		cr_assert_eq(touch_read(p + i * psize + off), 0);
		cr_assert_eq(pages_present(p + i * psize, psize / ps), (long)(psize / ps),
			     "a read of one byte did not map all of upager page %llu",
			     (unsigned long long)i);
		stats_wait(ctx, st, new_faults(&st) == i + 1, 5000);
	}
	if (zeropage)
		stats_wait(ctx, st, st.zero_mapped == 4, 5000);
	else
		stats_wait(ctx, st, st.zero_filled == 4, 5000);
	cr_assert_geq(st.faults_read, 4);
	cr_assert_eq(st.faults_write, 0);

	/* Every other byte of those pages is mapped already: no more faults. */
	cr_assert_eq(check_zero(p, ps, 0, 4 * psize / ps), -1);
	st = stats_settle(ctx, 20, 5000);
	cr_assert_eq(new_faults(&st), 4, "reading the rest of a read page faulted again");

	/* One byte written in each of pages 4..7, at the end of the page. */
	for (uint64_t i = 4; i < n; i++) {
		touch_write(p + (i + 1) * psize - 1, 0x5a);
		cr_assert_eq(pages_present(p + i * psize, psize / ps), (long)(psize / ps),
			     "a write of one byte did not map all of upager page %llu",
			     (unsigned long long)i);
		if (i + 1 < n)
			cr_assert_eq(pages_present(p + (i + 1) * psize, 1), 0,
				     "the next upager page was mapped too");
		stats_wait(ctx, st, new_faults(&st) == i + 1, 5000);
	}
	stats_wait(ctx, st, st.zero_filled == (zeropage ? 4 : 8), 5000);
	cr_assert_geq(st.faults_write, 4);
	cr_assert_eq(st.zero_mapped, zeropage ? 4 : 0);
	stats_wait(ctx, st, st.resident_bytes == (zeropage ? 4 : 8) * psize, 5000);
	for (uint64_t i = 4; i < n; i++) {
		cr_assert_eq(p[(i + 1) * psize - 1], 0x5a);
		cr_assert(all_zero(p + i * psize, psize - 1), "written page %llu not zeroed",
			  (unsigned long long)i);
	}

	/* Whole pages written: the written ones without a fault, the read ones
	 * copied on write by the kernel, still without one. */
	fill_pages(p, (size_t)psize, 0, n, 7);
	cr_assert_eq(check_pages(p, (size_t)psize, 0, n, 7), -1);
	st = stats_settle(ctx, 20, 5000);
	cr_assert_eq(new_faults(&st), n, "%llu faults for %llu upager pages",
		     (unsigned long long)new_faults(&st), (unsigned long long)n);
	cr_assert_eq(st.errors, 0);
	cr_assert_eq(upg_region_destroy(r), 0);
	upg_ctx_destroy(ctx);
}

Test(region, page_16k, .timeout = 30)
{
	large_pages(16 * KiB);
}

Test(region, page_64k, .timeout = 30)
{
	large_pages(64 * KiB);
}

Test(region, page_2m, .timeout = 30)
{
	large_pages(2 * MiB);
}

/* ------------------------------------------------------------------------
 * Untouched pages: zero, cheap
 */

Test(region, untouched_reads_zero_writes_resident, .timeout = 30)
{
	size_t ps = itest_page();
	const uint64_t n = 64;
	upg_ctx *ctx = ctx_new(NULL);
	upg_region *r = region_new(ctx, n * ps, 0);
	uint8_t *p = upg_region_addr(r);
	struct upg_stats st;

	if (!(upg_ctx_features(ctx) & UPG_FEAT_ZEROPAGE))
		cr_skip_test("kernel lacks UFFDIO_ZEROPAGE");
	/* A fault per page (zero-ahead has its own test below). */
	cr_assert_eq(upg_advise(r, 0, n * ps, UPG_ADVICE_RANDOM), 0);

	/* Reads of the first half: zeros, the shared zero page, no memory. */
	cr_assert_eq(check_zero(p, ps, 0, n / 2), -1);
	stats_wait(ctx, st, st.zero_mapped == n / 2, 5000);
	cr_assert_geq(st.faults_read, n / 2);
	cr_assert_eq(st.zero_filled, 0);
	cr_assert_eq(st.resident_bytes, 0, "zero-mapped pages counted as resident");

	/* Writes to the second half: private zeroed pages, resident. */
	for (uint64_t i = n / 2; i < n; i++)
		touch_write(p + i * ps, 1);
	stats_wait(ctx, st, st.zero_filled == n / 2, 5000);
	stats_wait(ctx, st, st.resident_bytes == n / 2 * ps, 5000);
	cr_assert_geq(st.faults_write, n / 2);
	cr_assert_eq(st.zero_mapped, n / 2);
	for (uint64_t i = n / 2; i < n; i++) {
		cr_assert_eq(p[i * ps], 1);
		cr_assert(all_zero(p + i * ps + 1, ps - 1), "first write: page %llu not zero",
			  (unsigned long long)i);
	}

	/* Patterns everywhere; the read half is copied on write by the kernel. */
	fill_pages(p, ps, 0, n, 3);
	cr_assert_eq(check_pages(p, ps, 0, n, 3), -1);
	st = stats_settle(ctx, 20, 5000);
	cr_assert_eq(new_faults(&st), n);
	cr_assert_eq(upg_region_destroy(r), 0);
	upg_ctx_destroy(ctx);
}

/*
 * Without a budget too, memory filled in order is mapped ahead of its
 * faults (zero-ahead), zeroed; reads of new memory map the zero page only
 * and nothing ahead; a region advised random gets a fault per page.
 */
Test(region, zero_ahead_without_a_budget, .timeout = 30)
{
	size_t ps = itest_page();
	const uint64_t n = 4096;
	upg_ctx *ctx = ctx_new(NULL);
	upg_region *fwd = region_new(ctx, n * ps, 0), *rnd = region_new(ctx, n * ps, 0);
	upg_region *rd = region_new(ctx, n * ps, 0);
	uint8_t *b_fwd = upg_region_addr(fwd), *b_rnd = upg_region_addr(rnd);
	uint8_t *b_rd = upg_region_addr(rd);
	struct upg_stats st0, st1;

	st0 = stats_of(ctx);
	for (uint64_t i = 0; i < n; i++)
		cr_assert(all_zero(b_fwd + i * ps, ps), "new page %llu not zero", (unsigned long long)i);
	/* Reads map nothing ahead (written pages would cost memory). */
	st1 = stats_settle(ctx, 20, 5000);
	cr_assert_eq(st1.zero_ahead, st0.zero_ahead, "reads of new memory mapped pages ahead");
	fill_pages(b_rd, ps, 0, n, 1);
	st0 = stats_settle(ctx, 20, 5000);
	cr_assert_geq(st0.zero_ahead - st1.zero_ahead, n / 2,
		      "only %llu of %llu pages filled in order were mapped ahead",
		      (unsigned long long)(st0.zero_ahead - st1.zero_ahead), (unsigned long long)n);
	cr_assert_leq(st0.faults - st1.faults, n / 8, "%llu faults for %llu pages filled in order",
		      (unsigned long long)(st0.faults - st1.faults), (unsigned long long)n);
	cr_assert_eq(upg_advise(rnd, 0, n * ps, UPG_ADVICE_RANDOM), 0);
	fill_pages(b_rnd, ps, 0, n, 2);
	st1 = stats_settle(ctx, 20, 5000);
	cr_assert_eq(st1.zero_ahead, st0.zero_ahead, "pages mapped ahead in a region advised random");
	cr_assert_geq(st1.faults - st0.faults, n, "a fault per page expected");
	cr_assert_eq(check_pages(b_rd, ps, 0, n, 1), -1, "a page filled in order read back wrong");
	cr_assert_eq(check_pages(b_rnd, ps, 0, n, 2), -1, "a page of the random region read back wrong");
	cr_assert_eq(st1.errors, 0);
	upg_region_destroy(fwd);
	upg_region_destroy(rnd);
	upg_region_destroy(rd);
	upg_ctx_destroy(ctx);
}

Test(region, sparse_1tib, .timeout = 60)
{
	size_t ps = itest_page();
	const uint64_t size = 1 * TiB;
	const uint64_t npages = size / ps;
	uint64_t idx[8];
	upg_ctx *ctx = ctx_new(NULL);
	long rss0 = proc_rss_kb(), rss1;
	upg_region *r = NULL;
	uint8_t *p;
	struct upg_stats st;
	int ret = upg_region_create(ctx, size, NULL, &r);

#if defined(__SANITIZE_THREAD__)
	if (ret == -ENOMEM)
		cr_skip_test("ThreadSanitizer cannot shadow a 1 TiB mapping");
#endif
	cr_assert_eq(ret, 0, "1 TiB region: %s", upg_strerror(ret));
	p = upg_region_addr(r);

	cr_assert_eq(upg_region_size(r), size);
	/* Scattered pages: the ends, the middle and in between. */
	idx[0] = 0;
	idx[1] = npages - 1;
	for (int i = 2; i < 8; i++)
		idx[i] = npages / 7 * (uint64_t)(i - 1) + (uint64_t)i * 4099;

	for (int i = 0; i < 8; i += 2)
		pattern_fill(p + idx[i] * ps, ps, 11, idx[i]);
	for (int i = 1; i < 8; i += 2)
		cr_assert(all_zero(p + idx[i] * ps, ps), "untouched page %llu not zero",
			  (unsigned long long)idx[i]);
	for (int i = 0; i < 8; i += 2)
		cr_assert_eq(pattern_check(p + idx[i] * ps, ps, 11, idx[i]), -1,
			     "page %llu", (unsigned long long)idx[i]);

	stats_wait(ctx, st, st.zero_filled + st.zero_mapped == 8, 5000);
	stats_wait(ctx, st, new_faults(&st) == 8, 5000);
	stats_wait(ctx, st, st.resident_bytes == 4 * ps, 5000);
	rss1 = proc_rss_kb();
	cr_assert(rss1 - rss0 < 64 * 1024, "1 TiB sparse region grew RSS by %ld kB", rss1 - rss0);

	cr_assert_eq(upg_region_destroy(r), 0);
	cr_assert_eq(stats_of(ctx).regions, 0);
	upg_ctx_destroy(ctx);
}

/* ------------------------------------------------------------------------
 * Many regions in one context
 */

#define MANY 10000

Test(region, ten_thousand, .timeout = 120)
{
	size_t ps = itest_page();
	upg_ctx *ctx = ctx_new(NULL);
	upg_region **r = calloc(MANY, sizeof(*r));
	struct upg_stats st;
	long bad = -1;

	cr_assert_not_null(r);
	/* Each region is at least one VMA, the registration may split more:
	 * stay well under vm.max_map_count (65530 by default). */
	for (int i = 0; i < MANY; i++)
		r[i] = region_new(ctx, 2 * ps, 0);
	cr_assert_eq(stats_of(ctx).regions, MANY);

	/* One page of each, written, then all read back. */
	for (int i = 0; i < MANY; i++)
		pattern_fill((uint8_t *)upg_region_addr(r[i]) + (size_t)(i & 1) * ps, ps, 5,
			     (uint64_t)i);
	for (int i = 0; i < MANY && bad < 0; i++)
		if (pattern_check((uint8_t *)upg_region_addr(r[i]) + (size_t)(i & 1) * ps, ps, 5,
				  (uint64_t)i) >= 0 ||
		    !all_zero((uint8_t *)upg_region_addr(r[i]) + (size_t)(~i & 1) * ps, ps))
			bad = i;
	cr_assert_eq(bad, -1, "region %ld has wrong contents", bad);

	stats_wait(ctx, st, st.zero_filled == MANY, 10000);
	stats_wait(ctx, st, st.zero_mapped == MANY, 10000);
	stats_wait(ctx, st, new_faults(&st) == 2 * MANY, 10000);
	/* Counted after the faulting thread was woken, like the rest. */
	stats_wait(ctx, st, st.resident_bytes == (uint64_t)MANY * ps, 10000);
	cr_assert_eq(st.resident_bytes, (uint64_t)MANY * ps);
	cr_assert_eq(st.errors, 0);
	cr_assert_eq(st.faults_stale, 0);

	/* Destroy in an order that is neither creation nor address order. */
	for (int i = 0; i < MANY; i += 2)
		cr_assert_eq(upg_region_destroy(r[i]), 0);
	cr_assert_eq(stats_of(ctx).regions, MANY / 2);
	for (int i = MANY - 1; i > 0; i -= 2) {
		void *a = upg_region_addr(r[i]);

		cr_assert_eq(pattern_check((uint8_t *)a + ps, ps, 5, (uint64_t)i), -1,
			     "region %d lost its page while others were destroyed", i);
		cr_assert_eq(upg_region_destroy(r[i]), 0);
	}
	st = stats_of(ctx);
	cr_assert_eq(st.regions, 0);
	cr_assert_eq(st.resident_bytes, 0);
	free(r);
	upg_ctx_destroy(ctx);
}

/* ------------------------------------------------------------------------
 * Statistics: callers built against an older or newer header
 */

static uint64_t hist_total(const struct upg_stats *st)
{
	uint64_t total = 0;

	for (int i = 0; i < UPG_LAT_BUCKETS; i++)
		total += st->latency_hist[i];
	return total;
}

Test(region, stats_sizes, .timeout = 20)
{
	size_t ps = itest_page();
	upg_ctx *ctx = ctx_new(NULL);
	upg_region *r = region_new(ctx, 4 * ps, 0);
	uint8_t *p = upg_region_addr(r);
	unsigned char buf[sizeof(struct upg_stats) + 64];
	struct upg_stats *st = (struct upg_stats *)buf, full;
	const uint32_t old = offsetof(struct upg_stats, faults);

	fill_pages(p, ps, 0, 4, 1);
	stats_wait(ctx, full, full.zero_filled == 4 && full.resident_bytes == 4 * ps &&
		   hist_total(&full) == full.faults, 5000);

	/* An older caller that knows only the header fields. */
	memset(buf, 0xa5, sizeof(buf));
	st->size = old;
	cr_assert_eq(upg_stats_get(ctx, st), 0);
	cr_assert_eq(st->size, old, "size must say how much was filled");
	cr_assert_eq(st->regions, 1);
	cr_assert_eq(st->resident_bytes, 4 * ps);
	cr_assert_eq(st->handler_threads, full.handler_threads);
	for (size_t i = old; i < sizeof(buf); i++)
		cr_assert_eq(buf[i], 0xa5, "byte %zu past the caller's size was written", i);
	cr_assert_eq(upg_stats_latency_ns(st, 0.5), 0, "histogram read from a short struct");

	/* The smallest valid size: just size and handler_threads. */
	memset(buf, 0xa5, sizeof(buf));
	st->size = offsetof(struct upg_stats, regions);
	cr_assert_eq(upg_stats_get(ctx, st), 0);
	cr_assert_eq(st->handler_threads, full.handler_threads);
	for (size_t i = offsetof(struct upg_stats, regions); i < sizeof(buf); i++)
		cr_assert_eq(buf[i], 0xa5, "byte %zu past the caller's size was written", i);

	/* Too small for the header. */
	st->size = offsetof(struct upg_stats, regions) - 1;
	cr_assert_eq(upg_stats_get(ctx, st), -EINVAL);
	st->size = 0;
	cr_assert_eq(upg_stats_get(ctx, st), -EINVAL);
	cr_assert_eq(upg_stats_get(ctx, NULL), -EINVAL);
	st->size = sizeof(*st);
	cr_assert_eq(upg_stats_get(NULL, st), -EINVAL);

	/* A newer caller with a larger struct: ours is filled, the rest kept. */
	memset(buf, 0xa5, sizeof(buf));
	st->size = sizeof(buf);
	cr_assert_eq(upg_stats_get(ctx, st), 0);
	cr_assert_eq(st->size, sizeof(struct upg_stats));
	cr_assert_eq(st->zero_filled, 4);
	for (size_t i = sizeof(struct upg_stats); i < sizeof(buf); i++)
		cr_assert_eq(buf[i], 0xa5, "byte %zu past our struct was written", i);

	/* The latency histogram counts one entry per fault message (waited
	 * for above). */
	cr_assert_geq(full.faults, 4);
	cr_assert_gt(upg_stats_latency_ns(&full, 0.5), 0);
	cr_assert_geq(upg_stats_latency_ns(&full, 1.0), upg_stats_latency_ns(&full, 0.5));
	cr_assert_eq(upg_stats_latency_ns(&full, 0.0), upg_stats_latency_ns(&full, -1.0));
	cr_assert_eq(upg_region_destroy(r), 0);
	upg_ctx_destroy(ctx);
}

/* ------------------------------------------------------------------------
 * Strings
 */

Test(region, strerror_version, .timeout = 10)
{
	char want[32];

	snprintf(want, sizeof(want), "%d.%d.%d", UPG_VERSION_MAJOR, UPG_VERSION_MINOR,
		 UPG_VERSION_PATCH);
	cr_assert_str_eq(upg_version(), want);
	cr_assert_eq(upg_version_number(),
		     UPG_VERSION_MAJOR * 10000 + UPG_VERSION_MINOR * 100 + UPG_VERSION_PATCH);

	cr_assert_not_null(upg_strerror(0));
	cr_assert_str_eq(upg_strerror(-EINVAL), strerror(EINVAL));
	cr_assert_str_eq(upg_strerror(EINVAL), upg_strerror(-EINVAL), "sign must not matter");
	cr_assert_str_eq(upg_strerror(-ENOMEM), strerror(ENOMEM));
	cr_assert_str_neq(upg_strerror(-EPERM), upg_strerror(-ENOMEM));
	cr_assert_not_null(upg_strerror(-99999));
	cr_assert_not_null(upg_strerror(-2147483647));
	cr_assert_gt(strlen(upg_strerror(-99999)), 0);
}

/* ------------------------------------------------------------------------
 * Alignment and partial unmaps (what the preload library needs)
 */

Test(region, align_and_unmap, .timeout = 30)
{
	upg_ctx *ctx = ctx_new(NULL);
	size_t ps = itest_page();
	struct upg_region_opts opts;
	upg_region *r;
	uint8_t *base;

	upg_region_opts_init(&opts);
	opts.align = 2 * MiB;
	cr_assert_eq(upg_region_create(ctx, 64 * ps, &opts, &r), 0);
	base = upg_region_addr(r);
	cr_assert_eq((uintptr_t)base % (2 * MiB), 0);
	fill_pages(base, ps, 0, 64, 1);

	cr_assert_eq(upg_region_unmap(r, 1, ps), -EINVAL);
	cr_assert_eq(upg_region_unmap(r, 60 * ps, 8 * ps), -EINVAL);
	/* The middle goes; both ends keep their data and keep faulting. */
	cr_assert_eq(upg_region_unmap(r, 16 * ps, 16 * ps), 0);
	cr_assert_eq(check_pages(base, ps, 0, 16, 1), -1);
	cr_assert_eq(check_pages(base, ps, 32, 32, 1), -1);
	cr_assert_eq(upg_region_unmap(r, 0, 16 * ps), 0);
	/* Unmapping what is left destroys the region. */
	cr_assert_eq(upg_region_unmap(r, 16 * ps, 48 * ps), 1);
	cr_assert_eq(stats_of(ctx).regions, 0);

	opts.align = 3 * ps;
	cr_assert_eq(upg_region_create(ctx, 64 * ps, &opts, &r), -EINVAL);
	upg_ctx_destroy(ctx);
}

Test(region, parse_size, .timeout = 10)
{
	uint64_t v = 0;

	cr_assert_eq(upg_parse_size("4096", &v), 0);
	cr_assert_eq(v, 4096);
	cr_assert_eq(upg_parse_size("64k", &v), 0);
	cr_assert_eq(v, 64 * KiB);
	cr_assert_eq(upg_parse_size("512M", &v), 0);
	cr_assert_eq(v, 512 * MiB);
	cr_assert_eq(upg_parse_size("2GiB", &v), 0);
	cr_assert_eq(v, 2 * GiB);
	cr_assert_eq(upg_parse_size("1TB", &v), 0);
	cr_assert_eq(v, TiB);
	cr_assert_eq(upg_parse_size("", &v), -EINVAL);
	cr_assert_eq(upg_parse_size("-1", &v), -EINVAL);
	cr_assert_eq(upg_parse_size("12Q", &v), -EINVAL);
	cr_assert_eq(upg_parse_size("99999999999T", &v), -EINVAL);
	cr_assert_eq(upg_parse_size(NULL, &v), -EINVAL);
}
