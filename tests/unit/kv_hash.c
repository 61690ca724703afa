/* The hash object (apps/kv/t_hash.c): fields set, read and deleted match a
 * simple model in both encodings; the encoding changes where Redis 7.0's
 * thresholds say and never back; the byte count mem() reports is the
 * object's; copies are deep. The commands themselves are checked against
 * redis-server by tests/integ/kv_cases/hash_*.txt. */
#include <criterion/criterion.h>

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dict.h"
#include "kv.h"
#include "pack.h"
#include "t_hash.h"

TestSuite(kv_hash, .timeout = 120);

static void defaults(void)
{
    kv_hash_set_max_listpack_entries(512);
    kv_hash_set_max_listpack_value(64);
}

static bool is_small(const void *obj)
{
    return !strcmp(kv_hash_type.encoding(obj), "listpack");
}

/* The pack behind a small hash (the object is the pack itself). */
static const kv_pack *pack_of(const void *obj)
{
    return obj;
}

/* A small hash's pack walks cleanly both ways over exactly its elements
 * and its byte count is the allocation mem() reports. */
static void check_pack(const void *obj)
{
    const kv_pack *p = pack_of(obj);
    size_t n = 0, last = KV_PACK_END;
    for (size_t q = kv_pack_first(p); q != KV_PACK_END; q = kv_pack_next(p, q)) {
        cr_assert_lt(q, p->bytes);
        last = q;
        n++;
    }
    cr_assert_eq(n, kv_pack_count(p), "forward walk: %zu elements, count %zu", n, kv_pack_count(p));
    cr_assert_eq(n % 2, 0);
    cr_assert_eq(last, kv_pack_last(p));
    n = 0;
    for (size_t q = kv_pack_last(p); q != KV_PACK_END; q = kv_pack_prev(p, q))
        n++;
    cr_assert_eq(n, kv_pack_count(p), "backward walk");
    cr_assert_eq(kv_hash_type.mem(obj), sizeof(kv_pack) + p->bytes);
}

/* ---- a model: fields are small integers, each with a fixed name ---------------- */

#define NFIELDS 700

typedef struct model {
    char *name[NFIELDS];
    size_t nlen[NFIELDS];
    char *val[NFIELDS]; /* NULL: absent */
    size_t vlen[NFIELDS];
    size_t count;
    size_t longest; /* longest field or value ever written */
    bool went_large;
} model;

static uint64_t rng = 88172645463325252ull;

static uint64_t next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static size_t below(size_t n)
{
    return (size_t)(next_rand() % n);
}

/* A random string of n bytes, any byte values. */
static char *random_bytes(size_t n)
{
    char *s = malloc(n ? n : 1);
    cr_assert_not_null(s);
    for (size_t i = 0; i < n; i++)
        s[i] = (char)next_rand();
    return s;
}

/* A length in [0, longest]: mostly short, sometimes around the pack's
 * one-byte length limit (254) when longest allows. */
static size_t random_len(size_t longest)
{
    switch (below(10)) {
    case 0: return 0;
    case 1: return below(longest + 1);
    case 2: return longest >= 260 ? 250 + below(10) : below(longest + 1);
    default: return below((longest < 20 ? longest : 20) + 1);
    }
}

static void model_init(model *m, size_t longest_name)
{
    memset(m, 0, sizeof(*m));
    for (size_t i = 0; i < NFIELDS; i++) {
        char buf[32];
        int n = snprintf(buf, sizeof(buf), "f%zu:", i);
        size_t len = (size_t)n + below(longest_name + 1);
        m->name[i] = random_bytes(len);
        memcpy(m->name[i], buf, (size_t)n); /* distinct names */
        m->nlen[i] = len;
    }
}

static void model_free(model *m)
{
    for (size_t i = 0; i < NFIELDS; i++) {
        free(m->name[i]);
        free(m->val[i]);
    }
}

