/* The io_uring backend: one ring per shard, created on the shard's thread.
 *
 * Setup flags are probed from the most to the least capable set, since a
 * kernel rejects flags it does not know with -EINVAL: SINGLE_ISSUER +
 * DEFER_TASKRUN (completions are posted only when this thread enters the
 * kernel, which is why the loop enters once every turn even when busy),
 * COOP_TASKRUN, SUBMIT_ALL, and a CQ eight times the SQ so bursts of
 * multishot completions never overflow it. */
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"

/* user_data tags below any valid pointer */
#define TAG_IGNORE 0ull
#define TAG_WAKE 1ull

_Static_assert(KEEL__F_BUFFER == IORING_CQE_F_BUFFER, "keel's completion flags are io_uring's");
_Static_assert(KEEL__F_MORE == IORING_CQE_F_MORE, "keel's completion flags are io_uring's");
_Static_assert(KEEL__BUF_SHIFT == IORING_CQE_BUFFER_SHIFT,
               "keel's completion flags are io_uring's");

#define BUF_GROUP 0

/* liburing 2.3 knows no ftruncate; the kernel has it since 6.9 (the probe
 * says whether this one does). It takes the fd and the size in off. */
#ifndef IORING_OP_FTRUNCATE
#define IORING_OP_FTRUNCATE 55
#endif

/* Registered file buffers: a sparse table of this many slots, created on
 * the first keel_dma_register. Few, large regions are the use (a log's
 * buffers, a cache's arena), so a linear search at prep time is cheap. */
#define DMA_SLOTS 64

typedef struct dma_region {
    uintptr_t base;
    size_t len; /* 0: the slot is free */
} dma_region;

typedef struct uring_state {
    struct io_uring ring;
    unsigned setup_flags;
    bool has_msg_ring;
    bool has_cqe_skip;
    struct io_uring_buf_ring *br; /* provided-buffer ring, when net is used */
    size_t br_bytes;
    unsigned br_pending;  /* buffers added since the last tail advance */
    unsigned last_reaped; /* completions the previous poll found */
    uint32_t file_kinds;  /* bit k: the kernel has the opcode for KEEL__FOP_k */
    bool dma_table;       /* the sparse buffer table is registered */
    unsigned dma_used;    /* slots in use */
    dma_region dma[DMA_SLOTS];
} uring_state;

_Static_assert(KEEL__FOP_KINDS <= 32, "file_kinds is a 32-bit mask");

/* Under load, a shard with nothing runnable waits for a batch of
 * completions (half of what the last poll found, up to BATCH_MAX) for at
 * most BATCH_WAIT_NS, instead of waking for each one: fewer loop turns and
 * kernel entries per operation, for a bounded delay. At low load the last
 * poll found one or two and the shard wakes for the first, as before. */
#define BATCH_MIN_REAPED 4
#define BATCH_MAX 32
#define BATCH_WAIT_NS 50000ull

static bool uring_probe(char *why, size_t len)
{
    struct io_uring ring;
    int err = io_uring_queue_init(4, &ring, 0);
    if (err < 0) {
        if (why)
            snprintf(why, len, "io_uring_setup: %s", strerror(-err));
        return false;
    }
    io_uring_queue_exit(&ring);
    return true;
}

