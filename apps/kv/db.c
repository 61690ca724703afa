/* The per-shard keyspace and the keyspace calls handlers use.
 *
 * Memory per key is a goal: an entry is one allocation of a 24-byte header,
 * the key and (for strings) the value; keys with a TTL carry a 16-byte
 * prefix holding the expiry and their slot in the db's volatile array, the
 * array active expiry samples from (Redis keeps a second dict for this).
 * The table grows at load 1 and is rehashed incrementally, a few buckets
 * per write and per cron tick, so a large keyspace never stalls the loop. */
#include <errno.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dict.h"
#include "kv.h"
#include "persist.h"

#define MIN_MASK 63
#define REHASH_STEP 4 /* buckets moved per write while rehashing */

uint64_t kv_hash(const char *key, size_t len)
{
    return kv_dict_hash(key, len);
}

/* The high half picks the shard, the low half the bucket, so the two
 * choices are independent. */
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

uint32_t kv_lru_clock(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME_COARSE, &ts);
    return (uint32_t)ts.tv_sec & 0xffffff;
}

/* ---- access stamps: LRU clock or LFU counter -------------------------------------
 *
 * An entry's 24-bit stamp is, as in Redis, the LRU clock in seconds, or
 * under an LFU policy 16 bits of minutes since the last decrement and an
 * 8-bit logarithmic access counter. */

int kv_lfu_mode;
long long kv_lfu_log_factor = 10;
long long kv_lfu_decay_time = 1;

#define LFU_INIT_VAL 5

static uint32_t lfu_minutes(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME_COARSE, &ts);
    return (uint32_t)(ts.tv_sec / 60) & 0xffff;
}

/* Redis's LFUDecrAndReturn(): the counter less one per decay period. */
static unsigned lfu_decayed(uint32_t stamp)
{
    uint32_t ldt = stamp >> 8, counter = stamp & 0xff, now = lfu_minutes();
    uint32_t elapsed = now >= ldt ? now - ldt : 65535 - ldt + now;
    long long decay = __atomic_load_n(&kv_lfu_decay_time, __ATOMIC_RELAXED);
    uint32_t periods = decay > 0 ? elapsed / (uint32_t)decay : 0;
    return periods > counter ? 0 : counter - periods;
}

unsigned kv_lfu_freq(const kv_entry *e)
{
    return lfu_decayed(e->lru);
}

static uint32_t new_stamp(void)
{
    if (__atomic_load_n(&kv_lfu_mode, __ATOMIC_RELAXED))
        return lfu_minutes() << 8 | LFU_INIT_VAL;
    return kv_lru_clock();
}

/* An access: the LRU clock, or Redis's LFULogIncr() on the decayed counter. */
static uint32_t access_stamp(uint32_t old)
{
    if (!__atomic_load_n(&kv_lfu_mode, __ATOMIC_RELAXED))
        return kv_lru_clock();
    unsigned counter = lfu_decayed(old);
    if (counter < 255) {
        double r = (double)random() / RAND_MAX;
        double base = counter > LFU_INIT_VAL ? counter - LFU_INIT_VAL : 0;
        long long factor = __atomic_load_n(&kv_lfu_log_factor, __ATOMIC_RELAXED);
        if (r < 1.0 / (base * (double)factor + 1))
            counter++;
    }
    return lfu_minutes() << 8 | counter;
}

/* ---- entries ---------------------------------------------------------------- */

static size_t value_bytes(unsigned type, size_t vlen)
{
    return type == KV_STRING ? vlen : sizeof(void *);
}

static size_t alloc_bytes(const kv_entry *e)
{
    return (e->volatile_ ? sizeof(kv_expiry) : 0) + sizeof(kv_entry) + e->klen +
           value_bytes(e->type, e->vlen);
}

static void *base_of(kv_entry *e)
{
    return e->volatile_ ? (void *)((kv_expiry *)e - 1) : (void *)e;
}

static kv_expiry *expiry_of(kv_entry *e)
{
    return (kv_expiry *)e - 1;
}

