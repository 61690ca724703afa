#!/usr/bin/env bash
# sched benchmark group: what the scheduler's observability costs. keel-echo
# and keel-kv run with one feature on against the same server with everything
# off (the baseline: --stall-threshold-ms 0, no metrics, no trace), following
# /work/shared/BENCHMARKING.md:
# - server on CPU 0 (--shards 1 --cpuset 0 under taskset -c 0), load on CPU 1:
#   keel-echo driven by bench-loadgen (ECHO_CONNS connections, 64-byte
#   messages, as echo.sh), keel-kv by redis-benchmark -t set,get at pipeline
#   depth 1 and 16 (SET and GET in one run, as in kv.sh but one run for both,
#   to keep the group short: 2 operations per request number);
# - a fresh server on a fresh port for every measurement;
# - each feature run adjacent to a baseline run, the order alternating from
#   round to round, and the median of the pairs' ratios, which cancels the
#   machine's slow drift. Two features share a baseline: a round is
#   "A base B", the next "B base A" (so each run of A or B has its own
#   baseline next to it);
# - the server's CPU time per operation (utime+stime from /proc/PID/stat over
#   the measured window, the warm-up excluded), since ops/s alone hides a
#   costlier server when the load generator saturates first.
# The features (SCHED_CONFIGS):
#   stall        the stall detector at its default threshold (25 ms);
#   metrics_1hz  /metrics served and scraped once a second by curl, as
#                Prometheus would (one curl --rate 1/s on the load CPU; the
#                server pays for rendering and sending the page);
#   metrics_10hz the same scraped 10 times a second, a worst case;
#   trace        --trace FILE: events recorded into the shard's ring from the
#                start (the JSON is written at exit, outside the window, and
#                deleted);
#   defaults     stall detector and metrics_1hz together (opt-in);
#   base         the baseline against itself: the noise floor (opt-in).
# Goals: the stall detector and metrics cost < 1% of CPU per operation,
# tracing < 5%.
# Then the preemption delay: unit-sched_groups' test of a hog that polls
# keel_need_preempt, run SCHED_PREEMPT_RUNS times; its median lateness of a
# 1 ms timer against the 20 ms bound, and the shares test's split as context.
#
# usage: tests/bench/sched.sh [BUILD_DIR]       (default: $KEEL_BUILD, else build)
# env:   BENCH_PAIRS (3), BENCH_SECONDS (5), BENCH_WARMUP (1),
#        SCHED_APPS ("echo kv"), SCHED_CONFIGS ("stall metrics_1hz metrics_10hz trace"),
#        SCHED_KV_PIPELINES ("1 16"), ECHO_CONNS (50), KV_CONNS (50),
#        SCHED_PREEMPT_RUNS (5; 0 skips the preemption test).
set -uo pipefail

build=${1:-${KEEL_BUILD:-build}}
echo_bin=$build/keel-echo
kv_bin=$build/keel-kv
loadgen=$build/tests/bench/net/bench-loadgen
unit_groups=$build/tests/unit-sched_groups
pairs=${BENCH_PAIRS:-3}
secs=${BENCH_SECONDS:-5}
warmup=${BENCH_WARMUP:-1}
apps=${SCHED_APPS:-"echo kv"}
configs=${SCHED_CONFIGS:-"stall metrics_1hz metrics_10hz trace"}
kv_pipelines=${SCHED_KV_PIPELINES:-"1 16"}
echo_conns=${ECHO_CONNS:-50}
kv_conns=${KV_CONNS:-50}
preempt_runs=${SCHED_PREEMPT_RUNS:-5}
size=64
server_cpu=0
load_cpu=1

[[ -x $loadgen ]] || { echo "sched: $loadgen not built" >&2; exit 1; }
command -v curl >/dev/null || { echo "sched: curl not installed (it scrapes /metrics)" >&2; exit 1; }
for c in $configs; do
    case $c in
    stall | metrics_1hz | metrics_10hz | trace | defaults | base) ;;
    *) echo "sched: unknown config '$c' in SCHED_CONFIGS" >&2; exit 2 ;;
    esac
