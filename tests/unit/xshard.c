/* Cross-shard messaging: submit_to, invoke_on_all, sharded services, and
 * stopping while messages are in flight. */
#include "harness.h"

/* A hung test fails with a timeout instead of stalling the whole run. */
TestSuite(xshard, .timeout = 60);

enum { NSHARDS = 2 };

/* ---- a million messages per pair through tiny rings ------------------------ */

/* Each shard keeps STORM_WINDOW requests in flight to every other shard,
 * sending the next as each reply comes back. The window is far larger than
 * the ring (8 slots), so most messages go through the sender's overflow
 * list; the bound keeps memory flat instead of creating a million pending
 * futures at once. */
#define STORM_MSGS 1000000ull
#define STORM_WINDOW 256
#define STORM_RING 8

typedef struct pair_state {
    /* sender side: touched by shard `from` only */
    unsigned from, to;
    uint64_t sent, replied, next_reply;
    keel_promise done;
    /* receiver side: touched by shard `to` only */
    uint64_t expected, received;
    bool order_broken, reply_order_broken;
} __attribute__((aligned(128))) pair_state;

static pair_state pairs[NSHARDS][NSHARDS]; /* [from][to] */
static _Atomic uint64_t storm_msgs_sent[NSHARDS];

static keel_future *storm_recv(void *arg)
{
    uintptr_t a = (uintptr_t)arg;
    unsigned from = a & 0xff;
    uint64_t seq = a >> 8;
    pair_state *p = &pairs[from][keel_shard_id()];
    if (seq != p->expected && !p->order_broken) {
        p->order_broken = true;
        H_FAIL("shard %u got message %llu from shard %u, expected %llu", keel_shard_id(),
               (unsigned long long)seq, from, (unsigned long long)p->expected);
    }
    p->expected = seq + 1;
    p->received++;
    return keel_make_ready((int64_t)seq);
}

static void storm_send_one(pair_state *p);

static void storm_reply(void *ctx, keel_result r)
{
    pair_state *p = ctx;
    if (r.err) {
        H_FAIL("message to shard %u failed: %s", p->to, keel_strerror(r.err));
    } else if ((uint64_t)r.val != p->next_reply && !p->reply_order_broken) {
        p->reply_order_broken = true;
        H_FAIL("reply %lld from shard %u, expected %llu", (long long)r.val, p->to,
               (unsigned long long)p->next_reply);
    }
    p->next_reply++;
    p->replied++;
    if (p->sent < STORM_MSGS)
        storm_send_one(p);
    else if (p->replied == STORM_MSGS)
        keel_promise_set_value(&p->done, 0);
}

static void storm_send_one(pair_state *p)
{
    uintptr_t arg = (uintptr_t)(p->sent++ << 8) | p->from;
    keel_on_done(keel_submit_to(p->to, storm_recv, (void *)arg), storm_reply, p);
}

/* Starts this shard's senders; resolves when every reply came back. */
static keel_future *storm_start(void *arg)
{
    (void)arg;
    unsigned me = keel_shard_id(), n = keel_shard_count();
    keel_future *fs[NSHARDS];
    size_t nf = 0;
    for (unsigned to = 0; to < n; to++) {
        if (to == me)
            continue;
        pair_state *p = &pairs[me][to];
        p->from = me;
        p->to = to;
        fs[nf++] = keel_promise_init(&p->done);
        for (int i = 0; i < STORM_WINDOW; i++)
            storm_send_one(p);
    }
    return keel_when_all(fs, nf, NULL);
}

static keel_future *storm_stats(void *arg)
{
    (void)arg;
    keel_shard_stats st;
    keel_shard_stats_get(keel_shard_id(), &st);
    atomic_store(&storm_msgs_sent[keel_shard_id()], st.msgs_sent);
    return keel_make_ready(0);
}

static keel_future *storm_collect(void *ctx, keel_result r)
{
    (void)ctx;
    (void)r;
    return keel_invoke_on_all(storm_stats, NULL);
}

static uint64_t storm_t0, storm_ms;

