/* thread.c - see thread.h. */
#include "thread.h"

#include <errno.h>
#include <sched.h>
#include <sys/mman.h>

int rt_thread_start(pthread_t *t, int cpu, void *(*fn)(void *), void *arg)
{
	pthread_attr_t attr;
	int ret = pthread_attr_init(&attr);

	if (ret)
		return -ret;
	ret = pthread_attr_setstacksize(&attr, RT_STACK);
	if (!ret && cpu >= 0) {
		cpu_set_t one;

		CPU_ZERO(&one);
		CPU_SET(cpu, &one);
		ret = pthread_attr_setaffinity_np(&attr, sizeof(one), &one);
	}
	if (!ret)
		ret = pthread_create(t, &attr, fn, arg);
	pthread_attr_destroy(&attr);
	return -ret;
}

void *rt_buf_alloc(size_t bytes)
{
	void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		return NULL;
	/* Refused on a kernel without THP (EINVAL): nothing to refuse then. */
	madvise(p, bytes, MADV_NOHUGEPAGE);
	return p;
}

void rt_buf_free(void *p, size_t bytes)
{
	if (p)
		munmap(p, bytes);
}
