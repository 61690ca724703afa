/* keel-pool's admin console: the virtual database "pgbouncer", with
 * PgBouncer 1.18's commands, column names and row formats, so
 * pgbouncer_exporter and existing dashboards read it unchanged.
 *
 * Every figure lives on the shard that owns it. A SHOW runs a collector on
 * every shard (keel_invoke_on_all); each writes only its own slot of the
 * snapshot, and the admin client's shard merges the slots: it sums what
 * PgBouncer reports per pool or database, and concatenates per-connection
 * rows. Commands that change state (PAUSE, RESUME, KILL, RECONNECT, RELOAD,
 * SET) set global flags or swap the configuration, then tell every shard. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "pool.h"

#define OID_TEXT 25
#define OID_INT8 20

/* ---- reply building ----------------------------------------------------------------------- */

typedef struct table {
    pgbuf *out;
    int ncols;
    const char *const *cols;
    int nrows;
} table;

static void table_begin(table *t, pgbuf *out, const char *const *cols, const uint32_t *types, int n)
{
    t->out = out;
    t->cols = cols;
    t->ncols = n;
    t->nrows = 0;
    pgbuf_row_desc(out, cols, types, n);
}

static void table_row(table *t, const char *const *vals)
{
    pgbuf_data_row(t->out, vals, t->ncols);
    t->nrows++;
}

static void table_end(table *t, const char *tag)
{
    pgbuf_complete(t->out, tag);
}

/* Types: 's' text, 'i' int8, per column. */
static uint32_t *types_of(const char *spec, uint32_t *buf)
{
    for (int i = 0; spec[i]; i++)
        buf[i] = spec[i] == 'i' ? OID_INT8 : OID_TEXT;
    return buf;
}

static char *fmt_ll(char *b, long long v)
{
    sprintf(b, "%lld", v);
    return b;
}

/* A monotonic keel time as PgBouncer prints wall-clock times. */
static void fmt_time(char *b, size_t n, uint64_t mono_ns)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    uint64_t now = keel_now_ns();
    time_t t = tv.tv_sec - (time_t)((now > mono_ns ? now - mono_ns : 0) / 1000000000ull);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(b, n, "%Y-%m-%d %H:%M:%S UTC", &tm);
}

/* ---- per-shard snapshots ------------------------------------------------------------------ */

typedef struct pool_snap {
    char db[128], user[128];
    long long cl_active, cl_waiting, sv_active, sv_idle, sv_used, sv_tested, sv_login;
    uint64_t oldest_wait_ns; /* 0: none waiting */
    pool_mode mode;
    pstats stats, delta;
} pool_snap;

typedef struct shard_snap {
    pool_snap *pools;
    int npools;
    pgbuf rows; /* DataRows for per-connection SHOWs */
    int nrows;
    long long clients, servers, logins, admin_clients, admin_queries;
    long long close_pending; /* WAIT_CLOSE */
} shard_snap;

typedef struct snapshot {
    int what; /* which SHOW */
    char arg[128];
    shard_snap *shards;
    unsigned n;
} snapshot;

enum {
    SNAP_POOLS,
    SNAP_CLIENTS,
    SNAP_SERVERS,
    SNAP_SOCKETS,
    SNAP_ACTIVE_SOCKETS,
    SNAP_FDS,
    SNAP_COUNTS,
};

static const char *client_state(const pclient *c)
{
    if (c->state == CL_LOGIN)
        return "login";
    return c->waiting ? "waiting" : "active";
}

static void conn_row(shard_snap *ss, bool client, const void *obj, bool sockets)
{
    char port[16], lport[16], ct[40], rt[40], wait[24], waitus[24], ptr[32], link[32], rpid[16];
    char local[48] = "";
    const char *type, *user, *db, *state, *addr, *laddr, *app;
    long long close_needed = 0;
    pstr *appname = NULL;
    uint64_t wait_ns = 0;
    if (client) {
        const pclient *c = obj;
        type = "C";
        user = c->user ? c->user : "";
        db = c->dbname ? c->dbname : "";
        state = client_state(c);
        addr = c->addr;
        /* The local address is looked up here, not kept per client. */
        laddr = "unix";
        uint16_t lp = c->local_port;
        if (!c->unix_sock && c->conn) {
            struct sockaddr_storage ss;
            socklen_t sl = sizeof(ss);
            if (getsockname(keel_conn_fd(c->conn), (struct sockaddr *)&ss, &sl) == 0)
                fmt_addr(&ss, local, sizeof(local), &lp);
            laddr = local;
        }
        snprintf(port, sizeof(port), "%u", c->port);
        snprintf(lport, sizeof(lport), "%u", lp);
        fmt_time(ct, sizeof(ct), c->connect_ns);
        fmt_time(rt, sizeof(rt), c->request_ns);
        if (c->waiting)
            wait_ns = keel_now_ns() - c->wait_start_ns;
        snprintf(ptr, sizeof(ptr), "%p", obj);
        if (c->server)
            snprintf(link, sizeof(link), "%p", (void *)c->server);
        else
            link[0] = 0;
        snprintf(rpid, sizeof(rpid), "%u", c->peer_pid);
        appname = c->vars.v[VAR_APPNAME];
    } else {
        const pserver *s = obj;
        type = "S";
        user = s->pool->db->cfg->user ? s->pool->db->cfg->user : s->pool->user;
        db = s->pool->db->name;
        state = sockets ? (s->state == SV_ACTIVE   ? "sv_active"
                           : s->state == SV_IDLE   ? "sv_idle"
                           : s->state == SV_USED   ? "sv_used"
                           : s->state == SV_LOGIN  ? "sv_login"
                           : s->state == SV_TESTED ? "sv_tested"
                                                   : "sv_closed")
                        : (s->state == SV_LOGIN ? "new" : server_state_name(s));
        addr = s->addr;
        laddr = "127.0.0.1";
        snprintf(port, sizeof(port), "%u", s->port);
        snprintf(lport, sizeof(lport), "%u", s->local_port);
        fmt_time(ct, sizeof(ct), s->connect_ns);
        fmt_time(rt, sizeof(rt), s->request_ns ? s->request_ns : s->connect_ns);
        snprintf(ptr, sizeof(ptr), "%p", obj);
        if (s->client)
            snprintf(link, sizeof(link), "%p", (void *)s->client);
        else
            link[0] = 0;
        snprintf(rpid, sizeof(rpid), "%u", s->be_pid);
        close_needed = s->close_after;
        appname = s->vars.v[VAR_APPNAME];
    }
    if (sockets && client)
        state = ((const pclient *)obj)->waiting ? "cl_waiting" : "cl_active";
    app = appname ? appname->s : "";
    snprintf(wait, sizeof(wait), "%llu", (unsigned long long)(wait_ns / 1000000000ull));
    snprintf(waitus, sizeof(waitus), "%llu", (unsigned long long)(wait_ns / 1000 % 1000000));
    char cn[8];
    snprintf(cn, sizeof(cn), "%lld", close_needed);
    const char *vals[25] = {type, user, db,     state, addr, port, laddr, lport, ct,
                            rt,   wait, waitus, cn,    ptr,  link, rpid,  "",    app};
    int n = 18;
    if (sockets) { /* buffer positions: keel keeps no packet buffer of its own */
        for (int i = 18; i < 25; i++)
            vals[i] = "0";
        n = 25;
    }
    pgbuf_data_row(&ss->rows, vals, n);
    ss->nrows++;
}

