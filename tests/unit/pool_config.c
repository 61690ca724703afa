/* pool config: pgbouncer.ini and userlist.txt parse as PgBouncer reads them (libusual's
 * ini reader, PgBouncer 1.24's settings and defaults), with errors and warnings that
 * name file, line and key. */
#include <criterion/criterion.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

TestSuite(pool_config, .timeout = 60);

/* ---- helpers ------------------------------------------------------------------- */

typedef struct logbook {
    int errors, warnings;
    char text[8192]; /* every message, one a line, "E " or "W " first */
} logbook;

static void log_cb(void *arg, bool error, const char *msg)
{
    logbook *lb = arg;
    if (error)
        lb->errors++;
    else
        lb->warnings++;
    size_t n = strlen(lb->text);
    snprintf(lb->text + n, sizeof(lb->text) - n, "%s %s\n", error ? "E" : "W", msg);
}

static pool_config *parse(logbook *lb, const char *text)
{
    memset(lb, 0, sizeof(*lb));
    return pool_config_parse(text, "pgbouncer.ini", log_cb, lb);
}

static void expect_log(const logbook *lb, const char *line)
{
    cr_expect(strstr(lb->text, line) != NULL, "expected '%s' in log:\n%s", line, lb->text);
}

/* A fresh temporary directory with files written into it. */
typedef struct tmpdir {
    char path[64];
} tmpdir;

static void tmp_make(tmpdir *t)
{
    strcpy(t->path, "/tmp/pool_config_XXXXXX");
    cr_assert_not_null(mkdtemp(t->path));
}

static void tmp_write(const tmpdir *t, const char *name, const char *text)
{
    char p[256];
    snprintf(p, sizeof(p), "%s/%s", t->path, name);
    FILE *f = fopen(p, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
}

static void tmp_remove(const tmpdir *t)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", t->path);
    cr_expect_eq(system(cmd), 0);
}

/* ---- defaults -------------------------------------------------------------------- */

Test(pool_config, an_empty_file_gives_pgbouncer_defaults)
{
    logbook lb;
    pool_config *c = parse(&lb, "");
    cr_assert_not_null(c);
    cr_expect_eq(lb.errors + lb.warnings, 0);
    cr_expect_null(c->listen_addr);
    cr_expect_eq(c->listen_port, 6432);
    cr_expect_str_eq(c->unix_socket_dir, "/tmp");
    cr_expect_str_eq(c->auth_type, "md5");
    cr_expect_null(c->auth_file);
    cr_expect_null(c->auth_user);
    cr_expect_str_eq(c->auth_query, "SELECT usename, passwd FROM pg_shadow WHERE usename=$1");
    cr_expect_eq(c->pool_mode, POOL_MODE_SESSION);
    cr_expect_eq(c->max_client_conn, 100);
    cr_expect_eq(c->default_pool_size, 20);
    cr_expect_eq(c->min_pool_size, 0);
    cr_expect_eq(c->reserve_pool_size, 0);
    cr_expect_eq(c->reserve_pool_timeout, 5.0);
    cr_expect_eq(c->max_db_connections, 0);
    cr_expect_eq(c->max_user_connections, 0);
    cr_expect_str_eq(c->server_reset_query, "DISCARD ALL");
    cr_expect_not(c->server_reset_query_always);
    cr_expect_str_eq(c->server_check_query, "select 1");
    cr_expect_eq(c->server_check_delay, 30);
    cr_expect_eq(c->server_lifetime, 3600);
    cr_expect_eq(c->server_idle_timeout, 600);
    cr_expect_eq(c->server_connect_timeout, 15);
    cr_expect_eq(c->server_login_retry, 15);
    cr_expect_eq(c->query_timeout, 0);
    cr_expect_eq(c->query_wait_timeout, 120);
    cr_expect_eq(c->client_idle_timeout, 0);
    cr_expect_eq(c->client_login_timeout, 60);
    cr_expect_eq(c->idle_transaction_timeout, 0);
    cr_expect_null(c->ignore_startup_parameters);
    cr_expect_eq(c->max_prepared_statements, 200);
    cr_expect_null(c->admin_users);
    cr_expect_null(c->stats_users);
    cr_expect_null(c->logfile);
    cr_expect_null(c->pidfile);
    cr_expect(c->log_connections);
    cr_expect(c->log_disconnections);
    cr_expect_eq(c->stats_period, 60);
    cr_expect_eq(c->ndbs, 0);
    cr_expect_eq(c->nusers, 0);
    cr_expect_eq(c->npeers, 0);
    pool_config_free(c);
}

