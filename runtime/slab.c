/* Per-shard slabs: fixed-size objects carved from 64 KiB chunks of the
 * shard's own jemalloc arena, recycled through a free list. Objects never
 * leave their shard, so there is no locking and no cross-core traffic; the
 * chunks are returned when the shard exits. */
#include <stdlib.h>

#include "internal.h"

#define CHUNK_BYTES (64 * 1024)

void *keel__aligned_alloc(size_t align, size_t size)
{
    return aligned_alloc(align, (size + align - 1) / align * align);
}

void keel__slab_init(keel__slab *s, uint32_t obj_size)
{
    s->free_list = NULL;
    s->chunks = NULL;
    s->obj_size = obj_size;
    s->in_use = 0;
}

void *keel__slab_grow(keel__slab *s)
{
    char *chunk = aligned_alloc(KEEL__CACHELINE, CHUNK_BYTES);
    if (!chunk)
        abort(); /* the loop's own objects: nothing sensible to fail to */
    *(void **)chunk = s->chunks;
    s->chunks = chunk;
    /* The first object slot holds the chunk link. */
    size_t n = CHUNK_BYTES / s->obj_size;
    for (size_t i = n - 1; i >= 1; i--) {
        void *obj = chunk + i * s->obj_size;
        *(void **)obj = s->free_list;
        s->free_list = obj;
    }
    return s->free_list;
}

void keel__slab_destroy(keel__slab *s)
{
    void *c = s->chunks;
    while (c) {
        void *next = *(void **)c;
        free(c);
        c = next;
    }
    s->chunks = NULL;
    s->free_list = NULL;
}

static inline int slab_class(size_t size)
{
    if (size > KEEL__SLAB_MAX)
        return -1;
    if (size <= 64)
        return KEEL__SLAB_64;
    /* 65..128 -> 1, 129..256 -> 2, ... 2049..4096 -> 6 */
    return 32 - __builtin_clz((unsigned)size - 1) - 6;
}

void *keel__alloc(size_t size)
{
    int c = slab_class(size);
    if (c < 0)
        return malloc(size);
    return keel__slab_alloc(&keel__shard_self()->slabs[c]);
}

void keel__free(void *p, size_t size)
{
    int c = slab_class(size);
    if (c < 0)
        free(p);
    else
        keel__slab_free(&keel__shard_self()->slabs[c], p);
}
