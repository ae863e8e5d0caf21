/*
 * test_swapfile.c - the swap-file backend on its own: data round trips,
 * slot allocation, file handling, checksums, and the ways files and disks
 * fail under it.
 *
 * Each test works in a directory of its own under /tmp. Tests that need a
 * particular filesystem (a small tmpfs, ramfs) mount it there inside a
 * private mount namespace, so nothing outlives the test process; they skip
 * where mounting is not allowed.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "pattern.h"
#include "swapfile.h"

#define PS 4096u
#define CLUSTER_BYTES ((uint64_t)PS * SWAP_CLUSTER_SLOTS)

static char dir[64];

static int rm_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	return remove(path);
}

static void setup(void)
{
	strcpy(dir, "/tmp/upg-swapfile-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
}

static void teardown(void)
{
	umount2(dir, MNT_DETACH);
	nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

TestSuite(swapfile, .init = setup, .fini = teardown);

/* Mount fstype on dir, in a mount namespace private to this test process. */
static void mount_private(const char *fstype, const char *opts)
{
	if (unshare(CLONE_NEWNS) || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL))
		cr_skip_test("no private mount namespace: %s", strerror(errno));
	if (mount(fstype, dir, fstype, 0, opts))
		cr_skip_test("cannot mount %s: %s", fstype, strerror(errno));
}

static char *path_in_dir(const char *name)
{
	static char buf[4][128];
	static int next;
	char *p = buf[next++ % 4];

	snprintf(p, sizeof(buf[0]), "%s/%s", dir, name);
	return p;
}

static int dir_entries(const char *d)
{
	DIR *dp = opendir(d);
	struct dirent *e;
	int n = 0;

	cr_assert_not_null(dp);
	while ((e = readdir(dp)))
		n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
	closedir(dp);
	return n;
}

static int open_files(uint32_t ps, const struct swapfile_spec *specs, unsigned n,
		      struct backend **b)
{
	struct swapfile_config cfg = { .page_size = ps, .count = n, .files = specs };

	return swapfile_open(&cfg, b);
}

static struct backend *open1(const char *path, uint64_t size, uint32_t ps)
{
	struct swapfile_spec sp = { .path = path, .size = size };
	struct backend *b;
	int ret = open_files(ps, &sp, 1, &b);

	cr_assert_eq(ret, 0, "swapfile_open(%s): %s", path, strerror(-ret));
	return b;
}

static struct swapfile_stats stats(struct backend *b)
{
	struct swapfile_stats st;

	swapfile_get_stats(b, &st);
	return st;
}

static void *pages(unsigned n, uint32_t ps)
{
	void *p = aligned_alloc(4096, (size_t)n * ps);

	cr_assert_not_null(p);
	return p;
}

/* Point ios[i] at slot slots[i] and page i of buf. */
static struct backend_io *make_ios(unsigned n, const uint64_t *slots, char *buf, uint32_t ps)
{
	struct backend_io *ios = calloc(n, sizeof(*ios));

	for (unsigned i = 0; i < n; i++)
		ios[i] = (struct backend_io){ .slot = slots[i], .buf = buf + (size_t)i * ps };
	return ios;
}

/* Queue, submit and reap all n I/Os (in rounds when the queue is full); the
 * results are in ios[i].result. Returns 0, or -errno from the queue. */
static int do_io(struct backend_queue *q, struct backend_io *ios, unsigned n, bool write)
{
	struct backend_io *done[64];
	unsigned queued = 0, reaped = 0;

	while (reaped < n) {
		int ret;

		while (queued < n) {
			ret = write ? backend_queue_write(q, &ios[queued])
				    : backend_queue_read(q, &ios[queued]);
			if (ret == -EAGAIN)
				break;
			if (ret)
				return ret;
			queued++;
		}
		ret = backend_submit(q);
		if (ret < 0)
			return ret;
		ret = backend_reap(q, done, 64, 1);
		if (ret <= 0)
			return ret ? ret : -EIO;
		reaped += (unsigned)ret;
	}
	return 0;
}

/* Read slots[i] back, expecting page gen/(first + i) with crc crcs[i]. */
static void verify(struct backend *b, struct backend_queue *q, const uint64_t *slots,
		   const uint32_t *crcs, unsigned n, uint64_t gen, unsigned first)
{
	uint32_t ps = b->page_size;
	char *in = pages(n, ps);
	struct backend_io *r = make_ios(n, slots, in, ps);

	memset(in, 0, (size_t)n * ps);
	for (unsigned i = 0; i < n; i++)
		r[i].crc = crcs[i];
	cr_assert_eq(do_io(q, r, n, false), 0);
	for (unsigned i = 0; i < n; i++) {
		cr_assert_eq(r[i].result, (int)ps, "read %u: %d", i, r[i].result);
		cr_assert_eq(pattern_check(in + (size_t)i * ps, ps, gen, first + i), -1,
			     "page %u", first + i);
	}
	free(r);
	free(in);
}

/* Write page gen/i to slots[i], then verify; crcs (n entries, or NULL)
 * receives the crcs. */
