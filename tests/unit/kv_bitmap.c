/* keel-kv bitmaps: the bit-level helpers behind SETBIT, BITCOUNT, BITPOS,
 * BITOP and BITFIELD agree with naive bit-by-bit models on random inputs,
 * and BITFIELD's overflow handling follows Redis 7.0's rules (including
 * its verdict on narrow signed fields SET near INT64_MIN, checked against
 * redis-server 7.0.15). The commands themselves are covered, reply by
 * reply, by tests/integ/kv_cases/bitmap.txt. */
#include <criterion/criterion.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* The module's helpers are static: include it, renaming its one public
 * symbol so that it does not clash with the copy in kv-core. */
#define kv_bitmap_commands kv_bitmap_commands_under_test
#include "t_bitmap.c"
#undef kv_bitmap_commands

TestSuite(kv_bitmap, .timeout = 120);

/* xorshift64*: reproducible inputs. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dull;
}

static uint64_t rnd_below(uint64_t n)
{
    return n ? rnd() % n : 0;
}

/* Random bytes, biased towards runs of 0x00 and 0xff so that the skipping
 * paths of find_bit() are taken. */
static void fill(unsigned char *p, size_t n)
{
    unsigned kind = (unsigned)rnd_below(4);
    for (size_t i = 0; i < n; i++) {
        if (kind == 0)
            p[i] = (unsigned char)rnd();
        else if (kind == 1)
            p[i] = rnd_below(64) ? 0x00 : (unsigned char)rnd();
        else if (kind == 2)
            p[i] = rnd_below(64) ? 0xff : (unsigned char)rnd();
        else
            p[i] = rnd_below(2) ? 0x00 : 0xff;
    }
}

static int model_bit(const unsigned char *p, size_t len, uint64_t pos)
{
    if (pos / 8 >= len)
        return 0;
    return (p[pos / 8] >> (7 - pos % 8)) & 1;
}

Test(kv_bitmap, fields_read_and_write_the_bits_a_bit_array_model_does)
{
    enum { LEN = 24 };
    for (int iter = 0; iter < 200000; iter++) {
        unsigned char p[LEN], model[LEN * 8];
        fill(p, LEN);
        for (size_t i = 0; i < LEN * 8; i++)
            model[i] = (unsigned char)model_bit(p, LEN, i);
        unsigned bits = 1 + (unsigned)rnd_below(64);
        /* Reads may run past the end (they see zeros); writes stay inside. */
        uint64_t off = rnd_below(LEN * 8 + 16);
        uint64_t want = 0;
        for (unsigned i = 0; i < bits; i++)
            want = (want << 1) | (off + i < LEN * 8 ? model[off + i] : 0);
        cr_assert_eq(bf_get(p, LEN, off, bits), want, "get off %llu bits %u",
                     (unsigned long long)off, bits);

        off = rnd_below(LEN * 8 - bits + 1);
        uint64_t v = rnd();
        bf_set(p, off, bits, v);
        for (unsigned i = 0; i < bits; i++)
            model[off + i] = (v >> (bits - 1 - i)) & 1;
        for (size_t i = 0; i < LEN * 8; i++)
            cr_assert_eq(model_bit(p, LEN, i), model[i], "set off %llu bits %u: bit %zu",
                         (unsigned long long)off, bits, i);
    }
}

Test(kv_bitmap, signed_fields_read_as_twos_complement)
{
    cr_assert_eq(bf_value(0x80, 8, true), -128);
    cr_assert_eq(bf_value(0x7f, 8, true), 127);
    cr_assert_eq(bf_value(0x80, 8, false), 128);
    cr_assert_eq(bf_value(1, 1, true), -1);
    cr_assert_eq(bf_value(UINT64_MAX, 64, true), -1);
    cr_assert_eq(bf_value(0x7fffffffffffffffull, 63, false), INT64_MAX);
    cr_assert_eq(bf_value(0x4000000000000000ull, 63, true), -(INT64_C(1) << 62));
}

/* The overflow rules, spelled out the slow way: the exact result x and the
 * field's range; WRAP keeps x's low bits (sign-extended when signed), SAT
 * the bound crossed, FAIL nothing. */