static void storm_done(void *ctx, keel_result r)
{
    (void)ctx;
    storm_ms = h_ms_since(storm_t0);
    if (r.err)
        H_FAIL("storm failed: %s", keel_strerror(r.err));
    keel_stop();
}

static void storm_main(void *arg)
{
    (void)arg;
    h_watchdog(30000);
    storm_t0 = h_now_ns();
    keel_future *fs[NSHARDS];
    for (unsigned s = 0; s < keel_shard_count(); s++)
        fs[s] = keel_submit_to(s, storm_start, NULL);
    keel_future *all = keel_when_all(fs, keel_shard_count(), NULL);
    keel_on_done(keel_then(all, storm_collect, NULL), storm_done, NULL);
}

Test(xshard, a_million_messages_per_shard_pair_through_8_slot_rings_arrive_all_and_in_order)
{
    h_require_shards(NSHARDS);
    keel_config c;
    h_config(&c, NSHARDS);
    c.msg_ring_capacity = STORM_RING;
    h_run_cfg(&c, storm_main, NULL);
    for (unsigned f = 0; f < NSHARDS; f++) {
        for (unsigned t = 0; t < NSHARDS; t++) {
            if (f == t)
                continue;
            pair_state *p = &pairs[f][t];
            cr_assert_eq(p->received, STORM_MSGS, "%u -> %u: %llu received", f, t,
                         (unsigned long long)p->received);
            cr_assert_eq(p->replied, STORM_MSGS, "%u -> %u: %llu replies", f, t,
                         (unsigned long long)p->replied);
            cr_assert(!p->order_broken && !p->reply_order_broken);
        }
        /* Requests and replies both count: 2M per shard at least. */
        cr_assert_geq(atomic_load(&storm_msgs_sent[f]), 2 * STORM_MSGS);
    }
    fprintf(stderr, "storm: %llu messages each way in %llu ms\n", STORM_MSGS,
            (unsigned long long)storm_ms);
}

/* ---- submit_to ----------------------------------------------------------------- */

static struct {
    _Atomic int ran_on[NSHARDS];
    bool ran_inside_call;
    keel_result r[4];
    int done;
} st;

static keel_future *plus_one_here(void *arg)
{
    atomic_fetch_add(&st.ran_on[keel_shard_id()], 1);
    return keel_make_ready((int64_t)(intptr_t)arg + 1);
}

static void st_record(void *ctx, keel_result r)
{
    int i = (int)(intptr_t)ctx;
    st.r[i] = r;
    if (++st.done == 2)
        keel_stop();
}

static void submit_self_main(void *arg)
{
    (void)arg;
    keel_on_done(keel_submit_to(keel_shard_id(), plus_one_here, (void *)41), st_record, (void *)0);
    st.ran_inside_call = atomic_load(&st.ran_on[0]) != 0;
    keel_on_done(keel_submit_to(1, plus_one_here, (void *)99), st_record, (void *)1);
}

Test(xshard, submit_to_self_runs_fn_later_as_a_task_and_submit_to_another_runs_it_there)
{
    h_run(NSHARDS, submit_self_main, NULL);
    cr_assert(!st.ran_inside_call, "submit_to(self) ran fn inside the call");
    cr_assert(st.r[0].err == 0 && st.r[0].val == 42);
    cr_assert(st.r[1].err == 0 && st.r[1].val == 100);
    cr_assert_eq(atomic_load(&st.ran_on[0]), 1);
    cr_assert_eq(atomic_load(&st.ran_on[1]), 1);
}

static keel_future *fail_eio(void *arg)
{
    (void)arg;
    return keel_make_error(-EIO);
}

static keel_future *fail_after(void *ctx, keel_result r)
{
    (void)ctx;
    (void)r;
    return keel_make_error(-ENOENT);
}

static keel_future *sleep_then_fail(void *arg)
{
    (void)arg;
    return keel_then(keel_sleep(KEEL_MS(5)), fail_after, NULL);
}

