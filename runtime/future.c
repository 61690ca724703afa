/* Futures and continuations: the ready fast path, resolution, and the
 * collapse that keeps recursive chains in constant memory. */
#include <stdlib.h>

#include "internal.h"

static inline keel_future *fut_alloc(keel__shard *s)
{
    keel_future *f = keel__slab_alloc(&s->slabs[KEEL__SLAB_64]);
    f->state = KEEL__F_PENDING;
    f->kind = KEEL__C_NONE;
    f->flags = 0;
    f->next = NULL;
    f->qnext = NULL;
    f->group = s->cur_group;
    f->shard = (uint16_t)s->id;
    return f;
}

static inline void fut_free(keel__shard *s, keel_future *f)
{
    keel__slab_free(&s->slabs[KEEL__SLAB_64], f);
}

#define ASSERT_LOCAL(s, f) assert((f)->shard == (s)->id && "future used on a foreign shard")

keel_future *keel__future_new(void)
{
    return fut_alloc(keel__shard_self());
}

keel_future *keel_make_result(keel_result r)
{
    keel_future *f = fut_alloc(keel__shard_self());
    f->state = KEEL__F_READY;
    f->result = r;
    return f;
}

bool keel_future_is_ready(const keel_future *f)
{
    return f->state == KEEL__F_READY;
}

keel_result keel_future_take(keel_future *f)
{
    keel__shard *s = keel__shard_self();
    ASSERT_LOCAL(s, f);
    assert(f->state == KEEL__F_READY && f->kind == KEEL__C_NONE);
    keel_result r = f->result;
    fut_free(s, f);
    return r;
}

static bool can_inline(keel__shard *s)
{
    return s->inline_depth < KEEL__MAX_INLINE_DEPTH;
}

/* A continuation of another scheduling group is queued to its group, never
 * run inline: its CPU is then charged to its own group, and shares hold. */
static bool can_inline_cont(keel__shard *s, const keel_future *f)
{
    return s->inline_depth < KEEL__MAX_INLINE_DEPTH && f->group == s->cur_group;
}

/* Makes `target` (a continuation's output future) resolve as `h` does.
 * When target already has its consumer, that consumer moves onto h and
 * target is freed: a loop written as recursion (each step returns the next
 * step's future) then holds one future at a time instead of a growing
 * chain of forwarders. */
static void link_result(keel__shard *s, keel_future *h, keel_future *target)
{
    ASSERT_LOCAL(s, h);
    assert(h->kind == KEEL__C_NONE && "a continuation returned a future that is already consumed");
    if (h->state == KEEL__F_READY) {
        keel_result r = h->result;
        fut_free(s, h);
        keel__future_resolve(target, r);
    } else if (target->kind != KEEL__C_NONE) {
        h->kind = target->kind;
        h->fn = target->fn;
        h->ctx = target->ctx;
        h->next = target->next;
        h->group = target->group;
        fut_free(s, target);
    } else {
        h->kind = KEEL__C_FORWARD;
        h->next = target;
        h->group = target->group;
    }
}

void keel__future_link(keel__shard *s, keel_future *h, keel_future *target)
{
    link_result(s, h, target);
}

/* Runs f's continuation with f's result; f is freed. */
void keel__run_continuation(keel__shard *s, keel_future *f)
{
    keel_result r = f->result;
    uint8_t kind = f->kind;
    void *ctx = f->ctx;
    keel_future *next = f->next;
    keel_then_fn then = f->fn.then;
    keel_finally_fn fin = f->fn.fin;
    fut_free(s, f);

    s->inline_depth++;
    switch (kind) {
    case KEEL__C_THEN:
        if (r.err)
            keel__future_resolve(next, r);
        else
            link_result(s, then(ctx, r), next);
        break;
    case KEEL__C_CATCH:
        if (!r.err)
            keel__future_resolve(next, r);
        else
            link_result(s, then(ctx, r), next);
        break;
    case KEEL__C_WRAPPED: link_result(s, then(ctx, r), next); break;
    case KEEL__C_FINALLY:
        fin(ctx, r);
        keel__future_resolve(next, r);
        break;
    case KEEL__C_FORWARD: keel__future_resolve(next, r); break;
    case KEEL__C_ON_DONE: fin(ctx, r); break;
    case KEEL__C_DETACH:
        if (r.err)
            s->stats.futures_ignored_errors++;
        break;
    default: assert(!"future without continuation on the run queue");
    }
    s->inline_depth--;
}

