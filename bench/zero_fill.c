/*
 * zero_fill.c - the cost of a first-touch fault through upager, against a
 * raw userfaultfd handler of the same thread layout (raw_uffd.c), in one run.
 *
 * A measurement maps a fresh region of N pages, starts T touching threads
 * (not pinned: an application's threads are not), releases them together
 * and has each touch its own contiguous share of N/T pages once, reading or
 * writing one byte per page. Each thread times its own touching; the sample
 * is the slowest thread's time divided by N/T, the wall time per fault.
 * Mapping, thread start, checking the contents and unmapping are outside
 * the timed window.
 *
 * Fairness: each side sets up its userfaultfd and handler threads once for
 * the whole run (one upg_ctx, one raw_uffd), and both map a fresh region per
 * measurement: neither pays thread start-up in a sample, and every sample
 * faults on pages never seen before. Both pools stay alive throughout; the
 * idle one sleeps in the kernel. Each round runs every case on both sides,
 * the side going first alternating from case to case and round to round,
 * so that drifts of the host (10x swings on these VMs) hit both alike. A
 * first round, not counted, warms both sides up.
 *
 * Output: the medians per case and their ratio, upager's counters, then
 *   RESULT name=zero-fill upager_us=... floor_us=... ratio=...
 * where upager_us and floor_us are the medians of all samples of all cases
 * pooled (every case has the same number of samples) and ratio is
 * upager_us / floor_us.
 *
 * Exit status: 0, 1 on any error, 77 when userfaultfd is not permitted.
 */
#include "raw_uffd.h"
#include "upager.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_PAGES  16384u   /* 64 MiB of 4 KiB pages */
#define DEFAULT_ROUNDS 7u
#define QUICK_PAGES    2048u
#define QUICK_ROUNDS   3u
#define MAX_THREADS    2u
#define WATCHDOG_S     60u      /* a lost fault hangs; fail instead */

enum side { SIDE_UPAGER, SIDE_FLOOR, SIDES };
static const char *const side_name[SIDES] = { "upager", "floor" };

struct bcase {
	const char *name;
	unsigned threads;
	bool write;
};

static const struct bcase cases[] = {
	{ "read-1t",  1, false },
	{ "write-1t", 1, true  },
	{ "read-2t",  2, false },
	{ "write-2t", 2, true  },
};
#define NCASES (sizeof(cases) / sizeof(cases[0]))

struct bench {
	size_t pages;            /* per region; a multiple of MAX_THREADS */
	size_t page_size;
	unsigned rounds;
	upg_ctx *ctx;
	struct raw_uffd *ru;
	unsigned char *zero;     /* a zeroed page, to check contents against */
	double *samples;         /* [side][case][round], µs per fault */
};

struct toucher {
	pthread_t tid;
	pthread_barrier_t *start;
	unsigned char *base;     /* the region's first byte */
	size_t first, npages, page_size;
	bool write;
	unsigned char seen;      /* OR of the bytes read: must stay 0 */
	uint64_t ns;             /* this thread's touching time */
};

