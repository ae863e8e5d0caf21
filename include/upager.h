/*
 * upager.h - the public interface of upager, a userspace demand-paging
 * runtime for Linux.
 *
 * A context (upg_ctx) owns one userfaultfd, a pool of handler threads and the
 * regions created in it. A region (upg_region) is a range of virtual memory
 * whose pages are materialised by upager when first touched.
 *
 * Conventions:
 *  - Functions return 0 (or a non-negative count) on success and a negative
 *    errno value on failure. They never set errno. upg_strerror() names the
 *    error.
 *  - Handles are opaque. Whoever creates a handle destroys it; destroying a
 *    context destroys the regions still in it.
 *  - Structs passed in or out carry their own size in their first member, so
 *    that they can grow without breaking callers built against an older
 *    header. Initialise them with the matching *_init() function (or set
 *    .size = sizeof the struct and zero the rest).
 *  - Every function is thread-safe unless it says otherwise.
 */
#ifndef UPAGER_H
#define UPAGER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The library is built with hidden visibility; what this header declares is
 * its interface. */
#pragma GCC visibility push(default)

#define UPG_VERSION_MAJOR 0
#define UPG_VERSION_MINOR 1
#define UPG_VERSION_PATCH 0

typedef struct upg_ctx upg_ctx;
typedef struct upg_region upg_region;

/* ------------------------------------------------------------------------
 * Versions and errors
 */

/* The library's version as "MAJOR.MINOR.PATCH". Static storage. */
const char *upg_version(void);

/* MAJOR * 10000 + MINOR * 100 + PATCH of the library actually loaded. */
int upg_version_number(void);

/* A description of a negative errno value returned by an upg_ call (a
 * positive value is accepted too). Static storage, never NULL. */
const char *upg_strerror(int err);

/* Parse a size as people write it: "4096", "64k", "512M", "2G", "1TiB"
 * (K, M, G, T are powers of 1024). Returns 0 with the bytes in *out, or
 * -EINVAL. Since 0.2. */
int upg_parse_size(const char *s, uint64_t *out);

/* ------------------------------------------------------------------------
 * Kernel features
 *
 * What the running kernel's userfaultfd (and friends) offer. upager probes
 * them once per context and picks its paths accordingly; a context can be
 * told to ignore features (upg_config.feature_mask) to force a fallback.
 */
enum upg_feature {
	UPG_FEAT_DEV_USERFAULTFD = 1u << 0,  /* /dev/userfaultfd can be opened */
	UPG_FEAT_SYSCALL         = 1u << 1,  /* the userfaultfd(2) syscall works */
	UPG_FEAT_MISSING         = 1u << 2,  /* MISSING-mode registration */
	UPG_FEAT_WP              = 1u << 3,  /* write-protect mode on anonymous memory */
	UPG_FEAT_MINOR           = 1u << 4,  /* MINOR mode (shmem) */
	UPG_FEAT_ZEROPAGE        = 1u << 5,  /* UFFDIO_ZEROPAGE */
	UPG_FEAT_WP_ASYNC        = 1u << 6,  /* write faults resolved in the kernel */
	UPG_FEAT_WP_UNPOPULATED  = 1u << 7,  /* WP applies to unpopulated ptes */
	UPG_FEAT_MOVE            = 1u << 8,  /* UFFDIO_MOVE */
	UPG_FEAT_POISON          = 1u << 9,  /* UFFDIO_POISON */
	UPG_FEAT_EVENT_FORK      = 1u << 10,
	UPG_FEAT_EVENT_REMAP     = 1u << 11,
	UPG_FEAT_EVENT_REMOVE    = 1u << 12,
	UPG_FEAT_EVENT_UNMAP     = 1u << 13,
	UPG_FEAT_THREAD_ID       = 1u << 14, /* faulting thread's id in messages */
	UPG_FEAT_EXACT_ADDRESS   = 1u << 15,
	UPG_FEAT_PAGEMAP_SCAN    = 1u << 16, /* PAGEMAP_SCAN ioctl on /proc/pid/pagemap */
	UPG_FEAT_IO_URING        = 1u << 17, /* io_uring can be set up */
};
#define UPG_FEAT_COUNT 18

