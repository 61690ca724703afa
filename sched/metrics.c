/* Metrics: Prometheus text format on /metrics (--metrics-port).
 *
 * A scrape visits the shards one after another (keel_submit_to): on each,
 * the built-in collector and the apps' per-shard collectors read that
 * shard's own state and add samples labelled shard="N"; then the global
 * collectors run on the shard that took the request. Only one shard holds
 * the scrape at a time and the hand-offs go through the message rings, so
 * no state is read racily except the counters that are documented as
 * relaxed snapshots. Samples are grouped by family as they come, so each
 * family's HELP/TYPE appears once, however the collectors interleave.
 *
 * The same server answers /trace/start and /trace/stop?file=NAME (tracing
 * at run time; NAME in the working directory) and / (an index). It listens on every shard
 * (SO_REUSEPORT, like any keel listener); connections are one request each. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "internal.h"

#define MAX_COLLECTORS 32
#define MAX_REQUEST 8192

/* ---- the scrape being built ----------------------------------------------- */

typedef struct family {
    char *name;
    char *help;
    const char *type; /* "counter", "gauge", "histogram" */
    char *buf;        /* sample lines */
    size_t len, cap;
} family;

struct keel_metrics {
    family *fams;
    size_t n, cap;
    int shard; /* label added to samples; -1: none */
    bool oom;
};

static family *family_get(keel_metrics *m, const char *name, const char *help, const char *type)
{
    for (size_t i = m->n; i-- > 0;)
        if (!strcmp(m->fams[i].name, name))
            return &m->fams[i];
    if (m->n == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 64;
        family *f = realloc(m->fams, cap * sizeof(*f));
        if (!f)
            return NULL;
        m->fams = f;
        m->cap = cap;
    }
    family *f = &m->fams[m->n];
    memset(f, 0, sizeof(*f));
    f->name = strdup(name);
    f->help = strdup(help ? help : "");
    f->type = type;
    if (!f->name || !f->help) {
        free(f->name);
        free(f->help);
        return NULL;
    }
    m->n++;
    return f;
}

static void fam_append(keel_metrics *m, family *f, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void fam_append(keel_metrics *m, family *f, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        size_t room = f->cap - f->len;
        int k = vsnprintf(f->buf ? f->buf + f->len : NULL, room, fmt, ap);
        va_end(ap);
        if (k < 0)
            return;
        if ((size_t)k < room) {
            f->len += (size_t)k;
            return;
        }
        size_t cap = f->cap ? f->cap * 2 : 256;
        while (cap - f->len <= (size_t)k)
            cap *= 2;
        char *b = realloc(f->buf, cap);
        if (!b) {
            m->oom = true;
            return;
        }
        f->buf = b;
        f->cap = cap;
    }
}

/* The label set: shard first (when per shard), then the caller's, then
 * `extra` (a histogram's le). Empty: no braces at all. */
static void format_labels(const keel_metrics *m, const char *labels, const char *extra, char *out,
                          size_t len)
{
    size_t n = 0;
    out[0] = 0;
    const char *parts[3] = {NULL, labels, extra};
    char shard[24];
    if (m->shard >= 0) {
        snprintf(shard, sizeof(shard), "shard=\"%d\"", m->shard);
        parts[0] = shard;
    }
    for (int i = 0; i < 3; i++) {
        if (!parts[i] || !*parts[i])
            continue;
        int k = snprintf(out + n, len - n, "%s%s", n ? "," : "{", parts[i]);
        if (k < 0 || (size_t)k >= len - n)
            return;
        n += (size_t)k;
    }
    if (n && n + 1 < len) {
        out[n++] = '}';
        out[n] = 0;
    }
}

static void format_value(double v, char *out, size_t len)
{
    if (isnan(v))
        snprintf(out, len, "NaN");
    else if (isinf(v))
        snprintf(out, len, v > 0 ? "+Inf" : "-Inf");
    else if (v == floor(v) && fabs(v) < 9007199254740992.0)
        snprintf(out, len, "%.0f", v);
    else {
        /* The shortest form that reads back as the same double. */
        for (int prec = 6; prec <= 17; prec++) {
            snprintf(out, len, "%.*g", prec, v);
            if (strtod(out, NULL) == v)
                break;
        }
    }
}

