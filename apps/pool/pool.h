/* keel-pool's internals shared by its files:
 *   pools.c   databases, pools and their global limits across shards, settings
 *   client.c  client connections: startup, authentication, the query loop, cancel
 *   server.c  server connections: connect, login, the reply loop, internal queries
 *   admin.c   the admin console (SHOW ..., PAUSE, RELOAD, ...)
 *   main.c    command line, signals, pidfile/logfile, listeners
 *
 * Every client, server and per-shard pool lives on one shard and is touched
 * only there. What is shared by all shards is read-only after start (the
 * configuration, swapped whole by RELOAD) or a counter updated with atomics
 * (pool_global: the global server-connection limits). */
#ifndef POOL_POOL_H
#define POOL_POOL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <keel/keel.h>

#include <sys/socket.h>

#include "auth.h"
#include "config.h"
#include "proto.h"

#define POOL_VERSION "1.18.0" /* PgBouncer release whose behaviour we follow */
#define POOL_VERSION_STRING                                                                        \
    "PgBouncer 1.18.0 (keel-pool "                                                                 \
    "0.1.0"                                                                                        \
    ")"

/* ---- interned strings for tracked parameters ------------------------------------------- */

/* Values of the parameters that follow a client from server to server
 * (client_encoding, DateStyle, TimeZone, standard_conforming_strings,
 * application_name) are interned per shard: comparing a client's and a
 * server's settings is comparing pointers, and an idle client holds five
 * pointers, not five strings. */
typedef struct pstr {
    struct pstr *next;
    uint32_t refs, hash;
    char s[];
} pstr;

pstr *pstr_get(const char *s); /* a new reference; NULL on out-of-memory */
pstr *pstr_ref(pstr *p);
void pstr_put(pstr *p); /* NULL is fine */

enum { VAR_ENCODING, VAR_DATESTYLE, VAR_TIMEZONE, VAR_SCS, VAR_APPNAME, NVARS };
extern const char *const var_names[NVARS];
int var_index(const char *name); /* case-insensitive; -1 when not tracked */

typedef struct pvars {
    pstr *v[NVARS];
} pvars;
void pvars_set(pvars *vs, int i, const char *value);
void pvars_copy(pvars *dst, const pvars *src);
void pvars_clear(pvars *vs);

/* ---- databases, users, pools ----------------------------------------------------------- */

typedef struct pool_global pool_global;
/* Per-database and per-user state shared by all shards: the server and
 * client counts for max_db_connections/max_user_connections, and the
 * admin console's PAUSE/DISABLE flags of a database. */
typedef struct pool_limit {
    char *name;
    _Atomic int servers;
    _Atomic int clients;
    _Atomic bool paused, disabled;
    struct pool_limit *next;
} pool_limit;
typedef struct ppool ppool;
typedef struct pclient pclient;
typedef struct pserver pserver;

/* A database as clients see it: a [databases] entry, or one made from "*". */
typedef struct pdb {
    char *name;
    pool_config_db *cfg; /* owned by the live configuration (or by auto, below) */
    pool_config_db *auto_cfg;
    unsigned next_host; /* round robin over cfg->hosts */
    pool_limit *lim;    /* paused, disabled: global */
    struct pdb *next;
} pdb;

/* Counters kept per pool per shard, summed by the admin console. */
typedef struct pstats {
    uint64_t xact_count, query_count, bytes_in, bytes_out;
    uint64_t xact_us, query_us, wait_us;
    uint64_t server_assignments;
} pstats;

/* One pool's slice on one shard: its server connections and waiting clients. */
struct ppool {
    pdb *db;
    char *user;
    pool_global *g;
    pool_mode mode;
    pserver *idle, *active, *used, *login, *tested; /* server lists */
    int n_idle, n_active, n_used, n_login, n_tested;
    pclient *wait_head, *wait_tail; /* clients waiting for a server, FIFO */
    int n_waiting;
    int n_clients_active;     /* logged-in clients of this pool on this shard */
    pstats stats, stats_prev; /* stats_prev: at the start of the stats_period */
    pstats avg;               /* what the last whole stats_period added */
    uint64_t stats_at_ns;
    /* What a client is sent after login: the first server's ParameterStatus. */
    pgbuf welcome;
    bool have_welcome;
    /* Credentials for server logins when the auth_file holds a SCRAM secret:
     * the keys a client's SCRAM proof revealed (PgBouncer's pass-through). */
    bool have_scram_keys;
    uint8_t scram_client_key[32], scram_server_key[32];
    /* Cached SCRAM salted password for a plain-text password. */
    bool have_salted;
    uint8_t salted[32], salted_salt[64];
    size_t salted_salt_len;
    int salted_iter;
    uint64_t last_login_error_ns;
    char *login_error; /* the server's last login error, sent to waiting clients */
    char *secret;      /* from auth_query, for users not in the auth_file */
    pool_secret_kind secret_kind;
    pool_limit *db_limit, *user_limit;
    ppool *next;
};

