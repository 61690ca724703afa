/* The list object (apps/kv/t_list.c): a quicklist of kv_pack nodes must
 * hold exactly the elements a plain array would after any sequence of
 * pushes, index reads and writes, inserts, removals and range deletions,
 * with its links, per-node counts, 8 KiB node bound and byte count kept
 * right throughout. */
#include <criterion/criterion.h>

#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv.h"
#include "t_list.h"

TestSuite(kv_list, .timeout = 120);

/* ---- the model: an array of strings ------------------------------------------------------- */

typedef struct elem {
    char *s;
    size_t n;
} elem;

typedef struct model {
    elem *v;
    size_t len, cap;
} model;

static elem elem_of(const char *s, size_t n)
{
    elem e = {malloc(n ? n : 1), n};
    cr_assert_not_null(e.s);
    memcpy(e.s, s, n);
    return e;
}

static void m_insert(model *m, size_t at, const char *s, size_t n)
{
    if (m->len == m->cap) {
        m->cap = m->cap ? 2 * m->cap : 64;
        m->v = realloc(m->v, m->cap * sizeof(*m->v));
        cr_assert_not_null(m->v);
    }
    memmove(m->v + at + 1, m->v + at, (m->len - at) * sizeof(*m->v));
    m->v[at] = elem_of(s, n);
    m->len++;
}

static void m_delete(model *m, size_t at, size_t count)
{
    for (size_t i = at; i < at + count; i++)
        free(m->v[i].s);
    memmove(m->v + at, m->v + at + count, (m->len - at - count) * sizeof(*m->v));
    m->len -= count;
}

static bool m_eq(const elem *e, const char *s, size_t n)
{
    return e->n == n && !memcmp(e->s, s, n);
}

static void m_free(model *m)
{
    m_delete(m, 0, m->len);
    free(m->v);
}

/* ---- comparing ----------------------------------------------------------------------------- */

typedef struct walk {
    const model *m;
    size_t i;
} walk;

static void walk_one(void *arg, const char *s, size_t n)
{
    walk *w = arg;
    cr_assert_lt(w->i, w->m->len, "more elements than the model");
    cr_assert(m_eq(&w->m->v[w->i], s, n), "element %zu differs", w->i);
    w->i++;
}

/* The list holds exactly the model's elements, and its invariants hold. */
static void same(const kv_list *l, const model *m)
{
    cr_assert(kv_list__valid(l), "list invariants broken");
    cr_assert_eq(kv_list_len(l), m->len);
    walk w = {m, 0};
    kv_list_each(l, walk_one, &w);
    cr_assert_eq(w.i, m->len);
}

/* ---- element pool -------------------------------------------------------------------------- */

/* Elements of the sizes that matter: short, around the 255-byte switch to
 * wide length fields, large, and past a node's 8 KiB. Few distinct ones, so
 * that removals and pivots find matches. */
#define POOL 24
static elem pool[POOL];

static void pool_init(unsigned seed)
{
    static const size_t sizes[POOL] = {0,    1,    2,    3,    5,    8,    13,   40,
                                       100,  253,  254,  255,  256,  300,  600,  1000,
                                       2000, 3000, 4095, 4096, 8180, 8192, 9000, 20000};
    srand(seed);
    for (size_t i = 0; i < POOL; i++) {
        char *s = malloc(sizes[i] + 1);
        cr_assert_not_null(s);
        for (size_t j = 0; j < sizes[i]; j++)
            s[j] = (char)('a' + (i + j) % 26);
        if (sizes[i])
            s[0] = (char)('A' + i); /* distinct even at equal length */
        pool[i] = (elem){s, sizes[i]};
    }
}

static void pool_free(void)
{
    for (size_t i = 0; i < POOL; i++)
        free(pool[i].s);
}

/* Mostly short elements, so that nodes fill with many. */
static const elem *pick(void)
{
    unsigned r = (unsigned)rand() % 100;
    if (r < 70)
        return &pool[(unsigned)rand() % 9];
    if (r < 90)
        return &pool[9 + (unsigned)rand() % 6];
    if (r < 98)
        return &pool[15 + (unsigned)rand() % 5];
    return &pool[20 + (unsigned)rand() % 4];
}

/* ---- tests ---------------------------------------------------------------------------------- */

Test(kv_list, a_new_list_is_empty_and_reports_quicklist_as_redis_7_0_does)
{
    kv_list *l = kv_list_new();
    cr_assert_not_null(l);
    cr_assert_eq(kv_list_len(l), 0);
    cr_assert(kv_list__valid(l));
    cr_assert(kv_list_push(l, false, "a", 1));
    cr_assert_str_eq(kv_list_type.encoding(l), "quicklist");
    cr_assert_str_eq(kv_list_type.name, "list");
    cr_assert_eq(kv_list_type.len(l), 1);
    kv_list_type.free(l);
}

