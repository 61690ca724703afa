/* keel-pool's databases and pools, and how the global limits hold across
 * shards.
 *
 * Each shard owns the clients it accepted and the server connections it
 * opened; a server connection serves only clients of its own shard (its
 * socket is driven by that shard's ring). The limits are global, though:
 * pool_size, max_db_connections and max_user_connections count server
 * connections on all shards. So:
 *
 *  - Each limit is one atomic counter (pool_global.servers, pool_limit).
 *    A shard opens a server connection only after reserving a slot with a
 *    fetch-add that stays within the limit (rolled back if it would not);
 *    closing gives the slot back. The total never exceeds the limit, and
 *    no shard has a fixed share: a shard with all the clients can use the
 *    whole pool.
 *  - Each shard publishes, per pool, how many idle servers it holds and how
 *    many clients wait (relaxed atomics written only by their shard). When
 *    a shard's client must wait because the pool is full, it messages a
 *    shard that has an idle server (keel_submit_to), and that shard lends
 *    it: the server connection is detached from its ring (keel_conn_detach:
 *    the socket stays open, the PostgreSQL session goes on) and adopted by
 *    the waiting shard (keel_conn_adopt), with its parameters and prepared
 *    statements, in a few microseconds and no new login. Its slot in the
 *    global count moves with it. Lending costs microseconds, so an asked
 *    shard lends an idle server at once: no client waits while another
 *    shard holds an idle server for its pool (the janitor, every 10 ms,
 *    catches any left over). Unasked, a shard lends a server that goes
 *    idle only while it holds more than its fair share (pool_size /
 *    shards): under even load both shards have waiters by turns, and
 *    servers would otherwise shuttle between them.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "pool.h"
#include "prep.h"

keel_sharded pool_shards;
pool_config *volatile pool_cfg;
pool_auth_file *volatile pool_users;
char *pool_cfg_path;
bool pool_verbose;
uint64_t pool_start_ns;
pool_limit *pool_db_limits, *pool_user_limits;
_Atomic bool pool_paused_all, pool_suspended;

/* How often the janitor looks at timeouts and idle servers. */
#define JANITOR_NS KEEL_MS(10)

static pool_global *globals;
static pthread_mutex_t globals_lock = PTHREAD_MUTEX_INITIALIZER;

/* ---- logging ---------------------------------------------------------------------------- */

static FILE *logfile;
static bool log_quiet;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

void pool_log_open(const char *path, bool quiet, bool verbose)
{
    log_quiet = quiet;
    pool_verbose = verbose;
    if (path && *path) {
        FILE *f = fopen(path, "a");
        if (!f) {
            fprintf(stderr, "keel-pool: cannot open logfile %s: %m\n", path);
            return;
        }
        setvbuf(f, NULL, _IOLBF, 0);
        pthread_mutex_lock(&log_lock);
        if (logfile)
            fclose(logfile);
        logfile = f;
        pthread_mutex_unlock(&log_lock);
    }
}

/* PgBouncer's line format: "2024-05-01 12:00:00.123 UTC [pid] LOG message". */
void pool_log(const char *level, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    char ts[64];
    strftime(ts, sizeof(ts), "%Y-%m-%d %H:%M:%S", &tm);
    pthread_mutex_lock(&log_lock);
    if (logfile)
        fprintf(logfile, "%s.%03d UTC [%d] %s %s\n", ts, (int)(tv.tv_usec / 1000), (int)getpid(),
                level, msg);
    if (!log_quiet)
        fprintf(stderr, "%s.%03d UTC [%d] %s %s\n", ts, (int)(tv.tv_usec / 1000), (int)getpid(),
                level, msg);
    pthread_mutex_unlock(&log_lock);
}

const char *mode_name(pool_mode m)
{
    return m == POOL_MODE_TRANSACTION ? "transaction"
           : m == POOL_MODE_STATEMENT ? "statement"
                                      : "session";
}

/* ---- interned strings --------------------------------------------------------------------- */

const char *const var_names[NVARS] = {"client_encoding", "DateStyle", "TimeZone",
                                      "standard_conforming_strings", "application_name"};

int var_index(const char *name)
{
    for (int i = 0; i < NVARS; i++)
        if (!strcasecmp(name, var_names[i]))
            return i;
    return -1;
}

