/*
 * test_remote.c - paging to memcached servers through the public API: a
 * working set four times the memory limit, every page verified, with
 * servers on loopback and, as separate hosts, in network namespaces of
 * the test's own (veth pairs); servers killed in the middle of a run, with
 * and without a replica; a full server; an unreachable one.
 */
#include <sys/wait.h>

#include "itest.h"
#include "mcserver.h"

#define LIMIT (16 * MiB)
#define WSET (4 * LIMIT)
#define MAXSRV 3

static struct mcserver srv[MAXSRV];
static char list[256];
static int netns_made;

static void stop_servers(void)
{
	char cmd[128];

	for (unsigned i = 0; i < MAXSRV; i++)
		mcserver_kill(&srv[i]);
	for (int i = 0; i < netns_made; i++) {
		snprintf(cmd, sizeof(cmd), "ip netns del upgt%d-%d 2>/dev/null", getpid(), i);
		if (system(cmd)) {
			/* Already gone. */
		}
	}
	netns_made = 0;
}

TestSuite(remote, .fini = stop_servers, .timeout = 120);

static void need_memcached(void)
{
	if (!mcserver_available())
		cr_skip_test("memcached is not installed (tools/dev.sh installs it)");
}

/* n loopback servers of mb MiB each. */
static void start_loopback(unsigned n, unsigned mb)
{
	need_memcached();
	for (unsigned i = 0; i < n; i++)
		cr_assert_eq(mcserver_start(&srv[i], NULL, mb, NULL), 0);
	mcserver_list(srv, n, list, sizeof(list));
}

/* n servers, each in a network namespace of its own reached through a veth
 * pair: host side 10.213.s.1, the server at 10.213.s.2, with s = base + i
 * and base from the pid, so that two test processes running at once use
 * subnets of their own. */
static void start_netns(unsigned n, unsigned mb)
{
	char cmd[512], ns[32], ip[32];
	int pid = getpid();
	unsigned base = (unsigned)pid % 80 * 3;

	cr_assert_leq(n, 3);

	need_memcached();
	for (unsigned i = 0; i < n; i++) {
		snprintf(ns, sizeof(ns), "upgt%d-%u", pid, i);
		snprintf(cmd, sizeof(cmd),
			 "ip netns add %s && ip link add uph%d%u type veth peer name upn%d%u netns %s "
			 "&& ip addr add 10.213.%u.1/24 dev uph%d%u && ip link set uph%d%u up "
			 "&& ip -n %s addr add 10.213.%u.2/24 dev upn%d%u && ip -n %s link set upn%d%u up "
			 "&& ip -n %s link set lo up",
			 ns, pid % 10000, i, pid % 10000, i, ns, base + i, pid % 10000, i, pid % 10000,
			 i, ns, base + i, pid % 10000, i, ns, pid % 10000, i, ns);
		if (system(cmd)) {
			if (!i)
				cr_skip_test("cannot make network namespaces with veth pairs (ip netns)");
			cr_assert_fail("ip netns set-up failed for server %u", i);
		}
		netns_made = (int)i + 1;
		snprintf(ip, sizeof(ip), "10.213.%u.2", base + i);
		cr_assert_eq(mcserver_start(&srv[i], ip, mb, ns), 0, "memcached in %s", ns);
	}
	mcserver_list(srv, n, list, sizeof(list));
}

static upg_ctx *remote_ctx(unsigned replicas)
{
	struct upg_config cfg;

	upg_config_init(&cfg);
	cfg.mem_limit = LIMIT;
	cfg.remote_servers = list;
	cfg.remote_replicas = replicas;
	cfg.remote_timeout_ms = 500;
	return ctx_new(&cfg);
}

static void fill(uint8_t *base, size_t ps, uint64_t pages, uint64_t gen)
{
	for (uint64_t p = 0; p < pages; p++)
		pattern_fill(base + p * ps, ps, gen, p);
}

/*
 * Read every page back: count pages that raise SIGBUS and pages with wrong
 * contents. At page kill_at (if below pages), kill server *victim first.
 */
