/* Streams over files: an appender with write-behind and group commit, and
 * a reader with read-ahead (see <keel/disk.h>). Built on the public file
 * API only; everything runs on the shard that owns the file. */
#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <keel/disk.h>

#define APPENDER_CHUNK (1u << 20)
#define APPENDER_MIN_CAP (64u << 10)
#define READER_CHUNK (256u << 10)
#define READER_AHEAD 4u

static uint64_t align_down(uint64_t v, uint64_t a)
{
    return v - v % a;
}

static uint64_t align_up(uint64_t v, uint64_t a)
{
    return align_down(v + a - 1, a);
}

/* The unit both buffer addresses and file offsets are aligned to: buffers
 * come from keel_dma_alloc and their offsets track file offsets, so an
 * offset aligned to the larger of the two is aligned for both. */
static size_t io_block(const keel_file *f)
{
    if (!keel_file_is_direct(f))
        return 1;
    size_t m = keel_file_mem_align(f), o = keel_file_offset_align(f);
    return m > o ? m : o;
}

/* ---- the appender ------------------------------------------------------------------ */

typedef struct waiter {
    struct waiter *next;
    uint64_t target;
    keel_promise p;
} waiter;

typedef struct {
    waiter *head, *tail;
} waiter_list;

struct keel_appender_s {
    keel_file *f;
    size_t blk;   /* 1 for a buffered file */
    size_t chunk; /* a multiple of blk */

    /* buf[0] is the byte at file offset base. It holds [base, offset): on a
     * direct file base is the start of the block holding written, whose
     * head must be rewritten with the tail. */
    char *buf;
    size_t cap;
    uint64_t base, offset, written, durable;

    /* The buffer the write in flight reads from: a grow while it is in
     * flight must leave it alone until the write completes. */
    char *inflight_buf;
    uint64_t inflight_end;    /* the logical end the write in flight carries */
    uint64_t inflight_padded; /* and the end of its zero padding */
    /* Appends that land in the padding of a write in flight wait here: the
     * kernel may still be reading that memory (a checksumming file system
     * would see the block change under it). */
    char *overlap;
    uint64_t sync_target; /* what the sync in flight makes durable */
    bool writing, syncing, truncating, head_reading;

    /* On a direct file opened at an unaligned offset, the bytes of the
     * first block before it must be read before that block is written. */
    bool head_pending;
    char *head_buf;

    int err;            /* reported until an op started after retry succeeds */
    bool stopped;       /* no new ops until retry */
    bool err_from_sync; /* the error came from fdatasync */
    bool retry_sync;    /* retry wants a sync to clear a sync error */
    unsigned epoch;     /* bumped at each error: older ops cannot clear it */
    unsigned write_epoch, sync_epoch;

    waiter_list flushes, write_outs;

    bool closing, truncated, close_synced;
    keel_promise closed;

    /* Callbacks may resolve promises whose continuations call back into
     * the appender, even close it: it is freed only at depth 0. */
    unsigned depth;
    bool pumping, pump_again;
};

static void pump(keel_appender *a);

static void enter(keel_appender *a)
{
    a->depth++;
}

static void wl_push(waiter_list *l, waiter *w)
{
    w->next = NULL;
    if (l->tail)
        l->tail->next = w;
    else
        l->head = w;
    l->tail = w;
}

static waiter *wl_pop(waiter_list *l)
{
    waiter *w = l->head;
    if (w) {
        l->head = w->next;
        if (!l->head)
            l->tail = NULL;
    }
    return w;
}

/* Targets are appended offsets, so they never decrease along a list: the
 * satisfied waiters are a prefix. Each is unlinked before it is resolved,
 * because its continuation may add waiters. */
static void wl_resolve_upto(waiter_list *l, uint64_t reached)
{
    while (l->head && l->head->target <= reached) {
        waiter *w = wl_pop(l);
        keel_promise p = w->p;
        free(w);
        keel_promise_set_value(&p, 0);
    }
}

/* Only the waiters there now: a continuation may retry and wait again,
 * and that waiter must see the retry's outcome, not this error. */
static void wl_fail_all(waiter_list *l, int err)
{
    waiter_list failing = *l;
    l->head = l->tail = NULL;
    waiter *w;
    while ((w = wl_pop(&failing))) {
        keel_promise p = w->p;
        free(w);
        keel_promise_set_error(&p, err);
    }
}

static bool busy(const keel_appender *a)
{
    return a->writing || a->syncing || a->truncating || a->head_reading;
}

