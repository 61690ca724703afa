/* Generic key commands: existence and deletion, expiry, renaming and
 * copying, introspection (TYPE, OBJECT, MEMORY USAGE) and the commands over
 * the whole keyspace (KEYS, SCAN, RANDOMKEY, DBSIZE, FLUSHDB, FLUSHALL).
 * SORT lives in sort.c; its table entries are here with the other keyspace
 * commands.
 *
 * The whole-keyspace commands carry KV_CMD_ALL_SHARDS: the server runs them
 * holding every shard, so they walk kv_db_of_shard(i) for each shard. */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "kv.h"
#include "server.h"
#include "txn.h"

/* SORT and SORT_RO (sort.c). */
void kv_cmd_sort(kv_cmd_ctx *c, size_t argc, const resp_arg *argv);
void kv_cmd_sort_ro(kv_cmd_ctx *c, size_t argc, const resp_arg *argv);
int kv_sort_keys(size_t argc, const resp_arg *argv, size_t *idx, size_t max);
int kv_sort_ro_keys(size_t argc, const resp_arg *argv, size_t *idx, size_t max);

/* How a string's value was made, in the entry's enc bits, for OBJECT
 * ENCODING and REFCOUNT: Redis's encoding depends on the command that
 * stored the value, not on the bytes alone. */
enum {
    STR_ENC_AUTO = 0,     /* as SET stores it: "int" if an integer, else by length */
    STR_ENC_RAW = 1,      /* APPEND, SETRANGE, SETBIT: always "raw" */
    STR_ENC_NOINT = 2,    /* INCRBYFLOAT: "embstr" or "raw" by length, never "int" */
    STR_ENC_UNSHARED = 3, /* COPY of an integer: "int" with its own object */
};

/* Redis's OBJ_SHARED_INTEGERS and OBJ_ENCODING_EMBSTR_SIZE_LIMIT. */
#define SHARED_INTEGERS 10000
#define EMBSTR_MAX 44
/* Redis's OBJECT REFCOUNT of a shared object (OBJ_SHARED_REFCOUNT). */
#define SHARED_REFCOUNT INT_MAX

/* A C string's view of an argument, as Redis's strcasecmp/%s see it. */
static int cstr_len(const resp_arg *a)
{
    size_t n = strnlen(a->ptr, a->len);
    return n > INT_MAX ? INT_MAX : (int)n;
}

static bool same_key(const resp_arg *a, const resp_arg *b)
{
    return a->len == b->len && !memcmp(a->ptr, b->ptr, a->len);
}

static const char *type_name(const kv_entry *e)
{
    return e->type == KV_STRING ? "string" : kv_type_of(e->type)->name;
}

/* The maxmemory policies that track access frequency instead of time
 * (allkeys-lfu, volatile-lfu), and those that track either (the *-lru
 * ones too): their indexes in CONFIG's list of policies. */
static bool lfu_policy(void)
{
    return kv_cfg.maxmemory_policy == 2 || kv_cfg.maxmemory_policy == 5;
}

static bool lru_or_lfu_policy(void)
{
    int p = kv_cfg.maxmemory_policy;
    return p == 1 || p == 2 || p == 4 || p == 5;
}

/* ---- lookups ----------------------------------------------------------------------- */

/* The stored entry of key, expired or not, without side effects. */
static kv_entry *peek(const resp_arg *key)
{
    uint64_t h = kv_hash(key->ptr, key->len);
    kv_db *db = kv_db_of_shard(kv_shard_of(h));
    for (int t = 0; t < 2; t++) {
        if (!db->t[t])
            continue;
        for (kv_entry *e = db->t[t][(uint32_t)h & db->mask[t]]; e; e = e->next)
            if (e->hash == (uint32_t)h && e->klen == key->len &&
                !memcmp(e->data, key->ptr, key->len))
                return e;
    }
    return NULL;
}

/* kv_lookup without refreshing the access time (Redis's LOOKUP_NOTOUCH):
 * EXISTS, TYPE, TTL and OBJECT must not change what OBJECT IDLETIME says. */
static kv_entry *lookup_notouch(kv_cmd_ctx *c, const resp_arg *key)
{
    kv_entry *p = peek(key);
    uint32_t lru = p ? p->lru : 0;
    kv_entry *e = kv_lookup(c, key);
    if (e)
        e->lru = lru;
    return e;
}

