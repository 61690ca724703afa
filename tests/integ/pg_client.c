/* pg_client: a PostgreSQL protocol client for keel-pool's integration
 * tests, with one subcommand per scenario. libpq drives the well-formed
 * cases; a plain TCP socket sends the malformed ones. Prints
 * "pg_client: OK SUBCOMMAND" and exits 0, or prints one line
 * "pg_client: FAIL: reason" to stderr and exits 1.
 *
 *   pg_client SUBCOMMAND -d CONNINFO [options]
 *
 *   cancel       -n N times, each on a new connection: a long query is
 *                cancelled (PQcancel) and fails with 57014 within 5 s;
 *                the connection then runs SELECT 1
 *   params       two connections SET application_name, TimeZone, DateStyle
 *                and client_encoding to different values; interleaved SHOWs
 *                and PQparameterStatus must each see their own (meant for
 *                transaction pooling with pool size 1)
 *   prepared     two connections prepare "s1" with different SQL and run
 *                it interleaved; PQdescribePrepared; unnamed statements
 *   copy         COPY FROM STDIN of 10,000 rows (plus one large row), then
 *                COPY TO STDOUT, checked by count and checksum; a real
 *                table, or a temporary one with -m session
 *   notify       LISTEN on one connection, NOTIFY from another, delivered
 *                within 5 s (session pooling)
 *   errors       syntax errors (42601) and errors inside a transaction
 *                leave the connection usable
 *   raw-ssl      SSLRequest answered 'N', then a startup gets an 'R'
 *   raw-gss      GSSENCRequest answered 'N', then a startup gets an 'R'
 *   raw-badlen   startup packets of length 100,000,000 and 3: closed in 5 s
 *   raw-garbage  64 random bytes (bad length; valid length, bad protocol
 *                code): closed within 5 s
 *   raw-partial  4 bytes of a startup packet, then silence: closed within
 *                -t SECONDS (client_login_timeout) + 3 s
 *   raw-badmsg   after login, an unknown message type, a Query with length
 *                0x7fffffff and one with length 2: ErrorResponse or close
 *                within 5 s each
 *   raw-vanish   after login, clients that close mid-query and inside a
 *                transaction; new connections then get a clean server
 *
 * The raw-* commands talk to -h HOST -p PORT (default: host and port of
 * CONNINFO), log in as the CONNINFO user, which must be a trust user, and
 * afterwards check that a libpq connection with CONNINFO still works.
 *
 * Options: -d CONNINFO, -h HOST, -p PORT, -n N (cancel rounds),
 * -t SECONDS (raw-partial), -m session|transaction (copy),
 * -T SECONDS (whole run; default 120).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <libpq-fe.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PROTOCOL_3_0 196608
#define SSL_REQUEST_CODE 80877103
#define GSSENC_REQUEST_CODE 80877104

static const char *conninfo;
static const char *raw_host;
static const char *raw_port;
static const char *mode = "transaction";
static int rounds = 6;
static int login_timeout_s = -1;
static int run_timeout_s = 120;
static const char *subcommand = "?";

/* ---- helpers ------------------------------------------------------------------ */

__attribute__((format(printf, 1, 2), noreturn)) static void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "pg_client: FAIL: %s: ", subcommand);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static void on_alarm(int sig)
{
    (void)sig;
    static const char msg[] = "pg_client: FAIL: run timeout (-T) reached\n";
    ssize_t n = write(2, msg, sizeof(msg) - 1);
    (void)n;
    _exit(1);
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
}

/* One line of libpq's error text, without its trailing newline. */
static const char *oneline(const char *msg)
{
    static char buf[512];
    snprintf(buf, sizeof(buf), "%s", msg ? msg : "(no message)");
    for (char *p = buf; *p; p++)
        if (*p == '\n')
            *p = (p[1] ? ' ' : '\0');
    return buf;
}

static void quiet_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

static PGconn *db_connect(void)
{
    PGconn *conn = PQconnectdb(conninfo);
    if (PQstatus(conn) != CONNECTION_OK)
        fail("connect: %s", oneline(PQerrorMessage(conn)));
    PQsetNoticeProcessor(conn, quiet_notice, NULL);
    return conn;
}

/* Runs sql and fails unless it succeeds; returns the result to PQclear. */
static PGresult *exec_ok(PGconn *conn, const char *sql)
{
    PGresult *res = PQexec(conn, sql);
    ExecStatusType st = PQresultStatus(res);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        fail("\"%s\": %s", sql, oneline(PQerrorMessage(conn)));
    return res;
}

static void exec_cmd(PGconn *conn, const char *sql)
{
    PQclear(exec_ok(conn, sql));
}

/* Runs sql and checks that the first value of the first row is want. */
static void expect_value(PGconn *conn, const char *sql, const char *want, const char *who)
{
    PGresult *res = exec_ok(conn, sql);
    if (PQntuples(res) < 1 || PQnfields(res) < 1)
        fail("%s: \"%s\" returned no row", who, sql);
    if (strcmp(PQgetvalue(res, 0, 0), want) != 0)
        fail("%s: \"%s\" returned '%s', want '%s'", who, sql, PQgetvalue(res, 0, 0), want);
    PQclear(res);
}

/* Runs sql and checks that it fails with SQLSTATE want. */
static void expect_error(PGconn *conn, const char *sql, const char *want)
{
    PGresult *res = PQexec(conn, sql);
    if (PQresultStatus(res) != PGRES_FATAL_ERROR)
        fail("\"%s\" succeeded (%s), want SQLSTATE %s", sql, PQresStatus(PQresultStatus(res)),
             want);
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    if (!state || strcmp(state, want) != 0)
        fail("\"%s\": SQLSTATE %s, want %s: %s", sql, state ? state : "(none)", want,
             oneline(PQresultErrorMessage(res)));
    PQclear(res);
}

