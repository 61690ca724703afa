/* The per-shard keyspace: a chained hash table of strings with lazy
 * expiry. Each shard owns the keys whose hash maps to it, so nothing here
 * is shared or locked. (Incremental rehashing, the other types, active
 * expiry and memory accounting are the rest of issue 5.) */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kv.h"

/* FNV-1a folded with a final mix: simple and good enough to spread keys
 * over shards and buckets; the high half picks the shard, the low half the
 * bucket, so the two choices are independent. */
uint64_t kv_hash(const char *key, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)key[i];
        h *= 0x100000001b3ull;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return h;
}

unsigned kv_shard_of(uint64_t hash)
{
    return (unsigned)((hash >> 32) % keel_shard_count());
}

int64_t kv_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int kv_db_init(kv_db *db)
{
    db->mask = 63;
    db->count = 0;
    db->buckets = calloc(db->mask + 1, sizeof(kv_entry *));
    return db->buckets ? 0 : -ENOMEM;
}

void kv_db_free(kv_db *db)
{
    for (size_t i = 0; db->buckets && i <= db->mask; i++) {
        kv_entry *e = db->buckets[i];
        while (e) {
            kv_entry *next = e->next;
            free(e);
            e = next;
        }
    }
    free(db->buckets);
    db->buckets = NULL;
}

static void grow(kv_db *db)
{
    size_t mask = db->mask * 2 + 1;
    kv_entry **b = calloc(mask + 1, sizeof(kv_entry *));
    if (!b)
        return; /* longer chains, still correct */
    for (size_t i = 0; i <= db->mask; i++) {
        kv_entry *e = db->buckets[i];
        while (e) {
            kv_entry *next = e->next;
            e->next = b[e->hash & mask];
            b[e->hash & mask] = e;
            e = next;
        }
    }
    free(db->buckets);
    db->buckets = b;
    db->mask = mask;
}

static kv_entry **slot_of(kv_db *db, uint64_t hash, const char *key, size_t klen)
{
    kv_entry **p = &db->buckets[hash & db->mask];
    while (*p && !((*p)->hash == hash && (*p)->klen == klen && !memcmp((*p)->data, key, klen)))
        p = &(*p)->next;
    return p;
}

kv_entry *kv_db_find(kv_db *db, uint64_t hash, const char *key, size_t klen)
{
    kv_entry **p = slot_of(db, hash, key, klen);
    kv_entry *e = *p;
    if (e && e->expire_ms >= 0 && e->expire_ms <= kv_now_ms()) {
        *p = e->next;
        free(e);
        db->count--;
        return NULL;
    }
    return e;
}

kv_entry *kv_db_set(kv_db *db, uint64_t hash, const char *key, size_t klen, const char *val,
                    size_t vlen, int64_t expire_ms)
{
    kv_entry *e = malloc(sizeof(*e) + klen + vlen);
    if (!e)
        return NULL;
    e->hash = hash;
    e->expire_ms = expire_ms;
    e->klen = (uint32_t)klen;
    e->vlen = (uint32_t)vlen;
    memcpy(e->data, key, klen);
    memcpy(e->data + klen, val, vlen);
    kv_entry **p = slot_of(db, hash, key, klen);
    if (*p) {
        e->next = (*p)->next;
        free(*p);
        *p = e;
        return e;
    }
    e->next = NULL;
    *p = e;
    if (++db->count > (db->mask + 1) * 2)
        grow(db);
    return e;
}

bool kv_db_delete(kv_db *db, uint64_t hash, const char *key, size_t klen)
{
    kv_entry **p = slot_of(db, hash, key, klen);
    kv_entry *e = *p;
    if (!e)
        return false;
    bool live = e->expire_ms < 0 || e->expire_ms > kv_now_ms();
    *p = e->next;
    free(e);
    db->count--;
    return live;
}
