/* Streams over files: the appender's write-behind, group commit, direct
 * tail padding and error retry, and the reader's read-ahead, on a real
 * disk (/var/tmp, O_DIRECT where it works) and on tmpfs, on both
 * backends. */
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "harness.h"

TestSuite(disk_stream, .timeout = 120);

static char dir[256], path[300];

static void make_dir(const char *base)
{
    struct stat st;
    if (stat(base, &st) || !S_ISDIR(st.st_mode))
        cr_skip_test("SKIPPED: no %s here", base);
    snprintf(dir, sizeof(dir), "%s/keel-stream-XXXXXX", base);
    cr_assert_not_null(mkdtemp(dir), "mkdtemp in %s: %s", base, strerror(errno));
    snprintf(path, sizeof(path), "%s/data", dir);
}

static void remove_dir(void)
{
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}

static uint64_t rng = 88172645463325252ull;
static uint64_t next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* The whole file as the test thread sees it, after keel_run returned. */
static char *slurp(size_t *len)
{
    int fd = open(path, O_RDONLY);
    cr_assert_geq(fd, 0, "open %s: %s", path, strerror(errno));
    struct stat st;
    cr_assert_eq(fstat(fd, &st), 0);
    char *b = malloc((size_t)st.st_size + 1);
    cr_assert_not_null(b);
    ssize_t n = pread(fd, b, (size_t)st.st_size, 0);
    cr_assert_eq(n, st.st_size, "pread: %zd of %lld", n, (long long)st.st_size);
    close(fd);
    *len = (size_t)st.st_size;
    return b;
}

static void write_file(const char *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, data, len), (ssize_t)len);
    close(fd);
}

/* ---- a test as a chain of steps -------------------------------------------------------
 *
 * Each test is a function of (pc, result) that returns the next future, or
 * NULL when done; it sets pc itself to say which step the result goes to. */

typedef keel_future *(*step_fn)(keel_result r);
static step_fn steps;
static int pc;

static keel_future *drive(void *ctx, keel_result r)
{
    (void)ctx;
    keel_future *next = steps(r);
    return next ? keel_then_wrapped(next, drive, NULL) : keel_make_ready(0);
}

static void steps_main(void *arg)
{
    (void)arg;
    h_watchdog(100000);
    pc = 0;
    h_stop_when_ok(drive(NULL, keel_ok(0)));
}

static void run_steps(step_fn fn)
{
    steps = fn;
    h_run(1, steps_main, NULL);
}

/* Common state: the file, an appender, a reader and the bytes expected. */
static struct {
    unsigned open_flags;
    keel_file *f;
    keel_appender *a;
    keel_reader *rd;
    bool direct;
    size_t blk;
    char *want;
    size_t want_len;
    char *got;
    size_t got_len, got_cap;
    size_t read_max; /* reads take 1..read_max bytes */
    uint64_t read_from;
} t;

static void reset(void)
{
    free(t.want);
    free(t.got);
    memset(&t, 0, sizeof(t));
}

/* Faults the read-back buffer in on the test thread, not on the shard. */
static void prepare_got(size_t read_max)
{
    t.read_max = read_max;
    t.got_cap = t.want_len + read_max + 1;
    t.got = malloc(t.got_cap);
    cr_assert_not_null(t.got);
    memset(t.got, 0, t.got_cap);
}

static keel_future *open_file(unsigned extra)
{
    return keel_file_open(path, KEEL_FILE_READ | KEEL_FILE_WRITE | KEEL_FILE_CREATE | extra, 0600);
}

static void opened(keel_result r)
{
    H_CHECK_EQ(r.err, 0);
    t.f = r.ptr;
    t.direct = keel_file_is_direct(t.f);
    t.blk = keel_file_offset_align(t.f);
    if (keel_file_mem_align(t.f) > t.blk)
        t.blk = keel_file_mem_align(t.f);
}

/* Reads with the reader into t.got until it returns 0; true when done. */
static keel_future *read_some(void)
{
    size_t n = 1 + (size_t)(next_rand() % t.read_max);
    if (t.got_len + n > t.got_cap) {
        /* Room for the whole file at once: copying a large buffer on the
         * shard would stall it. */
        t.got_cap = t.want_len + t.got_len + n;
        t.got = realloc(t.got, t.got_cap);
    }
    return keel_reader_read(t.rd, t.got + t.got_len, n);
}

