/* RESP: the request parser accepts and rejects what Redis 7 does, with Redis's
 * error lines, whatever way the bytes are split; the reply writer emits Redis's
 * bytes in RESP2 and RESP3. Expected strings were checked against redis-server
 * 7.0.15 (parser) and Redis 7.2's d2string() rules (doubles). */
#include <criterion/criterion.h>

#include <errno.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "resp.h"

TestSuite(kv_resp, .timeout = 120);

/* A string literal with its length, NULs included. */
#define LIT(s) (s), (sizeof(s) - 1)

/* ---- helpers: transcripts ----------------------------------------------------------- */

/* Everything a parse run produced, serialised so that two runs compare with memcmp:
 * each command's consumed count and arguments, then how the run ended. */
typedef struct transcript {
    char *data;
    size_t len, cap;
    size_t commands; /* not compared: for the fuzz test's statistics */
    char end;        /* 'W' waiting for more, 'E' error */
} transcript;

static void t_put(transcript *t, const void *p, size_t n)
{
    if (t->len + n > t->cap) {
        t->cap = (t->len + n) * 2 + 64;
        t->data = realloc(t->data, t->cap);
        cr_assert_not_null(t->data);
    }
    memcpy(t->data + t->len, p, n);
    t->len += n;
}

static void t_num(transcript *t, size_t v)
{
    t_put(t, &v, sizeof(v));
}

static void t_cmd(transcript *t, ssize_t consumed, const resp_cmd *cmd)
{
    t->commands++;
    t_put(t, "C", 1);
    t_num(t, (size_t)consumed);
    t_num(t, cmd->argc);
    for (size_t i = 0; i < cmd->argc; i++) {
        t_num(t, cmd->argv[i].len);
        t_put(t, cmd->argv[i].ptr, cmd->argv[i].len);
    }
}

static void t_end_wait(transcript *t, size_t leftover)
{
    t->end = 'W';
    t_put(t, "W", 1);
    t_num(t, leftover);
}

static void t_end_err(transcript *t, ssize_t r, const char *err)
{
    t->end = 'E';
    t_put(t, "E", 1);
    t_num(t, (size_t)-r);
    t_put(t, err, strlen(err));
}

typedef struct settings {
    bool unauthenticated;
    long long max_bulk_len;
} settings;

static void parser_setup(resp_parser *p, const settings *s)
{
    resp_parser_init(p);
    if (s) {
        p->unauthenticated = s->unauthenticated;
        if (s->max_bulk_len)
            p->max_bulk_len = s->max_bulk_len;
    }
}

/* Parses all of in[0, n) at once, command after command. */
static transcript run_whole(const char *in, size_t n, const settings *s)
{
    transcript t = {0};
    resp_parser p;
    parser_setup(&p, s);
    /* A private copy, so ASan sees any read past n. */
    char *buf = malloc(n ? n : 1);
    memcpy(buf, in, n);
    size_t off = 0;
    for (;;) {
        resp_cmd cmd;
        const char *err = NULL;
        ssize_t r = resp_parse(&p, buf + off, n - off, &cmd, &err);
        if (r > 0) {
            cr_assert_leq((size_t)r, n - off);
            t_cmd(&t, r, &cmd);
            off += (size_t)r;
        } else if (r == 0) {
            cr_assert(resp_parse_need(&p) >= 1);
            t_end_wait(&t, n - off);
            break;
        } else {
            cr_assert_not_null(err);
            t_end_err(&t, r, err);
            break;
        }
    }
    free(buf);
    resp_parser_free(&p);
    return t;
}

/* Feeds in[0, n) as a server would: the pieces cut at cuts[0..ncuts) arrive one by
 * one into a buffer that is copied afresh before every call (so it always moves,
 * and ASan catches a stale pointer), and consumed bytes are dropped from its front. */
static transcript run_pieces(const char *in, size_t n, const size_t *cuts, size_t ncuts,
                             const settings *s)
{
    transcript t = {0};
    resp_parser p;
    parser_setup(&p, s);
    size_t have = 0; /* bytes of in received so far */
    size_t off = 0;  /* bytes of in consumed so far */
    for (size_t c = 0; c <= ncuts; c++) {
        have = c < ncuts ? cuts[c] : n;
        for (;;) {
            size_t len = have - off;
            char *buf = malloc(len ? len : 1);
            memcpy(buf, in + off, len);
            resp_cmd cmd;
            const char *err = NULL;
            ssize_t r = resp_parse(&p, buf, len, &cmd, &err);
            if (r > 0) {
                t_cmd(&t, r, &cmd);
                off += (size_t)r;
                free(buf);
                continue;
            }
            free(buf);
            if (r < 0) {
                t_end_err(&t, r, err);
                resp_parser_free(&p);
                return t;
            }
            break;
        }
    }
    t_end_wait(&t, n - off);
    resp_parser_free(&p);
    return t;
}

static void assert_same(const transcript *a, const transcript *b, const char *what, size_t i)
{
    cr_assert(a->len == b->len && memcmp(a->data, b->data, a->len) == 0,
              "%s: transcripts differ (case %zu)", what, i);
}

/* Whole, split in two at every byte, and byte by byte: the same transcript. */
static void assert_split_invariant(const char *in, size_t n, const settings *s, size_t id)
{
    transcript whole = run_whole(in, n, s);
    for (size_t k = 0; k <= n; k++) {
        transcript two = run_pieces(in, n, &k, 1, s);
        assert_same(&whole, &two, "split in two", id);
        free(two.data);
    }
    size_t *cuts = malloc((n + 1) * sizeof(*cuts));
    for (size_t k = 0; k < n; k++)
        cuts[k] = k;
    transcript bytes = run_pieces(in, n, cuts, n, s);
    assert_same(&whole, &bytes, "byte by byte", id);
    free(bytes.data);
    free(cuts);
    free(whole.data);
}

/* ---- helpers: single parses ------------------------------------------------------- */

typedef struct parsed {
    ssize_t r;
    const char *err;
    resp_cmd cmd;
} parsed;

static resp_parser P;

static void p_init(void)
{
    resp_parser_init(&P);
}
static void p_fini(void)
{
    resp_parser_free(&P);
}

static parsed parse(const char *buf, size_t len)
{
    parsed x = {0};
    x.r = resp_parse(&P, buf, len, &x.cmd, &x.err);
    return x;
}

