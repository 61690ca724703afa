/* keel-top — a live per-shard view of any keel app, from its /metrics page.
 *
 * It scrapes the app's Prometheus endpoint every second, turns counters into
 * per-second rates from consecutive scrapes, and draws a table per shard and
 * per scheduling group with plain ANSI escapes (no curses: the tool must run
 * wherever the app does). It needs nothing from the runtime, so it works
 * against any keel app, local or remote.
 */
#define _GNU_SOURCE
#include "prom.h"
#include "scrape.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

/* A hostile or broken server must not make keel-top allocate without bound. */
#define MAX_SHARDS 4096
#define MAX_GROUPS 16384
#define GROUP_NAME_MAX 64

/* Set by signals, keys, or a terminal or pipe that went away. */
static volatile sig_atomic_t quit_requested;

/* ---- the model: one scrape, reduced to what the screen shows ----------- */

enum shard_metric {
    S_CPU, /* counters first: these become rates */
    S_SLEEP,
    S_TASKS,
    S_INLINE, /* added into TASKS/s: a continuation run inline is a task too */
    S_TURNS,
    S_IO_SUB,
    S_IO_COMP,
    S_MSG_OUT,
    S_MSG_IN,
    S_NET_RX,
    S_NET_TX,
    S_STALLS,
    S_CONNS, /* gauges */
    S_MEM,
    S_COUNT
};

static const char *const shard_metric_names[S_COUNT] = {
    [S_CPU] = "keel_cpu_seconds_total",
    [S_SLEEP] = "keel_sleep_seconds_total",
    [S_TASKS] = "keel_tasks_total",
    [S_INLINE] = "keel_inline_runs_total",
    [S_TURNS] = "keel_loop_turns_total",
    [S_IO_SUB] = "keel_io_submitted_total",
    [S_IO_COMP] = "keel_io_completed_total",
    [S_MSG_OUT] = "keel_xshard_messages_sent_total",
    [S_MSG_IN] = "keel_xshard_messages_received_total",
    [S_NET_RX] = "keel_net_received_bytes_total",
    [S_NET_TX] = "keel_net_sent_bytes_total",
    [S_STALLS] = "keel_stalls_total",
    [S_CONNS] = "keel_net_connections",
    [S_MEM] = "keel_memory_allocated_bytes",
};

enum group_metric { G_RUNTIME, G_TASKS, G_WAIT_SUM, G_WAIT_COUNT, G_QUEUE, G_SHARES, G_COUNT };

static const char *const group_metric_names[G_COUNT] = {
    [G_RUNTIME] = "keel_sched_group_runtime_seconds_total",
    [G_TASKS] = "keel_sched_group_tasks_total",
    [G_WAIT_SUM] = "keel_sched_group_wait_seconds_sum",
    [G_WAIT_COUNT] = "keel_sched_group_wait_seconds_count",
    [G_QUEUE] = "keel_sched_group_queue_length",
    [G_SHARES] = "keel_sched_group_shares",
};

struct shard {
    unsigned id;
    double v[S_COUNT]; /* NAN: the app does not export it */
};

struct group {
    unsigned shard;
    unsigned seq; /* order of first appearance, to keep the app's order */
    char name[GROUP_NAME_MAX];
    double v[G_COUNT];
};

struct snapshot {
    bool ok;          /* holds a successful scrape */
    int64_t t_ms;     /* monotonic time of the scrape */
    double rss_bytes; /* NAN when absent */
    double shards_gauge;
    bool have_info;
    char app[64], backend[32], version[32];
    struct shard *shards;
    size_t nshards, shards_cap;
    struct group *groups;
    size_t ngroups, groups_cap;
    size_t shard_hint, group_hint; /* see group_find */
    size_t bad_lines;              /* malformed lines skipped */
    size_t keel_samples;           /* samples whose name starts with keel_ */
};

static void snapshot_clear(struct snapshot *s)
{
    s->ok = false;
    s->rss_bytes = s->shards_gauge = NAN;
    s->have_info = false;
    s->app[0] = s->backend[0] = s->version[0] = '\0';
    s->nshards = s->ngroups = s->shard_hint = s->group_hint = 0;
    s->bad_lines = s->keel_samples = 0;
}

static void snapshot_free(struct snapshot *s)
{
    free(s->shards);
    free(s->groups);
    memset(s, 0, sizeof *s);
}

/* Copies a string from the server for display: anything but printable ASCII
 * becomes '?', so a label value cannot smuggle escape sequences onto the
 * user's terminal. */
static void copy_printable(char *dst, size_t size, const char *src)
{
    size_t i = 0;
    for (; src[i] && i + 1 < size; i++) {
        unsigned char c = (unsigned char)src[i];
        dst[i] = c >= 0x20 && c < 0x7f ? (char)c : '?';
    }
    dst[i] = '\0';
}

/* shard="N": a plain decimal below MAX_SHARDS, or -1. */
static int parse_shard(const char *v)
{
    if (!v || !*v)
        return -1;
    int n = 0;
    for (; *v; v++) {
        if (*v < '0' || *v > '9')
            return -1;
        n = n * 10 + (*v - '0');
        if (n >= MAX_SHARDS)
            return -1;
    }
    return n;
}

