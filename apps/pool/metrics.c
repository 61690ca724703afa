/* keel-pool's own metrics, added to keel's /metrics (--metrics-port): per
 * shard and pool (database, user), what SHOW POOLS and SHOW STATS report,
 * in base units (PgBouncer counts microseconds; these are seconds). The
 * collector runs on each shard in turn and reads that shard's pool
 * slices, which only that shard touches; summing the shard="N" series
 * gives SHOW POOLS' and SHOW STATS' figures. */
#include <stdio.h>

#include "pool.h"

/* This shard's state while it exists: a scrape may run before the shards
 * are made or after keel_sharded_stop freed them, when shard_here() has
 * nothing to return. */
static __thread pool_shard *tl_shard;

void pool_metrics_shard(pool_shard *sh)
{
    tl_shard = sh;
}

static void add_state(keel_metrics *m, const char *name, const char *help, const char *labels,
                      const char *state, int n)
{
    char l[640];
    snprintf(l, sizeof(l), "%s,state=\"%s\"", labels, state);
    keel_metrics_add(m, KEEL_METRIC_GAUGE, name, help, l, n);
}

static void add_counter(keel_metrics *m, const char *name, const char *help, const char *labels,
                        double v)
{
    keel_metrics_add(m, KEEL_METRIC_COUNTER, name, help, labels, v);
}

static void add_pool(keel_metrics *m, const ppool *p, uint64_t now_ns)
{
    /* Names come from the config file or, with a "*" entry, from clients:
     * escaped, and cut at what PgBouncer itself keeps (SHOW POOLS). */
    char db[260], user[260], labels[600];
    snprintf(labels, sizeof(labels), "database=\"%s\",user=\"%s\"",
             keel_metrics_escape(p->db->name, db, sizeof(db)),
             keel_metrics_escape(p->user, user, sizeof(user)));

    static const char cl[] = "keel_pool_client_connections";
    static const char cl_help[] = "Client connections of the pool by state: active (linked to a "
                                  "server or idle), waiting (for a server).";
    add_state(m, cl, cl_help, labels, "active", p->n_clients_active - p->n_waiting);
    add_state(m, cl, cl_help, labels, "waiting", p->n_waiting);

    static const char sv[] = "keel_pool_server_connections";
    static const char sv_help[] = "Server connections of the pool by state, as SHOW POOLS' "
                                  "sv_active, sv_idle, sv_used, sv_tested, sv_login.";
    add_state(m, sv, sv_help, labels, "active", p->n_active);
    add_state(m, sv, sv_help, labels, "idle", p->n_idle);
    add_state(m, sv, sv_help, labels, "used", p->n_used);
    add_state(m, sv, sv_help, labels, "tested", p->n_tested);
    add_state(m, sv, sv_help, labels, "login", p->n_login);

    uint64_t since = p->wait_head ? p->wait_head->wait_start_ns : now_ns;
    uint64_t oldest_ns = now_ns > since ? now_ns - since : 0;
    keel_metrics_add(m, KEEL_METRIC_GAUGE, "keel_pool_max_wait_seconds",
                     "How long the oldest waiting client has waited for a server.", labels,
                     (double)oldest_ns / 1e9);

    const pstats *st = &p->stats;
    add_counter(m, "keel_pool_transactions_total",
                "Transactions run through the pool (SHOW STATS total_xact_count).", labels,
                (double)st->xact_count);
    add_counter(m, "keel_pool_queries_total",
                "Queries run through the pool (SHOW STATS total_query_count).", labels,
                (double)st->query_count);
    add_counter(m, "keel_pool_received_bytes_total",
                "Bytes received from clients (SHOW STATS total_received).", labels,
                (double)st->bytes_in);
    add_counter(m, "keel_pool_sent_bytes_total", "Bytes sent to clients (SHOW STATS total_sent).",
                labels, (double)st->bytes_out);
    add_counter(m, "keel_pool_transaction_seconds_total",
                "Time spent in transactions on a server (SHOW STATS total_xact_time).", labels,
                (double)st->xact_us / 1e6);
    add_counter(m, "keel_pool_query_seconds_total",
                "Time spent in queries on a server (SHOW STATS total_query_time).", labels,
                (double)st->query_us / 1e6);
    add_counter(m, "keel_pool_wait_seconds_total",
                "Time clients spent waiting for a server (SHOW STATS total_wait_time).", labels,
                (double)st->wait_us / 1e6);
    add_counter(m, "keel_pool_server_assignments_total", "Times a server was given to a client.",
                labels, (double)st->server_assignments);
}

static void collect(keel_metrics *m, void *arg)
{
    (void)arg;
    const pool_shard *sh = tl_shard;
    if (!sh)
        return;
    uint64_t now_ns = keel_now_ns();
    for (const ppool *p = sh->pools; p; p = p->next)
        add_pool(m, p, now_ns);
}

int pool_metrics_start(void)
{
    return keel_metrics_register(collect, NULL, true);
}