static void roundtrip(struct backend *b, struct backend_queue *q, const uint64_t *slots,
		      unsigned n, uint64_t gen, uint32_t *crcs)
{
	uint32_t ps = b->page_size, *c = crcs ? crcs : calloc(n, sizeof(*c));
	char *out = pages(n, ps);
	struct backend_io *w = make_ios(n, slots, out, ps);

	for (unsigned i = 0; i < n; i++)
		pattern_fill(out + (size_t)i * ps, ps, gen, i);
	cr_assert_eq(do_io(q, w, n, true), 0);
	for (unsigned i = 0; i < n; i++) {
		cr_assert_eq(w[i].result, (int)ps, "write %u: %d", i, w[i].result);
		c[i] = w[i].crc;
	}
	free(w);
	free(out);
	verify(b, q, slots, c, n, gen, 0);
	if (!crcs)
		free(c);
}

static void roundtrip_pages(uint32_t ps)
{
	struct backend *b = open1(dir, 16 * (uint64_t)ps * SWAP_CLUSTER_SLOTS, ps);
	unsigned n = 8 * SWAP_CLUSTER_SLOTS + 5;
	uint64_t *slots = calloc(n, sizeof(*slots));
	struct backend_queue *q;

	cr_assert_eq(backend_alloc_slots(b, n, slots), (int)n);
	cr_assert_eq(backend_queue_open(b, 32, &q), 0);
	roundtrip(b, q, slots, n, 1, NULL);
	/* Overwrite in place with other contents. */
	roundtrip(b, q, slots, n, 2, NULL);
	backend_queue_close(q);
	backend_close(b);
	free(slots);
}

Test(swapfile, roundtrip_one_queue, .timeout = 60)
{
	roundtrip_pages(PS);
}

Test(swapfile, roundtrip_16k_pages, .timeout = 60)
{
	roundtrip_pages(16384);
}

struct worker {
	struct backend *b;
	unsigned id;
	int err;   /* 0, or what went wrong: no asserts off the test's thread */
};

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	uint32_t ps = w->b->page_size;
	enum { N = 96, ROUNDS = 20 };
	char *out = aligned_alloc(4096, N * ps), *in = aligned_alloc(4096, N * ps);
	uint64_t slots[N];
	struct backend_io wr[N], rd[N];
	struct backend_queue *q = NULL;

	w->err = backend_queue_open(w->b, 16, &q);
	for (unsigned round = 0; round < ROUNDS && !w->err; round++) {
		uint64_t gen = (uint64_t)w->id << 32 | round;

		if (backend_alloc_slots(w->b, N, slots) != N) {
			w->err = -ENOSPC;
			break;
		}
		for (unsigned i = 0; i < N; i++) {
			pattern_fill(out + (size_t)i * ps, ps, gen, i);
			wr[i] = (struct backend_io){ .slot = slots[i], .buf = out + (size_t)i * ps };
			rd[i] = (struct backend_io){ .slot = slots[i], .buf = in + (size_t)i * ps };
		}
		w->err = do_io(q, wr, N, true);
		for (unsigned i = 0; i < N; i++)
			rd[i].crc = wr[i].crc;
		if (!w->err)
			w->err = do_io(q, rd, N, false);
		for (unsigned i = 0; i < N && !w->err; i++) {
			if (wr[i].result != (int)ps || rd[i].result != (int)ps)
				w->err = wr[i].result < 0 ? wr[i].result : rd[i].result;
			else if (pattern_check(in + (size_t)i * ps, ps, gen, i) != -1)
				w->err = -EBADMSG;
		}
		/* Alternate the two ways of giving slots back. */
		if (round & 1)
			backend_discard(w->b, slots, N);
		else
			backend_free_slots(w->b, slots, N);
	}
	backend_queue_close(q);
	free(out);
	free(in);
	return NULL;
}

Test(swapfile, four_threads_own_queues, .timeout = 120)
{
	struct swapfile_spec specs[2] = {
		{ .path = dir, .size = 8 * CLUSTER_BYTES },
		{ .path = dir, .size = 8 * CLUSTER_BYTES },
	};
	struct worker w[4];
	pthread_t t[4];
	struct backend *b;

	cr_assert_eq(open_files(PS, specs, 2, &b), 0);
	for (unsigned i = 0; i < 4; i++) {
		w[i] = (struct worker){ .b = b, .id = i };
		pthread_create(&t[i], NULL, worker_main, &w[i]);
	}
	for (unsigned i = 0; i < 4; i++) {
		pthread_join(t[i], NULL);
		cr_expect_eq(w[i].err, 0, "worker %u: %s", i, strerror(-w[i].err));
	}
	cr_assert_eq(stats(b).slots_used, 0);
	cr_assert_eq(stats(b).bad_frees, 0);
	backend_close(b);
}

static void assert_run(const uint64_t *slots, unsigned n, uint64_t first)
{
	for (unsigned i = 0; i < n; i++)
		cr_assert_eq(slots[i], first + i, "slot %u: %#llx, want %#llx", i,
			     (unsigned long long)slots[i], (unsigned long long)(first + i));
}

Test(swapfile, batches_get_contiguous_slots, .timeout = 30)
{
	struct backend *b = open1(dir, 8 * CLUSTER_BYTES, PS);
	uint64_t s[200];

	/* Batches follow one another within a cluster and into the next. */
	cr_assert_eq(backend_alloc_slots(b, 10, s), 10);
	assert_run(s, 10, 0);
	cr_assert_eq(backend_alloc_slots(b, 20, s), 20);
	assert_run(s, 20, 10);
	cr_assert_eq(backend_alloc_slots(b, 100, s), 100);
	assert_run(s, 100, 30);
	/* A freed slot inside the current cluster is not reused before the
	 * cluster is done: the next batch stays in one piece. */
	backend_free_slots(b, &s[99], 1);       /* slot 129 */
	cr_assert_eq(backend_alloc_slots(b, 64, s), 64);
	assert_run(s, 64, 130);
	cr_assert_eq(stats(b).slots_used, 193);
	backend_close(b);
}