/* Every model field is in the hash with its value, and nothing else. */
static void check_all(const void *obj, const model *m)
{
    cr_assert_eq(kv_hash_type.len(obj), m->count);
    for (size_t i = 0; i < NFIELDS; i++) {
        const char *v;
        size_t vlen;
        bool found = kv_hash_get(obj, m->name[i], m->nlen[i], &v, &vlen);
        cr_assert_eq(found, m->val[i] != NULL, "field %zu", i);
        if (found) {
            cr_assert_eq(vlen, m->vlen[i], "field %zu", i);
            cr_assert(!memcmp(v, m->val[i], vlen), "field %zu", i);
        }
    }
    kv_hash_iter it;
    const char *f, *v;
    size_t flen, vlen, n = 0;
    kv_hash_iter_init(&it, obj);
    while (kv_hash_iter_next(&it, &f, &flen, &v, &vlen)) {
        const char *mv;
        size_t mvlen;
        n++;
        cr_assert(kv_hash_get(obj, f, flen, &mv, &mvlen));
        cr_assert(mv == v && mvlen == vlen, "the walk and a lookup disagree");
    }
    cr_assert_eq(n, m->count, "the walk saw %zu fields, want %zu", n, m->count);
    cr_assert(!kv_hash_iter_next(&it, &f, &flen, &v, &vlen), "the walk restarted");
}

/* The encoding invariant: small while every field and value ever written
 * fit the limits and the count never passed the entry limit; large for
 * good once not. */
static void check_encoding(const void *obj, model *m, size_t max_entries, size_t max_value)
{
    if (m->count > max_entries || m->longest > max_value)
        m->went_large = true;
    cr_assert_eq(is_small(obj), !m->went_large, "encoding %s with %zu fields, longest %zu",
                 kv_hash_type.encoding(obj), m->count, m->longest);
    if (is_small(obj))
        check_pack(obj);
}

/* Runs steps random writes and deletes; returns whether the hash went
 * large. */
static bool run_model(size_t max_entries, size_t max_value, size_t longest_name,
                      size_t longest_value, int steps)
{
    kv_hash_set_max_listpack_entries(max_entries);
    kv_hash_set_max_listpack_value(max_value);
    model m;
    model_init(&m, longest_name);
    void *obj = kv_hash_new();
    cr_assert_not_null(obj);
    size_t universe = NFIELDS;
    for (int step = 0; step < steps; step++) {
        /* Phases: grow over the entry limit, shrink, grow again. */
        bool grow = (step / 2000) % 2 == 0;
        size_t i = below(universe);
        if (below(10) < (grow ? 9u : 2u)) {
            size_t vlen = random_len(longest_value);
            char *v = random_bytes(vlen);
            int r = kv_hash_set(&obj, m.name[i], m.nlen[i], v, vlen);
            cr_assert_eq(r, m.val[i] ? 0 : 1, "kv_hash_set returned %d", r);
            if (!m.val[i])
                m.count++;
            free(m.val[i]);
            m.val[i] = v;
            m.vlen[i] = vlen;
            if (vlen > m.longest)
                m.longest = vlen;
            if (m.nlen[i] > m.longest)
                m.longest = m.nlen[i];
        } else {
            bool deleted = kv_hash_del(&obj, m.name[i], m.nlen[i]);
            cr_assert_eq(deleted, m.val[i] != NULL);
            if (deleted) {
                m.count--;
                free(m.val[i]);
                m.val[i] = NULL;
            }
        }
        check_encoding(obj, &m, max_entries, max_value);
        const char *v;
        size_t vlen;
        bool found = kv_hash_get(obj, m.name[i], m.nlen[i], &v, &vlen);
        cr_assert_eq(found, m.val[i] != NULL);
        if (found)
            cr_assert(vlen == m.vlen[i] && !memcmp(v, m.val[i], vlen));
        if (step % 97 == 0)
            check_all(obj, &m);
    }
    check_all(obj, &m);

    /* A copy holds the same and lives on its own. */
    void *copy = kv_hash_type.dup(obj);
    cr_assert_not_null(copy);
    cr_assert_str_eq(kv_hash_type.encoding(copy), kv_hash_type.encoding(obj));
    if (is_small(obj)) /* a copied table may have fewer buckets */
        cr_assert_eq(kv_hash_type.mem(copy), kv_hash_type.mem(obj));
    check_all(copy, &m);
    for (size_t i = 0; i < NFIELDS; i++)
        kv_hash_del(&copy, m.name[i], m.nlen[i]);
    cr_assert_eq(kv_hash_type.len(copy), 0);
    check_all(obj, &m);
    kv_hash_type.free(copy);

    kv_hash_type.free(obj);
    model_free(&m);
    defaults();
    return m.went_large;
}

Test(kv_hash, fields_match_a_model_with_the_default_limits)
{
    /* No long element: the hash stays small until it passes 512 fields. */
    cr_assert(run_model(512, 64, 8, 64, 20000));
}