static void assert_args(const resp_cmd *cmd, size_t argc, const char *const *args,
                        const size_t *lens)
{
    cr_assert_eq(cmd->argc, argc, "argc %zu, want %zu", cmd->argc, argc);
    for (size_t i = 0; i < argc; i++) {
        size_t len = lens ? lens[i] : strlen(args[i]);
        cr_assert_eq(cmd->argv[i].len, len, "arg %zu: length %zu, want %zu", i, cmd->argv[i].len,
                     len);
        cr_assert(memcmp(cmd->argv[i].ptr, args[i], len) == 0, "arg %zu differs", i);
    }
}

/* Parses in[0, n), one whole command, from a fresh parser and checks it. */
static void expect_cmd(const char *in, size_t n, size_t argc, const char *const *args,
                       const size_t *lens)
{
    size_t consumed = n;
    resp_parser p;
    resp_parser_init(&p);
    resp_cmd cmd;
    const char *err = NULL;
    ssize_t r = resp_parse(&p, in, n, &cmd, &err);
    cr_assert_eq(r, (ssize_t)consumed, "consumed %zd, want %zu (err %s)", r, consumed,
                 err ? err : "-");
    assert_args(&cmd, argc, args, lens);
    resp_parser_free(&p);
}

/* Parses in from a fresh parser with settings s and expects error line want. */
static void expect_error(const char *in, size_t n, const settings *s, const char *want)
{
    resp_parser p;
    parser_setup(&p, s);
    const char *err = NULL;
    resp_cmd cmd;
    ssize_t r = resp_parse(&p, in, n, &cmd, &err);
    cr_assert_eq(r, -EPROTO, "input %.40s: got %zd, want -EPROTO", in, r);
    cr_assert_str_eq(err, want);
    resp_parser_free(&p);
}

static void expect_wait(const char *in, size_t n, const settings *s)
{
    resp_parser p;
    parser_setup(&p, s);
    const char *err = NULL;
    resp_cmd cmd;
    ssize_t r = resp_parse(&p, in, n, &cmd, &err);
    cr_assert_eq(r, 0, "input %.40s: got %zd (%s), want 0", in, r, err ? err : "-");
    resp_parser_free(&p);
}

/* ---- valid input --------------------------------------------------------------- */

/* Commands that parse, alone or pipelined. */
static const struct {
    const char *in;
    size_t len;
} valid[] = {
    {LIT("*1\r\n$4\r\nPING\r\n")},
    {LIT("*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n")},
    {LIT("*2\r\n$4\r\nECHO\r\n$7\r\na\0b\r\n\0\xff\r\n")},
    {LIT("*2\r\n$3\r\nGET\r\n$0\r\n\r\n")},
    {LIT("*0\r\n")},
    {LIT("*-1\r\n")},
    {LIT("*1\rX$4\rXPING\r\n")},
    {LIT("*1\r\n$4\r\nPINGxy")},
    {LIT("PING\r\n")},
    {LIT("SET k v\n")},
    {LIT("set \"a b\" 'c d' \"\\x41\\n\\q\\xZZ\" 'it\\'s'\r\n")},
    {LIT("  \t\r\n")},
    {LIT("\n")},
    {LIT("\r\n")},
    {LIT("echo a\"b c\" x\r\n")},
    {LIT("echo \x0b\x0c"
         "foo\x0b x\r\n")},
    {LIT("PING\r\r\n")},
};

Test(kv_resp, a_multibulk_command_parses_zero_copy_into_the_callers_buffer)
{
    static const char in[] = "*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n";
    p_init();
    parsed x = parse(in, sizeof(in) - 1);
    cr_assert_eq(x.r, (ssize_t)sizeof(in) - 1);
    const char *args[] = {"SET", "key", "value"};
    assert_args(&x.cmd, 3, args, NULL);
    cr_assert_eq(x.cmd.argv[0].ptr, in + 8);
    cr_assert_eq(x.cmd.argv[1].ptr, in + 17);
    cr_assert_eq(x.cmd.argv[2].ptr, in + 26);
    p_fini();
}

Test(kv_resp, arguments_are_binary_safe)
{
    static const char in[] = "*2\r\n$4\r\nECHO\r\n$7\r\na\0b\r\n\0\xff\r\n";
    const char *args[] = {"ECHO", "a\0b\r\n\0\xff"};
    size_t lens[] = {4, 7};
    expect_cmd(in, sizeof(in) - 1, 2, args, lens);
}

Test(kv_resp, an_empty_bulk_is_an_empty_argument)
{
    const char *args[] = {"GET", ""};
    expect_cmd(LIT("*2\r\n$3\r\nGET\r\n$0\r\n\r\n"), 2, args, NULL);
}

Test(kv_resp, star_zero_and_negative_counts_are_skipped_as_redis_skips_them)
{
    expect_cmd(LIT("*0\r\n"), 0, NULL, NULL);
    expect_cmd(LIT("*-1\r\n"), 0, NULL, NULL);
    expect_cmd(LIT("*-10\r\n"), 0, NULL, NULL);
    expect_cmd(LIT("*-9223372036854775808\r\n"), 0, NULL, NULL);
}

Test(kv_resp, empty_and_blank_inline_lines_are_skipped)
{
    expect_cmd(LIT("\r\n"), 0, NULL, NULL);
    expect_cmd(LIT("\n"), 0, NULL, NULL);
    expect_cmd(LIT("  \t \r\n"), 0, NULL, NULL);
    expect_cmd(LIT("\x0b\x0c\r\n"), 0, NULL, NULL);
}

Test(kv_resp, header_lines_end_at_cr_and_the_next_byte_is_skipped_unchecked)
{
    const char *ping[] = {"PING"};
    /* Redis skips two bytes after each '\r' and after each payload. */
    expect_cmd(LIT("*1\rX$4\rXPING\r\n"), 1, ping, NULL);
    expect_cmd(LIT("*1\r\n$4\r\nPINGxy"), 1, ping, NULL);
    /* The byte after '\r' must have arrived, and so must both after a payload. */
    expect_wait(LIT("*1\r"), NULL);
    expect_wait(LIT("*1\r\n$4\r"), NULL);
    expect_wait(LIT("*1\r\n$4\r\nPING\r"), NULL);
}

