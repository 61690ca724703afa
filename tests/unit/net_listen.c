/* Listening and connecting: errors come back as future errors, port 0 gets
 * a real port, IPv6 and unix-socket listeners work, closing a listener
 * stops accepting. */
#include "net_harness.h"

#include <fcntl.h>
#include <sys/stat.h>

/* ---- connect errors ------------------------------------------------------------- */

static struct {
    NP_SCRIPT_FIELDS;
    uint16_t port;
    uint64_t t0;
    uint64_t elapsed_ms;
} conn_err;

static keel_future *refused_script(void *ctx, keel_result r)
{
    NP_BEGIN(&conn_err);
    NP_AWAIT(&conn_err, keel_connect("127.0.0.1", conn_err.port, KEEL_SEC(5)), refused_script);
    NP_ERR(r, -ECONNREFUSED);
    (void)ctx;
    NP_END(&conn_err);
}

Test(net_listen, connect_to_a_port_nobody_listens_on_fails_with_econnrefused)
{
    /* Bound but not listening: the port stays ours, and SYNs get a reset. */
    int fd = np_plain_listen(&conn_err.port, -1, false);
    np_run_script(1, refused_script, &conn_err, 5000);
    close(fd);
}

static keel_future *timeout_script(void *ctx, keel_result r)
{
    (void)ctx;
    NP_BEGIN(&conn_err);
    conn_err.t0 = h_now_ns();
    NP_AWAIT(&conn_err, keel_connect("127.0.0.1", conn_err.port, KEEL_MS(300)), timeout_script);
    conn_err.elapsed_ms = h_ms_since(conn_err.t0);
    NP_ERR(r, -ETIMEDOUT);
    NP_GE(conn_err.elapsed_ms, 290);
    NP_LT(conn_err.elapsed_ms, 3000);
    NP_END(&conn_err);
}

