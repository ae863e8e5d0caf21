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
 */
#ifndef UPG_ITEST_H
#define UPG_ITEST_H

#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
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
 * or timeout_ms passed; then assert cond. Use for counters that the handler
 * bumps after the faulting thread was already woken.
 */
#define stats_wait(ctx, st, cond, timeout_ms)                                           \
	do {                                                                            \
		uint64_t deadline_ = itest_now_ns() + (uint64_t)(timeout_ms) * 1000000ull;  \
		for (;;) {                                                              \
			(st) = stats_of(ctx);                                           \
			if ((cond) || itest_now_ns() > deadline_)                       \
				break;                                                  \
			usleep(200);                                                    \
		}                                                                       \
		cr_assert((cond), "after %d ms: %s", (int)(timeout_ms), #cond);         \
	} while (0)

/*
 * Join n threads (the pthread_t of thread i at threads + i * stride bytes),
 * failing the test (with the context's counters) if one of them is still
 * running after timeout_s: a fault that is never resolved leaves its thread
 * asleep in the kernel for good, and a message saying so beats the test's
 * timeout.
 */
static inline void join_or_fail(pthread_t *threads, size_t stride, unsigned n, upg_ctx *ctx,
				double timeout_s)
{
	struct timespec dl;

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
