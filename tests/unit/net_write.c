/* Writing: bytes arrive whole and in order, flush waits until the kernel
 * has them, forward moves input to output without loss, and half-close,
 * shutdown_write and close send what was queued before the FIN. */
#include "net_harness.h"

static struct {
    NP_SCRIPT_FIELDS;
    np_server sv;
    np_pair p, q;
    np_reader rd;
    np_writer wr;
    np_slot slot;
    keel_result res[2];
    char buf[64];
    uint8_t *big;
    size_t off, i;
} wt;

/* ---- write and flush ------------------------------------------------------------------ */

static const size_t pieces[] = {1, 100, 5000, 70000, 3, 4096, 200000};

static keel_future *flush_script(void *ctx, keel_result r)
{
    (void)ctx;
    NP_BEGIN(&wt);
    NP_AWAIT(&wt, np_listen(&wt.sv), flush_script);
    NP_OK(r, 0);
    NP_AWAIT(&wt, np_pair_open(&wt.sv, &wt.p), flush_script);
    NP_OK(r, 0);
    /* Nothing queued: flush is ready at once. */
    NP_AWAIT(&wt, keel_conn_flush(wt.p.client), flush_script);
    NP_OK(r, 0);
    wt.big = malloc(200000);
    wt.off = 0;
    for (wt.i = 0; wt.i < sizeof(pieces) / sizeof(pieces[0]); wt.i++) {
        np_fill(wt.big, wt.off, pieces[wt.i]);
        NP_AWAIT(&wt, keel_conn_write(wt.p.client, wt.big, pieces[wt.i]), flush_script);
        NP_OK(r, 0);
        wt.off += pieces[wt.i];
    }
    /* The writes copied their data: scribbling on the buffer changes nothing. */
    memset(wt.big, 0xee, 200000);
    NP_AWAIT(&wt, keel_conn_flush(wt.p.client), flush_script);
    NP_OK(r, 0);
    NP_EQ(keel_conn_queued(wt.p.client), 0);
    NP_AWAIT(&wt, np_read(&wt.rd, wt.p.server, NULL, wt.off, 0), flush_script);
    NP_OK(r, wt.off);
    NP_EQ(wt.rd.mismatch_at, SIZE_MAX);
    free(wt.big);
    wt.big = NULL;
    NP_AWAIT(&wt, np_pair_close(&wt.p), flush_script);
    NP_OK(r, 2);
    NP_END(&wt);
}

Test(net_write, writes_arrive_whole_and_in_order_and_flush_resolves_once_all_is_sent)
{
    np_run_script(1, flush_script, &wt, 5000);
    free(wt.big);
}

enum { LARGE = 4 << 20 };

static keel_future *large_script(void *ctx, keel_result r)
{
    (void)ctx;
    NP_BEGIN(&wt);
    NP_AWAIT(&wt, np_listen(&wt.sv), large_script);
    NP_OK(r, 0);
    NP_AWAIT(&wt, np_pair_open(&wt.sv, &wt.p), large_script);
    NP_OK(r, 0);
    /* One 4 MiB write, over the 1 MiB output limit: it resolves once the
     * reader has drained the queue below the limit. */
    wt.big = malloc(LARGE);
    np_fill(wt.big, 0, LARGE);
    NP_AWAIT(&wt,
             np_both(keel_conn_write(wt.p.client, wt.big, LARGE),
                     np_read(&wt.rd, wt.p.server, NULL, LARGE, 0), wt.res),
             large_script);
    NP_OK(wt.res[0], 0);
    NP_OK(wt.res[1], LARGE);
    NP_EQ(wt.rd.mismatch_at, SIZE_MAX);
    free(wt.big);
    wt.big = NULL;
    NP_AWAIT(&wt, np_pair_close(&wt.p), large_script);
    NP_OK(r, 2);
    NP_END(&wt);
}

