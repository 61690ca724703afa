/* Shutdown: exit hooks, keel_stop from anywhere, SIGTERM, and running the
 * runtime again afterwards. */
#include <pthread.h>
#include <signal.h>

#include "harness.h"

/* A hung test fails with a timeout instead of stalling the whole run. */
TestSuite(shutdown, .timeout = 60);

enum { NSHARDS = 2 };

/* ---- exit hooks ------------------------------------------------------------------ */

static struct {
    char order[NSHARDS][8]; /* each shard's hooks append their letter */
    bool stopping_in_hook[NSHARDS][3];
    bool stopping_before;
    keel_result slow_sleep;
    bool slow_done;
    _Atomic uint64_t stop_ns;
    int64_t remote_reply;
} hk;

static keel_future *hook(void *arg)
{
    unsigned me = keel_shard_id();
    char letter = *(const char *)arg;
    size_t n = strlen(hk.order[me]);
    if (n + 1 < sizeof(hk.order[me])) {
        hk.order[me][n] = letter;
        hk.order[me][n + 1] = 0;
    }
    hk.stopping_in_hook[me][letter - 'A'] = keel_stopping();
    return keel_make_ready(0);
}

static keel_future *register_hooks(void *arg)
{
    (void)arg;
    H_CHECK_EQ(keel_at_exit(hook, "A"), 0);
    H_CHECK_EQ(keel_at_exit(hook, "B"), 0);
    H_CHECK_EQ(keel_at_exit(hook, "C"), 0);
    return keel_make_ready(0);
}

static void stop_now(void *ctx, keel_result r)
{
    (void)ctx;
    H_CHECK_EQ(r.err, 0);
    atomic_store(&hk.stop_ns, h_now_ns());
    keel_stop();
    keel_stop(); /* idempotent */
}

static void hooks_order_main(void *arg)
{
    (void)arg;
    hk.stopping_before = keel_stopping();
    keel_on_done(keel_invoke_on_all(register_hooks, NULL), stop_now, NULL);
}

Test(shutdown, exit_hooks_run_in_reverse_order_on_every_shard_while_stopping_is_true)
{
    h_run(NSHARDS, hooks_order_main, NULL);
    cr_assert(!hk.stopping_before, "keel_stopping() was true before keel_stop()");
    for (int s = 0; s < NSHARDS; s++) {
        cr_assert_str_eq(hk.order[s], "CBA", "shard %d ran its hooks as '%s'", s, hk.order[s]);
        for (int h = 0; h < 3; h++)
            cr_assert(hk.stopping_in_hook[s][h], "keel_stopping() false in hook %c on shard %d",
                      'A' + h, s);
    }
}

/* A hook's future is awaited: a 50 ms sleep in it delays keel_run's return,
 * and the sleep completes normally (timers still run during hooks). */
static void slow_hook_done(void *ctx, keel_result r)
{
    (void)ctx;
    hk.slow_sleep = r;
    hk.slow_done = true;
}

static keel_future *slow_hook(void *arg)
{
    (void)arg;
    return keel_finally(keel_sleep(KEEL_MS(50)), slow_hook_done, NULL);
}

static void slow_hook_main(void *arg)
{
    (void)arg;
    H_CHECK_EQ(keel_at_exit(slow_hook, NULL), 0);
    keel_on_done(keel_yield(), stop_now, NULL);
}

Test(shutdown, a_hook_that_sleeps_50_ms_delays_exit_until_its_future_resolves)
{
    h_run(1, slow_hook_main, NULL);
    uint64_t ms = (h_now_ns() - atomic_load(&hk.stop_ns)) / 1000000;
    cr_assert(hk.slow_done, "keel_run returned before the hook's future resolved");
    cr_assert_eq(hk.slow_sleep.err, 0, "the hook's sleep failed: %d", hk.slow_sleep.err);
    cr_assert_geq(ms, 50, "keel_run returned %llu ms after keel_stop", (unsigned long long)ms);
    cr_assert_lt(ms, 5000);
}

/* Exit hooks may still talk to other shards. */
static void remote_reply(void *ctx, keel_result r)
{
    (void)ctx;
    H_CHECK_EQ(r.err, 0);
    hk.remote_reply = r.val;
}

static keel_future *answer(void *arg)
{
    (void)arg;
    return keel_make_ready(100 + keel_shard_id());
}

static keel_future *messaging_hook(void *arg)
{
    (void)arg;
    return keel_finally(keel_submit_to(1, answer, NULL), remote_reply, NULL);
}

