/* The command table: every module's commands in one lookup table, their
 * key positions, COMMAND's replies, and the small helpers handlers share
 * (argument parsing and Redis's common error replies). */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dict.h"
#include "kv.h"

static const kv_command *const tables[] = {
    kv_string_commands, kv_bitmap_commands, kv_key_commands,  kv_list_commands,
    kv_hash_commands,   kv_set_commands,    kv_zset_commands, kv_server_commands,
    kv_block_commands,
};

/* Open addressing over lower-cased names; built once, read by every shard. */
#define LOOKUP_SIZE 1024
static const kv_command *lookup[LOOKUP_SIZE];
static size_t ncommands;

static uint64_t name_hash(const char *s, size_t n)
{
    char low[64];
    for (size_t i = 0; i < n; i++)
        low[i] = (char)tolower((unsigned char)s[i]);
    return kv_dict_hash(low, n);
}

void kv_commands_init(void)
{
    if (ncommands)
        return;
    for (size_t t = 0; t < sizeof(tables) / sizeof(tables[0]); t++) {
        for (const kv_command *c = tables[t]; c->name; c++) {
            size_t n = strlen(c->name);
            size_t i = name_hash(c->name, n) & (LOOKUP_SIZE - 1);
            while (lookup[i])
                i = (i + 1) & (LOOKUP_SIZE - 1);
            lookup[i] = c;
            ncommands++;
        }
    }
}

const kv_command *kv_command_lookup(const char *name, size_t len)
{
    if (len == 0 || len >= 64)
        return NULL;
    size_t i = name_hash(name, len) & (LOOKUP_SIZE - 1);
    for (const kv_command *c; (c = lookup[i]); i = (i + 1) & (LOOKUP_SIZE - 1))
        if (strlen(c->name) == len && !strncasecmp(c->name, name, len))
            return c;
    return NULL;
}

size_t kv_command_id(const kv_command *cmd)
{
    size_t i = name_hash(cmd->name, strlen(cmd->name)) & (LOOKUP_SIZE - 1);
    while (lookup[i] != cmd)
        i = (i + 1) & (LOOKUP_SIZE - 1);
    return i;
}

const kv_command *kv_command_by_id(size_t id)
{
    return id < LOOKUP_SIZE ? lookup[id] : NULL;
}

int kv_command_keys(const kv_command *cmd, size_t argc, const resp_arg *argv, size_t *idx,
                    size_t max)
{
    if (cmd->keys)
        return cmd->keys(argc, argv, idx, max);
    if (!cmd->first_key || argc <= (size_t)cmd->first_key)
        return 0;
    long last = cmd->last_key >= 0 ? cmd->last_key : (long)argc + cmd->last_key;
    if (last >= (long)argc)
        last = (long)argc - 1;
    size_t n = 0;
    for (long i = cmd->first_key; i <= last && n < max; i += cmd->key_step)
        idx[n++] = (size_t)i;
    return (int)n;
}

/* "ERR unknown command 'x', with args beginning with: 'a' 'b' " as
 * Redis 7 writes it (names and args cut at 128 bytes). */
void kv_reply_unknown(resp_buf *out, size_t argc, const resp_arg *argv)
{
    char msg[1024];
    int n = snprintf(msg, sizeof(msg), "ERR unknown command '%.*s', with args beginning with: ",
                     (int)(argv[0].len > 128 ? 128 : argv[0].len), argv[0].ptr);
    for (size_t i = 1; i < argc && n < (int)sizeof(msg) - 140; i++)
        n += snprintf(msg + n, sizeof(msg) - (size_t)n, "'%.*s' ",
                      (int)(argv[i].len > 128 ? 128 : argv[i].len), argv[i].ptr);
    resp_add_error_len(out, msg, (size_t)n);
}

void kv_reply_arity(resp_buf *out, const kv_command *cmd)
{
    resp_add_errorf(out, "ERR wrong number of arguments for '%s' command", cmd->name);
}

