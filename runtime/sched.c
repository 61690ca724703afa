/* The shard's run queue: continuations whose futures are ready but that
 * could not run inline (too deep, or queued on purpose), in FIFO order. */
#include <time.h>

#include "internal.h"

uint64_t keel__clock_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void keel__rq_push(keel__shard *s, keel_future *f)
{
    f->qnext = NULL;
    if (s->rq_tail)
        s->rq_tail->qnext = f;
    else
        s->rq_head = f;
    s->rq_tail = f;
    s->rq_len++;
}

static keel_future *rq_pop(keel__shard *s)
{
    keel_future *f = s->rq_head;
    if (f) {
        s->rq_head = f->qnext;
        if (!s->rq_head)
            s->rq_tail = NULL;
        s->rq_len--;
    }
    return f;
}

/* Runs queued tasks until the queue is empty or the quota is spent. The
 * clock is read every 16 tasks: a task is tens of ns, so that keeps the
 * quota's precision well under a microsecond at a fraction of the cost. */
/* Runs queued tasks until the queue is empty or the quota is spent. The
 * clock is read every 16 tasks: a task is tens of ns, so that keeps the
 * quota's precision well under a microsecond at a fraction of the cost.
 * At the same points it looks for messages from other shards and, if there
 * are some, returns early (not spent) so the loop serves them now: a shard
 * busy with its own tasks still answers another core within microseconds,
 * not a quota later. */
bool keel__run_tasks(keel__shard *s)
{
    uint64_t start = keel__clock_ns();
    s->now_ns = start;
    s->quota_deadline_ns = start + s->quota_ns;
    unsigned n = 0;
    keel_future *f;
    while ((f = rq_pop(s)) != NULL) {
        s->stats.tasks_run++;
        s->inline_depth = 0;
        if (f->flags & KEEL__FF_YIELD) {
            f->flags &= (uint8_t)~KEEL__FF_YIELD;
            keel__future_resolve(f, keel_ok(0));
        } else {
            keel__run_continuation(s, f);
        }
        if ((++n & 15) == 0) {
            if (keel__clock_ns() >= s->quota_deadline_ns) {
                s->inline_depth = 0;
                return true;
            }
            if (keel__xshard_pending_in(s))
                break;
        }
    }
    s->inline_depth = 0;
    return false;
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