static kv_entry *entry_alloc(bool vol, size_t klen, size_t vbytes)
{
    size_t pre = vol ? sizeof(kv_expiry) : 0;
    char *p = malloc(pre + sizeof(kv_entry) + klen + vbytes);
    if (!p)
        return NULL;
    kv_entry *e = (kv_entry *)(p + pre);
    memset(e, 0, sizeof(*e));
    e->volatile_ = vol;
    return e;
}

size_t kv_entry_mem(const kv_entry *e)
{
    size_t n = alloc_bytes(e);
    if (e->type != KV_STRING)
        n += kv_type_of(e->type)->mem(kv_obj(e));
    return n;
}

/* What the db accounts for e: its allocation plus, for objects, the size
 * last reported (kept in vlen, which objects do not otherwise use). */
static size_t accounted(const kv_entry *e)
{
    return alloc_bytes(e) + (e->type == KV_STRING ? 0 : e->vlen);
}

static void free_entry(kv_db *db, kv_entry *e)
{
    db->mem -= accounted(e);
    if (e->volatile_) {
        /* Fill its slot in the volatile array with the last key. */
        uint64_t s = expiry_of(e)->slot;
        kv_entry *last = db->vol[--db->nvol];
        db->vol[s] = last;
        expiry_of(last)->slot = s;
    }
    if (e->type != KV_STRING)
        kv_type_of(e->type)->free(kv_obj(e));
    free(base_of(e));
}

/* ---- the table ----------------------------------------------------------------- */

int kv_db_init(kv_db *db, unsigned id)
{
    memset(db, 0, sizeof(*db));
    db->id = id;
    db->rehash = -1;
    db->mask[0] = MIN_MASK;
    db->t[0] = calloc(MIN_MASK + 1, sizeof(kv_entry *));
    return db->t[0] ? 0 : -ENOMEM;
}

void kv_db_flush(kv_db *db)
{
    if (kv_persist_on)
        kv_persist_before_flush(db);
    __atomic_store_n(&db->changes, db->changes + 1, __ATOMIC_RELAXED);
    for (int t = 0; t < 2; t++) {
        for (size_t i = 0; db->t[t] && i <= db->mask[t]; i++) {
            kv_entry *e = db->t[t][i];
            while (e) {
                kv_entry *next = e->next;
                if (e->type != KV_STRING)
                    kv_type_of(e->type)->free(kv_obj(e));
                free(base_of(e));
                e = next;
            }
            db->t[t][i] = NULL;
        }
    }
    free(db->t[1]);
    db->t[1] = NULL;
    db->used[0] = db->used[1] = 0;
    db->rehash = -1;
    db->nvol = 0;
    db->mem = 0;
}

void kv_db_free(kv_db *db)
{
    kv_db_flush(db);
    free(db->t[0]);
    free(db->vol);
    db->t[0] = NULL;
    db->vol = NULL;
    db->volcap = 0;
}

size_t kv_db_size(const kv_db *db)
{
    return db->used[0] + db->used[1];
}

void kv_db_figures_get(const kv_db *db, kv_db_figures *out)
{
    *out = (kv_db_figures){
        .keys = kv_db_size(db),
        .expires = db->nvol,
        .mem = db->mem,
        .hits = db->hits,
        .misses = db->misses,
        .expired = db->expired,
        .evicted = db->evicted,
    };
}

