#!/usr/bin/env bash
# pool benchmark group: keel-pool (on all shards: --shards 2 here) against
# PgBouncer 1.18 with the same ini, and against direct connections to
# PostgreSQL 15, following /work/shared/BENCHMARKING.md:
# - transaction pool mode, default_pool_size 20, auth_type trust (user
#   trust_user, trusted by PostgreSQL too: auth stays out of the measured
#   path), log_connections/log_disconnections off, on the private PostgreSQL
#   of tests/integ/pool_lib.sh (pgbench -i -s 1, fsync off);
# - pgbench -n -j 2 (-j CLIENTS for TPC-B -M prepared, see pgb) -T BENCH_SECONDS
#   through 127.0.0.1, select-only (-S) and
#   the default TPC-B-like script, at -c 20, 100 and 1000 clients, -M simple
#   and -M prepared. In -M prepared the peer is direct connections (PgBouncer
#   1.18 cannot run prepared statements in transaction mode, and rejects the
#   max_prepared_statements key: keel-pool's ini gets
#   max_prepared_statements = 100 for those runs only);
# - nothing pinned: PostgreSQL, pgbench and the pooler share both CPUs;
# - a fresh pooler for every measurement, a warm-up run (POOL_WARMUP s) of
#   the same test first, then the measured run; the pooler's CPU time per
#   transaction is utime+stime of its process (all threads; /proc/PID/stat
#   fields 14 and 15) around the measured run over pgbench's transaction count;
# - adjacent pairs in alternating order (peer keel, keel peer, ...): keel= and
#   peer= are the medians of the runs, ratio= the median of the pairs' ratios
#   (tps: keel/peer; CPU per transaction and memory: peer/keel);
# - direct connections at the same -c in -M simple are context lines
#   (POOL_DIRECT_RUNS runs, median), as is the issue's goal: keel-pool at
#   -S -c 100 (pool 20) against 20 direct connections (-S -c 20);
# - memory: a pooler's RSS growth with POOL_IDLE clients (10,000) logged in
#   and idle (a python3 client doing the startup packet, trust auth, then
#   nothing), per client; one run each.
#
# usage: tests/bench/pool.sh [BUILD_DIR]     (default: $KEEL_BUILD, else build)
# env:   BENCH_PAIRS (3), BENCH_SECONDS (5), POOL_WARMUP (1),
#        POOL_CLIENTS ("20 100 1000"), POOL_MODES ("simple prepared"),
#        POOL_SCRIPTS ("select tpcb"), POOL_DIRECT_MAX (100: direct runs at
#        most at this -c; PostgreSQL's max_connections follows. 1000 direct
#        backends on this 2-CPU VM do not even finish connecting within a
#        few seconds' run: pgbench processes 0 transactions),
#        POOL_DIRECT_RUNS (1), POOL_IDLE (10000; 0 skips the memory test),
#        KEEL_POOL_BIN (BUILD_DIR/keel-pool), PGBOUNCER_BIN (/usr/sbin/pgbouncer).
set -uo pipefail

build=${1:-${KEEL_BUILD:-build}}
keel_bin=${KEEL_POOL_BIN:-$build/keel-pool}
pgb_bin=${PGBOUNCER_BIN:-/usr/sbin/pgbouncer}
pairs=${BENCH_PAIRS:-3}
secs=${BENCH_SECONDS:-5}
warm=${POOL_WARMUP:-1}
clients_list=${POOL_CLIENTS:-"20 100 1000"}
modes=${POOL_MODES:-"simple prepared"}
scripts=${POOL_SCRIPTS:-"select tpcb"}
direct_max=${POOL_DIRECT_MAX:-100}
direct_runs=${POOL_DIRECT_RUNS:-1}
idle_n=${POOL_IDLE:-10000}
pool_size=20

if [[ ! -x $keel_bin ]]; then
    echo "pool: keel-pool not built ($keel_bin), skipping"
    exit 0
fi
[[ -x $pgb_bin ]] || { echo "pool: no PgBouncer at $pgb_bin: run 'make deps'" >&2; exit 1; }
# The poolers run from their scratch directory: absolute paths.
keel_bin=$(cd "$(dirname "$keel_bin")" && pwd)/$(basename "$keel_bin")
pgb_bin=$(cd "$(dirname "$pgb_bin")" && pwd)/$(basename "$pgb_bin")
for s in $scripts; do [[ $s == select || $s == tpcb ]] || { echo "pool: unknown script '$s'" >&2; exit 2; }; done
for m in $modes; do [[ $m == simple || $m == prepared ]] || { echo "pool: unknown mode '$m'" >&2; exit 2; }; done

