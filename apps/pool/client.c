/* keel-pool's client connections: the startup packet (SSL and GSS
 * encryption declined, cancel requests routed to the shard that owns the
 * client), authentication, then the query loop, which forwards the client's
 * messages to a server taken from the pool for as long as the pool mode
 * says. */
#include <errno.h>
#include <openssl/rand.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "auth.h"
#include "pool.h"
#include "prep.h"

#define CLIENT_MAX_MSG (1u << 30)     /* PostgreSQL's MaxAllocSize */
#define CLIENT_INSPECT_MAX (1u << 20) /* messages we must hold whole to read or rewrite */

_Atomic int pool_client_count;

static void client_log(pclient *c, const char *level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void client_log(pclient *c, const char *level, const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    pool_log(level, "C-%p: %s/%s@%s:%u %s", (void *)c, c->dbname ? c->dbname : "(nodb)",
             c->user ? c->user : "(nouser)", c->addr, c->port, msg);
}

static void send_buf(pclient *c, pgbuf *b)
{
    if (c->conn && b->len && !b->oom)
        keel_detach(keel_conn_write(c->conn, b->p, b->len));
    pgbuf_free(b);
}

void client_send_error(pclient *c, const char *sqlstate, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    pgbuf b = {0};
    pgbuf_error(&b, 'E', "ERROR", sqlstate, "%s", msg);
    send_buf(c, &b);
}

static void send_fatal(pclient *c, const char *sqlstate, const char *msg)
{
    pgbuf b = {0};
    pgbuf_error(&b, 'E', "FATAL", sqlstate, "%s", msg);
    send_buf(c, &b);
}

/* Closes the client's connection (after what is queued); the loop ends and
 * frees c. The caller must not use c afterwards. */
static void client_close_conn(pclient *c)
{
    if (!c->conn)
        return;
    keel_conn *conn = c->conn;
    c->conn = NULL;
    keel_detach(keel_conn_close(conn));
}

void client_kill(pclient *c, const char *sqlstate, const char *msg)
{
    if (!c->conn)
        return;
    client_log(c, "LOG", "closing because: %s (age=%llus)", msg,
               (unsigned long long)((keel_now_ns() - c->connect_ns) / 1000000000ull));
    c->close_logged = true;
    if (c->waiting)
        pool_unwait(c);
    if (c->server)
        pool_release(c);
    send_fatal(c, sqlstate, msg);
    client_close_conn(c);
}

void client_server_died(pclient *c, const char *msg)
{
    (void)msg;
    client_kill(c, "08P01", "server conn crashed?");
}

/* ---- the query loop ------------------------------------------------------------------- */

static keel_future *client_process(pclient *c);

static keel_future *client_got(void *ctx, keel_result r)
{
    pclient *c = ctx;
    if (!c->conn)
        return keel_make_ready(KEEL_STOP);
    if (r.val == 0) {
        return keel_make_ready(KEEL_STOP);
    }
    return client_process(c);
}

static void client_end(void *ctx, keel_result r);
static void client_after(pclient *c, keel_future *f);

static void client_read_done(void *ctx, keel_result r)
{
    pclient *c = ctx;
    client_after(c, r.err ? keel_make_error(r.err) : client_got(c, r));
}

static void client_step_done(void *ctx, keel_result r)
{
    client_after(ctx, keel_make_result(r));
}

/* The query loop, driven by callbacks rather than keel_repeat: an idle
 * client then holds one future (its pending read) and no chain around it,
 * which is most of what a pooler's 10,000 idle clients cost. f is the
 * outcome of the last step: KEEL_CONTINUE reads again, KEEL_STOP or an
 * error ends the client. */
static void client_after(pclient *c, keel_future *f)
{
    for (;;) {
        if (!keel_future_is_ready(f)) {
            keel_on_done(f, client_step_done, c);
            return;
        }
        keel_result r = keel_future_take(f);
        if (r.err || r.val == KEEL_STOP || !c->conn || c->closing) {
            client_end(c, r);
            return;
        }
        size_t need = c->need;
        c->need = 0;
        keel_future *rd = need ? keel_conn_read_exactly(c->conn, need) : keel_conn_read(c->conn);
        if (!keel_future_is_ready(rd)) {
            keel_on_done(rd, client_read_done, c);
            return;
        }
        keel_result got = keel_future_take(rd);
        f = got.err ? keel_make_error(got.err) : client_got(c, got);
    }
}

static keel_future *client_continue(void *ctx, keel_result r)
{
    pclient *c = ctx;
    if (r.err && c->conn && !c->server) {
        /* The forward failed because the server went away: that path
         * already told the client. */
    }
    return keel_make_ready(c->conn ? KEEL_CONTINUE : KEEL_STOP);
}

static keel_future *acquired(void *ctx, keel_result r);

/* The client's request, still waiting for a server, is cancelled: its
 * messages up to the Query or Sync that ends it are dropped and the client
 * gets what PostgreSQL answers a cancelled statement. If that end is not
 * buffered yet, the request waits again (the cancel came too early). */
static keel_future *cancel_queued(pclient *c)
{
    size_t have = keel_conn_buffered(c->conn), off = 0;
    while (have - off >= 5) {
        uint8_t h[5];
        keel_conn_copy_at(c->conn, off, h, 5);
        uint32_t len = pg_get32(h + 1);
        if (len < 4 || have - off < (size_t)len + 1)
            break;
        off += (size_t)len + 1;
        if (h[0] == 'Q' || h[0] == 'S') {
            keel_conn_consume(c->conn, off);
            pgbuf b = {0};
            pgbuf_error(&b, 'E', "ERROR", "57014", "canceling statement due to user request");
            pgbuf_ready(&b, 'I');
            send_buf(c, &b);
            return keel_make_ready(KEEL_CONTINUE);
        }
    }
    return keel_then_wrapped(pool_acquire(c), acquired, c);
}

static keel_future *acquired(void *ctx, keel_result r)
{
    pclient *c = ctx;
    if (!c->conn)
        return keel_make_ready(KEEL_STOP);
    if (r.err == -ETIMEDOUT) {
        client_kill(c, "08P01", "query_wait_timeout");
        return keel_make_ready(KEEL_STOP);
    }
    if (r.err == -ECANCELED) /* a CancelRequest while it waited for a server */
        return cancel_queued(c);
    if (r.err) {
        ppool *p = c->pool;
        char msg[300];
        if (p->login_error && r.err == -ECONNREFUSED)
            snprintf(msg, sizeof(msg), "%s", p->login_error);
        else
            snprintf(msg, sizeof(msg), "pooler error: %s", keel_strerror(r.err));
        client_kill(c, "08P01", msg);
        return keel_make_ready(KEEL_STOP);
    }
    return keel_make_ready(KEEL_CONTINUE);
}

static keel_future *admin_done(void *ctx, keel_result r)
{
    pclient *c = ctx;
    (void)r;
    if (!c->conn)
        return keel_make_ready(KEEL_STOP);
    send_buf(c, c->admin_out);
    free(c->admin_out);
    c->admin_out = NULL;
    if (c->admin_close) {
        client_close_conn(c);
        return keel_make_ready(KEEL_STOP);
    }
    return keel_make_ready(KEEL_CONTINUE);
}

/* An admin-console message: only simple queries. */
static keel_future *admin_message(pclient *c, uint8_t t, size_t total)
{
    uint8_t *m = malloc(total + 1);
    if (!m) {
        client_kill(c, "53200", "out of memory");
        return keel_make_ready(KEEL_STOP);
    }
    keel_conn_copy(c->conn, m, total);
    keel_conn_consume(c->conn, total);
    m[total] = 0;
    c->admin_out = calloc(1, sizeof(*c->admin_out));
    if (!c->admin_out) {
        free(m);
        client_kill(c, "53200", "out of memory");
        return keel_make_ready(KEEL_STOP);
    }
    keel_future *f;
    if (t == 'Q') {
        f = admin_query(c, (const char *)m + 5, c->admin_out);
    } else {
        pgbuf_error(c->admin_out, 'E', "ERROR", "08P01",
                    "admin console supports only the simple query protocol");
        if (t == 'S')
            pgbuf_ready(c->admin_out, 'I');
        f = keel_make_ready(0);
    }
    free(m);
    return keel_then_wrapped(f, admin_done, c);
}

/* Counts what a client message asks of the server, for the release rule:
 * a server goes back to the pool at a ReadyForQuery that answers the last
 * Query/Sync/FunctionCall sent, with no extended-protocol batch open. */
static void note_request(pclient *c, pserver *s, uint8_t t)
{
    uint64_t now = keel_now_ns();
    switch (t) {
    case 'Q':
    case 'F':
        s->pending_z++;
        prep_note_sync(s);
        if (!c->query_start_ns)
            c->query_start_ns = now;
        if (!c->xact_start_ns)
            c->xact_start_ns = now;
        break;
    case 'S':
        s->pending_z++;
        prep_note_sync(s);
        s->dirty = false;
        break;
    case 'P':
    case 'B':
    case 'E':
    case 'D':
    case 'C':
    case 'H':
        s->dirty = true;
        if (!c->query_start_ns)
            c->query_start_ns = now;
        if (!c->xact_start_ns)
            c->xact_start_ns = now;
        break;
    default: /* CopyData, CopyDone, CopyFail: inside a request already counted */ break;
    }
}

static bool valid_client_type(uint8_t t)
{
    switch (t) {
    case 'Q':
    case 'P':
    case 'B':
    case 'E':
    case 'D':
    case 'C':
    case 'S':
    case 'H':
    case 'F':
    case 'd':
    case 'c':
    case 'f':
    case 'X': return true;
    }
    return false;
}

static keel_future *client_process(pclient *c)
{
    keel_conn *cc = c->conn;
    size_t have = keel_conn_buffered(cc), off = 0;
    pserver *s = c->server;
    while (off < have) {
        if (c->fwd_left) {
            size_t n = have - off < c->fwd_left ? have - off : c->fwd_left;
            c->fwd_left -= (uint32_t)n;
            off += n;
            continue;
        }
        if (have - off < 5) {
            c->need = 5;
            break;
        }
        uint8_t h[5];
        keel_conn_copy_at(cc, off, h, 5);
        uint8_t t = h[0];
        uint32_t len = pg_get32(h + 1);
        if (!valid_client_type(t) || len < 4 || len > CLIENT_MAX_MSG) {
            if (off && s)
                keel_detach(keel_conn_forward(s->conn, cc, off));
            client_kill(c, "08P01",
                        len < 4 || len > CLIENT_MAX_MSG ? "invalid packet length"
                                                        : "invalid client packet type");
            return keel_make_ready(KEEL_STOP);
        }
        if (t == 'X') {
            if (off && s)
                keel_detach(keel_conn_forward(s->conn, cc, off));
            c->terminated = true;
            return keel_make_ready(KEEL_STOP);
        }
        if (c->admin) {
            if (len + 1 > CLIENT_INSPECT_MAX) {
                client_kill(c, "08P01", "admin query too long");
                return keel_make_ready(KEEL_STOP);
            }
            if (have < (size_t)len + 1) {
                c->need = len + 1;
                break;
            }
            return admin_message(c, t, (size_t)len + 1);
        }
        if (!s) {
            if (off) /* never: bytes before are forwarded only while a server is linked */
                break;
            return keel_then_wrapped(pool_acquire(c), acquired, c);
        }
        if (prep_wants(c, t)) {
            if (len + 1 > CLIENT_INSPECT_MAX && t != 'B') {
                client_kill(c, "08P01", "prepared statement message too long");
                return keel_make_ready(KEEL_STOP);
            }
            size_t want = prep_need(c, cc, off, t, len);
            if (want && have - off < want) {
                /* Send what is walked, then wait for the rest of this one. */
                if (off) {
                    c->pool->stats.bytes_in += off;
                    keel_detach(keel_conn_forward(s->conn, cc, off));
                }
                c->need = (uint32_t)want;
                return keel_make_ready(KEEL_CONTINUE);
            }
            if (off) {
                c->pool->stats.bytes_in += off;
                keel_detach(keel_conn_forward(s->conn, cc, off));
                have -= off;
                off = 0;
            }
            note_request(c, s, t);
            int rc = prep_rewrite(c, s, t, len);
            if (rc < 0) {
                client_kill(c, "08P01", "protocol error in prepared statement message");
                return keel_make_ready(KEEL_STOP);
            }
            have = keel_conn_buffered(cc);
            continue;
        }
        note_request(c, s, t);
        c->fwd_left = len + 1;
    }
    keel_future *fw = NULL;
    if (off) {
        c->pool->stats.bytes_in += off;
        fw = keel_conn_forward(s->conn, cc, off);
    }
    if (fw)
        return keel_then_wrapped(fw, client_continue, c);
    return keel_make_ready(KEEL_CONTINUE);
}

static void client_free(pclient *c)
{
    pool_shard *sh = shard_here();
    if (c->prev)
        c->prev->next = c->next;
    else
        sh->clients = c->next;
    if (c->next)
        c->next->prev = c->prev;
    sh->n_clients--;
    atomic_fetch_sub(&pool_client_count, 1);
    if (c->pool && c->counted)
        c->pool->n_clients_active--;
    if (c->counted_limits) {
        atomic_fetch_sub(&c->pool->db_limit->clients, 1);
        atomic_fetch_sub(&c->pool->user_limit->clients, 1);
    }
    pvars_clear(&c->vars);
    if (c->admin && c->admin_out) {
        pgbuf_free(c->admin_out);
        free(c->admin_out);
    } else if (!c->admin) {
        prep_client_free(c);
    }
    if (c->owns_user)
        free(c->user);
    if (c->owns_db)
        free(c->dbname);
    free(c);
}

static void client_end(void *ctx, keel_result r)
{
    pclient *c = ctx;
    if (c->waiting)
        pool_unwait(c);
    if (c->server)
        pool_release(c);
    if (c->conn && c->state == CL_LOGIN && r.err == -ETIMEDOUT) {
        /* The startup or password never came within client_login_timeout. */
        client_kill(c, "08P01", "client_login_timeout");
    }
    if (c->conn) {
        if (!c->close_logged && pool_cfg->log_disconnections && c->state != CL_LOGIN)
            client_log(c, "LOG", "closing because: %s (age=%llus)",
                       c->terminated ? "client close request"
                       : r.err       ? keel_strerror(r.err)
                                     : "client unexpected eof",
                       (unsigned long long)((keel_now_ns() - c->connect_ns) / 1000000000ull));
        client_close_conn(c);
    }
    client_free(c);
}

/* ---- login -------------------------------------------------------------------------------- */

static keel_future *login_fail(pclient *c, const char *sqlstate, const char *msg)
{
    client_log(c, "WARNING", "login failed: %s", msg);
    send_fatal(c, sqlstate, msg);
    client_close_conn(c);
    return keel_make_error(-EACCES);
}

static keel_future *send_welcome(pclient *c)
{
    ppool *p = c->pool;
    pgbuf b = {0};
    if (!c->auth_ok_sent)
        pgbuf_auth(&b, 0, NULL, 0);
    /* The first server's ParameterStatus, with the client's own settings. */
    bool sent[NVARS] = {0};
    if (p && p->have_welcome) {
        pgreader rd;
        pgreader_init(&rd, p->welcome.p, p->welcome.len);
        while (rd.p < rd.end) {
            const uint8_t *start = rd.p;
            uint8_t t = pgr_u8(&rd);
            uint32_t len = (uint32_t)pgr_i32(&rd);
            if (rd.bad || len < 4 || (size_t)(rd.end - start) < len + 1)
                break;
            pgreader body;
            pgreader_init(&body, start + 5, len - 4);
            rd.p = start + len + 1;
            if (t != 'S')
                continue;
            const char *name = pgr_str(&body), *value = pgr_str(&body);
            int i = var_index(name);
            if (i >= 0 && c->vars.v[i]) {
                value = c->vars.v[i]->s;
                sent[i] = true;
            } else if (i >= 0) {
                pvars_set(&c->vars, i, value);
                sent[i] = true;
            }
            pgbuf_param_status(&b, name, value);
        }
    }
    for (int i = 0; i < NVARS; i++)
        if (!sent[i] && c->vars.v[i])
            pgbuf_param_status(&b, var_names[i], c->vars.v[i]->s);
    if (c->admin) { /* what PgBouncer's console tells psql about itself */
        pgbuf_param_status(&b, "server_version", POOL_VERSION "/bouncer");
        pgbuf_param_status(&b, "server_encoding", "UTF8");
        if (!sent[VAR_ENCODING] && !c->vars.v[VAR_ENCODING])
            pgbuf_param_status(&b, "client_encoding", "UTF8");
        pgbuf_param_status(&b, "integer_datetimes", "on");
        if (!c->vars.v[VAR_SCS])
            pgbuf_param_status(&b, "standard_conforming_strings", "on");
    }
    pgbuf_begin(&b, 'K');
    pgbuf_i32(&b, (int32_t)c->cancel_pid);
    pgbuf_i32(&b, (int32_t)c->cancel_key);
    pgbuf_end(&b);
    pgbuf_ready(&b, 'I');
    send_buf(c, &b);
    c->state = CL_ACTIVE;
    if (p && c->owns_db && !strcmp(c->dbname, p->db->name)) {
        /* An idle client should cost little: share the pool's names. */
        free(c->dbname);
        c->dbname = p->db->name;
        c->owns_db = false;
    }
    if (p && c->owns_user && !strcmp(c->user, p->user)) {
        free(c->user);
        c->user = p->user;
        c->owns_user = false;
    }
    if (pool_cfg->log_connections)
        client_log(c, "LOG", "login attempt: db=%s user=%s tls=no", c->dbname, c->user);
    return keel_make_ready(0);
}

static keel_future *welcome_ready(void *ctx, keel_result r)
{
    pclient *c = ctx;
    if (!c->conn)
        return keel_make_error(-ECANCELED);
    if (r.err) {
        ppool *p = c->pool;
        const char *msg = p->login_error        ? p->login_error
                          : r.err == -ETIMEDOUT ? "query_wait_timeout"
                                                : "server login failed";
        char buf[300];
        snprintf(buf, sizeof(buf), "%s", msg);
        return login_fail(c, "08P01", buf);
    }
    /* The server did its job: the login is done, the client starts idle. */
    pool_release_unused(c);
    return send_welcome(c);
}

/* After authentication: the pool, its welcome, then ReadyForQuery. */
static keel_future *logged_in(pclient *c)
{
    ppool *p = c->pool;
    c->auth_ok_sent = true;
    pgbuf b = {0};
    pgbuf_auth(&b, 0, NULL, 0);
    send_buf(c, &b);
    if (c->admin) /* the console has no pool */
        return send_welcome(c);
    p->n_clients_active++;
    c->counted = true;
    if (pool_welcome_take(p)) /* this shard's, or another's: no server needed to log in */
        return send_welcome(c);
    /* PgBouncer sends the server's parameters, so the first client of a
     * pool waits for the first server login. */
    return keel_then_wrapped(pool_acquire(c), welcome_ready, c);
}

typedef struct auth_job auth_job;
static keel_future *read_password_msg_job(auth_job *j);

struct auth_job {
    pclient *c;
    char user[128];
    char secret[600];
    pool_secret_kind kind;
    uint8_t salt[4];
    char response[600];
    size_t response_len;
    pool_scram_server scram;
    pool_scram_secret scram_secret;
    char out[600];
    int rc;
    bool ok;
};

static keel_result md5_check_job(void *arg)
{
    auth_job *j = arg;
    j->ok = pool_md5_check(j->secret, j->kind, j->user, j->salt, j->response);
    return keel_ok(0);
}

static keel_result plain_check_job(void *arg)
{
    auth_job *j = arg;
    if (j->kind == POOL_SECRET_PLAIN) {
        j->ok = strlen(j->secret) == strlen(j->response) &&
                pool_auth_equal(j->secret, j->response, strlen(j->secret));
    } else if (j->kind == POOL_SECRET_MD5) {
        char md5[POOL_MD5_SIZE];
        pool_md5_secret(j->user, j->response, md5);
        j->ok = strlen(md5) == strlen(j->secret) && pool_auth_equal(md5, j->secret, strlen(md5));
    } else {
        pool_scram_secret sec;
        uint8_t salted[32], ck[32], sk[32], stored[32];
        j->ok = false;
        if (pool_scram_parse_secret(j->secret, &sec) == 0 &&
            pool_scram_salted_password(j->response, sec.salt, sec.salt_len, sec.iterations,
                                       salted) == 0 &&
            pool_scram_keys(salted, ck, stored, sk) == 0)
            j->ok = pool_auth_equal(stored, sec.stored_key, 32);
    }
    return keel_ok(0);
}

/* For a plain-text secret, SCRAM needs a stored secret: salt it once (the
 * PBKDF2 is the costly part). */
static keel_result scram_prepare_job(void *arg)
{
    auth_job *j = arg;
    if (j->kind == POOL_SECRET_SCRAM) {
        j->rc = pool_scram_parse_secret(j->secret, &j->scram_secret);
    } else {
        uint8_t salt[16];
        char text[300];
        RAND_bytes(salt, sizeof(salt));
        j->rc = pool_scram_make_secret(j->secret, salt, sizeof(salt), 4096, text, sizeof(text));
        if (j->rc >= 0)
            j->rc = pool_scram_parse_secret(text, &j->scram_secret);
    }
    return keel_ok(0);
}

static keel_result scram_final_job(void *arg)
{
    auth_job *j = arg;
    j->rc =
        pool_scram_server_final(&j->scram, j->response, j->response_len, j->out, sizeof(j->out));
    return keel_ok(0);
}

static keel_future *wrong_password(pclient *c)
{
    char msg[200];
    snprintf(msg, sizeof(msg), "password authentication failed for user \"%s\"", c->user);
    return login_fail(c, "28P01", msg);
}

static keel_future *auth_checked(void *ctx, keel_result r)
{
    auth_job *j = ctx;
    pclient *c = j->c;
    bool ok = j->ok && !r.err;
    free(j);
    if (!c->conn)
        return keel_make_error(-ECANCELED);
    return ok ? logged_in(c) : wrong_password(c);
}

/* After a blocking auth step: the client may have gone, or the step may
 * have failed (then the login ends with msg). NULL: go on with j. */
static keel_future *job_outcome(auth_job *j, const char *sqlstate, const char *msg)
{
    pclient *c = j->c;
    if (c->conn && j->rc >= 0)
        return NULL;
    free(j);
    return c->conn ? login_fail(c, sqlstate, msg) : keel_make_error(-ECANCELED);
}

static keel_future *scram_final_checked(void *ctx, keel_result r)
{
    auth_job *j = ctx;
    pclient *c = j->c;
    (void)r;
    keel_future *end = job_outcome(j, "28P01", "SASL authentication failed");
    if (end)
        return end;
    ppool *p = c->pool;
    if (j->kind == POOL_SECRET_SCRAM && j->scram.have_client_key) {
        /* Pass-through: log in to PostgreSQL with the client's own keys. */
        memcpy(p->scram_client_key, j->scram.client_key, 32);
        memcpy(p->scram_server_key, j->scram_secret.server_key, 32);
        p->have_scram_keys = true;
    }
    pgbuf b = {0};
    pgbuf_auth(&b, 12, j->out, (size_t)j->rc);
    send_buf(c, &b);
    free(j);
    return logged_in(c);
}

/* Reads the client's next 'p' message into j->response. */
static keel_future *got_pw_header(void *ctx, keel_result r);

/* A read of the password message ended the connection: NULL if it did not. */
static keel_future *pw_read_failed(auth_job *j, keel_result r)
{
    pclient *c = j->c;
    if (c->conn && !r.err && r.val > 0)
        return NULL;
    free(j);
    if (c->conn)
        client_close_conn(c);
    return keel_make_error(-ECONNRESET);
}

static keel_future *got_pw(void *ctx, keel_result r)
{
    auth_job *j = ctx;
    pclient *c = j->c;
    keel_future *gone = pw_read_failed(j, r);
    if (gone)
        return gone;
    size_t n = (size_t)r.val;
    uint8_t h[5];
    keel_conn_copy(c->conn, h, 5);
    size_t body = n - 5;
    uint8_t buf[700];
    keel_conn_copy(c->conn, buf, n);
    keel_conn_consume(c->conn, n);
    if (h[0] != 'p') {
        free(j);
        return login_fail(c, "08P01", "expected a password message");
    }
    const uint8_t *p = buf + 5;
    switch (c->auth_step) {
    case 1: /* md5 or cleartext: a NUL-terminated string */
        if (!body || p[body - 1] != 0 || body > sizeof(j->response)) {
            free(j);
            return login_fail(c, "08P01", "invalid password packet");
        }
        memcpy(j->response, p, body);
        return keel_then_wrapped(
            keel_run_blocking(c->auth_plain ? plain_check_job : md5_check_job, j), auth_checked, j);
    case 2: { /* SASLInitialResponse: mechanism, length, data */
        pgreader rd;
        pgreader_init(&rd, p, body);
        const char *mech = pgr_str(&rd);
        int32_t dlen = pgr_i32(&rd);
        if (rd.bad || strcmp(mech, "SCRAM-SHA-256") || dlen < 0 ||
            dlen > (int32_t)(rd.end - rd.p)) {
            free(j);
            return login_fail(c, "08P01", "invalid SCRAM-SHA-256 initial response");
        }
        char out[600];
        int rc = pool_scram_server_first(&j->scram, &j->scram_secret, (const char *)rd.p,
                                         (size_t)dlen, out, sizeof(out));
        if (rc < 0) {
            free(j);
            return login_fail(c, "08P01", "malformed SCRAM message");
        }
        pgbuf b = {0};
        pgbuf_auth(&b, 11, out, strlen(out));
        send_buf(c, &b);
        c->auth_step = 3;
        return read_password_msg_job(j);
    }
    case 3: /* SASLResponse: client-final-message */
        if (body >= sizeof(j->response)) {
            free(j);
            return login_fail(c, "08P01", "malformed SCRAM message");
        }
        memcpy(j->response, p, body);
        j->response_len = body;
        return keel_then_wrapped(keel_run_blocking(scram_final_job, j), scram_final_checked, j);
    }
    free(j);
    return login_fail(c, "08P01", "unexpected password message");
}

static keel_future *got_pw_header(void *ctx, keel_result r)
{
    auth_job *j = ctx;
    pclient *c = j->c;
    keel_future *gone = pw_read_failed(j, r);
    if (gone)
        return gone;
    uint8_t h[5];
    keel_conn_copy(c->conn, h, 5);
    uint32_t len = pg_get32(h + 1);
    if (len < 4 || len > 600) {
        free(j);
        return login_fail(c, "08P01", "invalid password packet length");
    }
    return keel_then_wrapped(keel_conn_read_exactly(c->conn, (size_t)len + 1), got_pw, j);
}

static keel_future *read_password_msg_job(auth_job *j)
{
    return keel_then_wrapped(keel_conn_read_exactly(j->c->conn, 5), got_pw_header, j);
}

static keel_future *scram_prepared(void *ctx, keel_result r)
{
    auth_job *j = ctx;
    pclient *c = j->c;
    (void)r;
    keel_future *end = job_outcome(j, "08P01", "invalid SCRAM secret in auth_file");
    if (end)
        return end;
    pgbuf b = {0};
    pgbuf_auth(&b, 10, "SCRAM-SHA-256\0", 15);
    send_buf(c, &b);
    c->auth_step = 2;
    return read_password_msg_job(j);
}

/* Authenticates c with the stored secret (kind): auth_type picks the method. */
static keel_future *authenticate(pclient *c, const char *secret, pool_secret_kind kind)
{
    const char *at = pool_cfg->auth_type;
    if (!strcmp(at, "trust") || !strcmp(at, "any") || (c->unix_sock && c->peer_ok))
        return logged_in(c);
    auth_job *j = calloc(1, sizeof(*j));
    if (!j)
        return login_fail(c, "53200", "out of memory");
    j->c = c;
    snprintf(j->user, sizeof(j->user), "%s", c->user);
    snprintf(j->secret, sizeof(j->secret), "%s", secret);
    j->kind = kind;
    if (!strcmp(at, "plain")) {
        c->auth_plain = true;
        c->auth_step = 1;
        pgbuf b = {0};
        pgbuf_auth(&b, 3, NULL, 0);
        send_buf(c, &b);
        return read_password_msg_job(j);
    }
    bool scram = !strcmp(at, "scram-sha-256") || kind == POOL_SECRET_SCRAM;
    if (scram) {
        if (kind == POOL_SECRET_MD5) { /* an md5 hash cannot answer SCRAM */
            free(j);
            return login_fail(c, "28P01", "SASL authentication failed");
        }
        return keel_then_wrapped(keel_run_blocking(scram_prepare_job, j), scram_prepared, j);
    }
    /* md5 */
    RAND_bytes(j->salt, 4);
    pgbuf b = {0};
    pgbuf_auth(&b, 5, j->salt, 4);
    send_buf(c, &b);
    c->auth_step = 1;
    return read_password_msg_job(j);
}

/* ---- auth_query ---------------------------------------------------------------------------- */

/* A user not in the auth_file is looked up with auth_query on a server
 * connection of the auth_user's pool; the secret it returns is cached in
 * the user's pool for its server logins. */
typedef struct aq_ctx {
    pclient *c;
    ppool *auth_pool, *user_pool;
} aq_ctx;

static keel_future *aq_done(void *ctx, keel_result r)
{
    aq_ctx *q = ctx;
    pclient *c = q->c;
    pserver *s = c->server;
    char *secret = NULL;
    bool found = false;
    if (s) {
        if (!r.err && s->internal_row) {
            /* DataRow: usename, passwd */
            pgreader rd;
            pgreader_init(&rd, s->internal_row + 5, s->internal_row_len - 5);
            int16_t n = pgr_i16(&rd);
            if (n >= 2) {
                int32_t l1 = pgr_i32(&rd);
                if (l1 >= 0)
                    pgr_bytes(&rd, (size_t)l1);
                int32_t l2 = pgr_i32(&rd);
                const uint8_t *pw = l2 >= 0 ? pgr_bytes(&rd, (size_t)l2) : NULL;
                if (!rd.bad && l1 >= 0) { /* a NULL user name: a function's empty answer */
                    found = true;
                    if (pw)
                        secret = strndup((const char *)pw, (size_t)l2);
                }
            }
        }
        free(s->internal_row);
        s->internal_row = NULL;
        s->capture_row = false;
        pool_release(c);
    }
    c->pool = q->user_pool;
    free(q);
    if (!c->conn) {
        free(secret);
        return keel_make_error(-ECANCELED);
    }
    if (!found) { /* PgBouncer's words when auth_query finds no such user */
        free(secret);
        return login_fail(c, "08P01", "bouncer config error");
    }
    if (!secret) {
        free(secret);
        return wrong_password(c);
    }
    ppool *p = c->pool;
    free(p->secret);
    p->secret = secret;
    p->secret_kind = pool_secret_classify(secret);
    return authenticate(c, secret, p->secret_kind);
}

static keel_future *aq_acquired(void *ctx, keel_result r)
{
    aq_ctx *q = ctx;
    pclient *c = q->c;
    if (!c->conn || r.err) {
        c->pool = q->user_pool;
        free(q);
        if (!c->conn)
            return keel_make_error(-ECANCELED);
        return login_fail(c, "08P01", "could not run auth_query: server login failed");
    }
    pserver *s = c->server;
    pgbuf b = {0};
    const char *aq = pool_cfg->auth_query;
    for (const char *p = aq; *p; p++) {
        if (p[0] == '$' && p[1] == '1' && !(p[2] >= '0' && p[2] <= '9')) {
            pgbuf_quote_literal(&b, c->user);
            p++;
        } else {
            pgbuf_u8(&b, (uint8_t)*p);
        }
    }
    pgbuf_u8(&b, 0);
    if (b.oom) {
        pgbuf_free(&b);
        return aq_done(q, keel_err(-ENOMEM));
    }
    s->capture_row = true;
    keel_future *f = server_internal_query(s, (const char *)b.p);
    pgbuf_free(&b);
    return keel_then_wrapped(f, aq_done, q);
}

static keel_future *auth_query_lookup(pclient *c, const char *auth_user)
{
    ppool *ap = pool_get(c->pool->db, auth_user);
    aq_ctx *q = calloc(1, sizeof(*q));
    if (!ap || !q) {
        free(q);
        return login_fail(c, "53200", "out of memory");
    }
    q->c = c;
    q->user_pool = c->pool;
    q->auth_pool = ap;
    c->pool = ap;
    return keel_then_wrapped(pool_acquire(c), aq_acquired, q);
}

/* ---- startup ------------------------------------------------------------------------------ */

static bool in_list(const char *list, const char *name)
{
    if (!list)
        return false;
    size_t n = strlen(name);
    for (const char *p = list; *p;) {
        while (*p == ' ' || *p == ',')
            p++;
        const char *e = p;
        while (*e && *e != ',' && *e != ' ')
            e++;
        if ((size_t)(e - p) == n && !strncasecmp(p, name, n))
            return true;
        p = e;
    }
    return false;
}

static keel_future *start_login(pclient *c, const pg_startup *st)
{
    const char *user = pg_startup_get(st, "user");
    const char *db = pg_startup_get(st, "database");
    if (!user || !*user)
        return login_fail(c, "08P01", "no username supplied");
    if (!db || !*db)
        db = user;
    c->user = strdup(user);
    c->dbname = strdup(db);
    c->owns_user = c->owns_db = true;
    if (!c->user || !c->dbname)
        return login_fail(c, "53200", "out of memory");
    for (int i = 0; i < st->nparams; i++) {
        const char *n = st->names[i];
        if (!strcmp(n, "user") || !strcmp(n, "database"))
            continue;
        int v = var_index(n);
        if (v >= 0) {
            pvars_set(&c->vars, v, st->values[i]);
            continue;
        }
        if (in_list(pool_cfg->ignore_startup_parameters, n))
            continue;
        char msg[200];
        snprintf(msg, sizeof(msg), "unsupported startup parameter: %s", n);
        return login_fail(c, "08P01", msg);
    }
    if (pool_cfg->max_client_conn > 0 &&
        atomic_load(&pool_client_count) > pool_cfg->max_client_conn)
        return login_fail(c, "53300", "no more connections allowed (max_client_conn)");

    if (!strcmp(db, "pgbouncer")) {
        c->admin = true;
        bool admin = in_list(pool_cfg->admin_users, user);
        bool stats = in_list(pool_cfg->stats_users, user);
        if (!strcmp(user, "pgbouncer") && c->unix_sock && c->peer_ok) {
            admin = true;
        } else if (!admin && !stats) {
            return login_fail(c, "08P01", "not allowed");
        }
        c->admin_stats_only = !admin;
        const pool_auth_entry *e = pool_users ? pool_auth_file_find(pool_users, user) : NULL;
        if (c->unix_sock && c->peer_ok)
            return send_welcome(c);
        if (!strcmp(pool_cfg->auth_type, "trust") || !strcmp(pool_cfg->auth_type, "any"))
            return send_welcome(c);
        if (!e)
            return wrong_password(c);
        return authenticate(c, e->password, e->kind);
    }

    pdb *d = pool_find_db(db);
    if (!d) {
        char msg[200];
        snprintf(msg, sizeof(msg), "no such database: %s", db);
        return login_fail(c, "08P01", msg);
    }
    if (db_disabled(d)) {
        char msg[200];
        snprintf(msg, sizeof(msg), "database \"%s\" is disabled", db);
        return login_fail(c, "08P01", msg);
    }
    const char *at = pool_cfg->auth_type;
    /* With auth_type any, or a database with a forced user, servers log in
     * as that user; the client's name is only a label. */
    const char *pool_user = user;
    if (!strcmp(at, "any") && d->cfg->user)
        pool_user = d->cfg->user;
    c->pool = pool_get(d, pool_user);
    if (!c->pool)
        return login_fail(c, "53200", "out of memory");
    int maxu = 0;
    for (size_t i = 0; i < pool_cfg->nusers; i++)
        if (!strcmp(pool_cfg->users[i].name, user))
            maxu = pool_cfg->users[i].max_user_connections;
    (void)maxu;

    if (!strcmp(at, "any"))
        return logged_in(c);
    const pool_auth_entry *e = pool_users ? pool_auth_file_find(pool_users, user) : NULL;
    if (e)
        return authenticate(c, e->password, e->kind);
    if (c->pool->secret)
        return authenticate(c, c->pool->secret, c->pool->secret_kind);
    const char *auth_user = d->cfg->auth_user ? d->cfg->auth_user : pool_cfg->auth_user;
    if (auth_user && *auth_user && pool_cfg->auth_query && *pool_cfg->auth_query)
        return auth_query_lookup(c, auth_user);
    if (!strcmp(at, "trust"))
        return login_fail(c, "28000", "\"trust\" authentication failed");
    return wrong_password(c);
}

/* ---- cancel requests -------------------------------------------------------------------- */

typedef struct cancel_req {
    uint32_t pid, key;
} cancel_req;

keel_future *client_cancel_local(void *arg)
{
    cancel_req *q = arg;
    for (pclient *c = shard_here()->clients; c; c = c->next) {
        if (c->cancel_pid == q->pid && c->cancel_key == q->key) {
            if (c->server && c->server->be_pid) {
                server_send_cancel(c->server);
            } else if (c->waiting) { /* no server runs it yet: cancel it here */
                pool_unwait(c);
                keel_promise_set_error(&c->wait_p, -ECANCELED);
            }
            break;
        }
    }
    free(q);
    return keel_make_ready(0);
}

static void route_cancel(const pg_startup *st)
{
    unsigned shard = st->cancel_pid & 0xff;
    if (shard >= keel_shard_count())
        return;
    cancel_req *q = malloc(sizeof(*q));
    if (!q)
        return;
    q->pid = st->cancel_pid;
    q->key = st->cancel_key;
    /* The client that started the query may live on another shard than
     * the cancel's connection: its shard forwards the cancel. */
    keel_detach(keel_submit_to(shard, client_cancel_local, q));
}

/* ---- the startup packet ---------------------------------------------------------------- */

static keel_future *login_finished(void *ctx, keel_result r)
{
    (void)ctx;
    (void)r;
    return keel_make_ready(KEEL_STOP);
}

static keel_future *got_startup(void *ctx, keel_result r)
{
    pclient *c = ctx;
    if (!c->conn || r.val == 0)
        return keel_make_error(-ECONNRESET);
    size_t len = (size_t)r.val;
    uint8_t *pkt = malloc(len);
    if (!pkt)
        return login_fail(c, "53200", "out of memory");
    keel_conn_copy(c->conn, pkt, len);
    keel_conn_consume(c->conn, len);
    pg_startup st;
    const char *why = NULL;
    if (pg_parse_startup(pkt, len, &st, &why)) {
        free(pkt);
        return login_fail(c, "08P01", why);
    }
    keel_future *f;
    if (st.code == PG_SSL_REQUEST || st.code == PG_GSSENC_REQUEST) {
        /* No TLS or GSS encryption yet: the client goes on in the clear or gives up. */
        keel_detach(keel_conn_write(c->conn, "N", 1));
        f = keel_make_ready(KEEL_CONTINUE);
    } else if (st.code == PG_CANCEL_REQUEST) {
        route_cancel(&st);
        client_close_conn(c);
        f = keel_make_error(-ECANCELED);
    } else {
        f = keel_then(start_login(c, &st), login_finished, c);
    }
    free(pkt);
    return f;
}

static keel_future *got_startup_len(void *ctx, keel_result r)
{
    pclient *c = ctx;
    if (!c->conn || r.val == 0)
        return keel_make_error(-ECONNRESET);
    uint8_t h[4];
    keel_conn_copy(c->conn, h, 4);
    uint32_t len = pg_get32(h);
    if (len < 8 || len > PG_MAX_STARTUP)
        return login_fail(c, "08P01", "invalid length of startup packet");
    return keel_then(keel_conn_read_exactly(c->conn, len), got_startup, c);
}

static keel_future *startup_step(void *ctx)
{
    pclient *c = ctx;
    if (!c->conn)
        return keel_make_error(-ECONNRESET);
    return keel_then(keel_conn_read_exactly(c->conn, 4), got_startup_len, c);
}

static void login_done(void *ctx, keel_result r)
{
    pclient *c = ctx;
    if (r.err || !c->conn) {
        client_end(c, r);
        return;
    }
    keel_conn_set_deadlines(c->conn, 0, 0, 0);
    client_after(c, keel_make_ready(KEEL_CONTINUE));
}

static uint64_t rng_state;

static uint32_t rand32(void)
{
    if (!rng_state)
        RAND_bytes((unsigned char *)&rng_state, sizeof(rng_state));
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 16);
}

