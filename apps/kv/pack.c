/* kv_pack: see pack.h. Small objects live here, so the code favours bytes
 * over speed: a linear walk over at most a few kilobytes. */
#include <stdlib.h>
#include <string.h>

#include "pack.h"
#include "resp.h"

static size_t hdr_size(size_t n)
{
    return n < 255 ? 1 : 5;
}

static size_t entry_size(size_t n)
{
    return 2 * hdr_size(n) + n;
}

static size_t read_len(const unsigned char *q)
{
    if (q[0] != 0xff)
        return q[0];
    uint32_t v;
    memcpy(&v, q + 1, 4);
    return v;
}

/* The length stored just before end (the element's back copy). */
static size_t read_back_len(const unsigned char *end)
{
    if (end[-1] != 0xff)
        return end[-1];
    uint32_t v;
    memcpy(&v, end - 5, 4);
    return v;
}

static void write_entry(unsigned char *q, const char *s, size_t n)
{
    uint32_t v = (uint32_t)n;
    if (n < 255) {
        q[0] = (unsigned char)n;
        memcpy(q + 1, s, n);
        q[1 + n] = (unsigned char)n;
    } else {
        q[0] = 0xff;
        memcpy(q + 1, &v, 4);
        memcpy(q + 5, s, n);
        memcpy(q + 5 + n, &v, 4);
        q[9 + n] = 0xff;
    }
}

kv_pack *kv_pack_new(void)
{
    return calloc(1, sizeof(kv_pack));
}

void kv_pack_free(kv_pack *p)
{
    free(p);
}

kv_pack *kv_pack_dup(const kv_pack *p)
{
    kv_pack *q = malloc(sizeof(*p) + p->bytes);
    if (q)
        memcpy(q, p, sizeof(*p) + p->bytes);
    return q;
}

size_t kv_pack_mem(const kv_pack *p)
{
    return sizeof(*p) + p->bytes;
}

size_t kv_pack_first(const kv_pack *p)
{
    return p->bytes ? 0 : KV_PACK_END;
}

size_t kv_pack_last(const kv_pack *p)
{
    if (!p->bytes)
        return KV_PACK_END;
    size_t n = read_back_len(p->data + p->bytes);
    return p->bytes - entry_size(n);
}

size_t kv_pack_next(const kv_pack *p, size_t pos)
{
    size_t n = read_len(p->data + pos);
    pos += entry_size(n);
    return pos < p->bytes ? pos : KV_PACK_END;
}

size_t kv_pack_prev(const kv_pack *p, size_t pos)
{
    if (pos == 0)
        return KV_PACK_END;
    size_t n = read_back_len(p->data + pos);
    return pos - entry_size(n);
}

size_t kv_pack_index(const kv_pack *p, long long i)
{
    size_t pos;
    if (i >= 0) {
        if ((unsigned long long)i >= p->count)
            return KV_PACK_END;
        pos = kv_pack_first(p);
        while (i-- > 0)
            pos = kv_pack_next(p, pos);
    } else {
        if ((unsigned long long)-(i + 1) >= p->count)
            return KV_PACK_END;
        pos = kv_pack_last(p);
        while (++i < 0)
            pos = kv_pack_prev(p, pos);
    }
    return pos;
}

const char *kv_pack_get(const kv_pack *p, size_t pos, size_t *len)
{
    const unsigned char *q = p->data + pos;
    *len = read_len(q);
    return (const char *)q + hdr_size(*len);
}

bool kv_pack_eq(const kv_pack *p, size_t pos, const char *s, size_t n)
{
    size_t len;
    const char *v = kv_pack_get(p, pos, &len);
    return len == n && !memcmp(v, s, n);
}

size_t kv_pack_find(const kv_pack *p, size_t pos, const char *s, size_t n, unsigned skip)
{
    while (pos != KV_PACK_END) {
        if (kv_pack_eq(p, pos, s, n))
            return pos;
        pos = kv_pack_next(p, pos);
        for (unsigned k = 0; k < skip && pos != KV_PACK_END; k++)
            pos = kv_pack_next(p, pos);
    }
    return KV_PACK_END;
}

/* Moves the bytes at [pos, end) by delta (growing or shrinking the pack). */
static kv_pack *resize_at(kv_pack *p, size_t pos, long delta)
{
    size_t bytes = p->bytes + (size_t)delta;
    if (delta > 0) {
        p = realloc(p, sizeof(*p) + bytes);
        if (!p)
            return NULL;
        memmove(p->data + pos + delta, p->data + pos, p->bytes - pos);
    } else {
        memmove(p->data + pos + delta, p->data + pos, p->bytes - pos);
        kv_pack *q = realloc(p, sizeof(*p) + bytes);
        if (q)
            p = q;
    }
    p->bytes = (uint32_t)bytes;
    return p;
}

size_t kv_pack_insert(kv_pack **pp, size_t pos, const char *s, size_t n)
{
    if (pos == KV_PACK_END)
        pos = (*pp)->bytes;
    kv_pack *p = resize_at(*pp, pos, (long)entry_size(n));
    if (!p)
        return KV_PACK_END;
    write_entry(p->data + pos, s, n);
    p->count++;
    *pp = p;
    return pos;
}

size_t kv_pack_replace(kv_pack **pp, size_t pos, const char *s, size_t n)
{
    kv_pack *p = *pp;
    size_t old = entry_size(read_len(p->data + pos));
    long delta = (long)entry_size(n) - (long)old;
    if (delta) {
        /* Shift what follows the old element, then rewrite it in place. */
        p = resize_at(p, pos + old, delta);
        if (!p)
            return KV_PACK_END;
    }
    write_entry(p->data + pos, s, n);
    *pp = p;
    return pos;
}

size_t kv_pack_delete(kv_pack **pp, size_t pos, size_t count)
{
    kv_pack *p = *pp;
    size_t end = pos, k = 0;
    while (k < count && end < p->bytes) {
        end += entry_size(read_len(p->data + end));
        k++;
    }
    p = resize_at(p, end, -(long)(end - pos));
    p->count -= (uint32_t)k;
    *pp = p;
    return pos < p->bytes ? pos : KV_PACK_END;
}

bool kv_pack_get_ll(const kv_pack *p, size_t pos, long long *v)
{
    size_t n;
    const char *s = kv_pack_get(p, pos, &n);
    return resp_string2ll(s, n, v);
}
