/* PgBouncer configuration parser; see config.h for the accepted syntax. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_INCLUDE_DEPTH 10 /* libusual's limit on %include nesting */

/* ---- parse state ---------------------------------------------------------------- */

typedef enum section {
    SECT_NONE,
    SECT_DATABASES,
    SECT_USERS,
    SECT_PGBOUNCER,
    SECT_PEERS,
    SECT_OTHER,
} section;

typedef struct parser {
    pool_config *cfg;
    pool_config_log_fn log;
    void *log_arg;
    int errors;
    bool oom;
    section sect;
    const char *files[MAX_INCLUDE_DEPTH + 1]; /* include stack, for loop detection */
    int depth;
} parser;

static void report(pool_config_log_fn log, void *arg, bool error, const char *file, int line,
                   const char *fmt, ...) __attribute__((format(printf, 6, 7)));

static void report(pool_config_log_fn log, void *arg, bool error, const char *file, int line,
                   const char *fmt, ...)
{
    char msg[1024];
    int n = line > 0 ? snprintf(msg, sizeof(msg), "%s:%d: ", file, line)
                     : snprintf(msg, sizeof(msg), "%s: ", file);
    if (n < 0 || (size_t)n >= sizeof(msg))
        n = 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg + n, sizeof(msg) - (size_t)n, fmt, ap);
    va_end(ap);
    if (log)
        log(arg, error, msg);
}

#define P_ERROR(p, file, line, ...)                                                                \
    do {                                                                                           \
        (p)->errors++;                                                                             \
        report((p)->log, (p)->log_arg, true, file, line, __VA_ARGS__);                             \
    } while (0)
#define P_WARN(p, file, line, ...) report((p)->log, (p)->log_arg, false, file, line, __VA_ARGS__)

static char *xstrndup(parser *p, const char *s, size_t n)
{
    char *r = strndup(s, n);
    if (!r)
        p->oom = true;
    return r;
}

static bool set_str(parser *p, char **dst, const char *val)
{
    char *s = strdup(val);
    if (!s) {
        p->oom = true;
        return false;
    }
    free(*dst);
    *dst = s;
    return true;
}

/* Grows *arr (of elem-sized items, *n used) by one zeroed item; NULL on OOM. */
static void *push(parser *p, void **arr, size_t *n, size_t elem)
{
    void *na = realloc(*arr, (*n + 1) * elem);
    if (!na) {
        p->oom = true;
        return NULL;
    }
    *arr = na;
    void *item = (char *)na + *n * elem;
    memset(item, 0, elem);
    (*n)++;
    return item;
}

/* ---- value parsers (shared by settings and connection strings) -------------------- */

/* cf_set_int(): strtol base 0, whole string, no overflow. */
static bool parse_int(const char *s, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 0);
    if (end == s || *end || errno || v < INT_MIN || v > INT_MAX)
        return false;
    *out = (int)v;
    return true;
}

/* Non-negative int, for sizes and counts. */
static bool parse_uint(const char *s, int *out)
{
    int v;
    if (!parse_int(s, &v) || v < 0)
        return false;
    *out = v;
    return true;
}

/* cf_set_time_double(): strtod, whole string, not negative. */
static bool parse_time(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end || errno || !(v >= 0))
        return false;
    *out = v;
    return true;
}

static bool parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"1", "yes", "on", "true"};
    static const char *const no[] = {"0", "no", "off", "false"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return true;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return true;
        }
    }
    return false;
}

static bool parse_pool_mode(const char *s, pool_mode *out)
{
    static const char *const names[] = {"session", "transaction", "statement"};
    for (int i = 0; i < 3; i++)
        if (strcasecmp(s, names[i]) == 0) {
            *out = (pool_mode)i;
            return true;
        }
    return false;
}

static bool valid_auth_type(const char *s)
{
    static const char *const names[] = {"any", "trust", "plain",         "md5", "cert",
                                        "hba", "pam",   "scram-sha-256", "peer"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strcasecmp(s, names[i]) == 0)
            return true;
    return false;
}

