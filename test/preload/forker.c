/*
 * forker - fork in the middle of heavy paging (run under `upager run` with a
 * budget far below what it writes). The parent keeps writing and checking
 * its memory while the child runs; the child writes and checks memory of
 * its own, then executes a program (exec starts clean). Neither sees the
 * other's later writes. Prints "ok" and exits 0, or says what went wrong.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define MiB (1ul << 20)
#define SIZE (96 * MiB)

static void fill(uint64_t *p, size_t n, uint64_t gen)
{
	for (size_t i = 0; i < n / 8; i += 512)
		p[i] = i * 0x9e3779b97f4a7c15ull + gen;
}

static int check(const uint64_t *p, size_t n, uint64_t gen)
{
	for (size_t i = 0; i < n / 8; i += 512)
		if (p[i] != i * 0x9e3779b97f4a7c15ull + gen)
			return 0;
	return 1;
}

int main(int argc, char **argv)
{
	uint64_t *a = malloc(SIZE);
	int status;
	pid_t pid;

	if (!a)
		return 1;
	fill(a, SIZE, 1);
	pid = fork();
	if (pid < 0)
		return 1;
	if (pid == 0) {
		uint64_t *b = malloc(SIZE);

		if (!b)
			_exit(2);
		if (!check(a, SIZE, 1))
			_exit(5);       /* the parent's data at the fork */
		fill(b, SIZE, 7);
		fill(a, 4 * MiB, 8);    /* the child's own copy: the parent must not see it */
		if (!check(b, SIZE, 7) || !check(a, 4 * MiB, 8))
			_exit(3);
		execl("/bin/sh", "sh", "-c", "exit 0", (char *)NULL);
		_exit(4);
	}
	/* Meanwhile the parent keeps paging. */
	for (uint64_t gen = 2; gen < 4; gen++) {
		fill(a, SIZE, gen);
		if (!check(a, SIZE, gen)) {
			fprintf(stderr, "forker: parent lost data (gen %llu)\n", (unsigned long long)gen);
			return 1;
		}
	}
	if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status)) {
		fprintf(stderr, "forker: child failed (status %#x)\n", status);
		return 1;
	}
	if (!check(a, SIZE, 3)) {
		fputs("forker: the child's writes showed in the parent\n", stderr);
		return 1;
	}
	puts("ok");
	return 0;
}
