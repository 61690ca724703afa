/* Connections: input from the shard's receive buffers, output queues with
 * one gathered send in flight, deadlines, backpressure and close. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"

#define NET_BUFFERS 4096      /* receive buffers per shard */
#define NET_BUFFER_BYTES 4096 /* bytes per receive buffer */
#define IOV_MAX_BATCH 64      /* segments gathered into one sendmsg */
#define CHUNK_BYTES 4096      /* output chunk for small writes */
#define DEFAULT_OUT_LIMIT (1u << 20)
#define DEFAULT_IN_LIMIT (256u << 10)
#define EXIT_GRACE_NS KEEL_SEC(5)
/* Receive buffers are the shard's, shared by all its connections. One
 * connection may hold this many bytes of them (unread input, or input
 * forwarded and not yet sent); beyond it, data is copied into the
 * connection's own memory and the buffer goes back at once. So a few
 * clients that send without reading cannot starve the others of buffers,
 * however large their limits. */
#define PIN_MAX_BYTES (128u << 10)

static void conn_maybe_finish_close(keel_conn *c);
static void submit_send(keel__shard *s, keel_conn *c);
static void net_before_poll(keel__shard *s);
static void keel__net_shard_fini(keel__shard *s);

/* ---- the shard's net state and receive buffers ------------------------------ */

static void drain_timeout(keel__timer *t, int err)
{
    (void)err;
    keel__net *n = t->ctx;
    free(t);
    if (keel_promise_pending(&n->drained)) {
        keel__log("%llu connection(s) still open %llu s after shutdown began: the app did not "
                  "close them; exiting anyway",
                  (unsigned long long)n->stats.open,
                  (unsigned long long)(EXIT_GRACE_NS / 1000000000));
        keel_promise_set_value(&n->drained, 0);
    }
}

/* At shutdown, shut every open connection down so the app's reads end and
 * it closes them; wait (bounded) until it has. */
static keel_future *net_exit_hook(void *arg)
{
    keel__net *n = arg;
    n->draining = true;
    for (keel_conn *c = n->open.next; c != &n->open; c = c->next)
        shutdown(c->fd, SHUT_RDWR);
    if (n->stats.open == 0)
        return keel_make_ready(0);
    keel_future *f = keel_promise_init(&n->drained);
    keel__timer *t = calloc(1, sizeof(*t));
    if (t) {
        t->fire = drain_timeout;
        t->ctx = n;
        keel__timer_arm(t, keel__clock_ns() + EXIT_GRACE_NS);
    }
    return f;
}

static void net_free(keel__shard *s)
{
    keel__net *n = s->net;
    if (s->bufs) {
        munmap(s->bufs->base, (size_t)s->bufs->count * s->bufs->size);
        free(s->bufs->refs);
        free(s->bufs);
        s->bufs = NULL;
    }
    free(n);
    s->net = NULL;
}

