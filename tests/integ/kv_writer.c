/* kv_writer: a load generator and checker for keel-kv's persistence tests
 * (kv_persist_*.sh). It records every write keel-kv acknowledged, one line
 * per acknowledgement, flushed at once, so that a test that kills the
 * server knows exactly which writes it was promised.
 *
 *   kv_writer set PORT LOG [-c CONNS] [-d DEPTH] [-p PREFIX] [-n PER_CONN]
 *                          [-s VALUE_SIZE] [-e] [-t SECS]
 *       SETs PREFIX:CONN:SEQ to a value made from the key and SEQ (padded
 *       with 'x' to VALUE_SIZE), DEPTH commands in flight per connection.
 *       Each OK appends "S KEY SEQ SIZE" to LOG. Stops after PER_CONN keys
 *       per connection, after SECS seconds, when the server closes (exit 0),
 *       or, with -e, at the first error reply (printed; exit 3). Without
 *       -e an error reply is fatal (exit 1). SIGUSR1: stops sending, reads
 *       the replies in flight, exits 0.
 *   kv_writer mixed PORT LOG [-c CONNS] [-d DEPTH] [-t SECS]
 *       Per connection c, command i (i = 0, 1, ...) is by i % 4: INCR
 *       cnt:{c}, RPUSH list:{c} i, HSET h:{c} f<i> i, MSET of m:c:i:a/b/c
 *       (keys on both shards) to i. Each reply appends "A c i" to LOG.
 *   kv_writer rounds PORT STATUS [-k KEYS] [-d DEPTH] [-r FIRST] [-R LAST]
 *       One connection; round r = FIRST.. sets every key k%06d (k < KEYS)
 *       to r in key order, pipelined. Stops after round LAST or on SIGUSR1
 *       (after the replies in flight), then writes "ROUND INDEX" to STATUS:
 *       keys below INDEX have ROUND, the rest ROUND - 1 (INDEX may be
 *       KEYS). While running, STATUS.progress gets "ROUND" at each round's
 *       start.
 *   kv_writer check PORT LOG [-d DEPTH]
 *       Checks the server against a LOG of set or mixed: each S line's key
 *       has its value (and each "V KEY VALUE" line's); for mixed, every acknowledged command is
 * there and the counters / lists / hashes hold at most DEPTH more. kv_writer checkrounds PORT
 * STATUS [-k KEYS] Every key has the value STATUS says. Prints "kv_writer: ..." lines; exits 0, 1
 * on failure. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* A test tool that exits when done: in the sanitizer build, its
 * allocations are not leaks worth failing a test on. LeakSanitizer asks
 * this hook at exit, whatever ASAN_OPTIONS says (run-tests.sh turns leak
 * detection on for the servers under test). */
int __lsan_is_turned_off(void);
int __lsan_is_turned_off(void)
{
    return 1;
}

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("kv_writer: FAIL: ", stdout);
    vprintf(fmt, ap);
    putchar('\n');
    va_end(ap);
    exit(1);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ---- a connection: buffered output, buffered reply reader ---------------------- */

typedef struct conn {
    int fd;
    char *out;
    size_t olen, ocap;
    char in[65536];
    size_t ipos, ilen;
    bool closed; /* the server closed (or reset) it */
} conn;

