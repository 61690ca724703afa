/* Command handlers that run on the shard owning their key, and the command
 * table. Replies and errors are worded as Redis 7 words them. */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "kv.h"

#define KEY(argv, i) (argv)[i].ptr, (argv)[i].len

static bool arg_is(const resp_arg *a, const char *word)
{
    size_t n = strlen(word);
    return a->len == n && !strncasecmp(a->ptr, word, n);
}

static void reply_oom(resp_buf *out)
{
    resp_add_error(out, "OOM command not allowed when used memory > 'maxmemory'.");
}

static void cmd_get(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    (void)argc;
    kv_entry *e = kv_db_find(c->db, kv_hash(KEY(argv, 1)), KEY(argv, 1));
    if (!e)
        resp_add_null(c->out, c->proto);
    else
        resp_add_bulk(c->out, e->data + e->klen, e->vlen);
}

/* SET key value [NX|XX] [GET] [EX s|PX ms|EXAT s|PXAT ms|KEEPTTL] */
static void cmd_set(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    bool nx = false, xx = false, get = false, keepttl = false;
    int64_t expire_ms = -1;
    bool have_expire = false;
    for (size_t i = 3; i < argc; i++) {
        const resp_arg *a = &argv[i];
        if (arg_is(a, "NX") && !xx) {
            nx = true;
        } else if (arg_is(a, "XX") && !nx) {
            xx = true;
        } else if (arg_is(a, "GET")) {
            get = true;
        } else if (arg_is(a, "KEEPTTL") && !have_expire) {
            keepttl = true;
        } else if ((arg_is(a, "EX") || arg_is(a, "PX") || arg_is(a, "EXAT") || arg_is(a, "PXAT")) &&
                   !have_expire && !keepttl && i + 1 < argc) {
            long long v;
            if (!resp_string2ll(argv[i + 1].ptr, argv[i + 1].len, &v)) {
                resp_add_error(c->out, "ERR value is not an integer or out of range");
                return;
            }
            bool seconds = arg_is(a, "EX") || arg_is(a, "EXAT");
            bool absolute = arg_is(a, "EXAT") || arg_is(a, "PXAT");
            if (v <= 0 || (seconds && v > LLONG_MAX / 1000)) {
                resp_add_error(c->out, "ERR invalid expire time in 'set' command");
                return;
            }
            int64_t ms = seconds ? v * 1000 : v;
            if (!absolute && ms > LLONG_MAX - kv_now_ms()) {
                resp_add_error(c->out, "ERR invalid expire time in 'set' command");
                return;
            }
            expire_ms = absolute ? ms : kv_now_ms() + ms;
            have_expire = true;
            i++;
        } else {
            resp_add_error(c->out, "ERR syntax error");
            return;
        }
    }
    uint64_t h = kv_hash(KEY(argv, 1));
    kv_entry *old = kv_db_find(c->db, h, KEY(argv, 1));
    if (get) {
        if (old)
            resp_add_bulk(c->out, old->data + old->klen, old->vlen);
        else
            resp_add_null(c->out, c->proto);
    }
    if ((nx && old) || (xx && !old)) {
        if (!get)
            resp_add_null(c->out, c->proto);
        return;
    }
    if (keepttl && old)
        expire_ms = old->expire_ms;
    if (!kv_db_set(c->db, h, KEY(argv, 1), KEY(argv, 2), expire_ms)) {
        if (!get)
            reply_oom(c->out);
        return;
    }
    if (!get)
        resp_add_status(c->out, "OK");
}

/* One key's part of DEL/UNLINK/EXISTS; the server sums the shards' counts. */
static void cmd_del1(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    (void)argc;
    resp_add_int(c->out, kv_db_delete(c->db, kv_hash(KEY(argv, 1)), KEY(argv, 1)) ? 1 : 0);
}

static void cmd_exists1(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    (void)argc;
    resp_add_int(c->out, kv_db_find(c->db, kv_hash(KEY(argv, 1)), KEY(argv, 1)) ? 1 : 0);
}

static void incr_by(kv_cmd_ctx *c, const resp_arg *key, long long by)
{
    uint64_t h = kv_hash(key->ptr, key->len);
    kv_entry *e = kv_db_find(c->db, h, key->ptr, key->len);
    long long v = 0;
    if (e && !resp_string2ll(e->data + e->klen, e->vlen, &v)) {
        resp_add_error(c->out, "ERR value is not an integer or out of range");
        return;
    }
    if ((by > 0 && v > LLONG_MAX - by) || (by < 0 && v < LLONG_MIN - by)) {
        resp_add_error(c->out, "ERR increment or decrement would overflow");
        return;
    }
    v += by;
    char buf[RESP_LL_CHARS];
    int n = resp_fmt_ll(buf, v);
    if (!kv_db_set(c->db, h, key->ptr, key->len, buf, (size_t)n, e ? e->expire_ms : -1)) {
        reply_oom(c->out);
        return;
    }
    resp_add_int(c->out, v);
}

