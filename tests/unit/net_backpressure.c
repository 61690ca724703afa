/* Backpressure and resets: a writer to a peer that does not read waits
 * with bounded memory and resumes when the peer reads; a reader that does
 * not consume stops receiving at its input limit; a peer that resets
 * mid-transfer gives an error, not a crash. */
#include <sys/socket.h>
#include "net_harness.h"

static struct {
    NP_SCRIPT_FIELDS;
    np_server sv;
    np_pair p;
    np_slot slot;
    np_reader rd;
    np_writer wr;
    keel_result res[2];
    uint8_t *chunk;
    size_t written, queued_when_pending, queued_later, buffered, bufs_in_use, i;
    keel_future *f;
} bp;

/* ---- the output limit ---------------------------------------------------------------------- */

enum { OUT_LIMIT = 64 << 10, OUT_CHUNK = 16 << 10, WRITE_CAP = 256 << 20 };

static keel_future *out_script(void *ctx, keel_result r)
{
    (void)ctx;
    NP_BEGIN(&bp);
    NP_AWAIT(&bp, np_listen(&bp.sv), out_script);
    NP_OK(r, 0);
    NP_AWAIT(&bp, np_pair_open(&bp.sv, &bp.p), out_script);
    NP_OK(r, 0);
    keel_conn_set_limits(bp.p.server, OUT_LIMIT, 0);
    keel_conn_set_limits(bp.p.client, 0, 16 << 10); /* and it does not read for now */
    bp.chunk = malloc(OUT_CHUNK);
    /* Write until a write stays pending: while the kernel's socket buffers
     * still take data, a pending write resolves again soon. */
    for (bp.written = 0; bp.written < WRITE_CAP;) {
        np_fill(bp.chunk, bp.written, OUT_CHUNK);
        bp.f = keel_conn_write(bp.p.server, bp.chunk, OUT_CHUNK);
        bp.written += OUT_CHUNK;
        if (keel_future_is_ready(bp.f)) {
            r = keel_future_take(bp.f);
            NP_OK(r, 0);
            NP_LE(keel_conn_queued(bp.p.server), OUT_LIMIT);
            continue;
        }
        np_watch(&bp.slot, bp.f);
        bp.queued_when_pending = keel_conn_queued(bp.p.server);
        NP_TRUE(bp.queued_when_pending > OUT_LIMIT);
        NP_LE(bp.queued_when_pending, OUT_LIMIT + OUT_CHUNK);
        for (bp.i = 0; bp.i < 10 && !bp.slot.done; bp.i++)
            NP_AWAIT(&bp, np_sleep_ms(20), out_script);
        if (!bp.slot.done)
            break; /* pending for 200 ms: the kernel buffers are full */
        NP_OK(bp.slot.r, 0);
    }
    if (bp.written >= WRITE_CAP)
        NP_FAIL("256 MiB written to a peer that never reads, and every write resolved");
    bp.queued_when_pending = keel_conn_queued(bp.p.server);
    NP_TRUE(bp.queued_when_pending > OUT_LIMIT);
    NP_LE(bp.queued_when_pending, OUT_LIMIT + OUT_CHUNK);
    /* The peer still does not read: the write stays pending, the queue
     * does not grow. */
    NP_AWAIT(&bp, np_sleep_ms(300), out_script);
    NP_TRUE(!bp.slot.done);
    bp.queued_later = keel_conn_queued(bp.p.server);
    NP_LE(bp.queued_later, OUT_LIMIT + OUT_CHUNK);
    NP_TRUE(bp.queued_later > OUT_LIMIT);
    /* The peer reads everything: the write resolves, every byte arrives. */
    NP_AWAIT(&bp, np_read(&bp.rd, bp.p.client, NULL, bp.written, 0), out_script);
    NP_OK(r, bp.written);
    NP_EQ(bp.rd.mismatch_at, SIZE_MAX);
    NP_TRUE(bp.slot.done);
    NP_OK(bp.slot.r, 0);
    NP_EQ(keel_conn_queued(bp.p.server), 0);
    free(bp.chunk);
    bp.chunk = NULL;
    NP_AWAIT(&bp, np_pair_close(&bp.p), out_script);
    NP_OK(r, 2);
    NP_END(&bp);
}

Test(net_backpressure, a_write_over_the_output_limit_waits_with_bounded_memory_until_the_peer_reads)
{
    np_run_script(1, out_script, &bp, 10000);
    free(bp.chunk);
    cr_log_info("the peer took %zu bytes before the write waited; queued %zu then, %zu 300 ms "
                "later (limit %d)",
                bp.written, bp.queued_when_pending, bp.queued_later, OUT_LIMIT);
}

/* ---- the input limit ----------------------------------------------------------------------- */

enum { IN_LIMIT = 16 << 10, IN_TOTAL = 32 << 20, IN_SLACK = 128 << 10 };