/*
 * Probe the running kernel without creating a context. On success stores
 * the set of enum upg_feature bits in *features and returns 0. Fails with
 * -EPERM (or -EACCES) when this process may not use userfaultfd at all.
 */
int upg_features_probe(uint64_t *features);

/* The short name of one feature bit ("wp", "move", ...), or NULL for a bit
 * that is not a feature. */
const char *upg_feature_name(uint64_t feature);

/* ------------------------------------------------------------------------
 * Contexts
 */
struct upg_swap_file;

struct upg_config {
	uint32_t size;              /* sizeof(struct upg_config) */
	/* Handler threads; 0 = one per CPU this process may run on. */
	uint32_t handler_threads;
	/* 1 (default): the first handler floats, where the scheduler puts it
	 * (by the faulting thread, or by the disk's interrupts), and takes
	 * every fault that comes while it is free; handler i >= 1 is pinned to
	 * the (i-1)-th allowed CPU and takes what comes while the others are
	 * busy. 0: none pinned. */
	uint32_t pin_handlers;
	uint32_t reserved0;
	/* Features to ignore even when the kernel has them (enum upg_feature
	 * bits), to force fallback paths. 0 = use everything. */
	uint64_t feature_mask;
	/* Upper bound on the memory the context's pages hold, in bytes; 0 =
	 * none. Pages beyond it are paged out to the swap files (or remote
	 * servers, see remote_servers), which must then be given. Regions of
	 * such a context use the base page size. It must fit the memory
	 * cgroup the process runs in, with room for the rest of the process:
	 * above 7/8 of the cgroup's limit, the start logs a warning. */
	uint64_t mem_limit;
	/* Where pages go when mem_limit is reached (see struct upg_swap_file). */
	const struct upg_swap_file *swap_files;
	uint32_t nswap_files;
	/* enum upg_policy: how reclaim picks the pages to page out. */
	uint32_t policy;

	/* Since 0.2. Called when a page cannot be read back (an I/O error, or
	 * a swap copy that fails its checksum): addr is the page, err the
	 * negative errno (-EIO, -EBADMSG...). The page is poisoned: whoever
	 * touches it gets SIGBUS, never wrong data. Runs on one of upager's
	 * threads (a handler, or the prefetcher), which serves no fault
	 * meanwhile: it must be quick and must not touch the context's regions
	 * (that could wait for itself). NULL: none. */
	void (*on_error)(void *arg, void *addr, int err);
	void *on_error_arg;

	/* Since 0.2: remote paging (UPG_HAVE_REMOTE). */
	/* Instead of swap files (nswap_files then 0): pages beyond mem_limit
	 * go to memcached servers, "host:port,host:port" (IPv6 as [addr]:port),
	 * each started with -M so that it refuses writes rather than evicting
	 * pages when full. Read during upg_ctx_create() only. Every server must
	 * answer then (else -ECONNREFUSED, -EHOSTUNREACH or -ETIMEDOUT, the
	 * server named in the log). A server lost later is reconnected with
	 * backoff; the pages only it held read back as failures (the pages are
	 * poisoned: SIGBUS on touch), the others page on. A write a server
	 * refuses (full) leaves the page in memory. */
	const char *remote_servers;
	/* Copies of each page on distinct servers: 1 (0 means 1) or 2. With 2,
	 * losing one server loses no page. */
	uint32_t remote_replicas;
	/* How long a server may leave a request unanswered before it counts
	 * as lost, in ms; 0 = 1000. */
	uint32_t remote_timeout_ms;
};

/* Remote paging is in this build: upg_config has remote_servers,
 * remote_replicas and remote_timeout_ms. */
#define UPG_HAVE_REMOTE 1

/* Swap paging is in this build: upg_config has mem_limit, swap files and
 * policy, and upg_stats the swap counters. */
#define UPG_HAVE_SWAP 1

