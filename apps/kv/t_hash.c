/* Hash commands and the hash object (see t_hash.h). Replies, errors and
 * the encoding rules are Redis 7.0's (t_hash.c there), checked against
 * redis-server 7.0.15.
 *
 * The object needs no header of its own: the small encoding is the
 * kv_pack itself and the large one the kv_dict pointer with its low bit
 * set (both come from malloc, so that bit is free). A small hash thus
 * costs its pack and nothing more, and both encodings keep their byte
 * count up to date, which is what mem() answers. */
#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dict.h"
#include "kv.h"
#include "pack.h"
#include "t_hash.h"

/* ---- thresholds ------------------------------------------------------------ */

size_t kv_hash_max_listpack_entries = 512;
size_t kv_hash_max_listpack_value = 64;

void kv_hash_set_max_listpack_entries(size_t n)
{
    __atomic_store_n(&kv_hash_max_listpack_entries, n, __ATOMIC_RELAXED);
}

void kv_hash_set_max_listpack_value(size_t n)
{
    __atomic_store_n(&kv_hash_max_listpack_value, n, __ATOMIC_RELAXED);
}

static size_t max_entries(void)
{
    return __atomic_load_n(&kv_hash_max_listpack_entries, __ATOMIC_RELAXED);
}

static size_t max_value(void)
{
    return __atomic_load_n(&kv_hash_max_listpack_value, __ATOMIC_RELAXED);
}

/* Redis's lpSafeToAdd(): a listpack never grows past 1 GiB, whatever the
 * thresholds say (kv_pack counts its bytes in 32 bits). */
#define PACK_MAX_SAFE_BYTES (1u << 30)

/* ---- the object ----------------------------------------------------------- */

#define DICT_TAG ((uintptr_t)1)

static inline bool is_dict(const void *obj)
{
    return ((uintptr_t)obj & DICT_TAG) != 0;
}

static inline kv_dict *dict_of(const void *obj)
{
    return (kv_dict *)((uintptr_t)obj & ~DICT_TAG);
}

static inline void *dict_obj(kv_dict *d)
{
    assert(((uintptr_t)d & DICT_TAG) == 0);
    return (void *)((uintptr_t)d | DICT_TAG);
}

static inline kv_pack *pack_of(const void *obj)
{
    return (kv_pack *)obj;
}

void *kv_hash_new(void)
{
    return kv_pack_new();
}

static void obj_free(void *obj)
{
    if (is_dict(obj))
        kv_dict_free(dict_of(obj));
    else
        kv_pack_free(pack_of(obj));
}

static void *obj_dup(const void *obj)
{
    if (is_dict(obj)) {
        kv_dict *d = kv_dict_dup(dict_of(obj));
        return d ? dict_obj(d) : NULL;
    }
    return kv_pack_dup(pack_of(obj));
}

static size_t obj_mem(const void *obj)
{
    return is_dict(obj) ? kv_dict_mem(dict_of(obj)) : kv_pack_mem(pack_of(obj));
}

static const char *obj_encoding(const void *obj)
{
    return is_dict(obj) ? "hashtable" : "listpack";
}

static size_t obj_len(const void *obj)
{
    return is_dict(obj) ? kv_dict_count(dict_of(obj)) : kv_pack_count(pack_of(obj)) / 2;
}

const kv_type_ops kv_hash_type = {"hash", obj_free, obj_dup, obj_mem, obj_encoding, obj_len};

/* The position of field f in a small hash, or KV_PACK_END. */
static size_t pack_find(const kv_pack *p, const char *f, size_t flen)
{
    return kv_pack_find(p, kv_pack_first(p), f, flen, 1);
}

bool kv_hash_get(const void *obj, const char *f, size_t flen, const char **v, size_t *vlen)
{
    if (is_dict(obj)) {
        kv_dict_entry *e = kv_dict_find(dict_of(obj), f, flen);
        if (!e)
            return false;
        *v = kv_dict_val(e);
        *vlen = e->vlen;
        return true;
    }
    const kv_pack *p = pack_of(obj);
    size_t pos = pack_find(p, f, flen);
    if (pos == KV_PACK_END)
        return false;
    *v = kv_pack_get(p, kv_pack_next(p, pos), vlen);
    return true;
}

/* Small to large (Redis's hashTypeConvertListpack()). On out-of-memory
 * the hash stays small and intact. */
