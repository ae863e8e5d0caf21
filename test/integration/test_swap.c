/*
 * Paging under a memory limit: a working set several times the limit, paged
 * through a swap file, every page verified, and the memory held bounded all
 * along the run (sampled), not only once it is over.
 *
 * The matrix runs every eviction path (forced by masking the features the
 * better ones need) under both policies with 1 and 4 threads. A path the
 * kernel cannot offer skips with the reason.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <sys/stat.h>

#include "itest.h"

#define LIMIT (8 * MiB)

/*
 * What resident_bytes + cooling_bytes may exceed the limit by in a sample
 * taken mid-run: two batches of PAGING_BATCH (64) pages. The budget itself
 * (runtime/paging.c, paging_reserve) never lets the pages upager holds pass
 * the limit, but the two counters are per-region and per-pool counts that
 * pages in flight between them (the reclaimer moves a batch into the cooling
 * pool; handlers bring pages back through their swap-in buffers) leave
 * counted twice for a moment, and a snapshot reads them one after the other.
 * Once the run is over the bound holds exactly (checked at the end).
 */
#define SAMPLE_SLACK_PAGES (2 * 64)
/* What the process's anonymous memory (RssAnon + RssShmem: not the pages of
 * its libraries, which a first run under emulation faults in by megabytes)
 * may grow by during the paging phase beyond the limit: swap-in buffers and I/O rings, cooling frames waiting for their
 * batched MADV_DONTNEED, thread stacks, the test's own bookkeeping. */
#define RSS_SLACK (16 * MiB)
#define SAMPLE_US 10000
#define JOIN_S 90.0

/* Swap files need a filesystem with O_DIRECT: $TMPDIR, else /var/tmp (on
 * many systems /tmp is a tmpfs). */
static char swapdir[4096];
static int swapdir_made;

/* .fini of every test: the swap file in swapdir is unlinked, so the
 * directory can go even if the test failed with its context alive. */
static void swapdir_remove(void)
{
	if (swapdir_made && rmdir(swapdir) == 0)
		swapdir_made = 0;
}

/* The eviction paths and what each needs the kernel to have. */
struct path {
	uint32_t path;
	uint64_t mask;        /* features masked to force it */
	uint64_t needs;
	const char *why;
};

static const struct path paths[] = {
	[UPG_EVICT_MOVE] = { UPG_EVICT_MOVE, 0, UPG_FEAT_MOVE, "UFFDIO_MOVE (Linux 6.8)" },
	[UPG_EVICT_WP] = { UPG_EVICT_WP, UPG_FEAT_MOVE, UPG_FEAT_WP,
			   "userfaultfd write-protect (x86_64 5.7, arm64 6.10)" },
	[UPG_EVICT_MPROTECT] = { UPG_EVICT_MPROTECT, UPG_FEAT_MOVE | UPG_FEAT_WP, 0, "" },
};

static upg_ctx *swap_ctx(uint32_t path, uint32_t policy, unsigned handlers)
{
	static struct upg_swap_file sf;
	uint64_t probed = features_or_skip();
	const struct path *pa = &paths[path];
	struct upg_config cfg;
	struct upg_stats st;
	upg_ctx *ctx = NULL;
	int ret;

	if ((probed & pa->needs) != pa->needs)
		cr_skip_test("the %s eviction path needs %s, which this kernel lacks",
			     path == UPG_EVICT_MOVE ? "MOVE" : "WP", pa->why);
	snprintf(swapdir, sizeof(swapdir), "%s/upager-test-XXXXXX",
		 getenv("TMPDIR") ? getenv("TMPDIR") : "/var/tmp");
	cr_assert_not_null(mkdtemp(swapdir), "mkdtemp %s: %s", swapdir, strerror(errno));
	swapdir_made = 1;
	sf = (struct upg_swap_file){ .path = swapdir, .size = 256 * MiB };
	upg_config_init(&cfg);
	cfg.mem_limit = LIMIT;
	cfg.swap_files = &sf;
	cfg.nswap_files = 1;
	cfg.policy = policy;
	cfg.feature_mask = pa->mask;
	cfg.handler_threads = handlers;
	ret = upg_ctx_create(&cfg, &ctx);
	if (ret < 0)
		swapdir_remove();  /* a skip runs no .fini */
	if (ret == -EPERM || ret == -EACCES)
		cr_skip_test("userfaultfd not permitted (%s): run as root", upg_strerror(ret));
	cr_assert_eq(ret, 0, "upg_ctx_create: %s", upg_strerror(ret));
	cr_assert_not_null(ctx);
	st = stats_of(ctx);
	cr_assert_eq(st.evict_path, path, "eviction path %u in use, not %u", st.evict_path, path);
	return ctx;
}

