/* Server commands: PING ECHO TIME LASTSAVE INFO CONFIG CLIENT DEBUG
 * SHUTDOWN, configuration, statistics and the per-shard cron. */
#include <ctype.h>
#include <errno.h>
#include <strings.h>
#include <limits.h>
#include <malloc.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <time.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "server.h"
#include "t_block.h"
#include "t_hash.h"
#include "t_set.h"
#include "zset.h"
#include "txn.h"
#include "persist.h"

kv_global_stats kv_stats;

int kv_stats_init(unsigned nshards)
{
    /* Aligned as kv_shard_stats asks, which calloc does not promise. */
    size_t bytes = nshards * sizeof(*kv_stats.shards);
    kv_stats.shards = aligned_alloc(_Alignof(kv_shard_stats), bytes);
    kv_stats.start_ms = kv_now_ms();
    if (!kv_stats.shards)
        return -1;
    memset(kv_stats.shards, 0, bytes);
    kv_stats.nshards = nshards;
    for (unsigned i = 0; i < nshards; i++)
        kv_stats.shards[i].per_cmd = calloc(KV_MAX_COMMANDS, sizeof(kv_cmd_stat));
    return 0;
}

void kv_stats_free(void)
{
    for (unsigned i = 0; kv_stats.shards && i < kv_stats.nshards; i++)
        free(kv_stats.shards[i].per_cmd);
    free(kv_stats.shards);
    kv_stats.shards = NULL;
}

void kv_log(const char *fmt, ...)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    localtime_r(&ts.tv_sec, &tm);
    char when[32];
    strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", &tm);
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s.%03ld keel-kv[%u]: %s\n", when, ts.tv_nsec / 1000000, keel_shard_id(), msg);
}

/* ---- configuration ------------------------------------------------------------------ */

enum { P_NUM, P_BYTES, P_STR, P_ENUM, P_BOOL };

typedef struct param {
    const char *name;
    const char *alias;
    int kind;
    const char *value; /* current text, as CONFIG GET shows it */
    const char *const *choices;
    bool immutable;
} param;

static const char *const policies[] = {"noeviction",     "allkeys-lru",  "allkeys-lfu",
                                       "allkeys-random", "volatile-lru", "volatile-lfu",
                                       "volatile-random", "volatile-ttl", NULL};
static const char *const fsyncs[] = {"always", "everysec", "no", NULL};
static const char *const yesno[] = {"yes", "no", NULL};

/* Redis's parameters that keel-kv knows: its own (port, bind, requirepass,
 * maxmemory...) and the tuning ones clients and test suites set, accepted
 * and reported back (encoding thresholds are honoured by the type
 * modules where they have the equivalent). Values are kept as text. */
static param params[] = {
    {"port", NULL, P_NUM, "6379", NULL, true},
    {"bind", NULL, P_STR, "127.0.0.1", NULL, true},
    {"requirepass", NULL, P_STR, "", NULL, false},
    {"maxmemory", NULL, P_BYTES, "0", NULL, false},
    {"maxmemory-policy", NULL, P_ENUM, "noeviction", policies, false},
    {"maxmemory-samples", NULL, P_NUM, "5", NULL, false},
    {"lfu-log-factor", NULL, P_NUM, "10", NULL, false},
    {"lfu-decay-time", NULL, P_NUM, "1", NULL, false},
    {"maxclients", NULL, P_NUM, "10000", NULL, false},
    {"appendonly", NULL, P_BOOL, "no", yesno, false},
    {"appendfsync", NULL, P_ENUM, "everysec", fsyncs, false},
    {"appendfilename", NULL, P_STR, "appendonly.aof", NULL, true},
    {"dir", NULL, P_STR, "", NULL, false},
    {"dbfilename", NULL, P_STR, "dump.rdb", NULL, false},
    {"save", NULL, P_STR, "", NULL, false},
    {"databases", NULL, P_NUM, "1", NULL, true},
    {"timeout", NULL, P_NUM, "0", NULL, false},
    {"tcp-keepalive", NULL, P_NUM, "300", NULL, false},
    {"hz", NULL, P_NUM, "10", NULL, false},
    {"loglevel", NULL, P_STR, "notice", NULL, false},
    {"io-threads", NULL, P_NUM, "1", NULL, true},
    {"proto-max-bulk-len", NULL, P_BYTES, "536870912", NULL, false},
    {"client-query-buffer-limit", NULL, P_BYTES, "1073741824", NULL, false},
    {"client-output-buffer-limit", NULL, P_STR,
     "normal 0 0 0 slave 268435456 67108864 60 pubsub 33554432 8388608 60", NULL, false},
    {"list-max-listpack-size", "list-max-ziplist-size", P_NUM, "-2", NULL, false},
    {"list-compress-depth", NULL, P_NUM, "0", NULL, false},
    {"hash-max-listpack-entries", "hash-max-ziplist-entries", P_NUM, "512", NULL, false},
    {"hash-max-listpack-value", "hash-max-ziplist-value", P_NUM, "64", NULL, false},
    {"set-max-intset-entries", NULL, P_NUM, "512", NULL, false},
    {"zset-max-listpack-entries", "zset-max-ziplist-entries", P_NUM, "128", NULL, false},
    {"zset-max-listpack-value", "zset-max-ziplist-value", P_NUM, "64", NULL, false},
    {"latency-tracking", NULL, P_BOOL, "yes", yesno, false},
    {"latency-tracking-info-percentiles", NULL, P_STR, "50 99 99.9", NULL, false},
    {"lazyfree-lazy-eviction", NULL, P_BOOL, "no", yesno, false},
    {"lazyfree-lazy-expire", NULL, P_BOOL, "no", yesno, false},
    {"lazyfree-lazy-server-del", NULL, P_BOOL, "no", yesno, false},
    {"lazyfree-lazy-user-del", NULL, P_BOOL, "no", yesno, false},
    {"lazyfree-lazy-user-flush", NULL, P_BOOL, "no", yesno, false},
    {"notify-keyspace-events", NULL, P_STR, "", NULL, false},
    {"slowlog-log-slower-than", NULL, P_NUM, "10000", NULL, false},
    {"slowlog-max-len", NULL, P_NUM, "128", NULL, false},
    {"activerehashing", NULL, P_BOOL, "yes", yesno, false},
    {"active-expire-effort", NULL, P_NUM, "1", NULL, false},
    {"protected-mode", NULL, P_BOOL, "no", yesno, false},
    {"daemonize", NULL, P_BOOL, "no", yesno, true},
    {"appenddirname", NULL, P_STR, "appendonlydir", NULL, true},
    {"aof-load-truncated", NULL, P_BOOL, "yes", yesno, false},
    {"aof-fix-corrupt-tail", NULL, P_BOOL, "no", yesno, false},
    {"stop-writes-on-bgsave-error", NULL, P_BOOL, "yes", yesno, false},
    {"auto-aof-rewrite-percentage", NULL, P_NUM, "100", NULL, false},
    {"auto-aof-rewrite-min-size", NULL, P_BYTES, "64mb", NULL, false},
};

