/* Unit tests: the region registry and its QSBR grace periods. */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

#include "qsbr.h"
#include "region.h"
#include "registry.h"

static struct upg_region *fake_region(uintptr_t base, uint64_t size)
{
	struct upg_region *r = calloc(1, sizeof(*r));

	cr_assert_not_null(r);
	atomic_init(&r->base, base);
	r->size = size;
	return r;
}

Test(registry, lookup_insert_remove, .timeout = 10)
{
	struct registry reg;
	struct qsbr q;
	struct upg_region *r[100];

	cr_assert_eq(registry_init(&reg), 0);
	qsbr_init(&q, NULL, 0);
	/* Insert in a scrambled order; the array must come out sorted. */
	for (int i = 0; i < 100; i++) {
		int k = (i * 37) % 100;

		r[k] = fake_region(0x100000 + (uintptr_t)k * 0x10000, 0x8000);
	}
	for (int i = 0; i < 100; i++)
		cr_assert_eq(registry_insert(&reg, r[(i * 37) % 100]), 0);
	for (int k = 0; k < 100; k++) {
		uintptr_t b = 0x100000 + (uintptr_t)k * 0x10000;

		cr_assert_eq(registry_lookup(&reg, b), r[k]);
		cr_assert_eq(registry_lookup(&reg, b + 0x7fff), r[k]);
		cr_assert_null(registry_lookup(&reg, b + 0x8000), "gap after region %d", k);
		cr_assert_eq(registry_next(&reg, b + 0x8000), k < 99 ? r[k + 1] : NULL);
	}
	cr_assert_null(registry_lookup(&reg, 0xfffff));
	cr_assert_eq(registry_next(&reg, 0), r[0]);

	/* Overlaps are refused, on either side. */
	struct upg_region *bad = fake_region(0x100000 + 0x4000, 0x10000);

	cr_assert_eq(registry_insert(&reg, bad), -EEXIST);
	atomic_store(&bad->base, 0x100000 - 0x1000);
	cr_assert_eq(registry_insert(&reg, bad), -EEXIST);
	free(bad);

	/* Removal, and a move re-sorts. */
	registry_remove(&reg, r[50]);
	cr_assert_null(registry_lookup(&reg, 0x100000 + 50 * 0x10000));
	atomic_store(&r[0]->base, 0x100000 + 50 * 0x10000);
	cr_assert_eq(registry_moved(&reg, r[0]), 0);
	cr_assert_eq(registry_lookup(&reg, 0x100000 + 50 * 0x10000 + 1), r[0]);
	cr_assert_null(registry_lookup(&reg, 0x100000));
	registry_reclaim(&reg, &q);
	registry_destroy(&reg);
	for (int k = 0; k < 100; k++)
		free(r[k]);
}

/* Readers look up permanent regions without locks while a writer keeps
 * replacing the array; ASan catches a reader touching a freed array. */
#define READERS 3
#define STABLE 64

static struct registry sreg;
static struct qsbr sq;
static struct qsbr_reader sreaders[READERS];
static struct upg_region *stable[STABLE];
static _Atomic int stop;

static void *reader(void *arg)
{
	struct qsbr_reader *me = arg;
	unsigned long n = 0;

	qsbr_online(&sq, me);
	while (!atomic_load(&stop)) {
		int k = (int)(n++ % STABLE);
		uintptr_t addr = region_base(stable[k]) + 0x100;

		if (registry_lookup(&sreg, addr) != stable[k])
			return (void *)1;
		if ((n & 63) == 0)
			qsbr_quiescent(&sq, me);
		if ((n & 4095) == 0) {  /* sometimes go to sleep, as handlers do */
			qsbr_offline(me);
			sched_yield();
			qsbr_online(&sq, me);
		}
	}
	qsbr_offline(me);
	return NULL;
}

Test(registry, concurrent_readers_and_writer, .timeout = 60)
{
	pthread_t t[READERS];

	cr_assert_eq(registry_init(&sreg), 0);
	qsbr_init(&sq, sreaders, READERS);
	for (int k = 0; k < STABLE; k++) {
		stable[k] = fake_region(0x10000000 + (uintptr_t)k * 0x100000, 0x1000);
		cr_assert_eq(registry_insert(&sreg, stable[k]), 0);
	}
	for (int i = 0; i < READERS; i++)
		pthread_create(&t[i], NULL, reader, &sreaders[i]);
	for (int i = 0; i < 20000; i++) {
		struct upg_region *tr = fake_region(0x10000000 + (uintptr_t)(i % STABLE) * 0x100000 + 0x80000, 0x1000);

		cr_assert_eq(registry_insert(&sreg, tr), 0);
		registry_remove(&sreg, tr);
		registry_reclaim(&sreg, &sq);
		free(tr);
	}
	atomic_store(&stop, 1);
	for (int i = 0; i < READERS; i++) {
		void *ret;

		pthread_join(t[i], &ret);
		cr_assert_null(ret, "reader %d missed a permanent region", i);
	}
	registry_destroy(&sreg);
	for (int k = 0; k < STABLE; k++)
		free(stable[k]);
}