static bool read_back(keel_result r)
{
    H_CHECK_EQ(r.err, 0);
    if (r.err || r.val == 0)
        return true;
    t.got_len += (size_t)r.val;
    H_CHECK_EQ(keel_reader_offset(t.rd), t.read_from + t.got_len);
    return false;
}

static void check_got(void)
{
    size_t left = t.read_from < t.want_len ? t.want_len - (size_t)t.read_from : 0;
    H_CHECK_EQ(t.got_len, left);
    if (t.got_len == left && t.got_len && memcmp(t.got, t.want + t.read_from, t.got_len) != 0)
        H_FAIL("the reader returned bytes that differ from the file's");
}

/* ---- many small appends -------------------------------------------------------------- */

#define RECORDS 100000
#define BATCH 1000

static struct {
    size_t pos; /* into t.want */
    unsigned records;
    unsigned flushes, flushed, write_outs, written_out;
} ma;

static void flush_checked(void *ctx, keel_result r)
{
    uint64_t target = (uint64_t)(uintptr_t)ctx;
    H_CHECK_OK(r, 0);
    H_CHECK_GE(keel_appender_durable(t.a), target);
    H_CHECK_GE(keel_appender_written(t.a), target);
    ma.flushed++;
}

static void write_out_checked(void *ctx, keel_result r)
{
    uint64_t target = (uint64_t)(uintptr_t)ctx;
    H_CHECK_OK(r, 0);
    H_CHECK_GE(keel_appender_written(t.a), target);
    ma.written_out++;
}

static size_t record_len(size_t i)
{
    return 1 + (size_t)((i * 2654435761u) >> 7) % 300;
}

static keel_future *many_steps(keel_result r)
{
    switch (pc) {
    case 0: pc = 1; return open_file(KEEL_FILE_TRUNCATE);
    case 1:
        opened(r);
        if (r.err)
            return NULL;
        t.a = keel_appender_new(t.f, 0, 0);
        H_CHECK(t.a != NULL);
        pc = 2;
        /* fall through */
    case 2:
        /* A batch of appends, then a flush nobody waits for, then a turn
         * of the reactor so writes complete while appends go on. */
        for (int i = 0; i < BATCH && ma.records < RECORDS; i++, ma.records++) {
            size_t n = record_len(ma.records);
            H_CHECK_EQ(keel_appender_append(t.a, t.want + ma.pos, n), 0);
            ma.pos += n;
        }
        H_CHECK_EQ(keel_appender_offset(t.a), ma.pos);
        uint64_t target = keel_appender_offset(t.a);
        if (ma.records % (10 * BATCH) == 0) {
            ma.write_outs++;
            keel_on_done(keel_appender_write_out(t.a), write_out_checked,
                         (void *)(uintptr_t)target);
        } else {
            ma.flushes++;
            keel_on_done(keel_appender_flush(t.a), flush_checked, (void *)(uintptr_t)target);
        }
        if (ma.records < RECORDS)
            return keel_yield();
        pc = 3;
        return keel_appender_flush(t.a);
    case 3:
        H_CHECK_OK(r, 0);
        H_CHECK_EQ(keel_appender_durable(t.a), keel_appender_offset(t.a));
        H_CHECK_EQ(keel_appender_written(t.a), t.want_len);
        H_CHECK_EQ(keel_appender_error(t.a), 0);
        H_CHECK_EQ(ma.flushed, ma.flushes);
        H_CHECK_EQ(ma.written_out, ma.write_outs);
        pc = 4;
        return keel_appender_close(t.a);
    case 4:
        H_CHECK_OK(r, 0);
        t.rd = keel_reader_new(t.f, 0, 16384, 3);
        H_CHECK(t.rd != NULL);
        pc = 5;
        return read_some();
    case 5:
        if (!read_back(r))
            return read_some();
        check_got();
        pc = 6;
        return keel_reader_close(t.rd);
    case 6:
        H_CHECK_OK(r, 0);
        pc = 7;
        return keel_file_close(t.f);
    default: H_CHECK_OK(r, 0); return NULL;
    }
}

static void many_small_appends(const char *base, unsigned flags)
{
    make_dir(base);
    reset();
    memset(&ma, 0, sizeof(ma));
    t.open_flags = flags;
    for (size_t i = 0; i < RECORDS; i++)
        t.want_len += record_len(i);
    t.want = malloc(t.want_len);
    for (size_t i = 0; i < t.want_len; i++)
        t.want[i] = (char)next_rand();
    prepare_got(700);
    run_steps(many_steps);
    size_t len;
    char *file = slurp(&len);
    cr_assert_eq(len, t.want_len, "the file has %zu bytes, %zu were appended", len, t.want_len);
    cr_assert_eq(memcmp(file, t.want, len), 0, "the file differs from what was appended");
    cr_log_info("%s: direct=%d", base, t.direct);
    free(file);
    reset();
    remove_dir();
}

