/* region.c - regions: creation, destruction and changes to their layout. */
#define LOG_PREFIX "region: "
#include "region.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "ctx.h"
#include "log.h"
#include "paging.h"
#include "uffd.h"

/* State arrays up to this size come from calloc, larger ones from mmap. */
#define STATE_CALLOC_MAX (64u << 10)

void upg_region_opts_init(struct upg_region_opts *opts)
{
	memset(opts, 0, sizeof(*opts));
	opts->size = sizeof(*opts);
}

static int opts_copy(struct upg_region_opts *dst, const struct upg_region_opts *src)
{
	upg_region_opts_init(dst);
	if (!src)
		return 0;
	if (src->size < offsetof(struct upg_region_opts, page_size) + sizeof(src->page_size))
		return -EINVAL;
	memcpy(dst, src, src->size < sizeof(*dst) ? src->size : sizeof(*dst));
	dst->size = sizeof(*dst);
	if (dst->flags & ~(uint32_t)(UPG_REGION_FILE_RDONLY | UPG_REGION_FILE_CREATE))
		return -EINVAL;
	/* File flags without a file, or a file with nothing to say where. */
	if (!dst->file && (dst->flags || dst->file_offset))
		return -EINVAL;
	return 0;
}

/* Open r's data file (opts->file) in the context's data-file backend. */
static int file_attach(struct upg_region *r, const struct upg_region_opts *opts)
{
	struct paging *pg = r->ctx->paging;
	unsigned file_no;
	int ret;

	if (!pg)
		return -EINVAL;   /* a file region pages under a budget */
	r->rdonly = opts->flags & UPG_REGION_FILE_RDONLY;
	ret = datafile_attach(pg->files, opts->file, opts->file_offset, r->size, r->rdonly,
			      opts->flags & UPG_REGION_FILE_CREATE, &file_no);
	if (ret < 0)
		return ret;
	r->file = true;
	r->file_no = file_no;
	return 0;
}

/* A zeroed array of n elements of `size` bytes: calloc'd when small, an
 * untouched MAP_NORESERVE mapping when large, so that the metadata of a
 * sparse region costs nothing until touched (PG_NONE being 0). Without
 * huge pages: where transparent huge pages are "always" (Debian's arm64
 * kernel), one touched word would bring in 2 MiB of them, and walks that
 * skip untouched words (region_next_touched) would skip nothing. */
