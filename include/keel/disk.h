/* keel — files as futures.
 *
 * On the io_uring backend every call here is an io_uring operation: read,
 * write (READ_FIXED/WRITE_FIXED inside a registered buffer), fsync,
 * fdatasync, fallocate and close (kernel 5.6), open (OPENAT), stat (STATX),
 * rename, unlink and mkdir (RENAMEAT, UNLINKAT 5.11; MKDIRAT 5.15),
 * truncate (FTRUNCATE, 6.9: liburing 2.3 has no helper, keel preps the
 * opcode itself), and the write→fdatasync pair as two linked SQEs. Each
 * shard's ring is probed once at start; an operation whose opcode this
 * kernel lacks, or that finds the submission queue full, runs in the
 * blocking pool instead. On the epoll backend all of them run in the
 * blocking pool (epoll cannot wait for a regular file). The results are the
 * same on every road.
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
/* Writes len bytes of buf at off, then fdatasyncs f: resolves to len once
 * both are done (the bytes are durable), or -errno of the first failure. On
 * io_uring one write and one fdatasync linked to it (the sync starts when
 * the write completed in full; a short write goes on with the rest, then
 * syncs); elsewhere a blocking-pool job. len 0 is an fdatasync. buf must
 * stay valid until it resolves. */
keel_future *keel_file_write_dsync(keel_file *f, uint64_t off, const void *buf, size_t len);
/* Reserves len bytes at off (fallocate mode 0); resolves to 0 or -errno. */
keel_future *keel_file_allocate(keel_file *f, uint64_t off, uint64_t len);
/* Sets the file's size; resolves to 0 or -errno. */
keel_future *keel_file_truncate(keel_file *f, uint64_t size);
/* Resolves to the file's size in bytes, or -errno. */
keel_future *keel_file_size(keel_file *f);

/* What keel_file_stat and keel_fs_stat report (from statx). */
struct keel_stat {
    uint64_t size;    /* bytes */
    uint64_t blocks;  /* 512-byte blocks allocated */
    uint32_t mode;    /* type and permissions, as st_mode (S_ISDIR(mode), ...) */
    int64_t mtime_ns; /* last modification, ns since the epoch */
    /* Alignment O_DIRECT needs for buffer addresses and for offsets and
     * lengths (statx DIOALIGN), 0 where the file system does not say. */
    uint32_t dio_mem_align, dio_offset_align;
};

/* Fills *out with f's metadata; resolves to 0 or -errno. out must stay
 * valid until then. */
keel_future *keel_file_stat(keel_file *f, struct keel_stat *out);

bool keel_file_is_direct(const keel_file *f);
/* Alignment direct I/O needs for buffer addresses and for offsets and
 * lengths (1 for a buffered file). */
size_t keel_file_mem_align(const keel_file *f);
size_t keel_file_offset_align(const keel_file *f);
int keel_file_fd(const keel_file *f);

/* ---- paths ----------------------------------------------------------------- */

/* Each resolves to 0 or -errno (-ENOENT, -EEXIST, -EACCES, ...);
 * keel_fs_size to the size of path. Paths are copied: the caller's strings
 * need not outlive the call. Relative paths start at the process's working
 * directory. These bypass the io_queue (they move no data). */
keel_future *keel_fs_rename(const char *from, const char *to);
keel_future *keel_fs_unlink(const char *path);
keel_future *keel_fs_mkdir(const char *path, mode_t mode);
keel_future *keel_fs_size(const char *path);
/* Fills *out with path's metadata (following symlinks); resolves to 0 or
 * -errno. out must stay valid until then. */
keel_future *keel_fs_stat(const char *path, struct keel_stat *out);

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

/* ---- streams ---------------------------------------------------------------------
 *
 * An append-only writer with write-behind: keel_appender_append copies the
 * bytes into the appender's buffer and returns at once; the appender keeps
 * one write in flight and starts the next, with everything appended
 * meanwhile, when it completes, so a stream of small appends becomes a few
 * large writes (group commit). keel_appender_flush resolves when what was
 * appended before it is durable (written, then fdatasync'ed), and flushes
 * called while a sync is in flight share the next one.
 *
 * On a direct (O_DIRECT) file the tail block is written padded with zeros
 * and rewritten as it fills, so until close other readers see the file
 * rounded up to a block with zeros at the end; an appender starting at an
 * unaligned offset first reads that block. keel_appender_close truncates
 * the file to the bytes appended (also when the file was longer) and then
 * syncs once, which makes both data and size durable. A failed write
 * (ENOSPC, EIO) keeps the bytes it could not write: the error is reported
 * by flush and keel_appender_error until keel_appender_retry writes them
 * successfully (flushes called after the retry get its outcome). Nothing
 * appended is dropped. A failed fdatasync is retried as a sync only: the
 * bytes had left the buffer, and after a failed sync the kernel's own
 * state decides what reached the disk. Calls after close, or two reads at
 * once on one reader, are caught by assert only. */

