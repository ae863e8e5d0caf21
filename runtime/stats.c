/* stats.c - see stats.h. */
#include "stats.h"

void stat_latency(struct handler_stats *s, uint64_t ns)
{
	unsigned b = ns ? 63u - (unsigned)__builtin_clzll(ns) : 0;

	stat_inc(&s->latency_hist[b < UPG_LAT_BUCKETS ? b : UPG_LAT_BUCKETS - 1]);
}

void stats_accumulate(struct upg_stats *st, const struct handler_stats *s)
{
#define X(name) st->name += atomic_load_explicit(&s->name, memory_order_relaxed);
	UPG_COUNTERS(X)
#undef X
	for (unsigned i = 0; i < UPG_LAT_BUCKETS; i++)
		st->latency_hist[i] += atomic_load_explicit(&s->latency_hist[i], memory_order_relaxed);
}

uint64_t upg_stats_latency_ns(const struct upg_stats *st, double p)
{
	uint64_t total = 0, seen = 0;

	if (!st || st->size < sizeof(*st))
		return 0;
	for (unsigned i = 0; i < UPG_LAT_BUCKETS; i++)
		total += st->latency_hist[i];
	if (!total)
		return 0;
	if (p < 0)
		p = 0;
	if (p > 1)
		p = 1;
	for (unsigned i = 0; i < UPG_LAT_BUCKETS; i++) {
		seen += st->latency_hist[i];
		if ((double)seen >= p * (double)total && st->latency_hist[i])
			return 2ull << i;
	}
	return 2ull << (UPG_LAT_BUCKETS - 1);
}
