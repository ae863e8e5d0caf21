/*
 * vs_mmap.c - upager's file regions against kernel mmap, in the manner of
 * "Are You Sure You Want to Use MMAP in Your DBMS?" (Crotty, Leis, Pavlo;
 * CIDR 2022): random 4 KiB reads over a file twice the memory budget.
 *
 *   bench_vs_mmap [-q] [-m BUDGET_MIB] [-d SECS] [-s DIR]
 *
 * Pagers, the same budget, cold at the start of every case:
 *   mmap      the file mapped MAP_SHARED read-only (MADV_RANDOM, or
 *             MADV_SEQUENTIAL for the scan) by a child process in a memory
 *             cgroup (v2) whose memory.max is the budget; the file's page
 *             cache is dropped first, so the cgroup is charged for it
 *   fault     a read-only upager file region under mem_limit = budget,
 *             advice RANDOM (SEQUENTIAL for the scan): plain page faults
 *   prefetch  the same region; each thread keeps 4 batches of 32 pages
 *             prefetched (upg_prefetch) ahead of the batch it reads
 *   device    O_DIRECT io_uring reads of the file at queue depth 32: the
 *             device's ceiling (random), or 128 KiB reads (scan)
 * Cases: random reads with 1 and 2 threads, and a sequential scan; the
 * pagers of a case run one after the other before the next case.
 * Every page holds its index: each read is checked.
 *
 * Last line:
 *   RESULT name=vs-mmap prefetch_vs_mmap_1thr=... fault_vs_mmap_2thr=...
 *          vs_device=... (prefetch, 1 thread / device) ...
 * Exit: 0; 1 on an error; 77 when it cannot run here (not root, no memory
 * cgroup v2, userfaultfd not permitted).
 */
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "upager.h"

#define PAGE 4096ull
#define BATCH 32u
/* Batches a prefetching thread keeps on their way ahead of its reads. */
#define AHEAD 4u
#define QD 32u
#define MAX_THREADS 2