/* Finds a shard, searching from *hint on, for the reason group_find gives. */
static struct shard *shard_find(const struct snapshot *s, unsigned id, size_t *hint)
{
    for (size_t k = 0; k < s->nshards; k++) {
        size_t i = (*hint + k) % s->nshards;
        if (s->shards[i].id == id) {
            *hint = i + 1;
            return &s->shards[i];
        }
    }
    return NULL;
}

static struct shard *shard_get(struct snapshot *s, unsigned id)
{
    struct shard *found = shard_find(s, id, &s->shard_hint);
    if (found)
        return found;
    if (s->nshards == s->shards_cap) {
        size_t cap = s->shards_cap ? s->shards_cap * 2 : 16;
        struct shard *n = realloc(s->shards, cap * sizeof *n);
        if (!n)
            return NULL; /* the shard is left out of this frame */
        s->shards = n;
        s->shards_cap = cap;
    }
    struct shard *sh = &s->shards[s->nshards++];
    s->shard_hint = s->nshards;
    sh->id = id;
    for (int i = 0; i < S_COUNT; i++)
        sh->v[i] = NAN;
    return sh;
}

/* Finds a group, searching from *hint on: an exposition lists the groups in
 * the same order for every family, and frames walk them in order, so the
 * next one is nearly always where the last search ended, and a scrape with
 * thousands of groups costs a pass rather than a pass per group. */
static struct group *group_find(const struct snapshot *s, unsigned shard, const char *name,
                                size_t *hint)
{
    for (size_t k = 0; k < s->ngroups; k++) {
        size_t i = (*hint + k) % s->ngroups;
        if (s->groups[i].shard == shard && strcmp(s->groups[i].name, name) == 0) {
            *hint = i + 1;
            return &s->groups[i];
        }
    }
    return NULL;
}

static struct group *group_get(struct snapshot *s, unsigned shard, const char *name)
{
    struct group *g = group_find(s, shard, name, &s->group_hint);
    if (g)
        return g;
    if (s->ngroups >= MAX_GROUPS)
        return NULL;
    if (s->ngroups == s->groups_cap) {
        size_t cap = s->groups_cap ? s->groups_cap * 2 : 16;
        struct group *n = realloc(s->groups, cap * sizeof *n);
        if (!n)
            return NULL;
        s->groups = n;
        s->groups_cap = cap;
    }
    g = &s->groups[s->ngroups];
    g->shard = shard;
    g->seq = (unsigned)s->ngroups++;
    s->group_hint = s->ngroups;
    snprintf(g->name, sizeof g->name, "%s", name);
    for (int i = 0; i < G_COUNT; i++)
        g->v[i] = NAN;
    return g;
}

static void on_sample(const struct prom_sample *ps, void *arg)
{
    struct snapshot *s = arg;
    if (ps->name_len < 5 || memcmp(ps->name, "keel_", 5) != 0)
        return; /* the app's own series, or another library's */
    s->keel_samples++;

    if (prom_name_is(ps, "keel_info")) {
        const char *v;
        s->have_info = true;
        if ((v = prom_label(ps, "app")))
            copy_printable(s->app, sizeof s->app, v);
        if ((v = prom_label(ps, "backend")))
            copy_printable(s->backend, sizeof s->backend, v);
        if ((v = prom_label(ps, "version")))
            copy_printable(s->version, sizeof s->version, v);
        return;
    }
    if (prom_name_is(ps, "keel_memory_resident_bytes")) {
        s->rss_bytes = ps->value;
        return;
    }
    if (prom_name_is(ps, "keel_shards")) {
        s->shards_gauge = ps->value;
        return;
    }

    int shard = parse_shard(prom_label(ps, "shard"));
    if (shard < 0)
        return;
    const char *group = prom_label(ps, "group");
    if (group) {
        for (int i = 0; i < G_COUNT; i++) {
            if (prom_name_is(ps, group_metric_names[i])) {
                char name[GROUP_NAME_MAX];
                copy_printable(name, sizeof name, group);
                struct group *g = group_get(s, (unsigned)shard, name);
                if (g)
                    g->v[i] = ps->value;
                return;
            }
        }
        return;
    }
    for (int i = 0; i < S_COUNT; i++) {
        if (prom_name_is(ps, shard_metric_names[i])) {
            struct shard *sh = shard_get(s, (unsigned)shard);
            if (sh)
                sh->v[i] = ps->value;
            return;
        }
    }
}

static int shard_cmp(const void *a, const void *b)
{
    const struct shard *x = a, *y = b;
    return (x->id > y->id) - (x->id < y->id);
}

static int group_cmp(const void *a, const void *b)
{
    const struct group *x = a, *y = b;
    if (x->shard != y->shard)
        return (x->shard > y->shard) - (x->shard < y->shard);
    return (x->seq > y->seq) - (x->seq < y->seq);
}

static void snapshot_fill(struct snapshot *s, const char *body, size_t len, int64_t t_ms)
{
    snapshot_clear(s);
    s->bad_lines = prom_parse(body, len, on_sample, s);
    if (s->nshards > 1) /* an empty array may be NULL, which qsort must not get */
        qsort(s->shards, s->nshards, sizeof *s->shards, shard_cmp);
    if (s->ngroups > 1)
        qsort(s->groups, s->ngroups, sizeof *s->groups, group_cmp);
    s->t_ms = t_ms;
    s->ok = true;
}

