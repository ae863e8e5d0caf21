/*
 * maps.c - mmap, munmap, mremap and madvise. Anonymous private read-write
 * mappings of at least UPAGER_MMAP_THRESHOLD bytes become upager regions;
 * the calls that change them do to the region what the kernel would do to
 * the mapping. Everything else goes to the kernel untouched.
 *
 * Managed mappings are kept in an array sorted by address, under a lock
 * taken only by calls that concern large or managed mappings.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "preload.h"

struct map {
	uintptr_t start;
	uint64_t len;       /* as created; parts may have been unmapped since */
	upg_region *r;
};

static pthread_mutex_t maps_lock = PTHREAD_MUTEX_INITIALIZER;
static struct map *maps;
static size_t nmaps, maps_cap;
static _Atomic size_t nmaps_seen;   /* nmaps, read without the lock */

static uint64_t round_page(uint64_t n)
{
	return (n + preload.page_size - 1) & ~(preload.page_size - 1);
}

/* First map whose end is above p. Caller holds maps_lock. */
static size_t maps_find(uintptr_t p)
{
	size_t lo = 0, hi = nmaps;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;

		if (maps[mid].start + maps[mid].len <= p)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static int maps_insert(uintptr_t start, uint64_t len, upg_region *r)
{
	size_t i;

	if (nmaps == maps_cap) {
		size_t cap = maps_cap ? maps_cap * 2 : 64;
		struct map *m;

		preload_enter();
		m = realloc(maps, cap * sizeof(*m));
		preload_leave();
		if (!m)
			return -ENOMEM;
		maps = m;
		maps_cap = cap;
	}
	i = maps_find(start);
	memmove(&maps[i + 1], &maps[i], (nmaps - i) * sizeof(*maps));
	maps[i] = (struct map){ start, len, r };
	nmaps++;
	atomic_store(&nmaps_seen, nmaps);
	return 0;
}

static void maps_delete(size_t i)
{
	memmove(&maps[i], &maps[i + 1], (nmaps - i - 1) * sizeof(*maps));
	nmaps--;
	atomic_store(&nmaps_seen, nmaps);
}

bool maps_overlap(uintptr_t p, size_t len)
{
	bool hit;
	size_t i;

	if (!atomic_load_explicit(&nmaps_seen, memory_order_relaxed))
		return false;
	pthread_mutex_lock(&maps_lock);
	i = maps_find(p);
	hit = i < nmaps && maps[i].start < p + len;
	pthread_mutex_unlock(&maps_lock);
	return hit;
}

/* A new region of len bytes, or NULL. */
static void *region_map(uint64_t len)
{
	upg_region *r;
	void *addr;
	int ret;

	preload_enter();
	ret = upg_region_create(preload.ctx, round_page(len), NULL, &r);
	preload_leave();
	if (ret < 0)
		return NULL;
	addr = upg_region_addr(r);
	pthread_mutex_lock(&maps_lock);
	ret = maps_insert((uintptr_t)addr, round_page(len), r);
	pthread_mutex_unlock(&maps_lock);
	if (ret < 0) {
		preload_enter();
		upg_region_destroy(r);
		preload_leave();
		return NULL;
	}
	return addr;
}

struct range_gap {
	uintptr_t start, end;
};

/*
 * Unmap [p, p + len) from the managed mappings it overlaps. The parts
 * outside them are left for the caller (gaps[] receives them, up to ngaps;
 * returns how many). Caller holds maps_lock.
 */
static size_t unmap_managed(uintptr_t p, uint64_t len, struct range_gap *gaps, size_t max_gaps)
{
	uintptr_t at = p, end = p + len;
	size_t i = maps_find(p), ngaps = 0;

	while (at < end) {
		uintptr_t s, e;

		if (i >= nmaps || maps[i].start >= end) {
			if (ngaps < max_gaps)
				gaps[ngaps++] = (struct range_gap){ at, end };
			break;
		}
		s = maps[i].start > at ? maps[i].start : at;
		e = maps[i].start + maps[i].len < end ? maps[i].start + maps[i].len : end;
		if (s > at && ngaps < max_gaps)
			gaps[ngaps++] = (struct range_gap){ at, s };
		preload_enter();
		if (upg_region_unmap(maps[i].r, s - maps[i].start, e - s) == 1) {
			preload_leave();
			maps_delete(i);
		} else {
			preload_leave();
			i++;
		}
		at = e;
	}
	return ngaps;
}

static int unmap(void *addr, size_t len)
{
	struct range_gap gaps[64];
	size_t n;
	int ret = 0;

	len = round_page(len);
	pthread_mutex_lock(&maps_lock);
	n = unmap_managed((uintptr_t)addr, len, gaps, 64);
	pthread_mutex_unlock(&maps_lock);
	for (size_t i = 0; i < n; i++)
		if (upg_sys_munmap((void *)gaps[i].start, gaps[i].end - gaps[i].start) < 0)
			ret = -1;
	return ret;
}

static bool wanted(void *addr, size_t len, int prot, int flags, int fd)
{
	return !addr && fd == -1 && (flags & MAP_ANONYMOUS) &&
	       (flags & MAP_TYPE) == MAP_PRIVATE &&
	       !(flags & (MAP_FIXED | MAP_FIXED_NOREPLACE | MAP_STACK | MAP_GROWSDOWN |
			  MAP_HUGETLB | MAP_POPULATE)) &&
	       prot == (PROT_READ | PROT_WRITE) && len >= preload.cfg.mmap_threshold;
}

EXPORT void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	int saved = errno;
	void *p;

	if (unlikely(preload_in_runtime()) || !atomic_load_explicit(&preload.ready,
								 memory_order_acquire))
		return upg_sys_mmap(addr, len, prot, flags, fd, off);
	if (wanted(addr, len, prot, flags, fd)) {
		p = region_map(len);
		if (p) {
			errno = saved;
			return p;
		}
	}
	/* A fixed mapping over managed memory replaces it: unmap it from
	 * its region first, as the kernel would. */
	if ((flags & MAP_FIXED) && maps_overlap((uintptr_t)addr, len)) {
		struct range_gap gaps[1];

		pthread_mutex_lock(&maps_lock);
		unmap_managed((uintptr_t)addr, round_page(len), gaps, 0);
		pthread_mutex_unlock(&maps_lock);
	}
	errno = saved;
	return upg_sys_mmap(addr, len, prot, flags, fd, off);
}
EXPORT void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off)
	__attribute__((alias("mmap")));

