/* keel-pool: a PgBouncer-compatible PostgreSQL connection pooler on every
 * core. Same command line, ini file, auth_file, signals, log lines and
 * admin console as PgBouncer; one shard per CPU where PgBouncer has one
 * thread. */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pool.h"

static struct {
    keel_listener *tcp, *unix_l;
    int exit_status;
    const char *pidfile;
    bool pidfile_written;
    char unix_path[300];
    bool safe_shutdown;
    const char *metrics_address; /* --metrics-address, for the log line */
} app;

static void cfg_log(void *arg, bool error, const char *msg)
{
    (void)arg;
    pool_log(error ? "ERROR" : "WARNING", "%s", msg);
}

/* ---- per-shard state ---------------------------------------------------------------------- */

static void *shard_create(void *arg)
{
    (void)arg;
    pool_shard *sh = calloc(1, sizeof(*sh));
    if (!sh)
        return NULL;
    sh->id = keel_shard_id();
    keel_abort_source_init(&sh->stopping);
    pool_metrics_shard(sh);
    return sh;
}

static keel_future *start_janitor(void *arg)
{
    (void)arg;
    pool_maintain_start();
    return keel_make_ready(0);
}

/* At exit, on each shard: every client and server closed, then the
 * shard's pools and databases freed (ASan checks nothing leaks). */
static keel_future *shard_stop(void *arg)
{
    (void)arg;
    pool_shard *sh = shard_here();
    keel_abort_source_request(&sh->stopping);
    /* Closing may end a connection's loop at once and free it: the next
     * one is read first. */
    for (pclient *c = sh->clients, *next; c; c = next) {
        next = c->next;
        if (c->conn) {
            if (c->waiting)
                pool_unwait(c);
            keel_conn *conn = c->conn;
            c->conn = NULL;
            keel_detach(keel_conn_close(conn));
        }
    }
    for (pserver *s = sh->servers, *next; s; s = next) {
        next = s->all_next;
        if (s->state != SV_CLOSED)
            server_close(s, "shutting down");
    }
    return keel_sleep(KEEL_MS(50)); /* let the loops end and free their objects */
}

static void shard_destroy(void *inst)
{
    pool_shard *sh = inst;
    pool_metrics_shard(NULL);
    for (ppool *p = sh->pools, *n; p; p = n) {
        n = p->next;
        pgbuf_free(&p->welcome);
        free(p->user);
        free(p->secret);
        free(p->login_error);
        free(p);
    }
    for (pdb *d = sh->dbs, *n; d; d = n) {
        n = d->next;
        free(d->name);
        free(d->auto_cfg);
        free(d);
    }
    for (int i = 0; i < 256; i++)
        for (pstr *p = sh->strings[i], *n; p; p = n) {
            n = p->next;
            free(p);
        }
    free(sh);
}

static keel_future *all_stopped(void *arg)
{
    (void)arg;
    return keel_sharded_stop(&pool_shards, shard_destroy);
}

static keel_future *stop_shards(void *arg)
{
    (void)arg;
    return keel_then(keel_invoke_on_all(shard_stop, NULL), (keel_then_fn)(void *)all_stopped, NULL);
}

/* ---- signals ---------------------------------------------------------------------------- */

static void on_sighup(int signo, void *arg)
{
    (void)signo;
    (void)arg;
    plog("got SIGHUP, re-reading config");
    keel_detach(admin_reload());
}

static void on_sigusr(int signo, void *arg)
{
    (void)arg;
    if (signo == SIGUSR1) {
        plog("got SIGUSR1, pausing all activity");
        admin_pause_all(true);
    } else {
        plog("got SIGUSR2, continuing");
        admin_pause_all(false);
    }
}

static void on_sigint(int signo, void *arg)
{
    (void)arg;
    if (signo == SIGTERM || app.safe_shutdown || keel_stopping()) {
        plog("got %s, shutting down", signo == SIGTERM ? "SIGTERM" : "SIGINT");
        keel_stop();
        return;
    }
    /* PgBouncer's safe shutdown: PAUSE (wait for transactions to end), then SHUTDOWN. */
    plog("got SIGINT, shutting down, waiting for transactions to finish");
    app.safe_shutdown = true;
    admin_shutdown_when_idle();
}

