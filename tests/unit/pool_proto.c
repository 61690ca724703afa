/* pool proto: message framing, the fields of the messages keel-pool builds read back
 * byte by byte, the startup packet parser on valid and malformed packets (and on 100k
 * random ones: run under ASan, every packet sits in a buffer of exactly its length),
 * the bounds-checked reader and literal quoting. */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"

TestSuite(pool_proto, .timeout = 60);

/* ---- helpers --------------------------------------------------------------------- */

/* A startup packet being assembled: the length is filled in by pkt_done. */
typedef struct pkt {
    uint8_t b[PG_MAX_STARTUP + 64];
    size_t len;
} pkt;

static void pkt_u32(pkt *k, uint32_t v)
{
    pg_put32(k->b + k->len, v);
    k->len += 4;
}

static void pkt_raw(pkt *k, const void *p, size_t n)
{
    memcpy(k->b + k->len, p, n);
    k->len += n;
}

static void pkt_str(pkt *k, const char *s)
{
    pkt_raw(k, s, strlen(s) + 1);
}

static void pkt_start(pkt *k, uint32_t code)
{
    k->len = 0;
    pkt_u32(k, 0);
    pkt_u32(k, code);
}

static void pkt_done(pkt *k)
{
    pg_put32(k->b, (uint32_t)k->len);
}

/* Parses a copy of p[0..len) in a heap block of exactly len bytes, so that ASan sees a
 * read past the packet. *out's pointers are only valid until the next call. */
static uint8_t *parse_copy;

static int parse(const void *p, size_t len, pg_startup *out, const char **why)
{
    free(parse_copy);
    parse_copy = malloc(len ? len : 1);
    cr_assert(parse_copy);
    memcpy(parse_copy, p, len);
    *why = NULL;
    return pg_parse_startup(parse_copy, len, out, why);
}

static void parse_fini(void)
{
    free(parse_copy);
    parse_copy = NULL;
}

TestSuite(pool_proto_startup, .timeout = 60, .fini = parse_fini);

static void expect_reject(const void *p, size_t len, const char *why_part)
{
    pg_startup st;
    const char *why;
    cr_expect_eq(parse(p, len, &st, &why), -1, "a malformed packet of %zu bytes was accepted", len);
    cr_expect(why != NULL, "rejected without a reason");
    if (why && why_part)
        cr_expect(strstr(why, why_part), "reason \"%s\" does not mention \"%s\"", why, why_part);
}

/* ---- framing ------------------------------------------------------------------------ */

Test(pool_proto, a_message_is_its_type_then_a_length_that_counts_itself_but_not_the_type)
{
    pgbuf b = {0};
    pgbuf_begin(&b, 'Q');
    pgbuf_str(&b, "SELECT 1");
    pgbuf_end(&b);
    cr_assert(!b.oom);
    cr_assert_eq(b.len, 1 + 4 + 9);
    cr_expect_eq(b.p[0], 'Q');
    cr_expect_eq(pg_get32(b.p + 1), 4 + 9);
    cr_expect(!memcmp(b.p + 5, "SELECT 1", 9));

    /* A second message after the first gets its own length. */
    pgbuf_ready(&b, 'I');
    cr_assert_eq(b.len, 14 + 6);
    cr_expect_eq(b.p[14], 'Z');
    cr_expect_eq(pg_get32(b.p + 15), 5);
    cr_expect_eq(b.p[19], 'I');
    /* ...and the first is unchanged. */
    cr_expect_eq(pg_get32(b.p + 1), 13);

    /* reset keeps the memory and starts over. */
    pgbuf_reset(&b);
    cr_expect_eq(b.len, 0);
    pgbuf_complete(&b, "SELECT 1");
    cr_expect_eq(b.len, 1 + 4 + 9);
    cr_expect_eq(b.p[0], 'C');
    cr_expect_eq(pg_get32(b.p + 1), 13);
    pgbuf_free(&b);
    cr_expect_null(b.p);
}

