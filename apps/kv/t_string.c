/* String commands. Replies and errors are worded as Redis 7.0 words them,
 * and arguments are checked in Redis's order, so that a command with two
 * faults reports the same one.
 *
 * A string's bytes live in its key's entry (kv_str()): commands that keep
 * the length (SETRANGE inside the value) write there and call
 * kv_modified(); APPEND and SETRANGE past the end grow the entry with room
 * to spare (kv_str_grow()); the others build the new value and
 * kv_set_str() it. */
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kv.h"

#define ERR_TOO_BIG "ERR string exceeds maximum allowed size (proto-max-bulk-len)"

/* How a value was made, in the entry's enc bits (t_keys.c's STR_ENC_*,
 * for OBJECT ENCODING): Redis keeps the values of APPEND and SETRANGE as
 * raw strings whatever they hold, and INCRBYFLOAT's never as "int". A new
 * entry starts at 0, SET's rules. */
#define STR_ENC_RAW 1
#define STR_ENC_NOINT 2

/* The string at key, or NULL; replies WRONGTYPE (and sets *wrong) when
 * the key holds another type. */
static kv_entry *lookup_str(kv_cmd_ctx *c, const resp_arg *key, bool *wrong)
{
    return kv_lookup_type(c, key, KV_STRING, wrong);
}

/* Takes back what a handler wrote since mark and answers OOM instead: for
 * the commands that reply before their write, which then fails. */
static void reply_oom_from(kv_cmd_ctx *c, size_t mark)
{
    c->out->len = mark;
    kv_reply_oom(c->out);
}

/* A string's value, or null for NULL. */
static void reply_value(kv_cmd_ctx *c, kv_entry *e)
{
    if (e)
        resp_add_bulk(c->out, kv_str(e), e->vlen);
    else
        resp_add_null(c->out, c->proto);
}

static void cmd_get(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    (void)argc;
    bool wrong;
    kv_entry *e = lookup_str(c, &argv[1], &wrong);
    if (wrong)
        return;
    reply_value(c, e);
}

/* ---- SET and its family --------------------------------------------------------- */

/* The options of SET and GETEX (Redis's parseExtendedStringArgumentsOrReply). */
enum {
    OPT_NX = 1u << 0,
    OPT_XX = 1u << 1,
    OPT_GET = 1u << 2,
    OPT_KEEPTTL = 1u << 3,
    OPT_PERSIST = 1u << 4,
    OPT_EX = 1u << 5,
    OPT_PX = 1u << 6,
    OPT_EXAT = 1u << 7,
    OPT_PXAT = 1u << 8,
};

#define OPT_EXPIRE (OPT_EX | OPT_PX | OPT_EXAT | OPT_PXAT)

/* The OPT_ flag of an expiry option (EX, PX, EXAT, PXAT), or 0. */
static unsigned expire_unit(const resp_arg *a)
{
    static const struct {
        const char *name;
        unsigned flag;
    } units[] = {{"EX", OPT_EX}, {"PX", OPT_PX}, {"EXAT", OPT_EXAT}, {"PXAT", OPT_PXAT}};
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
        if (kv_arg_is(a, units[i].name))
            return units[i].flag;
    return 0;
}

/* Parses argv[first..] as SET's options (for_get false) or GETEX's. Each
 * expiry form excludes the others but may repeat (the last one counts), as
 * in Redis. Replies "syntax error" and returns false on anything else. */
