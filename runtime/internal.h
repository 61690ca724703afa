/* keel runtime — private declarations shared by runtime/ files and the other
 * modules of keel (net/, disk/, sched/). Never installed. */
#ifndef KEEL_RUNTIME_INTERNAL_H
#define KEEL_RUNTIME_INTERNAL_H

#include <assert.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <keel/keel.h>

#define KEEL__CACHELINE 64
#define KEEL__ALIGNED __attribute__((aligned(KEEL__CACHELINE)))
#define KEEL__LIKELY(x) __builtin_expect(!!(x), 1)
#define KEEL__UNLIKELY(x) __builtin_expect(!!(x), 0)

/* Continuations run inline (the ready fast path) up to this depth; deeper
 * ones are queued, which bounds the stack of any chain. */
#define KEEL__MAX_INLINE_DEPTH 32

/* A shard busy only with cross-shard messages goes round its loop without
 * entering the kernel, but enters at least this often to reap I/O. */
#define KEEL__IO_POLL_NS 50000ull

typedef struct keel__shard keel__shard;

/* ---- logging ------------------------------------------------------------ */

void keel__log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- per-shard slab of small fixed-size objects ------------------------- */

typedef struct keel__slab {
    void *free_list;
    void *chunks; /* singly linked list of malloc'd chunks */
    uint32_t obj_size;
    uint64_t in_use;
} keel__slab;

void keel__slab_init(keel__slab *s, uint32_t obj_size);
void keel__slab_destroy(keel__slab *s);
void *keel__slab_grow(keel__slab *s);

static inline void *keel__slab_alloc(keel__slab *s)
{
    void *p = s->free_list;
    if (KEEL__UNLIKELY(p == NULL))
        p = keel__slab_grow(s);
    s->free_list = *(void **)p;
    s->in_use++;
    return p;
}

static inline void keel__slab_free(keel__slab *s, void *p)
{
    *(void **)p = s->free_list;
    s->free_list = p;
    s->in_use--;
}

/* Size classes for the shard's small-object allocator. */
enum {
    KEEL__SLAB_64,
    KEEL__SLAB_128,
    KEEL__SLAB_256,
    KEEL__SLAB_512,
    KEEL__SLAB_1K,
    KEEL__SLAB_2K,
    KEEL__SLAB_4K,
    KEEL__SLAB_CLASSES
};
#define KEEL__SLAB_MAX 4096

/* ---- futures ------------------------------------------------------------ */

enum { KEEL__F_PENDING = 0, KEEL__F_READY = 1 };

/* On the run queue to be resolved (keel_yield), not to run a continuation. */
#define KEEL__FF_YIELD 1
/* On the run queue to call ctx as keel_future *(*)(void *) with the arg in
 * `result.ptr` and link its outcome to `next` (keel_with_sched_group). */
#define KEEL__FF_CALL 2

enum {
    KEEL__C_NONE = 0, /* no consumer yet */
    KEEL__C_THEN,
    KEEL__C_CATCH,
    KEEL__C_WRAPPED,
    KEEL__C_FINALLY,
    KEEL__C_FORWARD, /* resolve `next` with this result */
    KEEL__C_ON_DONE, /* call fin(ctx, r); nothing follows */
    KEEL__C_DETACH,
};

struct keel_future_s {
    keel_result result;
    union {
        keel_then_fn then;
        keel_finally_fn fin;
    } fn;
    void *ctx;
    keel_future *next;  /* the future the continuation's outcome resolves */
    keel_future *qnext; /* run-queue link */
    uint8_t state;
    uint8_t kind;
    uint8_t flags;  /* KEEL__FF_* */
    uint8_t group;  /* scheduling group its continuation runs in (set at attach) */
    uint16_t shard; /* owner, for debug assertions */
};
_Static_assert(sizeof(struct keel_future_s) <= 64, "a future fits one slab-64 object");