void keel_metrics_add(keel_metrics *m, keel_metric_type type, const char *name, const char *help,
                      const char *labels, double value)
{
    family *f = family_get(m, name, help, type == KEEL_METRIC_COUNTER ? "counter" : "gauge");
    if (!f) {
        m->oom = true;
        return;
    }
    char lbl[512], val[40];
    format_labels(m, labels, NULL, lbl, sizeof(lbl));
    format_value(value, val, sizeof(val));
    fam_append(m, f, "%s%s %s\n", name, lbl, val);
}

void keel_metrics_histogram(keel_metrics *m, const char *name, const char *help, const char *labels,
                            const double *bounds, const uint64_t *counts, size_t n, double sum)
{
    family *f = family_get(m, name, help, "histogram");
    if (!f) {
        m->oom = true;
        return;
    }
    char lbl[512], le[48], val[40];
    uint64_t cum = 0;
    for (size_t i = 0; i <= n; i++) {
        cum += counts[i];
        if (i < n) {
            format_value(bounds[i], val, sizeof(val));
            snprintf(le, sizeof(le), "le=\"%s\"", val);
        } else {
            snprintf(le, sizeof(le), "le=\"+Inf\"");
        }
        format_labels(m, labels, le, lbl, sizeof(lbl));
        fam_append(m, f, "%s_bucket%s %llu\n", name, lbl, (unsigned long long)cum);
    }
    format_labels(m, labels, NULL, lbl, sizeof(lbl));
    format_value(sum, val, sizeof(val));
    fam_append(m, f, "%s_sum%s %s\n", name, lbl, val);
    fam_append(m, f, "%s_count%s %llu\n", name, lbl, (unsigned long long)cum);
}

const char *keel_metrics_escape(const char *v, char *buf, size_t len)
{
    size_t n = 0;
    for (; *v && n + 3 < len; v++) {
        if (*v == '\\' || *v == '"') {
            buf[n++] = '\\';
            buf[n++] = *v;
        } else if (*v == '\n') {
            buf[n++] = '\\';
            buf[n++] = 'n';
        } else {
            buf[n++] = *v;
        }
    }
    buf[n] = 0;
    return buf;
}

static void metrics_free(keel_metrics *m)
{
    for (size_t i = 0; i < m->n; i++) {
        free(m->fams[i].name);
        free(m->fams[i].help);
        free(m->fams[i].buf);
    }
    free(m->fams);
    free(m);
}

/* The exposition text: families in the order they first appeared. */
static char *metrics_render(keel_metrics *m, size_t *len)
{
    size_t total = 1;
    for (size_t i = 0; i < m->n; i++)
        total += strlen(m->fams[i].name) * 2 + strlen(m->fams[i].help) + 40 + m->fams[i].len;
    char *out = malloc(total);
    if (!out)
        return NULL;
    size_t n = 0;
    for (size_t i = 0; i < m->n; i++) {
        family *f = &m->fams[i];
        n += (size_t)snprintf(out + n, total - n, "# HELP %s %s\n# TYPE %s %s\n", f->name, f->help,
                              f->name, f->type);
        if (f->len)
            memcpy(out + n, f->buf, f->len);
        n += f->len;
    }
    out[n] = 0;
    *len = n;
    return out;
}

/* ---- collectors ----------------------------------------------------------- */

typedef struct collector {
    keel_metrics_fn fn;
    void *arg;
    bool per_shard;
} collector;

static collector g_collectors[MAX_COLLECTORS];
static unsigned g_ncollectors;
static pthread_mutex_t g_collectors_lock = PTHREAD_MUTEX_INITIALIZER;
static _Atomic uint16_t g_port;

