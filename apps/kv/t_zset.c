/* Sorted set commands, answering as Redis 7.0 does: same replies, errors,
 * option parsing and order of checks (arguments are validated before the
 * key is looked up wherever Redis does so). The object is kv_zset (zset.c). */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv.h"
#include "t_set.h"
#include "t_zset.h"

/* ---- the type ------------------------------------------------------------------------ */

static void obj_free(void *obj)
{
    kv_zset_free(obj);
}

static void *obj_dup(const void *obj)
{
    return kv_zset_dup(obj);
}

static size_t obj_mem(const void *obj)
{
    return kv_zset_mem(obj);
}

static const char *obj_encoding(const void *obj)
{
    return kv_zset_is_big(obj) ? "skiplist" : "listpack";
}

static size_t obj_len(const void *obj)
{
    return kv_zset_len(obj);
}

const kv_type_ops kv_zset_type = {"zset", obj_free, obj_dup, obj_mem, obj_encoding, obj_len};

/* ---- helpers ------------------------------------------------------------------------- */

/* A member and its score, pointing into an object that stays unchanged
 * while the array lives. */
typedef struct zitem {
    const char *m;
    size_t n;
    double score;
} zitem;

/* Room for copies of members that do not outlive a callback (an intset's
 * members are formatted into a temporary buffer). */
typedef struct arena {
    struct arena *next;
    size_t used, cap;
    char data[];
} arena;

typedef struct zitems {
    zitem *v;
    size_t n, cap;
    size_t maxlen; /* the longest member */
    arena *copies;
    bool oom;
} zitems;

static void items_push(zitems *a, const char *m, size_t n, double score)
{
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 16;
        zitem *v = realloc(a->v, cap * sizeof(*v));
        if (!v) {
            a->oom = true;
            return;
        }
        a->v = v;
        a->cap = cap;
    }
    a->v[a->n++] = (zitem){m, n, score};
    if (n > a->maxlen)
        a->maxlen = n;
}

/* items_push() of a copy of m. */
static void items_push_copy(zitems *a, const char *m, size_t n, double score)
{
    arena *r = a->copies;
    if (!r || r->cap - r->used < n) {
        size_t cap = n > 4000 ? n : 4000;
        r = malloc(sizeof(*r) + cap);
        if (!r) {
            a->oom = true;
            return;
        }
        r->next = a->copies;
        r->used = 0;
        r->cap = cap;
        a->copies = r;
    }
    char *p = r->data + r->used;
    if (n)
        memcpy(p, m, n);
    r->used += n;
    items_push(a, p, n, score);
}

static void items_free(zitems *a)
{
    free(a->v);
    while (a->copies) {
        arena *next = a->copies->next;
        free(a->copies);
        a->copies = next;
    }
}

static int item_cmp(const void *a, const void *b)
{
    const zitem *x = a, *y = b;
    if (x->score != y->score)
        return x->score < y->score ? -1 : 1;
    return kv_zset_cmp_member(x->m, x->n, y->m, y->n);
}

/* Redis's getLongFromObjectOrReply() with getRangeLong's bounds: msg (or
 * the default) for a non-integer, range_msg for one out of [min, max]. */
static bool arg_range(kv_cmd_ctx *c, const resp_arg *a, long long min, long long max, long long *v,
                      const char *msg)
{
    if (!kv_arg_ll(c, a, v, msg))
        return false;
    if (*v < min || *v > max) {
        resp_add_error(c->out, msg);
        return false;
    }
    return true;
}

/* A copy of an argument as a C string, as Redis's sds is one: strtod()
 * and strtoul() stop at an embedded NUL there too. free_buf() after. */
static char *c_string(const resp_arg *a, size_t skip, char *buf, size_t cap)
{
    size_t n = a->len - skip;
    char *s = n < cap ? buf : malloc(n + 1);
    if (!s)
        return NULL;
    memcpy(s, a->ptr + skip, n);
    s[n] = '\0';
    return s;
}

static void free_buf(char *s, char *buf)
{
    if (s != buf)
        free(s);
}

/* One side of a score range, as Redis's zslParseRange() reads it: "(" for
 * exclusive, then whatever strtod() takes whole (spaces, hex, "inf"),
 * except NaN. */
static bool parse_score_bound(const resp_arg *a, double *v, bool *ex)
{
    *ex = a->len && a->ptr[0] == '(';
    char buf[128];
    char *s = c_string(a, *ex, buf, sizeof(buf));
    if (!s)
        return false;
    char *end;
    double d = strtod(s, &end);
    bool ok = *end == '\0' && !isnan(d);
    free_buf(s, buf);
    if (ok)
        *v = d;
    return ok;
}

static bool parse_range(const resp_arg *min, const resp_arg *max, kv_zrange_spec *r)
{
    return parse_score_bound(min, &r->min, &r->minex) && parse_score_bound(max, &r->max, &r->maxex);
}

/* One side of a lex range (zslParseLexRangeItem()): "-", "+", "(x", "[x". */
static bool parse_lex_item(const resp_arg *a, const char **s, size_t *n, signed char *kind,
                           bool *ex)
{
    if (!a->len)
        return false;
    *s = a->ptr + 1;
    *n = a->len - 1;
    switch (a->ptr[0]) {
    case '+':
    case '-':
        if (a->len > 1 && a->ptr[1] != '\0')
            return false;
        *kind = a->ptr[0] == '+' ? 1 : -1;
        *ex = true;
        return true;
    case '(':
        *kind = 0;
        *ex = true;
        return true;
    case '[':
        *kind = 0;
        *ex = false;
        return true;
    default: return false;
    }
}

static bool parse_lex(const resp_arg *min, const resp_arg *max, kv_zlex_spec *r)
{
    return parse_lex_item(min, &r->min, &r->minlen, &r->minkind, &r->minex) &&
           parse_lex_item(max, &r->max, &r->maxlen, &r->maxkind, &r->maxex);
}

enum { RANGE_AUTO, RANGE_RANK, RANGE_SCORE, RANGE_LEX };

/* Parses min and max as type says (ranks, scores or lex items) into
 * [*start, *end], *range or *lex. Replies the error and returns false when
 * they do not parse. */
static bool parse_bounds(kv_cmd_ctx *c, const resp_arg *min, const resp_arg *max, int type,
                         long long *start, long long *end, kv_zrange_spec *range, kv_zlex_spec *lex)
{
    if (type == RANGE_RANK)
        return kv_arg_ll(c, min, start, NULL) && kv_arg_ll(c, max, end, NULL);
    if (type == RANGE_SCORE) {
        if (parse_range(min, max, range))
            return true;
        resp_add_error(c->out, "ERR min or max is not a float");
        return false;
    }
    if (parse_lex(min, max, lex))
        return true;
    resp_add_error(c->out, "ERR min or max not valid string range item");
    return false;
}

