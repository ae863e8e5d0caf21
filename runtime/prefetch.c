/*
 * prefetch.c - upg_prefetch and upg_advise: pages read ahead of the
 * application's accesses, asynchronously.
 *
 * upg_prefetch() queues a request and returns. The prefetcher, a thread of
 * the context, is a handler without a userfaultfd: it has its own queues,
 * I/O buffers and candidate ring (struct handler), claims the pages of a
 * request (PG_BUSY) and reads them like a swap-in, and maps them when the
 * reads complete (swapin.c). A fault on a page whose read is in flight
 * finds it busy and waits for that read, not a new one. When every page of
 * a request is in (or was skipped), the context's event fd counts one.
 *
 * A page that finds the budget full waits for reclaim a while (the
 * prefetcher polls), then is skipped: a prefetch is a hint.
 */
#define LOG_PREFIX "prefetch: "
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "ctx.h"
#include "fd.h"
#include "log.h"
#include "paging.h"
#include "region.h"
#include "thread.h"

/* Polls of 1 ms a page waits for budget, with reclaim making no progress,
 * before it is skipped (a budget all pinned would hold it forever). */
#define BUDGET_TRIES 100u

struct prefetch_req {
	struct prefetch_req *next;
	struct prefetcher *pf;
	uint32_t region;          /* id: the region may go meanwhile */
	unsigned nranges, cur;    /* ranges[cur] is being issued */
	uint64_t idx;             /* next page of ranges[cur] */
	unsigned inflight;        /* reads issued and not yet done */
	bool issued;              /* every page issued (or skipped) */
	struct { uint64_t first, end; } ranges[];
};

struct prefetcher {
	struct upg_ctx *ctx;
	struct handler h;
	pthread_t thread;
	bool started;
	atomic_bool stop;
	int kick_fd;              /* eventfd: a request came, or stop */
	int event_fd;             /* upg_ctx_event_fd: counts finished requests */
	pthread_mutex_t lock;     /* the queue of new requests */
	struct prefetch_req *head, **tailp;
	/* Owned by the thread: requests being issued, oldest first. */
	struct prefetch_req *active, **active_tail;
	unsigned tries;           /* budget polls of the current page */
	uint64_t reclaimed;       /* reclaim's progress when tries was reset */
	void *owner[PAGING_HANDLER_BUFS];
};

static void finish(struct prefetcher *pf, struct prefetch_req *req)
{
	eventfd_write(pf->event_fd, 1);
	free(req);
}

/* A read of req's is done (mapped, or failed and poisoned). */
static void io_done(void *owner)
{
	struct prefetch_req *req = owner;

	if (!--req->inflight && req->issued)
		finish(req->pf, req);
}

/* Whether reclaim freed anything since the last call: a slow reclaimer
 * (the mprotect path, a slow disk) is waited for, a stuck one is not. */
static bool reclaim_progressed(struct prefetcher *pf)
{
	struct handler_stats *rs = &pf->ctx->paging->stats;
	uint64_t now = atomic_load_explicit(&rs->evicted, memory_order_relaxed) +
		       atomic_load_explicit(&rs->swap_outs, memory_order_relaxed) +
		       atomic_load_explicit(&rs->dropped_clean, memory_order_relaxed) +
		       atomic_load_explicit(&rs->file_writes, memory_order_relaxed);
	bool moved = now != pf->reclaimed;

	pf->reclaimed = now;
	return moved;
}

/* Issue reads for the oldest active requests while there are buffers and
 * budget. Returns whether it issued all it could (false: wait for budget). */
static bool issue(struct prefetcher *pf)
{
	struct handler *h = &pf->h;

	while (pf->active) {
		struct prefetch_req *req = pf->active;
		struct upg_region *r = region_by_id(pf->ctx, req->region);

		while (r && req->cur < req->nranges) {
			int ret;

			if (req->idx >= req->ranges[req->cur].end) {
				if (++req->cur < req->nranges)
					req->idx = req->ranges[req->cur].first;
				continue;
			}
			if (req->idx >= r->npages) {
				req->cur = req->nranges;
				break;
			}
			h->paging.cur_owner = req;
			ret = paging_prefetch_page(h, r, req->idx);
			h->paging.cur_owner = NULL;
			if (ret == 0 && h->paging.nfree && reclaim_progressed(pf))
				pf->tries = 0;
			if (ret == 0 && (!h->paging.nfree || ++pf->tries < BUDGET_TRIES))
				return false;    /* out of buffers, or wait for budget */
			if (ret == 0)
				stat_inc(&h->stats.prefetch_skipped);
			req->inflight += ret == 2;
			pf->tries = 0;
			req->idx++;
		}
		pf->active = req->next;
		if (!pf->active)
			pf->active_tail = &pf->active;
		req->issued = true;
		req->next = NULL;
		if (!req->inflight)
			finish(pf, req);
	}
	return true;
}