/* ---- COMMAND ----------------------------------------------------------------------- */

static const struct {
    uint32_t bit;
    const char *name;
} flag_names[] = {
    {KV_CMD_WRITE, "write"},       {KV_CMD_READONLY, "readonly"},
    {KV_CMD_DENYOOM, "denyoom"},   {KV_CMD_ADMIN, "admin"},
    {KV_CMD_PUBSUB, "pubsub"},     {KV_CMD_NOSCRIPT, "noscript"},
    {KV_CMD_BLOCKING, "blocking"}, {KV_CMD_LOADING, "loading"},
    {KV_CMD_STALE, "stale"},       {KV_CMD_SKIP_MONITOR, "skip_monitor"},
    {KV_CMD_FAST, "fast"},         {KV_CMD_NO_AUTH, "no_auth"},
    {KV_CMD_NO_MULTI, "no_multi"}, {KV_CMD_MAY_REPLICATE, "may_replicate"},
};

/* One COMMAND INFO entry: Redis 7's ten fields. Key specs, tips and
 * subcommands are left empty: clients route by first/last/step. */
static void command_info(resp_buf *out, int proto, const kv_command *c)
{
    resp_add_array(out, 10);
    resp_add_bulk_cstr(out, c->name);
    resp_add_int(out, c->arity);
    size_t nf = 0;
    for (size_t i = 0; i < sizeof(flag_names) / sizeof(flag_names[0]); i++)
        nf += (c->flags & flag_names[i].bit) != 0;
    resp_add_set(out, proto, nf + (c->keys != NULL));
    for (size_t i = 0; i < sizeof(flag_names) / sizeof(flag_names[0]); i++)
        if (c->flags & flag_names[i].bit)
            resp_add_status(out, flag_names[i].name);
    if (c->keys)
        resp_add_status(out, "movablekeys");
    resp_add_int(out, c->first_key);
    resp_add_int(out, c->last_key);
    resp_add_int(out, c->key_step);
    const char *cats = c->acl_cats ? c->acl_cats : "";
    size_t ncat = 0;
    for (const char *p = cats; *p; p++)
        ncat += *p == '@';
    resp_add_set(out, proto, ncat);
    for (const char *p = cats; (p = strchr(p, '@'));) {
        size_t n = strcspn(p, " ");
        resp_add_status_len(out, p, n);
        p += n;
    }
    resp_add_set(out, proto, 0); /* tips */
    resp_add_array(out, 0);      /* key specs */
    resp_add_array(out, 0);      /* subcommands */
}

static void each_command(void (*fn)(void *arg, const kv_command *c), void *arg)
{
    for (size_t t = 0; t < sizeof(tables) / sizeof(tables[0]); t++)
        for (const kv_command *c = tables[t]; c->name; c++)
            fn(arg, c);
}

typedef struct {
    kv_cmd_ctx *c;
    int mode; /* 0 info, 1 list, 2 docs */
} each_ctx;

static void each_reply(void *arg, const kv_command *cmd)
{
    each_ctx *e = arg;
    if (e->mode == 0) {
        command_info(e->c->out, e->c->proto, cmd);
    } else if (e->mode == 1) {
        resp_add_bulk_cstr(e->c->out, cmd->name);
    } else {
        resp_add_bulk_cstr(e->c->out, cmd->name);
        resp_add_map(e->c->out, e->c->proto, 0);
    }
}