static int to_dict(void **obj)
{
    kv_pack *p = pack_of(*obj);
    kv_dict *d = kv_dict_new();
    if (!d)
        return -ENOMEM;
    for (size_t pos = kv_pack_first(p); pos != KV_PACK_END;) {
        size_t flen, vlen;
        const char *f = kv_pack_get(p, pos, &flen);
        pos = kv_pack_next(p, pos);
        const char *v = kv_pack_get(p, pos, &vlen);
        pos = kv_pack_next(p, pos);
        if (!kv_dict_add(d, f, flen, v, vlen)) {
            kv_dict_free(d);
            return -ENOMEM;
        }
    }
    kv_pack_free(p);
    *obj = dict_obj(d);
    return 0;
}

/* Whether adding bytes to a small hash keeps its pack within bounds. */
static bool pack_room(const void *obj, size_t bytes)
{
    return kv_pack_mem(pack_of(obj)) + bytes <= PACK_MAX_SAFE_BYTES;
}

/* Redis's hashTypeTryConversion(): before a write of the arguments args[0,
 * n) (fields and values), a small hash goes large if any is too long for
 * it, whether or not the field turns out to exist. */
static int try_conversion(void **obj, const resp_arg *args, size_t n)
{
    if (is_dict(*obj))
        return 0;
    size_t max = max_value(), sum = 0;
    for (size_t i = 0; i < n; i++) {
        if (args[i].len > max)
            return to_dict(obj);
        sum += args[i].len;
    }
    return pack_room(*obj, sum) ? 0 : to_dict(obj);
}

/* The end of the element at pos: where the next one starts. */
static size_t pack_end_of(const kv_pack *p, size_t pos)
{
    size_t next = kv_pack_next(p, pos);
    return next == KV_PACK_END ? p->bytes : next;
}

/* Removes the k elements in the pack's bytes [from, to). Never fails.
 * Written here rather than with kv_pack_delete(), which as of this writing
 * moves the bytes after the deleted range from the wrong offset. */
static void pack_cut(kv_pack **pp, size_t from, size_t to, size_t k)
{
    kv_pack *p = *pp;
    memmove(p->data + from, p->data + to, p->bytes - to);
    p->bytes -= (uint32_t)(to - from);
    p->count -= (uint32_t)k;
    kv_pack *q = realloc(p, sizeof(*p) + p->bytes);
    if (q) /* else the larger block still holds everything */
        *pp = q;
}

/* Replaces the value at vpos with v. Returns 0 or -ENOMEM (unchanged). */
static int pack_set_value(kv_pack **pp, size_t vpos, const char *v, size_t vlen)
{
    size_t old;
    char *cur = (char *)kv_pack_get(*pp, vpos, &old);
    if (old == vlen) {
        /* Same length, same length bytes: only the bytes change. This is
         * HSET's common case (counters, flags, fixed-size values). */
        memcpy(cur, v, vlen);
        return 0;
    }
    /* The new value goes in before the old one, which is then cut out, so
     * that a failure leaves the hash as it was. (Not kv_pack_replace(): as
     * of this writing it corrupts the pack when the element shrinks.) */
    if (kv_pack_insert(pp, vpos, v, vlen) == KV_PACK_END)
        return -ENOMEM;
    size_t from = kv_pack_next(*pp, vpos);
    pack_cut(pp, from, pack_end_of(*pp, from), 1);
    return 0;
}

int kv_hash_set(void **obj, const char *f, size_t flen, const char *v, size_t vlen)
{
    /* HINCRBY and HINCRBYFLOAT reach here without try_conversion(). */
    if (!is_dict(*obj) &&
        (flen > max_value() || vlen > max_value() || !pack_room(*obj, flen + vlen + 20))) {
        if (to_dict(obj))
            return -ENOMEM;
    }
    if (is_dict(*obj)) {
        bool added;
        if (!kv_dict_set(dict_of(*obj), f, flen, v, vlen, &added))
            return -ENOMEM;
        return added;
    }
    kv_pack *p = pack_of(*obj);
    size_t pos = pack_find(p, f, flen);
    int r = 1;
    if (pos != KV_PACK_END) {
        r = pack_set_value(&p, kv_pack_next(p, pos), v, vlen);
        *obj = p;
        if (r < 0)
            return r;
    } else {
        size_t fpos = kv_pack_push(&p, f, flen);
        if (fpos == KV_PACK_END)
            return -ENOMEM;
        if (kv_pack_push(&p, v, vlen) == KV_PACK_END) {
            pack_cut(&p, fpos, p->bytes, 1);
            *obj = p;
            return -ENOMEM;
        }
        *obj = p;
    }
    /* After an update too, as Redis: a hash left larger than a lowered
     * limit converts on its next write. If the conversion fails the hash
     * stays small, correct if larger than the limit; a later write tries
     * again. */
    if (kv_pack_count(p) / 2 > max_entries())
        to_dict(obj);
    return r;
}

