/* The io_queue: two classes with shares 1000:100 that both have a backlog
 * get the device 10:1 by dispatched bytes (the queue's own accounting),
 * and the low class is not starved. */
#include "harness.h"

TestSuite(disk_ioq, .timeout = 60);

#define PER_CLASS 400
#define WSZ 16384
#define DEPTH 4

static char dir[256];

static struct {
    keel_io_class *hi, *lo;
    keel_file *fhi, *flo;
    char *buf;
    unsigned hi_done, lo_done;
    keel_io_class_stats hi_at_end, lo_at_end; /* when hi's queue emptied */
} q;

typedef struct req {
    bool hi;
    unsigned i;
} req;
static req reqs[2 * PER_CLASS];

static void write_done(void *ctx, keel_result r)
{
    req *rq = ctx;
    H_CHECK_OK(r, WSZ);
    if (rq->hi)
        q.hi_done++;
    else
        q.lo_done++;
    /* The moment the high class's queue empties (its last request has
     * just been dispatched), the contest is over: what each had dispatched
     * by then is the split. */
    keel_io_class_stats hi;
    keel_io_class_stats_get(0, q.hi, &hi);
    if (hi.queued == 0 && q.hi_at_end.dispatched_ops == 0) {
        q.hi_at_end = hi;
        keel_io_class_stats_get(0, q.lo, &q.lo_at_end);
    }
}

static keel_future *closed(void *ctx, keel_result r)
{
    (void)ctx;
    H_CHECK_EQ(r.err, 0);
    return keel_make_ready(0);
}

static keel_future *all_written(void *ctx, keel_result r)
{
    (void)ctx;
    H_CHECK_EQ(r.err, 0);
    keel_future *fs[2] = {keel_file_close(q.fhi), keel_file_close(q.flo)};
    return keel_then(keel_when_all(fs, 2, NULL), closed, NULL);
}

static keel_future *wait_all(void *ctx, keel_result r)
{
    (void)ctx;
    (void)r;
    if (q.hi_done + q.lo_done == 2 * PER_CLASS)
        return keel_then(keel_make_ready(0), all_written, NULL);
    return keel_then(keel_sleep(KEEL_MS(1)), wait_all, NULL);
}

static keel_future *opened(void *ctx, keel_result r)
{
    (void)ctx;
    H_CHECK_EQ(r.err, 0);
    if (r.err)
        return keel_make_error(r.err);
    keel_file **fs = r.ptr;
    q.fhi = fs[0];
    q.flo = fs[1];
    keel_file_set_io_class(q.fhi, q.hi);
    keel_file_set_io_class(q.flo, q.lo);
    keel_io_queue_set_limits(DEPTH, 1 << 20);
    /* Both backlogs at once, interleaved: the queue, not the order of
     * submission, decides who goes. */
    for (unsigned i = 0; i < PER_CLASS; i++) {
        reqs[2 * i] = (req){true, i};
        reqs[2 * i + 1] = (req){false, i};
        keel_on_done(keel_file_write(q.fhi, (uint64_t)i * WSZ, q.buf, WSZ), write_done,
                     &reqs[2 * i]);
        keel_on_done(keel_file_write(q.flo, (uint64_t)i * WSZ, q.buf, WSZ), write_done,
                     &reqs[2 * i + 1]);
    }
    return wait_all(NULL, keel_ok(0));
}

static keel_file *files[2];

static keel_future *opened_lo(void *ctx, keel_result r)
{
    (void)ctx;
    if (r.err)
        return keel_make_error(r.err);
    files[1] = r.ptr;
    return opened(NULL, keel_ok_ptr(files));
}

static keel_future *opened_hi(void *ctx, keel_result r)
{
    (void)ctx;
    if (r.err)
        return keel_make_error(r.err);
    files[0] = r.ptr;
    char path[300];
    snprintf(path, sizeof(path), "%s/lo", dir);
    return keel_then_wrapped(
        keel_file_open(path, KEEL_FILE_WRITE | KEEL_FILE_CREATE | KEEL_FILE_BUFFERED, 0600),
        opened_lo, NULL);
}

static void main_fn(void *arg)
{
    (void)arg;
    h_watchdog(30000);
    char path[300];
    snprintf(path, sizeof(path), "%s/hi", dir);
    h_stop_when_ok(keel_then_wrapped(
        keel_file_open(path, KEEL_FILE_WRITE | KEEL_FILE_CREATE | KEEL_FILE_BUFFERED, 0600),
        opened_hi, NULL));
}

Test(disk_ioq, shares_1000_to_100_split_dispatched_bytes_10_to_1)
{
    snprintf(dir, sizeof(dir), "/var/tmp/keel-ioq-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    q.hi = keel_io_class_create("commitlog", 1000);
    q.lo = keel_io_class_create("compaction", 100);
    cr_assert(q.hi && q.lo);
    q.buf = keel_dma_alloc(WSZ);
    memset(q.buf, 'x', WSZ);
    h_run(1, main_fn, NULL);
    double hi = (double)q.hi_at_end.dispatched_bytes, lo = (double)q.lo_at_end.dispatched_bytes;
    cr_log_info("while both waited: commitlog %.0f KiB, compaction %.0f KiB (ratio %.2f)",
                hi / 1024, lo / 1024, hi / lo);
    cr_assert_eq(q.hi_at_end.dispatched_bytes, (uint64_t)PER_CLASS * WSZ);
    cr_assert_gt(lo, 0, "the low class was starved");
    cr_assert(hi / lo >= 9.0 && hi / lo <= 11.0,
              "dispatched bytes %.0f : %.0f, expected 10:1 +- 10%%", hi, lo);
    cr_assert_eq(q.lo_done, PER_CLASS, "the low class finished after the high one drained");
    keel_dma_free(q.buf);
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}

Test(disk_ioq, classes_validate)
{
    cr_assert_str_eq(keel_io_class_name(keel_io_class_default()), "default");
    errno = 0;
    cr_assert_null(keel_io_class_create("default", 10));
    cr_assert_eq(errno, EEXIST);
    cr_assert_null(keel_io_class_create("x", 0));
    cr_assert_eq(errno, EINVAL);
    cr_assert_null(keel_io_class_create("", 10));
    char name[16];
    for (unsigned i = 1; i < KEEL_MAX_IO_CLASSES; i++) {
        snprintf(name, sizeof(name), "c%u", i);
        cr_assert_not_null(keel_io_class_create(name, 10));
    }
    cr_assert_null(keel_io_class_create("one-too-many", 10));
    cr_assert_eq(errno, ENOSPC);
}
