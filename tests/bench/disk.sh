#!/usr/bin/env bash
# Disk group: keel's file API against fio's io_uring engine, then keel-kv's
# append-only file against redis-server's, following
# /work/shared/BENCHMARKING.md.
#
# Part 1, keel vs fio (bench-disk, tests/bench/disk_bench.c, is keel's side):
#   disk_randread_qd32   4 KiB random reads, 32 in flight      (unit iops)
#   disk_randread_qd128  4 KiB random reads, 128 in flight     (unit iops)
#   disk_seqwrite_128k   128 KiB sequential writes, DISK_WRITE_QD in flight
#                        (8), overwriting a file of its own    (unit MiB/s)
# on files of DISK_BENCH_SIZE_MB (1024) MiB of random data, written once per
# run (O_DIRECT, with dd) in DISK_BENCH_DIR (/var/tmp: a real disk, not
# tmpfs, where O_DIRECT works) and removed at the end (DISK_BENCH_KEEP=1
# keeps them and reuses them next time). fio runs with ioengine=io_uring
# direct=1 and the same bs, iodepth, file, warm-up (ramp_time) and run time
# as keel; random reads are uniform with replacement on both sides
# (norandommap). fio submits and reaps in batches of up to the queue depth
# (iodepth_batch_submit, iodepth_batch_complete_max), as keel's loop does
# once per turn: with fio's defaults, one io_uring_enter per I/O, it is
# syscall-bound on a fast device (about 4x fewer IOPS measured here), a peer
# too weak to mean anything; DISK_FIO_BATCH=0 runs it that way all the same. Both are pinned to the same CPU (DISK_BENCH_CPU, 0) and
# alternate in BENCH_PAIRS pairs (fio keel, keel fio, ...). keel= and peer=
# are the medians of the runs, ratio= the median of the pairs' ratios
# (keel/fio for throughput, fio/keel for CPU time: > 1 means keel is
# better). cpu_us/op: keel's whole process (getrusage over the measured
# span, every thread), fio's job (its JSON usr_cpu+sys_cpu x runtime / ops).
#
# Part 2, keel-kv vs redis-server with appendonly yes (skipped, with a
# message, while keel-kv does not accept --appendonly yes): SET throughput
# with appendfsync everysec and always (kv_aof_everysec, kv_aof_always),
# each server in a fresh directory under DISK_BENCH_DIR, on CPU 0;
# redis-benchmark -t set -c 50 -P 1 on CPU 1, a warm-up, then a run of
# about BENCH_SECONDS; ops/s and the server's CPU time per SET
# (/proc/PID/stat), in pairs as above.
#
# usage: tests/bench/disk.sh [BUILD_DIR]      (default: $KEEL_BUILD, else build)
# env:   BENCH_PAIRS (3); DISK_BENCH_SECONDS (10: seconds per fio/keel run, after
#        DISK_BENCH_WARMUP, 1); DISK_BENCH_DIR (/var/tmp); DISK_BENCH_SIZE_MB
#        (1024); DISK_BENCH_CPU (0); DISK_BENCH_KEEP (0); DISK_WRITE_QD (8);
#        DISK_CASES (randread_qd32,randread_qd128,seqwrite_128k);
#        DISK_FIO_BATCH (1); DISK_KV (1; 0 skips part 2); BENCH_SECONDS (5: part 2's runs);
#        KEEL_KV_BIN (BUILD_DIR/keel-kv); DISK_BENCH_FIXED (1: keel registers its
#        buffers, keel_dma_register, and fio gets fixedbufs=1; 0: neither).
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2