static bool model_fit(i128 x, unsigned bits, bool sign, int mode, bool quirk, int64_t *out)
{
    i128 lo = 0, hi = 0;
    if (sign) {
        for (unsigned i = 0; i + 1 < bits; i++)
            hi = hi * 2 + 1;
        lo = -hi - 1;
    } else {
        for (unsigned i = 0; i < bits; i++)
            hi = hi * 2 + 1;
    }
    if (x >= lo && x <= hi) {
        *out = (int64_t)x;
        return true;
    }
    if (mode == OV_FAIL)
        return false;
    if (mode == OV_SAT) {
        *out = (int64_t)(quirk || x > hi ? hi : lo);
        return true;
    }
    uint64_t low = (uint64_t)x; /* x's low 64 bits */
    if (bits < 64)
        low &= (UINT64_C(1) << bits) - 1;
    *out = bf_value(low, bits, sign);
    return true;
}

Test(kv_bitmap, overflow_wraps_saturates_or_fails_as_the_model_says)
{
    static const int64_t edges[] = {
        0,    1,   -1,  2,         -2,        127,           128,          -128,
        -129, 255, 256, INT64_MAX, INT64_MIN, INT64_MAX - 1, INT64_MIN + 1};
    for (int iter = 0; iter < 500000; iter++) {
        unsigned bits = 1 + (unsigned)rnd_below(64);
        bool sign = bits == 64 ? true : rnd_below(2);
        int mode = (int)rnd_below(3);
        int64_t a = rnd_below(3) ? (int64_t)rnd() >> rnd_below(64)
                                 : edges[rnd_below(sizeof(edges) / sizeof(edges[0]))];
        int64_t b = rnd_below(3) ? (int64_t)rnd() >> rnd_below(64)
                                 : edges[rnd_below(sizeof(edges) / sizeof(edges[0]))];
        i128 x = rnd_below(2) ? (i128)a : (i128)a + b;
        bool quirk = rnd_below(2);
        int64_t got = 0, want = 0;
        bool ok = bf_fit(x, bits, sign, mode, quirk, &got);
        bool want_ok = model_fit(x, bits, sign, mode, quirk, &want);
        cr_assert_eq(ok, want_ok, "bits %u sign %d mode %d", bits, sign, mode);
        if (ok)
            cr_assert_eq(got, want, "bits %u sign %d mode %d a %lld b %lld", bits, sign, mode,
                         (long long)a, (long long)b);
    }
}

/* Values checked against redis-server 7.0.15 (BITFIELD ... GET after). */
Test(kv_bitmap, overflow_matches_redis_on_known_cases)
{
    int64_t v;
    cr_assert(bf_fit(200, 8, true, OV_WRAP, false, &v) && v == -56);
    cr_assert(bf_fit(200, 8, true, OV_SAT, false, &v) && v == 127);
    cr_assert(bf_fit(-200, 8, true, OV_SAT, false, &v) && v == -128);
    cr_assert(!bf_fit(200, 8, true, OV_FAIL, false, &v));
    cr_assert(bf_fit((i128)UINT64_MAX, 8, false, OV_WRAP, false, &v) && v == 255);
    cr_assert(bf_fit((i128)UINT64_MAX, 8, false, OV_SAT, false, &v) && v == 255);
    cr_assert(bf_fit(4, 2, false, OV_WRAP, false, &v) && v == 0);
    cr_assert(bf_fit(-1, 2, false, OV_SAT, false, &v) && v == 0);
    cr_assert(bf_fit((i128)INT64_MAX + 1, 64, true, OV_WRAP, false, &v) && v == INT64_MIN);
    cr_assert(bf_fit((i128)INT64_MAX * 2, 64, true, OV_WRAP, false, &v) && v == -2);
    cr_assert(bf_fit((i128)INT64_MIN - 1, 64, true, OV_SAT, false, &v) && v == INT64_MIN);
    /* SET i8 -9223372036854775808 under SAT stores 127 in Redis 7.0. */
    cr_assert(bf_fit((i128)INT64_MIN, 8, true, OV_SAT, true, &v) && v == 127);
    cr_assert(bf_fit((i128)INT64_MIN, 8, true, OV_WRAP, true, &v) && v == 0);
}

