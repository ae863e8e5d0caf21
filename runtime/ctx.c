/* ctx.c - contexts: configuration, creation, features and statistics. */
#define LOG_PREFIX "ctx: "
#include "ctx.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fd.h"
#include "handler.h"
#include "log.h"
#include "region.h"
#include "uffd.h"

void upg_config_init(struct upg_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->size = sizeof(*cfg);
	cfg->pin_handlers = 1;
}

/* Copy the caller's config, which may be older (smaller) than ours. */
static int config_copy(struct upg_config *dst, const struct upg_config *src)
{
	upg_config_init(dst);
	if (!src)
		return 0;
	if (src->size < offsetof(struct upg_config, feature_mask))
		return -EINVAL;
	memcpy(dst, src, src->size < sizeof(*dst) ? src->size : sizeof(*dst));
	dst->size = sizeof(*dst);
	if (dst->handler_threads > 1024 || dst->policy > UPG_POLICY_FIFO)
		return -EINVAL;
	if (dst->remote_servers && (dst->nswap_files || dst->remote_replicas > 2))
		return -EINVAL;   /* remote or swap files, not both (yet) */
	if (!dst->mem_limit != !(dst->nswap_files || dst->remote_servers))
		return -EINVAL;   /* a limit needs somewhere to page to, and that a limit */
	return 0;
}

static unsigned allowed_cpus(void)
{
	cpu_set_t set;

	if (sched_getaffinity(0, sizeof(set), &set) < 0)
		return 1;
	return (unsigned)CPU_COUNT(&set);
}

int upg_features_probe(uint64_t *features)
{
	if (!features)
		return -EINVAL;
	return uffd_probe(features);
}

const char *upg_feature_name(uint64_t feature)
{
	static const char *const names[UPG_FEAT_COUNT] = {
		"dev-userfaultfd", "syscall", "missing", "wp", "minor", "zeropage",
		"wp-async", "wp-unpopulated", "move", "poison", "event-fork",
		"event-remap", "event-remove", "event-unmap", "thread-id",
		"exact-address", "pagemap-scan", "io-uring",
	};

	if (!feature || (feature & (feature - 1)) || feature >= (1ull << UPG_FEAT_COUNT))
		return NULL;
	return names[__builtin_ctzll(feature)];
}

uint64_t upg_ctx_features(const upg_ctx *ctx)
{
	return ctx->features;
}

/* The features a context asks the kernel for: the events that keep its view
 * of the layout right, and what it resolves faults with. */
#define CTX_WANTED (UPG_FEAT_WP | UPG_FEAT_MOVE | UPG_FEAT_POISON | UPG_FEAT_EVENT_REMAP | \
		    UPG_FEAT_EVENT_REMOVE | UPG_FEAT_EVENT_UNMAP | UPG_FEAT_THREAD_ID)

void ctx_locks_init(upg_ctx *ctx)
{
	pthread_mutexattr_t attr;

	pthread_mutex_init(&ctx->lock, NULL);
	/* Adaptive: held for one read(2); a waiter spins first. */
	pthread_mutexattr_init(&attr);
	pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_ADAPTIVE_NP);
	pthread_mutex_init(&ctx->read_lock, &attr);
	pthread_mutexattr_destroy(&attr);
}

int ctx_open_fds(upg_ctx *ctx)
{
	ctx->uffd = uffd_open(uffd_kernel_features(ctx->features & CTX_WANTED), ctx->features);
	if (ctx->uffd < 0) {
		pr_perr(ctx->uffd, "cannot open userfaultfd");
		return ctx->uffd;
	}
	/* Without it (no /proc), walks read every word. */
	ctx->pagemap_fd = fd_high(open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC));
	ctx->register_mode = UFFDIO_REGISTER_MODE_MISSING |
			     ((ctx->features & UPG_FEAT_WP) ? UFFDIO_REGISTER_MODE_WP : 0);
	return 0;
}

bool ctx_pagemap_entry(const upg_ctx *ctx, uintptr_t addr, uint64_t *e)
{
	off_t at = (off_t)(addr >> ctx->base_page_shift) * (off_t)sizeof(*e);

	return ctx->pagemap_fd >= 0 && pread(ctx->pagemap_fd, e, sizeof(*e), at) == sizeof(*e);
}

int ctx_start(upg_ctx *ctx)
{
	int ret;

	ctx->nhandlers = ctx->cfg.handler_threads ? ctx->cfg.handler_threads : allowed_cpus();
	ctx->handlers = aligned_alloc(64, ctx->nhandlers * sizeof(*ctx->handlers));
	/* One reader per handler, one for the reclaimer, one for the
	 * prefetcher. */
	ctx->qsbr_readers = aligned_alloc(64, (ctx->nhandlers + 2) * sizeof(*ctx->qsbr_readers));
	if (!ctx->handlers || !ctx->qsbr_readers)
		return -ENOMEM;
	memset(ctx->handlers, 0, ctx->nhandlers * sizeof(*ctx->handlers));
	qsbr_init(&ctx->qsbr, ctx->qsbr_readers, ctx->nhandlers + 2);
	ret = handlers_start(ctx);
	if (ret < 0)
		return ret;
	ret = paging_start(ctx);
	if (ret < 0)
		handlers_stop(ctx);
	return ret;
}