build=${1:-${KEEL_BUILD:-build}}
disk_bin=$build/tests/bench/bench-disk
keel_kv=${KEEL_KV_BIN:-$build/keel-kv}
[[ -x $keel_kv ]] || { [[ -x $build/apps/keel-kv ]] && keel_kv=$build/apps/keel-kv; }
loadgen=$build/tests/bench/net/bench-loadgen
pairs=${BENCH_PAIRS:-3}
secs=${DISK_BENCH_SECONDS:-10}
warm=${DISK_BENCH_WARMUP:-1}
dir=${DISK_BENCH_DIR:-/var/tmp}
size_mb=${DISK_BENCH_SIZE_MB:-1024}
cpu=${DISK_BENCH_CPU:-0}
keep=${DISK_BENCH_KEEP:-0}
write_qd=${DISK_WRITE_QD:-8}
cases=${DISK_CASES:-randread_qd32,randread_qd128,seqwrite_128k}
do_kv=${DISK_KV:-1}
fio_batched=${DISK_FIO_BATCH:-1}
kv_secs=${BENCH_SECONDS:-5}
server_cpu=0
load_cpu=1

[[ -x $disk_bin ]] || { echo "disk: $disk_bin is not built" >&2; exit 1; }
for p in fio jq; do
    command -v $p >/dev/null || { echo "disk: $p not installed: run 'make deps'" >&2; exit 1; }
done
[[ -d $dir && -w $dir ]] || { echo "disk: DISK_BENCH_DIR '$dir' is not a writable directory" >&2; exit 1; }
clk_tck=$(getconf CLK_TCK)
bench_group=disk
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/common/lib.sh"

read_file=$dir/keel-disk-bench-read.dat
write_file=$dir/keel-disk-bench-write.dat
kv_dirs=()
disk_cleanup() {
    ((keep)) || rm -f "$read_file" "$write_file"
    [[ ${#kv_dirs[@]} -gt 0 ]] && rm -rf "${kv_dirs[@]}"
    cleanup
}
trap disk_cleanup EXIT

# ---- the test files ---------------------------------------------------------------

fstype=$(stat -f -c %T "$dir")
echo "disk: fio $(fio --version | sed 's/^fio-//'), ioengine=io_uring direct=1 norandommap; submission" \
    "$( ((fio_batched)) && echo "batched like keel's (iodepth_batch_submit = iodepth_batch_complete_max = QD)" ||
        echo "one I/O per io_uring_enter (fio's defaults, DISK_FIO_BATCH=0)")"
echo "disk: files in $dir ($fstype, $(df -h --output=source "$dir" | tail -n 1));" \
    "${size_mb} MiB each; CPU $cpu for keel and fio; $pairs pairs x ${secs} s (+ ${warm} s warm-up)"
[[ $fstype == tmpfs || $fstype == ramfs ]] &&
    echo "disk: warning: $dir is $fstype, not a disk: O_DIRECT will fail; set DISK_BENCH_DIR"

# make_file PATH: SIZE_MB MiB of random data, written with O_DIRECT (a sparse
# or fallocated file would be read without touching the device); kept when it
# exists at the right size and DISK_BENCH_KEEP is set.
make_file() {
    local f=$1 want=$((size_mb * 1048576))
    if ((keep)) && [[ -f $f && $(stat -c %s "$f") -eq $want ]]; then
        echo "disk: reusing $f"
        return 0
    fi
    local avail
    avail=$(df -k --output=avail "$dir" | tail -n 1)
    ((avail > size_mb * 1024 * 2 + 1048576)) || fail "not enough space in $dir for ${size_mb} MiB files"
    local t0=$SECONDS
    dd if=/dev/urandom of="$f" bs=1M count="$size_mb" oflag=direct conv=fsync status=none 2>"$work/dd.err" ||
        fail "writing $f with O_DIRECT failed ($(cat "$work/dd.err")); set DISK_BENCH_DIR to a directory on a disk"
    echo "disk: wrote $f in $((SECONDS - t0)) s"
}
for c in ${cases//,/ }; do
    case $c in
    randread_*) need_read=1 ;;
    seqwrite_*) need_write=1 ;;
    *) fail "unknown case '$c' in DISK_CASES" ;;
    esac
done
[[ -n ${need_read:-} ]] && make_file "$read_file"
[[ -n ${need_write:-} ]] && make_file "$write_file"