Test(disk_stream, small_appends_land_in_order_on_disk_and_flush_makes_them_durable)
{
    many_small_appends("/var/tmp", 0);
}

Test(disk_stream, small_appends_land_in_order_on_tmpfs)
{
    many_small_appends("/dev/shm", 0);
}

/* ---- group commit ------------------------------------------------------------------------ */

#define FLUSHES 1000

static struct {
    keel_io_class *cls;
    keel_future *fs[FLUSHES];
    keel_result res[FLUSHES];
    keel_io_class_stats before, after;
} gc;

static keel_future *group_steps(keel_result r)
{
    switch (pc) {
    case 0: pc = 1; return open_file(KEEL_FILE_TRUNCATE);
    case 1:
        opened(r);
        if (r.err)
            return NULL;
        gc.cls = keel_io_class_create("stream-test", 100);
        H_CHECK(gc.cls != NULL);
        keel_file_set_io_class(t.f, gc.cls);
        H_CHECK_EQ(keel_io_class_stats_get(keel_shard_id(), gc.cls, &gc.before), 0);
        t.a = keel_appender_new(t.f, 0, 0);
        /* A thousand flushes, each after its own append, all before any
         * I/O completes: one sync is in flight at a time and the flushes
         * that wait behind it share the next one. */
        for (int i = 0; i < FLUSHES; i++) {
            H_CHECK_EQ(keel_appender_append(t.a, t.want + (size_t)i * 100, 100), 0);
            gc.fs[i] = keel_appender_flush(t.a);
        }
        pc = 2;
        return keel_when_all(gc.fs, FLUSHES, gc.res);
    case 2:
        H_CHECK_OK(r, FLUSHES);
        for (int i = 0; i < FLUSHES; i++)
            H_CHECK_OK(gc.res[i], 0);
        H_CHECK_EQ(keel_appender_durable(t.a), (uint64_t)FLUSHES * 100);
        H_CHECK_EQ(keel_io_class_stats_get(keel_shard_id(), gc.cls, &gc.after), 0);
        pc = 3;
        return keel_appender_close(t.a);
    case 3:
        H_CHECK_OK(r, 0);
        pc = 4;
        return keel_file_close(t.f);
    default: H_CHECK_OK(r, 0); return NULL;
    }
}

Test(disk_stream, flushes_called_while_a_sync_is_in_flight_share_the_next_one)
{
    make_dir("/var/tmp");
    reset();
    t.want_len = (size_t)FLUSHES * 100;
    t.want = malloc(t.want_len);
    for (size_t i = 0; i < t.want_len; i++)
        t.want[i] = (char)next_rand();
    run_steps(group_steps);
    uint64_t ops = gc.after.dispatched_ops - gc.before.dispatched_ops;
    /* Without sharing there would be a sync per flush; with it a couple of
     * writes and syncs carry all of them. */
    cr_assert_leq(ops, 10, "%llu file operations for %d flushes", (unsigned long long)ops, FLUSHES);
    size_t len;
    char *file = slurp(&len);
    cr_assert_eq(len, t.want_len);
    cr_assert_eq(memcmp(file, t.want, len), 0);
    free(file);
    reset();
    remove_dir();
}

/* ---- direct files: the padded tail block ------------------------------------------------- */

static struct {
    size_t sizes[3];
    int i;
    uint64_t head; /* bytes in the file before the appender's offset */
} tail;

/* Checks, on the shard, what the file holds now through its fd. */
static void check_file_now(uint64_t logical, bool padded)
{
    /* A buffered fd of its own: the keel_file's may be O_DIRECT. */
    int fd = open(path, O_RDONLY);
    H_CHECK_GE(fd, 0);
    struct stat st;
    H_CHECK_EQ(fstat(fd, &st), 0);
    uint64_t want_size = padded ? (logical + t.blk - 1) / t.blk * t.blk : logical;
    H_CHECK_EQ(st.st_size, want_size);
    char *b = malloc(want_size + 1);
    H_CHECK_EQ(pread(fd, b, want_size, 0), (ssize_t)want_size);
    close(fd);
    if (memcmp(b, t.want, logical))
        H_FAIL("the file's first %llu bytes differ", (unsigned long long)logical);
    for (uint64_t i = logical; i < want_size; i++)
        if (b[i]) {
            H_FAIL("the tail block's padding has a nonzero byte at %llu", (unsigned long long)i);
            break;
        }
    free(b);
}

