/* The set object (apps/kv/t_set.c): after any sequence of adds and
 * removes it must hold exactly the members a plain list would, be an
 * intset (sorted, unique, of the narrowest width its members ever needed)
 * exactly while Redis 7.0's would be, report its bytes, and copy itself
 * with the same encoding. */
#include <criterion/criterion.h>

#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv.h"
#include "t_set.h"

TestSuite(kv_set, .timeout = 120);

#define LIT(s) (s), (sizeof(s) - 1)

/* ---- the model: a list of distinct strings -------------------------------------------------- */

typedef struct member {
    char *s;
    size_t n;
} member;

typedef struct model {
    member *v;
    size_t len, cap;
    bool ever_string; /* a non-integer was added: never an intset again */
} model;

static long m_find(const model *m, const char *s, size_t n)
{
    for (size_t i = 0; i < m->len; i++)
        if (m->v[i].n == n && !memcmp(m->v[i].s, s, n))
            return (long)i;
    return -1;
}

static bool m_add(model *m, const char *s, size_t n)
{
    if (m_find(m, s, n) >= 0)
        return false;
    if (m->len == m->cap) {
        m->cap = m->cap ? 2 * m->cap : 64;
        m->v = realloc(m->v, m->cap * sizeof(*m->v));
        cr_assert_not_null(m->v);
    }
    member e = {malloc(n ? n : 1), n};
    cr_assert_not_null(e.s);
    memcpy(e.s, s, n);
    m->v[m->len++] = e;
    return true;
}

static bool m_remove(model *m, const char *s, size_t n)
{
    long i = m_find(m, s, n);
    if (i < 0)
        return false;
    free(m->v[i].s);
    m->v[i] = m->v[--m->len];
    return true;
}

static void m_free(model *m)
{
    for (size_t i = 0; i < m->len; i++)
        free(m->v[i].s);
    free(m->v);
}

static int cmp_member(const void *a, const void *b)
{
    const member *x = a, *y = b;
    size_t n = x->n < y->n ? x->n : y->n;
    int c = memcmp(x->s, y->s, n);
    return c ? c : (x->n > y->n) - (x->n < y->n);
}

/* Redis's string2ll() acceptance, written out independently. */
static bool is_integer(const char *s, size_t n, long long *out)
{
    char buf[32];
    if (n == 0 || n >= sizeof(buf))
        return false;
    memcpy(buf, s, n);
    buf[n] = 0;
    const char *p = buf[0] == '-' ? buf + 1 : buf;
    if (!*p || (p[0] == '0' && (p[1] || p != buf)))
        return false; /* "", "-", leading zeros, "-0" */
    for (const char *q = p; *q; q++)
        if (*q < '0' || *q > '9')
            return false;
    char *end;
    errno = 0;
    long long v = strtoll(buf, &end, 10);
    if (errno)
        return false;
    *out = v;
    return true;
}

/* ---- comparing ------------------------------------------------------------------------------- */

typedef struct collect {
    member *v;
    size_t n, cap;
} collect;

static void collect_one(void *arg, const char *s, size_t n)
{
    collect *c = arg;
    if (c->n == c->cap) {
        c->cap = c->cap ? 2 * c->cap : 64;
        c->v = realloc(c->v, c->cap * sizeof(*c->v));
        cr_assert_not_null(c->v);
    }
    member e = {malloc(n ? n : 1), n};
    memcpy(e.s, s, n);
    c->v[c->n++] = e;
}

static void collect_free(collect *c)
{
    for (size_t i = 0; i < c->n; i++)
        free(c->v[i].s);
    free(c->v);
}

static unsigned width_of(long long v)
{
    return v >= INT16_MIN && v <= INT16_MAX ? 2 : v >= INT32_MIN && v <= INT32_MAX ? 4 : 8;
}

/* The set holds exactly the model's members, in ascending order if it is
 * an intset, and is encoded as Redis would encode it. */
static void check(const kv_set *s, const model *m, unsigned *max_width)
{
    cr_assert(kv_set__valid(s));
    cr_assert_eq(kv_set_len(s), m->len);
    collect got = {0};
    kv_set_each(s, collect_one, &got);
    cr_assert_eq(got.n, m->len);
    bool intset = !strcmp(kv_set_encoding(s), "intset");
    if (intset) {
        cr_assert(!m->ever_string, "an intset after a non-integer member");
        long long prev = 0;
        for (size_t i = 0; i < got.n; i++) {
            long long v;
            cr_assert(is_integer(got.v[i].s, got.v[i].n, &v), "non-integer in an intset");
            cr_assert(i == 0 || v > prev, "intset not ascending");
            prev = v;
            if (width_of(v) > *max_width)
                *max_width = width_of(v);
        }
        /* Redis's intset never narrows: the widest member ever decides. */
        cr_assert_eq(kv_set_mem(s), 8 + m->len * *max_width);
    } else {
        cr_assert_str_eq(kv_set_encoding(s), "hashtable");
        cr_assert(kv_set_mem(s) > m->len * 16);
    }
    qsort(got.v, got.n, sizeof(*got.v), cmp_member);
    member *want = malloc((m->len ? m->len : 1) * sizeof(*want));
    memcpy(want, m->v, m->len * sizeof(*want));
    qsort(want, m->len, sizeof(*want), cmp_member);
    for (size_t i = 0; i < m->len; i++) {
        cr_assert_eq(got.v[i].n, want[i].n);
        cr_assert(!memcmp(got.v[i].s, want[i].s, want[i].n), "members differ");
        cr_assert(kv_set_contains(s, want[i].s, want[i].n));
    }
    free(want);
    collect_free(&got);
}

