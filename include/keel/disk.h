/* keel — files as futures.
 *
 * Reads, writes, fsync, fdatasync, fallocate and close go through the
 * shard's io_uring ring: real asynchronous file I/O, no thread per
 * request. Where the backend is epoll (or the kernel lacks an opcode), the
 * same calls run in the blocking pool, with the same results. Opening,
 * truncating and the path operations (stat, rename, unlink, mkdir) run in
 * the blocking pool on every backend: liburing 2.3 has no ftruncate, and
 * opening is rare enough that a thread hop costs nothing that matters.
 *
 * A file is opened with O_DIRECT where the file system supports it (ext4,
 * xfs: not tmpfs), buffered otherwise; keel_file_is_direct tells which.
 * Direct I/O wants buffers, offsets and lengths aligned as statx's
 * DIOALIGN says (keel_file_mem_align, keel_file_offset_align); buffers from
 * keel_dma_alloc are aligned for any device. A keel_file belongs to the
 * shard that opened it.
 */
#ifndef KEEL_DISK_H
#define KEEL_DISK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <keel/future.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct keel_file_s keel_file;

enum keel_file_flags {
    KEEL_FILE_READ = 1,      /* open for reading */
    KEEL_FILE_WRITE = 2,     /* open for writing */
    KEEL_FILE_CREATE = 4,    /* create if missing (O_CREAT) */
    KEEL_FILE_EXCL = 8,      /* with CREATE: fail -EEXIST if it exists */
    KEEL_FILE_TRUNCATE = 16, /* truncate to 0 at open */
    KEEL_FILE_BUFFERED = 32, /* never O_DIRECT: go through the page cache */
};

/* Opens path (flags: enum keel_file_flags; mode for a created file).
 * Resolves to the keel_file * (result.ptr), or -errno (-ENOENT, -EACCES,
 * -EEXIST, ...). */
keel_future *keel_file_open(const char *path, unsigned flags, mode_t mode);
/* Closes f and frees it; resolves to 0 or -errno. f must have no I/O in
 * flight. */
keel_future *keel_file_close(keel_file *f);

/* Reads up to len bytes at off into buf; resolves to the count read (short
 * only at end of file) or -errno. */
keel_future *keel_file_read(keel_file *f, uint64_t off, void *buf, size_t len);
/* Writes len bytes of buf at off, all of them (a short write is continued);
 * resolves to len or -errno (-ENOSPC, -EIO, ...). Not durable until an
 * fsync/fdatasync resolves. buf must stay valid until then. */
keel_future *keel_file_write(keel_file *f, uint64_t off, const void *buf, size_t len);
/* Resolve to 0 once data and metadata (fsync) or data and what reading it
 * needs (fdatasync) are on stable storage, or -errno. */
keel_future *keel_file_fsync(keel_file *f);
keel_future *keel_file_fdatasync(keel_file *f);
/* Reserves len bytes at off (fallocate mode 0); resolves to 0 or -errno. */
keel_future *keel_file_allocate(keel_file *f, uint64_t off, uint64_t len);
/* Sets the file's size; resolves to 0 or -errno. */
keel_future *keel_file_truncate(keel_file *f, uint64_t size);
/* Resolves to the file's size in bytes, or -errno. */
keel_future *keel_file_size(keel_file *f);

bool keel_file_is_direct(const keel_file *f);
/* Alignment direct I/O needs for buffer addresses and for offsets and
 * lengths (1 for a buffered file). */
size_t keel_file_mem_align(const keel_file *f);
size_t keel_file_offset_align(const keel_file *f);
int keel_file_fd(const keel_file *f);

/* ---- paths ----------------------------------------------------------------- */

/* Each resolves to 0 or -errno. keel_fs_size to the size of path. */
keel_future *keel_fs_rename(const char *from, const char *to);
keel_future *keel_fs_unlink(const char *path);
keel_future *keel_fs_mkdir(const char *path, mode_t mode);
keel_future *keel_fs_size(const char *path);

/* ---- the io_queue ---------------------------------------------------------------
 *
 * Each shard's file operations pass through its io_queue, which keeps the
 * device's queue bounded (operations and bytes in flight) and, when
 * requests wait, dispatches them from priority classes in proportion to
 * their shares, by bytes (plus a fixed cost per operation): a commit log
 * with 1000 shares and a compaction with 100 get 10:1 of the device while
 * both have work, and the compaction all of it when alone (Seastar's
 * io_queue idea). Requests of one class are dispatched in order. */

typedef struct keel_io_class_s keel_io_class;

#define KEEL_MAX_IO_CLASSES 8

/* A class on every shard, shares 1 to 10000. Any thread. NULL with errno
 * EINVAL, EEXIST or ENOSPC. */
keel_io_class *keel_io_class_create(const char *name, unsigned shares);
/* The class files start in ("default", 1000). */
keel_io_class *keel_io_class_default(void);
const char *keel_io_class_name(const keel_io_class *c);
/* Operations on f from now on go to class c. */
void keel_file_set_io_class(keel_file *f, keel_io_class *c);
/* This shard's bound on operations and bytes in flight (defaults 256 and
 * 32 MiB; an operation larger than max_bytes still goes, alone). */
void keel_io_queue_set_limits(unsigned max_ops, uint64_t max_bytes);

typedef struct keel_io_class_stats {
    uint64_t dispatched_ops, dispatched_bytes;
    uint64_t queued;  /* waiting now */
    uint64_t wait_ns; /* total time requests waited in the queue */
} keel_io_class_stats;

/* A snapshot of c's accounting on shard (any thread). 0 or -EINVAL. */
int keel_io_class_stats_get(unsigned shard, const keel_io_class *c, keel_io_class_stats *out);

/* ---- aligned buffers -------------------------------------------------------- */

/* A buffer of at least size bytes, aligned to 4096 (enough for O_DIRECT on
 * any device), or NULL. Free with keel_dma_free. Any thread. */
void *keel_dma_alloc(size_t size);
void keel_dma_free(void *p);

#ifdef __cplusplus
}
#endif
#endif
