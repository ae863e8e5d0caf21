/*
 * File regions and the database API: pages read from and written back to a
 * data file under a memory limit a quarter of the file, bad input refused at
 * creation, upg_flush/upg_evict, pins under reclaim pressure, and crash
 * consistency (a child flushing in a loop, SIGKILLed at random points).
 *
 * Files live in $TMPDIR (else /var/tmp): O_DIRECT wants a real filesystem.
 */
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <stdbool.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "itest.h"

#define LIMIT (4 * MiB)
#define FILE_SIZE (4 * LIMIT)

static char dir[4096];
static int dir_made;
static char data_path[4200];

static void dir_make(void)
{
	snprintf(dir, sizeof(dir), "%s/upager-dbtest-XXXXXX",
		 getenv("TMPDIR") ? getenv("TMPDIR") : "/var/tmp");
	cr_assert_not_null(mkdtemp(dir), "mkdtemp %s: %s", dir, strerror(errno));
	dir_made = 1;
	snprintf(data_path, sizeof(data_path), "%s/data", dir);
}

/* .fini: the data file, then the directory (swap files in it are unlinked). */
static void dir_remove(void)
{
	if (!dir_made)
		return;
	unlink(data_path);
	if (rmdir(dir) == 0)
		dir_made = 0;
}

/* A config paging under limit to a swap file at swap (a directory: an
 * unlinked file in it), with two handlers. */
static void db_config(struct upg_config *cfg, struct upg_swap_file *sf, const char *swap,
		      uint64_t limit)
{
	*sf = (struct upg_swap_file){ .path = swap, .size = 64 * MiB };
	upg_config_init(cfg);
	cfg->mem_limit = limit;
	cfg->swap_files = sf;
	cfg->nswap_files = 1;
	cfg->handler_threads = 2;
}

/* A context paging under limit with the features in mask ignored (to force
 * the write-protect or mprotect eviction path); skips where the kernel lacks
 * what the path needs. */
static upg_ctx *db_ctx_masked(uint64_t limit, uint64_t mask)
{
	static struct upg_swap_file sf;
	struct upg_config cfg;
	uint64_t f = features_or_skip();

	if ((mask & UPG_FEAT_MOVE) && !(mask & UPG_FEAT_WP) && !(f & UPG_FEAT_WP))
		cr_skip_test("the write-protect path needs userfaultfd WP");
	if (!dir_made)
		dir_make();
	db_config(&cfg, &sf, dir, limit);
	cfg.feature_mask = mask;
	return ctx_new(&cfg);
}

static upg_ctx *db_ctx(uint64_t limit)
{
	return db_ctx_masked(limit, 0);
}

/* The eviction paths forced: write-protect, mprotect. */
#define MASK_WP UPG_FEAT_MOVE
#define MASK_MPROTECT (UPG_FEAT_MOVE | UPG_FEAT_WP)

static int file_region(upg_ctx *ctx, uint64_t size, uint32_t flags, uint64_t off, upg_region **r)
{
	struct upg_region_opts opts;

	upg_region_opts_init(&opts);
	opts.file = data_path;
	opts.file_offset = off;
	opts.flags = flags;
	return upg_region_create(ctx, size, &opts, r);
}

static upg_region *file_region_ok(upg_ctx *ctx, uint64_t size, uint32_t flags)
{
	upg_region *r = NULL;
	int ret = file_region(ctx, size, flags, 0, &r);

	cr_assert_eq(ret, 0, "file region of %llu bytes: %s", (unsigned long long)size,
		     upg_strerror(ret));
	return r;
}

/* The first page of the file at data_path that does not hold pattern gen,
 * or -1. */
static long check_file(uint64_t pages, uint64_t gen)
{
	size_t ps = itest_page();
	uint8_t *buf = malloc(ps);
	int fd = open(data_path, O_RDONLY);
	long bad = -1;

	cr_assert(fd >= 0 && buf);
	for (uint64_t i = 0; i < pages && bad < 0; i++)
		if (pread(fd, buf, ps, (off_t)(i * ps)) != (ssize_t)ps ||
		    pattern_check(buf, ps, gen, i) >= 0)
			bad = (long)i;
	close(fd);
	free(buf);
	return bad;
}

/* Memory held stays near the limit (sampled once, after the run). */
static void assert_bounded(upg_ctx *ctx)
{
	struct upg_stats st = stats_of(ctx);

	cr_assert_leq(st.resident_bytes + st.cooling_bytes, LIMIT + 128 * itest_page(),
		      "resident %llu + cooling %llu over the limit",
		      (unsigned long long)st.resident_bytes, (unsigned long long)st.cooling_bytes);
}

/* Read-write round trip through a file 4x the budget; then read-only after
 * reopening. Pages never go to swap. */