static uint32_t hash_str(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 16777619u;
    return h;
}

pstr *pstr_get(const char *s)
{
    pool_shard *sh = shard_here();
    uint32_t h = hash_str(s);
    pstr **b = &sh->strings[h & 255];
    for (pstr *p = *b; p; p = p->next)
        if (p->hash == h && !strcmp(p->s, s)) {
            p->refs++;
            return p;
        }
    size_t n = strlen(s);
    pstr *p = malloc(sizeof(*p) + n + 1);
    if (!p)
        return NULL;
    p->refs = 1;
    p->hash = h;
    memcpy(p->s, s, n + 1);
    p->next = *b;
    *b = p;
    return p;
}

pstr *pstr_ref(pstr *p)
{
    if (p)
        p->refs++;
    return p;
}

void pstr_put(pstr *p)
{
    if (!p || --p->refs)
        return;
    pstr **b = &shard_here()->strings[p->hash & 255];
    while (*b != p)
        b = &(*b)->next;
    *b = p->next;
    free(p);
}

void pvars_set(pvars *vs, int i, const char *value)
{
    pstr *n = pstr_get(value);
    pstr_put(vs->v[i]);
    vs->v[i] = n;
}

void pvars_copy(pvars *dst, const pvars *src)
{
    for (int i = 0; i < NVARS; i++) {
        pstr *n = pstr_ref(src->v[i]);
        pstr_put(dst->v[i]);
        dst->v[i] = n;
    }
}

void pvars_clear(pvars *vs)
{
    for (int i = 0; i < NVARS; i++) {
        pstr_put(vs->v[i]);
        vs->v[i] = NULL;
    }
}

/* ---- databases -------------------------------------------------------------------------- */

static pool_config_db *auto_db(const pool_config_db *star)
{
    pool_config_db *d = calloc(1, sizeof(*d));
    if (!d)
        return NULL;
    *d = *star; /* borrows the strings of "*", which live as long as the config */
    d->name = NULL;
    return d;
}

pdb *pool_find_db(const char *name)
{
    pool_shard *sh = shard_here();
    for (pdb *d = sh->dbs; d; d = d->next)
        if (!strcmp(d->name, name))
            return d;
    pool_config_db *cfg = (pool_config_db *)pool_config_find_db(pool_cfg, name);
    pool_config_db *autocfg = NULL;
    if (!cfg) {
        const pool_config_db *star = pool_config_find_db(pool_cfg, "*");
        if (!star)
            return NULL;
        cfg = autocfg = auto_db(star);
        if (!cfg)
            return NULL;
    }
    pdb *d = calloc(1, sizeof(*d));
    if (!d || !(d->name = strdup(name))) {
        free(d);
        free(autocfg);
        return NULL;
    }
    d->cfg = cfg;
    d->auto_cfg = autocfg;
    if (!(d->lim = pool_limit_get(&pool_db_limits, name))) {
        free(d->name);
        free(d);
        free(autocfg);
        return NULL;
    }
    d->next = sh->dbs;
    sh->dbs = d;
    return d;
}

pool_mode pool_mode_of(const pdb *db, const char *user)
{
    for (size_t i = 0; i < pool_cfg->nusers; i++)
        if (!strcmp(pool_cfg->users[i].name, user) &&
            pool_cfg->users[i].pool_mode != POOL_MODE_UNSET)
            return pool_cfg->users[i].pool_mode;
    if (db->cfg->pool_mode != POOL_MODE_UNSET)
        return db->cfg->pool_mode;
    return pool_cfg->pool_mode;
}

int pool_size_of(const ppool *p)
{
    return p->db->cfg->pool_size >= 0 ? p->db->cfg->pool_size : pool_cfg->default_pool_size;
}

static int db_max_connections(const pdb *db)
{
    return db->cfg->max_db_connections > 0 ? db->cfg->max_db_connections
                                           : pool_cfg->max_db_connections;
}

static int user_max_connections(const char *user)
{
    for (size_t i = 0; i < pool_cfg->nusers; i++)
        if (!strcmp(pool_cfg->users[i].name, user) && pool_cfg->users[i].max_user_connections > 0)
            return pool_cfg->users[i].max_user_connections;
    return pool_cfg->max_user_connections;
}

