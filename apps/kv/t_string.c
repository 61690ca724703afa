/* String commands. Replies and errors are worded as Redis 7 words them. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "kv.h"

/* The string at key, or NULL; replies WRONGTYPE (and sets *wrong) when
 * the key holds another type. */
static kv_entry *lookup_str(kv_cmd_ctx *c, const resp_arg *key, bool *wrong)
{
    return kv_lookup_type(c, key, KV_STRING, wrong);
}

static void cmd_get(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    (void)argc;
    bool wrong;
    kv_entry *e = lookup_str(c, &argv[1], &wrong);
    if (wrong)
        return;
    if (!e)
        resp_add_null(c->out, c->proto);
    else
        resp_add_bulk(c->out, kv_str(e), e->vlen);
}

/* SET key value [NX|XX] [GET] [EX s|PX ms|EXAT s|PXAT ms|KEEPTTL] */
static void cmd_set(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    bool nx = false, xx = false, get = false, keepttl = false;
    int64_t expire_ms = KV_NO_EXPIRE;
    bool have_expire = false;
    for (size_t i = 3; i < argc; i++) {
        const resp_arg *a = &argv[i];
        if (kv_arg_is(a, "NX") && !xx) {
            nx = true;
        } else if (kv_arg_is(a, "XX") && !nx) {
            xx = true;
        } else if (kv_arg_is(a, "GET")) {
            get = true;
        } else if (kv_arg_is(a, "KEEPTTL") && !have_expire) {
            keepttl = true;
        } else if ((kv_arg_is(a, "EX") || kv_arg_is(a, "PX") || kv_arg_is(a, "EXAT") ||
                    kv_arg_is(a, "PXAT")) &&
                   !have_expire && !keepttl && i + 1 < argc) {
            long long v;
            if (!kv_arg_ll(c, &argv[i + 1], &v, NULL))
                return;
            bool seconds = kv_arg_is(a, "EX") || kv_arg_is(a, "EXAT");
            bool absolute = kv_arg_is(a, "EXAT") || kv_arg_is(a, "PXAT");
            if (v <= 0 || (seconds && v > LLONG_MAX / 1000)) {
                resp_add_error(c->out, "ERR invalid expire time in 'set' command");
                return;
            }
            int64_t ms = seconds ? v * 1000 : v;
            if (!absolute && ms > LLONG_MAX - c->now_ms) {
                resp_add_error(c->out, "ERR invalid expire time in 'set' command");
                return;
            }
            expire_ms = absolute ? ms : c->now_ms + ms;
            have_expire = true;
            i++;
        } else {
            kv_reply_syntax(c->out);
            return;
        }
    }
    kv_entry *old = kv_lookup(c, &argv[1]);
    if (get) {
        if (old && old->type != KV_STRING) {
            kv_reply_wrongtype(c->out);
            return;
        }
        if (old)
            resp_add_bulk(c->out, kv_str(old), old->vlen);
        else
            resp_add_null(c->out, c->proto);
    }
    if ((nx && old) || (xx && !old)) {
        if (!get)
            resp_add_null(c->out, c->proto);
        return;
    }
    if (!kv_set_str(c, &argv[1], argv[2].ptr, argv[2].len, keepttl ? KV_KEEP_TTL : expire_ms)) {
        if (!get)
            kv_reply_oom(c->out);
        return;
    }
    if (!get)
        resp_add_status(c->out, "OK");
}

static void incr_by(kv_cmd_ctx *c, const resp_arg *key, long long by)
{
    bool wrong;
    kv_entry *e = lookup_str(c, key, &wrong);
    if (wrong)
        return;
    long long v = 0;
    if (e && !resp_string2ll(kv_str(e), e->vlen, &v)) {
        kv_reply_not_int(c->out);
        return;
    }
    if ((by > 0 && v > LLONG_MAX - by) || (by < 0 && v < LLONG_MIN - by)) {
        resp_add_error(c->out, "ERR increment or decrement would overflow");
        return;
    }
    v += by;
    char buf[RESP_LL_CHARS];
    int n = resp_fmt_ll(buf, v);
    if (!kv_set_str(c, key, buf, (size_t)n, KV_KEEP_TTL)) {
        kv_reply_oom(c->out);
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

static void incrby(kv_cmd_ctx *c, const resp_arg *argv, bool negate)
{
    long long by;
    if (!kv_arg_ll(c, &argv[2], &by, NULL))
        return;
    if (negate && by == LLONG_MIN) {
        resp_add_error(c->out, "ERR decrement would overflow");
        return;
    }
    incr_by(c, &argv[1], negate ? -by : by);
}

static void cmd_incrby(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    (void)argc;
    incrby(c, argv, false);
}

static void cmd_decrby(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    (void)argc;
    incrby(c, argv, true);
}

static void cmd_strlen(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    (void)argc;
    bool wrong;
    kv_entry *e = lookup_str(c, &argv[1], &wrong);
    if (!wrong)
        resp_add_int(c->out, e ? (long long)e->vlen : 0);
}

static void cmd_append(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    (void)argc;
    bool wrong;
    kv_entry *e = lookup_str(c, &argv[1], &wrong);
    if (wrong)
        return;
    size_t old = e ? e->vlen : 0;
    if (old + argv[2].len > RESP_MAX_BULK_BYTES) {
        resp_add_error(c->out, "ERR string exceeds maximum allowed size (proto-max-bulk-len)");
        return;
    }
    char *v = malloc(old + argv[2].len + 1);
    if (!v) {
        kv_reply_oom(c->out);
        return;
    }
    if (e)
        memcpy(v, kv_str(e), old);
    memcpy(v + old, argv[2].ptr, argv[2].len);
    kv_entry *n = kv_set_str(c, &argv[1], v, old + argv[2].len, KV_KEEP_TTL);
    free(v);
    if (!n)
        kv_reply_oom(c->out);
    else
        resp_add_int(c->out, (long long)n->vlen);
}

#define W (KV_CMD_WRITE | KV_CMD_DENYOOM)
#define R (KV_CMD_READONLY | KV_CMD_FAST)
const kv_command kv_string_commands[] = {
    {"get", 2, R, 1, 1, 1, cmd_get, NULL, "@read @string @fast"},
    {"set", -3, W, 1, 1, 1, cmd_set, NULL, "@write @string @slow"},
    {"incr", 2, W | KV_CMD_FAST, 1, 1, 1, cmd_incr, NULL, "@write @string @fast"},
    {"decr", 2, W | KV_CMD_FAST, 1, 1, 1, cmd_decr, NULL, "@write @string @fast"},
    {"incrby", 3, W | KV_CMD_FAST, 1, 1, 1, cmd_incrby, NULL, "@write @string @fast"},
    {"decrby", 3, W | KV_CMD_FAST, 1, 1, 1, cmd_decrby, NULL, "@write @string @fast"},
    {"strlen", 2, R, 1, 1, 1, cmd_strlen, NULL, "@read @string @fast"},
    {"append", 3, W | KV_CMD_FAST, 1, 1, 1, cmd_append, NULL, "@write @string @fast"},
    {NULL},
};