#define NPARAMS (sizeof(params) / sizeof(params[0]))

/* Values set at run time are strdup'd; the originals are literals. */
static bool owned[NPARAMS];

static param *find_param(const char *name, size_t len)
{
    for (size_t i = 0; i < NPARAMS; i++) {
        const char *a = params[i].alias;
        if ((strlen(params[i].name) == len && !strncasecmp(params[i].name, name, len)) ||
            (a && strlen(a) == len && !strncasecmp(a, name, len)))
            return &params[i];
    }
    return NULL;
}

/* "100mb" -> bytes, as Redis's memtoull(); n bytes of s. */
static bool parse_bytes(const char *s, size_t n, unsigned long long *out)
{
    char buf[64];
    if (n == 0 || n >= sizeof(buf) || s[0] == '-')
        return false;
    memcpy(buf, s, n);
    buf[n] = 0;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(buf, &end, 10);
    if (end == buf || errno)
        return false;
    static const struct {
        const char *suffix;
        unsigned long long mul;
    } units[] = {{"", 1},          {"k", 1000},       {"kb", 1024},
                 {"m", 1000000},   {"mb", 1 << 20},   {"g", 1000000000ull},
                 {"gb", 1ull << 30}};
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (!strcasecmp(end, units[i].suffix)) {
            if (v > ULLONG_MAX / units[i].mul)
                return false;
            *out = v * units[i].mul;
            return true;
        }
    }
    return false;
}

static bool parse_num(const char *s, long long *out)
{
    return resp_string2ll(s, strlen(s), out);
}

/* The encoding thresholds the type modules read (relaxed stores: shards
 * read them without locks and any recent value is right). */
static const struct {
    const char *name;
    size_t *var;
} thresholds[] = {
    {"hash-max-listpack-entries", &kv_hash_max_listpack_entries},
    {"hash-max-listpack-value", &kv_hash_max_listpack_value},
    {"set-max-intset-entries", &kv_set_max_intset_entries},
    {"zset-max-listpack-entries", &kv_zset_max_listpack_entries},
    {"zset-max-listpack-value", &kv_zset_max_listpack_value},
};