Test(pool_config, free_accepts_null)
{
    pool_config_free(NULL);
    pool_auth_file_free(NULL);
}

/* ---- ini syntax ------------------------------------------------------------------ */

Test(pool_config, settings_are_typed_and_whitespace_is_trimmed)
{
    logbook lb;
    pool_config *c = parse(&lb, "; leading comment\n"
                                "# another\n"
                                "\n"
                                "   [pgbouncer]   \n"
                                "listen_addr = 127.0.0.1,::1\n"
                                "\tlisten_port=7000   \n"
                                "pool_mode   =   Transaction\n"
                                "max_client_conn = 0x10\n"
                                "query_timeout = 2.5\n"
                                "server_reset_query_always = yes\n"
                                "log_connections = off\n"
                                "log_disconnections = FALSE\n"
                                "auth_type = scram-sha-256\n"
                                "admin_users = alice, bob\n"
                                "max_prepared_statements = 0\n"
                                "  ; indented comment\n"
                                "server_reset_query = DISCARD ALL; -- not a comment\n");
    cr_assert_not_null(c, "%s", lb.text);
    cr_expect_eq(lb.errors + lb.warnings, 0, "%s", lb.text);
    cr_expect_str_eq(c->listen_addr, "127.0.0.1,::1");
    cr_expect_eq(c->listen_port, 7000);
    cr_expect_eq(c->pool_mode, POOL_MODE_TRANSACTION);
    cr_expect_eq(c->max_client_conn, 16);
    cr_expect_eq(c->query_timeout, 2.5);
    cr_expect(c->server_reset_query_always);
    cr_expect_not(c->log_connections);
    cr_expect_not(c->log_disconnections);
    cr_expect_str_eq(c->auth_type, "scram-sha-256");
    cr_expect_str_eq(c->admin_users, "alice, bob");
    cr_expect_eq(c->max_prepared_statements, 0);
    cr_expect_str_eq(c->server_reset_query, "DISCARD ALL; -- not a comment");
    pool_config_free(c);
}

Test(pool_config, booleans_accept_every_spelling_of_the_cf_parser)
{
    const char *yes[] = {"1", "yes", "on", "true", "YES", "On", "True"};
    const char *no[] = {"0", "no", "off", "false", "NO", "Off"};
    char text[128];
    logbook lb;
    for (size_t i = 0; i < sizeof(yes) / sizeof(*yes); i++) {
        snprintf(text, sizeof(text), "[pgbouncer]\nlog_connections=0\nlog_connections=%s\n",
                 yes[i]);
        pool_config *c = parse(&lb, text);
        cr_assert_not_null(c, "%s", yes[i]);
        cr_expect(c->log_connections, "%s", yes[i]);
        pool_config_free(c);
    }
    for (size_t i = 0; i < sizeof(no) / sizeof(*no); i++) {
        snprintf(text, sizeof(text), "[pgbouncer]\nlog_connections=%s\n", no[i]);
        pool_config *c = parse(&lb, text);
        cr_assert_not_null(c, "%s", no[i]);
        cr_expect_not(c->log_connections, "%s", no[i]);
        pool_config_free(c);
    }
    cr_expect_null(parse(&lb, "[pgbouncer]\nlog_connections = 2\n"));
    expect_log(&lb, "E pgbouncer.ini:2: invalid value '2' for key 'log_connections'");
}

