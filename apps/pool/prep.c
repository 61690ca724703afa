/* Prepared statements across pooled server connections (see prep.h).
 *
 * A client's named statement gets a server-side name made from a hash of
 * its text and parameter types ("KP_" + 24 hex digits), the same on every
 * shard and for every client, so clients that prepare the same query share
 * one prepared statement per server connection. The client keeps a map
 * from its names to the server name and the Parse message that makes it.
 *
 *  - Parse: renamed and sent on. If the server connection already has that
 *    statement, an injected Close goes first (its CloseComplete is dropped):
 *    a client's Parse is rare, and re-parsing keeps the replies in order.
 *  - Bind, Describe of a statement: renamed; if this server connection has
 *    not prepared it yet, the Parse is injected first and its ParseComplete
 *    dropped.
 *  - Close of a statement: the client forgets it; the Close sent on names a
 *    statement that never exists, which PostgreSQL answers with a normal
 *    CloseComplete. The server keeps its copy for other clients.
 *
 * Replies are matched to requests in order: every Parse and Close we send
 * on pushes an entry (forward or drop) to the server's queue, popped by
 * each ParseComplete or CloseComplete. After an error the server skips to
 * the Sync, so at each ReadyForQuery the entries of that batch that got no
 * reply are discarded (and statements they would have prepared are not
 * counted as prepared). */
#include <errno.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "prep.h"

#define NAME_LEN 28 /* "KP_" + 24 hex + NUL */
#define PREFIX_MAX 65536u

typedef struct cstmt { /* a client's statement */
    char *name;
    char server_name[NAME_LEN];
    uint8_t *parse; /* the Parse message under the server name */
    size_t parse_len;
    struct cstmt *next;
} cstmt;

struct prep_map {
    cstmt *head;
    int n;
};

typedef struct sprep { /* prepared on a server connection */
    char name[NAME_LEN];
    bool confirmed;
    uint64_t used;
    struct sprep *next;
} sprep;

typedef struct pending { /* a Parse or Close sent, waiting for its reply */
    uint8_t reply;       /* '1' or '3' */
    bool drop;
    uint32_t batch; /* syncs sent before it */
    char name[NAME_LEN];
    struct pending *next;
} pending;

typedef struct sprep_state {
    sprep *stmts;
    int n;
    pending *q_head, *q_tail;
    uint32_t syncs, zs;
    uint64_t clock;
} sprep_state;

static sprep_state *st_of(pserver *s)
{
    if (!s->prep) {
        sprep_state *ss = calloc(1, sizeof(*ss));
        if (ss) /* batches in flight count as sent, unanswered */
            ss->syncs = (uint32_t)(s->pending_z > 0 ? s->pending_z : 0);
        s->prep = ss;
    }
    return (sprep_state *)s->prep;
}

bool prep_wants(const pclient *c, uint8_t t)
{
    if (c->pool->mode == POOL_MODE_SESSION || pool_cfg->max_prepared_statements <= 0)
        return false;
    return t == 'P' || t == 'B' || t == 'D' || t == 'C';
}

size_t prep_need(pclient *c, keel_conn *cc, size_t off, uint8_t t, uint32_t len)
{
    (void)c;
    (void)cc;
    (void)off;
    if (t == 'B' && len + 1 > PREFIX_MAX)
        return PREFIX_MAX;
    return (size_t)len + 1;
}

void prep_note_sync(pserver *s)
{
    if (s->prep)
        ((sprep_state *)s->prep)->syncs++;
}

static void server_name_of(const uint8_t *query_and_types, size_t len, char out[NAME_LEN])
{
    uint8_t md[32];
    unsigned mdlen = 0;
    EVP_Digest(query_and_types, len, md, &mdlen, EVP_sha256(), NULL);
    static const char hex[] = "0123456789abcdef";
    memcpy(out, "KP_", 3);
    for (int i = 0; i < 12; i++) {
        out[3 + 2 * i] = hex[md[i] >> 4];
        out[4 + 2 * i] = hex[md[i] & 15];
    }
    out[NAME_LEN - 1] = 0;
}

static cstmt *client_find(pclient *c, const char *name)
{
    if (!c->prep)
        return NULL;
    for (cstmt *p = c->prep->head; p; p = p->next)
        if (!strcmp(p->name, name))
            return p;
    return NULL;
}

static void client_forget(pclient *c, const char *name)
{
    if (!c->prep)
        return;
    for (cstmt **pp = &c->prep->head; *pp; pp = &(*pp)->next) {
        if (!strcmp((*pp)->name, name)) {
            cstmt *p = *pp;
            *pp = p->next;
            free(p->name);
            free(p->parse);
            free(p);
            c->prep->n--;
            return;
        }
    }
}

static sprep *server_find(sprep_state *ss, const char *name)
{
    for (sprep *p = ss->stmts; p; p = p->next)
        if (!strcmp(p->name, name))
            return p;
    return NULL;
}

