/* Configuration: defaults, the environment, command-line options, and
 * keel_run refusing configurations it cannot honour, with a clear message. */
#include "harness.h"

/* A hung test fails with a timeout instead of stalling the whole run. */
TestSuite(config, .timeout = 60);

static void clear_env(void)
{
    unsetenv("KEEL_SHARDS");
    unsetenv("KEEL_CPUSET");
    unsetenv("KEEL_BACKEND");
}

/* ---- defaults and the environment ------------------------------------------------ */

Test(config, config_init_without_environment_gives_the_documented_defaults)
{
    clear_env();
    keel_config c;
    memset(&c, 0xa5, sizeof(c));
    keel_config_init(&c);
    cr_assert_eq(c.shards, 0);
    cr_assert_null(c.cpuset);
    cr_assert_null(c.backend);
    cr_assert_eq(c.task_quota_us, 500);
    cr_assert_eq(c.msg_ring_capacity, 1024);
    cr_assert_eq(c.blocking_threads, 4);
    cr_assert_eq(c.ring_entries, 1024);
    cr_assert(c.handle_signals);
    cr_assert(!c.quiet);
}

Test(config, config_init_reads_keel_shards_keel_cpuset_and_keel_backend)
{
    clear_env();
    setenv("KEEL_SHARDS", "1", 1);
    setenv("KEEL_CPUSET", "0", 1);
    setenv("KEEL_BACKEND", "epoll", 1);
    keel_config c;
    keel_config_init(&c);
    cr_assert_eq(c.shards, 1);
    cr_assert_str_eq(c.cpuset, "0");
    cr_assert_str_eq(c.backend, "epoll");
}

/* ---- parse_args ------------------------------------------------------------------- */

typedef struct argv_buf {
    int argc;
    char *argv[32];
} argv_buf;

/* Copies a NULL-terminated list into a mutable argv (parse_args edits it). */
static void make_argv(argv_buf *b, const char *const *list)
{
    b->argc = 0;
    while (list[b->argc]) {
        b->argv[b->argc] = (char *)list[b->argc];
        b->argc++;
    }
    b->argv[b->argc] = NULL;
}

Test(config, parse_args_takes_keel_options_in_both_forms_and_keeps_the_rest_in_order)
{
    clear_env();
    static const char *const args[] = {
        "app",       "--shards",  "2",     "-v",        "--cpuset=0-1",
        "input.txt", "--backend", "epoll", "--other=x", "--task-quota-us=250",
        "--",        NULL};
    argv_buf b;
    make_argv(&b, args);
    keel_config c;
    keel_config_init(&c);
    cr_assert_eq(keel_config_parse_args(&c, &b.argc, b.argv), 0);
    cr_assert_eq(c.shards, 2);
    cr_assert_str_eq(c.cpuset, "0-1");
    cr_assert_str_eq(c.backend, "epoll");
    cr_assert_eq(c.task_quota_us, 250);
    cr_assert_eq(b.argc, 5, "argc is %d", b.argc);
    cr_assert_str_eq(b.argv[0], "app");
    cr_assert_str_eq(b.argv[1], "-v");
    cr_assert_str_eq(b.argv[2], "input.txt");
    cr_assert_str_eq(b.argv[3], "--other=x");
    cr_assert_str_eq(b.argv[4], "--");
    cr_assert_null(b.argv[5]);
}

Test(config, parse_args_takes_shards_with_an_equals_sign_and_cpuset_with_a_space)
{
    clear_env();
    static const char *const args[] = {"app", "--shards=1", "--cpuset", "0", NULL};
    argv_buf b;
    make_argv(&b, args);
    keel_config c;
    keel_config_init(&c);
    cr_assert_eq(keel_config_parse_args(&c, &b.argc, b.argv), 0);
    cr_assert_eq(c.shards, 1);
    cr_assert_str_eq(c.cpuset, "0");
    cr_assert_eq(b.argc, 1);
    cr_assert_null(b.argv[1]);
}