/* ---- start ---------------------------------------------------------------------------- */

static void listening_unix(void *ctx, keel_result r)
{
    (void)ctx;
    if (r.err) {
        pool_log("FATAL", "cannot listen on unix socket %s: %s", app.unix_path,
                 keel_strerror(r.err));
        app.exit_status = 1;
        keel_stop();
        return;
    }
    chmod(app.unix_path, 0777);
    plog("listening on unix:%s", app.unix_path);
}

static void listening_tcp(void *ctx, keel_result r)
{
    const keel_listen_config *lc = ctx;
    if (r.err) {
        pool_log("FATAL",
                 "cannot listen on %s:%u: %s; is another pooler running? set "
                 "listen_port to a free port",
                 lc->bind, lc->port, keel_strerror(r.err));
        app.exit_status = 1;
        keel_stop();
        return;
    }
    plog("listening on %s:%u", lc->bind, keel_listener_port(app.tcp));
    /* keel says so on stderr; the pool's log says it too, for a logfile
     * read without stderr (daemon mode). */
    if (keel_metrics_port())
        plog("metrics on http://%s:%u/metrics",
             app.metrics_address ? app.metrics_address : "0.0.0.0", keel_metrics_port());
    plog("process up: keel-pool %s (PgBouncer %s compatible), %u shards, backend %s, "
         "try: psql -h %s -p %u -U USER DBNAME",
         "0.1.0", POOL_VERSION, keel_shard_count(), keel_backend_name(),
         strcmp(lc->bind, "0.0.0.0") ? lc->bind : "127.0.0.1", keel_listener_port(app.tcp));
}

static keel_listen_config tcp_cfg, unix_cfg;
static char tcp_bind[128], unix_bind[310];

static keel_future *shards_ready(void *arg, keel_result r)
{
    (void)arg;
    if (r.err) {
        pool_log("FATAL", "out of memory starting the shards");
        app.exit_status = 1;
        keel_stop();
        return keel_make_ready(0);
    }
    keel_at_exit(stop_shards, NULL);
    pool_start_ns = keel_now_ns();
    keel_detach(keel_invoke_on_all(start_janitor, NULL));
    const pool_config *cfg = pool_cfg;
    if (cfg->listen_addr && *cfg->listen_addr) {
        keel_listen_config_init(&tcp_cfg);
        const char *a = cfg->listen_addr;
        /* PgBouncer takes a list; keel-pool listens on its first address. */
        size_t n = strcspn(a, ", ");
        snprintf(tcp_bind, sizeof(tcp_bind), "%.*s", (int)n, a);
        if (!strcmp(tcp_bind, "*"))
            snprintf(tcp_bind, sizeof(tcp_bind), "0.0.0.0");
        tcp_cfg.bind = tcp_bind;
        tcp_cfg.port = (uint16_t)cfg->listen_port;
        keel_on_done(keel_listen(&tcp_cfg, client_accept, NULL, &app.tcp), listening_tcp, &tcp_cfg);
    }
    if (cfg->unix_socket_dir && *cfg->unix_socket_dir) {
        keel_listen_config_init(&unix_cfg);
        snprintf(app.unix_path, sizeof(app.unix_path), "%s/.s.PGSQL.%d", cfg->unix_socket_dir,
                 cfg->listen_port);
        snprintf(unix_bind, sizeof(unix_bind), "unix:%s", app.unix_path);
        unix_cfg.bind = unix_bind;
        keel_on_done(keel_listen(&unix_cfg, client_accept, NULL, &app.unix_l), listening_unix,
                     NULL);
    }
    return keel_make_ready(0);
}

static void main_fn(void *arg)
{
    (void)arg;
    keel_detach(keel_then_wrapped(keel_sharded_start(&pool_shards, shard_create, NULL),
                                  shards_ready, NULL));
}

/* ---- process: user, pidfile, daemon, limits ------------------------------------------------ */

