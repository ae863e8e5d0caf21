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

/* RssAnon of this process, in MiB (0 if unknown). */
static unsigned long anon_mib(void)
{
	unsigned long kb = 0;
	char line[256];
	FILE *f = fopen("/proc/self/status", "r");

	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "RssAnon: %lu kB", &kb) == 1)
			break;
	if (f)
		fclose(f);
	return kb >> 10;
}

static int check(const uint64_t *p, size_t n, uint64_t gen)
{
	for (size_t i = 0; i < n / 8; i += 512)
		if (p[i] != i * 0x9e3779b97f4a7c15ull + gen)
			return 0;
	return 1;
}

/* Room beyond the budget for what is not paged: the runtime's buffers and
 * metadata, the program's stack. */
#define SLACK_MIB 24

int main(int argc, char **argv)
{
	const char *mem = getenv("UPAGER_MEM");    /* as given to upager run: 32M */
	char *unit = NULL;
	unsigned long budget_mib = mem ? strtoul(mem, &unit, 10) : 0;
	uint64_t *a = malloc(SIZE);
	int status;
	pid_t pid;

	if (!a || !unit || strcmp(unit, "M")) {
		fputs("forker: run under upager run --mem NM\n", stderr);
		return 1;
	}
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
		if (!check(b, SIZE, 7) || !check(a, SIZE, 1))
			_exit(3);       /* written and read back through the child's swap */
		fill(a, 4 * MiB, 8);    /* the child's own copy: the parent must not see it */
		if (!check(a, 4 * MiB, 8))
			_exit(3);
		/* The child pages too: what it holds stays near the budget,
		 * far below the 192 MiB it used. */
		fprintf(stderr, "forker: child RssAnon %lu MiB\n", anon_mib());
		if (budget_mib && anon_mib() > budget_mib + SLACK_MIB)
			_exit(6);
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
