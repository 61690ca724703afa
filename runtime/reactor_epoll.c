/* The epoll backend, for kernels or containers where io_uring is disabled.
 * It turns keel's completion model into readiness, as libuv does: each fd
 * has at most one reading op (read, accept, recv) and one writing op
 * (sendmsg, connect); the fd's epoll interest follows which are present
 * (level-triggered), and when the fd is ready poll() performs the syscall
 * itself, non-blocking, and completes the op with its result. Sends and
 * connects are tried at the next poll before waiting for readiness, since
 * a socket is usually writable. Wake-ups are always eventfd writes. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "internal.h"

typedef struct fd_entry {
    keel__op *rd, *wr;
    uint32_t events; /* interest registered with the kernel */
} fd_entry;

typedef struct epoll_state {
    int epfd;
    fd_entry *fds;
    size_t nfds;
    keel__op *ready_head, *ready_tail; /* to perform at the next poll */
    uint16_t *free_bufs;               /* stack of buffer ids */
    uint32_t nfree;
} epoll_state;

/* Bounds the receives done for one connection per readiness event, so one
 * fast sender cannot monopolize the loop (io_uring has the same bound). */
#define RECV_BATCH 8

static bool epoll_probe(char *why, size_t len)
{
    (void)why;
    (void)len;
    return true;
}

static int epoll_init(keel__shard *s, const keel_config *c)
{
    (void)c;
    epoll_state *e = calloc(1, sizeof(*e));
    if (!e)
        return -ENOMEM;
    e->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (e->epfd < 0) {
        int err = -errno;
        free(e);
        return err;
    }
    s->backend_state = e;
    return 0;
}

static void epoll_fini(keel__shard *s)
{
    epoll_state *e = s->backend_state;
    if (!e)
        return;
    close(e->epfd);
    free(e->fds);
    free(e->free_bufs);
    free(e);
    s->backend_state = NULL;
}

static fd_entry *entry(epoll_state *e, int fd)
{
    if ((size_t)fd >= e->nfds) {
        size_t n = e->nfds ? e->nfds : 256;
        while (n <= (size_t)fd)
            n *= 2;
        fd_entry *t = realloc(e->fds, n * sizeof(*t));
        if (!t)
            return NULL;
        memset(t + e->nfds, 0, (n - e->nfds) * sizeof(*t));
        e->fds = t;
        e->nfds = n;
    }
    return &e->fds[fd];
}

/* Makes the kernel's interest match the ops present on fd. */
static int sync_interest(epoll_state *e, int fd, fd_entry *fe)
{
    uint32_t want = (fe->rd ? EPOLLIN | EPOLLRDHUP : 0) | (fe->wr ? EPOLLOUT : 0);
    if (want == fe->events)
        return 0;
    struct epoll_event ev = {.events = want, .data.fd = fd};
    int op = !fe->events ? EPOLL_CTL_ADD : want ? EPOLL_CTL_MOD : EPOLL_CTL_DEL;
    if (epoll_ctl(e->epfd, op, fd, &ev) < 0) {
        /* The fd was closed and reused behind our back: start over. */
        if (errno == ENOENT && op == EPOLL_CTL_MOD)
            op = EPOLL_CTL_ADD;
        else if (errno == EEXIST && op == EPOLL_CTL_ADD)
            op = EPOLL_CTL_MOD;
        else if (op == EPOLL_CTL_DEL) {
            fe->events = 0;
            return 0;
        } else
            return -errno;
        if (epoll_ctl(e->epfd, op, fd, &ev) < 0)
            return -errno;
    }
    fe->events = want;
    return 0;
}

static void push_ready(epoll_state *e, keel__op *op)
{
    op->next_ready = NULL;
    if (e->ready_tail)
        e->ready_tail->next_ready = op;
    else
        e->ready_head = op;
    e->ready_tail = op;
}

static bool is_writer(const keel__op *op)
{
    return op->type == KEEL__OP_SENDMSG || op->type == KEEL__OP_SEND ||
           op->type == KEEL__OP_CONNECT;
}

static int epoll_submit(keel__shard *s, keel__op *op)
{
    /* A regular file is always "ready" to epoll and then blocks in read or
     * write: file operations run in the blocking pool (disk/file.c). */
    if (op->type == KEEL__OP_FILE)
        return -EOPNOTSUPP;
    keel__trace_io(s, KEEL__EV_IO_SUBMIT, op->type, op->fd);
    epoll_state *e = s->backend_state;
    fd_entry *fe = entry(e, op->fd);
    if (!fe)
        return -ENOMEM;
    if (is_writer(op)) {
        assert(!fe->wr && "one writing op per fd");
        fe->wr = op;
        op->armed = false;
        push_ready(e, op); /* try it first; wait for EPOLLOUT only on EAGAIN */
        return 0;
    }
    assert(!fe->rd && "one reading op per fd");
    fe->rd = op;
    op->armed = true;
    return sync_interest(e, op->fd, fe);
}

