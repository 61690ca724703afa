/* RESP, the Redis protocol: an incremental request parser and a reply writer.
 *
 * Both sides reproduce Redis 7's bytes: the parser accepts exactly what Redis's
 * processMultibulkBuffer()/processInlineBuffer() accept and fails with the same
 * error lines, and the writer emits what Redis's addReply*() functions emit, in
 * RESP2 and RESP3. Pure C without I/O: the server owns the sockets and buffers. */
#ifndef KV_RESP_H
#define KV_RESP_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* Redis's limits (server.h PROTO_*; networking.c). The argument vector grows as
 * arguments arrive, up to RESP_MAX_ARGS, never from the announced count alone. */
#define RESP_INLINE_MAX_BYTES (64 * 1024)         /* an inline line, a header line */
#define RESP_MAX_ARGS 2147483647LL                /* "*N": Redis 7 allows up to INT_MAX */
#define RESP_MAX_BULK_BYTES (512LL * 1024 * 1024) /* proto-max-bulk-len default */
#define RESP_UNAUTH_MAX_ARGS 10                   /* before AUTH */
#define RESP_UNAUTH_MAX_BULK_BYTES 16384          /* before AUTH */

typedef struct resp_arg {
    const char *ptr;
    size_t len;
} resp_arg;

/* One parsed command. argv points into the caller's buffer (multibulk) or into
 * the parser (inline, whose quoted arguments are unescaped). */
typedef struct resp_cmd {
    size_t argc;
    resp_arg *argv;
} resp_cmd;

/* Parser state for one connection, used by the shard that owns it. Set the two
 * settings after resp_parser_init() and between commands; members starting with
 * '_' are private. */
typedef struct resp_parser {
    long long max_bulk_len; /* proto-max-bulk-len; RESP_MAX_BULK_BYTES by default */
    bool unauthenticated;   /* Redis's authRequired(): the tighter limits apply */

    int _state;
    size_t _pos;         /* start of the line or bulk payload being read */
    size_t _scan;        /* the line has no terminator before here */
    bool _blind;         /* a NUL hides the line's terminator for good */
    size_t _seen;        /* len of the previous call, to check the caller's contract */
    long long _left;     /* bulks still to read in this multibulk */
    long long _bulk_len; /* length of the bulk being read */
    size_t _argc;
    size_t _argv_cap;
    resp_arg *_argv;
    size_t *_arg_off; /* offsets into buf while the command is incomplete */
    char *_inline;    /* unescaped inline arguments */
    size_t _inline_cap;
    int _errno;
    const char *_err;
    char _errbuf[48];
} resp_parser;

/* Prepares an idle parser with Redis's default limits. Never fails: memory is
 * taken on first use. */
void resp_parser_init(resp_parser *p);

/* Frees the parser's memory; argv of the last command becomes invalid. */
void resp_parser_free(resp_parser *p);

/* Forgets a partly parsed command or an error, keeping the settings. */
void resp_parser_reset(resp_parser *p);

/* Parses one command from buf[0, len).
 *
 * buf must begin at the first byte of the command: after a return > 0 the caller
 * drops (or skips) that many bytes and calls again with the rest, so pipelined
 * commands come out one per call. After a return of 0 the caller calls again with
 * the same bytes followed by more; the buffer may move in between (offsets are kept,
 * not pointers), and bytes already seen are not parsed again.
 *
 * Returns the bytes consumed by one complete command, with out->argc and out->argv
 * set, valid until the next call on this parser or until buf changes. out->argc is 0
 * for what Redis skips silently: an empty or blank inline line, "*0", "*-1"; the
 * caller drops those bytes and runs nothing.
 * Returns 0 when more bytes are needed (resp_parse_need() says how many).
 * A line (inline command, "*N" or "$N") whose end is more than 64 KiB in fails, as
 * it does in Redis when bytes trickle in; Redis accepts a little more when a long
 * line lands in one read, which would make the verdict depend on the split.
 * Returns -EPROTO on a protocol error with *err set to Redis's error line without
 * the '-' and CRLF ("ERR Protocol error: invalid bulk length"): send it and close
 * the connection, as Redis does. -ENOMEM, with *err set too, when the argument
 * vector cannot grow. Errors repeat on later calls until resp_parser_reset(). */
