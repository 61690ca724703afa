/* bench-runtime-tasks: what one continuation costs on a single shard.
 *
 *   ready_continuation  keel_then() on a ready future, in a chain of 1024
 *                       (the inline fast path: no run queue, no new future
 *                       beyond the one the step returns)
 *   scheduled_task      a continuation that goes through the run queue: 64
 *                       chains, each step keel_on_done(keel_yield(), step),
 *                       so every step is one queued task, with the loop's
 *                       turns (one io_uring_enter per task quota) included
 *
 * The peer of both is the floor: a ring of {fn, arg} pairs popped and called
 * in a loop, each call pushing its successor (1 chain and 64 chains, as
 * keel). keel runs with one shard on CPU 0; the peer on a thread pinned to
 * CPU 0. Usage: bench-runtime-tasks [ready] [scheduled] (default: both). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <keel/keel.h>

#include "bench.h"

enum {
    READY_BATCH = 1024, /* continuations per keel_repeat step / peer time check */
    SCHED_CHAINS = 64,
    FNQ_CAP = 1024, /* power of two, more than the chains in flight */
};

static void keel_cfg(keel_config *c)
{
    keel_config_init(c);
    c->shards = 1;
    c->cpuset = "0";
    c->quiet = true;
    c->handle_signals = false; /* Ctrl-C ends the benchmark, not one run */
}

static void stop_runtime(void *ctx, keel_result r)
{
    (void)ctx;
    (void)r;
    keel_stop();
}

/* ---- keel: ready continuations ------------------------------------------ */

typedef struct ready_bench {
    bench_window w;
    uint64_t ops;
    int64_t sink;
    const char *err;
} ready_bench;

static keel_future *ready_step(void *ctx, keel_result r)
{
    (void)ctx;
    return keel_make_ready(r.val + 1);
}

static keel_future *ready_batch(void *ctx)
{
    ready_bench *b = ctx;
    keel_future *f = keel_make_ready(0);
    for (unsigned i = 0; i < READY_BATCH; i++)
        f = keel_then(f, ready_step, b);
    if (!keel_future_is_ready(f)) {
        /* The header promises the inline path for shallow ready chains;
         * if it queued instead, this figure would measure something else. */
        b->err = "a chain of ready futures did not stay ready (continuations were queued)";
        keel_detach(f);
        return keel_make_ready(KEEL_STOP);
    }
    b->sink += keel_future_take(f).val;
    b->ops += READY_BATCH;
    return keel_make_ready(bench_window_tick(&b->w, b->ops) ? KEEL_STOP : KEEL_CONTINUE);
}

static void ready_main(void *arg)
{
    ready_bench *b = arg;
    bench_window_start(&b->w);
    keel_on_done(keel_repeat(ready_batch, b), stop_runtime, b);
}

static int keel_run_checked(void (*main_fn)(void *), void *arg)
{
    keel_config cfg;
    keel_cfg(&cfg);
    int err = keel_run(&cfg, main_fn, arg);
    if (err)
        printf("# keel_run failed: %s\n", keel_strerror(err));
    return err ? -1 : 0;
}

static int keel_ready(void *ctx, double *out)
{
    (void)ctx;
    ready_bench b;
    memset(&b, 0, sizeof(b));
    if (keel_run_checked(ready_main, &b))
        return -1;
    if (b.err || !b.w.done || b.sink != (int64_t)(b.ops / READY_BATCH) * READY_BATCH) {
        printf("# keel ready_continuation: %s\n", b.err ? b.err : "wrong result");
        return -1;
    }
    out[0] = (double)b.w.elapsed_ns / (double)b.w.ops;
    return 0;
}

/* ---- keel: scheduled tasks ------------------------------------------------ */

typedef struct sched_bench {
    bench_window w;
    uint64_t ops;
    unsigned live;
    bool stopping;
    keel_shard_stats st0, st1; /* at the window's start and end */
} sched_bench;

static void sched_step(void *ctx, keel_result r)
{
    sched_bench *b = ctx;
    (void)r;
    if (!b->stopping && (++b->ops & 255) == 0) {
        bool was_measuring = b->w.measuring;
        b->stopping = bench_window_tick(&b->w, b->ops);
        if (!was_measuring && b->w.measuring)
            keel_shard_stats_get(0, &b->st0);
        if (b->stopping)
            keel_shard_stats_get(0, &b->st1);
    }
    if (b->stopping) {
        if (--b->live == 0)
            keel_stop();
        return;
    }
    keel_on_done(keel_yield(), sched_step, b);
}