static void server_forget(sprep_state *ss, const char *name)
{
    for (sprep **pp = &ss->stmts; *pp; pp = &(*pp)->next)
        if (!strcmp((*pp)->name, name)) {
            sprep *p = *pp;
            *pp = p->next;
            free(p);
            ss->n--;
            return;
        }
}

static int push_pending(sprep_state *ss, uint8_t reply, bool drop, const char *name)
{
    pending *p = calloc(1, sizeof(*p));
    if (!p)
        return -ENOMEM;
    p->reply = reply;
    p->drop = drop;
    p->batch = ss->syncs;
    snprintf(p->name, sizeof(p->name), "%s", name ? name : "");
    if (ss->q_tail)
        ss->q_tail->next = p;
    else
        ss->q_head = p;
    ss->q_tail = p;
    return 0;
}

static void put_close(pgbuf *b, const char *name)
{
    pgbuf_begin(b, 'C');
    pgbuf_u8(b, 'S');
    pgbuf_str(b, name);
    pgbuf_end(b);
}

/* Makes room under max_prepared_statements: the least recently used
 * statement is closed (its CloseComplete dropped). */
static int evict(sprep_state *ss, pgbuf *out)
{
    while (ss->n >= pool_cfg->max_prepared_statements && ss->stmts) {
        sprep *lru = NULL;
        for (sprep *p = ss->stmts; p; p = p->next)
            if (p->confirmed && (!lru || p->used < lru->used))
                lru = p;
        if (!lru)
            break;
        put_close(out, lru->name);
        if (push_pending(ss, '3', true, NULL))
            return -ENOMEM;
        server_forget(ss, lru->name);
    }
    return 0;
}

/* Injects st's Parse on s unless s has it. */
static int ensure(sprep_state *ss, cstmt *st, pgbuf *out)
{
    sprep *have = server_find(ss, st->server_name);
    if (have) {
        have->used = ++ss->clock;
        return 0;
    }
    if (evict(ss, out))
        return -ENOMEM;
    sprep *p = calloc(1, sizeof(*p));
    if (!p)
        return -ENOMEM;
    memcpy(p->name, st->server_name, NAME_LEN);
    p->used = ++ss->clock;
    p->next = ss->stmts;
    ss->stmts = p;
    ss->n++;
    pgbuf_put(out, st->parse, st->parse_len);
    return push_pending(ss, '1', true, st->server_name);
}