/* Per-second rate of a counter between two scrapes; NAN when either side is
 * missing or the counter went backwards (the app restarted). */
static double rate(double cur, double prev, double dt_s)
{
    if (isnan(cur) || isnan(prev) || isinf(cur) || isinf(prev) || dt_s <= 0 || cur < prev)
        return NAN;
    return (cur - prev) / dt_s;
}

static double delta(double cur, double prev)
{
    if (isnan(cur) || isnan(prev) || isinf(cur) || isinf(prev) || cur < prev)
        return NAN;
    return cur - prev;
}

/* ---- number formatting: every cell fits its column ---------------------- */

#define CELL 24

static const char *fmt_count(char *buf, double v)
{
    double a = fabs(v);
    if (isnan(v) || isinf(v))
        snprintf(buf, CELL, "-");
    else if (a == 0)
        snprintf(buf, CELL, "0");
    else if (a < 9.95)
        snprintf(buf, CELL, "%.1f", v);
    else if (a < 9999.5)
        snprintf(buf, CELL, "%.0f", v);
    else if (a < 999.95e3)
        snprintf(buf, CELL, "%.1fk", v / 1e3);
    else if (a < 999.95e6)
        snprintf(buf, CELL, "%.1fM", v / 1e6);
    else if (a < 999.95e9)
        snprintf(buf, CELL, "%.1fG", v / 1e9);
    else
        snprintf(buf, CELL, "%.2g", v);
    return buf;
}

static const char *fmt_int(char *buf, double v)
{
    if (isnan(v) || isinf(v))
        return snprintf(buf, CELL, "-"), buf;
    if (fabs(v) < 1e7)
        return snprintf(buf, CELL, "%.0f", v), buf;
    return fmt_count(buf, v);
}

/* Binary units, as free(1) and top(1) show memory. */
static const char *fmt_bytes(char *buf, double v)
{
    static const char units[] = "KMGTPE";
    if (isnan(v) || isinf(v) || v < 0)
        return snprintf(buf, CELL, "-"), buf;
    if (v < 1024)
        return snprintf(buf, CELL, "%.0fB", v), buf;
    int u = -1;
    while (v >= 1023.95 && u < (int)sizeof units - 2) {
        v /= 1024;
        u++;
    }
    if (v >= 1023.95)
        snprintf(buf, CELL, "huge"); /* past exbibytes: a broken gauge */
    else
        snprintf(buf, CELL, v < 99.95 ? "%.1f%c" : "%.0f%c", v, units[u]);
    return buf;
}

static const char *fmt_pct(char *buf, double v)
{
    if (isnan(v) || isinf(v))
        snprintf(buf, CELL, "-");
    else if (fabs(v) < 1000)
        snprintf(buf, CELL, "%.1f", v);
    else
        snprintf(buf, CELL, "%.0f", v);
    return buf;
}

static const char *fmt_secs(char *buf, double v)
{
    if (isnan(v) || isinf(v) || v < 0)
        snprintf(buf, CELL, "-");
    else if (v == 0)
        snprintf(buf, CELL, "0");
    else if (v < 1e-6)
        snprintf(buf, CELL, "%.0fns", v * 1e9);
    else if (v < 1e-3)
        snprintf(buf, CELL, "%.1fus", v * 1e6);
    else if (v < 1)
        snprintf(buf, CELL, "%.1fms", v * 1e3);
    else
        snprintf(buf, CELL, "%.2fs", v);
    return buf;
}

/* ---- the frame: lines of text with optional style escapes ---------------- */

struct frame {
    char *buf;
    size_t len, cap;
    bool color; /* a terminal: use styles */
    bool oom;
};

static void fr_vprintf(struct frame *f, const char *fmt, va_list ap)
{
    if (f->oom)
        return;
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(f->buf ? f->buf + f->len : NULL, f->buf ? f->cap - f->len : 0, fmt, ap2);
    va_end(ap2);
    if (n < 0)
        return;
    if (!f->buf || f->len + (size_t)n + 1 > f->cap) {
        size_t cap = f->cap ? f->cap : 4096;
        while (cap < f->len + (size_t)n + 1)
            cap *= 2;
        char *b = realloc(f->buf, cap);
        if (!b) {
            f->oom = true;
            return;
        }
        f->buf = b;
        f->cap = cap;
        vsnprintf(f->buf + f->len, f->cap - f->len, fmt, ap);
    }
    f->len += (size_t)n;
}

__attribute__((format(printf, 2, 3))) static void fr_printf(struct frame *f, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fr_vprintf(f, fmt, ap);
    va_end(ap);
}

/* SGR styles; nothing when the output is not a terminal. */
#define ST_RESET "0"
#define ST_BOLD "1"
#define ST_HEAD "7"     /* reverse video: the column headers */
#define ST_ALERT "1;31" /* bold red: stalls that grew, disconnection */
#define ST_DIM "2"

static void fr_style(struct frame *f, const char *sgr)
{
    if (f->color)
        fr_printf(f, "\033[%sm", sgr);
}

/* ---- rendering --------------------------------------------------------- */

struct view {
    const struct scrape_target *target;
    const struct snapshot *cur, *prev; /* prev may be NULL or !ok */
    const char *error;                 /* the last scrape's failure, or NULL */
    double delay_s;
    bool interactive;
};

