/* Set commands and the set object (see t_set.h). Replies and errors are
 * Redis 7.0's, byte for byte, and so is everything about the encodings a
 * client can observe: which set an intersection walks (the smallest, the
 * first of equal ones: an intset walks in ascending order), that unions
 * and differences are built in a fresh set and replied from it (a result
 * of few integers comes out sorted), SDIFF's choice between its two
 * algorithms (it decides a stored result's encoding), SPOP's rebuild of
 * the members it keeps. */
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dict.h"
#include "kv.h"
#include "t_set.h"

enum { ENC_INTSET = 0, ENC_HT = 1 };

/* One allocation for an intset: this header and the members, native
 * endian, ascending. A hashtable is this header and a kv_dict pointer. */
struct kv_set {
    uint8_t enc;
    uint8_t width; /* intset: bytes per member, 2, 4 or 8 */
    uint16_t _pad;
    uint32_t count;       /* intset: members (a hashtable's are its dict's) */
    unsigned char data[]; /* intset: the members; hashtable: the kv_dict * */
};

size_t kv_set_max_intset_entries = 512;

/* Redis caps the setting at 2^30 "due to intset internals". */
static size_t max_intset(void)
{
    size_t m = __atomic_load_n(&kv_set_max_intset_entries, __ATOMIC_RELAXED);
    return m > ((size_t)1 << 30) ? (size_t)1 << 30 : m;
}

/* ---- random numbers --------------------------------------------------------------------- */

/* xorshift64*, one state per shard thread: the shards never contend on
 * random()'s lock for SPOP and SRANDMEMBER. */
static __thread uint64_t rng;

static uint64_t rnd(void)
{
    if (!rng)
        rng = ((uint64_t)kv_now_ms() * 0x9e3779b97f4a7c15ull) ^ (uintptr_t)&rng ^ 1;
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return rng * 0x2545f4914f6cdd1dull;
}

static size_t rnd_below(size_t n)
{
    return (size_t)(rnd() % n);
}

/* ---- intset ------------------------------------------------------------------------------- */

static size_t is_bytes(size_t count, unsigned width)
{
    return sizeof(kv_set) + count * width;
}

static unsigned width_of(int64_t v)
{
    if (v >= INT16_MIN && v <= INT16_MAX)
        return 2;
    if (v >= INT32_MIN && v <= INT32_MAX)
        return 4;
    return 8;
}

static inline int64_t get_w(const unsigned char *data, unsigned width, size_t i)
{
    const unsigned char *p = data + i * width;
    if (width == 2) {
        int16_t v;
        memcpy(&v, p, 2);
        return v;
    }
    if (width == 4) {
        int32_t v;
        memcpy(&v, p, 4);
        return v;
    }
    int64_t v;
    memcpy(&v, p, 8);
    return v;
}

static inline void put_w(unsigned char *data, unsigned width, size_t i, int64_t v)
{
    unsigned char *p = data + i * width;
    if (width == 2) {
        int16_t x = (int16_t)v;
        memcpy(p, &x, 2);
    } else if (width == 4) {
        int32_t x = (int32_t)v;
        memcpy(p, &x, 4);
    } else {
        memcpy(p, &v, 8);
    }
}

static inline int64_t is_get(const kv_set *s, size_t i)
{
    return get_w(s->data, s->width, i);
}

static kv_set *is_new(void)
{
    kv_set *s = malloc(sizeof(kv_set));
    if (!s)
        return NULL;
    s->enc = ENC_INTSET;
    s->width = 2;
    s->_pad = 0;
    s->count = 0;
    return s;
}

/* Whether v is a member; *pos is its index, or where it would go. */
static bool is_search(const kv_set *s, int64_t v, size_t *pos)
{
    size_t lo = 0, hi = s->count;
    /* Appending ascending integers is the common case: no search. */
    if (hi == 0 || v > is_get(s, hi - 1)) {
        *pos = hi;
        return false;
    }
    if (v < is_get(s, 0)) {
        *pos = 0;
        return false;
    }
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int64_t m = is_get(s, mid);
        if (m < v) {
            lo = mid + 1;
        } else if (m > v) {
            hi = mid;
        } else {
            *pos = mid;
            return true;
        }
    }
    *pos = lo;
    return false;
}

static bool is_find(const kv_set *s, int64_t v)
{
    size_t pos;
    return width_of(v) <= s->width && is_search(s, v, &pos);
}

/* Returns 1 if added, 0 if present, -ENOMEM (the set unchanged). */
static int is_add(kv_set **sp, int64_t v)
{
    kv_set *s = *sp;
    unsigned w = width_of(v);
    if (w > s->width) {
        /* A value wider than every member is beyond all of them: first
         * if negative, last otherwise. Widen from the back so that no
         * member is overwritten before it is read. */
        kv_set *n = realloc(s, is_bytes(s->count + 1, w));
        if (!n)
            return -ENOMEM;
        size_t front = v < 0;
        for (size_t i = n->count; i-- > 0;)
            put_w(n->data, w, i + front, get_w(n->data, n->width, i));
        n->width = (uint8_t)w;
        put_w(n->data, w, front ? 0 : n->count, v);
        n->count++;
        *sp = n;
        return 1;
    }
    size_t pos;
    if (is_search(s, v, &pos))
        return 0;
    kv_set *n = realloc(s, is_bytes(s->count + 1, s->width));
    if (!n)
        return -ENOMEM;
    memmove(n->data + (pos + 1) * n->width, n->data + pos * n->width, (n->count - pos) * n->width);
    put_w(n->data, n->width, pos, v);
    n->count++;
    *sp = n;
    return 1;
}

