/*
 * test_faulty.c - the fault-injecting backend over the swap-file backend:
 * each kind of rule, rule changes at run time, and pass-through otherwise.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "faulty.h"
#include "pattern.h"
#include "swapfile.h"

#define PS 4096u
#define N 32u

static struct backend *b;
static struct backend_queue *q;
static uint64_t slots[N];
static uint32_t crcs[N];
static char *buf;

/* A faulty backend over a fresh swap file in /tmp, N slots written with
 * pages 1/i; no rules yet. */
static void setup(void)
{
	struct swapfile_spec sp = { .path = "/tmp", .size = 4 * PS * SWAP_CLUSTER_SLOTS };
	struct swapfile_config cfg = { .page_size = PS, .count = 1, .files = &sp };
	struct backend *inner;
	struct backend_io io[N], *done[N];

	cr_assert_eq(swapfile_open(&cfg, &inner), 0);
	cr_assert_eq(faulty_open(inner, NULL, 0, &b), 0);
	cr_assert_eq(b->page_size, PS);
	cr_assert_eq(backend_queue_open(b, N, &q), 0);
	cr_assert_eq(backend_alloc_slots(b, N, slots), (int)N);
	buf = aligned_alloc(4096, N * PS);
	for (unsigned i = 0; i < N; i++) {
		pattern_fill(buf + i * PS, PS, 1, i);
		io[i] = (struct backend_io){ .slot = slots[i], .buf = buf + i * PS };
		cr_assert_eq(backend_queue_write(q, &io[i]), 0);
	}
	cr_assert_eq(backend_reap(q, done, N, N), (int)N);
	for (unsigned i = 0; i < N; i++) {
		cr_assert_eq(io[i].result, (int)PS);
		crcs[i] = io[i].crc;
	}
}

static void teardown(void)
{
	backend_queue_close(q);
	backend_close(b);
	free(buf);
}

TestSuite(faulty, .init = setup, .fini = teardown);

/* Read all N slots back into buf; results in res[]. */
static void read_all(int *res)
{
	struct backend_io io[N], *done[N];

	memset(buf, 0, N * PS);
	for (unsigned i = 0; i < N; i++) {
		io[i] = (struct backend_io){ .slot = slots[i], .buf = buf + i * PS, .crc = crcs[i] };
		cr_assert_eq(backend_queue_read(q, &io[i]), 0);
	}
	cr_assert_eq(backend_submit(q), (int)N);
	cr_assert_eq(backend_reap(q, done, N, N), (int)N);
	for (unsigned i = 0; i < N; i++)
		res[i] = io[i].result;
}

static void assert_intact(unsigned i, int res)
{
	cr_assert_eq(res, (int)PS, "read %u: %d", i, res);
	cr_assert_eq(pattern_check(buf + i * PS, PS, 1, i), -1, "page %u", i);
}

Test(faulty, passes_through, .timeout = 30)
{
	int res[N];

	read_all(res);
	for (unsigned i = 0; i < N; i++)
		assert_intact(i, res[i]);
	cr_assert_eq(faulty_fired(b), 0);
	cr_assert_geq(backend_queue_fd(q), 0);
}

Test(faulty, nth_read_fails, .timeout = 30)
{
	struct faulty_rule r = { .match = FAULTY_READ, .err = -EIO, .slot = FAULTY_ANY_SLOT,
				 .skip = 4, .count = 1 };
	int res[N];

	cr_assert_eq(faulty_set(b, &r, 1), 0);
	read_all(res);
	for (unsigned i = 0; i < N; i++) {
		if (i == 4)
			cr_assert_eq(res[i], -EIO);
		else
			assert_intact(i, res[i]);
	}
	cr_assert_eq(faulty_fired(b), 1);
	/* Once only. */
	read_all(res);
	for (unsigned i = 0; i < N; i++)
		assert_intact(i, res[i]);
}