struct worker {
	uint8_t *base;
	uint64_t pages, first, count, seed, ops, bad;
	uint8_t *gen;         /* generation of each page, owned by one thread */
	uint8_t *dropped;     /* page dropped with MADV_DONTNEED: reads zeros */
	unsigned drop_one_in; /* drop instead of rewrite once in this many; 0 never */
	size_t ps;
};

/* Each worker owns pages first..first+count: random reads (checked) and
 * rewrites of whole pages, and with drop_one_in, MADV_DONTNEED of pages,
 * which must read back as zeros until written again. */
static void *work(void *arg)
{
	struct worker *w = arg;
	uint64_t s = w->seed;

	for (uint64_t i = 0; i < w->ops; i++) {
		uint64_t p = w->first + xorshift64(&s) % w->count, x;
		uint8_t *page = w->base + p * w->ps;

		if (w->dropped[p] ? !all_zero(page, w->ps)
				  : pattern_check(page, w->ps, w->gen[p], p) >= 0)
			w->bad++;
		x = xorshift64(&s);
		if (w->drop_one_in && x % w->drop_one_in == 0) {
			if (madvise(page, w->ps, MADV_DONTNEED) == 0)
				w->dropped[p] = 1;
			else
				w->bad++;
		} else if (x & 1) {
			w->gen[p]++;
			w->dropped[p] = 0;
			pattern_fill(page, w->ps, w->gen[p], p);
		}
	}
	return NULL;
}

/* Samples, every SAMPLE_US until stopped (and once more then), the memory
 * the context holds and the process's resident memory, keeping the maxima. Asserts
 * nothing: the main thread does. */
struct sampler {
	pthread_t thread;
	upg_ctx *ctx;
	_Atomic int stop;
	uint64_t max_mem;     /* resident_bytes + cooling_bytes */
	long max_rss_kb;      /* RssAnon + RssShmem */
	long max_file_kb;     /* RssFile, reported only */
	unsigned long samples, errors;
};

static void *sample_main(void *arg)
{
	struct sampler *s = arg;

	for (;;) {
		int last = atomic_load(&s->stop);
		struct upg_stats st;
		long rss, file;

		memset(&st, 0, sizeof(st));
		st.size = sizeof(st);
		if (upg_stats_get(s->ctx, &st) == 0) {
			if (st.resident_bytes + st.cooling_bytes > s->max_mem)
				s->max_mem = st.resident_bytes + st.cooling_bytes;
		} else {
			s->errors++;
		}
		rss = proc_anon_kb();
		file = proc_status_kb("RssFile");
		if (rss < 0 || file < 0)
			s->errors++;
		if (rss > s->max_rss_kb)
			s->max_rss_kb = rss;
		if (file > s->max_file_kb)
			s->max_file_kb = file;
		s->samples++;
		if (last)
			return NULL;
		usleep(SAMPLE_US);
	}
}