bool kv_hash_del(void **obj, const char *f, size_t flen)
{
    if (is_dict(*obj))
        return kv_dict_delete(dict_of(*obj), f, flen, NULL);
    kv_pack *p = pack_of(*obj);
    size_t pos = pack_find(p, f, flen);
    if (pos == KV_PACK_END)
        return false;
    pack_cut(&p, pos, pack_end_of(p, kv_pack_next(p, pos)), 2);
    *obj = p;
    return true;
}

void kv_hash_iter_init(kv_hash_iter *it, const void *obj)
{
    it->_obj = obj;
    it->_bucket = 0;
    it->_next = NULL;
    it->_pos = KV_PACK_END;
    if (is_dict(obj))
        it->_next = dict_of(obj)->b[0];
    else
        it->_pos = kv_pack_first(pack_of(obj));
}

bool kv_hash_iter_next(kv_hash_iter *it, const char **f, size_t *flen, const char **v, size_t *vlen)
{
    if (is_dict(it->_obj)) {
        const kv_dict *d = dict_of(it->_obj);
        kv_dict_entry *e = (kv_dict_entry *)it->_next;
        while (!e && it->_bucket < d->mask)
            e = d->b[++it->_bucket];
        if (!e)
            return false;
        it->_next = e->next;
        *f = kv_dict_key(e);
        *flen = e->klen;
        *v = kv_dict_val(e);
        *vlen = e->vlen;
        return true;
    }
    const kv_pack *p = pack_of(it->_obj);
    if (it->_pos == KV_PACK_END)
        return false;
    *f = kv_pack_get(p, it->_pos, flen);
    size_t vpos = kv_pack_next(p, it->_pos);
    *v = kv_pack_get(p, vpos, vlen);
    it->_pos = kv_pack_next(p, vpos);
    return true;
}

/* ---- helpers for the commands ------------------------------------------------- */

/* A per-shard generator for HRANDFIELD (splitmix64): no lock, unlike
 * random(), and nothing shared between shards. */
static __thread uint64_t rng_state;

static uint64_t rng_next(void)
{
    if (!rng_state) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        rng_state = ((uint64_t)ts.tv_nsec << 32) ^ (uint64_t)ts.tv_sec ^ (uintptr_t)&rng_state;
    }
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in [0, n), n > 0 (the modulo bias, n / 2^64, is negligible). */
static uint64_t rng_below(uint64_t n)
{
    return rng_next() % n;
}

static kv_entry *lookup_read(kv_cmd_ctx *c, const resp_arg *key, bool *wrong)
{
    return kv_lookup_type(c, key, KV_HASH, wrong);
}

/* A hash opened for writing: the key's entry (NULL while the key is new)
 * and its object, which moves as the pack grows. */
typedef struct wref {
    kv_entry *e;
    void *obj;
} wref;

/* Redis's hashTypeLookupWriteOrCreate(): key's hash, or a new empty one.
 * Returns false after replying WRONGTYPE or OOM. */
static bool open_write(kv_cmd_ctx *c, const resp_arg *key, wref *w)
{
    bool wrong;
    w->e = lookup_read(c, key, &wrong);
    if (wrong)
        return false;
    w->obj = w->e ? kv_obj(w->e) : kv_hash_new();
    if (!w->obj) {
        kv_reply_oom(c->out);
        return false;
    }
    return true;
}

/* After a write: stores the object back in the entry and tells the
 * keyspace (which deletes the key if the hash became empty), or makes the
 * new hash a key. Returns false after replying OOM when the key could not
 * be added. */
static bool close_write(kv_cmd_ctx *c, const resp_arg *key, wref *w)
{
    if (w->e) {
        kv_set_obj(w->e, w->obj);
        kv_modified(c, key);
        return true;
    }
    if (obj_len(w->obj) == 0) {
        obj_free(w->obj);
        return true;
    }
    if (!kv_add_obj(c, key, KV_HASH, w->obj)) {
        obj_free(w->obj);
        kv_reply_oom(c->out);
        return false;
    }
    return true;
}

/* A write that changed nothing: a new hash is dropped. */
static void abandon_write(wref *w)
{
    if (!w->e)
        obj_free(w->obj);
}

/* ---- HSET HMSET HSETNX ----------------------------------------------------------- */

