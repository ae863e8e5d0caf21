/* cgroup.c - see cgroup.h. */
#include "cgroup.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PATH_LEN 1024
#define DIR_LEN (2 * PATH_LEN + 8)
/* v1 writes "no limit" as the largest page multiple below 2^63. */
#define V1_UNLIMITED (1ull << 62)

/* Call fn on each line of path (its newline cut) until fn returns true;
 * a line longer than the buffer is skipped. Returns whether fn did. */
static bool each_line(const char *path, bool (*fn)(char *line, void *arg), void *arg)
{
	char buf[4096];
	size_t have = 0;
	bool skipping = false, found = false;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return false;
	while (!found) {
		ssize_t n = read(fd, buf + have, sizeof(buf) - 1 - have);
		char *start = buf, *nl;

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			buf[have] = 0;
			found = have && !skipping && fn(buf, arg);
			break;
		}
		have += (size_t)n;
		while (!found && (nl = memchr(start, '\n', have - (size_t)(start - buf)))) {
			*nl = 0;
			found = !skipping && fn(start, arg);
			skipping = false;
			start = nl + 1;
		}
		have -= (size_t)(start - buf);
		memmove(buf, start, have);
		if (have == sizeof(buf) - 1) {
			skipping = true;
			have = 0;
		}
	}
	close(fd);
	return found;
}

/* Whether the comma-separated list holds tok. */
static bool has_token(const char *list, const char *tok)
{
	size_t n = strlen(tok);

	for (const char *p = list;; p++) {
		if (!strncmp(p, tok, n) && (p[n] == ',' || p[n] == 0))
			return true;
		if (!(p = strchr(p, ',')))
			return false;
	}
}

struct hierarchy {
	bool v2;
	char root[PATH_LEN];  /* of the mount, within the hierarchy */
	char mount[PATH_LEN]; /* where it is mounted */
	char group[PATH_LEN]; /* this process's group, within the hierarchy */
};

static bool copy(char *dst, const char *src)
{
	size_t n = strlen(src);

	if (n >= PATH_LEN)
		return false;
	memcpy(dst, src, n + 1);
	return true;
}

/* A /proc/self/mountinfo line: "id parent dev root mount opts [tags] -
 * fstype source superopts". The mount of the memory hierarchy? */
static bool mount_line(char *line, void *arg)
{
	struct hierarchy *h = arg;
	char *sep = strstr(line, " - "), *save, *fstype, *superopts, *f[5];
	unsigned i = 0;

	if (!sep)
		return false;
	*sep = 0;
	fstype = strtok_r(sep + 3, " ", &save);
	superopts = fstype && strtok_r(NULL, " ", &save) ? strtok_r(NULL, " ", &save) : NULL;
	if (!superopts)
		return false;
	if (h->v2 ? strcmp(fstype, "cgroup2") != 0
		  : strcmp(fstype, "cgroup") != 0 || !has_token(superopts, "memory"))
		return false;
	for (char *t = strtok_r(line, " ", &save); t && i < 5; t = strtok_r(NULL, " ", &save))
		f[i++] = t;
	return i == 5 && copy(h->root, f[3]) && copy(h->mount, f[4]);
}

/* A /proc/self/cgroup line: "id:controllers:path" ("0::path" for v2). */
static bool group_line(char *line, void *arg)
{
	struct hierarchy *h = arg;
	char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;

	if (!c2)
		return false;
	*c2 = 0;
	if (h->v2 ? strcmp(line, "0:") != 0 || c2 != c1 + 1 : !has_token(c1 + 1, "memory"))
		return false;
	return copy(h->group, c2 + 1);
}

/* The number in file dir/name, or false if none (absent, "max"). */
static bool read_value(const char *dir, const char *name, uint64_t *v)
{
	char path[DIR_LEN + 32], buf[64], *end;
	ssize_t n;
	int fd;

	if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, name) >= sizeof(path))
		return false;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return false;
	buf[n] = 0;
	errno = 0;
	*v = strtoull(buf, &end, 10);
	return end != buf && errno == 0;
}

struct stat_find {
	uint64_t v;
};

static bool stat_line(char *line, void *arg)
{
	static const char key[] = "hierarchical_memory_limit ";
	struct stat_find *s = arg;

	if (strncmp(line, key, sizeof(key) - 1))
		return false;
	s->v = strtoull(line + sizeof(key) - 1, NULL, 10);
	return true;
}

/* The directory of this process's group in hierarchy h, found. */
static bool group_dir(struct hierarchy *h, char *dir, size_t len)
{
	const char *rel = h->group;
	size_t rlen = strlen(h->root);

	if (!each_line("/proc/self/mountinfo", mount_line, h) ||
	    !each_line("/proc/self/cgroup", group_line, h))
		return false;
	/* Inside a cgroup namespace or a bind mount the mount's root is a
	 * group of its own: the path goes on from there. */
	if (strcmp(h->root, "/") != 0 && !strncmp(rel, h->root, rlen) &&
	    (rel[rlen] == '/' || rel[rlen] == 0))
		rel += rlen;
	return (size_t)snprintf(dir, len, "%s%s", h->mount, rel) < len;
}

uint64_t cgroup_memory_limit(void)
{
	struct hierarchy h = { .v2 = false };
	char dir[DIR_LEN];
	uint64_t limit = 0, v;

	if (group_dir(&h, dir, sizeof(dir))) {
		struct stat_find s = { 0 };
		char path[DIR_LEN + 16];

		if ((size_t)snprintf(path, sizeof(path), "%s/memory.stat", dir) < sizeof(path) &&
		    each_line(path, stat_line, &s) && s.v < V1_UNLIMITED)
			return s.v;
		return 0;
	}
	h = (struct hierarchy){ .v2 = true };
	if (!group_dir(&h, dir, sizeof(dir)))
		return 0;
	/* Up to the mount: the root group has no memory.max. */
	for (size_t mlen = strlen(h.mount);;) {
		char *slash;

		if (read_value(dir, "memory.max", &v) && (!limit || v < limit))
			limit = v;
		slash = strrchr(dir, '/');
		if (!slash || (size_t)(slash - dir) < mlen)
			break;
		*slash = 0;
	}
	return limit;
}