static void run_matrix(uint32_t path, uint32_t policy, unsigned threads, unsigned drop_one_in)
{
	upg_ctx *ctx = swap_ctx(path, policy, 0);
	size_t ps = itest_page();
	uint64_t size = 4 * LIMIT, pages = size / ps;
	const uint64_t mem_bound = LIMIT + SAMPLE_SLACK_PAGES * ps;
	upg_region *r = region_new(ctx, size, 0);
	uint8_t *base = upg_region_addr(r);
	uint8_t *gen = calloc(pages, 1), *dropped = calloc(pages, 1);
	/* Static: a thread left stuck by a failed test must not point into a
	 * stack frame the failure unwound. */
	static struct worker w[8];
	static pthread_t t[8];
	static struct sampler smp;
	struct upg_stats st;
	uint64_t bad = 0;
	long rss0_kb, file0_kb;

	cr_assert_not_null(gen);
	cr_assert_not_null(dropped);
	cr_assert_leq(threads, 8);

	/* The paging phase: from the first touch to the last check. */
	rss0_kb = proc_anon_kb();
	file0_kb = proc_status_kb("RssFile");
	cr_assert_gt(rss0_kb, 0, "RssAnon not readable");
	smp = (struct sampler){ .ctx = ctx, .max_rss_kb = rss0_kb, .max_file_kb = file0_kb };
	cr_assert_eq(itest_thread(&smp.thread, sample_main, &smp), 0);

	fill_pages(base, ps, 0, pages, 0);
	cr_assert_eq(check_pages(base, ps, 0, pages, 0), -1, "sequential pass read back wrong");
	for (unsigned i = 0; i < threads; i++) {
		w[i] = (struct worker){ .base = base, .pages = pages, .ps = ps, .gen = gen,
					.dropped = dropped, .drop_one_in = drop_one_in,
					.first = pages * i / threads,
					.count = pages * (i + 1) / threads - pages * i / threads,
					.seed = 12345 + i, .ops = 20000 / threads };
		cr_assert_eq(itest_thread(&t[i], work, &w[i]), 0);
	}
	join_or_fail(t, sizeof(t[0]), threads, ctx, JOIN_S);
	for (unsigned i = 0; i < threads; i++)
		bad += w[i].bad;
	cr_assert_eq(bad, 0, "%llu pages read back wrong", (unsigned long long)bad);
	for (uint64_t p = 0; p < pages; p++) {
		if (dropped[p])
			cr_assert(all_zero(base + p * ps, ps), "dropped page %llu not zero",
				  (unsigned long long)p);
		else
			cr_assert_eq(pattern_check(base + p * ps, ps, gen[p], p), -1,
				     "page %llu wrong", (unsigned long long)p);
	}

	atomic_store(&smp.stop, 1);
	join_or_fail(&smp.thread, sizeof(smp.thread), 1, ctx, JOIN_S);

	st = stats_of(ctx);
	cr_log_info("samples=%lu max_mem=%llu KiB rss_growth=%ld KiB file_growth=%ld KiB swap_outs=%llu "
		    "swap_ins=%llu cooling=%llu clean=%llu deferred=%llu", smp.samples,
		    (unsigned long long)(smp.max_mem / KiB), smp.max_rss_kb - rss0_kb,
		    smp.max_file_kb - file0_kb,
		    (unsigned long long)st.swap_outs, (unsigned long long)st.swap_ins,
		    (unsigned long long)st.faults_cooling, (unsigned long long)st.dropped_clean,
		    (unsigned long long)st.faults_deferred);
	cr_assert_gt(st.swap_outs, 0, "nothing was written to swap");
	cr_assert_gt(st.swap_ins, 0, "nothing was read back");
	cr_assert_eq(smp.errors, 0, "%lu samples could not be read", smp.errors);
	cr_assert_geq(smp.samples, 2, "only %lu sample(s) taken", smp.samples);
	cr_assert_leq(smp.max_mem, mem_bound,
		      "memory held reached %llu bytes during the run: above the limit %llu "
		      "+ %u pages of slack", (unsigned long long)smp.max_mem,
		      (unsigned long long)LIMIT, SAMPLE_SLACK_PAGES);
	/* Sanitizers keep shadow memory and quarantines that VmRSS counts: the
	 * process-level bound is checked in plain builds only. */
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
	cr_assert_lt((uint64_t)(smp.max_rss_kb - rss0_kb) * KiB, LIMIT + RSS_SLACK,
		     "RssAnon+RssShmem grew by %ld kB during paging (from %ld kB to %ld kB): not below "
		     "the limit + %llu MiB", smp.max_rss_kb - rss0_kb, rss0_kb, smp.max_rss_kb,
		     (unsigned long long)(RSS_SLACK / MiB));
#endif
	/* At rest, no slack. */
	stats_wait(ctx, st, st.resident_bytes + st.cooling_bytes <= LIMIT, 5000);
	free(gen);
	free(dropped);
	upg_region_destroy(r);
	upg_ctx_destroy(ctx);
}