Test(pool_config, quoted_values_are_unquoted_in_pgbouncer_section)
{
    logbook lb;
    pool_config *c = parse(&lb, "[pgbouncer]\n"
                                "listen_addr = \"*\"\n"
                                "logfile = '/var/log/pgbouncer.log'\n"
                                "auth_query = SELECT p FROM f('x')\n"
                                "pidfile = \"unbalanced'\n"
                                "server_check_query = ''\n");
    cr_assert_not_null(c, "%s", lb.text);
    cr_expect_str_eq(c->listen_addr, "*");
    cr_expect_str_eq(c->logfile, "/var/log/pgbouncer.log");
    cr_expect_str_eq(c->auth_query, "SELECT p FROM f('x')");
    cr_expect_str_eq(c->pidfile, "\"unbalanced'");
    cr_expect_null(c->server_check_query, "an empty value unsets a string");
    pool_config_free(c);
}

Test(pool_config, timeouts_take_fractions_and_reject_negatives_and_junk)
{
    logbook lb;
    pool_config *c = parse(&lb, "[pgbouncer]\nserver_lifetime = 0.25\nstats_period=1e1\n");
    cr_assert_not_null(c);
    cr_expect_eq(c->server_lifetime, 0.25);
    cr_expect_eq(c->stats_period, 10);
    pool_config_free(c);

    cr_expect_null(parse(&lb, "[pgbouncer]\nquery_timeout = -1\n"));
    expect_log(&lb, "pgbouncer.ini:2: invalid value '-1' for key 'query_timeout'");
    cr_expect_null(parse(&lb, "[pgbouncer]\nquery_timeout = 5s\n"));
    expect_log(&lb, "pgbouncer.ini:2: invalid value '5s' for key 'query_timeout'");
    cr_expect_null(parse(&lb, "[pgbouncer]\nquery_timeout =\n"));
    expect_log(&lb, "pgbouncer.ini:2: invalid value '' for key 'query_timeout'");
}

Test(pool_config, an_invalid_value_is_an_error_naming_file_line_and_key)
{
    logbook lb;
    pool_config *c = parse(&lb, "[pgbouncer]\n"
                                "listen_port = 6432\n"
                                "\n"
                                "listen_port = abc\n"
                                "pool_mode = sometimes\n"
                                "auth_type = rot13\n"
                                "max_client_conn = 99999999999\n"
                                "default_pool_size = -5\n");
    cr_expect_null(c);
    cr_expect_eq(lb.errors, 5, "%s", lb.text);
    expect_log(&lb, "E pgbouncer.ini:4: invalid value 'abc' for key 'listen_port'\n");
    expect_log(&lb, "E pgbouncer.ini:5: invalid value 'sometimes' for key 'pool_mode'\n");
    expect_log(&lb, "E pgbouncer.ini:6: invalid value 'rot13' for key 'auth_type'\n");
    expect_log(&lb, "E pgbouncer.ini:7: invalid value '99999999999' for key 'max_client_conn'\n");
    expect_log(&lb, "E pgbouncer.ini:8: invalid value '-5' for key 'default_pool_size'\n");
}

Test(pool_config, unknown_keys_and_sections_are_warnings)
{
    logbook lb;
    pool_config *c = parse(&lb, "[pgbouncer]\n"
                                "no_such_setting = 1\n"
                                "[extras]\n"
                                "anything = goes\n"
                                "[pgbouncer]\n"
                                "listen_port = 1234\n");
    cr_assert_not_null(c, "%s", lb.text);
    cr_expect_eq(lb.errors, 0);
    cr_expect_eq(lb.warnings, 2, "%s", lb.text);
    expect_log(&lb, "W pgbouncer.ini:2: unknown key 'no_such_setting' in section [pgbouncer]");
    expect_log(&lb, "W pgbouncer.ini:3: unknown section [extras]");
    cr_expect_eq(c->listen_port, 1234);
    pool_config_free(c);
}

Test(pool_config, pgbouncer_settings_not_modelled_yet_get_their_own_warning)
{
    logbook lb;
    pool_config *c = parse(&lb, "[pgbouncer]\ntcp_keepalive = 1\n");
    cr_assert_not_null(c, "%s", lb.text);
    cr_expect_eq(lb.warnings, 1);
    expect_log(&lb, "W pgbouncer.ini:2: key 'tcp_keepalive' is not supported by keel-pool yet");
    pool_config_free(c);
}

