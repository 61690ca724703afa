/* Shared benchmark helpers: timing windows, pinned threads, the alternating
 * keel/peer comparison and the bench: line. */
#include "bench.h"

#include <errno.h>
#include <math.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

uint64_t bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t bench_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static double env_double(const char *name, double def, double min, double max)
{
    const char *v = getenv(name);
    if (!v || !*v)
        return def;
    char *end;
    double d = strtod(v, &end);
    if (*end || !(d >= min && d <= max)) {
        fprintf(stderr, "bench: %s=%s is not a number from %g to %g; using %g\n", name, v, min, max,
                def);
        return def;
    }
    return d;
}

double bench_seconds(void)
{
    static double s;
    if (s == 0)
        s = env_double("BENCH_SECONDS", 1.0, 0.01, 3600);
    return s;
}

double bench_warmup_seconds(void)
{
    return bench_seconds() / 10;
}

unsigned bench_pairs(void)
{
    static unsigned p;
    if (p == 0)
        p = (unsigned)env_double("BENCH_PAIRS", 3, 1, BENCH_MAX_PAIRS);
    return p;
}

int bench_thread_start(pthread_t *t, int cpu, void *(*fn)(void *), void *arg)
{
    pthread_attr_t attr;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    pthread_attr_init(&attr);
    int err = pthread_attr_setaffinity_np(&attr, sizeof(set), &set);
    if (!err)
        err = pthread_create(t, &attr, fn, arg);
    pthread_attr_destroy(&attr);
    if (err)
        fprintf(stderr, "bench: cannot start a thread pinned to CPU %d: %s\n", cpu, strerror(err));
    return err;
}

void bench_window_start(bench_window *w)
{
    memset(w, 0, sizeof(*w));
    uint64_t now = bench_now_ns();
    w->warm_end_ns = now + (uint64_t)(bench_warmup_seconds() * 1e9);
    w->end_ns = w->warm_end_ns + (uint64_t)(bench_seconds() * 1e9);
}

bool bench_window_tick(bench_window *w, uint64_t ops)
{
    if (w->done)
        return true;
    uint64_t now = bench_now_ns();
    if (!w->measuring) {
        if (now >= w->warm_end_ns) {
            w->measuring = true;
            w->start_ns = now;
            w->start_ops = ops;
            /* The window lasts bench_seconds() from the real start, however
             * late the first tick after the warm-up came. */
            w->end_ns = now + (uint64_t)(bench_seconds() * 1e9);
        }
        return false;
    }
    if (now < w->end_ns)
        return false;
    w->done = true;
    w->elapsed_ns = now - w->start_ns;
    w->ops = ops - w->start_ops;
    return true;
}

const char *bench_fmt(char *buf, size_t len, double v)
{
    double a = fabs(v);
    if (a >= 1000 || a == 0)
        snprintf(buf, len, "%.0f", v);
    else if (a >= 100)
        snprintf(buf, len, "%.1f", v);
    else if (a >= 10)
        snprintf(buf, len, "%.2f", v);
    else
        snprintf(buf, len, "%.3f", v);
    return buf;
}

void bench_line(const bench_metric *m, double keel, double peer, double ratio)
{
    char k[32], p[32];
    printf("bench: name=%s unit=%s keel=%s peer=%s ratio=%.2f\n", m->name, m->unit,
           bench_fmt(k, sizeof(k), keel), bench_fmt(p, sizeof(p), peer), ratio);
    fflush(stdout);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(const double *v, size_t n)
{
    double tmp[BENCH_MAX_PAIRS];
    memcpy(tmp, v, n * sizeof(double));
    qsort(tmp, n, sizeof(double), cmp_double);
    return n % 2 ? tmp[n / 2] : (tmp[n / 2 - 1] + tmp[n / 2]) / 2;
}

static char notes[4096];
static size_t notes_len;

void bench_note(const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    /* Notes that do not fit are dropped whole rather than cut mid-line. */
    int n = snprintf(notes + notes_len, sizeof(notes) - notes_len, "#     %s\n", line);
    if (n > 0 && (size_t)n < sizeof(notes) - notes_len)
        notes_len += (size_t)n;
    else
        notes[notes_len] = 0;
}

static void notes_flush(void)
{
    fputs(notes, stdout);
    notes_len = 0;
    notes[0] = 0;
}

/* ---- watchdog ---- */

static struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool started, armed;
    uint64_t generation;
    struct timespec deadline; /* CLOCK_MONOTONIC */
    char what[160];
    void (*hook)(void);
} wd = {.lock = PTHREAD_MUTEX_INITIALIZER};

void bench_watchdog_hook(void (*fn)(void))
{
    wd.hook = fn;
}

static void *watchdog_main(void *unused)
{
    (void)unused;
    pthread_mutex_lock(&wd.lock);
    for (;;) {
        if (!wd.armed) {
            pthread_cond_wait(&wd.cond, &wd.lock);
            continue;
        }
        uint64_t gen = wd.generation;
        int err = pthread_cond_timedwait(&wd.cond, &wd.lock, &wd.deadline);
        if (err == ETIMEDOUT && wd.armed && wd.generation == gen) {
            printf("# WATCHDOG: %s did not finish in time: it hangs; giving up on this "
                   "benchmark process\n",
                   wd.what);
            if (wd.hook)
                wd.hook();
            fflush(stdout);
            _exit(3);
        }
    }
    return NULL;
}