static void submit_err_main(void *arg)
{
    (void)arg;
    h_watchdog(5000);
    keel_on_done(keel_submit_to(1, fail_eio, NULL), st_record, (void *)0);
    keel_on_done(keel_submit_to(1, sleep_then_fail, NULL), st_record, (void *)1);
}

Test(xshard, an_error_from_the_remote_function_reaches_the_caller_ready_or_later)
{
    h_run(NSHARDS, submit_err_main, NULL);
    cr_assert_eq(st.r[0].err, -EIO, "got %d", st.r[0].err);
    cr_assert_eq(st.r[1].err, -ENOENT, "got %d", st.r[1].err);
}

static void submit_self_err_main(void *arg)
{
    (void)arg;
    keel_on_done(keel_submit_to(0, fail_eio, NULL), st_record, (void *)0);
    keel_on_done(keel_submit_to(0, sleep_then_fail, NULL), st_record, (void *)1);
}

Test(xshard, an_error_from_a_function_submitted_to_self_reaches_the_caller)
{
    h_run(1, submit_self_err_main, NULL);
    cr_assert_eq(st.r[0].err, -EIO);
    cr_assert_eq(st.r[1].err, -ENOENT);
}

/* ---- invoke_on_all -------------------------------------------------------------- */

static struct {
    _Atomic int calls[NSHARDS];
    _Atomic int fail_mask;
    keel_result r;
} ia;

static keel_future *ia_fn(void *arg)
{
    H_CHECK(arg == (void *)&ia);
    unsigned id = keel_shard_id();
    atomic_fetch_add(&ia.calls[id], 1);
    if (atomic_load(&ia.fail_mask) & (1 << id))
        return keel_make_error(id == 0 ? -EPIPE : -EIO);
    return keel_make_ready(id);
}

static void ia_main(void *arg)
{
    (void)arg;
    h_stop_when_done(keel_invoke_on_all(ia_fn, &ia), &ia.r);
}

Test(xshard, invoke_on_all_runs_fn_exactly_once_on_every_shard_and_resolves_to_zero)
{
    h_run(NSHARDS, ia_main, NULL);
    for (int i = 0; i < NSHARDS; i++)
        cr_assert_eq(atomic_load(&ia.calls[i]), 1, "shard %d ran fn %d times", i,
                     atomic_load(&ia.calls[i]));
    cr_assert_eq(ia.r.err, 0);
    /* runtime.h: "resolves to 0 when all are done". */
    cr_assert_eq(ia.r.val, 0, "keel_invoke_on_all resolved to %lld, documented 0",
                 (long long)ia.r.val);
}

Test(xshard, invoke_on_all_resolves_to_the_error_of_the_lowest_failing_shard)
{
    atomic_store(&ia.fail_mask, 2);
    h_run(NSHARDS, ia_main, NULL);
    cr_assert_eq(ia.r.err, -EIO, "only shard 1 failed; got %d", ia.r.err);
    cr_assert_eq(atomic_load(&ia.calls[0]), 1);
    cr_assert_eq(atomic_load(&ia.calls[1]), 1);
}

Test(xshard, invoke_on_all_with_every_shard_failing_reports_shard_zeros_error)
{
    atomic_store(&ia.fail_mask, 3);
    h_run(NSHARDS, ia_main, NULL);
    cr_assert_eq(ia.r.err, -EPIPE, "got %d", ia.r.err);
}

/* ---- sharded services ------------------------------------------------------------- */

typedef struct svc {
    unsigned shard;
    uint64_t hits;
    void *arg;
} svc;

static struct {
    keel_sharded s;
    _Atomic int created[NSHARDS], destroyed[NSHARDS];
    bool fail_create_on_1;
    keel_result r;
    int64_t hits_on_1;
    bool local_ok;
} sv;

static void *svc_create(void *arg)
{
    unsigned id = keel_shard_id();
    atomic_fetch_add(&sv.created[id], 1);
    if (sv.fail_create_on_1 && id == 1)
        return NULL;
    svc *s = malloc(sizeof(*s));
    if (!s)
        return NULL;
    s->shard = id;
    s->hits = 0;
    s->arg = arg;
    return s;
}

