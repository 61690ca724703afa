/* jemalloc: one arena per shard, so a shard's allocations never contend
 * with another core's, and per-thread allocation counters for the stats.
 * The sanitizer build has no jemalloc (ASan brings its own malloc); there
 * the counters read 0. */
#include "internal.h"

#ifdef KEEL_HAVE_JEMALLOC
#include <jemalloc/jemalloc.h>

int keel__memory_shard_init(keel__shard *s)
{
    unsigned arena;
    size_t sz = sizeof(arena);
    if (mallctl("arenas.create", &arena, &sz, NULL, 0) == 0)
        mallctl("thread.arena", NULL, NULL, &arena, sizeof(arena));
    else
        keel__log("mallctl(arenas.create) failed; shard %u shares the default arena", s->id);
    sz = sizeof(uint64_t *);
    if (mallctl("thread.allocatedp", &s->je_allocatedp, &sz, NULL, 0))
        s->je_allocatedp = NULL;
    sz = sizeof(uint64_t *);
    if (mallctl("thread.deallocatedp", &s->je_deallocatedp, &sz, NULL, 0))
        s->je_deallocatedp = NULL;
    return 0;
}
#else
int keel__memory_shard_init(keel__shard *s)
{
    s->je_allocatedp = s->je_deallocatedp = NULL;
    return 0;
}
#endif

void keel__memory_stats(keel__shard *s)
{
    s->stats.bytes_allocated = s->je_allocatedp ? *s->je_allocatedp : 0;
    s->stats.bytes_deallocated = s->je_deallocatedp ? *s->je_deallocatedp : 0;
}
