/*
 * fork(2) of a process with regions. Contexts do not ask for fork events,
 * so the kernel hands the child plain anonymous memory: what the parent had
 * mapped is copied (copy-on-write), the rest reads as zeros. With the fork
 * calls (upg_ctx_fork_prepare/parent/child) the child sees everything the
 * parent had, paged out or not, and pages it under its own budget.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "itest.h"

#define PAGES 512

Test(fork, child_sees_plain_memory_parent_keeps_paging, .timeout = 60)
{
	upg_ctx *ctx = ctx_new(NULL);
	size_t ps = itest_page();
	upg_region *r = region_new_per_page(ctx, PAGES * ps, 0);
	uint8_t *base = upg_region_addr(r);
	struct upg_stats st;
	pid_t pid;
	int status;

	fill_pages(base, ps, 0, PAGES / 2, 1);           /* first half resident */
	pid = fork();
	cr_assert_neq(pid, -1);
	if (pid == 0) {
		/* No cr_assert in the child: report through the exit status. */
		if (check_pages(base, ps, 0, PAGES / 2, 1) >= 0)
			_exit(1);
		if (check_zero(base, ps, PAGES / 2, PAGES / 2) >= 0)
			_exit(2);
		fill_pages(base, ps, 0, PAGES, 2);        /* the child's own copy */
		_exit(check_pages(base, ps, 0, PAGES, 2) >= 0 ? 3 : 0);
	}
	/* Meanwhile the parent faults in the second half and rewrites the first. */
	fill_pages(base, ps, PAGES / 2, PAGES / 2, 1);
	fill_pages(base, ps, 0, PAGES / 2, 3);
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		  "child saw wrong data (status %#x)", status);
	cr_assert_eq(check_pages(base, ps, 0, PAGES / 2, 3), -1, "child's writes leaked into the parent");
	cr_assert_eq(check_pages(base, ps, PAGES / 2, PAGES / 2, 1), -1);
	stats_wait(ctx, st, st.zero_filled == PAGES, 5000);
	upg_region_destroy(r);
	upg_ctx_destroy(ctx);
}

/* ---- paging on both sides ---- */

#define LIMIT (8 * MiB)
#define SET (4 * LIMIT)

static char swapdir[4096];

static void swapdir_remove(void)
{
	if (swapdir[0])
		rmdir(swapdir);
}

/* A context paging under LIMIT to a swap file in a directory of its own,
 * with the features in mask ignored. */
static upg_ctx *paging_ctx(uint64_t mask)
{
	static struct upg_swap_file sf = { .size = 256 * MiB };
	struct upg_config cfg;

	skip_forked_threads_under_tsan();
	features_or_skip();
	snprintf(swapdir, sizeof(swapdir), "%s/upager-fork-XXXXXX",
		 getenv("TMPDIR") ? getenv("TMPDIR") : "/var/tmp");
	cr_assert_not_null(mkdtemp(swapdir), "mkdtemp %s: %s", swapdir, strerror(errno));
	sf.path = swapdir;
	upg_config_init(&cfg);
	cfg.mem_limit = LIMIT;
	cfg.swap_files = &sf;
	cfg.nswap_files = 1;
	cfg.feature_mask = mask;
	return ctx_new(&cfg);
}

/* What the child checks, each failure its own exit status (no cr_assert in
 * a child). */
enum child_fail {
	CHILD_NO_CONTEXT = 10, CHILD_PARENT_DATA, CHILD_PATH, CHILD_OWN_DATA, CHILD_NOT_PAGED,
	CHILD_OVER_BUDGET, CHILD_STATS,
};

static int child(upg_ctx *ctx, upg_region *r, uint8_t *base, size_t ps, uint32_t path, int go)
{
	struct upg_stats st = { .size = sizeof(st) };
	uint64_t pages = SET / ps, slack = 128 * ps;
	char c;

	if (upg_ctx_fork_child(ctx) < 0)
		return CHILD_NO_CONTEXT;
	/* Once the parent has rewritten everything: its old slots died
	 * meanwhile, and must still hold what the child reads. */
	if (read(go, &c, 1) != 1)
		return CHILD_STATS;
	if (check_pages(base, ps, 0, pages, 1) >= 0)
		return CHILD_PARENT_DATA;
	if (upg_stats_get(ctx, &st) < 0)
		return CHILD_STATS;
	if (st.evict_path != path)
		return CHILD_PATH;
	fill_pages(base, ps, 0, pages, 2);
	if (check_pages(base, ps, 0, pages, 2) >= 0)
		return CHILD_OWN_DATA;
	if (upg_stats_get(ctx, &st) < 0)
		return CHILD_STATS;
	fprintf(stderr, "child: swap_outs %llu swap_ins %llu resident %llu KiB cooling %llu KiB\n",
		(unsigned long long)st.swap_outs, (unsigned long long)st.swap_ins,
		(unsigned long long)st.resident_bytes >> 10,
		(unsigned long long)st.cooling_bytes >> 10);
	if (!st.swap_outs || !st.swap_ins)
		return CHILD_NOT_PAGED;
	if (st.resident_bytes + st.cooling_bytes > LIMIT + slack)
		return CHILD_OVER_BUDGET;
	/* Torn down in the child like any context. */
	upg_region_destroy(r);
	upg_ctx_destroy(ctx);
	return 0;
}