# ---- one run of each side ------------------------------------------------------------

limit=$(awk -v s="$secs" -v w="$warm" 'BEGIN { printf "%d", s + w + 60 }')

# run_keel MODE FILE BS QD: sets m_iops m_bw (MiB/s) m_cpu (µs/op) m_direct, or returns 1 with m_err.
run_keel() {
    local out
    timeout -k 5 "$limit" taskset -c "$cpu" "$disk_bin" "$1" "$2" "$3" "$4" "$secs" "$warm" \
        >"$work/keel.out" 2>&1
    local rc=$?
    out=$(grep '^disk: mode=' "$work/keel.out")
    if [[ $rc -ne 0 || -z $out ]]; then
        m_err="bench-disk exit status $rc: $(tail -n 3 "$work/keel.out" | paste -sd' ')"
        return 1
    fi
    m_iops=$(field iops "$out") m_bw=$(field bw_mib "$out") m_cpu=$(field cpu_us_per_op "$out")
    m_direct=$(field direct "$out")
}

# run_fio MODE FILE BS QD: the same for fio.
run_fio() {
    local rw=randread side=read fio_batch=()
    ((fio_batched)) && fio_batch=(--iodepth_batch_submit="$4" --iodepth_batch_complete_max="$4")
    [[ ${DISK_BENCH_FIXED:-1} != 0 ]] && fio_batch+=(--fixedbufs=1)
    [[ $1 == seqwrite ]] && rw=write side=write
    timeout -k 5 "$limit" taskset -c "$cpu" fio --name=keel-disk-bench --filename="$2" \
        --ioengine=io_uring --direct=1 --rw=$rw --bs="$3" --iodepth="$4" \
        --size=$((size_mb * 1048576)) --time_based --runtime="$secs" --ramp_time="$warm" \
        --norandommap --randrepeat=0 --invalidate=1 "${fio_batch[@]}" \
        --output-format=json --output="$work/fio.json" >"$work/fio.out" 2>&1
    local rc=$?
    local vals
    vals=$(jq -r --arg s "$side" '.jobs[0] | [.error, .[$s].iops, .[$s].bw_bytes, .[$s].total_ios,
                                  .[$s].runtime, .usr_cpu, .sys_cpu] | @tsv' "$work/fio.json" 2>/dev/null)
    local err iops bw ios rt usr sys
    read -r err iops bw ios rt usr sys <<<"$vals"
    if [[ $rc -ne 0 || -z $vals || $err != 0 ]] || ! awk -v n="$ios" 'BEGIN { exit !(n > 0) }'; then
        m_err="fio exit status $rc, error ${err:-?}: $(tail -n 3 "$work/fio.out" | paste -sd' ')"
        return 1
    fi
    m_iops=$(awk -v v="$iops" 'BEGIN { printf "%.0f", v }')
    m_bw=$(awk -v v="$bw" 'BEGIN { printf "%.2f", v / 1048576 }')
    m_cpu=$(awk -v u="$usr" -v s="$sys" -v rt="$rt" -v n="$ios" \
        'BEGIN { printf "%.3f", (u + s) / 100 * rt * 1000 / n }')
}

