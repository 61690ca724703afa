/* Moving a connection: keel_conn_detach hands the socket back as an fd once
 * nothing would be lost (else fails -EBUSY and closes it), and
 * keel_conn_adopt wraps that fd as a connection of the calling shard, on
 * another shard or the same one. The stream goes on without a gap or a
 * repeated byte.
 *
 * The peer is a plain socket accepted from a plain listener, so that it
 * stays on shard 0 whichever shard the keel side moves to; the script polls
 * it without blocking. */
#include "net_harness.h"

#include <fcntl.h>

/* Stream A goes from the keel side to the peer, stream B the other way. */
enum {
    A1 = 3000,         /* A before the detach */
    A2 = 20000,        /* A from the adopted connection */
    B1 = 2000,         /* B before the detach */
    B_MID = 1500,      /* B sent while the socket is detached and not yet adopted */
    B_LATE = 3000,     /* B sent after the adopt was submitted */
    PEER_POLLS = 4000, /* x 2 ms, for slow machines */
};

/* The part that runs on the shard that adopts. */
typedef struct moved {
    NP_SCRIPT_FIELDS;
    int fd; /* -1 once adopted */
    keel_conn *c;
    unsigned shard;
    uint64_t open_before, open_adopted;
    np_reader rd;
    np_writer w;
    keel_result res[2];
} moved;

static struct {
    NP_SCRIPT_FIELDS;
    int lfd; /* the plain listener */
    uint16_t port;
    np_pair p;        /* p.client: the keel side, until it is detached */
    int peer;         /* the accepted plain socket */
    int fd;           /* what the detach resolved to; -1 once handed over */
    keel_conn *again; /* adopted on this shard */
    uint64_t open_before, open_after;
    np_slot slot;
    moved mv;
    /* The peer's reading: bytes of the current expectation, and how they
     * compared with the stream. */
    size_t peer_got, peer_off, peer_mismatch_at;
    bool peer_eof;
    int peer_err;
    unsigned polls;
    uint8_t buf[8192];
} dt;

static uint64_t open_on(unsigned shard)
{
    keel_net_stats st;
    keel_net_stats_get(shard, &st);
    return st.open;
}

/* ---- the plain peer -------------------------------------------------------------------- */

static void peer_setup(void)
{
    dt.lfd = -1;
    dt.peer = -1;
    dt.fd = -1;
    dt.mv.fd = -1;
    dt.port = 0;
    dt.lfd = np_plain_listen(&dt.port, 16, false);
    /* accept(2) below runs after the connect resolved, so it does not wait;
     * the timeout is only a guard. */
    struct timeval tv = {.tv_sec = 5};
    cr_assert_eq(setsockopt(dt.lfd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), 0);
}

static void peer_teardown(void)
{
    if (dt.peer >= 0)
        close(dt.peer);
    if (dt.lfd >= 0)
        close(dt.lfd);
    if (dt.fd >= 0)
        close(dt.fd);
    if (dt.mv.fd >= 0)
        close(dt.mv.fd);
    dt.peer = dt.lfd = dt.fd = dt.mv.fd = -1;
}

