/* Files as futures: io_uring opcodes on the io_uring backend, the blocking
 * pool on epoll (see <keel/disk.h> for which call goes where and why). */
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
/* One io_uring read or write moves at most this much; a longer write goes
 * on where the last one ended. */
#define MAX_IO (1u << 30)

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

/* ---- one operation: in the ring, or in the blocking pool ------------------------ */

static keel_result fop_run_sync(void *arg)
{
    keel__fop *fo = arg;
    int fd = fo->op.fd;
    ssize_t n = 0;
    switch (fo->kind) {
    case KEEL__FOP_READ: n = pread(fd, fo->buf, fo->len, (off_t)fo->off); break;
    case KEEL__FOP_WRITE: n = pwrite(fd, fo->buf, fo->len, (off_t)fo->off); break;
    case KEEL__FOP_FSYNC: n = fsync(fd); break;
    case KEEL__FOP_FDATASYNC: n = fdatasync(fd); break;
    case KEEL__FOP_FALLOCATE: n = fallocate(fd, 0, (off_t)fo->off, (off_t)fo->len); break;
    case KEEL__FOP_CLOSE: n = close(fd); break;
    default: errno = EINVAL; n = -1;
    }
    return n < 0 ? keel_err(-errno) : keel_ok(n);
}

/* A result, from either path: a short write goes on; anything else
 * resolves the operation's future. */
static void fop_done(keel__shard *s, keel__fop *fo, int64_t res)
{
    if (fo->kind == KEEL__FOP_WRITE && res > 0 && (uint64_t)res < fo->len) {
        fo->done += (uint64_t)res;
        fo->buf = (char *)fo->buf + res;
        fo->off += (uint64_t)res;
        fo->len -= (uint64_t)res;
        keel__fop_dispatch(s, fo);
        return;
    }
    if (fo->kind == KEEL__FOP_WRITE && res == 0 && fo->len > 0)
        res = -EIO; /* no progress: never report a partial write as done */
    else if (fo->kind == KEEL__FOP_WRITE && res >= 0)
        res = (int64_t)(fo->done + (uint64_t)res);
    keel__ioq_done(s, fo);
    keel_promise p = fo->p;
    keel__free(fo, sizeof(*fo));
    keel_promise_resolve(&p, res < 0 ? keel_err((int)res) : keel_ok(res));
}

static void fop_completed(keel__op *op, int res, uint32_t flags)
{
    (void)flags;
    keel__shard *s = keel__shard_self();
    s->pending_ops--;
    fop_done(s, (keel__fop *)op, res);
}

static void fop_blocking_done(void *ctx, keel_result r)
{
    fop_done(keel__shard_self(), ctx, r.err ? r.err : r.val);
}

void keel__fop_dispatch(keel__shard *s, keel__fop *fo)
{
    if (fo->kind == KEEL__FOP_READ || fo->kind == KEEL__FOP_WRITE)
        if (fo->len > MAX_IO)
            fo->len = MAX_IO; /* a read returns short; a write goes on */
    if (s->backend == &keel__reactor_uring) {
        fo->op.type = KEEL__OP_FILE;
        fo->op.complete = fop_completed;
        fo->op.ctx = fo;
        if (s->backend->submit(s, &fo->op) == 0) {
            s->pending_ops++;
            return;
        }
        /* The submission queue is full: this one takes the slow road. */
    }
    keel_on_done(keel_run_blocking(fop_run_sync, fo), fop_blocking_done, fo);
}

