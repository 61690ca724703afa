/* kv_dict: the large encoding of hashes, sets and sorted sets: a chained
 * hash table of binary-safe string keys, each with a string value (hash),
 * nothing (set) or a double (sorted set: the score, with the skip list
 * node in p). Grows at load 1 and shrinks below 1/8, rehashing at once:
 * such objects are rare and the pause is bounded by their size. */
#ifndef KV_DICT_H
#define KV_DICT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct kv_dict_entry {
    struct kv_dict_entry *next;
    uint32_t hash;
    uint32_t klen;
    uint32_t vlen;
    uint32_t _pad;
    union {
        double d;
        void *p;
    } u;
    char data[]; /* key, then value */
} kv_dict_entry;

typedef struct kv_dict {
    kv_dict_entry **b;
    size_t mask;
    size_t count;
    size_t mem; /* bytes held by entries and the bucket array */
} kv_dict;

static inline const char *kv_dict_key(const kv_dict_entry *e)
{
    return e->data;
}
static inline char *kv_dict_val(kv_dict_entry *e)
{
    return e->data + e->klen;
}

/* A new empty dict, or NULL. */
kv_dict *kv_dict_new(void);
void kv_dict_free(kv_dict *d);
/* A deep copy, or NULL. The u member is copied as it is. */
kv_dict *kv_dict_dup(const kv_dict *d);
static inline size_t kv_dict_count(const kv_dict *d)
{
    return d->count;
}
size_t kv_dict_mem(const kv_dict *d);

kv_dict_entry *kv_dict_find(const kv_dict *d, const char *k, size_t klen);
/* Adds key (which must be absent) with value v (may be NULL with vlen 0).
 * NULL on out-of-memory. */
kv_dict_entry *kv_dict_add(kv_dict *d, const char *k, size_t klen, const char *v, size_t vlen);
/* Sets key's value, adding the key if absent (*added tells). The entry
 * may move. NULL on out-of-memory (dict unchanged). */
kv_dict_entry *kv_dict_set(kv_dict *d, const char *k, size_t klen, const char *v, size_t vlen,
                           bool *added);
/* Removes key; returns whether it was there. If out is given, the entry
 * is unlinked and handed to the caller (free it with kv_dict_entry_free()). */
bool kv_dict_delete(kv_dict *d, const char *k, size_t klen, kv_dict_entry **out);
void kv_dict_entry_free(kv_dict *d, kv_dict_entry *e);

/* A random entry (uniform over buckets, then within the chain, as Redis
 * does), or NULL when empty. */
kv_dict_entry *kv_dict_random(const kv_dict *d);

/* Calls fn on every entry (fn must not change the dict). */
void kv_dict_each(const kv_dict *d, void (*fn)(void *arg, kv_dict_entry *e), void *arg);

/* SCAN-style cursor: visits the buckets from cursor on until at least
 * count entries were seen; returns the next cursor, 0 at the end. Redis's
 * reverse-binary cursor, so a resize between calls neither skips nor
 * repeats elements that stay. */
uint64_t kv_dict_scan(const kv_dict *d, uint64_t cursor, size_t count,
                      void (*fn)(void *arg, kv_dict_entry *e), void *arg);

/* The reverse-binary increment of a cursor under mask (shared with db.c). */
uint64_t kv_cursor_next(uint64_t cursor, uint64_t mask);

/* The hash kv_dict uses (also the keyspace's, see kv_hash()). */
uint64_t kv_dict_hash(const char *k, size_t n);

#endif
