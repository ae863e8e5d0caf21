/* memcached.c - see memcached.h. */
#define LOG_PREFIX "memcached: "
#include "memcached.h"
#include "uring_queue.h"

#include <arpa/inet.h>
#include <errno.h>
#include <liburing.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "fd.h"
#include "log.h"
#include "reaper.h"
#include "swap_alloc.h"

#define VNODES 160u             /* ring points per server */
#define RBUF (256u << 10)       /* receive buffer per connection */
#define MAX_IOV 1020u           /* iovecs per sendmsg (UIO_MAXIOV is 1024) */
#define DEL_BATCH 64u           /* deletes a queue has in flight at most */
#define MAX_LINE 1024u          /* a response line longer than this is garbage */
#define BACKOFF_MIN_MS 20u
#define BACKOFF_MAX_MS 2000u
/* Per stored page beyond its bytes: item header, key, slab rounding. */
#define ITEM_OVERHEAD 512u

struct mc_server {
	char name[128];         /* as given: host:port */
	struct sockaddr_storage addr;
	socklen_t alen;
	uint64_t maxbytes;
	atomic_bool down;       /* logged lost and not yet back */
};

struct ring_point {
	uint64_t hash;
	unsigned server;
};

struct mc {
	struct backend base;
	struct swap_alloc *alloc;
	unsigned nservers, replicas, timeout_ms;
	struct mc_server *servers;
	struct ring_point *ring;        /* nservers * VNODES, sorted by hash */
	/* Keys: u<id>.<page> for slot (file, page) (swap_alloc.h), id from
	 * ids[file]. Files 0..nforeign-1 are a forking parent's (its own
	 * and those it read; memcached_config.inherit), read, never written
	 * or deleted; file nforeign is this backend's, with a random id. */
	uint64_t ids[SWAP_MAX_FILES];
	unsigned nforeign;
	struct reaper reaper;           /* deletes our pages once we are gone */

	/* Slots discarded, their deletes not yet sent (any thread adds). */
	pthread_mutex_t del_lock;
	uint64_t *del;
	size_t ndel, del_cap;
	atomic_size_t ndel_hint;

	_Atomic uint64_t gets, sets, deletes, misses, fallbacks, full, timeouts, conn_lost,
		reconnects, delete_leaks, sends;
};

enum { OP_GET, OP_SET, OP_DEL, OP_NOOP };

/* One backend_io (or one delete), over its replicas. */
struct mc_op {
	struct backend_io *io;          /* NULL for a delete */
	uint64_t slot;
	uint64_t id;                    /* the key space of slot's page */
	/* tried: servers of srv[] asked (a read) or considered (a write). */
	uint8_t type, nsrv, tried, left, ok;
	int err;
	uint16_t srv[3];       /* servers_for() */
};

/* One request to one server. */
struct mc_req {
	struct mc_op *op;
	unsigned hlen;
	char hdr[72];
};

/* PROBING: connected again after a loss, a no-op (mn) sent; the server
 * counts as back only once it answers (a stopped server, or one cut off
 * behind a host that still completes handshakes, would else be taken
 * back and lost again, a timeout each time). */
enum { C_DOWN, C_CONNECTING, C_PROBING, C_UP };

/* CQE user_data: connection index << 8 | kind. */
enum { K_SEND = 1, K_RECV, K_CONN, K_TIMEOUT, K_CANCEL };

struct mc_conn {
	int fd;                         /* -1 once closed */
	int state;
	int err;                        /* why it went down */
	unsigned sqes;                  /* SQEs in flight on fd */
	bool sending, receiving;
	bool ever_up;
	/* Requests in order: [head, sent) given to a send and awaiting their
	 * response, [sent, tail) not sent yet. Indices run free. */
	unsigned head, sent, tail;
	struct mc_req **fifo;
	struct iovec *iov;
	struct msghdr msg;
	size_t send_left;               /* bytes of the send in flight */
	char *rbuf;
	unsigned rpos, rlen;
	/* Inside a VA response: bytes of value + CRLF still to come. */
	unsigned need, vlen, got;
	int vres;
	uint64_t retry_at;              /* ms, CLOCK_MONOTONIC */
	unsigned backoff_ms;
	struct __kernel_timespec ts;
};

struct mc_queue {
	struct backend_queue base;
	/* Its depth is the I/Os it takes; the ring has room for what they
	 * become (a send, a receive and a timeout per server...). */
	struct uring_queue u;
	unsigned nops, nreqs;
	unsigned unsubmitted;
	unsigned sqes;                  /* SQEs in flight, all connections */
	unsigned dels;                  /* delete ops in flight */
	bool in_harvest, closing;
	struct mc_conn *conns;
	struct mc_op *ops;
	struct mc_op **free_ops;
	unsigned nfree_ops;
	struct mc_req *reqs;
	struct mc_req **free_reqs;
	unsigned nfree_reqs;
	struct backend_io **ready;      /* finished, not yet handed out */
	unsigned ready_head, ready_tail;
};

static const char crlf[] = "\r\n";

static struct mc *to_mc(struct backend *b)
{
	return container_of(b, struct mc, base);
}

static struct mc_queue *to_queue(struct backend_queue *q)
{
	return container_of(q, struct mc_queue, base);
}

