/* SORT and SORT_RO key [BY pattern] [LIMIT offset count] [GET pattern ...]
 * [ASC|DESC] [ALPHA] [STORE destination], on lists, sets and sorted sets,
 * answering as Redis 7.0's sortCommandGeneric() does.
 *
 * The elements are copied out of the object first (BY and GET read other
 * keys, and STORE may overwrite the sorted key itself), sorted with a
 * stable merge sort (the glibc qsort Redis calls is one), then replied or
 * stored as a list.
 *
 * BY and GET patterns name keys that only the elements reveal, so a SORT
 * that uses them reports every shard as its keys (see kv_sort_keys()): the
 * server then runs it holding all shards. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kv.h"
#include "t_hash.h"
#include "t_list.h"
#include "t_set.h"
#include "t_zset.h"

void kv_cmd_sort(kv_cmd_ctx *c, size_t argc, const resp_arg *argv);
void kv_cmd_sort_ro(kv_cmd_ctx *c, size_t argc, const resp_arg *argv);
int kv_sort_keys(size_t argc, const resp_arg *argv, size_t *idx, size_t max);
int kv_sort_ro_keys(size_t argc, const resp_arg *argv, size_t *idx, size_t max);

/* ---- patterns ------------------------------------------------------------------------- */

/* Redis reads patterns as C strings: the bytes up to the first NUL. */
static size_t cstr_len(const resp_arg *a)
{
    return strnlen(a->ptr, a->len);
}

static bool is_hash_pattern(const resp_arg *p)
{
    return cstr_len(p) == 1 && p->ptr[0] == '#';
}

static bool has_star(const resp_arg *p)
{
    return memchr(p->ptr, '*', cstr_len(p)) != NULL;
}

/* Whether a GET or BY pattern reads other keys. */
static bool reads_keys(const resp_arg *p, bool get)
{
    return has_star(p) && !(get && is_hash_pattern(p));
}

typedef struct scratch {
    char *buf;
    size_t cap;
} scratch;

static char *scratch_get(scratch *s, size_t n)
{
    if (n > s->cap) {
        size_t cap = s->cap ? s->cap : 64;
        while (cap < n)
            cap *= 2;
        char *b = realloc(s->buf, cap);
        if (!b)
            return NULL;
        s->buf = b;
        s->cap = cap;
    }
    return s->buf;
}

enum { FOUND = 1, MISSING = 0, NOMEM = -1 };

/* The value pattern p names for element s (Redis's lookupKeyByPattern()):
 * "#" is the element itself; otherwise the first '*' is replaced by the
 * element to make a key, whose string value it is, or, with "->field"
 * after the '*', the value of that field of the hash at the key. A key or
 * field that is missing or of another type gives MISSING. *v stays valid
 * until the keyspace changes. */
static int lookup_pattern(kv_cmd_ctx *c, scratch *keybuf, const resp_arg *p, const char *s,
                          size_t n, const char **v, size_t *vlen)
{
    if (is_hash_pattern(p)) {
        *v = s;
        *vlen = n;
        return FOUND;
    }
    size_t clen = cstr_len(p);
    const char *star = memchr(p->ptr, '*', clen);
    if (!star)
        return MISSING;
    const char *end = p->ptr + clen, *field = NULL;
    for (const char *f = star + 1; f + 1 < end; f++) {
        if (f[0] == '-' && f[1] == '>') {
            if (f + 2 < end)
                field = f;
            break;
        }
    }
    size_t fieldlen = field ? p->len - (size_t)(field - p->ptr) - 2 : 0;
    size_t prefix = (size_t)(star - p->ptr);
    size_t postfix = p->len - prefix - 1 - (field ? fieldlen + 2 : 0);
    char *k = scratch_get(keybuf, prefix + n + postfix);
    if (!k && prefix + n + postfix)
        return NOMEM;
    if (prefix)
        memcpy(k, p->ptr, prefix);
    if (n)
        memcpy(k + prefix, s, n);
    if (postfix)
        memcpy(k + prefix + n, star + 1, postfix);
    resp_arg key = {k, prefix + n + postfix};
    kv_entry *e = kv_lookup(c, &key);
    if (!e)
        return MISSING;
    if (field) {
        if (e->type != KV_HASH)
            return MISSING;
        return kv_hash_get(kv_obj(e), field + 2, fieldlen, v, vlen) ? FOUND : MISSING;
    }
    if (e->type != KV_STRING)
        return MISSING;
    *v = kv_str(e);
    *vlen = e->vlen;
    return FOUND;
}

