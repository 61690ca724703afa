/* Files as futures: round trips (aligned and O_DIRECT, unaligned and
 * buffered), fsync and fdatasync, allocate, truncate, sizes and stat,
 * write→fdatasync, registered buffers, path operations and errors, on both
 * backends. */
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "harness.h"

TestSuite(disk_file, .timeout = 60);

static char dir[256];

static void make_dir(const char *base)
{
    snprintf(dir, sizeof(dir), "%s/keel-disk-XXXXXX", base);
    cr_assert_not_null(mkdtemp(dir), "mkdtemp in %s: %s", base, strerror(errno));
}

static void remove_dir(void)
{
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}

/* ---- a round trip: open, write, fdatasync, read back, size, close ------------------- */

#define BIG (3u << 20) /* several MiB: more than one request's worth anywhere */

static struct {
    unsigned flags;
    bool unaligned;
    keel_file *f;
    char *wbuf, *rbuf;
    size_t len;
    uint64_t off;
    bool direct;
    int64_t size;
    int step_err;
} rt;

static keel_future *rt_closed(void *ctx, keel_result r)
{
    (void)ctx;
    H_CHECK_OK(r, 0);
    return keel_make_ready(0);
}

static keel_future *rt_sized(void *ctx, keel_result r)
{
    (void)ctx;
    H_CHECK_EQ(r.err, 0);
    rt.size = r.val;
    return keel_then_wrapped(keel_file_close(rt.f), rt_closed, NULL);
}

static keel_future *rt_read(void *ctx, keel_result r)
{
    (void)ctx;
    H_CHECK_OK(r, (int64_t)rt.len);
    if (memcmp(rt.wbuf, rt.rbuf, rt.len))
        H_FAIL("the bytes read back differ from those written");
    return keel_then(keel_file_size(rt.f), rt_sized, NULL);
}

static keel_future *rt_synced(void *ctx, keel_result r)
{
    (void)ctx;
    H_CHECK_OK(r, 0);
    return keel_then(keel_file_read(rt.f, rt.off, rt.rbuf, rt.len), rt_read, NULL);
}

static keel_future *rt_written(void *ctx, keel_result r)
{
    (void)ctx;
    H_CHECK_OK(r, (int64_t)rt.len);
    return keel_then(keel_file_fdatasync(rt.f), rt_synced, NULL);
}

static keel_future *rt_opened(void *ctx, keel_result r)
{
    (void)ctx;
    H_CHECK_EQ(r.err, 0);
    if (r.err)
        return keel_make_error(r.err);
    rt.f = r.ptr;
    rt.direct = keel_file_is_direct(rt.f);
    size_t align = keel_file_offset_align(rt.f);
    H_CHECK_GE(keel_file_mem_align(rt.f), 1);
    rt.off = rt.unaligned ? 12345 : 4 * (uint64_t)align;
    rt.len = rt.unaligned ? BIG - 777 : BIG;
    return keel_then(keel_file_write(rt.f, rt.off, rt.wbuf, rt.len), rt_written, NULL);
}

static void rt_main(void *arg)
{
    (void)arg;
    h_watchdog(30000);
    char path[300];
    snprintf(path, sizeof(path), "%s/data", dir);
    h_stop_when_ok(keel_then(
        keel_file_open(path, KEEL_FILE_READ | KEEL_FILE_WRITE | KEEL_FILE_CREATE | rt.flags, 0600),
        rt_opened, NULL));
}

static void round_trip(const char *base, unsigned flags, bool unaligned)
{
    make_dir(base);
    memset(&rt, 0, sizeof(rt));
    rt.flags = flags;
    rt.unaligned = unaligned;
    rt.wbuf = keel_dma_alloc(BIG);
    rt.rbuf = keel_dma_alloc(BIG);
    cr_assert(rt.wbuf && rt.rbuf);
    cr_assert_eq((uintptr_t)rt.wbuf % 4096, 0, "keel_dma_alloc is 4096-aligned");
    for (size_t i = 0; i < BIG; i++)
        rt.wbuf[i] = (char)(i * 2654435761u >> 13);
    h_run(1, rt_main, NULL);
    cr_assert_eq(rt.size, (int64_t)(rt.off + rt.len), "size %lld", (long long)rt.size);
    keel_dma_free(rt.wbuf);
    keel_dma_free(rt.rbuf);
    remove_dir();
}