static void fd_row(shard_snap *ss, bool client, const void *obj)
{
    char fd[16], port[16], cancel[32], link[16];
    const char *task, *user, *db, *addr;
    const pvars *vars;
    if (client) {
        const pclient *c = obj;
        if (!c->conn)
            return;
        snprintf(fd, sizeof(fd), "%d", keel_conn_fd(c->conn));
        task = "client";
        user = c->user ? c->user : "";
        db = c->dbname ? c->dbname : "";
        addr = c->addr;
        snprintf(port, sizeof(port), "%u", c->port);
        snprintf(cancel, sizeof(cancel), "%llu",
                 (unsigned long long)c->cancel_pid << 32 | c->cancel_key);
        snprintf(link, sizeof(link), "%d",
                 c->server && c->server->conn ? keel_conn_fd(c->server->conn) : 0);
        vars = &c->vars;
    } else {
        const pserver *s = obj;
        if (!s->conn)
            return;
        snprintf(fd, sizeof(fd), "%d", keel_conn_fd(s->conn));
        task = "server";
        user = s->pool->user;
        db = s->pool->db->name;
        addr = s->addr;
        snprintf(port, sizeof(port), "%u", s->port);
        snprintf(cancel, sizeof(cancel), "%llu", (unsigned long long)s->be_pid << 32 | s->be_key);
        snprintf(link, sizeof(link), "%d",
                 s->client && s->client->conn ? keel_conn_fd(s->client->conn) : 0);
        vars = &s->vars;
    }
#define V(i) (vars->v[i] ? vars->v[i]->s : "")
    const char *vals[15] = {fd,
                            task,
                            user,
                            db,
                            addr,
                            port,
                            cancel,
                            link,
                            V(VAR_ENCODING),
                            V(VAR_SCS),
                            V(VAR_DATESTYLE),
                            V(VAR_TIMEZONE),
                            "",
                            "",
                            ""};
#undef V
    pgbuf_data_row(&ss->rows, vals, 15);
    ss->nrows++;
}

static keel_future *collect(void *arg)
{
    snapshot *sn = arg;
    pool_shard *sh = shard_here();
    shard_snap *ss = &sn->shards[sh->id];
    uint64_t now = keel_now_ns();
    for (pclient *c = sh->clients; c; c = c->next) {
        if (c->admin)
            ss->admin_clients++;
        else if (c->state == CL_LOGIN)
            ss->logins++;
        else
            ss->clients++;
    }
    ss->servers = sh->n_servers;
    ss->admin_queries = sh->admin_queries;
    switch (sn->what) {
    case SNAP_POOLS: {
        int n = 0;
        for (ppool *p = sh->pools; p; p = p->next)
            n++;
        ss->pools = calloc((size_t)n + 1, sizeof(*ss->pools));
        if (!ss->pools)
            break;
        for (ppool *p = sh->pools; p; p = p->next) {
            pool_snap *ps = &ss->pools[ss->npools++];
            snprintf(ps->db, sizeof(ps->db), "%s", p->db->name);
            snprintf(ps->user, sizeof(ps->user), "%s", p->user);
            ps->cl_waiting = p->n_waiting;
            ps->cl_active = p->n_clients_active - p->n_waiting;
            ps->sv_active = p->n_active;
            ps->sv_idle = p->n_idle;
            ps->sv_used = p->n_used;
            ps->sv_login = p->n_login;
            ps->sv_tested = p->n_tested;
            ps->oldest_wait_ns = p->wait_head ? now - p->wait_head->wait_start_ns : 0;
            ps->mode = p->mode;
            ps->stats = p->stats;
            ps->delta = p->avg;
        }
        break;
    }
    case SNAP_CLIENTS:
        for (pclient *c = sh->clients; c; c = c->next)
            if (c->conn && c->state != CL_LOGIN)
                conn_row(ss, true, c, false);
        break;
    case SNAP_SERVERS:
        for (pserver *s = sh->servers; s; s = s->all_next)
            if (s->state != SV_CLOSED)
                conn_row(ss, false, s, false);
        break;
    case SNAP_SOCKETS:
    case SNAP_ACTIVE_SOCKETS:
        for (pserver *s = sh->servers; s; s = s->all_next)
            if (s->state != SV_CLOSED &&
                (sn->what == SNAP_SOCKETS || s->state == SV_ACTIVE || s->state == SV_LOGIN))
                conn_row(ss, false, s, true);
        for (pclient *c = sh->clients; c; c = c->next)
            if (c->conn && (sn->what == SNAP_SOCKETS || c->server || c->admin))
                conn_row(ss, true, c, true);
        break;
    case SNAP_FDS:
        for (pserver *s = sh->servers; s; s = s->all_next)
            if (s->state != SV_CLOSED)
                fd_row(ss, false, s);
        for (pclient *c = sh->clients; c; c = c->next)
            if (!c->admin)
                fd_row(ss, true, c);
        break;
    case SNAP_COUNTS:
        for (pserver *s = sh->servers; s; s = s->all_next)
            if (s->state != SV_CLOSED && s->close_after &&
                (!sn->arg[0] || !strcmp(sn->arg, s->pool->db->name)))
                ss->close_pending++;
        break;
    }
    return keel_make_ready(0);
}

static snapshot *snap_new(int what, const char *arg)
{
    snapshot *sn = calloc(1, sizeof(*sn));
    if (!sn)
        return NULL;
    sn->what = what;
    sn->n = keel_shard_count();
    sn->shards = calloc(sn->n, sizeof(*sn->shards));
    if (!sn->shards) {
        free(sn);
        return NULL;
    }
    snprintf(sn->arg, sizeof(sn->arg), "%s", arg ? arg : "");
    return sn;
}

static void snap_free(snapshot *sn)
{
    for (unsigned i = 0; i < sn->n; i++) {
        free(sn->shards[i].pools);
        pgbuf_free(&sn->shards[i].rows);
    }
    free(sn->shards);
    free(sn);
}

/* Merges pool snapshots of all shards by (db, user). */
static pool_snap *merged_pools(snapshot *sn, int *count)
{
    int total = 0;
    for (unsigned i = 0; i < sn->n; i++)
        total += sn->shards[i].npools;
    pool_snap *out = calloc((size_t)total + 1, sizeof(*out));
    int n = 0;
    if (!out) {
        *count = 0;
        return NULL;
    }
    for (unsigned i = 0; i < sn->n; i++) {
        for (int j = 0; j < sn->shards[i].npools; j++) {
            pool_snap *ps = &sn->shards[i].pools[j];
            pool_snap *m = NULL;
            for (int k = 0; k < n; k++)
                if (!strcmp(out[k].db, ps->db) && !strcmp(out[k].user, ps->user))
                    m = &out[k];
            if (!m) {
                m = &out[n++];
                *m = *ps;
                continue;
            }
            m->cl_active += ps->cl_active;
            m->cl_waiting += ps->cl_waiting;
            m->sv_active += ps->sv_active;
            m->sv_idle += ps->sv_idle;
            m->sv_used += ps->sv_used;
            m->sv_tested += ps->sv_tested;
            m->sv_login += ps->sv_login;
            if (ps->oldest_wait_ns > m->oldest_wait_ns)
                m->oldest_wait_ns = ps->oldest_wait_ns;
#define ADD(f)                                                                                     \
    m->stats.f += ps->stats.f;                                                                     \
    m->delta.f += ps->delta.f
            ADD(xact_count);
            ADD(query_count);
            ADD(bytes_in);
            ADD(bytes_out);
            ADD(xact_us);
            ADD(query_us);
            ADD(wait_us);
            ADD(server_assignments);
#undef ADD
        }
    }
    *count = n;
    return out;
}

static int cmp_pool(const void *a, const void *b)
{
    const pool_snap *x = a, *y = b;
    int c = strcmp(x->db, y->db);
    return c ? c : strcmp(x->user, y->user);
}

/* ---- the SHOW commands -------------------------------------------------------------------- */

static const char *const pools_cols[] = {"database",
                                         "user",
                                         "cl_active",
                                         "cl_waiting",
                                         "cl_active_cancel_req",
                                         "cl_waiting_cancel_req",
                                         "sv_active",
                                         "sv_active_cancel",
                                         "sv_being_canceled",
                                         "sv_idle",
                                         "sv_used",
                                         "sv_tested",
                                         "sv_login",
                                         "maxwait",
                                         "maxwait_us",
                                         "pool_mode"};