done
run_apps=
for a in $apps; do
    case $a in
    echo)
        [[ -x $echo_bin ]] || { echo "sched: keel-echo not built, skipping it"; continue; } ;;
    kv)
        [[ -x $kv_bin ]] || { echo "sched: keel-kv not built, skipping it"; continue; }
        if ! command -v redis-benchmark >/dev/null || ! command -v redis-cli >/dev/null; then
            echo "sched: redis-benchmark/redis-cli not installed ('make deps'): keel-kv skipped"
            continue
        fi ;;
    *) echo "sched: unknown app '$a' in SCHED_APPS" >&2; exit 2 ;;
    esac
    run_apps+=" $a"
done
clk_tck=$(getconf CLK_TCK)
have_ss=$(command -v ss)
bench_group=sched # lib.sh's, in its messages
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/common/lib.sh"

# The scraper is ours to stop too, however the script ends.
scr_pid=
stop_scraper() {
    [[ -n $scr_pid ]] || return 0
    local kids
    kids=$(pgrep -P "$scr_pid")
    # shellcheck disable=SC2086 # its children, if any (taskset execs curl: none)
    kill -9 "$scr_pid" $kids 2>/dev/null
    wait "$scr_pid" 2>/dev/null
    scr_pid=
}
trap 'stop_scraper; cleanup' EXIT

# ---- servers ----------------------------------------------------------------------

# feature_args CONFIG: the server options of CONFIG, in the array f_args; sets
# f_scrape (curl's --rate of scrapes, empty: no scraping).
feature_args() {
    f_args=() f_scrape=
    case $1 in
    base) f_args=(--stall-threshold-ms 0) ;;
    stall) f_args=() ;; # the default threshold, 25 ms
    metrics_1hz) f_args=(--stall-threshold-ms 0 --metrics-port 0 --metrics-address 127.0.0.1) f_scrape=1/s ;;
    metrics_10hz) f_args=(--stall-threshold-ms 0 --metrics-port 0 --metrics-address 127.0.0.1) f_scrape=10/s ;;
    trace) f_args=(--stall-threshold-ms 0 --trace "$work/trace.json") ;;
    defaults) f_args=(--metrics-port 0 --metrics-address 127.0.0.1) f_scrape=1/s ;;
    esac
}

