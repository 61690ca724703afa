/* PostgreSQL protocol helpers for keel-pool: see proto.h. */
#include "proto.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void pgbuf_free(pgbuf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

static bool reserve(pgbuf *b, size_t n)
{
    if (b->oom)
        return false;
    if (b->len + n <= b->cap)
        return true;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n)
        cap *= 2;
    uint8_t *p = realloc(b->p, cap);
    if (!p) {
        b->oom = true;
        return false;
    }
    b->p = p;
    b->cap = cap;
    return true;
}

void pgbuf_put(pgbuf *b, const void *p, size_t n)
{
    if (n && reserve(b, n)) {
        memcpy(b->p + b->len, p, n);
        b->len += n;
    }
}

void pgbuf_u8(pgbuf *b, uint8_t v)
{
    pgbuf_put(b, &v, 1);
}

void pgbuf_i16(pgbuf *b, int16_t v)
{
    uint8_t p[2] = {(uint8_t)((uint16_t)v >> 8), (uint8_t)v};
    pgbuf_put(b, p, 2);
}

void pgbuf_i32(pgbuf *b, int32_t v)
{
    uint8_t p[4];
    pg_put32(p, (uint32_t)v);
    pgbuf_put(b, p, 4);
}

void pgbuf_str(pgbuf *b, const char *s)
{
    pgbuf_put(b, s, strlen(s) + 1);
}

void pgbuf_begin(pgbuf *b, uint8_t t)
{
    if (t)
        pgbuf_u8(b, t);
    b->msg_start = b->len;
    pgbuf_i32(b, 0);
}

void pgbuf_end(pgbuf *b)
{
    if (!b->oom)
        pg_put32(b->p + b->msg_start, (uint32_t)(b->len - b->msg_start));
}

void pgbuf_error(pgbuf *b, uint8_t type, const char *severity, const char *sqlstate,
                 const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    pgbuf_begin(b, type);
    pgbuf_u8(b, 'S');
    pgbuf_str(b, severity);
    pgbuf_u8(b, 'V');
    pgbuf_str(b, severity);
    pgbuf_u8(b, 'C');
    pgbuf_str(b, sqlstate);
    pgbuf_u8(b, 'M');
    pgbuf_str(b, msg);
    pgbuf_u8(b, 0);
    pgbuf_end(b);
}

void pgbuf_param_status(pgbuf *b, const char *name, const char *value)
{
    pgbuf_begin(b, 'S');
    pgbuf_str(b, name);
    pgbuf_str(b, value);
    pgbuf_end(b);
}

void pgbuf_ready(pgbuf *b, char txn_status)
{
    pgbuf_begin(b, 'Z');
    pgbuf_u8(b, (uint8_t)txn_status);
    pgbuf_end(b);
}

void pgbuf_auth(pgbuf *b, int32_t code, const void *data, size_t len)
{
    pgbuf_begin(b, 'R');
    pgbuf_i32(b, code);
    pgbuf_put(b, data, len);
    pgbuf_end(b);
}

void pgbuf_row_desc(pgbuf *b, const char *const *names, const uint32_t *type_oids, int n)
{
    pgbuf_begin(b, 'T');
    pgbuf_i16(b, (int16_t)n);
    for (int i = 0; i < n; i++) {
        pgbuf_str(b, names[i]);
        pgbuf_i32(b, 0); /* table oid */
        pgbuf_i16(b, 0); /* column number */
        uint32_t oid = type_oids ? type_oids[i] : 25;
        pgbuf_i32(b, (int32_t)oid);
        pgbuf_i16(b, oid == 20 ? 8 : oid == 23 ? 4 : -1);
        pgbuf_i32(b, -1); /* type modifier */
        pgbuf_i16(b, 0);  /* text format */
    }
    pgbuf_end(b);
}

void pgbuf_data_row(pgbuf *b, const char *const *values, int n)
{
    pgbuf_begin(b, 'D');
    pgbuf_i16(b, (int16_t)n);
    for (int i = 0; i < n; i++) {
        if (!values[i]) {
            pgbuf_i32(b, -1);
            continue;
        }
        size_t l = strlen(values[i]);
        pgbuf_i32(b, (int32_t)l);
        pgbuf_put(b, values[i], l);
    }
    pgbuf_end(b);
}

void pgbuf_complete(pgbuf *b, const char *tag)
{
    pgbuf_begin(b, 'C');
    pgbuf_str(b, tag);
    pgbuf_end(b);
}

