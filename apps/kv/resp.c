/* RESP parser and reply writer; see resp.h. The comments name the Redis 7
 * function whose behaviour each piece reproduces. */
#include "resp.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- Parser ------------------------------------------------------------------ */

enum {
    ST_START,       /* before the first byte of a command */
    ST_INLINE,      /* waiting for the '\n' of an inline command */
    ST_COUNT,       /* waiting for the "*N\r" line */
    ST_BULK_HEADER, /* waiting for a "$N\r" line */
    ST_BULK_DATA,   /* waiting for N bytes and the two that end them */
    ST_ERROR,
};

/* Redis's wording, behind the "-" that addReplyError() adds with "ERR ". */
static const char ERR_BIG_INLINE[] = "ERR Protocol error: too big inline request";
static const char ERR_QUOTES[] = "ERR Protocol error: unbalanced quotes in request";
static const char ERR_BIG_MBULK[] = "ERR Protocol error: too big mbulk count string";
static const char ERR_MBULK_LEN[] = "ERR Protocol error: invalid multibulk length";
static const char ERR_UNAUTH_MBULK[] = "ERR Protocol error: unauthenticated multibulk length";
static const char ERR_BIG_BULK[] = "ERR Protocol error: too big bulk count string";
static const char ERR_BULK_LEN[] = "ERR Protocol error: invalid bulk length";
static const char ERR_UNAUTH_BULK[] = "ERR Protocol error: unauthenticated bulk length";
static const char ERR_NOMEM[] = "ERR out of memory";

/* Past a one-off huge command the argument vector is given back. */
#define ARGV_KEEP 1024

void resp_parser_init(resp_parser *p)
{
    memset(p, 0, sizeof(*p));
    p->max_bulk_len = RESP_MAX_BULK_BYTES;
    p->_state = ST_START;
}

void resp_parser_free(resp_parser *p)
{
    free(p->_argv);
    free(p->_arg_off);
    free(p->_inline);
    p->_argv = NULL;
    p->_arg_off = NULL;
    p->_inline = NULL;
    p->_argv_cap = 0;
    p->_inline_cap = 0;
    resp_parser_reset(p);
}

void resp_parser_reset(resp_parser *p)
{
    p->_state = ST_START;
    p->_pos = 0;
    p->_scan = 0;
    p->_blind = false;
    p->_seen = 0;
    p->_left = 0;
    p->_bulk_len = 0;
    p->_argc = 0;
    p->_errno = 0;
    p->_err = NULL;
}

size_t resp_parse_need(const resp_parser *p)
{
    if (p->_state != ST_BULK_DATA)
        return 1;
    size_t end = p->_pos + (size_t)p->_bulk_len + 2;
    return end > p->_seen ? end - p->_seen : 1;
}

static ssize_t fail(resp_parser *p, int errnum, const char *msg, const char **err)
{
    p->_state = ST_ERROR;
    p->_errno = errnum;
    p->_err = msg;
    *err = msg;
    return -errnum;
}

/* addReplyErrorFormat("Protocol error: expected '$', got '%c'"), which turns CR and
 * LF into spaces. The byte is never NUL: a NUL hides the line (see find_line). */
static ssize_t fail_expected(resp_parser *p, char got, const char **err)
{
    assert(got != '\0');
    if (got == '\r' || got == '\n')
        got = ' ';
    snprintf(p->_errbuf, sizeof(p->_errbuf), "ERR Protocol error: expected '$', got '%c'", got);
    return fail(p, EPROTO, p->_errbuf, err);
}

/* Redis's string2ll(): optional '-', no '+', no spaces, no leading zeros, no "-0",
 * fewer than 21 characters, within long long. */