static void roundtrip(uint64_t mask)
{
	upg_ctx *ctx = db_ctx_masked(LIMIT, mask);
	size_t ps = itest_page();
	uint64_t pages = FILE_SIZE / ps;
	upg_region *r = file_region_ok(ctx, FILE_SIZE, UPG_REGION_FILE_CREATE);
	uint8_t *p = upg_region_addr(r);
	struct upg_stats st;
	struct stat sb;
	long bad;

	cr_assert_eq(check_zero(p, ps, 0, 8), -1, "a new file reads as zeros");
	fill_pages(p, ps, 0, pages, 1);
	bad = check_pages(p, ps, 0, pages, 1);
	cr_assert_eq(bad, -1, "page %ld wrong after the fill", bad);
	assert_bounded(ctx);
	cr_assert_eq(upg_region_destroy(r), 0);
	st = stats_of(ctx);
	cr_assert_gt(st.file_writes, 0);
	cr_assert_gt(st.file_reads, 0);
	cr_assert_eq(st.swap_outs, 0, "file pages went to swap");
	cr_assert_eq(stat(data_path, &sb), 0);
	cr_assert_eq((uint64_t)sb.st_size, FILE_SIZE, "the file grew to the region");
	bad = check_file(pages, 1);
	cr_assert_eq(bad, -1, "page %ld of the file wrong", bad);

	r = file_region_ok(ctx, FILE_SIZE, UPG_REGION_FILE_RDONLY);
	p = upg_region_addr(r);
	for (int pass = 0; pass < 2; pass++) {
		bad = check_pages(p, ps, 0, pages, 1);
		cr_assert_eq(bad, -1, "page %ld wrong after reopening (pass %d)", bad, pass);
	}
	assert_bounded(ctx);
	cr_assert_eq(upg_region_destroy(r), 0);
	upg_ctx_destroy(ctx);
}

Test(datafile, rw_roundtrip_under_pressure, .timeout = 120, .fini = dir_remove)
{
	roundtrip(0);
}

Test(datafile, rw_roundtrip_wp_path, .timeout = 120, .fini = dir_remove)
{
	roundtrip(MASK_WP);
}

Test(datafile, rw_roundtrip_mprotect_path, .timeout = 120, .fini = dir_remove)
{
	roundtrip(MASK_MPROTECT);
}

/* A region at an offset into a file, then its pages from the file. */
/* A file region in the child of a fork stays backed by its file: pages not
 * in memory at the fork are read from it, the others are the parent's. */
Test(datafile, fork_child_reads_the_file, .timeout = 120, .fini = dir_remove)
{
	size_t ps = itest_page();
	uint64_t pages = FILE_SIZE / ps;
	upg_region *r;
	upg_ctx *ctx;
	uint8_t *p;
	int status;
	pid_t pid;

	skip_forked_threads_under_tsan();
	ctx = db_ctx(LIMIT);
	r = file_region_ok(ctx, FILE_SIZE, UPG_REGION_FILE_CREATE);
	p = upg_region_addr(r);
	fill_pages(p, ps, 0, pages, 1);
	cr_assert_eq(upg_flush(r, 0, FILE_SIZE, 0), 0);
	cr_assert_eq(check_pages(p, ps, 0, pages / 4, 1), -1);   /* a quarter in memory */
	cr_assert_eq(upg_ctx_fork_prepare(ctx), 0);
	pid = fork();
	cr_assert_neq(pid, -1);
	if (pid == 0) {
		struct upg_stats st;

		/* No cr_assert in the child: its exit status says. */
		if (upg_ctx_fork_child(ctx) < 0)
			_exit(10);
		for (int pass = 0; pass < 2; pass++)
			if (check_pages(p, ps, 0, pages, 1) >= 0)
				_exit(11 + pass);
		st = stats_of(ctx);
		_exit(st.file_reads && st.resident_bytes + st.cooling_bytes <= LIMIT + 128 * ps
		      ? 0 : 13);
	}
	upg_ctx_fork_parent(ctx);
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the child failed: status %#x",
		  status);
	cr_assert_eq(check_pages(p, ps, 0, pages, 1), -1);
	cr_assert_eq(upg_region_destroy(r), 0);
	upg_ctx_destroy(ctx);
}

Test(datafile, offset_mapping, .timeout = 60, .fini = dir_remove)
{
	upg_ctx *ctx = db_ctx(LIMIT);
	size_t ps = itest_page();
	upg_region *r = file_region_ok(ctx, 64 * ps, UPG_REGION_FILE_CREATE);
	upg_region *tail = NULL;

	fill_pages(upg_region_addr(r), ps, 0, 64, 7);
	cr_assert_eq(upg_flush(r, 0, 64 * ps, 0), 0);
	cr_assert_eq(file_region(ctx, 32 * ps, UPG_REGION_FILE_RDONLY, 32 * ps, &tail), 0);
	for (uint64_t i = 0; i < 32; i++)
		cr_assert_eq(pattern_check((uint8_t *)upg_region_addr(tail) + i * ps, ps, 7, 32 + i),
			     -1, "page %llu", (unsigned long long)i);
	upg_region_destroy(tail);
	upg_region_destroy(r);
	upg_ctx_destroy(ctx);
}

