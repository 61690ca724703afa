/* The io_queue: bounds a shard's file operations in flight and shares the
 * device among priority classes (see <keel/disk.h>).
 *
 * Each class has a virtual cost: what it dispatched, scaled by 1024/shares.
 * When a slot frees, the waiting class with the smallest goes next, so
 * classes that both wait get the device in proportion to their shares; a
 * class that was idle rejoins at the current virtual cost. A request costs
 * its bytes plus PER_OP_COST, so many small reads are not free next to
 * large writes. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "ioq.h"

#define MAX_SHARES 10000u
#define PER_OP_COST 4096u
#define DEFAULT_MAX_OPS 256u
#define DEFAULT_MAX_BYTES (32ull << 20)

struct keel_io_class_s {
    char name[32];
    unsigned shares;
};

static struct keel_io_class_s g_classes[KEEL_MAX_IO_CLASSES] = {{"default", 1000}};
static _Atomic unsigned g_nclasses = 1;
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;

typedef struct ioq_class {
    keel__fop *head, *tail;
    uint64_t queued;
    uint64_t vcost;
    uint64_t dispatched_ops, dispatched_bytes, wait_ns;
} ioq_class;

typedef struct keel__ioq {
    ioq_class cls[KEEL_MAX_IO_CLASSES];
    uint32_t waiting; /* bit c: class c has requests queued */
    uint32_t inflight_ops, max_ops;
    uint64_t inflight_bytes, max_bytes;
    uint64_t vtime; /* vcost of the class dispatched last */
} keel__ioq;

keel_io_class *keel_io_class_create(const char *name, unsigned shares)
{
    if (!name || !*name || strlen(name) >= sizeof(g_classes[0].name) || shares == 0 ||
        shares > MAX_SHARES) {
        errno = EINVAL;
        return NULL;
    }
    keel_io_class *c = NULL;
    int err = 0;
    pthread_mutex_lock(&g_lock);
    unsigned n = atomic_load_explicit(&g_nclasses, memory_order_relaxed);
    for (unsigned i = 0; i < n; i++)
        if (!strcmp(g_classes[i].name, name))
            err = EEXIST;
    if (!err && n == KEEL_MAX_IO_CLASSES)
        err = ENOSPC;
    if (!err) {
        c = &g_classes[n];
        strcpy(c->name, name);
        c->shares = shares;
        atomic_store_explicit(&g_nclasses, n + 1, memory_order_release);
    }
    pthread_mutex_unlock(&g_lock);
    if (err)
        errno = err;
    return c;
}

keel_io_class *keel_io_class_default(void)
{
    return &g_classes[0];
}

const char *keel_io_class_name(const keel_io_class *c)
{
    return c->name;
}

uint8_t keel__ioq_class_index(const keel_io_class *c)
{
    return (uint8_t)(c - g_classes);
}

static keel__ioq *ioq_here(keel__shard *s)
{
    keel__ioq *q = s->disk;
    if (!q) {
        q = calloc(1, sizeof(*q));
        if (!q)
            return NULL;
        q->max_ops = DEFAULT_MAX_OPS;
        q->max_bytes = DEFAULT_MAX_BYTES;
        s->disk = q;
    }
    return q;
}

void keel__disk_shard_fini(keel__shard *s)
{
    free(s->disk);
    s->disk = NULL;
}

void keel_io_queue_set_limits(unsigned max_ops, uint64_t max_bytes)
{
    keel__ioq *q = ioq_here(keel__shard_self());
    if (!q)
        return;
    q->max_ops = max_ops ? max_ops : 1;
    q->max_bytes = max_bytes ? max_bytes : 1;
}

int keel_io_class_stats_get(unsigned shard, const keel_io_class *c, keel_io_class_stats *out)
{
    if (!keel__rt || shard >= keel__rt->nshards || !c || c < g_classes ||
        c >= g_classes + atomic_load(&g_nclasses))
        return -EINVAL;
    memset(out, 0, sizeof(*out));
    /* Written by its shard only: a relaxed snapshot, as for the other stats. */
    const volatile keel__ioq *q = keel__rt->shards[shard]->disk;
    if (!q)
        return 0;
    const volatile ioq_class *k = &q->cls[c - g_classes];
    out->dispatched_ops = k->dispatched_ops;
    out->dispatched_bytes = k->dispatched_bytes;
    out->queued = k->queued;
    out->wait_ns = k->wait_ns;
    return 0;
}

static bool has_room(const keel__ioq *q, uint64_t cost)
{
    return q->inflight_ops < q->max_ops &&
           (q->inflight_bytes == 0 || q->inflight_bytes + cost <= q->max_bytes);
}

static void dispatch(keel__shard *s, keel__ioq *q, keel__fop *fo)
{
    ioq_class *k = &q->cls[fo->cls];
    q->inflight_ops++;
    q->inflight_bytes += fo->cost;
    k->dispatched_ops++;
    k->dispatched_bytes += fo->len;
    k->vcost += (fo->cost << 10) / g_classes[fo->cls].shares;
    q->vtime = k->vcost;
    keel__fop_dispatch(s, fo);
}

/* Dispatches waiting requests while there is room, the class with the
 * least virtual cost first. */
static void pump(keel__shard *s, keel__ioq *q)
{
    while (q->waiting) {
        uint32_t m = q->waiting;
        unsigned best = (unsigned)__builtin_ctz(m);
        for (m &= m - 1; m; m &= m - 1) {
            unsigned c = (unsigned)__builtin_ctz(m);
            if (q->cls[c].vcost < q->cls[best].vcost)
                best = c;
        }
        ioq_class *k = &q->cls[best];
        keel__fop *fo = k->head;
        if (!has_room(q, fo->cost))
            return;
        k->head = fo->qnext;
        if (!k->head) {
            k->tail = NULL;
            q->waiting &= ~(1u << best);
        }
        k->queued--;
        k->wait_ns += s->now_ns > fo->queued_ns ? s->now_ns - fo->queued_ns : 0;
        dispatch(s, q, fo);
    }
}

void keel__ioq_submit(keel__shard *s, keel__fop *fo)
{
    keel__ioq *q = ioq_here(s);
    fo->cost = fo->len + PER_OP_COST;
    if (!q) { /* no memory for a queue: go straight to the device */
        keel__fop_dispatch(s, fo);
        return;
    }
    ioq_class *k = &q->cls[fo->cls];
    if (!q->waiting && has_room(q, fo->cost)) {
        if (k->vcost < q->vtime)
            k->vcost = q->vtime;
        dispatch(s, q, fo);
        return;
    }
    fo->qnext = NULL;
    fo->queued_ns = s->now_ns;
    if (k->tail) {
        k->tail->qnext = fo;
    } else {
        k->head = fo;
        if (k->vcost < q->vtime)
            k->vcost = q->vtime;
        q->waiting |= 1u << fo->cls;
    }
    k->tail = fo;
    k->queued++;
}

void keel__ioq_done(keel__shard *s, const keel__fop *fo)
{
    keel__ioq *q = s->disk;
    if (!q)
        return;
    q->inflight_ops--;
    q->inflight_bytes -= fo->cost;
    pump(s, q);
}
