/*
 * test_datafile_backend.c - the data-file backend on its own: pages at their
 * fixed places, reads past the end, a read-only file truncated under it,
 * slots it refuses, and file numbers.
 *
 * Each test works in a directory of its own under $TMPDIR, else /var/tmp
 * (O_DIRECT wants a disk filesystem; /tmp is often a tmpfs).
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "datafile.h"
#include "pattern.h"

#define PS 4096u

static char dir[4096], path[4200];

static void setup(void)
{
	snprintf(dir, sizeof(dir), "%s/upg-datafile-XXXXXX",
		 getenv("TMPDIR") ? getenv("TMPDIR") : "/var/tmp");
	cr_assert_not_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/data", dir);
}

static void teardown(void)
{
	unlink(path);
	rmdir(dir);
}

TestSuite(datafile_backend, .init = setup, .fini = teardown);

/* One transfer of page `page` of file `file` through q; returns its result. */
static int xfer(struct backend_queue *q, unsigned file, uint64_t page, void *buf, bool write)
{
	struct backend_io io = { .slot = datafile_slot(file, page), .buf = buf }, *done;
	int ret = write ? backend_queue_write(q, &io) : backend_queue_read(q, &io);

	if (ret < 0)
		return ret;
	cr_assert_geq(backend_submit(q), 0);
	cr_assert_eq(backend_reap(q, &done, 1, 1), 1);
	cr_assert_eq(done, &io);
	return io.result;
}

/* A backend with one queue of depth 8, and a page-sized I/O buffer. */
static struct backend *b;
static struct backend_queue *q;
static uint8_t *buf;

static void open_backend(void)
{
	cr_assert_eq(datafile_open(PS, &b), 0);
	cr_assert_eq(backend_queue_open(b, 8, &q), 0);
	buf = aligned_alloc(4096, PS);
	cr_assert_not_null(buf);
}

static void close_backend(void)
{
	backend_queue_close(q);
	backend_close(b);
	free(buf);
}

Test(datafile_backend, pages_at_their_places, .timeout = 30)
{
	unsigned file;
	int fd;

	open_backend();
	/* At an offset of two pages into a new file. */
	cr_assert_eq(datafile_attach(b, path, 2 * PS, 16 * PS, false, true, &file), 0);
	for (uint64_t p = 0; p < 16; p += 3) {
		pattern_fill(buf, PS, 9, p);
		cr_assert_eq(xfer(q, file, p, buf, true), (int)PS);
	}
	/* Where the file says they are, and back through the backend. */
	fd = open(path, O_RDONLY);
	cr_assert_geq(fd, 0);
	for (uint64_t p = 0; p < 16; p += 3) {
		cr_assert_eq(pread(fd, buf, PS, (off_t)((2 + p) * PS)), (ssize_t)PS);
		cr_assert_eq(pattern_check(buf, PS, 9, p), -1, "page %llu", (unsigned long long)p);
		memset(buf, 0, PS);
		cr_assert_eq(xfer(q, file, p, buf, false), (int)PS);
		cr_assert_eq(pattern_check(buf, PS, 9, p), -1);
	}
	close(fd);
	/* Past the end of a read-write file: zeros. */
	memset(buf, 0xff, PS);
	cr_assert_eq(xfer(q, file, 100, buf, false), (int)PS);
	cr_assert(all_zero(buf, PS));
	/* Nothing to allocate or discard: a fixed layout. */
	cr_assert_eq(backend_alloc_slots(b, 1, &(uint64_t){ 0 }), -EOPNOTSUPP);
	close_backend();
}

Test(datafile_backend, readonly_truncated_is_eio, .timeout = 30)
{
	unsigned file;
	int fd = open(path, O_CREAT | O_RDWR, 0644);

	cr_assert(fd >= 0 && ftruncate(fd, 8 * PS) == 0);
	open_backend();
	cr_assert_eq(datafile_attach(b, path, 0, 16 * PS, true, false, &file), -EINVAL,
		     "a read-only file too short for the range");
	cr_assert_eq(datafile_attach(b, path, 0, 8 * PS, true, false, &file), 0);
	cr_assert_eq(xfer(q, file, 7, buf, false), (int)PS);
	cr_assert_eq(ftruncate(fd, 4 * PS), 0);
	cr_assert_eq(xfer(q, file, 7, buf, false), -EIO);
	cr_assert_lt(xfer(q, file, 1, buf, true), 0, "a write to a read-only file");
	close(fd);
	close_backend();
}

Test(datafile_backend, refused, .timeout = 30)
{
	unsigned file;

	cr_assert_eq(datafile_open(1000, &b), -EINVAL);
	open_backend();
	cr_assert_eq(datafile_attach(b, path, 0, PS, false, false, &file), -ENOENT);
	cr_assert_eq(datafile_attach(b, path, 100, PS, false, true, &file), -EINVAL);
	cr_assert_eq(datafile_attach(b, dir, 0, PS, false, false, &file), -EISDIR);
	cr_assert_eq(datafile_attach(b, path, 0, PS, false, true, &file), 0);
	/* A swap slot (no tag), and a file number never attached. */
	cr_assert_eq(backend_queue_read(q, &(struct backend_io){ .slot = 5, .buf = buf }), -EINVAL);
	cr_assert_eq(xfer(q, file + 1, 0, buf, false), -EBADF);
	datafile_detach(b, file);
	cr_assert_eq(xfer(q, file, 0, buf, false), -EBADF);
	cr_assert_eq(datafile_sync(b, file), -EBADF);
	/* File numbers are reused. */
	cr_assert_eq(datafile_attach(b, path, 0, PS, false, false, &file), 0);
	cr_assert_eq(file, 0);
	cr_assert_eq(datafile_sync(b, file), 0);
	close_backend();
}
