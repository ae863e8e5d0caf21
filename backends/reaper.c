/* reaper.c - see reaper.h. */
#define LOG_PREFIX "reaper: "
#include "reaper.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fd.h"

#define REAP_BUF 16384u

/*
 * The reaper's side. It starts as a copy of a process that may have had
 * other threads, so it calls nothing that could wait for them (no malloc,
 * no stdio, no library state): bare system calls, on what the caller
 * prepared.
 */
static long sys(long nr, long a, long b, long c, long d, long e)
{
	long ret = syscall(nr, a, b, c, d, e, 0);

	return ret < 0 ? -errno : ret;
}

static size_t put_hex(char *p, uint64_t v, unsigned width)
{
	static const char digits[] = "0123456789abcdef";
	char tmp[16];
	unsigned n = 0;

	do {
		tmp[n++] = digits[v & 15];
		v >>= 4;
	} while (v || n < width);
	for (unsigned i = 0; i < n; i++)
		p[i] = tmp[n - 1 - i];
	return n;
}

static size_t put(char *p, const char *s)
{
	size_t n = 0;

	while (s[n]) {
		p[n] = s[n];
		n++;
	}
	return n;
}

static bool send_all(int fd, const char *p, size_t len)
{
	while (len) {
		long n = sys(SYS_sendto, fd, (long)p, (long)len, MSG_NOSIGNAL, 0);

		if (n == -EINTR)
			continue;
		if (n <= 0)
			return false;
		p += n;
		len -= (size_t)n;
	}
	return true;
}

/* Read what the server answered (errors; a server may answer a quiet
 * delete of a missing key anyway) so that it never stops reading us for
 * want of room to write; with wait, until the no-op's answer (MN), the
 * timeout or an error. tail keeps the last 4 bytes read. */
static void drain(long fd, char tail[4], bool wait)
{
	char buf[4096];

	for (;;) {
		long n = sys(SYS_recvfrom, fd, (long)buf, sizeof(buf), wait ? 0 : MSG_DONTWAIT, 0);

		if (n == -EINTR)
			continue;
		if (n <= 0)
			return;
		for (long i = 0; i < n; i++) {
			tail[0] = tail[1];
			tail[1] = tail[2];
			tail[2] = tail[3];
			tail[3] = buf[i];
		}
		if (tail[0] == 'M' && tail[1] == 'N' && tail[2] == '\r' && tail[3] == '\n')
			return;
	}
}

/* Delete u<id>.0 .. u<id>.<reach - 1> on one server: quiet deletes (q: no
 * answer but errors), then a no-op, whose answer says the server read them
 * all (or the timeout passes). */
static void reap_server(const struct reaper_server *s, uint64_t id, uint64_t reach,
			unsigned timeout_ms)
{
	struct timeval tv = { (time_t)(timeout_ms / 1000), (suseconds_t)(timeout_ms % 1000) * 1000 };
	char buf[REAP_BUF], tail[4] = { 0 };
	size_t len = 0;
	long fd = sys(SYS_socket, s->addr.ss_family, SOCK_STREAM, 0, 0, 0);

	if (fd < 0)
		return;
	sys(SYS_setsockopt, fd, SOL_SOCKET, SO_SNDTIMEO, (long)&tv, sizeof(tv));
	sys(SYS_setsockopt, fd, SOL_SOCKET, SO_RCVTIMEO, (long)&tv, sizeof(tv));
	if (sys(SYS_connect, fd, (long)&s->addr, s->alen, 0, 0) < 0)
		goto out;
	for (uint64_t page = 0; page < reach; page++) {
		if (len > sizeof(buf) - 64) {
			if (!send_all((int)fd, buf, len))
				goto out;
			drain(fd, tail, false);
			len = 0;
		}
		len += put(buf + len, "md u");
		len += put_hex(buf + len, id, 16);
		len += put(buf + len, ".");
		len += put_hex(buf + len, page, 1);
		len += put(buf + len, " q\r\n");
	}
	len += put(buf + len, "mn\r\n");
	if (send_all((int)fd, buf, len))
		drain(fd, tail, true);
out:
	sys(SYS_close, fd, 0, 0, 0, 0);
}