static void appender_free(keel_appender *a)
{
    int err = a->stopped ? a->err : 0;
    keel_promise closed = a->closed;
    wl_fail_all(&a->flushes, err ? err : -EPIPE);
    wl_fail_all(&a->write_outs, err ? err : -EPIPE);
    keel_dma_free(a->buf);
    keel_dma_free(a->head_buf);
    free(a->overlap);
    free(a);
    keel_promise_resolve(&closed, err ? keel_err(err) : keel_ok(0));
}

static bool close_done(const keel_appender *a)
{
    if (busy(a))
        return false;
    if (a->stopped)
        return true;
    return a->close_synced;
}

static void leave(keel_appender *a)
{
    if (--a->depth == 0 && a->closing && close_done(a))
        appender_free(a);
}

static void set_error(keel_appender *a, int err, bool from_sync)
{
    a->err = err;
    a->stopped = true;
    a->err_from_sync = from_sync;
    a->retry_sync = false;
    a->epoch++;
    wl_fail_all(&a->flushes, err);
    wl_fail_all(&a->write_outs, err);
}

/* Moves base up to the block holding written once the consumed prefix is
 * at least as large as what is left, so each byte moves O(1) times; and
 * gives back memory a burst of appends made the buffer grow to. Only with
 * no write in flight: it reads from buf. */
static void compact(keel_appender *a)
{
    assert(!a->writing);
    uint64_t new_base = align_down(a->written, a->blk);
    if (a->head_pending)
        new_base = a->base;
    uint64_t shift = new_base - a->base;
    size_t used = (size_t)(a->offset - new_base);
    if (shift > 0 && shift >= used) {
        memmove(a->buf, a->buf + shift, used);
        a->base = new_base;
    }
    size_t want = (size_t)align_up((a->offset - a->base) * 2, a->blk > 4096 ? a->blk : 4096);
    if (want < APPENDER_MIN_CAP)
        want = (size_t)align_up(APPENDER_MIN_CAP, a->blk);
    if (a->cap > 4 * want) {
        char *nb = keel_dma_alloc(want);
        if (!nb)
            return; /* keeping the larger buffer is harmless */
        memcpy(nb, a->buf, (size_t)(a->offset - a->base));
        keel_dma_free(a->buf);
        a->buf = nb;
        a->cap = want;
    }
}

/* Makes room for the bytes up to end, plus the zero padding of the block
 * it ends in. */
static int reserve(keel_appender *a, uint64_t end)
{
    size_t need = (size_t)align_up(end - a->base, a->blk);
    if (need <= a->cap)
        return 0;
    if (!a->writing) {
        compact(a);
        need = (size_t)align_up(end - a->base, a->blk);
        if (need <= a->cap)
            return 0;
    }
    size_t cap = a->cap * 2;
    if (cap < need)
        cap = (size_t)align_up(need, 4096);
    char *nb = keel_dma_alloc(cap);
    if (!nb)
        return -ENOMEM;
    memcpy(nb, a->buf, (size_t)(a->offset - a->base));
    if (a->buf != a->inflight_buf)
        keel_dma_free(a->buf);
    a->buf = nb;
    a->cap = cap;
    return 0;
}

keel_appender *keel_appender_new(keel_file *f, uint64_t off, size_t chunk)
{
    keel_appender *a = calloc(1, sizeof(*a));
    if (!a)
        return NULL;
    a->f = f;
    a->blk = io_block(f);
    a->chunk = (size_t)align_up(chunk ? chunk : APPENDER_CHUNK, a->blk);
    a->base = align_down(off, a->blk);
    a->offset = a->written = a->durable = off;
    a->cap = (size_t)align_up(APPENDER_MIN_CAP, a->blk);
    a->buf = keel_dma_alloc(a->cap);
    if (!a->buf)
        goto fail;
    if (a->blk > 1 && !(a->overlap = malloc(a->blk)))
        goto fail;
    if (a->base != off) {
        a->head_buf = keel_dma_alloc(a->blk);
        if (!a->head_buf)
            goto fail;
        a->head_pending = true;
        memset(a->buf, 0, (size_t)(off - a->base));
    }
    return a;
fail:
    free(a->overlap);
    keel_dma_free(a->buf);
    free(a);
    return NULL;
}

int keel_appender_append(keel_appender *a, const void *data, size_t len)
{
    assert(!a->closing);
    if (len == 0)
        return 0;
    int rc = reserve(a, a->offset + len);
    if (rc)
        return rc;
    const char *src = data;
    uint64_t at = a->offset;
    a->offset += len;
    if (a->writing && at < a->inflight_padded) {
        size_t n = (size_t)(a->inflight_padded - at);
        if (n > len)
            n = len;
        memcpy(a->overlap + (at - a->inflight_end), src, n);
        src += n;
        at += n;
        len -= n;
    }
    memcpy(a->buf + (at - a->base), src, len);
    enter(a);
    pump(a);
    leave(a);
    return 0;
}