static bool parse_ext(kv_cmd_ctx *c, size_t argc, const resp_arg *argv, size_t first, bool for_get,
                      unsigned *flags, const resp_arg **expire)
{
    unsigned f = 0, unit;
    *expire = NULL;
    for (size_t j = first; j < argc; j++) {
        const resp_arg *a = &argv[j];
        bool next = j + 1 < argc;
        if (!for_get && kv_arg_is(a, "NX") && !(f & OPT_XX)) {
            f |= OPT_NX;
        } else if (!for_get && kv_arg_is(a, "XX") && !(f & OPT_NX)) {
            f |= OPT_XX;
        } else if (!for_get && kv_arg_is(a, "GET")) {
            f |= OPT_GET;
        } else if (!for_get && kv_arg_is(a, "KEEPTTL") && !(f & (OPT_PERSIST | OPT_EXPIRE))) {
            f |= OPT_KEEPTTL;
        } else if (for_get && kv_arg_is(a, "PERSIST") && !(f & (OPT_KEEPTTL | OPT_EXPIRE))) {
            f |= OPT_PERSIST;
        } else if ((unit = expire_unit(a)) && next &&
                   !(f & (OPT_KEEPTTL | OPT_PERSIST | (OPT_EXPIRE & ~unit)))) {
            f |= unit;
            *expire = &argv[++j];
        } else {
            kv_reply_syntax(c->out);
            return false;
        }
    }
    *flags = f;
    return true;
}

/* An expiry argument as an absolute time in ms (Redis's
 * getExpireMillisecondsOrReply): a positive integer, in seconds or ms,
 * relative to now or absolute; replies the error and returns false if it
 * is not one or would overflow. cmd names the command in the error. */
static bool expire_at(kv_cmd_ctx *c, const resp_arg *a, bool seconds, bool relative,
                      const char *cmd, int64_t *at)
{
    long long v;
    if (!kv_arg_ll(c, a, &v, NULL))
        return false;
    if (v <= 0 || (seconds && v > LLONG_MAX / 1000))
        goto invalid;
    if (seconds)
        v *= 1000;
    if (relative) {
        if (v > LLONG_MAX - c->now_ms)
            goto invalid;
        v += c->now_ms;
    }
    *at = v;
    return true;
invalid:
    resp_add_errorf(c->out, "ERR invalid expire time in '%s' command", cmd);
    return false;
}

static bool expire_from_flags(kv_cmd_ctx *c, unsigned flags, const resp_arg *expire,
                              const char *cmd, int64_t *at)
{
    return expire_at(c, expire, flags & (OPT_EX | OPT_EXAT), flags & (OPT_EX | OPT_PX), cmd, at);
}

/* SET's core (Redis's setGenericCommand) for SET, SETNX, SETEX and PSETEX.
 * at: the expiry, KV_NO_EXPIRE, or ignored under KEEPTTL. int_reply: SETNX's
 * :1/:0 instead of +OK/null. */
static void set_generic(kv_cmd_ctx *c, const resp_arg *key, const resp_arg *val, unsigned flags,
                        int64_t at, bool int_reply)
{
    size_t mark = c->out->len;
    kv_entry *old = kv_lookup(c, key);
    if (flags & OPT_GET) {
        if (old && old->type != KV_STRING) {
            kv_reply_wrongtype(c->out);
            return;
        }
        reply_value(c, old);
    }
    if (((flags & OPT_NX) && old) || ((flags & OPT_XX) && !old)) {
        if (flags & OPT_GET)
            return;
        if (int_reply)
            resp_add_int(c->out, 0);
        else
            resp_add_null(c->out, c->proto);
        return;
    }
    if (!kv_set_str(c, key, val->ptr, val->len, (flags & OPT_KEEPTTL) ? KV_KEEP_TTL : at)) {
        reply_oom_from(c, mark);
        return;
    }
    if (flags & OPT_GET)
        return;
    kv_reply_ok_or_one(c->out, int_reply);
}

/* SET key value [NX|XX] [GET] [EX s|PX ms|EXAT s|PXAT ms|KEEPTTL] */
static void cmd_set(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    unsigned flags;
    const resp_arg *expire;
    int64_t at = KV_NO_EXPIRE;
    if (!parse_ext(c, argc, argv, 3, false, &flags, &expire))
        return;
    if (expire && !expire_from_flags(c, flags, expire, "set", &at))
        return;
    set_generic(c, &argv[1], &argv[2], flags, at, false);
}

