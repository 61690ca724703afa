/* Deadlines: a read deadline fails that read, an idle deadline fails a
 * silent connection (and only a silent one), a write deadline fails a
 * connection whose peer stopped reading. */
#include "net_harness.h"

static struct {
    NP_SCRIPT_FIELDS;
    np_server sv;
    np_pair p;
    np_slot slot;
    np_reader rd;
    np_writer wr;
    keel_result res[2];
    uint64_t t0, elapsed_ms;
    size_t written, i;
    uint8_t *chunk;
} dl;

/* ---- read deadline ----------------------------------------------------------------------- */

static keel_future *read_script(void *ctx, keel_result r)
{
    (void)ctx;
    NP_BEGIN(&dl);
    NP_AWAIT(&dl, np_listen(&dl.sv), read_script);
    NP_OK(r, 0);
    NP_AWAIT(&dl, np_pair_open(&dl.sv, &dl.p), read_script);
    NP_OK(r, 0);
    keel_conn_set_deadlines(dl.p.server, KEEL_MS(100), 0, 0);
    dl.t0 = h_now_ns();
    NP_AWAIT(&dl, keel_conn_read(dl.p.server), read_script);
    dl.elapsed_ms = h_ms_since(dl.t0);
    NP_ERR(r, -ETIMEDOUT);
    NP_GE(dl.elapsed_ms, 95);
    NP_LT(dl.elapsed_ms, 2000);
    /* Only that read failed: the connection still carries data. */
    NP_EQ(keel_conn_error(dl.p.server), 0);
    NP_AWAIT(&dl, keel_conn_write(dl.p.client, "late", 4), read_script);
    NP_OK(r, 0);
    NP_AWAIT(&dl, keel_conn_read_exactly(dl.p.server, 4), read_script);
    NP_OK(r, 4);
    keel_conn_consume(dl.p.server, 4);
    /* A read that gets data in time does not time out. */
    np_watch(&dl.slot, keel_conn_read(dl.p.server));
    NP_AWAIT(&dl, np_sleep_ms(40), read_script);
    NP_AWAIT(&dl, keel_conn_write(dl.p.client, "x", 1), read_script);
    NP_OK(r, 0);
    NP_AWAIT(&dl, np_sleep_ms(150), read_script);
    NP_TRUE(dl.slot.done);
    NP_OK(dl.slot.r, 1);
    NP_AWAIT(&dl, np_pair_close(&dl.p), read_script);
    NP_OK(r, 2);
    NP_END(&dl);
}

Test(net_deadlines, a_read_deadline_fails_the_pending_read_with_etimedout_and_nothing_else)
{
    np_run_script(1, read_script, &dl, 5000);
    cr_log_info("read deadline of 100 ms fired after %llu ms", (unsigned long long)dl.elapsed_ms);
}

/* ---- idle deadline ------------------------------------------------------------------------- */

static keel_future *idle_script(void *ctx, keel_result r)
{
    (void)ctx;
    NP_BEGIN(&dl);
    NP_AWAIT(&dl, np_listen(&dl.sv), idle_script);
    NP_OK(r, 0);
    NP_AWAIT(&dl, np_pair_open(&dl.sv, &dl.p), idle_script);
    NP_OK(r, 0);
    keel_conn_set_deadlines(dl.p.server, 0, 0, KEEL_MS(150));
    dl.t0 = h_now_ns();
    NP_AWAIT(&dl, keel_conn_read(dl.p.server), idle_script);
    dl.elapsed_ms = h_ms_since(dl.t0);
    NP_ERR(r, -ETIMEDOUT);
    NP_GE(dl.elapsed_ms, 140);
    NP_LT(dl.elapsed_ms, 2000);
    /* The connection itself failed: writes and reads report it. */
    NP_EQ(keel_conn_error(dl.p.server), -ETIMEDOUT);
    NP_AWAIT(&dl, keel_conn_write(dl.p.server, "x", 1), idle_script);
    NP_ERR(r, -ETIMEDOUT);
    NP_AWAIT(&dl, keel_conn_read(dl.p.server), idle_script);
    NP_ERR(r, -ETIMEDOUT);
    NP_AWAIT(&dl, keel_conn_close(dl.p.server), idle_script);
    dl.p.server = NULL;
    NP_OK(r, 0);
    NP_AWAIT(&dl, keel_conn_read(dl.p.client), idle_script);
    NP_OK(r, 0);
    NP_AWAIT(&dl, np_pair_close(&dl.p), idle_script);
    NP_OK(r, 1);
    NP_END(&dl);
}

