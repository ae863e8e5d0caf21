/*
 * tsan_criterion.c - lets Criterion 2.4 run its tests under ThreadSanitizer
 * (linked into the test executables of UPAGER_SANITIZE=thread builds only).
 *
 * Criterion's runner (BoxFort) maps a shared arena at a random 16 MiB-aligned
 * address in [0x2000'0000'0000, 0x7f00'0000'0000), probing with mincore()
 * for a free spot and mapping it MAP_FIXED. TSan (x86_64) keeps most of that
 * range for its shadow, so every probe looks taken, or the mapping lands in
 * shadow memory, and Criterion aborts ("Could not initialize inheritable
 * arena"). Here, probes outside TSan's application ranges answer "free" and
 * a MAP_FIXED mapping asked for there is placed in TSan's high application
 * range instead. The child processes map the arena at the address the
 * parent got, which lies in application memory, and pass straight through.
 */
#include <errno.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(__x86_64__)
void *__interceptor_mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off);

/* TSan's application memory on x86_64 Linux: low, mid (PIE) and high. */
static int tsan_app_memory(uintptr_t a)
{
	return a < 0x008000000000ul || (a >= 0x550000000000ul && a < 0x568000000000ul) ||
	       a >= 0x7e8000000000ul;
}

int mincore(void *addr, size_t len, unsigned char *vec)
{
	if (!tsan_app_memory((uintptr_t)addr)) {
		errno = ENOMEM;        /* "nothing mapped here" */
		return -1;
	}
	return (int)syscall(SYS_mincore, addr, len, vec);
}

void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	static uintptr_t next = 0x7e9000000000ul;
	void *p;

	if (!addr || !(flags & MAP_FIXED) || tsan_app_memory((uintptr_t)addr))
		return __interceptor_mmap64(addr, len, prot, flags, fd, off);
	/* Single-threaded: Criterion sets its arena up before any test runs. */
	for (;; next += 1ul << 24) {
		p = __interceptor_mmap64((void *)next, len, prot,
					 (flags & ~MAP_FIXED) | MAP_FIXED_NOREPLACE, fd, off);
		if (p != MAP_FAILED || errno != EEXIST)
			break;
	}
	next += ((len >> 24) + 1) << 24;
	return p;
}
#endif
