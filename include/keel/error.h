/* keel — error codes.
 *
 * Every keel call that can fail returns 0 (or a count) on success and a
 * negative number on failure: a negated errno (-ECONNREFUSED) passed through
 * unchanged from the kernel, or one of the keel codes below, which lie above
 * the errno range so the two never collide.
 */
#ifndef KEEL_ERROR_H
#define KEEL_ERROR_H

#ifdef __cplusplus
extern "C" {
#endif

enum {
    KEEL_ERR_BASE = 10000,
    KEEL_EBROKEN_PROMISE, /* the producer went away without resolving */
    KEEL_EGATE_CLOSED,    /* keel_gate_enter() on a closed gate */
    KEEL_ESEM_BROKEN,     /* the semaphore was broken while waiting */
    KEEL_ESHUTDOWN,       /* the runtime is stopping; no new work accepted */
    KEEL_EBADCONFIG,      /* invalid configuration (see the log line) */
    KEEL_ERR_MAX
};

/* Returns a static, human-readable description of a keel error or negated
 * errno (err < 0). Safe to call from any thread. */
const char *keel_strerror(int err);

#ifdef __cplusplus
}
#endif
#endif
