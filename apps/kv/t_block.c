/* Blocking commands: BLPOP BRPOP BRPOPLPUSH BLMOVE BLMPOP BZPOPMIN BZPOPMAX
 * BZMPOP.
 *
 * A blocking command first runs like any other, where its keys are (on
 * the owner shard, or under the locks of several). When no key has data
 * it registers a waiter, in that same run, on every key's shard: a FIFO
 * per key, so clients are served in the order they blocked, as in Redis.
 * Nothing holds a shard while clients wait.
 *
 * A write that gives a list or sorted set elements (kv_key_ready) marks
 * the key ready on its shard; after the command (or the lock holding the
 * shard) finishes, the shard serves the key's waiters in order while it
 * has data: it claims a waiter (one atomic compare-and-swap: a waiter
 * blocked on keys of several shards, or timing out on its client's shard,
 * is served exactly once), pops for it right there, and sends the reply
 * to the client's shard. The claim and the waiter's reference count are
 * the only memory the shards share outside the message rings.
 *
 * BLMOVE/BRPOPLPUSH whose destination lives on another shard cannot move
 * atomically from the source's shard: the claimed waiter is sent back to
 * its client, which runs the command again through the cross-shard path
 * (and blocks again, at the back of the queue, if another client took the
 * element meanwhile). */
#include <errno.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "dict.h"
#include "kv.h"
#include "persist.h"
#include "t_block.h"
#include "t_list.h"
#include "t_zset.h"

enum kind { B_LPOP, B_RPOP, B_LMPOP, B_LMOVE, B_ZPOPMIN, B_ZPOPMAX, B_ZMPOP };

struct kv_waiter {
    atomic_int state; /* 0 waiting, 1 claimed */
    atomic_int refs;  /* one per registration, one for the client */
    void *client;
    unsigned client_shard;
    int proto;
    const kv_command *cmd;
    size_t argc;
    resp_arg *argv;
    size_t nkeys;
    size_t *key_idx;
    char data[];
};

typedef struct wnode {
    struct wnode *next, *prev;
    kv_waiter *w;
} wnode;

typedef struct wkey {
    wnode *head, *tail;
    bool ready;
} wkey;

typedef struct ready_key {
    size_t len;
    char key[];
} ready_key;

typedef struct block_state {
    kv_dict *keys; /* key -> wkey (u.p) */
    ready_key **ready;
    size_t nready, readycap;
    size_t nwaiting;
} block_state;

static block_state *states;
static atomic_uint_fast64_t blocked_count;

int kv_block_init(unsigned nshards)
{
    states = calloc(nshards, sizeof(*states));
    return states ? 0 : -ENOMEM;
}

static void unref(kv_waiter *w)
{
    if (atomic_fetch_sub(&w->refs, 1) == 1)
        free(w);
}

void kv_block_fini(unsigned nshards)
{
    for (unsigned s = 0; states && s < nshards; s++) {
        block_state *st = &states[s];
        if (st->keys) {
            for (size_t i = 0; i <= st->keys->mask; i++) {
                for (kv_dict_entry *e = st->keys->b[i]; e; e = e->next) {
                    wkey *wk = e->u.p;
                    for (wnode *n = wk->head, *nx; n; n = nx) {
                        nx = n->next;
                        unref(n->w);
                        free(n);
                    }
                    free(wk);
                }
            }
            kv_dict_free(st->keys);
        }
        for (size_t i = 0; i < st->nready; i++)
            free(st->ready[i]);
        free(st->ready);
    }
    free(states);
    states = NULL;
}

uint64_t kv_block_count(void)
{
    return atomic_load(&blocked_count);
}

/* ---- the handlers' part: try, else ask to block ----------------------------------- */

/* Redis's getTimeoutFromObjectOrReply() for seconds: a float, >= 0; 0 is
 * forever. Sets *deadline (absolute ms, 0 for none). */
static bool parse_timeout(kv_cmd_ctx *c, const resp_arg *a, int64_t *deadline)
{
    long double t;
    if (!kv_string2ld(a->ptr, a->len, &t)) {
        resp_add_error(c->out, "ERR timeout is not a float or out of range");
        return false;
    }
    long double ms = t * 1000.0L;
    if (ms < 0) {
        resp_add_error(c->out, "ERR timeout is negative");
        return false;
    }
    if (ms >= (long double)LLONG_MAX) {
        resp_add_error(c->out, "ERR timeout is out of range");
        return false;
    }
    long long tv = (long long)ms;
    if (tv > 0 && tv > LLONG_MAX - c->now_ms) {
        resp_add_error(c->out, "ERR timeout is out of range");
        return false;
    }
    *deadline = tv > 0 ? c->now_ms + tv : 0;
    return true;
}