/* Accepts the connection keel_connect made; 0 or -errno. */
static int peer_accept(void)
{
    dt.peer = accept4(dt.lfd, NULL, NULL, SOCK_CLOEXEC);
    if (dt.peer < 0)
        return -errno;
    struct timeval tv = {.tv_sec = 5};
    setsockopt(dt.peer, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    return 0;
}

/* Sends n bytes of stream B from off (small enough for the socket buffers:
 * a blocking send does not wait for the keel side). 0 or -errno. */
static int peer_send(size_t off, size_t n)
{
    while (n) {
        size_t k = n < sizeof(dt.buf) ? n : sizeof(dt.buf);
        np_fill(dt.buf, off, k);
        ssize_t w = send(dt.peer, dt.buf, k, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -errno;
        off += (size_t)w;
        n -= (size_t)w;
    }
    return 0;
}

static void peer_expect_begin(size_t off)
{
    dt.peer_got = 0;
    dt.peer_off = off;
    dt.peer_mismatch_at = SIZE_MAX;
    dt.peer_eof = false;
    dt.peer_err = 0;
}

/* One non-blocking receive of up to want - peer_got bytes on the peer,
 * compared with the test stream. Returns whether anything happened (bytes, end of stream or an
 * error); false means: nothing yet, wait. The same on any socket. */
static bool fd_poll(int fd, size_t want)
{
    size_t room = want - dt.peer_got < sizeof(dt.buf) ? want - dt.peer_got : sizeof(dt.buf);
    ssize_t k = recv(fd, dt.buf, room, MSG_DONTWAIT);
    if (k > 0) {
        size_t m = np_mismatch(dt.buf, dt.peer_off + dt.peer_got, (size_t)k);
        if (m != SIZE_MAX && dt.peer_mismatch_at == SIZE_MAX)
            dt.peer_mismatch_at = dt.peer_got + m;
        dt.peer_got += (size_t)k;
        return true;
    }
    if (k == 0) {
        dt.peer_eof = true;
        return true;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
        return false;
    dt.peer_err = -errno;
    dt.peer_eof = true;
    return true;
}

static bool peer_poll(size_t want)
{
    return fd_poll(dt.peer, want);
}

/* In a script: has the peer receive want bytes of stream A from off, or
 * stop early at the end of the stream. */
#define PEER_EXPECT(want, off, self)                                                               \
    do {                                                                                           \
        peer_expect_begin(off);                                                                    \
        for (dt.polls = 0; dt.peer_got < (want) && !dt.peer_eof && dt.polls < PEER_POLLS;          \
             dt.polls++) {                                                                         \
            if (!peer_poll(want))                                                                  \
                NP_AWAIT(&dt, np_sleep_ms(2), self);                                               \
        }                                                                                          \
    } while (0)

/* In a script: checks the peer got exactly want bytes of stream A from off. */
#define PEER_GOT(want, off)                                                                        \
    do {                                                                                           \
        NP_EQ(dt.peer_err, 0);                                                                     \
        NP_EQ(dt.peer_got, (want));                                                                \
        if (dt.peer_mismatch_at != SIZE_MAX)                                                       \
            NP_FAIL("the peer's byte %zu of stream A is wrong (a gap or a repeat)",                \
                    (size_t)(off) + dt.peer_mismatch_at);                                          \
    } while (0)

/* In a script: has the peer wait for the end of the stream; checks that no
 * byte came before it. */
#define PEER_EXPECT_EOF(self)                                                                      \
    do {                                                                                           \
        PEER_EXPECT(SIZE_MAX, 0, self);                                                            \
        NP_EQ(dt.peer_err, 0);                                                                     \
        NP_TRUE(dt.peer_eof);                                                                      \
        NP_EQ(dt.peer_got, 0);                                                                     \
    } while (0)

/* ---- the keel side ----------------------------------------------------------------------- */

/* Connects the keel side to the plain listener and accepts the peer;
 * resolves to 0. */
static keel_future *connected(void *ctx, keel_result r)
{
    (void)ctx;
    if (r.err)
        return keel_make_error(r.err);
    dt.p.client = r.ptr;
    int err = peer_accept();
    return err ? keel_make_error(err) : keel_make_ready(0);
}

static keel_future *open_side(void)
{
    memset(&dt.p, 0, sizeof(dt.p));
    np_pair_track(&dt.p, false);
    np_pair_track(&dt.p, true);
    return keel_then_wrapped(keel_connect("127.0.0.1", dt.port, KEEL_SEC(5)), connected, NULL);
}

/* A1 bytes of stream A to the peer, B1 bytes of stream B back, all
 * consumed: the exchange before a detach. Script state is dt's. */
typedef struct exchange {
    NP_SCRIPT_FIELDS;
    np_writer w;
    np_reader rd;
} exchange;
static exchange ex;

static keel_future *exchange_script(void *ctx, keel_result r)
{
    (void)ctx;
    NP_BEGIN(&ex);
    NP_AWAIT(&ex, np_write(&ex.w, dt.p.client, A1, 0, 1024), exchange_script);
    NP_OK(r, 0);
    NP_AWAIT(&ex, keel_conn_flush(dt.p.client), exchange_script);
    NP_OK(r, 0);
    NP_EQ(peer_send(0, B1), 0);
    NP_AWAIT(&ex, np_read(&ex.rd, dt.p.client, NULL, B1, 0), exchange_script);
    NP_OK(r, B1);
    NP_EQ(ex.rd.mismatch_at, SIZE_MAX);
    NP_EQ(keel_conn_buffered(dt.p.client), 0);
    NP_END(&ex);
}

static keel_future *exchange_run(void)
{
    memset(&ex, 0, sizeof(ex));
    return keel_then_wrapped(keel_make_ready(0), exchange_script, NULL);
}

/* ---- the adopting shard's part ----------------------------------------------------------- */

/* Adopts mv->fd, reads B_MID + B_LATE bytes of stream B from B1 and writes
 * A2 bytes of stream A from A1 at the same time, then closes. */
static keel_future *moved_script(void *ctx, keel_result r)
{
    moved *mv = ctx;
    NP_BEGIN(mv);
    mv->shard = keel_shard_id();
    mv->open_before = open_on(mv->shard);
    mv->c = keel_conn_adopt(mv->fd);
    if (!mv->c)
        NP_FAIL("keel_conn_adopt(%d) on shard %u failed", mv->fd, mv->shard);
    mv->fd = -1;
    mv->open_adopted = open_on(mv->shard);
    NP_AWAIT(mv,
             np_both(np_read(&mv->rd, mv->c, NULL, B_MID + B_LATE, B1),
                     np_write(&mv->w, mv->c, A2, A1, 4096), mv->res),
             moved_script);
    NP_OK(mv->res[0], B_MID + B_LATE);
    if (mv->rd.mismatch_at != SIZE_MAX)
        NP_FAIL("the adopted connection's byte %zu of stream B is wrong (a gap or a repeat)",
                B1 + mv->rd.mismatch_at);
    NP_OK(mv->res[1], 0);
    NP_EQ(keel_conn_buffered(mv->c), 0);
    NP_AWAIT(mv, keel_conn_close(mv->c), moved_script);
    mv->c = NULL;
    NP_OK(r, 0);
    NP_END(mv);
}

static keel_future *moved_end(void *ctx, keel_result r)
{
    moved *mv = ctx;
    if (mv->c) /* the script failed half-way */
        keel_conn_abort(mv->c);
    mv->c = NULL;
    return r.err ? keel_make_error(r.err) : keel_make_ready(0);
}

static keel_future *moved_start(void *arg)
{
    moved *mv = arg;
    mv->line_ = 0;
    mv->done_ = false;
    return keel_then_wrapped(keel_then_wrapped(keel_make_ready(0), moved_script, mv), moved_end,
                             mv);
}

/* ---- detach on shard 0, adopt on shard 1 ------------------------------------------------- */

static keel_future *move_script(void *ctx, keel_result r)
{
    (void)ctx;
    NP_BEGIN(&dt);
    NP_EQ(keel_shard_count(), 2);
    NP_AWAIT(&dt, open_side(), move_script);
    NP_OK(r, 0);
    NP_AWAIT(&dt, exchange_run(), move_script);
    NP_OK(r, 0);
    PEER_EXPECT(A1, 0, move_script);
    PEER_GOT(A1, 0);
    dt.open_before = open_on(0);
    NP_AWAIT(&dt, keel_conn_detach(dt.p.client), move_script);
    dt.p.client = NULL;
    NP_NOERR(r);
    NP_GE(r.val, 0);
    dt.fd = (int)r.val;
    NP_EQ(open_on(0), dt.open_before - 1);
    /* The socket is still open and connected: the peer sees no end. */
    NP_TRUE(fcntl(dt.fd, F_GETFD) >= 0);
    NP_TRUE(!peer_poll(1));
    /* Bytes sent while nobody owns the socket wait in the kernel. */
    NP_EQ(peer_send(B1, B_MID), 0);
    dt.mv.fd = dt.fd;
    dt.fd = -1;
    np_watch(&dt.slot, keel_submit_to(1, moved_start, &dt.mv));
    NP_EQ(peer_send(B1 + B_MID, B_LATE), 0);
    PEER_EXPECT(A2, A1, move_script);
    PEER_GOT(A2, A1);
    /* The adopted connection closes after its writes: nothing more comes. */
    PEER_EXPECT_EOF(move_script);
    for (dt.polls = 0; !dt.slot.done && dt.polls < 2500; dt.polls++)
        NP_AWAIT(&dt, np_sleep_ms(2), move_script);
    NP_TRUE(dt.slot.done);
    NP_OK(dt.slot.r, 0);
    NP_TRUE(dt.mv.done_);
    NP_EQ(dt.mv.shard, 1);
    NP_EQ(dt.mv.open_adopted, dt.mv.open_before + 1);
    NP_EQ(open_on(1), dt.mv.open_before);
    np_pair_track(&dt.p, false);
    NP_END(&dt);
}

Test(net_detach, a_connection_detached_on_one_shard_and_adopted_on_another_keeps_its_stream)
{
    memset(&dt, 0, sizeof(dt));
    peer_setup();
    np_run_script(2, move_script, &dt, 20000);
    peer_teardown();
}

/* ---- unread input: -EBUSY, and the socket is closed -------------------------------------- */

static keel_future *busy_script(void *ctx, keel_result r)
{
    (void)ctx;
    NP_BEGIN(&dt);
    NP_AWAIT(&dt, open_side(), busy_script);
    NP_OK(r, 0);
    NP_EQ(peer_send(0, 100), 0);
    NP_AWAIT(&dt, keel_conn_read_exactly(dt.p.client, 100), busy_script);
    NP_OK(r, 100);
    keel_conn_consume(dt.p.client, 40); /* some of it read, not all */
    dt.open_before = open_on(0);
    NP_AWAIT(&dt, keel_conn_detach(dt.p.client), busy_script);
    dt.p.client = NULL;
    NP_ERR(r, -EBUSY);
    NP_EQ(open_on(0), dt.open_before - 1);
    /* The peer sees the connection closed. */
    PEER_EXPECT_EOF(busy_script);
    np_pair_track(&dt.p, false);
    NP_END(&dt);
}

Test(net_detach, detaching_with_unread_input_fails_ebusy_and_closes_the_socket)
{
    memset(&dt, 0, sizeof(dt));
    peer_setup();
    np_run_script(1, busy_script, &dt, 20000);
    peer_teardown();
}

/* A connection that failed (the peer reset it) is not handed over either. */
static keel_future *failed_script(void *ctx, keel_result r)
{
    (void)ctx;
    NP_BEGIN(&dt);
    NP_AWAIT(&dt, open_side(), failed_script);
    NP_OK(r, 0);
    {
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        setsockopt(dt.peer, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        close(dt.peer);
        dt.peer = -1;
    }
    NP_AWAIT(&dt, keel_conn_read(dt.p.client), failed_script);
    NP_ERR(r, -ECONNRESET);
    NP_AWAIT(&dt, keel_conn_detach(dt.p.client), failed_script);
    dt.p.client = NULL;
    NP_ERR(r, -EBUSY);
    np_pair_track(&dt.p, false);
    NP_END(&dt);
}

Test(net_detach, detaching_a_failed_connection_fails_ebusy)
{
    memset(&dt, 0, sizeof(dt));
    peer_setup();
    np_run_script(1, failed_script, &dt, 20000);
    peer_teardown();
}

/* ---- input arriving during the detach ------------------------------------------------------ */

/* The peer sends and the detach starts at once, so the bytes land in keel's
 * buffers (-EBUSY, the socket closed) or stay in the kernel's (the fd is
 * handed over and they are all there); never lost. */
enum { RACE_ROUNDS = 30, RACE_BYTES = 700 };

static struct {
    unsigned round, busy, handed;
} race;

static keel_future *race_script(void *ctx, keel_result r)
{
    (void)ctx;
    NP_BEGIN(&dt);
    for (race.round = 0; race.round < RACE_ROUNDS; race.round++) {
        NP_AWAIT(&dt, open_side(), race_script);
        NP_OK(r, 0);
        NP_EQ(peer_send(0, RACE_BYTES), 0);
        if (race.round % 3 == 1) /* vary the moment */
            NP_AWAIT(&dt, keel_yield(), race_script);
        NP_AWAIT(&dt, keel_conn_detach(dt.p.client), race_script);
        dt.p.client = NULL;
        if (r.err) {
            NP_ERR(r, -EBUSY);
            race.busy++;
            PEER_EXPECT_EOF(race_script);
        } else {
            NP_GE(r.val, 0);
            race.handed++;
            dt.fd = (int)r.val;
            peer_expect_begin(0);
            for (dt.polls = 0; dt.peer_got < RACE_BYTES && !dt.peer_eof && dt.polls < PEER_POLLS;
                 dt.polls++) {
                if (!fd_poll(dt.fd, RACE_BYTES))
                    NP_AWAIT(&dt, np_sleep_ms(2), race_script);
            }
            NP_EQ(dt.peer_err, 0);
            NP_EQ(dt.peer_got, RACE_BYTES);
            NP_EQ(dt.peer_mismatch_at, SIZE_MAX);
            close(dt.fd);
            dt.fd = -1;
        }
        close(dt.peer);
        dt.peer = -1;
    }
    np_pair_track(&dt.p, false);
    NP_END(&dt);
}

Test(net_detach, input_arriving_during_a_detach_is_either_handed_over_or_reported)
{
    memset(&dt, 0, sizeof(dt));
    memset(&race, 0, sizeof(race));
    peer_setup();
    np_run_script(1, race_script, &dt, 30000);
    peer_teardown();
    cr_log_info("%u rounds: %u -EBUSY, %u handed over", RACE_ROUNDS, race.busy, race.handed);
}

/* ---- detach, then adopt on the same shard ------------------------------------------------ */

/* All of stream B is sent before the adopt, and A2 fits in the socket
 * buffers, so the adopting script runs to its end without the peer. */
static keel_future *same_script(void *ctx, keel_result r)
{
    (void)ctx;
    NP_BEGIN(&dt);
    NP_AWAIT(&dt, open_side(), same_script);
    NP_OK(r, 0);
    NP_AWAIT(&dt, exchange_run(), same_script);
    NP_OK(r, 0);
    PEER_EXPECT(A1, 0, same_script);
    PEER_GOT(A1, 0);
    NP_AWAIT(&dt, keel_conn_detach(dt.p.client), same_script);
    dt.p.client = NULL;
    NP_NOERR(r);
    NP_GE(r.val, 0);
    dt.mv.fd = (int)r.val;
    NP_EQ(peer_send(B1, B_MID + B_LATE), 0);
    NP_AWAIT(&dt, moved_start(&dt.mv), same_script);
    NP_OK(r, 0);
    NP_TRUE(dt.mv.done_);
    NP_EQ(dt.mv.shard, 0);
    NP_EQ(dt.mv.open_adopted, dt.mv.open_before + 1);
    PEER_EXPECT(A2, A1, same_script);
    PEER_GOT(A2, A1);
    PEER_EXPECT_EOF(same_script);
    np_pair_track(&dt.p, false);
    NP_END(&dt);
}

Test(net_detach, a_connection_detached_and_adopted_on_the_same_shard_keeps_its_stream)
{
    memset(&dt, 0, sizeof(dt));
    peer_setup();
    np_run_script(1, same_script, &dt, 20000);
    peer_teardown();
}

/* ---- the open count follows ------------------------------------------------------------------ */

static keel_future *stats_script(void *ctx, keel_result r)
{
    (void)ctx;
    NP_BEGIN(&dt);
    dt.open_before = open_on(0);
    NP_AWAIT(&dt, open_side(), stats_script);
    NP_OK(r, 0);
    NP_EQ(open_on(0), dt.open_before + 1);
    NP_AWAIT(&dt, keel_conn_detach(dt.p.client), stats_script);
    dt.p.client = NULL;
    NP_NOERR(r);
    dt.fd = (int)r.val;
    NP_EQ(open_on(0), dt.open_before);
    dt.again = keel_conn_adopt(dt.fd);
    NP_TRUE(dt.again != NULL);
    dt.fd = -1;
    dt.p.client = dt.again; /* aborted if the script fails from here */
    NP_EQ(open_on(0), dt.open_before + 1);
    /* Detach and adopt once more: the adopted connection moves as well. */
    NP_AWAIT(&dt, keel_conn_detach(dt.again), stats_script);
    dt.p.client = dt.again = NULL;
    NP_NOERR(r);
    dt.fd = (int)r.val;
    NP_EQ(open_on(0), dt.open_before);
    dt.again = keel_conn_adopt(dt.fd);
    NP_TRUE(dt.again != NULL);
    dt.fd = -1;
    dt.p.client = dt.again;
    NP_EQ(open_on(0), dt.open_before + 1);
    /* Still a working connection. */
    NP_EQ(peer_send(0, 10), 0);
    NP_AWAIT(&dt, keel_conn_read_exactly(dt.again, 10), stats_script);
    NP_OK(r, 10);
    keel_conn_consume(dt.again, 10);
    NP_AWAIT(&dt, keel_conn_close(dt.again), stats_script);
    dt.p.client = dt.again = NULL;
    NP_OK(r, 0);
    NP_EQ(open_on(0), dt.open_before);
    PEER_EXPECT_EOF(stats_script);
    np_pair_track(&dt.p, false);
    NP_END(&dt);
}

Test(net_detach, the_open_count_drops_at_detach_and_rises_at_adopt)
{
    memset(&dt, 0, sizeof(dt));
    peer_setup();
    np_run_script(1, stats_script, &dt, 20000);
    peer_teardown();
}