static void watchdog_arm(double seconds, const char *what)
{
    pthread_mutex_lock(&wd.lock);
    if (!wd.started) {
        pthread_condattr_t attr;
        pthread_condattr_init(&attr);
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
        pthread_cond_init(&wd.cond, &attr);
        pthread_condattr_destroy(&attr);
        pthread_t t;
        /* Unpinned: it sleeps, and must run even if a benchmark thread
         * spins on its CPU. */
        if (pthread_create(&t, NULL, watchdog_main, NULL) == 0) {
            pthread_detach(t);
            wd.started = true;
        }
    }
    uint64_t at = bench_now_ns() + (uint64_t)(seconds * 1e9);
    wd.deadline.tv_sec = (time_t)(at / 1000000000ull);
    wd.deadline.tv_nsec = (long)(at % 1000000000ull);
    snprintf(wd.what, sizeof(wd.what), "%s", what);
    wd.armed = true;
    wd.generation++;
    pthread_cond_signal(&wd.cond);
    pthread_mutex_unlock(&wd.lock);
}

static void watchdog_disarm(void)
{
    pthread_mutex_lock(&wd.lock);
    wd.armed = false;
    wd.generation++;
    pthread_cond_signal(&wd.cond);
    pthread_mutex_unlock(&wd.lock);
}

static int run_one(const bench_metric *metrics, size_t n, bench_run_fn fn, void *ctx,
                   const char *side, unsigned pair, double *out)
{
    char what[160];
    snprintf(what, sizeof(what), "the %s run of %s (pair %u)", side, metrics[0].name, pair + 1);
    /* A run takes its warm-up plus one to two measuring spans, and start-up
     * and shutdown; far beyond that it is stuck. */
    watchdog_arm(10 + 5 * (bench_warmup_seconds() + 2 * bench_seconds()), what);
    uint64_t wall0 = bench_now_ns(), cpu0 = bench_cpu_ns();
    int rc = fn(ctx, out);
    watchdog_disarm();
    if (rc) {
        notes_flush();
        return -1;
    }
    double wall = (double)(bench_now_ns() - wall0) / 1e9;
    double cpu = (double)(bench_cpu_ns() - cpu0) / 1e9;
    char line[512];
    int len = snprintf(line, sizeof(line), "#   pair %u %-4s", pair + 1, side);
    for (size_t i = 0; i < n && len < (int)sizeof(line); i++) {
        char v[32];
        len += snprintf(line + len, sizeof(line) - (size_t)len, " %s=%s", metrics[i].name,
                        bench_fmt(v, sizeof(v), out[i]));
    }
    /* CPU time beside wall time shows who spins and who sleeps. */
    printf("%s (wall %.2f s, process cpu %.2f s)\n", line, wall, cpu);
    notes_flush();
    fflush(stdout);
    return 0;
}

int bench_compare(const bench_metric *metrics, size_t n, bench_run_fn keel, bench_run_fn peer,
                  void *ctx)
{
    unsigned pairs = bench_pairs();
    double kv[BENCH_MAX_METRICS][BENCH_MAX_PAIRS], pv[BENCH_MAX_METRICS][BENCH_MAX_PAIRS];
    double ratio[BENCH_MAX_METRICS][BENCH_MAX_PAIRS];
    double out[BENCH_MAX_METRICS];
    if (n > BENCH_MAX_METRICS)
        return -1;
    const char *only = getenv("BENCH_SIDE");
    if (only && *only) {
        bool peer_only = !strcmp(only, "peer");
        if (!peer_only && strcmp(only, "keel")) {
            fprintf(stderr, "bench: BENCH_SIDE must be keel or peer, not '%s'\n", only);
            return -1;
        }
        return run_one(metrics, n, peer_only ? peer : keel, ctx, peer_only ? "peer" : "keel", 0,
                       out);
    }
    for (unsigned p = 0; p < pairs; p++) {
        /* peer keel, keel peer, peer keel: each side runs first as often. */
        bool peer_first = p % 2 == 0;
        for (int k = 0; k < 2; k++) {
            bool is_peer = (k == 0) == peer_first;
            const char *side = is_peer ? "peer" : "keel";
            if (run_one(metrics, n, is_peer ? peer : keel, ctx, side, p, out)) {
                printf("# %s: the %s run failed; figure not reported\n", metrics[0].name, side);
                fflush(stdout);
                return -1;
            }
            for (size_t i = 0; i < n; i++)
                (is_peer ? pv : kv)[i][p] = out[i];
        }
        for (size_t i = 0; i < n; i++)
            ratio[i][p] = metrics[i].higher_is_better ? kv[i][p] / pv[i][p] : pv[i][p] / kv[i][p];
    }
    for (size_t i = 0; i < n; i++)
        bench_line(&metrics[i], median(kv[i], pairs), median(pv[i], pairs),
                   median(ratio[i], pairs));
    return 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

uint64_t bench_percentile(uint64_t *samples, size_t n, double p)
{
    if (n == 0)
        return 0;
    qsort(samples, n, sizeof(*samples), cmp_u64);
    size_t rank = (size_t)ceil(p / 100 * (double)n);
    return samples[rank ? rank - 1 : 0];
}

bool bench_selected(int argc, char **argv, const char *name)
{
    if (argc < 2)
        return true;
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], name))
            return true;
    return false;
}

int bench_check_figures(int argc, char **argv, const char *prog, const char *const *known, size_t n)
{
    for (int i = 1; i < argc; i++) {
        size_t k = 0;
        while (k < n && strcmp(argv[i], known[k]))
            k++;
        if (k == n) {
            fprintf(stderr, "%s: unknown figure '%s' (", prog, argv[i]);
            for (k = 0; k < n; k++)
                fprintf(stderr, "%s%s", k ? ", " : "", known[k]);
            fprintf(stderr, ")\n");
            return 2;
        }
    }
    return 0;
}