static void show_pools(snapshot *sn, pgbuf *out)
{
    uint32_t ty[16];
    table t;
    table_begin(&t, out, pools_cols, types_of("ssiiiiiiiiiiiiis", ty), 16);
    int n;
    pool_snap *ps = merged_pools(sn, &n);
    if (ps)
        qsort(ps, (size_t)n, sizeof(*ps), cmp_pool);
    long long admin = 0;
    for (unsigned i = 0; i < sn->n; i++)
        admin += sn->shards[i].admin_clients;
    bool admin_done = false;
    for (int i = 0; i <= n; i++) {
        char b[16][24];
        if (!admin_done && (i == n || strcmp(ps[i].db, "pgbouncer") > 0)) {
            const char *v[16] = {"pgbouncer", "pgbouncer", fmt_ll(b[0], admin),
                                 "0",         "0",         "0",
                                 "0",         "0",         "0",
                                 "0",         "0",         "0",
                                 "0",         "0",         "0",
                                 "statement"};
            table_row(&t, v);
            admin_done = true;
        }
        if (i == n)
            break;
        pool_snap *p = &ps[i];
        const char *v[16] = {p->db,
                             p->user,
                             fmt_ll(b[0], p->cl_active),
                             fmt_ll(b[1], p->cl_waiting),
                             "0",
                             "0",
                             fmt_ll(b[2], p->sv_active),
                             "0",
                             "0",
                             fmt_ll(b[3], p->sv_idle),
                             fmt_ll(b[4], p->sv_used),
                             fmt_ll(b[5], p->sv_tested),
                             fmt_ll(b[6], p->sv_login),
                             fmt_ll(b[7], (long long)(p->oldest_wait_ns / 1000000000ull)),
                             fmt_ll(b[8], (long long)(p->oldest_wait_ns / 1000 % 1000000)),
                             mode_name(p->mode)};
        table_row(&t, v);
    }
    free(ps);
    table_end(&t, "SHOW");
}

/* Per database: totals, and averages over the last stats_period. */
typedef struct db_stats {
    char db[128];
    pstats total, delta;
} db_stats;

static db_stats *stats_by_db(snapshot *sn, int *count)
{
    int n;
    pool_snap *ps = merged_pools(sn, &n);
    db_stats *out = calloc((size_t)n + 2, sizeof(*out));
    int m = 0;
    if (!out) {
        free(ps);
        *count = 0;
        return NULL;
    }
    for (int i = 0; i < n; i++) {
        db_stats *d = NULL;
        for (int k = 0; k < m; k++)
            if (!strcmp(out[k].db, ps[i].db))
                d = &out[k];
        if (!d) {
            d = &out[m++];
            snprintf(d->db, sizeof(d->db), "%s", ps[i].db);
        }
#define ADD(f)                                                                                     \
    d->total.f += ps[i].stats.f;                                                                   \
    d->delta.f += ps[i].delta.f
        ADD(xact_count);
        ADD(query_count);
        ADD(bytes_in);
        ADD(bytes_out);
        ADD(xact_us);
        ADD(query_us);
        ADD(wait_us);
        ADD(server_assignments);
#undef ADD
    }
    /* The admin console counts as database "pgbouncer", as in PgBouncer. */
    db_stats *a = &out[m++];
    snprintf(a->db, sizeof(a->db), "pgbouncer");
    for (unsigned i = 0; i < sn->n; i++)
        a->total.xact_count += (uint64_t)sn->shards[i].admin_queries;
    a->total.query_count = a->total.xact_count;
    free(ps);
    int (*cmp)(const void *, const void *) = (int (*)(const void *, const void *))strcmp;
    qsort(out, (size_t)m, sizeof(*out), cmp);
    *count = m;
    return out;
}

static long long per_sec(uint64_t v)
{
    double period = pool_cfg->stats_period > 0 ? pool_cfg->stats_period : 60;
    return (long long)((double)v / period);
}

static long long ratio(uint64_t a, uint64_t b)
{
    return b ? (long long)(a / b) : 0;
}

static void show_stats(snapshot *sn, pgbuf *out, int kind /* 0 STATS, 1 TOTALS, 2 AVERAGES */)
{
    static const char *const full[] = {"database",         "total_xact_count", "total_query_count",
                                       "total_received",   "total_sent",       "total_xact_time",
                                       "total_query_time", "total_wait_time",  "avg_xact_count",
                                       "avg_query_count",  "avg_recv",         "avg_sent",
                                       "avg_xact_time",    "avg_query_time",   "avg_wait_time"};
    static const char *const part[] = {"database",   "xact_count", "query_count", "bytes_received",
                                       "bytes_sent", "xact_time",  "query_time",  "wait_time"};
    uint32_t ty[15];
    table t;
    if (kind == 0)
        table_begin(&t, out, full, types_of("siiiiiiiiiiiiii", ty), 15);
    else
        table_begin(&t, out, part, types_of("siiiiiii", ty), 8);
    int n;
    db_stats *ds = stats_by_db(sn, &n);
    for (int i = 0; i < n; i++) {
        pstats *T = &ds[i].total, *D = &ds[i].delta;
        char b[15][24];
        long long tot[7] = {(long long)T->xact_count, (long long)T->query_count,
                            (long long)T->bytes_in,   (long long)T->bytes_out,
                            (long long)T->xact_us,    (long long)T->query_us,
                            (long long)T->wait_us};
        long long avg[7] = {per_sec(D->xact_count),
                            per_sec(D->query_count),
                            per_sec(D->bytes_in),
                            per_sec(D->bytes_out),
                            ratio(D->xact_us, D->xact_count),
                            ratio(D->query_us, D->query_count),
                            ratio(D->wait_us, D->server_assignments)};
        const char *v[15];
        v[0] = ds[i].db;
        if (kind == 0) {
            for (int k = 0; k < 7; k++) {
                v[1 + k] = fmt_ll(b[k], tot[k]);
                v[8 + k] = fmt_ll(b[7 + k], avg[k]);
            }
        } else {
            for (int k = 0; k < 7; k++)
                v[1 + k] = fmt_ll(b[k], kind == 1 ? tot[k] : avg[k]);
        }
        table_row(&t, v);
    }
    free(ds);
    table_end(&t, "SHOW");
}

static void show_totals(snapshot *sn, pgbuf *out)
{
    static const char *const cols[] = {"name", "value"};
    uint32_t ty[2];
    table t;
    table_begin(&t, out, cols, types_of("si", ty), 2);
    int n;
    db_stats *ds = stats_by_db(sn, &n);
    pstats T = {0}, D = {0};
    for (int i = 0; i < n; i++) {
#define ADD(f)                                                                                     \
    T.f += ds[i].total.f;                                                                          \
    D.f += ds[i].delta.f
        ADD(xact_count);
        ADD(query_count);
        ADD(bytes_in);
        ADD(bytes_out);
        ADD(xact_us);
        ADD(query_us);
        ADD(wait_us);
        ADD(server_assignments);
#undef ADD
    }
    free(ds);
    struct {
        const char *name;
        long long v;
    } rows[] = {
        {"total_xact_count", (long long)T.xact_count},
        {"total_query_count", (long long)T.query_count},
        {"total_client_bytes", (long long)T.bytes_in},
        {"total_server_bytes", (long long)T.bytes_out},
        {"total_xact_time", (long long)T.xact_us},
        {"total_query_time", (long long)T.query_us},
        {"total_wait_time", (long long)T.wait_us},
        {"avg_xact_count", per_sec(D.xact_count)},
        {"avg_query_count", per_sec(D.query_count)},
        {"avg_client_bytes", per_sec(D.bytes_in)},
        {"avg_server_bytes", per_sec(D.bytes_out)},
        {"avg_xact_time", ratio(D.xact_us, D.xact_count)},
        {"avg_query_time", ratio(D.query_us, D.query_count)},
        {"avg_wait_time", ratio(D.wait_us, D.server_assignments)},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        char b[24];
        const char *v[2] = {rows[i].name, fmt_ll(b, rows[i].v)};
        table_row(&t, v);
    }
    table_end(&t, "SHOW");
}

static const char *const conn_cols[] = {
    "type",       "user",       "database",         "state",        "addr",
    "port",       "local_addr", "local_port",       "connect_time", "request_time",
    "wait",       "wait_us",    "close_needed",     "ptr",          "link",
    "remote_pid", "tls",        "application_name", "recv_pos",     "pkt_pos",
    "pkt_remain", "send_pos",   "send_remain",      "pkt_avail",    "send_avail"};

static void show_rows(snapshot *sn, pgbuf *out, int what)
{
    uint32_t ty[25];
    table t;
    if (what == SNAP_FDS) {
        static const char *const cols[] = {
            "fd",        "task",     "user",     "database",         "addr",
            "port",      "cancel",   "link",     "client_encoding",  "std_strings",
            "datestyle", "timezone", "password", "scram_client_key", "scram_server_key"};
        table_begin(&t, out, cols, types_of("issssiiisssssss", ty), 15);
    } else {
        int n = what == SNAP_SOCKETS || what == SNAP_ACTIVE_SOCKETS ? 25 : 18;
        table_begin(&t, out, conn_cols, types_of("sssssisissiiissisiiiiiiii", ty), n);
    }
    for (unsigned i = 0; i < sn->n; i++)
        pgbuf_put(out, sn->shards[i].rows.p, sn->shards[i].rows.len);
    table_end(&t, "SHOW");
}

