/* The trace recorder: Chrome trace-event JSON with one track per shard,
 * task slices named by group, sleeps, and a flow for each cross-shard
 * message; a stop that writes nothing when nothing was recorded; a ring
 * that overflows keeps the newest events; --trace writes its file at exit.
 *
 * The files are checked with jq (tools/deps.sh installs it), as a user's
 * script would check them. */
#include <sys/stat.h>

#include "harness.h"
#include "internal.h"

TestSuite(sched_trace, .timeout = 60);

enum { NSHARDS = 2 };

/* ---- a scratch directory and jq --------------------------------------------- */

static char dir[64];
static char path[128];

static void make_dir(void)
{
    strcpy(dir, "/tmp/keel-trace-XXXXXX");
    cr_assert_not_null(mkdtemp(dir), "mkdtemp failed: %s", strerror(errno));
    snprintf(path, sizeof(path), "%s/trace.json", dir);
}

static bool exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0;
}

static void remove_dir(void)
{
    char tmp[160];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    unlink(path);
    unlink(tmp);
    rmdir(dir);
}

/* Runs `jq -r FILTER file` and returns its output as a number; fails the
 * test if jq fails (invalid JSON included) or prints something else.
 * Filters use only double quotes: they go inside single quotes. */
static long long jq_num(const char *file, const char *filter)
{
    char cmd[2048], out[256] = "";
    snprintf(cmd, sizeof(cmd), "jq -r '%s' '%s' 2>&1", filter, file);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p, "popen(jq) failed");
    size_t n = fread(out, 1, sizeof(out) - 1, p);
    out[n] = 0;
    int status = pclose(p);
    cr_assert_eq(status, 0, "jq failed (%d; is jq installed? tools/deps.sh) on %s: %s", status,
                 filter, out);
    char *end;
    long long v = strtoll(out, &end, 10);
    cr_assert(end != out && (*end == '\n' || *end == 0), "jq printed '%s' for %s", out, filter);
    return v;
}

/* Events of the trace that match a jq condition, e.g. `.ph=="X"`. */
static long long count(const char *file, const char *cond)
{
    char filter[1024];
    snprintf(filter, sizeof(filter), "[.traceEvents[] | select(%s)] | length", cond);
    return jq_num(file, filter);
}

/* Checks what every trace must be: JSON with the Chrome trace-event
 * layout, a named track (thread_name) per shard, non-negative times, and
 * every flow start matched by a finish and back. */
static void check_shape(const char *file, unsigned shards)
{
    cr_assert_eq(jq_num(file, ".traceEvents | type == \"array\" | if . then 1 else 0 end"), 1);
    cr_assert_eq(jq_num(file, "if .displayTimeUnit == \"ns\" then 1 else 0 end"), 1);
    cr_assert_eq(count(file, ".ph == \"M\" and .name == \"process_name\""), 1);
    for (unsigned s = 0; s < shards; s++) {
        char cond[256];
        snprintf(cond, sizeof(cond),
                 ".ph == \"M\" and .name == \"thread_name\" and .tid == %u and .pid == 1 and "
                 ".args.name == \"shard %u\"",
                 s, s);
        cr_assert_eq(count(file, cond), 1, "no track for shard %u", s);
    }
    cr_assert_eq(count(file, ".ph == \"M\" and .name == \"thread_name\""), shards);
    cr_assert_eq(count(file, "(.ts // 0) < 0 or (.dur // 0) < 0 or .pid != 1"), 0);
    /* Flows: the sets of start and finish ids are equal, and each id has
     * exactly one start. */
    cr_assert_eq(jq_num(file, "[.traceEvents[] | select(.ph == \"s\") | .id] as $s"
                              " | [.traceEvents[] | select(.ph == \"f\") | .id] as $f"
                              " | if ($s | sort) == ($f | sort) and ($s | length) =="
                              " ($s | unique | length) then 1 else 0 end"),
                 1, "flow starts and finishes do not pair up");
    cr_assert_eq(count(file, ".ph == \"f\" and .bp != \"e\""), 0);
}

/* ---- a trace of two shards ---------------------------------------------------- */

