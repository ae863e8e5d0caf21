/* fault.c - see fault.h. */
#define LOG_PREFIX "fault: "
#include "fault.h"

#include <errno.h>
#include <signal.h>
#include <sys/syscall.h>
#include <stdbool.h>
#include <string.h>
#include <unistd.h>

#include "ctx.h"
#include "log.h"
#include "paging.h"
#include "region.h"
#include "snapshot.h"
#include "uffd.h"

static inline size_t base_page(const struct upg_ctx *ctx)
{
	return (size_t)1 << ctx->base_page_shift;
}

/* Map zeros at [addr, addr+len): the shared zero page for a read, a zeroed
 * private page for a write (what do_anonymous_page does). */
static int map_zero(struct upg_ctx *ctx, uintptr_t addr, size_t len, bool zeropage)
{
	return zeropage ? uffd_zeropage(ctx->uffd, addr, len)
			: uffd_copy(ctx->uffd, addr, ctx->zero_src, len, 0);
}

static __attribute__((cold)) void report_error(struct handler *h, uintptr_t addr, int err)
{
	/* Log the first few; after that the errors counter tells. */
	if (atomic_load_explicit(&h->stats.errors, memory_order_relaxed) < 8)
		pr_perr(err, "cannot resolve fault at %#lx", (unsigned long)addr);
	stat_inc(&h->stats.errors);
}

/*
 * Zero-ahead. A program filling new memory in order (building an array, a
 * heap growing) takes a zero-fill fault per page, each a round trip through
 * a handler; the kernel maps its own anonymous pages without any. So a zero
 * fill for a write right after a run of pages in use (not new: resident,
 * cooling or swapped) maps as many new pages after it as that run is long,
 * up to ZA_BYTES, zeroed and writable, in one copy: filling in order, the
 * window doubles at each fault. Read from the page words, not from a per-handler
 * history: the faults of one stream go to whichever handler is free. A
 * first touch at random rarely follows a run of ZA_MIN_RUN, and maps ahead
 * only up to the next page in use. Under a budget the pages count in it like
 * any resident page and, having no copy anywhere, are dirty; the window
 * also stops where the budget is full.
 */
#define ZA_MIN_RUN 3u
#define ZA_BYTES (256u << 10)
_Static_assert(ZA_BYTES <= UPG_MAX_PAGE_SIZE, "ctx->zero_src is the source");

static void zero_ahead(struct handler *h, struct upg_region *r, uint64_t idx)
{
	struct paging *pg = h->ctx->paging;
	size_t psize = region_page_size(r);
	uint64_t max = ZA_BYTES / psize, run = 0, n = 0, end;
	size_t copied;

	if (atomic_load_explicit(&r->advice, memory_order_relaxed) == UPG_ADVICE_RANDOM)
		return;
	while (run < max && run < idx && pg_state(pg_load(&r->state[idx - 1 - run])) != PG_NONE)
		run++;
	if (run < ZA_MIN_RUN)
		return;
	end = idx + 1 + run < r->npages ? idx + 1 + run : r->npages;
	/* Claim a run of new pages, each with its page of the budget. */
	for (uint64_t j = idx + 1; j < end; j++, n++) {
		uint64_t w = pg_load(&r->state[j]);

		if (pg_state(w) != PG_NONE || (pg && !paging_reserve(pg)))
			break;
		if (!pg_cas(&r->state[j], &w, pg_with_state(w, PG_BUSY))) {
			if (pg)
				paging_unreserve(pg, 1);
			break;
		}
		snapshot_keep(r, j, NULL);
	}
	if (!n)
		return;
	uffd_copy_part(h->ctx->uffd, region_page_addr(r, idx + 1), h->ctx->zero_src, n * psize, 0,
		       &copied);
	copied /= psize;
	for (uint64_t k = 0; k < n; k++) {
		if (k >= copied) {
			/* Not mapped (the layout is changing, or the range
			 * went away): new again; its own fault fills it. */
			page_release(r, idx + 1 + k, pg_make(0, PG_NONE, 0, 0));
			continue;
		}
		page_release(r, idx + 1 + k, pg_make(0, PG_RESIDENT, 0, PG_DIRTY));
		paging_resident(h, r, idx + 1 + k);
	}
	if (pg && copied < n)
		paging_unreserve(pg, n - copied);
	stat_add(&h->stats.zero_ahead, copied);
}

/*
 * Make the thread touching a poisoned page get SIGBUS: a poison marker in
 * its page table where the kernel has UFFDIO_POISON (every later touch gets
 * SIGBUS too), else the signal sent to the faulting thread itself (tid from
 * UFFD_FEATURE_THREAD_ID), which interrupts its fault.
 */