void kv_command_reply(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    if (argc == 1) {
        resp_add_array(c->out, ncommands);
        each_command(each_reply, &(each_ctx){c, 0});
        return;
    }
    if (kv_arg_is(&argv[1], "COUNT") && argc == 2) {
        resp_add_int(c->out, (long long)ncommands);
    } else if (kv_arg_is(&argv[1], "LIST") && argc == 2) {
        resp_add_array(c->out, ncommands);
        each_command(each_reply, &(each_ctx){c, 1});
    } else if (kv_arg_is(&argv[1], "INFO")) {
        if (argc == 2) {
            resp_add_array(c->out, ncommands);
            each_command(each_reply, &(each_ctx){c, 0});
            return;
        }
        resp_add_array(c->out, argc - 2);
        for (size_t i = 2; i < argc; i++) {
            const kv_command *cmd = kv_command_lookup(argv[i].ptr, argv[i].len);
            if (cmd)
                command_info(c->out, c->proto, cmd);
            else
                resp_add_null_array(c->out, c->proto);
        }
    } else if (kv_arg_is(&argv[1], "DOCS")) {
        /* Names with empty docs: redis-cli only uses them for hints. */
        if (argc == 2) {
            resp_add_map(c->out, c->proto, ncommands);
            each_command(each_reply, &(each_ctx){c, 2});
            return;
        }
        size_t n = 0;
        for (size_t i = 2; i < argc; i++)
            n += kv_command_lookup(argv[i].ptr, argv[i].len) != NULL;
        resp_add_map(c->out, c->proto, n);
        for (size_t i = 2; i < argc; i++) {
            const kv_command *cmd = kv_command_lookup(argv[i].ptr, argv[i].len);
            if (cmd)
                each_reply(&(each_ctx){c, 2}, cmd);
        }
    } else if (kv_arg_is(&argv[1], "GETKEYS") && argc >= 3) {
        const kv_command *cmd = kv_command_lookup(argv[2].ptr, argv[2].len);
        if (!cmd) {
            resp_add_error(c->out, "ERR Invalid command specified");
            return;
        }
        size_t n = argc - 2;
        if ((cmd->arity > 0 && n != (size_t)cmd->arity) ||
            (cmd->arity < 0 && n < (size_t)-cmd->arity)) {
            resp_add_error(c->out, "ERR Invalid number of arguments specified for command");
            return;
        }
        size_t idx[256];
        int k = kv_command_keys(cmd, n, argv + 2, idx, 256);
        if (k <= 0) {
            resp_add_error(c->out, "ERR The command has no key arguments");
            return;
        }
        resp_add_array(c->out, (size_t)k);
        for (int i = 0; i < k; i++)
            resp_add_bulk(c->out, argv[2 + idx[i]].ptr, argv[2 + idx[i]].len);
    } else {
        resp_add_errorf(c->out,
                        "ERR unknown subcommand '%.128s'. Try COMMAND HELP.",
                        argv[1].ptr);
    }
}

/* ---- helpers for handlers ------------------------------------------------------------- */

void kv_reply_wrongtype(resp_buf *out)
{
    resp_add_error(out, "WRONGTYPE Operation against a key holding the wrong kind of value");
}

void kv_reply_not_int(resp_buf *out)
{
    resp_add_error(out, "ERR value is not an integer or out of range");
}

void kv_reply_not_float(resp_buf *out)
{
    resp_add_error(out, "ERR value is not a valid float");
}

void kv_reply_syntax(resp_buf *out)
{
    resp_add_error(out, "ERR syntax error");
}

void kv_reply_oom(resp_buf *out)
{
    resp_add_error(out, "OOM command not allowed when used memory > 'maxmemory'.");
}

void kv_reply_ok_or_one(resp_buf *out, bool one)
{
    if (one)
        resp_add_int(out, 1);
    else
        resp_add_status(out, "OK");
}

bool kv_arg_is(const resp_arg *a, const char *word)
{
    size_t n = strlen(word);
    return a->len == n && !strncasecmp(a->ptr, word, n);
}

bool kv_arg_ll(kv_cmd_ctx *c, const resp_arg *a, long long *v, const char *msg)
{
    if (resp_string2ll(a->ptr, a->len, v))
        return true;
    if (msg)
        resp_add_error(c->out, msg);
    else
        kv_reply_not_int(c->out);
    return false;
}

