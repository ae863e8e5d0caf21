/*
 * upager - the command-line tool: what the kernel offers, and a demo run.
 * Uses only the public API (upager.h).
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "upager.h"

struct verb {
	const char *name;
	const char *summary;
	const char *usage;
	int (*run)(int argc, char **argv);
};

static const struct verb verbs[];

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Handles --help/-h for a verb; returns 1 if help was printed. Any other
 * option is a usage error. */
static int verb_no_options(const struct verb *v, int argc, char **argv, int *status)
{
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			printf("usage: upager %s\n\n%s\n", v->usage, v->summary);
			*status = 0;
			return 1;
		}
		fprintf(stderr, "upager %s: unexpected argument '%s'\nusage: upager %s\n",
			v->name, argv[i], v->usage);
		*status = EXIT_USAGE;
		return 1;
	}
	return 0;
}

static int cmd_version(int argc, char **argv)
{
	int status;

	if (verb_no_options(&verbs[1], argc, argv, &status))
		return status;
	printf("upager %s\n", upg_version());
	return 0;
}

static int cmd_features(int argc, char **argv)
{
	uint64_t f;
	int status, ret;

	if (verb_no_options(&verbs[0], argc, argv, &status))
		return status;
	ret = upg_features_probe(&f);
	if (ret < 0) {
		fprintf(stderr, "upager features: userfaultfd unavailable: %s%s\n", upg_strerror(ret),
			ret == -EPERM ? " (run as root, or set vm.unprivileged_userfaultfd=1)" : "");
		return 1;
	}
	for (unsigned i = 0; i < UPG_FEAT_COUNT; i++) {
		uint64_t bit = 1ull << i;

		printf("%-16s %s\n", upg_feature_name(bit), (f & bit) ? "yes" : "no");
	}
	return 0;
}

/* ---- demo ---------------------------------------------------------------- */

struct demo_worker {
	uint8_t *base;
	uint64_t first, count, page;
	uint64_t bad;
	int phase;      /* 0 = write, 1 = verify */
};

static uint64_t pattern(uint64_t page, uint64_t word)
{
	uint64_t x = page * 0x9e3779b97f4a7c15ull ^ word;

	x ^= x >> 31;
	return x * 0xbf58476d1ce4e5b9ull;
}

static void *demo_thread(void *arg)
{
	struct demo_worker *w = arg;

	for (uint64_t p = w->first; p < w->first + w->count; p++) {
		uint64_t *words = (uint64_t *)(w->base + p * w->page);

		/* Every word differs: a page mapped at the wrong place, torn,
		 * or lost shows. */
		for (uint64_t i = 0; i < w->page / 8; i++) {
			if (w->phase == 0)
				words[i] = pattern(p, i);
			else if (words[i] != pattern(p, i))
				w->bad++;
		}
	}
	return NULL;
}