static int uring_init(keel__shard *s, const keel_config *c)
{
    uring_state *u = calloc(1, sizeof(*u));
    if (!u)
        return -ENOMEM;
    unsigned entries = c->ring_entries ? c->ring_entries : 1024;
    static const unsigned tries[] = {
        IORING_SETUP_CQSIZE | IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN |
            IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
        IORING_SETUP_CQSIZE | IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN |
            IORING_SETUP_SINGLE_ISSUER,
        IORING_SETUP_CQSIZE | IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN,
        IORING_SETUP_CQSIZE | IORING_SETUP_SUBMIT_ALL,
        IORING_SETUP_CQSIZE,
    };
    int err = -EINVAL;
    struct io_uring_params p;
    for (size_t i = 0; i < sizeof(tries) / sizeof(tries[0]); i++) {
        memset(&p, 0, sizeof(p));
        p.flags = tries[i];
        p.cq_entries = entries * 8;
        err = io_uring_queue_init_params(entries, &u->ring, &p);
        if (err != -EINVAL)
            break;
    }
    if (err < 0) {
        free(u);
        return err;
    }
    u->setup_flags = p.flags;
    u->has_cqe_skip = p.features & IORING_FEAT_CQE_SKIP;
    struct io_uring_probe *probe = io_uring_get_probe_ring(&u->ring);
    if (probe) {
        u->has_msg_ring = io_uring_opcode_supported(probe, IORING_OP_MSG_RING);
        /* Which file operations the ring runs; the others go to the
         * blocking pool (file.c), so an older kernel loses speed, not
         * function. READ, WRITE, FSYNC, FALLOCATE and CLOSE predate every
         * kernel the setup flags above accept, but probing costs nothing. */
        static const struct {
            uint8_t kind, opcode, opcode2;
        } file_ops[] = {
            {KEEL__FOP_READ, IORING_OP_READ, IORING_OP_READ_FIXED},
            {KEEL__FOP_WRITE, IORING_OP_WRITE, IORING_OP_WRITE_FIXED},
            {KEEL__FOP_FSYNC, IORING_OP_FSYNC, IORING_OP_FSYNC},
            {KEEL__FOP_FDATASYNC, IORING_OP_FSYNC, IORING_OP_FSYNC},
            {KEEL__FOP_FALLOCATE, IORING_OP_FALLOCATE, IORING_OP_FALLOCATE},
            {KEEL__FOP_CLOSE, IORING_OP_CLOSE, IORING_OP_CLOSE},
            {KEEL__FOP_WRITE_DSYNC, IORING_OP_WRITE, IORING_OP_FSYNC},
            {KEEL__FOP_FTRUNCATE, IORING_OP_FTRUNCATE, IORING_OP_FTRUNCATE},
            {KEEL__FOP_OPEN, IORING_OP_OPENAT, IORING_OP_OPENAT},
            {KEEL__FOP_STATX, IORING_OP_STATX, IORING_OP_STATX},
            {KEEL__FOP_RENAME, IORING_OP_RENAMEAT, IORING_OP_RENAMEAT},
            {KEEL__FOP_UNLINK, IORING_OP_UNLINKAT, IORING_OP_UNLINKAT},
            {KEEL__FOP_MKDIR, IORING_OP_MKDIRAT, IORING_OP_MKDIRAT},
        };
        for (size_t i = 0; i < sizeof(file_ops) / sizeof(file_ops[0]); i++)
            if (io_uring_opcode_supported(probe, file_ops[i].opcode) &&
                io_uring_opcode_supported(probe, file_ops[i].opcode2))
                u->file_kinds |= 1u << file_ops[i].kind;
        io_uring_free_probe(probe);
    }
    /* A registered ring fd saves an fget/fput on every io_uring_enter. */
    io_uring_register_ring_fd(&u->ring);
    s->ring_fd = u->ring.ring_fd;
    s->backend_state = u;
    if (s->id == 0 && !keel__rt->config.quiet)
        keel__log("io_uring: sq=%u cq=%u%s%s%s, wake-ups by %s", u->ring.sq.ring_entries,
                  u->ring.cq.ring_entries,
                  (p.flags & IORING_SETUP_DEFER_TASKRUN) ? " DEFER_TASKRUN" : "",
                  (p.flags & IORING_SETUP_SINGLE_ISSUER) ? " SINGLE_ISSUER" : "",
                  (p.flags & IORING_SETUP_COOP_TASKRUN) ? " COOP_TASKRUN" : "",
                  u->has_msg_ring ? "IORING_OP_MSG_RING" : "eventfd");
    return 0;
}

static void uring_fini(keel__shard *s)
{
    uring_state *u = s->backend_state;
    if (!u)
        return;
    io_uring_queue_exit(&u->ring);
    if (u->br)
        munmap(u->br, u->br_bytes);
    free(u);
    s->backend_state = NULL;
    s->ring_fd = -1;
}