static void apply(const param *p)
{
    const char *v = p->value;
    for (size_t i = 0; i < sizeof(thresholds) / sizeof(thresholds[0]); i++) {
        long long n;
        if (!strcmp(p->name, thresholds[i].name) && parse_num(v, &n) && n >= 0) {
            if (thresholds[i].var == &kv_set_max_intset_entries && n > (1 << 30))
                n = 1 << 30; /* Redis's cap */
            __atomic_store_n(thresholds[i].var, (size_t)n, __ATOMIC_RELAXED);
        }
    }
    if (!strcmp(p->name, "appendonly")) {
        bool on = !strcasecmp(v, "yes");
        if (on != kv_pcfg.appendonly) {
            kv_pcfg.appendonly = on;
            kv_persist_set_appendonly(on);
        }
    } else if (!strcmp(p->name, "appendfsync")) {
        for (int i = 0; fsyncs[i]; i++)
            if (!strcasecmp(fsyncs[i], v))
                kv_pcfg.appendfsync = i;
    } else if (!strcmp(p->name, "appendfilename")) {
        kv_pcfg.appendfilename = v;
    } else if (!strcmp(p->name, "appenddirname")) {
        kv_pcfg.appenddirname = v;
    } else if (!strcmp(p->name, "dir")) {
        kv_pcfg.dir = v;
    } else if (!strcmp(p->name, "dbfilename")) {
        kv_pcfg.dbfilename = v;
    } else if (!strcmp(p->name, "save")) {
        kv_persist_parse_save(v, &kv_pcfg);
    } else if (!strcmp(p->name, "aof-load-truncated")) {
        kv_pcfg.aof_load_truncated = !strcasecmp(v, "yes");
    } else if (!strcmp(p->name, "aof-fix-corrupt-tail")) {
        kv_pcfg.aof_fix_corrupt_tail = !strcasecmp(v, "yes");
    } else if (!strcmp(p->name, "stop-writes-on-bgsave-error")) {
        kv_pcfg.stop_writes_on_bgsave_error = !strcasecmp(v, "yes");
    } else if (!strcmp(p->name, "auto-aof-rewrite-percentage")) {
        long long n;
        if (parse_num(v, &n) && n >= 0)
            kv_pcfg.rewrite_percentage = n;
    } else if (!strcmp(p->name, "auto-aof-rewrite-min-size")) {
        unsigned long long b;
        if (parse_bytes(v, strlen(v), &b))
            kv_pcfg.rewrite_min_size = (long long)b;
    } else if (!strcmp(p->name, "requirepass")) {
        kv_cfg.requirepass = v;
    } else if (!strcmp(p->name, "maxmemory")) {
        parse_bytes(v, strlen(v), &kv_cfg.maxmemory);
    } else if (!strcmp(p->name, "maxmemory-policy")) {
        for (int i = 0; policies[i]; i++)
            if (!strcasecmp(policies[i], v))
                kv_cfg.maxmemory_policy = i;
        __atomic_store_n(&kv_lfu_mode, strstr(v, "lfu") != NULL, __ATOMIC_RELAXED);
    } else if (!strcmp(p->name, "lfu-log-factor") || !strcmp(p->name, "lfu-decay-time")) {
        long long n;
        if (parse_num(v, &n) && n >= 0)
            __atomic_store_n(p->name[4] == 'l' ? &kv_lfu_log_factor : &kv_lfu_decay_time, n,
                             __ATOMIC_RELAXED);
    } else if (!strcmp(p->name, "maxclients")) {
        kv_cfg.maxclients = strtoull(v, NULL, 10);
    } else if (!strcmp(p->name, "proto-max-bulk-len")) {
        parse_bytes(v, strlen(v), &kv_cfg.proto_max_bulk_len);
    } else if (!strcmp(p->name, "client-query-buffer-limit")) {
        parse_bytes(v, strlen(v), &kv_cfg.query_limit);
    } else if (!strcmp(p->name, "client-output-buffer-limit")) {
        /* "normal HARD SOFT SECS ...": keel-kv honours the normal hard limit. */
        const char *n = strcasestr(v, "normal ");
        if (n)
            parse_bytes(n + 7, strcspn(n + 7, " "), &kv_cfg.output_limit);
    }
}

/* Checks value for p; returns NULL or the reason it is refused. */
static const char *check(const param *p, const char *v)
{
    long long n;
    unsigned long long b;
    switch (p->kind) {
    case P_NUM:
        return parse_num(v, &n) ? NULL : "argument couldn't be parsed into an integer";
    case P_BYTES:
        return parse_bytes(v, strlen(v), &b) ? NULL : "argument must be a memory value";
    case P_BOOL:
    case P_ENUM:
        for (int i = 0; p->choices[i]; i++)
            if (!strcasecmp(p->choices[i], v))
                return NULL;
        return p->kind == P_BOOL ? "argument must be 'yes' or 'no'" : "argument(s) must be one of the following: ...";
    default:
        if (!strcmp(p->name, "save")) {
            kv_persist_config tmp;
            if (!kv_persist_parse_save(v, &tmp))
                return "Invalid save parameters";
        }
        if (!strcmp(p->name, "client-output-buffer-limit")) {
            /* "CLASS HARD SOFT SECONDS" one or more times */
            const char *q = v;
            int n = 0;
            while (*q) {
                size_t len = strcspn(q, " ");
                if (n % 4 == 0) {
                    if (!(len == 6 && !strncasecmp(q, "normal", 6)) &&
                        !(len == 7 && !strncasecmp(q, "replica", 7)) &&
                        !(len == 5 && !strncasecmp(q, "slave", 5)) &&
                        !(len == 6 && !strncasecmp(q, "pubsub", 6)))
                        return "Invalid client class specified in buffer limit configuration.";
                } else if (!parse_bytes(q, len, &b)) {
                    return "Invalid arguments";
                }
                n++;
                q += len;
                q += strspn(q, " ");
            }
            if (n == 0 || n % 4)
                return "Wrong number of arguments in buffer limit configuration.";
        }
        return NULL;
    }
}

int kv_config_set(const char *name, const char *value, const char **why)
{
    param *p = find_param(name, strlen(name));
    if (!p) {
        *why = "unknown";
        return -1;
    }
    if ((*why = check(p, value)))
        return -1;
    char *v = strdup(value);
    if (!v) {
        *why = "out of memory";
        return -1;
    }
    if (p->kind == P_ENUM || p->kind == P_BOOL)
        for (char *q = v; *q; q++)
            *q = (char)tolower((unsigned char)*q);
    size_t i = (size_t)(p - params);
    if (owned[i])
        free((char *)p->value);
    p->value = v;
    owned[i] = true;
    apply(p);
    return 0;
}

void kv_config_defaults(void)
{
    for (size_t i = 0; i < NPARAMS; i++)
        apply(&params[i]);
}

void kv_config_free(void)
{
    for (size_t i = 0; i < NPARAMS; i++) {
        if (owned[i])
            free((char *)params[i].value);
        owned[i] = false;
    }
}

