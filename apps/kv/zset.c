/* kv_zset: see zset.h. The skip list follows Pugh's paper as Redis adapts
 * it: repeated scores ordered by member, a backward pointer at level 0,
 * and spans on every link so that ranks cost O(log n). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "zset.h"

size_t kv_zset_max_listpack_entries = 128;
size_t kv_zset_max_listpack_value = 64;

void kv_zset_set_max_listpack_entries(size_t n)
{
    __atomic_store_n(&kv_zset_max_listpack_entries, n, __ATOMIC_RELAXED);
}

void kv_zset_set_max_listpack_value(size_t n)
{
    __atomic_store_n(&kv_zset_max_listpack_value, n, __ATOMIC_RELAXED);
}

static size_t max_entries(void)
{
    return __atomic_load_n(&kv_zset_max_listpack_entries, __ATOMIC_RELAXED);
}

static size_t max_value(void)
{
    return __atomic_load_n(&kv_zset_max_listpack_value, __ATOMIC_RELAXED);
}

/* ---- helpers shared by both encodings --------------------------------------------- */

int kv_zset_cmp_member(const char *a, size_t alen, const char *b, size_t blen)
{
    size_t n = alen < blen ? alen : blen;
    int c = n ? memcmp(a, b, n) : 0;
    if (c)
        return c;
    return alen < blen ? -1 : alen > blen ? 1 : 0;
}

/* A member against a lex bound of kind (-1 "-", +1 "+", 0 the string b). */
static int lex_cmp_bound(const char *m, size_t n, int kind, const char *b, size_t blen)
{
    if (kind < 0)
        return 1;
    if (kind > 0)
        return -1;
    return kv_zset_cmp_member(m, n, b, blen);
}

bool kv_zlex_gte_min(const char *m, size_t n, const kv_zlex_spec *r)
{
    int c = lex_cmp_bound(m, n, r->minkind, r->min, r->minlen);
    return r->minex ? c > 0 : c >= 0;
}

bool kv_zlex_lte_max(const char *m, size_t n, const kv_zlex_spec *r)
{
    int c = lex_cmp_bound(m, n, r->maxkind, r->max, r->maxlen);
    return r->maxex ? c < 0 : c <= 0;
}

/* Whether a range can hold nothing whatever the set (Redis's first tests in
 * zslIsInRange() and zslIsInLexRange()). */
static bool range_empty(const kv_zrange_spec *r)
{
    return r->min > r->max || (r->min == r->max && (r->minex || r->maxex));
}

static bool lex_empty(const kv_zlex_spec *r)
{
    int c;
    if (r->minkind && r->minkind == r->maxkind)
        c = 0; /* "-" "-" or "+" "+" */
    else if (r->minkind < 0 || r->maxkind > 0)
        c = -1;
    else if (r->minkind > 0 || r->maxkind < 0)
        c = 1;
    else
        c = kv_zset_cmp_member(r->min, r->minlen, r->max, r->maxlen);
    return c > 0 || (c == 0 && (r->minex || r->maxex));
}

/* xorshift64*: the skip list's coin flips, and random members. A shard's
 * own state: no lock, unlike random(). */
static __thread uint64_t rng_state;

static uint64_t rng(void)
{
    if (!rng_state)
        rng_state = 0x9e3779b97f4a7c15ull ^ (uint64_t)(uintptr_t)&rng_state;
    uint64_t x = rng_state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    rng_state = x;
    return x * 0x2545f4914f6cdd1dull;
}

uint64_t kv_zset_rand(void)
{
    return rng();
}

/* 1 + the number of successes of p = 1/4, as Redis's ZSKIPLIST_P. */
static int random_level(void)
{
    uint64_t r = rng();
    int level = 1;
    while ((r & 3) == 0 && level < KV_ZSL_MAXLEVEL) {
        level++;
        r >>= 2;
    }
    return level;
}

/* ---- the small encoding ------------------------------------------------------------
 * Scores take few bytes, as a listpack's do: an integral score below 2^55
 * is stored as a little-endian two's-complement integer of 0 to 7 bytes
 * (0 takes none), any other as the 8 bytes of the double. Like Redis's
 * listpack, which stores integral scores as integers, this turns -0 into 0. */

#define SCORE_INT_LIMIT 36028797018963968.0 /* 2^55 */

static size_t encode_score(double d, unsigned char buf[8])
{
    if (d > -SCORE_INT_LIMIT && d < SCORE_INT_LIMIT) {
        int64_t v = (int64_t)d;
        if ((double)v == d) {
            size_t n = 0;
            while (n < 7 && !(v >= -(1LL << (8 * n + 7)) && v < (1LL << (8 * n + 7))))
                n++;
            if (v != 0)
                n++;
            for (size_t i = 0; i < n; i++)
                buf[i] = (unsigned char)((uint64_t)v >> (8 * i));
            return n;
        }
    }
    memcpy(buf, &d, 8);
    return 8;
}