static struct io_uring_sqe *get_sqe(uring_state *u)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);
    if (KEEL__UNLIKELY(!sqe)) {
        /* SQ full: flush what is queued to make room. */
        io_uring_submit(&u->ring);
        sqe = io_uring_get_sqe(&u->ring);
    }
    return sqe;
}

/* The registered region holding all of [p, p + len), or -1. */
static int dma_slot(const uring_state *u, const void *p, size_t len)
{
    if (!u->dma_used)
        return -1;
    uintptr_t a = (uintptr_t)p;
    for (int i = 0; i < DMA_SLOTS; i++) {
        const dma_region *r = &u->dma[i];
        if (r->len && a >= r->base && a - r->base <= r->len && len <= r->len - (a - r->base))
            return i;
    }
    return -1;
}

static void prep_file(uring_state *u, struct io_uring_sqe *sqe, const keel__fop *fo)
{
    int fd = fo->op.fd;
    unsigned len = (unsigned)(fo->len < KEEL__FOP_MAX_IO ? fo->len : KEEL__FOP_MAX_IO);
    int slot;
    switch (fo->kind) {
    case KEEL__FOP_READ:
        /* Inside a registered region the kernel skips pinning the pages. */
        if ((slot = dma_slot(u, fo->buf, len)) >= 0)
            io_uring_prep_read_fixed(sqe, fd, fo->buf, len, fo->off, slot);
        else
            io_uring_prep_read(sqe, fd, fo->buf, len, fo->off);
        break;
    case KEEL__FOP_WRITE:
    case KEEL__FOP_WRITE_DSYNC:
        if ((slot = dma_slot(u, fo->buf, len)) >= 0)
            io_uring_prep_write_fixed(sqe, fd, fo->buf, len, fo->off, slot);
        else
            io_uring_prep_write(sqe, fd, fo->buf, len, fo->off);
        break;
    case KEEL__FOP_FSYNC: io_uring_prep_fsync(sqe, fd, 0); break;
    case KEEL__FOP_FDATASYNC: io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC); break;
    case KEEL__FOP_FALLOCATE: io_uring_prep_fallocate(sqe, fd, 0, fo->off, fo->len); break;
    case KEEL__FOP_CLOSE: io_uring_prep_close(sqe, fd); break;
    case KEEL__FOP_FTRUNCATE:
        io_uring_prep_rw(IORING_OP_FTRUNCATE, sqe, fd, NULL, 0, fo->off);
        break;
    case KEEL__FOP_OPEN: io_uring_prep_openat(sqe, AT_FDCWD, fo->path, fo->flags, fo->mode); break;
    case KEEL__FOP_STATX: {
        const char *path = fo->path ? fo->path : ""; /* "": the fd itself (AT_EMPTY_PATH) */
        io_uring_prep_statx(sqe, path[0] ? AT_FDCWD : fd, path, fo->flags, fo->mode, fo->buf);
        break;
    }
    case KEEL__FOP_RENAME:
        io_uring_prep_renameat(sqe, AT_FDCWD, fo->path, AT_FDCWD, fo->path2, 0);
        break;
    case KEEL__FOP_UNLINK: io_uring_prep_unlinkat(sqe, AT_FDCWD, fo->path, 0); break;
    case KEEL__FOP_MKDIR: io_uring_prep_mkdirat(sqe, AT_FDCWD, fo->path, fo->mode); break;
    }
}

/* A file operation: one SQE, or for WRITE_DSYNC a write and an fdatasync
 * linked to it (the fdatasync starts only once the write has completed in
 * full; a failed or short write cancels it), taken together or not at all. */