static void show_databases(pgbuf *out)
{
    static const char *const cols[] = {"name",
                                       "host",
                                       "port",
                                       "database",
                                       "force_user",
                                       "pool_size",
                                       "min_pool_size",
                                       "reserve_pool",
                                       "pool_mode",
                                       "max_connections",
                                       "current_connections",
                                       "paused",
                                       "disabled"};
    uint32_t ty[13];
    table t;
    table_begin(&t, out, cols, types_of("ssissiiisiiii", ty), 13);
    const pool_config *cfg = pool_cfg;
    /* Sorted by name, the admin database among them, as PgBouncer lists them. */
    size_t n = cfg->ndbs;
    const pool_config_db **dbs = calloc(n + 1, sizeof(*dbs));
    if (!dbs)
        return;
    for (size_t i = 0; i < n; i++)
        dbs[i] = &cfg->dbs[i];
    for (size_t i = 0; i + 1 < n; i++)
        for (size_t j = i + 1; j < n; j++)
            if (strcmp(dbs[i]->name, dbs[j]->name) > 0) {
                const pool_config_db *x = dbs[i];
                dbs[i] = dbs[j];
                dbs[j] = x;
            }
    bool admin_done = false;
    for (size_t i = 0; i <= n; i++) {
        char b[8][24];
        if (!admin_done && (i == n || strcmp(dbs[i]->name, "pgbouncer") > 0)) {
            const char *v[13] = {"pgbouncer", "",          fmt_ll(b[0], cfg->listen_port),
                                 "pgbouncer", "pgbouncer", "2",
                                 "0",         "0",         "statement",
                                 "0",         "0",         "0",
                                 "0"};
            table_row(&t, v);
            admin_done = true;
        }
        if (i == n)
            break;
        const pool_config_db *d = dbs[i];
        if (!strcmp(d->name, "*"))
            continue;
        pool_limit *lim = pool_limit_get(&pool_db_limits, d->name);
        int size = d->pool_size >= 0 ? d->pool_size : cfg->default_pool_size;
        int minp = d->min_pool_size >= 0 ? d->min_pool_size : cfg->min_pool_size;
        int res = d->reserve_pool >= 0 ? d->reserve_pool : cfg->reserve_pool_size;
        int maxc = d->max_db_connections > 0 ? d->max_db_connections : cfg->max_db_connections;
        const char *v[13] = {d->name,
                             d->host ? d->host : "",
                             fmt_ll(b[0], d->port > 0 ? d->port : 5432),
                             d->dbname ? d->dbname : d->name,
                             d->user ? d->user : "",
                             fmt_ll(b[1], size),
                             fmt_ll(b[2], minp),
                             fmt_ll(b[3], res),
                             d->pool_mode == POOL_MODE_UNSET ? "" : mode_name(d->pool_mode),
                             fmt_ll(b[4], maxc),
                             fmt_ll(b[5], lim ? atomic_load(&lim->servers) : 0),
                             fmt_ll(b[6], lim ? atomic_load(&lim->paused) : 0),
                             fmt_ll(b[7], lim ? atomic_load(&lim->disabled) : 0)};
        table_row(&t, v);
    }
    free(dbs);
    table_end(&t, "SHOW");
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void show_users(pgbuf *out)
{
    static const char *const cols[] = {"name", "pool_mode"};
    uint32_t ty[2];
    table t;
    table_begin(&t, out, cols, types_of("ss", ty), 2);
    const pool_config *cfg = pool_cfg;
    size_t cap = cfg->nusers + (pool_users ? pool_users->nentries : 0) + 1, n = 0;
    const char **names = calloc(cap, sizeof(*names));
    if (!names)
        return;
    names[n++] = "pgbouncer";
    if (pool_users)
        for (size_t i = 0; i < pool_users->nentries; i++)
            names[n++] = pool_users->entries[i].user;
    for (size_t i = 0; i < cfg->nusers; i++)
        names[n++] = cfg->users[i].name;
    qsort(names, n, sizeof(*names), cmp_str);
    for (size_t i = 0; i < n; i++) {
        if (i && !strcmp(names[i], names[i - 1]))
            continue;
        const char *mode = "";
        for (size_t k = 0; k < cfg->nusers; k++)
            if (!strcmp(cfg->users[k].name, names[i]) && cfg->users[k].pool_mode != POOL_MODE_UNSET)
                mode = mode_name(cfg->users[k].pool_mode);
        const char *v[2] = {names[i], mode};
        table_row(&t, v);
    }
    free(names);
    table_end(&t, "SHOW");
}

/* ---- SHOW CONFIG and SET -------------------------------------------------------------- */

typedef enum { C_STR, C_INT, C_DBL, C_BOOL, C_MODE, C_FIXED } ctype;

typedef struct config_key {
    const char *name;
    ctype type;
    size_t off;      /* into pool_config, for the kinds we hold */
    const char *def; /* PgBouncer's default, as SHOW CONFIG prints it */
    bool changeable;
} config_key;

#define K(n, t, d, ch)                                                                             \
    {                                                                                              \
#n, t, offsetof(pool_config, n), d, ch                                                     \
    }
#define F(n, d, ch)                                                                                \
    {                                                                                              \
        n, C_FIXED, 0, d, ch                                                                       \
    }
static const config_key config_keys[] = {
    K(admin_users, C_STR, "", true),
    F("application_name_add_host", "0", true),
    K(auth_file, C_STR, "", true),
    F("auth_hba_file", "", true),
    K(auth_query, C_STR, "SELECT usename, passwd FROM pg_shadow WHERE usename=$1", true),
    K(auth_type, C_STR, "md5", true),
    K(auth_user, C_STR, "", true),
    F("autodb_idle_timeout", "3600", true),
    K(client_idle_timeout, C_DBL, "0", true),
    K(client_login_timeout, C_DBL, "60", true),
    F("client_tls_ca_file", "", true),
    F("client_tls_cert_file", "", true),
    F("client_tls_ciphers", "fast", true),
    F("client_tls_dheparams", "auto", true),
    F("client_tls_ecdhcurve", "auto", true),
    F("client_tls_key_file", "", true),
    F("client_tls_protocols", "secure", true),
    F("client_tls_sslmode", "disable", true),
    F("conffile", "", true),
    K(default_pool_size, C_INT, "20", true),
    F("disable_pqexec", "0", false),
    F("dns_max_ttl", "15", true),
    F("dns_nxdomain_ttl", "15", true),
    F("dns_zone_check_period", "0", true),
    K(idle_transaction_timeout, C_DBL, "0", true),
    K(ignore_startup_parameters, C_STR, "", true),
    F("job_name", "pgbouncer", false),
    K(listen_addr, C_STR, "", false),
    F("listen_backlog", "128", false),
    K(listen_port, C_INT, "6432", false),
    K(log_connections, C_BOOL, "1", true),
    K(log_disconnections, C_BOOL, "1", true),
    F("log_pooler_errors", "1", true),
    F("log_stats", "1", true),
    K(logfile, C_STR, "", true),
    K(max_client_conn, C_INT, "100", true),
    K(max_db_connections, C_INT, "0", true),
    F("max_packet_size", "2147483647", true),
    K(max_prepared_statements, C_INT, "200", true),
    K(max_user_connections, C_INT, "0", true),
    K(min_pool_size, C_INT, "0", true),
    K(pidfile, C_STR, "", false),
    F("pkt_buf", "4096", false),
    K(pool_mode, C_MODE, "session", true),
    K(query_timeout, C_DBL, "0", true),
    K(query_wait_timeout, C_DBL, "120", true),
    K(reserve_pool_size, C_INT, "0", true),
    K(reserve_pool_timeout, C_DBL, "5", true),
    F("resolv_conf", "", false),
    F("sbuf_loopcnt", "5", true),
    K(server_check_delay, C_DBL, "30", true),
    K(server_check_query, C_STR, "select 1", true),
    K(server_connect_timeout, C_DBL, "15", true),
    F("server_fast_close", "0", true),
    K(server_idle_timeout, C_DBL, "600", true),
    K(server_lifetime, C_DBL, "3600", true),
    K(server_login_retry, C_DBL, "15", true),
    K(server_reset_query, C_STR, "DISCARD ALL", true),
    K(server_reset_query_always, C_BOOL, "0", true),
    F("server_round_robin", "0", true),
    F("server_tls_ca_file", "", true),
    F("server_tls_cert_file", "", true),
    F("server_tls_ciphers", "fast", true),
    F("server_tls_key_file", "", true),
    F("server_tls_protocols", "secure", true),
    F("server_tls_sslmode", "disable", true),
    F("so_reuseport", "0", false),
    K(stats_period, C_DBL, "60", true),
    K(stats_users, C_STR, "", true),
    F("suspend_timeout", "10", true),
    F("syslog", "0", true),
    F("syslog_facility", "daemon", true),
    F("syslog_ident", "pgbouncer", true),
    F("tcp_defer_accept", "1", true),
    F("tcp_keepalive", "1", true),
    F("tcp_keepcnt", "0", true),
    F("tcp_keepidle", "0", true),
    F("tcp_keepintvl", "0", true),
    F("tcp_socket_buffer", "0", true),
    F("tcp_user_timeout", "0", true),
    K(unix_socket_dir, C_STR, "/tmp", false),
    F("unix_socket_group", "", false),
    F("unix_socket_mode", "0777", false),
    F("user", "", false),
    F("verbose", "", true),
};
#undef K
#undef F

static void config_value(const config_key *k, char *b, size_t n)
{
    const char *base = (const char *)pool_cfg;
    switch (k->type) {
    case C_STR: {
        const char *s = *(char *const *)(base + k->off);
        snprintf(b, n, "%s", s ? s : "");
        break;
    }
    case C_INT: snprintf(b, n, "%d", *(const int *)(base + k->off)); break;
    case C_DBL: snprintf(b, n, "%g", *(const double *)(base + k->off)); break;
    case C_BOOL: snprintf(b, n, "%d", *(const bool *)(base + k->off) ? 1 : 0); break;
    case C_MODE: snprintf(b, n, "%s", mode_name(*(const pool_mode *)(base + k->off))); break;
    case C_FIXED:
        if (!strcmp(k->name, "conffile"))
            snprintf(b, n, "%s", pool_cfg_path ? pool_cfg_path : "");
        else if (!strcmp(k->name, "unix_socket_mode"))
            snprintf(b, n, "511");
        else if (!strcmp(k->name, "verbose"))
            snprintf(b, n, "%d", pool_verbose ? 1 : 0);
        else
            snprintf(b, n, "%s", k->def);
        break;
    }
}

static void show_config(pgbuf *out)
{
    static const char *const cols[] = {"key", "value", "default", "changeable"};
    uint32_t ty[4];
    table t;
    table_begin(&t, out, cols, types_of("ssss", ty), 4);
    for (size_t i = 0; i < sizeof(config_keys) / sizeof(config_keys[0]); i++) {
        char b[1024];
        config_value(&config_keys[i], b, sizeof(b));
        const char *v[4] = {config_keys[i].name, b, config_keys[i].def,
                            config_keys[i].changeable ? "yes" : "no"};
        table_row(&t, v);
    }
    table_end(&t, "SHOW");
}

static void show_simple(pgbuf *out, const char *const *cols, int ncols, const char *spec,
                        const char *const *vals, int nrows)
{
    uint32_t ty[8];
    table t;
    table_begin(&t, out, cols, types_of(spec, ty), ncols);
    for (int i = 0; i < nrows; i++)
        table_row(&t, vals + i * ncols);
    table_end(&t, "SHOW");
}

static void show_lists(snapshot *sn, pgbuf *out)
{
    long long clients = 0, servers = 0, logins = 0, pools = 0;
    for (unsigned i = 0; i < sn->n; i++) {
        clients += sn->shards[i].clients + sn->shards[i].admin_clients;
        servers += sn->shards[i].servers;
        logins += sn->shards[i].logins;
        pools += sn->shards[i].npools;
    }
    int npools;
    pool_snap *ps = merged_pools(sn, &npools);
    free(ps);
    size_t users = 1 + (pool_users ? pool_users->nentries : 0);
    char b[12][24];
    const char *v[] = {"databases",     fmt_ll(b[0], (long long)pool_cfg->ndbs + 1),
                       "users",         fmt_ll(b[1], (long long)users),
                       "pools",         fmt_ll(b[2], npools + 1),
                       "free_clients",  "0",
                       "used_clients",  fmt_ll(b[3], clients),
                       "login_clients", fmt_ll(b[4], logins),
                       "free_servers",  "0",
                       "used_servers",  fmt_ll(b[5], servers),
                       "dns_names",     "0",
                       "dns_zones",     "0",
                       "dns_queries",   "0",
                       "dns_pending",   "0"};
    static const char *const cols[] = {"list", "items"};
    (void)pools;
    show_simple(out, cols, 2, "si", v, 12);
}

static void show_mem(snapshot *sn, pgbuf *out)
{
    long long clients = 0, servers = 0;
    int npools;
    pool_snap *ps = merged_pools(sn, &npools);
    free(ps);
    for (unsigned i = 0; i < sn->n; i++) {
        clients += sn->shards[i].clients + sn->shards[i].admin_clients + sn->shards[i].logins;
        servers += sn->shards[i].servers;
    }
    struct {
        const char *name;
        size_t size;
        long long used;
    } rows[] = {
        {"user_cache", sizeof(pool_limit), (long long)(pool_users ? pool_users->nentries : 0)},
        {"db_cache", sizeof(pdb), (long long)pool_cfg->ndbs},
        {"pool_cache", sizeof(ppool), npools},
        {"server_cache", sizeof(pserver), servers},
        {"client_cache", sizeof(pclient), clients},
        {"iobuf_cache", 0, 0},
        {"var_list", sizeof(pstr), 0},
    };
    static const char *const cols[] = {"name", "size", "used", "free", "memtotal"};
    uint32_t ty[5];
    table t;
    table_begin(&t, out, cols, types_of("siiii", ty), 5);
    /* keel's own row: the heap the shards hold now (jemalloc's counters). */
    long long heap = 0;
    for (unsigned i = 0; i < keel_shard_count(); i++) {
        keel_shard_stats st;
        if (keel_shard_stats_get(i, &st) == 0)
            heap += (long long)(st.bytes_allocated - st.bytes_deallocated);
    }
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        char b[4][24];
        const char *v[5] = {rows[i].name, fmt_ll(b[0], (long long)rows[i].size),
                            fmt_ll(b[1], rows[i].used), "0",
                            fmt_ll(b[2], (long long)rows[i].size * rows[i].used)};
        table_row(&t, v);
    }
    char hb[24];
    const char *hv[5] = {"keel_shard_heap", "1", fmt_ll(hb, heap), "0", hb};
    table_row(&t, hv);
    table_end(&t, "SHOW");
}