static void detach_op(epoll_state *e, keel__op *op)
{
    fd_entry *fe = entry(e, op->fd);
    if (fe->rd == op)
        fe->rd = NULL;
    if (fe->wr == op)
        fe->wr = NULL;
    op->armed = false;
    sync_interest(e, op->fd, fe);
}

static void finish(keel__shard *s, keel__op *op, int res, uint32_t flags)
{
    if (!(flags & KEEL__F_MORE))
        detach_op(s->backend_state, op);
    keel__op_complete(s, op, res, flags);
}

static void epoll_cancel(keel__shard *s, keel__op *op)
{
    epoll_state *e = s->backend_state;
    fd_entry *fe = entry(e, op->fd);
    if (fe->rd != op && fe->wr != op)
        return; /* already completed */
    /* Completions never run inside the call that asked for them: the
     * -ECANCELED is delivered by the next poll. */
    detach_op(e, op);
    op->cancelled = true;
    for (keel__op *r = e->ready_head, *prev = NULL; r; prev = r, r = r->next_ready) {
        if (r == op) { /* a send or connect not tried yet */
            if (prev)
                prev->next_ready = r->next_ready;
            else
                e->ready_head = r->next_ready;
            if (e->ready_tail == r)
                e->ready_tail = prev;
            break;
        }
    }
    push_ready(e, op);
}

static bool epoll_has_queued(keel__shard *s)
{
    return ((epoll_state *)s->backend_state)->ready_head != NULL;
}

static void epoll_wake(keel__shard *self, keel__shard *target)
{
    (void)self;
    keel__eventfd_wake(target);
}

static int epoll_bufs_init(keel__shard *s)
{
    epoll_state *e = s->backend_state;
    keel__bufpool *p = s->bufs;
    e->free_bufs = malloc(p->count * sizeof(uint16_t));
    if (!e->free_bufs)
        return -ENOMEM;
    for (uint32_t i = 0; i < p->count; i++)
        e->free_bufs[i] = (uint16_t)(p->count - 1 - i);
    e->nfree = p->count;
    /* A LIFO free list reuses the same few buffers: all can be offered. */
    p->provided = p->available = p->count;
    return 0;
}

static void epoll_buf_return(keel__shard *s, uint16_t bid)
{
    epoll_state *e = s->backend_state;
    e->free_bufs[e->nfree++] = bid;
}

static void do_recv(keel__shard *s, keel__op *op)
{
    epoll_state *e = s->backend_state;
    keel__bufpool *p = s->bufs;
    for (int i = 0; i < RECV_BATCH; i++) {
        if (e->nfree == 0) {
            finish(s, op, -ENOBUFS, 0);
            return;
        }
        uint16_t bid = e->free_bufs[--e->nfree];
        ssize_t n;
        do {
            n = recv(op->fd, p->base + (size_t)bid * p->size, p->size, 0);
        } while (n < 0 && errno == EINTR);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            e->free_bufs[e->nfree++] = bid;
            return;
        }
        if (n <= 0) {
            e->free_bufs[e->nfree++] = bid;
            finish(s, op, n < 0 ? -errno : 0, 0);
            return;
        }
        uint32_t flags = KEEL__F_BUFFER | ((uint32_t)bid << KEEL__BUF_SHIFT);
        if (op->type == KEEL__OP_RECV) { /* single-shot: done after one */
            finish(s, op, (int)n, flags);
            return;
        }
        flags |= KEEL__F_MORE;
        bool short_read = (size_t)n < p->size;
        keel__op_complete(s, op, (int)n, flags);
        /* The completion may have cancelled or closed: stop if so. */
        if (!op->armed || short_read)
            return;
    }
}

static void do_accept(keel__shard *s, keel__op *op)
{
    for (int i = 0; i < 64; i++) {
        int fd = accept4(op->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                finish(s, op, -errno, 0); /* as io_uring: an error ends it */
            return;
        }
        keel__op_complete(s, op, fd, KEEL__F_MORE);
        if (!op->armed)
            return;
    }
}

