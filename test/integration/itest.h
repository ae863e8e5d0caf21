/*
 * itest.h - helpers shared by the integration tests (header only; the test
 * CMake builds every integration/test_*.c on its own).
 *
 * Statistics lag the faults they count: a handler bumps zero_filled and
 * friends after the ioctl that already woke the faulting thread. So tests
 * wait for a counter to reach its expected value (stats_wait) before they
 * assert that it is exactly that value.
 *
 * cr_assert* may only be called on the test's main thread; worker threads
 * count failures and the main thread asserts on the count.
 *
 * Every deadline here (stats_wait, stats_poll, join_or_fail, itest_sleep_ms,
 * and each test's Criterion .timeout) is multiplied by the environment
 * variable UPAGER_TEST_TIME_SCALE, a positive number (default 1) read once
 * per process: a slow lane (an emulated guest, a sanitizer build) gives the
 * tests more time without making them check less. Tests that wait on their
 * own take their deadlines through itest_scaled_ms()/itest_scaled_s().
 * (ctest's own per-executable TIMEOUT, set in test/CMakeLists.txt, is not
 * scaled from here.)
 */
#ifndef UPG_ITEST_H
#define UPG_ITEST_H

#include <criterion/criterion.h>
#include <criterion/hooks.h>
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "pattern.h"
#include "upager.h"

#define KiB (1ull << 10)
#define MiB (1ull << 20)
#define GiB (1ull << 30)
#define TiB (1ull << 40)

static inline size_t itest_page(void)
{
	return (size_t)sysconf(_SC_PAGESIZE);
}

static inline uint64_t itest_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ------------------------------------------------------------------------
 * Time scale (UPAGER_TEST_TIME_SCALE)
 */
#define ITEST_TIME_SCALE_ENV "UPAGER_TEST_TIME_SCALE"
#define ITEST_TIME_SCALE_MAX 1000.0

static double itest_time_scale_value = 1.0;
static pthread_once_t itest_time_scale_once = PTHREAD_ONCE_INIT;

static void itest_time_scale_read(void)
{
	const char *s = getenv(ITEST_TIME_SCALE_ENV);
	char *end;
	double v;

	if (!s || !*s)
		return;
	errno = 0;
	v = strtod(s, &end);
	/* !(v > 0) also refuses NaN. */
	if (errno || end == s || *end || !(v > 0) || v > ITEST_TIME_SCALE_MAX) {
		fprintf(stderr, "itest: ignoring %s=\"%s\": want a number in (0, %g]\n",
			ITEST_TIME_SCALE_ENV, s, ITEST_TIME_SCALE_MAX);
		return;
	}
	itest_time_scale_value = v;
}

/* The multiplier for every deadline (1 unless the environment says). */
static inline double itest_time_scale(void)
{
	pthread_once(&itest_time_scale_once, itest_time_scale_read);
	return itest_time_scale_value;
}

static inline uint64_t itest_scaled_ms(double ms)
{
	return (uint64_t)(ms * itest_time_scale());
}

static inline double itest_scaled_s(double s)
{
	return s * itest_time_scale();
}

/* Sleep ms milliseconds, scaled: for settle periods ("give anything still
 * in flight the time to show up") before asserting that nothing did. */