static void finish_write(keel_appender *a, keel_result r)
{
    a->writing = false;
    if (a->inflight_padded > a->inflight_end && a->offset > a->inflight_end) {
        uint64_t end = a->offset < a->inflight_padded ? a->offset : a->inflight_padded;
        memcpy(a->buf + (a->inflight_end - a->base), a->overlap, (size_t)(end - a->inflight_end));
    }
    if (a->inflight_buf != a->buf)
        keel_dma_free(a->inflight_buf);
    a->inflight_buf = NULL;
    if (r.err) {
        if (!a->stopped)
            set_error(a, r.err, false);
    } else {
        if (a->inflight_end > a->written)
            a->written = a->inflight_end;
        if (a->write_epoch == a->epoch && !a->stopped)
            a->err = 0;
        compact(a);
        wl_resolve_upto(&a->write_outs, a->written);
    }
}

static void finish_sync(keel_appender *a, keel_result r)
{
    a->syncing = false;
    if (r.err) {
        if (!a->stopped)
            set_error(a, r.err, true);
    } else {
        if (a->sync_target > a->durable)
            a->durable = a->sync_target;
        if (a->sync_epoch == a->epoch && !a->stopped)
            a->err = 0;
        if (a->closing && a->durable == a->offset && (a->truncated || a->blk == 1))
            a->close_synced = true;
        wl_resolve_upto(&a->flushes, a->durable);
    }
}

static void write_done(void *ctx, keel_result r)
{
    keel_appender *a = ctx;
    enter(a);
    finish_write(a, r);
    pump(a);
    leave(a);
}

/* A write and its fdatasync as one linked pair (keel_file_write_dsync). */
static void write_dsync_done(void *ctx, keel_result r)
{
    keel_appender *a = ctx;
    enter(a);
    if (r.err) {
        /* The pair's error is the write's (retry rewrites and syncs); the
         * failure's callbacks may already have retried, so nothing about
         * the sync may be reported after them. */
        a->syncing = false;
        finish_write(a, r);
    } else {
        finish_write(a, r);
        finish_sync(a, r);
    }
    pump(a);
    leave(a);
}

static void start_write(keel_appender *a)
{
    uint64_t start = align_down(a->written, a->blk);
    uint64_t end = a->offset;
    if (end - start > a->chunk)
        end = start + a->chunk;
    uint64_t padded = align_up(end, a->blk);
    char *p = a->buf + (start - a->base);
    memset(a->buf + (end - a->base), 0, (size_t)(padded - end));
    a->writing = true;
    a->inflight_buf = a->buf;
    a->inflight_end = end;
    a->inflight_padded = padded;
    a->write_epoch = a->epoch;
    /* Someone waits for durability and no sync runs: the write carries its
     * fdatasync, linked, which saves a round trip through the loop. */
    if (a->flushes.head && !a->syncing && !a->closing) {
        a->syncing = true;
        a->retry_sync = false;
        a->sync_target = end;
        a->sync_epoch = a->epoch;
        keel_on_done(keel_file_write_dsync(a->f, start, p, (size_t)(padded - start)),
                     write_dsync_done, a);
        return;
    }
    keel_on_done(keel_file_write(a->f, start, p, (size_t)(padded - start)), write_done, a);
}

static void sync_done(void *ctx, keel_result r)
{
    keel_appender *a = ctx;
    enter(a);
    finish_sync(a, r);
    pump(a);
    leave(a);
}

static void start_sync(keel_appender *a)
{
    a->syncing = true;
    a->retry_sync = false;
    a->sync_target = a->written;
    a->sync_epoch = a->epoch;
    keel_on_done(keel_file_fdatasync(a->f), sync_done, a);
}

static void truncate_done(void *ctx, keel_result r)
{
    keel_appender *a = ctx;
    enter(a);
    a->truncating = false;
    if (r.err) {
        if (!a->stopped)
            set_error(a, r.err, false);
    } else {
        a->truncated = true;
    }
    pump(a);
    leave(a);
}

static void head_done(void *ctx, keel_result r)
{
    keel_appender *a = ctx;
    enter(a);
    a->head_reading = false;
    if (r.err) {
        if (!a->stopped)
            set_error(a, r.err, false);
    } else {
        /* Past the end of the file the block reads short: those bytes are
         * a hole, zeros, already in buf. */
        size_t head = (size_t)(a->written - a->base);
        memcpy(a->buf, a->head_buf, (size_t)r.val < head ? (size_t)r.val : head);
        keel_dma_free(a->head_buf);
        a->head_buf = NULL;
        a->head_pending = false;
    }
    pump(a);
    leave(a);
}

