/* Bitmap commands: SETBIT GETBIT BITCOUNT BITPOS BITOP BITFIELD BITFIELD_RO.
 *
 * A bitmap is a string value: bit 0 is the most significant bit of the
 * first byte, and bits past the end read as zero. Replies, errors and the
 * order arguments are checked in are Redis 7.0's.
 *
 * Writes that stay inside the value change the entry's bytes in place and
 * call kv_modified(); SETBIT past the end grows the entry with room to
 * spare (kv_str_grow()); BITFIELD and BITOP build the new value and
 * kv_set_str() it. */
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kv.h"

#define ERR_OFFSET "ERR bit offset is not an integer or out of range"
#define ERR_BIT "ERR bit is not an integer or out of range"
#define ERR_BFTYPE                                                                                 \
    "ERR Invalid bitfield type. Use something like i16 u8. Note that u64 is not supported but "    \
    "i64 is."

typedef __int128 i128;

/* The entry's enc bits for a value Redis keeps as a raw string whatever it
 * holds (t_keys.c's STR_ENC_RAW, for OBJECT ENCODING): every bitmap write
 * leaves one, even a write that changes nothing. */
#define STR_ENC_RAW 1

/* ---- bit helpers ----------------------------------------------------------------- */

static int bit_at(const unsigned char *p, uint64_t pos)
{
    return (p[pos >> 3] >> (7 - (pos & 7))) & 1;
}

static long long popcount_words(const unsigned char *p, size_t n);

/* Counts the set bits of p in bit positions [bs, be] (inside the value). */
static long long count_bits(const unsigned char *p, uint64_t bs, uint64_t be)
{
    uint64_t first = bs >> 3, last = be >> 3;
    long long n = popcount_words(p + first, (size_t)(last - first + 1));
    /* Take back the bits of the edge bytes outside the range. */
    n -= __builtin_popcount(p[first] & ~(0xffu >> (bs & 7)) & 0xff);
    n -= __builtin_popcount(p[last] & ((1u << (7 - (be & 7))) - 1));
    return n;
}

/* The first position in [bs, be] whose bit is bit, or -1. Whole bytes and
 * words of the wrong value are skipped at once. */
static long long find_bit(const unsigned char *p, uint64_t bs, uint64_t be, int bit)
{
    uint64_t pos = bs, end = be + 1;
    for (; pos < end && (pos & 7); pos++)
        if (bit_at(p, pos) == bit)
            return (long long)pos;
    const uint64_t skip_word = bit ? 0 : UINT64_MAX;
    for (; pos + 64 <= end; pos += 64) {
        uint64_t w;
        memcpy(&w, p + (pos >> 3), sizeof(w));
        if (w != skip_word)
            break;
    }
    const unsigned char skip_byte = bit ? 0 : 0xff;
    for (; pos + 8 <= end && p[pos >> 3] == skip_byte; pos += 8)
        ;
    for (; pos < end; pos++)
        if (bit_at(p, pos) == bit)
            return (long long)pos;
    return -1;
}

#if defined(__x86_64__)
__attribute__((target("popcnt"))) static long long popcount_hw(const unsigned char *p, size_t n)
{
    long long bits = 0;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, sizeof(w));
        bits += __builtin_popcountll(w);
    }
    for (; i < n; i++)
        bits += __builtin_popcount(p[i]);
    return bits;
}
#endif

static long long popcount_sw(const unsigned char *p, size_t n)
{
    long long bits = 0;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, sizeof(w));
        w = w - ((w >> 1) & 0x5555555555555555ull);
        w = (w & 0x3333333333333333ull) + ((w >> 2) & 0x3333333333333333ull);
        w = (w + (w >> 4)) & 0x0f0f0f0f0f0f0f0full;
        bits += (long long)((w * 0x0101010101010101ull) >> 56);
    }
    for (; i < n; i++)
        bits += __builtin_popcount(p[i]);
    return bits;
}

static long long popcount_words(const unsigned char *p, size_t n)
{
#if defined(__x86_64__)
    if (__builtin_cpu_supports("popcnt"))
        return popcount_hw(p, n);
#endif
    return popcount_sw(p, n);
}

/* ---- bitfields --------------------------------------------------------------------- */

enum { OV_WRAP, OV_SAT, OV_FAIL };

/* The unsigned value of bits [off, off + bits) (bits <= 64); bytes at or
 * past len read as zero. */