static void read_back_killing(uint8_t *base, size_t ps, uint64_t pages, uint64_t gen,
		      uint64_t kill_at, struct mcserver *victim, uint64_t *sigbus, uint64_t *wrong)
{
	struct sigaction old;

	sigbus_catch(&old);
	for (uint64_t p = 0; p < pages; p++) {
		int v;

		if (p == kill_at)
			mcserver_kill(victim);
		v = page_verify(base + p * ps, ps, gen, p);
		*sigbus += v < 0;
		*wrong += v > 0;
	}
	sigbus_restore(&old);
}

/* A context paging to the servers in list, and a region of the working
 * set filled with generation gen. */
struct run {
	upg_ctx *ctx;
	upg_region *r;
	uint8_t *base;
	size_t ps;
	uint64_t pages;
	uint64_t sigbus, wrong;
};

static void run_start(struct run *t, unsigned replicas, uint64_t gen)
{
	t->ps = itest_page();
	t->pages = WSET / t->ps;
	t->sigbus = t->wrong = 0;
	t->ctx = remote_ctx(replicas);
	t->r = region_new(t->ctx, WSET, 0);
	t->base = upg_region_addr(t->r);
	fill(t->base, t->ps, t->pages, gen);
}

static void run_end(struct run *t)
{
	upg_region_destroy(t->r);
	upg_ctx_destroy(t->ctx);
}

/* Write the working set, read it back twice (in order, then again after
 * it was paged out once more): every page right. */
static void round_trips(unsigned replicas)
{
	struct run t;
	struct upg_stats st;

	run_start(&t, replicas, 1);
	for (int pass = 0; pass < 2; pass++)
		read_back_killing(t.base, t.ps, t.pages, 1, UINT64_MAX, NULL, &t.sigbus, &t.wrong);
	st = stats_of(t.ctx);
	cr_assert_eq(t.wrong, 0, "%llu pages wrong", (unsigned long long)t.wrong);
	cr_assert_eq(t.sigbus, 0);
	cr_assert_geq(st.swap_outs, t.pages / 2, "only %llu pages out",
		      (unsigned long long)st.swap_outs);
	cr_assert_gt(st.swap_ins, 0);
	cr_assert_eq(st.read_errors + st.write_errors, 0);
	run_end(&t);
}

/* Whether every page holds generation gen. */
static bool all_right(const uint8_t *base, size_t ps, uint64_t pages, uint64_t gen)
{
	for (uint64_t p = 0; p < pages; p++)
		if (page_verify(base + p * ps, ps, gen, p))
			return false;
	return true;
}

/*
 * The child of a fork pages to the same servers under keys of its own, and
 * reads what the parent had out under the parent's keys: nothing is read
 * back at the fork. The child reads its copy only once the parent has
 * rewritten the whole working set (so every one of the parent's old pages
 * died on its side): the parent must have kept them on the servers. Each
 * side then rewrites everything and reads back only its own data; the
 * parent deletes the kept pages once the child is gone.
 */
