/*
 * hash_index.c - a small persistent hash index on a upager file region: what
 * the database API is for.
 *
 *   hash_index FILE [-n KEYS] [-m MEM_MIB] [-s SWAP_DIR]
 *
 * (defaults: 200000 keys, a 6 MiB index, under a 2 MiB budget)
 *
 * The index file is an array of 4 KiB pages: page 0 a header (magic, bucket
 * count, last committed transaction), then buckets of 255 key/value pairs,
 * open addressing over pages. The whole file is mapped as one region under a
 * memory budget smaller than the index, and used through plain pointers:
 *
 *   update   pin the bucket page (it cannot be evicted or written back half
 *            updated), change it, unpin;
 *   commit   every 1000 updates, record the transaction in the header and
 *            upg_flush: the dirty pages reach the file, durably;
 *   lookup   a batch of keys at a time: upg_prefetch the batch's buckets, wait
 *            on the context's event fd, then read them without a page fault;
 *   reopen   the file read-only, every key checked.
 *
 * A file that exists is reused: its committed keys are checked first.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "upager.h"

#define PAGE 4096u
#define MAGIC 0x5550474858444931ull    /* "UPGHXDI1" */
#define SLOTS ((PAGE - 16) / 16)
#define TXN 1000u
#define BATCH 64u

struct header {
	uint64_t magic, nbuckets, committed_keys, txns;
};

struct bucket {
	uint32_t count, pad;
	uint64_t reserved;
	struct { uint64_t key, val; } e[SLOTS];
};

static upg_region *region;
static uint8_t *base;
static uint64_t nbuckets;