/* ---- the elements ---------------------------------------------------------------------- */

typedef struct item {
    size_t off, len;         /* the element, in the arena */
    size_t cmp_off, cmp_len; /* ALPHA with BY: the BY value, in the arena */
    bool has_cmp;
    double score;
} item;

typedef struct sorter {
    item *items;
    size_t n, cap;
    char *arena;
    size_t used, size;
    size_t skip, take; /* loading: elements to pass over, then to keep */
    bool oom;
    /* comparison */
    bool alpha, desc, by, store;
} sorter;

/* Copies bytes into the arena; returns their offset, or SIZE_MAX on OOM. */
static size_t arena_put(sorter *st, const char *s, size_t n)
{
    if (st->used + n > st->size) {
        size_t size = st->size ? st->size : 256;
        while (size < st->used + n)
            size *= 2;
        char *a = realloc(st->arena, size);
        if (!a) {
            st->oom = true;
            return SIZE_MAX;
        }
        st->arena = a;
        st->size = size;
    }
    if (n)
        memcpy(st->arena + st->used, s, n);
    st->used += n;
    return st->used - n;
}

static void add_element(void *arg, const char *s, size_t n)
{
    sorter *st = arg;
    if (st->oom)
        return;
    if (st->skip) {
        st->skip--;
        return;
    }
    if (!st->take)
        return;
    st->take--;
    if (st->n == st->cap) {
        size_t cap = st->cap ? st->cap * 2 : 16;
        item *v = realloc(st->items, cap * sizeof(*v));
        if (!v) {
            st->oom = true;
            return;
        }
        st->items = v;
        st->cap = cap;
    }
    size_t off = arena_put(st, s, n);
    if (off == SIZE_MAX)
        return;
    st->items[st->n++] = (item){.off = off, .len = n};
}

static void add_zset_member(void *arg, const char *m, size_t n, double score)
{
    (void)score;
    add_element(arg, m, n);
}

static const char *elem(const sorter *st, const item *it)
{
    return st->arena + it->off;
}

/* Redis's compareStringObjects(): bytes, then length. */
static int cmp_binary(const char *a, size_t an, const char *b, size_t bn)
{
    int r = memcmp(a, b, an < bn ? an : bn);
    if (r)
        return r;
    return an < bn ? -1 : an > bn;
}

/* Redis's strcoll() on the values as C strings; keel-kv runs in the C
 * locale, where that is strcmp() (as under Redis with LANG=C or C.UTF-8). */
static int cmp_collate(const char *a, size_t an, const char *b, size_t bn)
{
    size_t la = strnlen(a, an), lb = strnlen(b, bn);
    int r = memcmp(a, b, la < lb ? la : lb);
    if (r)
        return r;
    return la < lb ? -1 : la > lb;
}