static void cmd_config(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    if (kv_arg_is(&argv[1], "GET") && argc >= 3) {
        size_t at = resp_add_deferred(c->out), n = 0;
        for (size_t i = 0; i < NPARAMS; i++) {
            /* An alias is a parameter of its own to CONFIG GET, as in Redis 7.0. */
            const char *names[2] = {params[i].name, params[i].alias};
            for (int k = 0; k < 2 && names[k]; k++) {
                bool hit = false;
                for (size_t a = 2; a < argc && !hit; a++)
                    hit = kv_glob_match(argv[a].ptr, argv[a].len, names[k], strlen(names[k]),
                                        true);
                if (!hit)
                    continue;
                resp_add_bulk_cstr(c->out, names[k]);
                resp_add_bulk_cstr(c->out, params[i].value);
                n++;
            }
        }
        resp_set_deferred_map(c->out, c->proto, at, n);
    } else if (kv_arg_is(&argv[1], "SET") && argc >= 4 && argc % 2 == 0) {
        /* Check all, then apply all, as Redis 7 does for several pairs. */
        for (size_t a = 2; a < argc; a += 2) {
            param *p = find_param(argv[a].ptr, argv[a].len);
            char v[1024];
            snprintf(v, sizeof(v), "%.*s", (int)argv[a + 1].len, argv[a + 1].ptr);
            if (!p) {
                resp_add_errorf(c->out, "ERR Unknown option or number of arguments for CONFIG SET - '%.*s'",
                                (int)argv[a].len, argv[a].ptr);
                return;
            }
            if (p->immutable) {
                resp_add_errorf(c->out, "ERR CONFIG SET failed (possibly related to argument '%s') - can't set immutable config", p->name);
                return;
            }
            const char *why = check(p, v);
            if (why) {
                resp_add_errorf(c->out, "ERR CONFIG SET failed (possibly related to argument '%s') - %s", p->name, why);
                return;
            }
        }
        for (size_t a = 2; a < argc; a += 2) {
            char n[128], v[1024];
            const char *why;
            snprintf(n, sizeof(n), "%.*s", (int)argv[a].len, argv[a].ptr);
            snprintf(v, sizeof(v), "%.*s", (int)argv[a + 1].len, argv[a + 1].ptr);
            kv_config_set(n, v, &why);
        }
        resp_add_status(c->out, "OK");
    } else if (kv_arg_is(&argv[1], "RESETSTAT") && argc == 2) {
        for (unsigned i = 0; i < keel_shard_count(); i++) {
            kv_db *db = kv_db_of_shard(i);
            db->hits = db->misses = db->expired = db->evicted = 0;
            /* Counters other shards write: reset under the locks this
             * command holds (CONFIG runs over every shard). */
            kv_shard_stats *st = &kv_stats.shards[i];
            if (st->per_cmd)
                memset(st->per_cmd, 0, KV_MAX_COMMANDS * sizeof(kv_cmd_stat));
            st->usec = 0;
            memset(st->latency, 0, sizeof(st->latency));
        }
        resp_add_status(c->out, "OK");
    } else if (kv_arg_is(&argv[1], "REWRITE") && argc == 2) {
        resp_add_error(c->out, "ERR The server is running without a config file");
    } else {
        resp_add_errorf(c->out, "ERR unknown subcommand or wrong number of arguments for '%.*s'. Try CONFIG HELP.",
                        (int)argv[1].len, argv[1].ptr);
    }
}

/* ---- INFO ------------------------------------------------------------------------- */

static bool want(size_t argc, const resp_arg *argv, const char *section, bool in_default)
{
    if (argc == 1)
        return in_default;
    for (size_t i = 1; i < argc; i++)
        if (kv_arg_is(&argv[i], section) || kv_arg_is(&argv[i], "ALL") ||
            kv_arg_is(&argv[i], "EVERYTHING") || (in_default && kv_arg_is(&argv[i], "DEFAULT")))
            return true;
    return false;
}

static void add(char **buf, size_t *len, size_t *cap, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void add(char **buf, size_t *len, size_t *cap, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(*buf + *len, *cap - *len, fmt, ap);
        va_end(ap);
        if (n < 0)
            return;
        if (*len + (size_t)n < *cap) {
            *len += (size_t)n;
            return;
        }
        size_t nc = *cap * 2 + (size_t)n;
        char *b = realloc(*buf, nc);
        if (!b)
            return;
        *buf = b;
        *cap = nc;
    }
}

