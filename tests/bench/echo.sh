#!/usr/bin/env bash
# Echo benchmark group: keel-echo (io_uring and epoll backends) against
# bench-epoll-echo, the epoll server one would write by hand, following
# /work/shared/BENCHMARKING.md:
# - server on CPU 0 (one shard / one thread), load generator on CPU 1;
# - a fresh server on a fresh port for every measurement;
# - adjacent pairs in alternating order (peer keel, keel peer, ...), and the
#   median of the pairs' ratios, which cancels the machine's slow drift;
# - the server's CPU time per operation (utime+stime from /proc/PID/stat,
#   read by the load generator at the edges of the measured window, so the
#   warm-up is excluded), since ops/s alone hides a better server when the
#   load generator saturates first.
#
# usage: tests/bench/echo.sh [BUILD_DIR]       (default: $KEEL_BUILD, else build)
# env:   BENCH_PAIRS (3), BENCH_SECONDS (5), BENCH_WARMUP (1),
#        ECHO_CONNS ("50 1000 5000"), ECHO_BACKENDS ("uring epoll"),
#        ECHO_IDLE_CONNS (10000; 0 skips the idle-memory test),
#        KEEL_ECHO_BIN (default BUILD_DIR/keel-echo: point it at another
#        server to test this script).
set -uo pipefail

build=${1:-${KEEL_BUILD:-build}}
keel_bin=${KEEL_ECHO_BIN:-$build/keel-echo}
loadgen=$build/tests/bench/net/bench-loadgen
peer_bin=$build/tests/bench/net/bench-epoll-echo
pairs=${BENCH_PAIRS:-3}
secs=${BENCH_SECONDS:-5}
warmup=${BENCH_WARMUP:-1}
conns_list=${ECHO_CONNS:-"50 1000 5000"}
backends=${ECHO_BACKENDS:-"uring epoll"}
idle_conns=${ECHO_IDLE_CONNS:-10000}
size=64
server_cpu=0
load_cpu=1

if [[ ! -x $keel_bin ]]; then
    echo "echo: keel-echo not built, skipping"
    exit 0
fi
for b in "$loadgen" "$peer_bin"; do
    [[ -x $b ]] || { echo "echo: $b not built" >&2; exit 1; }
done
clk_tck=$(getconf CLK_TCK)
have_ss=$(command -v ss)
bench_group='echo'
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/common/lib.sh"

