/* keel-kv's server: reads commands from a client, runs each where its keys
 * live, and writes replies back in request order.
 *
 * Where a command runs:
 * - no keys (PING, TIME...): here, at once;
 * - keys on one shard: on that shard, through its gate (txn.c) — here if
 *   it is this shard, else after a keel_submit_to hop;
 * - keys on several shards, MULTI/EXEC, and commands over every shard
 *   (KEYS, FLUSHALL): here, holding the locks of every shard involved
 *   (txn.c). Such a command is a barrier: the client's later commands
 *   wait for it, so they see its effects.
 *
 * Order: replies go to the client's output buffer while nothing is
 * outstanding; once a command waits, every later reply of that client
 * queues behind it in a slot, and slots drain into the output buffer in
 * order as they complete. A batch of commands read together is written
 * together, after its last slot is done. */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <sys/socket.h>

#include "kv.h"
#include "persist.h"
#include "server.h"
#include "t_block.h"
#include "txn.h"

typedef struct slot {
    struct slot *next;
    resp_buf out;
    size_t pending; /* work still out */
} slot;

typedef struct queued {
    struct queued *next;
    const kv_command *cmd;
    size_t argc;
    resp_arg *argv;
    char data[];
} queued;

typedef struct watched {
    struct watched *next;
    kv_watch_req *req;
} watched;

static kv_db *dbs; /* one per shard, each touched by its owner (see txn.c) */
static unsigned ndbs;
kv_server_config kv_cfg;
static atomic_uint_fast64_t next_client_id = 1;
static __thread kv_client *tl_clients; /* this shard's clients, for CLIENT LIST */
static __thread size_t tl_nclients;
static __thread keel_promise *tl_all_gone; /* at exit: resolved when no client is left */

kv_db *kv_db_of_shard(unsigned shard)
{
    return &dbs[shard];
}

static kv_db *local_db(void)
{
    return &dbs[keel_shard_id()];
}

static void unwatch_all(kv_client *c);
static void discard_multi(kv_client *c);

static void client_free(kv_client *c)
{
    discard_multi(c);
    unwatch_all(c);
    if (c->prev)
        c->prev->next = c->next;
    else
        tl_clients = c->next;
    if (c->next)
        c->next->prev = c->prev;
    atomic_fetch_sub(&kv_stats.connected_clients, 1);
    resp_parser_free(&c->parser);
    resp_buf_free(&c->out);
    free(c->q);
    free(c->name);
    free(c);
    if (--tl_nclients == 0 && tl_all_gone) {
        keel_promise *p = tl_all_gone;
        tl_all_gone = NULL;
        keel_promise_set_value(p, 0);
    }
}

/* Moves finished slots, in order, into the output buffer. */
static void drain_slots(kv_client *c)
{
    while (c->head && c->head->pending == 0) {
        slot *s = c->head;
        resp_add_raw(&c->out, s->out.data, s->out.len);
        c->head = s->next;
        if (!c->head)
            c->tail = NULL;
        resp_buf_free(&s->out);
        free(s);
    }
}

static slot *new_slot(kv_client *c)
{
    slot *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    resp_buf_init(&s->out);
    if (c->tail)
        c->tail->next = s;
    else
        c->head = s;
    c->tail = s;
    return s;
}

/* Where the next reply goes: the output buffer, or a slot if something
 * before it is still out. */
resp_buf *kv_reply_target(kv_client *c)
{
    if (!c->head)
        return &c->out;
    slot *s = new_slot(c);
    return s ? &s->out : &c->out; /* out of memory: order is the lesser loss */
}

/* Starts a piece of asynchronous work whose reply goes to s. */
static void work_started(kv_client *c, slot *s)
{
    s->pending++;
    c->outstanding++;
}

/* A piece of work of slot s finished: drain what is now in order, wake
 * the client's loop once nothing is out, free a client that ended. */
static void work_finished(kv_client *c, slot *s)
{
    s->pending--;
    c->outstanding--;
    drain_slots(c);
    if (c->outstanding == 0) {
        c->barrier = false;
        if (c->ended) {
            if (c->holds == 0)
                client_free(c);
        } else if (keel_promise_pending(&c->drained)) {
            keel_promise_set_value(&c->drained, 0); /* may end and free c */
        }
    }
}

static void ctx_init(kv_cmd_ctx *x, kv_client *c, resp_buf *out)
{
    *x = (kv_cmd_ctx){.out = out, .proto = c->proto, .now_ms = kv_now_ms(), .client = c};
}

static uint64_t usec_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

/* INFO commandstats and the metrics: calls and time per command, and the
 * latency histogram, per shard (the shard that ran it). */
static void count_command(const kv_command *cmd, uint64_t t0)
{
    kv_shard_stats *st = kv_stats_local();
    uint64_t us = usec_now() - t0;
    st->commands++;
    st->usec += us;
    st->latency[kv_latency_bucket(us)]++;
    if (st->per_cmd) {
        kv_cmd_stat *cs = &st->per_cmd[kv_command_id(cmd)];
        cs->calls++;
        cs->usec += us;
    }
}

/* maxmemory, per shard (each owns an equal part of the limit): before a
 * command that may grow the data, evict by policy until the shard that
 * runs it is under its part, or refuse it with Redis's OOM error. An
 * approximation, as Redis's own is. */
static bool memory_ok(const kv_command *cmd, kv_db *db)
{
    if (!kv_cfg.maxmemory || !(cmd->flags & KV_CMD_DENYOOM) || !db)
        return true;
    size_t limit = kv_cfg.maxmemory / keel_shard_count();
    while (db->mem > limit)
        if (!kv_db_evict(db, kv_cfg.maxmemory_policy))
            return false;
    return true;
}

/* Runs a command's handler here; the caller made its keys reachable. */
/* A blocking command found nothing: a waiter for it, registered on its
 * keys' shards (reachable here), or NULL with a reply written. */
static kv_waiter *would_block(const kv_cmd_ctx *x, const kv_command *cmd, kv_client *c,
                              unsigned client_shard, int64_t *deadline, size_t argc,
                              const resp_arg *argv)
{
    if (!x->would_block)
        return NULL;
    kv_waiter *w = kv_block_new(cmd, argc, argv, c, client_shard, x->proto);
    if (!w) {
        kv_reply_oom(x->out);
        return NULL;
    }
    kv_block_register(w);
    *deadline = x->block_deadline_ms;
    return w;
}

/* Runs a command's handler here; the caller made its keys reachable.
 * Returns the waiter if it blocked. */