int keel_metrics_register(keel_metrics_fn fn, void *arg, bool per_shard)
{
    int err = 0;
    pthread_mutex_lock(&g_collectors_lock);
    if (g_ncollectors == MAX_COLLECTORS)
        err = -ENOSPC;
    else
        g_collectors[g_ncollectors++] = (collector){fn, arg, per_shard};
    pthread_mutex_unlock(&g_collectors_lock);
    return err;
}

uint16_t keel_metrics_port(void)
{
    return atomic_load(&g_port);
}

static void run_collectors(keel_metrics *m, bool per_shard)
{
    collector c[MAX_COLLECTORS];
    pthread_mutex_lock(&g_collectors_lock);
    unsigned n = g_ncollectors;
    memcpy(c, g_collectors, n * sizeof(*c));
    pthread_mutex_unlock(&g_collectors_lock);
    for (unsigned i = 0; i < n; i++)
        if (c[i].per_shard == per_shard)
            c[i].fn(m, c[i].arg);
}

#define C KEEL_METRIC_COUNTER
#define G KEEL_METRIC_GAUGE

static void add_group_metrics(keel_metrics *m, unsigned shard)
{
    static double bounds[KEEL_SCHED_LATENCY_BUCKETS - 1];
    if (bounds[0] == 0)
        for (int i = 0; i < KEEL_SCHED_LATENCY_BUCKETS - 1; i++)
            bounds[i] = (double)(1ull << i) / 1e6;
    unsigned ng = keel_sched_group_count();
    for (unsigned i = 0; i < ng; i++) {
        keel_sched_group *g = keel_sched_group_at(i);
        keel_sched_group_stats st;
        if (keel_sched_group_stats_get(shard, g, &st))
            continue;
        char esc[64], lbl[80];
        snprintf(lbl, sizeof(lbl), "group=\"%s\"",
                 keel_metrics_escape(keel_sched_group_name(g), esc, sizeof(esc)));
        keel_metrics_add(m, C, "keel_sched_group_runtime_seconds_total",
                         "CPU time of the group's tasks", lbl, (double)st.runtime_ns / 1e9);
        keel_metrics_add(m, C, "keel_sched_group_tasks_total", "Tasks run from the group's queue",
                         lbl, (double)st.tasks);
        keel_metrics_add(m, G, "keel_sched_group_queue_length", "Tasks queued in the group now",
                         lbl, (double)st.queue_len);
        keel_metrics_add(m, G, "keel_sched_group_shares", "The group's configured shares", lbl,
                         (double)keel_sched_group_shares(g));
        keel_metrics_histogram(m, "keel_sched_group_wait_seconds",
                               "Scheduling latency: time the group was runnable but waiting "
                               "for the CPU, per wait",
                               lbl, bounds, st.wait_hist, KEEL_SCHED_LATENCY_BUCKETS - 1,
                               (double)st.wait_ns / 1e9);
    }
}

/* A counter or gauge read from a field of a stats struct. */
typedef struct stat_metric {
    keel_metric_type type;
    const char *name, *help;
    size_t offset;
} stat_metric;

#define SHARD_STAT(t, n, h, f)                                                                     \
    {                                                                                              \
        t, n, h, offsetof(keel_shard_stats, f)                                                     \
    }