static void render_header(struct frame *f, const struct view *v)
{
    const struct snapshot *c = v->cur;
    char rss[CELL], tbuf[16];
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    strftime(tbuf, sizeof tbuf, "%H:%M:%S", &tm);

    fr_style(f, ST_BOLD);
    fr_printf(f, "keel-top");
    fr_style(f, ST_RESET);
    if (c->ok && c->have_info) {
        fr_printf(f, "  %s", c->app[0] ? c->app : "?");
        if (c->backend[0])
            fr_printf(f, " (%s)", c->backend);
        if (c->version[0])
            fr_printf(f, " %s", c->version);
    }
    size_t nshards = c->ok ? c->nshards : 0;
    if (c->ok && !isnan(c->shards_gauge) && c->shards_gauge >= 0 && c->shards_gauge < 1e6)
        nshards = (size_t)c->shards_gauge;
    fr_printf(f, "  %s  shards %s  rss %s  %s  interval %gs\n", v->target->display,
              c->ok ? fmt_int((char[CELL]){0}, (double)nshards) : "-",
              fmt_bytes(rss, c->ok ? c->rss_bytes : NAN), tbuf, v->delay_s);

    /* The status line: only when there is something to say. */
    size_t status_start = f->len;
    if (v->error) {
        fr_style(f, ST_ALERT);
        fr_printf(f, "disconnected, retrying: %s", v->error);
        fr_style(f, ST_RESET);
        if (c->ok)
            fr_printf(f, "  (showing the last data)");
    } else if (c->ok && c->keel_samples == 0) {
        fr_style(f, ST_ALERT);
        fr_printf(f, "no keel_* metrics at %s%s — is this a keel app's metrics port?",
                  v->target->display, v->target->path);
        fr_style(f, ST_RESET);
    } else if (c->ok && (!v->prev || !v->prev->ok)) {
        fr_printf(f, "rates appear after the second scrape");
    }
    if (c->ok && c->bad_lines)
        fr_printf(f, "%s(%zu malformed line%s ignored)", f->len > status_start ? "  " : "",
                  c->bad_lines, c->bad_lines == 1 ? "" : "s");
    if (v->interactive) {
        if (f->len > status_start)
            fr_printf(f, "  ");
        fr_style(f, ST_DIM);
        fr_printf(f, "q: quit  space: refresh");
        fr_style(f, ST_RESET);
    }
    fr_printf(f, f->len > status_start ? "\n\n" : "\n");
}

struct shard_row {
    double r[S_COUNT]; /* rates for counters, values for gauges */
    double stalls, stalls_delta;
};

static void shard_row_compute(const struct shard *s, const struct shard *p, double dt_s,
                              struct shard_row *row)
{
    for (int i = 0; i < S_CONNS; i++)
        row->r[i] = p ? rate(s->v[i], p->v[i], dt_s) : NAN;
    for (int i = S_CONNS; i < S_COUNT; i++)
        row->r[i] = s->v[i];
    if (!isnan(row->r[S_INLINE]))
        row->r[S_TASKS] += row->r[S_INLINE];
    /* CPU and sleep time per second of wall time, as percentages. */
    row->r[S_CPU] *= 100;
    row->r[S_SLEEP] *= 100;
    row->stalls = s->v[S_STALLS];
    row->stalls_delta = p ? delta(s->v[S_STALLS], p->v[S_STALLS]) : NAN;
}

static void render_shard_row(struct frame *f, const char *label, const struct shard_row *row)
{
    char c[S_COUNT][CELL], stalls[2 * CELL + 8];
    fr_printf(f, "%5s %6s %6s %8s %8s %8s %9s %9s %8s %7s %8s", label,
              fmt_pct(c[S_CPU], row->r[S_CPU]), fmt_pct(c[S_SLEEP], row->r[S_SLEEP]),
              fmt_count(c[S_TASKS], row->r[S_TASKS]), fmt_count(c[S_TURNS], row->r[S_TURNS]),
              fmt_count(c[S_IO_SUB], row->r[S_IO_SUB]), fmt_count(c[S_IO_COMP], row->r[S_IO_COMP]),
              fmt_count(c[S_MSG_OUT], row->r[S_MSG_OUT]), fmt_count(c[S_MSG_IN], row->r[S_MSG_IN]),
              fmt_int(c[S_CONNS], row->r[S_CONNS]), fmt_bytes(c[S_MEM], row->r[S_MEM]));
    bool grew = !isnan(row->stalls_delta) && row->stalls_delta > 0;
    char d[CELL];
    if (grew)
        snprintf(stalls, sizeof stalls, "%s(+%s)", fmt_int(c[S_STALLS], row->stalls),
                 fmt_int(d, row->stalls_delta));
    else
        snprintf(stalls, sizeof stalls, "%s", fmt_int(c[S_STALLS], row->stalls));
    fr_printf(f, " ");
    if (grew)
        fr_style(f, ST_ALERT);
    fr_printf(f, "%10s", stalls);
    if (grew)
        fr_style(f, ST_RESET);
    fr_printf(f, " %9s %9s\n", fmt_bytes(c[S_NET_RX], row->r[S_NET_RX]),
              fmt_bytes(c[S_NET_TX], row->r[S_NET_TX]));
}

/* NAN-aware sum for the totals row: the sum of the values present, or NAN
 * when none is. */
static void add_present(double *sum, double v)
{
    if (isnan(v))
        return;
    *sum = isnan(*sum) ? v : *sum + v;
}