static void cmd_setnx(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    (void)argc;
    set_generic(c, &argv[1], &argv[2], OPT_NX, KV_NO_EXPIRE, true);
}

/* SETEX key seconds value, PSETEX key ms value */
static void setex(kv_cmd_ctx *c, const resp_arg *argv, bool seconds, const char *cmd)
{
    int64_t at;
    if (expire_at(c, &argv[2], seconds, true, cmd, &at))
        set_generic(c, &argv[1], &argv[3], 0, at, false);
}

static void cmd_setex(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    (void)argc;
    setex(c, argv, true, "setex");
}

static void cmd_psetex(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    (void)argc;
    setex(c, argv, false, "psetex");
}

/* GETSET key value: SET without the TTL, answering the old value. */
static void cmd_getset(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    (void)argc;
    size_t mark = c->out->len;
    bool wrong;
    kv_entry *e = lookup_str(c, &argv[1], &wrong);
    if (wrong)
        return;
    reply_value(c, e);
    if (!kv_set_str(c, &argv[1], argv[2].ptr, argv[2].len, KV_NO_EXPIRE))
        reply_oom_from(c, mark);
}

static void cmd_getdel(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    (void)argc;
    bool wrong;
    kv_entry *e = lookup_str(c, &argv[1], &wrong);
    if (wrong)
        return;
    reply_value(c, e);
    if (e)
        kv_del(c, &argv[1]);
}

/* GETEX key [EX s|PX ms|EXAT s|PXAT ms|PERSIST] */
static void cmd_getex(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    unsigned flags;
    const resp_arg *expire;
    if (!parse_ext(c, argc, argv, 2, true, &flags, &expire))
        return;
    bool wrong;
    kv_entry *e = lookup_str(c, &argv[1], &wrong);
    if (wrong)
        return;
    if (!e) {
        resp_add_null(c->out, c->proto);
        return;
    }
    /* The expiry is checked only once the key is known to be a string. */
    int64_t at = 0;
    if (expire && !expire_from_flags(c, flags, expire, "getex", &at))
        return;
    resp_add_bulk(c->out, kv_str(e), e->vlen);
    /* A time in the past (EXAT/PXAT) deletes the key. */
    if (expire)
        kv_set_expire(c, &argv[1], at);
    else if ((flags & OPT_PERSIST) && e->volatile_)
        kv_set_expire(c, &argv[1], KV_NO_EXPIRE);
}

/* ---- several keys ---------------------------------------------------------------- */

static void cmd_mget(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    resp_add_array(c->out, argc - 1);
    for (size_t i = 1; i < argc; i++) {
        kv_entry *e = kv_lookup(c, &argv[i]);
        /* Another type reads as missing, not as an error. */
        reply_value(c, e && e->type == KV_STRING ? e : NULL);
    }
}

/* MSET and MSETNX: keys are set in order, so a repeated key keeps its
 * last value, and each loses any TTL. */
static void mset(kv_cmd_ctx *c, size_t argc, const resp_arg *argv, bool nx)
{
    if (argc % 2 == 0) {
        resp_add_errorf(c->out, "ERR wrong number of arguments for '%s' command",
                        nx ? "msetnx" : "mset");
        return;
    }
    if (nx) {
        for (size_t i = 1; i < argc; i += 2) {
            if (kv_lookup(c, &argv[i])) {
                resp_add_int(c->out, 0);
                return;
            }
        }
    }
    for (size_t i = 1; i < argc; i += 2) {
        if (!kv_set_str(c, &argv[i], argv[i + 1].ptr, argv[i + 1].len, KV_NO_EXPIRE)) {
            kv_reply_oom(c->out);
            return;
        }
    }
    kv_reply_ok_or_one(c->out, nx);
}

static void cmd_mset(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    mset(c, argc, argv, false);
}