static void *prefetch_main(void *arg)
{
	struct prefetcher *pf = arg;
	struct upg_ctx *ctx = pf->ctx;
	struct qsbr_reader *qs = &ctx->qsbr_readers[ctx->nhandlers + 1];
	struct pollfd pfd[3] = {
		{ .fd = pf->kick_fd, .events = POLLIN },
		{ .fd = paging_handler_fd(&pf->h), .events = POLLIN },
		{ .fd = paging_handler_file_fd(&pf->h), .events = POLLIN },
	};
	eventfd_t ignored;

	pthread_setname_np(pthread_self(), "upager-prefetch");
	for (;;) {
		bool waiting;

		qsbr_online(&ctx->qsbr, qs);
		pthread_mutex_lock(&pf->lock);
		if (pf->head) {
			*pf->active_tail = pf->head;
			pf->active_tail = pf->tailp;
			pf->head = NULL;
			pf->tailp = &pf->head;
		}
		pthread_mutex_unlock(&pf->lock);
		paging_reap(&pf->h);
		if (atomic_load(&pf->stop)) {
			/* Give up what is not issued yet; what is in flight
			 * finishes its requests. */
			while (pf->active) {
				struct prefetch_req *req = pf->active;

				pf->active = req->next;
				req->issued = true;
				if (!req->inflight)
					finish(pf, req);
			}
			pf->active_tail = &pf->active;
		}
		waiting = !issue(pf);
		paging_submit(&pf->h.paging);
		qsbr_offline(qs);
		if (atomic_load(&pf->stop) && !pf->active &&
		    pf->h.paging.nfree == PAGING_HANDLER_BUFS)
			break;
		poll(pfd, 3, waiting || paging_pending(&pf->h) ? 1 : -1);
		eventfd_read(pf->kick_fd, &ignored);
	}
	return NULL;
}

int prefetch_start(struct upg_ctx *ctx)
{
	struct prefetcher *pf = calloc(1, sizeof(*pf));
	int ret;

	if (!pf)
		return -ENOMEM;
	pf->ctx = ctx;
	pf->h.ctx = ctx;
	pf->h.id = ctx->nhandlers;
	pf->h.cpu = -1;
	pf->tailp = &pf->head;
	pf->active_tail = &pf->active;
	pthread_mutex_init(&pf->lock, NULL);
	pf->kick_fd = fd_high(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
	pf->event_fd = fd_high(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
	ctx->paging->prefetch = pf;
	if (pf->kick_fd < 0 || pf->event_fd < 0)
		return -errno;
	ret = paging_handler_init(&pf->h);
	if (ret < 0)
		return ret;
	pf->h.paging.owner = pf->owner;
	pf->h.paging.io_done = io_done;
	ret = rt_thread_start(&pf->thread, -1, prefetch_main, pf);
	pf->started = ret == 0;
	return ret;
}

void prefetch_stop(struct upg_ctx *ctx)
{
	struct prefetcher *pf = ctx->paging ? ctx->paging->prefetch : NULL;

	if (!pf)
		return;
	if (pf->started) {
		atomic_store(&pf->stop, true);
		eventfd_write(pf->kick_fd, 1);
		pthread_join(pf->thread, NULL);
	}
	for (struct prefetch_req *req = pf->head, *next; req; req = next) {
		next = req->next;
		free(req);
	}
	paging_handler_fini(&pf->h);
	if (pf->kick_fd >= 0)
		close(pf->kick_fd);
	if (pf->event_fd >= 0)
		close(pf->event_fd);
	pthread_mutex_destroy(&pf->lock);
	free(pf);
	ctx->paging->prefetch = NULL;
}

void prefetch_forget(struct paging *old)
{
	struct prefetcher *pf = old->prefetch;

	if (!pf)
		return;
	for (struct prefetch_req *req = pf->head, *next; req; req = next) {
		next = req->next;
		free(req);
	}
	for (struct prefetch_req *req = pf->active, *next; req; req = next) {
		next = req->next;
		free(req);
	}
	paging_handler_forget(&pf->h, old);
	if (pf->kick_fd >= 0)
		close(pf->kick_fd);
	/* Shared with the parent's: its counts are not the child's. */
	if (pf->event_fd >= 0)
		close(pf->event_fd);
	free(pf);
}

struct resq *prefetch_resq(struct paging *pg)
{
	return pg->prefetch && pg->prefetch->h.paging.queue ? &pg->prefetch->h.paging.resq : NULL;
}

void prefetch_stats(struct paging *pg, struct upg_stats *st)
{
	if (pg->prefetch)
		stats_accumulate(st, &pg->prefetch->h.stats);
}

int upg_ctx_event_fd(upg_ctx *ctx)
{
	if (!ctx || !ctx->paging || !ctx->paging->prefetch)
		return -EINVAL;
	return ctx->paging->prefetch->event_fd;
}

int upg_prefetch(upg_region *r, const struct upg_range *ranges, unsigned n, uint32_t flags)
{
	struct prefetcher *pf;
	struct prefetch_req *req;

	if (!r || !r->ctx->paging || !(pf = r->ctx->paging->prefetch) || flags || !n || !ranges)
		return -EINVAL;
	req = calloc(1, sizeof(*req) + n * sizeof(req->ranges[0]));
	if (!req)
		return -ENOMEM;
	for (unsigned i = 0; i < n; i++) {
		uint64_t off = ranges[i].off, len = ranges[i].len;

		if (!len || off >= r->size || len > r->size - off) {
			free(req);
			return -EINVAL;
		}
		req->ranges[i].first = off >> r->page_shift;
		req->ranges[i].end = (off + len + region_page_size(r) - 1) >> r->page_shift;
	}
	req->pf = pf;
	req->region = r->id;
	req->nranges = n;
	req->idx = req->ranges[0].first;
	pthread_mutex_lock(&pf->lock);
	*pf->tailp = req;
	pf->tailp = &req->next;
	pthread_mutex_unlock(&pf->lock);
	eventfd_write(pf->kick_fd, 1);
	return 0;
}
