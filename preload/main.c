/*
 * main.c - the library's life: one context per process, made before main()
 * from the UPAGER_* configuration; runtime threads marked as such; fork;
 * the summary at exit.
 *
 * The context is not destroyed at exit: destructors and atexit handlers
 * that run after ours still use the heap. Swap files are unlinked from the
 * start, so the kernel removes them with the process, however it ends.
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "preload.h"

struct preload preload;
/* stderr as it was at start: programs that close theirs before exit (sort
 * does) still get the summary. */
static int stats_fd = -1;
__thread unsigned preload_depth __attribute__((tls_model("initial-exec")));

/* ---- threads: those the runtime starts run as runtime threads ---- */

struct start {
	void *(*fn)(void *);
	void *arg;
};

static void *runtime_thread(void *p)
{
	struct start s = *(struct start *)p;

	preload_depth = 1;
	free(p);
	return s.fn(s.arg);
}

typedef int (*pthread_create_fn)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *);

/* Not exported: only the runtime's own calls come here. */
int pthread_create(pthread_t *t, const pthread_attr_t *attr, void *(*fn)(void *), void *arg)
{
	static pthread_create_fn real;
	struct start *s;
	int ret;

	if (!real)
		real = (pthread_create_fn)dlsym(RTLD_NEXT, "pthread_create");
	if (!preload_in_runtime())
		return real(t, attr, fn, arg);
	s = malloc(sizeof(*s));
	if (!s)
		return EAGAIN;
	s->fn = fn;
	s->arg = arg;
	ret = real(t, attr, runtime_thread, s);
	if (ret)
		free(s);
	return ret;
}

/* ---- fork ----
 * The child gets the parent's memory as it was (upg_ctx_fork_prepare brings
 * back everything paged out first) and pages it under its own budget, with
 * swap files and threads of its own (upg_ctx_fork_child). If it cannot, its
 * memory is plain memory and its new memory comes from the kernel.
 */

static void fork_prepare(void)
{
	static const char warn[] = "upager: fork: some paged-out memory could not be brought "
				   "back (made unreadable?): it reads as zeros in the child\n";

	preload_enter();
	if (atomic_load(&preload.ready) && upg_ctx_fork_prepare(preload.ctx) < 0 &&
	    write(STDERR_FILENO, warn, sizeof(warn) - 1) < 0) {
		/* stderr closed: nobody to tell */
	}
	preload_leave();
	priv_fork_prepare();
}

static void fork_parent(void)
{
	priv_fork_done();
	if (atomic_load(&preload.ready))
		upg_ctx_fork_parent(preload.ctx);
}

static void fork_child(void)
{
	static const char warn[] = "upager: fork: the child cannot page; its memory is not "
				   "bounded by the budget\n";

	priv_fork_done();
	if (!atomic_load(&preload.ready))
		return;
	preload_enter();
	/* The summary at exit is the program's: not one per child. */
	preload.cfg.stats = false;
	preload.pid = getpid();
	if (upg_ctx_fork_child(preload.ctx) == 0) {
		statfile_forked();
	} else {
		atomic_store(&preload.ready, false);
		if (write(STDERR_FILENO, warn, sizeof(warn) - 1) < 0) {
			/* stderr closed: nobody to tell */
		}
	}
	preload_leave();
}

/* ---- start and exit ---- */

static void make_context(void)
{
	struct preload_config *c = &preload.cfg;
	struct upg_swap_file swap[PRELOAD_MAX_SWAP];
	struct upg_config cfg;
	int ret;

	upg_config_init(&cfg);
	cfg.handler_threads = c->threads;
	cfg.policy = c->policy;
	cfg.mem_limit = c->mem;
	if (c->mem && c->remote) {
		cfg.remote_servers = c->remote;
		cfg.remote_replicas = c->replicas;
	} else if (c->mem) {
		for (unsigned i = 0; i < c->nswap; i++) {
			swap[i] = (struct upg_swap_file){
				.path = c->swap[i],
				.size = (c->swap_size / c->nswap) & ~(preload.page_size - 1),
			};
		}
		cfg.swap_files = swap;
		cfg.nswap_files = c->nswap;
	}
	ret = upg_ctx_create(&cfg, &preload.ctx);
	if (ret < 0)
		preload_die("cannot start: %s", upg_strerror(ret));
	/* Named swap files: gone from the directory now, in use until exit. */
	for (unsigned i = 0; c->mem && !c->remote && i < c->nswap; i++) {
		struct stat st;

		if (stat(c->swap[i], &st) == 0 && S_ISREG(st.st_mode))
			unlink(c->swap[i]);
	}
}

extern char **environ;

/* Remove name from the environment, in place, as unsetenv would: not
 * through unsetenv, which a program may define for itself (bash does, for
 * tables it builds only later in main). */
static void env_drop(const char *name)
{
	size_t len = strlen(name);
	char **out = environ;

	if (!environ)
		return;
	for (char **e = environ; *e; e++)
		if (strncmp(*e, name, len) || (*e)[len] != '=')
			*out++ = *e;
	*out = NULL;
}

__attribute__((constructor(101))) static void preload_start(void)
{
	int saved = errno, ret;
	long ps = sysconf(_SC_PAGESIZE);

	preload_enter();
	preload.page_size = ps > 0 ? (uint64_t)ps : 4096;
	preload.pid = getpid();
	config_read(&preload.cfg);
	make_context();
	ret = extents_install();
	if (ret < 0)
		preload_die("cannot give jemalloc's arenas their hooks: %s", upg_strerror(ret));
	if (preload.cfg.stats) {
		stats_fd = fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 100);
		/* Nor one per program it runs (a shell's every command); a pid
		 * tells those apart by itself. */
		if (!preload.cfg.stats_pid)
			env_drop("UPAGER_STATS");
	}
	pthread_atfork(fork_prepare, fork_parent, fork_child);
	atomic_store_explicit(&preload.ready, true, memory_order_release);
	statfile_start();
	preload_leave();
	errno = saved;
}

/* At exit, once: the statistics file goes, the summary is printed. */
static void leaving(void)
{
	static atomic_bool left;
	struct upg_stats st = { .size = sizeof(st) };
	char buf[2048];
	size_t n;
	int saved = errno;

	if (!atomic_load(&preload.ready) || getpid() != preload.pid || atomic_exchange(&left, true))
		return;
	preload_enter();
	statfile_remove();
	if (preload.cfg.stats && upg_stats_get(preload.ctx, &st) == 0) {
		n = (size_t)snprintf(buf, sizeof(buf), "upager: pid %d exit\n", (int)getpid());
		n += stats_format(&st, buf + n, sizeof(buf) - n);
		if (write(stats_fd, buf, n) < 0) {
			/* stderr closed: nobody to tell */
		}
	}
	preload_leave();
	errno = saved;
}

__attribute__((destructor(101))) static void preload_exit(void)
{
	leaving();
}

/* A program that leaves by _exit() (dash always does; so do forked
 * children such as redis' BGSAVE) runs no destructor. */
EXPORT void _exit(int status)
{
	leaving();
	for (;;)
		syscall(SYS_exit_group, status);
}

EXPORT void _Exit(int status)
{
	_exit(status);
}