/* ---- [pgbouncer] settings ------------------------------------------------------- */

typedef enum stype { T_STR, T_INT, T_UINT, T_TIME, T_BOOL, T_MODE, T_AUTH } stype;

typedef struct setting {
    const char *name;
    stype type;
    size_t offset;
} setting;

#define S(name, type)                                                                              \
    {                                                                                              \
#name, type, offsetof(pool_config, name)                                                   \
    }
static const setting settings[] = {
    S(listen_addr, T_STR),
    S(listen_port, T_UINT),
    S(unix_socket_dir, T_STR),
    S(auth_type, T_AUTH),
    S(auth_file, T_STR),
    S(auth_user, T_STR),
    S(auth_query, T_STR),
    S(pool_mode, T_MODE),
    S(max_client_conn, T_UINT),
    S(default_pool_size, T_UINT),
    S(min_pool_size, T_UINT),
    S(reserve_pool_size, T_UINT),
    S(reserve_pool_timeout, T_TIME),
    S(max_db_connections, T_UINT),
    S(max_user_connections, T_UINT),
    S(server_reset_query, T_STR),
    S(server_reset_query_always, T_BOOL),
    S(server_check_query, T_STR),
    S(server_check_delay, T_TIME),
    S(server_lifetime, T_TIME),
    S(server_idle_timeout, T_TIME),
    S(server_connect_timeout, T_TIME),
    S(server_login_retry, T_TIME),
    S(query_timeout, T_TIME),
    S(query_wait_timeout, T_TIME),
    S(client_idle_timeout, T_TIME),
    S(client_login_timeout, T_TIME),
    S(idle_transaction_timeout, T_TIME),
    S(ignore_startup_parameters, T_STR),
    S(max_prepared_statements, T_UINT),
    S(admin_users, T_STR),
    S(stats_users, T_STR),
    S(logfile, T_STR),
    S(pidfile, T_STR),
    S(log_connections, T_BOOL),
    S(log_disconnections, T_BOOL),
    S(stats_period, T_TIME),
};
#undef S

pool_config *pool_config_new_defaults(void)
{
    pool_config *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->listen_port = 6432;
    c->pool_mode = POOL_MODE_SESSION;
    c->max_client_conn = 100;
    c->default_pool_size = 20;
    c->reserve_pool_timeout = 5.0;
    c->server_reset_query_always = false;
    c->server_check_delay = 30;
    c->server_lifetime = 3600;
    c->server_idle_timeout = 600;
    c->server_connect_timeout = 15;
    c->server_login_retry = 15;
    c->query_wait_timeout = 120;
    c->client_login_timeout = 60;
    c->max_prepared_statements = 200;
    c->log_connections = true;
    c->log_disconnections = true;
    c->stats_period = 60;
    c->unix_socket_dir = strdup("/tmp");
    c->auth_type = strdup("md5");
    c->auth_query = strdup("SELECT usename, passwd FROM pg_shadow WHERE usename=$1");
    c->server_reset_query = strdup("DISCARD ALL");
    c->server_check_query = strdup("select 1");
    if (!c->unix_socket_dir || !c->auth_type || !c->auth_query || !c->server_reset_query ||
        !c->server_check_query) {
        pool_config_free(c);
        return NULL;
    }
    return c;
}

/* Strips one pair of matching quotes wrapping the whole value, in place. */
static char *unquote(char *v)
{
    size_t n = strlen(v);
    if (n >= 2 && (v[0] == '"' || v[0] == '\'') && v[n - 1] == v[0]) {
        v[n - 1] = 0;
        return v + 1;
    }
    return v;
}

/* PgBouncer 1.24 settings that keel-pool does not model yet: accepted with a
 * warning that says so, rather than the one for a misspelt key. */
