/* Cross-shard messaging: an N x N matrix of single-producer single-consumer
 * rings (ck_ring), so no two cores ever write the same cache line. A shard
 * stages outgoing messages per target during its turn and publishes them
 * once per turn; a full ring never drops or blocks: what does not fit waits
 * in the staging list, in order, for the next turn.
 *
 * A message is allocated from the sender's slab, runs on the target, and
 * comes back through the reverse ring as the reply, so it is always freed
 * by the shard that allocated it. */
#include <ck_ring.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Padded so that no two rings of the matrix share a cache line. */
struct keel__ring {
    struct ck_ring ring;
} KEEL__ALIGNED;

struct keel__msg {
    keel__msg *next;
    keel_remote_fn fn;
    void *arg;
    keel_result result;
    keel_promise reply; /* touched on the sender only */
    uint16_t from;
    bool is_reply;
    uint8_t group; /* the sender's scheduling group: fn runs in it */
    uint32_t seq;  /* the sender's message number, for trace flows */
};
_Static_assert(sizeof(struct keel__msg) <= 64, "a message fits one slab-64 object");

/* Bounds the messages taken from one source per turn (whole chains, so it
 * may be passed by one chain) so one chatty shard cannot starve the others
 * or the loop's I/O. */
#define PUBLISH_EVERY 256
#define RECV_BUDGET 4096

static unsigned round_pow2(unsigned v)
{
    unsigned p = 4;
    while (p < v)
        p <<= 1;
    return p;
}

int keel__xshard_init(keel__runtime *rt)
{
    unsigned n = rt->nshards;
    rt->ring_capacity =
        round_pow2(rt->config.msg_ring_capacity ? rt->config.msg_ring_capacity : 1024);
    rt->rings = keel__aligned_alloc(KEEL__CACHELINE, sizeof(struct keel__ring) * n * n);
    rt->ring_bufs = calloc((size_t)n * n, sizeof(void *));
    if (!rt->rings || !rt->ring_bufs)
        goto fail;
    for (unsigned i = 0; i < n * n; i++) {
        ck_ring_init(&rt->rings[i].ring, rt->ring_capacity);
        rt->ring_bufs[i] =
            keel__aligned_alloc(KEEL__CACHELINE, sizeof(ck_ring_buffer_t) * rt->ring_capacity);
        if (!rt->ring_bufs[i])
            goto fail;
    }
    return 0;
fail:
    keel__xshard_fini(rt);
    return -ENOMEM;
}

void keel__xshard_fini(keel__runtime *rt)
{
    if (rt->ring_bufs) {
        for (unsigned i = 0; i < rt->nshards * rt->nshards; i++)
            free(rt->ring_bufs[i]);
    }
    free(rt->ring_bufs);
    free(rt->rings);
    rt->ring_bufs = NULL;
    rt->rings = NULL;
}

int keel__xshard_shard_init(keel__shard *s)
{
    unsigned n = keel__rt->nshards;
    s->staged_head = calloc(n, sizeof(keel__msg *));
    s->staged_tail = calloc(n, sizeof(keel__msg *));
    s->staged_dirty = calloc(n, sizeof(bool));
    if (!s->staged_head || !s->staged_tail || !s->staged_dirty) {
        keel__xshard_shard_fini(s);
        return -ENOMEM;
    }
    return 0;
}

void keel__xshard_shard_fini(keel__shard *s)
{
    free(s->staged_head);
    free(s->staged_tail);
    free(s->staged_dirty);
    s->staged_head = s->staged_tail = NULL;
    s->staged_dirty = NULL;
}

static inline struct ck_ring *ring_of(unsigned from, unsigned to)
{
    return &keel__rt->rings[from * keel__rt->nshards + to].ring;
}

static inline ck_ring_buffer_t *buf_of(unsigned from, unsigned to)
{
    return keel__rt->ring_bufs[from * keel__rt->nshards + to];
}

/* A trace flow id, the same on both sides: sender, direction, number. */
static inline int64_t flow_id(const keel__msg *m)
{
    return (int64_t)(((uint64_t)m->from << 33) | ((uint64_t)m->is_reply << 32) | m->seq);
}

static void stage(keel__shard *s, unsigned to, keel__msg *m)
{
    s->stats.msgs_sent++;
    if (KEEL__TRACING())
        keel__trace_record(s, KEEL__EV_MSG_SEND, keel__clock_ns(), 0, to, flow_id(m));
    m->next = NULL;
    if (s->staged_tail[to])
        s->staged_tail[to]->next = m;
    else
        s->staged_head[to] = m;
    s->staged_tail[to] = m;
}