static double decode_score(const unsigned char *s, size_t n)
{
    if (n == 8) {
        double d;
        memcpy(&d, s, 8);
        return d;
    }
    uint64_t u = 0;
    for (size_t i = 0; i < n; i++)
        u |= (uint64_t)s[i] << (8 * i);
    if (n && (s[n - 1] & 0x80))
        u |= ~0ull << (8 * n);
    return (double)(int64_t)u;
}

/* The score of the pair whose member is at pos. */
static double pack_score(const kv_pack *p, size_t pos)
{
    size_t n;
    const char *s = kv_pack_get(p, kv_pack_next(p, pos), &n);
    return decode_score((const unsigned char *)s, n);
}

static size_t pack_len(const kv_pack *p)
{
    return kv_pack_count(p) / 2;
}

static size_t pack_find(const kv_pack *p, const char *m, size_t n)
{
    return kv_pack_find(p, kv_pack_first(p), m, n, 1);
}

/* Where (score, m) goes: the first pair that sorts after it, or the end. */
static size_t pack_insert_pos(const kv_pack *p, double score, const char *m, size_t n)
{
    size_t pos = kv_pack_first(p);
    while (pos != KV_PACK_END) {
        size_t spos = kv_pack_next(p, pos);
        size_t vn;
        const char *v = kv_pack_get(p, spos, &vn);
        double s = decode_score((const unsigned char *)v, vn);
        if (s > score)
            break;
        if (s == score) {
            size_t mn;
            const char *mm = kv_pack_get(p, pos, &mn);
            if (kv_zset_cmp_member(mm, mn, m, n) > 0)
                break;
        }
        pos = kv_pack_next(p, spos);
    }
    return pos;
}

/* Inserts the pair before pos (KV_PACK_END: appends); all or nothing. */
static int pack_insert_at(kv_pack **pp, size_t pos, double score, const char *m, size_t n)
{
    unsigned char sb[8];
    size_t sn = encode_score(score, sb);
    size_t mpos = kv_pack_insert(pp, pos, m, n);
    if (mpos == KV_PACK_END)
        return -1;
    size_t after = kv_pack_next(*pp, mpos);
    if (kv_pack_insert(pp, after, (const char *)sb, sn) == KV_PACK_END) {
        kv_pack_delete(pp, mpos, 1);
        return -1;
    }
    return 0;
}

/* Moves the pair at pos (member m) to score: in place when it keeps its
 * place, else by inserting the new pair before deleting the old one, so
 * that out-of-memory leaves the pack as it was. */
static int pack_update(kv_pack **pp, size_t pos, double score, const char *m, size_t n)
{
    kv_pack *p = *pp;
    size_t spos = kv_pack_next(p, pos);
    size_t next = kv_pack_next(p, spos);
    size_t prev = kv_pack_prev(p, pos);
    bool after_prev = true, before_next = true;
    if (prev != KV_PACK_END) {
        size_t pm = kv_pack_prev(p, prev);
        size_t pn;
        const char *pmm = kv_pack_get(p, pm, &pn);
        double ps = pack_score(p, pm);
        after_prev = ps < score || (ps == score && kv_zset_cmp_member(pmm, pn, m, n) < 0);
    }
    if (next != KV_PACK_END) {
        size_t nn;
        const char *nm = kv_pack_get(p, next, &nn);
        double ns = pack_score(p, next);
        before_next = ns > score || (ns == score && kv_zset_cmp_member(nm, nn, m, n) > 0);
    }
    unsigned char sb[8];
    size_t sn = encode_score(score, sb);
    if (after_prev && before_next)
        return kv_pack_replace(pp, spos, (const char *)sb, sn) == KV_PACK_END ? -1 : 0;

    size_t ins = pack_insert_pos(p, score, m, n);
    uint32_t before = p->bytes;
    if (pack_insert_at(pp, ins, score, m, n) < 0)
        return -1;
    if (ins != KV_PACK_END && ins <= pos)
        pos += (*pp)->bytes - before;
    kv_pack_delete(pp, pos, 2);
    return 0;
}

/* ---- the large encoding -------------------------------------------------------------- */

static size_t node_size(int level)
{
    return sizeof(kv_zsl_node) + (size_t)level * sizeof(struct kv_zsl_level);
}

static inline const char *node_member(const kv_zsl_node *x, size_t *n)
{
    *n = x->ent->klen;
    return kv_dict_key(x->ent);
}

/* Whether node x sorts before (score, m). */
static inline bool node_before(const kv_zsl_node *x, double score, const char *m, size_t n)
{
    if (x->score != score)
        return x->score < score;
    return kv_zset_cmp_member(kv_dict_key(x->ent), x->ent->klen, m, n) < 0;
}

static kv_zsl *zsl_new(void)
{
    kv_zsl *sl = calloc(1, sizeof(*sl));
    if (!sl)
        return NULL;
    sl->header = calloc(1, node_size(KV_ZSL_MAXLEVEL));
    sl->dict = kv_dict_new();
    if (!sl->header || !sl->dict) {
        free(sl->header);
        kv_dict_free(sl->dict);
        free(sl);
        return NULL;
    }
    sl->level = 1;
    sl->bytes = sizeof(*sl) + node_size(KV_ZSL_MAXLEVEL);
    return sl;
}