/* Redis's sortCompare(). */
static int compare(const sorter *st, const item *x, const item *y)
{
    int r;
    if (!st->alpha) {
        if (x->score > y->score)
            r = 1;
        else if (x->score < y->score)
            r = -1;
        else
            r = cmp_binary(elem(st, x), x->len, elem(st, y), y->len);
    } else if (st->by) {
        if (!x->has_cmp || !y->has_cmp)
            r = x->has_cmp == y->has_cmp ? 0 : x->has_cmp ? 1 : -1;
        else if (st->store)
            r = cmp_binary(st->arena + x->cmp_off, x->cmp_len, st->arena + y->cmp_off, y->cmp_len);
        else
            r = cmp_collate(st->arena + x->cmp_off, x->cmp_len, st->arena + y->cmp_off, y->cmp_len);
    } else if (st->store) {
        r = cmp_binary(elem(st, x), x->len, elem(st, y), y->len);
    } else {
        r = cmp_collate(elem(st, x), x->len, elem(st, y), y->len);
    }
    return st->desc ? -r : r;
}

/* A stable merge sort of v[0, n) using tmp[0, n). */
static void merge_sort(const sorter *st, item *v, item *tmp, size_t n)
{
    if (n < 2)
        return;
    if (n <= 8) {
        for (size_t i = 1; i < n; i++) {
            item x = v[i];
            size_t j = i;
            for (; j > 0 && compare(st, &v[j - 1], &x) > 0; j--)
                v[j] = v[j - 1];
            v[j] = x;
        }
        return;
    }
    size_t h = n / 2;
    merge_sort(st, v, tmp, h);
    merge_sort(st, v + h, tmp, n - h);
    size_t i = 0, j = h, k = 0;
    while (i < h && j < n)
        tmp[k++] = compare(st, &v[j], &v[i]) < 0 ? v[j++] : v[i++];
    while (i < h)
        tmp[k++] = v[i++];
    memcpy(v, tmp, k * sizeof(*v)); /* what is left of v[h, n) is in place */
}

/* Redis's score of a value: strtod() on it as a C string, which must use
 * every byte up to the NUL, not overflow and not be NaN. */
static bool parse_score(const char *s, size_t n, double *out)
{
    char small[128];
    n = strnlen(s, n);
    char *b = n < sizeof(small) ? small : malloc(n + 1);
    if (!b)
        return false;
    memcpy(b, s, n);
    b[n] = 0;
    char *end;
    errno = 0;
    double d = strtod(b, &end);
    bool ok = *end == 0 && errno != ERANGE && !isnan(d);
    if (b != small)
        free(b);
    *out = d;
    return ok;
}

/* ---- the command --------------------------------------------------------------------------- */

#define MAX_GETS 256

