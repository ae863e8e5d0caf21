/* Unit tests: the preload library's private allocator (preload/private.c),
 * where the runtime's own metadata lives under LD_PRELOAD. */
#include <criterion/criterion.h>
#include <stdint.h>
#include <string.h>

#include "preload.h"

/* Every size up to two pages, at the aligns the runtime asks for: the bytes
 * asked for lie inside the block, clear of its neighbour's, whether the
 * neighbour is in use or back on its free list (whose link is its first
 * word). Sizes just below a power of two are where a miscounted header
 * spills over. */
Test(private, blocks_hold_what_was_asked, .timeout = 60)
{
	static const size_t aligns[] = { 1, 16, 64, 4096, 8192 };

	for (size_t a = 0; a < sizeof(aligns) / sizeof(aligns[0]); a++) {
		for (size_t n = 1; n <= 8192; n++) {
			uint8_t *p = priv_alloc(aligns[a], n), *q = priv_alloc(aligns[a], n);

			cr_assert(p && q, "align %zu size %zu: no memory", aligns[a], n);
			cr_assert(priv_owns(p) && priv_owns(q));
			cr_assert_eq((uintptr_t)p % (aligns[a] < 16 ? 16 : aligns[a]), 0,
				     "align %zu size %zu: %p", aligns[a], n, (void *)p);
			cr_assert_geq(priv_usable(p), n, "align %zu size %zu: usable %zu",
				      aligns[a], n, priv_usable(p));
			memset(p, 0xa5, n);
			memset(q, 0x5a, n);
			priv_free(q);
			for (size_t i = 0; i < n; i++)
				cr_assert_eq(p[i], 0xa5, "align %zu size %zu: byte %zu of %zu lost",
					     aligns[a], n, i, n);
			priv_free(p);
		}
	}
}

/* realloc keeps the contents and grows past a class boundary. */
Test(private, realloc_keeps_contents, .timeout = 10)
{
	uint8_t *p = priv_alloc(16, 100);

	cr_assert_not_null(p);
	for (int i = 0; i < 100; i++)
		p[i] = (uint8_t)i;
	p = priv_realloc(p, 10000);
	cr_assert_not_null(p);
	cr_assert_geq(priv_usable(p), 10000);
	for (int i = 0; i < 100; i++)
		cr_assert_eq(p[i], (uint8_t)i);
	priv_free(p);
}
