/*
 * Unit tests: the cooling pool's frames on the MOVE path are registered with
 * a userfaultfd of their own (paging.h, frames_uffd), which nobody reads: a
 * touch of an empty frame must fail at once instead of waiting forever.
 * (That freeing them holds no copy off is test_swap's
 * move_scan_maps_without_retries.)
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "ctx.h"
#include "paging.h"

static char swapdir[4096];
static upg_ctx *ctx;

static void close_ctx(void)
{
	if (ctx)
		upg_ctx_destroy(ctx);
	ctx = NULL;
	if (swapdir[0])
		rmdir(swapdir);
	swapdir[0] = 0;
}

/* A context with a budget on the MOVE path, or the test skips. */
static struct paging *open_move_ctx(void)
{
	static struct upg_swap_file sf;
	struct upg_config cfg;
	uint64_t features = 0;
	int rc;

	if (upg_features_probe(&features) < 0)
		cr_skip_test("userfaultfd not available");
	if (!(features & UPG_FEAT_MOVE))
		cr_skip_test("the MOVE path needs UFFDIO_MOVE (Linux 6.8), which this kernel lacks");
	snprintf(swapdir, sizeof(swapdir), "%s/upager-frames-XXXXXX",
		 getenv("TMPDIR") ? getenv("TMPDIR") : "/var/tmp");
	cr_assert_not_null(mkdtemp(swapdir), "mkdtemp %s: %s", swapdir, strerror(errno));
	upg_config_init(&cfg);
	sf = (struct upg_swap_file){ .path = swapdir, .size = 64 << 20 };
	cfg.mem_limit = 8 << 20;
	cfg.swap_files = &sf;
	cfg.nswap_files = 1;
	rc = upg_ctx_create(&cfg, &ctx);
	cr_assert_eq(rc, 0, "upg_ctx_create: %s", upg_strerror(rc));
	cr_assert_eq(ctx->paging->path, UPG_EVICT_MOVE);
	cr_assert_geq(ctx->paging->frames_uffd, 0, "the frames have no userfaultfd of their own");
	return ctx->paging;
}

static sigjmp_buf bus_jmp;

static void on_bus(int sig)
{
	(void)sig;
	siglongjmp(bus_jmp, 1);
}

/* A touch of an empty frame: SIGBUS, not a wait for a reader that never
 * comes (the timeout would catch that). The signal is caught here rather
 * than expected of the test process, so that a sanitizer's own SIGBUS
 * report does not stand in for it. */
Test(frames, touching_an_empty_frame_fails_at_once, .timeout = 30, .fini = close_ctx)
{
	struct paging *pg = open_move_ctx();
	struct sigaction sa = { .sa_handler = on_bus }, old;
	volatile int faulted = 0;

	sigemptyset(&sa.sa_mask);
	cr_assert_eq(sigaction(SIGBUS, &sa, &old), 0);
	if (sigsetjmp(bus_jmp, 1))
		faulted = 1;
	else
		(void)*(volatile uint8_t *)pg->frames;
	sigaction(SIGBUS, &old, NULL);
	cr_assert(faulted, "a touch of an empty frame read something");
}