/* The sorted set at key, or NULL (missing, or WRONGTYPE replied: *wrong). */
static kv_zset *lookup_zset(kv_cmd_ctx *c, const resp_arg *key, bool *wrong, kv_entry **ep)
{
    kv_entry *e = kv_lookup_type(c, key, KV_ZSET, wrong);
    if (ep)
        *ep = e;
    return e ? kv_obj(e) : NULL;
}

/* A member with its score: [m, s] in RESP3 when pairs, else m s. */
static void reply_scored(kv_cmd_ctx *c, const char *m, size_t n, double score, bool withscores)
{
    if (withscores && c->proto >= 3)
        resp_add_array(c->out, 2);
    resp_add_bulk(c->out, m, n);
    if (withscores)
        resp_add_double(c->out, c->proto, score);
}

/* The header of an array of count members, with or without scores. */
static void reply_scored_array(kv_cmd_ctx *c, size_t count, bool withscores)
{
    resp_add_array(c->out, withscores && c->proto < 3 ? 2 * count : count);
}

/* Stores items (sorted, in ascending order unless descending) at dst as a
 * new sorted set replacing whatever dst held (its TTL too), or deletes
 * dst when there are none; replies the count (Redis's setKey()/dbDelete()
 * ending of the STORE commands). */
static void store_items(kv_cmd_ctx *c, const resp_arg *dst, const zitems *a, bool descending)
{
    if (a->oom) {
        kv_reply_oom(c->out);
        return;
    }
    if (!a->n) {
        kv_del(c, dst);
        resp_add_int(c->out, 0);
        return;
    }
    kv_zset *z = kv_zset_new(kv_zset_wants_big(a->n, a->maxlen));
    if (!z) {
        kv_reply_oom(c->out);
        return;
    }
    for (size_t i = 0; i < a->n; i++) {
        const zitem *it = &a->v[descending ? a->n - 1 - i : i];
        if (kv_zset_append(z, it->score, it->m, it->n) < 0) {
            kv_zset_free(z);
            kv_reply_oom(c->out);
            return;
        }
    }
    if (!kv_replace_obj(c, dst, KV_ZSET, z, false)) {
        kv_zset_free(z);
        kv_reply_oom(c->out);
        return;
    }
    kv_key_ready(c, dst);
    resp_add_int(c->out, (long long)a->n);
}

/* ---- ZADD, ZINCRBY, ZREM ---------------------------------------------------------------- */

static void zadd_generic(kv_cmd_ctx *c, size_t argc, const resp_arg *argv, int flags)
{
    const resp_arg *key = &argv[1];
    bool ch = false;
    size_t idx = 2;
    for (; idx < argc; idx++) {
        const resp_arg *a = &argv[idx];
        if (kv_arg_is(a, "NX"))
            flags |= KV_ZADD_NX;
        else if (kv_arg_is(a, "XX"))
            flags |= KV_ZADD_XX;
        else if (kv_arg_is(a, "CH"))
            ch = true;
        else if (kv_arg_is(a, "INCR"))
            flags |= KV_ZADD_INCR;
        else if (kv_arg_is(a, "GT"))
            flags |= KV_ZADD_GT;
        else if (kv_arg_is(a, "LT"))
            flags |= KV_ZADD_LT;
        else
            break;
    }
    bool incr = flags & KV_ZADD_INCR, nx = flags & KV_ZADD_NX, xx = flags & KV_ZADD_XX;
    bool gt = flags & KV_ZADD_GT, lt = flags & KV_ZADD_LT;
    size_t elements = argc - idx;
    if (elements % 2 || !elements) {
        kv_reply_syntax(c->out);
        return;
    }
    elements /= 2;
    if (nx && xx) {
        resp_add_error(c->out, "ERR XX and NX options at the same time are not compatible");
        return;
    }
    if ((gt && nx) || (lt && nx) || (gt && lt)) {
        resp_add_error(c->out, "ERR GT, LT, and/or NX options at the same time are not compatible");
        return;
    }
    if (incr && elements > 1) {
        resp_add_error(c->out, "ERR INCR option supports a single increment-element pair");
        return;
    }

    double local[16], *scores = elements <= 16 ? local : malloc(elements * sizeof(double));
    if (!scores) {
        kv_reply_oom(c->out);
        return;
    }
    for (size_t j = 0; j < elements; j++) {
        if (!kv_arg_double(c, &argv[idx + 2 * j], &scores[j], NULL))
            goto out;
    }

    bool wrong;
    kv_zset *z = lookup_zset(c, key, &wrong, NULL);
    if (wrong)
        goto out;
    bool created = false;
    size_t added = 0, updated = 0, processed = 0;
    double score = 0;
    const char *err = NULL;
    if (!z) {
        if (xx)
            goto reply;
        /* Redis 7.0 picks the encoding from the first member alone. */
        z = kv_zset_new(kv_zset_wants_big(1, argv[idx + 1].len));
        if (!z) {
            kv_reply_oom(c->out);
            goto out;
        }
        created = true;
    }
    for (size_t j = 0; j < elements; j++) {
        const resp_arg *m = &argv[idx + 2 * j + 1];
        int got;
        double newscore = 0;
        int r = kv_zset_add(z, scores[j], m->ptr, m->len, flags, &got, &newscore);
        if (r == 0) {
            err = "ERR resulting score is not a number (NaN)";
            break;
        }
        if (r < 0) {
            err = "OOM command not allowed when used memory > 'maxmemory'.";
            break;
        }
        added += (got & KV_ZADD_OUT_ADDED) != 0;
        updated += (got & KV_ZADD_OUT_UPDATED) != 0;
        processed += (got & KV_ZADD_OUT_NOP) == 0;
        score = newscore;
    }
    if (created) {
        if (!kv_zset_len(z)) {
            kv_zset_free(z);
        } else if (!kv_add_obj(c, key, KV_ZSET, z)) {
            kv_zset_free(z);
            kv_reply_oom(c->out);
            goto out;
        }
    } else if (added || updated) {
        kv_modified(c, key);
    }
    if (added)
        kv_key_ready(c, key);
    if (err) {
        resp_add_error(c->out, err);
        goto out;
    }
reply:
    if (incr) {
        if (processed)
            resp_add_double(c->out, c->proto, score);
        else
            resp_add_null(c->out, c->proto);
    } else {
        resp_add_int(c->out, (long long)(ch ? added + updated : added));
    }
out:
    if (scores != local)
        free(scores);
}

static void cmd_zadd(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    zadd_generic(c, argc, argv, 0);
}