struct upg_swap_file {
	/* A directory: an unlinked file is made in it, which no other process
	 * can open. Anything else names the file itself: created with mode
	 * 0600 (or truncated) and removed when the context is destroyed. */
	const char *path;
	uint64_t size;              /* bytes */
	int32_t priority;           /* higher is used first; equal ones are striped */
	uint32_t reserved;          /* 0 */
};

enum upg_policy {
	/* Second chance, like the kernel's active/inactive lists: pages
	 * leave the application's mapping into a cooling pool first, with no
	 * I/O; a touch there is a cheap minor fault that brings them back,
	 * and only what reaches the end of the pool is written out. */
	UPG_POLICY_COOLING = 0,
	/* Oldest first, no second chance (what Umap does), for comparison. */
	UPG_POLICY_FIFO = 1,
};

/* Fill *cfg with defaults (and cfg->size). */
void upg_config_init(struct upg_config *cfg);

/*
 * Create a context: open a userfaultfd, probe features and start the handler
 * threads. cfg may be NULL for defaults. On success stores the handle in *out
 * and returns 0. Errors: -EINVAL (bad config), -EPERM (userfaultfd not
 * permitted), -ENOMEM, or whatever starting a thread returned.
 */
int upg_ctx_create(const struct upg_config *cfg, upg_ctx **out);

/*
 * Stop the handler threads, destroy every region still in the context and
 * free the context. Accessing a region's memory after this is undefined. No
 * thread may be inside another upg_ call on this context. NULL is a no-op.
 */
void upg_ctx_destroy(upg_ctx *ctx);

/* The features the context uses: what the kernel has, less the mask. */
uint64_t upg_ctx_features(const upg_ctx *ctx);

/*
 * fork(2) with regions, for pthread_atfork() (since 0.2). Without them a
 * child reads zeros where the parent had paged memory out.
 *
 * upg_ctx_fork_prepare() stops evictions for the moment of the fork (the
 * memory limit lifted meanwhile). With swap files, pages in swap stay there:
 * the child reads them at the parent's slots, which the parent keeps
 * (upg_stats.swap_kept_bytes) until the child exits or executes a program.
 * With remote servers, every page of the context's regions that is out of
 * the mapping is brought back in first. The kernel copies what is mapped to
 * the child like any private memory (copy-on-write).
 * upg_ctx_fork_parent() gives the parent its own copy of each resident page
 * (shared pages cannot be evicted) and lets reclaim go on. Every prepare is
 * followed by one parent, in the parent. Returns 0, or -EAGAIN when some
 * pages could not be brought back (the program made them unreadable), or
 * -EINVAL.
 *
 * upg_ctx_fork_child(), in the child, starts the context over there: the
 * same context and regions, a new userfaultfd, new threads, swap
 * files of the child's own (unlinked, in the directories of the parent's)
 * or the same remote servers, and the same budget. The child sees the
 * parent's data as it was at the fork and both go on paging; neither sees
 * the other's later writes. File regions stay backed by their files, shared
 * with the parent as a shared file mapping would be. A snapshot in progress
 * stays the parent's; upg_ctx_event_fd() gives the child a new descriptor.
 * Returns 0, or -errno when the child cannot page: its regions are then
 * plain memory and the context must not be used (or destroyed) in it.
 * Without it the child's regions are plain memory, the context unusable.
 */
int upg_ctx_fork_prepare(upg_ctx *ctx);
void upg_ctx_fork_parent(upg_ctx *ctx);
int upg_ctx_fork_child(upg_ctx *ctx);

/* ------------------------------------------------------------------------
 * Regions
 */
struct upg_region_opts {
	uint32_t size;              /* sizeof(struct upg_region_opts) */
	uint32_t flags;             /* enum upg_region_flags */
	/* The unit of paging in bytes: a multiple of the kernel's base page
	 * size and a power of two. 0 = the base page size. The region's size
	 * must be a multiple of it. */
	uint64_t page_size;

	/* Since 0.2: a region on a data file (see "Database API" below).
	 * NULL: anonymous memory. Otherwise the file whose bytes
	 * [file_offset, file_offset + size) the region's pages are: read from
	 * it on first touch, written back to their own place (never to swap)
	 * when evicted dirty or flushed. Needs a context with a mem_limit;
	 * the path is opened when the region is made (O_DIRECT where the
	 * filesystem allows it) and closed when it is destroyed. */
	const char *file;
	/* Where page 0 lives in the file: a multiple of 4096. */
	uint64_t file_offset;