static uint64_t bf_get(const unsigned char *p, size_t len, uint64_t off, unsigned bits)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < bits; i++, off++) {
        uint64_t byte = off >> 3;
        v = (v << 1) | (byte < len ? (uint64_t)bit_at(p, off) : 0);
    }
    return v;
}

/* Writes the low bits of v to [off, off + bits), which must be inside p. */
static void bf_set(unsigned char *p, uint64_t off, unsigned bits, uint64_t v)
{
    for (unsigned i = 0; i < bits; i++, off++) {
        unsigned char mask = (unsigned char)(0x80u >> (off & 7));
        if ((v >> (bits - 1 - i)) & 1)
            p[off >> 3] |= mask;
        else
            p[off >> 3] &= (unsigned char)~mask;
    }
}

/* A field's raw bits as a number: two's complement when signed. */
static int64_t bf_value(uint64_t raw, unsigned bits, bool sign)
{
    if (sign && bits < 64 && (raw >> (bits - 1)) & 1)
        raw |= UINT64_MAX << bits;
    return (int64_t)raw;
}

/* What a field of bits bits (signed or not) holds after being asked to
 * hold x, the exact result of a SET or INCRBY: x when it fits, else x
 * wrapped modulo 2^bits (WRAP) or the bound it crossed (SAT). Returns
 * false under FAIL when x does not fit.
 *
 * high_quirk reproduces a corner of Redis's overflow test: a signed field
 * narrower than 64 bits SET to a value below INT64_MIN + 2^(bits-1) is
 * reported as overflowing upwards, so SAT stores the maximum there. */
static bool bf_fit(i128 x, unsigned bits, bool sign, int mode, bool high_quirk, int64_t *out)
{
    i128 lo = sign ? -((i128)1 << (bits - 1)) : 0;
    i128 hi = sign ? ((i128)1 << (bits - 1)) - 1 : ((i128)1 << bits) - 1;
    if (x >= lo && x <= hi) {
        *out = (int64_t)x;
        return true;
    }
    if (mode == OV_FAIL)
        return false;
    if (mode == OV_SAT) {
        *out = (int64_t)(x > hi || high_quirk ? hi : lo);
        return true;
    }
    i128 m = (i128)1 << bits;
    i128 r = x % m;
    if (r < 0)
        r += m;
    if (r > hi)
        r -= m;
    *out = (int64_t)r;
    return true;
}

/* ---- argument parsing -------------------------------------------------------------- */

/* A bit offset (Redis's getBitOffsetFromArgument): a non-negative integer
 * addressing a bit below proto-max-bulk-len bytes. hash_bits > 0 also
 * accepts BITFIELD's "#n", n fields of that width. */
static bool parse_offset(kv_cmd_ctx *c, const resp_arg *a, unsigned hash_bits, uint64_t *off)
{
    size_t skip = hash_bits && a->len && a->ptr[0] == '#' ? 1 : 0;
    long long v;
    if (!resp_string2ll(a->ptr + skip, a->len - skip, &v))
        goto bad;
    if (skip) /* wraps on overflow, as Redis's multiplication does */
        v = (long long)((unsigned long long)v * hash_bits);
    if (v < 0 || (v >> 3) >= RESP_MAX_BULK_BYTES)
        goto bad;
    *off = (uint64_t)v;
    return true;
bad:
    resp_add_error(c->out, ERR_OFFSET);
    return false;
}

/* A bitfield type: i1..i64 or u1..u63 (lower case, as Redis wants). */
static bool parse_bftype(kv_cmd_ctx *c, const resp_arg *a, bool *sign, unsigned *bits)
{
    long long n;
    /* Redis reads the width as a C string: it ends at a NUL byte. */
    size_t wlen = a->len ? strnlen(a->ptr + 1, a->len - 1) : 0;
    if (!a->len || (a->ptr[0] != 'i' && a->ptr[0] != 'u') ||
        !resp_string2ll(a->ptr + 1, wlen, &n) || n < 1 || n > (a->ptr[0] == 'i' ? 64 : 63)) {
        resp_add_error(c->out, ERR_BFTYPE);
        return false;
    }
    *sign = a->ptr[0] == 'i';
    *bits = (unsigned)n;
    return true;
}

/* ---- SETBIT, GETBIT ---------------------------------------------------------------- */

