/* The stall detector: reports a task that holds its shard past a threshold.
 *
 * The loop counts progress (each task, completion and message it runs) and
 * flags the time it waits in the kernel; each costs a store. Each shard
 * has a timer on its own thread's CPU-time clock (timer_create on
 * pthread_getcpuclockid, delivered to that thread with SIGEV_THREAD_ID),
 * so the timer ticks only while the shard burns CPU: an idle shard gets no
 * signals at all, a busy one a few hundred a second at most. The handler
 * notes when the count last moved; once it has stood still past the
 * threshold it reports the stall once (one count, one report), with a backtrace of where the shard
 * is now, taken in the handler and written with async-signal-safe calls only. Reports are
 * rate-limited per shard; every stall is counted. */
#include <errno.h>
#include <execinfo.h>
#include <signal.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#define REPORTS_PER_WINDOW 10
#define REPORT_WINDOW_NS (60 * 1000000000ull)
#define MAX_FRAMES 32

static uint64_t g_threshold_ns; /* 0: off */
static uint64_t g_tick_ns;
static long g_gmtoff; /* the local time zone's offset, taken at start */
static int g_signo;

/* ---- async-signal-safe formatting ------------------------------------------ */

typedef struct sbuf {
    char b[512];
    size_t n;
} sbuf;

static void put_str(sbuf *o, const char *str)
{
    while (*str && o->n < sizeof(o->b) - 1)
        o->b[o->n++] = *str++;
}

