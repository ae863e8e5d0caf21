/*
 * thread.h - the runtime's own threads and page buffers.
 *
 * Both stay small on a kernel whose transparent huge pages are "always"
 * (Debian's arm64 kernels): a thread's default 8 MiB stack, or a buffer
 * pool of a few MiB from malloc, gets a 2 MiB huge page at its first touch,
 * and a context's handlers, reclaimer and prefetcher then held several MiB
 * beyond the budget for a few KiB of use. Stacks are RT_STACK bytes (no
 * 2 MiB aligned range fits in them); buffers are their own mappings with
 * huge pages refused.
 */
#ifndef UPG_THREAD_H
#define UPG_THREAD_H

#include <pthread.h>
#include <stddef.h>

/* A runtime thread's stack. The deepest runtime frame chain is a few tens
 * of KiB; the rest is for the application's on_error callback, which runs
 * on a handler thread. */
#define RT_STACK (1u << 20)

/* Start fn(arg) on a thread with an RT_STACK stack, on CPU cpu if cpu >= 0.
 * Returns 0 or -errno. */
int rt_thread_start(pthread_t *t, int cpu, void *(*fn)(void *), void *arg);

/* bytes of page-aligned, zeroed memory without huge pages; NULL on failure.
 * Freed with rt_buf_free(p, bytes). */
void *rt_buf_alloc(size_t bytes);
void rt_buf_free(void *p, size_t bytes);

#endif /* UPG_THREAD_H */