static void render_shards(struct frame *f, const struct view *v, double dt_s)
{
    const struct snapshot *c = v->cur;
    const struct snapshot *p = v->prev && v->prev->ok ? v->prev : NULL;
    fr_style(f, ST_HEAD);
    fr_printf(f, "%5s %6s %6s %8s %8s %8s %9s %9s %8s %7s %8s %10s %9s %9s", "SHARD", "CPU%",
              "SLEEP%", "TASKS/s", "TURNS/s", "IO-SUB/s", "IO-DONE/s", "MSG-OUT/s", "MSG-IN/s",
              "CONNS", "MEM", "STALLS", "NET-RX/s", "NET-TX/s");
    fr_style(f, ST_RESET);
    fr_printf(f, "\n");
    if (c->nshards == 0) {
        fr_printf(f, "%5s  (no per-shard metrics)\n", "-");
        return;
    }
    struct shard_row total;
    for (int i = 0; i < S_COUNT; i++)
        total.r[i] = NAN;
    total.stalls = total.stalls_delta = NAN;
    size_t hint = 0;
    for (size_t i = 0; i < c->nshards; i++) {
        const struct shard *s = &c->shards[i];
        struct shard_row row;
        shard_row_compute(s, p ? shard_find(p, s->id, &hint) : NULL, dt_s, &row);
        char label[CELL];
        snprintf(label, sizeof label, "%u", s->id);
        render_shard_row(f, label, &row);
        for (int k = 0; k < S_COUNT; k++)
            add_present(&total.r[k], row.r[k]);
        add_present(&total.stalls, row.stalls);
        add_present(&total.stalls_delta, row.stalls_delta);
    }
    if (c->nshards > 1) {
        fr_style(f, ST_BOLD);
        render_shard_row(f, "all", &total);
        fr_style(f, ST_RESET);
    }
}

static void render_groups(struct frame *f, const struct view *v, double dt_s)
{
    const struct snapshot *c = v->cur;
    const struct snapshot *p = v->prev && v->prev->ok ? v->prev : NULL;
    fr_printf(f, "\n");
    fr_style(f, ST_HEAD);
    fr_printf(f, "%5s %-16s %7s %9s %9s %8s %7s %9s", "SHARD", "GROUP", "SHARES", "CFG-SHARE",
              "GOT-SHARE", "TASKS/s", "QUEUE", "MEAN-WAIT");
    fr_style(f, ST_RESET);
    fr_printf(f, "\n");
    if (c->ngroups == 0) {
        fr_printf(f, "%5s  (no scheduling-group metrics)\n", "-");
        return;
    }
    /* Groups are sorted by shard: handle one shard's run at a time, since
     * shares and runtime are only comparable within a shard. */
    size_t hint = 0;
    for (size_t start = 0; start < c->ngroups;) {
        size_t end = start;
        while (end < c->ngroups && c->groups[end].shard == c->groups[start].shard)
            end++;
        double shares_all = 0, shares_ran = 0, run_total = 0;
        bool know_ran = false;
        for (size_t i = start; i < end; i++) {
            const struct group *g = &c->groups[i];
            const struct group *pg = p ? group_find(p, g->shard, g->name, &hint) : NULL;
            double rd = pg ? delta(g->v[G_RUNTIME], pg->v[G_RUNTIME]) : NAN;
            double sh = g->v[G_SHARES];
            bool sh_ok = !isnan(sh) && !isinf(sh) && sh > 0;
            if (sh_ok)
                shares_all += sh;
            if (!isnan(rd)) {
                know_ran = true;
                run_total += rd;
                if (rd > 0 && sh_ok)
                    shares_ran += sh;
            }
        }
        /* The configured share is among the groups that competed in the
         * interval; with none running (or no interval yet), among all. */
        double denom = shares_ran > 0 ? shares_ran : shares_all;
        for (size_t i = start; i < end; i++) {
            const struct group *g = &c->groups[i];
            const struct group *pg = p ? group_find(p, g->shard, g->name, &hint) : NULL;
            double rd = pg ? delta(g->v[G_RUNTIME], pg->v[G_RUNTIME]) : NAN;
            bool idle = know_ran && shares_ran > 0 && !(rd > 0);
            char cells[6][CELL], cfg[CELL];
            double sh = g->v[G_SHARES];
            if (idle)
                snprintf(cfg, sizeof cfg, "idle");
            else
                fmt_pct(cfg, denom > 0 && sh > 0 && !isinf(sh) ? sh / denom * 100 : NAN);
            double wait_n = pg ? delta(g->v[G_WAIT_COUNT], pg->v[G_WAIT_COUNT]) : NAN;
            double wait_s = pg ? delta(g->v[G_WAIT_SUM], pg->v[G_WAIT_SUM]) : NAN;
            /* Names longer than the column end in '~'. */
            char name[17];
            size_t nlen = strlen(g->name);
            memcpy(name, g->name, nlen > 16 ? 15 : nlen);
            if (nlen > 16)
                name[15] = '~';
            name[nlen > 16 ? 16 : nlen] = '\0';
            fr_printf(f, "%5u %-16s %7s %9s %9s %8s %7s %9s\n", g->shard, name,
                      fmt_int(cells[0], g->v[G_SHARES]), cfg,
                      fmt_pct(cells[1], run_total > 0 ? rd / run_total * 100 : NAN),
                      fmt_count(cells[2], pg ? rate(g->v[G_TASKS], pg->v[G_TASKS], dt_s) : NAN),
                      fmt_int(cells[3], g->v[G_QUEUE]),
                      fmt_secs(cells[4], wait_n > 0 ? wait_s / wait_n : NAN));
        }
        start = end;
    }
}

