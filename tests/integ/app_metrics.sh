#!/usr/bin/env bash
# The apps' own metrics on keel's /metrics (--metrics-port): what a scrape
# returns is valid Prometheus text (promtool check metrics, no series
# twice) and the apps' counters move with the work done:
# - keel-kv: keel_kv_commands_total{cmd="set"}, summed over the shards,
#   grows by exactly the number of SETs sent; the keys and expires gauges
#   match DBSIZE and the keys given a TTL; a key left alone expires through
#   active expiry (the cron, in the background group); the latency
#   histogram counts the commands; connected clients follow a connection.
# - keel-pool: keel_pool_transactions_total and queries_total grow with
#   pgbench's transactions and equal SHOW STATS; the client and server
#   gauges agree with SHOW POOLS and the pool size.
# Usage: app_metrics.sh KEEL_KV KEEL_POOL PG_CLIENT
# shellcheck source-path=SCRIPTDIR disable=SC2317 # the cleanup functions run from traps
set -uo pipefail

if [[ $# -ne 3 ]]; then
    echo "usage: $0 KEEL_KV KEEL_POOL PG_CLIENT" >&2
    exit 2
fi
# Absolute: pool_lib.sh starts the pooler from its scratch directory.
pool_bin=$(realpath "$2")
pg_client_bin=$(realpath "$3")
here=$(cd "$(dirname "$0")" && pwd)
# keel-kv is started and stopped by kv_lib.sh (work, fail, cleanup).
set -- "$(realpath "$1")"
source "$here/kv_lib.sh"
pass() { echo "$kv_test: PASS: $*"; }

need promtool curl

# ---- helpers on a scrape (also used by the keel-pool part) -----------------

# metrics_port_of FILE...: the port of the "metrics on http://127.0.0.1:PORT/metrics"
# line in the files, or nothing.
metrics_port_of() {
    sed -nE 's|.*metrics on http://127\.0\.0\.1:([0-9]+)/metrics.*|\1|p' "$@" 2>/dev/null | tail -n 1
}

# scrape PORT FILE: GET /metrics into FILE.
scrape() {
    curl -sS --fail --max-time 10 "http://127.0.0.1:$1/metrics" -o "$2" ||
        fail "GET http://127.0.0.1:$1/metrics failed"
    [[ -s $2 ]] || fail "empty reply from http://127.0.0.1:$1/metrics"
}

# check_scrape FILE PREFIX: the scrape is valid Prometheus text: promtool
# finds no error (its lint remarks are shown; any about the PREFIX
# families, the apps' own, fail), and no series appears twice, which
# promtool does not check.
check_scrape() {
    local file=$1 prefix=$2 out rc dup
    rc=0
    out=$(promtool check metrics <"$file" 2>&1) || rc=$?
    # 0: clean; 3: only lint problems; anything else: the text is invalid.
    [[ $rc -eq 0 || $rc -eq 3 ]] || fail "promtool check metrics (exit $rc): $out"
    if [[ -n $out ]]; then
        echo "promtool lint remarks:"
        awk '{ print "  " $0 }' <<<"$out"
    fi
    grep -q "^$prefix" <<<"$out" && fail "promtool lint remarks about ${prefix}* metrics: $out"
    dup=$(grep -v '^#' "$file" | awk '{ k = $0; sub(/ [^ ]*$/, "", k); if (seen[k]++) print k }')
    [[ -z $dup ]] || fail "series sampled more than once: $dup"
    return 0
}

# msum FILE NAME [LABEL...]: the sum of NAME's samples having every LABEL
# (as name="value"); 0 when there are none.
msum() {
    local file=$1 name=$2
    shift 2
    awk -v n="$name" -v want="$*" '
        /^#/ { next }
        {
            split($0, a, /[{ ]/)
            if (a[1] != n) next
            k = split(want, w, " ")
            for (i = 1; i <= k; i++) if (!index($0, w[i])) next
            s += $NF
        }
        END { printf "%.17g\n", s + 0 }' "$file"
}

# ---- keel-kv ------------------------------------------------------------------

start_kv --bind 127.0.0.1 --metrics-port 0 --metrics-address 127.0.0.1
mport=
for _ in $(seq 200); do
    mport=$(metrics_port_of "$work/kv.out")
    [[ -n $mport ]] && break
    sleep 0.05
done
[[ -n $mport ]] || fail "keel-kv did not log 'metrics on http://127.0.0.1:PORT/metrics' within 10 s"
R() { redis-cli -p "$kv_port" "$@"; }

scrape "$mport" "$work/m0"
check_scrape "$work/m0" keel_kv_
for s in 0 1; do
    grep -q "^keel_kv_keys{shard=\"$s\",db=\"0\"} " "$work/m0" ||
        fail "no keel_kv_keys{shard=\"$s\",db=\"0\"} sample: $(grep '^keel_kv_keys' "$work/m0")"
done
grep -E '^keel_kv_' "$work/m0" | grep -v 'shard="' && fail "keel_kv_ samples without a shard label"
pass "keel-kv: a scrape before any command is valid, with both shards' series"

# Work: 40 SETs, 10 SETs with a TTL, 20 GETs, over keys of both shards.
n_set=50
n_get=20
set0=$(msum "$work/m0" keel_kv_commands_total 'cmd="set"')
get0=$(msum "$work/m0" keel_kv_commands_total 'cmd="get"')
cnt0=$(msum "$work/m0" keel_kv_command_duration_seconds_count)
{
    for i in $(seq 40); do echo "SET key:$i value$i"; done
    for i in $(seq 10); do echo "SET ttl:$i value$i EX 1000"; done
    for i in $(seq "$n_get"); do echo "GET key:$i"; done
} | R >"$work/replies" || fail "redis-cli failed: $(tail -n 3 "$work/replies")"
[[ $(grep -c '^OK$' "$work/replies") -eq $n_set ]] || fail "not every SET answered OK"
dbsize=$(R DBSIZE)
scrape "$mport" "$work/m1"
check_scrape "$work/m1" keel_kv_

set1=$(msum "$work/m1" keel_kv_commands_total 'cmd="set"')
[[ $((set1 - set0)) -eq $n_set ]] ||
    fail "keel_kv_commands_total{cmd=\"set\"} went from $set0 to $set1 after $n_set SETs"
get1=$(msum "$work/m1" keel_kv_commands_total 'cmd="get"')
[[ $((get1 - get0)) -eq $n_get ]] ||
    fail "keel_kv_commands_total{cmd=\"get\"} went from $get0 to $get1 after $n_get GETs"
for s in 0 1; do
    [[ $(msum "$work/m1" keel_kv_commands_total 'cmd="set"' "shard=\"$s\"") -gt 0 ]] ||
        fail "shard $s ran none of the SETs over 50 keys"
done
pass "keel-kv: keel_kv_commands_total counts $n_set SETs and $n_get GETs exactly, over both shards"

keys=$(msum "$work/m1" keel_kv_keys 'db="0"')
[[ $keys -eq $dbsize && $dbsize -eq 50 ]] || fail "keel_kv_keys sums to $keys, DBSIZE is $dbsize (want 50)"
expires=$(msum "$work/m1" keel_kv_expires 'db="0"')
[[ $expires -eq 10 ]] || fail "keel_kv_expires sums to $expires, want the 10 keys with a TTL"
pass "keel-kv: keel_kv_keys matches DBSIZE ($dbsize), keel_kv_expires the 10 TTLs"

cnt1=$(msum "$work/m1" keel_kv_command_duration_seconds_count)
(($(awk -v a="$cnt1" -v b="$cnt0" 'BEGIN { print a - b }') >= n_set + n_get)) ||
    fail "keel_kv_command_duration_seconds_count went from $cnt0 to $cnt1 after $((n_set + n_get)) commands"
for s in 0 1; do
    inf=$(msum "$work/m1" keel_kv_command_duration_seconds_bucket 'le="+Inf"' "shard=\"$s\"")
    cnt=$(msum "$work/m1" keel_kv_command_duration_seconds_count "shard=\"$s\"")
    [[ $inf == "$cnt" ]] || fail "shard $s: le=\"+Inf\" bucket $inf, _count $cnt"
    # Cumulative buckets never decrease with le.
    grep "^keel_kv_command_duration_seconds_bucket{shard=\"$s\"" "$work/m1" |
        awk '{ if ($NF + 0 < last) bad = 1; last = $NF + 0 } END { exit bad }' ||
        fail "shard $s: histogram buckets decrease: $(grep "^keel_kv_command_duration_seconds_bucket{shard=\"$s\"" "$work/m1")"
done
secs=$(msum "$work/m1" keel_kv_command_seconds_total 'cmd="set"')
awk -v s="$secs" 'BEGIN { exit !(s >= 0 && s < 60) }' ||
    fail "keel_kv_command_seconds_total{cmd=\"set\"} is $secs"
pass "keel-kv: the latency histogram counts the commands ($cnt0 -> $cnt1), buckets cumulative"

# Active expiry: a key nobody reads again goes at its TTL, through the
# cron alone (which runs in the background group).
exp0=$(msum "$work/m1" keel_kv_expired_keys_total)
R SET short:1 v PX 100 >/dev/null
ok=
for _ in $(seq 50); do
    sleep 0.1
    scrape "$mport" "$work/m2"
    exp1=$(msum "$work/m2" keel_kv_expired_keys_total)
    if [[ $((exp1 - exp0)) -ge 1 && $(msum "$work/m2" keel_kv_keys) -eq 50 ]]; then
        ok=1
        break
    fi
done
[[ -n $ok ]] || fail "keel_kv_expired_keys_total stayed at $exp0 5 s after a 100 ms TTL ran out"
pass "keel-kv: active expiry counted in keel_kv_expired_keys_total ($exp0 -> $exp1)"

# background_tasks FILE WHAT: the runtime's per-group series show WHAT (the
# app's housekeeping) ran tasks in the background group on every shard.
background_tasks() {
    local file=$1 what=$2 s n
    for s in 0 1; do
        n=$(msum "$file" keel_sched_group_tasks_total "shard=\"$s\"" 'group="background"')
        ((n > 0)) || fail "no task ran in the background group of shard $s, though $what runs there: $(grep '^keel_sched_group_tasks_total' "$file")"
    done
}
background_tasks "$work/m2" "keel-kv's cron"
pass "keel-kv: the cron's tasks ran in the background group of each shard"

# Connected clients: one held open, then closed.
c0=$(msum "$work/m2" keel_kv_connected_clients)
exec 5<>"/dev/tcp/127.0.0.1/$kv_port" || fail "cannot connect to keel-kv"
printf 'PING\r\n' >&5
read -r -t 5 _ <&5 || fail "no reply to PING on the held connection"
scrape "$mport" "$work/m3"
c1=$(msum "$work/m3" keel_kv_connected_clients)
[[ $((c1 - c0)) -eq 1 ]] || fail "keel_kv_connected_clients went from $c0 to $c1 with one more client"
exec 5>&-
ok=
for _ in $(seq 50); do
    scrape "$mport" "$work/m4"
    [[ $(msum "$work/m4" keel_kv_connected_clients) -eq $c0 ]] && { ok=1; break; }
    sleep 0.1
done
[[ -n $ok ]] || fail "keel_kv_connected_clients not back to $c0 5 s after the client left"
pass "keel-kv: keel_kv_connected_clients follows a client ($c0 -> $c1 -> $c0)"

stop_kv
pass "keel-kv: stopped cleanly"

# ---- keel-pool, in a subshell: pool_lib.sh's cleanup trap (PostgreSQL, the
# pooler) runs when it ends ------------------------------------------------------

(
    source "$here/pool_lib.sh"
    pool_init "$pool_bin" "$pg_client_bin"
    # From here, the helpers above fail through pool_lib.sh's fail.
    pool_metrics_port_of() { metrics_port_of "$tmp/pool.out" "$tmp/pool.log"; }

    start_pg
    write_userlist
    write_ini default_pool_size=2
    start_pool --metrics-port 0 --metrics-address 127.0.0.1
    wait_for 10 test -n "$(pool_metrics_port_of)" ||
        fail "keel-pool did not log 'metrics on http://127.0.0.1:PORT/metrics' within 10 s"
    mport=$(pool_metrics_port_of)

    pq md5_user -c "SELECT 1" >/dev/null || fail "a query through the pooler failed"
    scrape "$mport" "$tmp/p0"
    check_scrape "$tmp/p0" keel_pool_
    sel=('database="keeldb"' 'user="md5_user"')
    [[ $(msum "$tmp/p0" keel_pool_queries_total "${sel[@]}") -ge 1 ]] ||
        fail "keel_pool_queries_total for keeldb/md5_user is not counting: $(grep '^keel_pool_queries_total' "$tmp/p0")"
    pass "keel-pool: a scrape is valid and has the keeldb/md5_user pool"

    x0=$(msum "$tmp/p0" keel_pool_transactions_total "${sel[@]}")
    q0=$(msum "$tmp/p0" keel_pool_queries_total "${sel[@]}")
    PGPASSWORD=md5pass timeout 120 pgbench -n -S -c 4 -j 2 -t 50 -h 127.0.0.1 -p "$pool_port" \
        -U md5_user keeldb >"$tmp/pgbench.out" 2>&1 || fail "pgbench through the pooler: $(tail -n 5 "$tmp/pgbench.out")"
    sess_open idle md5_user # a client that stays
    scrape "$mport" "$tmp/p1"
    check_scrape "$tmp/p1" keel_pool_
    x1=$(msum "$tmp/p1" keel_pool_transactions_total "${sel[@]}")
    q1=$(msum "$tmp/p1" keel_pool_queries_total "${sel[@]}")
    ((x1 - x0 >= 200 && q1 - q0 >= 200)) ||
        fail "after pgbench's 200 transactions: transactions $x0 -> $x1, queries $q0 -> $q1"
    pass "keel-pool: keel_pool_transactions_total $x0 -> $x1, keel_pool_queries_total $q0 -> $q1"

    # The same figures as SHOW STATS, which no scrape or console query moves.
    read -r sx sq < <(admin "SHOW STATS" | awk -F'|' '$1 == "keeldb" { print $2, $3 }')
    [[ $sx == "$x1" && $sq == "$q1" ]] ||
        fail "SHOW STATS keeldb: $sx transactions, $sq queries; the metrics: $x1, $q1"
    for f in received_bytes sent_bytes transaction_seconds query_seconds; do
        val=$(msum "$tmp/p1" "keel_pool_${f}_total" "${sel[@]}")
        awk -v v="$val" 'BEGIN { exit !(v > 0) }' || fail "keel_pool_${f}_total is $val after pgbench"
    done
    pass "keel-pool: the counters equal SHOW STATS ($sx, $sq) and bytes and times grew"

    cl=$(msum "$tmp/p1" keel_pool_client_connections "${sel[@]}" 'state="active"')
    sv=$(msum "$tmp/p1" keel_pool_server_connections "${sel[@]}")
    read -r pcl psv < <(admin "SHOW POOLS" |
        awk -F'|' '$1 == "keeldb" && $2 == "md5_user" { print $3, $7 + $10 + $11 + $12 + $13 }')
    ((cl >= 1)) || fail "keel_pool_client_connections{state=\"active\"} is $cl with a session open"
    ((sv >= 1 && sv <= 2)) || fail "keel_pool_server_connections sums to $sv (pool size 2)"
    [[ $cl == "$pcl" && $sv == "$psv" ]] ||
        fail "SHOW POOLS: $pcl clients, $psv servers; the metrics: $cl, $sv"
    w=$(msum "$tmp/p1" keel_pool_max_wait_seconds "${sel[@]}")
    awk -v w="$w" 'BEGIN { exit !(w >= 0 && w < 60) }' || fail "keel_pool_max_wait_seconds is $w"
    pass "keel-pool: $cl client(s) and $sv server(s), as SHOW POOLS"
    background_tasks "$tmp/p1" "keel-pool's janitor"
    pass "keel-pool: the janitor's tasks ran in the background group of each shard"

    sess_close idle
    stop_pool
    pass "keel-pool: stopped cleanly"
) || exit 1