Test(disk_file, aligned_round_trip_uses_o_direct_where_the_file_system_has_it)
{
    round_trip("/var/tmp", 0, false);
    cr_log_info("/var/tmp: direct=%d", rt.direct);
}

Test(disk_file, unaligned_round_trip_buffered)
{
    round_trip("/var/tmp", KEEL_FILE_BUFFERED, true);
    cr_assert(!rt.direct, "KEEL_FILE_BUFFERED opened a direct file");
}

/* tmpfs took no O_DIRECT before Linux 6.6 (open fails EINVAL, and keel
 * opens the file buffered); since 6.6 it does. Either way the file opens
 * and the round trip works. */
Test(disk_file, tmpfs_round_trip)
{
    struct stat st;
    if (stat("/dev/shm", &st) || !S_ISDIR(st.st_mode))
        cr_skip_test("SKIPPED: no /dev/shm (tmpfs) here");
    round_trip("/dev/shm", 0, false);
    cr_log_info("/dev/shm: direct=%d", rt.direct);
}

/* ---- the rest of the API ------------------------------------------------------------- */

static struct {
    keel_file *f;
    int enoent, eexist, badflags, renamed_enoent;
    int64_t size_after_alloc, size_after_trunc, size_by_path;
    int fsync_res, mkdir_res, unlink_res;
} ops;

static char p_data[300], p_moved[300], p_sub[300], p_missing[300];

static keel_future *ops_step(void *ctx, keel_result r);

/* The steps run one after another; each records its result. */
static int ops_n;
static keel_future *ops_next(void)
{
    switch (ops_n++) {
    case 0: return keel_file_open(p_missing, KEEL_FILE_READ, 0);
    case 1:
        return keel_file_open(p_data, KEEL_FILE_READ | KEEL_FILE_WRITE | KEEL_FILE_CREATE, 0600);
    case 2:
        return keel_file_open(p_data, KEEL_FILE_WRITE | KEEL_FILE_CREATE | KEEL_FILE_EXCL, 0600);
    case 3: return keel_file_open(p_data, 0, 0);
    case 4: return keel_file_allocate(ops.f, 0, 1 << 20);
    case 5: return keel_file_size(ops.f);
    case 6: return keel_file_truncate(ops.f, 4096);
    case 7: return keel_file_size(ops.f);
    case 8: return keel_file_fsync(ops.f);
    case 9: return keel_file_close(ops.f);
    case 10: return keel_fs_rename(p_data, p_moved);
    case 11: return keel_fs_size(p_moved);
    case 12: return keel_fs_rename(p_data, p_moved);
    case 13: return keel_fs_mkdir(p_sub, 0700);
    case 14: return keel_fs_unlink(p_moved);
    default: return NULL;
    }
}

static keel_future *ops_step(void *ctx, keel_result r)
{
    (void)ctx;
    switch (ops_n - 1) {
    case 0: ops.enoent = r.err; break;
    case 1:
        H_CHECK_EQ(r.err, 0);
        ops.f = r.ptr;
        break;
    case 2: ops.eexist = r.err; break;
    case 3: ops.badflags = r.err; break;
    case 4: H_CHECK_OK(r, 0); break;
    case 5: ops.size_after_alloc = r.val; break;
    case 6: H_CHECK_OK(r, 0); break;
    case 7: ops.size_after_trunc = r.val; break;
    case 8: ops.fsync_res = r.err; break;
    case 9: H_CHECK_OK(r, 0); break;
    case 10: H_CHECK_OK(r, 0); break;
    case 11: ops.size_by_path = r.val; break;
    case 12: ops.renamed_enoent = r.err; break;
    case 13: ops.mkdir_res = r.err; break;
    case 14: ops.unlink_res = r.err; break;
    }
    keel_future *next = ops_next();
    return next ? keel_then_wrapped(next, ops_step, NULL) : keel_make_ready(0);
}

static void ops_main(void *arg)
{
    (void)arg;
    h_watchdog(20000);
    h_stop_when_ok(keel_then_wrapped(ops_next(), ops_step, NULL));
}