static const char *const untyped_settings[] = {
    "unix_socket_mode",
    "unix_socket_group",
    "user",
    "max_db_client_connections",
    "max_user_client_connections",
    "server_round_robin",
    "track_extra_parameters",
    "peer_id",
    "disable_pqexec",
    "application_name_add_host",
    "conffile",
    "service_name",
    "job_name",
    "scram_iterations",
    "auth_hba_file",
    "auth_ident_file",
    "auth_dbname",
    "syslog",
    "syslog_ident",
    "syslog_facility",
    "log_pooler_errors",
    "log_stats",
    "verbose",
    "server_fast_close",
    "autodb_idle_timeout",
    "dns_max_ttl",
    "dns_nxdomain_ttl",
    "dns_zone_check_period",
    "resolv_conf",
    "cancel_wait_timeout",
    "transaction_timeout",
    "suspend_timeout",
    "pkt_buf",
    "max_packet_size",
    "listen_backlog",
    "sbuf_loopcnt",
    "so_reuseport",
    "tcp_defer_accept",
    "tcp_socket_buffer",
    "tcp_keepalive",
    "tcp_keepcnt",
    "tcp_keepidle",
    "tcp_keepintvl",
    "tcp_user_timeout",
    "client_tls_sslmode",
    "client_tls_key_file",
    "client_tls_cert_file",
    "client_tls_ca_file",
    "client_tls_protocols",
    "client_tls_ciphers",
    "client_tls_ecdhcurve",
    "client_tls_dheparams",
    "server_tls_sslmode",
    "server_tls_ca_file",
    "server_tls_key_file",
    "server_tls_cert_file",
    "server_tls_protocols",
    "server_tls_ciphers",
};

static void set_setting(parser *p, const char *file, int line, const char *key, char *raw)
{
    const setting *s = NULL;
    for (size_t i = 0; i < sizeof(settings) / sizeof(settings[0]); i++)
        if (strcmp(settings[i].name, key) == 0)
            s = &settings[i];
    if (!s) {
        for (size_t i = 0; i < sizeof(untyped_settings) / sizeof(untyped_settings[0]); i++)
            if (strcmp(untyped_settings[i], key) == 0) {
                P_WARN(p, file, line, "key '%s' is not supported by keel-pool yet, ignored", key);
                return;
            }
        P_WARN(p, file, line, "unknown key '%s' in section [pgbouncer], ignored", key);
        return;
    }
    char *val = unquote(raw);
    void *dst = (char *)p->cfg + s->offset;
    bool ok = true;
    switch (s->type) {
    case T_STR:
        /* An empty string means "not set", as PgBouncer's NULL-or-empty checks do. */
        if (*val) {
            set_str(p, dst, val);
        } else {
            free(*(char **)dst);
            *(char **)dst = NULL;
        }
        return;
    case T_AUTH:
        ok = valid_auth_type(val);
        if (ok)
            set_str(p, dst, val);
        break;
    case T_INT: ok = parse_int(val, dst); break;
    case T_UINT: ok = parse_uint(val, dst); break;
    case T_TIME: ok = parse_time(val, dst); break;
    case T_BOOL: ok = parse_bool(val, dst); break;
    case T_MODE: ok = parse_pool_mode(val, dst); break;
    }
    if (!ok)
        P_ERROR(p, file, line, "invalid value '%s' for key '%s'", val, key);
}

/* ---- libpq-style connection strings -------------------------------------------- */

/* Reads the next "key=value" of s at *pos into newly allocated *key and *val.
 * Returns 1 on a pair, 0 at the end, -1 on a syntax error (with *why set). */
