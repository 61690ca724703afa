#!/usr/bin/env bash
# keel-pool's pool modes, as PgBouncer 1.18 behaves: session state kept in
# session mode (temp table, LISTEN/NOTIFY); transaction mode sharing one
# server between clients that alternate transactions, restoring each
# client's tracked parameters (application_name, DateStyle, TimeZone) on
# the shared server; statement mode refusing transaction blocks with 1.18's
# error; COPY in and out; pgbench (simple protocol; -M prepared is
# keel-only: PgBouncer 1.18 cannot pool prepared statements).
# shellcheck source-path=SCRIPTDIR disable=SC2119,SC2016 # optional arguments; literal $1 of auth_query
source "$(dirname "$0")/pool_lib.sh"
pool_init "$@"

# PgBouncer 1.18: the text after BEGIN as a separate statement in statement
# mode (the client is then disconnected).
err_stmt_mode='FATAL:  transaction blocks not allowed in statement pooling mode'

restart_pool() {
    [[ -n $pool_pid ]] && stop_pool INT
    write_ini "$@"
    start_pool
}

start_pg
write_userlist

# --- session mode ---
restart_pool pool_mode=session default_pool_size=4
sess_open s md5_user
sess_run s "CREATE TEMP TABLE t_sess (x int); INSERT INTO t_sess VALUES (1), (2)" >/dev/null
pq md5_user -c "SELECT 1" >/dev/null # another client in between
out=$(sess_run s "SELECT count(*) FROM t_sess")
[[ $out == 2 ]] || fail "session mode: temp table lost between statements: '$out'"
pass "session mode: a temp table survives across statements"

sess_open l md5_user
sess_run l "LISTEN keel_chan" >/dev/null
pq md5_user -c "NOTIFY keel_chan, 'hello'" || fail "NOTIFY failed"
sleep 0.3
out=$(sess_run l "SELECT 'poll'")
[[ $out == *'Asynchronous notification "keel_chan" with payload "hello" received'* ]] ||
    fail "session mode: LISTEN got no notification: '$out'"
pass "session mode: LISTEN/NOTIFY"
sess_close l
sess_close s

# --- transaction mode, one server for two clients ---
restart_pool pool_mode=transaction default_pool_size=1
pg_psql -c "CREATE TABLE t_alt (who text, i int)" || fail "CREATE TABLE on PostgreSQL failed"
pg_psql -c "GRANT ALL ON t_alt TO md5_user"
sess_open a md5_user
sess_open b md5_user
for i in 1 2 3 4 5; do
    for c in a b; do
        out=$(sess_run "$c" "BEGIN; INSERT INTO t_alt VALUES ('$c', $i); SELECT count(*) FROM t_alt; COMMIT")
        [[ $out =~ ^[0-9]+$ ]] || fail "transaction mode: client $c, transaction $i: '$out'"
    done
done
[[ $(pg_psql -c "SELECT count(*) FROM t_alt") == 10 ]] || fail "transaction mode: not all 10 rows there"
pa=$(sess_run a "SELECT pg_backend_pid()")
pb=$(sess_run b "SELECT pg_backend_pid()")
[[ $pa == "$pb" && -n $pa ]] || fail "transaction mode, pool size 1: backends $pa and $pb differ"
n=$(server_count)
((n <= 1)) || fail "transaction mode, pool size 1: SHOW SERVERS lists $n keeldb servers"
pass "transaction mode, pool size 1: two clients alternate transactions on one server (pid $pa)"

# Tracked parameters restored per client on the shared server.
sess_run a "SET application_name = 'client_a'" >/dev/null
sess_run b "SET application_name = 'client_b'" >/dev/null
sess_run a "SET DateStyle = 'German'" >/dev/null
sess_run b "SET TimeZone = 'Asia/Tokyo'" >/dev/null
for round in 1 2; do
    out=$(sess_run a "SELECT current_setting('application_name'), current_setting('DateStyle'), current_setting('TimeZone'), pg_backend_pid()")
    [[ $out == "client_a|German, DMY|"*"|$pa" && $out != *Tokyo* ]] ||
        fail "transaction mode: client a's parameters not restored (round $round): '$out'"
    out=$(sess_run b "SELECT current_setting('application_name'), current_setting('DateStyle'), current_setting('TimeZone'), pg_backend_pid()")
    [[ $out == "client_b|ISO, MDY|Asia/Tokyo|$pa" ]] ||
        fail "transaction mode: client b's parameters not restored (round $round): '$out'"
