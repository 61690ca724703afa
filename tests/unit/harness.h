/* Shared helpers for the unit tests.
 *
 * Criterion's asserts only work on the test's own thread, but most of what
 * we check happens on shard threads. So shards record failures here (the
 * first one in full, with file:line, and a count of all), and the test
 * thread asserts on them once keel_run() has returned and every shard has
 * been joined. Everything is header-only: each test file is its own
 * executable. */
#ifndef KEEL_TEST_HARNESS_H
#define KEEL_TEST_HARNESS_H

#include <criterion/criterion.h>
#include <errno.h>
#include <inttypes.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <keel/keel.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#define H_HAVE_LSAN 1
#endif

/* ---- failures recorded off the test thread ------------------------------- */

static struct {
    atomic_flag first_taken;
    _Atomic unsigned count;
    char first[1024];
} h_failures = {.first_taken = ATOMIC_FLAG_INIT};

__attribute__((format(printf, 3, 4), unused)) static void h_fail_at(const char *file, int line,
                                                                    const char *fmt, ...)
{
    atomic_fetch_add(&h_failures.count, 1);
    if (atomic_flag_test_and_set(&h_failures.first_taken))
        return;
    int n = snprintf(h_failures.first, sizeof(h_failures.first), "%s:%d: ", file, line);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(h_failures.first + n, sizeof(h_failures.first) - (size_t)n, fmt, ap);
    va_end(ap);
}

#define H_FAIL(...) h_fail_at(__FILE__, __LINE__, __VA_ARGS__)