# Every client is a socket in pgbench or the idle client, and one (two for
# the pooler) in the pooler: raise the soft limit to the hard one.
ulimit -n "$(ulimit -Hn)" 2>/dev/null
nofile=$(ulimit -n)

# shellcheck source-path=SCRIPTDIR source=../integ/pool_lib.sh
source "$(dirname "$0")/../integ/pool_lib.sh"
pool_init "$keel_bin"
set +e # pool_lib's -e: here a failed run is reported, and the rest goes on
clk_tck=$(getconf CLK_TCK)
ld_pid=

median() {
    printf '%s\n' "$@" | sort -g |
        awk '{ v[NR] = $1 }
             END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
div() { awk -v a="$1" -v b="$2" 'BEGIN { if (a > 0 && b > 0) printf "%.3f", a / b; else print 0 }'; }

# Direct runs up to POOL_DIRECT_MAX clients: PostgreSQL gets room for them.
maxc=0
for c in $clients_list; do ((c <= direct_max && c > maxc)) && maxc=$c; done
pg_maxconn=$((maxc + 20 > 60 ? maxc + 20 : 60))
start_pg "max_connections = $pg_maxconn"
write_userlist

# ---- the poolers ------------------------------------------------------------------

# start_pooler keel|pgb [K=V...]: the pooler on a fresh port with the common ini
# (plus K=V); sets pool_pid, pool_port, or returns 1 with m_err set.
start_pooler() {
    local kind=$1 i
    shift
    if [[ $kind == keel ]]; then pool_bin=$keel_bin; else pool_bin=$pgb_bin; fi
    pool_port=
    write_ini auth_type=trust default_pool_size=$pool_size max_client_conn=$((idle_n + 1100)) \
        log_connections=0 log_disconnections=0 "$@"
    local -a args=()
    is_pgbouncer || args=(--shards "${POOL_SHARDS:-2}")
    [[ $(id -u) -eq 0 ]] && chown postgres: "$tmp/pool.ini" "$tmp/userlist.txt" 2>/dev/null
    echo "--- start $kind $(date +%T)" >>"$tmp/pool.out"
    pool_out_at=$(wc -l <"$tmp/pool.out")
    (cd "$tmp" && exec "${run_as[@]}" "$pool_bin" "${args[@]}" "$tmp/pool.ini") >>"$tmp/pool.out" 2>&1 &
    pool_pid=$!
    for ((i = 0; i < 100; i++)); do
        if ! kill -0 "$pool_pid" 2>/dev/null; then
            wait "$pool_pid" 2>/dev/null
            pool_pid=
            m_err="exited at startup: $(pool_log_tail 3)"
            return 1
        fi
        (exec 3<>"/dev/tcp/127.0.0.1/$pool_port") 2>/dev/null && return 0
        sleep 0.1
    done
    m_err="does not accept on 127.0.0.1:$pool_port after 10 s"
    stop_pooler
    return 1
}

# pool_log_tail N: the last N lines the current pooler wrote, on one line.
pool_log_tail() { tail -n +$((pool_out_at + 1)) "$tmp/pool.out" | tail -n "$1" | paste -sd'|'; }

# stop_pooler: SIGTERM, SIGKILL if still running 10 s later; a note in
# stop_note if it had to be killed or keel-pool's exit status is not 0.
stop_pooler() {
    local i rc=0
    stop_note=
    [[ -n $pool_pid ]] || return 0
    kill -TERM "$pool_pid" 2>/dev/null
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pool_pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pool_pid" 2>/dev/null; then
        stop_note="still running 10 s after SIGTERM: killed"
        kill -9 "$pool_pid" 2>/dev/null
    fi
    wait "$pool_pid" 2>/dev/null || rc=$?
    if [[ -z $stop_note ]] && ! is_pgbouncer && ((rc != 0)); then
        stop_note="exit status $rc after SIGTERM: $(pool_log_tail 2)"
    fi
    if [[ -n $stop_note ]]; then
        echo "pool: warning: $(basename "$pool_bin") $stop_note"
        stop_notes+=("$(basename "$pool_bin"): $stop_note")
    fi
    pool_pid=
}
stop_notes=()

cpu_ticks() { sed 's/.*) //' "/proc/$pool_pid/stat" | awk '{ print $12 + $13 }'; }
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$pool_pid/status"; }

# ---- pgbench --------------------------------------------------------------------------

# pgb PORT SCRIPT MODE CLIENTS SECS [warm]: one pgbench run; sets b_tps, b_n and
# b_conn_s (its initial connection time, whole seconds rounded up), or returns 1
# with m_err set. A warm-up may end with no transaction (-T counts from before
# the connections: 100 direct connections take over a second). Output in
# $tmp/load.out.
pgb() {
    local port=$1 script=$2 mode=$3 c=$4 t=$5 is_warm=${6:-} rc
    local -a sel=()
    [[ $script == select ]] && sel=(-S)
    # -M prepared with the TPC-B script: one pgbench thread per client.
    # pgbench 15 prepares each statement with a synchronous PQprepare, so a
    # thread whose client waits for a pooled server stops its other clients,
    # including those holding servers inside a transaction: with fewer
    # servers than clients per thread that deadlocks (with PgBouncer 1.21+
    # too). Select-only transactions are single statements and need no such
    # care; the same -j is used for direct connections, so the pair compares.
    local jobs=2
    [[ $mode == prepared && $script == tpcb ]] && jobs=$c
    b_tps=0 b_n=0
    PGUSER=trust_user PGCONNECT_TIMEOUT=30 timeout -k 5 $((t * 2 + 60)) \
        pgbench -n -j "$jobs" -c "$c" -T "$t" "${sel[@]}" -M "$mode" -h 127.0.0.1 -p "$port" keeldb \
        </dev/null >"$tmp/load.out" 2>&1 &
    ld_pid=$!
    wait $ld_pid
    rc=$?
    ld_pid=
    b_tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time).*/\1/p' "$tmp/load.out")
    b_n=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$tmp/load.out")
    b_conn_s=$(sed -n 's/^initial connection time = \([0-9.]*\) ms.*/\1/p' "$tmp/load.out" |
        awk '{ s = int($1 / 1000); if (s * 1000 < $1) s++; print s }')
    [[ -n $is_warm && $rc -eq 0 && -n $b_n ]] && return 0
    if ((rc != 0)) || [[ -z $b_tps || -z $b_n ]] || ((b_n == 0)); then
        local why
        why=$(grep -m 2 -iE 'error|fatal|abort|could not|timeout|server closed' "$tmp/load.out" | paste -sd'|')
        ((rc == 124)) && why="pgbench did not finish in $((t * 2 + 60)) s (a hang?)${why:+; $why}"
        m_err="pgbench -c $c -M $mode ${sel[*]} exit status $rc, ${b_n:-no} transactions: ${why:-$(tail -n 2 "$tmp/load.out" | paste -sd'|')}"
        b_tps=0 b_n=0
        return 1
    fi
    return 0
}