void keel__future_resolve(keel_future *f, keel_result r)
{
    keel__shard *s = keel__shard_self();
    ASSERT_LOCAL(s, f);
    assert(f->state == KEEL__F_PENDING && "a future resolves once");
    f->result = r;
    f->state = KEEL__F_READY;
    if (f->kind == KEEL__C_NONE)
        return; /* the consumer attaches later and finds it ready */
    if (f->kind == KEEL__C_DETACH && !r.err) {
        fut_free(s, f);
        return;
    }
    if (can_inline_cont(s, f)) {
        s->stats.inline_runs++;
        keel__run_continuation(s, f);
    } else {
        keel__rq_push(s, f);
    }
}

/* Attaches a continuation. If f is ready and the depth allows, the
 * continuation runs now and its own future is returned (no new future is
 * allocated); otherwise a pending output future is returned. */
static keel_future *attach(keel_future *f, uint8_t kind, keel_then_fn then, keel_finally_fn fin,
                           void *ctx)
{
    keel__shard *s = keel__shard_self();
    ASSERT_LOCAL(s, f);
    assert(f->kind == KEEL__C_NONE && "a future has one consumer");
    if (f->state == KEEL__F_READY && can_inline(s)) {
        keel_result r = f->result;
        switch (kind) {
        case KEEL__C_THEN:
            if (r.err)
                return f;
            break;
        case KEEL__C_CATCH:
            if (!r.err)
                return f;
            break;
        case KEEL__C_FINALLY:
            s->stats.inline_runs++;
            s->inline_depth++;
            fin(ctx, r);
            s->inline_depth--;
            return f;
        default: break;
        }
        fut_free(s, f);
        s->stats.inline_runs++;
        s->inline_depth++;
        keel_future *h = then(ctx, r);
        s->inline_depth--;
        return h;
    }
    keel_future *next = fut_alloc(s);
    f->kind = kind;
    f->group = s->cur_group; /* the continuation runs in the attaching group */
    f->ctx = ctx;
    f->next = next;
    if (kind == KEEL__C_FINALLY)
        f->fn.fin = fin;
    else
        f->fn.then = then;
    if (f->state == KEEL__F_READY)
        keel__rq_push(s, f); /* too deep to run inline: run it as a task */
    return next;
}

keel_future *keel_then(keel_future *f, keel_then_fn fn, void *ctx)
{
    return attach(f, KEEL__C_THEN, fn, NULL, ctx);
}

keel_future *keel_catch(keel_future *f, keel_then_fn fn, void *ctx)
{
    return attach(f, KEEL__C_CATCH, fn, NULL, ctx);
}

keel_future *keel_then_wrapped(keel_future *f, keel_then_fn fn, void *ctx)
{
    return attach(f, KEEL__C_WRAPPED, fn, NULL, ctx);
}

keel_future *keel_finally(keel_future *f, keel_finally_fn fn, void *ctx)
{
    return attach(f, KEEL__C_FINALLY, NULL, fn, ctx);
}

void keel_on_done(keel_future *f, keel_finally_fn fn, void *ctx)
{
    keel__shard *s = keel__shard_self();
    ASSERT_LOCAL(s, f);
    assert(f->kind == KEEL__C_NONE && "a future has one consumer");
    f->kind = KEEL__C_ON_DONE;
    f->fn.fin = fn;
    f->ctx = ctx;
    f->group = s->cur_group;
    if (f->state == KEEL__F_READY) {
        if (can_inline(s)) {
            s->stats.inline_runs++;
            keel__run_continuation(s, f);
        } else {
            keel__rq_push(s, f);
        }
    }
}

void keel_detach(keel_future *f)
{
    keel__shard *s = keel__shard_self();
    ASSERT_LOCAL(s, f);
    assert(f->kind == KEEL__C_NONE && "a future has one consumer");
    if (f->state == KEEL__F_READY) {
        if (f->result.err)
            s->stats.futures_ignored_errors++;
        fut_free(s, f);
        return;
    }
    f->kind = KEEL__C_DETACH;
    f->group = s->cur_group;
}

keel_future *keel_promise_init(keel_promise *p)
{
    p->_f = fut_alloc(keel__shard_self());
    return p->_f;
}

void keel_promise_resolve(keel_promise *p, keel_result r)
{
    keel_future *f = p->_f;
    assert(f != NULL && "promise resolved twice");
    p->_f = NULL;
    keel__future_resolve(f, r);
}