static void *array_alloc(uint64_t n, size_t size, size_t *bytes, bool *mapped)
{
	void *p;

	*bytes = n * size;
	*mapped = *bytes > STATE_CALLOC_MAX;
	if (!*mapped)
		return calloc(n, size);
	p = mmap(NULL, *bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
		 -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	madvise(p, *bytes, MADV_NOHUGEPAGE);
	return p;
}

static void array_free(void *p, size_t bytes, bool mapped)
{
	if (mapped)
		munmap(p, bytes);
	else
		free(p);
}

static void metadata_free(struct upg_region *r)
{
	bool crc_mapped = r->crc_bytes > STATE_CALLOC_MAX;

	if (r->state)
		array_free((void *)r->state, r->state_bytes, r->state_mapped);
	if (r->crc)
		array_free(r->crc, r->crc_bytes, crc_mapped);
}

static int metadata_alloc(struct upg_region *r, bool paging)
{
	bool crc_mapped;

	r->state = array_alloc(r->npages, sizeof(page_word), &r->state_bytes, &r->state_mapped);
	if (paging)
		r->crc = array_alloc(r->npages, sizeof(uint32_t), &r->crc_bytes, &crc_mapped);
	if (!r->state || (paging && !r->crc)) {
		metadata_free(r);
		return -ENOMEM;
	}
	return 0;
}

/* Give r an id and make it findable by it. -ENOSPC past UPG_MAX_REGIONS. */
static int id_alloc(struct upg_ctx *ctx, struct upg_region *r)
{
	int ret = 0;

	pthread_mutex_lock(&ctx->lock);
	if (ctx->id_nfree)
		r->id = ctx->id_free[--ctx->id_nfree];
	else if (ctx->id_next < UPG_MAX_REGIONS)
		/* Read without the lock by the reclaimer's scan. */
		r->id = __atomic_fetch_add(&ctx->id_next, 1, __ATOMIC_RELEASE);
	else
		ret = -ENOSPC;
	if (!ret)
		atomic_store_explicit(&ctx->by_id[r->id], r, memory_order_release);
	pthread_mutex_unlock(&ctx->lock);
	return ret;
}

/* After a grace period since by_id[id] was cleared. */
static void id_free(struct upg_ctx *ctx, uint32_t id)
{
	pthread_mutex_lock(&ctx->lock);
	if (ctx->id_nfree == ctx->id_cap) {
		uint32_t cap = ctx->id_cap ? 2 * ctx->id_cap : 256;
		uint32_t *ids = realloc(ctx->id_free, cap * sizeof(*ids));

		if (!ids) {
			/* Leak the id rather than fail a destroy. */
			pthread_mutex_unlock(&ctx->lock);
			return;
		}
		ctx->id_free = ids;
		ctx->id_cap = cap;
	}
	ctx->id_free[ctx->id_nfree++] = id;
	pthread_mutex_unlock(&ctx->lock);
}

uint64_t page_release(struct upg_region *r, uint64_t idx, uint64_t next)
{
	uintptr_t addr = region_page_addr(r, idx);
	uint64_t prev = pg_finish_to(&r->state[idx], next);

	/* Removed while busy: what the claimant left is not the page's any
	 * more. Forgotten before the waiters wake, so they fault it afresh. */
	if ((prev & PG_STALE) && pg_state(next) != PG_NONE)
		region_forget(r, addr, addr + region_page_size(r));
	if (prev & PG_WAITERS)
		uffd_wake(r->ctx->uffd, addr, region_page_size(r));
	return prev;
}

struct upg_region *region_by_id(struct upg_ctx *ctx, uint32_t id)
{
	return id < UPG_MAX_REGIONS ? atomic_load_explicit(&ctx->by_id[id], memory_order_acquire)
				    : NULL;
}

/* Reserve size bytes aligned to align (a power of two >= the base page). */
static void *map_aligned(uint64_t size, uint64_t align, uint64_t base_page)
{
	uint64_t extra = align > base_page ? align : 0;
	uint8_t *p = mmap(NULL, size + extra, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	uint8_t *aligned;

	if (p == MAP_FAILED || !extra)
		return p;
	aligned = (uint8_t *)(((uintptr_t)p + align - 1) & ~(uintptr_t)(align - 1));
	if (aligned > p)
		munmap(p, (size_t)(aligned - p));
	if (aligned + size < p + size + extra)
		munmap(aligned + size, (size_t)(p + size + extra - (aligned + size)));
	return aligned;
}

int upg_region_create(upg_ctx *ctx, uint64_t size, const struct upg_region_opts *user_opts,
		      upg_region **out)
{
	struct upg_region_opts opts;
	uint64_t base_page, psize;
	struct upg_region *r;
	void *addr;
	int ret;

	if (!ctx || !out)
		return -EINVAL;
	*out = NULL;
	ret = opts_copy(&opts, user_opts);
	if (ret < 0)
		return ret;
	base_page = 1ull << ctx->base_page_shift;
	psize = opts.page_size ? opts.page_size : base_page;
	if (psize < base_page || (psize & (psize - 1)) || psize > UPG_MAX_PAGE_SIZE)
		return -EINVAL;
	if (ctx->paging && psize != base_page)
		return -EINVAL;   /* swap slots are base pages */
	if (opts.file && opts.file_offset % 4096)
		return -EINVAL;   /* O_DIRECT */
	if (!size || size % psize || size > (1ull << 47))
		return -EINVAL;
	if (opts.align & (opts.align - 1) || opts.align > (1ull << 40))
		return -EINVAL;

	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->ctx = ctx;
	r->size = size;
	r->page_shift = (unsigned)__builtin_ctzll(psize);
	r->npages = size >> r->page_shift;
	pthread_mutex_init(&r->lock, NULL);
	if (opts.file && (ret = file_attach(r, &opts)) < 0)
		goto err_free;
	ret = metadata_alloc(r, ctx->paging != NULL);
	if (ret < 0)
		goto err_free;
	ret = id_alloc(ctx, r);
	if (ret < 0)
		goto err_state;

	addr = map_aligned(size, opts.align > psize ? opts.align : psize, base_page);
	if (addr == MAP_FAILED) {
		ret = -errno;
		goto err_id;
	}
	atomic_init(&r->base, (uintptr_t)addr);
	/* Eviction moves single pages: keep khugepaged from gathering them
	 * into huge pages first. */
	if (ctx->paging)
		madvise(addr, size, MADV_NOHUGEPAGE);

	/* Findable before registration, so that no fault can come for an
	 * address the registry does not know. */
	ret = registry_insert(&ctx->registry, r);
	if (ret < 0)
		goto err_unmap;
	atomic_store(&r->in_registry, true);
	ret = uffd_register(ctx->uffd, addr, size, ctx->register_mode);
	if (ret < 0) {
		pr_perr(ret, "cannot register %llu bytes", (unsigned long long)size);
		goto err_registry;
	}

	pthread_mutex_lock(&ctx->lock);
	r->next = ctx->regions;
	if (r->next)
		r->next->prev = r;
	ctx->regions = r;
	ctx->nregions++;
	pthread_mutex_unlock(&ctx->lock);
	registry_reclaim(&ctx->registry, &ctx->qsbr);
	*out = r;
	return 0;

err_registry:
	registry_remove(&ctx->registry, r);
err_unmap:
	munmap(addr, size);
err_id:
	/* Nothing can have looked the id up yet: no page of r was touched. */
	atomic_store(&ctx->by_id[r->id], NULL);
	registry_reclaim(&ctx->registry, &ctx->qsbr);
	id_free(ctx, r->id);
err_state:
	metadata_free(r);
err_free:
	if (r->file)
		datafile_detach(ctx->paging->files, r->file_no);
	pthread_mutex_destroy(&r->lock);
	free(r);
	return ret;
}

/* Apply fn to every part of r's range the application still maps. Caller
 * holds r->lock. Holes are sorted by start and do not overlap. */
static int for_each_mapped(struct upg_region *r, int (*fn)(struct upg_region *, void *, size_t))
{
	uintptr_t base = region_base(r), at = base, end = base + r->size;
	int ret = 0;

	for (size_t i = 0; i <= r->nholes; i++) {
		uintptr_t stop = i < r->nholes ? base + r->holes[i].start : end;

		if (stop > at && fn(r, (void *)at, stop - at) < 0 && !ret)
			ret = -errno;
		if (i < r->nholes)
			at = base + r->holes[i].end;
	}
	return ret;
}

/* A metadata page is touched if it is in memory or the kernel swapped it out
 * (mincore would call that one untouched). */
uint64_t region_next_touched(const struct upg_region *r, uint64_t idx)
{
	enum { VEC = 256 };
	const uint64_t psize = 1ull << r->ctx->base_page_shift;
	const uint64_t per_page = psize / sizeof(page_word);
	int fd = r->ctx->pagemap_fd;
	uint64_t ent[VEC];

	if (!r->state_mapped || fd < 0)
		return idx;
	while (idx < r->npages) {
		uint64_t first = idx / per_page * per_page;
		uintptr_t at = (uintptr_t)&r->state[first];
		uint64_t pages = (r->npages - first + per_page - 1) / per_page;
		ssize_t got;

		if (pages > VEC)
			pages = VEC;
		got = pread(fd, ent, pages * sizeof(ent[0]), (off_t)(at / psize * sizeof(ent[0])));
		if (got < (ssize_t)sizeof(ent[0]))
			return idx;
		for (uint64_t k = 0; k < (uint64_t)got / sizeof(ent[0]); k++, first += per_page)
			if ((ent[k] & (PM_PRESENT | PM_SWAP)) && first + per_page > idx)
				return first > idx ? first : idx;
		idx = first;
	}
	return r->npages;
}

static int register_part(struct upg_region *r, void *addr, size_t len)
{
	int ret = uffd_register(r->ctx->uffd, addr, len, r->ctx->register_mode);

	if (ret < 0)
		errno = -ret;
	return ret;
}

int region_register(struct upg_region *r)
{
	int ret;

	pthread_mutex_lock(&r->lock);
	ret = for_each_mapped(r, register_part);
	pthread_mutex_unlock(&r->lock);
	return ret;
}

static int unregister_part(struct upg_region *r, void *addr, size_t len)
{
	return uffd_unregister(r->ctx->uffd, addr, len);
}

static int unmap_part(struct upg_region *r, void *addr, size_t len)
{
	return munmap(addr, len);
}

int upg_region_destroy(upg_region *r)
{
	struct upg_ctx *ctx;
	int ret = 0;

	if (!r)
		return 0;
	ctx = r->ctx;
	/* What the application wrote reaches its file, as it would with
	 * munmap of a shared file mapping (and more: durably). */
	if (r->file && !r->rdonly)
		ret = upg_flush(r, 0, r->size, 0);
	atomic_store(&r->dying, true);

	/* Unregistering wakes every thread still waiting on the range; a
	 * message already read for it fails with ENOENT and is dropped. Then
	 * no handler may hold r any more once the grace period is over. */
	pthread_mutex_lock(&r->lock);
	for_each_mapped(r, unregister_part);
	pthread_mutex_unlock(&r->lock);
	if (atomic_exchange(&r->in_registry, false))
		registry_remove(&ctx->registry, r);
	atomic_store_explicit(&ctx->by_id[r->id], NULL, memory_order_release);
	registry_reclaim(&ctx->registry, &ctx->qsbr);
	qsbr_synchronize(&ctx->qsbr);
	/* Give back what its pages hold: swap slots, cooling frames, budget.
	 * Pages still busy belong to their claimants, which find the region
	 * gone and clean up themselves. The id is recycled only after, so
	 * that no frame reference can name another region's page meanwhile. */
	if (ctx->paging)
		region_forget(r, region_base(r), region_base(r) + r->size);
	/* No I/O to the file can be queued any more: the reclaimer and the
	 * handlers look the region up by id, and it is gone since the grace
	 * period (what they queued before holds the file open in the ring). */
	if (r->file)
		datafile_detach(ctx->paging->files, r->file_no);
	id_free(ctx, r->id);

	pthread_mutex_lock(&ctx->lock);
	if (r->prev)
		r->prev->next = r->next;
	else
		ctx->regions = r->next;
	if (r->next)
		r->next->prev = r->prev;
	ctx->nregions--;
	pthread_mutex_unlock(&ctx->lock);

	for_each_mapped(r, unmap_part);
	metadata_free(r);
	free(r->holes);
	pthread_mutex_destroy(&r->lock);
	free(r);
	return ret;
}

int upg_region_unmap(upg_region *r, uint64_t off, uint64_t len)
{
	uintptr_t start;
	bool gone;

	if (!r || !len || (off | len) & (region_page_size(r) - 1) || off > r->size ||
	    len > r->size - off)
		return -EINVAL;
	start = region_base(r) + off;
	if (munmap((void *)start, len) < 0)
		return -errno;
	/* The handler reading the UNMAP event does the same; recording it
	 * here as well means that when munmap returns the range is already a
	 * hole, so that a later destroy never unmaps what a new mapping took. */
	region_forget(r, start, start + len);
	region_unmapped(r, start, start + len);
	gone = !atomic_load(&r->in_registry);
	if (gone)
		upg_region_destroy(r);
	return gone;
}

void regions_destroy_all(struct upg_ctx *ctx)
{
	for (;;) {
		struct upg_region *r;

		pthread_mutex_lock(&ctx->lock);
		r = ctx->regions;
		pthread_mutex_unlock(&ctx->lock);
		if (!r)
			return;
		upg_region_destroy(r);
	}
}

void *upg_region_addr(const upg_region *r)
{
	return (void *)region_base(r);
}

uint64_t upg_region_size(const upg_region *r)
{
	return r->size;
}

uint64_t upg_region_page_size(const upg_region *r)
{
	return region_page_size(r);
}

void region_forget(struct upg_region *r, uintptr_t start, uintptr_t end)
{
	uintptr_t base = region_base(r);
	uint64_t first, last;

	if (start < base)
		start = base;
	if (end > base + r->size)
		end = base + r->size;
	if (start >= end)
		return;
	first = (start - base) >> r->page_shift;
	last = (end - 1 - base) >> r->page_shift;
	for (uint64_t i = region_next_touched(r, first); i <= last; i = region_walk_next(r, i)) {
		page_word *pw = &r->state[i];
		uint64_t w = pg_load(pw), next;

		do {
			if (pg_state(w) == PG_BUSY)
				next = w | PG_STALE;       /* the claimant decides */
			else
				next = w & PG_PIN_MASK;    /* PG_NONE, no slot */
			if (next == w)
				break;
		} while (!pg_cas(pw, &w, next));
		if (next != w && pg_state(w) != PG_BUSY)
			paging_forget_page(r->ctx->paging, r, i, w);
	}
}

/* Add [start, end) (offsets) to the sorted hole list, merging it with the
 * holes it overlaps or touches: the kernel reports the whole range of a
 * munmap, parts of which may have been unmapped before. Caller holds
 * r->lock. Returns the bytes now covered by holes. */
static uint64_t add_hole(struct upg_region *r, uint64_t start, uint64_t end)
{
	struct range *h = realloc(r->holes, (r->nholes + 1) * sizeof(*h));
	uint64_t covered = 0;
	size_t i, j;

	if (!h) {
		pr_err("out of memory recording an unmapped range");
		return 0;
	}
	r->holes = h;
	for (i = 0, j = 0; i < r->nholes; i++) {
		if (h[i].end < start || h[i].start > end) {
			h[j++] = h[i];
			continue;
		}
		start = h[i].start < start ? h[i].start : start;
		end = h[i].end > end ? h[i].end : end;
	}
	r->nholes = j;
	for (i = r->nholes; i > 0 && h[i - 1].start > start; i--)
		h[i] = h[i - 1];
	h[i] = (struct range){ start, end };
	r->nholes++;
	for (i = 0; i < r->nholes; i++)
		covered += h[i].end - h[i].start;
	return covered;
}

void region_unmapped(struct upg_region *r, uintptr_t start, uintptr_t end)
{
	uintptr_t base = region_base(r);
	uint64_t covered;

	pthread_mutex_lock(&r->lock);
	covered = add_hole(r, start - base, end - base);
	pthread_mutex_unlock(&r->lock);
	/* Nothing left: let the address range be reused by a new region. */
	if (covered >= r->size && atomic_exchange(&r->in_registry, false))
		registry_remove(&r->ctx->registry, r);
}

void region_remapped(struct upg_region *r, uintptr_t from, uintptr_t to, uint64_t len)
{
	struct upg_ctx *ctx = r->ctx;

	if (from == region_base(r) && len == r->size) {
		int ret;

		atomic_store_explicit(&r->base, to, memory_order_relaxed);
		ret = registry_moved(&ctx->registry, r);
		if (ret < 0)
			pr_perr(ret, "cannot follow a region moved by mremap");
		return;
	}
	/* Part of the region moved away. What was mapped went with it; what
	 * was not reads as zeros, which the kernel gives once the new range
	 * is no longer registered. */
	if (from + len > region_base(r) + r->size)
		len = region_base(r) + r->size - from;
	region_forget(r, from, from + len);
	region_unmapped(r, from, from + len);
	uffd_unregister(ctx->uffd, (void *)to, len);
}
