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
    if (mallctl("arenas.create", &arena, &sz, NULL, 0) == 0) {
        mallctl("thread.arena", NULL, NULL, &arena, sizeof(arena));
        s->je_arena = arena + 1;
    } else
        keel__log("mallctl(arenas.create) failed; shard %u shares the default arena", s->id);
    sz = sizeof(uint64_t *);
    if (mallctl("thread.allocatedp", &s->je_allocatedp, &sz, NULL, 0))
        s->je_allocatedp = NULL;
    sz = sizeof(uint64_t *);
    if (mallctl("thread.deallocatedp", &s->je_deallocatedp, &sz, NULL, 0))
        s->je_deallocatedp = NULL;
    return 0;
}

/* jemalloc's statistics are snapshots refreshed by bumping "epoch" (a
 * global operation); a scrape does it once, then reads each shard's arena. */
void keel__memory_refresh(void)
{
    uint64_t epoch = 1;
    size_t sz = sizeof(epoch);
    mallctl("epoch", &epoch, &sz, &epoch, sz);
}

static size_t arena_stat(unsigned arena, const char *what)
{
    char key[96];
    size_t v = 0, sz = sizeof(v);
    snprintf(key, sizeof(key), "stats.arenas.%u.%s", arena, what);
    if (mallctl(key, &v, &sz, NULL, 0))
        return 0;
    return v;
}

bool keel__memory_arena_stats(const keel__shard *s, uint64_t *allocated, uint64_t *resident)
{
    if (!s->je_arena)
        return false;
    unsigned a = s->je_arena - 1;
    *allocated = arena_stat(a, "small.allocated") + arena_stat(a, "large.allocated");
    *resident = arena_stat(a, "resident");
    return true;
}
#else
int keel__memory_shard_init(keel__shard *s)
{
    s->je_allocatedp = s->je_deallocatedp = NULL;
    return 0;
}

void keel__memory_refresh(void)
{
}

bool keel__memory_arena_stats(const keel__shard *s, uint64_t *allocated, uint64_t *resident)
{
    (void)s;
    *allocated = *resident = 0;
    return false;
}
#endif

void keel__memory_stats(keel__shard *s)
{
    s->stats.bytes_allocated = s->je_allocatedp ? *s->je_allocatedp : 0;
    s->stats.bytes_deallocated = s->je_deallocatedp ? *s->je_deallocatedp : 0;
}