Test(net_deadlines, an_idle_deadline_fails_a_silent_connection_with_etimedout)
{
    np_run_script(1, idle_script, &dl, 5000);
}

static keel_future *busy_script(void *ctx, keel_result r)
{
    (void)ctx;
    NP_BEGIN(&dl);
    NP_AWAIT(&dl, np_listen(&dl.sv), busy_script);
    NP_OK(r, 0);
    NP_AWAIT(&dl, np_pair_open(&dl.sv, &dl.p), busy_script);
    NP_OK(r, 0);
    keel_conn_set_deadlines(dl.p.server, 0, 0, KEEL_MS(150));
    /* A byte every 50 ms for 750 ms: five idle deadlines' worth. */
    np_watch(&dl.slot, np_read(&dl.rd, dl.p.server, NULL, 15, 0));
    for (dl.i = 0; dl.i < 15; dl.i++) {
        NP_AWAIT(&dl, np_sleep_ms(50), busy_script);
        {
            uint8_t b = np_byte(dl.i);
            NP_AWAIT(&dl, keel_conn_write(dl.p.client, &b, 1), busy_script);
        }
        NP_OK(r, 0);
        NP_EQ(keel_conn_error(dl.p.server), 0);
    }
    NP_AWAIT(&dl, np_sleep_ms(20), busy_script);
    NP_TRUE(dl.slot.done);
    NP_OK(dl.slot.r, 15);
    NP_EQ(dl.rd.mismatch_at, SIZE_MAX);
    NP_EQ(keel_conn_error(dl.p.server), 0);
    /* Silence now: the deadline fires. */
    dl.t0 = h_now_ns();
    NP_AWAIT(&dl, keel_conn_read(dl.p.server), busy_script);
    dl.elapsed_ms = h_ms_since(dl.t0);
    NP_ERR(r, -ETIMEDOUT);
    NP_LT(dl.elapsed_ms, 2000);
    NP_AWAIT(&dl, np_pair_close(&dl.p), busy_script);
    NP_OK(r, 2);
    NP_END(&dl);
}

Test(net_deadlines, an_idle_deadline_does_not_fire_while_traffic_flows)
{
    np_run_script(1, busy_script, &dl, 5000);
}

/* ---- write deadline ------------------------------------------------------------------------- */

enum { CHUNK = 256 << 10, WRITE_CAP = 256 << 20 };

static keel_future *write_script(void *ctx, keel_result r)
{
    (void)ctx;
    NP_BEGIN(&dl);
    NP_AWAIT(&dl, np_listen(&dl.sv), write_script);
    NP_OK(r, 0);
    NP_AWAIT(&dl, np_pair_open(&dl.sv, &dl.p), write_script);
    NP_OK(r, 0);
    keel_conn_set_deadlines(dl.p.server, 0, KEEL_MS(200), 0);
    keel_conn_set_limits(dl.p.client, 0, 4096); /* the client never reads */
    dl.chunk = malloc(CHUNK);
    memset(dl.chunk, 'w', CHUNK);
    dl.t0 = h_now_ns();
    for (dl.written = 0; dl.written < WRITE_CAP; dl.written += CHUNK) {
        NP_AWAIT(&dl, keel_conn_write(dl.p.server, dl.chunk, CHUNK), write_script);
        if (r.err)
            break;
    }
    dl.elapsed_ms = h_ms_since(dl.t0);
    free(dl.chunk);
    dl.chunk = NULL;
    if (!r.err)
        NP_FAIL("%zu bytes written to a peer that never reads, and no write failed", dl.written);
    NP_ERR(r, -ETIMEDOUT);
    NP_LT(dl.elapsed_ms, 3000);
    NP_EQ(keel_conn_error(dl.p.server), -ETIMEDOUT);
    NP_AWAIT(&dl, keel_conn_flush(dl.p.server), write_script);
    NP_ERR(r, -ETIMEDOUT);
    NP_AWAIT(&dl, np_pair_close(&dl.p), write_script);
    NP_OK(r, 2);
    NP_END(&dl);
}

Test(net_deadlines, a_write_deadline_fails_the_connection_when_the_peer_never_reads)
{
    np_run_script(1, write_script, &dl, 8000);
    free(dl.chunk);
    cr_log_info("write deadline: %zu bytes accepted, failed after %llu ms", dl.written,
                (unsigned long long)dl.elapsed_ms);
}