/* Allocates a pending future with no consumer. */
keel_future *keel__future_new(void);
/* Resolves a pending future: runs or queues its continuation. */
void keel__future_resolve(keel_future *f, keel_result r);
/* Makes target resolve as h does (h: a future a continuation returned). */
void keel__future_link(keel__shard *s, keel_future *h, keel_future *target);

/* ---- timers -------------------------------------------------------------- */

/* A timer; heap_idx is SIZE_MAX while not armed (initialize it so). */
typedef struct keel__timer {
    uint64_t deadline_ns;
    size_t heap_idx;
    void (*fire)(struct keel__timer *t, int err); /* err: 0, or -ECANCELED */
    void *ctx;
} keel__timer;

/* Arms t (caller-owned memory) on this shard. */
void keel__timer_arm(keel__timer *t, uint64_t deadline_ns);
/* Disarms t if armed; returns whether it was. */
bool keel__timer_cancel(keel__timer *t);

/* ---- reactor backends ---------------------------------------------------- */

typedef struct keel__shard keel__shard;
typedef struct keel__op keel__op;

enum {
    KEEL__OP_READ = 1,     /* read(fd, buf, len) at the current position */
    KEEL__OP_ACCEPT_MULTI, /* multishot accept: one completion per socket */
    KEEL__OP_RECV_MULTI,   /* multishot recv into the shard's provided buffers */
    KEEL__OP_RECV,         /* one recv into a provided buffer */
    KEEL__OP_SENDMSG,      /* sendmsg(fd, msg, MSG_NOSIGNAL) */
    KEEL__OP_SEND,         /* send(fd, buf, len, MSG_NOSIGNAL) */
    KEEL__OP_CONNECT,      /* connect(fd, addr, addrlen) */
    KEEL__OP_FILE,         /* a file operation: the op heads a keel__fop (disk/) */
};

/* Completion flags, shared by both backends (the values are io_uring's). */
#define KEEL__F_BUFFER 1u /* a provided buffer was used: its id is flags >> 16 */
#define KEEL__F_MORE 2u   /* a multishot op stays armed */
#define KEEL__BUF_SHIFT 16

/* One I/O operation in flight. The backend calls complete() once with the
 * result (>= 0 or -errno), or, for multishot ops, once per event while
 * KEEL__F_MORE is set; never from inside submit(). Memory is the caller's
 * and must stay valid until the last completion has run. */
struct keel__op {
    uint8_t type;
    bool armed;     /* epoll: registered and waiting for readiness */
    bool cancelled; /* epoll: to complete with -ECANCELED at the next poll */
    int fd;
    union { /* by type */
        struct {
            void *buf;
            uint32_t len;
        };                  /* READ */
        struct msghdr *msg; /* SENDMSG */
        struct {
            const struct sockaddr *addr;
            uint32_t addrlen;
        }; /* CONNECT */
    };
    void (*complete)(keel__op *op, int res, uint32_t flags);
    void *ctx;
    keel__op *next_ready; /* epoll: ops to perform at the next poll */
};

/* A file operation (disk/file.c): the io_uring backend preps it from the
 * fields after `op`, which must come first. A backend that cannot run a
 * kind (epoll: all of them; io_uring: opcodes the kernel lacks) refuses it
 * in submit() with -EOPNOTSUPP, before taking an SQE, and file.c runs it in
 * the blocking pool instead. */
enum {
    KEEL__FOP_READ = 1,
    KEEL__FOP_WRITE,
    KEEL__FOP_FSYNC,
    KEEL__FOP_FDATASYNC,
    KEEL__FOP_FALLOCATE,
    KEEL__FOP_CLOSE,
    KEEL__FOP_WRITE_DSYNC, /* write, then fdatasync linked to it (two completions) */
    KEEL__FOP_FTRUNCATE,   /* off: the new size */
    KEEL__FOP_OPEN,        /* openat(AT_FDCWD, path, flags, mode) */
    KEEL__FOP_STATX,       /* statx(fd or AT_FDCWD, path, flags, mask, buf) */
    KEEL__FOP_RENAME,      /* renameat(AT_FDCWD, path, AT_FDCWD, path2) */
    KEEL__FOP_UNLINK,      /* unlinkat(AT_FDCWD, path, 0) */
    KEEL__FOP_MKDIR,       /* mkdirat(AT_FDCWD, path, mode) */
    KEEL__FOP_KINDS
};
/* One io_uring read or write moves at most this much; the rest of a write
 * goes on where it ended, a read returns short. */
