/*
 * config.c - UPAGER_* environment variables. A wrong value stops the
 * program before main() with a message and status 125: a program that runs
 * without the budget it was given would only seem to work.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "preload.h"

#define DEFAULT_SWAP_DIR "/var/tmp"
#define DEFAULT_STATS_DIR "/run/upager"
#define DEFAULT_MMAP_THRESHOLD (1ull << 20)
#define MIN_SWAP_SIZE (1ull << 30)

void preload_die(const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	int n;

	memcpy(buf, "upager: ", 8);
	va_start(ap, fmt);
	n = vsnprintf(buf + 8, sizeof(buf) - 9, fmt, ap);
	va_end(ap);
	n = n < 0 ? 8 : (n > (int)sizeof(buf) - 9 ? (int)sizeof(buf) - 1 : n + 8);
	buf[n++] = '\n';
	if (write(STDERR_FILENO, buf, (size_t)n) < 0) {
		/* nothing more to say */
	}
	_exit(PRELOAD_EXIT_CONFIG);
}

static uint64_t size_var(const char *name, uint64_t def, uint64_t min)
{
	const char *s = getenv(name);
	uint64_t v;

	if (!s)
		return def;
	if (upg_parse_size(s, &v) < 0)
		preload_die("%s=%s: not a size (bytes, or with K, M, G, T as in 512M)", name, s);
	if (v < min)
		preload_die("%s=%s: at least %llu bytes", name, s, (unsigned long long)min);
	return v;
}

/* A boolean's value: 0 or 1 (unset or empty is 0), -1 if s is none. */
static int bool_word(const char *s)
{
	if (!s || !*s || !strcmp(s, "0") || !strcmp(s, "no") || !strcmp(s, "false"))
		return 0;
	if (!strcmp(s, "1") || !strcmp(s, "yes") || !strcmp(s, "true"))
		return 1;
	return -1;
}

/* UPAGER_STATS: a boolean (the summary of the first program that reads it,
 * which takes it out of the environment it passes on), or the pid whose
 * summary is wanted: it stays in the environment, so a program that
 * executes another (a launcher script, `sh -c` running its command) still
 * gets one, and the processes it forks, which have other pids, do not. */
static void stats_var(struct preload_config *cfg)
{
	const char *s = getenv("UPAGER_STATS");
	char *end;
	unsigned long pid;
	int v;

	if (s && *s >= '1' && *s <= '9') {
		errno = 0;
		pid = strtoul(s, &end, 10);
		if (!*end && !errno && pid > 1) {
			if (pid > INT32_MAX)
				preload_die("UPAGER_STATS=%s: not a pid", s);
			cfg->stats_pid = (pid_t)pid;
			cfg->stats = cfg->stats_pid == getpid();
			return;
		}
	}
	v = bool_word(s);
	if (v < 0)
		preload_die("UPAGER_STATS=%s: say 1, 0 or a pid", s);
	cfg->stats = v;
}

/* A swap path must be a directory, or a file whose directory exists. */
static void check_swap_path(const char *p)
{
	char dir[4096];
	struct stat st;
	const char *slash;

	if (!*p)
		preload_die("UPAGER_SWAP: empty path");
	if (stat(p, &st) == 0)
		return;
	slash = strrchr(p, '/');
	if (!slash)
		return;     /* relative file in the working directory */
	if ((size_t)(slash - p) >= sizeof(dir))
		preload_die("UPAGER_SWAP: path too long");
	memcpy(dir, p, (size_t)(slash - p));
	dir[slash - p] = 0;
	if (slash != p && (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode)))
		preload_die("UPAGER_SWAP=%s: no directory %s", p, dir);
}

static void swap_var(struct preload_config *cfg)
{
	const char *s = getenv("UPAGER_SWAP");
	char *copy, *tok, *save = NULL;

	if (!s || !*s) {
		cfg->swap[0] = DEFAULT_SWAP_DIR;
		cfg->nswap = 1;
		return;
	}
	copy = strdup(s);   /* lives as long as the process */
	if (!copy)
		preload_die("out of memory");
	for (tok = strtok_r(copy, ":", &save); tok; tok = strtok_r(NULL, ":", &save)) {
		if (cfg->nswap == PRELOAD_MAX_SWAP)
			preload_die("UPAGER_SWAP: more than %d paths", PRELOAD_MAX_SWAP);
		check_swap_path(tok);
		cfg->swap[cfg->nswap++] = tok;
	}
	if (!cfg->nswap)
		preload_die("UPAGER_SWAP=%s: no path", s);
}

void config_read(struct preload_config *cfg)
{
	const char *s;
	uint64_t def_swap;

	memset(cfg, 0, sizeof(*cfg));
	cfg->mem = size_var("UPAGER_MEM", 0, 0);
	if (cfg->mem && cfg->mem < (16ull << 20))
		preload_die("UPAGER_MEM=%s: at least 16M (or 0 for no limit)", getenv("UPAGER_MEM"));
	def_swap = cfg->mem * 8 > MIN_SWAP_SIZE ? cfg->mem * 8 : MIN_SWAP_SIZE;
	cfg->swap_size = size_var("UPAGER_SWAP_SIZE", def_swap, 1ull << 20);
	swap_var(cfg);
	s = getenv("UPAGER_THREADS");
	if (s) {
		char *e;
		unsigned long v;

		errno = 0;
		v = strtoul(s, &e, 10);
		if (*s < '0' || *s > '9' || *e || errno || v > 1024)
			preload_die("UPAGER_THREADS=%s: a number of handler threads, 0 to 1024 (0 = one per CPU)", s);
		cfg->threads = (unsigned)v;
	}
	s = getenv("UPAGER_POLICY");
	if (!s || !strcmp(s, "cooling"))
		cfg->policy = UPG_POLICY_COOLING;
	else if (!strcmp(s, "fifo"))
		cfg->policy = UPG_POLICY_FIFO;
	else
		preload_die("UPAGER_POLICY=%s: cooling or fifo", s);
	cfg->remote = getenv("UPAGER_REMOTE");
	if (cfg->remote && !*cfg->remote)
		cfg->remote = NULL;
	s = getenv("UPAGER_REPLICAS");
	if (s && strcmp(s, "1") && strcmp(s, "2"))
		preload_die("UPAGER_REPLICAS=%s: 1 or 2 copies of each page", s);
	if (s && !cfg->remote)
		preload_die("UPAGER_REPLICAS=%s: needs UPAGER_REMOTE", s);
	cfg->replicas = s ? (unsigned)(*s - '0') : 1;
	if (cfg->remote && getenv("UPAGER_SWAP"))
		preload_die("UPAGER_REMOTE and UPAGER_SWAP: pages go to one or the other");
	stats_var(cfg);
	cfg->mmap_threshold = size_var("UPAGER_MMAP_THRESHOLD", DEFAULT_MMAP_THRESHOLD, 4096);
	s = getenv("UPAGER_STATS_DIR");
	cfg->stats_dir = s && *s ? s : DEFAULT_STATS_DIR;
}
