/* Error strings and the log line. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "internal.h"

const char *keel_strerror(int err)
{
    if (err == 0)
        return "success";
    switch (-err) {
    case KEEL_EBROKEN_PROMISE: return "broken promise: the producer went away without a result";
    case KEEL_EGATE_CLOSED: return "gate closed";
    case KEEL_ESEM_BROKEN: return "semaphore broken";
    case KEEL_ESHUTDOWN: return "runtime shutting down";
    case KEEL_EBADCONFIG: return "invalid configuration";
    default: break;
    }
    if (err < 0 && -err < KEEL_ERR_BASE)
        return strerrordesc_np(-err) ? strerrordesc_np(-err) : "unknown error";
    return "unknown error";
}

/* One line per event, prefixed with the time and the shard, written with a
 * single write so lines from different shards never interleave. */
void keel__log(const char *fmt, ...)
{
    char line[1024];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    localtime_r(&ts.tv_sec, &tm);
    int n = (int)strftime(line, sizeof(line), "%Y-%m-%d %H:%M:%S", &tm);
    if (keel__self)
        n += snprintf(line + n, sizeof(line) - (size_t)n, ".%03ld keel[%u]: ", ts.tv_nsec / 1000000,
                      keel__self->id);
    else
        n += snprintf(line + n, sizeof(line) - (size_t)n, ".%03ld keel: ", ts.tv_nsec / 1000000);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    n = (m < 0) ? n : (n + m >= (int)sizeof(line) - 1 ? (int)sizeof(line) - 2 : n + m);
    line[n++] = '\n';
    fwrite(line, 1, (size_t)n, stderr);
}