int upg_ctx_create(const struct upg_config *cfg, upg_ctx **out)
{
	uint64_t probed;
	upg_ctx *ctx;
	int ret;

	if (!out)
		return -EINVAL;
	*out = NULL;
	ctx = calloc(1, sizeof(*ctx));
	if (!ctx)
		return -ENOMEM;
	ctx->uffd = ctx->stop_fd = ctx->pagemap_fd = -1;
	ret = config_copy(&ctx->cfg, cfg);
	if (ret < 0)
		goto err_free;

	ret = uffd_probe(&probed);
	if (ret < 0) {
		pr_perr(ret, "userfaultfd is not available");
		goto err_free;
	}
	ctx->features = probed & ~ctx->cfg.feature_mask;
	if (!(ctx->features & UPG_FEAT_MISSING)) {
		ret = -ENOTSUP;
		pr_err("userfaultfd cannot resolve missing faults here");
		goto err_free;
	}
	ret = ctx_open_fds(ctx);
	if (ret < 0)
		goto err_free;
	ctx->base_page_shift = (unsigned)__builtin_ctzl((unsigned long)sysconf(_SC_PAGESIZE));

	/* A private anonymous mapping never written reads as zeros and costs
	 * one shared zero page however large. */
	ctx->zero_src = mmap(NULL, UPG_MAX_PAGE_SIZE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (ctx->zero_src == MAP_FAILED) {
		ctx->zero_src = NULL;
		ret = -errno;
		goto err_close;
	}

	ctx->stop_fd = fd_high(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
	if (ctx->stop_fd < 0) {
		ret = -errno;
		goto err_close;
	}
	ret = registry_init(&ctx->registry);
	if (ret < 0)
		goto err_close;
	ctx_locks_init(ctx);
	ctx->by_id = mmap(NULL, UPG_MAX_REGIONS * sizeof(*ctx->by_id), PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (ctx->by_id == MAP_FAILED) {
		ctx->by_id = NULL;
		ret = -ENOMEM;
		goto err_registry;
	}
	ret = paging_create(ctx);
	ctx->cfg.swap_files = NULL;     /* the caller's; not needed past here */
	if (ret < 0)
		goto err_registry;

	ret = ctx_start(ctx);
	if (ret < 0)
		goto err_registry;
	*out = ctx;
	return 0;

err_registry:
	paging_destroy(ctx);
	if (ctx->by_id)
		munmap(ctx->by_id, UPG_MAX_REGIONS * sizeof(*ctx->by_id));
	pthread_mutex_destroy(&ctx->lock);
	pthread_mutex_destroy(&ctx->read_lock);
	free(ctx->handlers);
	free(ctx->qsbr_readers);
	registry_destroy(&ctx->registry);
err_close:
	if (ctx->stop_fd >= 0)
		close(ctx->stop_fd);
	if (ctx->zero_src)
		munmap((void *)ctx->zero_src, UPG_MAX_PAGE_SIZE);
	close(ctx->uffd);
	if (ctx->pagemap_fd >= 0)
		close(ctx->pagemap_fd);
err_free:
	free(ctx);
	return ret;
}

void upg_ctx_destroy(upg_ctx *ctx)
{
	if (!ctx)
		return;
	/* Regions first, while handlers still serve events and faults in
	 * flight; then the pool. */
	regions_destroy_all(ctx);
	/* The reclaimer before the handlers: its madvise waits for a handler
	 * to read the event. The handlers before the backend they use. */
	paging_stop(ctx);
	handlers_stop(ctx);
	paging_destroy(ctx);
	munmap(ctx->by_id, UPG_MAX_REGIONS * sizeof(*ctx->by_id));
	free(ctx->id_free);
	registry_destroy(&ctx->registry);
	pthread_mutex_destroy(&ctx->lock);
	pthread_mutex_destroy(&ctx->read_lock);
	free(ctx->handlers);
	free(ctx->qsbr_readers);
	close(ctx->stop_fd);
	munmap((void *)ctx->zero_src, UPG_MAX_PAGE_SIZE);
	close(ctx->uffd);
	if (ctx->pagemap_fd >= 0)
		close(ctx->pagemap_fd);
	free(ctx);
}

int upg_stats_get(upg_ctx *ctx, struct upg_stats *st)
{
	struct upg_stats all;
	uint32_t size;

	if (!ctx || !st || st->size < offsetof(struct upg_stats, regions))
		return -EINVAL;
	size = st->size;
	memset(&all, 0, sizeof(all));
	all.size = sizeof(all);
	all.handler_threads = ctx->nhandlers;
	pthread_mutex_lock(&ctx->lock);
	all.regions = ctx->nregions;
	for (struct upg_region *r = ctx->regions; r; r = r->next)
		all.resident_bytes += atomic_load_explicit(&r->resident_pages, memory_order_relaxed)
				      << r->page_shift;
	pthread_mutex_unlock(&ctx->lock);
	for (unsigned i = 0; i < ctx->nhandlers; i++)
		stats_accumulate(&all, &ctx->handlers[i].stats);
	if (ctx->paging) {
		struct paging *pg = ctx->paging;

		stats_accumulate(&all, &pg->stats);
		all.mem_limit = ctx->cfg.mem_limit;
		all.evict_path = pg->path;
		all.cooling_bytes = atomic_load_explicit(&pg->cooling_pages, memory_order_relaxed) *
				    pg->page_size;
		all.pinned_pages = atomic_load_explicit(&pg->pinned_pages, memory_order_relaxed);
		all.file_writes += atomic_load_explicit(&pg->api_file_writes, memory_order_relaxed);
		all.flushes = atomic_load_explicit(&pg->flushes, memory_order_relaxed);
		prefetch_stats(pg, &all);
		paging_backend_stats(pg, &all);
	}
	memcpy(st, &all, size < sizeof(all) ? size : sizeof(all));
	st->size = size < sizeof(all) ? size : (uint32_t)sizeof(all);
	return 0;
}