/* A working set 4x the budget, mostly paged out, at the fork; the child
 * reads all of it, rewrites all of it and reads it back while the parent
 * does the same with its own values. mask: features masked (the eviction
 * path); child_path: the path the child must use (never MOVE: its pages
 * start shared with the parent). */
static void both_page(uint64_t mask, uint64_t needs, uint32_t parent_path, uint32_t child_path)
{
	uint64_t probed = features_or_skip();
	struct upg_stats st;
	size_t ps = itest_page();
	uint64_t pages = SET / ps;
	upg_region *r;
	upg_ctx *ctx;
	uint8_t *base;
	int status, go[2];
	pid_t pid;

	skip_forked_threads_under_tsan();
	if ((probed & needs) != needs)
		cr_skip_test("this eviction path needs userfaultfd's %s, which this kernel lacks",
			     upg_feature_name(1ull << __builtin_ctzll(needs & ~probed)));
	ctx = paging_ctx(mask);
	st = stats_of(ctx);
	cr_assert_eq(st.evict_path, parent_path);
	r = region_new(ctx, SET, 0);
	base = upg_region_addr(r);
	fill_pages(base, ps, 0, pages, 1);
	stats_wait(ctx, st, st.swap_outs > pages / 2, 10000);

	cr_assert_eq(pipe(go), 0);
	cr_assert_eq(upg_ctx_fork_prepare(ctx), 0);
	pid = fork();
	cr_assert_neq(pid, -1);
	if (pid == 0)
		_exit(child(ctx, r, base, ps, child_path, go[0]));
	upg_ctx_fork_parent(ctx);
	/* The fork read nothing back: the parent holds what it held. */
	st = stats_of(ctx);
	cr_assert_leq(st.resident_bytes + st.cooling_bytes, LIMIT + 128 * ps,
		      "the parent holds %llu KiB at the fork",
		      (unsigned long long)(st.resident_bytes + st.cooling_bytes) >> 10);
	fill_pages(base, ps, 0, pages, 3);
	cr_assert_eq(check_pages(base, ps, 0, pages, 3), -1, "the parent lost its writes");
	st = stats_of(ctx);
	cr_assert_gt(st.swap_kept_bytes, 0, "no slot kept for the child");
	cr_assert_eq(write(go[1], "g", 1), 1);
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		  "the child failed: status %#x (exit %d: see enum child_fail)", status,
		  WIFEXITED(status) ? WEXITSTATUS(status) : -1);
	cr_assert_eq(check_pages(base, ps, 0, pages, 3), -1, "the child's writes showed in the parent");
	/* The child gone, the slots kept for it are freed. */
	stats_wait(ctx, st, st.swap_kept_bytes == 0, 5000);
	st = stats_of(ctx);
	cr_assert_leq(st.resident_bytes + st.cooling_bytes, LIMIT + 128 * ps,
		      "the parent holds %llu KiB after the fork",
		      (unsigned long long)(st.resident_bytes + st.cooling_bytes) >> 10);
	upg_region_destroy(r);
	upg_ctx_destroy(ctx);
}

Test(fork, both_page_move_parent, .timeout = 120, .fini = swapdir_remove)
{
	both_page(0, UPG_FEAT_MOVE | UPG_FEAT_WP, UPG_EVICT_MOVE, UPG_EVICT_WP);
}

Test(fork, both_page_wp, .timeout = 120, .fini = swapdir_remove)
{
	both_page(UPG_FEAT_MOVE, UPG_FEAT_WP, UPG_EVICT_WP, UPG_EVICT_WP);
}

Test(fork, both_page_mprotect, .timeout = 120, .fini = swapdir_remove)
{
	both_page(UPG_FEAT_MOVE | UPG_FEAT_WP, 0, UPG_EVICT_MPROTECT, UPG_EVICT_MPROTECT);
}

