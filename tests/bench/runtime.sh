#!/usr/bin/env bash
# Runtime group: continuations, the run queue and cross-shard messaging,
# each against its floor or its conventional peer (see the comments at the
# top of runtime_tasks.c and runtime_xshard.c for what each figure does).
#
# usage: tests/bench/runtime.sh [BUILD_DIR]    (default: $KEEL_BUILD or build)
# env:   BENCH_SECONDS (1: seconds per measurement after a 10% warm-up),
#        BENCH_PAIRS (3)
#
# Every figure runs in a process of its own, so a figure that fails (a hang
# caught by the benchmark's watchdog, a crash) does not take the others
# with it; the group then exits non-zero.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2

build=${1:-${KEEL_BUILD:-build}}
bin=$build/tests/bench
for b in bench-runtime-tasks bench-runtime-xshard; do
    [[ -x $bin/$b ]] || {
        echo "runtime: $bin/$b is not built" >&2
        exit 1
    }
done

secs=${BENCH_SECONDS:-1}
pairs=${BENCH_PAIRS:-3}
# The benchmarks' own watchdog ends a stuck run with its counters printed;
# this limit only catches a process stuck somewhere else.
limit=$(awk -v s="$secs" -v p="$pairs" 'BEGIN { printf "%d", 2 * p * (15 + 6 * s) + 30 }')

echo "# runtime: keel and peer alternate in $pairs pairs (peer keel, keel peer, ...);" \
    "keel= and peer= are medians of their runs, ratio= the median of the pairs' ratios"

failed=0
run() { # binary figure
    timeout -k 5 "$limit" "$bin/$1" "$2"
    local rc=$?
    if [[ $rc -ne 0 ]]; then
        case $rc in
        3) why="hung (see the WATCHDOG line above)" ;;
        124 | 137) why="killed after ${limit} s" ;;
        139) why="crashed (SIGSEGV)" ;;
        134) why="aborted (SIGABRT)" ;;
        *) why="exit status $rc" ;;
        esac
        echo "# runtime: FAIL: $1 $2: $why"
        failed=1
    fi
}

run bench-runtime-tasks ready
run bench-runtime-tasks scheduled
run bench-runtime-xshard throughput
run bench-runtime-xshard rtt-busy
run bench-runtime-xshard rtt-sleeping
exit $failed