/* Nothing to pop: inside MULTI answer the timeout's null at once, else
 * let the server block the client. */
static void nothing(kv_cmd_ctx *c, int64_t deadline)
{
    if (c->flags & KV_CTX_MULTI) {
        resp_add_null_array(c->out, c->proto);
        return;
    }
    c->would_block = true;
    c->block_deadline_ms = deadline;
}

/* One key for a zset pop: 1 popped, 0 absent, -1 error replied. */
static int zpop_key(kv_cmd_ctx *c, const resp_arg *key, bool max, long count, bool nested)
{
    bool wrong;
    kv_entry *e = kv_lookup_type(c, key, KV_ZSET, &wrong);
    if (wrong)
        return -1;
    if (!e)
        return 0;
    kv_zset_pop_reply(c, key, e, max, count, true, nested);
    return 1;
}

/* BLPOP/BRPOP/BZPOPMIN/BZPOPMAX key... timeout */
static void pop_keys(kv_cmd_ctx *c, size_t argc, const resp_arg *argv, enum kind k)
{
    int64_t deadline;
    if (!parse_timeout(c, &argv[argc - 1], &deadline))
        return;
    for (size_t i = 1; i < argc - 1; i++) {
        int r = k == B_LPOP || k == B_RPOP
                    ? kv_list_pop_reply(c, &argv[i], k == B_LPOP, -1, true)
                    : zpop_key(c, &argv[i], k == B_ZPOPMAX, 1, false);
        if (r != 0)
            return;
    }
    nothing(c, deadline);
}

static void cmd_blpop(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    pop_keys(c, argc, argv, B_LPOP);
}

static void cmd_brpop(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    pop_keys(c, argc, argv, B_RPOP);
}

static void cmd_bzpopmin(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    pop_keys(c, argc, argv, B_ZPOPMIN);
}

static void cmd_bzpopmax(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    pop_keys(c, argc, argv, B_ZPOPMAX);
}

/* BLMOVE src dst LEFT|RIGHT LEFT|RIGHT timeout, BRPOPLPUSH src dst timeout */
static bool move_args(kv_cmd_ctx *c, size_t argc, const resp_arg *argv, bool *from_left,
                      bool *to_left)
{
    if (argc == 4) {
        *from_left = false;
        *to_left = true;
        return true;
    }
    return kv_list_where_arg(c, &argv[3], from_left) && kv_list_where_arg(c, &argv[4], to_left);
}

static void cmd_blmove(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    bool from_left, to_left;
    int64_t deadline;
    if (!move_args(c, argc, argv, &from_left, &to_left) ||
        !parse_timeout(c, &argv[argc - 1], &deadline))
        return;
    if (kv_list_move_reply(c, &argv[1], &argv[2], from_left, to_left) != 0)
        return;
    if (c->flags & KV_CTX_MULTI) {
        resp_add_null(c->out, c->proto); /* BLMOVE's timeout reply is a null bulk */
        return;
    }
    c->would_block = true;
    c->block_deadline_ms = deadline;
}

/* ZMPOP-style "MIN|MAX [COUNT n]" after the keys. */
static bool zmpop_args(kv_cmd_ctx *c, size_t argc, const resp_arg *argv, size_t at, bool *max,
                       long long *count)
{
    if (at >= argc) {
        kv_reply_syntax(c->out);
        return false;
    }
    if (kv_arg_is(&argv[at], "MIN"))
        *max = false;
    else if (kv_arg_is(&argv[at], "MAX"))
        *max = true;
    else {
        kv_reply_syntax(c->out);
        return false;
    }
    *count = 1;
    if (at + 1 == argc)
        return true;
    if (at + 3 != argc || !kv_arg_is(&argv[at + 1], "COUNT")) {
        kv_reply_syntax(c->out);
        return false;
    }
    if (!resp_string2ll(argv[at + 2].ptr, argv[at + 2].len, count) || *count <= 0) {
        resp_add_error(c->out, "ERR count should be greater than 0");
        return false;
    }
    return true;
}