bool keel__xshard_staged(keel__shard *s)
{
    for (unsigned t = 0; t < keel__rt->nshards; t++)
        if (s->staged_head[t])
            return true;
    return false;
}

void keel__xshard_publish(keel__shard *s)
{
    unsigned n = keel__rt->nshards;
    bool any = false;
    for (unsigned t = 0; t < n; t++) {
        keel__msg *chain = s->staged_head[t];
        if (!chain)
            continue;
        /* The turn's messages for t go out as one chain in one ring slot:
         * the ring's shared indices are touched once per turn, not once per
         * message. A full ring keeps the chain here, growing, in order. */
        if (!ck_ring_enqueue_spsc(ring_of(s->id, t), buf_of(s->id, t), chain))
            continue;
        /* The chain is the target's now: forget it, touch none of it. */
        s->staged_head[t] = s->staged_tail[t] = NULL;
        s->staged_dirty[t] = true;
        any = true;
    }
    if (!any)
        return;
    /* Store-load fence: our ring stores must be visible before we read the
     * targets' sleep flags. The target does the mirror image (flag store,
     * fence, ring check); with both fences, either it sees our messages or
     * we see it asleep, never neither. */
    atomic_thread_fence(memory_order_seq_cst);
    for (unsigned t = 0; t < n; t++) {
        if (!s->staged_dirty[t])
            continue;
        s->staged_dirty[t] = false;
        keel__shard *target = keel__rt->shards[t];
        if (atomic_load_explicit(&target->sleeping, memory_order_relaxed) &&
            atomic_exchange_explicit(&target->sleeping, 0, memory_order_relaxed)) {
            s->stats.wakeups_sent++;
            s->backend->wake(s, target);
        }
    }
}

static void reply_ready(void *ctx, keel_result r)
{
    keel__msg *m = ctx;
    m->result = r;
    m->is_reply = true;
    stage(keel__shard_self(), m->from, m);
}

bool keel__xshard_poll(keel__shard *s)
{
    unsigned n = keel__rt->nshards;
    bool got = false;
    for (unsigned from = 0; from < n; from++) {
        if (from == s->id)
            continue;
        struct ck_ring *ring = ring_of(from, s->id);
        ck_ring_buffer_t *buf = buf_of(from, s->id);
        keel__msg *m;
        unsigned budget = RECV_BUDGET;
        while (budget && ck_ring_dequeue_spsc(ring, buf, &m)) {
            got = true;
            for (; m; budget = budget ? budget - 1 : 0) {
                /* Read the link first: handling m may stage it as a reply,
                 * which rewrites it. */
                keel__msg *next = m->next;
                s->stats.msgs_received++;
                keel__stall_progress(s);
                if (KEEL__TRACING())
                    keel__trace_record(s, KEEL__EV_MSG_RECV, keel__clock_ns(), 0, from, flow_id(m));
                if (m->is_reply) {
                    s->outstanding--;
                    keel_promise p = m->reply;
                    keel_result r = m->result;
                    keel__free(m, sizeof(*m));
                    keel_promise_resolve(&p, r);
                } else {
                    /* The work runs in the sender's group, like a local
                     * continuation would, and so do its continuations. */
                    s->cur_group = m->group;
                    if (KEEL__TRACING()) { /* a slice for the work on the target's track */
                        uint64_t t0 = keel__clock_ns();
                        keel_on_done(m->fn(m->arg), reply_ready, m);
                        keel__trace_record(s, KEEL__EV_TASK, t0, keel__clock_ns(), m->group, 0);
                    } else {
                        keel_on_done(m->fn(m->arg), reply_ready, m);
                    }
                    s->cur_group = 0;
                }
                m = next;
                /* Hand back what is done so far every so often, so the
                 * sender works on replies while we work on the rest. */
                if ((s->stats.msgs_received & (PUBLISH_EVERY - 1)) == 0)
                    keel__xshard_publish(s);
            }
        }
    }
    return got;
}

bool keel__xshard_pending_in(keel__shard *s)
{
    unsigned n = keel__rt->nshards;
    for (unsigned from = 0; from < n; from++)
        if (from != s->id && ck_ring_size(ring_of(from, s->id)) > 0)
            return true;
    return false;
}

/* ---- public API ------------------------------------------------------------ */

typedef struct self_call {
    keel_remote_fn fn;
    void *arg;
} self_call;

static keel_future *run_self_call(void *ctx, keel_result r)
{
    (void)r;
    self_call c = *(self_call *)ctx;
    keel__free(ctx, sizeof(self_call));
    return c.fn(c.arg);
}