static void pump_once(keel_appender *a)
{
    if (a->stopped)
        return;
    if (a->head_pending) {
        if (!a->head_reading) {
            a->head_reading = true;
            keel_on_done(keel_file_read(a->f, a->base, a->head_buf, a->blk), head_done, a);
        }
        return;
    }
    if (!a->writing && a->written < a->offset)
        start_write(a);
    if (a->stopped || a->syncing || a->truncating)
        return;
    bool want_sync = (a->flushes.head && a->flushes.head->target <= a->written) ||
                     (a->retry_sync && a->durable < a->written);
    if (a->closing && !a->writing && a->written == a->offset) {
        if (a->blk > 1 && !a->truncated) {
            /* The padding of the tail block goes before the final sync, so
             * that one sync makes both the data and the size durable. */
            a->truncating = true;
            keel_on_done(keel_file_truncate(a->f, a->offset), truncate_done, a);
            return;
        }
        if (!a->close_synced)
            want_sync = true;
    }
    if (want_sync)
        start_sync(a);
}

/* Callbacks that fail synchronously run inside keel_on_done and call pump
 * again: the loop keeps that from nesting. */
static void pump(keel_appender *a)
{
    if (a->pumping) {
        a->pump_again = true;
        return;
    }
    a->pumping = true;
    do {
        a->pump_again = false;
        pump_once(a);
    } while (a->pump_again);
    a->pumping = false;
}

static keel_future *add_waiter(keel_appender *a, waiter_list *l, uint64_t reached)
{
    assert(!a->closing);
    if (a->stopped)
        return keel_make_error(a->err);
    if (reached >= a->offset)
        return keel_make_ready(0);
    waiter *w = malloc(sizeof(*w));
    if (!w)
        return keel_make_error(-ENOMEM);
    w->target = a->offset;
    keel_future *fut = keel_promise_init(&w->p);
    wl_push(l, w);
    enter(a);
    pump(a);
    leave(a);
    return fut;
}

keel_future *keel_appender_flush(keel_appender *a)
{
    return add_waiter(a, &a->flushes, a->durable);
}

keel_future *keel_appender_write_out(keel_appender *a)
{
    return add_waiter(a, &a->write_outs, a->written);
}

uint64_t keel_appender_offset(const keel_appender *a)
{
    return a->offset;
}

uint64_t keel_appender_written(const keel_appender *a)
{
    return a->written;
}

uint64_t keel_appender_durable(const keel_appender *a)
{
    return a->durable;
}

int keel_appender_error(const keel_appender *a)
{
    return a->err;
}

void keel_appender_retry(keel_appender *a)
{
    if (!a->stopped || a->closing)
        return;
    a->stopped = false;
    /* After a failed fdatasync nothing may be left to write; only a sync
     * that succeeds shows the error is gone. */
    a->retry_sync = a->err_from_sync;
    enter(a);
    pump(a);
    leave(a);
}

keel_future *keel_appender_close(keel_appender *a)
{
    assert(!a->closing);
    keel_future *fut = keel_promise_init(&a->closed);
    a->closing = true;
    /* Closing is one last attempt: it writes what an error left behind. */
    if (a->stopped) {
        a->stopped = false;
        a->retry_sync = a->err_from_sync;
    }
    if (a->durable == a->offset && a->blk == 1)
        a->close_synced = true;
    enter(a);
    pump(a);
    leave(a);
    return fut;
}

/* ---- the reader -------------------------------------------------------------------- */

enum { SLOT_FREE, SLOT_READING, SLOT_DONE };

typedef struct slot {
    keel_reader *r;
    char *buf;
    uint64_t off; /* file offset of buf[0] */
    int state;
    keel_result res;
} slot;

struct keel_reader_s {
    keel_file *f;
    size_t chunk;
    unsigned ahead;
    slot *slots;
    unsigned head, used; /* ring of slots in file order */
    unsigned reading;
    uint64_t pos;      /* next byte to return */
    uint64_t next_off; /* where the next read goes */
    bool eof_seen;     /* a read came back short: issue no more */
    int err;

    bool want; /* a keel_reader_read waits */
    char *dst;
    size_t len, got;
    keel_promise p;

    bool closing;
    keel_promise closed;
    unsigned depth;
};

