/* Scheduling groups: shares are honoured by the scheduler's own accounting,
 * continuations stay in their group, and a hog that polls
 * keel_need_preempt() does not hold up the loop's timers and I/O. */
#include "harness.h"

TestSuite(sched_groups, .timeout = 60);

/* Spins for about us microseconds of wall time. */
static void spin_us(unsigned us)
{
    uint64_t end = h_now_ns() + (uint64_t)us * 1000;
    while (h_now_ns() < end) {
    }
}

static keel_future *go_on(void *ctx, keel_result r)
{
    (void)ctx;
    (void)r;
    return keel_make_ready(KEEL_CONTINUE);
}

/* ---- shares ------------------------------------------------------------------- */

static struct {
    keel_sched_group *a, *b;
    _Atomic int stop;
    keel_sched_group_stats sa, sb;
    unsigned wrong_group;
} sh;

static keel_future *spin_step(void *ctx)
{
    keel_sched_group *g = ctx;
    if (keel_sched_group_current() != g)
        sh.wrong_group++;
    if (atomic_load(&sh.stop))
        return keel_make_ready(KEEL_STOP);
    spin_us(20);
    return keel_then(keel_yield(), go_on, NULL);
}

static keel_future *spinner(void *arg)
{
    return keel_repeat(spin_step, arg);
}

static void shares_measured(void *ctx, keel_result r)
{
    (void)ctx;
    H_CHECK_EQ(r.err, 0);
    /* Read while both still compete: the accounting of a contested second. */
    keel_sched_group_stats_get(0, sh.a, &sh.sa);
    keel_sched_group_stats_get(0, sh.b, &sh.sb);
    atomic_store(&sh.stop, 1);
}

static void shares_done(void *ctx, keel_result r)
{
    (void)ctx;
    H_CHECK_EQ(r.err, 0);
    keel_stop();
}

static void shares_main(void *arg)
{
    (void)arg;
    h_watchdog(20000);
    /* Several chains per group, so each group always has a task queued. */
    keel_future *fs[8];
    for (int i = 0; i < 4; i++) {
        fs[2 * i] = keel_with_sched_group(sh.a, spinner, sh.a);
        fs[2 * i + 1] = keel_with_sched_group(sh.b, spinner, sh.b);
    }
    keel_on_done(keel_when_all(fs, 8, NULL), shares_done, NULL);
    keel_on_done(keel_sleep(KEEL_MS(1500)), shares_measured, NULL);
}

Test(sched_groups, shares_1000_to_250_split_cpu_80_20)
{
    sh.a = keel_sched_group_create("spin_a", 1000);
    sh.b = keel_sched_group_create("spin_b", 250);
    cr_assert_not_null(sh.a);
    cr_assert_not_null(sh.b);
    h_run(1, shares_main, NULL);
    double total = (double)(sh.sa.runtime_ns + sh.sb.runtime_ns);
    cr_assert_gt(total, 5e8, "the groups ran only %.0f ms in 1.5 s", total / 1e6);
    double pa = 100.0 * (double)sh.sa.runtime_ns / total;
    double pb = 100.0 * (double)sh.sb.runtime_ns / total;
    cr_log_info("shares 1000:250 -> %.1f%% : %.1f%% of %.0f ms (tasks %llu : %llu)", pa, pb,
                total / 1e6, (unsigned long long)sh.sa.tasks, (unsigned long long)sh.sb.tasks);
    cr_assert(pa >= 75 && pa <= 85, "group a (1000 shares) got %.1f%%, expected 80 +- 5", pa);
    cr_assert(pb >= 15 && pb <= 25, "group b (250 shares) got %.1f%%, expected 20 +- 5", pb);
    cr_assert_eq(sh.wrong_group, 0, "%u steps ran outside their group", sh.wrong_group);
    cr_assert_gt(sh.sb.waits, 0);
    cr_assert_gt(sh.sb.wait_ns, 0, "b waited for a + the histogram is fed");
}

/* ---- the group API ------------------------------------------------------------- */