static void sched_main(void *arg)
{
    sched_bench *b = arg;
    bench_window_start(&b->w);
    b->live = SCHED_CHAINS;
    for (unsigned i = 0; i < SCHED_CHAINS; i++)
        keel_on_done(keel_yield(), sched_step, b);
}

static int keel_scheduled(void *ctx, double *out)
{
    (void)ctx;
    sched_bench b;
    memset(&b, 0, sizeof(b));
    if (keel_run_checked(sched_main, &b))
        return -1;
    out[0] = (double)b.w.elapsed_ns / (double)b.w.ops;
    /* Shows each step really was one queued task, and what the loop's
     * turns (one kernel entry each) add per task. */
    double ops = (double)b.w.ops;
    bench_note("keel: %.2f queued tasks/step, %.2f inline runs/step, one loop turn per %.0f "
               "steps",
               (double)(b.st1.tasks_run - b.st0.tasks_run) / ops,
               (double)(b.st1.inline_runs - b.st0.inline_runs) / ops,
               ops / (double)(b.st1.loop_turns - b.st0.loop_turns + 1));
    return 0;
}

/* ---- peer: a function-pointer queue ---------------------------------------- */

typedef struct fnq_task {
    void (*fn)(void *arg);
    void *arg;
} fnq_task;

typedef struct peer_bench {
    fnq_task ring[FNQ_CAP];
    uint32_t head, tail;
    unsigned chains;
    uint64_t ops;
    bench_window w;
} peer_bench;

static inline void fnq_push(peer_bench *q, void (*fn)(void *), void *arg)
{
    q->ring[q->tail++ & (FNQ_CAP - 1)] = (fnq_task){fn, arg};
}

/* One step of a chain: the same work as sched_step/ready_step (count,
 * schedule the successor), without futures. */
static void peer_step(void *arg)
{
    peer_bench *q = arg;
    q->ops++;
    fnq_push(q, peer_step, q);
}

static void *peer_thread(void *arg)
{
    peer_bench *q = arg;
    bench_window_start(&q->w);
    for (unsigned i = 0; i < q->chains; i++)
        fnq_push(q, peer_step, q);
    do {
        for (unsigned i = 0; i < READY_BATCH && q->head != q->tail; i++) {
            fnq_task t = q->ring[q->head++ & (FNQ_CAP - 1)];
            t.fn(t.arg);
        }
    } while (!bench_window_tick(&q->w, q->ops));
    return NULL;
}

static int peer_chains(unsigned chains, double *out)
{
    peer_bench *q = aligned_alloc(BENCH_CACHELINE, sizeof(peer_bench));
    if (!q)
        return -1;
    memset(q, 0, sizeof(*q));
    q->chains = chains;
    pthread_t t;
    if (bench_thread_start(&t, 0, peer_thread, q)) {
        free(q);
        return -1;
    }
    pthread_join(t, NULL);
    out[0] = (double)q->w.elapsed_ns / (double)q->w.ops;
    free(q);
    return 0;
}

static int peer_ready(void *ctx, double *out)
{
    (void)ctx;
    return peer_chains(1, out);
}

static int peer_scheduled(void *ctx, double *out)
{
    (void)ctx;
    return peer_chains(SCHED_CHAINS, out);
}

/* For the watchdog: a hung keel run shows its counters. */
static void print_keel_stats(void)
{
    keel_stats_print(stdout);
}

int main(int argc, char **argv)
{
    static const char *const known[] = {"ready", "scheduled"};
    if (bench_check_figures(argc, argv, "bench-runtime-tasks", known,
                            sizeof(known) / sizeof(known[0])))
        return 2;
    setvbuf(stdout, NULL, _IOLBF, 0);
    bench_watchdog_hook(print_keel_stats);
    int failed = 0;
    if (bench_selected(argc, argv, "ready")) {
        printf("# ready_continuation: keel_then on ready futures, chains of %d, 1 shard on CPU 0; "
               "peer: {fn,arg} ring, 1 chain, CPU 0\n",
               READY_BATCH);
        static const bench_metric m = {"ready_continuation", "ns", false};
        failed |= bench_compare(&m, 1, keel_ready, peer_ready, NULL);
    }
    if (bench_selected(argc, argv, "scheduled")) {
        printf("# scheduled_task: %d chains of keel_on_done(keel_yield(), step), 1 shard on "
               "CPU 0; peer: {fn,arg} ring, %d chains, CPU 0\n",
               SCHED_CHAINS, SCHED_CHAINS);
        static const bench_metric m = {"scheduled_task", "ns", false};
        failed |= bench_compare(&m, 1, keel_scheduled, peer_scheduled, NULL);
    }
    return failed ? 1 : 0;
}
