/*
 * faulty.h - a fault-injecting backend for tests: it wraps another backend,
 * passes every operation through, and makes chosen ones fail.
 *
 * A rule matches reads, writes (optionally on one slot only) and slot
 * allocations, any mix of them; of the operations it matches it lets the
 * first `skip` through and fires on the next `count` (0: on all the rest).
 * Firing on an I/O, it
 *   FAULTY_FAIL     completes it with `err` (e.g. -EIO, or -ENOSPC on
 *                   writes). The inner I/O still runs: a failed write
 *                   leaves the slot's contents undefined, as a real one.
 *   FAULTY_CORRUPT  (reads) flips byte `offset` of the page once the inner
 *                   read is done. The inner backend has checked the crc by
 *                   then, so the check is made again on the damaged page:
 *                   the caller sees -EBADMSG and the damaged page, as on
 *                   real corruption (of a backend that checks crcs).
 * Firing on an allocation, alloc_slots returns `err` (0: "full").
 *
 * An operation counts towards every rule it matches; of the rules due to
 * fire on it, the first one does. Counting starts when the rule set is
 * installed. Rules are shared by all queues (one mutex: a test backend).
 */
#ifndef UPG_FAULTY_H
#define UPG_FAULTY_H

#include <stdint.h>

#include "backend.h"

#define FAULTY_MAX_RULES 8u
#define FAULTY_ANY_SLOT UINT64_MAX

enum faulty_match {
	FAULTY_READ = 1u << 0,
	FAULTY_WRITE = 1u << 1,
	FAULTY_ALLOC = 1u << 2,
};

enum faulty_action {
	FAULTY_FAIL,
	FAULTY_CORRUPT,
};

struct faulty_rule {
	unsigned match;           /* enum faulty_match bits */
	enum faulty_action action;
	int err;                  /* FAULTY_FAIL: -errno (or 0 for a full alloc) */
	uint64_t slot;            /* I/Os on this slot only, or FAULTY_ANY_SLOT */
	uint64_t skip;            /* matching operations let through first */
	uint64_t count;           /* then fire this many times; 0 = always */
	uint32_t offset;          /* FAULTY_CORRUPT: the byte of the page flipped */
};

/*
 * faulty_open - wrap inner, which the new backend owns from now on (closing
 * it closes inner, also when faulty_open fails).
 *
 * rules[0..n) is the initial rule set (n <= FAULTY_MAX_RULES, may be 0).
 * Returns 0 with *out set, or -EINVAL / -ENOMEM.
 */
int faulty_open(struct backend *inner, const struct faulty_rule *rules, unsigned n,
		struct backend **out);

/* Replace the rule set (n = 0 clears it), restarting every counter.
 * Returns 0, or -EINVAL for a bad rule. Any thread, any time. */
int faulty_set(struct backend *b, const struct faulty_rule *rules, unsigned n);

/* How many times rules fired since the backend was opened. */
uint64_t faulty_fired(struct backend *b);

#endif /* UPG_FAULTY_H */
