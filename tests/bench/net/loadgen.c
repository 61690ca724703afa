/* bench-loadgen: a closed-loop TCP echo load generator for keel's benchmarks,
 * independent of keel so that it measures keel and its peers alike.
 *
 * Load mode: every connection keeps --pipeline requests of --size bytes in
 * flight; a request completes when that many echoed bytes have come back.
 * The bytes sent are a pseudo-random pattern read at a per-connection
 * offset, so an echo that is short, long, reordered or crossed with another
 * connection's is caught (errors=). Latency runs from the send of a request
 * to the arrival of its last byte. Only the window after --warmup counts;
 * with --server-pid, the server's CPU time (utime+stime of /proc/PID/stat)
 * is read at the exact edges of that window, which a driver script polling
 * for a "warm-up done" line could only approximate.
 *
 * Idle mode (--idle N): open N connections, echo one byte on each so the
 * server has really accepted and served every one, print "idle: N
 * connected", hold them until SIGTERM/SIGINT or --duration, close them.
 *
 * Everything is bounded in time: connecting has a deadline and an alarm
 * ends the process if anything overruns. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "cpulist.h"

#define MAX_THREADS 64
#define MAX_EVENTS 512
#define RBUF_SIZE (64 * 1024)
/* Sends and verifications work in pieces of at most CHUNK bytes, so any
 * piece starting anywhere in the pattern cycle lies inside pattern[]. */
#define CHUNK (64 * 1024)
/* Prime, so the cycle never lines up with a power-of-two request size. */
#define PATTERN_CYCLE 65521u
#define CONNECT_BURST 128

/* Latency histogram, log-linear: values below 256 ns have their own bucket,
 * above that each power of two is cut into 128 sub-buckets (error < 0.8%). */
#define HIST_SUB_BITS 7
#define HIST_BUCKETS (((64 - HIST_SUB_BITS) << HIST_SUB_BITS) + (2 << HIST_SUB_BITS))

static inline unsigned hist_bucket(uint64_t ns)
{
    if (ns < (2u << HIST_SUB_BITS))
        return (unsigned)ns;
    unsigned msb = 63u - (unsigned)__builtin_clzll(ns);
    unsigned shift = msb - HIST_SUB_BITS;
    return (shift << HIST_SUB_BITS) + (unsigned)(ns >> shift);
}

static double hist_value_ns(unsigned b)
{
    if (b < (2u << HIST_SUB_BITS))
        return b;
    unsigned shift = (b >> HIST_SUB_BITS) - 1;
    uint64_t m = b - ((uint64_t)shift << HIST_SUB_BITS);
    /* The middle of the bucket. */
    return (double)(m << shift) + (double)(1ull << shift) / 2;
}

struct opts {
    const char *host;
    int port;
    int conns;
    size_t size;
    int pipeline;
    double duration_s, warmup_s, connect_timeout_s;
    int threads;
    int cpus[MAX_THREADS];
    int ncpus;
    int idle;
    bool idle_ping;
    int server_pid;
};

struct conn {
    int fd;
    bool want_out; /* EPOLLOUT registered: a send came back short */
    bool dead;
    uint32_t seed;       /* this connection's offset into the pattern */
    uint64_t tx_issued;  /* bytes of all requests issued so far */
    uint64_t tx_sent;    /* of which written to the socket */
    uint64_t rx;         /* bytes echoed back and verified */
    uint64_t req_issued; /* requests issued; req_done completed */
    uint64_t req_done;
    uint64_t *sent_ns; /* ring of --pipeline send times */
};

struct worker {
    int id, cpu;
    int ep;
    pthread_t th;
    struct conn *conns;
    int nconns;
    char *rbuf;
    uint64_t ops;
    uint64_t mismatches, resets;
    uint64_t hist[HIST_BUCKETS];
};

enum { PHASE_WARMUP, PHASE_MEASURE, PHASE_STOP };

