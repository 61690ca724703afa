/* keel-kv persistence (persist.c, snapshot.c): an append-only file and
 * snapshots per shard, both in one format, RESP commands (as Redis's AOF),
 * so one loader reads either.
 *
 * What is logged: a command that ran on its keys' own shard and replays
 * the same way is logged as it came (SET, LPUSH, INCR...); anything else
 * is logged as the resulting state of each key it touched, on that key's
 * shard: a command whose keys span shards (so every shard's file only
 * holds its own keys and loads on its own), a relative TTL (EXPIRE 10 is
 * logged as PEXPIREAT), randomness (SPOP). So each shard's file replays
 * to that shard's keyspace, and the shards load in parallel.
 *
 * Who touches what: the records a command makes go to the buffer of the
 * db they describe, written by whoever holds that db (its shard, or a
 * coordinator holding its lock, as for the db itself: txn.c). Only the
 * owner shard moves them to its files (kv_persist_pump), when it holds
 * its db again. */
#ifndef KV_PERSIST_H
#define KV_PERSIST_H

#include "kv.h"
#include "server.h"

/* Whether anything records writes (AOF on, or a snapshot running): the
 * hot path's only cost when persistence is off is this load. */
extern bool kv_persist_on;

/* Around a write command's handler, on the thread that runs it. single:
 * the command runs on its keys' shard without locks (so it may be logged
 * as it is). */
void kv_persist_begin(const kv_command *cmd, size_t argc, const resp_arg *argv, bool single);
/* The same for a blocked client's command served on this shard, which
 * holds only its own db. */
void kv_persist_begin_served(const kv_command *cmd, size_t argc, const resp_arg *argv);
/* What a write's reply waits for: the shards whose AOF got its records
 * and the offsets there (kv_persist_wait). */
typedef struct kv_persist_need {
    bool any;                              /* false: the reply waits for nothing */
    uint64_t shards[KEEL_MAX_SHARDS / 64]; /* bit i: shard i */
    uint64_t at[KEEL_MAX_SHARDS];          /* where a bit is set */
} kv_persist_need;

/* After the handler; fills *need (need->any false when persistence is off). */
void kv_persist_end(kv_persist_need *need);
/* Adds what src waits for to dst. */
void kv_persist_need_merge(kv_persist_need *dst, const kv_persist_need *src);

/* db.c's hooks: key was written (after the change) / is about to be
 * deleted by eviction / the whole db is about to be flushed. */
void kv_persist_touch(kv_db *db, const char *key, size_t klen);
void kv_persist_before_delete(kv_db *db, const kv_entry *e);
void kv_persist_before_flush(kv_db *db);

/* Moves this shard's pending records to its files; on the owner shard
 * while it holds its db (txn.c calls it when a lock is released). */
void kv_persist_pump(void);

/* Resolves once shard's AOF has its records up to target written
 * (appendfsync everysec, no) or durable (always). */
keel_future *kv_persist_wait(unsigned shard, uint64_t target);
/* Waits for every shard of need (copied). */
keel_future *kv_persist_wait_all(const kv_persist_need *need);

/* The -MISCONF error writes get, or NULL while the disk is fine. */
const char *kv_persist_write_error(void);

/* Per shard at start, before listening: loads the AOF (appendonly yes and
 * it exists) or the snapshot, opens the AOF; resolves 0 or -errno after
 * logging why. */
keel_future *kv_persist_shard_start(void);
/* Once, before the shards start (after the configuration is read); 0 or -1
 * after printing why. */
int kv_persist_init(unsigned nshards);
/* An exit hook run before the clients drain: replies waiting on an AOF
 * that cannot be written get an error instead of waiting forever. */
keel_future *kv_persist_exit_early(void *arg);
/* Whether a shard failed to load or create its files (already explained
 * on stderr), for main's last word. */
bool kv_persist_start_failed(void);
void kv_persist_free(void);

/* Housekeeping from the shard's cron (background group): everysec syncs,
 * retries after a write error, save rules, snapshot steps. Returns whether
 * it wants to run again soon. */
bool kv_persist_cron(int64_t now_ms);

/* Configuration, applied by CONFIG SET and at start. */
typedef struct kv_persist_config {
    bool appendonly;
    int appendfsync; /* 0 always, 1 everysec, 2 no */
    const char *dir, *appendfilename, *appenddirname, *dbfilename;
    bool aof_load_truncated;   /* load a truncated tail, and cut it */
    bool aof_fix_corrupt_tail; /* keel-kv's: cut a corrupt tail too */
    bool stop_writes_on_bgsave_error;
    long long rewrite_percentage, rewrite_min_size;
    unsigned nsave;
    struct {
        long long secs, changes;
    } save[16];
} kv_persist_config;
extern kv_persist_config kv_pcfg;
/* With the AOF on, a write's reply waits for its record: until it is
 * written (appendfsync everysec, no), or durable (always). */
static inline bool kv_persist_replies_wait(void)
{
    return kv_pcfg.appendonly;
}
/* Parses a "save" value ("3600 1 300 100", "" for none); false if bad. */
bool kv_persist_parse_save(const char *v, kv_persist_config *into);
/* CONFIG SET appendonly: turns the AOF on (by a rewrite on every shard)
 * or off. */
void kv_persist_set_appendonly(bool on);

/* SAVE / BGSAVE / BGREWRITEAOF / LASTSAVE, and INFO persistence. */
void kv_cmd_save(kv_client *c, resp_buf *out, bool background);
void kv_cmd_bgrewriteaof(kv_client *c, resp_buf *out);
long long kv_persist_lastsave(void);
/* SHUTDOWN SAVE (1) saves at exit even without save rules, NOSAVE (-1)
 * does not save even with them. */
void kv_persist_shutdown_save(int mode);
/* INFO's Persistence lines, into b (n bytes); returns their length. */
size_t kv_persist_info(char *b, size_t n);

/* ---- shared by persist.c and snapshot.c ------------------------------------------ */

/* Appends the commands that recreate e (DEL first when del) to b. */
void kv_persist_emit_entry(resp_buf *b, const kv_entry *e, bool del);
/* The snapshot engine: writes the db's state at the moment it starts to
 * f (already open, header written by the caller), copy-on-write for keys
 * changed meanwhile; resolves 0 or -errno. On the owner shard. */
struct kv_snap;
keel_future *kv_snapshot_run(kv_db *db, keel_appender *out, struct kv_snap **handle);
/* The running snapshot's COW hook (persist.c calls it before a write). */
void kv_snapshot_cow(struct kv_snap *s, kv_db *db, const char *key, size_t klen);
void kv_snapshot_cow_entry(struct kv_snap *s, const kv_entry *e);
void kv_snapshot_cow_all(struct kv_snap *s, kv_db *db);
void kv_snapshot_pump(struct kv_snap *s);
/* Asks a running snapshot to stop; it resolves -ECANCELED. */
void kv_snapshot_cancel(struct kv_snap *s);
/* snapshot.c tells persist.c the walk on db's shard ended (before the
 * snapshot's future resolves). */
void kv_persist_snapshot_ended(kv_db *db);

#endif