static void expect_select1(PGconn *conn, const char *who)
{
    expect_value(conn, "SELECT 1", "1", who);
}

/* A fresh libpq connection runs a query: the server is still sane. */
static void check_libpq_works(const char *after)
{
    PGconn *conn = PQconnectdb(conninfo);
    if (PQstatus(conn) != CONNECTION_OK)
        fail("after %s, connect: %s", after, oneline(PQerrorMessage(conn)));
    PGresult *res = PQexec(conn, "SELECT 1");
    if (PQresultStatus(res) != PGRES_TUPLES_OK || strcmp(PQgetvalue(res, 0, 0), "1") != 0)
        fail("after %s, SELECT 1: %s", after, oneline(PQerrorMessage(conn)));
    PQclear(res);
    PQfinish(conn);
}

/* Waits until conn has a whole result (not busy), deadline in now_ms(). */
static void wait_not_busy(PGconn *conn, int64_t deadline, const char *what)
{
    for (;;) {
        if (!PQconsumeInput(conn))
            fail("%s: %s", what, oneline(PQerrorMessage(conn)));
        if (!PQisBusy(conn))
            return;
        int64_t left = deadline - now_ms();
        if (left <= 0)
            fail("%s: no result within the time limit", what);
        struct pollfd pfd = {.fd = PQsocket(conn), .events = POLLIN};
        if (poll(&pfd, 1, (int)left) < 0 && errno != EINTR)
            fail("%s: poll: %s", what, strerror(errno));
    }
}

/* ---- cancel ------------------------------------------------------------------- */

static void cmd_cancel(void)
{
    for (int i = 0; i < rounds; i++) {
        PGconn *conn = db_connect();
        int64_t start = now_ms();
        if (!PQsendQuery(conn, "SELECT pg_sleep(10)"))
            fail("round %d: PQsendQuery: %s", i, oneline(PQerrorMessage(conn)));
        sleep_ms(300);
        PGcancel *cancel = PQgetCancel(conn);
        if (!cancel)
            fail("round %d: PQgetCancel returned NULL", i);
        char errbuf[256];
        if (!PQcancel(cancel, errbuf, sizeof(errbuf)))
            fail("round %d: PQcancel: %s", i, oneline(errbuf));
        PQfreeCancel(cancel);

        wait_not_busy(conn, start + 5000, "cancelled query");
        PGresult *res = PQgetResult(conn);
        const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        if (PQresultStatus(res) != PGRES_FATAL_ERROR || !state || strcmp(state, "57014") != 0)
            fail("round %d: cancelled query gave %s, SQLSTATE %s (want 57014): %s", i,
                 PQresStatus(PQresultStatus(res)), state ? state : "(none)",
                 oneline(PQresultErrorMessage(res)));
        PQclear(res);
        while ((res = PQgetResult(conn)) != NULL)
            PQclear(res);
        int64_t took = now_ms() - start;
        if (took >= 5000)
            fail("round %d: cancel took %lld ms", i, (long long)took);
        expect_select1(conn, "after cancel");
        PQfinish(conn);
    }
    printf("pg_client: OK cancel (%d rounds)\n", rounds);
}

/* ---- params ------------------------------------------------------------------- */

struct params {
    const char *who;
    PGconn *conn;
    const char *app, *tz, *datestyle, *encoding;
};

static void check_params(struct params *p)
{
    expect_value(p->conn, "SHOW application_name", p->app, p->who);
    expect_value(p->conn, "SHOW TimeZone", p->tz, p->who);
    expect_value(p->conn, "SHOW DateStyle", p->datestyle, p->who);
    expect_value(p->conn, "SHOW client_encoding", p->encoding, p->who);
    const char *names[] = {"application_name", "TimeZone", "DateStyle", "client_encoding"};
    const char *wants[] = {p->app, p->tz, p->datestyle, p->encoding};
    for (int i = 0; i < 4; i++) {
        const char *got = PQparameterStatus(p->conn, names[i]);
        if (!got || strcmp(got, wants[i]) != 0)
            fail("%s: PQparameterStatus(%s) is '%s', want '%s'", p->who, names[i],
                 got ? got : "(null)", wants[i]);
    }
    if (strcmp(pg_encoding_to_char(PQclientEncoding(p->conn)), p->encoding) != 0)
        fail("%s: PQclientEncoding is %s, want %s", p->who,
             pg_encoding_to_char(PQclientEncoding(p->conn)), p->encoding);
}

