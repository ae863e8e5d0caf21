/* segv.c - see segv.h. */
#define LOG_PREFIX "segv: "
#include "segv.h"

#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

/* One window per reclaimer evicting at once; more contexts than this on
 * the mprotect path evict in turns. */
#define WINDOWS 16

static struct {
	_Atomic uintptr_t start;    /* 0 = free */
	_Atomic uintptr_t end;
	atomic_bool taken;
} windows[WINDOWS];

/* Bumped at every close: the futex a waiting writer sleeps on, and how a
 * writer tells a retried fault from a repeated one. */
static _Atomic uint32_t closes;

static pthread_mutex_t install_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned installs;
static struct sigaction previous;

/* The last SEGV_ACCERR this thread returned from without a window, and the
 * closes count then: the same address again with no close in between is a
 * real protection fault. */
static __thread uintptr_t last_addr __attribute__((tls_model("initial-exec")));
static __thread uint32_t last_closes __attribute__((tls_model("initial-exec")));

static bool in_window(uintptr_t a)
{
	for (unsigned i = 0; i < WINDOWS; i++) {
		uintptr_t s = atomic_load_explicit(&windows[i].start, memory_order_acquire);

		if (s && a >= s && a < atomic_load_explicit(&windows[i].end, memory_order_relaxed))
			return true;
	}
	return false;
}

static void chain(int sig, siginfo_t *si, void *uc)
{
	if (previous.sa_flags & SA_SIGINFO) {
		previous.sa_sigaction(sig, si, uc);
	} else if (previous.sa_handler == SIG_DFL || previous.sa_handler == SIG_IGN) {
		/* Returning re-executes the access, which now takes the
		 * default action: the process dies as it would have. */
		signal(SIGSEGV, SIG_DFL);
	} else {
		previous.sa_handler(sig);
	}
}

static void on_segv(int sig, siginfo_t *si, void *uc)
{
	uintptr_t a = (uintptr_t)si->si_addr;
	int saved = errno;

	if (si->si_code == SEGV_ACCERR) {
		uint32_t seen = atomic_load_explicit(&closes, memory_order_acquire);

		if (in_window(a)) {
			struct timespec ms = { 0, 1000000 };

			do {
				syscall(SYS_futex, &closes, FUTEX_WAIT_PRIVATE, seen, &ms, NULL, 0);
				seen = atomic_load_explicit(&closes, memory_order_acquire);
			} while (in_window(a));
			errno = saved;
			return;
		}
		if (last_addr != a || last_closes != seen) {
			/* The window may have closed before we looked. */
			last_addr = a;
			last_closes = seen;
			errno = saved;
			return;
		}
	}
	last_addr = 0;
	chain(sig, si, uc);
	errno = saved;
}

int segv_install(void)
{
	int ret = 0;

	pthread_mutex_lock(&install_lock);
	if (!installs) {
		struct sigaction sa;

		memset(&sa, 0, sizeof(sa));
		sa.sa_sigaction = on_segv;
		sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
		sigemptyset(&sa.sa_mask);
		if (sigaction(SIGSEGV, &sa, &previous) < 0)
			ret = -errno;
	}
	if (!ret)
		installs++;
	pthread_mutex_unlock(&install_lock);
	return ret;
}

void segv_uninstall(void)
{
	pthread_mutex_lock(&install_lock);
	if (installs && !--installs) {
		struct sigaction cur;

		/* Put the previous handler back unless someone replaced ours. */
		if (sigaction(SIGSEGV, NULL, &cur) == 0 && (cur.sa_flags & SA_SIGINFO) &&
		    cur.sa_sigaction == on_segv)
			sigaction(SIGSEGV, &previous, NULL);
	}
	pthread_mutex_unlock(&install_lock);
}

int segv_window_open(uintptr_t start, uintptr_t end)
{
	for (unsigned i = 0; i < WINDOWS; i++) {
		bool free_slot = false;

		if (!atomic_compare_exchange_strong(&windows[i].taken, &free_slot, true))
			continue;
		atomic_store_explicit(&windows[i].end, end, memory_order_relaxed);
		atomic_store_explicit(&windows[i].start, start, memory_order_release);
		return (int)i;
	}
	return -EBUSY;
}

void segv_window_close(int id)
{
	atomic_store_explicit(&windows[id].start, 0, memory_order_release);
	atomic_fetch_add_explicit(&closes, 1, memory_order_release);
	atomic_store_explicit(&windows[id].taken, false, memory_order_release);
	syscall(SYS_futex, &closes, FUTEX_WAKE_PRIVATE, 0x7fffffff, NULL, NULL, 0);
}

void segv_forked(void)
{
	pthread_mutex_init(&install_lock, NULL);
	for (unsigned i = 0; i < WINDOWS; i++) {
		atomic_store(&windows[i].start, 0);
		atomic_store(&windows[i].taken, false);
	}
}