Test(sched_groups, create_validates_and_finds)
{
    cr_assert_eq(keel_sched_group_count(), 2);
    cr_assert_str_eq(keel_sched_group_name(keel_sched_group_main()), "main");
    cr_assert_str_eq(keel_sched_group_name(keel_sched_group_background()), "background");
    cr_assert_eq(keel_sched_group_shares(keel_sched_group_main()), 1000);
    cr_assert_eq(keel_sched_group_shares(keel_sched_group_background()), 200);
    errno = 0;
    cr_assert_null(keel_sched_group_create("main", 10));
    cr_assert_eq(errno, EEXIST);
    cr_assert_null(keel_sched_group_create("x", 0));
    cr_assert_eq(errno, EINVAL);
    cr_assert_null(keel_sched_group_create("x", 10001));
    cr_assert_null(keel_sched_group_create("", 10));
    cr_assert_null(keel_sched_group_create("a-name-that-is-longer-than-31-chars", 10));
    keel_sched_group *g = keel_sched_group_create("compaction", 100);
    cr_assert_not_null(g);
    cr_assert_eq(keel_sched_group_find("compaction"), g);
    cr_assert_eq(keel_sched_group_at(keel_sched_group_index(g)), g);
    cr_assert_eq(keel_sched_group_set_shares(g, 0), -EINVAL);
    cr_assert_eq(keel_sched_group_set_shares(g, 300), 0);
    cr_assert_eq(keel_sched_group_shares(g), 300);
    char name[16];
    unsigned made = keel_sched_group_count();
    for (unsigned i = made; i < KEEL_MAX_SCHED_GROUPS; i++) {
        snprintf(name, sizeof(name), "g%u", i);
        cr_assert_not_null(keel_sched_group_create(name, 1));
    }
    cr_assert_null(keel_sched_group_create("one-too-many", 1));
    cr_assert_eq(errno, ENOSPC);
}

/* ---- inheritance ------------------------------------------------------------------ */

static struct {
    keel_sched_group *g;
    int in_fn, in_cont, in_remote, caller_cont;
} inh;

static keel_future *remote_check(void *arg)
{
    (void)arg;
    inh.in_remote = keel_sched_group_current() == inh.g;
    return keel_make_ready(7);
}

static keel_future *after_sleep(void *ctx, keel_result r)
{
    (void)ctx;
    (void)r;
    inh.in_cont = keel_sched_group_current() == inh.g;
    return keel_submit_to(keel_shard_count() - 1, remote_check, NULL);
}

static keel_future *in_group(void *arg)
{
    (void)arg;
    inh.in_fn = keel_sched_group_current() == inh.g;
    return keel_then(keel_sleep(KEEL_MS(2)), after_sleep, NULL);
}

static void caller_done(void *ctx, keel_result r)
{
    (void)ctx;
    H_CHECK_OK(r, 7);
    inh.caller_cont = keel_sched_group_current() == keel_sched_group_main();
    keel_stop();
}

static void inherit_main(void *arg)
{
    (void)arg;
    h_watchdog(5000);
    keel_on_done(keel_with_sched_group(inh.g, in_group, NULL), caller_done, NULL);
}

Test(sched_groups, continuations_inherit_the_group_and_the_caller_keeps_its_own)
{
    inh.g = keel_sched_group_create("inherit", 500);
    unsigned n = h_cpus() >= 2 ? 2 : 1;
    h_run(n, inherit_main, NULL);
    cr_assert(inh.in_fn, "fn ran outside its group");
    cr_assert(inh.in_cont, "a continuation attached in the group ran outside it");
    cr_assert(inh.in_remote, "keel_submit_to's work ran outside the sender's group");
    cr_assert(inh.caller_cont, "the caller's continuation did not run in the caller's group");
}

/* ---- preemption --------------------------------------------------------------------- */

#define PROBES 7

static struct {
    keel_sched_group *g;
    uint64_t deadline_ns, hog_end_ns;
    double late_ms[PROBES];
    int probes;
    unsigned slices;
} pre;

static keel_future *hog_step(void *ctx)
{
    (void)ctx;
    if (h_now_ns() >= pre.hog_end_ns)
        return keel_make_ready(KEEL_STOP);
    /* A long computation that checks in with the scheduler. */
    while (!keel_need_preempt())
        spin_us(5);
    pre.slices++;
    return keel_then(keel_yield(), go_on, NULL);
}