Test(pool_proto, integers_are_big_endian)
{
    pgbuf b = {0};
    pgbuf_u8(&b, 0xab);
    pgbuf_i16(&b, -2);
    pgbuf_i32(&b, 0x01020304);
    pgbuf_i32(&b, -1);
    const uint8_t want[] = {0xab, 0xff, 0xfe, 1, 2, 3, 4, 0xff, 0xff, 0xff, 0xff};
    cr_assert_eq(b.len, sizeof(want));
    cr_expect(!memcmp(b.p, want, sizeof(want)));
    cr_expect_eq(pg_get16(b.p + 1), 0xfffe);
    pgbuf_free(&b);
}

Test(pool_proto, a_startup_packet_has_no_type_byte)
{
    pgbuf b = {0};
    pgbuf_begin(&b, 0);
    pgbuf_i32(&b, (int32_t)PG_PROTO_V3);
    pgbuf_str(&b, "user");
    pgbuf_str(&b, "alice");
    pgbuf_u8(&b, 0);
    pgbuf_end(&b);
    cr_assert(!b.oom);
    cr_assert_eq(b.len, 4 + 4 + 5 + 6 + 1);
    cr_expect_eq(pg_get32(b.p), b.len);
    cr_expect_eq(pg_get32(b.p + 4), PG_PROTO_V3);

    /* What the builder makes, the parser takes. */
    pg_startup st;
    const char *why = NULL;
    cr_assert_eq(pg_parse_startup(b.p, b.len, &st, &why), 0, "rejected: %s", why);
    cr_expect_eq(st.nparams, 1);
    cr_expect_str_eq(pg_startup_get(&st, "user"), "alice");
    pgbuf_free(&b);
}

Test(pool_proto, a_message_grows_the_buffer_past_its_first_allocation)
{
    pgbuf b = {0};
    char big[3000];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = 0;
    pgbuf_complete(&b, "A");
    pgbuf_complete(&b, big);
    cr_assert(!b.oom);
    cr_assert_eq(b.len, 7 + 1 + 4 + sizeof(big));
    cr_expect_eq(pg_get32(b.p + 8), 4 + sizeof(big));
    cr_expect(!memcmp(b.p + 12, big, sizeof(big)));
    pgbuf_free(&b);
}

/* ---- messages ------------------------------------------------------------------------ */

Test(pool_proto, error_response_fields_read_back_with_pg_error_field)
{
    pgbuf b = {0};
    pgbuf_error(&b, 'E', "FATAL", "28P01", "password authentication failed for user \"%s\"", "bob");
    cr_assert(!b.oom);
    cr_assert_eq(b.p[0], 'E');
    size_t len = pg_get32(b.p + 1);
    cr_assert_eq(len + 1, b.len);
    const uint8_t *body = b.p + 5;
    size_t blen = len - 4;
    cr_expect_str_eq(pg_error_field(body, blen, 'S'), "FATAL");
    cr_expect_str_eq(pg_error_field(body, blen, 'V'), "FATAL");
    cr_expect_str_eq(pg_error_field(body, blen, 'C'), "28P01");
    cr_expect_str_eq(pg_error_field(body, blen, 'M'),
                     "password authentication failed for user \"bob\"");
    cr_expect_null(pg_error_field(body, blen, 'D'));
    /* Fields in PostgreSQL's order, ended by a zero byte. */
    cr_expect_eq(body[0], 'S');
    cr_expect_eq(body[blen - 1], 0);

    /* A notice is the same with type 'N'. */
    pgbuf_reset(&b);
    pgbuf_error(&b, 'N', "LOG", "00000", "hello %d", 42);
    cr_expect_eq(b.p[0], 'N');
    cr_expect_str_eq(pg_error_field(b.p + 5, b.len - 5, 'M'), "hello 42");
    cr_expect_str_eq(pg_error_field(b.p + 5, b.len - 5, 'S'), "LOG");
    pgbuf_free(&b);
}

