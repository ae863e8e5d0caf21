/*
 * preload.h - the LD_PRELOAD library (libupager-preload.so): what its
 * files share.
 *
 * The library makes jemalloc the program's allocator with every extent
 * carved out of upager regions (extents.c), turns large anonymous mmaps into
 * regions (maps.c), and runs one upager context per process (main.c),
 * configured from UPAGER_* variables (config.c).
 *
 * The runtime's own memory never lives in managed memory: a handler that
 * faulted on a page only it can serve would wait for itself. Code of the
 * runtime runs with preload_depth > 0 (runtime threads always, program
 * threads while inside an upg_ call); its allocations come from a private
 * mmap-backed allocator (private.c) and its mmaps go straight to the kernel.
 */
#ifndef UPG_PRELOAD_H
#define UPG_PRELOAD_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "upager.h"

#define EXPORT __attribute__((visibility("default")))
#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

/* Exit status when the configuration is wrong or upager cannot start. */
#define PRELOAD_EXIT_CONFIG 125
#define PRELOAD_MAX_SWAP 16

struct preload_config {
	uint64_t mem;               /* UPAGER_MEM, bytes; 0 = no limit */
	uint64_t swap_size;         /* UPAGER_SWAP_SIZE: all files together */
	const char *swap[PRELOAD_MAX_SWAP];   /* UPAGER_SWAP, ':'-separated */
	unsigned nswap;
	const char *remote;         /* UPAGER_REMOTE: memcached servers, instead of swap */
	unsigned replicas;          /* UPAGER_REPLICAS: 1 or 2 */
	unsigned threads;           /* UPAGER_THREADS; 0 = one per CPU */
	uint32_t policy;            /* UPAGER_POLICY: enum upg_policy */
	bool stats;                 /* UPAGER_STATS: summary on stderr at exit */
	/* UPAGER_STATS as a pid (what `upager run --stats` sets): the summary
	 * is that process's, whatever it executes; 0 when it is a boolean. */
	pid_t stats_pid;
	uint64_t mmap_threshold;    /* UPAGER_MMAP_THRESHOLD, bytes */
	const char *stats_dir;      /* UPAGER_STATS_DIR: where PID.stats lives */
};

struct preload {
	upg_ctx *ctx;
	/* The context runs: extents and large mmaps come from regions. Off
	 * before the constructor and in a fork child. */
	atomic_bool ready;
	struct preload_config cfg;
	uint64_t page_size;
	/* The process the context is of: a vfork child (which shares all of
	 * this) is another, and must not act for it at _exit. */
	pid_t pid;
};
extern struct preload preload;

/* > 0 while this thread runs upager's code (always, in runtime threads). */
extern __thread unsigned preload_depth __attribute__((tls_model("initial-exec")));

static inline bool preload_in_runtime(void)
{
	return preload_depth != 0;
}

/* Bracket calls into the runtime from a program thread. */
static inline void preload_enter(void)
{
	preload_depth++;
}

static inline void preload_leave(void)
{
	preload_depth--;
}

/* Printed as "upager: ...\n" on stderr with write(2), then _exit(125). */
__attribute__((noreturn, format(printf, 1, 2))) void preload_die(const char *fmt, ...);

/* sys.c: the kernel's calls themselves, bypassing interposition. jemalloc's
 * own calls to mmap, munmap, madvise and mprotect are renamed to these when
 * it is linked in (preload/CMakeLists.txt). */
void *upg_sys_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off);
int upg_sys_munmap(void *addr, size_t len);
int upg_sys_madvise(void *addr, size_t len, int advice);
int upg_sys_mprotect(void *addr, size_t len, int prot);
void *upg_sys_mremap(void *old, size_t old_len, size_t new_len, int flags, void *new_addr);

/* jemalloc's entry points, renamed when it is linked in. */
void *upgje_malloc(size_t n);
void *upgje_calloc(size_t n, size_t size);
void *upgje_realloc(void *p, size_t n);
void upgje_free(void *p);
int upgje_posix_memalign(void **out, size_t align, size_t n);
void *upgje_aligned_alloc(size_t align, size_t n);
void *upgje_memalign(size_t align, size_t n);
void *upgje_valloc(size_t n);
size_t upgje_malloc_usable_size(const void *p);
int mallctl(const char *name, void *oldp, size_t *oldlenp, void *newp, size_t newlen);

/* private.c: the runtime's allocator, over one private mapping. */
void *priv_alloc(size_t align, size_t n);
void *priv_realloc(void *p, size_t n);
void priv_free(void *p);
size_t priv_usable(const void *p);
bool priv_owns(const void *p);
void priv_fork_prepare(void);
void priv_fork_done(void);

/* config.c: read UPAGER_* into *cfg; stops the program on a wrong value. */
void config_read(struct preload_config *cfg);

/* extents.c: jemalloc's arenas take their extents from heap regions. */
int extents_install(void);
/* Whether [p, p + len) overlaps the heap regions. */
bool extents_overlap(uintptr_t p, size_t len);

/* maps.c: large anonymous mappings as regions. */
bool maps_overlap(uintptr_t p, size_t len);

/* statfile.c: PID.stats in cfg.stats_dir, rewritten every half second. */
void statfile_start(void);
void statfile_remove(void);
void statfile_forked(void);
/* Format the counters a person wants to see, one "key value" per line. */
size_t stats_format(const struct upg_stats *st, char *buf, size_t size);

#endif /* UPG_PRELOAD_H */