static bool numkeys_arg(kv_cmd_ctx *c, size_t argc, const resp_arg *argv, size_t *n)
{
    long long v;
    if (!resp_string2ll(argv[2].ptr, argv[2].len, &v)) {
        kv_reply_not_int(c->out);
        return false;
    }
    if (v <= 0) {
        resp_add_error(c->out, "ERR numkeys should be greater than 0");
        return false;
    }
    if ((unsigned long long)v > argc - 3) {
        kv_reply_syntax(c->out);
        return false;
    }
    *n = (size_t)v;
    return true;
}

/* BLMPOP timeout numkeys key... LEFT|RIGHT [COUNT n] */
static void cmd_blmpop(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    int64_t deadline;
    if (!parse_timeout(c, &argv[1], &deadline))
        return;
    size_t n;
    bool left;
    long long count;
    if (!kv_list_mpop_args(c, argc, argv, 2, &n, &left, &count))
        return;
    for (size_t i = 0; i < n; i++)
        if (kv_list_pop_reply(c, &argv[3 + i], left, count, true) != 0)
            return;
    nothing(c, deadline);
}

/* BZMPOP timeout numkeys key... MIN|MAX [COUNT n] */
static void cmd_bzmpop(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    int64_t deadline;
    if (!parse_timeout(c, &argv[1], &deadline))
        return;
    size_t n;
    bool max;
    long long count;
    if (!numkeys_arg(c, argc, argv, &n) || !zmpop_args(c, argc, argv, 3 + n, &max, &count))
        return;
    for (size_t i = 0; i < n; i++)
        if (zpop_key(c, &argv[3 + i], max, (long)count, true) != 0)
            return;
    nothing(c, deadline);
}

static int keys_numkeys_at2(size_t argc, const resp_arg *argv, size_t *idx, size_t max)
{
    return kv_list_mpop_keys(argc, argv, 2, idx, max);
}

#define BW (KV_CMD_WRITE | KV_CMD_NOSCRIPT | KV_CMD_BLOCKING)
const kv_command kv_block_commands[] = {
    {"blpop", -3, BW, 1, -2, 1, cmd_blpop, NULL, "@write @list @slow @blocking"},
    {"brpop", -3, BW, 1, -2, 1, cmd_brpop, NULL, "@write @list @slow @blocking"},
    {"brpoplpush", 4, BW | KV_CMD_DENYOOM, 1, 2, 1, cmd_blmove, NULL,
     "@write @list @slow @blocking"},
    {"blmove", 6, BW | KV_CMD_DENYOOM, 1, 2, 1, cmd_blmove, NULL, "@write @list @slow @blocking"},
    {"blmpop", -5, BW, 0, 0, 0, cmd_blmpop, keys_numkeys_at2, "@write @list @slow @blocking"},
    {"bzpopmin", -3, BW | KV_CMD_FAST, 1, -2, 1, cmd_bzpopmin, NULL,
     "@write @sortedset @fast @blocking"},
    {"bzpopmax", -3, BW | KV_CMD_FAST, 1, -2, 1, cmd_bzpopmax, NULL,
     "@write @sortedset @fast @blocking"},
    {"bzmpop", -5, BW, 0, 0, 0, cmd_bzmpop, keys_numkeys_at2, "@write @sortedset @slow @blocking"},
    {NULL},
};

/* ---- registering ------------------------------------------------------------------ */

kv_waiter *kv_block_new(const kv_command *cmd, size_t argc, const resp_arg *argv, void *client,
                        unsigned client_shard, int proto)
{
    size_t idx[256];
    int nk = kv_command_keys(cmd, argc, argv, idx, 256);
    if (nk <= 0)
        return NULL;
    size_t bytes = 0;
    for (size_t i = 0; i < argc; i++)
        bytes += argv[i].len;
    kv_waiter *w = malloc(sizeof(*w) + argc * sizeof(resp_arg) + (size_t)nk * sizeof(size_t) +
                          bytes);
    if (!w)
        return NULL;
    atomic_init(&w->state, 0);
    atomic_init(&w->refs, 1);
    w->client = client;
    w->client_shard = client_shard;
    w->proto = proto;
    w->cmd = cmd;
    w->argc = argc;
    w->argv = (resp_arg *)w->data;
    w->key_idx = (size_t *)(w->argv + argc);
    w->nkeys = (size_t)nk;
    memcpy(w->key_idx, idx, (size_t)nk * sizeof(size_t));
    char *p = (char *)(w->key_idx + nk);
    for (size_t i = 0; i < argc; i++) {
        memcpy(p, argv[i].ptr, argv[i].len);
        w->argv[i] = (resp_arg){p, argv[i].len};
        p += argv[i].len;
    }
    atomic_fetch_add(&blocked_count, 1);
    return w;
}