static int next_pair(parser *p, const char *s, size_t *pos, char **key, char **val,
                     const char **why)
{
    size_t i = *pos;
    *key = *val = NULL;
    while (s[i] && isspace((unsigned char)s[i]))
        i++;
    if (!s[i]) {
        *pos = i;
        return 0;
    }
    size_t k0 = i;
    while (s[i] && s[i] != '=' && !isspace((unsigned char)s[i]))
        i++;
    size_t klen = i - k0;
    while (s[i] && isspace((unsigned char)s[i]))
        i++;
    if (s[i] != '=' || klen == 0) {
        *why = "missing '=' after key";
        return -1;
    }
    i++;
    while (s[i] && isspace((unsigned char)s[i]))
        i++;
    /* The value is at most as long as the rest of the string. */
    char *v = malloc(strlen(s + i) + 1);
    if (!v) {
        p->oom = true;
        *why = "out of memory";
        return -1;
    }
    size_t vlen = 0;
    if (s[i] == '\'') {
        i++;
        for (;;) {
            if (!s[i]) {
                free(v);
                *why = "unterminated quoted string";
                return -1;
            }
            if (s[i] == '\\' && s[i + 1]) {
                v[vlen++] = s[i + 1];
                i += 2;
            } else if (s[i] == '\'' && s[i + 1] == '\'') {
                v[vlen++] = '\''; /* '' is a quote, as PgBouncer reads it */
                i += 2;
            } else if (s[i] == '\'') {
                i++;
                break;
            } else {
                v[vlen++] = s[i++];
            }
        }
    } else {
        while (s[i] && !isspace((unsigned char)s[i])) {
            if (s[i] == '\\' && s[i + 1])
                i++;
            v[vlen++] = s[i++];
        }
    }
    v[vlen] = 0;
    *key = xstrndup(p, s + k0, klen);
    if (!*key) {
        free(v);
        *why = "out of memory";
        return -1;
    }
    *val = v;
    *pos = i;
    return 1;
}

static bool split_hosts(parser *p, pool_config_db *db)
{
    size_t n = 1;
    for (const char *c = db->host; *c; c++)
        n += *c == ',';
    db->hosts = calloc(n, sizeof(char *));
    if (!db->hosts) {
        p->oom = true;
        return false;
    }
    const char *start = db->host;
    for (size_t i = 0; i < n; i++) {
        const char *end = strchr(start, ',');
        if (!end)
            end = start + strlen(start);
        db->hosts[i] = xstrndup(p, start, (size_t)(end - start));
        if (!db->hosts[i])
            return false;
        db->nhosts++;
        start = end + 1;
    }
    return true;
}

typedef enum entry_kind { ENTRY_DB, ENTRY_USER, ENTRY_PEER } entry_kind;

/* Applies one connection-string pair to a [databases], [users] or [peers] entry.
 * Returns false with *bad_value set when the value is invalid, false with it clear
 * when the key is unknown. */
static bool apply_pair(parser *p, entry_kind kind, void *entry, const char *key, const char *val,
                       bool *bad_value)
{
    *bad_value = true;
    if (kind == ENTRY_USER) {
        pool_config_user *u = entry;
        if (strcmp(key, "pool_mode") == 0)
            return parse_pool_mode(val, &u->pool_mode);
        if (strcmp(key, "max_user_connections") == 0)
            return parse_uint(val, &u->max_user_connections);
        *bad_value = false;
        return false;
    }
    if (kind == ENTRY_PEER) {
        pool_config_peer *pe = entry;
        if (strcmp(key, "host") == 0)
            return set_str(p, &pe->host, val);
        if (strcmp(key, "port") == 0)
            return parse_uint(val, &pe->port) && pe->port <= 65535;
        if (strcmp(key, "pool_size") == 0)
            return parse_uint(val, &pe->pool_size);
        *bad_value = false;
        return false;
    }
    pool_config_db *db = entry;
    static const struct {
        const char *name;
        size_t offset;
    } strs[] = {
#define F(n) {#n, offsetof(pool_config_db, n)}
        F(dbname),          F(user),      F(password), F(auth_user),        F(connect_query),
        F(client_encoding), F(datestyle), F(timezone), F(application_name),
    };
    static const struct {
        const char *name;
        size_t offset;
    } ints[] = {
        F(pool_size),
        F(min_pool_size),
        F(reserve_pool),
        F(max_db_connections),
#undef F
    };
    for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++)
        if (strcmp(key, strs[i].name) == 0)
            return set_str(p, (char **)((char *)db + strs[i].offset), val);
    for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]); i++)
        if (strcmp(key, ints[i].name) == 0)
            return parse_uint(val, (int *)((char *)db + ints[i].offset));
    if (strcmp(key, "host") == 0) {
        if (db->hosts) { /* a repeated host= replaces the earlier list */
            for (size_t i = 0; i < db->nhosts; i++)
                free(db->hosts[i]);
            free(db->hosts);
            db->hosts = NULL;
            db->nhosts = 0;
        }
        return set_str(p, &db->host, val) && split_hosts(p, db);
    }
    if (strcmp(key, "port") == 0)
        return parse_uint(val, &db->port) && db->port <= 65535;
    if (strcmp(key, "pool_mode") == 0)
        return parse_pool_mode(val, &db->pool_mode);
    *bad_value = false;
    return false;
}

