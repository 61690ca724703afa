/* keel — shards, the loop, cross-shard messaging, blocking work, shutdown.
 *
 * keel_run() starts one thread per CPU (a shard), each pinned, each with its
 * own io_uring ring (or epoll), slab and jemalloc arena, and runs main_fn on
 * shard 0 as the first task. Shards share nothing; they talk through
 * keel_submit_to() and friends. keel_run() returns when keel_stop() was
 * called (or SIGINT/SIGTERM arrived) and every shard has drained.
 */
#ifndef KEEL_RUNTIME_H
#define KEEL_RUNTIME_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include <keel/future.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KEEL_MAX_SHARDS 256

typedef struct keel_config_s {
    unsigned shards;            /* 0: one per CPU of cpuset */
    const char *cpuset;         /* "0-3,6"; NULL: the process's affinity mask */
    const char *backend;        /* "uring", "epoll"; NULL: probe (or $KEEL_BACKEND) */
    unsigned task_quota_us;     /* run tasks this long before polling I/O; 500 */
    unsigned msg_ring_capacity; /* per shard pair, rounded up to a power of 2; 1024 */
    unsigned blocking_threads;  /* keel_run_blocking() workers; 4 */
    unsigned ring_entries;      /* io_uring SQ entries per shard; 1024 (CQ is 8x) */
    bool handle_signals;        /* SIGINT/SIGTERM stop the runtime; true */
    bool quiet;                 /* no startup line on stderr; false */
    unsigned stall_threshold_ms; /* report tasks holding a shard longer; 25 (0: off) */
    int metrics_port;            /* serve /metrics on this port; -1: off (0: any port) */
    const char *metrics_address; /* "0.0.0.0" */
    const char *trace_file;      /* record a trace from the start, written at exit */
    unsigned trace_buffer_kb;    /* trace ring per shard; 8192 */
    const char *_bad_env;       /* set by keel_config_init: keel_run refuses it */
} keel_config;

/* Fills c with the defaults, then applies $KEEL_SHARDS, $KEEL_CPUSET and
 * $KEEL_BACKEND when set. */
void keel_config_init(keel_config *c);

/* Parses and removes keel's own options from argv (--shards N, --cpuset LIST,
 * --backend uring|epoll, --task-quota-us N, --stall-threshold-ms N,
 * --metrics-port N, --metrics-address ADDR, --trace FILE,
 * --trace-buffer-kb N), leaving the rest for the app.
 * Returns 0, or -KEEL_EBADCONFIG after printing what is wrong to stderr. */
int keel_config_parse_args(keel_config *c, int *argc, char **argv);

/* The --help text for the options above, one per line, indented 2. */
const char *keel_config_usage(void);

typedef void (*keel_main_fn)(void *arg);

/* Runs the runtime until keel_stop(). Returns 0 after a clean stop, or a
 * negative error if it could not start (bad config, no io_uring and no
 * epoll, ...), after logging what to fix. Call from one thread at a time. */
int keel_run(const keel_config *c, keel_main_fn main_fn, void *arg);

/* Asks every shard to stop: exit hooks run, work drains, keel_run returns.
 * Callable from any thread and from a signal handler. Idempotent. */
void keel_stop(void);

typedef void (*keel_signal_fn)(int signo, void *arg);

/* Has fn(signo, arg) run on shard 0, in its loop, whenever signo arrives,
 * instead of the default (SIGINT and SIGTERM: keel_stop). Call before
 * keel_run, with handle_signals on. For an app's SIGHUP (reload), SIGUSR1,
 * or a SIGINT that drains before stopping. Returns 0 or -EINVAL
 * (SIGKILL, SIGSTOP, SIGPIPE, out of range). */
int keel_signal_handle(int signo, keel_signal_fn fn, void *arg);

/* Whether keel_stop() has been called. */
bool keel_stopping(void);

/* This shard's number, 0..keel_shard_count()-1. Only on a shard thread. */
unsigned keel_shard_id(void);
unsigned keel_shard_count(void);
/* The CPU shard is pinned to. */
int keel_shard_cpu(unsigned shard);
/* Which reactor backend runs: "io_uring" or "epoll". */
const char *keel_backend_name(void);

/* Registers fn(arg) to run on this shard when the runtime stops, after
 * keel_stop() and before the shard exits. Hooks run one at a time in
 * reverse order of registration, each after the previous one's future
 * resolved (a server registered after its database drains before the
 * database closes). Returns 0 or -ENOMEM. */
