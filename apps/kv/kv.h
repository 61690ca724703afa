/* keel-kv — shared declarations: the per-shard keyspace and its objects,
 * the command table, and the server.
 *
 * Threading: every shard owns one kv_db (the keys whose hash maps to it).
 * A command handler runs either on the shard that owns all its keys, or on
 * a coordinator shard that holds the locks of every shard its keys live on
 * (see txn.c). Handlers therefore never touch a kv_db through anything but
 * the kv_* calls below, which pick the owner's db by the key's hash. */
#ifndef KEEL_KV_H
#define KEEL_KV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <keel/keel.h>

#include "resp.h"

/* ---- objects --------------------------------------------------------------- */

enum kv_type { KV_STRING = 0, KV_LIST = 1, KV_SET = 2, KV_ZSET = 3, KV_HASH = 4 };

/* What the keyspace needs to know about a type's object; each type module
 * defines its table (kv_list_type ...). */
typedef struct kv_type_ops {
    const char *name;                     /* TYPE's answer: "list" */
    void (*free)(void *obj);              /* frees everything */
    void *(*dup)(const void *obj);        /* deep copy for COPY; NULL on OOM */
    size_t (*mem)(const void *obj);       /* bytes used, for MEMORY USAGE */
    const char *(*encoding)(const void *obj); /* OBJECT ENCODING: "listpack" */
    size_t (*len)(const void *obj);       /* elements; a key with 0 is deleted */
} kv_type_ops;

extern const kv_type_ops kv_list_type, kv_set_type, kv_zset_type, kv_hash_type;
const kv_type_ops *kv_type_of(unsigned type);

/* One key. 24 bytes of header: the value of a string follows the key in
 * the same allocation, the object of the other types is a pointer there.
 * A key with a TTL carries a 16-byte prefix (kv_expiry) before the header
 * instead of paying 8 bytes in every key. */
typedef struct kv_entry {
    struct kv_entry *next;
    uint32_t hash;          /* low 32 bits of kv_hash(): bucket and quick check */
    uint32_t lru : 24;      /* kv_lru_clock() at the last access */
    uint32_t type : 3;      /* enum kv_type */
    uint32_t volatile_ : 1; /* has a kv_expiry prefix */
    uint32_t enc : 4;       /* free for the type module */
    uint32_t klen;
    uint32_t vlen; /* string: value bytes; other types: 0 */
    char data[];   /* key bytes, then the string value or a void * */
} kv_entry;

typedef struct kv_expiry {
    int64_t at_ms;  /* absolute, CLOCK_REALTIME ms */
    uint64_t slot;  /* index in the db's volatile-key array */
} kv_expiry;

static inline const char *kv_key(const kv_entry *e)
{
    return e->data;
}
/* A string's bytes. */
static inline char *kv_str(kv_entry *e)
{
    return e->data + e->klen;
}
/* Another type's object. */
static inline void *kv_obj(const kv_entry *e)
{
    void *p;
    memcpy(&p, e->data + e->klen, sizeof(p));
    return p;
}
static inline void kv_set_obj(kv_entry *e, void *obj)
{
    memcpy(e->data + e->klen, &obj, sizeof(obj));
}
/* The absolute expiry in ms, or -1. */
static inline int64_t kv_expire_of(const kv_entry *e)
{
    return e->volatile_ ? ((const kv_expiry *)e - 1)->at_ms : -1;
}

/* ---- the keyspace (db.c) ----------------------------------------------------- */

struct kv_shard_state; /* txn.c: locks, watches, blocked clients */

/* A db's figures for the metrics collector (apps/kv/metrics.c). */
typedef struct kv_db_figures {
    size_t keys, expires, mem;
    uint64_t hits, misses, expired, evicted;
} kv_db_figures;

/* One shard's keys: a chained hash table rehashed incrementally (two
 * tables while growing or shrinking, a few buckets moved per operation),
 * plus the array of keys with a TTL that active expiry samples. */