keel__net *keel__net_shard(void)
{
    keel__shard *s = keel__shard_self();
    if (s->net)
        return s->net;
    keel__net *n = calloc(1, sizeof(*n));
    keel__bufpool *p = calloc(1, sizeof(*p));
    if (!n || !p)
        goto fail;
    n->open.next = n->open.prev = &n->open;
    p->count = NET_BUFFERS;
    p->size = NET_BUFFER_BYTES;
    p->refs = calloc(p->count, sizeof(uint16_t));
    /* mmap, not malloc: 16 MiB of buffers are touched only as traffic
     * needs them, and stay out of the allocator's arenas. */
    p->base = mmap(NULL, (size_t)p->count * p->size, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (!p->refs || p->base == MAP_FAILED) {
        free(p->refs);
        goto fail;
    }
    s->bufs = p;
    s->net = n;
    int err = s->backend->bufs_init(s);
    if (err) {
        keel__log("%s: receive buffer ring setup failed: %s", s->backend->name, keel_strerror(err));
        net_free(s);
        return NULL;
    }
    s->before_poll = net_before_poll;
    s->module_fini = keel__net_shard_fini;
    keel_at_exit(net_exit_hook, n);
    return n;
fail:
    free(n);
    free(p);
    return NULL;
}

/* Called by the shard at exit, after the backend is gone. */
static void keel__net_shard_fini(keel__shard *s)
{
    if (s->net)
        net_free(s);
}

int keel_net_stats_get(unsigned shard, keel_net_stats *out)
{
    if (shard >= keel_shard_count())
        return -EINVAL;
    keel__shard *s = keel__rt->shards[shard];
    keel__net *n = s->net;
    memset(out, 0, sizeof(*out));
    if (n) {
        volatile const uint64_t *src = (volatile const uint64_t *)&n->stats;
        uint64_t *dst = (uint64_t *)out;
        for (size_t i = 0; i < sizeof(*out) / sizeof(uint64_t); i++)
            dst[i] = src[i];
    }
    return 0;
}

static inline char *buf_addr(keel__shard *s, uint16_t bid)
{
    return s->bufs->base + (size_t)bid * s->bufs->size;
}

static void buf_unref(keel__shard *s, uint16_t bid)
{
    if (--s->bufs->refs[bid] == 0) {
        s->backend->buf_return(s, bid);
        s->bufs->available++;
        NET(s)->stats.bufs_in_use--;
    }
}

static inline char *in_addr(keel__shard *s, const in_seg *sg)
{
    return sg->own ? sg->own : buf_addr(s, sg->bid);
}

static void in_release(keel__shard *s, keel_conn *c, const in_seg *sg)
{
    if (sg->own) {
        keel__free(sg->own, sg->cap);
    } else {
        c->pinned -= s->bufs->size;
        buf_unref(s, sg->bid);
    }
}

/* ---- segment rings -------------------------------------------------------------- */

static void *ring_at(seg_ring *r, uint32_t i, size_t item)
{
    return (char *)r->items + ((r->head + i) & (r->cap - 1)) * item;
}

static int ring_push(seg_ring *r, const void *v, size_t item)
{
    if (r->count == r->cap) {
        uint32_t cap = r->cap ? r->cap * 2 : 8;
        void *items = keel__alloc(cap * item);
        if (!items)
            return -ENOMEM;
        for (uint32_t i = 0; i < r->count; i++)
            memcpy((char *)items + i * item, ring_at(r, i, item), item);
        if (r->items)
            keel__free(r->items, r->cap * item);
        r->items = items;
        r->head = 0;
        r->cap = cap;
    }
    memcpy(ring_at(r, r->count, item), v, item);
    r->count++;
    return 0;
}

static void ring_free(seg_ring *r, size_t item)
{
    if (r->items)
        keel__free(r->items, r->cap * item);
    r->items = NULL;
    r->cap = r->count = r->head = 0;
}

/* An emptied ring gives its array back: an idle connection then holds only
 * its own struct (a slab alloc per message is a few ns). */
static void ring_pop(seg_ring *r, size_t item)
{
    r->head = (r->head + 1) & (r->cap - 1);
    if (--r->count == 0)
        ring_free(r, item);
}

#define IN_AT(c, i) ((in_seg *)ring_at(&(c)->in, (i), sizeof(in_seg)))
#define OUT_AT(c, i) ((out_seg *)ring_at(&(c)->out, (i), sizeof(out_seg)))

/* ---- receiving ---------------------------------------------------------------------- */

static bool want_recv(const keel_conn *c)
{
    return !c->closing && !c->eof && !c->err && !c->recv_paused && !c->recv_starved;
}

/* The input limit, raised while a pending read needs more than it. */
static size_t in_limit_now(const keel_conn *c)
{
    if ((c->read_kind == READ_EXACT || c->read_kind == READ_UNTIL) && c->read_n >= c->in_limit)
        return (size_t)c->read_n + 1;
    return c->in_limit;
}

/* A multishot recv cancelled (pause) and armed again can miss a reset that
 * came meanwhile: it returns the queued data and then never reports the
 * error (seen on Linux 6.18). So a resumed connection receives with one-
 * shot recvs, each a fresh attempt that does see the error, until one
 * comes back short (the socket's queue was drained); then multishot
 * again. */
static void conn_fail(keel_conn *c, int err);

static void arm_recv(keel__shard *s, keel_conn *c)
{
    if (c->recv_armed || !want_recv(c))
        return;
    c->recv_op.type = c->recv_single ? KEEL__OP_RECV : KEEL__OP_RECV_MULTI;
    int err = s->backend->submit(s, &c->recv_op);
    if (err) {
        conn_fail(c, err);
        return;
    }
    c->recv_armed = true;
    c->inflight++;
    NET(s)->stats.recv_rearms++;
}

static void disarm_recv(keel__shard *s, keel_conn *c)
{
    if (c->recv_armed)
        s->backend->cancel(s, &c->recv_op);
}

/* Works out whether the pending read is satisfied; returns true and sets
 * *res if so. */
static bool read_ready(keel_conn *c, keel_result *res)
{
    switch (c->read_kind) {
    case READ_ANY:
        if (c->in_bytes) {
            *res = keel_ok((int64_t)c->in_bytes);
            return true;
        }
        break;
    case READ_EXACT:
        if (c->in_bytes >= c->read_n) {
            *res = keel_ok((int64_t)c->read_n);
            return true;
        }
        break;
    case READ_UNTIL: {
        /* Scan only what was not scanned on an earlier arrival. */
        size_t pos = 0;
        for (uint32_t i = 0; i < c->in.count && pos < c->read_n; i++) {
            in_seg *sg = IN_AT(c, i);
            if (pos + sg->len > c->read_scanned) {
                size_t from = c->read_scanned > pos ? c->read_scanned - pos : 0;
                const char *p = in_addr(keel__shard_self(), sg) + sg->off;
                size_t lim = sg->len;
                if (pos + lim > c->read_n)
                    lim = c->read_n - pos;
                const char *hit = from < lim ? memchr(p + from, c->read_delim, lim - from) : NULL;
                if (hit) {
                    *res = keel_ok((int64_t)(pos + (size_t)(hit - p) + 1));
                    return true;
                }
            }
            pos += sg->len;
        }
        c->read_scanned = (uint32_t)(pos < c->read_n ? pos : c->read_n);
        if (c->in_bytes >= c->read_n) {
            *res = keel_err(-EMSGSIZE);
            return true;
        }
        break;
    }
    default: return false;
    }
    if (c->err) {
        *res = keel_err(c->err);
        return true;
    }
    if (c->eof) {
        *res = keel_ok(0);
        return true;
    }
    return false;
}

static void resolve_read(keel_conn *c, keel_result r)
{
    c->read_kind = READ_NONE;
    keel__timer_cancel(&c->read_timer);
    keel_promise_resolve(&c->read_p, r);
}

static void check_read(keel_conn *c)
{
    keel_result r;
    if (keel_promise_pending(&c->read_p) && read_ready(c, &r))
        resolve_read(c, r);
}

static void touch(keel__shard *s, keel_conn *c)
{
    c->last_activity_ns = s->now_ns;
}

/* Fails the connection: the first error sticks; every waiter learns it. */
static void conn_fail(keel_conn *c, int err)
{
    keel__shard *s = keel__shard_self();
    if (!c->err) {
        c->err = err;
        NET(s)->stats.errors++;
    }
    disarm_recv(s, c);
    check_read(c);
    keel__timer_cancel(&c->write_timer);
    if (keel_promise_pending(&c->write_p))
        keel_promise_set_error(&c->write_p, c->err);
    if (keel_promise_pending(&c->flush_p))
        keel_promise_set_error(&c->flush_p, c->err);
    if (keel_promise_pending(&c->shut_p))
        keel_promise_set_error(&c->shut_p, c->err);
}

static void recv_done(keel__op *op, int res, uint32_t flags)
{
    keel_conn *c = op->ctx;
    keel__shard *s = keel__shard_self();
    keel__net *n = s->net;
    if (!(flags & KEEL__F_MORE)) {
        c->recv_armed = false;
        c->inflight--;
    }
    /* Holds the connection: the app's continuations run from here and may
     * close it; its memory must outlive this handler. */
    c->inflight++;
    if (res > 0) {
        uint16_t bid = (uint16_t)(flags >> KEEL__BUF_SHIFT);
        s->bufs->refs[bid] = 1;
        s->bufs->available--;
        n->stats.bufs_in_use++;
        n->stats.bytes_in += (uint64_t)res;
        if (op->type == KEEL__OP_RECV && (uint32_t)res < s->bufs->size)
            c->recv_single = false; /* drained: multishot is safe again */
        in_seg sg = {.own = NULL, .off = 0, .len = (uint32_t)res, .cap = 0, .bid = bid};
        int err = 0;
        if (c->pinned + s->bufs->size > PIN_MAX_BYTES) {
            /* Over its share of the shard's buffers (input that arrived
             * while a pause was being cancelled, or a slow reader): keep a
             * private copy and give the buffer back. */
            sg.own = keel__alloc((size_t)res);
            sg.cap = (uint32_t)res;
            if (sg.own)
                memcpy(sg.own, buf_addr(s, bid), (size_t)res);
            else
                err = -ENOMEM;
            buf_unref(s, bid);
        } else {
            c->pinned += s->bufs->size;
        }
        if (!err && ring_push(&c->in, &sg, sizeof(sg)))
            err = -ENOMEM;
        if (err) {
            if (!sg.cap)
                in_release(s, c, &sg);
            else if (sg.own)
                keel__free(sg.own, sg.cap);
            conn_fail(c, err);
        } else {
            c->in_bytes += (size_t)res;
            touch(s, c);
            if (c->in_bytes >= in_limit_now(c) && !c->recv_paused) {
                /* Backpressure: stop receiving; the kernel's TCP window now
                 * pushes back on this client alone. */
                c->recv_paused = true;
                c->recv_single = true;
                disarm_recv(s, c);
            }
            check_read(c);
        }
    } else if (res == 0) {
        c->eof = true;
        check_read(c);
    } else if (res == -ENOBUFS) {
        /* The shard's buffers ran out: wait until some come back. */
        if (!c->recv_starved && !c->closing) {
            c->recv_starved = true;
            c->recv_single = true;
            c->starved_next = n->starved_head;
            n->starved_head = c;
        }
    } else if (res != -ECANCELED) {
        conn_fail(c, res);
    }
    c->inflight--;
    arm_recv(s, c);
    conn_maybe_finish_close(c);
}

/* ---- sending -------------------------------------------------------------------------- */

static void queue_send(keel__shard *s, keel_conn *c)
{
    if (c->send_inflight || c->send_queued || !c->out.count || c->err)
        return;
    c->send_queued = true;
    c->send_next = NULL;
    keel__net *n = s->net;
    if (n->send_tail)
        n->send_tail->send_next = c;
    else
        n->send_head = c;
    n->send_tail = c;
}

/* Before the loop enters the kernel: one gathered sendmsg per connection
 * with output this turn, and re-armed receives for connections that starved
 * while buffers were short. */
static void net_before_poll(keel__shard *s)
{
    keel__net *n = s->net;
    keel_conn *c = n->send_head;
    n->send_head = n->send_tail = NULL;
    while (c) {
        keel_conn *next = c->send_next;
        c->send_queued = false;
        submit_send(s, c);
        c = next;
    }
    /* Re-arm starved receivers only with a reserve of buffers, or they
     * would fail again at once. */
    while (n->starved_head && s->bufs->available > s->bufs->provided / 8) {
        c = n->starved_head;
        n->starved_head = c->starved_next;
        c->recv_starved = false;
        arm_recv(s, c);
    }
}

static void submit_send(keel__shard *s, keel_conn *c)
{
    if (c->send_inflight || !c->out.count || c->err)
        return;
    uint32_t n = c->out.count < IOV_MAX_BATCH ? c->out.count : IOV_MAX_BATCH;
    if (n == 1) {
        /* The common case (one reply, one chunk): a plain send spares the
         * kernel importing a msghdr and an iovec per operation. */
        out_seg *sg = OUT_AT(c, 0);
        c->send_op.type = KEEL__OP_SEND;
        c->send_op.buf = sg->base + sg->off;
        c->send_op.len = sg->len;
        int err = s->backend->submit(s, &c->send_op);
        if (err) {
            conn_fail(c, err);
            return;
        }
        c->send_inflight = true;
        c->inflight++;
        return;
    }
    c->send_op.type = KEEL__OP_SENDMSG;
    uint32_t bytes = (uint32_t)(sizeof(send_batch) + n * sizeof(struct iovec));
    send_batch *b = keel__alloc(bytes);
    if (!b) {
        conn_fail(c, -ENOMEM);
        return;
    }
    memset(&b->msg, 0, sizeof(b->msg));
    b->bytes = bytes;
    for (uint32_t i = 0; i < n; i++) {
        out_seg *sg = OUT_AT(c, i);
        b->iov[i].iov_base = sg->base + sg->off;
        b->iov[i].iov_len = sg->len;
    }
    b->msg.msg_iov = b->iov;
    b->msg.msg_iovlen = n;
    c->send_op.msg = &b->msg;
    int err = s->backend->submit(s, &c->send_op);
    if (err) {
        keel__free(b, bytes);
        conn_fail(c, err);
        return;
    }
    c->batch = b;
    c->send_inflight = true;
    c->inflight++;
}

static void out_release(keel__shard *s, keel_conn *c, out_seg *sg)
{
    if (sg->bid >= 0) {
        c->pinned -= s->bufs->size;
        buf_unref(s, (uint16_t)sg->bid);
    } else {
        keel__free(sg->base, sg->cap);
    }
}

static void write_deadline_arm(keel__shard *s, keel_conn *c)
{
    if (c->write_timeout_ns && c->write_timer.heap_idx == SIZE_MAX)
        keel__timer_arm(&c->write_timer, s->now_ns + c->write_timeout_ns);
}

/* The write deadline measures a stall: progress starts it over. */
static void write_deadline_progress(keel__shard *s, keel_conn *c)
{
    if (keel__timer_cancel(&c->write_timer))
        keel__timer_arm(&c->write_timer, s->now_ns + c->write_timeout_ns);
}

static void send_done(keel__op *op, int res, uint32_t flags)
{
    (void)flags;
    keel_conn *c = op->ctx;
    keel__shard *s = keel__shard_self();
    c->send_inflight = false;
    if (c->batch) {
        keel__free(c->batch, c->batch->bytes);
        c->batch = NULL;
    }
    /* The send's own reference now holds the connection through the app's
     * continuations (see recv_done); it is dropped at the end. */
    if (res >= 0) {
        size_t left = (size_t)res;
        NET(s)->stats.bytes_out += left;
        c->sent_total += left;
        c->out_bytes -= left;
        while (left) {
            out_seg *sg = OUT_AT(c, 0);
            if (left < sg->len) {
                sg->off += (uint32_t)left;
                sg->len -= (uint32_t)left;
                break;
            }
            left -= sg->len;
            out_release(s, c, sg);
            ring_pop(&c->out, sizeof(out_seg));
        }
        if (res > 0) {
            touch(s, c);
            write_deadline_progress(s, c);
        }
        if (c->out_bytes <= c->out_limit && keel_promise_pending(&c->write_p))
            keel_promise_set_value(&c->write_p, 0);
        if (keel_promise_pending(&c->flush_p) && c->sent_total >= c->flush_target)
            keel_promise_set_value(&c->flush_p, 0);
        if (!c->out.count) {
            keel__timer_cancel(&c->write_timer);
            if (c->shut_wr_pending) {
                c->shut_wr_pending = false;
                int r = shutdown(c->fd, SHUT_WR);
                keel_promise_set_value(&c->shut_p, r < 0 ? -errno : 0);
            }
        } else {
            /* A partial send means the socket buffer is full: send the rest
             * now (the kernel waits for room) rather than next turn. */
            submit_send(s, c);
        }
    } else if (res != -ECANCELED || !c->closing) {
        conn_fail(c, res);
    }
    c->inflight--;
    conn_maybe_finish_close(c);
}

static keel_future *after_queue(keel__shard *s, keel_conn *c)
{
    queue_send(s, c);
    if (c->out_bytes <= c->out_limit)
        return keel_make_ready(0);
    assert(!keel_promise_pending(&c->write_p) && "one writer at a time");
    write_deadline_arm(s, c);
    return keel_promise_init(&c->write_p);
}

/* Appends a copy of data to c's output queue. 0 or -ENOMEM (nothing of
 * the failed chunk is queued; the connection lives). */
static int out_append_copy(keel_conn *c, const char *p, size_t len)
{
    while (len) {
        out_seg *tail = c->out.count ? OUT_AT(c, c->out.count - 1) : NULL;
        /* Append to the tail chunk while it has room. Safe even while a send
         * of it is in flight: that send covers only the bytes it captured,
         * and its completion trims by the count sent. */
        if (tail && tail->bid < 0 && tail->off + tail->len < tail->cap) {
            size_t room = tail->cap - tail->off - tail->len;
            size_t n = len < room ? len : room;
            memcpy(tail->base + tail->off + tail->len, p, n);
            tail->len += (uint32_t)n;
            p += n;
            len -= n;
            c->out_bytes += n;
            c->queued_total += n;
            continue;
        }
        uint32_t cap = len > CHUNK_BYTES ? (uint32_t)len : CHUNK_BYTES;
        out_seg sg = {.base = keel__alloc(cap), .off = 0, .len = 0, .cap = cap, .bid = -1};
        if (!sg.base || ring_push(&c->out, &sg, sizeof(sg))) {
            if (sg.base)
                keel__free(sg.base, cap);
            return -ENOMEM;
        }
    }
    return 0;
}

static keel_future *check_writable(keel_conn *c)
{
    if (c->err)
        return keel_make_error(c->err);
    if (c->closing || c->shut_wr_pending)
        return keel_make_error(-EPIPE);
    return NULL;
}

keel_future *keel_conn_write(keel_conn *c, const void *data, size_t len)
{
    keel_future *refused = check_writable(c);
    if (refused)
        return refused;
    if (out_append_copy(c, data, len))
        return keel_make_error(-ENOMEM); /* this write only */
    return after_queue(keel__shard_self(), c);
}

keel_future *keel_conn_forward(keel_conn *dst, keel_conn *src, size_t n)
{
    keel__shard *s = keel__shard_self();
    assert(n <= src->in_bytes);
    keel_future *refused = check_writable(dst);
    if (refused)
        return refused;
    size_t left = n;
    int err = 0;
    for (uint32_t i = 0; left && i < src->in.count && !err; i++) {
        in_seg *is = IN_AT(src, i);
        uint32_t take = left < is->len ? (uint32_t)left : is->len;
        left -= take;
        /* Share the receive buffer while dst is within its share of them;
         * otherwise copy (see PIN_MAX_BYTES). */
        if (is->own || dst->pinned + s->bufs->size > PIN_MAX_BYTES) {
            err = out_append_copy(dst, in_addr(s, is) + is->off, take);
            continue;
        }
        out_seg os = {
            .base = buf_addr(s, is->bid), .off = is->off, .len = take, .cap = 0, .bid = is->bid};
        if ((err = ring_push(&dst->out, &os, sizeof(os))))
            break;
        s->bufs->refs[is->bid]++;
        dst->pinned += s->bufs->size;
        dst->out_bytes += take;
        dst->queued_total += take;
    }
    keel_conn_consume(src, n);
    if (err)
        return keel_make_error(err);
    return after_queue(s, dst);
}

keel_future *keel_conn_flush(keel_conn *c)
{
    keel__shard *s = keel__shard_self();
    if (c->err)
        return keel_make_error(c->err);
    if (c->sent_total >= c->queued_total)
        return keel_make_ready(0);
    assert(!keel_promise_pending(&c->flush_p) && "one flush at a time");
    c->flush_target = c->queued_total;
    queue_send(s, c);
    write_deadline_arm(s, c);
    return keel_promise_init(&c->flush_p);
}

keel_future *keel_conn_shutdown_write(keel_conn *c)
{
    if (c->err)
        return keel_make_error(c->err);
    if (!c->out.count && !c->send_inflight) {
        int r = shutdown(c->fd, SHUT_WR);
        return r < 0 ? keel_make_error(-errno) : keel_make_ready(0);
    }
    assert(!c->shut_wr_pending);
    c->shut_wr_pending = true;
    queue_send(keel__shard_self(), c);
    return keel_promise_init(&c->shut_p);
}

size_t keel_conn_queued(const keel_conn *c)
{
    return c->out_bytes;
}

/* ---- reading API ------------------------------------------------------------------------ */

static keel_future *start_read(keel_conn *c, uint8_t kind, size_t n, uint8_t delim)
{
    keel__shard *s = keel__shard_self();
    assert(!keel_promise_pending(&c->read_p) && "one reader at a time");
    if (c->closing)
        return keel_make_error(-ECANCELED);
    if (n > UINT32_MAX)
        return keel_make_error(-EMSGSIZE);
    c->read_kind = kind;
    c->read_n = (uint32_t)n;
    c->read_delim = delim;
    c->read_scanned = 0;
    keel_result r;
    if (read_ready(c, &r)) {
        c->read_kind = READ_NONE;
        return keel_make_result(r);
    }
    keel_future *f = keel_promise_init(&c->read_p);
    if (c->recv_paused && c->in_bytes < in_limit_now(c))
        c->recv_paused = false; /* this read needs more than the limit holds */
    if (c->read_timeout_ns)
        keel__timer_arm(&c->read_timer, s->now_ns + c->read_timeout_ns);
    arm_recv(s, c);
    return f;
}

keel_future *keel_conn_read(keel_conn *c)
{
    return start_read(c, READ_ANY, 0, 0);
}
keel_future *keel_conn_read_exactly(keel_conn *c, size_t n)
{
    return start_read(c, READ_EXACT, n, 0);
}
keel_future *keel_conn_read_until(keel_conn *c, uint8_t delim, size_t max)
{
    return start_read(c, READ_UNTIL, max, delim);
}

size_t keel_conn_buffered(const keel_conn *c)
{
    return c->in_bytes;
}

const void *keel_conn_peek(const keel_conn *c, size_t *len)
{
    if (!c->in.count) {
        *len = 0;
        return NULL;
    }
    in_seg *sg = IN_AT((keel_conn *)c, 0);
    *len = sg->len;
    return in_addr(keel__shard_self(), sg) + sg->off;
}

size_t keel_conn_copy(const keel_conn *c, void *dst, size_t n)
{
    return keel_conn_copy_at(c, 0, dst, n);
}

size_t keel_conn_copy_at(const keel_conn *c, size_t offset, void *dst, size_t n)
{
    keel__shard *s = keel__shard_self();
    size_t done = 0;
    for (uint32_t i = 0; done < n && i < c->in.count; i++) {
        in_seg *sg = IN_AT((keel_conn *)c, i);
        if (offset >= sg->len) {
            offset -= sg->len;
            continue;
        }
        size_t avail = sg->len - offset;
        size_t take = n - done < avail ? n - done : avail;
        memcpy((char *)dst + done, in_addr(s, sg) + sg->off + offset, take);
        done += take;
        offset = 0;
    }
    return done;
}

void keel_conn_consume(keel_conn *c, size_t n)
{
    keel__shard *s = keel__shard_self();
    assert(n <= c->in_bytes);
    c->in_bytes -= n;
    while (n) {
        in_seg *sg = IN_AT(c, 0);
        if (n < sg->len) {
            sg->off += (uint32_t)n;
            sg->len -= (uint32_t)n;
            break;
        }
        n -= sg->len;
        in_release(s, c, sg);
        ring_pop(&c->in, sizeof(in_seg));
    }
    if (c->recv_paused && c->in_bytes <= c->in_limit / 2) {
        c->recv_paused = false;
        arm_recv(s, c);
    }
}

/* ---- deadlines ---------------------------------------------------------------------------- */

static void read_deadline_fired(keel__timer *t, int err)
{
    keel_conn *c = t->ctx;
    if (err == 0 && keel_promise_pending(&c->read_p))
        resolve_read(c, keel_err(-ETIMEDOUT));
}

static void write_deadline_fired(keel__timer *t, int err)
{
    keel_conn *c = t->ctx;
    if (err == 0 &&
        (c->out.count || keel_promise_pending(&c->write_p) || keel_promise_pending(&c->flush_p))) {
        conn_fail(c, -ETIMEDOUT);
        conn_maybe_finish_close(c);
    }
}

static void idle_deadline_fired(keel__timer *t, int err)
{
    keel_conn *c = t->ctx;
    keel__shard *s = keel__shard_self();
    if (err || !c->idle_timeout_ns)
        return;
    uint64_t due = c->last_activity_ns + c->idle_timeout_ns;
    if (due > s->now_ns) { /* traffic since: look again later */
        keel__timer_arm(&c->idle_timer, due);
        return;
    }
    conn_fail(c, -ETIMEDOUT);
    conn_maybe_finish_close(c);
}

void keel_conn_set_deadlines(keel_conn *c, uint64_t read_ns, uint64_t write_ns, uint64_t idle_ns)
{
    keel__shard *s = keel__shard_self();
    c->read_timeout_ns = read_ns;
    c->write_timeout_ns = write_ns;
    c->idle_timeout_ns = idle_ns;
    keel__timer_cancel(&c->idle_timer);
    if (idle_ns) {
        touch(s, c);
        keel__timer_arm(&c->idle_timer, s->now_ns + idle_ns);
    }
}

void keel_conn_set_limits(keel_conn *c, size_t out_bytes, size_t in_bytes)
{
    c->out_limit = (uint32_t)(!out_bytes               ? DEFAULT_OUT_LIMIT
                              : out_bytes > UINT32_MAX ? UINT32_MAX
                                                       : out_bytes);
    c->in_limit = (uint32_t)(!in_bytes               ? DEFAULT_IN_LIMIT
                             : in_bytes > UINT32_MAX ? UINT32_MAX
                                                     : in_bytes);
}

int keel_conn_set_nodelay(keel_conn *c, bool on)
{
    int v = on;
    return setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &v, sizeof(v)) < 0 ? -errno : 0;
}

