/* keel — futures, promises, continuations and the combinators built on them.
 *
 * A future is a value that will be ready later: an int64/pointer or an error
 * (a negative errno or keel error code). Exactly one party consumes a future:
 * it attaches one continuation (then/catch/finally/then_wrapped), hands it to
 * a combinator, or detaches it. After that the pointer must not be used again.
 *
 * Futures are shard-local: create, resolve and consume them on one shard.
 * They come from the shard's slab; a steady chain allocates nothing from
 * malloc.
 *
 * A continuation attached to a future that is already ready runs at once,
 * inside keel_then(), without a trip through the scheduler, while the inline
 * depth is small; deeper, or once the task quota is spent, it is queued as a
 * task. So a chain of ready futures costs tens of nanoseconds and never
 * grows the stack without bound. (This is the futures' rule; callback-style
 * I/O below them never completes inside the call that started it.)
 */
#ifndef KEEL_FUTURE_H
#define KEEL_FUTURE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <keel/error.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct keel_future_s keel_future;
typedef struct keel_abort_source_s keel_abort_source;
typedef struct keel_abort_sub_s keel_abort_sub;

/* What a future resolves to: err == 0 and a value, or err < 0. */
typedef struct keel_result {
    union {
        int64_t val;
        void *ptr;
    };
    int err;
} keel_result;

static inline keel_result keel_ok(int64_t v)
{
    keel_result r = {.val = v, .err = 0};
    return r;
}
static inline keel_result keel_ok_ptr(void *p)
{
    keel_result r = {.ptr = p, .err = 0};
    return r;
}
static inline keel_result keel_err(int err)
{
    keel_result r = {.val = 0, .err = err};
    return r;
}

#define KEEL_US(x) ((uint64_t)(x)*1000ull)
#define KEEL_MS(x) ((uint64_t)(x)*1000000ull)
#define KEEL_SEC(x) ((uint64_t)(x)*1000000000ull)

/* A continuation: receives the result of the future it was attached to and
 * returns the next future (keel_make_ready() for an immediate value). Must
 * not return NULL. */
typedef keel_future *(*keel_then_fn)(void *ctx, keel_result r);
/* A cleanup: sees the result, cannot change it. */
typedef void (*keel_finally_fn)(void *ctx, keel_result r);

/* ---- ready futures ------------------------------------------------------ */

/* A future that is already resolved. Never fails (the slab grows if needed;
 * on out-of-memory the process aborts, as for a stack overflow). */
keel_future *keel_make_result(keel_result r);
static inline keel_future *keel_make_ready(int64_t v)
{
    return keel_make_result(keel_ok(v));
}
static inline keel_future *keel_make_ready_ptr(void *p)
{
    return keel_make_result(keel_ok_ptr(p));
}
static inline keel_future *keel_make_error(int err)
{
    return keel_make_result(keel_err(err));
}

/* Whether f is resolved. Does not consume f. */
bool keel_future_is_ready(const keel_future *f);

/* Consumes a ready future and returns its result. f must be ready. */
keel_result keel_future_take(keel_future *f);

/* ---- continuations ------------------------------------------------------ */

/* Runs fn(ctx, result) when f succeeds; an error skips fn and passes through.
 * Returns the future of fn's returned future. Consumes f. */
keel_future *keel_then(keel_future *f, keel_then_fn fn, void *ctx);

/* Runs fn(ctx, result) when f fails (result.err < 0) to recover or replace
 * the error; a success passes through. Consumes f. */
keel_future *keel_catch(keel_future *f, keel_then_fn fn, void *ctx);

/* Runs fn(ctx, result) on success and on error alike; returns fn's future. */
keel_future *keel_then_wrapped(keel_future *f, keel_then_fn fn, void *ctx);

/* Runs fn(ctx, result) on success and on error; the result passes through
 * unchanged. Consumes f. */
keel_future *keel_finally(keel_future *f, keel_finally_fn fn, void *ctx);

/* Runs fn(ctx, result) when f resolves, and frees f: a finally whose result
 * nobody waits for. The cheapest way to consume a future. */
void keel_on_done(keel_future *f, keel_finally_fn fn, void *ctx);

/* Lets f run to completion with nobody waiting; an error it ends with is
 * counted in the shard's stats (futures_ignored_errors). Consumes f. */
void keel_detach(keel_future *f);

/* ---- promises: the producer side --------------------------------------- */

typedef struct keel_promise_s {
    keel_future *_f;
} keel_promise;

/* Creates the promise's future, which the caller hands to the consumer.
 * The promise must be resolved exactly once on the same shard. */
keel_future *keel_promise_init(keel_promise *p);
/* Resolves the promise's future; its continuation runs (maybe at once). */
void keel_promise_resolve(keel_promise *p, keel_result r);
static inline void keel_promise_set_value(keel_promise *p, int64_t v)
{
    keel_promise_resolve(p, keel_ok(v));
}
static inline void keel_promise_set_error(keel_promise *p, int err)
{
    keel_promise_resolve(p, keel_err(err));
}
/* Whether the promise has not been resolved yet. */
static inline bool keel_promise_pending(const keel_promise *p)
{
    return p->_f != NULL;
}

/* ---- combinators ------------------------------------------------------- */