# start_server peer|keel BACKEND PORT: sets srv_pid; output in $work/server.out.
start_server() {
    local kind=$1 backend=$2 port=$3
    if [[ $kind == keel ]]; then
        taskset -c $server_cpu "$keel_bin" --port "$port" --bind 127.0.0.1 --shards 1 \
            --cpuset $server_cpu --backend "$backend" >"$work/server.out" 2>&1 &
    else
        taskset -c $server_cpu "$peer_bin" --port "$port" --bind 127.0.0.1 --threads 1 \
            --cpu $server_cpu >"$work/server.out" 2>&1 &
    fi
    srv_pid=$! # taskset execs the server: this is the server's own PID
    # Listening is what matters, not the wording of a startup line.
    for _ in $(seq 100); do
        kill -0 "$srv_pid" 2>/dev/null || fail "$kind server ($backend) exited at startup"
        if [[ -n $have_ss ]]; then
            [[ -n $(ss -Htln "sport = :$port" 2>/dev/null) ]] && return 0
        else
            (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        fi
        sleep 0.1
    done
    fail "$kind server ($backend) not listening on port $port after 10 s"
}

# measure peer|keel BACKEND CONNS: sets m_ops (ops/s), m_cpu (server cpu_us/op), m_p99 (us),
# m_other (% of a CPU that neither server nor loadgen used: other programs, i.e. noise).
# Not run in $(...): a subshell's processes would escape the EXIT trap.
measure() {
    local kind=$1 backend=$2 conns=$3 port
    port=$("$loadgen" --free-port) || fail "no free port"
    start_server "$kind" "$backend" "$port"
    timeout -k 5 $((secs + warmup + 90)) taskset -c $load_cpu "$loadgen" --port "$port" \
        --conns "$conns" --size $size --pipeline 1 --duration "$secs" --warmup "$warmup" \
        --cpu $load_cpu --server-pid "$srv_pid" >"$work/load.out" 2>&1 &
    ld_pid=$!
    wait $ld_pid
    local rc=$?
    ld_pid=
    stop_server
    [[ $rc -eq 0 ]] || fail "loadgen against $kind ($backend, $conns conns) exited with $rc"
    local res ticks ops
    res=$(grep '^loadgen: ops=' "$work/load.out")
    local srv
    srv=$(grep server_cpu_ticks= "$work/load.out")
    ticks=$(field server_cpu_ticks "$srv")
    m_other=$(field other_cpu_pct "$srv")
    ops=$(field ops "$res")
    [[ -n $ops && -n $ticks && $ops -gt 0 ]] || fail "no result from loadgen"
    m_ops=$(field ops_per_sec "$res")
    m_p99=$(field p99_us "$res")
    m_cpu=$(awk -v t="$ticks" -v n="$ops" -v hz="$clk_tck" \
        'BEGIN { printf "%.4f", t * 1e6 / hz / n }')
}

# One bench line: name unit keel-values peer-values pair-ratios format.
report() {
    local name=$1 unit=$2 fmt=$5
    local -a k=($3) p=($4) r=($6)
    printf "bench: name=%s unit=%s keel=$fmt peer=$fmt ratio=%.3f\n" "$name" "$unit" \
        "$(median "${k[@]}")" "$(median "${p[@]}")" "$(median "${r[@]}")"
}

nb=$(wc -w <<<"$backends")
nc=$(wc -w <<<"$conns_list")
echo "echo: keel=$keel_bin peer=$peer_bin; server on CPU $server_cpu, load on CPU $load_cpu;" \
    "$pairs pairs x ${secs} s (+${warmup} s warm-up) per scenario;" \
    "about $((nb * nc * pairs * 2 * (secs + warmup + 2) / 60 + 1)) min"
echo "echo: keel= and peer= are medians of the runs, ratio= the median of the pairs' ratios"

noisiest=0
for conns in $conns_list; do
    for backend in $backends; do
        k_ops= k_cpu= k_p99= p_ops= p_cpu= p_p99= r_ops= r_cpu= r_p99=
        for ((i = 1; i <= pairs; i++)); do
            if ((i % 2)); then order="peer keel"; else order="keel peer"; fi
            for kind in $order; do
                measure "$kind" "$backend" "$conns"
                if [[ $kind == keel ]]; then
                    kops=$m_ops kcpu=$m_cpu kp99=$m_p99 kother=$m_other
                else
                    pops=$m_ops pcpu=$m_cpu pp99=$m_p99 pother=$m_other
                fi
                ((${m_other:-0} > noisiest)) && noisiest=$m_other
            done
            echo "echo: ${backend} c${conns} pair $i ($order): keel ops/s=$kops cpu_us/op=$kcpu" \
                "p99_us=$kp99 other_cpu%=$kother | peer ops/s=$pops cpu_us/op=$pcpu p99_us=$pp99" \
                "other_cpu%=$pother"
            k_ops+=" $kops" k_cpu+=" $kcpu" k_p99+=" $kp99"
            p_ops+=" $pops" p_cpu+=" $pcpu" p_p99+=" $pp99"
            r_ops+=" $(awk -v a="$kops" -v b="$pops" 'BEGIN { print a / b }')"
            r_cpu+=" $(awk -v a="$pcpu" -v b="$kcpu" 'BEGIN { print a / b }')"
            r_p99+=" $(awk -v a="$pp99" -v b="$kp99" 'BEGIN { print a / b }')"
        done
        report "echo_${backend}_c${conns}_ops" ops/s "$k_ops" "$p_ops" %.0f "$r_ops"
        report "echo_${backend}_c${conns}_cpu" cpu_us/op "$k_cpu" "$p_cpu" %.3f "$r_cpu"
        report "echo_${backend}_c${conns}_p99" us "$k_p99" "$p_p99" %.1f "$r_p99"
    done
done

# Another program busy on the two CPUs skews each run by its own amount.
if ((noisiest > 10)); then
    echo "echo: warning: other programs used up to ${noisiest}% of a CPU during some runs" \
        "(other_cpu% above); these figures are noise, rerun on a quiet machine"
fi

# ---- memory per idle connection ---------------------------------------------------

rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
slab_kb() { awk '/^Slab:/ { print $2 }' /proc/meminfo; }
# per_conn KB_BEFORE KB_AFTER CONNS: the growth in bytes per connection.
per_conn() { awk -v a="$1" -v b="$2" -v n="$3" 'BEGIN { printf "%.1f", (b - a) * 1024 / n }'; }

# keel's own figure, if its exit statistics carry jemalloc's per-shard
# allocated-bytes counter: the sum over shards of the last alloc_bytes=.
alloc_bytes() {
    awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^alloc_bytes=/) { split($i, kv, "=");
                  s = $0; sub(/:.*/, "", s); last[s] = kv[2] } }
              END { n = 0; for (s in last) { t += last[s]; n++ } if (n) print t }' "$1"
}