static void zsl_free(kv_zsl *sl)
{
    if (!sl)
        return;
    kv_zsl_node *x = sl->header->level[0].forward;
    while (x) {
        kv_zsl_node *next = x->level[0].forward;
        free(x);
        x = next;
    }
    free(sl->header);
    kv_dict_free(sl->dict);
    free(sl);
}

/* Links node x (level levels, score and member set) in its place. */
static void zsl_link(kv_zsl *sl, kv_zsl_node *x, int level)
{
    kv_zsl_node *update[KV_ZSL_MAXLEVEL], *y = sl->header;
    size_t rank[KV_ZSL_MAXLEVEL];
    size_t n;
    const char *m = node_member(x, &n);
    for (int i = sl->level - 1; i >= 0; i--) {
        rank[i] = i == sl->level - 1 ? 0 : rank[i + 1];
        while (y->level[i].forward && node_before(y->level[i].forward, x->score, m, n)) {
            rank[i] += y->level[i].span;
            y = y->level[i].forward;
        }
        update[i] = y;
    }
    if (level > sl->level) {
        for (int i = sl->level; i < level; i++) {
            rank[i] = 0;
            update[i] = sl->header;
            update[i]->level[i].span = sl->length;
        }
        sl->level = level;
    }
    for (int i = 0; i < level; i++) {
        x->level[i].forward = update[i]->level[i].forward;
        update[i]->level[i].forward = x;
        x->level[i].span = update[i]->level[i].span - (rank[0] - rank[i]);
        update[i]->level[i].span = rank[0] - rank[i] + 1;
    }
    for (int i = level; i < sl->level; i++)
        update[i]->level[i].span++;
    x->backward = update[0] == sl->header ? NULL : update[0];
    if (x->level[0].forward)
        x->level[0].forward->backward = x;
    else
        sl->tail = x;
    sl->length++;
}

static kv_zsl_node *zsl_insert(kv_zsl *sl, double score, kv_dict_entry *ent)
{
    int level = random_level();
    kv_zsl_node *x = malloc(node_size(level));
    if (!x)
        return NULL;
    x->score = score;
    x->ent = ent;
    zsl_link(sl, x, level);
    sl->bytes += node_size(level);
    return x;
}

/* Fills update[] with the last node before (score, m) at each level and
 * returns the node after it at level 0 (the match, if any). */
static kv_zsl_node *zsl_search(const kv_zsl *sl, double score, const char *m, size_t n,
                               kv_zsl_node **update)
{
    kv_zsl_node *x = sl->header;
    for (int i = sl->level - 1; i >= 0; i--) {
        while (x->level[i].forward && node_before(x->level[i].forward, score, m, n))
            x = x->level[i].forward;
        update[i] = x;
    }
    return x->level[0].forward;
}

/* Unlinks x (update[] from zsl_search); returns x's level, which is the
 * number of lists it was linked in. */
static int zsl_unlink(kv_zsl *sl, kv_zsl_node *x, kv_zsl_node **update)
{
    int level = 0;
    for (int i = 0; i < sl->level; i++) {
        if (update[i]->level[i].forward == x) {
            update[i]->level[i].span += x->level[i].span - 1;
            update[i]->level[i].forward = x->level[i].forward;
            level++;
        } else {
            update[i]->level[i].span--;
        }
    }
    if (x->level[0].forward)
        x->level[0].forward->backward = x->backward;
    else
        sl->tail = x->backward;
    while (sl->level > 1 && !sl->header->level[sl->level - 1].forward)
        sl->level--;
    sl->length--;
    return level;
}

/* Unlinks x and frees it with its dict entry. */
static void zsl_delete_node(kv_zsl *sl, kv_zsl_node *x, kv_zsl_node **update)
{
    int level = zsl_unlink(sl, x, update);
    kv_dict_entry *e;
    if (kv_dict_delete(sl->dict, kv_dict_key(x->ent), x->ent->klen, &e))
        kv_dict_entry_free(sl->dict, e);
    sl->bytes -= node_size(level);
    free(x);
}

/* Gives x a new score, moving it if its place changes (Redis's
 * zslUpdateScore(), without reallocating the node). */
static void zsl_update_score(kv_zsl *sl, kv_zsl_node *x, double score)
{
    if ((!x->backward || x->backward->score < score) &&
        (!x->level[0].forward || x->level[0].forward->score > score)) {
        x->score = score;
        return;
    }
    kv_zsl_node *update[KV_ZSL_MAXLEVEL];
    size_t n;
    const char *m = node_member(x, &n);
    zsl_search(sl, x->score, m, n, update);
    int level = zsl_unlink(sl, x, update);
    x->score = score;
    zsl_link(sl, x, level);
}

