/*
 * run.c - `upager run`: start a program with libupager-preload.so, its
 * configuration in UPAGER_* variables; `upager stat PID`: what such a
 * program publishes while it runs.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "upager.h"

#define PRELOAD_NAME "libupager-preload.so"
#define EXIT_EXEC 127

static const char run_usage[] =
	"usage: upager run [--mem SIZE] [--swap PATH]... [--swap-size SIZE]\n"
	"                  [--remote HOST:PORT,... [--replicas 1|2]] [--threads N]\n"
	"                  [--policy cooling|fifo] [--stats]\n"
	"                  -- PROGRAM [ARGS]\n\n"
	"  --mem SIZE        memory budget for the program's heap and large mappings (512M, 2G)\n"
	"  --swap PATH       where pages beyond the budget go: a directory (an unlinked file is\n"
	"                    made there) or a file; repeat for more (default /var/tmp)\n"
	"  --swap-size SIZE  swap space in all, split between the paths (default 8x the budget,\n"
	"                    at least 1G)\n"
	"  --remote H:P,...  page to these memcached servers (started with -M) instead of swap\n"
	"  --replicas N      copies of each page on distinct servers: 1 (default) or 2\n"
	"  --threads N       fault handler threads (default one per CPU)\n"
	"  --policy P        which pages leave memory: cooling (second chance, the default)\n"
	"                    or fifo (oldest first)\n"
	"  --stats           print a summary of the program's paging on stderr when it exits\n"
	"                    (not of the children it forks or the programs it runs)\n";

/* The preload library: UPAGER_PRELOAD, else beside this binary's build
 * tree (../preload/), else in the install's library directory. */
static int find_preload(char *out, size_t size)
{
	static const char *const rel[] = { "/../preload/" PRELOAD_NAME,
					   "/../" UPAGER_INSTALL_LIBDIR "/" PRELOAD_NAME,
					   "/" PRELOAD_NAME };
	const char *env = getenv("UPAGER_PRELOAD");
	char exe[PATH_MAX];
	ssize_t n;
	char *slash;

	if (env && *env) {
		snprintf(out, size, "%s", env);
		return access(out, R_OK) == 0 ? 0 : -errno;
	}
	n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n < 0)
		return -errno;
	exe[n] = 0;
	slash = strrchr(exe, '/');
	if (slash)
		*slash = 0;
	for (size_t i = 0; i < sizeof(rel) / sizeof(rel[0]); i++) {
		char path[PATH_MAX * 2];

		snprintf(path, sizeof(path), "%s%s", exe, rel[i]);
		if (access(path, R_OK) == 0 && realpath(path, out))
			return 0;
	}
	return -ENOENT;
}

static int set_size(const char *var, const char *opt, const char *val)
{
	uint64_t v;

	if (upg_parse_size(val, &v) < 0) {
		fprintf(stderr, "upager run: %s %s: not a size (like 512M or 2G)\n", opt, val);
		return -1;
	}
	setenv(var, val, 1);
	return 0;
}

