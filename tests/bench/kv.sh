#!/usr/bin/env bash
# kv benchmark group: keel-kv against redis-server, driven by redis-benchmark,
# following /work/shared/BENCHMARKING.md:
# - server on CPU 0 (keel-kv --shards 1 --cpuset 0; redis-server under
#   taskset -c 0), redis-benchmark on CPU 1, 50 connections;
# - a fresh server on a fresh port for every measurement, a warm-up run of
#   the same test first, then the measured run (at least BENCH_SECONDS s);
# - adjacent pairs in alternating order (peer keel, keel peer, ...), and the
#   median of the pairs' ratios, which cancels the machine's slow drift;
# - the server's CPU time per operation (utime+stime from /proc/PID/stat
#   around the measured run; one redis-benchmark per test, so it is that
#   test's alone), since ops/s alone hides a better server when
#   redis-benchmark saturates its CPU first.
# The tests are redis-benchmark's -t tests at pipeline depth 1 and 16; a test
# whose commands keel-kv does not have yet (probed with redis-cli first) is
# reported as skipped. Tests that read what another test writes get it
# written before the measured run, outside the CPU-time window: GET reads a
# key SET wrote, LPOP/RPOP/SPOP/ZPOPMIN pop full collections (SPOP's and
# ZPOPMIN's at most KV_POP_CAP members: the run is shorter if fewer),
# and LRANGE_100 is run as its command, LRANGE mylist 0 99, on a list of 1,000
# elements, since redis-benchmark's -t lrange_100 would fill the list in the
# same run. An MSET of 10 keys counts as one operation.
# Then: memory per key (1M keys with 10-byte values, loaded through
# redis-cli --pipe: growth of the server's RSS over DBSIZE), and, for the
# record only, keel-kv on 2 shards against redis-server with 2 I/O threads,
# nothing pinned.
#
# usage: tests/bench/kv.sh [BUILD_DIR]       (default: $KEEL_BUILD, else build)
# env:   BENCH_PAIRS (3), BENCH_SECONDS (5),
#        KV_TESTS (set,get,incr,lpush,rpush,lpop,rpop,sadd,hset,spop,zadd,zpopmin,lrange_100,mset),
#        KV_PIPELINES ("1 16"), KV_CONNS (50), KV_POP_CAP (1000000),
#        KV_MEM_KEYS (1000000; 0 skips the memory test), KV_MULTI (1; 0 skips the
#        2-shard/2-thread report), KEEL_KV_BIN (default BUILD_DIR/keel-kv).
set -uo pipefail

build=${1:-${KEEL_BUILD:-build}}
keel_bin=${KEEL_KV_BIN:-$build/keel-kv}
loadgen=$build/tests/bench/net/bench-loadgen
pairs=${BENCH_PAIRS:-3}
secs=${BENCH_SECONDS:-5}
tests=${KV_TESTS:-set,get,incr,lpush,rpush,lpop,rpop,sadd,hset,spop,zadd,zpopmin,lrange_100,mset}
pipelines=${KV_PIPELINES:-"1 16"}
conns=${KV_CONNS:-50}
pop_cap=${KV_POP_CAP:-1000000}
mem_keys=${KV_MEM_KEYS:-1000000}
multi=${KV_MULTI:-1}
server_cpu=0
load_cpu=1

if [[ ! -x $keel_bin ]]; then
    echo "kv: keel-kv not built, skipping"
    exit 0
fi
for p in redis-server redis-cli redis-benchmark; do
    command -v $p >/dev/null || { echo "kv: $p not installed: run 'make deps'" >&2; exit 1; }
done
[[ -x $loadgen ]] || { echo "kv: $loadgen not built (it picks free ports)" >&2; exit 1; }
clk_tck=$(getconf CLK_TCK)
bench_group=kv
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/common/lib.sh"

# ---- servers ----------------------------------------------------------------------