Test(net_write, a_4_mib_write_arrives_intact)
{
    np_run_script(1, large_script, &wt, 10000);
    free(wt.big);
}

/* ---- forward --------------------------------------------------------------------------- */

enum { ECHO_BYTES = 300000 };

static keel_future *echo_script(void *ctx, keel_result r)
{
    (void)ctx;
    NP_BEGIN(&wt);
    NP_AWAIT(&wt, np_listen(&wt.sv), echo_script);
    NP_OK(r, 0);
    NP_AWAIT(&wt, np_pair_open(&wt.sv, &wt.p), echo_script);
    NP_OK(r, 0);
    np_watch(&wt.slot, np_echo(wt.p.server));
    NP_AWAIT(&wt,
             np_both(np_write(&wt.wr, wt.p.client, ECHO_BYTES, 0, 7000),
                     np_read(&wt.rd, wt.p.client, NULL, ECHO_BYTES, 0), wt.res),
             echo_script);
    NP_OK(wt.res[0], 0);
    NP_OK(wt.res[1], ECHO_BYTES);
    NP_EQ(wt.rd.mismatch_at, SIZE_MAX);
    NP_EQ(keel_conn_buffered(wt.p.server), 0); /* forwarding consumed the input */
    NP_AWAIT(&wt, keel_conn_shutdown_write(wt.p.client), echo_script);
    NP_OK(r, 0);
    NP_AWAIT(&wt, np_sleep_ms(50), echo_script);
    NP_TRUE(wt.slot.done);
    NP_OK(wt.slot.r, 0);
    NP_AWAIT(&wt, np_pair_close(&wt.p), echo_script);
    NP_OK(r, 2);
    NP_END(&wt);
}

Test(net_write, forward_to_the_same_connection_echoes_every_byte_in_order)
{
    np_run_script(1, echo_script, &wt, 10000);
}

/* A proxy: what arrives on src goes out on dst. */
static keel_future *proxy_continue(void *ctx, keel_result r)
{
    (void)ctx;
    (void)r;
    return keel_make_ready(KEEL_CONTINUE);
}
static keel_future *proxy_got(void *ctx, keel_result r)
{
    (void)ctx;
    if (r.val == 0)
        return keel_make_ready(KEEL_STOP);
    return keel_then(keel_conn_forward(wt.q.server, wt.p.server, (size_t)r.val), proxy_continue,
                     NULL);
}
static keel_future *proxy_step(void *ctx)
{
    (void)ctx;
    return keel_then(keel_conn_read(wt.p.server), proxy_got, NULL);
}

enum { PROXY_BYTES = 500000 };