static int write_pidfile(const char *path)
{
    char buf[32];
    int fd = open(path, O_RDONLY);
    if (fd >= 0) {
        ssize_t n = read(fd, buf, sizeof(buf) - 1);
        close(fd);
        if (n > 0) {
            buf[n] = 0;
            long pid = strtol(buf, NULL, 10);
            if (pid > 0 && kill((pid_t)pid, 0) == 0) {
                fprintf(stderr,
                        "keel-pool: pidfile %s names a running process (%ld): is another "
                        "pooler running? stop it or change pidfile\n",
                        path, pid);
                return -1;
            }
        }
        unlink(path);
    }
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0644);
    if (fd < 0) {
        fprintf(stderr, "keel-pool: cannot write pidfile %s: %s\n", path, strerror(errno));
        return -1;
    }
    int n = snprintf(buf, sizeof(buf), "%d\n", (int)getpid());
    if (write(fd, buf, (size_t)n) != n) {
        close(fd);
        return -1;
    }
    close(fd);
    app.pidfile_written = true;
    return 0;
}

static int switch_user(const char *user)
{
    struct passwd *pw = getpwnam(user);
    if (!pw) {
        fprintf(stderr, "keel-pool: -u %s: no such user\n", user);
        return -1;
    }
    if (setgroups(0, NULL) || setgid(pw->pw_gid) || setuid(pw->pw_uid)) {
        fprintf(stderr, "keel-pool: -u %s: cannot switch user: %s\n", user, strerror(errno));
        return -1;
    }
    return 0;
}

static void raise_fd_limit(int want)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl))
        return;
    rlim_t target = (rlim_t)want;
    if (target > rl.rlim_max)
        target = rl.rlim_max;
    if (rl.rlim_cur < target) {
        rl.rlim_cur = target;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    getrlimit(RLIMIT_NOFILE, &rl);
    if ((long long)rl.rlim_cur < want)
        pwarn("file descriptor limit %llu is below max_client_conn + pools (%d): raise "
              "'ulimit -n' (hard limit)",
              (unsigned long long)rl.rlim_cur, want);
}

static void usage(FILE *out)
{
    fprintf(out,
            "keel-pool is a PgBouncer-compatible PostgreSQL connection pooler that uses every "
            "core.\n\n"
            "Usage:\n"
            "  keel-pool [OPTION]... CONFIG_FILE\n\n"
            "Options:\n"
            "  -d, --daemon         run in the background (as a daemon)\n"
            "  -q, --quiet          run quietly (no log lines on stderr)\n"
            "  -R, --reboot         do an online reboot (not supported: starts normally)\n"
            "  -u, --user=USERNAME  assume identity of USERNAME\n"
            "  -v, --verbose        increase verbosity\n"
            "  -V, --version        show version, then exit\n"
            "  -h, --help           show this help, then exit\n\n"
            "Runtime options:\n%s\n"
            "Signals: SIGHUP reloads the config, SIGINT shuts down safely (after the running\n"
            "transactions), SIGTERM at once, SIGUSR1 pauses and SIGUSR2 resumes.\n"
            "The admin console is the database 'pgbouncer': psql -p PORT -U pgbouncer pgbouncer\n"
            "over the Unix socket as the user running keel-pool, or as one of admin_users.\n",
            keel_config_usage());
}

