#!/usr/bin/env bash
# keel-pool with 5,000 concurrent clients over a pool of 20 server
# connections: pgbench -S with 5,000 clients (2 threads), every
# transaction done, none failed, and never more than 20 server connections
# to keeldb, sampled during the run both from the pooler (SHOW SERVERS) and
# from PostgreSQL (pg_stat_activity). ulimit -n is raised to 20000 for the
# pooler and pgbench (it is inherited through setpriv).
# shellcheck source-path=SCRIPTDIR disable=SC2119,SC2016 # optional arguments; literal $1 of auth_query
source "$(dirname "$0")/pool_lib.sh"
pool_init "$@"

clients=${POOL_MANY_CLIENTS:-5000}
pool_size=20
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
(($(ulimit -n) >= clients + 500)) || fail "ulimit -n is $(ulimit -n) (hard $(ulimit -Hn)): too low for $clients clients"
read -r lo hi </proc/sys/net/ipv4/ip_local_port_range
((hi - lo > 2 * clients)) || fail "ephemeral port range $lo-$hi too small for $clients clients"

start_pg
write_userlist
write_ini pool_mode=transaction default_pool_size=$pool_size max_client_conn=$((clients + 1000)) \
    max_db_connections=$pool_size listen_backlog=4096
start_pool

# Sampler: max server connections seen, both views, every 0.3 s.
: >"$tmp/samples"
(
    while :; do
        a=$(server_count 2>/dev/null) || a=
        b=$(pg_keeldb_conns 2>/dev/null) || b=
        c=$(admin "SHOW POOLS" 2>/dev/null | awk -F'|' '$1 == "keeldb" { n += $3 + $4 } END { print n + 0 }') || c=
        echo "${a:--} ${b:--} ${c:--}" >>"$tmp/samples"
        sleep 0.3
    done
) &
sampler=$!
bg_pids+=("$sampler")

t0=$SECONDS
PGPASSWORD=md5pass timeout 110 pgbench -n -S -c "$clients" -j 2 -t 10 -h 127.0.0.1 -p "$pool_port" \
    -U md5_user keeldb >"$tmp/pgbench.out" 2>&1 ||
    fail "pgbench -c $clients failed (status $?): $(grep -v '^pgbench: client [0-9]* (aborted|receiving)' "$tmp/pgbench.out" | tail -n 15)"
dt=$((SECONDS - t0))
kill "$sampler" 2>/dev/null
wait "$sampler" 2>/dev/null || true
grep -q "number of clients: $clients\$" "$tmp/pgbench.out" || fail "pgbench: $(grep clients "$tmp/pgbench.out")"
grep -q "number of transactions actually processed: $((clients * 10))/$((clients * 10))" "$tmp/pgbench.out" ||
    fail "pgbench: $(grep -E 'processed|failed' "$tmp/pgbench.out")"
grep -q "number of failed transactions: 0 " "$tmp/pgbench.out" || fail "pgbench: $(grep failed "$tmp/pgbench.out")"
pass "pgbench -n -S -c $clients -j 2 -t 10: $((clients * 10)) transactions, none failed (${dt}s)"

n=$(grep -c '' "$tmp/samples")
((n >= 3)) || fail "only $n samples of the server connections taken"
max_pool=$(awk '$1 != "-" && $1 > m { m = $1 } END { print m + 0 }' "$tmp/samples")
max_pg=$(awk '$2 != "-" && $2 > m { m = $2 } END { print m + 0 }' "$tmp/samples")
max_cl=$(awk '$3 != "-" && $3 > m { m = $3 } END { print m + 0 }' "$tmp/samples")
((max_pool <= pool_size)) || fail "SHOW SERVERS listed $max_pool keeldb servers (pool size $pool_size)"
((max_pg <= pool_size)) || fail "pg_stat_activity showed $max_pg keeldb backends (pool size $pool_size)"
((max_pool >= 1 && max_pg >= 1)) || fail "no server connection ever sampled (pooler $max_pool, PostgreSQL $max_pg)"
pass "server connections for keeldb never above $pool_size: max $max_pool in SHOW SERVERS, $max_pg in pg_stat_activity ($n samples)"

# pgbench opens all its connections before its first transaction: the
# pooler should have seen (nearly) all the clients at once.
((max_cl >= clients * 9 / 10)) || fail "at most $max_cl clients seen at once in SHOW POOLS (cl_active + cl_waiting), want about $clients"
pass "SHOW POOLS: up to $max_cl clients at once (cl_active + cl_waiting)"

[[ $(pq md5_user -c "SELECT 'after'") == after ]] || fail "the pooler does not answer after the run"
stop_pool INT
echo "$pool_test: all checks passed"