static void cmd_zincrby(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    zadd_generic(c, argc, argv, KV_ZADD_INCR);
}

static void cmd_zrem(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    bool wrong;
    kv_zset *z = lookup_zset(c, &argv[1], &wrong, NULL);
    if (wrong)
        return;
    long long deleted = 0;
    if (z) {
        for (size_t j = 2; j < argc; j++) {
            deleted += kv_zset_del(z, argv[j].ptr, argv[j].len);
            if (!kv_zset_len(z))
                break;
        }
        if (deleted)
            kv_modified(c, &argv[1]);
    }
    resp_add_int(c->out, deleted);
}

/* ---- ZSCORE, ZMSCORE, ZCARD, ZRANK ------------------------------------------------------- */

static void cmd_zscore(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    (void)argc;
    bool wrong;
    kv_zset *z = lookup_zset(c, &argv[1], &wrong, NULL);
    if (wrong)
        return;
    double score;
    if (z && kv_zset_score(z, argv[2].ptr, argv[2].len, &score))
        resp_add_double(c->out, c->proto, score);
    else
        resp_add_null(c->out, c->proto);
}

static void cmd_zmscore(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    bool wrong;
    kv_zset *z = lookup_zset(c, &argv[1], &wrong, NULL);
    if (wrong)
        return;
    resp_add_array(c->out, argc - 2);
    for (size_t j = 2; j < argc; j++) {
        double score;
        if (z && kv_zset_score(z, argv[j].ptr, argv[j].len, &score))
            resp_add_double(c->out, c->proto, score);
        else
            resp_add_null(c->out, c->proto);
    }
}

static void cmd_zcard(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    (void)argc;
    bool wrong;
    kv_zset *z = lookup_zset(c, &argv[1], &wrong, NULL);
    if (!wrong)
        resp_add_int(c->out, z ? (long long)kv_zset_len(z) : 0);
}

static void zrank_generic(kv_cmd_ctx *c, const resp_arg *argv, bool reverse)
{
    bool wrong;
    kv_zset *z = lookup_zset(c, &argv[1], &wrong, NULL);
    if (wrong)
        return;
    long rank = z ? kv_zset_rank(z, argv[2].ptr, argv[2].len, reverse) : -1;
    if (rank >= 0)
        resp_add_int(c->out, rank);
    else
        resp_add_null(c->out, c->proto);
}

static void cmd_zrank(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    (void)argc;
    zrank_generic(c, argv, false);
}

static void cmd_zrevrank(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    (void)argc;
    zrank_generic(c, argv, true);
}

/* ---- ZCOUNT, ZLEXCOUNT ------------------------------------------------------------------- */

/* Members from first (the first in range) to last (the last in range), by
 * their ranks: O(log n) in the skip list, a walk in the small encoding. */
static size_t count_between(kv_zset_it first, kv_zset_it last)
{
    if (!kv_zset_it_valid(&first) || !kv_zset_it_valid(&last))
        return 0;
    size_t a = kv_zset_it_rank(&first), b = kv_zset_it_rank(&last);
    return b >= a ? b - a + 1 : 0;
}

static void zcount_generic(kv_cmd_ctx *c, const resp_arg *argv, bool lex)
{
    kv_zrange_spec range;
    kv_zlex_spec lexr;
    if (!parse_bounds(c, &argv[2], &argv[3], lex ? RANGE_LEX : RANGE_SCORE, NULL, NULL, &range,
                      &lexr))
        return;
    bool wrong;
    kv_zset *z = lookup_zset(c, &argv[1], &wrong, NULL);
    if (wrong)
        return;
    size_t n = 0;
    if (z && lex)
        n = count_between(kv_zset_first_in_lex(z, &lexr), kv_zset_last_in_lex(z, &lexr));
    else if (z)
        n = count_between(kv_zset_first_in_range(z, &range), kv_zset_last_in_range(z, &range));
    resp_add_int(c->out, (long long)n);
}

static void cmd_zcount(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    (void)argc;
    zcount_generic(c, argv, false);
}

static void cmd_zlexcount(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    (void)argc;
    zcount_generic(c, argv, true);
}

/* ---- ZRANGE and friends ---------------------------------------------------------------- */

enum { DIR_AUTO, DIR_FORWARD, DIR_REVERSE };

/* Where a range goes: to the client, or collected for ZRANGESTORE. */
typedef struct zout {
    kv_cmd_ctx *c;
    bool store;
    bool withscores;
    bool deferred;
    size_t at; /* the deferred header's offset */
    size_t n;  /* members emitted */
    zitems items;
} zout;

/* length: the count when known, -1 when not. */
static void out_begin(zout *o, long length)
{
    if (o->store)
        return;
    if (length > 0) {
        reply_scored_array(o->c, (size_t)length, o->withscores);
    } else {
        o->deferred = true;
        o->at = resp_add_deferred(o->c->out);
    }
}

static void out_emit(zout *o, const char *m, size_t n, double score)
{
    o->n++;
    if (o->store)
        items_push(&o->items, m, n, score);
    else
        reply_scored(o->c, m, n, score, o->withscores);
}

static void out_end(zout *o, const resp_arg *dst, bool descending)
{
    if (o->store) {
        store_items(o->c, dst, &o->items, descending);
        items_free(&o->items);
        return;
    }
    if (o->deferred)
        resp_set_deferred_array(o->c->out, o->at,
                                o->withscores && o->c->proto < 3 ? 2 * o->n : o->n);
}

static void range_by_rank(zout *o, const kv_zset *z, long long start, long long end, bool rev)
{
    size_t from, to;
    if (!kv_clamp_range(start, end, kv_zset_len(z), &from, &to)) {
        out_begin(o, 0);
        return;
    }
    long long n = (long long)(to - from + 1);
    out_begin(o, (long)n);
    kv_zset_it it = kv_zset_at_rank(z, from, rev);
    for (; n-- > 0 && kv_zset_it_valid(&it); rev ? kv_zset_it_prev(&it) : kv_zset_it_next(&it)) {
        size_t len_m;
        const char *m = kv_zset_it_member(&it, &len_m);
        out_emit(o, m, len_m, kv_zset_it_score(&it));
    }
}

static void range_by_score(zout *o, const kv_zset *z, const kv_zrange_spec *r, long long offset,
                           long long limit, bool rev)
{
    out_begin(o, -1);
    if (offset > 0 && offset >= (long long)kv_zset_len(z))
        return;
    kv_zset_it it = rev ? kv_zset_last_in_range(z, r) : kv_zset_first_in_range(z, r);
    /* As Redis: a negative offset walks off the end, a negative limit
     * means no limit. */
    while (kv_zset_it_valid(&it) && offset--)
        rev ? kv_zset_it_prev(&it) : kv_zset_it_next(&it);
    while (kv_zset_it_valid(&it) && limit--) {
        double s = kv_zset_it_score(&it);
        if (rev ? !kv_zrange_gte_min(s, r) : !kv_zrange_lte_max(s, r))
            break;
        size_t n;
        const char *m = kv_zset_it_member(&it, &n);
        out_emit(o, m, n, s);
        rev ? kv_zset_it_prev(&it) : kv_zset_it_next(&it);
    }
}

