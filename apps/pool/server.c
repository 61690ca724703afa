/* keel-pool's server connections: connect, log in (trust, cleartext, MD5,
 * SCRAM-SHA-256), then one reader loop for the connection's whole life that
 * forwards replies to the linked client, tracks ReadyForQuery and
 * ParameterStatus, and runs the pooler's own queries (connect_query,
 * server_reset_query, server_check_query, parameter restores). */
#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "auth.h"
#include "pool.h"
#include "prep.h"

#define LOGIN_MAX_MSG (1u << 20)
#define INSPECT_MAX (1u << 20) /* larger messages that we must read are a protocol error */

const char *server_state_name(const pserver *s)
{
    switch (s->state) {
    case SV_LOGIN: return "login";
    case SV_IDLE: return "idle";
    case SV_ACTIVE: return "active";
    case SV_USED: return "used";
    default: return "closed";
    }
}

static void list_del(pserver **head, pserver *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else
        *head = s->next;
    if (s->next)
        s->next->prev = s->prev;
    s->prev = s->next = NULL;
}

static pserver **list_of(ppool *p, int state, int **count)
{
    switch (state) {
    case SV_LOGIN: *count = &p->n_login; return &p->login;
    case SV_IDLE: *count = &p->n_idle; return &p->idle;
    case SV_ACTIVE: *count = &p->n_active; return &p->active;
    case SV_USED: *count = &p->n_used; return &p->used;
    }
    *count = NULL;
    return NULL;
}

/* Moves s to the list of state (SV_CLOSED: off every list). Keeps the
 * shard's published idle count, which other shards read, up to date. */
void server_set_state(pserver *s, int state)
{
    ppool *p = s->pool;
    int *cnt;
    pserver **head = list_of(p, s->state, &cnt);
    if (head) {
        list_del(head, s);
        (*cnt)--;
    }
    s->state = (uint8_t)state;
    head = list_of(p, state, &cnt);
    if (head) {
        /* Idle servers are taken LIFO (the warmest) and closed from the tail. */
        s->next = *head;
        if (*head)
            (*head)->prev = s;
        *head = s;
        (*cnt)++;
    }
    atomic_store_explicit(&p->g->idle[shard_here()->id], p->n_idle, memory_order_relaxed);
}

/* ---- reading whole messages ----------------------------------------------------------- */

static keel_future *got_header(void *ctx, keel_result r)
{
    keel_conn *c = ctx;
    if (r.val == 0)
        return keel_make_error(-ECONNRESET);
    uint8_t h[5];
    keel_conn_copy(c, h, 5);
    uint32_t len = pg_get32(h + 1);
    if (len < 4 || len > LOGIN_MAX_MSG)
        return keel_make_error(-EPROTO);
    return keel_conn_read_exactly(c, (size_t)len + 1);
}

/* Resolves to the length of the next whole message (type byte included)
 * once it is buffered. */
static keel_future *read_msg(keel_conn *c)
{
    return keel_then(keel_conn_read_exactly(c, 5), got_header, c);
}

/* ---- login ----------------------------------------------------------------------------- */

typedef struct login_job {
    pserver *s;
    ppool *p;
    int kind; /* 0: md5 response, 1: scram final */
    char user[128];
    char secret[512];
    uint8_t salt[4];
    char out[512];
    pool_scram_client scram;
    bool need_salted;
    uint8_t salted[32];
    char password[256];
    int err;
} login_job;

static void server_free(void *ctx, keel_result r);
static keel_future *login_step(void *ctx);

static const char *server_user(const ppool *p)
{
    return p->db->cfg->user ? p->db->cfg->user : p->user;
}

/* The password for logging in to the server as server_user(p): the
 * database entry's, else the auth_file's (or auth_query's) secret. */
static const char *server_secret(const ppool *p, pool_secret_kind *kind)
{
    const pool_config_db *d = p->db->cfg;
    if (d->password) {
        *kind = pool_secret_classify(d->password);
        return d->password;
    }
    if (p->secret) {
        *kind = p->secret_kind;
        return p->secret;
    }
    const pool_auth_entry *e = pool_users ? pool_auth_file_find(pool_users, server_user(p)) : NULL;
    if (!e)
        return NULL;
    *kind = e->kind;
    return e->password;
}

static void login_failed(pserver *s, const char *msg)
{
    ppool *p = s->pool;
    free(p->login_error);
    p->login_error = strdup(msg);
    p->last_login_error_ns = keel_now_ns();
    pwarn("S-%p: %s/%s@%s:%u cannot connect to server: %s", (void *)s, p->db->name, p->user,
          s->addr, s->port, msg);
    server_close(s, msg);
}

/* Queues b's messages to the server and frees b. */
static void send_to_server(pserver *s, pgbuf *b)
{
    if (!b->oom && s->conn)
        keel_detach(keel_conn_write(s->conn, b->p, b->len));
    pgbuf_free(b);
}

