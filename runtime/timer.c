/* Timers: a binary min-heap of deadlines per shard. The loop arms a single
 * kernel timeout, for the earliest deadline, as the wait bound of its
 * io_uring_enter/epoll_wait; so 100k pending sleeps cost 100k heap slots
 * and one kernel timer. */
#include <errno.h>
#include <stdlib.h>

#include "internal.h"

static void heap_set(keel__shard *s, size_t i, keel__timer *t)
{
    s->timer_heap[i] = t;
    t->heap_idx = i;
}

static void sift_up(keel__shard *s, size_t i)
{
    keel__timer *t = s->timer_heap[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (s->timer_heap[parent]->deadline_ns <= t->deadline_ns)
            break;
        heap_set(s, i, s->timer_heap[parent]);
        i = parent;
    }
    heap_set(s, i, t);
}

static void sift_down(keel__shard *s, size_t i)
{
    keel__timer *t = s->timer_heap[i];
    size_t n = s->timer_count;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && s->timer_heap[c + 1]->deadline_ns < s->timer_heap[c]->deadline_ns)
            c++;
        if (t->deadline_ns <= s->timer_heap[c]->deadline_ns)
            break;
        heap_set(s, i, s->timer_heap[c]);
        i = c;
    }
    heap_set(s, i, t);
}

static void heap_remove(keel__shard *s, size_t i)
{
    keel__timer *last = s->timer_heap[--s->timer_count];
    s->timer_heap[i]->heap_idx = SIZE_MAX;
    if (i == s->timer_count)
        return;
    heap_set(s, i, last);
    if (i > 0 && s->timer_heap[(i - 1) / 2]->deadline_ns > last->deadline_ns)
        sift_up(s, i);
    else
        sift_down(s, i);
}

void keel__timer_arm(keel__timer *t, uint64_t deadline_ns)
{
    keel__shard *s = keel__shard_self();
    if (s->timer_count == s->timer_cap) {
        size_t cap = s->timer_cap ? s->timer_cap * 2 : 64;
        keel__timer **h = realloc(s->timer_heap, cap * sizeof(*h));
        if (!h)
            abort(); /* as for a slab: the loop cannot run without it */
        s->timer_heap = h;
        s->timer_cap = cap;
    }
    t->deadline_ns = deadline_ns;
    heap_set(s, s->timer_count++, t);
    sift_up(s, t->heap_idx);
}

bool keel__timer_cancel(keel__timer *t)
{
    if (t->heap_idx == SIZE_MAX)
        return false;
    heap_remove(keel__shard_self(), t->heap_idx);
    return true;
}

void keel__timers_expire(keel__shard *s)
{
    while (s->timer_count > 0 && s->timer_heap[0]->deadline_ns <= s->now_ns) {
        keel__timer *t = s->timer_heap[0];
        heap_remove(s, 0);
        s->stats.timers_fired++;
        keel__stall_progress(s);
        t->fire(t, 0);
    }
}

uint64_t keel__timers_next_ns(keel__shard *s)
{
    return s->timer_count ? s->timer_heap[0]->deadline_ns : UINT64_MAX;
}

void keel__timers_cancel_all(keel__shard *s)
{
    s->timers_closed = true;
    while (s->timer_count > 0) {
        keel__timer *t = s->timer_heap[s->timer_count - 1];
        heap_remove(s, s->timer_count - 1);
        t->fire(t, -ECANCELED);
    }
    free(s->timer_heap);
    s->timer_heap = NULL;
    s->timer_cap = 0;
}

/* ---- keel_sleep ---------------------------------------------------------- */

typedef struct sleeper {
    keel__timer timer;
    keel_promise promise;
    keel_abort_sub sub;
} sleeper;
_Static_assert(sizeof(sleeper) <= 128, "a sleeper fits one slab-128 object");

static void sleeper_fire(keel__timer *t, int err)
{
    sleeper *sl = (sleeper *)t;
    keel_abort_unsubscribe(&sl->sub);
    keel_promise p = sl->promise;
    keel__free(sl, sizeof(*sl));
    keel_promise_resolve(&p, keel_err(err));
}

static void sleeper_abort(keel_abort_sub *sub, void *ctx)
{
    (void)sub;
    sleeper *sl = ctx;
    keel__timer_cancel(&sl->timer);
    sleeper_fire(&sl->timer, -ECANCELED);
}

keel_future *keel_sleep_abortable(uint64_t duration_ns, keel_abort_source *as)
{
    keel__shard *s = keel__shard_self();
    if (s->timers_closed || (as && keel_abort_requested(as)))
        return keel_make_error(-ECANCELED);
    sleeper *sl = keel__alloc(sizeof(*sl));
    keel_future *f = keel_promise_init(&sl->promise);
    sl->timer.fire = sleeper_fire;
    sl->sub._next = sl->sub._prev = NULL;
    if (as)
        keel_abort_subscribe(as, &sl->sub, sleeper_abort, sl);
    /* Deadlines count from the loop's clock, read fresh: a sleep started
     * late in a long turn must not fire early. */
    keel__timer_arm(&sl->timer, keel__clock_ns() + duration_ns);
    return f;
}

keel_future *keel_sleep(uint64_t duration_ns)
{
    return keel_sleep_abortable(duration_ns, NULL);
}