Test(swap, move_cooling_1t, .timeout = 120, .fini = swapdir_remove)
{
	run_matrix(UPG_EVICT_MOVE, UPG_POLICY_COOLING, 1, 0);
}

Test(swap, move_cooling_4t, .timeout = 120, .fini = swapdir_remove)
{
	run_matrix(UPG_EVICT_MOVE, UPG_POLICY_COOLING, 4, 0);
}

Test(swap, move_fifo_1t, .timeout = 120, .fini = swapdir_remove)
{
	run_matrix(UPG_EVICT_MOVE, UPG_POLICY_FIFO, 1, 0);
}

Test(swap, move_fifo_4t, .timeout = 120, .fini = swapdir_remove)
{
	run_matrix(UPG_EVICT_MOVE, UPG_POLICY_FIFO, 4, 0);
}

Test(swap, wp_cooling_1t, .timeout = 120, .fini = swapdir_remove)
{
	run_matrix(UPG_EVICT_WP, UPG_POLICY_COOLING, 1, 0);
}

Test(swap, wp_cooling_4t, .timeout = 120, .fini = swapdir_remove)
{
	run_matrix(UPG_EVICT_WP, UPG_POLICY_COOLING, 4, 0);
}

Test(swap, wp_fifo_1t, .timeout = 120, .fini = swapdir_remove)
{
	run_matrix(UPG_EVICT_WP, UPG_POLICY_FIFO, 1, 0);
}

Test(swap, wp_fifo_4t, .timeout = 120, .fini = swapdir_remove)
{
	run_matrix(UPG_EVICT_WP, UPG_POLICY_FIFO, 4, 0);
}

Test(swap, mprotect_cooling_1t, .timeout = 120, .fini = swapdir_remove)
{
	run_matrix(UPG_EVICT_MPROTECT, UPG_POLICY_COOLING, 1, 0);
}

Test(swap, mprotect_cooling_4t, .timeout = 120, .fini = swapdir_remove)
{
	run_matrix(UPG_EVICT_MPROTECT, UPG_POLICY_COOLING, 4, 0);
}

Test(swap, mprotect_fifo_1t, .timeout = 120, .fini = swapdir_remove)
{
	run_matrix(UPG_EVICT_MPROTECT, UPG_POLICY_FIFO, 1, 0);
}

Test(swap, mprotect_fifo_4t, .timeout = 120, .fini = swapdir_remove)
{
	run_matrix(UPG_EVICT_MPROTECT, UPG_POLICY_FIFO, 4, 0);
}

/* The application drops pages while they are being evicted: its
 * MADV_DONTNEED must win over the reclaimer's own drops and copies. */
Test(swap, move_dontneed_4t, .timeout = 120, .fini = swapdir_remove)
{
	run_matrix(UPG_EVICT_MOVE, UPG_POLICY_COOLING, 4, 8);
}

/* The application drops pages while they are being evicted: its
 * MADV_DONTNEED must win over the reclaimer's own drops and copies. */
Test(swap, wp_dontneed_4t, .timeout = 120, .fini = swapdir_remove)
{
	run_matrix(UPG_EVICT_WP, UPG_POLICY_COOLING, 4, 8);
}

/* The application drops pages while they are being evicted: its
 * MADV_DONTNEED must win over the reclaimer's own drops and copies. */