static void cmd_msetnx(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    mset(c, argc, argv, true);
}

/* ---- counters ----------------------------------------------------------------------- */

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

/* INCRBYFLOAT key increment: long double arithmetic, the result stored and
 * answered (a bulk string in both protocols) in ld2string's human form. */
static void cmd_incrbyfloat(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    (void)argc;
    bool wrong;
    kv_entry *e = lookup_str(c, &argv[1], &wrong);
    if (wrong)
        return;
    long double v = 0, by;
    if ((e && !kv_string2ld(kv_str(e), e->vlen, &v)) ||
        !kv_string2ld(argv[2].ptr, argv[2].len, &by)) {
        kv_reply_not_float(c->out);
        return;
    }
    v += by;
    if (isnan(v) || isinf(v)) {
        resp_add_error(c->out, "ERR increment would produce NaN or Infinity");
        return;
    }
    char buf[RESP_LONG_DOUBLE_CHARS];
    int n = resp_fmt_long_double_human(buf, sizeof(buf), v);
    if (n < 0) {
        kv_reply_not_float(c->out); /* not reached: the buffer fits any finite value */
        return;
    }
    kv_entry *ne = kv_set_str(c, &argv[1], buf, (size_t)n, KV_KEEP_TTL);
    if (!ne) {
        kv_reply_oom(c->out);
        return;
    }
    ne->enc = STR_ENC_NOINT;
    resp_add_bulk(c->out, buf, (size_t)n);
}

/* ---- lengths and ranges --------------------------------------------------------- */

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
        resp_add_error(c->out, ERR_TOO_BIG);
        return;
    }
    if (!e) {
        /* A new key holds the argument as SET would store it. */
        if (!kv_set_str(c, &argv[1], argv[2].ptr, argv[2].len, KV_NO_EXPIRE))
            kv_reply_oom(c->out);
        else
            resp_add_int(c->out, (long long)argv[2].len);
        return;
    }
    e = kv_str_grow(c, &argv[1], old + argv[2].len);
    if (!e) {
        kv_reply_oom(c->out);
        return;
    }
    memcpy(kv_str(e) + old, argv[2].ptr, argv[2].len);
    e->enc = STR_ENC_RAW;
    resp_add_int(c->out, (long long)e->vlen);
}

/* GETRANGE key start end (and SUBSTR, its old name): inclusive, negative
 * indexes from the end, clamped; both negative and crossed is empty. */
static void cmd_getrange(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    (void)argc;
    long long start, end;
    if (!kv_arg_ll(c, &argv[2], &start, NULL) || !kv_arg_ll(c, &argv[3], &end, NULL))
        return;
    bool wrong;
    kv_entry *e = lookup_str(c, &argv[1], &wrong);
    if (wrong)
        return;
    long long len = e ? (long long)e->vlen : 0;
    if (!e || len == 0 || (start < 0 && end < 0 && start > end)) {
        resp_add_bulk(c->out, "", 0);
        return;
    }
    if (start < 0)
        start += len;
    if (end < 0)
        end += len;
    if (start < 0)
        start = 0;
    if (end < 0)
        end = 0;
    if (end >= len)
        end = len - 1;
    if (start > end)
        resp_add_bulk(c->out, "", 0);
    else
        resp_add_bulk(c->out, kv_str(e) + start, (size_t)(end - start + 1));
}

/* SETRANGE key offset value: overwrites from offset, padding with zero
 * bytes; an empty value changes nothing (and creates no key). */
