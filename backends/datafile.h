/*
 * datafile.h - the data-file backend: pages of a region live at fixed places
 * in a file the application owns (a database's table or index file).
 *
 * One instance serves every file-backed region of a context: each region
 * attaches its file and gets a file number. The layout is fixed (no
 * alloc_slots): a slot names file and page, and page p of file f lives at
 * byte offset + p * page_size of that file. Slots carry a tag bit, so that
 * a slot alone tells a data-file page from a swap slot (swap slots fit in
 * 43 bits, swap_alloc.h) and the page word's 44-bit slot field holds both.
 *
 * Files are opened with O_DIRECT where the filesystem allows it, buffered
 * otherwise (said once per file). No crc: the file is the truth. A read
 * past the end of a read-write file completes with zeros (a read-write
 * region may be longer than its file; the file grows as pages are written
 * back); of a read-only one, which held the whole range when attached, with
 * -EIO (it was truncated under us). Each
 * queue is an io_uring with an eventfd for completions; nothing on the
 * queue path allocates or locks.
 */
#ifndef UPG_DATAFILE_H
#define UPG_DATAFILE_H

#include <stdbool.h>
#include <stdint.h>

#include "backend.h"

#define DATAFILE_SLOT_TAG (1ull << 43)
#define DATAFILE_FILE_SHIFT 32
/* File numbers 0..2046: slot + 1 of the last page of the last one still fits
 * the 44 bits of the page word. */
#define DATAFILE_MAX_FILES 2047u
/* Pages one file may hold: the page number fits in 32 bits. */
#define DATAFILE_MAX_PAGES (1ull << DATAFILE_FILE_SHIFT)

static inline uint64_t datafile_slot(unsigned file, uint64_t page)
{
	return DATAFILE_SLOT_TAG | (uint64_t)file << DATAFILE_FILE_SHIFT | page;
}
static inline bool datafile_slot_is_file(uint64_t slot)
{
	return slot & DATAFILE_SLOT_TAG;
}

/* An empty instance for pages of page_size bytes (a multiple of 4096). */
int datafile_open(uint32_t page_size, struct backend **out);

/*
 * datafile_attach - open path for the pages of one region and give it a
 * file number (*file).
 *
 * offset: where page 0 lives, a multiple of 4096. rdonly: opened read-only,
 * and the file must hold [offset, offset + size). create: a missing file is
 * created (mode 0644). Returns 0, or -errno: what open(2) said (-ENOENT,
 * -EACCES...), -EINVAL for a bad offset or a read-only file too short,
 * -ENOSPC when every file number is taken. A directory: -EISDIR read-write,
 * -EINVAL read-only.
 */
int datafile_attach(struct backend *b, const char *path, uint64_t offset, uint64_t size,
		    bool rdonly, bool create, unsigned *file);

/* Close file number `file`. No I/O to it may be queued any more. */
void datafile_detach(struct backend *b, unsigned file);
/* In the child of a fork, before it uses b: a thread of the parent may
 * have held b's lock at the fork. The files stay the same descriptors,
 * shared with the parent (as a shared file mapping is). */
void datafile_forked(struct backend *b);

/* fdatasync(2) file number `file`: 0 or -errno. */
int datafile_sync(struct backend *b, unsigned file);

#endif /* UPG_DATAFILE_H */