Test(pool_proto, pg_error_field_on_a_truncated_or_empty_body_is_null)
{
    /* Heap copies of exactly the given length, so ASan sees any overread. */
    static const uint8_t full[] = "SERROR\0C42601\0Msyntax\0";
    for (size_t n = 0; n < sizeof(full); n++) {
        uint8_t *body = malloc(n ? n : 1);
        memcpy(body, full, n);
        const char *m = pg_error_field(body, n, 'M');
        /* 'M' is complete only with its NUL, at offset 21. */
        if (n >= 22)
            cr_expect(m && !strcmp(m, "syntax"), "n=%zu", n);
        else
            cr_expect_null(m, "n=%zu: a field cut short was returned", n);
        free(body);
    }
}

Test(pool_proto, param_status_auth_and_ready_layouts)
{
    pgbuf b = {0};
    pgbuf_param_status(&b, "client_encoding", "UTF8");
    const uint8_t ps[] = "S\0\0\0\x19"
                         "client_encoding\0UTF8";
    cr_assert_eq(b.len, sizeof(ps));
    cr_expect(!memcmp(b.p, ps, sizeof(ps)));

    pgbuf_reset(&b);
    pgbuf_auth(&b, 5, "salt", 4); /* MD5 */
    const uint8_t md5[] = {'R', 0, 0, 0, 12, 0, 0, 0, 5, 's', 'a', 'l', 't'};
    cr_assert_eq(b.len, sizeof(md5));
    cr_expect(!memcmp(b.p, md5, sizeof(md5)));

    pgbuf_reset(&b);
    pgbuf_auth(&b, 0, NULL, 0); /* AuthenticationOk */
    const uint8_t ok[] = {'R', 0, 0, 0, 8, 0, 0, 0, 0};
    cr_assert_eq(b.len, sizeof(ok));
    cr_expect(!memcmp(b.p, ok, sizeof(ok)));
    pgbuf_free(&b);
}

Test(pool_proto, row_description_layout)
{
    pgbuf b = {0};
    const char *names[] = {"id", "name", "n"};
    const uint32_t oids[] = {20, 25, 23};
    pgbuf_row_desc(&b, names, oids, 3);
    cr_assert(!b.oom);
    cr_assert_eq(b.p[0], 'T');
    cr_assert_eq(pg_get32(b.p + 1) + 1, b.len);

    pgreader r;
    pgreader_init(&r, b.p + 5, b.len - 5);
    cr_expect_eq(pgr_i16(&r), 3);
    const int16_t sizes[] = {8, -1, 4};
    for (int i = 0; i < 3; i++) {
        cr_expect_str_eq(pgr_str(&r), names[i]);
        cr_expect_eq(pgr_i32(&r), 0, "table oid");
        cr_expect_eq(pgr_i16(&r), 0, "column number");
        cr_expect_eq((uint32_t)pgr_i32(&r), oids[i], "type oid");
        cr_expect_eq(pgr_i16(&r), sizes[i], "type size of column %d", i);
        cr_expect_eq(pgr_i32(&r), -1, "type modifier");
        cr_expect_eq(pgr_i16(&r), 0, "format");
    }
    cr_expect(!r.bad);
    cr_expect_eq(r.p, r.end, "bytes left over after the last column");

    /* No oids: every column is text (25), of variable size. */
    pgbuf_reset(&b);
    pgbuf_row_desc(&b, names, NULL, 1);
    pgreader_init(&r, b.p + 5, b.len - 5);
    cr_expect_eq(pgr_i16(&r), 1);
    cr_expect_str_eq(pgr_str(&r), "id");
    pgr_i32(&r);
    pgr_i16(&r);
    cr_expect_eq(pgr_i32(&r), 25);
    cr_expect_eq(pgr_i16(&r), -1);
    pgbuf_free(&b);
}