Test(disk_file, allocate_truncate_sizes_paths_and_errors)
{
    make_dir("/var/tmp");
    snprintf(p_data, sizeof(p_data), "%s/data", dir);
    snprintf(p_moved, sizeof(p_moved), "%s/moved", dir);
    snprintf(p_sub, sizeof(p_sub), "%s/sub", dir);
    snprintf(p_missing, sizeof(p_missing), "%s/missing/x", dir);
    h_run(1, ops_main, NULL);
    cr_assert_eq(ops.enoent, -ENOENT);
    cr_assert_eq(ops.eexist, -EEXIST);
    cr_assert_eq(ops.badflags, -EINVAL);
    cr_assert_eq(ops.size_after_alloc, 1 << 20);
    cr_assert_eq(ops.size_after_trunc, 4096);
    cr_assert_eq(ops.fsync_res, 0);
    cr_assert_eq(ops.size_by_path, 4096);
    cr_assert_eq(ops.renamed_enoent, -ENOENT);
    cr_assert_eq(ops.mkdir_res, 0);
    cr_assert_eq(ops.unlink_res, 0);
    struct stat st;
    cr_assert_eq(stat(p_moved, &st), -1, "unlink left the file");
    cr_assert_eq(stat(p_sub, &st), 0);
    cr_assert(S_ISDIR(st.st_mode));
    remove_dir();
}

/* Many writes in flight at once, then one fsync: each lands where it was
 * asked to, whatever order the device completes them in. */
#define NW 64
#define WSZ 65536

static struct {
    keel_file *f;
    char *buf;
    unsigned done;
} many;

static keel_future *many_closed(void *ctx, keel_result r)
{
    (void)ctx;
    H_CHECK_OK(r, 0);
    return keel_make_ready(0);
}

static keel_future *many_synced(void *ctx, keel_result r)
{
    (void)ctx;
    H_CHECK_OK(r, 0);
    return keel_then_wrapped(keel_file_close(many.f), many_closed, NULL);
}

static keel_future *many_written(void *ctx, keel_result r)
{
    (void)ctx;
    H_CHECK_EQ(r.err, 0);
    return keel_then(keel_file_fsync(many.f), many_synced, NULL);
}

static keel_future *many_opened(void *ctx, keel_result r)
{
    (void)ctx;
    H_CHECK_EQ(r.err, 0);
    if (r.err)
        return keel_make_error(r.err);
    many.f = r.ptr;
    keel_future *fs[NW];
    for (unsigned i = 0; i < NW; i++)
        fs[i] = keel_file_write(many.f, (uint64_t)i * WSZ, many.buf + (size_t)i * WSZ, WSZ);
    return keel_then(keel_when_all(fs, NW, NULL), many_written, NULL);
}

static void many_main(void *arg)
{
    (void)arg;
    h_watchdog(30000);
    char path[300];
    snprintf(path, sizeof(path), "%s/many", dir);
    h_stop_when_ok(keel_then(
        keel_file_open(path, KEEL_FILE_WRITE | KEEL_FILE_CREATE | KEEL_FILE_TRUNCATE, 0600),
        many_opened, NULL));
}

Test(disk_file, many_writes_in_flight_land_in_place)
{
    make_dir("/var/tmp");
    many.buf = keel_dma_alloc((size_t)NW * WSZ);
    for (size_t i = 0; i < (size_t)NW * WSZ; i++)
        many.buf[i] = (char)(i / WSZ + i);
    h_run(1, many_main, NULL);
    char path[300];
    snprintf(path, sizeof(path), "%s/many", dir);
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f);
    char *back = malloc((size_t)NW * WSZ);
    cr_assert_eq(fread(back, 1, (size_t)NW * WSZ, f), (size_t)NW * WSZ);
    fclose(f);
    cr_assert_eq(memcmp(back, many.buf, (size_t)NW * WSZ), 0, "a write landed in the wrong place");
    free(back);
    keel_dma_free(many.buf);
    remove_dir();
}

/* ---- stat, write→fdatasync, registered buffers, path errors --------------------------
 *
 * On io_uring these take the opcode road where the kernel has the opcode
 * (OPENAT, STATX, RENAMEAT, UNLINKAT, MKDIRAT, FTRUNCATE, linked
 * WRITE+FSYNC, READ_FIXED/WRITE_FIXED), on epoll the blocking pool: the
 * same steps must give the same results on both. */

