/* The trace recorder: a flight recorder per shard, written out as Chrome
 * trace-event JSON (Perfetto and chrome://tracing open it).
 *
 * Each shard appends fixed-size records to a ring of its own, on its own
 * thread, with no lock and no syscall: the hooks in the loop, the reactors
 * and xshard.c test one global flag (keel__trace_on) and call
 * keel__trace_record only while it is set. A full ring overwrites its
 * oldest records, so a long trace keeps the most recent window.
 *
 * Lifecycle: idle -> on (keel_trace_start, or --trace at keel_run) ->
 * writing (keel_trace_stop: the flag is cleared, every shard runs a no-op
 * task, after which none can be inside keel__trace_record, and a
 * blocking-pool thread writes the file) -> idle. A start while a file is
 * being written is refused, so the writer reads rings nobody writes. At
 * exit, a trace still on is written to the --trace file by
 * keel__trace_teardown, after every shard thread has been joined.
 *
 * Rings are mapped at keel_run for every shard with MAP_NORESERVE: a run
 * that never traces costs address space only, and the first trace touches
 * the pages. After a file is written the pages go back to the kernel. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"

#define DEFAULT_BUFFER_KB 8192u
#define MIN_EVENTS 64u /* a ring smaller than this would hold no useful window */

/* One record. t1 is 0 for instants; a and b mean what the type says
 * (internal.h, KEEL__EV_*). Two records share a cache line. */
typedef struct trace_ev {
    uint64_t t0, t1;
    int64_t b;
    uint32_t a;
    uint8_t type;
} trace_ev;
_Static_assert(sizeof(trace_ev) == 32, "a trace record is 32 bytes");

/* Touched by its shard only while tracing is on, and by the starter or the
 * writer only while it is off and every shard is known to be out of
 * keel__trace_record. Each on its own cache line: head is written at every
 * event. */
typedef struct trace_ring {
    trace_ev *ev;
    uint64_t mask; /* capacity - 1; the capacity is a power of 2 */
    uint64_t head; /* records appended since the last start; the next goes to head & mask */
} KEEL__ALIGNED trace_ring;

/* STARTING covers a start's reset of the rings, so that a stop cannot slip
 * in between the reset and the flag being set. */
enum { TRACE_IDLE, TRACE_STARTING, TRACE_ON, TRACE_WRITING };

_Atomic int keel__trace_on;

static struct {
    trace_ring *rings; /* one per shard, or NULL outside keel_run */
    unsigned nrings;
    size_t ring_bytes;
    char *file;        /* the --trace file (our copy), or NULL */
    _Atomic int state; /* TRACE_*: who may touch the rings */
} g;

/* ---- recording (the shard's own thread) ------------------------------------ */

void keel__trace_record(keel__shard *s, uint8_t type, uint64_t t0, uint64_t t1, uint32_t a,
                        int64_t b)
{
    /* Checked again, with acquire: a caller may have tested the flag once
     * for a whole run of tasks (keel__run_tasks does), and a stop relies on
     * a shard that has seen the flag cleared recording nothing more. The
     * acquire pairs with keel_trace_start's release, so the reset head is
     * seen. On x86 this is a plain load of a read-mostly line. */
    if (KEEL__UNLIKELY(!atomic_load_explicit(&keel__trace_on, memory_order_acquire)))
        return;
    trace_ring *r = s->trace;
    trace_ev *e = &r->ev[r->head++ & r->mask];
    e->t0 = t0;
    e->t1 = t1;
    e->b = b;
    e->a = a;
    e->type = type;
    s->stats.trace_events++;
}

/* ---- setup and teardown ------------------------------------------------------- */

static void rings_free(void)
{
    if (g.rings) {
        for (unsigned i = 0; i < g.nrings; i++)
            if (g.rings[i].ev)
                munmap(g.rings[i].ev, g.ring_bytes);
        free(g.rings);
    }
    g.rings = NULL;
    g.nrings = 0;
}