Test(swapfile, exhaustion_and_freeing, .timeout = 30)
{
	struct backend *b = open1(dir, 2 * CLUSTER_BYTES, PS);
	uint64_t s[200], one;

	cr_assert_eq(backend_alloc_slots(b, 200, s), 128, "all there is, no more");
	cr_assert_eq(backend_alloc_slots(b, 1, &one), 0);
	cr_assert_eq(stats(b).slots_used, 128);
	cr_assert_eq(stats(b).clusters_free, 0);

	/* One slot back: exactly that one is handed out again. */
	backend_free_slots(b, &s[77], 1);
	cr_assert_eq(backend_alloc_slots(b, 5, &one), 1);
	cr_assert_eq(one, s[77]);
	cr_assert_eq(backend_alloc_slots(b, 1, &one), 0);

	/* A whole cluster back: a free cluster again, contiguous once more. */
	backend_free_slots(b, s, 64);
	cr_assert_eq(stats(b).clusters_free, 1);
	cr_assert_eq(backend_alloc_slots(b, 64, s), 64);
	assert_run(s, 64, 0);

	/* Double and out-of-range frees are counted and change nothing. */
	backend_free_slots(b, &s[3], 1);
	backend_free_slots(b, &s[3], 1);
	one = swap_slot(0, 128);
	backend_free_slots(b, &one, 1);
	one = swap_slot(5, 0);
	backend_free_slots(b, &one, 1);
	cr_assert_eq(stats(b).bad_frees, 3);
	cr_assert_eq(stats(b).slots_used, 127);
	backend_close(b);
}

/* Random allocations and frees against a shadow map: no slot is ever given
 * out twice, every free one is found again, and the counts add up. */
Test(swapfile, allocator_random_ops, .timeout = 60)
{
	struct swapfile_spec specs[3] = {
		{ .path = dir, .size = 5 * CLUSTER_BYTES, .priority = 1 },
		{ .path = dir, .size = 3 * CLUSTER_BYTES, .priority = 1 },
		{ .path = dir, .size = 4 * CLUSTER_BYTES, .priority = -1 },
	};
	const unsigned total = 12 * SWAP_CLUSTER_SLOTS;
	uint64_t *live = calloc(total, sizeof(*live)), batch[150];
	unsigned nlive = 0, seed = 42;
	bool used[3][5 * SWAP_CLUSTER_SLOTS] = { { 0 } };
	struct backend *b;

	cr_assert_eq(open_files(PS, specs, 3, &b), 0);
	for (int iter = 0; iter < 20000; iter++) {
		unsigned n = 1 + (unsigned)rand_r(&seed) % 150;

		if (rand_r(&seed) % 2) {
			int got = backend_alloc_slots(b, n, batch);

			cr_assert_eq((unsigned)got, n < total - nlive ? n : total - nlive);
			for (int i = 0; i < got; i++) {
				unsigned f = swap_slot_file(batch[i]);
				uint64_t p = swap_slot_page(batch[i]);

				cr_assert(f < 3 && p < specs[f].size / PS, "bad slot %#llx",
					  (unsigned long long)batch[i]);
				cr_assert(!used[f][p], "slot %#llx handed out twice",
					  (unsigned long long)batch[i]);
				used[f][p] = true;
				live[nlive++] = batch[i];
			}
		} else {
			n = n < nlive ? n : nlive;
			for (unsigned i = 0; i < n; i++) {
				unsigned k = (unsigned)rand_r(&seed) % nlive;

				batch[i] = live[k];
				live[k] = live[--nlive];
				used[swap_slot_file(batch[i])][swap_slot_page(batch[i])] = false;
			}
			if (rand_r(&seed) % 2)
				backend_free_slots(b, batch, n);
			else
				backend_discard(b, batch, n);
		}
		cr_assert_eq(stats(b).slots_used, nlive);
	}
	while (nlive) {
		unsigned n = nlive < 150 ? nlive : 150;

		nlive -= n;
		backend_free_slots(b, live + nlive, n);
	}
	cr_assert_eq(stats(b).slots_used, 0);
	cr_assert_eq(stats(b).clusters_free, 12);
	cr_assert_eq(stats(b).bad_frees, 0);
	backend_close(b);
	free(live);
}

Test(swapfile, higher_priority_first, .timeout = 30)
{
	/* Listed low first, so that order alone would pick the wrong one. */
	struct swapfile_spec specs[2] = {
		{ .path = dir, .size = 2 * CLUSTER_BYTES, .priority = -5 },
		{ .path = dir, .size = 2 * CLUSTER_BYTES, .priority = 10 },
	};
	uint64_t s[128];
	struct backend *b;

	cr_assert_eq(open_files(PS, specs, 2, &b), 0);
	cr_assert_eq(backend_alloc_slots(b, 100, s), 100);
	assert_run(s, 100, swap_slot(1, 0));
	cr_assert_eq(backend_alloc_slots(b, 40, s), 40);
	assert_run(s, 28, swap_slot(1, 100));
	assert_run(s + 28, 12, swap_slot(0, 0));
	/* Room in the high-priority file again: it is used again first. */
	backend_free_slots(b, (uint64_t[]){ swap_slot(1, 3) }, 1);
	cr_assert_eq(backend_alloc_slots(b, 1, s), 1);
	cr_assert_eq(s[0], swap_slot(1, 3));
	backend_close(b);
}

