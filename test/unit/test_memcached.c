/*
 * test_memcached.c - the remote backend on its own, against memcached
 * servers this test starts on loopback: round trips, checksums, pipelining,
 * timeouts, full servers, deletes, replicas and unreachable servers.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "mcserver.h"
#include "memcached.h"
#include "pattern.h"
#include "swap_alloc.h"

#define PS 4096u
#define NSRV 3

static struct mcserver srv[NSRV];
static char list[256];

static void teardown(void)
{
	for (unsigned i = 0; i < NSRV; i++)
		mcserver_kill(&srv[i]);   /* stopped ones too */
}

TestSuite(memcached, .fini = teardown, .timeout = 60);

/* Start n servers of mb MiB and open a backend over them. */
static struct backend *start(unsigned n, unsigned mb, unsigned replicas, unsigned timeout_ms)
{
	struct memcached_config cfg = { .page_size = PS, .servers = list, .replicas = replicas,
					.timeout_ms = timeout_ms };
	struct backend *b;
	int ret;

	if (!mcserver_available())
		cr_skip_test("memcached is not installed (tools/dev.sh installs it)");
	for (unsigned i = 0; i < n; i++)
		cr_assert_eq(mcserver_start(&srv[i], NULL, mb, NULL), 0);
	mcserver_list(srv, n, list, sizeof(list));
	ret = memcached_open(&cfg, &b);
	cr_assert_eq(ret, 0, "memcached_open: %s", strerror(-ret));
	return b;
}

struct ios {
	struct backend_io *io;
	uint8_t *bufs;
	unsigned n;
};

static void ios_init(struct ios *v, unsigned n)
{
	v->n = n;
	v->io = calloc(n, sizeof(*v->io));
	v->bufs = aligned_alloc(4096, (size_t)n * PS);
	cr_assert(v->io && v->bufs);
	for (unsigned i = 0; i < n; i++)
		v->io[i].buf = v->bufs + (size_t)i * PS;
}

static void ios_fini(struct ios *v)
{
	free(v->io);
	free(v->bufs);
}

static void close_all(struct backend *b, struct backend_queue *q, struct ios *v)
{
	ios_fini(v);
	backend_queue_close(q);
	backend_close(b);
}

/* Read one page; its result. */
static int read_one(struct backend_queue *q, struct backend_io *io)
{
	struct backend_io *done;

	cr_assert_eq(backend_queue_read(q, io), 0);
	backend_submit(q);
	cr_assert_eq(backend_reap(q, &done, 1, 1), 1);
	cr_assert_eq(done, io);
	return io->result;
}

/* Queue and submit v's I/Os, then reap them all; returns how many
 * succeeded. */
static unsigned run(struct backend_queue *q, struct ios *v, bool write)
{
	struct backend_io *done[64];
	unsigned ok = 0, got = 0;

	for (unsigned i = 0; i < v->n; i++) {
		v->io[i].result = 1;
		cr_assert_eq(write ? backend_queue_write(q, &v->io[i]) : backend_queue_read(q, &v->io[i]), 0);
	}
	cr_assert_eq(backend_submit(q), (int)v->n);
	while (got < v->n) {
		int ret = backend_reap(q, done, 64, 1);

		cr_assert_gt(ret, 0, "reap: %d", ret);
		for (int i = 0; i < ret; i++)
			ok += done[i]->result == (int)PS;
		got += (unsigned)ret;
	}
	return ok;
}

/* A slot for each of v's I/Os. */
static void alloc_all(struct backend *b, struct ios *v)
{
	for (unsigned i = 0; i < v->n; i++)
		cr_assert_eq(backend_alloc_slots(b, 1, &v->io[i].slot), 1);
}

/* Write n pages (slots from the backend), read them back, check them. */
static void round_trip(struct backend *b, struct backend_queue *q, unsigned n, uint64_t gen)
{
	struct ios w, r;
	uint64_t *slots = calloc(n, sizeof(*slots));
	unsigned got = 0;

	ios_init(&w, n);
	ios_init(&r, n);
	while (got < n) {
		int ret = backend_alloc_slots(b, n - got, slots + got);

		cr_assert_gt(ret, 0);
		got += (unsigned)ret;
	}
	for (unsigned i = 0; i < n; i++) {
		w.io[i].slot = r.io[i].slot = slots[i];
		pattern_fill(w.io[i].buf, PS, gen, slots[i]);
	}
	cr_assert_eq(run(q, &w, true), n);
	for (unsigned i = 0; i < n; i++)
		r.io[i].crc = w.io[i].crc;
	cr_assert_eq(run(q, &r, false), n);
	for (unsigned i = 0; i < n; i++)
		cr_assert_eq(pattern_check(r.io[i].buf, PS, gen, slots[i]), -1, "page %u", i);
	ios_fini(&w);
	ios_fini(&r);
	free(slots);
}

