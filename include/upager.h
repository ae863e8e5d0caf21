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
	/* Pin handler i to the i-th allowed CPU (default 1). A fault is then
	 * usually served by the handler on the faulting CPU. */
	uint32_t pin_handlers;
	uint32_t reserved0;
	/* Features to ignore even when the kernel has them (enum upg_feature
	 * bits), to force fallback paths. 0 = use everything. */
	uint64_t feature_mask;
	/* Upper bound on the memory the context's pages hold, in bytes; 0 =
	 * none. Pages beyond it are paged out to the swap files, which must
	 * then be given. Regions of such a context use the base page size. */
	uint64_t mem_limit;
	/* Where pages go when mem_limit is reached (see struct upg_swap_file). */
	const struct upg_swap_file *swap_files;
	uint32_t nswap_files;
	/* enum upg_policy: how reclaim picks the pages to page out. */
	uint32_t policy;
};

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
 * upg_ctx_fork_prepare() stops new evictions, lifts the memory limit and
 * brings every page of the context's regions that is out of the mapping
 * (in swap, in the cooling pool, being moved) back in: the kernel then
 * copies the regions to the child like any private memory (copy-on-write).
 * upg_ctx_fork_parent() gives the parent its own copy of each resident page
 * (shared pages cannot be evicted) and lets reclaim bring memory back under
 * the limit. Every prepare is followed by one parent, in the parent. Returns
 * 0, or -EAGAIN when some pages could not be brought back (the program made
 * them unreadable), or -EINVAL.
 *
 * In the child the regions are plain memory, no longer upager's: the
 * context has no threads there. upg_ctx_fork_child() lets go of the
 * parent's userfaultfd; the context must not be used (or destroyed) in the
 * child after it.
 */
int upg_ctx_fork_prepare(upg_ctx *ctx);
void upg_ctx_fork_parent(upg_ctx *ctx);
void upg_ctx_fork_child(upg_ctx *ctx);

/* ------------------------------------------------------------------------
 * Regions
 */
struct upg_region_opts {
	uint32_t size;              /* sizeof(struct upg_region_opts) */
	uint32_t flags;             /* none defined yet; must be 0 */
	/* The unit of paging in bytes: a multiple of the kernel's base page
	 * size and a power of two. 0 = the base page size. The region's size
	 * must be a multiple of it. */
	uint64_t page_size;
	/* Since 0.2: the region's first byte is a multiple of this (a power
	 * of two). 0 = the page size. */
	uint64_t align;
};

/* Fill *opts with defaults (and opts->size). */
void upg_region_opts_init(struct upg_region_opts *opts);

/*
 * Create a region of `size` bytes in ctx: reserve the address range and
 * register it with the context's userfaultfd. Untouched pages cost no
 * memory, so regions may be far larger than RAM. A first read of a page maps
 * the shared zero page, a first write a zeroed private page.
 *
 * opts may be NULL for defaults. On success stores the handle in *out and
 * returns 0. Errors: -EINVAL (size 0 or not a multiple of the page size, bad
 * page size, unknown flags), -ENOMEM (address space or metadata), or the
 * error of registration.
 */
int upg_region_create(upg_ctx *ctx, uint64_t size,
		      const struct upg_region_opts *opts, upg_region **out);

/*
 * Unregister and unmap the region and free everything it holds. Faults in
 * flight are finished or abandoned first; later accesses to its addresses
 * are undefined. NULL is a no-op returning 0.
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
	uint64_t ioctl_retries;     /* EAGAIN from a resolving ioctl */
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
