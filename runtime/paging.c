/* paging.c - the paging state of a context: creation, budget, accounting. */
#define LOG_PREFIX "paging: "
#include "paging.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cgroup.h"
#include "ctx.h"
#include "fd.h"
#include "log.h"
#include "memcached.h"
#include "region.h"
#include "datafile.h"
#include "swapfile.h"
#include "thread.h"
#include "uffd.h"

/* Candidates a handler can hand the reclaimer between two of its passes. */
#define HANDLER_RESQ (1u << 18)

static int open_backend(struct paging *pg, const struct upg_config *cfg, struct backend *inherit)
{
	struct memcached_config mc = {
		.page_size = (uint32_t)pg->page_size,
		.servers = cfg->remote_servers,
		.replicas = cfg->remote_replicas,
		.timeout_ms = cfg->remote_timeout_ms,
		.inherit = inherit,
	};
	struct swapfile_spec specs[SWAP_MAX_FILES];
	struct swapfile_config sc = {
		.page_size = (uint32_t)pg->page_size,
		.count = cfg->nswap_files,
		.files = specs,
		.inherit = inherit,
	};

	if (cfg->remote_servers)
		return memcached_open(&mc, &pg->backend);
	if (!cfg->nswap_files || cfg->nswap_files > SWAP_MAX_FILES || !cfg->swap_files)
		return -EINVAL;
	for (unsigned i = 0; i < cfg->nswap_files; i++) {
		const struct upg_swap_file *f = &cfg->swap_files[i];

		if (!f->path || f->reserved)
			return -EINVAL;
		specs[i] = (struct swapfile_spec){ f->path, f->size, f->priority };
	}
	return swapfile_open(&sc, &pg->backend);
}

void paging_backend_stats(struct paging *pg, struct upg_stats *st)
{
	struct memcached_stats ms;
	struct swapfile_stats ss;

	pthread_mutex_lock(&pg->defer_lock);
	st->swap_kept_bytes = pg->ndeferred * pg->page_size;
	pthread_mutex_unlock(&pg->defer_lock);
	if (!pg->ctx->cfg.remote_servers) {
		swapfile_get_stats(pg->backend, &ss);
		st->swap_used_bytes = ss.slots_used * pg->page_size;
		return;
	}
	memcached_get_stats(pg->backend, &ms);
	st->swap_used_bytes = ms.slots_used * pg->page_size;
	st->remote_servers = ms.servers;
	st->remote_servers_down = ms.servers_down;
	st->remote_fallbacks = ms.fallbacks;
	st->remote_refused = ms.full;
	st->remote_conn_lost = ms.conn_lost;
	st->remote_reconnects = ms.reconnects;
}

/* Where a forked child of the context makes swap files of its own (fork.c):
 * each file's directory, where the child's file is unlinked from the start
 * (O_TMPFILE) and so cannot collide with the parent's. */
static int keep_child_specs(struct paging *pg, const struct upg_config *cfg)
{
	for (unsigned i = 0; i < cfg->nswap_files && i < SWAP_MAX_FILES; i++) {
		const struct upg_swap_file *f = &cfg->swap_files[i];
		struct stat st;
		char *dir, *slash;

		if (!f->path)
			return -EINVAL;
		if (stat(f->path, &st) == 0 && S_ISDIR(st.st_mode)) {
			dir = strdup(f->path);
		} else if ((slash = strrchr(f->path, '/'))) {
			dir = slash == f->path ? strdup("/") : strndup(f->path, (size_t)(slash - f->path));
		} else {
			dir = strdup(".");
		}
		if (!dir)
			return -ENOMEM;
		pg->child_swap[i] = (struct upg_swap_file){ .path = dir, .size = f->size,
							    .priority = f->priority };
		pg->nchild_swap = i + 1;
	}
	if (cfg->remote_servers && !(pg->remote = strdup(cfg->remote_servers)))
		return -ENOMEM;
	return 0;
}

static int paging_make(struct upg_ctx *ctx, struct backend *files, struct backend *inherit);

/* A budget the kernel will not let this process keep: said at the start,
 * rather than seen later as double paging. An eighth of the cgroup's limit
 * is left for everything else the process holds: the program's own memory,
 * upager's buffers, metadata and threads. */
static void warn_cgroup(uint64_t mem_limit)
{
	uint64_t cg = cgroup_memory_limit();

	if (cg && mem_limit > cg - cg / 8)
		pr_warn("mem_limit (%llu MiB) is above 7/8 of this process's memory cgroup limit "
			"(%llu MiB): the kernel will reclaim upager's own memory behind it (double "
			"paging, or the OOM killer); give upager less",
			(unsigned long long)(mem_limit >> 20), (unsigned long long)(cg >> 20));
}