/* ---- DEL, UNLINK, EXISTS, TOUCH ----------------------------------------------------- */

static void cmd_del(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    long long n = 0;
    for (size_t i = 1; i < argc; i++)
        n += kv_del(c, &argv[i]);
    resp_add_int(c->out, n);
}

static void cmd_exists(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    long long n = 0;
    for (size_t i = 1; i < argc; i++)
        n += lookup_notouch(c, &argv[i]) != NULL;
    resp_add_int(c->out, n);
}

static void cmd_touch(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    long long n = 0;
    for (size_t i = 1; i < argc; i++)
        n += kv_lookup(c, &argv[i]) != NULL;
    resp_add_int(c->out, n);
}

/* ---- expiry -------------------------------------------------------------------------- */

enum { EXP_NX = 1, EXP_XX = 2, EXP_GT = 4, EXP_LT = 8 };

/* EXPIRE, PEXPIRE, EXPIREAT, PEXPIREAT key time [NX|XX|GT|LT]: Redis checks
 * the options, then the number, then the key. */
static void expire_generic(kv_cmd_ctx *c, size_t argc, const resp_arg *argv, bool relative,
                           bool seconds, const char *name)
{
    unsigned flags = 0;
    for (size_t i = 3; i < argc; i++) {
        if (kv_arg_is(&argv[i], "NX")) {
            flags |= EXP_NX;
        } else if (kv_arg_is(&argv[i], "XX")) {
            flags |= EXP_XX;
        } else if (kv_arg_is(&argv[i], "GT")) {
            flags |= EXP_GT;
        } else if (kv_arg_is(&argv[i], "LT")) {
            flags |= EXP_LT;
        } else {
            resp_add_errorf(c->out, "ERR Unsupported option %.*s", cstr_len(&argv[i]), argv[i].ptr);
            return;
        }
    }
    if ((flags & EXP_NX) && (flags & (EXP_XX | EXP_GT | EXP_LT))) {
        resp_add_error(c->out,
                       "ERR NX and XX, GT or LT options at the same time are not compatible");
        return;
    }
    if ((flags & EXP_GT) && (flags & EXP_LT)) {
        resp_add_error(c->out, "ERR GT and LT options at the same time are not compatible");
        return;
    }
    long long when;
    if (!kv_arg_ll(c, &argv[2], &when, NULL))
        return;
    long long base = relative ? c->now_ms : 0;
    if ((seconds && (when > LLONG_MAX / 1000 || when < LLONG_MIN / 1000)) ||
        (seconds ? when * 1000 : when) > LLONG_MAX - base) {
        resp_add_errorf(c->out, "ERR invalid expire time in '%s' command", name);
        return;
    }
    when = (seconds ? when * 1000 : when) + base;

    kv_entry *e = kv_lookup(c, &argv[1]);
    if (!e) {
        resp_add_int(c->out, 0);
        return;
    }
    int64_t cur = kv_expire_of(e);
    /* No TTL counts as an infinite one for GT and LT. */
    if (((flags & EXP_NX) && cur != -1) || ((flags & EXP_XX) && cur == -1) ||
        ((flags & EXP_GT) && (cur == -1 || when <= cur)) ||
        ((flags & EXP_LT) && cur != -1 && when >= cur)) {
        resp_add_int(c->out, 0);
        return;
    }
    if (when <= c->now_ms) {
        kv_del(c, &argv[1]);
    } else if (!kv_set_expire(c, &argv[1], when)) {
        kv_reply_oom(c->out);
        return;
    }
    resp_add_int(c->out, 1);
}

static void cmd_expire(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    expire_generic(c, argc, argv, true, true, "expire");
}

static void cmd_pexpire(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    expire_generic(c, argc, argv, true, false, "pexpire");
}

static void cmd_expireat(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    expire_generic(c, argc, argv, false, true, "expireat");
}

static void cmd_pexpireat(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    expire_generic(c, argc, argv, false, false, "pexpireat");
}

