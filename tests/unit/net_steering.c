/* Steering over two shards: with KEEL_STEER_HASH 1,000 connections spread
 * over both shards; with KEEL_STEER_CPU each lands on the shard of the CPU
 * that received its SYN, which on loopback is the connecting client's CPU
 * (the packet goes through the sender's per-CPU backlog and softirq). So
 * clients pinned to shard k's CPU land on shard k. */
#include "net_harness.h"

enum { CONNS = 1000, PER_PHASE = CONNS / 2 };

typedef struct client_batch {
    keel_conn *conns[PER_PHASE];
    unsigned n, want;
    int first_err;
    unsigned failed;
    int cpu;
} client_batch;

static struct {
    NP_SCRIPT_FIELDS;
    keel_listen_config cfg;
    keel_listener *l;
    uint16_t port;
    int listen_err;
    client_batch batch[2];
    keel_net_stats snap[2];
    uint64_t landed[2][2]; /* [phase: clients on shard k][shard that accepted] */
    keel_result res[2];
    unsigned phase;
    size_t i;
    uint64_t accepted_delta;
} sr;

/* ---- the server side: hold each connection until its client closes -------------------- */

static keel_future *held_end(void *ctx, keel_result r)
{
    (void)r;
    return keel_conn_close(ctx);
}

static void held_accept(void *ctx, keel_conn *c)
{
    (void)ctx;
    keel_detach(keel_then_wrapped(keel_conn_read(c), held_end, c));
}

/* ---- the client side, run on one shard ---------------------------------------------------- */

static keel_future *batch_connected(void *ctx, keel_result r)
{
    client_batch *b = ctx;
    if (r.err) {
        if (!b->first_err)
            b->first_err = r.err;
        b->failed++;
    } else {
        b->conns[b->n++] = r.ptr;
    }
    return keel_make_ready(0);
}

static keel_future *batch_connect_one(void *ctx, size_t i)
{
    (void)i;
    return keel_then_wrapped(keel_connect("127.0.0.1", sr.port, KEEL_SEC(5)), batch_connected, ctx);
}

static keel_future *batch_connect(void *arg)
{
    client_batch *b = arg;
    b->cpu = keel_shard_cpu(keel_shard_id());
    return keel_parallel_for_each(b->want, batch_connect_one, b);
}

static keel_future *batch_close_one(void *ctx, size_t i)
{
    client_batch *b = ctx;
    return keel_conn_close(b->conns[i]);
}

static keel_future *batch_close(void *arg)
{
    client_batch *b = arg;
    unsigned n = b->n;
    b->n = 0;
    return keel_parallel_for_each(n, batch_close_one, b);
}

/* ---- the script ---------------------------------------------------------------------------- */

static uint64_t accepted_on(unsigned shard)
{
    keel_net_stats s;
    keel_net_stats_get(shard, &s);
    return s.accepted;
}

static uint64_t open_on(unsigned shard)
{
    keel_net_stats s;
    keel_net_stats_get(shard, &s);
    return s.open;
}