void client_accept(void *ctx, keel_conn *conn)
{
    (void)ctx;
    pool_shard *sh = shard_here();
    pclient *c = calloc(1, sizeof(*c));
    if (!c) {
        keel_conn_abort(conn);
        return;
    }
    c->conn = conn;
    c->connect_ns = c->request_ns = keel_now_ns();
    c->state = CL_LOGIN;
    /* The cancel key names the shard in its low byte, so a CancelRequest
     * that lands on another shard finds its way (route_cancel). */
    c->cancel_pid = (rand32() & 0x7fffff00u) | sh->id;
    c->cancel_key = rand32();
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    int fd = keel_conn_fd(conn);
    if (getpeername(fd, (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_UNIX) {
            c->unix_sock = true;
            snprintf(c->addr, sizeof(c->addr), "unix");
            struct ucred cred;
            socklen_t cl = sizeof(cred);
            if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) == 0) {
                c->peer_ok = cred.uid == geteuid();
                c->peer_pid = (uint32_t)cred.pid;
            }
            c->port = c->local_port = (uint16_t)pool_cfg->listen_port;
        } else {
            fmt_addr(&ss, c->addr, sizeof(c->addr), &c->port);
        }
    }
    c->next = sh->clients;
    if (sh->clients)
        sh->clients->prev = c;
    sh->clients = c;
    sh->n_clients++;
    atomic_fetch_add(&pool_client_count, 1);
    keel_conn_set_nodelay(conn, true);
    uint64_t login_ns = (uint64_t)(pool_cfg->client_login_timeout * 1e9);
    keel_conn_set_deadlines(conn, login_ns, 0, 0);
    keel_on_done(keel_repeat(startup_step, c), login_done, c);
}

/* Client timeouts, from the janitor every 100 ms. */
void pool_janitor_clients(uint64_t now)
{
    uint64_t login = (uint64_t)(pool_cfg->client_login_timeout * 1e9);
    uint64_t idle = (uint64_t)(pool_cfg->client_idle_timeout * 1e9);
    uint64_t qt = (uint64_t)(pool_cfg->query_timeout * 1e9);
    uint64_t itt = (uint64_t)(pool_cfg->idle_transaction_timeout * 1e9);
    for (pclient *c = shard_here()->clients, *next; c; c = next) {
        next = c->next;
        if (!c->conn || c->admin)
            continue;
        uint64_t age = now - c->request_ns;
        if (c->state == CL_LOGIN) {
            if (login && now - c->connect_ns > login)
                client_kill(c, "08P01", "client_login_timeout");
            continue;
        }
        pserver *s = c->server;
        if (!s && !c->waiting && idle && age > idle)
            client_kill(c, "08P01", "client_idle_timeout");
        else if (s && qt && s->pending_z > 0 && age > qt)
            client_kill(c, "08P01", "query_timeout");
        else if (s && itt && s->pending_z == 0 && s->txn != 'I' && age > itt)
            client_kill(c, "08P01", "idle transaction timeout");
    }
}