static struct opts o = {
    .host = "127.0.0.1",
    .conns = 50,
    .size = 64,
    .pipeline = 1,
    .duration_s = 10,
    .warmup_s = 1,
    .connect_timeout_s = 20,
    .threads = 1,
    .idle_ping = true,
    .server_pid = 0,
};
static struct sockaddr_in server_addr;
static unsigned char pattern[PATTERN_CYCLE + CHUNK];
static _Atomic int phase = PHASE_WARMUP;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void fatal(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("loadgen: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static void on_alarm(int sig)
{
    (void)sig;
    static const char msg[] = "loadgen: overran its time bound; giving up\n";
    ssize_t r = write(2, msg, sizeof(msg) - 1);
    (void)r;
    _exit(1);
}

static void pin_self(int cpu)
{
    if (cpu < 0)
        return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    int err = pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
    if (err)
        fatal("pinning a thread to CPU %d: %s", cpu, strerror(err));
}

/* utime+stime of a process in clock ticks, or -1. */
static long long proc_cpu_ticks(int pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = 0;
    /* comm (field 2) may hold spaces and parentheses: count from its end. */
    char *p = strrchr(buf, ')');
    if (!p)
        return -1;
    p++;
    unsigned long long v[2];
    /* fields 3..15: state is %*s, then ten numbers we skip, utime, stime */
    if (sscanf(p, " %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %llu %llu", &v[0], &v[1]) != 2)
        return -1;
    return (long long)(v[0] + v[1]);
}

static double self_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

/* Busy ticks of the whole machine (all CPUs; steal counts as busy: it is
 * time we did not get), or -1. */
static long long system_busy_ticks(void)
{
    FILE *f = fopen("/proc/stat", "r");
    if (!f)
        return -1;
    unsigned long long v[8] = {0};
    int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                   &v[4], &v[5], &v[6], &v[7]);
    fclose(f);
    if (n < 8)
        return -1;
    /* user nice system idle iowait irq softirq steal */
    return (long long)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]);
}

static void fill_pattern(void)
{
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (size_t i = 0; i < PATTERN_CYCLE; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        pattern[i] = (unsigned char)(x >> 24);
    }
    /* The tail repeats the cycle (CHUNK > cycle, so byte by byte). */
    for (size_t i = PATTERN_CYCLE; i < sizeof(pattern); i++)
        pattern[i] = pattern[i - PATTERN_CYCLE];
}

static inline const unsigned char *pattern_at(const struct conn *c, uint64_t stream_off)
{
    return pattern + (c->seed + stream_off) % PATTERN_CYCLE;
}

/* ---- connecting ------------------------------------------------------------------ */

static bool retryable_connect_error(int err)
{
    /* A listener whose backlog is full, or one not yet listening, refuses or
     * stalls for a moment; a loopback out of ephemeral ports is final. */
    return err == EAGAIN || err == ECONNREFUSED || err == ETIMEDOUT || err == ECONNRESET ||
           err == EINTR;
}

/* Opens n connections to the server, at most CONNECT_BURST handshakes in
 * flight, retrying refused ones until the deadline. Exits on failure. */
static void connect_all(int *fds, int n)
{
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        fatal("epoll_create1: %s", strerror(errno));
    uint64_t deadline = now_ns() + (uint64_t)(o.connect_timeout_s * 1e9);
    int next = 0, inflight = 0, done = 0;
    uint64_t retries = 0;
    int last_err = 0;
    int *retry = malloc(sizeof(int) * (size_t)n); /* conn indexes to try again */
    int nretry = 0;
    if (!retry)
        fatal("out of memory");
    struct epoll_event evs[CONNECT_BURST];
    while (done < n) {
        if (now_ns() > deadline)
            fatal("only %d of %d connections established within %.0f s (last error: %s)", done, n,
                  o.connect_timeout_s, last_err ? strerror(last_err) : "none, handshakes stalled");
        while (inflight < CONNECT_BURST && (next < n || nretry > 0)) {
            int idx = nretry > 0 ? retry[--nretry] : next++;
            int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
            if (fd < 0)
                fatal("socket: %s (connection %d of %d)", strerror(errno), idx + 1, n);
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
            int r = connect(fd, (struct sockaddr *)&server_addr, sizeof(server_addr));
            if (r == 0) {
                fds[idx] = fd;
                done++;
                continue;
            }
            if (errno == EINPROGRESS) {
                struct epoll_event ev = {.events = EPOLLOUT, .data.u64 = (uint64_t)idx};
                fds[idx] = fd;
                if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0)
                    fatal("epoll_ctl: %s", strerror(errno));
                inflight++;
                continue;
            }
            int err = errno;
            close(fd);
            if (!retryable_connect_error(err))
                fatal("connect to %s:%d: %s (connection %d of %d)", o.host, o.port, strerror(err),
                      idx + 1, n);
            last_err = err;
            retries++;
            retry[nretry++] = idx;
            break; /* back off: the listener is not keeping up */
        }
        int m = epoll_wait(ep, evs, CONNECT_BURST, inflight ? 100 : 10);
        if (m < 0 && errno != EINTR)
            fatal("epoll_wait: %s", strerror(errno));
        for (int i = 0; i < m; i++) {
            int idx = (int)evs[i].data.u64;
            int fd = fds[idx], err = 0;
            socklen_t len = sizeof(err);
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
            epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
            inflight--;
            if (err == 0) {
                done++;
                continue;
            }
            close(fd);
            fds[idx] = -1;
            if (!retryable_connect_error(err))
                fatal("connect to %s:%d: %s (connection %d of %d)", o.host, o.port, strerror(err),
                      idx + 1, n);
            last_err = err;
            retries++;
            retry[nretry++] = idx;
        }
    }
    if (retries)
        fprintf(stderr, "loadgen: %d connections established after %llu retried connects\n", n,
                (unsigned long long)retries);
    free(retry);
    close(ep);
}

