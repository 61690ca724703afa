/* keel-kv's server: reads commands from a client, runs each on the shard
 * that owns its key (here, or through keel_submit_to), and writes replies
 * back in request order even when a pipeline spans shards.
 *
 * Order: replies go to the client's output buffer while nothing is
 * outstanding; once a command waits on another shard, every later reply of
 * that client queues behind it in a slot, and slots drain into the output
 * buffer in order as they complete. A batch of commands read together is
 * written together, after its last slot is done. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "kv.h"

typedef struct slot {
    struct slot *next;
    resp_buf out;
    size_t pending; /* hops still out */
    bool is_sum;    /* an integer reply summed over hops (DEL, EXISTS, DBSIZE) */
    long long sum;
} slot;

typedef struct kv_client {
    keel_conn *conn;
    resp_parser parser;
    char *q;
    size_t qlen, qcap;
    resp_buf out;
    slot *head, *tail;
    size_t hops;
    keel_promise drained;
    int proto;
    bool quit, ended;
} kv_client;

typedef struct hop {
    kv_client *client;
    slot *slot;
    const kv_command *cmd;
    int proto;
    size_t argc;
    resp_buf out; /* written on the owner, read and freed here */
    resp_arg *argv;
    char data[];
} hop;

static kv_db *dbs; /* one per shard, each touched by its owner (see txn.c) */

kv_db *kv_db_of_shard(unsigned shard)
{
    return &dbs[shard];
}

static kv_db *kv_local_db(void)
{
    return &dbs[keel_shard_id()];
}

static keel_future *free_db_at_exit(void *arg)
{
    (void)arg;
    kv_db_free(kv_local_db());
    return keel_make_ready(0);
}

static void client_free(kv_client *c)
{
    resp_parser_free(&c->parser);
    resp_buf_free(&c->out);
    free(c->q);
    free(c);
}

/* Moves finished slots, in order, into the output buffer. */
static void drain_slots(kv_client *c)
{
    while (c->head && c->head->pending == 0) {
        slot *s = c->head;
        if (s->is_sum)
            resp_add_int(&c->out, s->sum);
        else
            resp_add_raw(&c->out, s->out.data, s->out.len);
        c->head = s->next;
        if (!c->head)
            c->tail = NULL;
        resp_buf_free(&s->out);
        free(s);
    }
}

static slot *new_slot(kv_client *c, size_t pending)
{
    slot *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    resp_buf_init(&s->out);
    s->pending = pending;
    if (c->tail)
        c->tail->next = s;
    else
        c->head = s;
    c->tail = s;
    return s;
}

/* Where the next reply goes: the output buffer, or a slot if something
 * before it is still out. */
static resp_buf *reply_target(kv_client *c)
{
    if (!c->head)
        return &c->out;
    slot *s = new_slot(c, 0);
    return s ? &s->out : &c->out; /* out of memory: order is the lesser loss */
}

/* ---- hops to other shards -------------------------------------------------- */

/* One hop of slot s came back: drain what is now in order, wake the
 * client's loop once nothing is out, free a client that ended meanwhile. */
static void hop_finished(kv_client *c, slot *s)
{
    s->pending--;
    c->hops--;
    drain_slots(c);
    if (c->hops == 0 && keel_promise_pending(&c->drained))
        keel_promise_set_value(&c->drained, 0);
    if (c->hops == 0 && c->ended)
        client_free(c);
}

static keel_future *run_hop(void *arg)
{
    hop *h = arg;
    kv_cmd_ctx ctx = {.out = &h->out, .proto = h->proto, .now_ms = kv_now_ms()};
    h->cmd->fn(&ctx, h->argc, h->argv);
    return keel_make_ready(0);
}

static void hop_done(void *ctx, keel_result r)
{
    hop *h = ctx;
    kv_client *c = h->client;
    slot *s = h->slot;
    (void)r;
    if (s->is_sum) {
        /* The per-key reply is ":0\r\n" or ":1\r\n" (or a count). */
        if (h->out.len > 1 && h->out.data[0] == ':')
            s->sum += strtoll(h->out.data + 1, NULL, 10);
    } else {
        resp_add_raw(&s->out, h->out.data, h->out.len);
    }
    resp_buf_free(&h->out);
    free(h);
    hop_finished(c, s);
}

