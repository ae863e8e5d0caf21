/*
 * test_features.c - kernel feature probing, and contexts forced onto their
 * fallback paths through upg_config (feature_mask, handler threads, pinning).
 *
 * The matrix test runs one paging workload over every configuration, the
 * way the kernel's uffd selftests run each test over each memory type.
 */
#include <dirent.h>
#include <sched.h>
#include <stdatomic.h>

/* criterion.h (through itest.h) before parameterized.h, or Test() stays
 * undefined. */
#include "itest.h"
#include <criterion/parameterized.h>

#define ALL_FEATURES ((1ull << UPG_FEAT_COUNT) - 1)

/* A context with feature_mask = mask, or skip if the kernel lacks what the
 * mask leaves as the only way (need). */
static upg_ctx *ctx_masked(uint64_t mask, uint64_t need)
{
	uint64_t probed = features_or_skip();
	struct upg_config cfg;

	if ((probed & need) != need)
		cr_skip_test("kernel lacks feature bits %#llx", (unsigned long long)(need & ~probed));
	upg_config_init(&cfg);
	cfg.feature_mask = mask;
	return ctx_new(&cfg);
}

/*
 * The paging workload: 2 threads on one region of 256 pages. Thread 0 reads
 * the even pages then writes them; thread 1 writes the odd ones. Every page
 * must be resolved exactly once and hold its pattern.
 */
#define WL_PAGES 256

struct wl {
	pthread_t thread;
	uint8_t *base;
	size_t psize;
	unsigned id;
	_Atomic long *bad;
};

static void *wl_main(void *arg)
{
	struct wl *w = arg;

	for (uint64_t i = w->id; i < WL_PAGES; i += 2) {
		uint8_t *page = w->base + i * w->psize;

		if (w->id == 0 && !all_zero(page, w->psize))
			atomic_fetch_add(w->bad, 1);
		pattern_fill(page, w->psize, 42, i);
	}
	return NULL;
}

static void workload(upg_ctx *ctx)
{
	size_t ps = itest_page();
	upg_region *r = region_new_per_page(ctx, WL_PAGES * ps, 0);
	uint8_t *p = upg_region_addr(r);
	int zeropage = !!(upg_ctx_features(ctx) & UPG_FEAT_ZEROPAGE);
	static _Atomic long bad;
	static struct wl w[2];
	struct upg_stats st;

	atomic_store(&bad, 0);

	for (unsigned i = 0; i < 2; i++) {
		w[i] = (struct wl){ .base = p, .psize = ps, .id = i, .bad = &bad };
		cr_assert_eq(pthread_create(&w[i].thread, NULL, wl_main, &w[i]), 0);
	}
	join_or_fail(&w[0].thread, sizeof(w[0]), 2, ctx, 20.0);
	cr_assert_eq(atomic_load(&bad), 0, "untouched pages read nonzero");
	cr_assert_eq(check_pages(p, ps, 0, WL_PAGES, 42), -1);

	stats_wait(ctx, st, st.zero_filled + st.zero_mapped == WL_PAGES, 5000);
	stats_wait(ctx, st, new_faults(&st) == WL_PAGES, 5000);
	cr_assert_geq(st.faults_read, WL_PAGES / 2);
	cr_assert_geq(st.faults_write, WL_PAGES / 2);
	cr_assert_eq(st.zero_mapped, zeropage ? WL_PAGES / 2 : 0);
	cr_assert_eq(st.errors, 0);
	cr_assert_eq(st.faults_stale, 0);
	cr_assert_eq(upg_region_destroy(r), 0);
}

/* ------------------------------------------------------------------------
 * Probing and names
 */

Test(features, probe, .timeout = 20)
{
	uint64_t f = features_or_skip(), again = 0;
	upg_ctx *ctx;

	cr_assert_eq(upg_features_probe(NULL), -EINVAL);
	cr_assert(f & UPG_FEAT_MISSING, "MISSING mode not reported: %#llx", (unsigned long long)f);
	cr_assert(f & (UPG_FEAT_SYSCALL | UPG_FEAT_DEV_USERFAULTFD),
		  "neither the syscall nor /dev/userfaultfd, yet probing worked");
	cr_assert_eq(f & ~ALL_FEATURES, 0, "bits beyond UPG_FEAT_COUNT: %#llx",
		     (unsigned long long)f);
	if (f & (UPG_FEAT_WP_ASYNC | UPG_FEAT_WP_UNPOPULATED))
		cr_assert(f & UPG_FEAT_WP, "a WP refinement without WP");
	if (access("/dev/userfaultfd", R_OK | W_OK) != 0)
		cr_assert_eq(f & UPG_FEAT_DEV_USERFAULTFD, 0,
			     "/dev/userfaultfd reported but cannot be opened");

	/* Stable, and what a context with no mask uses. */
	cr_assert_eq(upg_features_probe(&again), 0);
	cr_assert_eq(again, f);
	ctx = ctx_new(NULL);
	cr_assert_eq(upg_ctx_features(ctx), f, "ctx %#llx, probe %#llx",
		     (unsigned long long)upg_ctx_features(ctx), (unsigned long long)f);
	upg_ctx_destroy(ctx);
}

