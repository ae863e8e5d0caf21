/* fd.c - see fd.h. */
#include "fd.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

int fd_high(int fd)
{
	struct rlimit rl;
	long base = FD_HIGH;
	int high;

	if (fd < 0)
		return fd;
	/* Keep half the table below for the program. */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
	    (long)rl.rlim_cur / 2 < base)
		base = (long)rl.rlim_cur / 2;
	if (fd >= base)
		return fd;
	high = fcntl(fd, F_DUPFD_CLOEXEC, (int)base);
	if (high < 0)
		return fd;
	close(fd);
	return high;
}
