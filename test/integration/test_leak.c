/*
 * test_leak.c - creating and destroying regions and contexts over and over
 * leaks no descriptor, no memory and no mapping.
 *
 * Each test warms up first (thread stacks that glibc caches, malloc arenas,
 * lazily mapped libraries), then compares /proc/self before and after.
 */
#include "itest.h"

#define RSS_SLACK_KB (8 * 1024)
#define MAPS_SLACK 2

struct footprint {
	long fds, rss_kb, maps;
};

static struct footprint footprint(void)
{
	return (struct footprint){ proc_fd_count(), proc_rss_kb(), proc_maps_count() };
}

static void assert_no_growth(struct footprint before, struct footprint after, const char *what)
{
	cr_assert_eq(after.fds, before.fds, "%s: %ld descriptors before, %ld after", what,
		     before.fds, after.fds);
	cr_assert(after.rss_kb - before.rss_kb < RSS_SLACK_KB,
		  "%s: VmRSS grew from %ld kB to %ld kB", what, before.rss_kb, after.rss_kb);
	cr_assert(after.maps <= before.maps + MAPS_SLACK && after.maps >= before.maps - MAPS_SLACK,
		  "%s: %ld mappings before, %ld after", what, before.maps, after.maps);
}

/* One region's life: a few pages touched (written and read), checked. */
static int region_cycle(upg_ctx *ctx, unsigned i)
{
	size_t ps = itest_page();
	/* Sizes vary, so that the state array comes from calloc and, for
	 * the larger ones, from mmap. */
	uint64_t npages = (i % 4 == 3) ? 16384 : 64;
	upg_region *r = NULL;
	uint8_t *p;
	int bad = 0;

	if (upg_region_create(ctx, npages * ps, NULL, &r) < 0)
		return -1;
	p = upg_region_addr(r);
	for (uint64_t k = 0; k < 3; k++)
		pattern_fill(p + (k * 17 % npages) * ps, ps, i, k);
	bad |= !all_zero(p + (npages - 1) * ps, ps);
	for (uint64_t k = 0; k < 3; k++)
		bad |= pattern_check(p + (k * 17 % npages) * ps, ps, i, k) >= 0;
	if (upg_region_destroy(r) < 0)
		return -1;
	return bad ? -2 : 0;
}

Test(leak, region_cycles, .timeout = 120)
{
	upg_ctx *ctx = ctx_new(NULL);
	struct footprint before, after;
	int bad = 0, failed = 0;

	for (unsigned i = 0; i < 20; i++)
		region_cycle(ctx, i);
	before = footprint();
	for (unsigned i = 0; i < 1000; i++) {
		int ret = region_cycle(ctx, i);

		failed += ret == -1;
		bad += ret == -2;
	}
	after = footprint();
	cr_assert_eq(failed, 0, "%d cycles failed to create or destroy", failed);
	cr_assert_eq(bad, 0, "%d cycles read wrong contents", bad);
	cr_assert_eq(stats_of(ctx).regions, 0);
	cr_assert_eq(stats_of(ctx).resident_bytes, 0);
	cr_assert_eq(stats_of(ctx).errors, 0);
	assert_no_growth(before, after, "1000 region cycles");
	upg_ctx_destroy(ctx);
}

/* Regions that live side by side: created in a batch, destroyed in another
 * order. */
Test(leak, region_batches, .timeout = 120)
{
	size_t ps = itest_page();
	upg_ctx *ctx = ctx_new(NULL);
	upg_region *r[50];
	struct footprint before = { 0 }, after;
	int bad = 0;

	for (unsigned round = 0; round < 21; round++) {
		if (round == 1)
			before = footprint();
		for (unsigned i = 0; i < 50; i++) {
			r[i] = region_new(ctx, 32 * ps, 0);
			pattern_fill((uint8_t *)upg_region_addr(r[i]) + (i % 32) * ps, ps, round, i);
		}
		for (unsigned i = 0; i < 50; i++)
			bad += pattern_check((uint8_t *)upg_region_addr(r[i]) + (i % 32) * ps, ps,
					     round, i) >= 0;
		for (unsigned i = 0; i < 50; i++)
			cr_assert_eq(upg_region_destroy(r[(i * 7) % 50]), 0);
	}
	after = footprint();
	cr_assert_eq(bad, 0);
	assert_no_growth(before, after, "20 batches of 50 regions");
	upg_ctx_destroy(ctx);
}

/* One context's life: handler threads, a region or two left for
 * upg_ctx_destroy to reclaim. */
static int ctx_cycle(unsigned i)
{
	size_t ps = itest_page();
	struct upg_config cfg;
	upg_region *r[2];
	upg_ctx *ctx;
	int bad = 0;

	upg_config_init(&cfg);
	cfg.handler_threads = 1 + i % 3;
	if (upg_ctx_create(&cfg, &ctx) < 0)
		return -1;
	for (int k = 0; k < 2; k++) {
		if (upg_region_create(ctx, 16 * ps, NULL, &r[k]) < 0) {
			upg_ctx_destroy(ctx);
			return -1;
		}
		pattern_fill((uint8_t *)upg_region_addr(r[k]) + (size_t)k * ps, ps, i, (uint64_t)k);
		bad |= pattern_check((uint8_t *)upg_region_addr(r[k]) + (size_t)k * ps, ps, i,
				     (uint64_t)k) >= 0;
	}
	/* One destroyed by hand, one by the context. */
	upg_region_destroy(r[0]);
	upg_ctx_destroy(ctx);
	return bad ? -2 : 0;
}

Test(leak, ctx_cycles, .timeout = 120)
{
	struct footprint before, after;
	int bad = 0, failed = 0;

	features_or_skip();
	/* Warm up with every handler count used below, long enough for what
	 * the C library and sanitizers cache per thread to settle (TSan: ~25
	 * thread lifetimes). */
	for (unsigned i = 0; i < 30; i++)
		ctx_cycle(i);
	before = footprint();
	for (unsigned i = 0; i < 50; i++) {
		int ret = ctx_cycle(i);

		failed += ret == -1;
		bad += ret == -2;
	}
	after = footprint();
	cr_assert_eq(failed, 0, "%d context cycles failed", failed);
	cr_assert_eq(bad, 0, "%d context cycles read wrong contents", bad);
	assert_no_growth(before, after, "50 context cycles");
}

/* Failed creations leak nothing either. */
Test(leak, failed_creates, .timeout = 60)
{
	size_t ps = itest_page();
	upg_ctx *ctx = ctx_new(NULL);
	struct upg_config cfg;
	struct footprint before, after;
	upg_region *r;
	upg_ctx *c2;
	int ok = 0;

	before = footprint();
	upg_config_init(&cfg);
	cfg.feature_mask = UPG_FEAT_SYSCALL | UPG_FEAT_DEV_USERFAULTFD;
	for (int i = 0; i < 200; i++) {
		ok += upg_region_create(ctx, ps + 1, NULL, &r) == 0;
		ok += upg_region_create(ctx, 0, NULL, &r) == 0;
		/* Each failure logs a line: a few are enough. */
		if (i % 40 == 0)
			ok += upg_ctx_create(&cfg, &c2) == 0;
	}
	after = footprint();
	cr_assert_eq(ok, 0, "a create that should fail succeeded");
	assert_no_growth(before, after, "failed creates");
	upg_ctx_destroy(ctx);
}