/* login_failed, as the result of a login step: the login ends. */
static keel_future *login_stop(pserver *s, const char *msg)
{
    login_failed(s, msg);
    return keel_make_ready(KEEL_STOP);
}

static keel_result md5_job(void *arg)
{
    login_job *j = arg;
    char secret[36];
    const char *use = j->secret;
    if (pool_secret_classify(j->secret) == POOL_SECRET_PLAIN) {
        pool_md5_secret(j->user, j->secret, secret);
        use = secret;
    }
    pool_md5_response(use, j->salt, j->out);
    return keel_ok(0);
}

static keel_result scram_final_job(void *arg)
{
    login_job *j = arg;
    if (j->need_salted) {
        uint8_t salted[32];
        pool_scram_salted_password(j->password, j->scram.salt, j->scram.salt_len,
                                   j->scram.iterations, salted);
        pool_scram_client_set_salted(&j->scram, salted);
        memcpy(j->salted, salted, 32); /* cached by the shard: scram_final_done */
    }
    j->err = pool_scram_client_final(&j->scram, j->out, sizeof(j->out));
    return keel_ok(0);
}

static void send_password_msg(pserver *s, const char *pw, size_t len)
{
    pgbuf b = {0};
    pgbuf_begin(&b, 'p');
    pgbuf_put(&b, pw, len);
    pgbuf_end(&b);
    send_to_server(s, &b);
}

static keel_future *md5_done(void *ctx, keel_result r)
{
    login_job *j = ctx;
    pserver *s = j->s;
    (void)r;
    if (s->state != SV_CLOSED)
        send_password_msg(s, j->out, strlen(j->out) + 1);
    free(j);
    return keel_make_ready(s->state == SV_CLOSED ? KEEL_STOP : KEEL_CONTINUE);
}

static keel_future *scram_final_done(void *ctx, keel_result r)
{
    login_job *j = ctx;
    pserver *s = j->s;
    (void)r;
    if (s->state == SV_CLOSED) {
        free(j);
        return keel_make_ready(KEEL_STOP);
    }
    ppool *p = s->pool;
    *s->scram = j->scram; /* now holding the keys, for the server's signature */
    if (j->need_salted) {
        memcpy(p->salted, j->salted, 32);
        memcpy(p->salted_salt, j->scram.salt, j->scram.salt_len);
        p->salted_salt_len = j->scram.salt_len;
        p->salted_iter = j->scram.iterations;
        p->have_salted = true;
    }
    if (j->err < 0) {
        free(j);
        login_failed(s, "SCRAM: cannot build the client-final-message");
        return keel_make_ready(KEEL_STOP);
    }
    pgbuf b = {0};
    pgbuf_begin(&b, 'p');
    pgbuf_put(&b, j->out, strlen(j->out));
    pgbuf_end(&b);
    send_to_server(s, &b);
    free(j);
    return keel_make_ready(KEEL_CONTINUE);
}

/* One login message. Resolves to KEEL_CONTINUE, or KEEL_STOP once the
 * server said ReadyForQuery (or the login failed and s is closed). */
