/*
 * registry.h - the context's regions, found by address on the fault path.
 *
 * An immutable array sorted by base address is published through one atomic
 * pointer. Lookups (handlers, online in QSBR terms) take no lock; changes
 * (region create/destroy, a region moved by mremap) copy the array under
 * the writers' mutex, publish the copy and retire the old one, which
 * registry_reclaim() frees after a grace period.
 */
#ifndef UPG_REGISTRY_H
#define UPG_REGISTRY_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "qsbr.h"

struct upg_region;
struct registry_snap;

struct registry {
	_Atomic(struct registry_snap *) cur;
	pthread_mutex_t lock;           /* writers; ranks before region locks */
	struct registry_snap *retired;  /* old arrays awaiting a grace period */
};

int registry_init(struct registry *reg);
/* Frees everything; no reader may be online. */
void registry_destroy(struct registry *reg);

/* The region containing addr, or NULL. Caller must be an online reader, or
 * hold reg->lock. */
struct upg_region *registry_lookup(struct registry *reg, uintptr_t addr);

/* The region containing addr or, if none does, the first one above it;
 * NULL if there is none. Same rules as registry_lookup(). */
struct upg_region *registry_next(struct registry *reg, uintptr_t addr);

/* Add or remove a region (whose base and size are set). -ENOMEM, or
 * -EEXIST when the range overlaps a region already present. */
int registry_insert(struct registry *reg, struct upg_region *r);
void registry_remove(struct registry *reg, struct upg_region *r);
/* Re-sort after r's base changed (mremap of the whole region). */
int registry_moved(struct registry *reg, struct upg_region *r);

/* Wait a grace period, then free arrays retired before the call. Never call
 * from an online reader. */
void registry_reclaim(struct registry *reg, struct qsbr *q);

#endif /* UPG_REGISTRY_H */
