/* Cross-shard execution, WATCH and blocked clients (issue 5: being written). */
#include "kv.h"

void kv_watch_touch(kv_db *db, const char *key, size_t klen)
{
    (void)db;
    (void)key;
    (void)klen;
}

void kv_block_ready(kv_db *db, const char *key, size_t klen)
{
    (void)db;
    (void)key;
    (void)klen;
}
