/* Reading: read, read_exactly and read_until resolve when their condition
 * holds, data stays buffered until consumed, and peek/copy/consume see the
 * bytes in order across receive buffers. */
#include "net_harness.h"

static struct {
    NP_SCRIPT_FIELDS;
    np_server sv;
    np_pair p;
    np_slot slot;
    keel_result res[2];
    char buf[64];
    uint8_t *big;
    size_t len;
} rd;

/* ---- read ------------------------------------------------------------------------------ */

static keel_future *read_script(void *ctx, keel_result r)
{
    (void)ctx;
    NP_BEGIN(&rd);
    NP_AWAIT(&rd, np_listen(&rd.sv), read_script);
    NP_OK(r, 0);
    NP_AWAIT(&rd, np_pair_open(&rd.sv, &rd.p), read_script);
    NP_OK(r, 0);
    /* Nothing buffered: the read waits. */
    np_watch(&rd.slot, keel_conn_read(rd.p.server));
    NP_AWAIT(&rd, np_sleep_ms(50), read_script);
    NP_TRUE(!rd.slot.done);
    NP_EQ(keel_conn_buffered(rd.p.server), 0);
    NP_AWAIT(&rd, keel_conn_write(rd.p.client, "hello", 5), read_script);
    NP_OK(r, 0);
    NP_AWAIT(&rd, np_sleep_ms(50), read_script);
    NP_TRUE(rd.slot.done);
    NP_OK(rd.slot.r, 5);
    /* Not consumed: a second read resolves at once with the same bytes. */
    NP_AWAIT(&rd, keel_conn_read(rd.p.server), read_script);
    NP_OK(r, 5);
    NP_EQ(keel_conn_buffered(rd.p.server), 5);
    /* More data adds to what is buffered. */
    NP_AWAIT(&rd, keel_conn_write(rd.p.client, " world", 6), read_script);
    NP_OK(r, 0);
    NP_AWAIT(&rd, keel_conn_read_exactly(rd.p.server, 11), read_script);
    NP_OK(r, 11);
    NP_EQ(keel_conn_copy(rd.p.server, rd.buf, sizeof(rd.buf)), 11);
    NP_TRUE(!memcmp(rd.buf, "hello world", 11));
    keel_conn_consume(rd.p.server, 6);
    NP_EQ(keel_conn_buffered(rd.p.server), 5);
    NP_AWAIT(&rd, keel_conn_read(rd.p.server), read_script);
    NP_OK(r, 5);
    memset(rd.buf, 0, sizeof(rd.buf));
    NP_EQ(keel_conn_copy(rd.p.server, rd.buf, 3), 3);
    NP_TRUE(!memcmp(rd.buf, "wor\0", 4));
    keel_conn_consume(rd.p.server, 5);
    NP_EQ(keel_conn_buffered(rd.p.server), 0);
    /* End of stream: read resolves to 0. */
    NP_AWAIT(&rd, keel_conn_shutdown_write(rd.p.client), read_script);
    NP_OK(r, 0);
    NP_AWAIT(&rd, keel_conn_read(rd.p.server), read_script);
    NP_OK(r, 0);
    /* and keeps resolving to 0. */
    NP_AWAIT(&rd, keel_conn_read(rd.p.server), read_script);
    NP_OK(r, 0);
    NP_AWAIT(&rd, np_pair_close(&rd.p), read_script);
    NP_OK(r, 2);
    NP_END(&rd);
}

Test(net_read, read_resolves_to_what_is_buffered_and_keeps_it_until_consumed)
{
    np_run_script(1, read_script, &rd, 5000);
}

/* ---- read_exactly ------------------------------------------------------------------------ */