/* Sets head to 0 on every ring. Only while no shard records (state is
 * idle, or setup before the shards run). */
static void rings_reset(void)
{
    for (unsigned i = 0; i < g.nrings; i++)
        g.rings[i].head = 0;
}

int keel__trace_setup(const keel_config *c)
{
    assert(keel__rt != NULL && g.rings == NULL);
    unsigned n = keel__rt->nshards;
    uint64_t kb = c->trace_buffer_kb ? c->trace_buffer_kb : DEFAULT_BUFFER_KB;
    /* The largest power of 2 of records that fits the buffer: the ring
     * index is then a mask. */
    uint64_t want = kb * 1024 / sizeof(trace_ev), cap = MIN_EVENTS;
    while (cap * 2 <= want)
        cap *= 2;
    g.ring_bytes = cap * sizeof(trace_ev);
    g.rings = keel__aligned_alloc(KEEL__CACHELINE, n * sizeof(trace_ring));
    if (!g.rings)
        goto fail;
    memset(g.rings, 0, n * sizeof(trace_ring));
    g.nrings = n;
    for (unsigned i = 0; i < n; i++) {
        void *p = mmap(NULL, g.ring_bytes, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED) {
            keel__log("mmap(%zu bytes) for shard %u's trace ring failed: %s", g.ring_bytes, i,
                      keel_strerror(-errno));
            goto fail;
        }
        g.rings[i].ev = p;
        g.rings[i].mask = cap - 1;
    }
    if (c->trace_file && !(g.file = strdup(c->trace_file)))
        goto fail;
    if (g.file) {
        /* Shards start after this returns (pthread_create orders it). */
        atomic_store(&g.state, TRACE_ON);
        atomic_store(&keel__trace_on, 1);
    }
    return 0;
fail:
    rings_free();
    return -ENOMEM;
}

void keel__trace_shard_init(keel__shard *s)
{
    assert(s->id < g.nrings);
    s->trace = &g.rings[s->id];
}

static int write_json(const char *path, int64_t *written);

void keel__trace_teardown(void)
{
    /* Every shard thread has been joined: nothing records any more, and a
     * stop's write (awaited by its shard before it could exit) is done. */
    bool on = atomic_exchange(&keel__trace_on, 0);
    if (on && g.file && g.rings) {
        int64_t n = 0;
        /* A failure is logged where it happens, in write_json. */
        if (write_json(g.file, &n) == 0 && !keel__rt->config.quiet)
            keel__log("trace: %lld events written to %s", (long long)n, g.file);
    }
    rings_free();
    free(g.file);
    g.file = NULL;
    atomic_store(&g.state, TRACE_IDLE);
}

/* ---- start and stop ---------------------------------------------------------- */

int keel_trace_start(void)
{
    int expected = TRACE_IDLE;
    if (!atomic_compare_exchange_strong(&g.state, &expected, TRACE_STARTING)) {
        /* A stop still writing its file reads the rings. */
        return expected == TRACE_WRITING ? -EBUSY : -EALREADY;
    }
    if (!g.rings) { /* not inside keel_run */
        atomic_store(&g.state, TRACE_IDLE);
        return -EINVAL;
    }
    rings_reset();
    /* Publishes the reset heads: pairs with the acquire in keel__trace_record. */
    atomic_store_explicit(&keel__trace_on, 1, memory_order_release);
    atomic_store(&g.state, TRACE_ON);
    return 0;
}

bool keel_trace_active(void)
{
    return atomic_load_explicit(&keel__trace_on, memory_order_relaxed) != 0;
}

typedef struct stop_job {
    char *path;
    int64_t written;
} stop_job;

static keel_future *quiesce_here(void *arg)
{
    /* Running this means the shard is not inside keel__trace_record, and,
     * having received the message the stopping shard sent after clearing
     * keel__trace_on (or being that shard), it sees the flag cleared:
     * keel__trace_record returns at once from now on. */
    (void)arg;
    return keel_make_ready(0);
}

