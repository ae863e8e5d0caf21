/*
 * statfile.c - live statistics for `upager stat PID`: a runtime thread
 * rewrites <stats_dir>/<pid>.stats every half second (a new file renamed
 * over the old one, so a reader never sees half of it), removed at exit.
 * One "key value" pair per line.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "preload.h"

static char path[256];
static pthread_t thread;
static bool running;

static unsigned pct(uint64_t part, uint64_t whole)
{
	return whole ? (unsigned)(part * 100 / whole) : 0;
}

size_t stats_format(const struct upg_stats *st, char *buf, size_t size)
{
	uint64_t paged_in = st->faults_major + st->faults_cooling;
	int n = snprintf(buf, size,
		"mem_limit %llu\n"
		"resident_bytes %llu\n"
		"cooling_bytes %llu\n"
		"regions %llu\n"
		"faults %llu\n"
		"faults_major %llu\n"
		"faults_cooling %llu\n"
		"faults_dirty %llu\n"
		"zero_filled %llu\n"
		"zero_ahead %llu\n"
		"evicted %llu\n"
		"swap_outs %llu\n"
		"swap_ins %llu\n"
		"swap_used_bytes %llu\n"
		"swap_kept_bytes %llu\n"
		"dropped_clean %llu\n"
		"readahead_pages %llu\n"
		"cooling_hit_pct %u\n"
		"readahead_hit_pct %u\n"
		"fault_p50_ns %llu\n"
		"fault_p99_ns %llu\n"
		"errors %llu\n",
		(unsigned long long)st->mem_limit, (unsigned long long)st->resident_bytes,
		(unsigned long long)st->cooling_bytes, (unsigned long long)st->regions,
		(unsigned long long)st->faults, (unsigned long long)st->faults_major,
		(unsigned long long)st->faults_cooling, (unsigned long long)st->faults_dirty,
		(unsigned long long)st->zero_filled,
		(unsigned long long)st->zero_ahead,
		(unsigned long long)st->evicted, (unsigned long long)st->swap_outs,
		(unsigned long long)st->swap_ins, (unsigned long long)st->swap_used_bytes,
		(unsigned long long)st->swap_kept_bytes, (unsigned long long)st->dropped_clean,
		(unsigned long long)st->readahead_pages,
		pct(st->faults_cooling, paged_in),
		pct(st->readahead_hits, st->readahead_hits + st->readahead_waste),
		(unsigned long long)upg_stats_latency_ns(st, 0.5),
		(unsigned long long)upg_stats_latency_ns(st, 0.99),
		(unsigned long long)(st->errors + st->read_errors + st->write_errors));
	if (n >= 0 && (size_t)n < size && st->remote_servers) {
		int m = snprintf(buf + n, size - (size_t)n,
			"remote_servers %u\n"
			"remote_servers_down %u\n"
			"remote_fallbacks %llu\n"
			"remote_conn_lost %llu\n"
			"remote_reconnects %llu\n",
			st->remote_servers, st->remote_servers_down,
			(unsigned long long)st->remote_fallbacks,
			(unsigned long long)st->remote_conn_lost,
			(unsigned long long)st->remote_reconnects);

		n = m < 0 ? n : n + m;
	}

	return n < 0 ? 0 : ((size_t)n >= size ? size - 1 : (size_t)n);
}

static void publish(void)
{
	struct upg_stats st = { .size = sizeof(st) };
	char tmp[sizeof(path) + 8], buf[2048];
	size_t n;
	int fd;

	if (upg_stats_get(preload.ctx, &st) < 0)
		return;
	n = stats_format(&st, buf, sizeof(buf));
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return;
	if (write(fd, buf, n) == (ssize_t)n)
		rename(tmp, path);
	else
		unlink(tmp);
	close(fd);
}

static void *statfile_main(void *arg)
{
	struct timespec half = { 0, 500000000 };

	for (;;) {
		publish();
		nanosleep(&half, NULL);
	}
	return NULL;
}

/* Files of processes gone without removing theirs: killed, or left through
 * _exit() (a forked child often is, redis' BGSAVE child for one). */
static void remove_stale(void)
{
	DIR *d = opendir(preload.cfg.stats_dir);
	struct dirent *e;

	while (d && (e = readdir(d))) {
		char *end;
		long pid = strtol(e->d_name, &end, 10);

		if (pid > 0 && (!strcmp(end, ".stats") || !strcmp(end, ".stats.tmp")) &&
		    kill((pid_t)pid, 0) < 0 && errno == ESRCH)
			unlinkat(dirfd(d), e->d_name, 0);
	}
	if (d)
		closedir(d);
}

/* Without a writable directory there are no live statistics; the program
 * runs all the same. */
void statfile_start(void)
{
	int n;

	mkdir(preload.cfg.stats_dir, 0755);
	remove_stale();
	n = snprintf(path, sizeof(path), "%s/%d.stats", preload.cfg.stats_dir, (int)getpid());
	if (n < 0 || (size_t)n >= sizeof(path) || access(preload.cfg.stats_dir, W_OK) < 0)
		return;
	running = pthread_create(&thread, NULL, statfile_main, NULL) == 0;
	if (running)
		pthread_detach(thread);
}

void statfile_remove(void)
{
	if (running)
		unlink(path);
}

/* In the child of a fork: the parent's file is the parent's; the child
 * gets its own, under its pid. */
void statfile_forked(void)
{
	running = false;
	statfile_start();
}