Test(net_listen, connect_that_gets_no_answer_fails_with_etimedout_after_its_timeout)
{
    /* A listener whose accept queue is full drops SYNs: the connect hangs
     * in SYN_SENT, as toward a host that does not answer. */
    int lfd = np_plain_listen(&conn_err.port, 0, false);
    int fillers[4];
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(conn_err.port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    for (int i = 0; i < 4; i++) {
        fillers[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        connect(fillers[i], (struct sockaddr *)&a, sizeof(a));
    }
    usleep(100 * 1000);
    np_run_script(1, timeout_script, &conn_err, 5000);
    for (int i = 0; i < 4; i++)
        close(fillers[i]);
    close(lfd);
    cr_log_info("connect timed out after %llu ms", (unsigned long long)conn_err.elapsed_ms);
}

static keel_future *badaddr_script(void *ctx, keel_result r)
{
    (void)ctx;
    NP_BEGIN(&conn_err);
    NP_AWAIT(&conn_err, keel_connect("no.such address", 80, KEEL_SEC(1)), badaddr_script);
    NP_ERR(r, -EINVAL);
    NP_AWAIT(&conn_err, keel_connect("unix:", 0, KEEL_SEC(1)), badaddr_script);
    NP_ERR(r, -EINVAL);
    NP_END(&conn_err);
}

Test(net_listen, connect_to_a_malformed_address_fails_with_einval)
{
    np_run_script(1, badaddr_script, &conn_err, 5000);
}

/* ---- listen errors ------------------------------------------------------------- */

static struct {
    NP_SCRIPT_FIELDS;
    keel_listen_config cfg;
    keel_listener *l;
    int calls;
} busy;

static void busy_accept(void *ctx, keel_conn *c)
{
    (void)ctx;
    busy.calls++;
    keel_conn_abort(c);
}

static keel_future *busy_script(void *ctx, keel_result r)
{
    (void)ctx;
    NP_BEGIN(&busy);
    NP_AWAIT(&busy, keel_listen(&busy.cfg, busy_accept, NULL, &busy.l), busy_script);
    NP_ERR(r, -EADDRINUSE);
    NP_END(&busy);
}

static void run_busy(bool reuseport, unsigned shards)
{
    uint16_t port = 0;
    int fd = np_plain_listen(&port, 16, reuseport);
    keel_listen_config_init(&busy.cfg);
    busy.cfg.bind = "127.0.0.1";
    busy.cfg.port = port;
    np_run_script(shards, busy_script, &busy, 5000);
    cr_assert_eq(busy.calls, 0);
    /* The other listener still owns the port: a connection reaches it. */
    int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(connect(c, (struct sockaddr *)&a, sizeof(a)), 0);
    int acc = accept(fd, NULL, NULL);
    cr_assert_geq(acc, 0, "the first listener no longer accepts: %s", strerror(errno));
    close(acc);
    close(c);
    close(fd);
}

Test(net_listen, listen_on_a_port_another_socket_listens_on_fails_with_eaddrinuse)
{
    run_busy(false, 1);
}

Test(net_listen, listen_on_a_port_a_reuseport_listener_holds_fails_with_eaddrinuse)
{
    /* What a stale keel instance looks like: SO_REUSEPORT would let a new
     * one share its port silently. */
    run_busy(true, 2);
}

static struct {
    NP_SCRIPT_FIELDS;
    keel_listener *l;
} badbind;

static keel_future *badbind_script(void *ctx, keel_result r)
{
    (void)ctx;
    NP_BEGIN(&badbind);
    keel_listen_config cfg;
    keel_listen_config_init(&cfg);
    cfg.bind = "300.1.2.3";
    NP_AWAIT(&badbind, keel_listen(&cfg, busy_accept, NULL, &badbind.l), badbind_script);
    NP_ERR(r, -EINVAL);
    NP_END(&badbind);
}

Test(net_listen, listen_on_a_malformed_address_fails_with_einval)
{
    np_run_script(1, badbind_script, &badbind, 5000);
}

/* ---- listeners that work ----------------------------------------------------------- */

static struct {
    NP_SCRIPT_FIELDS;
    np_server sv;
    np_pair p;
    np_exchange x;
    char path[108];
    bool file_existed;
    keel_listener *l2;
    uint16_t port;
} lis;

static keel_future *lis_script(void *ctx, keel_result r)
{
    (void)ctx;
    NP_BEGIN(&lis);
    NP_AWAIT(&lis, np_listen_cfg(&lis.sv, &lis.sv.cfg, lis.sv.connect_addr), lis_script);
    NP_OK(r, 0);
    lis.port = keel_listener_port(lis.sv.listener);
    NP_AWAIT(&lis, np_pair_open(&lis.sv, &lis.p), lis_script);
    NP_OK(r, 0);
    NP_AWAIT(&lis, np_roundtrip(&lis.x, &lis.p), lis_script);
    NP_OK(r, 0);
    NP_AWAIT(&lis, np_pair_close(&lis.p), lis_script);
    NP_OK(r, 2);
    NP_EQ(lis.sv.accepted, 1);
    NP_END(&lis);
}

static void lis_setup(const char *bind, const char *connect_addr)
{
    keel_listen_config_init(&lis.sv.cfg);
    lis.sv.cfg.bind = bind;
    lis.sv.cfg.port = 0;
    lis.sv.connect_addr = connect_addr;
}

Test(net_listen, listen_on_port_zero_gets_a_real_port_that_accepts)
{
    lis_setup("127.0.0.1", "127.0.0.1");
    np_run_script(1, lis_script, &lis, 5000);
    cr_assert_neq(lis.port, 0, "keel_listener_port is 0 after listening on port 0");
}

Test(net_listen, ipv6_loopback_listener_accepts_and_carries_data)
{
    int probe = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    if (probe < 0 || bind(probe, (struct sockaddr *)&a, sizeof(a)) < 0)
        cr_skip_test("SKIPPED: no IPv6 loopback here (%s)", strerror(errno));
    close(probe);
    lis_setup("::1", "::1");
    np_run_script(1, lis_script, &lis, 5000);
    cr_assert_neq(lis.port, 0);
}

Test(net_listen, ipv6_loopback_in_brackets_is_accepted_by_connect)
{
    int probe = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    if (probe < 0 || bind(probe, (struct sockaddr *)&a, sizeof(a)) < 0)
        cr_skip_test("SKIPPED: no IPv6 loopback here (%s)", strerror(errno));
    close(probe);
    lis_setup("::1", "[::1]");
    np_run_script(1, lis_script, &lis, 5000);
}

static keel_future *unix_script(void *ctx, keel_result r)
{
    (void)ctx;
    NP_BEGIN(&lis);
    NP_AWAIT(&lis, np_listen_cfg(&lis.sv, &lis.sv.cfg, lis.sv.connect_addr), unix_script);
    NP_OK(r, 0);
    struct stat st;
    lis.file_existed = stat(lis.path, &st) == 0 && S_ISSOCK(st.st_mode);
    NP_TRUE(lis.file_existed);
    NP_AWAIT(&lis, np_pair_open(&lis.sv, &lis.p), unix_script);
    NP_OK(r, 0);
    NP_AWAIT(&lis, np_roundtrip(&lis.x, &lis.p), unix_script);
    NP_OK(r, 0);
    /* A second listener on the same path would steal it from the first.
     * (keel finds the first by connecting to it: that probe is a stray.) */
    lis.sv.allow_strays = true;
    NP_AWAIT(&lis, keel_listen(&lis.sv.cfg, busy_accept, NULL, &lis.l2), unix_script);
    NP_ERR(r, -EADDRINUSE);
    NP_AWAIT(&lis, np_roundtrip(&lis.x, &lis.p), unix_script);
    NP_OK(r, 0);
    NP_AWAIT(&lis, np_pair_close(&lis.p), unix_script);
    NP_OK(r, 2);
    NP_AWAIT(&lis, keel_listener_close(lis.sv.listener), unix_script);
    NP_NOERR(r);
    NP_TRUE(stat(lis.path, &st) < 0 && errno == ENOENT);
    NP_END(&lis);
}

Test(net_listen, unix_socket_listener_accepts_refuses_a_second_listener_and_removes_its_file)
{
    char dir[] = "/tmp/keel-net-unix-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    snprintf(lis.path, sizeof(lis.path), "%s/sock", dir);
    static char addr[120];
    snprintf(addr, sizeof(addr), "unix:%s", lis.path);
    lis_setup(addr, addr);
    np_run_script(1, unix_script, &lis, 5000);
    unlink(lis.path);
    rmdir(dir);
}

Test(net_listen, unix_socket_listener_replaces_a_stale_socket_file)
{
    char dir[] = "/tmp/keel-net-unix-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    snprintf(lis.path, sizeof(lis.path), "%s/sock", dir);
    /* A socket file left by a crashed run: bound, never listening, closed. */
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    strcpy(un.sun_path, lis.path);
    cr_assert_eq(bind(fd, (struct sockaddr *)&un, sizeof(un)), 0);
    close(fd);
    static char addr[120];
    snprintf(addr, sizeof(addr), "unix:%s", lis.path);
    lis_setup(addr, addr);
    np_run_script(1, lis_script, &lis, 5000);
    unlink(lis.path);
    rmdir(dir);
}

/* ---- closing a listener --------------------------------------------------------- */

static keel_future *close_script(void *ctx, keel_result r)
{
    (void)ctx;
    NP_BEGIN(&lis);
    NP_AWAIT(&lis, np_listen(&lis.sv), close_script);
    NP_OK(r, 0);
    NP_AWAIT(&lis, np_pair_open(&lis.sv, &lis.p), close_script);
    NP_OK(r, 0);
    NP_AWAIT(&lis, keel_listener_close(lis.sv.listener), close_script);
    NP_NOERR(r);
    /* No new connections... */
    NP_AWAIT(&lis, keel_connect("127.0.0.1", lis.sv.port, KEEL_SEC(2)), close_script);
    NP_ERR(r, -ECONNREFUSED);
    /* ...but the open one still works. */
    NP_AWAIT(&lis, np_roundtrip(&lis.x, &lis.p), close_script);
    NP_OK(r, 0);
    NP_AWAIT(&lis, np_pair_close(&lis.p), close_script);
    NP_OK(r, 2);
    NP_END(&lis);
}

Test(net_listen, closing_a_listener_refuses_new_connections_and_keeps_open_ones)
{
    np_run_script(1, close_script, &lis, 5000);
}