static void cmd_info(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    size_t cap = 4096, len = 0;
    char *b = malloc(cap);
    if (!b) {
        kv_reply_oom(c->out);
        return;
    }
    b[0] = 0;
    unsigned ns = keel_shard_count();
    size_t keys = 0, vol = 0, mem = 0;
    uint64_t hits = 0, misses = 0, expired = 0, evicted = 0, cmds = 0, in = 0;
    for (unsigned i = 0; i < ns; i++) {
        kv_db *db = kv_db_of_shard(i);
        keys += kv_db_size(db);
        vol += db->nvol;
        mem += db->mem;
        hits += db->hits;
        misses += db->misses;
        expired += db->expired;
        evicted += db->evicted;
        cmds += kv_stats.shards[i].commands;
        in += kv_stats.shards[i].net_input_bytes;
    }
    int64_t up = (c->now_ms - kv_stats.start_ms) / 1000;
    bool first = true;
#define SECTION(name)                                                                              \
    do {                                                                                           \
        add(&b, &len, &cap, "%s# %s\r\n", first ? "" : "\r\n", name);                              \
        first = false;                                                                             \
    } while (0)
    if (want(argc, argv, "server", true)) {
        struct utsname u;
        uname(&u);
        SECTION("Server");
        add(&b, &len, &cap,
            "redis_version:%s\r\nredis_mode:standalone\r\nos:%s %s %s\r\narch_bits:64\r\n"
            "multiplexing_api:%s\r\nprocess_id:%d\r\ntcp_port:%d\r\nserver_time_usec:%lld\r\n"
            "uptime_in_seconds:%lld\r\nuptime_in_days:%lld\r\nhz:10\r\nexecutable:keel-kv\r\n"
            "keel_shards:%u\r\n",
            KV_REDIS_VERSION, u.sysname, u.release, u.machine, keel_backend_name(), (int)getpid(),
            kv_cfg.port, (long long)c->now_ms * 1000, (long long)up, (long long)up / 86400, ns);
    }
    if (want(argc, argv, "clients", true)) {
        SECTION("Clients");
        add(&b, &len, &cap, "connected_clients:%llu\r\nmaxclients:%llu\r\nblocked_clients:%llu\r\n",
            (unsigned long long)atomic_load(&kv_stats.connected_clients),
            (unsigned long long)kv_cfg.maxclients, (unsigned long long)kv_block_count());
    }
    if (want(argc, argv, "memory", true)) {
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        SECTION("Memory");
        add(&b, &len, &cap,
            "used_memory:%zu\r\nused_memory_dataset:%zu\r\nused_memory_peak_rss:%ld\r\n"
            "maxmemory:%llu\r\nmaxmemory_policy:%s\r\nmem_allocator:%s\r\n",
            mem, mem, ru.ru_maxrss * 1024L, kv_cfg.maxmemory, policies[kv_cfg.maxmemory_policy],
#ifdef KEEL_HAVE_JEMALLOC
            "jemalloc"
#else
            "libc"
#endif
        );
    }
    if (want(argc, argv, "persistence", true)) {
        SECTION("Persistence");
        char lines[1024];
        kv_persist_info(lines, sizeof(lines));
        add(&b, &len, &cap, "%s", lines);
    }
    if (want(argc, argv, "stats", true)) {
        SECTION("Stats");
        add(&b, &len, &cap,
            "total_connections_received:%llu\r\ntotal_commands_processed:%llu\r\n"
            "total_net_input_bytes:%llu\r\nexpired_keys:%llu\r\nevicted_keys:%llu\r\n"
            "keyspace_hits:%llu\r\nkeyspace_misses:%llu\r\n",
            (unsigned long long)atomic_load(&kv_stats.total_connections),
            (unsigned long long)cmds, (unsigned long long)in, (unsigned long long)expired,
            (unsigned long long)evicted, (unsigned long long)hits, (unsigned long long)misses);
    }
    if (want(argc, argv, "replication", true)) {
        SECTION("Replication");
        add(&b, &len, &cap, "role:master\r\nconnected_slaves:0\r\n");
    }
    if (want(argc, argv, "cpu", true)) {
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        SECTION("CPU");
        add(&b, &len, &cap, "used_cpu_sys:%ld.%06ld\r\nused_cpu_user:%ld.%06ld\r\n",
            (long)ru.ru_stime.tv_sec, (long)ru.ru_stime.tv_usec, (long)ru.ru_utime.tv_sec,
            (long)ru.ru_utime.tv_usec);
    }
    if (want(argc, argv, "commandstats", false)) {
        SECTION("Commandstats");
        for (size_t id = 0; id < KV_MAX_COMMANDS; id++) {
            uint64_t calls = 0, usec = 0;
            for (unsigned i = 0; i < ns; i++) {
                if (kv_stats.shards[i].per_cmd) {
                    calls += kv_stats.shards[i].per_cmd[id].calls;
                    usec += kv_stats.shards[i].per_cmd[id].usec;
                }
            }
            if (calls)
                add(&b, &len, &cap,
                    "cmdstat_%s:calls=%llu,usec=%llu,usec_per_call=%.2f,rejected_calls=0,"
                    "failed_calls=0\r\n",
                    kv_command_by_id(id)->name, (unsigned long long)calls,
                    (unsigned long long)usec, (double)usec / (double)calls);
        }
    }
    if (want(argc, argv, "keyspace", true)) {
        SECTION("Keyspace");
        if (keys)
            add(&b, &len, &cap, "db0:keys=%zu,expires=%zu,avg_ttl=0\r\n", keys, vol);
    }
    if (want(argc, argv, "keel", true)) {
        SECTION("Keel");
        for (unsigned i = 0; i < ns; i++) {
            kv_db *db = kv_db_of_shard(i);
            add(&b, &len, &cap, "shard%u:cpu=%d,keys=%zu,expires=%zu,used_memory=%zu,commands=%llu\r\n",
                i, keel_shard_cpu(i), kv_db_size(db), db->nvol, db->mem,
                (unsigned long long)kv_stats.shards[i].commands);
        }
    }
#undef SECTION
    resp_add_verbatim(c->out, c->proto, b, len, "txt");
    free(b);
}

/* ---- the rest ---------------------------------------------------------------------- */

static void cmd_ping(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    if (argc > 2)
        resp_add_error(c->out, "ERR wrong number of arguments for 'ping' command");
    else if (argc == 1)
        resp_add_status(c->out, "PONG");
    else
        resp_add_bulk(c->out, argv[1].ptr, argv[1].len);
}

static void cmd_echo(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    (void)argc;
    resp_add_bulk(c->out, argv[1].ptr, argv[1].len);
}

static void cmd_time(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    (void)argc;
    (void)argv;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    resp_add_array(c->out, 2);
    resp_add_bulk_ll(c->out, (long long)ts.tv_sec);
    resp_add_bulk_ll(c->out, ts.tv_nsec / 1000);
}

static void cmd_lastsave(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    (void)argc;
    (void)argv;
    resp_add_int(c->out, kv_persist_lastsave());
}

static void cmd_debug(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    if (kv_arg_is(&argv[1], "SLEEP") && argc == 3) {
        double secs;
        if (!kv_arg_double(c, &argv[2], &secs, NULL))
            return;
        /* Blocks this shard on purpose, as Redis's blocks its thread. */
        struct timespec ts = {(time_t)secs, (long)((secs - (double)(time_t)secs) * 1e9)};
        nanosleep(&ts, NULL);
        resp_add_status(c->out, "OK");
    } else {
        resp_add_error(c->out, "ERR DEBUG subcommand not supported by keel-kv (SLEEP is)");
    }
}

