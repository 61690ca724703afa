/* Files as futures: round trips (aligned and O_DIRECT, unaligned and
 * buffered), fsync and fdatasync, allocate, truncate, sizes, path
 * operations and errors, on both backends. */
#include <fcntl.h>
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
