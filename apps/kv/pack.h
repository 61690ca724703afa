/* kv_pack: the compact encoding of small lists, hashes, sets and sorted
 * sets (Redis's listpack idea). One allocation holds every element as
 * [len][bytes][len]: the length before the bytes walks forward, the copy
 * after them walks backward. A length below 255 takes one byte, a longer
 * one five (0xff then 4 bytes). Positions are byte offsets, valid until
 * the next change; calls that change the pack take kv_pack ** because it
 * may move. */
#ifndef KV_PACK_H
#define KV_PACK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct kv_pack {
    uint32_t bytes; /* of data[] */
    uint32_t count; /* elements */
    unsigned char data[];
} kv_pack;

#define KV_PACK_END ((size_t)-1)

/* An empty pack, or NULL on out-of-memory. */
kv_pack *kv_pack_new(void);
void kv_pack_free(kv_pack *p);
kv_pack *kv_pack_dup(const kv_pack *p);
/* Bytes allocated for the pack. */
size_t kv_pack_mem(const kv_pack *p);

static inline size_t kv_pack_count(const kv_pack *p)
{
    return p->count;
}

/* Walking: each returns KV_PACK_END past either end. */
size_t kv_pack_first(const kv_pack *p);
size_t kv_pack_last(const kv_pack *p);
size_t kv_pack_next(const kv_pack *p, size_t pos);
size_t kv_pack_prev(const kv_pack *p, size_t pos);
/* The element at index i (negative: from the end), or KV_PACK_END. */
size_t kv_pack_index(const kv_pack *p, long long i);
/* The element's bytes (not NUL-terminated) and length. */
const char *kv_pack_get(const kv_pack *p, size_t pos, size_t *len);
/* Whether the element equals s[0, n). */
bool kv_pack_eq(const kv_pack *p, size_t pos, const char *s, size_t n);
/* The first element from pos on equal to s, looking at every (skip+1)-th
 * one (skip 1 for field/value pairs), or KV_PACK_END. */
size_t kv_pack_find(const kv_pack *p, size_t pos, const char *s, size_t n, unsigned skip);

/* Inserts s before pos (KV_PACK_END appends). Returns the new element's
 * position, or KV_PACK_END on out-of-memory (the pack is unchanged). */
size_t kv_pack_insert(kv_pack **p, size_t pos, const char *s, size_t n);
static inline size_t kv_pack_push(kv_pack **p, const char *s, size_t n)
{
    return kv_pack_insert(p, KV_PACK_END, s, n);
}
/* Replaces the element at pos. Returns its position or KV_PACK_END on OOM. */
size_t kv_pack_replace(kv_pack **p, size_t pos, const char *s, size_t n);
/* Deletes count elements from pos on (fewer if the pack ends first).
 * Returns the position of the element after them, or KV_PACK_END. */
size_t kv_pack_delete(kv_pack **p, size_t pos, size_t count);

/* Redis's string2ll() on an element: for integer-valued members. */
bool kv_pack_get_ll(const kv_pack *p, size_t pos, long long *v);

#endif
