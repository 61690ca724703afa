/* Shards: start-up, the loop, and shutdown.
 *
 * One loop turn (DESIGN.md, "The shard loop"):
 *   1. run queued tasks until the queue is empty or the quota is spent;
 *   2. publish this turn's cross-shard messages, take incoming ones and
 *      blocking-pool results, expire timers;
 *   3. submit queued I/O and reap completions in one kernel entry, waiting
 *      only when nothing is runnable, bounded by the earliest timer.
 *
 * Shutdown: keel_stop() sets a flag and wakes every shard. Each runs its
 * exit hooks, waits for their futures, cancels its timers, and keeps
 * serving messages until it is quiescent (no tasks, no staged messages, no
 * awaited replies or blocking jobs). Shard 0 declares the end when two
 * scans in a row see every shard quiescent with unchanged activity epochs:
 * then no message can be in flight (an in-flight request or reply keeps
 * its sender non-quiescent), so rings and slabs can be freed. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <unistd.h>

#include "internal.h"

keel__runtime *keel__rt;
__thread keel__shard *keel__self;

static keel__runtime *g_stop_target; /* for keel_stop() from signal handlers */

unsigned keel_shard_id(void)
{
    return keel__shard_self()->id;
}
unsigned keel_shard_count(void)
{
    return keel__rt ? keel__rt->nshards : 0;
}
int keel_shard_cpu(unsigned shard)
{
    return keel__rt && shard < keel__rt->nshards ? keel__rt->shards[shard]->cpu : -1;
}
const char *keel_backend_name(void)
{
    return keel__rt ? keel__rt->backend->name : "none";
}

bool keel_stopping(void)
{
    keel__runtime *rt = g_stop_target;
    return rt && atomic_load_explicit(&rt->stop_requested, memory_order_relaxed);
}

void keel__eventfd_wake(keel__shard *target)
{
    uint64_t one = 1;
    ssize_t n;
    /* A full counter (EAGAIN) still leaves the fd readable: the wake-up
     * is not lost. */
    do {
        n = write(target->wake_efd, &one, sizeof(one));
    } while (n < 0 && errno == EINTR);
}

/* Async-signal-safe: an atomic store and eventfd writes. */
void keel_stop(void)
{
    keel__runtime *rt = g_stop_target;
    if (!rt)
        return;
    int saved_errno = errno; /* a signal handler must leave errno as it was */
    atomic_store(&rt->stop_requested, 1);
    for (unsigned i = 0; i < rt->nshards; i++)
        keel__eventfd_wake(rt->shards[i]);
    errno = saved_errno;
}

int keel_at_exit(keel_future *(*fn)(void *arg), void *arg)
{
    keel__shard *s = keel__shard_self();
    if (s->exit_hook_count == s->exit_hook_cap) {
        size_t cap = s->exit_hook_cap ? s->exit_hook_cap * 2 : 8;
        keel__exit_hook *h = realloc(s->exit_hooks, cap * sizeof(*h));
        if (!h)
            return -ENOMEM;
        s->exit_hooks = h;
        s->exit_hook_cap = cap;
    }
    s->exit_hooks[s->exit_hook_count++] = (keel__exit_hook){fn, arg};
    return 0;
}

int keel_shard_stats_get(unsigned shard, keel_shard_stats *out)
{
    if (!keel__rt || shard >= keel__rt->nshards)
        return -EINVAL;
    keel__shard *s = keel__rt->shards[shard];
    /* Counters are plain 64-bit words written by their shard only; an
     * aligned 64-bit load is atomic on the platforms keel runs on, so a
     * foreign reader gets a slightly stale but never torn value. */
    volatile const uint64_t *src = (volatile const uint64_t *)&s->stats;
    uint64_t *dst = (uint64_t *)out;
    for (size_t i = 0; i < sizeof(*out) / sizeof(uint64_t); i++)
        dst[i] = src[i];
    if (s->je_allocatedp)
        out->bytes_allocated = *(volatile uint64_t *)s->je_allocatedp;
    if (s->je_deallocatedp)
        out->bytes_deallocated = *(volatile uint64_t *)s->je_deallocatedp;
    return 0;
}

