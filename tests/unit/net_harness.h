/* Helpers for the networking unit tests (tests/unit/net_*.c), on top of
 * harness.h.
 *
 * A test is a script: one continuation that re-enters itself after each
 * awaited future, protothread-style, so a sequence of steps on the shard
 * reads top to bottom:
 *
 *     static keel_future *script(void *ctx, keel_result r) {
 *         T *t = ctx;
 *         NP_BEGIN(t);
 *         NP_AWAIT(t, np_pair_open(&t->sv, &t->p), script);
 *         NP_OK(r, 0);
 *         ...
 *         NP_END(t);
 *     }
 *
 * After NP_AWAIT, `r` holds the awaited future's result. Locals do not
 * survive an await: keep state in the script's struct. The NP_ checks
 * record a failure (as H_CHECK does) and end the script at once, so a
 * broken test fails fast instead of waiting for data that never comes.
 * np_main() runs a script on shard 0 under a watchdog and stops the runtime
 * when it ends. */
#ifndef KEEL_TEST_NET_HARNESS_H
#define KEEL_TEST_NET_HARNESS_H

#include "harness.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>

/* ---- scripts ----------------------------------------------------------------- */

#define NP_BEGIN(t)                                                                                \
    switch ((t)->line_) {                                                                          \
    case 0:

/* Awaits f: the script returns, and resumes on the next line with r set. */
#define NP_AWAIT(t, f, self)                                                                       \
    do {                                                                                           \
        (t)->line_ = __LINE__;                                                                     \
        return keel_then_wrapped((f), (self), (t));                                                \
    case __LINE__:;                                                                                \
    } while (0)

#define NP_END(t)                                                                                  \
    }                                                                                              \
    (t)->done_ = true;                                                                             \
    return keel_make_ready(0)

/* Fields every script state starts with. */
#define NP_SCRIPT_FIELDS                                                                           \
    int line_;                                                                                     \
    bool done_

#define NP_BAIL_IF_FAILED()                                                                        \
    do {                                                                                           \
        if (h_failure_count())                                                                     \
            return keel_make_error(-EPROTO);                                                       \
    } while (0)

#define NP_TRUE(cond)                                                                              \
    do {                                                                                           \
        H_CHECK(cond);                                                                             \
        NP_BAIL_IF_FAILED();                                                                       \
    } while (0)
#define NP_OP(a, op, b)                                                                            \
    do {                                                                                           \
        H_CHECK_OP(a, op, b);                                                                      \
        NP_BAIL_IF_FAILED();                                                                       \
    } while (0)
#define NP_EQ(a, b) NP_OP(a, ==, b)
#define NP_LE(a, b) NP_OP(a, <=, b)
#define NP_GE(a, b) NP_OP(a, >=, b)
#define NP_LT(a, b) NP_OP(a, <, b)
#define NP_OK(r, v)                                                                                \
    do {                                                                                           \
        H_CHECK_OK(r, v);                                                                          \
        NP_BAIL_IF_FAILED();                                                                       \
    } while (0)
#define NP_ERR(r, e)                                                                               \
    do {                                                                                           \
        H_CHECK_ERR(r, e);                                                                         \
        NP_BAIL_IF_FAILED();                                                                       \
    } while (0)
