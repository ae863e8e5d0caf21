/*
 * ctx.h - the context: one userfaultfd, its handler pool, its regions.
 */
#ifndef UPG_CTX_H
#define UPG_CTX_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "paging.h"
#include "qsbr.h"
#include "registry.h"
#include "stats.h"
#include "upager.h"

struct handler {
	struct upg_ctx *ctx;
	pthread_t thread;
	unsigned id;
	int cpu;                    /* pinned to this CPU, or -1 */
	int epfd;                   /* what it waits for (handler.c) */
	struct handler_stats stats;
	struct paging_handler paging;
	/* Faults that could not be resolved yet (no memory, a layout change
	 * in progress): their threads wait until a retry resolves them. */
	struct uffd_msg deferred[64];
	unsigned ndeferred;
} __attribute__((aligned(64)));

struct upg_ctx {
	struct upg_config cfg;
	int uffd;
	int stop_fd;                /* eventfd: readable once the pool must stop */
	int pagemap_fd;             /* /proc/self/pagemap, or -1 (region_next_touched) */
	pthread_mutex_t read_lock;  /* orders reads of the uffd with events (handler.c) */
	/* Odd while a handler, under read_lock, reads a message and applies
	 * it if it is an event: an event read before a load that finds it even
	 * has been applied (handler.c, fault.c). */
	_Atomic uint64_t read_seq;
	uint64_t features;          /* enum upg_feature bits in use */
	uint64_t register_mode;     /* UFFDIO_REGISTER_MODE_* for new regions */
	unsigned base_page_shift;

	/* Source of UFFDIO_COPY for a first write: reads as zeros. Sized for
	 * the largest page size a region may have. */
	const void *zero_src;

	pthread_mutex_t lock;       /* the region list; ranks before the registry */
	struct upg_region *regions; /* every live region, for destroy and stats */
	uint64_t nregions;
	/* Regions by id, for references that must not hold pointers (queued
	 * pages, I/O in flight). A MAP_NORESERVE table; ids are recycled. */
	_Atomic(struct upg_region *) *by_id;
	uint32_t id_next, id_nfree, id_cap;
	uint32_t *id_free;

	struct paging *paging;      /* NULL without a mem_limit */

	struct registry registry;
	struct qsbr qsbr;
	struct qsbr_reader *qsbr_readers;   /* one per handler */
	struct handler *handlers;
	unsigned nhandlers;
};

/* /proc/self/pagemap bits: a page, or a swap entry, is mapped there. */
#define PM_PRESENT (1ull << 63)
#define PM_SWAP (1ull << 62)

/* The pagemap entry of the base page at addr into *e; false if it cannot be
 * read (no /proc). */
bool ctx_pagemap_entry(const struct upg_ctx *ctx, uintptr_t addr, uint64_t *e);

/* Initialise ctx->lock and ctx->read_lock (creation, and a forked child,
 * where a thread of the parent may have held them). */
void ctx_locks_init(struct upg_ctx *ctx);
/* Open the descriptors that belong to this process (a forked child opens its
 * own): ctx->uffd, with the features of ctx->features the context wants, and
 * the registration mode that goes with them; ctx->pagemap_fd. */
int ctx_open_fds(struct upg_ctx *ctx);
/* Start the handler pool, the reclaimer and the prefetcher (creation, and a
 * forked child: fork.c). */
int ctx_start(struct upg_ctx *ctx);

/* Regions one context can hold at once. */
#define UPG_MAX_REGIONS (1u << 20)

/* Largest page size a region may have: bounds the zero source. */
#define UPG_MAX_PAGE_SIZE (2ull << 20)

#endif /* UPG_CTX_H */
