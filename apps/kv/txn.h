/* txn.c: shard gates, ordered shard locks and WATCH (see txn.c's top
 * comment for how cross-shard commands stay atomic). Used by server.c. */
#ifndef KV_TXN_H
#define KV_TXN_H

#include "kv.h"

int kv_txn_init(unsigned nshards);
void kv_txn_fini(void);
/* Links a shard's db to its state; on the shard, after kv_db_init. */
void kv_txn_attach(kv_db *db);
/* Frees a shard's WATCH records; after keel_run returned. */
void kv_txn_fini_shard(unsigned shard);

/* Runs fn(arg) on shard once its gate is open (in FIFO order with other
 * work and lock requests); resolves after fn ran. */
keel_future *kv_run_on(unsigned shard, void (*fn)(void *), void *arg);
/* Whether this shard's gate would run work at once. */
bool kv_gate_open(void);
/* Whether a coordinator holds this shard's lock (and so its db). */
bool kv_gate_locked(void);
/* Locks shards[0..n) (ascending, distinct) one by one, runs body(arg) on
 * this shard holding all of them, then releases them; resolves after. */
keel_future *kv_run_locked(const unsigned *shards, unsigned n, void (*body)(void *), void *arg);

/* One watched key: registered on its shard by kv_watch_add (run there
 * through kv_run_on), checked under that shard's lock, removed by
 * kv_watch_del (on the shard, or under its lock). */
typedef struct kv_watch_req {
    unsigned shard;
    struct watcher *w;
    size_t klen;
    char key[];
} kv_watch_req;

void kv_watch_add(kv_watch_req *r);
void kv_watch_del(kv_watch_req *r);
bool kv_watch_dirty(const kv_watch_req *r);
/* FLUSHALL/FLUSHDB: every watcher of the db is dirty. */
void kv_watch_touch_all(kv_db *db);

#endif