Test(features, names, .timeout = 10)
{
	const char *names[UPG_FEAT_COUNT];

	for (unsigned i = 0; i < UPG_FEAT_COUNT; i++) {
		names[i] = upg_feature_name(1ull << i);
		cr_assert_not_null(names[i], "feature bit %u has no name", i);
		cr_assert_gt(strlen(names[i]), 0);
		cr_assert_eq(strcspn(names[i], " \t\n"), strlen(names[i]), "name with blanks: '%s'",
			     names[i]);
		for (unsigned j = 0; j < i; j++)
			cr_assert_str_neq(names[i], names[j], "bits %u and %u share a name", j, i);
	}
	cr_assert_null(upg_feature_name(0));
	cr_assert_null(upg_feature_name(1ull << UPG_FEAT_COUNT));
	cr_assert_null(upg_feature_name(1ull << 63));
	cr_assert_null(upg_feature_name(UPG_FEAT_WP | UPG_FEAT_MOVE), "two bits are not a feature");
	cr_assert_str_eq(upg_feature_name(UPG_FEAT_WP), "wp");
	cr_assert_str_eq(upg_feature_name(UPG_FEAT_MOVE), "move");
}

/* ------------------------------------------------------------------------
 * Masks
 */

Test(features, mask_excluded_from_ctx, .timeout = 20)
{
	const uint64_t mask = UPG_FEAT_MOVE | UPG_FEAT_POISON | UPG_FEAT_EVENT_REMAP |
			      UPG_FEAT_THREAD_ID | UPG_FEAT_PAGEMAP_SCAN | UPG_FEAT_IO_URING |
			      UPG_FEAT_MINOR | UPG_FEAT_WP_ASYNC;
	uint64_t probed = features_or_skip();
	upg_ctx *ctx = ctx_masked(mask, 0);

	cr_assert_eq(upg_ctx_features(ctx) & mask, 0, "masked bits still used: %#llx",
		     (unsigned long long)(upg_ctx_features(ctx) & mask));
	cr_assert_eq(upg_ctx_features(ctx), probed & ~mask);
	workload(ctx);
	upg_ctx_destroy(ctx);
}

Test(features, mask_zeropage, .timeout = 20)
{
	size_t ps = itest_page();
	upg_ctx *ctx = ctx_masked(UPG_FEAT_ZEROPAGE, 0);
	upg_region *r = region_new_per_page(ctx, 64 * ps, 0);
	uint8_t *p = upg_region_addr(r);
	struct upg_stats st;

	cr_assert_eq(upg_ctx_features(ctx) & UPG_FEAT_ZEROPAGE, 0);
	/* Reads now get zeroed private pages. */
	cr_assert_eq(check_zero(p, ps, 0, 64), -1);
	stats_wait(ctx, st, st.zero_filled == 64, 5000);
	cr_assert_eq(st.zero_mapped, 0, "zero page used although masked");
	cr_assert_geq(st.faults_read, 64);
	stats_wait(ctx, st, st.resident_bytes == 64 * ps, 5000);
	fill_pages(p, ps, 0, 64, 1);
	cr_assert_eq(check_pages(p, ps, 0, 64, 1), -1);
	st = stats_settle(ctx, 20, 5000);
	cr_assert_eq(new_faults(&st), 64, "writes after reads faulted again");
	cr_assert_eq(upg_region_destroy(r), 0);
	upg_ctx_destroy(ctx);
}

Test(features, mask_wp, .timeout = 20)
{
	upg_ctx *ctx = ctx_masked(UPG_FEAT_WP, 0);

	cr_assert_eq(upg_ctx_features(ctx) & UPG_FEAT_WP, 0);
	workload(ctx);
	cr_assert_eq(stats_of(ctx).faults_wp, 0);
	upg_ctx_destroy(ctx);
}