Test(remote, fork_child_pages_to_the_same_servers)
{
	struct upg_stats st, before;
	int go[2], status;
	struct run t;
	char c;
	pid_t pid;

	skip_forked_threads_under_tsan();
	start_loopback(2, 256);
	run_start(&t, 0, 1);
	cr_assert_eq(pipe(go), 0);
	cr_assert_eq(upg_ctx_fork_prepare(t.ctx), 0);
	before = stats_of(t.ctx);
	cr_assert_leq(before.resident_bytes, LIMIT, "the fork brought pages back: %llu bytes in",
		      (unsigned long long)before.resident_bytes);
	pid = fork();
	cr_assert_neq(pid, -1);
	if (pid == 0) {
		/* No cr_assert in the child: its exit status says. */
		close(go[1]);
		if (upg_ctx_fork_child(t.ctx) < 0)
			_exit(10);
		if (read(go[0], &c, 1) != 1)
			_exit(14);
		if (!all_right(t.base, t.ps, t.pages, 1))
			_exit(11);
		fill(t.base, t.ps, t.pages, 2);
		if (!all_right(t.base, t.ps, t.pages, 2))
			_exit(12);
		st = stats_of(t.ctx);
		if (st.remote_servers != 2 || st.swap_outs < t.pages / 2 || !st.swap_ins ||
		    st.read_errors)
			_exit(13);
		run_end(&t);
		_exit(0);
	}
	close(go[0]);
	upg_ctx_fork_parent(t.ctx);
	st = stats_of(t.ctx);
	cr_assert_eq(st.swap_ins, before.swap_ins, "the fork read %llu pages back",
		     (unsigned long long)(st.swap_ins - before.swap_ins));
	fill(t.base, t.ps, t.pages, 3);
	cr_assert(all_right(t.base, t.ps, t.pages, 3), "the parent lost its writes");
	st = stats_of(t.ctx);
	cr_assert_gt(st.swap_kept_bytes, 0, "the parent's dead pages were not kept for the child");
	cr_assert_eq(write(go[1], "g", 1), 1);
	close(go[1]);
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the child failed: status %#x",
		  status);
	cr_assert(all_right(t.base, t.ps, t.pages, 3), "the child's pages showed in the parent");
	/* The kept pages go once the reclaimer sees the child gone. */
	stats_wait(t.ctx, st, st.swap_kept_bytes == 0, 10000);
	run_end(&t);
}

/* Items on the first n servers. */
static long items_on(unsigned n)
{
	long sum = 0;

	for (unsigned i = 0; i < n; i++) {
		long k = mcserver_items(&srv[i]);

		cr_assert_geq(k, 0, "no stats from server %u", i);
		sum += k;
	}
	return sum;
}

/*
 * A child that leaves by _exit() (as redis' BGSAVE child does: no
 * destructor, no context destroyed) with pages out under its own keys:
 * once it is gone its reaper deletes them, and the servers hold the
 * parent's pages only.
 */
Test(remote, fork_child_gone_by_exit_leaves_nothing_on_the_servers)
{
	struct upg_stats st;
	struct run t;
	int status;
	long items = -1;
	pid_t pid;

	skip_forked_threads_under_tsan();
	start_loopback(2, 256);
	run_start(&t, 0, 1);
	cr_assert_eq(upg_ctx_fork_prepare(t.ctx), 0);
	pid = fork();
	cr_assert_neq(pid, -1);
	if (pid == 0) {
		if (upg_ctx_fork_child(t.ctx) < 0)
			_exit(10);
		fill(t.base, t.ps, t.pages, 2);
		if (!all_right(t.base, t.ps, t.pages, 2))
			_exit(12);
		st = stats_of(t.ctx);
		_exit(st.swap_used_bytes >= LIMIT ? 0 : 13);   /* pages left out */
	}
	upg_ctx_fork_parent(t.ctx);
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the child failed: status %#x",
		  status);
	for (int i = 0; i < 1000; i++) {
		st = stats_of(t.ctx);
		items = items_on(2);
		if (!st.swap_kept_bytes && items == (long)(st.swap_used_bytes / t.ps))
			break;
		itest_sleep_ms(10);
	}
	cr_assert_eq(items, (long)(st.swap_used_bytes / t.ps),
		     "%ld items on the servers, the parent has %llu pages out", items,
		     (unsigned long long)(st.swap_used_bytes / t.ps));
	cr_assert(all_right(t.base, t.ps, t.pages, 1), "the parent lost pages");
	run_end(&t);
}

/* Wait until the first n servers hold no item; the count left. */
static long wait_empty(unsigned n)
{
	long items = items_on(n);

	for (int i = 0; i < 1000 && items; i++) {
		itest_sleep_ms(10);
		items = items_on(n);
	}
	return items;
}

/*
 * A process that pages to the servers and ends without destroying its
 * context (what every program under upager run does), by _exit() or
 * killed: once it is gone, its reaper deletes its pages from the servers.
 */