Test(datafile, bad_input, .timeout = 60, .fini = dir_remove)
{
	upg_ctx *ctx = db_ctx(LIMIT), *plain;
	size_t ps = itest_page();
	struct upg_region_opts opts;
	upg_region *r = NULL;
	int fd;

	/* Missing file, read-write or read-only, without CREATE. */
	cr_assert_eq(file_region(ctx, 16 * ps, 0, 0, &r), -ENOENT);
	cr_assert_eq(file_region(ctx, 16 * ps, UPG_REGION_FILE_RDONLY, 0, &r), -ENOENT);
	cr_assert_null(r);
	/* A file of 8 pages: too short for a read-only mapping of 16. */
	fd = open(data_path, O_CREAT | O_RDWR, 0644);
	cr_assert(fd >= 0);
	cr_assert_eq(ftruncate(fd, (off_t)(8 * ps)), 0);
	close(fd);
	cr_assert_eq(file_region(ctx, 16 * ps, UPG_REGION_FILE_RDONLY, 0, &r), -EINVAL);
	cr_assert_eq(file_region(ctx, 8 * ps, UPG_REGION_FILE_RDONLY, ps, &r), -EINVAL);
	/* Bad offsets and sizes. */
	cr_assert_eq(file_region(ctx, 8 * ps, 0, 100, &r), -EINVAL);
	cr_assert_eq(file_region(ctx, 8 * ps + 1, 0, 0, &r), -EINVAL);
	cr_assert_eq(file_region(ctx, 0, 0, 0, &r), -EINVAL);
	cr_assert_eq(file_region(ctx, 8 * ps, 1u << 7, 0, &r), -EINVAL);
	/* A directory is not a data file. */
	upg_region_opts_init(&opts);
	opts.file = dir;
	cr_assert_eq(upg_region_create(ctx, 8 * ps, &opts, &r), -EISDIR);
	opts.flags = UPG_REGION_FILE_RDONLY;
	cr_assert_eq(upg_region_create(ctx, 0, &opts, &r), -EINVAL);
	cr_assert_eq(upg_region_create(ctx, ps, &opts, &r), -EINVAL);
	/* File flags without a file. */
	upg_region_opts_init(&opts);
	opts.flags = UPG_REGION_FILE_RDONLY;
	cr_assert_eq(upg_region_create(ctx, 8 * ps, &opts, &r), -EINVAL);
	/* The read-only mapping that fits works. */
	cr_assert_eq(file_region(ctx, 8 * ps, UPG_REGION_FILE_RDONLY, 0, &r), 0);
	cr_assert_eq(check_zero(upg_region_addr(r), ps, 0, 8), -1);
	/* Flush and evict want a read-write file region; ranges inside it. */
	cr_assert_eq(upg_flush(r, 0, ps, 0), -EINVAL);
	cr_assert_eq(upg_evict(r, 0, 9 * ps), -EINVAL);
	cr_assert_eq(upg_pin(r, 8 * ps, 1), -EINVAL);
	cr_assert_eq(upg_unpin(r, 0, ps), -EPERM);
	cr_assert_eq(upg_region_destroy(r), 0);
	/* A file region needs a budget. */
	plain = ctx_new(NULL);
	cr_assert_eq(file_region(plain, 8 * ps, 0, 0, &r), -EINVAL);
	upg_ctx_destroy(plain);
	upg_ctx_destroy(ctx);
}

/* Flush writes dirty pages and keeps them resident and clean; a later write
 * is tracked and flushed again; evict drops pages the next touch reads back. */
static void flush_and_evict(uint64_t mask)
{
	upg_ctx *ctx = db_ctx_masked(LIMIT, mask);
	size_t ps = itest_page();
	uint64_t pages = 128;
	upg_region *r = file_region_ok(ctx, pages * ps, UPG_REGION_FILE_CREATE);
	uint8_t *p = upg_region_addr(r);
	struct upg_stats before, after;
	long bad;

	fill_pages(p, ps, 0, pages, 3);
	cr_assert_eq(upg_flush(r, 0, pages * ps, 0), 0);
	bad = check_file(pages, 3);
	cr_assert_eq(bad, -1, "page %ld not flushed", bad);
	before = stats_of(ctx);
	cr_assert_eq(check_pages(p, ps, 0, pages, 3), -1);
	after = stats_of(ctx);
	cr_assert_eq(after.faults_major, before.faults_major, "flushed pages left memory");
	cr_assert_eq(after.flushes, before.flushes);
	/* Nothing dirty: a second flush writes nothing (without write-protect
	 * flushed pages stay dirty and are written again). */
	cr_assert_eq(upg_flush(r, 0, pages * ps, 0), 0);
	if (upg_ctx_features(ctx) & UPG_FEAT_WP)
		cr_assert_eq(stats_of(ctx).file_writes, after.file_writes);
	/* Write half again: only those are written, and the file follows. */
	fill_pages(p, ps, 0, pages / 2, 4);
	cr_assert_eq(upg_flush(r, 0, pages * ps, UPG_FLUSH_NOSYNC), 0);
	if (upg_ctx_features(ctx) & UPG_FEAT_WP)
		cr_assert_eq(stats_of(ctx).file_writes, after.file_writes + pages / 2);
	cr_assert_eq(check_file(pages / 2, 4), -1);

	cr_assert_eq(upg_evict(r, 0, pages * ps), 0);
	if (upg_ctx_features(ctx) & UPG_FEAT_WP)
		cr_assert_eq(stats_of(ctx).resident_bytes, 0, "evicted pages still resident");
	before = stats_of(ctx);
	cr_assert_eq(check_pages(p, ps, 0, pages / 2, 4), -1);
	cr_assert_eq(check_pages(p, ps, pages / 2, pages / 2, 3), -1);
	if (upg_ctx_features(ctx) & UPG_FEAT_WP)
		cr_assert_gt(stats_of(ctx).file_reads, before.file_reads);
	upg_region_destroy(r);
	upg_ctx_destroy(ctx);
}

