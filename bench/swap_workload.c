/*
 * swap_workload.c - the workload of bench_vs_kernel_swap (vs_kernel_swap.sh):
 * a working set larger than the memory budget, touched page by page, every
 * page's contents verified. The same binary runs on either pager:
 *
 *   --kernel          plain anonymous mmap; the harness runs it inside a
 *                     memory cgroup, so the kernel swaps to its swap file
 *   --upager          an upager region in a context whose resident pages are
 *                     capped at --mem bytes, the rest going to a swap file in
 *                     --swap DIR, or to the memcached servers of --remote
 *                     (see upager_config()); bench_vs_remote runs that
 *
 * Phases. `populate` writes every page once, in order (not a measured case:
 * it leaves about wset - budget bytes swapped out). Then each phase given
 * with -p, for -d seconds or -n operations:
 *   rand:T  T threads; an operation picks a random page, verifies it and,
 *           with probability 1/2, writes it again with its next version.
 *           Thread t owns the pages p with p % T == t, so that no two
 *           threads touch one page and the expected version is exact.
 *   seq     one thread reads and verifies every page in order, wrapping.
 *
 * Contents. A page holds 512 words derived from (page, version): all of the
 * page, not a few bytes, so that a torn or misplaced page shows anywhere and
 * a compressing swap (zswap, zram) cannot shrink it to nothing. The version
 * (1 byte per page, wrapping) lives outside the working set.
 *
 * Output: one line per phase,
 *   phase=rand threads=2 ops=... secs=... ops_per_s=...   (+ mb_per_s= for
 *   the scans), the process's rss/swap after populate, and with -o a CSV of
 *   per-second samples: phase,threads,t,ops_per_s (t: seconds since the
 *   phase began, at the end of the interval).
 *
 * Exit status: 0; 1 on a verification failure (the page is named) or any
 * other error; 2 on bad usage; 77 when the upager side cannot run here
 * (no swap paging in this build, or userfaultfd not permitted).
 */
#include "upager.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define MAX_THREADS 64u
#define MAX_PHASES  16u
#define STALL_S     60.0        /* a thread without progress this long: hung */
#define GOLDEN      UINT64_C(0x9e3779b97f4a7c15)

enum kind { K_POPULATE, K_RAND, K_SEQ };
static const char *const kind_name[] = { "populate", "rand", "seq" };

struct phase {
	enum kind kind;
	unsigned threads;
};

struct wl {
	unsigned char *base;         /* the working set */
	size_t npages, page_size;
	unsigned char *ver;          /* version of each page; not in the set */
	uint64_t seed;
	double duration;             /* seconds per phase, if ops == 0 */
	uint64_t ops;                /* operations per phase (all threads) */
	FILE *csv;

	/* The sampler sleeps on cv until its next sample or the last worker. */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	unsigned running;
	double t_done;               /* when the last worker finished */
};

struct worker {
	_Atomic uint64_t ops;        /* published by the worker, read by main */
	_Atomic bool finished;
	struct wl *wl;
	enum kind kind;
	unsigned idx, nthreads;
	uint64_t limit;              /* operations to do; UINT64_MAX: until stop */
	pthread_t tid;
} __attribute__((aligned(64)));  /* counters on lines of their own */

static atomic_bool stop;
static atomic_flag failing = ATOMIC_FLAG_INIT;