static int add(kv_set **s, model *m, const char *p, size_t n)
{
    long long v;
    int r = kv_set_add(s, p, n);
    cr_assert_geq(r, 0);
    cr_assert_eq(r == 1, m_add(m, p, n), "add of '%.*s'", (int)n, p);
    if (!is_integer(p, n, &v))
        m->ever_string = true;
    return r;
}

/* ---- tests -------------------------------------------------------------------------------------
 */

Test(kv_set, integers_make_a_sorted_intset_that_widens_as_members_need)
{
    kv_set *s = kv_set_new();
    model m = {0};
    unsigned w = 2;
    cr_assert_not_null(s);
    cr_assert_eq(kv_set_len(s), 0);
    cr_assert_str_eq(kv_set_encoding(s), "intset");
    cr_assert_eq(kv_set_mem(s), 8);
    const char *vals[] = {"5",
                          "-3",
                          "32767",
                          "-32768",
                          "5",
                          "32768",
                          "-2147483648",
                          "0",
                          "2147483648",
                          "-9223372036854775808",
                          "9223372036854775807",
                          "100",
                          "-1"};
    for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
        add(&s, &m, vals[i], strlen(vals[i]));
        check(s, &m, &w);
    }
    cr_assert_eq(w, 8);
    cr_assert_str_eq(kv_set_encoding(s), "intset");
    /* Removing the wide members does not narrow it. */
    cr_assert(kv_set_remove(&s, LIT("-9223372036854775808")));
    cr_assert(kv_set_remove(&s, LIT("9223372036854775807")));
    m_remove(&m, LIT("-9223372036854775808"));
    m_remove(&m, LIT("9223372036854775807"));
    check(s, &m, &w);
    cr_assert(!kv_set_remove(&s, LIT("77")));
    cr_assert(!kv_set_remove(&s, LIT("x")));
    cr_assert(!kv_set_contains(s, LIT("05")));
    cr_assert(!kv_set_contains(s, LIT("99999999999999999999")));
    kv_set_free(s);
    m_free(&m);
}

Test(kv_set, widening_keeps_every_member_in_place)
{
    /* Each width upgrade puts the new value at one end: check both ends. */
    for (int neg = 0; neg < 2; neg++) {
        for (long long big = 40000; big < 10000000000LL; big *= 1000) {
            kv_set *s = kv_set_new();
            model m = {0};
            unsigned w = 2;
            char buf[32];
            for (int i = -50; i <= 50; i += 7) {
                snprintf(buf, sizeof(buf), "%d", i);
                add(&s, &m, buf, strlen(buf));
            }
            snprintf(buf, sizeof(buf), "%lld", neg ? -big : big);
            add(&s, &m, buf, strlen(buf));
            check(s, &m, &w);
            kv_set_free(s);
            m_free(&m);
        }
    }
}

Test(kv_set, a_member_that_is_not_a_plain_integer_makes_a_hashtable)
{
    const char *not_ints[] = {"a",
                              "01",
                              "+1",
                              "-0",
                              " 1",
                              "1 ",
                              "",
                              "1.5",
                              "9223372036854775808",
                              "-9223372036854775809",
                              "0x10"};
    for (size_t i = 0; i < sizeof(not_ints) / sizeof(not_ints[0]); i++) {
        kv_set *s = kv_set_new();
        model m = {0};
        unsigned w = 2;
        add(&s, &m, LIT("1"));
        add(&s, &m, LIT("2"));
        cr_assert_str_eq(kv_set_encoding(s), "intset");
        add(&s, &m, not_ints[i], strlen(not_ints[i]));
        cr_assert_str_eq(kv_set_encoding(s), "hashtable", "'%s'", not_ints[i]);
        check(s, &m, &w);
        /* and it stays one when the member goes */
        cr_assert(kv_set_remove(&s, not_ints[i], strlen(not_ints[i])));
        m_remove(&m, not_ints[i], strlen(not_ints[i]));
        cr_assert_str_eq(kv_set_encoding(s), "hashtable");
        check(s, &m, &w);
        cr_assert(kv_set_contains(s, LIT("1")));
        kv_set_free(s);
        m_free(&m);
    }
}