/* 1-based rank of (score, m), which must be in the list. */
static size_t zsl_rank(const kv_zsl *sl, double score, const char *m, size_t n)
{
    const kv_zsl_node *x = sl->header;
    size_t rank = 0;
    for (int i = sl->level - 1; i >= 0; i--) {
        while (x->level[i].forward &&
               (node_before(x->level[i].forward, score, m, n) ||
                (x->level[i].forward->score == score &&
                 kv_zset_cmp_member(kv_dict_key(x->level[i].forward->ent),
                                    x->level[i].forward->ent->klen, m, n) == 0))) {
            rank += x->level[i].span;
            x = x->level[i].forward;
        }
        if (x != sl->header && x->score == score &&
            kv_zset_cmp_member(kv_dict_key(x->ent), x->ent->klen, m, n) == 0)
            return rank;
    }
    return 0;
}

/* The node of 1-based rank, or NULL. */
static kv_zsl_node *zsl_by_rank(const kv_zsl *sl, size_t rank)
{
    kv_zsl_node *x = sl->header;
    size_t traversed = 0;
    for (int i = sl->level - 1; i >= 0; i--) {
        while (x->level[i].forward && traversed + x->level[i].span <= rank) {
            traversed += x->level[i].span;
            x = x->level[i].forward;
        }
        if (traversed == rank)
            return x == sl->header ? NULL : x;
    }
    return NULL;
}

/* A score range or a lex range, whichever is set: the walks below serve
 * both, where Redis has a zslFirstInRange() and a zslFirstInLexRange(). */
typedef struct zbounds {
    const kv_zrange_spec *range;
    const kv_zlex_spec *lex;
} zbounds;

static bool bounds_empty(const zbounds *b)
{
    return b->range ? range_empty(b->range) : lex_empty(b->lex);
}

static bool node_gte(const kv_zsl_node *x, const zbounds *b)
{
    if (b->range)
        return kv_zrange_gte_min(x->score, b->range);
    return kv_zlex_gte_min(kv_dict_key(x->ent), x->ent->klen, b->lex);
}

static bool node_lte(const kv_zsl_node *x, const zbounds *b)
{
    if (b->range)
        return kv_zrange_lte_max(x->score, b->range);
    return kv_zlex_lte_max(kv_dict_key(x->ent), x->ent->klen, b->lex);
}

static bool zsl_in_bounds(const kv_zsl *sl, const zbounds *b)
{
    if (bounds_empty(b))
        return false;
    if (!sl->tail || !node_gte(sl->tail, b))
        return false;
    kv_zsl_node *x = sl->header->level[0].forward;
    return x && node_lte(x, b);
}

static kv_zsl_node *zsl_first_in(const kv_zsl *sl, const zbounds *b)
{
    if (!zsl_in_bounds(sl, b))
        return NULL;
    kv_zsl_node *x = sl->header;
    for (int i = sl->level - 1; i >= 0; i--)
        while (x->level[i].forward && !node_gte(x->level[i].forward, b))
            x = x->level[i].forward;
    x = x->level[0].forward;
    return x && node_lte(x, b) ? x : NULL;
}

static kv_zsl_node *zsl_last_in(const kv_zsl *sl, const zbounds *b)
{
    if (!zsl_in_bounds(sl, b))
        return NULL;
    kv_zsl_node *x = sl->header;
    for (int i = sl->level - 1; i >= 0; i--)
        while (x->level[i].forward && node_lte(x->level[i].forward, b))
            x = x->level[i].forward;
    return x != sl->header && node_gte(x, b) ? x : NULL;
}

/* Adds (score, m) to the list and its dict. */
static kv_zsl_node *zsl_add(kv_zsl *sl, double score, const char *m, size_t n)
{
    kv_dict_entry *e = kv_dict_add(sl->dict, m, n, NULL, 0);
    if (!e)
        return NULL;
    kv_zsl_node *x = zsl_insert(sl, score, e);
    if (!x) {
        kv_dict_entry *d;
        if (kv_dict_delete(sl->dict, m, n, &d))
            kv_dict_entry_free(sl->dict, d);
        return NULL;
    }
    e->u.p = x;
    return x;
}

/* ---- the object ------------------------------------------------------------------------ */

bool kv_zset_wants_big(size_t count, size_t maxlen)
{
    return count > max_entries() || maxlen > max_value();
}

kv_zset *kv_zset_new(bool big)
{
    kv_zset *z = calloc(1, sizeof(*z));
    if (!z)
        return NULL;
    if (big)
        z->sl = zsl_new();
    else
        z->pack = kv_pack_new();
    if (!z->sl && !z->pack) {
        free(z);
        return NULL;
    }
    return z;
}

void kv_zset_free(kv_zset *z)
{
    if (!z)
        return;
    kv_pack_free(z->pack);
    zsl_free(z->sl);
    free(z);
}

size_t kv_zset_len(const kv_zset *z)
{
    return z->sl ? z->sl->length : pack_len(z->pack);
}