# start_server peer|keel pinned|multi: sets srv_pid and port; output in $work/server.out.
start_server() {
    local kind=$1 mode=$2 pin=()
    port=$("$loadgen" --free-port) || fail "no free port"
    [[ $mode == pinned ]] && pin=(taskset -c $server_cpu)
    if [[ $kind == keel ]]; then
        local shards=(--shards 1 --cpuset $server_cpu)
        [[ $mode == multi ]] && shards=(--shards 2)
        "${pin[@]}" "$keel_bin" --port "$port" --bind 127.0.0.1 "${shards[@]}" \
            >"$work/server.out" 2>&1 &
    else
        local threads=()
        [[ $mode == multi ]] && threads=(--io-threads 2 --io-threads-do-reads yes)
        "${pin[@]}" redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
            --daemonize no --dir "$work" "${threads[@]}" >"$work/server.out" 2>&1 &
    fi
    srv_pid=$! # taskset execs the server: this is the server's own PID
    for _ in $(seq 200); do
        kill -0 "$srv_pid" 2>/dev/null || fail "$kind server ($mode) exited at startup"
        [[ $(redis-cli -p "$port" ping 2>/dev/null) == PONG ]] && return 0
        sleep 0.05
    done
    fail "$kind server ($mode) not answering PING on port $port after 10 s"
}

# utime+stime of the server, all its threads, in clock ticks (the fields after "(comm) ").
cpu_ticks() { sed 's/.*) //' "/proc/$srv_pid/stat" | awk '{ print $12 + $13 }'; }
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$srv_pid/status"; }
now() { date +%s.%N; }

# load SECONDS_LIMIT CMD...: runs CMD (bounded in time, pinned to the load CPU
# unless load_pin is empty) with its input from $load_input and its output in
# $work/load.out; returns its status.
load_pin=(taskset -c $load_cpu)
load_input=/dev/null
load() {
    local limit=$1
    shift
    timeout -k 5 "$limit" "${load_pin[@]}" "$@" <"$load_input" >"$work/load.out" 2>&1 &
    ld_pid=$!
    wait $ld_pid
    local rc=$?
    ld_pid=
    return $rc
}

# bench TEST DEPTH N [extra redis-benchmark args...]: one redis-benchmark run
# against $port; sets b_rps (0 if it failed). TEST lrange_100 runs LRANGE itself.
bench() {
    local test=$1 depth=$2 n=$3
    shift 3
    local what=(-t "$test")
    [[ $test == lrange_100 ]] && what=(LRANGE mylist 0 99)
    b_rps=0
    # Bounded: a run that goes far slower than the calibration said is stopped.
    load $((secs * 20 + 120)) redis-benchmark -p "$port" -c "$conns" -n "$n" -P "$depth" --csv \
        "$@" "${what[@]}" || return 1
    grep -q 'rror' "$work/load.out" && return 1
    b_rps=$(tail -n 1 "$work/load.out" | awk -F'","' '{ print $2 + 0 }')
    awk -v r="$b_rps" 'BEGIN { exit !(r > 0) }'
}

# fill TEST N: what TEST reads, written before its measured run: N elements for
# what it pops, written after the warm-up; the rest before, with N empty.
fill() {
    local test=$1 n=$2
    case $test in
    get) [[ -n $n ]] || bench set 16 1000 ;;
    lrange_100) [[ -n $n ]] || bench lpush 16 1000 ;;
    lpop | rpop) [[ -z $n ]] || bench lpush 16 "$n" ;;
    spop) [[ -z $n ]] || bench sadd 16 "$n" -r 1000000000 ;;
    zpopmin) [[ -z $n ]] || bench zadd 16 "$n" -r 1000000000 ;;
    *) return 0 ;;
    esac
}

# The commands a test needs (its fill's too), for the probe.
probe_cmds() {
    case $1 in
    set) echo "SET probe:s v" ;;
    get) echo "SET probe:s v"; echo "GET probe:s" ;;
    incr) echo "INCR probe:n" ;;
    lpush) echo "LPUSH probe:l x" ;;
    rpush) echo "RPUSH probe:l x" ;;
    lpop) echo "LPUSH probe:l x"; echo "LPOP probe:l" ;;
    rpop) echo "LPUSH probe:l x"; echo "RPOP probe:l" ;;
    sadd) echo "SADD probe:set x" ;;
    hset) echo "HSET probe:h f v" ;;
    spop) echo "SADD probe:set x"; echo "SPOP probe:set" ;;
    zadd) echo "ZADD probe:z 1 x" ;;
    zpopmin) echo "ZADD probe:z 1 x"; echo "ZPOPMIN probe:z" ;;
    lrange_100) echo "LPUSH probe:l x"; echo "LRANGE probe:l 0 99" ;;
    mset) echo "MSET probe:a 1 probe:b 2" ;;
    *) return 1 ;;
    esac
}

