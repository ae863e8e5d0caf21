/*
 * private.c - the runtime's allocator: power-of-two blocks carved from one
 * private MAP_NORESERVE mapping that upager never manages, so that no
 * handler can fault on its own metadata. Allocations of the runtime are few
 * and mostly long-lived; a lock and free lists per size class are enough.
 * free() tells its blocks from jemalloc's by address.
 */
#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/mman.h>

#include "preload.h"

#define PRIV_SPAN (64ull << 30)     /* address space reserved, not memory */
#define PRIV_MIN_CLASS 5            /* 32 bytes */
#define PRIV_CLASSES 40
#define PRIV_RELEASE_CLASS 16       /* blocks from 64 KiB up give back their pages */
#define PAGE 4096u

/* Just before each pointer handed out: where its block starts, its class. */
struct priv_hdr {
	uint32_t off;
	uint32_t cls;
};

struct free_block {
	struct free_block *next;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static _Atomic(uint8_t *) base;
static uint8_t *top, *end;
static struct free_block *freelist[PRIV_CLASSES];

bool priv_owns(const void *p)
{
	uint8_t *b = atomic_load_explicit(&base, memory_order_relaxed);

	return b && (const uint8_t *)p >= b && (const uint8_t *)p < b + PRIV_SPAN;
}

static unsigned class_of(size_t n)
{
	unsigned c = PRIV_MIN_CLASS;

	while (c < PRIV_CLASSES && (1ull << c) < n)
		c++;
	return c;
}

/* A block of 2^c bytes. Caller holds lock. */
static void *block_get(unsigned c)
{
	uint64_t size = 1ull << c, align = size < PAGE ? size : PAGE;
	uint8_t *b;

	if (freelist[c]) {
		struct free_block *f = freelist[c];

		freelist[c] = f->next;
		return f;
	}
	if (!top) {
		b = upg_sys_mmap(NULL, PRIV_SPAN, PROT_READ | PROT_WRITE,
				 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (b == MAP_FAILED)
			return NULL;
		top = b;
		end = b + PRIV_SPAN;
		atomic_store(&base, b);
	}
	b = (uint8_t *)(((uintptr_t)top + align - 1) & ~(uintptr_t)(align - 1));
	if (b > end || size > (uint64_t)(end - b))
		return NULL;
	top = b + size;
	return b;
}

void *priv_alloc(size_t align, size_t n)
{
	size_t need;
	unsigned c;
	uint8_t *b, *q;
	struct priv_hdr *h;

	if (align < 16)
		align = 16;
	if (n > PRIV_SPAN / 2 || align > PRIV_SPAN / 4)
		goto nomem;
	/* The pointer is the first multiple of align past the header. Blocks
	 * are aligned to 32 bytes at least, so at align 16 it lies 16 bytes
	 * in (not 8: the header's size); at a larger align, less than
	 * align + the header's size. */
	need = n + (align > 16 ? align + sizeof(struct priv_hdr) : 16);
	c = class_of(need);
	if (c >= PRIV_CLASSES)
		goto nomem;
	pthread_mutex_lock(&lock);
	b = block_get(c);
	pthread_mutex_unlock(&lock);
	if (!b)
		goto nomem;
	q = (uint8_t *)(((uintptr_t)b + sizeof(*h) + align - 1) & ~(uintptr_t)(align - 1));
	h = (struct priv_hdr *)q - 1;
	h->off = (uint32_t)(q - b);
	h->cls = c;
	return q;
nomem:
	errno = ENOMEM;
	return NULL;
}

size_t priv_usable(const void *p)
{
	const struct priv_hdr *h = (const struct priv_hdr *)p - 1;

	return (1ull << h->cls) - h->off;
}

void priv_free(void *p)
{
	struct priv_hdr *h = (struct priv_hdr *)p - 1;
	unsigned c = h->cls;
	struct free_block *b = (struct free_block *)((uint8_t *)p - h->off);

	if (c >= PRIV_RELEASE_CLASS)
		upg_sys_madvise(b, 1ull << c, MADV_DONTNEED);
	pthread_mutex_lock(&lock);
	b->next = freelist[c];
	freelist[c] = b;
	pthread_mutex_unlock(&lock);
}

void *priv_realloc(void *p, size_t n)
{
	size_t have = priv_usable(p);
	void *q;

	if (n <= have)
		return p;
	q = priv_alloc(16, n);
	if (!q)
		return NULL;
	memcpy(q, p, have);
	priv_free(p);
	return q;
}

/* fork(): the child must not inherit the lock held by another thread. */
void priv_fork_prepare(void)
{
	pthread_mutex_lock(&lock);
}

void priv_fork_done(void)
{
	pthread_mutex_unlock(&lock);
}