static _Noreturn __attribute__((format(printf, 2, 3)))
void die_status(int status, const char *fmt, ...)
{
	va_list ap;

	/* Several threads may fail at once: one reports, the others wait for
	 * the exit (calling exit() twice is undefined). */
	if (atomic_flag_test_and_set(&failing))
		for (;;)
			pause();
	fflush(stdout);
	fputs("swap_workload: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(status);
}
#define die(...) die_status(1, __VA_ARGS__)

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t mix64(uint64_t x)   /* splitmix64's finaliser */
{
	x = (x ^ (x >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	x = (x ^ (x >> 27)) * UINT64_C(0x94d049bb133111eb);
	return x ^ (x >> 31);
}

static uint64_t next_rand(uint64_t *state)
{
	return mix64(*state += GOLDEN);
}

/* Uniform in [0, n) without division (Lemire). */
static uint64_t rand_below(uint64_t *state, uint64_t n)
{
	return (uint64_t)(((unsigned __int128)next_rand(state) * n) >> 64);
}

/* Word i of a page holds key ^ i * GOLDEN: unrelated keys for any two
 * (page, version), cheap to make and to check (no multiply per word). */
static uint64_t page_key(const struct wl *wl, size_t page, unsigned ver)
{
	return mix64(wl->seed ^ ((uint64_t)page << 8 | ver));
}

static void fill_page(const struct wl *wl, size_t page, unsigned ver)
{
	uint64_t *w = (uint64_t *)(wl->base + page * wl->page_size);
	const uint64_t key = page_key(wl, page, ver);
	const size_t n = wl->page_size / sizeof(*w);

	for (size_t i = 0; i < n; i++)
		w[i] = key ^ (i * GOLDEN);
}

static _Noreturn void verify_failed(const struct wl *wl, size_t page,
				    unsigned ver, const char *phase)
{
	const uint64_t *w = (const uint64_t *)(wl->base + page * wl->page_size);
	const uint64_t key = page_key(wl, page, ver);
	const size_t n = wl->page_size / sizeof(*w);
	const char *what = "foreign contents";
	size_t i = 0, zero = 0;
	char other[48];

	while (i < n && w[i] == (key ^ (i * GOLDEN)))
		i++;
	for (size_t j = 0; j < n; j++)
		zero += !w[j];
	/* Name what the page holds instead: the right version, damaged; another
	 * version (a lost or misordered write); zeroes (lost data); other. */
	if (zero == n) {
		what = "all zero";
	} else if (i > 0) {
		what = "the expected version, damaged from that word on";
	} else {
		for (unsigned v = 0; v < 256; v++) {
			if (v != ver && w[0] == page_key(wl, page, v)) {
				snprintf(other, sizeof(other), "version %u of the page", v);
				what = other;
				break;
			}
		}
	}
	die("verification failed in %s: page %zu (offset %#zx), version %u: "
	    "word %zu is %#" PRIx64 ", expected %#" PRIx64 "; the page holds %s",
	    phase, page, page * wl->page_size, ver, i, w[i],
	    key ^ (i * GOLDEN), what);
}

/* A pass that ORs the differences vectorises; where they are is found only
 * on failure. */
static void check_page(const struct wl *wl, size_t page, const char *phase)
{
	const uint64_t *w = (const uint64_t *)(wl->base + page * wl->page_size);
	const unsigned ver = wl->ver[page];
	const uint64_t key = page_key(wl, page, ver);
	const size_t n = wl->page_size / sizeof(*w);
	uint64_t diff = 0;

	for (size_t i = 0; i < n; i++)
		diff |= w[i] ^ (key ^ (i * GOLDEN));
	if (__builtin_expect(diff != 0, 0))
		verify_failed(wl, page, ver, phase);
}

static void *work(void *arg)
{
	struct worker *me = arg;
	struct wl *wl = me->wl;
	const size_t T = me->nthreads, t = me->idx;
	/* Pages t, t + T, t + 2T, ... are this thread's. */
	const size_t owned = (wl->npages - t + T - 1) / T;
	uint64_t rng = wl->seed ^ mix64(t + 1) ^ mix64((uint64_t)T << 32);
	uint64_t ops = 0;
	size_t page = 0;
	double t_end;

	while (ops < me->limit &&
	       !atomic_load_explicit(&stop, memory_order_relaxed)) {
		switch (me->kind) {
		case K_POPULATE:
			fill_page(wl, ops, wl->ver[ops]);
			break;
		case K_RAND:
			page = t + rand_below(&rng, owned) * T;
			check_page(wl, page, "rand");
			if (next_rand(&rng) & 1) {
				wl->ver[page]++;   /* wraps: 256 versions */
				fill_page(wl, page, wl->ver[page]);
			}
			break;
		case K_SEQ:
			check_page(wl, page, "seq");
			if (++page == wl->npages)
				page = 0;
			break;
		}
		atomic_store_explicit(&me->ops, ++ops, memory_order_relaxed);
	}
	atomic_store(&me->finished, true);

	t_end = now_s();
	pthread_mutex_lock(&wl->mu);
	if (t_end > wl->t_done)
		wl->t_done = t_end;
	if (--wl->running == 0)
		pthread_cond_signal(&wl->cv);
	pthread_mutex_unlock(&wl->mu);
	return NULL;
}

static void on_alarm(int sig)
{
	static const char msg[] = "swap_workload: a thread did not stop within "
				  "60 s of the end of its phase: hung in a fault?\n";

	(void)sig;
	(void)!write(STDERR_FILENO, msg, sizeof(msg) - 1);
	_exit(1);
}

/* Runs one phase and samples its throughput once a second. */
static void run_phase(struct wl *wl, const struct phase *ph)
{
	const unsigned T = ph->threads;
	struct worker *w;
	uint64_t last_ops[MAX_THREADS] = { 0 }, total = 0, last_total = 0;
	double since[MAX_THREADS], t0, next, end = INFINITY, t = 0, last_t;
	bool done = false;
	struct rusage ru0, ru1;
	int rc;

	getrusage(RUSAGE_SELF, &ru0);
	w = aligned_alloc(64, sizeof(*w) * T);
	if (!w)
		die("out of memory");
	atomic_store(&stop, false);
	wl->running = T;
	wl->t_done = 0;
	t0 = last_t = now_s();
	if (ph->kind != K_POPULATE && !wl->ops)
		end = t0 + wl->duration;
	for (unsigned i = 0; i < T; i++) {
		w[i] = (struct worker){
			.wl = wl, .kind = ph->kind, .idx = i, .nthreads = T,
			.limit = ph->kind == K_POPULATE ? wl->npages :
				 wl->ops ? (wl->ops + T - 1 - i) / T : UINT64_MAX,
		};
		since[i] = t0;
		rc = pthread_create(&w[i].tid, NULL, work, &w[i]);
		if (rc)
			die("pthread_create: %s", strerror(rc));
	}

	for (next = t0 + 1; !done; ) {
		const double deadline = next < end ? next : end;
		struct timespec ts = {
			.tv_sec = (time_t)deadline,
			.tv_nsec = (long)((deadline - (double)(time_t)deadline) * 1e9),
		};

		pthread_mutex_lock(&wl->mu);
		while (wl->running && now_s() < deadline)
			pthread_cond_timedwait(&wl->cv, &wl->mu, &ts);
		done = !wl->running;
		t = done ? wl->t_done : now_s();
		pthread_mutex_unlock(&wl->mu);
		if (t >= end) {
			/* What is counted now is the phase; an operation
			 * finishing after this is not. */
			atomic_store(&stop, true);
			done = true;
		}

		total = 0;
		for (unsigned i = 0; i < T; i++) {
			uint64_t o = atomic_load_explicit(&w[i].ops, memory_order_relaxed);

			total += o;
			if (o != last_ops[i] || atomic_load(&w[i].finished))
				since[i] = t;
			else if (t - since[i] >= STALL_S)
				die("%s: thread %u made no progress for %.0f s "
				    "(%" PRIu64 " operations done): hung in a fault?",
				    kind_name[ph->kind], i, STALL_S, o);
			last_ops[i] = o;
		}
		if (wl->csv && t - last_t > 1e-3)
			fprintf(wl->csv, "%s,%u,%.3f,%.1f\n", kind_name[ph->kind], T,
				t - t0, (double)(total - last_total) / (t - last_t));
		last_total = total;
		last_t = t;
		while (next <= t)
			next += 1;
	}

	alarm((unsigned)STALL_S);
	for (unsigned i = 0; i < T; i++)
		pthread_join(w[i].tid, NULL);
	alarm(0);
	free(w);
	getrusage(RUSAGE_SELF, &ru1);
	if (wl->csv && fflush(wl->csv))
		die("writing the CSV: %s", strerror(errno));

	printf("phase=%s threads=%u ops=%" PRIu64 " secs=%.3f ops_per_s=%.1f",
	       kind_name[ph->kind], T, total, t - t0, (double)total / (t - t0));
	if (ph->kind != K_RAND)
		printf(" mb_per_s=%.1f",
		       (double)total * (double)wl->page_size / (t - t0) / 1e6);
	/* The kernel's count of faults that waited for I/O: on the kernel
	 * side, the swap-ins that missed the swap cache. */
	printf(" majflt=%ld", ru1.ru_majflt - ru0.ru_majflt);
	putchar('\n');
	fflush(stdout);
}

/* VmRSS and VmSwap of this process, in MiB: evidence that the kernel side
 * swapped (and, on the upager side, that RSS stayed near the budget). */
static void print_memory(const char *when)
{
	FILE *f = fopen("/proc/self/status", "r");
	unsigned long long rss = 0, swap = 0;
	char line[256];

	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		sscanf(line, "VmRSS: %llu kB", &rss);
		sscanf(line, "VmSwap: %llu kB", &swap);
	}
	fclose(f);
	printf("memory after %s: rss_mb=%llu swap_mb=%llu\n", when, rss / 1024,
	       swap / 1024);
}

/* --remote, --replicas: page to memcached servers instead of a swap file. */
static const char *remote;
static unsigned replicas = 1;
/* --policy: how upager picks the pages to evict. */
static uint32_t policy = UPG_POLICY_COOLING;
/* --evict: the features masked to force an eviction path (0: the best the
 * kernel has), and the path asked for (UINT32_MAX: any). */
static uint64_t evict_mask;
static uint32_t evict_path = UINT32_MAX;

/* The upager side: a context whose memory limit is the budget, paging to
 * one unlinked swap file in dir, or to the --remote servers. */
static int upager_config(struct upg_config *cfg, uint64_t budget,
			 const char *dir, uint64_t swap_size)
{
#ifdef UPG_HAVE_SWAP
	static struct upg_swap_file sf;

	if (remote) {
#ifdef UPG_HAVE_REMOTE
		cfg->mem_limit = budget;
		cfg->remote_servers = remote;
		cfg->remote_replicas = replicas;
		return 0;
#else
		return -EOPNOTSUPP;
#endif
	}

	sf = (struct upg_swap_file){ .path = dir, .size = swap_size };
	cfg->mem_limit = budget;
	cfg->swap_files = &sf;
	cfg->nswap_files = 1;
	return 0;
#else
	(void)cfg, (void)budget, (void)dir, (void)swap_size;
	return -EOPNOTSUPP;
#endif
}

static void skip(const char *why)
{
	fflush(stdout);
	fprintf(stderr, "swap_workload: SKIP: %s\n", why);
	exit(77);
}

/* The working set as an upager region. budget 0: no cap (nothing is evicted,
 * no swap file is needed), which runs with any build. */
static unsigned char *upager_open(size_t wset, uint64_t budget, const char *dir,
				  upg_ctx **ctx, upg_region **region)
{
	struct upg_config cfg;
	int rc;

	upg_config_init(&cfg);
	cfg.policy = policy;
	cfg.feature_mask = evict_mask;
	if (budget) {
		rc = upager_config(&cfg, budget, dir, 2 * (uint64_t)wset);
		if (rc == -EOPNOTSUPP)
			skip("upager swap paging not available in this build");
	}
	rc = upg_ctx_create(&cfg, ctx);
	if (rc == -EOPNOTSUPP || rc == -ENOSYS)
		skip("upager swap paging not available in this build");
	if (rc == -EPERM || rc == -EACCES)
		skip("userfaultfd not permitted");
	if (rc)
		die("upg_ctx_create: %s", upg_strerror(rc));
	if (budget && evict_path != UINT32_MAX) {
		struct upg_stats st = { .size = sizeof(st) };

		rc = upg_stats_get(*ctx, &st);
		if (rc)
			die("upg_stats_get: %s", upg_strerror(rc));
		if (st.evict_path != evict_path)
			die("--evict: this kernel lacks what that eviction path needs");
	}
	rc = upg_region_create(*ctx, wset, NULL, region);
	if (rc)
		die("upg_region_create(%zu bytes): %s", wset, upg_strerror(rc));
	return upg_region_addr(*region);
}

/* Resident bytes of the context: after populate they must be within the
 * budget, or the comparison would be against a pager that never evicts. */
static void upager_report(upg_ctx *ctx, uint64_t budget, const char *when)
{
	struct upg_stats st = { .size = sizeof(st) };
	int rc = upg_stats_get(ctx, &st);

	if (rc)
		die("upg_stats_get: %s", upg_strerror(rc));
	printf("upager after %s: resident_mb=%" PRIu64 " faults=%" PRIu64
	       " (read %" PRIu64 ", write %" PRIu64 ", wp %" PRIu64 ") errors=%"
	       PRIu64 " service p50<%" PRIu64 "ns p99<%" PRIu64 "ns\n", when,
	       st.resident_bytes >> 20, st.faults, st.faults_read,
	       st.faults_write, st.faults_wp, st.errors,
	       upg_stats_latency_ns(&st, 0.5), upg_stats_latency_ns(&st, 0.99));
	if (budget)
		printf("upager paging after %s: major=%" PRIu64 " cooling=%" PRIu64
		       " deferred=%" PRIu64 " swap_ins=%" PRIu64 " swap_outs=%" PRIu64
		       " dropped_clean=%" PRIu64 " readahead=%" PRIu64 " (hits %" PRIu64
		       ", waste %" PRIu64 ")\n", when, st.faults_major, st.faults_cooling,
		       st.faults_deferred, st.swap_ins, st.swap_outs, st.dropped_clean,
		       st.readahead_pages, st.readahead_hits, st.readahead_waste);
	/* 1/16 of slack for reclaim running behind its watermarks. */
	if (budget && st.resident_bytes > budget + budget / 16)
		die("upager holds %" PRIu64 " MiB resident over a budget of %"
		    PRIu64 " MiB: the budget is not enforced",
		    st.resident_bytes >> 20, budget >> 20);
	if (st.errors)
		die("upager counted %" PRIu64 " unresolved faults", st.errors);
}

/* Service-time percentiles of the faults since the last call (what NULL
 * `what` only records): the phases' own, without populate's. */
static void upager_latency(upg_ctx *ctx, const char *what)
{
	static struct upg_stats last;
	struct upg_stats st = { .size = sizeof(st) }, d;

	if (upg_stats_get(ctx, &st))
		return;
	d = st;
	for (unsigned i = 0; i < UPG_LAT_BUCKETS; i++)
		d.latency_hist[i] -= last.latency_hist[i];
	last = st;
	if (what)
		printf("upager latency in %s: p50_us=%.1f p99_us=%.1f\n", what,
		       (double)upg_stats_latency_ns(&d, 0.5) / 1e3,
		       (double)upg_stats_latency_ns(&d, 0.99) / 1e3);
}

/* A size in bytes with an optional binary suffix: 512M, 2G, 2GiB. */
static uint64_t parse_size(const char *arg, const char *opt)
{
	static const char suffixes[] = "KMGT";
	char *end;
	const char *s;
	uint64_t v;

	errno = 0;
	v = strtoull(arg, &end, 10);
	if (errno || end == arg)
		goto bad;
	if (*end && (s = strchr(suffixes, *end))) {
		for (int shift = (int)(s - suffixes + 1) * 10; shift; shift -= 10) {
			if (v > UINT64_MAX >> 10)
				goto bad;
			v <<= 10;
		}
		end++;
		if (!strcmp(end, "iB") || !strcmp(end, "B"))
			end += strlen(end);
	}
	if (!*end)
		return v;
bad:
	die_status(2, "%s: '%s' is not a size (e.g. 512M, 2G)", opt, arg);
}

static void parse_phases(char *arg, struct phase *ph, unsigned *n)
{
	for (char *save = NULL, *tok = strtok_r(arg, ",", &save); tok;
	     tok = strtok_r(NULL, ",", &save)) {
		unsigned long t = 1;
		char *end;

		if (*n == MAX_PHASES)
			die_status(2, "-p: at most %u phases", MAX_PHASES);
		if (!strcmp(tok, "seq")) {
			ph[(*n)++] = (struct phase){ K_SEQ, 1 };
			continue;
		}
		if (strncmp(tok, "rand:", 5))
			die_status(2, "-p: '%s' is neither rand:THREADS nor seq", tok);
		t = strtoul(tok + 5, &end, 10);
		if (end == tok + 5 || *end || t == 0 || t > MAX_THREADS)
			die_status(2, "-p: '%s': threads must be 1..%u", tok, MAX_THREADS);
		ph[(*n)++] = (struct phase){ K_RAND, (unsigned)t };
	}
}

static _Noreturn void usage(int status)
{
	fprintf(status ? stderr : stdout,
		"usage: bench_swap_workload --kernel|--upager [options]\n"
		"  --kernel         the working set is plain anonymous memory (run it\n"
		"                   in a memory cgroup: bench_vs_kernel_swap does)\n"
		"  --upager         the working set is an upager region\n"
		"  -m, --mem SIZE   upager's budget of resident memory (0: none)\n"
		"  -S, --swap DIR   where upager puts its swap file (with --mem)\n"
		"  -R, --remote H:P,...  or the memcached servers it pages to\n"
		"  -r, --replicas N copies of each page on the servers (1 or 2)\n"
		"  -P, --policy P   upager's eviction policy: cooling (default) or fifo\n"
		"  -E, --evict PATH upager's eviction path: move, wp or mprotect (default:\n"
		"                   the best this kernel offers; a path it lacks is an error)\n"
		"  -w, --wset SIZE  working set (default 2G)\n"
		"  -d, --duration S seconds per phase (default 10)\n"
		"  -n, --ops N      operations per phase instead of a duration\n"
		"  -p, --phase LIST phases after populate: rand:THREADS or seq,\n"
		"                   comma-separated or repeated (default\n"
		"                   rand:1,rand:2,rand:8,seq)\n"
		"  -o, --csv FILE   per-second samples: phase,threads,t,ops_per_s\n"
		"  -s, --seed N     seed of the contents and of the page choice\n");
	exit(status);
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "kernel", no_argument, NULL, 'K' },
		{ "upager", no_argument, NULL, 'U' },
		{ "mem", required_argument, NULL, 'm' },
		{ "swap", required_argument, NULL, 'S' },
		{ "remote", required_argument, NULL, 'R' },
		{ "replicas", required_argument, NULL, 'r' },
		{ "policy", required_argument, NULL, 'P' },
		{ "evict", required_argument, NULL, 'E' },
		{ "wset", required_argument, NULL, 'w' },
		{ "duration", required_argument, NULL, 'd' },
		{ "ops", required_argument, NULL, 'n' },
		{ "phase", required_argument, NULL, 'p' },
		{ "csv", required_argument, NULL, 'o' },
		{ "seed", required_argument, NULL, 's' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	struct wl wl = {
		.page_size = (size_t)sysconf(_SC_PAGESIZE),
		.seed = 0x5eed,
		.duration = 10,
		.mu = PTHREAD_MUTEX_INITIALIZER,
	};
	struct phase phases[MAX_PHASES];
	unsigned nphases = 0;
	uint64_t wset = 2ull << 30, budget = 0;
	const char *swap_dir = NULL, *csv_path = NULL;
	char defaults[] = "rand:1,rand:2,rand:8,seq";
	upg_ctx *ctx = NULL;
	upg_region *region = NULL;
	pthread_condattr_t ca;
	int mode = 0, opt;
	char *end;

	/* tools/dev.sh bench runs every build/bench/bench_* bare: this one is
	 * only a part of bench_vs_kernel_swap. */
	if (argc == 1) {
		puts("bench_swap_workload: the workload of bench_vs_kernel_swap, "
		     "which runs it (--help for its options)");
		return 0;
	}
	while ((opt = getopt_long(argc, argv, "m:S:R:r:P:E:w:d:n:p:o:s:h", longopts,
				  NULL)) != -1) {
		switch (opt) {
		case 'K': case 'U': mode = opt; break;
		case 'm': budget = parse_size(optarg, "--mem"); break;
		case 'S': swap_dir = optarg; break;
		case 'R': remote = optarg; break;
		case 'r':
			replicas = (unsigned)strtoul(optarg, &end, 10);
			if (*end || replicas < 1 || replicas > 2)
				die_status(2, "--replicas: 1 or 2");
			break;
		case 'P':
			if (!strcmp(optarg, "cooling"))
				policy = UPG_POLICY_COOLING;
			else if (!strcmp(optarg, "fifo"))
				policy = UPG_POLICY_FIFO;
			else
				die_status(2, "--policy: cooling or fifo");
			break;
		case 'E':
			if (!strcmp(optarg, "move")) {
				evict_path = UPG_EVICT_MOVE;
			} else if (!strcmp(optarg, "wp")) {
				evict_path = UPG_EVICT_WP;
				evict_mask = UPG_FEAT_MOVE;
			} else if (!strcmp(optarg, "mprotect")) {
				evict_path = UPG_EVICT_MPROTECT;
				evict_mask = UPG_FEAT_MOVE | UPG_FEAT_WP;
			} else {
				die_status(2, "--evict: move, wp or mprotect");
			}
			break;
		case 'w': wset = parse_size(optarg, "--wset"); break;
		case 'd':
			wl.duration = strtod(optarg, &end);
			if (*end || !(wl.duration > 0))
				die_status(2, "-d: '%s' is not a positive duration", optarg);
			break;
		case 'n':
			wl.ops = strtoull(optarg, &end, 10);
			if (*end || !wl.ops)
				die_status(2, "-n: '%s' is not a positive count", optarg);
			break;
		case 'p': parse_phases(optarg, phases, &nphases); break;
		case 'o': csv_path = optarg; break;
		case 's': wl.seed = strtoull(optarg, NULL, 0); break;
		case 'h': usage(0);
		default: usage(2);
		}
	}
	if (optind < argc || !mode)
		usage(2);
	if (!nphases)
		parse_phases(defaults, phases, &nphases);
	if (mode == 'K' && (budget || swap_dir || remote))
		die_status(2, "--mem/--swap are upager's; the kernel's budget is "
			   "its memory cgroup's");
	if (mode == 'U' && budget && !swap_dir && !remote)
		die_status(2, "--upager --mem needs --swap DIR or --remote SERVERS");
	if (!wset || wset % wl.page_size)
		die_status(2, "--wset must be a nonzero multiple of %zu bytes",
			   wl.page_size);
	wl.npages = wset / wl.page_size;
	if (wl.npages < MAX_THREADS)
		die_status(2, "--wset: at least %u pages", MAX_THREADS);

	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&wl.cv, &ca);
	signal(SIGALRM, on_alarm);
	wl.ver = calloc(wl.npages, 1);
	if (!wl.ver)
		die("out of memory");
	if (csv_path) {
		wl.csv = fopen(csv_path, "w");
		if (!wl.csv)
			die("%s: %s", csv_path, strerror(errno));
		fputs("phase,threads,t,ops_per_s\n", wl.csv);
	}

	if (mode == 'U') {
		wl.base = upager_open(wset, budget, swap_dir, &ctx, &region);
	} else {
		wl.base = mmap(NULL, wset, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (wl.base == MAP_FAILED)
			die("mmap(%" PRIu64 " bytes): %s", wset, strerror(errno));
		/* Base pages, as upager pages: with THP the kernel would swap
		 * 2 MiB at a time and the comparison would be of page sizes. */
		madvise(wl.base, wset, MADV_NOHUGEPAGE);
	}
	printf("swap_workload: mode=%s upager=%s wset_mb=%" PRIu64 " pages=%zu "
	       "page_size=%zu seed=%#" PRIx64, mode == 'K' ? "kernel" : "upager",
	       upg_version(), wset >> 20, wl.npages, wl.page_size, wl.seed);
	if (mode == 'U')   /* the kernel's is its cgroup's */
		printf(" budget_mb=%" PRIu64, budget >> 20);
	putchar('\n');

	run_phase(&wl, &(struct phase){ K_POPULATE, 1 });
	print_memory("populate");
	if (ctx)
		upager_report(ctx, budget, "populate");
	if (ctx)
		upager_latency(ctx, NULL);
	for (unsigned i = 0; i < nphases; i++)
		run_phase(&wl, &phases[i]);
	print_memory("the phases");
	if (ctx) {
		upager_latency(ctx, "the phases");
		upager_report(ctx, budget, "the phases");
		upg_ctx_destroy(ctx);   /* destroys the region */
	} else {
		munmap(wl.base, wset);
	}
	if (wl.csv && fclose(wl.csv))
		die("%s: %s", csv_path, strerror(errno));
	free(wl.ver);
	return 0;
}