static const stat_metric shard_stat_metrics[] = {
    SHARD_STAT(C, "keel_tasks_total", "Continuations run from the run queues", tasks_run),
    SHARD_STAT(C, "keel_inline_runs_total", "Continuations run inline (ready fast path)",
               inline_runs),
    SHARD_STAT(C, "keel_loop_turns_total", "Turns of the shard's loop", loop_turns),
    SHARD_STAT(C, "keel_sleeps_total", "Turns that waited in the kernel", sleeps),
    SHARD_STAT(C, "keel_io_submitted_total", "I/O operations submitted", sqes_submitted),
    SHARD_STAT(C, "keel_io_completed_total", "I/O completions reaped", cqes_reaped),
    SHARD_STAT(C, "keel_reactor_enters_total", "io_uring_enter or epoll_wait calls", enter_calls),
    SHARD_STAT(C, "keel_xshard_messages_sent_total", "Cross-shard messages sent", msgs_sent),
    SHARD_STAT(C, "keel_xshard_messages_received_total", "Cross-shard messages received",
               msgs_received),
    SHARD_STAT(C, "keel_xshard_wakeups_sent_total", "Sleeping shards woken by this one",
               wakeups_sent),
    SHARD_STAT(C, "keel_timers_fired_total", "Timers fired", timers_fired),
    SHARD_STAT(C, "keel_blocking_jobs_total", "Jobs run in the blocking pool", blocking_jobs),
    SHARD_STAT(C, "keel_stalls_total", "Tasks that held the shard past the stall threshold",
               stalls),
    SHARD_STAT(C, "keel_trace_events_total", "Events recorded by the trace", trace_events),
    SHARD_STAT(C, "keel_memory_allocations_bytes_total", "Bytes allocated by the shard's thread",
               bytes_allocated),
};

#define NET_STAT(t, n, h, f)                                                                       \
    {                                                                                              \
        t, n, h, offsetof(keel_net_stats, f)                                                       \
    }
static const stat_metric net_stat_metrics[] = {
    NET_STAT(G, "keel_net_connections", "Connections open on the shard", open),
    NET_STAT(C, "keel_net_accepts_total", "Connections accepted by the shard", accepted),
    NET_STAT(C, "keel_net_refused_total", "Connections closed at accept (over max_conns)", refused),
    NET_STAT(C, "keel_net_accept_errors_total", "Failed accepts", accept_errors),
    NET_STAT(C, "keel_net_errors_total", "Connections failed (reset, timed out, I/O error)",
             errors),
    NET_STAT(C, "keel_net_received_bytes_total", "Bytes received", bytes_in),
    NET_STAT(C, "keel_net_sent_bytes_total", "Bytes sent", bytes_out),
    NET_STAT(G, "keel_net_receive_buffers_in_use", "Receive buffers held by connections",
             bufs_in_use),
};

static void add_stats(keel_metrics *m, const stat_metric *t, size_t n, const void *stats)
{
    for (size_t i = 0; i < n; i++) {
        uint64_t v;
        memcpy(&v, (const char *)stats + t[i].offset, sizeof(v));
        keel_metrics_add(m, t[i].type, t[i].name, t[i].help, NULL, (double)v);
    }
}

/* The runtime's own per-shard series; runs on the shard it describes. */
static void add_shard_metrics(keel_metrics *m)
{
    keel__shard *s = keel__shard_self();
    keel__memory_stats(s);
    keel_shard_stats st;
    keel_shard_stats_get(s->id, &st);
    struct timespec cpu;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &cpu);
    keel_metrics_add(m, C, "keel_cpu_seconds_total", "CPU time of the shard's thread (user+system)",
                     NULL, (double)cpu.tv_sec + (double)cpu.tv_nsec / 1e9);
    keel_metrics_add(m, C, "keel_sleep_seconds_total",
                     "Time in the kernel call that waits for work (with the kernel I/O work done "
                     "in it)",
                     NULL, (double)st.sleep_ns / 1e9);
    add_stats(m, shard_stat_metrics, sizeof(shard_stat_metrics) / sizeof(shard_stat_metrics[0]),
              &st);
    /* Live bytes: the shard's arena when jemalloc runs (memory another
     * thread frees is still counted right); else what the thread allocated
     * less what it freed, which cross-thread frees can skew. */
    uint64_t arena_alloc = 0, arena_res = 0;
    bool arena = keel__memory_arena_stats(s, &arena_alloc, &arena_res);
    int64_t thread_live = (int64_t)(st.bytes_allocated - st.bytes_deallocated);
    keel_metrics_add(m, G, "keel_memory_allocated_bytes",
                     "Bytes allocated and not yet freed in the shard's memory", NULL,
                     arena ? (double)arena_alloc : (double)(thread_live > 0 ? thread_live : 0));
    if (arena)
        keel_metrics_add(m, G, "keel_memory_resident_arena_bytes",
                         "Physical memory held by the shard's jemalloc arena", NULL,
                         (double)arena_res);
    keel_net_stats ns;
    keel_net_stats_get(s->id, &ns);
    add_stats(m, net_stat_metrics, sizeof(net_stat_metrics) / sizeof(net_stat_metrics[0]), &ns);
    add_group_metrics(m, s->id);
}