static void rehash_step(kv_db *db, size_t buckets)
{
    /* A snapshot walks the table by position: entries stay put while it
     * runs (as Redis avoids resizing while a fork's child saves). */
    if (db->rehash_paused)
        return;
    /* Empty buckets are cheap: visit up to 10 per bucket asked for. */
    size_t empty_visits = buckets * 10;
    while (buckets && db->rehash >= 0) {
        kv_entry *e = db->t[0][db->rehash];
        if (!e && empty_visits--) {
            if ((size_t)++db->rehash > db->mask[0])
                goto done;
            continue;
        }
        while (e) {
            kv_entry *next = e->next;
            size_t b = e->hash & db->mask[1];
            e->next = db->t[1][b];
            db->t[1][b] = e;
            db->used[0]--;
            db->used[1]++;
            e = next;
        }
        db->t[0][db->rehash] = NULL;
        buckets--;
        if ((size_t)++db->rehash > db->mask[0])
            goto done;
        if (!empty_visits)
            return;
    }
    return;
done:
    free(db->t[0]);
    db->t[0] = db->t[1];
    db->mask[0] = db->mask[1];
    db->used[0] = db->used[1];
    db->t[1] = NULL;
    db->used[1] = 0;
    db->rehash = -1;
}

static void start_rehash(kv_db *db, size_t mask)
{
    kv_entry **t = calloc(mask + 1, sizeof(kv_entry *));
    if (!t)
        return; /* longer chains, still correct */
    db->t[1] = t;
    db->mask[1] = mask;
    db->used[1] = 0;
    db->rehash = 0;
}

/* The link that points at key's entry, or at the NULL ending its chain
 * (in the table new keys go to). */
static kv_entry **link_of(kv_db *db, uint32_t h, const char *key, size_t klen)
{
    for (int t = 0; t < 2; t++) {
        if (t == 1 && db->rehash < 0)
            break;
        if (t == 0 && db->rehash >= 0 && (h & db->mask[0]) < (size_t)db->rehash)
            continue; /* already moved */
        kv_entry **p = &db->t[t][h & db->mask[t]];
        while (*p) {
            kv_entry *e = *p;
            if (e->hash == h && e->klen == klen && !memcmp(e->data, key, klen))
                return p;
            p = &e->next;
        }
        if (db->rehash < 0 || t == 1)
            return p;
    }
    return &db->t[1][h & db->mask[1]]; /* not reached */
}

static kv_entry **new_key_link(kv_db *db, uint32_t h, int *table)
{
    *table = db->rehash >= 0 ? 1 : 0;
    return &db->t[*table][h & db->mask[*table]];
}

static void insert(kv_db *db, kv_entry *e)
{
    int t;
    kv_entry **p = new_key_link(db, e->hash, &t);
    e->next = *p;
    *p = e;
    db->used[t]++;
    db->mem += accounted(e);
    if (db->rehash < 0 && kv_db_size(db) > db->mask[0] + 1)
        start_rehash(db, db->mask[0] * 2 + 1);
}

/* The table a found link belongs to, for the used counts. */
static int table_of(kv_db *db, uint32_t h)
{
    if (db->rehash < 0)
        return 0;
    return (h & db->mask[0]) < (size_t)db->rehash ? 1 : 0;
}

static bool expired(const kv_entry *e, int64_t now)
{
    return e->volatile_ && ((const kv_expiry *)e - 1)->at_ms <= now;
}

static void unlink_free(kv_db *db, kv_entry **p)
{
    kv_entry *e = *p;
    *p = e->next;
    db->used[table_of(db, e->hash)]--;
    free_entry(db, e);
}

static void vol_add(kv_db *db, kv_entry *e)
{
    if (db->nvol == db->volcap) {
        size_t cap = db->volcap ? db->volcap * 2 : 64;
        kv_entry **v = realloc(db->vol, cap * sizeof(*v));
        if (!v)
            abort(); /* cannot track the TTL: nothing sane to do */
        db->vol = v;
        db->volcap = cap;
    }
    expiry_of(e)->slot = db->nvol;
    db->vol[db->nvol++] = e;
}

/* Replaces *p's entry with n (a copy with changes), keeping the volatile
 * slot pointing at the right entry. */
static void swap_in(kv_db *db, kv_entry **p, kv_entry *n)
{
    kv_entry *old = *p;
    n->next = old->next;
    n->hash = old->hash;
    *p = n;
    db->mem += accounted(n);
    db->mem -= accounted(old);
    if (old->volatile_ && n->volatile_) {
        uint64_t s = expiry_of(old)->slot;
        expiry_of(n)->slot = s;
        db->vol[s] = n;
    } else if (old->volatile_) {
        uint64_t s = expiry_of(old)->slot;
        kv_entry *last = db->vol[--db->nvol];
        db->vol[s] = last;
        expiry_of(last)->slot = s;
    } else if (n->volatile_) {
        vol_add(db, n);
    }
    free(base_of(old));
}