static _Noreturn __attribute__((format(printf, 1, 2)))
void die(const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);
	fputs("zero-fill: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

/* rc is a negative errno value from upager or raw_uffd. */
static void skip_if_denied(int rc, const char *what)
{
	if (rc == -EPERM || rc == -EACCES) {
		fprintf(stderr, "zero-fill: SKIP: %s: userfaultfd not permitted (%s)\n",
			what, strerror(-rc));
		exit(77);
	}
}

static void on_alarm(int sig)
{
	static const char msg[] = "zero-fill: a measurement took over 60 s: "
				  "a fault was never resolved?\n";

	(void)sig;
	(void)!write(STDERR_FILENO, msg, sizeof(msg) - 1);
	_exit(1);
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The byte written to a page: nonzero, and differing between neighbours so
 * that a page mapped at the wrong address shows. */
static unsigned char pattern(size_t page)
{
	return (unsigned char)(page % 255 + 1);
}

static void *touch(void *arg)
{
	struct toucher *t = arg;
	volatile unsigned char *p = t->base + t->first * t->page_size;
	unsigned char seen = 0;
	uint64_t t0;

	pthread_barrier_wait(t->start);
	t0 = now_ns();
	if (t->write) {
		for (size_t i = 0; i < t->npages; i++)
			p[i * t->page_size] = pattern(t->first + i);
	} else {
		for (size_t i = 0; i < t->npages; i++)
			seen |= p[i * t->page_size];
	}
	t->ns = now_ns() - t0;
	t->seen = seen;
	return NULL;
}

/* Every page must read zero but for byte 0 of a written page. */
static void check(const struct bench *b, const unsigned char *base,
		  const struct bcase *c, enum side side)
{
	const size_t ps = b->page_size;

	for (size_t pg = 0; pg < b->pages; pg++) {
		const unsigned char *page = base + pg * ps;
		unsigned char want0 = c->write ? pattern(pg) : 0;

		if (page[0] == want0 && !memcmp(page + 1, b->zero, ps - 1))
			continue;
		for (size_t i = 0; i < ps; i++) {
			unsigned char want = i ? 0 : want0;

			if (page[i] != want)
				die("%s %s: page %zu byte %zu reads 0x%02x, expected 0x%02x",
				    side_name[side], c->name, pg, i, page[i], want);
		}
	}
}

/* One sample: µs per fault seen by the slowest of c->threads threads. */
static double measure(const struct bench *b, enum side side,
		      const struct bcase *c)
{
	const size_t len = b->pages * b->page_size;
	const size_t share = b->pages / c->threads;
	struct toucher t[MAX_THREADS];
	pthread_barrier_t start;
	upg_region *region = NULL;
	unsigned char *base;
	uint64_t slowest = 0;
	int rc;

	if (side == SIDE_UPAGER) {
		rc = upg_region_create(b->ctx, len, NULL, &region);
		if (rc)
			die("upg_region_create: %s", upg_strerror(rc));
		/* A fault per page, as on the raw side: zero-ahead would map
		 * most of a thread's share ahead of its writes, and this
		 * measures the fault. */
		rc = upg_advise(region, 0, len, UPG_ADVICE_RANDOM);
		if (rc)
			die("upg_advise: %s", upg_strerror(rc));
		base = upg_region_addr(region);
	} else {
		void *addr;

		rc = raw_uffd_map(b->ru, len, &addr);
		if (rc)
			die("raw_uffd_map: %s", strerror(-rc));
		base = addr;
	}

	alarm(WATCHDOG_S);
	rc = pthread_barrier_init(&start, NULL, c->threads);
	if (rc)
		die("pthread_barrier_init: %s", strerror(rc));
	for (unsigned i = 0; i < c->threads; i++) {
		t[i] = (struct toucher){
			.start = &start, .base = base, .first = i * share,
			.npages = share, .page_size = b->page_size,
			.write = c->write,
		};
		rc = pthread_create(&t[i].tid, NULL, touch, &t[i]);
		if (rc)
			die("pthread_create: %s", strerror(rc));
	}
	for (unsigned i = 0; i < c->threads; i++) {
		pthread_join(t[i].tid, NULL);
		if (t[i].seen)
			die("%s %s: a first read returned nonzero",
			    side_name[side], c->name);
		if (t[i].ns > slowest)
			slowest = t[i].ns;
	}
	pthread_barrier_destroy(&start);
	check(b, base, c, side);
	alarm(0);

	if (side == SIDE_UPAGER)
		rc = upg_region_destroy(region);
	else
		rc = raw_uffd_unmap(b->ru, base, len);
	if (rc)
		die("%s: destroying the region: %s", side_name[side],
		    side == SIDE_UPAGER ? upg_strerror(rc) : strerror(-rc));
	return (double)slowest / 1e3 / (double)share;
}

static double *sample(const struct bench *b, enum side s, size_t c, unsigned r)
{
	return &b->samples[((size_t)s * NCASES + c) * b->rounds + r];
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* Sorts v. */
static double median(double *v, size_t n)
{
	qsort(v, n, sizeof(*v), cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* Every case on both sides; recorded unless round < 0 (warm-up). */
static void run_round(const struct bench *b, int round)
{
	for (size_t c = 0; c < NCASES; c++) {
		for (unsigned k = 0; k < SIDES; k++) {
			enum side s = (enum side)(((unsigned)round + c + k) % SIDES);
			double us = measure(b, s, &cases[c]);

			if (round >= 0)
				*sample(b, s, c, (unsigned)round) = us;
		}
	}
}

static void report(const struct bench *b, const struct upg_stats *st0,
		   const struct upg_stats *st1)
{
	const size_t n = NCASES * b->rounds;
	double med[SIDES];

	printf("%-10s %10s %10s %7s\n", "case", "upager_us", "floor_us", "ratio");
	for (size_t c = 0; c < NCASES; c++) {
		for (unsigned s = 0; s < SIDES; s++)
			med[s] = median(sample(b, s, c, 0), b->rounds);
		printf("%-10s %10.3f %10.3f %7.3f\n", cases[c].name,
		       med[SIDE_UPAGER], med[SIDE_FLOOR],
		       med[SIDE_UPAGER] / med[SIDE_FLOOR]);
	}

	/* The counters cover the warm-up round too. A side that resolved
	 * several pages per fault would not be measuring the same thing. */
	printf("upager: faults=%llu (read %llu, write %llu, shared %llu) "
	       "zero_mapped=%llu zero_filled=%llu retries=%llu errors=%llu "
	       "service p50<%lluns p99<%lluns; pages touched=%zu\n",
	       (unsigned long long)(st1->faults - st0->faults),
	       (unsigned long long)(st1->faults_read - st0->faults_read),
	       (unsigned long long)(st1->faults_write - st0->faults_write),
	       (unsigned long long)(st1->faults_shared - st0->faults_shared),
	       (unsigned long long)(st1->zero_mapped - st0->zero_mapped),
	       (unsigned long long)(st1->zero_filled - st0->zero_filled),
	       (unsigned long long)(st1->ioctl_retries - st0->ioctl_retries),
	       (unsigned long long)(st1->errors - st0->errors),
	       (unsigned long long)upg_stats_latency_ns(st1, 0.5),
	       (unsigned long long)upg_stats_latency_ns(st1, 0.99),
	       (b->rounds + 1) * NCASES * b->pages);

	/* Samples are stored per side contiguously: pool them in place. */
	for (unsigned s = 0; s < SIDES; s++)
		med[s] = median(sample(b, s, 0, 0), n);
	printf("RESULT name=zero-fill upager_us=%.3f floor_us=%.3f ratio=%.3f\n",
	       med[SIDE_UPAGER], med[SIDE_FLOOR],
	       med[SIDE_UPAGER] / med[SIDE_FLOOR]);
}

static unsigned long parse_count(const char *arg, char opt)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(arg, &end, 10);
	if (errno || end == arg || *end || v == 0 || v > UINT_MAX)
		die("-%c: '%s' is not a positive count", opt, arg);
	return v;
}

static _Noreturn void usage(int status)
{
	fprintf(status ? stderr : stdout,
		"usage: zero_fill [-p pages] [-r rounds] [-q]\n"
		"  -p  pages per region, a multiple of %u (default %u)\n"
		"  -r  counted rounds (default %u)\n"
		"  -q  quick run: %u pages, %u rounds unless -p/-r say otherwise\n",
		MAX_THREADS, DEFAULT_PAGES, DEFAULT_ROUNDS, QUICK_PAGES,
		QUICK_ROUNDS);
	exit(status);
}

int main(int argc, char **argv)
{
	struct bench b = { .page_size = (size_t)sysconf(_SC_PAGESIZE) };
	struct upg_stats st0 = { .size = sizeof(st0) };
	struct upg_stats st1 = { .size = sizeof(st1) };
	struct upg_config cfg;
	unsigned long pages = 0, rounds = 0;
	bool quick = false;
	int opt, rc;

	while ((opt = getopt(argc, argv, "p:r:qh")) != -1) {
		switch (opt) {
		case 'p': pages = parse_count(optarg, 'p'); break;
		case 'r': rounds = parse_count(optarg, 'r'); break;
		case 'q': quick = true; break;
		case 'h': usage(0);
		default: usage(1);
		}
	}
	if (optind < argc)
		usage(1);
	b.pages = pages ? pages : quick ? QUICK_PAGES : DEFAULT_PAGES;
	b.rounds = rounds ? (unsigned)rounds : quick ? QUICK_ROUNDS : DEFAULT_ROUNDS;
	if (b.pages % MAX_THREADS)
		die("-p: %zu pages cannot be shared by %u threads", b.pages,
		    MAX_THREADS);
	if (b.pages > SIZE_MAX / b.page_size)
		die("-p: %zu pages do not fit in the address space", b.pages);

	b.samples = calloc((size_t)SIDES * NCASES * b.rounds, sizeof(double));
	b.zero = calloc(1, b.page_size);
	if (!b.samples || !b.zero)
		die("out of memory");
	signal(SIGALRM, on_alarm);

	rc = raw_uffd_start(&b.ru);
	skip_if_denied(rc, "raw_uffd_start");
	if (rc)
		die("raw_uffd_start: %s", strerror(-rc));
	upg_config_init(&cfg);
	rc = upg_ctx_create(&cfg, &b.ctx);
	skip_if_denied(rc, "upg_ctx_create");
	if (rc)
		die("upg_ctx_create: %s", upg_strerror(rc));
	rc = upg_stats_get(b.ctx, &st0);
	if (rc)
		die("upg_stats_get: %s", upg_strerror(rc));

	printf("zero-fill: upager %s, %zu pages of %zu B per region, %u rounds "
	       "(+1 warm-up), handlers: upager %u, floor %u\n",
	       upg_version(), b.pages, b.page_size, b.rounds,
	       st0.handler_threads, raw_uffd_handlers(b.ru));
	run_round(&b, -1);
	for (unsigned r = 0; r < b.rounds; r++)
		run_round(&b, (int)r);

	rc = upg_stats_get(b.ctx, &st1);
	if (rc)
		die("upg_stats_get: %s", upg_strerror(rc));
	upg_ctx_destroy(b.ctx);
	raw_uffd_stop(b.ru);
	report(&b, &st0, &st1);
	free(b.samples);
	free(b.zero);
	return 0;
}
