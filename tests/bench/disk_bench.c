/* bench-disk: keel's side of the disk group (tests/bench/disk.sh), which
 * runs it and fio's io_uring engine in alternating pairs on the same file
 * with the same parameters.
 *
 *   bench-disk randread|seqwrite FILE BS QD SECONDS [WARMUP_SECONDS]
 *
 * One shard (on the CPUs the process may use: disk.sh pins it with
 * taskset). Opens FILE (it must exist; its size is the range used) through
 * keel_file_open, O_DIRECT where the file system allows it, and keeps
 * exactly QD operations of BS bytes in flight: each completion's
 * continuation issues the next one. randread reads at uniformly random
 * BS-aligned offsets; seqwrite writes consecutive BS blocks from offset 0,
 * wrapping at the file's end (fio's rw=write with time_based does the
 * same). After WARMUP_SECONDS (default 1, as fio's ramp_time) it counts
 * the operations that complete during SECONDS, then lets the ones in
 * flight finish and closes the file. Prints one line:
 *
 *   disk: mode=randread bs=4096 qd=32 direct=1 ops=N bytes=N secs=S iops=X
 *         bw_mib=X cpu_us_per_op=X
 *
 * cpu_us_per_op is the process's utime+stime (getrusage, every thread,
 * blocking pool included) over the measured span, per operation. Exits 1
 * on any error, with a line saying which. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include <keel/keel.h>

enum mode { RANDREAD, SEQWRITE };

typedef struct disk_bench {
    enum mode mode;
    const char *path;
    size_t bs;
    unsigned qd;
    double seconds, warmup;

    keel_file *f;
    uint64_t size, blocks, next_block;
    uint64_t rng;
    unsigned char *bufs; /* qd buffers of bs bytes */
    struct slot *slots;
    bool direct, registered;

    unsigned inflight;
    bool stopping;
    uint64_t warm_end_ns, end_ns;
    bool measuring;
    uint64_t ops; /* completed while measuring */
    uint64_t t0_ns, t1_ns;
    double cpu0_us, cpu1_us;
    int err;
    const char *err_what;
} disk_bench;