size_t kv_zset_mem(const kv_zset *z)
{
    if (z->sl)
        return sizeof(*z) + z->sl->bytes + kv_dict_mem(z->sl->dict);
    return sizeof(*z) + kv_pack_mem(z->pack);
}

kv_zset *kv_zset_dup(const kv_zset *z)
{
    if (z->pack) {
        kv_zset *d = calloc(1, sizeof(*d));
        if (!d)
            return NULL;
        d->pack = kv_pack_dup(z->pack);
        if (!d->pack) {
            free(d);
            return NULL;
        }
        return d;
    }
    kv_zset *d = kv_zset_new(true);
    if (!d)
        return NULL;
    for (kv_zsl_node *x = z->sl->header->level[0].forward; x; x = x->level[0].forward) {
        if (!zsl_add(d->sl, x->score, kv_dict_key(x->ent), x->ent->klen)) {
            kv_zset_free(d);
            return NULL;
        }
    }
    return d;
}

int kv_zset_convert(kv_zset *z, bool big)
{
    if (big == (z->sl != NULL))
        return 0;
    if (big) {
        kv_zsl *sl = zsl_new();
        if (!sl)
            return -1;
        const kv_pack *p = z->pack;
        for (size_t pos = kv_pack_first(p); pos != KV_PACK_END;) {
            size_t n;
            const char *m = kv_pack_get(p, pos, &n);
            if (!zsl_add(sl, pack_score(p, pos), m, n)) {
                zsl_free(sl);
                return -1;
            }
            pos = kv_pack_next(p, kv_pack_next(p, pos));
        }
        kv_pack_free(z->pack);
        z->pack = NULL;
        z->sl = sl;
        return 0;
    }
    kv_pack *p = kv_pack_new();
    if (!p)
        return -1;
    for (kv_zsl_node *x = z->sl->header->level[0].forward; x; x = x->level[0].forward) {
        if (pack_insert_at(&p, KV_PACK_END, x->score, kv_dict_key(x->ent), x->ent->klen) < 0) {
            kv_pack_free(p);
            return -1;
        }
    }
    zsl_free(z->sl);
    z->sl = NULL;
    z->pack = p;
    return 0;
}

bool kv_zset_score(const kv_zset *z, const char *m, size_t n, double *score)
{
    if (z->pack) {
        size_t pos = pack_find(z->pack, m, n);
        if (pos == KV_PACK_END)
            return false;
        *score = pack_score(z->pack, pos);
        return true;
    }
    kv_dict_entry *e = kv_dict_find(z->sl->dict, m, n);
    if (!e)
        return false;
    *score = ((kv_zsl_node *)e->u.p)->score;
    return true;
}

/* ZADD's rules for a member already there with score cur (NX, INCR, LT,
 * GT): returns true when its score is to become *score; false when it
 * stays, with kv_zset_add()'s return value in *ret and why in *out. */
static bool rescore(int flags, double cur, double *score, int *out, int *ret)
{
    *ret = 1;
    if (flags & KV_ZADD_NX) {
        *out |= KV_ZADD_OUT_NOP;
        return false;
    }
    if (flags & KV_ZADD_INCR) {
        *score += cur;
        if (isnan(*score)) {
            *out |= KV_ZADD_OUT_NAN;
            *ret = 0;
            return false;
        }
    }
    if (((flags & KV_ZADD_LT) && *score >= cur) || ((flags & KV_ZADD_GT) && *score <= cur)) {
        *out |= KV_ZADD_OUT_NOP;
        return false;
    }
    return true;
}

int kv_zset_add(kv_zset *z, double score, const char *m, size_t n, int flags, int *out,
                double *newscore)
{
    bool xx = flags & KV_ZADD_XX;
    *out = 0;
    if (isnan(score)) {
        *out = KV_ZADD_OUT_NAN;
        return 0;
    }
    if (z->pack) {
        size_t pos = pack_find(z->pack, m, n);
        if (pos != KV_PACK_END) {
            double cur = pack_score(z->pack, pos);
            int ret;
            if (!rescore(flags, cur, &score, out, &ret))
                return ret;
            if (score != cur) {
                if (pack_update(&z->pack, pos, score, m, n) < 0)
                    return -1;
                *out |= KV_ZADD_OUT_UPDATED;
            }
            if (newscore)
                *newscore = score;
            return 1;
        }
        if (xx) {
            *out |= KV_ZADD_OUT_NOP;
            return 1;
        }
        if (pack_len(z->pack) + 1 <= max_entries() && n <= max_value()) {
            size_t ins = pack_insert_pos(z->pack, score, m, n);
            if (pack_insert_at(&z->pack, ins, score, m, n) < 0)
                return -1;
            *out |= KV_ZADD_OUT_ADDED;
            if (newscore)
                *newscore = score;
            return 1;
        }
        if (kv_zset_convert(z, true) < 0)
            return -1;
    }

    /* One hash lookup that finds the member or makes its entry. */
    kv_zsl *sl = z->sl;
    bool fresh = false;
    kv_dict_entry *e =
        xx ? kv_dict_find(sl->dict, m, n) : kv_dict_set(sl->dict, m, n, "", 0, &fresh);
    if (!e && !xx)
        return -1;
    if (fresh) {
        kv_zsl_node *x = zsl_insert(sl, score, e);
        if (!x) {
            kv_dict_entry *d;
            if (kv_dict_delete(sl->dict, m, n, &d))
                kv_dict_entry_free(sl->dict, d);
            return -1;
        }
        e->u.p = x;
        *out |= KV_ZADD_OUT_ADDED;
        if (newscore)
            *newscore = score;
        return 1;
    }
    if (e) {
        kv_zsl_node *x = e->u.p;
        double cur = x->score;
        int ret;
        if (!rescore(flags, cur, &score, out, &ret))
            return ret;
        if (newscore)
            *newscore = score;
        if (score != cur) {
            zsl_update_score(sl, x, score);
            *out |= KV_ZADD_OUT_UPDATED;
        }
        return 1;
    }
    *out |= KV_ZADD_OUT_NOP; /* XX, and m is not there */
    return 1;
}