	/* Since 0.2: the region's first byte is a multiple of this (a power
	 * of two). 0 = the page size. */
	uint64_t align;
};

/* upg_region_opts.flags, for file regions. */
enum upg_region_flags {
	/* Open the file read-only. It must then hold the whole range; a
	 * write to the region is refused (SIGSEGV to the writer, which needs
	 * userfaultfd write-protect; without it writes stay in memory and are
	 * never written to the file). */
	UPG_REGION_FILE_RDONLY = 1u << 0,
	/* Create the file if it does not exist (mode 0644 less the umask). */
	UPG_REGION_FILE_CREATE = 1u << 1,
};

/* Fill *opts with defaults (and opts->size). */
void upg_region_opts_init(struct upg_region_opts *opts);

/*
 * Create a region of `size` bytes in ctx: reserve the address range and
 * register it with the context's userfaultfd. Untouched pages cost no
 * memory, so regions may be far larger than RAM. A first read of a page maps
 * the shared zero page, a first write a zeroed private page; in a file
 * region, the page's bytes in the file (zeros past its end).
 *
 * opts may be NULL for defaults. On success stores the handle in *out and
 * returns 0. Errors: -EINVAL (size 0 or not a multiple of the page size, bad
 * page size, unknown flags, file flags without a file, a file region in a
 * context without a mem_limit or with a page size other than the base page,
 * a file offset not a multiple of 4096, a read-only file shorter than
 * file_offset + size, not a regular file), what open(2) says of the file
 * (-ENOENT, -EACCES, ...), -ENOSPC (too many files open in the context),
 * -ENOMEM (address space or metadata), or the error of registration.
 */
int upg_region_create(upg_ctx *ctx, uint64_t size,
		      const struct upg_region_opts *opts, upg_region **out);

/*
 * Unregister and unmap the region and free everything it holds. Faults in
 * flight are finished or abandoned first; later accesses to its addresses
 * are undefined. A read-write file region is flushed first (upg_flush) and
 * its file closed; the flush's error, if any, is returned, the region being
 * destroyed all the same. NULL is a no-op returning 0.
 */
int upg_region_destroy(upg_region *region);

/*
 * Unmap [off, off + len) of the region, as munmap(2) would (both multiples
 * of the region's page size): the pages' memory, swap slots and budget are
 * given back at once, and the range is never touched by upager again. When
 * nothing of the region is left mapped, the region is destroyed and 1 is
 * returned (the handle is then gone); otherwise 0. Errors: -EINVAL (range
 * outside the region or unaligned), or munmap's error.
 */
int upg_region_unmap(upg_region *region, uint64_t off, uint64_t len);

/* The region's first byte. Stable for the region's life, unless the
 * application moves the whole mapping with mremap(2). */
void *upg_region_addr(const upg_region *region);
uint64_t upg_region_size(const upg_region *region);
uint64_t upg_region_page_size(const upg_region *region);

/* ------------------------------------------------------------------------
 * Database API
 *
 * What a database or storage engine needs from a pager that kernel mmap does
 * not give it: write-back when it says so, pages it can hold in memory, reads
 * it can start ahead of time. Ranges are byte offsets into a region, rounded
 * out to whole pages, and must lie inside it (-EINVAL otherwise). These
 * calls need a context with a mem_limit (-EINVAL otherwise), and run on the
 * calling thread: they may block on I/O, never on a fault of their own.
 */
#define UPG_HAVE_DBAPI 1

/* upg_flush() flags. */
enum upg_flush_flags {
	/* Write back but skip the fdatasync: nothing is durable yet. */
	UPG_FLUSH_NOSYNC = 1u << 0,
};