static struct {
    keel_sched_group *grp;
    int start_rc, start_again_rc;
    bool active_during, active_after;
    keel_result stop;
    int yields;
    uint64_t events[NSHARDS];
} t1;

static keel_future *yield_step_done(void *ctx, keel_result r)
{
    (void)ctx;
    (void)r;
    return keel_make_ready(++t1.yields < 20 ? KEEL_CONTINUE : KEEL_STOP);
}

static keel_future *yield_step(void *ctx)
{
    return keel_then(keel_yield(), yield_step_done, ctx);
}

static keel_future *yields_in_group(void *arg)
{
    (void)arg;
    if (keel_sched_group_current() != t1.grp)
        H_FAIL("keel_with_sched_group ran fn outside its group");
    return keel_repeat(yield_step, NULL);
}

static keel_future *run_in_group(void *ctx, keel_result r)
{
    (void)ctx;
    (void)r;
    return keel_with_sched_group(t1.grp, yields_in_group, NULL);
}

static keel_future *remote_yielded(void *ctx, keel_result r)
{
    (void)ctx;
    (void)r;
    return keel_make_ready(7);
}

static keel_future *remote_slept(void *ctx, keel_result r)
{
    (void)ctx;
    (void)r;
    return keel_then(keel_yield(), remote_yielded, NULL);
}

/* On shard 1: a sleep, so that shard waits in the kernel while traced,
 * then a yield, so that it runs a task from its run queue (the message's
 * fn itself runs as the message is received, not from the queue). */
static keel_future *remote_sleep(void *arg)
{
    (void)arg;
    return keel_then(keel_sleep(KEEL_MS(1)), remote_slept, NULL);
}

static keel_future *hop(void *ctx, keel_result r)
{
    (void)ctx;
    (void)r;
    return keel_submit_to(1, remote_sleep, NULL);
}

static keel_future *count_here(void *arg)
{
    (void)arg;
    keel_shard_stats st;
    keel_shard_stats_get(keel_shard_id(), &st);
    t1.events[keel_shard_id()] = st.trace_events;
    return keel_make_ready(0);
}

static keel_future *after_hop(void *ctx, keel_result r)
{
    (void)ctx;
    H_CHECK_OK(r, 7);
    return keel_invoke_on_all(count_here, NULL);
}

static keel_future *t1_stop(void *ctx, keel_result r)
{
    (void)ctx;
    H_CHECK_OK(r, 0);
    return keel_trace_stop(path);
}

static void t1_stopped(void *ctx, keel_result r)
{
    (void)ctx;
    t1.stop = r;
    t1.active_after = keel_trace_active();
    keel_stop();
}

static void t1_main(void *arg)
{
    (void)arg;
    h_watchdog(20000);
    t1.start_rc = keel_trace_start();
    t1.start_again_rc = keel_trace_start();
    t1.active_during = keel_trace_active();
    keel_future *f = keel_sleep(KEEL_MS(2));
    f = keel_then(f, run_in_group, NULL);
    f = keel_then(f, hop, NULL);
    f = keel_then(f, after_hop, NULL);
    f = keel_then(f, t1_stop, NULL);
    keel_on_done(f, t1_stopped, NULL);
}

