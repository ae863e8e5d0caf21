/*
 * mcserver.h - memcached servers for tests: started on a free port of a
 * loopback (or namespace) address, waited for, killed at the end.
 *
 * Servers run with -M (refuse rather than evict when full), -U 0 (no UDP)
 * and one thread. In a network namespace they are started through
 * `ip netns exec`. Tests skip when memcached is not installed
 * (mcserver_available).
 */
#ifndef UPG_TEST_MCSERVER_H
#define UPG_TEST_MCSERVER_H

#include <stdbool.h>
#include <sys/types.h>

struct mcserver {
	pid_t pid;
	int port;
	char ip[48];
	char addr[64];          /* "ip:port", for upg_config.remote_servers */
};

bool mcserver_available(void);

/*
 * Start memcached on ip (NULL: 127.0.0.1) with mb megabytes, in network
 * namespace netns (NULL: ours), and wait until it accepts connections.
 * Returns 0, or -errno (the server is not left running).
 */
int mcserver_start(struct mcserver *s, const char *ip, unsigned mb, const char *netns);

/* SIGSTOP, and wait until every thread of it has stopped (a thread still
 * running would otherwise answer what it reads meanwhile); SIGCONT. */
int mcserver_pause(struct mcserver *s);
void mcserver_resume(struct mcserver *s);

/* SIGKILL and reap; a no-op on a server not running. */
void mcserver_kill(struct mcserver *s);

/* Items the server holds now (stats curr_items), or -1. */
long mcserver_items(const struct mcserver *s);

/* A port on ip where nothing listens (bound and released). */
int mcserver_free_port(const char *ip);

/* "a,b,c" of the servers' addresses into buf. */
const char *mcserver_list(const struct mcserver *s, unsigned n, char *buf, size_t len);

#endif /* UPG_TEST_MCSERVER_H */