pool_limit *pool_limit_get(pool_limit **list, const char *name)
{
    pthread_mutex_lock(&globals_lock);
    pool_limit *l;
    for (l = *list; l; l = l->next)
        if (!strcmp(l->name, name))
            break;
    if (!l && (l = calloc(1, sizeof(*l)))) {
        if (!(l->name = strdup(name))) {
            free(l);
            l = NULL;
        } else {
            l->next = *list;
            *list = l;
        }
    }
    pthread_mutex_unlock(&globals_lock);
    return l;
}

static pool_global *global_get(const char *db, const char *user)
{
    pthread_mutex_lock(&globals_lock);
    pool_global *g;
    for (g = globals; g; g = g->next)
        if (!strcmp(g->db, db) && !strcmp(g->user, user))
            break;
    if (!g && (g = calloc(1, sizeof(*g)))) {
        unsigned n = keel_shard_count();
        g->db = strdup(db);
        g->user = strdup(user);
        g->idle = calloc(n, sizeof(*g->idle));
        g->waiting = calloc(n, sizeof(*g->waiting));
        if (!g->db || !g->user || !g->idle || !g->waiting) {
            free(g->db);
            free(g->user);
            free(g->idle);
            free(g->waiting);
            free(g);
            g = NULL;
        } else {
            g->next = globals;
            globals = g;
        }
    }
    pthread_mutex_unlock(&globals_lock);
    return g;
}

ppool *pool_get(pdb *db, const char *user)
{
    pool_shard *sh = shard_here();
    for (ppool *p = sh->pools; p; p = p->next)
        if (p->db == db && !strcmp(p->user, user))
            return p;
    ppool *p = calloc(1, sizeof(*p));
    if (!p || !(p->user = strdup(user)) || !(p->g = global_get(db->name, user)) ||
        !(p->db_limit = pool_limit_get(&pool_db_limits, db->name)) ||
        !(p->user_limit = pool_limit_get(&pool_user_limits, user))) {
        if (p)
            free(p->user);
        free(p);
        return NULL;
    }
    p->db = db;
    p->mode = pool_mode_of(db, user);
    p->next = sh->pools;
    sh->pools = p;
    return p;
}

/* ---- limits ------------------------------------------------------------------------------- */

static bool take_slot(_Atomic int *count, int limit)
{
    if (limit <= 0) {
        atomic_fetch_add(count, 1);
        return true;
    }
    int v = atomic_load(count);
    while (v < limit)
        if (atomic_compare_exchange_weak(count, &v, v + 1))
            return true;
    return false;
}

/* Reserves a server slot in p's pool and its database's and user's limits. */
static bool reserve_server(ppool *p, bool use_reserve)
{
    int size = pool_size_of(p);
    if (use_reserve)
        size += pool_cfg->reserve_pool_size;
    if (!take_slot(&p->g->servers, size))
        return false;
    if (!take_slot(&p->db_limit->servers, db_max_connections(p->db))) {
        atomic_fetch_sub(&p->g->servers, 1);
        return false;
    }
    if (!take_slot(&p->user_limit->servers, user_max_connections(p->user))) {
        atomic_fetch_sub(&p->g->servers, 1);
        atomic_fetch_sub(&p->db_limit->servers, 1);
        return false;
    }
    return true;
}

void pool_limit_server_dec(ppool *p)
{
    atomic_fetch_sub(&p->db_limit->servers, 1);
    atomic_fetch_sub(&p->user_limit->servers, 1);
}

static void publish_waiting(ppool *p)
{
    atomic_store_explicit(&p->g->waiting[shard_here()->id], p->n_waiting, memory_order_relaxed);
}

/* ---- waiting ---------------------------------------------------------------------------- */

static void wait_push(ppool *p, pclient *c)
{
    c->waiting = true;
    c->wait_next = NULL;
    c->wait_prev = p->wait_tail;
    if (p->wait_tail)
        p->wait_tail->wait_next = c;
    else
        p->wait_head = c;
    p->wait_tail = c;
    p->n_waiting++;
    c->wait_start_ns = keel_now_ns();
    c->state = CL_WAITING;
    publish_waiting(p);
}

