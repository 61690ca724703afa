/* Combinators: when_all, parallel_for_each, repeat, with_timeout, yield. */
#include "harness.h"

/* A hung test fails with a timeout instead of stalling the whole run. */
TestSuite(combinators, .timeout = 60);

/* ---- when_all ------------------------------------------------------------- */

enum { WA_N = 5 };

static struct {
    keel_promise p[WA_N];
    keel_result results[WA_N];
    keel_result out;
    bool resolved;
    bool resolved_early;
} wa;

static void wa_done(void *ctx, keel_result r)
{
    (void)ctx;
    wa.out = r;
    wa.resolved = true;
}

static void when_all_mixed_main(void *arg)
{
    (void)arg;
    keel_future *fs[WA_N];
    for (int i = 0; i < WA_N; i++)
        fs[i] = keel_promise_init(&wa.p[i]);
    for (int i = 0; i < WA_N; i++)
        wa.results[i] = keel_err(-9999); /* must be overwritten */
    keel_on_done(keel_when_all(fs, WA_N, wa.results), wa_done, NULL);
    /* Failures first, highest index first, so "first to fail" and "lowest
     * index" disagree; then the successes, the last one ending it all. */
    keel_promise_set_error(&wa.p[3], -EPIPE);
    keel_promise_set_error(&wa.p[1], -EIO);
    keel_promise_set_value(&wa.p[0], 10);
    keel_promise_set_value(&wa.p[4], 14);
    wa.resolved_early = wa.resolved;
    keel_promise_set_value(&wa.p[2], 12);
    keel_stop();
}

Test(combinators, when_all_resolves_to_the_lowest_index_error_only_after_every_future_resolved)
{
    h_run(1, when_all_mixed_main, NULL);
    cr_assert(!wa.resolved_early, "when_all resolved before its last future did");
    cr_assert(wa.resolved);
    cr_assert_eq(wa.out.err, -EIO, "got %d (%s)", wa.out.err, keel_strerror(wa.out.err));
    cr_assert(wa.results[0].err == 0 && wa.results[0].val == 10);
    cr_assert_eq(wa.results[1].err, -EIO);
    cr_assert(wa.results[2].err == 0 && wa.results[2].val == 12);
    cr_assert_eq(wa.results[3].err, -EPIPE);
    cr_assert(wa.results[4].err == 0 && wa.results[4].val == 14);
}

static void when_all_ok_main(void *arg)
{
    (void)arg;
    keel_future *fs[3] = {keel_make_ready(1), keel_sleep(KEEL_MS(2)), keel_yield()};
    keel_on_done(keel_when_all(fs, 3, wa.results), wa_done, NULL);
    keel_on_done(keel_sleep(KEEL_MS(20)), h_stop_cb, NULL);
}

Test(combinators, when_all_of_successes_resolves_to_the_count_with_every_result)
{
    h_run(1, when_all_ok_main, NULL);
    cr_assert(wa.resolved);
    cr_assert_eq(wa.out.err, 0);
    cr_assert_eq(wa.out.val, 3);
    cr_assert(wa.results[0].err == 0 && wa.results[0].val == 1);
    cr_assert(wa.results[1].err == 0 && wa.results[2].err == 0);
}

static void when_all_zero_main(void *arg)
{
    (void)arg;
    keel_on_done(keel_when_all(NULL, 0, NULL), wa_done, NULL);
    keel_on_done(keel_yield(), h_stop_cb, NULL);
}

Test(combinators, when_all_of_zero_futures_resolves_to_zero)
{
    h_run(1, when_all_zero_main, NULL);
    cr_assert(wa.resolved, "when_all of nothing never resolved");
    cr_assert_eq(wa.out.err, 0);
    cr_assert_eq(wa.out.val, 0);
}

/* Many futures: the join state then exceeds the slab's sizes and comes from
 * malloc, which ASan checks for leaks. */
enum { WA_MANY = 1000 };
static keel_result many_results[WA_MANY];

static void when_all_many_main(void *arg)
{
    (void)arg;
    static keel_future *fs[WA_MANY];
    for (int i = 0; i < WA_MANY; i++)
        fs[i] = i % 3 ? keel_make_ready(i) : keel_sleep(KEEL_MS(i % 7));
    keel_on_done(keel_when_all(fs, WA_MANY, many_results), wa_done, NULL);
    keel_on_done(keel_sleep(KEEL_MS(50)), h_stop_cb, NULL);
}

Test(combinators, when_all_of_a_thousand_futures_fills_every_result)
{
    h_run(1, when_all_many_main, NULL);
    cr_assert(wa.resolved);
    cr_assert_eq(wa.out.val, WA_MANY);
    for (int i = 0; i < WA_MANY; i++) {
        cr_assert_eq(many_results[i].err, 0, "result %d", i);
        cr_assert_eq(many_results[i].val, i % 3 ? i : 0, "result %d", i);
    }
}