static void cmd_setbit(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    (void)argc;
    uint64_t off;
    long long on;
    if (!parse_offset(c, &argv[2], 0, &off) || !kv_arg_ll(c, &argv[3], &on, ERR_BIT))
        return;
    if (on & ~1LL) {
        resp_add_error(c->out, ERR_BIT);
        return;
    }
    bool wrong;
    kv_entry *e = kv_lookup_type(c, &argv[1], KV_STRING, &wrong);
    if (wrong)
        return;
    size_t byte = (size_t)(off >> 3);
    if (e && byte < e->vlen) {
        unsigned char *p = (unsigned char *)kv_str(e);
        int old = bit_at(p, off);
        e->enc = STR_ENC_RAW;
        if (old != on) {
            bf_set(p, off, 1, (uint64_t)on);
            kv_modified(c, &argv[1]);
        }
        resp_add_int(c->out, old);
        return;
    }
    /* Past the end: a zero-padded longer value (the old bit was 0). */
    kv_entry *n = e ? kv_str_grow(c, &argv[1], byte + 1) : NULL;
    if (!e) {
        unsigned char *v = calloc(byte + 1, 1);
        if (v) {
            bf_set(v, off, 1, (uint64_t)on);
            n = kv_set_str(c, &argv[1], v, byte + 1, KV_KEEP_TTL);
            free(v);
        }
    } else if (n) {
        bf_set((unsigned char *)kv_str(n), off, 1, (uint64_t)on);
    }
    if (!n) {
        kv_reply_oom(c->out);
        return;
    }
    n->enc = STR_ENC_RAW;
    resp_add_int(c->out, 0);
}

static void cmd_getbit(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    (void)argc;
    uint64_t off;
    if (!parse_offset(c, &argv[2], 0, &off))
        return;
    bool wrong;
    kv_entry *e = kv_lookup_type(c, &argv[1], KV_STRING, &wrong);
    if (wrong)
        return;
    int bit = e && (off >> 3) < e->vlen ? bit_at((const unsigned char *)kv_str(e), off) : 0;
    resp_add_int(c->out, bit);
}

/* ---- BITCOUNT, BITPOS -------------------------------------------------------------- */

/* Turns a user's [start, end] (negative from the end, in bytes or in bits)
 * into bit positions inside a value of len bytes, clamped as Redis clamps
 * them. Returns false for an empty range. */
static bool bit_range(long long start, long long end, bool isbit, size_t len, uint64_t *bs,
                      uint64_t *be)
{
    long long total = (long long)len * (isbit ? 8 : 1);
    if (start < 0)
        start += total;
    if (end < 0)
        end += total;
    if (start < 0)
        start = 0;
    if (end < 0)
        end = 0;
    if (end >= total)
        end = total - 1;
    if (start > end)
        return false;
    *bs = isbit ? (uint64_t)start : (uint64_t)start * 8;
    *be = isbit ? (uint64_t)end : (uint64_t)end * 8 + 7;
    return true;
}

/* BIT or BYTE, case-insensitively; replies "syntax error" otherwise. */
static bool parse_unit(kv_cmd_ctx *c, const resp_arg *a, bool *isbit)
{
    if (kv_arg_is(a, "BIT"))
        *isbit = true;
    else if (kv_arg_is(a, "BYTE"))
        *isbit = false;
    else {
        kv_reply_syntax(c->out);
        return false;
    }
    return true;
}

/* BITCOUNT key [start end [BYTE|BIT]]. Redis 7.0 looks the key up first:
 * a missing key counts 0 whatever the arguments. */
static void cmd_bitcount(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    bool wrong;
    kv_entry *e = kv_lookup_type(c, &argv[1], KV_STRING, &wrong);
    if (wrong)
        return;
    if (!e) {
        resp_add_int(c->out, 0);
        return;
    }
    long long start = 0, end = -1;
    bool isbit = false;
    if (argc == 4 || argc == 5) {
        if (!kv_arg_ll(c, &argv[2], &start, NULL) || !kv_arg_ll(c, &argv[3], &end, NULL))
            return;
        if (start < 0 && end < 0 && start > end) {
            resp_add_int(c->out, 0);
            return;
        }
        if (argc == 5 && !parse_unit(c, &argv[4], &isbit))
            return;
    } else if (argc != 2) {
        kv_reply_syntax(c->out);
        return;
    }
    uint64_t bs, be;
    if (!bit_range(start, end, isbit, e->vlen, &bs, &be))
        resp_add_int(c->out, 0);
    else
        resp_add_int(c->out, count_bits((const unsigned char *)kv_str(e), bs, be));
}