/* No syscall: the context must open its userfaultfd through the device. */
Test(features, mask_syscall_uses_dev, .timeout = 20)
{
	upg_ctx *ctx;

	if (access("/dev/userfaultfd", R_OK | W_OK) != 0)
		cr_skip_test("/dev/userfaultfd missing or not accessible");
	ctx = ctx_masked(UPG_FEAT_SYSCALL, UPG_FEAT_DEV_USERFAULTFD);
	cr_assert_eq(upg_ctx_features(ctx) & UPG_FEAT_SYSCALL, 0);
	cr_assert(upg_ctx_features(ctx) & UPG_FEAT_DEV_USERFAULTFD);
	workload(ctx);
	upg_ctx_destroy(ctx);
}

Test(features, mask_dev_uses_syscall, .timeout = 20)
{
	upg_ctx *ctx = ctx_masked(UPG_FEAT_DEV_USERFAULTFD, UPG_FEAT_SYSCALL);

	cr_assert_eq(upg_ctx_features(ctx) & UPG_FEAT_DEV_USERFAULTFD, 0);
	workload(ctx);
	upg_ctx_destroy(ctx);
}

/* No way to open a userfaultfd, or no MISSING mode: a clean error. */
Test(features, mask_unusable, .timeout = 20)
{
	const uint64_t masks[] = {
		UPG_FEAT_SYSCALL | UPG_FEAT_DEV_USERFAULTFD,
		UPG_FEAT_MISSING,
		ALL_FEATURES,
		~0ull,
	};
	long fds;

	features_or_skip();
	fds = proc_fd_count();
	for (size_t i = 0; i < sizeof(masks) / sizeof(masks[0]); i++) {
		struct upg_config cfg;
		upg_ctx *ctx = (upg_ctx *)&cfg;
		int ret;

		upg_config_init(&cfg);
		cfg.feature_mask = masks[i];
		ret = upg_ctx_create(&cfg, &ctx);
		cr_assert_lt(ret, 0, "mask %#llx: context created", (unsigned long long)masks[i]);
		cr_assert_gt(ret, -4096, "mask %#llx: %d is not an errno", (unsigned long long)masks[i],
			     ret);
		cr_assert_null(ctx, "mask %#llx: *out not cleared", (unsigned long long)masks[i]);
		cr_assert_not_null(upg_strerror(ret));
	}
	cr_assert_eq(proc_fd_count(), fds, "failed creates leaked descriptors");
}

/* ------------------------------------------------------------------------
 * Handler threads
 */

/* Threads of this process named upager-h*, and whether each is pinned to a
 * single CPU (Cpus_allowed_list without ',' or '-'). */
static unsigned count_handlers(unsigned *pinned)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *e;
	unsigned n = 0;

	*pinned = 0;
	cr_assert_not_null(d);
	while ((e = readdir(d))) {
		char path[320], buf[256];
		FILE *f;

		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/self/task/%s/comm", e->d_name);
		f = fopen(path, "re");
		if (!f)
			continue;
		if (!fgets(buf, sizeof(buf), f) || strncmp(buf, "upager-h", 8)) {
			fclose(f);
			continue;
		}
		fclose(f);
		n++;
		snprintf(path, sizeof(path), "/proc/self/task/%s/status", e->d_name);
		f = fopen(path, "re");
		if (!f)
			continue;
		while (fgets(buf, sizeof(buf), f))
			if (!strncmp(buf, "Cpus_allowed_list:", 18))
				*pinned += !strpbrk(buf + 18, ",-");
		fclose(f);
	}
	closedir(d);
	return n;
}

static unsigned allowed_cpus(void)
{
	cpu_set_t set;

	cr_assert_eq(sched_getaffinity(0, sizeof(set), &set), 0);
	return (unsigned)CPU_COUNT(&set);
}