/* ---- commands that act ---------------------------------------------------------------- */

typedef struct act {
    int what;
    char db[128];
    char kill_ptr[32];
} act;

enum { ACT_RESUME, ACT_KILL, ACT_RECONNECT, ACT_KILL_CLIENT, ACT_PAUSE };

static bool db_match(const act *a, const char *db)
{
    return !a->db[0] || !strcmp(a->db, db);
}

static keel_future *act_on_shard(void *arg)
{
    act *a = arg;
    pool_shard *sh = shard_here();
    switch (a->what) {
    case ACT_RESUME:
        for (ppool *p = sh->pools; p; p = p->next)
            if (p->wait_head)
                pool_kick_waiters(p);
        break;
    case ACT_PAUSE: /* idle servers go now; active ones when released */
        for (ppool *p = sh->pools; p; p = p->next)
            if (db_match(a, p->db->name))
                while (p->idle)
                    server_close(p->idle, "database paused");
        break;
    case ACT_KILL:
        for (pclient *c = sh->clients, *n; c; c = n) {
            n = c->next;
            if (!c->admin && c->conn && c->dbname && db_match(a, c->dbname))
                client_kill(c, "08P01", "database removed");
        }
        for (pserver *s = sh->servers, *next; s; s = next) {
            next = s->all_next; /* s may be freed by its close */
            if (s->state != SV_CLOSED && db_match(a, s->pool->db->name))
                server_close(s, "database killed");
        }
        break;
    case ACT_RECONNECT:
        for (pserver *s = sh->servers; s; s = s->all_next)
            if (s->state != SV_CLOSED && db_match(a, s->pool->db->name))
                s->close_after = true;
        for (ppool *p = sh->pools; p; p = p->next)
            if (db_match(a, p->db->name))
                while (p->idle)
                    server_close(p->idle, "reconnect requested");
        break;
    case ACT_KILL_CLIENT:
        for (pclient *c = sh->clients; c; c = c->next) {
            char ptr[32];
            snprintf(ptr, sizeof(ptr), "%p", (void *)c);
            if (c->conn && !strcmp(ptr, a->kill_ptr)) {
                client_kill(c, "08P01", "client killed by admin");
                break;
            }
        }
        break;
    }
    return keel_make_ready(0);
}

