/* The epoll backend, for kernels or containers where io_uring is disabled.
 * It turns keel's completion model into readiness: an operation waits for
 * its fd to be ready (EPOLLONESHOT), then poll() performs the syscall
 * itself, non-blocking, and completes the op with its result. Wake-ups are
 * always eventfd writes. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "internal.h"

typedef struct epoll_state {
    int epfd;
} epoll_state;

static bool epoll_probe(char *why, size_t len) {
    (void)why;
    (void)len;
    return true;
}

static int epoll_init(keel__shard *s, const keel_config *c) {
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

static void epoll_fini(keel__shard *s) {
    epoll_state *e = s->backend_state;
    if (!e)
        return;
    close(e->epfd);
    free(e);
    s->backend_state = NULL;
}

static int arm(epoll_state *e, keel__op *op) {
    struct epoll_event ev = {.events = EPOLLIN | EPOLLONESHOT, .data.ptr = op};
    if (epoll_ctl(e->epfd, EPOLL_CTL_MOD, op->fd, &ev) == 0)
        return 0;
    if (errno == ENOENT && epoll_ctl(e->epfd, EPOLL_CTL_ADD, op->fd, &ev) == 0)
        return 0;
    return -errno;
}

static int epoll_submit(keel__shard *s, keel__op *op) {
    epoll_state *e = s->backend_state;
    switch (op->type) {
    case KEEL__OP_READ:
        return arm(e, op);
    default:
        return -EINVAL;
    }
}

static void epoll_wake(keel__shard *self, keel__shard *target) {
    (void)self;
    uint64_t one = 1;
    ssize_t n;
    do {
        n = write(target->wake_efd, &one, sizeof(one));
    } while (n < 0 && errno == EINTR);
}

static void perform(keel__shard *s, keel__op *op) {
    epoll_state *e = s->backend_state;
    ssize_t n;
    switch (op->type) {
    case KEEL__OP_READ:
        do {
            n = read(op->fd, op->buf, op->len);
        } while (n < 0 && errno == EINTR);
        if (n < 0 && errno == EAGAIN) {
            int err = arm(e, op); /* spurious readiness: wait again */
            if (err)
                op->complete(op, err, 0);
            return;
        }
        op->complete(op, n < 0 ? -errno : (int)n, 0);
        return;
    }
}

static void epoll_poll(keel__shard *s, uint64_t timeout_ns) {
    epoll_state *e = s->backend_state;
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
    s->now_ns = keel__clock_ns();
    if (n < 0) {
        if (errno != EINTR)
            keel__log("epoll_wait failed: %s", strerror(errno));
        return;
    }
    s->stats.cqes_reaped += (uint64_t)n;
    for (int i = 0; i < n; i++)
        perform(s, evs[i].data.ptr);
}

const keel__reactor_ops keel__reactor_epoll = {
    .name = "epoll",
    .probe = epoll_probe,
    .init = epoll_init,
    .fini = epoll_fini,
    .poll = epoll_poll,
    .submit = epoll_submit,
    .wake = epoll_wake,
};