/* TTL, PTTL, EXPIRETIME, PEXPIRETIME: -2 without the key, -1 without a TTL. */
static void ttl_generic(kv_cmd_ctx *c, const resp_arg *key, bool ms, bool absolute)
{
    kv_entry *e = lookup_notouch(c, key);
    if (!e) {
        resp_add_int(c->out, -2);
        return;
    }
    int64_t at = kv_expire_of(e);
    if (at == -1) {
        resp_add_int(c->out, -1);
        return;
    }
    long long t = absolute ? at : at - c->now_ms;
    if (t < 0)
        t = 0;
    resp_add_int(c->out, ms ? t : (t + 500) / 1000);
}

static void cmd_ttl(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    (void)argc;
    ttl_generic(c, &argv[1], false, false);
}

static void cmd_pttl(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    (void)argc;
    ttl_generic(c, &argv[1], true, false);
}

static void cmd_expiretime(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    (void)argc;
    ttl_generic(c, &argv[1], false, true);
}

static void cmd_pexpiretime(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    (void)argc;
    ttl_generic(c, &argv[1], true, true);
}

static void cmd_persist(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    (void)argc;
    kv_entry *e = kv_lookup(c, &argv[1]);
    if (!e || kv_expire_of(e) == -1) {
        resp_add_int(c->out, 0);
        return;
    }
    if (!kv_set_expire(c, &argv[1], KV_NO_EXPIRE)) {
        kv_reply_oom(c->out);
        return;
    }
    resp_add_int(c->out, 1);
}

static void cmd_type(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    (void)argc;
    kv_entry *e = lookup_notouch(c, &argv[1]);
    resp_add_status(c->out, e ? type_name(e) : "none");
}

/* ---- RENAME, RENAMENX, COPY ------------------------------------------------------------ */

/* Makes the keyspace forget e's object without freeing it, because another
 * key holds it now: the entry becomes a string whose value bytes are the
 * object pointer, accounted at the size the object was, so deleting the
 * entry frees the entry alone and leaves the db's byte count exact. */
static void disown_obj(kv_entry *e)
{
    uint64_t n = (uint64_t)e->vlen + sizeof(void *);
    e->vlen = n > UINT32_MAX ? UINT32_MAX : (uint32_t)n;
    e->type = KV_STRING;
}

static void signal_ready(kv_cmd_ctx *c, unsigned type, const resp_arg *key)
{
    if (type == KV_LIST || type == KV_ZSET)
        kv_key_ready(c, key);
}

/* Moves the value of src (whose live entry is e) to dst, which must not
 * exist, with its TTL, access time and encoding; then deletes src. Returns
 * false on out-of-memory, nothing changed. */
static bool move_key(kv_cmd_ctx *c, kv_entry *e, const resp_arg *src, const resp_arg *dst)
{
    int64_t at = kv_expire_of(e);
    uint32_t lru = e->lru, enc = e->enc;
    unsigned type = e->type;
    kv_entry *n;
    if (type == KV_STRING) {
        n = kv_set_str(c, dst, kv_str(e), e->vlen, at >= 0 ? at : KV_NO_EXPIRE);
        if (!n)
            return false;
    } else {
        n = kv_add_obj(c, dst, type, kv_obj(e));
        if (!n)
            return false;
        if (at >= 0) {
            kv_entry *m = kv_set_expire(c, dst, at);
            if (!m) {
                disown_obj(n);
                kv_del(c, dst);
                return false;
            }
            n = m;
        }
        disown_obj(e);
    }
    n->lru = lru;
    n->enc = enc;
    kv_del(c, src);
    signal_ready(c, type, dst);
    return true;
}

static void rename_generic(kv_cmd_ctx *c, const resp_arg *argv, bool nx)
{
    const resp_arg *src = &argv[1], *dst = &argv[2];
    kv_entry *e = kv_lookup(c, src);
    if (!e) {
        resp_add_error(c->out, "ERR no such key");
        return;
    }
    if (same_key(src, dst)) {
        if (nx)
            resp_add_int(c->out, 0);
        else
            resp_add_status(c->out, "OK");
        return;
    }
    if (kv_lookup(c, dst)) {
        if (nx) {
            resp_add_int(c->out, 0);
            return;
        }
        kv_del(c, dst);
    }
    if (!move_key(c, e, src, dst)) {
        kv_reply_oom(c->out);
        return;
    }
    kv_reply_ok_or_one(c->out, nx);
}