Test(faulty, every_io_on_a_slot, .timeout = 30)
{
	struct faulty_rule r = { .match = FAULTY_READ | FAULTY_WRITE, .err = -EIO,
				 .slot = slots[7] };
	struct backend_io io = { .slot = slots[7], .buf = buf }, *done;
	int res[N];

	cr_assert_eq(faulty_set(b, &r, 1), 0);
	for (int round = 0; round < 3; round++) {
		read_all(res);
		for (unsigned i = 0; i < N; i++) {
			if (i == 7)
				cr_assert_eq(res[i], -EIO);
			else
				assert_intact(i, res[i]);
		}
	}
	cr_assert_eq(backend_queue_write(q, &io), 0);
	cr_assert_eq(backend_reap(q, &done, 1, 1), 1);
	cr_assert_eq(io.result, -EIO);
	cr_assert_eq(faulty_fired(b), 4);
}

/* A corrupted read looks to the caller like the real thing: -EBADMSG and
 * a damaged page, not a good result over bad data. */
Test(faulty, corrupt_read_fails_checksum, .timeout = 30)
{
	struct faulty_rule r = { .match = FAULTY_READ, .action = FAULTY_CORRUPT,
				 .slot = slots[3], .count = 1, .offset = 1000 };
	int res[N];

	cr_assert_eq(faulty_set(b, &r, 1), 0);
	read_all(res);
	cr_assert_eq(res[3], -EBADMSG);
	cr_assert_eq(pattern_check(buf + 3 * PS, PS, 1, 3), 1000 / 8, "the flipped byte");
	for (unsigned i = 0; i < N; i++)
		if (i != 3)
			assert_intact(i, res[i]);
	/* The data on disk is fine: the next read is clean. */
	read_all(res);
	assert_intact(3, res[3]);
}

Test(faulty, writes_fail_with_enospc_until_cleared, .timeout = 30)
{
	struct faulty_rule r = { .match = FAULTY_WRITE, .err = -ENOSPC,
				 .slot = FAULTY_ANY_SLOT };
	struct backend_io io[4], *done[4];
	int res[N];

	cr_assert_eq(faulty_set(b, &r, 1), 0);
	for (int i = 0; i < 4; i++) {
		io[i] = (struct backend_io){ .slot = slots[i], .buf = buf + i * PS };
		cr_assert_eq(backend_queue_write(q, &io[i]), 0);
	}
	cr_assert_eq(backend_reap(q, done, 4, 4), 4);
	for (int i = 0; i < 4; i++)
		cr_assert_eq(io[i].result, -ENOSPC);
	/* Reads are not affected. */
	read_all(res);
	for (unsigned i = 0; i < N; i++)
		assert_intact(i, res[i]);

	cr_assert_eq(faulty_set(b, NULL, 0), 0);
	for (int i = 0; i < 4; i++)
		cr_assert_eq(backend_queue_write(q, &io[i]), 0);
	cr_assert_eq(backend_reap(q, done, 4, 4), 4);
	for (int i = 0; i < 4; i++)
		cr_assert_eq(io[i].result, (int)PS);
	cr_assert_eq(faulty_fired(b), 4);
}

Test(faulty, allocation_reports_full, .timeout = 30)
{
	struct faulty_rule r[2] = {
		{ .match = FAULTY_ALLOC, .err = 0, .skip = 1, .count = 2 },
		{ .match = FAULTY_ALLOC, .err = -ENOMEM, .skip = 3, .count = 1 },
	};
	uint64_t s[8];

	cr_assert_eq(faulty_set(b, r, 2), 0);
	cr_assert_eq(backend_alloc_slots(b, 8, s), 8);
	cr_assert_eq(backend_alloc_slots(b, 8, s), 0);
	cr_assert_eq(backend_alloc_slots(b, 8, s), 0);
	cr_assert_eq(backend_alloc_slots(b, 8, s), -ENOMEM);
	cr_assert_eq(backend_alloc_slots(b, 8, s), 8);
	backend_free_slots(b, s, 8);
}

