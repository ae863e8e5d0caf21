/*
 * alloc.c - the malloc family. The program's calls go to jemalloc (linked
 * in, its own names renamed to upgje_*), whose extents come from upager
 * regions; calls made by upager's code go to the private allocator.
 * free() and realloc() tell the two apart by address.
 */
#include <errno.h>
#include <stdlib.h>
#include <malloc.h>
#include <string.h>

#include "preload.h"

EXPORT void *malloc(size_t n)
{
	if (unlikely(preload_in_runtime()))
		return priv_alloc(16, n);
	return upgje_malloc(n);
}

EXPORT void free(void *p)
{
	if (!p)
		return;
	if (unlikely(priv_owns(p)))
		priv_free(p);
	else
		upgje_free(p);
}

EXPORT void *calloc(size_t n, size_t size)
{
	size_t total;
	void *p;

	if (likely(!preload_in_runtime()))
		return upgje_calloc(n, size);
	if (__builtin_mul_overflow(n, size, &total)) {
		errno = ENOMEM;
		return NULL;
	}
	p = priv_alloc(16, total);
	if (p)
		memset(p, 0, total);
	return p;
}

EXPORT void *realloc(void *p, size_t n)
{
	if (p && priv_owns(p))
		return priv_realloc(p, n);
	if (!p && preload_in_runtime())
		return priv_alloc(16, n);
	return upgje_realloc(p, n);
}

EXPORT void *reallocarray(void *p, size_t n, size_t size)
{
	size_t total;

	if (__builtin_mul_overflow(n, size, &total)) {
		errno = ENOMEM;
		return NULL;
	}
	return realloc(p, total);
}

EXPORT int posix_memalign(void **out, size_t align, size_t n)
{
	if (likely(!preload_in_runtime()))
		return upgje_posix_memalign(out, align, n);
	if (align < sizeof(void *) || (align & (align - 1)))
		return EINVAL;
	*out = priv_alloc(align, n);
	return *out ? 0 : ENOMEM;
}

EXPORT void *aligned_alloc(size_t align, size_t n)
{
	if (unlikely(preload_in_runtime()))
		return priv_alloc(align, n);
	return upgje_aligned_alloc(align, n);
}

EXPORT void *memalign(size_t align, size_t n)
{
	if (unlikely(preload_in_runtime()))
		return priv_alloc(align, n);
	return upgje_memalign(align, n);
}

EXPORT void *valloc(size_t n)
{
	if (unlikely(preload_in_runtime()))
		return priv_alloc(4096, n);
	return upgje_valloc(n);
}

EXPORT void *pvalloc(size_t n)
{
	return valloc((n + 4095) & ~(size_t)4095);
}

EXPORT size_t malloc_usable_size(void *p)
{
	if (!p)
		return 0;
	if (priv_owns(p))
		return priv_usable(p);
	return upgje_malloc_usable_size(p);
}