# measure keel|pgb|direct SCRIPT MODE CLIENTS: sets m_tps, m_cpu (pooler µs/txn;
# empty for direct), or returns 1 with m_err set.
measure() {
    local kind=$1 script=$2 mode=$3 c=$4 port c0 c1
    local -a extra=()
    m_err='' m_tps='' m_cpu=''
    if [[ $kind == direct ]]; then
        port=$pg_port
    else
        [[ $kind == keel && $mode == prepared ]] && extra=(max_prepared_statements=100)
        start_pooler "$kind" "${extra[@]}" || return 1
        port=$pool_port
    fi
    if ! pgb "$port" "$script" "$mode" "$c" "$warm" warm; then
        m_err="warm-up: $m_err"
        measure_died "$kind"
        return 1
    fi
    # At least BENCH_SECONDS of transactions after the connections are made.
    [[ $kind != direct ]] && c0=$(cpu_ticks)
    if ! pgb "$port" "$script" "$mode" "$c" $((secs + ${b_conn_s:-0})); then
        measure_died "$kind"
        return 1
    fi
    m_tps=$(printf '%.0f' "$b_tps")
    if [[ $kind != direct ]]; then
        c1=$(cpu_ticks)
        m_cpu=$(awk -v t=$((c1 - c0)) -v n="$b_n" -v hz="$clk_tck" 'BEGIN { printf "%.2f", t * 1e6 / hz / n }')
        stop_pooler
    fi
    return 0
}
measure_died() {
    [[ $1 == direct ]] && return
    if ! kill -0 "$pool_pid" 2>/dev/null; then
        m_err+=" (the pooler died: $(pool_log_tail 3))"
    else
        local log
        log=$(tail -n +$((pool_out_at + 1)) "$tmp/pool.out" | grep -v 'listening on\|process up' |
            tail -n 2 | paste -sd'|')
        [[ -n $log ]] && m_err+=" (the pooler's log: $log)"
    fi
    stop_pooler
}