int keel_conn_set_keepalive(keel_conn *c, bool on, unsigned idle_s, unsigned interval_s,
                            unsigned count)
{
    int v = on;
    if (setsockopt(c->fd, SOL_SOCKET, SO_KEEPALIVE, &v, sizeof(v)) < 0)
        return -errno;
    if (!on)
        return 0;
    int opts[3][2] = {
        {TCP_KEEPIDLE, (int)idle_s}, {TCP_KEEPINTVL, (int)interval_s}, {TCP_KEEPCNT, (int)count}};
    for (int i = 0; i < 3; i++)
        if (opts[i][1] > 0 &&
            setsockopt(c->fd, IPPROTO_TCP, opts[i][0], &opts[i][1], sizeof(int)) < 0)
            return -errno;
    return 0;
}

int keel_conn_fd(const keel_conn *c)
{
    return c->fd;
}
void keel_conn_set_data(keel_conn *c, void *data)
{
    c->data = data;
}
void *keel_conn_data(const keel_conn *c)
{
    return c->data;
}
int keel_conn_error(const keel_conn *c)
{
    return c->err;
}

/* ---- lifetime ------------------------------------------------------------------------------- */

keel_conn *keel__conn_new(int fd)
{
    keel__shard *s = keel__shard_self();
    keel__net *n = keel__net_shard();
    keel_conn *c = n ? keel__alloc(sizeof(*c)) : NULL;
    if (!c)
        return NULL;
    memset(c, 0, sizeof(*c));
    c->fd = fd;
    c->in_limit = DEFAULT_IN_LIMIT;
    c->out_limit = DEFAULT_OUT_LIMIT;
    c->recv_op = (keel__op){.type = KEEL__OP_RECV_MULTI, .fd = fd, .complete = recv_done, .ctx = c};
    c->send_op = (keel__op){.type = KEEL__OP_SENDMSG, .fd = fd, .complete = send_done, .ctx = c};
    c->read_timer = (keel__timer){.heap_idx = SIZE_MAX, .fire = read_deadline_fired, .ctx = c};
    c->write_timer = (keel__timer){.heap_idx = SIZE_MAX, .fire = write_deadline_fired, .ctx = c};
    c->idle_timer = (keel__timer){.heap_idx = SIZE_MAX, .fire = idle_deadline_fired, .ctx = c};
    c->next = &n->open;
    c->prev = n->open.prev;
    n->open.prev->next = c;
    n->open.prev = c;
    n->stats.open++;
    touch(s, c);
    if (n->draining)
        shutdown(fd, SHUT_RDWR);
    arm_recv(s, c);
    return c;
}