/* A send or connect, tried now; waits for EPOLLOUT on EAGAIN. */
static void do_write(keel__shard *s, keel__op *op, bool from_ready)
{
    epoll_state *e = s->backend_state;
    int res;
    if (op->type == KEEL__OP_SENDMSG || op->type == KEEL__OP_SEND) {
        ssize_t n;
        do {
            n = op->type == KEEL__OP_SEND ? send(op->fd, op->buf, op->len, MSG_NOSIGNAL)
                                          : sendmsg(op->fd, op->msg, MSG_NOSIGNAL);
        } while (n < 0 && errno == EINTR);
        res = n < 0 ? -errno : (int)n;
    } else if (from_ready) {
        int r;
        do {
            r = connect(op->fd, op->addr, op->addrlen);
        } while (r < 0 && errno == EINTR);
        res = r < 0 ? -errno : 0;
        if (res == -EINPROGRESS)
            res = -EAGAIN;
    } else {
        int soerr = 0;
        socklen_t len = sizeof(soerr);
        res = getsockopt(op->fd, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0 ? -errno : -soerr;
    }
    if (res == -EAGAIN || res == -EWOULDBLOCK) {
        if (!op->armed) {
            op->armed = true;
            int err = sync_interest(e, op->fd, entry(e, op->fd));
            if (err)
                finish(s, op, err, 0);
        }
        return;
    }
    finish(s, op, res, 0);
}

static void perform_ready(keel__shard *s, keel__op *op)
{
    if (op->cancelled) {
        op->cancelled = false;
        keel__op_complete(s, op, -ECANCELED, 0);
        return;
    }
    do_write(s, op, true);
}

static void epoll_poll(keel__shard *s, uint64_t timeout_ns)
{
    epoll_state *e = s->backend_state;
    /* Sends queued this turn go out before we wait, as with io_uring. */
    keel__op *ready = e->ready_head;
    e->ready_head = e->ready_tail = NULL;
    unsigned performed = 0;
    while (ready) {
        keel__op *next = ready->next_ready;
        perform_ready(s, ready);
        ready = next;
        performed++;
    }
    s->stats.sqes_submitted += performed;
    if (performed || e->ready_head)
        timeout_ns = 0;

    struct epoll_event evs[256];
    int timeout_ms;
    if (timeout_ns == 0)
        timeout_ms = 0;
    else if (timeout_ns == UINT64_MAX)
        timeout_ms = -1;
    else /* round up: waking early would spin until the deadline */
        timeout_ms = (int)((timeout_ns + 999999) / 1000000);
    int n = epoll_wait(e->epfd, evs, 256, timeout_ms);
    s->stats.enter_calls++;
    keel__poll_returned(s, timeout_ns != 0);
    if (n < 0) {
        if (errno != EINTR)
            keel__log("epoll_wait failed: %s", strerror(errno));
        return;
    }
    s->stats.cqes_reaped += (uint64_t)n;
    for (int i = 0; i < n; i++) {
        int fd = evs[i].data.fd;
        uint32_t ev = evs[i].events;
        /* Completions may open sockets and grow the fd table: look the
         * entry up afresh after each one, never hold a pointer across. */
        fd_entry *fe = &e->fds[fd];
        if (fe->wr && fe->wr->armed && (ev & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
            do_write(s, fe->wr, false);
        keel__op *rd = e->fds[fd].rd;
        if (rd && (ev & (EPOLLIN | EPOLLERR | EPOLLHUP | EPOLLRDHUP))) {
            switch (rd->type) {
            case KEEL__OP_RECV:
            case KEEL__OP_RECV_MULTI: do_recv(s, rd); break;
            case KEEL__OP_ACCEPT_MULTI: do_accept(s, rd); break;
            case KEEL__OP_READ: {
                ssize_t r;
                do {
                    r = read(fd, rd->buf, rd->len);
                } while (r < 0 && errno == EINTR);
                if (r < 0 && errno == EAGAIN)
                    break;
                finish(s, rd, r < 0 ? -errno : (int)r, 0);
                break;
            }
            }
        }
        fe = &e->fds[fd];
        if (!fe->rd && !fe->wr)
            sync_interest(e, fd, fe);
    }
}

const keel__reactor_ops keel__reactor_epoll = {
    .name = "epoll",
    .probe = epoll_probe,
    .init = epoll_init,
    .fini = epoll_fini,
    .poll = epoll_poll,
    .submit = epoll_submit,
    .cancel = epoll_cancel,
    .has_queued = epoll_has_queued,
    .wake = epoll_wake,
    .bufs_init = epoll_bufs_init,
    .buf_return = epoll_buf_return,
};