static inline void itest_sleep_ms(double ms)
{
	uint64_t ns = (uint64_t)(ms * itest_time_scale() * 1e6);
	struct timespec ts = { .tv_sec = (time_t)(ns / 1000000000ull),
			       .tv_nsec = (long)(ns % 1000000000ull) };

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/*
 * Criterion's per-test timeouts scale too: in the runner, before any test
 * starts (Criterion reads test->data->timeout when it starts each test's
 * worker), every positive .timeout is multiplied by the scale. Otherwise a
 * scaled join_or_fail deadline would outlast the test and the test would be
 * killed without its message.
 */
ReportHook(PRE_ALL)(struct criterion_test_set *set)
{
	double scale = itest_time_scale();

	if (scale == 1.0)
		return;
	for (struct criterion_ordered_set_node *ns = set->suites->first; ns; ns = ns->next) {
		struct criterion_suite_set *suite = (void *)(ns + 1);

		if (!suite->tests)
			continue;
		for (struct criterion_ordered_set_node *nt = suite->tests->first; nt; nt = nt->next) {
			struct criterion_test *test = (void *)(nt + 1);

			if (test->data && test->data->timeout > 0)
				test->data->timeout *= scale;
		}
	}
}

/* ------------------------------------------------------------------------
 * Poisoned pages: reading one raises SIGBUS
 */

static sigjmp_buf itest_bus_jmp __attribute__((unused));

static inline void itest_on_sigbus(int sig)
{
	(void)sig;
	siglongjmp(itest_bus_jmp, 1);
}

/* Catch SIGBUS for page_verify() until sigbus_restore(old). */
static inline void sigbus_catch(struct sigaction *old)
{
	struct sigaction sa = { .sa_handler = itest_on_sigbus };

	sigemptyset(&sa.sa_mask);
	sigaction(SIGBUS, &sa, old);
}

static inline void sigbus_restore(const struct sigaction *old)
{
	sigaction(SIGBUS, old, NULL);
}

/* Read page p (at page, ps bytes) and check that it holds generation gen:
 * 0 right, 1 wrong, -1 it raised SIGBUS. Between sigbus_catch() and
 * sigbus_restore(). */
static inline int page_verify(const uint8_t *page, size_t ps, uint64_t gen, uint64_t p)
{
	if (sigsetjmp(itest_bus_jmp, 1))
		return -1;
	(void)*(const volatile uint8_t *)page;
	return pattern_check(page, ps, gen, p) >= 0;
}

/* ------------------------------------------------------------------------
 * Contexts and regions
 */

/* Create a context or skip the test when userfaultfd is not permitted. */
static inline upg_ctx *ctx_new(const struct upg_config *cfg)
{
	upg_ctx *ctx = NULL;
	int ret = upg_ctx_create(cfg, &ctx);

	if (ret == -EPERM || ret == -EACCES)
		cr_skip_test("userfaultfd not permitted (%s): run as root", upg_strerror(ret));
	cr_assert_eq(ret, 0, "upg_ctx_create: %s", upg_strerror(ret));
	cr_assert_not_null(ctx);
	return ctx;
}

/* Tests whose forked child starts a context's threads again
 * (upg_ctx_fork_child) skip under ThreadSanitizer, which does not support
 * threads started after a multi-threaded fork. */
static inline void skip_forked_threads_under_tsan(void)
{
#if defined(__SANITIZE_THREAD__)
	cr_skip_test("ThreadSanitizer does not follow threads started in the child of a "
		     "multi-threaded fork (upg_ctx_fork_child's handlers)");
#endif
}

/* The probed feature set, or skip when userfaultfd is not permitted. */
static inline uint64_t features_or_skip(void)
{
	uint64_t f = 0;
	int ret = upg_features_probe(&f);

	if (ret == -EPERM || ret == -EACCES)
		cr_skip_test("userfaultfd not permitted (%s): run as root", upg_strerror(ret));
	cr_assert_eq(ret, 0, "upg_features_probe: %s", upg_strerror(ret));
	return f;
}

static inline upg_region *region_new(upg_ctx *ctx, uint64_t size, uint64_t page_size)
{
	struct upg_region_opts opts;
	upg_region *r = NULL;
	int ret;

	upg_region_opts_init(&opts);
	opts.page_size = page_size;
	ret = upg_region_create(ctx, size, &opts, &r);
	cr_assert_eq(ret, 0, "upg_region_create(%llu, page %llu): %s", (unsigned long long)size,
		     (unsigned long long)page_size, upg_strerror(ret));
	cr_assert_not_null(r);
	return r;
}

/* A region where every first touch is a fault of its own and maps its own
 * page only (advised random: no zero-ahead), for the tests that count
 * faults, filled pages or resident pages. */
static inline upg_region *region_new_per_page(upg_ctx *ctx, uint64_t size, uint64_t page_size)
{
	upg_region *r = region_new(ctx, size, page_size);

	cr_assert_eq(upg_advise(r, 0, size, UPG_ADVICE_RANDOM), 0);
	return r;
}

static inline struct upg_stats stats_of(upg_ctx *ctx)
{
	struct upg_stats st;
	int ret;

	memset(&st, 0, sizeof(st));
	st.size = sizeof(st);
	ret = upg_stats_get(ctx, &st);
	cr_assert_eq(ret, 0, "upg_stats_get: %s", upg_strerror(ret));
	return st;
}

/*
 * Fault messages that found their page still unresolved. The kernel may
 * report one access more than once: a faulting thread woken early faults
 * again while its page is still being filled (seen with large upager pages,
 * whose UFFDIO_COPY takes long), and upager counts the repeats as
 * faults_shared. Exact per-page counts compare this, not st->faults.
 */
static inline uint64_t new_faults(const struct upg_stats *st)
{
	return st->faults - st->faults_shared;
}

/*
 * Poll the stats of ctx into `st` until `cond` (an expression over st) holds
 * or timeout_ms (scaled) passed, without asserting: the caller looks at st.
 */
#define stats_poll(ctx, st, cond, timeout_ms)                                           \
	do {                                                                            \
		uint64_t deadline_ = itest_now_ns() + itest_scaled_ms(timeout_ms) * 1000000ull; \
		for (;;) {                                                              \
			(st) = stats_of(ctx);                                           \
			if ((cond) || itest_now_ns() > deadline_)                       \
				break;                                                  \
			usleep(200);                                                    \
		}                                                                       \
	} while (0)

/*
 * Poll the stats of ctx into `st` until `cond` (an expression over st) holds
 * or timeout_ms (scaled) passed; then assert cond. Use for counters that the
 * handler bumps after the faulting thread was already woken.
 */
#define stats_wait(ctx, st, cond, timeout_ms)                                           \
	do {                                                                            \
		stats_poll(ctx, st, cond, timeout_ms);                                  \
		cr_assert((cond), "after %llu ms: %s",                                  \
			  (unsigned long long)itest_scaled_ms(timeout_ms), #cond);      \
	} while (0)

/*
 * The stats once the fault counters stopped moving: no change in
 * faults, faults_shared, faults_stale, zero_mapped, zero_filled or errors for
 * quiet_ms (scaled), or timeout_ms (scaled) passed. A handler bumps `faults`
 * when it reads a message and `faults_shared` only once it found the message
 * a duplicate, so a snapshot taken while a late duplicate is being handled
 * shows one new fault too many; assert "no more faults" on settled stats.
 */
static inline struct upg_stats stats_settle(upg_ctx *ctx, double quiet_ms, double timeout_ms)
{
	uint64_t deadline = itest_now_ns() + itest_scaled_ms(timeout_ms) * 1000000ull;
	uint64_t quiet = itest_scaled_ms(quiet_ms) * 1000000ull;
	struct upg_stats st = stats_of(ctx), prev = st;
	uint64_t since = itest_now_ns();

	for (;;) {
		uint64_t now;

		usleep(500);
		st = stats_of(ctx);
		now = itest_now_ns();
		if (st.faults != prev.faults || st.faults_shared != prev.faults_shared ||
		    st.faults_stale != prev.faults_stale || st.zero_mapped != prev.zero_mapped ||
		    st.zero_filled != prev.zero_filled || st.errors != prev.errors) {
			prev = st;
			since = now;
		}
		if (now - since >= quiet || now > deadline)
			return st;
	}
}

/*
 * Join n threads (the pthread_t of thread i at threads + i * stride bytes),
 * failing the test (with the context's counters) if one of them is still
 * running after timeout_s (scaled): a fault that is never resolved leaves its
 * thread asleep in the kernel for good, and a message saying so beats the
 * test's timeout.
 */
static inline void join_or_fail(pthread_t *threads, size_t stride, unsigned n, upg_ctx *ctx,
				double timeout_s)
{
	struct timespec dl;

	timeout_s = itest_scaled_s(timeout_s);
	clock_gettime(CLOCK_REALTIME, &dl);
	dl.tv_sec += (time_t)timeout_s;
	dl.tv_nsec += (long)((timeout_s - (double)(time_t)timeout_s) * 1e9);
	if (dl.tv_nsec >= 1000000000L) {
		dl.tv_sec++;
		dl.tv_nsec -= 1000000000L;
	}
	for (unsigned i = 0; i < n; i++) {
		pthread_t *t = (pthread_t *)((char *)threads + i * stride);
		int ret = pthread_timedjoin_np(*t, NULL, &dl);

		if (ret == ETIMEDOUT) {
			struct upg_stats st = stats_of(ctx);

			cr_assert_fail("thread %u still running after %.0f s: most likely asleep "
				       "on, or forever retrying, a fault that is never resolved "
				       "(faults %llu, shared %llu, stale %llu, "
				       "zero_mapped %llu, zero_filled %llu, ioctl_retries %llu, "
				       "errors %llu)", i, timeout_s,
				       (unsigned long long)st.faults,
				       (unsigned long long)st.faults_shared,
				       (unsigned long long)st.faults_stale,
				       (unsigned long long)st.zero_mapped,
				       (unsigned long long)st.zero_filled,
				       (unsigned long long)st.ioctl_retries,
				       (unsigned long long)st.errors);
		}
		cr_assert_eq(ret, 0, "pthread_timedjoin_np: %s", strerror(ret));
	}
}

/* Touch one byte: a read or a write fault on a page not yet mapped. */
static inline uint8_t touch_read(const void *p)
{
	return *(const volatile uint8_t *)p;
}

static inline void touch_write(void *p, uint8_t v)
{
	*(volatile uint8_t *)p = v;
}

/* Fill / check pages [first, first+n) of a mapping at base with pattern gen
 * (page numbers are absolute indices, so a moved page keeps its number). */
static inline void fill_pages(void *base, size_t psize, uint64_t first, uint64_t n, uint64_t gen)
{
	for (uint64_t i = first; i < first + n; i++)
		pattern_fill((uint8_t *)base + i * psize, psize, gen, i);
}

/* Returns the first wrong page, or -1. */
static inline long check_pages(const void *base, size_t psize, uint64_t first, uint64_t n,
			       uint64_t gen)
{
	for (uint64_t i = first; i < first + n; i++)
		if (pattern_check((const uint8_t *)base + i * psize, psize, gen, i) >= 0)
			return (long)i;
	return -1;
}

static inline long check_zero(const void *base, size_t psize, uint64_t first, uint64_t n)
{
	for (uint64_t i = first; i < first + n; i++)
		if (!all_zero((const uint8_t *)base + i * psize, psize))
			return (long)i;
	return -1;
}

/* Reads every page of [base, base + pages) not yet in lost[]: counts pages
 * that raise SIGBUS in *sigbus (and marks them in lost[]), and pages whose
 * contents are wrong (not generation gen) in *wrong. */
static inline void read_back(uint8_t *base, size_t ps, uint64_t pages, uint64_t gen, uint8_t *lost,
			     uint64_t *sigbus, uint64_t *wrong)
{
	struct sigaction old;

	sigbus_catch(&old);
	for (uint64_t p = 0; p < pages; p++) {
		int v = lost[p] ? 0 : page_verify(base + p * ps, ps, gen, p);

		lost[p] |= v < 0;
		*sigbus += v < 0;
		*wrong += v > 0;
	}
	sigbus_restore(&old);
}

/* ------------------------------------------------------------------------
 * What the process holds, from /proc/self.
 */

/* A "Name:  value kB" line of /proc/self/status, in kB; -1 if missing. */
static inline long proc_status_kb(const char *name)
{
	FILE *f = fopen("/proc/self/status", "re");
	size_t len = strlen(name);
	char line[256];
	long v = -1;

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, name, len) && line[len] == ':') {
			v = strtol(line + len + 1, NULL, 10);
			break;
		}
	fclose(f);
	return v;
}