Test(kv_hash, fields_match_a_model_when_long_values_come)
{
    cr_assert(run_model(512, 64, 8, 72, 20000));
}

Test(kv_hash, fields_match_a_model_with_long_elements_in_the_small_encoding)
{
    /* Limits raised (CONFIG SET): the pack holds elements of 255 bytes and
     * more, whose lengths take five bytes, grown and shrunk in place. */
    cr_assert(!run_model(100000, 1000, 300, 1000, 20000));
}

Test(kv_hash, fields_match_a_model_when_every_write_converts)
{
    cr_assert(run_model(0, 0, 4, 10, 3000));
}

Test(kv_hash, fields_match_a_model_with_small_limits)
{
    cr_assert(run_model(16, 10, 4, 14, 10000));
}

/* ---- the thresholds, one by one ---------------------------------------------------- */

static void *hash_with(size_t n)
{
    void *obj = kv_hash_new();
    cr_assert_not_null(obj);
    for (size_t i = 0; i < n; i++) {
        char f[32];
        int len = snprintf(f, sizeof(f), "field%zu", i);
        cr_assert_eq(kv_hash_set(&obj, f, (size_t)len, "v", 1), 1);
    }
    return obj;
}

Test(kv_hash, a_new_hash_is_an_empty_listpack)
{
    void *obj = kv_hash_new();
    cr_assert_not_null(obj);
    cr_assert_str_eq(kv_hash_type.name, "hash");
    cr_assert_str_eq(kv_hash_type.encoding(obj), "listpack");
    cr_assert_eq(kv_hash_type.len(obj), 0);
    const char *v;
    size_t vlen;
    cr_assert(!kv_hash_get(obj, "x", 1, &v, &vlen));
    cr_assert(!kv_hash_del(&obj, "x", 1));
    kv_hash_iter it;
    const char *f;
    size_t flen;
    kv_hash_iter_init(&it, obj);
    cr_assert(!kv_hash_iter_next(&it, &f, &flen, &v, &vlen));
    kv_hash_type.free(obj);
}

Test(kv_hash, the_default_limits_are_redis_7_0s)
{
    cr_assert_eq(kv_hash_max_listpack_entries, 512);
    cr_assert_eq(kv_hash_max_listpack_value, 64);
}

Test(kv_hash, the_field_past_the_entry_limit_converts_to_a_hashtable)
{
    defaults();
    void *obj = hash_with(512);
    cr_assert_str_eq(kv_hash_type.encoding(obj), "listpack");
    /* Updating does not add a field. */
    cr_assert_eq(kv_hash_set(&obj, "field0", 6, "w", 1), 0);
    cr_assert_str_eq(kv_hash_type.encoding(obj), "listpack");
    cr_assert_eq(kv_hash_set(&obj, "more", 4, "v", 1), 1);
    cr_assert_str_eq(kv_hash_type.encoding(obj), "hashtable");
    cr_assert_eq(kv_hash_type.len(obj), 513);
    /* and it stays one when it shrinks */
    for (int i = 0; i < 512; i++) {
        char f[32];
        int len = snprintf(f, sizeof(f), "field%d", i);
        cr_assert(kv_hash_del(&obj, f, (size_t)len));
    }
    cr_assert_str_eq(kv_hash_type.encoding(obj), "hashtable");
    cr_assert_eq(kv_hash_type.len(obj), 1);
    const char *v;
    size_t vlen;
    cr_assert(kv_hash_get(obj, "more", 4, &v, &vlen));
    cr_assert(vlen == 1 && v[0] == 'v');
    kv_hash_type.free(obj);
}

Test(kv_hash, a_field_or_value_past_the_value_limit_converts)
{
    defaults();
    char s[66];
    memset(s, 'x', sizeof(s));
    void *obj = hash_with(3);
    cr_assert_eq(kv_hash_set(&obj, "a", 1, s, 64), 1);
    cr_assert_eq(kv_hash_set(&obj, s, 64, "a", 1), 1);
    cr_assert_str_eq(kv_hash_type.encoding(obj), "listpack");
    cr_assert_eq(kv_hash_set(&obj, "a", 1, s, 65), 0);
    cr_assert_str_eq(kv_hash_type.encoding(obj), "hashtable");
    kv_hash_type.free(obj);

    obj = hash_with(3);
    cr_assert_eq(kv_hash_set(&obj, s, 65, "a", 1), 1);
    cr_assert_str_eq(kv_hash_type.encoding(obj), "hashtable");
    cr_assert_eq(kv_hash_type.len(obj), 4);
    kv_hash_type.free(obj);
}