Test(sched_trace, a_trace_has_a_track_per_shard_task_slices_by_group_sleeps_and_a_submit_to_flow)
{
    h_require_shards(NSHARDS);
    make_dir();
    t1.grp = keel_sched_group_create("traced", 500);
    cr_assert_not_null(t1.grp, "keel_sched_group_create: %s", strerror(errno));
    keel_config c;
    h_config(&c, NSHARDS);
    h_run_cfg(&c, t1_main, NULL);

    cr_assert_eq(t1.start_rc, 0, "keel_trace_start: %d", t1.start_rc);
    cr_assert_eq(t1.start_again_rc, -EALREADY);
    cr_assert(t1.active_during && !t1.active_after);
    cr_assert_eq(t1.stop.err, 0, "keel_trace_stop failed: %s", keel_strerror(t1.stop.err));
    for (unsigned s = 0; s < NSHARDS; s++)
        cr_assert_gt(t1.events[s], 0, "shard %u counted no trace events", s);
    cr_assert(exists(path), "no trace file at %s", path);
    char tmp[160];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    cr_assert(!exists(tmp), "the temporary file was left behind");

    check_shape(path, NSHARDS);
    /* The future counts the recorded events: every event but metadata and
     * the flow arrows. */
    cr_assert_eq(count(path, ".ph != \"M\" and .ph != \"s\" and .ph != \"f\""), t1.stop.val);
    for (unsigned s = 0; s < NSHARDS; s++) {
        char cond[128];
        snprintf(cond, sizeof(cond), ".ph == \"X\" and .cat == \"task\" and .tid == %u", s);
        cr_assert_geq(count(path, cond), 1, "no task slice on shard %u", s);
    }
    /* The 20 yields ran in the group, each a task slice named after it. */
    cr_assert_geq(count(path, ".ph == \"X\" and .cat == \"task\" and .name == \"traced\" and "
                              ".tid == 0"),
                  20);
    cr_assert_geq(count(path, ".ph == \"X\" and .name == \"sleep\" and .cat == \"sleep\""), 1);
    /* The submit_to: a flow from shard 0 to shard 1, and its reply back. */
    cr_assert_geq(jq_num(path, "[.traceEvents[] | select(.ph == \"s\" and .tid == 0) | .id] as $s"
                               " | [.traceEvents[] | select(.ph == \"f\" and .tid == 1 and"
                               " .cat == \"xshard\" and .name == \"xshard\") | .id"
                               " | select(IN($s[]))] | length"),
                  1, "no flow from shard 0 to shard 1");
    cr_assert_geq(jq_num(path, "[.traceEvents[] | select(.ph == \"s\" and .tid == 1) | .id] as $s"
                               " | [.traceEvents[] | select(.ph == \"f\" and .tid == 0) | .id"
                               " | select(IN($s[]))] | length"),
                  1, "no flow for the reply from shard 1 to shard 0");
    cr_assert_geq(count(path, ".ph == \"X\" and .name == \"send to shard 1\" and .tid == 0"), 1);
    cr_assert_geq(count(path, ".ph == \"X\" and .name == \"recv from shard 0\" and .tid == 1"), 1);
    remove_dir();
}

/* ---- stopping a trace that never started -------------------------------------- */

static struct {
    bool active;
    keel_result stop_path, stop_null;
    uint64_t events;
} t2;

static void t2_null_done(void *ctx, keel_result r)
{
    (void)ctx;
    t2.stop_null = r;
    keel_shard_stats st;
    keel_shard_stats_get(0, &st);
    t2.events = st.trace_events;
    keel_stop();
}

static void t2_path_done(void *ctx, keel_result r)
{
    (void)ctx;
    t2.stop_path = r;
    keel_on_done(keel_trace_stop(NULL), t2_null_done, NULL);
}

static void t2_main(void *arg)
{
    (void)arg;
    h_watchdog(20000);
    t2.active = keel_trace_active();
    keel_on_done(keel_trace_stop(path), t2_path_done, NULL);
}

Test(sched_trace, a_stop_without_a_trace_fails_and_writes_nothing)
{
    make_dir();
    keel_config c;
    h_config(&c, 1);
    h_run_cfg(&c, t2_main, NULL);
    cr_assert(!t2.active);
    cr_assert_eq(t2.stop_path.err, -EALREADY, "stop without a trace: %d", t2.stop_path.err);
    cr_assert_eq(t2.stop_null.err, -EINVAL, "stop with no file anywhere: %d", t2.stop_null.err);
    cr_assert_eq(t2.events, 0);
    cr_assert(!exists(path), "a file was written");
    remove_dir();
}

/* ---- a ring that overflows ---------------------------------------------------- */

/* 16 KiB hold 512 records per shard. The early phase makes ~800 events on
 * shard 0 (200 round trips to shard 1), the late one 400 yields in group
 * `late`: the ring keeps the late tasks and the last round trips only. */
#define EARLY_TRIPS 200
#define LATE_YIELDS 400

