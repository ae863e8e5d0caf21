/* handler.c - see handler.h. */
#define LOG_PREFIX "handler: "
#include "handler.h"

#include <errno.h>
#include <sys/epoll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "ctx.h"
#include "fault.h"
#include "fd.h"
#include "log.h"
#include "paging.h"
#include "thread.h"

/* One message per read(2): a second fault queued behind the first is better
 * served by the handler that wakes for it on its own CPU than after this one
 * finishes. */
#define MSG_BATCH 1
_Static_assert(MSG_BATCH == 1, "the read lock below handles one message per read");

/* What a handler waits for, by epoll tag. */
enum { EV_UFFD, EV_STOP, EV_IO, EV_WAKE, EV_FILE_IO };

/*
 * Each handler waits in its own epoll set. The userfaultfd is in every set
 * with EPOLLEXCLUSIVE: a fault wakes one idle handler, not all of them (with
 * plain poll every handler woke for every message, and all but one found
 * nothing to read). The stop eventfd wakes them all.
 */
static int wait_set(struct handler *h)
{
	const int fds[] = { h->ctx->uffd, h->ctx->stop_fd, paging_handler_fd(h),
			    paging_handler_wake_fd(h), paging_handler_file_fd(h) };
	int ep = fd_high(epoll_create1(EPOLL_CLOEXEC));

	if (ep < 0)
		return -errno;
	for (unsigned i = 0; i < sizeof(fds) / sizeof(fds[0]); i++) {
		struct epoll_event ev = {
			.events = EPOLLIN | (i == EV_UFFD ? EPOLLEXCLUSIVE : 0),
			.data.u32 = i,
		};

		if (fds[i] >= 0 && epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev) < 0) {
			int err = -errno;

			close(ep);
			return err;
		}
	}
	return ep;
}

static void *handler_main(void *arg)
{
	struct handler *h = arg;
	struct upg_ctx *ctx = h->ctx;
	struct qsbr_reader *qs = &ctx->qsbr_readers[h->id];
	bool paging = paging_handler_fd(h) >= 0;
	eventfd_t ignored;
	struct uffd_msg msgs[MSG_BATCH];
	char name[16];
	sigset_t all;

	/* No application signal handler may run here: it could touch managed
	 * memory and fault on the thread that has to resolve the fault. */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL);
	snprintf(name, sizeof(name), "upager-h%u", h->id);
	pthread_setname_np(pthread_self(), name);

	for (;;) {
		struct epoll_event evs[5];
		bool readable = false, stop = false;
		ssize_t n;
		int nev;

		qsbr_offline(qs);
		/* Deferred faults wait for reclaim, and copies that met a layout
		 * change (EAGAIN) for the madvise behind it to return: the
		 * reclaimer wakes us after each of its own (wake_waiting); look
		 * again every millisecond anyway, for the application's. */
		if ((h->ndeferred || paging_pending(h)) && paging)
			atomic_store_explicit(&h->paging.waiting, true, memory_order_release);
		nev = epoll_wait(h->epfd, evs, 5, h->ndeferred || paging_pending(h) ? 1 : -1);
		if (nev < 0) {
			if (errno == EINTR)
				continue;
			pr_perr(-errno, "epoll_wait");
			break;
		}
		for (int i = 0; i < nev; i++) {
			readable |= evs[i].data.u32 == EV_UFFD;
			stop |= evs[i].data.u32 == EV_STOP;
			if (evs[i].data.u32 == EV_WAKE)
				eventfd_read(paging_handler_wake_fd(h), &ignored);
		}
		if (stop)
			break;
		qsbr_online(&ctx->qsbr, qs);
		paging_reap(h);
		if (h->ndeferred)
			fault_retry_deferred(h);
		if (!readable)
			continue;
		/* Layout events must be applied in the order the kernel sent
		 * them (mremap sends REMAP, then UNMAP of the old range, as
		 * soon as the first is read): a handler reads under the lock
		 * and applies an event before letting the next read happen.
		 * Faults are resolved after the lock is dropped. read_seq is
		 * odd meanwhile: a fault that finds a resident page unmapped
		 * tells from it whether a removal may be half applied. */
		pthread_mutex_lock(&ctx->read_lock);
		atomic_fetch_add(&ctx->read_seq, 1);
		n = read(ctx->uffd, msgs, sizeof(msgs));
		if (n < 0) {
			int err = errno;

			atomic_fetch_add(&ctx->read_seq, 1);
			pthread_mutex_unlock(&ctx->read_lock);
			/* EAGAIN: another handler took the message. */
			if (err == EAGAIN || err == EINTR)
				continue;
			pr_perr(-err, "read userfaultfd");
			break;
		}
		if (msgs[0].event != UFFD_EVENT_PAGEFAULT) {
			fault_dispatch(h, &msgs[0]);
			atomic_fetch_add(&ctx->read_seq, 1);
			pthread_mutex_unlock(&ctx->read_lock);
			/* Reading the event let resolving ioctls work again
			 * (they fail with EAGAIN while one is pending): retry
			 * now, before the reclaimer's next MADV_DONTNEED raises
			 * another. */
			if (h->ndeferred)
				fault_retry_deferred(h);
			continue;
		}
		atomic_fetch_add(&ctx->read_seq, 1);
		pthread_mutex_unlock(&ctx->read_lock);
		fault_dispatch(h, &msgs[0]);
	}
	qsbr_offline(qs);
	return NULL;
}