# ---- ops/s and CPU time per operation -------------------------------------------

declare -A rate_hint=()
# After a failed run: says so in m_err if the server is no longer running.
server_gone() {
    kill -0 "$srv_pid" 2>/dev/null && return 0
    m_err+=" (the server died: $(tail -n 1 "$work/server.out"))"
}

# measure peer|keel pinned|multi TEST DEPTH: sets m_ops, m_cpu (server µs/op), m_secs
# (length of the measured run) and m_n (its requests), or returns 1 with m_err set.
measure() {
    local kind=$1 mode=$2 test=$3 depth=$4 n c0 c1 w0 w1
    m_err=
    start_server "$kind" "$mode"
    if ! fill "$test" ""; then
        m_err="filling for $test failed: $(grep -m1 -iE 'err|could not' "$work/load.out")"
        server_gone
        stop_server
        return 1
    fi
    # Warm-up: the same test for about a quarter of a second, going by the rate of
    # this server's last run at this depth (5,000 times the depth when none yet).
    # Its rate sizes the measured run, generously, as a short run's rate is below
    # the steady one.
    local warm=$((5000 * depth))
    [[ -n ${rate_hint[$kind $mode $depth]:-} ]] &&
        warm=$(awk -v r="${rate_hint[$kind $mode $depth]}" -v d="$depth" 'BEGIN { n = int(r / 4);
                                                                    print n < 1000 * d ? 1000 * d : n }')
    if ! bench "$test" "$depth" "$warm"; then
        m_err="warm-up failed: $(grep -m1 -iE 'err|could not' "$work/load.out")"
        server_gone
        stop_server
        return 1
    fi
    n=$(awk -v r="$b_rps" -v s="$secs" -v d="$depth" 'BEGIN { n = int(r * s * 1.3 / 1000 + 1) * 1000;
                                                          print n < 1000 * d ? 1000 * d : n }')
    if [[ $test == spop || $test == zpopmin ]] && ((n > pop_cap)); then
        n=$pop_cap
    fi
    m_n=$n
    if ! fill "$test" "$n"; then
        m_err="filling for $test failed: $(grep -m1 -iE 'err|could not' "$work/load.out")"
        server_gone
        stop_server
        return 1
    fi
    c0=$(cpu_ticks) w0=$(now)
    if ! bench "$test" "$depth" "$n"; then
        m_err="redis-benchmark failed: $(grep -m1 -iE 'err|could not' "$work/load.out")"
        server_gone
        stop_server
        return 1
    fi
    c1=$(cpu_ticks) w1=$(now)
    stop_server
    rate_hint[$kind $mode $depth]=$b_rps
    m_ops=$(printf '%.0f' "$b_rps")
    m_cpu=$(awk -v t=$((c1 - c0)) -v n="$n" -v hz="$clk_tck" 'BEGIN { printf "%.3f", t * 1e6 / hz / n }')
    m_secs=$(awk -v a="$w0" -v b="$w1" 'BEGIN { printf "%.1f", b - a }')
}

# row MODE TEST DEPTH: BENCH_PAIRS alternating pairs; sets r_* medians or r_err.
row() {
    local mode=$1 test=$2 depth=$3 i order kind kops kcpu pops pcpu ksecs psecs kn pn
    local k_ops= k_cpu= p_ops= p_cpu= x_ops= x_cpu=
    r_err=
    for ((i = 1; i <= pairs; i++)); do
        if ((i % 2)); then order="peer keel"; else order="keel peer"; fi
        for kind in $order; do
            if ! measure "$kind" "$mode" "$test" "$depth"; then
                if [[ $kind == keel ]]; then r_err="keel-kv: $m_err"; else r_err="redis-server: $m_err"; fi
                return 1
            fi
            if [[ $kind == keel ]]; then
                kops=$m_ops kcpu=$m_cpu ksecs=$m_secs kn=$m_n
            else
                pops=$m_ops pcpu=$m_cpu psecs=$m_secs pn=$m_n
            fi
        done
        echo "kv: $test P$depth ($mode) pair $i ($order): keel ops/s=$kops cpu_us/op=$kcpu" \
            "($kn in ${ksecs} s) | redis ops/s=$pops cpu_us/op=$pcpu ($pn in ${psecs} s)"
        k_ops+=" $kops" k_cpu+=" $kcpu" p_ops+=" $pops" p_cpu+=" $pcpu"
        x_ops+=" $(awk -v a="$kops" -v b="$pops" 'BEGIN { print a / b }')"
        x_cpu+=" $(awk -v a="$pcpu" -v b="$kcpu" 'BEGIN { print ((a > 0 && b > 0) ? a / b : 0) }')"
    done
    r_kops=$(median $k_ops) r_pops=$(median $p_ops) r_xops=$(median $x_ops)
    r_kcpu=$(median $k_cpu) r_pcpu=$(median $p_cpu) r_xcpu=$(median $x_cpu)
}

