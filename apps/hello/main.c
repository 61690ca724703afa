/* keel-hello: the smallest keel program. Every shard reports in through
 * keel_invoke_on_all; then shard 0 pings every shard once a second until
 * SIGINT/SIGTERM, when each shard's loop statistics are printed. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <keel/keel.h>

static struct {
    uint64_t exit_after_ms; /* 0: run until a signal */
    uint64_t pings;
} app;

static keel_future *report_in(void *arg)
{
    (void)arg;
    printf("keel-hello: shard %u of %u reporting in on CPU %d\n", keel_shard_id(),
           keel_shard_count(), keel_shard_cpu(keel_shard_id()));
    fflush(stdout);
    return keel_make_ready(0);
}

static keel_future *pong(void *arg)
{
    (void)arg;
    return keel_make_ready(keel_shard_id());
}

static keel_future *keep_going(void *ctx, keel_result r)
{
    (void)ctx;
    (void)r;
    return keel_make_ready(KEEL_CONTINUE);
}

static keel_future *ping_all(void *ctx, keel_result r)
{
    (void)ctx;
    (void)r;
    app.pings++;
    return keel_then(keel_invoke_on_all(pong, NULL), keep_going, NULL);
}

static keel_future *heartbeat(void *ctx)
{
    (void)ctx;
    keel_future *f = keel_sleep(KEEL_SEC(1));
    f = keel_then(f, ping_all, NULL);
    /* keel_sleep resolves -ECANCELED at shutdown, which ends the loop. */
    return f;
}

static keel_future *on_exit_stats(void *arg)
{
    (void)arg;
    printf("keel-hello: stopping after %llu ping rounds; per-shard loop statistics:\n",
           (unsigned long long)app.pings);
    keel_stats_print(stdout);
    fflush(stdout);
    return keel_make_ready(0);
}

static void stop_now(void *ctx, keel_result r)
{
    (void)ctx;
    (void)r;
    keel_stop();
}

static void all_reported(void *ctx, keel_result r)
{
    (void)ctx;
    if (r.err) {
        fprintf(stderr, "keel-hello: a shard failed to report in: %s\n", keel_strerror(r.err));
        keel_stop();
        return;
    }
    printf("keel-hello: all %u shards ready; Ctrl-C (SIGINT) or SIGTERM stops and prints "
           "per-shard statistics\n",
           keel_shard_count());
    fflush(stdout);
    keel_detach(keel_repeat(heartbeat, NULL));
    if (app.exit_after_ms)
        keel_on_done(keel_sleep(KEEL_MS(app.exit_after_ms)), stop_now, NULL);
}

static void main_fn(void *arg)
{
    (void)arg;
    keel_at_exit(on_exit_stats, NULL);
    keel_on_done(keel_invoke_on_all(report_in, NULL), all_reported, NULL);
}

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: keel-hello [options]\n"
            "Starts one shard per CPU; each reports in, then shard 0 pings them all once a\n"
            "second. SIGINT or SIGTERM stops it and prints per-shard loop statistics.\n\n"
            "Options:\n"
            "%s"
            "  --exit-after-ms N     stop by itself after N ms\n"
            "  -h, --help            show this help\n",
            keel_config_usage());
}

int main(int argc, char **argv)
{
    keel_config cfg;
    keel_config_init(&cfg);
    if (keel_config_parse_args(&cfg, &argc, argv))
        return 2;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--exit-after-ms") && i + 1 < argc) {
            app.exit_after_ms = strtoull(argv[++i], NULL, 10);
        } else {
            fprintf(stderr, "keel-hello: unknown option '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    int err = keel_run(&cfg, main_fn, NULL);
    if (err) {
        fprintf(stderr, "keel-hello: %s\n", keel_strerror(err));
        return 1;
    }
    return 0;
}
