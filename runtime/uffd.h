/*
 * uffd.h - the userfaultfd layer: opening, the feature probe, registration
 * and the resolving ioctls, each returning 0 or -errno.
 */
#ifndef UPG_UFFD_H
#define UPG_UFFD_H

#include <stddef.h>
#include <stdint.h>

#include "compat.h"

/*
 * Open a userfaultfd (the syscall first, then /dev/userfaultfd) with
 * O_CLOEXEC|O_NONBLOCK and complete the UFFDIO_API handshake asking for the
 * kernel features `want` (UFFD_FEATURE_* bits). Returns the fd or -errno.
 * `allow` is a mask of enum upg_feature bits: clearing UPG_FEAT_SYSCALL or
 * UPG_FEAT_DEV_USERFAULTFD forbids that way of opening.
 */
int uffd_open(uint64_t want, uint64_t allow);

/* Probe everything once: returns enum upg_feature bits in *features. */
int uffd_probe(uint64_t *features);

/* The UFFD_FEATURE_* bits that the enum upg_feature bits in `features`
 * stand for (those requested in the handshake). */
uint64_t uffd_kernel_features(uint64_t features);

int uffd_register(int fd, void *addr, size_t len, uint64_t mode);
int uffd_unregister(int fd, void *addr, size_t len);

/* Resolving ioctls. They wake the faulting threads unless told not to. */
int uffd_zeropage(int fd, uintptr_t addr, size_t len);
int uffd_copy(int fd, uintptr_t dst, const void *src, size_t len, uint64_t mode);
/* Like uffd_copy, and *copied tells how many bytes from dst on were mapped
 * (a copy that stops part way fails with -EAGAIN). */
int uffd_copy_part(int fd, uintptr_t dst, const void *src, size_t len, uint64_t mode,
		   size_t *copied);
int uffd_wake(int fd, uintptr_t addr, size_t len);
int uffd_writeprotect(int fd, uintptr_t addr, size_t len, int protect);
/* Move the pages at src to dst (both registered with fd; dst unmapped). */
int uffd_move(int fd, uintptr_t dst, uintptr_t src, size_t len, uint64_t mode);
/* The same for a range, going as far as it can: returns the bytes moved
 * from the start (the page after them could not move) or -errno. */
long uffd_move_some(int fd, uintptr_t dst, uintptr_t src, size_t len, uint64_t mode);
/* Make a touch of [addr, addr+len) raise SIGBUS. */
int uffd_poison(int fd, uintptr_t addr, size_t len, uint64_t mode);

#endif /* UPG_UFFD_H */
