/*
 * paging.h - paging under a memory limit: the budget, swap-in, the cooling
 * pool and reclaim. Present only in contexts with a mem_limit (ctx->paging).
 *
 * Where a page's contents are, by its state word (page.h):
 *   RESIDENT  mapped in the application; counted in mem_pages
 *   COOLING   moved into a frame of the cooling pool (evict.c), out of the
 *             application's reach; counted in mem_pages
 *   SWAPPED   only in swap, at the word's slot; crc in region->crc
 *   BUSY      a claimant is moving it; it owns the page's accounting until
 *             it releases the word
 *
 * The cooling pool is a ring of frames in a staging mapping (registered
 * on the MOVE path, with a userfaultfd of its own: UFFDIO_MOVE needs its
 * destination registered). The reclaimer moves the oldest resident pages in at the
 * head; a touch brings a page back (a minor fault, no I/O); at the tail,
 * pages still there are written out if dirty, and the frames are freed 64
 * at a time with one MADV_DONTNEED.
 *
 * Handlers never block: a fault that would take memory beyond the limit,
 * or that finds no free I/O buffer, is deferred and retried, and the
 * reclaimer (the only thread that waits for I/O or calls madvise on
 * registered memory, whose REMOVE event a handler must read) is kicked.
 */
#ifndef UPG_PAGING_H
#define UPG_PAGING_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#include "backend.h"
#include "compat.h"
#include "datafile.h"
#include "fault.h"
#include "resq.h"
#include "stats.h"
#include "swapfile.h"
#include "upager.h"

struct upg_ctx;
struct upg_region;
struct handler;
struct prefetcher;

/* Pages moved per batch: MADV_DONTNEED of frames, write-back I/O. */
#define PAGING_BATCH 64u
/* I/O buffers per handler: swap-ins in flight at once, read ahead
 * included (swapin.c reads up to 512 pages ahead of a stream). */
#define PAGING_HANDLER_BUFS 640u
/* Sequential streams readahead follows at once (several threads scanning). */
#define PAGING_RA_STREAMS 8u
/* Children at once that read their parent's swap (fork.c); beyond, a fork
 * brings every page back into memory first. */
#define PAGING_MAX_FORKS 64u

struct frame {
	_Atomic uint64_t ref;     /* page_ref() + 1 of the page held; 0 = empty */
	uint64_t slot1;           /* slot + 1 of the page's copy in swap, or 0 */
	/* Atomic (relaxed) because upg_flush reads it unclaimed, before the
	 * CAS on the page's word that tells whether the frame was still that
	 * page's; the word orders everything else. */
	atomic_bool dirty;
	/* Its page was copied back into the application: the frame still
	 * holds memory (counted in mem_pages and cooling_pages) until the
	 * tail frees it. */
	atomic_bool stale;
};

struct paging {
	struct upg_ctx *ctx;
	struct backend *backend;
	/* The data files of file regions (datafile.h): their slots carry
	 * DATAFILE_SLOT_TAG, so a slot alone says which backend holds it. */
	struct backend *files;
	/* The database API's counters (dbapi.c), kept by application threads. */
	_Atomic uint64_t pinned_pages, api_file_writes, flushes;
	uint32_t policy;
	uint32_t path;            /* enum upg_evict_path */
	bool evict_ready;         /* evict_init() done */
	uint64_t page_size;