/* ---- parallel_for_each ------------------------------------------------------- */

enum { PFE_N = 100 };

static struct {
    int started[PFE_N];
    int start_order[PFE_N];
    int nstarted;
    int finished;
    bool all_started_before_any_finished;
    int finished_at_resolve;
    keel_result out;
    bool fail_some;
} pfe;

static void pfe_item_done(void *ctx, keel_result r)
{
    (void)ctx;
    (void)r;
    if (pfe.nstarted != PFE_N)
        pfe.all_started_before_any_finished = false;
    pfe.finished++;
}

static keel_future *pfe_fail_item(void *ctx, keel_result r)
{
    size_t i = (size_t)(uintptr_t)ctx;
    (void)r;
    /* 70 finishes first (shorter sleep) with a different error than 30. */
    if (i == 30)
        return keel_make_error(-EIO);
    if (i == 70)
        return keel_make_error(-EPIPE);
    return keel_make_ready(0);
}

static keel_future *pfe_fn(void *ctx, size_t i)
{
    (void)ctx;
    pfe.started[i]++;
    pfe.start_order[pfe.nstarted++] = (int)i;
    uint64_t ms = 1 + (i % 10);
    if (pfe.fail_some && i == 30)
        ms = 30;
    if (pfe.fail_some && i == 70)
        ms = 1;
    keel_future *f = keel_sleep(KEEL_MS(ms));
    if (pfe.fail_some)
        f = keel_then(f, pfe_fail_item, (void *)(uintptr_t)i);
    return keel_finally(f, pfe_item_done, NULL);
}

static void pfe_resolved(void *ctx, keel_result r)
{
    (void)ctx;
    pfe.out = r;
    pfe.finished_at_resolve = pfe.finished;
    keel_stop();
}

static void pfe_main(void *arg)
{
    pfe.fail_some = arg != NULL;
    pfe.all_started_before_any_finished = true;
    h_watchdog(5000);
    keel_on_done(keel_parallel_for_each(PFE_N, pfe_fn, NULL), pfe_resolved, NULL);
}

Test(combinators, parallel_for_each_starts_every_index_once_at_once_and_waits_for_all)
{
    h_run(1, pfe_main, NULL);
    for (int i = 0; i < PFE_N; i++) {
        cr_assert_eq(pfe.started[i], 1, "index %d started %d times", i, pfe.started[i]);
        cr_assert_eq(pfe.start_order[i], i, "indices start in order");
    }
    cr_assert(pfe.all_started_before_any_finished);
    cr_assert_eq(pfe.finished_at_resolve, PFE_N);
    cr_assert_eq(pfe.out.err, 0);
    cr_assert_eq(pfe.out.val, 0);
}

Test(combinators, parallel_for_each_resolves_to_the_lowest_index_error_once_all_finished)
{
    h_run(1, pfe_main, (void *)1);
    cr_assert_eq(pfe.finished_at_resolve, PFE_N, "resolved with %d of %d finished",
                 pfe.finished_at_resolve, PFE_N);
    cr_assert_eq(pfe.out.err, -EIO, "got %d (%s)", pfe.out.err, keel_strerror(pfe.out.err));
}

/* ---- repeat ------------------------------------------------------------------- */

static struct {
    int calls;
    int stop_at;
    int fail_at;
    int fail_err;
    bool pending; /* every other iteration waits on a yield or a sleep */
    keel_result out;
} rep;

static keel_future *rep_verdict(void *ctx, keel_result r)
{
    (void)ctx;
    (void)r;
    if (rep.calls == rep.fail_at)
        return keel_make_error(rep.fail_err);
    return keel_make_ready(rep.calls == rep.stop_at ? KEEL_STOP : KEEL_CONTINUE);
}

static keel_future *rep_fn(void *ctx)
{
    (void)ctx;
    rep.calls++;
    keel_future *f = keel_make_ready(0);
    if (rep.pending)
        f = rep.calls % 10 == 0 ? keel_sleep(KEEL_US(100)) : keel_yield();
    return keel_then(f, rep_verdict, NULL);
}

static void rep_main(void *arg)
{
    (void)arg;
    h_watchdog(10000);
    h_stop_when_done(keel_repeat(rep_fn, NULL), &rep.out);
}

static void rep_setup(int stop_at, int fail_at, int fail_err, bool pending)
{
    rep.calls = 0;
    rep.stop_at = stop_at;
    rep.fail_at = fail_at;
    rep.fail_err = fail_err;
    rep.pending = pending;
}