/* A pool's state shared by all shards: the limits are global, so the
 * server-connection count is one atomic counter, and each shard publishes how
 * many idle servers and waiting clients it has, so a shard whose clients wait
 * can ask one with idle servers to give one up (pools.c explains). */
struct pool_global {
    char *db, *user;
    /* The first server's ParameterStatus set, for shards that have not
     * logged in a server of their own (under globals_lock). */
    pgbuf welcome;
    _Atomic bool have_welcome;
    _Atomic int servers;
    _Atomic int *idle, *waiting; /* per shard */
    pool_global *next;
};

/* ---- clients ------------------------------------------------------------------------- */

enum client_state { CL_LOGIN, CL_ACTIVE, CL_WAITING, CL_CLOSING };

struct pclient {
    keel_conn *conn;
    ppool *pool;
    pserver *server;
    uint32_t cancel_pid, cancel_key;
    uint32_t peer_pid; /* a Unix-socket client's pid (SO_PEERCRED) */
    uint8_t state;
    uint8_t auth_step;
    /* Flags as bits: an idle client's size is what 10,000 of them cost. */
    bool admin : 1, admin_stats_only : 1, closing : 1, linked_once : 1;
    bool unix_sock : 1, peer_ok : 1, terminated : 1, close_logged : 1;
    bool auth_ok_sent : 1, auth_plain : 1, counted : 1, counted_limits : 1;
    bool admin_close : 1, waiting : 1;
    bool owns_user : 1, owns_db : 1; /* user/dbname: owned copies until login */
    uint32_t need;                   /* bytes the next read waits for (0: any) */
    uint32_t fwd_left;               /* bytes of a client message still to forward */
    union {
        pgbuf *admin_out;      /* the console's reply being built (console clients) */
        struct prep_map *prep; /* prepared statements: client name -> statement (others) */
    };
    pvars vars;
    char *user, *dbname;
    uint64_t connect_ns, request_ns, wait_start_ns, xact_start_ns, query_start_ns;
    char addr[48];
    uint16_t port, local_port;
    keel_promise wait_p; /* acquire */
    pclient *wait_next, *wait_prev;
    pclient *prev, *next; /* the shard's clients */
};

/* ---- servers ------------------------------------------------------------------------- */

enum server_state { SV_LOGIN, SV_IDLE, SV_ACTIVE, SV_USED, SV_TESTED, SV_CLOSED, SV_MOVING };

struct pserver {
    keel_conn *conn;
    ppool *pool;
    pclient *client;
    pserver *prev, *next; /* in one of the pool's lists */
    uint8_t state;
    bool ready;       /* logged in */
    bool dirty;       /* a message other than Query/Sync was sent since the last Sync */
    bool internal;    /* running an internal query: replies are not forwarded */
    bool close_after; /* close instead of returning to the pool */
    bool resetting;
    char txn; /* 'I', 'T', 'E' from the last ReadyForQuery */
    int pending_z;
    uint32_t fwd_left; /* bytes of a server message still to forward */
    uint32_t be_pid, be_key;
    pvars vars;
    bool stmt_violation;
    bool capture_row; /* keep the first DataRow of an internal query (auth_query) */
    uint8_t *internal_row;
    size_t internal_row_len;
    int internal_z; /* ReadyForQuery messages that end internal queries */
    size_t need;
    pool_scram_client *scram;
    pgbuf welcome;
    char *internal_error;
    keel_promise internal_p;
    uint64_t connect_ns, request_ns, last_used_ns, checked_ns;
    keel_future *connecting; /* the connect, until server_connect's task attaches to it */
    char addr[64];
    uint16_t port, local_port;
    void *prep; /* prep.c's state: statements prepared on this connection */
    uint64_t id;
    pserver *all_prev, *all_next; /* the shard's servers */
};

/* ---- the shard --------------------------------------------------------------------- */

typedef struct pool_shard {
    unsigned id;
    pdb *dbs;
    ppool *pools;
    pclient *clients;
    pserver *servers;
    int n_clients, n_servers;
    int n_logins;
    uint64_t admin_queries;
    uint64_t next_id;
    pstr *strings[256];
    keel_abort_source stopping;
    bool suspended;
} pool_shard;

extern keel_sharded pool_shards;

