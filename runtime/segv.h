/*
 * segv.h - write windows for the mprotect eviction path.
 *
 * On a kernel with neither UFFDIO_MOVE nor userfaultfd write-protect, the
 * reclaimer makes a run of pages read-only with mprotect(2) while it copies
 * them out and drops them. A thread writing there meanwhile gets SIGSEGV
 * (SEGV_ACCERR). The handler installed here recognises an address inside an
 * open window, waits until the window closes (the pages are writable again,
 * or gone and faulting through userfaultfd) and returns, so the write is
 * simply retried. Any other SIGSEGV goes to the handler that was installed
 * before, or kills the process as it would have.
 *
 * Limits: a write by the kernel on the process's behalf (read(2) into such a
 * page) fails with EFAULT instead; an application that replaces the SIGSEGV
 * handler after the context starts loses the retry.
 */
#ifndef UPG_SEGV_H
#define UPG_SEGV_H

#include <stdint.h>

/* Install the handler (reference counted: once per process). 0 or -errno. */
int segv_install(void);
void segv_uninstall(void);

/* Open a window over [start, end) before making it read-only; close it
 * after it is writable again. Returns a window id, or -EBUSY when every
 * window is open (the caller then does not evict the run). */
int segv_window_open(uintptr_t start, uintptr_t end);
void segv_window_close(int id);
/* In the child of a fork: the parent's windows and locks are not its own. */
void segv_forked(void);

#endif /* UPG_SEGV_H */