static void hset_generic(kv_cmd_ctx *c, size_t argc, const resp_arg *argv, const char *name)
{
    if (argc % 2 == 1) {
        resp_add_errorf(c->out, "ERR wrong number of arguments for '%s' command", name);
        return;
    }
    wref w;
    if (!open_write(c, &argv[1], &w))
        return;
    int err = try_conversion(&w.obj, argv + 2, argc - 2);
    long long created = 0;
    for (size_t i = 2; i < argc && !err; i += 2) {
        int r = kv_hash_set(&w.obj, argv[i].ptr, argv[i].len, argv[i + 1].ptr, argv[i + 1].len);
        if (r < 0)
            err = r;
        else
            created += r;
    }
    if (!close_write(c, &argv[1], &w))
        return;
    if (err)
        kv_reply_oom(c->out);
    else if (name[1] == 'm')
        resp_add_status(c->out, "OK");
    else
        resp_add_int(c->out, created);
}

static void cmd_hset(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    hset_generic(c, argc, argv, "hset");
}

static void cmd_hmset(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    hset_generic(c, argc, argv, "hmset");
}

static void cmd_hsetnx(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    (void)argc;
    wref w;
    if (!open_write(c, &argv[1], &w))
        return;
    const char *v;
    size_t vlen;
    if (kv_hash_get(w.obj, argv[2].ptr, argv[2].len, &v, &vlen)) {
        abandon_write(&w);
        resp_add_int(c->out, 0);
        return;
    }
    int err = try_conversion(&w.obj, argv + 2, 2);
    if (!err)
        err = kv_hash_set(&w.obj, argv[2].ptr, argv[2].len, argv[3].ptr, argv[3].len);
    if (!close_write(c, &argv[1], &w))
        return;
    if (err < 0)
        kv_reply_oom(c->out);
    else
        resp_add_int(c->out, 1);
}

/* ---- reads of one field ------------------------------------------------------------ */

/* Field argv[2] of key argv[1]: true with *v set, false when the key or
 * the field is absent (*wrong: WRONGTYPE was replied). */
static bool get_field(kv_cmd_ctx *c, const resp_arg *argv, const char **v, size_t *vlen,
                      bool *wrong)
{
    kv_entry *e = lookup_read(c, &argv[1], wrong);
    return e && kv_hash_get(kv_obj(e), argv[2].ptr, argv[2].len, v, vlen);
}

static void cmd_hget(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    (void)argc;
    const char *v;
    size_t vlen;
    bool wrong;
    if (get_field(c, argv, &v, &vlen, &wrong))
        resp_add_bulk(c->out, v, vlen);
    else if (!wrong)
        resp_add_null(c->out, c->proto);
}

/* HEXISTS (1 or 0) and HSTRLEN (the value's length, 0 when missing). */
static void field_int(kv_cmd_ctx *c, const resp_arg *argv, bool want_len)
{
    const char *v;
    size_t vlen;
    bool wrong;
    bool found = get_field(c, argv, &v, &vlen, &wrong);
    if (!wrong)
        resp_add_int(c->out, !found ? 0 : want_len ? (long long)vlen : 1);
}

static void cmd_hexists(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    (void)argc;
    field_int(c, argv, false);
}

static void cmd_hstrlen(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    (void)argc;
    field_int(c, argv, true);
}

static void cmd_hmget(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    bool wrong;
    kv_entry *e = lookup_read(c, &argv[1], &wrong);
    if (wrong)
        return;
    resp_add_array(c->out, argc - 2);
    for (size_t i = 2; i < argc; i++) {
        const char *v;
        size_t vlen;
        if (e && kv_hash_get(kv_obj(e), argv[i].ptr, argv[i].len, &v, &vlen))
            resp_add_bulk(c->out, v, vlen);
        else
            resp_add_null(c->out, c->proto);
    }
}

static void cmd_hlen(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    (void)argc;
    bool wrong;
    kv_entry *e = lookup_read(c, &argv[1], &wrong);
    if (!wrong)
        resp_add_int(c->out, e ? (long long)obj_len(kv_obj(e)) : 0);
}

/* ---- HDEL ------------------------------------------------------------------------ */

static void cmd_hdel(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    bool wrong;
    kv_entry *e = lookup_read(c, &argv[1], &wrong);
    if (wrong)
        return;
    if (!e) {
        resp_add_int(c->out, 0);
        return;
    }
    void *obj = kv_obj(e);
    long long deleted = 0;
    for (size_t i = 2; i < argc && obj_len(obj); i++)
        deleted += kv_hash_del(&obj, argv[i].ptr, argv[i].len);
    if (deleted) {
        kv_set_obj(e, obj);
        kv_modified(c, &argv[1]); /* deletes the key if the hash is now empty */
    }
    resp_add_int(c->out, deleted);
}