static void die(const char *what, int err)
{
	fprintf(stderr, "hash_index: %s: %s\n", what, upg_strerror(err));
	exit(1);
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t hash(uint64_t k)
{
	k ^= k >> 33;
	k *= 0xff51afd7ed558ccdull;
	k ^= k >> 33;
	return k;
}

static uint64_t value_of(uint64_t key)
{
	return hash(key) ^ 0xabcdef;
}

static struct header *hdr(void)
{
	return (struct header *)base;
}

static uint64_t bucket_of(uint64_t key, uint64_t probe)
{
	return 1 + (hash(key) + probe) % nbuckets;
}

static struct bucket *bucket(uint64_t b)
{
	return (struct bucket *)(base + b * PAGE);
}

static void put(uint64_t key, uint64_t val)
{
	for (uint64_t probe = 0; probe < nbuckets; probe++) {
		uint64_t b = bucket_of(key, probe);
		struct bucket *bk = bucket(b);
		int ret = upg_pin(region, b * PAGE, PAGE);

		if (ret < 0)
			die("upg_pin", ret);
		if (bk->count < SLOTS) {
			bk->e[bk->count].key = key;
			bk->e[bk->count].val = val;
			bk->count++;
			upg_unpin(region, b * PAGE, PAGE);
			return;
		}
		upg_unpin(region, b * PAGE, PAGE);
	}
	die("put", -ENOSPC);
}

static int get(uint64_t key, uint64_t *val)
{
	for (uint64_t probe = 0; probe < nbuckets; probe++) {
		struct bucket *bk = bucket(bucket_of(key, probe));

		for (uint32_t i = 0; i < bk->count; i++) {
			if (bk->e[i].key == key) {
				*val = bk->e[i].val;
				return 0;
			}
		}
		if (bk->count < SLOTS)
			return -ENOENT;
	}
	return -ENOENT;
}

static void commit(uint64_t keys)
{
	int ret;

	hdr()->committed_keys = keys;
	hdr()->txns++;
	ret = upg_flush(region, 0, upg_region_size(region), 0);
	if (ret < 0)
		die("upg_flush", ret);
}

/* Look up keys [1, n] in batches whose buckets are prefetched first.
 * Returns how many were missing or wrong. */
static uint64_t lookup_all(upg_ctx *ctx, uint64_t n)
{
	struct pollfd pfd = { .fd = upg_ctx_event_fd(ctx), .events = POLLIN };
	struct upg_range ranges[BATCH];
	uint64_t bad = 0, v;

	for (uint64_t k0 = 1; k0 <= n; k0 += BATCH) {
		unsigned m = 0;

		for (uint64_t k = k0; k < k0 + BATCH && k <= n; k++)
			ranges[m++] = (struct upg_range){ bucket_of(k, 0) * PAGE, PAGE };
		if (upg_prefetch(region, ranges, m, 0) == 0 && poll(&pfd, 1, 10000) == 1 &&
		    read(pfd.fd, &v, sizeof(v)) < 0) {
			/* Counted already: nothing to do. */
		}
		for (uint64_t k = k0; k < k0 + BATCH && k <= n; k++)
			bad += get(k, &v) < 0 || v != value_of(k);
	}
	return bad;
}

static upg_region *open_index(upg_ctx *ctx, const char *path, uint64_t size, uint32_t flags)
{
	struct upg_region_opts opts;
	upg_region *r;
	int ret;

	upg_region_opts_init(&opts);
	opts.file = path;
	opts.flags = flags;
	ret = upg_region_create(ctx, size, &opts, &r);
	if (ret < 0)
		die(path, ret);
	return r;
}

static void print_stats(upg_ctx *ctx, const char *phase, double secs)
{
	struct upg_stats st = { .size = sizeof(st) };

	upg_stats_get(ctx, &st);
	printf("%-8s %6.2f s  file reads %llu  writes %llu  prefetched %llu  major faults %llu  "
	       "flushes %llu\n",
	       phase, secs, (unsigned long long)st.file_reads, (unsigned long long)st.file_writes,
	       (unsigned long long)st.prefetch_pages, (unsigned long long)st.faults_major,
	       (unsigned long long)st.flushes);
}

int main(int argc, char **argv)
{
	uint64_t keys = 200000, mem_mib = 2, bad, start = 0;
	const char *swap_dir = "/var/tmp", *path;
	struct upg_swap_file sf;
	struct upg_config cfg;
	upg_ctx *ctx;
	double t;
	int opt, ret;

	while ((opt = getopt(argc, argv, "n:m:s:")) != -1) {
		switch (opt) {
		case 'n': keys = strtoull(optarg, NULL, 0); break;
		case 'm': mem_mib = strtoull(optarg, NULL, 0); break;
		case 's': swap_dir = optarg; break;
		default: goto usage;
		}
	}
	if (optind != argc - 1 || !keys)
		goto usage;
	path = argv[optind];
	/* Buckets half full on average: twice the pages the keys need. */
	nbuckets = 2 * (keys + SLOTS - 1) / SLOTS + 1;

	sf = (struct upg_swap_file){ .path = swap_dir, .size = 64ull << 20 };
	upg_config_init(&cfg);
	cfg.mem_limit = mem_mib << 20;
	cfg.swap_files = &sf;
	cfg.nswap_files = 1;
	ret = upg_ctx_create(&cfg, &ctx);
	if (ret == -EPERM || ret == -EACCES) {
		fprintf(stderr, "hash_index: userfaultfd not permitted: run as root\n");
		return 77;
	}
	if (ret < 0)
		die("upg_ctx_create", ret);
	region = open_index(ctx, path, (1 + nbuckets) * PAGE, UPG_REGION_FILE_CREATE);
	base = upg_region_addr(region);
	printf("index %s: %llu keys, %llu buckets (%llu MiB), budget %llu MiB\n", path,
	       (unsigned long long)keys, (unsigned long long)nbuckets,
	       (unsigned long long)((1 + nbuckets) * PAGE >> 20), (unsigned long long)mem_mib);
	if (hdr()->magic == MAGIC && hdr()->nbuckets != nbuckets) {
		fprintf(stderr, "hash_index: %s was made for another -n\n", path);
		return 1;
	}
	if (hdr()->magic == MAGIC) {
		start = hdr()->committed_keys;
		bad = lookup_all(ctx, start);
		printf("reopened: %llu committed keys from %llu transactions, %llu bad\n",
		       (unsigned long long)start, (unsigned long long)hdr()->txns,
		       (unsigned long long)bad);
		if (bad)
			return 1;
	} else {
		hdr()->magic = MAGIC;
		hdr()->nbuckets = nbuckets;
	}

	t = now();
	for (uint64_t k = start + 1; k <= keys; k++) {
		put(k, value_of(k));
		if (k % TXN == 0 || k == keys)
			commit(k);
	}
	print_stats(ctx, "insert", now() - t);
	t = now();
	bad = lookup_all(ctx, keys);
	print_stats(ctx, "lookup", now() - t);
	upg_region_destroy(region);

	region = open_index(ctx, path, (1 + nbuckets) * PAGE, UPG_REGION_FILE_RDONLY);
	base = upg_region_addr(region);
	t = now();
	bad += hdr()->committed_keys != keys;
	bad += lookup_all(ctx, keys);
	print_stats(ctx, "reopen", now() - t);
	upg_region_destroy(region);
	upg_ctx_destroy(ctx);
	printf("%s: %llu keys, %llu bad\n", bad ? "FAILED" : "ok", (unsigned long long)keys,
	       (unsigned long long)bad);
	return bad ? 1 : 0;
usage:
	fprintf(stderr, "usage: hash_index FILE [-n KEYS] [-m MEM_MIB] [-s SWAP_DIR]\n");
	return 2;
}