static void count(_Atomic uint64_t *c)
{
	atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t mix64(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ull;
	x ^= x >> 33;
	return x;
}

static inline uint64_t slot_id(const struct mc *m, uint64_t slot)
{
	return m->ids[swap_slot_file(slot)];
}

static inline bool slot_own(const struct mc *m, uint64_t slot)
{
	return swap_slot_file(slot) == m->nforeign;
}

/* An own slot as the allocator numbers it. */
static inline uint64_t alloc_slot(const struct mc *m, uint64_t slot)
{
	return slot - swap_slot(m->nforeign, 0);
}

static uint64_t hash_str(const char *s, uint64_t seed)
{
	uint64_t h = 0xcbf29ce484222325ull ^ seed;

	while (*s)
		h = (h ^ (uint8_t)*s++) * 0x100000001b3ull;
	return mix64(h);
}

/* The servers of slot, in order of preference: the first ring point at or
 * after the key's hash, then the next points of other servers; replicas + 1
 * of them (as many as there are), the last one a spare for writes while one
 * is down. */
static unsigned servers_for(const struct mc *m, uint64_t id, uint64_t page, uint16_t *srv)
{
	uint64_t h = mix64(id ^ mix64(page + 1));
	unsigned n = m->nservers * VNODES, lo = 0, hi = n, k = 0;
	unsigned want = m->replicas + 1 < m->nservers ? m->replicas + 1 : m->nservers;

	while (lo < hi) {
		unsigned mid = lo + (hi - lo) / 2;

		if (m->ring[mid].hash < h)
			lo = mid + 1;
		else
			hi = mid;
	}
	for (unsigned i = 0; i < n && k < want; i++) {
		unsigned s = m->ring[(lo + i) % n].server, j;

		for (j = 0; j < k && srv[j] != s; j++)
			;
		if (j == k)
			srv[k++] = (uint16_t)s;
	}
	return k;
}

static int cmp_point(const void *a, const void *b)
{
	const struct ring_point *x = a, *y = b;

	return x->hash < y->hash ? -1 : x->hash > y->hash;
}

/* ------------------------------------------------------------------------
 * Completing requests
 */

static void issue(struct mc_queue *q, struct mc_op *op, unsigned si);

static void op_put(struct mc_queue *q, struct mc_op *op)
{
	q->free_ops[q->nfree_ops++] = op;
}

static void finish(struct mc_queue *q, struct mc_op *op, int res)
{
	op->io->result = res;
	q->ready[q->ready_tail++ % q->u.depth] = op->io;
	op_put(q, op);
	/* Finished outside a harvest (a server known down): nothing else
	 * would make the queue's fd readable. */
	if (!q->in_harvest)
		eventfd_write(q->u.efd, 1);
}

/* One request of op ended with res: 0 done (a read's value is in the
 * buffer), -ENODATA not there, or -errno. */
static void req_done(struct mc_queue *q, struct mc_op *op, int res)
{
	struct mc *m = to_mc(q->base.backend);
	uint32_t len = m->base.page_size;

	switch (op->type) {
	case OP_GET:
		if (!res && crc32c(0, op->io->buf, len) != op->io->crc)
			res = -EBADMSG;
		if (res == -ENODATA)
			count(&m->misses);
		if (!res) {
			finish(q, op, (int)len);
		} else if (++op->tried < op->nsrv) {
			count(&m->fallbacks);
			issue(q, op, op->srv[op->tried]);
		} else {
			finish(q, op, res == -ENODATA ? -EIO : res);
		}
		break;
	case OP_SET:
		if (res == -ENOSPC)
			count(&m->full);
		if (res && op->tried < op->nsrv) {
			/* Lost or full: the next server of the list instead. */
			issue(q, op, op->srv[op->tried++]);
			break;
		}
		if (!res)
			op->ok++;
		else if (op->err != -ENOSPC)
			op->err = res;
		if (!--op->left)
			finish(q, op, op->ok ? (int)len : op->err);
		break;
	case OP_NOOP: {
		struct mc_conn *c = &q->conns[op->srv[0]];

		if (!res && c->state == C_PROBING) {
			c->state = C_UP;
			c->err = 0;
			c->backoff_ms = BACKOFF_MIN_MS;
			count(&m->reconnects);
			if (atomic_exchange(&m->servers[op->srv[0]].down, false))
				pr_info("server %s is back", m->servers[op->srv[0]].name);
		}
		op_put(q, op);
		break;
	}
	case OP_DEL:
		if (res && res != -ENODATA)
			op->err = res;
		if (!--op->left) {
			/* A delete that may not have happened keeps its slot:
			 * a server that comes back could still hold the page
			 * under that key. */
			if (op->err) {
				count(&m->delete_leaks);
			} else {
				uint64_t slot = alloc_slot(m, op->slot);

				swap_alloc_free(m->alloc, &slot, 1, NULL);
			}
			q->dels--;
			op_put(q, op);
		}
		break;
	}
}

/* The connection to server si is lost: fail what waits on it, close it
 * once its SQEs are back, retry later. */
static void conn_fail(struct mc_queue *q, unsigned si, int err)
{
	struct mc *m = to_mc(q->base.backend);
	struct mc_conn *c = &q->conns[si];
	struct mc_server *s = &m->servers[si];

	if (c->state == C_DOWN)
		return;
	if (c->state == C_UP && !q->closing)
		count(&m->conn_lost);
	c->state = C_DOWN;
	c->err = err;
	if (c->fd >= 0)
		shutdown(c->fd, SHUT_RDWR);     /* ends its send and receive */
	c->retry_at = now_ms() + c->backoff_ms;
	c->backoff_ms = c->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : c->backoff_ms * 2;
	if (!q->closing && !atomic_exchange(&s->down, true))
		pr_perr(err, "server %s lost, reconnecting", s->name);
	c->need = 0;
	c->rpos = c->rlen = 0;
	while (c->head != c->tail) {
		struct mc_req *rq = c->fifo[c->head++ % q->nreqs];

		q->free_reqs[q->nfree_reqs++] = rq;
		req_done(q, rq->op, err);
	}
	c->head = c->sent = c->tail = 0;
}

static struct io_uring_sqe *get_sqe(struct mc_queue *q)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&q->u.ring);

	if (!sqe) {
		io_uring_submit(&q->u.ring);
		sqe = io_uring_get_sqe(&q->u.ring);
	}
	return sqe;
}

/* Link the response timeout to sqe, the request just prepared on server
 * si's socket, and count them in flight. With the SQ full (get_sqe()
 * submitted sqe already), it goes untimed. */
static void link_timeout(struct mc_queue *q, unsigned si, struct io_uring_sqe *sqe)
{
	struct mc_conn *c = &q->conns[si];
	struct io_uring_sqe *tmo;

	sqe->flags |= IOSQE_IO_LINK;
	tmo = get_sqe(q);
	if (!tmo) {
		sqe->flags &= (uint8_t)~IOSQE_IO_LINK;
		c->sqes++;
		q->sqes++;
		return;
	}
	io_uring_prep_link_timeout(tmo, &c->ts, 0);
	io_uring_sqe_set_data64(tmo, (uint64_t)si << 8 | K_TIMEOUT);
	c->sqes += 2;
	q->sqes += 2;
}