/* Redis refuses writes (and PING) while it cannot persist them: -MISCONF.
 * Replies it and returns true then. */
static bool persist_refused(const kv_command *cmd, resp_buf *out)
{
    const char *why = kv_persist_write_error();
    if (!why || !((cmd->flags & KV_CMD_WRITE) || !strcmp(cmd->name, "ping")))
        return false;
    resp_add_error(out, why);
    return true;
}

/* Runs the handler between persistence's begin and end when it may write;
 * *need: what the reply must wait for (kv_persist_end). */
static void call_handler(kv_cmd_ctx *x, const kv_command *cmd, size_t argc, const resp_arg *argv,
                         bool single, kv_persist_need *need)
{
    need->any = false;
    if (!(cmd->flags & KV_CMD_WRITE) || !__atomic_load_n(&kv_persist_on, __ATOMIC_RELAXED)) {
        cmd->fn(x, argc, argv);
        return;
    }
    kv_persist_begin(cmd, argc, argv, single);
    cmd->fn(x, argc, argv);
    kv_persist_end(need);
}

static kv_waiter *run_handler(kv_client *c, const kv_command *cmd, resp_buf *out, unsigned flags,
                              kv_db *db, int64_t *deadline, size_t argc, const resp_arg *argv,
                              bool single, kv_persist_need *need)
{
    kv_cmd_ctx x;
    ctx_init(&x, c, out);
    x.flags = flags;
    need->any = false;
    if (persist_refused(cmd, out))
        return NULL;
    if (!memory_ok(cmd, db)) {
        kv_reply_oom(out);
        return NULL;
    }
    uint64_t t0 = usec_now();
    call_handler(&x, cmd, argc, argv, single, need);
    count_command(cmd, t0);
    return would_block(&x, cmd, c, keel_shard_id(), deadline, argc, argv);
}

/* ---- copies of commands (hops, MULTI queues) ------------------------------------ */

static queued *copy_command(const kv_command *cmd, size_t argc, const resp_arg *argv)
{
    size_t bytes = 0;
    for (size_t i = 0; i < argc; i++)
        bytes += argv[i].len;
    queued *q = malloc(sizeof(*q) + argc * sizeof(resp_arg) + bytes);
    if (!q)
        return NULL;
    q->next = NULL;
    q->cmd = cmd;
    q->argc = argc;
    q->argv = (resp_arg *)q->data;
    char *p = q->data + argc * sizeof(resp_arg);
    for (size_t i = 0; i < argc; i++) {
        memcpy(p, argv[i].ptr, argv[i].len);
        q->argv[i] = (resp_arg){p, argv[i].len};
        p += argv[i].len;
    }
    return q;
}

/* ---- one shard: a gated run, here or after a hop ------------------------------- */

typedef struct hop {
    kv_client *client;
    slot *slot;
    unsigned client_shard;
    kv_waiter *waiter; /* the command blocked (set on the owner) */
    int64_t deadline;
    int proto;
    resp_buf out; /* written on the owner, read and freed here */
    queued *q;
    uint64_t durable_at; /* the owner's AOF offset the reply waits for (0: none) */
} hop;

static void hop_run(void *arg)
{
    hop *h = arg;
    kv_cmd_ctx x = {.out = &h->out, .proto = h->proto, .now_ms = kv_now_ms(), .client = h->client};
    if (persist_refused(h->q->cmd, &h->out))
        return;
    if (!memory_ok(h->q->cmd, local_db())) {
        kv_reply_oom(&h->out);
        return;
    }
    uint64_t t0 = usec_now();
    kv_persist_need need;
    call_handler(&x, h->q->cmd, h->q->argc, h->q->argv, true, &need);
    if (need.any)
        h->durable_at = need.at[keel_shard_id()];
    count_command(h->q->cmd, t0);
    h->waiter = would_block(&x, h->q->cmd, h->client, h->client_shard, &h->deadline, h->q->argc,
                            h->q->argv);
}

/* The hop's result travels back once the owner's AOF has the command's
 * record (kv_persist_wait), so no extra round trip waits for it. */
static keel_future *hop_persisted(void *ctx, keel_result r)
{
    hop *h = ctx;
    (void)r;
    return h->durable_at ? kv_persist_wait(keel_shard_id(), h->durable_at) : keel_make_ready(0);
}

static keel_future *hop_remote(void *arg)
{
    hop *h = arg;
    return keel_then(kv_run_on(keel_shard_id(), hop_run, h), hop_persisted, h);
}

static void client_block(kv_client *c, slot *s, kv_waiter *w, int64_t deadline);
static void execute(kv_client *c, const kv_command *cmd, size_t argc, const resp_arg *argv);

/* With the AOF on, a write's reply waits until its record is written
 * (durable with appendfsync always: Redis's semantics), while the slot
 * holds the client's later replies behind it. */
typedef struct durable_wait {
    kv_client *c;
    slot *s;
} durable_wait;

static void durable_done(void *ctx, keel_result r)
{
    durable_wait *d = ctx;
    if (r.err) {
        /* Shutting down with the AOF failing: the write was applied but
         * is not durable, so it is not acknowledged. */
        resp_buf_clear(&d->s->out);
        resp_add_errorf(&d->s->out,
                        "ERR shutting down before the write reached the "
                        "append-only file: %s",
                        keel_strerror(r.err));
    }
    work_finished(d->c, d->s);
    free(d);
}

static void finish_when_durable(kv_client *c, slot *s, keel_future *f)
{
    durable_wait *d = malloc(sizeof(*d));
    if (!d) {
        keel_detach(f);
        work_finished(c, s);
        return;
    }
    *d = (durable_wait){c, s};
    keel_on_done(f, durable_done, d);
}

static void hop_done(void *ctx, keel_result r)
{
    hop *h = ctx;
    if (r.err)
        resp_add_errorf(&h->slot->out, "ERR %s", keel_strerror(r.err));
    else
        resp_add_raw(&h->slot->out, h->out.data, h->out.len);
    resp_buf_free(&h->out);
    free(h->q);
    kv_client *c = h->client;
    slot *s = h->slot;
    kv_waiter *w = r.err ? NULL : h->waiter;
    int64_t deadline = h->deadline;
    free(h);
    if (w)
        client_block(c, s, w, deadline); /* the slot stays open */
    else
        work_finished(c, s);
}

