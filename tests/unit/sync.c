/* Gates and semaphores. */
#include "harness.h"

/* A hung test fails with a timeout instead of stalling the whole run. */
TestSuite(sync, .timeout = 60);

static void store_result(void *ctx, keel_result r)
{
    *(keel_result *)ctx = r;
}

/* ---- gates ---------------------------------------------------------------------- */

static struct {
    keel_gate g;
    keel_result closed;
    bool closed_done;
    bool closed_early[3];
    int enter_after_close;
    uint64_t count_before_close;
} gt;

static void gate_closed(void *ctx, keel_result r)
{
    (void)ctx;
    gt.closed = r;
    gt.closed_done = true;
}

static void gate_main(void *arg)
{
    (void)arg;
    keel_gate_init(&gt.g);
    for (int i = 0; i < 3; i++)
        H_CHECK_EQ(keel_gate_enter(&gt.g), 0);
    gt.count_before_close = keel_gate_count(&gt.g);
    keel_on_done(keel_gate_close(&gt.g), gate_closed, NULL);
    gt.closed_early[0] = gt.closed_done;
    gt.enter_after_close = keel_gate_enter(&gt.g);
    keel_gate_leave(&gt.g);
    gt.closed_early[1] = gt.closed_done;
    keel_gate_leave(&gt.g);
    gt.closed_early[2] = gt.closed_done;
    keel_gate_leave(&gt.g); /* the last one */
    keel_stop();
}

Test(sync, gate_close_resolves_only_after_the_last_leave_and_refuses_new_entries)
{
    h_run(1, gate_main, NULL);
    cr_assert_eq(gt.count_before_close, 3);
    cr_assert(!gt.closed_early[0] && !gt.closed_early[1] && !gt.closed_early[2],
              "keel_gate_close resolved with entries still inside");
    cr_assert(gt.closed_done, "keel_gate_close never resolved");
    cr_assert_eq(gt.closed.err, 0);
    cr_assert_eq(gt.enter_after_close, -KEEL_EGATE_CLOSED);
}

static void gate_empty_main(void *arg)
{
    (void)arg;
    keel_gate_init(&gt.g);
    H_CHECK_EQ(keel_gate_enter(&gt.g), 0);
    keel_gate_leave(&gt.g);
    keel_on_done(keel_gate_close(&gt.g), gate_closed, NULL);
    keel_on_done(keel_yield(), h_stop_cb, NULL);
}

Test(sync, closing_an_empty_gate_resolves_at_once)
{
    h_run(1, gate_empty_main, NULL);
    cr_assert(gt.closed_done);
    cr_assert_eq(gt.closed.err, 0);
}

/* keel_with_gate: two operations in flight (20 and 40 ms); the close must
 * wait for both, and an operation started after the close is refused
 * without being called. */
static struct {
    uint64_t t0;
    int calls;
    int finished;
    int finished_at_close;
    uint64_t close_ms;
    keel_result refused;
    keel_result op_results[2];
} wg;

static void wg_op_finished(void *ctx, keel_result r)
{
    (void)ctx;
    (void)r;
    wg.finished++;
}

static keel_future *wg_value(void *ctx, keel_result r)
{
    (void)r;
    return keel_make_ready((int64_t)(uintptr_t)ctx);
}

/* Sleeps ctx ms, then resolves to ctx. */
static keel_future *wg_op(void *ctx)
{
    wg.calls++;
    uint64_t ms = (uint64_t)(uintptr_t)ctx;
    return keel_finally(keel_then(keel_sleep(KEEL_MS(ms)), wg_value, ctx), wg_op_finished, NULL);
}

static void wg_closed(void *ctx, keel_result r)
{
    (void)ctx;
    H_CHECK_EQ(r.err, 0);
    wg.finished_at_close = wg.finished;
    wg.close_ms = h_ms_since(wg.t0);
    keel_stop();
}

static void with_gate_main(void *arg)
{
    (void)arg;
    h_watchdog(5000);
    keel_gate_init(&gt.g);
    wg.t0 = h_now_ns();
    keel_on_done(keel_with_gate(&gt.g, wg_op, (void *)20), store_result, &wg.op_results[0]);
    keel_on_done(keel_with_gate(&gt.g, wg_op, (void *)40), store_result, &wg.op_results[1]);
    H_CHECK_EQ(keel_gate_count(&gt.g), 2);
    keel_on_done(keel_gate_close(&gt.g), wg_closed, NULL);
    keel_on_done(keel_with_gate(&gt.g, wg_op, (void *)1), store_result, &wg.refused);
}

Test(sync, with_gate_holds_the_gate_until_its_future_resolves_and_is_refused_after_close)
{
    h_run(1, with_gate_main, NULL);
    cr_assert_eq(wg.calls, 2, "fn was called %d times; a closed gate must not call it", wg.calls);
    cr_assert_eq(wg.refused.err, -KEEL_EGATE_CLOSED);
    cr_assert_eq(wg.finished_at_close, 2, "the gate closed with %d of 2 operations finished",
                 wg.finished_at_close);
    cr_assert_geq(wg.close_ms, 40);
    cr_assert(wg.op_results[0].err == 0 && wg.op_results[0].val == 20);
    cr_assert(wg.op_results[1].err == 0 && wg.op_results[1].val == 40);
}

