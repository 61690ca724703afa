/* keel-kv's server internals shared by server.c (clients, dispatch) and
 * info.c (configuration, statistics, INFO/CONFIG/CLIENT/...). */
#ifndef KV_SERVER_H
#define KV_SERVER_H

#include <stdatomic.h>

#include "kv.h"

/* keel-kv answers as this Redis release does (HELLO, INFO). */
#define KV_REDIS_VERSION "7.0.15"

struct slot;
struct queued;
struct watched;

typedef struct kv_client {
    keel_conn *conn;
    uint64_t id;
    resp_parser parser;
    char *q;
    size_t qlen, qcap;
    resp_buf out;
    struct slot *head, *tail;
    size_t outstanding; /* asynchronous work whose reply is pending */
    size_t holds;       /* block timer, read watch: keep c alive, hold no reply */
    keel_promise drained;
    int proto;
    bool quit, ended, killed, authed;
    bool barrier;    /* a locked command runs: dispatch no further */
    bool parse_more; /* input left behind a barrier */
    bool in_multi, multi_dirty;
    struct queued *mq_head, *mq_tail;
    struct watched *watches;
    char *name;
    int64_t created_ms;
    struct kv_waiter *blocked; /* a blocking command waits */
    struct slot *block_slot;
    struct block_timer *timer; /* the blocked command's timeout */
    struct delivery *early;
    bool watching, watch_waited, watch_has_result; /* a read while blocked */
    keel_result watch_result;
    keel_promise watch_p;
    struct kv_client *prev, *next; /* this shard's clients */
} kv_client;

typedef struct kv_server_config {
    const char *requirepass;
    unsigned long long maxmemory;
    int maxmemory_policy;
    unsigned long long output_limit; /* client-output-buffer-limit normal hard; 0: none */
    unsigned long long query_limit;  /* client-query-buffer-limit */
    unsigned long long proto_max_bulk_len;
    unsigned long long maxclients;
    int port;
    const char *bind;
} kv_server_config;

extern kv_server_config kv_cfg;

typedef struct kv_cmd_stat {
    uint64_t calls, usec;
} kv_cmd_stat;

/* Command latency histogram: bucket i (i < KV_LATENCY_BOUNDS) counts
 * commands that took at most 2^i microseconds (1 us to 4.2 s), the last
 * one everything slower. Powers of two make the bucket a count of leading
 * zeros on the hot path. */
#define KV_LATENCY_BOUNDS 23

/* Written only by the shard it belongs to (CONFIG RESETSTAT aside, which
 * holds every shard's lock); aligned so that shards counting commands do
 * not share cache lines. */
typedef struct kv_shard_stats {
    _Alignas(64) uint64_t commands;
    uint64_t net_input_bytes;
    uint64_t usec;                           /* time in all commands */
    uint64_t latency[KV_LATENCY_BOUNDS + 1]; /* see KV_LATENCY_BOUNDS */
    kv_cmd_stat *per_cmd;                    /* by kv_command_id() */
} kv_shard_stats;

/* The latency bucket of a command that took us microseconds: the smallest
 * i with us <= 2^i, which is Prometheus's le="2^i us". */
static inline unsigned kv_latency_bucket(uint64_t us)
{
    unsigned i = us <= 1 ? 0 : 64 - (unsigned)__builtin_clzll(us - 1);
    return i < KV_LATENCY_BOUNDS ? i : KV_LATENCY_BOUNDS;
}

typedef struct kv_global_stats {
    atomic_uint_fast64_t connected_clients;
    atomic_uint_fast64_t total_connections;
    int64_t start_ms;
    kv_shard_stats *shards;
    unsigned nshards;
} kv_global_stats;

extern kv_global_stats kv_stats;
int kv_stats_init(unsigned nshards);
void kv_stats_free(void);
static inline kv_shard_stats *kv_stats_local(void)
{
    return &kv_stats.shards[keel_shard_id()];
}

/* This shard's clients (CLIENT LIST/KILL walk them shard by shard). */
kv_client *kv_clients_here(void);
/* How many clients this shard has. */
size_t kv_clients_count_here(void);
/* Registers keel-kv's metrics collector (metrics.c); once, on a shard,
 * after kv_stats_init. Returns 0 or -errno. */
int kv_metrics_start(void);
/* CLIENT SETNAME's checks; replies the error and returns false. */
bool kv_client_set_name(kv_client *c, resp_buf *out, const resp_arg *name);
void kv_client_command(kv_client *c, resp_buf *out, size_t argc, const resp_arg *argv);
/* Starts this shard's background work (expiry, rehash); stops at exit. */
void kv_cron_start(void);
/* The buffer the next reply of c goes to (in order). */
resp_buf *kv_reply_target(kv_client *c);
/* Runs fn(&reqs[i]) on every shard i (reqs: an array of keel_shard_count()
 * elements of size bytes each), then finish(c, out, reqs) here with the
 * buffer of c's next reply; finish frees reqs. */
void kv_gather(kv_client *c, keel_remote_fn fn, void *reqs, size_t size,
               void (*finish)(kv_client *c, resp_buf *out, void *reqs));
/* CONFIG: set a parameter by name (at start-up, from --options and the
 * config file); returns 0 or -1 with *why. */
int kv_config_set(const char *name, const char *value, const char **why);
void kv_config_defaults(void);
void kv_config_free(void);
/* Frees what kv_server_start allocated; after keel_run returned. */
void kv_server_free(void);
/* A log line on stderr, timestamped like keel's own. */
void kv_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
