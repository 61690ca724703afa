/* Timers: deadline order, cancellation through abort sources, and many
 * pending sleeps sharing one kernel timeout. */
#include "harness.h"

/* A hung test fails with a timeout instead of stalling the whole run. */
TestSuite(timers, .timeout = 60);

/* ---- deadline order ---------------------------------------------------------- */

static const unsigned order_ms[] = {50, 10, 30, 20, 40};
enum { ORDER_N = sizeof(order_ms) / sizeof(order_ms[0]) };

static struct {
    uint64_t t0;
    unsigned fired[ORDER_N];
    uint64_t elapsed_ms[ORDER_N];
    int n;
} ord;

static void order_fired(void *ctx, keel_result r)
{
    unsigned ms = (unsigned)(uintptr_t)ctx;
    H_CHECK_EQ(r.err, 0);
    ord.elapsed_ms[ord.n] = h_ms_since(ord.t0);
    ord.fired[ord.n++] = ms;
    if (ord.n == ORDER_N)
        keel_stop();
}

static void order_main(void *arg)
{
    (void)arg;
    h_watchdog(5000);
    ord.t0 = h_now_ns();
    for (int i = 0; i < ORDER_N; i++)
        keel_on_done(keel_sleep(KEEL_MS(order_ms[i])), order_fired, (void *)(uintptr_t)order_ms[i]);
}

Test(timers, sleeps_fire_in_deadline_order_and_never_early)
{
    h_run(1, order_main, NULL);
    cr_assert_eq(ord.n, ORDER_N);
    for (int i = 0; i < ORDER_N; i++) {
        cr_assert_eq(ord.fired[i], 10u * (unsigned)(i + 1), "completion %d was the %u ms sleep", i,
                     ord.fired[i]);
        cr_assert_geq(ord.elapsed_ms[i], ord.fired[i], "the %u ms sleep fired after %llu ms",
                      ord.fired[i], (unsigned long long)ord.elapsed_ms[i]);
        cr_assert_lt(ord.elapsed_ms[i], 1000, "the %u ms sleep fired after %llu ms", ord.fired[i],
                     (unsigned long long)ord.elapsed_ms[i]);
    }
}

static struct {
    uint64_t t0;
    keel_result r;
    uint64_t ms;
} zero;

static void zero_fired(void *ctx, keel_result r)
{
    (void)ctx;
    zero.r = r;
    zero.ms = h_ms_since(zero.t0);
    keel_stop();
}

static void zero_main(void *arg)
{
    (void)arg;
    h_watchdog(5000);
    zero.t0 = h_now_ns();
    keel_on_done(keel_sleep(0), zero_fired, NULL);
}

Test(timers, a_zero_sleep_resolves_promptly)
{
    h_run(1, zero_main, NULL);
    cr_assert_eq(zero.r.err, 0);
    cr_assert_lt(zero.ms, 1000);
}

/* ---- abort sources ------------------------------------------------------------ */

static struct {
    keel_abort_source as;
    uint64_t t0;
    keel_result r[3];
    uint64_t ms[3];
    int n;
    bool resolved_in_request;
    bool ready_at_once;
    keel_result immediate;
} ab;

static void ab_done(void *ctx, keel_result r)
{
    int i = (int)(uintptr_t)ctx;
    ab.r[i] = r;
    ab.ms[i] = h_ms_since(ab.t0);
    if (++ab.n == 3)
        keel_stop();
}

static void ab_request(void *ctx, keel_result r)
{
    (void)ctx;
    H_CHECK_EQ(r.err, 0);
    keel_abort_source_request(&ab.as);
    /* Subscribers run at once, inside the request. */
    ab.resolved_in_request = ab.n == 2;
    keel_abort_source_request(&ab.as); /* idempotent */
}

static void abort_main(void *arg)
{
    (void)arg;
    h_watchdog(5000);
    keel_abort_source_init(&ab.as);
    ab.t0 = h_now_ns();
    keel_on_done(keel_sleep_abortable(KEEL_SEC(10), &ab.as), ab_done, (void *)0);
    keel_on_done(keel_sleep_abortable(KEEL_SEC(20), &ab.as), ab_done, (void *)1);
    /* An unrelated sleep is not affected. */
    keel_on_done(keel_sleep(KEEL_MS(30)), ab_done, (void *)2);
    keel_on_done(keel_sleep(KEEL_MS(10)), ab_request, NULL);
}