/* Queue a connect to server si (with the response timeout). */
static int conn_start(struct mc_queue *q, unsigned si)
{
	struct mc *m = to_mc(q->base.backend);
	struct mc_conn *c = &q->conns[si];
	struct mc_server *s = &m->servers[si];
	struct io_uring_sqe *sqe;
	int one = 1;

	/* The old socket's SQEs must all be back first: their completions
	 * would otherwise be taken for the new one's. */
	if (c->sqes || q->closing)
		return -EAGAIN;
	if (c->fd >= 0) {
		close(c->fd);
		c->fd = -1;
	}
	c->fd = fd_high(socket(s->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0));
	if (c->fd < 0)
		return -errno;
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	sqe = get_sqe(q);
	if (!sqe)
		return -EAGAIN;
	io_uring_prep_connect(sqe, c->fd, (struct sockaddr *)&s->addr, s->alen);
	io_uring_sqe_set_data64(sqe, (uint64_t)si << 8 | K_CONN);
	link_timeout(q, si, sqe);
	c->state = C_CONNECTING;
	return 0;
}

/* Whether server si is best avoided by this queue: down and not due for a
 * retry, or being reconnected to (which may take the whole timeout). */
static bool conn_down(const struct mc_queue *q, unsigned si)
{
	const struct mc_conn *c = &q->conns[si];

	if (c->state == C_DOWN)
		return now_ms() < c->retry_at;
	return c->state != C_UP && c->ever_up;
}

/* Whether op has another server to turn to if this one fails. */
static bool has_spare(const struct mc_op *op)
{
	if (op->type == OP_GET)
		return op->tried + 1 < op->nsrv;
	return op->type == OP_SET && op->tried < op->nsrv;
}

/* Send op's request to server si (at the next flush). */
static void issue(struct mc_queue *q, struct mc_op *op, unsigned si)
{
	struct mc *m = to_mc(q->base.backend);
	struct mc_conn *c = &q->conns[si];
	struct mc_req *rq;
	int n;

	/* A server being reconnected to holds back only requests with
	 * nowhere else to go; the first one due starts the reconnection. */
	if ((c->state == C_DOWN && (now_ms() < c->retry_at || conn_start(q, si) < 0)) ||
	    (c->state != C_UP && c->ever_up && has_spare(op))) {
		req_done(q, op, c->err ? c->err : -ECONNREFUSED);
		return;
	}
	rq = q->free_reqs[--q->nfree_reqs];
	rq->op = op;
	switch (op->type) {
	case OP_GET:
		n = snprintf(rq->hdr, sizeof(rq->hdr), "mg u%016llx.%llx v\r\n",
			     (unsigned long long)op->id,
			     (unsigned long long)swap_slot_page(op->slot));
		count(&m->gets);
		break;
	case OP_SET:
		n = snprintf(rq->hdr, sizeof(rq->hdr), "ms u%016llx.%llx %u\r\n",
			     (unsigned long long)op->id,
			     (unsigned long long)swap_slot_page(op->slot), m->base.page_size);
		count(&m->sets);
		break;
	case OP_DEL:
		n = snprintf(rq->hdr, sizeof(rq->hdr), "md u%016llx.%llx\r\n",
			     (unsigned long long)op->id,
			     (unsigned long long)swap_slot_page(op->slot));
		count(&m->deletes);
		break;
	default:
		n = snprintf(rq->hdr, sizeof(rq->hdr), "mn\r\n");
		break;
	}
	rq->hlen = (unsigned)n;
	c->fifo[c->tail++ % q->nreqs] = rq;
}

/* ------------------------------------------------------------------------
 * Sending and receiving
 */

static void post_send(struct mc_queue *q, unsigned si)
{
	struct mc *m = to_mc(q->base.backend);
	struct mc_conn *c = &q->conns[si];
	struct io_uring_sqe *sqe = get_sqe(q);
	unsigned niov = 0;
	size_t bytes = 0;

	if (!sqe)
		return;        /* the next flush tries again */
	while (c->sent != c->tail && niov + 3 <= MAX_IOV) {
		struct mc_req *rq = c->fifo[c->sent++ % q->nreqs];

		c->iov[niov++] = (struct iovec){ rq->hdr, rq->hlen };
		bytes += rq->hlen;
		if (rq->op->type == OP_SET) {
			c->iov[niov++] = (struct iovec){ rq->op->io->buf, m->base.page_size };
			c->iov[niov++] = (struct iovec){ (void *)crlf, 2 };
			bytes += m->base.page_size + 2;
		}
	}
	c->msg = (struct msghdr){ .msg_iov = c->iov, .msg_iovlen = niov };
	c->send_left = bytes;
	io_uring_prep_sendmsg(sqe, c->fd, &c->msg, MSG_NOSIGNAL);
	io_uring_sqe_set_data64(sqe, (uint64_t)si << 8 | K_SEND);
	c->sending = true;
	c->sqes++;
	q->sqes++;
	count(&m->sends);
}

/* The rest of a send the socket took only part of. */
static void resend(struct mc_queue *q, unsigned si, size_t done)
{
	struct mc_conn *c = &q->conns[si];
	struct io_uring_sqe *sqe = get_sqe(q);

	c->send_left -= done;
	while (done) {
		struct iovec *v = c->msg.msg_iov;
		size_t k = done < v->iov_len ? done : v->iov_len;

		v->iov_base = (char *)v->iov_base + k;
		v->iov_len -= k;
		done -= k;
		if (!v->iov_len) {
			c->msg.msg_iov++;
			c->msg.msg_iovlen--;
		}
	}
	if (!sqe) {
		conn_fail(q, si, -EIO);
		c->sending = false;
		return;
	}
	io_uring_prep_sendmsg(sqe, c->fd, &c->msg, MSG_NOSIGNAL);
	io_uring_sqe_set_data64(sqe, (uint64_t)si << 8 | K_SEND);
	c->sqes++;
	q->sqes++;
}

