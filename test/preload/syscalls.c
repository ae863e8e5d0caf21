/*
 * syscalls - run under `upager run` with a budget far below what it
 * allocates: system calls that read or write managed memory (write, read,
 * send, recv, pread, pwrite), and the calls that change managed mappings
 * (munmap of a part, mremap growing and shrinking, madvise DONTNEED/FREE,
 * mprotect), each checked against a deterministic pattern.
 * Prints "ok" and exits 0, or names the first thing that went wrong.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#define MiB (1ul << 20)
#define BUF (96 * MiB)     /* several times the budget the test gives */

static void fail(const char *what)
{
	fprintf(stderr, "syscalls: %s (%s)\n", what, strerror(errno));
	exit(1);
}

/* Word i of a mapping holds a function of i and the generation. */
static void fill(uint8_t *base, size_t from, size_t n, unsigned gen)
{
	for (size_t i = from; i < from + n; i += 8)
		*(uint64_t *)(base + i) = (i * 0x9e3779b97f4a7c15ull) ^ gen;
}

static int check(const uint8_t *base, size_t from, size_t n, unsigned gen)
{
	for (size_t i = from; i < from + n; i += 8)
		if (*(const uint64_t *)(base + i) != ((i * 0x9e3779b97f4a7c15ull) ^ gen))
			return 0;
	return 1;
}

static int zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i += 4096)
		if (p[i])
			return 0;
	return 1;
}

/* Move n bytes from src to dst through a pair of descriptors, in pieces. */
static void pump(int wfd, int rfd, const uint8_t *src, uint8_t *dst, size_t n, int sock)
{
	size_t off = 0, chunk = 64 << 10;   /* fits any pipe or socket buffer */

	while (off < n) {
		size_t len = n - off < chunk ? n - off : chunk, got = 0;
		ssize_t w = sock ? send(wfd, src + off, len, 0) : write(wfd, src + off, len);

		if (w <= 0)
			fail(sock ? "send" : "write");
		while (got < (size_t)w) {
			ssize_t r = sock ? recv(rfd, dst + off + got, (size_t)w - got, 0)
					 : read(rfd, dst + off + got, (size_t)w - got);
			if (r <= 0)
				fail(sock ? "recv" : "read");
			got += (size_t)r;
		}
		off += (size_t)w;
	}
}

static void io(void)
{
	uint8_t *a = malloc(BUF), *b = malloc(BUF);
	char path[] = "/tmp/upager-syscalls-XXXXXX";
	int sv[2], fd;

	if (!a || !b)
		fail("malloc");
	fill(a, 0, BUF, 1);
	/* A file: pwrite from managed memory, pread into it. */
	fd = mkstemp(path);
	if (fd < 0)
		fail("mkstemp");
	unlink(path);
	if (pwrite(fd, a, BUF, 0) != (ssize_t)BUF)
		fail("pwrite");
	memset(b, 0, BUF);
	if (pread(fd, b, BUF, 0) != (ssize_t)BUF || !check(b, 0, BUF, 1))
		fail("pread into managed memory");
	close(fd);
	/* A socket pair, both ways through managed memory. */
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0)
		fail("socketpair");
	memset(b, 0, BUF);
	pump(sv[0], sv[1], a, b, BUF, 1);
	if (!check(b, 0, BUF, 1))
		fail("send/recv through managed memory");
	close(sv[0]);
	close(sv[1]);
	/* A pipe. */
	if (pipe(sv) < 0)
		fail("pipe");
	memset(b, 0, BUF);
	pump(sv[1], sv[0], a, b, 64 * MiB, 0);
	if (!check(b, 0, 64 * MiB, 1) || !check(a, 0, BUF, 1))
		fail("write/read through a pipe");
	free(a);
	free(b);
}

static void mappings(void)
{
	size_t n = 64 * MiB;
	uint8_t *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uint8_t *q;

	if (p == MAP_FAILED)
		fail("mmap");
	fill(p, 0, n, 2);
	/* A hole in the middle; both sides stay. */
	if (munmap(p + 16 * MiB, 16 * MiB) < 0)
		fail("munmap of a part");
	if (!check(p, 0, 16 * MiB, 2) || !check(p, 32 * MiB, 32 * MiB, 2))
		fail("data around an unmapped hole");
	if (munmap(p, 16 * MiB) < 0 || munmap(p + 32 * MiB, 32 * MiB) < 0)
		fail("munmap of the rest");

	/* mremap: grow (moving), shrink. */
	p = mmap(NULL, 32 * MiB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		fail("mmap");
	fill(p, 0, 32 * MiB, 3);
	q = mremap(p, 32 * MiB, 96 * MiB, MREMAP_MAYMOVE);
	if (q == MAP_FAILED)
		fail("mremap grow");
	if (!check(q, 0, 32 * MiB, 3) || !zero(q + 32 * MiB, 64 * MiB))
		fail("data after mremap grow");
	fill(q, 0, 96 * MiB, 4);
	p = mremap(q, 96 * MiB, 40 * MiB, 0);
	if (p != q || !check(p, 0, 40 * MiB, 4))
		fail("mremap shrink");

	/* madvise: DONTNEED and FREE read back as zeros (FREE may keep data,
	 * so only DONTNEED is checked for zeros); the rest stays. */
	if (madvise(p, 8 * MiB, MADV_DONTNEED) < 0 || !zero(p, 8 * MiB))
		fail("MADV_DONTNEED");
	if (madvise(p + 8 * MiB, 8 * MiB, MADV_FREE) < 0)
		fail("MADV_FREE");
	if (!check(p, 16 * MiB, 24 * MiB, 4))
		fail("data beside madvised ranges");
	fill(p, 0, 16 * MiB, 5);
	if (!check(p, 0, 16 * MiB, 5))
		fail("writes after madvise");

	/* mprotect: read-only and back, contents intact. */
	if (mprotect(p, 40 * MiB, PROT_READ) < 0 || !check(p, 0, 16 * MiB, 5))
		fail("mprotect read-only");
	if (mprotect(p, 40 * MiB, PROT_READ | PROT_WRITE) < 0)
		fail("mprotect read-write");
	fill(p, 0, 40 * MiB, 6);
	if (!check(p, 0, 40 * MiB, 6))
		fail("data after mprotect");
	if (munmap(p, 40 * MiB) < 0)
		fail("munmap");
}

int main(void)
{
	io();
	mappings();
	puts("ok");
	return 0;
}