Test(pool_proto, data_row_layout_with_null_as_length_minus_one)
{
    pgbuf b = {0};
    const char *values[] = {"42", NULL, "", "hello"};
    pgbuf_data_row(&b, values, 4);
    cr_assert(!b.oom);
    const uint8_t want[] = {'D',  0,    0,   0,    4 + 2 + 6 + 4 + 4 + 9,
                            0,    4,    0,   0,    0,
                            2,    '4',  '2', 0xff, 0xff,
                            0xff, 0xff, 0,   0,    0,
                            0,    0,    0,   0,    5,
                            'h',  'e',  'l', 'l',  'o'};
    cr_assert_eq(b.len, sizeof(want));
    cr_expect(!memcmp(b.p, want, sizeof(want)));

    pgreader r;
    pgreader_init(&r, b.p + 5, b.len - 5);
    cr_expect_eq(pgr_i16(&r), 4);
    cr_expect_eq(pgr_i32(&r), 2);
    cr_expect(!memcmp(pgr_bytes(&r, 2), "42", 2));
    cr_expect_eq(pgr_i32(&r), -1);
    cr_expect_eq(pgr_i32(&r), 0);
    cr_expect_eq(pgr_i32(&r), 5);
    cr_expect(!memcmp(pgr_bytes(&r, 5), "hello", 5));
    cr_expect(!r.bad);
    cr_expect_eq(r.p, r.end);
    pgbuf_free(&b);
}

/* ---- pgreader ------------------------------------------------------------------------- */

Test(pool_proto, pgreader_reads_past_the_end_set_bad_and_return_zeros)
{
    /* Each read on a heap block one byte short of what it needs. */
    uint8_t *one = malloc(1), *three = malloc(3);
    one[0] = 0x7f;
    memcpy(three, "\x01\x02\x03", 3);
    pgreader r;

    pgreader_init(&r, three, 3);
    cr_expect_eq(pgr_i32(&r), 0);
    cr_expect(r.bad);
    cr_expect_eq(r.p, three, "a failed read consumed bytes");

    pgreader_init(&r, one, 1);
    cr_expect_eq(pgr_i16(&r), 0);
    cr_expect(r.bad);

    pgreader_init(&r, one, 0);
    cr_expect_eq(pgr_u8(&r), 0);
    cr_expect(r.bad);

    /* A string with no NUL in the body. */
    pgreader_init(&r, three, 3);
    cr_expect_str_eq(pgr_str(&r), "");
    cr_expect(r.bad);
    cr_expect_eq(r.p, r.end);
    pgreader_init(&r, three, 0);
    cr_expect_str_eq(pgr_str(&r), "");
    cr_expect(r.bad);

    /* Bytes: exactly what is left is fine, one more is not. */
    pgreader_init(&r, three, 3);
    cr_expect_eq(pgr_bytes(&r, 3), three);
    cr_expect(!r.bad);
    cr_expect_eq(pgr_bytes(&r, 0), three + 3);
    cr_expect(!r.bad);
    pgreader_init(&r, three, 3);
    cr_expect_null(pgr_bytes(&r, 4));
    cr_expect(r.bad);
    pgreader_init(&r, three, 3);
    cr_expect_null(pgr_bytes(&r, SIZE_MAX));
    cr_expect(r.bad);

    /* Once bad, reads keep failing and stay in bounds. */
    pgreader_init(&r, three, 3);
    cr_expect_eq(pgr_u8(&r), 1);
    cr_expect_eq(pgr_i16(&r), 0x0203);
    cr_expect(!r.bad);
    cr_expect_eq(pgr_u8(&r), 0);
    cr_expect(r.bad);
    cr_expect_eq(pgr_i32(&r), 0);
    cr_expect_str_eq(pgr_str(&r), "");
    cr_expect_null(pgr_bytes(&r, 1));
    cr_expect(r.p <= r.end);
    free(one);
    free(three);
}

Test(pool_proto, pgreader_walks_a_body_in_order)
{
    static const uint8_t body[] = {'x', 0, 5, 0, 0, 1, 0, 'a', 'b', 0, 'q'};
    uint8_t *p = malloc(sizeof(body));
    memcpy(p, body, sizeof(body));
    pgreader r;
    pgreader_init(&r, p, sizeof(body));
    cr_expect_eq(pgr_u8(&r), 'x');
    cr_expect_eq(pgr_i16(&r), 5);
    cr_expect_eq(pgr_i32(&r), 256);
    cr_expect_str_eq(pgr_str(&r), "ab");
    cr_expect(!r.bad);
    /* The last string has no NUL before the end. */
    cr_expect_str_eq(pgr_str(&r), "");
    cr_expect(r.bad);
    free(p);
}