/* Sends argv[0] plus the given args to shard. */
static void send_hop(kv_client *c, slot *s, unsigned shard, const kv_command *cmd, size_t argc,
                     const resp_arg *const *args)
{
    size_t bytes = 0;
    for (size_t i = 0; i < argc; i++)
        bytes += args[i]->len;
    hop *h = malloc(sizeof(*h) + argc * sizeof(resp_arg) + bytes);
    if (!h) {
        resp_add_error(&s->out, "ERR out of memory");
        return;
    }
    h->client = c;
    h->slot = s;
    h->cmd = cmd;
    h->proto = c->proto;
    h->argc = argc;
    h->argv = (resp_arg *)h->data;
    resp_buf_init(&h->out);
    char *p = h->data + argc * sizeof(resp_arg);
    for (size_t i = 0; i < argc; i++) {
        memcpy(p, args[i]->ptr, args[i]->len);
        h->argv[i] = (resp_arg){p, args[i]->len};
        p += args[i]->len;
    }
    s->pending++;
    c->hops++;
    keel_on_done(keel_submit_to(shard, run_hop, h), hop_done, h);
}

static keel_future *dbsize_here(void *arg)
{
    (void)arg;
    return keel_make_ready((int64_t)kv_db_size(kv_local_db()));
}

static void dbsize_part(void *ctx, keel_result r)
{
    hop *h = ctx; /* only client and slot are used */
    kv_client *c = h->client;
    slot *s = h->slot;
    s->sum += r.err ? 0 : r.val;
    free(h);
    hop_finished(c, s);
}

/* ---- dispatch ------------------------------------------------------------------- */

static void run_local(kv_client *c, const kv_command *cmd, size_t argc, const resp_arg *argv)
{
    kv_cmd_ctx ctx = {.out = reply_target(c), .proto = c->proto, .now_ms = kv_now_ms()};
    cmd->fn(&ctx, argc, argv);
}

static void dispatch(kv_client *c, size_t argc, const resp_arg *argv)
{
    const kv_command *cmd = kv_command_lookup(argv[0].ptr, argv[0].len);
    if (!cmd) {
        kv_reply_unknown(reply_target(c), argc, argv);
        return;
    }
    if ((cmd->arity > 0 && argc != (size_t)cmd->arity) ||
        (cmd->arity < 0 && argc < (size_t)-cmd->arity)) {
        kv_reply_arity(reply_target(c), cmd);
        return;
    }
    if (cmd->flags & KV_CMD_CONN) {
        if (!strcmp(cmd->name, "command")) {
            kv_cmd_ctx ctx = {.out = reply_target(c), .proto = c->proto, .now_ms = kv_now_ms()};
            kv_command_reply(&ctx, argc, argv);
        } else if (!strcmp(cmd->name, "quit")) {
            resp_add_status(reply_target(c), "OK");
            c->quit = true;
        } else if (!strcmp(cmd->name, "dbsize")) {
            unsigned n = keel_shard_count();
            slot *s = new_slot(c, 0);
            if (!s) {
                resp_add_error(reply_target(c), "ERR out of memory");
                return;
            }
            s->is_sum = true;
            for (unsigned i = 0; i < n; i++) {
                hop *h = calloc(1, sizeof(*h));
                if (!h)
                    continue;
                h->client = c;
                h->slot = s;
                s->pending++;
                c->hops++;
                keel_on_done(keel_submit_to(i, dbsize_here, NULL), dbsize_part, h);
            }
            drain_slots(c);
        }
        return;
    }
    size_t idx[64];
    int nk = kv_command_keys(cmd, argc, argv, idx, 64);
    if (nk <= 0) {
        run_local(c, cmd, argc, argv);
        return;
    }
    unsigned owner = kv_shard_of_key(&argv[idx[0]]);
    for (int i = 1; i < nk; i++) {
        if (kv_shard_of_key(&argv[idx[i]]) != owner) {
            resp_add_error(reply_target(c), "ERR keel: keys on several shards: not yet");
            return;
        }
    }
    if (owner == keel_shard_id()) {
        run_local(c, cmd, argc, argv);
        return;
    }
    slot *s = new_slot(c, 0);
    if (!s) {
        resp_add_error(reply_target(c), "ERR out of memory");
        return;
    }
    const resp_arg *args[argc];
    for (size_t i = 0; i < argc; i++)
        args[i] = &argv[i];
    send_hop(c, s, owner, cmd, argc, args);
    drain_slots(c);
}