/* PAUSE/SUSPEND of everything (SIGUSR1, SIGINT's safe shutdown). */
extern _Atomic bool pool_paused_all, pool_suspended;
static inline bool db_paused(const pdb *d)
{
    return atomic_load_explicit(&d->lim->paused, memory_order_relaxed) ||
           atomic_load_explicit(&pool_paused_all, memory_order_relaxed);
}
static inline bool db_disabled(const pdb *d)
{
    return atomic_load_explicit(&d->lim->disabled, memory_order_relaxed);
}
static inline pool_shard *shard_here(void)
{
    return keel_sharded_local(&pool_shards);
}

/* The live configuration and auth_file: replaced whole by RELOAD (shard 0
 * parses, every shard switches, the old one is freed after all have). */
extern pool_config *volatile pool_cfg;
extern pool_auth_file *volatile pool_users;
extern char *pool_cfg_path;

/* ---- pools.c ------------------------------------------------------------------------- */

void pool_log(const char *level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define plog(...) pool_log("LOG", __VA_ARGS__)
#define pwarn(...) pool_log("WARNING", __VA_ARGS__)
#define perr(...) pool_log("ERROR", __VA_ARGS__)
void pool_log_open(const char *path, bool quiet, bool verbose);
extern bool pool_verbose;

pdb *pool_find_db(const char *name);        /* on this shard; makes "*" databases */
ppool *pool_get(pdb *db, const char *user); /* this shard's slice, made on first use */
int pool_size_of(const ppool *p);
pool_mode pool_mode_of(const pdb *db, const char *user);

/* Resolves to the pserver * for c (linked to it), or to an error
 * (-ETIMEDOUT: query_wait_timeout). */
keel_future *pool_acquire(pclient *c);
/* The client is done with its server: back to the pool, reset or closed. */
void pool_release(pclient *c);
/* The same for a server the client never used (its login's welcome). */
void pool_release_unused(pclient *c);
void pool_unwait(pclient *c);
/* A server left the pool (closed): gives its slot to waiting clients. */
void pool_server_gone(ppool *p);
void pool_server_ready(pserver *s); /* login finished: serve a waiter or idle */
void pool_kick_waiters(ppool *p);
void pool_maintain_start(void);
void pool_limit_server_dec(ppool *p);
void pool_fail_waiters(ppool *p, int err);
bool pool_login_backoff(const ppool *p);
extern _Atomic int pool_client_count;
pool_limit *pool_limit_get(pool_limit **list, const char *name);
extern pool_limit *pool_db_limits, *pool_user_limits;

/* ---- server.c ------------------------------------------------------------------------ */

void server_connect(ppool *p); /* counted already against the limits */
void server_close(pserver *s, const char *reason);
/* Moves idle s to shard `to` (its socket and session; no new login there). */
void server_lend(pserver *s, unsigned to);
/* Runs sql on s (which no client uses) and resolves when its ReadyForQuery
 * arrives: 0, or -EPROTO with s->internal_error set. */
keel_future *server_internal_query(pserver *s, const char *sql);
/* The same without waiting: for SETs whose errors only get logged. */
int server_internal_send(pserver *s, const char *sql);
void server_start_loop(pserver *s);
const char *server_state_name(const pserver *s);
void server_send_cancel(pserver *s);
void server_set_state(pserver *s, int state);

/* ---- client.c ------------------------------------------------------------------------ */

void client_accept(void *ctx, keel_conn *conn);
void client_kill(pclient *c, const char *sqlstate, const char *msg);
void client_send_error(pclient *c, const char *sqlstate, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Server -> client: a server message reached a linked client. */
void client_server_died(pclient *c, const char *msg);
keel_future *client_cancel_local(void *arg);

/* ---- admin.c ------------------------------------------------------------------------- */

/* Runs one admin console statement and writes the reply into out. */
keel_future *admin_query(pclient *c, const char *sql, pgbuf *out);
keel_future *admin_reload(void);
void admin_pause_all(bool pause);
void admin_shutdown_when_idle(void);
void pool_globals_free(void);
/* Publishes p's welcome for all shards, or takes the published one. */
void pool_welcome_publish(ppool *p);
bool pool_welcome_take(ppool *p);
void admin_free_retired(void);
extern uint64_t pool_start_ns;

/* ---- metrics.c ----------------------------------------------------------------------- */

/* Registers keel-pool's metrics collector; once, before keel_run.
 * Returns 0 or -errno. */
int pool_metrics_start(void);
/* Gives the collector this shard's state (NULL: it is going away). On
 * the shard. */
void pool_metrics_shard(pool_shard *sh);

/* ---- helpers ------------------------------------------------------------------------- */

void fmt_addr(const struct sockaddr_storage *ss, char *addr, size_t len, uint16_t *port);
const char *mode_name(pool_mode m);

#endif