#define XLEN (256u << 10)
#define XOFF 8192u

static struct {
    bool uring;
    keel_file *f;
    char *wbuf, *rbuf, *dbuf;
    struct keel_stat fst, pst, dst, mst;
    int stat_missing, size_missing, mkdir_again, unlink_missing, rmdir_as_unlink, open_dir_write;
    int reg, reg_overlap, reg_read, unreg, unreg_again, reg_bad;
    int64_t dsync_res, dsync_read, reg_write, reg_readback, size_after_grow, dsync_empty;
    int64_t trunc_size;
    int64_t fsize;
    bool dsync_same, reg_same;
} ex;

static char x_data[300], x_moved[300], x_sub[300], x_missing[300];

static int ex_n;
static keel_future *ex_next(void)
{
    switch (ex_n++) {
    case 0:
        return keel_file_open(x_data, KEEL_FILE_READ | KEEL_FILE_WRITE | KEEL_FILE_CREATE, 0640);
    case 1: /* a write that is durable when it resolves, then read back */
        return keel_file_write_dsync(ex.f, XOFF, ex.dbuf, XLEN);
    case 2: return keel_file_read(ex.f, XOFF, ex.rbuf, XLEN);
    case 3: return keel_file_write_dsync(ex.f, 0, ex.dbuf, 0); /* an fdatasync alone */
    case 4: { /* registered buffers: wbuf and rbuf, both whole regions */
        ex.reg = keel_dma_register(ex.wbuf, XLEN);
        ex.reg_read = keel_dma_register(ex.rbuf, XLEN);
        ex.reg_overlap = keel_dma_register(ex.wbuf + 4096, 4096);
        ex.reg_bad = keel_dma_register(NULL, 4096);
        memset(ex.rbuf, 0, XLEN);
        /* a part of the region: fixed I/O need not cover all of it */
        return keel_file_write(ex.f, XOFF + XLEN, ex.wbuf, XLEN);
    }
    case 5: return keel_file_read(ex.f, XOFF + XLEN, ex.rbuf, XLEN);
    case 6: return keel_file_stat(ex.f, &ex.fst);
    case 7: return keel_file_truncate(ex.f, 3 * XLEN);
    case 8: return keel_file_size(ex.f);
    case 9: return keel_file_truncate(ex.f, 5000);
    case 10: return keel_file_size(ex.f);
    case 11: return keel_file_close(ex.f);
    case 12: return keel_fs_stat(x_data, &ex.pst);
    case 13: return keel_fs_stat(x_missing, &ex.mst);
    case 14: return keel_fs_size(x_missing);
    case 15: return keel_fs_mkdir(x_sub, 0750);
    case 16: return keel_fs_mkdir(x_sub, 0750);
    case 17: return keel_fs_stat(x_sub, &ex.dst);
    case 18: return keel_fs_unlink(x_sub); /* a directory: unlink refuses it */
    case 19: return keel_file_open(x_sub, KEEL_FILE_WRITE, 0);
    case 20: return keel_fs_rename(x_data, x_moved);
    case 21: return keel_fs_unlink(x_moved);
    case 22: return keel_fs_unlink(x_moved);
    default: return NULL;
    }
}