static struct {
    keel_sched_group *late;
    int trips, yields;
    keel_result stop;
    uint64_t events0;
} t3;

static keel_future *echo(void *arg)
{
    return keel_make_ready((int64_t)(intptr_t)arg);
}

static keel_future *trip_done(void *ctx, keel_result r)
{
    (void)ctx;
    H_CHECK_OK(r, t3.trips);
    return keel_make_ready(++t3.trips < EARLY_TRIPS ? KEEL_CONTINUE : KEEL_STOP);
}

static keel_future *trip(void *ctx)
{
    (void)ctx;
    return keel_then(keel_submit_to(1, echo, (void *)(intptr_t)t3.trips), trip_done, NULL);
}

static keel_future *late_step_done(void *ctx, keel_result r)
{
    (void)ctx;
    (void)r;
    return keel_make_ready(++t3.yields < LATE_YIELDS ? KEEL_CONTINUE : KEEL_STOP);
}

static keel_future *late_step(void *ctx)
{
    return keel_then(keel_yield(), late_step_done, ctx);
}

static keel_future *late_phase(void *arg)
{
    (void)arg;
    return keel_repeat(late_step, NULL);
}

static keel_future *t3_late(void *ctx, keel_result r)
{
    (void)ctx;
    H_CHECK_OK(r, 0);
    return keel_with_sched_group(t3.late, late_phase, NULL);
}

static keel_future *t3_stop(void *ctx, keel_result r)
{
    (void)ctx;
    H_CHECK_OK(r, 0);
    keel_shard_stats st;
    keel_shard_stats_get(0, &st);
    t3.events0 = st.trace_events;
    return keel_trace_stop(path);
}

static void t3_stopped(void *ctx, keel_result r)
{
    (void)ctx;
    t3.stop = r;
    keel_stop();
}

static void t3_main(void *arg)
{
    (void)arg;
    h_watchdog(20000);
    if (keel_trace_start())
        H_FAIL("keel_trace_start failed");
    keel_future *f = keel_repeat(trip, NULL);
    f = keel_then(f, t3_late, NULL);
    f = keel_then(f, t3_stop, NULL);
    keel_on_done(f, t3_stopped, NULL);
}

Test(sched_trace, a_full_ring_keeps_the_newest_events_and_still_writes_valid_json)
{
    h_require_shards(NSHARDS);
    make_dir();
    t3.late = keel_sched_group_create("late", 1000);
    cr_assert_not_null(t3.late);
    keel_config c;
    h_config(&c, NSHARDS);
    c.trace_buffer_kb = 16;
    h_run_cfg(&c, t3_main, NULL);
    cr_assert_eq(t3.stop.err, 0, "keel_trace_stop failed: %s", keel_strerror(t3.stop.err));
    cr_assert_gt(t3.events0, 512, "shard 0 recorded only %llu events: the ring never filled",
                 (unsigned long long)t3.events0);

    check_shape(path, NSHARDS);
    long long kept0 = count(path, ".tid == 0 and .ph != \"M\" and .ph != \"s\" and .ph != \"f\"");
    cr_assert_leq(kept0, 512, "shard 0 kept %lld events in a 512-record ring", kept0);
    cr_assert_geq(kept0, 500, "shard 0 kept only %lld events", kept0);
    /* The newest: every late task survived (the yields, and the call that
     * started them in the group)... */
    cr_assert_geq(count(path, ".ph == \"X\" and .name == \"late\" and .tid == 0"), LATE_YIELDS);
    /* ...and of the round trips before them only the last few did. */
    long long sends = count(path, ".name == \"send to shard 1\" and .tid == 0");
    cr_assert(sends > 0 && sends < EARLY_TRIPS, "shard 0 kept %lld of %d sends", sends,
              EARLY_TRIPS);
    /* Receives whose send was overwritten get no dangling flow arrow. */
    long long recvs = count(path, ".name == \"recv from shard 0\" and .tid == 1");
    long long finishes = count(path, ".ph == \"f\" and .tid == 1");
    cr_assert_gt(recvs, finishes, "%lld receives on shard 1, %lld flow finishes", recvs, finishes);
    remove_dir();
}