	uint64_t limit;           /* pages */
	uint64_t high_wm, low_wm; /* the reclaimer runs from high down to low */
	uint64_t cool_target;     /* pages kept cooling (0 for FIFO) */
	_Atomic uint64_t mem_pages;
	_Atomic uint64_t cooling_pages;
	/* Swap refuses writes (full disk, I/O errors): pages stay in memory,
	 * and faults may take memory beyond the limit rather than wait for
	 * reclaim that cannot happen. Cleared by the next write that works. */
	atomic_bool swap_stuck;
	/* fork (fork.c): while hold > 0 the reclaimer parks between batches
	 * (parked says it has: the cooling pool is empty) and the budget is
	 * not enforced, for the moment of the fork. */
	_Atomic unsigned hold;
	atomic_bool parked;
	/* Children may still read our swap slots (fork.c): while frozen > 0,
	 * slots that die are kept (deferred) instead of freed. Each child
	 * holds the write end of a pipe whose read end is in forks[]: it
	 * closes when the child exits or executes. */
	_Atomic unsigned frozen;
	_Atomic unsigned discarding;    /* paging_discard() calls in progress */
	pthread_mutex_t defer_lock;
	uint64_t *deferred;
	size_t ndeferred, deferred_cap;
	int fork_pipe[2];               /* made by prepare, for the next child */
	int forks[PAGING_MAX_FORKS];
	unsigned nforks;
	int parent_pipe;                /* in a child: its end of the parent's pipe, or -1 */
	/* Dirty tracking pays a write-protect fault for each first write to
	 * a page brought back clean. When most such pages get written anyway,
	 * bringing them back writable (dirty) is cheaper; a few still come
	 * back clean, to keep measuring (swapin.c, map_clean). */
	_Atomic uint64_t clean_maps, clean_written;
	atomic_bool map_dirty;

	/* Cooling pool; head and tail belong to the reclaimer. */
	uint8_t *frames;
	/* On the MOVE path the frames are registered with a userfaultfd of
	 * their own that reports no events (or -1): UFFDIO_MOVE needs only its
	 * destination registered with the descriptor it is called on, and
	 * freeing frames then raises no REMOVE event on the context's
	 * userfaultfd, which would fail every resolving ioctl there with
	 * EAGAIN until the reclaimer's madvise returned. */
	int frames_uffd;
	uint64_t nframes;
	struct frame *fe;
	uint64_t head, tail;

	/* The run of pages the reclaimer is copying out and dropping on the
	 * WP and mprotect paths (evict.c). Its MADV_DONTNEED raises REMOVE
	 * events that are not the application's: each page's first REMOVE is
	 * ours (consumed bit), a second one the application's. start/npages
	 * change under ctx->read_lock, which event handling holds. */
	struct {
		_Atomic uintptr_t start;
		_Atomic uint64_t npages;  /* 0: no run */
		_Atomic uint64_t consumed;
		atomic_bool copying;      /* its pages are being copied out */
	} own;

	/* The reclaimer. */
	pthread_t thread;
	int kick_fd;              /* eventfd: wake the reclaimer */
	_Atomic bool sleeping;
	_Atomic bool stop;
	struct backend_queue *queue;
	struct backend_queue *fqueue;   /* on files */
	struct handler_stats stats;
	uint64_t errors_seen;     /* write_errors when swap_health() last looked */
	int write_error;          /* how the last write-back failed (logged once), or 0 */
	uint64_t *lru;            /* its FIFO of candidates (a ring) */
	uint64_t lru_head, lru_tail, lru_mask;
	_Atomic uint64_t lost;    /* candidates dropped by full rings */
	uint32_t scan_region;     /* where scan_for_candidates() goes on */
	struct prefetcher *prefetch;  /* prefetch.c */
	/* Readahead (swapin.c): the sequential streams followed. Shared by the
	 * handlers, since a stream's faults go to whichever handler is free;
	 * ra_lock is a leaf, held only to find and advance a stream, never
	 * across I/O. */
	pthread_mutex_t ra_lock;
	struct ra_stream {
		uint32_t region;
		bool down;                 /* follows descending pages */
		/* In positions along the stream (swapin.c, ra_pos): the last
		 * fault, the first position not read, the window. */
		uint64_t last, next, win;
		uint64_t used;             /* when it last continued, for replacement */
	} ra[PAGING_RA_STREAMS];
	uint64_t ra_clock;
	uint64_t scan_index;
	/* What a forked child pages to (fork.c): directories for swap files
	 * of its own, or the same remote servers. */
	struct upg_swap_file child_swap[SWAP_MAX_FILES];
	unsigned nchild_swap;
	char *remote;
};