static keel_future *tail_steps(keel_result r)
{
    switch (pc) {
    case 0: pc = 1; return open_file(0);
    case 1:
        opened(r);
        if (r.err)
            return NULL;
        t.a = keel_appender_new(t.f, tail.head, 0);
        tail.sizes[0] = 100;
        tail.sizes[1] = 200;
        tail.sizes[2] = 2 * t.blk + 50;
        t.want_len = tail.head;
        pc = 2;
        /* fall through */
    case 2:
        if (tail.i > 0) {
            H_CHECK_OK(r, 0);
            check_file_now(t.want_len, t.direct);
        }
        if (tail.i < 3) {
            size_t n = tail.sizes[tail.i++];
            H_CHECK_EQ(keel_appender_append(t.a, t.want + t.want_len, n), 0);
            t.want_len += n;
            return keel_appender_flush(t.a);
        }
        pc = 3;
        return keel_appender_close(t.a);
    case 3:
        H_CHECK_OK(r, 0);
        check_file_now(t.want_len, false);
        pc = 4;
        return keel_file_close(t.f);
    default: H_CHECK_OK(r, 0); return NULL;
    }
}

static void tail_test(uint64_t head)
{
    make_dir("/var/tmp");
    reset();
    memset(&tail, 0, sizeof(tail));
    tail.head = head;
    t.want = malloc(1 << 20);
    for (size_t i = 0; i < 1 << 20; i++)
        t.want[i] = (char)(next_rand() | 1);
    if (head)
        write_file(t.want, head);
    run_steps(tail_steps);
    size_t len;
    char *file = slurp(&len);
    cr_assert_eq(len, t.want_len, "close left %zu bytes, %zu were appended", len, t.want_len);
    cr_assert_eq(memcmp(file, t.want, len), 0);
    free(file);
    bool direct = t.direct;
    reset();
    remove_dir();
    if (!direct)
        cr_skip_test("SKIPPED: /var/tmp has no O_DIRECT here; ran buffered");
}

Test(disk_stream, direct_tail_block_is_padded_rewritten_and_truncated_at_close)
{
    tail_test(0);
}

Test(disk_stream, direct_appender_from_an_unaligned_size_keeps_the_bytes_before_it)
{
    tail_test(5000);
}

/* ---- the reader ---------------------------------------------------------------------------- */

static struct {
    size_t chunk;
    unsigned ahead;
    int eof_reads;
} rdt;

static keel_future *reader_steps(keel_result r)
{
    switch (pc) {
    case 0: pc = 1; return open_file(0);
    case 1:
        opened(r);
        if (r.err)
            return NULL;
        t.rd = keel_reader_new(t.f, t.read_from, rdt.chunk, rdt.ahead);
        H_CHECK(t.rd != NULL);
        pc = 2;
        return read_some();
    case 2:
        if (!read_back(r))
            return read_some();
        check_got();
        pc = 3;
        return keel_reader_read(t.rd, t.got, 10);
    case 3:
        /* At the end it stays at the end. */
        H_CHECK_OK(r, 0);
        pc = 4;
        return keel_reader_close(t.rd);
    case 4:
        H_CHECK_OK(r, 0);
        pc = 5;
        return keel_file_close(t.f);
    default: H_CHECK_OK(r, 0); return NULL;
    }
}

static void reader_test(const char *base, size_t file_len, uint64_t from, size_t chunk,
                        unsigned ahead, size_t read_max)
{
    make_dir(base);
    reset();
    t.want_len = file_len;
    t.want = malloc(file_len + 1);
    for (size_t i = 0; i < file_len; i++)
        t.want[i] = (char)next_rand();
    write_file(t.want, file_len);
    t.read_from = from;
    prepare_got(read_max);
    rdt.chunk = chunk;
    rdt.ahead = ahead;
    run_steps(reader_steps);
    reset();
    remove_dir();
}

Test(disk_stream, reader_of_an_empty_file_returns_0)
{
    reader_test("/var/tmp", 0, 0, 0, 0, 100);
    reader_test("/dev/shm", 0, 0, 0, 0, 100);
}