static void sort_generic(kv_cmd_ctx *c, size_t argc, const resp_arg *argv, bool readonly)
{
    bool desc = false, alpha = false, dontsort = false;
    long long limit_start = 0, limit_count = -1;
    const resp_arg *by = NULL, *store = NULL;
    const resp_arg **gets = NULL;
    size_t ngets = 0;
    sorter st = {0};
    scratch keybuf = {0};
    kv_list *out = NULL;

    for (size_t j = 2; j < argc; j++) {
        size_t left = argc - j - 1;
        if (kv_arg_is(&argv[j], "ASC")) {
            desc = false;
        } else if (kv_arg_is(&argv[j], "DESC")) {
            desc = true;
        } else if (kv_arg_is(&argv[j], "ALPHA")) {
            alpha = true;
        } else if (kv_arg_is(&argv[j], "LIMIT") && left >= 2) {
            if (!kv_arg_ll(c, &argv[j + 1], &limit_start, NULL) ||
                !kv_arg_ll(c, &argv[j + 2], &limit_count, NULL))
                goto done;
            j += 2;
        } else if (!readonly && kv_arg_is(&argv[j], "STORE") && left >= 1) {
            store = &argv[++j];
        } else if (kv_arg_is(&argv[j], "BY") && left >= 1) {
            by = &argv[++j];
            /* A pattern without '*' names no key: nothing to sort by. */
            dontsort = !has_star(by);
        } else if (kv_arg_is(&argv[j], "GET") && left >= 1) {
            if (!gets) {
                gets = malloc(argc * sizeof(*gets));
                if (!gets) {
                    kv_reply_oom(c->out);
                    goto done;
                }
            }
            gets[ngets++] = &argv[++j];
        } else {
            kv_reply_syntax(c->out);
            goto done;
        }
    }

    bool wrong;
    kv_entry *e = kv_lookup(c, &argv[1]);
    wrong = e && e->type != KV_LIST && e->type != KV_SET && e->type != KV_ZSET;
    if (wrong) {
        kv_reply_wrongtype(c->out);
        goto done;
    }
    unsigned type = e ? e->type : KV_LIST;
    const void *obj = e ? kv_obj(e) : NULL;
    /* Unsorted output of a set is the hash table's order: STORE sorts it
     * (as text) so that what is stored does not depend on it. */
    if (dontsort && type == KV_SET && store) {
        dontsort = false;
        alpha = true;
        by = NULL;
    }

    long long len = 0;
    if (obj)
        len = type == KV_LIST  ? (long long)kv_list_len(obj)
              : type == KV_SET ? (long long)kv_set_len(obj)
                               : (long long)kv_zset_count(obj);
    long long start = limit_start < 0 ? 0 : limit_start > len ? len : limit_start;
    long long count = limit_count < -1 ? -1 : limit_count > len ? len : limit_count;
    long long end = count < 0 ? len - 1 : start + count - 1;
    if (start >= len) {
        start = len - 1;
        end = len - 2;
    }
    if (end >= len)
        end = len - 1;

    /* Lists and sorted sets are in order already: without sorting, load
     * just the range asked for. */
    st.take = SIZE_MAX;
    bool ranged = dontsort && (type == KV_LIST || type == KV_ZSET);
    if (ranged) {
        size_t want = end >= start ? (size_t)(end - start + 1) : 0;
        if (type == KV_ZSET) {
            if (want)
                kv_zset_visit(obj, desc, (size_t)start, want, add_zset_member, &st);
        } else if (want) {
            /* Walked from the head: DESC takes the mirrored range. */
            st.skip = desc ? (size_t)(len - end - 1) : (size_t)start;
            st.take = want;
            kv_list_each(obj, add_element, &st);
            if (desc && !st.oom)
                for (size_t i = 0; i < st.n / 2; i++) {
                    item t = st.items[i];
                    st.items[i] = st.items[st.n - 1 - i];
                    st.items[st.n - 1 - i] = t;
                }
        }
        end -= start;
        start = 0;
    } else if (obj) {
        if (type == KV_LIST)
            kv_list_each(obj, add_element, &st);
        else if (type == KV_SET)
            kv_set_each(obj, add_element, &st);
        else
            kv_zset_visit(obj, false, 0, (size_t)len, add_zset_member, &st);
    }
    if (st.oom) {
        kv_reply_oom(c->out);
        goto done;
    }

    bool bad_score = false;
    if (!dontsort) {
        for (size_t i = 0; i < st.n; i++) {
            item *it = &st.items[i];
            const char *v = elem(&st, it);
            size_t vlen = it->len;
            if (by) {
                int r = lookup_pattern(c, &keybuf, by, v, vlen, &v, &vlen);
                if (r == NOMEM) {
                    kv_reply_oom(c->out);
                    goto done;
                }
                if (r == MISSING)
                    continue;
            }
            if (alpha) {
                if (by) {
                    size_t off = arena_put(&st, v, vlen);
                    if (off == SIZE_MAX) {
                        kv_reply_oom(c->out);
                        goto done;
                    }
                    it = &st.items[i];
                    it->cmp_off = off;
                    it->cmp_len = vlen;
                    it->has_cmp = true;
                }
            } else if (!parse_score(v, vlen, &it->score)) {
                bad_score = true;
            }
        }
        st.alpha = alpha;
        st.desc = desc;
        st.by = by != NULL;
        st.store = store != NULL;
        item *tmp = st.n > 1 ? malloc(st.n * sizeof(*tmp)) : NULL;
        if (st.n > 1 && !tmp) {
            kv_reply_oom(c->out);
            goto done;
        }
        merge_sort(&st, st.items, tmp, st.n);
        free(tmp);
    }

    size_t rows = end >= start ? (size_t)(end - start + 1) : 0;
    size_t outputlen = ngets ? ngets * rows : rows;
    if (bad_score) {
        resp_add_error(c->out, "ERR One or more scores can't be converted into double");
        goto done;
    }
    if (!store) {
        resp_add_array(c->out, outputlen);
        for (long long j = start; j <= end; j++) {
            const item *it = &st.items[j];
            if (!ngets)
                resp_add_bulk(c->out, elem(&st, it), it->len);
            for (size_t g = 0; g < ngets; g++) {
                const char *v;
                size_t vlen;
                int r = lookup_pattern(c, &keybuf, gets[g], elem(&st, it), it->len, &v, &vlen);
                if (r == FOUND)
                    resp_add_bulk(c->out, v, vlen);
                else
                    resp_add_null(c->out, c->proto);
            }
        }
        goto done;
    }

    if (outputlen) {
        out = kv_list_new();
        if (!out)
            goto oom;
        for (long long j = start; j <= end; j++) {
            const item *it = &st.items[j];
            if (!ngets && !kv_list_push(out, false, elem(&st, it), it->len))
                goto oom;
            for (size_t g = 0; g < ngets; g++) {
                const char *v = "";
                size_t vlen = 0;
                int r = lookup_pattern(c, &keybuf, gets[g], elem(&st, it), it->len, &v, &vlen);
                if (r == NOMEM)
                    goto oom;
                if (r == MISSING)
                    v = "", vlen = 0;
                if (!kv_list_push(out, false, v, vlen))
                    goto oom;
            }
        }
        if (!kv_replace_obj(c, store, KV_LIST, out, false))
            goto oom;
        out = NULL;
        kv_key_ready(c, store);
    } else {
        kv_del(c, store);
    }
    resp_add_int(c->out, (long long)outputlen);
    goto done;

oom:
    kv_reply_oom(c->out);
done:
    if (out)
        kv_list_free(out);
    free(gets);
    free(st.items);
    free(st.arena);
    free(keybuf.buf);
}