static keel_future *login_msg(void *ctx, keel_result r)
{
    pserver *s = ctx;
    ppool *p = s->pool;
    if (s->state == SV_CLOSED)
        return keel_make_ready(KEEL_STOP);
    size_t n = (size_t)r.val;
    uint8_t *m = malloc(n);
    if (!m) {
        login_failed(s, "out of memory");
        return keel_make_ready(KEEL_STOP);
    }
    keel_conn_copy(s->conn, m, n);
    keel_conn_consume(s->conn, n);
    uint8_t type = m[0];
    pgreader rd;
    pgreader_init(&rd, m + 5, n - 5);
    keel_future *next = keel_make_ready(KEEL_CONTINUE);
    switch (type) {
    case 'R': {
        int32_t code = pgr_i32(&rd);
        pool_secret_kind kind = POOL_SECRET_PLAIN;
        const char *secret = server_secret(p, &kind);
        if (code == 0)
            break;
        if (code == 3) { /* cleartext */
            if (!secret || kind != POOL_SECRET_PLAIN) {
                next = login_stop(s, "server asked for a cleartext password, which the auth_file "
                                     "does not hold for this user");
                break;
            }
            send_password_msg(s, secret, strlen(secret) + 1);
        } else if (code == 5) { /* md5 */
            const uint8_t *salt = pgr_bytes(&rd, 4);
            if (!secret || kind == POOL_SECRET_SCRAM || !salt) {
                next =
                    login_stop(s, "server asked for an md5 password, which the auth_file does not "
                                  "hold for this user");
                break;
            }
            login_job *j = calloc(1, sizeof(*j));
            if (!j) {
                next = login_stop(s, "out of memory");
                break;
            }
            j->s = s;
            snprintf(j->user, sizeof(j->user), "%s", server_user(p));
            snprintf(j->secret, sizeof(j->secret), "%s", secret);
            memcpy(j->salt, salt, 4);
            next = keel_then_wrapped(keel_run_blocking(md5_job, j), md5_done, j);
        } else if (code == 10) { /* SASL: a list of mechanisms */
            bool scram = false;
            for (;;) {
                const char *mech = pgr_str(&rd);
                if (rd.bad || !*mech)
                    break;
                if (!strcmp(mech, "SCRAM-SHA-256"))
                    scram = true;
            }
            if (!scram || !secret || kind == POOL_SECRET_MD5 ||
                (kind == POOL_SECRET_SCRAM && !p->have_scram_keys)) {
                /* PgBouncer's words; with a SCRAM secret, no client has
                 * logged in with SCRAM yet to lend its keys. */
                next = login_stop(s, "server login failed: wrong password type");
                break;
            }
            free(s->scram);
            s->scram = calloc(1, sizeof(*s->scram));
            char first[256];
            if (!s->scram || pool_scram_client_first(s->scram, first, sizeof(first)) < 0) {
                next = login_stop(s, "out of memory");
                break;
            }
            pgbuf b = {0};
            pgbuf_begin(&b, 'p');
            pgbuf_str(&b, "SCRAM-SHA-256");
            pgbuf_i32(&b, (int32_t)strlen(first));
            pgbuf_put(&b, first, strlen(first));
            pgbuf_end(&b);
            if (!b.oom)
                keel_detach(keel_conn_write(s->conn, b.p, b.len));
            pgbuf_free(&b);
        } else if (code == 11) { /* SASLContinue: server-first-message */
            size_t len = (size_t)(rd.end - rd.p);
            if (!s->scram || pool_scram_client_server_first(s->scram, (const char *)rd.p, len)) {
                next = login_stop(s, "invalid SCRAM server-first-message");
                break;
            }
            login_job *j = calloc(1, sizeof(*j));
            if (!j) {
                next = login_stop(s, "out of memory");
                break;
            }
            j->s = s;
            j->p = p;
            j->scram = *s->scram;
            if (kind == POOL_SECRET_SCRAM) {
                pool_scram_client_set_keys(&j->scram, p->scram_client_key, p->scram_server_key);
            } else if (p->have_salted && p->salted_iter == s->scram->iterations &&
                       p->salted_salt_len == s->scram->salt_len &&
                       !memcmp(p->salted_salt, s->scram->salt, s->scram->salt_len)) {
                pool_scram_client_set_salted(&j->scram, p->salted);
            } else {
                j->need_salted = true;
                snprintf(j->password, sizeof(j->password), "%s", secret);
            }
            next = keel_then_wrapped(keel_run_blocking(scram_final_job, j), scram_final_done, j);
        } else if (code == 12) { /* SASLFinal */
            size_t len = (size_t)(rd.end - rd.p);
            if (!s->scram || pool_scram_client_verify(s->scram, (const char *)rd.p, len)) {
                next = login_stop(s, "SCRAM: the server's signature does not match");
            }
        } else {
            next = login_stop(s, "server asked for an unsupported authentication method");
        }
        break;
    }
    case 'S': {
        const char *name = pgr_str(&rd), *value = pgr_str(&rd);
        if (!rd.bad) {
            int i = var_index(name);
            if (i >= 0)
                pvars_set(&s->vars, i, value);
            pgbuf_put(&s->welcome, m, n);
        }
        break;
    }
    case 'K':
        s->be_pid = (uint32_t)pgr_i32(&rd);
        s->be_key = (uint32_t)pgr_i32(&rd);
        break;
    case 'E': {
        const char *msg = pg_error_field(m + 5, n - 5, 'M');
        next = login_stop(s, msg ? msg : "login failed");
        break;
    }
    case 'N': break;
    case 'Z':
        s->txn = n >= 6 ? (char)m[5] : 'I';
        s->ready = true;
        next = keel_make_ready(KEEL_STOP);
        break;
    default: login_failed(s, "unexpected message during login"); next = keel_make_ready(KEEL_STOP);
    }
    free(m);
    return next;
}

static keel_future *login_step(void *ctx)
{
    pserver *s = ctx;
    if (s->state == SV_CLOSED)
        return keel_make_ready(KEEL_STOP);
    return keel_then(read_msg(s->conn), login_msg, s);
}

static void send_startup(pserver *s)
{
    ppool *p = s->pool;
    const pool_config_db *d = p->db->cfg;
    pgbuf b = {0};
    pgbuf_begin(&b, 0);
    pgbuf_i32(&b, PG_PROTO_V3);
    pgbuf_str(&b, "user");
    pgbuf_str(&b, server_user(p));
    pgbuf_str(&b, "database");
    pgbuf_str(&b, d->dbname ? d->dbname : p->db->name);
    if (d->client_encoding) {
        pgbuf_str(&b, "client_encoding");
        pgbuf_str(&b, d->client_encoding);
    }
    if (d->datestyle) {
        pgbuf_str(&b, "datestyle");
        pgbuf_str(&b, d->datestyle);
    }
    if (d->timezone) {
        pgbuf_str(&b, "timezone");
        pgbuf_str(&b, d->timezone);
    }
    if (d->application_name) {
        pgbuf_str(&b, "application_name");
        pgbuf_str(&b, d->application_name);
    }
    pgbuf_u8(&b, 0);
    pgbuf_end(&b);
    send_to_server(s, &b);
}

