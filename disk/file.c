/* Files as futures: io_uring opcodes on the io_uring backend where the
 * kernel has them, the blocking pool otherwise and on epoll (see
 * <keel/disk.h> for which call goes where and why). Every operation is a
 * keel__fop; the backend's submit() refuses what it cannot run, and the
 * same fop then runs in the blocking pool, so both roads share one
 * completion path. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "ioq.h"

#define DMA_ALIGN 4096

struct keel_file_s {
    int fd;
    bool direct;
    uint8_t cls; /* io_queue class */
    uint32_t mem_align, off_align;
};

void keel_file_set_io_class(keel_file *f, keel_io_class *c)
{
    f->cls = keel__ioq_class_index(c);
}

bool keel_file_is_direct(const keel_file *f)
{
    return f->direct;
}
size_t keel_file_mem_align(const keel_file *f)
{
    return f->mem_align;
}
size_t keel_file_offset_align(const keel_file *f)
{
    return f->off_align;
}
int keel_file_fd(const keel_file *f)
{
    return f->fd;
}

void *keel_dma_alloc(size_t size)
{
    if (size == 0)
        size = 1;
    if (size > SIZE_MAX - DMA_ALIGN)
        return NULL;
    return aligned_alloc(DMA_ALIGN, (size + DMA_ALIGN - 1) & ~(size_t)(DMA_ALIGN - 1));
}

void keel_dma_free(void *p)
{
    free(p);
}

/* ---- registered buffers ------------------------------------------------------------ */

int keel_dma_register(void *buf, size_t len)
{
    if (!buf || !len)
        return -EINVAL;
    keel__shard *s = keel__shard_self();
    return s->backend->dma_register ? s->backend->dma_register(s, buf, len) : 0;
}

int keel_dma_unregister(void *buf)
{
    keel__shard *s = keel__shard_self();
    return s->backend->dma_unregister ? s->backend->dma_unregister(s, buf) : 0;
}

/* ---- one operation: in the ring, or in the blocking pool ------------------------ */

static int statx_dirfd(const keel__fop *fo)
{
    return fo->path && fo->path[0] ? AT_FDCWD : fo->op.fd;
}

static keel_result fop_run_sync(void *arg)
{
    keel__fop *fo = arg;
    int fd = fo->op.fd;
    ssize_t n = 0;
    switch (fo->kind) {
    case KEEL__FOP_READ: n = pread(fd, fo->buf, fo->len, (off_t)fo->off); break;
    case KEEL__FOP_WRITE: n = pwrite(fd, fo->buf, fo->len, (off_t)fo->off); break;
    case KEEL__FOP_WRITE_DSYNC: {
        /* All of it, then the fdatasync: one pool job, as one linked pair
         * is on the ring. */
        uint64_t done = 0;
        while (done < fo->len) {
            n = pwrite(fd, (char *)fo->buf + done, fo->len - done, (off_t)(fo->off + done));
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                return keel_err(n < 0 ? -errno : -EIO);
            done += (uint64_t)n;
        }
        n = fdatasync(fd) ? -1 : (ssize_t)done;
        break;
    }
    case KEEL__FOP_FSYNC: n = fsync(fd); break;
    case KEEL__FOP_FDATASYNC: n = fdatasync(fd); break;
    case KEEL__FOP_FALLOCATE: n = fallocate(fd, 0, (off_t)fo->off, (off_t)fo->len); break;
    case KEEL__FOP_CLOSE: n = close(fd); break;
    case KEEL__FOP_FTRUNCATE: n = ftruncate(fd, (off_t)fo->off); break;
    case KEEL__FOP_OPEN: n = openat(AT_FDCWD, fo->path, fo->flags, (mode_t)fo->mode); break;
    case KEEL__FOP_STATX:
        n = statx(statx_dirfd(fo), fo->path ? fo->path : "", fo->flags, fo->mode, fo->buf);
        break;
    case KEEL__FOP_RENAME: n = renameat(AT_FDCWD, fo->path, AT_FDCWD, fo->path2); break;
    case KEEL__FOP_UNLINK: n = unlinkat(AT_FDCWD, fo->path, 0); break;
    case KEEL__FOP_MKDIR: n = mkdirat(AT_FDCWD, fo->path, (mode_t)fo->mode); break;
    default: errno = EINVAL; n = -1;
    }
    return n < 0 ? keel_err(-errno) : keel_ok(n);
}