static void cmd_params(void)
{
    struct params a = {"A", db_connect(), "aaa", "America/New_York", "SQL, DMY", "LATIN1"};
    struct params b = {"B", db_connect(), "bbb", "Asia/Tokyo", "ISO, MDY", NULL};
    /* B keeps the encoding it logged in with (the database's, or UTF8). */
    PGresult *res = exec_ok(b.conn, "SHOW client_encoding");
    char *b_encoding = strdup(PQgetvalue(res, 0, 0));
    PQclear(res);
    b.encoding = b_encoding;
    if (strcmp(b.encoding, "LATIN1") == 0)
        fail("B: client_encoding is already LATIN1; the test needs another one");

    exec_cmd(a.conn, "SET application_name='aaa'");
    exec_cmd(a.conn, "SET TimeZone='America/New_York'");
    exec_cmd(a.conn, "SET DateStyle='SQL, DMY'");
    exec_cmd(a.conn, "SET client_encoding='LATIN1'");
    exec_cmd(b.conn, "SET application_name='bbb'");
    exec_cmd(b.conn, "SET TimeZone='Asia/Tokyo'");
    exec_cmd(b.conn, "SET DateStyle='ISO, MDY'");

    for (int i = 0; i < 5; i++) {
        struct params *first = (i % 2) ? &b : &a, *second = (i % 2) ? &a : &b;
        check_params(first);
        check_params(second);
        /* One query each, alternating, so the server flips every time. */
        expect_value(a.conn, "SELECT current_setting('TimeZone')", a.tz, "A");
        expect_value(b.conn, "SELECT current_setting('TimeZone')", b.tz, "B");
        expect_value(a.conn, "SELECT current_setting('application_name')", a.app, "A");
        expect_value(b.conn, "SELECT current_setting('application_name')", b.app, "B");
    }
    /* The values show in date output, not only in SHOW. */
    expect_value(a.conn, "SELECT '2024-03-04'::date::text", "04/03/2024", "A");
    expect_value(b.conn, "SELECT '2024-03-04'::date::text", "2024-03-04", "B");

    PQfinish(a.conn);
    PQfinish(b.conn);
    free(b_encoding);
    printf("pg_client: OK params\n");
}

/* ---- prepared ----------------------------------------------------------------- */

static void exec_prepared_int(PGconn *conn, const char *name, int arg, int want, const char *who)
{
    char argbuf[32], wantbuf[32];
    snprintf(argbuf, sizeof(argbuf), "%d", arg);
    snprintf(wantbuf, sizeof(wantbuf), "%d", want);
    const char *values[1] = {argbuf};
    PGresult *res = PQexecPrepared(conn, name, 1, values, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        fail("%s: execute %s(%d): %s", who, name, arg, oneline(PQerrorMessage(conn)));
    if (PQntuples(res) != 1 || strcmp(PQgetvalue(res, 0, 0), wantbuf) != 0)
        fail("%s: execute %s(%d) returned '%s', want %s", who, name, arg,
             PQntuples(res) ? PQgetvalue(res, 0, 0) : "(no row)", wantbuf);
    PQclear(res);
}

static void prepare(PGconn *conn, const char *name, const char *sql, const char *who)
{
    PGresult *res = PQprepare(conn, name, sql, 0, NULL);
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        fail("%s: prepare %s \"%s\": %s", who, name, sql, oneline(PQerrorMessage(conn)));
    PQclear(res);
}

static void describe_int(PGconn *conn, const char *name, const char *who)
{
    PGresult *res = PQdescribePrepared(conn, name);
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        fail("%s: describe %s: %s", who, name, oneline(PQerrorMessage(conn)));
    if (PQnparams(res) != 1 || PQparamtype(res, 0) != 23 || PQnfields(res) != 1 ||
        PQftype(res, 0) != 23)
        fail("%s: describe %s: %d params (type %u), %d fields (type %u); want int4 -> int4", who,
             name, PQnparams(res), PQnparams(res) ? PQparamtype(res, 0) : 0, PQnfields(res),
             PQnfields(res) ? PQftype(res, 0) : 0);
    PQclear(res);
}

static void cmd_prepared(void)
{
    PGconn *a = db_connect(), *b = db_connect();
    prepare(a, "s1", "SELECT $1::int + 1", "A");
    prepare(b, "s1", "SELECT $1::int * 10", "B");
    describe_int(a, "s1", "A");
    describe_int(b, "s1", "B");
    for (int i = 0; i < 200; i++) {
        exec_prepared_int(a, "s1", i, i + 1, "A");
        exec_prepared_int(b, "s1", i, i * 10, "B");
        if (i % 3 == 0)
            exec_prepared_int(b, "s1", -i, -i * 10, "B");
    }
    /* More names, prepared late, one of them the same text as B's s1. */
    prepare(a, "s2", "SELECT $1::int * 10", "A");
    prepare(b, "s2", "SELECT $1::int - 7", "B");
    for (int i = 0; i < 50; i++) {
        exec_prepared_int(a, "s2", i, i * 10, "A");
        exec_prepared_int(b, "s1", i, i * 10, "B");
        exec_prepared_int(b, "s2", i, i - 7, "B");
        exec_prepared_int(a, "s1", i, i + 1, "A");
    }
    /* Inside a transaction, and after one. */
    exec_cmd(a, "BEGIN");
    exec_prepared_int(a, "s1", 41, 42, "A");
    exec_prepared_int(b, "s2", 49, 42, "B");
    exec_prepared_int(a, "s2", 5, 50, "A");
    exec_cmd(a, "COMMIT");
    /* A statement that fails at execution does not lose the statement. */
    prepare(a, "div", "SELECT 100 / $1::int", "A");
    const char *zero[1] = {"0"};
    PGresult *res = PQexecPrepared(a, "div", 1, zero, NULL, NULL, 0);
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    if (!state || strcmp(state, "22012") != 0)
        fail("A: div(0): SQLSTATE %s, want 22012", state ? state : "(none)");
    PQclear(res);
    exec_prepared_int(a, "div", 4, 25, "A");
    /* An unknown name fails with 26000 and the connection goes on. */
    res = PQexecPrepared(b, "nope", 0, NULL, NULL, NULL, 0);
    state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    if (!state || strcmp(state, "26000") != 0)
        fail("B: execute of unknown statement: SQLSTATE %s, want 26000", state ? state : "(none)");
    PQclear(res);
    exec_prepared_int(b, "s1", 3, 30, "B");

    /* Unnamed statements, interleaved. */
    for (int i = 0; i < 100; i++) {
        char arg[32], want[64];
        snprintf(arg, sizeof(arg), "%d", i);
        snprintf(want, sizeof(want), "%d-x", i);
        const char *values[1] = {arg};
        PGconn *conn = (i % 2) ? b : a;
        res = PQexecParams(conn, "SELECT $1::text || '-x'", 1, NULL, values, NULL, NULL, 0);
        if (PQresultStatus(res) != PGRES_TUPLES_OK || strcmp(PQgetvalue(res, 0, 0), want) != 0)
            fail("unnamed statement %d: %s", i, oneline(PQerrorMessage(conn)));
        PQclear(res);
    }
    exec_prepared_int(a, "s1", 1, 2, "A");
    exec_prepared_int(b, "s1", 1, 10, "B");
    PQfinish(a);
    PQfinish(b);
    printf("pg_client: OK prepared\n");
}

/* ---- copy --------------------------------------------------------------------- */

#define COPY_ROWS 10000
#define COPY_BIG_BYTES 200000

static uint64_t fnv1a(uint64_t h, const void *data, size_t len)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 1099511628211ULL;
    }
    return h;
}