static keel_future *hog(void *arg)
{
    (void)arg;
    return keel_repeat(hog_step, NULL);
}

/* Probes one after another while the hog runs: each a 1 ms sleep, timed
 * from its deadline to its continuation. */
static void probe_fired(void *ctx, keel_result r)
{
    (void)ctx;
    H_CHECK_EQ(r.err, 0);
    pre.late_ms[pre.probes++] = (double)(h_now_ns() - pre.deadline_ns) / 1e6;
    if (pre.probes < PROBES) {
        pre.deadline_ns = h_now_ns() + KEEL_MS(1);
        keel_on_done(keel_sleep(KEEL_MS(1)), probe_fired, NULL);
    }
}

static void hog_done(void *ctx, keel_result r)
{
    (void)ctx;
    H_CHECK_EQ(r.err, 0);
    keel_stop();
}

static void preempt_main(void *arg)
{
    (void)arg;
    h_watchdog(10000);
    pre.hog_end_ns = h_now_ns() + KEEL_MS(300);
    keel_on_done(keel_with_sched_group(pre.g, hog, NULL), hog_done, NULL);
    pre.deadline_ns = h_now_ns() + KEEL_MS(1);
    keel_on_done(keel_sleep(KEEL_MS(1)), probe_fired, NULL);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The median of several probes: the kernel may preempt the whole shard
 * thread now and then on a busy 2-CPU machine, which no scheduler in the
 * process can help; the median shows what keel's own loop does. */
Test(sched_groups, a_hog_polling_need_preempt_lets_a_1ms_timer_fire_within_20ms)
{
    pre.g = keel_sched_group_create("hog", 1000);
    h_run(1, preempt_main, NULL);
    cr_assert_eq(pre.probes, PROBES, "only %d of %d timers fired during the hog", pre.probes,
                 PROBES);
    qsort(pre.late_ms, PROBES, sizeof(double), cmp_double);
    double med = pre.late_ms[PROBES / 2];
    cr_log_info("1 ms timers under a hog fired %.3f ms late (median; min %.3f, max %.3f; %u hog "
                "slices)",
                med, pre.late_ms[0], pre.late_ms[PROBES - 1], pre.slices);
    cr_assert_lt(med, 20.0, "1 ms timers fired %.3f ms late (median)", med);
    cr_assert_gt(pre.slices, 10, "the hog yielded only %u times in 300 ms", pre.slices);
}

/* A flood of ready tasks (each yields at once) still lets the loop poll:
 * the quota bounds a turn, not the queue's length. */
static struct {
    _Atomic int stop;
    uint64_t deadline_ns, fired_ns;
    uint64_t steps;
} fl;

static keel_future *flood_step(void *ctx)
{
    (void)ctx;
    if (atomic_load(&fl.stop))
        return keel_make_ready(KEEL_STOP);
    fl.steps++;
    return keel_then(keel_yield(), go_on, NULL);
}

static keel_future *flood(void *arg)
{
    (void)arg;
    return keel_repeat(flood_step, NULL);
}

static void flood_timer(void *ctx, keel_result r)
{
    (void)ctx;
    (void)r;
    fl.fired_ns = h_now_ns();
    atomic_store(&fl.stop, 1);
}

static void flood_main(void *arg)
{
    (void)arg;
    h_watchdog(10000);
    keel_future *fs[64];
    for (int i = 0; i < 64; i++)
        fs[i] = keel_with_sched_group(keel_sched_group_background(), flood, NULL);
    keel_on_done(keel_when_all(fs, 64, NULL), hog_done, NULL);
    fl.deadline_ns = h_now_ns() + KEEL_MS(1);
    keel_on_done(keel_sleep(KEEL_MS(1)), flood_timer, NULL);
}

Test(sched_groups, a_flood_of_ready_tasks_does_not_hold_up_a_timer)
{
    h_run(1, flood_main, NULL);
    double late_ms = (double)(fl.fired_ns - fl.deadline_ns) / 1e6;
    cr_log_info("1 ms timer under a task flood fired %.3f ms late (%llu steps)", late_ms,
                (unsigned long long)fl.steps);
    cr_assert_lt(late_ms, 20.0, "the timer fired %.3f ms late", late_ms);
    cr_assert_gt(fl.steps, 1000);
}