/*
 * Write the dirty pages of [off, off + len) of a file region back to their
 * place in the file, then fdatasync(2) it (unless UPG_FLUSH_NOSYNC), before
 * returning. Each page is written whole, as it was at one instant: a writer
 * touching it meanwhile waits until its write-back is done. The pages stay
 * resident and clean (write-protected again, so later writes are tracked;
 * where userfaultfd has no write-protect they stay dirty, and are written
 * again by the next flush). Pinned pages are skipped: they stay dirty.
 * Pages whose write-back is already in flight (eviction) are waited for.
 *
 * Returns 0, -EINVAL (not a read-write file region, bad range), or the
 * first I/O error (the pages that failed stay dirty).
 */
int upg_flush(upg_region *region, uint64_t off, uint64_t len, uint32_t flags);

/*
 * Write back the dirty pages of [off, off + len) of a file region (no
 * fdatasync) and drop them from memory: the next touch reads them from the
 * file. Pinned pages stay. A writer racing with the drop waits for it and
 * then finds the page read back; without userfaultfd write-protect, a write
 * to the range during upg_evict may be lost: do not race one with it then.
 * Returns 0, -EINVAL, or the first I/O error (those pages stay resident).
 */
int upg_evict(upg_region *region, uint64_t off, uint64_t len);

/*
 * Pin the pages of [off, off + len): each is brought in now (if it was not
 * resident) and is then neither evicted nor written back (by reclaim or
 * upg_flush) until unpinned as many times as it was pinned (up to 4095).
 * What a database needs before write-ahead logging lets a page go out.
 * Pinned pages count against mem_limit: a context whose budget is all
 * pinned makes every other fault wait. Returns 0, -EINVAL, or -EOVERFLOW
 * (a page pinned 4095 times already; nothing of the range stays pinned).
 */
int upg_pin(upg_region *region, uint64_t off, uint64_t len);

/* Undo one upg_pin of each page of [off, off + len). Returns 0, -EINVAL,
 * or -EPERM for a page that was not pinned (the others are unpinned). */
int upg_unpin(upg_region *region, uint64_t off, uint64_t len);

/* A byte range of a region. */
struct upg_range {
	uint64_t off;
	uint64_t len;
};

/*
 * Start reading the pages of ranges[0..n) of region and return at once.
 * The context's prefetcher thread claims each page not in memory, reads it
 * (from the region's file or from swap) and maps it, clean; a touch of a
 * page whose read is in flight waits for that read, not a new one. When
 * every page of the call is in (or was skipped: the budget stayed full for
 * 100 ms in which reclaim freed nothing, or a read failed and poisoned the
 * page), upg_ctx_event_fd() is bumped by one. Prefetched pages take budget like faulted ones: prefetch
 * no more than the working set that fits. flags: 0.
 * Returns 0, -EINVAL (bad range, no mem_limit, flags) or -ENOMEM.
 */
int upg_prefetch(upg_region *region, const struct upg_range *ranges, unsigned n, uint32_t flags);

/* An eventfd (owned by the context; do not close it) that counts finished
 * upg_prefetch calls: poll it for POLLIN, read(2) 8 bytes to take the
 * count. -EINVAL for a context without a mem_limit. */
int upg_ctx_event_fd(upg_ctx *ctx);

enum upg_advice {
	UPG_ADVICE_NORMAL = 0,      /* readahead follows fault streams (default) */
	UPG_ADVICE_SEQUENTIAL = 1,  /* read far ahead from the first fault */
	UPG_ADVICE_RANDOM = 2,      /* no readahead, no zero-ahead: every fault
				     * reads or fills its page only */
	UPG_ADVICE_WILLNEED = 3,    /* upg_prefetch of the range */
	UPG_ADVICE_DONTNEED = 4,    /* upg_evict of the range (file regions) */
	UPG_ADVICE_COLD = 5,        /* drop the range's clean, unpinned pages now;
				     * dirty ones stay until reclaim or a flush
				     * (file regions) */
};

/*
 * Tell upager how [off, off + len) of region will be used (enum
 * upg_advice). SEQUENTIAL, RANDOM and NORMAL apply to the whole region
 * (the range is checked, not used) and, unlike the others, work in a
 * context without a mem_limit too. Returns 0, -EINVAL, or what the call it
 * stands for returned.
 */
