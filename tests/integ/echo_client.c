/* echo_client: a client for keel-echo's integration tests, with one mode
 * per scenario. Every byte is checked: each connection sends a stream
 * whose byte at offset i is a function of (connection, i), so lost,
 * repeated, reordered or crossed bytes show. Prints "echo_client: OK ..."
 * and exits 0, or prints "echo_client: FAIL: ..." and exits 1.
 *
 *   echo_client MODE --port P [--host 127.0.0.1] [--timeout S] [ARGS]
 *
 *   sizes          one connection per size: 1 B, 100 B, 4 KiB, 64 KiB,
 *                  1 MiB, 4 MiB, each echoed back whole
 *   split [BYTES]  one stream sent in random pieces (1 B to 8 KiB) with
 *                  small random sleeps; --seed N repeats a run
 *   pipeline [N]   N request lines written before any reply is read, then
 *                  the replies read and checked in order
 *   halfclose [BYTES]  send, shutdown(SHUT_WR), expect the whole echo then EOF
 *   conns N        N connections open at once (at most --window connects in
 *                  flight), each sends a message and checks its echo; all
 *                  stay open until every one is verified
 *   burst N        as conns, with every connect issued at once
 *   hold N         as conns, then waits until the server closes all of them
 *                  (prints "holding N" first, for the driver to act on)
 *   noread SECS    sends as fast as the server takes it, never reading
 *   reset N        N times: send a large buffer and reset (SO_LINGER 0)
 *                  in the middle of the transfer
 *   listen         a plain listener on --port (0: any); prints
 *                  "listening PORT", then holds it until killed
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static const char *host = "127.0.0.1";
static int port = -1;
static double timeout_s = 60;
static unsigned window = 1000;
static unsigned seed;

/* ---- helpers ------------------------------------------------------------------ */

__attribute__((format(printf, 1, 2), noreturn)) static void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "echo_client: FAIL: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The byte at offset i of connection id's stream. */
static inline uint8_t stream_byte(uint32_t id, size_t i)
{
    uint32_t x = (uint32_t)i * 2654435761u + id * 0x9E3779B9u;
    x ^= x >> 15;
    return (uint8_t)((x * 2246822519u) >> 24);
}

static void fill(uint8_t *p, uint32_t id, size_t off, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = stream_byte(id, off + i);
}

/* Returns the first offset (relative to p) that differs, or SIZE_MAX. */
static size_t check(const uint8_t *p, uint32_t id, size_t off, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != stream_byte(id, off + i))
            return i;
    return SIZE_MAX;
}

static unsigned rnd(unsigned *state)
{ /* xorshift32 */
    unsigned x = *state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *state = x ? x : 1;
}

static socklen_t server_addr(struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof(*ss));
    struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t)port);
        return sizeof(*in4);
    }
    if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        return sizeof(*in6);
    }
    fail("--host %s is not an IPv4 or IPv6 address", host);
}

