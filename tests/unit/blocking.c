/* The blocking pool: keel_run_blocking runs work off the shards and brings
 * the result back to the calling shard. */
#include <pthread.h>

#include "harness.h"

/* A hung test fails with a timeout instead of stalling the whole run. */
TestSuite(blocking, .timeout = 60);

enum { NSHARDS = 2 };

/* pthread_t of each shard, recorded on the shard itself. */
static pthread_t shard_threads[NSHARDS];

typedef struct job {
    unsigned caller;  /* shard that submitted it */
    int64_t value;    /* what the worker returns */
    int err;          /* or this error */
    pthread_t worker; /* the thread fn ran on */
    bool ran;
    unsigned resolved_on; /* keel_shard_id() in the continuation */
    keel_result result;
    bool resolved;
} job;

static keel_result job_fn(void *arg)
{
    job *j = arg;
    j->worker = pthread_self();
    j->ran = true;
    return j->err ? keel_err(j->err) : keel_ok(j->value);
}

static void job_done(void *ctx, keel_result r)
{
    job *j = ctx;
    j->resolved_on = keel_shard_id();
    j->result = r;
    j->resolved = true;
}

/* ---- result, error and the calling shard -------------------------------------------- */

static job basic[4]; /* shard 0 ok, shard 0 error, shard 1 ok, shard 1 error */

static keel_future *ignore_result(void *ctx, keel_result r)
{
    (void)ctx;
    (void)r;
    return keel_make_ready(0);
}

static keel_future *basic_on_this_shard(void *arg)
{
    (void)arg;
    unsigned me = keel_shard_id();
    shard_threads[me] = pthread_self();
    job *ok = &basic[2 * me], *bad = &basic[2 * me + 1];
    ok->caller = bad->caller = me;
    ok->value = 1000 + me;
    bad->err = -EACCES;
    keel_future *fs[2] = {keel_finally(keel_run_blocking(job_fn, ok), job_done, ok),
                          keel_finally(keel_run_blocking(job_fn, bad), job_done, bad)};
    /* The error is checked through bad->result, not here. */
    return keel_then_wrapped(keel_when_all(fs, 2, NULL), ignore_result, NULL);
}

static void basic_main(void *arg)
{
    (void)arg;
    h_watchdog(10000);
    h_stop_when_ok(keel_invoke_on_all(basic_on_this_shard, NULL));
}

static void check_off_shard(const job *j)
{
    for (int s = 0; s < NSHARDS; s++)
        cr_assert(!pthread_equal(j->worker, shard_threads[s]),
                  "a job from shard %u ran on shard %d's thread", j->caller, s);
}

Test(blocking, run_blocking_returns_the_workers_result_and_error_on_the_calling_shard)
{
    h_run(NSHARDS, basic_main, NULL);
    for (int i = 0; i < 4; i++) {
        const job *j = &basic[i];
        cr_assert(j->ran && j->resolved, "job %d did not run or resolve", i);
        cr_assert_eq(j->resolved_on, j->caller, "job from shard %u resolved on shard %u", j->caller,
                     j->resolved_on);
        check_off_shard(j);
    }
    cr_assert(basic[0].result.err == 0 && basic[0].result.val == 1000);
    cr_assert(basic[2].result.err == 0 && basic[2].result.val == 1001);
    cr_assert_eq(basic[1].result.err, -EACCES);
    cr_assert_eq(basic[3].result.err, -EACCES);
}

/* ---- many jobs from both shards ------------------------------------------------------ */

enum { MANY = 500 };

static job many[NSHARDS][MANY];
static _Atomic int many_running, many_max_running;
static uint64_t jobs_counted[NSHARDS];

static keel_result slow_job_fn(void *arg)
{
    int now = atomic_fetch_add(&many_running, 1) + 1;
    int max = atomic_load(&many_max_running);
    while (now > max && !atomic_compare_exchange_weak(&many_max_running, &max, now)) {
    }
    usleep(200);
    atomic_fetch_sub(&many_running, 1);
    return job_fn(arg);
}

