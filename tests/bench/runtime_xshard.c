/* bench-runtime-xshard: cross-shard messaging between two shards on CPUs 0
 * and 1.
 *
 *   throughput    shard 0 keeps XS_WINDOW keel_submit_to(1, fn) in flight
 *                 (fn returns keel_make_ready), refilling as replies come
 *                 back; messages executed on shard 1 per second.
 *                 Peer: two threads on CPUs 0 and 1 with a mutex+condvar
 *                 queue each way (requests, replies), same window, batch
 *                 push and batch pop under the lock, condvar wait only when
 *                 empty, signal only when the other side waits.
 *   rtt-busy      one message at a time, shard 1 kept busy by a keel_repeat
 *                 loop of keel_yield() (it never sleeps); p50 and p99.
 *   rtt-sleeping  the same with shard 1 idle, so every message has to wake
 *                 it (IORING_OP_MSG_RING on io_uring).
 *                 Peer of both: eventfd ping-pong between threads on CPUs 0
 *                 and 1 (blocking read and write on two eventfds).
 *
 * Usage: bench-runtime-xshard [throughput] [rtt-busy] [rtt-sleeping]. */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <keel/keel.h>

#include "bench.h"

enum {
    XS_WINDOW = 4096, /* messages in flight in the throughput figure */
    XS_TICK = 255,    /* check the clock every 256 replies */
    RTT_MIN_SAMPLES = 20000,
};

