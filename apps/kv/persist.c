/* keel-kv persistence: what writes log, the append-only file of each
 * shard (appendfsync, write errors, rewrite), snapshots (SAVE, BGSAVE,
 * save rules) and loading at start. See persist.h for the design and
 * snapshot.c for the copy-on-write walk. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dict.h"
#include "persist.h"
#include "t_hash.h"
#include "t_list.h"
#include "t_set.h"
#include "txn.h"
#include "zset.h"

kv_persist_config kv_pcfg = {
    .appendfsync = 1,
    .dir = "",
    .appendfilename = "appendonly.aof",
    .appenddirname = "appendonlydir",
    .dbfilename = "dump.rdb",
    .aof_load_truncated = true,
    .stop_writes_on_bgsave_error = true,
    .rewrite_percentage = 100,
    .rewrite_min_size = 64ll << 20,
};

bool kv_persist_on;

enum { FSYNC_ALWAYS = 0, FSYNC_EVERYSEC = 1, FSYNC_NO = 2 };

/* How a write command is logged. */
enum { LOG_VERBATIM, LOG_STATE, LOG_TTL };

typedef struct pwait {
    struct pwait *next;
    uint64_t target;
    keel_promise p;
} pwait;

typedef struct channel {
    pwait *waiters;
    uint64_t done;   /* records known written / durable */
    uint64_t target; /* what the operation in flight covers */
    bool busy;
} channel;

typedef struct pshard {
    /* Written by whoever holds the db. */
    resp_buf rec; /* records not yet moved to the AOF */
    struct kv_snap *snap;
    _Atomic uint64_t saved_changes; /* the db's change count the last save saw */
    bool aof_on;                    /* records are made */

    /* The owner's. */
    keel_file *file;
    keel_appender *aof;
    uint64_t pumped; /* records moved to the file (logged() counts the rest) */
    channel wr, dur; /* replies waiting for their records: written / durable */
    bool switching;
    int err; /* the AOF's write error, 0 when fine */
    int64_t last_sync_ms, last_retry_ms;
    uint64_t base_size;        /* the AOF's size after the last rewrite */
    _Atomic uint64_t aof_size; /* for INFO, read from any shard */
    bool diff_on;              /* a rewrite runs: records are copied to diff too */
    resp_buf diff;
    bool rewrite_pending;
    enum { SNAP_NONE, SNAP_SAVE, SNAP_REWRITE } snap_kind;
    keel_promise *save_done; /* SAVE waits */
    int64_t last_save_ms, last_bgsave_try_ms;
    uint64_t changes_at_start;
    bool bgsave_ok, rewrite_ok;
    keel_abort_source as;
} pshard;

static pshard *P;
static unsigned nps;
static atomic_int failing;    /* shards whose AOF cannot be written */
static atomic_int fail_errno; /* the last such error */
static atomic_bool bgsave_failed;
static atomic_int shutdown_save; /* SHUTDOWN SAVE (1) / NOSAVE (-1) */
static _Atomic int64_t lastsave_s;
static atomic_uint saves_running, rewrites_running, snaps_running;
static uint8_t log_kind[KV_MAX_COMMANDS];

/* Writes to a shard's db, ever (db.c counts them; read from any shard). */
static uint64_t db_changes(unsigned shard)
{
    return __atomic_load_n(&kv_db_of_shard(shard)->changes, __ATOMIC_RELAXED);
}

static uint64_t changes_since_save(unsigned shard)
{
    return db_changes(shard) - atomic_load_explicit(&P[shard].saved_changes, memory_order_relaxed);
}

/* Bytes of records made, ever: what went to the file and what waits. A
 * holder of the db may read it (the owner pumps only while it holds the
 * db itself). */
static uint64_t logged(const pshard *ps)
{
    return ps->pumped + ps->rec.len;
}

static pshard *here(void)
{
    return &P[keel_shard_id()];
}

static void free_ctx(void *ctx, keel_result r)
{
    (void)r;
    free(ctx);
}

/* keel_repeat's next turn after a wait. */
static keel_future *again(void *ctx, keel_result r)
{
    (void)ctx;
    (void)r;
    return keel_make_ready(KEEL_CONTINUE);
}

