/*
 * Paging when things go wrong: bad configuration is refused with a clear
 * error; a corrupt or truncated swap file never returns wrong data (whoever
 * touches a lost page gets SIGBUS, every other page reads back right); a
 * full disk keeps pages in memory and loses nothing; a deleted swap file
 * changes nothing; a filesystem without O_DIRECT is used buffered, and the
 * log says so once; a budget above the memory cgroup's limit is warned of;
 * a memory cgroup at its limit delays swap-ins and loses nothing.
 */
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>

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

/* A context paging through the swap file `path` (made in a new dir), and a
 * region of four times the limit filled with generation gen, at least half
 * of it paged out. */
static upg_region *paged_out(char *path, size_t pathlen, uint32_t policy, uint64_t mask,
			     uint64_t gen, upg_ctx **ctx)
{
	struct upg_swap_file sf = { .path = path, .size = 64 * MiB };
	size_t ps = itest_page();
	uint64_t pages = 4 * LIMIT / ps;
	struct upg_stats st;
	upg_region *r;
	int ret;

	features_or_skip();
	make_dir();
	snprintf(path, pathlen, "%s/swap", dir);
	ret = create(LIMIT, &sf, 1, policy, mask, ctx);
	cr_assert_eq(ret, 0, "upg_ctx_create: %s", upg_strerror(ret));
	r = region_new(*ctx, 4 * LIMIT, 0);
	fill_pages(upg_region_addr(r), ps, 0, pages, gen);
	stats_wait(*ctx, st, st.swap_outs >= pages / 2, 10000);
	cr_assert_geq(st.swap_outs, pages / 2, "the region was not paged out");
	return r;
}

/* Pages are written, paged out, then the swap file is overwritten behind
 * upager's back: reading back, each page is either right or raises SIGBUS
 * (a crc mismatch poisons it), never wrong. */