static void range_by_lex(zout *o, const kv_zset *z, const kv_zlex_spec *r, long long offset,
                         long long limit, bool rev)
{
    out_begin(o, -1);
    kv_zset_it it = rev ? kv_zset_last_in_lex(z, r) : kv_zset_first_in_lex(z, r);
    while (kv_zset_it_valid(&it) && offset--)
        rev ? kv_zset_it_prev(&it) : kv_zset_it_next(&it);
    while (kv_zset_it_valid(&it) && limit--) {
        size_t n;
        const char *m = kv_zset_it_member(&it, &n);
        if (rev ? !kv_zlex_gte_min(m, n, r) : !kv_zlex_lte_max(m, n, r))
            break;
        out_emit(o, m, n, kv_zset_it_score(&it));
        rev ? kv_zset_it_prev(&it) : kv_zset_it_next(&it);
    }
}

/* Redis's zrangeGenericCommand(): key at argv[first], then min max and
 * options; store: ZRANGESTORE's destination is argv[1]. */
static void zrange_generic(kv_cmd_ctx *c, size_t argc, const resp_arg *argv, size_t first,
                           bool store, int type, int dir)
{
    const resp_arg *key = &argv[first];
    size_t minidx = first + 1, maxidx = first + 2;
    bool withscores = false;
    long long offset = 0, limit = -1;
    for (size_t j = first + 3; j < argc; j++) {
        size_t left = argc - j - 1;
        if (!store && kv_arg_is(&argv[j], "WITHSCORES")) {
            withscores = true;
        } else if (kv_arg_is(&argv[j], "LIMIT") && left >= 2) {
            if (!kv_arg_ll(c, &argv[j + 1], &offset, NULL) ||
                !kv_arg_ll(c, &argv[j + 2], &limit, NULL))
                return;
            j += 2;
        } else if (dir == DIR_AUTO && kv_arg_is(&argv[j], "REV")) {
            dir = DIR_REVERSE;
        } else if (type == RANGE_AUTO && kv_arg_is(&argv[j], "BYLEX")) {
            type = RANGE_LEX;
        } else if (type == RANGE_AUTO && kv_arg_is(&argv[j], "BYSCORE")) {
            type = RANGE_SCORE;
        } else {
            kv_reply_syntax(c->out);
            return;
        }
    }
    if (dir == DIR_AUTO)
        dir = DIR_FORWARD;
    if (type == RANGE_AUTO)
        type = RANGE_RANK;
    bool rev = dir == DIR_REVERSE;
    if (limit != -1 && type == RANGE_RANK) {
        resp_add_error(c->out, "ERR syntax error, LIMIT is only supported in combination with "
                               "either BYSCORE or BYLEX");
        return;
    }
    if (withscores && type == RANGE_LEX) {
        resp_add_error(c->out,
                       "ERR syntax error, WITHSCORES not supported in combination with BYLEX");
        return;
    }
    if (rev && type != RANGE_RANK) {
        size_t t = minidx;
        minidx = maxidx;
        maxidx = t;
    }
    long long start = 0, end = 0;
    kv_zrange_spec range;
    kv_zlex_spec lex;
    if (!parse_bounds(c, &argv[minidx], &argv[maxidx], type, &start, &end, &range, &lex))
        return;

    zout o = {.c = c, .store = store, .withscores = withscores};
    kv_entry *e = kv_lookup(c, key);
    if (!e) {
        if (store)
            out_end(&o, &argv[1], false);
        else
            resp_add_array(c->out, 0);
        return;
    }
    if (e->type != KV_ZSET) {
        kv_reply_wrongtype(c->out);
        return;
    }
    const kv_zset *z = kv_obj(e);
    if (type == RANGE_RANK)
        range_by_rank(&o, z, start, end, rev);
    else if (type == RANGE_SCORE)
        range_by_score(&o, z, &range, offset, limit, rev);
    else
        range_by_lex(&o, z, &lex, offset, limit, rev);
    out_end(&o, &argv[1], rev);
}

static void cmd_zrange(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    zrange_generic(c, argc, argv, 1, false, RANGE_AUTO, DIR_AUTO);
}

static void cmd_zrangestore(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    zrange_generic(c, argc, argv, 2, true, RANGE_AUTO, DIR_AUTO);
}

static void cmd_zrevrange(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    zrange_generic(c, argc, argv, 1, false, RANGE_RANK, DIR_REVERSE);
}

static void cmd_zrangebyscore(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    zrange_generic(c, argc, argv, 1, false, RANGE_SCORE, DIR_FORWARD);
}

static void cmd_zrevrangebyscore(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    zrange_generic(c, argc, argv, 1, false, RANGE_SCORE, DIR_REVERSE);
}

static void cmd_zrangebylex(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    zrange_generic(c, argc, argv, 1, false, RANGE_LEX, DIR_FORWARD);
}

static void cmd_zrevrangebylex(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    zrange_generic(c, argc, argv, 1, false, RANGE_LEX, DIR_REVERSE);
}

/* ---- ZREMRANGEBY* -------------------------------------------------------------------------- */

static void zremrange_generic(kv_cmd_ctx *c, const resp_arg *argv, int type)
{
    long long start = 0, end = 0;
    kv_zrange_spec range;
    kv_zlex_spec lex;
    if (!parse_bounds(c, &argv[2], &argv[3], type, &start, &end, &range, &lex))
        return;
    bool wrong;
    kv_zset *z = lookup_zset(c, &argv[1], &wrong, NULL);
    if (wrong)
        return;
    if (!z) {
        resp_add_int(c->out, 0);
        return;
    }
    size_t deleted;
    if (type == RANGE_RANK) {
        size_t from, to;
        if (!kv_clamp_range(start, end, kv_zset_len(z), &from, &to)) {
            resp_add_int(c->out, 0);
            return;
        }
        deleted = kv_zset_delete_rank(z, from, to);
    } else if (type == RANGE_SCORE) {
        deleted = kv_zset_delete_score(z, &range);
    } else {
        deleted = kv_zset_delete_lex(z, &lex);
    }
    if (deleted)
        kv_modified(c, &argv[1]);
    resp_add_int(c->out, (long long)deleted);
}