Test(kv_list, pushes_at_both_ends_keep_order_across_many_nodes)
{
    kv_list *l = kv_list_new();
    model m = {0};
    for (int i = 0; i < 20000; i++) {
        char buf[32];
        int n = snprintf(buf, sizeof(buf), "%d", i);
        bool left = i % 3 == 0;
        cr_assert(kv_list_push(l, left, buf, (size_t)n));
        m_insert(&m, left ? 0 : m.len, buf, (size_t)n);
    }
    same(l, &m);
    /* Index reads from both ends, and out of range. */
    for (long long i = -(long long)m.len - 2; i < (long long)m.len + 2; i += 37) {
        const char *s;
        size_t n;
        bool ok = kv_list_get(l, i, &s, &n);
        long long at = i < 0 ? i + (long long)m.len : i;
        cr_assert_eq(ok, at >= 0 && at < (long long)m.len, "index %lld", i);
        if (ok)
            cr_assert(m_eq(&m.v[at], s, n), "index %lld", i);
    }
    /* The bytes used grow with the elements but stay within a small
     * factor of them. */
    size_t payload = 0;
    for (size_t i = 0; i < m.len; i++)
        payload += m.v[i].n;
    cr_assert_gt(kv_list_mem(l), payload);
    cr_assert_lt(kv_list_mem(l), 4 * payload);
    kv_list_free(l);
    m_free(&m);
}

Test(kv_list, a_duplicate_is_deep_and_equal)
{
    pool_init(2);
    kv_list *l = kv_list_new();
    model m = {0};
    for (int i = 0; i < 3000; i++) {
        const elem *e = pick();
        cr_assert(kv_list_push(l, false, e->s, e->n));
        m_insert(&m, m.len, e->s, e->n);
    }
    kv_list *d = kv_list_type.dup(l);
    cr_assert_not_null(d);
    cr_assert_eq(kv_list_mem(d), kv_list_mem(l));
    kv_list_del_range(l, 0, kv_list_len(l));
    cr_assert_eq(kv_list_len(l), 0);
    cr_assert(kv_list__valid(l));
    same(d, &m);
    kv_list_free(l);
    kv_list_free(d);
    m_free(&m);
    pool_free();
}

Test(kv_list, removal_counts_from_the_head_the_tail_or_everywhere)
{
    kv_list *l = kv_list_new();
    model m = {0};
    const char *pat[] = {"x", "y", "x", "z", "x"};
    for (int r = 0; r < 4000; r++) {
        cr_assert(kv_list_push(l, false, pat[r % 5], 1));
        m_insert(&m, m.len, pat[r % 5], 1);
    }
    /* 2400 "x": the first 1000, then the last 1000, then the rest. */
    cr_assert_eq(kv_list_rem(l, 1000, "x", 1), 1000);
    for (size_t i = 0, k = 0; i < m.len && k < 1000;) {
        if (m_eq(&m.v[i], "x", 1)) {
            m_delete(&m, i, 1);
            k++;
        } else {
            i++;
        }
    }
    same(l, &m);
    cr_assert_eq(kv_list_rem(l, -1000, "x", 1), 1000);
    for (size_t i = m.len, k = 0; i-- > 0 && k < 1000;) {
        if (m_eq(&m.v[i], "x", 1)) {
            m_delete(&m, i, 1);
            k++;
        }
    }
    same(l, &m);
    /* LREM's LLONG_MIN removes every match, as in Redis 7.0. */
    cr_assert_eq(kv_list_rem(l, LLONG_MIN, "x", 1), 400);
    cr_assert_eq(kv_list_rem(l, 0, "x", 1), 0);
    cr_assert_eq(kv_list_rem(l, 0, "y", 1), 800);
    cr_assert_eq(kv_list_rem(l, 5, "z", 1), 5);
    cr_assert_eq(kv_list_len(l), 795);
    cr_assert(kv_list__valid(l));
    cr_assert_eq(kv_list_rem(l, 0, "z", 1), 795);
    cr_assert_eq(kv_list_len(l), 0);
    cr_assert(kv_list__valid(l));
    kv_list_free(l);
    m_free(&m);
}