Test(pool_config, syntax_errors_name_the_line)
{
    logbook lb;
    cr_expect_null(parse(&lb, "[pgbouncer]\nlisten_port 6432\n"));
    expect_log(&lb, "E pgbouncer.ini:2: syntax error: expected '=' after key 'listen_port'");
    cr_expect_null(parse(&lb, "[pgbouncer\n"));
    expect_log(&lb, "E pgbouncer.ini:1: syntax error in section header");
    cr_expect_null(parse(&lb, "[pgbouncer] junk\n"));
    expect_log(&lb, "E pgbouncer.ini:1: syntax error in section header");
    cr_expect_null(parse(&lb, "[pgbouncer]\n\n= 5\n"));
    expect_log(&lb, "E pgbouncer.ini:3: syntax error: expected a key");
    cr_expect_null(parse(&lb, "listen_port = 1\n"));
    expect_log(&lb, "E pgbouncer.ini:1: key 'listen_port' outside of any section");
}

Test(pool_config, crlf_line_ends_are_trimmed)
{
    logbook lb;
    pool_config *c = parse(&lb, "[pgbouncer]\r\nlisten_port = 7001\r\n[databases]\r\nd = "
                                "host=h\r\n");
    cr_assert_not_null(c, "%s", lb.text);
    cr_expect_eq(c->listen_port, 7001);
    cr_assert_eq(c->ndbs, 1);
    cr_expect_str_eq(c->dbs[0].host, "h");
    pool_config_free(c);
}

/* ---- [databases] ------------------------------------------------------------------ */

Test(pool_config, databases_parse_libpq_style_connection_strings)
{
    logbook lb;
    pool_config *c =
        parse(&lb, "[databases]\n"
                   "app = host=db1,db2,/var/run/pg port=5433 dbname=appdb user=bob password=s3cret "
                   "pool_size=30 min_pool_size=2 reserve_pool=3 pool_mode=statement "
                   "max_db_connections=50 auth_user=auth connect_query='SELECT 1' "
                   "client_encoding=UTF8 datestyle=ISO timezone=UTC application_name=myapp\n"
                   "* = host=fallback\n"
                   "bare =\n");
    cr_assert_not_null(c, "%s", lb.text);
    cr_assert_eq(c->ndbs, 3);
    const pool_config_db *d = pool_config_find_db(c, "app");
    cr_assert_not_null(d);
    cr_expect_str_eq(d->host, "db1,db2,/var/run/pg");
    cr_assert_eq(d->nhosts, 3);
    cr_expect_str_eq(d->hosts[0], "db1");
    cr_expect_str_eq(d->hosts[1], "db2");
    cr_expect_str_eq(d->hosts[2], "/var/run/pg");
    cr_expect_eq(d->port, 5433);
    cr_expect_str_eq(d->dbname, "appdb");
    cr_expect_str_eq(d->user, "bob");
    cr_expect_str_eq(d->password, "s3cret");
    cr_expect_eq(d->pool_size, 30);
    cr_expect_eq(d->min_pool_size, 2);
    cr_expect_eq(d->reserve_pool, 3);
    cr_expect_eq(d->pool_mode, POOL_MODE_STATEMENT);
    cr_expect_eq(d->max_db_connections, 50);
    cr_expect_str_eq(d->auth_user, "auth");
    cr_expect_str_eq(d->connect_query, "SELECT 1");
    cr_expect_str_eq(d->client_encoding, "UTF8");
    cr_expect_str_eq(d->datestyle, "ISO");
    cr_expect_str_eq(d->timezone, "UTC");
    cr_expect_str_eq(d->application_name, "myapp");

    const pool_config_db *f = pool_config_find_db(c, "*");
    cr_assert_not_null(f, "the * fallback database is an entry");
    cr_expect_str_eq(f->host, "fallback");

    const pool_config_db *b = pool_config_find_db(c, "bare");
    cr_assert_not_null(b);
    cr_expect_null(b->host);
    cr_expect_eq(b->nhosts, 0);
    cr_expect_eq(b->port, -1);
    cr_expect_eq(b->pool_size, -1);
    cr_expect_eq(b->pool_mode, POOL_MODE_UNSET);
    cr_expect_null(pool_config_find_db(c, "missing"));
    pool_config_free(c);
}