static void stat_from_statx(struct keel_stat *out, const struct statx *x)
{
    memset(out, 0, sizeof(*out));
    out->size = x->stx_size;
    out->blocks = x->stx_blocks;
    out->mode = x->stx_mode;
    out->mtime_ns = (int64_t)x->stx_mtime.tv_sec * 1000000000 + x->stx_mtime.tv_nsec;
    if (x->stx_mask & STATX_DIOALIGN) {
        out->dio_mem_align = x->stx_dio_mem_align;
        out->dio_offset_align = x->stx_dio_offset_align;
    }
}

/* OPEN succeeded with fd: fills in the keel_file. A direct file then asks
 * statx for its DIOALIGN (returns true: fo goes on as that STATX). */
static bool opened(keel__shard *s, keel__fop *fo, int fd)
{
    keel_file *f = fo->out;
    f->fd = fd;
    f->direct = fo->flags & O_DIRECT;
    f->cls = 0;
    f->mem_align = f->off_align = 1;
    if (!f->direct)
        return false;
    /* DIOALIGN (Linux 6.1) on files of file systems that report it; else
     * the page size, which every device accepts. */
    f->mem_align = f->off_align = DMA_ALIGN;
    fo->buf = keel__alloc(sizeof(struct statx));
    if (!fo->buf)
        return false;
    free(fo->path);
    fo->path = NULL;
    fo->kind = KEEL__FOP_STATX;
    fo->op.fd = fd;
    fo->flags = AT_EMPTY_PATH;
    fo->mode = STATX_DIOALIGN;
    fo->opening = true;
    keel__fop_dispatch(s, fo);
    return true;
}

/* A result, from either road: a short write goes on, a direct open that
 * the file system refuses retries buffered; anything else resolves the
 * operation's future. */
static void fop_done(keel__shard *s, keel__fop *fo, int64_t res)
{
    keel_result r = res < 0 ? keel_err((int)res) : keel_ok(res);
    switch (fo->kind) {
    case KEEL__FOP_WRITE:
    case KEEL__FOP_WRITE_DSYNC:
        if (res > 0 && (uint64_t)res < fo->len) {
            fo->done += (uint64_t)res;
            fo->buf = (char *)fo->buf + res;
            fo->off += (uint64_t)res;
            fo->len -= (uint64_t)res;
            keel__fop_dispatch(s, fo); /* the rest (and, for DSYNC, the sync) */
            return;
        }
        if (res == 0 && fo->len > 0)
            r = keel_err(-EIO); /* no progress: never report a partial write as done */
        else if (res >= 0)
            r = keel_ok((int64_t)(fo->done + (uint64_t)res));
        break;
    case KEEL__FOP_OPEN:
        if (res == -EINVAL && (fo->flags & O_DIRECT)) { /* tmpfs before 6.6 and friends */
            fo->flags &= ~O_DIRECT;
            keel__fop_dispatch(s, fo);
            return;
        }
        if (res < 0) {
            free(fo->out);
            break;
        }
        if (opened(s, fo, (int)res))
            return;
        r = keel_ok_ptr(fo->out);
        break;
    case KEEL__FOP_STATX: {
        const struct statx *x = fo->buf;
        if (fo->opening) {
            keel_file *f = fo->out;
            if (res == 0 && (x->stx_mask & STATX_DIOALIGN) && x->stx_dio_mem_align &&
                x->stx_dio_offset_align) {
                f->mem_align = x->stx_dio_mem_align;
                f->off_align = x->stx_dio_offset_align;
            }
            r = keel_ok_ptr(f); /* the open succeeded; alignment keeps its default */
        } else if (res == 0) {
            if (fo->out)
                stat_from_statx(fo->out, x);
            else
                r = keel_ok((int64_t)x->stx_size); /* keel_file_size, keel_fs_size */
        }
        keel__free(fo->buf, sizeof(struct statx));
        break;
    }
    default: break;
    }
    if (fo->queued_in_ioq)
        keel__ioq_done(s, fo);
    free(fo->path);
    free(fo->path2);
    keel_promise p = fo->p;
    keel__free(fo, sizeof(*fo));
    keel_promise_resolve(&p, r);
}

/* A linked write and fdatasync both completed: one result, as the pool's
 * job gives. A short write cancelled the fdatasync and goes on (its rest,
 * then the sync); a full write reports the sync's error, if any. */
static void pair_done(keel__shard *s, keel__fop *fo)
{
    int64_t w = fo->first_res;
    uint64_t sent = fo->len < KEEL__FOP_MAX_IO ? fo->len : KEEL__FOP_MAX_IO;
    if (w >= 0 && (uint64_t)w == sent && fo->link_res < 0)
        w = fo->link_res;
    fop_done(s, fo, w);
}