static void log_persist(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void log_persist(const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    kv_log("%s", msg);
}

static void update_on(void)
{
    bool on = atomic_load(&snaps_running) > 0;
    for (unsigned i = 0; i < nps && !on; i++)
        on = __atomic_load_n(&P[i].aof_on, __ATOMIC_RELAXED);
    __atomic_store_n(&kv_persist_on, on, __ATOMIC_RELAXED);
}

/* ---- records -------------------------------------------------------------------- */

static void add_cmd(resp_buf *b, size_t n, const char *name)
{
    resp_add_array(b, n);
    resp_add_bulk_cstr(b, name);
}

static void add_double(resp_buf *b, double d)
{
    char tmp[64];
    int n = snprintf(tmp, sizeof(tmp), "%.17g", d);
    resp_add_bulk(b, tmp, (size_t)n);
}

typedef struct batch {
    resp_buf *b;
    const kv_entry *e;
    const char *cmd;
    const char *el[128][2];
    size_t len[128][2];
    size_t n, per;
} batch;

static void batch_flush(batch *bt)
{
    if (!bt->n)
        return;
    add_cmd(bt->b, 2 + bt->n * bt->per, bt->cmd);
    resp_add_bulk(bt->b, kv_key(bt->e), bt->e->klen);
    for (size_t i = 0; i < bt->n; i++)
        for (size_t j = 0; j < bt->per; j++)
            resp_add_bulk(bt->b, bt->el[i][j], bt->len[i][j]);
    bt->n = 0;
}

static void batch_one(void *arg, const char *s, size_t n)
{
    batch *bt = arg;
    bt->el[bt->n][0] = s;
    bt->len[bt->n][0] = n;
    if (++bt->n == 128)
        batch_flush(bt);
}

void kv_persist_emit_entry(resp_buf *b, const kv_entry *e, bool del)
{
    const char *key = kv_key(e);
    if (del && e->type != KV_STRING) {
        add_cmd(b, 2, "DEL");
        resp_add_bulk(b, key, e->klen);
    }
    batch bt = {.b = b, .e = e, .per = 1};
    switch (e->type) {
    case KV_STRING:
        add_cmd(b, 3, "SET");
        resp_add_bulk(b, key, e->klen);
        resp_add_bulk(b, e->data + e->klen, e->vlen);
        break;
    case KV_LIST:
        bt.cmd = "RPUSH";
        kv_list_each(kv_obj(e), batch_one, &bt);
        batch_flush(&bt);
        break;
    case KV_SET:
        bt.cmd = "SADD";
        kv_set_each(kv_obj(e), batch_one, &bt);
        batch_flush(&bt);
        break;
    case KV_HASH: {
        bt.cmd = "HSET";
        bt.per = 2;
        kv_hash_iter it;
        kv_hash_iter_init(&it, kv_obj(e));
        const char *f, *v;
        size_t fl, vl;
        while (kv_hash_iter_next(&it, &f, &fl, &v, &vl)) {
            bt.el[bt.n][0] = f;
            bt.len[bt.n][0] = fl;
            bt.el[bt.n][1] = v;
            bt.len[bt.n][1] = vl;
            if (++bt.n == 128)
                batch_flush(&bt);
        }
        batch_flush(&bt);
        break;
    }
    case KV_ZSET: {
        /* Scores as text so they round-trip exactly ("%.17g"). */
        const kv_zset *z = kv_obj(e);
        size_t n = 0, done = 0, len = kv_zset_len(z);
        for (kv_zset_it it = kv_zset_at_rank(z, 0, false); kv_zset_it_valid(&it) && done < len;
             kv_zset_it_next(&it), done++) {
            if (n == 0) {
                size_t left = len - done;
                n = left < 128 ? left : 128;
                add_cmd(b, 2 + 2 * n, "ZADD");
                resp_add_bulk(b, key, e->klen);
            }
            size_t ml;
            const char *m = kv_zset_it_member(&it, &ml);
            add_double(b, kv_zset_it_score(&it));
            resp_add_bulk(b, m, ml);
            n--;
        }
        break;
    }
    }
    int64_t at = kv_expire_of(e);
    if (at >= 0) {
        add_cmd(b, 3, "PEXPIREAT");
        resp_add_bulk(b, key, e->klen);
        resp_add_bulk_ll(b, at);
    }
}

static void emit_del(resp_buf *b, const char *key, size_t klen)
{
    add_cmd(b, 2, "DEL");
    resp_add_bulk(b, key, klen);
}

/* ---- the scope of one command ----------------------------------------------------- */

typedef struct touched_key {
    kv_db *db;
    size_t off, len; /* in keys */
} touched_key;

static __thread struct {
    bool on, single, loading;
    int kind;
    size_t argc;
    const resp_arg *argv;
    touched_key *t;
    size_t n, cap;
    resp_buf keys;
} sc;

static kv_db *db_of_key(const char *key, size_t klen)
{
    return kv_db_of_shard(kv_shard_of(kv_hash(key, klen)));
}

static void begin(const kv_command *cmd, size_t argc, const resp_arg *argv, bool single,
                  bool local_only)
{
    sc.on = true;
    sc.argc = argc;
    sc.argv = argv;
    sc.single = single;
    sc.kind = log_kind[kv_command_id(cmd)];
    if (sc.kind == LOG_VERBATIM && !strcmp(cmd->name, "set") && argc > 3)
        sc.kind = LOG_STATE; /* EX/PX are relative: log the value and its PEXPIREAT */
    sc.n = 0;
    resp_buf_clear(&sc.keys);
    if (atomic_load_explicit(&snaps_running, memory_order_relaxed)) {
        /* Copy-on-write: keys this command may change, as they are now. */
        size_t idx[256];
        int nk = (cmd->flags & KV_CMD_ALL_SHARDS) ? 0 : kv_command_keys(cmd, argc, argv, idx, 256);
        if (nk == 256) {
            /* More keys than tracked: the snapshots this command can
             * reach finish their walk now. */
            for (unsigned i = 0; i < nps; i++) {
                bool held = i == keel_shard_id() || (!single && !local_only);
                if (P[i].snap && held)
                    kv_snapshot_cow_all(P[i].snap, kv_db_of_shard(i));
            }
            nk = 0;
        }
        for (int i = 0; i < nk; i++) {
            const resp_arg *k = &argv[idx[i]];
            kv_db *db = db_of_key(k->ptr, k->len);
            pshard *ps = &P[db->id];
            if (ps->snap && (!local_only || db->id == keel_shard_id()))
                kv_snapshot_cow(ps->snap, db, k->ptr, k->len);
        }
    }
}

void kv_persist_begin(const kv_command *cmd, size_t argc, const resp_arg *argv, bool single)
{
    if (!sc.loading)
        begin(cmd, argc, argv, single, false);
}

void kv_persist_begin_served(const kv_command *cmd, size_t argc, const resp_arg *argv)
{
    if (!sc.loading)
        begin(cmd, argc, argv, false, true);
}

void kv_persist_touch(kv_db *db, const char *key, size_t klen)
{
    if (sc.loading)
        return;
    pshard *ps = &P[db->id];
    if (!ps->aof_on && !ps->diff_on)
        return;
    if (!sc.on) {
        /* A write outside any command (a blocked client served): its
         * key's state. */
        kv_entry *e = kv_db_peek(db, key, klen);
        if (e)
            kv_persist_emit_entry(&ps->rec, e, true);
        else
            emit_del(&ps->rec, key, klen);
        return;
    }
    if (sc.kind == LOG_VERBATIM && sc.single) {
        if (sc.n == 0) {
            if (!sc.cap && !(sc.t = malloc(8 * sizeof(*sc.t))))
                return; /* out of memory: not logged, as with a full disk */
            sc.cap = sc.cap ? sc.cap : 8;
            sc.t[0].db = db;
            sc.n = 1;
        }
        return;
    }
    for (size_t i = 0; i < sc.n && i < 16; i++)
        if (sc.t[i].db == db && sc.t[i].len == klen &&
            !memcmp(sc.keys.data + sc.t[i].off, key, klen))
            return;
    if (sc.n == sc.cap) {
        size_t cap = sc.cap ? sc.cap * 2 : 8;
        touched_key *t = realloc(sc.t, cap * sizeof(*t));
        if (!t)
            return;
        sc.t = t;
        sc.cap = cap;
    }
    sc.t[sc.n++] = (touched_key){db, sc.keys.len, klen};
    resp_add_raw(&sc.keys, key, klen);
}

static void log_state(resp_buf *b, kv_db *db, const char *key, size_t klen, int kind)
{
    kv_entry *e = kv_db_peek(db, key, klen);
    int64_t at = e ? kv_expire_of(e) : -1;
    if (!e || (at >= 0 && at <= kv_now_ms())) {
        emit_del(b, key, klen);
    } else if (kind == LOG_TTL) {
        add_cmd(b, at >= 0 ? 3 : 2, at >= 0 ? "PEXPIREAT" : "PERSIST");
        resp_add_bulk(b, key, klen);
        if (at >= 0)
            resp_add_bulk_ll(b, at);
    } else {
        kv_persist_emit_entry(b, e, true);
    }
}

static void need_add(kv_persist_need *need, unsigned shard, uint64_t at)
{
    if (!need->any) {
        memset(need->shards, 0, sizeof(need->shards));
        need->any = true;
    }
    need->shards[shard / 64] |= 1ull << (shard % 64);
    need->at[shard] = at;
}

void kv_persist_need_merge(kv_persist_need *dst, const kv_persist_need *src)
{
    if (!src->any)
        return;
    for (unsigned w = 0; w < KEEL_MAX_SHARDS / 64; w++)
        for (uint64_t b = src->shards[w]; b; b &= b - 1) {
            unsigned i = w * 64 + (unsigned)__builtin_ctzll(b);
            need_add(dst, i, src->at[i]);
        }
}

void kv_persist_end(kv_persist_need *need)
{
    need->any = false;
    if (!sc.on)
        return;
    sc.on = false;
    if (!sc.n)
        return;
    if (sc.kind == LOG_VERBATIM && sc.single) {
        kv_db *db = sc.t[0].db;
        pshard *ps = &P[db->id];
        if (!ps->aof_on && !ps->diff_on)
            return;
        resp_add_array(&ps->rec, sc.argc);
        for (size_t i = 0; i < sc.argc; i++)
            resp_add_bulk(&ps->rec, sc.argv[i].ptr, sc.argv[i].len);
        if (ps->aof_on)
            need_add(need, db->id, logged(ps));
    } else {
        for (size_t i = 0; i < sc.n; i++) {
            kv_db *db = sc.t[i].db;
            pshard *ps = &P[db->id];
            if (!ps->aof_on && !ps->diff_on)
                continue;
            log_state(&ps->rec, db, sc.keys.data + sc.t[i].off, sc.t[i].len, sc.kind);
            if (ps->aof_on)
                need_add(need, db->id, logged(ps));
        }
    }
    sc.n = 0;
    /* The local db's records go to the file now, unless a coordinator
     * holds it (its release pumps). */
    if (!kv_gate_locked())
        kv_persist_pump();
}

void kv_persist_before_delete(kv_db *db, const kv_entry *e)
{
    pshard *ps = &P[db->id];
    if (ps->snap)
        kv_snapshot_cow_entry(ps->snap, e);
    if (ps->aof_on || ps->diff_on) {
        emit_del(&ps->rec, kv_key(e), e->klen);
    }
}

void kv_persist_before_flush(kv_db *db)
{
    pshard *ps = &P[db->id];
    if (sc.loading)
        return;
    if (ps->snap)
        kv_snapshot_cow_all(ps->snap, db);
    if (ps->aof_on || ps->diff_on) {
        add_cmd(&ps->rec, 1, "FLUSHDB");
    }
}

/* ---- the AOF: pump, sync, waiters, errors ------------------------------------------- */

/* Replies to writes wait on one of two channels: "written" (the record
 * reached the kernel, so the process may die: appendfsync everysec and no,
 * as Redis writes its AOF before it replies) or "durable" (fdatasync'ed:
 * appendfsync always). Each keeps one operation in flight; waiters that
 * arrive meanwhile share the next one. */
static void kick(pshard *ps, channel *ch);

static void resolve(channel *ch, int err)
{
    pwait **pp = &ch->waiters;
    while (*pp) {
        pwait *w = *pp;
        if (err || w->target <= ch->done) {
            *pp = w->next;
            keel_promise_resolve(&w->p, err ? keel_err(err) : keel_ok(0));
            free(w);
        } else {
            pp = &w->next;
        }
    }
}

static void resolve_waiters(pshard *ps, int err)
{
    resolve(&ps->wr, err);
    resolve(&ps->dur, err);
}

static void set_error(pshard *ps, int err)
{
    if (!ps->err) {
        atomic_fetch_add(&failing, 1);
        log_persist("error writing the append-only file: %s; write commands get -MISCONF "
                    "until it can be written again (retried every second)",
                    keel_strerror(err));
    }
    ps->err = err;
    atomic_store(&fail_errno, -err);
}

static void clear_error(pshard *ps)
{
    if (!ps->err)
        return;
    ps->err = 0;
    atomic_fetch_sub(&failing, 1);
    log_persist("the append-only file can be written again: write commands are accepted");
}

static void kick_all(pshard *ps)
{
    kick(ps, &ps->wr);
    kick(ps, &ps->dur);
}

void kv_persist_pump(void)
{
    if (!P)
        return;
    pshard *ps = here();
    if (ps->snap)
        kv_snapshot_pump(ps->snap);
    if (!ps->rec.len)
        return;
    if (ps->aof && keel_appender_append(ps->aof, ps->rec.data, ps->rec.len))
        set_error(ps, -ENOMEM);
    if (ps->diff_on)
        resp_add_raw(&ps->diff, ps->rec.data, ps->rec.len);
    ps->pumped += ps->rec.len;
    if (ps->aof)
        atomic_store_explicit(&ps->aof_size, keel_appender_offset(ps->aof), memory_order_relaxed);
    if (ps->rec.cap > (1u << 20))
        resp_buf_free(&ps->rec);
    else
        resp_buf_clear(&ps->rec);
    kick_all(ps);
}

static void op_done(pshard *ps, channel *ch, keel_result r)
{
    ch->busy = false;
    if (r.err) {
        set_error(ps, (int)r.err);
        return;
    }
    if (ch == &ps->dur)
        clear_error(ps); /* a sync that succeeds proves the file writable */
    if (ch->target > ch->done)
        ch->done = ch->target;
    if (ps->dur.done > ps->wr.done)
        ps->wr.done = ps->dur.done; /* durable is written too */
    resolve(&ps->wr, 0);
    resolve(&ps->dur, 0);
    kick_all(ps);
}

static void sync_done(void *ctx, keel_result r)
{
    pshard *ps = ctx;
    op_done(ps, &ps->dur, r);
}

static void write_done(void *ctx, keel_result r)
{
    pshard *ps = ctx;
    op_done(ps, &ps->wr, r);
}

static void start_sync(pshard *ps)
{
    ps->dur.busy = true;
    ps->dur.target = ps->pumped;
    ps->last_sync_ms = kv_now_ms();
    keel_on_done(keel_appender_flush(ps->aof), sync_done, ps);
}

/* The durable channel also syncs when nobody waits (everysec). */
static void kick_sync(pshard *ps)
{
    if (ps->dur.busy || ps->switching || !ps->aof || ps->err || ps->dur.done >= ps->pumped)
        return;
    start_sync(ps);
}

static void kick(pshard *ps, channel *ch)
{
    if (!ch->waiters || ch->busy || ps->switching || !ps->aof || ps->err)
        return;
    if (ch->done >= ps->pumped) {
        resolve(ch, 0);
        return;
    }
    if (ch == &ps->dur) {
        start_sync(ps);
        return;
    }
    ch->busy = true;
    ch->target = ps->pumped;
    keel_on_done(keel_appender_write_out(ps->aof), write_done, ps);
}

static keel_future *wait_here(uint64_t target)
{
    pshard *ps = here();
    channel *ch = kv_pcfg.appendfsync == FSYNC_ALWAYS ? &ps->dur : &ps->wr;
    if (target <= ch->done || !ps->aof)
        return keel_make_ready(0);
    pwait *w = malloc(sizeof(*w));
    if (!w)
        return keel_make_error(-ENOMEM);
    w->target = target;
    w->next = ch->waiters;
    ch->waiters = w;
    keel_future *f = keel_promise_init(&w->p);
    kick(ps, ch);
    return f;
}

static keel_future *wait_remote(void *arg)
{
    return wait_here((uint64_t)(uintptr_t)arg);
}

keel_future *kv_persist_wait(unsigned shard, uint64_t target)
{
    if (shard == keel_shard_id())
        return wait_here(target);
    return keel_submit_to(shard, wait_remote, (void *)(uintptr_t)target);
}

typedef struct wait_all {
    kv_persist_need need;
    unsigned next;
} wait_all;

static keel_future *wait_next(void *ctx, keel_result r)
{
    wait_all *wa = ctx;
    (void)r;
    for (; wa->next < nps; wa->next++) {
        unsigned i = wa->next;
        if ((wa->need.shards[i / 64] >> (i % 64)) & 1) {
            wa->next++;
            return keel_then_wrapped(kv_persist_wait(i, wa->need.at[i]), wait_next, wa);
        }
    }
    return keel_make_ready(0);
}

keel_future *kv_persist_wait_all(const kv_persist_need *need)
{
    wait_all *wa = malloc(sizeof(*wa));
    if (!wa)
        return keel_make_error(-ENOMEM);
    wa->need = *need;
    wa->next = 0;
    return keel_finally(wait_next(wa, keel_ok(0)), free_ctx, wa);
}

const char *kv_persist_write_error(void)
{
    static __thread char msg[160];
    if (atomic_load_explicit(&failing, memory_order_relaxed)) {
        snprintf(msg, sizeof(msg), "MISCONF Errors writing to the AOF file: %s",
                 strerror(atomic_load(&fail_errno)));
        return msg;
    }
    /* As Redis: only while save rules are set (a failed manual BGSAVE
     * alone does not stop writes). */
    if (kv_pcfg.stop_writes_on_bgsave_error && kv_pcfg.nsave &&
        atomic_load_explicit(&bgsave_failed, memory_order_relaxed))
        return "MISCONF Redis is configured to save RDB snapshots, but it's currently unable to "
               "persist to disk. Commands that may modify the data set are disabled, because "
               "this instance is configured to report errors during writes if RDB snapshotting "
               "fails (stop-writes-on-bgsave-error option). Please check the Redis logs for "
               "details about the RDB error.";
    return NULL;
}

/* ---- paths --------------------------------------------------------------------------- */

static void path_of(char *out, size_t n, bool aof, unsigned shard, const char *suffix)
{
    const char *dir = *kv_pcfg.dir ? kv_pcfg.dir : ".";
    if (aof)
        snprintf(out, n, "%s/%s/%s.%u%s", dir, kv_pcfg.appenddirname, kv_pcfg.appendfilename, shard,
                 suffix);
    else
        snprintf(out, n, "%s/%s.%u%s", dir, kv_pcfg.dbfilename, shard, suffix);
}

static void add_header(resp_buf *b, const char *kind)
{
    char s[16], n[16];
    snprintf(s, sizeof(s), "%u", keel_shard_id());
    snprintf(n, sizeof(n), "%u", keel_shard_count());
    add_cmd(b, 4, "KEEL-KV");
    resp_add_bulk_cstr(b, kind);
    resp_add_bulk_cstr(b, s);
    resp_add_bulk_cstr(b, n);
}

/* rename(2), then fsync of the directory so the new name survives a crash. */
typedef struct rename_job {
    char from[4096], to[4096];
} rename_job;

static keel_result rename_durably(void *arg)
{
    rename_job *j = arg;
    if (rename(j->from, j->to))
        return keel_err(-errno);
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s", j->to);
    char *slash = strrchr(dir, '/');
    if (slash)
        *slash = 0;
    int fd = open(slash ? dir : ".", O_RDONLY | O_DIRECTORY);
    if (fd < 0)
        return keel_err(-errno);
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    return rc ? keel_err(-e) : keel_ok(0);
}

static keel_future *rename_file(const char *from, const char *to)
{
    rename_job *j = malloc(sizeof(*j));
    if (!j)
        return keel_make_error(-ENOMEM);
    snprintf(j->from, sizeof(j->from), "%s", from);
    snprintf(j->to, sizeof(j->to), "%s", to);
    return keel_finally(keel_run_blocking(rename_durably, j), free_ctx, j);
}

/* ---- snapshots: BGSAVE and rewrite --------------------------------------------------- */

/* One snapshot job on this shard: a save (to dbfilename.N) or a rewrite
 * (to the AOF). */
typedef struct job {
    pshard *ps;
    bool rewrite;
    char tmp[4096], final[4096];
    keel_file *file;
    keel_appender *out;
    keel_file *old_file;
    keel_appender *old_aof;
    keel_future *walk; /* the snapshot's, set by begin_walk */
    bool created;      /* a rewrite that creates the AOF (there was none) */
    keel_promise done;
    int err;
    int64_t t0;
} job;

void kv_persist_snapshot_ended(kv_db *db)
{
    pshard *ps = &P[db->id];
    ps->snap = NULL;
    atomic_fetch_sub(&snaps_running, 1);
    update_on();
}

static void job_end(job *j, int err)
{
    pshard *ps = j->ps;
    ps->snap_kind = SNAP_NONE;
    double secs = (double)(kv_now_ms() - j->t0) / 1000.0;
    if (j->rewrite) {
        atomic_fetch_sub(&rewrites_running, 1);
        ps->rewrite_ok = !err;
        if (err)
            log_persist("append-only file rewrite failed: %s", keel_strerror(err));
        else
            log_persist("append-only file %s: %s, %llu bytes, in %.2f s",
                        j->created ? "created" : "rewritten", j->final,
                        (unsigned long long)ps->base_size, secs);
    } else {
        atomic_fetch_sub(&saves_running, 1);
        ps->bgsave_ok = !err;
        if (err) {
            atomic_store(&bgsave_failed, true);
            log_persist("snapshot failed: %s", keel_strerror(err));
        } else {
            ps->last_save_ms = kv_now_ms();
            atomic_store(&lastsave_s, ps->last_save_ms / 1000);
            atomic_store(&ps->saved_changes, ps->changes_at_start);
            bool all_ok = true;
            for (unsigned i = 0; i < nps; i++)
                all_ok &= P[i].bgsave_ok || P[i].snap_kind == SNAP_SAVE;
            if (all_ok)
                atomic_store(&bgsave_failed, false);
            log_persist("snapshot saved: %s in %.2f s", j->final, secs);
        }
    }
    keel_promise_resolve(&j->done, err ? keel_err(err) : keel_ok(0));
    free(j);
}

static keel_future *close_file_step(void *ctx, keel_result r)
{
    job *j = ctx;
    if (r.err && !j->err)
        j->err = (int)r.err;
    keel_file *f = j->file;
    j->file = NULL;
    return f ? keel_file_close(f) : keel_make_ready(0);
}

/* Closes the job's appender and file; the first error lands in j->err. */
static keel_future *job_close(job *j)
{
    keel_future *f = j->out ? keel_appender_close(j->out) : keel_make_ready(0);
    j->out = NULL;
    return keel_then_wrapped(f, close_file_step, j);
}

static void failed_closed(void *ctx, keel_result r)
{
    job *j = ctx;
    (void)r;
    unlink(j->tmp);
    job_end(j, j->err);
}

static void job_fail(job *j, int err)
{
    pshard *ps = j->ps;
    j->err = err;
    if (j->rewrite) {
        ps->diff_on = false;
        resp_buf_free(&ps->diff);
        if (!ps->aof) {
            ps->aof_on = false; /* turning the AOF on failed */
            update_on();
        }
    }
    keel_on_done(job_close(j), failed_closed, j);
}

/* Steps that must hold the db run through the shard's gate. */
static void begin_walk(void *arg)
{
    job *j = arg;
    pshard *ps = j->ps;
    kv_persist_pump(); /* what came before the moment is in the old file */
    resp_buf hdr;
    resp_buf_init(&hdr);
    add_header(&hdr, j->rewrite ? "aof" : "snapshot");
    keel_appender_append(j->out, hdr.data, hdr.len);
    resp_buf_free(&hdr);
    if (j->rewrite) {
        ps->diff_on = true;
        resp_buf_clear(&ps->diff);
        ps->aof_on = true;
    }
    ps->changes_at_start = db_changes(keel_shard_id());
    atomic_fetch_add(&snaps_running, 1);
    update_on();
    j->walk = kv_snapshot_run(kv_db_of_shard(keel_shard_id()), j->out, &ps->snap);
}

static void job_step_failed(job *j, keel_result r)
{
    job_fail(j, r.err ? (int)r.err : -EIO);
}

/* Save: walked → durable → closed → renamed. */
static void save_renamed(void *ctx, keel_result r)
{
    job *j = ctx;
    if (r.err) {
        unlink(j->tmp);
        job_end(j, (int)r.err);
        return;
    }
    job_end(j, 0);
}

static void save_closed(void *ctx, keel_result r)
{
    job *j = ctx;
    if (r.err || j->err) {
        unlink(j->tmp);
        job_end(j, j->err ? j->err : (int)r.err);
        return;
    }
    keel_on_done(rename_file(j->tmp, j->final), save_renamed, j);
}

static keel_future *close_after_flush(void *ctx, keel_result r)
{
    job *j = ctx;
    if (r.err && !j->err)
        j->err = (int)r.err;
    return job_close(j);
}

/* Rewrite: walked → durable → diff appended → durable → switched → durable
 * → renamed. Acknowledgements wait while the new file has no name yet. */
static void old_closed(void *ctx, keel_result r)
{
    (void)r;
    keel_file *f = ctx;
    if (f)
        keel_detach(keel_file_close(f));
}

static void rewrite_renamed(void *ctx, keel_result r)
{
    job *j = ctx;
    pshard *ps = j->ps;
    ps->switching = false;
    if (r.err) {
        /* The new file lives under its temporary name: writes stop until
         * an operator looks (the old file still has every acknowledged
         * write up to the switch). */
        set_error(ps, (int)r.err);
        log_persist("cannot rename %s to %s: %s", j->tmp, j->final, keel_strerror((int)r.err));
    }
    if (j->old_aof)
        keel_on_done(keel_appender_close(j->old_aof), old_closed, j->old_file);
    else if (j->old_file)
        keel_detach(keel_file_close(j->old_file));
    j->old_aof = NULL;
    j->old_file = NULL;
    kick_all(ps);
    job_end(j, (int)r.err);
}

static void switched_durable(void *ctx, keel_result r)
{
    job *j = ctx;
    if (r.err) {
        /* The new file is the AOF now; its error is the AOF's. */
        set_error(j->ps, (int)r.err);
    }
    keel_on_done(rename_file(j->tmp, j->final), rewrite_renamed, j);
}

static void do_switch(void *arg)
{
    job *j = arg;
    pshard *ps = j->ps;
    kv_persist_pump();
    if (ps->diff.len)
        keel_appender_append(j->out, ps->diff.data, ps->diff.len);
    ps->diff_on = false;
    resp_buf_free(&ps->diff);
    j->old_aof = ps->aof;
    j->old_file = ps->file;
    ps->aof = j->out;
    ps->file = j->file;
    j->out = NULL;
    j->file = NULL;
    ps->switching = true;
    ps->base_size = keel_appender_offset(ps->aof);
}

static keel_future *switch_now(void *ctx, keel_result r)
{
    job *j = ctx;
    (void)r;
    return kv_run_on(keel_shard_id(), do_switch, j);
}

static void append_diff(void *arg)
{
    job *j = arg;
    pshard *ps = j->ps;
    kv_persist_pump();
    if (ps->diff.len)
        keel_appender_append(j->out, ps->diff.data, ps->diff.len);
    resp_buf_clear(&ps->diff);
}

static void after_switch(void *ctx, keel_result r)
{
    job *j = ctx;
    if (r.err) {
        job_step_failed(j, r);
        return;
    }
    keel_on_done(keel_appender_flush(j->ps->aof), switched_durable, j);
}

static keel_future *flush_out(void *ctx, keel_result r)
{
    job *j = ctx;
    (void)r;
    return keel_appender_flush(j->out);
}

static keel_future *diff_now(void *ctx, keel_result r)
{
    job *j = ctx;
    (void)r;
    return kv_run_on(keel_shard_id(), append_diff, j);
}

static void walked(void *ctx, keel_result r)
{
    job *j = ctx;
    if (r.err) {
        job_step_failed(j, r);
        return;
    }
    if (!j->rewrite) {
        keel_on_done(keel_then_wrapped(keel_appender_flush(j->out), close_after_flush, j),
                     save_closed, j);
        return;
    }
    keel_future *f = keel_then(keel_appender_flush(j->out), diff_now, j);
    f = keel_then(f, flush_out, j);
    keel_on_done(keel_then(f, switch_now, j), after_switch, j);
}

static keel_future *walk_started(void *ctx, keel_result r)
{
    job *j = ctx;
    (void)r;
    keel_future *f = j->walk;
    j->walk = NULL;
    return f;
}

static void opened(void *ctx, keel_result r)
{
    job *j = ctx;
    if (r.err) {
        log_persist("cannot create %s: %s", j->tmp, keel_strerror((int)r.err));
        job_fail(j, (int)r.err);
        return;
    }
    j->file = r.ptr;
    if (!(j->out = keel_appender_new(j->file, 0, 0))) {
        job_fail(j, -ENOMEM);
        return;
    }
    keel_on_done(keel_then(kv_run_on(keel_shard_id(), begin_walk, j), walk_started, j), walked, j);
}

static keel_future *open_tmp(void *ctx, keel_result r)
{
    job *j = ctx;
    if (r.err && r.err != -EEXIST)
        return keel_make_error((int)r.err);
    return keel_file_open(
        j->tmp, KEEL_FILE_WRITE | KEEL_FILE_CREATE | KEEL_FILE_TRUNCATE | KEEL_FILE_BUFFERED, 0644);
}

/* Starts a save or a rewrite on this shard; resolves when it ended (0 or
 * -errno; -EBUSY if one runs). */
static keel_future *start_job(bool rewrite)
{
    pshard *ps = here();
    if (ps->snap_kind != SNAP_NONE)
        return keel_make_error(-EBUSY);
    job *j = calloc(1, sizeof(*j));
    if (!j)
        return keel_make_error(-ENOMEM);
    j->ps = ps;
    j->rewrite = rewrite;
    j->t0 = kv_now_ms();
    path_of(j->final, sizeof(j->final), rewrite, keel_shard_id(), "");
    path_of(j->tmp, sizeof(j->tmp), rewrite, keel_shard_id(), rewrite ? ".rewrite" : ".tmp");
    ps->snap_kind = rewrite ? SNAP_REWRITE : SNAP_SAVE;
    j->created = rewrite && !ps->aof;
    if (rewrite) {
        ps->rewrite_pending = false;
        atomic_fetch_add(&rewrites_running, 1);
    } else {
        ps->last_bgsave_try_ms = j->t0;
        atomic_fetch_add(&saves_running, 1);
    }
    keel_future *f = keel_promise_init(&j->done);
    keel_future *dir;
    if (rewrite) {
        char d[4096];
        snprintf(d, sizeof(d), "%s/%s", *kv_pcfg.dir ? kv_pcfg.dir : ".", kv_pcfg.appenddirname);
        dir = keel_fs_mkdir(d, 0755);
    } else {
        dir = keel_make_ready(0);
    }
    keel_on_done(keel_then_wrapped(dir, open_tmp, j), opened, j);
    return f;
}

/* ---- loading ------------------------------------------------------------------------ */

typedef struct loader {
    pshard *ps;
    char path[4096];
    bool aof;
    keel_file *file;
    keel_reader *rd;
    char *buf;
    size_t len, cap;
    uint64_t off; /* file offset of buf[0] */
    uint64_t size;
    resp_parser parser;
    resp_buf scratch;
    uint64_t cmds, errors;
    bool header, yielded;
    int64_t t0;
    int err;
    keel_promise done;
} loader;

static void load_free(loader *l)
{
    resp_parser_free(&l->parser);
    resp_buf_free(&l->scratch);
    free(l->buf);
    free(l);
}

static int run_record(loader *l, size_t argc, const resp_arg *argv)
{
    if (!l->header) {
        if (argc != 4 || argv[0].len != 7 || memcmp(argv[0].ptr, "KEEL-KV", 7))
            return -EPROTO;
        unsigned n = (unsigned)strtoul(argv[3].ptr, NULL, 10);
        if (n != keel_shard_count()) {
            fprintf(stderr,
                    "keel-kv: %s was written by keel-kv running %u shards, and this one runs "
                    "%u: start it with --shards %u (each shard loads its own file)\n",
                    l->path, n, keel_shard_count(), n);
            return -EINVAL;
        }
        l->header = true;
        return 0;
    }
    const kv_command *cmd = kv_command_lookup(argv[0].ptr, argv[0].len);
    if (!cmd)
        return -EPROTO;
    if (cmd->flags & KV_CMD_ALL_SHARDS) {
        /* FLUSHDB/FLUSHALL in a shard's file mean that shard's keys. */
        kv_db_flush(kv_db_of_shard(keel_shard_id()));
        return 0;
    }
    if (!cmd->fn || (cmd->arity > 0 && (size_t)cmd->arity != argc) ||
        (cmd->arity < 0 && argc < (size_t)-cmd->arity))
        return -EPROTO;
    resp_buf_clear(&l->scratch);
    kv_cmd_ctx x = {.out = &l->scratch, .proto = 2, .now_ms = kv_now_ms(), .flags = KV_CTX_MULTI};
    cmd->fn(&x, argc, argv);
    l->cmds++;
    if (l->scratch.len && l->scratch.data[0] == '-' && l->errors++ < 3)
        kv_log("%s: record %llu (%s) failed: %.*s", l->path, (unsigned long long)l->cmds, cmd->name,
               (int)(l->scratch.len > 2 ? l->scratch.len - 2 : 0), l->scratch.data);
    return 0;
}

static keel_future *load_step(void *arg);

static keel_future *load_got(void *ctx, keel_result r)
{
    loader *l = ctx;
    if (r.err) {
        l->err = (int)r.err;
        return keel_make_ready(KEEL_STOP);
    }
    if (r.val == 0) {
        l->size = l->off + l->len; /* the end */
        return keel_make_ready(KEEL_STOP);
    }
    l->len += (size_t)r.val;
    return keel_make_ready(KEEL_CONTINUE);
}

static keel_future *load_step(void *arg)
{
    loader *l = arg;
    size_t pos = 0;
    for (;;) {
        resp_cmd c;
        const char *why;
        ssize_t n = resp_parse(&l->parser, l->buf + pos, l->len - pos, &c, &why);
        if (n < 0) {
            l->err = -EPROTO;
            break;
        }
        if (n == 0)
            break;
        if (c.argc) {
            int e = run_record(l, c.argc, c.argv);
            if (e) {
                l->err = e;
                break;
            }
        }
        pos += (size_t)n;
        /* A long load yields like any task (timers, the stall detector). */
        if (keel_need_preempt()) {
            l->yielded = true;
            break;
        }
    }
    /* Keep the incomplete command at the front, and room for what it needs. */
    if (pos)
        memmove(l->buf, l->buf + pos, l->len - pos);
    l->len -= pos;
    l->off += pos;
    if (l->err)
        return keel_make_ready(KEEL_STOP);
    if (l->yielded) {
        l->yielded = false;
        return keel_then_wrapped(keel_yield(), again, l);
    }
    size_t want = l->len + (resp_parse_need(&l->parser) > (256u << 10) ? resp_parse_need(&l->parser)
                                                                       : (256u << 10));
    if (want > l->cap) {
        char *nb = realloc(l->buf, want);
        if (!nb) {
            l->err = -ENOMEM;
            return keel_make_ready(KEEL_STOP);
        }
        l->buf = nb;
        l->cap = want;
    }
    return keel_then_wrapped(keel_reader_read(l->rd, l->buf + l->len, l->cap - l->len), load_got,
                             l);
}

/* Copies the bad tail of a file aside before it is cut, so nothing is
 * thrown away unseen. */
typedef struct tail_job {
    char path[4096], saved[4200];
    uint64_t from;
} tail_job;

static keel_result save_tail(void *arg)
{
    tail_job *t = arg;
    int in = open(t->path, O_RDONLY);
    if (in < 0)
        return keel_err(-errno);
    int out = open(t->saved, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (out < 0) {
        int e = errno;
        close(in);
        return keel_err(-e);
    }
    char buf[65536];
    off_t at = (off_t)t->from;
    ssize_t n;
    int err = 0;
    while ((n = pread(in, buf, sizeof(buf), at)) > 0) {
        if (write(out, buf, (size_t)n) != n) {
            err = -EIO;
            break;
        }
        at += n;
    }
    if (n < 0)
        err = -errno;
    if (!err && fsync(out))
        err = -errno;
    close(in);
    close(out);
    if (!err && truncate(t->path, (off_t)t->from))
        err = -errno;
    return err ? keel_err(err) : keel_ok(0);
}

typedef struct start {
    loader *l;
    uint64_t end; /* where the AOF goes on */
    bool loaded_aof, failed;
} start;

static void print_load(loader *l)
{
    double secs = (double)(kv_now_ms() - l->t0) / 1000.0;
    kv_log("loaded %zu keys from %s (%llu commands, %llu bytes) in %.3f s",
           kv_db_size(kv_db_of_shard(keel_shard_id())), l->path, (unsigned long long)l->cmds,
           (unsigned long long)l->off, secs);
}

static keel_future *tail_cut(void *ctx, keel_result r)
{
    start *st = ctx;
    loader *l = st->l;
    if (r.err) {
        fprintf(stderr, "keel-kv: cannot cut the bad tail of %s: %s\n", l->path,
                keel_strerror((int)r.err));
        return keel_make_error((int)r.err);
    }
    st->end = l->off;
    print_load(l);
    return keel_make_ready(0);
}

static keel_future *loaded(void *ctx, keel_result r)
{
    start *st = ctx;
    loader *l = st->l;
    sc.loading = false;
    if (r.err && !l->err)
        l->err = (int)r.err;
    uint64_t bad = l->size > l->off ? l->size - l->off : l->len;
    if (l->err == -EINVAL)
        return keel_make_error(-EINVAL); /* already explained */
    if (l->err && l->err != -EPROTO) {
        fprintf(stderr, "keel-kv: cannot read %s: %s\n", l->path, keel_strerror(l->err));
        return keel_make_error(l->err);
    }
    if (!l->err && !l->len) {
        st->end = l->off;
        print_load(l);
        return keel_make_ready(0);
    }
    /* A bad tail: an incomplete last command (the process died in the
     * middle of a write), or bytes that are no command at all. */
    bool truncated = !l->err;
    const char *what = truncated ? "ends with an incomplete command" : "is corrupt";
    if ((truncated && l->aof && kv_pcfg.aof_load_truncated) || kv_pcfg.aof_fix_corrupt_tail) {
        tail_job *t = malloc(sizeof(*t));
        if (!t)
            return keel_make_error(-ENOMEM);
        snprintf(t->path, sizeof(t->path), "%s", l->path);
        snprintf(t->saved, sizeof(t->saved), "%s.bad-tail", l->path);
        t->from = l->off;
        kv_log("WARNING: %s %s at byte %llu: loading the %llu commands before it and cutting "
               "the last %llu bytes (saved to %s)%s",
               l->path, what, (unsigned long long)l->off, (unsigned long long)l->cmds,
               (unsigned long long)bad, t->saved,
               truncated ? " (aof-load-truncated yes)" : " (aof-fix-corrupt-tail yes)");
        return keel_then_wrapped(keel_finally(keel_run_blocking(save_tail, t), free_ctx, t),
                                 tail_cut, st);
    }
    fprintf(stderr,
            "keel-kv: %s %s at byte %llu of %llu (%llu commands before it are fine).\n"
            "keel-kv: not starting on a damaged file. Keep a copy of it, then either start "
            "with --aof-fix-corrupt-tail yes%s to cut the last %llu bytes (they are saved to "
            "%s.bad-tail), or repair it by hand.\n",
            l->path, what, (unsigned long long)l->off, (unsigned long long)(l->off + bad),
            (unsigned long long)l->cmds,
            truncated && l->aof ? " (or --aof-load-truncated yes)" : "", (unsigned long long)bad,
            l->path);
    return keel_make_error(-EPROTO);
}

static keel_future *got_size(void *ctx, keel_result r)
{
    loader *l = ctx;
    if (!r.err)
        l->size = (uint64_t)r.val;
    return keel_repeat(load_step, l);
}

static keel_future *load_opened(void *ctx, keel_result r)
{
    start *st = ctx;
    loader *l = st->l;
    if (r.err) {
        fprintf(stderr, "keel-kv: cannot open %s: %s\n", l->path, keel_strerror((int)r.err));
        return keel_make_error((int)r.err);
    }
    l->file = r.ptr;
    if (!(l->rd = keel_reader_new(l->file, 0, 0, 0)))
        return keel_make_error(-ENOMEM);
    sc.loading = true;
    return keel_then_wrapped(keel_then(keel_file_size(l->file), got_size, l), loaded, st);
}

static keel_future *create_aof(void *ctx, keel_result r)
{
    (void)ctx;
    (void)r;
    return start_job(true);
}

static keel_future *reader_closed(void *ctx, keel_result r)
{
    start *st = ctx;
    (void)r;
    loader *l = st->l;
    l->rd = NULL;
    pshard *ps = here();
    if (st->loaded_aof && kv_pcfg.appendonly) {
        /* The loaded AOF goes on where its last good command ended. */
        ps->file = l->file;
        l->file = NULL;
        if (!(ps->aof = keel_appender_new(ps->file, st->end, 0)))
            return keel_make_error(-ENOMEM);
        ps->base_size = st->end;
        ps->aof_on = true;
        update_on();
        return keel_make_ready(0);
    }
    keel_future *f = l->file ? keel_file_close(l->file) : keel_make_ready(0);
    l->file = NULL;
    if (!kv_pcfg.appendonly)
        return f;
    /* No AOF yet: write one from what is loaded (maybe nothing). */
    return keel_then_wrapped(f, create_aof, NULL);
}

static keel_future *fail_after_close(void *ctx, keel_result r)
{
    start *st = ctx;
    (void)r;
    return keel_make_error(st->l->err ? st->l->err : -EIO);
}

static keel_future *after_reader(void *ctx, keel_result r)
{
    start *st = ctx;
    loader *l = st->l;
    (void)r;
    if (st->l->err == 0 && !st->failed)
        return reader_closed(st, keel_ok(0));
    l->rd = NULL;
    keel_future *f = l->file ? keel_file_close(l->file) : keel_make_ready(0);
    l->file = NULL;
    return keel_then_wrapped(f, fail_after_close, st);
}

static keel_future *finish_load(void *ctx, keel_result r)
{
    start *st = ctx;
    loader *l = st->l;
    sc.loading = false;
    if (r.err) {
        st->failed = true;
        if (!l->err)
            l->err = (int)r.err;
    } else {
        l->err = 0; /* a bad tail that was cut */
    }
    keel_future *f = l->rd ? keel_reader_close(l->rd) : keel_make_ready(0);
    return keel_then_wrapped(f, after_reader, st);
}

static void start_free(void *ctx, keel_result r)
{
    start *st = ctx;
    (void)r;
    if (st->l)
        load_free(st->l);
    free(st);
}

static atomic_bool start_failed;

bool kv_persist_start_failed(void)
{
    return atomic_load(&start_failed);
}

static void note_start(void *ctx, keel_result r)
{
    (void)ctx;
    if (r.err)
        atomic_store(&start_failed, true);
}

static bool file_exists(const char *path)
{
    /* At start, before the shard serves: a blocking stat costs nothing. */
    struct stat sb;
    return stat(path, &sb) == 0;
}

static keel_future *persist_exit(void *arg);

static keel_future *shard_start(void);

keel_future *kv_persist_shard_start(void)
{
    return keel_finally(shard_start(), note_start, NULL);
}

static keel_future *shard_start(void)
{
    pshard *ps = here();
    if (keel_at_exit(persist_exit, NULL))
        return keel_make_error(-ENOMEM);
    resp_buf_init(&ps->rec);
    resp_buf_init(&ps->diff);
    ps->bgsave_ok = ps->rewrite_ok = true;
    ps->last_save_ms = kv_now_ms();
    keel_abort_source_init(&ps->as);
    atomic_store(&lastsave_s, ps->last_save_ms / 1000);

    char aof[4096], snap[4096], tmp[4200];
    path_of(aof, sizeof(aof), true, keel_shard_id(), "");
    path_of(snap, sizeof(snap), false, keel_shard_id(), "");
    /* What a save or rewrite cut short by a crash left behind: never
     * loaded (the rename is what makes a file count), so removed. */
    path_of(tmp, sizeof(tmp), true, keel_shard_id(), ".rewrite");
    if (!unlink(tmp))
        kv_log("removed %s, left by a rewrite that did not finish", tmp);
    path_of(tmp, sizeof(tmp), false, keel_shard_id(), ".tmp");
    if (!unlink(tmp))
        kv_log("removed %s, left by a snapshot that did not finish", tmp);
    bool use_aof = kv_pcfg.appendonly && file_exists(aof);
    if (!use_aof && !file_exists(snap))
        return kv_pcfg.appendonly ? start_job(true) : keel_make_ready(0);
    start *st = calloc(1, sizeof(*st));
    loader *l = calloc(1, sizeof(*l));
    if (!st || !l) {
        free(st);
        free(l);
        return keel_make_error(-ENOMEM);
    }
    st->l = l;
    st->loaded_aof = use_aof;
    l->aof = use_aof;
    l->t0 = kv_now_ms();
    snprintf(l->path, sizeof(l->path), "%s", use_aof ? aof : snap);
    resp_parser_init(&l->parser);
    l->parser.max_bulk_len = 1ll << 40; /* a file's values are whatever was accepted */
    resp_buf_init(&l->scratch);
    unsigned flags = KEEL_FILE_READ | KEEL_FILE_BUFFERED | (use_aof ? KEEL_FILE_WRITE : 0);
    keel_future *f = keel_then(keel_file_open(l->path, flags, 0644), load_opened, st);
    f = keel_then_wrapped(f, finish_load, st);
    return keel_finally(f, start_free, st);
}

/* ---- housekeeping ------------------------------------------------------------------ */

bool kv_persist_cron(int64_t now_ms)
{
    if (!P)
        return false;
    pshard *ps = here();
    if (!kv_gate_locked())
        kv_persist_pump();
    if (ps->aof) {
        int e = keel_appender_error(ps->aof);
        if (e && !ps->err)
            set_error(ps, e);
        if (ps->err && !ps->dur.busy && !ps->wr.busy && !ps->switching &&
            now_ms - ps->last_retry_ms >= 1000) {
            /* Redis retries a failed AOF write once a second; so does
             * keel-kv, and the error clears when a sync succeeds. */
            ps->last_retry_ms = now_ms;
            if (keel_appender_error(ps->aof))
                keel_appender_retry(ps->aof);
            else
                start_sync(ps);
        } else if (kv_pcfg.appendfsync == FSYNC_EVERYSEC && now_ms - ps->last_sync_ms >= 1000) {
            kick_sync(ps);
            ps->last_sync_ms = now_ms;
        }
        /* auto-aof-rewrite-percentage / -min-size, per shard. */
        uint64_t size = keel_appender_offset(ps->aof);
        if (kv_pcfg.rewrite_percentage > 0 && ps->snap_kind == SNAP_NONE && !ps->err &&
            size >= (uint64_t)kv_pcfg.rewrite_min_size &&
            size > ps->base_size + ps->base_size * (uint64_t)kv_pcfg.rewrite_percentage / 100) {
            log_persist("starting an append-only file rewrite: %llu bytes, %llu%% more than "
                        "after the last one",
                        (unsigned long long)size,
                        (unsigned long long)(ps->base_size
                                                 ? (size - ps->base_size) * 100 / ps->base_size
                                                 : 100));
            keel_detach(start_job(true));
        }
    }
    if (ps->rewrite_pending && ps->snap_kind == SNAP_NONE)
        keel_detach(start_job(true));
    /* save rules: "after S seconds if at least C changes". A failed save
     * is retried after 5 s, as Redis does. */
    uint64_t changes = changes_since_save(keel_shard_id());
    if (kv_pcfg.nsave && changes && ps->snap_kind == SNAP_NONE &&
        (ps->bgsave_ok || now_ms - ps->last_bgsave_try_ms >= 5000)) {
        for (unsigned i = 0; i < kv_pcfg.nsave; i++) {
            if (changes >= (uint64_t)kv_pcfg.save[i].changes &&
                now_ms - ps->last_save_ms >= kv_pcfg.save[i].secs * 1000) {
                log_persist("%llu changes in %lld seconds: saving", (unsigned long long)changes,
                            kv_pcfg.save[i].secs);
                keel_detach(start_job(false));
                break;
            }
        }
    }
    return false; /* a snapshot runs its own loop */
}

/* At exit, after the clients are gone: stop a snapshot that runs, save if
 * save rules are set (as Redis's SHUTDOWN does), sync and close the AOF. */
static keel_future *exit_close(void *ctx, keel_result r)
{
    pshard *ps = ctx;
    (void)r;
    kv_persist_pump();
    if (!ps->aof)
        return keel_make_ready(0);
    keel_appender *a = ps->aof;
    ps->aof = NULL;
    return keel_appender_close(a);
}

static keel_future *exit_file(void *ctx, keel_result r)
{
    pshard *ps = ctx;
    if (r.err) {
        log_persist("syncing the append-only file as it closed failed: %s",
                    keel_strerror((int)r.err));
        resolve_waiters(ps, (int)r.err);
    } else {
        /* Closing wrote and synced everything: whoever waited may go. */
        ps->wr.done = ps->dur.done = ps->pumped;
        resolve_waiters(ps, 0);
    }
    free(sc.t); /* this shard thread's scope */
    sc.t = NULL;
    sc.cap = 0;
    resp_buf_free(&sc.keys);
    keel_file *f = ps->file;
    ps->file = NULL;
    return f ? keel_file_close(f) : keel_make_ready(0);
}

static keel_future *exit_save(void *ctx, keel_result r)
{
    (void)ctx;
    (void)r;
    int mode = atomic_load(&shutdown_save);
    if (mode > 0 || (mode == 0 && kv_pcfg.nsave && changes_since_save(keel_shard_id()))) {
        log_persist("saving the final snapshot before exit");
        return start_job(false);
    }
    return keel_make_ready(0);
}

static keel_future *wait_idle(void *ctx)
{
    pshard *ps = ctx;
    if (ps->snap_kind == SNAP_NONE)
        return keel_make_ready(KEEL_STOP);
    return keel_then_wrapped(keel_sleep(KEEL_MS(5)), again, NULL);
}

keel_future *kv_persist_exit_early(void *arg)
{
    (void)arg;
    pshard *ps = here();
    if (ps->err)
        resolve_waiters(ps, ps->err);
    return keel_make_ready(0);
}

static keel_future *persist_exit(void *arg)
{
    (void)arg;
    pshard *ps = here();
    if (ps->snap)
        kv_snapshot_cancel(ps->snap); /* its temporary file is removed */
    keel_future *f = keel_repeat(wait_idle, ps);
    f = keel_then_wrapped(f, exit_save, ps);
    f = keel_then_wrapped(f, exit_close, ps);
    return keel_then_wrapped(f, exit_file, ps);
}

/* ---- commands ---------------------------------------------------------------------- */

typedef struct save_req {
    bool rewrite, wait;
    int result; /* 0 started/done, -EBUSY, -errno */
} save_req;

static void save_req_done(void *ctx, keel_result r)
{
    save_req *q = ctx;
    q->result = (int)r.err;
}

static keel_future *save_on_shard(void *arg)
{
    save_req *q = arg;
    pshard *ps = here();
    if (q->rewrite && ps->snap_kind == SNAP_SAVE) {
        ps->rewrite_pending = true; /* after the save, as Redis schedules it */
        q->result = 1;
        return keel_make_ready(0);
    }
    if (q->rewrite && !kv_pcfg.appendonly) {
        q->result = -ENOTSUP;
        return keel_make_ready(0);
    }
    keel_future *f = start_job(q->rewrite);
    if (q->wait)
        return keel_finally(f, save_req_done, q);
    if (keel_future_is_ready(f)) {
        q->result = (int)keel_future_take(f).err;
        return keel_make_ready(0);
    }
    keel_detach(f);
    return keel_make_ready(0);
}

static void save_finish(kv_client *c, resp_buf *out, void *reqs)
{
    (void)c;
    save_req *q = reqs;
    bool busy = false, scheduled = false;
    int err = 0;
    for (unsigned i = 0; i < nps; i++) {
        busy |= q[i].result == -EBUSY;
        scheduled |= q[i].result == 1;
        if (q[i].result < 0 && q[i].result != -EBUSY && !err)
            err = q[i].result;
    }
    if (q[0].rewrite && err == -ENOTSUP) {
        resp_add_error(out, "ERR the append-only file is off: turn it on with CONFIG SET "
                            "appendonly yes (which writes one)");
    } else if (q[0].rewrite) {
        if (busy)
            resp_add_error(out, "ERR Background append only file rewriting already in progress");
        else if (err)
            resp_add_errorf(out, "ERR %s", keel_strerror(err));
        else if (scheduled)
            resp_add_status(out, "Background append only file rewriting scheduled");
        else
            resp_add_status(out, "Background append only file rewriting started");
    } else if (busy) {
        resp_add_error(out, "ERR Background save already in progress");
    } else if (err) {
        resp_add_errorf(out, "ERR %s", keel_strerror(err));
    } else if (q[0].wait) {
        resp_add_status(out, "OK");
    } else {
        resp_add_status(out, "Background saving started");
    }
    free(reqs);
}

static void run_save(kv_client *c, bool rewrite, bool wait)
{
    save_req *q = calloc(nps, sizeof(*q));
    if (!q) {
        resp_add_error(kv_reply_target(c), "ERR out of memory");
        return;
    }
    for (unsigned i = 0; i < nps; i++)
        q[i] = (save_req){rewrite, wait, 0};
    kv_gather(c, save_on_shard, q, sizeof(*q), save_finish);
}

void kv_cmd_save(kv_client *c, resp_buf *out, bool background)
{
    (void)out;
    run_save(c, false, !background);
}

void kv_cmd_bgrewriteaof(kv_client *c, resp_buf *out)
{
    (void)out;
    run_save(c, true, false);
}

void kv_persist_shutdown_save(int mode)
{
    atomic_store(&shutdown_save, mode);
}

long long kv_persist_lastsave(void)
{
    return atomic_load(&lastsave_s);
}

size_t kv_persist_info(char *b, size_t n)
{
    uint64_t changes = 0, aof_size = 0, aof_base = 0;
    bool aof_ok = true, bgsave_ok = true, rewrite_ok = true;
    for (unsigned i = 0; i < nps; i++) {
        changes += changes_since_save(i);
        bgsave_ok &= __atomic_load_n(&P[i].bgsave_ok, __ATOMIC_RELAXED);
        rewrite_ok &= __atomic_load_n(&P[i].rewrite_ok, __ATOMIC_RELAXED);
        aof_ok &= !__atomic_load_n(&P[i].err, __ATOMIC_RELAXED);
        aof_size += atomic_load_explicit(&P[i].aof_size, memory_order_relaxed);
        aof_base += __atomic_load_n(&P[i].base_size, __ATOMIC_RELAXED);
    }
    int len = snprintf(
        b, n,
        "loading:0\r\nasync_loading:0\r\nrdb_changes_since_last_save:%llu\r\n"
        "rdb_bgsave_in_progress:%d\r\nrdb_last_save_time:%lld\r\nrdb_last_bgsave_status:%s\r\n"
        "aof_enabled:%d\r\naof_rewrite_in_progress:%d\r\naof_rewrite_scheduled:0\r\n"
        "aof_last_bgrewrite_status:%s\r\naof_last_write_status:%s\r\n",
        (unsigned long long)changes, atomic_load(&saves_running) > 0, kv_persist_lastsave(),
        bgsave_ok ? "ok" : "err", kv_pcfg.appendonly, atomic_load(&rewrites_running) > 0,
        rewrite_ok ? "ok" : "err", aof_ok ? "ok" : "err");
    if (kv_pcfg.appendonly && len > 0 && (size_t)len < n)
        len += snprintf(b + len, n - (size_t)len,
                        "aof_current_size:%llu\r\naof_base_size:%llu\r\n"
                        "aof_pending_rewrite:0\r\naof_buffer_length:0\r\n",
                        (unsigned long long)aof_size, (unsigned long long)aof_base);
    return len > 0 ? (size_t)len : 0;
}

/* ---- configuration and set-up --------------------------------------------------------- */

bool kv_persist_parse_save(const char *v, kv_persist_config *into)
{
    unsigned n = 0;
    const char *p = v;
    while (*p == ' ')
        p++;
    if (!*p || !strcmp(p, "\"\"")) {
        into->nsave = 0;
        return true;
    }
    while (*p) {
        char *end;
        long long secs = strtoll(p, &end, 10);
        if (end == p || secs <= 0)
            return false;
        p = end;
        long long changes = strtoll(p, &end, 10);
        if (end == p || changes <= 0 || n == 16)
            return false;
        into->save[n].secs = secs;
        into->save[n].changes = changes;
        n++;
        p = end;
        while (*p == ' ')
            p++;
    }
    into->nsave = n;
    return true;
}

static void appendonly_on_shard(void *arg)
{
    bool on = (bool)(uintptr_t)arg;
    pshard *ps = here();
    if (on) {
        if (ps->aof || ps->snap_kind == SNAP_REWRITE)
            return;
        if (ps->snap_kind == SNAP_SAVE)
            ps->rewrite_pending = true;
        else
            keel_detach(start_job(true));
        return;
    }
    kv_persist_pump();
    ps->aof_on = false;
    update_on();
    keel_detach(keel_then_wrapped(exit_close(ps, keel_ok(0)), exit_file, ps));
}

void kv_persist_set_appendonly(bool on)
{
    if (!P)
        return; /* at start: kv_persist_shard_start reads the setting */
    /* Through each shard's gate: CONFIG SET holds every shard's lock now. */
    for (unsigned i = 0; i < nps; i++)
        keel_detach(kv_run_on(i, appendonly_on_shard, (void *)(uintptr_t)on));
}

int kv_persist_init(unsigned nshards)
{
    P = calloc(nshards, sizeof(*P));
    if (!P)
        return -1;
    nps = nshards;
    static const struct {
        const char *name;
        int kind;
    } kinds[] = {
        {"setex", LOG_STATE}, {"psetex", LOG_STATE}, {"spop", LOG_STATE}, {"sort", LOG_STATE},
        {"expire", LOG_TTL},  {"pexpire", LOG_TTL},  {"getex", LOG_TTL},
    };
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
        const kv_command *c = kv_command_lookup(kinds[i].name, strlen(kinds[i].name));
        if (c)
            log_kind[kv_command_id(c)] = (uint8_t)kinds[i].kind;
    }
    return 0;
}

void kv_persist_free(void)
{
    for (unsigned i = 0; P && i < nps; i++) {
        resp_buf_free(&P[i].rec);
        resp_buf_free(&P[i].diff);
    }
    free(P);
    P = NULL;
}
