/*
 * Paging under a memory limit: a working set several times the limit, paged
 * through a swap file, every page verified, resident memory bounded.
 */
#include <pthread.h>
#include <sys/stat.h>

#include "itest.h"

#define LIMIT (8 * MiB)

static char swapdir[] = "/var/tmp/upager-test-XXXXXX";

static upg_ctx *swap_ctx(uint64_t feature_mask, uint32_t policy, unsigned handlers)
{
	static struct upg_swap_file sf;
	struct upg_config cfg;

	cr_assert_not_null(mkdtemp(swapdir));
	sf = (struct upg_swap_file){ .path = swapdir, .size = 256 * MiB };
	upg_config_init(&cfg);
	cfg.mem_limit = LIMIT;
	cfg.swap_files = &sf;
	cfg.nswap_files = 1;
	cfg.policy = policy;
	cfg.feature_mask = feature_mask;
	cfg.handler_threads = handlers;
	return ctx_new(&cfg);
}

struct worker {
	uint8_t *base;
	uint64_t pages, first, count, seed, ops, bad;
	uint8_t *gen;         /* generation of each page, owned by one thread */
	size_t ps;
};

/* Each worker owns pages first..first+count: random reads (checked) and
 * rewrites of whole pages. */
static void *work(void *arg)
{
	struct worker *w = arg;
	uint64_t s = w->seed;

	for (uint64_t i = 0; i < w->ops; i++) {
		uint64_t p = w->first + xorshift64(&s) % w->count;
		uint8_t *page = w->base + p * w->ps;

		if (pattern_check(page, w->ps, w->gen[p], p) >= 0)
			w->bad++;
		if (xorshift64(&s) & 1) {
			w->gen[p]++;
			pattern_fill(page, w->ps, w->gen[p], p);
		}
	}
	return NULL;
}

static void run_matrix(uint64_t mask, uint32_t policy, unsigned threads)
{
	upg_ctx *ctx = swap_ctx(mask, policy, 0);
	size_t ps = itest_page();
	uint64_t size = 4 * LIMIT, pages = size / ps;
	upg_region *r = region_new(ctx, size, 0);
	uint8_t *base = upg_region_addr(r);
	uint8_t *gen = calloc(pages, 1);
	struct worker w[8];
	pthread_t t[8];
	struct upg_stats st;
	uint64_t bad = 0, peak = 0;

	cr_assert_not_null(gen);
	fill_pages(base, ps, 0, pages, 0);
	cr_assert_eq(check_pages(base, ps, 0, pages, 0), -1, "sequential pass read back wrong");
	for (unsigned i = 0; i < threads; i++) {
		w[i] = (struct worker){ .base = base, .pages = pages, .ps = ps, .gen = gen,
					.first = pages * i / threads,
					.count = pages * (i + 1) / threads - pages * i / threads,
					.seed = 12345 + i, .ops = 20000 / threads };
		pthread_create(&t[i], NULL, work, &w[i]);
	}
	for (unsigned i = 0; i < threads; i++) {
		pthread_join(t[i], NULL);
		bad += w[i].bad;
	}
	st = stats_of(ctx);
	peak = st.resident_bytes + st.cooling_bytes;
	cr_assert_eq(bad, 0, "%llu pages read back wrong", (unsigned long long)bad);
	for (uint64_t p = 0; p < pages; p++)
		cr_assert_eq(pattern_check(base + p * ps, ps, gen[p], p), -1, "page %llu wrong",
			     (unsigned long long)p);
	st = stats_of(ctx);
	cr_assert_gt(st.swap_outs, 0, "nothing was written to swap");
	cr_assert_gt(st.swap_ins, 0, "nothing was read back");
	cr_assert_leq(peak, LIMIT, "memory %llu above the limit", (unsigned long long)peak);
	cr_log_info("swap_outs=%llu swap_ins=%llu cooling=%llu clean=%llu deferred=%llu",
		    (unsigned long long)st.swap_outs, (unsigned long long)st.swap_ins,
		    (unsigned long long)st.faults_cooling, (unsigned long long)st.dropped_clean,
		    (unsigned long long)st.faults_deferred);
	free(gen);
	upg_region_destroy(r);
	upg_ctx_destroy(ctx);
	rmdir(swapdir);
}

Test(swap, move_cooling_1t, .timeout = 120) { run_matrix(0, UPG_POLICY_COOLING, 1); }
Test(swap, move_cooling_4t, .timeout = 120) { run_matrix(0, UPG_POLICY_COOLING, 4); }
Test(swap, move_fifo_1t, .timeout = 120) { run_matrix(0, UPG_POLICY_FIFO, 1); }
Test(swap, move_fifo_4t, .timeout = 120) { run_matrix(0, UPG_POLICY_FIFO, 4); }