Test(datafile, flush_and_evict, .timeout = 60, .fini = dir_remove)
{
	flush_and_evict(0);
}

Test(datafile, flush_and_evict_mprotect_path, .timeout = 60, .fini = dir_remove)
{
	flush_and_evict(MASK_MPROTECT);
}

/* Pinned pages stay in memory, with their contents, while a stream 4x the
 * budget goes through the rest of the region. */
Test(datafile, pins_hold_under_pressure, .timeout = 120, .fini = dir_remove)
{
	upg_ctx *ctx = db_ctx(LIMIT);
	size_t ps = itest_page();
	uint64_t pages = FILE_SIZE / ps, npin = 128;
	upg_region *r = file_region_ok(ctx, FILE_SIZE, UPG_REGION_FILE_CREATE);
	uint8_t *p = upg_region_addr(r);
	struct upg_stats before, after;

	fill_pages(p, ps, 0, npin, 5);
	cr_assert_eq(upg_pin(r, 0, npin * ps), 0);
	cr_assert_eq(stats_of(ctx).pinned_pages, npin);
	for (int pass = 0; pass < 2; pass++)
		fill_pages(p, ps, npin, pages - npin, 6 + (uint64_t)pass);
	before = stats_of(ctx);
	cr_assert_gt(before.evicted, pages - npin, "no reclaim pressure");
	cr_assert_eq(check_pages(p, ps, 0, npin, 5), -1);
	after = stats_of(ctx);
	cr_assert_eq(new_faults(&after), new_faults(&before), "a pinned page had left memory");
	/* Pinned pages are not written back by a flush either: their place
	 * in the file still reads as zeros (the file is sparse there). */
	cr_assert_eq(upg_flush(r, 0, npin * ps, 0), 0);
	{
		uint8_t *buf = malloc(npin * ps);
		int fd = open(data_path, O_RDONLY);

		cr_assert(fd >= 0 && buf);
		cr_assert_eq(pread(fd, buf, npin * ps, 0), (ssize_t)(npin * ps));
		cr_assert(all_zero(buf, npin * ps), "a pinned page was written back");
		close(fd);
		free(buf);
	}
	cr_assert_eq(upg_unpin(r, 0, npin * ps), 0);
	cr_assert_eq(stats_of(ctx).pinned_pages, 0);
	/* Unpinned, they go out like the rest. */
	fill_pages(p, ps, npin, pages - npin, 9);
	cr_assert_eq(check_pages(p, ps, 0, npin, 5), -1);
	assert_bounded(ctx);
	upg_region_destroy(r);
	cr_assert_eq(check_file(npin, 5), -1);
	upg_ctx_destroy(ctx);
}

/*
 * Crash consistency. The child updates random pages to generation g (the
 * whole page: gen in word 0, the pattern of (g, page) in the rest), flushes,
 * and records in shared memory that page's flushed generation; it is killed
 * at a random point. After each kill every page of the file holds a whole
 * page of one generation, no older than its last flushed one.
 */
#define CRASH_PAGES 2048u
#define CRASH_ROUNDS 4

static void gen_fill(uint8_t *page, size_t ps, uint64_t gen, uint64_t idx)
{
	pattern_fill(page, ps, gen, idx);
	memcpy(page, &gen, sizeof(gen));
}

/* The generation the page holds whole, 0 for zeros, UINT64_MAX if torn. */
static uint64_t gen_of(const uint8_t *page, size_t ps, uint64_t idx)
{
	uint64_t gen, w;

	memcpy(&gen, page, sizeof(gen));
	if (!gen)
		return all_zero(page, ps) ? 0 : UINT64_MAX;
	for (size_t k = 1; k < ps / 8; k++) {
		memcpy(&w, page + 8 * k, 8);
		if (w != pattern_word(gen, idx, k))
			return UINT64_MAX;
	}
	return gen;
}

/* The child runs in a fresh exec of this program (CRASH_ENV set), so that
 * it starts its threads in a single-threaded process (TSan requires it);
 * the flushed generations come in a memfd at CRASH_FD. */
#define CRASH_ENV "UPAGER_TEST_CRASH_CHILD"
#define CRASH_FD 100

static void crash_child(_Atomic uint64_t *flushed, uint64_t gen0, uint64_t seed);

__attribute__((constructor)) static void crash_child_main(void)
{
	const char *env = getenv(CRASH_ENV);
	unsigned long long gen0, seed;
	_Atomic uint64_t *flushed;

	if (!env)
		return;
	if (sscanf(env, "%4095[^:]:%llu:%llu", dir, &gen0, &seed) != 3)
		_exit(4);
	snprintf(data_path, sizeof(data_path), "%s/data", dir);
	flushed = mmap(NULL, CRASH_PAGES * 8, PROT_READ | PROT_WRITE, MAP_SHARED, CRASH_FD, 0);
	if (flushed == MAP_FAILED)
		_exit(5);
	crash_child(flushed, gen0, seed);
}