/* Row i of the COPY text: "i\t<payload>\n", payload a function of i. */
static size_t copy_row(int i, char *buf, size_t cap)
{
    size_t len = (size_t)snprintf(buf, cap, "%d\t", i);
    size_t payload = (i == COPY_ROWS / 2) ? COPY_BIG_BYTES : (size_t)(i * 7919 % 300);
    for (size_t k = 0; k < payload && len + 2 < cap; k++)
        buf[len++] = (char)('a' + (i + k * 31) % 26);
    buf[len++] = '\n';
    return len;
}

static void cmd_copy(void)
{
    bool temp = strcmp(mode, "session") == 0;
    PGconn *conn = db_connect();
    char table[64], sql[256];
    snprintf(table, sizeof(table), "pg_client_copy_%d", (int)getpid());
    snprintf(sql, sizeof(sql), "CREATE %sTABLE %s (id int PRIMARY KEY, val text)",
             temp ? "TEMP " : "", table);
    if (!temp) {
        char drop[128];
        snprintf(drop, sizeof(drop), "DROP TABLE IF EXISTS %s", table);
        exec_cmd(conn, drop);
    }
    exec_cmd(conn, sql);

    size_t cap = COPY_BIG_BYTES + 64;
    char *row = malloc(cap);
    if (!row)
        fail("out of memory");
    snprintf(sql, sizeof(sql), "COPY %s (id, val) FROM STDIN", table);
    PGresult *res = PQexec(conn, sql);
    if (PQresultStatus(res) != PGRES_COPY_IN)
        fail("\"%s\": %s", sql, oneline(PQerrorMessage(conn)));
    PQclear(res);
    uint64_t sent_sum = 14695981039346656037ULL;
    for (int i = 0; i < COPY_ROWS; i++) {
        size_t len = copy_row(i, row, cap);
        sent_sum = fnv1a(sent_sum, row, len);
        if (PQputCopyData(conn, row, (int)len) != 1)
            fail("PQputCopyData row %d: %s", i, oneline(PQerrorMessage(conn)));
    }
    if (PQputCopyEnd(conn, NULL) != 1)
        fail("PQputCopyEnd: %s", oneline(PQerrorMessage(conn)));
    res = PQgetResult(conn);
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        fail("COPY FROM STDIN: %s", oneline(PQerrorMessage(conn)));
    if (strcmp(PQcmdTuples(res), "10000") != 0)
        fail("COPY FROM STDIN: %s rows, want 10000", PQcmdTuples(res));
    PQclear(res);
    while ((res = PQgetResult(conn)) != NULL)
        PQclear(res);

    snprintf(sql, sizeof(sql), "SELECT count(*), sum(id), sum(length(val)) FROM %s", table);
    res = exec_ok(conn, sql);
    long long want_len = COPY_BIG_BYTES;
    for (int i = 0; i < COPY_ROWS; i++)
        if (i != COPY_ROWS / 2)
            want_len += i * 7919 % 300;
    char want[128];
    snprintf(want, sizeof(want), "%d %lld %lld", COPY_ROWS,
             (long long)COPY_ROWS * (COPY_ROWS - 1) / 2, want_len);
    char got[128];
    snprintf(got, sizeof(got), "%s %s %s", PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1),
             PQgetvalue(res, 0, 2));
    if (strcmp(got, want) != 0)
        fail("count, sum(id), sum(length): %s, want %s", got, want);
    PQclear(res);

    snprintf(sql, sizeof(sql), "COPY (SELECT id, val FROM %s ORDER BY id) TO STDOUT", table);
    res = PQexec(conn, sql);
    if (PQresultStatus(res) != PGRES_COPY_OUT)
        fail("\"%s\": %s", sql, oneline(PQerrorMessage(conn)));
    PQclear(res);
    uint64_t got_sum = 14695981039346656037ULL;
    int got_rows = 0;
    char *buf;
    int n;
    while ((n = PQgetCopyData(conn, &buf, 0)) > 0) {
        got_sum = fnv1a(got_sum, buf, (size_t)n);
        got_rows++;
        PQfreemem(buf);
    }
    if (n != -1)
        fail("PQgetCopyData: %s", oneline(PQerrorMessage(conn)));
    res = PQgetResult(conn);
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        fail("COPY TO STDOUT: %s", oneline(PQerrorMessage(conn)));
    PQclear(res);
    while ((res = PQgetResult(conn)) != NULL)
        PQclear(res);
    if (got_rows != COPY_ROWS)
        fail("COPY TO STDOUT: %d rows, want %d", got_rows, COPY_ROWS);
    if (got_sum != sent_sum)
        fail("COPY TO STDOUT: checksum %016llx, want %016llx", (unsigned long long)got_sum,
             (unsigned long long)sent_sum);

    /* A COPY that fails in the middle leaves the connection usable. */
    snprintf(sql, sizeof(sql), "COPY %s (id, val) FROM STDIN", table);
    res = PQexec(conn, sql);
    if (PQresultStatus(res) != PGRES_COPY_IN)
        fail("\"%s\": %s", sql, oneline(PQerrorMessage(conn)));
    PQclear(res);
    static const char dup[] = "1\tduplicate key\n";
    if (PQputCopyData(conn, dup, (int)strlen(dup)) != 1 || PQputCopyEnd(conn, NULL) != 1)
        fail("COPY of a duplicate: %s", oneline(PQerrorMessage(conn)));
    res = PQgetResult(conn);
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    if (!state || strcmp(state, "23505") != 0)
        fail("COPY of a duplicate key: SQLSTATE %s, want 23505", state ? state : "(none)");
    PQclear(res);
    while ((res = PQgetResult(conn)) != NULL)
        PQclear(res);
    expect_select1(conn, "after failed COPY");

    if (!temp) {
        snprintf(sql, sizeof(sql), "DROP TABLE %s", table);
        exec_cmd(conn, sql);
    }
    free(row);
    PQfinish(conn);
    printf("pg_client: OK copy (%s table)\n", temp ? "temporary" : "real");
}