int paging_create(struct upg_ctx *ctx)
{
	return paging_make(ctx, NULL, NULL);
}

/* The parent's paging as the child got it: its queues and backend are
 * the kernel's shared objects (rings, files, sockets) that the parent's
 * threads go on using, so they are left alone, descriptors included (they
 * close at exit or exec); the memory of its own is freed. The data files'
 * backend holds nothing but descriptors: the child's paging takes it over. */
static void forget_parent(struct paging *old)
{
	if (old->frames)
		munmap(old->frames, old->nframes * old->page_size);
	if (old->frames_uffd >= 0)
		close(old->frames_uffd);
	if (old->kick_fd >= 0)
		close(old->kick_fd);
	/* The pipes of the parent's other children. (Its own parent's end,
	 * if it is a child itself, stays open: this child may read that
	 * process's slots through the parent's files too.) */
	if (old->fork_pipe[0] >= 0)
		close(old->fork_pipe[0]);
	for (unsigned i = 0; i < old->nforks; i++)
		close(old->forks[i]);
	free(old->deferred);
	free(old->fe);
	free(old->lru);
	prefetch_forget(old);
	for (unsigned i = 0; i < old->nchild_swap; i++)
		free((char *)old->child_swap[i].path);
	free(old->remote);
	free(old);
}

int paging_fork_child(struct upg_ctx *ctx)
{
	struct paging *old = ctx->paging;
	struct upg_config *cfg = &ctx->cfg;
	int ret;

	if (!old)
		return 0;
	ctx->paging = NULL;
	cfg->swap_files = old->child_swap;
	cfg->remote_servers = old->remote;
	datafile_forked(old->files);
	/* The parent's swap files, or its keys on the servers, are read at
	 * their slots until this child closes its end of the pipe (fork.c);
	 * without the pipe, the parent's pages were all brought back. */
	ret = paging_make(ctx, old->files, old->fork_pipe[1] >= 0 ? old->backend : NULL);
	cfg->swap_files = NULL;
	cfg->remote_servers = ctx->paging ? ctx->paging->remote : NULL;
	if (ctx->paging) {
		atomic_store(&ctx->paging->pinned_pages, atomic_load(&old->pinned_pages));
		ctx->paging->parent_pipe = old->fork_pipe[1];
	} else if (old->fork_pipe[1] >= 0) {
		close(old->fork_pipe[1]);
	}
	forget_parent(old);
	return ret;
}

