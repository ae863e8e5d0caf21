/*
 * snapshot.h - point-in-time images of a region (upg_snapshot), copied out
 * while the application keeps writing.
 *
 * While a snapshot runs, each page of its region has a bit saying that its
 * image is still to be taken. Whoever is about to change what a page holds,
 * or to map it back from elsewhere, does so on a claimed (PG_BUSY) page and
 * calls snapshot_keep() first: if the bit is set, the page's contents are
 * copied aside (the copy-on-write) and the bit cleared. The snapshot's own
 * thread takes the pages whose bit is still set, claiming them likewise.
 */
#ifndef UPG_SNAPSHOT_H
#define UPG_SNAPSHOT_H

#include <stdatomic.h>
#include <stdint.h>

#include "region.h"

struct upg_snap;

/* The snapshot of r in progress, or NULL. */
static inline struct upg_snap *snapshot_of(struct upg_region *r)
{
	return atomic_load_explicit(&r->snap, memory_order_acquire);
}

void snapshot_save(struct upg_snap *s, uint64_t idx, const void *src);

/* Page idx of r, claimed by the caller, holds what src points to (NULL:
 * zeros) and is about to change or be mapped: keep that for the snapshot if
 * it still wants the page. */
static inline void snapshot_keep(struct upg_region *r, uint64_t idx, const void *src)
{
	struct upg_snap *s = snapshot_of(r);

	if (__builtin_expect(s != NULL, 0))
		snapshot_save(s, idx, src);
}

#endif /* UPG_SNAPSHOT_H */