static void run_on_shard(kv_client *c, unsigned shard, const kv_command *cmd, size_t argc,
                         const resp_arg *argv)
{
    if (shard == keel_shard_id() && kv_gate_open()) {
        int64_t deadline;
        kv_persist_need need;
        if (kv_persist_replies_wait() && (cmd->flags & KV_CMD_WRITE)) {
            slot *s = new_slot(c);
            if (s) {
                work_started(c, s);
                kv_waiter *w =
                    run_handler(c, cmd, &s->out, 0, local_db(), &deadline, argc, argv, true, &need);
                kv_block_serve_here();
                if (w)
                    client_block(c, s, w, deadline);
                else if (need.any)
                    finish_when_durable(c, s, kv_persist_wait(shard, need.at[shard]));
                else
                    work_finished(c, s);
                return;
            }
        }
        kv_waiter *w = run_handler(c, cmd, kv_reply_target(c), 0, local_db(), &deadline, argc, argv,
                                   true, &need);
        kv_block_serve_here();
        if (w) {
            slot *s = new_slot(c);
            if (!s) {
                /* Cannot hold its place: give up on it as on a timeout. */
                if (kv_block_claim(w))
                    kv_block_release(w);
                resp_add_null_array(kv_reply_target(c), c->proto);
                return;
            }
            s->pending++;
            c->outstanding++;
            client_block(c, s, w, deadline);
        }
        return;
    }
    slot *s = new_slot(c);
    hop *h = calloc(1, sizeof(*h));
    queued *q = copy_command(cmd, argc, argv);
    if (!s || !h || !q) {
        free(h);
        free(q);
        resp_add_error(s ? &s->out : kv_reply_target(c), "ERR out of memory");
        return;
    }
    h->client = c;
    h->slot = s;
    h->client_shard = keel_shard_id();
    h->proto = c->proto;
    h->q = q;
    if (cmd->flags & KV_CMD_BLOCKING)
        c->barrier = true; /* later commands wait until it is served */
    resp_buf_init(&h->out);
    work_started(c, s);
    keel_on_done(keel_submit_to(shard, hop_remote, h), hop_done, h);
}

/* ---- several shards: under locks ---------------------------------------------------- */

typedef struct locked {
    kv_client *client;
    slot *slot;
    unsigned *shards;
    unsigned nshards;
    queued *cmds; /* one command, or EXEC's queue */
    bool exec;
    watched *watches; /* EXEC: checked and dropped under the locks */
    kv_waiter *waiter; /* the command blocked */
    int64_t deadline;
    kv_persist_need *need; /* what the reply waits for (the shards' AOFs) */
} locked;

static void shard_set_add(unsigned *set, unsigned *n, unsigned shard)
{
    unsigned i = 0;
    while (i < *n && set[i] < shard)
        i++;
    if (i < *n && set[i] == shard)
        return;
    memmove(set + i + 1, set + i, (*n - i) * sizeof(*set));
    set[i] = shard;
    (*n)++;
}

/* Adds the shards of cmd's keys to set; returns false for a command over
 * every shard (the caller then takes all). */
static bool command_shards(const kv_command *cmd, size_t argc, const resp_arg *argv,
                           unsigned *set, unsigned *n)
{
    if (cmd->flags & KV_CMD_ALL_SHARDS)
        return false;
    size_t idx[256];
    int nk = kv_command_keys(cmd, argc, argv, idx, 256);
    if (nk == 256)
        return false; /* more keys than we track: lock everything */
    for (int i = 0; i < nk; i++)
        shard_set_add(set, n, kv_shard_of_key(&argv[idx[i]]));
    return true;
}

static void all_shards(unsigned *set, unsigned *n)
{
    *n = keel_shard_count();
    for (unsigned i = 0; i < *n; i++)
        set[i] = i;
}

static void conn_command(kv_client *c, const kv_command *cmd, resp_buf *out, size_t argc,
                         const resp_arg *argv);

/* Keeps the latest AOF offset per shard a locked run's reply waits for. */
static void locked_durable(locked *l, const kv_persist_need *need)
{
    if (!need->any)
        return;
    if (!l->need && !(l->need = calloc(1, sizeof(*l->need))))
        return; /* out of memory: the reply does not wait */
    kv_persist_need_merge(l->need, need);
}

static void locked_body(void *arg)
{
    locked *l = arg;
    kv_client *c = l->client;
    resp_buf *out = &l->slot->out;
    kv_persist_need need;
    if (!l->exec) {
        /* maxmemory is checked against the first locked shard's part. */
        l->waiter = run_handler(c, l->cmds->cmd, out, 0, kv_db_of_shard(l->shards[0]), &l->deadline,
                                l->cmds->argc, l->cmds->argv, false, &need);
        locked_durable(l, &need);
        return;
    }
    bool dirty = false;
    kv_cmd_ctx x;
    ctx_init(&x, c, out);
    for (watched *w = l->watches; w; w = w->next) {
        /* A watched key that expired since is a change too (Redis 7.0). */
        kv_lookup(&x, &(resp_arg){w->req->key, w->req->klen});
        dirty |= kv_watch_dirty(w->req);
    }
    for (watched *w = l->watches, *n; w; w = n) {
        n = w->next;
        kv_watch_del(w->req);
        free(w->req);
        free(w);
    }
    l->watches = NULL;
    if (dirty) {
        resp_add_null_array(out, c->proto);
        return;
    }
    size_t n = 0;
    for (queued *q = l->cmds; q; q = q->next)
        n++;
    resp_add_array(out, n);
    int64_t unused; /* no command blocks inside EXEC */
    for (queued *q = l->cmds; q; q = q->next) {
        if (q->cmd->flags & KV_CMD_CONN) {
            conn_command(c, q->cmd, out, q->argc, q->argv);
        } else {
            run_handler(c, q->cmd, out, KV_CTX_MULTI,
                        l->nshards ? kv_db_of_shard(l->shards[0]) : NULL, &unused, q->argc, q->argv,
                        false, &need);
            locked_durable(l, &need);
        }
    }
}

static void locked_done(void *ctx, keel_result r)
{
    locked *l = ctx;
    if (r.err)
        resp_add_errorf(&l->slot->out, "ERR %s", keel_strerror(r.err));
    for (queued *q = l->cmds, *n; q; q = n) {
        n = q->next;
        free(q);
    }
    kv_client *c = l->client;
    slot *s = l->slot;
    kv_waiter *w = r.err ? NULL : l->waiter;
    int64_t deadline = l->deadline;
    keel_future *durable = l->need && l->need->any ? kv_persist_wait_all(l->need) : NULL;
    free(l->need);
    free(l->shards);
    free(l);
    if (w)
        client_block(c, s, w, deadline);
    else if (durable)
        finish_when_durable(c, s, durable);
    else
        work_finished(c, s);
}