static void corrupt_swap(uint64_t mask)
{
	char path[4200];
	size_t ps = itest_page();
	uint64_t pages = 4 * LIMIT / ps, size = 64 * MiB;
	uint64_t sigbus = 0, wrong = 0;
	struct upg_stats st;
	upg_ctx *ctx = NULL;
	upg_region *r = paged_out(path, sizeof(path), UPG_POLICY_FIFO, mask, 3, &ctx);
	uint8_t *base = upg_region_addr(r);
	uint8_t *lost = calloc(pages, 1);
	char junk[65536];
	int fd;

	fd = open(path, O_WRONLY);
	cr_assert_geq(fd, 0, "open %s: %s", path, strerror(errno));
	memset(junk, 0xa5, sizeof(junk));
	for (off_t off = 0; off < (off_t)size; off += (off_t)sizeof(junk))
		cr_assert_eq(pwrite(fd, junk, sizeof(junk), off), (ssize_t)sizeof(junk));
	fsync(fd);
	close(fd);

	cr_assert_not_null(lost);
	read_back(base, ps, pages, 3, lost, &sigbus, &wrong);
	free(lost);
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

/* ------------------------------------------------------------------------
 * The log, captured: upager writes it to fd 2.
 */
static int log_saved = -1, log_fd = -1;

static void log_capture(void)
{
	fflush(stderr);
	log_fd = memfd_create("upager-log", 0);
	cr_assert_geq(log_fd, 0, "memfd_create: %s", strerror(errno));
	log_saved = dup(2);
	dup2(log_fd, 2);
}

/* What was logged so far (static storage). */
static const char *log_text(void)
{
	static char text[1 << 16];
	ssize_t n = pread(log_fd, text, sizeof(text) - 1, 0);

	text[n > 0 ? n : 0] = 0;
	return text;
}

/* Stop capturing; returns what was logged (static storage). */
static const char *log_captured(void)
{
	const char *text;

	dup2(log_saved, 2);
	close(log_saved);
	text = log_text();
	close(log_fd);
	/* Shown again, for whoever reads the test's output. */
	fputs(text, stderr);
	return text;
}

/* Wait up to ms for the captured log to say what: a runtime thread counts
 * an error before it logs it. */
static void log_wait(const char *what, int ms)
{
	for (int waited = 0; waited < ms && !strstr(log_text(), what); waited += 10)
		usleep(10000);
}

static unsigned count_of(const char *text, const char *what)
{
	unsigned n = 0;

	for (const char *p = text; (p = strstr(p, what)); p += strlen(what))
		n++;
	return n;
}

/* ------------------------------------------------------------------------
 * A filesystem of the test's own (tmpfs of a given size, or ramfs).
 */
static char mnt[4096];

static void unmount_fs(void)
{
	if (mnt[0]) {
		umount2(mnt, MNT_DETACH);
		rmdir(mnt);
		mnt[0] = 0;
	}
}

/* In a mount namespace of the test's own (each test is a process): the
 * mount goes away with it, whatever happens. */
static void mount_fs(const char *type, const char *opts)
{
	if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		cr_skip_test("no mount namespace of the test's own (%s): needs root",
			     strerror(errno));
	snprintf(mnt, sizeof(mnt), "%s/upager-mnt-XXXXXX",
		 getenv("TMPDIR") ? getenv("TMPDIR") : "/var/tmp");
	cr_assert_not_null(mkdtemp(mnt), "mkdtemp: %s", strerror(errno));
	if (mount(type, mnt, type, 0, opts) < 0) {
		int err = errno;

		rmdir(mnt);
		mnt[0] = 0;
		cr_skip_test("cannot mount a %s of the test's own (%s): needs root", type,
			     strerror(err));
	}
}

/* Write a file in dir until the filesystem is full. Returns its path. */
static const char *fill_fs(const char *fsdir)
{
	static char path[4200];
	static char chunk[65536];
	int fd;
	ssize_t n;

	snprintf(path, sizeof(path), "%s/filler", fsdir);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	cr_assert_geq(fd, 0, "open %s: %s", path, strerror(errno));
	memset(chunk, 0x5a, sizeof(chunk));
	for (size_t len = sizeof(chunk); len >= 4096;) {
		n = write(fd, chunk, len);
		if (n < 0) {
			cr_assert_eq(errno, ENOSPC, "filling %s: %s", path, strerror(errno));
			len /= 2;
		}
	}
	close(fd);
	return path;
}

/*
 * The disk fills up under a running context: the swap file's space was
 * given back (hole punching) when its pages died, and another file took it.
 * Write-backs fail; pages stay in memory (beyond the limit: nothing else can
 * hold them), every page reads back right, the log says why. Once the space
 * is back, paging goes on under the limit.
 */
Test(swap_errors, disk_full_keeps_pages, .timeout = 120, .fini = unmount_fs)
{
	struct upg_swap_file sf = { .size = 2 * LIMIT };
	size_t ps = itest_page();
	uint64_t pages = 4 * LIMIT / ps, bpages = 2 * LIMIT / ps;
	struct upg_stats st;
	upg_ctx *ctx = NULL;
	upg_region *a, *b;
	const char *filler, *log;
	uint8_t *base;
	int ret;

	features_or_skip();
	mount_fs("tmpfs", "size=9m,mode=0700");
	sf.path = mnt;
	log_capture();
	ret = create(LIMIT, &sf, 1, UPG_POLICY_FIFO, 0, &ctx);
	cr_assert_eq(ret, 0, "upg_ctx_create: %s", upg_strerror(ret));

	/* Every slot written once, then freed: its space goes back to tmpfs,
	 * and another file takes it. Half again the swap file's size beyond the
	 * limit, so that it fills up (pages stay) whatever reclaim's pace: with
	 * exactly its size beyond, whether reclaim asked for one slot more
	 * depended on timing. */
	a = region_new(ctx, 4 * LIMIT, 0);
	fill_pages(upg_region_addr(a), ps, 0, pages, 1);
	stats_wait(ctx, st, st.swap_outs >= sf.size / ps, 10000);
	cr_assert_geq(st.swap_outs, sf.size / ps, "the swap file was not filled");
	upg_region_destroy(a);
	filler = fill_fs(mnt);

	b = region_new(ctx, 2 * LIMIT, 0);
	base = upg_region_addr(b);
	fill_pages(base, ps, 0, bpages, 2);
	cr_assert_eq(check_pages(base, ps, 0, bpages, 2), -1, "a page read back wrong, disk full");
	st = stats_of(ctx);
	cr_assert_gt(st.write_errors, 0, "no write-back failed on a full disk");
	log_wait("No space left on device", 5000);
	log_wait("swap refuses every write", 5000);
	log = log_captured();
	cr_assert_gt(st.resident_bytes + st.cooling_bytes, LIMIT,
		     "pages that could not be written must stay in memory");
	cr_assert(strstr(log, "the swap files are full"), "the log does not say swap is full");
	cr_assert(strstr(log, "write-back failed"), "the log does not say that write-back failed");
	cr_assert(strstr(log, "No space left on device"), "the log does not say why");
	cr_assert(strstr(log, "swap refuses every write"), "the log does not say swap is stuck");

	/* Space again: write-back resumes. (How soon the context is back
	 * under the limit depends on the machine: logged, not asserted.) */
	{
		uint64_t outs = st.swap_outs;

		cr_assert_eq(unlink(filler), 0);
		for (int pass = 0; pass < 3; pass++)
			cr_assert_eq(check_pages(base, ps, 0, bpages, 2), -1,
				     "a page read back wrong after");
		stats_wait(ctx, st, st.swap_outs > outs, 20000);
		cr_assert_gt(st.swap_outs, outs, "no write-back once the disk has room again");
		cr_log_info("after the disk had room again: %llu KiB held, limit %llu KiB",
			    (unsigned long long)((st.resident_bytes + st.cooling_bytes) / KiB),
			    (unsigned long long)(LIMIT / KiB));
	}
	cr_assert_eq(check_pages(base, ps, 0, bpages, 2), -1, "a page read back wrong at the end");
	upg_region_destroy(b);
	upg_ctx_destroy(ctx);
}

/* The filesystem has no O_DIRECT (ramfs): the swap file is used buffered,
 * the log says so once, and paging works all the same. */
Test(swap_errors, buffered_without_o_direct, .timeout = 120, .fini = unmount_fs)
{
	struct upg_swap_file sf = { .size = 32 * MiB };
	size_t ps = itest_page();
	uint64_t pages = 4 * LIMIT / ps;
	char probe[4200];
	struct upg_stats st;
	upg_ctx *ctx = NULL;
	upg_region *r;
	const char *log;
	uint8_t *base;
	int fd, ret;

	features_or_skip();
	mount_fs("ramfs", "mode=0700");
	snprintf(probe, sizeof(probe), "%s/probe", mnt);
	fd = open(probe, O_RDWR | O_CREAT | O_DIRECT, 0600);
	if (fd >= 0) {
		close(fd);
		unlink(probe);
		cr_skip_test("this kernel's ramfs takes O_DIRECT: no filesystem at hand lacks it");
	}
	unlink(probe);
	sf.path = mnt;
	log_capture();
	ret = create(LIMIT, &sf, 1, UPG_POLICY_COOLING, 0, &ctx);
	if (ret < 0)
		log_captured();
	cr_assert_eq(ret, 0, "upg_ctx_create: %s", upg_strerror(ret));
	r = region_new(ctx, 4 * LIMIT, 0);
	base = upg_region_addr(r);
	fill_pages(base, ps, 0, pages, 5);
	for (int pass = 0; pass < 2; pass++)
		cr_assert_eq(check_pages(base, ps, 0, pages, 5), -1, "a page read back wrong");
	st = stats_of(ctx);
	log = log_captured();
	cr_assert_gt(st.swap_ins, 0, "nothing was read back from swap");
	cr_assert_eq(count_of(log, "no O_DIRECT"), 1, "the log must say once that I/O is "
		     "buffered; it says so %u times", count_of(log, "no O_DIRECT"));
	upg_region_destroy(r);
	upg_ctx_destroy(ctx);
}

/* The swap file is truncated under a running context: pages that were only
 * there are lost and say so (SIGBUS, read errors), none reads back wrong,
 * nothing hangs, and paging goes on for the rest. */
Test(swap_errors, truncated_swap_file, .timeout = 120)
{
	char path[4200];
	size_t ps = itest_page();
	uint64_t pages = 4 * LIMIT / ps;
	uint64_t sigbus = 0, wrong = 0;
	uint8_t *lost = calloc(pages, 1);
	struct upg_stats st;
	upg_ctx *ctx = NULL;
	upg_region *r = paged_out(path, sizeof(path), UPG_POLICY_FIFO, 0, 7, &ctx);
	uint8_t *base = upg_region_addr(r);

	cr_assert_not_null(lost);
	cr_assert_eq(truncate(path, 0), 0, "truncate %s: %s", path, strerror(errno));

	read_back(base, ps, pages, 7, lost, &sigbus, &wrong);
	st = stats_of(ctx);
	cr_assert_eq(wrong, 0, "%llu pages read back wrong data", (unsigned long long)wrong);
	cr_assert_gt(sigbus, 0, "no lost page was reported");
	cr_assert_gt(st.read_errors, 0);
	cr_assert_lt(sigbus, pages, "pages still in memory must read back right");

	/* The rest keeps paging: rewritten, paged out and in again. */
	for (uint64_t p = 0; p < pages; p++)
		if (!lost[p])
			pattern_fill(base + p * ps, ps, 8, p);
	sigbus = 0;
	read_back(base, ps, pages, 8, lost, &sigbus, &wrong);
	cr_assert_eq(sigbus + wrong, 0, "after the truncation, %llu pages lost, %llu wrong",
		     (unsigned long long)sigbus, (unsigned long long)wrong);
	upg_region_destroy(r);
	upg_ctx_destroy(ctx);
	unlink(path);
	rmdir(dir);
	free(lost);
}

/* The swap file is deleted under a running context: upager holds it open,
 * so nothing is lost and paging goes on. */
Test(swap_errors, deleted_swap_file, .timeout = 120)
{
	char path[4200];
	size_t ps = itest_page();
	uint64_t pages = 4 * LIMIT / ps;
	struct upg_stats st;
	upg_ctx *ctx = NULL;
	upg_region *r = paged_out(path, sizeof(path), UPG_POLICY_COOLING, 0, 9, &ctx);
	uint8_t *base = upg_region_addr(r);

	cr_assert_eq(unlink(path), 0, "unlink %s: %s", path, strerror(errno));
	for (int pass = 0; pass < 2; pass++) {
		cr_assert_eq(check_pages(base, ps, 0, pages, 9 + pass), -1,
			     "a page read back wrong after the swap file was deleted");
		fill_pages(base, ps, 0, pages, 10 + pass);
	}
	cr_assert_eq(check_pages(base, ps, 0, pages, 11), -1, "a page read back wrong");
	st = stats_of(ctx);
	cr_assert_eq(st.read_errors + st.write_errors + st.poisoned, 0,
		     "errors after deleting an open swap file");
	upg_region_destroy(r);
	upg_ctx_destroy(ctx);
	rmdir(dir);
}

/* ------------------------------------------------------------------------
 * A budget above the memory limit of the process's cgroup is said at the
 * start: the kernel would page upager's own memory behind it. The test
 * moves itself into a memory cgroup of its own (v1 or v2, whichever the
 * machine has) and back out.
 */
static char cg_dir[4200], cg_home[4096];

/* This process's group directory in the memory hierarchy, into out. */
static bool own_group(char *out, size_t len, bool *v2)
{
	char line[4096];
	FILE *f = fopen("/proc/self/cgroup", "r");
	bool found = false;

	if (!f)
		return false;
	while (!found && fgets(line, sizeof(line), f)) {
		char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;

		if (!c2)
			continue;
		c2[strcspn(c2, "\n")] = 0;
		*c2 = 0;
		if (access("/sys/fs/cgroup/memory", F_OK) == 0 && strstr(c1 + 1, "memory")) {
			*v2 = false;
			found = snprintf(out, len, "/sys/fs/cgroup/memory%s", c2 + 1) < (int)len;
		} else if (access("/sys/fs/cgroup/cgroup.controllers", F_OK) == 0 &&
			   !strcmp(line, "0") && c2 == c1 + 1) {
			*v2 = true;
			found = snprintf(out, len, "/sys/fs/cgroup%s", c2 + 1) < (int)len;
		}
	}
	fclose(f);
	return found;
}

static bool write_file(const char *dir_, const char *name, const char *value)
{
	char path[8300];
	int fd;
	bool ok;

	snprintf(path, sizeof(path), "%s/%s", dir_, name);
	fd = open(path, O_WRONLY);
	if (fd < 0)
		return false;
	ok = write(fd, value, strlen(value)) == (ssize_t)strlen(value);
	close(fd);
	return ok;
}

static void leave_cgroup(void)
{
	char pid[32];

	if (!cg_dir[0])
		return;
	snprintf(pid, sizeof(pid), "%d", getpid());
	write_file(cg_home, "cgroup.procs", pid);
	rmdir(cg_dir);
	cg_dir[0] = 0;
}

Test(swap_errors, budget_above_cgroup_limit_warns, .timeout = 60, .fini = leave_cgroup)
{
	static const char warning[] = "above 7/8 of this process's memory cgroup limit";
	struct upg_swap_file sf = { .size = 64 * MiB };
	char path[4200], pid[32], limit[32];
	upg_ctx *ctx = NULL;
	const char *text;
	bool v2 = false;

	features_or_skip();
	if (!own_group(cg_home, sizeof(cg_home), &v2))
		cr_skip_test("no memory cgroup hierarchy mounted under /sys/fs/cgroup");
	/* v2: the group's controllers come from its parent's subtree. */
	if (v2)
		write_file(cg_home, "cgroup.subtree_control", "+memory");
	snprintf(cg_dir, sizeof(cg_dir), "%s/upager-test.%d", cg_home, getpid());
	if (mkdir(cg_dir, 0755) < 0) {
		int err = errno;

		cg_dir[0] = 0;
		cr_skip_test("cannot make a memory cgroup in %s: %s", cg_home, strerror(err));
	}
	snprintf(limit, sizeof(limit), "%llu", (unsigned long long)(256 * MiB));
	snprintf(pid, sizeof(pid), "%d", getpid());
	if (!write_file(cg_dir, v2 ? "memory.max" : "memory.limit_in_bytes", limit) ||
	    !write_file(cg_dir, "cgroup.procs", pid)) {
		int err = errno;

		leave_cgroup();
		cr_skip_test("cannot limit or join a memory cgroup under %s (%s): no memory "
			     "controller there", cg_home, strerror(err));
	}

	make_dir();
	snprintf(path, sizeof(path), "%s/swap", dir);
	sf.path = path;
	log_capture();
	cr_assert_eq(create(512 * MiB, &sf, 1, 0, 0, &ctx), 0, "a budget above the limit still runs");
	upg_ctx_destroy(ctx);
	ctx = NULL;
	text = log_captured();
	cr_assert(strstr(text, warning), "no warning for a 512 MiB budget in a 256 MiB cgroup");
	cr_assert(strstr(text, "(256 MiB)"), "the warning does not give the cgroup's limit");

	log_capture();
	cr_assert_eq(create(128 * MiB, &sf, 1, 0, 0, &ctx), 0);
	upg_ctx_destroy(ctx);
	text = log_captured();
	cr_assert_null(strstr(text, warning), "a warning for a budget well below the limit");
	unlink(path);
	rmdir(dir);
}

/*
 * A memory cgroup at its limit refuses memory to swap-ins: UFFDIO_COPY, or
 * the read itself, fails with ENOMEM. Both are retried, and every page
 * reads back right once memory frees up. Regressions: a failed copy was
 * taken for a vanished range, and the page read back as zeros; a failed
 * read poisoned the page. cgroup v1 only: its
 * OOM killer can be turned off, so that an allocation in a page fault waits
 * at the limit rather than killing the test; a process outside the group
 * holds the limit down for a while, then lifts it.
 */
#define SQUEEZE_MS 1500

static pid_t releaser = -1;

static void squeeze_fini(void)
{
	if (releaser > 0) {
		kill(releaser, SIGKILL);
		waitpid(releaser, NULL, 0);
		releaser = -1;
	}
	if (cg_dir[0])
		write_file(cg_dir, "memory.limit_in_bytes", "-1");
	leave_cgroup();
}

static long long read_ll(const char *dir_, const char *name)
{
	char path[8300], buf[64] = "";
	long long v = -1;
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir_, name);
	f = fopen(path, "r");
	if (f) {
		if (fgets(buf, sizeof(buf), f))
			v = atoll(buf);
		fclose(f);
	}
	return v;
}