void keel_stats_print(FILE *out)
{
    for (unsigned i = 0; i < keel_shard_count(); i++) {
        keel_shard_stats st;
        keel_shard_stats_get(i, &st);
        fprintf(out,
                "shard %u (cpu %d): tasks=%llu inline=%llu turns=%llu sleeps=%llu sqes=%llu "
                "cqes=%llu enters=%llu msgs_out=%llu msgs_in=%llu wakeups=%llu timers=%llu "
                "blocking=%llu alloc_bytes=%llu\n",
                i, keel_shard_cpu(i), (unsigned long long)st.tasks_run,
                (unsigned long long)st.inline_runs, (unsigned long long)st.loop_turns,
                (unsigned long long)st.sleeps, (unsigned long long)st.sqes_submitted,
                (unsigned long long)st.cqes_reaped, (unsigned long long)st.enter_calls,
                (unsigned long long)st.msgs_sent, (unsigned long long)st.msgs_received,
                (unsigned long long)st.wakeups_sent, (unsigned long long)st.timers_fired,
                (unsigned long long)st.blocking_jobs, (unsigned long long)st.bytes_allocated);
    }
}

void keel__shard_note_activity(keel__shard *s)
{
    atomic_fetch_add_explicit(&s->activity_epoch, 1, memory_order_relaxed);
}

/* ---- shutdown ------------------------------------------------------------- */

static keel_future *resolve_continue(void *ctx, keel_result r)
{
    (void)ctx;
    (void)r;
    return keel_make_ready(KEEL_CONTINUE);
}

static void hooks_finished(void *ctx, keel_result r)
{
    keel__shard *s = ctx;
    (void)r;
    s->hooks_done = true;
}

/* Runs the next exit hook (last registered first) once the previous one's
 * future has resolved; an error in one does not stop the others. */
static keel_future *next_exit_hook(void *ctx)
{
    keel__shard *s = ctx;
    if (s->exit_hook_count == 0)
        return keel_make_ready(KEEL_STOP);
    keel__exit_hook h = s->exit_hooks[--s->exit_hook_count];
    return keel_then_wrapped(h.fn(h.arg), resolve_continue, NULL);
}

static void begin_stop(keel__shard *s)
{
    s->exit_state = KEEL__STOPPING;
    keel_on_done(keel_repeat(next_exit_hook, s), hooks_finished, s);
}

static bool shard_quiescent(keel__shard *s)
{
    return s->hooks_done && keel__rq_empty(s) && s->outstanding == 0 && s->timer_count == 0 &&
           s->pending_ops == 0 && !keel__xshard_staged(s);
}

/* Shard 0 only: the double scan described at the top of this file. */
static bool all_quiescent(uint64_t *epochs, bool *have_prev)
{
    keel__runtime *rt = keel__rt;
    bool same = *have_prev;
    for (unsigned i = 0; i < rt->nshards; i++) {
        keel__shard *o = rt->shards[i];
        if (!atomic_load_explicit(&o->quiescent, memory_order_acquire)) {
            *have_prev = false;
            return false;
        }
        uint64_t e = atomic_load_explicit(&o->activity_epoch, memory_order_acquire);
        if (e != epochs[i])
            same = false;
        epochs[i] = e;
    }
    *have_prev = true;
    return same;
}

static void shutdown_step(keel__shard *s, uint64_t *epochs, bool *have_prev)
{
    if (s->exit_state == KEEL__RUNNING) {
        if (!atomic_load_explicit(&keel__rt->stop_requested, memory_order_relaxed))
            return;
        begin_stop(s);
    }
    if (s->hooks_done && !s->timers_closed)
        keel__timers_cancel_all(s);
    atomic_store_explicit(&s->quiescent, shard_quiescent(s), memory_order_release);
    if (s->id == 0 && all_quiescent(epochs, have_prev)) {
        atomic_store(&keel__rt->exit_now, 1);
        for (unsigned i = 1; i < keel__rt->nshards; i++)
            keel__rt->backend->wake(s, keel__rt->shards[i]);
    }
}

/* ---- the loop --------------------------------------------------------------- */

static void wake_read(keel__op *op, int res, uint32_t flags)
{
    (void)flags;
    keel__shard *s = op->ctx;
    if (res == -ECANCELED)
        return;
    s->backend->submit(s, &s->wake_op);
}

static bool work_arrived(keel__shard *s)
{
    return keel__xshard_pending_in(s) || keel__blocking_pending_in(s) ||
           (s->exit_state == KEEL__RUNNING && atomic_load(&keel__rt->stop_requested)) ||
           atomic_load(&keel__rt->exit_now);
}

