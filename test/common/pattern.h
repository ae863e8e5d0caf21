/*
 * pattern.h - deterministic page contents for tests (generate, then check).
 */
#ifndef UPG_TEST_PATTERN_H
#define UPG_TEST_PATTERN_H

#include <stddef.h>
#include <stdint.h>

/* The 64-bit word `word` of page `page` under generation `gen`. */
uint64_t pattern_word(uint64_t gen, uint64_t page, uint64_t word);

/* Fill / check a whole page of page_size bytes. check returns the index of
 * the first wrong word, or -1 if the page is right. */
void pattern_fill(void *page_addr, size_t page_size, uint64_t gen, uint64_t page);
long pattern_check(const void *page_addr, size_t page_size, uint64_t gen, uint64_t page);

/* 1 if every byte of [p, p+len) is zero. */
int all_zero(const void *p, size_t len);

#endif /* UPG_TEST_PATTERN_H */