/* A peer that reads slowly but steadily keeps making progress: the write
 * deadline is about output that cannot be sent, not about a transfer
 * that takes longer than write_ns in all. */
enum { SLOW_BYTES = 3 << 20, SLOW_STEP = 64 << 10 };

static struct {
    keel_conn *c, *writer;
    size_t got;
    uint64_t t0, last_read_ms;
    np_slot writer_slot, reader_slot;
} slow;

static keel_future *slow_next(void *ctx, keel_result r)
{
    (void)ctx;
    (void)r;
    return keel_make_ready(slow.got >= SLOW_BYTES ? KEEL_STOP : KEEL_CONTINUE);
}
static keel_future *slow_got(void *ctx, keel_result r)
{
    (void)ctx;
    if (r.val == 0)
        return keel_make_ready(KEEL_STOP);
    if (!keel_conn_error(slow.writer))
        slow.last_read_ms = h_ms_since(slow.t0);
    size_t n = (size_t)r.val < SLOW_STEP ? (size_t)r.val : SLOW_STEP;
    keel_conn_consume(slow.c, n);
    slow.got += n;
    return keel_then(np_sleep_ms(10), slow_next, NULL); /* at most ~6 MiB/s */
}
static keel_future *slow_step(void *ctx)
{
    (void)ctx;
    return keel_then(keel_conn_read(slow.c), slow_got, NULL);
}

static keel_future *slow_script(void *ctx, keel_result r)
{
    (void)ctx;
    NP_BEGIN(&dl);
    NP_AWAIT(&dl, np_listen(&dl.sv), slow_script);
    NP_OK(r, 0);
    NP_AWAIT(&dl, np_pair_open(&dl.sv, &dl.p), slow_script);
    NP_OK(r, 0);
    keel_conn_set_deadlines(dl.p.server, 0, KEEL_MS(250), 0);
    /* Small socket buffers, so the kernel cannot take the whole output
     * queue at once: the writer's queue stays full for the whole transfer
     * while the reader, every 10 ms, makes room for more. */
    {
        int small = 64 << 10;
        setsockopt(keel_conn_fd(dl.p.server), SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
        setsockopt(keel_conn_fd(dl.p.client), SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
        keel_conn_set_limits(dl.p.client, 0, (size_t)small);
    }
    slow.c = dl.p.client;
    slow.writer = dl.p.server;
    dl.t0 = slow.t0 = h_now_ns();
    np_watch(&slow.writer_slot, np_write(&dl.wr, dl.p.server, SLOW_BYTES, 0, 64 << 10));
    np_watch(&slow.reader_slot, keel_repeat(slow_step, NULL));
    for (dl.i = 0; dl.i < 500; dl.i++) {
        if (slow.reader_slot.done || (slow.writer_slot.done && slow.writer_slot.r.err))
            break;
        NP_AWAIT(&dl, np_sleep_ms(10), slow_script);
    }
    dl.elapsed_ms = h_ms_since(dl.t0);
    if (keel_conn_error(dl.p.server))
        NP_FAIL("the writer failed with %d (%s) %llu ms into the transfer, though its peer kept "
                "reading (%zu of %d bytes read, the last %llu ms before the failure; write "
                "deadline 250 ms)",
                keel_conn_error(dl.p.server), keel_strerror(keel_conn_error(dl.p.server)),
                (unsigned long long)dl.elapsed_ms, slow.got, SLOW_BYTES,
                (unsigned long long)(dl.elapsed_ms - slow.last_read_ms));
    NP_TRUE(slow.reader_slot.done && slow.writer_slot.done);
    NP_OK(slow.writer_slot.r, 0);
    NP_OK(slow.reader_slot.r, 0);
    NP_EQ(slow.got, SLOW_BYTES);
    NP_GE(dl.elapsed_ms, 400); /* the transfer did outlast the deadline */
    NP_AWAIT(&dl, np_pair_close(&dl.p), slow_script);
    NP_OK(r, 2);
    NP_END(&dl);
}

Test(net_deadlines, a_write_deadline_spares_a_slow_peer_that_keeps_reading)
{
    np_run_script(1, slow_script, &dl, 10000);
    cr_log_info("3 MiB to a slow reader took %llu ms", (unsigned long long)dl.elapsed_ms);
}
