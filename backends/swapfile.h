/*
 * swapfile.h - the swap-file backend: pages in one or more files, placed by
 * the cluster allocator (swap_alloc.h), moved by io_uring, checked by crc32c.
 *
 * Files are opened with O_DIRECT where the filesystem allows it (buffered
 * I/O otherwise, with one warning per file) and preallocated. Each queue is
 * an io_uring of its own with the files registered (fixed files) and an
 * eventfd for completions; queue_register_buffers() registers the caller's
 * buffers, and I/O into them uses READ_FIXED/WRITE_FIXED. No SQPOLL: it
 * would burn one of few CPUs. queue_write() stores the crc32c of the page
 * in io->crc; reap() checks a read page against the io->crc the caller set
 * (-EBADMSG on mismatch). A short transfer (a file truncated under us)
 * completes with -EIO. Nothing on the queue path allocates or locks.
 *
 * Slots are swap_alloc.h slot numbers: file index (the position in
 * swapfile_config.files) in the high bits, page in the file below.
 */
#ifndef UPG_SWAPFILE_H
#define UPG_SWAPFILE_H

#include <stdint.h>

#include "backend.h"
#include "swap_alloc.h"

struct swapfile_spec {
	/* A directory: an unlinked O_TMPFILE file is made in it. Anything
	 * else names the file itself: created (removed again at close) or, if
	 * it exists, truncated; either way given mode 0600. */
	const char *path;
	uint64_t size;          /* bytes, rounded down to whole clusters */
	int priority;           /* higher is used first; equal ones are striped */
};

struct swapfile_config {
	uint32_t page_size;     /* a multiple of 4096 */
	unsigned count;         /* 1..SWAP_MAX_FILES, less inherit's files */
	const struct swapfile_spec *files;
	/* In the child of a fork: the parent's swap files (its backend, as the
	 * child got it). The child reads its pages at the parent's slots and
	 * never allocates, frees or punches there (the parent keeps them until
	 * the child is done: fork.c); its own files come after. */
	struct backend *inherit;
};

struct swapfile_stats {
	uint64_t slots_total;
	uint64_t slots_used;
	uint64_t clusters_free;
	uint64_t bad_frees;       /* slots freed that were not allocated */
	uint64_t holes_punched;   /* fallocate(PUNCH_HOLE) calls that succeeded */
	uint64_t punch_errors;    /* ... and that failed (ignored otherwise) */
	unsigned files_buffered;  /* files without O_DIRECT */
	uint64_t transfers;       /* pages submitted for reading or writing */
	uint64_t requests;        /* ... in this many requests (consecutive merged) */
};

/*
 * swapfile_open - create the swap files described by cfg.
 *
 * Returns 0 with *out set, or -errno with nothing left behind: -EINVAL for
 * a bad config (page size, a file smaller than one cluster, too many
 * files), -ENOSPC when a file cannot be preallocated, or what open(2) and
 * io_uring setup report. The caller closes every queue before
 * backend_close().
 */
int swapfile_open(const struct swapfile_config *cfg, struct backend **out);

/* Counters and allocator usage of a backend made by swapfile_open(). */
void swapfile_get_stats(struct backend *b, struct swapfile_stats *st);
/* Files b reads from, inherited ones included (at most SWAP_MAX_FILES). */
unsigned swapfile_nfiles(struct backend *b);

#endif /* UPG_SWAPFILE_H */
