/* The stall detector: a task that holds its shard 100 ms is reported once,
 * with a backtrace naming it; cooperative work is never reported. */
#include "harness.h"

TestSuite(sched_stall, .timeout = 60);

static void spin_ms(unsigned ms)
{
    uint64_t end = h_now_ns() + (uint64_t)ms * 1000000;
    while (h_now_ns() < end) {
    }
}

/* Not static, and never inlined: the report names it (the binary exports
 * its symbols, as every keel binary does). */
__attribute__((noinline)) void sched_stall_test_hog(unsigned ms)
{
    spin_ms(ms);
    __asm__ volatile("" ::: "memory");
}

static keel_shard_stats st_after;

static void after_stall(void *ctx, keel_result r)
{
    (void)ctx;
    (void)r;
    keel_shard_stats_get(0, &st_after);
    keel_stop();
}

static keel_future *hog_task(void *arg)
{
    (void)arg;
    sched_stall_test_hog(100);
    return keel_make_ready(0);
}

static keel_future *then_wait(void *ctx, keel_result r)
{
    (void)ctx;
    (void)r;
    return keel_sleep(KEEL_MS(50)); /* more ticks: a second report would show */
}

static void stall_main(void *arg)
{
    (void)arg;
    h_watchdog(10000);
    /* In a group of its own: the report names it. */
    keel_future *f = keel_with_sched_group(keel_sched_group_find("stally"), hog_task, NULL);
    keel_on_done(keel_then(f, then_wait, NULL), after_stall, NULL);
}

static unsigned count(const char *hay, const char *needle)
{
    unsigned n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p++)
        n++;
    return n;
}

Test(sched_stall, a_100ms_task_is_reported_once_with_its_function)
{
    cr_assert_not_null(keel_sched_group_create("stally", 100));
    h_capture cap;
    h_capture_begin(&cap);
    keel_config c;
    h_config(&c, 1);
    c.stall_threshold_ms = 25;
    int rc = keel_run(&c, stall_main, NULL);
    h_capture_end(&cap);
    cr_assert_eq(rc, 0);
    h_assert_no_failures();
    cr_log_info("captured:\n%s", cap.text);
    cr_assert_eq(count(cap.text, "stall: shard 0"), 1, "expected exactly one report:\n%s",
                 cap.text);
    cr_assert(strstr(cap.text, "group stally"), "the report names the group:\n%s", cap.text);
    cr_assert(strstr(cap.text, "sched_stall_test_hog"), "the backtrace names the hog:\n%s",
              cap.text);
    cr_assert_eq(st_after.stalls, 1, "stalls counter is %llu", (unsigned long long)st_after.stalls);
}

/* ---- cooperative work is not a stall --------------------------------------------- */

static unsigned coop_left;

static keel_future *coop_step(void *ctx, keel_result r)
{
    (void)ctx;
    (void)r;
    if (coop_left-- == 0)
        return keel_make_ready(KEEL_STOP);
    spin_ms(2);
    return keel_make_ready(KEEL_CONTINUE);
}

static keel_future *coop_iter(void *ctx)
{
    return keel_then(keel_yield(), coop_step, ctx);
}

static void coop_done(void *ctx, keel_result r)
{
    (void)ctx;
    (void)r;
    keel_shard_stats_get(0, &st_after);
    keel_stop();
}

static void coop_main(void *arg)
{
    (void)arg;
    h_watchdog(20000);
    coop_left = 150; /* 300 ms of 2 ms tasks, yielding in between */
    keel_on_done(keel_repeat(coop_iter, NULL), coop_done, NULL);
}

Test(sched_stall, tasks_that_yield_are_never_reported)
{
    h_capture cap;
    h_capture_begin(&cap);
    keel_config c;
    h_config(&c, 1);
    int rc = keel_run(&c, coop_main, NULL);
    h_capture_end(&cap);
    cr_assert_eq(rc, 0);
    h_assert_no_failures();
    cr_assert_eq(count(cap.text, "stall:"), 0, "unexpected report:\n%s", cap.text);
    cr_assert_eq(st_after.stalls, 0);
}

Test(sched_stall, threshold_zero_turns_it_off)
{
    h_capture cap;
    h_capture_begin(&cap);
    keel_config c;
    h_config(&c, 1);
    c.stall_threshold_ms = 0;
    cr_assert_not_null(keel_sched_group_create("stally", 100));
    int rc = keel_run(&c, stall_main, NULL);
    h_capture_end(&cap);
    cr_assert_eq(rc, 0);
    cr_assert_eq(count(cap.text, "stall:"), 0, "unexpected report:\n%s", cap.text);
    cr_assert_eq(st_after.stalls, 0);
}
