# Shared by the bench groups that measure a server against a load generator
# (echo.sh, kv.sh): the scratch directory, stopping whatever they started
# however the script ends, failing with the programs' output, stopping the
# server, and the medians. A group sources it once its prerequisites are
# checked, having set bench_group (its name in messages):
#     bench_group=kv
#     source "$(dirname "$0")/common/lib.sh"
# Sets work (output in $work/server.out and $work/load.out); the group sets
# srv_pid (the server's own PID) and ld_pid (timeout(1) running the load
# generator) while they run.
# shellcheck shell=bash disable=SC2154 # bench_group is the group's

work=$(mktemp -d)
srv_pid=
ld_pid=

# Every process we start is ours to stop, whatever way the script ends.
cleanup() {
    # ld_pid is timeout(1): kill its child, the load generator, and let
    # timeout reap it and exit (killing both would leave a zombie to init).
    if [[ -n $ld_pid ]]; then
        local kids
        kids=$(pgrep -P "$ld_pid")
        kill -9 ${kids:-$ld_pid} 2>/dev/null
    fi
    [[ -n $srv_pid ]] && kill -9 "$srv_pid" 2>/dev/null
    wait 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

fail() {
    echo "$bench_group: FAIL: $*" >&2
    for f in "$work"/server.out "$work"/load.out; do
        [[ -s $f ]] && { echo "--- $(basename "$f") (last lines)" >&2; tail -n 20 "$f" >&2; }
    done
    exit 1
}

# stop_server: SIGTERM, then SIGKILL if the server is still running 10 s later.
stop_server() {
    kill -TERM "$srv_pid" 2>/dev/null
    for _ in $(seq 100); do
        kill -0 "$srv_pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$srv_pid" 2>/dev/null; then
        echo "$bench_group: warning: server $srv_pid still running 10 s after SIGTERM; killing it" >&2
        kill -9 "$srv_pid" 2>/dev/null
    fi
    wait "$srv_pid" 2>/dev/null
    srv_pid=
}

# field KEY LINE: the value of KEY=value in LINE.
field() { sed -n "s/.*[[:space:]]$1=\([^[:space:]]*\).*/\1/p" <<<"$2"; }

# median NUMBER...
median() {
    printf '%s\n' "$@" | sort -g |
        awk '{ v[NR] = $1 }
             END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