static keel_future *after_connect_query(void *ctx, keel_result r)
{
    pserver *s = ctx;
    if (s->state == SV_CLOSED)
        return keel_make_ready(KEEL_STOP);
    if (r.err) {
        login_failed(s, s->internal_error ? s->internal_error : "connect_query failed");
        return keel_make_ready(KEEL_STOP);
    }
    pool_server_ready(s);
    return keel_make_ready(0);
}

static keel_future *server_loop(pserver *s);

static keel_future *logged_in(void *ctx, keel_result r)
{
    pserver *s = ctx;
    (void)r;
    if (s->state == SV_CLOSED)
        return keel_make_ready(0);
    ppool *p = s->pool;
    free(s->scram);
    s->scram = NULL;
    if (!p->have_welcome && !s->welcome.oom) {
        pgbuf_free(&p->welcome);
        p->welcome = s->welcome;
        memset(&s->welcome, 0, sizeof(s->welcome));
        p->have_welcome = true;
        pool_welcome_publish(p);
    }
    pgbuf_free(&s->welcome);
    free(p->login_error);
    p->login_error = NULL;
    if (pool_cfg->log_connections)
        plog("S-%p: %s/%s@%s:%u new connection to server (from %s:%u)", (void *)s, p->db->name,
             server_user(p), s->addr, s->port, "127.0.0.1", s->local_port);
    keel_future *loop = server_loop(s);
    if (p->db->cfg->connect_query) {
        keel_detach(keel_then_wrapped(server_internal_query(s, p->db->cfg->connect_query),
                                      after_connect_query, s));
    } else {
        pool_server_ready(s);
    }
    return loop;
}

static keel_future *connected(void *ctx, keel_result r)
{
    pserver *s = ctx;
    if (r.err) {
        s->conn = NULL;
        char msg[160];
        snprintf(msg, sizeof(msg), "connect failed: %s", keel_strerror(r.err));
        login_failed(s, msg);
        return keel_make_ready(0);
    }
    s->conn = r.ptr;
    if (s->state == SV_CLOSED) { /* closed while connecting */
        keel_detach(keel_conn_close(s->conn));
        s->conn = NULL;
        return keel_make_ready(0);
    }
    keel_conn_set_nodelay(s->conn, true);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    if (getsockname(keel_conn_fd(s->conn), (struct sockaddr *)&ss, &sl) == 0) {
        char a[64];
        fmt_addr(&ss, a, sizeof(a), &s->local_port);
    }
    send_startup(s);
    return keel_then(keel_repeat(login_step, s), logged_in, s);
}

static bool is_ip_literal(const char *h)
{
    struct in6_addr a6;
    struct in_addr a4;
    return inet_pton(AF_INET, h, &a4) == 1 || inet_pton(AF_INET6, h, &a6) == 1 ||
           !strcmp(h, "localhost");
}

typedef struct connect_ctx {
    char host[256];
    uint16_t port;
    uint64_t timeout_ns;
    char addr[64];
} connect_ctx;

static keel_future *resolved_connect(void *ctx, keel_result r)
{
    connect_ctx *cc = ctx;
    (void)r;
    keel_future *f = cc->addr[0] ? keel_connect(cc->addr, cc->port, cc->timeout_ns)
                                 : keel_make_error(-EHOSTUNREACH);
    free(cc);
    return f;
}

static keel_result resolve_host(void *arg)
{
    connect_ctx *cc = arg;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    if (getaddrinfo(cc->host, NULL, &hints, &res) == 0 && res) {
        uint16_t port;
        fmt_addr((struct sockaddr_storage *)res->ai_addr, cc->addr, sizeof(cc->addr), &port);
        freeaddrinfo(res);
    }
    return keel_ok(0);
}

/* Connects to host (a name is resolved in the blocking pool; a path is a
 * Unix socket directory, as libpq reads it). */
static keel_future *connect_host(const char *host, uint16_t port, uint64_t timeout_ns)
{
    char path[300];
    if (!host || host[0] == '/') {
        snprintf(path, sizeof(path), "unix:%s/.s.PGSQL.%u", host ? host : "/var/run/postgresql",
                 port);
        return keel_connect(path, 0, timeout_ns);
    }
    if (is_ip_literal(host))
        return keel_connect(host, port, timeout_ns);
    connect_ctx *cc = calloc(1, sizeof(*cc));
    if (!cc)
        return keel_make_error(-ENOMEM);
    snprintf(cc->host, sizeof(cc->host), "%s", host);
    cc->port = port;
    cc->timeout_ns = timeout_ns;
    return keel_then_wrapped(keel_run_blocking(resolve_host, cc), resolved_connect, cc);
}

