/*
 * evict.c - the eviction paths: how a page leaves the application's mapping
 * for a frame of the cooling pool, and how it comes back.
 *
 *   MOVE      UFFDIO_MOVE, one ioctl per run of contiguous pages: the page
 *             table entries themselves move, so no write can slip between
 *             copy and drop.
 *   WP        runs of contiguous pages are write-protected through the
 *             userfaultfd, copied out, and dropped with one MADV_DONTNEED;
 *             a write meanwhile waits in a write-protect fault until the
 *             page is gone, then faults it back in.
 *   MPROTECT  the same with mprotect(PROT_READ) and a SIGSEGV handler in
 *             place of write-protect faults (segv.h).
 *
 * The copy goes through process_vm_readv, not memcpy: the application may
 * drop (MADV_DONTNEED) or unmap a page of the run while it is copied. An
 * unmapped page then fails the copy instead of crashing the reclaimer, and
 * a dropped one faults into a handler that maps zeros there (what the
 * application would read) rather than waiting for the reclaimer, which owns
 * the page (evict_copying).
 *
 * Each drop raises a REMOVE event that is not the application's: the run is
 * published in pg->own first, and event handling skips the first REMOVE of
 * each of its pages (evict_own_removal).
 *
 * Back: a dirty page moves (MOVE path); anything else is copied with
 * UFFDIO_COPY, write-protected if clean, and its frame keeps the old copy
 * until the tail of the pool frees it (accounted: frame.stale).
 */
#define LOG_PREFIX "evict: "
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <unistd.h>

#include "ctx.h"
#include "log.h"
#include "paging.h"
#include "region.h"
#include "segv.h"
#include "uffd.h"

/* Pages per run: the width of the consumed bitmap. */
#define RUN_MAX 64u

const char *evict_path_name(uint32_t path)
{
	switch (path) {
	case UPG_EVICT_MOVE:
		return "UFFDIO_MOVE";
	case UPG_EVICT_WP:
		return "write-protect";
	case UPG_EVICT_MPROTECT:
		return "mprotect";
	default:
		return "?";
	}
}

int evict_init(struct paging *pg)
{
	uint64_t f = pg->ctx->features;

	pg->path = (f & UPG_FEAT_MOVE)	 ? UPG_EVICT_MOVE
		   : (f & UPG_FEAT_WP)	 ? UPG_EVICT_WP
					 : UPG_EVICT_MPROTECT;
	pr_debug("pages leave by %s", evict_path_name(pg->path));
	return pg->path == UPG_EVICT_MPROTECT ? segv_install() : 0;
}

void evict_fini(struct paging *pg)
{
	if (pg->path == UPG_EVICT_MPROTECT)
		segv_uninstall();
}

/* Publish or retire the run [start, start + n pages). Under the read lock,
 * so that once it is retired every event our madvise raised has been read
 * and applied. */
static void own_run(struct paging *pg, uintptr_t start, uint64_t n)
{
	pthread_mutex_lock(&pg->ctx->read_lock);
	atomic_store_explicit(&pg->own.consumed, 0, memory_order_relaxed);
	atomic_store_explicit(&pg->own.start, start, memory_order_relaxed);
	atomic_store_explicit(&pg->own.npages, n, memory_order_release);
	pthread_mutex_unlock(&pg->ctx->read_lock);
}

bool evict_own_removal(struct paging *pg, uintptr_t addr)
{
	uint64_t n = atomic_load_explicit(&pg->own.npages, memory_order_acquire);
	uintptr_t start = atomic_load_explicit(&pg->own.start, memory_order_relaxed);
	uint64_t i, bit;

	if (!n || addr < start || addr >= start + n * pg->page_size)
		return false;
	i = (addr - start) / pg->page_size;
	bit = 1ull << i;
	return !(atomic_fetch_or_explicit(&pg->own.consumed, bit, memory_order_relaxed) & bit);
}

bool evict_copying(struct paging *pg, uintptr_t addr)
{
	uint64_t n = atomic_load_explicit(&pg->own.npages, memory_order_acquire);
	uintptr_t start = atomic_load_explicit(&pg->own.start, memory_order_relaxed);

	return atomic_load_explicit(&pg->own.copying, memory_order_acquire) && n &&
	       addr >= start && addr < start + n * pg->page_size;
}

/* Copy the run's pages into their frames. Returns how many pages, from the
 * first, were copied. */
static unsigned copy_out(struct paging *pg, struct evictee *v, unsigned n)
{
	struct iovec local[RUN_MAX], remote = {
		.iov_base = (void *)region_page_addr(v[0].r, v[0].idx),
		.iov_len = n * pg->page_size,
	};
	ssize_t got;

	for (unsigned i = 0; i < n; i++)
		local[i] = (struct iovec){ frame_addr(pg, v[i].pos), pg->page_size };
	got = process_vm_readv(getpid(), local, n, &remote, 1, 0);
	return got > 0 ? (unsigned)((size_t)got / pg->page_size) : 0;
}