/* ---- the client loop -------------------------------------------------------------- */

static keel_future *written(void *ctx, keel_result r)
{
    kv_client *c = ctx;
    (void)r;
    return keel_make_ready(c->quit ? KEEL_STOP : KEEL_CONTINUE);
}

static keel_future *write_out(void *ctx, keel_result r)
{
    kv_client *c = ctx;
    (void)r;
    keel_future *f = keel_conn_write(c->conn, c->out.data, c->out.len);
    resp_buf_clear(&c->out);
    return keel_then(f, written, c);
}

static keel_future *got_input(void *ctx, keel_result r)
{
    kv_client *c = ctx;
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

    size_t off = 0;
    while (off < c->qlen && !c->quit) {
        resp_cmd cmd;
        const char *err;
        ssize_t used = resp_parse(&c->parser, c->q + off, c->qlen - off, &cmd, &err);
        if (used == 0)
            break;
        if (used < 0) { /* protocol error: reply, then close this client only */
            resp_add_error(reply_target(c), err);
            c->quit = true;
            break;
        }
        off += (size_t)used;
        if (cmd.argc)
            dispatch(c, cmd.argc, cmd.argv);
    }
    memmove(c->q, c->q + off, c->qlen - off);
    c->qlen -= off;
    if (c->hops == 0)
        return write_out(c, keel_ok(0));
    return keel_then(keel_promise_init(&c->drained), write_out, c);
}

static keel_future *client_step(void *ctx)
{
    kv_client *c = ctx;
    return keel_then(keel_conn_read(c->conn), got_input, c);
}

static void client_end(void *ctx, keel_result r)
{
    kv_client *c = ctx;
    (void)r;
    keel_detach(keel_conn_close(c->conn));
    c->ended = true;
    if (c->hops == 0)
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
    c->conn = conn;
    c->proto = 2;
    resp_parser_init(&c->parser);
    resp_buf_init(&c->out);
    keel_conn_set_nodelay(conn, true);
    keel_on_done(keel_repeat(client_step, c), client_end, c);
}

static keel_future *shard_setup(void *arg)
{
    (void)arg;
    if (kv_db_init(kv_local_db(), keel_shard_id()))
        return keel_make_error(-ENOMEM);
    keel_at_exit(free_db_at_exit, NULL);
    return keel_make_ready(0);
}

typedef struct start_ctx {
    kv_config cfg;
    keel_listener **out;
} start_ctx;

static keel_future *listen_now(void *ctx, keel_result r)
{
    start_ctx *s = ctx;
    (void)r;
    keel_future *f = keel_listen(&s->cfg.listen, on_conn, NULL, s->out);
    free(s);
    return f;
}

keel_future *kv_server_start(const kv_config *cfg, keel_listener **out)
{
    start_ctx *s = malloc(sizeof(*s));
    if (!s)
        return keel_make_error(-ENOMEM);
    s->cfg = *cfg;
    s->out = out;
    kv_commands_init();
    dbs = calloc(keel_shard_count(), sizeof(*dbs));
    if (!dbs) {
        free(s);
        return keel_make_error(-ENOMEM);
    }
    return keel_then(keel_invoke_on_all(shard_setup, NULL), listen_now, s);
}
