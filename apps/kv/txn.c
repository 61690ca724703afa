/* Cross-shard atomicity: shard gates, ordered shard locks, WATCH.
 *
 * How a command stays atomic when its keys live on several shards
 * (MSET, RENAME, SINTERSTORE, MULTI/EXEC...): ordered per-shard locks.
 *
 * - Every access to a shard's keyspace goes through that shard's gate: a
 *   work item runs at once when the gate is open, else it waits in the
 *   gate's FIFO. Single-shard commands are such work items, run on the
 *   owner shard (locally, or after a keel_submit_to hop).
 * - A coordinator (the client's shard) that needs several shards asks
 *   each for its lock, one after the other in ascending shard order, so
 *   two coordinators can never wait for each other (no deadlock). A lock
 *   request is a gate work item too: it is granted in FIFO order with the
 *   commands already queued, which keeps a client's earlier commands ahead
 *   of its transaction.
 * - Holding every lock, the coordinator runs the ordinary handlers itself:
 *   the kv_* calls find each key's db by hash, and no other thread touches
 *   a locked db. The grant and the release travel through keel's
 *   cross-shard rings, whose release/acquire ordering hands the memory
 *   over cleanly in both directions. This departs from DESIGN.md's
 *   "cores share nothing" for the duration of a lock, on purpose: it is
 *   what lets every command (and every MULTI/EXEC body) be written once,
 *   without per-shard halves, and costs one round trip per extra shard.
 * - Releasing a lock runs the gate's queue until the next lock is granted.
 *
 * No client can observe part of a locked command: a reader on any of its
 * shards either ran before the lock was granted or waits in the gate. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "dict.h"
#include "kv.h"
#include "persist.h"
#include "t_block.h"
#include "txn.h"

typedef struct work {
    struct work *next;
    void (*fn)(void *arg);
    void *arg;
    bool is_lock;
    keel_promise done; /* for queued items: resolved after fn ran */
} work;

typedef struct watcher {
    struct watcher *next, *prev;
    struct watch_key *wk;
    bool dirty;
} watcher;

typedef struct watch_key {
    watcher *head;
} watch_key;

typedef struct kv_shard_state {
    bool locked;
    work *head, *tail;
    kv_dict *watches; /* key -> watch_key (in u.p); NULL while none */
    size_t nwatchers;
} kv_shard_state;

static kv_shard_state *states;

int kv_txn_init(unsigned nshards)
{
    states = calloc(nshards, sizeof(*states));
    return states ? 0 : -ENOMEM;
}

void kv_txn_attach(kv_db *db)
{
    db->st = &states[db->id];
}

static kv_shard_state *local_state(void)
{
    return &states[keel_shard_id()];
}

/* ---- the gate -------------------------------------------------------------- */

static void enqueue(kv_shard_state *st, work *w)
{
    w->next = NULL;
    if (st->tail)
        st->tail->next = w;
    else
        st->head = w;
    st->tail = w;
}

/* The gate locks: from here until the unlock, the db is the
 * coordinator's to write. Keep its figures as they are now, so this
 * shard's metrics collector has something of its own to report
 * meanwhile (the state before the locked command, which is what any
 * reader on this shard would see). */
static void lock_granted(kv_shard_state *st)
{
    st->locked = true;
    kv_db *db = kv_db_of_shard(keel_shard_id());
    kv_db_figures_get(db, &db->at_lock);
}

/* Runs queued items until the gate locks again or empties. */
static void drain(kv_shard_state *st)
{
    while (!st->locked && st->head) {
        work *w = st->head;
        st->head = w->next;
        if (!st->head)
            st->tail = NULL;
        if (w->is_lock) {
            lock_granted(st);
        } else {
            w->fn(w->arg);
            kv_block_serve_here();
        }
        keel_promise_set_value(&w->done, 0); /* frees w (gate's keel_finally) */
    }
}

static void work_free(void *ctx, keel_result r)
{
    (void)r;
    free(ctx);
}

/* Runs fn(arg) on this shard once the gate lets it; the future resolves
 * after it ran. */
static keel_future *gate(void (*fn)(void *), void *arg, bool is_lock)
{
    kv_shard_state *st = local_state();
    if (!st->locked && !st->head) {
        if (is_lock) {
            lock_granted(st);
        } else {
            fn(arg);
            kv_block_serve_here();
        }
        return keel_make_ready(0);
    }
    work *w = malloc(sizeof(*w));
    if (!w)
        return keel_make_error(-ENOMEM);
    w->fn = fn;
    w->arg = arg;
    w->is_lock = is_lock;
    keel_future *f = keel_promise_init(&w->done);
    enqueue(st, w);
    /* drain() is done with w once it resolved the promise. */
    return keel_finally(f, work_free, w);
}

typedef struct remote_call {
    void (*fn)(void *);
    void *arg;
    bool is_lock;
} remote_call;

static keel_future *remote_gate(void *arg)
{
    remote_call *rc = arg;
    keel_future *f = gate(rc->fn, rc->arg, rc->is_lock);
    free(rc);
    return f;
}

keel_future *kv_run_on(unsigned shard, void (*fn)(void *), void *arg)
{
    if (shard == keel_shard_id())
        return gate(fn, arg, false);
    remote_call *rc = malloc(sizeof(*rc));
    if (!rc)
        return keel_make_error(-ENOMEM);
    *rc = (remote_call){fn, arg, false};
    return keel_submit_to(shard, remote_gate, rc);
}

bool kv_gate_open(void)
{
    kv_shard_state *st = local_state();
    return !st->locked && !st->head;
}

bool kv_gate_locked(void)
{
    return local_state()->locked;
}

/* ---- locks ------------------------------------------------------------------- */

static void no_op(void *arg)
{
    (void)arg;
}

