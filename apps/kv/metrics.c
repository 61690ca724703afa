/* keel-kv's own metrics, added to keel's /metrics (--metrics-port): per
 * shard, the commands it ran (calls, time, a latency histogram), its
 * keyspace and its clients. The collector runs on each shard in turn, so
 * it reads that shard's counters, which only that shard writes; the one
 * exception is the db while a coordinator holds the shard's lock (txn.c),
 * when the figures kept at the lock's grant stand in for it. */
#include <stdio.h>

#include "server.h"
#include "txn.h"

static void add_commands(keel_metrics *m, const kv_shard_stats *st)
{
    if (!st->per_cmd)
        return;
    for (size_t id = 0; id < KV_MAX_COMMANDS; id++) {
        const kv_cmd_stat *cs = &st->per_cmd[id];
        const kv_command *cmd = kv_command_by_id(id);
        /* A command this shard never ran has no series (as Redis's INFO
         * commandstats leaves it out): 1024 idle series per shard would
         * bury the ones that matter. */
        if (!cs->calls || !cmd)
            continue;
        char name[64], labels[96];
        snprintf(labels, sizeof(labels), "cmd=\"%s\"",
                 keel_metrics_escape(cmd->name, name, sizeof(name)));
        keel_metrics_add(m, KEEL_METRIC_COUNTER, "keel_kv_commands_total",
                         "Commands run, by command, counted on the shard that ran them.", labels,
                         (double)cs->calls);
        keel_metrics_add(m, KEEL_METRIC_COUNTER, "keel_kv_command_seconds_total",
                         "Time spent running commands, by command.", labels,
                         (double)cs->usec / 1e6);
    }
}

static void add_latency(keel_metrics *m, const kv_shard_stats *st)
{
    double bounds[KV_LATENCY_BOUNDS];
    for (unsigned i = 0; i < KV_LATENCY_BOUNDS; i++)
        bounds[i] = (double)(1ull << i) / 1e6;
    keel_metrics_histogram(m, "keel_kv_command_duration_seconds",
                           "How long commands took to run, all commands.", NULL, bounds,
                           st->latency, KV_LATENCY_BOUNDS, (double)st->usec / 1e6);
}

static void add_keyspace(keel_metrics *m)
{
    kv_db *db = kv_db_of_shard(keel_shard_id());
    kv_db_figures f;
    if (kv_gate_locked())
        f = db->at_lock;
    else
        kv_db_figures_get(db, &f);
    /* One database, db 0, as in cluster-mode Redis (SELECT 0 only); the
     * label keeps the series shaped as Redis exporters' are. */
    static const char db0[] = "db=\"0\"";
    keel_metrics_add(m, KEEL_METRIC_GAUGE, "keel_kv_keys", "Keys in the keyspace.", db0,
                     (double)f.keys);
    keel_metrics_add(m, KEEL_METRIC_GAUGE, "keel_kv_expires", "Keys with a time to live.", db0,
                     (double)f.expires);
    keel_metrics_add(m, KEEL_METRIC_GAUGE, "keel_kv_dataset_bytes",
                     "Bytes held by keys and values (what maxmemory limits).", NULL, (double)f.mem);
    keel_metrics_add(m, KEEL_METRIC_COUNTER, "keel_kv_expired_keys_total",
                     "Keys deleted because their time to live ran out.", NULL, (double)f.expired);
    keel_metrics_add(m, KEEL_METRIC_COUNTER, "keel_kv_evicted_keys_total",
                     "Keys evicted by the maxmemory policy.", NULL, (double)f.evicted);
    keel_metrics_add(m, KEEL_METRIC_COUNTER, "keel_kv_keyspace_hits_total",
                     "Key lookups that found the key.", NULL, (double)f.hits);
    keel_metrics_add(m, KEEL_METRIC_COUNTER, "keel_kv_keyspace_misses_total",
                     "Key lookups that did not find the key.", NULL, (double)f.misses);
}

static void collect(keel_metrics *m, void *arg)
{
    (void)arg;
    /* Registered once the shards' state exists (kv_server_start), which
     * is freed only after keel_run returned; a shard that has not set up
     * its db yet reports an empty one. */
    const kv_shard_stats *st = &kv_stats.shards[keel_shard_id()];
    add_commands(m, st);
    add_latency(m, st);
    add_keyspace(m);
    keel_metrics_add(m, KEEL_METRIC_GAUGE, "keel_kv_connected_clients",
                     "Client connections, on the shard that accepted them.", NULL,
                     (double)kv_clients_count_here());
}

int kv_metrics_start(void)
{
    return keel_metrics_register(collect, NULL, true);
}