static void crash_child(_Atomic uint64_t *flushed, uint64_t gen0, uint64_t seed)
{
	size_t ps = (size_t)sysconf(_SC_PAGESIZE);
	struct upg_swap_file sf;
	struct upg_config cfg;
	struct upg_region_opts opts;
	upg_region *r;
	upg_ctx *ctx;
	uint8_t *p;

	db_config(&cfg, &sf, dir, 2 * MiB);
	upg_region_opts_init(&opts);
	opts.file = data_path;
	opts.flags = UPG_REGION_FILE_CREATE;
	if (upg_ctx_create(&cfg, &ctx) || upg_region_create(ctx, CRASH_PAGES * ps, &opts, &r))
		_exit(2);
	p = upg_region_addr(r);
	for (uint64_t g = gen0;; g++) {
		uint32_t picked[64];

		for (unsigned i = 0; i < 64; i++) {
			picked[i] = (uint32_t)(xorshift64(&seed) % CRASH_PAGES);
			gen_fill(p + (size_t)picked[i] * ps, ps, g, picked[i]);
		}
		if (upg_flush(r, 0, CRASH_PAGES * ps, 0))
			_exit(3);
		for (unsigned i = 0; i < 64; i++)
			atomic_store(&flushed[picked[i]], g);
	}
}