static void cmd_shutdown(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    for (size_t i = 1; i < argc; i++) {
        if (!kv_arg_is(&argv[i], "NOSAVE") && !kv_arg_is(&argv[i], "SAVE") &&
            !kv_arg_is(&argv[i], "NOW") && !kv_arg_is(&argv[i], "FORCE") &&
            !kv_arg_is(&argv[i], "ABORT")) {
            kv_reply_syntax(c->out);
            return;
        }
    }
    for (size_t i = 1; i < argc; i++) {
        if (kv_arg_is(&argv[i], "NOSAVE"))
            kv_persist_shutdown_save(-1);
        else if (kv_arg_is(&argv[i], "SAVE"))
            kv_persist_shutdown_save(1);
    }
    kv_log("SHUTDOWN asked by a client: stopping");
    keel_stop();
    /* Like Redis, no reply on success: the connection closes. */
    resp_add_raw(c->out, "", 0);
}

typedef struct cron {
    keel_abort_source as;
    bool loop_ended, hook_ran; /* freed when both happened, in either order */
} cron;

static keel_future *cron_next(void *ctx, keel_result r)
{
    (void)ctx;
    return keel_make_ready(r.err ? KEEL_STOP : KEEL_CONTINUE);
}

static keel_future *cron_step(void *arg)
{
    cron *cr = arg; /* ends when cron_exit aborts its sleep, and only then */
    bool more = false;
    if (kv_gate_open())
        more = kv_db_cron(kv_db_of_shard(keel_shard_id()), kv_now_ms(), 1000);
    more |= kv_persist_cron(kv_now_ms());
    /* Rehash and active expiry in 1 ms slices, ten times a second (Redis's
     * hz 10), back to back while work is left. */
    return keel_then(keel_sleep_abortable(more ? KEEL_MS(1) : KEEL_MS(100), &cr->as), cron_next,
                     cr);
}

static keel_future *cron_exit(void *arg)
{
    cron *cr = arg;
    if (!cr->loop_ended)
        keel_abort_source_request(&cr->as); /* may end the loop inline */
    cr->hook_ran = true;
    if (cr->loop_ended)
        free(cr);
    return keel_make_ready(0);
}

static void cron_done(void *ctx, keel_result r)
{
    cron *cr = ctx;
    (void)r;
    cr->loop_ended = true;
    if (cr->hook_ran)
        free(cr);
}

static keel_future *cron_loop(void *arg)
{
    return keel_repeat(cron_step, arg);
}

void kv_cron_start(void)
{
    cron *cr = calloc(1, sizeof(*cr));
    if (!cr)
        return; /* lazy expiry still works */
    keel_abort_source_init(&cr->as);
    keel_at_exit(cron_exit, cr);
    /* Active expiry and rehashing are housekeeping: in the background
     * group (every step, as each continuation inherits it), so under load
     * they get that group's share of the shard rather than an equal turn
     * with clients' commands. */
    keel_on_done(keel_with_sched_group(keel_sched_group_background(), cron_loop, cr), cron_done,
                 cr);
}

/* ---- CLIENT ------------------------------------------------------------------------ */

bool kv_client_set_name(kv_client *c, resp_buf *out, const resp_arg *name)
{
    for (size_t i = 0; i < name->len; i++) {
        if (name->ptr[i] < '!' || name->ptr[i] > '~') {
            resp_add_error(out, "ERR Client names cannot contain spaces, newlines or special "
                                "characters.");
            return false;
        }
    }
    free(c->name);
    c->name = name->len ? strndup(name->ptr, name->len) : NULL;
    return true;
}

/* "ip:port" of a socket's peer or own address, as CLIENT LIST shows it. */
static void sock_addr(int fd, bool peer, char *out, size_t cap)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if ((peer ? getpeername(fd, (struct sockaddr *)&ss, &len)
              : getsockname(fd, (struct sockaddr *)&ss, &len)) == 0) {
        if (ss.ss_family == AF_INET) {
            struct sockaddr_in *a = (struct sockaddr_in *)&ss;
            inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
            port = ntohs(a->sin_port);
        } else if (ss.ss_family == AF_INET6) {
            struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
            inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
            port = ntohs(a->sin6_port);
        } else if (ss.ss_family == AF_UNIX) {
            snprintf(out, cap, "/unixsocket:0");
            return;
        }
    }
    snprintf(out, cap, "%s:%d", host, port);
}

static void client_line(kv_client *c, char *buf, size_t cap, int64_t now)
{
    int fd = keel_conn_fd(c->conn);
    char addr[80], laddr[80];
    sock_addr(fd, true, addr, sizeof(addr));
    sock_addr(fd, false, laddr, sizeof(laddr));
    snprintf(buf, cap,
             "id=%llu addr=%s laddr=%s fd=%d name=%s age=%lld idle=0 flags=%s db=0 sub=0 psub=0 "
             "ssub=0 multi=%d qbuf=%zu qbuf-free=%zu argv-mem=0 multi-mem=0 rbs=%zu rbp=0 obl=0 "
             "oll=0 omem=%zu tot-mem=%zu events=r cmd=NULL user=default redir=-1 resp=%d "
             "shard=%u\n",
             (unsigned long long)c->id, addr, laddr, fd, c->name ? c->name : "",
             (long long)(now - c->created_ms) / 1000, c->in_multi ? "x" : "N",
             c->in_multi ? 0 : -1, c->qlen, c->qcap - c->qlen, c->qcap,
             c->conn ? keel_conn_queued(c->conn) : 0, c->qcap + c->out.cap, c->proto,
             keel_shard_id());
}