table=()
table_row() { # TEST DEPTH rest-of-line
    table+=("$(printf 'kv: %-15s %s' "$1${2:+ P$2}" "$3")")
}

# Which tests keel-kv can run, asked of a keel-kv of its own.
declare -A skip=()
start_server keel pinned
for t in ${tests//,/ }; do
    cmds=$(probe_cmds "$t") || fail "unknown test '$t' in KV_TESTS"
    while read -r c; do
        # shellcheck disable=SC2086 # the probe commands are plain words
        r=$(redis-cli --no-raw -p "$port" $c 2>&1)
        if [[ $r == "(error) "* || $r == *"Could not connect"* ]]; then
            skip[$t]="skipped (not implemented: ${c%% *} answers '${r#(error) }')"
            break
        fi
    done <<<"$cmds"
done
stop_server

ntests=$(wc -w <<<"${tests//,/ }")
nrun=$((ntests - ${#skip[@]}))
echo "kv: keel=$keel_bin peer=redis-server $(redis-server --version | sed -nE 's/.*v=([0-9.]+).*/\1/p');" \
    "server on CPU $server_cpu, redis-benchmark (-c $conns) on CPU $load_cpu; $pairs pairs x" \
    ">= ${secs} s per test and depth; $nrun of $ntests tests runnable on keel-kv;" \
    "about $((nrun * $(wc -w <<<"$pipelines") * pairs * 2 * (secs * 13 / 10 + 1) / 60 + 1)) min"
echo "kv: keel= and peer= are medians of the runs, ratio= the median of the pairs' ratios;" \
    "cpu_us/op is the server's utime+stime over the measured run"

failed=0
for depth in $pipelines; do
    for t in ${tests//,/ }; do
        if [[ -n ${skip[$t]:-} ]]; then
            echo "kv: $t P$depth: ${skip[$t]}"
            table_row "$t" "$depth" "${skip[$t]}"
            continue
        fi
        if ! row pinned "$t" "$depth"; then
            echo "kv: $t P$depth: FAILED: $r_err"
            table_row "$t" "$depth" "FAILED: $r_err"
            failed=1
            continue
        fi
        printf "bench: name=kv_%s_p%s_ops unit=ops/s keel=%s peer=%s ratio=%.3f\n" \
            "$t" "$depth" "$r_kops" "$r_pops" "$r_xops"
        printf "bench: name=kv_%s_p%s_cpu unit=cpu_us/op keel=%s peer=%s ratio=%.3f\n" \
            "$t" "$depth" "$r_kcpu" "$r_pcpu" "$r_xcpu"
        table_row "$t" "$depth" "$(printf 'ops/s keel %9.0f redis %9.0f ratio %5.3f | cpu_us/op keel %7.3f redis %7.3f ratio %5.3f' \
            "$r_kops" "$r_pops" "$r_xops" "$r_kcpu" "$r_pcpu" "$r_xcpu")"
    done
done

# ---- memory per key ---------------------------------------------------------------

# mem_run peer|keel: loads $mem_keys keys (key:N -> 10 bytes) into a fresh server;
# sets mem_bytes (RSS growth per key), mem_keys_loaded (DBSIZE), mem_used (redis's
# used_memory growth per key, peer only).
used_memory() { redis-cli -p "$port" info memory | sed -n 's/^used_memory:\([0-9]*\).*/\1/p'; }
mem_run() {
    local kind=$1 rss0 rss1 u0 u1 dbsize
    start_server "$kind" pinned
    sleep 0.5 # whatever the server does after it starts listening
    rss0=$(rss_kb)
    [[ $kind == peer ]] && u0=$(used_memory)
    load_input=$work/keys.resp
    load 300 redis-cli -p "$port" --pipe || fail "redis-cli --pipe into $kind failed"
    load_input=/dev/null
    grep -q 'errors: 0,' "$work/load.out" || fail "loading keys into $kind: $(tail -n 1 "$work/load.out")"
    sleep 0.5
    rss1=$(rss_kb)
    dbsize=$(redis-cli -p "$port" dbsize)
    [[ $dbsize -gt 0 ]] 2>/dev/null || fail "DBSIZE on $kind after loading: '$dbsize'"
    mem_keys_loaded=$dbsize
    mem_bytes=$(awk -v a="$rss0" -v b="$rss1" -v n="$dbsize" 'BEGIN { printf "%.1f", (b - a) * 1024 / n }')
    if [[ $kind == peer ]]; then
        u1=$(used_memory)
        mem_used=$(awk -v a="$u0" -v b="$u1" -v n="$dbsize" 'BEGIN { printf "%.1f", (b - a) / n }')
    fi
    echo "kv: memory, $kind: RSS ${rss0} kB -> ${rss1} kB with $dbsize keys"
    stop_server
}

if ((mem_keys > 0)); then
    if [[ -n ${skip[set]:-} ]]; then
        echo "kv: memory per key: ${skip[set]}"
    else
        # The keys as RESP, once: SET key:N to N in 10 digits.
        awk -v n="$mem_keys" 'BEGIN { for (i = 0; i < n; i++) { k = "key:" i
                printf "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$10\r\n%010d\r\n", length(k), k, i } }' \
            >"$work/keys.resp"
        mem_run peer
        p_mem=$mem_bytes p_n=$mem_keys_loaded
        mem_run keel
        k_mem=$mem_bytes k_n=$mem_keys_loaded
        rm -f "$work/keys.resp"
        [[ $k_n -eq $p_n ]] || { echo "kv: memory: keel-kv holds $k_n keys, redis-server $p_n"; failed=1; }
        echo "kv: memory per key ($mem_keys SETs of 10-byte values): RSS growth keel $k_mem B/key," \
            "redis $p_mem B/key; redis's own count (INFO used_memory growth) $mem_used B/key"
        printf "bench: name=kv_mem_per_key unit=bytes/key keel=%.0f peer=%.0f ratio=%.3f\n" \
            "$k_mem" "$p_mem" "$(awk -v k="$k_mem" -v p="$p_mem" 'BEGIN { print (k > 0 ? p / k : 0) }')"
        table_row memory "" "$(printf 'bytes/key (RSS growth, %s keys) keel %.1f redis %.1f ratio %.3f; redis used_memory %.1f' \
            "$k_n" "$k_mem" "$p_mem" "$(awk -v k="$k_mem" -v p="$p_mem" 'BEGIN { print (k > 0 ? p / k : 0) }')" "$mem_used")"
    fi
fi

# ---- for the record: both CPUs --------------------------------------------------

# keel-kv on 2 shards against redis-server with 2 I/O threads, server and load
# unpinned (they share the 2 CPUs): not a bench: figure, a sanity check of scaling.
if ((multi)); then
    load_pin=()
    for t in set get; do
        if [[ -n ${skip[$t]:-} ]]; then
            table_row "$t" "16" "(2 CPUs) ${skip[$t]}"
            continue
        fi
        if row multi "$t" 16; then
            printf 'kv: report only, %s P16, keel-kv --shards 2 vs redis-server --io-threads 2, unpinned: ops/s keel=%s redis=%s ratio=%.3f; cpu_us/op keel=%s redis=%s ratio=%.3f\n' \
                "$t" "$r_kops" "$r_pops" "$r_xops" "$r_kcpu" "$r_pcpu" "$r_xcpu"
            table_row "$t" "16" "$(printf '(2 CPUs, report only) ops/s keel %9.0f redis %9.0f ratio %5.3f | cpu_us/op keel %7.3f redis %7.3f ratio %5.3f' \
                "$r_kops" "$r_pops" "$r_xops" "$r_kcpu" "$r_pcpu" "$r_xcpu")"
        else
            echo "kv: report only, $t P16, 2 CPUs: FAILED: $r_err"
            table_row "$t" "16" "(2 CPUs) FAILED: $r_err"
            failed=1
        fi
    done
    load_pin=(taskset -c $load_cpu)
fi

echo "kv: summary (medians; ratio > 1 means keel is better; cpu_us/op is the server's CPU time):"
printf '%s\n' "${table[@]}"
exit $failed
