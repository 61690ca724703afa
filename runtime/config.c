/* Configuration: defaults, environment, command-line options, CPU sets. */
#include <ctype.h>
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

void keel_config_init(keel_config *c)
{
    memset(c, 0, sizeof(*c));
    c->task_quota_us = 500;
    c->msg_ring_capacity = 1024;
    c->blocking_threads = 4;
    c->ring_entries = 1024;
    c->handle_signals = true;
    c->stall_threshold_ms = 25;
    c->metrics_port = -1;
    c->metrics_address = "0.0.0.0";
    c->trace_buffer_kb = 8192;
    const char *v;
    if ((v = getenv("KEEL_SHARDS")) && *v) {
        char *end;
        unsigned long n = strtoul(v, &end, 10);
        if (*end || n == 0 || n > KEEL_MAX_SHARDS || v[0] == '-')
            c->_bad_env = "KEEL_SHARDS must be a number from 1 to 256 (unset it for one shard "
                          "per CPU)";
        else
            c->shards = (unsigned)n;
    }
    if ((v = getenv("KEEL_CPUSET")) && *v)
        c->cpuset = v;
    if ((v = getenv("KEEL_BACKEND")) && *v)
        c->backend = v;
}

const char *keel_config_usage(void)
{
    return "  --shards N            run N shards (default: one per CPU of the cpuset; "
           "$KEEL_SHARDS)\n"
           "  --cpuset LIST         CPUs to pin shards to, e.g. 0-3,6 (default: the process's\n"
           "                        affinity mask; $KEEL_CPUSET)\n"
           "  --backend uring|epoll reactor backend (default: io_uring if the kernel allows it;\n"
           "                        $KEEL_BACKEND)\n"
           "  --task-quota-us N     run tasks this long before polling I/O (default 500)\n"
           "  --stall-threshold-ms N  report a task that holds a shard longer, with a\n"
           "                        backtrace (default 25; 0: off)\n"
           "  --metrics-port N      serve Prometheus metrics on http://ADDR:N/metrics\n"
           "                        (default: off; 0: any free port, logged at start)\n"
           "  --metrics-address A   address of the metrics server (default 0.0.0.0)\n"
           "  --trace FILE          record a per-shard trace from the start; written as\n"
           "                        Chrome/Perfetto JSON at exit (or GET /trace/stop)\n"
           "  --trace-buffer-kb N   trace ring per shard, oldest events dropped (default 8192)\n";
}

int keel__parse_uint(const char *opt, const char *v, unsigned long max, unsigned *out)
{
    char *end;
    errno = 0;
    unsigned long n = v ? strtoul(v, &end, 10) : 0;
    if (!v || !*v || *end || errno || n > max || (v[0] == '-')) {
        fprintf(stderr, "keel: %s needs a number from 0 to %lu, got '%s'\n", opt, max, v ? v : "");
        return -KEEL_EBADCONFIG;
    }
    *out = (unsigned)n;
    return 0;
}

int keel__take_options(int *argc, char **argv, const char *const *opts, size_t nopts,
                       int (*take)(void *ctx, size_t which, const char *val), void *ctx)
{
    int out = 1;
    for (int i = 1; i < *argc; i++) {
        const char *a = argv[i];
        const char *eq = strchr(a, '=');
        size_t name_len = eq ? (size_t)(eq - a) : strlen(a);
        size_t which = nopts;
        for (size_t k = 0; k < nopts; k++)
            if (strlen(opts[k]) == name_len && strncmp(a, opts[k], name_len) == 0)
                which = k;
        if (which == nopts) {
            argv[out++] = argv[i];
            continue;
        }
        const char *val;
        if (eq) {
            val = eq + 1;
        } else if (i + 1 < *argc) {
            val = argv[++i];
        } else {
            fprintf(stderr, "keel: %s needs a value\n", opts[which]);
            return -KEEL_EBADCONFIG;
        }
        int err = take(ctx, which, val);
        if (err)
            return err;
    }
    argv[out] = NULL;
    *argc = out;
    return 0;
}