ssize_t resp_parse(resp_parser *p, const char *buf, size_t len, resp_cmd *out, const char **err);

/* After resp_parse() returned 0: how many more bytes must arrive before it can
 * make progress. Exact while a bulk payload is arriving, so the server can grow
 * its buffer once for a large value; 1 while a line is incomplete. */
size_t resp_parse_need(const resp_parser *p);

/* ---- Replies ---------------------------------------------------------------- */

/* An output buffer. Every resp_add_*() appends one whole reply element or nothing:
 * on failure it returns -ENOMEM (growable buffer) or -ENOBUFS (caller's fixed
 * memory is full), records the error in err, and every later append is a no-op
 * returning that error, so a caller may check err once after a whole reply. */
typedef struct resp_buf {
    char *data;
    size_t len;
    size_t cap;
    int err;     /* first failure, 0 if none */
    bool _fixed; /* data is the caller's: never reallocated or freed */
} resp_buf;

/* An empty growable buffer; memory is taken on first append. */
void resp_buf_init(resp_buf *b);

/* A buffer writing into the caller's mem[0, cap), which is never reallocated. */
void resp_buf_wrap(resp_buf *b, char *mem, size_t cap);

/* Frees a growable buffer's memory (not a wrapped one's) and empties it. */
void resp_buf_free(resp_buf *b);

/* Empties the buffer and clears err, keeping its memory. */
static inline void resp_buf_clear(resp_buf *b)
{
    b->len = 0;
    b->err = 0;
}

/* Makes room for n more bytes. Returns 0 or the buffer's error. */
int resp_buf_reserve(resp_buf *b, size_t n);

/* Appends bytes as they are: a pre-encoded reply, or a payload after a header. */
int resp_add_raw(resp_buf *b, const void *p, size_t n);

/* "+s\r\n", Redis's addReplyStatus(). CR and LF in s become spaces. */
int resp_add_status(resp_buf *b, const char *s);
int resp_add_status_len(resp_buf *b, const char *s, size_t len);

/* "-s\r\n". s carries its code, as the parser's err does: "ERR syntax error",
 * "WRONGTYPE Operation against a key holding the wrong kind of value". CR and LF in
 * s become spaces. */
int resp_add_error(resp_buf *b, const char *s);
int resp_add_error_len(resp_buf *b, const char *s, size_t len);

/* Formats an error like Redis's addReplyErrorFormat(): CR and LF at the ends are
 * trimmed and the ones inside become spaces. fmt includes the code ("ERR ..."). */
