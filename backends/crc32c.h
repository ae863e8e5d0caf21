/*
 * crc32c.h - crc32c (Castagnoli, the iSCSI/ext4 polynomial), used by the
 * backends to check every page on its way back in.
 *
 * The CPU's crc32c instructions (SSE4.2 on x86_64, the ARMv8 CRC32
 * extension on aarch64) are used where the CPU has them, found out at run
 * time; a table-driven version runs everywhere else.
 */
#ifndef UPG_CRC32C_H
#define UPG_CRC32C_H

#include <stddef.h>
#include <stdint.h>

typedef uint32_t crc32c_fn(uint32_t crc, const void *buf, size_t len);

/*
 * crc32c - the crc32c of len bytes at buf, continuing from crc.
 *
 * Start with crc = 0; crc32c(crc32c(0, a, la), b, lb) equals the crc32c of
 * a followed by b. crc32c(0, "123456789", 9) == 0xe3069283. Thread-safe,
 * allocation-free, usable on the fault path.
 */
uint32_t crc32c(uint32_t crc, const void *buf, size_t len);

/* The table-driven implementation, whatever the CPU. */
uint32_t crc32c_sw(uint32_t crc, const void *buf, size_t len);

/* The CPU's crc32c instructions, or NULL when this CPU has none. */
crc32c_fn *crc32c_hw(void);

#endif /* UPG_CRC32C_H */