/* Runs cmds (one command, or EXEC's queue, taken over) under the locks of
 * shards[0..n); later commands of the client wait for it. */
static void run_locked(kv_client *c, unsigned *shards, unsigned n, queued *cmds, bool exec,
                       watched *watches)
{
    slot *s = new_slot(c);
    locked *l = calloc(1, sizeof(*l));
    if (!s || !l) {
        free(l);
        free(shards);
        resp_add_error(s ? &s->out : kv_reply_target(c), "ERR out of memory");
        for (queued *q = cmds, *nx; q; q = nx) {
            nx = q->next;
            free(q);
        }
        return;
    }
    *l = (locked){c, s, shards, n, cmds, exec, watches};
    work_started(c, s);
    c->barrier = true;
    keel_on_done(kv_run_locked(shards, n, locked_body, l), locked_done, l);
}

static void execute(kv_client *c, const kv_command *cmd, size_t argc, const resp_arg *argv)
{
    size_t idx[256];
    int nk = (cmd->flags & KV_CMD_ALL_SHARDS) ? 0 : kv_command_keys(cmd, argc, argv, idx, 256);
    if (!(cmd->flags & KV_CMD_ALL_SHARDS) && nk <= 0) {
        int64_t deadline;
        kv_persist_need need;
        run_handler(c, cmd, kv_reply_target(c), 0, NULL, &deadline, argc, argv, true, &need);
        return;
    }
    if (nk > 0 && nk < 256) {
        unsigned owner = kv_shard_of_key(&argv[idx[0]]);
        bool one = true;
        for (int i = 1; i < nk && one; i++)
            one = kv_shard_of_key(&argv[idx[i]]) == owner;
        if (one) {
            run_on_shard(c, owner, cmd, argc, argv);
            return;
        }
    }
    unsigned *set = malloc(keel_shard_count() * sizeof(*set));
    queued *q = copy_command(cmd, argc, argv);
    if (!set || !q) {
        free(set);
        free(q);
        resp_add_error(kv_reply_target(c), "ERR out of memory");
        return;
    }
    unsigned n = 0;
    if (!command_shards(cmd, argc, argv, set, &n))
        all_shards(set, &n);
    run_locked(c, set, n, q, false, NULL);
}

/* ---- gathering from every shard -------------------------------------------------- */

typedef struct gather {
    kv_client *client;
    slot *slot;
    void *reqs;
    unsigned left;
    void (*finish)(kv_client *c, resp_buf *out, void *reqs);
} gather;

static void gather_part(void *ctx, keel_result r)
{
    gather *g = ctx;
    (void)r;
    if (--g->left)
        return;
    kv_client *c = g->client;
    slot *s = g->slot;
    g->finish(c, &s->out, g->reqs);
    free(g);
    work_finished(c, s);
}

void kv_gather(kv_client *c, keel_remote_fn fn, void *reqs, size_t size,
               void (*finish)(kv_client *c, resp_buf *out, void *reqs))
{
    slot *s = new_slot(c);
    gather *g = malloc(sizeof(*g));
    if (!s || !g) {
        free(g);
        resp_add_error(s ? &s->out : kv_reply_target(c), "ERR out of memory");
        free(reqs);
        return;
    }
    unsigned n = keel_shard_count();
    *g = (gather){c, s, reqs, n, finish};
    work_started(c, s);
    for (unsigned i = 0; i < n; i++)
        keel_on_done(keel_submit_to(i, fn, (char *)reqs + i * size), gather_part, g);
}

/* ---- blocked clients -------------------------------------------------------------- */

typedef struct delivery {
    kv_waiter *w;
    resp_buf out;
    bool retry;
} delivery;

/* Drops a hold on c (a block timer, the read watching a blocked
 * client): things that keep c alive without holding its replies back. */
static void hold_done(kv_client *c)
{
    if (--c->holds == 0 && c->ended && c->outstanding == 0)
        client_free(c);
}

static void unregister_run(void *arg)
{
    kv_block_unregister_here(arg);
}

static void unregister_done(void *ctx, keel_result r)
{
    (void)r;
    kv_block_release(ctx);
}

static void stop_timer(kv_client *c);

/* The client's wait is over (claimed by whoever calls): drop its queue
 * entries, answer (reply, the timeout's null, or run it again), let the
 * pipeline go on. */
static void unblock(kv_client *c, resp_buf *reply, bool retry)
{
    kv_waiter *w = c->blocked;
    slot *s = c->block_slot;
    c->blocked = NULL;
    c->block_slot = NULL;
    c->holds++; /* c stays through what follows */
    stop_timer(c);
    for (unsigned i = 0; i < keel_shard_count(); i++) {
        if (!kv_block_on_shard(w, i))
            continue;
        kv_block_retain(w);
        keel_on_done(kv_run_on(i, unregister_run, w), unregister_done, w);
    }
    size_t argc;
    const resp_arg *argv;
    const kv_command *cmd = kv_block_command(w, &argc, &argv);
    if (retry && !c->ended) {
        /* Served on a shard that could not finish it (a move to another
         * shard's key): run it again from here, right behind its slot. */
        c->barrier = false;
        execute(c, cmd, argc, argv);
    } else if (reply) {
        resp_add_raw(&s->out, reply->data, reply->len);
    } else {
        /* Timed out: BLMOVE and BRPOPLPUSH answer a null bulk, the others
         * a null array. */
        if (!strcmp(cmd->name, "blmove") || !strcmp(cmd->name, "brpoplpush"))
            resp_add_null(&s->out, c->proto);
        else
            resp_add_null_array(&s->out, c->proto);
    }
    kv_block_release(w);
    work_finished(c, s);
    hold_done(c);
}

/* A blocked client's timeout. Each block has its own, so an aborted timer
 * whose callback runs late cannot touch a later block. */
typedef struct block_timer {
    kv_client *client;
    kv_waiter *waiter;
    keel_abort_source as;
    bool in_abort; /* unblock() is inside keel_abort_source_request() */
    bool fired;
} block_timer;

/* Stops c's timer, if any; its callback drops its hold on c. */
static void stop_timer(kv_client *c)
{
    block_timer *bt = c->timer;
    if (!bt)
        return;
    c->timer = NULL;
    bt->in_abort = true;
    keel_abort_source_request(&bt->as); /* may run the callback inline */
    bt->in_abort = false;
    if (bt->fired)
        free(bt); /* else the callback, still to come, frees it */
}