static void shard_loop(keel__shard *s)
{
    uint64_t *epochs = calloc(keel__rt->nshards, sizeof(uint64_t));
    bool have_prev = false;
    if (!epochs)
        abort();
    for (;;) {
        bool quota_spent = keel__run_tasks(s);
        s->now_ns = keel__clock_ns();
        bool got = keel__xshard_poll(s);
        got |= keel__blocking_poll(s);
        keel__timers_expire(s);
        /* After polling, so replies staged while handling messages leave in
         * this turn rather than after the next quota. */
        keel__xshard_publish(s);
        if (got)
            keel__shard_note_activity(s);
        if (s->exit_state != KEEL__RUNNING ||
            atomic_load_explicit(&keel__rt->stop_requested, memory_order_relaxed))
            shutdown_step(s, epochs, &have_prev);
        if (atomic_load_explicit(&keel__rt->exit_now, memory_order_acquire))
            break;
        if (s->before_poll)
            s->before_poll(s);
        s->stats.loop_turns++;
        /* Busy with cross-shard work alone (the quota not spent, nothing to
         * submit): go round again without a syscall, entering the kernel at
         * least every KEEL__IO_POLL_NS to reap completions. */
        if (!quota_spent && (got || !keel__rq_empty(s)) && !s->backend->has_queued(s) &&
            s->now_ns - s->last_poll_ns < KEEL__IO_POLL_NS)
            continue;

        uint64_t timeout = 0;
        if (keel__rq_empty(s) && !keel__xshard_staged(s)) {
            uint64_t next = keel__timers_next_ns(s);
            timeout = next == UINT64_MAX ? UINT64_MAX : (next > s->now_ns ? next - s->now_ns : 0);
            /* While stopping, look again every millisecond: quiescence is
             * a property of all shards, not an event anyone sends. */
            if (s->exit_state != KEEL__RUNNING && timeout > KEEL_MS(1))
                timeout = KEEL_MS(1);
            if (timeout) {
                atomic_store_explicit(&s->sleeping, 1, memory_order_relaxed);
                /* Store-load fence: the flag must be visible before we look
                 * at the queues; senders fence between queue and flag. */
                atomic_thread_fence(memory_order_seq_cst);
                if (work_arrived(s)) {
                    atomic_store_explicit(&s->sleeping, 0, memory_order_relaxed);
                    timeout = 0;
                }
            }
        }
        if (timeout) {
            s->stats.sleeps++;
            s->stall_asleep = 1; /* not a stall */
            s->now_ns = keel__clock_ns(); /* the sleep is timed from here */
        }
        s->backend->poll(s, timeout);
        s->last_poll_ns = s->now_ns;
        atomic_store_explicit(&s->sleeping, 0, memory_order_relaxed);
    }
    free(epochs);
}

/* ---- start-up ---------------------------------------------------------------- */

typedef struct start_args {
    keel__shard *shard;
    keel_main_fn main_fn;
    void *arg;
} start_args;

static int shard_init(keel__shard *s)
{
    keel__runtime *rt = keel__rt;
    int err;
    for (int c = 0; c < KEEL__SLAB_CLASSES; c++)
        keel__slab_init(&s->slabs[c], 64u << c);
    s->quota_ns = KEEL_US(rt->config.task_quota_us ? rt->config.task_quota_us : 500);
    s->now_ns = keel__clock_ns();
    s->quota_deadline_ns = s->now_ns + s->quota_ns;
    s->backend = rt->backend;
    s->ring_fd = -1;
    keel__sched_shard_init(s);
    keel__trace_shard_init(s);
    s->wake_efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (s->wake_efd < 0) {
        err = -errno;
        keel__log("eventfd failed: %s", keel_strerror(err));
        return err;
    }
    if ((err = keel__xshard_shard_init(s)))
        return err;
    if ((err = s->backend->init(s, &rt->config))) {
        keel__log("%s backend failed to start: %s", s->backend->name, keel_strerror(err));
        return err;
    }
    s->wake_op = (keel__op){.type = KEEL__OP_READ,
                            .fd = s->wake_efd,
                            .buf = &s->wake_buf,
                            .len = sizeof(s->wake_buf),
                            .complete = wake_read,
                            .ctx = s};
    if ((err = s->backend->submit(s, &s->wake_op)))
        return err;
    if (s->id == 0 && rt->config.handle_signals && (err = keel__signals_shard_init(s)))
        return err;
    keel__stall_shard_init(s);
    return 0;
}

