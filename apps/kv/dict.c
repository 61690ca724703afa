/* kv_dict: see dict.h. */
#include <stdlib.h>
#include <string.h>

#include "dict.h"

static inline uint64_t mix(uint64_t a, uint64_t b)
{
    __uint128_t r = (__uint128_t)a * b;
    return (uint64_t)r ^ (uint64_t)(r >> 64);
}

/* A multiply-mix hash reading 8 bytes at a time (wyhash's idea, written
 * for keel): keys are short, so the per-call cost is what counts. */
uint64_t kv_dict_hash(const char *k, size_t n)
{
    uint64_t h = 0x9e3779b97f4a7c15ull ^ n;
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, k, 8);
        h = mix(h ^ v, 0xa0761d6478bd642full);
        k += 8;
        n -= 8;
    }
    uint64_t t = 0;
    memcpy(&t, k, n);
    h = mix(h ^ t, 0xe7037ed1a0b428dbull);
    return mix(h, 0x8ebc6af09c88c6e3ull);
}

static uint64_t rev64(uint64_t v)
{
    v = ((v >> 1) & 0x5555555555555555ull) | ((v & 0x5555555555555555ull) << 1);
    v = ((v >> 2) & 0x3333333333333333ull) | ((v & 0x3333333333333333ull) << 2);
    v = ((v >> 4) & 0x0f0f0f0f0f0f0f0full) | ((v & 0x0f0f0f0f0f0f0f0full) << 4);
    return __builtin_bswap64(v);
}

uint64_t kv_cursor_next(uint64_t v, uint64_t mask)
{
    /* Increment the reversed cursor with the unmasked high bits set, so
     * the carry runs from the table's top bit down (Redis's dictScan). */
    v |= ~mask;
    v = rev64(v);
    v++;
    return rev64(v);
}

kv_dict *kv_dict_new(void)
{
    kv_dict *d = calloc(1, sizeof(*d));
    if (!d)
        return NULL;
    d->mask = 3;
    d->b = calloc(d->mask + 1, sizeof(*d->b));
    if (!d->b) {
        free(d);
        return NULL;
    }
    d->mem = sizeof(*d) + (d->mask + 1) * sizeof(*d->b);
    return d;
}

static size_t entry_bytes(size_t klen, size_t vlen)
{
    return sizeof(kv_dict_entry) + klen + vlen;
}

void kv_dict_free(kv_dict *d)
{
    if (!d)
        return;
    for (size_t i = 0; i <= d->mask; i++) {
        kv_dict_entry *e = d->b[i];
        while (e) {
            kv_dict_entry *next = e->next;
            free(e);
            e = next;
        }
    }
    free(d->b);
    free(d);
}

size_t kv_dict_mem(const kv_dict *d)
{
    return d->mem;
}

static void resize(kv_dict *d, size_t mask)
{
    kv_dict_entry **b = calloc(mask + 1, sizeof(*b));
    if (!b)
        return; /* longer chains, still correct */
    for (size_t i = 0; i <= d->mask; i++) {
        kv_dict_entry *e = d->b[i];
        while (e) {
            kv_dict_entry *next = e->next;
            e->next = b[e->hash & mask];
            b[e->hash & mask] = e;
            e = next;
        }
    }
    free(d->b);
    d->mem += (mask - d->mask) * sizeof(*b);
    d->b = b;
    d->mask = mask;
}

static kv_dict_entry **where(const kv_dict *d, uint32_t h, const char *k, size_t klen)
{
    kv_dict_entry **p = &d->b[h & d->mask];
    while (*p && !((*p)->hash == h && (*p)->klen == klen && !memcmp((*p)->data, k, klen)))
        p = &(*p)->next;
    return p;
}

kv_dict_entry *kv_dict_find(const kv_dict *d, const char *k, size_t klen)
{
    return *where(d, (uint32_t)kv_dict_hash(k, klen), k, klen);
}