Test(kv_resp, inline_commands_split_and_unescape_like_sdssplitargs)
{
    const char *a1[] = {"SET", "k", "v"};
    expect_cmd(LIT("SET k v\n"), 3, a1, NULL);
    const char *a2[] = {"set", "a b", "c d", "A\nqxZZ", "it's"};
    expect_cmd(LIT("set \"a b\" 'c d' \"\\x41\\n\\q\\xZZ\" 'it\\'s'\r\n"), 5, a2, NULL);
    const char *a3[] = {"echo", "ab c", "x"};
    expect_cmd(LIT("echo a\"b c\" x\r\n"), 3, a3, NULL);
    /* isspace() skips \v and \f between arguments, but only space, tab, CR and LF
     * end an unquoted one. */
    const char *a4[] = {"echo", "foo\x0b", "x"};
    expect_cmd(LIT("echo \x0b\x0c"
                   "foo\x0b x\r\n"),
               3, a4, NULL);
    /* Only one CR before the LF is the line's; another one separates. */
    const char *a5[] = {"PING"};
    expect_cmd(LIT("PING\r\r\n"), 1, a5, NULL);
    const char *a6[] = {"a", "\t\r\b\a\\\"", "\x01\xfe"};
    size_t l6[] = {1, 6, 2};
    expect_cmd(LIT("a \"\\t\\r\\b\\a\\\\\\\"\" \"\\x01\\xFe\"\n"), 3, a6, l6);
    const char *a7[] = {"", ""};
    expect_cmd(LIT("\"\" ''\n"), 2, a7, NULL);
    const char *a8[] = {"x4"};
    expect_cmd(LIT("\"\\x4\"\n"), 1, a8, NULL);
}

Test(kv_resp, pipelined_commands_parse_one_per_call_with_their_own_lengths)
{
    static const char in[] = "*1\r\n$4\r\nPING\r\n"
                             "*-1\r\n"
                             "PING\r\n"
                             "\r\n"
                             "*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"
                             "*1\r\n$4\r\nPI";
    const size_t want[] = {14, 5, 6, 2, 20};
    const size_t argc[] = {1, 0, 1, 0, 2};
    p_init();
    size_t off = 0;
    for (size_t i = 0; i < 5; i++) {
        parsed x = parse(in + off, sizeof(in) - 1 - off);
        cr_assert_eq(x.r, (ssize_t)want[i], "command %zu: consumed %zd", i, x.r);
        cr_assert_eq(x.cmd.argc, argc[i]);
        off += (size_t)x.r;
    }
    parsed x = parse(in + off, sizeof(in) - 1 - off);
    cr_assert_eq(x.r, 0);
    cr_assert_eq(resp_parse_need(&P), 4); /* "NG\r\n" */
    p_fini();
}

Test(kv_resp, every_valid_command_parses_the_same_at_every_split)
{
    for (size_t i = 0; i < sizeof(valid) / sizeof(valid[0]); i++)
        assert_split_invariant(valid[i].in, valid[i].len, NULL, i);
}

Test(kv_resp, a_pipeline_of_every_valid_command_parses_the_same_at_every_split)
{
    char all[1024];
    size_t n = 0;
    for (size_t i = 0; i < sizeof(valid) / sizeof(valid[0]); i++) {
        memcpy(all + n, valid[i].in, valid[i].len);
        n += valid[i].len;
    }
    transcript whole = run_whole(all, n, NULL);
    /* Each command came out whole: the run ends waiting with nothing left. */
    cr_assert_eq(whole.end, 'W');
    cr_assert_eq(whole.commands, sizeof(valid) / sizeof(valid[0]));
    assert_split_invariant(all, n, NULL, 0);
    free(whole.data);
}

Test(kv_resp, a_large_bulk_arrives_in_many_pieces_and_need_counts_down_exactly)
{
    const size_t size = 8u << 20;
    char head[64];
    int hl = snprintf(head, sizeof(head), "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$%zu\r\n", size);
    size_t total = (size_t)hl + size + 2;
    char *in = malloc(total);
    memcpy(in, head, (size_t)hl);
    for (size_t i = 0; i < size; i++)
        in[hl + i] = (char)(i * 7);
    memcpy(in + hl + size, "\r\n", 2);

    /* The server's buffer doubles by realloc when full, so it moves now and then. */
    p_init();
    char *buf = NULL;
    size_t have = 0, cap = 0, piece = 4093, calls = 0;
    parsed x = {0};
    while (have < total) {
        size_t n = have + piece <= total ? piece : total - have;
        if (have + n > cap) {
            cap = cap ? cap * 2 : 4096;
            buf = realloc(buf, cap);
        }
        memcpy(buf + have, in + have, n);
        have += n;
        x = parse(buf, have);
        calls++;
        if (have < total) {
            cr_assert_eq(x.r, 0);
            if (have > (size_t)hl)
                cr_assert_eq(resp_parse_need(&P), total - have);
        }
    }
    cr_assert_eq(x.r, (ssize_t)total);
    cr_assert_eq(x.cmd.argc, 3);
    cr_assert_eq(x.cmd.argv[2].len, size);
    cr_assert_eq(x.cmd.argv[2].ptr, buf + hl);
    cr_assert(memcmp(x.cmd.argv[2].ptr, in + hl, size) == 0);
    cr_assert_gt(calls, 2000);
    free(buf);
    free(in);
    p_fini();
}

Test(kv_resp, need_is_one_while_a_header_line_is_incomplete)
{
    p_init();
    cr_assert_eq(parse(LIT("*2\r\n$3")).r, 0);
    cr_assert_eq(resp_parse_need(&P), 1);
    cr_assert_eq(parse(LIT("*2\r\n$3\r\nGE")).r, 0);
    cr_assert_eq(resp_parse_need(&P), 3);
    p_fini();
}