EXPORT int munmap(void *addr, size_t len)
{
	if (unlikely(preload_in_runtime()) || !atomic_load(&preload.ready) ||
	    !maps_overlap((uintptr_t)addr, len))
		return upg_sys_munmap(addr, len);
	if ((uintptr_t)addr & (preload.page_size - 1) || !len) {
		errno = EINVAL;
		return -1;
	}
	return unmap(addr, len);
}

/* mremap of a managed mapping: shrinking unmaps the tail; growing makes a
 * new region and copies (pages swapped out come back on the way). */
static void *remap_managed(void *old, size_t old_len, size_t new_len, int flags)
{
	uintptr_t p = (uintptr_t)old;
	void *q;

	old_len = round_page(old_len);
	new_len = round_page(new_len);
	if (flags & (MREMAP_FIXED | MREMAP_DONTUNMAP) || !old_len) {
		errno = EINVAL;
		return MAP_FAILED;
	}
	if (new_len <= old_len) {
		if (new_len < old_len && unmap((void *)(p + new_len), old_len - new_len) < 0)
			return MAP_FAILED;
		return old;
	}
	if (!(flags & MREMAP_MAYMOVE)) {
		errno = ENOMEM;
		return MAP_FAILED;
	}
	q = region_map(new_len);
	if (!q)
		q = upg_sys_mmap(NULL, new_len, PROT_READ | PROT_WRITE,
				 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (q == MAP_FAILED) {
		errno = ENOMEM;
		return MAP_FAILED;
	}
	memcpy(q, old, old_len);
	unmap(old, old_len);
	return q;
}

EXPORT void *mremap(void *old, size_t old_len, size_t new_len, int flags, ...)
{
	void *new_addr = NULL;

	if (flags & MREMAP_FIXED) {
		__builtin_va_list ap;

		__builtin_va_start(ap, flags);
		new_addr = __builtin_va_arg(ap, void *);
		__builtin_va_end(ap);
	}
	if (unlikely(preload_in_runtime()) || !atomic_load(&preload.ready) ||
	    !maps_overlap((uintptr_t)old, old_len ? old_len : 1))
		return upg_sys_mremap(old, old_len, new_len, flags, new_addr);
	return remap_managed(old, old_len, new_len, flags);
}

/* MADV_FREE lets the kernel keep the pages until it needs them, behind
 * upager's back: on managed memory it becomes MADV_DONTNEED, which the
 * advice allows (the contents may read as zeros afterwards). */
EXPORT int madvise(void *addr, size_t len, int advice)
{
	if (advice == MADV_FREE && !preload_in_runtime() && atomic_load(&preload.ready) &&
	    (maps_overlap((uintptr_t)addr, len) || extents_overlap((uintptr_t)addr, len)))
		advice = MADV_DONTNEED;
	return upg_sys_madvise(addr, len, advice);
}