static void cmd_rename(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    (void)argc;
    rename_generic(c, argv, false);
}

static void cmd_renamenx(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    (void)argc;
    rename_generic(c, argv, true);
}

static bool shared_int(const char *s, size_t n, long long *v)
{
    return n <= 20 && resp_string2ll(s, n, v) && *v >= 0 && *v < SHARED_INTEGERS;
}

/* COPY source destination [DB destination-db] [REPLACE]. keel-kv has one
 * database: DB 0 is accepted, any other index is out of range. */
static void cmd_copy(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    const resp_arg *src = &argv[1], *dst = &argv[2];
    bool replace = false;
    for (size_t i = 3; i < argc; i++) {
        if (kv_arg_is(&argv[i], "REPLACE")) {
            replace = true;
        } else if (kv_arg_is(&argv[i], "DB") && i + 1 < argc) {
            long long db;
            if (!kv_arg_ll(c, &argv[i + 1], &db, NULL))
                return;
            if (db < INT_MIN || db > INT_MAX) {
                resp_add_error(c->out, "ERR value is out of range, value must between "
                                       "-2147483648 and 2147483647");
                return;
            }
            if (db != 0) {
                resp_add_error(c->out, "ERR DB index is out of range");
                return;
            }
            i++;
        } else {
            kv_reply_syntax(c->out);
            return;
        }
    }
    if (same_key(src, dst)) {
        resp_add_error(c->out, "ERR source and destination objects are the same");
        return;
    }
    kv_entry *e = kv_lookup(c, src);
    if (!e) {
        resp_add_int(c->out, 0);
        return;
    }
    kv_entry *d = kv_lookup(c, dst);
    if (d && !replace) {
        resp_add_int(c->out, 0);
        return;
    }
    int64_t at = kv_expire_of(e);
    unsigned type = e->type, enc = e->enc;
    if (type == KV_STRING) {
        /* A copied integer gets an object of its own, never the shared one. */
        long long v;
        if (enc == STR_ENC_AUTO && shared_int(kv_str(e), e->vlen, &v))
            enc = STR_ENC_UNSHARED;
        kv_entry *n = kv_set_str(c, dst, kv_str(e), e->vlen, at >= 0 ? at : KV_NO_EXPIRE);
        if (!n) {
            kv_reply_oom(c->out);
            return;
        }
        n->enc = enc;
        resp_add_int(c->out, 1);
        return;
    }
    const kv_type_ops *ops = kv_type_of(type);
    void *obj = ops->dup(kv_obj(e));
    if (!obj) {
        kv_reply_oom(c->out);
        return;
    }
    if (d)
        kv_del(c, dst);
    kv_entry *n = kv_add_obj(c, dst, type, obj);
    if (!n) {
        ops->free(obj);
        kv_reply_oom(c->out);
        return;
    }
    n->enc = enc;
    if (at >= 0 && !kv_set_expire(c, dst, at)) {
        kv_del(c, dst);
        kv_reply_oom(c->out);
        return;
    }
    signal_ready(c, type, dst);
    resp_add_int(c->out, 1);
}

/* ---- OBJECT and MEMORY --------------------------------------------------------------- */

typedef struct subcommand {
    const char *name; /* upper case, as matched */
    int arity;        /* Redis's, for "object|encoding" */
} subcommand;

/* Finds argv[1] in subs and checks its arity, replying Redis's error for
 * an unknown subcommand or a wrong count. */
static const subcommand *find_subcommand(kv_cmd_ctx *c, const char *container,
                                         const subcommand *subs, size_t argc, const resp_arg *argv)
{
    for (const subcommand *s = subs; s->name; s++) {
        if (!kv_arg_is(&argv[1], s->name))
            continue;
        if ((s->arity > 0 && argc != (size_t)s->arity) ||
            (s->arity < 0 && argc < (size_t)-s->arity)) {
            char low[32];
            size_t i = 0;
            for (; s->name[i] && i < sizeof(low) - 1; i++)
                low[i] = (char)tolower((unsigned char)s->name[i]);
            low[i] = 0;
            char clow[16];
            for (i = 0; container[i] && i < sizeof(clow) - 1; i++)
                clow[i] = (char)tolower((unsigned char)container[i]);
            clow[i] = 0;
            resp_add_errorf(c->out, "ERR wrong number of arguments for '%s|%s' command", clow, low);
            return NULL;
        }
        return s;
    }
    int n = cstr_len(&argv[1]);
    resp_add_errorf(c->out, "ERR unknown subcommand '%.*s'. Try %s HELP.", n > 128 ? 128 : n,
                    argv[1].ptr, container);
    return NULL;
}