Test(swapfile, equal_priorities_stripe_by_cluster, .timeout = 30)
{
	struct swapfile_spec specs[2] = {
		{ .path = dir, .size = 4 * CLUSTER_BYTES, .priority = 3 },
		{ .path = dir, .size = 4 * CLUSTER_BYTES, .priority = 3 },
	};
	uint64_t s[SWAP_CLUSTER_SLOTS * 2];
	struct backend *b;

	cr_assert_eq(open_files(PS, specs, 2, &b), 0);
	for (unsigned c = 0; c < 4; c++) {
		cr_assert_eq(backend_alloc_slots(b, SWAP_CLUSTER_SLOTS, s), (int)SWAP_CLUSTER_SLOTS);
		assert_run(s, SWAP_CLUSTER_SLOTS, swap_slot(c % 2, c / 2 * SWAP_CLUSTER_SLOTS));
	}
	/* A batch that crosses a cluster boundary continues in the other file. */
	cr_assert_eq(backend_alloc_slots(b, 100, s), 100);
	assert_run(s, 64, swap_slot(0, 128));
	assert_run(s + 64, 36, swap_slot(1, 128));
	backend_close(b);
}

Test(swapfile, tmpfile_leaves_nothing_visible, .timeout = 30)
{
	struct backend *b = open1(dir, 4 * CLUSTER_BYTES, PS);
	struct backend_queue *q;
	uint64_t s[64];

	cr_assert_eq(backend_alloc_slots(b, 64, s), 64);
	cr_assert_eq(backend_queue_open(b, 8, &q), 0);
	roundtrip(b, q, s, 64, 3, NULL);
	cr_assert_eq(dir_entries(dir), 0);
	backend_queue_close(q);
	backend_close(b);
	cr_assert_eq(dir_entries(dir), 0);
}

Test(swapfile, named_file_mode_0600_removed_at_close, .timeout = 30)
{
	const char *path = path_in_dir("swap0");
	struct backend *b;
	struct stat st;

	umask(0);  /* the mode must not depend on the umask */
	b = open1(path, 4 * CLUSTER_BYTES + 1000, PS);
	cr_assert_eq(stat(path, &st), 0);
	cr_assert(S_ISREG(st.st_mode));
	cr_assert_eq(st.st_mode & 07777, 0600, "mode %o", st.st_mode & 07777);
	cr_assert_eq(st.st_size, 4 * CLUSTER_BYTES, "rounded down to whole clusters");
	cr_assert_eq(stats(b).slots_total, 4 * SWAP_CLUSTER_SLOTS);
	backend_close(b);
	cr_assert_eq(stat(path, &st), -1);
	cr_assert_eq(errno, ENOENT);
}

Test(swapfile, existing_file_truncated_and_kept, .timeout = 30)
{
	const char *path = path_in_dir("existing");
	int fd = open(path, O_CREAT | O_WRONLY, 0644);
	struct backend *b;
	struct stat st;

	cr_assert_eq(pwrite(fd, "old contents", 12, 10 * CLUSTER_BYTES), 12);
	close(fd);
	b = open1(path, 2 * CLUSTER_BYTES, PS);
	cr_assert_eq(stat(path, &st), 0);
	cr_assert_eq(st.st_mode & 07777, 0600);
	cr_assert_eq(st.st_size, 2 * CLUSTER_BYTES);
	backend_close(b);
	cr_assert_eq(stat(path, &st), 0, "not ours to remove");
}

static void write_one(struct backend *b, struct backend_queue *q, uint64_t slot, void *buf,
		      uint64_t gen, struct backend_io *io)
{
	pattern_fill(buf, b->page_size, gen, slot);
	*io = (struct backend_io){ .slot = slot, .buf = buf };
	cr_assert_eq(do_io(q, io, 1, true), 0);
	cr_assert_eq(io->result, (int)b->page_size);
}

Test(swapfile, corrupt_page_detected, .timeout = 30)
{
	const char *path = path_in_dir("swap");
	struct backend *b = open1(path, 2 * CLUSTER_BYTES, PS);
	char *buf = pages(2, PS);
	struct backend_io w[2], r;
	struct backend_queue *q;
	uint64_t s[2];
	int fd;

	cr_assert_eq(backend_alloc_slots(b, 2, s), 2);
	cr_assert_eq(backend_queue_open(b, 4, &q), 0);
	write_one(b, q, s[0], buf, 1, &w[0]);
	write_one(b, q, s[1], buf + PS, 1, &w[1]);

	/* One byte changes behind the backend's back. */
	fd = open(path, O_RDWR);
	cr_assert_eq(pwrite(fd, "X", 1, (off_t)(swap_slot_page(s[0]) * PS + 100)), 1);
	close(fd);

	r = (struct backend_io){ .slot = s[0], .buf = buf, .crc = w[0].crc };
	cr_assert_eq(do_io(q, &r, 1, false), 0);
	cr_assert_eq(r.result, -EBADMSG);
	/* The page beside it is fine. */
	r = (struct backend_io){ .slot = s[1], .buf = buf, .crc = w[1].crc };
	cr_assert_eq(do_io(q, &r, 1, false), 0);
	cr_assert_eq(r.result, (int)PS);
	cr_assert_eq(pattern_check(buf, PS, 1, s[1]), -1);
	/* So is a wrong crc from the caller: it is the caller's to keep. */
	r.crc ^= 1;
	cr_assert_eq(do_io(q, &r, 1, false), 0);
	cr_assert_eq(r.result, -EBADMSG);
	backend_queue_close(q);
	backend_close(b);
	free(buf);
}