/* The i-th CPU of this process's affinity mask, or -1. */
static int nth_allowed_cpu(const cpu_set_t *set, unsigned i)
{
	for (int cpu = 0; cpu < CPU_SETSIZE; cpu++)
		if (CPU_ISSET(cpu, set) && i-- == 0)
			return cpu;
	return -1;
}

int handlers_start(struct upg_ctx *ctx)
{
	cpu_set_t allowed;
	unsigned started;
	int ret = 0;

	CPU_ZERO(&allowed);
	if (sched_getaffinity(0, sizeof(allowed), &allowed) < 0)
		CPU_SET(0, &allowed);

	for (started = 0; started < ctx->nhandlers; started++) {
		struct handler *h = &ctx->handlers[started];

		h->ctx = ctx;
		h->id = started;
		ret = paging_handler_init(h);
		if (ret < 0) {
			paging_handler_fini(h);
			break;
		}
		ret = wait_set(h);
		if (ret < 0) {
			paging_handler_fini(h);
			pr_perr(ret, "cannot set up handler %u's epoll", started);
			break;
		}
		h->epfd = ret;
		ret = 0;
		/* A fault wakes the first handler free in the order they
		 * started (wait_set). The first floats: with one faulting
		 * thread it follows that thread or the I/O completions (one
		 * thread paging at random: +40% over a pinned first handler
		 * on a 2-CPU VM whose disk interrupts go to one CPU); the
		 * pinned ones spread the load of many. */
		h->cpu = ctx->cfg.pin_handlers && started > 0
			 ? nth_allowed_cpu(&allowed, (started - 1) % (unsigned)CPU_COUNT(&allowed))
			 : -1;
		ret = rt_thread_start(&h->thread, h->cpu, handler_main, h);
		if (ret < 0) {
			close(h->epfd);
			paging_handler_fini(h);
			pr_perr(ret, "cannot start handler thread %u", started);
			break;
		}
	}
	if (ret < 0) {
		ctx->nhandlers = started;
		handlers_stop(ctx);
	}
	return ret;
}

void handlers_stop(struct upg_ctx *ctx)
{
	/* The eventfd stays readable, so every handler sees it. */
	if (eventfd_write(ctx->stop_fd, 1) < 0)
		pr_perr(-errno, "cannot signal handlers to stop");
	for (unsigned i = 0; i < ctx->nhandlers; i++) {
		pthread_join(ctx->handlers[i].thread, NULL);
		close(ctx->handlers[i].epfd);
		paging_handler_fini(&ctx->handlers[i]);
	}
}
