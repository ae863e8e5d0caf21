/*
 * memcached.h - the remote backend: pages stored in memcached servers.
 *
 * Pages are values of the meta protocol (ms/mg/md, binary-safe) spoken over
 * TCP through io_uring. Each queue (one per handler thread, one for the
 * reclaimer) keeps its own connection to every server, so the I/O path
 * takes no lock. Requests queued before a submit go out in one sendmsg per
 * server (pipelined; a write's page is sent from the caller's buffer, not
 * copied), and responses, which memcached returns in order, are parsed as
 * they arrive, however the stream is cut. Each receive carries a linked
 * timeout: a server that sends nothing for timeout_ms while requests wait
 * is declared lost.
 *
 * A page's key is made of a random per-backend id and its slot; slots come
 * from a swap_alloc.h allocator sized by the servers' memory
 * (limit_maxbytes). The backend of a forked child also reads its parent's
 * pages under the parent's keys (memcached_config.inherit); a process's
 * own pages are deleted by its reaper (reaper.h) once it is gone, however
 * it ended. A consistent-hash ring (virtual nodes) on the key gives
 * each slot a list of replicas + 1 distinct servers: a write goes to the
 * first `replicas` of them that this queue does not know to be down (so
 * paging out goes on while a server is away) and succeeds if one took it; a
 * read asks them in order and goes on to the next on an error, a miss or a
 * bad crc32c. A slot is reused only after its delete (md, sent to the whole
 * list) was answered, so no server can hold an older page under its key.
 *
 * Failures: a server that cannot be reached when the backend is opened is
 * an error (logged with its name). A server lost later (connection closed,
 * reset or timed out) fails what was waiting on it (reads then fall back to
 * the replica, or fail: the runtime poisons those pages) and is reconnected
 * with exponential backoff (20 ms doubling up to 2 s), each queue on its own
 * when it next needs the server; it counts as back only once it has answered
 * a no-op (mn) on the new connection, since a stopped server, or a host cut
 * off behind something that still completes handshakes, accepts connections
 * it never serves. Meanwhile it holds back only requests that have no other
 * server to go to. A server that refuses a write because it
 * is full (memcached -M: SERVER_ERROR out of memory) fails the write with
 * -ENOSPC.
 */
#ifndef UPG_MEMCACHED_H
#define UPG_MEMCACHED_H

#include <stdint.h>

#include "backend.h"

#define MC_MAX_SERVERS 64u

struct memcached_config {
	uint32_t page_size;
	/* "host:port,host:port,...": IPv4/IPv6 literals or names. */
	const char *servers;
	uint32_t replicas;      /* 1 or 2 (0 = 1) */
	uint32_t timeout_ms;    /* per response (0 = 1000) */
	/*
	 * A forking parent's backend (the same servers), or NULL: the new
	 * backend reads the pages the parent had out, at the parent's slots
	 * and under its keys (and those it inherited itself), and never
	 * writes or deletes them; its own slots come after. Only the
	 * parent's ids are read from it.
	 */
	struct backend *inherit;
};

struct memcached_stats {
	uint64_t slots_total;
	uint64_t slots_used;
	uint64_t gets, sets, deletes;     /* requests sent */
	uint64_t misses;                  /* mg answered EN */
	uint64_t fallbacks;               /* reads retried on the replica */
	uint64_t full;                    /* writes refused: server out of memory */
	uint64_t timeouts;                /* connections given up after timeout_ms */
	uint64_t conn_lost;               /* connections lost (timeouts included) */
	uint64_t reconnects;              /* connections made again */
	uint64_t delete_leaks;            /* slots kept: their delete failed */
	uint64_t sends;                   /* sendmsg calls */
	unsigned servers, servers_down;
};

/*
 * memcached_open - connect to every server of cfg and ask its size.
 *
 * Returns 0 with *out set, or -errno: -EINVAL for a bad config (list
 * syntax, replicas beyond the number of servers), -ECONNREFUSED,
 * -EHOSTUNREACH, -ETIMEDOUT (or a resolver error as -EHOSTUNREACH) for a
 * server that cannot be reached, logged with its name. The caller closes
 * every queue before backend_close().
 */
int memcached_open(const struct memcached_config *cfg, struct backend **out);

void memcached_get_stats(struct backend *b, struct memcached_stats *st);
/* Key spaces b reads from: its own and those inherited (at most
 * SWAP_MAX_FILES). */
unsigned memcached_nsources(struct backend *b);


#endif /* UPG_MEMCACHED_H */