Test(memcached, round_trip)
{
	struct backend *b = start(1, 16, 1, 0);
	struct backend_queue *q;

	cr_assert_eq(backend_queue_open(b, 64, &q), 0);
	round_trip(b, q, 64, 1);
	backend_queue_close(q);
	backend_close(b);
}

Test(memcached, crc_mismatch_is_ebadmsg)
{
	struct backend *b = start(1, 16, 1, 0);
	struct backend_queue *q;
	struct ios v;

	ios_init(&v, 1);
	cr_assert_eq(backend_queue_open(b, 8, &q), 0);
	cr_assert_eq(backend_alloc_slots(b, 1, &v.io[0].slot), 1);
	pattern_fill(v.io[0].buf, PS, 2, 0);
	cr_assert_eq(run(q, &v, true), 1);
	v.io[0].crc ^= 1;
	cr_assert_eq(read_one(q, &v.io[0]), -EBADMSG);
	close_all(b, q, &v);
}

/* 512 writes and 512 reads over three servers, each batch in a few
 * sendmsg calls rather than one per page. */
Test(memcached, pipelined_batch)
{
	struct backend *b = start(3, 16, 1, 0);
	struct backend_queue *q;
	struct memcached_stats st;

	cr_assert_eq(backend_queue_open(b, 512, &q), 0);
	round_trip(b, q, 512, 3);
	memcached_get_stats(b, &st);
	cr_assert_eq(st.sets, 512);
	cr_assert_eq(st.gets, 512);
	cr_assert_lt(st.sends, 64, "%llu sends for 1024 requests", (unsigned long long)st.sends);
	backend_queue_close(q);
	backend_close(b);
}

static uint64_t ms_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* A stopped server: requests fail with -ETIMEDOUT after the timeout, the
 * queue closes promptly, and once it runs again a later request works. */
Test(memcached, timeout_on_stopped_server)
{
	struct backend *b = start(1, 16, 1, 200);
	struct backend_queue *q;
	struct backend_io *done[8];
	struct memcached_stats st;
	struct ios v;
	uint64_t t0;
	unsigned got = 0;

	ios_init(&v, 8);
	cr_assert_eq(backend_queue_open(b, 8, &q), 0);
	round_trip(b, q, 8, 4);
	cr_assert_eq(mcserver_pause(&srv[0]), 0);
	for (unsigned i = 0; i < 8; i++) {
		v.io[i].slot = 1000 + i;
		cr_assert_eq(backend_queue_write(q, &v.io[i]), 0);
	}
	t0 = ms_now();
	backend_submit(q);
	while (got < 8) {
		int ret = backend_reap(q, done, 8, 1);

		cr_assert_gt(ret, 0);
		for (int i = 0; i < ret; i++)
			cr_assert_eq(done[i]->result, -ETIMEDOUT, "result %d", done[i]->result);
		got += (unsigned)ret;
	}
	cr_assert_geq(ms_now() - t0, 150);
	cr_assert_lt(ms_now() - t0, 2000);
	memcached_get_stats(b, &st);
	cr_assert_eq(st.timeouts, 1);
	cr_assert_eq(st.servers_down, 1);
	mcserver_resume(&srv[0]);
	/* Reconnected after the backoff. */
	usleep(100 * 1000);
	round_trip(b, q, 8, 5);
	memcached_get_stats(b, &st);
	cr_assert_eq(st.servers_down, 0);
	cr_assert_geq(st.reconnects, 1);

	/* Stopped again with requests in flight: closing does not hang. */
	cr_assert_eq(mcserver_pause(&srv[0]), 0);
	for (unsigned i = 0; i < 8; i++)
		cr_assert_eq(backend_queue_write(q, &v.io[i]), 0);
	backend_submit(q);
	t0 = ms_now();
	backend_queue_close(q);
	cr_assert_lt(ms_now() - t0, 500);
	mcserver_resume(&srv[0]);
	ios_fini(&v);
	backend_close(b);
}

/* memcached -M answers SERVER_ERROR out of memory when full: -ENOSPC. */
Test(memcached, full_server_is_enospc)
{
	struct backend *b = start(1, 4, 1, 0);
	struct backend_queue *q;
	struct memcached_stats st;
	struct ios v;
	unsigned ok;

	ios_init(&v, 256);
	cr_assert_eq(backend_queue_open(b, 256, &q), 0);
	for (unsigned i = 0; i < v.n; i++)
		pattern_fill(v.io[i].buf, PS, 6, i);
	/* 16 MiB into 4: slots chosen here, past the allocator's estimate. */
	for (unsigned round = 0, fails = 0; round < 16; round++, fails = 0) {
		for (unsigned i = 0; i < v.n; i++)
			v.io[i].slot = round * v.n + i;
		ok = run(q, &v, true);
		for (unsigned i = 0; i < v.n; i++) {
			if (v.io[i].result != (int)PS) {
				cr_assert_eq(v.io[i].result, -ENOSPC);
				fails++;
			}
		}
		cr_assert_eq(ok + fails, v.n);
	}
	memcached_get_stats(b, &st);
	cr_assert_gt(st.full, 0);
	close_all(b, q, &v);
}