/* ---- --trace FILE: written at exit -------------------------------------------- */

static keel_future *t4_hopped(void *ctx, keel_result r)
{
    (void)ctx;
    H_CHECK_OK(r, 5);
    keel_stop();
    return keel_make_ready(0);
}

static void t4_main(void *arg)
{
    (void)arg;
    h_watchdog(20000);
    if (!keel_trace_active())
        H_FAIL("--trace did not start tracing at keel_run");
    keel_detach(keel_then(keel_submit_to(1, echo, (void *)5), t4_hopped, NULL));
}

Test(sched_trace, a_trace_file_in_the_config_records_from_the_start_and_is_written_at_exit)
{
    h_require_shards(NSHARDS);
    make_dir();
    keel_config c;
    h_config(&c, NSHARDS);
    c.trace_file = path;
    h_run_cfg(&c, t4_main, NULL);
    cr_assert(exists(path), "no trace file at exit");
    check_shape(path, NSHARDS);
    cr_assert_geq(count(path, ".ph == \"s\" and .tid == 0"), 1);
    cr_assert_geq(count(path, ".ph == \"f\" and .tid == 1"), 1);
    remove_dir();
}

/* ---- a second trace after a stop ---------------------------------------------- */

static struct {
    keel_sched_group *first, *second;
    char path2[160];
    int restart_rc;
    keel_result stop1, stop2;
} t5;

static keel_future *one_yield(void *arg)
{
    (void)arg;
    return keel_yield();
}

static keel_future *t5_restart(void *ctx, keel_result r)
{
    (void)ctx;
    t5.stop1 = r;
    t5.restart_rc = keel_trace_start();
    return keel_with_sched_group(t5.second, one_yield, NULL);
}

static keel_future *t5_stop2(void *ctx, keel_result r)
{
    (void)ctx;
    (void)r;
    return keel_trace_stop(t5.path2);
}

static keel_future *t5_stop1(void *ctx, keel_result r)
{
    (void)ctx;
    (void)r;
    return keel_trace_stop(path);
}

static void t5_done(void *ctx, keel_result r)
{
    (void)ctx;
    t5.stop2 = r;
    keel_stop();
}

static void t5_main(void *arg)
{
    (void)arg;
    h_watchdog(20000);
    if (keel_trace_start())
        H_FAIL("keel_trace_start failed");
    keel_future *f = keel_with_sched_group(t5.first, one_yield, NULL);
    f = keel_then_wrapped(keel_then(f, t5_stop1, NULL), t5_restart, NULL);
    f = keel_then(f, t5_stop2, NULL);
    keel_on_done(f, t5_done, NULL);
}

Test(sched_trace, a_trace_started_again_after_a_stop_holds_only_what_came_after)
{
    make_dir();
    snprintf(t5.path2, sizeof(t5.path2), "%s/second.json", dir);
    t5.first = keel_sched_group_create("first", 1000);
    t5.second = keel_sched_group_create("second", 1000);
    cr_assert(t5.first && t5.second);
    keel_config c;
    h_config(&c, 1);
    h_run_cfg(&c, t5_main, NULL);
    cr_assert_eq(t5.stop1.err, 0, "first stop: %s", keel_strerror(t5.stop1.err));
    cr_assert_eq(t5.restart_rc, 0, "keel_trace_start after a stop: %d", t5.restart_rc);
    cr_assert_eq(t5.stop2.err, 0, "second stop: %s", keel_strerror(t5.stop2.err));
    check_shape(path, 1);
    check_shape(t5.path2, 1);
    cr_assert_geq(count(path, ".cat == \"task\" and .name == \"first\""), 1);
    cr_assert_eq(count(path, ".cat == \"task\" and .name == \"second\""), 0);
    cr_assert_geq(count(t5.path2, ".cat == \"task\" and .name == \"second\""), 1);
    cr_assert_eq(count(t5.path2, ".cat == \"task\" and .name == \"first\""), 0);
    unlink(t5.path2);
    remove_dir();
}