/* Whole-file life on a filesystem: round trip, discard, reuse. */
static void exercise(struct backend *b)
{
	struct backend_queue *q;
	uint64_t s[128];

	cr_assert_eq(backend_alloc_slots(b, 128, s), 128);
	cr_assert_eq(backend_queue_open(b, 32, &q), 0);
	roundtrip(b, q, s, 128, 5, NULL);
	backend_discard(b, s, 128);
	cr_assert_eq(backend_alloc_slots(b, 128, s), 128);
	roundtrip(b, q, s, 128, 6, NULL);
	backend_queue_close(q);
}

Test(swapfile, ramfs_buffered_fallback, .timeout = 30)
{
	struct backend *b;

	/* ramfs has neither O_DIRECT, nor fallocate, nor hole punching. */
	mount_private("ramfs", NULL);
	b = open1(dir, 2 * CLUSTER_BYTES, PS);
	cr_assert_eq(stats(b).files_buffered, 1);
	exercise(b);
	cr_assert_eq(stats(b).holes_punched, 0);
	cr_assert_gt(stats(b).punch_errors, 0, "counted, and otherwise ignored");
	backend_close(b);
}

Test(swapfile, tmpfs, .timeout = 30)
{
	struct backend *b;

	/* tmpfs has O_DIRECT from Linux 6.6 on, buffered I/O before. */
	mount_private("tmpfs", "size=4m");
	b = open1(dir, 2 * CLUSTER_BYTES, PS);
	cr_log_info("tmpfs: %s I/O", stats(b).files_buffered ? "buffered" : "direct");
	exercise(b);
	cr_assert_gt(stats(b).holes_punched, 0);
	cr_assert_eq(stats(b).punch_errors, 0);
	backend_close(b);
}

Test(swapfile, dev_shm, .timeout = 30)
{
	struct backend *b;

	if (access("/dev/shm", W_OK))
		cr_skip_test("no /dev/shm");
	b = open1("/dev/shm", 2 * CLUSTER_BYTES, PS);
	exercise(b);
	backend_close(b);
}

Test(swapfile, truncated_under_backend, .timeout = 30)
{
	const char *path = path_in_dir("swap");
	struct backend *b = open1(path, 2 * CLUSTER_BYTES, PS);
	char *buf = pages(4, PS);
	struct backend_io w[4], r[4];
	struct backend_queue *q;
	uint64_t s[4];

	cr_assert_eq(backend_alloc_slots(b, 4, s), 4);
	cr_assert_eq(backend_queue_open(b, 4, &q), 0);
	for (int i = 0; i < 4; i++)
		write_one(b, q, s[i], buf + i * PS, 9, &w[i]);

	/* Cut the file after the second page: what lay beyond reads short. */
	cr_assert_eq(truncate(path, (off_t)(2 * PS)), 0);
	for (int i = 0; i < 4; i++)
		r[i] = (struct backend_io){ .slot = s[i], .buf = buf + i * PS, .crc = w[i].crc };
	cr_assert_eq(do_io(q, r, 4, false), 0);
	cr_assert_eq(r[0].result, (int)PS);
	cr_assert_eq(r[1].result, (int)PS);
	cr_assert_eq(r[2].result, -EIO);
	cr_assert_eq(r[3].result, -EIO);

	cr_assert_eq(truncate(path, 0), 0);
	cr_assert_eq(do_io(q, r, 4, false), 0);
	for (int i = 0; i < 4; i++)
		cr_assert_eq(r[i].result, -EIO);
	backend_queue_close(q);
	backend_close(b);
	free(buf);
}

/* Someone removes the file and puts another at its path: the backend goes
 * on with its own (unlinked) file and leaves the newcomer alone at close. */
Test(swapfile, removed_under_backend, .timeout = 30)
{
	const char *path = path_in_dir("swap");
	struct backend *b = open1(path, 2 * CLUSTER_BYTES, PS);
	struct backend_queue *q;
	uint32_t crcs[64];
	uint64_t s[64];
	struct stat st;
	int fd;

	cr_assert_eq(backend_alloc_slots(b, 64, s), 64);
	cr_assert_eq(backend_queue_open(b, 16, &q), 0);
	roundtrip(b, q, s, 64, 11, crcs);
	cr_assert_eq(unlink(path), 0);
	fd = open(path, O_CREAT | O_EXCL | O_WRONLY, 0644);
	cr_assert_geq(fd, 0);
	close(fd);
	verify(b, q, s, crcs, 64, 11, 0);
	roundtrip(b, q, s, 64, 12, NULL);
	backend_queue_close(q);
	backend_close(b);
	cr_assert_eq(stat(path, &st), 0, "not ours: kept");
}