static keel_future *ex_step(void *ctx, keel_result r)
{
    (void)ctx;
    switch (ex_n - 1) {
    case 0:
        H_CHECK_EQ(r.err, 0);
        if (r.err)
            return keel_make_error(r.err);
        ex.f = r.ptr;
        break;
    case 1: ex.dsync_res = r.err ? r.err : r.val; break;
    case 2:
        ex.dsync_read = r.err ? r.err : r.val;
        ex.dsync_same = !r.err && !memcmp(ex.dbuf, ex.rbuf, XLEN);
        break;
    case 3: ex.dsync_empty = r.err ? r.err : r.val; break;
    case 4: ex.reg_write = r.err ? r.err : r.val; break;
    case 5:
        ex.reg_readback = r.err ? r.err : r.val;
        ex.reg_same = !r.err && !memcmp(ex.wbuf, ex.rbuf, XLEN);
        ex.unreg = keel_dma_unregister(ex.wbuf);
        ex.unreg_again = keel_dma_unregister(ex.wbuf);
        keel_dma_unregister(ex.rbuf);
        break;
    case 6: H_CHECK_OK(r, 0); break;
    case 7: H_CHECK_OK(r, 0); break;
    case 8: ex.size_after_grow = r.err ? r.err : r.val; break;
    case 9: H_CHECK_OK(r, 0); break;
    case 10: ex.trunc_size = r.err ? r.err : r.val; break;
    case 11: H_CHECK_OK(r, 0); break;
    case 12: H_CHECK_OK(r, 0); break;
    case 13: ex.stat_missing = r.err; break;
    case 14: ex.size_missing = r.err; break;
    case 15: H_CHECK_OK(r, 0); break;
    case 16: ex.mkdir_again = r.err; break;
    case 17: H_CHECK_OK(r, 0); break;
    case 18: ex.rmdir_as_unlink = r.err; break;
    case 19:
        ex.open_dir_write = r.err;
        if (!r.err)
            keel_detach(keel_file_close(r.ptr));
        break;
    case 20: H_CHECK_OK(r, 0); break;
    case 21: H_CHECK_OK(r, 0); break;
    case 22: ex.unlink_missing = r.err; break;
    }
    keel_future *next = ex_next();
    return next ? keel_then_wrapped(next, ex_step, NULL) : keel_make_ready(0);
}

static void ex_main(void *arg)
{
    (void)arg;
    h_watchdog(20000);
    ex.uring = !strcmp(keel_backend_name(), "io_uring");
    h_stop_when_ok(keel_then_wrapped(ex_next(), ex_step, NULL));
}

static void extras(const char *base)
{
    make_dir(base);
    snprintf(x_data, sizeof(x_data), "%s/data", dir);
    snprintf(x_moved, sizeof(x_moved), "%s/moved", dir);
    snprintf(x_sub, sizeof(x_sub), "%s/sub", dir);
    snprintf(x_missing, sizeof(x_missing), "%s/missing", dir);
    memset(&ex, 0, sizeof(ex));
    ex_n = 0;
    ex.wbuf = keel_dma_alloc(XLEN);
    ex.rbuf = keel_dma_alloc(XLEN);
    ex.dbuf = keel_dma_alloc(XLEN);
    cr_assert(ex.wbuf && ex.rbuf && ex.dbuf);
    for (size_t i = 0; i < XLEN; i++) {
        ex.wbuf[i] = (char)(i * 2654435761u >> 11);
        ex.dbuf[i] = (char)(i * 40503u >> 7);
    }
    h_run(1, ex_main, NULL);
    const char *be = ex.uring ? "io_uring" : "epoll";

    cr_assert_eq(ex.dsync_res, XLEN, "%s: write_dsync %lld", be, (long long)ex.dsync_res);
    cr_assert_eq(ex.dsync_read, XLEN);
    cr_assert(ex.dsync_same, "%s: write_dsync's bytes read back differ", be);
    cr_assert_eq(ex.dsync_empty, 0);

    cr_assert_eq(ex.reg, 0, "%s: keel_dma_register: %d", be, ex.reg);
    cr_assert_eq(ex.reg_read, 0);
    cr_assert_eq(ex.reg_bad, -EINVAL);
    cr_assert_eq(ex.reg_overlap, ex.uring ? -EEXIST : 0);
    cr_assert_eq(ex.reg_write, XLEN, "%s: fixed write %lld", be, (long long)ex.reg_write);
    cr_assert_eq(ex.reg_readback, XLEN, "%s: fixed read %lld", be, (long long)ex.reg_readback);
    cr_assert(ex.reg_same, "%s: bytes read back through registered buffers differ", be);
    cr_assert_eq(ex.unreg, 0);
    cr_assert_eq(ex.unreg_again, ex.uring ? -ENOENT : 0);

    cr_assert_eq(ex.fst.size, XOFF + 2 * XLEN);
    cr_assert(S_ISREG(ex.fst.mode));
    cr_assert_eq(ex.fst.mode & 0777, 0640 & ~0022 & 0777);
    cr_assert_gt(ex.fst.blocks, 0);
    cr_assert_gt(ex.fst.mtime_ns, 0);
    cr_assert_eq(ex.size_after_grow, 3 * XLEN);
    cr_assert_eq(ex.trunc_size, 5000);
    cr_assert_eq(ex.pst.size, 5000);
    cr_assert(S_ISREG(ex.pst.mode));
    cr_assert_geq(ex.pst.mtime_ns, ex.fst.mtime_ns);
    struct stat st;
    cr_assert_eq(stat(x_moved, &st), -1, "unlink left the file");

    cr_assert_eq(ex.stat_missing, -ENOENT);
    cr_assert_eq(ex.size_missing, -ENOENT);
    cr_assert_eq(ex.mkdir_again, -EEXIST);
    cr_assert(S_ISDIR(ex.dst.mode));
    cr_assert_eq(ex.dst.mode & 0777, 0750 & ~0022 & 0777);
    cr_assert_eq(ex.rmdir_as_unlink, -EISDIR);
    cr_assert_eq(ex.open_dir_write, -EISDIR);
    cr_assert_eq(ex.unlink_missing, -ENOENT);
    keel_dma_free(ex.wbuf);
    keel_dma_free(ex.rbuf);
    keel_dma_free(ex.dbuf);
    remove_dir();
}

