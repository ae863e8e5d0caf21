/*
 * raw_uffd.c - the floor pager (see raw_uffd.h).
 *
 * The hot path is the least a handler can do: a blocking read(2) of one
 * fault message, one ioctl, loop. Handlers are stopped with
 * pthread_cancel(), read(2) being a cancellation point, so that no stop
 * check or poll(2) sits on the hot path.
 */
#include "raw_uffd.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

struct raw_uffd {
	int fd;
	uint64_t page_size;
	void *zero;             /* a zeroed page: the UFFDIO_COPY source */
	unsigned nthreads;
	pthread_t threads[];
};

/* A handler cannot return an error to anyone and the faulting thread would
 * hang: say what failed and abort. No stdio on the fault path. */
static _Noreturn void handler_die(const char *what, int err)
{
	char buf[160];
	int n = snprintf(buf, sizeof(buf), "raw_uffd: handler: %s: %s\n",
			 what, strerror(err));

	if (n > 0)
		(void)!write(STDERR_FILENO, buf, (size_t)n);  /* best effort */
	abort();
}

static void resolve(const struct raw_uffd *ru, uint64_t addr, bool write)
{
	for (;;) {
		int rc;

		if (write) {
			struct uffdio_copy copy = {
				.dst = addr, .src = (uintptr_t)ru->zero,
				.len = ru->page_size,
			};
			rc = ioctl(ru->fd, UFFDIO_COPY, &copy);
		} else {
			struct uffdio_zeropage zp = {
				.range = { .start = addr, .len = ru->page_size },
			};
			rc = ioctl(ru->fd, UFFDIO_ZEROPAGE, &zp);
		}
		if (rc == 0)
			return;
		switch (errno) {
		case EAGAIN:    /* the mm's layout is changing: retry */
			continue;
		case EEXIST: {  /* mapped already (a repeated message): wake */
			struct uffdio_range range = { addr, ru->page_size };

			if (ioctl(ru->fd, UFFDIO_WAKE, &range))
				handler_die("UFFDIO_WAKE", errno);
			return;
		}
		case ENOENT:    /* the range went away meanwhile */
		case ESRCH:     /* the process is exiting */
			return;
		default:
			handler_die(write ? "UFFDIO_COPY" : "UFFDIO_ZEROPAGE", errno);
		}
	}
}

/*
 * One message per read(2), as upager does: a second fault queued behind the
 * first is served sooner by the handler that wakes for it on its own CPU
 * than after this one's ioctl. Measured here, reading up to 16 at a time
 * made the two-thread cases 3-15% slower.
 */
static void *handler(void *arg)
{
	const struct raw_uffd *ru = arg;
	const uint64_t page_mask = ~(ru->page_size - 1);
	struct uffd_msg msg;

	for (;;) {
		ssize_t n = read(ru->fd, &msg, sizeof(msg));

		if (n != (ssize_t)sizeof(msg)) {
			if (n < 0 && (errno == EINTR || errno == EAGAIN))
				continue;
			handler_die("read", n < 0 ? errno : EIO);
		}
		/* No events were asked for; only faults arrive. */
		if (msg.event == UFFD_EVENT_PAGEFAULT)
			resolve(ru, msg.arg.pagefault.address & page_mask,
				msg.arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WRITE);
	}
	return NULL;
}

static void stop_threads(struct raw_uffd *ru)
{
	for (unsigned i = 0; i < ru->nthreads; i++)
		pthread_cancel(ru->threads[i]);
	for (unsigned i = 0; i < ru->nthreads; i++)
		pthread_join(ru->threads[i], NULL);
	ru->nthreads = 0;
}

/* Start one handler per CPU in *cpus, each pinned to its CPU from birth. */
static int start_threads(struct raw_uffd *ru, const cpu_set_t *cpus)
{
	for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
		pthread_attr_t attr;
		cpu_set_t one;
		int err;

		if (!CPU_ISSET(cpu, cpus))
			continue;
		CPU_ZERO(&one);
		CPU_SET(cpu, &one);
		err = pthread_attr_init(&attr);
		if (!err)
			err = pthread_attr_setaffinity_np(&attr, sizeof(one), &one);
		if (!err)
			err = pthread_create(&ru->threads[ru->nthreads], &attr,
					     handler, ru);
		pthread_attr_destroy(&attr);
		if (err) {
			stop_threads(ru);
			return -err;
		}
		ru->nthreads++;
	}
	return 0;
}

int raw_uffd_start(struct raw_uffd **out)
{
	struct uffdio_api api = { .api = UFFD_API };
	struct raw_uffd *ru;
	cpu_set_t cpus;
	long page_size = sysconf(_SC_PAGESIZE);
	int err;

	if (sched_getaffinity(0, sizeof(cpus), &cpus))
		return -errno;
	ru = calloc(1, sizeof(*ru) + (size_t)CPU_COUNT(&cpus) * sizeof(pthread_t));
	if (!ru)
		return -ENOMEM;
	ru->page_size = (uint64_t)page_size;
	ru->fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC);
	if (ru->fd < 0) {
		err = -errno;
		goto fail;
	}
	if (ioctl(ru->fd, UFFDIO_API, &api)) {
		err = -errno;
		goto fail;
	}
	ru->zero = aligned_alloc((size_t)page_size, (size_t)page_size);
	if (!ru->zero) {
		err = -ENOMEM;
		goto fail;
	}
	memset(ru->zero, 0, (size_t)page_size);
	err = start_threads(ru, &cpus);
	if (err)
		goto fail;
	*out = ru;
	return 0;
fail:
	if (ru->fd >= 0)
		close(ru->fd);
	free(ru->zero);
	free(ru);
	return err;
}

void raw_uffd_stop(struct raw_uffd *ru)
{
	if (!ru)
		return;
	stop_threads(ru);
	close(ru->fd);
	free(ru->zero);
	free(ru);
}

unsigned raw_uffd_handlers(const struct raw_uffd *ru)
{
	return ru->nthreads;
}

int raw_uffd_map(struct raw_uffd *ru, size_t len, void **addr)
{
	const uint64_t need = (uint64_t)1 << _UFFDIO_COPY |
			      (uint64_t)1 << _UFFDIO_ZEROPAGE;
	struct uffdio_register reg = {
		.range = { .len = len },
		.mode = UFFDIO_REGISTER_MODE_MISSING,
	};
	void *p;
	int err;

	if (len == 0 || len % ru->page_size)
		return -EINVAL;
	p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED)
		return -errno;
	reg.range.start = (uintptr_t)p;
	if (ioctl(ru->fd, UFFDIO_REGISTER, &reg)) {
		err = -errno;
		munmap(p, len);
		return err;
	}
	if ((reg.ioctls & need) != need) {
		munmap(p, len);
		return -EOPNOTSUPP;
	}
	*addr = p;
	return 0;
}

int raw_uffd_unmap(struct raw_uffd *ru, void *addr, size_t len)
{
	(void)ru;
	return munmap(addr, len) ? -errno : 0;
}