static void block_timer_done(void *ctx, keel_result r)
{
    block_timer *bt = ctx;
    kv_client *c = bt->client;
    bt->fired = true;
    if (c->timer == bt) {
        c->timer = NULL;
        if (!r.err && c->blocked == bt->waiter && kv_block_claim(bt->waiter))
            unblock(c, NULL, false);
    }
    if (!bt->in_abort)
        free(bt);
    hold_done(c);
}

static void deliver_here(delivery *d);

/* While a client is blocked its loop waits for the reply, so this read
 * notices a client that goes away (Redis unblocks it then). What it reads
 * stays buffered for the loop, which takes this read's result over. */
static void conn_watch_done(void *ctx, keel_result r)
{
    kv_client *c = ctx;
    c->watching = false;
    if (c->watch_waited) {
        c->watch_waited = false;
        keel_promise_resolve(&c->watch_p, r);
    } else {
        c->watch_result = r;
        c->watch_has_result = true;
    }
    if ((r.err || r.val == 0) && c->blocked && kv_block_claim(c->blocked))
        unblock(c, NULL, false);
    hold_done(c); /* may free c */
}

static void client_block(kv_client *c, slot *s, kv_waiter *w, int64_t deadline)
{
    c->blocked = w;
    c->block_slot = s;
    c->barrier = true;
    if (!c->watching && !c->watch_has_result && !c->ended && c->conn) {
        c->watching = true;
        c->holds++;
        keel_on_done(keel_conn_read(c->conn), conn_watch_done, c);
    }
    block_timer *bt = deadline > 0 ? calloc(1, sizeof(*bt)) : NULL;
    if (bt) { /* (without memory for it, the client waits with no timeout) */
        int64_t ms = deadline - kv_now_ms();
        bt->client = c;
        bt->waiter = w;
        keel_abort_source_init(&bt->as);
        c->timer = bt;
        c->holds++;
        keel_on_done(keel_sleep_abortable(ms > 0 ? KEEL_MS(ms) : 0, &bt->as), block_timer_done,
                     bt);
    }
    if (c->early) {
        delivery *d = c->early;
        c->early = NULL;
        deliver_here(d);
    }
}

static void deliver_here(delivery *d)
{
    kv_client *c = kv_block_client(d->w);
    if (c->blocked != d->w) {
        /* The reply overtook the news that the client blocked. */
        c->early = d;
        return;
    }
    unblock(c, &d->out, d->retry);
    kv_block_release(d->w);
    resp_buf_free(&d->out);
    free(d);
}

static keel_future *deliver_task(void *arg)
{
    deliver_here(arg);
    return keel_make_ready(0);
}

void kv_block_deliver(kv_waiter *w, resp_buf *out, bool retry)
{
    delivery *d = malloc(sizeof(*d));
    if (!d)
        abort(); /* a claimed waiter must reach its client */
    d->w = w;
    d->out = *out;
    d->retry = retry;
    resp_buf_init(out);
    keel_detach(keel_submit_to(kv_block_client_shard(w), deliver_task, d));
}

/* ---- MULTI / EXEC / WATCH ------------------------------------------------------------ */

static void discard_multi(kv_client *c)
{
    for (queued *q = c->mq_head, *n; q; q = n) {
        n = q->next;
        free(q);
    }
    c->mq_head = c->mq_tail = NULL;
    c->in_multi = c->multi_dirty = false;
}

static void unwatch_done(void *ctx, keel_result r)
{
    (void)r;
    free(ctx);
}

static void unwatch_run(void *arg)
{
    kv_watch_del(arg);
}

static void unwatch_all(kv_client *c)
{
    for (watched *w = c->watches, *n; w; w = n) {
        n = w->next;
        keel_on_done(kv_run_on(w->req->shard, unwatch_run, w->req), unwatch_done, w->req);
        free(w);
    }
    c->watches = NULL;
}

typedef struct watch_op {
    kv_client *client;
    slot *slot;
    kv_watch_req *req;
} watch_op;

static void watch_run(void *arg)
{
    watch_op *op = arg;
    kv_watch_add(op->req);
}

static void watch_done(void *ctx, keel_result r)
{
    watch_op *op = ctx;
    kv_client *c = op->client;
    watched *w = malloc(sizeof(*w));
    if (r.err || !w) {
        /* Unregistered: EXEC will fail safe (kv_watch_dirty). */
        free(w);
        w = NULL;
    }
    if (w) {
        w->req = op->req;
        w->next = c->watches;
        c->watches = w;
    } else {
        free(op->req);
    }
    slot *s = op->slot;
    free(op);
    work_finished(c, s);
}

static void cmd_watch(kv_client *c, resp_buf *out, size_t argc, const resp_arg *argv)
{
    (void)out;
    slot *s = new_slot(c);
    if (!s) {
        resp_add_error(kv_reply_target(c), "ERR out of memory");
        return;
    }
    resp_add_status(&s->out, "OK");
    /* Registrations on this shard finish inline: hold the slot open until
     * all are started. */
    work_started(c, s);
    for (size_t i = 1; i < argc; i++) {
        bool seen = false;
        for (watched *w = c->watches; w && !seen; w = w->next)
            seen = w->req->klen == argv[i].len && !memcmp(w->req->key, argv[i].ptr, argv[i].len);
        if (seen)
            continue;
        watch_op *op = malloc(sizeof(*op));
        kv_watch_req *r = malloc(sizeof(*r) + argv[i].len);
        if (!op || !r) {
            free(op);
            free(r);
            continue;
        }
        r->shard = kv_shard_of_key(&argv[i]);
        r->w = NULL;
        r->klen = argv[i].len;
        memcpy(r->key, argv[i].ptr, argv[i].len);
        *op = (watch_op){c, s, r};
        work_started(c, s);
        keel_on_done(kv_run_on(r->shard, watch_run, op), watch_done, op);
    }
    work_finished(c, s);
}