Test(datafile, crash_consistency, .timeout = 180, .fini = dir_remove)
{
	size_t ps = itest_page();
	int mfd = memfd_create("flushed", 0);
	_Atomic uint64_t *flushed;
	uint8_t *buf = malloc(ps);
	uint64_t seed = 0x5eed1234, gen0 = 1, checked_gens = 0;

	features_or_skip();
	dir_make();
	cr_assert(mfd >= 0 && ftruncate(mfd, CRASH_PAGES * 8) == 0);
	flushed = mmap(NULL, CRASH_PAGES * 8, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
	cr_assert(flushed != MAP_FAILED && buf);
	for (int round = 0; round < CRASH_ROUNDS; round++) {
		uint64_t maxgen = 0;
		int status, fd;
		pid_t pid = fork();

		cr_assert(pid >= 0);
		if (pid == 0) {
			char env[4200];

			snprintf(env, sizeof(env), "%s:%llu:%llu", dir, (unsigned long long)gen0,
				 (unsigned long long)(seed + (uint64_t)round));
			setenv(CRASH_ENV, env, 1);
			dup2(mfd, CRASH_FD);
			execl("/proc/self/exe", "test_datafile", (char *)NULL);
			_exit(6);
		}
		itest_sleep_ms(150 + (double)(xorshift64(&seed) % 400));
		kill(pid, SIGKILL);
		cr_assert_eq(waitpid(pid, &status, 0), pid);
		cr_assert(WIFSIGNALED(status), "the child failed (status %#x)", status);
		fd = open(data_path, O_RDONLY);
		cr_assert(fd >= 0);
		for (uint64_t i = 0; i < CRASH_PAGES; i++) {
			ssize_t got = pread(fd, buf, ps, (off_t)(i * ps));
			uint64_t g = 0, want = atomic_load(&flushed[i]);

			if (got == (ssize_t)ps)
				g = gen_of(buf, ps, i);
			else
				cr_assert(got >= 0 && all_zero(buf, (size_t)got));
			cr_assert_neq(g, UINT64_MAX, "round %d: page %llu torn", round,
				      (unsigned long long)i);
			cr_assert_geq(g, want, "round %d: page %llu holds gen %llu, flushed %llu",
				      round, (unsigned long long)i, (unsigned long long)g,
				      (unsigned long long)want);
			maxgen = g > maxgen ? g : maxgen;
			checked_gens += want != 0;
		}
		close(fd);
		gen0 = maxgen + 1;
	}
	cr_assert_gt(checked_gens, 0, "no flush ever completed before a kill");
	free(buf);
	munmap(flushed, CRASH_PAGES * 8);
	close(mfd);
}

/*
 * The error callback: a page that cannot be read back (here a swap copy
 * overwritten behind upager's back, which fails its checksum) is reported
 * with its address and errno before the thread touching it gets SIGBUS.
 */
#define MAX_REPORTS 8192u

/* Written by handler threads: an entry counts once its addr is set. */
static struct {
	_Atomic unsigned n;
	_Atomic(void *) addr[MAX_REPORTS];
	_Atomic int err[MAX_REPORTS];
} reports;

static void on_error(void *arg, void *addr, int err)
{
	unsigned i = atomic_fetch_add(&reports.n, 1);

	(void)arg;
	if (i < MAX_REPORTS) {
		atomic_store(&reports.err[i], err);
		atomic_store(&reports.addr[i], addr);
	}
}

static int reported(void *addr)
{
	unsigned n = atomic_load(&reports.n);

	for (unsigned i = 0; i < n && i < MAX_REPORTS; i++)
		if (atomic_load(&reports.addr[i]) == addr)
			return 1;
	return 0;
}

/* Every report so far names a page of [base, base + size) and err. */
static void check_reports(const uint8_t *base, uint64_t size, int err)
{
	size_t ps = itest_page();

	for (unsigned i = 0; i < atomic_load(&reports.n) && i < MAX_REPORTS; i++) {
		uint8_t *a = atomic_load(&reports.addr[i]);

		if (!a)
			continue;   /* still being written */
		cr_assert_eq(atomic_load(&reports.err[i]), err);
		cr_assert(a >= base && a < base + size && (uintptr_t)a % ps == 0);
	}
}

Test(datafile, error_callback, .timeout = 60, .fini = dir_remove)
{
	size_t ps = itest_page();
	uint64_t pages = 4 * LIMIT / ps;
	char swap_path[4200], junk[65536];
	struct upg_swap_file sf;
	struct upg_config cfg;
	uint64_t sigbus = 0, wrong = 0;
	uint64_t unreported = 0;
	uint8_t *lost = calloc(pages, 1);
	upg_ctx *ctx;
	upg_region *r;
	uint8_t *base;
	int fd;

	features_or_skip();
	dir_make();
	snprintf(swap_path, sizeof(swap_path), "%s/swap", dir);
	db_config(&cfg, &sf, swap_path, LIMIT);
	cfg.policy = UPG_POLICY_FIFO;
	cfg.on_error = on_error;
	cfg.on_error_arg = &reports;
	ctx = ctx_new(&cfg);
	r = region_new(ctx, pages * ps, 0);
	base = upg_region_addr(r);
	fill_pages(base, ps, 0, pages, 3);
	fd = open(swap_path, O_WRONLY);
	cr_assert_geq(fd, 0);
	memset(junk, 0xa5, sizeof(junk));
	for (off_t off = 0; off < (off_t)(64 * MiB); off += (off_t)sizeof(junk))
		cr_assert_eq(pwrite(fd, junk, sizeof(junk), off), (ssize_t)sizeof(junk));
	close(fd);

	read_back(base, ps, pages, 3, lost, &sigbus, &wrong);
	for (uint64_t p = 0; p < pages; p++)
		unreported += lost[p] && !reported(base + p * ps);
	free(lost);
	cr_assert_eq(wrong, 0);
	cr_assert_gt(sigbus, 0, "no page was lost");
	cr_assert_eq(unreported, 0, "%llu lost pages were not reported",
		     (unsigned long long)unreported);
	cr_assert_geq(atomic_load(&reports.n), sigbus);
	check_reports(base, pages * ps, -EBADMSG);
	upg_region_destroy(r);
	upg_ctx_destroy(ctx);
	unlink(swap_path);
}

/* The file at data_path: pages [0, pages) of pattern gen. */
static void write_file(uint64_t pages, uint64_t gen)
{
	size_t ps = itest_page();
	uint8_t *buf = malloc(ps);
	int fd = open(data_path, O_CREAT | O_TRUNC | O_WRONLY, 0644);

	cr_assert(fd >= 0 && buf);
	for (uint64_t i = 0; i < pages; i++) {
		pattern_fill(buf, ps, gen, i);
		cr_assert_eq(pwrite(fd, buf, ps, (off_t)(i * ps)), (ssize_t)ps);
	}
	close(fd);
	free(buf);
}

/* Wait (up to 10 s) for the context's event fd to count `want` prefetches. */
static void wait_prefetched(upg_ctx *ctx, uint64_t want)
{
	struct pollfd pfd = { .fd = upg_ctx_event_fd(ctx), .events = POLLIN };
	uint64_t got = 0, v;

	cr_assert_geq(pfd.fd, 0);
	while (got < want) {
		cr_assert_eq(poll(&pfd, 1, (int)itest_scaled_ms(10000)), 1, "prefetch never finished");
		if (read(pfd.fd, &v, sizeof(v)) == sizeof(v))
			got += v;
	}
}

/* Batches of random pages prefetched, then read: no fault at all (every
 * page was mapped by the prefetcher), right contents, in a file 4x the
 * budget. */
Test(datafile, prefetch_then_access, .timeout = 60, .fini = dir_remove)
{
	upg_ctx *ctx = db_ctx(LIMIT);
	size_t ps = itest_page();
	uint64_t pages = FILE_SIZE / ps;
	uint32_t *order = malloc(pages * sizeof(*order));
	struct upg_range ranges[128];
	struct upg_stats before, after;
	upg_region *r;
	uint8_t *p;

	cr_assert_not_null(order);
	shuffle_indices(order, (uint32_t)pages, 42);
	write_file(pages, 11);
	r = file_region_ok(ctx, FILE_SIZE, UPG_REGION_FILE_RDONLY);
	p = upg_region_addr(r);
	for (int batch = 0; batch < 16; batch++) {
		for (unsigned i = 0; i < 128; i++)
			ranges[i] = (struct upg_range){ order[batch * 128 + i] * ps, ps };
		cr_assert_eq(upg_prefetch(r, ranges, 128, 0), 0);
		wait_prefetched(ctx, 1);
		before = stats_of(ctx);
		for (unsigned i = 0; i < 128; i++)
			cr_assert_eq(pattern_check(p + ranges[i].off, ps, 11, ranges[i].off / ps), -1);
		after = stats_of(ctx);
		cr_assert_eq(after.faults_major, before.faults_major,
			     "batch %d: a prefetched page was read again on access", batch);
		cr_assert_eq(after.faults, before.faults, "batch %d: a prefetched page faulted",
			     batch);
	}
	cr_assert_gt(after.prefetch_pages, 1000);
	cr_assert_eq(after.prefetch_skipped, 0);
	/* A touch while reads are in flight waits for them: right contents. */
	cr_assert_eq(upg_prefetch(r, &(struct upg_range){ 0, FILE_SIZE / 8 }, 1, 0), 0);
	cr_assert_eq(check_pages(p, ps, 0, pages / 8, 11), -1);
	wait_prefetched(ctx, 1);
	cr_assert_eq(upg_prefetch(r, &(struct upg_range){ 0, FILE_SIZE + ps }, 1, 0), -EINVAL);
	cr_assert_eq(upg_prefetch(r, ranges, 1, 1), -EINVAL);
	free(order);
	upg_region_destroy(r);
	upg_ctx_destroy(ctx);
}

/* Advice: RANDOM turns readahead off, SEQUENTIAL reads a window ahead from
 * the first fault, COLD drops clean pages, DONTNEED evicts. */
Test(datafile, advise, .timeout = 60, .fini = dir_remove)
{
	upg_ctx *ctx = db_ctx(LIMIT);
	size_t ps = itest_page();
	uint64_t pages = 512;
	struct upg_stats st;
	upg_region *r;
	uint8_t *p;

	write_file(pages, 12);
	r = file_region_ok(ctx, pages * ps, 0);
	p = upg_region_addr(r);
	cr_assert_eq(upg_advise(r, 0, pages * ps, UPG_ADVICE_RANDOM), 0);
	cr_assert_eq(check_pages(p, ps, 0, 128, 12), -1);
	cr_assert_eq(stats_of(ctx).readahead_pages, 0, "readahead despite RANDOM");
	cr_assert_eq(upg_advise(r, 0, pages * ps, UPG_ADVICE_SEQUENTIAL), 0);
	touch_read(p + 256 * ps);
	stats_wait(ctx, st, st.readahead_pages >= 64, 5000);
	cr_assert_geq(st.readahead_pages, 64, "no readahead from the first SEQUENTIAL fault");
	cr_assert_eq(check_pages(p, ps, 256, 256, 12), -1);
	if (upg_ctx_features(ctx) & UPG_FEAT_WP) {
		cr_assert_eq(upg_advise(r, 0, pages * ps, UPG_ADVICE_COLD), 0);
		cr_assert_eq(stats_of(ctx).resident_bytes, 0, "COLD left clean pages");
	}
	fill_pages(p, ps, 0, 8, 13);
	cr_assert_eq(upg_advise(r, 0, pages * ps, UPG_ADVICE_DONTNEED), 0);
	cr_assert_eq(check_file(8, 13), -1, "DONTNEED did not write back");
	cr_assert_eq(upg_advise(r, 0, pages * ps, UPG_ADVICE_WILLNEED), 0);
	wait_prefetched(ctx, 1);
	cr_assert_eq(check_pages(p, ps, 0, 8, 13), -1);
	cr_assert_eq(upg_advise(r, 0, pages * ps, 99), -EINVAL);
	upg_region_destroy(r);
	upg_ctx_destroy(ctx);
}

/*
 * Snapshots under a concurrent writer. The writer rewrites random pages
 * whole (generation in word 0); the test holds it off for the call, notes
 * every page's generation, and lets it go on while the image is copied out.
 * The image must be exactly the noted generations.
 */
struct snap_writer {
	uint8_t *base;
	uint64_t pages;
	_Atomic uint64_t *gen;        /* each page's last generation */
	atomic_bool stop, hold, held;
	uint64_t writes;
	pthread_t thread;
};

static void *snap_writer_main(void *arg)
{
	struct snap_writer *w = arg;
	size_t ps = itest_page();
	uint64_t seed = 77, g = 1;

	while (!atomic_load(&w->stop)) {
		uint64_t i = xorshift64(&seed) % w->pages;

		if (atomic_load(&w->hold)) {
			atomic_store(&w->held, true);
			while (atomic_load(&w->hold))
				sched_yield();
			atomic_store(&w->held, false);
		}
		gen_fill(w->base + i * ps, ps, ++g + 1000000, i);
		atomic_store(&w->gen[i], g + 1000000);
		w->writes++;
	}
	return NULL;
}

static void snapshot_under_writer(bool file_region, bool to_region, uint64_t mask)
{
	upg_ctx *ctx = db_ctx_masked(LIMIT, mask);
	size_t ps = itest_page();
	uint64_t pages = FILE_SIZE / ps, *want = calloc(pages, 8);
	struct snap_writer w = { .pages = pages };
	struct upg_snapshot_target t = { .size = sizeof(t) };
	char image[4200];
	upg_region *r, *dst = NULL;
	upg_snap *snap;
	uint8_t *buf = malloc(ps);
	int ret, fd;

	cr_assert(want && buf);
	w.gen = calloc(pages, sizeof(*w.gen));
	r = file_region ? file_region_ok(ctx, FILE_SIZE, UPG_REGION_FILE_CREATE)
			: region_new(ctx, FILE_SIZE, 0);
	w.base = upg_region_addr(r);
	for (uint64_t i = 0; i < pages; i++) {
		gen_fill(w.base + i * ps, ps, 1, i);
		atomic_store(&w.gen[i], 1);
	}
	snprintf(image, sizeof(image), "%s/image", dir);
	if (to_region)
		t.region = dst = region_new(ctx, FILE_SIZE, 0);
	else
		t.path = image;
	cr_assert_eq(pthread_create(&w.thread, NULL, snap_writer_main, &w), 0);
	itest_sleep_ms(50);
	atomic_store(&w.hold, true);
	while (!atomic_load(&w.held))
		sched_yield();
	for (uint64_t i = 0; i < pages; i++)
		want[i] = atomic_load(&w.gen[i]);
	ret = upg_snapshot(r, &t, &snap);
	atomic_store(&w.hold, false);
	cr_assert_eq(ret, 0, "upg_snapshot: %s", upg_strerror(ret));
	/* One at a time (without write-protect this one is over already). */
	if (upg_ctx_features(ctx) & UPG_FEAT_WP)
		cr_assert_eq(upg_snapshot(r, &t, &(upg_snap *){ NULL }), -EBUSY);
	ret = upg_snapshot_wait(snap);
	atomic_store(&w.stop, true);
	pthread_join(w.thread, NULL);
	cr_assert_eq(ret, 0, "upg_snapshot_wait: %s", upg_strerror(ret));
	cr_log_info("%llu writes during the run", (unsigned long long)w.writes);
	fd = to_region ? -1 : open(image, O_RDONLY);
	cr_assert(to_region || fd >= 0);
	for (uint64_t i = 0; i < pages; i++) {
		const uint8_t *page = buf;
		uint64_t g;

		if (to_region)
			page = (uint8_t *)upg_region_addr(dst) + i * ps;
		else
			cr_assert_eq(pread(fd, buf, ps, (off_t)(i * ps)), (ssize_t)ps);
		g = gen_of(page, ps, i);
		cr_assert_eq(g, want[i], "page %llu: image holds gen %llu, %llu at the snapshot",
			     (unsigned long long)i, (unsigned long long)g,
			     (unsigned long long)want[i]);
	}
	if (fd >= 0)
		close(fd);
	unlink(image);
	upg_region_destroy(dst);
	upg_region_destroy(r);
	upg_ctx_destroy(ctx);
	free(want);
	free(buf);
	free((void *)w.gen);
}

Test(datafile, snapshot_anon_to_file, .timeout = 120, .fini = dir_remove)
{
	snapshot_under_writer(false, false, 0);
}

Test(datafile, snapshot_file_to_region, .timeout = 120, .fini = dir_remove)
{
	snapshot_under_writer(true, true, 0);
}

/* Without write-protect: copied during the call, the writer held off. */
Test(datafile, snapshot_without_wp, .timeout = 120, .fini = dir_remove)
{
	snapshot_under_writer(true, false, MASK_MPROTECT);
}

/* Bad targets; no budget, no snapshot. */
Test(datafile, snapshot_bad_input, .timeout = 60, .fini = dir_remove)
{
	upg_ctx *ctx = db_ctx(LIMIT), *nowp;
	size_t ps = itest_page();
	upg_region *r = region_new(ctx, 64 * ps, 0), *small = region_new(ctx, ps, 0);
	struct upg_snapshot_target t = { .size = sizeof(t) };
	upg_snap *snap;

	cr_assert_eq(upg_snapshot(r, &t, &snap), -EINVAL, "no target");
	t.region = r;
	cr_assert_eq(upg_snapshot(r, &t, &snap), -EINVAL, "itself");
	t.region = small;
	cr_assert_eq(upg_snapshot(r, &t, &snap), -EINVAL, "too small");
	t.path = dir;
	cr_assert_eq(upg_snapshot(r, &t, &snap), -EINVAL, "both");
	t.region = NULL;
	cr_assert_eq(upg_snapshot(r, &t, &snap), -EISDIR, "a directory");
	upg_region_destroy(small);
	upg_region_destroy(r);
	upg_ctx_destroy(ctx);

	nowp = ctx_new(NULL);
	r = region_new(nowp, 64 * ps, 0);
	t.path = data_path;
	cr_assert_eq(upg_snapshot(r, &t, &snap), -EINVAL);
	upg_region_destroy(r);
	upg_ctx_destroy(nowp);
}

/* A read error on a data file: a read-only file truncated under a running
 * region. Its pages past the new end are reported (-EIO) and poisoned; the
 * pages before it read back right. */
Test(datafile, error_callback_truncated_file, .timeout = 60, .fini = dir_remove)
{
	static struct upg_swap_file sf;
	size_t ps = itest_page();
	uint64_t pages = 1024, unreported = 0;
	uint64_t sigbus = 0, wrong = 0;
	uint8_t *lost = calloc(pages, 1), *base;
	struct upg_config cfg;
	upg_region *r;
	upg_ctx *ctx;

	features_or_skip();
	dir_make();
	db_config(&cfg, &sf, dir, LIMIT);
	cfg.on_error = on_error;
	ctx = ctx_new(&cfg);
	write_file(pages, 21);
	r = file_region_ok(ctx, pages * ps, UPG_REGION_FILE_RDONLY);
	base = upg_region_addr(r);
	cr_assert_eq(truncate(data_path, (off_t)(pages / 2 * ps)), 0);
	read_back(base, ps, pages, 21, lost, &sigbus, &wrong);
	cr_assert_eq(wrong, 0, "%llu pages read back wrong", (unsigned long long)wrong);
	cr_assert_eq(sigbus, pages / 2, "%llu pages lost, the truncated half is %llu",
		     (unsigned long long)sigbus, (unsigned long long)(pages / 2));
	for (uint64_t p = 0; p < pages; p++)
		unreported += lost[p] && !reported(base + p * ps);
	cr_assert_eq(unreported, 0);
	check_reports(base, pages * ps, -EIO);
	cr_assert_geq(stats_of(ctx).poisoned, pages / 2);
	free(lost);
	upg_region_destroy(r);
	upg_ctx_destroy(ctx);
}