static void is_remove_at(kv_set **sp, size_t pos)
{
    kv_set *s = *sp;
    memmove(s->data + pos * s->width, s->data + (pos + 1) * s->width,
            (s->count - pos - 1) * s->width);
    s->count--;
    kv_set *n = realloc(s, is_bytes(s->count, s->width));
    if (n) /* else the block stays a little larger: harmless */
        *sp = n;
}

static bool is_remove(kv_set **sp, int64_t v)
{
    size_t pos;
    if (width_of(v) > (*sp)->width || !is_search(*sp, v, &pos))
        return false;
    is_remove_at(sp, pos);
    return true;
}

/* ---- hashtable ------------------------------------------------------------------------- */

static inline kv_dict *ht(const kv_set *s)
{
    kv_dict *d;
    memcpy(&d, s->data, sizeof(d));
    return d;
}

static kv_set *ht_new(void)
{
    kv_set *s = malloc(sizeof(kv_set) + sizeof(kv_dict *));
    kv_dict *d = kv_dict_new();
    if (!s || !d) {
        free(s);
        kv_dict_free(d);
        return NULL;
    }
    s->enc = ENC_HT;
    s->width = 0;
    s->_pad = 0;
    s->count = 0;
    memcpy(s->data, &d, sizeof(d));
    return s;
}

static int ht_add(kv_set *s, const char *p, size_t n)
{
    kv_dict *d = ht(s);
    if (kv_dict_find(d, p, n))
        return 0;
    return kv_dict_add(d, p, n, NULL, 0) ? 1 : -ENOMEM;
}

/* Redis's setTypeConvert(): the intset's members, in decimal, into a
 * fresh dict. Returns 0 or -ENOMEM (the set unchanged). */
static int to_ht(kv_set **sp)
{
    kv_set *s = *sp, *n = ht_new();
    if (!n)
        return -ENOMEM;
    kv_dict *d = ht(n);
    char buf[RESP_LL_CHARS];
    for (size_t i = 0; i < s->count; i++) {
        int len = resp_fmt_ll(buf, is_get(s, i));
        if (!kv_dict_add(d, buf, (size_t)len, NULL, 0)) {
            kv_set_free(n);
            return -ENOMEM;
        }
    }
    free(s);
    *sp = n;
    return 0;
}

/* ---- the object ------------------------------------------------------------------------ */

kv_set *kv_set_new(void)
{
    return is_new();
}

/* The set Redis's setTypeCreate() makes for a first member: an intset if
 * it is an integer, else a hashtable. */
static kv_set *new_for(const resp_arg *first)
{
    long long v;
    return resp_string2ll(first->ptr, first->len, &v) ? is_new() : ht_new();
}

void kv_set_free(void *obj)
{
    kv_set *s = obj;
    if (!s)
        return;
    if (s->enc == ENC_HT)
        kv_dict_free(ht(s));
    free(s);
}

size_t kv_set_len(const void *obj)
{
    const kv_set *s = obj;
    return s->enc == ENC_INTSET ? s->count : kv_dict_count(ht(s));
}

size_t kv_set_mem(const void *obj)
{
    const kv_set *s = obj;
    if (s->enc == ENC_INTSET)
        return is_bytes(s->count, s->width);
    return sizeof(kv_set) + sizeof(kv_dict *) + kv_dict_mem(ht(s));
}

const char *kv_set_encoding(const void *obj)
{
    const kv_set *s = obj;
    return s->enc == ENC_INTSET ? "intset" : "hashtable";
}

/* COPY: the same encoding, as Redis's setTypeDup(). */
static void *set_dup(const void *obj)
{
    const kv_set *s = obj;
    if (s->enc == ENC_INTSET) {
        kv_set *n = malloc(is_bytes(s->count, s->width));
        if (n)
            memcpy(n, s, is_bytes(s->count, s->width));
        return n;
    }
    kv_set *n = malloc(sizeof(kv_set) + sizeof(kv_dict *));
    kv_dict *d = kv_dict_dup(ht(s));
    if (!n || !d) {
        free(n);
        kv_dict_free(d);
        return NULL;
    }
    memcpy(n, s, sizeof(kv_set));
    memcpy(n->data, &d, sizeof(d));
    return n;
}

const kv_type_ops kv_set_type = {"set",      kv_set_free,     set_dup,
                                 kv_set_mem, kv_set_encoding, kv_set_len};

/* Adds v; converts past set-max-intset-entries. */
static int add_int(kv_set **sp, int64_t v)
{
    if ((*sp)->enc == ENC_HT) {
        char buf[RESP_LL_CHARS];
        return ht_add(*sp, buf, (size_t)resp_fmt_ll(buf, v));
    }
    int r = is_add(sp, v);
    if (r == 1 && (*sp)->count > max_intset())
        (void)to_ht(sp); /* out of memory: a larger intset is still right */
    return r;
}

int kv_set_add(kv_set **sp, const char *s, size_t n)
{
    long long v;
    if ((*sp)->enc == ENC_INTSET) {
        if (resp_string2ll(s, n, &v))
            return add_int(sp, v);
        if (to_ht(sp))
            return -ENOMEM;
    }
    return ht_add(*sp, s, n);
}