static void conn_free(keel__shard *s, keel_conn *c)
{
    keel__net *n = s->net;
    /* A detached socket goes back to the caller only if nothing it sent is
     * lost: no input left unread, no error. */
    bool hand_over = c->detaching && !c->in_bytes && !c->err;
    keel__timer_cancel(&c->read_timer);
    keel__timer_cancel(&c->write_timer);
    keel__timer_cancel(&c->idle_timer);
    while (c->in.count) {
        in_release(s, c, IN_AT(c, 0));
        ring_pop(&c->in, sizeof(in_seg));
    }
    while (c->out.count) {
        out_release(s, c, OUT_AT(c, 0));
        ring_pop(&c->out, sizeof(out_seg));
    }
    ring_free(&c->in, sizeof(in_seg));
    ring_free(&c->out, sizeof(out_seg));
    c->prev->next = c->next;
    c->next->prev = c->prev;
    n->stats.open--;
    keel_promise p = c->close_p;
    int fd = c->fd;
    bool detaching = c->detaching;
    if (!hand_over)
        close(fd);
    keel__free(c, sizeof(*c));
    if (n->draining && n->stats.open == 0 && keel_promise_pending(&n->drained))
        keel_promise_set_value(&n->drained, 0);
    if (detaching)
        keel_promise_resolve(&p, hand_over ? keel_ok(fd) : keel_err(-EBUSY));
    else
        keel_promise_set_value(&p, 0);
}