int upg_advise(upg_region *region, uint64_t off, uint64_t len, uint32_t advice);

typedef struct upg_snap upg_snap;

/* Where upg_snapshot writes the image: exactly one of path and region. */
struct upg_snapshot_target {
	uint32_t size;              /* sizeof(struct upg_snapshot_target) */
	uint32_t reserved;          /* 0 */
	/* A file, created (mode 0600) or truncated: page i of the image at
	 * byte i * page size. */
	const char *path;
	/* Or a region at least as large, in any context (not the source):
	 * the image is written into it from its first byte. */
	upg_region *region;
};

/*
 * Start a point-in-time image of region: the call write-protects the
 * region (and waits for faults being handled to see the snapshot begin),
 * then returns; a thread copies the image out meanwhile, while the
 * application keeps reading and writing. A page written before the thread
 * reached it is copied aside first, in the write's fault (copy-on-write),
 * so the image is the region as it was when the call returned, for every
 * page not written during the call itself: to get one instant across
 * pages, hold writers off for the call (it does no I/O). Copies aside cost
 * memory until the thread writes them out.
 *
 * Needs a context with a mem_limit (-EINVAL otherwise). Without userfaultfd
 * write-protect (arm64 before 6.10) no write can be caught before it lands:
 * the image is then copied during the call, a stop-the-world copy for which
 * the caller holds its writers off until the call returns (readers go on).
 * One snapshot per region at a time (-EBUSY). Pages the
 * application drops (MADV_DONTNEED) during the snapshot are imaged as
 * what they read as afterwards. On success *out is the snapshot, which
 * upg_snapshot_wait finishes and frees; call it before destroying the
 * region or the target region.
 */
int upg_snapshot(upg_region *region, const struct upg_snapshot_target *target,
		 upg_snap **out);

/* Wait until the image is complete (written, and fdatasync'ed for a
 * file), free snap, and return 0 or the first error (-EIO for a page that
 * could not be read: it is imaged as zeros). */
int upg_snapshot_wait(upg_snap *snap);

/* ------------------------------------------------------------------------
 * Statistics
 */
#define UPG_LAT_BUCKETS 32  /* bucket i: service times in [2^i, 2^(i+1)) ns */

struct upg_stats {
	uint32_t size;              /* sizeof(struct upg_stats) */
	uint32_t handler_threads;
	uint64_t regions;           /* regions alive */
	uint64_t resident_bytes;    /* bytes of private pages upager mapped */

	uint64_t faults;            /* page-fault messages read */
	uint64_t faults_read;       /* ... of which for a read */
	uint64_t faults_write;      /* ... of which for a write */
	uint64_t faults_wp;         /* ... write-protect faults */
	uint64_t faults_minor;      /* ... minor (shmem) faults */
	uint64_t faults_shared;     /* ... already being or been resolved by
				     * another handler (a concurrent fault on
				     * the same page): nothing more to do */
	uint64_t faults_stale;      /* ... for an address no region holds */

	uint64_t zero_mapped;       /* pages resolved to the shared zero page */
	uint64_t zero_filled;       /* pages resolved with a zeroed private page */

	uint64_t events_remove;     /* MADV_DONTNEED/FREE on a region */
	uint64_t events_unmap;      /* munmap of (part of) a region */
	uint64_t events_remap;      /* mremap of (part of) a region */
	uint64_t events_fork;
	uint64_t ioctl_retries;     /* EAGAIN or ENOMEM from a resolving ioctl, retried */
	uint64_t errors;            /* faults that could not be resolved */

	/* Paging (contexts with a mem_limit). */
	uint64_t mem_limit;         /* as configured, bytes */
	uint64_t cooling_bytes;     /* held in the cooling pool */
	uint64_t faults_major;      /* page read back from swap */
	uint64_t faults_cooling;    /* page brought back from the cooling pool */
	uint64_t faults_deferred;   /* fault waited for reclaim to free memory */
	uint64_t evicted;           /* pages moved out of the application */
	uint64_t swap_outs;         /* pages written to swap */
	uint64_t swap_ins;          /* pages read from swap */
	uint64_t dropped_clean;     /* evicted without a write: swap copy current */
	uint64_t write_errors;      /* write-backs that failed (page kept) */
	uint64_t read_errors;       /* swap-ins that failed or were corrupt */
	uint64_t poisoned;          /* pages poisoned after a failed swap-in */
	uint64_t faults_dirty;      /* first writes to clean pages (dirty tracking) */
	uint64_t readahead_pages;   /* pages read ahead of a sequential fault stream */