static void gone_without_destroy(bool killed)
{
	int ready[2], status;
	char c;
	pid_t pid;

	skip_forked_threads_under_tsan();
	start_loopback(2, 256);
	cr_assert_eq(pipe(ready), 0);
	pid = fork();
	cr_assert_neq(pid, -1);
	if (pid == 0) {
		struct run t;

		close(ready[0]);
		run_start(&t, 0, 1);
		if (!all_right(t.base, t.ps, t.pages, 1) || write(ready[1], "r", 1) != 1)
			_exit(11);
		if (killed)
			pause();
		_exit(0);
	}
	close(ready[1]);
	cr_assert_eq(read(ready[0], &c, 1), 1, "the process did not get going");
	close(ready[0]);
	cr_assert_gt(items_on(2), WSET / 2 / itest_page(), "the process had no pages out");
	if (killed)
		kill(pid, SIGKILL);
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(killed ? WIFSIGNALED(status) : WIFEXITED(status) && !WEXITSTATUS(status),
		  "status %#x", status);
	cr_assert_eq(wait_empty(2), 0, "pages left on the servers");
}

Test(remote, pages_go_when_the_process_exits_without_destroy)
{
	gone_without_destroy(false);
}

Test(remote, pages_go_when_the_process_is_killed)
{
	gone_without_destroy(true);
}

Test(remote, one_loopback_server)
{
	start_loopback(1, 256);
	round_trips(1);
}

Test(remote, three_loopback_servers)
{
	start_loopback(3, 128);
	round_trips(1);
}

Test(remote, three_netns_hosts_replicated)
{
	start_netns(3, 128);
	round_trips(2);
}

/* Two replicas on three hosts, one host's server killed halfway through
 * reading the working set back: no page lost, nothing hangs, and paging
 * goes on (a second pass pages everything out and in again). */
Test(remote, replica_survives_a_killed_server)
{
	struct run t;
	struct upg_stats st;

	start_netns(3, 128);
	run_start(&t, 2, 2);
	read_back_killing(t.base, t.ps, t.pages, 2, t.pages / 2, &srv[1], &t.sigbus, &t.wrong);
	cr_assert_eq(t.wrong, 0);
	cr_assert_eq(t.sigbus, 0, "%llu pages lost", (unsigned long long)t.sigbus);
	fill(t.base, t.ps, t.pages, 3);
	read_back_killing(t.base, t.ps, t.pages, 3, UINT64_MAX, NULL, &t.sigbus, &t.wrong);
	st = stats_of(t.ctx);
	cr_assert_eq(t.wrong, 0);
	cr_assert_eq(t.sigbus, 0);
	cr_assert_eq(st.poisoned, 0);
	/* Reported: the loss, the server still down, the reads it sent to
	 * the replica. */
	cr_assert_eq(st.remote_servers, 3);
	cr_assert_eq(st.remote_servers_down, 1, "%u servers down", st.remote_servers_down);
	cr_assert_geq(st.remote_conn_lost, 1);
	cr_assert_gt(st.remote_fallbacks, 0, "no read went to the replica");
	run_end(&t);
}

/* Two replicas, and one host drops off the network halfway through (its
 * link goes down: no reset, no answer, the requests waiting on it time
 * out): no page lost, and a pass over the pages takes a few timeouts longer
 * at most. */
Test(remote, replica_survives_a_silent_host)
{
	struct run t;
	struct upg_stats st;
	char cmd[128];
	uint64_t t0, half;

	start_netns(3, 128);
	run_start(&t, 2, 7);
	snprintf(cmd, sizeof(cmd), "ip link set dev uph%d%u down", getpid() % 10000, 2u);
	t0 = itest_now_ns();
	read_back_killing(t.base, t.ps, t.pages / 2, 7, UINT64_MAX, NULL, &t.sigbus, &t.wrong);
	half = itest_now_ns() - t0;
	cr_assert_eq(system(cmd), 0);
	t0 = itest_now_ns();
	read_back_killing(t.base, t.ps, t.pages, 7, UINT64_MAX, NULL, &t.sigbus, &t.wrong);
	t0 = itest_now_ns() - t0;
	st = stats_of(t.ctx);
	cr_log_info("half the pages read back in %.2f s, all of them with the host gone in %.2f s",
		    (double)half / 1e9, (double)t0 / 1e9);
	cr_assert_eq(t.wrong, 0);
	cr_assert_eq(t.sigbus, 0, "%llu pages lost", (unsigned long long)t.sigbus);
	cr_assert_eq(st.poisoned, 0);
	/* A host that still answers handshakes but nothing else is not taken
	 * back at each reconnection (a timeout each time): regression. */
	cr_assert_lt(t0, 4 * half + itest_scaled_ms(2500) * 1000000ull);
	run_end(&t);
}