/* CLIENT LIST / KILL ID on one shard, run there: each shard answers for
 * its own clients. */
typedef struct client_req {
    resp_buf text;
    uint64_t kill_id; /* 0: list (or kill by address) */
    char kill_addr[80]; /* CLIENT KILL ADDR ip:port, or the old form */
    long long killed;
} client_req;

static keel_future *client_here(void *arg)
{
    client_req *r = arg;
    char line[1024];
    int64_t now = kv_now_ms();
    for (kv_client *c = kv_clients_here(); c; c = c->next) {
        if (c->ended || !c->conn)
            continue;
        if (r->kill_addr[0]) {
            char addr[80];
            sock_addr(keel_conn_fd(c->conn), true, addr, sizeof(addr));
            if (!strcmp(addr, r->kill_addr)) {
                shutdown(keel_conn_fd(c->conn), SHUT_RDWR);
                r->killed++;
            }
        } else if (!r->kill_id) {
            client_line(c, line, sizeof(line), now);
            resp_add_raw(&r->text, line, strlen(line));
        } else if (c->id == r->kill_id) {
            /* Its pending read ends, and its loop closes it. */
            shutdown(keel_conn_fd(c->conn), SHUT_RDWR);
            r->killed++;
        }
    }
    return keel_make_ready(0);
}

static void client_gathered(kv_client *c, resp_buf *out, void *arg)
{
    client_req *reqs = arg;
    unsigned n = keel_shard_count();
    if (reqs[0].kill_id || reqs[0].kill_addr[0]) {
        long long k = 0;
        for (unsigned i = 0; i < n; i++)
            k += reqs[i].killed;
        if (reqs[0].kill_id == UINT64_MAX) /* the old form: CLIENT KILL ip:port */
            k ? resp_add_status(out, "OK") : resp_add_error(out, "ERR No such client");
        else
            resp_add_int(out, k); /* the filter form answers a count */
    } else {
        size_t len = 0;
        for (unsigned i = 0; i < n; i++)
            len += reqs[i].text.len;
        char *all = malloc(len + 1);
        size_t off = 0;
        for (unsigned i = 0; all && i < n; i++) {
            memcpy(all + off, reqs[i].text.data, reqs[i].text.len);
            off += reqs[i].text.len;
        }
        if (all)
            resp_add_verbatim(out, c->proto, all, len, "txt");
        else
            kv_reply_oom(out);
        free(all);
    }
    for (unsigned i = 0; i < n; i++)
        resp_buf_free(&reqs[i].text);
    free(reqs);
}

static void client_all_shards(kv_client *c, uint64_t kill_id, const resp_arg *addr)
{
    unsigned n = keel_shard_count();
    client_req *reqs = calloc(n, sizeof(*reqs));
    if (!reqs) {
        kv_reply_oom(kv_reply_target(c));
        return;
    }
    for (unsigned i = 0; i < n; i++) {
        resp_buf_init(&reqs[i].text);
        reqs[i].kill_id = kill_id;
        if (addr)
            snprintf(reqs[i].kill_addr, sizeof(reqs[i].kill_addr), "%.*s", (int)addr->len,
                     addr->ptr);
    }
    kv_gather(c, client_here, reqs, sizeof(*reqs), client_gathered);
}

void kv_client_command(kv_client *c, resp_buf *out, size_t argc, const resp_arg *argv)
{
    const resp_arg *sub = &argv[1];
    if (kv_arg_is(sub, "ID") && argc == 2) {
        resp_add_int(out, (long long)c->id);
    } else if (kv_arg_is(sub, "SETNAME") && argc == 3) {
        if (kv_client_set_name(c, out, &argv[2]))
            resp_add_status(out, "OK");
    } else if (kv_arg_is(sub, "GETNAME") && argc == 2) {
        if (c->name)
            resp_add_bulk_cstr(out, c->name);
        else
            resp_add_null(out, c->proto);
    } else if (kv_arg_is(sub, "SETINFO") && argc == 4) {
        /* Redis 7.2's (client libraries send it): accepted, not shown. */
        if (!kv_arg_is(&argv[2], "LIB-NAME") && !kv_arg_is(&argv[2], "LIB-VER"))
            resp_add_errorf(out, "ERR Unrecognized option '%.*s'", (int)argv[2].len, argv[2].ptr);
        else
            resp_add_status(out, "OK");
    } else if (kv_arg_is(sub, "NO-EVICT") && argc == 3) {
        if (kv_arg_is(&argv[2], "ON") || kv_arg_is(&argv[2], "OFF"))
            resp_add_status(out, "OK");
        else
            kv_reply_syntax(out);
    } else if (kv_arg_is(sub, "INFO") && argc == 2) {
        char line[1024];
        client_line(c, line, sizeof(line), kv_now_ms());
        resp_add_verbatim(out, c->proto, line, strlen(line), "txt");
    } else if (kv_arg_is(sub, "LIST") && (argc == 2 || (argc == 4 && kv_arg_is(&argv[2], "TYPE")))) {
        client_all_shards(c, 0, NULL);
    } else if (kv_arg_is(sub, "KILL") && argc == 4 && kv_arg_is(&argv[2], "ID")) {
        long long id;
        if (!resp_string2ll(argv[3].ptr, argv[3].len, &id) || id <= 0) {
            resp_add_error(out, "ERR client-id should be greater than 0");
            return;
        }
        client_all_shards(c, (uint64_t)id, NULL);
    } else if (kv_arg_is(sub, "KILL") && argc == 4 && kv_arg_is(&argv[2], "ADDR")) {
        client_all_shards(c, 0, &argv[3]);
    } else if (kv_arg_is(sub, "KILL") && argc == 3) {
        client_all_shards(c, UINT64_MAX, &argv[2]);
    } else {
        resp_add_errorf(out,
                        "ERR unknown subcommand or wrong number of arguments for '%.*s'. Try "
                        "CLIENT HELP.",
                        (int)sub->len, sub->ptr);
    }
}

