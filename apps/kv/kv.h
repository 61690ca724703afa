/* keel-kv — shared declarations: the per-shard keyspace, the command
 * table, and the server. Work in progress (issue 5): strings and keys so
 * far. */
#ifndef KEEL_KV_H
#define KEEL_KV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <keel/keel.h>

#include "resp.h"

/* ---- keyspace (db.c): one per shard, touched by its shard only ---------- */

typedef struct kv_entry {
    struct kv_entry *next;
    uint64_t hash;
    int64_t expire_ms; /* absolute, CLOCK_REALTIME ms; -1: none */
    uint32_t klen, vlen;
    char data[]; /* key, then value */
} kv_entry;

typedef struct kv_db {
    kv_entry **buckets;
    size_t mask;
    size_t count;
} kv_db;

uint64_t kv_hash(const char *key, size_t len);
/* The shard that owns a key. */
unsigned kv_shard_of(uint64_t hash);
int kv_db_init(kv_db *db);
void kv_db_free(kv_db *db);
/* The live entry for key, or NULL (an expired one is deleted on the way). */
kv_entry *kv_db_find(kv_db *db, uint64_t hash, const char *key, size_t klen);
/* Sets key to val, replacing any entry. Returns the new entry or NULL on
 * out-of-memory (the old value is kept then). */
kv_entry *kv_db_set(kv_db *db, uint64_t hash, const char *key, size_t klen, const char *val,
                    size_t vlen, int64_t expire_ms);
bool kv_db_delete(kv_db *db, uint64_t hash, const char *key, size_t klen);
int64_t kv_now_ms(void);

/* This shard's keyspace. */
kv_db *kv_local_db(void);

/* ---- commands (commands.c) ------------------------------------------------- */

typedef struct kv_cmd_ctx {
    kv_db *db;
    resp_buf *out;
    int proto; /* 2 or 3 */
} kv_cmd_ctx;

typedef void (*kv_cmd_fn)(kv_cmd_ctx *c, size_t argc, const resp_arg *argv);

enum { KV_CMD_WRITE = 1, KV_CMD_KEYED = 2, KV_CMD_SERVER = 4 };

typedef struct kv_command {
    const char *name;
    int arity; /* Redis's convention: n exact, -n at least n (name included) */
    unsigned flags;
    kv_cmd_fn fn;
} kv_command;

/* Looks a command up by name, case-insensitively; NULL if unknown. */
const kv_command *kv_command_lookup(const char *name, size_t len);
/* Writes Redis's reply for an unknown command / a wrong arity. */
void kv_reply_unknown(resp_buf *out, size_t argc, const resp_arg *argv);
void kv_reply_arity(resp_buf *out, const kv_command *cmd);

/* ---- server (server.c) ------------------------------------------------------- */

typedef struct kv_config {
    keel_listen_config listen;
} kv_config;

/* Starts keel-kv on every shard; resolves when it listens. Call on a shard. */
keel_future *kv_server_start(const kv_config *cfg, keel_listener **out);

#endif