/* ---- background work --------------------------------------------------------------- */

bool kv_db_cron(kv_db *db, int64_t now_ms, unsigned budget_us)
{
    if (db->rehash >= 0)
        rehash_step(db, 100);
    else if (db->mask[0] > MIN_MASK && kv_db_size(db) < (db->mask[0] + 1) / 8)
        start_rehash(db, db->mask[0] >> 1);

    /* Active expiry, Redis's way: sample 20 keys with a TTL, delete the
     * expired ones, go on while more than a quarter of a sample expired
     * and the time budget lasts. */
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    bool more = db->rehash >= 0;
    while (db->nvol) {
        unsigned hit = 0, n = db->nvol < 20 ? (unsigned)db->nvol : 20;
        for (unsigned i = 0; i < n && db->nvol; i++) {
            kv_entry *e = db->vol[(size_t)random() % db->nvol];
            if (!expired(e, now_ms))
                continue;
            kv_entry **p = link_of(db, e->hash, e->data, e->klen);
            kv_watch_touch(db, e->data, e->klen);
            unlink_free(db, p);
            db->expired++;
            hit++;
        }
        if (hit * 4 <= n)
            break;
        clock_gettime(CLOCK_MONOTONIC, &t1);
        if ((t1.tv_sec - t0.tv_sec) * 1000000 + (t1.tv_nsec - t0.tv_nsec) / 1000 >= budget_us) {
            more = true;
            break;
        }
    }
    return more;
}

kv_entry *kv_db_random(kv_db *db, int64_t now_ms)
{
    for (int tries = 0; tries < 100 && kv_db_size(db); tries++) {
        int t = db->rehash >= 0 && (random() & 1) ? 1 : 0;
        size_t mask = db->mask[t];
        size_t b = (size_t)random() & mask;
        if (t == 0 && db->rehash >= 0 && b < (size_t)db->rehash)
            continue;
        kv_entry *e = db->t[t][b];
        if (!e)
            continue;
        size_t len = 0;
        for (kv_entry *x = e; x; x = x->next)
            len++;
        for (size_t i = (size_t)random() % len; i; i--)
            e = e->next;
        if (expired(e, now_ms)) {
            kv_entry **p = link_of(db, e->hash, e->data, e->klen);
            kv_watch_touch(db, e->data, e->klen);
            unlink_free(db, p);
            db->expired++;
            continue;
        }
        return e;
    }
    /* Sparse or mostly expired: walk. */
    for (int t = 0; t < 2; t++)
        for (size_t i = 0; db->t[t] && i <= db->mask[t]; i++)
            for (kv_entry *e = db->t[t][i]; e; e = e->next)
                if (!expired(e, now_ms))
                    return e;
    return NULL;
}

void kv_db_scan(kv_db *db, uint64_t *cursor, size_t count, int64_t now_ms,
                void (*fn)(void *arg, kv_entry *e), void *arg)
{
    /* Finish any rehash first so one table answers: a scan is already
     * O(keys) over its life, this adds at most one pass. */
    while (db->rehash >= 0)
        rehash_step(db, 1024);
    uint64_t v = *cursor;
    size_t seen = 0;
    do {
        for (kv_entry *e = db->t[0][v & db->mask[0]]; e; e = e->next) {
            if (!expired(e, now_ms))
                fn(arg, e);
            seen++;
        }
        v = kv_cursor_next(v, db->mask[0]);
    } while (v && seen < count);
    *cursor = v;
}

/* ---- the keyspace calls -------------------------------------------------------------- */

static kv_db *db_for(const resp_arg *key, uint32_t *h)
{
    uint64_t full = kv_hash(key->ptr, key->len);
    *h = (uint32_t)full;
    return kv_db_of_shard(kv_shard_of(full));
}