static int cmd_demo(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "size", required_argument, NULL, 's' },
		{ "mem", required_argument, NULL, 'm' },
		{ "threads", required_argument, NULL, 't' },
		{ "remote", required_argument, NULL, 'r' },
		{ "replicas", required_argument, NULL, 'R' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	uint64_t size = 256ull << 20, mem = 64ull << 20, bad = 0;
	char swapdir[] = "/var/tmp/upager-demo-XXXXXX";
	struct upg_swap_file swap = { .path = swapdir };
	struct upg_config cfg;
	unsigned nthreads = 2, replicas = 1;
	const char *remote = NULL;
	struct upg_stats st = { .size = sizeof(st) };
	struct demo_worker w[64];
	pthread_t tid[64];
	upg_ctx *ctx;
	upg_region *r;
	double t[3];
	int c, ret;

	optind = 1;
	while ((c = getopt_long(argc, argv, "s:m:t:r:R:h", longopts, NULL)) != -1) {
		switch (c) {
		case 'm':
			if (upg_parse_size(optarg, &mem) < 0) {
				fprintf(stderr, "upager demo: bad memory limit '%s' (e.g. 64M, 0 = none)\n",
					optarg);
				return EXIT_USAGE;
			}
			break;
		case 's':
			if (upg_parse_size(optarg, &size) < 0 || size < 4096) {
				fprintf(stderr, "upager demo: bad size '%s' (e.g. 256M)\n", optarg);
				return EXIT_USAGE;
			}
			break;
		case 't':
			nthreads = (unsigned)atoi(optarg);
			if (nthreads < 1 || nthreads > 64) {
				fprintf(stderr, "upager demo: threads must be 1..64\n");
				return EXIT_USAGE;
			}
			break;
		case 'r':
			remote = optarg;
			break;
		case 'R':
			replicas = (unsigned)atoi(optarg);
			if (replicas < 1 || replicas > 2) {
				fprintf(stderr, "upager demo: replicas must be 1 or 2\n");
				return EXIT_USAGE;
			}
			break;
		case 'h':
			printf("usage: upager %s\n\n%s\n", verbs[2].usage, verbs[2].summary);
			return 0;
		default:
			fprintf(stderr, "usage: upager %s\n", verbs[2].usage);
			return EXIT_USAGE;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "upager demo: unexpected argument '%s'\n", argv[optind]);
		return EXIT_USAGE;
	}

	/* The region is paged to a swap file (unlinked, in a directory of its
	 * own), or to memcached servers, under a memory limit of `mem`. */
	upg_config_init(&cfg);
	if (mem && remote) {
		cfg.mem_limit = mem;
		cfg.remote_servers = remote;
		cfg.remote_replicas = replicas;
	} else if (mem) {
		if (!mkdtemp(swapdir)) {
			perror("upager demo: mkdtemp");
			return 1;
		}
		swap.size = 2 * size;
		cfg.mem_limit = mem;
		cfg.swap_files = &swap;
		cfg.nswap_files = 1;
	}
	ret = upg_ctx_create(&cfg, &ctx);
	if (cfg.nswap_files)
		rmdir(swapdir);   /* the swap file in it is unlinked already */
	if (ret < 0) {
		fprintf(stderr, "upager demo: cannot create a context: %s\n", upg_strerror(ret));
		return 1;
	}
	size &= ~4095ull;
	ret = upg_region_create(ctx, size, NULL, &r);
	if (ret < 0) {
		fprintf(stderr, "upager demo: cannot create a %llu-byte region: %s\n",
			(unsigned long long)size, upg_strerror(ret));
		upg_ctx_destroy(ctx);
		return 1;
	}
	uint64_t page = upg_region_page_size(r), pages = size / page;

	t[0] = now_s();
	for (int phase = 0; phase < 2; phase++) {
		for (unsigned i = 0; i < nthreads; i++) {
			w[i] = (struct demo_worker){
				.base = upg_region_addr(r), .page = page, .phase = phase,
				.first = pages * i / nthreads,
				.count = pages * (i + 1) / nthreads - pages * i / nthreads,
			};
			pthread_create(&tid[i], NULL, demo_thread, &w[i]);
		}
		for (unsigned i = 0; i < nthreads; i++) {
			pthread_join(tid[i], NULL);
			bad += w[i].bad;
		}
		t[phase + 1] = now_s();
	}
	upg_stats_get(ctx, &st);

	printf("upager demo: %llu MiB region, %llu pages, memory limit %s%llu MiB, %u threads, "
	       "%u handlers\n", (unsigned long long)(size >> 20), (unsigned long long)pages,
	       mem ? "" : "none ", (unsigned long long)(mem >> 20), nthreads, st.handler_threads);
	printf("  write pass    %8.1f ms  %8.1f MB/s\n", (t[1] - t[0]) * 1e3,
	       (double)size / 1e6 / (t[1] - t[0]));
	printf("  verify pass   %8.1f ms  %8.1f MB/s\n", (t[2] - t[1]) * 1e3,
	       (double)size / 1e6 / (t[2] - t[1]));
	printf("  faults        %8llu  (read %llu, write %llu, shared %llu, deferred %llu)\n",
	       (unsigned long long)st.faults, (unsigned long long)st.faults_read,
	       (unsigned long long)st.faults_write, (unsigned long long)st.faults_shared,
	       (unsigned long long)st.faults_deferred);
	printf("  resolved      %8llu zero-filled, %llu zero-page, %llu from swap, %llu from "
	       "cooling\n", (unsigned long long)st.zero_filled, (unsigned long long)st.zero_mapped,
	       (unsigned long long)st.faults_major, (unsigned long long)st.faults_cooling);
	printf("  zero-ahead    %8llu new pages mapped without a fault\n",
	       (unsigned long long)st.zero_ahead);
	printf("  swap I/O      %8llu pages out, %llu in, %llu dropped clean\n",
	       (unsigned long long)st.swap_outs, (unsigned long long)st.swap_ins,
	       (unsigned long long)st.dropped_clean);
	if (mem) {
		static const char *const paths[] = { "UFFDIO_MOVE", "write-protect", "mprotect" };
		uint64_t refaults = st.faults_major + st.faults_cooling;

		printf("  readahead     %8llu pages, %llu hits, %llu wasted\n",
		       (unsigned long long)st.readahead_pages, (unsigned long long)st.readahead_hits,
		       (unsigned long long)st.readahead_waste);
		printf("  eviction      %8llu pages by %s; %llu refaults, %.1f%% from the cooling "
		       "pool\n", (unsigned long long)st.evicted,
		       st.evict_path < 3 ? paths[st.evict_path] : "?", (unsigned long long)refaults,
		       refaults ? 100.0 * (double)st.faults_cooling / (double)refaults : 0.0);
	}
	if (st.remote_servers)
		printf("  servers       %8u, %u down; %llu connections lost, %llu made again, "
		       "%llu reads from a replica, %llu writes refused\n", st.remote_servers,
		       st.remote_servers_down, (unsigned long long)st.remote_conn_lost,
		       (unsigned long long)st.remote_reconnects,
		       (unsigned long long)st.remote_fallbacks,
		       (unsigned long long)st.remote_refused);
	printf("  service time  p50 < %llu ns, p99 < %llu ns\n",
	       (unsigned long long)upg_stats_latency_ns(&st, 0.5),
	       (unsigned long long)upg_stats_latency_ns(&st, 0.99));
	printf("  in memory     %8llu MiB resident + %llu MiB cooling\n",
	       (unsigned long long)(st.resident_bytes >> 20),
	       (unsigned long long)(st.cooling_bytes >> 20));
	printf("  data          %s\n", bad ? "CORRUPT" : "verified");
	upg_region_destroy(r);
	upg_ctx_destroy(ctx);
	return bad ? 1 : 0;
}