int prep_rewrite(pclient *c, pserver *s, uint8_t t, uint32_t len)
{
    keel_conn *cc = c->conn;
    sprep_state *ss = st_of(s);
    if (!ss)
        return -ENOMEM;
    size_t take = (size_t)len + 1;
    if (take > PREFIX_MAX)
        take = PREFIX_MAX;
    uint8_t *m = malloc(take);
    if (!m)
        return -ENOMEM;
    keel_conn_copy(cc, m, take);
    pgreader rd;
    pgreader_init(&rd, m + 5, take - 5);
    pgbuf out = {0};
    size_t consume = take; /* bytes of the original replaced by out */
    int rc = 0;
    switch (t) {
    case 'P': {
        const char *name = pgr_str(&rd);
        const uint8_t *rest = rd.p;
        if (rd.bad) {
            rc = -EPROTO;
            break;
        }
        if (!*name) { /* the unnamed statement: as it is */
            pgbuf_put(&out, m, take);
            break;
        }
        cstmt *st = client_find(c, name);
        if (st)
            client_forget(c, name);
        if (!c->prep && !(c->prep = calloc(1, sizeof(*c->prep)))) {
            rc = -ENOMEM;
            break;
        }
        st = calloc(1, sizeof(*st));
        if (!st || !(st->name = strdup(name))) {
            free(st);
            rc = -ENOMEM;
            break;
        }
        server_name_of(rest, (size_t)(m + take - rest), st->server_name);
        pgbuf pb = {0};
        pgbuf_begin(&pb, 'P');
        pgbuf_str(&pb, st->server_name);
        pgbuf_put(&pb, rest, (size_t)(m + take - rest));
        pgbuf_end(&pb);
        if (pb.oom) {
            free(st->name);
            free(st);
            rc = -ENOMEM;
            break;
        }
        st->parse = pb.p;
        st->parse_len = pb.len;
        st->next = c->prep->head;
        c->prep->head = st;
        c->prep->n++;
        /* Re-parse on a server that has it: Close first, reply dropped. */
        if (server_find(ss, st->server_name)) {
            put_close(&out, st->server_name);
            push_pending(ss, '3', true, NULL);
            server_forget(ss, st->server_name);
        }
        if (evict(ss, &out)) {
            rc = -ENOMEM;
            break;
        }
        sprep *p = calloc(1, sizeof(*p));
        if (!p) {
            rc = -ENOMEM;
            break;
        }
        memcpy(p->name, st->server_name, NAME_LEN);
        p->used = ++ss->clock;
        p->next = ss->stmts;
        ss->stmts = p;
        ss->n++;
        pgbuf_put(&out, st->parse, st->parse_len);
        rc = push_pending(ss, '1', false, st->server_name);
        break;
    }
    case 'B': {
        const char *portal = pgr_str(&rd);
        const char *name = pgr_str(&rd);
        if (rd.bad) {
            rc = -EPROTO;
            break;
        }
        cstmt *st = *name ? client_find(c, name) : NULL;
        if (!st) {
            consume = 0; /* unknown or unnamed: goes on untouched */
            break;
        }
        if ((rc = ensure(ss, st, &out)))
            break;
        size_t old_prefix = (size_t)(rd.p - m);
        size_t rest = (size_t)len + 1 - old_prefix;
        pgbuf_u8(&out, 'B');
        pgbuf_i32(&out, (int32_t)(4 + strlen(portal) + 1 + strlen(st->server_name) + 1 + rest));
        pgbuf_str(&out, portal);
        pgbuf_str(&out, st->server_name);
        consume = old_prefix;
        break;
    }
    case 'D':
    case 'C': {
        uint8_t kind = pgr_u8(&rd);
        const char *name = pgr_str(&rd);
        if (rd.bad) {
            rc = -EPROTO;
            break;
        }
        cstmt *st = kind == 'S' && *name ? client_find(c, name) : NULL;
        if (!st) {
            consume = 0;
            break;
        }
        if (t == 'D') {
            if ((rc = ensure(ss, st, &out)))
                break;
            pgbuf_begin(&out, 'D');
            pgbuf_u8(&out, 'S');
            pgbuf_str(&out, st->server_name);
            pgbuf_end(&out);
        } else {
            client_forget(c, name);
            /* A name no statement has: PostgreSQL still says CloseComplete. */
            put_close(&out, "KP_closed");
        }
        break;
    }
    }
    free(m);
    if (rc) {
        pgbuf_free(&out);
        return rc;
    }
    if (out.oom) {
        pgbuf_free(&out);
        return -ENOMEM;
    }
    if (out.len)
        keel_detach(keel_conn_write(s->conn, out.p, out.len));
    pgbuf_free(&out);
    if (consume) {
        keel_conn_consume(cc, consume);
        c->fwd_left = (uint32_t)((size_t)len + 1 - consume);
    } else {
        c->fwd_left = len + 1;
    }
    return 0;
}

bool prep_inspects_reply(const pserver *s, uint8_t t)
{
    const sprep_state *ss = s->prep;
    return ss && ss->q_head && (t == '1' || t == '3');
}

int prep_reply(pserver *s, const uint8_t *m, size_t len, bool *drop)
{
    (void)len;
    sprep_state *ss = s->prep;
    if (!ss || !ss->q_head || (m[0] != '1' && m[0] != '3'))
        return 0;
    pending *p = ss->q_head;
    if (p->reply != m[0])
        return -EPROTO;
    ss->q_head = p->next;
    if (!ss->q_head)
        ss->q_tail = NULL;
    if (p->reply == '1' && p->name[0]) {
        sprep *sp = server_find(ss, p->name);
        if (sp)
            sp->confirmed = true;
    }
    *drop = p->drop;
    free(p);
    return 0;
}

void prep_on_ready(pserver *s)
{
    sprep_state *ss = s->prep;
    if (!ss)
        return;
    ss->zs++;
    /* Entries of batches already answered got no reply: an error skipped them. */
    while (ss->q_head && ss->q_head->batch < ss->zs) {
        pending *p = ss->q_head;
        ss->q_head = p->next;
        if (p->reply == '1' && p->name[0]) {
            sprep *sp = server_find(ss, p->name);
            if (sp && !sp->confirmed)
                server_forget(ss, p->name);
        }
        free(p);
    }
    if (!ss->q_head)
        ss->q_tail = NULL;
}

static void forget_all(sprep_state *ss)
{
    while (ss->stmts) {
        sprep *p = ss->stmts;
        ss->stmts = p->next;
        free(p);
    }
    ss->n = 0;
}

void prep_server_reset(pserver *s)
{
    if (s->prep)
        forget_all(s->prep);
}

void prep_state_free(void *state)
{
    sprep_state *ss = state;
    if (!ss)
        return;
    forget_all(ss);
    while (ss->q_head) {
        pending *p = ss->q_head;
        ss->q_head = p->next;
        free(p);
    }
    free(ss);
}

void prep_server_free(pserver *s)
{
    prep_state_free(s->prep);
    s->prep = NULL;
}

void prep_client_free(pclient *c)
{
    if (!c->prep)
        return;
    while (c->prep->head)
        client_forget(c, c->prep->head->name);
    free(c->prep);
    c->prep = NULL;
}