/* Redis's addReplyHelp(): a title, the lines, then HELP's own two. */
static void reply_help(kv_cmd_ctx *c, const char *container, const char *const *lines)
{
    size_t n = 0;
    while (lines[n])
        n++;
    resp_add_array(c->out, n + 3);
    char title[128];
    snprintf(title, sizeof(title),
             "%s <subcommand> [<arg> [value] [opt] ...]. Subcommands are:", container);
    resp_add_status(c->out, title);
    for (size_t i = 0; i < n; i++)
        resp_add_status(c->out, lines[i]);
    resp_add_status(c->out, "HELP");
    resp_add_status(c->out, "    Prints this help.");
}

/* Redis's OBJECT ENCODING of a string: what the command that stored it
 * produced (see STR_ENC_*), from the bytes where SET's rules apply. */
static const char *str_encoding(kv_entry *e)
{
    long long v;
    switch (e->enc) {
    case STR_ENC_RAW: return "raw";
    case STR_ENC_UNSHARED: return "int";
    case STR_ENC_NOINT: break;
    default:
        if (e->vlen <= 20 && resp_string2ll(kv_str(e), e->vlen, &v))
            return "int";
        break;
    }
    return e->vlen <= EMBSTR_MAX ? "embstr" : "raw";
}

static long long refcount(kv_entry *e)
{
    long long v;
    /* Small integers stored as SET stores them share one object, unless an
     * LRU or LFU policy with a memory limit needs an access time per key. */
    bool sharing = !kv_cfg.maxmemory || !lru_or_lfu_policy();
    if (e->type == KV_STRING && e->enc == STR_ENC_AUTO && sharing &&
        shared_int(kv_str(e), e->vlen, &v))
        return SHARED_REFCOUNT;
    return 1;
}

/* Seconds since the last access, as Redis's estimateObjectIdleTime() on
 * its 24-bit clock of seconds. */
static long long idle_seconds(const kv_entry *e)
{
    uint32_t now = kv_lru_clock(), lru = e->lru;
    return now >= lru ? now - lru : now + (0xffffffu - lru);
}

static const subcommand object_subs[] = {
    {"ENCODING", 3}, {"FREQ", 3}, {"IDLETIME", 3}, {"REFCOUNT", 3}, {"HELP", 2}, {NULL, 0},
};

static int object_keys(size_t argc, const resp_arg *argv, size_t *idx, size_t max)
{
    if (argc != 3 || !max || kv_arg_is(&argv[1], "HELP"))
        return 0;
    for (const subcommand *s = object_subs; s->name; s++) {
        if (kv_arg_is(&argv[1], s->name)) {
            idx[0] = 2;
            return 1;
        }
    }
    return 0;
}

static void cmd_object(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    static const char *const help[] = {
        "ENCODING <key>",
        "    Return the kind of internal representation used in order to store the value",
        "    associated with a <key>.",
        "FREQ <key>",
        "    Return the access frequency index of the <key>. The returned integer is",
        "    proportional to the logarithm of the recent access frequency of the key.",
        "IDLETIME <key>",
        "    Return the idle time of the <key>, that is the approximated number of",
        "    seconds elapsed since the last access to the key.",
        "REFCOUNT <key>",
        "    Return the number of references of the value associated with the specified",
        "    <key>.",
        NULL,
    };
    const subcommand *s = find_subcommand(c, "OBJECT", object_subs, argc, argv);
    if (!s)
        return;
    if (!strcmp(s->name, "HELP")) {
        reply_help(c, "OBJECT", help);
        return;
    }
    kv_entry *e = lookup_notouch(c, &argv[2]);
    if (!e) {
        resp_add_null(c->out, c->proto);
        return;
    }
    if (!strcmp(s->name, "ENCODING")) {
        const char *enc =
            e->type == KV_STRING ? str_encoding(e) : kv_type_of(e->type)->encoding(kv_obj(e));
        resp_add_bulk_cstr(c->out, enc);
    } else if (!strcmp(s->name, "REFCOUNT")) {
        resp_add_int(c->out, refcount(e));
    } else if (!strcmp(s->name, "IDLETIME")) {
        if (lfu_policy()) {
            resp_add_error(c->out, "ERR An LFU maxmemory policy is selected, idle time not "
                                   "tracked. Please note that when switching between policies at "
                                   "runtime LRU and LFU data will take some time to adjust.");
            return;
        }
        resp_add_int(c->out, idle_seconds(e));
    } else {
        if (!lfu_policy()) {
            resp_add_error(c->out, "ERR An LFU maxmemory policy is not selected, access "
                                   "frequency not tracked. Please note that when switching "
                                   "between policies at runtime LRU and LFU data will take some "
                                   "time to adjust.");
            return;
        }
        resp_add_int(c->out, kv_lfu_freq(e));
    }
}