/* ---- load mode ------------------------------------------------------------------- */

static void set_interest(struct worker *w, struct conn *c, bool out)
{
    struct epoll_event ev = {.events = EPOLLIN | (out ? EPOLLOUT : 0), .data.ptr = c};
    if (epoll_ctl(w->ep, EPOLL_CTL_MOD, c->fd, &ev) < 0)
        fatal("epoll_ctl: %s", strerror(errno));
    c->want_out = out;
}

static void conn_fail(struct worker *w, struct conn *c, bool mismatch)
{
    /* A wrong echo is always the server's fault; a dropped connection is
     * not once we are stopping. */
    if (mismatch)
        w->mismatches++;
    else if (atomic_load_explicit(&phase, memory_order_relaxed) != PHASE_STOP)
        w->resets++;
    close(c->fd);
    c->dead = true;
}

/* Writes what has been issued and not yet written; false if the conn died. */
static bool conn_flush(struct worker *w, struct conn *c)
{
    while (c->tx_sent < c->tx_issued) {
        uint64_t left = c->tx_issued - c->tx_sent;
        size_t len = left < CHUNK ? (size_t)left : CHUNK;
        ssize_t s = send(c->fd, pattern_at(c, c->tx_sent), len, MSG_NOSIGNAL);
        if (s < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN) {
                if (!c->want_out)
                    set_interest(w, c, true);
                return true;
            }
            conn_fail(w, c, false);
            return false;
        }
        c->tx_sent += (uint64_t)s;
    }
    if (c->want_out)
        set_interest(w, c, false);
    return true;
}

/* Fills the pipeline up to --pipeline requests, all sent in one write. */
static bool conn_issue(struct worker *w, struct conn *c, uint64_t t)
{
    while (c->req_issued - c->req_done < (uint64_t)o.pipeline) {
        c->sent_ns[c->req_issued % (uint64_t)o.pipeline] = t;
        c->req_issued++;
        c->tx_issued += o.size;
    }
    return conn_flush(w, c);
}

static void conn_readable(struct worker *w, struct conn *c)
{
    ssize_t n = recv(c->fd, w->rbuf, RBUF_SIZE, 0);
    if (n <= 0) {
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        conn_fail(w, c, false); /* EOF or reset: the server dropped us */
        return;
    }
    uint64_t t = now_ns();
    if (c->rx + (uint64_t)n > c->tx_sent) {
        conn_fail(w, c, true); /* more came back than was sent */
        return;
    }
    for (size_t off = 0; off < (size_t)n;) {
        size_t piece = (size_t)n - off < CHUNK ? (size_t)n - off : CHUNK;
        if (memcmp(w->rbuf + off, pattern_at(c, c->rx + off), piece) != 0) {
            conn_fail(w, c, true);
            return;
        }
        off += piece;
    }
    c->rx += (uint64_t)n;
    uint64_t done = c->rx / o.size;
    int ph = atomic_load_explicit(&phase, memory_order_relaxed);
    for (; c->req_done < done; c->req_done++) {
        if (ph == PHASE_MEASURE) {
            uint64_t sent = c->sent_ns[c->req_done % (uint64_t)o.pipeline];
            w->hist[hist_bucket(t - sent)]++;
            w->ops++;
        }
    }
    if (ph != PHASE_STOP)
        conn_issue(w, c, t);
}

