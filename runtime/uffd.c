/* uffd.c - see uffd.h. */
#define LOG_PREFIX "uffd: "
#include "uffd.h"

#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <stdbool.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "fd.h"
#include "log.h"
#include "upager.h"

/* enum upg_feature bits that are UFFD_FEATURE_* bits of the handshake. */
static const struct {
	uint64_t upg;
	uint64_t kernel;
} feature_map[] = {
	{ UPG_FEAT_WP, UFFD_FEATURE_PAGEFAULT_FLAG_WP },
	{ UPG_FEAT_WP_ASYNC, UFFD_FEATURE_WP_ASYNC },
	{ UPG_FEAT_WP_UNPOPULATED, UFFD_FEATURE_WP_UNPOPULATED },
	{ UPG_FEAT_MOVE, UFFD_FEATURE_MOVE },
	{ UPG_FEAT_POISON, UFFD_FEATURE_POISON },
	{ UPG_FEAT_EVENT_FORK, UFFD_FEATURE_EVENT_FORK },
	{ UPG_FEAT_EVENT_REMAP, UFFD_FEATURE_EVENT_REMAP },
	{ UPG_FEAT_EVENT_REMOVE, UFFD_FEATURE_EVENT_REMOVE },
	{ UPG_FEAT_EVENT_UNMAP, UFFD_FEATURE_EVENT_UNMAP },
	{ UPG_FEAT_THREAD_ID, UFFD_FEATURE_THREAD_ID },
	{ UPG_FEAT_EXACT_ADDRESS, UFFD_FEATURE_EXACT_ADDRESS },
};
#define N_FEATURE_MAP (sizeof(feature_map) / sizeof(feature_map[0]))

uint64_t uffd_kernel_features(uint64_t features)
{
	uint64_t k = 0;

	for (size_t i = 0; i < N_FEATURE_MAP; i++)
		if (features & feature_map[i].upg)
			k |= feature_map[i].kernel;
	return k;
}

static int open_raw(uint64_t allow)
{
	int fd = -ENOSYS;

	if (allow & UPG_FEAT_SYSCALL) {
		fd = fd_high((int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK));
		if (fd >= 0)
			return fd;
		fd = -errno;
	}
	if (allow & UPG_FEAT_DEV_USERFAULTFD) {
		/* /dev/userfaultfd (Linux 6.1) is governed by the node's
		 * permissions instead of vm.unprivileged_userfaultfd. */
		int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);

		if (dev >= 0) {
			fd = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
			fd = fd < 0 ? -errno : fd_high(fd);
			close(dev);
		} else if (fd == -ENOSYS) {
			fd = -errno;
		}
	}
	return fd;
}

static int handshake(int fd, uint64_t want, uint64_t *offered)
{
	struct uffdio_api api = { .api = UFFD_API, .features = want };

	if (ioctl(fd, UFFDIO_API, &api) < 0)
		return -errno;
	if (offered)
		*offered = api.features;
	return 0;
}

int uffd_open(uint64_t want, uint64_t allow)
{
	int fd = open_raw(allow), ret;

	if (fd < 0)
		return fd;
	ret = handshake(fd, want, NULL);
	if (ret < 0) {
		close(fd);
		return ret;
	}
	return fd;
}

/* Register a scratch mapping to learn which range ioctls anonymous memory
 * offers with the features asked for (MOVE and POISON show up only here). */