static const subcommand memory_subs[] = {
    {"USAGE", -3}, {"DOCTOR", 2}, {"MALLOC-STATS", 2}, {"PURGE", 2},
    {"STATS", 2},  {"HELP", 2},   {NULL, 0},
};

static int memory_keys(size_t argc, const resp_arg *argv, size_t *idx, size_t max)
{
    if (argc < 3 || !max || !kv_arg_is(&argv[1], "USAGE"))
        return 0;
    idx[0] = 2;
    return 1;
}

/* MEMORY USAGE key [SAMPLES count]: keel-kv's objects know their bytes, so
 * there is nothing to sample; the count is checked as Redis checks it. */
static void memory_usage(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    for (size_t i = 3; i < argc; i++) {
        if (kv_arg_is(&argv[i], "SAMPLES") && i + 1 < argc) {
            long long samples;
            if (!kv_arg_ll(c, &argv[i + 1], &samples, NULL))
                return;
            if (samples < 0) {
                kv_reply_syntax(c->out);
                return;
            }
            i++;
        } else {
            kv_reply_syntax(c->out);
            return;
        }
    }
    kv_entry *e = lookup_notouch(c, &argv[2]);
    if (!e)
        resp_add_null(c->out, c->proto);
    else
        resp_add_int(c->out, (long long)kv_entry_mem(e));
}

static void cmd_memory(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    static const char *const help[] = {
        "DOCTOR",
        "    Return memory problems reports.",
        "MALLOC-STATS",
        "    Return internal statistics report from the memory allocator.",
        "PURGE",
        "    Attempt to purge dirty pages for reclamation by the allocator.",
        "STATS",
        "    Return information about the memory usage of the server.",
        "USAGE <key> [SAMPLES <count>]",
        "    Return memory in bytes used by <key> and its value. Nested values are",
        "    sampled up to <count> times (default: 5, 0 means sample all).",
        NULL,
    };
    const subcommand *s = find_subcommand(c, "MEMORY", memory_subs, argc, argv);
    if (!s)
        return;
    if (!strcmp(s->name, "USAGE"))
        memory_usage(c, argc, argv);
    else if (!strcmp(s->name, "HELP"))
        reply_help(c, "MEMORY", help);
    else if (!strcmp(s->name, "PURGE"))
        resp_add_status(c->out, "OK");
    else if (!strcmp(s->name, "MALLOC-STATS"))
        resp_add_bulk_cstr(c->out, "Stats not supported for the current allocator");
    else
        resp_add_errorf(c->out, "ERR keel-kv does not implement MEMORY %s", s->name);
}

/* ---- the whole keyspace --------------------------------------------------------------- */

static void cmd_dbsize(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    (void)argc;
    (void)argv;
    size_t n = 0;
    for (unsigned i = 0; i < keel_shard_count(); i++)
        n += kv_db_size(kv_db_of_shard(i));
    resp_add_int(c->out, (long long)n);
}

/* FLUSHDB and FLUSHALL [ASYNC|SYNC]: keel-kv has one database, so both
 * empty it, at once either way. */
static void cmd_flush(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    if (argc > 2 || (argc == 2 && !kv_arg_is(&argv[1], "SYNC") && !kv_arg_is(&argv[1], "ASYNC"))) {
        kv_reply_syntax(c->out);
        return;
    }
    for (unsigned i = 0; i < keel_shard_count(); i++) {
        kv_db *db = kv_db_of_shard(i);
        kv_watch_touch_all(db);
        kv_db_flush(db);
    }
    c->dirty = true;
    resp_add_status(c->out, "OK");
}