typedef struct kv_db {
    kv_entry **t[2];
    size_t mask[2];
    size_t used[2];
    ssize_t rehash; /* next bucket of t[0] to move; -1 when not rehashing */
    kv_entry **vol; /* keys with a TTL; the entry's kv_expiry.slot indexes it */
    size_t nvol, volcap;
    size_t mem;  /* bytes held by keys and values, for maxmemory and INFO */
    unsigned id; /* the owning shard */
    /* INFO stats */
    uint64_t hits, misses, expired, evicted;
    uint64_t expire_cursor;
    unsigned rehash_paused; /* a snapshot walks the table: no entry moves */
    uint64_t changes;       /* writes ever (save rules, INFO); by the db's holder */
    struct kv_shard_state *st;
    /* The figures when the shard last granted its lock: while a
     * coordinator on another shard holds the db, the owner reports these
     * rather than read what that shard is writing (txn.c). */
    kv_db_figures at_lock;
} kv_db;

/* KV_NO_EXPIRE: no TTL. KV_KEEP_TTL: keep the old key's TTL. */
#define KV_NO_EXPIRE (-1)
#define KV_KEEP_TTL (-2)

uint64_t kv_hash(const char *key, size_t len);
/* The shard that owns a key. */
unsigned kv_shard_of(uint64_t hash);
static inline unsigned kv_shard_of_key(const resp_arg *key)
{
    return kv_shard_of(kv_hash(key->ptr, key->len));
}
int64_t kv_now_ms(void);
uint32_t kv_lru_clock(void);
/* Under an LFU maxmemory policy entries count accesses instead of timing
 * them (CONFIG sets these); kv_lfu_freq() is OBJECT FREQ's answer. */
extern int kv_lfu_mode;
extern long long kv_lfu_log_factor, kv_lfu_decay_time;
unsigned kv_lfu_freq(const kv_entry *e);

int kv_db_init(kv_db *db, unsigned id);
void kv_db_free(kv_db *db);
size_t kv_db_size(const kv_db *db);
/* The db's figures now; by whoever holds the db. */
void kv_db_figures_get(const kv_db *db, kv_db_figures *out);
/* Removes every key. */
void kv_db_flush(kv_db *db);
/* One step of background work: a few buckets of rehash, active expiry of
 * keys sampled from the volatile array (Redis's algorithm: 20 samples,
 * again while more than 25% expired, bounded by budget_us). Returns
 * whether more work is pending. */
bool kv_db_cron(kv_db *db, int64_t now_ms, unsigned budget_us);
/* Iteration for SCAN/KEYS: calls fn for every live key in the buckets from
 * *cursor on, until at least count keys were visited or the table ends;
 * *cursor becomes 0 at the end. Reverse-binary cursor, as Redis's, so a
 * rehash in between neither skips nor repeats more than Redis would. */
void kv_db_scan(kv_db *db, uint64_t *cursor, size_t count, int64_t now_ms,
                void (*fn)(void *arg, kv_entry *e), void *arg);
/* Evicts one key by maxmemory policy (1 allkeys-lru, 2 allkeys-lfu (as
 * LRU), 3 allkeys-random, 4 volatile-lru, 5 volatile-lfu, 6
 * volatile-random, 7 volatile-ttl); false if none can go. */
bool kv_db_evict(kv_db *db, int policy);
/* A random live key, or NULL when empty. */
kv_entry *kv_db_random(kv_db *db, int64_t now_ms);
/* The db of a shard. */
kv_db *kv_db_of_shard(unsigned shard);
/* The entry of key, live or expired, without side effects; or NULL. */
kv_entry *kv_db_peek(kv_db *db, const char *key, size_t klen);
/* Where e is in the table (for a snapshot's walk, while rehash_paused). */
void kv_db_position(const kv_db *db, const kv_entry *e, int *table, size_t *bucket);

