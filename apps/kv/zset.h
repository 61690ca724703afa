/* kv_zset: the sorted set object behind keel-kv's Z* commands.
 *
 * Two encodings, as Redis 7.0 has them:
 *  - small ("listpack"): a kv_pack of member, score pairs sorted by (score,
 *    member), used while the set has at most kv_zset_max_listpack_entries
 *    members of at most kv_zset_max_listpack_value bytes;
 *  - large ("skiplist"): a skip list with spans (ranks in O(log n)) plus a
 *    kv_dict from member to node (scores in O(1)). The dict entry holds the
 *    member's bytes once; the node points at it.
 * Members order by score, then by their bytes (memcmp, shorter first), as
 * Redis's sdscmp() orders them. A set only grows into the large encoding;
 * the STORE commands pick the encoding of the result they build.
 *
 * The object is owned by one shard; nothing here is thread-safe. */
#ifndef KV_ZSET_H
#define KV_ZSET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dict.h"
#include "pack.h"

/* zset-max-listpack-entries and zset-max-listpack-value: every shard
 * reads them; CONFIG SET changes them through the setters (relaxed atomic
 * stores). Existing objects keep their encoding, as in Redis. */
extern size_t kv_zset_max_listpack_entries;
extern size_t kv_zset_max_listpack_value;
void kv_zset_set_max_listpack_entries(size_t n);
void kv_zset_set_max_listpack_value(size_t n);

#define KV_ZSL_MAXLEVEL 32

typedef struct kv_zsl_node {
    double score;
    kv_dict_entry *ent; /* the member: kv_dict_key(ent), ent->klen bytes */
    struct kv_zsl_node *backward;
    struct kv_zsl_level {
        struct kv_zsl_node *forward;
        size_t span; /* nodes crossed by forward (ranks) */
    } level[];
} kv_zsl_node;

typedef struct kv_zsl {
    kv_dict *dict; /* member -> node (in u.p) */
    kv_zsl_node *header, *tail;
    size_t length;
    int level;
    size_t bytes; /* this struct and every node, the header included */
} kv_zsl;

typedef struct kv_zset {
    kv_pack *pack; /* the small encoding, or NULL */
    kv_zsl *sl;    /* the large encoding, or NULL */
} kv_zset;

/* A score interval (ZRANGEBYSCORE's min max, "(" for exclusive). */
typedef struct kv_zrange_spec {
    double min, max;
    bool minex, maxex;
} kv_zrange_spec;

/* A lexicographic interval: kind -1 is "-", +1 is "+", 0 a string bound
 * ("[a" inclusive, "(a" exclusive; "-" and "+" count as exclusive). */
typedef struct kv_zlex_spec {
    const char *min, *max;
    size_t minlen, maxlen;
    signed char minkind, maxkind;
    bool minex, maxex;
} kv_zlex_spec;

/* ZADD's flags in and out (Redis's ZADD_IN_* / ZADD_OUT_*). */
enum {
    KV_ZADD_INCR = 1,
    KV_ZADD_NX = 2,
    KV_ZADD_XX = 4,
    KV_ZADD_GT = 8,
    KV_ZADD_LT = 16,
};
enum {
    KV_ZADD_OUT_NOP = 1,
    KV_ZADD_OUT_NAN = 2,
    KV_ZADD_OUT_ADDED = 4,
    KV_ZADD_OUT_UPDATED = 8,
};

/* An empty set in the large (big) or small encoding, or NULL on OOM. */
kv_zset *kv_zset_new(bool big);
/* The encoding Redis would give a set of count members whose longest is
 * maxlen bytes: true for the large one. */
bool kv_zset_wants_big(size_t count, size_t maxlen);
void kv_zset_free(kv_zset *z);
/* A deep copy, or NULL on OOM. */
kv_zset *kv_zset_dup(const kv_zset *z);
size_t kv_zset_len(const kv_zset *z);
/* Bytes held, in O(1). */
size_t kv_zset_mem(const kv_zset *z);
static inline bool kv_zset_is_big(const kv_zset *z)
{
    return z->sl != NULL;
}
/* Converts to the large (big) or small encoding. 0, or -1 on OOM (the set
 * is unchanged). */
int kv_zset_convert(kv_zset *z, bool big);