static _Noreturn void reap(int life, const struct reaper_server *servers, unsigned n, uint64_t id,
			   _Atomic uint64_t *reach, unsigned timeout_ms)
{
	uint64_t all = ~0ull, upto;
	char c;

	/* No signal of the terminal's (a Ctrl-C to the program) or of the
	 * program's handlers; nothing of the program's open (a pipe it shares
	 * with a shell's $(...) would stay open). */
	sys(SYS_rt_sigprocmask, SIG_SETMASK, (long)&all, 0, sizeof(all), 0);
	sys(SYS_setsid, 0, 0, 0, 0, 0);
	sys(SYS_prctl, PR_SET_NAME, (long)"upager-reaper", 0, 0, 0);
	if (life > 0)
		sys(SYS_close_range, 0, life - 1, 0, 0, 0);
	if (sys(SYS_close_range, life + 1, ~0u, 0, 0, 0) < 0)
		for (int fd = life + 1; fd < 4096; fd++)
			sys(SYS_close, fd, 0, 0, 0, 0);
	for (;;) {
		long got = sys(SYS_read, life, (long)&c, 1, 0, 0);

		if (got == 0 || (got < 0 && got != -EINTR))
			break;
	}
	upto = atomic_load(reach);
	for (unsigned i = 0; i < n && upto; i++)
		reap_server(&servers[i], id, upto, timeout_ms);
	for (;;)
		sys(SYS_exit_group, 0, 0, 0, 0, 0);
}

/* A child by a bare clone(): no atfork handler runs (the program's, or the
 * fork handling of upager's own preload library). 0 in the child. */
static long bare_fork(void)
{
	return sys(SYS_clone, SIGCHLD, 0, 0, 0, 0);
}

int reaper_start(struct reaper *r, const struct reaper_server *servers, unsigned n, uint64_t id,
		 unsigned timeout_ms)
{
	_Atomic uint64_t *reach;
	int pfd[2], ret;
	long pid;

	r->reach = NULL;
	r->life_fd = -1;
	reach = mmap(NULL, sizeof(*reach), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (reach == MAP_FAILED)
		return -errno;
	if (pipe2(pfd, O_CLOEXEC) < 0) {
		ret = -errno;
		munmap((void *)reach, sizeof(*reach));
		return ret;
	}
	pfd[1] = fd_high(pfd[1]);
	pid = bare_fork();
	if (pid == 0) {
		/* The go-between leaves at once: the reaper is left to init,
		 * not a child of the program's to see in wait(). */
		if (bare_fork() == 0)
			reap(pfd[0], servers, n, id, reach, timeout_ms);
		for (;;)
			sys(SYS_exit_group, 0, 0, 0, 0, 0);
	}
	close(pfd[0]);
	if (pid < 0) {
		close(pfd[1]);
		munmap((void *)reach, sizeof(*reach));
		return (int)pid;
	}
	while (waitpid((pid_t)pid, NULL, 0) < 0 && errno == EINTR)
		;
	r->reach = reach;
	r->life_fd = pfd[1];
	return 0;
}

void reaper_raise(struct reaper *r, uint64_t reach)
{
	uint64_t was;

	if (!r->reach)
		return;
	was = atomic_load(r->reach);
	while (was < reach && !atomic_compare_exchange_weak(r->reach, &was, reach))
		;
}

void reaper_detach(struct reaper *r, bool all_deleted)
{
	if (!r->reach)
		return;
	if (all_deleted)
		atomic_store(r->reach, 0);
	munmap((void *)r->reach, sizeof(*r->reach));
	close(r->life_fd);
	r->reach = NULL;
	r->life_fd = -1;
}