static void *load_worker(void *arg)
{
    struct worker *w = arg;
    pin_self(w->cpu);
    uint64_t t = now_ns();
    for (int i = 0; i < w->nconns; i++) {
        struct conn *c = &w->conns[i];
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(w->ep, EPOLL_CTL_ADD, c->fd, &ev) < 0)
            fatal("epoll_ctl: %s", strerror(errno));
        conn_issue(w, c, t);
    }
    struct epoll_event evs[MAX_EVENTS];
    /* After the stop, no new requests: let the ones in flight come back
     * (for a second at most) so that closing sends FINs, not the resets a
     * close with unread data would, which a server may log as errors. */
    uint64_t drain_end = 0;
    for (;;) {
        if (atomic_load_explicit(&phase, memory_order_relaxed) == PHASE_STOP) {
            uint64_t now = now_ns();
            if (!drain_end)
                drain_end = now + 1000000000u;
            bool busy = false;
            for (int i = 0; i < w->nconns && !busy; i++)
                busy = !w->conns[i].dead && w->conns[i].rx < w->conns[i].tx_issued;
            if (!busy || now > drain_end)
                break;
        }
        /* The timeout only bounds how late we notice the stop. */
        int n = epoll_wait(w->ep, evs, MAX_EVENTS, 10);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            fatal("epoll_wait: %s", strerror(errno));
        }
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (c->dead)
                continue;
            if ((evs[i].events & EPOLLOUT) && !conn_flush(w, c))
                continue;
            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
                conn_readable(w, c);
        }
    }
    for (int i = 0; i < w->nconns; i++)
        if (!w->conns[i].dead)
            close(w->conns[i].fd);
    return NULL;
}

/* Sleeps up to s seconds; returns true if SIGINT/SIGTERM arrived. */
static bool sleep_or_signal(double s, const sigset_t *sigs)
{
    uint64_t end = now_ns() + (uint64_t)(s * 1e9);
    for (;;) {
        uint64_t t = now_ns();
        if (t >= end)
            return false;
        struct timespec ts = {.tv_sec = (time_t)((end - t) / 1000000000u),
                              .tv_nsec = (long)((end - t) % 1000000000u)};
        int sig = sigtimedwait(sigs, NULL, &ts);
        if (sig == SIGINT || sig == SIGTERM)
            return true;
    }
}

static double percentile_us(const uint64_t *hist, uint64_t total, double q)
{
    if (total == 0)
        return 0;
    double exact = q * (double)total;
    uint64_t target = (uint64_t)exact; /* rounded up below: no libm needed */
    if ((double)target < exact)
        target++;
    if (target < 1)
        target = 1;
    uint64_t cum = 0;
    for (unsigned b = 0; b < HIST_BUCKETS; b++) {
        cum += hist[b];
        if (cum >= target)
            return hist_value_ns(b) / 1000.0;
    }
    return hist_value_ns(HIST_BUCKETS - 1) / 1000.0;
}

