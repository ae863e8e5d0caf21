/*
 * fault.h - what a handler does with one userfaultfd message.
 */
#ifndef UPG_FAULT_H
#define UPG_FAULT_H

#include <stdbool.h>

#include "compat.h"

struct handler;

/* How a page-fault message ended, as the kernel's vm_fault_t says how a
 * fault did. */
typedef enum {
	FAULT_DONE,       /* this handler mapped the page */
	FAULT_SHARED,     /* another handler owns or owned it; nothing to do */
	FAULT_STALE,      /* no region holds the address any more */
	FAULT_ERROR,      /* could not be resolved; faulting thread woken */
	FAULT_QUEUED,     /* I/O submitted; resolved when it completes */
	FAULT_DEFER,      /* no memory or buffer now: retry the message later */
	FAULT_AGAIN,      /* the page changed state under us: look again */
} fault_result;

/* Handle one message. The caller is an online QSBR reader. */
void fault_dispatch(struct handler *h, const struct uffd_msg *msg);

/* Keep a page-fault message to retry later (its thread keeps waiting);
 * false when the handler has no room left. */
bool fault_defer(struct handler *h, const struct uffd_msg *msg);
/* Retry the deferred messages (those that still cannot be resolved are
 * deferred again). */
void fault_retry_deferred(struct handler *h);

#endif /* UPG_FAULT_H */