static void svc_destroy(void *inst)
{
    svc *s = inst;
    atomic_fetch_add(&sv.destroyed[keel_shard_id()], 1);
    if (s->shard != keel_shard_id())
        H_FAIL("shard %u destroyed shard %u's instance", keel_shard_id(), s->shard);
    free(s);
}

static keel_future *svc_hit(void *inst, void *arg)
{
    svc *s = inst;
    H_CHECK(arg == (void *)&sv);
    if (s->shard != keel_shard_id())
        H_FAIL("shard %u was handed shard %u's instance", keel_shard_id(), s->shard);
    s->hits++;
    return keel_make_ready(s->shard);
}

static keel_future *svc_hits(void *inst, void *arg)
{
    (void)arg;
    return keel_make_ready((int64_t)((svc *)inst)->hits);
}

static keel_future *sv_step_stop(void *ctx, keel_result r)
{
    (void)ctx;
    sv.hits_on_1 = r.val;
    return keel_sharded_stop(&sv.s, svc_destroy);
}

static keel_future *sv_step_hits(void *ctx, keel_result r)
{
    (void)ctx;
    H_CHECK_EQ(r.err, 0);
    return keel_sharded_invoke_on(&sv.s, 1, svc_hits, NULL);
}

static keel_future *sv_step_all(void *ctx, keel_result r)
{
    (void)ctx;
    H_CHECK_OK(r, 1); /* invoke_on(1) resolves to shard 1's instance's shard */
    return keel_sharded_invoke_on_all(&sv.s, svc_hit, &sv);
}

static keel_future *sv_step_one(void *ctx, keel_result r)
{
    (void)ctx;
    H_CHECK_OK(r, 0); /* keel_sharded_start resolves to 0 */
    svc *local = keel_sharded_local(&sv.s);
    sv.local_ok = local && local->shard == 0 && local->arg == (void *)&sv;
    return keel_sharded_invoke_on(&sv.s, 1, svc_hit, &sv);
}

static void sharded_main(void *arg)
{
    (void)arg;
    h_watchdog(5000);
    keel_future *f = keel_sharded_start(&sv.s, svc_create, &sv);
    f = keel_then(f, sv_step_one, NULL);
    f = keel_then(f, sv_step_all, NULL);
    f = keel_then(f, sv_step_hits, NULL);
    f = keel_then(f, sv_step_stop, NULL);
    h_stop_when_done(f, &sv.r);
}

Test(xshard, a_sharded_service_has_one_instance_per_shard_from_start_to_stop)
{
    h_run(NSHARDS, sharded_main, NULL);
    cr_assert_eq(sv.r.err, 0, "got %d (%s)", sv.r.err, keel_strerror(sv.r.err));
    cr_assert(sv.local_ok, "keel_sharded_local on shard 0 is not shard 0's instance");
    cr_assert_eq(sv.hits_on_1, 2, "shard 1's instance saw %lld hits", (long long)sv.hits_on_1);
    for (int i = 0; i < NSHARDS; i++) {
        cr_assert_eq(atomic_load(&sv.created[i]), 1);
        cr_assert_eq(atomic_load(&sv.destroyed[i]), 1);
    }
    cr_assert_null(sv.s._instances, "keel_sharded_stop must free the instance table");
}

static keel_future *sv_stop_after_fail(void *ctx, keel_result r)
{
    (void)ctx;
    sv.r = r;
    return keel_sharded_stop(&sv.s, svc_destroy);
}

static void sharded_fail_main(void *arg)
{
    (void)arg;
    sv.fail_create_on_1 = true;
    keel_future *f =
        keel_then_wrapped(keel_sharded_start(&sv.s, svc_create, &sv), sv_stop_after_fail, NULL);
    h_stop_when_ok(f);
}