bool kv_set_remove(kv_set **sp, const char *s, size_t n)
{
    if ((*sp)->enc == ENC_HT)
        return kv_dict_delete(ht(*sp), s, n, NULL);
    long long v;
    return resp_string2ll(s, n, &v) && is_remove(sp, v);
}

bool kv_set_contains(const kv_set *set, const char *s, size_t n)
{
    if (set->enc == ENC_HT)
        return kv_dict_find(ht(set), s, n) != NULL;
    long long v;
    return resp_string2ll(s, n, &v) && is_find(set, v);
}

/* ---- members ---------------------------------------------------------------------------- */

/* A member as a walk or a random pick yields it: bytes from a hashtable
 * (p set; e its entry), or an intset's integer (p NULL; i its index). */
typedef struct member {
    const char *p;
    size_t n;
    int64_t v;
    size_t i;
    kv_dict_entry *e;
} member;

typedef struct set_iter {
    const kv_set *s;
    size_t i; /* intset: the next index; hashtable: the next bucket */
    kv_dict_entry *e;
} set_iter;

static void it_init(set_iter *it, const kv_set *s)
{
    it->s = s;
    it->i = 0;
    it->e = NULL;
}

/* The next member, in SMEMBERS's order; false at the end. The set must
 * not change during the walk. */
static bool it_next(set_iter *it, member *m)
{
    const kv_set *s = it->s;
    if (s->enc == ENC_INTSET) {
        if (it->i >= s->count)
            return false;
        m->p = NULL;
        m->i = it->i;
        m->v = is_get(s, it->i++);
        return true;
    }
    const kv_dict *d = ht(s);
    if (it->e)
        it->e = it->e->next;
    while (!it->e) {
        if (it->i > d->mask)
            return false;
        it->e = d->b[it->i++];
    }
    m->e = it->e;
    m->p = kv_dict_key(it->e);
    m->n = it->e->klen;
    return true;
}

static void random_member(const kv_set *s, member *m)
{
    if (s->enc == ENC_INTSET) {
        m->p = NULL;
        m->i = rnd_below(s->count);
        m->v = is_get(s, m->i);
    } else {
        m->e = kv_dict_random(ht(s));
        m->p = kv_dict_key(m->e);
        m->n = m->e->klen;
    }
}

static bool has_member(const kv_set *s, const member *m)
{
    if (m->p)
        return kv_set_contains(s, m->p, m->n);
    if (s->enc == ENC_INTSET)
        return is_find(s, m->v);
    char buf[RESP_LL_CHARS];
    return kv_dict_find(ht(s), buf, (size_t)resp_fmt_ll(buf, m->v)) != NULL;
}

static int add_member(kv_set **sp, const member *m)
{
    return m->p ? kv_set_add(sp, m->p, m->n) : add_int(sp, m->v);
}

static bool remove_member(kv_set **sp, const member *m)
{
    if (m->p)
        return kv_set_remove(sp, m->p, m->n);
    if ((*sp)->enc == ENC_INTSET)
        return is_remove(sp, m->v);
    char buf[RESP_LL_CHARS];
    return kv_dict_delete(ht(*sp), buf, (size_t)resp_fmt_ll(buf, m->v), NULL);
}

/* Removes a member s itself yielded (walk or random pick), cheaply. */
static void remove_picked(kv_set **sp, const member *m)
{
    if (m->p)
        kv_dict_delete(ht(*sp), m->p, m->n, NULL);
    else
        is_remove_at(sp, m->i);
}

static void reply_member(resp_buf *out, const member *m)
{
    if (m->p)
        resp_add_bulk(out, m->p, m->n);
    else
        resp_add_bulk_ll(out, m->v);
}

void kv_set_each(const void *obj, void (*fn)(void *arg, const char *s, size_t n), void *arg)
{
    set_iter it;
    member m;
    char buf[RESP_LL_CHARS];
    it_init(&it, obj);
    while (it_next(&it, &m)) {
        if (m.p)
            fn(arg, m.p, m.n);
        else
            fn(arg, buf, (size_t)resp_fmt_ll(buf, m.v));
    }
}

bool kv_set__valid(const kv_set *s)
{
    if (s->enc == ENC_INTSET) {
        if (s->width != 2 && s->width != 4 && s->width != 8)
            return false;
        for (size_t i = 0; i < s->count; i++) {
            int64_t v = is_get(s, i);
            if (width_of(v) > s->width || (i > 0 && is_get(s, i - 1) >= v))
                return false;
        }
        return true;
    }
    if (s->enc != ENC_HT)
        return false;
    const kv_dict *d = ht(s);
    size_t n = 0, bytes = 0;
    for (size_t i = 0; i <= d->mask; i++) {
        for (const kv_dict_entry *e = d->b[i]; e; e = e->next) {
            if (e->vlen || (e->hash & d->mask) != i ||
                e->hash != (uint32_t)kv_dict_hash(e->data, e->klen))
                return false;
            bytes += sizeof(*e) + e->klen;
            n++;
        }
    }
    return n == d->count && d->mem >= bytes;
}

/* ---- command helpers ------------------------------------------------------------------- */

static void reply_empty_set(kv_cmd_ctx *c)
{
    resp_add_set(c->out, c->proto, 0);
}