void pool_unwait(pclient *c)
{
    if (!c->waiting)
        return;
    ppool *p = c->pool;
    if (c->wait_prev)
        c->wait_prev->wait_next = c->wait_next;
    else
        p->wait_head = c->wait_next;
    if (c->wait_next)
        c->wait_next->wait_prev = c->wait_prev;
    else
        p->wait_tail = c->wait_prev;
    c->wait_next = c->wait_prev = NULL;
    c->waiting = false;
    p->n_waiting--;
    if (c->state == CL_WAITING)
        c->state = CL_ACTIVE;
    publish_waiting(p);
}

/* Restores the client's tracked parameters on s where they differ. The
 * SET runs ahead of the client's first query; its replies are consumed. */
static void sync_vars(pclient *c, pserver *s)
{
    pgbuf b = {0};
    for (int i = 0; i < NVARS; i++) {
        if (!c->vars.v[i] || c->vars.v[i] == s->vars.v[i])
            continue;
        pgbuf_put(&b, "SET ", 4);
        pgbuf_put(&b, var_names[i], strlen(var_names[i]));
        pgbuf_put(&b, "=", 1);
        pgbuf_quote_literal(&b, c->vars.v[i]->s);
        pgbuf_put(&b, ";", 1);
    }
    if (b.len && !b.oom) {
        pgbuf_u8(&b, 0);
        if (!b.oom)
            server_internal_send(s, (const char *)b.p);
    }
    pgbuf_free(&b);
}

static void link_server(pclient *c, pserver *s)
{
    server_set_state(s, SV_ACTIVE);
    s->client = c;
    c->server = s;
    c->linked_once = true;
    s->pending_z = 0;
    s->dirty = false;
    s->fwd_left = 0;
    s->request_ns = keel_now_ns();
    ppool *p = c->pool;
    p->stats.server_assignments++;
    if (c->wait_start_ns) {
        p->stats.wait_us += (keel_now_ns() - c->wait_start_ns) / 1000;
        c->wait_start_ns = 0;
    }
    sync_vars(c, s);
}

static void serve_waiter(ppool *p, pserver *s)
{
    pclient *c = p->wait_head;
    pool_unwait(c);
    link_server(c, s);
    keel_promise_resolve(&c->wait_p, keel_ok_ptr(s));
}

static bool above_fair_share(const ppool *p)
{
    unsigned n = keel_shard_count(), me = shard_here()->id;
    int size = pool_size_of(p);
    int fair = size / (int)n + ((int)me < size % (int)n ? 1 : 0);
    return p->n_idle + p->n_active + p->n_used + p->n_login + p->n_tested > fair;
}

/* Another shard's waiting client needs a slot: close one idle server here. */
typedef struct give_msg {
    char *db, *user;
    unsigned to;
} give_msg;

static void free_msg(give_msg *m)
{
    free(m->db);
    free(m->user);
    free(m);
}

static ppool *find_pool(const char *db, const char *user)
{
    for (ppool *p = shard_here()->pools; p; p = p->next)
        if (!strcmp(p->db->name, db) && !strcmp(p->user, user))
            return p;
    return NULL;
}

static void send_give(ppool *p, unsigned to, keel_remote_fn fn)
{
    give_msg *m = calloc(1, sizeof(*m));
    if (!m || !(m->db = strdup(p->db->name)) || !(m->user = strdup(p->user))) {
        if (m)
            free_msg(m);
        return;
    }
    m->to = to;
    keel_detach(keel_submit_to(to, fn, m));
}

/* On the shard asked: gives up one idle server of the pool, if it still has one. */
static keel_future *release_idle_for(void *arg)
{
    give_msg *m = arg;
    ppool *p = find_pool(m->db, m->user);
    pserver *s = p && p->idle && !p->n_waiting ? p->idle : NULL;
    while (s && s->next)
        s = s->next; /* the coldest */
    if (s)
        server_lend(s, m->to);
    free_msg(m);
    return keel_make_ready(0);
}

/* Shards other than this one with idle servers (or waiting clients) of g. */
static int other_shard_with(_Atomic int *counts)
{
    unsigned me = shard_here()->id, n = keel_shard_count();
    for (unsigned i = 1; i < n; i++) {
        unsigned t = (me + i) % n;
        if (atomic_load_explicit(&counts[t], memory_order_relaxed) > 0)
            return (int)t;
    }
    return -1;
}