/* ---- notify ------------------------------------------------------------------- */

static void cmd_notify(void)
{
    PGconn *a = db_connect(), *b = db_connect();
    exec_cmd(a, "LISTEN pg_client_ch");
    exec_cmd(b, "NOTIFY pg_client_ch, 'x'");
    int64_t deadline = now_ms() + 5000;
    PGnotify *note = NULL;
    for (;;) {
        if (!PQconsumeInput(a))
            fail("A: PQconsumeInput: %s", oneline(PQerrorMessage(a)));
        if ((note = PQnotifies(a)) != NULL)
            break;
        int64_t left = deadline - now_ms();
        if (left <= 0)
            fail("A: no notification within 5 s");
        struct pollfd pfd = {.fd = PQsocket(a), .events = POLLIN};
        poll(&pfd, 1, (int)left);
    }
    if (strcmp(note->relname, "pg_client_ch") != 0 || strcmp(note->extra, "x") != 0)
        fail("A: notification on '%s' with '%s', want 'pg_client_ch' with 'x'", note->relname,
             note->extra);
    /* PQbackendPID is the pooler's made-up key; ask the server. */
    PGresult *res = exec_ok(b, "SELECT pg_backend_pid()");
    if (note->be_pid != atoi(PQgetvalue(res, 0, 0)))
        fail("A: notification from pid %d, B's server backend is %s", note->be_pid,
             PQgetvalue(res, 0, 0));
    PQclear(res);
    PQfreemem(note);
    expect_select1(a, "A after notify");
    PQfinish(a);
    PQfinish(b);
    printf("pg_client: OK notify\n");
}

/* ---- errors ------------------------------------------------------------------- */

static void cmd_errors(void)
{
    PGconn *conn = db_connect();
    expect_error(conn, "SELEC 1", "42601");
    expect_select1(conn, "after syntax error");
    expect_error(conn, "SELECT 1; SELEC 2; SELECT 3", "42601");
    expect_select1(conn, "after syntax error in a multi-statement query");

    /* Extended protocol: the error comes at Parse. */
    PGresult *res = PQexecParams(conn, "SELEC $1", 1, NULL, (const char *[]){"1"}, NULL, NULL, 0);
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    if (!state || strcmp(state, "42601") != 0)
        fail("extended syntax error: SQLSTATE %s, want 42601", state ? state : "(none)");
    PQclear(res);
    expect_select1(conn, "after extended-protocol syntax error");

    exec_cmd(conn, "BEGIN");
    expect_select1(conn, "in transaction");
    expect_error(conn, "SELECT 1/0", "22012");
    if (PQtransactionStatus(conn) != PQTRANS_INERROR)
        fail("after an error in BEGIN, transaction status %d, want INERROR",
             (int)PQtransactionStatus(conn));
    expect_error(conn, "SELECT 1", "25P02");
    exec_cmd(conn, "ROLLBACK");
    if (PQtransactionStatus(conn) != PQTRANS_IDLE)
        fail("after ROLLBACK, transaction status %d, want IDLE", (int)PQtransactionStatus(conn));
    expect_select1(conn, "after ROLLBACK");

    /* An error raised by the server at run time, then a good transaction. */
    expect_error(conn, "DO $$BEGIN RAISE EXCEPTION 'boom' USING ERRCODE = 'P0001'; END$$", "P0001");
    exec_cmd(conn, "BEGIN");
    expect_value(conn, "SELECT 6 * 7", "42", "in transaction");
    exec_cmd(conn, "COMMIT");
    PQfinish(conn);
    printf("pg_client: OK errors\n");
}

/* ---- raw socket --------------------------------------------------------------- */

static char raw_user[128], raw_db[128];