/* Success, whatever the value. */
#define NP_NOERR(r)                                                                                \
    do {                                                                                           \
        if ((r).err)                                                                               \
            H_FAIL("%s failed: %d (%s)", #r, (r).err, keel_strerror((r).err));                     \
        NP_BAIL_IF_FAILED();                                                                       \
    } while (0)
#define NP_FAIL(...)                                                                               \
    do {                                                                                           \
        H_FAIL(__VA_ARGS__);                                                                       \
        return keel_make_error(-EPROTO);                                                           \
    } while (0)

typedef struct np_run {
    keel_then_fn script;
    void *state;
    uint64_t watchdog_ms;
} np_run;

/* Pairs opened by the script, so that a script that fails half-way can
 * abort them, instead of the runtime waiting for them at exit. */
typedef struct np_pair np_pair;
static np_pair *np_pairs[16];

static void np_abort_open_pairs(void);

static void np_script_ended(void *ctx, keel_result r)
{
    (void)ctx;
    if (r.err && h_failure_count() == 0)
        H_FAIL("the script ended with error %d (%s)", r.err, keel_strerror(r.err));
    if (r.err)
        np_abort_open_pairs();
    keel_stop();
}

static void np_main(void *arg)
{
    np_run *run = arg;
    h_watchdog(run->watchdog_ms ? run->watchdog_ms : 10000);
    keel_on_done(keel_then_wrapped(keel_make_ready(0), run->script, run->state), np_script_ended,
                 NULL);
}

/* Runs script(state) on shard 0 of a runtime with `shards` shards; asserts
 * (on the test thread) that it finished without recorded failures. */
#define np_run_script(shards, script_fn, st, ms)                                                   \
    do {                                                                                           \
        np_run np_run_ = {.script = (script_fn), .state = (st), .watchdog_ms = (ms)};              \
        h_run((shards), np_main, &np_run_);                                                        \
        cr_assert((st)->done_, "the script did not run to its end (stopped at line %d)",           \
                  (st)->line_);                                                                    \
    } while (0)

/* ---- test data --------------------------------------------------------------- */

/* The byte at offset i of a test stream: not periodic at any buffer size,
 * so lost, repeated or reordered bytes show. */
static inline uint8_t np_byte(size_t i)
{
    return (uint8_t)(((uint32_t)i * 2654435761u) >> 24);
}

static inline void np_fill(void *buf, size_t stream_off, size_t n)
{
    uint8_t *p = buf;
    for (size_t i = 0; i < n; i++)
        p[i] = np_byte(stream_off + i);
}

/* Returns the index of the first byte of buf that differs from the stream
 * at stream_off, or SIZE_MAX if all match. */
static inline size_t np_mismatch(const void *buf, size_t stream_off, size_t n)
{
    const uint8_t *p = buf;
    for (size_t i = 0; i < n; i++)
        if (p[i] != np_byte(stream_off + i))
            return i;
    return SIZE_MAX;
}

/* A future that resolves to 0 after ms, for pacing. */
static inline keel_future *np_sleep_ms(uint64_t ms)
{
    return keel_sleep(KEEL_MS(ms));
}

/* ---- a server and connected pairs on this shard ------------------------------ */

/* For one shard: the accepted side of a pair must land on the shard that
 * waits for it. */

struct np_pair {
    keel_conn *client; /* from keel_connect */
    keel_conn *server; /* what the listener accepted for it */
    int connect_err;
    keel_promise ready;
};

/* Set client or server to NULL once the test closed it itself. */
static void np_abort_open_pairs(void)
{
    for (size_t i = 0; i < sizeof(np_pairs) / sizeof(np_pairs[0]); i++) {
        np_pair *p = np_pairs[i];
        if (!p)
            continue;
        if (p->client)
            keel_conn_abort(p->client);
        if (p->server)
            keel_conn_abort(p->server);
        p->client = p->server = NULL;
        np_pairs[i] = NULL;
    }
}

static void np_pair_track(np_pair *p, bool on)
{
    for (size_t i = 0; i < sizeof(np_pairs) / sizeof(np_pairs[0]); i++) {
        if (on ? np_pairs[i] == NULL : np_pairs[i] == p) {
            np_pairs[i] = on ? p : NULL;
            return;
        }
    }
}

typedef struct np_server {
    keel_listen_config cfg;
    keel_listener *listener;
    uint16_t port;
    const char *connect_addr;
    np_pair *waiting; /* the pair whose server side comes next */
    unsigned accepted;
    bool allow_strays; /* close connections nobody waits for instead of failing */
    unsigned strays;
} np_server;

static void np_pair_maybe_ready(np_pair *p)
{
    if (!keel_promise_pending(&p->ready))
        return;
    if (p->connect_err)
        keel_promise_set_error(&p->ready, p->connect_err);
    else if (p->client && p->server)
        keel_promise_set_value(&p->ready, 0);
}

static void np_accepted(void *ctx, keel_conn *c)
{
    np_server *sv = ctx;
    sv->accepted++;
    np_pair *p = sv->waiting;
    if (!p && sv->allow_strays) {
        sv->strays++;
        keel_detach(keel_conn_close(c));
        return;
    }
    if (!p) {
        H_FAIL("a connection was accepted that no pair waited for");
        keel_conn_abort(c);
        return;
    }
    sv->waiting = NULL;
    p->server = c;
    np_pair_maybe_ready(p);
}

static keel_future *np_listened(void *ctx, keel_result r)
{
    np_server *sv = ctx;
    if (r.err)
        return keel_make_error(r.err);
    sv->port = keel_listener_port(sv->listener);
    return keel_make_ready(0);
}

/* Listens on bind (port 0 unless cfg says otherwise) and remembers the
 * address clients connect to. Resolves to 0 or the listen error. */
static inline keel_future *np_listen_cfg(np_server *sv, const keel_listen_config *cfg,
                                         const char *connect_addr)
{
    sv->cfg = *cfg;
    sv->connect_addr = connect_addr;
    return keel_then_wrapped(keel_listen(&sv->cfg, np_accepted, sv, &sv->listener), np_listened,
                             sv);
}

__attribute__((unused)) static keel_future *np_listen(np_server *sv)
{
    keel_listen_config cfg;
    keel_listen_config_init(&cfg);
    cfg.bind = "127.0.0.1";
    cfg.port = 0;
    return np_listen_cfg(sv, &cfg, "127.0.0.1");
}

static void np_connected(void *ctx, keel_result r)
{
    np_pair *p = ctx;
    if (r.err)
        p->connect_err = r.err;
    else
        p->client = r.ptr;
    np_pair_maybe_ready(p);
}

/* Connects a keel client to sv and resolves to 0 once both ends exist (one
 * pair at a time per server). */
__attribute__((unused)) static keel_future *np_pair_open(np_server *sv, np_pair *p)
{
    memset(p, 0, sizeof(*p));
    np_pair_track(p, false);
    np_pair_track(p, true);
    keel_future *f = keel_promise_init(&p->ready);
    sv->waiting = p;
    keel_on_done(keel_connect(sv->connect_addr, sv->port, KEEL_SEC(5)), np_connected, p);
    return f;
}

/* Closes both ends of p (those that exist); resolves to 0. */
__attribute__((unused)) static keel_future *np_pair_close(np_pair *p)
{
    keel_future *fs[2];
    size_t n = 0;
    if (p->client)
        fs[n++] = keel_conn_close(p->client);
    if (p->server)
        fs[n++] = keel_conn_close(p->server);
    p->client = p->server = NULL;
    np_pair_track(p, false);
    return keel_when_all(fs, n, NULL);
}

/* Awaits two futures; results land in res[0] and res[1]. */
__attribute__((unused)) static keel_future *np_both(keel_future *a, keel_future *b,
                                                    keel_result res[2])
{
    keel_future *fs[2] = {a, b};
    return keel_when_all(fs, 2, res);
}

/* ---- a future watched in the background -------------------------------------- */

typedef struct np_slot {
    bool done;
    keel_result r;
    uint64_t at_ns;
} np_slot;

static void np_slot_done(void *ctx, keel_result r)
{
    np_slot *s = ctx;
    s->done = true;
    s->r = r;
    s->at_ns = h_now_ns();
}

/* Consumes f; its result lands in *s when it resolves. */
__attribute__((unused)) static void np_watch(np_slot *s, keel_future *f)
{
    memset(s, 0, sizeof(*s));
    keel_on_done(f, np_slot_done, s);
}

/* ---- reading a stream -------------------------------------------------------- */

/* Reads up to want bytes from c with keel_conn_read, copying them to dst
 * or, if dst is NULL, comparing them with the test stream from stream_off. */
typedef struct np_reader {
    keel_conn *c;
    uint8_t *dst;
    size_t want, got;
    size_t stream_off;
    size_t mismatch_at; /* SIZE_MAX: none */
    bool eof;
} np_reader;

static keel_future *np_reader_got(void *ctx, keel_result r)
{
    np_reader *rd = ctx;
    if (r.val == 0) {
        rd->eof = true;
        return keel_make_ready(KEEL_STOP);
    }
    size_t n = (size_t)r.val;
    if (n > rd->want - rd->got)
        n = rd->want - rd->got;
    if (rd->dst) {
        size_t copied = keel_conn_copy(rd->c, rd->dst + rd->got, n);
        if (copied != n)
            H_FAIL("keel_conn_copy copied %zu of %zu buffered bytes", copied, n);
    } else {
        size_t left = n, at = rd->got;
        while (left && rd->mismatch_at == SIZE_MAX) {
            uint8_t tmp[4096];
            size_t k = left < sizeof(tmp) ? left : sizeof(tmp);
            /* copy from the right offset: consume as we go */
            keel_conn_copy(rd->c, tmp, k);
            size_t m = np_mismatch(tmp, rd->stream_off + at, k);
            if (m != SIZE_MAX)
                rd->mismatch_at = at + m;
            keel_conn_consume(rd->c, k);
            left -= k;
            at += k;
        }
        if (left)
            keel_conn_consume(rd->c, left);
        rd->got += n;
        return keel_make_ready(rd->got == rd->want ? KEEL_STOP : KEEL_CONTINUE);
    }
    keel_conn_consume(rd->c, n);
    rd->got += n;
    return keel_make_ready(rd->got == rd->want ? KEEL_STOP : KEEL_CONTINUE);
}

static keel_future *np_reader_step(void *ctx)
{
    np_reader *rd = ctx;
    return keel_then(keel_conn_read(rd->c), np_reader_got, rd);
}

static keel_future *np_reader_total(void *ctx, keel_result r)
{
    (void)r;
    np_reader *rd = ctx;
    return keel_make_ready((int64_t)rd->got);
}

/* Resolves to the number of bytes read (want, or fewer at end of stream),
 * or to the read error. */
__attribute__((unused)) static keel_future *np_read(np_reader *rd, keel_conn *c, void *dst,
                                                    size_t want, size_t stream_off)
{
    memset(rd, 0, sizeof(*rd));
    rd->c = c;
    rd->dst = dst;
    rd->want = want;
    rd->stream_off = stream_off;
    rd->mismatch_at = SIZE_MAX;
    if (want == 0)
        return keel_make_ready(0);
    return keel_then(keel_repeat(np_reader_step, rd), np_reader_total, rd);
}

/* Writes n bytes of the test stream from stream_off to c, in chunks of
 * chunk bytes, awaiting each write (so backpressure applies). */
typedef struct np_writer {
    keel_conn *c;
    size_t total, done, stream_off, chunk;
    uint8_t *buf;
} np_writer;

static keel_future *np_writer_step(void *ctx);
static keel_future *np_writer_next(void *ctx, keel_result r)
{
    (void)r;
    np_writer *w = ctx;
    return keel_make_ready(w->done == w->total ? KEEL_STOP : KEEL_CONTINUE);
}
static keel_future *np_writer_step(void *ctx)
{
    np_writer *w = ctx;
    size_t n = w->total - w->done < w->chunk ? w->total - w->done : w->chunk;
    np_fill(w->buf, w->stream_off + w->done, n);
    w->done += n;
    return keel_then(keel_conn_write(w->c, w->buf, n), np_writer_next, w);
}
static void np_writer_free(void *ctx, keel_result r)
{
    (void)r;
    np_writer *w = ctx;
    free(w->buf);
    w->buf = NULL;
}

/* Resolves to 0 once all is queued (the last write resolved), or to the
 * connection's error. */
__attribute__((unused)) static keel_future *np_write(np_writer *w, keel_conn *c, size_t n,
                                                     size_t stream_off, size_t chunk)
{
    memset(w, 0, sizeof(*w));
    w->c = c;
    w->total = n;
    w->stream_off = stream_off;
    w->chunk = chunk;
    w->buf = malloc(chunk);
    if (!w->buf)
        return keel_make_error(-ENOMEM);
    if (n == 0) {
        free(w->buf);
        w->buf = NULL;
        return keel_make_ready(0);
    }
    return keel_finally(keel_repeat(np_writer_step, w), np_writer_free, w);
}

/* ---- one round trip over a pair ---------------------------------------------- */

/* The client sends "ping", the server checks it and answers "pong", the
 * client checks that. Resolves to 0, or fails with a recorded failure. */
typedef struct np_exchange {
    NP_SCRIPT_FIELDS;
    np_pair *p;
    char buf[8];
} np_exchange;

static keel_future *np_exchange_script(void *ctx, keel_result r)
{
    np_exchange *x = ctx;
    NP_BEGIN(x);
    NP_AWAIT(x, keel_conn_write(x->p->client, "ping", 4), np_exchange_script);
    NP_OK(r, 0);
    NP_AWAIT(x, keel_conn_read_exactly(x->p->server, 4), np_exchange_script);
    NP_OK(r, 4);
    keel_conn_copy(x->p->server, x->buf, 4);
    keel_conn_consume(x->p->server, 4);
    NP_TRUE(!memcmp(x->buf, "ping", 4));
    NP_AWAIT(x, keel_conn_write(x->p->server, "pong", 4), np_exchange_script);
    NP_OK(r, 0);
    NP_AWAIT(x, keel_conn_read_exactly(x->p->client, 4), np_exchange_script);
    NP_OK(r, 4);
    keel_conn_copy(x->p->client, x->buf, 4);
    keel_conn_consume(x->p->client, 4);
    NP_TRUE(!memcmp(x->buf, "pong", 4));
    NP_END(x);
}

__attribute__((unused)) static keel_future *np_roundtrip(np_exchange *x, np_pair *p)
{
    memset(x, 0, sizeof(*x));
    x->p = p;
    return keel_then_wrapped(keel_make_ready(0), np_exchange_script, x);
}

/* ---- an echo loop, as keel-echo runs it --------------------------------------- */

static keel_future *np_echo_continue(void *ctx, keel_result r)
{
    (void)ctx;
    (void)r;
    return keel_make_ready(KEEL_CONTINUE);
}

static keel_future *np_echo_got(void *ctx, keel_result r)
{
    keel_conn *c = ctx;
    if (r.val == 0)
        return keel_make_ready(KEEL_STOP);
    return keel_then(keel_conn_forward(c, c, (size_t)r.val), np_echo_continue, NULL);
}

static keel_future *np_echo_step(void *ctx)
{
    return keel_then(keel_conn_read(ctx), np_echo_got, ctx);
}

/* Echoes c's input back to it until the end of its stream; resolves to 0
 * then, or to the connection's error. Does not close c. */
__attribute__((unused)) static keel_future *np_echo(keel_conn *c)
{
    return keel_repeat(np_echo_step, c);
}

/* ---- plain sockets, for peers keel should not be ---------------------------- */

/* A plain TCP listener on 127.0.0.1 (port 0: ephemeral) with the given
 * backlog; *port receives the port. Returns the fd. */
__attribute__((unused)) static int np_plain_listen(uint16_t *port, int backlog, bool reuseport)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(fd, 0, "socket: %s", strerror(errno));
    int one = 1;
    if (reuseport)
        cr_assert_eq(setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)), 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(*port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0, "bind: %s", strerror(errno));
    if (backlog >= 0)
        cr_assert_eq(listen(fd, backlog), 0, "listen: %s", strerror(errno));
    socklen_t len = sizeof(a);
    getsockname(fd, (struct sockaddr *)&a, &len);
    *port = ntohs(a.sin_port);
    return fd;
}

#endif