#define ADMIN (KV_CMD_ADMIN | KV_CMD_NOSCRIPT | KV_CMD_LOADING | KV_CMD_STALE)
const kv_command kv_server_commands[] = {
    {"ping", -1, KV_CMD_FAST | KV_CMD_SENTINEL, 0, 0, 0, cmd_ping, NULL, "@fast @connection"},
    {"echo", 2, KV_CMD_FAST, 0, 0, 0, cmd_echo, NULL, "@fast @connection"},
    {"time", 1, KV_CMD_LOADING | KV_CMD_STALE | KV_CMD_FAST, 0, 0, 0, cmd_time, NULL, "@fast"},
    {"lastsave", 1, KV_CMD_LOADING | KV_CMD_STALE | KV_CMD_FAST, 0, 0, 0, cmd_lastsave, NULL,
     "@admin @fast @dangerous"},
    {"info", -1, KV_CMD_LOADING | KV_CMD_STALE | KV_CMD_SENTINEL | KV_CMD_ALL_SHARDS, 0, 0, 0,
     cmd_info, NULL, "@slow @dangerous"},
    {"config", -2, ADMIN | KV_CMD_ALL_SHARDS, 0, 0, 0, cmd_config, NULL, "@admin @slow @dangerous"},
    {"debug", -2, ADMIN, 0, 0, 0, cmd_debug, NULL, "@admin @slow @dangerous"},
    {"shutdown", -1, ADMIN | KV_CMD_NO_MULTI, 0, 0, 0, cmd_shutdown, NULL,
     "@admin @slow @dangerous"},
    {"quit", -1, KV_CMD_NO_AUTH | KV_CMD_CONN | KV_CMD_FAST, 0, 0, 0, NULL, NULL,
     "@fast @connection"},
    {"command", -1, KV_CMD_LOADING | KV_CMD_STALE | KV_CMD_CONN, 0, 0, 0, NULL, NULL,
     "@slow @connection"},
    {"hello", -1, KV_CMD_NO_AUTH | KV_CMD_NOSCRIPT | KV_CMD_LOADING | KV_CMD_STALE |
                      KV_CMD_FAST | KV_CMD_CONN,
     0, 0, 0, NULL, NULL, "@fast @connection"},
    {"auth", -2, KV_CMD_NO_AUTH | KV_CMD_NOSCRIPT | KV_CMD_LOADING | KV_CMD_STALE |
                     KV_CMD_FAST | KV_CMD_CONN,
     0, 0, 0, NULL, NULL, "@fast @connection"},
    {"select", 2, KV_CMD_LOADING | KV_CMD_STALE | KV_CMD_FAST | KV_CMD_CONN, 0, 0, 0, NULL, NULL,
     "@keyspace @fast"},
    {"reset", 1, KV_CMD_NO_AUTH | KV_CMD_NOSCRIPT | KV_CMD_LOADING | KV_CMD_STALE |
                     KV_CMD_FAST | KV_CMD_CONN,
     0, 0, 0, NULL, NULL, "@fast @connection"},
    {"client", -2, KV_CMD_NOSCRIPT | KV_CMD_LOADING | KV_CMD_STALE | KV_CMD_CONN, 0, 0, 0, NULL,
     NULL, "@slow @connection"},
    {"multi", 1, KV_CMD_NOSCRIPT | KV_CMD_LOADING | KV_CMD_STALE | KV_CMD_FAST |
                     KV_CMD_NO_MULTI | KV_CMD_CONN,
     0, 0, 0, NULL, NULL, "@fast @transaction"},
    {"exec", 1, KV_CMD_NOSCRIPT | KV_CMD_LOADING | KV_CMD_STALE | KV_CMD_SKIP_MONITOR |
                    KV_CMD_CONN,
     0, 0, 0, NULL, NULL, "@slow @transaction"},
    {"discard", 1, KV_CMD_NOSCRIPT | KV_CMD_LOADING | KV_CMD_STALE | KV_CMD_FAST |
                       KV_CMD_CONN,
     0, 0, 0, NULL, NULL, "@fast @transaction"},
    {"watch", -2, KV_CMD_NOSCRIPT | KV_CMD_LOADING | KV_CMD_STALE | KV_CMD_FAST | KV_CMD_NO_MULTI |
                      KV_CMD_CONN,
     1, -1, 1, NULL, NULL, "@fast @transaction"},
    {"save", 1, KV_CMD_ADMIN | KV_CMD_NOSCRIPT | KV_CMD_NO_MULTI | KV_CMD_CONN, 0, 0, 0, NULL,
     NULL, "@admin @slow @dangerous"},
    {"bgsave", -1, KV_CMD_ADMIN | KV_CMD_NOSCRIPT | KV_CMD_CONN, 0, 0, 0, NULL, NULL,
     "@admin @slow @dangerous"},
    {"bgrewriteaof", 1, KV_CMD_ADMIN | KV_CMD_NOSCRIPT | KV_CMD_CONN, 0, 0, 0, NULL, NULL,
     "@admin @slow @dangerous"},
    {"unwatch", 1, KV_CMD_NOSCRIPT | KV_CMD_LOADING | KV_CMD_STALE | KV_CMD_FAST | KV_CMD_CONN,
     0, 0, 0, NULL, NULL, "@fast @transaction"},
    {NULL},
};