static void conn_open(conn *c, int port)
{
    memset(c, 0, sizeof(*c));
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (c->fd < 0)
        die("socket: %s", strerror(errno));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        die("connect to port %d: %s", port, strerror(errno));
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static void out_put(conn *c, const void *p, size_t n)
{
    if (c->olen + n > c->ocap) {
        c->ocap = (c->olen + n) * 2 + 4096;
        c->out = realloc(c->out, c->ocap);
        if (!c->out)
            die("out of memory");
    }
    memcpy(c->out + c->olen, p, n);
    c->olen += n;
}

/* Appends a command of argc arguments (NUL-terminated strings, or with
 * lens[i] when lens is given). */
static void cmd(conn *c, int argc, const char **argv, const size_t *lens)
{
    char h[64];
    out_put(c, h, (size_t)snprintf(h, sizeof(h), "*%d\r\n", argc));
    for (int i = 0; i < argc; i++) {
        size_t n = lens ? lens[i] : strlen(argv[i]);
        out_put(c, h, (size_t)snprintf(h, sizeof(h), "$%zu\r\n", n));
        out_put(c, argv[i], n);
        out_put(c, "\r\n", 2);
    }
}

static bool flush_out(conn *c)
{
    size_t off = 0;
    while (off < c->olen) {
        ssize_t n = send(c->fd, c->out + off, c->olen - off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            c->closed = true;
            return false;
        }
        off += (size_t)n;
    }
    c->olen = 0;
    return true;
}

static bool fill(conn *c)
{
    if (c->ipos > 0 && c->ipos == c->ilen)
        c->ipos = c->ilen = 0;
    if (c->ilen == sizeof(c->in)) { /* compact */
        memmove(c->in, c->in + c->ipos, c->ilen - c->ipos);
        c->ilen -= c->ipos;
        c->ipos = 0;
    }
    for (;;) {
        ssize_t n = recv(c->fd, c->in + c->ilen, sizeof(c->in) - c->ilen, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            c->closed = true;
            return false;
        }
        c->ilen += (size_t)n;
        return true;
    }
}

/* Reads a line (without CRLF) into a malloc'd string. */
static char *read_line(conn *c)
{
    size_t scan = c->ipos;
    for (;;) {
        char *p = memchr(c->in + scan, '\n', c->ilen - scan);
        if (p) {
            size_t n = (size_t)(p - (c->in + c->ipos));
            char *s = malloc(n + 1);
            memcpy(s, c->in + c->ipos, n);
            s[n] = 0;
            if (n && s[n - 1] == '\r')
                s[n - 1] = 0;
            c->ipos += n + 1;
            return s;
        }
        size_t done = c->ilen - c->ipos;
        if (c->ipos > 0) {
            memmove(c->in, c->in + c->ipos, done);
            c->ilen = done;
            c->ipos = 0;
        }
        scan = c->ilen;
        if (!fill(c))
            return NULL;
    }
}

typedef struct reply {
    char type;     /* + - : $ * (and 0: connection closed) */
    long long num; /* ':' value, '$' length (-1 nil), '*' count */
    char *str;     /* + - $ text */
    char **items;  /* '*': elements' text (bulk or simple; nil as NULL) */
} reply;

static void reply_free(reply *r)
{
    free(r->str);
    if (r->items) {
        for (long long i = 0; i < r->num; i++)
            free(r->items[i]);
        free(r->items);
    }
    memset(r, 0, sizeof(*r));
}

static bool read_bulk(conn *c, long long len, char **out)
{
    char *s = malloc((size_t)len + 3);
    size_t got = 0;
    while (got < (size_t)len + 2) {
        if (c->ipos == c->ilen && !fill(c)) {
            free(s);
            return false;
        }
        size_t take = c->ilen - c->ipos;
        if (take > (size_t)len + 2 - got)
            take = (size_t)len + 2 - got;
        memcpy(s + got, c->in + c->ipos, take);
        c->ipos += take;
        got += take;
    }
    s[len] = 0;
    *out = s;
    return true;
}

/* One reply; false when the connection closed first. */
static bool read_reply(conn *c, reply *r)
{
    memset(r, 0, sizeof(*r));
    char *l = read_line(c);
    if (!l)
        return false;
    r->type = l[0];
    switch (l[0]) {
    case '+':
    case '-': r->str = strdup(l + 1); break;
    case ':': r->num = atoll(l + 1); break;
    case '$':
        r->num = atoll(l + 1);
        if (r->num >= 0 && !read_bulk(c, r->num, &r->str)) {
            free(l);
            return false;
        }
        break;
    case '*':
        r->num = atoll(l + 1);
        if (r->num > 0) {
            r->items = calloc((size_t)r->num, sizeof(char *));
            for (long long i = 0; i < r->num; i++) {
                reply e;
                if (!read_reply(c, &e)) {
                    free(l);
                    return false;
                }
                r->items[i] = e.str;
                e.str = NULL;
                reply_free(&e);
            }
        }
        break;
    default: die("unexpected reply line '%s'", l);
    }
    free(l);
    return true;
}

static volatile sig_atomic_t stop_flag;
static void on_usr1(int sig)
{
    (void)sig;
    stop_flag = 1;
}

/* ---- set --------------------------------------------------------------------------- */

static char *make_value(const char *key, long seq, size_t size, size_t *len)
{
    static char *buf;
    static size_t cap;
    if (cap < size + 128) {
        cap = size + 128;
        buf = realloc(buf, cap);
    }
    int n = snprintf(buf, cap, "%s:%ld:", key, seq);
    size_t l = (size_t)n;
    while (l < size)
        buf[l++] = 'x';
    buf[l] = 0;
    *len = l;
    return buf;
}

typedef struct opts {
    int conns, depth;
    const char *prefix;
    long per_conn;
    size_t vsize;
    bool stop_on_error;
    double secs;
    long keys, first, last;
} opts;

/* A load's acknowledgement log and connections, with per-connection
 * counts of commands sent and acknowledged. */
typedef struct load {
    FILE *log;
    conn *cs;
    long *sent, *acked;
} load;

static load load_open(int port, const char *logpath, const opts *o)
{
    load ld = {fopen(logpath, "a"), calloc((size_t)o->conns, sizeof(conn)),
               calloc((size_t)o->conns, sizeof(long)), calloc((size_t)o->conns, sizeof(long))};
    if (!ld.log)
        die("%s: %s", logpath, strerror(errno));
    if (!ld.cs || !ld.sent || !ld.acked)
        die("out of memory");
    for (int i = 0; i < o->conns; i++)
        conn_open(&ld.cs[i], port);
    return ld;
}

static int do_set(int port, const char *logpath, opts *o)
{
    load ld = load_open(port, logpath, o);
    FILE *log = ld.log;
    conn *cs = ld.cs;
    long *sent = ld.sent, *acked = ld.acked;
    double end = o->secs > 0 ? now_s() + o->secs : 0;
    bool stopping = false;
    long *limit = calloc((size_t)o->conns, sizeof(long));
    for (int i = 0; i < o->conns; i++)
        limit[i] = o->per_conn > 0 ? o->per_conn : -1;
    long total = 0;
    char key[256];
    for (;;) {

        for (int i = 0; i < o->conns; i++) {
            if (cs[i].closed)
                continue;
            while (sent[i] - acked[i] < o->depth && (limit[i] < 0 || sent[i] < limit[i])) {
                snprintf(key, sizeof(key), "%s:%d:%ld", o->prefix, i, sent[i]);
                size_t vl;
                const char *v = make_value(key, sent[i], o->vsize, &vl);
                const char *argv[] = {"SET", key, v};
                size_t lens[] = {3, strlen(key), vl};
                cmd(&cs[i], 3, argv, lens);
                sent[i]++;
            }
            if (cs[i].olen)
                flush_out(&cs[i]);
        }
        for (int i = 0; i < o->conns; i++) {
            if (cs[i].closed || acked[i] == sent[i])
                continue;

            reply r;
            if (!read_reply(&cs[i], &r))
                continue;
            if (r.type == '+' && !strcmp(r.str, "OK")) {
                fprintf(log, "S %s:%d:%ld %ld %zu\n", o->prefix, i, acked[i], acked[i], o->vsize);
                fflush(log);
                acked[i]++;
                total++;
            } else {
                printf("kv_writer: error reply to SET %s:%d:%ld: %c%s\n", o->prefix, i, acked[i],
                       r.type, r.str ? r.str : "");
                fflush(stdout);
                if (!o->stop_on_error)
                    die("unexpected reply");
                /* The rest in flight: read and record those that succeeded. */
                acked[i]++;
                for (int j = 0; j < o->conns; j++) {
                    while (!cs[j].closed && acked[j] < sent[j]) {
                        reply q;
                        if (!read_reply(&cs[j], &q))
                            break;
                        if (q.type == '+') {
                            fprintf(log, "S %s:%d:%ld %ld %zu\n", o->prefix, j, acked[j], acked[j],
                                    o->vsize);
                            fflush(log);
                            total++;
                        }
                        acked[j]++;
                        reply_free(&q);
                    }
                }
                fclose(log);
                printf("kv_writer: %ld SETs acknowledged, stopped at the first error\n", total);
                return 3;
            }
            reply_free(&r);
        }
        if (((end && now_s() >= end) || stop_flag) && !stopping) {
            stopping = true; /* send no more; drain what is in flight */
            for (int i = 0; i < o->conns; i++)
                limit[i] = sent[i];
        }
        bool done = true;
        for (int i = 0; i < o->conns; i++)
            if (!cs[i].closed && (acked[i] < sent[i] || limit[i] < 0 || sent[i] < limit[i]))
                done = false;
        if (done)
            break;
    }
    fclose(log);
    bool closed = false;
    for (int i = 0; i < o->conns; i++)
        closed |= cs[i].closed;
    printf("kv_writer: %ld SETs acknowledged%s\n", total,
           closed ? " (server closed the connection)" : "");
    return 0;
}

/* ---- mixed ------------------------------------------------------------------------- */

static void mixed_cmd(conn *c, int ci, long i)
{
    char k1[64], k2[64], k3[64], v[32], f[40];
    snprintf(v, sizeof(v), "%ld", i);
    switch (i % 4) {
    case 0: {
        snprintf(k1, sizeof(k1), "cnt:{%d}", ci);
        const char *a[] = {"INCR", k1};
        cmd(c, 2, a, NULL);
        break;
    }
    case 1: {
        snprintf(k1, sizeof(k1), "list:{%d}", ci);
        const char *a[] = {"RPUSH", k1, v};
        cmd(c, 3, a, NULL);
        break;
    }
    case 2: {
        snprintf(k1, sizeof(k1), "h:{%d}", ci);
        snprintf(f, sizeof(f), "f%ld", i);
        const char *a[] = {"HSET", k1, f, v};
        cmd(c, 4, a, NULL);
        break;
    }
    default: {
        snprintf(k1, sizeof(k1), "m:%d:%ld:a", ci, i);
        snprintf(k2, sizeof(k2), "m:%d:%ld:b", ci, i);
        snprintf(k3, sizeof(k3), "m:%d:%ld:c", ci, i);
        const char *a[] = {"MSET", k1, v, k2, v, k3, v};
        cmd(c, 7, a, NULL);
        break;
    }
    }
}

static int do_mixed(int port, const char *logpath, opts *o)
{
    load ld = load_open(port, logpath, o);
    FILE *log = ld.log;
    conn *cs = ld.cs;
    long *sent = ld.sent, *acked = ld.acked;
    double end = o->secs > 0 ? now_s() + o->secs : 1e18;
    long total = 0;
    for (;;) {
        bool live = false, sending = now_s() < end;
        for (int i = 0; i < o->conns; i++) {
            if (cs[i].closed)
                continue;
            live = true;
            while (sending && sent[i] - acked[i] < o->depth)
                mixed_cmd(&cs[i], i, sent[i]++);
            if (cs[i].olen)
                flush_out(&cs[i]);
        }
        if (!live)
            break;
        bool waiting = false;
        for (int i = 0; i < o->conns; i++) {
            if (cs[i].closed || acked[i] == sent[i])
                continue;
            waiting = true;
            reply r;
            if (!read_reply(&cs[i], &r))
                continue;
            if (r.type == '-')
                die("error reply to mixed command %d %ld: %s", i, acked[i], r.str);
            fprintf(log, "A %d %ld\n", i, acked[i]);
            fflush(log);
            acked[i]++;
            total++;
            reply_free(&r);
        }
        if (!sending && !waiting)
            break;
    }
    fclose(log);
    printf("kv_writer: %ld mixed commands acknowledged\n", total);
    return 0;
}

/* ---- rounds ------------------------------------------------------------------------ */

static int do_rounds(int port, const char *status, opts *o)
{
    char progress[4096];
    snprintf(progress, sizeof(progress), "%s.progress", status);
    conn c;
    conn_open(&c, port);
    long r = o->first, idx = 0;   /* next to send */
    long ar = o->first, aidx = 0; /* next to be acknowledged */
    long inflight = 0;
    char key[32], v[32];
    for (;;) {
        bool more = !stop_flag && r <= o->last;
        while (more && inflight < o->depth) {
            if (idx == 0) {
                FILE *p = fopen(progress, "w");
                if (p) {
                    fprintf(p, "%ld\n", r);
                    fclose(p);
                }
            }
            snprintf(key, sizeof(key), "k%06ld", idx);
            snprintf(v, sizeof(v), "%ld", r);
            const char *a[] = {"SET", key, v};
            cmd(&c, 3, a, NULL);
            inflight++;
            if (++idx == o->keys) {
                idx = 0;
                if (++r > o->last)
                    break;
            }
        }
        if (c.olen && !flush_out(&c))
            die("server closed the connection");
        if (inflight == 0)
            break;
        long batch = inflight;
        for (long i = 0; i < batch; i++) {
            reply rep;
            if (!read_reply(&c, &rep))
                die("server closed the connection");
            if (rep.type != '+')
                die("reply to SET k%06ld in round %ld: %c%s", aidx, ar, rep.type,
                    rep.str ? rep.str : "");
            reply_free(&rep);
            inflight--;
            if (++aidx == o->keys) {
                aidx = 0;
                ar++;
            }
        }
    }
    /* Everything sent was acknowledged: keys below aidx have ar, the rest ar-1. */
    if (aidx == 0) {
        ar--;
        aidx = o->keys;
    }
    FILE *f = fopen(status, "w");
    if (!f)
        die("%s: %s", status, strerror(errno));
    fprintf(f, "%ld %ld\n", ar, aidx);
    fclose(f);
    printf("kv_writer: rounds stopped in round %ld at key %ld\n", ar, aidx);
    return 0;
}

/* ---- checks ------------------------------------------------------------------------ */

/* GETs keys[0..n) pipelined; calls want(i, got) per reply. */
typedef struct getjob {
    char **keys;
    char **want;
    long n;
} getjob;

static long check_gets(conn *c, getjob *g)
{
    long bad = 0;
    for (long base = 0; base < g->n; base += 1000) {
        long end = base + 1000 < g->n ? base + 1000 : g->n;
        for (long i = base; i < end; i++) {
            const char *a[] = {"GET", g->keys[i]};
            cmd(c, 2, a, NULL);
        }
        if (!flush_out(c))
            die("server closed the connection");
        for (long i = base; i < end; i++) {
            reply r;
            if (!read_reply(c, &r))
                die("server closed the connection");
            if (r.type != '$' || !r.str || strcmp(r.str, g->want[i])) {
                if (bad < 5)
                    printf("kv_writer: %s: got %s%.40s, want %.40s...\n", g->keys[i],
                           r.type == '$' && !r.str ? "(nil)" : "", r.str ? r.str : "", g->want[i]);
                bad++;
            }
            reply_free(&r);
        }
    }
    return bad;
}

static reply call(conn *c, int argc, const char **argv)
{
    cmd(c, argc, argv, NULL);
    reply r;
    if (!flush_out(c) || !read_reply(c, &r))
        die("server closed the connection");
    return r;
}

static int do_check(int port, const char *logpath, opts *o)
{
    FILE *log = fopen(logpath, "r");
    if (!log)
        die("%s: %s", logpath, strerror(errno));
    getjob g = {0};
    long cap = 0;
    long *acked = NULL; /* mixed: acknowledged count per connection */
    int nconn = 0;
    char line[600], key[256], val[256];
    long seq;
    size_t size;
    int ci;
    while (fgets(line, sizeof(line), log)) {
        if (sscanf(line, "S %255s %ld %zu", key, &seq, &size) == 3) {
            if (g.n == cap) {
                cap = cap * 2 + 1024;
                g.keys = realloc(g.keys, (size_t)cap * sizeof(char *));
                g.want = realloc(g.want, (size_t)cap * sizeof(char *));
            }
            size_t vl;
            g.keys[g.n] = strdup(key);
            g.want[g.n] = strdup(make_value(key, seq, size, &vl));
            g.n++;
        } else if (sscanf(line, "V %255s %255s", key, val) == 2) {
            if (g.n == cap) {
                cap = cap * 2 + 1024;
                g.keys = realloc(g.keys, (size_t)cap * sizeof(char *));
                g.want = realloc(g.want, (size_t)cap * sizeof(char *));
            }
            g.keys[g.n] = strdup(key);
            g.want[g.n] = strdup(val);
            g.n++;
        } else if (sscanf(line, "A %d %ld", &ci, &seq) == 2) {
            if (ci >= nconn) {
                acked = realloc(acked, (size_t)(ci + 1) * sizeof(long));
                for (int i = nconn; i <= ci; i++)
                    acked[i] = 0;
                nconn = ci + 1;
            }
            if (seq != acked[ci])
                die("log: connection %d acknowledged %ld after %ld", ci, seq, acked[ci]);
            acked[ci]++;
            /* MSET keys: all three must be there. */
            if (seq % 4 == 3) {
                for (int k = 0; k < 3; k++) {
                    if (g.n == cap) {
                        cap = cap * 2 + 1024;
                        g.keys = realloc(g.keys, (size_t)cap * sizeof(char *));
                        g.want = realloc(g.want, (size_t)cap * sizeof(char *));
                    }
                    snprintf(key, sizeof(key), "m:%d:%ld:%c", ci, seq, 'a' + k);
                    g.keys[g.n] = strdup(key);
                    snprintf(key, sizeof(key), "%ld", seq);
                    g.want[g.n] = strdup(key);
                    g.n++;
                }
            }
        } else if (line[0] != '\n') {
            die("log: bad line '%s'", line);
        }
    }
    fclose(log);
    conn c;
    conn_open(&c, port);
    long bad = check_gets(&c, &g);
    long mixed_checked = 0;
    for (int i = 0; i < nconn; i++) {
        long a = acked[i], hi = acked[i] + o->depth; /* at most depth sent unacknowledged */
        long n_incr_lo = 0, n_incr_hi = 0, n_push_lo = 0, n_push_hi = 0, n_h_lo = 0, n_h_hi = 0;
        for (long s = 0; s < hi; s++) {
            long *lo = s % 4 == 0   ? &n_incr_lo
                       : s % 4 == 1 ? &n_push_lo
                       : s % 4 == 2 ? &n_h_lo
                                    : NULL;
            long *up = s % 4 == 0   ? &n_incr_hi
                       : s % 4 == 1 ? &n_push_hi
                       : s % 4 == 2 ? &n_h_hi
                                    : NULL;
            if (!lo)
                continue;
            if (s < a)
                (*lo)++;
            (*up)++;
        }
        char k[64], f[40];
        snprintf(k, sizeof(k), "cnt:{%d}", i);
        const char *ga[] = {"GET", k};
        reply r = call(&c, 2, ga);
        long long v = r.str ? atoll(r.str) : 0;
        if (v < n_incr_lo || v > n_incr_hi) {
            printf("kv_writer: %s = %lld, want %ld..%ld\n", k, v, n_incr_lo, n_incr_hi);
            bad++;
        }
        reply_free(&r);
        snprintf(k, sizeof(k), "list:{%d}", i);
        const char *la[] = {"LRANGE", k, "0", "-1"};
        r = call(&c, 4, la);
        if (r.type != '*' || r.num < n_push_lo || r.num > n_push_hi) {
            printf("kv_writer: %s has %lld elements, want %ld..%ld\n", k, r.num, n_push_lo,
                   n_push_hi);
            bad++;
        } else {
            for (long j = 0; j < r.num; j++) {
                if (!r.items[j] || atol(r.items[j]) != 4 * j + 1) {
                    printf("kv_writer: %s[%ld] = %s, want %ld\n", k, j,
                           r.items[j] ? r.items[j] : "nil", 4 * j + 1);
                    bad++;
                    break;
                }
            }
        }
        reply_free(&r);
        snprintf(k, sizeof(k), "h:{%d}", i);
        const char *ha[] = {"HLEN", k};
        r = call(&c, 2, ha);
        if (r.type != ':' || r.num < n_h_lo || r.num > n_h_hi) {
            printf("kv_writer: HLEN %s = %lld, want %ld..%ld\n", k, r.num, n_h_lo, n_h_hi);
            bad++;
        }
        reply_free(&r);
        for (long s = 2; s < a; s += 4) {
            snprintf(f, sizeof(f), "f%ld", s);
            const char *hg[] = {"HGET", k, f};
            r = call(&c, 3, hg);
            if (!r.str || atol(r.str) != s) {
                printf("kv_writer: HGET %s %s = %s, want %ld\n", k, f, r.str ? r.str : "nil", s);
                bad++;
                reply_free(&r);
                break;
            }
            reply_free(&r);
        }
        mixed_checked += a;
    }
    if (bad)
        die("%ld of %ld acknowledged writes missing or wrong (plus %ld mixed commands checked)",
            bad, g.n, mixed_checked);
    printf("kv_writer: OK: %ld acknowledged keys and %ld mixed commands all present\n", g.n,
           mixed_checked);
    return 0;
}

static int do_checkrounds(int port, const char *status, opts *o)
{
    FILE *f = fopen(status, "r");
    long r, idx;
    if (!f || fscanf(f, "%ld %ld", &r, &idx) != 2)
        die("no status in %s", status);
    fclose(f);
    getjob g = {calloc((size_t)o->keys, sizeof(char *)), calloc((size_t)o->keys, sizeof(char *)),
                o->keys};
    char b[32];
    for (long k = 0; k < o->keys; k++) {
        snprintf(b, sizeof(b), "k%06ld", k);
        g.keys[k] = strdup(b);
        snprintf(b, sizeof(b), "%ld", k < idx ? r : r - 1);
        g.want[k] = strdup(b);
    }
    conn c;
    conn_open(&c, port);
    long bad = check_gets(&c, &g);
    if (bad)
        die("%ld of %ld keys differ from the writer's last acknowledged round (%ld up to key %ld)",
            bad, o->keys, r, idx);
    printf(
        "kv_writer: OK: all %ld keys have the last acknowledged value (round %ld up to key %ld)\n",
        o->keys, r, idx);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr,
                "usage: kv_writer set|mixed|rounds|check|checkrounds PORT FILE [options]\n");
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {.sa_handler = on_usr1};
    sigaction(SIGUSR1, &sa, NULL);
    const char *mode = argv[1], *path = argv[3];
    int port = atoi(argv[2]);
    opts o = {.conns = 4,
              .depth = 4,
              .prefix = "w",
              .vsize = 16,
              .keys = 200000,
              .first = 1,
              .last = 1L << 40};
    int opt;
    optind = 4;
    while ((opt = getopt(argc, argv, "c:d:p:n:s:et:k:r:R:")) != -1) {
        switch (opt) {
        case 'c': o.conns = atoi(optarg); break;
        case 'd': o.depth = atoi(optarg); break;
        case 'p': o.prefix = optarg; break;
        case 'n': o.per_conn = atol(optarg); break;
        case 's': o.vsize = (size_t)atol(optarg); break;
        case 'e': o.stop_on_error = true; break;
        case 't': o.secs = atof(optarg); break;
        case 'k': o.keys = atol(optarg); break;
        case 'r': o.first = atol(optarg); break;
        case 'R': o.last = atol(optarg); break;
        default: return 2;
        }
    }
    if (!strcmp(mode, "set"))
        return do_set(port, path, &o);
    if (!strcmp(mode, "mixed"))
        return do_mixed(port, path, &o);
    if (!strcmp(mode, "rounds"))
        return do_rounds(port, path, &o);
    if (!strcmp(mode, "check"))
        return do_check(port, path, &o);
    if (!strcmp(mode, "checkrounds"))
        return do_checkrounds(port, path, &o);
    fprintf(stderr, "kv_writer: unknown mode %s\n", mode);
    return 2;
}
