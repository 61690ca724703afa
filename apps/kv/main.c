/* keel-kv: a Redis-compatible store, sharded across cores. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "persist.h"
#include "server.h"

static struct {
    kv_config cfg;
    keel_listener *listener;
    int exit_status;
    bool cli_port, cli_bind; /* given on the command line, which wins over the file */
} app;

static void listening(void *ctx, keel_result r)
{
    (void)ctx;
    if (r.err && kv_persist_start_failed()) {
        fprintf(stderr, "keel-kv: not started: the data files could not be loaded or created "
                        "(see above)\n");
        app.exit_status = 1;
        keel_stop();
        return;
    }
    if (r.err) {
        fprintf(stderr, "keel-kv: cannot listen on %s port %u: %s%s\n", app.cfg.listen.bind,
                app.cfg.listen.port, keel_strerror(r.err),
                r.err == -EADDRINUSE
                    ? " (is a redis-server or another keel-kv on it? pick another with --port N)"
                    : "");
        app.exit_status = 1;
        keel_stop();
        return;
    }
    kv_cfg.port = keel_listener_port(app.listener);
    printf("keel-kv: listening on %s port %u, %u shards, backend %s%s; try: redis-cli -p %u ping\n",
           app.cfg.listen.bind, keel_listener_port(app.listener), keel_shard_count(),
           keel_backend_name(), kv_cfg.requirepass && *kv_cfg.requirepass ? ", password set" : "",
           keel_listener_port(app.listener));
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
            "A Redis-compatible key-value store with its keyspace split across shards\n"
            "(one per CPU). redis-cli and Redis clients talk to it unchanged. SIGINT or\n"
            "SIGTERM stop it.\n\n"
            "Options:\n"
            "%s"
            "  --requirepass PW      clients must AUTH with PW\n"
            "  --maxmemory BYTES     memory limit for data (100mb, 1gb; 0: none)\n"
            "  --maxmemory-policy P  noeviction|allkeys-lru|allkeys-random|volatile-lru|...\n"
            "  --config FILE         a redis.conf subset: port, bind, requirepass,\n"
            "                        maxmemory, maxmemory-policy, persistence, and\n"
            "                        Redis's tuning parameters (see CONFIG GET *)\n"
            "  --appendonly yes      log writes to DIR/appendonlydir/appendonly.aof.N (one\n"
            "                        per shard); --appendfsync always|everysec|no\n"
            "  --save \"SECS CHANGES\" snapshot rules (BGSAVE) to DIR/dump.rdb.N; off by default\n"
            "  --dir DIR             where those files live (default: the current directory)\n"
            "  --aof-fix-corrupt-tail yes\n"
            "                        start on an AOF with a corrupt tail, cutting it (saved\n"
            "                        to FILE.bad-tail)\n"
            "  --NAME VALUE          any parameter CONFIG SET accepts\n"
            "%s"
            "  -h, --help            show this help\n",
            keel_listen_config_usage(&app.cfg.listen), keel_config_usage());
}

/* Applies one parameter; port and bind go to the listener. In a config
 * file (in_file) a parameter keel-kv does not know is a warning, so a
 * redis.conf works as it is; on the command line it is an error. */
static int set_param(const char *name, const char *value, const char *where, bool in_file)
{
    if (in_file && ((!strcmp(name, "port") && app.cli_port) ||
                    (!strcmp(name, "bind") && app.cli_bind)))
        return 0;
    if (!strcmp(name, "port")) {
        char *end;
        long p = strtol(value, &end, 10);
        if (*end || p < 0 || p > 65535) {
            fprintf(stderr, "keel-kv: %s: port '%s' is not a port number (0-65535)\n", where,
                    value);
            return -1;
        }
        app.cfg.listen.port = (uint16_t)p;
        return 0;
    }
    if (!strcmp(name, "bind")) {
        /* Redis takes several addresses; keel-kv listens on the first. */
        static char first[256];
        snprintf(first, sizeof(first), "%.*s", (int)strcspn(value, " "), value);
        app.cfg.listen.bind = first;
        return 0;
    }
    /* redis.conf gives one save rule per line ("save 3600 1", "save 300
     * 100"): the lines of a file add up, as in Redis; save "" clears. */
    static char saves[1024];
    static bool file_saves;
    if (in_file && !strcmp(name, "save") && *value) {
        size_t n = file_saves ? strlen(saves) : 0;
        snprintf(saves + n, sizeof(saves) - n, "%s%s", n ? " " : "", value);
        file_saves = true;
        value = saves;
    }
    const char *why;
    if (kv_config_set(name, value, &why)) {
        if (!strcmp(why, "unknown") && in_file) {
            fprintf(stderr, "keel-kv: %s: ignoring '%s', which keel-kv does not support\n",
                    where, name);
            return 0;
        }
        if (!strcmp(why, "unknown"))
            fprintf(stderr, "keel-kv: %s: unknown parameter '%s' (see keel-kv --help)\n", where,
                    name);
        else
            fprintf(stderr, "keel-kv: %s: bad value '%s' for '%s': %s\n", where, value, name, why);
        return -1;
    }
    return 0;
}

static int load_config(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "keel-kv: cannot open config file %s: %s\n", path, strerror(errno));
        return -1;
    }
    char line[4096], where[512];
    int lineno = 0, rc = 0;
    while (fgets(line, sizeof(line), f)) {
        lineno++;
        char *p = line;
        while (isspace((unsigned char)*p))
            p++;
        if (!*p || *p == '#')
            continue;
        p[strcspn(p, "\r\n")] = 0;
        char *name = p;
        p += strcspn(p, " \t");
        if (*p)
            *p++ = 0;
        while (isspace((unsigned char)*p))
            p++;
        size_t n = strlen(p);
        if (n >= 2 && (p[0] == '"' || p[0] == '\'') && p[n - 1] == p[0]) {
            p[n - 1] = 0;
            p++;
        }
        for (char *q = name; *q; q++)
            *q = (char)tolower((unsigned char)*q);
        snprintf(where, sizeof(where), "%s:%d", path, lineno);
        if (set_param(name, p, where, true)) {
            rc = -1;
            break;
        }
    }
    fclose(f);
    return rc;
}

int main(int argc, char **argv)
{
    keel_config cfg;
    keel_config_init(&cfg);
    keel_listen_config_init(&app.cfg.listen);
    app.cfg.listen.port = 6379;
    app.cfg.listen.bind = "127.0.0.1";
    kv_config_defaults();
    for (int i = 1; i < argc; i++) {
        app.cli_port |= !strncmp(argv[i], "--port", 6);
        app.cli_bind |= !strncmp(argv[i], "--bind", 6);
    }
    if (keel_config_parse_args(&cfg, &argc, argv) ||
        keel_listen_config_parse_args(&app.cfg.listen, &argc, argv))
        return 2;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        }
    }
    /* The config file first, so options on the command line win. */
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--config")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "keel-kv: --config needs a file name\n");
                return 2;
            }
            if (load_config(argv[i + 1]))
                return 2;
        }
    }
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--config")) {
            i++;
            continue;
        }
        if (strncmp(argv[i], "--", 2) || i + 1 >= argc) {
            fprintf(stderr, "keel-kv: unknown option '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
        if (set_param(argv[i] + 2, argv[i + 1], "command line", false))
            return 2;
        i++;
    }
    int err = keel_run(&cfg, main_fn, NULL);
    kv_server_free();
    kv_config_free();
    if (err) {
        fprintf(stderr, "keel-kv: %s\n", keel_strerror(err));
        return 1;
    }
    return app.exit_status;
}
