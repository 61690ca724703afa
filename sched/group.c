/* Scheduling groups: a run queue per group and the pick that shares a
 * shard's CPU among them.
 *
 * Each group has a virtual runtime: the CPU its tasks used, scaled by
 * 1024/shares. A turn runs the runnable group with the smallest, for a
 * slice, then picks again, so over time each group's CPU is in proportion
 * to its shares (Linux's CFS and Seastar's scheduling groups work this
 * way). A group that was idle rejoins at the current virtual time, so
 * sleeping does not bank credit to spend in a burst later.
 *
 * Groups are process-wide (names and shares in a table every shard reads);
 * run queues and accounting are per shard. */
#include <errno.h>
#include <string.h>
#include <time.h>

#include "internal.h"

#define MAX_SHARES 10000u
/* A group runs this long before the pick is looked at again, when another
 * group is runnable too: short enough that a 1000:250 split converges
 * within a few quotas, long enough that a switch (two clock reads) is
 * noise. */
#define SLICE_NS 100000ull

struct keel_sched_group_s {
    char name[KEEL_SCHED_GROUP_NAME_MAX + 1];
    _Atomic unsigned shares;
};

static struct keel_sched_group_s g_groups[KEEL_MAX_SCHED_GROUPS] = {
    {.name = "main", .shares = 1000},
    {.name = "background", .shares = 200},
};
static _Atomic unsigned g_group_count = 2;
static pthread_mutex_t g_create_lock = PTHREAD_MUTEX_INITIALIZER;

uint64_t keel__clock_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- the group table ------------------------------------------------------ */

keel_sched_group *keel_sched_group_create(const char *name, unsigned shares)
{
    if (!name || !*name || strlen(name) > KEEL_SCHED_GROUP_NAME_MAX || shares == 0 ||
        shares > MAX_SHARES) {
        errno = EINVAL;
        return NULL;
    }
    pthread_mutex_lock(&g_create_lock);
    unsigned n = atomic_load_explicit(&g_group_count, memory_order_relaxed);
    keel_sched_group *g = NULL;
    int err = 0;
    for (unsigned i = 0; i < n; i++)
        if (!strcmp(g_groups[i].name, name))
            err = EEXIST;
    if (!err && n == KEEL_MAX_SCHED_GROUPS)
        err = ENOSPC;
    if (!err) {
        g = &g_groups[n];
        strcpy(g->name, name);
        atomic_store_explicit(&g->shares, shares, memory_order_relaxed);
        /* Release: a shard that sees the count sees the name and shares. */
        atomic_store_explicit(&g_group_count, n + 1, memory_order_release);
    }
    pthread_mutex_unlock(&g_create_lock);
    if (err)
        errno = err;
    return g;
}

keel_sched_group *keel_sched_group_main(void)
{
    return &g_groups[0];
}

keel_sched_group *keel_sched_group_background(void)
{
    return &g_groups[1];
}

unsigned keel_sched_group_count(void)
{
    return atomic_load_explicit(&g_group_count, memory_order_acquire);
}

keel_sched_group *keel_sched_group_at(unsigned index)
{
    return index < keel_sched_group_count() ? &g_groups[index] : NULL;
}

keel_sched_group *keel_sched_group_find(const char *name)
{
    unsigned n = keel_sched_group_count();
    for (unsigned i = 0; i < n; i++)
        if (!strcmp(g_groups[i].name, name))
            return &g_groups[i];
    return NULL;
}

unsigned keel_sched_group_index(const keel_sched_group *g)
{
    return (unsigned)(g - g_groups);
}

const char *keel_sched_group_name(const keel_sched_group *g)
{
    return g->name;
}

unsigned keel_sched_group_shares(const keel_sched_group *g)
{
    return atomic_load_explicit(&g->shares, memory_order_relaxed);
}

int keel_sched_group_set_shares(keel_sched_group *g, unsigned shares)
{
    if (shares == 0 || shares > MAX_SHARES)
        return -EINVAL;
    atomic_store_explicit(&g->shares, shares, memory_order_relaxed);
    return 0;
}