done
pass "transaction mode: application_name, DateStyle, TimeZone kept per client on the shared server"
sess_close a
sess_close b

# COPY out and in through the pooler.
pq md5_user -c "\\copy pgbench_accounts TO '$tmp/accounts.copy'" || fail "COPY TO STDOUT through the pooler failed"
[[ $(wc -l <"$tmp/accounts.copy") == 100000 ]] || fail "COPY out: $(wc -l <"$tmp/accounts.copy") lines, want 100000"
pq md5_user -c "CREATE TABLE t_copy (LIKE pgbench_accounts)" || fail "CREATE TABLE t_copy failed"
pq md5_user -c "\\copy t_copy FROM '$tmp/accounts.copy'" || fail "COPY FROM STDIN through the pooler failed"
out=$(pq md5_user -c "SELECT count(*), sum(abalance), sum(aid) FROM t_copy")
want=$(pg_psql -c "SELECT count(*), sum(abalance), sum(aid) FROM pgbench_accounts")
[[ $out == "$want" ]] || fail "COPY in: t_copy has '$out', pgbench_accounts '$want'"
out=$(PQ_TIMEOUT=10 pq md5_user -c "\\copy t_copy FROM '/dev/null' WITH (FORMAT binary)" 2>&1) &&
    fail "a bad binary COPY succeeded"
[[ $(pq md5_user -c "SELECT 'after bad copy'") == "after bad copy" ]] || fail "the pool broke after a failed COPY"
pass "COPY out (100000 rows) and back in, counts and sums match; a failed COPY leaves the pool usable"

# pgbench through the pooler, transaction mode.
pgb() {
    PGPASSWORD=md5pass timeout 100 pgbench -h 127.0.0.1 -p "$pool_port" -U md5_user "$@" keeldb >"$tmp/pgbench.out" 2>&1 ||
        fail "pgbench $* failed: $(tail -n 20 "$tmp/pgbench.out")"
    grep -q "number of transactions actually processed: 800/800" "$tmp/pgbench.out" ||
        fail "pgbench $*: $(grep -E 'processed|failed' "$tmp/pgbench.out")"
    grep -q "number of failed transactions: 0 " "$tmp/pgbench.out" ||
        fail "pgbench $*: $(grep failed "$tmp/pgbench.out")"
    pass "pgbench $* in transaction mode: 800/800, none failed"
}
restart_pool pool_mode=transaction default_pool_size=2
pgb -n -c 4 -t 200 -S
pgb -n -c 4 -t 200
if is_pgbouncer; then
    echo "$pool_test: SKIP (keel-only): pgbench -M prepared (PgBouncer 1.18 cannot pool prepared statements)"
else
    # One thread per client (-j 4): pgbench 15 prepares each statement
    # with a synchronous PQprepare, so one of its threads blocks while that
    # client waits for a server, and the clients of the same thread that
    # hold the servers inside a transaction can never finish it (with
    # PgBouncer 1.21+ as well). With a thread each, they do.
    pgb -n -c 4 -j 4 -t 200 -S -M prepared
    pgb -n -c 4 -j 4 -t 200 -M prepared
fi

# --- statement mode ---
restart_pool pool_mode=statement default_pool_size=2
[[ $(pq md5_user -c "SELECT 41 + 1") == 42 ]] || fail "statement mode: a single statement failed"
# One simple Query message with the three is a single implicit transaction:
# allowed (as in 1.18).
[[ $(pq md5_user -c "BEGIN; SELECT 1; COMMIT;") == 1 ]] || fail "statement mode: one Query message 'BEGIN; SELECT 1; COMMIT;' failed"
out=$(printf 'BEGIN;\nSELECT 1;\nCOMMIT;\n' | pq md5_user 2>&1) && fail "statement mode: a transaction block succeeded: '$out'"
[[ $out == *"$err_stmt_mode"* ]] || fail "statement mode: BEGIN; SELECT 1; COMMIT; failed with '$out', want '$err_stmt_mode'"
[[ $(pq md5_user -c "SELECT 'still fine'") == "still fine" ]] || fail "statement mode: pool broken after the refused transaction"
pass "statement mode: single statements work; a transaction block fails: $err_stmt_mode"

stop_pool INT
echo "$pool_test: all checks passed"