/*
 * A receive is posted only while responses are awaited, and it carries the
 * timeout: a server silent that long with requests pending is lost. (An
 * idle connection has no receive posted, so it never times out, and a
 * queue close is never left waiting on a receive nobody answers.) The
 * timeout counts from when the receive is armed: data already waiting
 * completes it at once.
 */
static void post_recv(struct mc_queue *q, unsigned si)
{
	struct mc_conn *c = &q->conns[si];
	struct io_uring_sqe *sqe = get_sqe(q);

	if (!sqe)
		return;
	io_uring_prep_recv(sqe, c->fd, c->rbuf + c->rlen, RBUF - c->rlen, 0);
	io_uring_sqe_set_data64(sqe, (uint64_t)si << 8 | K_RECV);
	sqe->flags |= IOSQE_IO_LINK;
	link_timeout(q, si, sqe);
	c->receiving = true;
}

/* The response to the request at the head of c's fifo: res. */
static void pop(struct mc_queue *q, struct mc_conn *c, int res)
{
	struct mc_req *rq = c->fifo[c->head++ % q->nreqs];

	q->free_reqs[q->nfree_reqs++] = rq;
	req_done(q, rq->op, res);
}

static int line_result(const char *line)
{
	if (!strcmp(line, "HD") || !strcmp(line, "NF") || !strcmp(line, "MN"))
		return 0;
	if (!strcmp(line, "EN"))
		return -ENODATA;
	if (!strncmp(line, "SERVER_ERROR out of memory", 26))
		return -ENOSPC;
	return -EIO;
}

/* Parse the responses received so far; -EPROTO on garbage. */
static int parse(struct mc_queue *q, unsigned si)
{
	struct mc_conn *c = &q->conns[si];
	uint32_t len = q->base.backend->page_size;

	while (c->rpos < c->rlen && c->state >= C_PROBING) {
		struct mc_req *rq;
		char *line, *end;

		if (c->head == c->sent)
			return -EPROTO;  /* an answer to nothing asked */
		rq = c->fifo[c->head % q->nreqs];
		if (c->need) {
			unsigned take = c->rlen - c->rpos < c->need ? c->rlen - c->rpos : c->need;
			unsigned vend = c->got + take < c->vlen ? c->got + take : c->vlen;

			if (c->vres == 0 && c->got < vend)
				memcpy((char *)rq->op->io->buf + c->got, c->rbuf + c->rpos, vend - c->got);
			c->got += take;
			c->need -= take;
			c->rpos += take;
			if (!c->need)
				pop(q, c, c->vres);
			continue;
		}
		line = c->rbuf + c->rpos;
		end = memmem(line, c->rlen - c->rpos, crlf, 2);
		if (!end) {
			if (c->rlen - c->rpos > MAX_LINE)
				return -EPROTO;
			break;
		}
		*end = 0;
		c->rpos += (unsigned)(end - line) + 2;
		if (!strncmp(line, "VA ", 3)) {
			unsigned long v = strtoul(line + 3, NULL, 10);

			if (v > (1ul << 30))
				return -EPROTO;
			c->vlen = (unsigned)v;
			c->need = c->vlen + 2;
			c->got = 0;
			c->vres = rq->op->type == OP_GET && c->vlen == len ? 0 : -EBADMSG;
			continue;
		}
		pop(q, c, line_result(line));
	}
	if (c->rpos == c->rlen) {
		c->rpos = c->rlen = 0;
	} else if (RBUF - c->rlen < RBUF / 4) {
		memmove(c->rbuf, c->rbuf + c->rpos, c->rlen - c->rpos);
		c->rlen -= c->rpos;
		c->rpos = 0;
	}
	return 0;
}

static void take_deletes(struct mc_queue *q)
{
	struct mc *m = to_mc(q->base.backend);
	uint64_t slots[DEL_BATCH];
	unsigned n = 0;

	if (!atomic_load_explicit(&m->ndel_hint, memory_order_relaxed) || q->dels == DEL_BATCH ||
	    q->closing)
		return;
	pthread_mutex_lock(&m->del_lock);
	while (m->ndel && q->dels + n < DEL_BATCH)
		slots[n++] = m->del[--m->ndel];
	atomic_store_explicit(&m->ndel_hint, m->ndel, memory_order_relaxed);
	pthread_mutex_unlock(&m->del_lock);
	for (unsigned i = 0; i < n; i++) {
		struct mc_op *op = q->free_ops[--q->nfree_ops];

		*op = (struct mc_op){ .type = OP_DEL, .slot = slots[i], .id = slot_id(m, slots[i]) };
		op->nsrv = op->left = (uint8_t)servers_for(m, op->id, swap_slot_page(op->slot),
							   op->srv);
		q->dels++;
		for (unsigned k = 0, nsrv = op->nsrv; k < nsrv; k++)
			issue(q, op, op->srv[k]);
	}
}

/* Send what is queued, arm receives, submit. */
static void flush(struct mc_queue *q)
{
	struct mc *m = to_mc(q->base.backend);

	take_deletes(q);
	for (unsigned si = 0; si < m->nservers; si++) {
		struct mc_conn *c = &q->conns[si];

		if (c->state < C_PROBING)
			continue;
		if (!c->sending && c->sent != c->tail)
			post_send(q, si);
		if (!c->receiving && c->head != c->sent)
			post_recv(q, si);
	}
	if (io_uring_sq_ready(&q->u.ring))
		io_uring_submit(&q->u.ring);
}