static int run_load(const sigset_t *sigs)
{
    int *fds = malloc(sizeof(int) * (size_t)o.conns);
    struct conn *conns = calloc((size_t)o.conns, sizeof(*conns));
    uint64_t *sent_ns = calloc((size_t)o.conns * (size_t)o.pipeline, sizeof(uint64_t));
    struct worker *ws = calloc((size_t)o.threads, sizeof(*ws));
    if (!fds || !conns || !sent_ns || !ws)
        fatal("out of memory");
    connect_all(fds, o.conns);

    /* Connection i goes to thread i % threads; each thread's are adjacent
     * in conns[] so one thread's hot data shares no cache line with another's. */
    int k = 0;
    for (int t = 0; t < o.threads; t++) {
        struct worker *w = &ws[t];
        w->id = t;
        w->cpu = o.ncpus ? o.cpus[t % o.ncpus] : -1;
        w->conns = &conns[k];
        for (int i = t; i < o.conns; i += o.threads) {
            struct conn *c = &conns[k];
            c->fd = fds[i];
            c->seed = (uint32_t)(((uint64_t)i * 40503u) % PATTERN_CYCLE);
            c->sent_ns = &sent_ns[(size_t)k * (size_t)o.pipeline];
            k++;
            w->nconns++;
        }
        w->rbuf = malloc(RBUF_SIZE);
        w->ep = epoll_create1(EPOLL_CLOEXEC);
        if (!w->rbuf || w->ep < 0)
            fatal("worker setup: %s", strerror(errno));
    }
    for (int t = 0; t < o.threads; t++) {
        int err = pthread_create(&ws[t].th, NULL, load_worker, &ws[t]);
        if (err)
            fatal("pthread_create: %s", strerror(err));
    }

    bool interrupted = o.warmup_s > 0 && sleep_or_signal(o.warmup_s, sigs);
    long long ticks0 = o.server_pid ? proc_cpu_ticks(o.server_pid) : 0;
    long long sys0 = system_busy_ticks(), own0 = proc_cpu_ticks(getpid());
    double self0 = self_cpu_s();
    uint64_t t0 = now_ns();
    atomic_store(&phase, PHASE_MEASURE);
    printf("loadgen: warmup done, measuring for %.1f s\n", o.duration_s);
    fflush(stdout);
    if (!interrupted)
        interrupted = sleep_or_signal(o.duration_s, sigs);
    /* Read the server's CPU before stopping: the stop itself is not its work. */
    long long ticks1 = o.server_pid ? proc_cpu_ticks(o.server_pid) : 0;
    long long sys1 = system_busy_ticks(), own1 = proc_cpu_ticks(getpid());
    uint64_t t1 = now_ns();
    double self1 = self_cpu_s();
    atomic_store(&phase, PHASE_STOP);
    for (int t = 0; t < o.threads; t++)
        pthread_join(ws[t].th, NULL);

    uint64_t ops = 0, mismatches = 0, resets = 0;
    static uint64_t hist[HIST_BUCKETS];
    for (int t = 0; t < o.threads; t++) {
        ops += ws[t].ops;
        mismatches += ws[t].mismatches;
        resets += ws[t].resets;
        for (unsigned b = 0; b < HIST_BUCKETS; b++)
            hist[b] += ws[t].hist[b];
    }
    double window_s = (double)(t1 - t0) / 1e9;
    uint64_t errors = mismatches + resets;
    printf("loadgen: ops=%llu ops_per_sec=%.0f p50_us=%.1f p99_us=%.1f p999_us=%.1f errors=%llu "
           "conns=%d\n",
           (unsigned long long)ops, (double)ops / window_s, percentile_us(hist, ops, 0.50),
           percentile_us(hist, ops, 0.99), percentile_us(hist, ops, 0.999),
           (unsigned long long)errors, o.conns);
    printf("loadgen: window_s=%.3f size=%zu pipeline=%d threads=%d mismatches=%llu resets=%llu "
           "self_cpu_pct=%.0f%s\n",
           window_s, o.size, o.pipeline, o.threads, (unsigned long long)mismatches,
           (unsigned long long)resets, 100 * (self1 - self0) / window_s,
           interrupted ? " interrupted=1" : "");
    if (o.server_pid) {
        if (ticks0 < 0 || ticks1 < 0) {
            fprintf(stderr, "loadgen: could not read /proc/%d/stat\n", o.server_pid);
            return 1;
        }
        long tck = sysconf(_SC_CLK_TCK);
        /* What neither the server nor we used of the machine: other
         * programs (a build next door) make every figure of the run noise. */
        long long other = sys1 - sys0 - (ticks1 - ticks0) - (own1 - own0);
        printf("loadgen: server_pid=%d server_cpu_ticks=%lld clk_tck=%ld "
               "server_cpu_us_per_op=%.3f other_cpu_pct=%.0f\n",
               o.server_pid, ticks1 - ticks0, tck,
               ops ? (double)(ticks1 - ticks0) * 1e6 / (double)tck / (double)ops : 0.0,
               sys0 < 0 || sys1 < 0 ? 0.0 : 100.0 * (double)other / (double)tck / window_s);
    }
    fflush(stdout);
    for (int t = 0; t < o.threads; t++) {
        close(ws[t].ep);
        free(ws[t].rbuf);
    }
    free(ws);
    free(sent_ns);
    free(conns);
    free(fds);
    if (errors || ops == 0) {
        fprintf(stderr, "loadgen: %s\n",
                errors ? "errors during the run" : "no operation completed");
        return 2;
    }
    return 0;
}

/* ---- idle mode ------------------------------------------------------------------- */