Test(config, parse_args_without_keel_options_changes_nothing)
{
    clear_env();
    static const char *const args[] = {"app", "--shard", "3", "--shardsx=1", NULL};
    argv_buf b;
    make_argv(&b, args);
    keel_config c, before;
    keel_config_init(&c);
    before = c;
    cr_assert_eq(keel_config_parse_args(&c, &b.argc, b.argv), 0);
    cr_assert_eq(b.argc, 4);
    cr_assert_str_eq(b.argv[1], "--shard");
    cr_assert_str_eq(b.argv[3], "--shardsx=1");
    cr_assert_eq(c.shards, before.shards);
}

/* Each bad argument list must fail with -KEEL_EBADCONFIG and say why on
 * stderr, naming the option. */
static void expect_bad_args(const char *const *list, const char *must_mention)
{
    argv_buf b;
    make_argv(&b, list);
    keel_config c;
    keel_config_init(&c);
    h_capture cap;
    h_capture_begin(&cap);
    int rc = keel_config_parse_args(&c, &b.argc, b.argv);
    const char *err = h_capture_end(&cap);
    cr_assert_eq(rc, -KEEL_EBADCONFIG, "'%s %s' was accepted (rc %d)", list[1],
                 list[2] ? list[2] : "", rc);
    cr_assert(strstr(err, must_mention) != NULL, "the message for '%s' does not name '%s': %s",
              list[1], must_mention, err);
}

Test(config, parse_args_rejects_zero_shards)
{
    clear_env();
    expect_bad_args((const char *const[]){"app", "--shards", "0", NULL}, "--shards");
    expect_bad_args((const char *const[]){"app", "--shards=0", NULL}, "--shards");
}

Test(config, parse_args_rejects_a_shard_count_that_is_not_a_number)
{
    clear_env();
    expect_bad_args((const char *const[]){"app", "--shards", "abc", NULL}, "--shards");
    expect_bad_args((const char *const[]){"app", "--shards=2x", NULL}, "--shards");
    expect_bad_args((const char *const[]){"app", "--shards=", NULL}, "--shards");
    expect_bad_args((const char *const[]){"app", "--shards", "-1", NULL}, "--shards");
    expect_bad_args((const char *const[]){"app", "--shards", "99999999999999999999", NULL},
                    "--shards");
}

Test(config, parse_args_rejects_an_option_missing_its_value)
{
    clear_env();
    expect_bad_args((const char *const[]){"app", "--shards", NULL}, "--shards");
    expect_bad_args((const char *const[]){"app", "--cpuset", NULL}, "--cpuset");
}

Test(config, parse_args_rejects_an_unknown_backend)
{
    clear_env();
    expect_bad_args((const char *const[]){"app", "--backend", "kqueue", NULL}, "kqueue");
}

Test(config, parse_args_rejects_a_zero_or_non_numeric_task_quota)
{
    clear_env();
    expect_bad_args((const char *const[]){"app", "--task-quota-us=0", NULL}, "--task-quota-us");
    expect_bad_args((const char *const[]){"app", "--task-quota-us", "fast", NULL},
                    "--task-quota-us");
}

Test(config, usage_lists_every_option)
{
    const char *u = keel_config_usage();
    cr_assert_not_null(u);
    cr_assert(strstr(u, "--shards") && strstr(u, "--cpuset") && strstr(u, "--backend") &&
              strstr(u, "--task-quota-us"));
}

/* ---- keel_run refuses what it cannot honour ----------------------------------------- */

static _Atomic int main_ran;

static void must_not_run(void *arg)
{
    (void)arg;
    atomic_store(&main_ran, 1);
    keel_stop();
}

/* Runs keel_run with c and expects -KEEL_EBADCONFIG, main_fn never called,
 * and a log line containing each of the given fragments. */