static keel_future *fop_start(keel_file *f, uint8_t kind, void *buf, uint64_t len, uint64_t off)
{
    keel__shard *s = keel__shard_self();
    keel__fop *fo = keel__alloc(sizeof(*fo));
    if (!fo)
        return keel_make_error(-ENOMEM);
    memset(fo, 0, sizeof(*fo));
    fo->op.fd = f->fd;
    fo->kind = kind;
    fo->buf = buf;
    fo->len = len;
    fo->off = off;
    fo->cls = f->cls;
    keel_future *fut = keel_promise_init(&fo->p);
    keel__ioq_submit(s, fo);
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

static void file_closed(void *ctx, keel_result r)
{
    (void)r;
    free(ctx);
}

keel_future *keel_file_close(keel_file *f)
{
    return keel_finally(fop_start(f, KEEL__FOP_CLOSE, NULL, 0, 0), file_closed, f);
}

/* ---- the blocking pool: open, truncate, sizes and paths ---------------------------- */

typedef struct path_job {
    int op;
    unsigned flags;
    mode_t mode;
    int fd;
    uint64_t size;
    keel_file *file; /* open: the result */
    char *a, *b;
} path_job;

enum { PJ_OPEN, PJ_TRUNCATE, PJ_FSIZE, PJ_RENAME, PJ_UNLINK, PJ_MKDIR, PJ_SIZE };

static keel_result open_sync(path_job *j)
{
    int oflags = O_CLOEXEC;
    if ((j->flags & KEEL_FILE_READ) && (j->flags & KEEL_FILE_WRITE))
        oflags |= O_RDWR;
    else if (j->flags & KEEL_FILE_WRITE)
        oflags |= O_WRONLY;
    else
        oflags |= O_RDONLY;
    if (j->flags & KEEL_FILE_CREATE)
        oflags |= O_CREAT;
    if (j->flags & KEEL_FILE_EXCL)
        oflags |= O_EXCL;
    if (j->flags & KEEL_FILE_TRUNCATE)
        oflags |= O_TRUNC;
    bool direct = !(j->flags & KEEL_FILE_BUFFERED);
    int fd = direct ? open(j->a, oflags | O_DIRECT, j->mode) : -1;
    if (fd < 0 && direct && errno == EINVAL) /* tmpfs and friends: no O_DIRECT */
        direct = false;
    if (fd < 0 && !direct)
        fd = open(j->a, oflags, j->mode);
    if (fd < 0)
        return keel_err(-errno);
    keel_file *f = malloc(sizeof(*f));
    if (!f) {
        close(fd);
        return keel_err(-ENOMEM);
    }
    f->fd = fd;
    f->direct = direct;
    f->cls = 0;
    f->mem_align = f->off_align = 1;
    if (direct) {
        /* DIOALIGN (Linux 6.1) on files of file systems that report it;
         * else the page size, which every device accepts. */
        struct statx st;
        f->mem_align = f->off_align = DMA_ALIGN;
        if (statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &st) == 0 &&
            (st.stx_mask & STATX_DIOALIGN) && st.stx_dio_mem_align && st.stx_dio_offset_align) {
            f->mem_align = st.stx_dio_mem_align;
            f->off_align = st.stx_dio_offset_align;
        }
    }
    j->file = f;
    return keel_ok(0);
}

static keel_result path_run(void *arg)
{
    path_job *j = arg;
    struct stat st;
    switch (j->op) {
    case PJ_OPEN: return open_sync(j);
    case PJ_TRUNCATE: return ftruncate(j->fd, (off_t)j->size) ? keel_err(-errno) : keel_ok(0);
    case PJ_FSIZE: return fstat(j->fd, &st) ? keel_err(-errno) : keel_ok(st.st_size);
    case PJ_SIZE: return stat(j->a, &st) ? keel_err(-errno) : keel_ok(st.st_size);
    case PJ_RENAME: return rename(j->a, j->b) ? keel_err(-errno) : keel_ok(0);
    case PJ_UNLINK: return unlink(j->a) ? keel_err(-errno) : keel_ok(0);
    case PJ_MKDIR: return mkdir(j->a, j->mode) ? keel_err(-errno) : keel_ok(0);
    }
    return keel_err(-EINVAL);
}

static keel_future *path_done(void *ctx, keel_result r)
{
    path_job *j = ctx;
    if (!r.err && j->op == PJ_OPEN)
        r = keel_ok_ptr(j->file);
    free(j->a);
    free(j->b);
    free(j);
    return keel_make_result(r);
}

static keel_future *path_start(int op, const char *a, const char *b, path_job init)
{
    path_job *j = malloc(sizeof(*j));
    if (!j)
        return keel_make_error(-ENOMEM);
    *j = init;
    j->op = op;
    j->a = a ? strdup(a) : NULL;
    j->b = b ? strdup(b) : NULL;
    if ((a && !j->a) || (b && !j->b)) {
        free(j->a);
        free(j);
        return keel_make_error(-ENOMEM);
    }
    return keel_then_wrapped(keel_run_blocking(path_run, j), path_done, j);
}

keel_future *keel_file_open(const char *path, unsigned flags, mode_t mode)
{
    if (!path || !*path || !(flags & (KEEL_FILE_READ | KEEL_FILE_WRITE)))
        return keel_make_error(-EINVAL);
    return path_start(PJ_OPEN, path, NULL, (path_job){.flags = flags, .mode = mode});
}

keel_future *keel_file_truncate(keel_file *f, uint64_t size)
{
    return path_start(PJ_TRUNCATE, NULL, NULL, (path_job){.fd = f->fd, .size = size});
}

keel_future *keel_file_size(keel_file *f)
{
    return path_start(PJ_FSIZE, NULL, NULL, (path_job){.fd = f->fd});
}

keel_future *keel_fs_size(const char *path)
{
    return path_start(PJ_SIZE, path, NULL, (path_job){0});
}

keel_future *keel_fs_rename(const char *from, const char *to)
{
    return path_start(PJ_RENAME, from, to, (path_job){0});
}

keel_future *keel_fs_unlink(const char *path)
{
    return path_start(PJ_UNLINK, path, NULL, (path_job){0});
}

keel_future *keel_fs_mkdir(const char *path, mode_t mode)
{
    return path_start(PJ_MKDIR, path, NULL, (path_job){.mode = mode});
}