static void cmd_exec(kv_client *c, resp_buf *out)
{
    if (!c->in_multi) {
        resp_add_error(out, "ERR EXEC without MULTI");
        return;
    }
    if (c->multi_dirty) {
        resp_add_error(out, "EXECABORT Transaction discarded because of previous errors.");
        discard_multi(c);
        unwatch_all(c);
        return;
    }
    unsigned *set = malloc(keel_shard_count() * sizeof(*set));
    if (!set) {
        resp_add_error(out, "ERR out of memory");
        return;
    }
    unsigned n = 0;
    bool all = false;
    for (queued *q = c->mq_head; q && !all; q = q->next)
        all = !command_shards(q->cmd, q->argc, q->argv, set, &n);
    for (watched *w = c->watches; w && !all; w = w->next)
        shard_set_add(set, &n, w->req->shard);
    if (all)
        all_shards(set, &n);
    queued *cmds = c->mq_head;
    watched *watches = c->watches;
    c->mq_head = c->mq_tail = NULL;
    c->watches = NULL;
    c->in_multi = c->multi_dirty = false;
    run_locked(c, set, n, cmds, true, watches);
}

/* ---- connection commands ---------------------------------------------------------- */

static void reply_hello(kv_client *c, resp_buf *out)
{
    resp_add_map(out, c->proto, 7);
    resp_add_bulk_cstr(out, "server");
    resp_add_bulk_cstr(out, "redis");
    resp_add_bulk_cstr(out, "version");
    resp_add_bulk_cstr(out, KV_REDIS_VERSION);
    resp_add_bulk_cstr(out, "proto");
    resp_add_int(out, c->proto);
    resp_add_bulk_cstr(out, "id");
    resp_add_int(out, (long long)c->id);
    resp_add_bulk_cstr(out, "mode");
    resp_add_bulk_cstr(out, "standalone");
    resp_add_bulk_cstr(out, "role");
    resp_add_bulk_cstr(out, "master");
    resp_add_bulk_cstr(out, "modules");
    resp_add_array(out, 0);
}

/* AUTH [user] pass: only the default user exists. Returns whether it
 * succeeded, having replied the error otherwise. */
static bool check_auth(kv_client *c, resp_buf *out, const resp_arg *user, const resp_arg *pass)
{
    const char *pw = kv_cfg.requirepass;
    bool ok;
    if (!pw || !*pw)
        ok = user != NULL && kv_arg_is(user, "DEFAULT") ? true : user != NULL;
    else
        ok = (!user || (user->len == 7 && !strncmp(user->ptr, "default", 7))) &&
             pass->len == strlen(pw) && !memcmp(pass->ptr, pw, pass->len);
    if (!pw || !*pw) {
        if (!user) {
            resp_add_error(out, "ERR AUTH <password> called without any password configured for "
                                "the default user. Are you sure your configuration is correct?");
            return false;
        }
        ok = user->len == 7 && !strncmp(user->ptr, "default", 7);
    }
    if (!ok) {
        resp_add_error(out, "WRONGPASS invalid username-password pair or user is disabled.");
        return false;
    }
    c->authed = true;
    c->parser.unauthenticated = false;
    return true;
}

static void cmd_hello(kv_client *c, resp_buf *out, size_t argc, const resp_arg *argv)
{
    int proto = c->proto;
    size_t i = 1;
    if (argc >= 2) {
        long long v;
        if (!resp_string2ll(argv[1].ptr, argv[1].len, &v)) {
            resp_add_error(out, "ERR Protocol version is not an integer or out of range");
            return;
        }
        if (v < 2 || v > 3) {
            resp_add_error(out, "NOPROTO unsupported protocol version");
            return;
        }
        proto = (int)v;
        i = 2;
    }
    const resp_arg *user = NULL, *pass = NULL, *name = NULL;
    for (; i < argc; i++) {
        size_t more = argc - i - 1;
        if (kv_arg_is(&argv[i], "AUTH") && more >= 2) {
            user = &argv[i + 1];
            pass = &argv[i + 2];
            i += 2;
        } else if (kv_arg_is(&argv[i], "SETNAME") && more >= 1) {
            name = &argv[i + 1];
            i++;
        } else {
            resp_add_errorf(out, "ERR Syntax error in HELLO option '%.*s'", (int)argv[i].len,
                            argv[i].ptr);
            return;
        }
    }
    if (!c->authed && !user) {
        resp_add_error(out, "NOAUTH HELLO must be called with the client already authenticated, "
                            "otherwise the HELLO <proto> AUTH <user> <pass> option can be used to "
                            "authenticate the client and select the RESP protocol version at the "
                            "same time");
        return;
    }
    if (user && !check_auth(c, out, user, pass))
        return;
    if (name && !kv_client_set_name(c, out, name))
        return;
    c->proto = proto;
    reply_hello(c, out);
}

static void cmd_auth(kv_client *c, resp_buf *out, size_t argc, const resp_arg *argv)
{
    if (argc > 3) {
        kv_reply_syntax(out);
        return;
    }
    if (check_auth(c, out, argc == 3 ? &argv[1] : NULL, &argv[argc - 1]))
        resp_add_status(out, "OK");
}

static void cmd_select(kv_client *c, resp_buf *out, const resp_arg *db)
{
    (void)c;
    long long v;
    if (!resp_string2ll(db->ptr, db->len, &v)) {
        kv_reply_not_int(out);
        return;
    }
    /* One database, as cluster-mode Redis. */
    if (v == 0)
        resp_add_status(out, "OK");
    else if (v < 0 || v >= 16)
        resp_add_error(out, "ERR DB index is out of range");
    else
        resp_add_error(out, "ERR SELECT is not allowed in cluster mode");
}

static void cmd_reset(kv_client *c, resp_buf *out)
{
    discard_multi(c);
    unwatch_all(c);
    c->proto = 2;
    free(c->name);
    c->name = NULL;
    if (kv_cfg.requirepass && *kv_cfg.requirepass) {
        c->authed = false;
        c->parser.unauthenticated = true;
    }
    resp_add_status(out, "RESET");
}