static void deliver_poison(struct upg_ctx *ctx, uintptr_t page, size_t psize, pid_t tid)
{
	/* -EEXIST: the marker is there already (this is a second message for
	 * one access, read before the page was poisoned): woken, the thread
	 * gets its SIGBUS from the marker when it retries; a signal sent as
	 * well would hit it later, somewhere else. */
	if (ctx->features & UPG_FEAT_POISON) {
		int ret = uffd_poison(ctx->uffd, page, psize, 0);

		if (ret == -EEXIST)
			uffd_wake(ctx->uffd, page, psize);
		if (ret == 0 || ret == -EEXIST)
			return;
	}
	if (tid > 0)
		syscall(SYS_tgkill, getpid(), tid, SIGBUS);
	else
		kill(getpid(), SIGBUS);
}

/* The mapping of page idx of r, resident in state word w, went away with
 * its contents (what took it is not upager: it evicts only pages it claimed,
 * and a removal by the application clears the word first). Said loudly: the
 * log, the error callback and the errors counter. */
static __attribute__((cold)) void report_lost(struct handler *h, struct upg_region *r,
					      uint64_t idx, uint64_t w)
{
	struct upg_ctx *ctx = h->ctx;
	void *addr = (void *)region_page_addr(r, idx);

	pr_err("page %p (word %#llx) lost its mapping behind upager's back: contents gone",
	       addr, (unsigned long long)w);
	if (ctx->cfg.on_error)
		ctx->cfg.on_error(ctx->cfg.on_error_arg, addr, -EFAULT);
	stat_inc(&h->stats.errors);
}

/* The same, the page claimed and a poison marker in its place: it stays
 * poisoned (SIGBUS on touch), its budget, slot and residency given back. */
static void lost(struct handler *h, struct upg_region *r, uint64_t idx, uint64_t w)
{
	struct paging *pg = h->ctx->paging;

	atomic_fetch_sub_explicit(&r->resident_pages, 1, memory_order_relaxed);
	if (pg) {
		if (pg_val(w))
			paging_discard(pg, pg_val(w) - 1);
		paging_unreserve(pg, 1);
	}
	page_release(r, idx, pg_make(w, PG_POISONED, 0, 0));
	stat_inc(&h->stats.poisoned);
	/* Last: once the report is out, the accounting is done. */
	report_lost(h, r, idx, w);
	uffd_wake(h->ctx->uffd, region_page_addr(r, idx), region_page_size(r));
}

/*
 * A missing fault on page idx of r, which upager holds resident: -EEXIST if
 * the base page at addr is mapped (a second message about one access, read
 * after the first was resolved) or the application removed the page (its
 * word is PG_STALE: released, it is forgotten and faulted afresh); -EAGAIN
 * if a removal may be half applied: madvise returns, and the kernel zaps,
 * once a handler has read the REMOVE event, not once it has applied it, and
 * the fault may come from a message read before; 0 if the mapping went away
 * behind upager's back with the contents, which must not come back as zeros.
 * The caller holds the page (PG_BUSY).
 */
static int resident_unmapped(struct upg_ctx *ctx, struct upg_region *r, uint64_t idx,
			     uintptr_t addr)
{
	uint64_t e;

	if (ctx_pagemap_entry(ctx, addr, &e) && (e & (PM_PRESENT | PM_SWAP)))
		return -EEXIST;
	/* The event of the zap just seen was read before it: applied, unless
	 * its reader is still at it (odd). */
	if (atomic_load(&ctx->read_seq) & 1)
		return -EAGAIN;
	return pg_load(&r->state[idx]) & PG_STALE ? -EEXIST : 0;
}