/* Hooks of txn.c the keyspace calls: a key was written or deleted (WATCH);
 * a list or sorted set got elements (blocked clients). */
void kv_watch_touch(kv_db *db, const char *key, size_t klen);
void kv_block_ready(kv_db *db, const char *key, size_t klen);

/* ---- commands ------------------------------------------------------------------ */

struct kv_client;

/* What a handler gets. It writes exactly one reply to out. */
typedef struct kv_cmd_ctx {
    resp_buf *out;
    int proto;                /* 2 or 3 */
    int64_t now_ms;           /* the command's clock: expiry checks use it throughout */
    unsigned flags;           /* KV_CTX_* */
    struct kv_client *client; /* the caller; for blocking commands and CLIENT */
    bool dirty;               /* set by kv_modified(): the command wrote */
    bool would_block;         /* set by a blocking command that found nothing */
    int64_t block_deadline_ms; /* with would_block: absolute ms, 0 for none */
} kv_cmd_ctx;

enum {
    KV_CTX_MULTI = 1, /* inside EXEC (or a script): blocking commands do not block */
};

/* Keyspace calls for handlers: they find the owner db by hash. */

/* The live entry of key (lazy expiry on the way), or NULL; counts a hit
 * or miss and updates the LRU clock. */
kv_entry *kv_lookup(kv_cmd_ctx *c, const resp_arg *key);
/* As kv_lookup, but for a key that must hold type (or be absent): on
 * another type it replies WRONGTYPE, sets *wrong and returns NULL. */
kv_entry *kv_lookup_type(kv_cmd_ctx *c, const resp_arg *key, unsigned type, bool *wrong);
/* Sets key to a string, replacing whatever it held. expire_ms: absolute
 * ms, KV_NO_EXPIRE or KV_KEEP_TTL. NULL on out-of-memory (key unchanged).
 * Calls kv_modified(). */
kv_entry *kv_set_str(kv_cmd_ctx *c, const resp_arg *key, const void *val, size_t vlen,
                     int64_t expire_ms);
/* Adds a new key holding obj of type (the key must not exist). NULL on
 * out-of-memory (the caller still owns obj). Calls kv_modified(). */
kv_entry *kv_add_obj(kv_cmd_ctx *c, const resp_arg *key, unsigned type, void *obj);
/* Replaces a live entry's object with obj of type, keeping the TTL unless
 * keep_ttl is false (the old object is freed). */
kv_entry *kv_replace_obj(kv_cmd_ctx *c, const resp_arg *key, unsigned type, void *obj,
                         bool keep_ttl);
/* Lengthens the live string at key to vlen bytes (the new ones zero),
 * keeping spare room so repeated growth (APPEND, SETRANGE, SETBIT) is
 * amortized; the entry may move: use the returned pointer. NULL when the
 * key is not a live string, or on out-of-memory (unchanged). Calls
 * kv_modified()'s bookkeeping; the caller writes the new bytes. */
kv_entry *kv_str_grow(kv_cmd_ctx *c, const resp_arg *key, size_t vlen);
/* Deletes key. Returns whether a live key was deleted. Calls kv_modified(). */
bool kv_del(kv_cmd_ctx *c, const resp_arg *key);
/* Sets (ms >= 0) or removes (KV_NO_EXPIRE) a live key's TTL; the entry
 * may move: use the returned pointer. A time in the past deletes the key
 * and returns NULL. Calls kv_modified(). */
kv_entry *kv_set_expire(kv_cmd_ctx *c, const resp_arg *key, int64_t at_ms);
/* After changing an object in place (or its size): tells WATCH and
 * memory accounting, and deletes the key if the object became empty.
 * Every write calls it (the kv_set/kv_add/kv_del calls do it themselves). */