static void cmd_setrange(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    (void)argc;
    long long off;
    if (!kv_arg_ll(c, &argv[2], &off, NULL))
        return;
    if (off < 0) {
        resp_add_error(c->out, "ERR offset is out of range");
        return;
    }
    bool wrong;
    kv_entry *e = lookup_str(c, &argv[1], &wrong);
    if (wrong)
        return;
    const resp_arg *val = &argv[3];
    if (val->len == 0) {
        resp_add_int(c->out, e ? (long long)e->vlen : 0);
        return;
    }
    if ((unsigned long long)off + val->len > (unsigned long long)RESP_MAX_BULK_BYTES) {
        resp_add_error(c->out, ERR_TOO_BIG);
        return;
    }
    size_t need = (size_t)off + val->len;
    if (e && need <= e->vlen) {
        memcpy(kv_str(e) + off, val->ptr, val->len);
        e->enc = STR_ENC_RAW;
        kv_modified(c, &argv[1]);
        resp_add_int(c->out, (long long)e->vlen);
        return;
    }
    /* Growing: a new key, or the entry grown with room to spare. */
    kv_entry *n = e ? kv_str_grow(c, &argv[1], need) : NULL;
    if (!e) {
        char *v = calloc(need, 1);
        if (v) {
            memcpy(v + off, val->ptr, val->len);
            n = kv_set_str(c, &argv[1], v, need, KV_KEEP_TTL);
            free(v);
        }
    } else if (n) {
        memcpy(kv_str(n) + off, val->ptr, val->len);
    }
    if (!n) {
        kv_reply_oom(c->out);
        return;
    }
    n->enc = STR_ENC_RAW;
    resp_add_int(c->out, (long long)need);
}

/* ---- LCS --------------------------------------------------------------------------- */

/* Emits one IDX match: [[a_start, a_end], [b_start, b_end], (len)]. */
static void lcs_match(resp_buf *out, uint32_t as, uint32_t ae, uint32_t bs, uint32_t be,
                      bool withlen)
{
    resp_add_array(out, withlen ? 3 : 2);
    resp_add_array(out, 2);
    resp_add_int(out, as);
    resp_add_int(out, ae);
    resp_add_array(out, 2);
    resp_add_int(out, bs);
    resp_add_int(out, be);
    if (withlen)
        resp_add_int(out, (long long)ae - as + 1);
}

/* The LCS length alone needs two rows of the table, not all of it. */
static bool lcs_len_only(const unsigned char *a, uint32_t alen, const unsigned char *b,
                         uint32_t blen, uint32_t *len)
{
    uint32_t *prev = calloc((size_t)blen + 1, sizeof(uint32_t));
    uint32_t *row = calloc((size_t)blen + 1, sizeof(uint32_t));
    if (!prev || !row) {
        free(prev);
        free(row);
        return false;
    }
    for (uint32_t i = 1; i <= alen; i++) {
        for (uint32_t j = 1; j <= blen; j++) {
            if (a[i - 1] == b[j - 1])
                row[j] = prev[j - 1] + 1;
            else
                row[j] = prev[j] > row[j - 1] ? prev[j] : row[j - 1];
        }
        uint32_t *t = prev;
        prev = row;
        row = t;
    }
    *len = prev[blen];
    free(prev);
    free(row);
    return true;
}

/* LCS key1 key2 [LEN] [IDX] [MINMATCHLEN len] [WITHMATCHLEN]: the longest
 * common subsequence by the classic table, walked back from the end as
 * Redis walks it, so that IDX reports the same matches in the same order
 * (last first). */