static uint64_t probe_range_ioctls(int fd, uint64_t mode)
{
	long psz = sysconf(_SC_PAGESIZE);
	void *p = mmap(NULL, (size_t)psz, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct uffdio_register reg = { .range = { (uintptr_t)p, (uint64_t)psz }, .mode = mode };
	uint64_t ioctls = 0;

	if (p == MAP_FAILED)
		return 0;
	if (ioctl(fd, UFFDIO_REGISTER, &reg) == 0) {
		ioctls = reg.ioctls;
		/* Unregister first: with EVENT_UNMAP asked for, munmap of a
		 * registered range waits for someone to read the event. */
		uffd_unregister(fd, p, (size_t)psz);
	}
	munmap(p, (size_t)psz);
	return ioctls;
}

static bool probe_pagemap_scan(void)
{
	long psz = sysconf(_SC_PAGESIZE);
	char buf[1];
	struct page_region vec[1];
	struct pm_scan_arg arg = {
		.size = sizeof(arg),
		.start = (uintptr_t)buf & ~(uint64_t)(psz - 1),
		.vec = (uintptr_t)vec,
		.vec_len = 1,
		.category_anyof_mask = PAGE_IS_PRESENT,
		.return_mask = PAGE_IS_PRESENT,
	};
	int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	bool ok;

	arg.end = arg.start + (uint64_t)psz;
	if (fd < 0)
		return false;
	ok = ioctl(fd, PAGEMAP_SCAN, &arg) >= 0;
	close(fd);
	return ok;
}

static bool probe_io_uring(void)
{
	struct io_uring ring;

	if (io_uring_queue_init(2, &ring, 0) < 0)
		return false;
	io_uring_queue_exit(&ring);
	return true;
}

int uffd_probe(uint64_t *features)
{
	uint64_t f = 0, offered = 0, ioctls, all_kernel = 0;
	int fd, ret;

	fd = open_raw(UPG_FEAT_SYSCALL);
	if (fd >= 0) {
		f |= UPG_FEAT_SYSCALL;
		close(fd);
	}
	fd = open_raw(UPG_FEAT_DEV_USERFAULTFD);
	if (fd >= 0) {
		f |= UPG_FEAT_DEV_USERFAULTFD;
		close(fd);
	}
	fd = open_raw(UPG_FEAT_SYSCALL | UPG_FEAT_DEV_USERFAULTFD);
	if (fd < 0)
		return fd;

	/* A zero-feature handshake reports every feature the kernel has. */
	ret = handshake(fd, 0, &offered);
	close(fd);
	if (ret < 0)
		return ret;
	for (size_t i = 0; i < N_FEATURE_MAP; i++)
		if (offered & feature_map[i].kernel)
			f |= feature_map[i].upg;

	/* Ask for them all on a fresh fd (one handshake per fd) and register a
	 * scratch range to see the ioctls. WP_ASYNC is left out: it changes
	 * what WP faults mean. EVENT_FORK needs CAP_SYS_PTRACE. */
	for (size_t i = 0; i < N_FEATURE_MAP; i++)
		if ((offered & feature_map[i].kernel) && feature_map[i].upg != UPG_FEAT_WP_ASYNC &&
		    feature_map[i].upg != UPG_FEAT_EVENT_FORK)
			all_kernel |= feature_map[i].kernel;
	fd = uffd_open(all_kernel, UPG_FEAT_SYSCALL | UPG_FEAT_DEV_USERFAULTFD);
	if (fd < 0)
		return fd;
	ioctls = probe_range_ioctls(fd, UFFDIO_REGISTER_MODE_MISSING |
				    ((f & UPG_FEAT_WP) ? UFFDIO_REGISTER_MODE_WP : 0));
	close(fd);
	if (ioctls & (1ull << _UFFDIO_COPY))
		f |= UPG_FEAT_MISSING;
	if (ioctls & (1ull << _UFFDIO_ZEROPAGE))
		f |= UPG_FEAT_ZEROPAGE;
	if (!(ioctls & (1ull << _UFFDIO_WRITEPROTECT)))
		f &= ~(uint64_t)(UPG_FEAT_WP | UPG_FEAT_WP_ASYNC | UPG_FEAT_WP_UNPOPULATED);
	if (!(ioctls & (1ull << _UFFDIO_MOVE)))
		f &= ~(uint64_t)UPG_FEAT_MOVE;
	if (!(ioctls & (1ull << _UFFDIO_POISON)))
		f &= ~(uint64_t)UPG_FEAT_POISON;
	if (offered & (UFFD_FEATURE_MINOR_SHMEM | UFFD_FEATURE_MINOR_HUGETLBFS))
		f |= UPG_FEAT_MINOR;

	if (probe_pagemap_scan())
		f |= UPG_FEAT_PAGEMAP_SCAN;
	if (probe_io_uring())
		f |= UPG_FEAT_IO_URING;
	*features = f;
	return 0;
}

int uffd_register(int fd, void *addr, size_t len, uint64_t mode)
{
	struct uffdio_register reg = { .range = { (uintptr_t)addr, len }, .mode = mode };

	return ioctl(fd, UFFDIO_REGISTER, &reg) < 0 ? -errno : 0;
}

int uffd_unregister(int fd, void *addr, size_t len)
{
	struct uffdio_range range = { (uintptr_t)addr, len };

	return ioctl(fd, UFFDIO_UNREGISTER, &range) < 0 ? -errno : 0;
}

int uffd_zeropage(int fd, uintptr_t addr, size_t len)
{
	struct uffdio_zeropage z = { .range = { addr, len } };

	return ioctl(fd, UFFDIO_ZEROPAGE, &z) < 0 ? -errno : 0;
}

int uffd_copy(int fd, uintptr_t dst, const void *src, size_t len, uint64_t mode)
{
	size_t copied;

	return uffd_copy_part(fd, dst, src, len, mode, &copied);
}

int uffd_copy_part(int fd, uintptr_t dst, const void *src, size_t len, uint64_t mode,
		   size_t *copied)
{
	struct uffdio_copy c = { .dst = dst, .src = (uintptr_t)src, .len = len, .mode = mode };
	int ret = ioctl(fd, UFFDIO_COPY, &c) < 0 ? -errno : 0;

	*copied = ret == 0 ? len : c.copy > 0 ? (size_t)c.copy : 0;
	return ret;
}

int uffd_wake(int fd, uintptr_t addr, size_t len)
{
	struct uffdio_range range = { addr, len };

	return ioctl(fd, UFFDIO_WAKE, &range) < 0 ? -errno : 0;
}

int uffd_writeprotect(int fd, uintptr_t addr, size_t len, int protect)
{
	struct uffdio_writeprotect wp = {
		.range = { addr, len },
		.mode = protect ? UFFDIO_WRITEPROTECT_MODE_WP : 0,
	};

	return ioctl(fd, UFFDIO_WRITEPROTECT, &wp) < 0 ? -errno : 0;
}

int uffd_move(int fd, uintptr_t dst, uintptr_t src, size_t len, uint64_t mode)
{
	struct uffdio_move m = { .dst = dst, .src = src, .len = len, .mode = mode };

	if (ioctl(fd, UFFDIO_MOVE, &m) < 0)
		return -errno;
	return m.move == (int64_t)len ? 0 : -EAGAIN;
}

long uffd_move_some(int fd, uintptr_t dst, uintptr_t src, size_t len, uint64_t mode)
{
	struct uffdio_move m = { .dst = dst, .src = src, .len = len, .mode = mode };

	if (ioctl(fd, UFFDIO_MOVE, &m) == 0)
		return (long)len;
	/* Partial: the bytes moved before the page that stopped it. */
	return m.move > 0 ? (long)m.move : -errno;
}

int uffd_poison(int fd, uintptr_t addr, size_t len, uint64_t mode)
{
	struct uffdio_poison p = { .range = { addr, len }, .mode = mode };

	return ioctl(fd, UFFDIO_POISON, &p) < 0 ? -errno : 0;
}