bool resp_string2ll(const char *s, size_t n, long long *out)
{
    if (n == 0 || n >= 21)
        return false;
    if (n == 1 && s[0] == '0') {
        *out = 0;
        return true;
    }
    size_t i = 0;
    bool neg = s[0] == '-';
    if (neg)
        i++;
    if (i == n || s[i] < '1' || s[i] > '9')
        return false;
    unsigned long long v = 0;
    for (; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (ULLONG_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    if (neg) {
        if (v > (unsigned long long)LLONG_MAX + 1)
            return false;
        *out = v == (unsigned long long)LLONG_MAX + 1 ? LLONG_MIN : -(long long)v;
    } else {
        if (v > (unsigned long long)LLONG_MAX)
            return false;
        *out = (long long)v;
    }
    return true;
}

enum { LINE_FOUND, LINE_MORE, LINE_TOO_BIG };

/* Finds the byte ending the line that starts at p->_pos, continuing where the last
 * call stopped. Redis searches with strchr() over its NUL-terminated query buffer,
 * so a NUL before the terminator hides it for good: Redis then waits until the
 * 64 KiB limit fails the request, and so do we.
 *
 * Redis fails a line when more than 64 KiB of it has arrived without its end, which
 * depends on how the bytes were split into reads. We fail a line whose end is more
 * than 64 KiB in, however it arrives: Redis's verdict when bytes trickle in, and the
 * same verdict for every split of the same bytes. */
static int find_line(resp_parser *p, const char *buf, size_t len, char term, size_t *end)
{
    if (!p->_blind) {
        size_t from = p->_scan;
        const char *t = memchr(buf + from, term, len - from);
        size_t stop = t ? (size_t)(t - buf) : len;
        if (memchr(buf + from, '\0', stop - from)) {
            p->_blind = true;
        } else if (t) {
            if (stop - p->_pos > RESP_INLINE_MAX_BYTES)
                return LINE_TOO_BIG;
            *end = stop;
            return LINE_FOUND;
        } else {
            p->_scan = len;
        }
    }
    return len - p->_pos > RESP_INLINE_MAX_BYTES ? LINE_TOO_BIG : LINE_MORE;
}

static void start_line(resp_parser *p, size_t pos)
{
    p->_pos = pos;
    p->_scan = pos;
    p->_blind = false;
}

/* Records argument offset/length, growing the vectors by doubling but never past
 * what the multibulk count announced (hint), as Redis's argv_len does, so that
 * "*2147483647" costs nothing until arguments actually arrive. */
static int push_arg(resp_parser *p, size_t off, size_t len, size_t hint)
{
    if (p->_argc == p->_argv_cap) {
        size_t cap = p->_argv_cap ? p->_argv_cap * 2 : 16;
        if (hint && cap > p->_argc + hint)
            cap = p->_argc + hint;
        resp_arg *argv = realloc(p->_argv, cap * sizeof(*argv));
        if (!argv)
            return -ENOMEM;
        p->_argv = argv;
        size_t *offs = realloc(p->_arg_off, cap * sizeof(*offs));
        if (!offs)
            return -ENOMEM;
        p->_arg_off = offs;
        p->_argv_cap = cap;
    }
    p->_arg_off[p->_argc] = off;
    p->_argv[p->_argc].len = len;
    p->_argc++;
    return 0;
}

/* Hands out the command: offsets become pointers into base, and the parser waits
 * for the next command. */
static ssize_t complete(resp_parser *p, const char *base, size_t consumed, resp_cmd *out)
{
    for (size_t i = 0; i < p->_argc; i++)
        p->_argv[i].ptr = base + p->_arg_off[i];
    out->argc = p->_argc;
    out->argv = p->_argv;
    p->_state = ST_START;
    p->_seen = 0;
    return (ssize_t)consumed;
}

/* isspace() in the C locale, which Redis's ctype calls run in. */
static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

static bool is_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static int hex_value(char c)
{
    if (c <= '9')
        return c - '0';
    return (c | 0x20) - 'a' + 10;
}

/* Splits an inline line into arguments as Redis's sdssplitargs() does, unescaping
 * into p->_inline. Blanks (isspace) separate arguments, but inside an unquoted one
 * only space, tab, CR and LF end it. "..." takes \n \r \t \b \a \xHH and \<any>;
 * '...' takes only \'. A closing quote must be followed by a blank or the end, and a
 * quote may open in the middle of an argument (a"b c" is one argument: ab c).
 * The line holds no NUL (find_line saw to that), so its end plays the NUL's part.
 * Returns 0, -EPROTO on unbalanced quotes, -ENOMEM. */
static int split_inline(resp_parser *p, const char *line, size_t n)
{
    if (p->_inline_cap < n) {
        char *mem = realloc(p->_inline, n);
        if (!mem)
            return -ENOMEM;
        p->_inline = mem;
        p->_inline_cap = n;
    }
    char *out = p->_inline;
    size_t o = 0, i = 0;
#define AT(k) ((k) < n ? line[k] : '\0')
    for (;;) {
        while (i < n && is_space(line[i]))
            i++;
        if (i == n)
            return 0;
        size_t start = o;
        enum { PLAIN, DOUBLE, SINGLE } mode = PLAIN;
        bool done = false;
        while (!done) {
            char c = AT(i);
            if (mode == DOUBLE) {
                if (c == '\\' && AT(i + 1) == 'x' && is_hex(AT(i + 2)) && is_hex(AT(i + 3))) {
                    out[o++] = (char)(hex_value(AT(i + 2)) * 16 + hex_value(AT(i + 3)));
                    i += 4;
                } else if (c == '\\' && i + 1 < n) {
                    char e = line[i + 1];
                    switch (e) {
                    case 'n': e = '\n'; break;
                    case 'r': e = '\r'; break;
                    case 't': e = '\t'; break;
                    case 'b': e = '\b'; break;
                    case 'a': e = '\a'; break;
                    }
                    out[o++] = e;
                    i += 2;
                } else if (c == '"') {
                    if (i + 1 < n && !is_space(line[i + 1]))
                        return -EPROTO;
                    done = true;
                    i++;
                } else if (i == n) {
                    return -EPROTO;
                } else {
                    out[o++] = c;
                    i++;
                }
            } else if (mode == SINGLE) {
                if (c == '\\' && AT(i + 1) == '\'') {
                    out[o++] = '\'';
                    i += 2;
                } else if (c == '\'') {
                    if (i + 1 < n && !is_space(line[i + 1]))
                        return -EPROTO;
                    done = true;
                    i++;
                } else if (i == n) {
                    return -EPROTO;
                } else {
                    out[o++] = c;
                    i++;
                }
            } else if (i == n) {
                done = true;
            } else {
                switch (c) {
                case ' ':
                case '\n':
                case '\r':
                case '\t': done = true; break;
                case '"': mode = DOUBLE; break;
                case '\'': mode = SINGLE; break;
                default: out[o++] = c; break;
                }
                i++;
            }
        }
        if (push_arg(p, start, o - start, 0) < 0)
            return -ENOMEM;
    }
#undef AT
}

/* processInlineBuffer(): one line up to '\n', a CR before it dropped. */
static ssize_t parse_inline(resp_parser *p, const char *buf, size_t len, resp_cmd *out,
                            const char **err)
{
    size_t nl;
    int r = find_line(p, buf, len, '\n', &nl);
    if (r == LINE_MORE)
        return 0;
    if (r == LINE_TOO_BIG)
        return fail(p, EPROTO, ERR_BIG_INLINE, err);
    size_t end = nl;
    if (end > 0 && buf[end - 1] == '\r')
        end--;
    r = split_inline(p, buf, end);
    if (r == -EPROTO)
        return fail(p, EPROTO, ERR_QUOTES, err);
    if (r < 0)
        return fail(p, ENOMEM, ERR_NOMEM, err);
    return complete(p, p->_inline, nl + 1, out);
}

/* processMultibulkBuffer(). Redis finds each header line by its '\r' and then skips
 * two bytes without looking at the second, and skips the two bytes after a bulk
 * payload unchecked too: "$4\r\nPINGxy" is PING. We do the same. */
static ssize_t parse_multibulk(resp_parser *p, const char *buf, size_t len, resp_cmd *out,
                               const char **err)
{
    size_t cr;
    long long n;
    int r;

    if (p->_state == ST_COUNT) {
        r = find_line(p, buf, len, '\r', &cr);
        if (r == LINE_MORE)
            return 0;
        if (r == LINE_TOO_BIG)
            return fail(p, EPROTO, ERR_BIG_MBULK, err);
        if (cr + 1 >= len)
            return 0;
        if (!resp_string2ll(buf + p->_pos + 1, cr - p->_pos - 1, &n) || n > RESP_MAX_ARGS)
            return fail(p, EPROTO, ERR_MBULK_LEN, err);
        if (n > RESP_UNAUTH_MAX_ARGS && p->unauthenticated)
            return fail(p, EPROTO, ERR_UNAUTH_MBULK, err);
        start_line(p, cr + 2);
        if (n <= 0)
            return complete(p, buf, cr + 2, out);
        p->_left = n;
        p->_state = ST_BULK_HEADER;
    }

    while (p->_left > 0) {
        if (p->_state == ST_BULK_HEADER) {
            r = find_line(p, buf, len, '\r', &cr);
            if (r == LINE_MORE)
                return 0;
            if (r == LINE_TOO_BIG)
                return fail(p, EPROTO, ERR_BIG_BULK, err);
            if (cr + 1 >= len)
                return 0;
            if (buf[p->_pos] != '$')
                return fail_expected(p, buf[p->_pos], err);
            if (!resp_string2ll(buf + p->_pos + 1, cr - p->_pos - 1, &n) || n < 0 ||
                n > p->max_bulk_len)
                return fail(p, EPROTO, ERR_BULK_LEN, err);
            if (n > RESP_UNAUTH_MAX_BULK_BYTES && p->unauthenticated)
                return fail(p, EPROTO, ERR_UNAUTH_BULK, err);
            p->_bulk_len = n;
            p->_pos = cr + 2;
            p->_state = ST_BULK_DATA;
        }
        /* A large payload costs one comparison per call until it is all here. */
        if (len - p->_pos < (size_t)p->_bulk_len + 2)
            return 0;
        if (push_arg(p, p->_pos, (size_t)p->_bulk_len, (size_t)p->_left) < 0)
            return fail(p, ENOMEM, ERR_NOMEM, err);
        start_line(p, p->_pos + (size_t)p->_bulk_len + 2);
        p->_left--;
        p->_state = ST_BULK_HEADER;
    }
    return complete(p, buf, p->_pos, out);
}

ssize_t resp_parse(resp_parser *p, const char *buf, size_t len, resp_cmd *out, const char **err)
{
    if (p->_state == ST_ERROR) {
        *err = p->_err;
        return -p->_errno;
    }
    /* The caller must bring back every byte it showed us, and more. */
    assert(p->_state == ST_START || len >= p->_seen);
    p->_seen = len;
    if (p->_state == ST_START) {
        if (len == 0)
            return 0;
        if (p->_argv_cap > ARGV_KEEP) {
            free(p->_argv);
            free(p->_arg_off);
            p->_argv = NULL;
            p->_arg_off = NULL;
            p->_argv_cap = 0;
        }
        p->_argc = 0;
        start_line(p, 0);
        p->_state = buf[0] == '*' ? ST_COUNT : ST_INLINE;
    }
    if (p->_state == ST_INLINE)
        return parse_inline(p, buf, len, out, err);
    return parse_multibulk(p, buf, len, out, err);
}

/* ---- Number formatting ------------------------------------------------------- */

static const char digit_pairs[] = "00010203040506070809"
                                  "10111213141516171819"
                                  "20212223242526272829"
                                  "30313233343536373839"
                                  "40414243444546474849"
                                  "50515253545556575859"
                                  "60616263646566676869"
                                  "70717273747576777879"
                                  "80818283848586878889"
                                  "90919293949596979899";

/* Two digits per division, as Redis's ll2string(); no NUL. */
static int fmt_u64(char *dst, unsigned long long v)
{
    char tmp[20];
    int i = (int)sizeof(tmp);
    while (v >= 100) {
        unsigned r = (unsigned)(v % 100);
        v /= 100;
        i -= 2;
        memcpy(tmp + i, digit_pairs + 2 * r, 2);
    }
    if (v >= 10) {
        i -= 2;
        memcpy(tmp + i, digit_pairs + 2 * v, 2);
    } else {
        tmp[--i] = (char)('0' + v);
    }
    int n = (int)sizeof(tmp) - i;
    memcpy(dst, tmp + i, (size_t)n);
    return n;
}

static int fmt_i64(char *dst, long long v)
{
    if (v >= 0)
        return fmt_u64(dst, (unsigned long long)v);
    dst[0] = '-';
    return 1 + fmt_u64(dst + 1, 0ULL - (unsigned long long)v);
}

int resp_fmt_ll(char buf[RESP_LL_CHARS], long long v)
{
    int n = fmt_i64(buf, v);
    buf[n] = '\0';
    return n;
}

/* The shortest decimal digits that read back as v (finite, > 0), without trailing
 * zeros; *e10 is the exponent of the first digit. Any decimal of at most 15
 * significant digits survives a trip through a normal double (DBL_DIG), so when the
 * shortest form has at most 15 digits, "%.15e" prints exactly it; otherwise 16 or 17
 * digits rounded correctly are the closest that read back. Subnormals have fewer
 * digits of precision and are searched from 1. */
static int shortest_digits(double v, char digits[18], int *e10)
{
    char tmp[40];
    int prec = isnormal(v) ? 15 : 1;
    for (;; prec++) {
        snprintf(tmp, sizeof(tmp), "%.*e", prec - 1, v);
        if (prec >= 17 || strtod(tmp, NULL) == v)
            break;
    }
    const char *s = tmp;
    int n = 0;
    digits[n++] = *s++;
    if (*s == '.')
        for (s++; *s != 'e'; s++)
            digits[n++] = *s;
    *e10 = atoi(s + 1);
    while (n > 1 && digits[n - 1] == '0')
        n--;
    return n;
}

/* Redis 7.2's d2string(): special values, then its exact-integer fast path
 * (double2ll() accepts |d| <= LLONG_MAX/2), then fpconv_dtoa()'s layout of the
 * shortest digits: with value = digits * 10^K, a plain integer while K < 8, a plain
 * decimal while K > -7 or the exponent is within +-3, else d.ddde+X. fpconv finds
 * the digits with Grisu2, which is shortest and closest for all but rare inputs;
 * there it may print a longer form that still reads back as the same double. */
int resp_fmt_double(char buf[RESP_DOUBLE_CHARS], double d)
{
    const char *special = NULL;
    if (isnan(d))
        special = "nan";
    else if (isinf(d))
        special = d > 0 ? "inf" : "-inf";
    else if (d == 0)
        special = signbit(d) ? "-0" : "0";
    if (special) {
        size_t n = strlen(special);
        memcpy(buf, special, n + 1);
        return (int)n;
    }
    if (d >= -4611686018427387904.0 && d <= 4611686018427387904.0) {
        long long ll = (long long)d;
        if ((double)ll == d)
            return resp_fmt_ll(buf, ll);
    }

    char digits[18];
    int e10;
    int n = shortest_digits(fabs(d), digits, &e10);
    int k = e10 - n + 1;
    int exp = abs(e10);
    char *o = buf;
    if (signbit(d))
        *o++ = '-';
    if (k >= 0 && exp < n + 7) {
        memcpy(o, digits, (size_t)n);
        memset(o + n, '0', (size_t)k);
        o += n + k;
    } else if (k < 0 && (k > -7 || exp < 4)) {
        int int_digits = n + k;
        if (int_digits <= 0) {
            *o++ = '0';
            *o++ = '.';
            memset(o, '0', (size_t)-int_digits);
            o += -int_digits;
            memcpy(o, digits, (size_t)n);
            o += n;
        } else {
            memcpy(o, digits, (size_t)int_digits);
            o += int_digits;
            *o++ = '.';
            memcpy(o, digits + int_digits, (size_t)(n - int_digits));
            o += n - int_digits;
        }
    } else {
        *o++ = digits[0];
        if (n > 1) {
            *o++ = '.';
            memcpy(o, digits + 1, (size_t)(n - 1));
            o += n - 1;
        }
        *o++ = 'e';
        *o++ = e10 < 0 ? '-' : '+';
        o += fmt_u64(o, (unsigned long long)exp);
    }
    *o = '\0';
    return (int)(o - buf);
}

int resp_fmt_long_double_human(char *buf, size_t cap, long double v)
{
    int n;
    if (isinf(v)) {
        n = snprintf(buf, cap, "%s", v > 0 ? "inf" : "-inf");
    } else if (isnan(v)) {
        n = snprintf(buf, cap, "nan");
    } else {
        /* Seventeen decimals with 64-bit long double mantissas print most short
         * decimals as typed (ld2string's comment); trailing zeros go. */
        n = snprintf(buf, cap, "%.17Lf", v);
        if (n < 0 || (size_t)n >= cap)
            return -ENOSPC;
        if (memchr(buf, '.', (size_t)n)) {
            while (buf[n - 1] == '0')
                n--;
            if (buf[n - 1] == '.')
                n--;
        }
        if (n == 2 && buf[0] == '-' && buf[1] == '0') {
            buf[0] = '0';
            n = 1;
        }
        buf[n] = '\0';
    }
    if (n < 0 || (size_t)n >= cap)
        return -ENOSPC;
    return n;
}

/* ---- Output buffer --------------------------------------------------------------- */

void resp_buf_init(resp_buf *b)
{
    memset(b, 0, sizeof(*b));
}

void resp_buf_wrap(resp_buf *b, char *mem, size_t cap)
{
    b->data = mem;
    b->len = 0;
    b->cap = cap;
    b->err = 0;
    b->_fixed = true;
}

void resp_buf_free(resp_buf *b)
{
    if (!b->_fixed)
        free(b->data);
    memset(b, 0, sizeof(*b));
}

static int buf_fail(resp_buf *b, int errnum)
{
    if (!b->err)
        b->err = errnum;
    return b->err;
}

int resp_buf_reserve(resp_buf *b, size_t n)
{
    if (b->err)
        return b->err;
    if (b->cap - b->len >= n)
        return 0;
    if (b->_fixed)
        return buf_fail(b, -ENOBUFS);
    if (n > SIZE_MAX / 2 - b->len)
        return buf_fail(b, -ENOMEM);
    size_t need = b->len + n;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap *= 2;
    char *data = realloc(b->data, cap);
    if (!data)
        return buf_fail(b, -ENOMEM);
    b->data = data;
    b->cap = cap;
    return 0;
}

int resp_add_raw(resp_buf *b, const void *p, size_t n)
{
    if (resp_buf_reserve(b, n))
        return b->err;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

/* "<type><n>\r\n" into dst; returns its length (at most 24). */
static int fmt_header(char *dst, char type, long long n)
{
    dst[0] = type;
    int len = 1 + fmt_i64(dst + 1, n);
    dst[len++] = '\r';
    dst[len++] = '\n';
    return len;
}

static int add_header(resp_buf *b, char type, long long n)
{
    char h[32];
    return resp_add_raw(b, h, (size_t)fmt_header(h, type, n));
}

static long long count(size_t n)
{
    assert(n <= (size_t)LLONG_MAX);
    return (long long)n;
}

/* One line "<type><s>\r\n" with CR and LF in s as spaces: a stray one would end the
 * line early and desynchronise the client. */
static int add_line(resp_buf *b, char type, const char *s, size_t len)
{
    if (resp_buf_reserve(b, len + 3))
        return b->err;
    char *o = b->data + b->len;
    o[0] = type;
    for (size_t i = 0; i < len; i++)
        o[1 + i] = s[i] == '\r' || s[i] == '\n' ? ' ' : s[i];
    o[1 + len] = '\r';
    o[2 + len] = '\n';
    b->len += len + 3;
    return 0;
}

int resp_add_status_len(resp_buf *b, const char *s, size_t len)
{
    return add_line(b, '+', s, len);
}

int resp_add_status(resp_buf *b, const char *s)
{
    return add_line(b, '+', s, strlen(s));
}

int resp_add_error_len(resp_buf *b, const char *s, size_t len)
{
    return add_line(b, '-', s, len);
}

int resp_add_error(resp_buf *b, const char *s)
{
    return add_line(b, '-', s, strlen(s));
}

int resp_add_errorf(resp_buf *b, const char *fmt, ...)
{
    char small[256];
    char *s = small;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n < 0)
        return buf_fail(b, -EINVAL);
    if ((size_t)n >= sizeof(small)) {
        s = malloc((size_t)n + 1);
        if (!s)
            return buf_fail(b, -ENOMEM);
        va_start(ap, fmt);
        vsnprintf(s, (size_t)n + 1, fmt, ap);
        va_end(ap);
    }
    /* sdstrim(s, "\r\n") as addReplyErrorFormat() does; add_line maps the rest. */
    const char *start = s;
    const char *end = s + n;
    while (start < end && (*start == '\r' || *start == '\n'))
        start++;
    while (end > start && (end[-1] == '\r' || end[-1] == '\n'))
        end--;
    int r = add_line(b, '-', start, (size_t)(end - start));
    if (s != small)
        free(s);
    return r;
}

int resp_add_int(resp_buf *b, long long v)
{
    return add_header(b, ':', v);
}

int resp_add_bulk(resp_buf *b, const void *p, size_t len)
{
    char h[32];
    int hl = fmt_header(h, '$', count(len));
    if (resp_buf_reserve(b, (size_t)hl + len + 2))
        return b->err;
    char *o = b->data + b->len;
    memcpy(o, h, (size_t)hl);
    if (len)
        memcpy(o + hl, p, len);
    memcpy(o + hl + len, "\r\n", 2);
    b->len += (size_t)hl + len + 2;
    return 0;
}

int resp_add_bulk_header(resp_buf *b, size_t len)
{
    return add_header(b, '$', count(len));
}

int resp_add_bulk_cstr(resp_buf *b, const char *s)
{
    return resp_add_bulk(b, s, strlen(s));
}

int resp_add_bulk_ll(resp_buf *b, long long v)
{
    char s[RESP_LL_CHARS];
    return resp_add_bulk(b, s, (size_t)resp_fmt_ll(s, v));
}

int resp_add_null(resp_buf *b, int proto)
{
    return proto >= 3 ? resp_add_raw(b, "_\r\n", 3) : resp_add_raw(b, "$-1\r\n", 5);
}

int resp_add_null_array(resp_buf *b, int proto)
{
    return proto >= 3 ? resp_add_raw(b, "_\r\n", 3) : resp_add_raw(b, "*-1\r\n", 5);
}

int resp_add_array(resp_buf *b, size_t n)
{
    return add_header(b, '*', count(n));
}

int resp_add_map(resp_buf *b, int proto, size_t n)
{
    if (proto >= 3)
        return add_header(b, '%', count(n));
    assert(n <= SIZE_MAX / 2);
    return add_header(b, '*', count(n * 2));
}

int resp_add_set(resp_buf *b, int proto, size_t n)
{
    return add_header(b, proto >= 3 ? '~' : '*', count(n));
}

int resp_add_push(resp_buf *b, int proto, size_t n)
{
    return add_header(b, proto >= 3 ? '>' : '*', count(n));
}

int resp_add_double(resp_buf *b, int proto, double d)
{
    char s[RESP_DOUBLE_CHARS + 3];
    int n = isinf(d) ? snprintf(s + 1, RESP_DOUBLE_CHARS, "%s", d > 0 ? "inf" : "-inf")
                     : snprintf(s + 1, RESP_DOUBLE_CHARS, "%.17g", d);
    if (proto < 3)
        return resp_add_bulk(b, s + 1, (size_t)n);
    s[0] = ',';
    memcpy(s + 1 + n, "\r\n", 2);
    return resp_add_raw(b, s, (size_t)n + 3);
}

int resp_add_bool(resp_buf *b, int proto, bool v)
{
    if (proto >= 3)
        return resp_add_raw(b, v ? "#t\r\n" : "#f\r\n", 4);
    return resp_add_raw(b, v ? ":1\r\n" : ":0\r\n", 4);
}

int resp_add_bignum(resp_buf *b, int proto, const char *num, size_t len)
{
    if (proto < 3)
        return resp_add_bulk(b, num, len);
    if (resp_buf_reserve(b, len + 3))
        return b->err;
    b->data[b->len] = '(';
    memcpy(b->data + b->len + 1, num, len);
    memcpy(b->data + b->len + 1 + len, "\r\n", 2);
    b->len += len + 3;
    return 0;
}

int resp_add_verbatim(resp_buf *b, int proto, const char *s, size_t len, const char *ext)
{
    if (proto < 3)
        return resp_add_bulk(b, s, len);
    char h[40];
    int hl = fmt_header(h, '=', count(len + 4));
    for (int i = 0; i < 3; i++)
        h[hl + i] = *ext ? *ext++ : ' ';
    h[hl + 3] = ':';
    hl += 4;
    if (resp_buf_reserve(b, (size_t)hl + len + 2))
        return b->err;
    char *o = b->data + b->len;
    memcpy(o, h, (size_t)hl);
    if (len)
        memcpy(o + hl, s, len);
    memcpy(o + hl + len, "\r\n", 2);
    b->len += (size_t)hl + len + 2;
    return 0;
}

int resp_add_human_long_double(resp_buf *b, int proto, long double v)
{
    char s[RESP_LONG_DOUBLE_CHARS];
    int n = resp_fmt_long_double_human(s, sizeof(s), v);
    if (n < 0)
        return buf_fail(b, n);
    if (proto < 3)
        return resp_add_bulk(b, s, (size_t)n);
    if (resp_buf_reserve(b, (size_t)n + 3))
        return b->err;
    b->data[b->len] = ',';
    memcpy(b->data + b->len + 1, s, (size_t)n);
    memcpy(b->data + b->len + 1 + n, "\r\n", 2);
    b->len += (size_t)n + 3;
    return 0;
}

/* Opens a gap at `at` for the header, as Redis's setDeferredAggregateLen() does
 * with its placeholder node; here the elements move instead. */
static int insert_header(resp_buf *b, size_t at, char type, long long n)
{
    assert(at <= b->len);
    char h[32];
    int hl = fmt_header(h, type, n);
    if (resp_buf_reserve(b, (size_t)hl))
        return b->err;
    memmove(b->data + at + hl, b->data + at, b->len - at);
    memcpy(b->data + at, h, (size_t)hl);
    b->len += (size_t)hl;
    return 0;
}

int resp_set_deferred_array(resp_buf *b, size_t at, size_t n)
{
    return insert_header(b, at, '*', count(n));
}

int resp_set_deferred_map(resp_buf *b, int proto, size_t at, size_t n)
{
    if (proto >= 3)
        return insert_header(b, at, '%', count(n));
    assert(n <= SIZE_MAX / 2);
    return insert_header(b, at, '*', count(n * 2));
}

int resp_set_deferred_set(resp_buf *b, int proto, size_t at, size_t n)
{
    return insert_header(b, at, proto >= 3 ? '~' : '*', count(n));
}
