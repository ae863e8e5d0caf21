/* registry.c - see registry.h. */
#include "registry.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "region.h"

struct registry_snap {
	struct registry_snap *next_retired;
	size_t n;
	struct upg_region *r[];
};

static struct registry_snap *snap_alloc(size_t n)
{
	struct registry_snap *s = malloc(sizeof(*s) + n * sizeof(s->r[0]));

	if (s) {
		s->next_retired = NULL;
		s->n = n;
	}
	return s;
}

int registry_init(struct registry *reg)
{
	struct registry_snap *s = snap_alloc(0);

	if (!s)
		return -ENOMEM;
	atomic_init(&reg->cur, s);
	reg->retired = NULL;
	return -pthread_mutex_init(&reg->lock, NULL);
}

static void free_list(struct registry_snap *s)
{
	while (s) {
		struct registry_snap *next = s->next_retired;

		free(s);
		s = next;
	}
}

void registry_destroy(struct registry *reg)
{
	free(atomic_load(&reg->cur));
	free_list(reg->retired);
	pthread_mutex_destroy(&reg->lock);
}

/* Index of the first entry whose base is above addr. */
static size_t upper_bound(const struct registry_snap *s, uintptr_t addr)
{
	size_t lo = 0, hi = s->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (region_base(s->r[mid]) <= addr)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

struct upg_region *registry_lookup(struct registry *reg, uintptr_t addr)
{
	struct registry_snap *s = atomic_load_explicit(&reg->cur, memory_order_acquire);
	size_t i = upper_bound(s, addr);
	struct upg_region *r;

	if (i == 0)
		return NULL;
	r = s->r[i - 1];
	return addr - region_base(r) < r->size ? r : NULL;
}

/* Publish next in place of the current array; caller holds the lock. */
static void publish(struct registry *reg, struct registry_snap *next)
{
	struct registry_snap *old = atomic_load_explicit(&reg->cur, memory_order_relaxed);

	atomic_store_explicit(&reg->cur, next, memory_order_release);
	old->next_retired = reg->retired;
	reg->retired = old;
}

/* A copy of the current array without r (if present) and with `add` (if not
 * NULL) in order. Caller holds the lock. */
static int rebuild(struct registry *reg, struct upg_region *drop, struct upg_region *add)
{
	struct registry_snap *s = atomic_load_explicit(&reg->cur, memory_order_relaxed), *next;
	size_t j = 0;
	bool placed = add == NULL;

	next = snap_alloc(s->n + 1);
	if (!next)
		return -ENOMEM;
	for (size_t i = 0; i < s->n; i++) {
		struct upg_region *r = s->r[i];

		if (r == drop)
			continue;
		if (!placed && region_base(add) < region_base(r)) {
			if (region_base(add) + add->size > region_base(r))
				goto overlap;
			next->r[j++] = add;
			placed = true;
		}
		if (!placed && region_base(r) + r->size > region_base(add))
			goto overlap;
		next->r[j++] = r;
	}
	if (!placed)
		next->r[j++] = add;
	next->n = j;
	publish(reg, next);
	return 0;
overlap:
	free(next);
	return -EEXIST;
}

struct upg_region *registry_next(struct registry *reg, uintptr_t addr)
{
	struct registry_snap *s = atomic_load_explicit(&reg->cur, memory_order_acquire);
	size_t i = upper_bound(s, addr);

	if (i > 0 && addr - region_base(s->r[i - 1]) < s->r[i - 1]->size)
		return s->r[i - 1];
	return i < s->n ? s->r[i] : NULL;
}

int registry_insert(struct registry *reg, struct upg_region *r)
{
	int ret;

	pthread_mutex_lock(&reg->lock);
	ret = rebuild(reg, NULL, r);
	pthread_mutex_unlock(&reg->lock);
	return ret;
}

void registry_remove(struct registry *reg, struct upg_region *r)
{
	pthread_mutex_lock(&reg->lock);
	/* Removal cannot overlap; on -ENOMEM keep trying: the caller is about
	 * to free r and must not leave it reachable. */
	while (rebuild(reg, r, NULL) == -ENOMEM)
		;
	pthread_mutex_unlock(&reg->lock);
}

int registry_moved(struct registry *reg, struct upg_region *r)
{
	int ret;

	pthread_mutex_lock(&reg->lock);
	ret = rebuild(reg, r, r);
	pthread_mutex_unlock(&reg->lock);
	return ret;
}

void registry_reclaim(struct registry *reg, struct qsbr *q)
{
	struct registry_snap *list;

	pthread_mutex_lock(&reg->lock);
	list = reg->retired;
	reg->retired = NULL;
	pthread_mutex_unlock(&reg->lock);
	if (!list)
		return;
	qsbr_synchronize(q);
	free_list(list);
}