static void render(struct frame *f, const struct view *v)
{
    f->len = 0;
    f->oom = false;
    render_header(f, v);
    if (!v->cur->ok)
        return;
    const struct snapshot *p = v->prev && v->prev->ok ? v->prev : NULL;
    double dt_s = p ? (double)(v->cur->t_ms - p->t_ms) / 1000.0 : 0;
    render_shards(f, v, dt_s);
    render_groups(f, v, dt_s);
}

/* ---- output ------------------------------------------------------------- */

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Appends one line to out, cut to `cols` visible columns. Escape sequences
 * (all of the form ESC [ ... m) take no column. Everything else in the frame
 * is printable ASCII (server strings are sanitized), so a byte is a column. */
static void clip_line(struct frame *out, const char *line, size_t len, int cols)
{
    int vis = 0;
    bool styled = false;
    for (size_t i = 0; i < len; i++) {
        if (line[i] == '\033') {
            size_t j = i;
            while (j < len && line[j] != 'm')
                j++;
            fr_printf(out, "%.*s", (int)(j + 1 - i), line + i);
            styled = true;
            i = j;
            continue;
        }
        unsigned char ch = (unsigned char)line[i];
        /* A UTF-8 continuation byte (of the em dash in messages) shares
         * the column of its lead byte. */
        bool cont = (ch & 0xc0) == 0x80;
        if (!cont && vis >= cols)
            continue; /* keep scanning, for escapes that reset the style */
        if (cont && vis > cols)
            continue;
        if (!cont)
            vis++;
        fr_printf(out, "%c", line[i]);
    }
    if (styled)
        fr_printf(out, "\033[0m");
}

/* Draws the frame over the previous one, cut to the terminal: home the
 * cursor, overwrite each line and clear its rest, then clear below. This
 * does not flicker the way clearing the whole screen first does. */
static void draw_tty(const struct frame *f, bool full_clear)
{
    struct winsize ws = {0};
    int cols = 80, rows = 24;
    if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0 && ws.ws_row > 0) {
        cols = ws.ws_col;
        rows = ws.ws_row;
    }
    struct frame out = {0};
    fr_printf(&out, "%s\033[H", full_clear ? "\033[2J" : "");
    const char *p = f->buf ? f->buf : "", *end = p + f->len;
    int row = 0;
    while (p < end && row < rows) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *eol = nl ? nl : end;
        if (row == rows - 1 && nl && nl + 1 < end) {
            /* More lines than rows: say so rather than scroll. */
            clip_line(&out, "\033[2m(more: enlarge the terminal)\033[0m",
                      strlen("\033[2m(more: enlarge the terminal)\033[0m"), cols);
            fr_printf(&out, "\033[K");
            row++;
            break;
        }
        clip_line(&out, p, (size_t)(eol - p), cols);
        row++;
        /* No newline after the last row: it would scroll the screen. */
        fr_printf(&out, row < rows ? "\033[K\r\n" : "\033[K");
        p = nl ? nl + 1 : end;
    }
    fr_printf(&out, "\033[J");
    if (!out.oom && write_all(STDOUT_FILENO, out.buf, out.len) < 0)
        quit_requested = 1; /* the terminal is gone */
    free(out.buf);
}

/* ---- the terminal ------------------------------------------------------- */

static struct termios saved_termios;
static volatile sig_atomic_t term_raw;         /* keys are read one at a time */
static volatile sig_atomic_t term_owned;       /* cursor hidden, screen ours */
static volatile sig_atomic_t redraw_requested; /* resized or resumed */

#define CURSOR_SHOW "\033[?25h"
#define CURSOR_HIDE "\033[?25l"

/* Async-signal-safe: also called from the SIGTSTP handler. */
static void term_restore(void)
{
    if (term_raw) {
        tcsetattr(STDIN_FILENO, TCSADRAIN, &saved_termios);
        term_raw = 0;
    }
    if (term_owned) {
        static const char s[] = "\033[0m" CURSOR_SHOW "\r\n";
        ssize_t r = write(STDOUT_FILENO, s, sizeof s - 1);
        (void)r;
        term_owned = 0;
    }
}

/* Async-signal-safe: also called from the SIGCONT handler. */
static void term_enter(bool keys)
{
    if (keys) {
        struct termios t = saved_termios;
        /* Keys without Enter and without echo; ISIG stays, so Ctrl-C and
         * Ctrl-Z keep working as signals. */
        t.c_lflag &= ~(tcflag_t)(ICANON | ECHO);
        t.c_cc[VMIN] = 1;
        t.c_cc[VTIME] = 0;
        if (tcsetattr(STDIN_FILENO, TCSADRAIN, &t) == 0)
            term_raw = 1;
    }
    ssize_t r = write(STDOUT_FILENO, CURSOR_HIDE, sizeof CURSOR_HIDE - 1);
    (void)r;
    term_owned = 1;
}

static bool term_keys; /* stdin is a terminal we read keys from */