int resp_add_errorf(resp_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ":v\r\n". */
int resp_add_int(resp_buf *b, long long v);

/* "$len\r\n<p>\r\n". */
int resp_add_bulk(resp_buf *b, const void *p, size_t len);
int resp_add_bulk_cstr(resp_buf *b, const char *s);

/* Just "$len\r\n", for a large value the caller sends without copying it here;
 * the caller sends the len bytes and then "\r\n". */
int resp_add_bulk_header(resp_buf *b, size_t len);

/* v in decimal as a bulk string, Redis's addReplyBulkLongLong(). */
int resp_add_bulk_ll(resp_buf *b, long long v);

/* The null reply (a missing key): "$-1\r\n" in RESP2, "_\r\n" in RESP3. */
int resp_add_null(resp_buf *b, int proto);

/* The null array (BLPOP timeout, EXEC aborted): "*-1\r\n" in RESP2, "_\r\n" in RESP3. */
int resp_add_null_array(resp_buf *b, int proto);

/* Aggregate headers; the n elements follow. */
int resp_add_array(resp_buf *b, size_t n);           /* "*n" */
int resp_add_map(resp_buf *b, int proto, size_t n);  /* "%n", RESP2 "*2n": n pairs */
int resp_add_set(resp_buf *b, int proto, size_t n);  /* "~n", RESP2 "*n" */
int resp_add_push(resp_buf *b, int proto, size_t n); /* ">n", RESP2 "*n" (pub/sub) */

/* A double as Redis 7.0's addReplyDouble() writes it (ZSCORE, ZINCRBY...):
 * ",<d>\r\n" in RESP3, a bulk string in RESP2, the text "%.17g" ("inf",
 * "-inf"). keel-kv answers as the 7.0 series does (the Redis Debian ships);
 * 7.2 switched to resp_fmt_double()'s shortest form. */
int resp_add_double(resp_buf *b, int proto, double d);

/* "#t\r\n"/"#f\r\n" in RESP3, ":1\r\n"/":0\r\n" in RESP2. */
int resp_add_bool(resp_buf *b, int proto, bool v);

/* "(<digits>\r\n" in RESP3, a bulk string in RESP2. */
int resp_add_bignum(resp_buf *b, int proto, const char *num, size_t len);

/* "=len\r\next:<s>\r\n" in RESP3 (ext is three characters, "txt" or "mkd", padded
 * with spaces if shorter), a plain bulk string in RESP2. */
int resp_add_verbatim(resp_buf *b, int proto, const char *s, size_t len, const char *ext);

/* Redis's addReplyHumanLongDouble(): resp_fmt_long_double_human()'s text as a bulk
 * string in RESP2, a ",..." double in RESP3. INCRBYFLOAT and HINCRBYFLOAT do not use
 * it: they reply with that text as a bulk string in both protocols. */
int resp_add_human_long_double(resp_buf *b, int proto, long double v);

/* Deferred aggregate lengths, for replies whose count is known only at the end
 * (KEYS, SCAN): remember resp_add_deferred()'s offset, append the elements, then
 * set the length there, which moves the elements right by the header's size. */
static inline size_t resp_add_deferred(resp_buf *b)
{
    return b->len;
}
int resp_set_deferred_array(resp_buf *b, size_t at, size_t n);
int resp_set_deferred_map(resp_buf *b, int proto, size_t at, size_t n);
int resp_set_deferred_set(resp_buf *b, int proto, size_t at, size_t n);

/* ---- Number formatting ---------------------------------------------------- */

#define RESP_LL_CHARS 21            /* "-9223372036854775808" and a NUL */
#define RESP_DOUBLE_CHARS 32        /* resp_fmt_double()'s longest, with a NUL */
#define RESP_LONG_DOUBLE_CHARS 5120 /* Redis's MAX_LONG_DOUBLE_CHARS */

/* Writes v in decimal, without printf, NUL-terminated; returns the length. */
/* Redis's string2ll(): an optional '-', digits, no '+', no spaces, no
 * leading zeros, no "-0", within long long. Returns whether s is one. */
bool resp_string2ll(const char *s, size_t n, long long *out);

int resp_fmt_ll(char buf[RESP_LL_CHARS], long long v);

/* Writes d as Redis 7.2+'s d2string() does (used for ZSCORE, ZINCRBY, every double
 * reply): "nan", "inf", "-inf", "0", "-0"; integers up to 2^62 as integers; other
 * values as the shortest digits that read back as d (0.1, not 0.10000000000000001),
 * laid out without an exponent for moderate magnitudes ("0.00001", "123.25") and
 * with one otherwise ("1e+100", "1.5e-7"). NUL-terminated; returns the length.
 * Redis 7.0 printed these with "%.17g" instead. */
int resp_fmt_double(char buf[RESP_DOUBLE_CHARS], double d);

/* Writes v as Redis's ld2string(LD_STR_HUMAN) does for INCRBYFLOAT and
 * HINCRBYFLOAT: "%.17Lf" with the trailing zeros (and a bare '.') removed, never an
 * exponent, "-0" as "0", "inf"/"-inf". NUL-terminated; returns the length, or
 * -ENOSPC if cap is too small (RESP_LONG_DOUBLE_CHARS always suffices). */
int resp_fmt_long_double_human(char *buf, size_t cap, long double v);

#endif /* KV_RESP_H */