Test(kv_resp, the_argument_vector_grows_for_a_command_of_many_arguments)
{
    const size_t argc = 100000;
    size_t cap = argc * 8 + 32, n = 0;
    char *in = malloc(cap);
    n += (size_t)sprintf(in + n, "*%zu\r\n", argc);
    for (size_t i = 0; i < argc; i++)
        n += (size_t)sprintf(in + n, "$1\r\n%c\r\n", (char)('a' + i % 26));
    p_init();
    parsed x = parse(in, n);
    cr_assert_eq(x.r, (ssize_t)n);
    cr_assert_eq(x.cmd.argc, argc);
    for (size_t i = 0; i < argc; i++)
        cr_assert_eq(x.cmd.argv[i].ptr[0], (char)('a' + i % 26));
    /* And the parser is ready for a small one after it. */
    x = parse(LIT("*1\r\n$4\r\nPING\r\n"));
    cr_assert_eq(x.r, 14);
    free(in);
    p_fini();
}

Test(kv_resp, a_huge_announced_count_costs_nothing_until_arguments_arrive)
{
    p_init();
    cr_assert_eq(parse(LIT("*2147483647\r\n$1\r\na\r\n")).r, 0);
    cr_assert_leq(P._argv_cap, 16);
    p_fini();
}

/* ---- protocol errors ------------------------------------------------------------- */

#define E_MBULK "ERR Protocol error: invalid multibulk length"
#define E_BULK "ERR Protocol error: invalid bulk length"
#define E_QUOTES "ERR Protocol error: unbalanced quotes in request"

Test(kv_resp, a_bad_multibulk_count_is_an_invalid_multibulk_length)
{
    expect_error(LIT("*3000000000\r\n"), NULL, E_MBULK);
    expect_error(LIT("*2147483648\r\n"), NULL, E_MBULK);
    expect_error(LIT("*\r\n"), NULL, E_MBULK);
    expect_error(LIT("*-0\r\n"), NULL, E_MBULK);
    expect_error(LIT("*03\r\n"), NULL, E_MBULK);
    expect_error(LIT("*+1\r\n"), NULL, E_MBULK);
    expect_error(LIT("*1 \r\n"), NULL, E_MBULK);
    expect_error(LIT("* 1\r\n"), NULL, E_MBULK);
    expect_error(LIT("*1x\r\n"), NULL, E_MBULK);
    expect_error(LIT("*-\r\n"), NULL, E_MBULK);
    expect_error(LIT("*100000000000000000000\r\n"), NULL, E_MBULK);
    expect_error(LIT("*-9223372036854775809\r\n"), NULL, E_MBULK);
    /* Up to INT_MAX is accepted, as in Redis 7: it waits for the arguments. */
    expect_wait(LIT("*2147483647\r\n"), NULL);
    expect_wait(LIT("*1048577\r\n"), NULL);
}

Test(kv_resp, a_bad_bulk_length_is_an_invalid_bulk_length)
{
    expect_error(LIT("*1\r\n$-1\r\n"), NULL, E_BULK);
    expect_error(LIT("*1\r\n$\r\n"), NULL, E_BULK);
    expect_error(LIT("*1\r\n$+4\r\nPING\r\n"), NULL, E_BULK);
    expect_error(LIT("*1\r\n$04\r\nPING\r\n"), NULL, E_BULK);
    expect_error(LIT("*1\r\n$4 \r\nPING\r\n"), NULL, E_BULK);
    expect_error(LIT("*1\r\n$536870913\r\n"), NULL, E_BULK);
    expect_error(LIT("*1\r\n$9223372036854775807\r\n"), NULL, E_BULK);
    expect_error(LIT("*1\r\n$99999999999999999999\r\n"), NULL, E_BULK);
    expect_wait(LIT("*1\r\n$536870912\r\n"), NULL);
}

Test(kv_resp, the_bulk_length_limit_is_proto_max_bulk_len)
{
    settings s = {.max_bulk_len = 1000};
    expect_error(LIT("*1\r\n$1001\r\n"), &s, E_BULK);
    expect_wait(LIT("*1\r\n$1000\r\n"), &s);
}

Test(kv_resp, a_header_that_is_not_a_bulk_names_the_byte_it_got)
{
    expect_error(LIT("*3\r\n$3\r\nSET\r\n$1\r\nx\r\nfooz\r\n"), NULL,
                 "ERR Protocol error: expected '$', got 'f'");
    expect_error(LIT("*1\r\n:1\r\n"), NULL, "ERR Protocol error: expected '$', got ':'");
    expect_error(LIT("*1\r\n\xff\r\n"), NULL, "ERR Protocol error: expected '$', got '\xff'");
    /* addReplyErrorFormat() turns CR and LF into spaces. */
    expect_error(LIT("*1\r\n\r\n"), NULL, "ERR Protocol error: expected '$', got ' '");
    expect_error(LIT("*1\r\n\n\r\n"), NULL, "ERR Protocol error: expected '$', got ' '");
    /* The verdict waits for the whole line, as Redis's does. */
    expect_wait(LIT("*1\r\nfoo"), NULL);
}

Test(kv_resp, unbalanced_quotes_in_an_inline_command_are_an_error)
{
    expect_error(LIT("set a \"b\r\n"), NULL, E_QUOTES);
    expect_error(LIT("set a 'b\r\n"), NULL, E_QUOTES);
    expect_error(LIT("set a 'b'c\r\n"), NULL, E_QUOTES);
    expect_error(LIT("echo \"foo\"bar\r\n"), NULL, E_QUOTES);
    expect_error(LIT("echo \"x\\\"\r\n"), NULL, E_QUOTES);
    expect_error(LIT("echo 'a\\'\r\n"), NULL, E_QUOTES);
    expect_error(LIT("echo \"a\\\n"), NULL, E_QUOTES);
}

/* A buffer of n copies of c after a prefix. */
static char *filled(const char *prefix, size_t plen, char c, size_t n)
{
    char *s = malloc(plen + n + 1);
    memcpy(s, prefix, plen);
    memset(s + plen, c, n);
    s[plen + n] = '\0';
    return s;
}