void pgbuf_quote_literal(pgbuf *b, const char *s)
{
    bool esc = strchr(s, '\\') != NULL;
    if (esc)
        pgbuf_u8(b, 'E');
    pgbuf_u8(b, '\'');
    for (; *s; s++) {
        if (*s == '\'' || *s == '\\')
            pgbuf_u8(b, (uint8_t)*s);
        pgbuf_u8(b, (uint8_t)*s);
    }
    pgbuf_u8(b, '\'');
}

int pg_parse_startup(const uint8_t *pkt, size_t len, pg_startup *out, const char **why)
{
    memset(out, 0, sizeof(*out));
    if (len < 8 || len > PG_MAX_STARTUP || pg_get32(pkt) != len) {
        *why = "invalid length of startup packet";
        return -1;
    }
    out->code = pg_get32(pkt + 4);
    if (out->code == PG_SSL_REQUEST || out->code == PG_GSSENC_REQUEST)
        return len == 8 ? 0 : (*why = "invalid length of startup packet", -1);
    if (out->code == PG_CANCEL_REQUEST) {
        if (len != 16) {
            *why = "invalid length of cancel request";
            return -1;
        }
        out->cancel_pid = pg_get32(pkt + 8);
        out->cancel_key = pg_get32(pkt + 12);
        return 0;
    }
    if (out->code >> 16 != 3) {
        *why = "unsupported frontend protocol";
        return -1;
    }
    /* Name/value strings, ended by an empty name; the last byte is 0. */
    if (pkt[len - 1] != 0) {
        *why = "invalid startup packet layout: expected terminator as last byte";
        return -1;
    }
    const char *p = (const char *)pkt + 8, *end = (const char *)pkt + len - 1;
    while (p < end) {
        const char *name = p;
        const char *nul = memchr(p, 0, (size_t)(end - p));
        if (!nul) {
            *why = "invalid startup packet layout";
            return -1;
        }
        if (nul == name)
            break;
        const char *value = nul + 1;
        if (value >= end) {
            *why = "invalid startup packet layout: expected terminator as last byte";
            return -1;
        }
        /* The value's NUL must come before the last byte, which is the
         * list's terminator (PostgreSQL's ProcessStartupPacket). */
        const char *vnul = memchr(value, 0, (size_t)(end - value));
        if (!vnul) {
            *why = "invalid startup packet layout: expected terminator as last byte";
            return -1;
        }
        if (out->nparams == PG_MAX_STARTUP_PARAMS) {
            *why = "too many startup parameters";
            return -1;
        }
        out->names[out->nparams] = name;
        out->values[out->nparams] = value;
        out->nparams++;
        p = vnul + 1;
    }
    return 0;
}

const char *pg_startup_get(const pg_startup *s, const char *name)
{
    for (int i = 0; i < s->nparams; i++)
        if (!strcmp(s->names[i], name))
            return s->values[i];
    return NULL;
}

uint8_t pgr_u8(pgreader *r)
{
    if (r->end - r->p < 1) {
        r->bad = true;
        return 0;
    }
    return *r->p++;
}

int16_t pgr_i16(pgreader *r)
{
    if (r->end - r->p < 2) {
        r->bad = true;
        return 0;
    }
    int16_t v = (int16_t)pg_get16(r->p);
    r->p += 2;
    return v;
}

int32_t pgr_i32(pgreader *r)
{
    if (r->end - r->p < 4) {
        r->bad = true;
        return 0;
    }
    int32_t v = (int32_t)pg_get32(r->p);
    r->p += 4;
    return v;
}

const char *pgr_str(pgreader *r)
{
    const uint8_t *nul = r->p < r->end ? memchr(r->p, 0, (size_t)(r->end - r->p)) : NULL;
    if (!nul) {
        r->bad = true;
        r->p = r->end;
        return "";
    }
    const char *s = (const char *)r->p;
    r->p = nul + 1;
    return s;
}

const uint8_t *pgr_bytes(pgreader *r, size_t n)
{
    if ((size_t)(r->end - r->p) < n) {
        r->bad = true;
        r->p = r->end;
        return NULL;
    }
    const uint8_t *p = r->p;
    r->p += n;
    return p;
}

const char *pg_error_field(const uint8_t *body, size_t len, char f)
{
    pgreader r;
    pgreader_init(&r, body, len);
    for (;;) {
        uint8_t code = pgr_u8(&r);
        if (!code || r.bad)
            return NULL;
        const char *v = pgr_str(&r);
        if (r.bad)
            return NULL;
        if (code == (uint8_t)f)
            return v;
    }
}