/* A discarded page is deleted from its servers, and its slot comes free
 * once the delete was answered. */
Test(memcached, discard_deletes)
{
	struct backend *b = start(2, 16, 1, 0);
	struct backend_queue *q;
	struct memcached_stats st;
	struct ios v;

	ios_init(&v, 16);
	cr_assert_eq(backend_queue_open(b, 16, &q), 0);
	for (unsigned i = 0; i < 16; i++) {
		cr_assert_eq(backend_alloc_slots(b, 1, &v.io[i].slot), 1);
		pattern_fill(v.io[i].buf, PS, 7, i);
	}
	cr_assert_eq(run(q, &v, true), 16);
	memcached_get_stats(b, &st);
	cr_assert_eq(st.slots_used, 16);
	cr_assert_eq(backend_discard(b, &v.io[0].slot, 1), 0);
	/* Deletes go out with the next submit. */
	cr_assert_eq(read_one(q, &v.io[1]), (int)PS);
	for (int i = 0; i < 100; i++) {
		struct backend_io *none;

		memcached_get_stats(b, &st);
		if (st.slots_used == 15)
			break;
		backend_reap(q, &none, 1, 0);
		usleep(2000);
	}
	cr_assert_eq(st.slots_used, 15);
	cr_assert_eq(st.deletes, 2);    /* to both servers of its list */
	cr_assert_lt(read_one(q, &v.io[0]), 0);
	memcached_get_stats(b, &st);
	cr_assert_eq(st.misses, 2);
	close_all(b, q, &v);
}

/*
 * A forked child's backend (inherit) reads the parent's pages under the
 * parent's keys, takes its own slots after them, refuses to write the
 * parent's, and never deletes them: discarding them in the child leaves
 * them readable by both; its own discard as usual. A grandchild reads both.
 */
Test(memcached, inherit_reads_the_parent_never_deletes_its_keys)
{
	struct backend *parent = start(2, 16, 1, 0), *child, *grandchild;
	struct memcached_config cfg = { .page_size = PS, .servers = list, .inherit = parent };
	struct backend_queue *pq, *cq, *gq;
	struct memcached_stats st;
	struct ios pw, cw, r;

	ios_init(&pw, 16);
	ios_init(&cw, 16);
	ios_init(&r, 16);
	cr_assert_eq(backend_queue_open(parent, 16, &pq), 0);
	alloc_all(parent, &pw);
	for (unsigned i = 0; i < 16; i++)
		pattern_fill(pw.io[i].buf, PS, 5, i);
	cr_assert_eq(run(pq, &pw, true), 16);

	cr_assert_eq(memcached_open(&cfg, &child), 0);
	cr_assert_eq(memcached_nsources(child), 2);
	cr_assert_eq(backend_queue_open(child, 16, &cq), 0);
	for (unsigned i = 0; i < 16; i++)
		r.io[i] = (struct backend_io){ .slot = pw.io[i].slot, .crc = pw.io[i].crc,
					       .buf = r.bufs + (size_t)i * PS };
	cr_assert_eq(run(cq, &r, false), 16, "the child cannot read the parent's pages");
	for (unsigned i = 0; i < 16; i++)
		cr_assert_eq(pattern_check(r.io[i].buf, PS, 5, i), -1, "page %u", i);
	/* Its own slots come after the parent's; the parent's are not its to
	 * write. */
	alloc_all(child, &cw);
	for (unsigned i = 0; i < 16; i++) {
		cr_assert_eq(swap_slot_file(cw.io[i].slot), 1);
		pattern_fill(cw.io[i].buf, PS, 6, i);
	}
	cr_assert_eq(backend_queue_write(cq, &pw.io[0]), -EINVAL, "the child wrote a parent's key");
	cr_assert_eq(run(cq, &cw, true), 16);
	/* Discarding the parent's slots in the child deletes nothing. */
	for (unsigned i = 0; i < 16; i++)
		cr_assert_eq(backend_discard(child, &pw.io[i].slot, 1), 0);
	backend_free_slots(child, &pw.io[0].slot, 1);
	cr_assert_eq(run(cq, &r, false), 16, "the child's discard deleted the parent's pages");
	memcached_get_stats(child, &st);
	cr_assert_eq(st.deletes, 0);
	cr_assert_eq(st.slots_used, 16, "only its own slots count");
	cr_assert_eq(run(pq, &r, false), 16, "the parent lost its pages");

	/* A grandchild reads both generations. */
	cfg.inherit = child;
	cr_assert_eq(memcached_open(&cfg, &grandchild), 0);
	cr_assert_eq(memcached_nsources(grandchild), 3);
	cr_assert_eq(backend_queue_open(grandchild, 16, &gq), 0);
	cr_assert_eq(run(gq, &r, false), 16);
	for (unsigned i = 0; i < 16; i++)
		r.io[i] = (struct backend_io){ .slot = cw.io[i].slot, .crc = cw.io[i].crc,
					       .buf = r.bufs + (size_t)i * PS };
	cr_assert_eq(run(gq, &r, false), 16, "the grandchild cannot read the child's pages");
	for (unsigned i = 0; i < 16; i++)
		cr_assert_eq(pattern_check(r.io[i].buf, PS, 6, i), -1, "page %u", i);
	backend_queue_close(gq);
	backend_close(grandchild);

	/* The child's own slots discard as usual. */
	for (unsigned i = 0; i < 16; i++)
		cr_assert_eq(backend_discard(child, &cw.io[i].slot, 1), 0);
	for (int i = 0; i < 200; i++) {
		struct backend_io *none;

		memcached_get_stats(child, &st);
		if (st.slots_used == 0)
			break;
		backend_submit(cq);
		backend_reap(cq, &none, 1, 0);
		usleep(2000);
	}
	cr_assert_eq(st.slots_used, 0, "the child's discarded slots stayed used");
	ios_fini(&cw);
	ios_fini(&r);
	backend_queue_close(cq);
	backend_close(child);
	close_all(parent, pq, &pw);
}