Test(swap, mprotect_dontneed_4t, .timeout = 120, .fini = swapdir_remove)
{
	run_matrix(UPG_EVICT_MPROTECT, UPG_POLICY_COOLING, 4, 8);
}

/* ------------------------------------------------------------------------
 * Zero-ahead: filling new memory in order maps pages ahead of the faults,
 * so that most pages take none (counted where the budget has room: with it
 * full, how far ahead is mapped depends on how fast reclaim frees); a
 * region advised random, or filled backwards, gets none mapped ahead.
 * Contents verified, 4x the limit, under the limit at rest.
 */
static void zero_ahead_case(uint32_t path)
{
	upg_ctx *ctx = swap_ctx(path, UPG_POLICY_COOLING, 0);
	size_t ps = itest_page();
	uint64_t n = 4 * LIMIT / ps, room = LIMIT / 2 / ps;
	upg_region *fwd = region_new(ctx, n * ps, 0), *rnd = region_new(ctx, n * ps, 0);
	upg_region *back = region_new(ctx, n * ps, 0);
	uint8_t *b_fwd = upg_region_addr(fwd), *b_rnd = upg_region_addr(rnd);
	uint8_t *b_back = upg_region_addr(back);
	struct upg_stats st0, st1;

	st0 = stats_of(ctx);
	fill_pages(b_fwd, ps, 0, room, 1);
	st1 = stats_of(ctx);
	cr_log_info("forward, half the limit: %llu faults, %llu pages mapped ahead",
		    (unsigned long long)(st1.faults - st0.faults),
		    (unsigned long long)(st1.zero_ahead - st0.zero_ahead));
	cr_assert_geq(st1.zero_ahead - st0.zero_ahead, room / 2,
		      "only %llu of %llu pages filled in order were mapped ahead",
		      (unsigned long long)(st1.zero_ahead - st0.zero_ahead),
		      (unsigned long long)room);
	cr_assert_leq(st1.faults - st0.faults, room / 8, "%llu faults for %llu pages filled in order",
		      (unsigned long long)(st1.faults - st0.faults), (unsigned long long)room);
	fill_pages(b_fwd, ps, room, n - room, 1);

	cr_assert_eq(upg_advise(rnd, 0, n * ps, UPG_ADVICE_RANDOM), 0);
	/* The last fault's pages ahead are mapped after it returned. */
	st0 = stats_settle(ctx, 100, 5000);
	fill_pages(b_rnd, ps, 0, n, 2);
	for (uint64_t i = n; i-- > 0;)
		pattern_fill(b_back + i * ps, ps, 3, i);
	st1 = stats_of(ctx);
	cr_assert_eq(st1.zero_ahead, st0.zero_ahead,
		     "%llu pages mapped ahead for a region advised random or filled backwards",
		     (unsigned long long)(st1.zero_ahead - st0.zero_ahead));
	cr_assert_geq(st1.faults - st0.faults, 2 * n, "a fault per page expected");

	cr_assert_eq(check_pages(b_fwd, ps, 0, n, 1), -1, "a page filled in order read back wrong");
	cr_assert_eq(check_pages(b_rnd, ps, 0, n, 2), -1, "a page of the random region read back wrong");
	cr_assert_eq(check_pages(b_back, ps, 0, n, 3), -1, "a page filled backwards read back wrong");
	st1 = stats_settle(ctx, 200, 10000);
	cr_assert_leq(st1.resident_bytes + st1.cooling_bytes, LIMIT, "above the limit at rest");
	upg_region_destroy(fwd);
	upg_region_destroy(rnd);
	upg_region_destroy(back);
	upg_ctx_destroy(ctx);
}

Test(swap, zero_ahead_move, .timeout = 120, .fini = swapdir_remove)
{
	zero_ahead_case(UPG_EVICT_MOVE);
}

Test(swap, zero_ahead_wp, .timeout = 120, .fini = swapdir_remove)
{
	zero_ahead_case(UPG_EVICT_WP);
}

Test(swap, zero_ahead_mprotect, .timeout = 120, .fini = swapdir_remove)
{
	zero_ahead_case(UPG_EVICT_MPROTECT);
}