static void cmd_zremrangebyrank(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    (void)argc;
    zremrange_generic(c, argv, RANGE_RANK);
}

static void cmd_zremrangebyscore(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    (void)argc;
    zremrange_generic(c, argv, RANGE_SCORE);
}

static void cmd_zremrangebylex(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    (void)argc;
    zremrange_generic(c, argv, RANGE_LEX);
}

/* ---- ZPOPMIN, ZPOPMAX, ZMPOP --------------------------------------------------------------- */

void kv_zset_pop_reply(kv_cmd_ctx *c, const resp_arg *key, kv_entry *e, bool max, long count,
                       bool emit_key, bool nested)
{
    kv_zset *z = kv_obj(e);
    size_t len = kv_zset_len(z);
    size_t n = (size_t)count > len ? len : (size_t)count;
    if (emit_key) {
        resp_add_array(c->out, nested ? 2 : 2 * n + 1);
        resp_add_bulk(c->out, key->ptr, key->len);
        if (nested)
            resp_add_array(c->out, n);
    } else {
        resp_add_array(c->out, nested ? n : 2 * n);
    }
    kv_zset_it it = kv_zset_at_rank(z, 0, max);
    for (size_t i = 0; i < n; i++) {
        size_t mlen;
        const char *m = kv_zset_it_member(&it, &mlen);
        if (nested)
            resp_add_array(c->out, 2);
        resp_add_bulk(c->out, m, mlen);
        resp_add_double(c->out, c->proto, kv_zset_it_score(&it));
        max ? kv_zset_it_prev(&it) : kv_zset_it_next(&it);
    }
    kv_zset_delete_ends(z, max, n);
    kv_modified(c, key);
}

static void zpop_generic(kv_cmd_ctx *c, size_t argc, const resp_arg *argv, bool max)
{
    if (argc > 3) {
        kv_reply_syntax(c->out);
        return;
    }
    long long count = -1;
    if (argc == 3 && !arg_range(c, &argv[2], 0, LLONG_MAX, &count,
                                "ERR value is out of range, must be positive"))
        return;
    bool nested = c->proto > 2 && count != -1;
    bool wrong;
    kv_entry *e;
    kv_zset *z = lookup_zset(c, &argv[1], &wrong, &e);
    if (wrong)
        return;
    if (!z || count == 0) {
        resp_add_array(c->out, 0);
        return;
    }
    kv_zset_pop_reply(c, &argv[1], e, max, count == -1 ? 1 : (long)count, false, nested);
}

static void cmd_zpopmin(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    zpop_generic(c, argc, argv, false);
}

static void cmd_zpopmax(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    zpop_generic(c, argc, argv, true);
}

/* ZMPOP numkeys key [key ...] MIN|MAX [COUNT count] */
static void cmd_zmpop(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    long long numkeys;
    if (!arg_range(c, &argv[1], 1, LLONG_MAX, &numkeys, "ERR numkeys should be greater than 0"))
        return;
    if ((unsigned long long)numkeys >= argc - 2) {
        kv_reply_syntax(c->out);
        return;
    }
    size_t where = 2 + (size_t)numkeys;
    bool max;
    if (kv_arg_is(&argv[where], "MIN")) {
        max = false;
    } else if (kv_arg_is(&argv[where], "MAX")) {
        max = true;
    } else {
        kv_reply_syntax(c->out);
        return;
    }
    long long count = -1;
    for (size_t j = where + 1; j < argc; j++) {
        if (count == -1 && kv_arg_is(&argv[j], "COUNT") && j + 1 < argc) {
            j++;
            if (!arg_range(c, &argv[j], 1, LLONG_MAX, &count, "ERR count should be greater than 0"))
                return;
        } else {
            kv_reply_syntax(c->out);
            return;
        }
    }
    if (count == -1)
        count = 1;
    for (size_t i = 0; i < (size_t)numkeys; i++) {
        const resp_arg *key = &argv[2 + i];
        kv_entry *e = kv_lookup(c, key);
        if (!e)
            continue;
        if (e->type != KV_ZSET) {
            kv_reply_wrongtype(c->out);
            return;
        }
        kv_zset_pop_reply(c, key, e, max, (long)count, true, true);
        return;
    }
    resp_add_null_array(c->out, c->proto);
}

/* ---- ZUNION, ZINTER, ZDIFF, their STORE forms, ZINTERCARD -------------------------------------
 */

enum { OP_UNION, OP_INTER, OP_DIFF };
enum { AGG_SUM, AGG_MIN, AGG_MAX };

/* One input: a sorted set, a set (members score 1), or a missing key. */
typedef struct zsrc {
    const kv_zset *z;
    const void *set;
    size_t len;
    size_t order; /* position among the keys: a stable sort by size */
    double weight;
} zsrc;

typedef void (*member_fn)(void *arg, const char *m, size_t n, double score);

typedef struct set_walk {
    member_fn fn;
    void *arg;
} set_walk;

static void set_member(void *arg, const char *m, size_t n)
{
    set_walk *w = arg;
    w->fn(w->arg, m, n, 1.0);
}

static void src_each(const zsrc *s, member_fn fn, void *arg)
{
    if (s->z) {
        for (kv_zset_it it = kv_zset_at_rank(s->z, 0, false); kv_zset_it_valid(&it);
             kv_zset_it_next(&it)) {
            size_t n;
            const char *m = kv_zset_it_member(&it, &n);
            fn(arg, m, n, kv_zset_it_score(&it));
        }
    } else if (s->set) {
        set_walk w = {fn, arg};
        kv_set_each(s->set, set_member, &w);
    }
}

static bool src_find(const zsrc *s, const char *m, size_t n, double *score)
{
    if (s->z)
        return kv_zset_score(s->z, m, n, score);
    if (s->set && kv_set_contains((const kv_set *)s->set, m, n)) {
        *score = 1.0;
        return true;
    }
    return false;
}

static int src_cmp(const void *a, const void *b)
{
    const zsrc *x = a, *y = b;
    if (x->len != y->len)
        return x->len < y->len ? -1 : 1;
    return x->order < y->order ? -1 : x->order > y->order;
}

static void aggregate(double *target, double v, int agg)
{
    if (agg == AGG_SUM) {
        *target += v;
        /* inf + -inf: Redis makes it 0 rather than store a NaN. */
        if (isnan(*target))
            *target = 0.0;
    } else if (agg == AGG_MIN) {
        *target = v < *target ? v : *target;
    } else {
        *target = v > *target ? v : *target;
    }
}

typedef struct setop {
    zsrc *src;
    size_t nsrc;
    int op, agg;
    bool card_only;
    unsigned long long limit, card;
    zitems out;
    kv_dict *acc;       /* ZUNION's accumulator: member -> u.d */
    const zsrc *walked; /* ZUNION: the input being walked */
    bool oom, stop;
} setop;

