/* Snapshots without fork: a shard's keyspace as it was at one moment,
 * written while the shard goes on serving.
 *
 * Redis forks and lets the kernel copy pages the parent changes. keel-kv
 * walks its own table in the background group instead, and copies at the
 * level of keys: before a command changes a key the walk has not reached
 * yet, the key's current state (still the snapshot moment's) is written
 * to the snapshot first and the key is marked done, so the walk skips it
 * (as it skips keys created after the moment, which the same hook marks).
 * Positions must not change meanwhile, so the db's incremental rehash
 * pauses while a snapshot runs (as Redis avoids resizing during a fork).
 * Keys deleted by expiry before the walk reaches them are left out: at
 * load time they would be expired anyway. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "dict.h"
#include "persist.h"
#include "txn.h"

/* How much the walk writes per step before it yields, and how much it
 * lets pile up unwritten before it waits for the disk. */
#define STEP_BYTES (256u << 10)
#define MAX_UNWRITTEN ((uint64_t)16 << 20)

struct kv_snap {
    kv_db *db;
    int table;     /* the walk's position: table ... */
    size_t bucket; /* ... and bucket */
    int last_table;
    bool walked;
    kv_dict *done; /* keys written or created since the moment */
    resp_buf cow;  /* their copies, until the owner moves them to out */
    resp_buf step;
    keel_appender *out;
    keel_promise finished;
    bool cancel, detached;
    int err;
    int64_t now_ms;
};

/* Whether the walk already passed e's position. */
static bool visited(const struct kv_snap *s, const kv_entry *e)
{
    if (s->walked)
        return true;
    int t;
    size_t b;
    kv_db_position(s->db, e, &t, &b);
    return t < s->table || (t == s->table && b < s->bucket);
}

static bool is_done(const struct kv_snap *s, const char *key, size_t klen)
{
    return s->done->count && kv_dict_find(s->done, key, klen);
}

void kv_snapshot_cow(struct kv_snap *s, kv_db *db, const char *key, size_t klen)
{
    if (is_done(s, key, klen))
        return;
    kv_entry *e = kv_db_peek(db, key, klen);
    if (e && !visited(s, e))
        kv_persist_emit_entry(&s->cow, e, false);
    if (!kv_dict_add(s->done, key, klen, NULL, 0))
        s->err = -ENOMEM; /* the snapshot fails rather than be wrong */
}

void kv_snapshot_cow_entry(struct kv_snap *s, const kv_entry *e)
{
    kv_snapshot_cow(s, s->db, kv_key(e), e->klen);
}

static void emit_bucket(struct kv_snap *s, resp_buf *b, kv_entry *e)
{
    for (; e; e = e->next) {
        int64_t at = kv_expire_of(e);
        if ((at >= 0 && at <= s->now_ms) || is_done(s, kv_key(e), e->klen))
            continue;
        kv_persist_emit_entry(b, e, false);
    }
}

/* Writes what the walk has left into b (FLUSHALL is about to drop it). */
static void walk(struct kv_snap *s, resp_buf *b, size_t budget)
{
    kv_db *db = s->db;
    size_t start = b->len;
    while (!s->walked && b->len - start < budget) {
        if (s->bucket > db->mask[s->table]) {
            if (s->table == s->last_table) {
                s->walked = true;
                break;
            }
            s->table++;
            s->bucket = 0;
            continue;
        }
        emit_bucket(s, b, db->t[s->table][s->bucket]);
        s->bucket++;
    }
    if (b->err)
        s->err = b->err;
}

void kv_snapshot_cow_all(struct kv_snap *s, kv_db *db)
{
    (void)db;
    s->now_ms = kv_now_ms();
    walk(s, &s->cow, SIZE_MAX);
}

void kv_snapshot_pump(struct kv_snap *s)
{
    if (!s->cow.len)
        return;
    if (keel_appender_append(s->out, s->cow.data, s->cow.len))
        s->err = -ENOMEM;
    resp_buf_clear(&s->cow);
}

/* Ends the snapshot's tie to the db; on the owner while it holds the db,
 * so no coordinator can be inside kv_snapshot_cow with s any more. */
static void detach(struct kv_snap *s)
{
    if (s->detached)
        return;
    s->detached = true;
    s->db->rehash_paused--;
    kv_persist_snapshot_ended(s->db);
}

static void finish(struct kv_snap *s)
{
    kv_dict_free(s->done);
    resp_buf_free(&s->cow);
    resp_buf_free(&s->step);
    keel_promise_resolve(&s->finished, s->err ? keel_err(s->err) : keel_ok(0));
    free(s);
}

static keel_future *step(void *arg);

static keel_future *step_next(void *arg, keel_result r)
{
    struct kv_snap *s = arg;
    if (r.err && !s->err)
        s->err = (int)r.err;
    return keel_make_ready(KEEL_CONTINUE);
}

static keel_future *step(void *arg)
{
    struct kv_snap *s = arg;
    /* A coordinator on another shard holds the db: wait for it. */
    if (kv_gate_locked())
        return keel_then_wrapped(keel_sleep(KEEL_MS(1)), step_next, s);
    if (s->cancel && !s->err)
        s->err = -ECANCELED;
    if (!s->err && keel_appender_error(s->out))
        s->err = keel_appender_error(s->out);
    if (s->err || (s->walked && !s->cow.len)) {
        detach(s);
        return keel_make_ready(KEEL_STOP);
    }
    kv_snapshot_pump(s);
    if (keel_appender_offset(s->out) - keel_appender_written(s->out) > MAX_UNWRITTEN)
        return keel_then_wrapped(keel_appender_write_out(s->out), step_next, s);
    s->now_ms = kv_now_ms();
    resp_buf_clear(&s->step);
    walk(s, &s->step, STEP_BYTES);
    if (s->step.len && keel_appender_append(s->out, s->step.data, s->step.len))
        s->err = -ENOMEM;
    /* Yield between steps so clients' commands interleave. */
    return keel_then_wrapped(keel_sleep(0), step_next, s);
}

static void loop_done(void *ctx, keel_result r)
{
    struct kv_snap *s = ctx;
    if (r.err && !s->err)
        s->err = (int)r.err;
    detach(s); /* if the loop itself failed */
    finish(s);
}

static keel_future *loop(void *arg)
{
    return keel_repeat(step, arg);
}

keel_future *kv_snapshot_run(kv_db *db, keel_appender *out, struct kv_snap **handle)
{
    struct kv_snap *s = calloc(1, sizeof(*s));
    if (!s || !(s->done = kv_dict_new())) {
        free(s);
        return keel_make_error(-ENOMEM);
    }
    s->db = db;
    s->out = out;
    resp_buf_init(&s->cow);
    resp_buf_init(&s->step);
    db->rehash_paused++;
    /* Entries below the rehash index were moved to t[1]; while a rehash
     * is under way at the start, the walk covers both tables. */
    s->table = 0;
    s->bucket = db->rehash >= 0 ? (size_t)db->rehash : 0;
    s->last_table = db->rehash >= 0 ? 1 : 0;
    *handle = s;
    keel_future *f = keel_promise_init(&s->finished);
    keel_on_done(keel_with_sched_group(keel_sched_group_background(), loop, s), loop_done, s);
    return f;
}

void kv_snapshot_cancel(struct kv_snap *s)
{
    s->cancel = true;
}