void kv_modified(kv_cmd_ctx *c, const resp_arg *key);
/* A list or sorted set gained elements: blocked clients may be served. */
void kv_key_ready(kv_cmd_ctx *c, const resp_arg *key);
/* Bytes of a live entry and its value, for MEMORY USAGE. */
size_t kv_entry_mem(const kv_entry *e);

/* Common replies. */
void kv_reply_wrongtype(resp_buf *out);
void kv_reply_not_int(resp_buf *out); /* "ERR value is not an integer or out of range" */
void kv_reply_not_float(resp_buf *out); /* "ERR value is not a valid float" */
void kv_reply_syntax(resp_buf *out);
void kv_reply_oom(resp_buf *out);
/* A write's success: ":1" for the NX forms (one: SETNX, MSETNX, RENAMENX),
 * "+OK" otherwise. */
void kv_reply_ok_or_one(resp_buf *out, bool one);
/* Case-insensitive match of an argument against an upper-case word. */
bool kv_arg_is(const resp_arg *a, const char *word);
/* Redis's getLongLongFromObjectOrReply(): replies the error and returns
 * false unless a is an integer. msg: NULL for the default error. */
bool kv_arg_ll(kv_cmd_ctx *c, const resp_arg *a, long long *v, const char *msg);
/* Redis's getDoubleFromObjectOrReply() ("ERR value is not a valid float"). */
bool kv_arg_double(kv_cmd_ctx *c, const resp_arg *a, double *v, const char *msg);
/* Redis's string2d(): strtod without leading spaces, no NaN. */
bool kv_string2d(const char *s, size_t n, double *out);
/* Redis's string2ld() for INCRBYFLOAT. */
bool kv_string2ld(const char *s, size_t n, long double *out);
/* Redis's index rule for LRANGE, LTRIM, ZRANGE and ZREMRANGEBYRANK: negative
 * indexes count from the end, start is clamped to 0 and end to len - 1.
 * Returns false for an empty range; otherwise sets [*from, *to]. */
bool kv_clamp_range(long long start, long long end, size_t len, size_t *from, size_t *to);
/* Redis's parseScanCursorOrReply(): strtoul() over the argument as a C
 * string ("-1" wraps, "" is 0), no leading space, nothing after the digits.
 * Replies "ERR invalid cursor" and returns false when it does not parse. */
bool kv_arg_cursor(kv_cmd_ctx *c, const resp_arg *a, uint64_t *cursor);
/* The [MATCH pattern] [COUNT count] options of the SCAN family, from
 * argv[first] on; *count and *pat keep their values unless given, and a
 * MATCH of "*" sets *pat to NULL. type: SCAN's [TYPE type], or NULL where
 * there is none. Replies the error and returns false on a bad option. */
bool kv_scan_options(kv_cmd_ctx *c, size_t argc, const resp_arg *argv, size_t first,
                     long long *count, const resp_arg **pat, const resp_arg **type);
/* The start of HSCAN, SSCAN and ZSCAN (key cursor [MATCH pattern] [COUNT
 * count]), in Redis's order: cursor, then the key, then the options. Returns
 * the entry at argv[1], holding type, with *cursor, *count (10 unless
 * given) and *pat set; NULL when the reply is already written (an error, or
 * the empty scan of a missing key). */
kv_entry *kv_scan_key(kv_cmd_ctx *c, size_t argc, const resp_arg *argv, unsigned type,
                      uint64_t *cursor, long long *count, const resp_arg **pat);
/* Redis's stringmatchlen() glob (KEYS, SCAN MATCH, HSCAN...). */
bool kv_glob_match(const char *pat, size_t plen, const char *s, size_t slen, bool nocase);

typedef void (*kv_cmd_fn)(kv_cmd_ctx *c, size_t argc, const resp_arg *argv);
/* For commands whose keys are not first..last by step (numkeys, STORE):
 * writes the indexes of argv's keys into idx (at most max); returns their
 * number, or -1 when the arguments are malformed (the handler then replies
 * the error itself, run with no keys). */