static void run_conn_command(kv_client *c, const kv_command *cmd, resp_buf *out, size_t argc,
                             const resp_arg *argv)
{
    const char *n = cmd->name;
    if (!strcmp(n, "quit")) {
        resp_add_status(out, "OK");
        c->quit = true;
    } else if (!strcmp(n, "command")) {
        kv_cmd_ctx x;
        ctx_init(&x, c, out);
        kv_command_reply(&x, argc, argv);
    } else if (!strcmp(n, "hello")) {
        cmd_hello(c, out, argc, argv);
    } else if (!strcmp(n, "auth")) {
        cmd_auth(c, out, argc, argv);
    } else if (!strcmp(n, "select")) {
        cmd_select(c, out, &argv[1]);
    } else if (!strcmp(n, "reset")) {
        cmd_reset(c, out);
    } else if (!strcmp(n, "client")) {
        kv_client_command(c, out, argc, argv);
    } else if (!strcmp(n, "multi")) {
        if (c->in_multi) {
            resp_add_error(out, "ERR MULTI calls can not be nested");
            return;
        }
        c->in_multi = true;
        resp_add_status(out, "OK");
    } else if (!strcmp(n, "discard")) {
        if (!c->in_multi) {
            resp_add_error(out, "ERR DISCARD without MULTI");
            return;
        }
        discard_multi(c);
        unwatch_all(c);
        resp_add_status(out, "OK");
    } else if (!strcmp(n, "exec")) {
        cmd_exec(c, out);
    } else if (!strcmp(n, "watch")) {
        if (c->in_multi)
            resp_add_error(out, "ERR WATCH inside MULTI is not allowed");
        else
            cmd_watch(c, out, argc, argv);
    } else if (!strcmp(n, "save") || !strcmp(n, "bgsave")) {
        kv_cmd_save(c, out, n[0] == 'b');
    } else if (!strcmp(n, "bgrewriteaof")) {
        kv_cmd_bgrewriteaof(c, out);
    } else if (!strcmp(n, "unwatch")) {
        unwatch_all(c);
        resp_add_status(out, "OK");
    } else {
        resp_add_errorf(out, "ERR '%s' cannot run here", cmd->name);
    }
}

/* Counts the command's own time; what EXEC or WATCH start on other shards
 * is counted there, command by command. */
static void conn_command(kv_client *c, const kv_command *cmd, resp_buf *out, size_t argc,
                         const resp_arg *argv)
{
    uint64_t t0 = usec_now();
    run_conn_command(c, cmd, out, argc, argv);
    count_command(cmd, t0);
}

/* ---- dispatch ------------------------------------------------------------------- */

static bool is_multi_control(const kv_command *cmd)
{
    const char *n = cmd->name;
    return !strcmp(n, "exec") || !strcmp(n, "discard") || !strcmp(n, "multi") ||
           !strcmp(n, "watch") || !strcmp(n, "quit") || !strcmp(n, "reset");
}

static void dispatch(kv_client *c, size_t argc, const resp_arg *argv)
{
    const kv_command *cmd = kv_command_lookup(argv[0].ptr, argv[0].len);
    if (!cmd) {
        c->multi_dirty |= c->in_multi;
        kv_reply_unknown(kv_reply_target(c), argc, argv);
        return;
    }
    if ((cmd->arity > 0 && argc != (size_t)cmd->arity) ||
        (cmd->arity < 0 && argc < (size_t)-cmd->arity)) {
        c->multi_dirty |= c->in_multi;
        kv_reply_arity(kv_reply_target(c), cmd);
        return;
    }
    if (!c->authed && !(cmd->flags & KV_CMD_NO_AUTH)) {
        c->multi_dirty |= c->in_multi;
        resp_add_error(kv_reply_target(c), "NOAUTH Authentication required.");
        return;
    }
    if (c->in_multi && !is_multi_control(cmd)) {
        queued *q = copy_command(cmd, argc, argv);
        if (!q) {
            c->multi_dirty = true;
            resp_add_error(kv_reply_target(c), "ERR out of memory");
            return;
        }
        if (c->mq_tail)
            c->mq_tail->next = q;
        else
            c->mq_head = q;
        c->mq_tail = q;
        resp_add_status(kv_reply_target(c), "QUEUED");
        return;
    }
    if (cmd->flags & KV_CMD_CONN)
        conn_command(c, cmd, kv_reply_target(c), argc, argv);
    else
        execute(c, cmd, argc, argv);
}

/* ---- the client loop -------------------------------------------------------------- */

static keel_future *written(void *ctx, keel_result r)
{
    kv_client *c = ctx;
    if (r.err)
        return keel_make_error(r.err);
    return keel_make_ready(c->quit ? KEEL_STOP : KEEL_CONTINUE);
}

static keel_future *write_out(void *ctx, keel_result r)
{
    kv_client *c = ctx;
    (void)r;
    if (kv_cfg.output_limit && keel_conn_queued(c->conn) + c->out.len > kv_cfg.output_limit) {
        /* Redis's client-output-buffer-limit: this client reads too
         * slowly for what it asks; close it rather than hold its replies. */
        kv_log("closing client id=%llu: output buffer over %llu bytes "
               "(client-output-buffer-limit)",
               (unsigned long long)c->id, (unsigned long long)kv_cfg.output_limit);
        resp_buf_clear(&c->out);
        return keel_make_error(-ENOBUFS);
    }
    keel_future *f = keel_conn_write(c->conn, c->out.data, c->out.len);
    resp_buf_clear(&c->out);
    return keel_then(f, written, c);
}

/* Parses and dispatches what is buffered, up to a barrier. */
static keel_future *process(kv_client *c)
{
    size_t off = 0;
    while (off < c->qlen && !c->quit && !c->barrier) {
        resp_cmd cmd;
        const char *err;
        ssize_t used = resp_parse(&c->parser, c->q + off, c->qlen - off, &cmd, &err);
        if (used == 0)
            break;
        if (used < 0) { /* protocol error: reply, then close this client only */
            resp_add_error(kv_reply_target(c), err);
            c->quit = true;
            break;
        }
        off += (size_t)used;
        if (cmd.argc)
            dispatch(c, cmd.argc, cmd.argv);
    }
    memmove(c->q, c->q + off, c->qlen - off);
    c->qlen -= off;
    c->parse_more = c->barrier && c->qlen > 0 && !c->quit;
    if (c->qlen > kv_cfg.query_limit && !c->parse_more) {
        kv_log("closing client id=%llu: query buffer over %llu bytes "
               "(client-query-buffer-limit)",
               (unsigned long long)c->id, (unsigned long long)kv_cfg.query_limit);
        return keel_make_error(-EMSGSIZE);
    }
    if (c->outstanding == 0)
        return write_out(c, keel_ok(0));
    return keel_then(keel_promise_init(&c->drained), write_out, c);
}

static keel_future *got_input(void *ctx, keel_result r)
{
    kv_client *c = ctx;
    if (r.err)
        return keel_make_error(r.err);
    if (r.val == 0)
        return keel_make_ready(KEEL_STOP);
    size_t n = keel_conn_buffered(c->conn);
    if (c->qlen + n > c->qcap) {
        size_t cap = c->qcap ? c->qcap : 4096;
        while (cap < c->qlen + n)
            cap *= 2;
        char *q = realloc(c->q, cap);
        if (!q)
            return keel_make_error(-ENOMEM);
        c->q = q;
        c->qcap = cap;
    }
    keel_conn_copy(c->conn, c->q + c->qlen, n);
    keel_conn_consume(c->conn, n);
    c->qlen += n;
    kv_stats_local()->net_input_bytes += n;
    return process(c);
}