int kv_zset_append(kv_zset *z, double score, const char *m, size_t n)
{
    if (z->pack)
        return pack_insert_at(&z->pack, KV_PACK_END, score, m, n);
    return zsl_add(z->sl, score, m, n) ? 0 : -1;
}

bool kv_zset_del(kv_zset *z, const char *m, size_t n)
{
    if (z->pack) {
        size_t pos = pack_find(z->pack, m, n);
        if (pos == KV_PACK_END)
            return false;
        kv_pack_delete(&z->pack, pos, 2);
        return true;
    }
    kv_zsl *sl = z->sl;
    kv_dict_entry *e = kv_dict_find(sl->dict, m, n);
    if (!e)
        return false;
    kv_zsl_node *update[KV_ZSL_MAXLEVEL];
    kv_zsl_node *x = e->u.p;
    zsl_search(sl, x->score, m, n, update);
    zsl_delete_node(sl, x, update);
    return true;
}

long kv_zset_rank(const kv_zset *z, const char *m, size_t n, bool reverse)
{
    size_t len = kv_zset_len(z);
    if (z->pack) {
        const kv_pack *p = z->pack;
        long rank = 0;
        for (size_t pos = kv_pack_first(p); pos != KV_PACK_END; rank++) {
            if (kv_pack_eq(p, pos, m, n))
                return reverse ? (long)len - 1 - rank : rank;
            pos = kv_pack_next(p, kv_pack_next(p, pos));
        }
        return -1;
    }
    kv_dict_entry *e = kv_dict_find(z->sl->dict, m, n);
    if (!e)
        return -1;
    size_t rank = zsl_rank(z->sl, ((kv_zsl_node *)e->u.p)->score, m, n);
    return reverse ? (long)(len - rank) : (long)rank - 1;
}

/* ---- range deletes ------------------------------------------------------------------- */

size_t kv_zset_delete_rank(kv_zset *z, size_t start, size_t end)
{
    size_t count = end - start + 1;
    if (z->pack) {
        size_t pos = kv_pack_index(z->pack, (long long)(2 * start));
        kv_pack_delete(&z->pack, pos, 2 * count);
        return count;
    }
    kv_zsl *sl = z->sl;
    kv_zsl_node *update[KV_ZSL_MAXLEVEL], *x = sl->header;
    size_t traversed = 0, removed = 0;
    for (int i = sl->level - 1; i >= 0; i--) {
        while (x->level[i].forward && traversed + x->level[i].span < start + 1) {
            traversed += x->level[i].span;
            x = x->level[i].forward;
        }
        update[i] = x;
    }
    x = x->level[0].forward;
    while (x && removed < count) {
        kv_zsl_node *next = x->level[0].forward;
        zsl_delete_node(sl, x, update);
        removed++;
        x = next;
    }
    return removed;
}

static bool pack_gte(const kv_pack *p, size_t pos, const zbounds *b)
{
    if (b->range)
        return kv_zrange_gte_min(pack_score(p, pos), b->range);
    size_t n;
    const char *m = kv_pack_get(p, pos, &n);
    return kv_zlex_gte_min(m, n, b->lex);
}

static bool pack_lte(const kv_pack *p, size_t pos, const zbounds *b)
{
    if (b->range)
        return kv_zrange_lte_max(pack_score(p, pos), b->range);
    size_t n;
    const char *m = kv_pack_get(p, pos, &n);
    return kv_zlex_lte_max(m, n, b->lex);
}

static kv_zset_it first_in(const kv_zset *z, const zbounds *b);

