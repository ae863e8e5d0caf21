/*
 * maxrss - run a program and print its peak resident set (KiB, from wait4's
 * ru_maxrss) on the file descriptor named by the first argument. Exits with
 * the program's status.
 *
 *   maxrss FD PROGRAM [ARGS]
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	struct rusage ru;
	int status, fd;
	pid_t pid;

	if (argc < 3) {
		fputs("usage: maxrss FD PROGRAM [ARGS]\n", stderr);
		return 2;
	}
	fd = atoi(argv[1]);
	pid = fork();
	if (pid < 0)
		return 126;
	if (pid == 0) {
		execvp(argv[2], argv + 2);
		perror(argv[2]);
		_exit(127);
	}
	if (wait4(pid, &status, 0, &ru) != pid)
		return 126;
	dprintf(fd, "%ld\n", ru.ru_maxrss);
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return WEXITSTATUS(status);
}