static keel_future *exactly_script(void *ctx, keel_result r)
{
    (void)ctx;
    NP_BEGIN(&rd);
    NP_AWAIT(&rd, np_listen(&rd.sv), exactly_script);
    NP_OK(r, 0);
    NP_AWAIT(&rd, np_pair_open(&rd.sv, &rd.p), exactly_script);
    NP_OK(r, 0);
    np_watch(&rd.slot, keel_conn_read_exactly(rd.p.server, 10));
    NP_AWAIT(&rd, keel_conn_write(rd.p.client, "01234", 5), exactly_script);
    NP_OK(r, 0);
    NP_AWAIT(&rd, np_sleep_ms(50), exactly_script);
    NP_TRUE(!rd.slot.done);
    NP_EQ(keel_conn_buffered(rd.p.server), 5);
    NP_AWAIT(&rd, keel_conn_write(rd.p.client, "56789abc", 8), exactly_script);
    NP_OK(r, 0);
    NP_AWAIT(&rd, np_sleep_ms(50), exactly_script);
    NP_TRUE(rd.slot.done);
    NP_OK(rd.slot.r, 10); /* n, not all that is buffered */
    NP_EQ(keel_conn_buffered(rd.p.server), 13);
    keel_conn_consume(rd.p.server, 10);
    /* Already there: resolves at once. */
    NP_AWAIT(&rd, keel_conn_read_exactly(rd.p.server, 3), exactly_script);
    NP_OK(r, 3);
    NP_EQ(keel_conn_copy(rd.p.server, rd.buf, 3), 3);
    NP_TRUE(!memcmp(rd.buf, "abc", 3));
    keel_conn_consume(rd.p.server, 3);
    /* The stream ends before n bytes: 0, and the partial bytes stay. */
    NP_AWAIT(&rd, keel_conn_write(rd.p.client, "xyz", 3), exactly_script);
    NP_OK(r, 0);
    NP_AWAIT(&rd, keel_conn_shutdown_write(rd.p.client), exactly_script);
    NP_OK(r, 0);
    NP_AWAIT(&rd, keel_conn_read_exactly(rd.p.server, 100), exactly_script);
    NP_OK(r, 0);
    NP_EQ(keel_conn_buffered(rd.p.server), 3);
    NP_EQ(keel_conn_copy(rd.p.server, rd.buf, sizeof(rd.buf)), 3);
    NP_TRUE(!memcmp(rd.buf, "xyz", 3));
    NP_AWAIT(&rd, np_pair_close(&rd.p), exactly_script);
    NP_OK(r, 2);
    NP_END(&rd);
}

Test(net_read, read_exactly_waits_for_n_bytes_and_resolves_to_zero_if_the_stream_ends_first)
{
    np_run_script(1, exactly_script, &rd, 5000);
}

/* ---- read_until -------------------------------------------------------------------------- */

static keel_future *until_script(void *ctx, keel_result r)
{
    (void)ctx;
    NP_BEGIN(&rd);
    NP_AWAIT(&rd, np_listen(&rd.sv), until_script);
    NP_OK(r, 0);
    NP_AWAIT(&rd, np_pair_open(&rd.sv, &rd.p), until_script);
    NP_OK(r, 0);
    /* The delimiter arrives in a later piece than the start of the line. */
    np_watch(&rd.slot, keel_conn_read_until(rd.p.server, '\n', 64));
    NP_AWAIT(&rd, keel_conn_write(rd.p.client, "GET /", 5), until_script);
    NP_OK(r, 0);
    NP_AWAIT(&rd, np_sleep_ms(50), until_script);
    NP_TRUE(!rd.slot.done);
    NP_AWAIT(&rd, keel_conn_write(rd.p.client, "x\nnext line\nrest", 16), until_script);
    NP_OK(r, 0);
    NP_AWAIT(&rd, np_sleep_ms(50), until_script);
    NP_TRUE(rd.slot.done);
    NP_OK(rd.slot.r, 7); /* "GET /x\n": through the first delimiter */
    keel_conn_consume(rd.p.server, 7);
    NP_AWAIT(&rd, keel_conn_read_until(rd.p.server, '\n', 64), until_script);
    NP_OK(r, 10);
    NP_EQ(keel_conn_copy(rd.p.server, rd.buf, 10), 10);
    NP_TRUE(!memcmp(rd.buf, "next line\n", 10));
    keel_conn_consume(rd.p.server, 10);
    /* "rest" has no delimiter and max is 4: -EMSGSIZE, the bytes stay. */
    NP_AWAIT(&rd, keel_conn_read_until(rd.p.server, '\n', 4), until_script);
    NP_ERR(r, -EMSGSIZE);
    NP_EQ(keel_conn_buffered(rd.p.server), 4);
    /* A delimiter just past max is past max. */
    NP_AWAIT(&rd, keel_conn_write(rd.p.client, "\n", 1), until_script);
    NP_OK(r, 0);
    NP_AWAIT(&rd, keel_conn_read_exactly(rd.p.server, 5), until_script);
    NP_OK(r, 5);
    NP_AWAIT(&rd, keel_conn_read_until(rd.p.server, '\n', 4), until_script);
    NP_ERR(r, -EMSGSIZE);
    /* ...and within a larger max it is found. */
    NP_AWAIT(&rd, keel_conn_read_until(rd.p.server, '\n', 5), until_script);
    NP_OK(r, 5);
    keel_conn_consume(rd.p.server, 5);
    /* Growing past max while waiting also gives -EMSGSIZE. */
    np_watch(&rd.slot, keel_conn_read_until(rd.p.server, ';', 8));
    NP_AWAIT(&rd, keel_conn_write(rd.p.client, "0123", 4), until_script);
    NP_OK(r, 0);
    NP_AWAIT(&rd, np_sleep_ms(30), until_script);
    NP_TRUE(!rd.slot.done);
    NP_AWAIT(&rd, keel_conn_write(rd.p.client, "456789", 6), until_script);
    NP_OK(r, 0);
    NP_AWAIT(&rd, np_sleep_ms(50), until_script);
    NP_TRUE(rd.slot.done);
    NP_ERR(rd.slot.r, -EMSGSIZE);
    keel_conn_consume(rd.p.server, 10);
    /* End of stream with nothing buffered: 0. */
    NP_AWAIT(&rd, keel_conn_shutdown_write(rd.p.client), until_script);
    NP_OK(r, 0);
    NP_AWAIT(&rd, keel_conn_read_until(rd.p.server, '\n', 64), until_script);
    NP_OK(r, 0);
    NP_AWAIT(&rd, np_pair_close(&rd.p), until_script);
    NP_OK(r, 2);
    NP_END(&rd);
}