static void on_cqe(struct mc_queue *q, uint64_t ud, int res)
{
	struct mc *m = to_mc(q->base.backend);
	unsigned si = (unsigned)(ud >> 8);
	struct mc_conn *c = &q->conns[si];
	struct mc_op *op;

	if ((ud & 0xff) == K_CANCEL) {
		q->sqes--;
		return;
	}
	c->sqes--;
	q->sqes--;
	switch (ud & 0xff) {
	case K_CONN:
		if (c->state != C_CONNECTING)
			break;
		if (res < 0) {
			conn_fail(q, si, res == -ECANCELED ? -ETIMEDOUT : res);
			break;
		}
		if (!c->ever_up) {
			c->state = C_UP;
			c->ever_up = true;
			break;
		}
		/* Back only once it answers. */
		c->state = C_PROBING;
		op = q->free_ops[--q->nfree_ops];
		*op = (struct mc_op){ .type = OP_NOOP, .nsrv = 1, .srv = { (uint16_t)si } };
		issue(q, op, si);
		break;
	case K_SEND:
		if (c->state < C_PROBING) {
			c->sending = false;
		} else if (res < 0) {
			c->sending = false;
			conn_fail(q, si, res);
		} else if ((size_t)res < c->send_left) {
			resend(q, si, (size_t)res);
		} else {
			c->sending = false;
		}
		break;
	case K_RECV:
		c->receiving = false;
		if (c->state < C_PROBING)
			break;
		if (res == -ECANCELED) {
			/* Its linked timeout fired with nothing received. */
			count(&m->timeouts);
			conn_fail(q, si, -ETIMEDOUT);
		} else if (res <= 0) {
			conn_fail(q, si, res ? res : -ECONNRESET);
		} else {
			c->rlen += (unsigned)res;
			res = parse(q, si);
			if (res < 0)
				conn_fail(q, si, res);
		}
		break;
	default:
		break;          /* K_TIMEOUT: its request's CQE says what happened */
	}
	if (!c->sqes && c->state == C_DOWN && c->fd >= 0) {
		close(c->fd);
		c->fd = -1;
	}
}

static void drain_cqes(struct mc_queue *q)
{
	struct io_uring_cqe *cqe;

	while (io_uring_peek_cqe(&q->u.ring, &cqe) == 0) {
		uint64_t ud = cqe->user_data;
		int res = cqe->res;

		io_uring_cqe_seen(&q->u.ring, cqe);
		on_cqe(q, ud, res);
	}
}

/* Process the completions there are, send what they called for, then hand
 * out up to max finished I/Os. */
static unsigned harvest(struct mc_queue *q, struct backend_io **done, unsigned max)
{
	unsigned n = 0;

	q->in_harvest = true;
	drain_cqes(q);
	if (!q->closing)
		flush(q);
	q->in_harvest = false;
	while (n < max && q->ready_head != q->ready_tail)
		done[n++] = q->ready[q->ready_head++ % q->u.depth];
	q->u.outstanding -= n;
	return n;
}

/* ------------------------------------------------------------------------
 * The ops
 */

static int queue_io(struct backend_queue *bq, struct backend_io *io, int type)
{
	struct mc_queue *q = to_queue(bq);
	struct mc *m = to_mc(bq->backend);
	struct mc_op *op;

	if (swap_slot_file(io->slot) > m->nforeign || (type == OP_SET && !slot_own(m, io->slot)))
		return -EINVAL;
	if (q->u.outstanding == q->u.depth)
		return -EAGAIN;
	op = q->free_ops[--q->nfree_ops];
	*op = (struct mc_op){ .io = io, .slot = io->slot, .id = slot_id(m, io->slot),
			      .type = (uint8_t)type };
	op->nsrv = (uint8_t)servers_for(m, op->id, swap_slot_page(op->slot), op->srv);
	q->u.outstanding++;
	q->unsubmitted++;
	if (type == OP_SET) {
		uint16_t to[2];

		io->crc = crc32c(0, io->buf, m->base.page_size);
		/* The first servers of the slot's list not known to be down:
		 * reads look down the whole list. */
		for (; op->tried < op->nsrv && op->left < m->replicas; op->tried++)
			if (!conn_down(q, op->srv[op->tried]))
				to[op->left++] = op->srv[op->tried];
		if (!op->left)
			to[op->left++] = op->srv[0];   /* fails, or reconnects */
		for (unsigned k = 0, n = op->left; k < n; k++)
			issue(q, op, to[k]);
	} else {
		issue(q, op, op->srv[0]);
	}
	return 0;
}

static int mc_queue_read(struct backend_queue *q, struct backend_io *io)
{
	return queue_io(q, io, OP_GET);
}

static int mc_queue_write(struct backend_queue *q, struct backend_io *io)
{
	return queue_io(q, io, OP_SET);
}

static int mc_submit(struct backend_queue *bq)
{
	struct mc_queue *q = to_queue(bq);
	unsigned n = q->unsubmitted;

	q->unsubmitted = 0;
	flush(q);
	return (int)n;
}

static unsigned mc_harvest(struct uring_queue *u, struct backend_io **done, unsigned max)
{
	return harvest(container_of(u, struct mc_queue, u), done, max);
}

/* Every I/O not finished waits on an SQE in flight (a send, a receive with
 * its timeout, a connect with its timeout): with none, nothing will come. */
static int mc_before_wait(struct uring_queue *u)
{
	return container_of(u, struct mc_queue, u)->sqes ? 0 : -EIO;
}

static int mc_reap(struct backend_queue *bq, struct backend_io **done, unsigned max,
		   unsigned min)
{
	struct mc_queue *q = to_queue(bq);

	q->unsubmitted = 0;
	return uring_queue_reap(&q->u, done, max, min, mc_harvest, mc_before_wait);
}

static int mc_queue_fd(struct backend_queue *bq)
{
	return to_queue(bq)->u.efd;
}

static void queue_free(struct mc_queue *q, unsigned nservers)
{
	if (q->conns) {
		for (unsigned i = 0; i < nservers; i++) {
			if (q->conns[i].fd >= 0)
				close(q->conns[i].fd);
			free(q->conns[i].fifo);
			free(q->conns[i].iov);
			free(q->conns[i].rbuf);
		}
	}
	if (q->u.efd >= 0)
		close(q->u.efd);
	free(q->conns);
	free(q->ops);
	free(q->free_ops);
	free(q->reqs);
	free(q->free_reqs);
	free(q->ready);
	free(q);
}