/* The releaser, outside the group: on a byte from go, hold the group's limit
 * just above its usage for SQUEEZE_MS, then lift it. Exits 0 if it held. */
static void release_later(int go)
{
	char c;
	bool held = false;

	if (read(go, &c, 1) != 1)
		_exit(2);
	for (int i = 0; i < 100 && !held; i++) {
		char v[32];

		snprintf(v, sizeof(v), "%lld", read_ll(cg_dir, "memory.usage_in_bytes") + 64 * 1024);
		held = write_file(cg_dir, "memory.limit_in_bytes", v);
	}
	usleep(SQUEEZE_MS * 1000);
	write_file(cg_dir, "memory.limit_in_bytes", "-1");
	_exit(held ? 0 : 3);
}

Test(swap_errors, cgroup_at_limit_retries_swap_ins, .timeout = 120, .fini = squeeze_fini)
{
	char path[4200], pid[32];
	size_t ps = itest_page();
	uint64_t pages = 4 * LIMIT / ps;
	struct upg_stats before, st;
	int go[2], status;
	upg_ctx *ctx;
	upg_region *r;
	bool v2 = false;

	features_or_skip();
	if (!own_group(cg_home, sizeof(cg_home), &v2))
		cr_skip_test("no memory cgroup hierarchy mounted under /sys/fs/cgroup");
	if (v2)
		cr_skip_test("needs cgroup v1, whose OOM killer can be turned off for a group");
	snprintf(cg_dir, sizeof(cg_dir), "%s/upager-squeeze.%d", cg_home, getpid());
	if (mkdir(cg_dir, 0755) < 0) {
		int err = errno;

		cg_dir[0] = 0;
		cr_skip_test("cannot make a memory cgroup in %s: %s", cg_home, strerror(err));
	}
	/* No kernel swap for the group: at the limit its charges must fail. */
	write_file(cg_dir, "memory.swappiness", "0");
	if (!write_file(cg_dir, "memory.oom_control", "1")) {
		squeeze_fini();
		cr_skip_test("cannot turn the OOM killer off in a memory cgroup under %s", cg_home);
	}
	cr_assert_eq(pipe(go), 0);
	releaser = fork();
	cr_assert_geq(releaser, 0, "fork: %s", strerror(errno));
	if (releaser == 0)
		release_later(go[0]);
	close(go[0]);
	snprintf(pid, sizeof(pid), "%d", getpid());
	cr_assert(write_file(cg_dir, "cgroup.procs", pid), "cannot join %s: %s", cg_dir,
		  strerror(errno));

	r = paged_out(path, sizeof(path), 0, 0, 1, &ctx);
	before = stats_of(ctx);
	cr_assert_eq(write(go[1], "g", 1), 1);
	close(go[1]);
	/* Read everything back, twice, from when the limit is held. */
	for (int round = 0; round < 2; round++)
		cr_assert_eq(check_pages(upg_region_addr(r), ps, 0, pages, 1), -1,
			     "a page read back wrong in round %d", round);
	cr_assert_eq(waitpid(releaser, &status, 0), releaser);
	releaser = -1;
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		  "the releaser could not hold the limit (status %#x)", status);
	st = stats_of(ctx);
	cr_assert_eq(st.errors, before.errors, "%llu errors",
		     (unsigned long long)(st.errors - before.errors));
	cr_assert_eq(st.poisoned, 0);
	upg_region_destroy(r);
	upg_ctx_destroy(ctx);
	unlink(path);
	rmdir(dir);
	/* Refused pages show as copies or reads retried. Under a sanitizer
	 * the runtime's own faults may wait out the whole squeeze instead. */
	squeeze_fini();       /* a skip runs no .fini */
	if (st.ioctl_retries + st.read_retries == before.ioctl_retries + before.read_retries)
		cr_skip_test("the limit refused no swap-in (every thread waited at it): "
			     "nothing was tested");
	cr_log_info("at the limit: %llu copies and %llu reads retried",
		    (unsigned long long)(st.ioctl_retries - before.ioctl_retries),
		    (unsigned long long)(st.read_retries - before.read_retries));
}
