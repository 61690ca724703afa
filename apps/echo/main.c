/* keel-echo: echoes every byte back, on every shard. The smallest complete
 * network app, and the net benchmark. Input buffers are forwarded to the
 * output queue without a copy. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <keel/keel.h>

static struct {
    keel_listen_config listen;
    keel_listener *listener;
    int exit_status;
} app;

static keel_future *echo_sent(void *ctx, keel_result r)
{
    (void)ctx;
    (void)r;
    return keel_make_ready(KEEL_CONTINUE);
}

static keel_future *echo_got(void *ctx, keel_result r)
{
    keel_conn *c = ctx;
    if (r.val == 0) /* end of stream */
        return keel_make_ready(KEEL_STOP);
    /* The write future is the backpressure: it waits while the client is
     * not reading its echoes, and then we stop reading too. */
    return keel_then(keel_conn_forward(c, c, (size_t)r.val), echo_sent, NULL);
}

static keel_future *echo_step(void *ctx)
{
    keel_conn *c = ctx;
    return keel_then(keel_conn_read(c), echo_got, c);
}

static void echo_end(void *ctx, keel_result r)
{
    (void)r; /* reset, timeout or shutdown: all end the same way */
    keel_detach(keel_conn_close(ctx));
}

static void on_conn(void *ctx, keel_conn *c)
{
    (void)ctx;
    keel_conn_set_nodelay(c, true);
    keel_on_done(keel_repeat(echo_step, c), echo_end, c);
}

static keel_future *print_totals(void *arg)
{
    (void)arg;
    unsigned long long in = 0, out = 0, acc = 0;
    for (unsigned i = 0; i < keel_shard_count(); i++) {
        keel_net_stats st;
        keel_net_stats_get(i, &st);
        printf("keel-echo: shard %u: accepted=%llu open=%llu bytes_in=%llu bytes_out=%llu\n", i,
               (unsigned long long)st.accepted, (unsigned long long)st.open,
               (unsigned long long)st.bytes_in, (unsigned long long)st.bytes_out);
        in += st.bytes_in;
        out += st.bytes_out;
        acc += st.accepted;
    }
    printf("keel-echo: total: accepted=%llu bytes_in=%llu bytes_out=%llu\n", acc, in, out);
    keel_stats_print(stdout);
    fflush(stdout);
    return keel_make_ready(0);
}

static void listening(void *ctx, keel_result r)
{
    (void)ctx;
    if (r.err) {
        fprintf(stderr, "keel-echo: cannot listen on %s port %u: %s\n", app.listen.bind,
                app.listen.port, keel_strerror(r.err));
        app.exit_status = 1;
        keel_stop();
        return;
    }
    printf(
        "keel-echo: listening on %s port %u, %u shards, backend %s; try: nc %s %u\n",
        app.listen.bind, keel_listener_port(app.listener), keel_shard_count(), keel_backend_name(),
        strchr(app.listen.bind, ':') && strncmp(app.listen.bind, "unix:", 5) ? "::1" : "127.0.0.1",
        keel_listener_port(app.listener));
    fflush(stdout);
}

static void main_fn(void *arg)
{
    (void)arg;
    keel_at_exit(print_totals, NULL);
    keel_on_done(keel_listen(&app.listen, on_conn, NULL, &app.listener), listening, NULL);
}

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: keel-echo [options]\n"
            "Echoes every byte back, on every shard. SIGINT/SIGTERM stop it and print totals.\n\n"
            "Options:\n"
            "%s"
            "%s"
            "  -h, --help            show this help\n",
            keel_listen_config_usage(&app.listen), keel_config_usage());
}

int main(int argc, char **argv)
{
    keel_config cfg;
    keel_config_init(&cfg);
    keel_listen_config_init(&app.listen);
    app.listen.port = 7000;
    if (keel_config_parse_args(&cfg, &argc, argv) ||
        keel_listen_config_parse_args(&app.listen, &argc, argv))
        return 2;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        }
        fprintf(stderr, "keel-echo: unknown option '%s'\n", argv[i]);
        usage(stderr);
        return 2;
    }
    int err = keel_run(&cfg, main_fn, NULL);
    if (err) {
        fprintf(stderr, "keel-echo: %s\n", keel_strerror(err));
        return 1;
    }
    return app.exit_status;
}
