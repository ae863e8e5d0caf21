/*
 * fd.h - the runtime's file descriptors live high in the table.
 *
 * The kernel hands out the lowest free number, and programs write over low
 * numbers they take for free: a shell's `exec 3>file` is dup2(file, 3),
 * which closes whatever was there. Had the runtime its userfaultfd, a ring
 * or a swap file there, the program would page on without it (pages out
 * read back as zeros). So every descriptor the runtime keeps is moved to
 * FD_HIGH or above (lower where the descriptor limit is low), out of the
 * way of what programs number themselves.
 */
#ifndef UPG_FD_H
#define UPG_FD_H

#define FD_HIGH 512

/* fd moved high (F_DUPFD_CLOEXEC; the old number closed), or fd itself
 * where it cannot move (a negative fd passes through). */
int fd_high(int fd);

#endif /* UPG_FD_H */