/* A child that forks in turn: the grandchild reads pages out in both the
 * child's swap file and the parent's, through the child's. */
static int middle(upg_ctx *ctx, uint8_t *base, size_t ps)
{
	uint64_t pages = SET / ps;
	int status;
	pid_t pid;

	if (upg_ctx_fork_child(ctx) < 0)
		return CHILD_NO_CONTEXT;
	fill_pages(base, ps, 0, pages / 2, 2);  /* paged out to the child's own file */
	if (upg_ctx_fork_prepare(ctx) < 0)
		return CHILD_STATS;
	pid = fork();
	if (pid == 0) {
		if (upg_ctx_fork_child(ctx) < 0)
			_exit(CHILD_NO_CONTEXT);
		if (check_pages(base, ps, 0, pages / 2, 2) >= 0 ||
		    check_pages(base, ps, pages / 2, pages - pages / 2, 1) >= 0)
			_exit(CHILD_PARENT_DATA);
		fill_pages(base, ps, 0, pages, 4);
		_exit(check_pages(base, ps, 0, pages, 4) >= 0 ? CHILD_OWN_DATA : 0);
	}
	upg_ctx_fork_parent(ctx);
	if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status))
		return CHILD_STATS;
	if (WEXITSTATUS(status))
		return 20 + WEXITSTATUS(status);
	if (check_pages(base, ps, 0, pages / 2, 2) >= 0 ||
	    check_pages(base, ps, pages / 2, pages - pages / 2, 1) >= 0)
		return CHILD_OWN_DATA;
	return 0;
}

Test(fork, grandchild_reads_two_swap_files, .timeout = 120, .fini = swapdir_remove)
{
	struct upg_stats st;
	size_t ps = itest_page();
	uint64_t pages = SET / ps;
	upg_region *r;
	upg_ctx *ctx;
	uint8_t *base;
	int status;
	pid_t pid;

	ctx = paging_ctx(0);
	r = region_new(ctx, SET, 0);
	base = upg_region_addr(r);
	fill_pages(base, ps, 0, pages, 1);
	stats_wait(ctx, st, st.swap_outs > pages / 2, 10000);
	cr_assert_eq(upg_ctx_fork_prepare(ctx), 0);
	pid = fork();
	cr_assert_neq(pid, -1);
	if (pid == 0)
		_exit(middle(ctx, base, ps));
	upg_ctx_fork_parent(ctx);
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		  "status %#x (exit %d: 20 + the grandchild's; see enum child_fail)", status,
		  WIFEXITED(status) ? WEXITSTATUS(status) : -1);
	cr_assert_eq(check_pages(base, ps, 0, pages, 1), -1);
	upg_region_destroy(r);
	upg_ctx_destroy(ctx);
}

/* A large sparse region (its page words in a mapping touched only where
 * pages were): pages at its two ends, one paged out, come through the fork
 * and the walks that skip untouched words. */
Test(fork, sparse_region_ends, .timeout = 60, .fini = swapdir_remove)
{
	size_t ps = itest_page();
	uint64_t size = 64 * GiB, last = size / ps - 1, pages = SET / ps;
	upg_region *r, *fill;
	upg_ctx *ctx;
	uint8_t *base;
	int status;
	pid_t pid;

	ctx = paging_ctx(0);
	r = region_new(ctx, size, 0);
	base = upg_region_addr(r);
	fill_pages(base, ps, 0, 1, 1);
	fill_pages(base, ps, last, 1, 1);
	/* Push both out with a working set of their size. */
	fill = region_new(ctx, SET, 0);
	fill_pages(upg_region_addr(fill), ps, 0, pages, 2);
	cr_assert_eq(upg_ctx_fork_prepare(ctx), 0);
	pid = fork();
	cr_assert_neq(pid, -1);
	if (pid == 0) {
		if (upg_ctx_fork_child(ctx) < 0)
			_exit(CHILD_NO_CONTEXT);
		if (check_pages(base, ps, 0, 1, 1) >= 0 || check_pages(base, ps, last, 1, 1) >= 0 ||
		    check_zero(base, ps, last / 2, 1) >= 0)
			_exit(CHILD_PARENT_DATA);
		_exit(check_pages(upg_region_addr(fill), ps, 0, pages, 2) >= 0 ? CHILD_PARENT_DATA : 0);
	}
	upg_ctx_fork_parent(ctx);
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the child failed: status %#x",
		  status);
	cr_assert_eq(check_pages(base, ps, last, 1, 1), -1);
	upg_region_destroy(fill);
	upg_region_destroy(r);
	upg_ctx_destroy(ctx);
}