static void handlers(uint32_t nthreads, uint32_t pin)
{
	struct upg_config cfg;
	unsigned want = nthreads ? nthreads : allowed_cpus(), pinned, left;
	uint64_t deadline;
	upg_ctx *ctx;

	features_or_skip();
	upg_config_init(&cfg);
	cfg.handler_threads = nthreads;
	cfg.pin_handlers = pin;
	ctx = ctx_new(&cfg);
	cr_assert_eq(stats_of(ctx).handler_threads, want);
	/* Handlers name themselves once running: wait for that. */
	deadline = itest_now_ns() + itest_scaled_ms(2000) * 1000000ull;
	while (count_handlers(&pinned) != want && itest_now_ns() < deadline)
		usleep(1000);
	cr_assert_eq(count_handlers(&pinned), want, "handler threads running");
	/* pin_handlers=1: all but the first, which floats (on one CPU, it
	 * cannot but look pinned). */
	if (pin)
		cr_assert_eq(pinned, want - (allowed_cpus() > 1), "pin_handlers=1: %u of %u "
			     "handlers pinned", pinned, want);
	else if (allowed_cpus() > 1)
		cr_assert_eq(pinned, 0, "pin_handlers=0, yet %u handlers pinned", pinned);
	workload(ctx);
	upg_ctx_destroy(ctx);
	/* upg_ctx_destroy joined the handlers, but pthread_join returns when
	 * the kernel clears the thread's tid, before the exiting thread has
	 * left /proc/self/task: wait for the entries to go. A handler that
	 * really outlives its context stays listed, and fails. */
	deadline = itest_now_ns() + itest_scaled_ms(5000) * 1000000ull;
	while ((left = count_handlers(&pinned)) != 0 && itest_now_ns() < deadline)
		usleep(1000);
	cr_assert_eq(left, 0, "%u handler threads outlived their context", left);
}

Test(features, handlers_default, .timeout = 20)
{
	handlers(0, 1);
}

Test(features, handlers_1, .timeout = 20)
{
	handlers(1, 1);
}

Test(features, handlers_4, .timeout = 20)
{
	handlers(4, 1);
}

Test(features, handlers_4_unpinned, .timeout = 20)
{
	handlers(4, 0);
}

Test(features, handlers_unpinned, .timeout = 20)
{
	handlers(0, 0);
}

/* ------------------------------------------------------------------------
 * The matrix: one workload over every configuration
 */

struct config_case {
	const char *name;
	uint64_t mask;
	uint64_t need;              /* skip unless the kernel has these */
	uint32_t handler_threads;
	uint32_t pin_handlers;
};

/* Everything optional masked: what is left is MISSING mode itself. */
#define MINIMAL_MASK (ALL_FEATURES & ~(uint64_t)(UPG_FEAT_MISSING | UPG_FEAT_SYSCALL | \
						UPG_FEAT_DEV_USERFAULTFD))

ParameterizedTestParameters(features, matrix)
{
	static struct config_case cases[] = {
		{ "default", 0, 0, 0, 1 },
		{ "no-zeropage", UPG_FEAT_ZEROPAGE, 0, 0, 1 },
		{ "no-wp", UPG_FEAT_WP, 0, 0, 1 },
		{ "no-events", UPG_FEAT_EVENT_REMAP | UPG_FEAT_EVENT_REMOVE | UPG_FEAT_EVENT_UNMAP,
		  0, 0, 1 },
		{ "dev-only", UPG_FEAT_SYSCALL, UPG_FEAT_DEV_USERFAULTFD, 0, 1 },
		{ "syscall-only", UPG_FEAT_DEV_USERFAULTFD, UPG_FEAT_SYSCALL, 0, 1 },
		{ "minimal", MINIMAL_MASK, 0, 0, 1 },
		{ "one-handler", 0, 0, 1, 1 },
		{ "four-unpinned", 0, 0, 4, 0 },
		{ "minimal-one-handler", MINIMAL_MASK, 0, 1, 0 },
	};

	return cr_make_param_array(struct config_case, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct config_case *c, features, matrix, .timeout = 30)
{
	uint64_t probed = features_or_skip();
	struct upg_config cfg;
	upg_ctx *ctx;

	if ((probed & c->need) != c->need)
		cr_skip_test("%s: kernel lacks %#llx", c->name,
			     (unsigned long long)(c->need & ~probed));
	if ((c->need & UPG_FEAT_DEV_USERFAULTFD) && access("/dev/userfaultfd", R_OK | W_OK) != 0)
		cr_skip_test("%s: /dev/userfaultfd not accessible", c->name);
	upg_config_init(&cfg);
	cfg.feature_mask = c->mask;
	cfg.handler_threads = c->handler_threads;
	cfg.pin_handlers = c->pin_handlers;
	ctx = ctx_new(&cfg);
	cr_assert_eq(upg_ctx_features(ctx) & c->mask, 0, "%s: masked features in use", c->name);
	workload(ctx);
	upg_ctx_destroy(ctx);
}
