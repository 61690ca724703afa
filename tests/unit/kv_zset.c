/* kv_zset: both encodings hold what a plain sorted array holds, through
 * random adds, updates, removals, range deletes, pops and conversions;
 * ranks, ranges and iterators agree with the array; the skip list keeps
 * its spans, links and byte count right. */
#include <criterion/criterion.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "zset.h"

TestSuite(kv_zset, .timeout = 120);

/* ---- the model: a sorted array ------------------------------------------------------------ */

typedef struct {
    double score;
    char m[24];
    size_t n;
} elem;

typedef struct {
    elem v[4096];
    size_t n;
} model;

static int elem_cmp(const void *a, const void *b)
{
    const elem *x = a, *y = b;
    if (x->score != y->score)
        return x->score < y->score ? -1 : 1;
    return kv_zset_cmp_member(x->m, x->n, y->m, y->n);
}

static long model_find(const model *md, const char *m, size_t n)
{
    for (size_t i = 0; i < md->n; i++)
        if (md->v[i].n == n && !memcmp(md->v[i].m, m, n))
            return (long)i;
    return -1;
}

static void model_sort(model *md)
{
    qsort(md->v, md->n, sizeof(elem), elem_cmp);
}

static void model_del_at(model *md, size_t i, size_t count)
{
    memmove(&md->v[i], &md->v[i + count], (md->n - i - count) * sizeof(elem));
    md->n -= count;
}

/* What the small encoding stores: integral scores as integers (-0 -> 0). */
static double stored(const kv_zset *z, double s)
{
    if (!kv_zset_is_big(z) && s == 0)
        return 0.0;
    return s;
}

/* Every member, in order, with its score and rank; iterators both ways. */
static void check_same(const kv_zset *z, const model *md)
{
    cr_assert(kv_zset_check(z), "invariants broken");
    cr_assert_eq(kv_zset_len(z), md->n);
    size_t i = 0;
    for (kv_zset_it it = kv_zset_at_rank(z, 0, false); kv_zset_it_valid(&it);
         kv_zset_it_next(&it), i++) {
        size_t n;
        const char *m = kv_zset_it_member(&it, &n);
        cr_assert_lt(i, md->n);
        cr_assert_eq(n, md->v[i].n);
        cr_assert(!memcmp(m, md->v[i].m, n));
        double s = kv_zset_it_score(&it);
        cr_assert(s == md->v[i].score || (s == 0 && md->v[i].score == 0), "score %g vs %g", s,
                  md->v[i].score);
    }
    cr_assert_eq(i, md->n);
    for (kv_zset_it it = kv_zset_at_rank(z, 0, true); kv_zset_it_valid(&it); kv_zset_it_prev(&it)) {
        size_t n;
        const char *m = kv_zset_it_member(&it, &n);
        i--;
        cr_assert_eq(n, md->v[i].n);
        cr_assert(!memcmp(m, md->v[i].m, n));
    }
    cr_assert_eq(i, 0);
}

static void random_member(char *m, size_t *n, unsigned range)
{
    *n = (size_t)snprintf(m, 24, "m%u", (unsigned)(rand() % range));
}

static double random_score(void)
{
    switch (rand() % 8) {
    case 0: return (double)(rand() % 5); /* many ties */
    case 1: return (rand() % 2 ? 1 : -1) * INFINITY;
    case 2: return -0.0;
    case 3: return (double)(rand() % 1000) / 7.0;
    case 4: return (double)rand() * 1e10; /* integral, past 2^55 */
    default: return (double)(rand() % 200) - 100;
    }
}

static kv_zrange_spec random_range(void)
{
    kv_zrange_spec r = {random_score(), random_score(), rand() % 2, rand() % 2};
    if (rand() % 3 == 0) {
        double t = r.min;
        r.min = r.max;
        r.max = t;
    }
    return r;
}

static kv_zlex_spec random_lex(char *a, char *b)
{
    kv_zlex_spec r = {0};
    size_t an, bn;
    random_member(a, &an, 60);
    random_member(b, &bn, 60);
    r.min = a, r.minlen = an, r.max = b, r.maxlen = bn;
    r.minkind = rand() % 6 == 0 ? -1 : 0;
    r.maxkind = rand() % 6 == 0 ? 1 : 0;
    if (rand() % 10 == 0)
        r.minkind = 1;
    r.minex = r.minkind ? true : rand() % 2;
    r.maxex = r.maxkind ? true : rand() % 2;
    return r;
}

/* The members of the model in a score range. */
static size_t model_in_range(const model *md, const kv_zrange_spec *r, size_t *first)
{
    size_t n = 0;
    *first = md->n;
    for (size_t i = 0; i < md->n; i++) {
        if (kv_zrange_gte_min(md->v[i].score, r) && kv_zrange_lte_max(md->v[i].score, r)) {
            if (!n)
                *first = i;
            n++;
        }
    }
    return n;
}