void kv_cmd_sort(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    sort_generic(c, argc, argv, false);
}

void kv_cmd_sort_ro(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    sort_generic(c, argc, argv, true);
}

/* SORT's keys: the sorted key and the STORE destination (the last one,
 * as SORT uses). When a BY or GET pattern reads other keys, which keys
 * those are is only known while sorting: the answer is then max entries,
 * which tells the server "more keys than listed", and it runs the command
 * holding every shard. */
static int sort_keys(size_t argc, const resp_arg *argv, size_t *idx, size_t max, bool readonly)
{
    if (!max)
        return 0;
    size_t n = 0, store = 0;
    bool lookups = false;
    for (size_t i = 2; i < argc; i++) {
        if (kv_arg_is(&argv[i], "LIMIT")) {
            i += 2;
        } else if (kv_arg_is(&argv[i], "GET") || kv_arg_is(&argv[i], "BY")) {
            if (i + 1 < argc && reads_keys(&argv[i + 1], kv_arg_is(&argv[i], "GET")))
                lookups = true;
            i++;
        } else if (!readonly && kv_arg_is(&argv[i], "STORE") && i + 1 < argc) {
            store = ++i;
        }
    }
    idx[n++] = 1;
    if (store && n < max)
        idx[n++] = store;
    if (lookups)
        while (n < max)
            idx[n++] = 1;
    return (int)n;
}

int kv_sort_keys(size_t argc, const resp_arg *argv, size_t *idx, size_t max)
{
    return sort_keys(argc, argv, idx, max, false);
}

int kv_sort_ro_keys(size_t argc, const resp_arg *argv, size_t *idx, size_t max)
{
    return sort_keys(argc, argv, idx, max, true);
}