/* ---- quoting ------------------------------------------------------------------------- */

static void expect_quoted(const char *s, const char *want)
{
    pgbuf b = {0};
    pgbuf_quote_literal(&b, s);
    cr_assert(!b.oom);
    cr_expect(b.len == strlen(want) && !memcmp(b.p, want, b.len), "quote(%s) gave %.*s, want %s", s,
              (int)b.len, (const char *)b.p, want);
    pgbuf_free(&b);
}

Test(pool_proto, quote_literal_doubles_quotes_and_escapes_backslashes_in_the_e_form)
{
    expect_quoted("", "''");
    expect_quoted("UTF8", "'UTF8'");
    expect_quoted("it's", "'it''s'");
    expect_quoted("''", "''''''");
    expect_quoted("a\\b", "E'a\\\\b'");
    expect_quoted("\\", "E'\\\\'");
    expect_quoted("x\\'; DROP TABLE t; --", "E'x\\\\''; DROP TABLE t; --'");
    expect_quoted("\\'\\'", "E'\\\\''\\\\'''");
}

/* ---- startup packets: valid ----------------------------------------------------------- */

Test(pool_proto_startup, a_v3_packet_gives_its_parameters)
{
    pkt k;
    pkt_start(&k, PG_PROTO_V3);
    pkt_str(&k, "user");
    pkt_str(&k, "alice");
    pkt_str(&k, "database");
    pkt_str(&k, "shop");
    pkt_str(&k, "options");
    pkt_str(&k, "-c search_path=app -c statement_timeout=5s");
    pkt_str(&k, "application_name");
    pkt_str(&k, ""); /* an empty value is a value */
    pkt_raw(&k, "", 1);
    pkt_done(&k);

    pg_startup st;
    const char *why;
    cr_assert_eq(parse(k.b, k.len, &st, &why), 0, "rejected: %s", why);
    cr_expect_eq(st.code, PG_PROTO_V3);
    cr_expect_eq(st.nparams, 4);
    cr_expect_str_eq(pg_startup_get(&st, "user"), "alice");
    cr_expect_str_eq(pg_startup_get(&st, "database"), "shop");
    cr_expect_str_eq(pg_startup_get(&st, "options"), "-c search_path=app -c statement_timeout=5s");
    cr_expect_str_eq(pg_startup_get(&st, "application_name"), "");
    cr_expect_null(pg_startup_get(&st, "replication"));
    cr_expect_str_eq(st.names[0], "user");
    cr_expect_str_eq(st.names[3], "application_name");
    /* The values point into the packet. */
    cr_expect((const uint8_t *)st.values[0] > parse_copy &&
              (const uint8_t *)st.values[0] < parse_copy + k.len);
}

Test(pool_proto_startup, a_v3_packet_with_no_parameters_and_a_newer_minor_version)
{
    pkt k;
    pkt_start(&k, PG_PROTO_V3);
    pkt_raw(&k, "", 1);
    pkt_done(&k);
    pg_startup st;
    const char *why;
    cr_assert_eq(parse(k.b, k.len, &st, &why), 0, "rejected: %s", why);
    cr_expect_eq(st.nparams, 0);
    cr_expect_null(pg_startup_get(&st, "user"));

    /* 3.2 (PostgreSQL 18's default) is still protocol 3. */
    pkt_start(&k, 3u << 16 | 2);
    pkt_str(&k, "user");
    pkt_str(&k, "u");
    pkt_raw(&k, "", 1);
    pkt_done(&k);
    cr_assert_eq(parse(k.b, k.len, &st, &why), 0, "rejected: %s", why);
    cr_expect_eq(st.code, 3u << 16 | 2);
    cr_expect_str_eq(pg_startup_get(&st, "user"), "u");
}