/* Deletes the pairs in b from the first on. */
static size_t delete_in(kv_zset *z, const zbounds *b)
{
    if (z->pack) {
        kv_zset_it it = first_in(z, b);
        if (!kv_zset_it_valid(&it))
            return 0;
        const kv_pack *p = z->pack;
        size_t count = 0;
        for (size_t q = it.pos; q != KV_PACK_END && pack_lte(p, q, b); count++)
            q = kv_pack_next(p, kv_pack_next(p, q));
        if (count)
            kv_pack_delete(&z->pack, it.pos, 2 * count);
        return count;
    }
    kv_zsl *sl = z->sl;
    kv_zsl_node *update[KV_ZSL_MAXLEVEL], *x = sl->header;
    for (int i = sl->level - 1; i >= 0; i--) {
        while (x->level[i].forward && !node_gte(x->level[i].forward, b))
            x = x->level[i].forward;
        update[i] = x;
    }
    x = x->level[0].forward;
    size_t removed = 0;
    while (x && node_lte(x, b)) {
        kv_zsl_node *next = x->level[0].forward;
        zsl_delete_node(sl, x, update);
        removed++;
        x = next;
    }
    return removed;
}

size_t kv_zset_delete_score(kv_zset *z, const kv_zrange_spec *r)
{
    return delete_in(z, &(zbounds){.range = r});
}

size_t kv_zset_delete_lex(kv_zset *z, const kv_zlex_spec *r)
{
    return delete_in(z, &(zbounds){.lex = r});
}

void kv_zset_delete_ends(kv_zset *z, bool max, size_t count)
{
    if (!count)
        return;
    if (z->pack) {
        size_t pos = max ? kv_pack_index(z->pack, -2 * (long long)count) : kv_pack_first(z->pack);
        kv_pack_delete(&z->pack, pos, 2 * count);
        return;
    }
    kv_zsl *sl = z->sl;
    kv_zsl_node *update[KV_ZSL_MAXLEVEL];
    while (count-- && sl->length) {
        kv_zsl_node *x;
        if (max) {
            size_t n;
            const char *m = node_member(sl->tail, &n);
            x = zsl_search(sl, sl->tail->score, m, n, update);
        } else {
            /* The first node follows the header at every level it has. */
            x = sl->header->level[0].forward;
            for (int i = 0; i < sl->level; i++)
                update[i] = sl->header;
        }
        zsl_delete_node(sl, x, update);
    }
}

/* ---- iteration ------------------------------------------------------------------------ */

static kv_zset_it it_pack(const kv_zset *z, size_t pos)
{
    return (kv_zset_it){.z = z, .pos = pos, .node = NULL};
}

static kv_zset_it it_node(const kv_zset *z, kv_zsl_node *x)
{
    return (kv_zset_it){.z = z, .pos = KV_PACK_END, .node = x};
}

void kv_zset_it_next(kv_zset_it *it)
{
    if (it->z->sl) {
        it->node = it->node->level[0].forward;
        return;
    }
    const kv_pack *p = it->z->pack;
    size_t s = kv_pack_next(p, it->pos);
    it->pos = s == KV_PACK_END ? s : kv_pack_next(p, s);
}

void kv_zset_it_prev(kv_zset_it *it)
{
    if (it->z->sl) {
        it->node = it->node->backward;
        return;
    }
    const kv_pack *p = it->z->pack;
    size_t s = kv_pack_prev(p, it->pos);
    it->pos = s == KV_PACK_END ? s : kv_pack_prev(p, s);
}

const char *kv_zset_it_member(const kv_zset_it *it, size_t *len)
{
    if (it->z->sl)
        return node_member(it->node, len);
    return kv_pack_get(it->z->pack, it->pos, len);
}

double kv_zset_it_score(const kv_zset_it *it)
{
    if (it->z->sl)
        return it->node->score;
    return pack_score(it->z->pack, it->pos);
}

kv_zset_it kv_zset_at_rank(const kv_zset *z, size_t rank, bool reverse)
{
    size_t len = kv_zset_len(z);
    if (z->sl) {
        if (rank >= len)
            return it_node(z, NULL);
        if (rank == 0)
            return it_node(z, reverse ? z->sl->tail : z->sl->header->level[0].forward);
        return it_node(z, zsl_by_rank(z->sl, reverse ? len - rank : rank + 1));
    }
    if (rank >= len)
        return it_pack(z, KV_PACK_END);
    long long i = reverse ? -2 - 2 * (long long)rank : 2 * (long long)rank;
    return it_pack(z, kv_pack_index(z->pack, i));
}

static bool pack_in_bounds(const kv_pack *p, const zbounds *b)
{
    if (bounds_empty(b) || !p->count)
        return false;
    if (!pack_gte(p, kv_pack_index(p, -2), b))
        return false;
    return pack_lte(p, kv_pack_first(p), b);
}

static kv_zset_it first_in(const kv_zset *z, const zbounds *b)
{
    if (z->sl)
        return it_node(z, zsl_first_in(z->sl, b));
    const kv_pack *p = z->pack;
    if (!pack_in_bounds(p, b))
        return it_pack(z, KV_PACK_END);
    for (size_t pos = kv_pack_first(p); pos != KV_PACK_END;) {
        if (pack_gte(p, pos, b))
            return it_pack(z, pack_lte(p, pos, b) ? pos : KV_PACK_END);
        pos = kv_pack_next(p, kv_pack_next(p, pos));
    }
    return it_pack(z, KV_PACK_END);
}