static void inter_member(void *arg, const char *m, size_t n, double s)
{
    setop *o = arg;
    if (o->stop)
        return;
    double score = o->src[0].weight * s;
    if (isnan(score))
        score = 0;
    for (size_t j = 1; j < o->nsrc; j++) {
        double v;
        if (o->src[j].z == o->src[0].z && o->src[j].set == o->src[0].set) {
            v = s;
        } else if (!src_find(&o->src[j], m, n, &v)) {
            return;
        }
        aggregate(&score, v * o->src[j].weight, o->agg);
    }
    if (o->card_only) {
        o->card++;
        if (o->limit && o->card >= o->limit)
            o->stop = true; /* src_each still walks on, doing nothing */
        return;
    }
    (o->src[0].set ? items_push_copy : items_push)(&o->out, m, n, score);
}

static void union_member(void *arg, const char *m, size_t n, double s)
{
    setop *o = arg;
    double score = o->walked->weight * s;
    if (isnan(score))
        score = 0;
    kv_dict_entry *e = kv_dict_find(o->acc, m, n);
    if (e) {
        aggregate(&e->u.d, score, o->agg);
        return;
    }
    e = kv_dict_add(o->acc, m, n, NULL, 0);
    if (!e) {
        o->oom = true;
        return;
    }
    e->u.d = score;
}

static void diff_member(void *arg, const char *m, size_t n, double s)
{
    setop *o = arg;
    for (size_t j = 1; j < o->nsrc; j++) {
        double v;
        if ((o->src[j].z && o->src[j].z == o->src[0].z) ||
            (o->src[j].set && o->src[j].set == o->src[0].set) || src_find(&o->src[j], m, n, &v))
            return;
    }
    (o->src[0].set ? items_push_copy : items_push)(&o->out, m, n, s);
}

static void acc_item(void *arg, kv_dict_entry *e)
{
    items_push(arg, kv_dict_key(e), e->klen, e->u.d);
}

/* Redis's zunionInterDiffGenericCommand(): numkeys at argv[nk]; dst is
 * argv[1] when store. name: the command, for the numkeys error. */
static void setop_generic(kv_cmd_ctx *c, size_t argc, const resp_arg *argv, size_t nk, bool store,
                          int op, bool card_only, const char *name)
{
    long long setnum;
    if (!kv_arg_ll(c, &argv[nk], &setnum, NULL))
        return;
    if (setnum < 1) {
        resp_add_errorf(c->out, "ERR at least 1 input key is needed for '%s' command", name);
        return;
    }
    if ((unsigned long long)setnum > argc - (nk + 1)) {
        kv_reply_syntax(c->out);
        return;
    }
    setop o = {.op = op, .agg = AGG_SUM, .card_only = card_only, .nsrc = (size_t)setnum};
    o.src = calloc(o.nsrc, sizeof(*o.src));
    if (!o.src) {
        kv_reply_oom(c->out);
        return;
    }
    size_t j = nk + 1;
    for (size_t i = 0; i < o.nsrc; i++, j++) {
        zsrc *s = &o.src[i];
        s->order = i;
        s->weight = 1.0;
        kv_entry *e = kv_lookup(c, &argv[j]);
        if (!e)
            continue;
        if (e->type == KV_ZSET) {
            s->z = kv_obj(e);
            s->len = kv_zset_len(s->z);
        } else if (e->type == KV_SET) {
            s->set = kv_obj(e);
            s->len = kv_set_type.len(s->set);
        } else {
            kv_reply_wrongtype(c->out);
            goto out;
        }
    }
    bool withscores = false;
    while (j < argc) {
        size_t remaining = argc - j;
        if (op != OP_DIFF && !card_only && remaining >= o.nsrc + 1 &&
            kv_arg_is(&argv[j], "WEIGHTS")) {
            j++;
            for (size_t i = 0; i < o.nsrc; i++, j++) {
                if (!kv_arg_double(c, &argv[j], &o.src[i].weight,
                                   "ERR weight value is not a float"))
                    goto out;
            }
        } else if (op != OP_DIFF && !card_only && remaining >= 2 &&
                   kv_arg_is(&argv[j], "AGGREGATE")) {
            j++;
            if (kv_arg_is(&argv[j], "SUM")) {
                o.agg = AGG_SUM;
            } else if (kv_arg_is(&argv[j], "MIN")) {
                o.agg = AGG_MIN;
            } else if (kv_arg_is(&argv[j], "MAX")) {
                o.agg = AGG_MAX;
            } else {
                kv_reply_syntax(c->out);
                goto out;
            }
            j++;
        } else if (!store && !card_only && kv_arg_is(&argv[j], "WITHSCORES")) {
            j++;
            withscores = true;
        } else if (card_only && remaining >= 2 && kv_arg_is(&argv[j], "LIMIT")) {
            long long limit;
            if (!arg_range(c, &argv[j + 1], 0, LLONG_MAX, &limit, "ERR LIMIT can't be negative"))
                goto out;
            o.limit = (unsigned long long)limit;
            j += 2;
        } else {
            kv_reply_syntax(c->out);
            goto out;
        }
    }
    /* Smallest first, keys of equal size in their order (glibc's qsort(),
     * which Redis uses, is a stable merge sort): the order of the sums. */
    if (op != OP_DIFF)
        qsort(o.src, o.nsrc, sizeof(*o.src), src_cmp);

    if (op == OP_INTER) {
        if (o.src[0].len)
            src_each(&o.src[0], inter_member, &o);
    } else if (op == OP_DIFF) {
        if (o.src[0].len)
            src_each(&o.src[0], diff_member, &o);
    } else {
        o.acc = kv_dict_new();
        if (!o.acc) {
            kv_reply_oom(c->out);
            goto out;
        }
        for (size_t i = 0; i < o.nsrc && !o.oom; i++) {
            if (!o.src[i].len)
                continue;
            o.walked = &o.src[i];
            src_each(&o.src[i], union_member, &o);
        }
        kv_dict_each(o.acc, acc_item, &o.out);
    }
    if (o.oom || o.out.oom) {
        kv_reply_oom(c->out);
        goto out;
    }
    if (card_only) {
        resp_add_int(c->out, (long long)o.card);
        goto out;
    }
    if (o.out.n > 1)
        qsort(o.out.v, o.out.n, sizeof(*o.out.v), item_cmp);
    if (store) {
        store_items(c, &argv[1], &o.out, false);
        goto out;
    }
    reply_scored_array(c, o.out.n, withscores);
    for (size_t i = 0; i < o.out.n; i++)
        reply_scored(c, o.out.v[i].m, o.out.v[i].n, o.out.v[i].score, withscores);
out:
    items_free(&o.out);
    kv_dict_free(o.acc);
    free(o.src);
}