/* Adds w at the back of key's queue on the key's shard (the caller runs
 * there or holds its lock). */
static void enqueue(kv_waiter *w, const resp_arg *key)
{
    block_state *st = &states[kv_shard_of_key(key)];
    if (!st->keys && !(st->keys = kv_dict_new()))
        return;
    kv_dict_entry *e = kv_dict_find(st->keys, key->ptr, key->len);
    if (!e) {
        wkey *wk = calloc(1, sizeof(*wk));
        if (!wk || !(e = kv_dict_add(st->keys, key->ptr, key->len, NULL, 0))) {
            free(wk);
            return;
        }
        e->u.p = wk;
    }
    wkey *wk = e->u.p;
    for (wnode *n = wk->head; n; n = n->next)
        if (n->w == w)
            return; /* the same key twice in one command */
    wnode *n = calloc(1, sizeof(*n));
    if (!n)
        return;
    n->w = w;
    n->prev = wk->tail;
    if (wk->tail)
        wk->tail->next = n;
    else
        wk->head = n;
    wk->tail = n;
    atomic_fetch_add(&w->refs, 1);
    st->nwaiting++;
}

void kv_block_register(kv_waiter *w)
{
    for (size_t i = 0; i < w->nkeys; i++)
        enqueue(w, &w->argv[w->key_idx[i]]);
}

static void unlink_node(block_state *st, kv_dict_entry *e, wnode *n)
{
    wkey *wk = e->u.p;
    if (n->prev)
        n->prev->next = n->next;
    else
        wk->head = n->next;
    if (n->next)
        n->next->prev = n->prev;
    else
        wk->tail = n->prev;
    st->nwaiting--;
    unref(n->w);
    free(n);
    if (!wk->head && !wk->ready) {
        kv_dict_entry *gone;
        if (kv_dict_delete(st->keys, e->data, e->klen, &gone)) {
            free(wk);
            kv_dict_entry_free(st->keys, gone);
        }
    }
}

void kv_block_unregister_here(kv_waiter *w)
{
    block_state *st = &states[keel_shard_id()];
    for (size_t i = 0; i < w->nkeys && st->keys; i++) {
        const resp_arg *key = &w->argv[w->key_idx[i]];
        if (kv_shard_of_key(key) != keel_shard_id())
            continue;
        kv_dict_entry *e = kv_dict_find(st->keys, key->ptr, key->len);
        if (!e)
            continue;
        for (wnode *n = ((wkey *)e->u.p)->head; n; n = n->next) {
            if (n->w == w) {
                unlink_node(st, e, n);
                break;
            }
        }
    }
}

bool kv_block_claim(kv_waiter *w)
{
    int expect = 0;
    if (!atomic_compare_exchange_strong(&w->state, &expect, 1))
        return false;
    atomic_fetch_sub(&blocked_count, 1);
    return true;
}

void kv_block_release(kv_waiter *w)
{
    unref(w);
}

void kv_block_retain(kv_waiter *w)
{
    atomic_fetch_add(&w->refs, 1);
}

const kv_command *kv_block_command(const kv_waiter *w, size_t *argc, const resp_arg **argv)
{
    *argc = w->argc;
    *argv = w->argv;
    return w->cmd;
}

void *kv_block_client(const kv_waiter *w)
{
    return w->client;
}

unsigned kv_block_client_shard(const kv_waiter *w)
{
    return w->client_shard;
}

bool kv_block_on_shard(const kv_waiter *w, unsigned shard)
{
    for (size_t i = 0; i < w->nkeys; i++)
        if (kv_shard_of_key(&w->argv[w->key_idx[i]]) == shard)
            return true;
    return false;
}

/* ---- serving ------------------------------------------------------------------------- */

void kv_block_ready(kv_db *db, const char *key, size_t klen)
{
    block_state *st = &states[db->id];
    if (!st->nwaiting)
        return;
    kv_dict_entry *e = kv_dict_find(st->keys, key, klen);
    if (!e || ((wkey *)e->u.p)->ready)
        return;
    ready_key *r = malloc(sizeof(*r) + klen);
    if (!r)
        return;
    if (st->nready == st->readycap) {
        size_t cap = st->readycap ? st->readycap * 2 : 8;
        ready_key **v = realloc(st->ready, cap * sizeof(*v));
        if (!v) {
            free(r);
            return;
        }
        st->ready = v;
        st->readycap = cap;
    }
    r->len = klen;
    memcpy(r->key, key, klen);
    st->ready[st->nready++] = r;
    ((wkey *)e->u.p)->ready = true;
}