/* ---- HINCRBY HINCRBYFLOAT --------------------------------------------------------- */

static void cmd_hincrby(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    (void)argc;
    long long incr, value = 0;
    if (!kv_arg_ll(c, &argv[3], &incr, NULL))
        return;
    wref w;
    if (!open_write(c, &argv[1], &w))
        return;
    const char *v;
    size_t vlen;
    if (kv_hash_get(w.obj, argv[2].ptr, argv[2].len, &v, &vlen) &&
        !resp_string2ll(v, vlen, &value)) {
        abandon_write(&w);
        resp_add_error(c->out, "ERR hash value is not an integer");
        return;
    }
    if ((incr < 0 && value < 0 && incr < LLONG_MIN - value) ||
        (incr > 0 && value > 0 && incr > LLONG_MAX - value)) {
        abandon_write(&w);
        resp_add_error(c->out, "ERR increment or decrement would overflow");
        return;
    }
    value += incr;
    char buf[RESP_LL_CHARS];
    int n = resp_fmt_ll(buf, value);
    int err = kv_hash_set(&w.obj, argv[2].ptr, argv[2].len, buf, (size_t)n);
    if (!close_write(c, &argv[1], &w))
        return;
    if (err < 0)
        kv_reply_oom(c->out);
    else
        resp_add_int(c->out, value);
}

static void cmd_hincrbyfloat(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    (void)argc;
    long double incr, value = 0;
    if (!kv_string2ld(argv[3].ptr, argv[3].len, &incr)) {
        kv_reply_not_float(c->out);
        return;
    }
    if (isnan(incr) || isinf(incr)) {
        resp_add_error(c->out, "ERR value is NaN or Infinity");
        return;
    }
    wref w;
    if (!open_write(c, &argv[1], &w))
        return;
    const char *v;
    size_t vlen;
    if (kv_hash_get(w.obj, argv[2].ptr, argv[2].len, &v, &vlen) && !kv_string2ld(v, vlen, &value)) {
        abandon_write(&w);
        resp_add_error(c->out, "ERR hash value is not a float");
        return;
    }
    value += incr;
    if (isnan(value) || isinf(value)) {
        abandon_write(&w);
        resp_add_error(c->out, "ERR increment would produce NaN or Infinity");
        return;
    }
    char buf[RESP_LONG_DOUBLE_CHARS];
    int n = resp_fmt_long_double_human(buf, sizeof(buf), value);
    if (n < 0)
        n = 0; /* cannot happen: the buffer holds any finite long double */
    int err = kv_hash_set(&w.obj, argv[2].ptr, argv[2].len, buf, (size_t)n);
    if (!close_write(c, &argv[1], &w))
        return;
    if (err < 0)
        kv_reply_oom(c->out);
    else
        resp_add_bulk(c->out, buf, (size_t)n); /* a bulk string in RESP3 too, as Redis */
}

/* ---- HGETALL HKEYS HVALS ---------------------------------------------------------- */

static void getall(kv_cmd_ctx *c, const resp_arg *key, bool keys, bool vals)
{
    bool wrong;
    kv_entry *e = lookup_read(c, key, &wrong);
    if (wrong)
        return;
    size_t n = e ? obj_len(kv_obj(e)) : 0;
    if (keys && vals)
        resp_add_map(c->out, c->proto, n);
    else
        resp_add_array(c->out, n);
    if (!e)
        return;
    kv_hash_iter it;
    const char *f, *v;
    size_t flen, vlen;
    kv_hash_iter_init(&it, kv_obj(e));
    while (kv_hash_iter_next(&it, &f, &flen, &v, &vlen)) {
        if (keys)
            resp_add_bulk(c->out, f, flen);
        if (vals)
            resp_add_bulk(c->out, v, vlen);
    }
}

static void cmd_hgetall(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    (void)argc;
    getall(c, &argv[1], true, true);
}

static void cmd_hkeys(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    (void)argc;
    getall(c, &argv[1], true, false);
}

static void cmd_hvals(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    (void)argc;
    getall(c, &argv[1], false, true);
}

/* ---- HSCAN ------------------------------------------------------------------------- */

/* The start of a SCAN reply: the array of two and the next cursor. */
static void reply_cursor(kv_cmd_ctx *c, unsigned long cursor)
{
    char buf[RESP_LL_CHARS];
    int n = snprintf(buf, sizeof(buf), "%lu", cursor);
    resp_add_array(c->out, 2);
    resp_add_bulk(c->out, buf, (size_t)n);
}