static size_t model_in_lex(const model *md, const kv_zlex_spec *r, size_t *first)
{
    size_t n = 0;
    *first = md->n;
    for (size_t i = 0; i < md->n; i++) {
        if (kv_zlex_gte_min(md->v[i].m, md->v[i].n, r) &&
            kv_zlex_lte_max(md->v[i].m, md->v[i].n, r)) {
            if (!n)
                *first = i;
            n++;
        }
    }
    return n;
}

/* Checks the range lookups against the model. For lex ranges the model
 * must hold one score (as ZRANGEBYLEX assumes). */
static void check_ranges(const kv_zset *z, const model *md, bool lex_ok)
{
    for (int k = 0; k < 20; k++) {
        kv_zrange_spec r = random_range();
        size_t first, n = model_in_range(md, &r, &first);
        kv_zset_it a = kv_zset_first_in_range(z, &r), b = kv_zset_last_in_range(z, &r);
        cr_assert_eq(kv_zset_it_valid(&a), n > 0);
        cr_assert_eq(kv_zset_it_valid(&b), n > 0);
        if (n) {
            cr_assert_eq(kv_zset_it_rank(&a), first + 1);
            cr_assert_eq(kv_zset_it_rank(&b), first + n);
        }
    }
    if (!lex_ok)
        return;
    for (int k = 0; k < 20; k++) {
        char sa[24], sb[24];
        kv_zlex_spec r = random_lex(sa, sb);
        size_t first, n = model_in_lex(md, &r, &first);
        kv_zset_it a = kv_zset_first_in_lex(z, &r), b = kv_zset_last_in_lex(z, &r);
        cr_assert_eq(kv_zset_it_valid(&a), n > 0);
        cr_assert_eq(kv_zset_it_valid(&b), n > 0);
        if (n) {
            cr_assert_eq(kv_zset_it_rank(&a), first + 1);
            cr_assert_eq(kv_zset_it_rank(&b), first + n);
        }
    }
}