/* The link to key's live entry (deleting it if expired), or NULL. */
static kv_entry **find(kv_cmd_ctx *c, kv_db *db, uint32_t h, const resp_arg *key)
{
    kv_entry **p = link_of(db, h, key->ptr, key->len);
    if (!*p)
        return NULL;
    if (expired(*p, c->now_ms)) {
        kv_watch_touch(db, key->ptr, key->len);
        unlink_free(db, p);
        db->expired++;
        return NULL;
    }
    return p;
}

kv_entry *kv_lookup(kv_cmd_ctx *c, const resp_arg *key)
{
    uint32_t h;
    kv_db *db = db_for(key, &h);
    kv_entry **p = find(c, db, h, key);
    if (!p) {
        db->misses++;
        return NULL;
    }
    db->hits++;
    (*p)->lru = access_stamp((*p)->lru);
    return *p;
}

kv_entry *kv_lookup_type(kv_cmd_ctx *c, const resp_arg *key, unsigned type, bool *wrong)
{
    kv_entry *e = kv_lookup(c, key);
    *wrong = e && e->type != type;
    if (*wrong) {
        kv_reply_wrongtype(c->out);
        return NULL;
    }
    return e;
}

static void touched(kv_cmd_ctx *c, kv_db *db, const resp_arg *key)
{
    c->dirty = true;
    __atomic_store_n(&db->changes, db->changes + 1, __ATOMIC_RELAXED);
    if (kv_persist_on)
        kv_persist_touch(db, key->ptr, key->len);
    kv_watch_touch(db, key->ptr, key->len);
    if (db->rehash >= 0)
        rehash_step(db, REHASH_STEP);
}

kv_entry *kv_set_str(kv_cmd_ctx *c, const resp_arg *key, const void *val, size_t vlen,
                     int64_t expire_ms)
{
    uint32_t h;
    kv_db *db = db_for(key, &h);
    kv_entry **p = find(c, db, h, key);
    if (expire_ms == KV_KEEP_TTL)
        expire_ms = p ? kv_expire_of(*p) : KV_NO_EXPIRE;
    bool vol = expire_ms >= 0;
    kv_entry *e = entry_alloc(vol, key->len, vlen);
    if (!e)
        return NULL;
    e->hash = h;
    e->type = KV_STRING;
    e->klen = (uint32_t)key->len;
    e->vlen = (uint32_t)vlen;
    e->lru = new_stamp();
    memcpy(e->data, key->ptr, key->len);
    if (vlen)
        memcpy(e->data + key->len, val, vlen);
    if (vol)
        expiry_of(e)->at_ms = expire_ms;
    if (p) {
        kv_entry *old = *p;
        if (__atomic_load_n(&kv_lfu_mode, __ATOMIC_RELAXED))
            e->lru = old->lru; /* an overwrite keeps the key's frequency, as Redis 7.0 */
        if (old->type != KV_STRING) {
            /* Account it as a string of pointer size, its allocation. */
            kv_type_of(old->type)->free(kv_obj(old));
            db->mem -= old->vlen;
            old->vlen = sizeof(void *);
            old->type = KV_STRING;
        }
        swap_in(db, p, e);
    } else {
        insert(db, e);
        if (vol)
            vol_add(db, e);
    }
    touched(c, db, key);
    return e;
}

static size_t clamp32(size_t n)
{
    return n > UINT32_MAX ? UINT32_MAX : n;
}

kv_entry *kv_add_obj(kv_cmd_ctx *c, const resp_arg *key, unsigned type, void *obj)
{
    uint32_t h;
    kv_db *db = db_for(key, &h);
    kv_entry *e = entry_alloc(false, key->len, sizeof(void *));
    if (!e)
        return NULL;
    e->hash = h;
    e->type = type;
    e->klen = (uint32_t)key->len;
    e->lru = new_stamp();
    memcpy(e->data, key->ptr, key->len);
    kv_set_obj(e, obj);
    e->vlen = (uint32_t)clamp32(kv_type_of(type)->mem(obj));
    insert(db, e);
    touched(c, db, key);
    return e;
}

