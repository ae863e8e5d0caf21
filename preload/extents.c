/*
 * extents.c - jemalloc's extent hooks: every arena takes its memory from
 * heap regions, large upager regions handed out front to back. jemalloc
 * keeps what it frees for reuse (opt.retain), so addresses are never given
 * back; purging drops the pages (MADV_DONTNEED: upager forgets them, their
 * swap slots and budget included) and they read as zeros afterwards.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/mman.h>

#include <jemalloc/jemalloc.h>

#include "preload.h"

/* jemalloc's options, read when it starts: no huge arena (every arena gets
 * the hooks when the context starts, and the huge one would be made later),
 * no background threads (they would run jemalloc on threads of their own). */
const char *malloc_conf = "oversize_threshold:0,background_thread:false";

#define HEAP_REGION_SIZE (64ull << 30)
#define HEAP_MAX_REGIONS 256

static pthread_mutex_t heap_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
	uintptr_t start, end;
} heap[HEAP_MAX_REGIONS];
static _Atomic unsigned nheap;
static uintptr_t heap_top;

static int heap_of(uintptr_t p)
{
	unsigned n = atomic_load_explicit(&nheap, memory_order_acquire);

	for (unsigned i = 0; i < n; i++)
		if (p >= heap[i].start && p < heap[i].end)
			return (int)i;
	return -1;
}

bool extents_overlap(uintptr_t p, size_t len)
{
	unsigned n = atomic_load_explicit(&nheap, memory_order_acquire);

	for (unsigned i = 0; i < n; i++)
		if (p < heap[i].end && p + len > heap[i].start)
			return true;
	return false;
}

/* One more heap region. Caller holds heap_lock. */
static int heap_grow(uint64_t need)
{
	struct upg_region_opts opts;
	uint64_t size = need > HEAP_REGION_SIZE ? (need + HEAP_REGION_SIZE - 1) / HEAP_REGION_SIZE *
							  HEAP_REGION_SIZE
						: HEAP_REGION_SIZE;
	unsigned n = atomic_load(&nheap);
	upg_region *r;
	int ret;

	if (n == HEAP_MAX_REGIONS)
		return -ENOMEM;
	upg_region_opts_init(&opts);
	opts.align = 2ull << 20;
	preload_enter();
	ret = upg_region_create(preload.ctx, size, &opts, &r);
	preload_leave();
	if (ret < 0)
		return ret;
	heap[n].start = (uintptr_t)upg_region_addr(r);
	heap[n].end = heap[n].start + size;
	heap_top = heap[n].start;
	atomic_store_explicit(&nheap, n + 1, memory_order_release);
	return 0;
}

static void *ext_alloc(extent_hooks_t *hooks, void *new_addr, size_t size, size_t alignment,
		       bool *zero, bool *commit, unsigned arena_ind)
{
	uintptr_t p = 0;
	unsigned n;

	if (new_addr)
		return NULL;    /* growing in place: jemalloc finds another way */
	if (alignment < preload.page_size)
		alignment = preload.page_size;
	pthread_mutex_lock(&heap_lock);
	n = atomic_load(&nheap);
	if (n) {
		p = (heap_top + alignment - 1) & ~(uintptr_t)(alignment - 1);
		if (p > heap[n - 1].end || size > heap[n - 1].end - p)
			p = 0;
	}
	if (!p && heap_grow(size + alignment) == 0) {
		n = atomic_load(&nheap);
		p = (heap_top + alignment - 1) & ~(uintptr_t)(alignment - 1);
	}
	if (p)
		heap_top = p + size;
	pthread_mutex_unlock(&heap_lock);
	if (!p)
		return NULL;
	*zero = true;       /* never touched: reads as zeros */
	*commit = true;
	return (void *)p;
}

/* Refused: jemalloc keeps the extent for reuse. */
static bool ext_dalloc(extent_hooks_t *hooks, void *addr, size_t size, bool committed,
		       unsigned arena_ind)
{
	return true;
}

static void ext_destroy(extent_hooks_t *hooks, void *addr, size_t size, bool committed,
			unsigned arena_ind)
{
	upg_sys_madvise(addr, size, MADV_DONTNEED);
}

static bool ext_commit(extent_hooks_t *hooks, void *addr, size_t size, size_t offset,
		       size_t length, unsigned arena_ind)
{
	return false;       /* always committed */
}

static bool ext_decommit(extent_hooks_t *hooks, void *addr, size_t size, size_t offset,
			 size_t length, unsigned arena_ind)
{
	return true;        /* not supported: jemalloc purges instead */
}

static bool ext_purge(extent_hooks_t *hooks, void *addr, size_t size, size_t offset,
		      size_t length, unsigned arena_ind)
{
	return upg_sys_madvise((char *)addr + offset, length, MADV_DONTNEED) != 0;
}

static bool ext_split(extent_hooks_t *hooks, void *addr, size_t size, size_t size_a,
		      size_t size_b, bool committed, unsigned arena_ind)
{
	return false;
}

/* Extents of two heap regions stay apart, like two mappings would. */
static bool ext_merge(extent_hooks_t *hooks, void *addr_a, size_t size_a, void *addr_b,
		      size_t size_b, bool committed, unsigned arena_ind)
{
	return heap_of((uintptr_t)addr_a) != heap_of((uintptr_t)addr_b);
}

static extent_hooks_t hooks = {
	.alloc = ext_alloc,
	.dalloc = ext_dalloc,
	.destroy = ext_destroy,
	.commit = ext_commit,
	.decommit = ext_decommit,
	.purge_lazy = NULL,
	.purge_forced = ext_purge,
	.split = ext_split,
	.merge = ext_merge,
};

/*
 * Give every arena the hooks. Automatic arenas not made yet are made now,
 * with the hooks (jemalloc makes an arena when one is written). Extents
 * jemalloc took before, during its own start, stay where they are.
 */
int extents_install(void)
{
	extent_hooks_t *h = &hooks;
	unsigned narenas;
	size_t len = sizeof(narenas);
	char name[64];
	int ret;

	ret = mallctl("arenas.narenas", &narenas, &len, NULL, 0);
	if (ret)
		return -ret;
	for (unsigned i = 0; i < narenas; i++) {
		snprintf(name, sizeof(name), "arena.%u.extent_hooks", i);
		ret = mallctl(name, NULL, NULL, &h, sizeof(h));
		if (ret)
			return -ret;
	}
	return 0;
}