name_of() { case $1 in keel) echo keel-pool ;; pgb) echo pgbouncer ;; direct) echo direct ;; esac; }

# row SCRIPT MODE CLIENTS PEER: BENCH_PAIRS alternating pairs of keel and PEER
# (pgb or direct); sets r_k r_p r_x (tps), r_kc r_pc r_xc (CPU/txn, pgb only), or
# returns 1 with r_err.
row() {
    local script=$1 mode=$2 c=$3 peer=$4 i order kind kt kc pt pc
    local k_t='' k_c='' p_t='' p_c='' x_t='' x_c=''
    r_err=
    for ((i = 1; i <= pairs; i++)); do
        if ((i % 2)); then order="$peer keel"; else order="keel $peer"; fi
        for kind in $order; do
            if ! measure "$kind" "$script" "$mode" "$c"; then
                r_err="$(name_of "$kind"): $m_err"
                return 1
            fi
            if [[ $kind == keel ]]; then kt=$m_tps kc=$m_cpu; else pt=$m_tps pc=$m_cpu; fi
        done
        echo "pool: $script -c $c -M $mode pair $i ($(name_of "${order% *}") first):" \
            "keel-pool tps=$kt cpu_us/txn=$kc | $(name_of "$peer") tps=$pt${pc:+ cpu_us/txn=$pc}"
        k_t+=" $kt" p_t+=" $pt" x_t+=" $(div "$kt" "$pt")"
        k_c+=" $kc"
        if [[ $peer == pgb ]]; then p_c+=" $pc" x_c+=" $(div "$pc" "$kc")"; fi
    done
    # shellcheck disable=SC2086 # lists of numbers
    r_k=$(median $k_t) r_p=$(median $p_t) r_x=$(median $x_t) r_kc=$(median $k_c)
    # shellcheck disable=SC2086
    if [[ $peer == pgb ]]; then r_pc=$(median $p_c) r_xc=$(median $x_c); else r_pc='' r_xc=''; fi
}

# direct_tps SCRIPT MODE CLIENTS: median of POOL_DIRECT_RUNS direct runs, in
# d_tps (cached), or returns 1 with d_err.
declare -A direct_cache=()
direct_tps() {
    local key="$1 $2 $3" i vals=''
    d_err=
    if [[ -n ${direct_cache[$key]:-} ]]; then d_tps=${direct_cache[$key]}; return 0; fi
    for ((i = 0; i < direct_runs; i++)); do
        measure direct "$1" "$2" "$3" || { d_err="direct: $m_err"; return 1; }
        vals+=" $m_tps"
    done
    # shellcheck disable=SC2086 # a list of numbers
    d_tps=$(median $vals)
    direct_cache[$key]=$d_tps
    echo "pool: $1 -c $3 -M $2 direct connections: tps=$d_tps (median of $direct_runs)"
}

# ---- results -------------------------------------------------------------------------

failed=0
table=()
# figure NAME UNIT KEEL PEER RATIO [NOTE]: the bench: line and a table row.
figure() {
    printf 'bench: name=%s unit=%s keel=%s peer=%s ratio=%s\n' "$1" "$2" "$3" "$4" "$5"
    table+=("| $1 | $2 | $3 | $4 | $5 | ${6:-} |")
}
# missing NAME WHY: a figure that could not be measured.
missing() {
    echo "pool: $1: FAILED: $2"
    table+=("| $1 | | | | FAILED | ${2//|/\/} |")
    failed=1
}

ncl=$(wc -w <<<"$clients_list")
nsimple=$(($(wc -w <<<"$scripts") * ncl * $([[ " $modes " == *" simple "* ]] && echo 1 || echo 0)))
nprep=$(($(wc -w <<<"$scripts") * ncl * $([[ " $modes " == *" prepared "* ]] && echo 1 || echo 0)))
est=$(((nsimple * (2 * pairs + direct_runs) + nprep * 2 * pairs) * (secs + warm + 2) + 90))
echo "pool: keel=$keel_bin (--shards ${POOL_SHARDS:-2}) peer=$("$pgb_bin" --version | head -n 1)" \
    "and direct connections to PostgreSQL $("$pg_bindir/postgres" --version | awk '{ print $3 }')" \
    "(max_connections $pg_maxconn); transaction pooling, pool size $pool_size, auth trust;" \
    "pgbench -n -j 2 -T $secs after a ${warm} s warm-up; $pairs pairs; nothing pinned;" \
    "ulimit -n $nofile; about $((est / 60 + 1)) min"