static const struct verb verbs[] = {
	{ "features", "Probe what the running kernel's userfaultfd offers.", "features", cmd_features },
	{ "version", "Print upager's version.", "version", cmd_version },
	{ "demo", "Write and verify every page of a region paged to a swap file (or with --remote "
		  "to memcached servers, started with -M) under a memory limit, then print "
		  "statistics.",
	  "demo [--size BYTES] [--mem BYTES] [--threads N] [--remote HOST:PORT,... "
	  "[--replicas 1|2]]", cmd_demo },
	{ "run", "Run a program with its heap and large mappings paged by upager under a memory "
		 "budget (LD_PRELOAD).",
	  "run [--mem SIZE] [--swap PATH]... [--swap-size SIZE] [--threads N] [--stats] -- PROGRAM [ARGS]",
	  cmd_run },
	{ "stat", "Show the live statistics of a program running under `upager run`.",
	  "stat PID", cmd_stat },
};
#define N_VERBS (sizeof(verbs) / sizeof(verbs[0]))

static void usage(FILE *f)
{
	fprintf(f, "usage: upager VERB [ARGS]   (upager VERB --help for more)\n\nverbs:\n");
	for (size_t i = 0; i < N_VERBS; i++)
		fprintf(f, "  %-10s %s\n", verbs[i].name, verbs[i].summary);
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return EXIT_USAGE;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
		usage(stdout);
		return 0;
	}
	if (!strcmp(argv[1], "--version"))
		return cmd_version(1, argv);
	for (size_t i = 0; i < N_VERBS; i++)
		if (!strcmp(argv[1], verbs[i].name))
			return verbs[i].run(argc - 1, argv + 1);
	fprintf(stderr, "upager: unknown verb '%s'\n", argv[1]);
	usage(stderr);
	return EXIT_USAGE;
}
