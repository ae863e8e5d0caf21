/* crc32c.c - see crc32c.h. */
#include "crc32c.h"

#include <endian.h>
#include <pthread.h>
#include <stdbool.h>
#include <string.h>

#if defined(__x86_64__)
#include <nmmintrin.h>
#elif defined(__aarch64__)
#include <arm_acle.h>
#include <sys/auxv.h>
#endif

/* The Castagnoli polynomial, bit-reflected. */
#define CRC32C_POLY 0x82f63b78u
/* Bytes per stream and round of the interleaved hardware loop. */
#define BLOCK 256

/* table[k][b]: the crc register after byte b followed by k zero bytes, for
 * slicing-by-8 (eight bytes per step, one lookup each). */
static uint32_t table[8][256];
/* The crc register moved over BLOCK zero bytes, a byte of it at a time. */
static uint32_t shift_table[4][256];
static crc32c_fn *impl;
static pthread_once_t init_once = PTHREAD_ONCE_INIT;

static uint64_t load64(const unsigned char *p)
{
	uint64_t w;

	memcpy(&w, p, 8);
	return le64toh(w);
}

static uint32_t shift_block(uint32_t c)
{
	return shift_table[0][c & 0xff] ^ shift_table[1][(c >> 8) & 0xff] ^
	       shift_table[2][(c >> 16) & 0xff] ^ shift_table[3][c >> 24];
}

#if defined(__x86_64__)
#define HW_TARGET __attribute__((target("sse4.2")))
HW_TARGET static inline uint32_t hw_u8(uint32_t c, uint8_t b)
{
	return _mm_crc32_u8(c, b);
}
HW_TARGET static inline uint32_t hw_u64(uint32_t c, uint64_t w)
{
	return (uint32_t)_mm_crc32_u64(c, w);
}
static bool hw_present(void)
{
	return __builtin_cpu_supports("sse4.2");
}
#elif defined(__aarch64__)
#define HW_TARGET __attribute__((target("+crc")))
HW_TARGET static inline uint32_t hw_u8(uint32_t c, uint8_t b)
{
	return __crc32cb(c, b);
}
HW_TARGET static inline uint32_t hw_u64(uint32_t c, uint64_t w)
{
	return __crc32cd(c, w);
}
static bool hw_present(void)
{
	return getauxval(AT_HWCAP) & HWCAP_CRC32;
}
#endif

#ifdef HW_TARGET
/*
 * The crc instruction takes 3 cycles and can start every cycle: three
 * streams over adjacent blocks keep it busy. Since the crc register is
 * linear, the crc of A|B|C is shift(shift(crc(A)) ^ crc(B)) ^ crc(C), the
 * streams of B and C starting from 0.
 */
HW_TARGET static uint32_t crc32c_hw_impl(uint32_t crc, const void *buf, size_t len)
{
	const unsigned char *p = buf;
	uint32_t c0 = ~crc;

	for (; len && ((uintptr_t)p & 7); len--)
		c0 = hw_u8(c0, *p++);
	for (; len >= 3 * BLOCK; len -= 3 * BLOCK, p += 3 * BLOCK) {
		uint32_t c1 = 0, c2 = 0;

		for (size_t i = 0; i < BLOCK; i += 8) {
			c0 = hw_u64(c0, load64(p + i));
			c1 = hw_u64(c1, load64(p + BLOCK + i));
			c2 = hw_u64(c2, load64(p + 2 * BLOCK + i));
		}
		c0 = shift_block(shift_block(c0) ^ c1) ^ c2;
	}
	for (; len >= 8; len -= 8, p += 8)
		c0 = hw_u64(c0, load64(p));
	for (; len; len--)
		c0 = hw_u8(c0, *p++);
	return ~c0;
}

static crc32c_fn *hw_impl(void)
{
	return hw_present() ? crc32c_hw_impl : NULL;
}
#else
static crc32c_fn *hw_impl(void)
{
	return NULL;
}
#endif

static void crc32c_init(void)
{
	crc32c_fn *hw = hw_impl();

	for (uint32_t b = 0; b < 256; b++) {
		uint32_t c = b;

		for (int i = 0; i < 8; i++)
			c = (c >> 1) ^ (CRC32C_POLY & -(c & 1));
		table[0][b] = c;
	}
	for (int k = 1; k < 8; k++)
		for (int b = 0; b < 256; b++)
			table[k][b] = (table[k - 1][b] >> 8) ^ table[0][table[k - 1][b] & 0xff];
	/* Shifting is linear: shift each register bit alone, then combine. */
	for (int bit = 0; bit < 32; bit++) {
		uint32_t c = 1u << bit;

		for (int i = 0; i < BLOCK; i++)
			c = table[0][c & 0xff] ^ (c >> 8);
		for (int b = 0; b < 256; b++)
			if (b & (1 << (bit % 8)))
				shift_table[bit / 8][b] ^= c;
	}
	impl = hw ? hw : crc32c_sw;
}

crc32c_fn *crc32c_hw(void)
{
	pthread_once(&init_once, crc32c_init);
	return hw_impl();
}

uint32_t crc32c_sw(uint32_t crc, const void *buf, size_t len)
{
	const unsigned char *p = buf;
	uint32_t c = ~crc;

	pthread_once(&init_once, crc32c_init);
	for (; len && ((uintptr_t)p & 7); len--)
		c = table[0][(c ^ *p++) & 0xff] ^ (c >> 8);
	for (; len >= 8; len -= 8, p += 8) {
		uint64_t w = load64(p) ^ c;

		c = table[7][w & 0xff] ^ table[6][(w >> 8) & 0xff] ^
		    table[5][(w >> 16) & 0xff] ^ table[4][(w >> 24) & 0xff] ^
		    table[3][(w >> 32) & 0xff] ^ table[2][(w >> 40) & 0xff] ^
		    table[1][(w >> 48) & 0xff] ^ table[0][w >> 56];
	}
	for (; len; len--)
		c = table[0][(c ^ *p++) & 0xff] ^ (c >> 8);
	return ~c;
}

uint32_t crc32c(uint32_t crc, const void *buf, size_t len)
{
	/* pthread_once rather than a constructor: correct even when called
	 * from another constructor, and it orders the table writes before
	 * every reader. */
	pthread_once(&init_once, crc32c_init);
	return impl(crc, buf, len);
}