static void cmd_lcs(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    kv_entry *ea = kv_lookup(c, &argv[1]);
    kv_entry *eb = kv_lookup(c, &argv[2]);
    if ((ea && ea->type != KV_STRING) || (eb && eb->type != KV_STRING)) {
        resp_add_error(c->out, "ERR The specified keys must contain string values");
        return;
    }
    bool getlen = false, getidx = false, withlen = false;
    long long minlen = 0;
    for (size_t j = 3; j < argc; j++) {
        if (kv_arg_is(&argv[j], "IDX")) {
            getidx = true;
        } else if (kv_arg_is(&argv[j], "LEN")) {
            getlen = true;
        } else if (kv_arg_is(&argv[j], "WITHMATCHLEN")) {
            withlen = true;
        } else if (kv_arg_is(&argv[j], "MINMATCHLEN") && j + 1 < argc) {
            if (!kv_arg_ll(c, &argv[j + 1], &minlen, NULL))
                return;
            if (minlen < 0)
                minlen = 0;
            j++;
        } else {
            kv_reply_syntax(c->out);
            return;
        }
    }
    if (getlen && getidx) {
        resp_add_error(c->out, "ERR If you want both the length and indexes, please just use IDX.");
        return;
    }
    const unsigned char *a = ea ? (const unsigned char *)kv_str(ea) : (const unsigned char *)"";
    const unsigned char *b = eb ? (const unsigned char *)kv_str(eb) : (const unsigned char *)"";
    size_t alen64 = ea ? ea->vlen : 0, blen64 = eb ? eb->vlen : 0;
    if (alen64 >= UINT32_MAX - 1 || blen64 >= UINT32_MAX - 1) {
        resp_add_error(c->out, "ERR String too long for LCS");
        return;
    }
    uint32_t alen = (uint32_t)alen64, blen = (uint32_t)blen64;
    /* Redis refuses a table larger than proto-max-bulk-len, even for LEN. */
    unsigned long long cells = ((unsigned long long)alen + 1) * ((unsigned long long)blen + 1);
    if (cells * sizeof(uint32_t) > (unsigned long long)RESP_MAX_BULK_BYTES) {
        resp_add_error(c->out, "ERR Insufficient memory, transient memory for LCS exceeds "
                               "proto-max-bulk-len");
        return;
    }
    if (getlen) {
        uint32_t len;
        if (!lcs_len_only(a, alen, b, blen, &len)) {
            resp_add_error(c->out,
                           "ERR Insufficient memory, failed allocating transient memory for LCS");
            return;
        }
        resp_add_int(c->out, len);
        return;
    }
    uint32_t *t = malloc((size_t)cells * sizeof(uint32_t));
    if (!t) {
        resp_add_error(c->out,
                       "ERR Insufficient memory, failed allocating transient memory for LCS");
        return;
    }
#define LCS(i, j) t[(size_t)(i) * ((size_t)blen + 1) + (j)]
    for (uint32_t j = 0; j <= blen; j++)
        LCS(0, j) = 0;
    for (uint32_t i = 1; i <= alen; i++) {
        LCS(i, 0) = 0;
        for (uint32_t j = 1; j <= blen; j++) {
            if (a[i - 1] == b[j - 1]) {
                LCS(i, j) = LCS(i - 1, j - 1) + 1;
            } else {
                uint32_t up = LCS(i - 1, j), left = LCS(i, j - 1);
                LCS(i, j) = up > left ? up : left;
            }
        }
    }
    uint32_t total = LCS(alen, blen);
    char *result = NULL;
    if (!getidx && !(result = malloc(total ? total : 1))) {
        free(t);
        resp_add_error(c->out,
                       "ERR Insufficient memory, failed allocating transient memory for LCS");
        return;
    }
    size_t matches_at = 0;
    uint32_t nmatches = 0;
    if (getidx) {
        resp_add_map(c->out, c->proto, 2);
        resp_add_bulk_cstr(c->out, "matches");
        matches_at = resp_add_deferred(c->out);
    }
    /* The walk: a range of matched bytes grows backwards while matches are
     * contiguous in both strings and is emitted when the walk leaves it. */
    uint32_t i = alen, j = blen, idx = total;
    uint32_t as = alen, ae = 0, bs = 0, be = 0; /* as == alen: no open range */
    while (i > 0 && j > 0) {
        bool emit = false;
        if (a[i - 1] == b[j - 1]) {
            if (result)
                result[idx - 1] = (char)a[i - 1];
            if (as == alen) {
                as = ae = i - 1;
                bs = be = j - 1;
            } else if (as == i && bs == j) {
                as--;
                bs--;
            } else {
                emit = true;
            }
            if (as == 0 || bs == 0)
                emit = true;
            idx--;
            i--;
            j--;
        } else {
            if (LCS(i - 1, j) > LCS(i, j - 1))
                i--;
            else
                j--;
            if (as != alen)
                emit = true;
        }
        if (emit) {
            if (getidx && (minlen == 0 || (long long)(ae - as + 1) >= minlen)) {
                lcs_match(c->out, as, ae, bs, be, withlen);
                nmatches++;
            }
            as = alen;
        }
    }
#undef LCS
    free(t);
    if (getidx) {
        resp_set_deferred_array(c->out, matches_at, nmatches);
        resp_add_bulk_cstr(c->out, "len");
        resp_add_int(c->out, total);
    } else {
        resp_add_bulk(c->out, result, total);
        free(result);
    }
}