static uint64_t resident_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long size = 0, res = 0;
    if (f) {
        if (fscanf(f, "%lu %lu", &size, &res) != 2)
            res = 0;
        fclose(f);
    }
    return (uint64_t)res * (uint64_t)sysconf(_SC_PAGESIZE);
}

static void add_global_metrics(keel_metrics *m)
{
    char lbl[256], app[64], esc[128];
    snprintf(app, sizeof(app), "%s", program_invocation_short_name);
    snprintf(lbl, sizeof(lbl), "app=\"%s\",backend=\"%s\",version=\"%s\"",
             keel_metrics_escape(app, esc, sizeof(esc)), keel_backend_name(), KEEL_VERSION);
    keel_metrics_add(m, G, "keel_info", "The app, its reactor backend and keel's version", lbl, 1);
    keel_metrics_add(m, G, "keel_shards", "Shards running", NULL, keel_shard_count());
    keel_metrics_add(m, G, "keel_memory_resident_bytes", "Resident memory of the process", NULL,
                     (double)resident_bytes());
    keel_metrics_add(m, G, "keel_task_quota_seconds", "Task quota: tasks run this long per turn",
                     NULL, (double)keel__shard_self()->quota_ns / 1e9);
    keel_metrics_add(m, G, "keel_stall_threshold_seconds", "Stall report threshold (0: off)", NULL,
                     (double)keel__rt->config.stall_threshold_ms / 1e3);
}

#undef C
#undef G

/* ---- a scrape: shard by shard ----------------------------------------------- */

typedef struct scrape {
    keel_metrics *m;
    unsigned next; /* shard to visit next */
} scrape;

static keel_future *collect_here(void *arg)
{
    scrape *sc = arg;
    sc->m->shard = (int)keel_shard_id();
    add_shard_metrics(sc->m);
    run_collectors(sc->m, true);
    return keel_make_ready(0);
}

static keel_future *go_on(void *ctx, keel_result r)
{
    (void)ctx;
    (void)r;
    return keel_make_ready(KEEL_CONTINUE);
}

static keel_future *visit_next(void *ctx)
{
    scrape *sc = ctx;
    if (sc->next == keel_shard_count())
        return keel_make_ready(KEEL_STOP);
    unsigned shard = sc->next++;
    return keel_then(keel_submit_to(shard, collect_here, sc), go_on, NULL);
}

/* Visits every shard in turn; resolves to 0 once sc->m holds every
 * shard's samples (the global ones are added by the caller). */
static keel_future *scrape_all(void *arg)
{
    scrape *sc = arg;
    keel__memory_refresh();
    return keel_repeat(visit_next, sc);
}

/* ---- the HTTP server ----------------------------------------------------------- */

typedef struct http_conn {
    keel_conn *c;
    scrape sc;
    char path[256];
} http_conn;

static void http_done(void *ctx, keel_result r)
{
    (void)r;
    http_conn *h = ctx;
    if (h->sc.m)
        metrics_free(h->sc.m);
    keel_detach(keel_conn_close(h->c));
    free(h);
}

static keel_future *respond(http_conn *h, int status, const char *type, const char *body,
                            size_t len)
{
    const char *reason = status == 200   ? "OK"
                         : status == 404 ? "Not Found"
                         : status == 405 ? "Method Not Allowed"
                         : status == 409 ? "Conflict"
                         : status == 400 ? "Bad Request"
                                         : "Internal Server Error";
    char head[256];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "Connection: close\r\n\r\n",
                     status, reason, type, len);
    keel_detach(keel_conn_write(h->c, head, (size_t)n));
    keel_detach(keel_conn_write(h->c, body, len));
    return keel_conn_flush(h->c);
}