/* Evict one run of n contiguous pages of one region. */
static void evict_run(struct paging *pg, struct evictee *v, unsigned n)
{
	struct upg_ctx *ctx = pg->ctx;
	uintptr_t start = region_page_addr(v[0].r, v[0].idx);
	size_t len = n * pg->page_size;
	unsigned copied = 0;
	int window = -1, ret;

	own_run(pg, start, n);
	if (pg->path == UPG_EVICT_WP) {
		while ((ret = uffd_writeprotect(ctx->uffd, start, len, 1)) == -EAGAIN)
			sched_yield();
	} else {
		window = segv_window_open(start, start + len);
		ret = window < 0 ? window : mprotect((void *)start, len, PROT_READ) ? -errno : 0;
	}
	if (ret == 0) {
		/* Until our own drop, a missing page in the run is one the
		 * application dropped: it reads as zeros. */
		atomic_store_explicit(&pg->own.copying, true, memory_order_release);
		copied = copy_out(pg, v, n);
		atomic_store_explicit(&pg->own.copying, false, memory_order_release);
		/* A page that could not be copied is unmapped: drop it all
		 * the same (the UNMAP event forgets it), but not as evicted. */
		madvise((void *)start, len, MADV_DONTNEED);
	}
	if (window >= 0) {
		/* Writers wait until the pages are writable again: retry a
		 * failure (ENOMEM: out of mappings) a while before giving up. */
		for (unsigned tries = 0;
		     ret == 0 && mprotect((void *)start, len, PROT_READ | PROT_WRITE) < 0; tries++) {
			if (tries == 1000) {
				pr_perr(-errno, "cannot make %#lx writable again",
					(unsigned long)start);
				break;
			}
			sched_yield();
		}
		segv_window_close(window);
	}
	own_run(pg, 0, 0);
	for (unsigned i = 0; i < n; i++)
		v[i].ok = i < copied;
}

static int by_address(const void *a, const void *b)
{
	const struct evictee *x = a, *y = b;

	if (x->r != y->r)
		return x->r->id < y->r->id ? -1 : 1;
	return x->idx < y->idx ? -1 : x->idx > y->idx;
}

/*
 * Whether the page that stopped a short UFFDIO_MOVE moved all the same.
 * Linux 6.18 was seen to report one so (a short count and EAGAIN, in a
 * memory cgroup swapping this process): the page was in its frame and gone
 * from the application, and kept as resident it read back as lost. The page
 * tables tell: nothing left at the page and something in its frame (which
 * was empty) is a move.
 */
static bool moved_anyway(struct paging *pg, const struct evictee *v)
{
	static bool said;
	uint64_t src, dst;

	if (!ctx_pagemap_entry(pg->ctx, region_page_addr(v->r, v->idx), &src) ||
	    !ctx_pagemap_entry(pg->ctx, (uintptr_t)frame_addr(pg, v->pos), &dst) ||
	    (src & (PM_PRESENT | PM_SWAP)) || !(dst & (PM_PRESENT | PM_SWAP)))
		return false;
	if (!said) {
		said = true;
		pr_warn("UFFDIO_MOVE came back short at a page it had moved: counted as moved");
	}
	return true;
}

/* Move a run of n contiguous pages into contiguous frames, with as few
 * ioctls as the pages allow. */
static void move_run(struct paging *pg, struct evictee *v, unsigned n)
{
	for (unsigned i = 0; i < n;) {
		long moved = uffd_move_some(pg->frames_uffd, (uintptr_t)frame_addr(pg, v[i].pos),
					    region_page_addr(v[i].r, v[i].idx), (n - i) * pg->page_size,
					    UFFDIO_MOVE_MODE_DONTWAKE);
		unsigned got = moved > 0 ? (unsigned)((size_t)moved / pg->page_size) : 0;

		for (unsigned k = 0; k < got; k++)
			v[i + k].ok = true;
		i += got;
		/* The page that stopped it stays: gone (ENOENT), pinned by
		 * I/O or a fork child (EBUSY), or a layout change (EAGAIN);
		 * unless it moved regardless. */
		if (i < n) {
			v[i].ok = moved_anyway(pg, &v[i]);
			i++;
		}
	}
}

void evict_out(struct paging *pg, struct evictee *v, unsigned n)
{
	/* Runs need the pages in address order, and get frames in the same
	 * order (the positions were handed out in ascending order). */
	{
		uint64_t pos[PAGING_BATCH];

		for (unsigned i = 0; i < n; i++)
			pos[i] = v[i].pos;
		qsort(v, n, sizeof(*v), by_address);
		for (unsigned i = 0; i < n; i++)
			v[i].pos = pos[i];
	}
	for (unsigned i = 0, len; i < n; i += len) {
		/* Contiguous pages, into frames that do not wrap the ring. */
		for (len = 1; i + len < n && len < RUN_MAX && v[i + len].r == v[i].r &&
			      v[i + len].idx == v[i].idx + len &&
			      (v[i + len].pos % pg->nframes) == (v[i].pos % pg->nframes) + len;
		     len++)
			;
		if (pg->path == UPG_EVICT_MOVE)
			move_run(pg, v + i, len);
		else
			evict_run(pg, v + i, len);
	}
}

int evict_back(struct paging *pg, uintptr_t addr, uint64_t pos, bool clean)
{
	struct upg_ctx *ctx = pg->ctx;
	bool wp = clean && (ctx->features & UPG_FEAT_WP);

	int ret;

	/* A dirty page moves back without a copy; a clean one is copied, so
	 * that it can be mapped write-protected and stay clean until written
	 * (a moved page comes back writable). */
	if (evict_back_moves(pg, clean))
		return uffd_move(ctx->uffd, addr, (uintptr_t)frame_addr(pg, pos), pg->page_size, 0);
	ret = uffd_copy(ctx->uffd, addr, frame_addr(pg, pos), pg->page_size,
			wp ? UFFDIO_COPY_MODE_WP : 0);
	return ret < 0 ? ret : 1;
}