int main(int argc, char **argv)
{
    keel_config kc;
    keel_config_init(&kc);
    if (keel_config_parse_args(&kc, &argc, argv))
        return 2;
    bool daemon_mode = false, quiet = false, verbose = false;
    const char *user = NULL, *path = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "-V") || !strcmp(a, "--version")) {
            printf("%s\n", POOL_VERSION_STRING);
            return 0;
        } else if (!strcmp(a, "-d") || !strcmp(a, "--daemon")) {
            daemon_mode = true;
        } else if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) {
            quiet = true;
        } else if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) {
            verbose = true;
        } else if (!strcmp(a, "-R") || !strcmp(a, "--reboot")) {
            fprintf(stderr, "keel-pool: -R (online reboot) is not supported; starting normally\n");
        } else if (!strcmp(a, "-u") || !strcmp(a, "--user")) {
            if (++i >= argc) {
                fprintf(stderr, "keel-pool: -u needs a user name\n");
                return 2;
            }
            user = argv[i];
        } else if (!strncmp(a, "--user=", 7)) {
            user = a + 7;
        } else if (a[0] == '-') {
            fprintf(stderr, "keel-pool: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        } else if (!path) {
            path = a;
        } else {
            fprintf(stderr, "keel-pool: only one config file, got '%s' and '%s'\n", path, a);
            return 2;
        }
    }
    if (!path) {
        fprintf(stderr, "keel-pool: need a config file (pgbouncer.ini); see --help\n");
        return 2;
    }
    if (user && switch_user(user))
        return 1;
    if (geteuid() == 0) {
        fprintf(stderr, "keel-pool: PgBouncer should not run as root: start it as another user "
                        "or with -u USER\n");
        return 1;
    }
    pool_cfg_path = realpath(path, NULL);
    if (!pool_cfg_path) {
        fprintf(stderr, "keel-pool: cannot open config file %s: %s\n", path, strerror(errno));
        return 1;
    }
    pool_log_open(NULL, quiet, verbose);
    pool_cfg = pool_config_load(pool_cfg_path, cfg_log, NULL);
    if (!pool_cfg) {
        fprintf(stderr, "keel-pool: cannot load config file %s: fix the errors above\n", path);
        free(pool_cfg_path);
        return 1;
    }
    const char *at = pool_cfg->auth_type;
    if (!strcmp(at, "hba") || !strcmp(at, "cert") || !strcmp(at, "pam")) {
        fprintf(stderr,
                "keel-pool: auth_type = %s is not supported yet: use md5, scram-sha-256, plain, "
                "trust or any\n",
                at);
        return 1;
    }
    if (pool_cfg->auth_file && *pool_cfg->auth_file) {
        pool_users = pool_auth_file_load(pool_cfg->auth_file, cfg_log, NULL);
        if (!pool_users)
            pwarn("could not load auth_file %s: no users can log in with a password",
                  pool_cfg->auth_file);
    }
    if (daemon_mode) {
        if (!pool_cfg->logfile || !*pool_cfg->logfile) {
            fprintf(stderr, "keel-pool: in daemon mode a logfile is needed: set logfile\n");
            return 1;
        }
        if (daemon(1, 0)) {
            fprintf(stderr, "keel-pool: daemon() failed: %s\n", strerror(errno));
            return 1;
        }
        quiet = true;
    }
    pool_log_open(pool_cfg->logfile, quiet, verbose);
    if (pool_cfg->pidfile && *pool_cfg->pidfile && write_pidfile(pool_cfg->pidfile))
        return 1;
    app.pidfile = pool_cfg->pidfile;
    raise_fd_limit(pool_cfg->max_client_conn + 2 * pool_cfg->default_pool_size + 100);

    kc.quiet = true;
    keel_signal_handle(SIGHUP, on_sighup, NULL);
    keel_signal_handle(SIGUSR1, on_sigusr, NULL);
    keel_signal_handle(SIGUSR2, on_sigusr, NULL);
    keel_signal_handle(SIGINT, on_sigint, NULL);
    keel_signal_handle(SIGTERM, on_sigint, NULL);
    /* The pooler works without its metrics: a failure is only logged. */
    int merr = pool_metrics_start();
    if (merr)
        pwarn("keel_metrics_register failed: %s; keel-pool's own metrics are off",
              keel_strerror(merr));
    app.metrics_address = kc.metrics_address;
    int err = keel_run(&kc, main_fn, NULL);
    if (err) {
        fprintf(stderr, "keel-pool: %s\n", keel_strerror(err));
        app.exit_status = 1;
    }
    if (app.pidfile_written)
        unlink(pool_cfg->pidfile);
    plog("shutdown complete");
    pool_config_free(pool_cfg);
    pool_auth_file_free(pool_users);
    pool_globals_free();
    admin_free_retired();
    free(pool_cfg_path);
    return app.exit_status;
}