static void free_waiter(void *ctx, keel_result r)
{
    (void)r;
    free(ctx);
}

static keel_future *act_all(int what, const char *db)
{
    act *a = calloc(1, sizeof(*a));
    if (!a)
        return keel_make_error(-ENOMEM);
    a->what = what;
    if (db && what == ACT_KILL_CLIENT)
        snprintf(a->kill_ptr, sizeof(a->kill_ptr), "%s", db);
    else if (db)
        snprintf(a->db, sizeof(a->db), "%s", db);
    keel_future *f = keel_invoke_on_all(act_on_shard, a);
    return keel_finally(f, free_waiter, a);
}

static void set_paused(const char *db, bool on)
{
    if (!db) {
        atomic_store(&pool_paused_all, on);
        for (pool_limit *l = pool_db_limits; l; l = l->next)
            atomic_store(&l->paused, on);
        return;
    }
    pool_limit *l = pool_limit_get(&pool_db_limits, db);
    if (l)
        atomic_store(&l->paused, on);
}

/* Servers of db (NULL: all) still open: PAUSE waits for 0. */
static int servers_open(const char *db)
{
    int n = 0;
    for (pool_limit *l = pool_db_limits; l; l = l->next)
        if (!db || !strcmp(db, l->name))
            n += atomic_load(&l->servers);
    return n;
}

typedef struct waiter {
    char db[128];
    bool all;
    int kind; /* 0: servers closed (PAUSE), 1: close_needed servers gone (WAIT_CLOSE) */
    snapshot *sn;
} waiter;

static keel_future *wait_step(void *arg);

static keel_future *wait_again(void *ctx, keel_result r)
{
    (void)ctx;
    (void)r;
    return keel_make_ready(KEEL_CONTINUE);
}

static keel_future *counted(void *ctx, keel_result r)
{
    waiter *w = ctx;
    (void)r;
    long long pending = 0;
    for (unsigned i = 0; i < w->sn->n; i++)
        pending += w->sn->shards[i].close_pending;
    snap_free(w->sn);
    w->sn = NULL;
    if (!pending || keel_stopping())
        return keel_make_ready(KEEL_STOP);
    return keel_then(keel_sleep(KEEL_MS(20)), wait_again, w);
}

static keel_future *wait_step(void *arg)
{
    waiter *w = arg;
    if (keel_stopping())
        return keel_make_ready(KEEL_STOP);
    if (w->kind == 0) {
        if (servers_open(w->all ? NULL : w->db) == 0)
            return keel_make_ready(KEEL_STOP);
        return keel_then(keel_sleep(KEEL_MS(20)), wait_again, w);
    }
    w->sn = snap_new(SNAP_COUNTS, w->all ? NULL : w->db);
    if (!w->sn)
        return keel_make_ready(KEEL_STOP);
    return keel_then_wrapped(keel_invoke_on_all(collect, w->sn), counted, w);
}

static keel_future *wait_for(int kind, const char *db)
{
    waiter *w = calloc(1, sizeof(*w));
    if (!w)
        return keel_make_error(-ENOMEM);
    w->kind = kind;
    w->all = !db;
    if (db)
        snprintf(w->db, sizeof(w->db), "%s", db);
    return keel_finally(keel_repeat(wait_step, w), free_waiter, w);
}

void admin_pause_all(bool pause)
{
    set_paused(NULL, pause);
    keel_detach(act_all(pause ? ACT_PAUSE : ACT_RESUME, NULL));
}

static keel_future *stop_now(void *ctx, keel_result r)
{
    (void)ctx;
    (void)r;
    keel_stop();
    return keel_make_ready(0);
}

void admin_shutdown_when_idle(void)
{
    admin_pause_all(true);
    keel_detach(keel_then_wrapped(wait_for(0, NULL), stop_now, NULL));
}

/* ---- RELOAD and SET -------------------------------------------------------------------- */

/* Configurations replaced by RELOAD or SET stay allocated until exit:
 * connections started under one may still read it (a connect in flight,
 * a login), and a reload is rare enough that keeping them costs little. */
static pool_config *retired_cfgs[64];
static pool_auth_file *retired_users[64];
static int n_retired_cfgs, n_retired_users;
static char *set_overrides; /* "key = value\n" lines from SET, applied over the file */

typedef struct reload_job {
    char *path;
    char *overrides;
    pool_config *cfg;
    pool_auth_file *users;
    char errors[1024];
    size_t elen;
} reload_job;

static void job_log(void *arg, bool error, const char *msg)
{
    reload_job *j = arg;
    pool_log(error ? "ERROR" : "WARNING", "%s", msg);
    if (error && j->elen < sizeof(j->errors) - 2) {
        int n = snprintf(j->errors + j->elen, sizeof(j->errors) - j->elen, "%s%s",
                         j->elen ? "; " : "", msg);
        if (n > 0)
            j->elen += (size_t)n;
    }
}

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    size_t cap = 4096, len = 0;
    char *b = malloc(cap);
    for (size_t n; b && (n = fread(b + len, 1, cap - len - 1, f)) > 0;) {
        len += n;
        if (cap - len < 2) {
            char *nb = realloc(b, cap * 2);
            if (!nb) {
                free(b);
                b = NULL;
                break;
            }
            b = nb;
            cap *= 2;
        }
    }
    fclose(f);
    if (b)
        b[len] = 0;
    return b;
}

/* In the blocking pool: file reads and parsing. */
static keel_result reload_fn(void *arg)
{
    reload_job *j = arg;
    char *text = read_file(j->path);
    if (!text) {
        snprintf(j->errors, sizeof(j->errors), "cannot read %s", j->path);
        return keel_ok(0);
    }
    if (j->overrides) {
        size_t a = strlen(text), b = strlen(j->overrides);
        char *t = malloc(a + b + 16);
        if (t) {
            sprintf(t, "%s\n[pgbouncer]\n%s", text, j->overrides);
            free(text);
            text = t;
        }
    }
    j->cfg = pool_config_parse(text, j->path, job_log, j);
    free(text);
    if (j->cfg && j->cfg->auth_file && *j->cfg->auth_file)
        j->users = pool_auth_file_load(j->cfg->auth_file, job_log, j);
    return keel_ok(0);
}

static bool str_changed(const char *a, const char *b)
{
    return (a == NULL) != (b == NULL) || (a && strcmp(a, b));
}

static bool db_changed(const pool_config_db *a, const pool_config_db *b)
{
    return str_changed(a->host, b->host) || a->port != b->port ||
           str_changed(a->dbname, b->dbname) || str_changed(a->user, b->user) ||
           str_changed(a->password, b->password) || str_changed(a->connect_query, b->connect_query);
}

/* On each shard: databases point into the new configuration; servers of a
 * database whose connection settings changed are replaced as they go idle. */
static keel_future *apply_on_shard(void *arg)
{
    (void)arg;
    pool_shard *sh = shard_here();
    for (pdb *d = sh->dbs; d; d = d->next) {
        pool_config_db *nd = (pool_config_db *)pool_config_find_db(pool_cfg, d->name);
        bool changed;
        if (nd) {
            changed = db_changed(d->cfg, nd);
            d->cfg = nd;
        } else {
            const pool_config_db *star = pool_config_find_db(pool_cfg, "*");
            if (!star)
                continue; /* gone from the file: keeps serving under the old entry */
            pool_config_db *copy = malloc(sizeof(*copy));
            if (!copy)
                continue;
            *copy = *star;
            copy->name = NULL;
            changed = db_changed(d->cfg, copy);
            free(d->auto_cfg);
            d->auto_cfg = copy;
            d->cfg = copy;
        }
        if (changed)
            for (pserver *s = sh->servers; s; s = s->all_next)
                if (s->pool->db == d && s->state != SV_CLOSED)
                    s->close_after = true;
    }
    for (ppool *p = sh->pools; p; p = p->next) {
        p->mode = pool_mode_of(p->db, p->user);
        if (p->wait_head)
            pool_kick_waiters(p);
        for (pserver *s = p->idle, *n; s; s = n) {
            n = s->next;
            if (s->close_after)
                server_close(s, "database configuration changed");
        }
    }
    return keel_make_ready(0);
}