static keel_future *many_on_this_shard(void *arg)
{
    (void)arg;
    unsigned me = keel_shard_id();
    shard_threads[me] = pthread_self();
    keel_shard_stats st;
    keel_shard_stats_get(me, &st);
    uint64_t before = st.blocking_jobs;
    static keel_future *fs[NSHARDS][MANY];
    for (int i = 0; i < MANY; i++) {
        job *j = &many[me][i];
        j->caller = me;
        j->value = (int64_t)i * 3 + me;
        fs[me][i] = keel_finally(keel_run_blocking(slow_job_fn, j), job_done, j);
    }
    keel_shard_stats_get(me, &st);
    jobs_counted[me] = st.blocking_jobs - before;
    return keel_when_all(fs[me], MANY, NULL);
}

static void many_main(void *arg)
{
    (void)arg;
    h_watchdog(30000);
    h_stop_when_ok(keel_invoke_on_all(many_on_this_shard, NULL));
}

Test(blocking, many_concurrent_jobs_from_both_shards_all_complete_on_their_callers)
{
    h_run(NSHARDS, many_main, NULL);
    pthread_t workers[8];
    int nworkers = 0;
    for (unsigned s = 0; s < NSHARDS; s++) {
        cr_assert_eq(jobs_counted[s], MANY, "shard %u counted %llu blocking jobs", s,
                     (unsigned long long)jobs_counted[s]);
        for (int i = 0; i < MANY; i++) {
            const job *j = &many[s][i];
            cr_assert(j->resolved, "job %u/%d never resolved", s, i);
            cr_assert_eq(j->result.err, 0);
            cr_assert_eq(j->result.val, (int64_t)i * 3 + s);
            cr_assert_eq(j->resolved_on, s);
            check_off_shard(j);
            bool known = false;
            for (int w = 0; w < nworkers; w++)
                known |= pthread_equal(workers[w], j->worker);
            if (!known && nworkers < 8)
                workers[nworkers++] = j->worker;
        }
    }
    /* The pool has 4 workers by default; jobs that sleep must overlap. */
    cr_assert_geq(nworkers, 2, "all jobs ran on one worker thread");
    cr_assert_geq(atomic_load(&many_max_running), 2, "jobs never ran concurrently");
}

/* ---- the shard keeps running while a job blocks -------------------------------------- */

static struct {
    job j;
    bool timer_fired_first;
    bool timer_fired;
    uint64_t t0;
    uint64_t job_ms;
} stall;

static keel_result stall_fn(void *arg)
{
    usleep(200 * 1000);
    return job_fn(arg);
}

static void stall_timer(void *ctx, keel_result r)
{
    (void)ctx;
    H_CHECK_EQ(r.err, 0);
    stall.timer_fired = true;
    stall.timer_fired_first = !stall.j.resolved;
}

static void stall_job_done(void *ctx, keel_result r)
{
    job_done(ctx, r);
    stall.job_ms = h_ms_since(stall.t0);
    keel_stop();
}

static void stall_main(void *arg)
{
    (void)arg;
    h_watchdog(10000);
    stall.t0 = h_now_ns();
    stall.j.value = 5;
    keel_on_done(keel_run_blocking(stall_fn, &stall.j), stall_job_done, &stall.j);
    keel_on_done(keel_sleep(KEEL_MS(10)), stall_timer, NULL);
}

Test(blocking, a_job_that_blocks_for_200_ms_does_not_stall_the_shard)
{
    h_run(1, stall_main, NULL);
    cr_assert(stall.timer_fired_first, "a 10 ms timer did not fire while a 200 ms job blocked");
    cr_assert_geq(stall.job_ms, 200);
    cr_assert_eq(stall.j.result.val, 5);
}

/* ---- stopping waits for jobs in flight ------------------------------------------------ */

static void stop_with_job_main(void *arg)
{
    (void)arg;
    stall.j.value = 9;
    keel_on_done(keel_run_blocking(stall_fn, &stall.j), job_done, &stall.j);
    keel_stop();
}

Test(blocking, stopping_waits_for_a_job_in_flight_and_delivers_its_result)
{
    uint64_t ms = h_run(1, stop_with_job_main, NULL);
    cr_assert(stall.j.resolved, "the job's result was dropped at shutdown");
    cr_assert_eq(stall.j.result.err, 0);
    cr_assert_eq(stall.j.result.val, 9);
    cr_assert_geq(ms, 200);
    cr_assert_lt(ms, 5000);
}