/* Every member of s, as a set reply. */
static void reply_all(kv_cmd_ctx *c, const kv_set *s)
{
    set_iter it;
    member m;
    resp_add_set(c->out, c->proto, kv_set_len(s));
    it_init(&it, s);
    while (it_next(&it, &m))
        reply_member(c->out, &m);
}

/* After changing the set of e in place: the entry gets the object's
 * (possibly moved) address, and the keyspace learns of the change
 * (deleting the key if the set is now empty). */
static void changed(kv_cmd_ctx *c, kv_entry *e, kv_set *s, const resp_arg *key)
{
    kv_set_obj(e, s);
    kv_modified(c, key);
}

/* The *STORE commands' end, as Redis's setKey() or dbDelete(): result
 * replaces whatever dst held (dropping its TTL), or an empty result
 * deletes dst. Takes result. */
static void store_result(kv_cmd_ctx *c, const resp_arg *dst, kv_set *result)
{
    size_t n = kv_set_len(result);
    if (n == 0) {
        kv_set_free(result);
        kv_del(c, dst);
        resp_add_int(c->out, 0);
        return;
    }
    if (!kv_replace_obj(c, dst, KV_SET, result, false)) {
        kv_set_free(result);
        kv_reply_oom(c->out);
        return;
    }
    resp_add_int(c->out, (long long)n);
}

/* ---- SADD SREM SMEMBERS SISMEMBER SMISMEMBER SCARD ------------------------------------- */

static void cmd_sadd(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    bool wrong;
    kv_entry *e = kv_lookup_type(c, &argv[1], KV_SET, &wrong);
    if (wrong)
        return;
    kv_set *s = e ? kv_obj(e) : new_for(&argv[2]);
    if (!s) {
        kv_reply_oom(c->out);
        return;
    }
    long long added = 0;
    int r = 0;
    for (size_t i = 2; i < argc && r >= 0; i++) {
        r = kv_set_add(&s, argv[i].ptr, argv[i].len);
        if (r > 0)
            added++;
    }
    if (!e) {
        if (r < 0 || !kv_add_obj(c, &argv[1], KV_SET, s)) {
            kv_set_free(s);
            kv_reply_oom(c->out);
            return;
        }
    } else {
        kv_set_obj(e, s);
        if (added)
            kv_modified(c, &argv[1]);
        if (r < 0) {
            kv_reply_oom(c->out);
            return;
        }
    }
    resp_add_int(c->out, added);
}

static void cmd_srem(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    bool wrong;
    kv_entry *e = kv_lookup_type(c, &argv[1], KV_SET, &wrong);
    if (wrong)
        return;
    long long deleted = 0;
    if (e) {
        kv_set *s = kv_obj(e);
        for (size_t i = 2; i < argc && kv_set_len(s); i++)
            deleted += kv_set_remove(&s, argv[i].ptr, argv[i].len);
        if (deleted)
            changed(c, e, s, &argv[1]);
    }
    resp_add_int(c->out, deleted);
}

static void cmd_smembers(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    (void)argc;
    bool wrong;
    kv_entry *e = kv_lookup_type(c, &argv[1], KV_SET, &wrong);
    if (wrong)
        return;
    if (e)
        reply_all(c, kv_obj(e));
    else
        reply_empty_set(c);
}

static void cmd_sismember(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    (void)argc;
    bool wrong;
    kv_entry *e = kv_lookup_type(c, &argv[1], KV_SET, &wrong);
    if (!wrong)
        resp_add_int(c->out, e && kv_set_contains(kv_obj(e), argv[2].ptr, argv[2].len));
}

static void cmd_smismember(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    bool wrong;
    kv_entry *e = kv_lookup_type(c, &argv[1], KV_SET, &wrong);
    if (wrong)
        return;
    resp_add_array(c->out, argc - 2);
    for (size_t i = 2; i < argc; i++)
        resp_add_int(c->out, e && kv_set_contains(kv_obj(e), argv[i].ptr, argv[i].len));
}

static void cmd_scard(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    (void)argc;
    bool wrong;
    kv_entry *e = kv_lookup_type(c, &argv[1], KV_SET, &wrong);
    if (!wrong)
        resp_add_int(c->out, e ? (long long)kv_set_len(kv_obj(e)) : 0);
}

/* ---- SUNION SDIFF (and SPOP's whole-set reply) ---------------------------------------------- */

enum { OP_UNION, OP_DIFF };

/* Redis's sunionDiffGenericCommand() over sets[0, n) (NULL: a missing
 * key): the result is built in a fresh set, which a STORE keeps. Returns
 * NULL on out-of-memory. */