static void keel_cfg(keel_config *c)
{
    keel_config_init(c);
    c->shards = 2;
    c->cpuset = "0-1";
    c->quiet = true;
    c->handle_signals = false; /* Ctrl-C ends the benchmark, not one run */
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

/* Messages executed on the target: written by that thread only, read by
 * the sender at the window's edges; alone on its cache line so the reads
 * are the only sharing. */
static struct {
    _Alignas(BENCH_CACHELINE) _Atomic uint64_t n;
    char pad[BENCH_CACHELINE - sizeof(uint64_t)];
} executed;

static inline void count_executed(void)
{
    uint64_t n = atomic_load_explicit(&executed.n, memory_order_relaxed);
    atomic_store_explicit(&executed.n, n + 1, memory_order_relaxed);
}

static inline uint64_t executed_now(void)
{
    return atomic_load_explicit(&executed.n, memory_order_relaxed);
}

/* ---- throughput: keel ------------------------------------------------------ */

typedef struct xs_bench {
    bench_window w;
    uint64_t sent, replies, exec0, exec1, exec_base;
    unsigned inflight;
    bool stopping;
    int err;
    keel_shard_stats st0[2], st1[2]; /* both shards, at the window's start and end */
} xs_bench;

static keel_future *xs_remote(void *arg)
{
    (void)arg;
    count_executed();
    return keel_make_ready(0);
}

static void xs_reply(void *ctx, keel_result r);

static void xs_send(xs_bench *b)
{
    b->sent++;
    b->inflight++;
    keel_on_done(keel_submit_to(1, xs_remote, NULL), xs_reply, b);
}

static void xs_snapshot(keel_shard_stats *st)
{
    keel_shard_stats_get(0, &st[0]);
    keel_shard_stats_get(1, &st[1]);
}

static void xs_reply(void *ctx, keel_result r)
{
    xs_bench *b = ctx;
    b->inflight--;
    b->replies++;
    if (r.err)
        b->err = r.err;
    if (!b->stopping && (b->replies & XS_TICK) == 0) {
        bool was_measuring = b->w.measuring;
        if (bench_window_tick(&b->w, b->replies)) {
            b->exec1 = executed_now();
            xs_snapshot(b->st1);
            b->stopping = true;
        } else if (!was_measuring && b->w.measuring) {
            b->exec0 = executed_now();
            xs_snapshot(b->st0);
        }
    }
    if (!b->stopping)
        xs_send(b);
    else if (b->inflight == 0)
        keel_stop(); /* every reply is back: nothing is in flight */
}

static void xs_main(void *arg)
{
    xs_bench *b = arg;
    bench_window_start(&b->w);
    for (unsigned i = 0; i < XS_WINDOW; i++)
        xs_send(b);
}

static int keel_throughput(void *ctx, double *out)
{
    (void)ctx;
    xs_bench b;
    memset(&b, 0, sizeof(b));
    b.exec_base = executed_now();
    if (keel_run_checked(xs_main, &b))
        return -1;
    if (b.err || !b.w.done) {
        printf("# keel xshard_throughput: %s\n", b.err ? keel_strerror(b.err) : "did not finish");
        return -1;
    }
    /* Each message must run exactly once and come back once. */
    uint64_t ran = executed_now() - b.exec_base;
    if (ran != b.sent || b.replies != b.sent) {
        printf("# keel xshard_throughput: %llu messages sent, %llu executed, %llu replies: "
               "messages were lost or run twice\n",
               (unsigned long long)b.sent, (unsigned long long)ran, (unsigned long long)b.replies);
        return -1;
    }
    double msgs = (double)(b.exec1 - b.exec0);
    out[0] = msgs / ((double)b.w.elapsed_ns / 1e9);
    /* Where a message's cost goes: loop turns and kernel entries per
     * message on each side, and how many sleeps (and wake-ups) it took. */
    for (int s = 0; s < 2; s++) {
        keel_shard_stats *a = &b.st0[s], *z = &b.st1[s];
        bench_note("keel shard %d: %.1f msgs/turn, %.1f msgs/kernel entry, sleeps=%llu "
                   "wakeups_sent=%llu, msgs in=%llu out=%llu",
                   s, msgs / (double)(z->loop_turns - a->loop_turns + 1),
                   msgs / (double)(z->enter_calls - a->enter_calls + 1),
                   (unsigned long long)(z->sleeps - a->sleeps),
                   (unsigned long long)(z->wakeups_sent - a->wakeups_sent),
                   (unsigned long long)(z->msgs_received - a->msgs_received),
                   (unsigned long long)(z->msgs_sent - a->msgs_sent));
    }
    return 0;
}

/* ---- throughput: peer (mutex + condvar queues) --------------------------------- */

typedef struct pmsg {
    int64_t (*fn)(void *arg);
    void *arg;
    int64_t result;
} pmsg;

/* A bounded FIFO of message pointers. The window bounds what is in
 * flight, so a push never finds it full. */
typedef struct mcq {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    uint32_t head, tail;
    bool waiting;                 /* the consumer sleeps on cond: the pusher must signal */
    uint64_t pops, popped, waits; /* context: batch sizes and sleeps */
    pmsg *ring[XS_WINDOW * 2];
} mcq;

#define MCQ_MASK (XS_WINDOW * 2 - 1)

static void mcq_init(mcq *q)
{
    pthread_mutex_init(&q->lock, NULL);
    pthread_cond_init(&q->cond, NULL);
    q->head = q->tail = 0;
    q->waiting = false;
    q->pops = q->popped = q->waits = 0;
}

static void mcq_destroy(mcq *q)
{
    pthread_mutex_destroy(&q->lock);
    pthread_cond_destroy(&q->cond);
}

static void mcq_push(mcq *q, pmsg *const *ms, unsigned n)
{
    pthread_mutex_lock(&q->lock);
    for (unsigned i = 0; i < n; i++)
        q->ring[q->tail++ & MCQ_MASK] = ms[i];
    bool wake = q->waiting;
    pthread_mutex_unlock(&q->lock);
    /* The waiter set `waiting` under the lock and sleeps atomically with
     * releasing it, so a signal after unlocking cannot be lost; and
     * signalling only a waiter keeps futex calls off the busy path. */
    if (wake)
        pthread_cond_signal(&q->cond);
}

/* Takes everything queued (up to max), waiting only while it is empty. */
static unsigned mcq_pop_all(mcq *q, pmsg **out, unsigned max)
{
    pthread_mutex_lock(&q->lock);
    while (q->head == q->tail) {
        q->waiting = true;
        q->waits++;
        pthread_cond_wait(&q->cond, &q->lock);
        q->waiting = false;
    }
    unsigned n = 0;
    while (q->head != q->tail && n < max)
        out[n++] = q->ring[q->head++ & MCQ_MASK];
    q->pops++;
    q->popped += n;
    pthread_mutex_unlock(&q->lock);
    return n;
}

typedef struct peer_xs {
    mcq req, rep;
    bool per_msg; /* one lock hold per push and per pop, the textbook queue */
    pmsg msgs[XS_WINDOW];
    pmsg *batch_p[XS_WINDOW + 1], *batch_c[XS_WINDOW + 1];
    bench_window w;
    uint64_t replies, results, exec0, exec1;
} peer_xs;

static void peer_push(peer_xs *p, mcq *q, pmsg *const *ms, unsigned n)
{
    if (!p->per_msg) {
        mcq_push(q, ms, n);
        return;
    }
    for (unsigned i = 0; i < n; i++)
        mcq_push(q, &ms[i], 1);
}

static int64_t peer_remote(void *arg)
{
    (void)arg;
    count_executed();
    return 1;
}

static void *peer_xs_consumer(void *arg)
{
    peer_xs *p = arg;
    for (;;) {
        unsigned n = mcq_pop_all(&p->req, p->batch_c, p->per_msg ? 1 : XS_WINDOW + 1);
        for (unsigned i = 0; i < n; i++) {
            pmsg *m = p->batch_c[i];
            if (!m)
                return NULL; /* the producer's stop mark, sent once all replies are in */
            m->result = m->fn(m->arg);
        }
        peer_push(p, &p->rep, p->batch_c, n);
    }
}

static void *peer_xs_producer(void *arg)
{
    peer_xs *p = arg;
    bench_window_start(&p->w);
    for (unsigned i = 0; i < XS_WINDOW; i++) {
        p->msgs[i] = (pmsg){peer_remote, NULL, 0};
        p->batch_p[i] = &p->msgs[i];
    }
    peer_push(p, &p->req, p->batch_p, XS_WINDOW);
    unsigned inflight = XS_WINDOW;
    bool stopping = false;
    while (inflight) {
        unsigned n = mcq_pop_all(&p->rep, p->batch_p, p->per_msg ? 1 : XS_WINDOW);
        /* Read each result, as keel's sender does: a reply is for its
         * sender to look at, and that costs a cache miss here too. */
        for (unsigned i = 0; i < n; i++)
            p->results += p->batch_p[i]->result;
        uint64_t before = p->replies;
        p->replies += n;
        inflight -= n;
        /* The clock is read as often as keel's side reads it. */
        if (!stopping && (before | XS_TICK) < p->replies) {
            bool was_measuring = p->w.measuring;
            if (bench_window_tick(&p->w, p->replies)) {
                p->exec1 = executed_now();
                stopping = true;
            } else if (!was_measuring && p->w.measuring) {
                p->exec0 = executed_now();
            }
        }
        if (!stopping) {
            peer_push(p, &p->req, p->batch_p, n);
            inflight += n;
        }
    }
    pmsg *stop = NULL;
    mcq_push(&p->req, &stop, 1);
    return NULL;
}

static int peer_throughput(void *ctx, double *out)
{
    peer_xs *p = aligned_alloc(BENCH_CACHELINE, sizeof(peer_xs));
    if (!p)
        return -1;
    memset(p, 0, sizeof(*p));
    p->per_msg = ctx != NULL;
    mcq_init(&p->req);
    mcq_init(&p->rep);
    pthread_t prod, cons;
    int rc = -1;
    if (bench_thread_start(&cons, 1, peer_xs_consumer, p) == 0) {
        if (bench_thread_start(&prod, 0, peer_xs_producer, p) == 0) {
            pthread_join(prod, NULL);
            rc = 0;
        } else {
            pmsg *stop = NULL;
            mcq_push(&p->req, &stop, 1);
        }
        pthread_join(cons, NULL);
    }
    if (rc == 0 && p->results != p->replies) {
        printf("# peer xshard_throughput: %llu replies but %llu results\n",
               (unsigned long long)p->replies, (unsigned long long)p->results);
        rc = -1;
    }
    if (rc == 0) {
        out[0] = (double)(p->exec1 - p->exec0) / ((double)p->w.elapsed_ns / 1e9);
        /* Whole run, warm-up included: how much each lock hold carried. */
        bench_note("peer: %.0f msgs per pop on CPU 1, %.0f on CPU 0; condvar sleeps %llu on "
                   "CPU 1, %llu on CPU 0",
                   (double)p->req.popped / (double)(p->req.pops ? p->req.pops : 1),
                   (double)p->rep.popped / (double)(p->rep.pops ? p->rep.pops : 1),
                   (unsigned long long)p->req.waits, (unsigned long long)p->rep.waits);
    }
    mcq_destroy(&p->req);
    mcq_destroy(&p->rep);
    free(p);
    return rc;
}

/* ---- round-trip latency --------------------------------------------------------- */

/* Samples of one run: after the warm-up, at least RTT_MIN_SAMPLES and at
 * least bench_seconds(), but never more than twice bench_seconds(), so a
 * slow side still ends in bounded time (with fewer samples, said so). */
typedef struct rtt_samples {
    uint64_t *v;
    size_t n, cap;
    uint64_t warm_end, min_end, max_end;
    bool measuring;
} rtt_samples;

static void rtt_samples_start(rtt_samples *s)
{
    memset(s, 0, sizeof(*s));
    s->warm_end = bench_now_ns() + (uint64_t)(bench_warmup_seconds() * 1e9);
}

/* Records one round trip that ended at now; returns true when done. */
static bool rtt_record(rtt_samples *s, uint64_t rtt, uint64_t now)
{
    if (!s->measuring) {
        if (now < s->warm_end)
            return false;
        s->measuring = true;
        s->min_end = now + (uint64_t)(bench_seconds() * 1e9);
        s->max_end = now + (uint64_t)(2 * bench_seconds() * 1e9);
        return false; /* the first round trip after the warm-up began during it */
    }
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 65536;
        uint64_t *v = realloc(s->v, cap * sizeof(*v));
        if (!v)
            return true;
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = rtt;
    return (s->n >= RTT_MIN_SAMPLES && now >= s->min_end) || now >= s->max_end;
}

static int rtt_report(rtt_samples *s, const char *side, double *out)
{
    if (s->n == 0) {
        printf("# %s: no round trip completed\n", side);
        free(s->v);
        return -1;
    }
    if (s->n < RTT_MIN_SAMPLES)
        bench_note("%s: only %zu round trips in %.1f s (each is slow); p99 rests on %zu "
                   "samples",
                   side, s->n, 2 * bench_seconds(), s->n / 100);
    out[0] = (double)bench_percentile(s->v, s->n, 50);
    out[1] = (double)bench_percentile(s->v, s->n, 99);
    free(s->v);
    s->v = NULL;
    return 0;
}

typedef struct rtt_bench {
    bool busy;
    rtt_samples s;
    uint64_t t0;
    int err;
    keel_shard_stats st0[2], st1[2];
} rtt_bench;

/* Shard 1's busy loop; the flag is shard 1's own, set by messages. */
static bool busy_stop_flag;

static keel_future *busy_step(void *ctx)
{
    (void)ctx;
    return busy_stop_flag ? keel_make_ready(KEEL_STOP) : keel_yield();
}

static keel_future *busy_start(void *arg)
{
    (void)arg;
    busy_stop_flag = false;
    keel_detach(keel_repeat(busy_step, NULL));
    return keel_make_ready(0);
}

static keel_future *busy_stop(void *arg)
{
    (void)arg;
    busy_stop_flag = true;
    return keel_make_ready(0);
}

static keel_future *rtt_echo(void *arg)
{
    (void)arg;
    return keel_make_ready(0);
}

static void stop_runtime(void *ctx, keel_result r)
{
    (void)ctx;
    (void)r;
    keel_stop();
}

static void rtt_reply(void *ctx, keel_result r);

static void rtt_ping(rtt_bench *b)
{
    b->t0 = bench_now_ns();
    keel_on_done(keel_submit_to(1, rtt_echo, NULL), rtt_reply, b);
}

static void rtt_reply(void *ctx, keel_result r)
{
    rtt_bench *b = ctx;
    uint64_t now = bench_now_ns();
    if (r.err)
        b->err = r.err;
    bool was_measuring = b->s.measuring;
    bool done = rtt_record(&b->s, now - b->t0, now) || r.err;
    if (!was_measuring && b->s.measuring)
        xs_snapshot(b->st0);
    if (!done) {
        rtt_ping(b);
        return;
    }
    xs_snapshot(b->st1);
    if (b->busy)
        keel_on_done(keel_submit_to(1, busy_stop, NULL), stop_runtime, NULL);
    else
        keel_stop();
}

static void rtt_begin(void *ctx, keel_result r)
{
    rtt_bench *b = ctx;
    if (r.err) {
        b->err = r.err;
        keel_stop();
        return;
    }
    rtt_samples_start(&b->s);
    rtt_ping(b);
}

static void rtt_main(void *arg)
{
    rtt_bench *b = arg;
    if (b->busy)
        keel_on_done(keel_submit_to(1, busy_start, NULL), rtt_begin, b);
    else
        rtt_begin(b, keel_ok(0));
}

static int keel_rtt(bool busy, double *out)
{
    rtt_bench b;
    memset(&b, 0, sizeof(b));
    b.busy = busy;
    if (keel_run_checked(rtt_main, &b))
        return -1;
    if (b.err) {
        printf("# keel rtt: %s\n", keel_strerror(b.err));
        free(b.s.v);
        return -1;
    }
    double n = (double)b.s.n + 1;
    for (int s = 0; s < 2; s++) {
        keel_shard_stats *a = &b.st0[s], *z = &b.st1[s];
        bench_note("keel shard %d per round trip: %.2f loop turns, %.2f kernel entries, "
                   "%.2f sleeps, %.2f wake-ups sent",
                   s, (double)(z->loop_turns - a->loop_turns) / n,
                   (double)(z->enter_calls - a->enter_calls) / n,
                   (double)(z->sleeps - a->sleeps) / n,
                   (double)(z->wakeups_sent - a->wakeups_sent) / n);
    }
    return rtt_report(&b.s, "keel", out);
}

static int keel_rtt_busy(void *ctx, double *out)
{
    (void)ctx;
    return keel_rtt(true, out);
}

static int keel_rtt_sleeping(void *ctx, double *out)
{
    (void)ctx;
    return keel_rtt(false, out);
}

/* Peer: eventfd ping-pong. A value of 1 is a ping; 2 tells the echo thread
 * to leave (only one write is ever outstanding, so values never add up). */
typedef struct peer_rtt {
    int ping, pong;
    rtt_samples s;
} peer_rtt;

static int efd_write(int fd, uint64_t v)
{
    ssize_t n;
    do {
        n = write(fd, &v, sizeof(v));
    } while (n < 0 && errno == EINTR);
    return n == sizeof(v) ? 0 : -1;
}

static uint64_t efd_read(int fd)
{
    uint64_t v = 0;
    ssize_t n;
    do {
        n = read(fd, &v, sizeof(v));
    } while (n < 0 && errno == EINTR);
    return n == sizeof(v) ? v : 0;
}

static void *peer_rtt_echo(void *arg)
{
    peer_rtt *p = arg;
    while (efd_read(p->ping) == 1)
        if (efd_write(p->pong, 1))
            break;
    return NULL;
}

static void *peer_rtt_pinger(void *arg)
{
    peer_rtt *p = arg;
    rtt_samples_start(&p->s);
    for (;;) {
        uint64_t t0 = bench_now_ns();
        if (efd_write(p->ping, 1) || efd_read(p->pong) != 1)
            break;
        uint64_t now = bench_now_ns();
        if (rtt_record(&p->s, now - t0, now))
            break;
    }
    efd_write(p->ping, 2);
    return NULL;
}

static int peer_rtt_run(void *ctx, double *out)
{
    (void)ctx;
    peer_rtt p;
    memset(&p, 0, sizeof(p));
    p.ping = eventfd(0, EFD_CLOEXEC);
    p.pong = eventfd(0, EFD_CLOEXEC);
    int rc = -1;
    pthread_t echo, pinger;
    if (p.ping >= 0 && p.pong >= 0 && bench_thread_start(&echo, 1, peer_rtt_echo, &p) == 0) {
        if (bench_thread_start(&pinger, 0, peer_rtt_pinger, &p) == 0) {
            pthread_join(pinger, NULL);
            rc = 0;
        } else {
            efd_write(p.ping, 2);
        }
        pthread_join(echo, NULL);
    }
    if (p.ping >= 0)
        close(p.ping);
    if (p.pong >= 0)
        close(p.pong);
    if (rc)
        return rc;
    return rtt_report(&p.s, "peer", out);
}

/* For the watchdog: a hung keel run shows its counters. */
static void print_keel_stats(void)
{
    keel_stats_print(stdout);
}

int main(int argc, char **argv)
{
    static const char *const known[] = {"throughput", "rtt-busy", "rtt-sleeping"};
    if (bench_check_figures(argc, argv, "bench-runtime-xshard", known,
                            sizeof(known) / sizeof(known[0])))
        return 2;
    setvbuf(stdout, NULL, _IOLBF, 0);
    bench_watchdog_hook(print_keel_stats);
    int failed = 0;
    if (bench_selected(argc, argv, "throughput")) {
        printf("# xshard_throughput: shard 0 (CPU 0) keeps %d keel_submit_to(1, ...) in flight, "
               "default msg_ring_capacity; peer: mutex+condvar queues, threads on CPUs 0 and 1\n",
               XS_WINDOW);
        static const bench_metric m = {"xshard_throughput", "msg/s", true};
        failed |= bench_compare(&m, 1, keel_throughput, peer_throughput, NULL);
        /* The same against the textbook form of the queue, one lock hold
         * per message: the peer above swaps whole windows per hold, which
         * is its best case. */
        printf("# xshard_throughput_per_msg_lock: as above; peer: the same mutex+condvar queues "
               "taking the lock once per message pushed and popped\n");
        static const bench_metric m1 = {"xshard_throughput_per_msg_lock", "msg/s", true};
        static int per_msg = 1;
        failed |= bench_compare(&m1, 1, keel_throughput, peer_throughput, &per_msg);
    }
    if (bench_selected(argc, argv, "rtt-busy")) {
        printf("# xshard_rtt_busy: one keel_submit_to(1, echo) at a time, shard 1 runs a "
               "keel_repeat of keel_yield(), shard 0 otherwise idle; peer: eventfd ping-pong, "
               "CPUs 0 and 1\n");
        static const bench_metric m[] = {{"xshard_rtt_busy_p50", "ns", false},
                                         {"xshard_rtt_busy_p99", "ns", false}};
        failed |= bench_compare(m, 2, keel_rtt_busy, peer_rtt_run, NULL);
    }
    if (bench_selected(argc, argv, "rtt-sleeping")) {
        printf("# xshard_rtt_sleeping: one keel_submit_to(1, echo) at a time, both shards idle "
               "otherwise (every message wakes its target); peer: eventfd ping-pong, CPUs 0 "
               "and 1\n");
        static const bench_metric m[] = {{"xshard_rtt_sleeping_p50", "ns", false},
                                         {"xshard_rtt_sleeping_p99", "ns", false}};
        failed |= bench_compare(m, 2, keel_rtt_sleeping, peer_rtt_run, NULL);
    }
    return failed ? 1 : 0;
}