Test(disk_file, stat_write_dsync_registered_buffers_and_path_errors)
{
    umask(0022);
    extras("/var/tmp");
}

Test(disk_file, stat_write_dsync_registered_buffers_and_path_errors_tmpfs)
{
    struct stat st;
    if (stat("/dev/shm", &st) || !S_ISDIR(st.st_mode))
        cr_skip_test("SKIPPED: no /dev/shm (tmpfs) here");
    umask(0022);
    extras("/dev/shm");
}

/* A write_dsync that the file-size limit cuts short: the write stops at
 * the limit (a short write, which breaks the link on io_uring), the rest
 * fails -EFBIG, and that, not success, is what resolves. */
#define FSZ_LIMIT 10000u

static struct {
    keel_file *f;
    char *buf;
    int64_t res, plain_res;
} sh;

static keel_future *sh_closed(void *ctx, keel_result r)
{
    (void)ctx;
    H_CHECK_OK(r, 0);
    return keel_make_ready(0);
}

static keel_future *sh_plain(void *ctx, keel_result r)
{
    (void)ctx;
    sh.plain_res = r.err ? r.err : r.val;
    return keel_then_wrapped(keel_file_close(sh.f), sh_closed, NULL);
}

static keel_future *sh_dsync(void *ctx, keel_result r)
{
    (void)ctx;
    sh.res = r.err ? r.err : r.val;
    return keel_then_wrapped(keel_file_write(sh.f, FSZ_LIMIT - 100, sh.buf, 4096), sh_plain, NULL);
}

static keel_future *sh_opened(void *ctx, keel_result r)
{
    (void)ctx;
    H_CHECK_EQ(r.err, 0);
    if (r.err)
        return keel_make_error(r.err);
    sh.f = r.ptr;
    return keel_then_wrapped(keel_file_write_dsync(sh.f, FSZ_LIMIT - 1000, sh.buf, 8192), sh_dsync,
                             NULL);
}

static void sh_main(void *arg)
{
    (void)arg;
    h_watchdog(20000);
    char path[300];
    snprintf(path, sizeof(path), "%s/limited", dir);
    h_stop_when_ok(keel_then(
        keel_file_open(path, KEEL_FILE_WRITE | KEEL_FILE_CREATE | KEEL_FILE_BUFFERED, 0600),
        sh_opened, NULL));
}

Test(disk_file, a_short_write_dsync_is_not_reported_as_success)
{
    make_dir("/var/tmp");
    sh.buf = calloc(1, 8192);
    signal(SIGXFSZ, SIG_IGN); /* EFBIG instead of the signal */
    struct rlimit rl = {FSZ_LIMIT, FSZ_LIMIT};
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &rl), 0);
    h_run(1, sh_main, NULL);
    cr_assert_eq(sh.res, -EFBIG, "write_dsync past the limit resolved %lld", (long long)sh.res);
    cr_assert_eq(sh.plain_res, -EFBIG, "write past the limit resolved %lld",
                 (long long)sh.plain_res);
    char path[300];
    snprintf(path, sizeof(path), "%s/limited", dir);
    struct stat st;
    cr_assert_eq(stat(path, &st), 0);
    cr_assert_eq(st.st_size, FSZ_LIMIT, "the bytes below the limit were written");
    free(sh.buf);
    remove_dir();
}