static void set_nonblock(int fd)
{
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

/* A connected, non-blocking socket. */
static int dial(void)
{
    struct sockaddr_storage ss;
    socklen_t len = server_addr(&ss);
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        fail("socket: %s", strerror(errno));
    if (connect(fd, (struct sockaddr *)&ss, len) < 0)
        fail("connect to %s port %d: %s", host, port, strerror(errno));
    set_nonblock(fd);
    return fd;
}

static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* ---- one stream over one connection ----------------------------------------------- */

typedef struct stream_opts {
    size_t total;
    uint32_t id;
    bool split;     /* random pieces with small sleeps */
    bool halfclose; /* shutdown(SHUT_WR) after the last byte; expect EOF */
} stream_opts;

/* Sends o->total bytes of stream o->id over fd while reading the echo
 * and checking it; fails the run on any difference, early EOF or timeout. */
static void echo_stream(int fd, const stream_opts *o, const char *what)
{
    enum { CHUNK = 256 << 10 };
    static uint8_t out[CHUNK], in[CHUNK];
    size_t sent = 0, got = 0;
    bool shut = false, eof = false;
    double deadline = now_s() + timeout_s, next_send = 0;
    unsigned rs = seed ^ (o->id * 2654435761u) ^ 1;
    while (!(got == o->total && (!o->halfclose || eof))) {
        double t = now_s();
        if (t > deadline)
            fail("%s: timed out after %.0f s: sent %zu of %zu, echoed %zu", what, timeout_s, sent,
                 o->total, got);
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int wait_ms = 100;
        if (sent < o->total) {
            if (t >= next_send)
                pfd.events |= POLLOUT;
            else
                wait_ms = (int)((next_send - t) * 1000) + 1;
        }
        if (poll(&pfd, 1, wait_ms) < 0 && errno != EINTR)
            fail("poll: %s", strerror(errno));
        if (pfd.revents & POLLOUT) {
            size_t n = o->total - sent < CHUNK ? o->total - sent : CHUNK;
            if (o->split) {
                size_t piece = 1 + rnd(&rs) % 8192;
                n = n < piece ? n : piece;
            }
            fill(out, o->id, sent, n);
            ssize_t k = send(fd, out, n, MSG_NOSIGNAL);
            if (k < 0 && errno != EAGAIN && errno != EINTR)
                fail("%s: send after %zu bytes: %s", what, sent, strerror(errno));
            if (k > 0)
                sent += (size_t)k;
            if (o->split && rnd(&rs) % 4 == 0)
                next_send = now_s() + (rnd(&rs) % 2000) / 1e6; /* up to 2 ms */
        }
        if (sent == o->total && o->halfclose && !shut) {
            if (shutdown(fd, SHUT_WR) < 0)
                fail("%s: shutdown: %s", what, strerror(errno));
            shut = true;
        }
        if (pfd.revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t k = recv(fd, in, sizeof(in), 0);
            if (k < 0 && errno != EAGAIN && errno != EINTR)
                fail("%s: recv after %zu of %zu bytes echoed: %s", what, got, o->total,
                     strerror(errno));
            if (k == 0) {
                if (got < o->total)
                    fail("%s: the server closed after echoing %zu of %zu bytes", what, got,
                         o->total);
                eof = true;
            }
            if (k > 0) {
                if (got + (size_t)k > o->total)
                    fail("%s: %zu bytes echoed, more than the %zu sent", what, got + (size_t)k,
                         o->total);
                size_t bad = check(in, o->id, got, (size_t)k);
                if (bad != SIZE_MAX)
                    fail("%s: echoed byte %zu is 0x%02x, expected 0x%02x", what, got + bad, in[bad],
                         stream_byte(o->id, got + bad));
                got += (size_t)k;
            }
        }
    }
}

static void mode_sizes(void)
{
    static const size_t sizes[] = {1, 100, 4 << 10, 64 << 10, 1 << 20, 4 << 20};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        char what[64];
        snprintf(what, sizeof(what), "echo of %zu bytes", sizes[i]);
        int fd = dial();
        stream_opts o = {.total = sizes[i], .id = (uint32_t)i + 1};
        echo_stream(fd, &o, what);
        close(fd);
    }
    printf("echo_client: OK sizes 1 B, 100 B, 4 KiB, 64 KiB, 1 MiB, 4 MiB echoed intact\n");
}

static void mode_split(size_t total)
{
    int fd = dial();
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)); /* keep the pieces apart */
    stream_opts o = {.total = total, .id = 77, .split = true};
    echo_stream(fd, &o, "split stream");
    close(fd);
    printf("echo_client: OK %zu bytes sent in random pieces echoed intact (seed %u)\n", total,
           seed);
}

static void mode_halfclose(size_t total)
{
    int fd = dial();
    stream_opts o = {.total = total, .id = 99, .halfclose = true};
    echo_stream(fd, &o, "half-closed stream");
    close(fd);
    printf("echo_client: OK %zu bytes echoed after shutdown(SHUT_WR), then EOF\n", total);
}

/* ---- pipelined requests ---------------------------------------------------------- */