static keel_result write_blocking(void *arg)
{
    stop_job *j = arg;
    int err = write_json(j->path, &j->written);
    /* Give the ring pages back: a one-off trace should not keep
     * trace_buffer_kb per shard resident for the rest of the run. The
     * mapping stays, and the next trace faults zeroed pages in. */
    for (unsigned i = 0; i < g.nrings; i++)
        madvise(g.rings[i].ev, g.ring_bytes, MADV_DONTNEED);
    return err ? keel_err(err) : keel_ok(j->written);
}

static keel_future *stop_quiesced(void *ctx, keel_result r)
{
    (void)r; /* the no-op cannot fail */
    return keel_run_blocking(write_blocking, ctx);
}

static void stop_done(void *ctx, keel_result r)
{
    (void)r;
    stop_job *j = ctx;
    free(j->path);
    free(j);
    /* Hands the rings back to keel_trace_start; the writer's reads are
     * ordered before this by the blocking pool's completion hand-off. */
    atomic_store(&g.state, TRACE_IDLE);
}

keel_future *keel_trace_stop(const char *path)
{
    assert(keel__self != NULL && "keel_trace_stop awaits every shard: call it on one");
    if (!path)
        path = g.file;
    if (!path)
        return keel_make_error(-EINVAL);
    stop_job *j = malloc(sizeof(*j));
    char *copy = strdup(path);
    if (!j || !copy) {
        free(j);
        free(copy);
        return keel_make_error(-ENOMEM);
    }
    *j = (stop_job){copy, 0};
    int expected = TRACE_ON;
    if (!atomic_compare_exchange_strong(&g.state, &expected, TRACE_WRITING)) {
        free(copy);
        free(j);
        /* Not recording, or a start or another stop is under way. */
        return keel_make_error(expected == TRACE_IDLE ? -EALREADY : -EBUSY);
    }
    atomic_store(&keel__trace_on, 0);
    keel_future *f = keel_then(keel_invoke_on_all(quiesce_here, NULL), stop_quiesced, j);
    return keel_finally(f, stop_done, j);
}

/* ---- the JSON writer (a blocking-pool thread, or keel_run's after the join) --- */

static const char *op_name(uint32_t op)
{
    switch (op) {
    case KEEL__OP_READ: return "read";
    case KEEL__OP_ACCEPT_MULTI: return "accept";
    case KEEL__OP_RECV_MULTI: return "recv";
    case KEEL__OP_RECV: return "recv";
    case KEEL__OP_SENDMSG: return "sendmsg";
    case KEEL__OP_SEND: return "send";
    case KEEL__OP_CONNECT: return "connect";
    case KEEL__OP_FILE: return "file";
    default: return NULL;
    }
}

/* Writes s as a JSON string: quotes, backslashes and control characters
 * escaped (group names are the user's). */
static void put_json_string(FILE *out, const char *s)
{
    putc('"', out);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            fprintf(out, "\\%c", ch);
        else if (ch < 0x20)
            fprintf(out, "\\u%04x", ch);
        else
            putc(ch, out);
    }
    putc('"', out);
}

/* Microseconds with the nanoseconds as three exact decimals: no floating
 * point, so never NaN or an exponent. */
static void put_us(FILE *out, const char *key, uint64_t ns)
{
    fprintf(out, ",\"%s\":%" PRIu64 ".%03u", key, ns / 1000, (unsigned)(ns % 1000));
}

/* Iterates over the records a ring holds, oldest first. */
#define RING_FOR_EACH(r, e)                                                                        \
    for (uint64_t i_ = (r)->head > (r)->mask ? (r)->head - (r)->mask - 1 : 0;                      \
         i_ < (r)->head && ((e) = &(r)->ev[i_ & (r)->mask], 1); i_++)

static int cmp_u64(const void *x, const void *y)
{
    uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;
    return a < b ? -1 : a > b;
}