failed=0
table=()
direct_seen=
for c in ${cases//,/ }; do
    case $c in
    randread_qd*) mode=randread bs=4096 qd=${c#randread_qd} file=$read_file unit=iops ;;
    seqwrite_128k) mode=seqwrite bs=131072 qd=$write_qd file=$write_file unit=MiB/s ;;
    *) fail "unknown case '$c' in DISK_CASES" ;;
    esac
    name=disk_$c
    k_iops='' k_bw='' k_cpu='' p_iops='' p_bw='' p_cpu='' x_tp='' x_cpu='' err=''
    for ((i = 1; i <= pairs; i++)); do
        if ((i % 2)); then order="fio keel"; else order="keel fio"; fi
        for side in $order; do
            if ! run_$side $mode "$file" $bs "$qd"; then
                err="$side: $m_err"
                break 2
            fi
            if [[ $side == keel ]]; then
                ki=$m_iops kb=$m_bw kc=$m_cpu
                if [[ $direct_seen != *"$m_direct"* ]]; then
                    direct_seen+=$m_direct
                    if [[ $m_direct == 1 ]]; then
                        echo "disk: keel opened the files with O_DIRECT (keel_file_is_direct)"
                    else
                        echo "disk: warning: keel opened $file buffered, not O_DIRECT: not a like-for-like comparison"
                    fi
                fi
            else
                pi=$m_iops pb=$m_bw pc=$m_cpu
            fi
        done
        echo "disk: $c pair $i ($order): keel iops=$ki MiB/s=$kb cpu_us/op=$kc |" \
            "fio iops=$pi MiB/s=$pb cpu_us/op=$pc"
        k_iops+=" $ki" k_bw+=" $kb" k_cpu+=" $kc" p_iops+=" $pi" p_bw+=" $pb" p_cpu+=" $pc"
        x_tp+=" $(awk -v a="$ki" -v b="$pi" 'BEGIN { print (b > 0 ? a / b : 0) }')"
        x_cpu+=" $(awk -v a="$pc" -v b="$kc" 'BEGIN { print ((a > 0 && b > 0) ? a / b : 0) }')"
    done
    if [[ -n $err ]]; then
        echo "disk: $c: FAILED: $err"
        table+=("$(printf 'disk: %-15s FAILED: %s' "$c" "$err")")
        failed=1
        continue
    fi
    r_ki=$(median $k_iops) r_kb=$(median $k_bw) r_kc=$(median $k_cpu)
    r_pi=$(median $p_iops) r_pb=$(median $p_bw) r_pc=$(median $p_cpu)
    r_xt=$(median $x_tp) r_xc=$(median $x_cpu)
    if [[ $unit == iops ]]; then
        printf "bench: name=%s unit=iops keel=%.0f peer=%.0f ratio=%.3f\n" "$name" "$r_ki" "$r_pi" "$r_xt"
    else
        printf "bench: name=%s unit=MiB/s keel=%.1f peer=%.1f ratio=%.3f\n" "$name" "$r_kb" "$r_pb" "$r_xt"
    fi
    printf "bench: name=%s_cpu unit=cpu_us/op keel=%.3f peer=%.3f ratio=%.3f\n" "$name" "$r_kc" "$r_pc" "$r_xc"
    table+=("$(printf 'disk: %-15s bs %6s qd %3s | iops keel %8.0f fio %8.0f | MiB/s keel %7.1f fio %7.1f | ratio %5.3f | cpu_us/op keel %6.3f fio %6.3f ratio %5.3f' \
        "$c" "$bs" "$qd" "$r_ki" "$r_pi" "$r_kb" "$r_pb" "$r_xt" "$r_kc" "$r_pc" "$r_xc")")
done
((keep)) || rm -f "$read_file" "$write_file"

# ---- part 2: keel-kv's AOF against redis-server's -------------------------------------

free_port() {
    if [[ -x $loadgen ]]; then
        "$loadgen" --free-port
    else
        python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
    fi
}

# start_server peer|keel FSYNC: sets srv_pid, port and srv_dir (a fresh directory), or returns 1.
start_server() {
    local kind=$1 fsync=$2
    srv_dir=$(mktemp -d "$dir/keel-disk-bench-aof.XXXXXX") || fail "mktemp in $dir"
    kv_dirs+=("$srv_dir")
    port=$(free_port) || fail "no free port"
    if [[ $kind == keel ]]; then
        taskset -c $server_cpu "$keel_kv" --port "$port" --bind 127.0.0.1 --shards 1 --cpuset $server_cpu \
            --appendonly yes --appendfsync "$fsync" --dir "$srv_dir" >"$work/server.out" 2>&1 &
    else
        taskset -c $server_cpu redis-server --port "$port" --bind 127.0.0.1 --save '' \
            --appendonly yes --appendfsync "$fsync" --dir "$srv_dir" --daemonize no \
            >"$work/server.out" 2>&1 &
    fi
    srv_pid=$!
    for _ in $(seq 200); do
        kill -0 "$srv_pid" 2>/dev/null || { srv_pid=; return 1; }
        [[ $(redis-cli -p "$port" ping 2>/dev/null) == PONG ]] && return 0
        sleep 0.05
    done
    return 1
}
end_server() {
    stop_server
    rm -rf "$srv_dir"
}
cpu_ticks() { sed 's/.*) //' "/proc/$srv_pid/stat" | awk '{ print $12 + $13 }'; }

