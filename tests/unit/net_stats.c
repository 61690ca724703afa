/* Statistics and the connection limit: keel_net_stats counts accepted and
 * open connections and bytes both ways; max_conns refuses the excess. */
#include "net_harness.h"

#include <poll.h>
#include <pthread.h>

static struct {
    NP_SCRIPT_FIELDS;
    np_server sv;
    np_pair p[3];
    keel_result res[2];
    keel_net_stats before, during, after;
    char buf[2000];
    size_t i;
} st;

enum { UP = 1000, DOWN = 500 };

static keel_future *counts_script(void *ctx, keel_result r)
{
    (void)ctx;
    NP_BEGIN(&st);
    NP_AWAIT(&st, np_listen(&st.sv), counts_script);
    NP_OK(r, 0);
    NP_EQ(keel_net_stats_get(0, &st.before), 0);
    NP_EQ(keel_net_stats_get(1, &st.during), -EINVAL); /* one shard only */
    for (st.i = 0; st.i < 3; st.i++) {
        NP_AWAIT(&st, np_pair_open(&st.sv, &st.p[st.i]), counts_script);
        NP_OK(r, 0);
        np_fill(st.buf, 0, UP);
        NP_AWAIT(&st, keel_conn_write(st.p[st.i].client, st.buf, UP), counts_script);
        NP_OK(r, 0);
        NP_AWAIT(&st, keel_conn_read_exactly(st.p[st.i].server, UP), counts_script);
        NP_OK(r, UP);
        keel_conn_consume(st.p[st.i].server, UP);
        NP_AWAIT(&st, keel_conn_write(st.p[st.i].server, st.buf, DOWN), counts_script);
        NP_OK(r, 0);
        NP_AWAIT(&st, keel_conn_read_exactly(st.p[st.i].client, DOWN), counts_script);
        NP_OK(r, DOWN);
        keel_conn_consume(st.p[st.i].client, DOWN);
    }
    NP_EQ(keel_net_stats_get(0, &st.during), 0);
    /* Client and server sides all live on shard 0. */
    NP_EQ(st.during.accepted - st.before.accepted, 3);
    NP_EQ(st.during.open - st.before.open, 6);
    NP_EQ(st.during.bytes_in - st.before.bytes_in, 3 * (UP + DOWN));
    NP_EQ(st.during.bytes_out - st.before.bytes_out, 3 * (UP + DOWN));
    NP_EQ(st.during.refused, 0);
    NP_EQ(st.during.accept_errors, 0);
    NP_EQ(st.during.bufs_in_use, 0); /* everything was consumed */
    for (st.i = 0; st.i < 3; st.i++) {
        NP_AWAIT(&st, np_pair_close(&st.p[st.i]), counts_script);
        NP_OK(r, 2);
    }
    NP_EQ(keel_net_stats_get(0, &st.after), 0);
    NP_EQ(st.after.open, 0);
    NP_EQ(st.after.accepted, st.during.accepted);
    NP_EQ(st.after.bufs_in_use, 0);
    NP_END(&st);
}

Test(net_stats, stats_count_accepted_and_open_connections_and_bytes_both_ways)
{
    np_run_script(1, counts_script, &st, 5000);
}

/* ---- max_conns ------------------------------------------------------------------------------ */

/* The clients are plain sockets on a thread of their own, so that only
 * accepted connections count toward the shard's open connections. */
enum { LIMIT = 3, TRIES = 5 };

static struct {
    NP_SCRIPT_FIELDS;
    keel_listen_config cfg;
    keel_listener *l;
    uint16_t port;
    pthread_t thread;
    bool thread_started;
    _Atomic int phase; /* 1: the thread connected; 2: it closed its sockets */
    _Atomic int may_close;
    int alive, closed;
    keel_net_stats stats;
    size_t i;
} mc;

static keel_future *mc_closed(void *ctx, keel_result r)
{
    (void)r;
    return keel_conn_close(ctx);
}

static void mc_accept(void *ctx, keel_conn *c)
{
    (void)ctx;
    /* Hold the connection until its client closes it. */
    keel_detach(keel_then_wrapped(keel_conn_read(c), mc_closed, c));
}

static void *mc_clients(void *arg)
{
    (void)arg;
    int fds[TRIES];
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(mc.port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    for (int i = 0; i < TRIES; i++) {
        fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (connect(fds[i], (struct sockaddr *)&a, sizeof(a)) < 0)
            H_FAIL("connect %d: %s", i, strerror(errno));
        usleep(20 * 1000); /* one at a time, so the limit applies in order */
    }
    usleep(200 * 1000);
    for (int i = 0; i < TRIES; i++) {
        struct pollfd pfd = {.fd = fds[i], .events = POLLIN};
        if (poll(&pfd, 1, 0) == 1)
            mc.closed++; /* EOF or reset: refused at accept */
        else
            mc.alive++;
    }
    atomic_store(&mc.phase, 1);
    for (int i = 0; i < 500 && !atomic_load(&mc.may_close); i++)
        usleep(10 * 1000);
    for (int i = 0; i < TRIES; i++)
        close(fds[i]);
    atomic_store(&mc.phase, 2);
    return NULL;
}

static keel_future *mc_script(void *ctx, keel_result r)
{
    (void)ctx;
    NP_BEGIN(&mc);
    NP_AWAIT(&mc, keel_listen(&mc.cfg, mc_accept, NULL, &mc.l), mc_script);
    NP_OK(r, 0);
    mc.port = keel_listener_port(mc.l);
    NP_EQ(pthread_create(&mc.thread, NULL, mc_clients, NULL), 0);
    mc.thread_started = true;
    for (mc.i = 0; mc.i < 200 && atomic_load(&mc.phase) < 1; mc.i++)
        NP_AWAIT(&mc, np_sleep_ms(10), mc_script);
    NP_EQ(keel_net_stats_get(0, &mc.stats), 0);
    atomic_store(&mc.may_close, mc.stats.open != LIMIT); /* do not hold them on failure */
    NP_EQ(mc.stats.accepted, TRIES);
    NP_EQ(mc.stats.refused, TRIES - LIMIT);
    NP_EQ(mc.stats.open, LIMIT);
    atomic_store(&mc.may_close, 1);
    /* The clients close: the held connections end and close too. */
    for (mc.i = 0; mc.i < 200; mc.i++) {
        NP_AWAIT(&mc, np_sleep_ms(10), mc_script);
        keel_net_stats_get(0, &mc.stats);
        if (atomic_load(&mc.phase) == 2 && mc.stats.open == 0)
            break;
    }
    NP_EQ(mc.stats.open, 0);
    NP_END(&mc);
}

Test(net_stats, max_conns_closes_connections_over_the_limit_at_once_and_counts_them_refused)
{
    keel_listen_config_init(&mc.cfg);
    mc.cfg.bind = "127.0.0.1";
    mc.cfg.max_conns = LIMIT;
    np_run_script(1, mc_script, &mc, 8000);
    if (mc.thread_started)
        pthread_join(mc.thread, NULL);
    cr_assert_eq(mc.alive, LIMIT, "%d connections stayed open, expected %d", mc.alive, LIMIT);
    cr_assert_eq(mc.closed, TRIES - LIMIT);
}