Test(kv_set, more_than_set_max_intset_entries_integers_make_a_hashtable)
{
    kv_set *s = kv_set_new();
    model m = {0};
    unsigned w = 2;
    char buf[32];
    for (int i = 0; i < 512; i++) {
        snprintf(buf, sizeof(buf), "%d", i * 3);
        add(&s, &m, buf, strlen(buf));
    }
    cr_assert_str_eq(kv_set_encoding(s), "intset");
    add(&s, &m, LIT("0")); /* present: no conversion */
    cr_assert_str_eq(kv_set_encoding(s), "intset");
    add(&s, &m, LIT("1"));
    cr_assert_str_eq(kv_set_encoding(s), "hashtable");
    m.ever_string = true;
    check(s, &m, &w);
    kv_set_free(s);
    m_free(&m);

    /* The threshold is read at each add. */
    size_t saved = kv_set_max_intset_entries;
    kv_set_max_intset_entries = 3;
    s = kv_set_new();
    m = (model){0};
    add(&s, &m, LIT("1"));
    add(&s, &m, LIT("2"));
    add(&s, &m, LIT("3"));
    cr_assert_str_eq(kv_set_encoding(s), "intset");
    add(&s, &m, LIT("4"));
    cr_assert_str_eq(kv_set_encoding(s), "hashtable");
    kv_set_free(s);
    m_free(&m);
    kv_set_max_intset_entries = 0;
    s = kv_set_new();
    cr_assert_eq(kv_set_add(&s, LIT("7")), 1);
    cr_assert_str_eq(kv_set_encoding(s), "hashtable");
    kv_set_free(s);
    kv_set_max_intset_entries = saved;
}

Test(kv_set, a_copy_has_the_same_encoding_and_members_and_is_independent)
{
    for (int strings = 0; strings < 2; strings++) {
        kv_set *s = kv_set_new();
        model m = {0};
        unsigned w = 2;
        char buf[32];
        for (int i = 0; i < 300; i++) {
            snprintf(buf, sizeof(buf), strings ? "m%d" : "%d", i * 1000);
            add(&s, &m, buf, strlen(buf));
        }
        kv_set *d = kv_set_type.dup(s);
        cr_assert_not_null(d);
        cr_assert_str_eq(kv_set_encoding(d), kv_set_encoding(s));
        cr_assert_eq(kv_set_mem(d), kv_set_mem(s));
        check(d, &m, &w);
        cr_assert(kv_set_remove(&d, buf, strlen(buf)));
        check(s, &m, &w);
        cr_assert_eq(kv_set_len(d), kv_set_len(s) - 1);
        kv_set_free(d);
        kv_set_free(s);
        m_free(&m);
    }
}

/* A random mix of integers of every width, integer-like strings and
 * words, added and removed against the model. */
static void random_member(char *buf, size_t cap, bool ints_only)
{
    static const long long scale[] = {10, 1000, 40000, 3000000000LL, 9000000000000000000LL};
    int kind = rand() % (ints_only ? 5 : 8);
    if (kind < 5) {
        long long v = (long long)(((unsigned long long)rand() << 31 ^ (unsigned)rand()) %
                                  (unsigned long long)scale[kind]);
        snprintf(buf, cap, "%lld", rand() % 2 ? -v : v);
    } else if (kind == 5) {
        snprintf(buf, cap, "0%d", rand() % 100);
    } else {
        snprintf(buf, cap, "w%d", rand() % 300);
    }
}

Test(kv_set, random_adds_and_removes_match_a_model)
{
    srand(12345);
    for (int round = 0; round < 60; round++) {
        kv_set *s = kv_set_new();
        model m = {0};
        unsigned w = 2;
        bool ints_only = round % 3 != 0;
        size_t limit = round % 2 ? 40 : 700; /* around set-max-intset-entries, or small */
        char buf[32];
        for (int op = 0; op < 3000; op++) {
            random_member(buf, sizeof(buf), ints_only);
            size_t n = strlen(buf);
            if ((size_t)rand() % (limit + 1) >= m.len) {
                add(&s, &m, buf, n);
            } else {
                bool want = m_remove(&m, buf, n);
                if (!want && m.len && rand() % 2) {
                    /* remove a member that is surely there */
                    member *pick = &m.v[(size_t)rand() % m.len];
                    n = pick->n;
                    memcpy(buf, pick->s, n);
                    want = m_remove(&m, buf, n);
                }
                cr_assert_eq(kv_set_remove(&s, buf, n), want);
            }
            if (m.len > 512)
                m.ever_string = true; /* converted for good */
            if (op % 97 == 0)
                check(s, &m, &w);
            cr_assert_eq(kv_set_len(s), m.len);
        }
        check(s, &m, &w);
        kv_set_free(s);
        m_free(&m);
    }
}