#define KEEL__FOP_MAX_IO (1u << 30)
typedef struct keel__fop {
    keel__op op;
    keel__op link; /* WRITE_DSYNC: the linked fdatasync's completion */
    uint8_t kind;
    uint8_t cls;         /* io_queue class */
    uint8_t completions; /* still to come from the ring (2 for a linked pair) */
    bool queued_in_ioq;  /* went through the io_queue: tell it when done */
    bool opening;        /* STATX: DIOALIGN of the file OPEN just opened (out) */
    int32_t link_res;    /* WRITE_DSYNC: what the fdatasync returned */
    int64_t first_res;   /* WRITE_DSYNC: what the write returned */
    void *buf;           /* READ/WRITE data; STATX: the struct statx */
    uint64_t len, off;   /* len: what is left to move (a short write goes on) */
    uint64_t done;       /* bytes written so far */
    char *path, *path2;  /* path operations: owned copies */
    int flags;           /* OPEN: open flags; STATX: AT_ flags */
    uint32_t mode;       /* OPEN, MKDIR: mode; STATX: the statx mask */
    void *out;           /* what the caller's result is copied to (stat) */
    keel_promise p;
    struct keel__fop *qnext; /* in its io_queue class, while queued */
    uint64_t queued_ns;
    uint64_t cost; /* what it counts against the io_queue's budget */
} keel__fop;

/* The shard's receive buffers: `count` buffers of `size` bytes that the
 * kernel (io_uring provided-buffer ring) or the epoll backend picks for a
 * multishot recv. A connection holds buffers only while their bytes are
 * unread or unsent, so an idle connection holds none. Buffers are
 * reference-counted because a forwarded buffer can be half in an input
 * queue and half in an output queue. */
typedef struct keel__bufpool {
    char *base;
    uint32_t size;
    uint32_t count;
    uint32_t provided;  /* buffers handed to the kernel so far (<= count) */
    uint32_t available; /* of those, free now */
    uint16_t *refs;
} keel__bufpool;

typedef struct keel__reactor_ops {
    const char *name;
    /* Whether this backend can run here; fills why (may be NULL) if not. */
    bool (*probe)(char *why, size_t why_len);
    /* Creates the backend on the calling (shard) thread. 0 or -errno. */
    int (*init)(keel__shard *s, const keel_config *c);
    void (*fini)(keel__shard *s);
    /* Submits queued operations and dispatches completions, waiting up to
     * timeout_ns for one (0: don't wait; UINT64_MAX: until something). */
    void (*poll)(keel__shard *s, uint64_t timeout_ns);
    /* Queues op; it is submitted at the next poll. 0 or -errno. */
    int (*submit)(keel__shard *s, keel__op *op);
    /* Asks the kernel to cancel op; op completes with -ECANCELED (or its
     * result, if it raced). */
    void (*cancel)(keel__shard *s, keel__op *op);
    /* Whether operations are queued that only the next poll submits. */
    bool (*has_queued)(keel__shard *s);
    /* Wakes target out of its poll. self is the calling shard, or NULL
     * from a thread that is no shard. */
    void (*wake)(keel__shard *self, keel__shard *target);
    /* Sets up s->bufs (memory already allocated) for multishot recv. */
    int (*bufs_init)(keel__shard *s);
    /* Gives buffer bid back for reuse. */
    void (*buf_return)(keel__shard *s, uint16_t bid);
    /* Registers [base, base + len) with the kernel so that file reads and
     * writes inside it skip pinning pages per request (READ_FIXED and
     * WRITE_FIXED), and unregisters the region that starts at base. 0 or
     * -errno. NULL where the backend has nothing to register (epoll). */
    int (*dma_register)(keel__shard *s, void *base, size_t len);
    int (*dma_unregister)(keel__shard *s, void *base);
} keel__reactor_ops;