keel_future *keel_conn_detach(keel_conn *c)
{
    c->detaching = true;
    return keel_conn_close(c);
}

keel_conn *keel_conn_adopt(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || (!(fl & O_NONBLOCK) && fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0))
        return NULL;
    return keel__conn_new(fd);
}

static void conn_maybe_finish_close(keel_conn *c)
{
    if (!c->closing || !keel_promise_pending(&c->close_p))
        return;
    keel__shard *s = keel__shard_self();
    /* Still flushing what the app queued before close? */
    if (!c->err && !c->fail_on_close && (c->out.count || c->send_inflight))
        return;
    disarm_recv(s, c);
    if (c->send_inflight)
        s->backend->cancel(s, &c->send_op);
    if (c->inflight)
        return; /* the kernel still holds our memory: wait for it */
    /* Unlink from the shard's lists before the memory goes. */
    keel__net *n = s->net;
    if (c->send_queued) {
        keel_conn **pp = &n->send_head, *prev = NULL;
        while (*pp != c) {
            prev = *pp;
            pp = &(*pp)->send_next;
        }
        *pp = c->send_next;
        if (n->send_tail == c)
            n->send_tail = prev;
    }
    if (c->recv_starved) {
        keel_conn **pp = &n->starved_head;
        while (*pp != c)
            pp = &(*pp)->starved_next;
        *pp = c->starved_next;
    }
    conn_free(s, c);
}

keel_future *keel_conn_close(keel_conn *c)
{
    keel__shard *s = keel__shard_self();
    assert(!c->closing && "keel_conn_close called twice");
    c->closing = true;
    keel__timer_cancel(&c->read_timer);
    keel__timer_cancel(&c->idle_timer);
    if (keel_promise_pending(&c->read_p))
        resolve_read(c, keel_err(-ECANCELED));
    if (keel_promise_pending(&c->write_p))
        keel_promise_set_error(&c->write_p, -ECANCELED);
    keel_future *f = keel_promise_init(&c->close_p);
    if (c->out.count && !c->err) {
        queue_send(s, c);
        write_deadline_arm(s, c);
    } else {
        keel__timer_cancel(&c->write_timer);
    }
    conn_maybe_finish_close(c);
    return f;
}

void keel_conn_abort(keel_conn *c)
{
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    c->fail_on_close = true;
    if (!c->err)
        c->err = -ECONNABORTED;
    keel_detach(keel_conn_close(c));
}