Test(kv_resp, lines_longer_than_64_kib_are_too_big_as_in_redis)
{
    char *s = filled("", 0, 'A', 65537);
    expect_error(s, 65537, NULL, "ERR Protocol error: too big inline request");
    expect_wait(s, 65536, NULL);
    free(s);

    s = filled("*", 1, '1', 70000);
    expect_error(s, 70001, NULL, "ERR Protocol error: too big mbulk count string");
    free(s);

    s = filled("*1\r\n$", 5, '1', 65536);
    expect_error(s, 5 + 65536, NULL, "ERR Protocol error: too big bulk count string");
    expect_wait(s, 5 + 65535, NULL);
    free(s);

    /* A line ending more than 64 KiB in fails even when it arrives whole, so the
     * verdict does not depend on how the bytes were split. */
    s = filled("ECHO ", 5, 'A', 70000);
    memcpy(s + 5 + 70000 - 2, "\r\n", 2);
    expect_error(s, 70005, NULL, "ERR Protocol error: too big inline request");
    free(s);
    s = filled("ECHO ", 5, 'A', 65536);
    s[65536] = '\n'; /* the LF at offset 65536: the longest line accepted */
    resp_parser p;
    resp_parser_init(&p);
    resp_cmd cmd;
    const char *err;
    cr_assert_eq(resp_parse(&p, s, 65537, &cmd, &err), 65537);
    cr_assert_eq(cmd.argv[1].len, 65536 - 5);
    resp_parser_free(&p);
    free(s);
}

Test(kv_resp, a_nul_before_the_line_end_hides_it_as_redis_strchr_does)
{
    expect_wait(LIT("PI\0NG\r\n"), NULL);
    expect_wait(LIT("\0\r\n"), NULL);
    expect_wait(LIT("*1\0\r\n"), NULL);
    expect_wait(LIT("*1\r\n$4\0\r\nPING\r\n"), NULL);
    expect_wait(LIT("*1\r\n\0\r\n"), NULL);
    /* ... until the 64 KiB limit gives up on it. */
    char *s = filled("PING\0", 5, 'A', 70000);
    expect_error(s, 70005, NULL, "ERR Protocol error: too big inline request");
    free(s);
    s = filled("*1\r\n$4\0", 7, 'A', 70000);
    expect_error(s, 70007, NULL, "ERR Protocol error: too big bulk count string");
    free(s);
}

Test(kv_resp, unauthenticated_clients_get_redis_tighter_limits)
{
    settings unauth = {.unauthenticated = true};
    expect_error(LIT("*11\r\n"), &unauth, "ERR Protocol error: unauthenticated multibulk length");
    expect_error(LIT("*100\r\n"), &unauth, "ERR Protocol error: unauthenticated multibulk length");
    expect_wait(LIT("*10\r\n"), &unauth);
    expect_error(LIT("*1\r\n$16385\r\n"), &unauth,
                 "ERR Protocol error: unauthenticated bulk length");
    expect_error(LIT("*1\r\n$100000000\r\n"), &unauth,
                 "ERR Protocol error: unauthenticated bulk length");
    expect_wait(LIT("*1\r\n$16384\r\n"), &unauth);
    /* The general limits are checked first. */
    expect_error(LIT("*3000000000\r\n"), &unauth, E_MBULK);
    expect_error(LIT("*1\r\n$536870913\r\n"), &unauth, E_BULK);
    /* Inline commands have only the 64 KiB limit. */
    const char *args[] = {"a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l"};
    resp_parser p;
    parser_setup(&p, &unauth);
    resp_cmd cmd;
    const char *err;
    cr_assert_eq(resp_parse(&p, LIT("a b c d e f g h i j k l\n"), &cmd, &err), 24);
    assert_args(&cmd, 12, args, NULL);
    /* Authenticating lifts the limits for the next command. */
    p.unauthenticated = false;
    cr_assert_eq(resp_parse(&p, LIT("*11\r\n"), &cmd, &err), 0);
    resp_parser_free(&p);
}

Test(kv_resp, an_error_repeats_until_the_parser_is_reset)
{
    p_init();
    parsed x = parse(LIT("*x\r\n"));
    cr_assert_eq(x.r, -EPROTO);
    x = parse(LIT("*1\r\n$4\r\nPING\r\n"));
    cr_assert_eq(x.r, -EPROTO);
    cr_assert_str_eq(x.err, E_MBULK);
    resp_parser_reset(&P);
    x = parse(LIT("*1\r\n$4\r\nPING\r\n"));
    cr_assert_eq(x.r, 14);
    p_fini();
}

Test(kv_resp, every_error_case_gives_the_same_verdict_at_every_split)
{
    static const struct {
        const char *in;
        size_t len;
    } bad[] = {
        {LIT("*3\r\n$3\r\nSET\r\n$1\r\nx\r\nfooz\r\n")},
        {LIT("*1\r\n$-1\r\n")},
        {LIT("*1\r\n\n\r\n")},
        {LIT("*03\r\n")},
        {LIT("PING\r\nset a 'b'c\r\n")},
        {LIT("*1\r\n$4\r\nPING\r\n*1\r\n$4\0\r\n")},
        {LIT("*1\r\n$4\r\nPING\r\n*11\r\n")},
        {LIT("*1\r\n$4\r\nPING\r\n*1\r\n$16385\r\n")},
    };
    settings unauth = {.unauthenticated = true};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_split_invariant(bad[i].in, bad[i].len, NULL, i);
        assert_split_invariant(bad[i].in, bad[i].len, &unauth, i);
    }
}

/* ---- fuzzing ----------------------------------------------------------------------- */

static uint64_t rng_state;

static uint64_t rng(void)
{
    /* xorshift64*: fixed seed, same inputs on every run. */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ULL;
}

static size_t rng_below(size_t n)
{
    return (size_t)(rng() % n);
}

/* Random input: protocol-ish bytes, or valid commands with a few mutations. */
static size_t make_input(char *out, size_t cap)
{
    static const char alphabet[] = "*$\r\n\r\n0123456789--\"'\\ xX\0aA\t:+";
    size_t n = 0;
    if (rng_below(3) == 0) {
        size_t len = rng_below(cap);
        for (; n < len; n++)
            out[n] = rng_below(4) == 0 ? (char)rng() : alphabet[rng_below(sizeof(alphabet) - 1)];
        return n;
    }
    size_t cmds = 1 + rng_below(4);
    for (size_t c = 0; c < cmds; c++) {
        size_t i = rng_below(sizeof(valid) / sizeof(valid[0]));
        if (n + valid[i].len > cap)
            break;
        memcpy(out + n, valid[i].in, valid[i].len);
        n += valid[i].len;
    }
    size_t mutations = rng_below(4);
    for (size_t m = 0; m < mutations && n > 0; m++) {
        size_t at = rng_below(n);
        switch (rng_below(4)) {
        case 0: out[at] = (char)rng(); break;
        case 1: out[at] = alphabet[rng_below(sizeof(alphabet) - 1)]; break;
        case 2: /* delete */
            memmove(out + at, out + at + 1, n - at - 1);
            n--;
            break;
        case 3: /* insert */
            if (n < cap) {
                memmove(out + at + 1, out + at, n - at);
                out[at] = alphabet[rng_below(sizeof(alphabet) - 1)];
                n++;
            }
            break;
        }
    }
    return n;
}