static keel_future *forward_script(void *ctx, keel_result r)
{
    (void)ctx;
    NP_BEGIN(&wt);
    NP_AWAIT(&wt, np_listen(&wt.sv), forward_script);
    NP_OK(r, 0);
    NP_AWAIT(&wt, np_pair_open(&wt.sv, &wt.p), forward_script);
    NP_OK(r, 0);
    NP_AWAIT(&wt, np_pair_open(&wt.sv, &wt.q), forward_script);
    NP_OK(r, 0);
    /* Exactly n bytes move; the rest stays buffered on the source. */
    NP_AWAIT(&wt, keel_conn_write(wt.p.client, "0123456789", 10), forward_script);
    NP_OK(r, 0);
    NP_AWAIT(&wt, keel_conn_read_exactly(wt.p.server, 10), forward_script);
    NP_OK(r, 10);
    NP_AWAIT(&wt, keel_conn_forward(wt.q.server, wt.p.server, 6), forward_script);
    NP_OK(r, 0);
    NP_EQ(keel_conn_buffered(wt.p.server), 4);
    NP_EQ(keel_conn_copy(wt.p.server, wt.buf, 4), 4);
    NP_TRUE(!memcmp(wt.buf, "6789", 4));
    NP_AWAIT(&wt, keel_conn_read_exactly(wt.q.client, 6), forward_script);
    NP_OK(r, 6);
    NP_EQ(keel_conn_copy(wt.q.client, wt.buf, 64), 6);
    NP_TRUE(!memcmp(wt.buf, "012345", 6));
    keel_conn_consume(wt.q.client, 6);
    keel_conn_consume(wt.p.server, 4);
    /* A stream through the proxy, bigger than every queue limit. */
    np_watch(&wt.slot, keel_repeat(proxy_step, NULL));
    NP_AWAIT(&wt,
             np_both(np_write(&wt.wr, wt.p.client, PROXY_BYTES, 0, 9000),
                     np_read(&wt.rd, wt.q.client, NULL, PROXY_BYTES, 0), wt.res),
             forward_script);
    NP_OK(wt.res[0], 0);
    NP_OK(wt.res[1], PROXY_BYTES);
    NP_EQ(wt.rd.mismatch_at, SIZE_MAX);
    NP_AWAIT(&wt, keel_conn_shutdown_write(wt.p.client), forward_script);
    NP_OK(r, 0);
    NP_AWAIT(&wt, np_sleep_ms(50), forward_script);
    NP_TRUE(wt.slot.done);
    NP_OK(wt.slot.r, 0);
    NP_AWAIT(&wt, np_pair_close(&wt.p), forward_script);
    NP_OK(r, 2);
    NP_AWAIT(&wt, np_pair_close(&wt.q), forward_script);
    NP_OK(r, 2);
    NP_END(&wt);
}

Test(net_write, forward_to_another_connection_moves_exactly_n_bytes_in_order)
{
    np_run_script(1, forward_script, &wt, 10000);
}

/* ---- half-close ------------------------------------------------------------------------ */

static keel_future *half_script(void *ctx, keel_result r)
{
    (void)ctx;
    NP_BEGIN(&wt);
    NP_AWAIT(&wt, np_listen(&wt.sv), half_script);
    NP_OK(r, 0);
    NP_AWAIT(&wt, np_pair_open(&wt.sv, &wt.p), half_script);
    NP_OK(r, 0);
    NP_AWAIT(&wt, keel_conn_write(wt.p.client, "request", 7), half_script);
    NP_OK(r, 0);
    NP_AWAIT(&wt, keel_conn_shutdown_write(wt.p.client), half_script);
    NP_OK(r, 0);
    /* The server reads the request, then the end of the stream... */
    NP_AWAIT(&wt, keel_conn_read_exactly(wt.p.server, 7), half_script);
    NP_OK(r, 7);
    keel_conn_consume(wt.p.server, 7);
    NP_AWAIT(&wt, keel_conn_read(wt.p.server), half_script);
    NP_OK(r, 0);
    NP_EQ(keel_conn_error(wt.p.server), 0);
    /* ...and can still answer, at length; the client reads it all. */
    NP_AWAIT(&wt,
             np_both(np_write(&wt.wr, wt.p.server, 1 << 20, 0, 65536),
                     np_read(&wt.rd, wt.p.client, NULL, 1 << 20, 0), wt.res),
             half_script);
    NP_OK(wt.res[0], 0);
    NP_OK(wt.res[1], 1 << 20);
    NP_EQ(wt.rd.mismatch_at, SIZE_MAX);
    NP_AWAIT(&wt, keel_conn_close(wt.p.server), half_script);
    wt.p.server = NULL;
    NP_OK(r, 0);
    NP_AWAIT(&wt, keel_conn_read(wt.p.client), half_script);
    NP_OK(r, 0);
    NP_EQ(keel_conn_error(wt.p.client), 0);
    NP_AWAIT(&wt, np_pair_close(&wt.p), half_script);
    NP_OK(r, 1);
    NP_END(&wt);
}

Test(net_write, after_a_half_close_the_peer_reads_eof_and_can_still_answer)
{
    np_run_script(1, half_script, &wt, 5000);
}