echo "pool: keel= and peer= are medians of the runs, ratio= the median of the pairs' ratios" \
    "(tps keel/peer; cpu_us/txn and memory peer/keel, so > 1 means keel is better);" \
    "cpu_us/txn is the pooler's utime+stime over the measured run / transactions"
for c in $clients_list; do
    ((c > direct_max)) && echo "pool: direct connections not run at -c $c (POOL_DIRECT_MAX=$direct_max:" \
        "$c backends are too heavy for this box); -M prepared at -c $c is keel-pool alone"
done

for mode in $modes; do
    for script in $scripts; do
        for c in $clients_list; do
            base=pool_${script}_c${c}_${mode}
            if [[ $mode == simple ]]; then
                if row "$script" "$mode" "$c" pgb; then
                    figure "${base}_tps" tps "$r_k" "$r_p" "$r_x" "peer PgBouncer"
                    figure "${base}_cpu" cpu_us/txn "$r_kc" "$r_pc" "$r_xc" "peer PgBouncer; pooler CPU"
                else
                    missing "${base}_tps" "$r_err"
                    missing "${base}_cpu" "$r_err"
                    continue
                fi
                if ((c <= direct_max)); then
                    if direct_tps "$script" "$mode" "$c"; then
                        figure "${base}_direct_tps" tps "$r_k" "$d_tps" "$(div "$r_k" "$d_tps")" \
                            "context: peer = $c direct connections"
                    else
                        missing "${base}_direct_tps" "$d_err"
                    fi
                fi
                # The issue's goal: pgbench -S -c 100 through keel-pool (pool 20)
                # at >= 0.75x the tps of 20 direct connections.
                if [[ $script == select && $c == 100 ]]; then
                    if direct_tps select simple 20; then
                        figure pool_goal_select_c100_vs_direct_c20_tps tps "$r_k" "$d_tps" \
                            "$(div "$r_k" "$d_tps")" "context: goal ratio >= 0.75"
                        echo "pool: goal: keel-pool -S -c 100 at $(div "$r_k" "$d_tps")x the tps of 20" \
                            "direct connections (goal >= 0.75); CPU/txn at $(div "$r_kc" "$r_pc")x" \
                            "PgBouncer's (goal <= 0.6)"
                    else
                        missing pool_goal_select_c100_vs_direct_c20_tps "$d_err"
                    fi
                fi
            else
                if ((c > direct_max)); then
                    echo "pool: $script -c $c -M prepared: no peer (direct runs at most -c $direct_max);" \
                        "keel-pool alone"
                    if measure keel "$script" "$mode" "$c"; then
                        echo "pool: $script -c $c -M prepared: keel-pool tps=$m_tps cpu_us/txn=$m_cpu"
                        table+=("| ${base}_tps | tps | $m_tps | | | keel-pool alone, cpu_us/txn $m_cpu |")
                    else
                        missing "${base}_tps" "keel-pool: $m_err"
                    fi
                    continue
                fi
                if row "$script" "$mode" "$c" direct; then
                    figure "${base}_direct_tps" tps "$r_k" "$r_p" "$r_x" \
                        "peer = $c direct connections (PgBouncer 1.18: no prepared statements in transaction mode)"
                    echo "pool: $script -c $c -M prepared: keel-pool cpu_us/txn=$r_kc (no PgBouncer peer)"
                    table+=("| ${base}_cpu | cpu_us/txn | $r_kc | | | keel-pool alone |")
                else
                    missing "${base}_direct_tps" "$r_err"
                fi
            fi
        done
    done
done

# ---- memory per idle client ------------------------------------------------------------

# The idle clients: N connections that log in (trust) and stay idle; prints
# "ready N" once all have had ReadyForQuery, then waits to be killed.
cat >"$tmp/idle.py" <<'EOF'
import socket, struct, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
params = b"user\0trust_user\0database\0keeldb\0application_name\0idle\0\0"
startup = struct.pack("!ii", len(params) + 8, 196608) + params
socks = []
def login(s):
    s.sendall(startup)
    buf = b""
    while True:
        while len(buf) < 5:
            d = s.recv(65536)
            if not d:
                raise RuntimeError("connection closed during login")
            buf += d
        t, ln = buf[0:1], struct.unpack("!i", buf[1:5])[0]
        while len(buf) < 1 + ln:
            d = s.recv(65536)
            if not d:
                raise RuntimeError("connection closed during login")
            buf += d
        body, buf = buf[5:1 + ln], buf[1 + ln:]
        if t == b"E":
            raise RuntimeError("ErrorResponse: " + body.replace(b"\0", b" ").decode(errors="replace"))
        if t == b"R" and struct.unpack("!i", body[:4])[0] != 0:
            raise RuntimeError("asked for authentication %d" % struct.unpack("!i", body[:4])[0])
        if t == b"Z":
            return