Test(kv_resp, random_and_mutated_input_never_crashes_and_parses_the_same_however_split)
{
    rng_state = 0x9e3779b97f4a7c15ULL;
    char in[512];
    size_t cuts[16];
    size_t commands = 0, errors = 0, waits = 0;
    for (size_t iter = 0; iter < 20000; iter++) {
        size_t n = make_input(in, sizeof(in));
        settings s = {.unauthenticated = rng_below(4) == 0,
                      .max_bulk_len = rng_below(4) == 0 ? 5 : 0};
        transcript whole = run_whole(in, n, &s);

        size_t ncuts = rng_below(sizeof(cuts) / sizeof(cuts[0]));
        for (size_t c = 0; c < ncuts; c++)
            cuts[c] = n ? rng_below(n + 1) : 0;
        for (size_t a = 1; a < ncuts; a++) /* sort: pieces arrive in order */
            for (size_t b = a; b > 0 && cuts[b - 1] > cuts[b]; b--) {
                size_t t = cuts[b];
                cuts[b] = cuts[b - 1];
                cuts[b - 1] = t;
            }
        transcript pieces = run_pieces(in, n, cuts, ncuts, &s);
        assert_same(&whole, &pieces, "random pieces", iter);
        free(pieces.data);

        if (iter % 8 == 0) {
            size_t bytes[512];
            for (size_t k = 0; k < n; k++)
                bytes[k] = k;
            transcript one = run_pieces(in, n, bytes, n, &s);
            assert_same(&whole, &one, "byte by byte", iter);
            free(one.data);
        }

        commands += whole.commands;
        errors += whole.end == 'E';
        waits += whole.end == 'W';
        free(whole.data);
    }
    /* The generator reaches all three outcomes often. */
    cr_assert_gt(commands, 5000);
    cr_assert_gt(errors, 2000);
    cr_assert_gt(waits, 2000);
}

/* ---- the writer ----------------------------------------------------------------------- */

static resp_buf B;

static void b_init(void)
{
    resp_buf_init(&B);
}
static void b_fini(void)
{
    resp_buf_free(&B);
}

/* Asserts the buffer holds exactly the literal, then empties it. */
#define EXPECT(lit)                                                                                \
    do {                                                                                           \
        cr_assert_eq(B.err, 0);                                                                    \
        cr_assert(B.len == sizeof(lit) - 1 && memcmp(B.data, lit, B.len) == 0,                     \
                  "got \"%.*s\", want \"%s\"", (int)B.len, B.data, lit);                           \
        resp_buf_clear(&B);                                                                        \
    } while (0)

Test(kv_resp, simple_strings_errors_and_integers_are_redis_bytes, .init = b_init, .fini = b_fini)
{
    resp_add_status(&B, "OK");
    EXPECT("+OK\r\n");
    resp_add_status_len(&B, LIT("a\r\nb"));
    EXPECT("+a  b\r\n");
    resp_add_error(&B, "ERR Protocol error: invalid bulk length");
    EXPECT("-ERR Protocol error: invalid bulk length\r\n");
    resp_add_error(&B, "WRONGTYPE Operation against a key holding the wrong kind of value");
    EXPECT("-WRONGTYPE Operation against a key holding the wrong kind of value\r\n");
    resp_add_errorf(&B, "ERR unknown command '%s', with args beginning with: ", "FOO");
    EXPECT("-ERR unknown command 'FOO', with args beginning with: \r\n");
    resp_add_errorf(&B, "\r\nERR bad\nthing\r\n");
    EXPECT("-ERR bad thing\r\n");
    char longer[600];
    memset(longer, 'x', sizeof(longer) - 1);
    longer[sizeof(longer) - 1] = '\0';
    resp_add_errorf(&B, "ERR %s", longer);
    cr_assert_eq(B.len, 4 + 599 + 3);
    resp_buf_clear(&B);

    resp_add_int(&B, 0);
    EXPECT(":0\r\n");
    resp_add_int(&B, 1);
    EXPECT(":1\r\n");
    resp_add_int(&B, -42);
    EXPECT(":-42\r\n");
    resp_add_int(&B, LLONG_MAX);
    EXPECT(":9223372036854775807\r\n");
    resp_add_int(&B, LLONG_MIN);
    EXPECT(":-9223372036854775808\r\n");
}

Test(kv_resp, bulk_strings_and_nulls_are_redis_bytes_in_both_protocols, .init = b_init,
     .fini = b_fini)
{
    resp_add_bulk(&B, LIT("foo"));
    EXPECT("$3\r\nfoo\r\n");
    resp_add_bulk(&B, "", 0);
    EXPECT("$0\r\n\r\n");
    resp_add_bulk(&B, LIT("a\0\r\nb"));
    EXPECT("$5\r\na\0\r\nb\r\n");
    resp_add_bulk_header(&B, 3);
    resp_add_raw(&B, LIT("big\r\n"));
    EXPECT("$3\r\nbig\r\n");
    resp_add_bulk_cstr(&B, "hello");
    EXPECT("$5\r\nhello\r\n");
    resp_add_bulk_ll(&B, -1234567890123LL);
    EXPECT("$14\r\n-1234567890123\r\n");
    resp_add_bulk_ll(&B, 0);
    EXPECT("$1\r\n0\r\n");

    resp_add_null(&B, 2);
    EXPECT("$-1\r\n");
    resp_add_null(&B, 3);
    EXPECT("_\r\n");
    resp_add_null_array(&B, 2);
    EXPECT("*-1\r\n");
    resp_add_null_array(&B, 3);
    EXPECT("_\r\n");
}