/*
 * Regression: freeing a batch of cooling frames raised a REMOVE event on the
 * context's userfaultfd, and until the reclaimer's madvise returned every
 * resolving ioctl failed with EAGAIN, so most runs of pages read ahead in a
 * scan were retried page by page (13% of the pages scanned, measured). The
 * frames now have a userfaultfd without events (runtime/paging.h,
 * frames_uffd): a scan of a region 4x the limit, three times over, sees
 * retries only from the rare events of its own (none here but the scan).
 */
Test(swap, move_scan_maps_without_retries, .timeout = 120, .fini = swapdir_remove)
{
	upg_ctx *ctx = swap_ctx(UPG_EVICT_MOVE, UPG_POLICY_COOLING, 0);
	size_t ps = itest_page();
	uint64_t n = 4 * LIMIT / ps;
	upg_region *r = region_new(ctx, n * ps, 0);
	uint8_t *base = upg_region_addr(r);
	struct upg_stats st0, st1;

	fill_pages(base, ps, 0, n, 7);
	st0 = stats_settle(ctx, 100, 5000);
	for (int pass = 0; pass < 3; pass++)
		cr_assert_eq(check_pages(base, ps, 0, n, 7), -1, "pass %d: a page read back wrong",
			     pass);
	st1 = stats_of(ctx);
	cr_log_info("3 scans of %llu pages: %llu read ahead, %llu ioctl retries",
		    (unsigned long long)n, (unsigned long long)(st1.readahead_pages - st0.readahead_pages),
		    (unsigned long long)(st1.ioctl_retries - st0.ioctl_retries));
	cr_assert_geq(st1.readahead_pages - st0.readahead_pages, 2 * n,
		      "the scans were not read ahead");
	cr_assert_leq(st1.ioctl_retries - st0.ioctl_retries, n / 64,
		      "%llu resolving ioctls failed with EAGAIN in 3 scans of %llu pages",
		      (unsigned long long)(st1.ioctl_retries - st0.ioctl_retries),
		      (unsigned long long)n);
	upg_region_destroy(r);
	upg_ctx_destroy(ctx);
}

/*
 * A region read from its last page down to its first (a list freed from its
 * end walks its heap this way) is read ahead like a forward scan: without
 * downward streams every page of it was a major fault of its own.
 */
Test(swap, descending_scan_is_read_ahead, .timeout = 120, .fini = swapdir_remove)
{
	upg_ctx *ctx = swap_ctx(UPG_EVICT_MOVE, UPG_POLICY_COOLING, 0);
	size_t ps = itest_page();
	uint64_t n = 4 * LIMIT / ps;
	upg_region *r = region_new(ctx, n * ps, 0);
	uint8_t *base = upg_region_addr(r);
	struct upg_stats st0, st1;

	fill_pages(base, ps, 0, n, 11);
	st0 = stats_settle(ctx, 100, 5000);
	for (uint64_t i = n; i-- > 0;)
		cr_assert_eq(pattern_check(base + i * ps, ps, 11, i), -1,
			     "page %llu read back wrong", (unsigned long long)i);
	st1 = stats_of(ctx);
	cr_log_info("descending scan of %llu pages: %llu major faults, %llu read ahead, %llu hits",
		    (unsigned long long)n,
		    (unsigned long long)(st1.faults_major - st0.faults_major),
		    (unsigned long long)(st1.readahead_pages - st0.readahead_pages),
		    (unsigned long long)(st1.readahead_hits - st0.readahead_hits));
	cr_assert_geq(st1.readahead_pages - st0.readahead_pages, n / 2,
		      "a descending scan was not read ahead");
	cr_assert_leq(st1.faults_major - st0.faults_major, n / 8,
		      "%llu of %llu pages scanned downwards were major faults",
		      (unsigned long long)(st1.faults_major - st0.faults_major),
		      (unsigned long long)n);
	upg_region_destroy(r);
	upg_ctx_destroy(ctx);
}