static void cmd_hscan(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    uint64_t cursor;
    long long count;
    const resp_arg *pat;
    kv_entry *e = kv_scan_key(c, argc, argv, KV_HASH, &cursor, &count, &pat);
    if (!e)
        return;
    const void *obj = kv_obj(e);
    if (!is_dict(obj)) {
        /* A small hash answers whole, with cursor 0, whatever the cursor. */
        reply_cursor(c, 0);
        size_t at = resp_add_deferred(c->out), n = 0;
        kv_hash_iter it;
        const char *f, *v;
        size_t flen, vlen;
        kv_hash_iter_init(&it, obj);
        while (kv_hash_iter_next(&it, &f, &flen, &v, &vlen)) {
            if (pat && !kv_glob_match(pat->ptr, pat->len, f, flen, false))
                continue;
            resp_add_bulk(c->out, f, flen);
            resp_add_bulk(c->out, v, vlen);
            n += 2;
        }
        resp_set_deferred_array(c->out, at, n);
        return;
    }
    /* Redis's loop: one bucket per step until count fields (Redis doubles
     * COUNT for a hash and counts fields and values) or twenty times count
     * buckets; the cursor comes first in the reply, so the entries are
     * collected first. */
    const kv_dict *d = dict_of(obj);
    const kv_dict_entry **found = NULL;
    size_t nfound = 0, cap = 0;
    long long maxiter = count > LLONG_MAX / 20 ? LLONG_MAX : count * 20;
    do {
        for (const kv_dict_entry *de = d->b[cursor & d->mask]; de; de = de->next) {
            if (nfound == cap) {
                size_t ncap = cap ? cap * 2 : 16;
                const kv_dict_entry **nf = realloc(found, ncap * sizeof(*nf));
                if (!nf) {
                    free(found);
                    kv_reply_oom(c->out);
                    return;
                }
                found = nf;
                cap = ncap;
            }
            found[nfound++] = de;
        }
        cursor = kv_cursor_next(cursor, d->mask);
    } while (cursor && maxiter-- && nfound < (unsigned long long)count);
    reply_cursor(c, cursor);
    size_t at = resp_add_deferred(c->out), n = 0;
    for (size_t i = 0; i < nfound; i++) {
        const kv_dict_entry *de = found[i];
        if (pat && !kv_glob_match(pat->ptr, pat->len, kv_dict_key(de), de->klen, false))
            continue;
        resp_add_bulk(c->out, kv_dict_key(de), de->klen);
        resp_add_bulk(c->out, kv_dict_key(de) + de->klen, de->vlen);
        n += 2;
    }
    resp_set_deferred_array(c->out, at, n);
    free(found);
}

/* ---- HRANDFIELD -------------------------------------------------------------------- */

/* Redis answers a negative count of any size, building a reply of that
 * many elements; keel refuses one past this many instead of exhausting
 * memory (with the smallest elements it is already 512 MiB). */
#define RANDFIELD_MAX_REPLY_ELEMENTS (RESP_MAX_BULK_BYTES / 8)

/* One element of HRANDFIELD's reply: the field, or with WITHVALUES the
 * field and value, flat in RESP2 and as a pair in RESP3. */
static void reply_pair(kv_cmd_ctx *c, bool withvalues, const char *f, size_t flen, const char *v,
                       size_t vlen)
{
    if (withvalues && c->proto > 2)
        resp_add_array(c->out, 2);
    resp_add_bulk(c->out, f, flen);
    if (withvalues)
        resp_add_bulk(c->out, v, vlen);
}

static void reply_pairs_len(kv_cmd_ctx *c, size_t n, bool withvalues)
{
    resp_add_array(c->out, withvalues && c->proto == 2 ? n * 2 : n);
}

static void reply_dict_entry(kv_cmd_ctx *c, bool withvalues, const kv_dict_entry *de)
{
    reply_pair(c, withvalues, kv_dict_key(de), de->klen, kv_dict_key(de) + de->klen, de->vlen);
}

static void reply_pack_pair(kv_cmd_ctx *c, bool withvalues, const kv_pack *p, size_t pos)
{
    size_t flen, vlen;
    const char *f = kv_pack_get(p, pos, &flen);
    const char *v = kv_pack_get(p, kv_pack_next(p, pos), &vlen);
    reply_pair(c, withvalues, f, flen, v, vlen);
}

/* The positions of a small hash's fields, for picking at random; NULL on
 * out-of-memory. */
static size_t *pack_fields(const kv_pack *p)
{
    size_t n = kv_pack_count(p) / 2, i = 0;
    size_t *pos = malloc((n ? n : 1) * sizeof(*pos));
    if (!pos)
        return NULL;
    for (size_t q = kv_pack_first(p); q != KV_PACK_END; q = kv_pack_next(p, kv_pack_next(p, q)))
        pos[i++] = q;
    return pos;
}