static void server_free(void *ctx, keel_result r)
{
    pserver *s = ctx;
    (void)r;
    if (s->state != SV_CLOSED && s->state != SV_MOVING)
        server_close(s, "server conn crashed?");
    pool_shard *sh = shard_here();
    if (s->all_prev)
        s->all_prev->all_next = s->all_next;
    else
        sh->servers = s->all_next;
    if (s->all_next)
        s->all_next->all_prev = s->all_prev;
    sh->n_servers--;
    pvars_clear(&s->vars);
    prep_server_free(s);
    pgbuf_free(&s->welcome);
    free(s->scram);
    free(s->internal_error);
    free(s->internal_row);
    free(s);
}

/* Once s->connecting resolves: log in, then the reply loop. */
static keel_future *login_start(void *arg)
{
    pserver *s = arg;
    keel_future *f = s->connecting;
    s->connecting = NULL;
    return keel_then(f, connected, s);
}

void server_connect(ppool *p)
{
    pool_shard *sh = shard_here();
    pserver *s = calloc(1, sizeof(*s));
    if (!s) {
        atomic_fetch_sub(&p->g->servers, 1);
        pool_server_gone(p);
        return;
    }
    s->pool = p;
    s->id = ++sh->next_id;
    s->state = SV_CLOSED;
    server_set_state(s, SV_LOGIN);
    s->connect_ns = s->last_used_ns = keel_now_ns();
    s->txn = 'I';
    s->all_next = sh->servers;
    if (sh->servers)
        sh->servers->all_prev = s;
    sh->servers = s;
    sh->n_servers++;
    const pool_config_db *d = p->db->cfg;
    const char *host = d->nhosts ? d->hosts[p->db->next_host++ % d->nhosts] : d->host;
    s->port = (uint16_t)(d->port > 0 ? d->port : 5432);
    snprintf(s->addr, sizeof(s->addr), "%s", host ? host : "unix");
    uint64_t timeout = (uint64_t)(pool_cfg->server_connect_timeout * 1e9);
    s->connecting = connect_host(host, s->port, timeout);
    /* A server connection carries clients' traffic for its whole life, and
     * its continuations keep the group they are attached in: one the
     * janitor opens (min_pool_size, waiting clients) from the background
     * group goes on in main, as one a client's query opens does. */
    keel_future *f = keel_sched_group_current() == keel_sched_group_main()
                         ? login_start(s)
                         : keel_with_sched_group(keel_sched_group_main(), login_start, s);
    keel_on_done(f, server_free, s);
}

/* ---- closing ------------------------------------------------------------------------------ */

void server_close(pserver *s, const char *reason)
{
    if (s->state == SV_CLOSED || s->state == SV_MOVING)
        return;
    ppool *p = s->pool;
    bool was_login = s->state == SV_LOGIN;
    if (s->ready && pool_cfg->log_disconnections)
        plog("S-%p: %s/%s@%s:%u closing because: %s (age=%llus)", (void *)s, p->db->name,
             server_user(p), s->addr, s->port, reason,
             (unsigned long long)((keel_now_ns() - s->connect_ns) / 1000000000ull));
    pclient *c = s->client;
    s->client = NULL;
    server_set_state(s, SV_CLOSED);
    if (c) {
        c->server = NULL;
        client_server_died(c, reason);
    }
    if (keel_promise_pending(&s->internal_p))
        keel_promise_set_error(&s->internal_p, -ECONNRESET);
    atomic_fetch_sub(&p->g->servers, 1);
    pool_limit_server_dec(p);
    if (s->conn) {
        keel_conn *conn = s->conn;
        s->conn = NULL;
        keel_detach(keel_conn_close(conn));
    }
    (void)was_login;
    pool_server_gone(p);
}

/* ---- the reply loop ------------------------------------------------------------------------ */

static void track_param(pserver *s, const uint8_t *body, size_t len)
{
    pgreader rd;
    pgreader_init(&rd, body, len);
    const char *name = pgr_str(&rd), *value = pgr_str(&rd);
    if (rd.bad)
        return;
    int i = var_index(name);
    if (i < 0)
        return;
    pvars_set(&s->vars, i, value);
    if (s->client) /* the client's own SET: it follows the client to other servers */
        pvars_set(&s->client->vars, i, value);
}

/* After a ReadyForQuery: whether the server can go back to the pool. */
static bool releasable(const pserver *s)
{
    const pclient *c = s->client;
    if (!c || s->pending_z > 0 || s->dirty || c->fwd_left)
        return false;
    pool_mode m = s->pool->mode;
    if (m == POOL_MODE_SESSION)
        return false;
    return s->txn == 'I' || m == POOL_MODE_STATEMENT;
}