static keel_future *lock_shard(unsigned shard)
{
    if (shard == keel_shard_id())
        return gate(no_op, NULL, true);
    remote_call *rc = malloc(sizeof(*rc));
    if (!rc)
        return keel_make_error(-ENOMEM);
    *rc = (remote_call){no_op, NULL, true};
    return keel_submit_to(shard, remote_gate, rc);
}

static void unlock_here(void)
{
    kv_shard_state *st = local_state();
    st->locked = false;
    kv_persist_pump();     /* the records the lock holder made, in order */
    kv_block_serve_here(); /* keys the lock holder made ready */
    drain(st);
}

static keel_future *remote_unlock(void *arg)
{
    (void)arg;
    unlock_here();
    return keel_make_ready(0);
}

static void unlock_shard(unsigned shard)
{
    if (shard == keel_shard_id())
        unlock_here();
    else
        keel_detach(keel_submit_to(shard, remote_unlock, NULL));
}

typedef struct locked_run {
    const unsigned *shards;
    unsigned n, next;
    void (*body)(void *);
    void *arg;
    keel_promise done;
    int err;
} locked_run;

static void next_lock(void *ctx, keel_result r);

static void run_locked_body(locked_run *lr)
{
    if (!lr->err)
        lr->body(lr->arg);
    for (unsigned i = 0; i < lr->next; i++)
        unlock_shard(lr->shards[i]);
    keel_promise_resolve(&lr->done, lr->err ? keel_err(lr->err) : keel_ok(0));
}

static void next_lock(void *ctx, keel_result r)
{
    locked_run *lr = ctx;
    if (r.err) {
        /* This lock was not granted: undo the ones that were. */
        lr->next--;
        lr->err = r.err;
        run_locked_body(lr);
        return;
    }
    if (lr->next == lr->n) {
        run_locked_body(lr);
        return;
    }
    keel_on_done(lock_shard(lr->shards[lr->next++]), next_lock, lr);
}

static void lr_free(void *ctx, keel_result r)
{
    (void)r;
    free(ctx);
}

keel_future *kv_run_locked(const unsigned *shards, unsigned n, void (*body)(void *), void *arg)
{
    locked_run *lr = calloc(1, sizeof(*lr));
    if (!lr)
        return keel_make_error(-ENOMEM);
    lr->shards = shards;
    lr->n = n;
    lr->body = body;
    lr->arg = arg;
    keel_future *f = keel_finally(keel_promise_init(&lr->done), lr_free, lr);
    next_lock(lr, keel_ok(0));
    return f;
}

/* ---- WATCH ---------------------------------------------------------------------- */

void kv_watch_touch(kv_db *db, const char *key, size_t klen)
{
    kv_shard_state *st = db->st;
    if (!st || !st->nwatchers)
        return;
    kv_dict_entry *e = kv_dict_find(st->watches, key, klen);
    if (!e)
        return;
    for (watcher *w = ((watch_key *)e->u.p)->head; w; w = w->next)
        w->dirty = true;
}

void kv_watch_touch_all(kv_db *db)
{
    kv_shard_state *st = db->st;
    if (!st || !st->nwatchers)
        return;
    for (size_t i = 0; i <= st->watches->mask; i++)
        for (kv_dict_entry *e = st->watches->b[i]; e; e = e->next)
            for (watcher *w = ((watch_key *)e->u.p)->head; w; w = w->next)
                w->dirty = true;
}

void kv_watch_add(kv_watch_req *r)
{
    kv_shard_state *st = local_state();
    r->w = NULL;
    if (!st->watches && !(st->watches = kv_dict_new()))
        return;
    kv_dict_entry *e = kv_dict_find(st->watches, r->key, r->klen);
    if (!e) {
        watch_key *wk = calloc(1, sizeof(*wk));
        if (!wk || !(e = kv_dict_add(st->watches, r->key, r->klen, NULL, 0))) {
            free(wk);
            return;
        }
        e->u.p = wk;
    }
    watcher *w = calloc(1, sizeof(*w));
    if (!w)
        return;
    w->wk = e->u.p;
    w->next = w->wk->head;
    if (w->next)
        w->next->prev = w;
    w->wk->head = w;
    st->nwatchers++;
    r->w = w;
}

void kv_watch_del(kv_watch_req *r)
{
    kv_shard_state *st = &states[r->shard];
    watcher *w = r->w;
    if (!w)
        return;
    if (w->prev)
        w->prev->next = w->next;
    else
        w->wk->head = w->next;
    if (w->next)
        w->next->prev = w->prev;
    if (!w->wk->head) {
        kv_dict_entry *e;
        if (kv_dict_delete(st->watches, r->key, r->klen, &e)) {
            free(e->u.p);
            kv_dict_entry_free(st->watches, e);
        }
    }
    free(w);
    r->w = NULL;
    if (--st->nwatchers == 0) {
        kv_dict_free(st->watches);
        st->watches = NULL;
    }
}

bool kv_watch_dirty(const kv_watch_req *r)
{
    return r->w ? r->w->dirty : true; /* could not register: fail safe */
}

void kv_txn_fini_shard(unsigned shard)
{
    kv_shard_state *st = &states[shard];
    if (st->watches) {
        for (size_t i = 0; i <= st->watches->mask; i++) {
            for (kv_dict_entry *e = st->watches->b[i]; e; e = e->next) {
                watch_key *wk = e->u.p;
                for (watcher *w = wk->head, *n; w; w = n) {
                    n = w->next;
                    free(w);
                }
                free(wk);
            }
        }
        kv_dict_free(st->watches);
        st->watches = NULL;
        st->nwatchers = 0;
    }
}

void kv_txn_fini(void)
{
    free(states);
    states = NULL;
}