/* count picks with repetition, in random order (a negative count, or 1). */
static void randfield_repeat(kv_cmd_ctx *c, const void *obj, size_t count, bool withvalues)
{
    if (is_dict(obj)) {
        reply_pairs_len(c, count, withvalues);
        while (count--)
            reply_dict_entry(c, withvalues, kv_dict_random(dict_of(obj)));
        return;
    }
    const kv_pack *p = pack_of(obj);
    size_t n = kv_pack_count(p) / 2;
    size_t *pos = pack_fields(p);
    if (!pos) {
        kv_reply_oom(c->out);
        return;
    }
    reply_pairs_len(c, count, withvalues);
    while (count--)
        reply_pack_pair(c, withvalues, p, pos[rng_below(n)]);
    free(pos);
}

/* count distinct fields of a large hash, count < its size. */
static void randfield_unique_dict(kv_cmd_ctx *c, const kv_dict *d, size_t count, bool withvalues)
{
    size_t size = kv_dict_count(d);
    const kv_dict_entry **pick;
    if (count * 3 > size) {
        /* Many of them: a partial shuffle of every entry (Redis copies the
         * hash and deletes at random, also O(size)). */
        pick = malloc(size * sizeof(*pick));
        if (!pick) {
            kv_reply_oom(c->out);
            return;
        }
        size_t i = 0;
        for (size_t b = 0; b <= d->mask; b++)
            for (const kv_dict_entry *de = d->b[b]; de; de = de->next)
                pick[i++] = de;
        for (i = 0; i < count; i++) {
            size_t j = i + (size_t)rng_below(size - i);
            const kv_dict_entry *t = pick[i];
            pick[i] = pick[j];
            pick[j] = t;
        }
    } else {
        /* Few: random entries until count distinct ones, O(count). */
        kv_dict *seen = kv_dict_new();
        pick = malloc(count * sizeof(*pick));
        if (!seen || !pick) {
            kv_dict_free(seen);
            free(pick);
            kv_reply_oom(c->out);
            return;
        }
        size_t n = 0;
        while (n < count) {
            const kv_dict_entry *de = kv_dict_random(d);
            if (kv_dict_find(seen, kv_dict_key(de), de->klen))
                continue;
            if (!kv_dict_add(seen, kv_dict_key(de), de->klen, NULL, 0)) {
                kv_dict_free(seen);
                free(pick);
                kv_reply_oom(c->out);
                return;
            }
            pick[n++] = de;
        }
        kv_dict_free(seen);
    }
    reply_pairs_len(c, count, withvalues);
    for (size_t i = 0; i < count; i++)
        reply_dict_entry(c, withvalues, pick[i]);
    free(pick);
}

/* count distinct fields of a small hash, count < its size, in random
 * order as Redis 7.0 gives them (it samples into a dict; 7.2's
 * lpRandomPairsUnique() keeps the listpack's order). */
static void randfield_unique_pack(kv_cmd_ctx *c, const kv_pack *p, size_t count, bool withvalues)
{
    size_t size = kv_pack_count(p) / 2;
    size_t *pos = pack_fields(p);
    if (!pos) {
        kv_reply_oom(c->out);
        return;
    }
    reply_pairs_len(c, count, withvalues);
    for (size_t i = 0; i < count; i++) {
        size_t j = i + (size_t)rng_below(size - i);
        size_t t = pos[i];
        pos[i] = pos[j];
        pos[j] = t;
        reply_pack_pair(c, withvalues, p, pos[i]);
    }
    free(pos);
}

static void randfield_count(kv_cmd_ctx *c, const resp_arg *key, long long l, bool withvalues)
{
    bool uniq = l >= 0;
    unsigned long long count = uniq ? (unsigned long long)l : (unsigned long long)-l;
    bool wrong;
    kv_entry *e = lookup_read(c, key, &wrong);
    if (wrong)
        return;
    if (!e || count == 0) {
        resp_add_array(c->out, 0);
        return;
    }
    const void *obj = kv_obj(e);
    size_t size = obj_len(obj);
    if (!uniq || count == 1) {
        if (count * (withvalues ? 2 : 1) > RANDFIELD_MAX_REPLY_ELEMENTS) {
            resp_add_error(c->out, "ERR keel: HRANDFIELD count too large for one reply");
            return;
        }
        randfield_repeat(c, obj, (size_t)count, withvalues);
        return;
    }
    if (count >= size) {
        /* All of it, in the hash's order. */
        reply_pairs_len(c, size, withvalues);
        kv_hash_iter it;
        const char *f, *v;
        size_t flen, vlen;
        kv_hash_iter_init(&it, obj);
        while (kv_hash_iter_next(&it, &f, &flen, &v, &vlen))
            reply_pair(c, withvalues, f, flen, v, vlen);
        return;
    }
    if (is_dict(obj))
        randfield_unique_dict(c, dict_of(obj), (size_t)count, withvalues);
    else
        randfield_unique_pack(c, pack_of(obj), (size_t)count, withvalues);
}

