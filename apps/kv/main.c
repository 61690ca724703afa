/* keel-kv: a Redis-compatible store, sharded across cores. Work in
 * progress (issue 5): strings and keys so far; see the README. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv.h"

static struct {
    kv_config cfg;
    keel_listener *listener;
    int exit_status;
} app;

static void listening(void *ctx, keel_result r)
{
    (void)ctx;
    if (r.err) {
        fprintf(stderr, "keel-kv: cannot listen on %s port %u: %s\n", app.cfg.listen.bind,
                app.cfg.listen.port, keel_strerror(r.err));
        app.exit_status = 1;
        keel_stop();
        return;
    }
    printf("keel-kv: listening on %s port %u, %u shards, backend %s; try: redis-cli -p %u ping\n",
           app.cfg.listen.bind, keel_listener_port(app.listener), keel_shard_count(),
           keel_backend_name(), keel_listener_port(app.listener));
    fflush(stdout);
}

static void main_fn(void *arg)
{
    (void)arg;
    keel_on_done(kv_server_start(&app.cfg, &app.listener), listening, NULL);
}

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: keel-kv [options]\n"
            "A Redis-compatible key-value store on every shard (work in progress: strings\n"
            "and keys so far). SIGINT/SIGTERM stop it.\n\n"
            "Options:\n"
            "%s"
            "%s"
            "  -h, --help            show this help\n",
            keel_listen_config_usage(&app.cfg.listen), keel_config_usage());
}

int main(int argc, char **argv)
{
    keel_config cfg;
    keel_config_init(&cfg);
    keel_listen_config_init(&app.cfg.listen);
    app.cfg.listen.port = 6379;
    app.cfg.listen.bind = "127.0.0.1";
    if (keel_config_parse_args(&cfg, &argc, argv) ||
        keel_listen_config_parse_args(&app.cfg.listen, &argc, argv))
        return 2;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        }
        fprintf(stderr, "keel-kv: unknown option '%s'\n", argv[i]);
        usage(stderr);
        return 2;
    }
    int err = keel_run(&cfg, main_fn, NULL);
    if (err) {
        fprintf(stderr, "keel-kv: %s\n", keel_strerror(err));
        return 1;
    }
    return app.exit_status;
}