try:
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        login(s)
        socks.append(s)
except Exception as e:
    print("failed after %d clients: %s" % (len(socks), e), flush=True)
    sys.exit(1)
print("ready %d" % len(socks), flush=True)
while True:
    time.sleep(3600)
EOF

# keel-pool's heap in use now: SHOW MEM's keel_shard_heap (jemalloc's counters).
keel_heap() { admin "SHOW MEM" | awk -F'|' '$1 == "keel_shard_heap" { print $3 }'; }

# mem_run keel|pgb: sets mem_bytes (RSS growth per idle client; for keel-pool
# also heap_bytes, the heap's growth), or returns 1 with m_err.
mem_run() {
    local kind=$1 rss0 rss1 i
    m_err=
    start_pooler "$kind" || return 1
    sleep 0.5
    rss0=$(rss_kb)
    heap0=0
    [[ $kind == keel ]] && heap0=$(keel_heap)
    python3 "$tmp/idle.py" "$pool_port" "$idle_n" >"$tmp/idle.out" 2>&1 &
    local py=$!
    for ((i = 0; i < 1800; i++)); do
        grep -q '^ready' "$tmp/idle.out" && break
        kill -0 $py 2>/dev/null || break
        sleep 0.1
    done
    if ! grep -q '^ready' "$tmp/idle.out"; then
        m_err="$idle_n idle clients: $(tail -n 2 "$tmp/idle.out" | paste -sd'|')"
        kill -0 $py 2>/dev/null && m_err+="not all logged in after 180 s"
        kill -9 $py 2>/dev/null
        wait $py 2>/dev/null
        measure_died "$kind"
        return 1
    fi
    sleep 1
    rss1=$(rss_kb)
    heap_bytes=
    [[ $kind == keel ]] && heap_bytes=$(((($(keel_heap) - heap0)) / idle_n))
    kill -9 $py 2>/dev/null
    wait $py 2>/dev/null
    mem_bytes=$(awk -v a="$rss0" -v b="$rss1" -v n="$idle_n" 'BEGIN { printf "%.0f", (b - a) * 1024 / n }')
    echo "pool: memory, $(name_of "$kind"): RSS ${rss0} kB -> ${rss1} kB with $idle_n idle clients"
    sleep 1 # the pooler closes them
    kill -0 "$pool_pid" 2>/dev/null || { m_err="the pooler died after the idle clients left: $(pool_log_tail 3)"; pool_pid=; return 1; }
    stop_pooler
}

if ((idle_n > 0)); then
    if ((nofile < idle_n + 100)); then
        missing pool_idle_mem_per_client "ulimit -n is $nofile: too few for $idle_n clients"
    elif ! mem_run pgb; then
        missing pool_idle_mem_per_client "pgbouncer: $m_err"
    else
        p_mem=$mem_bytes
        if ! mem_run keel; then
            missing pool_idle_mem_per_client "keel-pool: $m_err"
        else
            k_mem=$mem_bytes
            figure pool_idle_mem_per_client bytes/client "$k_mem" "$p_mem" "$(div "$p_mem" "$k_mem")" \
                "RSS growth with $idle_n idle clients"
            # keel's RSS growth also counts the first touch of each shard's
            # receive-buffer ring (16 MiB mmap per shard, used in ring
            # order): a fixed cost that 10,000 logins page in, not state
            # kept per client. The heap's growth is that state.
            echo "pool: keel-pool heap per idle client: $heap_bytes bytes (RSS growth $k_mem" \
                "includes the receive-buffer pages first touched by the logins)"
        fi
    fi
fi

echo
echo "pool: summary (medians; ratio > 1 means keel-pool is better; peer = PgBouncer 1.18 unless noted)"
echo
echo "| figure | unit | keel-pool | peer | ratio | note |"
echo "|---|---|---|---|---|---|"
printf '%s\n' "${table[@]}"
if ((${#stop_notes[@]})); then
    echo
    printf 'pool: warning: %s\n' "${stop_notes[@]}" | sort | uniq -c
fi
exit $failed