keel_future *keel_submit_to(unsigned shard, keel_remote_fn fn, void *arg)
{
    keel__shard *s = keel__shard_self();
    assert(shard < keel__rt->nshards);
    if (shard == s->id) {
        self_call *c = keel__alloc(sizeof(*c));
        c->fn = fn;
        c->arg = arg;
        return keel_then(keel_yield(), run_self_call, c);
    }
    keel__msg *m = keel__alloc(sizeof(*m));
    m->fn = fn;
    m->arg = arg;
    m->from = (uint16_t)s->id;
    m->is_reply = false;
    m->group = s->cur_group;
    m->seq = (uint32_t)s->stats.msgs_sent;
    s->outstanding++;
    keel_future *f = keel_promise_init(&m->reply);
    stage(s, shard, m);
    return f;
}

static keel_future *resolve_zero(void *ctx, keel_result r)
{
    (void)ctx;
    (void)r;
    return keel_make_ready(0);
}

keel_future *keel_invoke_on_all(keel_remote_fn fn, void *arg)
{
    unsigned n = keel__rt->nshards;
    keel_future *fs[KEEL_MAX_SHARDS];
    for (unsigned i = 0; i < n; i++)
        fs[i] = keel_submit_to(i, fn, arg);
    return keel_then(keel_when_all(fs, n, NULL), resolve_zero, NULL);
}

/* ---- sharded services --------------------------------------------------------- */

typedef struct sharded_call {
    keel_sharded *s;
    void *(*create)(void *arg);
    keel_future *(*fn)(void *instance, void *arg);
    void (*destroy)(void *instance);
    void *arg;
} sharded_call;

static sharded_call *sharded_call_new(keel_sharded *s, void *arg)
{
    sharded_call *c = keel__alloc(sizeof(*c));
    memset(c, 0, sizeof(*c));
    c->s = s;
    c->arg = arg;
    return c;
}

static void sharded_call_free(void *ctx, keel_result r)
{
    (void)r;
    keel__free(ctx, sizeof(sharded_call));
}

static keel_future *sharded_create_here(void *ctx)
{
    sharded_call *c = ctx;
    void *inst = c->create(c->arg);
    c->s->_instances[keel_shard_id()] = inst;
    return inst ? keel_make_ready(0) : keel_make_error(-ENOMEM);
}

keel_future *keel_sharded_start(keel_sharded *s, void *(*create)(void *arg), void *arg)
{
    s->_count = keel_shard_count();
    s->_instances = calloc(s->_count, sizeof(void *));
    if (!s->_instances)
        return keel_make_error(-ENOMEM);
    sharded_call *c = sharded_call_new(s, arg);
    c->create = create;
    return keel_finally(keel_invoke_on_all(sharded_create_here, c), sharded_call_free, c);
}

static keel_future *sharded_invoke_here(void *ctx)
{
    sharded_call *c = ctx;
    return c->fn(keel_sharded_local(c->s), c->arg);
}

keel_future *keel_sharded_invoke_on(keel_sharded *s, unsigned shard,
                                    keel_future *(*fn)(void *instance, void *arg), void *arg)
{
    sharded_call *c = sharded_call_new(s, arg);
    c->fn = fn;
    return keel_finally(keel_submit_to(shard, sharded_invoke_here, c), sharded_call_free, c);
}

keel_future *keel_sharded_invoke_on_all(keel_sharded *s,
                                        keel_future *(*fn)(void *instance, void *arg), void *arg)
{
    sharded_call *c = sharded_call_new(s, arg);
    c->fn = fn;
    return keel_finally(keel_invoke_on_all(sharded_invoke_here, c), sharded_call_free, c);
}

static keel_future *sharded_destroy_here(void *ctx)
{
    sharded_call *c = ctx;
    void **slot = &c->s->_instances[keel_shard_id()];
    if (*slot && c->destroy)
        c->destroy(*slot);
    *slot = NULL;
    return keel_make_ready(0);
}

static void sharded_free_storage(void *ctx, keel_result r)
{
    sharded_call *c = ctx;
    free(c->s->_instances);
    c->s->_instances = NULL;
    c->s->_count = 0;
    sharded_call_free(c, r);
}

keel_future *keel_sharded_stop(keel_sharded *s, void (*destroy)(void *instance))
{
    if (!s->_instances)
        return keel_make_ready(0);
    sharded_call *c = sharded_call_new(s, NULL);
    c->destroy = destroy;
    return keel_finally(keel_invoke_on_all(sharded_destroy_here, c), sharded_free_storage, c);
}