static fault_result resolve_missing(struct handler *h, struct upg_region *r, uintptr_t addr,
				    bool write, pid_t tid)
{
	struct upg_ctx *ctx = h->ctx;
	uint64_t idx = region_index(r, addr);
	page_word *pw = &r->state[idx];
	size_t psize = (size_t)region_page_size(r);
	uintptr_t page = region_page_addr(r, idx);
	uint64_t old = pg_load(pw);
	/* Under a memory limit every page is private from the start: a zero
	 * page written later would be copied by the kernel behind our back. */
	bool zeropage = !write && (ctx->features & UPG_FEAT_ZEROPAGE) && !ctx->paging;
	bool reserved = false;
	enum page_state was, now;
	fault_result res;
	int ret;

	/* Claim the page. A page already claimed is being resolved by another
	 * thread; it wakes the waiters when it is done (PG_WAITERS). */
	for (;;) {
		switch (pg_state(old)) {
		case PG_BUSY:
			if (ctx->paging && evict_copying(ctx->paging, page)) {
				/* Dropped by the application while the reclaimer
				 * copies it out (evict.c): zeros, as it expects,
				 * and write-protected, so a write waits for the
				 * reclaimer to be done. */
				ret = uffd_copy(ctx->uffd, page, ctx->zero_src, psize,
						(ctx->features & UPG_FEAT_WP) ? UFFDIO_COPY_MODE_WP : 0);
				res = ret == 0 || ret == -EEXIST ? FAULT_SHARED : FAULT_DEFER;
				break;
			}
			if (!pg_cas(pw, &old, old | PG_WAITERS))
				continue;
			if (ctx->paging)
				paging_stream(h, r, idx);
			res = FAULT_SHARED;
			break;
		case PG_SWAPPED:
			res = paging_swapin(h, r, idx, old, write);
			break;
		case PG_NONE:
			if (r->file) {
				/* Never touched: the page is in its file. */
				res = paging_swapin(h, r, idx, old, write);
				break;
			}
			if (ctx->paging && !reserved) {
				if (!paging_reserve(ctx->paging))
					return FAULT_DEFER;
				reserved = true;
			}
			if (pg_cas(pw, &old, pg_with_state(old, PG_BUSY)))
				goto claimed;
			continue;
		case PG_COOLING:
			res = paging_uncool(h, r, idx, old, write);
			break;
		case PG_POISONED:
			deliver_poison(ctx, page, psize, tid);
			res = FAULT_ERROR;
			break;
		default:
			if (pg_cas(pw, &old, pg_with_state(old, PG_BUSY)))
				goto claimed;
			continue;
		}
		if (res != FAULT_AGAIN) {
			if (reserved)
				paging_unreserve(ctx->paging, 1);
			return res;
		}
		old = pg_load(pw);
	}
claimed:
	was = pg_state(old);
	if (was == PG_NONE)
		snapshot_keep(r, idx, NULL);
	if (reserved && was != PG_NONE) {
		paging_unreserve(ctx->paging, 1);
		reserved = false;
	}

	if (was == PG_RESIDENT) {
		ret = resident_unmapped(ctx, r, idx, addr);
		if (ret == 0 && (ctx->features & UPG_FEAT_POISON)) {
			/* Lost: the poison marker holds the page (EEXIST: it
			 * was mapped after all). The thread is woken to its
			 * SIGBUS only once the loss is reported (the signal
			 * may end the process). */
			ret = uffd_poison(ctx->uffd, addr & ~(uintptr_t)(base_page(ctx) - 1),
					  base_page(ctx), UFFDIO_POISON_MODE_DONTWAKE);
			if (ret == 0) {
				lost(h, r, idx, old);
				return FAULT_ERROR;
			}
		} else if (ret == 0) {
			ret = map_zero(ctx, page, psize, zeropage);
			if (ret == 0)
				report_lost(h, r, idx, old);
		}
	} else {
		ret = map_zero(ctx, page, psize, zeropage);
	}
	if ((ret == -EEXIST || ret == -ENOENT) && psize > base_page(ctx) && !atomic_load(&r->dying)) {
		/* Part of a multi-base-page page is still mapped (EEXIST), or
		 * no longer mapped at all (ENOENT: the application dropped or
		 * unmapped part of it): fill just the base page that faulted. */
		ret = map_zero(ctx, addr & ~(uintptr_t)(base_page(ctx) - 1), base_page(ctx),
			       zeropage);
	}

	switch (ret) {
	case 0:
		now = zeropage ? PG_ZERO : PG_RESIDENT;
		stat_inc(zeropage ? &h->stats.zero_mapped : &h->stats.zero_filled);
		res = FAULT_DONE;
		break;
	case -EEXIST:
		/* Mapped already: this message arrived after the fault was
		 * resolved (a duplicate from another thread). */
		now = was == PG_NONE ? PG_RESIDENT : was;
		res = FAULT_SHARED;
		break;
	case -EAGAIN:
	case -ENOMEM:
		/* The layout is changing: an event waits to be read, and the
		 * kernel hands events out only when no fault is pending. So
		 * the thread is not woken to fault again (that would starve
		 * the event); its fault is retried a little later. So is one
		 * the kernel found no page for (a memory cgroup at its limit
		 * reclaims meanwhile). */
		now = was;
		stat_inc(&h->stats.ioctl_retries);
		res = FAULT_DEFER;
		break;
	default:
		/* ENOENT: the range is no longer registered (region being
		 * destroyed, or unmapped); ESRCH: the process is exiting. */
		now = was;
		if (ret == -ENOENT || ret == -ESRCH || atomic_load(&r->dying)) {
			res = FAULT_STALE;
		} else {
			report_error(h, addr, ret);
			res = FAULT_ERROR;
		}
		break;
	}

	/* Accounting follows the state word: a page counts as resident while
	 * its word says PG_RESIDENT. A new page is dirty: swap has no copy. */
	if (now == PG_RESIDENT && was != PG_RESIDENT) {
		page_release(r, idx, pg_make(0, PG_RESIDENT, 0, PG_DIRTY));
		paging_resident(h, r, idx);
	} else {
		if (reserved)
			paging_unreserve(ctx->paging, 1);
		if (was == PG_RESIDENT && now != PG_RESIDENT)
			atomic_fetch_sub_explicit(&r->resident_pages, 1, memory_order_relaxed);
		page_release(r, idx, pg_with_state(old & ~(PG_STALE | PG_WAITERS), now));
	}
	/* Wake only after the release: a thread that faults again in between
	 * must find the page free, or its fault would wait for a wake-up that
	 * already happened. A successful ioctl woke everyone itself. */
	if (ret != 0 && res != FAULT_DEFER)
		uffd_wake(ctx->uffd, page, psize);
	/* The faulting thread runs on meanwhile. */
	if (res == FAULT_DONE && was == PG_NONE && now == PG_RESIDENT && !r->file)
		zero_ahead(h, r, idx);
	return res;
}