/* Per-handler state. */
struct paging_handler {
	struct backend_queue *queue;
	struct backend_queue *fqueue;   /* on pg->files */
	struct resq resq;
	struct backend_io *ios;   /* one per buffer */
	uint8_t *bufs;
	/* Free buffers, one bit each; the next one handed out is the one
	 * after the last if free, so that pages read together get adjacent
	 * buffers and are mapped with one copy (swapin.c). */
	uint64_t free_map[(PAGING_HANDLER_BUFS + 63) / 64];
	unsigned nfree, next_buf;
	/* Reads done whose copy into place met a layout change (EAGAIN):
	 * retried on the next turn of the loop, the faulting threads still
	 * waiting. */
	struct backend_io *pending[PAGING_HANDLER_BUFS];
	unsigned npending;
	/* Reads that failed for want of memory wait among them, and go out
	 * again no sooner than this (CLOCK_MONOTONIC, ns): they fail at
	 * once while memory is short, and would keep the handler spinning. */
	uint64_t reread_at;
	/* Written by the reclaimer when it freed memory, or when a madvise of
	 * its own returned, while this handler had faults waiting for memory
	 * or copies to retry (waiting). */
	int wake_fd;
	_Atomic bool waiting;
	uint32_t probe;           /* map_clean()'s one-in-eight counter */
	/* The prefetcher's (prefetch.c): who each buffer's read is for, set
	 * from cur_owner when the read is queued; io_done(owner) is called
	 * when the buffer comes back. NULL in handlers. */
	void **owner;
	void *cur_owner;
	void (*io_done)(void *owner);
};

int paging_create(struct upg_ctx *ctx);
/* The swap backend's own counters into st (remote servers: upg_stats'
 * remote_* fields; a swap file has none beyond the paging counters). */
void paging_backend_stats(struct paging *pg, struct upg_stats *st);
void paging_destroy(struct upg_ctx *ctx);
/* In a forked child, before its threads start: replace the parent's paging
 * (left to the parent's threads and rings) with one of the child's own, with
 * swap files of its own. The budget is empty; the caller accounts the pages
 * the child has. */
int paging_fork_child(struct upg_ctx *ctx);
/* Start the reclaimer once the handlers run; stop it before they stop. */
int paging_start(struct upg_ctx *ctx);
void paging_stop(struct upg_ctx *ctx);

int paging_handler_init(struct handler *h);
void paging_handler_fini(struct handler *h);
/* In a forked child: free what the parent's handler h held of its own
 * (buffers, its wake-up fd), leaving its queues to the parent. */
void paging_handler_forget(struct handler *h, struct paging *old);
/* The fds the handler polls: I/O completions, and memory freed. */
int paging_handler_fd(struct handler *h);
int paging_handler_file_fd(struct handler *h);
int paging_handler_wake_fd(struct handler *h);

/*
 * Budget. paging_reserve() takes one page of the budget for a page about to
 * come in, failing (and kicking the reclaimer) when that would pass the
 * limit. paging_unreserve() gives it back.
 */
bool paging_reserve(struct paging *pg);
void paging_unreserve(struct paging *pg, uint64_t n);

/* A page of r became resident: make it a reclaim candidate. */
void paging_resident(struct handler *h, struct upg_region *r, uint64_t idx);

/* Handler side (swapin.c): faults on SWAPPED and COOLING pages, first
 * writes to clean pages, I/O completions, deferred faults. */
fault_result paging_swapin(struct handler *h, struct upg_region *r, uint64_t idx, uint64_t w,
			   bool write);
fault_result paging_uncool(struct handler *h, struct upg_region *r, uint64_t idx, uint64_t w,
			   bool write);
/* A write to a write-protected page; tid: the writer, or 0 if unknown. */
fault_result paging_wp_fault(struct handler *h, struct upg_region *r, uint64_t idx, pid_t tid);
void paging_reap(struct handler *h);
/* A fault on page idx of r while it was busy: if it continues the
 * handler's sequential stream, read further ahead. */
void paging_stream(struct handler *h, struct upg_region *r, uint64_t idx);
/* Claim page idx of r and queue its read for the prefetcher h (swapin.c),
 * for ph->cur_owner. 2: queued; 1: nothing to read (in memory, busy); 0: no
 * buffer or no budget now, retry later (nothing was claimed). */
int paging_prefetch_page(struct handler *h, struct upg_region *r, uint64_t idx);

/* The prefetcher (prefetch.c): a thread with its own queues and buffers,
 * which reads pages ahead of the application's accesses. */