/* Fills raw_host/raw_port/raw_user/raw_db from CONNINFO where not given. */
static void raw_setup(void)
{
    char *err = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &err);
    if (!opts)
        fail("bad conninfo: %s", oneline(err));
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (!o->val)
            continue;
        if (!strcmp(o->keyword, "host") && !raw_host)
            raw_host = strdup(o->val);
        else if (!strcmp(o->keyword, "port") && !raw_port)
            raw_port = strdup(o->val);
        else if (!strcmp(o->keyword, "user"))
            snprintf(raw_user, sizeof(raw_user), "%s", o->val);
        else if (!strcmp(o->keyword, "dbname"))
            snprintf(raw_db, sizeof(raw_db), "%s", o->val);
    }
    PQconninfoFree(opts);
    if (!raw_host)
        raw_host = "127.0.0.1";
    if (!raw_port)
        fail("no port: give -p PORT or port= in -d");
    if (!raw_user[0])
        fail("no user= in -d");
    if (!raw_db[0])
        snprintf(raw_db, sizeof(raw_db), "%s", raw_user);
}

static int raw_connect(void)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai;
    int rc = getaddrinfo(raw_host, raw_port, &hints, &ai);
    if (rc != 0)
        fail("getaddrinfo(%s:%s): %s", raw_host, raw_port, gai_strerror(rc));
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        fail("socket: %s", strerror(errno));
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0)
        fail("connect(%s:%s): %s", raw_host, raw_port, strerror(errno));
    freeaddrinfo(ai);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

/* Sends all of buf; returns false if the peer has closed. */
static bool raw_send(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EPIPE || errno == ECONNRESET))
            return false;
        if (n < 0)
            fail("send: %s", strerror(errno));
        p += n;
        len -= (size_t)n;
    }
    return true;
}

/* Reads exactly len bytes by deadline. Returns 1, 0 on EOF or reset, -1 on
 * timeout. */
static int raw_read(int fd, void *buf, size_t len, int64_t deadline)
{
    char *p = buf;
    while (len > 0) {
        int64_t left = deadline - now_ms();
        if (left <= 0)
            return -1;
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int rc = poll(&pfd, 1, (int)left);
        if (rc < 0 && errno == EINTR)
            continue;
        if (rc < 0)
            fail("poll: %s", strerror(errno));
        if (rc == 0)
            return -1;
        ssize_t n = recv(fd, p, len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n == 0 || (n < 0 && errno == ECONNRESET))
            return 0;
        if (n < 0)
            fail("recv: %s", strerror(errno));
        p += n;
        len -= (size_t)n;
    }
    return 1;
}

struct msg {
    char type;
    uint32_t len; /* of the body */
    char body[8192];
};

/* Reads one backend message (the body truncated to fit). Returns as raw_read. */
static int raw_read_msg(int fd, struct msg *m, int64_t deadline)
{
    unsigned char head[5];
    int rc = raw_read(fd, head, 5, deadline);
    if (rc != 1)
        return rc;
    m->type = (char)head[0];
    uint32_t len =
        ((uint32_t)head[1] << 24) | ((uint32_t)head[2] << 16) | ((uint32_t)head[3] << 8) | head[4];
    if (len < 4 || len > 1 << 20)
        fail("backend message '%c' with length %u", m->type, len);
    m->len = len - 4;
    uint32_t keep = m->len < sizeof(m->body) - 1 ? m->len : (uint32_t)sizeof(m->body) - 1;
    rc = raw_read(fd, m->body, keep, deadline);
    if (rc != 1)
        return rc;
    m->body[keep] = '\0';
    for (uint32_t skipped = keep; skipped < m->len;) {
        char sink[4096];
        uint32_t n = m->len - skipped < sizeof(sink) ? m->len - skipped : sizeof(sink);
        rc = raw_read(fd, sink, n, deadline);
        if (rc != 1)
            return rc;
        skipped += n;
    }
    return 1;
}

/* The message text (field 'M') of an ErrorResponse body. */
static const char *error_text(const struct msg *m)
{
    for (uint32_t i = 0; i < m->len && m->body[i];) {
        char field = m->body[i];
        const char *val = m->body + i + 1;
        if (field == 'M')
            return val;
        i += 1 + (uint32_t)strlen(val) + 1;
    }
    return "(no message)";
}

static void put32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

static size_t startup_packet(unsigned char *buf, size_t cap)
{
    size_t len = 8;
    len += (size_t)snprintf((char *)buf + len, cap - len, "user%c%s%c", 0, raw_user, 0);
    len += (size_t)snprintf((char *)buf + len, cap - len, "database%c%s%c", 0, raw_db, 0);
    buf[len++] = 0;
    put32(buf, (uint32_t)len);
    put32(buf + 4, PROTOCOL_3_0);
    return len;
}

/* Expects the server to close within secs, accepting any messages before
 * (an ErrorResponse, typically). Returns the number of bytes read first. */
static size_t expect_close(int fd, int secs, const char *what)
{
    int64_t deadline = now_ms() + (int64_t)secs * 1000;
    size_t total = 0;
    for (;;) {
        char buf[4096];
        int64_t left = deadline - now_ms();
        if (left <= 0)
            fail("%s: connection still open after %d s", what, secs);
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int rc = poll(&pfd, 1, (int)left);
        if (rc < 0 && errno == EINTR)
            continue;
        if (rc <= 0)
            continue;
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        if (n == 0 || (n < 0 && errno == ECONNRESET))
            return total;
        if (n < 0 && errno != EINTR)
            fail("%s: recv: %s", what, strerror(errno));
        if (n > 0)
            total += (size_t)n;
    }
}