typedef struct slot slot;
struct slot {
    disk_bench *b;
    unsigned char *buf;
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static double cpu_us(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e6 +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

static uint64_t xorshift64(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

static void fail(disk_bench *b, const char *what, int err)
{
    if (!b->err) {
        b->err = err;
        b->err_what = what;
    }
    b->stopping = true;
}

static void closed(void *ctx, keel_result r)
{
    disk_bench *b = ctx;
    if (b->registered)
        keel_dma_unregister(b->bufs);
    if (r.err || r.val < 0)
        fail(b, "close", r.err ? r.err : (int)r.val);
    keel_stop();
}

static void issue(slot *s);

static void done(void *ctx, keel_result r)
{
    slot *s = ctx;
    disk_bench *b = s->b;
    b->inflight--;
    if (r.err || r.val < 0)
        fail(b, b->mode == RANDREAD ? "read" : "write", r.err ? r.err : (int)r.val);
    else if ((size_t)r.val != b->bs)
        fail(b, "short read/write", EIO);

    if (!b->stopping) {
        uint64_t now = now_ns();
        if (b->measuring) {
            b->ops++;
            if (now >= b->end_ns) {
                b->t1_ns = now;
                b->cpu1_us = cpu_us();
                b->stopping = true;
            }
        } else if (now >= b->warm_end_ns) {
            b->measuring = true;
            b->t0_ns = now;
            b->cpu0_us = cpu_us();
            b->end_ns = now + (uint64_t)(b->seconds * 1e9);
        }
    }
    if (!b->stopping) {
        issue(s);
        return;
    }
    if (b->inflight == 0)
        keel_on_done(keel_file_close(b->f), closed, b);
}

static void issue(slot *s)
{
    disk_bench *b = s->b;
    uint64_t block;
    if (b->mode == RANDREAD) {
        block = xorshift64(&b->rng) % b->blocks;
    } else {
        block = b->next_block++;
        if (b->next_block == b->blocks)
            b->next_block = 0;
    }
    b->inflight++;
    keel_future *f = b->mode == RANDREAD ? keel_file_read(b->f, block * b->bs, s->buf, b->bs)
                                         : keel_file_write(b->f, block * b->bs, s->buf, b->bs);
    keel_on_done(f, done, s);
}

static void sized(void *ctx, keel_result r)
{
    disk_bench *b = ctx;
    if (r.err || r.val < 0) {
        fail(b, "size", r.err ? r.err : (int)r.val);
        keel_on_done(keel_file_close(b->f), closed, b);
        return;
    }
    b->size = (uint64_t)r.val;
    b->blocks = b->size / b->bs;
    if (b->blocks < b->qd) {
        fail(b, "file smaller than QD blocks", EINVAL);
        keel_on_done(keel_file_close(b->f), closed, b);
        return;
    }
    b->bufs = keel_dma_alloc(b->bs * b->qd);
    slot *slots = b->slots = calloc(b->qd, sizeof(*slots));
    if (!b->bufs || !slots) {
        fail(b, "allocating buffers", ENOMEM);
        keel_on_done(keel_file_close(b->f), closed, b);
        return;
    }
    /* Registered buffers (READ_FIXED/WRITE_FIXED) unless DISK_BENCH_FIXED=0;
     * disk.sh gives fio fixedbufs=1 to match. */
    const char *fixed = getenv("DISK_BENCH_FIXED");
    if (!fixed || strcmp(fixed, "0")) {
        int rc = keel_dma_register(b->bufs, b->bs * b->qd);
        if (rc)
            fprintf(stderr, "disk: keel_dma_register: %s; going on unregistered\n", strerror(-rc));
        else
            b->registered = true;
    }
    /* Written data: not zeros, so no layer below can treat it specially. */
    for (size_t i = 0; i < b->bs * b->qd; i++)
        b->bufs[i] = (unsigned char)xorshift64(&b->rng);
    b->warm_end_ns = now_ns() + (uint64_t)(b->warmup * 1e9);
    if (b->warmup <= 0) {
        b->measuring = true;
        b->t0_ns = now_ns();
        b->cpu0_us = cpu_us();
        b->end_ns = b->t0_ns + (uint64_t)(b->seconds * 1e9);
    }
    for (unsigned i = 0; i < b->qd; i++) {
        slots[i].b = b;
        slots[i].buf = b->bufs + (size_t)i * b->bs;
        issue(&slots[i]);
    }
}

static void opened(void *ctx, keel_result r)
{
    disk_bench *b = ctx;
    if (r.err) {
        fail(b, "open", r.err);
        keel_stop();
        return;
    }
    b->f = r.ptr;
    b->direct = keel_file_is_direct(b->f);
    keel_on_done(keel_file_size(b->f), sized, b);
}

static void bench_main(void *arg)
{
    disk_bench *b = arg;
    unsigned flags = b->mode == RANDREAD ? KEEL_FILE_READ : KEEL_FILE_READ | KEEL_FILE_WRITE;
    keel_on_done(keel_file_open(b->path, flags, 0644), opened, b);
}

static int usage(void)
{
    fprintf(stderr, "usage: bench-disk randread|seqwrite FILE BS QD SECONDS [WARMUP_SECONDS]\n");
    return 2;
}

int main(int argc, char **argv)
{
    if (argc < 6 || argc > 7)
        return usage();
    disk_bench b;
    memset(&b, 0, sizeof(b));
    if (!strcmp(argv[1], "randread"))
        b.mode = RANDREAD;
    else if (!strcmp(argv[1], "seqwrite"))
        b.mode = SEQWRITE;
    else
        return usage();
    b.path = argv[2];
    b.bs = strtoull(argv[3], NULL, 0);
    b.qd = (unsigned)strtoul(argv[4], NULL, 0);
    b.seconds = strtod(argv[5], NULL);
    b.warmup = argc > 6 ? strtod(argv[6], NULL) : 1.0;
    if (b.bs == 0 || b.bs % 512 || b.qd == 0 || b.qd > 4096 || b.seconds <= 0 || b.warmup < 0)
        return usage();
    b.rng = now_ns() | 1;

    keel_config cfg;
    keel_config_init(&cfg);
    cfg.shards = 1;
    cfg.quiet = true;
    cfg.handle_signals = false;
    int err = keel_run(&cfg, bench_main, &b);
    free(b.slots);
    if (b.bufs)
        keel_dma_free(b.bufs);
    if (err) {
        printf("disk: FAIL: keel_run: %s\n", keel_strerror(err));
        return 1;
    }
    if (b.err) {
        printf("disk: FAIL: %s %s: %s\n", b.err_what, b.path, strerror(b.err < 0 ? -b.err : b.err));
        return 1;
    }
    if (!b.t1_ns || !b.ops) {
        printf("disk: FAIL: the measured span did not complete\n");
        return 1;
    }
    double secs = (double)(b.t1_ns - b.t0_ns) / 1e9;
    double bytes = (double)b.ops * (double)b.bs;
    printf("disk: mode=%s bs=%zu qd=%u direct=%d ops=%llu bytes=%.0f secs=%.3f iops=%.0f "
           "bw_mib=%.2f cpu_us_per_op=%.3f\n",
           argv[1], b.bs, b.qd, b.direct ? 1 : 0, (unsigned long long)b.ops, bytes, secs,
           (double)b.ops / secs, bytes / secs / 1048576.0, (b.cpu1_us - b.cpu0_us) / (double)b.ops);
    return 0;
}