static void messaging_hook_main(void *arg)
{
    (void)arg;
    H_CHECK_EQ(keel_at_exit(messaging_hook, NULL), 0);
    keel_on_done(keel_yield(), stop_now, NULL);
}

Test(shutdown, an_exit_hook_can_submit_work_to_another_shard)
{
    h_run(NSHARDS, messaging_hook_main, NULL);
    cr_assert_eq(hk.remote_reply, 101);
}

/* ---- keel_stop from a thread that is no shard --------------------------------------- */

static pthread_t helper;
static _Atomic bool helper_started;

static void *stop_from_thread(void *arg)
{
    (void)arg;
    usleep(20 * 1000);
    atomic_store(&hk.stop_ns, h_now_ns());
    keel_stop();
    return NULL;
}

static void foreign_stop_main(void *arg)
{
    (void)arg;
    /* Something pending, so the shards are asleep in the kernel when the
     * stop arrives and must be woken. */
    keel_detach(keel_sleep(KEEL_SEC(30)));
    atomic_store(&helper_started, pthread_create(&helper, NULL, stop_from_thread, NULL) == 0);
}

Test(shutdown, keel_stop_from_a_thread_that_is_no_shard_stops_the_runtime)
{
    h_run(NSHARDS, foreign_stop_main, NULL);
    cr_assert(atomic_load(&helper_started));
    pthread_join(helper, NULL);
    uint64_t ms = (h_now_ns() - atomic_load(&hk.stop_ns)) / 1000000;
    cr_assert_lt(ms, 5000, "keel_run returned %llu ms after keel_stop", (unsigned long long)ms);
}

/* ---- SIGTERM ------------------------------------------------------------------------- */

static _Atomic int sigterm_hook_ran;

static keel_future *sigterm_hook(void *arg)
{
    (void)arg;
    atomic_fetch_add(&sigterm_hook_ran, 1);
    return keel_make_ready(0);
}

/* Created from a shard, so it inherits the mask in which keel blocks
 * SIGINT/SIGTERM: the signal stays pending for shard 0's signalfd. */
static void *send_sigterm(void *arg)
{
    (void)arg;
    usleep(20 * 1000);
    atomic_store(&hk.stop_ns, h_now_ns());
    kill(getpid(), SIGTERM);
    return NULL;
}

static void sigterm_main(void *arg)
{
    (void)arg;
    H_CHECK_EQ(keel_at_exit(sigterm_hook, NULL), 0);
    keel_detach(keel_sleep(KEEL_SEC(30)));
    atomic_store(&helper_started, pthread_create(&helper, NULL, send_sigterm, NULL) == 0);
}

Test(shutdown, sigterm_stops_keel_run_cleanly_with_zero)
{
    h_capture cap;
    h_capture_begin(&cap);
    keel_config c;
    h_require_shards(NSHARDS);
    h_config(&c, NSHARDS);
    int rc = keel_run(&c, sigterm_main, NULL);
    const char *log = h_capture_end(&cap);
    cr_assert(atomic_load(&helper_started));
    pthread_join(helper, NULL);
    cr_assert_eq(rc, 0, "keel_run returned %d (%s)", rc, keel_strerror(rc));
    h_assert_no_failures();
    h_assert_no_leaks();
    uint64_t ms = (h_now_ns() - atomic_load(&hk.stop_ns)) / 1000000;
    cr_assert_lt(ms, 5000, "keel_run returned %llu ms after SIGTERM", (unsigned long long)ms);
    cr_assert_eq(atomic_load(&sigterm_hook_ran), 1, "the exit hook ran %d times",
                 atomic_load(&sigterm_hook_ran));
    cr_assert(strstr(log, "SIGTERM") != NULL, "keel did not log the signal: '%s'", log);
}

/* ---- again ---------------------------------------------------------------------------- */

static _Atomic int runs;

static void count_run(void *arg)
{
    (void)arg;
    atomic_fetch_add(&runs, 1);
    H_CHECK(!keel_stopping());
    keel_on_done(keel_sleep(KEEL_MS(1)), h_stop_cb, NULL);
}

Test(shutdown, the_runtime_can_run_again_after_a_clean_stop)
{
    h_run(NSHARDS, count_run, NULL);
    h_run(NSHARDS, count_run, NULL);
    h_run(1, count_run, NULL);
    cr_assert_eq(atomic_load(&runs), 3);
}

Test(shutdown, keel_stop_without_a_running_runtime_does_nothing)
{
    keel_stop();
    cr_assert(!keel_stopping());
    h_run(1, count_run, NULL);
    cr_assert_eq(atomic_load(&runs), 1);
}