Test(kv_resp, aggregate_headers_are_redis_bytes_in_both_protocols, .init = b_init, .fini = b_fini)
{
    resp_add_array(&B, 0);
    EXPECT("*0\r\n");
    resp_add_array(&B, 3);
    EXPECT("*3\r\n");
    resp_add_map(&B, 2, 2);
    EXPECT("*4\r\n");
    resp_add_map(&B, 3, 2);
    EXPECT("%2\r\n");
    resp_add_map(&B, 3, 0);
    EXPECT("%0\r\n");
    resp_add_set(&B, 2, 5);
    EXPECT("*5\r\n");
    resp_add_set(&B, 3, 5);
    EXPECT("~5\r\n");
    resp_add_push(&B, 2, 3);
    EXPECT("*3\r\n");
    resp_add_push(&B, 3, 3);
    EXPECT(">3\r\n");
}

Test(kv_resp, booleans_bignums_and_verbatim_strings_are_redis_bytes, .init = b_init, .fini = b_fini)
{
    resp_add_bool(&B, 3, true);
    EXPECT("#t\r\n");
    resp_add_bool(&B, 3, false);
    EXPECT("#f\r\n");
    resp_add_bool(&B, 2, true);
    EXPECT(":1\r\n");
    resp_add_bool(&B, 2, false);
    EXPECT(":0\r\n");
    resp_add_bignum(&B, 3, LIT("1234567890123456789012345678901234567890"));
    EXPECT("(1234567890123456789012345678901234567890\r\n");
    resp_add_bignum(&B, 2, LIT("12345678901234567890"));
    EXPECT("$20\r\n12345678901234567890\r\n");
    resp_add_verbatim(&B, 3, LIT("# Server\r\nredis_version:7.0.15"), "txt");
    EXPECT("=34\r\ntxt:# Server\r\nredis_version:7.0.15\r\n");
    resp_add_verbatim(&B, 3, LIT("hi"), "md");
    EXPECT("=6\r\nmd :hi\r\n");
    resp_add_verbatim(&B, 2, LIT("hi"), "txt");
    EXPECT("$2\r\nhi\r\n");
}

Test(kv_resp, doubles_are_comma_replies_in_resp3_and_bulks_in_resp2, .init = b_init, .fini = b_fini)
{
    resp_add_double(&B, 3, 1.5);
    EXPECT(",1.5\r\n");
    resp_add_double(&B, 2, 1.5);
    EXPECT("$3\r\n1.5\r\n");
    resp_add_double(&B, 3, 0.1); /* Redis 7.0's %.17g */
    EXPECT(",0.10000000000000001\r\n");
    resp_add_double(&B, 2, INFINITY);
    EXPECT("$3\r\ninf\r\n");
    resp_add_double(&B, 3, -INFINITY);
    EXPECT(",-inf\r\n");
    resp_add_double(&B, 3, NAN);
    EXPECT(",nan\r\n");
    resp_add_double(&B, 2, 3.0);
    EXPECT("$1\r\n3\r\n");
    resp_add_double(&B, 3, 1e100);
    EXPECT(",1e+100\r\n");
}

Test(kv_resp, human_long_doubles_are_incrbyfloat_replies, .init = b_init, .fini = b_fini)
{
    /* INCRBYFLOAT replies with a bulk string in both protocols; this is
     * addReplyHumanLongDouble() for the replies that use it. */
    resp_add_human_long_double(&B, 2, strtold("0.1", NULL));
    EXPECT("$3\r\n0.1\r\n");
    resp_add_human_long_double(&B, 3, strtold("0.1", NULL));
    EXPECT(",0.1\r\n");
    resp_add_human_long_double(&B, 2, 1e20L);
    EXPECT("$21\r\n100000000000000000000\r\n");
}

Test(kv_resp, deferred_lengths_are_inserted_before_their_elements, .init = b_init, .fini = b_fini)
{
    resp_add_status(&B, "before");
    size_t at = resp_add_deferred(&B);
    resp_add_bulk_cstr(&B, "a");
    resp_add_bulk_cstr(&B, "b");
    resp_set_deferred_array(&B, at, 2);
    EXPECT("+before\r\n*2\r\n$1\r\na\r\n$1\r\nb\r\n");

    at = resp_add_deferred(&B);
    resp_add_bulk_cstr(&B, "k");
    resp_add_int(&B, 1);
    resp_set_deferred_map(&B, 2, at, 1);
    EXPECT("*2\r\n$1\r\nk\r\n:1\r\n");
    at = resp_add_deferred(&B);
    resp_set_deferred_map(&B, 3, at, 0);
    EXPECT("%0\r\n");
    at = resp_add_deferred(&B);
    resp_add_int(&B, 7);
    resp_set_deferred_set(&B, 3, at, 1);
    EXPECT("~1\r\n:7\r\n");
    at = resp_add_deferred(&B);
    resp_add_int(&B, 7);
    resp_set_deferred_set(&B, 2, at, 1);
    EXPECT("*1\r\n:7\r\n");
}

Test(kv_resp, a_full_fixed_buffer_fails_whole_replies_and_stays_failed)
{
    char mem[8];
    resp_buf b;
    resp_buf_wrap(&b, mem, sizeof(mem));
    cr_assert_eq(resp_add_status(&b, "OK"), 0);
    cr_assert_eq(resp_add_int(&b, 1000), -ENOBUFS);
    cr_assert_eq(b.len, 5);
    cr_assert_eq(resp_add_raw(&b, "x", 1), -ENOBUFS);
    cr_assert_eq(b.len, 5);
    cr_assert_eq(b.err, -ENOBUFS);
    cr_assert(memcmp(mem, "+OK\r\n", 5) == 0);
    resp_buf_clear(&b);
    cr_assert_eq(resp_add_int(&b, 1000), 0);
    cr_assert_eq(b.len, 7);
    resp_buf_free(&b);
}

Test(kv_resp, a_growable_buffer_holds_a_large_reply, .init = b_init, .fini = b_fini)
{
    size_t n = 3u << 20;
    char *v = malloc(n);
    memset(v, 'v', n);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(resp_add_bulk(&B, v, n), 0);
    cr_assert_eq(B.len, 4 * (n + 12));
    cr_assert(memcmp(B.data, "$3145728\r\nvvv", 13) == 0);
    free(v);
}

/* ---- number formatting ------------------------------------------------------------ */