extern const keel__reactor_ops keel__reactor_uring;
extern const keel__reactor_ops keel__reactor_epoll;

/* ---- cross-shard messages ------------------------------------------------ */

typedef struct keel__msg keel__msg;
struct keel__ring; /* a ck_ring on cache lines of its own */
typedef struct keel__job keel__job;

/* ---- scheduling groups (sched/group.c) ----------------------------------- */

typedef struct keel__group_rq {
    keel_future *head, *tail;
    uint64_t len;
    uint64_t vruntime;       /* runtime scaled by 1/shares, for the pick */
    uint64_t runnable_since; /* when it last started waiting for the CPU */
    uint64_t runtime_ns, tasks, wait_ns, waits;
    uint64_t wait_hist[KEEL_SCHED_LATENCY_BUCKETS];
} keel__group_rq;

/* ---- the shard ----------------------------------------------------------- */

enum { KEEL__RUNNING = 0, KEEL__STOPPING, KEEL__DRAINED };

typedef struct keel__exit_hook {
    keel_future *(*fn)(void *arg);
    void *arg;
} keel__exit_hook;

struct keel__shard {
    /* Written by other threads: the sleep flag and the blocking pool's
     * completion stack, each on a line of its own. */
    KEEL__ALIGNED _Atomic int sleeping;
    KEEL__ALIGNED void *_Atomic jobs_done; /* Treiber stack of keel__job */
    KEEL__ALIGNED _Atomic int quiescent;   /* read by the shutdown coordinator */
    _Atomic uint64_t activity_epoch;

    /* Everything below is touched by the owning thread only. */
    KEEL__ALIGNED unsigned id;
    int cpu;
    pthread_t thread;

    /* Run queues, one per scheduling group (sched/group.c). */
    keel__group_rq groups[KEEL_MAX_SCHED_GROUPS];
    uint32_t runnable; /* bit g: groups[g] has queued tasks */
    uint8_t cur_group; /* group of the running task */
    uint64_t vtime;    /* virtual time of the last group picked */
    uint64_t busy_mark_ns, busy_mark_sleep; /* end of the last run, sleep_ns then */
    unsigned check_every; /* tasks between clock reads in a run (adaptive) */
    unsigned inline_depth;
    uint64_t now_ns;
    uint64_t quota_ns;
    uint64_t quota_deadline_ns;
    uint64_t last_poll_ns;

    keel__slab slabs[KEEL__SLAB_CLASSES];

    keel__timer **timer_heap;
    size_t timer_count, timer_cap;
    bool timers_closed; /* shutdown: new sleeps fail -ECANCELED */

    const keel__reactor_ops *backend;
    void *backend_state;
    int wake_efd; /* eventfd: wake-ups from threads that own no ring */
    keel__op wake_op;
    uint64_t wake_buf;
    int ring_fd;                         /* for IORING_OP_MSG_RING wake-ups, or -1 */
    uint32_t pending_ops;                /* backend ops in flight that shutdown waits for */
    keel__bufpool *bufs;                 /* created by the first listen/connect */
    void (*before_poll)(keel__shard *s); /* net: gathers this turn's sends */
    void (*module_fini)(keel__shard *s); /* net: frees its state after the backend */
    void *net;                           /* net/ module state */

    keel__msg **staged_head, **staged_tail; /* per target, FIFO */
    bool *staged_dirty;
    uint64_t outstanding; /* submit_to replies + blocking jobs awaited */

    keel__exit_hook *exit_hooks;
    size_t exit_hook_count, exit_hook_cap;
    int exit_state;
    bool hooks_done;

    uint64_t *je_allocatedp, *je_deallocatedp;
    unsigned je_arena; /* the shard's jemalloc arena + 1; 0: none */
    keel_shard_stats stats;

