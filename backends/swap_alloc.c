/* swap_alloc.c - see swap_alloc.h. */
#include "swap_alloc.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

#define NIL UINT32_MAX
#define ALL_SLOTS UINT64_MAX

/*
 * Where a cluster is follows from its bitmap: used == 0 on the free list
 * (or held by a caller, see struct swap_hold); used == ALL_SLOTS on no list;
 * anything else: its file's current cluster, or on its nonfull list.
 */
struct cluster {
	uint64_t used;          /* bit i: slot i is allocated */
	uint32_t prev, next;    /* links on the free or nonfull list */
};

struct clist {
	uint32_t head, tail;
};

struct sfile {
	struct cluster *c;
	uint32_t nclusters;
	uint32_t cur;           /* current cluster or NIL; has free slots at >= next */
	unsigned next;
	struct clist free, nonfull;
	uint64_t nfree;
};

/* Files of one priority: order[first .. first + n), taking turns from rotor. */
struct group {
	unsigned first, n, rotor;
};

struct swap_alloc {
	pthread_mutex_t lock;
	unsigned nfiles, ngroups;
	struct sfile files[SWAP_MAX_FILES];
	unsigned order[SWAP_MAX_FILES];   /* file indices, highest priority first */
	struct group groups[SWAP_MAX_FILES];
	uint64_t total, used, bad_frees;
};

static void list_push(struct sfile *f, struct clist *l, uint32_t i)
{
	f->c[i].prev = l->tail;
	f->c[i].next = NIL;
	if (l->tail == NIL)
		l->head = i;
	else
		f->c[l->tail].next = i;
	l->tail = i;
}

static void list_del(struct sfile *f, struct clist *l, uint32_t i)
{
	struct cluster *c = &f->c[i];

	if (c->prev == NIL)
		l->head = c->next;
	else
		f->c[c->prev].next = c->next;
	if (c->next == NIL)
		l->tail = c->prev;
	else
		f->c[c->next].prev = c->prev;
}

static uint32_t list_pop(struct sfile *f, struct clist *l)
{
	uint32_t i = l->head;

	if (i != NIL)
		list_del(f, l, i);
	return i;
}

static void put_free(struct sfile *f, uint32_t i)
{
	list_push(f, &f->free, i);
	f->nfree++;
}

/* Give f a current cluster: a free one (contiguous room) before a partly
 * used one. False when f is full. */
static bool take_cluster(struct sfile *f)
{
	uint32_t i = list_pop(f, &f->free);

	if (i != NIL)
		f->nfree--;
	else
		i = list_pop(f, &f->nonfull);
	if (i == NIL)
		return false;
	f->cur = i;
	f->next = 0;
	return true;
}

/* Up to n slots from file fi's current cluster, in order; the cluster stops
 * being current once nothing is left past the last slot handed out. */
static unsigned alloc_from_cur(struct swap_alloc *a, unsigned fi, unsigned n, uint64_t *slots)
{
	struct sfile *f = &a->files[fi];
	struct cluster *c = &f->c[f->cur];
	uint64_t avail = ~c->used & (ALL_SLOTS << f->next);
	uint64_t base = (uint64_t)f->cur * SWAP_CLUSTER_SLOTS;
	unsigned got = 0;

	while (got < n && avail) {
		unsigned b = (unsigned)__builtin_ctzll(avail);

		avail &= avail - 1;
		c->used |= 1ull << b;
		slots[got++] = swap_slot(fi, base + b);
		f->next = b + 1;
	}
	if (!avail) {
		if (c->used != ALL_SLOTS)
			list_push(f, &f->nonfull, f->cur);
		f->cur = NIL;
	}
	a->used += got;
	return got;
}

static unsigned alloc_group(struct swap_alloc *a, struct group *g, unsigned n, uint64_t *slots)
{
	unsigned got = 0, full = 0;

	/* Each pass either hands out a slot or finds one more file full. */
	while (got < n && full < g->n) {
		unsigned fi = a->order[g->first + g->rotor];
		struct sfile *f = &a->files[fi];

		if (f->cur == NIL && !take_cluster(f)) {
			full++;
			g->rotor = (g->rotor + 1) % g->n;
			continue;
		}
		full = 0;
		got += alloc_from_cur(a, fi, n - got, slots + got);
		/* Cluster used up: stripe, the next one comes from the next file. */
		if (f->cur == NIL)
			g->rotor = (g->rotor + 1) % g->n;
	}
	return got;
}

unsigned swap_alloc_get(struct swap_alloc *a, unsigned n, uint64_t *slots)
{
	unsigned got = 0;

	pthread_mutex_lock(&a->lock);
	for (unsigned i = 0; i < a->ngroups && got < n; i++)
		got += alloc_group(a, &a->groups[i], n - got, slots + got);
	pthread_mutex_unlock(&a->lock);
	return got;
}