static kv_set *union_diff(kv_set *const *sets, size_t n, int op)
{
    kv_set *result = kv_set_new();
    if (!result)
        return NULL;
    bool sameset = false;
    for (size_t j = 1; j < n; j++)
        sameset |= sets[0] && sets[j] == sets[0];
    set_iter it;
    member m;
    if (op == OP_UNION) {
        for (size_t j = 0; j < n; j++) {
            if (!sets[j])
                continue;
            it_init(&it, sets[j]);
            while (it_next(&it, &m))
                if (add_member(&result, &m) < 0)
                    goto oom;
        }
        return result;
    }
    if (!sets[0] || sameset)
        return result; /* empty */
    /* Algorithm 1 walks the first set and probes the others, O(N*M);
     * algorithm 2 adds the first set and removes every other, O(total).
     * Redis picks by this estimate, giving 1 an advantage; the pick is
     * visible in the encoding of a stored result. */
    long long one = 0, two = 0;
    for (size_t j = 0; j < n; j++) {
        if (sets[j]) {
            one += (long long)kv_set_len(sets[0]);
            two += (long long)kv_set_len(sets[j]);
        }
    }
    if (one / 2 <= two) {
        it_init(&it, sets[0]);
        while (it_next(&it, &m)) {
            size_t j;
            for (j = 1; j < n; j++)
                if (sets[j] && has_member(sets[j], &m))
                    break;
            if (j == n && add_member(&result, &m) < 0)
                goto oom;
        }
        return result;
    }
    for (size_t j = 0; j < n; j++) {
        if (!sets[j])
            continue;
        it_init(&it, sets[j]);
        while (it_next(&it, &m)) {
            if (j > 0)
                remove_member(&result, &m);
            else if (add_member(&result, &m) < 0)
                goto oom;
        }
        if (kv_set_len(result) == 0)
            break;
    }
    return result;
oom:
    kv_set_free(result);
    return NULL;
}

/* Looks up the sets at keys[0, n) into sets (NULL for a missing key) and
 * counts the missing ones. On a key of another type it replies WRONGTYPE
 * and returns false. */
static bool lookup_sets(kv_cmd_ctx *c, const resp_arg *keys, size_t n, kv_set **sets,
                        size_t *missing)
{
    *missing = 0;
    for (size_t j = 0; j < n; j++) {
        bool wrong;
        kv_entry *e = kv_lookup_type(c, &keys[j], KV_SET, &wrong);
        if (wrong)
            return false;
        sets[j] = e ? kv_obj(e) : NULL;
        *missing += !e;
    }
    return true;
}

static void union_diff_command(kv_cmd_ctx *c, const resp_arg *keys, size_t n, const resp_arg *dst,
                               int op)
{
    kv_set **sets = malloc(n * sizeof(*sets));
    size_t missing;
    if (!sets) {
        kv_reply_oom(c->out);
        return;
    }
    if (!lookup_sets(c, keys, n, sets, &missing)) {
        free(sets);
        return;
    }
    kv_set *result = union_diff(sets, n, op);
    free(sets);
    if (!result) {
        kv_reply_oom(c->out);
        return;
    }
    if (dst) {
        store_result(c, dst, result);
    } else {
        reply_all(c, result);
        kv_set_free(result);
    }
}

static void cmd_sunion(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    union_diff_command(c, argv + 1, argc - 1, NULL, OP_UNION);
}

static void cmd_sunionstore(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    union_diff_command(c, argv + 2, argc - 2, &argv[1], OP_UNION);
}

static void cmd_sdiff(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    union_diff_command(c, argv + 1, argc - 1, NULL, OP_DIFF);
}

static void cmd_sdiffstore(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    union_diff_command(c, argv + 2, argc - 2, &argv[1], OP_DIFF);
}

/* ---- SINTER SINTERSTORE SINTERCARD ------------------------------------------------------ */

typedef struct by_size {
    size_t len, idx;
    kv_set *s;
} by_size;

/* Smallest first; equal sizes keep their order (glibc's qsort, which
 * Redis uses, is a stable merge sort), which decides the reply's order. */