/* BITPOS key bit [start [end [BYTE|BIT]]] */
static void cmd_bitpos(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    long long bit;
    if (!kv_arg_ll(c, &argv[2], &bit, NULL))
        return;
    if (bit != 0 && bit != 1) {
        resp_add_error(c->out, "ERR The bit argument must be 1 or 0.");
        return;
    }
    bool wrong;
    kv_entry *e = kv_lookup_type(c, &argv[1], KV_STRING, &wrong);
    if (wrong)
        return;
    /* A missing key is an endless run of zeros. */
    if (!e) {
        resp_add_int(c->out, bit ? -1 : 0);
        return;
    }
    long long start = 0, end = -1;
    bool isbit = false, end_given = false;
    if (argc >= 4 && argc <= 6) {
        if (!kv_arg_ll(c, &argv[3], &start, NULL))
            return;
        if (argc == 6 && !parse_unit(c, &argv[5], &isbit))
            return;
        if (argc >= 5) {
            if (!kv_arg_ll(c, &argv[4], &end, NULL))
                return;
            end_given = true;
        }
    } else if (argc != 3) {
        kv_reply_syntax(c->out);
        return;
    }
    uint64_t bs, be;
    if (!bit_range(start, end, isbit, e->vlen, &bs, &be)) {
        resp_add_int(c->out, -1);
        return;
    }
    long long pos = find_bit((const unsigned char *)kv_str(e), bs, be, (int)bit);
    /* Looking for a clear bit without an explicit end, the value counts as
     * zero-padded: the answer is then the first bit past it. */
    if (pos < 0 && bit == 0 && !end_given)
        pos = (long long)be + 1;
    resp_add_int(c->out, pos);
}

/* ---- BITOP ------------------------------------------------------------------------- */

enum { OP_AND, OP_OR, OP_XOR, OP_NOT };

/* res[0, maxlen) = op over the sources (shorter ones zero-padded). */
static void bitop_compute(int op, size_t n, const unsigned char *const *src, const size_t *len,
                          size_t maxlen, unsigned char *res)
{
    size_t minlen = maxlen;
    for (size_t i = 0; i < n; i++)
        if (len[i] < minlen)
            minlen = len[i];
    size_t j = 0;
    /* Where every source has bytes, a word at a time. */
    for (; j + 8 <= minlen; j += 8) {
        uint64_t acc, w;
        memcpy(&acc, src[0] + j, sizeof(acc));
        if (op == OP_NOT)
            acc = ~acc;
        for (size_t i = 1; i < n; i++) {
            memcpy(&w, src[i] + j, sizeof(w));
            if (op == OP_AND)
                acc &= w;
            else if (op == OP_OR)
                acc |= w;
            else
                acc ^= w;
        }
        memcpy(res + j, &acc, sizeof(acc));
    }
    for (; j < maxlen; j++) {
        unsigned char acc = j < len[0] ? src[0][j] : 0;
        if (op == OP_NOT)
            acc = (unsigned char)~acc;
        for (size_t i = 1; i < n; i++) {
            unsigned char b = j < len[i] ? src[i][j] : 0;
            if (op == OP_AND)
                acc &= b;
            else if (op == OP_OR)
                acc |= b;
            else
                acc ^= b;
        }
        res[j] = acc;
    }
}

/* BITOP AND|OR|XOR|NOT destkey key [key ...]: stores the result (without a
 * TTL) or deletes destkey when every source is empty; answers its length. */