/* A uniformly random live key: a shard drawn in proportion to its size,
 * then a key of it; a shard whose keys all turn out expired drops out. */
static void cmd_randomkey(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    (void)argc;
    (void)argv;
    unsigned n = keel_shard_count();
    bool dry[n];
    memset(dry, 0, sizeof(dry));
    for (unsigned tries = 0; tries < n; tries++) {
        uint64_t total = 0;
        for (unsigned i = 0; i < n; i++)
            total += dry[i] ? 0 : kv_db_size(kv_db_of_shard(i));
        if (!total)
            break;
        uint64_t r = (((uint64_t)random() << 31) ^ (uint64_t)random()) % total;
        unsigned i = 0;
        for (;; i++) {
            uint64_t sz = dry[i] ? 0 : kv_db_size(kv_db_of_shard(i));
            if (r < sz)
                break;
            r -= sz;
        }
        kv_entry *e = kv_db_random(kv_db_of_shard(i), c->now_ms);
        if (e) {
            resp_add_bulk(c->out, kv_key(e), e->klen);
            return;
        }
        dry[i] = true;
    }
    resp_add_null(c->out, c->proto);
}

typedef struct match_ctx {
    resp_buf *out;
    const resp_arg *pattern; /* NULL: every key */
    const resp_arg *type;    /* SCAN's TYPE, or NULL */
    size_t visited;          /* live keys passed to the callback */
    size_t matched;
} match_ctx;

static void match_one(void *arg, kv_entry *e)
{
    match_ctx *m = arg;
    m->visited++;
    if (m->pattern && !kv_glob_match(m->pattern->ptr, m->pattern->len, kv_key(e), e->klen, false))
        return;
    if (m->type) {
        /* Redis compares with strcasecmp(): the argument up to a NUL. */
        const char *t = type_name(e);
        size_t n = (size_t)cstr_len(m->type);
        if (n != strlen(t) || strncasecmp(m->type->ptr, t, n))
            return;
    }
    resp_add_bulk(m->out, kv_key(e), e->klen);
    m->matched++;
}

static void cmd_keys(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    (void)argc;
    bool all = argv[1].len == 1 && argv[1].ptr[0] == '*';
    match_ctx m = {.out = c->out, .pattern = all ? NULL : &argv[1]};
    size_t at = resp_add_deferred(c->out);
    for (unsigned i = 0; i < keel_shard_count(); i++) {
        uint64_t cursor = 0;
        do
            kv_db_scan(kv_db_of_shard(i), &cursor, SIZE_MAX, c->now_ms, match_one, &m);
        while (cursor);
    }
    resp_set_deferred_array(c->out, at, m.matched);
}

/* Bits of a SCAN cursor that name the shard. */
static unsigned shard_bits(unsigned shards)
{
    unsigned b = 0;
    while ((1u << b) < shards)
        b++;
    return b;
}

/* SCAN cursor [MATCH pattern] [COUNT count] [TYPE type]. The cursor is
 * (the shard's own cursor << shard bits) | shard: shards are walked one
 * after the other, each with its reverse-binary cursor, so the guarantees
 * of Redis's SCAN hold shard by shard. */
static void cmd_scan(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    uint64_t cursor;
    if (!kv_arg_cursor(c, &argv[1], &cursor))
        return;
    long long count = 10;
    const resp_arg *pattern = NULL, *type = NULL;
    if (!kv_scan_options(c, argc, argv, 2, &count, &pattern, &type))
        return;
    unsigned n = keel_shard_count(), bits = shard_bits(n);
    uint64_t shard = cursor & ((1ull << bits) - 1), sub = cursor >> bits;
    resp_buf keys;
    resp_buf_init(&keys);
    match_ctx m = {.out = &keys, .pattern = pattern, .type = type};
    while (shard < n && m.visited < (size_t)count) {
        kv_db_scan(kv_db_of_shard((unsigned)shard), &sub, (size_t)count - m.visited, c->now_ms,
                   match_one, &m);
        if (sub)
            break;
        shard++;
    }
    uint64_t next = shard >= n ? 0 : (sub << bits) | shard;
    if (keys.err) {
        resp_buf_free(&keys);
        kv_reply_oom(c->out);
        return;
    }
    char num[24];
    resp_add_array(c->out, 2);
    resp_add_bulk(c->out, num,
                  (size_t)snprintf(num, sizeof(num), "%llu", (unsigned long long)next));
    resp_add_array(c->out, m.matched);
    resp_add_raw(c->out, keys.data, keys.len);
    resp_buf_free(&keys);
}