Test(pool_config, connection_string_quoting_and_escapes)
{
    logbook lb;
    pool_config *c = parse(&lb, "[databases]\n"
                                "a = password='it\\'s a \\\\ secret' user = 'x y' dbname=''\n"
                                "b = password=back\\ slash connect_query='set a=1; set b=2'\n");
    cr_assert_not_null(c, "%s", lb.text);
    const pool_config_db *a = pool_config_find_db(c, "a");
    cr_assert_not_null(a);
    cr_expect_str_eq(a->password, "it's a \\ secret");
    cr_expect_str_eq(a->user, "x y");
    cr_expect_str_eq(a->dbname, "");
    const pool_config_db *b = pool_config_find_db(c, "b");
    cr_assert_not_null(b);
    cr_expect_str_eq(b->password, "back slash");
    cr_expect_str_eq(b->connect_query, "set a=1; set b=2");
    pool_config_free(c);
}

Test(pool_config, bad_connection_strings_are_errors_naming_the_database)
{
    logbook lb;
    cr_expect_null(parse(&lb, "[databases]\nx = password='open\n"));
    expect_log(&lb, "E pgbouncer.ini:2: syntax error in connection string for database 'x': "
                    "unterminated quoted string");
    cr_expect_null(parse(&lb, "[databases]\nx = host\n"));
    expect_log(&lb, "E pgbouncer.ini:2: syntax error in connection string for database 'x': "
                    "missing '=' after key");
    cr_expect_null(parse(&lb, "[databases]\n\nx = port=99999\n"));
    expect_log(&lb, "E pgbouncer.ini:3: invalid value '99999' for key 'port' in database 'x'");
    cr_expect_null(parse(&lb, "[databases]\nx = pool_size=big\n"));
    expect_log(&lb, "E pgbouncer.ini:2: invalid value 'big' for key 'pool_size' in database 'x'");
    cr_expect_null(parse(&lb, "[databases]\nx = pool_mode=none\n"));
    expect_log(&lb, "invalid value 'none' for key 'pool_mode' in database 'x'");
    cr_expect_null(parse(&lb, "[databases]\nx = sslmode=require\n"));
    expect_log(&lb, "E pgbouncer.ini:2: unrecognized key 'sslmode' in database 'x'");
}

Test(pool_config, a_repeated_database_replaces_the_earlier_one)
{
    logbook lb;
    pool_config *c = parse(&lb, "[databases]\nd = host=a,b port=1\nd = host=c\n");
    cr_assert_not_null(c, "%s", lb.text);
    cr_assert_eq(c->ndbs, 1);
    cr_expect_str_eq(c->dbs[0].host, "c");
    cr_expect_eq(c->dbs[0].nhosts, 1);
    cr_expect_eq(c->dbs[0].port, -1);
    pool_config_free(c);
}

/* ---- [users] and [peers] ---------------------------------------------------------- */

Test(pool_config, users_take_pool_mode_and_max_user_connections)
{
    logbook lb;
    pool_config *c = parse(&lb, "[users]\n"
                                "alice = pool_mode=transaction max_user_connections=7\n"
                                "bob = max_user_connections=1\n");
    cr_assert_not_null(c, "%s", lb.text);
    cr_assert_eq(c->nusers, 2);
    cr_expect_str_eq(c->users[0].name, "alice");
    cr_expect_eq(c->users[0].pool_mode, POOL_MODE_TRANSACTION);
    cr_expect_eq(c->users[0].max_user_connections, 7);
    cr_expect_str_eq(c->users[1].name, "bob");
    cr_expect_eq(c->users[1].pool_mode, POOL_MODE_UNSET);
    cr_expect_eq(c->users[1].max_user_connections, 1);
    pool_config_free(c);

    cr_expect_null(parse(&lb, "[users]\ncarol = pool_mode=weird\n"));
    expect_log(&lb, "E pgbouncer.ini:2: invalid value 'weird' for key 'pool_mode' in user 'carol'");
    cr_expect_null(parse(&lb, "[users]\ncarol = host=x\n"));
    expect_log(&lb, "E pgbouncer.ini:2: unrecognized key 'host' in user 'carol'");
}