/* Pops for w from key (on this shard). Returns 1 when it replied into
 * out, 0 when the key has nothing for it, 2 when w must run again on its
 * client's shard (a move to another shard's key). */
static int serve_one(kv_waiter *w, const resp_arg *key, resp_buf *out)
{
    kv_cmd_ctx c = {.out = out, .proto = w->proto, .now_ms = kv_now_ms()};
    const char *name = w->cmd->name;
    const resp_arg *argv = w->argv;
    size_t argc = w->argc;
    bool zset = name[1] == 'z';
    kv_entry *e = kv_lookup(&c, key);
    if (!e || e->type != (zset ? KV_ZSET : KV_LIST))
        return 0;
    if (!strcmp(name, "blpop") || !strcmp(name, "brpop"))
        return kv_list_pop_reply(&c, key, name[1] == 'l', -1, true) == 1 ? 1 : 0;
    if (!strcmp(name, "bzpopmin") || !strcmp(name, "bzpopmax")) {
        kv_zset_pop_reply(&c, key, e, name[6] == 'a', 1, true, false);
        return 1;
    }
    if (!strcmp(name, "blmove") || !strcmp(name, "brpoplpush")) {
        if (kv_shard_of_key(&argv[2]) != kv_shard_of_key(&argv[1]))
            return 2;
        bool from_left, to_left;
        if (!move_args(&c, argc, argv, &from_left, &to_left))
            return 0;
        int r = kv_list_move_reply(&c, &argv[1], &argv[2], from_left, to_left);
        return r == 1 || r == -1 ? 1 : 0; /* a WRONGTYPE destination is its reply */
    }
    if (!strcmp(name, "blmpop")) {
        size_t n;
        bool left;
        long long count;
        if (!kv_list_mpop_args(&c, argc, argv, 2, &n, &left, &count))
            return 0;
        return kv_list_pop_reply(&c, key, left, count, true) == 1 ? 1 : 0;
    }
    /* bzmpop */
    size_t n;
    bool max;
    long long count;
    if (!numkeys_arg(&c, argc, argv, &n) || !zmpop_args(&c, argc, argv, 3 + n, &max, &count))
        return 0;
    kv_zset_pop_reply(&c, key, e, max, (long)count, true, true);
    return 1;
}

void kv_block_serve_here(void)
{
    block_state *st = &states[keel_shard_id()];
    while (st->nready) {
        ready_key *r = st->ready[--st->nready];
        resp_arg key = {r->key, r->len};
        kv_dict_entry *e = kv_dict_find(st->keys, r->key, r->len);
        if (e) {
            wkey *wk = e->u.p;
            wk->ready = false;
            /* Serve in blocking order while the key has data. */
            while (wk->head) {
                wnode *n = wk->head;
                kv_waiter *w = n->w;
                if (atomic_load(&w->state) != 0) {
                    unlink_node(st, e, n); /* served elsewhere or timed out */
                    if (!(e = kv_dict_find(st->keys, r->key, r->len)))
                        break;
                    wk = e->u.p;
                    continue;
                }
                resp_buf out;
                resp_buf_init(&out);
                kv_cmd_ctx probe = {.out = &out, .proto = w->proto, .now_ms = kv_now_ms()};
                if (!kv_lookup(&probe, &key))
                    break;
                if (!kv_block_claim(w))
                    continue; /* lost the race: the next pass unlinks it */
                kv_persist_need need;
                if (kv_persist_on)
                    kv_persist_begin_served(w->cmd, w->argc, w->argv);
                int res = serve_one(w, &key, &out);
                if (kv_persist_on)
                    kv_persist_end(&need);
                kv_block_retain(w); /* for the message to the client */
                kv_block_deliver(w, &out, res != 1);
                unlink_node(st, e, n);
                if (!(e = kv_dict_find(st->keys, r->key, r->len)))
                    break;
                wk = e->u.p;
            }
            if (e && !((wkey *)e->u.p)->head) {
                wk = e->u.p;
                kv_dict_entry *gone;
                if (kv_dict_delete(st->keys, r->key, r->len, &gone)) {
                    free(wk);
                    kv_dict_entry_free(st->keys, gone);
                }
            }
        }
        free(r);
    }
}