static void mode_pipeline(unsigned n)
{
    /* Requests are lines of varying length; the whole batch is written
     * before any reply is read. (Small enough to fit the socket buffers,
     * or an echo server that is not read would rightly stop.) */
    size_t cap = (size_t)n * 80, len = 0;
    char *req = malloc(cap), *rep = malloc(cap);
    unsigned rs = seed | 1;
    for (unsigned i = 0; i < n; i++) {
        int pad = (int)(rnd(&rs) % 40);
        len += (size_t)snprintf(req + len, cap - len, "request %06u %.*s\n", i, pad,
                                "abcdefghijklmnopqrstuvwxyz0123456789ABCD");
    }
    int fd = dial();
    double deadline = now_s() + timeout_s;
    for (size_t sent = 0; sent < len;) {
        ssize_t k = send(fd, req + sent, len - sent, MSG_NOSIGNAL);
        if (k < 0 && errno == EAGAIN) {
            if (now_s() > deadline)
                fail("pipeline: timed out writing requests (%zu of %zu bytes sent)", sent, len);
            struct pollfd pfd = {.fd = fd, .events = POLLOUT};
            poll(&pfd, 1, 100);
            continue;
        }
        if (k < 0)
            fail("pipeline: send: %s", strerror(errno));
        sent += (size_t)k;
    }
    size_t got = 0;
    while (got < len) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (now_s() > deadline)
            fail("pipeline: timed out reading replies (%zu of %zu bytes)", got, len);
        poll(&pfd, 1, 100);
        ssize_t k = recv(fd, rep + got, len - got, 0);
        if (k == 0)
            fail("pipeline: the server closed after %zu of %zu reply bytes", got, len);
        if (k < 0 && errno != EAGAIN)
            fail("pipeline: recv: %s", strerror(errno));
        if (k > 0)
            got += (size_t)k;
    }
    /* Each reply, in order, is its request. */
    unsigned lines = 0;
    for (size_t off = 0; off < len;) {
        char *nl = memchr(req + off, '\n', len - off);
        size_t l = (size_t)(nl - (req + off)) + 1;
        if (memcmp(req + off, rep + off, l))
            fail("pipeline: reply %u is '%.*s', expected '%.*s'", lines, (int)l - 1, rep + off,
                 (int)l - 1, req + off);
        off += l;
        lines++;
    }
    close(fd);
    free(req);
    free(rep);
    printf("echo_client: OK %u pipelined requests (%zu bytes) answered in order\n", lines, len);
}

/* ---- many connections ----------------------------------------------------------- */

enum { MSG = 48 };
enum { C_IDLE, C_CONNECTING, C_WAITING, C_VERIFIED, C_CLOSED };

typedef struct conn {
    int fd;
    uint8_t state;
    uint8_t got;
    uint8_t buf[MSG];
} conn;

static const char *state_name[] = {"not started", "connecting", "awaiting echo", "verified",
                                   "closed"};

static void report_states(conn *cs, unsigned n)
{
    unsigned counts[5] = {0};
    for (unsigned i = 0; i < n; i++)
        counts[cs[i].state]++;
    for (int s = 0; s < 5; s++)
        if (counts[s])
            fprintf(stderr, "echo_client:   %u %s\n", counts[s], state_name[s]);
}