static kv_zset_it last_in(const kv_zset *z, const zbounds *b)
{
    if (z->sl)
        return it_node(z, zsl_last_in(z->sl, b));
    const kv_pack *p = z->pack;
    if (!pack_in_bounds(p, b))
        return it_pack(z, KV_PACK_END);
    kv_zset_it it = it_pack(z, kv_pack_index(p, -2));
    for (; kv_zset_it_valid(&it); kv_zset_it_prev(&it)) {
        if (pack_lte(p, it.pos, b))
            return it_pack(z, pack_gte(p, it.pos, b) ? it.pos : KV_PACK_END);
    }
    return it;
}

kv_zset_it kv_zset_first_in_range(const kv_zset *z, const kv_zrange_spec *r)
{
    return first_in(z, &(zbounds){.range = r});
}

kv_zset_it kv_zset_last_in_range(const kv_zset *z, const kv_zrange_spec *r)
{
    return last_in(z, &(zbounds){.range = r});
}

kv_zset_it kv_zset_first_in_lex(const kv_zset *z, const kv_zlex_spec *r)
{
    return first_in(z, &(zbounds){.lex = r});
}

kv_zset_it kv_zset_last_in_lex(const kv_zset *z, const kv_zlex_spec *r)
{
    return last_in(z, &(zbounds){.lex = r});
}

size_t kv_zset_it_rank(const kv_zset_it *it)
{
    if (it->z->sl) {
        size_t n;
        const char *m = node_member(it->node, &n);
        return zsl_rank(it->z->sl, it->node->score, m, n);
    }
    const kv_pack *p = it->z->pack;
    size_t rank = 1;
    for (size_t pos = kv_pack_first(p); pos != it->pos; rank++)
        pos = kv_pack_next(p, kv_pack_next(p, pos));
    return rank;
}

kv_zset_it kv_zset_random(const kv_zset *z)
{
    if (z->sl) {
        kv_dict_entry *e = kv_dict_random(z->sl->dict);
        return it_node(z, e ? e->u.p : NULL);
    }
    size_t len = pack_len(z->pack);
    if (!len)
        return it_pack(z, KV_PACK_END);
    return it_pack(z, kv_pack_index(z->pack, 2 * (long long)(rng() % len)));
}

/* ---- invariants (tests) ------------------------------------------------------------------ */

bool kv_zset_check(const kv_zset *z)
{
    if ((z->pack == NULL) == (z->sl == NULL))
        return false;
    if (z->pack) {
        const kv_pack *p = z->pack;
        if (p->count % 2)
            return false;
        const char *pm = NULL;
        size_t pn = 0;
        double ps = 0;
        for (size_t pos = kv_pack_first(p); pos != KV_PACK_END;) {
            size_t n;
            const char *m = kv_pack_get(p, pos, &n);
            double s = pack_score(p, pos);
            if (isnan(s))
                return false;
            if (pm && (ps > s || (ps == s && kv_zset_cmp_member(pm, pn, m, n) >= 0)))
                return false;
            pm = m, pn = n, ps = s;
            pos = kv_pack_next(p, kv_pack_next(p, pos));
        }
        return true;
    }
    const kv_zsl *sl = z->sl;
    if (kv_dict_count(sl->dict) != sl->length)
        return false;
    /* Level 0: order, back links, dict entries. */
    size_t count = 0;
    const kv_zsl_node *prev = NULL;
    for (const kv_zsl_node *x = sl->header->level[0].forward; x; x = x->level[0].forward) {
        count++;
        if (x->backward != prev || isnan(x->score))
            return false;
        size_t n;
        const char *m = node_member(x, &n);
        if (prev && !node_before(prev, x->score, m, n))
            return false;
        kv_dict_entry *e = kv_dict_find(sl->dict, m, n);
        if (e != x->ent || e->u.p != x)
            return false;
        prev = x;
    }
    if (count != sl->length || sl->tail != prev)
        return false;
    /* Every level: spans add up to ranks; count the links for the bytes. */
    size_t links = 0;
    for (int i = 0; i < KV_ZSL_MAXLEVEL; i++) {
        if (i >= sl->level) {
            if (sl->header->level[i].forward)
                return false;
            continue;
        }
        size_t rank = 0;
        const kv_zsl_node *x = sl->header;
        while (x->level[i].forward) {
            rank += x->level[i].span;
            x = x->level[i].forward;
            links++;
            size_t n;
            const char *m = node_member(x, &n);
            if (zsl_rank(sl, x->score, m, n) != rank)
                return false;
        }
    }
    if (sl->level > 1 && !sl->header->level[sl->level - 1].forward)
        return false; /* the top level must not be empty */
    size_t bytes = sizeof(*sl) + node_size(KV_ZSL_MAXLEVEL) + sl->length * sizeof(kv_zsl_node) +
                   links * sizeof(struct kv_zsl_level);
    return bytes == sl->bytes;
}
