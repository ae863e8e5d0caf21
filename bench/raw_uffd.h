/*
 * raw_uffd.h - a minimal userfaultfd pager, the floor that benchmarks hold
 * upager against.
 *
 * It has upager's thread layout and nothing else: one handler thread per
 * CPU this process may run on, handler i pinned to the i-th of them, all
 * blocked in read(2) on one userfaultfd. Whichever reads a fault resolves
 * it: a read fault with UFFDIO_ZEROPAGE, a write fault with UFFDIO_COPY of a
 * zeroed page. No per-page state, no locks, no poll, no statistics.
 *
 * Functions return 0 or a negative errno value, like upager's.
 */
#ifndef RAW_UFFD_H
#define RAW_UFFD_H

#include <stddef.h>

struct raw_uffd;

/*
 * Open a userfaultfd (no features) and start the handlers. Stores the handle
 * in *out. -EPERM means this process may not use userfaultfd.
 */
int raw_uffd_start(struct raw_uffd **out);

/* Stop and join the handlers and close the userfaultfd. Every region must
 * be unmapped first (a fault left pending would never be resolved). */
void raw_uffd_stop(struct raw_uffd *ru);

/* The number of handler threads. */
unsigned raw_uffd_handlers(const struct raw_uffd *ru);

/* Map `len` bytes (a multiple of the page size) of anonymous memory and
 * register them for missing faults; stores the address in *addr. */
int raw_uffd_map(struct raw_uffd *ru, size_t len, void **addr);

/* Unmap a region from raw_uffd_map(), which also unregisters it. */
int raw_uffd_unmap(struct raw_uffd *ru, void *addr, size_t len);

#endif /* RAW_UFFD_H */