typedef struct keel_appender_s keel_appender;

/* An appender writing f from offset off on (usually its size); chunk is
 * the most one write carries (0: 1 MiB). NULL on out-of-memory. f must
 * stay open until keel_appender_close resolves. */
keel_appender *keel_appender_new(keel_file *f, uint64_t off, size_t chunk);
/* Appends len bytes (copied). 0, or -ENOMEM. */
int keel_appender_append(keel_appender *a, const void *data, size_t len);
/* Resolves to 0 once everything appended before the call is on stable
 * storage, or -errno of the failing write or sync. */
keel_future *keel_appender_flush(keel_appender *a);
/* Resolves to 0 once everything appended before the call is written to
 * the file (in the page cache for a buffered file: it survives the
 * process, not the machine), or -errno. */
keel_future *keel_appender_write_out(keel_appender *a);
/* Offsets: appended so far (the logical end), written, and durable. */
uint64_t keel_appender_offset(const keel_appender *a);
uint64_t keel_appender_written(const keel_appender *a);
uint64_t keel_appender_durable(const keel_appender *a);
/* The error that stopped writing (-ENOSPC, -EIO...), or 0. */
int keel_appender_error(const keel_appender *a);
/* After an error: tries the unwritten bytes again (and a sync if a flush
 * waits); writing goes on normally once that succeeds. */
void keel_appender_retry(keel_appender *a);
/* Writes and syncs what is left, frees the appender (not f); resolves to
 * 0 or -errno (the appender is freed either way). */
keel_future *keel_appender_close(keel_appender *a);

/* A sequential reader with read-ahead: keeps up to ahead reads of chunk
 * bytes in flight past what was consumed (chunk 0: 256 KiB, ahead 0: 4),
 * so a parser consuming a file sees the device's bandwidth, not its
 * latency. Works on direct and buffered files. */
typedef struct keel_reader_s keel_reader;

/* A reader of f from offset off to the end of the file. NULL on
 * out-of-memory. */
keel_reader *keel_reader_new(keel_file *f, uint64_t off, size_t chunk, unsigned ahead);
/* Copies up to len bytes at the reader's position into buf; resolves to
 * the count (short only at end of file; 0 there) or -errno. One read at a
 * time. */
keel_future *keel_reader_read(keel_reader *r, void *buf, size_t len);
/* The offset of the next byte keel_reader_read returns. */
uint64_t keel_reader_offset(const keel_reader *r);
/* Waits for the reads in flight and frees r (not f); resolves to 0. */
keel_future *keel_reader_close(keel_reader *r);

/* ---- aligned buffers -------------------------------------------------------- */

/* A buffer of at least size bytes, aligned to 4096 (enough for O_DIRECT on
 * any device), or NULL. Free with keel_dma_free. Any thread. */
void *keel_dma_alloc(size_t size);
void keel_dma_free(void *p);

/* Registers [buf, buf + len) with the calling shard's ring: from then on
 * that shard's keel_file_read/write/write_dsync whose buffer lies wholly
 * inside it use READ_FIXED/WRITE_FIXED, which skip pinning the pages on
 * every request (this pays for buffers reused for many operations: a log's
 * write buffers, a cache's arena). 0, or -EINVAL, -EEXIST (overlaps a
 * registered region), -ENOSPC (64 regions per shard), -EFAULT (over 1 GiB),
 * -ENOMEM (past RLIMIT_MEMLOCK without CAP_IPC_LOCK). On epoll a no-op that
 * returns 0. Shard-local: call it on each shard that does the I/O. */
int keel_dma_register(void *buf, size_t len);
/* Unregisters the region registered at buf on the calling shard; the
 * kernel keeps it pinned until I/O already using it ends, so buf may be
 * freed once those have resolved. 0, or -ENOENT (0 on epoll). */
int keel_dma_unregister(void *buf);

#ifdef __cplusplus
}
#endif
#endif
