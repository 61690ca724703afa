# Shared by kv_persist_*.sh, sourced after kv_lib.sh.
# shellcheck shell=bash disable=SC2154 # kv_bin, work, kv_pid: set by kv_lib.sh

# kill_kv: SIGKILL keel-kv (a crash: nothing flushed at exit).
kill_kv() {
    kill -9 "$kv_pid" 2>/dev/null
    wait "$kv_pid" 2>/dev/null
    kv_pid=
}

# expect_exit_fail PATTERN keel-kv-options...: keel-kv must refuse to start
# (exit non-zero within 10 s) with PATTERN (grep -E) in its output.
expect_exit_fail() {
    local pat=$1 rc pid
    shift
    "$kv_bin" --port 0 --shards 2 "$@" >"$work/fail.out" 2>&1 &
    pid=$!
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill -9 "$pid"
        wait "$pid"
        fail "keel-kv $* started, want a refusal with '$pat'"
    fi
    wait "$pid"
    rc=$?
    ((rc != 0)) || fail "keel-kv $* exited 0, want non-zero: $(cat "$work/fail.out")"
    grep -qE -- "$pat" "$work/fail.out" || fail "keel-kv $*: no '$pat' in: $(cat "$work/fail.out")"
    grep -qE 'AddressSanitizer|LeakSanitizer|runtime error:' "$work/fail.out" &&
        fail "sanitizer report: $(cat "$work/fail.out")"
    return 0
}

# A reply that never comes is a failure with a message, not a test that
# hangs until ctest's timeout.
R() { timeout 20 redis-cli -p "$kv_port" "$@"; }