static void cmd_hrandfield(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    if (argc >= 3) {
        long long l;
        if (!kv_arg_ll(c, &argv[2], &l, NULL))
            return;
        if (l < -LONG_MAX) {
            resp_add_errorf(c->out, "ERR value is out of range, value must between %ld and %ld",
                            -LONG_MAX, LONG_MAX);
            return;
        }
        if (argc > 4 || (argc == 4 && !kv_arg_is(&argv[3], "WITHVALUES"))) {
            kv_reply_syntax(c->out);
            return;
        }
        bool withvalues = argc == 4;
        /* Redis bounds it so that count * 2 cannot overflow. */
        if (withvalues && (l < -LONG_MAX / 2 || l > LONG_MAX / 2)) {
            resp_add_error(c->out, "ERR value is out of range");
            return;
        }
        randfield_count(c, &argv[1], l, withvalues);
        return;
    }
    bool wrong;
    kv_entry *e = lookup_read(c, &argv[1], &wrong);
    if (wrong)
        return;
    if (!e) {
        resp_add_null(c->out, c->proto);
        return;
    }
    const void *obj = kv_obj(e);
    if (is_dict(obj)) {
        const kv_dict_entry *de = kv_dict_random(dict_of(obj));
        resp_add_bulk(c->out, kv_dict_key(de), de->klen);
        return;
    }
    const kv_pack *p = pack_of(obj);
    size_t pos = kv_pack_index(p, (long long)(2 * rng_below(kv_pack_count(p) / 2)));
    size_t flen;
    const char *f = kv_pack_get(p, pos, &flen);
    resp_add_bulk(c->out, f, flen);
}

/* ---- the table ---------------------------------------------------------------------- */

#define WF (KV_CMD_WRITE | KV_CMD_DENYOOM | KV_CMD_FAST)
#define RF (KV_CMD_READONLY | KV_CMD_FAST)
const kv_command kv_hash_commands[] = {
    {"hset", -4, WF, 1, 1, 1, cmd_hset, NULL, "@write @hash @fast"},
    {"hsetnx", 4, WF, 1, 1, 1, cmd_hsetnx, NULL, "@write @hash @fast"},
    {"hget", 3, RF, 1, 1, 1, cmd_hget, NULL, "@read @hash @fast"},
    {"hmset", -4, WF, 1, 1, 1, cmd_hmset, NULL, "@write @hash @fast"},
    {"hmget", -3, RF, 1, 1, 1, cmd_hmget, NULL, "@read @hash @fast"},
    {"hgetall", 2, KV_CMD_READONLY, 1, 1, 1, cmd_hgetall, NULL, "@read @hash @slow"},
    {"hdel", -3, KV_CMD_WRITE | KV_CMD_FAST, 1, 1, 1, cmd_hdel, NULL, "@write @hash @fast"},
    {"hexists", 3, RF, 1, 1, 1, cmd_hexists, NULL, "@read @hash @fast"},
    {"hlen", 2, RF, 1, 1, 1, cmd_hlen, NULL, "@read @hash @fast"},
    {"hstrlen", 3, RF, 1, 1, 1, cmd_hstrlen, NULL, "@read @hash @fast"},
    {"hincrby", 4, WF, 1, 1, 1, cmd_hincrby, NULL, "@write @hash @fast"},
    {"hincrbyfloat", 4, WF, 1, 1, 1, cmd_hincrbyfloat, NULL, "@write @hash @fast"},
    {"hkeys", 2, KV_CMD_READONLY, 1, 1, 1, cmd_hkeys, NULL, "@read @hash @slow"},
    {"hvals", 2, KV_CMD_READONLY, 1, 1, 1, cmd_hvals, NULL, "@read @hash @slow"},
    {"hscan", -3, KV_CMD_READONLY, 1, 1, 1, cmd_hscan, NULL, "@read @hash @slow"},
    {"hrandfield", -2, KV_CMD_READONLY, 1, 1, 1, cmd_hrandfield, NULL, "@read @hash @slow"},
    {NULL},
};