Test(kv_resp, integers_format_like_printf)
{
    const long long vals[] = {0,
                              1,
                              -1,
                              9,
                              10,
                              99,
                              100,
                              -100,
                              12345,
                              1000000007,
                              -999999999999LL,
                              LLONG_MAX,
                              LLONG_MIN,
                              LLONG_MIN + 1};
    char got[RESP_LL_CHARS], want[32];
    for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
        int n = resp_fmt_ll(got, vals[i]);
        snprintf(want, sizeof(want), "%lld", vals[i]);
        cr_assert_str_eq(got, want);
        cr_assert_eq(n, (int)strlen(want));
    }
    rng_state = 42;
    for (int i = 0; i < 100000; i++) {
        long long v = (long long)(rng() >> rng_below(64));
        if (i & 1)
            v = -v;
        resp_fmt_ll(got, v);
        snprintf(want, sizeof(want), "%lld", v);
        cr_assert_str_eq(got, want);
    }
}

static void expect_double(double d, const char *want)
{
    char got[RESP_DOUBLE_CHARS];
    int n = resp_fmt_double(got, d);
    cr_assert_str_eq(got, want, "%.17g: got %s, want %s", d, got, want);
    cr_assert_eq(n, (int)strlen(want));
}

Test(kv_resp, doubles_format_as_redis_7_2_d2string)
{
    expect_double(0.0, "0");
    expect_double(-0.0, "-0");
    expect_double(NAN, "nan");
    expect_double(-NAN, "nan");
    expect_double(INFINITY, "inf");
    expect_double(-INFINITY, "-inf");
    expect_double(1.5, "1.5");
    expect_double(-2.25, "-2.25");
    expect_double(0.1, "0.1");
    expect_double(0.1 + 0.2, "0.30000000000000004");
    expect_double(3.0, "3");
    expect_double(-17.0, "-17");
    expect_double(123.456, "123.456");
    expect_double(1e-4, "0.0001");
    expect_double(1e-5, "0.00001");
    expect_double(1e-6, "0.000001");
    expect_double(1e-7, "1e-7");
    expect_double(1.5e-7, "1.5e-7");
    expect_double(0.001234567, "0.001234567");
    expect_double(1.234567e-4, "1.234567e-4");
    expect_double(3.14159265358979, "3.14159265358979");
    /* Integers up to 2^62 print in full. */
    expect_double(1.2345678901234568e17, "123456789012345680");
    expect_double(4611686018427387904.0, "4611686018427387904");
    expect_double(-4611686018427387904.0, "-4611686018427387904");
    /* Beyond, shortest digits: as an integer while the exponent is small ... */
    expect_double(9223372036854775808.0, "9223372036854776000");
    expect_double(1.5e20, "1.5e+20");
    /* ... and with an exponent past that (value = digits * 10^K, K >= 8). */
    expect_double(1e19, "1e+19");
    expect_double(1e21, "1e+21");
    expect_double(1e100, "1e+100");
    expect_double(-1.5e300, "-1.5e+300");
    expect_double(DBL_MAX, "1.7976931348623157e+308");
    expect_double(DBL_MIN, "2.2250738585072014e-308");
    expect_double(5e-324, "5e-324");
    expect_double(1e-310, "1e-310");
    expect_double(123456.789e-20, "1.23456789e-15");
}

/* The number of significant digits in a formatted number. */
static int significant_digits(const char *s)
{
    char d[64];
    int n = 0;
    for (; *s && *s != 'e'; s++)
        if (*s >= '0' && *s <= '9')
            d[n++] = *s;
    int lead = 0;
    while (lead < n && d[lead] == '0')
        lead++;
    while (n > lead && d[n - 1] == '0')
        n--;
    return n - lead;
}

Test(kv_resp, formatted_doubles_read_back_exactly_with_the_fewest_digits)
{
    rng_state = 7;
    char got[RESP_DOUBLE_CHARS], tmp[40];
    for (int i = 0; i < 200000; i++) {
        uint64_t bits = rng();
        if (i % 3 == 0) /* also moderate magnitudes, where the layouts change */
            bits = (bits & 0x800fffffffffffffULL) | ((uint64_t)(1023 - 30 + rng_below(90)) << 52);
        double d;
        memcpy(&d, &bits, sizeof(d));
        if (!isfinite(d) || d == 0)
            continue;
        resp_fmt_double(got, d);
        cr_assert_eq(strtod(got, NULL), d, "%s does not read back as %.17g", got, d);
        if (fabs(d) <= 4611686018427387904.0 && d == (double)(long long)d)
            continue;
        int shortest = 1;
        for (; shortest < 17; shortest++) {
            snprintf(tmp, sizeof(tmp), "%.*e", shortest - 1, d);
            if (strtod(tmp, NULL) == d)
                break;
        }
        cr_assert_eq(significant_digits(got), shortest, "%s for %.17g: want %d digits", got, d,
                     shortest);
    }
}

static void expect_human(long double v, const char *want)
{
    char got[RESP_LONG_DOUBLE_CHARS];
    int n = resp_fmt_long_double_human(got, sizeof(got), v);
    cr_assert_str_eq(got, want);
    cr_assert_eq(n, (int)strlen(want));
}

Test(kv_resp, long_doubles_format_as_incrbyfloat_does)
{
    /* Values from INCRBYFLOAT on redis-server 7.0.15. */
    expect_human(strtold("0.1", NULL), "0.1");
    expect_human(strtold("-0.1", NULL), "-0.1");
    expect_human(1e20L, "100000000000000000000");
    expect_human(0.0L, "0");
    expect_human(-0.0L, "0");
    expect_human(3.0L, "3");
    expect_human(strtold("2.900000000123", NULL), "2.900000000123");
    expect_human(strtold("-0.099999999877", NULL), "-0.099999999877");
    expect_human(strtold("1e-18", NULL), "0");
    expect_human(strtold("-1e-18", NULL), "0");
    expect_human(1.0L / 3, "0.33333333333333333");
    expect_human(INFINITY, "inf");
    expect_human(-INFINITY, "-inf");
    char small[4];
    cr_assert_eq(resp_fmt_long_double_human(small, sizeof(small), 12345.0L), -ENOSPC);
    char *big = malloc(RESP_LONG_DOUBLE_CHARS);
    cr_assert_gt(resp_fmt_long_double_human(big, RESP_LONG_DOUBLE_CHARS, LDBL_MAX), 4900);
    free(big);
}
