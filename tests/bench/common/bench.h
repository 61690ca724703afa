/* Shared helpers for keel's benchmarks, and the reporting convention every
 * benchmark follows (see ../../shared/BENCHMARKING.md for the why):
 *
 *   bench: name=<id> unit=<unit> keel=<v> peer=<v> ratio=<r>
 *
 * ratio > 1 always means keel is better: peer/keel for costs and latencies,
 * keel/peer for throughputs. keel and its peer run in the same process, on
 * the same pinned CPUs, with the same parameters, alternating in pairs
 * (peer keel, keel peer, peer keel): keel= and peer= are the medians of
 * their runs and ratio= is the median of the pairs' ratios, which cancels
 * the slow drift of a shared machine. Any line not starting with "bench:"
 * is context (these helpers start theirs with '#').
 *
 * Environment: BENCH_SECONDS scales every measurement (default 1 s, after
 * a warm-up of a tenth of that); BENCH_PAIRS sets the number of pairs (3);
 * BENCH_SIDE=keel or peer runs that side only, once, with no bench: line
 * (for profilers: perf record, valgrind --tool=callgrind). */
#ifndef KEEL_BENCH_H
#define KEEL_BENCH_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define BENCH_CACHELINE 64

/* Monotonic clock in ns (vDSO, ~20 ns: read it every few hundred ops). */
uint64_t bench_now_ns(void);
/* CPU time of the whole process (every thread), in ns. */
uint64_t bench_cpu_ns(void);

/* Seconds one measurement lasts after its warm-up: $BENCH_SECONDS or 1. */
double bench_seconds(void);
/* Warm-up before each measurement: a tenth of bench_seconds(). */
double bench_warmup_seconds(void);
/* Number of peer/keel pairs: $BENCH_PAIRS or 3. */
unsigned bench_pairs(void);

/* Starts fn(arg) on a new thread pinned to cpu from its first instruction.
 * Returns 0 or an errno value (after printing what failed). */
int bench_thread_start(pthread_t *t, int cpu, void *(*fn)(void *), void *arg);

/* The measured span of one run: a warm-up, then bench_seconds() during
 * which the run counts operations. Call bench_window_tick() every few
 * hundred operations with the running count; it returns true once the
 * span is over, after which elapsed_ns and ops hold the measurement. */
typedef struct bench_window {
    uint64_t warm_end_ns, end_ns;
    uint64_t start_ns, elapsed_ns;
    uint64_t start_ops, ops;
    bool measuring, done;
} bench_window;

void bench_window_start(bench_window *w);
bool bench_window_tick(bench_window *w, uint64_t ops);

/* One figure of a comparison. */
typedef struct bench_metric {
    const char *name;
    const char *unit;
    bool higher_is_better;
} bench_metric;

/* One measurement of one side: fills out[i] for each metric of the
 * comparison and returns 0, or returns -1 after printing why it failed. */
typedef int (*bench_run_fn)(void *ctx, double *out);

#define BENCH_MAX_METRICS 8
#define BENCH_MAX_PAIRS 15

/* Adds a context line (printf-style, no newline) that is printed under the
 * result line of the run in progress: a run's own counters, warnings. */
void bench_note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Every run is watched: one that has not returned well after its time
 * (a hang: a lost message, a missed wake-up) prints what it was, calls the
 * hook set here (e.g. to print the runtime's counters), and ends the
 * process with status 3, since a stuck run cannot be taken back. */
void bench_watchdog_hook(void (*fn)(void));

/* Runs peer and keel alternately for bench_pairs() pairs, prints a context
 * line per run and one bench: line per metric. Returns 0, or -1 if a run
 * failed (the metrics are then not reported). */
int bench_compare(const bench_metric *metrics, size_t n, bench_run_fn keel, bench_run_fn peer,
                  void *ctx);

/* Prints one bench: line; the convention's only printer. */
void bench_line(const bench_metric *m, double keel, double peer, double ratio);

/* Formats v compactly for the bench: line (3 significant digits for small
 * values, integers otherwise) into buf. */
const char *bench_fmt(char *buf, size_t len, double v);

/* Sorts samples in place and returns the nearest-rank percentile p (0-100). */
uint64_t bench_percentile(uint64_t *samples, size_t n, double p);

/* Whether argv (after argv[0]) selects name: no arguments select all. */
bool bench_selected(int argc, char **argv, const char *name);
/* Returns 0 if every argument names one of the n known figures, else
 * prints which one is unknown (and the list) and returns 2. */
int bench_check_figures(int argc, char **argv, const char *prog, const char *const *known,
                        size_t n);

#endif