kv_entry *kv_replace_obj(kv_cmd_ctx *c, const resp_arg *key, unsigned type, void *obj,
                         bool keep_ttl)
{
    uint32_t h;
    kv_db *db = db_for(key, &h);
    kv_entry **p = find(c, db, h, key);
    if (!p)
        return kv_add_obj(c, key, type, obj);
    kv_entry *old = *p;
    if (!keep_ttl && old->volatile_) {
        kv_entry *e = kv_set_expire(c, key, KV_NO_EXPIRE);
        p = link_of(db, h, key->ptr, key->len);
        old = e;
    }
    if (old->type == KV_STRING && old->vlen != sizeof(void *)) {
        /* The value bytes differ in size from a pointer: a new entry. */
        kv_entry *e = entry_alloc(old->volatile_, key->len, sizeof(void *));
        if (!e)
            return NULL;
        e->klen = old->klen;
        e->lru = new_stamp();
        e->type = (uint32_t)type;
        memcpy(e->data, key->ptr, key->len);
        kv_set_obj(e, obj);
        if (old->volatile_)
            expiry_of(e)->at_ms = expiry_of(old)->at_ms;
        swap_in(db, p, e);
        old = e;
    } else {
        if (old->type != KV_STRING) {
            kv_type_of(old->type)->free(kv_obj(old));
            db->mem -= old->vlen;
        }
        old->type = (uint32_t)type;
        kv_set_obj(old, obj);
    }
    old->vlen = (uint32_t)clamp32(kv_type_of(type)->mem(obj));
    db->mem += old->vlen;
    touched(c, db, key);
    return old;
}

bool kv_del(kv_cmd_ctx *c, const resp_arg *key)
{
    uint32_t h;
    kv_db *db = db_for(key, &h);
    kv_entry **p = find(c, db, h, key);
    if (!p)
        return false;
    unlink_free(db, p);
    touched(c, db, key);
    return true;
}

kv_entry *kv_str_grow(kv_cmd_ctx *c, const resp_arg *key, size_t vlen)
{
    uint32_t h;
    kv_db *db = db_for(key, &h);
    kv_entry **p = find(c, db, h, key);
    if (!p || (*p)->type != KV_STRING)
        return NULL;
    kv_entry *e = *p;
    size_t old = e->vlen;
    if (vlen <= old)
        return e;
    size_t pre = e->volatile_ ? sizeof(kv_expiry) : 0;
    size_t fixed = pre + sizeof(kv_entry) + e->klen;
    void *base = base_of(e);
    if (fixed + vlen > malloc_usable_size(base)) {
        /* Room to spare, as Redis's sds: double while under 1 MiB, then
         * 1 MiB more, so a string grown by small appends is copied
         * O(log n) times, not on every append. */
        size_t want = vlen < (1u << 20) ? vlen * 2 : vlen + (1u << 20);
        size_t before = accounted(e);
        char *nb = realloc(base, fixed + want);
        if (!nb)
            return NULL;
        e = (kv_entry *)(nb + pre);
        *p = e;
        if (e->volatile_)
            db->vol[expiry_of(e)->slot] = e;
        db->mem -= before;
        db->mem += accounted(e);
    }
    memset(e->data + e->klen + old, 0, vlen - old);
    db->mem += vlen - old;
    e->vlen = (uint32_t)vlen;
    touched(c, db, key);
    return e;
}