	/* Handler service time per fault message, read to resolved. */
	uint64_t latency_hist[UPG_LAT_BUCKETS];

	/* Since 0.2. */
	/* Read-ahead pages the fault stream went past afterwards (a read of
	 * a mapped page raises no fault, so this is inferred from the
	 * stream: a page touched out of order counts as waste). */
	uint64_t readahead_hits;
	uint64_t readahead_waste;   /* read-ahead pages evicted or dropped first */
	uint32_t evict_path;        /* enum upg_evict_path (contexts with a mem_limit) */
	uint32_t reserved1;

	/* Since 0.2: the database API. */
	uint64_t pinned_pages;      /* pages pinned now */
	uint64_t file_reads;        /* pages read from data files */
	uint64_t file_writes;       /* pages written to data files (eviction, flush) */
	uint64_t flushes;           /* upg_flush calls that returned 0 */
	uint64_t prefetch_pages;    /* pages upg_prefetch read */
	uint64_t prefetch_skipped;  /* ... and skipped: the budget stayed full */
	/* New pages of anonymous regions mapped, zeroed, ahead of a
	 * sequential first touch (each spares a fault). */
	uint64_t zero_ahead;

	/* Since 0.2: remote paging (contexts with remote_servers). */
	uint32_t remote_servers;      /* servers configured */
	uint32_t remote_servers_down; /* ... of which not answering now */
	uint64_t remote_fallbacks;    /* reads served by the replica after a miss or failure */
	uint64_t remote_refused;      /* writes a full server refused (the page stayed) */
	uint64_t remote_conn_lost;    /* connections lost, timeouts included */
	uint64_t remote_reconnects;   /* connections made again */

	/* Since 0.2: swap files (or remote servers). */
	uint64_t swap_used_bytes;     /* slots in use in the context's own files
				       * (or under its own keys on the servers) */
	uint64_t swap_kept_bytes;     /* ... of which dead, kept for forked
				       * children that may still read them */

	/* Reads the kernel found no memory for (ENOMEM: a memory cgroup at
	 * its limit), read again a little later rather than lost. */
	uint64_t read_retries;
};

/* How pages leave the application, chosen by the feature probe (mask
 * features to force the others). Each is atomic with respect to writers:
 * no write is lost. */
enum upg_evict_path {
	/* UFFDIO_MOVE of the page into a staging frame (Linux 6.8). */
	UPG_EVICT_MOVE = 0,
	/* Write-protect, copy out, MADV_DONTNEED; a write meanwhile waits in
	 * a write-protect fault (userfaultfd WP: x86_64 5.7, arm64 6.10). */
	UPG_EVICT_WP = 1,
	/* mprotect read-only, copy out, MADV_DONTNEED: any kernel. A write
	 * meanwhile takes SIGSEGV, which upager's handler turns into a retry
	 * (it chains to the application's handler for other faults); a
	 * system call writing there meanwhile fails with EFAULT. */
	UPG_EVICT_MPROTECT = 2,
};

/* Fill *st (whose st->size says how much the caller has room for) with a
 * snapshot of the context's counters. Returns 0, or -EINVAL if st->size is
 * too small to hold even the header. */
int upg_stats_get(upg_ctx *ctx, struct upg_stats *st);

/* The service time in nanoseconds below which a fraction p (0..1) of the
 * faults in st's histogram fall (upper edge of the bucket); 0 if empty. */
uint64_t upg_stats_latency_ns(const struct upg_stats *st, double p);

#pragma GCC visibility pop

#ifdef __cplusplus
}
#endif

#endif /* UPAGER_H */
