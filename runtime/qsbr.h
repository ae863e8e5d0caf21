/*
 * qsbr.h - quiescent-state based reclamation for the fault path.
 *
 * Handler threads read shared structures (the region registry, regions)
 * without locks. A writer that unlinks something publishes the new version,
 * then calls qsbr_synchronize(): once it returns, every reader has passed a
 * quiescent state (between two fault batches, or blocked waiting for work),
 * so none can still hold a pointer to what was unlinked.
 *
 * Readers are registered once, when the handler pool starts. A reader is
 * online while it may hold pointers and offline while it sleeps; a writer
 * never waits for an offline reader. qsbr_synchronize() must not be called
 * by a reader that is online.
 */
#ifndef UPG_QSBR_H
#define UPG_QSBR_H

#include <stdatomic.h>
#include <stdint.h>

struct qsbr_reader {
	/* 0 = offline, else the global epoch last seen online. */
	_Atomic uint64_t seen;
} __attribute__((aligned(64)));

struct qsbr {
	_Atomic uint64_t epoch;
	struct qsbr_reader *readers;
	unsigned nreaders;
};

void qsbr_init(struct qsbr *q, struct qsbr_reader *readers, unsigned nreaders);

/* Reader side: cheap, called by the reader thread itself. */
void qsbr_online(struct qsbr *q, struct qsbr_reader *r);
void qsbr_offline(struct qsbr_reader *r);
void qsbr_quiescent(struct qsbr *q, struct qsbr_reader *r);

/* Writer side: wait until every reader online now has passed a quiescent
 * state. */
void qsbr_synchronize(struct qsbr *q);

#endif /* UPG_QSBR_H */