Test(combinators, repeat_of_ready_iterations_stops_on_stop_and_resolves_to_zero)
{
    rep_setup(100000, -1, 0, false);
    h_run(1, rep_main, NULL);
    cr_assert_eq(rep.calls, 100000);
    cr_assert_eq(rep.out.err, 0);
    cr_assert_eq(rep.out.val, 0);
}

Test(combinators, repeat_of_pending_iterations_stops_on_stop_and_resolves_to_zero)
{
    rep_setup(1000, -1, 0, true);
    h_run(1, rep_main, NULL);
    cr_assert_eq(rep.calls, 1000);
    cr_assert_eq(rep.out.err, 0);
}

Test(combinators, repeat_of_ready_iterations_ends_with_the_first_error_and_calls_no_more)
{
    rep_setup(-1, 5, -EIO, false);
    h_run(1, rep_main, NULL);
    cr_assert_eq(rep.calls, 5);
    cr_assert_eq(rep.out.err, -EIO);
}

Test(combinators, repeat_of_pending_iterations_ends_with_the_first_error_and_calls_no_more)
{
    rep_setup(-1, 25, -ENOSPC, true);
    h_run(1, rep_main, NULL);
    cr_assert_eq(rep.calls, 25);
    cr_assert_eq(rep.out.err, -ENOSPC);
}

/* A loop whose iterations are always ready must still let timers fire: it
 * yields once its quota is spent. */
static struct {
    bool timer_fired;
    uint64_t iterations;
} starve;

static keel_future *spin_until_timer(void *ctx)
{
    (void)ctx;
    starve.iterations++;
    return keel_make_ready(starve.timer_fired ? KEEL_STOP : KEEL_CONTINUE);
}

static void starve_timer(void *ctx, keel_result r)
{
    (void)ctx;
    H_CHECK_EQ(r.err, 0);
    starve.timer_fired = true;
}

static void starve_main(void *arg)
{
    (void)arg;
    h_watchdog(5000);
    keel_on_done(keel_sleep(KEEL_MS(5)), starve_timer, NULL);
    h_stop_when_ok(keel_repeat(spin_until_timer, NULL));
}

Test(combinators, a_repeat_whose_iterations_are_always_ready_does_not_starve_timers)
{
    h_run(1, starve_main, NULL);
    cr_assert(starve.timer_fired);
}

/* ---- with_timeout -------------------------------------------------------------- */

static struct {
    keel_abort_source as;
    uint64_t t0;
    keel_result outer, inner;
    uint64_t outer_ms, inner_ms;
    int done;
    uint64_t timers_before, timers_after;
    bool aborted_after;
    bool inner_done_at_outer;
} wt;

static void wt_finish_one(void)
{
    if (++wt.done == 2)
        keel_stop();
}

static void wt_outer(void *ctx, keel_result r)
{
    (void)ctx;
    wt.outer = r;
    wt.outer_ms = h_ms_since(wt.t0);
    wt_finish_one();
}

static void wt_inner(void *ctx, keel_result r)
{
    (void)ctx;
    wt.inner = r;
    wt.inner_ms = h_ms_since(wt.t0);
    wt_finish_one();
}

static void wt_timeout_main(void *arg)
{
    (void)arg;
    h_watchdog(5000);
    keel_abort_source_init(&wt.as);
    wt.t0 = h_now_ns();
    /* A 10 s operation, cancellable through wt.as; we watch it finish. */
    keel_future *op = keel_finally(keel_sleep_abortable(KEEL_SEC(10), &wt.as), wt_inner, NULL);
    keel_on_done(keel_with_timeout(op, KEEL_MS(20), &wt.as), wt_outer, NULL);
}

Test(combinators, with_timeout_fails_etimedout_and_aborts_the_source_to_cancel_the_operation)
{
    h_run(1, wt_timeout_main, NULL);
    cr_assert_eq(wt.outer.err, -ETIMEDOUT, "got %d (%s)", wt.outer.err,
                 keel_strerror(wt.outer.err));
    cr_assert_geq(wt.outer_ms, 20, "timed out after only %llu ms", (unsigned long long)wt.outer_ms);
    cr_assert_lt(wt.outer_ms, 1000, "timed out after %llu ms", (unsigned long long)wt.outer_ms);
    cr_assert_eq(wt.inner.err, -ECANCELED, "the operation was not cancelled: %d", wt.inner.err);
    cr_assert_lt(wt.inner_ms, 1000, "the operation ended after %llu ms",
                 (unsigned long long)wt.inner_ms);
}