static inline long proc_rss_kb(void)
{
	return proc_status_kb("VmRSS");
}

/* Start fn(arg) with a 256 KiB stack: a default 8 MiB stack gets a 2 MiB
 * huge page at its first touch where transparent huge pages are "always"
 * (Debian's arm64 kernels), which a test bounding its resident memory
 * would count. Returns pthread_create's result. */
static inline int itest_thread(pthread_t *t, void *(*fn)(void *), void *arg)
{
	pthread_attr_t attr;
	int ret = pthread_attr_init(&attr);

	if (ret)
		return ret;
	ret = pthread_attr_setstacksize(&attr, 256 * 1024);
	if (!ret)
		ret = pthread_create(t, &attr, fn, arg);
	pthread_attr_destroy(&attr);
	return ret;
}

/* The part of VmRSS the process holds itself: anonymous and shared memory,
 * without the mapped pages of its executable and libraries (RssFile), which
 * the kernel reclaims on its own and which a slow first run faults in. */
static inline long proc_anon_kb(void)
{
	long anon = proc_status_kb("RssAnon"), shmem = proc_status_kb("RssShmem");

	return anon < 0 || shmem < 0 ? -1 : anon + shmem;
}

/* Open descriptors (not counting the one used to list them). */
static inline long proc_fd_count(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	long n = 0;

	if (!d)
		return -1;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n - 1;
}