Test(pool_proto_startup, exactly_max_params_are_accepted)
{
    pkt k;
    pkt_start(&k, PG_PROTO_V3);
    char name[16];
    for (int i = 0; i < PG_MAX_STARTUP_PARAMS; i++) {
        snprintf(name, sizeof(name), "p%d", i);
        pkt_str(&k, name);
        pkt_str(&k, "v");
    }
    pkt_raw(&k, "", 1);
    pkt_done(&k);
    pg_startup st;
    const char *why;
    cr_assert_eq(parse(k.b, k.len, &st, &why), 0, "rejected: %s", why);
    cr_expect_eq(st.nparams, PG_MAX_STARTUP_PARAMS);
    cr_expect_str_eq(pg_startup_get(&st, "p31"), "v");
}

Test(pool_proto_startup, ssl_and_gssenc_requests_are_eight_bytes)
{
    pkt k;
    pg_startup st;
    const char *why;
    pkt_start(&k, PG_SSL_REQUEST);
    pkt_done(&k);
    cr_assert_eq(parse(k.b, k.len, &st, &why), 0, "rejected: %s", why);
    cr_expect_eq(st.code, PG_SSL_REQUEST);
    cr_expect_eq(st.nparams, 0);

    pkt_start(&k, PG_GSSENC_REQUEST);
    pkt_done(&k);
    cr_assert_eq(parse(k.b, k.len, &st, &why), 0, "rejected: %s", why);
    cr_expect_eq(st.code, PG_GSSENC_REQUEST);

    /* With a body they are malformed. */
    pkt_start(&k, PG_SSL_REQUEST);
    pkt_u32(&k, 0);
    pkt_done(&k);
    expect_reject(k.b, k.len, "length");
    pkt_start(&k, PG_GSSENC_REQUEST);
    pkt_raw(&k, "", 1);
    pkt_done(&k);
    expect_reject(k.b, k.len, "length");
}

Test(pool_proto_startup, a_cancel_request_gives_pid_and_key)
{
    pkt k;
    pg_startup st;
    const char *why;
    pkt_start(&k, PG_CANCEL_REQUEST);
    pkt_u32(&k, 12345);
    pkt_u32(&k, 0xdeadbeef);
    pkt_done(&k);
    cr_assert_eq(k.len, 16);
    cr_assert_eq(parse(k.b, k.len, &st, &why), 0, "rejected: %s", why);
    cr_expect_eq(st.code, PG_CANCEL_REQUEST);
    cr_expect_eq(st.cancel_pid, 12345);
    cr_expect_eq(st.cancel_key, 0xdeadbeef);

    /* Short or long: malformed. */
    pkt_start(&k, PG_CANCEL_REQUEST);
    pkt_u32(&k, 12345);
    pkt_done(&k);
    expect_reject(k.b, k.len, "cancel");
    pkt_start(&k, PG_CANCEL_REQUEST);
    pkt_u32(&k, 1);
    pkt_u32(&k, 2);
    pkt_u32(&k, 3);
    pkt_done(&k);
    expect_reject(k.b, k.len, "cancel");
}

/* ---- startup packets: malformed -------------------------------------------------------- */

Test(pool_proto_startup, a_length_field_that_differs_from_the_packet_is_rejected)
{
    pkt k;
    pkt_start(&k, PG_PROTO_V3);
    pkt_str(&k, "user");
    pkt_str(&k, "alice");
    pkt_raw(&k, "", 1);
    pkt_done(&k);
    size_t n = k.len;
    pg_put32(k.b, (uint32_t)n + 1);
    expect_reject(k.b, n, "length");
    pg_put32(k.b, (uint32_t)n - 1);
    expect_reject(k.b, n, "length");
    pg_put32(k.b, 0);
    expect_reject(k.b, n, "length");
    pg_put32(k.b, UINT32_MAX);
    expect_reject(k.b, n, "length");
}

Test(pool_proto_startup, shorter_than_eight_bytes_is_rejected)
{
    pkt k;
    for (size_t n = 0; n < 8; n++) {
        memset(k.b, 0, 8);
        pg_put32(k.b, (uint32_t)n);
        expect_reject(k.b, n, "length");
    }
}