static kv_dict_entry *make(uint32_t h, const char *k, size_t klen, const char *v, size_t vlen)
{
    kv_dict_entry *e = malloc(entry_bytes(klen, vlen));
    if (!e)
        return NULL;
    e->next = NULL;
    e->hash = h;
    e->klen = (uint32_t)klen;
    e->vlen = (uint32_t)vlen;
    e->_pad = 0;
    e->u.p = NULL;
    memcpy(e->data, k, klen);
    if (vlen)
        memcpy(e->data + klen, v, vlen);
    return e;
}

kv_dict_entry *kv_dict_add(kv_dict *d, const char *k, size_t klen, const char *v, size_t vlen)
{
    uint32_t h = (uint32_t)kv_dict_hash(k, klen);
    kv_dict_entry *e = make(h, k, klen, v, vlen);
    if (!e)
        return NULL;
    e->next = d->b[h & d->mask];
    d->b[h & d->mask] = e;
    d->mem += entry_bytes(klen, vlen);
    if (++d->count > d->mask + 1)
        resize(d, d->mask * 2 + 1);
    return e;
}

kv_dict_entry *kv_dict_set(kv_dict *d, const char *k, size_t klen, const char *v, size_t vlen,
                           bool *added)
{
    uint32_t h = (uint32_t)kv_dict_hash(k, klen);
    kv_dict_entry **p = where(d, h, k, klen);
    if (!*p) {
        if (added)
            *added = true;
        return kv_dict_add(d, k, klen, v, vlen);
    }
    if (added)
        *added = false;
    kv_dict_entry *old = *p;
    if (old->vlen == vlen) {
        if (vlen)
            memcpy(old->data + klen, v, vlen);
        return old;
    }
    kv_dict_entry *e = make(h, k, klen, v, vlen);
    if (!e)
        return NULL;
    e->u = old->u;
    e->next = old->next;
    *p = e;
    d->mem += vlen - old->vlen;
    free(old);
    return e;
}

void kv_dict_entry_free(kv_dict *d, kv_dict_entry *e)
{
    (void)d;
    free(e);
}

bool kv_dict_delete(kv_dict *d, const char *k, size_t klen, kv_dict_entry **out)
{
    kv_dict_entry **p = where(d, (uint32_t)kv_dict_hash(k, klen), k, klen);
    kv_dict_entry *e = *p;
    if (!e)
        return false;
    *p = e->next;
    d->count--;
    d->mem -= entry_bytes(e->klen, e->vlen);
    if (out)
        *out = e;
    else
        free(e);
    if (d->mask > 3 && d->count < (d->mask + 1) / 8)
        resize(d, d->mask >> 1);
    return true;
}

kv_dict *kv_dict_dup(const kv_dict *d)
{
    kv_dict *n = kv_dict_new();
    if (!n)
        return NULL;
    for (size_t i = 0; i <= d->mask; i++) {
        for (kv_dict_entry *e = d->b[i]; e; e = e->next) {
            kv_dict_entry *c = kv_dict_add(n, e->data, e->klen, e->data + e->klen, e->vlen);
            if (!c) {
                kv_dict_free(n);
                return NULL;
            }
            c->u = e->u;
        }
    }
    return n;
}

kv_dict_entry *kv_dict_random(const kv_dict *d)
{
    if (!d->count)
        return NULL;
    kv_dict_entry *e;
    do
        e = d->b[(size_t)random() & d->mask];
    while (!e);
    size_t len = 0;
    for (kv_dict_entry *x = e; x; x = x->next)
        len++;
    for (size_t i = (size_t)random() % len; i > 0; i--)
        e = e->next;
    return e;
}

void kv_dict_each(const kv_dict *d, void (*fn)(void *arg, kv_dict_entry *e), void *arg)
{
    for (size_t i = 0; i <= d->mask; i++)
        for (kv_dict_entry *e = d->b[i]; e; e = e->next)
            fn(arg, e);
}

uint64_t kv_dict_scan(const kv_dict *d, uint64_t cursor, size_t count,
                      void (*fn)(void *arg, kv_dict_entry *e), void *arg)
{
    size_t seen = 0;
    do {
        for (kv_dict_entry *e = d->b[cursor & d->mask]; e; e = e->next, seen++)
            fn(arg, e);
        cursor = kv_cursor_next(cursor, d->mask);
    } while (cursor && seen < count);
    return cursor;
}