bool kv_string2d(const char *s, size_t n, double *out)
{
    /* NUL-terminated for strtod: on the stack when short, as most are. */
    char small[128];
    if (n == 0 || isspace((unsigned char)s[0]))
        return false;
    char *buf = n < sizeof(small) ? small : malloc(n + 1);
    if (!buf)
        return false;
    memcpy(buf, s, n);
    buf[n] = 0;
    char *end;
    errno = 0;
    double d = strtod(buf, &end);
    bool ok = (size_t)(end - buf) == n && !isnan(d) &&
              !(errno == ERANGE && (d == HUGE_VAL || d == -HUGE_VAL || d == 0));
    if (buf != small)
        free(buf);
    if (ok)
        *out = d;
    return ok;
}

bool kv_string2ld(const char *s, size_t n, long double *out)
{
    char buf[5120];
    if (n == 0 || n >= sizeof(buf) || isspace((unsigned char)s[0]))
        return false;
    memcpy(buf, s, n);
    buf[n] = 0;
    char *end;
    errno = 0;
    long double d = strtold(buf, &end);
    /* Redis refuses overflow and underflow to zero, not a tiny value. */
    if ((size_t)(end - buf) != n || isnan(d) ||
        (errno == ERANGE && (d == HUGE_VALL || d == -HUGE_VALL || fpclassify(d) == FP_ZERO)))
        return false;
    *out = d;
    return true;
}

bool kv_clamp_range(long long start, long long end, size_t len, size_t *from, size_t *to)
{
    long long n = (long long)len;
    if (start < 0)
        start += n;
    if (end < 0)
        end += n;
    if (start < 0)
        start = 0;
    if (start > end || start >= n)
        return false;
    if (end >= n)
        end = n - 1;
    *from = (size_t)start;
    *to = (size_t)end;
    return true;
}

bool kv_arg_cursor(kv_cmd_ctx *c, const resp_arg *a, uint64_t *cursor)
{
    char small[64];
    char *s = a->len < sizeof(small) ? small : malloc(a->len + 1);
    bool ok = false;
    if (s) {
        memcpy(s, a->ptr, a->len);
        s[a->len] = '\0';
        char *end;
        errno = 0;
        *cursor = strtoull(s, &end, 10);
        ok = !isspace((unsigned char)s[0]) && *end == '\0' && errno != ERANGE;
        if (s != small)
            free(s);
    }
    if (!ok)
        resp_add_error(c->out, "ERR invalid cursor");
    return ok;
}

bool kv_scan_options(kv_cmd_ctx *c, size_t argc, const resp_arg *argv, size_t first,
                     long long *count, const resp_arg **pat, const resp_arg **type)
{
    for (size_t i = first; i < argc; i += 2) {
        if (kv_arg_is(&argv[i], "COUNT") && i + 1 < argc) {
            if (!kv_arg_ll(c, &argv[i + 1], count, NULL))
                return false;
            if (*count < 1) {
                kv_reply_syntax(c->out);
                return false;
            }
        } else if (kv_arg_is(&argv[i], "MATCH") && i + 1 < argc) {
            *pat = argv[i + 1].len == 1 && argv[i + 1].ptr[0] == '*' ? NULL : &argv[i + 1];
        } else if (type && kv_arg_is(&argv[i], "TYPE") && i + 1 < argc) {
            *type = &argv[i + 1];
        } else {
            kv_reply_syntax(c->out);
            return false;
        }
    }
    return true;
}

/* A SCAN reply for a missing key: cursor 0 and no elements. */
static void reply_scan_empty(resp_buf *out)
{
    resp_add_array(out, 2);
    resp_add_bulk(out, "0", 1);
    resp_add_array(out, 0);
}