/* Whether member m is in the set; its score in *score. */
bool kv_zset_score(const kv_zset *z, const char *m, size_t n, double *score);
/* Redis's zsetAdd(): adds m with score or updates its score under flags
 * (KV_ZADD_*), converting to the large encoding when the set outgrows the
 * small one. Sets *out (KV_ZADD_OUT_*) and *newscore (the score m has
 * after an add or update). Returns 1, 0 when the score would be NaN
 * (KV_ZADD_OUT_NAN, set unchanged), or -1 on OOM (set unchanged). */
int kv_zset_add(kv_zset *z, double score, const char *m, size_t n, int flags, int *out,
                double *newscore);
/* Appends m, which must sort after every member and be absent, without
 * converting (the caller picked the encoding). 0, or -1 on OOM. */
int kv_zset_append(kv_zset *z, double score, const char *m, size_t n);
/* Removes m; returns whether it was there. */
bool kv_zset_del(kv_zset *z, const char *m, size_t n);
/* m's 0-based rank (from the highest score when reverse), or -1. */
long kv_zset_rank(const kv_zset *z, const char *m, size_t n, bool reverse);

/* Range deletes; they return the number of members removed. Ranks are
 * 0-based and inclusive, start <= end < length. */
size_t kv_zset_delete_rank(kv_zset *z, size_t start, size_t end);
size_t kv_zset_delete_score(kv_zset *z, const kv_zrange_spec *r);
size_t kv_zset_delete_lex(kv_zset *z, const kv_zlex_spec *r);
/* Removes the count (<= length) lowest (or highest, max) members. */
void kv_zset_delete_ends(kv_zset *z, bool max, size_t count);

/* Whether a value is inside one side of a range. */
static inline bool kv_zrange_gte_min(double v, const kv_zrange_spec *r)
{
    return r->minex ? v > r->min : v >= r->min;
}
static inline bool kv_zrange_lte_max(double v, const kv_zrange_spec *r)
{
    return r->maxex ? v < r->max : v <= r->max;
}
bool kv_zlex_gte_min(const char *m, size_t n, const kv_zlex_spec *r);
bool kv_zlex_lte_max(const char *m, size_t n, const kv_zlex_spec *r);
/* Compares members as Redis's sdscmp() does. */
int kv_zset_cmp_member(const char *a, size_t alen, const char *b, size_t blen);

/* ---- iteration ------------------------------------------------------------------- */

/* A position in either encoding; valid until the set changes. */
typedef struct kv_zset_it {
    const kv_zset *z;
    size_t pos;        /* small: the member's offset; KV_PACK_END past the ends */
    kv_zsl_node *node; /* large: NULL past the ends */
} kv_zset_it;

static inline bool kv_zset_it_valid(const kv_zset_it *it)
{
    return it->z->sl ? it->node != NULL : it->pos != KV_PACK_END;
}
void kv_zset_it_next(kv_zset_it *it);
void kv_zset_it_prev(kv_zset_it *it);
const char *kv_zset_it_member(const kv_zset_it *it, size_t *len);
double kv_zset_it_score(const kv_zset_it *it);

/* The member of 0-based rank (counted from the highest when reverse);
 * the iterator is invalid when rank >= length. */
kv_zset_it kv_zset_at_rank(const kv_zset *z, size_t rank, bool reverse);
/* The first (lowest) or last member inside a range; invalid if none. */
kv_zset_it kv_zset_first_in_range(const kv_zset *z, const kv_zrange_spec *r);
kv_zset_it kv_zset_last_in_range(const kv_zset *z, const kv_zrange_spec *r);
kv_zset_it kv_zset_first_in_lex(const kv_zset *z, const kv_zlex_spec *r);
kv_zset_it kv_zset_last_in_lex(const kv_zset *z, const kv_zlex_spec *r);
/* The 1-based rank of the member at a valid iterator (for counting). */
size_t kv_zset_it_rank(const kv_zset_it *it);

/* A random member (uniform), or an invalid iterator when empty. */
kv_zset_it kv_zset_random(const kv_zset *z);

/* A pseudo-random number of the shard's own generator (no lock). */
uint64_t kv_zset_rand(void);

/* Checks the structure's invariants (order, spans, dict, byte count);
 * returns false at the first violation. For tests. */
bool kv_zset_check(const kv_zset *z);

#endif