Test(kv_bitmap, bit_counts_agree_with_counting_one_bit_at_a_time)
{
    enum { MAXLEN = 300 };
    unsigned char p[MAXLEN];
    for (int iter = 0; iter < 100000; iter++) {
        size_t len = 1 + rnd_below(MAXLEN);
        fill(p, len);
        uint64_t bs = rnd_below(len * 8), be = bs + rnd_below(len * 8 - bs);
        long long want = 0;
        for (uint64_t i = bs; i <= be; i++)
            want += model_bit(p, len, i);
        cr_assert_eq(count_bits(p, bs, be), want, "len %zu [%llu, %llu]", len,
                     (unsigned long long)bs, (unsigned long long)be);
        size_t from = rnd_below(len), n = rnd_below(len - from + 1);
        cr_assert_eq(popcount_sw(p + from, n), popcount_words(p + from, n));
    }
}

Test(kv_bitmap, find_bit_returns_the_first_matching_position_in_range)
{
    enum { MAXLEN = 300 };
    unsigned char p[MAXLEN];
    for (int iter = 0; iter < 100000; iter++) {
        size_t len = 1 + rnd_below(MAXLEN);
        fill(p, len);
        uint64_t bs = rnd_below(len * 8), be = bs + rnd_below(len * 8 - bs);
        int bit = (int)rnd_below(2);
        long long want = -1;
        for (uint64_t i = bs; i <= be && want < 0; i++)
            if (model_bit(p, len, i) == bit)
                want = (long long)i;
        cr_assert_eq(find_bit(p, bs, be, bit), want, "len %zu [%llu, %llu] bit %d", len,
                     (unsigned long long)bs, (unsigned long long)be, bit);
    }
}

Test(kv_bitmap, ranges_clamp_and_count_from_the_end_as_redis_does)
{
    uint64_t bs, be;
    cr_assert(bit_range(0, -1, false, 6, &bs, &be) && bs == 0 && be == 47);
    cr_assert(bit_range(1, 1, false, 6, &bs, &be) && bs == 8 && be == 15);
    cr_assert(bit_range(-2, -1, false, 6, &bs, &be) && bs == 32 && be == 47);
    cr_assert(bit_range(-100, 100, false, 6, &bs, &be) && bs == 0 && be == 47);
    cr_assert(bit_range(5, 30, true, 6, &bs, &be) && bs == 5 && be == 30);
    cr_assert(bit_range(-5, -1, true, 6, &bs, &be) && bs == 43 && be == 47);
    cr_assert(!bit_range(2, 1, false, 6, &bs, &be));
    cr_assert(!bit_range(100, 200, false, 6, &bs, &be));
    cr_assert(!bit_range(0, -1, false, 0, &bs, &be));
    cr_assert(bit_range(LLONG_MIN, LLONG_MAX, true, 6, &bs, &be) && bs == 0 && be == 47);
}

Test(kv_bitmap, bitop_combines_zero_padded_sources_byte_by_byte)
{
    enum { MAXLEN = 100, MAXKEYS = 5 };
    unsigned char bufs[MAXKEYS][MAXLEN], res[MAXLEN];
    const unsigned char *src[MAXKEYS];
    size_t len[MAXKEYS];
    for (int iter = 0; iter < 50000; iter++) {
        int op = (int)rnd_below(4);
        size_t n = op == OP_NOT ? 1 : 1 + rnd_below(MAXKEYS);
        size_t maxlen = 0;
        for (size_t i = 0; i < n; i++) {
            len[i] = rnd_below(MAXLEN + 1);
            fill(bufs[i], len[i]);
            src[i] = len[i] || rnd_below(2) ? bufs[i] : NULL;
            if (len[i] > maxlen)
                maxlen = len[i];
        }
        if (!maxlen)
            continue;
        bitop_compute(op, n, src, len, maxlen, res);
        for (size_t j = 0; j < maxlen; j++) {
            unsigned want = j < len[0] ? src[0][j] : 0;
            if (op == OP_NOT)
                want = ~want & 0xff;
            for (size_t i = 1; i < n; i++) {
                unsigned b = j < len[i] ? src[i][j] : 0;
                want = op == OP_AND ? want & b : op == OP_OR ? want | b : want ^ b;
            }
            cr_assert_eq(res[j], want, "op %d byte %zu", op, j);
        }
    }
}