/* Two replicas: with one server killed, every page still reads back. */
Test(memcached, replica_survives_a_kill)
{
	struct backend *b = start(3, 16, 2, 300);
	struct backend_queue *q;
	struct memcached_stats st;
	struct ios w;

	ios_init(&w, 128);
	cr_assert_eq(backend_queue_open(b, 128, &q), 0);
	alloc_all(b, &w);
	for (unsigned i = 0; i < w.n; i++)
		pattern_fill(w.io[i].buf, PS, 8, w.io[i].slot);
	cr_assert_eq(run(q, &w, true), w.n);
	mcserver_kill(&srv[1]);
	memset(w.bufs, 0, (size_t)w.n * PS);
	cr_assert_eq(run(q, &w, false), w.n);
	for (unsigned i = 0; i < w.n; i++)
		cr_assert_eq(pattern_check(w.io[i].buf, PS, 8, w.io[i].slot), -1);
	memcached_get_stats(b, &st);
	cr_assert_gt(st.fallbacks, 0);
	cr_assert_eq(st.servers_down, 1);
	close_all(b, q, &w);
}

/* One replica: a killed server's pages fail, the others' read back. */
Test(memcached, lost_server_fails_only_its_pages)
{
	struct backend *b = start(2, 16, 1, 300);
	struct backend_queue *q;
	struct ios w;
	unsigned ok;

	ios_init(&w, 128);
	cr_assert_eq(backend_queue_open(b, 128, &q), 0);
	alloc_all(b, &w);
	for (unsigned i = 0; i < w.n; i++)
		pattern_fill(w.io[i].buf, PS, 9, w.io[i].slot);
	cr_assert_eq(run(q, &w, true), w.n);
	mcserver_kill(&srv[0]);
	memset(w.bufs, 0, (size_t)w.n * PS);
	ok = run(q, &w, false);
	cr_assert(ok > 0 && ok < w.n, "%u of %u read back", ok, w.n);
	for (unsigned i = 0; i < w.n; i++) {
		if (w.io[i].result == (int)PS)
			cr_assert_eq(pattern_check(w.io[i].buf, PS, 9, w.io[i].slot), -1);
		else
			cr_assert_lt(w.io[i].result, 0);
	}
	close_all(b, q, &w);
}

Test(memcached, unreachable_server_at_open)
{
	struct memcached_config cfg = { .page_size = PS, .servers = list };
	struct backend *b;

	if (!mcserver_available())
		cr_skip_test("memcached is not installed");
	cr_assert_eq(mcserver_start(&srv[0], NULL, 8, NULL), 0);
	snprintf(list, sizeof(list), "%s,127.0.0.1:%d", srv[0].addr, mcserver_free_port(NULL));
	cr_assert_eq(memcached_open(&cfg, &b), -ECONNREFUSED);
	cfg.servers = "127.0.0.1";
	cr_assert_eq(memcached_open(&cfg, &b), -EINVAL);
	cfg.servers = srv[0].addr;
	cfg.replicas = 2;
	cr_assert_eq(memcached_open(&cfg, &b), -EINVAL);
}