keel_sched_group *keel_sched_group_current(void)
{
    return &g_groups[keel__shard_self()->cur_group];
}

int keel_sched_group_stats_get(unsigned shard, const keel_sched_group *g,
                               keel_sched_group_stats *out)
{
    if (!keel__rt || shard >= keel__rt->nshards || !g || g < g_groups ||
        g >= g_groups + keel_sched_group_count())
        return -EINVAL;
    /* Plain words written by their shard only: a foreign reader gets a
     * slightly stale snapshot, never a torn value (see keel_shard_stats_get). */
    const volatile keel__group_rq *q = &keel__rt->shards[shard]->groups[g - g_groups];
    out->runtime_ns = q->runtime_ns;
    out->tasks = q->tasks;
    out->queue_len = q->len;
    out->wait_ns = q->wait_ns;
    out->waits = q->waits;
    for (int i = 0; i < KEEL_SCHED_LATENCY_BUCKETS; i++)
        out->wait_hist[i] = q->wait_hist[i];
    return 0;
}

/* ---- run queues ------------------------------------------------------------ */

void keel__sched_shard_init(keel__shard *s)
{
    s->cur_group = 0;
    s->check_every = 16;
}

void keel__rq_push(keel__shard *s, keel_future *f)
{
    keel__group_rq *q = &s->groups[f->group];
    f->qnext = NULL;
    if (q->tail) {
        q->tail->qnext = f;
    } else {
        q->head = f;
        /* It starts waiting now; an idle group rejoins at the current
         * virtual time instead of cashing in the time it slept. */
        q->runnable_since = s->now_ns;
        if (q->vruntime < s->vtime)
            q->vruntime = s->vtime;
        s->runnable |= 1u << f->group;
    }
    q->tail = f;
    q->len++;
}

static keel_future *rq_pop(keel__shard *s, unsigned g)
{
    keel__group_rq *q = &s->groups[g];
    keel_future *f = q->head;
    q->head = f->qnext;
    if (!q->head) {
        q->tail = NULL;
        s->runnable &= ~(1u << g);
    }
    q->len--;
    return f;
}

static unsigned pick(keel__shard *s)
{
    uint32_t m = s->runnable;
    unsigned best = (unsigned)__builtin_ctz(m);
    m &= m - 1;
    while (m) {
        unsigned g = (unsigned)__builtin_ctz(m);
        m &= m - 1;
        if (s->groups[g].vruntime < s->groups[best].vruntime)
            best = g;
    }
    return best;
}

static void note_wait(keel__group_rq *q, uint64_t now)
{
    uint64_t w = now > q->runnable_since ? now - q->runnable_since : 0;
    q->wait_ns += w;
    q->waits++;
    uint64_t us = w / 1000;
    unsigned b = us ? 64u - (unsigned)__builtin_clzll(us) : 0; /* us < 2^b */
    if (b >= KEEL_SCHED_LATENCY_BUCKETS)
        b = KEEL_SCHED_LATENCY_BUCKETS - 1;
    q->wait_hist[b]++;
}

static void charge(keel__shard *s, unsigned g, uint64_t ns)
{
    keel__group_rq *q = &s->groups[g];
    q->runtime_ns += ns;
    q->vruntime += (ns << 10) / atomic_load_explicit(&g_groups[g].shares, memory_order_relaxed);
}

static void run_one(keel__shard *s, keel_future *f)
{
    s->inline_depth = 0;
    if (f->flags & KEEL__FF_YIELD) {
        f->flags &= (uint8_t)~KEEL__FF_YIELD;
        keel__future_resolve(f, keel_ok(0));
    } else if (f->flags & KEEL__FF_CALL) {
        keel_future *(*fn)(void *) = (keel_future * (*)(void *)) f->ctx;
        void *arg = f->result.ptr;
        keel_future *out = f->next;
        keel__slab_free(&s->slabs[KEEL__SLAB_64], f);
        keel__future_link(s, fn(arg), out);
    } else {
        keel__run_continuation(s, f);
    }
}