static void mode_many(unsigned n, bool burst, bool hold)
{
    raise_nofile();
    conn *cs = calloc(n, sizeof(*cs));
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct sockaddr_storage ss;
    socklen_t slen = server_addr(&ss);
    unsigned started = 0, connecting = 0, verified = 0, closed = 0, resets = 0;
    unsigned win = burst ? n : window;
    double t0 = now_s(), deadline = t0 + timeout_s, t_verified = 0;
    struct epoll_event evs[512];
    const char *stage = "connect and verify";
    while (hold ? closed < n : verified < n) {
        while (started < n && connecting < win) {
            conn *c = &cs[started];
            c->fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
            if (c->fd < 0)
                fail("socket for connection %u: %s (open-file limit?)", started, strerror(errno));
            if (connect(c->fd, (struct sockaddr *)&ss, slen) < 0 && errno != EINPROGRESS)
                fail("connect %u: %s", started, strerror(errno));
            c->state = C_CONNECTING;
            struct epoll_event ev = {.events = EPOLLOUT, .data.u32 = started};
            epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
            started++;
            connecting++;
        }
        if (now_s() > deadline) {
            fprintf(stderr,
                    "echo_client: FAIL: %s: timed out after %.0f s (%u of %u verified, "
                    "%u closed by the server):\n",
                    stage, timeout_s, verified, n, closed);
            report_states(cs, n);
            exit(1);
        }
        int k = epoll_wait(ep, evs, 512, 100);
        for (int e = 0; e < k; e++) {
            uint32_t id = evs[e].data.u32;
            conn *c = &cs[id];
            if (c->state == C_CONNECTING) {
                int err = 0;
                socklen_t el = sizeof(err);
                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
                if (err)
                    fail("connection %u failed to connect: %s (%u connected so far)", id,
                         strerror(err), verified);
                if (!(evs[e].events & EPOLLOUT))
                    continue;
                connecting--;
                uint8_t msg[MSG];
                fill(msg, id, 0, MSG);
                if (send(c->fd, msg, MSG, MSG_NOSIGNAL) != MSG)
                    fail("connection %u: send: %s", id, strerror(errno));
                c->state = C_WAITING;
                struct epoll_event ev = {.events = EPOLLIN, .data.u32 = id};
                epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
            } else if (c->state == C_WAITING) {
                ssize_t r = recv(c->fd, c->buf + c->got, MSG - c->got, 0);
                if (r == 0)
                    fail("connection %u: closed by the server before its echo (%u bytes of %d)", id,
                         c->got, MSG);
                if (r < 0 && errno != EAGAIN)
                    fail("connection %u: recv: %s", id, strerror(errno));
                if (r > 0)
                    c->got += (uint8_t)r;
                if (c->got == MSG) {
                    size_t bad = check(c->buf, id, 0, MSG);
                    if (bad != SIZE_MAX)
                        fail("connection %u: echoed byte %zu is 0x%02x, expected 0x%02x (another "
                             "connection's data?)",
                             id, bad, c->buf[bad], stream_byte(id, bad));
                    c->state = C_VERIFIED;
                    if (++verified == n) {
                        t_verified = now_s();
                        printf("echo_client: OK %u connections open at once, each echo verified "
                               "(%.2f s)\n",
                               n, t_verified - t0);
                        if (hold) {
                            printf("holding %u\n", n);
                            stage = "wait for the server to close";
                            deadline = now_s() + timeout_s;
                        }
                        fflush(stdout);
                    }
                }
            } else if (c->state == C_VERIFIED) {
                uint8_t b[64];
                ssize_t r = recv(c->fd, b, sizeof(b), 0);
                if (r > 0)
                    fail("connection %u: %zd unexpected bytes after its echo", id, r);
                if (r == 0 || (r < 0 && errno != EAGAIN)) {
                    if (r < 0)
                        resets++;
                    if (!hold)
                        fail("connection %u: closed by the server (%s) while held open", id,
                             r == 0 ? "EOF" : strerror(errno));
                    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                    close(c->fd);
                    c->fd = -1;
                    c->state = C_CLOSED;
                    closed++;
                }
            }
        }
    }
    if (hold)
        printf("echo_client: OK the server closed all %u connections (%u with a reset) %.2f s "
               "after they were verified\n",
               n, resets, now_s() - t_verified);
    for (unsigned i = 0; i < n; i++)
        if (cs[i].fd > 0)
            close(cs[i].fd);
    free(cs);
    close(ep);
}

/* ---- misbehaving clients --------------------------------------------------------- */

static void mode_noread(double secs)
{
    int fd = dial();
    static uint8_t buf[64 << 10];
    memset(buf, 'n', sizeof(buf));
    size_t pushed = 0;
    double end = now_s() + secs;
    while (now_s() < end) {
        struct pollfd pfd = {.fd = fd, .events = POLLOUT};
        poll(&pfd, 1, 100);
        if (!(pfd.revents & POLLOUT))
            continue;
        ssize_t k = send(fd, buf, sizeof(buf), MSG_NOSIGNAL);
        if (k < 0 && errno != EAGAIN)
            fail("noread: send after %zu bytes: %s", pushed, strerror(errno));
        if (k > 0)
            pushed += (size_t)k;
    }
    close(fd);
    printf("echo_client: OK pushed %zu bytes in %.0f s without reading\n", pushed, secs);
}