#define W KV_CMD_WRITE
#define R KV_CMD_READONLY
#define F KV_CMD_FAST
#define ALL KV_CMD_ALL_SHARDS
const kv_command kv_key_commands[] = {
    {"del", -2, W, 1, -1, 1, cmd_del, NULL, "@keyspace @write @slow"},
    {"unlink", -2, W | F, 1, -1, 1, cmd_del, NULL, "@keyspace @write @fast"},
    {"exists", -2, R | F, 1, -1, 1, cmd_exists, NULL, "@keyspace @read @fast"},
    {"touch", -2, R | F, 1, -1, 1, cmd_touch, NULL, "@keyspace @read @fast"},
    {"expire", -3, W | F, 1, 1, 1, cmd_expire, NULL, "@keyspace @write @fast"},
    {"pexpire", -3, W | F, 1, 1, 1, cmd_pexpire, NULL, "@keyspace @write @fast"},
    {"expireat", -3, W | F, 1, 1, 1, cmd_expireat, NULL, "@keyspace @write @fast"},
    {"pexpireat", -3, W | F, 1, 1, 1, cmd_pexpireat, NULL, "@keyspace @write @fast"},
    {"ttl", 2, R | F, 1, 1, 1, cmd_ttl, NULL, "@keyspace @read @fast"},
    {"pttl", 2, R | F, 1, 1, 1, cmd_pttl, NULL, "@keyspace @read @fast"},
    {"expiretime", 2, R | F, 1, 1, 1, cmd_expiretime, NULL, "@keyspace @read @fast"},
    {"pexpiretime", 2, R | F, 1, 1, 1, cmd_pexpiretime, NULL, "@keyspace @read @fast"},
    {"persist", 2, W | F, 1, 1, 1, cmd_persist, NULL, "@keyspace @write @fast"},
    {"type", 2, R | F, 1, 1, 1, cmd_type, NULL, "@keyspace @read @fast"},
    {"rename", 3, W, 1, 2, 1, cmd_rename, NULL, "@keyspace @write @slow"},
    {"renamenx", 3, W | F, 1, 2, 1, cmd_renamenx, NULL, "@keyspace @write @fast"},
    {"copy", -3, W | KV_CMD_DENYOOM, 1, 2, 1, cmd_copy, NULL, "@keyspace @write @slow"},
    {"object", -2, 0, 0, 0, 0, cmd_object, object_keys, "@slow"},
    {"memory", -2, 0, 0, 0, 0, cmd_memory, memory_keys, "@slow"},
    {"randomkey", 1, R | ALL, 0, 0, 0, cmd_randomkey, NULL, "@keyspace @read @slow"},
    {"keys", 2, R | ALL, 0, 0, 0, cmd_keys, NULL, "@keyspace @read @slow @dangerous"},
    {"scan", -2, R | ALL, 0, 0, 0, cmd_scan, NULL, "@keyspace @read @slow"},
    {"dbsize", 1, R | F | ALL, 0, 0, 0, cmd_dbsize, NULL, "@keyspace @read @fast"},
    {"flushdb", -1, W | ALL, 0, 0, 0, cmd_flush, NULL, "@keyspace @write @slow @dangerous"},
    {"flushall", -1, W | ALL, 0, 0, 0, cmd_flush, NULL, "@keyspace @write @slow @dangerous"},
    {"sort", -2, W | KV_CMD_DENYOOM, 1, 1, 1, kv_cmd_sort, kv_sort_keys,
     "@write @set @sortedset @list @slow @dangerous"},
    {"sort_ro", -2, R, 1, 1, 1, kv_cmd_sort_ro, kv_sort_ro_keys,
     "@read @set @sortedset @list @slow @dangerous"},
    {NULL},
};