static keel_future *steer_script(void *ctx, keel_result r)
{
    (void)ctx;
    NP_BEGIN(&sr);
    NP_EQ(keel_shard_count(), 2);
    NP_AWAIT(&sr, keel_listen(&sr.cfg, held_accept, NULL, &sr.l), steer_script);
    if (r.err) {
        sr.listen_err = r.err; /* the test decides: skip or fail */
        sr.done_ = true;
        return keel_make_ready(0);
    }
    sr.port = keel_listener_port(sr.l);
    NP_TRUE(sr.port != 0);
    for (sr.phase = 0; sr.phase < 2; sr.phase++) {
        keel_net_stats_get(0, &sr.snap[0]);
        keel_net_stats_get(1, &sr.snap[1]);
        sr.batch[sr.phase].want = PER_PHASE;
        NP_AWAIT(&sr, keel_submit_to(sr.phase, batch_connect, &sr.batch[sr.phase]), steer_script);
        NP_OK(r, 0);
        if (sr.batch[sr.phase].failed)
            NP_FAIL("%u of %u connects from shard %u failed; first: %s", sr.batch[sr.phase].failed,
                    PER_PHASE, sr.phase, keel_strerror(sr.batch[sr.phase].first_err));
        /* Every connection is accepted somewhere. */
        for (sr.i = 0; sr.i < 500; sr.i++) {
            sr.accepted_delta =
                accepted_on(0) + accepted_on(1) - sr.snap[0].accepted - sr.snap[1].accepted;
            if (sr.accepted_delta >= PER_PHASE)
                break;
            NP_AWAIT(&sr, np_sleep_ms(10), steer_script);
        }
        NP_EQ(sr.accepted_delta, PER_PHASE);
        sr.landed[sr.phase][0] = accepted_on(0) - sr.snap[0].accepted;
        sr.landed[sr.phase][1] = accepted_on(1) - sr.snap[1].accepted;
    }
    NP_AWAIT(&sr,
             np_both(keel_submit_to(0, batch_close, &sr.batch[0]),
                     keel_submit_to(1, batch_close, &sr.batch[1]), sr.res),
             steer_script);
    NP_OK(sr.res[0], 0);
    NP_OK(sr.res[1], 0);
    for (sr.i = 0; sr.i < 500 && open_on(0) + open_on(1) > 0; sr.i++)
        NP_AWAIT(&sr, np_sleep_ms(10), steer_script);
    NP_EQ(open_on(0) + open_on(1), 0);
    /* Closing the listener closes it on both shards. */
    NP_AWAIT(&sr, keel_listener_close(sr.l), steer_script);
    NP_NOERR(r);
    for (sr.i = 0; sr.i < 20; sr.i++) {
        NP_AWAIT(&sr, keel_connect("127.0.0.1", sr.port, KEEL_SEC(2)), steer_script);
        NP_ERR(r, -ECONNREFUSED);
    }
    NP_END(&sr);
}

static void run_steer(enum keel_steer steer)
{
    keel_listen_config_init(&sr.cfg);
    sr.cfg.bind = "127.0.0.1";
    sr.cfg.steer = steer;
    np_run_script(2, steer_script, &sr, 20000);
}

Test(net_steering, hash_steering_spreads_1000_connections_over_both_shards)
{
    run_steer(KEEL_STEER_HASH);
    cr_assert_eq(sr.listen_err, 0, "listen failed: %s", keel_strerror(sr.listen_err));
    uint64_t on0 = sr.landed[0][0] + sr.landed[1][0], on1 = sr.landed[0][1] + sr.landed[1][1];
    cr_log_info("hash steering: shard 0 accepted %llu, shard 1 accepted %llu",
                (unsigned long long)on0, (unsigned long long)on1);
    cr_assert_eq(on0 + on1, CONNS);
    cr_assert_geq(on0, CONNS / 5, "shard 0 got %llu of %d connections", (unsigned long long)on0,
                  CONNS);
    cr_assert_geq(on1, CONNS / 5, "shard 1 got %llu of %d connections", (unsigned long long)on1,
                  CONNS);
}

Test(net_steering, cpu_steering_lands_loopback_connections_on_the_shard_of_the_clients_cpu)
{
    run_steer(KEEL_STEER_CPU);
    if (sr.listen_err == -EPERM || sr.listen_err == -EINVAL || sr.listen_err == -ENOPROTOOPT ||
        sr.listen_err == -EOPNOTSUPP)
        cr_skip_test("SKIPPED: the kernel refused SO_ATTACH_REUSEPORT_CBPF: %s",
                     keel_strerror(sr.listen_err));
    cr_assert_eq(sr.listen_err, 0, "listen failed: %s", keel_strerror(sr.listen_err));
    for (unsigned k = 0; k < 2; k++) {
        /* The BPF program picks socket index cpu % 2, and index = shard. */
        unsigned want = (unsigned)sr.batch[k].cpu % 2;
        cr_log_info("cpu steering: %d clients on shard %u (cpu %d) landed %llu on shard 0, %llu "
                    "on shard 1",
                    PER_PHASE, k, sr.batch[k].cpu, (unsigned long long)sr.landed[k][0],
                    (unsigned long long)sr.landed[k][1]);
        cr_assert_eq(want, k, "shard %u is pinned to cpu %d: shards are not on CPUs 0 and 1", k,
                     sr.batch[k].cpu);
        cr_assert_geq(sr.landed[k][want] * 10, (uint64_t)PER_PHASE * 9,
                      "clients on shard %u (cpu %d): only %llu of %d landed on shard %u", k,
                      sr.batch[k].cpu, (unsigned long long)sr.landed[k][want], PER_PHASE, want);
    }
}