static bool start_check_if_stale(pserver *s);

/* Opens servers for waiting clients while the limits allow, counting the
 * ones already logging in. */
void pool_kick_waiters(ppool *p)
{
    if (db_paused(p->db))
        return;
    if (pool_login_backoff(p) && !p->n_login) {
        /* PgBouncer's answer while the server refuses logins. */
        pool_fail_waiters(p, -ECONNREFUSED);
        return;
    }
    while (p->wait_head && p->idle) {
        pserver *s = p->idle;
        if (!start_check_if_stale(s))
            serve_waiter(p, s);
    }
    int want = p->n_waiting - p->n_login - p->n_tested;
    while (want > 0) {
        bool reserve = pool_cfg->reserve_pool_size > 0 && p->wait_head &&
                       keel_now_ns() - p->wait_head->wait_start_ns >
                           (uint64_t)(pool_cfg->reserve_pool_timeout * 1e9);
        if (!reserve_server(p, reserve))
            break;
        server_connect(p);
        want--;
    }
    if (want > 0) {
        int t = other_shard_with(p->g->idle);
        if (t >= 0)
            send_give(p, (unsigned)t, release_idle_for);
    }
}

keel_future *pool_acquire(pclient *c)
{
    ppool *p = c->pool;
    c->wait_start_ns = keel_now_ns();
    if (!db_paused(p->db) && !p->wait_head) {
        if (p->idle && !start_check_if_stale(p->idle)) {
            pserver *s = p->idle;
            link_server(c, s);
            return keel_make_ready_ptr(s);
        }
    }
    wait_push(p, c);
    keel_future *f = keel_promise_init(&c->wait_p);
    pool_kick_waiters(p);
    return f;
}

static keel_future *checked(void *ctx, keel_result r)
{
    pserver *s = ctx;
    if (s->state == SV_CLOSED)
        return keel_make_ready(0);
    if (r.err) {
        server_close(s, "server check query failed");
        return keel_make_ready(0);
    }
    s->checked_ns = keel_now_ns();
    pool_server_ready(s);
    return keel_make_ready(0);
}

/* server_check_delay: a server idle longer is tested with
 * server_check_query before a client gets it (as "tested" in SHOW). */
static bool start_check_if_stale(pserver *s)
{
    const char *q = pool_cfg->server_check_query;
    if (!q || !*q || pool_cfg->server_check_delay < 0)
        return false;
    uint64_t last = s->last_used_ns > s->checked_ns ? s->last_used_ns : s->checked_ns;
    if (keel_now_ns() - last <= (uint64_t)(pool_cfg->server_check_delay * 1e9))
        return false;
    server_set_state(s, SV_TESTED);
    keel_detach(keel_then_wrapped(server_internal_query(s, q), checked, s));
    return true;
}

void pool_server_ready(pserver *s)
{
    ppool *p = s->pool;
    s->last_used_ns = keel_now_ns();
    if (p->wait_head && !db_paused(p->db)) {
        serve_waiter(p, s);
        return;
    }
    if (db_paused(p->db)) { /* PAUSE waits for every server to be released, then closes it */
        server_close(s, "database paused");
        return;
    }
    if (s->close_after) { /* RECONNECT, or a RELOAD that changed the database */
        server_close(s, "reconnect requested");
        return;
    }
    server_set_state(s, SV_IDLE);
    /* No client here wants it: one on another shard may. Unasked, only a
     * shard above its fair share lends (under even load both shards have
     * waiters by turns, and servers would shuttle); a waiting shard asks
     * for what it needs (release_idle_for), and the janitor lends the rest. */
    int t = above_fair_share(p) ? other_shard_with(p->g->waiting) : -1;
    if (t >= 0)
        server_lend(s, (unsigned)t);
}

static keel_future *reset_done(void *ctx, keel_result r)
{
    pserver *s = ctx;
    if (s->state == SV_CLOSED)
        return keel_make_ready(0);
    if (r.err) {
        server_close(s, "server_reset_query failed");
        return keel_make_ready(0);
    }
    pool_server_ready(s);
    return keel_make_ready(0);
}