static int run_idle(const sigset_t *sigs)
{
    int n = o.idle;
    int *fds = malloc(sizeof(int) * (size_t)n);
    if (!fds)
        fatal("out of memory");
    uint64_t start = now_ns();
    connect_all(fds, n);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    int sfd = signalfd(-1, sigs, SFD_CLOEXEC);
    if (ep < 0 || sfd < 0)
        fatal("epoll/signalfd: %s", strerror(errno));
    struct epoll_event sev = {.events = EPOLLIN, .data.u64 = UINT64_MAX};
    epoll_ctl(ep, EPOLL_CTL_ADD, sfd, &sev);
    for (int i = 0; i < n; i++) {
        struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.u64 = (uint64_t)i};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev) < 0)
            fatal("epoll_ctl: %s", strerror(errno));
    }

    /* A connect completes once the kernel has queued it, before the server
     * accepts it; a one-byte echo proves the server holds every connection
     * and has done for each what a live one costs it. */
    struct epoll_event evs[MAX_EVENTS];
    if (o.idle_ping) {
        for (int i = 0; i < n; i++) {
            unsigned char b = (unsigned char)i;
            if (send(fds[i], &b, 1, MSG_NOSIGNAL) != 1)
                fatal("ping send on connection %d: %s", i + 1, strerror(errno));
        }
        char *answered = calloc((size_t)n, 1);
        if (!answered)
            fatal("out of memory");
        int got = 0;
        uint64_t deadline = now_ns() + (uint64_t)(o.connect_timeout_s * 1e9);
        while (got < n) {
            if (now_ns() > deadline)
                fatal("only %d of %d connections echoed a byte within %.0f s", got, n,
                      o.connect_timeout_s);
            int m = epoll_wait(ep, evs, MAX_EVENTS, 100);
            if (m < 0 && errno != EINTR)
                fatal("epoll_wait: %s", strerror(errno));
            for (int j = 0; j < m; j++) {
                if (evs[j].data.u64 == UINT64_MAX)
                    fatal("interrupted while connecting");
                int i = (int)evs[j].data.u64;
                unsigned char b;
                ssize_t r = recv(fds[i], &b, 1, 0);
                if (r < 0 && errno == EAGAIN)
                    continue;
                if (r != 1 || answered[i])
                    fatal("connection %d: %s", i + 1,
                          r == 0  ? "closed by the server"
                          : r < 0 ? strerror(errno)
                                  : "echoed too much");
                if (b != (unsigned char)i)
                    fatal("connection %d: echoed a wrong byte", i + 1);
                answered[i] = 1;
                got++;
            }
        }
        free(answered);
    }
    printf("idle: %d connected%s in %.2f s\n", n, o.idle_ping ? " and echoing" : "",
           (double)(now_ns() - start) / 1e9);
    fflush(stdout);

    /* Hold; any event on a connection now means the server dropped it. */
    int dropped = 0;
    uint64_t end = now_ns() + (uint64_t)(o.duration_s * 1e9);
    bool stop = false;
    while (!stop) {
        uint64_t t = now_ns();
        if (t >= end)
            break;
        uint64_t left_ms = (end - t) / 1000000u + 1;
        int m = epoll_wait(ep, evs, MAX_EVENTS, left_ms > 1000 ? 1000 : (int)left_ms);
        if (m < 0 && errno != EINTR)
            fatal("epoll_wait: %s", strerror(errno));
        for (int j = 0; j < m; j++) {
            if (evs[j].data.u64 == UINT64_MAX) {
                stop = true;
                continue;
            }
            int i = (int)evs[j].data.u64;
            epoll_ctl(ep, EPOLL_CTL_DEL, fds[i], NULL);
            dropped++;
        }
    }
    for (int i = 0; i < n; i++)
        close(fds[i]);
    close(ep);
    close(sfd);
    free(fds);
    printf("idle: closed %d connections; %d had been dropped by the server\n", n, dropped);
    fflush(stdout);
    return dropped ? 2 : 0;
}

/* ---- main ------------------------------------------------------------------------ */