/*
 * Close: shut the sockets down (a send stuck on a full socket or a receive
 * waiting for a stopped server ends at once), cancel whatever is still in
 * the ring, and wait for every SQE to come back, for at most twice the
 * response timeout: sends read the callers' buffers until then.
 */
static void mc_queue_close(struct backend_queue *bq)
{
	struct mc_queue *q = to_queue(bq);
	struct mc *m = to_mc(bq->backend);
	uint64_t deadline = now_ms() + 2ull * m->timeout_ms;
	struct io_uring_sqe *sqe;

	q->closing = true;
	for (unsigned i = 0; i < m->nservers; i++)
		conn_fail(q, i, -ESHUTDOWN);
	if (q->sqes && (sqe = get_sqe(q))) {
		io_uring_prep_cancel64(sqe, 0, IORING_ASYNC_CANCEL_ANY);
		io_uring_sqe_set_data64(sqe, K_CANCEL);
		q->sqes++;
	}
	while (q->sqes && now_ms() < deadline) {
		struct __kernel_timespec ts = { 0, 100 * 1000000L };
		struct io_uring_cqe *cqe;

		io_uring_submit_and_wait_timeout(&q->u.ring, &cqe, 1, &ts, NULL);
		q->in_harvest = true;
		drain_cqes(q);
	}
	if (q->sqes)
		pr_warn("queue closed with %u requests still in the kernel", q->sqes);
	io_uring_queue_exit(&q->u.ring);
	queue_free(q, m->nservers);
}

