/* The PostgreSQL frontend/backend protocol (version 3.0) as keel-pool needs
 * it: building messages into a growable buffer, parsing the startup packet
 * and reading the fields of the few messages the pooler looks into. Pure C,
 * no I/O. Message layout: a type byte, then a 32-bit big-endian length that
 * counts itself but not the type; the startup packet has no type byte. */
#ifndef POOL_PROTO_H
#define POOL_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PG_PROTO_V3 196608u         /* 3.0 */
#define PG_SSL_REQUEST 80877103u    /* 1234.5679 */
#define PG_GSSENC_REQUEST 80877104u /* 1234.5680 */
#define PG_CANCEL_REQUEST 80877102u /* 1234.5678 */

/* PostgreSQL's own limit for a startup packet (MAX_STARTUP_PACKET_LENGTH). */
#define PG_MAX_STARTUP 10000u

/* A growable output buffer. Out-of-memory sets oom and drops what follows,
 * so a builder never needs checks between appends: test oom once at the end. */
typedef struct pgbuf {
    uint8_t *p;
    size_t len, cap;
    size_t msg_start; /* where the open message's length goes */
    bool oom;
} pgbuf;

void pgbuf_free(pgbuf *b);
static inline void pgbuf_reset(pgbuf *b)
{
    b->len = 0;
    b->oom = false;
}
void pgbuf_put(pgbuf *b, const void *p, size_t n);
void pgbuf_u8(pgbuf *b, uint8_t v);
void pgbuf_i16(pgbuf *b, int16_t v);
void pgbuf_i32(pgbuf *b, int32_t v);
void pgbuf_str(pgbuf *b, const char *s); /* with its NUL */
/* Opens a message of type t (0: a startup packet, which has no type byte). */
void pgbuf_begin(pgbuf *b, uint8_t t);
/* Closes the open message: fills in its length. */
void pgbuf_end(pgbuf *b);

/* ErrorResponse ('E') or NoticeResponse ('N') with severity ("FATAL",
 * "ERROR", "LOG"), SQLSTATE code and message, as PostgreSQL sends them
 * (S, V, C, M fields). */
void pgbuf_error(pgbuf *b, uint8_t type, const char *severity, const char *sqlstate,
                 const char *fmt, ...) __attribute__((format(printf, 5, 6)));
void pgbuf_param_status(pgbuf *b, const char *name, const char *value);
void pgbuf_ready(pgbuf *b, char txn_status);
void pgbuf_auth(pgbuf *b, int32_t code, const void *data, size_t len);
/* RowDescription of n text columns; DataRow of n values (NULL: SQL NULL). */
void pgbuf_row_desc(pgbuf *b, const char *const *names, const uint32_t *type_oids, int n);
void pgbuf_data_row(pgbuf *b, const char *const *values, int n);
void pgbuf_complete(pgbuf *b, const char *tag);

static inline uint32_t pg_get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline uint16_t pg_get16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}
static inline void pg_put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* A startup packet's parameters: name/value pairs pointing into the packet. */
#define PG_MAX_STARTUP_PARAMS 32
typedef struct pg_startup {
    uint32_t code; /* PG_PROTO_V3, PG_SSL_REQUEST, PG_CANCEL_REQUEST, ... */
    int nparams;
    const char *names[PG_MAX_STARTUP_PARAMS], *values[PG_MAX_STARTUP_PARAMS];
    uint32_t cancel_pid, cancel_key; /* for PG_CANCEL_REQUEST */
} pg_startup;

/* Parses a whole startup packet (its 4-byte length included; len is that
 * length). The packet must stay alive while out is used. Returns 0, or -1
 * with *why set to what is wrong. */
int pg_parse_startup(const uint8_t *pkt, size_t len, pg_startup *out, const char **why);
const char *pg_startup_get(const pg_startup *s, const char *name);

/* A reader over one message's body, bounds-checked: any read past the end
 * sets bad and returns zeros/"". */
typedef struct pgreader {
    const uint8_t *p, *end;
    bool bad;
} pgreader;

static inline void pgreader_init(pgreader *r, const void *body, size_t len)
{
    r->p = body;
    r->end = r->p + len;
    r->bad = false;
}
uint8_t pgr_u8(pgreader *r);
int16_t pgr_i16(pgreader *r);
int32_t pgr_i32(pgreader *r);
const char *pgr_str(pgreader *r); /* NUL-terminated inside the body */
const uint8_t *pgr_bytes(pgreader *r, size_t n);

/* From an ErrorResponse/NoticeResponse body: the field with code f ('C', 'M',
 * 'S'), or NULL. */
const char *pg_error_field(const uint8_t *body, size_t len, char f);

/* Whether s is a valid "name" for a SQL identifier value we quote into a
 * SET statement: we quote with E'' escaping, so any string is fine; this
 * writes the quoted literal into b (no NUL). */
void pgbuf_quote_literal(pgbuf *b, const char *s);

#endif