static void usage(FILE *out)
{
    fprintf(out, "usage: bench-loadgen [options]\n"
                 "  --host IPV4          server address (default 127.0.0.1)\n"
                 "  --port P             server port (required)\n"
                 "  --conns N            connections (default 50)\n"
                 "  --size BYTES         request size (default 64)\n"
                 "  --pipeline D         requests in flight per connection (default 1)\n"
                 "  --duration S         measured seconds (default 10); in --idle mode, how long "
                 "to hold\n"
                 "  --warmup S           seconds before measuring (default 1)\n"
                 "  --threads T          event-loop threads (default 1)\n"
                 "  --cpu LIST           pin thread i to the i-th CPU of LIST (e.g. 1 or 0-1)\n"
                 "  --server-pid PID     also report the server's CPU time per operation\n"
                 "  --connect-timeout S  deadline to establish all connections (default 20)\n"
                 "  --idle N             open N idle connections instead, hold, close\n"
                 "  --no-ping            in --idle mode, do not verify each with a 1-byte echo\n"
                 "  --free-port          print a currently free TCP port on 127.0.0.1 and exit\n");
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) < 0)
        fatal("finding a free port: %s", strerror(errno));
    printf("%d\n", ntohs(a.sin_port));
    close(fd);
    return 0;
}

static double parse_num(const char *opt, const char *v, double min, double max)
{
    char *end;
    double d = strtod(v, &end);
    if (end == v || *end || d < min || d > max)
        fatal("bad value '%s' for %s (expected %g..%g)", v, opt, min, max);
    return d;
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(a, "--free-port"))
            return free_port();
        if (!strcmp(a, "--no-ping")) {
            o.idle_ping = false;
            continue;
        }
        if (i + 1 >= argc) {
            usage(stderr);
            fatal("option '%s' needs a value (or is unknown)", a);
        }
        const char *v = argv[++i];
        if (!strcmp(a, "--host"))
            o.host = v;
        else if (!strcmp(a, "--port"))
            o.port = (int)parse_num(a, v, 1, 65535);
        else if (!strcmp(a, "--conns"))
            o.conns = (int)parse_num(a, v, 1, 1 << 20);
        else if (!strcmp(a, "--size"))
            o.size = (size_t)parse_num(a, v, 1, 1 << 30);
        else if (!strcmp(a, "--pipeline"))
            o.pipeline = (int)parse_num(a, v, 1, 1 << 16);
        else if (!strcmp(a, "--duration"))
            o.duration_s = parse_num(a, v, 0.1, 86400);
        else if (!strcmp(a, "--warmup"))
            o.warmup_s = parse_num(a, v, 0, 3600);
        else if (!strcmp(a, "--threads"))
            o.threads = (int)parse_num(a, v, 1, MAX_THREADS);
        else if (!strcmp(a, "--server-pid"))
            o.server_pid = (int)parse_num(a, v, 1, 1 << 30);
        else if (!strcmp(a, "--connect-timeout"))
            o.connect_timeout_s = parse_num(a, v, 0.1, 3600);
        else if (!strcmp(a, "--idle"))
            o.idle = (int)parse_num(a, v, 1, 1 << 20);
        else if (!strcmp(a, "--cpu")) {
            o.ncpus = parse_cpus(v, o.cpus, MAX_THREADS);
            if (o.ncpus <= 0)
                fatal("bad CPU list '%s'", v);
        } else {
            usage(stderr);
            fatal("unknown option '%s'", a);
        }
    }
    if (!o.port) {
        usage(stderr);
        fatal("--port is required");
    }
    server_addr.sin_family = AF_INET;
    server_addr.sin_port = htons((uint16_t)o.port);
    if (inet_pton(AF_INET, o.host, &server_addr.sin_addr) != 1)
        fatal("bad IPv4 address '%s'", o.host);
    if (o.threads > o.conns && !o.idle)
        o.threads = o.conns;

    /* Thousands of connections need thousands of fds; the hard limit is ours. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
            fprintf(stderr, "loadgen: setrlimit(RLIMIT_NOFILE): %s\n", strerror(errno));
    }
    getrlimit(RLIMIT_NOFILE, &rl);
    rlim_t need = (rlim_t)(o.idle ? o.idle : o.conns) + 32;
    if (rl.rlim_cur < need)
        fatal("need %llu fds, RLIMIT_NOFILE allows %llu", (unsigned long long)need,
              (unsigned long long)rl.rlim_cur);

    /* Signals are taken synchronously (sigtimedwait, signalfd): block them
     * before threads exist so none of them is interrupted. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGALRM, on_alarm);
    /* The hard bound: connecting, pinging, warm-up, the run, and slack. */
    alarm((unsigned)(2 * o.connect_timeout_s + o.warmup_s + o.duration_s + 30));

    pin_self(o.ncpus ? o.cpus[0] : -1); /* connecting happens on the load CPU too */
    if (o.idle)
        return run_idle(&sigs);
    fill_pattern();
    return run_load(&sigs);
}