static keel_future *client_step(void *ctx)
{
    kv_client *c = ctx;
    if (c->watch_has_result) { /* a read made while blocked */
        c->watch_has_result = false;
        return got_input(c, c->watch_result);
    }
    if (c->watching) {
        c->watch_waited = true;
        return keel_then(keel_promise_init(&c->watch_p), got_input, c);
    }
    if (c->parse_more)
        return process(c);
    if (c->qcap > 65536 && c->qlen == 0) {
        /* A big request passed: give its memory back. */
        free(c->q);
        c->q = NULL;
        c->qcap = 0;
    }
    return keel_then(keel_conn_read(c->conn), got_input, c);
}

static void client_end(void *ctx, keel_result r)
{
    kv_client *c = ctx;
    (void)r;
    if (c->killed)
        keel_conn_abort(c->conn);
    else
        keel_detach(keel_conn_close(c->conn));
    c->conn = NULL;
    c->ended = true;
    if (c->blocked && kv_block_claim(c->blocked))
        unblock(c, NULL, false); /* may free c */
    else if (c->outstanding == 0 && c->holds == 0)
        client_free(c);
}

static void on_conn(void *ctx, keel_conn *conn)
{
    (void)ctx;
    kv_client *c = calloc(1, sizeof(*c));
    if (!c) {
        keel_conn_abort(conn);
        return;
    }
    if (kv_cfg.maxclients &&
        atomic_load(&kv_stats.connected_clients) >= kv_cfg.maxclients) {
        static const char msg[] = "-ERR max number of clients reached\r\n";
        free(c);
        keel_detach(keel_conn_write(conn, msg, sizeof(msg) - 1));
        keel_detach(keel_conn_close(conn));
        return;
    }
    c->conn = conn;
    c->id = atomic_fetch_add(&next_client_id, 1);
    c->proto = 2;
    c->created_ms = kv_now_ms();
    c->authed = !kv_cfg.requirepass || !*kv_cfg.requirepass;
    resp_parser_init(&c->parser);
    c->parser.unauthenticated = !c->authed;
    c->parser.max_bulk_len = (long long)kv_cfg.proto_max_bulk_len;
    resp_buf_init(&c->out);
    c->next = tl_clients;
    if (c->next)
        c->next->prev = c;
    tl_clients = c;
    tl_nclients++;
    atomic_fetch_add(&kv_stats.connected_clients, 1);
    atomic_fetch_add(&kv_stats.total_connections, 1);
    keel_conn_set_nodelay(conn, true);
    if (kv_cfg.output_limit)
        keel_conn_set_limits(conn, kv_cfg.output_limit, 0);
    keel_on_done(keel_repeat(client_step, c), client_end, c);
}

kv_client *kv_clients_here(void)
{
    return tl_clients;
}

size_t kv_clients_count_here(void)
{
    return tl_nclients;
}

/* ---- start and stop ---------------------------------------------------------------- */

static void drained_free(void *ctx, keel_result r)
{
    (void)r;
    free(ctx);
}

/* At exit: end every client of this shard (its read fails, its loop
 * closes it once its outstanding work is back) and wait for them all.
 * The keyspaces are freed after keel_run returns, when no shard can
 * still be serving a hop (kv_server_free). */
static keel_future *end_clients_at_exit(void *arg)
{
    (void)arg;
    for (kv_client *c = tl_clients; c; c = c->next)
        if (c->conn && !c->ended)
            shutdown(keel_conn_fd(c->conn), SHUT_RDWR);
    if (tl_nclients == 0)
        return keel_make_ready(0);
    keel_promise *p = malloc(sizeof(*p));
    if (!p)
        return keel_make_ready(0);
    tl_all_gone = p;
    return keel_finally(keel_promise_init(p), drained_free, p);
}

static keel_future *shard_setup(void *arg)
{
    (void)arg;
    if (kv_db_init(local_db(), keel_shard_id()))
        return keel_make_error(-ENOMEM);
    kv_txn_attach(local_db());
    /* Registered first so it runs last: the AOF closes after the clients. */
    keel_future *loaded = kv_persist_shard_start();
    keel_at_exit(end_clients_at_exit, NULL);
    /* Runs before the clients are waited for: a reply held for a failing
     * AOF would hold the exit forever. */
    keel_at_exit(kv_persist_exit_early, NULL);
    kv_cron_start();
    return loaded;
}

typedef struct start_ctx {
    keel_listen_config listen;
    keel_listener **out;
} start_ctx;

static keel_future *listen_now(void *ctx, keel_result r)
{
    start_ctx *s = ctx;
    if (r.err) {
        free(s);
        return keel_make_error(r.err);
    }
    keel_future *f = keel_listen(&s->listen, on_conn, NULL, s->out);
    free(s);
    return f;
}

keel_future *kv_server_start(const kv_config *cfg, keel_listener **out)
{
    start_ctx *s = malloc(sizeof(*s));
    if (!s)
        return keel_make_error(-ENOMEM);
    s->listen = cfg->listen;
    s->out = out;
    kv_commands_init();
    ndbs = keel_shard_count();
    dbs = calloc(ndbs, sizeof(*dbs));
    if (!dbs || kv_txn_init(ndbs) || kv_stats_init(ndbs) || kv_block_init(ndbs) ||
        kv_persist_init(ndbs)) {
        free(s);
        return keel_make_error(-ENOMEM);
    }
    /* The store works without its metrics: a failure is only logged. */
    int err = kv_metrics_start();
    if (err)
        kv_log("keel_metrics_register failed: %s; keel-kv's own metrics are off",
               keel_strerror(err));
    /* Wrapped: listen_now frees s on failure too. */
    return keel_then_wrapped(keel_invoke_on_all(shard_setup, NULL), listen_now, s);
}

void kv_server_free(void)
{
    kv_persist_on = false; /* freeing the dbs is no write to log */
    for (unsigned i = 0; dbs && i < ndbs; i++) {
        kv_db_free(&dbs[i]);
        kv_txn_fini_shard(i);
    }
    free(dbs);
    dbs = NULL;
    kv_txn_fini();
    kv_block_fini(ndbs);
    kv_stats_free();
    kv_persist_free();
}