static int mc_queue_open(struct backend *b, unsigned depth, struct backend_queue **out)
{
	struct mc *m = to_mc(b);
	struct io_uring_params p = { .flags = IORING_SETUP_SUBMIT_ALL };
	struct mc_queue *q;
	unsigned entries = 8;
	int ret = -ENOMEM;

	if (!depth)
		return -EINVAL;
	q = calloc(1, sizeof(*q));
	if (!q)
		return -ENOMEM;
	q->base.backend = b;
	q->u.depth = depth;
	q->nops = depth + DEL_BATCH + m->nservers;   /* + a probe per server */
	q->nreqs = 3 * q->nops;    /* a delete goes to up to three servers */
	q->u.efd = fd_high(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
	q->conns = calloc(m->nservers, sizeof(*q->conns));
	q->ops = calloc(q->nops, sizeof(*q->ops));
	q->free_ops = calloc(q->nops, sizeof(*q->free_ops));
	q->reqs = calloc(q->nreqs, sizeof(*q->reqs));
	q->free_reqs = calloc(q->nreqs, sizeof(*q->free_reqs));
	q->ready = calloc(depth, sizeof(*q->ready));
	if (q->u.efd < 0 || !q->conns || !q->ops || !q->free_ops || !q->reqs || !q->free_reqs ||
	    !q->ready)
		goto err;
	for (unsigned i = 0; i < q->nops; i++)
		q->free_ops[q->nfree_ops++] = &q->ops[i];
	for (unsigned i = 0; i < q->nreqs; i++)
		q->free_reqs[q->nfree_reqs++] = &q->reqs[i];
	for (unsigned i = 0; i < m->nservers; i++) {
		struct mc_conn *c = &q->conns[i];

		c->fd = -1;
		c->backoff_ms = BACKOFF_MIN_MS;
		c->ts.tv_sec = m->timeout_ms / 1000;
		c->ts.tv_nsec = (long long)(m->timeout_ms % 1000) * 1000000;
		c->fifo = calloc(q->nreqs, sizeof(*c->fifo));
		c->iov = calloc(MAX_IOV, sizeof(*c->iov));
		c->rbuf = malloc(RBUF);
		if (!c->fifo || !c->iov || !c->rbuf)
			goto err;
	}
	/* At most a send, a receive and a connect with their timeouts per
	 * server in flight, and a cancel. */
	while (entries < 8 * m->nservers)
		entries *= 2;
	ret = io_uring_queue_init_params(entries, &q->u.ring, &p);
	if (ret < 0) {
		pr_perr(ret, "io_uring setup");
		goto err;
	}
	uring_ring_high(&q->u.ring);
	ret = io_uring_register_eventfd(&q->u.ring, q->u.efd);
	if (ret < 0) {
		io_uring_queue_exit(&q->u.ring);
		goto err;
	}
	/* Connect now, wait later: requests queued meanwhile go out once
	 * their connection is up. */
	for (unsigned i = 0; i < m->nservers; i++)
		if (conn_start(q, i) < 0)
			q->conns[i].err = -ECONNREFUSED;
	io_uring_submit(&q->u.ring);
	*out = &q->base;
	return 0;
err:
	queue_free(q, m->nservers);
	return ret;
}

static int mc_alloc_slots(struct backend *b, unsigned n, uint64_t *slots)
{
	struct mc *m = to_mc(b);
	unsigned got = swap_alloc_get(m->alloc, n > INT_MAX ? INT_MAX : n, slots);
	uint64_t reach = 0;

	for (unsigned i = 0; i < got; i++) {
		reach = slots[i] + 1 > reach ? slots[i] + 1 : reach;
		slots[i] += swap_slot(m->nforeign, 0);
	}
	/* Before any page is written there: the reaper deletes below it. */
	reaper_raise(&m->reaper, reach);
	return (int)got;
}

/* A parent's slots are not ours to free. */
static void mc_free_slots(struct backend *b, const uint64_t *slots, unsigned n)
{
	struct mc *m = to_mc(b);

	for (unsigned i = 0; i < n; i++) {
		uint64_t slot = alloc_slot(m, slots[i]);

		if (slot_own(m, slots[i]))
			swap_alloc_free(m->alloc, &slot, 1, NULL);
	}
}

/* The slots are freed once their deletes are answered (take_deletes). A
 * parent's pages are left where they are. */
static int mc_discard(struct backend *b, const uint64_t *slots, unsigned n)
{
	struct mc *m = to_mc(b);
	int ret = 0;

	pthread_mutex_lock(&m->del_lock);
	if (m->ndel + n > m->del_cap) {
		size_t cap = m->del_cap ? m->del_cap : 1024;
		uint64_t *d;

		while (cap < m->ndel + n)
			cap *= 2;
		d = realloc(m->del, cap * sizeof(*d));
		if (!d) {
			ret = -ENOMEM;     /* the slots stay allocated */
			goto out;
		}
		m->del = d;
		m->del_cap = cap;
	}
	for (unsigned i = 0; i < n; i++)
		if (slot_own(m, slots[i]))
			m->del[m->ndel++] = slots[i];
	atomic_store_explicit(&m->ndel_hint, m->ndel, memory_order_relaxed);
out:
	pthread_mutex_unlock(&m->del_lock);
	return ret;
}

/* Send the deletes still pending through a queue of our own: the pages
 * of a closed backend must not stay on the servers. */
static void drain_deletes(struct mc *m)
{
	struct backend_queue *bq;
	struct mc_queue *q;
	uint64_t deadline = now_ms() + 2ull * m->timeout_ms;

	if (!m->ndel || mc_queue_open(&m->base, DEL_BATCH, &bq) < 0)
		return;
	q = to_queue(bq);
	while ((m->ndel || q->dels) && now_ms() < deadline) {
		struct __kernel_timespec ts = { 0, 50 * 1000000L };
		struct io_uring_cqe *cqe;

		flush(q);
		io_uring_submit_and_wait_timeout(&q->u.ring, &cqe, 1, &ts, NULL);
		harvest(q, NULL, 0);
	}
	mc_queue_close(bq);
}

static void mc_close(struct backend *b)
{
	struct mc *m = to_mc(b);

	if (m->alloc) {
		struct memcached_stats st;

		drain_deletes(m);
		memcached_get_stats(b, &st);
		/* Nothing of ours is left on the servers: nothing for the
		 * reaper to delete after us. */
		reaper_detach(&m->reaper, !st.slots_used);
		upg_log(st.conn_lost || st.full || st.delete_leaks ? UPG_LOG_INFO : UPG_LOG_DEBUG,
			LOG_PREFIX,
			"%llu gets (%llu misses, %llu retried elsewhere), %llu sets (%llu refused "
			"full), %llu deletes (%llu failed), %llu sends; %llu connections lost "
			"(%llu timed out), %llu reconnected",
			(unsigned long long)st.gets, (unsigned long long)st.misses,
			(unsigned long long)st.fallbacks, (unsigned long long)st.sets,
			(unsigned long long)st.full, (unsigned long long)st.deletes,
			(unsigned long long)st.delete_leaks, (unsigned long long)st.sends,
			(unsigned long long)st.conn_lost, (unsigned long long)st.timeouts,
			(unsigned long long)st.reconnects);
	}
	swap_alloc_destroy(m->alloc);
	pthread_mutex_destroy(&m->del_lock);
	free(m->del);
	free(m->servers);
	free(m->ring);
	free(m);
}

static const struct backend_ops memcached_ops = {
	.name = "memcached",
	.close = mc_close,
	.queue_open = mc_queue_open,
	.queue_close = mc_queue_close,
	.queue_fd = mc_queue_fd,
	.alloc_slots = mc_alloc_slots,
	.free_slots = mc_free_slots,
	.queue_read = mc_queue_read,
	.queue_write = mc_queue_write,
	.submit = mc_submit,
	.reap = mc_reap,
	.discard = mc_discard,
};

/* ------------------------------------------------------------------------
 * Opening: parse, resolve, probe.
 */

/* host:port or [v6]:port into s. */
static int resolve(struct mc_server *s)
{
	char host[128], *port;
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *ai;
	int ret;

	snprintf(host, sizeof(host), "%s", s->name);
	port = strrchr(host, ':');
	if (!port || port == host || !port[1])
		return -EINVAL;
	*port++ = 0;
	if (host[0] == '[' && port[-2] == ']') {
		port[-2] = 0;
		memmove(host, host + 1, strlen(host));
	}
	ret = getaddrinfo(host, port, &hints, &ai);
	if (ret)
		return ret == EAI_SYSTEM ? -errno : -EHOSTUNREACH;
	memcpy(&s->addr, ai->ai_addr, ai->ai_addrlen);
	s->alen = ai->ai_addrlen;
	freeaddrinfo(ai);
	return 0;
}

static int wait_fd(int fd, short events, uint64_t deadline)
{
	struct pollfd pfd = { .fd = fd, .events = events };
	uint64_t now = now_ms();
	int ret;

	if (now >= deadline)
		return -ETIMEDOUT;
	ret = poll(&pfd, 1, (int)(deadline - now));
	if (ret < 0)
		return -errno;
	return ret ? 0 : -ETIMEDOUT;
}

/* Connect to s and ask its memory size ("stats"): the server is there and
 * speaks memcached. */
static int probe(struct mc_server *s, unsigned timeout_ms)
{
	static const char req[] = "stats\r\n";
	uint64_t deadline = now_ms() + timeout_ms;
	char buf[8192];
	size_t len = 0;
	socklen_t elen = sizeof(int);
	int fd, err = 0, ret;
	char *p;

	fd = socket(s->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&s->addr, s->alen) && errno != EINPROGRESS) {
		ret = -errno;
		goto out;
	}
	ret = wait_fd(fd, POLLOUT, deadline);
	if (ret < 0)
		goto out;
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) || err) {
		ret = err ? -err : -errno;
		goto out;
	}
	if (send(fd, req, sizeof(req) - 1, MSG_NOSIGNAL) != (ssize_t)sizeof(req) - 1) {
		ret = -EIO;
		goto out;
	}
	for (;;) {
		ssize_t n;

		ret = wait_fd(fd, POLLIN, deadline);
		if (ret < 0)
			goto out;
		n = recv(fd, buf + len, sizeof(buf) - 1 - len, 0);
		if (n <= 0) {
			ret = n ? -errno : -ECONNRESET;
			goto out;
		}
		len += (size_t)n;
		buf[len] = 0;
		if (strstr(buf, "END\r\n"))
			break;
		if (len == sizeof(buf) - 1) {
			ret = -EPROTO;
			goto out;
		}
	}
	p = strstr(buf, "STAT limit_maxbytes ");
	if (!p) {
		ret = -EPROTO;
		goto out;
	}
	s->maxbytes = strtoull(p + 20, NULL, 10);
	ret = 0;
