/*
 * cgroup.h - the memory limit of the cgroup this process runs in.
 *
 * A budget above it pages twice: the kernel reclaims upager's own memory
 * (its resident pages, frames and buffers) behind it, into kernel swap or an
 * OOM kill. paging_create() warns about such a budget.
 */
#ifndef UPG_CGROUP_H
#define UPG_CGROUP_H

#include <stdint.h>

/* The tightest memory limit, in bytes, of this process's memory cgroup and
 * its ancestors (v1: hierarchical_memory_limit; v2: the smallest
 * memory.max on the way up), or 0 if there is none or it cannot be read.
 * Plain system calls only: it runs at context creation in a preloaded
 * library, before the allocator may be used. */
uint64_t cgroup_memory_limit(void);

#endif /* UPG_CGROUP_H */