Test(pool_proto_startup, longer_than_pg_max_startup_is_rejected)
{
    pkt k;
    pkt_start(&k, PG_PROTO_V3);
    pkt_str(&k, "options");
    size_t vlen = PG_MAX_STARTUP - k.len - 2; /* value, its NUL, the terminator */
    memset(k.b + k.len, 'o', vlen);
    k.len += vlen;
    pkt_raw(&k, "", 1);
    pkt_raw(&k, "", 1);
    pkt_done(&k);
    cr_assert_eq(k.len, PG_MAX_STARTUP);
    pg_startup st;
    const char *why;
    cr_expect_eq(parse(k.b, k.len, &st, &why), 0, "exactly the limit was rejected: %s", why);

    /* One byte more. */
    k.b[k.len - 2] = 'o';
    pkt_raw(&k, "", 1);
    pkt_done(&k);
    cr_assert_eq(k.len, PG_MAX_STARTUP + 1);
    expect_reject(k.b, k.len, "length");
}

Test(pool_proto_startup, a_packet_without_a_final_zero_byte_is_rejected)
{
    pkt k;
    pkt_start(&k, PG_PROTO_V3);
    pkt_str(&k, "user");
    pkt_raw(&k, "alice", 5); /* the value runs to the end */
    pkt_done(&k);
    expect_reject(k.b, k.len, "terminator");

    pkt_start(&k, PG_PROTO_V3);
    pkt_raw(&k, "x", 1);
    pkt_done(&k);
    expect_reject(k.b, k.len, "terminator");
}

/* PostgreSQL's ProcessStartupPacket: after the last pair the next byte must be the
 * terminator and it must be the packet's last ("expected terminator as last byte"). A
 * packet whose last byte is the NUL of the last value has a zero last byte but no
 * terminator. */
Test(pool_proto_startup, a_packet_whose_last_zero_ends_a_value_has_no_terminator)
{
    pkt k;
    pkt_start(&k, PG_PROTO_V3);
    pkt_str(&k, "user");
    pkt_str(&k, "alice");
    pkt_done(&k);
    expect_reject(k.b, k.len, "terminator");
}

Test(pool_proto_startup, a_name_without_a_value_is_rejected)
{
    pkt k;
    pkt_start(&k, PG_PROTO_V3);
    pkt_str(&k, "user");
    pkt_raw(&k, "", 1);
    pkt_done(&k);
    expect_reject(k.b, k.len, NULL);

    /* After a good pair. */
    pkt_start(&k, PG_PROTO_V3);
    pkt_str(&k, "user");
    pkt_str(&k, "alice");
    pkt_str(&k, "database");
    pkt_raw(&k, "", 1);
    pkt_done(&k);
    expect_reject(k.b, k.len, NULL);
}

Test(pool_proto_startup, more_than_max_params_are_rejected)
{
    pkt k;
    pkt_start(&k, PG_PROTO_V3);
    char name[16];
    for (int i = 0; i <= PG_MAX_STARTUP_PARAMS; i++) {
        snprintf(name, sizeof(name), "p%d", i);
        pkt_str(&k, name);
        pkt_str(&k, "v");
    }
    pkt_raw(&k, "", 1);
    pkt_done(&k);
    expect_reject(k.b, k.len, "too many");
}

Test(pool_proto_startup, protocol_2_and_other_unknown_codes_are_rejected)
{
    pkt k;
    const uint32_t codes[] = {2u << 16, 1u << 16, 4u << 16, 0, 1234u << 16 | 5677};
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
        pkt_start(&k, codes[i]);
        pkt_str(&k, "user");
        pkt_str(&k, "alice");
        pkt_raw(&k, "", 1);
        pkt_done(&k);
        expect_reject(k.b, k.len, "protocol");
    }
}

/* ---- startup packets: random ---------------------------------------------------------- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint32_t rng(void)
{
    /* xorshift64*: deterministic, so a failure reproduces. */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 2685821657736338717ull) >> 32);
}