static keel_future *in_script(void *ctx, keel_result r)
{
    (void)ctx;
    NP_BEGIN(&bp);
    NP_AWAIT(&bp, np_listen(&bp.sv), in_script);
    NP_OK(r, 0);
    NP_AWAIT(&bp, np_pair_open(&bp.sv, &bp.p), in_script);
    NP_OK(r, 0);
    keel_conn_set_limits(bp.p.server, 0, IN_LIMIT);
    np_watch(&bp.slot, np_write(&bp.wr, bp.p.client, IN_TOTAL, 0, 64 << 10));
    NP_AWAIT(&bp, np_sleep_ms(300), in_script);
    /* The server has not read: it holds about its input limit, no more. */
    NP_TRUE(!bp.slot.done);
    bp.buffered = keel_conn_buffered(bp.p.server);
    {
        keel_net_stats st;
        NP_EQ(keel_net_stats_get(0, &st), 0);
        bp.bufs_in_use = st.bufs_in_use;
    }
    NP_GE(bp.buffered, IN_LIMIT);
    /* On io_uring the multishot recv drains what the socket had queued
     * before its cancel lands, so the overshoot is bounded by the socket's
     * receive buffer, not by IN_SLACK; but it must not hold more of the
     * shard's shared receive buffers than its share (the rest is copied
     * into the connection's own memory). */
    {
        int rcvbuf = 0;
        socklen_t len = sizeof(rcvbuf);
        NP_EQ(getsockopt(keel_conn_fd(bp.p.server), SOL_SOCKET, SO_RCVBUF, &rcvbuf, &len), 0);
        NP_LE(bp.buffered, IN_LIMIT + (size_t)rcvbuf + IN_SLACK);
    }
    NP_LE(bp.bufs_in_use * 4096, IN_LIMIT + IN_SLACK + 4096);
    /* And receiving has stopped: nothing more arrives while the peer is
     * still trying to send. */
    NP_AWAIT(&bp, np_sleep_ms(300), in_script);
    NP_TRUE(!bp.slot.done);
    NP_EQ(keel_conn_buffered(bp.p.server), bp.buffered);
    /* Reading resumes receiving; everything arrives in order. */
    NP_AWAIT(&bp, np_read(&bp.rd, bp.p.server, NULL, IN_TOTAL, 0), in_script);
    NP_OK(r, IN_TOTAL);
    NP_EQ(bp.rd.mismatch_at, SIZE_MAX);
    NP_AWAIT(&bp, np_sleep_ms(20), in_script);
    NP_TRUE(bp.slot.done);
    NP_OK(bp.slot.r, 0);
    NP_AWAIT(&bp, np_pair_close(&bp.p), in_script);
    NP_OK(r, 2);
    {
        keel_net_stats st;
        NP_EQ(keel_net_stats_get(0, &st), 0);
        NP_EQ(st.bufs_in_use, 0); /* every receive buffer came back */
    }
    NP_END(&bp);
}

Test(net_backpressure, a_reader_that_does_not_consume_stops_receiving_at_its_input_limit)
{
    np_run_script(1, in_script, &bp, 10000);
    cr_log_info("held %zu bytes in %zu receive buffers with a %d-byte input limit", bp.buffered,
                bp.bufs_in_use, IN_LIMIT);
}

/* ---- resets ------------------------------------------------------------------------------------
 */

enum { RESET_TOTAL = 64 << 20, RESET_AFTER = 1 << 20 };

static keel_future *reset_writer_script(void *ctx, keel_result r)
{
    (void)ctx;
    NP_BEGIN(&bp);
    NP_AWAIT(&bp, np_listen(&bp.sv), reset_writer_script);
    NP_OK(r, 0);
    NP_AWAIT(&bp, np_pair_open(&bp.sv, &bp.p), reset_writer_script);
    NP_OK(r, 0);
    np_watch(&bp.slot, np_write(&bp.wr, bp.p.server, RESET_TOTAL, 0, 256 << 10));
    NP_AWAIT(&bp, np_read(&bp.rd, bp.p.client, NULL, RESET_AFTER, 0), reset_writer_script);
    NP_OK(r, RESET_AFTER);
    /* The client resets mid-transfer. */
    keel_conn_abort(bp.p.client);
    bp.p.client = NULL;
    for (bp.written = 0; bp.written < 100 && !bp.slot.done; bp.written++)
        NP_AWAIT(&bp, np_sleep_ms(20), reset_writer_script);
    NP_TRUE(bp.slot.done);
    NP_TRUE(bp.slot.r.err == -ECONNRESET || bp.slot.r.err == -EPIPE);
    NP_TRUE(keel_conn_error(bp.p.server) == -ECONNRESET || keel_conn_error(bp.p.server) == -EPIPE);
    NP_AWAIT(&bp, keel_conn_flush(bp.p.server), reset_writer_script);
    NP_TRUE(r.err < 0);
    NP_AWAIT(&bp, keel_conn_read(bp.p.server), reset_writer_script);
    NP_TRUE(r.err < 0);
    NP_AWAIT(&bp, np_pair_close(&bp.p), reset_writer_script);
    NP_OK(r, 1);
    NP_END(&bp);
}