static void cmd_zunion(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    setop_generic(c, argc, argv, 1, false, OP_UNION, false, "zunion");
}

static void cmd_zinter(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    setop_generic(c, argc, argv, 1, false, OP_INTER, false, "zinter");
}

static void cmd_zdiff(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    setop_generic(c, argc, argv, 1, false, OP_DIFF, false, "zdiff");
}

static void cmd_zintercard(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    setop_generic(c, argc, argv, 1, false, OP_INTER, true, "zintercard");
}

static void cmd_zunionstore(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    setop_generic(c, argc, argv, 2, true, OP_UNION, false, "zunionstore");
}

static void cmd_zinterstore(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    setop_generic(c, argc, argv, 2, true, OP_INTER, false, "zinterstore");
}

static void cmd_zdiffstore(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    setop_generic(c, argc, argv, 2, true, OP_DIFF, false, "zdiffstore");
}

/* ---- ZRANDMEMBER -------------------------------------------------------------------------------
 */

static void reply_it(kv_cmd_ctx *c, const kv_zset_it *it, bool withscores)
{
    size_t n;
    const char *m = kv_zset_it_member(it, &n);
    reply_scored(c, m, n, withscores ? kv_zset_it_score(it) : 0, withscores);
}

static void collect_item(void *arg, const char *m, size_t n, double score)
{
    items_push(arg, m, n, score);
}

static void zrandmember_count(kv_cmd_ctx *c, const resp_arg *key, long long l, bool withscores)
{
    bool wrong;
    kv_zset *z = lookup_zset(c, key, &wrong, NULL);
    if (wrong)
        return;
    if (!z) {
        resp_add_array(c->out, 0);
        return;
    }
    size_t size = kv_zset_len(z);
    bool uniq = l >= 0;
    unsigned long long count = uniq ? (unsigned long long)l : -(unsigned long long)l;
    if (count == 0) {
        resp_add_array(c->out, 0);
        return;
    }
    /* With repetitions: count independent picks. */
    if (!uniq || count == 1) {
        reply_scored_array(c, count, withscores);
        while (count-- && !c->out->err) {
            kv_zset_it it = kv_zset_random(z);
            reply_it(c, &it, withscores);
        }
        return;
    }
    /* All of them: Redis walks from the highest score down. */
    if (count >= size) {
        reply_scored_array(c, size, withscores);
        for (kv_zset_it it = kv_zset_at_rank(z, 0, true); kv_zset_it_valid(&it);
             kv_zset_it_prev(&it))
            reply_it(c, &it, withscores);
        return;
    }
    reply_scored_array(c, count, withscores);
    if (!kv_zset_is_big(z) || count * 3 > size) {
        /* Few to leave out, or a small set: a partial shuffle of them all. */
        zitems all = {0};
        zsrc s = {.z = z};
        src_each(&s, collect_item, &all);
        if (all.oom) {
            items_free(&all);
            kv_reply_oom(c->out); /* after the header: the connection is lost anyway */
            return;
        }
        for (size_t i = 0; i < count; i++) {
            size_t k = i + (size_t)(kv_zset_rand() % (all.n - i));
            zitem t = all.v[i];
            all.v[i] = all.v[k];
            all.v[k] = t;
            reply_scored(c, all.v[i].m, all.v[i].n, all.v[i].score, withscores);
        }
        items_free(&all);
        return;
    }
    /* Few to pick from many: random picks, skipping repeats. */
    kv_dict *seen = kv_dict_new();
    size_t added = 0;
    while (added < count && seen) {
        kv_zset_it it = kv_zset_random(z);
        size_t n;
        const char *m = kv_zset_it_member(&it, &n);
        if (kv_dict_find(seen, m, n))
            continue;
        if (!kv_dict_add(seen, m, n, NULL, 0))
            break;
        added++;
        reply_it(c, &it, withscores);
    }
    kv_dict_free(seen);
    if (added < count)
        kv_reply_oom(c->out);
}

static void cmd_zrandmember(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    if (argc >= 3) {
        long long l;
        if (!kv_arg_ll(c, &argv[2], &l, NULL))
            return;
        bool withscores = false;
        if (argc > 4 || (argc == 4 && !kv_arg_is(&argv[3], "WITHSCORES"))) {
            kv_reply_syntax(c->out);
            return;
        }
        if (argc == 4) {
            withscores = true;
            if (l < LLONG_MIN / 2 || l > LLONG_MAX / 2) {
                resp_add_error(c->out, "ERR value is out of range");
                return;
            }
        }
        zrandmember_count(c, &argv[1], l, withscores);
        return;
    }
    bool wrong;
    kv_zset *z = lookup_zset(c, &argv[1], &wrong, NULL);
    if (wrong)
        return;
    if (!z) {
        resp_add_null(c->out, c->proto);
        return;
    }
    kv_zset_it it = kv_zset_random(z);
    reply_it(c, &it, false);
}

/* ---- ZSCAN -------------------------------------------------------------------------------------
 */

/* A score as ZSCAN shows it: Redis's listpack keeps integral scores as
 * integers (printed so), the skip list's are printed with "%.17Lg". */
static int fmt_scan_score(char *buf, size_t cap, double d, bool small)
{
    if (isinf(d))
        return snprintf(buf, cap, "%s", d > 0 ? "inf" : "-inf");
    if (small && d >= (double)(-LLONG_MAX / 2) && d <= (double)(LLONG_MAX / 2)) {
        long long v = (long long)d;
        if ((double)v == d)
            return snprintf(buf, cap, "%lld", v);
    }
    return snprintf(buf, cap, "%.17g", d);
}

static void scan_entry(void *arg, kv_dict_entry *e)
{
    items_push(arg, kv_dict_key(e), e->klen, ((kv_zsl_node *)e->u.p)->score);
}