static keel_future *reloaded(void *ctx, keel_result r)
{
    reload_job *j = ctx;
    (void)r;
    keel_future *f;
    if (!j->cfg) {
        f = keel_make_error(-EINVAL);
    } else if (n_retired_cfgs >= 64 || n_retired_users >= 64) {
        snprintf(j->errors, sizeof(j->errors), "too many reloads in one run");
        pool_config_free(j->cfg);
        pool_auth_file_free(j->users);
        f = keel_make_error(-EINVAL);
    } else {
        retired_cfgs[n_retired_cfgs++] = pool_cfg;
        pool_cfg = j->cfg;
        if (j->users || !pool_cfg->auth_file) {
            retired_users[n_retired_users++] = pool_users;
            pool_users = j->users;
        }
        pool_log_open(pool_cfg->logfile, false, pool_verbose);
        f = keel_invoke_on_all(apply_on_shard, NULL);
    }
    return f;
}

static void free_reload_job(void *ctx, keel_result r)
{
    (void)r;
    reload_job *j = ctx;
    free(j->path);
    free(j->overrides);
    free(j);
}

static keel_future *reload_with(const char *overrides, reload_job **out)
{
    reload_job *j = calloc(1, sizeof(*j));
    if (!j)
        return keel_make_error(-ENOMEM);
    j->path = strdup(pool_cfg_path);
    j->overrides = overrides ? strdup(overrides) : NULL;
    *out = j;
    return keel_then(keel_run_blocking(reload_fn, j), reloaded, j);
}

keel_future *admin_reload(void)
{
    reload_job *j = NULL;
    keel_future *f = reload_with(set_overrides, &j);
    if (!j)
        return f;
    return keel_finally(f, free_reload_job, j);
}

void admin_free_retired(void)
{
    for (int i = 0; i < n_retired_cfgs; i++)
        pool_config_free(retired_cfgs[i]);
    for (int i = 0; i < n_retired_users; i++)
        pool_auth_file_free(retired_users[i]);
    n_retired_cfgs = n_retired_users = 0;
    free(set_overrides);
    set_overrides = NULL;
}

/* ---- dispatch ------------------------------------------------------------------------- */

typedef struct admin_ctx {
    pclient *c;
    pgbuf *out;
    snapshot *sn;
    reload_job *job;
    char tag[32];
    char *pending_overrides;
} admin_ctx;

static void finish(pgbuf *out)
{
    pgbuf_ready(out, 'I');
}

static void error_reply(pgbuf *out, const char *fmt, const char *arg)
{
    pgbuf_error(out, 'E', "ERROR", "08P01", fmt, arg ? arg : "");
    finish(out);
}

static keel_future *show_done(void *ctx, keel_result r)
{
    admin_ctx *a = ctx;
    snapshot *sn = a->sn;
    if (r.err) {
        error_reply(a->out, "%s", "could not collect statistics");
    } else {
        switch (sn->what) {
        case SNAP_POOLS:
            if (!strcmp(a->tag, "POOLS"))
                show_pools(sn, a->out);
            else if (!strcmp(a->tag, "STATS"))
                show_stats(sn, a->out, 0);
            else if (!strcmp(a->tag, "STATS_TOTALS"))
                show_stats(sn, a->out, 1);
            else if (!strcmp(a->tag, "STATS_AVERAGES"))
                show_stats(sn, a->out, 2);
            else if (!strcmp(a->tag, "TOTALS"))
                show_totals(sn, a->out);
            else if (!strcmp(a->tag, "LISTS"))
                show_lists(sn, a->out);
            else if (!strcmp(a->tag, "MEM"))
                show_mem(sn, a->out);
            break;
        default: show_rows(sn, a->out, sn->what);
        }
        finish(a->out);
    }
    snap_free(sn);
    free(a);
    return keel_make_ready(0);
}

static keel_future *show_collect(pclient *c, pgbuf *out, int what, const char *tag)
{
    admin_ctx *a = calloc(1, sizeof(*a));
    if (a)
        a->sn = snap_new(what, NULL);
    if (!a || !a->sn) {
        free(a);
        error_reply(out, "%s", "out of memory");
        return keel_make_ready(0);
    }
    a->c = c;
    a->out = out;
    snprintf(a->tag, sizeof(a->tag), "%s", tag);
    return keel_then_wrapped(keel_invoke_on_all(collect, a->sn), show_done, a);
}

static keel_future *tag_done(void *ctx, keel_result r)
{
    admin_ctx *a = ctx;
    if (r.err) {
        if (a->job && a->job->errors[0])
            error_reply(a->out, "%s", a->job->errors);
        else
            error_reply(a->out, "%s failed", a->tag);
        free(a->pending_overrides);
    } else {
        if (a->pending_overrides) { /* SET took: keep it for later RELOADs */
            free(set_overrides);
            set_overrides = a->pending_overrides;
        }
        pgbuf_complete(a->out, a->tag);
        finish(a->out);
    }
    if (a->job)
        free_reload_job(a->job, keel_ok(0));
    free(a);
    return keel_make_ready(0);
}

static keel_future *with_tag(keel_future *f, pgbuf *out, const char *tag, reload_job *job,
                             char *overrides)
{
    admin_ctx *a = calloc(1, sizeof(*a));
    if (!a) {
        keel_detach(f);
        free(overrides);
        error_reply(out, "%s", "out of memory");
        return keel_make_ready(0);
    }
    a->out = out;
    a->job = job;
    a->pending_overrides = overrides;
    snprintf(a->tag, sizeof(a->tag), "%s", tag);
    return keel_then_wrapped(f, tag_done, a);
}

/* Splits "CMD [ARG]" (trailing ';' and blanks dropped); lowercases nothing:
 * commands compare case-insensitively, arguments are names. */
static int split(char *sql, char **words, int max)
{
    int n = 0;
    char *p = sql;
    size_t l = strlen(p);
    while (l && (isspace((unsigned char)p[l - 1]) || p[l - 1] == ';'))
        p[--l] = 0;
    while (*p && n < max) {
        while (isspace((unsigned char)*p))
            p++;
        if (!*p)
            break;
        words[n++] = p;
        while (*p && !isspace((unsigned char)*p))
            p++;
        if (*p)
            *p++ = 0;
    }
    return n;
}

static const char *unquote(char *s)
{
    size_t l = strlen(s);
    if (l >= 2 && (s[0] == '"' || s[0] == '\'') && s[l - 1] == s[0]) {
        s[l - 1] = 0;
        return s + 1;
    }
    return s;
}

static keel_future *admin_set(char *sql, pgbuf *out)
{
    /* SET key = value | SET key TO value */
    char *p = sql + 3;
    while (isspace((unsigned char)*p))
        p++;
    char *key = p;
    while (*p && (isalnum((unsigned char)*p) || *p == '_'))
        p++;
    char *kend = p;
    while (isspace((unsigned char)*p))
        p++;
    if (*p == '=')
        p++;
    else if (!strncasecmp(p, "to", 2) && isspace((unsigned char)p[2]))
        p += 2;
    else {
        error_reply(out, "%s", "syntax error: use SET key = value");
        return keel_make_ready(0);
    }
    *kend = 0;
    while (isspace((unsigned char)*p))
        p++;
    size_t l = strlen(p);
    while (l && (isspace((unsigned char)p[l - 1]) || p[l - 1] == ';'))
        p[--l] = 0;
    const char *value = unquote(p);
    const config_key *k = NULL;
    for (size_t i = 0; i < sizeof(config_keys) / sizeof(config_keys[0]); i++)
        if (!strcasecmp(config_keys[i].name, key))
            k = &config_keys[i];
    if (!k) {
        error_reply(out, "unknown config parameter: %s", key);
        return keel_make_ready(0);
    }
    if (!k->changeable || k->type == C_FIXED) {
        error_reply(out, "config parameter cannot be changed at run time: %s", key);
        return keel_make_ready(0);
    }
    size_t ol = set_overrides ? strlen(set_overrides) : 0;
    char *ov = malloc(ol + strlen(key) + strlen(value) + 8);
    if (!ov) {
        error_reply(out, "%s", "out of memory");
        return keel_make_ready(0);
    }
    sprintf(ov, "%s%s = %s\n", set_overrides ? set_overrides : "", k->name, value);
    reload_job *j = NULL;
    keel_future *f = reload_with(ov, &j);
    return with_tag(f, out, "SET", j, ov);
}