# idle_run peer|keel BACKEND CONNS: sets i_rss and i_slab (bytes/conn: server RSS, kernel
# slab) and i_alloc (keel's alloc_bytes at exit, empty if it reports none). CONNS=0 only
# starts and stops the server.
idle_run() {
    local kind=$1 backend=$2 n=$3 port rss0 rss1 slab0 slab1
    port=$("$loadgen" --free-port) || fail "no free port"
    start_server "$kind" "$backend" "$port"
    sleep 0.3 # let the server finish whatever it does after listen()
    rss0=$(rss_kb "$srv_pid") slab0=$(slab_kb)
    rss1=$rss0 slab1=$slab0
    if ((n > 0)); then
        timeout -k 5 300 taskset -c $load_cpu "$loadgen" --port "$port" --idle "$n" --duration 240 \
            --cpu $load_cpu >"$work/load.out" 2>&1 &
        ld_pid=$!
        local ok=
        for _ in $(seq 600); do
            grep -q "^idle: $n connected" "$work/load.out" && { ok=1; break; }
            kill -0 "$ld_pid" 2>/dev/null || break
            sleep 0.1
        done
        [[ -n $ok ]] || fail "loadgen --idle $n against $kind ($backend) did not connect"
        sleep 0.5
        kill -0 "$srv_pid" 2>/dev/null ||
            fail "$kind server ($backend) died with $n idle connections"
        rss1=$(rss_kb "$srv_pid") slab1=$(slab_kb)
        kill -TERM "$ld_pid"
        wait "$ld_pid"
        local rc=$?
        ld_pid=
        [[ $rc -eq 0 ]] || fail "loadgen --idle against $kind ($backend) exited with $rc"
    fi
    stop_server
    local d=$((n > 0 ? n : 1))
    i_rss=$(per_conn "$rss0" "$rss1" "$d")
    i_slab=$(per_conn "$slab0" "$slab1" "$d")
    i_alloc=$(alloc_bytes "$work/server.out")
}

if ((idle_conns > 0)); then
    for backend in $backends; do
        idle_run peer "$backend" "$idle_conns"
        p_rss=$i_rss p_slab=$i_slab
        idle_run keel "$backend" "$idle_conns"
        k_rss=$i_rss k_slab=$i_slab k_alloc=$i_alloc
        echo "echo: ${backend} idle $idle_conns conns: server RSS +$k_rss B/conn keel," \
            "+$p_rss B/conn peer; kernel slab (system-wide, client sockets included)" \
            "+$k_slab B/conn keel, +$p_slab B/conn peer"
        # RSS moves in 4 KiB pages (0.4 B/conn here): a server that allocates
        # nothing per connection measures ~0, so both are floored at 1 B/conn
        # for the ratio, which then reads 1 when both are at zero.
        ratio=$(awk -v k="$k_rss" -v p="$p_rss" \
            'BEGIN { k = k < 1 ? 1 : k; p = p < 1 ? 1 : p; printf "%.3f", p / k }')
        printf "bench: name=echo_%s_idle_mem unit=bytes/conn keel=%.0f peer=%.0f ratio=%s\n" \
            "$backend" "$k_rss" "$p_rss" "$ratio"
        if [[ -n $k_alloc ]]; then
            idle_run keel "$backend" 0
            k_alloc0=$i_alloc
            if [[ -n $k_alloc0 ]]; then
                echo "echo: ${backend} idle: keel heap allocated" \
                    "$(awk -v a="$k_alloc" -v b="$k_alloc0" -v n="$idle_conns" \
                        'BEGIN { printf "%.0f", (a - b) / n }') B/conn (jemalloc" \
                    "thread.allocated at exit, vs a run without connections)"
            fi
        else
            echo "echo: ${backend} idle: keel-echo reports no alloc_bytes; heap figure skipped"
        fi
    done
fi