Test(net_read, read_until_resolves_through_the_delimiter_or_fails_emsgsize_past_max)
{
    np_run_script(1, until_script, &rd, 5000);
}

/* ---- peek, copy, consume across receive buffers ------------------------------------------ */

enum { SPAN = 3 * 4096 + 1000 }; /* more than three receive buffers */

static keel_future *span_script(void *ctx, keel_result r)
{
    (void)ctx;
    NP_BEGIN(&rd);
    NP_AWAIT(&rd, np_listen(&rd.sv), span_script);
    NP_OK(r, 0);
    NP_AWAIT(&rd, np_pair_open(&rd.sv, &rd.p), span_script);
    NP_OK(r, 0);
    rd.big = malloc(SPAN);
    np_fill(rd.big, 0, SPAN);
    NP_AWAIT(&rd, keel_conn_write(rd.p.client, rd.big, SPAN), span_script);
    NP_OK(r, 0);
    NP_AWAIT(&rd, keel_conn_read_exactly(rd.p.server, SPAN), span_script);
    NP_OK(r, SPAN);
    {
        /* peek: the first contiguous run, a prefix of the stream. */
        size_t len = 0;
        const uint8_t *p = keel_conn_peek(rd.p.server, &len);
        NP_TRUE(p != NULL);
        NP_TRUE(len > 0 && len <= SPAN);
        NP_EQ(np_mismatch(p, 0, len), SIZE_MAX);
        /* copy: everything, across buffers, and copying consumes nothing. */
        memset(rd.big, 0, SPAN);
        NP_EQ(keel_conn_copy(rd.p.server, rd.big, SPAN + 100), SPAN);
        NP_EQ(np_mismatch(rd.big, 0, SPAN), SIZE_MAX);
        NP_EQ(keel_conn_buffered(rd.p.server), SPAN);
        /* consume in odd steps that cross buffer boundaries. */
        size_t off = 0;
        const size_t steps[] = {1, 4095, 2, 5000, 3333};
        for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
            keel_conn_consume(rd.p.server, steps[i]);
            off += steps[i];
            NP_EQ(keel_conn_buffered(rd.p.server), SPAN - off);
            p = keel_conn_peek(rd.p.server, &len);
            NP_TRUE(p != NULL && len > 0);
            NP_EQ(np_mismatch(p, off, len), SIZE_MAX);
            NP_EQ(keel_conn_copy(rd.p.server, rd.big, 7000), SPAN - off < 7000 ? SPAN - off : 7000);
            NP_EQ(np_mismatch(rd.big, off, SPAN - off < 7000 ? SPAN - off : 7000), SIZE_MAX);
        }
        keel_conn_consume(rd.p.server, SPAN - off);
        NP_EQ(keel_conn_buffered(rd.p.server), 0);
        p = keel_conn_peek(rd.p.server, &len);
        NP_EQ(len, 0);
    }
    free(rd.big);
    rd.big = NULL;
    NP_AWAIT(&rd, np_pair_close(&rd.p), span_script);
    NP_OK(r, 2);
    NP_END(&rd);
}