static void on_quit_signal(int sig)
{
    (void)sig;
    quit_requested = 1;
}

static void on_winch(int sig)
{
    (void)sig;
    redraw_requested = 1;
}

static void on_tstp(int sig);

static void install(int sig, void (*fn)(int))
{
    struct sigaction sa = {0};
    sa.sa_handler = fn;
    sigemptyset(&sa.sa_mask);
    /* No SA_RESTART: a signal must interrupt poll() so it is seen now. */
    sigaction(sig, &sa, NULL);
}

/* Ctrl-Z: give the terminal back as it was, then stop for real. */
static void on_tstp(int sig)
{
    int saved = errno;
    term_restore();
    install(sig, SIG_DFL);
    raise(sig); /* blocked until this handler returns, then stops us */
    errno = saved;
}

/* fg: take the terminal again and redraw everything. */
static void on_cont(int sig)
{
    (void)sig;
    int saved = errno;
    term_enter(term_keys);
    install(SIGTSTP, on_tstp);
    redraw_requested = 2;
    errno = saved;
}

/* Reads pending keys. Returns true when the user asked to quit. */
static bool on_input(void *arg)
{
    bool *refresh = arg;
    if (term_keys) {
        struct pollfd pfd = {.fd = STDIN_FILENO, .events = POLLIN};
        while (poll(&pfd, 1, 0) > 0) {
            char keys[64];
            ssize_t n = read(STDIN_FILENO, keys, sizeof keys);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0) {
                /* The terminal went away: nobody is watching. */
                quit_requested = 1;
                break;
            }
            for (ssize_t i = 0; i < n; i++) {
                if (keys[i] == 'q' || keys[i] == 'Q' || keys[i] == 3 /* Ctrl-C */)
                    quit_requested = 1;
                else if ((keys[i] == ' ' || keys[i] == 12 /* Ctrl-L */) && refresh)
                    *refresh = true;
            }
        }
    }
    return quit_requested;
}

/* ---- main --------------------------------------------------------------- */