int prefetch_start(struct upg_ctx *ctx);
void prefetch_stop(struct upg_ctx *ctx);
/* Its candidate ring, for the reclaimer (NULL if none). */
struct resq *prefetch_resq(struct paging *pg);
void prefetch_stats(struct paging *pg, struct upg_stats *st);
/* In a forked child: free the memory of the parent's prefetcher. */
void prefetch_forget(struct paging *old);

/* Whether the handler has work to retry (it then polls with a timeout). */
bool paging_pending(struct handler *h);

/* The page at idx left state w (already replaced by NONE): release what it
 * held (slot, frame, budget). For region_forget() and region destroy. */
void paging_forget_page(struct paging *pg, struct upg_region *r, uint64_t idx, uint64_t w);

/*
 * Eviction paths (evict.c). evict_out() moves the claimed (BUSY) pages
 * v[0..n) out of the application into their frames, setting ok on those
 * now out. evict_back() puts the page in frame pos back at addr (mapped
 * write-protected when clean and the path tracks writes): 0 when the page
 * moved, leaving the frame empty; 1 when it was copied, the frame keeping
 * its page (stale) until the tail frees it; or -errno.
 * evict_back_moves() tells beforehand which it will be.
 */
struct evictee {
	struct upg_region *r;
	uint64_t idx, w, pos;
	bool ok;
};

int evict_init(struct paging *pg);
void evict_fini(struct paging *pg);
void evict_out(struct paging *pg, struct evictee *v, unsigned n);
int evict_back(struct paging *pg, uintptr_t addr, uint64_t pos, bool clean);
static inline bool evict_back_moves(const struct paging *pg, bool clean)
{
	return pg->path == UPG_EVICT_MOVE && !clean;
}
/* Whether a REMOVE event for the page at addr is the reclaimer's own drop
 * (the page's first REMOVE while it is in the run); consumes it. Under
 * ctx->read_lock. */
bool evict_own_removal(struct paging *pg, uintptr_t addr);
/* Whether a fault at addr hit a page the reclaimer is copying out that the
 * application dropped meanwhile (see evict.c). */
bool evict_copying(struct paging *pg, uintptr_t addr);
const char *evict_path_name(uint32_t path);

/* Reclaimer (reclaim.c). */
void *paging_reclaimer_main(void *arg);
void paging_kick(struct paging *pg);

/* The page at slot is dead: a swap slot is discarded (later, while a child
 * may read it: fork.c); a data-file page stays where it is (the file is the
 * truth). */
void paging_discard(struct paging *pg, uint64_t slot);
/* fork (fork.c), swap files only: stop discarding slots, and make the pipe
 * the next child holds; 0, or -errno (then nothing changed: too many files
 * or children for the child to read ours). */
int paging_freeze(struct paging *pg);
/* In the parent after the fork: watch the child's end of the pipe. */
void paging_forked(struct paging *pg);
/* The reclaimer, now and then: children gone let slots go again. */
void paging_forks_check(struct paging *pg);

/* Of a pair of queues (swap, data files), the one that moves slot. */
static inline struct backend_queue *paging_queue(struct backend_queue *swap,
						 struct backend_queue *files, uint64_t slot)
{
	return datafile_slot_is_file(slot) ? files : swap;
}

/* Submit what the handler queued on either queue. */
static inline void paging_submit(struct paging_handler *ph)
{
	backend_submit(ph->queue);
	backend_submit(ph->fqueue);
}

/*
 * Copy len bytes of the application's memory at src (a page it may be
 * writing to, held still by write-protect or a claim) to dst. Through
 * process_vm_readv rather than memcpy: an unmapped page fails the copy
 * instead of crashing the runtime, and the ordering the kernel gives (a
 * writer waits in its fault) is one a race detector cannot see through an
 * instrumented memcpy. Returns whether all of it was copied.
 */
static inline bool paging_copy_in(void *dst, const void *src, size_t len)
{
	struct iovec local = { dst, len }, remote = { (void *)src, len };

	return process_vm_readv(getpid(), &local, 1, &remote, 1, 0) == (ssize_t)len;
}

static inline uint8_t *frame_addr(struct paging *pg, uint64_t f)
{
	return pg->frames + (f % pg->nframes) * pg->page_size;
}

#endif /* UPG_PAGING_H */