Test(timers, aborting_the_source_cancels_its_pending_sleeps_promptly_and_no_others)
{
    h_run(1, abort_main, NULL);
    cr_assert_eq(ab.r[0].err, -ECANCELED, "got %d", ab.r[0].err);
    cr_assert_eq(ab.r[1].err, -ECANCELED, "got %d", ab.r[1].err);
    cr_assert(ab.resolved_in_request);
    cr_assert_geq(ab.ms[0], 10);
    cr_assert_lt(ab.ms[0], 1000, "cancelled after %llu ms", (unsigned long long)ab.ms[0]);
    cr_assert_lt(ab.ms[1], 1000, "cancelled after %llu ms", (unsigned long long)ab.ms[1]);
    cr_assert_eq(ab.r[2].err, 0, "an unrelated sleep was cancelled");
    cr_assert_geq(ab.ms[2], 30);
}

static void aborted_main(void *arg)
{
    (void)arg;
    keel_abort_source_init(&ab.as);
    keel_abort_source_request(&ab.as);
    keel_future *f = keel_sleep_abortable(KEEL_MS(10), &ab.as);
    ab.ready_at_once = keel_future_is_ready(f);
    if (ab.ready_at_once)
        ab.immediate = keel_future_take(f);
    else
        keel_on_done(f, ab_done, (void *)0);
    keel_stop();
}

Test(timers, a_sleep_on_an_already_aborted_source_fails_ecanceled_immediately)
{
    h_run(1, aborted_main, NULL);
    cr_assert(ab.ready_at_once, "the sleep was not failed at once");
    cr_assert_eq(ab.immediate.err, -ECANCELED);
}

/* A source whose sleep already fired: a later abort must not touch it (the
 * sleeper unsubscribed when it fired and its memory is recycled). */
static void fired_then_abort(void *ctx, keel_result r)
{
    (void)ctx;
    H_CHECK_EQ(r.err, 0);
    /* Reuse the freed sleeper's memory for a new, unrelated sleep. */
    keel_on_done(keel_sleep(KEEL_MS(5)), ab_done, (void *)1);
    keel_abort_source_request(&ab.as);
    ab_done((void *)0, r);
}

static void fired_main(void *arg)
{
    (void)arg;
    h_watchdog(5000);
    keel_abort_source_init(&ab.as);
    ab.t0 = h_now_ns();
    ab.n = 1;
    keel_on_done(keel_sleep_abortable(KEEL_MS(1), &ab.as), fired_then_abort, NULL);
}

Test(timers, aborting_after_the_sleep_fired_does_not_affect_later_sleeps)
{
    h_run(1, fired_main, NULL);
    cr_assert_eq(ab.r[0].err, 0);
    cr_assert_eq(ab.r[1].err, 0, "an unrelated sleep got %d", ab.r[1].err);
}

/* ---- many pending sleeps --------------------------------------------------------- */

enum { MANY = 100000 };

static struct {
    uint64_t t0;
    uint64_t sqes_before, sqes_after;
    uint64_t fired_before, fired_after;
    unsigned fired;
    unsigned early;
    uint64_t max_ms;
} many;

static void many_fired(void *ctx, keel_result r)
{
    uint64_t want_ms = (uint64_t)(uintptr_t)ctx;
    H_CHECK_EQ(r.err, 0);
    uint64_t ms = h_ms_since(many.t0);
    if (ms < want_ms)
        many.early++;
    if (ms > many.max_ms)
        many.max_ms = ms;
    if (++many.fired == MANY) {
        keel_shard_stats st;
        keel_shard_stats_get(keel_shard_id(), &st);
        many.fired_after = st.timers_fired;
        many.sqes_after = st.sqes_submitted;
        keel_stop();
    }
}

static void many_main(void *arg)
{
    (void)arg;
    h_watchdog(20000);
    keel_shard_stats st;
    keel_shard_stats_get(keel_shard_id(), &st);
    many.sqes_before = st.sqes_submitted;
    many.fired_before = st.timers_fired;
    many.t0 = h_now_ns();
    /* Deadlines spread over 1..50 ms, interleaved so the heap is exercised. */
    for (unsigned i = 0; i < MANY; i++) {
        uint64_t ms = 1 + (i * 7919u) % 50;
        keel_on_done(keel_sleep(KEEL_MS(ms)), many_fired, (void *)(uintptr_t)ms);
    }
}

Test(timers, a_hundred_thousand_pending_sleeps_all_fire_and_share_one_kernel_timeout)
{
    h_run(1, many_main, NULL);
    cr_assert_eq(many.fired, MANY);
    cr_assert_eq(many.early, 0, "%u sleeps fired early", many.early);
    cr_assert_geq(many.fired_after - many.fired_before, MANY);
    /* One SQE per sleep would be 100k; the loop's own wake-up reads and
     * wait timeouts are a handful. */
    uint64_t sqes = many.sqes_after - many.sqes_before;
    cr_assert_lt(sqes, 1000, "%llu SQEs submitted for %d sleeps", (unsigned long long)sqes, MANY);
    fprintf(stderr, "100k sleeps: last fired at %llu ms, %llu SQEs\n",
            (unsigned long long)many.max_ms, (unsigned long long)sqes);
}