void pool_release_unused(pclient *c)
{
    pserver *s = c->server;
    if (!s)
        return;
    c->server = NULL;
    s->client = NULL;
    pool_server_ready(s); /* the client sent nothing: no reset needed */
}

void pool_release(pclient *c)
{
    pserver *s = c->server;
    if (!s)
        return;
    ppool *p = s->pool;
    c->server = NULL;
    s->client = NULL;
    uint64_t now = keel_now_ns();
    s->last_used_ns = now;
    bool clean = s->pending_z == 0 && !s->dirty && s->txn == 'I' && !s->fwd_left && !c->fwd_left;
    if (!clean || s->close_after) {
        server_close(s, clean ? "server marked for close"
                              : "client disconnect while server was not ready");
        return;
    }
    if (pool_cfg->server_lifetime > 0 &&
        now - s->connect_ns > (uint64_t)(pool_cfg->server_lifetime * 1e9)) {
        server_close(s, "server lifetime over");
        return;
    }
    const char *reset = pool_cfg->server_reset_query;
    bool do_reset =
        reset && *reset && (p->mode == POOL_MODE_SESSION || pool_cfg->server_reset_query_always);
    if (do_reset) {
        server_set_state(s, SV_USED);
        prep_server_reset(s);
        keel_detach(keel_then_wrapped(server_internal_query(s, reset), reset_done, s));
        return;
    }
    pool_server_ready(s);
}

void pool_server_gone(ppool *p)
{
    if (p->wait_head)
        pool_kick_waiters(p);
}

/* Waiting clients get the server's login error instead of waiting for
 * server_login_retry. */
void pool_fail_waiters(ppool *p, int err)
{
    while (p->wait_head) {
        pclient *c = p->wait_head;
        pool_unwait(c);
        keel_promise_set_error(&c->wait_p, err);
    }
}

bool pool_login_backoff(const ppool *p)
{
    return p->login_error &&
           keel_now_ns() - p->last_login_error_ns < (uint64_t)(pool_cfg->server_login_retry * 1e9);
}

/* ---- the janitor: timeouts, idle servers, min_pool_size, averages ---------------------- */

static uint64_t secs(double s)
{
    return s > 0 ? (uint64_t)(s * 1e9) : 0;
}

static void stats_period(ppool *p, uint64_t now)
{
    uint64_t period = secs(pool_cfg->stats_period > 0 ? pool_cfg->stats_period : 60);
    if (!p->stats_at_ns) {
        p->stats_at_ns = now;
        return;
    }
    if (now - p->stats_at_ns < period)
        return;
#define D(f) p->avg.f = p->stats.f - p->stats_prev.f
    D(xact_count);
    D(query_count);
    D(bytes_in);
    D(bytes_out);
    D(xact_us);
    D(query_us);
    D(wait_us);
    D(server_assignments);
#undef D
    p->stats_prev = p->stats;
    p->stats_at_ns = now;
}

static void janitor_pool(ppool *p, uint64_t now)
{
    stats_period(p, now);
    /* query_wait_timeout */
    uint64_t qwt = secs(pool_cfg->query_wait_timeout);
    while (qwt && p->wait_head && now - p->wait_head->wait_start_ns > qwt) {
        pclient *c = p->wait_head;
        pool_unwait(c);
        keel_promise_set_error(&c->wait_p, -ETIMEDOUT);
    }
    /* server_idle_timeout, server_lifetime for idle servers (coldest first) */
    uint64_t idle_to = secs(pool_cfg->server_idle_timeout);
    uint64_t life = secs(pool_cfg->server_lifetime);
    int size = pool_size_of(p);
    int min = p->db->cfg->min_pool_size >= 0 ? p->db->cfg->min_pool_size : pool_cfg->min_pool_size;
    if (min > size)
        min = size;
    for (pserver *s = p->idle, *next; s; s = next) {
        next = s->next;
        int total = atomic_load(&p->g->servers);
        if (idle_to && now - s->last_used_ns > idle_to && total > min)
            server_close(s, "server idle timeout");
        else if (life && now - s->connect_ns > life && total > min)
            server_close(s, "server lifetime over");
        else if (atomic_load(&p->g->servers) > size && !p->n_waiting)
            server_close(s, "pool is over its size (RELOAD)");
    }
    /* A server idle here for a while, while clients wait on another shard
     * whose pool slice is full: hand its slot over. */
    if (p->idle && !p->n_waiting && !db_paused(p->db)) {
        pserver *s = p->idle;
        while (s->next)
            s = s->next;
        int t = other_shard_with(p->g->waiting);
        if (t >= 0) {
            server_lend(s, (unsigned)t);
        }
    }
    /* min_pool_size: shard 0 keeps the minimum for every pool it has seen */
    if (min > 0 && shard_here()->id == 0 && !db_paused(p->db) && !pool_login_backoff(p)) {
        while (atomic_load(&p->g->servers) < min && reserve_server(p, false))
            server_connect(p);
    }
    if (p->wait_head && !pool_login_backoff(p))
        pool_kick_waiters(p);
}