static int cmp_by_size(const void *a, const void *b)
{
    const by_size *x = a, *y = b;
    if (x->len != y->len)
        return x->len < y->len ? -1 : 1;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

/* Redis's sinterGenericCommand(): replies the intersection of the sets
 * at keys[0, n), stores it at dst, or (card_only) replies its size, up to
 * limit (0: no limit). */
static void inter_command(kv_cmd_ctx *c, const resp_arg *keys, size_t n, const resp_arg *dst,
                          bool card_only, unsigned long long limit)
{
    kv_set **sets = malloc(n * sizeof(*sets));
    by_size *order = malloc(n * sizeof(*order));
    size_t missing;
    if (!sets || !order) {
        free(sets);
        free(order);
        kv_reply_oom(c->out);
        return;
    }
    if (!lookup_sets(c, keys, n, sets, &missing))
        goto done;
    if (missing) {
        /* An intersection with an empty set is empty. */
        if (dst) {
            kv_del(c, dst);
            resp_add_int(c->out, 0);
        } else if (card_only) {
            resp_add_int(c->out, 0);
        } else {
            reply_empty_set(c);
        }
        goto done;
    }
    for (size_t j = 0; j < n; j++)
        order[j] = (by_size){kv_set_len(sets[j]), j, sets[j]};
    qsort(order, n, sizeof(*order), cmp_by_size);
    for (size_t j = 0; j < n; j++)
        sets[j] = order[j].s;

    kv_set *result = NULL;
    size_t at = 0;
    if (dst) {
        result = kv_set_new();
        if (!result) {
            kv_reply_oom(c->out);
            goto done;
        }
    } else if (!card_only) {
        at = resp_add_deferred(c->out);
    }
    unsigned long long card = 0;
    set_iter it;
    member m;
    it_init(&it, sets[0]);
    while (it_next(&it, &m)) {
        size_t j;
        for (j = 1; j < n; j++)
            if (sets[j] != sets[0] && !has_member(sets[j], &m))
                break;
        if (j < n)
            continue;
        if (card_only) {
            if (++card == limit)
                break;
        } else if (!dst) {
            reply_member(c->out, &m);
            card++;
        } else if (add_member(&result, &m) < 0) {
            kv_set_free(result);
            kv_reply_oom(c->out);
            goto done;
        }
    }
    if (card_only)
        resp_add_int(c->out, (long long)card);
    else if (dst)
        store_result(c, dst, result);
    else
        resp_set_deferred_set(c->out, c->proto, at, card);
done:
    free(sets);
    free(order);
}

static void cmd_sinter(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    inter_command(c, argv + 1, argc - 1, NULL, false, 0);
}

static void cmd_sinterstore(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    inter_command(c, argv + 2, argc - 2, &argv[1], false, 0);
}

/* SINTERCARD numkeys key [key ...] [LIMIT limit] */
static void cmd_sintercard(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    long long numkeys, limit = 0;
    if (!resp_string2ll(argv[1].ptr, argv[1].len, &numkeys) || numkeys < 1) {
        resp_add_error(c->out, "ERR numkeys should be greater than 0");
        return;
    }
    if ((unsigned long long)numkeys > argc - 2) {
        resp_add_error(c->out, "ERR Number of keys can't be greater than number of args");
        return;
    }
    for (size_t j = 2 + (size_t)numkeys; j < argc; j++) {
        if (kv_arg_is(&argv[j], "LIMIT") && j + 1 < argc) {
            j++;
            if (!resp_string2ll(argv[j].ptr, argv[j].len, &limit) || limit < 0) {
                resp_add_error(c->out, "ERR LIMIT can't be negative");
                return;
            }
        } else {
            kv_reply_syntax(c->out);
            return;
        }
    }
    inter_command(c, argv + 2, (size_t)numkeys, NULL, true, (unsigned long long)limit);
}

/* SINTERCARD's keys: numkeys of them after numkeys. */
static int sintercard_keys(size_t argc, const resp_arg *argv, size_t *idx, size_t max)
{
    long long numkeys;
    if (argc < 3 || !resp_string2ll(argv[1].ptr, argv[1].len, &numkeys) || numkeys < 1 ||
        (unsigned long long)numkeys > argc - 2)
        return -1;
    size_t n = 0;
    for (size_t i = 0; i < (size_t)numkeys && n < max; i++)
        idx[n++] = 2 + i;
    return (int)n;
}

/* ---- SMOVE ------------------------------------------------------------------------------ */

static void cmd_smove(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    (void)argc;
    const resp_arg *ele = &argv[3];
    kv_entry *src = kv_lookup(c, &argv[1]);
    kv_entry *dst = kv_lookup(c, &argv[2]);
    if (!src) {
        resp_add_int(c->out, 0);
        return;
    }
    if (src->type != KV_SET || (dst && dst->type != KV_SET)) {
        kv_reply_wrongtype(c->out);
        return;
    }
    kv_set *ss = kv_obj(src);
    if (src == dst || !kv_set_contains(ss, ele->ptr, ele->len)) {
        resp_add_int(c->out, src == dst && kv_set_contains(ss, ele->ptr, ele->len));
        return;
    }
    /* Add first: it is the step that can fail, and then nothing changed. */
    if (dst) {
        kv_set *ds = kv_obj(dst);
        int r = kv_set_add(&ds, ele->ptr, ele->len);
        kv_set_obj(dst, ds);
        if (r < 0) {
            kv_reply_oom(c->out);
            return;
        }
        if (r)
            kv_modified(c, &argv[2]);
    } else {
        kv_set *ds = new_for(ele);
        if (!ds || kv_set_add(&ds, ele->ptr, ele->len) < 0 ||
            !kv_add_obj(c, &argv[2], KV_SET, ds)) {
            kv_set_free(ds);
            kv_reply_oom(c->out);
            return;
        }
    }
    kv_set_remove(&ss, ele->ptr, ele->len);
    changed(c, src, ss, &argv[1]);
    resp_add_int(c->out, 1);
}

/* ---- SPOP SRANDMEMBER ---------------------------------------------------------------------- */

/* SPOP with a count below the size pops more than this share through a
 * rebuild of the members it keeps (Redis's SPOP_MOVE_STRATEGY_MUL). */
#define SPOP_MOVE_MUL 5
/* SRANDMEMBER with a count above a third of the size picks by elimination
 * (Redis's SRANDMEMBER_SUB_STRATEGY_MUL). */
#define SRAND_SUB_MUL 3
/* SRANDMEMBER with a negative count: replies longer than this many members
 * are refused rather than built in memory (Redis would try). */
#define SRAND_MAX_REPEATS (1ull << 27)

/* SPOP key count, count < size, in the reply started by the caller. */
static void spop_some(kv_cmd_ctx *c, kv_entry *e, const resp_arg *key, size_t count)
{
    kv_set *s = kv_obj(e);
    size_t remaining = kv_set_len(s) - count;
    member m;
    if (remaining * SPOP_MOVE_MUL > count) {
        resp_add_set(c->out, c->proto, count);
        while (count--) {
            random_member(s, &m);
            reply_member(c->out, &m);
            remove_picked(&s, &m);
        }
        changed(c, e, s, key);
        return;
    }
    /* Most members go: move the few that stay into a new set, as Redis
     * does (which may make a hashtable an intset again), and reply the
     * old one. */
    kv_set *keep = kv_set_new();
    while (keep && remaining--) {
        random_member(s, &m);
        if (add_member(&keep, &m) < 0) {
            /* Out of memory: put back what moved; the key is unchanged. */
            set_iter it;
            it_init(&it, keep);
            while (it_next(&it, &m))
                add_member(&s, &m);
            kv_set_free(keep);
            keep = NULL;
            break;
        }
        remove_picked(&s, &m);
    }
    kv_set_obj(e, s);
    if (!keep) {
        kv_reply_oom(c->out);
        return;
    }
    reply_all(c, s);
    kv_set_obj(e, keep);
    kv_set_free(s);
    kv_modified(c, key);
}

static void spop_count(kv_cmd_ctx *c, const resp_arg *argv)
{
    long long count;
    if (!resp_string2ll(argv[2].ptr, argv[2].len, &count) || count < 0) {
        resp_add_error(c->out, "ERR value is out of range, must be positive");
        return;
    }
    bool wrong;
    kv_entry *e = kv_lookup_type(c, &argv[1], KV_SET, &wrong);
    if (wrong)
        return;
    if (!e || count == 0) {
        reply_empty_set(c);
        return;
    }
    kv_set *s = kv_obj(e);
    if ((unsigned long long)count < kv_set_len(s)) {
        spop_some(c, e, &argv[1], (size_t)count);
        return;
    }
    /* The whole set, replied as Redis does: from its union with nothing. */
    kv_set *all = union_diff(&s, 1, OP_UNION);
    if (!all) {
        kv_reply_oom(c->out);
        return;
    }
    reply_all(c, all);
    kv_set_free(all);
    kv_del(c, &argv[1]);
}

/* A set of distinct nonzero 64-bit values (entry addresses, intset
 * indexes + 1), for picking distinct random members. */
typedef struct picked {
    uint64_t *slot;
    size_t mask;
} picked;

static bool picked_init(picked *p, size_t n)
{
    size_t cap = 16;
    while (cap < n * 2)
        cap *= 2;
    p->slot = calloc(cap, sizeof(*p->slot));
    p->mask = cap - 1;
    return p->slot != NULL;
}

/* Adds v; returns false if it was there. */
static bool picked_add(picked *p, uint64_t v)
{
    size_t i = (size_t)((v * 0x9e3779b97f4a7c15ull) >> 20) & p->mask;
    while (p->slot[i]) {
        if (p->slot[i] == v)
            return false;
        i = (i + 1) & p->mask;
    }
    p->slot[i] = v;
    return true;
}

/* count distinct random members of s, 1 < count < size. */
static void srand_distinct(kv_cmd_ctx *c, const kv_set *s, size_t count)
{
    size_t size = kv_set_len(s);
    if (count * SRAND_SUB_MUL > size) {
        /* Most of the set: shuffle the front of a list of all members. */
        member *all = malloc(size * sizeof(*all));
        if (!all) {
            kv_reply_oom(c->out);
            return;
        }
        set_iter it;
        it_init(&it, s);
        for (size_t i = 0; it_next(&it, &all[i]); i++)
            ;
        resp_add_array(c->out, count);
        for (size_t i = 0; i < count; i++) {
            size_t j = i + rnd_below(size - i);
            member t = all[i];
            all[i] = all[j];
            all[j] = t;
            reply_member(c->out, &all[i]);
        }
        free(all);
        return;
    }
    /* A small part of a large set: random picks, skipping repeats. */
    picked p;
    if (!picked_init(&p, count)) {
        kv_reply_oom(c->out);
        return;
    }
    resp_add_array(c->out, count);
    for (size_t n = 0; n < count;) {
        member m;
        random_member(s, &m);
        if (picked_add(&p, m.p ? (uint64_t)(uintptr_t)m.e : m.i + 1)) {
            reply_member(c->out, &m);
            n++;
        }
    }
    free(p.slot);
}

static void srandmember_count(kv_cmd_ctx *c, const resp_arg *argv)
{
    long long l;
    if (!kv_arg_ll(c, &argv[2], &l, NULL))
        return;
    if (l == LLONG_MIN) {
        resp_add_error(c->out, "ERR value is out of range, value must between "
                               "-9223372036854775807 and 9223372036854775807");
        return;
    }
    bool uniq = l >= 0;
    unsigned long long count = uniq ? (unsigned long long)l : (unsigned long long)-l;
    bool wrong;
    kv_entry *e = kv_lookup_type(c, &argv[1], KV_SET, &wrong);
    if (wrong)
        return;
    if (!e || count == 0) {
        resp_add_array(c->out, 0);
        return;
    }
    const kv_set *s = kv_obj(e);
    size_t size = kv_set_len(s);
    member m;
    if (!uniq || count == 1) {
        /* With repetitions, in random order. */
        if (count > SRAND_MAX_REPEATS) {
            resp_add_error(c->out, "ERR count is too large: the reply would not fit in memory");
            return;
        }
        resp_add_array(c->out, count);
        while (count--) {
            random_member(s, &m);
            reply_member(c->out, &m);
        }
        return;
    }
    if (count >= size) {
        resp_add_array(c->out, size);
        set_iter it;
        it_init(&it, s);
        while (it_next(&it, &m))
            reply_member(c->out, &m);
        return;
    }
    srand_distinct(c, s, (size_t)count);
}

/* SPOP key [count] (pop) and SRANDMEMBER key [count]. */
static void random_generic(kv_cmd_ctx *c, size_t argc, const resp_arg *argv, bool pop)
{
    if (argc == 3) {
        if (pop)
            spop_count(c, argv);
        else
            srandmember_count(c, argv);
        return;
    }
    if (argc > 3) {
        kv_reply_syntax(c->out);
        return;
    }
    bool wrong;
    kv_entry *e = kv_lookup_type(c, &argv[1], KV_SET, &wrong);
    if (wrong)
        return;
    if (!e) {
        resp_add_null(c->out, c->proto);
        return;
    }
    kv_set *s = kv_obj(e);
    member m;
    random_member(s, &m);
    reply_member(c->out, &m);
    if (pop) {
        remove_picked(&s, &m);
        changed(c, e, s, &argv[1]);
    }
}

static void cmd_spop(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    random_generic(c, argc, argv, true);
}

static void cmd_srandmember(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    random_generic(c, argc, argv, false);
}

/* ---- SSCAN -------------------------------------------------------------------------------- */

typedef struct scan_acc {
    kv_dict_entry **v;
    size_t n, cap;
    bool oom;
} scan_acc;

static void scan_collect(void *arg, kv_dict_entry *e)
{
    scan_acc *a = arg;
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 16;
        kv_dict_entry **v = realloc(a->v, cap * sizeof(*v));
        if (!v) {
            a->oom = true;
            return;
        }
        a->v = v;
        a->cap = cap;
    }
    a->v[a->n++] = e;
}