static void cmd_bitop(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    int op;
    if (kv_arg_is(&argv[1], "AND"))
        op = OP_AND;
    else if (kv_arg_is(&argv[1], "OR"))
        op = OP_OR;
    else if (kv_arg_is(&argv[1], "XOR"))
        op = OP_XOR;
    else if (kv_arg_is(&argv[1], "NOT"))
        op = OP_NOT;
    else {
        kv_reply_syntax(c->out);
        return;
    }
    if (op == OP_NOT && argc != 4) {
        resp_add_error(c->out, "ERR BITOP NOT must be called with a single source key.");
        return;
    }
    size_t n = argc - 3;
    const unsigned char **src = malloc(n * sizeof(*src));
    size_t *len = malloc(n * sizeof(*len));
    if (!src || !len) {
        kv_reply_oom(c->out);
        goto done;
    }
    size_t maxlen = 0;
    for (size_t i = 0; i < n; i++) {
        bool wrong;
        kv_entry *e = kv_lookup_type(c, &argv[3 + i], KV_STRING, &wrong);
        if (wrong)
            goto done;
        src[i] = e ? (const unsigned char *)kv_str(e) : NULL;
        len[i] = e ? e->vlen : 0;
        if (len[i] > maxlen)
            maxlen = len[i];
    }
    if (!maxlen) {
        kv_del(c, &argv[2]);
        resp_add_int(c->out, 0);
        goto done;
    }
    unsigned char *res = malloc(maxlen);
    if (!res) {
        kv_reply_oom(c->out);
        goto done;
    }
    bitop_compute(op, n, src, len, maxlen, res);
    /* The sources' bytes are read before destkey (maybe one of them) goes. */
    kv_entry *d = kv_set_str(c, &argv[2], res, maxlen, KV_NO_EXPIRE);
    free(res);
    if (!d) {
        kv_reply_oom(c->out);
        goto done;
    }
    d->enc = STR_ENC_RAW;
    resp_add_int(c->out, (long long)maxlen);
done:
    free(src);
    free(len);
}

/* ---- BITFIELD ---------------------------------------------------------------------- */

enum { BF_GET, BF_SET, BF_INCRBY };

typedef struct bf_op {
    uint64_t off;
    int64_t arg; /* SET's value, INCRBY's increment */
    unsigned char code, mode, bits;
    bool sign;
} bf_op;

/* Parses BITFIELD's subcommands into ops (room for argc / 3 of them).
 * Returns their number, or -1 after replying an error. *writes: whether any
 * op writes; *highest: the last bit a write touches. */
static long bf_parse(kv_cmd_ctx *c, size_t argc, const resp_arg *argv, bf_op *ops, bool *writes,
                     uint64_t *highest)
{
    long n = 0;
    unsigned char mode = OV_WRAP;
    *writes = false;
    *highest = 0;
    for (size_t j = 2; j < argc; j++) {
        size_t more = argc - j - 1;
        const resp_arg *a = &argv[j];
        unsigned char code;
        if (kv_arg_is(a, "GET") && more >= 2) {
            code = BF_GET;
        } else if (kv_arg_is(a, "SET") && more >= 3) {
            code = BF_SET;
        } else if (kv_arg_is(a, "INCRBY") && more >= 3) {
            code = BF_INCRBY;
        } else if (kv_arg_is(a, "OVERFLOW") && more >= 1) {
            const resp_arg *m = &argv[++j];
            if (kv_arg_is(m, "WRAP"))
                mode = OV_WRAP;
            else if (kv_arg_is(m, "SAT"))
                mode = OV_SAT;
            else if (kv_arg_is(m, "FAIL"))
                mode = OV_FAIL;
            else {
                resp_add_error(c->out, "ERR Invalid OVERFLOW type specified");
                return -1;
            }
            continue;
        } else {
            kv_reply_syntax(c->out);
            return -1;
        }
        bf_op *op = &ops[n];
        unsigned bits;
        if (!parse_bftype(c, &argv[j + 1], &op->sign, &bits) ||
            !parse_offset(c, &argv[j + 2], bits, &op->off))
            return -1;
        op->arg = 0;
        if (code != BF_GET) {
            *writes = true;
            if (*highest < op->off + bits - 1)
                *highest = op->off + bits - 1;
            long long v;
            if (!kv_arg_ll(c, &argv[j + 3], &v, NULL))
                return -1;
            op->arg = v;
        }
        op->code = code;
        op->mode = mode;
        op->bits = (unsigned char)bits;
        n++;
        j += code == BF_GET ? 2 : 3;
    }
    return n;
}

/* Runs one SET or INCRBY on p and replies its value (the old one for SET,
 * the new one for INCRBY) or null when OVERFLOW FAIL stops it. Returns
 * whether the field changed. */
static bool bf_write(kv_cmd_ctx *c, const bf_op *op, unsigned char *p, size_t len)
{
    uint64_t raw = bf_get(p, len, op->off, op->bits);
    int64_t old = bf_value(raw, op->bits, op->sign);
    i128 x;
    bool quirk = false;
    if (op->code == BF_INCRBY) {
        x = op->sign ? (i128)old + op->arg : (i128)(uint64_t)old + op->arg;
    } else {
        /* An unsigned field takes the value's two's complement bits: -1 is
         * 2^64 - 1, which overflows. */
        x = op->sign ? (i128)op->arg : (i128)(uint64_t)op->arg;
        quirk = op->sign && op->bits < 64 &&
                op->arg < (int64_t)((uint64_t)INT64_MIN + ((uint64_t)1 << (op->bits - 1)));
    }
    int64_t nv;
    if (!bf_fit(x, op->bits, op->sign, op->mode, quirk, &nv)) {
        resp_add_null(c->out, c->proto);
        return false;
    }
    resp_add_int(c->out, op->code == BF_INCRBY ? nv : old);
    bf_set(p, op->off, op->bits, (uint64_t)nv);
    return nv != old;
}