/* Runs queued tasks, group by group as the pick says, until the queues are
 * empty or the quota is spent. The clock is read every check_every tasks:
 * every 16 while tasks are tens of ns (so the reads cost a fraction of the
 * work), and after every task once tasks are long, so a quota or a slice
 * overruns by one task at most. At the same points it looks for messages
 * from other shards and, if there are some, returns early (not spent) so
 * the loop serves them now: a shard busy with its own tasks still answers
 * another core within microseconds, not a quota later. */
bool keel__run_tasks(keel__shard *s)
{
    uint64_t now = keel__clock_ns();
    /* The loop's own work since the last run (I/O completions and the
     * continuations they ran inline, messages, timers) is main's: charge
     * it, less the time spent asleep, so main's share is what it used. */
    if (s->busy_mark_ns) {
        uint64_t span = now - s->busy_mark_ns, slept = s->stats.sleep_ns - s->busy_mark_sleep;
        if (span > slept)
            charge(s, 0, span - slept);
    }
    s->now_ns = now;
    s->quota_deadline_ns = now + s->quota_ns;
    bool spent = false, msgs = false;
    bool tracing = KEEL__TRACING();
    while (s->runnable && !spent && !msgs) {
        unsigned g = pick(s);
        keel__group_rq *q = &s->groups[g];
        note_wait(q, now);
        s->cur_group = (uint8_t)g;
        uint64_t start = now, last_check = now;
        uint64_t slice_end = start + SLICE_NS;
        unsigned n = 0;
        while (q->head) {
            keel_future *f = rq_pop(s, g);
            q->tasks++;
            s->stats.tasks_run++;
            keel__stall_progress(s);
            run_one(s, f);
            if (tracing) { /* a task starts where the previous one ended */
                uint64_t t1 = keel__clock_ns();
                keel__trace_record(s, KEEL__EV_TASK, now, t1, g, 0);
                now = t1;
            }
            if (++n >= s->check_every) {
                uint64_t t = tracing ? now : keel__clock_ns();
                if (t - last_check > s->quota_ns / 16)
                    s->check_every = 1;
                else if (s->check_every < 16)
                    s->check_every *= 2;
                now = last_check = t;
                s->now_ns = now; /* tasks queued from here wait from now */
                n = 0;
                if (now >= s->quota_deadline_ns) {
                    spent = true;
                    break;
                }
                if (keel__xshard_pending_in(s)) {
                    msgs = true;
                    break;
                }
                if (now >= slice_end && (s->runnable & ~(1u << g)))
                    break;
            }
        }
        if (n) /* the last tasks ran after the last check */
            now = keel__clock_ns();
        charge(s, g, now - start);
        s->vtime = q->vruntime;
        q->runnable_since = now; /* if still queued, it waits from here */
    }
    s->cur_group = 0;
    s->inline_depth = 0;
    s->now_ns = now;
    s->busy_mark_ns = now;
    s->busy_mark_sleep = s->stats.sleep_ns;
    keel__stall_progress(s);
    return spent;
}

bool keel_need_preempt(void)
{
    keel__shard *s = keel__shard_self();
    return keel__clock_ns() >= s->quota_deadline_ns;
}

uint64_t keel_now_ns(void)
{
    return keel__shard_self()->now_ns;
}

/* One future: queued pending and marked, it is resolved when the run queue
 * reaches it, which runs whatever continuation was attached meanwhile. */
keel_future *keel_yield(void)
{
    keel__shard *s = keel__shard_self();
    keel_future *f = keel__future_new();
    f->flags |= KEEL__FF_YIELD;
    keel__rq_push(s, f);
    return f;
}

keel_future *keel_with_sched_group(keel_sched_group *g, keel_future *(*fn)(void *arg), void *arg)
{
    keel__shard *s = keel__shard_self();
    keel_future *out = keel__future_new();
    keel_future *t = keel__future_new();
    t->flags |= KEEL__FF_CALL;
    t->group = (uint8_t)(g - g_groups);
    t->ctx = (void *)fn;
    t->result.ptr = arg;
    t->next = out;
    keel__rq_push(s, t);
    return out;
}