Test(swapfile, bad_config, .timeout = 30)
{
	struct swapfile_spec sp = { .path = dir, .size = CLUSTER_BYTES };
	struct swapfile_spec two[2] = {
		{ .path = path_in_dir("first"), .size = CLUSTER_BYTES },
		{ .path = path_in_dir("missing/second"), .size = CLUSTER_BYTES },
	};
	struct swapfile_spec many[SWAP_MAX_FILES + 1];
	struct backend *b;

	cr_assert_eq(open_files(1000, &sp, 1, &b), -EINVAL);
	cr_assert_eq(open_files(4096 + 512, &sp, 1, &b), -EINVAL);
	cr_assert_eq(open_files(0, &sp, 1, &b), -EINVAL);
	cr_assert_eq(open_files(PS, &sp, 0, &b), -EINVAL);
	sp.size = CLUSTER_BYTES - 1;
	cr_assert_eq(open_files(PS, &sp, 1, &b), -EINVAL, "smaller than a cluster");
	sp.size = CLUSTER_BYTES;
	sp.path = NULL;
	cr_assert_eq(open_files(PS, &sp, 1, &b), -EINVAL);
	sp.path = "/nonexistent-upager-dir/swap";
	cr_assert_eq(open_files(PS, &sp, 1, &b), -ENOENT);
	for (unsigned i = 0; i <= SWAP_MAX_FILES; i++)
		many[i] = (struct swapfile_spec){ .path = dir, .size = CLUSTER_BYTES };
	cr_assert_eq(open_files(PS, many, SWAP_MAX_FILES + 1, &b), -EINVAL);
	/* A later file fails: the earlier one, created already, is removed. */
	cr_assert_eq(open_files(PS, two, 2, &b), -ENOENT);
	cr_assert_eq(dir_entries(dir), 0);
}

Test(swapfile, no_space_at_open, .timeout = 30)
{
	struct swapfile_spec sp = { .path = path_in_dir("big"), .size = 4 << 20 };
	struct backend *b;

	mount_private("tmpfs", "size=1m");
	cr_assert_eq(open_files(PS, &sp, 1, &b), -ENOSPC);
	cr_assert_eq(dir_entries(dir), 0, "nothing left behind");
	sp.path = dir;
	cr_assert_eq(open_files(PS, &sp, 1, &b), -ENOSPC);
	cr_assert_eq(dir_entries(dir), 0);
}

/* The disk fills up while pages are swapped out: a discarded cluster gave
 * its blocks back, something else took them, and writing there again must
 * fail with ENOSPC (not hang, not succeed). */
Test(swapfile, no_space_at_write, .timeout = 30)
{
	struct backend *b;
	struct backend_queue *q;
	char *buf = pages(64, PS);
	uint64_t s[128];
	struct backend_io *ios;
	int fd;

	mount_private("tmpfs", "size=1m");
	b = open1(dir, 2 * CLUSTER_BYTES, PS);   /* 512 KiB of the 1 MiB */
	cr_assert_eq(backend_alloc_slots(b, 128, s), 128);
	cr_assert_eq(backend_queue_open(b, 16, &q), 0);
	roundtrip(b, q, s, 128, 7, NULL);
	backend_discard(b, s, 64);
	cr_assert_eq(stats(b).holes_punched, 1);

	fd = open(path_in_dir("filler"), O_CREAT | O_WRONLY, 0600);
	memset(buf, 0xaa, PS);
	while (write(fd, buf, PS) == PS)
		;
	cr_assert_eq(errno, ENOSPC);
	close(fd);

	cr_assert_eq(backend_alloc_slots(b, 64, s), 64);
	ios = make_ios(64, s, buf, PS);
	cr_assert_eq(do_io(q, ios, 64, true), 0);
	for (int i = 0; i < 64; i++)
		cr_assert_eq(ios[i].result, -ENOSPC, "write %d: %d", i, ios[i].result);
	/* Where the blocks are still there, writing goes on working. */
	roundtrip(b, q, s + 64, 64, 10, NULL);
	backend_queue_close(q);
	backend_close(b);
	free(ios);
	free(buf);
}

Test(swapfile, discard_punches_whole_clusters, .timeout = 30)
{
	const char *path = path_in_dir("swap");
	struct backend *b = open1(path, 4 * CLUSTER_BYTES, PS);
	struct backend_queue *q;
	uint64_t s[256];
	uint32_t crcs[256];
	struct stat st0, st1;

	cr_assert_eq(backend_alloc_slots(b, 256, s), 256);
	cr_assert_eq(backend_queue_open(b, 32, &q), 0);
	roundtrip(b, q, s, 256, 8, crcs);
	cr_assert_eq(stat(path, &st0), 0);

	/* Half a cluster: nothing to punch yet. */
	backend_discard(b, s, 32);
	cr_assert_eq(stats(b).holes_punched, 0);
	/* The rest of it and two more whole clusters: one call for the three. */
	backend_discard(b, s + 32, 160);
	if (stats(b).punch_errors)
		cr_skip_test("the filesystem of /tmp cannot punch holes");
	cr_assert_eq(stats(b).holes_punched, 1);
	cr_assert_eq(stats(b).punch_errors, 0);
	cr_assert_eq(stats(b).clusters_free, 3);
	cr_assert_eq(stat(path, &st1), 0);
	cr_assert_eq(st1.st_size, st0.st_size);
	cr_assert_leq(st1.st_blocks * 512, st0.st_blocks * 512 - 3 * (long long)CLUSTER_BYTES,
		      "blocks %lld -> %lld", (long long)st0.st_blocks, (long long)st1.st_blocks);
	/* The last cluster kept its data. */
	verify(b, q, s + 192, crcs + 192, 64, 8, 192);
	backend_queue_close(q);
	backend_close(b);
}