static void free_db(pool_config_db *db)
{
    free(db->name);
    free(db->host);
    for (size_t i = 0; i < db->nhosts; i++)
        free(db->hosts[i]);
    free(db->hosts);
    free(db->dbname);
    free(db->user);
    free(db->password);
    free(db->auth_user);
    free(db->connect_query);
    free(db->client_encoding);
    free(db->datestyle);
    free(db->timezone);
    free(db->application_name);
}

static void free_user(pool_config_user *u)
{
    free(u->name);
}

static void free_peer(pool_config_peer *pe)
{
    free(pe->host);
}

/* Parses one entry of [databases], [users] or [peers]. A later entry with the same
 * name replaces the earlier one, as PgBouncer's reload does. */
static void add_entry(parser *p, entry_kind kind, const char *file, int line, const char *name,
                      const char *connstr)
{
    static const char *const what[] = {"database", "user", "peer"};
    pool_config_db db = {.port = -1,
                         .pool_size = -1,
                         .min_pool_size = -1,
                         .reserve_pool = -1,
                         .max_db_connections = -1,
                         .pool_mode = POOL_MODE_UNSET};
    pool_config_user user = {.pool_mode = POOL_MODE_UNSET, .max_user_connections = -1};
    pool_config_peer peer = {.port = -1, .pool_size = -1};
    void *entry = kind == ENTRY_DB     ? (void *)&db
                  : kind == ENTRY_USER ? (void *)&user
                                       : (void *)&peer;
    bool ok = true;

    if (kind == ENTRY_PEER && !parse_uint(name, &peer.peer_id)) {
        P_ERROR(p, file, line, "invalid peer id '%s'", name);
        return;
    }

    size_t pos = 0;
    for (;;) {
        char *key, *val;
        const char *why = NULL;
        int r = next_pair(p, connstr, &pos, &key, &val, &why);
        if (r == 0)
            break;
        if (r < 0) {
            P_ERROR(p, file, line, "syntax error in connection string for %s '%s': %s", what[kind],
                    name, why);
            ok = false;
            break;
        }
        bool bad_value;
        if (!apply_pair(p, kind, entry, key, val, &bad_value) && !p->oom) {
            if (bad_value)
                P_ERROR(p, file, line, "invalid value '%s' for key '%s' in %s '%s'", val, key,
                        what[kind], name);
            else
                P_ERROR(p, file, line, "unrecognized key '%s' in %s '%s'", key, what[kind], name);
            ok = false;
        }
        free(key);
        free(val);
        if (!ok)
            break;
    }
    if (ok && !p->oom) {
        pool_config *c = p->cfg;
        if (kind == ENTRY_DB) {
            pool_config_db *slot = (pool_config_db *)pool_config_find_db(c, name);
            if (slot)
                free_db(slot);
            else
                slot = push(p, (void **)&c->dbs, &c->ndbs, sizeof(*slot));
            if (slot) {
                db.name = strdup(name);
                *slot = db;
                if (!slot->name)
                    p->oom = true;
                return;
            }
        } else if (kind == ENTRY_USER) {
            pool_config_user *slot = NULL;
            for (size_t i = 0; i < c->nusers; i++)
                if (strcmp(c->users[i].name, name) == 0)
                    slot = &c->users[i];
            if (slot)
                free_user(slot);
            else
                slot = push(p, (void **)&c->users, &c->nusers, sizeof(*slot));
            if (slot) {
                user.name = strdup(name);
                *slot = user;
                if (!slot->name)
                    p->oom = true;
                return;
            }
        } else {
            pool_config_peer *slot = NULL;
            for (size_t i = 0; i < c->npeers; i++)
                if (c->peers[i].peer_id == peer.peer_id)
                    slot = &c->peers[i];
            if (slot)
                free_peer(slot);
            else
                slot = push(p, (void **)&c->peers, &c->npeers, sizeof(*slot));
            if (slot) {
                *slot = peer;
                return;
            }
        }
    }
    free_db(&db);
    free_user(&user);
    free_peer(&peer);
}

