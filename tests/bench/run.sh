#!/usr/bin/env bash
# keel's benchmarks, by group: tests/bench/run.sh [all | GROUP...]
# (`make bench BENCH=runtime` runs it from the repo root after a Release
# build into build/; KEEL_BUILD picks another build directory.)
#
# A group is a script tests/bench/<group>.sh, run from the repo root as
#     tests/bench/<group>.sh BUILD_DIR        (BUILD_DIR is also $KEEL_BUILD)
# that prints one line per figure,
#     bench: name=<id> unit=<unit> keel=<v> peer=<v> ratio=<r>
# with ratio > 1 meaning keel is better, and anything else as context; it
# exits non-zero if a figure could not be measured. The C helpers for that
# convention are in tests/bench/common/bench.h. Adding a group is adding its
# script; the list below only fixes the order of `all` and lets groups that
# are planned but not written yet be skipped with a message.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2

planned=(runtime echo kv pool sched disk)

# Every group: the planned ones in order, then any other script here.
groups=("${planned[@]}")
for f in tests/bench/*.sh; do
    g=$(basename "$f" .sh)
    [[ $g == run ]] && continue
    [[ " ${groups[*]} " == *" $g "* ]] || groups+=("$g")
done

usage() {
    echo "usage: tests/bench/run.sh [all | GROUP...]; groups: ${groups[*]}"
}

want=("$@")
[[ ${#want[@]} -eq 0 ]] && want=(all)
selected=()
for w in "${want[@]}"; do
    case $w in
    all) selected+=("${groups[@]}") ;;
    -h | --help)
        usage
        exit 0
        ;;
    *)
        if [[ " ${groups[*]} " != *" $w "* ]]; then
            echo "bench: unknown group '$w'" >&2
            usage >&2
            exit 2
        fi
        selected+=("$w")
        ;;
    esac
done

export KEEL_BUILD=${KEEL_BUILD:-build}
if [[ ! -f $KEEL_BUILD/CMakeCache.txt ]]; then
    echo "bench: no build in '$KEEL_BUILD': run 'make build' (or cmake a Release build and" \
        "set KEEL_BUILD to its directory)" >&2
    exit 2
fi
build_type=$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$KEEL_BUILD/CMakeCache.txt")
[[ $build_type == Release ]] ||
    echo "# warning: $KEEL_BUILD is a '$build_type' build; figures are meant for Release"

# Context for reading the figures: what ran, where, and how busy the machine
# already was (a load near 1 on this 2-CPU VM means the figures are noisy).
echo "# keel $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null ||
    echo ' (+ uncommitted changes)'), build $KEEL_BUILD ($build_type)"
echo "# $(uname -sr), $(nproc) CPUs: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo |
    sort -u | paste -sd,), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# BENCH_SECONDS=${BENCH_SECONDS:-default} BENCH_PAIRS=${BENCH_PAIRS:-3};" \
    "bench: ratio > 1 means keel is better"

failed=()
ran=()
seen=" "
for g in "${selected[@]}"; do
    [[ $seen == *" $g "* ]] && continue
    seen+="$g "
    script=tests/bench/$g.sh
    if [[ ! -f $script ]]; then
        echo "== group $g: skipped, not written yet ($script)"
        continue
    fi
    echo "== group $g"
    start=$SECONDS
    bash "$script" "$KEEL_BUILD"
    rc=$?
    ran+=("$g")
    if [[ $rc -ne 0 ]]; then
        failed+=("$g")
        echo "== group $g: FAILED (exit status $rc) after $((SECONDS - start)) s"
    else
        echo "== group $g: done in $((SECONDS - start)) s"
    fi
done

echo "== groups run: ${ran[*]:-none}; failed: ${failed[*]:-none}"
[[ ${#failed[@]} -eq 0 ]]