static void put_uint(sbuf *o, uint64_t v, int width)
{
    char tmp[24];
    int k = 0;
    do {
        tmp[k++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (k < width)
        tmp[k++] = '0';
    while (k && o->n < sizeof(o->b) - 1)
        o->b[o->n++] = tmp[--k];
}

/* "YYYY-MM-DD HH:MM:SS.mmm" in local time, as keel__log writes it, from
 * civil-date arithmetic (localtime_r is not async-signal-safe). */
static void put_time(sbuf *o)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t t = (int64_t)ts.tv_sec + g_gmtoff;
    int64_t days = t / 86400, secs = t % 86400;
    /* Howard Hinnant's days_from_civil, inverted. */
    int64_t z = days + 719468, era = z / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    int64_t d = doy - (153 * mp + 2) / 5 + 1;
    int64_t m = mp < 10 ? mp + 3 : mp - 9;
    int64_t y = yoe + era * 400 + (m <= 2);
    put_uint(o, (uint64_t)y, 4);
    put_str(o, "-");
    put_uint(o, (uint64_t)m, 2);
    put_str(o, "-");
    put_uint(o, (uint64_t)d, 2);
    put_str(o, " ");
    put_uint(o, (uint64_t)(secs / 3600), 2);
    put_str(o, ":");
    put_uint(o, (uint64_t)(secs / 60 % 60), 2);
    put_str(o, ":");
    put_uint(o, (uint64_t)(secs % 60), 2);
    put_str(o, ".");
    put_uint(o, (uint64_t)ts.tv_nsec / 1000000, 3);
}

static void write_all(const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(STDERR_FILENO, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;
        p += w;
        n -= (size_t)w;
    }
}

/* ---- the handler -------------------------------------------------------------- */

__attribute__((noinline)) static void report(keel__shard *s, uint64_t held_ns)
{
    sbuf o = {.n = 0};
    put_time(&o);
    put_str(&o, " keel[");
    put_uint(&o, s->id, 1);
    put_str(&o, "]: stall: shard ");
    put_uint(&o, s->id, 1);
    put_str(&o, " (cpu ");
    put_uint(&o, (uint64_t)s->cpu, 1);
    put_str(&o, "), group ");
    put_str(&o, keel_sched_group_name(keel_sched_group_at(s->cur_group)));
    put_str(&o, ": a task has held the CPU for at least ");
    put_uint(&o, held_ns / 1000000, 1);
    put_str(&o, " ms (threshold ");
    put_uint(&o, g_threshold_ns / 1000000, 1);
    put_str(&o, " ms); it should poll keel_need_preempt() and yield, or move blocking work "
                "to keel_run_blocking()");
    if (s->stats.stall_reports_suppressed) {
        put_str(&o, "; ");
        put_uint(&o, s->stats.stall_reports_suppressed, 1);
        put_str(&o, " earlier reports suppressed");
    }
    put_str(&o, "; backtrace:\n");
    write_all(o.b, o.n);
    void *frames[MAX_FRAMES];
    int n = backtrace(frames, MAX_FRAMES);
    /* Frame 0 is this function's caller chain inside the handler, then the
     * kernel's signal trampoline: skip to the interrupted code. */
    int skip = 3 < n ? 3 : n;
    backtrace_symbols_fd(frames + skip, n - skip, STDERR_FILENO);
}

static void on_tick(int signo, siginfo_t *si, void *uc)
{
    (void)signo;
    (void)si;
    (void)uc;
    int saved_errno = errno;
    keel__shard *s = keel__self;
    if (!s)
        goto out;
    uint64_t seq = s->stall_seq;
    if (s->stall_asleep)
        goto out;
    uint64_t now = keel__clock_ns();
    if (seq != s->stall_seen_seq) {
        /* Progress since the last tick: whatever runs now started after
         * it, and has run at least from now on. */
        s->stall_seen_seq = seq;
        s->stall_seen_ns = now;
        goto out;
    }
    /* No progress since stall_seen_ns: one unit of work has held the CPU
     * at least that long. Never a false report; seen up to a tick late. */
    if (seq == s->stall_reported_seq || now - s->stall_seen_ns < g_threshold_ns)
        goto out;
    uint64_t held = now - s->stall_seen_ns;
    s->stall_reported_seq = seq; /* one report per stall */
    s->stats.stalls++;
    if (now - s->stall_window_start_ns >= REPORT_WINDOW_NS) {
        s->stall_window_start_ns = now;
        s->stall_window_reports = 0;
    }
    if (s->stall_window_reports >= REPORTS_PER_WINDOW) {
        s->stats.stall_reports_suppressed++;
        goto out;
    }
    s->stall_window_reports++;
    report(s, held);
    s->stats.stall_reports_suppressed = 0;
out:
    errno = saved_errno;
}

/* ---- setup --------------------------------------------------------------------- */

int keel__stall_setup(const keel_config *c)
{
    g_threshold_ns = (uint64_t)c->stall_threshold_ms * 1000000ull;
    if (!g_threshold_ns)
        return 0;
    /* A quarter of the threshold: a stall is seen at most 25% late. */
    g_tick_ns = g_threshold_ns / 4;
    if (g_tick_ns < 1000000)
        g_tick_ns = 1000000;
    time_t t = time(NULL);
    struct tm tm;
    localtime_r(&t, &tm);
    g_gmtoff = tm.tm_gmtoff;
    /* backtrace() loads the unwinder on first use, which is not safe in a
     * signal handler: load it now. */
    void *warm[2];
    backtrace(warm, 2);
    g_signo = SIGRTMIN + 2;
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = on_tick;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (sigaction(g_signo, &sa, NULL)) {
        keel__log("stall detector off: sigaction failed: %s", strerror(errno));
        g_threshold_ns = 0;
    }
    return 0;
}

void keel__stall_shard_init(keel__shard *s)
{
    if (!g_threshold_ns)
        return;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, g_signo);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
    clockid_t clock;
    int err = pthread_getcpuclockid(pthread_self(), &clock);
    if (err) {
        keel__log("stall detector off on this shard: pthread_getcpuclockid: %s", strerror(err));
        return;
    }
    struct sigevent ev;
    memset(&ev, 0, sizeof(ev));
    ev.sigev_notify = SIGEV_THREAD_ID;
    ev.sigev_signo = g_signo;
    ev._sigev_un._tid = (pid_t)syscall(SYS_gettid);
    timer_t timer;
    if (timer_create(clock, &ev, &timer)) {
        keel__log("stall detector off on this shard: timer_create: %s", strerror(errno));
        return;
    }
    struct itimerspec its = {
        .it_interval = {.tv_sec = (time_t)(g_tick_ns / 1000000000ull),
                        .tv_nsec = (long)(g_tick_ns % 1000000000ull)},
    };
    its.it_value = its.it_interval;
    if (timer_settime(timer, 0, &its, NULL)) {
        keel__log("stall detector off on this shard: timer_settime: %s", strerror(errno));
        timer_delete(timer);
        return;
    }
    s->stall_timer = timer;
    s->stall_timer_ok = true;
}

void keel__stall_shard_fini(keel__shard *s)
{
    if (!s->stall_timer_ok)
        return;
    timer_delete((timer_t)s->stall_timer);
    s->stall_timer_ok = false;
}
