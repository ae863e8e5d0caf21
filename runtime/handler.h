/*
 * handler.h - the handler pool.
 *
 * Handler threads, by default one per allowed CPU and pinned to it, all wait
 * on the context's userfaultfd. Whichever wakes first reads a message and
 * resolves it itself (fault.c): there is no reader-to-worker hand-off, since
 * every cross-thread wake-up costs as much as the fault round trip.
 * Handlers block every signal, so no application handler runs on them.
 */
#ifndef UPG_HANDLER_H
#define UPG_HANDLER_H

struct upg_ctx;

/* Start ctx->nhandlers threads. On failure none is left running. */
int handlers_start(struct upg_ctx *ctx);

/* Signal every handler to stop and join them. */
void handlers_stop(struct upg_ctx *ctx);

#endif /* UPG_HANDLER_H */
