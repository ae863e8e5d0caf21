/*
 * stats.h - fault-path counters.
 *
 * Each handler owns a block of counters that only it writes (relaxed
 * load + store, no locked instruction on the fault path); upg_stats_get()
 * sums the blocks. The counters are named once, in UPG_COUNTERS, and map
 * one to one onto the fields of struct upg_stats.
 */
#ifndef UPG_STATS_H
#define UPG_STATS_H

#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

#include "upager.h"

/* Set to 0 to compile every counter and the latency clock out. */
static const int config_stats = 1;

#define UPG_COUNTERS(X)                                                        \
	X(faults) X(faults_read) X(faults_write) X(faults_wp) X(faults_minor)   \
	X(faults_shared) X(faults_stale) X(zero_mapped) X(zero_filled)          \
	X(events_remove) X(events_unmap) X(events_remap) X(events_fork)         \
	X(ioctl_retries) X(errors) X(faults_major) X(faults_cooling)         \
	X(faults_deferred) X(evicted) X(swap_outs) X(swap_ins)                  \
	X(dropped_clean) X(write_errors) X(read_errors) X(poisoned)             \
	X(faults_dirty) X(readahead_pages) X(readahead_hits) X(readahead_waste)  \
	X(file_reads) X(file_writes) X(prefetch_pages) X(prefetch_skipped)   \
	X(zero_ahead) X(read_retries)

struct handler_stats {
#define X(name) _Atomic uint64_t name;
	UPG_COUNTERS(X)
#undef X
	_Atomic uint64_t latency_hist[UPG_LAT_BUCKETS];
};

/* Only the owning thread may call these on its block. */
static inline void stat_add(_Atomic uint64_t *c, uint64_t n)
{
	if (config_stats)
		atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
				      memory_order_relaxed);
}
#define stat_inc(c) stat_add(c, 1)

/* CLOCK_MONOTONIC in ns. */
static inline uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* The latency clock: 0 when the counters are compiled out. */
static inline uint64_t stat_now_ns(void)
{
	return config_stats ? mono_ns() : 0;
}

void stat_latency(struct handler_stats *s, uint64_t ns);

/* Add block s into st (a full-size struct upg_stats). */
void stats_accumulate(struct upg_stats *st, const struct handler_stats *s);

#endif /* UPG_STATS_H */