static void mode_reset(unsigned n)
{
    enum { BIG = 32 << 20 }; /* more than the socket buffers take: the reset comes mid-send */
    uint8_t *buf = malloc(BIG);
    fill(buf, 5, 0, BIG);
    size_t total = 0;
    unsigned rs = seed | 1;
    for (unsigned i = 0; i < n; i++) {
        int fd = dial();
        /* Send until the kernel pushes back (the server is echoing and we
         * are not reading), maybe read a little, then reset. */
        size_t sent = 0;
        double end = now_s() + 0.005 + (rnd(&rs) % 20) / 1000.0;
        while (sent < BIG && now_s() < end) {
            ssize_t k = send(fd, buf + sent, BIG - sent, MSG_NOSIGNAL);
            if (k < 0 && errno == EAGAIN) {
                struct pollfd pfd = {.fd = fd, .events = POLLOUT};
                poll(&pfd, 1, 1);
                continue;
            }
            if (k < 0)
                fail("reset %u: send: %s", i, strerror(errno));
            sent += (size_t)k;
        }
        if (i % 2) {
            uint8_t tmp[4096];
            (void)!recv(fd, tmp, sizeof(tmp), 0);
        }
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        close(fd);
        total += sent;
        if (sent == BIG)
            fail("reset %u: all %d bytes were sent before the reset", i, BIG);
    }
    free(buf);
    printf("echo_client: OK %u connections reset mid-transfer (%zu bytes sent in all)\n", n, total);
}

static volatile sig_atomic_t stop_listen;
static void on_term(int sig)
{
    (void)sig;
    stop_listen = 1;
}

static void mode_listen(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)(port < 0 ? 0 : port))};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(fd, 16) < 0)
        fail("listen: %s", strerror(errno));
    socklen_t len = sizeof(a);
    getsockname(fd, (struct sockaddr *)&a, &len);
    signal(SIGTERM, on_term);
    signal(SIGINT, on_term);
    printf("listening %u\n", ntohs(a.sin_port));
    fflush(stdout);
    double end = now_s() + timeout_s;
    while (!stop_listen && now_s() < end)
        usleep(50 * 1000);
    close(fd);
}

/* ---- main -------------------------------------------------------------------------- */

static void usage(void)
{
    fprintf(stderr, "usage: echo_client sizes|split [BYTES]|pipeline [N]|halfclose [BYTES]|"
                    "conns N|burst N|hold N|noread SECS|reset N|listen\n"
                    "       --port P [--host ADDR] [--timeout S] [--window N] [--seed N]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *mode = NULL, *arg = NULL;
    seed = (unsigned)time(NULL);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--port") && v)
            port = atoi(argv[++i]);
        else if (!strcmp(a, "--host") && v)
            host = argv[++i];
        else if (!strcmp(a, "--timeout") && v)
            timeout_s = atof(argv[++i]);
        else if (!strcmp(a, "--window") && v)
            window = (unsigned)atoi(argv[++i]);
        else if (!strcmp(a, "--seed") && v)
            seed = (unsigned)strtoul(argv[++i], NULL, 10);
        else if (a[0] == '-')
            usage();
        else if (!mode)
            mode = a;
        else if (!arg)
            arg = a;
        else
            usage();
    }
    if (!mode || (port < 0 && strcmp(mode, "listen")))
        usage();
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (!strcmp(mode, "sizes"))
        mode_sizes();
    else if (!strcmp(mode, "split"))
        mode_split(arg ? strtoul(arg, NULL, 10) : 1 << 20);
    else if (!strcmp(mode, "pipeline"))
        mode_pipeline(arg ? (unsigned)atoi(arg) : 1000);
    else if (!strcmp(mode, "halfclose"))
        mode_halfclose(arg ? strtoul(arg, NULL, 10) : 1 << 20);
    else if (!strcmp(mode, "conns") && arg)
        mode_many((unsigned)atoi(arg), false, false);
    else if (!strcmp(mode, "burst") && arg)
        mode_many((unsigned)atoi(arg), true, false);
    else if (!strcmp(mode, "hold") && arg)
        mode_many((unsigned)atoi(arg), false, true);
    else if (!strcmp(mode, "noread") && arg)
        mode_noread(atof(arg));
    else if (!strcmp(mode, "reset") && arg)
        mode_reset((unsigned)atoi(arg));
    else if (!strcmp(mode, "listen"))
        mode_listen();
    else
        usage();
    return 0;
}