/* ---- the ini reader ------------------------------------------------------------- */

static char *read_file(const char *path, int *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        *err = errno;
        return NULL;
    }
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    while (buf) {
        size_t n = fread(buf + len, 1, cap - len - 1, f);
        len += n;
        if (len < cap - 1) {
            if (ferror(f)) {
                *err = EIO;
                free(buf);
                buf = NULL;
            }
            break;
        }
        char *nb = realloc(buf, cap * 2);
        if (!nb) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = nb;
        cap *= 2;
    }
    if (!buf && !*err)
        *err = ENOMEM;
    if (buf)
        buf[len] = 0;
    fclose(f);
    return buf;
}

static bool is_key_char(char c)
{
    return isalnum((unsigned char)c) || strchr("_.-*", c);
}

static void parse_text(parser *p, const char *text, const char *file);

/* Resolves an include path against the including file's directory. */
static char *include_path(parser *p, const char *from, const char *target)
{
    const char *slash = strrchr(from, '/');
    if (target[0] == '/' || !slash)
        return xstrndup(p, target, strlen(target));
    size_t dlen = (size_t)(slash - from) + 1;
    char *r = malloc(dlen + strlen(target) + 1);
    if (!r) {
        p->oom = true;
        return NULL;
    }
    memcpy(r, from, dlen);
    strcpy(r + dlen, target);
    return r;
}

static void do_include(parser *p, const char *file, int line, const char *target)
{
    char *path = include_path(p, file, target);
    if (!path)
        return;
    char *real = realpath(path, NULL);
    if (!real) {
        P_ERROR(p, file, line, "cannot include '%s': %s", path, strerror(errno));
        free(path);
        return;
    }
    for (int i = 0; i < p->depth; i++) {
        char *other = realpath(p->files[i], NULL);
        bool same = other && strcmp(other, real) == 0;
        free(other);
        if (same) {
            P_ERROR(p, file, line, "include loop: '%s' is already being read", path);
            goto out;
        }
    }
    if (p->depth >= MAX_INCLUDE_DEPTH) {
        P_ERROR(p, file, line, "cannot include '%s': includes nested too deeply", path);
        goto out;
    }
    int err = 0;
    char *text = read_file(path, &err);
    if (!text) {
        if (err == ENOMEM)
            p->oom = true;
        else
            P_ERROR(p, file, line, "cannot include '%s': %s", path, strerror(err));
        goto out;
    }
    parse_text(p, text, path);
    free(text);
out:
    free(real);
    free(path);
}

static void handle_section(parser *p, const char *file, int line, const char *name)
{
    if (strcmp(name, "databases") == 0)
        p->sect = SECT_DATABASES;
    else if (strcmp(name, "users") == 0)
        p->sect = SECT_USERS;
    else if (strcmp(name, "pgbouncer") == 0)
        p->sect = SECT_PGBOUNCER;
    else if (strcmp(name, "peers") == 0)
        p->sect = SECT_PEERS;
    else {
        p->sect = SECT_OTHER;
        P_WARN(p, file, line, "unknown section [%s], its keys are ignored", name);
    }
}

static void handle_pair(parser *p, const char *file, int line, const char *key, char *val)
{
    switch (p->sect) {
    case SECT_NONE: P_ERROR(p, file, line, "key '%s' outside of any section", key); break;
    case SECT_DATABASES: add_entry(p, ENTRY_DB, file, line, key, val); break;
    case SECT_USERS: add_entry(p, ENTRY_USER, file, line, key, val); break;
    case SECT_PEERS: add_entry(p, ENTRY_PEER, file, line, key, val); break;
    case SECT_PGBOUNCER: set_setting(p, file, line, key, val); break;
    case SECT_OTHER: break;
    }
}