/* Walks the buffered replies: forwards to the client in one batch what is
 * for it, runs the pooler's bookkeeping on the messages that matter.
 * Returns the future that continues the loop. */
static keel_future *server_process(pserver *s);

static keel_future *server_continue(void *ctx, keel_result r)
{
    pserver *s = ctx;
    (void)r; /* a forward to a client that went away: the client's loop handles it */
    if (s->state == SV_CLOSED)
        return keel_make_ready(KEEL_STOP);
    return keel_make_ready(KEEL_CONTINUE);
}

static keel_future *server_got(void *ctx, keel_result r)
{
    pserver *s = ctx;
    if (s->state == SV_CLOSED)
        return keel_make_ready(KEEL_STOP);
    if (r.val == 0) {
        server_close(s, s->ready ? "server conn crashed?" : "server closed the connection");
        return keel_make_ready(KEEL_STOP);
    }
    return server_process(s);
}

static keel_future *server_step(void *ctx)
{
    pserver *s = ctx;
    if (s->state == SV_CLOSED || !s->conn)
        return keel_make_ready(KEEL_STOP);
    size_t need = s->need;
    s->need = 0;
    keel_future *rd = need ? keel_conn_read_exactly(s->conn, need) : keel_conn_read(s->conn);
    return keel_then(rd, server_got, s);
}

static keel_future *server_loop(pserver *s)
{
    return keel_repeat(server_step, s);
}

static void internal_done(pserver *s, int err)
{
    s->internal = s->internal_z > 0;
    if (keel_promise_pending(&s->internal_p))
        keel_promise_resolve(&s->internal_p, err < 0 ? keel_err(err) : keel_ok(0));
}

static keel_future *server_process(pserver *s)
{
    keel_conn *sc = s->conn;
    size_t have = keel_conn_buffered(sc), off = 0;
    bool release = false, internal_finished = false;
    pclient *c = s->client;
    bool forwarding = c && !s->internal_z;
    /* Bytes [0, off) are walked and all go the same way: to the client when
     * forwarding, else consumed here. A message that goes another way
     * first sends the walked bytes on, then is consumed on its own. */
    while (off < have) {
        if (s->fwd_left) {
            size_t n = have - off < s->fwd_left ? have - off : s->fwd_left;
            s->fwd_left -= (uint32_t)n;
            off += n;
            continue;
        }
        if (have - off < 5) {
            s->need = 5;
            break;
        }
        uint8_t h[5];
        keel_conn_copy_at(sc, off, h, 5);
        uint32_t len = pg_get32(h + 1);
        if (len < 4) {
            server_close(s, "server sent an invalid packet");
            return keel_make_ready(KEEL_STOP);
        }
        uint8_t t = h[0];
        bool inspect = t == 'Z' || t == 'S' || (t == 'E' && !forwarding) ||
                       (t == 'D' && s->capture_row && s->internal_z) ||
                       (forwarding && prep_inspects_reply(s, t));
        if (!inspect) {
            s->fwd_left = len + 1;
            continue;
        }
        if (len + 1 > INSPECT_MAX) {
            server_close(s, "server sent an oversized packet");
            return keel_make_ready(KEEL_STOP);
        }
        if (have - off < (size_t)len + 1) {
            s->need = (size_t)len + 1;
            break;
        }
        uint8_t stackbuf[256];
        uint8_t *m = len + 1 <= sizeof(stackbuf) ? stackbuf : malloc(len + 1);
        if (!m) {
            server_close(s, "out of memory");
            return keel_make_ready(KEEL_STOP);
        }
        keel_conn_copy_at(sc, off, m, (size_t)len + 1);
        bool drop = !forwarding;
        switch (t) {
        case 'Z':
            s->txn = len >= 5 ? (char)m[5] : 'I';
            if (s->internal_z > 0) {
                /* Internal queries are sent ahead of anything of the
                 * client's, so their replies come first. */
                drop = true;
                if (--s->internal_z == 0)
                    internal_finished = true;
            } else if (forwarding) {
                if (s->pending_z > 0)
                    s->pending_z--;
                prep_on_ready(s);
                pstats *st = &c->pool->stats;
                uint64_t now = keel_now_ns();
                if (c->query_start_ns) {
                    st->query_count++;
                    st->query_us += (now - c->query_start_ns) / 1000;
                    c->query_start_ns = 0;
                }
                if (s->txn == 'I' && c->xact_start_ns) {
                    st->xact_count++;
                    st->xact_us += (now - c->xact_start_ns) / 1000;
                    c->xact_start_ns = 0;
                }
                release = releasable(s);
                if (release && s->pool->mode == POOL_MODE_STATEMENT && s->txn != 'I')
                    s->stmt_violation = true;
            }
            break;
        case 'S': track_param(s, m + 5, len - 4); break;
        case 'D':
            if (s->capture_row && s->internal_z && !s->internal_row) {
                s->internal_row = malloc(len + 1);
                if (s->internal_row) {
                    memcpy(s->internal_row, m, len + 1);
                    s->internal_row_len = len + 1;
                }
            }
            break;
        case 'E':
            if (s->internal_z) {
                if (!s->internal_error) {
                    const char *msg = pg_error_field(m + 5, len - 4, 'M');
                    s->internal_error = strdup(msg ? msg : "error");
                }
            } else {
                const char *msg = pg_error_field(m + 5, len - 4, 'M');
                pwarn("S-%p: %s/%s@%s:%u server sent an error while idle: %s", (void *)s,
                      s->pool->db->name, s->pool->user, s->addr, s->port, msg ? msg : "?");
                s->close_after = true;
            }
            break;
        default:
            if (prep_reply(s, m, len + 1, &drop) < 0) {
                if (m != stackbuf)
                    free(m);
                server_close(s, "protocol error in prepared statement replies");
                return keel_make_ready(KEEL_STOP);
            }
            break;
        }
        if (m != stackbuf)
            free(m);
        if (drop) {
            if (off && forwarding) {
                c->pool->stats.bytes_out += off;
                keel_detach(keel_conn_forward(c->conn, sc, off));
            } else if (off) {
                keel_conn_consume(sc, off);
            }
            keel_conn_consume(sc, (size_t)len + 1);
            have -= off + len + 1;
            off = 0;
            if (internal_finished)
                break;
            continue;
        }
        off += len + 1;
        if (release)
            break;
    }
    keel_future *fw = NULL;
    if (off) {
        if (forwarding) {
            c->pool->stats.bytes_out += off;
            fw = keel_conn_forward(c->conn, sc, off);
        } else {
            keel_conn_consume(sc, off);
        }
    }
    if (release && s->stmt_violation && s->client) {
        /* PgBouncer's rule and words: the client goes, the server is not clean. */
        client_kill(s->client, "08P01", "transaction blocks not allowed in statement pooling mode");
    } else if (internal_finished) {
        /* Its continuation may give s to a client or close it: after the walk. */
        internal_done(s, s->internal_error ? -EPROTO : 0);
    } else if (release && s->client) {
        pool_release(s->client);
    } else if (s->close_after && !s->client && !s->internal_z) {
        server_close(s, "server sent an unexpected message");
    }
    if (s->state == SV_CLOSED) {
        if (fw)
            keel_detach(fw);
        return keel_make_ready(KEEL_STOP);
    }
    if (fw)
        return keel_then_wrapped(fw, server_continue, s);
    return keel_make_ready(KEEL_CONTINUE);
}