Test(net_read, peek_copy_and_consume_see_the_stream_in_order_across_receive_buffers)
{
    np_run_script(1, span_script, &rd, 5000);
    free(rd.big);
}

/* ---- copy_at across segments ------------------------------------------------------------ */

/* Three writes, each received before the next is sent, so they land in
 * separate segments; together they are more than one receive buffer. */
enum { SEG1 = 3000, SEG2 = 2500, SEG3 = 1700, SEGS = SEG1 + SEG2 + SEG3 };

static keel_future *copy_at_script(void *ctx, keel_result r)
{
    (void)ctx;
    NP_BEGIN(&rd);
    NP_AWAIT(&rd, np_listen(&rd.sv), copy_at_script);
    NP_OK(r, 0);
    NP_AWAIT(&rd, np_pair_open(&rd.sv, &rd.p), copy_at_script);
    NP_OK(r, 0);
    rd.big = malloc(SEGS);
    np_fill(rd.big, 0, SEGS);
    NP_AWAIT(&rd, keel_conn_write(rd.p.client, rd.big, SEG1), copy_at_script);
    NP_OK(r, 0);
    NP_AWAIT(&rd, keel_conn_read_exactly(rd.p.server, SEG1), copy_at_script);
    NP_OK(r, SEG1);
    NP_AWAIT(&rd, keel_conn_write(rd.p.client, rd.big + SEG1, SEG2), copy_at_script);
    NP_OK(r, 0);
    NP_AWAIT(&rd, keel_conn_read_exactly(rd.p.server, SEG1 + SEG2), copy_at_script);
    NP_OK(r, SEG1 + SEG2);
    NP_AWAIT(&rd, keel_conn_write(rd.p.client, rd.big + SEG1 + SEG2, SEG3), copy_at_script);
    NP_OK(r, 0);
    NP_AWAIT(&rd, keel_conn_read_exactly(rd.p.server, SEGS), copy_at_script);
    NP_OK(r, SEGS);
    {
        /* The first segment ends where peek's contiguous run ends. */
        size_t first = 0;
        NP_TRUE(keel_conn_peek(rd.p.server, &first) != NULL);
        NP_TRUE(first > 0 && first < SEGS);
        /* Inside the first segment. */
        memset(rd.big, 0, SEGS);
        NP_EQ(keel_conn_copy_at(rd.p.server, 0, rd.big, 10), 10);
        NP_EQ(np_mismatch(rd.big, 0, 10), SIZE_MAX);
        NP_EQ(keel_conn_copy_at(rd.p.server, 100, rd.big, 500), 500);
        NP_EQ(np_mismatch(rd.big, 100, 500), SIZE_MAX);
        NP_EQ(keel_conn_copy_at(rd.p.server, first - 1, rd.big, 1), 1);
        NP_EQ(np_mismatch(rd.big, first - 1, 1), SIZE_MAX);
        /* Across the segment boundary, and starting exactly on it. */
        NP_EQ(keel_conn_copy_at(rd.p.server, first - 7, rd.big, 20), 20);
        NP_EQ(np_mismatch(rd.big, first - 7, 20), SIZE_MAX);
        NP_EQ(keel_conn_copy_at(rd.p.server, first, rd.big, 20), 20);
        NP_EQ(np_mismatch(rd.big, first, 20), SIZE_MAX);
        /* Across where each write ended, and across all of them. */
        NP_EQ(keel_conn_copy_at(rd.p.server, SEG1 - 10, rd.big, 20), 20);
        NP_EQ(np_mismatch(rd.big, SEG1 - 10, 20), SIZE_MAX);
        NP_EQ(keel_conn_copy_at(rd.p.server, SEG1 + SEG2 - 10, rd.big, 20), 20);
        NP_EQ(np_mismatch(rd.big, SEG1 + SEG2 - 10, 20), SIZE_MAX);
        NP_EQ(keel_conn_copy_at(rd.p.server, 1, rd.big, SEGS - 2), SEGS - 2);
        NP_EQ(np_mismatch(rd.big, 1, SEGS - 2), SIZE_MAX);
        /* n larger than what is left: what is left, and nothing past it in dst. */
        memset(rd.buf, 0xaa, sizeof(rd.buf));
        NP_EQ(keel_conn_copy_at(rd.p.server, SEGS - 5, rd.buf, sizeof(rd.buf)), 5);
        NP_EQ(np_mismatch(rd.buf, SEGS - 5, 5), SIZE_MAX);
        NP_EQ((uint8_t)rd.buf[5], 0xaa);
        NP_EQ(keel_conn_copy_at(rd.p.server, first, rd.big, SEGS), SEGS - first);
        NP_EQ(np_mismatch(rd.big, first, SEGS - first), SIZE_MAX);
        /* Exactly at the end, and past it: 0, dst untouched. */
        memset(rd.buf, 0xaa, sizeof(rd.buf));
        NP_EQ(keel_conn_copy_at(rd.p.server, SEGS, rd.buf, sizeof(rd.buf)), 0);
        NP_EQ(keel_conn_copy_at(rd.p.server, SEGS + 1, rd.buf, sizeof(rd.buf)), 0);
        NP_EQ(keel_conn_copy_at(rd.p.server, SEGS + 5000, rd.buf, sizeof(rd.buf)), 0);
        NP_EQ(keel_conn_copy_at(rd.p.server, 10, rd.buf, 0), 0);
        NP_EQ((uint8_t)rd.buf[0], 0xaa);
        /* Copying consumes nothing. */
        NP_EQ(keel_conn_buffered(rd.p.server), SEGS);
        /* Offsets count from the first unconsumed byte. */
        keel_conn_consume(rd.p.server, first + 3);
        NP_EQ(keel_conn_copy_at(rd.p.server, 0, rd.big, 10), 10);
        NP_EQ(np_mismatch(rd.big, first + 3, 10), SIZE_MAX);
        NP_EQ(keel_conn_copy_at(rd.p.server, SEG1 + SEG2 - first - 3 - 4, rd.big, 8), 8);
        NP_EQ(np_mismatch(rd.big, SEG1 + SEG2 - 4, 8), SIZE_MAX);
        NP_EQ(keel_conn_copy_at(rd.p.server, SEGS - first - 3, rd.buf, 1), 0);
    }
    free(rd.big);
    rd.big = NULL;
    NP_AWAIT(&rd, np_pair_close(&rd.p), copy_at_script);
    NP_OK(r, 2);
    NP_END(&rd);
}

