/* Blocked clients (t_block.c): what the server and the shards' gates use. */
#ifndef KV_T_BLOCK_H
#define KV_T_BLOCK_H

#include "kv.h"

typedef struct kv_waiter kv_waiter;

int kv_block_init(unsigned nshards);
void kv_block_fini(unsigned nshards);
/* Clients blocked now, over all shards (INFO blocked_clients). */
uint64_t kv_block_count(void);

/* A waiter for a blocking command that found nothing, holding a copy of
 * it; the caller owns one reference. NULL on out-of-memory. */
kv_waiter *kv_block_new(const kv_command *cmd, size_t argc, const resp_arg *argv, void *client,
                        unsigned client_shard, int proto);
/* Queues w on each of its keys' shards: the caller runs where all of them
 * are reachable (their owner shard, or under their locks). */
void kv_block_register(kv_waiter *w);
/* Removes w from this shard's queues (run on each shard w waits on). */
void kv_block_unregister_here(kv_waiter *w);
/* Whether w waits on a key of shard. */
bool kv_block_on_shard(const kv_waiter *w, unsigned shard);
/* Takes w out of waiting, once: true for the one caller that wins. */
bool kv_block_claim(kv_waiter *w);
/* Takes / drops a reference. */
void kv_block_retain(kv_waiter *w);
void kv_block_release(kv_waiter *w);
const kv_command *kv_block_command(const kv_waiter *w, size_t *argc, const resp_arg **argv);
/* The blocked client (to be touched only on its shard) and its shard. */
void *kv_block_client(const kv_waiter *w);
unsigned kv_block_client_shard(const kv_waiter *w);
/* Serves the waiters of this shard's keys that became ready; called after
 * every gated run and at the release of a lock. */
void kv_block_serve_here(void);

/* Implemented by the server: hands a claimed waiter's reply (moved from
 * out; empty with retry) to its client's shard, with one reference. */
void kv_block_deliver(kv_waiter *w, resp_buf *out, bool retry);

#endif