static bool has_id(const uint64_t *ids, size_t n, uint64_t id)
{
    return n && bsearch(&id, ids, n, sizeof(id), cmp_u64) != NULL;
}

/* The flow ids of every send (or receive) the rings still hold, sorted. A
 * flow is drawn only when both its ends survived: an overwritten end would
 * leave a dangling arrow that Perfetto counts as an import error. */
static int collect_flow_ids(uint8_t type, uint64_t **ids_out, size_t *n_out)
{
    size_t n = 0, cap = 0;
    uint64_t *ids = NULL;
    const trace_ev *e;
    for (unsigned s = 0; s < g.nrings; s++) {
        RING_FOR_EACH(&g.rings[s], e)
        {
            if (e->type != type)
                continue;
            if (n == cap) {
                cap = cap ? cap * 2 : 1024;
                uint64_t *p = realloc(ids, cap * sizeof(*ids));
                if (!p) {
                    free(ids);
                    return -ENOMEM;
                }
                ids = p;
            }
            ids[n++] = (uint64_t)e->b;
        }
    }
    if (n)
        qsort(ids, n, sizeof(*ids), cmp_u64);
    *ids_out = ids;
    *n_out = n;
    return 0;
}

static void put_event(FILE *out, unsigned shard, const trace_ev *e, uint64_t base,
                      const uint64_t *sends, size_t nsends, const uint64_t *recvs, size_t nrecvs)
{
    uint64_t ts = e->t0 - base, dur = e->t1 > e->t0 ? e->t1 - e->t0 : 0;
    const char *op;
    fprintf(out, ",\n{\"pid\":1,\"tid\":%u", shard);
    put_us(out, "ts", ts);
    switch (e->type) {
    case KEEL__EV_TASK: {
        keel_sched_group *grp = keel_sched_group_at(e->a);
        fputs(",\"ph\":\"X\"", out);
        put_us(out, "dur", dur);
        fputs(",\"cat\":\"task\",\"name\":", out);
        if (grp)
            put_json_string(out, keel_sched_group_name(grp));
        else /* cannot happen: groups are never deleted */
            fprintf(out, "\"group %u\"", e->a);
        fputc('}', out);
        break;
    }
    case KEEL__EV_SLEEP:
        fputs(",\"ph\":\"X\"", out);
        put_us(out, "dur", dur);
        fputs(",\"cat\":\"sleep\",\"name\":\"sleep\"}", out);
        break;
    case KEEL__EV_IO_SUBMIT:
    case KEEL__EV_IO_COMPLETE: {
        bool submit = e->type == KEEL__EV_IO_SUBMIT;
        fprintf(out, ",\"ph\":\"i\",\"s\":\"t\",\"cat\":\"io\",\"name\":\"%s ",
                submit ? "submit" : "complete");
        if ((op = op_name(e->a)))
            fputs(op, out);
        else
            fprintf(out, "op %u", e->a);
        fprintf(out, "\",\"args\":{\"%s\":%" PRId64 "}}", submit ? "fd" : "res", e->b);
        break;
    }
    case KEEL__EV_MSG_SEND:
    case KEEL__EV_MSG_RECV: {
        /* A zero-length slice for the message, and the flow's end bound
         * to it: Perfetto attaches a flow event to the slice open on its
         * track at its time, and a receive happens between tasks, where
         * no other slice is open. */
        bool send = e->type == KEEL__EV_MSG_SEND;
        uint64_t id = (uint64_t)e->b;
        fprintf(out,
                ",\"ph\":\"X\",\"dur\":0,\"cat\":\"xshard\",\"name\":\"%s shard %u\","
                "\"args\":{\"flow\":%" PRIu64 "}}",
                send ? "send to" : "recv from", e->a, id);
        if (send ? has_id(recvs, nrecvs, id) : has_id(sends, nsends, id)) {
            fprintf(out, ",\n{\"pid\":1,\"tid\":%u", shard);
            put_us(out, "ts", ts);
            /* "bp":"e": the end binds to the enclosing slice (the receive),
             * not to the next slice to begin. */
            fprintf(out, ",\"ph\":\"%s,\"cat\":\"xshard\",\"name\":\"xshard\",\"id\":%" PRIu64 "}",
                    send ? "s\"" : "f\",\"bp\":\"e\"", id);
        }
        break;
    }
    default: /* a type this writer does not know yet: keep the JSON valid */
        fprintf(out, ",\"ph\":\"i\",\"s\":\"t\",\"cat\":\"other\",\"name\":\"event %u\"}", e->type);
        break;
    }
}