static void usage(FILE *out)
{
    fprintf(out,
            "usage: keel-top [options] HOST:PORT | PORT | [IPV6]:PORT | http://HOST:PORT/PATH\n"
            "\n"
            "A live view of a keel app, from the metrics it serves with --metrics-port:\n"
            "per shard, CPU busy and sleep %%, tasks, loop turns, I/O submitted and\n"
            "completed, cross-shard messages out and in per second, connections, memory,\n"
            "stalls (red when new ones happened), network bytes per second; per\n"
            "scheduling group, the shares configured, the CPU share configured vs achieved,\n"
            "tasks per second, queue length and mean queueing wait. PORT alone means\n"
            "127.0.0.1:PORT. The all row sums the shards (CPU%% and SLEEP%% reach 100\n"
            "per shard); \"-\" marks a metric the app does not export, or a rate not\n"
            "known yet.\n"
            "\n"
            "  -d, --delay SECONDS     time between refreshes (default 1; 0.1 to 3600)\n"
            "  -n, --iterations N      exit after N refreshes\n"
            "      --once              scrape twice, DELAY apart, print one plain-text\n"
            "                          snapshot and exit (for scripts); status 1 if the\n"
            "                          app cannot be reached\n"
            "  -h, --help              this help\n"
            "\n"
            "Keys: q quits, space refreshes now. When standard output is not a terminal,\n"
            "keel-top prints a plain snapshot every DELAY instead of redrawing.\n");
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct top {
    struct scrape_target target;
    double delay_s;
    long iterations; /* 0: forever */
    bool once;
    bool interactive; /* redraws a terminal */
    struct scrape_buf buf;
    struct snapshot snaps[2];
    int cur; /* index of the newest good snapshot in snaps (or an empty one) */
    bool have_prev;
    char error[512];
    bool failed; /* the last scrape failed; error says why */
    bool refresh_now;
    struct frame frame;
};

/* One scrape. Returns 0, -1 (t->error set) or -2 (the user quit). */
static int scrape_once(struct top *t)
{
    const char *body;
    size_t len;
    /* A slow server gets most of the interval but never less than two
     * seconds: loopback answers in microseconds, a loaded box in more. */
    int timeout_ms = (int)(t->delay_s * 1000 * 0.9);
    if (timeout_ms < 2000)
        timeout_ms = 2000;
    int r = scrape_get(&t->target, timeout_ms, t->interactive && term_keys ? STDIN_FILENO : -1,
                       on_input, &t->refresh_now, &t->buf, &body, &len, t->error, sizeof t->error);
    if (r == -2)
        return -2;
    if (r < 0) {
        t->failed = true;
        return -1;
    }
    int64_t when = now_ms();
    /* The older slot takes the new scrape; the previous good one becomes
     * the base for rates. */
    int next = t->snaps[t->cur].ok ? 1 - t->cur : t->cur;
    snapshot_fill(&t->snaps[next], body, len, when);
    t->have_prev = next != t->cur;
    t->cur = next;
    t->failed = false;
    return 0;
}

static void show(struct top *t)
{
    const struct snapshot *cur = &t->snaps[t->cur];
    const struct snapshot *prev = t->have_prev ? &t->snaps[1 - t->cur] : NULL;
    struct view v = {
        .target = &t->target,
        .cur = cur,
        .prev = prev,
        .error = t->failed ? t->error : NULL,
        .delay_s = t->delay_s,
        .interactive = t->interactive,
    };
    render(&t->frame, &v);
    if (t->frame.oom)
        return;
    if (t->interactive) {
        draw_tty(&t->frame, redraw_requested == 2);
    } else {
        fwrite(t->frame.buf, 1, t->frame.len, stdout);
        /* A reader that went away (keel-top | head) ends the run: SIGPIPE
         * is ignored so that a socket's cannot kill us mid-scrape. */
        if (fflush(stdout) == EOF)
            quit_requested = 1;
    }
}

/* Sleeps until deadline_ms, serving keys, resizes and signals. */
static void wait_until(struct top *t, int64_t deadline_ms)
{
    while (!quit_requested && !t->refresh_now) {
        if (redraw_requested) {
            show(t);
            redraw_requested = 0;
        }
        int64_t left = deadline_ms - now_ms();
        if (left <= 0)
            return;
        struct pollfd pfd = {.fd = t->interactive && term_keys ? STDIN_FILENO : -1,
                             .events = POLLIN};
        int n = poll(&pfd, 1, (int)left);
        if (n > 0)
            on_input(&t->refresh_now);
    }
}

static int parse_args(int argc, char **argv, struct top *t)
{
    static const struct option opts[] = {
        {"delay", required_argument, NULL, 'd'},
        {"iterations", required_argument, NULL, 'n'},
        {"once", no_argument, NULL, 'o'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    t->delay_s = 1.0;
    int c;
    while ((c = getopt_long(argc, argv, "d:n:h", opts, NULL)) != -1) {
        char *stop;
        switch (c) {
        case 'd':
            errno = 0;
            t->delay_s = strtod(optarg, &stop);
            if (stop == optarg || *stop || errno || !(t->delay_s >= 0.1 && t->delay_s <= 3600)) {
                fprintf(stderr, "keel-top: -d '%s': expected seconds between 0.1 and 3600\n",
                        optarg);
                return -1;
            }
            break;
        case 'n':
            errno = 0;
            t->iterations = strtol(optarg, &stop, 10);
            if (stop == optarg || *stop || errno || t->iterations < 1) {
                fprintf(stderr, "keel-top: -n '%s': expected a count of 1 or more\n", optarg);
                return -1;
            }
            break;
        case 'o': t->once = true; break;
        case 'h': usage(stdout); exit(0);
        default: fprintf(stderr, "keel-top: try 'keel-top --help'\n"); return -1;
        }
    }
    if (optind != argc - 1) {
        fprintf(stderr, "keel-top: %s; try 'keel-top --help'\n",
                optind >= argc ? "which app? give its metrics HOST:PORT" : "one address only");
        return -1;
    }
    char err[512];
    if (scrape_target_parse(argv[optind], &t->target, err, sizeof err) < 0) {
        fprintf(stderr, "keel-top: %s\n", err);
        return -1;
    }
    return 0;
}

static void cleanup(void)
{
    term_restore();
}

int main(int argc, char **argv)
{
    static struct top t; /* large; zeroed */
    if (parse_args(argc, argv, &t) < 0)
        return 2;
    for (int i = 0; i < 2; i++)
        snapshot_clear(&t.snaps[i]);
    int status = 0;

    if (t.once) {
        /* Two scrapes for rates; plain text, no escapes, whatever stdout is. */
        install(SIGINT, on_quit_signal);
        install(SIGTERM, on_quit_signal);
        if (scrape_once(&t) == 0) {
            wait_until(&t, now_ms() + (int64_t)(t.delay_s * 1000));
            if (!quit_requested && scrape_once(&t) == 0)
                show(&t);
        }
        if (quit_requested) {
            status = 130;
        } else if (t.failed) {
            fprintf(stderr, "keel-top: %s\n", t.error);
            status = 1;
        }
        goto out;
    }

    t.interactive = isatty(STDOUT_FILENO);
    t.frame.color = t.interactive;
    term_keys = t.interactive && isatty(STDIN_FILENO);
    if (tcgetattr(STDIN_FILENO, &saved_termios) < 0)
        term_keys = false;
    install(SIGINT, on_quit_signal);
    install(SIGTERM, on_quit_signal);
    install(SIGHUP, on_quit_signal);
    signal(SIGPIPE, SIG_IGN);
    if (t.interactive) {
        atexit(cleanup);
        term_enter(term_keys);
        install(SIGWINCH, on_winch);
        install(SIGTSTP, on_tstp);
        install(SIGCONT, on_cont);
        redraw_requested = 2; /* the first frame clears the screen */
    }

    for (long frames = 0; !quit_requested;) {
        int64_t started = now_ms();
        t.refresh_now = false;
        if (scrape_once(&t) == -2)
            break;
        show(&t);
        redraw_requested = 0;
        if (!t.interactive && t.iterations != 1)
            fputc('\n', stdout); /* frames apart in a log */
        if (t.iterations && ++frames >= t.iterations)
            break;
        wait_until(&t, started + (int64_t)(t.delay_s * 1000));
    }
    if (t.failed && !t.interactive)
        status = 1;
out:
    term_restore();
    snapshot_free(&t.snaps[0]);
    snapshot_free(&t.snaps[1]);
    scrape_buf_free(&t.buf);
    free(t.frame.buf);
    return status;
}