out:
	close(fd);
	return ret;
}

static int parse_servers(struct mc *m, const char *list)
{
	const char *p = list;
	unsigned n = 0;

	while (*p) {
		size_t len = strcspn(p, ",");

		if (!len || len >= sizeof(m->servers[0].name) || n == MC_MAX_SERVERS)
			return -EINVAL;
		n++;
		p += len + (p[len] == ',');
	}
	if (!n)
		return -EINVAL;
	m->servers = calloc(n, sizeof(*m->servers));
	if (!m->servers)
		return -ENOMEM;
	for (p = list; *p;) {
		size_t len = strcspn(p, ",");

		memcpy(m->servers[m->nservers++].name, p, len);
		p += len + (p[len] == ',');
	}
	return 0;
}

static int start_reaper(struct mc *m)
{
	struct reaper_server rs[MC_MAX_SERVERS];

	for (unsigned i = 0; i < m->nservers; i++)
		rs[i] = (struct reaper_server){ m->servers[i].addr, m->servers[i].alen };
	return reaper_start(&m->reaper, rs, m->nservers, m->ids[m->nforeign], m->timeout_ms);
}

int memcached_open(const struct memcached_config *cfg, struct backend **out)
{
	const struct mc *parent = cfg && cfg->inherit ? to_mc(cfg->inherit) : NULL;
	uint64_t bytes = 0, pages, clusters;
	uint32_t nclusters;
	struct mc *m;
	int prio = 0, ret;

	if (!cfg || !cfg->servers || !cfg->page_size || cfg->page_size % 4096 ||
	    cfg->replicas > 2 ||
	    (parent && (parent->nforeign + 1 >= SWAP_MAX_FILES ||
			parent->base.page_size != cfg->page_size)))
		return -EINVAL;
	m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->base.ops = &memcached_ops;
	m->base.page_size = cfg->page_size;
	m->replicas = cfg->replicas ? cfg->replicas : 1;
	m->timeout_ms = cfg->timeout_ms ? cfg->timeout_ms : 1000;
	pthread_mutex_init(&m->del_lock, NULL);
	ret = parse_servers(m, cfg->servers);
	if (ret < 0) {
		pr_err("bad server list \"%s\" (want host:port,host:port,...)", cfg->servers);
		goto fail;
	}
	if (m->replicas > m->nservers) {
		pr_err("%u replicas need as many servers, %u given", m->replicas, m->nservers);
		ret = -EINVAL;
		goto fail;
	}
	for (unsigned i = 0; i < m->nservers; i++) {
		struct mc_server *s = &m->servers[i];

		ret = resolve(s);
		if (ret == -EINVAL) {
			pr_err("bad server \"%s\" (want host:port)", s->name);
			goto fail;
		}
		if (!ret)
			ret = probe(s, m->timeout_ms);
		if (ret < 0) {
			pr_perr(ret, "server %s cannot be reached", s->name);
			goto fail;
		}
		bytes += s->maxbytes;
	}
	m->ring = calloc((size_t)m->nservers * VNODES, sizeof(*m->ring));
	if (!m->ring) {
		ret = -ENOMEM;
		goto fail;
	}
	for (unsigned i = 0; i < m->nservers; i++)
		for (unsigned v = 0; v < VNODES; v++)
			m->ring[i * VNODES + v] = (struct ring_point){
				hash_str(m->servers[i].name, v), i };
	qsort(m->ring, (size_t)m->nservers * VNODES, sizeof(*m->ring), cmp_point);
	if (parent) {
		m->nforeign = parent->nforeign + 1;
		memcpy(m->ids, parent->ids, m->nforeign * sizeof(m->ids[0]));
	}
	if (getrandom(&m->ids[m->nforeign], sizeof(m->ids[0]), 0) != sizeof(m->ids[0]))
		m->ids[m->nforeign] = mix64((uint64_t)getpid() << 32 ^ now_ms());
	/* Slots for what the servers hold; a server that fills up before
	 * the others (the hash is not perfectly even) answers -ENOSPC. */
	pages = bytes / (cfg->page_size + ITEM_OVERHEAD) / m->replicas;
	clusters = pages / SWAP_CLUSTER_SLOTS;
	if (clusters > SWAP_MAX_FILE_PAGES / SWAP_CLUSTER_SLOTS)
		clusters = SWAP_MAX_FILE_PAGES / SWAP_CLUSTER_SLOTS;
	nclusters = clusters ? (uint32_t)clusters : 1;
	ret = swap_alloc_create(1, &nclusters, &prio, &m->alloc);
	if (ret < 0)
		goto fail;
	ret = start_reaper(m);
	if (ret < 0)
		pr_perr(ret, "cannot start the reaper: the pages of a process that ends without "
			"closing its context stay on the servers");
	*out = &m->base;
	return 0;
fail:
	mc_close(&m->base);
	return ret;
}

unsigned memcached_nsources(struct backend *b)
{
	return to_mc(b)->nforeign + 1;
}

void memcached_get_stats(struct backend *b, struct memcached_stats *st)
{
	struct mc *m = to_mc(b);
	struct swap_alloc_usage u;

#define LOAD(x) atomic_load_explicit(&m->x, memory_order_relaxed)
	swap_alloc_get_usage(m->alloc, &u);
	*st = (struct memcached_stats){
		.slots_total = u.slots_total, .slots_used = u.slots_used,
		.gets = LOAD(gets), .sets = LOAD(sets), .deletes = LOAD(deletes),
		.misses = LOAD(misses), .fallbacks = LOAD(fallbacks), .full = LOAD(full),
		.timeouts = LOAD(timeouts), .conn_lost = LOAD(conn_lost),
		.reconnects = LOAD(reconnects), .delete_leaks = LOAD(delete_leaks),
		.sends = LOAD(sends), .servers = m->nservers,
	};
#undef LOAD
	for (unsigned i = 0; i < m->nservers; i++)
		st->servers_down += atomic_load(&m->servers[i].down);
}