static void fop_completed(keel__op *op, int res, uint32_t flags)
{
    (void)flags;
    keel__shard *s = keel__shard_self();
    keel__fop *fo = op->ctx;
    s->pending_ops--;
    if (fo->kind != KEEL__FOP_WRITE_DSYNC) {
        fop_done(s, fo, res);
        return;
    }
    fo->first_res = res;
    if (--fo->completions == 0)
        pair_done(s, fo);
}

static void fop_link_completed(keel__op *op, int res, uint32_t flags)
{
    (void)flags;
    keel__shard *s = keel__shard_self();
    keel__fop *fo = op->ctx;
    s->pending_ops--;
    fo->link_res = res;
    if (--fo->completions == 0)
        pair_done(s, fo);
}

static void fop_blocking_done(void *ctx, keel_result r)
{
    fop_done(keel__shard_self(), ctx, r.err ? r.err : r.val);
}

void keel__fop_dispatch(keel__shard *s, keel__fop *fo)
{
    fo->op.type = KEEL__OP_FILE;
    fo->op.complete = fop_completed;
    fo->op.ctx = fo;
    fo->completions = 1;
    if (fo->kind == KEEL__FOP_WRITE_DSYNC) {
        fo->link.type = KEEL__OP_FILE;
        fo->link.fd = fo->op.fd;
        fo->link.complete = fop_link_completed;
        fo->link.ctx = fo;
        fo->completions = 2;
    }
    if (s->backend->submit(s, &fo->op) == 0) {
        s->pending_ops += fo->completions;
        return;
    }
    /* epoll, an opcode this kernel lacks, or a full submission queue: the
     * slow road, with the same results. */
    keel_on_done(keel_run_blocking(fop_run_sync, fo), fop_blocking_done, fo);
}

static keel__fop *fop_new(uint8_t kind, int fd)
{
    keel__fop *fo = keel__alloc(sizeof(*fo));
    if (!fo)
        return NULL;
    memset(fo, 0, sizeof(*fo));
    fo->kind = kind;
    fo->op.fd = fd;
    return fo;
}

/* An operation on an open file: through its class in the io_queue. */
static keel_future *fop_start(keel_file *f, uint8_t kind, void *buf, uint64_t len, uint64_t off)
{
    keel__fop *fo = fop_new(kind, f->fd);
    if (!fo)
        return keel_make_error(-ENOMEM);
    fo->buf = buf;
    fo->len = len;
    fo->off = off;
    fo->cls = f->cls;
    fo->queued_in_ioq = true;
    keel_future *fut = keel_promise_init(&fo->p);
    keel__ioq_submit(keel__shard_self(), fo);
    return fut;
}

/* A path operation (open, stat, rename, unlink, mkdir) goes straight to
 * the backend, past the io_queue: it belongs to no file and so to no
 * class, moves no data for the queue's byte budget to bound, and an open
 * or a rename that commits a snapshot should not wait behind a class's
 * bulk writes. The kernel copies the paths at prep; keel keeps its copies
 * until completion anyway, for the blocking pool and older kernels. */
static keel_future *path_start(keel__fop *fo, const char *a, const char *b)
{
    if (!fo)
        return keel_make_error(-ENOMEM);
    fo->op.fd = -1;
    fo->path = a ? strdup(a) : NULL;
    fo->path2 = b ? strdup(b) : NULL;
    if ((a && !fo->path) || (b && !fo->path2)) {
        free(fo->path);
        free(fo->path2);
        if (fo->kind == KEEL__FOP_OPEN)
            free(fo->out);
        if (fo->buf)
            keel__free(fo->buf, sizeof(struct statx));
        keel__free(fo, sizeof(*fo));
        return keel_make_error(-ENOMEM);
    }
    keel_future *fut = keel_promise_init(&fo->p);
    keel__fop_dispatch(keel__shard_self(), fo);
    return fut;
}

keel_future *keel_file_read(keel_file *f, uint64_t off, void *buf, size_t len)
{
    return fop_start(f, KEEL__FOP_READ, buf, len, off);
}

keel_future *keel_file_write(keel_file *f, uint64_t off, const void *buf, size_t len)
{
    if (len == 0)
        return keel_make_ready(0);
    return fop_start(f, KEEL__FOP_WRITE, (void *)buf, len, off);
}

keel_future *keel_file_write_dsync(keel_file *f, uint64_t off, const void *buf, size_t len)
{
    if (len == 0)
        return keel_file_fdatasync(f);
    return fop_start(f, KEEL__FOP_WRITE_DSYNC, (void *)buf, len, off);
}

keel_future *keel_file_fsync(keel_file *f)
{
    return fop_start(f, KEEL__FOP_FSYNC, NULL, 0, 0);
}