/* Lines of /proc/self/maps: one per VMA. */
static inline long proc_maps_count(void)
{
	FILE *f = fopen("/proc/self/maps", "re");
	long n = 0;
	int c;

	if (!f)
		return -1;
	while ((c = fgetc(f)) != EOF)
		if (c == '\n')
			n++;
	fclose(f);
	return n;
}

/* How many of the n base pages from p have a present pte (the zero page
 * counts), from /proc/self/pagemap; -1 if it cannot be read. Reading it
 * faults nothing in. */
static inline long pages_present(const void *p, size_t n)
{
	size_t psize = itest_page();
	uint64_t *e = calloc(n, sizeof(*e));
	FILE *f = fopen("/proc/self/pagemap", "re");
	long present = 0;

	if (!e || !f || fseeko(f, (off_t)((uintptr_t)p / psize * 8), SEEK_SET) != 0 ||
	    fread(e, 8, n, f) != n) {
		present = -1;
	} else {
		for (size_t i = 0; i < n; i++)
			present += (long)(e[i] >> 63);
	}
	if (f)
		fclose(f);
	free(e);
	return present;
}

/* 1 if [p, p+len) holds no mapping at all (mincore fails with ENOMEM on
 * every unmapped page). */
static inline int range_unmapped(void *p, size_t len)
{
	size_t psize = itest_page();
	unsigned char vec;

	for (size_t off = 0; off < len; off += psize)
		if (mincore((uint8_t *)p + off, psize, &vec) == 0 || errno != ENOMEM)
			return 0;
	return 1;
}