void pool_janitor_clients(uint64_t now);

static keel_future *janitor_again(void *ctx, keel_result r)
{
    (void)ctx;
    (void)r;
    return keel_make_ready(keel_stopping() ? KEEL_STOP : KEEL_CONTINUE);
}

static keel_future *janitor_step(void *arg)
{
    (void)arg;
    if (keel_stopping())
        return keel_make_ready(KEEL_STOP);
    uint64_t now = keel_now_ns();
    for (ppool *p = shard_here()->pools; p; p = p->next)
        janitor_pool(p, now);
    pool_janitor_clients(now);
    return keel_then_wrapped(keel_sleep_abortable(JANITOR_NS, &shard_here()->stopping),
                             janitor_again, NULL);
}

static keel_future *janitor_loop(void *arg)
{
    return keel_repeat(janitor_step, arg);
}

void pool_maintain_start(void)
{
    /* Timeouts, idle servers and the stats_period averages are
     * housekeeping: in the background group (every step, as each
     * continuation inherits it), so under load they get that group's
     * share of the shard rather than an equal turn with the clients'
     * traffic. What the janitor starts for clients (server logins) goes
     * back to the main group (server_connect). */
    keel_detach(keel_with_sched_group(keel_sched_group_background(), janitor_loop, NULL));
}

void pool_globals_free(void)
{
    for (pool_global *g = globals, *n; g; g = n) {
        n = g->next;
        pgbuf_free(&g->welcome);
        free(g->db);
        free(g->user);
        free((void *)g->idle);
        free((void *)g->waiting);
        free(g);
    }
    globals = NULL;
    pool_limit *lists[2] = {pool_db_limits, pool_user_limits};
    for (int i = 0; i < 2; i++)
        for (pool_limit *l = lists[i], *n; l; l = n) {
            n = l->next;
            free(l->name);
            free(l);
        }
    pool_db_limits = pool_user_limits = NULL;
}

void fmt_addr(const struct sockaddr_storage *ss, char *addr, size_t len, uint16_t *port)
{
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &a->sin_addr, addr, (socklen_t)len);
        *port = ntohs(a->sin_port);
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &a->sin6_addr, addr, (socklen_t)len);
        *port = ntohs(a->sin6_port);
    } else {
        snprintf(addr, len, "unix");
        *port = 0;
    }
}

void pool_welcome_publish(ppool *p)
{
    pool_global *g = p->g;
    if (atomic_load(&g->have_welcome) || !p->have_welcome)
        return;
    pthread_mutex_lock(&globals_lock);
    if (!g->have_welcome) {
        pgbuf_put(&g->welcome, p->welcome.p, p->welcome.len);
        if (!g->welcome.oom)
            atomic_store(&g->have_welcome, true);
    }
    pthread_mutex_unlock(&globals_lock);
}

bool pool_welcome_take(ppool *p)
{
    pool_global *g = p->g;
    if (p->have_welcome)
        return true;
    if (!atomic_load(&g->have_welcome))
        return false;
    pthread_mutex_lock(&globals_lock);
    pgbuf_put(&p->welcome, g->welcome.p, g->welcome.len);
    pthread_mutex_unlock(&globals_lock);
    if (p->welcome.oom) {
        pgbuf_free(&p->welcome);
        return false;
    }
    p->have_welcome = true;
    return true;
}