static int paging_make(struct upg_ctx *ctx, struct backend *files, struct backend *inherit)
{
	const struct upg_config *cfg = &ctx->cfg;
	struct paging *pg;
	uint64_t gap;
	int ret;

	if (!cfg->mem_limit)
		return cfg->nswap_files || cfg->remote_servers ? -EINVAL : 0;
	if (cfg->policy > UPG_POLICY_FIFO)
		return -EINVAL;
	pg = calloc(1, sizeof(*pg));
	if (!pg)
		return -ENOMEM;
	pg->ctx = ctx;
	pg->kick_fd = -1;
	pg->frames_uffd = -1;
	pg->fork_pipe[0] = pg->fork_pipe[1] = pg->parent_pipe = -1;
	pthread_mutex_init(&pg->defer_lock, NULL);
	pthread_mutex_init(&pg->ra_lock, NULL);
	pg->files = files;
	ret = keep_child_specs(pg, cfg);
	if (ret < 0)
		goto err;
	pg->policy = cfg->policy;
	pg->page_size = 1ull << ctx->base_page_shift;
	pg->limit = cfg->mem_limit / pg->page_size;
	if (pg->limit < 8 * PAGING_BATCH) {
		pr_err("mem_limit below %llu KiB",
		       (unsigned long long)(8 * PAGING_BATCH * pg->page_size >> 10));
		ret = -EINVAL;
		goto err;
	}
	warn_cgroup(cfg->mem_limit);
	/* Reclaim starts early enough for a stream's read-ahead to find room,
	 * and frees a few batches (or 1/64 of the limit) at a time. */
	gap = pg->limit / 64 > 2 * PAGING_BATCH ? pg->limit / 64 : 2 * PAGING_BATCH;
	pg->high_wm = pg->limit - gap;
	pg->low_wm = pg->limit - 2 * gap;
	/* A sixteenth of the budget cools. Unlike the kernel's inactive list
	 * (a quarter of 1 GiB of anonymous memory), cooling pages are out of
	 * the mapping, so every touch of one costs a fault: a quarter cooling
	 * cost 10-25% of random throughput against a sixteenth (rand:1-8,
	 * 2 GiB over 1 GiB), and a sixteenth still gives a page touched within
	 * that much eviction its second chance. */
	pg->cool_target = pg->policy == UPG_POLICY_FIFO ? 0 : pg->limit / 16;
	pg->nframes = pg->cool_target + 4 * PAGING_BATCH;

	ret = evict_init(pg);
	if (ret < 0) {
		pr_perr(ret, "cannot set up the %s eviction path", evict_path_name(pg->path));
		goto err;
	}
	pg->evict_ready = true;
	ret = open_backend(pg, cfg, inherit);
	if (ret < 0) {
		pr_perr(ret, "cannot open the %s", cfg->remote_servers ? "remote servers" : "swap files");
		goto err;
	}

	/* The cooling pool. On the MOVE path it is registered (frames_uffd)
	 * and touched only by the kernel on our behalf; the other paths copy
	 * into it. */
	pg->frames = mmap(NULL, pg->nframes * pg->page_size, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (pg->frames == MAP_FAILED) {
		pg->frames = NULL;
		ret = -ENOMEM;
		goto err;
	}
	madvise(pg->frames, pg->nframes * pg->page_size, MADV_NOHUGEPAGE);
	if (pg->path == UPG_EVICT_MOVE) {
		/* Nobody reads it: a touch of an empty frame, which the runtime
		 * never makes, fails (SIGBUS, EFAULT in a system call) rather
		 * than waiting forever. */
		ret = uffd_open(uffd_kernel_features(UPG_FEAT_MOVE) | UFFD_FEATURE_SIGBUS,
				ctx->features);
		if (ret < 0)
			goto err;
		pg->frames_uffd = ret;
		ret = uffd_register(pg->frames_uffd, pg->frames, pg->nframes * pg->page_size,
				    UFFDIO_REGISTER_MODE_MISSING);
		if (ret < 0)
			goto err;
	}
	pg->fe = calloc(pg->nframes, sizeof(*pg->fe));
	pg->lru_mask = (1ull << 20) - 1;
	while (pg->lru_mask < 2 * pg->limit)
		pg->lru_mask = pg->lru_mask << 1 | 1;
	pg->lru = malloc((pg->lru_mask + 1) * sizeof(*pg->lru));
	pg->kick_fd = fd_high(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
	if (!pg->fe || !pg->lru || pg->kick_fd < 0) {
		ret = -ENOMEM;
		goto err;
	}
	ret = backend_queue_open(pg->backend, 2 * PAGING_BATCH, &pg->queue);
	if (ret < 0)
		goto err;
	if (!pg->files && (ret = datafile_open((uint32_t)pg->page_size, &pg->files)) < 0)
		goto err;
	ret = backend_queue_open(pg->files, 2 * PAGING_BATCH, &pg->fqueue);
	if (ret < 0)
		goto err;
	ctx->paging = pg;
	return 0;
err:
	ctx->paging = pg;
	paging_destroy(ctx);
	return ret;
}

int paging_start(struct upg_ctx *ctx)
{
	struct paging *pg = ctx->paging;

	int ret;

	if (!pg)
		return 0;
	/* The prefetcher first: the reclaimer drains its ring. */
	ret = prefetch_start(ctx);
	return ret < 0 ? ret : rt_thread_start(&pg->thread, -1, paging_reclaimer_main, pg);
}

void paging_stop(struct upg_ctx *ctx)
{
	struct paging *pg = ctx->paging;

	if (!pg)
		return;
	/* The reclaimer first: it drains the prefetcher's ring. */
	if (pg->thread) {
		atomic_store(&pg->stop, true);
		paging_kick(pg);
		pthread_join(pg->thread, NULL);
		pg->thread = 0;
	}
	prefetch_stop(ctx);
}

void paging_destroy(struct upg_ctx *ctx)
{
	struct paging *pg = ctx->paging;

	if (!pg)
		return;
	paging_stop(ctx);
	backend_queue_close(pg->queue);
	backend_queue_close(pg->fqueue);
	if (pg->frames)
		munmap(pg->frames, pg->nframes * pg->page_size);
	if (pg->frames_uffd >= 0)
		close(pg->frames_uffd);
	if (pg->evict_ready)
		evict_fini(pg);
	backend_close(pg->backend);
	backend_close(pg->files);
	if (pg->kick_fd >= 0)
		close(pg->kick_fd);
	free(pg->fe);
	free(pg->lru);
	for (unsigned i = 0; i < pg->nchild_swap; i++)
		free((char *)pg->child_swap[i].path);
	free(pg->remote);
	for (unsigned i = 0; i < pg->nforks; i++)
		close(pg->forks[i]);
	if (pg->parent_pipe >= 0)
		close(pg->parent_pipe);
	free(pg->deferred);
	pthread_mutex_destroy(&pg->defer_lock);
	pthread_mutex_destroy(&pg->ra_lock);
	free(pg);
	ctx->paging = NULL;
}

int paging_handler_init(struct handler *h)
{
	struct paging *pg = h->ctx->paging;
	struct paging_handler *ph = &h->paging;
	int ret;

	if (!pg)
		return 0;
	ph->wake_fd = fd_high(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
	if (ph->wake_fd < 0)
		return -errno;
	ret = backend_queue_open(pg->backend, PAGING_HANDLER_BUFS, &ph->queue);
	if (ret < 0)
		return ret;
	ret = backend_queue_open(pg->files, PAGING_HANDLER_BUFS, &ph->fqueue);
	if (ret < 0)
		return ret;
	ret = resq_init(&ph->resq, HANDLER_RESQ);
	if (ret < 0)
		return ret;
	ph->bufs = rt_buf_alloc(PAGING_HANDLER_BUFS * pg->page_size);
	ph->ios = calloc(PAGING_HANDLER_BUFS, sizeof(*ph->ios));
	if (!ph->bufs || !ph->ios)
		return -ENOMEM;
	for (unsigned i = 0; i < PAGING_HANDLER_BUFS; i++) {
		ph->ios[i].buf = ph->bufs + i * pg->page_size;
		ph->free_map[i / 64] |= 1ull << (i % 64);
		ph->nfree++;
	}
	return 0;
}

void paging_handler_fini(struct handler *h)
{
	struct paging_handler *ph = &h->paging;

	backend_queue_close(ph->queue);
	backend_queue_close(ph->fqueue);
	if (ph->wake_fd > 0)
		close(ph->wake_fd);
	resq_fini(&ph->resq);
	if (ph->bufs)
		rt_buf_free(ph->bufs, PAGING_HANDLER_BUFS * h->ctx->paging->page_size);
	free(ph->ios);
	memset(ph, 0, sizeof(*ph));
}

void paging_handler_forget(struct handler *h, struct paging *old)
{
	struct paging_handler *ph = &h->paging;

	if (ph->wake_fd > 0)
		close(ph->wake_fd);
	if (ph->bufs)
		rt_buf_free(ph->bufs, PAGING_HANDLER_BUFS * old->page_size);
	free(ph->ios);
}

int paging_handler_fd(struct handler *h)
{
	return h->paging.queue ? backend_queue_fd(h->paging.queue) : -1;
}

int paging_handler_file_fd(struct handler *h)
{
	return h->paging.fqueue ? backend_queue_fd(h->paging.fqueue) : -1;
}

int paging_handler_wake_fd(struct handler *h)
{
	return h->paging.queue ? h->paging.wake_fd : -1;
}

void paging_kick(struct paging *pg)
{
	if (atomic_exchange_explicit(&pg->sleeping, false, memory_order_acq_rel) ||
	    atomic_load_explicit(&pg->stop, memory_order_relaxed))
		eventfd_write(pg->kick_fd, 1);
}

bool paging_reserve(struct paging *pg)
{
	uint64_t now = atomic_fetch_add_explicit(&pg->mem_pages, 1, memory_order_relaxed) + 1;

	if (now > pg->high_wm)
		paging_kick(pg);
	if (now <= pg->limit || atomic_load_explicit(&pg->swap_stuck, memory_order_relaxed) ||
	    atomic_load_explicit(&pg->hold, memory_order_relaxed))
		return true;
	atomic_fetch_sub_explicit(&pg->mem_pages, 1, memory_order_relaxed);
	return false;
}

void paging_unreserve(struct paging *pg, uint64_t n)
{
	atomic_fetch_sub_explicit(&pg->mem_pages, n, memory_order_relaxed);
}

void paging_resident(struct handler *h, struct upg_region *r, uint64_t idx)
{
	atomic_fetch_add_explicit(&r->resident_pages, 1, memory_order_relaxed);
	/* A full ring drops it: the reclaimer's scan finds it instead. */
	if (h->paging.queue && !resq_push(&h->paging.resq, page_ref(r->id, idx)))
		atomic_fetch_add_explicit(&h->ctx->paging->lost, 1, memory_order_relaxed);
}

void paging_forget_page(struct paging *pg, struct upg_region *r, uint64_t idx, uint64_t w)
{
	uint64_t slot1 = pg_val(w);

	switch (pg_state(w)) {
	case PG_RESIDENT:
		atomic_fetch_sub_explicit(&r->resident_pages, 1, memory_order_relaxed);
		if (pg)
			paging_unreserve(pg, 1);
		break;
	case PG_COOLING: {
		struct frame *f = &pg->fe[slot1 % pg->nframes];
		uint64_t ref1 = page_ref(r->id, idx) + 1;

		/* Whoever clears the frame's reference does the accounting
		 * (the reclaimer may have given up on the frame already). */
		slot1 = f->slot1;
		if (atomic_compare_exchange_strong(&f->ref, &ref1, 0)) {
			atomic_fetch_sub_explicit(&pg->cooling_pages, 1, memory_order_relaxed);
			paging_unreserve(pg, 1);
		}
		break;
	}
	case PG_SWAPPED:
	case PG_POISONED:
		break;
	default:
		return;
	}
	if (pg && slot1)
		paging_discard(pg, slot1 - 1);
}

/* ---- slots a forked child may read ---- */

void paging_discard(struct paging *pg, uint64_t slot)
{
	if (datafile_slot_is_file(slot))
		return;
	/* Sequentially consistent with paging_freeze(): a discard either sees
	 * frozen, or is counted in discarding, which the freeze waits out. */
	atomic_fetch_add(&pg->discarding, 1);
	if (atomic_load(&pg->frozen)) {
		pthread_mutex_lock(&pg->defer_lock);
		if (pg->ndeferred == pg->deferred_cap) {
			size_t cap = pg->deferred_cap ? 2 * pg->deferred_cap : 1024;
			uint64_t *d = realloc(pg->deferred, cap * sizeof(*d));

			if (d) {
				pg->deferred = d;
				pg->deferred_cap = cap;
			}
		}
		/* Without memory for the list the slot stays used: lost space,
		 * never lost data. */
		if (pg->ndeferred < pg->deferred_cap)
			pg->deferred[pg->ndeferred++] = slot;
		pthread_mutex_unlock(&pg->defer_lock);
	} else {
		backend_discard(pg->backend, &slot, 1);
	}
	atomic_fetch_sub(&pg->discarding, 1);
}

int paging_freeze(struct paging *pg)
{
	/* The child's backend has our files (or key spaces) and its own. */
	unsigned sources = pg->remote ? memcached_nsources(pg->backend) + 1
				      : swapfile_nfiles(pg->backend) + pg->nchild_swap;

	if (sources > SWAP_MAX_FILES || pg->nforks >= PAGING_MAX_FORKS)
		return -EBUSY;
	if (pipe2(pg->fork_pipe, O_CLOEXEC | O_NONBLOCK) < 0) {
		pg->fork_pipe[0] = pg->fork_pipe[1] = -1;
		return -errno;
	}
	pg->fork_pipe[0] = fd_high(pg->fork_pipe[0]);
	pg->fork_pipe[1] = fd_high(pg->fork_pipe[1]);
	atomic_fetch_add(&pg->frozen, 1);
	while (atomic_load(&pg->discarding))
		sched_yield();
	return 0;
}

void paging_forked(struct paging *pg)
{
	if (pg->fork_pipe[0] < 0)
		return;
	close(pg->fork_pipe[1]);
	pthread_mutex_lock(&pg->defer_lock);
	pg->forks[pg->nforks++] = pg->fork_pipe[0];
	pthread_mutex_unlock(&pg->defer_lock);
	pg->fork_pipe[0] = pg->fork_pipe[1] = -1;
}

void paging_forks_check(struct paging *pg)
{
	uint64_t *slots = NULL;
	size_t n = 0;
	char c;

	if (!atomic_load_explicit(&pg->frozen, memory_order_relaxed))
		return;
	pthread_mutex_lock(&pg->defer_lock);
	for (unsigned i = 0; i < pg->nforks;) {
		/* EOF: every holder of the write end is gone. */
		if (read(pg->forks[i], &c, 1) == 0) {
			close(pg->forks[i]);
			pg->forks[i] = pg->forks[--pg->nforks];
			if (atomic_fetch_sub(&pg->frozen, 1) == 1) {
				slots = pg->deferred;
				n = pg->ndeferred;
				pg->deferred = NULL;
				pg->ndeferred = pg->deferred_cap = 0;
			}
		} else {
			i++;
		}
	}
	pthread_mutex_unlock(&pg->defer_lock);
	for (size_t i = 0; i < n; i += PAGING_BATCH)
		backend_discard(pg->backend, slots + i,
				n - i < PAGING_BATCH ? (unsigned)(n - i) : PAGING_BATCH);
	free(slots);
}