/* No replica: the killed server's pages are poisoned (SIGBUS), the others
 * read back right, and the context goes on paging. */
Test(remote, lost_server_poisons_only_its_pages)
{
	struct run t;
	struct upg_stats st;

	start_loopback(2, 128);
	run_start(&t, 1, 4);
	read_back_killing(t.base, t.ps, t.pages, 4, 0, &srv[0], &t.sigbus, &t.wrong);
	st = stats_of(t.ctx);
	cr_log_info("%llu of %llu pages poisoned", (unsigned long long)t.sigbus,
		    (unsigned long long)t.pages);
	cr_assert_eq(t.wrong, 0, "%llu pages wrong", (unsigned long long)t.wrong);
	cr_assert_lt(t.sigbus, t.pages * 3 / 4, "more than the lost server's share");
	/* Every poisoned page raised SIGBUS, once, and no other page did.
	 * (Regression: a duplicate fault message for a page just poisoned
	 * used to send the thread a second, stray SIGBUS.) */
	cr_assert_gt(st.poisoned, 0);
	cr_assert_geq(st.remote_conn_lost, 1, "the lost server is not counted");
	cr_assert_eq(t.sigbus, st.poisoned, "%llu poisoned, %llu SIGBUS",
		      (unsigned long long)st.poisoned, (unsigned long long)t.sigbus);
	cr_assert_geq(st.read_errors, st.poisoned);
	/* Paging goes on: the surviving server takes every page of a new
	 * region (a poisoned page raises SIGBUS even on a write). */
	upg_region_destroy(t.r);
	t.r = region_new(t.ctx, WSET, 0);
	t.base = upg_region_addr(t.r);
	fill(t.base, t.ps, t.pages, 5);
	t.sigbus = 0;
	read_back_killing(t.base, t.ps, t.pages, 5, UINT64_MAX, NULL, &t.sigbus, &t.wrong);
	cr_assert_eq(t.wrong + t.sigbus, 0);
	run_end(&t);
}

/* A server too small for what is paged out: writes it refuses leave their
 * pages in memory (beyond the limit); nothing is lost. */
Test(remote, full_server_keeps_pages_resident)
{
	struct run t;
	struct upg_stats st;

	start_loopback(1, 8);
	run_start(&t, 1, 6);
	read_back_killing(t.base, t.ps, t.pages, 6, UINT64_MAX, NULL, &t.sigbus, &t.wrong);
	st = stats_of(t.ctx);
	cr_assert_eq(t.wrong + t.sigbus, 0);
	cr_assert_gt(st.write_errors, 0, "the server never refused a write");
	cr_assert_gt(st.resident_bytes + st.cooling_bytes, LIMIT);
	run_end(&t);
}

Test(remote, unreachable_server_at_start)
{
	struct upg_config cfg;
	upg_ctx *ctx = NULL;

	start_loopback(1, 8);
	snprintf(list, sizeof(list), "%s,127.0.0.1:%d", srv[0].addr, mcserver_free_port(NULL));
	upg_config_init(&cfg);
	cfg.mem_limit = LIMIT;
	cfg.remote_servers = list;
	cr_assert_eq(upg_ctx_create(&cfg, &ctx), -ECONNREFUSED);
	cr_assert_null(ctx);
	/* Swap files and servers together are not supported. */
	cfg.remote_servers = srv[0].addr;
	cfg.nswap_files = 1;
	cr_assert_eq(upg_ctx_create(&cfg, &ctx), -EINVAL);
}