Test(xshard, a_sharded_start_whose_create_fails_reports_enomem_and_stop_frees_the_rest)
{
    h_run(NSHARDS, sharded_fail_main, NULL);
    cr_assert_eq(sv.r.err, -ENOMEM);
    cr_assert_eq(atomic_load(&sv.destroyed[0]), 1, "shard 0's instance was not destroyed");
    cr_assert_eq(atomic_load(&sv.destroyed[1]), 0, "destroy called on a NULL instance");
}

/* ---- stopping while messages are in flight and timers pending ---------------------- */

enum { SD_SLEEPS = 100, SD_BURST = 64 };

static struct {
    _Atomic int sleeps_done, sleeps_cancelled;
    _Atomic uint64_t pings;
    _Atomic uint64_t stop_ns;
} sd;

static void sd_sleep_done(void *ctx, keel_result r)
{
    (void)ctx;
    atomic_fetch_add(&sd.sleeps_done, 1);
    if (r.err == -ECANCELED)
        atomic_fetch_add(&sd.sleeps_cancelled, 1);
}

static keel_future *sd_remote(void *arg)
{
    (void)arg;
    atomic_fetch_add(&sd.pings, 1);
    /* Some pings wait on a timer at the far end. */
    return (atomic_load(&sd.pings) & 7) == 0 ? keel_sleep(KEEL_MS(1)) : keel_make_ready(0);
}

static keel_future *sd_verdict(void *ctx, keel_result r)
{
    (void)ctx;
    (void)r; /* -ECANCELED once the far end's timers are closed: fine */
    return keel_make_ready(keel_stopping() ? KEEL_STOP : KEEL_CONTINUE);
}

/* One iteration: a burst of fire-and-forget pings plus one we wait for. */
static keel_future *sd_iter(void *ctx)
{
    (void)ctx;
    if (keel_stopping())
        return keel_make_ready(KEEL_STOP);
    unsigned other = (keel_shard_id() + 1) % keel_shard_count();
    for (int i = 0; i < SD_BURST; i++)
        keel_detach(keel_then_wrapped(keel_submit_to(other, sd_remote, NULL), sd_verdict, NULL));
    return keel_then_wrapped(keel_submit_to(other, sd_remote, NULL), sd_verdict, NULL);
}

static keel_future *sd_start(void *arg)
{
    (void)arg;
    for (int i = 0; i < SD_SLEEPS; i++)
        keel_on_done(keel_sleep(KEEL_SEC(10 + i)), sd_sleep_done, NULL);
    keel_detach(keel_repeat(sd_iter, NULL));
    return keel_make_ready(0);
}

static void sd_stop(void *ctx, keel_result r)
{
    (void)ctx;
    H_CHECK_EQ(r.err, 0);
    atomic_store(&sd.stop_ns, h_now_ns());
    keel_stop();
}

static void stop_in_flight_main(void *arg)
{
    (void)arg;
    keel_detach(keel_invoke_on_all(sd_start, NULL));
    keel_on_done(keel_sleep(KEEL_MS(30)), sd_stop, NULL);
}

Test(xshard, stopping_with_messages_in_flight_and_timers_pending_returns_promptly_and_cleanly)
{
    keel_config c;
    h_require_shards(NSHARDS);
    h_config(&c, NSHARDS);
    c.msg_ring_capacity = STORM_RING; /* keep the overflow lists busy too */
    h_run_cfg(&c, stop_in_flight_main, NULL);
    uint64_t ms = (h_now_ns() - atomic_load(&sd.stop_ns)) / 1000000;
    cr_assert_neq(atomic_load(&sd.stop_ns), 0);
    cr_assert_lt(ms, 5000, "keel_run returned %llu ms after keel_stop", (unsigned long long)ms);
    cr_assert_gt(atomic_load(&sd.pings), 0);
    cr_assert_eq(atomic_load(&sd.sleeps_done), NSHARDS * SD_SLEEPS,
                 "%d of %d pending sleeps resolved", atomic_load(&sd.sleeps_done),
                 NSHARDS * SD_SLEEPS);
    cr_assert_eq(atomic_load(&sd.sleeps_cancelled), NSHARDS * SD_SLEEPS);
}