static int take_runtime_option(void *ctx, size_t which, const char *val)
{
    keel_config *c = ctx;
    int err = 0;
    switch (which) {
    case 0:
        c->_bad_env = NULL; /* the command line overrides $KEEL_SHARDS */
        err = keel__parse_uint("--shards", val, KEEL_MAX_SHARDS, &c->shards);
        if (!err && c->shards == 0) {
            fprintf(stderr, "keel: --shards must be at least 1 (omit it for one shard per CPU)\n");
            err = -KEEL_EBADCONFIG;
        }
        break;
    case 1: c->cpuset = val; break;
    case 2:
        if (strcmp(val, "uring") && strcmp(val, "io_uring") && strcmp(val, "epoll")) {
            fprintf(stderr, "keel: --backend must be 'uring' or 'epoll', got '%s'\n", val);
            err = -KEEL_EBADCONFIG;
        }
        c->backend = val;
        break;
    case 3:
        err = keel__parse_uint("--task-quota-us", val, 1000000, &c->task_quota_us);
        if (!err && c->task_quota_us == 0) {
            fprintf(stderr, "keel: --task-quota-us must be at least 1\n");
            err = -KEEL_EBADCONFIG;
        }
        break;
    case 4:
        err = keel__parse_uint("--stall-threshold-ms", val, 3600000, &c->stall_threshold_ms);
        break;
    case 5: {
        unsigned port;
        err = keel__parse_uint("--metrics-port", val, 65535, &port);
        if (!err)
            c->metrics_port = (int)port;
        break;
    }
    case 6: c->metrics_address = val; break;
    case 7:
        if (!*val) {
            fprintf(stderr, "keel: --trace needs a file name\n");
            err = -KEEL_EBADCONFIG;
        }
        c->trace_file = val;
        break;
    case 8:
        err = keel__parse_uint("--trace-buffer-kb", val, 16u << 20, &c->trace_buffer_kb);
        if (!err && c->trace_buffer_kb < 16) {
            fprintf(stderr, "keel: --trace-buffer-kb must be at least 16\n");
            err = -KEEL_EBADCONFIG;
        }
        break;
    }
    return err;
}

int keel_config_parse_args(keel_config *c, int *argc, char **argv)
{
    static const char *const opts[] = {"--shards",
                                       "--cpuset",
                                       "--backend",
                                       "--task-quota-us",
                                       "--stall-threshold-ms",
                                       "--metrics-port",
                                       "--metrics-address",
                                       "--trace",
                                       "--trace-buffer-kb"};
    return keel__take_options(argc, argv, opts, sizeof(opts) / sizeof(opts[0]), take_runtime_option,
                              c);
}

/* Parses "0-3,6" into set. Returns 0 or -KEEL_EBADCONFIG (logged). */
int keel__parse_cpuset(const char *list, cpu_set_t *set)
{
    CPU_ZERO(set);
    const char *p = list;
    while (*p) {
        char *end;
        errno = 0;
        long a = strtol(p, &end, 10);
        if (end == p || errno || a < 0 || a >= CPU_SETSIZE)
            goto bad;
        long b = a;
        p = end;
        if (*p == '-') {
            p++;
            b = strtol(p, &end, 10);
            if (end == p || errno || b < a || b >= CPU_SETSIZE)
                goto bad;
            p = end;
        }
        for (long cpu = a; cpu <= b; cpu++)
            CPU_SET((int)cpu, set);
        if (*p == ',')
            p++;
        else if (*p)
            goto bad;
    }
    if (CPU_COUNT(set) == 0)
        goto bad;
    return 0;
bad:
    keel__log("invalid --cpuset '%s': expected a list like 0-3,6", list);
    return -KEEL_EBADCONFIG;
}

/* Formats set as a compact list ("0-3,6") into buf. */
void keel__format_cpuset(const cpu_set_t *set, char *buf, size_t len)
{
    size_t n = 0;
    buf[0] = 0;
    for (int cpu = 0; cpu < CPU_SETSIZE && n + 16 < len; cpu++) {
        if (!CPU_ISSET(cpu, set))
            continue;
        int last = cpu;
        while (last + 1 < CPU_SETSIZE && CPU_ISSET(last + 1, set))
            last++;
        n += (size_t)snprintf(buf + n, len - n, n ? ",%d" : "%d", cpu);
        if (last > cpu)
            n += (size_t)snprintf(buf + n, len - n, "-%d", last);
        cpu = last;
    }
}