kv_entry *kv_set_expire(kv_cmd_ctx *c, const resp_arg *key, int64_t at_ms)
{
    uint32_t h;
    kv_db *db = db_for(key, &h);
    kv_entry **p = find(c, db, h, key);
    if (!p)
        return NULL;
    kv_entry *e = *p;
    if (at_ms >= 0 && at_ms <= c->now_ms) {
        unlink_free(db, p);
        touched(c, db, key);
        return NULL;
    }
    bool vol = at_ms >= 0;
    if (vol && e->volatile_) {
        expiry_of(e)->at_ms = at_ms;
    } else if (vol != (bool)e->volatile_) {
        size_t vb = value_bytes(e->type, e->vlen);
        kv_entry *n = entry_alloc(vol, e->klen, vb);
        if (!n)
            return NULL;
        memcpy(n->data, e->data, e->klen + vb);
        n->lru = e->lru;
        n->type = e->type;
        n->enc = e->enc;
        n->klen = e->klen;
        n->vlen = e->vlen;
        if (vol)
            expiry_of(n)->at_ms = at_ms;
        swap_in(db, p, n);
        e = n;
    }
    touched(c, db, key);
    return e;
}

void kv_modified(kv_cmd_ctx *c, const resp_arg *key)
{
    uint32_t h;
    kv_db *db = db_for(key, &h);
    kv_entry **p = link_of(db, h, key->ptr, key->len);
    kv_entry *e = *p;
    if (e && e->type != KV_STRING) {
        const kv_type_ops *t = kv_type_of(e->type);
        if (t->len(kv_obj(e)) == 0) {
            unlink_free(db, p);
        } else {
            db->mem -= e->vlen;
            e->vlen = (uint32_t)clamp32(t->mem(kv_obj(e)));
            db->mem += e->vlen;
        }
    }
    touched(c, db, key);
}

void kv_key_ready(kv_cmd_ctx *c, const resp_arg *key)
{
    uint32_t h;
    kv_db *db = db_for(key, &h);
    (void)c;
    kv_block_ready(db, key->ptr, key->len);
}

const kv_type_ops *kv_type_of(unsigned type)
{
    static const kv_type_ops *const types[] = {NULL, &kv_list_type, &kv_set_type, &kv_zset_type,
                                               &kv_hash_type};
    return types[type];
}

/* ---- eviction ------------------------------------------------------------------------ */

/* The entry to evict among a few samples, as Redis approximates: policy
 * numbers follow kv_server_config's maxmemory_policy. */
static kv_entry *evict_pick(kv_db *db, int policy)
{
    bool volatile_only = policy >= 4;
    bool random_pick = policy == 3 || policy == 6;
    size_t pool = volatile_only ? db->nvol : kv_db_size(db);
    if (!pool)
        return NULL;
    kv_entry *best = NULL;
    uint32_t now = kv_lru_clock();
    for (int i = 0; i < (random_pick ? 1 : 5); i++) {
        kv_entry *e = volatile_only ? db->vol[(size_t)random() % db->nvol]
                                    : kv_db_random(db, INT64_MIN);
        if (!e)
            break;
        if (!best) {
            best = e;
        } else if (policy == 7) {
            if (kv_expire_of(e) < kv_expire_of(best))
                best = e;
        } else if (policy == 2 || policy == 5) { /* LFU: the least used goes */
            if (lfu_decayed(e->lru) < lfu_decayed(best->lru))
                best = e;
        } else if (((now - e->lru) & 0xffffff) > ((now - best->lru) & 0xffffff)) {
            best = e;
        }
    }
    return best;
}

bool kv_db_evict(kv_db *db, int policy)
{
    if (policy <= 0)
        return false;
    kv_entry *e = evict_pick(db, policy);
    if (!e)
        return false;
    kv_entry **p = link_of(db, e->hash, e->data, e->klen);
    kv_watch_touch(db, e->data, e->klen);
    if (kv_persist_on)
        kv_persist_before_delete(db, e);
    unlink_free(db, p);
    db->evicted++;
    return true;
}

kv_entry *kv_db_peek(kv_db *db, const char *key, size_t klen)
{
    return *link_of(db, (uint32_t)kv_hash(key, klen), key, klen);
}

void kv_db_position(const kv_db *db, const kv_entry *e, int *table, size_t *bucket)
{
    *table = table_of((kv_db *)db, e->hash);
    *bucket = e->hash & db->mask[*table];
}