static void reader_leave(keel_reader *r)
{
    if (--r->depth || !r->closing || r->reading)
        return;
    keel_promise closed = r->closed;
    for (unsigned i = 0; i < r->ahead; i++)
        keel_dma_free(r->slots[i].buf);
    free(r->slots);
    free(r);
    keel_promise_set_value(&closed, 0);
}

static void read_done(void *ctx, keel_result res);

static void refill(keel_reader *r)
{
    while (!r->closing && !r->eof_seen && !r->err && r->used < r->ahead) {
        slot *s = &r->slots[(r->head + r->used) % r->ahead];
        r->used++;
        r->reading++;
        s->state = SLOT_READING;
        s->off = r->next_off;
        r->next_off += r->chunk;
        keel_on_done(keel_file_read(r->f, s->off, s->buf, r->chunk), read_done, s);
    }
}

/* Copies what the completed slots at the head hold; true once the waiting
 * read can be answered (filled, at the end, or failed). */
static bool drain(keel_reader *r, keel_result *out)
{
    while (r->got < r->len && r->used && !r->eof_seen) {
        slot *s = &r->slots[r->head];
        if (s->state != SLOT_DONE)
            return false;
        if (s->res.err) {
            r->err = s->res.err;
            break;
        }
        uint64_t end = s->off + (uint64_t)s->res.val;
        if (r->pos < end) {
            size_t n = (size_t)(end - r->pos);
            if (n > r->len - r->got)
                n = r->len - r->got;
            memcpy(r->dst + r->got, s->buf + (r->pos - s->off), n);
            r->got += n;
            r->pos += n;
        }
        if (r->pos < end)
            break;
        bool short_read = (uint64_t)s->res.val < r->chunk;
        s->state = SLOT_FREE;
        r->head = (r->head + 1) % r->ahead;
        r->used--;
        if (short_read) {
            /* Slots after a short one hold reads past the end: drop them
             * as they come back. */
            r->eof_seen = true;
            break;
        }
        refill(r);
    }
    if (r->got < r->len && !r->err && !r->eof_seen)
        return false;
    /* Bytes copied before an error are returned; the error comes with the
     * next read, since it is sticky. */
    *out = r->got || !r->err ? keel_ok((int64_t)r->got) : keel_err(r->err);
    return true;
}

static void read_done(void *ctx, keel_result res)
{
    slot *s = ctx;
    keel_reader *r = s->r;
    r->depth++;
    r->reading--;
    if (r->eof_seen) {
        /* Behind a short read: past the end, nobody consumes it. */
        s->state = SLOT_FREE;
    } else {
        s->state = SLOT_DONE;
        s->res = res;
    }
    keel_result out;
    if (r->want && drain(r, &out)) {
        r->want = false;
        keel_promise p = r->p;
        keel_promise_resolve(&p, out);
    }
    reader_leave(r);
}

keel_reader *keel_reader_new(keel_file *f, uint64_t off, size_t chunk, unsigned ahead)
{
    size_t blk = io_block(f);
    keel_reader *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->f = f;
    r->chunk = (size_t)align_up(chunk ? chunk : READER_CHUNK, blk);
    r->ahead = ahead ? ahead : READER_AHEAD;
    r->pos = off;
    r->next_off = align_down(off, blk);
    r->slots = calloc(r->ahead, sizeof(*r->slots));
    if (!r->slots)
        goto fail;
    for (unsigned i = 0; i < r->ahead; i++) {
        r->slots[i].r = r;
        r->slots[i].buf = keel_dma_alloc(r->chunk);
        if (!r->slots[i].buf)
            goto fail;
    }
    return r;
fail:
    if (r->slots)
        for (unsigned i = 0; i < r->ahead; i++)
            keel_dma_free(r->slots[i].buf);
    free(r->slots);
    free(r);
    return NULL;
}

keel_future *keel_reader_read(keel_reader *r, void *buf, size_t len)
{
    assert(!r->want && !r->closing);
    if (r->err)
        return keel_make_error(r->err);
    if (len == 0)
        return keel_make_ready(0);
    r->dst = buf;
    r->len = len;
    r->got = 0;
    r->depth++;
    refill(r);
    keel_result out;
    keel_future *fut;
    if (drain(r, &out)) {
        fut = keel_make_result(out);
    } else {
        r->want = true;
        fut = keel_promise_init(&r->p);
    }
    reader_leave(r);
    return fut;
}

uint64_t keel_reader_offset(const keel_reader *r)
{
    return r->pos;
}

keel_future *keel_reader_close(keel_reader *r)
{
    assert(!r->want && !r->closing);
    keel_future *fut = keel_promise_init(&r->closed);
    r->closing = true;
    r->depth++;
    reader_leave(r);
    return fut;
}