typedef int (*kv_keys_fn)(size_t argc, const resp_arg *argv, size_t *idx, size_t max);

/* Redis's command flags, as COMMAND INFO shows them. */
enum {
    KV_CMD_WRITE = 1u << 0,
    KV_CMD_READONLY = 1u << 1,
    KV_CMD_DENYOOM = 1u << 2,
    KV_CMD_ADMIN = 1u << 3,
    KV_CMD_PUBSUB = 1u << 4,
    KV_CMD_NOSCRIPT = 1u << 5,
    KV_CMD_BLOCKING = 1u << 6,
    KV_CMD_LOADING = 1u << 7,
    KV_CMD_STALE = 1u << 8,
    KV_CMD_SKIP_MONITOR = 1u << 9,
    KV_CMD_FAST = 1u << 10,
    KV_CMD_NO_AUTH = 1u << 11,
    KV_CMD_NO_MULTI = 1u << 12,
    KV_CMD_MAY_REPLICATE = 1u << 13,
    KV_CMD_SENTINEL = 1u << 14,
    /* keel's own, not shown */
    KV_CMD_ALL_SHARDS = 1u << 20, /* touches every shard's keyspace (KEYS, FLUSHALL) */
    KV_CMD_CONN = 1u << 21,       /* needs the connection: run by the server, never hops */
    KV_CMD_TXN_OK = 1u << 22,     /* a CONN command that MULTI still queues (PING, ECHO...) */
};

typedef struct kv_command {
    const char *name;     /* lower case */
    int arity;            /* n exact, -n at least n (the name included) */
    uint32_t flags;       /* KV_CMD_* */
    int first_key;        /* Redis's legacy key positions; 0: no keys */
    int last_key;         /* -1: the last argument, -2: the one before ... */
    int key_step;
    kv_cmd_fn fn;
    kv_keys_fn keys;      /* overrides first/last/step when set */
    const char *acl_cats; /* "@write @string @slow", for COMMAND INFO */
} kv_command;

/* Each module's table, ended by an entry with name NULL. */
extern const kv_command kv_string_commands[], kv_bitmap_commands[], kv_key_commands[],
    kv_list_commands[], kv_hash_commands[], kv_set_commands[], kv_zset_commands[],
    kv_server_commands[], kv_block_commands[];

/* Builds the lookup table; once, before any lookup. */
void kv_commands_init(void);
/* Looks a command up by name, case-insensitively; NULL if unknown. */
const kv_command *kv_command_lookup(const char *name, size_t len);
/* A small dense number for each command, below KV_MAX_COMMANDS (per-command
 * statistics). */
#define KV_MAX_COMMANDS 1024
size_t kv_command_id(const kv_command *cmd);
/* The command with that id, or NULL. */
const kv_command *kv_command_by_id(size_t id);
/* The positions of argv's keys (at most max); -1 on malformed arguments. */
int kv_command_keys(const kv_command *cmd, size_t argc, const resp_arg *argv, size_t *idx,
                    size_t max);
/* Writes Redis's reply for an unknown command / a wrong arity. */
void kv_reply_unknown(resp_buf *out, size_t argc, const resp_arg *argv);
void kv_reply_arity(resp_buf *out, const kv_command *cmd);
/* COMMAND [COUNT|INFO|LIST|DOCS|GETKEYS] */
void kv_command_reply(kv_cmd_ctx *c, size_t argc, const resp_arg *argv);

/* ---- server (server.c) ------------------------------------------------------- */

typedef struct kv_config {
    keel_listen_config listen;
    const char *requirepass;
    unsigned long long maxmemory;
    int maxmemory_policy;
} kv_config;

/* Starts keel-kv on every shard; resolves when it listens. Call on a shard. */
keel_future *kv_server_start(const kv_config *cfg, keel_listener **out);

#endif