/* Waits for all n futures (consumed). results[i] (caller-owned, may be NULL)
 * receives each result. Resolves to n, or to the error of the lowest-index
 * failed future, only once every future has resolved. */
keel_future *keel_when_all(keel_future *const *fs, size_t n, keel_result *results);

enum { KEEL_CONTINUE = 0, KEEL_STOP = 1 };
/* Calls fn(ctx) again and again; fn's future resolves to KEEL_CONTINUE or
 * KEEL_STOP. Resolves to 0 on STOP, or to the first error. Constant stack
 * and memory however many iterations are ready at once. */
keel_future *keel_repeat(keel_future *(*fn)(void *ctx), void *ctx);

/* Starts fn(ctx, i) for i in [0, n) at once and waits for all. Resolves to 0,
 * or to the first error (in index order) once all have finished. */
keel_future *keel_parallel_for_each(size_t n, keel_future *(*fn)(void *ctx, size_t i), void *ctx);

/* Resolves to 0 after duration_ns. Pending sleeps are cheap: they share the
 * shard's one armed kernel timeout. On shutdown they resolve -ECANCELED. */
keel_future *keel_sleep(uint64_t duration_ns);
/* As keel_sleep, resolving to -ECANCELED early when as is aborted. */
keel_future *keel_sleep_abortable(uint64_t duration_ns, keel_abort_source *as);

/* Resolves to f's result, or to -ETIMEDOUT if f is not ready within
 * timeout_ns. On timeout, as (if not NULL) is aborted so the operation
 * behind f is cancelled, and f's late result is discarded. */
keel_future *keel_with_timeout(keel_future *f, uint64_t timeout_ns, keel_abort_source *as);

/* Yields to the scheduler: resolves on a later pass of the run queue. */
keel_future *keel_yield(void);

/* ---- abort sources: cancel pending operations -------------------------- */

struct keel_abort_sub_s {
    keel_abort_sub *_next, *_prev;
    void (*_fn)(keel_abort_sub *sub, void *ctx);
    void *_ctx;
};

struct keel_abort_source_s {
    keel_abort_sub _head; /* circular list of subscribers */
    bool _aborted;
};

void keel_abort_source_init(keel_abort_source *as);
/* Aborts: every subscriber's callback runs once, now, in subscription order.
 * Idempotent. Operations started with an aborted source fail -ECANCELED. */
void keel_abort_source_request(keel_abort_source *as);
static inline bool keel_abort_requested(const keel_abort_source *as)
{
    return as->_aborted;
}
/* Registers sub (caller-owned memory) to run fn(sub, ctx) on abort. Returns
 * -ECANCELED, without registering, if as is already aborted. */
int keel_abort_subscribe(keel_abort_source *as, keel_abort_sub *sub,
                         void (*fn)(keel_abort_sub *sub, void *ctx), void *ctx);
/* Removes sub if registered; safe to call twice. */
void keel_abort_unsubscribe(keel_abort_sub *sub);

/* ---- gates: wait for in-flight work before closing an object ----------- */

typedef struct keel_gate_s {
    uint64_t _count;
    bool _closed;
    keel_promise _closed_promise;
} keel_gate;

void keel_gate_init(keel_gate *g);
/* Enters the gate. Returns 0, or -KEEL_EGATE_CLOSED once closing began. */
int keel_gate_enter(keel_gate *g);
/* Leaves the gate; the last leave after close resolves keel_gate_close. */
void keel_gate_leave(keel_gate *g);
/* Refuses new entries; resolves to 0 when every entry has left. Once. */
keel_future *keel_gate_close(keel_gate *g);
static inline uint64_t keel_gate_count(const keel_gate *g)
{
    return g->_count;
}
/* Enters g, runs fn(ctx) and leaves when its future resolves. Resolves to
 * fn's result, or -KEEL_EGATE_CLOSED without calling fn. */
keel_future *keel_with_gate(keel_gate *g, keel_future *(*fn)(void *ctx), void *ctx);

/* ---- semaphores: bound concurrency, apply backpressure ------------------ */

typedef struct keel_sem_waiter_s keel_sem_waiter;
typedef struct keel_sem_s {
    int64_t _count;
    int _broken; /* 0, or the error waiters get */
    keel_sem_waiter *_head, *_tail;
    size_t _waiters;
} keel_sem;

void keel_sem_init(keel_sem *s, int64_t count);
/* Takes units, waiting (FIFO) while not enough are available. Resolves to 0,
 * or to the error given to keel_sem_break. */
keel_future *keel_sem_wait(keel_sem *s, int64_t units);
/* As keel_sem_wait; resolves -ECANCELED and leaves the queue when as aborts. */
keel_future *keel_sem_wait_abortable(keel_sem *s, int64_t units, keel_abort_source *as);
/* Takes units if available now and nobody waits. */
bool keel_sem_try_wait(keel_sem *s, int64_t units);
/* Returns units and wakes waiters in FIFO order. */
void keel_sem_signal(keel_sem *s, int64_t units);
/* Fails every current and future waiter with err (< 0). */
void keel_sem_break(keel_sem *s, int err);
static inline int64_t keel_sem_available(const keel_sem *s)
{
    return s->_count;
}
static inline size_t keel_sem_waiters(const keel_sem *s)
{
    return s->_waiters;
}

#ifdef __cplusplus
}
#endif
#endif