static uint64_t budget = 256ull << 20, pages;
static double secs = 3;
static const char *dir = "/var/tmp";
static char path[4096], cgroup[4096];
static _Atomic uint64_t bad_reads;

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t xorshift(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static void check(const volatile uint8_t *page, uint64_t idx)
{
	if (*(const volatile uint64_t *)page != idx)
		atomic_fetch_add(&bad_reads, 1);
}

/* ------------------------------------------------------------------------
 * Workloads over a mapping (kernel mmap or an upager region)
 */
enum mode { RANDOM, PREFETCH, SCAN };

struct worker {
	const uint8_t *base;
	upg_region *region;
	enum mode mode;
	uint64_t seed, ops;
	double deadline;
	pthread_t thread;
};

static void *work(void *arg)
{
	struct worker *w = arg;
	struct upg_range ring[AHEAD][BATCH];
	uint64_t n = 0;

	if (w->mode == SCAN) {
		for (uint64_t i = 0; i < pages && now() < w->deadline; i++, w->ops++)
			check(w->base + i * PAGE, i);
		return NULL;
	}
	while (now() < w->deadline) {
		if (w->mode == RANDOM) {
			for (unsigned k = 0; k < 64; k++, w->ops++) {
				uint64_t i = xorshift(&w->seed) % pages;

				check(w->base + i * PAGE, i);
			}
			continue;
		}
		/* Pipelined: the batch read now was prefetched AHEAD - 1
		 * batches ago; the one prefetched now is read last. */
		struct upg_range *b = ring[n % AHEAD];

		if (n >= AHEAD)
			for (unsigned k = 0; k < BATCH; k++, w->ops++)
				check(w->base + b[k].off, b[k].off / PAGE);
		for (unsigned k = 0; k < BATCH; k++)
			b[k] = (struct upg_range){ (xorshift(&w->seed) % pages) * PAGE, PAGE };
		upg_prefetch(w->region, b, BATCH, 0);
		n++;
	}
	return NULL;
}

/* Pages per second over `threads` workers on base. */
static double run(const uint8_t *base, upg_region *region, enum mode mode, unsigned threads)
{
	struct worker w[MAX_THREADS];
	double t0 = now(), t;
	uint64_t ops = 0;

	for (unsigned i = 0; i < threads; i++) {
		w[i] = (struct worker){ .base = base, .region = region, .mode = mode,
					.seed = 0x9e3779b97f4a7c15ull * (i + 1), .deadline = t0 + secs };
		pthread_create(&w[i].thread, NULL, work, &w[i]);
	}
	for (unsigned i = 0; i < threads; i++) {
		pthread_join(w[i].thread, NULL);
		ops += w[i].ops;
	}
	t = now() - t0;
	return (double)ops / t;
}

/* ------------------------------------------------------------------------
 * Kernel mmap in a memory cgroup of the budget, found as
 * bench/vs_kernel_swap.sh finds it: v2 where the unified hierarchy has the
 * memory controller (a group under its root), else v1, nested in this
 * process's own memory group. Control files are only ever opened, never
 * created: a path that is not a cgroup fails instead of growing files.
 */
static int cg_write(const char *file, const char *value)
{
	char p[4200];
	int fd, ok;

	snprintf(p, sizeof(p), "%s/%s", cgroup, file);
	fd = open(p, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	ok = write(fd, value, strlen(value)) == (ssize_t)strlen(value);
	close(fd);
	return ok ? 0 : -EIO;
}

/* The mount point of a cgroup hierarchy: v2 (type cgroup2), or the v1 one
 * with the memory controller. */
static int cg_mount(bool v2, char *out, size_t len)
{
	char line[1024], dev[256], mnt[512], type[64], opts[512];
	FILE *f = fopen("/proc/mounts", "re");
	int found = 0;

	while (f && !found && fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%255s %511s %63s %511s", dev, mnt, type, opts) != 4)
			continue;
		if (v2 ? !strcmp(type, "cgroup2")
		       : !strcmp(type, "cgroup") && strstr(opts, "memory")) {
			snprintf(out, len, "%s", mnt);
			found = 1;
		}
	}
	if (f)
		fclose(f);
	return found;
}

static int cgroup_make(void)
{
	char mnt[512], own[512] = "/", buf[256], line[1024];
	char limit[32];
	bool v2 = false;
	FILE *f;

	if (cg_mount(true, mnt, sizeof(mnt))) {
		snprintf(cgroup, sizeof(cgroup), "%s/cgroup.controllers", mnt);
		f = fopen(cgroup, "re");
		v2 = f && fgets(buf, sizeof(buf), f) && strstr(buf, "memory");
		if (f)
			fclose(f);
	}
	if (v2) {
		snprintf(cgroup, sizeof(cgroup), "%s", mnt);
		cg_write("cgroup.subtree_control", "+memory");
		snprintf(cgroup, sizeof(cgroup), "%s/upager-vs-mmap.%d", mnt, getpid());
	} else {
		if (!cg_mount(false, mnt, sizeof(mnt)))
			return -ENOENT;
		f = fopen("/proc/self/cgroup", "re");
		while (f && fgets(line, sizeof(line), f)) {
			char *c = strchr(line, ':'), *p = c ? strchr(c + 1, ':') : NULL;

			if (p && strstr(c, "memory") && p - c > 1) {
				snprintf(own, sizeof(own), "%s", p + 1);
				own[strcspn(own, "\n")] = 0;
			}
		}
		if (f)
			fclose(f);
		snprintf(cgroup, sizeof(cgroup), "%s%s/upager-vs-mmap.%d", mnt,
			 strcmp(own, "/") ? own : "", getpid());
	}
	if (mkdir(cgroup, 0755) < 0)
		return -errno;
	snprintf(limit, sizeof(limit), "%llu", (unsigned long long)budget);
	if (cg_write(v2 ? "memory.max" : "memory.limit_in_bytes", limit) < 0) {
		rmdir(cgroup);
		return -EPERM;
	}
	printf("vs-mmap: memory cgroup %s (%s)\n", cgroup, v2 ? "v2" : "v1");
	return 0;
}

static void cgroup_remove(void)
{
	for (int i = 0; i < 50 && rmdir(cgroup) < 0 && errno == EBUSY; i++)
		usleep(100000);
}

/* The file's cached pages go, so that the mmap run's own are charged to it. */
static void drop_cache(void)
{
	int fd = open(path, O_RDONLY);

	if (fd >= 0) {
		posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
		close(fd);
	}
}

static double run_mmap(enum mode mode, unsigned threads)
{
	int fds[2];
	double rate = 0;
	pid_t pid;

	drop_cache();
	if (pipe(fds) < 0)
		return 0;
	pid = fork();
	if (pid == 0) {
		char me[32];
		int fd = open(path, O_RDONLY);
		uint8_t *base;

		snprintf(me, sizeof(me), "%d", getpid());
		if (cg_write("cgroup.procs", me) < 0 || fd < 0)
			_exit(1);
		base = mmap(NULL, pages * PAGE, PROT_READ, MAP_SHARED, fd, 0);
		if (base == MAP_FAILED)
			_exit(1);
		madvise(base, pages * PAGE, mode == SCAN ? MADV_SEQUENTIAL : MADV_RANDOM);
		rate = run(base, NULL, mode, threads);
		if (write(fds[1], &rate, sizeof(rate)) != sizeof(rate))
			_exit(1);
		_exit(atomic_load(&bad_reads) ? 1 : 0);
	}
	close(fds[1]);
	if (read(fds[0], &rate, sizeof(rate)) != sizeof(rate))
		rate = 0;
	close(fds[0]);
	{
		int status;

		waitpid(pid, &status, 0);
		if (!WIFEXITED(status) || WEXITSTATUS(status))
			atomic_fetch_add(&bad_reads, 1);
	}
	return rate;
}

/* ------------------------------------------------------------------------
 * upager
 */
static double run_upager(enum mode mode, unsigned threads)
{
	struct upg_swap_file sf = { .path = dir, .size = 64ull << 20 };
	struct upg_region_opts opts;
	struct upg_config cfg;
	upg_region *r;
	upg_ctx *ctx;
	double rate;
	int ret;

	upg_config_init(&cfg);
	cfg.mem_limit = budget;
	cfg.swap_files = &sf;
	cfg.nswap_files = 1;
	ret = upg_ctx_create(&cfg, &ctx);
	if (ret < 0) {
		fprintf(stderr, "vs-mmap: upg_ctx_create: %s\n", upg_strerror(ret));
		exit(ret == -EPERM ? 77 : 1);
	}
	upg_region_opts_init(&opts);
	opts.file = path;
	opts.flags = UPG_REGION_FILE_RDONLY;
	ret = upg_region_create(ctx, pages * PAGE, &opts, &r);
	if (ret < 0) {
		fprintf(stderr, "vs-mmap: upg_region_create: %s\n", upg_strerror(ret));
		exit(1);
	}
	upg_advise(r, 0, pages * PAGE, mode == SCAN ? UPG_ADVICE_SEQUENTIAL : UPG_ADVICE_RANDOM);
	rate = run(upg_region_addr(r), r, mode, threads);
	upg_region_destroy(r);
	upg_ctx_destroy(ctx);
	return rate;
}

/* ------------------------------------------------------------------------
 * The device: O_DIRECT io_uring at queue depth QD
 */
static double run_device(enum mode mode)
{
	unsigned len = mode == SCAN ? 128 * 1024 : PAGE;
	int fd = open(path, O_RDONLY | O_DIRECT);
	uint64_t seed = 12345, ops = 0, next = 0;
	struct io_uring ring;
	uint8_t *bufs;
	double t0, deadline;

	if (fd < 0 || io_uring_queue_init(QD, &ring, 0) < 0 ||
	    posix_memalign((void **)&bufs, 4096, (size_t)QD * len))
		return 0;
	t0 = now();
	deadline = t0 + secs;
	for (unsigned i = 0; i < QD; i++) {
		struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
		uint64_t off = mode == SCAN ? (next++ * len) % (pages * PAGE)
					    : (xorshift(&seed) % pages) * PAGE;

		io_uring_prep_read(sqe, fd, bufs + (size_t)i * len, len, off);
		io_uring_sqe_set_data64(sqe, i | (off << 8));
	}
	io_uring_submit(&ring);
	while (now() < deadline) {
		struct io_uring_cqe *cqe;
		struct io_uring_sqe *sqe;
		uint64_t ud, i, off;

		if (io_uring_wait_cqe(&ring, &cqe) < 0)
			break;
		ud = cqe->user_data;
		i = ud & 0xff;
		if (cqe->res != (int)len || *(uint64_t *)(bufs + i * len) != (ud >> 8) / PAGE)
			atomic_fetch_add(&bad_reads, 1);
		io_uring_cqe_seen(&ring, cqe);
		ops += len / PAGE;
		off = mode == SCAN ? (next++ * len) % (pages * PAGE) : (xorshift(&seed) % pages) * PAGE;
		sqe = io_uring_get_sqe(&ring);
		io_uring_prep_read(sqe, fd, bufs + i * len, len, off);
		io_uring_sqe_set_data64(sqe, i | (off << 8));
		io_uring_submit(&ring);
	}
	io_uring_queue_exit(&ring);
	free(bufs);
	close(fd);
	return (double)ops / (now() - t0);
}

/* The data file: page i holds i in its first word, the rest a filler. */
static int make_file(void)
{
	int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY | O_DIRECT, 0644);
	const uint64_t chunk = 256;
	uint8_t *buf;

	if (fd < 0 || posix_memalign((void **)&buf, 4096, chunk * PAGE))
		return -1;
	memset(buf, 0x5a, chunk * PAGE);
	for (uint64_t i = 0; i < pages; i += chunk) {
		for (uint64_t k = 0; k < chunk; k++)
			*(uint64_t *)(buf + k * PAGE) = i + k;
		if (pwrite(fd, buf, chunk * PAGE, (off_t)(i * PAGE)) != (ssize_t)(chunk * PAGE))
			return -1;
	}
	fsync(fd);
	close(fd);
	free(buf);
	return 0;
}

int main(int argc, char **argv)
{
	double r[3][4] = { { 0 } };   /* [case][pager]: rand1, rand2, scan x mmap, fault, prefetch, device */
	static const char *const cases[] = { "rand-1thr", "rand-2thr", "scan" };
	int opt;

	while ((opt = getopt(argc, argv, "qm:d:s:")) != -1) {
		switch (opt) {
		case 'q': budget = 32ull << 20; secs = 1; break;
		case 'm': budget = strtoull(optarg, NULL, 0) << 20; break;
		case 'd': secs = strtod(optarg, NULL); break;
		case 's': dir = optarg; break;
		default:
			fprintf(stderr, "usage: bench_vs_mmap [-q] [-m BUDGET_MIB] [-d SECS] [-s DIR]\n");
			return 2;
		}
	}
	if (geteuid() != 0) {
		fprintf(stderr, "vs-mmap: SKIP: needs root (memory cgroup)\n");
		return 77;
	}
	if (cgroup_make() < 0) {
		fprintf(stderr, "vs-mmap: SKIP: cannot make a memory cgroup (v2) under /sys/fs/cgroup\n");
		return 77;
	}
	pages = 2 * budget / PAGE;
	snprintf(path, sizeof(path), "%s/upager-vs-mmap.%d", dir, getpid());
	printf("vs-mmap: file %llu MiB, budget %llu MiB, %.1f s per run\n",
	       (unsigned long long)(pages * PAGE >> 20), (unsigned long long)(budget >> 20), secs);
	if (make_file() < 0) {
		fprintf(stderr, "vs-mmap: cannot write %s\n", path);
		unlink(path);
		cgroup_remove();
		return 1;
	}
	for (int c = 0; c < 3; c++) {
		enum mode m = c == 2 ? SCAN : RANDOM;
		unsigned threads = c == 1 ? 2 : 1;

		r[c][0] = run_mmap(m, threads);
		r[c][1] = run_upager(m, threads);
		r[c][2] = m == SCAN ? 0 : run_upager(PREFETCH, threads);
		r[c][3] = c == 1 ? r[0][3] : run_device(m);
		printf("%-10s pages/s: mmap %9.0f  upager-fault %9.0f  upager-prefetch %9.0f  "
		       "device %9.0f\n", cases[c], r[c][0], r[c][1], r[c][2], r[c][3]);
		fflush(stdout);
	}
	unlink(path);
	cgroup_remove();
	if (atomic_load(&bad_reads)) {
		fprintf(stderr, "vs-mmap: %llu reads returned wrong data\n",
			(unsigned long long)atomic_load(&bad_reads));
		return 1;
	}
#define RATIO(a, b) ((b) > 0 ? (a) / (b) : 0)
	printf("RESULT name=vs-mmap prefetch_vs_mmap_1thr=%.2f fault_vs_mmap_2thr=%.2f "
	       "vs_device=%.2f fault_vs_mmap_1thr=%.2f prefetch_vs_mmap_2thr=%.2f "
	       "scan_vs_mmap=%.2f scan_vs_device=%.2f\n",
	       RATIO(r[0][2], r[0][0]), RATIO(r[1][1], r[1][0]), RATIO(r[0][2], r[0][3]),
	       RATIO(r[0][1], r[0][0]), RATIO(r[1][2], r[1][0]), RATIO(r[2][1], r[2][0]),
	       RATIO(r[2][1], r[2][3]));
	return 0;
}
