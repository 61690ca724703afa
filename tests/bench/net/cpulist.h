/* Shared by the standalone bench tools (they do not link keel). */
#ifndef KEEL_BENCH_NET_CPULIST_H
#define KEEL_BENCH_NET_CPULIST_H

#include <stdlib.h>

/* Parses a CPU list such as "0-3,6" into out[]; returns the count, or -1
 * when malformed or longer than max. */
static inline int parse_cpus(const char *s, int *out, int max)
{
    int n = 0;
    while (*s) {
        char *end;
        long a = strtol(s, &end, 10), b = a;
        if (end == s || a < 0)
            return -1;
        if (*end == '-') {
            s = end + 1;
            b = strtol(s, &end, 10);
            if (end == s || b < a)
                return -1;
        }
        for (long c = a; c <= b; c++) {
            if (n == max)
                return -1;
            out[n++] = (int)c;
        }
        s = end;
        if (*s == ',')
            s++;
        else if (*s)
            return -1;
    }
    return n;
}

#endif