/* One random operation applied to both. */
static void step(kv_zset *z, model *md, unsigned range, bool lex_only)
{
    char m[24];
    size_t n;
    random_member(m, &n, range);
    int op = rand() % 100;
    if (op < 45) {
        int flags = 0;
        switch (rand() % 6) {
        case 0: flags = KV_ZADD_NX; break;
        case 1: flags = KV_ZADD_XX; break;
        case 2: flags = KV_ZADD_GT; break;
        case 3: flags = KV_ZADD_LT; break;
        case 4: flags = KV_ZADD_INCR; break;
        }
        double s = lex_only ? 0 : random_score();
        if (lex_only && (flags & KV_ZADD_INCR))
            flags = 0;
        int out;
        double ns;
        long i = model_find(md, m, n);
        int r = kv_zset_add(z, s, m, n, flags, &out, &ns);
        if (i < 0) {
            if (flags & KV_ZADD_XX) {
                cr_assert_eq(r, 1);
                cr_assert(out & KV_ZADD_OUT_NOP);
                return;
            }
            cr_assert_eq(r, 1);
            cr_assert(out & KV_ZADD_OUT_ADDED);
            elem *e = &md->v[md->n++];
            e->score = stored(z, s);
            memcpy(e->m, m, n);
            e->n = n;
            model_sort(md);
            return;
        }
        double cur = md->v[i].score;
        if (flags & KV_ZADD_NX) {
            cr_assert(out & KV_ZADD_OUT_NOP);
            return;
        }
        if (flags & KV_ZADD_INCR) {
            s += cur;
            if (isnan(s)) {
                cr_assert_eq(r, 0);
                cr_assert(out & KV_ZADD_OUT_NAN);
                return;
            }
        }
        cr_assert_eq(r, 1);
        if (((flags & KV_ZADD_LT) && s >= cur) || ((flags & KV_ZADD_GT) && s <= cur)) {
            cr_assert(out & KV_ZADD_OUT_NOP);
            return;
        }
        cr_assert_eq(ns, s);
        cr_assert_eq((out & KV_ZADD_OUT_UPDATED) != 0, s != cur);
        md->v[i].score = stored(z, s);
        model_sort(md);
    } else if (op < 65) {
        long i = model_find(md, m, n);
        cr_assert_eq(kv_zset_del(z, m, n), i >= 0);
        if (i >= 0)
            model_del_at(md, (size_t)i, 1);
    } else if (op < 75) {
        long i = model_find(md, m, n);
        double s;
        cr_assert_eq(kv_zset_score(z, m, n, &s), i >= 0);
        cr_assert_eq(kv_zset_rank(z, m, n, false), i);
        if (i >= 0) {
            cr_assert(s == md->v[i].score);
            cr_assert_eq(kv_zset_rank(z, m, n, true), (long)md->n - 1 - i);
            kv_zset_it it = kv_zset_at_rank(z, (size_t)i, false);
            size_t len;
            const char *got = kv_zset_it_member(&it, &len);
            cr_assert(len == n && !memcmp(got, m, n));
            it = kv_zset_at_rank(z, md->n - 1 - (size_t)i, true);
            got = kv_zset_it_member(&it, &len);
            cr_assert(len == n && !memcmp(got, m, n));
        }
    } else if (op < 80) {
        if (!md->n)
            return;
        size_t a = (size_t)rand() % md->n, b = (size_t)rand() % md->n;
        if (a > b) {
            size_t t = a;
            a = b;
            b = t;
        }
        if (b - a > 5)
            b = a + 5;
        cr_assert_eq(kv_zset_delete_rank(z, a, b), b - a + 1);
        model_del_at(md, a, b - a + 1);
    } else if (op < 84) {
        kv_zrange_spec r = random_range();
        size_t first, cnt = model_in_range(md, &r, &first);
        if (cnt > 6)
            return; /* keep the set populated */
        cr_assert_eq(kv_zset_delete_score(z, &r), cnt);
        if (cnt)
            model_del_at(md, first, cnt);
    } else if (op < 88) {
        if (!lex_only)
            return;
        char sa[24], sb[24];
        kv_zlex_spec r = random_lex(sa, sb);
        size_t first, cnt = model_in_lex(md, &r, &first);
        if (cnt > 6)
            return;
        cr_assert_eq(kv_zset_delete_lex(z, &r), cnt);
        if (cnt)
            model_del_at(md, first, cnt);
    } else if (op < 92) {
        size_t cnt = md->n ? (size_t)rand() % (md->n < 3 ? md->n : 3) + 1 : 0;
        bool max = rand() % 2;
        kv_zset_delete_ends(z, max, cnt);
        model_del_at(md, max ? md->n - cnt : 0, cnt);
    } else if (op < 94) {
        kv_zset *d = kv_zset_dup(z);
        cr_assert_not_null(d);
        check_same(d, md);
        if (!kv_zset_is_big(z))
            cr_assert_eq(kv_zset_mem(d), kv_zset_mem(z));
        kv_zset_free(d);
    } else if (op < 96) {
        bool big = !kv_zset_is_big(z);
        if (big || md->n <= 128) {
            cr_assert_eq(kv_zset_convert(z, big), 0);
            for (size_t i = 0; i < md->n; i++)
                md->v[i].score = stored(z, md->v[i].score);
        }
    } else {
        if (!md->n)
            return;
        kv_zset_it it = kv_zset_random(z);
        cr_assert(kv_zset_it_valid(&it));
        size_t len;
        const char *got = kv_zset_it_member(&it, &len);
        cr_assert_geq(model_find(md, got, len), 0);
    }
}

static void run_random(unsigned seed, bool start_big, unsigned range, bool lex_only, int steps)
{
    srand(seed);
    kv_zset *z = kv_zset_new(start_big);
    cr_assert_not_null(z);
    static model md;
    md.n = 0;
    for (int i = 0; i < steps; i++) {
        step(z, &md, range, lex_only);
        if (i % 97 == 0) {
            check_same(z, &md);
            check_ranges(z, &md, lex_only);
        }
    }
    check_same(z, &md);
    check_ranges(z, &md, lex_only);
    kv_zset_free(z);
}

Test(kv_zset, small_sets_match_a_sorted_array_under_random_operations)
{
    for (unsigned seed = 1; seed <= 20; seed++)
        run_random(seed, false, 40, false, 3000);
}

Test(kv_zset, large_sets_match_a_sorted_array_under_random_operations)
{
    for (unsigned seed = 100; seed <= 110; seed++)
        run_random(seed, true, 1500, false, 6000);
}

Test(kv_zset, sets_growing_past_the_listpack_limit_convert_and_stay_right)
{
    for (unsigned seed = 200; seed <= 210; seed++)
        run_random(seed, false, 400, false, 4000);
}

Test(kv_zset, lex_ranges_on_equal_scores_match_the_array)
{
    for (unsigned seed = 300; seed <= 305; seed++) {
        run_random(seed, false, 60, true, 2000);
        run_random(seed, true, 60, true, 2000);
    }
}

/* ---- specific behaviours ------------------------------------------------------------------ */