static void free_one(struct swap_alloc *a, uint64_t slot, struct swap_hold *hold)
{
	unsigned fi = swap_slot_file(slot);
	uint64_t page = swap_slot_page(slot);
	struct sfile *f = &a->files[fi < a->nfiles ? fi : 0];
	uint32_t ci = (uint32_t)(page / SWAP_CLUSTER_SLOTS);
	uint64_t bit = 1ull << (page % SWAP_CLUSTER_SLOTS);
	struct cluster *c;
	bool was_full;

	if (fi >= a->nfiles || page >= (uint64_t)f->nclusters * SWAP_CLUSTER_SLOTS ||
	    !(f->c[ci].used & bit)) {
		a->bad_frees++;
		return;
	}
	c = &f->c[ci];
	was_full = c->used == ALL_SLOTS;
	c->used &= ~bit;
	a->used--;
	if (c->used) {
		if (was_full)
			list_push(f, &f->nonfull, ci);
		return;
	}
	/* Emptied: out of where it was, onto the free list or into hold. */
	if (ci == f->cur)
		f->cur = NIL;
	else if (!was_full)
		list_del(f, &f->nonfull, ci);
	if (hold) {
		hold->c[hold->n].file = fi;
		hold->c[hold->n].cluster = ci;
		hold->n++;
	} else {
		put_free(f, ci);
	}
}

unsigned swap_alloc_free(struct swap_alloc *a, const uint64_t *slots, unsigned n,
			 struct swap_hold *hold)
{
	unsigned i;

	pthread_mutex_lock(&a->lock);
	for (i = 0; i < n && !(hold && hold->n == SWAP_HOLD_MAX); i++)
		free_one(a, slots[i], hold);
	pthread_mutex_unlock(&a->lock);
	return i;
}

void swap_alloc_release(struct swap_alloc *a, struct swap_hold *hold)
{
	pthread_mutex_lock(&a->lock);
	for (unsigned i = 0; i < hold->n; i++)
		put_free(&a->files[hold->c[i].file], hold->c[i].cluster);
	pthread_mutex_unlock(&a->lock);
	hold->n = 0;
}

void swap_alloc_get_usage(struct swap_alloc *a, struct swap_alloc_usage *u)
{
	pthread_mutex_lock(&a->lock);
	u->slots_total = a->total;
	u->slots_used = a->used;
	u->bad_frees = a->bad_frees;
	u->clusters_free = 0;
	for (unsigned i = 0; i < a->nfiles; i++)
		u->clusters_free += a->files[i].nfree;
	pthread_mutex_unlock(&a->lock);
}

int swap_alloc_create(unsigned nfiles, const uint32_t *clusters, const int *prio,
		      struct swap_alloc **out)
{
	struct swap_alloc *a;

	if (!nfiles || nfiles > SWAP_MAX_FILES)
		return -EINVAL;
	for (unsigned i = 0; i < nfiles; i++)
		if (!clusters[i] || clusters[i] == NIL)
			return -EINVAL;
	a = calloc(1, sizeof(*a));
	if (!a)
		return -ENOMEM;
	pthread_mutex_init(&a->lock, NULL);
	a->nfiles = nfiles;
	for (unsigned i = 0; i < nfiles; i++) {
		struct sfile *f = &a->files[i];

		f->c = calloc(clusters[i], sizeof(*f->c));
		if (!f->c) {
			swap_alloc_destroy(a);
			return -ENOMEM;
		}
		f->nclusters = clusters[i];
		f->cur = NIL;
		f->free = f->nonfull = (struct clist){ NIL, NIL };
		for (uint32_t j = 0; j < clusters[i]; j++)
			put_free(f, j);
		a->total += (uint64_t)clusters[i] * SWAP_CLUSTER_SLOTS;
	}
	/* Highest priority first; files of equal priority keep their order. */
	for (unsigned i = 0; i < nfiles; i++) {
		unsigned j = i;

		for (; j && prio[a->order[j - 1]] < prio[i]; j--)
			a->order[j] = a->order[j - 1];
		a->order[j] = i;
	}
	for (unsigned i = 0; i < nfiles; i++) {
		if (!i || prio[a->order[i]] != prio[a->order[i - 1]])
			a->groups[a->ngroups++].first = i;
		a->groups[a->ngroups - 1].n++;
	}
	*out = a;
	return 0;
}

void swap_alloc_destroy(struct swap_alloc *a)
{
	if (!a)
		return;
	for (unsigned i = 0; i < a->nfiles; i++)
		free(a->files[i].c);
	pthread_mutex_destroy(&a->lock);
	free(a);
}
