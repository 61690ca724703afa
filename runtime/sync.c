/* Abort sources, gates and semaphores: shard-local coordination objects. */
#include <errno.h>

#include "internal.h"

/* ---- abort sources -------------------------------------------------------- */

void keel_abort_source_init(keel_abort_source *as)
{
    as->_head._next = as->_head._prev = &as->_head;
    as->_aborted = false;
}

int keel_abort_subscribe(keel_abort_source *as, keel_abort_sub *sub,
                         void (*fn)(keel_abort_sub *sub, void *ctx), void *ctx)
{
    if (as->_aborted) {
        sub->_next = sub->_prev = NULL;
        return -ECANCELED;
    }
    sub->_fn = fn;
    sub->_ctx = ctx;
    sub->_prev = as->_head._prev;
    sub->_next = &as->_head;
    as->_head._prev->_next = sub;
    as->_head._prev = sub;
    return 0;
}

void keel_abort_unsubscribe(keel_abort_sub *sub)
{
    if (!sub->_next)
        return;
    sub->_prev->_next = sub->_next;
    sub->_next->_prev = sub->_prev;
    sub->_next = sub->_prev = NULL;
}

void keel_abort_source_request(keel_abort_source *as)
{
    if (as->_aborted)
        return;
    as->_aborted = true;
    /* Each callback unsubscribes itself or is unsubscribed here first, so a
     * callback may free its own memory and even unsubscribe others. */
    while (as->_head._next != &as->_head) {
        keel_abort_sub *sub = as->_head._next;
        keel_abort_unsubscribe(sub);
        sub->_fn(sub, sub->_ctx);
    }
}

/* ---- gates ------------------------------------------------------------------ */

void keel_gate_init(keel_gate *g)
{
    g->_count = 0;
    g->_closed = false;
    g->_closed_promise._f = NULL;
}

int keel_gate_enter(keel_gate *g)
{
    if (g->_closed)
        return -KEEL_EGATE_CLOSED;
    g->_count++;
    return 0;
}

void keel_gate_leave(keel_gate *g)
{
    assert(g->_count > 0 && "keel_gate_leave without enter");
    if (--g->_count == 0 && g->_closed && keel_promise_pending(&g->_closed_promise))
        keel_promise_set_value(&g->_closed_promise, 0);
}

keel_future *keel_gate_close(keel_gate *g)
{
    assert(!g->_closed && "keel_gate_close called twice");
    g->_closed = true;
    if (g->_count == 0)
        return keel_make_ready(0);
    return keel_promise_init(&g->_closed_promise);
}

static void gate_leave_cb(void *ctx, keel_result r)
{
    (void)r;
    keel_gate_leave(ctx);
}

keel_future *keel_with_gate(keel_gate *g, keel_future *(*fn)(void *ctx), void *ctx)
{
    int err = keel_gate_enter(g);
    if (err)
        return keel_make_error(err);
    return keel_finally(fn(ctx), gate_leave_cb, g);
}

/* ---- semaphores -------------------------------------------------------------- */

struct keel_sem_waiter_s {
    keel_sem_waiter *next, *prev;
    keel_sem *sem;
    int64_t units;
    keel_promise promise;
    keel_abort_sub sub;
};
_Static_assert(sizeof(struct keel_sem_waiter_s) <= 128, "a waiter fits one slab-128 object");

void keel_sem_init(keel_sem *s, int64_t count)
{
    s->_count = count;
    s->_broken = 0;
    s->_head = s->_tail = NULL;
    s->_waiters = 0;
}

static void waiter_unlink(keel_sem *s, keel_sem_waiter *w)
{
    if (w->prev)
        w->prev->next = w->next;
    else
        s->_head = w->next;
    if (w->next)
        w->next->prev = w->prev;
    else
        s->_tail = w->prev;
    s->_waiters--;
}

static void waiter_finish(keel_sem *s, keel_sem_waiter *w, int err)
{
    waiter_unlink(s, w);
    keel_abort_unsubscribe(&w->sub);
    keel_promise p = w->promise;
    keel__free(w, sizeof(*w));
    keel_promise_resolve(&p, keel_err(err));
}

/* Grants units to waiters in FIFO order; the head blocks those behind it
 * even if they ask for less, so a large request is never starved. */
static void sem_wake(keel_sem *s)
{
    while (s->_head && s->_head->units <= s->_count) {
        s->_count -= s->_head->units;
        waiter_finish(s, s->_head, 0);
    }
}

static void waiter_abort(keel_abort_sub *sub, void *ctx)
{
    (void)sub;
    keel_sem_waiter *w = ctx;
    keel_sem *s = w->sem;
    waiter_finish(s, w, -ECANCELED);
    sem_wake(s); /* the aborted head may have blocked smaller requests */
}

bool keel_sem_try_wait(keel_sem *s, int64_t units)
{
    if (s->_broken || s->_head || s->_count < units)
        return false;
    s->_count -= units;
    return true;
}

keel_future *keel_sem_wait_abortable(keel_sem *s, int64_t units, keel_abort_source *as)
{
    if (s->_broken)
        return keel_make_error(s->_broken);
    if (as && keel_abort_requested(as))
        return keel_make_error(-ECANCELED);
    if (keel_sem_try_wait(s, units))
        return keel_make_ready(0);
    keel_sem_waiter *w = keel__alloc(sizeof(*w));
    w->sem = s;
    w->units = units;
    w->next = NULL;
    w->prev = s->_tail;
    if (s->_tail)
        s->_tail->next = w;
    else
        s->_head = w;
    s->_tail = w;
    s->_waiters++;
    w->sub._next = w->sub._prev = NULL;
    if (as)
        keel_abort_subscribe(as, &w->sub, waiter_abort, w);
    return keel_promise_init(&w->promise);
}

keel_future *keel_sem_wait(keel_sem *s, int64_t units)
{
    return keel_sem_wait_abortable(s, units, NULL);
}

void keel_sem_signal(keel_sem *s, int64_t units)
{
    s->_count += units;
    sem_wake(s);
}

void keel_sem_break(keel_sem *s, int err)
{
    assert(err < 0);
    s->_broken = err;
    while (s->_head)
        waiter_finish(s, s->_head, err);
}
