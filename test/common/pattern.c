/* pattern.c - see pattern.h. */
#include "pattern.h"

uint64_t pattern_word(uint64_t gen, uint64_t page, uint64_t word)
{
	/* splitmix64 of the position: every word differs, every run agrees. */
	uint64_t x = gen * 0xd6e8feb86659fd93ull + page * 0x9e3779b97f4a7c15ull + word;

	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

void pattern_fill(void *page_addr, size_t page_size, uint64_t gen, uint64_t page)
{
	uint64_t *w = page_addr;

	for (size_t i = 0; i < page_size / 8; i++)
		w[i] = pattern_word(gen, page, i);
}

long pattern_check(const void *page_addr, size_t page_size, uint64_t gen, uint64_t page)
{
	const uint64_t *w = page_addr;

	for (size_t i = 0; i < page_size / 8; i++)
		if (w[i] != pattern_word(gen, page, i))
			return (long)i;
	return -1;
}

int all_zero(const void *p, size_t len)
{
	const unsigned char *c = p;

	for (size_t i = 0; i < len; i++)
		if (c[i])
			return 0;
	return 1;
}