/* Writes the rings to path as Chrome trace-event JSON, through path.tmp
 * and a rename, so a reader never sees half a file. The caller ensures no
 * shard records meanwhile. Returns 0 or -errno; *written: records
 * written. */
static int write_json(const char *path, int64_t *written)
{
    int err = 0;
    uint64_t *sends = NULL, *recvs = NULL;
    size_t nsends = 0, nrecvs = 0;
    char *tmp = NULL;
    FILE *out;
    const trace_ev *e;

    if ((err = collect_flow_ids(KEEL__EV_MSG_SEND, &sends, &nsends)) ||
        (err = collect_flow_ids(KEEL__EV_MSG_RECV, &recvs, &nrecvs)) ||
        (err = asprintf(&tmp, "%s.tmp", path) < 0 ? -ENOMEM : 0)) {
        tmp = NULL; /* asprintf leaves it undefined on failure */
        keel__log("trace: out of memory writing %s", path);
        goto done;
    }
    if (!(out = fopen(tmp, "w"))) {
        err = -errno;
        keel__log("trace: fopen(%s) failed: %s", tmp, keel_strerror(err));
        goto done;
    }
    /* Most events are ~100 bytes: write in large blocks. */
    setvbuf(out, NULL, _IOFBF, 1 << 20);

    /* Times are relative to the earliest record kept, so they read as
     * "ms into the trace" rather than as uptime. */
    uint64_t base = UINT64_MAX;
    for (unsigned s = 0; s < g.nrings; s++)
        RING_FOR_EACH(&g.rings[s], e)
        {
            if (e->t0 < base)
                base = e->t0;
        }

    fputs("{\"traceEvents\":[\n"
          "{\"ph\":\"M\",\"pid\":1,\"tid\":0,\"name\":\"process_name\","
          "\"args\":{\"name\":\"keel\"}}",
          out);
    for (unsigned s = 0; s < g.nrings; s++) {
        fprintf(out,
                ",\n{\"ph\":\"M\",\"pid\":1,\"tid\":%u,\"name\":\"thread_name\","
                "\"args\":{\"name\":\"shard %u\"}}"
                ",\n{\"ph\":\"M\",\"pid\":1,\"tid\":%u,\"name\":\"thread_sort_index\","
                "\"args\":{\"sort_index\":%u}}",
                s, s, s, s);
    }
    int64_t n = 0;
    for (unsigned s = 0; s < g.nrings; s++) {
        RING_FOR_EACH(&g.rings[s], e)
        {
            put_event(out, s, e, base, sends, nsends, recvs, nrecvs);
            n++;
        }
    }
    fputs("\n],\"displayTimeUnit\":\"ns\"}\n", out);

    /* ferror does not say why (errno may be stale by now); fclose does. */
    err = ferror(out) ? -EIO : 0;
    if (fclose(out) != 0 && !err)
        err = -errno;
    if (err) {
        keel__log("trace: writing %s failed: %s", tmp, keel_strerror(err));
        unlink(tmp);
        goto done;
    }
    if (rename(tmp, path) != 0) {
        err = -errno;
        keel__log("trace: rename(%s, %s) failed: %s", tmp, path, keel_strerror(err));
        unlink(tmp);
        goto done;
    }
    *written = n;
done:
    free(tmp);
    free(sends);
    free(recvs);
    return err;
}