# kv_bench N: one redis-benchmark SET run; sets b_rps (0 if it failed).
kv_bench() {
    b_rps=0
    timeout -k 5 $((kv_secs * 20 + 120)) taskset -c $load_cpu redis-benchmark -p "$port" -c 50 -P 1 \
        -n "$1" -t set --csv </dev/null >"$work/load.out" 2>&1 &
    ld_pid=$!
    wait $ld_pid
    local rc=$?
    ld_pid=
    [[ $rc -eq 0 ]] || return 1
    grep -q 'rror' "$work/load.out" && return 1
    b_rps=$(tail -n 1 "$work/load.out" | awk -F'","' '{ print $2 + 0 }')
    awk -v r="$b_rps" 'BEGIN { exit !(r > 0) }'
}

# kv_measure peer|keel FSYNC: sets m_ops m_cpu, or returns 1 with m_err.
kv_measure() {
    local kind=$1 fsync=$2 n c0 c1
    if ! start_server "$kind" "$fsync"; then
        m_err="server did not start: $(tail -n 2 "$work/server.out" | paste -sd' ')"
        [[ -n $srv_pid ]] && end_server
        return 1
    fi
    if ! kv_bench 5000; then
        m_err="warm-up failed: $(tail -n 2 "$work/load.out" | paste -sd' ')"
        end_server
        return 1
    fi
    n=$(awk -v r="$b_rps" -v s="$kv_secs" 'BEGIN { n = int(r * s * 1.3 / 1000 + 1) * 1000;
                                                 print n < 5000 ? 5000 : n }')
    c0=$(cpu_ticks)
    if ! kv_bench "$n"; then
        m_err="redis-benchmark failed: $(tail -n 2 "$work/load.out" | paste -sd' ')"
        kill -0 "$srv_pid" 2>/dev/null || m_err+=" (the server died: $(tail -n 1 "$work/server.out"))"
        end_server
        return 1
    fi
    c1=$(cpu_ticks)
    local aof_kb
    aof_kb=$(du -sk "$srv_dir" | cut -f1)
    end_server
    m_ops=$(printf '%.0f' "$b_rps")
    m_cpu=$(awk -v t=$((c1 - c0)) -v n="$n" -v hz="$clk_tck" 'BEGIN { printf "%.3f", t * 1e6 / hz / n }')
    m_note="$n SETs, ${aof_kb} kB in its dir"
}

# Does keel-kv take --appendonly yes? It must stay up and, after a SET, write
# something to its --dir (accepting the flag, even saying yes to CONFIG GET
# appendonly, is not enough: the figures would compare no AOF with one).
kv_supported() {
    start_server keel everysec || {
        kv_why="keel-kv does not start with --appendonly yes: $(tail -n 1 "$work/server.out")"
        [[ -n $srv_pid ]] && end_server
        return 1
    }
    local conf
    conf=$(redis-cli -p "$port" config get appendonly 2>&1 | paste -sd' ')
    redis-cli -p "$port" set keel-disk-probe v >/dev/null 2>&1
    for _ in $(seq 30); do # everysec: written within a second or two
        [[ -n $(find "$srv_dir" -type f -size +0 2>/dev/null) ]] && break
        sleep 0.1
    done
    if ! kill -0 "$srv_pid" 2>/dev/null; then
        kv_why="keel-kv exited after a SET with --appendonly yes"
        srv_pid=
        return 1
    fi
    if [[ -z $(find "$srv_dir" -type f -size +0 2>/dev/null) ]]; then
        kv_why="keel-kv runs with --appendonly yes (CONFIG GET appendonly: '$conf') but wrote nothing to its --dir 3 s after a SET: no AOF yet"
        end_server
        return 1
    fi
    end_server
}

