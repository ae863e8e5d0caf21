/*
 * fork(2) of a process with regions. Contexts do not ask for fork events,
 * so the kernel hands the child plain anonymous memory: what the parent had
 * mapped is copied (copy-on-write), the rest reads as zeros. The parent
 * keeps paging through upager.
 */
#include <sys/wait.h>

#include "itest.h"

#define PAGES 512

Test(fork, child_sees_plain_memory_parent_keeps_paging, .timeout = 60)
{
	upg_ctx *ctx = ctx_new(NULL);
	size_t ps = itest_page();
	upg_region *r = region_new(ctx, PAGES * ps, 0);
	uint8_t *base = upg_region_addr(r);
	struct upg_stats st;
	pid_t pid;
	int status;

	fill_pages(base, ps, 0, PAGES / 2, 1);           /* first half resident */
	pid = fork();
	cr_assert_neq(pid, -1);
	if (pid == 0) {
		/* No cr_assert in the child: report through the exit status. */
		if (check_pages(base, ps, 0, PAGES / 2, 1) >= 0)
			_exit(1);
		if (check_zero(base, ps, PAGES / 2, PAGES / 2) >= 0)
			_exit(2);
		fill_pages(base, ps, 0, PAGES, 2);        /* the child's own copy */
		_exit(check_pages(base, ps, 0, PAGES, 2) >= 0 ? 3 : 0);
	}
	/* Meanwhile the parent faults in the second half and rewrites the first. */
	fill_pages(base, ps, PAGES / 2, PAGES / 2, 1);
	fill_pages(base, ps, 0, PAGES / 2, 3);
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		  "child saw wrong data (status %#x)", status);
	cr_assert_eq(check_pages(base, ps, 0, PAGES / 2, 3), -1, "child's writes leaked into the parent");
	cr_assert_eq(check_pages(base, ps, PAGES / 2, PAGES / 2, 1), -1);
	stats_wait(ctx, st, st.zero_filled == PAGES, 5000);
	upg_region_destroy(r);
	upg_ctx_destroy(ctx);
}