Test(pool_config, peers_are_numbered_with_host_port_and_pool_size)
{
    logbook lb;
    pool_config *c = parse(&lb, "[peers]\n1 = host=/tmp/a\n2 = host=10.0.0.2 port=6433 "
                                "pool_size=4\n");
    cr_assert_not_null(c, "%s", lb.text);
    cr_assert_eq(c->npeers, 2);
    cr_expect_eq(c->peers[0].peer_id, 1);
    cr_expect_str_eq(c->peers[0].host, "/tmp/a");
    cr_expect_eq(c->peers[0].port, -1);
    cr_expect_eq(c->peers[1].peer_id, 2);
    cr_expect_eq(c->peers[1].port, 6433);
    cr_expect_eq(c->peers[1].pool_size, 4);
    pool_config_free(c);
    cr_expect_null(parse(&lb, "[peers]\nx = host=a\n"));
    expect_log(&lb, "E pgbouncer.ini:2: invalid peer id 'x'");
}

/* ---- %include ------------------------------------------------------------------- */

Test(pool_config, include_reads_files_relative_to_the_including_file)
{
    tmpdir t;
    tmp_make(&t);
    char sub[128];
    snprintf(sub, sizeof(sub), "mkdir '%s/conf.d'", t.path);
    cr_assert_eq(system(sub), 0);
    tmp_write(&t, "pgbouncer.ini",
              "[pgbouncer]\n"
              "listen_port = 1\n"
              "%include conf.d/dbs.ini\n"
              "max_client_conn = 5\n");
    tmp_write(&t, "conf.d/dbs.ini", "[databases]\nd = host=h\n%include more.ini\n");
    tmp_write(&t, "conf.d/more.ini", "[pgbouncer]\nlisten_port = 2\nbad_key = 1\n");
    char path[256];
    snprintf(path, sizeof(path), "%s/pgbouncer.ini", t.path);
    logbook lb = {0};
    pool_config *c = pool_config_load(path, log_cb, &lb);
    cr_assert_not_null(c, "%s", lb.text);
    cr_expect_eq(c->listen_port, 2);
    cr_expect_eq(c->max_client_conn, 5, "the including file's section carries on");
    cr_expect_eq(c->ndbs, 1);
    char want[300];
    snprintf(want, sizeof(want), "W %s/conf.d/more.ini:3: unknown key 'bad_key'", t.path);
    expect_log(&lb, want);
    pool_config_free(c);
    tmp_remove(&t);
}

Test(pool_config, include_loops_are_errors)
{
    tmpdir t;
    tmp_make(&t);
    tmp_write(&t, "a.ini", "[pgbouncer]\n%include b.ini\n");
    tmp_write(&t, "b.ini", "\n\n%include ./a.ini\n");
    tmp_write(&t, "self.ini", "%include self.ini\n");
    char path[256];
    logbook lb = {0};
    snprintf(path, sizeof(path), "%s/a.ini", t.path);
    cr_expect_null(pool_config_load(path, log_cb, &lb));
    char want[300];
    snprintf(want, sizeof(want), "E %s/b.ini:3: include loop: '%s/./a.ini' is already being read",
             t.path, t.path);
    expect_log(&lb, want);

    memset(&lb, 0, sizeof(lb));
    snprintf(path, sizeof(path), "%s/self.ini", t.path);
    cr_expect_null(pool_config_load(path, log_cb, &lb));
    expect_log(&lb, "include loop");
    tmp_remove(&t);
}