/* A write to a write-protected page: a clean page's first write under
 * dirty tracking. Elsewhere nothing protects pages, so the protection is
 * lifted and the writer goes on. */
static fault_result resolve_wp(struct handler *h, uintptr_t addr, pid_t tid)
{
	size_t bp = base_page(h->ctx);
	struct upg_region *r;
	int ret;

	if (h->ctx->paging && (r = registry_lookup(&h->ctx->registry, addr)))
		return paging_wp_fault(h, r, region_index(r, addr), tid);
	ret = uffd_writeprotect(h->ctx->uffd, addr & ~(uintptr_t)(bp - 1), bp, 0);
	if (ret == -EAGAIN)
		return FAULT_DEFER;
	if (ret < 0) {
		uffd_wake(h->ctx->uffd, addr & ~(uintptr_t)(bp - 1), bp);
		if (ret != -ENOENT) {
			report_error(h, addr, ret);
			return FAULT_ERROR;
		}
	}
	return FAULT_DONE;
}

/* The faulting thread, where the kernel says (0 otherwise). */
static inline pid_t fault_tid(const struct upg_ctx *ctx, const struct uffd_msg *msg)
{
	return (ctx->features & UPG_FEAT_THREAD_ID) ? (pid_t)msg->arg.pagefault.feat.ptid : 0;
}

/* retry: the message was deferred before and is counted already. */
static void handle_pagefault(struct handler *h, const struct uffd_msg *msg, bool retry)
{
	struct upg_ctx *ctx = h->ctx;
	uintptr_t addr = (uintptr_t)msg->arg.pagefault.address;
	uint64_t flags = msg->arg.pagefault.flags;
	struct upg_region *r;
	fault_result res;

	if (!retry)
		stat_inc(&h->stats.faults);
	if (flags & UFFD_PAGEFAULT_FLAG_WP) {
		if (!retry)
			stat_inc(&h->stats.faults_wp);
		if (resolve_wp(h, addr, fault_tid(ctx, msg)) == FAULT_DEFER && !fault_defer(h, msg))
			uffd_wake(ctx->uffd, addr & ~(uintptr_t)(base_page(ctx) - 1), base_page(ctx));
		return;
	}
	if (flags & UFFD_PAGEFAULT_FLAG_MINOR) {
		stat_inc(&h->stats.faults_minor);
		return;
	}
	if (!retry)
		stat_inc((flags & UFFD_PAGEFAULT_FLAG_WRITE) ? &h->stats.faults_write
							       : &h->stats.faults_read);

	r = registry_lookup(&ctx->registry, addr);
	if (!r) {
		/* Registered memory no region accounts for: a region grown in
		 * place by mremap, or a message that outlived its region. Give
		 * the page back to the kernel so the thread is not stuck. */
		size_t bp = base_page(ctx);

		stat_inc(&h->stats.faults_stale);
		uffd_unregister(ctx->uffd, (void *)(addr & ~(uintptr_t)(bp - 1)), bp);
		uffd_wake(ctx->uffd, addr & ~(uintptr_t)(bp - 1), bp);
		return;
	}
	res = resolve_missing(h, r, addr, flags & UFFD_PAGEFAULT_FLAG_WRITE, fault_tid(ctx, msg));
	if (res == FAULT_SHARED)
		stat_inc(&h->stats.faults_shared);
	else if (res == FAULT_STALE)
		stat_inc(&h->stats.faults_stale);
	else if (res == FAULT_DEFER && !fault_defer(h, msg))
		/* No room to keep it: let the thread fault again. */
		uffd_wake(ctx->uffd, addr & ~(uintptr_t)(base_page(ctx) - 1), base_page(ctx));
}