static void shard_fini(keel__shard *s, bool backend_up)
{
    keel__stall_shard_fini(s);
    keel__disk_shard_fini(s);
    if (backend_up)
        s->backend->fini(s);
    if (s->module_fini)
        s->module_fini(s);
    if (s->id == 0)
        keel__signals_shard_fini(s);
    keel__xshard_shard_fini(s);
    for (int c = 0; c < KEEL__SLAB_CLASSES; c++)
        keel__slab_destroy(&s->slabs[c]);
    free(s->timer_heap);
    s->timer_heap = NULL;
    free(s->exit_hooks);
    s->exit_hooks = NULL;
    if (s->wake_efd >= 0)
        close(s->wake_efd);
    s->wake_efd = -1;
}

static void *shard_main(void *p)
{
    start_args *a = p;
    keel__shard *s = a->shard;
    keel__runtime *rt = keel__rt;
    keel__self = s;

    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(s->cpu, &one);
    int err = pthread_setaffinity_np(pthread_self(), sizeof(one), &one);
    if (err)
        keel__log("pthread_setaffinity_np(cpu %d) failed: %s; shard %u runs unpinned", s->cpu,
                  keel_strerror(-err), s->id);
    keel__memory_shard_init(s);
    err = shard_init(s);
    if (err)
        atomic_store(&rt->init_failed, 1);
    /* Every ring must exist before any shard may send to another. */
    pthread_barrier_wait(&rt->barrier);
    if (!atomic_load(&rt->init_failed)) {
        if (s->id == 0) {
            keel__metrics_start();
            if (a->main_fn) {
                s->inline_depth = 0;
                a->main_fn(a->arg);
            }
        }
        shard_loop(s);
    }
    keel__memory_stats(s);
    /* Nobody touches another shard's rings or memory past this point. */
    pthread_barrier_wait(&rt->barrier);
    shard_fini(s, err == 0 || s->backend_state != NULL);
    keel__self = NULL;
    return NULL;
}

static const keel__reactor_ops *choose_backend(const char *want, const char **why)
{
    static char reason[256];
    char probe_why[160] = "";
    if (want && strcmp(want, "epoll") && strcmp(want, "uring") && strcmp(want, "io_uring")) {
        keel__log("unknown backend '%s' (--backend or $KEEL_BACKEND): use 'uring' or 'epoll'",
                  want);
        return NULL;
    }
    if (want && !strcmp(want, "epoll")) {
        *why = "requested";
        return &keel__reactor_epoll;
    }
    if (keel__reactor_uring.probe(probe_why, sizeof(probe_why))) {
        *why = want ? "requested" : "probed: io_uring available";
        return &keel__reactor_uring;
    }
    if (want) {
        keel__log("io_uring was requested but is unavailable: %s. Use --backend epoll, or "
                  "allow io_uring (sysctl kernel.io_uring_disabled=0, container seccomp profile)",
                  probe_why);
        return NULL;
    }
    snprintf(reason, sizeof(reason), "fallback: io_uring unavailable (%s)", probe_why);
    *why = reason;
    return &keel__reactor_epoll;
}