static void parse_line(parser *p, const char *file, int line, char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    size_t n = strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1]))
        s[--n] = 0;
    if (!*s || *s == ';' || *s == '#')
        return;
    if (*s == '[') {
        char *end = strchr(s, ']');
        if (!end || end[1]) {
            P_ERROR(p, file, line, "syntax error in section header");
            return;
        }
        *end = 0;
        handle_section(p, file, line, s + 1);
        return;
    }
    if (strncmp(s, "%include", 8) == 0 && (isspace((unsigned char)s[8]) || !s[8])) {
        char *target = s + 8;
        while (isspace((unsigned char)*target))
            target++;
        if (!*target) {
            P_ERROR(p, file, line, "%%include needs a file name");
            return;
        }
        do_include(p, file, line, target);
        return;
    }
    char *k = s;
    while (is_key_char(*s))
        s++;
    char *kend = s;
    while (*s == ' ' || *s == '\t')
        s++;
    if (kend == k || *s != '=') {
        if (kend == k)
            P_ERROR(p, file, line, "syntax error: expected a key");
        else
            P_ERROR(p, file, line, "syntax error: expected '=' after key '%.*s'", (int)(kend - k),
                    k);
        return;
    }
    s++;
    while (*s == ' ' || *s == '\t')
        s++;
    *kend = 0;
    handle_pair(p, file, line, k, s);
}

static void parse_text(parser *p, const char *text, const char *file)
{
    p->files[p->depth++] = file;
    const char *s = text;
    for (int line = 1; *s && !p->oom; line++) {
        const char *nl = strchr(s, '\n');
        size_t len = nl ? (size_t)(nl - s) : strlen(s);
        char *copy = xstrndup(p, s, len);
        if (!copy)
            break;
        parse_line(p, file, line, copy);
        free(copy);
        s += len + (nl ? 1 : 0);
    }
    p->depth--;
}

pool_config *pool_config_parse(const char *text, const char *name, pool_config_log_fn log,
                               void *arg)
{
    parser p = {.log = log, .log_arg = arg};
    p.cfg = pool_config_new_defaults();
    if (!p.cfg)
        return NULL;
    parse_text(&p, text, name);
    if (p.oom)
        report(log, arg, true, name, 0, "out of memory");
    if (p.errors || p.oom) {
        pool_config_free(p.cfg);
        return NULL;
    }
    return p.cfg;
}

pool_config *pool_config_load(const char *path, pool_config_log_fn log, void *arg)
{
    int err = 0;
    char *text = read_file(path, &err);
    if (!text) {
        report(log, arg, true, path, 0, "cannot read: %s", strerror(err));
        return NULL;
    }
    pool_config *c = pool_config_parse(text, path, log, arg);
    free(text);
    return c;
}

const pool_config_db *pool_config_find_db(const pool_config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->ndbs; i++)
        if (strcmp(cfg->dbs[i].name, name) == 0)
            return &cfg->dbs[i];
    return NULL;
}

void pool_config_free(pool_config *cfg)
{
    if (!cfg)
        return;
    for (size_t i = 0; i < sizeof(settings) / sizeof(settings[0]); i++)
        if (settings[i].type == T_STR || settings[i].type == T_AUTH)
            free(*(char **)((char *)cfg + settings[i].offset));
    for (size_t i = 0; i < cfg->ndbs; i++)
        free_db(&cfg->dbs[i]);
    free(cfg->dbs);
    for (size_t i = 0; i < cfg->nusers; i++)
        free_user(&cfg->users[i]);
    free(cfg->users);
    for (size_t i = 0; i < cfg->npeers; i++)
        free_peer(&cfg->peers[i]);
    free(cfg->peers);
    free(cfg);
}

