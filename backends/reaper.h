/*
 * reaper.h - a process's pages deleted from memcached servers once the
 * process is gone, however it ended.
 *
 * A process paging to memcached keeps its pages there under keys of its
 * own. One that ends without closing its backend (a program under `upager
 * run` never closes it; _exit, a signal, exec) would leave them for good,
 * and servers started with -M refuse writes once full. So the backend
 * starts a reaper when it opens: a process of its own, detached (its parent
 * exits at once, so it belongs to init, not to the program), that waits for
 * the end of a pipe whose write end the backend's process holds, and with
 * it every child that process forks (a child may read its pages), then
 * deletes keys u<id>.0 .. u<id>.<reach - 1> on every server and exits.
 * reach is in memory the two share: raised before a slot is written to,
 * set to 0 when the backend deleted its pages itself. The reaper runs only
 * system calls on what was prepared before it started (it comes from a
 * process that may have other threads).
 */
#ifndef UPG_REAPER_H
#define UPG_REAPER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

struct reaper_server {
	struct sockaddr_storage addr;
	socklen_t alen;
};

struct reaper {
	_Atomic uint64_t *reach;        /* shared with the reaper */
	int life_fd;                    /* the pipe's write end, or -1 */
};

/* Start the reaper of key space id on servers[0..n). Returns 0 or -errno
 * (nothing started, r left empty). */
int reaper_start(struct reaper *r, const struct reaper_server *servers, unsigned n, uint64_t id,
		 unsigned timeout_ms);

/* Slots below reach are about to be written. */
void reaper_raise(struct reaper *r, uint64_t reach);

/* The backend closes: nothing of it is left on the servers if all_deleted.
 * The reaper goes on waiting for the children holding the pipe. */
void reaper_detach(struct reaper *r, bool all_deleted);

#endif /* UPG_REAPER_H */