Test(kv_zset, small_scores_survive_the_compact_encoding)
{
    const double v[] = {0,
                        1,
                        -1,
                        127,
                        128,
                        -128,
                        -129,
                        32767,
                        -32768,
                        1e15,
                        -1e15,
                        36028797018963967.0,
                        -36028797018963967.0,
                        36028797018963968.0,
                        1e300,
                        -1e300,
                        0.1,
                        -2.5,
                        INFINITY,
                        -INFINITY,
                        4503599627370497.0,
                        5e-324,
                        1.7976931348623157e308};
    kv_zset *z = kv_zset_new(false);
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        char m[16];
        int n = snprintf(m, sizeof(m), "k%zu", i);
        int out;
        cr_assert_eq(kv_zset_add(z, v[i], m, (size_t)n, 0, &out, NULL), 1);
        double s;
        cr_assert(kv_zset_score(z, m, (size_t)n, &s));
        cr_assert(s == v[i], "%.17g came back as %.17g", v[i], s);
    }
    cr_assert(kv_zset_check(z));
    kv_zset_free(z);
}

Test(kv_zset, negative_zero_is_zero_in_the_small_encoding_only)
{
    int out;
    double s;
    kv_zset *z = kv_zset_new(false);
    kv_zset_add(z, -0.0, "a", 1, 0, &out, NULL);
    cr_assert(kv_zset_score(z, "a", 1, &s));
    cr_assert(s == 0 && !signbit(s));
    kv_zset_free(z);
    z = kv_zset_new(true);
    kv_zset_add(z, -0.0, "a", 1, 0, &out, NULL);
    cr_assert(kv_zset_score(z, "a", 1, &s));
    cr_assert(s == 0 && signbit(s));
    kv_zset_free(z);
}

Test(kv_zset, adding_the_129th_member_or_a_long_one_converts_to_the_skiplist)
{
    kv_zset *z = kv_zset_new(false);
    int out;
    for (int i = 0; i < 128; i++) {
        char m[16];
        int n = snprintf(m, sizeof(m), "m%d", i);
        kv_zset_add(z, i, m, (size_t)n, 0, &out, NULL);
    }
    cr_assert(!kv_zset_is_big(z));
    kv_zset_add(z, 5, "m5", 2, 0, &out, NULL); /* an update does not convert */
    cr_assert(!kv_zset_is_big(z));
    kv_zset_add(z, 1, "new", 3, 0, &out, NULL);
    cr_assert(kv_zset_is_big(z));
    cr_assert(kv_zset_check(z));
    kv_zset_free(z);

    char longm[65];
    memset(longm, 'x', sizeof(longm));
    z = kv_zset_new(false);
    kv_zset_add(z, 1, longm, 64, 0, &out, NULL);
    cr_assert(!kv_zset_is_big(z));
    kv_zset_add(z, 1, longm, 65, 0, &out, NULL);
    cr_assert(kv_zset_is_big(z));
    kv_zset_free(z);
}

Test(kv_zset, an_update_that_keeps_its_place_rewrites_the_score_in_place)
{
    kv_zset *z = kv_zset_new(false);
    int out;
    kv_zset_add(z, 1, "a", 1, 0, &out, NULL);
    kv_zset_add(z, 10, "b", 1, 0, &out, NULL);
    kv_zset_add(z, 20, "c", 1, 0, &out, NULL);
    kv_zset_add(z, 15.5, "b", 1, 0, &out, NULL);
    cr_assert(out & KV_ZADD_OUT_UPDATED);
    kv_zset_add(z, 25, "b", 1, 0, &out, NULL);
    kv_zset_add(z, -3, "c", 1, 0, &out, NULL);
    cr_assert(kv_zset_check(z));
    cr_assert_eq(kv_zset_rank(z, "c", 1, false), 0);
    cr_assert_eq(kv_zset_rank(z, "a", 1, false), 1);
    cr_assert_eq(kv_zset_rank(z, "b", 1, false), 2);
    kv_zset_free(z);
}

Test(kv_zset, memory_grows_and_shrinks_with_the_members)
{
    kv_zset *z = kv_zset_new(true);
    size_t empty = kv_zset_mem(z);
    int out;
    for (int i = 0; i < 1000; i++) {
        char m[16];
        int n = snprintf(m, sizeof(m), "member:%d", i);
        kv_zset_add(z, i, m, (size_t)n, 0, &out, NULL);
    }
    size_t full = kv_zset_mem(z);
    cr_assert_gt(full, empty + 1000 * 40);
    kv_zset_delete_ends(z, false, 1000);
    cr_assert_eq(kv_zset_len(z), 0);
    cr_assert(kv_zset_check(z));
    cr_assert_lt(kv_zset_mem(z), empty + 256);
    kv_zset_free(z);
}