Test(disk_stream, reader_from_an_unaligned_offset_returns_the_bytes_from_there)
{
    reader_test("/var/tmp", (1 << 20) + 333, 12345, 65536, 3, 7777);
    reader_test("/dev/shm", (1 << 20) + 333, 12345, 65536, 3, 7777);
}

Test(disk_stream, reader_with_defaults_fills_large_reads_across_chunks)
{
    reader_test("/var/tmp", (3 << 20) + 1, 4097, 0, 0, 1 << 20);
}

Test(disk_stream, reader_from_past_the_end_returns_0)
{
    reader_test("/var/tmp", 5000, 9000, 0, 0, 100);
}

/* ---- a failing write, kept and retried ----------------------------------------------------- */

#define LIMIT (1u << 20)
#define ERR_BYTES (3u << 20)

static struct rlimit saved_fsize;

static keel_future *error_steps(keel_result r)
{
    switch (pc) {
    case 0: pc = 1; return open_file(KEEL_FILE_TRUNCATE);
    case 1: {
        opened(r);
        if (r.err)
            return NULL;
        /* Files of this process may not grow past LIMIT: writes beyond it
         * fail EFBIG (SIGXFSZ is ignored). */
        struct rlimit lim = {.rlim_cur = LIMIT, .rlim_max = saved_fsize.rlim_max};
        H_CHECK_EQ(setrlimit(RLIMIT_FSIZE, &lim), 0);
        t.a = keel_appender_new(t.f, 0, 256 << 10);
        for (size_t off = 0; off < ERR_BYTES; off += 1024)
            H_CHECK_EQ(keel_appender_append(t.a, t.want + off, 1024), 0);
        pc = 2;
        return keel_appender_flush(t.a);
    }
    case 2:
        H_CHECK_ERR(r, -EFBIG);
        H_CHECK_EQ(keel_appender_error(t.a), -EFBIG);
        H_CHECK_EQ(keel_appender_offset(t.a), ERR_BYTES);
        H_CHECK_LE(keel_appender_written(t.a), LIMIT);
        H_CHECK_LT(keel_appender_durable(t.a), ERR_BYTES);
        /* Still failing without a retry, and appends are still kept. */
        H_CHECK_EQ(keel_appender_append(t.a, t.want + ERR_BYTES, 1000), 0);
        pc = 3;
        return keel_appender_write_out(t.a);
    case 3:
        H_CHECK_ERR(r, -EFBIG);
        H_CHECK_EQ(setrlimit(RLIMIT_FSIZE, &saved_fsize), 0);
        keel_appender_retry(t.a);
        pc = 4;
        return keel_appender_flush(t.a);
    case 4:
        H_CHECK_OK(r, 0);
        H_CHECK_EQ(keel_appender_error(t.a), 0);
        H_CHECK_EQ(keel_appender_durable(t.a), ERR_BYTES + 1000);
        pc = 5;
        return keel_appender_close(t.a);
    case 5:
        H_CHECK_OK(r, 0);
        pc = 6;
        return keel_file_close(t.f);
    default: H_CHECK_OK(r, 0); return NULL;
    }
}

static void error_test(const char *base)
{
    make_dir(base);
    reset();
    t.want_len = ERR_BYTES + 1000;
    t.want = malloc(t.want_len);
    for (size_t i = 0; i < t.want_len; i++)
        t.want[i] = (char)next_rand();
    cr_assert_eq(getrlimit(RLIMIT_FSIZE, &saved_fsize), 0);
    if (saved_fsize.rlim_max != RLIM_INFINITY && saved_fsize.rlim_max < 2 * ERR_BYTES)
        cr_skip_test("SKIPPED: RLIMIT_FSIZE hard limit too low to raise again");
    signal(SIGXFSZ, SIG_IGN);
    run_steps(error_steps);
    size_t len;
    char *file = slurp(&len);
    cr_assert_eq(len, t.want_len, "the file has %zu bytes, %zu were appended", len, t.want_len);
    cr_assert_eq(memcmp(file, t.want, len), 0, "the retried bytes differ");
    free(file);
    reset();
    remove_dir();
}

Test(disk_stream, failed_write_keeps_the_bytes_and_retry_writes_them)
{
    error_test("/var/tmp");
}

Test(disk_stream, failed_write_keeps_the_bytes_and_retry_writes_them_on_tmpfs)
{
    error_test("/dev/shm");
}
