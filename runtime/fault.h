/*
 * fault.h - what a handler does with one userfaultfd message.
 */
#ifndef UPG_FAULT_H
#define UPG_FAULT_H

#include "compat.h"

struct handler;

/* How a page-fault message ended, as the kernel's vm_fault_t says how a
 * fault did. */
typedef enum {
	FAULT_DONE,       /* this handler mapped the page */
	FAULT_SHARED,     /* another handler owns or owned it; nothing to do */
	FAULT_RETRY,      /* the layout was changing: faulting thread woken to retry */
	FAULT_STALE,      /* no region holds the address any more */
	FAULT_ERROR,      /* could not be resolved; faulting thread woken */
} fault_result;

/* Handle one message. The caller is an online QSBR reader. */
void fault_dispatch(struct handler *h, const struct uffd_msg *msg);

#endif /* UPG_FAULT_H */