int keel_at_exit(keel_future *(*fn)(void *arg), void *arg);

/* Monotonic time in ns, read at most once per loop turn (cheap). */
uint64_t keel_now_ns(void);

/* Whether the running task has used up its quota and should yield (return
 * a pending future or keel_yield()). Cheap enough to call in a loop. */
bool keel_need_preempt(void);

/* ---- cross-shard messaging -------------------------------------------- */

typedef keel_future *(*keel_remote_fn)(void *arg);

/* Runs fn(arg) on shard (its returned future is awaited there) and returns,
 * on the calling shard, a future of its result. Messages are batched per
 * loop turn; order between a pair of shards is kept. fn must not touch the
 * caller's shard-local objects; arg is passed as is. Submitting to self
 * runs fn as a task on this shard. Never fails by itself: work submitted
 * while the runtime stops still runs, since exit hooks rely on it. */
keel_future *keel_submit_to(unsigned shard, keel_remote_fn fn, void *arg);

/* Runs fn(arg) on every shard; resolves to 0 when all are done, or to the
 * first error (lowest shard) once all are done. */
keel_future *keel_invoke_on_all(keel_remote_fn fn, void *arg);

/* One instance of a service per shard (Seastar's sharded<T>). */
typedef struct keel_sharded_s {
    void **_instances;
    unsigned _count;
} keel_sharded;

/* Runs create(arg) on every shard and stores each shard's instance. Resolves
 * to 0, or -ENOMEM if create returned NULL anywhere (instances that were
 * made are kept, so call keel_sharded_stop to free them). Call on a shard. */
keel_future *keel_sharded_start(keel_sharded *s, void *(*create)(void *arg), void *arg);
/* This shard's instance. */
static inline void *keel_sharded_local(const keel_sharded *s)
{
    return s->_instances[keel_shard_id()];
}
/* Runs fn(instance, arg) on shard with that shard's instance. */
keel_future *keel_sharded_invoke_on(keel_sharded *s, unsigned shard,
                                    keel_future *(*fn)(void *instance, void *arg), void *arg);
/* Runs fn(instance, arg) on every shard; resolves when all are done. */
keel_future *keel_sharded_invoke_on_all(keel_sharded *s,
                                        keel_future *(*fn)(void *instance, void *arg), void *arg);
/* Runs destroy(instance) on every shard, then frees s's storage. */
keel_future *keel_sharded_stop(keel_sharded *s, void (*destroy)(void *instance));

/* ---- blocking work ----------------------------------------------------- */

/* Runs fn(arg) on a worker thread of the blocking pool (for work that would
 * stall a loop: getaddrinfo, password hashing, file calls io_uring lacks);
 * its result comes back as a future on the calling shard. fn runs on no
 * shard: it must not call shard-local keel functions. */
keel_future *keel_run_blocking(keel_result (*fn)(void *arg), void *arg);

/* ---- statistics -------------------------------------------------------- */

typedef struct keel_shard_stats_s {
    uint64_t tasks_run;   /* continuations run from the run queue */
    uint64_t inline_runs; /* continuations run inline (ready fast path) */
    uint64_t loop_turns;
    uint64_t sleeps; /* turns that waited in the kernel */
    uint64_t sqes_submitted;
    uint64_t cqes_reaped;
    uint64_t enter_calls; /* io_uring_enter / epoll_wait syscalls */
    uint64_t msgs_sent;
    uint64_t msgs_received;
    uint64_t wakeups_sent; /* sleeping shards woken by this one */
    uint64_t timers_fired;
    uint64_t blocking_jobs;
    uint64_t futures_ignored_errors;
    uint64_t bytes_allocated;   /* jemalloc thread.allocated on this shard */
    uint64_t bytes_deallocated; /* jemalloc thread.deallocated */
    uint64_t sleep_ns;          /* time spent waiting in the kernel for work */
    uint64_t stalls;            /* tasks that held the shard past the stall threshold */
    uint64_t stall_reports_suppressed; /* stalls not logged (rate limit) */
    uint64_t trace_events;      /* events recorded by the trace */
} keel_shard_stats;

/* Copies shard's counters (relaxed reads: a snapshot, exact on its own
 * shard). Returns 0 or -EINVAL for a bad shard number. */
int keel_shard_stats_get(unsigned shard, keel_shard_stats *out);

/* Prints one line of counters per shard to out. Any shard may call it. */
void keel_stats_print(FILE *out);

#ifdef __cplusplus
}
#endif
#endif