/* ---- the pooler's own queries ------------------------------------------------------------ */

int server_internal_send(pserver *s, const char *sql)
{
    if (s->state == SV_CLOSED || !s->conn)
        return -ECONNRESET;
    pgbuf b = {0};
    pgbuf_begin(&b, 'Q');
    pgbuf_str(&b, sql);
    pgbuf_end(&b);
    if (b.oom)
        return -ENOMEM;
    s->internal = true;
    s->internal_z++;
    keel_detach(keel_conn_write(s->conn, b.p, b.len));
    pgbuf_free(&b);
    return 0;
}

keel_future *server_internal_query(pserver *s, const char *sql)
{
    assert(!keel_promise_pending(&s->internal_p));
    free(s->internal_error);
    s->internal_error = NULL;
    int err = server_internal_send(s, sql);
    if (err)
        return keel_make_error(err);
    return keel_promise_init(&s->internal_p);
}

/* ---- cancel ------------------------------------------------------------------------------- */

typedef struct cancel_ctx {
    uint8_t pkt[16];
} cancel_ctx;

static void free_cancel(void *ctx, keel_result r)
{
    (void)r;
    free(ctx);
}

static keel_future *cancel_connected(void *ctx, keel_result r)
{
    cancel_ctx *cc = ctx;
    if (r.err)
        return keel_make_error(r.err);
    keel_conn *conn = r.ptr;
    keel_detach(keel_conn_write(conn, cc->pkt, 16));
    /* PostgreSQL closes the connection after reading it. */
    return keel_conn_close(conn);
}

void server_send_cancel(pserver *s)
{
    const pool_config_db *d = s->pool->db->cfg;
    cancel_ctx *cc = calloc(1, sizeof(*cc));
    if (!cc)
        return;
    pg_put32(cc->pkt, 16);
    pg_put32(cc->pkt + 4, PG_CANCEL_REQUEST);
    pg_put32(cc->pkt + 8, s->be_pid);
    pg_put32(cc->pkt + 12, s->be_key);
    const char *host = strcmp(s->addr, "unix") ? s->addr : d->host;
    uint64_t timeout = (uint64_t)(pool_cfg->server_connect_timeout * 1e9);
    keel_future *f = keel_then(connect_host(host, s->port, timeout), cancel_connected, cc);
    keel_on_done(f, free_cancel, cc);
}