/* Builds a plausible packet, then damages it a little. */
static size_t random_packet(uint8_t *b, size_t cap)
{
    static const char *const words[] = {"user", "database", "options", "", "x", "\xff\xfe"};
    pkt k;
    uint32_t kind = rng() % 8;
    uint32_t code = kind == 0   ? PG_SSL_REQUEST
                    : kind == 1 ? PG_GSSENC_REQUEST
                    : kind == 2 ? PG_CANCEL_REQUEST
                    : kind == 3 ? rng()
                                : PG_PROTO_V3;
    pkt_start(&k, code);
    int strs = (int)(rng() % 80);
    for (int i = 0; i < strs && k.len < PG_MAX_STARTUP - 200; i++) {
        if (rng() % 4 == 0) {
            size_t n = rng() % 64;
            for (size_t j = 0; j < n; j++)
                k.b[k.len++] = (uint8_t)(rng() % 4 ? 'a' + rng() % 26 : rng());
            k.b[k.len++] = 0;
        } else {
            pkt_str(&k, words[rng() % (sizeof(words) / sizeof(words[0]))]);
        }
    }
    if (rng() % 2)
        pkt_raw(&k, "", 1);
    if (rng() % 16 == 0) { /* a long one */
        size_t n = rng() % (PG_MAX_STARTUP + 20 - k.len);
        memset(k.b + k.len, rng() % 2 ? 0 : 'z', n);
        k.len += n;
    }
    pkt_done(&k);
    /* Mutations: flip bytes, truncate, extend, corrupt the length. */
    int muts = (int)(rng() % 4);
    for (int i = 0; i < muts; i++) {
        switch (rng() % 5) {
        case 0:
            if (k.len)
                k.b[rng() % k.len] ^= (uint8_t)(1u << (rng() % 8));
            break;
        case 1: k.b[rng() % (k.len + 1)] = 0; break;
        case 2: k.len = k.len ? rng() % k.len : 0; break;
        case 3:
            if (k.len < sizeof(k.b) - 8)
                k.len += rng() % 8;
            break;
        case 4:
            if (k.len >= 4)
                pg_put32(k.b, rng() % 2 ? (uint32_t)k.len : rng() % (PG_MAX_STARTUP + 10));
            break;
        }
    }
    if (rng() % 2 && k.len >= 4)
        pkt_done(&k); /* most packets should get past the length check */
    cr_assert(k.len <= cap);
    memcpy(b, k.b, k.len);
    return k.len;
}

Test(pool_proto_startup, random_and_mutated_packets_never_crash, .timeout = 120)
{
    static uint8_t b[sizeof(((pkt *)0)->b)];
    int accepted = 0;
    for (int i = 0; i < 100000; i++) {
        size_t len = random_packet(b, sizeof(b));
        pg_startup st;
        const char *why = NULL;
        int rc = parse(b, len, &st, &why);
        if (rc != 0) {
            cr_assert_eq(rc, -1);
            cr_assert(why != NULL, "packet %d rejected without a reason", i);
            continue;
        }
        accepted++;
        /* What is accepted is consistent. */
        cr_assert_geq(len, 8);
        cr_assert_leq(len, PG_MAX_STARTUP);
        cr_assert_eq(pg_get32(parse_copy), len);
        cr_assert(st.nparams >= 0 && st.nparams <= PG_MAX_STARTUP_PARAMS);
        for (int j = 0; j < st.nparams; j++) {
            const uint8_t *n = (const uint8_t *)st.names[j], *v = (const uint8_t *)st.values[j];
            cr_assert(n >= parse_copy + 8 && n < parse_copy + len);
            cr_assert(v > n && v < parse_copy + len);
            cr_assert(memchr(v, 0, (size_t)(parse_copy + len - v)) != NULL);
            cr_assert(st.names[j][0] != 0);
        }
    }
    /* The generator must reach the parameter loop, not only the length check. */
    cr_expect_gt(accepted, 1000, "only %d of 100000 packets were accepted", accepted);
}