/* SSCAN key cursor [MATCH pattern] [COUNT count] */
static void cmd_sscan(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    uint64_t cursor;
    long long count;
    const resp_arg *pat;
    kv_entry *e = kv_scan_key(c, argc, argv, KV_SET, &cursor, &count, &pat);
    if (!e)
        return;
    const kv_set *s = kv_obj(e);
    char buf[RESP_LL_CHARS];
    if (s->enc == ENC_INTSET) {
        /* Small by construction: everything in one call, cursor 0. */
        resp_add_array(c->out, 2);
        resp_add_bulk(c->out, "0", 1);
        size_t at = resp_add_deferred(c->out), n = 0;
        for (size_t i = 0; i < s->count; i++) {
            int len = resp_fmt_ll(buf, is_get(s, i));
            if (pat && !kv_glob_match(pat->ptr, pat->len, buf, (size_t)len, false))
                continue;
            resp_add_bulk(c->out, buf, (size_t)len);
            n++;
        }
        resp_set_deferred_array(c->out, at, n);
        return;
    }
    scan_acc acc = {0};
    cursor = kv_dict_scan(ht(s), cursor, (size_t)count, scan_collect, &acc);
    if (acc.oom) {
        free(acc.v);
        kv_reply_oom(c->out);
        return;
    }
    resp_add_array(c->out, 2);
    resp_add_bulk_ll(c->out, (long long)cursor);
    size_t at = resp_add_deferred(c->out), n = 0;
    for (size_t i = 0; i < acc.n; i++) {
        const kv_dict_entry *de = acc.v[i];
        if (pat && !kv_glob_match(pat->ptr, pat->len, kv_dict_key(de), de->klen, false))
            continue;
        resp_add_bulk(c->out, kv_dict_key(de), de->klen);
        n++;
    }
    resp_set_deferred_array(c->out, at, n);
    free(acc.v);
}