keel_future *keel_file_fdatasync(keel_file *f)
{
    return fop_start(f, KEEL__FOP_FDATASYNC, NULL, 0, 0);
}

keel_future *keel_file_allocate(keel_file *f, uint64_t off, uint64_t len)
{
    return fop_start(f, KEEL__FOP_FALLOCATE, NULL, len, off);
}

keel_future *keel_file_truncate(keel_file *f, uint64_t size)
{
    return fop_start(f, KEEL__FOP_FTRUNCATE, NULL, 0, size);
}

static void file_closed(void *ctx, keel_result r)
{
    (void)r;
    free(ctx);
}

keel_future *keel_file_close(keel_file *f)
{
    return keel_finally(fop_start(f, KEEL__FOP_CLOSE, NULL, 0, 0), file_closed, f);
}

/* statx of f (path NULL) or of path, into out; out NULL: resolve to the size. */
static keel_future *stat_start(keel_file *f, const char *path, struct keel_stat *out)
{
    keel__fop *fo = fop_new(KEEL__FOP_STATX, f ? f->fd : -1);
    if (!fo)
        return keel_make_error(-ENOMEM);
    fo->buf = keel__alloc(sizeof(struct statx));
    if (!fo->buf) {
        keel__free(fo, sizeof(*fo));
        return keel_make_error(-ENOMEM);
    }
    fo->out = out;
    fo->mode = STATX_BASIC_STATS | STATX_DIOALIGN;
    if (path)
        return path_start(fo, path, NULL);
    fo->flags = AT_EMPTY_PATH;
    fo->cls = f->cls;
    fo->queued_in_ioq = true;
    keel_future *fut = keel_promise_init(&fo->p);
    keel__ioq_submit(keel__shard_self(), fo);
    return fut;
}

keel_future *keel_file_stat(keel_file *f, struct keel_stat *out)
{
    if (!out)
        return keel_make_error(-EINVAL);
    return stat_start(f, NULL, out);
}

keel_future *keel_file_size(keel_file *f)
{
    return stat_start(f, NULL, NULL);
}

keel_future *keel_fs_stat(const char *path, struct keel_stat *out)
{
    if (!path || !out)
        return keel_make_error(-EINVAL);
    return stat_start(NULL, path, out);
}

keel_future *keel_fs_size(const char *path)
{
    if (!path)
        return keel_make_error(-EINVAL);
    return stat_start(NULL, path, NULL);
}

keel_future *keel_file_open(const char *path, unsigned flags, mode_t mode)
{
    if (!path || !*path || !(flags & (KEEL_FILE_READ | KEEL_FILE_WRITE)))
        return keel_make_error(-EINVAL);
    int oflags = O_CLOEXEC;
    if ((flags & KEEL_FILE_READ) && (flags & KEEL_FILE_WRITE))
        oflags |= O_RDWR;
    else if (flags & KEEL_FILE_WRITE)
        oflags |= O_WRONLY;
    else
        oflags |= O_RDONLY;
    if (flags & KEEL_FILE_CREATE)
        oflags |= O_CREAT;
    if (flags & KEEL_FILE_EXCL)
        oflags |= O_EXCL;
    if (flags & KEEL_FILE_TRUNCATE)
        oflags |= O_TRUNC;
    if (!(flags & KEEL_FILE_BUFFERED))
        oflags |= O_DIRECT; /* dropped again if the file system refuses it */
    keel__fop *fo = fop_new(KEEL__FOP_OPEN, -1);
    keel_file *f = malloc(sizeof(*f));
    if (!fo || !f) {
        if (fo)
            keel__free(fo, sizeof(*fo));
        free(f);
        return keel_make_error(-ENOMEM);
    }
    fo->out = f;
    fo->flags = oflags;
    fo->mode = mode;
    return path_start(fo, path, NULL);
}

keel_future *keel_fs_rename(const char *from, const char *to)
{
    if (!from || !to)
        return keel_make_error(-EINVAL);
    return path_start(fop_new(KEEL__FOP_RENAME, -1), from, to);
}

keel_future *keel_fs_unlink(const char *path)
{
    if (!path)
        return keel_make_error(-EINVAL);
    return path_start(fop_new(KEEL__FOP_UNLINK, -1), path, NULL);
}

keel_future *keel_fs_mkdir(const char *path, mode_t mode)
{
    if (!path)
        return keel_make_error(-EINVAL);
    keel__fop *fo = fop_new(KEEL__FOP_MKDIR, -1);
    if (fo)
        fo->mode = mode;
    return path_start(fo, path, NULL);
}