Test(pool_config, a_missing_include_or_file_is_an_error)
{
    tmpdir t;
    tmp_make(&t);
    tmp_write(&t, "a.ini", "[pgbouncer]\n%include nope.ini\n");
    char path[256], want[300];
    logbook lb = {0};
    snprintf(path, sizeof(path), "%s/a.ini", t.path);
    cr_expect_null(pool_config_load(path, log_cb, &lb));
    snprintf(want, sizeof(want), "E %s/a.ini:2: cannot include '%s/nope.ini'", t.path, t.path);
    expect_log(&lb, want);

    memset(&lb, 0, sizeof(lb));
    snprintf(path, sizeof(path), "%s/absent.ini", t.path);
    cr_expect_null(pool_config_load(path, log_cb, &lb));
    cr_expect_eq(lb.errors, 1);
    expect_log(&lb, "absent.ini: cannot read");
    tmp_remove(&t);
}

/* ---- auth_file ------------------------------------------------------------------- */

Test(pool_config, auth_file_entries_are_quoted_and_classified)
{
    logbook lb = {0};
    pool_auth_file *af = pool_auth_file_parse(
        "; comment line\n"
        "\"alice\" \"plainpw\"\n"
        "\"bob\"   \"md5b4b8daf4b8ea9d39568719e1e320076f\"  trailing junk ignored\n"
        "\"carol\" \"SCRAM-SHA-256$4096:c2FsdA==$c3RvcmVk:c2VydmVy\"\n"
        "\"da\"\"ve\" \"pa\"\"ss\"\n"
        "\n"
        "\"empty\" \"\"\n"
        "\"md5short\" \"md5abc\"\n"
        "\"alice\" \"newer\"\n",
        "userlist.txt", log_cb, &lb);
    cr_assert_not_null(af, "%s", lb.text);
    cr_expect_eq(af->nentries, 6);
    const pool_auth_entry *e = pool_auth_file_find(af, "alice");
    cr_assert_not_null(e);
    cr_expect_str_eq(e->password, "newer", "a later line for the same user wins");
    cr_expect_eq(e->kind, POOL_SECRET_PLAIN);
    e = pool_auth_file_find(af, "bob");
    cr_assert_not_null(e);
    cr_expect_eq(e->kind, POOL_SECRET_MD5);
    e = pool_auth_file_find(af, "carol");
    cr_assert_not_null(e);
    cr_expect_eq(e->kind, POOL_SECRET_SCRAM);
    e = pool_auth_file_find(af, "da\"ve");
    cr_assert_not_null(e);
    cr_expect_str_eq(e->password, "pa\"ss");
    e = pool_auth_file_find(af, "empty");
    cr_assert_not_null(e);
    cr_expect_str_eq(e->password, "");
    e = pool_auth_file_find(af, "md5short");
    cr_assert_not_null(e);
    cr_expect_eq(e->kind, POOL_SECRET_PLAIN);
    cr_expect_null(pool_auth_file_find(af, "nobody"));
    pool_auth_file_free(af);
}

Test(pool_config, broken_auth_file_lines_are_errors_with_line_numbers)
{
    logbook lb = {0};
    cr_expect_null(
        pool_auth_file_parse("\"ok\" \"pw\"\n\"user \"pw\"\n", "userlist.txt", log_cb, &lb));
    expect_log(&lb, "E userlist.txt:2: broken line");
    memset(&lb, 0, sizeof(lb));
    cr_expect_null(pool_auth_file_parse("\n\n\"user\"\n", "userlist.txt", log_cb, &lb));
    expect_log(&lb, "E userlist.txt:3: broken line");
}

Test(pool_config, auth_file_loads_from_disk)
{
    tmpdir t;
    tmp_make(&t);
    tmp_write(&t, "userlist.txt", "\"u\" \"md5aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"\n");
    char path[256];
    snprintf(path, sizeof(path), "%s/userlist.txt", t.path);
    logbook lb = {0};
    pool_auth_file *af = pool_auth_file_load(path, log_cb, &lb);
    cr_assert_not_null(af, "%s", lb.text);
    cr_expect_eq(af->nentries, 1);
    cr_expect_eq(af->entries[0].kind, POOL_SECRET_MD5);
    pool_auth_file_free(af);
    tmp_remove(&t);
}
