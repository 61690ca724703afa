/* The README's example service, built by tests/integ/install_example.sh against
 * a staged `make install`. Keep the two identical. */
#include <keel/keel.h>
#include <stdio.h>

/* Runs on the target shard. */
static keel_future *square_id(void *arg)
{
    (void)arg;
    return keel_make_ready((int64_t)keel_shard_id() * keel_shard_id());
}

/* Back on shard 0, with the result. */
static keel_future *report(void *ctx, keel_result r)
{
    printf("shard %u answered %lld\n", (unsigned)(uintptr_t)ctx, (long long)r.val);
    return keel_sleep(KEEL_MS(10)); /* a timer is a future too */
}

static void done(void *ctx, keel_result r)
{
    (void)ctx;
    (void)r;
    keel_stop();
}

static void start(void *arg)
{
    unsigned last = keel_shard_count() - 1;
    keel_future *f = keel_submit_to(last, square_id, arg);
    keel_on_done(keel_then(f, report, (void *)(uintptr_t)last), done, NULL);
}

int main(int argc, char **argv)
{
    keel_config cfg;
    keel_config_init(&cfg);
    if (keel_config_parse_args(&cfg, &argc, argv))
        return 2;
    return keel_run(&cfg, start, NULL) ? 1 : 0;
}