static keel_future *respond_text(http_conn *h, int status, const char *text)
{
    return respond(h, status, "text/plain; charset=utf-8", text, strlen(text));
}

static keel_future *scraped(void *ctx, keel_result r)
{
    http_conn *h = ctx;
    if (r.err)
        return respond_text(h, 500, "scrape failed\n");
    h->sc.m->shard = -1;
    add_global_metrics(h->sc.m);
    run_collectors(h->sc.m, false);
    if (h->sc.m->oom)
        return respond_text(h, 500, "out of memory\n");
    size_t len;
    char *text = metrics_render(h->sc.m, &len);
    if (!text)
        return respond_text(h, 500, "out of memory\n");
    keel_future *f = respond(h, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
    free(text);
    return f;
}

static keel_future *trace_stopped(void *ctx, keel_result r)
{
    http_conn *h = ctx;
    char msg[512];
    if (r.err) {
        snprintf(msg, sizeof(msg), "trace not written: %s\n", keel_strerror(r.err));
        return respond_text(h, r.err == -EINVAL ? 409 : 500, msg);
    }
    snprintf(msg, sizeof(msg), "trace written: %lld events to %s\n", (long long)r.val,
             h->path[0] ? h->path : keel__rt->config.trace_file);
    return respond_text(h, 200, msg);
}

/* ?file=NAME: a plain file name ([A-Za-z0-9._-], not starting with a
 * dot), written in the process's working directory. Anyone who reaches
 * the metrics port may ask for a trace, so no path: they cannot make the
 * process write anywhere else. Returns false for a bad name. */
static bool query_file(const char *q, char *out, size_t len)
{
    out[0] = 0;
    const char *p = strstr(q, "file=");
    if (!p || (p != q && p[-1] != '&'))
        return true;
    p += 5;
    size_t n = 0;
    for (; *p && *p != '&'; p++) {
        bool ok = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                  (*p >= '0' && *p <= '9') || *p == '_' || *p == '-' || (*p == '.' && n > 0);
        if (!ok || n + 1 >= len)
            return false;
        out[n++] = *p;
    }
    out[n] = 0;
    return n > 0;
}

static keel_future *route(http_conn *h, const char *req, size_t len)
{
    /* Request line: METHOD SP TARGET SP VERSION */
    const char *sp1 = memchr(req, ' ', len);
    if (!sp1)
        return respond_text(h, 400, "bad request\n");
    const char *target = sp1 + 1;
    const char *sp2 = memchr(target, ' ', len - (size_t)(target - req));
    if (!sp2)
        return respond_text(h, 400, "bad request\n");
    if ((size_t)(sp1 - req) != 3 || memcmp(req, "GET", 3))
        return respond_text(h, 405, "only GET is served\n");
    char path[512];
    size_t plen = (size_t)(sp2 - target);
    if (plen >= sizeof(path))
        return respond_text(h, 404, "not found\n");
    memcpy(path, target, plen);
    path[plen] = 0;
    char *query = strchr(path, '?');
    if (query)
        *query++ = 0;
    if (!strcmp(path, "/metrics")) {
        h->sc.m = calloc(1, sizeof(keel_metrics));
        if (!h->sc.m)
            return respond_text(h, 500, "out of memory\n");
        /* Statistics are background work: under load a scrape takes the
         * background group's share, not a turn as big as the clients'. */
        return keel_then_wrapped(
            keel_with_sched_group(keel_sched_group_background(), scrape_all, &h->sc), scraped, h);
    }
    if (!strcmp(path, "/trace/start")) {
        int err = keel_trace_start();
        return err == -EALREADY ? respond_text(h, 409, "trace already recording\n")
               : err == -EBUSY  ? respond_text(h, 409, "a trace is still being written\n")
               : err            ? respond_text(h, 500, "trace could not start\n")
                                : respond_text(h, 200, "trace recording\n");
    }
    if (!strcmp(path, "/trace/stop")) {
        if (!query_file(query ? query : "", h->path, sizeof(h->path)))
            return respond_text(h, 400,
                                "file= takes a plain file name (letters, digits, . _ -), "
                                "written in the server's working directory\n");
        if (!keel_trace_active())
            return respond_text(h, 409, "trace not recording (GET /trace/start first)\n");
        if (!h->path[0] && !keel__rt->config.trace_file)
            return respond_text(h, 409, "no trace file: use /trace/stop?file=NAME or --trace\n");
        return keel_then_wrapped(keel_trace_stop(h->path[0] ? h->path : NULL), trace_stopped, h);
    }
    if (!strcmp(path, "/"))
        return respond_text(h, 200,
                            "keel: /metrics (Prometheus text format), /trace/start, "
                            "/trace/stop[?file=NAME]\n");
    return respond_text(h, 404, "not found\n");
}

/* Reads until the end of the headers (a blank line), then routes. */
static keel_future *got_bytes(void *ctx, keel_result r)
{
    http_conn *h = ctx;
    if (r.val == 0)
        return keel_make_ready(0); /* the client left */
    size_t n = keel_conn_buffered(h->c);
    char req[MAX_REQUEST + 1];
    size_t k = keel_conn_copy(h->c, req, n < MAX_REQUEST ? n : MAX_REQUEST);
    req[k] = 0;
    char *end = strstr(req, "\r\n\r\n");
    if (!end)
        end = strstr(req, "\n\n");
    if (!end) {
        if (n >= MAX_REQUEST)
            return respond_text(h, 400, "request too large\n");
        return keel_then(keel_conn_read_exactly(h->c, n + 1), got_bytes, h);
    }
    keel_conn_consume(h->c, n); /* one request per connection: the rest is dropped */
    return route(h, req, (size_t)(end - req));
}

static void on_accept(void *ctx, keel_conn *c)
{
    (void)ctx;
    http_conn *h = calloc(1, sizeof(*h));
    if (!h) {
        keel_conn_abort(c);
        return;
    }
    h->c = c;
    keel_conn_set_deadlines(c, KEEL_MS(10000), KEEL_MS(10000), 0);
    keel_on_done(keel_then(keel_conn_read(c), got_bytes, h), http_done, h);
}

static keel_listener *g_listener;

static void listening(void *ctx, keel_result r)
{
    (void)ctx;
    const keel_config *c = &keel__rt->config;
    if (r.err) {
        keel__log("cannot serve metrics on %s port %d: %s; pick another --metrics-port (or "
                  "--metrics-address), or stop what uses it",
                  c->metrics_address, c->metrics_port, keel_strerror(r.err));
        /* Not init_failed: a shard that read that after the start barrier
         * would skip its loop, and the shutdown would wait for it forever. */
        atomic_store(&keel__rt->run_failed, 1);
        keel_stop();
        return;
    }
    atomic_store(&g_port, keel_listener_port(g_listener));
    const char *a = c->metrics_address;
    if (!c->quiet) /* a quiet app announces it itself (keel_metrics_port) */
        keel__log("metrics on http://%s%s%s:%u/metrics", strchr(a, ':') ? "[" : "", a,
                  strchr(a, ':') ? "]" : "", (unsigned)atomic_load(&g_port));
}

void keel__metrics_start(void)
{
    const keel_config *c = &keel__rt->config;
    atomic_store(&g_port, 0);
    if (c->metrics_port < 0)
        return;
    keel_listen_config lc;
    keel_listen_config_init(&lc);
    lc.bind = c->metrics_address;
    lc.port = (uint16_t)c->metrics_port;
    lc.backlog = 64;
    lc.max_conns = 64;
    keel_on_done(keel_listen(&lc, on_accept, NULL, &g_listener), listening, NULL);
}