Test(faulty, first_matching_rule_fires, .timeout = 30)
{
	struct faulty_rule r[2] = {
		{ .match = FAULTY_READ, .err = -EIO, .slot = slots[0] },
		{ .match = FAULTY_READ, .err = -EFAULT, .slot = FAULTY_ANY_SLOT, .skip = 1,
		  .count = 1 },
	};
	int res[N];

	cr_assert_eq(faulty_set(b, r, 2), 0);
	read_all(res);
	/* Read 0 is rule 0's and counts for rule 1 too: rule 1 takes read 1. */
	cr_assert_eq(res[0], -EIO);
	cr_assert_eq(res[1], -EFAULT);
	for (unsigned i = 2; i < N; i++)
		assert_intact(i, res[i]);
}

Test(faulty, bad_rules, .timeout = 30)
{
	const struct faulty_rule bad[] = {
		{ .match = 0, .err = -EIO },
		{ .match = 1u << 5, .err = -EIO },
		{ .match = FAULTY_READ, .err = 0 },
		{ .match = FAULTY_WRITE, .err = 5 },
		{ .match = FAULTY_WRITE, .action = FAULTY_CORRUPT },
		{ .match = FAULTY_READ, .action = FAULTY_CORRUPT, .offset = PS },
		{ .match = FAULTY_READ, .action = 7, .err = -EIO },
	};
	struct faulty_rule many[FAULTY_MAX_RULES + 1];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_assert_eq(faulty_set(b, &bad[i], 1), -EINVAL, "rule %zu", i);
	for (unsigned i = 0; i <= FAULTY_MAX_RULES; i++)
		many[i] = (struct faulty_rule){ .match = FAULTY_READ, .err = -EIO };
	cr_assert_eq(faulty_set(b, many, FAULTY_MAX_RULES + 1), -EINVAL);
	cr_assert_eq(faulty_set(b, many, FAULTY_MAX_RULES), 0);
}

static atomic_bool stop;

/* Reads in a loop on a queue of its own; counts the failed reads. */
static void *reader(void *arg)
{
	char *page = aligned_alloc(4096, PS);
	struct backend_queue *rq;
	struct backend_io io, *done;
	uint64_t *failed = arg;

	if (backend_queue_open(b, 4, &rq)) {
		*failed = UINT64_MAX;
		return NULL;
	}
	for (unsigned i = 0; !atomic_load(&stop); i = (i + 1) % N) {
		io = (struct backend_io){ .slot = slots[i], .buf = page, .crc = crcs[i] };
		if (backend_queue_read(rq, &io) || backend_reap(rq, &done, 1, 1) != 1)
			*failed = UINT64_MAX;
		else if (io.result != (int)PS)
			(*failed)++;
		else if (pattern_check(page, PS, 1, i) != -1)
			*failed = UINT64_MAX;   /* a good result over bad data */
	}
	backend_queue_close(rq);
	free(page);
	return NULL;
}

/* Rules switched on and off under readers on other threads: every read
 * either succeeds with good data or fails, and the failures add up. */
Test(faulty, rules_change_under_load, .timeout = 60)
{
	const struct faulty_rule r[2] = {
		{ .match = FAULTY_READ, .err = -EIO, .slot = FAULTY_ANY_SLOT, .count = 3 },
		{ .match = FAULTY_READ, .action = FAULTY_CORRUPT, .slot = slots[5], .count = 2 },
	};
	uint64_t failed[2] = { 0, 0 };
	pthread_t t[2];

	for (int i = 0; i < 2; i++)
		pthread_create(&t[i], NULL, reader, &failed[i]);
	for (int round = 0; round < 200; round++) {
		cr_assert_eq(faulty_set(b, r, 2), 0);
		usleep(200);
		cr_assert_eq(faulty_set(b, NULL, 0), 0);
	}
	atomic_store(&stop, true);
	for (int i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	cr_assert_neq(failed[0], UINT64_MAX);
	cr_assert_neq(failed[1], UINT64_MAX);
	cr_assert_eq(failed[0] + failed[1], faulty_fired(b));
	cr_log_info("%llu injected failures", (unsigned long long)faulty_fired(b));
}