keel_future *admin_query(pclient *c, const char *sql_in, pgbuf *out)
{
    shard_here()->admin_queries++;
    char *sql = strdup(sql_in);
    if (!sql) {
        error_reply(out, "%s", "out of memory");
        return keel_make_ready(0);
    }
    keel_future *f = NULL;
    char *w[4] = {0};
    char *copy = strdup(sql);
    int n = copy ? split(copy, w, 4) : 0;
    const char *cmd = n ? w[0] : "";
    const char *arg = n > 1 ? unquote(w[1]) : NULL;
    bool stats_only = c->admin_stats_only;
    if (!n) {
        pgbuf_begin(out, 'I'); /* EmptyQueryResponse */
        pgbuf_end(out);
        finish(out);
    } else if (!strcasecmp(cmd, "SHOW") && n >= 2) {
        char what[32];
        snprintf(what, sizeof(what), "%s", w[1]);
        for (char *p = what; *p; p++)
            *p = (char)toupper((unsigned char)*p);
        if (!strcmp(what, "POOLS") || !strcmp(what, "STATS") || !strcmp(what, "STATS_TOTALS") ||
            !strcmp(what, "STATS_AVERAGES") || !strcmp(what, "TOTALS") || !strcmp(what, "LISTS") ||
            !strcmp(what, "MEM")) {
            f = show_collect(c, out, SNAP_POOLS, what);
        } else if (!strcmp(what, "CLIENTS")) {
            f = show_collect(c, out, SNAP_CLIENTS, what);
        } else if (!strcmp(what, "SERVERS")) {
            f = show_collect(c, out, SNAP_SERVERS, what);
        } else if (!strcmp(what, "SOCKETS")) {
            f = show_collect(c, out, SNAP_SOCKETS, what);
        } else if (!strcmp(what, "ACTIVE_SOCKETS")) {
            f = show_collect(c, out, SNAP_ACTIVE_SOCKETS, what);
        } else if (!strcmp(what, "FDS")) {
            f = show_collect(c, out, SNAP_FDS, what);
        } else if (!strcmp(what, "DATABASES")) {
            show_databases(out);
            finish(out);
        } else if (!strcmp(what, "USERS")) {
            show_users(out);
            finish(out);
        } else if (!strcmp(what, "CONFIG")) {
            show_config(out);
            finish(out);
        } else if (!strcmp(what, "VERSION")) {
            static const char *const cols[] = {"version"};
            const char *v[] = {POOL_VERSION_STRING};
            show_simple(out, cols, 1, "s", v, 1);
            finish(out);
        } else if (!strcmp(what, "DNS_HOSTS")) {
            static const char *const cols[] = {"hostname", "ttl", "addrs"};
            show_simple(out, cols, 3, "sis", NULL, 0);
            finish(out);
        } else if (!strcmp(what, "DNS_ZONES")) {
            static const char *const cols[] = {"zonename", "serial", "count"};
            show_simple(out, cols, 3, "sii", NULL, 0);
            finish(out);
        } else if (!strcmp(what, "STATE")) {
            static const char *const cols[] = {"active", "paused", "suspended"};
            bool paused = atomic_load(&pool_paused_all), susp = atomic_load(&pool_suspended);
            const char *v[] = {paused || susp ? "no" : "yes", paused ? "yes" : "no",
                               susp ? "yes" : "no"};
            show_simple(out, cols, 3, "sss", v, 1);
            finish(out);
        } else if (!strcmp(what, "HELP")) {
            pgbuf_error(out, 'N', "NOTICE", "00000",
                        "Console usage\n\tSHOW HELP|CONFIG|DATABASES|POOLS|CLIENTS|SERVERS|USERS|"
                        "VERSION\n\tSHOW FDS|SOCKETS|ACTIVE_SOCKETS|LISTS|MEM|STATE\n\tSHOW "
                        "DNS_HOSTS|DNS_ZONES\n\tSHOW STATS|STATS_TOTALS|STATS_AVERAGES|TOTALS\n"
                        "\tSET key = arg\n\tRELOAD\n\tPAUSE [<db>]\n\tRESUME [<db>]\n\tDISABLE "
                        "<db>\n\tENABLE <db>\n\tRECONNECT [<db>]\n\tKILL <db>\n\tKILL_CLIENT "
                        "<ptr>\n\tSUSPEND\n\tSHUTDOWN\n\tWAIT_CLOSE [<db>]");
            pgbuf_complete(out, "SHOW");
            finish(out);
        } else {
            error_reply(out, "invalid command '%s', use SHOW HELP;", sql);
        }
    } else if (stats_only) {
        error_reply(out, "%s", "admin access needed");
    } else if (!strcasecmp(cmd, "SET")) {
        f = admin_set(sql, out);
    } else if (!strcasecmp(cmd, "RELOAD")) {
        reload_job *j = NULL;
        keel_future *rf = reload_with(set_overrides, &j);
        plog("RELOAD command issued");
        f = j ? with_tag(rf, out, "RELOAD", j, NULL) : with_tag(rf, out, "RELOAD", NULL, NULL);
    } else if (!strcasecmp(cmd, "PAUSE")) {
        plog("PAUSE command issued");
        set_paused(arg, true);
        keel_detach(act_all(ACT_PAUSE, arg));
        f = with_tag(wait_for(0, arg), out, "PAUSE", NULL, NULL);
    } else if (!strcasecmp(cmd, "SUSPEND")) {
        plog("SUSPEND command issued");
        atomic_store(&pool_suspended, true);
        set_paused(NULL, true);
        keel_detach(act_all(ACT_PAUSE, NULL));
        f = with_tag(wait_for(0, NULL), out, "SUSPEND", NULL, NULL);
    } else if (!strcasecmp(cmd, "RESUME")) {
        plog("RESUME command issued");
        atomic_store(&pool_suspended, false);
        set_paused(arg, false);
        f = with_tag(act_all(ACT_RESUME, NULL), out, "RESUME", NULL, NULL);
    } else if (!strcasecmp(cmd, "DISABLE") || !strcasecmp(cmd, "ENABLE")) {
        bool dis = !strcasecmp(cmd, "DISABLE");
        pool_limit *l = arg ? pool_limit_get(&pool_db_limits, arg) : NULL;
        if (!arg || !l) {
            error_reply(out, "%s", "syntax error: DISABLE|ENABLE <db>");
        } else {
            atomic_store(&l->disabled, dis);
            pgbuf_complete(out, dis ? "DISABLE" : "ENABLE");
            finish(out);
        }
    } else if (!strcasecmp(cmd, "RECONNECT")) {
        f = with_tag(act_all(ACT_RECONNECT, arg), out, "RECONNECT", NULL, NULL);
    } else if (!strcasecmp(cmd, "KILL")) {
        if (!arg) {
            error_reply(out, "%s", "syntax error: KILL <db>");
        } else {
            plog("KILL command issued for %s", arg);
            set_paused(arg, true); /* like PgBouncer: new clients wait for RESUME */
            f = with_tag(act_all(ACT_KILL, arg), out, "KILL", NULL, NULL);
        }
    } else if (!strcasecmp(cmd, "KILL_CLIENT")) {
        if (!arg)
            error_reply(out, "%s", "syntax error: KILL_CLIENT <ptr>");
        else
            f = with_tag(act_all(ACT_KILL_CLIENT, arg), out, "KILL_CLIENT", NULL, NULL);
    } else if (!strcasecmp(cmd, "WAIT_CLOSE")) {
        f = with_tag(wait_for(1, arg), out, "WAIT_CLOSE", NULL, NULL);
    } else if (!strcasecmp(cmd, "SHUTDOWN")) {
        plog("SHUTDOWN command issued");
        c->admin_close = true;
        keel_stop();
        pgbuf_complete(out, "SHUTDOWN");
        finish(out);
    } else {
        error_reply(out, "invalid command '%s', use SHOW HELP;", sql);
    }
    free(copy);
    free(sql);
    return f ? f : keel_make_ready(0);
}