static void expect_run_refused(const keel_config *c, const char *frag1, const char *frag2)
{
    h_capture cap;
    h_capture_begin(&cap);
    int rc = keel_run(c, must_not_run, NULL);
    const char *err = h_capture_end(&cap);
    cr_assert_eq(rc, -KEEL_EBADCONFIG, "keel_run returned %d (%s)", rc, keel_strerror(rc));
    cr_assert_eq(atomic_load(&main_ran), 0, "main_fn ran on a refused configuration");
    h_assert_no_leaks();
    if (frag1)
        cr_assert(strstr(err, frag1) != NULL, "the log does not mention '%s': %s", frag1, err);
    if (frag2)
        cr_assert(strstr(err, frag2) != NULL, "the log does not mention '%s': %s", frag2, err);
}

Test(config, keel_run_refuses_more_shards_than_cpus_and_says_how_many_there_are)
{
    keel_config c;
    h_config(&c, h_cpus() + 1);
    char want[32], have[32];
    snprintf(want, sizeof(want), "--shards %u", h_cpus() + 1);
    snprintf(have, sizeof(have), "only %u CPU", h_cpus());
    expect_run_refused(&c, want, have);
}

Test(config, keel_run_refuses_a_cpuset_outside_the_affinity_mask_and_names_the_cpu)
{
    cpu_set_t mask;
    cr_assert_eq(sched_getaffinity(0, sizeof(mask), &mask), 0);
    int outside = -1;
    for (int cpu = 0; cpu < 1024 && outside < 0; cpu++)
        if (!CPU_ISSET(cpu, &mask))
            outside = cpu;
    cr_assert_geq(outside, 0);
    char cpuset[16], named[32];
    snprintf(cpuset, sizeof(cpuset), "%d", outside);
    snprintf(named, sizeof(named), "CPU %d", outside);
    keel_config c;
    h_config(&c, 0);
    c.cpuset = cpuset;
    expect_run_refused(&c, named, "affinity");
}

Test(config, keel_run_refuses_a_malformed_cpuset_and_quotes_it)
{
    static const char *const bad[] = {"1-0", "abc", "", "0,,1", "0-", "-1", "0;1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        keel_config c;
        h_config(&c, 0);
        c.cpuset = bad[i];
        char quoted[32];
        snprintf(quoted, sizeof(quoted), "'%s'", bad[i]);
        expect_run_refused(&c, "cpuset", quoted);
    }
}

Test(config, keel_run_refuses_an_unknown_backend_name)
{
    keel_config c;
    h_config(&c, 1);
    c.backend = "kqueue";
    expect_run_refused(&c, "kqueue", NULL);
}

/* ---- keel_run honours what it is given ------------------------------------------------ */

static struct {
    unsigned count;
    int cpu0;
    char backend[16];
} seen_cfg;

static void record_cfg(void *arg)
{
    (void)arg;
    seen_cfg.count = keel_shard_count();
    seen_cfg.cpu0 = keel_shard_cpu(0);
    snprintf(seen_cfg.backend, sizeof(seen_cfg.backend), "%s", keel_backend_name());
    keel_stop();
}

Test(config, keel_run_pins_one_shard_to_the_cpu_named_by_cpuset)
{
    cpu_set_t mask;
    cr_assert_eq(sched_getaffinity(0, sizeof(mask), &mask), 0);
    int last = -1;
    for (int cpu = 0; cpu < 1024; cpu++)
        if (CPU_ISSET(cpu, &mask))
            last = cpu;
    char cpuset[16];
    snprintf(cpuset, sizeof(cpuset), "%d", last);
    keel_config c;
    h_config(&c, 0);
    c.cpuset = cpuset;
    h_run_cfg(&c, record_cfg, NULL);
    cr_assert_eq(seen_cfg.count, 1);
    cr_assert_eq(seen_cfg.cpu0, last);
}

Test(config, keel_run_uses_the_epoll_backend_when_asked)
{
    keel_config c;
    h_config(&c, 1);
    c.backend = "epoll";
    h_run_cfg(&c, record_cfg, NULL);
    cr_assert_str_eq(seen_cfg.backend, "epoll");
}

Test(config, keel_run_with_shards_zero_runs_one_shard_per_cpu)
{
    keel_config c;
    h_config(&c, 0);
    c.cpuset = NULL;
    h_run_cfg(&c, record_cfg, NULL);
    cr_assert_eq(seen_cfg.count, h_cpus());
}
