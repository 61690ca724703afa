/* keel — scheduling groups, stall detection, metrics and tracing.
 *
 * Scheduling groups share a shard's CPU by shares: each loop turn runs the
 * runnable group that has had the least CPU for its shares (a virtual
 * runtime, as Linux's CFS and Seastar do), so groups with shares 1000 and
 * 250 that both always have work get 80% and 20% of the shard's task time.
 * A continuation runs in the group that was current when it was attached
 * (keel_then and friends), so a chain started in a group stays in it.
 *
 * The stall detector reports a task that holds its shard past a threshold,
 * once per stall, with a backtrace. Metrics are served in Prometheus text
 * format; the trace records what each shard did and writes Chrome
 * trace-event JSON that Perfetto opens.
 */
#ifndef KEEL_SCHED_H
#define KEEL_SCHED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <keel/future.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- scheduling groups ------------------------------------------------- */

#define KEEL_MAX_SCHED_GROUPS 16
#define KEEL_SCHED_GROUP_NAME_MAX 31

typedef struct keel_sched_group_s keel_sched_group;

/* Creates a group on every shard with shares from 1 to 10000. Any thread,
 * before or during keel_run. NULL with errno EINVAL (bad name or shares),
 * EEXIST (the name is taken) or ENOSPC (KEEL_MAX_SCHED_GROUPS exist). */
keel_sched_group *keel_sched_group_create(const char *name, unsigned shares);
/* The default group (`main`, shares 1000): main_fn, accepts, I/O. */
keel_sched_group *keel_sched_group_main(void);
/* `background` (shares 200): expiry, compaction, statistics. */
keel_sched_group *keel_sched_group_background(void);
/* The group by name, or NULL. */
keel_sched_group *keel_sched_group_find(const char *name);
/* Groups are numbered 0..keel_sched_group_count()-1 (main is 0). */
unsigned keel_sched_group_count(void);
keel_sched_group *keel_sched_group_at(unsigned index);
unsigned keel_sched_group_index(const keel_sched_group *g);
const char *keel_sched_group_name(const keel_sched_group *g);
unsigned keel_sched_group_shares(const keel_sched_group *g);
/* Changes g's shares (1..10000) on every shard from the next turn. */
int keel_sched_group_set_shares(keel_sched_group *g, unsigned shares);
/* The group of the running task. On a shard only. */
keel_sched_group *keel_sched_group_current(void);

/* Runs fn(arg) as a task of group g on this shard; continuations attached
 * inside fn inherit g. The returned future resolves as fn's does, and a
 * continuation the caller attaches to it runs in the caller's group. */
keel_future *keel_with_sched_group(keel_sched_group *g, keel_future *(*fn)(void *arg), void *arg);

/* Scheduling latency histogram: bucket i counts waits shorter than
 * 2^i microseconds (the last bucket: everything longer). */
#define KEEL_SCHED_LATENCY_BUCKETS 22

typedef struct keel_sched_group_stats {
    uint64_t runtime_ns; /* CPU time of the group's tasks */
    uint64_t tasks;      /* tasks run from the group's queue */
    uint64_t queue_len;  /* tasks queued now */
    uint64_t wait_ns;    /* time runnable but waiting for the CPU */
    uint64_t waits;      /* times it went from waiting to running */
    uint64_t wait_hist[KEEL_SCHED_LATENCY_BUCKETS];
} keel_sched_group_stats;

/* A snapshot of g's accounting on shard (relaxed reads, any thread).
 * Returns 0 or -EINVAL. */
int keel_sched_group_stats_get(unsigned shard, const keel_sched_group *g,
                               keel_sched_group_stats *out);

/* ---- metrics (Prometheus text format) ---------------------------------- */

typedef struct keel_metrics keel_metrics; /* one scrape being built */

typedef enum keel_metric_type {
    KEEL_METRIC_COUNTER,
    KEEL_METRIC_GAUGE,
} keel_metric_type;

/* Adds a sample of family `name` (a counter's name ends in _total; units
 * are base units: seconds, bytes). labels is NULL or the label pairs
 * without braces, e.g. "cmd=\"get\"" (values escaped by the caller, see
 * keel_metrics_escape); shard="N" is prepended for samples a per-shard
 * collector adds. HELP and TYPE are written once per family, and the
 * samples of one family are kept together whatever order they come in. */
void keel_metrics_add(keel_metrics *m, keel_metric_type type, const char *name, const char *help,
                      const char *labels, double value);
/* Adds a histogram: counts[i] observations fell at or below bounds[i]
 * (not cumulative), counts[n] above the last bound; sum is their total. */
void keel_metrics_histogram(keel_metrics *m, const char *name, const char *help,
                            const char *labels, const double *bounds, const uint64_t *counts,
                            size_t n, double sum);
/* Writes v into buf as a label value: \ " and newline escaped. */
const char *keel_metrics_escape(const char *v, char *buf, size_t len);

typedef void (*keel_metrics_fn)(keel_metrics *m, void *arg);

/* Has fn(m, arg) add an app's samples at every scrape. A per-shard
 * collector runs on each shard in turn, on that shard (so it reads
 * shard-local state safely), and its samples get shard="N"; a global one
 * runs once, on shard 0. Call before keel_run or on a shard. 0, or
 * -ENOSPC past 32 collectors. */
int keel_metrics_register(keel_metrics_fn fn, void *arg, bool per_shard);

/* The port the metrics server listens on (--metrics-port; 0 picks one),
 * or 0 when it is off or not yet listening. */
uint16_t keel_metrics_port(void);

/* ---- tracing ----------------------------------------------------------- */

/* Starts recording on every shard (--trace FILE starts it at keel_run).
 * Each shard has a ring of events; when it fills, the oldest go. Any
 * thread. Returns 0, -EALREADY (recording), -EBUSY (a stop is still
 * writing its file) or -EINVAL (the runtime is not running). */
int keel_trace_start(void);
/* Stops recording and writes Chrome trace-event JSON to path (NULL: the
 * --trace file) from a blocking-pool thread, through path.tmp and a
 * rename. On a shard; the future resolves to the number of events written,
 * or -EINVAL (no path and no --trace file), -EALREADY (not recording),
 * -EBUSY (a start or another stop is under way), -ENOMEM, or the file's
 * error. */
keel_future *keel_trace_stop(const char *path);
bool keel_trace_active(void);

#ifdef __cplusplus
}
#endif
#endif
