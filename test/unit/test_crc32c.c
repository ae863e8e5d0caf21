/* test_crc32c.c - crc32c against published vectors, hardware against table. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "crc32c.h"

static uint32_t (*const impls[])(uint32_t, const void *, size_t) = { crc32c, crc32c_sw };

Test(crc32c, check_value, .timeout = 10)
{
	for (size_t i = 0; i < sizeof(impls) / sizeof(impls[0]); i++) {
		cr_assert_eq(impls[i](0, "123456789", 9), 0xe3069283u);
		cr_assert_eq(impls[i](0, "", 0), 0);
	}
	if (crc32c_hw())
		cr_assert_eq(crc32c_hw()(0, "123456789", 9), 0xe3069283u);
}

/* RFC 3720 (iSCSI), appendix B.4. */
Test(crc32c, iscsi_vectors, .timeout = 10)
{
	unsigned char buf[32];

	memset(buf, 0, sizeof(buf));
	cr_assert_eq(crc32c(0, buf, 32), 0x8a9136aau);
	cr_assert_eq(crc32c_sw(0, buf, 32), 0x8a9136aau);
	memset(buf, 0xff, sizeof(buf));
	cr_assert_eq(crc32c(0, buf, 32), 0x62a8ab43u);
	cr_assert_eq(crc32c_sw(0, buf, 32), 0x62a8ab43u);
	for (int i = 0; i < 32; i++)
		buf[i] = (unsigned char)i;
	cr_assert_eq(crc32c(0, buf, 32), 0x46dd794eu);
	cr_assert_eq(crc32c_sw(0, buf, 32), 0x46dd794eu);
	for (int i = 0; i < 32; i++)
		buf[i] = (unsigned char)(31 - i);
	cr_assert_eq(crc32c(0, buf, 32), 0x113fdb5cu);
	cr_assert_eq(crc32c_sw(0, buf, 32), 0x113fdb5cu);
}

/* Random lengths at random alignments, and chaining: every split of a
 * buffer gives the crc of the whole. */
Test(crc32c, hw_equals_sw, .timeout = 30)
{
	enum { MAX = 3 * 4096 + 64 };
	unsigned char *buf = malloc(MAX);
	crc32c_fn *hw = crc32c_hw();
	unsigned seed = 1;

	cr_log_info("crc32c implementation: %s", hw ? "hardware" : "table only");
	for (size_t i = 0; i < MAX; i++)
		buf[i] = (unsigned char)rand_r(&seed);
	for (int iter = 0; iter < 2000; iter++) {
		/* The first lengths exercise the byte-wise head and tail. */
		size_t off = (size_t)rand_r(&seed) % 64;
		size_t len = iter < 16 ? (size_t)iter : (size_t)rand_r(&seed) % (MAX - 64);
		size_t cut = (size_t)rand_r(&seed) % (len + 1);
		uint32_t want = crc32c_sw(0, buf + off, len);

		cr_assert_eq(crc32c(0, buf + off, len), want, "len %zu off %zu", len, off);
		cr_assert_eq(crc32c_sw(crc32c_sw(0, buf + off, cut), buf + off + cut, len - cut), want);
		if (hw) {
			cr_assert_eq(hw(0, buf + off, len), want, "len %zu off %zu", len, off);
			cr_assert_eq(hw(hw(0, buf + off, cut), buf + off + cut, len - cut), want);
		}
	}
	free(buf);
}

/* A page with one flipped bit anywhere never keeps its crc. */
Test(crc32c, detects_single_bit_flips, .timeout = 30)
{
	unsigned char page[4096];
	unsigned seed = 7;
	uint32_t good;

	for (size_t i = 0; i < sizeof(page); i++)
		page[i] = (unsigned char)rand_r(&seed);
	good = crc32c(0, page, sizeof(page));
	for (size_t bit = 0; bit < sizeof(page) * 8; bit += 13) {
		page[bit / 8] ^= (unsigned char)(1u << (bit % 8));
		cr_assert_neq(crc32c(0, page, sizeof(page)), good, "bit %zu", bit);
		page[bit / 8] ^= (unsigned char)(1u << (bit % 8));
	}
}