int keel_run(const keel_config *c, keel_main_fn main_fn, void *arg)
{
    keel_config defaults;
    if (!c) {
        keel_config_init(&defaults);
        c = &defaults;
    }
    if (keel__rt) {
        keel__log("keel_run called while the runtime is already running");
        return -EBUSY;
    }
    if (c->_bad_env) {
        keel__log("invalid environment: %s", c->_bad_env);
        return -KEEL_EBADCONFIG;
    }
    cpu_set_t mask, want;
    if (sched_getaffinity(0, sizeof(mask), &mask)) {
        int err = -errno;
        keel__log("sched_getaffinity failed: %s", keel_strerror(err));
        return err;
    }
    char maskbuf[256];
    keel__format_cpuset(&mask, maskbuf, sizeof(maskbuf));
    if (c->cpuset) {
        if (keel__parse_cpuset(c->cpuset, &want))
            return -KEEL_EBADCONFIG;
        for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
            if (CPU_ISSET(cpu, &want) && !CPU_ISSET(cpu, &mask)) {
                keel__log("--cpuset %s names CPU %d, which is not in this process's affinity "
                          "mask (%s); pick CPUs from %s",
                          c->cpuset, cpu, maskbuf, maskbuf);
                return -KEEL_EBADCONFIG;
            }
        }
    } else {
        want = mask;
    }
    unsigned ncpu = (unsigned)CPU_COUNT(&want);
    unsigned n = c->shards ? c->shards : ncpu;
    if (n > ncpu || n > KEEL_MAX_SHARDS) {
        char wantbuf[256];
        keel__format_cpuset(&want, wantbuf, sizeof(wantbuf));
        keel__log("--shards %u but only %u CPU%s available (%s): one shard per CPU; use "
                  "--shards %u or a larger --cpuset",
                  n, ncpu, ncpu == 1 ? " is" : "s are", wantbuf, ncpu);
        return -KEEL_EBADCONFIG;
    }

    /* A server holds a socket per client: take the whole fd allowance. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl))
            keel__log("setrlimit(RLIMIT_NOFILE, %llu) failed: %s", (unsigned long long)rl.rlim_max,
                      keel_strerror(-errno));
    }

    const char *why = NULL;
    const keel__reactor_ops *backend = choose_backend(c->backend, &why);
    if (!backend)
        return -KEEL_EBADCONFIG;

    keel__runtime *rt = calloc(1, sizeof(*rt));
    if (!rt)
        return -ENOMEM;
    rt->config = *c;
    rt->nshards = n;
    rt->backend = backend;
    rt->backend_why = why;
    int err = -ENOMEM;
    rt->shards = calloc(n, sizeof(*rt->shards));
    start_args *args = calloc(n, sizeof(*args));
    if (!rt->shards || !args)
        goto fail_alloc;
    int cpu = -1;
    for (unsigned i = 0; i < n; i++) {
        while (!CPU_ISSET(++cpu, &want)) {
        }
        keel__shard *s = keel__aligned_alloc(KEEL__CACHELINE, sizeof(*s));
        if (!s)
            goto fail_alloc;
        memset(s, 0, sizeof(*s));
        s->id = i;
        s->cpu = cpu;
        s->wake_efd = -1;
        rt->shards[i] = s;
        args[i] = (start_args){s, i == 0 ? main_fn : NULL, arg};
    }
    keel__rt = rt;
    if ((err = keel__xshard_init(rt)))
        goto fail_alloc;

    sigset_t oldmask;
    if (c->handle_signals)
        keel__signals_setup(&oldmask);
    if ((err = keel__blocking_start(c->blocking_threads ? c->blocking_threads : 4)))
        goto fail_signals;
    if ((err = keel__stall_setup(c)) || (err = keel__trace_setup(c))) {
        keel__blocking_stop();
        goto fail_signals;
    }

    if (!c->quiet) {
        char cpus[256];
        keel__format_cpuset(&want, cpus, sizeof(cpus));
        keel__log("%u shard%s on CPUs %s, backend %s (%s)", n, n == 1 ? "" : "s", cpus,
                  backend->name, why);
    }
    pthread_barrier_init(&rt->barrier, NULL, n);
    g_stop_target = rt;
    unsigned started = 0;
    for (; started < n; started++) {
        err = pthread_create(&rt->shards[started]->thread, NULL, shard_main, &args[started]);
        if (err) {
            keel__log("pthread_create(shard %u) failed: %s", started, keel_strerror(-err));
            err = -err;
            break;
        }
    }
    if (started < n) {
        /* The started shards wait at the first barrier for the rest; they
         * cannot be released cleanly, so this is fatal, as it is for any
         * program that cannot create its threads. */
        abort();
    }
    for (unsigned i = 0; i < n; i++)
        pthread_join(rt->shards[i]->thread, NULL);
    err = atomic_load(&rt->init_failed) || atomic_load(&rt->run_failed) ? -EIO : 0;
    g_stop_target = NULL;
    pthread_barrier_destroy(&rt->barrier);
    keel__trace_teardown(); /* writes --trace FILE if still recording */
    keel__blocking_stop();
fail_signals:
    if (c->handle_signals)
        keel__signals_restore(&oldmask);
    keel__xshard_fini(rt);
fail_alloc:
    keel__rt = NULL;
    if (rt->shards)
        for (unsigned i = 0; i < n; i++)
            free(rt->shards[i]);
    free(rt->shards);
    free(args);
    free(rt);
    return err;
}
