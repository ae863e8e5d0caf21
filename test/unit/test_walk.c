/*
 * Unit tests: walks over a large region's page words skip the words never
 * touched, and never skip one the kernel swapped out.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/swap.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ctx.h"
#include "region.h"

#define GiB (1ull << 30)

static upg_ctx *ctx;
static upg_region *region;

/* A context with no budget and a region of 1 GiB (its 2 MiB of words are a
 * mapping of their own), pages first and second touched. */
static void open_region(uint64_t first, uint64_t second)
{
	struct upg_config cfg;
	int rc;

	upg_config_init(&cfg);
	rc = upg_ctx_create(&cfg, &ctx);
	if (rc == -EPERM || rc == -ENOSYS)
		cr_skip_test("userfaultfd not available: %s", upg_strerror(rc));
	cr_assert_eq(rc, 0, "upg_ctx_create: %s", upg_strerror(rc));
	cr_assert_eq(upg_region_create(ctx, GiB, NULL, &region), 0);
	cr_assert(region->state_mapped, "a 1 GiB region's words are a mapping of their own");
	cr_assert_geq(ctx->pagemap_fd, 0, "/proc/self/pagemap: %s", strerror(errno));
	((volatile char *)upg_region_addr(region))[first << region->page_shift] = 1;
	((volatile char *)upg_region_addr(region))[second << region->page_shift] = 2;
	/* The copy wakes the writer before the handler releases the page's
	 * word: wait for the release, or a walk may find the page still busy
	 * (and forgetting it leaves it to the handler). */
	for (int i = 0; i < 100000 && (pg_state(pg_load(&region->state[first])) == PG_BUSY ||
				       pg_state(pg_load(&region->state[second])) == PG_BUSY);
	     i++)
		usleep(10);
}

static void close_region(void)
{
	upg_ctx_destroy(ctx);
	ctx = NULL;
}

/* The page indexes a walk over the whole region visits. */
static uint64_t walk(uint64_t *seen_first, uint64_t first, uint64_t *seen_second,
		     uint64_t second)
{
	uint64_t visited = 0;

	*seen_first = *seen_second = 0;
	for (uint64_t i = region_next_touched(region, 0); i < region->npages;
	     i = region_walk_next(region, i)) {
		visited++;
		*seen_first += i == first;
		*seen_second += i == second;
	}
	return visited;
}

Test(walk, skips_untouched_words, .timeout = 60, .fini = close_region)
{
	const uint64_t first = 1000, second = 200000;
	uint64_t seen_first, seen_second, visited;

	open_region(first, second);
	visited = walk(&seen_first, first, &seen_second, second);
	cr_assert_eq(seen_first, 1);
	cr_assert_eq(seen_second, 1);
	/* Two pages of words (a few more if the handler mapped ahead), not
	 * the 262144 words of the region. */
	cr_assert_leq(visited, 4 * REGION_WORDS_PER_PAGE, "visited %llu words",
		      (unsigned long long)visited);
	/* Forgetting the whole region forgets both pages. */
	region_forget(region, region_base(region), region_base(region) + region->size);
	cr_assert_eq(pg_state(pg_load(&region->state[first])), PG_NONE);
	cr_assert_eq(pg_state(pg_load(&region->state[second])), PG_NONE);
}

/* ---- words swapped out by the kernel ---- */

static char swap_path[4200];
static int swap_on;

static void swap_remove(void)
{
	if (swap_on && swapoff(swap_path) < 0)
		fprintf(stderr, "swapoff %s: %s\n", swap_path, strerror(errno));
	swap_on = 0;
	if (swap_path[0])
		unlink(swap_path);
	swap_path[0] = 0;
}

static void close_all(void)
{
	if (ctx)
		close_region();
	swap_remove();
}

/* Criterion runs no .fini after a skip: clean up first. */
#define skip_test(...)                       \
	do {                                 \
		close_all();                 \
		cr_skip_test(__VA_ARGS__);   \
	} while (0)

/* A small swap file of the test's own, at the lowest priority, so that
 * MADV_PAGEOUT has somewhere to put anonymous pages. */
static void swap_make(void)
{
	const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/var/tmp";
	char cmd[4400];
	int fd, rc;

	snprintf(swap_path, sizeof(swap_path), "%s/upager-walk-swap-XXXXXX", dir);
	fd = mkstemp(swap_path);
	cr_assert_geq(fd, 0, "mkstemp %s: %s", swap_path, strerror(errno));
	rc = posix_fallocate(fd, 0, 16 << 20);
	close(fd);
	if (rc)
		skip_test("cannot allocate a swap file in %s: %s", dir, strerror(rc));
	snprintf(cmd, sizeof(cmd), "mkswap -q '%s' >/dev/null 2>&1", swap_path);
	rc = system(cmd);
	if (rc == -1 || !WIFEXITED(rc) || WEXITSTATUS(rc))
		skip_test("mkswap is not available or failed");
	if (swapon(swap_path, 0) < 0)
		skip_test("swapon %s: %s (the filesystem may not take swap files)", swap_path,
			     strerror(errno));
	swap_on = 1;
}

/* Whether the page at p is in swap: its entry in pagemap is a swap entry.
 * (It may stay in the swap cache a while, where mincore calls it resident;
 * once it leaves, mincore says "not in memory" and only pagemap tells.) */
static bool swapped(const void *p)
{
	uint64_t ent = 0;

	cr_assert_eq(pread(ctx->pagemap_fd, &ent, sizeof(ent), (off_t)((uintptr_t)p / 4096 * 8)),
		     (ssize_t)sizeof(ent));
	return ent & (1ull << 62);
}

Test(walk, sees_words_the_kernel_swapped_out, .timeout = 60, .fini = close_all)
{
	const uint64_t first = 1000, second = 200000;
	uint64_t seen_first, seen_second;
	void *words;

	swap_make();
	open_region(first, second);
	words = (void *)((uintptr_t)&region->state[second] & ~(uintptr_t)4095);
	/* A page just written may sit in a CPU's batch, off the LRU lists,
	 * where MADV_PAGEOUT cannot take it: mlock drains every CPU's. */
	for (int tries = 0; tries < 10 && !swapped(words); tries++) {
		cr_assert_eq(mlock(words, 4096), 0, "mlock: %s", strerror(errno));
		munlock(words, 4096);
		cr_assert_eq(madvise(words, 4096, MADV_PAGEOUT), 0, "MADV_PAGEOUT: %s",
			     strerror(errno));
	}
	if (!swapped(words))
		skip_test("the kernel kept the page of words in memory");
	walk(&seen_first, first, &seen_second, second);
	cr_assert_eq(seen_first, 1);
	cr_assert_eq(seen_second, 1, "the walk skipped a page of words in swap");
}