/* ---- semaphores: concurrency bound ---------------------------------------------------- */

enum { SEM_TASKS = 20, SEM_COUNT = 3 };

static struct {
    keel_sem s;
    int inside, max_inside;
    int completed;
    int64_t available_at_end;
    size_t waiters_at_start;
} sb;

static keel_future *sb_leave(void *ctx, keel_result r)
{
    (void)ctx;
    H_CHECK_EQ(r.err, 0);
    sb.inside--;
    keel_sem_signal(&sb.s, 1);
    return keel_make_ready(0);
}

static keel_future *sb_enter(void *ctx, keel_result r)
{
    (void)ctx;
    H_CHECK_EQ(r.err, 0);
    if (++sb.inside > sb.max_inside)
        sb.max_inside = sb.inside;
    return keel_then(keel_sleep(KEEL_MS(5)), sb_leave, NULL);
}

static keel_future *sb_task(void *ctx, size_t i)
{
    (void)ctx;
    (void)i;
    return keel_then(keel_sem_wait(&sb.s, 1), sb_enter, NULL);
}

static void sb_all_done(void *ctx, keel_result r)
{
    (void)ctx;
    H_CHECK_EQ(r.err, 0);
    sb.available_at_end = keel_sem_available(&sb.s);
    keel_stop();
}

static void sem_bound_main(void *arg)
{
    (void)arg;
    h_watchdog(5000);
    keel_sem_init(&sb.s, SEM_COUNT);
    keel_future *f = keel_parallel_for_each(SEM_TASKS, sb_task, NULL);
    sb.waiters_at_start = keel_sem_waiters(&sb.s);
    keel_on_done(f, sb_all_done, NULL);
}

Test(sync, a_semaphore_of_three_lets_exactly_three_tasks_in_at_once)
{
    h_run(1, sem_bound_main, NULL);
    cr_assert_eq(sb.max_inside, SEM_COUNT, "max concurrently inside: %d", sb.max_inside);
    cr_assert_eq(sb.waiters_at_start, SEM_TASKS - SEM_COUNT);
    cr_assert_eq(sb.available_at_end, SEM_COUNT, "units leaked: %lld available",
                 (long long)sb.available_at_end);
}

/* ---- semaphores: FIFO ----------------------------------------------------------------- */

static struct {
    keel_sem s;
    char order[8];
    int n;
    char after_signal[4][8];
    bool try_jumped;
    int64_t available_at_end;
} ff;

static void ff_granted(void *ctx, keel_result r)
{
    H_CHECK_EQ(r.err, 0);
    ff.order[ff.n++] = *(const char *)ctx;
}

static void fifo_main(void *arg)
{
    (void)arg;
    keel_sem_init(&ff.s, 0);
    /* A wants 2, B and C want 1 each. */
    keel_on_done(keel_sem_wait(&ff.s, 2), ff_granted, "A");
    keel_on_done(keel_sem_wait(&ff.s, 1), ff_granted, "B");
    keel_on_done(keel_sem_wait(&ff.s, 1), ff_granted, "C");
    /* One unit: B must not overtake A, and try_wait must not either. */
    keel_sem_signal(&ff.s, 1);
    memcpy(ff.after_signal[0], ff.order, sizeof(ff.order));
    ff.try_jumped = keel_sem_try_wait(&ff.s, 1);
    keel_sem_signal(&ff.s, 1);
    memcpy(ff.after_signal[1], ff.order, sizeof(ff.order));
    keel_sem_signal(&ff.s, 1);
    memcpy(ff.after_signal[2], ff.order, sizeof(ff.order));
    keel_sem_signal(&ff.s, 1);
    memcpy(ff.after_signal[3], ff.order, sizeof(ff.order));
    ff.available_at_end = keel_sem_available(&ff.s);
    keel_stop();
}

Test(sync, semaphore_waiters_are_granted_in_fifo_order_and_a_large_request_is_not_overtaken)
{
    h_run(1, fifo_main, NULL);
    cr_assert(!ff.try_jumped, "keel_sem_try_wait took a unit while others waited");
    cr_assert_str_eq(ff.after_signal[0], "", "one unit must not go to B ahead of A");
    cr_assert_str_eq(ff.after_signal[1], "A");
    cr_assert_str_eq(ff.after_signal[2], "AB");
    cr_assert_str_eq(ff.after_signal[3], "ABC");
    cr_assert_eq(ff.available_at_end, 0);
}

/* ---- semaphores: abortable waits ------------------------------------------------------- */

static struct {
    keel_sem s;
    keel_abort_source as;
    keel_result a, b;
    bool a_done, b_done;
    size_t waiters_after_abort;
    int64_t available_after_abort;
    int64_t available_at_end;
    bool b_done_after_abort;
    keel_result pre_aborted;
} aw;

