/* mcserver.c - see mcserver.h. */
#include "mcserver.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *const memcached_paths[] = { "/usr/bin/memcached", "/usr/local/bin/memcached",
					       "/usr/sbin/memcached" };

static const char *memcached_path(void)
{
	for (unsigned i = 0; i < sizeof(memcached_paths) / sizeof(memcached_paths[0]); i++)
		if (!access(memcached_paths[i], X_OK))
			return memcached_paths[i];
	return NULL;
}

bool mcserver_available(void)
{
	return memcached_path() != NULL;
}

int mcserver_free_port(const char *ip)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), port = -1;

	inet_pton(AF_INET, ip ? ip : "127.0.0.1", &a.sin_addr);
	if (fd >= 0 && !bind(fd, (struct sockaddr *)&a, sizeof(a)) &&
	    !getsockname(fd, (struct sockaddr *)&a, &len))
		port = ntohs(a.sin_port);
	if (fd >= 0)
		close(fd);
	return port;
}

/* Whether s answers, and is the server we started (its pid): a server of
 * someone else's on the port we picked must not be taken for ours. */
/* The server's answer to "stats" into buf (NUL-terminated; empty if it
 * does not answer within a second). */
static void stats_text(const struct mcserver *s, char *buf, size_t size)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)s->port) };
	struct timeval tv = { 1, 0 };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	size_t len = 0;

	buf[0] = 0;
	if (fd < 0)
		return;
	inet_pton(AF_INET, s->ip, &a.sin_addr);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) || write(fd, "stats\r\n", 7) != 7)
		goto out;
	while (len < size - 1) {
		ssize_t n = read(fd, buf + len, size - 1 - len);

		if (n <= 0)
			break;
		len += (size_t)n;
		buf[len] = 0;
		if (strstr(buf, "END\r\n"))
			break;
	}
	buf[len] = 0;
out:
	close(fd);
}

static bool accepting(const struct mcserver *s)
{
	char buf[8192], want[32];

	stats_text(s, buf, sizeof(buf));
	snprintf(want, sizeof(want), "STAT pid %d\r\n", (int)s->pid);
	return strstr(buf, want) != NULL;
}

long mcserver_items(const struct mcserver *s)
{
	char buf[8192];
	const char *at;

	stats_text(s, buf, sizeof(buf));
	at = strstr(buf, "STAT curr_items ");
	return at ? strtol(at + strlen("STAT curr_items "), NULL, 10) : -1;
}

int mcserver_start(struct mcserver *s, const char *ip, unsigned mb, const char *netns)
{
	const char *bin = memcached_path();
	char port[16], mem[16];

	memset(s, 0, sizeof(*s));
	if (!bin)
		return -ENOENT;
	snprintf(s->ip, sizeof(s->ip), "%s", ip ? ip : "127.0.0.1");
	/* In a namespace, the port is free there for sure (it has nothing else). */
	s->port = netns ? 11211 : mcserver_free_port(s->ip);
	if (s->port < 0)
		return -EADDRNOTAVAIL;
	snprintf(port, sizeof(port), "%d", s->port);
	snprintf(mem, sizeof(mem), "%u", mb);
	snprintf(s->addr, sizeof(s->addr), "%s:%d", s->ip, s->port);
	s->pid = fork();
	if (s->pid < 0)
		return -errno;
	if (!s->pid) {
		const char *user = geteuid() ? NULL : "root";
		const char *argv[24];
		int n = 0;

		if (netns) {
			argv[n++] = "ip";
			argv[n++] = "netns";
			argv[n++] = "exec";
			argv[n++] = netns;
		}
		argv[n++] = bin;
		argv[n++] = "-U";
		argv[n++] = "0";
		argv[n++] = "-l";
		argv[n++] = s->ip;
		argv[n++] = "-p";
		argv[n++] = port;
		argv[n++] = "-m";
		argv[n++] = mem;
		argv[n++] = "-M";
		argv[n++] = "-t";
		argv[n++] = "1";
		if (user) {
			argv[n++] = "-u";
			argv[n++] = user;
		}
		argv[n] = NULL;
		/* Not the test's stdout: a server left behind by a crashed test
		 * would hold a pipe reading it open. */
		int null = open("/dev/null", O_RDWR);

		if (null >= 0) {
			dup2(null, STDIN_FILENO);
			dup2(null, STDOUT_FILENO);
			dup2(null, STDERR_FILENO);
		}
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		execvp(argv[0], (char *const *)argv);
		_exit(127);
	}
	for (int i = 0; i < 400; i++) {
		struct timespec ts = { 0, 5 * 1000000L };
		int status;

		if (accepting(s))
			return 0;
		if (waitpid(s->pid, &status, WNOHANG) == s->pid) {
			s->pid = 0;
			return -ECHILD;
		}
		nanosleep(&ts, NULL);
	}
	mcserver_kill(s);
	return -ETIMEDOUT;
}

int mcserver_pause(struct mcserver *s)
{
	int status;

	if (s->pid <= 0 || kill(s->pid, SIGSTOP))
		return -ESRCH;
	if (waitpid(s->pid, &status, WUNTRACED) != s->pid || !WIFSTOPPED(status))
		return -ECHILD;
	return 0;
}

void mcserver_resume(struct mcserver *s)
{
	if (s->pid > 0 && !kill(s->pid, SIGCONT))
		waitpid(s->pid, NULL, WCONTINUED);
}

void mcserver_kill(struct mcserver *s)
{
	if (s->pid <= 0)
		return;
	kill(s->pid, SIGKILL);
	waitpid(s->pid, NULL, 0);
	s->pid = 0;
}

const char *mcserver_list(const struct mcserver *s, unsigned n, char *buf, size_t len)
{
	size_t off = 0;

	buf[0] = 0;
	for (unsigned i = 0; i < n && off < len; i++)
		off += (size_t)snprintf(buf + off, len - off, "%s%s", i ? "," : "", s[i].addr);
	return buf;
}