static int submit_file(keel__shard *s, uring_state *u, keel__fop *fo)
{
    if (fo->kind >= KEEL__FOP_KINDS || !(u->file_kinds & (1u << fo->kind)))
        return -EOPNOTSUPP;
    keel__trace_io(s, KEEL__EV_IO_SUBMIT, fo->op.type, fo->op.fd);
    unsigned need = fo->kind == KEEL__FOP_WRITE_DSYNC ? 2 : 1;
    if (io_uring_sq_space_left(&u->ring) < need)
        io_uring_submit(&u->ring); /* SQ full: flush what is queued to make room */
    if (io_uring_sq_space_left(&u->ring) < need)
        return -EBUSY;
    struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);
    prep_file(u, sqe, fo);
    io_uring_sqe_set_data(sqe, &fo->op);
    if (need == 2) {
        sqe->flags |= IOSQE_IO_LINK;
        sqe = io_uring_get_sqe(&u->ring);
        io_uring_prep_fsync(sqe, fo->op.fd, IORING_FSYNC_DATASYNC);
        io_uring_sqe_set_data(sqe, &fo->link);
    }
    return 0;
}

static int uring_submit(keel__shard *s, keel__op *op)
{
    uring_state *u = s->backend_state;
    if (op->type == KEEL__OP_FILE)
        return submit_file(s, u, (keel__fop *)op);
    keel__trace_io(s, KEEL__EV_IO_SUBMIT, op->type, op->fd);
    struct io_uring_sqe *sqe = get_sqe(u);
    if (!sqe)
        return -EBUSY;
    switch (op->type) {
    case KEEL__OP_READ: io_uring_prep_read(sqe, op->fd, op->buf, op->len, (uint64_t)-1); break;
    case KEEL__OP_ACCEPT_MULTI:
        io_uring_prep_multishot_accept(sqe, op->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        break;
    case KEEL__OP_RECV_MULTI:
        io_uring_prep_recv_multishot(sqe, op->fd, NULL, 0, 0);
        sqe->flags |= IOSQE_BUFFER_SELECT;
        sqe->buf_group = BUF_GROUP;
        break;
    case KEEL__OP_RECV:
        io_uring_prep_recv(sqe, op->fd, NULL, s->bufs->size, 0);
        sqe->flags |= IOSQE_BUFFER_SELECT;
        sqe->buf_group = BUF_GROUP;
        break;
    case KEEL__OP_SEND: io_uring_prep_send(sqe, op->fd, op->buf, op->len, MSG_NOSIGNAL); break;
    case KEEL__OP_SENDMSG: io_uring_prep_sendmsg(sqe, op->fd, op->msg, MSG_NOSIGNAL); break;
    case KEEL__OP_CONNECT: io_uring_prep_connect(sqe, op->fd, op->addr, op->addrlen); break;
    default:
        /* The SQE is taken: make it a harmless no-op rather than submit
         * whatever the ring held there. */
        io_uring_prep_nop(sqe);
        io_uring_sqe_set_data64(sqe, TAG_IGNORE);
        return -EINVAL;
    }
    io_uring_sqe_set_data(sqe, op);
    return 0;
}

static bool uring_has_queued(keel__shard *s)
{
    uring_state *u = s->backend_state;
    return io_uring_sq_ready(&u->ring) > 0 || u->br_pending > 0;
}

static void uring_cancel(keel__shard *s, keel__op *op)
{
    uring_state *u = s->backend_state;
    struct io_uring_sqe *sqe = get_sqe(u);
    if (!sqe)
        return;
    io_uring_prep_cancel64(sqe, (uint64_t)(uintptr_t)op, 0);
    io_uring_sqe_set_data64(sqe, TAG_IGNORE);
}

/* The kernel takes provided buffers in FIFO order, so a ring holding all
 * of them would cycle through (and fault in) the whole pool even under a
 * light load. Offer them in steps instead, when fewer than a quarter of
 * those offered are free: memory touched follows the working set. */
#define PROVIDE_STEP 256u

static void provide_more(keel__shard *s)
{
    uring_state *u = s->backend_state;
    keel__bufpool *p = s->bufs;
    uint32_t n = p->count - p->provided < PROVIDE_STEP ? p->count - p->provided : PROVIDE_STEP;
    int mask = io_uring_buf_ring_mask(p->count);
    for (uint32_t i = 0; i < n; i++) {
        uint32_t bid = p->provided + i;
        io_uring_buf_ring_add(u->br, p->base + (size_t)bid * p->size, p->size, (uint16_t)bid, mask,
                              (int)(u->br_pending + i));
    }
    u->br_pending += n;
    p->provided += n;
    p->available += n;
}

/* liburing 2.3 has no io_uring_setup_buf_ring(): map the ring ourselves
 * and register it (kernel 5.19+). */
static int uring_bufs_init(keel__shard *s)
{
    uring_state *u = s->backend_state;
    keel__bufpool *p = s->bufs;
    u->br_bytes = (size_t)p->count * sizeof(struct io_uring_buf);
    void *mem = mmap(NULL, u->br_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED)
        return -errno;
    u->br = mem;
    struct io_uring_buf_reg reg = {
        .ring_addr = (uint64_t)(uintptr_t)mem, .ring_entries = p->count, .bgid = BUF_GROUP};
    int err = io_uring_register_buf_ring(&u->ring, &reg, 0);
    if (err) {
        munmap(mem, u->br_bytes);
        u->br = NULL;
        return err;
    }
    io_uring_buf_ring_init(u->br);
    p->provided = p->available = 0;
    provide_more(s);
    return 0;
}

/* Returned buffers become visible to the kernel at the next poll, with one
 * release store for the whole batch. */
static void uring_buf_return(keel__shard *s, uint16_t bid)
{
    uring_state *u = s->backend_state;
    keel__bufpool *p = s->bufs;
    io_uring_buf_ring_add(u->br, p->base + (size_t)bid * p->size, p->size, bid,
                          io_uring_buf_ring_mask(p->count), (int)u->br_pending);
    u->br_pending++;
}

/* Registered file buffers live in a sparse table, so that one region is
 * added or removed with an update (kernel 5.19) instead of re-registering
 * them all, which would have to wait for every fixed I/O in flight. The
 * kernel keeps a replaced buffer alive until the requests using it end. */
static int uring_dma_register(keel__shard *s, void *base, size_t len)
{
    uring_state *u = s->backend_state;
    uintptr_t a = (uintptr_t)base;
    int free_slot = -1;
    for (int i = 0; i < DMA_SLOTS; i++) {
        const dma_region *r = &u->dma[i];
        if (!r->len) {
            if (free_slot < 0)
                free_slot = i;
        } else if (a < r->base + r->len && r->base < a + len) {
            return -EEXIST;
        }
    }
    if (free_slot < 0)
        return -ENOSPC;
    if (!u->dma_table) {
        int err = io_uring_register_buffers_sparse(&u->ring, DMA_SLOTS);
        if (err < 0) {
            keel__log("io_uring_register_buffers_sparse(%u) failed: %s", DMA_SLOTS,
                      keel_strerror(err));
            return err;
        }
        u->dma_table = true;
    }
    struct iovec iov = {.iov_base = base, .iov_len = len};
    int ret = io_uring_register_buffers_update_tag(&u->ring, (unsigned)free_slot, &iov, NULL, 1);
    if (ret < 0)
        return ret; /* -ENOMEM past RLIMIT_MEMLOCK, -EFAULT past 1 GiB, ... */
    u->dma[free_slot] = (dma_region){.base = a, .len = len};
    u->dma_used++;
    return 0;
}

static int uring_dma_unregister(keel__shard *s, void *base)
{
    uring_state *u = s->backend_state;
    for (int i = 0; i < DMA_SLOTS; i++) {
        if (u->dma[i].len && u->dma[i].base == (uintptr_t)base) {
            struct iovec iov = {.iov_base = NULL, .iov_len = 0}; /* empties the slot */
            int ret = io_uring_register_buffers_update_tag(&u->ring, (unsigned)i, &iov, NULL, 1);
            if (ret < 0)
                return ret;
            u->dma[i].len = 0;
            u->dma_used--;
            return 0;
        }
    }
    return -ENOENT;
}

static void uring_wake(keel__shard *self, keel__shard *target)
{
    uring_state *u = self ? self->backend_state : NULL;
    if (u && u->has_msg_ring && target->ring_fd >= 0) {
        struct io_uring_sqe *sqe = get_sqe(u);
        if (sqe) {
            /* Posts a CQE tagged TAG_WAKE into the target's ring, which ends
             * its wait; it is submitted with the rest of this turn's SQEs. */
            io_uring_prep_msg_ring(sqe, target->ring_fd, 0, TAG_WAKE, 0);
            io_uring_sqe_set_data64(sqe, TAG_IGNORE);
            if (u->has_cqe_skip)
                sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
            /* Submitted now, not with the turn's other SQEs: the target
             * then starts while we finish our turn. One syscall per wake,
             * and wakes happen only to sleeping shards. */
            io_uring_submit(&u->ring);
            self->stats.enter_calls++;
            return;
        }
    }
    keel__eventfd_wake(target);
}

static void uring_poll(keel__shard *s, uint64_t timeout_ns)
{
    uring_state *u = s->backend_state;
    struct io_uring *ring = &u->ring;
    if (u->br && s->bufs->available < s->bufs->provided / 4 && s->bufs->provided < s->bufs->count)
        provide_more(s);
    if (u->br_pending) {
        io_uring_buf_ring_advance(u->br, (int)u->br_pending);
        u->br_pending = 0;
    }
    unsigned queued = io_uring_sq_ready(ring);
    int ret;
    if (timeout_ns == 0) {
        ret = io_uring_submit_and_get_events(ring);
    } else {
        unsigned wait_nr = 1;
        if (u->last_reaped >= BATCH_MIN_REAPED) {
            wait_nr = u->last_reaped / 2 < BATCH_MAX ? u->last_reaped / 2 : BATCH_MAX;
            if (timeout_ns > BATCH_WAIT_NS)
                timeout_ns = BATCH_WAIT_NS;
        }
        if (timeout_ns == UINT64_MAX) {
            ret = io_uring_submit_and_wait(ring, 1);
        } else {
            struct __kernel_timespec ts = {.tv_sec = (long long)(timeout_ns / 1000000000ull),
                                           .tv_nsec = (long long)(timeout_ns % 1000000000ull)};
            struct io_uring_cqe *cqe;
            ret = io_uring_submit_and_wait_timeout(ring, &cqe, wait_nr, &ts, NULL);
        }
    }
    s->stats.enter_calls++;
    if (ret < 0 && ret != -ETIME && ret != -EINTR && ret != -EBUSY && ret != -EAGAIN)
        keel__log("io_uring_enter failed: %s", keel_strerror(ret));
    s->stats.sqes_submitted += queued - io_uring_sq_ready(ring);
    keel__poll_returned(s, timeout_ns != 0);

    struct io_uring_cqe *cqe;
    unsigned head, seen = 0;
    /* Completions may queue new SQEs and even resolve futures that run
     * user code, but never touch the CQ, so iterating it here is safe. */
    io_uring_for_each_cqe(ring, head, cqe)
    {
        seen++;
        uint64_t tag = cqe->user_data;
        if (tag == TAG_IGNORE || tag == TAG_WAKE)
            continue;
        keel__op *op = (keel__op *)(uintptr_t)tag;
        keel__op_complete(s, op, cqe->res, cqe->flags);
    }
    io_uring_cq_advance(ring, seen);
    s->stats.cqes_reaped += seen;
    u->last_reaped = seen;
}

const keel__reactor_ops keel__reactor_uring = {
    .name = "io_uring",
    .probe = uring_probe,
    .init = uring_init,
    .fini = uring_fini,
    .poll = uring_poll,
    .submit = uring_submit,
    .cancel = uring_cancel,
    .has_queued = uring_has_queued,
    .wake = uring_wake,
    .bufs_init = uring_bufs_init,
    .buf_return = uring_buf_return,
    .dma_register = uring_dma_register,
    .dma_unregister = uring_dma_unregister,
};