Test(net_backpressure, a_peer_that_resets_mid_transfer_fails_the_writer_with_an_error)
{
    np_run_script(1, reset_writer_script, &bp, 10000);
    cr_log_info("the writer saw %d (%s)", bp.slot.r.err, keel_strerror(bp.slot.r.err));
}

static keel_future *reset_reader_script(void *ctx, keel_result r)
{
    (void)ctx;
    NP_BEGIN(&bp);
    NP_AWAIT(&bp, np_listen(&bp.sv), reset_reader_script);
    NP_OK(r, 0);
    NP_AWAIT(&bp, np_pair_open(&bp.sv, &bp.p), reset_reader_script);
    NP_OK(r, 0);
    np_watch(&bp.slot, np_write(&bp.wr, bp.p.client, RESET_TOTAL, 0, 256 << 10));
    NP_AWAIT(&bp, np_read(&bp.rd, bp.p.server, NULL, RESET_AFTER, 0), reset_reader_script);
    NP_OK(r, RESET_AFTER);
    /* The client resets with output still queued; its pending write ends. */
    keel_conn_abort(bp.p.client);
    bp.p.client = NULL;
    NP_AWAIT(&bp, np_sleep_ms(20), reset_reader_script);
    NP_TRUE(bp.slot.done);
    NP_TRUE(bp.slot.r.err < 0);
    /* The server reads what arrived, then the reset: an error, not an
     * orderly end of stream. */
    np_watch(&bp.slot, np_read(&bp.rd, bp.p.server, NULL, RESET_TOTAL, RESET_AFTER));
    for (bp.i = 0; bp.i < 100 && !bp.slot.done; bp.i++)
        NP_AWAIT(&bp, np_sleep_ms(20), reset_reader_script);
    if (!bp.slot.done)
        NP_FAIL("2 s after the peer's reset the reader still waits (%zu bytes read after the "
                "reset, connection error %d): the reset was never reported",
                bp.rd.got, keel_conn_error(bp.p.server));
    NP_EQ(bp.rd.mismatch_at, SIZE_MAX);
    NP_TRUE(!bp.rd.eof);
    NP_ERR(bp.slot.r, -ECONNRESET);
    NP_EQ(keel_conn_error(bp.p.server), -ECONNRESET);
    NP_AWAIT(&bp, keel_conn_write(bp.p.server, "x", 1), reset_reader_script);
    NP_ERR(r, -ECONNRESET);
    NP_AWAIT(&bp, np_pair_close(&bp.p), reset_reader_script);
    NP_OK(r, 1);
    NP_END(&bp);
}

Test(net_backpressure, a_peer_that_resets_mid_transfer_fails_the_reader_with_econnreset)
{
    np_run_script(1, reset_reader_script, &bp, 10000);
}

/* ---- aborting our own connection --------------------------------------------------------- */

static keel_future *abort_script(void *ctx, keel_result r)
{
    (void)ctx;
    NP_BEGIN(&bp);
    NP_AWAIT(&bp, np_listen(&bp.sv), abort_script);
    NP_OK(r, 0);
    NP_AWAIT(&bp, np_pair_open(&bp.sv, &bp.p), abort_script);
    NP_OK(r, 0);
    /* A pending read, a pending write over the limit and queued output. */
    keel_conn_set_limits(bp.p.server, 4096, 0);
    bp.chunk = malloc(RESET_AFTER);
    memset(bp.chunk, 'a', RESET_AFTER);
    np_watch(&bp.slot, keel_conn_read(bp.p.server));
    bp.f = keel_conn_write(bp.p.server, bp.chunk, RESET_AFTER);
    free(bp.chunk);
    bp.chunk = NULL;
    NP_TRUE(!keel_future_is_ready(bp.f));
    {
        static np_slot write_slot;
        np_watch(&write_slot, bp.f);
        keel_conn_abort(bp.p.server);
        bp.p.server = NULL;
        NP_AWAIT(&bp, np_sleep_ms(20), abort_script);
        NP_TRUE(bp.slot.done);
        NP_ERR(bp.slot.r, -ECANCELED);
        NP_TRUE(write_slot.done);
        NP_ERR(write_slot.r, -ECANCELED);
    }
    /* The peer sees a reset, possibly after some of the data. */
    NP_AWAIT(&bp, np_read(&bp.rd, bp.p.client, NULL, 2 * RESET_AFTER, 0), abort_script);
    NP_ERR(r, -ECONNRESET);
    NP_AWAIT(&bp, np_pair_close(&bp.p), abort_script);
    NP_OK(r, 1);
    NP_END(&bp);
}

Test(net_backpressure, aborting_a_connection_cancels_its_pending_read_and_write_and_resets_the_peer)
{
    np_run_script(1, abort_script, &bp, 5000);
    free(bp.chunk);
}