/* BITFIELD key [GET type offset] [SET type offset value]
 *   [INCRBY type offset increment] [OVERFLOW WRAP|SAT|FAIL] ...
 * BITFIELD_RO key [GET type offset] ... (ro) */
static void bitfield(kv_cmd_ctx *c, size_t argc, const resp_arg *argv, bool ro)
{
    bf_op *ops = malloc((argc / 3 + 1) * sizeof(*ops));
    unsigned char *grown = NULL;
    if (!ops) {
        kv_reply_oom(c->out);
        return;
    }
    bool writes;
    uint64_t highest;
    long n = bf_parse(c, argc, argv, ops, &writes, &highest);
    if (n < 0)
        goto done;
    if (writes && ro) {
        resp_add_error(c->out, "ERR BITFIELD_RO only supports the GET subcommand");
        goto done;
    }
    bool wrong;
    kv_entry *e = kv_lookup_type(c, &argv[1], KV_STRING, &wrong);
    if (wrong)
        goto done;
    unsigned char *p = e ? (unsigned char *)kv_str(e) : NULL;
    size_t len = e ? e->vlen : 0;
    if (writes && (highest >> 3) >= len) {
        /* Redis makes room for the farthest write first: the key exists
         * (zero-padded) afterwards even if every write fails. */
        size_t need = (size_t)(highest >> 3) + 1;
        if (!(grown = calloc(need, 1))) {
            kv_reply_oom(c->out);
            goto done;
        }
        if (len)
            memcpy(grown, p, len);
        p = grown;
        len = need;
    }
    size_t mark = c->out->len;
    resp_add_array(c->out, (size_t)n);
    bool changed = false;
    for (long i = 0; i < n; i++) {
        const bf_op *op = &ops[i];
        if (op->code == BF_GET)
            resp_add_int(c->out, bf_value(bf_get(p, len, op->off, op->bits), op->bits, op->sign));
        else
            changed |= bf_write(c, op, p, len);
    }
    if (grown) {
        kv_entry *ne = kv_set_str(c, &argv[1], grown, len, KV_KEEP_TTL);
        if (!ne) {
            c->out->len = mark; /* take the replies back: nothing was written */
            kv_reply_oom(c->out);
            goto done;
        }
        ne->enc = STR_ENC_RAW;
    } else if (writes) {
        e->enc = STR_ENC_RAW;
        if (changed)
            kv_modified(c, &argv[1]);
    }
done:
    free(grown);
    free(ops);
}

static void cmd_bitfield(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    bitfield(c, argc, argv, false);
}

static void cmd_bitfield_ro(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    bitfield(c, argc, argv, true);
}

const kv_command kv_bitmap_commands[] = {
    {"setbit", 4, KV_CMD_WRITE | KV_CMD_DENYOOM, 1, 1, 1, cmd_setbit, NULL, "@write @bitmap @slow"},
    {"getbit", 3, KV_CMD_READONLY | KV_CMD_FAST, 1, 1, 1, cmd_getbit, NULL, "@read @bitmap @fast"},
    {"bitcount", -2, KV_CMD_READONLY, 1, 1, 1, cmd_bitcount, NULL, "@read @bitmap @slow"},
    {"bitpos", -3, KV_CMD_READONLY, 1, 1, 1, cmd_bitpos, NULL, "@read @bitmap @slow"},
    {"bitop", -4, KV_CMD_WRITE | KV_CMD_DENYOOM, 2, -1, 1, cmd_bitop, NULL, "@write @bitmap @slow"},
    {"bitfield", -2, KV_CMD_WRITE | KV_CMD_DENYOOM, 1, 1, 1, cmd_bitfield, NULL,
     "@write @bitmap @slow"},
    {"bitfield_ro", -2, KV_CMD_READONLY | KV_CMD_FAST, 1, 1, 1, cmd_bitfield_ro, NULL,
     "@read @bitmap @fast"},
    {NULL},
};