#define W (KV_CMD_WRITE | KV_CMD_DENYOOM)
#define R (KV_CMD_READONLY | KV_CMD_FAST)
const kv_command kv_string_commands[] = {
    {"get", 2, R, 1, 1, 1, cmd_get, NULL, "@read @string @fast"},
    {"set", -3, W, 1, 1, 1, cmd_set, NULL, "@write @string @slow"},
    {"setnx", 3, W | KV_CMD_FAST, 1, 1, 1, cmd_setnx, NULL, "@write @string @fast"},
    {"setex", 4, W, 1, 1, 1, cmd_setex, NULL, "@write @string @slow"},
    {"psetex", 4, W, 1, 1, 1, cmd_psetex, NULL, "@write @string @slow"},
    {"getset", 3, W | KV_CMD_FAST, 1, 1, 1, cmd_getset, NULL, "@write @string @fast"},
    {"getdel", 2, KV_CMD_WRITE | KV_CMD_FAST, 1, 1, 1, cmd_getdel, NULL, "@write @string @fast"},
    {"getex", -2, KV_CMD_WRITE | KV_CMD_FAST, 1, 1, 1, cmd_getex, NULL, "@write @string @fast"},
    {"mget", -2, R, 1, -1, 1, cmd_mget, NULL, "@read @string @fast"},
    {"mset", -3, W, 1, -1, 2, cmd_mset, NULL, "@write @string @slow"},
    {"msetnx", -3, W, 1, -1, 2, cmd_msetnx, NULL, "@write @string @slow"},
    {"incr", 2, W | KV_CMD_FAST, 1, 1, 1, cmd_incr, NULL, "@write @string @fast"},
    {"decr", 2, W | KV_CMD_FAST, 1, 1, 1, cmd_decr, NULL, "@write @string @fast"},
    {"incrby", 3, W | KV_CMD_FAST, 1, 1, 1, cmd_incrby, NULL, "@write @string @fast"},
    {"decrby", 3, W | KV_CMD_FAST, 1, 1, 1, cmd_decrby, NULL, "@write @string @fast"},
    {"incrbyfloat", 3, W | KV_CMD_FAST, 1, 1, 1, cmd_incrbyfloat, NULL, "@write @string @fast"},
    {"strlen", 2, R, 1, 1, 1, cmd_strlen, NULL, "@read @string @fast"},
    {"append", 3, W | KV_CMD_FAST, 1, 1, 1, cmd_append, NULL, "@write @string @fast"},
    {"getrange", 4, KV_CMD_READONLY, 1, 1, 1, cmd_getrange, NULL, "@read @string @slow"},
    {"substr", 4, KV_CMD_READONLY, 1, 1, 1, cmd_getrange, NULL, "@read @string @slow"},
    {"setrange", 4, W, 1, 1, 1, cmd_setrange, NULL, "@write @string @slow"},
    {"lcs", -3, KV_CMD_READONLY, 1, 2, 1, cmd_lcs, NULL, "@read @string @slow"},
    {NULL},
};