/* ---- auth_file ------------------------------------------------------------------- */

pool_secret_kind pool_secret_classify(const char *secret)
{
    if (strncmp(secret, "SCRAM-SHA-256$", 14) == 0)
        return POOL_SECRET_SCRAM;
    if (strlen(secret) == 35 && strncmp(secret, "md5", 3) == 0) {
        for (int i = 3; i < 35; i++)
            if (!isxdigit((unsigned char)secret[i]))
                return POOL_SECRET_PLAIN;
        return POOL_SECRET_MD5;
    }
    return POOL_SECRET_PLAIN;
}

/* Reads a '"..."' token at *s ('""' is a quote), advancing *s past it. */
static char *read_quoted(const char **s, bool *oom)
{
    const char *p = *s;
    if (*p != '"')
        return NULL;
    p++;
    char *out = malloc(strlen(p) + 1);
    if (!out) {
        *oom = true;
        return NULL;
    }
    size_t n = 0;
    for (;;) {
        if (!*p || *p == '\n') {
            free(out);
            return NULL;
        }
        if (*p == '"') {
            if (p[1] == '"') {
                out[n++] = '"';
                p += 2;
                continue;
            }
            p++;
            break;
        }
        out[n++] = *p++;
    }
    out[n] = 0;
    *s = p;
    return out;
}

pool_auth_file *pool_auth_file_parse(const char *text, const char *name, pool_config_log_fn log,
                                     void *arg)
{
    pool_auth_file *af = calloc(1, sizeof(*af));
    if (!af)
        return NULL;
    parser p = {.log = log, .log_arg = arg};
    const char *s = text;
    for (int line = 1; *s && !p.oom; line++) {
        const char *nl = strchr(s, '\n');
        const char *next = nl ? nl + 1 : s + strlen(s);
        const char *c = s;
        while (*c == ' ' || *c == '\t' || *c == '\r')
            c++;
        if (*c == '"') {
            char *user = read_quoted(&c, &p.oom), *pass = NULL;
            if (user) {
                while (*c == ' ' || *c == '\t')
                    c++;
                pass = read_quoted(&c, &p.oom);
            }
            if (!user || !pass) {
                if (!p.oom)
                    P_ERROR(&p, name, line, "broken line: expected \"username\" \"password\"");
                free(user);
                free(pass);
            } else {
                pool_auth_entry *e = NULL;
                for (size_t i = 0; i < af->nentries; i++)
                    if (strcmp(af->entries[i].user, user) == 0)
                        e = &af->entries[i];
                if (e) { /* the last line for a user wins */
                    free(e->user);
                    free(e->password);
                } else {
                    e = push(&p, (void **)&af->entries, &af->nentries, sizeof(*e));
                }
                if (e) {
                    e->user = user;
                    e->password = pass;
                    e->kind = pool_secret_classify(pass);
                } else {
                    free(user);
                    free(pass);
                }
            }
        }
        s = next;
    }
    if (p.oom)
        report(log, arg, true, name, 0, "out of memory");
    if (p.errors || p.oom) {
        pool_auth_file_free(af);
        return NULL;
    }
    return af;
}

pool_auth_file *pool_auth_file_load(const char *path, pool_config_log_fn log, void *arg)
{
    int err = 0;
    char *text = read_file(path, &err);
    if (!text) {
        report(log, arg, true, path, 0, "cannot read: %s", strerror(err));
        return NULL;
    }
    pool_auth_file *af = pool_auth_file_parse(text, path, log, arg);
    free(text);
    return af;
}

const pool_auth_entry *pool_auth_file_find(const pool_auth_file *af, const char *user)
{
    for (size_t i = 0; i < af->nentries; i++)
        if (strcmp(af->entries[i].user, user) == 0)
            return &af->entries[i];
    return NULL;
}

void pool_auth_file_free(pool_auth_file *af)
{
    if (!af)
        return;
    for (size_t i = 0; i < af->nentries; i++) {
        free(af->entries[i].user);
        free(af->entries[i].password);
    }
    free(af->entries);
    free(af);
}
