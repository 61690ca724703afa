# Shared by the kv_*.sh integration tests: starts and stops keel-kv (and
# the redis-server some compare it with), and fails with their output. Each
# script is run as
#   kv_NAME.sh KEEL_KV_BIN [ARGS...]
# and sources this file first thing (after its own usage check, if it takes
# more arguments). Sets kv_bin and work (a scratch directory); everything
# the script starts is killed, and work removed, on exit.
# shellcheck shell=bash disable=SC2034,SC2120 # rs_port is the scripts'; optional arguments
set -uo pipefail

kv_test=$(basename "$0" .sh)
if [[ $# -lt 1 ]]; then
    echo "usage: $0 KEEL_KV_BIN" >&2
    exit 2
fi
kv_bin=$1

work=$(mktemp -d)
kv_pid=
rs_pid=
kv_cleanup() {
    [[ -n $kv_pid ]] && kill -9 "$kv_pid" 2>/dev/null
    [[ -n $rs_pid ]] && kill -9 "$rs_pid" 2>/dev/null
    # Anything else the script left in the background: redis-cli clients,
    # most in a subshell (R ... &), which is stopped through its child so
    # that it reaps it and exits, to be reaped in turn (no zombies).
    local p kids
    for p in $(jobs -p); do
        kids=$(pgrep -P "$p")
        kill -TERM ${kids:-$p} 2>/dev/null # one PID or several
    done
    wait 2>/dev/null
    # kv_save_log FILE (optional): keep keel-kv's output for a post-mortem.
    [[ -n ${kv_save_log:-} ]] && cp "$work/kv.out" "$kv_save_log" 2>/dev/null
    rm -rf "$work"
}
trap kv_cleanup EXIT
trap 'exit 130' INT # so that an interrupt or a timeout's kill still cleans up
trap 'exit 143' TERM

# fail MESSAGE: the test fails, with the end of keel-kv's output (of
# redis-server's, if MESSAGE names it).
fail() {
    echo "$kv_test: FAIL: $*"
    local f=$work/kv.out
    [[ $* == *redis-server* ]] && f=$work/rs.out
    [[ -s $f ]] && { echo "--- $(basename "$f") (last 30 lines)"; tail -n 30 "$f"; }
    exit 1
}

# need PROGRAM...: fails unless each is installed.
need() {
    local p
    for p in "$@"; do
        command -v "$p" >/dev/null || fail "$p is not installed: run 'make deps' (tools/deps.sh installs it)"
    done
}

[[ -x $kv_bin ]] || fail "no keel-kv binary at '$kv_bin'"
need redis-cli

# start_kv [keel-kv options...]: starts keel-kv, 2 shards, on an ephemeral
# port of 127.0.0.1 (the default address), its output appended to
# $work/kv.out; waits for its listening line. Sets kv_pid and kv_port.
start_kv() {
    local n_before line
    n_before=$(grep -c '^keel-kv: listening' "$work/kv.out" 2>/dev/null)
    "$kv_bin" --port 0 --shards 2 "$@" >>"$work/kv.out" 2>&1 &
    kv_pid=$!
    for _ in $(seq 200); do
        kill -0 "$kv_pid" 2>/dev/null || fail "keel-kv exited at startup"
        line=$(grep '^keel-kv: listening' "$work/kv.out" | sed -n "$((${n_before:-0} + 1))p")
        [[ -n $line ]] && break
        sleep 0.05
    done
    [[ -n $line ]] || fail "keel-kv did not print its listening line within 10 s"
    kv_port=$(sed -nE 's/^keel-kv: listening on 127\.0\.0\.1 port ([0-9]+),.*/\1/p' <<<"$line")
    [[ $kv_port =~ ^[0-9]+$ && $kv_port -gt 0 ]] || fail "no 127.0.0.1 port in the listening line: $line"
}

# stop_kv [SECONDS]: SIGTERM; keel-kv must exit 0 within SECONDS (10) and
# leave no sanitizer report in its output.
stop_kv() {
    local limit=${1:-10} rc
    kill -0 "$kv_pid" 2>/dev/null || fail "keel-kv is no longer running (crashed?)"
    kill -TERM "$kv_pid"
    for _ in $(seq $((limit * 10))); do
        kill -0 "$kv_pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$kv_pid" 2>/dev/null && fail "keel-kv still running $limit s after SIGTERM"
    wait "$kv_pid"
    rc=$?
    kv_pid=
    [[ $rc -eq 0 ]] || fail "keel-kv exit status $rc after SIGTERM"
    grep -qE 'AddressSanitizer|LeakSanitizer|runtime error:' "$work/kv.out" &&
        fail "sanitizer report in keel-kv's output"
    return 0
}

# R ARGS...: redis-cli against keel-kv.
R() { redis-cli -p "$kv_port" "$@"; }

# start_redis: redis-server on a free port, to compare keel-kv with: a random
# one below the kernel's range of ephemeral ports (so no outgoing connection
# holds it), retried if taken; output in $work/rs.out. Sets rs_pid, rs_port.
start_redis() {
    local lo hi port
    need redis-server
    read -r lo hi </proc/sys/net/ipv4/ip_local_port_range
    ((lo > 11000)) || lo=32768
    for _ in $(seq 20); do
        port=$((10000 + RANDOM % (lo - 10000)))
        if command -v ss >/dev/null && [[ -n $(ss -Htan "sport = :$port" 2>/dev/null) ]]; then
            continue
        fi
        redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
            --daemonize no --dir "$work" >"$work/rs.out" 2>&1 &
        rs_pid=$!
        for _ in $(seq 100); do
            if ! kill -0 "$rs_pid" 2>/dev/null; then
                wait "$rs_pid" 2>/dev/null
                rs_pid=
                grep -q 'Address already in use' "$work/rs.out" && continue 2
                fail "redis-server exited at startup"
            fi
            if [[ $(redis-cli -p "$port" ping 2>/dev/null) == PONG ]]; then
                rs_port=$port
                return 0
            fi
            sleep 0.05
        done
        fail "redis-server not answering on port $port after 5 s"
    done
    fail "no free port for redis-server after 20 tries"
}

stop_redis() {
    kill -TERM "$rs_pid" 2>/dev/null
    wait "$rs_pid" 2>/dev/null
    rs_pid=
}
