/*
 * Paging when things go wrong: bad configuration is refused with a clear
 * error, and a corrupt page in swap is never returned as data: whoever
 * touches it gets SIGBUS, while every other page reads back right.
 */
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>

#include "itest.h"

#define LIMIT (4 * MiB)

static char dir[4096];

static void make_dir(void)
{
	snprintf(dir, sizeof(dir), "%s/upager-test-XXXXXX",
		 getenv("TMPDIR") ? getenv("TMPDIR") : "/var/tmp");
	cr_assert_not_null(mkdtemp(dir), "mkdtemp %s: %s", dir, strerror(errno));
}

static int create(uint64_t limit, const struct upg_swap_file *sf, unsigned n, uint32_t policy,
		  uint64_t mask, upg_ctx **ctx)
{
	struct upg_config cfg;

	upg_config_init(&cfg);
	cfg.mem_limit = limit;
	cfg.swap_files = sf;
	cfg.nswap_files = n;
	cfg.policy = policy;
	cfg.feature_mask = mask;
	return upg_ctx_create(&cfg, ctx);
}

Test(swap_errors, bad_config, .timeout = 30)
{
	struct upg_swap_file sf = { .size = 64 * MiB };
	upg_ctx *ctx = NULL;
	long fds = proc_fd_count();

	features_or_skip();
	make_dir();
	sf.path = dir;
	cr_assert_eq(create(LIMIT, NULL, 0, 0, 0, &ctx), -EINVAL, "a limit needs swap files");
	cr_assert_eq(create(0, &sf, 1, 0, 0, &ctx), -EINVAL, "swap files need a limit");
	cr_assert_eq(create(LIMIT, &sf, 1, 7, 0, &ctx), -EINVAL, "unknown policy");
	cr_assert_eq(create(64 * KiB, &sf, 1, 0, 0, &ctx), -EINVAL, "limit below a few batches");
	sf.path = "/nonexistent-upager-dir/swap";
	cr_assert_lt(create(LIMIT, &sf, 1, 0, 0, &ctx), 0, "a swap file that cannot be made");
	sf.path = dir;
	sf.size = 0;
	cr_assert_lt(create(LIMIT, &sf, 1, 0, 0, &ctx), 0, "an empty swap file");
	cr_assert_null(ctx);
	cr_assert_eq(proc_fd_count(), fds, "a failed create leaked descriptors");
	rmdir(dir);
}

static sigjmp_buf bus_jmp;

static void on_sigbus(int sig)
{
	(void)sig;
	siglongjmp(bus_jmp, 1);
}

/* Pages are written, paged out, then the swap file is overwritten behind
 * upager's back: reading back, each page is either right or raises SIGBUS
 * (a crc mismatch poisons it), never wrong. */
static void corrupt_swap(uint64_t mask)
{
	char path[4200];
	struct upg_swap_file sf = { .path = path, .size = 64 * MiB };
	size_t ps = itest_page();
	uint64_t size = 4 * LIMIT, pages = size / ps;
	volatile uint64_t sigbus = 0, wrong = 0;
	struct sigaction sa = { .sa_handler = on_sigbus }, old;
	struct upg_stats st;
	upg_ctx *ctx = NULL;
	upg_region *r;
	uint8_t *base;
	char junk[65536];
	int fd, ret;

	features_or_skip();
	make_dir();
	snprintf(path, sizeof(path), "%s/swap", dir);
	ret = create(LIMIT, &sf, 1, UPG_POLICY_FIFO, mask, &ctx);
	cr_assert_eq(ret, 0, "upg_ctx_create: %s", upg_strerror(ret));
	r = region_new(ctx, size, 0);
	base = upg_region_addr(r);
	fill_pages(base, ps, 0, pages, 3);
	stats_wait(ctx, st, st.swap_outs >= pages / 2, 10000);

	fd = open(path, O_WRONLY);
	cr_assert_geq(fd, 0, "open %s: %s", path, strerror(errno));
	memset(junk, 0xa5, sizeof(junk));
	for (off_t off = 0; off < (off_t)sf.size; off += (off_t)sizeof(junk))
		cr_assert_eq(pwrite(fd, junk, sizeof(junk), off), (ssize_t)sizeof(junk));
	fsync(fd);
	close(fd);

	sigemptyset(&sa.sa_mask);
	sigaction(SIGBUS, &sa, &old);
	for (volatile uint64_t p = 0; p < pages; p++) {
		volatile uint8_t *page = base + p * ps;

		if (sigsetjmp(bus_jmp, 1)) {
			sigbus++;
			continue;
		}
		(void)page[0];
		if (pattern_check((const void *)page, ps, 3, p) >= 0)
			wrong++;
	}
	sigaction(SIGBUS, &old, NULL);
	st = stats_of(ctx);
	cr_assert_eq(wrong, 0, "%llu pages read back wrong data", (unsigned long long)wrong);
	cr_log_info("%llu of %llu pages poisoned", (unsigned long long)sigbus,
		    (unsigned long long)pages);
	cr_assert_gt(sigbus, 0, "no corrupt page was reported");
	cr_assert_gt(st.read_errors, 0);
	cr_assert_gt(st.poisoned, 0);
	cr_assert_lt(sigbus, pages, "pages still in memory must read back right");
	upg_region_destroy(r);
	upg_ctx_destroy(ctx);
	unlink(path);
	rmdir(dir);
}

Test(swap_errors, corrupt_swap_poisons, .timeout = 60) { corrupt_swap(0); }

/* Without UFFDIO_POISON the faulting thread is signalled directly. */
Test(swap_errors, corrupt_swap_signals_without_poison, .timeout = 60)
{
	corrupt_swap(UPG_FEAT_POISON);
}