Test(kv_list, elements_larger_than_a_node_get_nodes_of_their_own)
{
    pool_init(4);
    kv_list *l = kv_list_new();
    model m = {0};
    const elem *huge = &pool[POOL - 1];
    for (int i = 0; i < 50; i++) {
        const elem *e = i % 5 == 0 ? huge : &pool[i % 9];
        bool left = i % 2;
        cr_assert(kv_list_push(l, left, e->s, e->n));
        m_insert(&m, left ? 0 : m.len, e->s, e->n);
    }
    same(l, &m);
    /* Small elements become huge ones and huge ones small. */
    for (size_t i = 0; i < 50; i += 3) {
        cr_assert_eq(kv_list_set(l, (long long)i, huge->s, huge->n), 1);
        free(m.v[i].s);
        m.v[i] = elem_of(huge->s, huge->n);
        same(l, &m);
    }
    for (size_t i = 1; i < 50; i += 3) {
        cr_assert_eq(kv_list_set(l, -(long long)i, "s", 1), 1);
        free(m.v[m.len - i].s);
        m.v[m.len - i] = elem_of("s", 1);
        same(l, &m);
    }
    size_t at = 0;
    while (!m_eq(&m.v[at], huge->s, huge->n))
        at++;
    cr_assert_eq(kv_list_insert(l, huge->s, huge->n, true, "after", 5), 1);
    m_insert(&m, at + 1, "after", 5);
    same(l, &m);
    cr_assert_eq(kv_list_set(l, 50, "x", 1), 1);
    cr_assert_eq(kv_list_set(l, 51, "x", 1), 0);
    cr_assert_eq(kv_list_set(l, -52, "x", 1), 0);
    free(m.v[50].s);
    m.v[50] = elem_of("x", 1);
    same(l, &m);
    kv_list_free(l);
    m_free(&m);
    pool_free();
}

/* One random operation on both; returns its name for failure messages. */
static const char *random_op(kv_list *l, model *m)
{
    unsigned op = (unsigned)rand() % 100;
    const elem *e = pick();
    if (op < 30 || m->len == 0) {
        bool left = rand() % 2;
        cr_assert(kv_list_push(l, left, e->s, e->n));
        m_insert(m, left ? 0 : m->len, e->s, e->n);
        return "push";
    }
    long long span = (long long)m->len;
    if (op < 40) {
        long long i = rand() % (2 * span + 4) - span - 2;
        const char *s;
        size_t n;
        bool ok = kv_list_get(l, i, &s, &n);
        long long at = i < 0 ? i + span : i;
        cr_assert_eq(ok, at >= 0 && at < span);
        if (ok)
            cr_assert(m_eq(&m->v[at], s, n));
        return "get";
    }
    if (op < 55) {
        long long i = rand() % (2 * span + 2) - span - 1;
        long long at = i < 0 ? i + span : i;
        int r = kv_list_set(l, i, e->s, e->n);
        cr_assert_eq(r, at >= 0 && at < span ? 1 : 0);
        if (r == 1) {
            free(m->v[at].s);
            m->v[at] = elem_of(e->s, e->n);
        }
        return "set";
    }
    if (op < 75) {
        const elem *pivot = pick();
        bool after = rand() % 2;
        size_t at = 0;
        while (at < m->len && !m_eq(&m->v[at], pivot->s, pivot->n))
            at++;
        int r = kv_list_insert(l, pivot->s, pivot->n, after, e->s, e->n);
        cr_assert_eq(r, at < m->len ? 1 : 0);
        if (r == 1)
            m_insert(m, at + after, e->s, e->n);
        return "insert";
    }
    if (op < 85) {
        long long count = rand() % 7 - 3;
        size_t want = count < 0 ? (size_t)-count : (size_t)count;
        size_t k = 0;
        if (count >= 0) {
            for (size_t i = 0; i < m->len && (!count || k < want);) {
                if (m_eq(&m->v[i], e->s, e->n)) {
                    m_delete(m, i, 1);
                    k++;
                } else {
                    i++;
                }
            }
        } else {
            for (size_t i = m->len; i-- > 0 && k < want;) {
                if (m_eq(&m->v[i], e->s, e->n)) {
                    m_delete(m, i, 1);
                    k++;
                }
            }
        }
        cr_assert_eq(kv_list_rem(l, count, e->s, e->n), k);
        return "rem";
    }
    /* Mostly short deletions at either end (pops), sometimes long ones
     * anywhere (LTRIM). */
    size_t count = (size_t)rand() % (rand() % 4 ? 4 : m->len + 1);
    if (count > m->len)
        count = m->len;
    size_t start;
    switch (rand() % 3) {
    case 0: start = 0; break;
    case 1: start = m->len - count; break;
    default: start = (size_t)rand() % (m->len - count + 1);
    }
    kv_list_del_range(l, start, count);
    m_delete(m, start, count);
    return "del_range";
}

Test(kv_list, random_operations_match_an_array_model)
{
    for (unsigned seed = 1; seed <= 12; seed++) {
        pool_init(seed);
        kv_list *l = kv_list_new();
        model m = {0};
        for (int i = 0; i < 6000; i++) {
            const char *op = random_op(l, &m);
            cr_assert(kv_list__valid(l), "seed %u step %d (%s): invariants broken", seed, i, op);
            cr_assert_eq(kv_list_len(l), m.len, "seed %u step %d (%s)", seed, i, op);
            if (i % 97 == 0)
                same(l, &m);
        }
        same(l, &m);
        kv_list *d = kv_list_type.dup(l);
        cr_assert_not_null(d);
        same(d, &m);
        kv_list_free(d);
        kv_list_free(l);
        m_free(&m);
        pool_free();
    }
}