Test(net_read, copy_at_copies_from_an_offset_across_segments_and_stops_at_the_end)
{
    np_run_script(1, copy_at_script, &rd, 5000);
    free(rd.big);
}

/* ---- reads bigger than the input limit ---------------------------------------------------- */

/* The input limit pauses receiving until the reader consumes; a read
 * that needs more than the limit must still finish (or fail), not wait
 * forever for bytes that receiving will never fetch. */
static keel_future *over_limit_exactly_script(void *ctx, keel_result r)
{
    (void)ctx;
    NP_BEGIN(&rd);
    NP_AWAIT(&rd, np_listen(&rd.sv), over_limit_exactly_script);
    NP_OK(r, 0);
    NP_AWAIT(&rd, np_pair_open(&rd.sv, &rd.p), over_limit_exactly_script);
    NP_OK(r, 0);
    keel_conn_set_limits(rd.p.server, 0, 8192);
    rd.big = malloc(64 * 1024);
    np_fill(rd.big, 0, 64 * 1024);
    np_watch(&rd.slot, keel_conn_read_exactly(rd.p.server, 32 * 1024));
    /* In small paced pieces, so the receive pause really happens between
     * arrivals (one burst may land whole before a pause takes effect). */
    for (rd.len = 0; rd.len < 64 * 1024; rd.len += 2048) {
        NP_AWAIT(&rd, keel_conn_write(rd.p.client, rd.big + rd.len, 2048),
                 over_limit_exactly_script);
        NP_OK(r, 0);
        NP_AWAIT(&rd, np_sleep_ms(5), over_limit_exactly_script);
    }
    for (rd.len = 0; rd.len < 100 && !rd.slot.done; rd.len++)
        NP_AWAIT(&rd, np_sleep_ms(20), over_limit_exactly_script);
    if (!rd.slot.done) {
        H_FAIL("read_exactly(32 KiB) with an 8 KiB input limit never resolved (%zu bytes "
               "buffered): receiving paused at the limit and nothing resumes it",
               keel_conn_buffered(rd.p.server));
        return keel_make_error(-EPROTO);
    }
    NP_OK(rd.slot.r, 32 * 1024);
    NP_EQ(keel_conn_copy(rd.p.server, rd.big, 32 * 1024), 32 * 1024);
    NP_EQ(np_mismatch(rd.big, 0, 32 * 1024), SIZE_MAX);
    free(rd.big);
    rd.big = NULL;
    NP_AWAIT(&rd, np_pair_close(&rd.p), over_limit_exactly_script);
    NP_OK(r, 2);
    NP_END(&rd);
}