/* ---- the command table ---------------------------------------------------------------- */

#define W KV_CMD_WRITE
#define WD (KV_CMD_WRITE | KV_CMD_DENYOOM)
#define R KV_CMD_READONLY
#define F KV_CMD_FAST
const kv_command kv_set_commands[] = {
    {"sadd", -3, WD | F, 1, 1, 1, cmd_sadd, NULL, "@write @set @fast"},
    {"srem", -3, W | F, 1, 1, 1, cmd_srem, NULL, "@write @set @fast"},
    {"smembers", 2, R, 1, 1, 1, cmd_smembers, NULL, "@read @set @slow"},
    {"sismember", 3, R | F, 1, 1, 1, cmd_sismember, NULL, "@read @set @fast"},
    {"smismember", -3, R | F, 1, 1, 1, cmd_smismember, NULL, "@read @set @fast"},
    {"scard", 2, R | F, 1, 1, 1, cmd_scard, NULL, "@read @set @fast"},
    {"spop", -2, W | F, 1, 1, 1, cmd_spop, NULL, "@write @set @fast"},
    {"srandmember", -2, R, 1, 1, 1, cmd_srandmember, NULL, "@read @set @slow"},
    {"smove", 4, W | F, 1, 2, 1, cmd_smove, NULL, "@write @set @fast"},
    {"sinter", -2, R, 1, -1, 1, cmd_sinter, NULL, "@read @set @slow"},
    {"sintercard", -3, R, 0, 0, 0, cmd_sintercard, sintercard_keys, "@read @set @slow"},
    {"sunion", -2, R, 1, -1, 1, cmd_sunion, NULL, "@read @set @slow"},
    {"sdiff", -2, R, 1, -1, 1, cmd_sdiff, NULL, "@read @set @slow"},
    {"sinterstore", -3, WD, 1, -1, 1, cmd_sinterstore, NULL, "@write @set @slow"},
    {"sunionstore", -3, WD, 1, -1, 1, cmd_sunionstore, NULL, "@write @set @slow"},
    {"sdiffstore", -3, WD, 1, -1, 1, cmd_sdiffstore, NULL, "@write @set @slow"},
    {"sscan", -3, R, 1, 1, 1, cmd_sscan, NULL, "@read @set @slow"},
    {NULL},
};