Test(swapfile, registered_buffers, .timeout = 30)
{
	struct backend *b = open1(dir, 4 * CLUSTER_BYTES, PS);
	char *pool = pages(128, PS);
	struct iovec iov[2] = { { pool + 64 * PS, 64 * PS }, { pool, 32 * PS } };
	struct iovec overlap[2] = { { pool, 2 * PS }, { pool + PS, PS } };
	struct backend_queue *q, *q2;
	struct backend_io w[128], r[128];
	uint64_t s[128];

	cr_assert_eq(backend_queue_open(b, 32, &q), 0);
	cr_assert_eq(backend_queue_open(b, 32, &q2), 0);
	cr_assert_eq(backend_queue_register_buffers(q2, overlap, 2), -EINVAL);
	cr_assert_eq(backend_queue_register_buffers(q, iov, 2), 0);
	cr_assert_eq(backend_queue_register_buffers(q, iov, 2), -EBUSY);

	/* Pages 0..31 and 64..127 lie in registered buffers, 32..63 not. */
	cr_assert_eq(backend_alloc_slots(b, 128, s), 128);
	for (unsigned i = 0; i < 128; i++) {
		pattern_fill(pool + i * PS, PS, 4, i);
		w[i] = (struct backend_io){ .slot = s[i], .buf = pool + i * PS };
	}
	cr_assert_eq(do_io(q, w, 128, true), 0);
	memset(pool, 0, 128 * PS);
	for (unsigned i = 0; i < 128; i++) {
		cr_assert_eq(w[i].result, (int)PS);
		/* Read back into different pages: i's data lands in 127 - i. */
		r[i] = (struct backend_io){ .slot = s[i], .buf = pool + (127 - i) * PS,
					    .crc = w[i].crc };
	}
	cr_assert_eq(do_io(q, r, 128, false), 0);
	for (unsigned i = 0; i < 128; i++) {
		cr_assert_eq(r[i].result, (int)PS);
		cr_assert_eq(pattern_check(pool + (127 - i) * PS, PS, 4, i), -1, "page %u", i);
	}
	backend_queue_close(q2);
	backend_queue_close(q);
	backend_close(b);
	free(pool);
}

static bool readable(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };

	return poll(&p, 1, 0) == 1;
}

Test(swapfile, queue_limits_and_eventfd, .timeout = 30)
{
	struct backend *b = open1(dir, CLUSTER_BYTES, PS);
	char *buf = pages(5, PS);
	struct backend_io io[5], *done[8];
	struct backend_queue *q;
	uint64_t s[5];
	struct pollfd p;
	int efd;

	cr_assert_eq(backend_queue_open(b, 0, &q), -EINVAL);
	cr_assert_eq(backend_queue_open(b, 4, &q), 0);
	efd = backend_queue_fd(q);
	cr_assert_geq(efd, 0);
	cr_assert_eq(backend_alloc_slots(b, 5, s), 5);
	for (int i = 0; i < 5; i++)
		io[i] = (struct backend_io){ .slot = s[i], .buf = buf + i * PS };

	/* Nothing outstanding: reap does not wait, whatever min says. */
	cr_assert_eq(backend_reap(q, done, 8, 3), 0);
	/* Slots that are not there. */
	io[4].slot = swap_slot(0, SWAP_CLUSTER_SLOTS);
	cr_assert_eq(backend_queue_write(q, &io[4]), -EINVAL);
	io[4].slot = swap_slot(1, 0);
	cr_assert_eq(backend_queue_read(q, &io[4]), -EINVAL);
	/* Depth 4: the fifth waits for a reap. */
	for (int i = 0; i < 4; i++)
		cr_assert_eq(backend_queue_write(q, &io[i]), 0);
	io[4].slot = s[4];
	cr_assert_eq(backend_queue_write(q, &io[4]), -EAGAIN);
	cr_assert(!readable(efd));
	/* Reaping more than is outstanding submits what is queued and returns
	 * once all of it is done. */
	cr_assert_eq(backend_reap(q, done, 8, 8), 4);
	for (int i = 0; i < 4; i++)
		cr_assert_eq(done[i]->result, (int)PS);
	cr_assert(!readable(efd), "reap consumed the eventfd");

	/* The eventfd wakes a poller once a completion is there. */
	cr_assert_eq(backend_queue_write(q, &io[4]), 0);
	cr_assert_eq(backend_submit(q), 1);
	p = (struct pollfd){ .fd = efd, .events = POLLIN };
	cr_assert_eq(poll(&p, 1, 10000), 1);
	cr_assert_eq(backend_reap(q, done, 8, 0), 1);
	cr_assert_eq(done[0], &io[4]);
	cr_assert(!readable(efd));
	backend_queue_close(q);
	backend_close(b);
	free(buf);
}