Test(net_read, read_exactly_more_than_the_input_limit_still_resolves)
{
    np_run_script(1, over_limit_exactly_script, &rd, 8000);
    free(rd.big);
}

static keel_future *over_limit_until_script(void *ctx, keel_result r)
{
    (void)ctx;
    NP_BEGIN(&rd);
    NP_AWAIT(&rd, np_listen(&rd.sv), over_limit_until_script);
    NP_OK(r, 0);
    NP_AWAIT(&rd, np_pair_open(&rd.sv, &rd.p), over_limit_until_script);
    NP_OK(r, 0);
    keel_conn_set_limits(rd.p.server, 0, 8192);
    rd.big = malloc(64 * 1024);
    memset(rd.big, 'a', 64 * 1024);
    np_watch(&rd.slot, keel_conn_read_until(rd.p.server, '\n', 32 * 1024));
    for (rd.len = 0; rd.len < 64 * 1024; rd.len += 2048) {
        NP_AWAIT(&rd, keel_conn_write(rd.p.client, rd.big + rd.len, 2048), over_limit_until_script);
        NP_OK(r, 0);
        NP_AWAIT(&rd, np_sleep_ms(5), over_limit_until_script);
    }
    for (rd.len = 0; rd.len < 100 && !rd.slot.done; rd.len++)
        NP_AWAIT(&rd, np_sleep_ms(20), over_limit_until_script);
    if (!rd.slot.done) {
        H_FAIL("read_until(max 32 KiB) with an 8 KiB input limit and no delimiter never "
               "resolved (%zu bytes buffered); expected -EMSGSIZE",
               keel_conn_buffered(rd.p.server));
        return keel_make_error(-EPROTO);
    }
    NP_ERR(rd.slot.r, -EMSGSIZE);
    free(rd.big);
    rd.big = NULL;
    NP_AWAIT(&rd, np_pair_close(&rd.p), over_limit_until_script);
    NP_OK(r, 2);
    NP_END(&rd);
}

Test(net_read, read_until_with_max_over_the_input_limit_fails_emsgsize_rather_than_hanging)
{
    np_run_script(1, over_limit_until_script, &rd, 8000);
    free(rd.big);
}

/* ---- a read pending at close ---------------------------------------------------------------- */

static keel_future *close_script(void *ctx, keel_result r)
{
    (void)ctx;
    NP_BEGIN(&rd);
    NP_AWAIT(&rd, np_listen(&rd.sv), close_script);
    NP_OK(r, 0);
    NP_AWAIT(&rd, np_pair_open(&rd.sv, &rd.p), close_script);
    NP_OK(r, 0);
    np_watch(&rd.slot, keel_conn_read(rd.p.server));
    NP_AWAIT(&rd, keel_conn_close(rd.p.server), close_script);
    rd.p.server = NULL;
    NP_OK(r, 0);
    NP_TRUE(rd.slot.done);
    NP_ERR(rd.slot.r, -ECANCELED);
    /* The peer sees the end of the stream. */
    NP_AWAIT(&rd, keel_conn_read(rd.p.client), close_script);
    NP_OK(r, 0);
    NP_AWAIT(&rd, np_pair_close(&rd.p), close_script);
    NP_OK(r, 1);
    NP_END(&rd);
}

Test(net_read, a_read_pending_when_its_connection_closes_fails_ecanceled)
{
    np_run_script(1, close_script, &rd, 5000);
}