int cmd_run(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "mem", required_argument, NULL, 'm' },
		{ "swap", required_argument, NULL, 's' },
		{ "swap-size", required_argument, NULL, 'z' },
		{ "threads", required_argument, NULL, 't' },
		{ "policy", required_argument, NULL, 'p' },
		{ "remote", required_argument, NULL, 'r' },
		{ "replicas", required_argument, NULL, 'R' },
		{ "stats", no_argument, NULL, 'S' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	char swap[8192] = "", lib[PATH_MAX], preload[PATH_MAX * 2];
	const char *old;
	int c;

	while ((c = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
		switch (c) {
		case 'm':
			if (set_size("UPAGER_MEM", "--mem", optarg) < 0)
				return EXIT_USAGE;
			break;
		case 'z':
			if (set_size("UPAGER_SWAP_SIZE", "--swap-size", optarg) < 0)
				return EXIT_USAGE;
			break;
		case 's':
			if (!*optarg || strchr(optarg, ':') ||
			    strlen(swap) + strlen(optarg) + 2 > sizeof(swap)) {
				fprintf(stderr, "upager run: --swap %s: not a usable path\n", optarg);
				return EXIT_USAGE;
			}
			if (*swap)
				strcat(swap, ":");
			strcat(swap, optarg);
			break;
		case 't': {
			char *e;
			long v = strtol(optarg, &e, 10);

			if (*optarg < '0' || *optarg > '9' || *e || v > 1024) {
				fprintf(stderr, "upager run: --threads %s: 0 to 1024\n", optarg);
				return EXIT_USAGE;
			}
			setenv("UPAGER_THREADS", optarg, 1);
			break;
		}
		case 'p':
			if (strcmp(optarg, "cooling") && strcmp(optarg, "fifo")) {
				fprintf(stderr, "upager run: --policy %s: cooling or fifo\n", optarg);
				return EXIT_USAGE;
			}
			setenv("UPAGER_POLICY", optarg, 1);
			break;
		case 'r':
			setenv("UPAGER_REMOTE", optarg, 1);
			break;
		case 'R':
			if (strcmp(optarg, "1") && strcmp(optarg, "2")) {
				fprintf(stderr, "upager run: --replicas %s: 1 or 2\n", optarg);
				return EXIT_USAGE;
			}
			setenv("UPAGER_REPLICAS", optarg, 1);
			break;
		case 'S': {
			/* The program keeps this pid through exec(): its summary,
			 * whatever it executes (preload/config.c). */
			char pid[16];

			snprintf(pid, sizeof(pid), "%d", (int)getpid());
			setenv("UPAGER_STATS", pid, 1);
			break;
		}
		case 'h':
			fputs(run_usage, stdout);
			return 0;
		default:
			fputs(run_usage, stderr);
			return EXIT_USAGE;
		}
	}
	if (optind >= argc) {
		fputs("upager run: no program to run\n", stderr);
		fputs(run_usage, stderr);
		return EXIT_USAGE;
	}
	if (*swap)
		setenv("UPAGER_SWAP", swap, 1);
	if (find_preload(lib, sizeof(lib)) < 0) {
		fprintf(stderr, "upager run: cannot find %s (set UPAGER_PRELOAD to its path)\n",
			PRELOAD_NAME);
		return EXIT_EXEC;
	}
	old = getenv("LD_PRELOAD");
	snprintf(preload, sizeof(preload), "%s%s%s", lib, old && *old ? " " : "", old ? old : "");
	setenv("LD_PRELOAD", preload, 1);
	execvp(argv[optind], argv + optind);
	fprintf(stderr, "upager run: %s: %s\n", argv[optind], strerror(errno));
	return EXIT_EXEC;
}

int cmd_stat(int argc, char **argv)
{
	const char *dir = getenv("UPAGER_STATS_DIR");
	char path[PATH_MAX], line[256];
	FILE *f;
	char *e;
	long pid;

	if (argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
		puts("usage: upager stat PID\n\nShow the live statistics of a program running "
		     "under `upager run` (faults, resident memory, swap I/O, hit rates).");
		return 0;
	}
	if (argc != 2 || (pid = strtol(argv[1], &e, 10)) <= 0 || *e) {
		fputs("usage: upager stat PID\n", stderr);
		return EXIT_USAGE;
	}
	snprintf(path, sizeof(path), "%s/%ld.stats", dir && *dir ? dir : "/run/upager", pid);
	/* A program killed by a signal leaves its file behind. */
	if (kill((pid_t)pid, 0) < 0 && errno == ESRCH) {
		unlink(path);
		fprintf(stderr, "upager stat: no process %ld\n", pid);
		return 1;
	}
	f = fopen(path, "r");
	if (!f) {
		fprintf(stderr, "upager stat: no statistics for pid %ld (%s: %s)\n", pid, path,
			strerror(errno));
		return 1;
	}
	printf("pid %ld\n", pid);
	while (fgets(line, sizeof(line), f)) {
		char key[64];
		unsigned long long v;

		if (sscanf(line, "%63s %llu", key, &v) != 2)
			continue;
		if (strstr(key, "bytes") || !strcmp(key, "mem_limit"))
			printf("  %-20s %llu MiB\n", key, v >> 20);
		else if (strstr(key, "_pct"))
			printf("  %-20s %llu%%\n", key, v);
		else
			printf("  %-20s %llu\n", key, v);
	}
	fclose(f);
	return 0;
}