/* ---- lending a server to another shard ----------------------------------------------------- */

/* What a server connection carries to its new shard; the socket moves, the
 * PostgreSQL session (and the statements prepared in it) goes on. */
typedef struct lend_msg {
    char *db, *user;
    int fd;
    unsigned to;
    uint32_t be_pid, be_key;
    char *vars[NVARS];
    char addr[64];
    uint16_t port, local_port;
    uint64_t connect_ns;
    void *prep;
} lend_msg;

static void lend_msg_free(lend_msg *m)
{
    free(m->db);
    free(m->user);
    for (int i = 0; i < NVARS; i++)
        free(m->vars[i]);
    free(m);
}

/* A server that could not move is gone: its slot goes back. */
static keel_future *lend_failed_here(void *arg)
{
    lend_msg *m = arg;
    for (ppool *p = shard_here()->pools; p; p = p->next)
        if (!strcmp(p->db->name, m->db) && !strcmp(p->user, m->user)) {
            atomic_fetch_sub(&p->g->servers, 1);
            pool_limit_server_dec(p);
            pool_kick_waiters(p);
            break;
        }
    prep_state_free(m->prep);
    lend_msg_free(m);
    return keel_make_ready(0);
}

static keel_future *adopt_here(void *arg)
{
    lend_msg *m = arg;
    pool_shard *sh = shard_here();
    ppool *p = NULL;
    for (ppool *q = sh->pools; q; q = q->next)
        if (!strcmp(q->db->name, m->db) && !strcmp(q->user, m->user))
            p = q;
    keel_conn *conn = p ? keel_conn_adopt(m->fd) : NULL;
    pserver *s = conn ? calloc(1, sizeof(*s)) : NULL;
    if (!s) {
        if (conn)
            keel_detach(keel_conn_close(conn));
        else
            close(m->fd);
        m->fd = -1;
        return lend_failed_here(m);
    }
    keel_conn_set_nodelay(conn, true);
    s->conn = conn;
    s->pool = p;
    s->id = ++sh->next_id;
    s->state = SV_CLOSED;
    server_set_state(s, SV_LOGIN); /* counted while it joins; ready just below */
    s->ready = true;
    s->txn = 'I';
    s->be_pid = m->be_pid;
    s->be_key = m->be_key;
    for (int i = 0; i < NVARS; i++)
        if (m->vars[i])
            pvars_set(&s->vars, i, m->vars[i]);
    memcpy(s->addr, m->addr, sizeof(s->addr));
    s->port = m->port;
    s->local_port = m->local_port;
    s->connect_ns = m->connect_ns;
    s->last_used_ns = keel_now_ns();
    s->prep = m->prep;
    m->prep = NULL;
    s->all_next = sh->servers;
    if (sh->servers)
        sh->servers->all_prev = s;
    sh->servers = s;
    sh->n_servers++;
    lend_msg_free(m);
    keel_on_done(server_loop(s), server_free, s);
    pool_server_ready(s);
    return keel_make_ready(0);
}

static void lent(void *ctx, keel_result r)
{
    lend_msg *m = ctx;
    if (r.err) { /* it had unread input or had failed: closed instead */
        keel_detach(keel_submit_to(m->to, lend_failed_here, m)); /* its waiters are there */
        return;
    }
    m->fd = (int)r.val;
    keel_detach(keel_submit_to(m->to, adopt_here, m));
}

void server_lend(pserver *s, unsigned to)
{
    ppool *p = s->pool;
    lend_msg *m = calloc(1, sizeof(*m));
    bool ok = m && (m->db = strdup(p->db->name)) && (m->user = strdup(p->user));
    for (int i = 0; ok && i < NVARS; i++)
        if (s->vars.v[i] && !(m->vars[i] = strdup(s->vars.v[i]->s)))
            ok = false;
    if (!ok) {
        if (m)
            lend_msg_free(m);
        server_close(s, "given to another shard");
        return;
    }
    m->to = to;
    m->be_pid = s->be_pid;
    m->be_key = s->be_key;
    memcpy(m->addr, s->addr, sizeof(m->addr));
    m->port = s->port;
    m->local_port = s->local_port;
    m->connect_ns = s->connect_ns;
    m->prep = s->prep;
    s->prep = NULL;
    if (pool_verbose)
        plog("S-%p: %s/%s@%s:%u lent to shard %u (idle %llu us)", (void *)s, p->db->name, p->user,
             s->addr, s->port, to, (unsigned long long)((keel_now_ns() - s->last_used_ns) / 1000));
    /* Off this shard's lists; the slot in the global count moves with it. */
    server_set_state(s, SV_MOVING);
    keel_conn *conn = s->conn;
    s->conn = NULL;
    keel_on_done(keel_conn_detach(conn), lent, m);
}