enum { QUEUED = 2 << 20 };

static keel_future *shut_queued_script(void *ctx, keel_result r)
{
    (void)ctx;
    NP_BEGIN(&wt);
    NP_AWAIT(&wt, np_listen(&wt.sv), shut_queued_script);
    NP_OK(r, 0);
    NP_AWAIT(&wt, np_pair_open(&wt.sv, &wt.p), shut_queued_script);
    NP_OK(r, 0);
    keel_conn_set_limits(wt.p.server, QUEUED * 2, 0); /* the write resolves at once */
    wt.big = malloc(QUEUED);
    np_fill(wt.big, 0, QUEUED);
    NP_AWAIT(&wt, keel_conn_write(wt.p.server, wt.big, QUEUED), shut_queued_script);
    NP_OK(r, 0);
    free(wt.big);
    wt.big = NULL;
    NP_TRUE(keel_conn_queued(wt.p.server) > 0);
    /* Shut down with 2 MiB queued: the FIN goes after the last byte. */
    NP_AWAIT(&wt,
             np_both(keel_conn_shutdown_write(wt.p.server),
                     np_read(&wt.rd, wt.p.client, NULL, QUEUED + 1, 0), wt.res),
             shut_queued_script);
    NP_OK(wt.res[0], 0);
    NP_OK(wt.res[1], QUEUED);
    NP_TRUE(wt.rd.eof);
    NP_EQ(wt.rd.mismatch_at, SIZE_MAX);
    NP_EQ(keel_conn_queued(wt.p.server), 0);
    /* Reading goes on after shutdown_write. */
    NP_AWAIT(&wt, keel_conn_write(wt.p.client, "after", 5), shut_queued_script);
    NP_OK(r, 0);
    NP_AWAIT(&wt, keel_conn_read_exactly(wt.p.server, 5), shut_queued_script);
    NP_OK(r, 5);
    NP_AWAIT(&wt, np_pair_close(&wt.p), shut_queued_script);
    NP_OK(r, 2);
    NP_END(&wt);
}

Test(net_write, shutdown_write_sends_everything_queued_before_the_end_of_stream)
{
    np_run_script(1, shut_queued_script, &wt, 10000);
    free(wt.big);
}

static keel_future *close_queued_script(void *ctx, keel_result r)
{
    (void)ctx;
    NP_BEGIN(&wt);
    NP_AWAIT(&wt, np_listen(&wt.sv), close_queued_script);
    NP_OK(r, 0);
    NP_AWAIT(&wt, np_pair_open(&wt.sv, &wt.p), close_queued_script);
    NP_OK(r, 0);
    keel_conn_set_limits(wt.p.server, QUEUED * 2, 0);
    wt.big = malloc(QUEUED);
    np_fill(wt.big, 0, QUEUED);
    NP_AWAIT(&wt, keel_conn_write(wt.p.server, wt.big, QUEUED), close_queued_script);
    NP_OK(r, 0);
    free(wt.big);
    wt.big = NULL;
    /* Close with 2 MiB queued: it is flushed first, then the FIN. */
    NP_AWAIT(&wt,
             np_both(keel_conn_close(wt.p.server),
                     np_read(&wt.rd, wt.p.client, NULL, QUEUED + 1, 0), wt.res),
             close_queued_script);
    wt.p.server = NULL;
    NP_OK(wt.res[0], 0);
    NP_OK(wt.res[1], QUEUED);
    NP_TRUE(wt.rd.eof);
    NP_EQ(wt.rd.mismatch_at, SIZE_MAX);
    NP_AWAIT(&wt, np_pair_close(&wt.p), close_queued_script);
    NP_OK(r, 1);
    NP_END(&wt);
}

Test(net_write, close_sends_everything_queued_before_closing)
{
    np_run_script(1, close_queued_script, &wt, 10000);
    free(wt.big);
}