if ((do_kv)); then
    kv_ok=1
    if [[ ! -x $keel_kv ]]; then
        echo "disk: AOF part skipped: keel-kv not built ($keel_kv)"
        kv_ok=0
    else
        for p in redis-server redis-cli redis-benchmark; do
            command -v $p >/dev/null || { echo "disk: $p not installed: run 'make deps'" >&2; exit 1; }
        done
        if ! kv_supported; then
            echo "disk: AOF part skipped: $kv_why"
            kv_ok=0
        fi
    fi
    if ((kv_ok)); then
        echo "disk: AOF: keel=$keel_kv peer=redis-server $(redis-server --version | sed -nE 's/.*v=([0-9.]+).*/\1/p')," \
            "appendonly yes, dirs in $dir; server on CPU $server_cpu, redis-benchmark -t set -c 50 -P 1" \
            "on CPU $load_cpu; $pairs pairs x >= ${kv_secs} s"
        for fsync in everysec always; do
            k_ops='' k_cpu='' p_ops='' p_cpu='' x_ops='' x_cpu='' err=''
            for ((i = 1; i <= pairs; i++)); do
                if ((i % 2)); then order="peer keel"; else order="keel peer"; fi
                for kind in $order; do
                    if ! kv_measure $kind $fsync; then
                        err="$kind: $m_err"
                        break 2
                    fi
                    if [[ $kind == keel ]]; then
                        ko=$m_ops kc=$m_cpu kn=$m_note
                    else
                        po=$m_ops pc=$m_cpu pn=$m_note
                    fi
                done
                echo "disk: aof $fsync pair $i ($order): keel ops/s=$ko cpu_us/op=$kc ($kn) |" \
                    "redis ops/s=$po cpu_us/op=$pc ($pn)"
                k_ops+=" $ko" k_cpu+=" $kc" p_ops+=" $po" p_cpu+=" $pc"
                x_ops+=" $(awk -v a="$ko" -v b="$po" 'BEGIN { print (b > 0 ? a / b : 0) }')"
                x_cpu+=" $(awk -v a="$pc" -v b="$kc" 'BEGIN { print ((a > 0 && b > 0) ? a / b : 0) }')"
            done
            if [[ -n $err ]]; then
                echo "disk: kv_aof_$fsync: FAILED: $err"
                table+=("$(printf 'disk: %-15s FAILED: %s' "kv_aof_$fsync" "$err")")
                failed=1
                continue
            fi
            r_ko=$(median $k_ops) r_kc=$(median $k_cpu) r_po=$(median $p_ops) r_pc=$(median $p_cpu)
            r_xo=$(median $x_ops) r_xc=$(median $x_cpu)
            printf "bench: name=kv_aof_%s unit=ops/s keel=%.0f peer=%.0f ratio=%.3f\n" "$fsync" "$r_ko" "$r_po" "$r_xo"
            printf "bench: name=kv_aof_%s_cpu unit=cpu_us/op keel=%.3f peer=%.3f ratio=%.3f\n" \
                "$fsync" "$r_kc" "$r_pc" "$r_xc"
            table+=("$(printf 'disk: %-15s SET P1 c50     | ops/s keel %8.0f redis %8.0f | ratio %5.3f | cpu_us/op keel %6.3f redis %6.3f ratio %5.3f' \
                "kv_aof_$fsync" "$r_ko" "$r_po" "$r_xo" "$r_kc" "$r_pc" "$r_xc")")
        done
    fi
fi

echo "disk: summary (medians; ratio > 1 means keel is better):"
[[ ${#table[@]} -gt 0 ]] && printf '%s\n' "${table[@]}"
exit $failed