# start_server APP CONFIG: sets srv_pid and port, starts the scraper if CONFIG
# scrapes; output in $work/server.out.
start_server() {
    local app=$1 config=$2 bin
    port=$("$loadgen" --free-port) || fail "no free port"
    feature_args "$config"
    rm -f "$work/trace.json" "$work/scrapes"
    if [[ $app == echo ]]; then bin=$echo_bin; else bin=$kv_bin; fi
    taskset -c $server_cpu "$bin" --port "$port" --bind 127.0.0.1 --shards 1 --cpuset $server_cpu \
        "${f_args[@]}" >"$work/server.out" 2>&1 &
    srv_pid=$! # taskset execs the server: this is the server's own PID
    local up=
    for _ in $(seq 200); do
        kill -0 "$srv_pid" 2>/dev/null || fail "keel-$app ($config) exited at startup"
        if [[ $app == kv ]]; then
            [[ $(redis-cli -p "$port" ping 2>/dev/null) == PONG ]] && { up=1; break; }
        elif [[ -n $have_ss ]]; then
            [[ -n $(ss -Htln "sport = :$port" 2>/dev/null) ]] && { up=1; break; }
        else
            (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && { up=1; break; }
        fi
        sleep 0.05
    done
    [[ -n $up ]] || fail "keel-$app ($config) not serving on port $port after 10 s"
    if [[ -n $f_scrape ]]; then
        local mport
        mport=$(sed -n 's|.*metrics on http://127\.0\.0\.1:\([0-9]*\)/metrics.*|\1|p' "$work/server.out" | head -n 1)
        [[ -n $mport ]] || fail "keel-$app ($config) logged no 'metrics on http://127.0.0.1:PORT/metrics'"
        local url=http://127.0.0.1:$mport/metrics
        local page
        page=$(curl -sf --max-time 2 "$url")
        grep -q '^keel_' <<<"$page" || fail "keel-$app ($config): no keel_ series at $url"
        # Like Prometheus: one GET per interval, each bounded in time; one curl for
        # all of them (--rate paces them), so the scraper's own cost on the load CPU
        # is a few ms a second, not a fork and exec per scrape. A line per scrape
        # (line-buffered: the scraper is killed).
        taskset -c $load_cpu stdbuf -oL curl -s --rate "$f_scrape" --max-time 2 -o /dev/null \
            -w '%{http_code} %{size_download}\n' "$url?[1-1000000]" >"$work/scrapes" 2>/dev/null &
        scr_pid=$!
    fi
}

# end_server CONFIG: stops the scraper and the server; checks what the feature left
# (the trace file, the scrapes) and sets s_note with it.
end_server() {
    local config=$1
    stop_scraper
    stop_server
    s_note=
    if [[ $config == trace ]]; then
        [[ -s $work/trace.json ]] || fail "--trace wrote no $work/trace.json"
        s_note=" trace_json=$(($(stat -c %s "$work/trace.json") / 1024))kB"
        rm -f "$work/trace.json"
    fi
    if [[ -n $f_scrape ]]; then
        local ok bytes
        ok=$(awk 'NF == 2 && $1 == 200 { n++ } END { print n + 0 }' "$work/scrapes" 2>/dev/null)
        bytes=$(awk 'NF == 2 && $1 == 200 { b += $2; n++ } END { print n ? int(b / n) : 0 }' "$work/scrapes" 2>/dev/null)
        ((ok > 0)) || fail "no successful scrape of /metrics during the run"
        s_note=" scrapes=$ok(${bytes}B)"
    fi
}

# ---- one measurement ---------------------------------------------------------------

# measure_echo CONFIG: sets m_ops, m_cpu (server µs/op), m_other (% of a CPU used by
# neither server nor load generator: other programs, i.e. noise).
measure_echo() {
    local config=$1
    start_server echo "$config"
    timeout -k 5 $((secs + warmup + 90)) taskset -c $load_cpu "$loadgen" --port "$port" \
        --conns "$echo_conns" --size $size --pipeline 1 --duration "$secs" --warmup "$warmup" \
        --cpu $load_cpu --server-pid "$srv_pid" >"$work/load.out" 2>&1 &
    ld_pid=$!
    wait $ld_pid
    local rc=$?
    ld_pid=
    end_server "$config"
    [[ $rc -eq 0 ]] || fail "loadgen against keel-echo ($config) exited with $rc"
    local res srv ticks ops
    res=$(grep '^loadgen: ops=' "$work/load.out")
    srv=$(grep server_cpu_ticks= "$work/load.out")
    ticks=$(field server_cpu_ticks "$srv")
    m_other=$(field other_cpu_pct "$srv")
    ops=$(field ops "$res")
    [[ -n $ops && -n $ticks && $ops -gt 0 ]] || fail "no result from loadgen"
    m_ops=$(field ops_per_sec "$res")
    m_ops=$(printf '%.0f' "$m_ops")
    m_cpu=$(awk -v t="$ticks" -v n="$ops" -v hz="$clk_tck" 'BEGIN { printf "%.4f", t * 1e6 / hz / n }')
    m_win=$(field window_s "$(grep window_s= "$work/load.out")")
}

# utime+stime of the server, all its threads, in clock ticks (the fields after "(comm) ").
cpu_ticks() { sed 's/.*) //' "/proc/$srv_pid/stat" | awk '{ print $12 + $13 }'; }

# kv_bench DEPTH N: redis-benchmark -t set,get, N requests each, bounded in time;
# sets b_rps (both tests' requests over both tests' time), or returns 1.
kv_bench() {
    local depth=$1 n=$2
    b_rps=0
    timeout -k 5 $((secs * 20 + 120)) taskset -c $load_cpu redis-benchmark -p "$port" \
        -c "$kv_conns" -n "$n" -P "$depth" --csv -t set,get </dev/null >"$work/load.out" 2>&1 &
    ld_pid=$!
    wait $ld_pid
    local rc=$?
    ld_pid=
    [[ $rc -eq 0 ]] || return 1
    grep -q 'rror' "$work/load.out" && return 1
    b_rps=$(awk -F'","' '/^"(SET|GET)"/ && $2 > 0 { t += 1 / $2; k++ }
                        END { if (k == 2) printf "%.0f", 2 / t; else print 0 }' "$work/load.out")
    ((b_rps > 0))
}

declare -A rate_hint=()
# measure_kv CONFIG DEPTH: as measure_echo; an operation is one SET or one GET.
measure_kv() {
    local config=$1 depth=$2 n warm c0 c1 w0 w1
    start_server kv "$config"
    # Warm-up of about BENCH_WARMUP s, going by the last run's rate at this depth;
    # its rate (generously: a short run's rate is below the steady one) or the last
    # run's sizes the measured run.
    warm=$((5000 * depth))
    [[ -n ${rate_hint[$depth]:-} ]] &&
        warm=$(awk -v r="${rate_hint[$depth]}" -v s="$warmup" -v d="$depth" \
            'BEGIN { n = int(r * s / 2); print (n < 1000 * d ? 1000 * d : n) }')
    kv_bench "$depth" "$warm" ||
        fail "redis-benchmark warm-up against keel-kv ($config, P$depth) failed"
    local rate=${rate_hint[$depth]:-$((b_rps * 13 / 10))}
    [[ -n ${rate_hint[$depth]:-} ]] && rate=$((rate * 13 / 10))
    n=$(awk -v r="$rate" -v s="$secs" -v d="$depth" \
        'BEGIN { n = int(r * s / 2 / 1000 + 1) * 1000; print (n < 1000 * d ? 1000 * d : n) }')
    c0=$(cpu_ticks) w0=$(date +%s.%N)
    kv_bench "$depth" "$n" || fail "redis-benchmark against keel-kv ($config, P$depth) failed"
    c1=$(cpu_ticks) w1=$(date +%s.%N)
    end_server "$config"
    rate_hint[$depth]=$b_rps
    m_ops=$b_rps
    m_cpu=$(awk -v t=$((c1 - c0)) -v n=$((2 * n)) -v hz="$clk_tck" 'BEGIN { printf "%.4f", t * 1e6 / hz / n }')
    m_other=
    m_win=$(awk -v a="$w0" -v b="$w1" 'BEGIN { printf "%.1f", b - a }')
}

# ---- the rounds ------------------------------------------------------------------

declare -A res_cpu=() res_ops=() res_rcpu=() res_rops=()
summary=()

# run_workload APP DEPTH LABEL: every config against its baseline, BENCH_PAIRS rounds.
run_workload() {
    local app=$1 depth=$2 label=$3
    local -a cf groups=()
    read -ra cf <<<"$configs"
    local g i j c order run
    # Two features per baseline run: "A base B".
    for ((g = 0; g < ${#cf[@]}; g += 2)); do
        groups+=("${cf[g]} ${cf[g + 1]:-}")
    done
    declare -A v_cpu=() v_ops=()
    for ((i = 1; i <= pairs; i++)); do
        for g in "${groups[@]}"; do
            local -a fs
            read -ra fs <<<"$g"
            if ((i % 2)); then
                order="${fs[0]} base_ ${fs[1]:-}"
            else
                order="${fs[1]:-} base_ ${fs[0]}"
            fi
            for c in $order; do
                run=${c%_}
                [[ $c == base_ ]] && run=base
                if [[ $app == echo ]]; then measure_echo "$run"; else measure_kv "$run" "$depth"; fi
                v_cpu[$c]=$m_cpu v_ops[$c]=$m_ops
                echo "sched: $label round $i $c: ops/s=$m_ops cpu_us/op=$m_cpu window_s=$m_win${m_other:+ other_cpu%=$m_other}$s_note"
                if [[ -n $m_other ]] && ((m_other > noisiest)); then noisiest=$m_other; fi
            done
            for c in "${fs[@]}"; do
                res_cpu[$label $c]+=" ${v_cpu[$c]}"
                res_ops[$label $c]+=" ${v_ops[$c]}"
                res_rcpu[$label $c]+=" $(awk -v b="${v_cpu[base_]}" -v f="${v_cpu[$c]}" 'BEGIN { print b / f }')"
                res_rops[$label $c]+=" $(awk -v b="${v_ops[base_]}" -v f="${v_ops[$c]}" 'BEGIN { print f / b }')"
            done
        done
    done
    for c in $configs; do
        local -a kc rc ko ro
        read -ra kc <<<"${res_cpu[$label $c]}"
        read -ra rc <<<"${res_rcpu[$label $c]}"
        read -ra ko <<<"${res_ops[$label $c]}"
        read -ra ro <<<"${res_rops[$label $c]}"
        # The baseline runs adjacent to this feature's runs.
        local -a bc=() bo=()
        for ((j = 0; j < ${#rc[@]}; j++)); do
            bc+=("$(awk -v f="${kc[j]}" -v r="${rc[j]}" 'BEGIN { printf "%.4f", f * r }')")
            bo+=("$(awk -v f="${ko[j]}" -v r="${ro[j]}" 'BEGIN { printf "%.0f", f / r }')")
        done
        local rmed omed lo hi
        rmed=$(median "${rc[@]}")
        omed=$(median "${ro[@]}")
        printf "bench: name=sched_%s_%s_cpu unit=cpu_us/op keel=%.3f peer=%.3f ratio=%.3f\n" \
            "$label" "$c" "$(median "${kc[@]}")" "$(median "${bc[@]}")" "$rmed"
        printf "bench: name=sched_%s_%s_ops unit=ops/s keel=%.0f peer=%.0f ratio=%.3f\n" \
            "$label" "$c" "$(median "${ko[@]}")" "$(median "${bo[@]}")" "$omed"
        # Overhead: extra CPU per operation with the feature, in % of the baseline's;
        # the pairs' spread says how much of it the noise could be.
        lo=$(printf '%s\n' "${rc[@]}" | sort -g | tail -n 1) # best ratio: lowest overhead
        hi=$(printf '%s\n' "${rc[@]}" | sort -g | head -n 1)
        local goal=1
        [[ $c == trace ]] && goal=5
        [[ $c == base ]] && goal=
        summary+=("$(awk -v l="$label" -v c="$c" -v r="$rmed" -v lo="$lo" -v hi="$hi" -v g="$goal" \
            -v o="$omed" 'BEGIN {
                ov = (1 / r - 1) * 100; a = (1 / lo - 1) * 100; b = (1 / hi - 1) * 100
                half = (b - a) / 2
                if (g == "") verdict = "(noise floor: baseline against itself)"
                else if (ov < 0) verdict = sprintf("~0: meets the < %d%% goal (a saving is noise)", g)
                else if (ov < g) verdict = sprintf("meets the < %d%% goal", g)
                else if (a < g) verdict = sprintf("above the %d%% goal, within the noise", g)
                else verdict = sprintf("ABOVE the < %d%% goal", g)
                printf "sched: %-8s %-13s CPU/op %+6.1f%% (pairs %+.1f%% .. %+.1f%%, +/-%.1f)  ops/s %+6.1f%%  %s",
                    l, c, ov, a, b, half, (o - 1) * 100, verdict }')")
    done
}

ncf=$(wc -w <<<"$configs")
nruns=$((ncf + (ncf + 1) / 2)) # runs per round: the features and their shared baselines
nwork=0
for a in $run_apps; do
    if [[ $a == echo ]]; then nwork=$((nwork + 1)); else nwork=$((nwork + $(wc -w <<<"$kv_pipelines"))); fi
done
echo "sched: keel-echo/keel-kv --shards 1 on CPU $server_cpu, load on CPU $load_cpu" \
    "(bench-loadgen $echo_conns conns x ${size} B; redis-benchmark -t set,get -c $kv_conns" \
    "-P ${kv_pipelines// /,}); configs: $configs, each against the baseline" \
    "(--stall-threshold-ms 0, no metrics, no trace); $pairs rounds x ${secs} s" \
    "(+${warmup} s warm-up) per run; about $((nwork * pairs * nruns * (secs + warmup + 2) / 60 + 1)) min"
echo "sched: keel= is the median with the feature, peer= the median of the adjacent baselines," \
    "ratio= the median of the pairs' ratios (cpu: baseline/feature, ops: feature/baseline," \
    "so > 1 means the feature costs nothing); cpu_us/op is the server's utime+stime over" \
    "the measured window"

noisiest=0
for a in $run_apps; do
    if [[ $a == echo ]]; then
        run_workload echo "" "echo"
    else
        for d in $kv_pipelines; do
            run_workload kv "$d" "kv_p$d"
        done
    fi
done
if ((noisiest > 10)); then
    echo "sched: warning: other programs used up to ${noisiest}% of a CPU during some keel-echo runs" \
        "(other_cpu% above): the figures are noisier than usual"
fi

# ---- preemption: a 1 ms timer under a hog that polls keel_need_preempt ----------

preempt_line=
if ((preempt_runs > 0)); then
    if [[ ! -x $unit_groups ]]; then
        echo "sched: $unit_groups not built: preemption delay skipped"
        preempt_line="sched: preemption delay: skipped ($unit_groups not built)"
    elif ! "$unit_groups" --list 2>&1 | grep -q a_hog_polling_need_preempt; then
        echo "sched: $unit_groups has no hog test: preemption delay skipped"
        preempt_line="sched: preemption delay: skipped (no hog test)"
    else
        meds=() maxes=()
        for ((i = 1; i <= preempt_runs; i++)); do
            out=$(timeout -k 5 120 "$unit_groups" --jobs 1 --verbose --filter '*hog*' 2>&1)
            line=$(grep -m1 'timers under a hog fired' <<<"$out")
            [[ -n $line ]] || { echo "$out" | tail -n 20 >&2; fail "the hog test printed no delay"; }
            echo "sched: preempt run $i: ${line#*\] }"
            meds+=("$(sed -n 's/.* fired \([0-9.]*\) ms late.*/\1/p' <<<"$line")")
            maxes+=("$(sed -n 's/.*max \([0-9.]*\).*/\1/p' <<<"$line")")
        done
        med=$(median "${meds[@]}")
        worst=$(printf '%s\n' "${maxes[@]}" | sort -g | tail -n 1)
        printf "bench: name=sched_preempt_timer_delay unit=ms keel=%.3f peer=20 ratio=%.1f\n" \
            "$med" "$(awk -v m="$med" 'BEGIN { print (m > 0 ? 20 / m : 0) }')"
        preempt_line=$(printf 'sched: preemption: a 1 ms timer under a hog polling keel_need_preempt fires %.3f ms late (median of %d runs'"'"' medians; worst single timer %s ms); bound 20 ms' \
            "$med" "$preempt_runs" "$worst")
        for t in shares flood; do
            out=$(timeout -k 5 120 "$unit_groups" --jobs 1 --verbose --filter "*$t*" 2>&1)
            line=$(grep -m1 -E 'shares [0-9]+:[0-9]+ ->|under a task flood' <<<"$out")
            [[ -n $line ]] && echo "sched: context: ${line#*\] }"
        done
    fi
fi

echo "sched: summary (median over $pairs pairs of the extra server CPU per operation with" \
    "the feature, + = costs more; the pairs' range beside it: on this VM pair-to-pair noise" \
    "is several %, so an overhead below the noise floor reads as ~0, and a negative one is noise):"
printf '%s\n' "${summary[@]}"
[[ -n $preempt_line ]] && echo "$preempt_line"
exit 0