Test(kv_hash, the_limits_follow_their_setters)
{
    kv_hash_set_max_listpack_entries(4);
    void *obj = hash_with(4);
    cr_assert_str_eq(kv_hash_type.encoding(obj), "listpack");
    cr_assert_eq(kv_hash_set(&obj, "e", 1, "v", 1), 1);
    cr_assert_str_eq(kv_hash_type.encoding(obj), "hashtable");
    kv_hash_type.free(obj);

    /* A hash over a lowered limit converts on its next write, even an
     * update, and not on a delete. */
    defaults();
    obj = hash_with(6);
    kv_hash_set_max_listpack_entries(4);
    cr_assert(kv_hash_del(&obj, "field5", 6));
    cr_assert_str_eq(kv_hash_type.encoding(obj), "listpack");
    cr_assert_eq(kv_hash_set(&obj, "field0", 6, "w", 1), 0);
    cr_assert_str_eq(kv_hash_type.encoding(obj), "hashtable");
    cr_assert_eq(kv_hash_type.len(obj), 5);
    kv_hash_type.free(obj);

    defaults();
    kv_hash_set_max_listpack_value(3);
    obj = kv_hash_new();
    cr_assert_eq(kv_hash_set(&obj, "abc", 3, "abc", 3), 1);
    cr_assert_str_eq(kv_hash_type.encoding(obj), "listpack");
    cr_assert_eq(kv_hash_set(&obj, "abc", 3, "abcd", 4), 0);
    cr_assert_str_eq(kv_hash_type.encoding(obj), "hashtable");
    kv_hash_type.free(obj);
    defaults();
}

/* ---- small-encoding details -------------------------------------------------------- */

Test(kv_hash, a_listpack_keeps_insertion_order_through_updates_and_deletes)
{
    defaults();
    void *obj = kv_hash_new();
    const char *names[] = {"a", "b", "c", "d", "e"};
    for (int i = 0; i < 5; i++)
        kv_hash_set(&obj, names[i], 1, "0123456789", 10);
    kv_hash_set(&obj, "c", 1, "", 0);                /* shorter */
    kv_hash_set(&obj, "b", 1, "01234567890123", 14); /* longer */
    kv_hash_set(&obj, "d", 1, "abcdefghij", 10);     /* same length */
    kv_hash_del(&obj, "a", 1);                       /* the first */
    kv_hash_del(&obj, "e", 1);                       /* the last */
    kv_hash_set(&obj, "a", 1, "x", 1);               /* back at the end */
    check_pack(obj);
    const char *want[][2] = {{"b", "01234567890123"}, {"c", ""}, {"d", "abcdefghij"}, {"a", "x"}};
    kv_hash_iter it;
    const char *f, *v;
    size_t flen, vlen;
    int i = 0;
    kv_hash_iter_init(&it, obj);
    while (kv_hash_iter_next(&it, &f, &flen, &v, &vlen)) {
        cr_assert_lt(i, 4);
        cr_assert(flen == strlen(want[i][0]) && !memcmp(f, want[i][0], flen), "field %d", i);
        cr_assert(vlen == strlen(want[i][1]) && !memcmp(v, want[i][1], vlen), "value %d", i);
        i++;
    }
    cr_assert_eq(i, 4);
    kv_hash_type.free(obj);
}

Test(kv_hash, mem_is_the_packs_allocation_and_grows_with_the_hashtable)
{
    defaults();
    void *obj = kv_hash_new();
    cr_assert_eq(kv_hash_type.mem(obj), sizeof(kv_pack));
    kv_hash_set(&obj, "field", 5, "value", 5);
    /* one-byte lengths before and after each element */
    cr_assert_eq(kv_hash_type.mem(obj), sizeof(kv_pack) + 2 + 5 + 2 + 5);
    kv_hash_del(&obj, "field", 5);
    cr_assert_eq(kv_hash_type.mem(obj), sizeof(kv_pack));
    kv_hash_type.free(obj);

    obj = hash_with(1000);
    size_t before = kv_hash_type.mem(obj);
    kv_hash_set(&obj, "one more", 8, "0123456789", 10);
    cr_assert_geq(kv_hash_type.mem(obj), before + 18);
    kv_hash_del(&obj, "one more", 8);
    cr_assert_eq(kv_hash_type.mem(obj), before);
    kv_hash_type.free(obj);
}