    /* Stall detector (sched/stall.c): the loop counts units of progress
     * (tasks, completions, messages, loop phases); the shard's CPU-time
     * timer signal sees whether the count moved between its ticks. */
    volatile uint64_t stall_seq;
    volatile int stall_asleep; /* waiting in the kernel: not a stall */
    uint64_t stall_seen_seq, stall_seen_ns, stall_reported_seq; /* the handler's */
    uint64_t stall_window_start_ns;
    uint32_t stall_window_reports;
    void *stall_timer; /* timer_t, created on the shard thread */
    bool stall_timer_ok;

    void *trace; /* sched/trace.c per-shard ring, or NULL */
    void *disk;  /* disk/ io_queue, created on first use */
};

typedef struct keel__runtime {
    unsigned nshards;
    keel__shard **shards;
    struct keel__ring *rings; /* nshards x nshards, [from * n + to] */
    void **ring_bufs;
    unsigned ring_capacity;
    const keel__reactor_ops *backend;
    const char *backend_why;
    keel_config config;
    _Atomic int stop_requested;
    _Atomic int exit_now;
    pthread_barrier_t barrier;
    _Atomic int init_failed; /* a shard could not start: the others skip their loops */
    _Atomic int run_failed;  /* a start-up step failed once the loops ran (the metrics
                                listener): keel_run stops cleanly, then returns -EIO */
} keel__runtime;

extern keel__runtime *keel__rt;
extern __thread keel__shard *keel__self;

static inline keel__shard *keel__shard_self(void)
{
    assert(keel__self != NULL && "called off a shard thread");
    return keel__self;
}

void *keel__alloc(size_t size);
/* aligned_alloc with the size rounded up to the alignment, as C11 asks. */
void *keel__aligned_alloc(size_t align, size_t size);
void keel__free(void *p, size_t size);

/* Marks the shard active (not quiescent) for the shutdown protocol. */
void keel__shard_note_activity(keel__shard *s);

uint64_t keel__clock_ns(void);

/* Wakes target through its eventfd. Async-signal-safe; any thread. */
void keel__eventfd_wake(keel__shard *target);

/* runtime/timer.c */
void keel__timers_expire(keel__shard *s);
uint64_t keel__timers_next_ns(keel__shard *s); /* UINT64_MAX: none */
void keel__timers_cancel_all(keel__shard *s);

/* sched/group.c: run queues by group */
void keel__rq_push(keel__shard *s, keel_future *f);
static inline bool keel__rq_empty(const keel__shard *s)
{
    return s->runnable == 0;
}
/* Returns whether it stopped because the quota was spent. */
bool keel__run_tasks(keel__shard *s);
void keel__run_continuation(keel__shard *s, keel_future *f);
void keel__sched_shard_init(keel__shard *s);

/* sched/stall.c: the stall detector (config.stall_threshold_ms). */
int keel__stall_setup(const keel_config *c); /* process-wide, before shards */
void keel__stall_shard_init(keel__shard *s);
void keel__stall_shard_fini(keel__shard *s);
/* The loop made progress (a task or a callback starts or ends): a stall is
 * one unit of work running past the threshold. A plain store. */
static inline void keel__stall_progress(keel__shard *s)
{
    s->stall_seq++;
}

/* disk/: frees the shard's io_queue. */
void keel__disk_shard_fini(keel__shard *s);

/* sched/metrics.c: the /metrics server, started on shard 0 by keel_run. */
void keel__metrics_start(void);

/* ---- tracing (sched/trace.c) ----------------------------------------------
 * Cost when off: one load of a read-mostly global and a branch. */
extern _Atomic int keel__trace_on;
#define KEEL__TRACING() KEEL__UNLIKELY(atomic_load_explicit(&keel__trace_on, memory_order_relaxed))