kv_entry *kv_scan_key(kv_cmd_ctx *c, size_t argc, const resp_arg *argv, unsigned type,
                      uint64_t *cursor, long long *count, const resp_arg **pat)
{
    if (!kv_arg_cursor(c, &argv[2], cursor))
        return NULL;
    bool wrong;
    kv_entry *e = kv_lookup_type(c, &argv[1], type, &wrong);
    if (wrong)
        return NULL;
    if (!e) {
        reply_scan_empty(c->out);
        return NULL;
    }
    *count = 10;
    *pat = NULL;
    return kv_scan_options(c, argc, argv, 3, count, pat, NULL) ? e : NULL;
}

bool kv_arg_double(kv_cmd_ctx *c, const resp_arg *a, double *v, const char *msg)
{
    if (kv_string2d(a->ptr, a->len, v))
        return true;
    if (msg)
        resp_add_error(c->out, msg);
    else
        kv_reply_not_float(c->out);
    return false;
}

static int lower(int ch, bool nocase)
{
    return nocase && ch >= 'A' && ch <= 'Z' ? ch + ('a' - 'A') : ch;
}

/* Redis's glob: * ? [set] [^set] [a-z] and \ escapes, with its quirks:
 * range ends and the character compare as signed chars (Redis reads them
 * from char *), ends are swapped before nocase lowers them, and an
 * unterminated class ends with the pattern. *skip is Redis's
 * skipLongerMatches: once the rest of the pattern after a star matched
 * nowhere in the rest of the string, no earlier star can help by taking
 * more (without it, "*a*a*a*...b" backtracks exponentially). */
static bool glob(const char *p, size_t pl, const char *s, size_t sl, bool nocase, bool *skip,
                 int depth)
{
    if (depth > 1000)
        return false; /* as Redis: refuse pathological patterns */
    while (pl && sl) {
        switch (*p) {
        case '*':
            while (pl > 1 && p[1] == '*')
                p++, pl--;
            if (pl == 1)
                return true;
            for (; sl; s++, sl--) {
                if (glob(p + 1, pl - 1, s, sl, nocase, skip, depth + 1))
                    return true;
                if (*skip)
                    return false;
            }
            *skip = true;
            return false;
        case '?':
            s++, sl--;
            break;
        case '[': {
            p++, pl--;
            bool neg = pl && *p == '^';
            if (neg)
                p++, pl--;
            bool match = false;
            for (;;) {
                if (pl >= 2 && *p == '\\') {
                    p++, pl--;
                    if (*p == *s)
                        match = true;
                } else if (pl && *p == ']') {
                    break;
                } else if (pl == 0) {
                    p--, pl++; /* unterminated: the class ends with the pattern */
                    break;
                } else if (pl >= 3 && p[1] == '-') {
                    int a = (signed char)p[0], b = (signed char)p[2], ch = (signed char)*s;
                    if (a > b) {
                        int t = a;
                        a = b;
                        b = t;
                    }
                    a = lower(a, nocase), b = lower(b, nocase), ch = lower(ch, nocase);
                    if (ch >= a && ch <= b)
                        match = true;
                    p += 2, pl -= 2;
                } else if (lower((unsigned char)*p, nocase) == lower((unsigned char)*s, nocase)) {
                    match = true;
                }
                p++, pl--;
            }
            if (neg)
                match = !match;
            if (!match)
                return false;
            s++, sl--;
            break;
        }
        case '\\':
            if (pl >= 2)
                p++, pl--;
            /* fall through */
        default:
            if (lower((unsigned char)*p, nocase) != lower((unsigned char)*s, nocase))
                return false;
            s++, sl--;
            break;
        }
        p++, pl--;
        if (sl == 0) {
            while (pl && *p == '*')
                p++, pl--;
            break;
        }
    }
    return pl == 0 && sl == 0;
}

bool kv_glob_match(const char *pat, size_t plen, const char *s, size_t slen, bool nocase)
{
    bool skip = false;
    return glob(pat, plen, s, slen, nocase, &skip, 0);
}