/* Sends a startup packet and reads up to ReadyForQuery; a trust user only. */
static void raw_login(int fd)
{
    unsigned char pkt[512];
    size_t len = startup_packet(pkt, sizeof(pkt));
    if (!raw_send(fd, pkt, len))
        fail("login: server closed during startup");
    int64_t deadline = now_ms() + 5000;
    struct msg *m = malloc(sizeof(*m));
    for (;;) {
        int rc = raw_read_msg(fd, m, deadline);
        if (rc == 0)
            fail("login: server closed");
        if (rc < 0)
            fail("login: no ReadyForQuery within 5 s");
        if (m->type == 'E')
            fail("login: ErrorResponse: %s", error_text(m));
        if (m->type == 'R') {
            uint32_t code = ((uint32_t)(unsigned char)m->body[0] << 24) |
                            ((uint32_t)(unsigned char)m->body[1] << 16) |
                            ((uint32_t)(unsigned char)m->body[2] << 8) | (unsigned char)m->body[3];
            if (code != 0)
                fail("login: server asks for authentication (type %u); raw commands need a "
                     "trust user",
                     code);
        }
        if (m->type == 'Z')
            break;
    }
    free(m);
}

/* Sends a simple Query. */
static bool raw_query(int fd, const char *sql)
{
    size_t n = strlen(sql) + 1;
    unsigned char *buf = malloc(5 + n);
    buf[0] = 'Q';
    put32(buf + 1, (uint32_t)(4 + n));
    memcpy(buf + 5, sql, n);
    bool ok = raw_send(fd, buf, 5 + n);
    free(buf);
    return ok;
}

/* SSLRequest or GSSENCRequest: 'N', then a startup gets an 'R'. */
static void raw_request(uint32_t code, const char *name)
{
    int fd = raw_connect();
    unsigned char req[8];
    put32(req, 8);
    put32(req + 4, code);
    if (!raw_send(fd, req, 8))
        fail("%s: server closed", name);
    char answer;
    int rc = raw_read(fd, &answer, 1, now_ms() + 5000);
    if (rc == 0)
        fail("%s: server closed instead of answering", name);
    if (rc < 0)
        fail("%s: no answer within 5 s", name);
    if (answer != 'N')
        fail("%s: answer '%c' (0x%02x), want 'N'", name, answer, (unsigned char)answer);
    unsigned char pkt[512];
    size_t len = startup_packet(pkt, sizeof(pkt));
    if (!raw_send(fd, pkt, len))
        fail("%s: server closed at startup", name);
    struct msg *m = malloc(sizeof(*m));
    rc = raw_read_msg(fd, m, now_ms() + 5000);
    if (rc == 0)
        fail("%s: server closed after the startup packet", name);
    if (rc < 0)
        fail("%s: no answer to the startup packet within 5 s", name);
    if (m->type == 'E')
        fail("%s: startup: ErrorResponse: %s", name, error_text(m));
    if (m->type != 'R')
        fail("%s: startup answered with '%c', want 'R'", name, m->type);
    free(m);
    close(fd);
}

static void cmd_raw_ssl(void)
{
    raw_request(SSL_REQUEST_CODE, "SSLRequest");
    check_libpq_works("SSLRequest");
    printf("pg_client: OK raw-ssl\n");
}

static void cmd_raw_gss(void)
{
    raw_request(GSSENC_REQUEST_CODE, "GSSENCRequest");
    check_libpq_works("GSSENCRequest");
    printf("pg_client: OK raw-gss\n");
}

static void cmd_raw_badlen(void)
{
    static const uint32_t lens[] = {100000000, 3};
    for (size_t i = 0; i < 2; i++) {
        int fd = raw_connect();
        unsigned char pkt[64];
        size_t len = startup_packet(pkt, sizeof(pkt));
        put32(pkt, lens[i]);
        raw_send(fd, pkt, len);
        char what[64];
        snprintf(what, sizeof(what), "startup length %u", lens[i]);
        expect_close(fd, 5, what);
        close(fd);
        check_libpq_works(what);
    }
    printf("pg_client: OK raw-badlen\n");
}

static void cmd_raw_garbage(void)
{
    for (int i = 0; i < 4; i++) {
        unsigned char buf[64];
        if (getrandom(buf, sizeof(buf), 0) != (ssize_t)sizeof(buf))
            fail("getrandom: %s", strerror(errno));
        const char *what;
        if (i % 2 == 0) {
            buf[0] |= 0x80; /* a negative length */
            what = "64 random bytes";
        } else {
            put32(buf, sizeof(buf)); /* a valid length, a nonsense protocol */
            buf[4] = 0x7f;
            what = "64 random bytes with a valid length";
        }
        int fd = raw_connect();
        raw_send(fd, buf, sizeof(buf));
        expect_close(fd, 5, what);
        close(fd);
        check_libpq_works(what);
    }
    printf("pg_client: OK raw-garbage\n");
}

static void cmd_raw_partial(void)
{
    if (login_timeout_s < 0)
        fail("give the pooler's client_login_timeout as -t SECONDS");
    int fd = raw_connect();
    unsigned char pkt[512];
    startup_packet(pkt, sizeof(pkt));
    raw_send(fd, pkt, 4);
    int64_t start = now_ms();
    expect_close(fd, login_timeout_s + 3, "partial startup packet");
    close(fd);
    check_libpq_works("partial startup packet");
    printf("pg_client: OK raw-partial (closed after %lld ms)\n", (long long)(now_ms() - start));
}

/* After login, sends bad and expects an ErrorResponse or a close in 5 s. */
static void badmsg(const void *bad, size_t len, const char *what)
{
    int fd = raw_connect();
    raw_login(fd);
    bool sent = raw_send(fd, bad, len);
    struct msg *m = malloc(sizeof(*m));
    int rc = raw_read_msg(fd, m, now_ms() + 5000);
    if (rc < 0)
        fail("%s: neither ErrorResponse nor close within 5 s", what);
    if (rc == 1 && m->type != 'E')
        fail("%s: answered '%c', want ErrorResponse or close", what, m->type);
    if (rc == 0 && !sent)
        fail("%s: server closed before the message was sent", what);
    free(m);
    close(fd);
    check_libpq_works(what);
}