bool fault_defer(struct handler *h, const struct uffd_msg *msg)
{
	if (h->ndeferred == sizeof(h->deferred) / sizeof(h->deferred[0]))
		return false;
	h->deferred[h->ndeferred++] = *msg;
	stat_inc(&h->stats.faults_deferred);
	return true;
}

void fault_retry_deferred(struct handler *h)
{
	struct uffd_msg msgs[sizeof(h->deferred) / sizeof(h->deferred[0])];
	unsigned n = h->ndeferred;

	memcpy(msgs, h->deferred, n * sizeof(msgs[0]));
	h->ndeferred = 0;
	for (unsigned i = 0; i < n; i++)
		handle_pagefault(h, &msgs[i], true);
}

/* Apply fn to every region overlapping [start, end). */
static void for_each_region(struct upg_ctx *ctx, uintptr_t start, uintptr_t end,
			    void (*fn)(struct upg_region *, uintptr_t, uintptr_t))
{
	while (start < end) {
		struct upg_region *r = registry_next(&ctx->registry, start);
		uintptr_t rbase, rend;

		if (!r)
			return;
		rbase = region_base(r);
		rend = rbase + r->size;
		if (rbase >= end)
			return;
		fn(r, start > rbase ? start : rbase, end < rend ? end : rend);
		start = rend;
	}
}

/* MADV_DONTNEED or MADV_FREE of [start, end): forget the pages, except
 * where it is the reclaimer dropping pages it copied out (evict.c). (Its
 * cooling pool's frames raise no events: paging.h, frames_uffd.) */
static void removed(struct handler *h, uintptr_t start, uintptr_t end)
{
	struct upg_ctx *ctx = h->ctx;
	struct paging *pg = ctx->paging;
	uintptr_t from = start;
	bool theirs = false;

	if (pg) {
		uintptr_t ps = pg->page_size;
		uint64_t n = atomic_load_explicit(&pg->own.npages, memory_order_acquire);
		uintptr_t s = atomic_load_explicit(&pg->own.start, memory_order_relaxed);
		uintptr_t e = s + n * ps;

		for (uintptr_t a = start > s ? start : s; n && a < end && a < e; a += ps) {
			if (!evict_own_removal(pg, a))
				continue;
			if (from < a) {
				for_each_region(ctx, from, a, region_forget);
				theirs = true;
			}
			from = a + ps;
		}
	}
	if (from < end) {
		for_each_region(ctx, from, end, region_forget);
		theirs = true;
	}
	if (theirs)
		stat_inc(&h->stats.events_remove);
}

static void forget_and_unmap(struct upg_region *r, uintptr_t start, uintptr_t end)
{
	region_forget(r, start, end);
	region_unmapped(r, start, end);
}

void fault_dispatch(struct handler *h, const struct uffd_msg *msg)
{
	struct upg_ctx *ctx = h->ctx;
	uint64_t t0 = stat_now_ns();

	switch (msg->event) {
	case UFFD_EVENT_PAGEFAULT:
		handle_pagefault(h, msg, false);
		stat_latency(&h->stats, stat_now_ns() - t0);
		return;
	case UFFD_EVENT_REMOVE:
		removed(h, msg->arg.remove.start, msg->arg.remove.end);
		return;
	case UFFD_EVENT_UNMAP:
		stat_inc(&h->stats.events_unmap);
		for_each_region(ctx, msg->arg.remove.start, msg->arg.remove.end, forget_and_unmap);
		return;
	case UFFD_EVENT_REMAP: {
		struct upg_region *r = registry_lookup(&ctx->registry, msg->arg.remap.from);

		stat_inc(&h->stats.events_remap);
		if (r)
			region_remapped(r, msg->arg.remap.from, msg->arg.remap.to, msg->arg.remap.len);
		return;
	}
	case UFFD_EVENT_FORK:
		/* Not asked for; never keep the child's descriptor. */
		stat_inc(&h->stats.events_fork);
		close((int)msg->arg.fork.ufd);
		return;
	default:
		pr_warn("unknown userfaultfd event %u", msg->event);
		return;
	}
}
