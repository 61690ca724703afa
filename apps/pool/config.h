/* PgBouncer's configuration: pgbouncer.ini (with [databases], [users], [pgbouncer]
 * and [peers]) and the auth_file (userlist.txt), parsed into typed structs.
 *
 * The ini syntax follows libusual's parse_ini_file(), which PgBouncer uses: lines
 * whose first non-blank character is ';' or '#' are comments (later on a line they
 * are ordinary characters), "[name]" starts a section, keys are made of
 * [A-Za-z0-9_.*-], "key = value" with blanks around '=' and at the value's end
 * trimmed, and "%include FILE" reads another file in place. Differences, on purpose:
 * an include path is relative to the including file's directory; a [pgbouncer]
 * value wholly enclosed in matching '...' or "..." is unquoted; booleans also
 * accept yes/no/on/off/true/false (PgBouncer reads them as integers).
 *
 * Pure C without I/O beyond reading the files; no global state. */
#ifndef POOL_CONFIG_H
#define POOL_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

/* Receives each error and warning, already formatted as "FILE:LINE: message". */
typedef void (*pool_config_log_fn)(void *arg, bool error, const char *msg);

typedef enum pool_mode {
    POOL_MODE_UNSET = -1, /* in a [databases]/[users] entry: use the global one */
    POOL_MODE_SESSION = 0,
    POOL_MODE_TRANSACTION,
    POOL_MODE_STATEMENT,
} pool_mode;

/* One [databases] entry. Integers are -1 and strings NULL when not given. */
typedef struct pool_config_db {
    char *name; /* "*" is the fallback database */
    char *host; /* as written; also split into hosts[] on ',' */
    char **hosts;
    size_t nhosts;
    int port;
    char *dbname, *user, *password, *auth_user, *connect_query;
    char *client_encoding, *datestyle, *timezone, *application_name;
    int pool_size, min_pool_size, reserve_pool, max_db_connections;
    pool_mode pool_mode;
} pool_config_db;

/* One [users] entry. */
typedef struct pool_config_user {
    char *name;
    pool_mode pool_mode;
    int max_user_connections; /* -1 when not given */
} pool_config_user;

/* One [peers] entry: "peer_id = host=... port=... pool_size=...". */
typedef struct pool_config_peer {
    int peer_id;
    char *host;
    int port;      /* -1 when not given */
    int pool_size; /* -1 when not given */
} pool_config_peer;

/* Everything in a pgbouncer.ini. [pgbouncer] settings carry PgBouncer's defaults
 * (1.24 docs); timeouts and delays are seconds, fractions allowed. */
typedef struct pool_config {
    char *listen_addr;     /* NULL: no TCP listener */
    int listen_port;       /* 6432 */
    char *unix_socket_dir; /* "/tmp" */
    char *auth_type;       /* "md5"; one of PgBouncer's names (validated) */
    char *auth_file, *auth_user;
    char *auth_query;                /* "SELECT usename, passwd FROM pg_shadow WHERE usename=$1" */
    pool_mode pool_mode;             /* session */
    int max_client_conn;             /* 100 */
    int default_pool_size;           /* 20 */
    int min_pool_size;               /* 0 */
    int reserve_pool_size;           /* 0 */
    double reserve_pool_timeout;     /* 5.0 */
    int max_db_connections;          /* 0: unlimited */
    int max_user_connections;        /* 0: unlimited */
    char *server_reset_query;        /* "DISCARD ALL" */
    bool server_reset_query_always;  /* 0 */
    char *server_check_query;        /* "select 1" */
    double server_check_delay;       /* 30 */
    double server_lifetime;          /* 3600 */
    double server_idle_timeout;      /* 600 */
    double server_connect_timeout;   /* 15 */
    double server_login_retry;       /* 15 */
    double query_timeout;            /* 0 */
    double query_wait_timeout;       /* 120 */
    double client_idle_timeout;      /* 0 */
    double client_login_timeout;     /* 60 */
    double idle_transaction_timeout; /* 0 */
    char *ignore_startup_parameters; /* NULL */
    int max_prepared_statements;     /* 200 (PgBouncer 1.24.0+; 0 in 1.21-1.23) */
    char *admin_users, *stats_users, *logfile, *pidfile;
    bool log_connections;    /* 1 */
    bool log_disconnections; /* 1 */
    double stats_period;     /* 60 */

    pool_config_db *dbs;
    size_t ndbs;
    pool_config_user *users;
    size_t nusers;
    pool_config_peer *peers;
    size_t npeers;
} pool_config;

/* Reads and parses the pgbouncer.ini at path, following %include. Every error
 * and warning goes to log (which may be NULL). Returns the config, or NULL if
 * there was any error (all errors are reported first) or memory ran out. The
 * caller frees it with pool_config_free(). */
pool_config *pool_config_load(const char *path, pool_config_log_fn log, void *arg);

/* Like pool_config_load(), parsing text as though it were the file named name;
 * %include paths are relative to name's directory. */
pool_config *pool_config_parse(const char *text, const char *name, pool_config_log_fn log,
                               void *arg);

/* A config holding only the defaults (no databases). NULL on out-of-memory. */
pool_config *pool_config_new_defaults(void);

/* Finds a [databases] entry by exact name, or NULL; does not fall back to "*". */
const pool_config_db *pool_config_find_db(const pool_config *cfg, const char *name);

/* Frees cfg and everything it owns; NULL is fine. */
void pool_config_free(pool_config *cfg);

/* ---- auth_file (userlist.txt) ---- */

typedef enum pool_secret_kind {
    POOL_SECRET_PLAIN = 0,
    POOL_SECRET_MD5,   /* "md5" followed by 32 hex digits */
    POOL_SECRET_SCRAM, /* "SCRAM-SHA-256$..." */
} pool_secret_kind;

typedef struct pool_auth_entry {
    char *user;
    char *password;
    pool_secret_kind kind;
} pool_auth_entry;

typedef struct pool_auth_file {
    pool_auth_entry *entries;
    size_t nentries;
} pool_auth_file;

/* Parses an auth_file: lines '"user" "password"', '""' standing for a quote
 * inside either; lines not starting with '"' (such as ';' comments) are skipped.
 * Returns NULL on any error (reported to log as "FILE:LINE: ...") or out-of-memory.
 * The caller frees the result with pool_auth_file_free(). */
pool_auth_file *pool_auth_file_load(const char *path, pool_config_log_fn log, void *arg);

/* Like pool_auth_file_load() on text, named name in messages. */
pool_auth_file *pool_auth_file_parse(const char *text, const char *name, pool_config_log_fn log,
                                     void *arg);

/* The entry for user, or NULL. */
const pool_auth_entry *pool_auth_file_find(const pool_auth_file *af, const char *user);

/* Classifies a stored secret. */
pool_secret_kind pool_secret_classify(const char *secret);

/* Frees af; NULL is fine. */
void pool_auth_file_free(pool_auth_file *af);

#endif