static void wt_check_timers(void *ctx, keel_result r)
{
    (void)ctx;
    H_CHECK_EQ(r.err, 0);
    keel_shard_stats st;
    keel_shard_stats_get(keel_shard_id(), &st);
    wt.timers_after = st.timers_fired;
    wt.aborted_after = keel_abort_requested(&wt.as);
    keel_stop();
}

static void wt_win_outer(void *ctx, keel_result r)
{
    (void)ctx;
    wt.outer = r;
    wt.outer_ms = h_ms_since(wt.t0);
    /* Wait past the timeout: a timer that was not cancelled would fire. */
    keel_on_done(keel_sleep(KEEL_MS(350)), wt_check_timers, NULL);
}

static keel_future *wt_value(void *ctx, keel_result r)
{
    (void)ctx;
    (void)r;
    return keel_make_ready(77);
}

static void wt_win_main(void *arg)
{
    (void)arg;
    h_watchdog(5000);
    keel_abort_source_init(&wt.as);
    keel_shard_stats st;
    keel_shard_stats_get(keel_shard_id(), &st);
    wt.timers_before = st.timers_fired;
    wt.t0 = h_now_ns();
    keel_future *op = keel_then(keel_sleep_abortable(KEEL_MS(10), &wt.as), wt_value, NULL);
    keel_on_done(keel_with_timeout(op, KEEL_MS(300), &wt.as), wt_win_outer, NULL);
}

Test(combinators, with_timeout_passes_the_result_through_and_cancels_its_timer_when_f_wins)
{
    h_run(1, wt_win_main, NULL);
    cr_assert_eq(wt.outer.err, 0, "got %d (%s)", wt.outer.err, keel_strerror(wt.outer.err));
    cr_assert_eq(wt.outer.val, 77);
    cr_assert_geq(wt.outer_ms, 10);
    cr_assert_lt(wt.outer_ms, 300, "the 10 ms operation took %llu ms",
                 (unsigned long long)wt.outer_ms);
    /* Two timers fired: the 10 ms operation and the 350 ms wait; not the
     * 300 ms timeout. The watchdog's 5 s timer has not fired. */
    cr_assert_eq(wt.timers_after - wt.timers_before, 2, "%llu timers fired",
                 (unsigned long long)(wt.timers_after - wt.timers_before));
    cr_assert(!wt.aborted_after, "the abort source was aborted though f won");
}

static void wt_ready_main(void *arg)
{
    (void)arg;
    keel_future *f = keel_with_timeout(keel_make_ready(5), KEEL_MS(1), NULL);
    H_CHECK(keel_future_is_ready(f));
    H_CHECK_OK(keel_future_take(f), 5);
    f = keel_with_timeout(keel_make_error(-EIO), KEEL_MS(1), NULL);
    H_CHECK_ERR(keel_future_take(f), -EIO);
    keel_stop();
}

Test(combinators, with_timeout_of_a_ready_future_gives_its_result_at_once)
{
    h_run(1, wt_ready_main, NULL);
}

static void wt_no_source_main(void *arg)
{
    (void)arg;
    h_watchdog(5000);
    wt.t0 = h_now_ns();
    /* No abort source: the late result is discarded, the sleep ends at
     * shutdown (-ECANCELED), and nothing leaks. */
    keel_on_done(keel_with_timeout(keel_sleep(KEEL_SEC(10)), KEEL_MS(5), NULL), h_stop_cb,
                 &wt.outer);
}

Test(combinators, with_timeout_without_an_abort_source_times_out_and_discards_the_late_result)
{
    uint64_t ms = h_run(1, wt_no_source_main, NULL);
    cr_assert_eq(wt.outer.err, -ETIMEDOUT);
    cr_assert_lt(ms, 5000, "keel_run took %llu ms", (unsigned long long)ms);
}

/* ---- yield ------------------------------------------------------------------------ */

static struct {
    char order[8];
    int n;
    bool ran_inline;
} yl;

static void yl_mark(void *ctx, keel_result r)
{
    H_CHECK_EQ(r.err, 0);
    yl.order[yl.n++] = *(const char *)ctx;
}

static void yield_main(void *arg)
{
    (void)arg;
    keel_on_done(keel_yield(), yl_mark, "1");
    yl.ran_inline = yl.n != 0;
    keel_on_done(keel_yield(), yl_mark, "2");
    /* Already-queued work runs before a yield issued later. */
    keel_on_done(keel_yield(), yl_mark, "3");
    keel_on_done(keel_sleep(KEEL_MS(5)), h_stop_cb, NULL);
}

Test(combinators, yield_resolves_on_a_later_pass_of_the_run_queue_in_fifo_order)
{
    h_run(1, yield_main, NULL);
    cr_assert(!yl.ran_inline, "keel_yield resolved inside the call");
    cr_assert_str_eq(yl.order, "123");
}