static void cmd_zscan(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    uint64_t cursor;
    long long count;
    const resp_arg *pat;
    kv_entry *e = kv_scan_key(c, argc, argv, KV_ZSET, &cursor, &count, &pat);
    if (!e)
        return;
    kv_zset *z = kv_obj(e);
    bool small = !kv_zset_is_big(z);
    zitems got = {0};
    if (small) {
        /* A small set goes whole, in one call. */
        cursor = 0;
        zsrc src = {.z = z};
        src_each(&src, collect_item, &got);
    } else {
        /* Redis counts members and scores against COUNT. */
        cursor = kv_dict_scan(z->sl->dict, cursor, (size_t)count / 2 + (size_t)(count & 1),
                              scan_entry, &got);
    }
    if (got.oom) {
        items_free(&got);
        kv_reply_oom(c->out);
        return;
    }
    size_t n = 0;
    for (size_t i = 0; i < got.n; i++) {
        if (pat && !kv_glob_match(pat->ptr, pat->len, got.v[i].m, got.v[i].n, false))
            continue;
        got.v[n++] = got.v[i];
    }
    char buf[64];
    resp_add_array(c->out, 2);
    resp_add_bulk(c->out, buf,
                  (size_t)snprintf(buf, sizeof(buf), "%llu", (unsigned long long)cursor));
    resp_add_array(c->out, 2 * n);
    for (size_t i = 0; i < n; i++) {
        resp_add_bulk(c->out, got.v[i].m, got.v[i].n);
        int len = fmt_scan_score(buf, sizeof(buf), got.v[i].score, small);
        resp_add_bulk(c->out, buf, (size_t)len);
    }
    items_free(&got);
}

/* ---- for other modules ----------------------------------------------------------------------- */

size_t kv_zset_count(const void *obj)
{
    return kv_zset_len(obj);
}

void kv_zset_visit(const void *obj, bool reverse, size_t start, size_t count,
                   void (*fn)(void *arg, const char *m, size_t n, double score), void *arg)
{
    kv_zset_it it = kv_zset_at_rank(obj, start, reverse);
    for (; count-- && kv_zset_it_valid(&it);
         reverse ? kv_zset_it_prev(&it) : kv_zset_it_next(&it)) {
        size_t n;
        const char *m = kv_zset_it_member(&it, &n);
        fn(arg, m, n, kv_zset_it_score(&it));
    }
}

/* ---- key positions --------------------------------------------------------------------------- */

/* numkeys at argv[nk], then that many keys; dst: argv[1] is a key too. */
static int keys_numkeys(size_t argc, const resp_arg *argv, size_t nk, bool dst, size_t *idx,
                        size_t max)
{
    long long n;
    if (nk >= argc || !resp_string2ll(argv[nk].ptr, argv[nk].len, &n) || n < 1 ||
        (unsigned long long)n > argc - nk - 1)
        return -1;
    size_t k = 0;
    if (dst && k < max)
        idx[k++] = 1;
    for (size_t i = 0; i < (size_t)n && k < max; i++)
        idx[k++] = nk + 1 + i;
    return (int)k;
}

static int keys_nk1(size_t argc, const resp_arg *argv, size_t *idx, size_t max)
{
    return keys_numkeys(argc, argv, 1, false, idx, max);
}

static int keys_store(size_t argc, const resp_arg *argv, size_t *idx, size_t max)
{
    return keys_numkeys(argc, argv, 2, true, idx, max);
}

#define W KV_CMD_WRITE
#define WD (KV_CMD_WRITE | KV_CMD_DENYOOM)
#define R KV_CMD_READONLY
#define F KV_CMD_FAST
#define WCAT "@write @sortedset @slow"
#define WFCAT "@write @sortedset @fast"
#define RCAT "@read @sortedset @slow"
#define RFCAT "@read @sortedset @fast"
const kv_command kv_zset_commands[] = {
    {"zadd", -4, WD | F, 1, 1, 1, cmd_zadd, NULL, WFCAT},
    {"zincrby", 4, WD | F, 1, 1, 1, cmd_zincrby, NULL, WFCAT},
    {"zrem", -3, W | F, 1, 1, 1, cmd_zrem, NULL, WFCAT},
    {"zscore", 3, R | F, 1, 1, 1, cmd_zscore, NULL, RFCAT},
    {"zmscore", -3, R | F, 1, 1, 1, cmd_zmscore, NULL, RFCAT},
    {"zcard", 2, R | F, 1, 1, 1, cmd_zcard, NULL, RFCAT},
    {"zcount", 4, R | F, 1, 1, 1, cmd_zcount, NULL, RFCAT},
    {"zlexcount", 4, R | F, 1, 1, 1, cmd_zlexcount, NULL, RFCAT},
    {"zrank", 3, R | F, 1, 1, 1, cmd_zrank, NULL, RFCAT},
    {"zrevrank", 3, R | F, 1, 1, 1, cmd_zrevrank, NULL, RFCAT},
    {"zrange", -4, R, 1, 1, 1, cmd_zrange, NULL, RCAT},
    {"zrangestore", -5, WD, 1, 2, 1, cmd_zrangestore, NULL, WCAT},
    {"zrangebyscore", -4, R, 1, 1, 1, cmd_zrangebyscore, NULL, RCAT},
    {"zrevrange", -4, R, 1, 1, 1, cmd_zrevrange, NULL, RCAT},
    {"zrevrangebyscore", -4, R, 1, 1, 1, cmd_zrevrangebyscore, NULL, RCAT},
    {"zrangebylex", -4, R, 1, 1, 1, cmd_zrangebylex, NULL, RCAT},
    {"zrevrangebylex", -4, R, 1, 1, 1, cmd_zrevrangebylex, NULL, RCAT},
    {"zremrangebyscore", 4, W, 1, 1, 1, cmd_zremrangebyscore, NULL, WCAT},
    {"zremrangebyrank", 4, W, 1, 1, 1, cmd_zremrangebyrank, NULL, WCAT},
    {"zremrangebylex", 4, W, 1, 1, 1, cmd_zremrangebylex, NULL, WCAT},
    {"zpopmin", -2, W | F, 1, 1, 1, cmd_zpopmin, NULL, WFCAT},
    {"zpopmax", -2, W | F, 1, 1, 1, cmd_zpopmax, NULL, WFCAT},
    {"zmpop", -4, W, 0, 0, 0, cmd_zmpop, keys_nk1, WCAT},
    {"zunion", -3, R, 0, 0, 0, cmd_zunion, keys_nk1, RCAT},
    {"zinter", -3, R, 0, 0, 0, cmd_zinter, keys_nk1, RCAT},
    {"zdiff", -3, R, 0, 0, 0, cmd_zdiff, keys_nk1, RCAT},
    {"zintercard", -3, R, 0, 0, 0, cmd_zintercard, keys_nk1, RCAT},
    {"zunionstore", -4, WD, 1, 1, 1, cmd_zunionstore, keys_store, WCAT},
    {"zinterstore", -4, WD, 1, 1, 1, cmd_zinterstore, keys_store, WCAT},
    {"zdiffstore", -4, WD, 1, 1, 1, cmd_zdiffstore, keys_store, WCAT},
    {"zrandmember", -2, R, 1, 1, 1, cmd_zrandmember, NULL, RCAT},
    {"zscan", -3, R, 1, 1, 1, cmd_zscan, NULL, RCAT},
    {NULL},
};