enum {
    KEEL__EV_TASK = 1,     /* a = group, t0..t1: a task (or run of tasks) ran */
    KEEL__EV_IO_SUBMIT,    /* a = op type, b = fd */
    KEEL__EV_IO_COMPLETE,  /* a = op type, b = result */
    KEEL__EV_MSG_SEND,     /* a = target shard, b = flow id */
    KEEL__EV_MSG_RECV,     /* a = source shard, b = flow id */
    KEEL__EV_SLEEP,        /* t0..t1: waited in the kernel */
};
void keel__trace_record(keel__shard *s, uint8_t type, uint64_t t0, uint64_t t1, uint32_t a,
                        int64_t b);
/* Process-wide setup/teardown at keel_run (config.trace_file, buffer). */
int keel__trace_setup(const keel_config *c);
void keel__trace_shard_init(keel__shard *s);
/* After every shard has been joined (rings outlive their threads): writes
 * the --trace file if still recording, frees the rings. */
void keel__trace_teardown(void);
static inline void keel__trace_io(keel__shard *s, uint8_t type, uint32_t op, int64_t v)
{
    if (KEEL__TRACING())
        keel__trace_record(s, type, keel__clock_ns(), 0, op, v);
}

/* Backends call this for every completion they dispatch. */
static inline void keel__op_complete(keel__shard *s, keel__op *op, int res, uint32_t flags)
{
    keel__trace_io(s, KEEL__EV_IO_COMPLETE, op->type, res);
    keel__stall_progress(s);
    op->complete(op, res, flags);
}

/* Backends call this when the kernel returns from poll: the clock moves,
 * a wait is accounted as sleep, and stalls count from here. */
static inline void keel__poll_returned(keel__shard *s, bool waited)
{
    uint64_t now = keel__clock_ns();
    if (waited) {
        s->stats.sleep_ns += now - s->now_ns;
        if (KEEL__TRACING())
            keel__trace_record(s, KEEL__EV_SLEEP, s->now_ns, now, 0, 0);
    }
    s->now_ns = now;
    s->stall_asleep = 0;
    keel__stall_progress(s);
}

/* runtime/xshard.c */
int keel__xshard_init(keel__runtime *rt);
void keel__xshard_fini(keel__runtime *rt);
int keel__xshard_shard_init(keel__shard *s);
void keel__xshard_shard_fini(keel__shard *s);
void keel__xshard_publish(keel__shard *s);
bool keel__xshard_poll(keel__shard *s); /* returns whether it received */
bool keel__xshard_pending_in(keel__shard *s);
bool keel__xshard_staged(keel__shard *s);

/* runtime/blocking.c */
int keel__blocking_start(unsigned threads);
void keel__blocking_stop(void);
bool keel__blocking_poll(keel__shard *s);
bool keel__blocking_pending_in(keel__shard *s);

/* runtime/memory.c */
int keel__memory_shard_init(keel__shard *s);
void keel__memory_stats(keel__shard *s);
void keel__memory_refresh(void); /* before reading arena stats */
/* Bytes allocated from and resident in s's arena (false without jemalloc). */
bool keel__memory_arena_stats(const keel__shard *s, uint64_t *allocated, uint64_t *resident);

/* runtime/config.c */
/* Takes the options named in opts out of argv (as --name VALUE or
 * --name=VALUE), handing each to take(ctx, index in opts, value) and
 * keeping the other arguments in order. Returns 0, take()'s first error,
 * or -KEEL_EBADCONFIG (logged) for an option without its value. */
int keel__take_options(int *argc, char **argv, const char *const *opts, size_t nopts,
                       int (*take)(void *ctx, size_t which, const char *val), void *ctx);
/* Parses v as a number from 0 to max for option opt; logs and returns
 * -KEEL_EBADCONFIG if it is not one. */
int keel__parse_uint(const char *opt, const char *v, unsigned long max, unsigned *out);
#include <sched.h>
int keel__parse_cpuset(const char *list, cpu_set_t *set);
void keel__format_cpuset(const cpu_set_t *set, char *buf, size_t len);

/* runtime/signals.c */
int keel__signals_setup(sigset_t *old);
void keel__signals_restore(const sigset_t *old);
int keel__signals_shard_init(keel__shard *s);
void keel__signals_shard_fini(keel__shard *s);

#endif
