/* when_all, parallel_for_each, repeat, with_timeout. */
#include <errno.h>
#include <stdlib.h>

#include "internal.h"

/* ---- join: the state behind when_all and parallel_for_each --------------- */

typedef struct join join;
typedef struct join_slot {
    join *j;
    size_t idx;
} join_slot;

struct join {
    size_t remaining; /* futures outstanding, plus one while setting up */
    size_t n;
    size_t err_idx;
    int err;
    int64_t ok_value;
    keel_result *results;
    keel_promise promise;
    join_slot slots[];
};

static size_t join_size(size_t n)
{
    return sizeof(join) + n * sizeof(join_slot);
}

static join *join_new(size_t n, keel_result *results, int64_t ok_value, keel_future **out)
{
    join *j = keel__alloc(join_size(n));
    if (!j)
        return NULL;
    j->remaining = n + 1;
    j->n = n;
    j->err_idx = SIZE_MAX;
    j->err = 0;
    j->ok_value = ok_value;
    j->results = results;
    *out = keel_promise_init(&j->promise);
    return j;
}

static void join_release(join *j)
{
    if (--j->remaining)
        return;
    keel_promise p = j->promise;
    keel_result r = j->err ? keel_err(j->err) : keel_ok(j->ok_value);
    keel__free(j, join_size(j->n));
    keel_promise_resolve(&p, r);
}

static void join_slot_done(void *ctx, keel_result r)
{
    join_slot *slot = ctx;
    join *j = slot->j;
    if (j->results)
        j->results[slot->idx] = r;
    if (r.err && slot->idx < j->err_idx) {
        j->err_idx = slot->idx;
        j->err = r.err;
    }
    join_release(j);
}

static void join_add(join *j, size_t i, keel_future *f)
{
    j->slots[i].j = j;
    j->slots[i].idx = i;
    keel_on_done(f, join_slot_done, &j->slots[i]);
}

keel_future *keel_when_all(keel_future *const *fs, size_t n, keel_result *results)
{
    keel_future *out;
    join *j = join_new(n, results, (int64_t)n, &out);
    if (!j) {
        for (size_t i = 0; i < n; i++)
            keel_detach(fs[i]);
        return keel_make_error(-ENOMEM);
    }
    for (size_t i = 0; i < n; i++)
        join_add(j, i, fs[i]);
    join_release(j);
    return out;
}

keel_future *keel_parallel_for_each(size_t n, keel_future *(*fn)(void *ctx, size_t i), void *ctx)
{
    keel_future *out;
    join *j = join_new(n, NULL, 0, &out);
    if (!j)
        return keel_make_error(-ENOMEM);
    for (size_t i = 0; i < n; i++)
        join_add(j, i, fn(ctx, i));
    join_release(j);
    return out;
}

/* ---- repeat ---------------------------------------------------------------- */

typedef struct repeater {
    keel_future *(*fn)(void *ctx);
    void *ctx;
    keel_promise promise;
} repeater;

static void repeat_loop(repeater *rp);

static void repeat_finish(repeater *rp, int err)
{
    keel_promise p = rp->promise;
    keel__free(rp, sizeof(*rp));
    keel_promise_resolve(&p, keel_err(err));
}

static void repeat_step_done(void *ctx, keel_result r)
{
    repeater *rp = ctx;
    if (r.err)
        repeat_finish(rp, r.err);
    else if (r.val == KEEL_STOP)
        repeat_finish(rp, 0);
    else
        repeat_loop(rp);
}

static void repeat_resume(void *ctx, keel_result r)
{
    (void)r;
    repeat_loop(ctx);
}

/* Iterates while fn's futures are ready, in a loop rather than recursion;
 * waits on the first pending one; yields to the scheduler every 64 ready
 * iterations once the quota is spent, so a loop that never blocks cannot
 * starve I/O. */
static void repeat_loop(repeater *rp)
{
    for (unsigned i = 1;; i++) {
        keel_future *f = rp->fn(rp->ctx);
        if (!keel_future_is_ready(f)) {
            keel_on_done(f, repeat_step_done, rp);
            return;
        }
        keel_result r = keel_future_take(f);
        if (r.err || r.val == KEEL_STOP) {
            repeat_finish(rp, r.err);
            return;
        }
        if ((i & 63) == 0 && keel_need_preempt()) {
            keel_on_done(keel_yield(), repeat_resume, rp);
            return;
        }
    }
}

keel_future *keel_repeat(keel_future *(*fn)(void *ctx), void *ctx)
{
    repeater *rp = keel__alloc(sizeof(*rp));
    rp->fn = fn;
    rp->ctx = ctx;
    keel_future *out = keel_promise_init(&rp->promise);
    repeat_loop(rp);
    return out;
}

/* ---- with_timeout ------------------------------------------------------------ */

typedef struct timeout_state {
    keel__timer timer;
    keel_promise promise;
    keel_abort_source *as;
    int refs; /* the future's callback, and the armed timer */
    bool done;
} timeout_state;

static void timeout_release(timeout_state *ts)
{
    if (--ts->refs == 0)
        keel__free(ts, sizeof(*ts));
}

static void timeout_fired(keel__timer *t, int err)
{
    timeout_state *ts = (timeout_state *)t;
    if (!ts->done) {
        ts->done = true;
        keel_abort_source *as = ts->as;
        keel_promise_resolve(&ts->promise, keel_err(err ? err : -ETIMEDOUT));
        if (as)
            keel_abort_source_request(as);
    }
    timeout_release(ts);
}

static void timeout_future_done(void *ctx, keel_result r)
{
    timeout_state *ts = ctx;
    if (!ts->done) {
        ts->done = true;
        if (keel__timer_cancel(&ts->timer))
            ts->refs--;
        keel_promise_resolve(&ts->promise, r);
    }
    timeout_release(ts);
}

keel_future *keel_with_timeout(keel_future *f, uint64_t timeout_ns, keel_abort_source *as)
{
    if (keel_future_is_ready(f))
        return f;
    timeout_state *ts = keel__alloc(sizeof(*ts));
    ts->timer.fire = timeout_fired;
    ts->as = as;
    ts->refs = 2;
    ts->done = false;
    keel_future *out = keel_promise_init(&ts->promise);
    keel__timer_arm(&ts->timer, keel__clock_ns() + timeout_ns);
    keel_on_done(f, timeout_future_done, ts);
    return out;
}
