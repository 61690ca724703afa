#!/usr/bin/env bash
# keel-pool reading a PgBouncer configuration the way PgBouncer does: the
# "*" fallback database, a database alias with its own dbname, user and
# connect_query, [users] pool_mode, %include, unknown keys only warned
# about, max_db_connections holding across shards; and (keel-only, newer
# PgBouncer syntax) a host list used round robin.
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/pool_lib.sh"
pool_init "$@"

start_pg
write_userlist

# %include: [databases] entries in a file of their own.
cat >"$tmp/dbs.ini" <<EOF
[databases]
aliasdb = host=127.0.0.1 port=$pg_port dbname=keeldb connect_query='SET work_mem = ''7MB'''
* = host=127.0.0.1 port=$pg_port
EOF
# PgBouncer 1.18 refuses unknown keys; the issue asks keel-pool to warn.
extra=()
is_pgbouncer || extra=(no_such_setting=1)
POOL_DBS="%include $tmp/dbs.ini" POOL_USERS="md5_user = pool_mode=session" \
    write_ini pool_mode=transaction max_db_connections=3 "${extra[@]}"
start_pool
if ! is_pgbouncer; then
    grep -q "no_such_setting" "$tmp/pool.out" "$tmp/pool.log" ||
        fail "an unknown key got no warning"
    pass "an unknown key is a warning, not an error"
fi

# The fallback: keeldb is not listed, "*" serves it under its own name.
[[ $(pq md5_user -c "SELECT current_database()") == keeldb ]] || fail "keeldb through '*'"
pass "'*' serves a database that is not listed"

# The alias: another name for keeldb, with connect_query run on each new server.
out=$(PGPASSWORD=md5pass psql -X -q -At -w -h 127.0.0.1 -p "$pool_port" -U md5_user -d aliasdb \
    -c "SELECT current_database(), current_setting('work_mem')") || fail "aliasdb: $out"
[[ $out == "keeldb|7MB" ]] || fail "aliasdb: got '$out', want keeldb|7MB (connect_query)"
pass "a database alias with dbname= and connect_query"

# [users] pool_mode: md5_user is in session mode, so its temp table lasts.
out=$(pq md5_user -c "CREATE TEMP TABLE t(x int)" -c "INSERT INTO t VALUES (1)" -c "SELECT x FROM t") ||
    fail "session mode for md5_user: $out"
[[ $out == 1 ]] || fail "session mode for md5_user: got '$out'"
mode=$(admin "SHOW POOLS" | awk -F'|' '$1 == "keeldb" && $2 == "md5_user" {print $16}')
[[ $mode == session ]] || fail "SHOW POOLS pool_mode of md5_user is '$mode', want session"
pass "[users] pool_mode overrides the global pool_mode"

# max_db_connections=3 across both shards, with 12 clients at once.
PGPASSWORD=scrampass pgbench -n -S -c 12 -j 2 -T 3 -h 127.0.0.1 -p "$pool_port" -U scram_user keeldb \
    >"$tmp/pgb.out" 2>&1 &
bg_pids+=($!)
peak=0
for ((i = 0; i < 25; i++)); do
    n=$(pg_psql -c "SELECT count(*) FROM pg_stat_activity WHERE datname = 'keeldb' AND usename = 'scram_user'")
    ((n > peak)) && peak=$n
    sleep 0.1
done
wait "${bg_pids[-1]}" || fail "pgbench under max_db_connections: $(tail -3 "$tmp/pgb.out")"
# Counted per database name: aliasdb's servers are not keeldb's.
((peak <= 3)) || fail "max_db_connections=3, but PostgreSQL saw $peak connections to keeldb"
pass "max_db_connections=3 holds across shards (peak $peak)"
stop_pool

if ! is_pgbouncer; then
    # A host list: both entries are the same server here; each new server
    # connection takes the next host, and both work.
    POOL_DBS="keeldb = host=localhost,127.0.0.1 port=$pg_port dbname=keeldb" write_ini default_pool_size=4
    start_pool
    for i in 1 2 3 4; do
        sess_open "s$i" md5_user
        sess_run "s$i" "BEGIN; SELECT 1" >/dev/null
    done
    addrs=$(admin "SHOW SERVERS" | cut -d'|' -f5 | sort -u | tr '\n' ' ')
    [[ $addrs == *localhost* && $addrs == *127.0.0.1* ]] ||
        fail "host=localhost,127.0.0.1: servers connected to '$addrs', want both"
    for i in 1 2 3 4; do
        sess_run "s$i" "COMMIT" >/dev/null
        sess_close "s$i"
    done
    pass "a host list is used round robin ($addrs)"
    stop_pool
fi
echo "$pool_test: all checks passed"