/* Closing a queue with I/O in flight waits for it: the buffers may be
 * freed right after (ASan would see a late write). */
Test(swapfile, close_queue_with_io_in_flight, .timeout = 30)
{
	struct backend *b = open1(dir, 4 * CLUSTER_BYTES, PS);
	char *buf = pages(64, PS);
	struct backend_queue *q;
	struct backend_io *ios;
	uint64_t s[64];

	cr_assert_eq(backend_alloc_slots(b, 64, s), 64);
	ios = make_ios(64, s, buf, PS);
	cr_assert_eq(backend_queue_open(b, 64, &q), 0);
	for (int i = 0; i < 32; i++)
		cr_assert_eq(backend_queue_write(q, &ios[i]), 0);
	cr_assert_eq(backend_submit(q), 32);
	for (int i = 32; i < 64; i++)
		cr_assert_eq(backend_queue_read(q, &ios[i]), 0);
	backend_queue_close(q);
	free(ios);
	free(buf);
	backend_close(b);
}

/* Consecutive slots queued together go to the device as one request, in
 * both directions, and every page still gets its own result. */
Test(swapfile, consecutive_slots_merge, .timeout = 30)
{
	struct backend *b = open1(dir, 2 * CLUSTER_BYTES, PS);
	unsigned n = 64;
	char *out = pages(n, PS);
	uint64_t s[64];
	uint32_t crcs[64];
	struct backend_io *w;
	struct backend_queue *q;
	struct swapfile_stats before, after;

	cr_assert_eq(backend_alloc_slots(b, n, s), (int)n);
	for (unsigned i = 1; i < n; i++)
		cr_assert_eq(s[i], s[i - 1] + 1, "slots not consecutive");
	cr_assert_eq(backend_queue_open(b, 128, &q), 0);
	for (unsigned i = 0; i < n; i++)
		pattern_fill(out + (size_t)i * PS, PS, 4, i);
	w = make_ios(n, s, out, PS);
	before = stats(b);
	cr_assert_eq(do_io(q, w, n, true), 0);
	after = stats(b);
	cr_assert_eq(after.transfers - before.transfers, n);
	cr_assert_eq(after.requests - before.requests, 1, "%llu requests for %u pages",
		     (unsigned long long)(after.requests - before.requests), n);
	for (unsigned i = 0; i < n; i++) {
		cr_assert_eq(w[i].result, (int)PS, "write %u: %d", i, w[i].result);
		crcs[i] = w[i].crc;
	}
	before = stats(b);
	verify(b, q, s, crcs, n, 4, 0);
	after = stats(b);
	cr_assert_eq(after.requests - before.requests, 1, "the read back was not merged");
	backend_queue_close(q);
	backend_close(b);
	free(w);
	free(out);
}

/* A forked child's backend (swapfile_config.inherit) reads the parent's
 * pages at the parent's slots, allocates only in files of its own, and
 * never frees or punches the parent's slots. */
Test(swapfile, inherit_reads_the_parent_never_frees_its_slots, .timeout = 30)
{
	const char *ppath = path_in_dir("parent");
	struct backend *parent = open1(ppath, 4 * CLUSTER_BYTES, PS), *child;
	struct swapfile_spec sp = { .path = dir, .size = 2 * CLUSTER_BYTES };
	struct swapfile_config cfg = { .page_size = PS, .count = 1, .files = &sp, .inherit = parent };
	struct backend_queue *pq, *cq;
	uint64_t s[128], own[64];
	uint32_t crcs[128], own_crcs[64];
	struct stat st0, st1;

	cr_assert_eq(backend_alloc_slots(parent, 128, s), 128);
	cr_assert_eq(backend_queue_open(parent, 32, &pq), 0);
	roundtrip(parent, pq, s, 128, 5, crcs);
	cr_assert_eq(stat(ppath, &st0), 0);

	cr_assert_eq(swapfile_open(&cfg, &child), 0);
	cr_assert_eq(backend_queue_open(child, 32, &cq), 0);
	verify(child, cq, s, crcs, 128, 5, 0);
	cr_assert_eq(stats(child).slots_total, 2 * SWAP_CLUSTER_SLOTS, "only its own file counts");
	/* Its own slots lie in its own file, after the parent's. */
	cr_assert_eq(backend_alloc_slots(child, 64, own), 64);
	for (unsigned i = 0; i < 64; i++)
		cr_assert_eq(swap_slot_file(own[i]), 1, "slot %#llx", (unsigned long long)own[i]);
	roundtrip(child, cq, own, 64, 6, own_crcs);
	/* Freeing the parent's slots in the child changes nothing there. */
	backend_discard(child, s, 128);
	backend_free_slots(child, s, 64);
	cr_assert_eq(stats(child).bad_frees, 0);
	cr_assert_eq(stats(child).holes_punched, 0);
	cr_assert_eq(stat(ppath, &st1), 0);
	cr_assert_eq(st1.st_blocks, st0.st_blocks, "the parent's file was punched");
	verify(parent, pq, s, crcs, 128, 5, 0);
	verify(child, cq, s, crcs, 128, 5, 0);
	/* Its own slots free as usual. */
	backend_discard(child, own, 64);
	cr_assert_eq(stats(child).slots_used, 0);
	backend_queue_close(cq);
	backend_close(child);
	backend_queue_close(pq);
	backend_close(parent);
}