static void cmd_raw_badmsg(void)
{
    unsigned char unknown[5] = {'y'};
    put32(unknown + 1, 4);
    badmsg(unknown, sizeof(unknown), "unknown message type 'y'");
    unsigned char z[5] = {'Z'};
    put32(z + 1, 4);
    badmsg(z, sizeof(z), "frontend message type 'Z'");
    unsigned char huge[5 + 16] = {'Q'};
    put32(huge + 1, 0x7fffffff);
    memcpy(huge + 5, "SELECT 1;;;;;;;", 16);
    badmsg(huge, sizeof(huge), "Query with length 0x7fffffff");
    unsigned char tiny[5] = {'Q'};
    put32(tiny + 1, 2);
    badmsg(tiny, sizeof(tiny), "Query with length 2");
    printf("pg_client: OK raw-badmsg\n");
}

/* A fresh connection is outside any transaction and runs one. */
static void check_clean_server(const char *after)
{
    PGconn *conn = PQconnectdb(conninfo);
    if (PQstatus(conn) != CONNECTION_OK)
        fail("after %s, connect: %s", after, oneline(PQerrorMessage(conn)));
    PGresult *res = exec_ok(conn, "SHOW transaction_isolation");
    PQclear(res);
    /* Equal only in the first statement of a transaction: no old BEGIN. */
    expect_value(conn, "SELECT now() = statement_timestamp()", "t", after);
    exec_cmd(conn, "BEGIN");
    expect_select1(conn, after);
    exec_cmd(conn, "COMMIT");
    if (PQtransactionStatus(conn) != PQTRANS_IDLE)
        fail("after %s: transaction status %d after COMMIT", after, (int)PQtransactionStatus(conn));
    PQfinish(conn);
}

static void cmd_raw_vanish(void)
{
    for (int i = 0; i < 3; i++) {
        /* Gone in the middle of a query. */
        int fd = raw_connect();
        raw_login(fd);
        raw_query(fd, "SELECT pg_sleep(2)");
        close(fd);
        check_clean_server("a client vanished mid-query");

        /* Gone inside a transaction, between queries. */
        fd = raw_connect();
        raw_login(fd);
        raw_query(fd, "BEGIN; SELECT 1");
        struct msg *m = malloc(sizeof(*m));
        int64_t deadline = now_ms() + 5000;
        for (;;) {
            int rc = raw_read_msg(fd, m, deadline);
            if (rc != 1)
                fail("BEGIN: %s", rc ? "no ReadyForQuery within 5 s" : "server closed");
            if (m->type == 'E')
                fail("BEGIN: ErrorResponse: %s", error_text(m));
            if (m->type == 'Z') {
                if (m->body[0] != 'T')
                    fail("BEGIN: ReadyForQuery status '%c', want 'T'", m->body[0]);
                break;
            }
        }
        free(m);
        close(fd);
        check_clean_server("a client vanished inside a transaction");
    }
    printf("pg_client: OK raw-vanish\n");
}

/* ---- main --------------------------------------------------------------------- */

static const struct {
    const char *name;
    void (*run)(void);
    bool raw;
} commands[] = {
    {"cancel", cmd_cancel, false},          {"params", cmd_params, false},
    {"prepared", cmd_prepared, false},      {"copy", cmd_copy, false},
    {"notify", cmd_notify, false},          {"errors", cmd_errors, false},
    {"raw-ssl", cmd_raw_ssl, true},         {"raw-gss", cmd_raw_gss, true},
    {"raw-badlen", cmd_raw_badlen, true},   {"raw-garbage", cmd_raw_garbage, true},
    {"raw-partial", cmd_raw_partial, true}, {"raw-badmsg", cmd_raw_badmsg, true},
    {"raw-vanish", cmd_raw_vanish, true},
};

static void usage(void)
{
    fprintf(stderr, "usage: pg_client SUBCOMMAND -d CONNINFO [-h HOST] [-p PORT] [-n N] "
                    "[-t SECONDS] [-m session|transaction] [-T SECONDS]\nsubcommands:");
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        fprintf(stderr, " %s", commands[i].name);
    fputc('\n', stderr);
    exit(1);
}

int main(int argc, char **argv)
{
    if (argc < 2 || argv[1][0] == '-')
        usage();
    subcommand = argv[1];
    int opt;
    optind = 2;
    while ((opt = getopt(argc, argv, "d:h:p:n:t:m:T:")) != -1) {
        switch (opt) {
        case 'd': conninfo = optarg; break;
        case 'h': raw_host = optarg; break;
        case 'p': raw_port = optarg; break;
        case 'n': rounds = atoi(optarg); break;
        case 't': login_timeout_s = atoi(optarg); break;
        case 'm': mode = optarg; break;
        case 'T': run_timeout_s = atoi(optarg); break;
        default: usage();
        }
    }
    if (optind != argc || !conninfo)
        usage();
    signal(SIGALRM, on_alarm);
    alarm((unsigned)run_timeout_s);
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        if (strcmp(commands[i].name, subcommand) == 0) {
            if (commands[i].raw)
                raw_setup();
            commands[i].run();
            return 0;
        }
    }
    fprintf(stderr, "pg_client: unknown subcommand '%s'\n", subcommand);
    usage();
}