/*
 * 1 if nothing of a destroyed region's range [p, p+len) is left mapped: no
 * mapping inside it. A mapping that reaches beyond it was placed since by
 * someone else (a sanitizer's allocator, say, in the hole the destroy left)
 * and does not count.
 */
static inline int range_released(void *p, size_t len)
{
	uintptr_t lo = (uintptr_t)p, hi = lo + len;
	unsigned long start, end;
	char line[512];
	int released = 1;
	FILE *f;

	if (range_unmapped(p, len))
		return 1;
	f = fopen("/proc/self/maps", "r");
	if (!f)
		return 0;
	while (released && fgets(line, sizeof(line), f))
		if (sscanf(line, "%lx-%lx", &start, &end) == 2 && start < hi && end > lo &&
		    start >= lo && end <= hi)
			released = 0;
	fclose(f);
	return released;
}

/* A small xorshift generator: deterministic orders for threads. */
static inline uint64_t xorshift64(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return *s = x;
}

/* A deterministic permutation of 0..n-1 into out. */
static inline void shuffle_indices(uint32_t *out, uint32_t n, uint64_t seed)
{
	uint64_t s = seed * 0x9e3779b97f4a7c15ull + 1;

	for (uint32_t i = 0; i < n; i++)
		out[i] = i;
	for (uint32_t i = n; i > 1; i--) {
		uint32_t j = (uint32_t)(xorshift64(&s) % i);
		uint32_t t = out[i - 1];

		out[i - 1] = out[j];
		out[j] = t;
	}
}

#endif /* UPG_ITEST_H */