static void aw_a(void *ctx, keel_result r)
{
    (void)ctx;
    aw.a = r;
    aw.a_done = true;
}

static void aw_b(void *ctx, keel_result r)
{
    (void)ctx;
    aw.b = r;
    aw.b_done = true;
}

static void abortable_main(void *arg)
{
    (void)arg;
    keel_sem_init(&aw.s, 1);
    keel_abort_source_init(&aw.as);
    /* A (abortable) wants 3 of the 1 available and blocks B, who wants 1. */
    keel_on_done(keel_sem_wait_abortable(&aw.s, 3, &aw.as), aw_a, NULL);
    keel_on_done(keel_sem_wait(&aw.s, 1), aw_b, NULL);
    keel_abort_source_request(&aw.as);
    /* A is gone from the queue; the unit it blocked goes to B. */
    aw.waiters_after_abort = keel_sem_waiters(&aw.s);
    aw.available_after_abort = keel_sem_available(&aw.s);
    aw.b_done_after_abort = aw.b_done;
    keel_sem_signal(&aw.s, 1); /* B's unit back */
    aw.available_at_end = keel_sem_available(&aw.s);
    /* A wait on an aborted source fails at once. */
    keel_on_done(keel_sem_wait_abortable(&aw.s, 1, &aw.as), store_result, &aw.pre_aborted);
    keel_stop();
}

Test(sync, aborting_a_semaphore_wait_fails_it_ecanceled_removes_it_and_leaks_no_units)
{
    h_run(1, abortable_main, NULL);
    cr_assert(aw.a_done);
    cr_assert_eq(aw.a.err, -ECANCELED);
    cr_assert_eq(aw.waiters_after_abort, 0, "%zu waiters left", aw.waiters_after_abort);
    cr_assert(aw.b_done_after_abort, "the waiter behind the aborted one was not woken");
    cr_assert_eq(aw.b.err, 0);
    cr_assert_eq(aw.available_after_abort, 0);
    cr_assert_eq(aw.available_at_end, 1, "units leaked: %lld available of 1",
                 (long long)aw.available_at_end);
    cr_assert_eq(aw.pre_aborted.err, -ECANCELED);
}

/* A granted abortable wait must unsubscribe: aborting afterwards changes
 * nothing (and touches no freed waiter). */
static void granted_then_abort_main(void *arg)
{
    (void)arg;
    keel_sem_init(&aw.s, 0);
    keel_abort_source_init(&aw.as);
    keel_on_done(keel_sem_wait_abortable(&aw.s, 1, &aw.as), aw_a, NULL);
    keel_sem_signal(&aw.s, 1);
    /* Reuse the freed waiter's memory for a new, unrelated waiter. */
    keel_on_done(keel_sem_wait(&aw.s, 1), aw_b, NULL);
    keel_abort_source_request(&aw.as);
    aw.waiters_after_abort = keel_sem_waiters(&aw.s);
    aw.b_done_after_abort = aw.b_done;
    keel_sem_signal(&aw.s, 1);
    keel_stop();
}

Test(sync, aborting_after_a_semaphore_wait_was_granted_changes_nothing)
{
    h_run(1, granted_then_abort_main, NULL);
    cr_assert_eq(aw.a.err, 0);
    cr_assert(!aw.b_done_after_abort, "an unrelated waiter was resolved by the abort");
    cr_assert_eq(aw.waiters_after_abort, 1);
    cr_assert(aw.b_done);
    cr_assert_eq(aw.b.err, 0);
}

/* ---- semaphores: break ----------------------------------------------------------------- */

static struct {
    keel_sem s;
    keel_result w[2];
    keel_result later;
    bool try_after;
    size_t waiters_after;
} br;

static void break_main(void *arg)
{
    (void)arg;
    keel_sem_init(&br.s, 0);
    keel_on_done(keel_sem_wait(&br.s, 1), store_result, &br.w[0]);
    keel_on_done(keel_sem_wait(&br.s, 2), store_result, &br.w[1]);
    keel_sem_break(&br.s, -KEEL_ESEM_BROKEN);
    br.waiters_after = keel_sem_waiters(&br.s);
    keel_sem_signal(&br.s, 5);
    br.try_after = keel_sem_try_wait(&br.s, 1);
    keel_on_done(keel_sem_wait(&br.s, 1), store_result, &br.later);
    keel_stop();
}

Test(sync, breaking_a_semaphore_fails_every_current_and_future_waiter)
{
    h_run(1, break_main, NULL);
    cr_assert_eq(br.w[0].err, -KEEL_ESEM_BROKEN);
    cr_assert_eq(br.w[1].err, -KEEL_ESEM_BROKEN);
    cr_assert_eq(br.waiters_after, 0);
    cr_assert_eq(br.later.err, -KEEL_ESEM_BROKEN, "a wait after break got %d", br.later.err);
    cr_assert(!br.try_after, "try_wait succeeded on a broken semaphore");
}