#define H_CHECK(cond)                                                                              \
    do {                                                                                           \
        if (!(cond))                                                                               \
            H_FAIL("check failed: %s", #cond);                                                     \
    } while (0)

/* Integer comparisons that print both sides. */
#define H_CHECK_OP(a, op, b)                                                                       \
    do {                                                                                           \
        long long h_a_ = (long long)(a), h_b_ = (long long)(b);                                    \
        if (!(h_a_ op h_b_))                                                                       \
            H_FAIL("check failed: %s %s %s (%lld vs %lld)", #a, #op, #b, h_a_, h_b_);              \
    } while (0)
#define H_CHECK_EQ(a, b) H_CHECK_OP(a, ==, b)
#define H_CHECK_NE(a, b) H_CHECK_OP(a, !=, b)
#define H_CHECK_LT(a, b) H_CHECK_OP(a, <, b)
#define H_CHECK_LE(a, b) H_CHECK_OP(a, <=, b)
#define H_CHECK_GE(a, b) H_CHECK_OP(a, >=, b)

/* Checks a result for success with a value, or for an error, naming the error. */
#define H_CHECK_OK(r, v)                                                                           \
    do {                                                                                           \
        keel_result h_r_ = (r);                                                                    \
        if (h_r_.err)                                                                              \
            H_FAIL("%s failed: %d (%s), expected value %lld", #r, h_r_.err,                        \
                   keel_strerror(h_r_.err), (long long)(v));                                       \
        else if (h_r_.val != (int64_t)(v))                                                         \
            H_FAIL("%s is %lld, expected %lld", #r, (long long)h_r_.val, (long long)(v));          \
    } while (0)
#define H_CHECK_ERR(r, e)                                                                          \
    do {                                                                                           \
        keel_result h_r_ = (r);                                                                    \
        if (h_r_.err != (e))                                                                       \
            H_FAIL("%s: err %d (%s), expected %d (%s)", #r, h_r_.err,                              \
                   h_r_.err ? keel_strerror(h_r_.err) : "success", (e), keel_strerror(e));         \
    } while (0)

static inline unsigned h_failure_count(void)
{
    return atomic_load(&h_failures.count);
}

/* On the test thread: fails the test if any shard recorded a failure. */
#define h_assert_no_failures()                                                                     \
    cr_assert(h_failure_count() == 0, "%u failure(s) recorded on shard threads; first: %s",        \
              h_failure_count(), h_failures.first)

/* Criterion ignores the exit status LeakSanitizer sets after a test has
 * passed, so leaks would only be printed. Once keel_run has returned the
 * runtime owns no memory, so the sanitizer build checks for leaks there
 * and fails the test. */
static inline void h_assert_no_leaks(void)
{
#ifdef H_HAVE_LSAN
    cr_assert_eq(__lsan_do_recoverable_leak_check(), 0,
                 "LeakSanitizer found leaks after keel_run returned (report above)");
#endif
}

/* ---- time ------------------------------------------------------------------ */

static inline uint64_t h_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline uint64_t h_ms_since(uint64_t start_ns)
{
    return (h_now_ns() - start_ns) / 1000000ull;
}

/* ---- running the runtime --------------------------------------------------- */

/* How many CPUs this process may run on: the most shards keel_run accepts. */
static inline unsigned h_cpus(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set))
        return 1;
    return (unsigned)CPU_COUNT(&set);
}

/* Tests that need two shards skip, loudly, on a one-CPU machine. */
#define h_require_shards(n)                                                                        \
    do {                                                                                           \
        if (h_cpus() < (n))                                                                        \
            cr_skip_test("SKIPPED: needs %u CPUs for %u shards, this process has %u",              \
                         (unsigned)(n), (unsigned)(n), h_cpus());                                  \
    } while (0)

/* A test configuration: defaults plus the environment (so KEEL_BACKEND=epoll
 * runs every test on the epoll backend), quiet, with `shards` shards. */
static inline void h_config(keel_config *c, unsigned shards)
{
    keel_config_init(c);
    c->shards = shards;
    c->quiet = true;
}

/* Runs main_fn on a runtime configured by c, then asserts a clean return and
 * that no shard recorded a failure. Returns how long keel_run took, in ms. */
static inline uint64_t h_run_cfg(const keel_config *c, keel_main_fn main_fn, void *arg)
{
    uint64_t t0 = h_now_ns();
    int rc = keel_run(c, main_fn, arg);
    uint64_t ms = h_ms_since(t0);
    cr_assert_eq(rc, 0, "keel_run returned %d (%s)", rc, keel_strerror(rc));
    h_assert_no_failures();
    h_assert_no_leaks();
    return ms;
}

static inline uint64_t h_run(unsigned shards, keel_main_fn main_fn, void *arg)
{
    h_require_shards(shards);
    keel_config c;
    h_config(&c, shards);
    return h_run_cfg(&c, main_fn, arg);
}

/* ---- finishing a test on the shards ------------------------------------------ */

static void h_stop_cb(void *ctx, keel_result r)
{
    if (ctx)
        *(keel_result *)ctx = r;
    keel_stop();
}

/* Consumes f; when it resolves, stores its result in *out (if not NULL) and
 * stops the runtime. */
__attribute__((unused)) static void h_stop_when_done(keel_future *f, keel_result *out)
{
    keel_on_done(f, h_stop_cb, out);
}

/* Consumes f; when it resolves, checks it succeeded and stops the runtime. */
static void h_stop_ok_cb(void *ctx, keel_result r)
{
    (void)ctx;
    if (r.err)
        H_FAIL("the test's future failed: %d (%s)", r.err, keel_strerror(r.err));
    keel_stop();
}
__attribute__((unused)) static void h_stop_when_ok(keel_future *f)
{
    keel_on_done(f, h_stop_ok_cb, NULL);
}

static void h_watchdog_cb(void *ctx, keel_result r)
{
    /* -ECANCELED: the runtime stopped first, as it should. */
    if (r.err == 0) {
        H_FAIL("watchdog: the test did not finish within %llu ms",
               (unsigned long long)(uintptr_t)ctx);
        keel_stop();
    }
}

/* Stops the runtime with a recorded failure if the test is still running
 * after ms: a broken test fails with a message instead of hanging. Call on
 * a shard (usually in main_fn). */
__attribute__((unused)) static void h_watchdog(uint64_t ms)
{
    keel_on_done(keel_sleep(KEEL_MS(ms)), h_watchdog_cb, (void *)(uintptr_t)ms);
}

/* ---- stderr capture ----------------------------------------------------------- */

/* Redirects fd 2 into a temporary file, to check what keel logs. */
typedef struct h_capture {
    int saved_fd;
    FILE *file;
    char text[8192];
} h_capture;

static inline void h_capture_begin(h_capture *c)
{
    fflush(stderr);
    c->file = tmpfile();
    cr_assert_not_null(c->file, "tmpfile failed");
    c->saved_fd = dup(STDERR_FILENO);
    cr_assert_geq(c->saved_fd, 0, "dup(stderr) failed");
    cr_assert_geq(dup2(fileno(c->file), STDERR_FILENO), 0, "dup2 failed");
}

/* Restores stderr; returns the captured text (kept in c->text), which the
 * caller's assertion messages quote. */
static inline const char *h_capture_end(h_capture *c)
{
    fflush(stderr);
    dup2(c->saved_fd, STDERR_FILENO);
    close(c->saved_fd);
    rewind(c->file);
    size_t n = fread(c->text, 1, sizeof(c->text) - 1, c->file);
    c->text[n] = 0;
    fclose(c->file);
    return c->text;
}

#endif