static void cmd_incr(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    (void)argc;
    incr_by(c, &argv[1], 1);
}

static void cmd_decr(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    (void)argc;
    incr_by(c, &argv[1], -1);
}

static void cmd_incrby(kv_cmd_ctx *c, size_t argc, const resp_arg *argv, bool negate)
{
    (void)argc;
    long long by;
    if (!resp_string2ll(argv[2].ptr, argv[2].len, &by) || (negate && by == LLONG_MIN)) {
        resp_add_error(c->out, "ERR value is not an integer or out of range");
        return;
    }
    incr_by(c, &argv[1], negate ? -by : by);
}

static void cmd_incrby_fn(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    cmd_incrby(c, argc, argv, false);
}

static void cmd_decrby_fn(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    cmd_incrby(c, argc, argv, true);
}

static void cmd_strlen(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    (void)argc;
    kv_entry *e = kv_db_find(c->db, kv_hash(KEY(argv, 1)), KEY(argv, 1));
    resp_add_int(c->out, e ? (long long)e->vlen : 0);
}

static void cmd_append(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    (void)argc;
    uint64_t h = kv_hash(KEY(argv, 1));
    kv_entry *e = kv_db_find(c->db, h, KEY(argv, 1));
    size_t old = e ? e->vlen : 0;
    char *v = malloc(old + argv[2].len + 1);
    if (!v) {
        reply_oom(c->out);
        return;
    }
    if (e)
        memcpy(v, e->data + e->klen, old);
    memcpy(v + old, argv[2].ptr, argv[2].len);
    kv_entry *n = kv_db_set(c->db, h, KEY(argv, 1), v, old + argv[2].len, e ? e->expire_ms : -1);
    free(v);
    if (!n)
        reply_oom(c->out);
    else
        resp_add_int(c->out, (long long)n->vlen);
}

static void cmd_ping(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    if (argc == 1)
        resp_add_status(c->out, "PONG");
    else
        resp_add_bulk(c->out, argv[1].ptr, argv[1].len);
}

static void cmd_echo(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    (void)argc;
    resp_add_bulk(c->out, argv[1].ptr, argv[1].len);
}

/* Keyed commands name their key at argv[1]; the server routes them to the
 * key's shard. DEL and EXISTS with several keys are split per key there.
 * Commands flagged SERVER are handled by the server itself (they need the
 * connection or every shard); their fn is NULL. */
static const kv_command commands[] = {
    {"get", 2, KV_CMD_KEYED, cmd_get},
    {"set", -3, KV_CMD_KEYED | KV_CMD_WRITE, cmd_set},
    {"del", -2, KV_CMD_KEYED | KV_CMD_WRITE, cmd_del1},
    {"unlink", -2, KV_CMD_KEYED | KV_CMD_WRITE, cmd_del1},
    {"exists", -2, KV_CMD_KEYED, cmd_exists1},
    {"incr", 2, KV_CMD_KEYED | KV_CMD_WRITE, cmd_incr},
    {"decr", 2, KV_CMD_KEYED | KV_CMD_WRITE, cmd_decr},
    {"incrby", 3, KV_CMD_KEYED | KV_CMD_WRITE, cmd_incrby_fn},
    {"decrby", 3, KV_CMD_KEYED | KV_CMD_WRITE, cmd_decrby_fn},
    {"strlen", 2, KV_CMD_KEYED, cmd_strlen},
    {"append", 3, KV_CMD_KEYED | KV_CMD_WRITE, cmd_append},
    {"ping", -1, 0, cmd_ping},
    {"echo", 2, 0, cmd_echo},
    {"dbsize", 1, KV_CMD_SERVER, NULL},
    {"quit", -1, KV_CMD_SERVER, NULL},
    {"command", -1, KV_CMD_SERVER, NULL},
};

const kv_command *kv_command_lookup(const char *name, size_t len)
{
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (strlen(commands[i].name) == len && !strncasecmp(commands[i].name, name, len))
            return &commands[i];
    return NULL;
}

/* "ERR unknown command 'x', with args beginning with: 'a' 'b' " as
 * Redis 7 writes it (names and args cut at 128 bytes). */
void kv_reply_unknown(resp_buf *out, size_t argc, const resp_arg *argv)
{
    char msg[1024];
    int n = snprintf(msg, sizeof(msg), "ERR unknown command '%.*s', with args beginning with: ",
                     (int)(argv[0].len > 128 ? 128 : argv[0].len), argv[0].ptr);
    for (size_t i = 1; i < argc && n < (int)sizeof(msg) - 140; i++)
        n += snprintf(msg + n, sizeof(msg) - (size_t)n, "'%.*s' ",
                      (int)(argv[i].len > 128 ? 128 : argv[i].len), argv[i].ptr);
    resp_add_error_len(out, msg, (size_t)n);
}

void kv_reply_arity(resp_buf *out, const kv_command *cmd)
{
    resp_add_errorf(out, "ERR wrong number of arguments for '%s' command", cmd->name);
}
