#!/usr/bin/env bash
# keel-kv starting on damaged or mismatched files, 2 shards:
#  - an AOF cut in the middle of its last command: loads the rest with a
#    WARNING and saves the cut bytes to PATH.bad-tail (aof-load-truncated
#    yes, the default); the file is cut, so the next start is clean and
#    new writes after the cut load back;
#  - the same with --aof-load-truncated no: refuses (exit status non-zero)
#    naming --aof-fix-corrupt-tail yes;
#  - garbage after the last command: refuses, naming aof-fix-corrupt-tail;
#    with --aof-fix-corrupt-tail yes: starts, data intact, garbage in
#    PATH.bad-tail;
#  - files written with 2 shards, started with 1: refuses, "start it with
#    --shards 2" (the AOF, and the snapshot with appendonly no).
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/kv_lib.sh"
: "${2:?usage: $0 KEEL_KV_BIN KV_WRITER}" # kv_writer: unused here, passed to every kv_persist test
source "$(dirname "$0")/kv_persist_lib.sh"

n=200
orig=$work/orig
mkdir -p "$orig"
start_kv --appendonly yes --appendfsync always --dir "$orig"
for i in $(seq $n); do echo "SET k$i k$i"; done | R >/dev/null || fail "SETs failed"
R save >/dev/null
stop_kv
aof=appendonlydir/appendonly.aof.0
[[ -s $orig/$aof && -s $orig/appendonlydir/appendonly.aof.1 ]] || fail "no AOF files"
# The last key in shard 0's AOF (the command is SET kN kN).
last=$(tr -d '\r' <"$orig/$aof" | tail -n 1)
[[ $last =~ ^k[0-9]+$ ]] || fail "the AOF does not end with SET kN kN: ends with '$last'"

# check_keys WANT_DBSIZE MISSING_KEY: every kI = kI except MISSING_KEY.
check_keys() {
    local got
    got=$(R dbsize)
    [[ $got == "$1" ]] || fail "dbsize $got, want $1"
    for i in $(seq $n); do echo "GET k$i"; done | R >"$work/got"
    for i in $(seq $n); do [[ k$i == "$2" ]] && echo "" || echo "k$i"; done | cmp -s - "$work/got" ||
        fail "values differ ($2 missing): $(for i in $(seq $n); do echo "k$i"; done | diff - "$work/got" | head -5)"
}

# ---- truncated ---------------------------------------------------------------------
d=$work/trunc
cp -r "$orig" "$d"
size=$(stat -c %s "$d/$aof")
truncate -s $((size - 3)) "$d/$aof"
expect_exit_fail "aof-fix-corrupt-tail yes" --appendonly yes --dir "$d" --aof-load-truncated no
cmp -s "$d/$aof" <(head -c $((size - 3)) "$orig/$aof") || fail "a refused start changed the AOF"
: >"$work/kv.out"
start_kv --appendonly yes --dir "$d"
grep -q "WARNING" "$work/kv.out" || fail "no WARNING for a truncated AOF"
[[ -f $d/$aof.bad-tail ]] || fail "no $aof.bad-tail"
cut_len=$(stat -c %s "$d/$aof.bad-tail")
((cut_len > 3)) || fail ".bad-tail has $cut_len bytes, want the whole partial command"
cmp -s "$d/$aof.bad-tail" <(head -c $((size - 3)) "$orig/$aof" | tail -c "$cut_len") ||
    fail ".bad-tail is not the bytes cut from the end of the file"
[[ $(stat -c %s "$d/$aof") -eq $((size - 3 - cut_len)) ]] || fail "the AOF was not cut to $((size - 3 - cut_len)) bytes"
check_keys $((n - 1)) "$last"
R set "$last" again >/dev/null
stop_kv
: >"$work/kv.out"
start_kv --appendonly yes --dir "$d"
grep -q WARNING "$work/kv.out" && fail "a WARNING again on the start after the cut"
[[ $(R get "$last") == again ]] || fail "a write after the cut did not load back"
stop_kv
echo "truncated tail: loaded with a WARNING, $cut_len bytes cut to .bad-tail, --aof-load-truncated no refuses"

# ---- corrupt -----------------------------------------------------------------------
d=$work/corrupt
cp -r "$orig" "$d"
printf 'xyz\r\n$$$' >>"$d/$aof"
expect_exit_fail "aof-fix-corrupt-tail" --appendonly yes --dir "$d"
expect_exit_fail "aof-fix-corrupt-tail" --appendonly yes --dir "$d" --aof-load-truncated yes
: >"$work/kv.out"
start_kv --appendonly yes --dir "$d" --aof-fix-corrupt-tail yes
check_keys $n ""
cmp -s "$d/$aof.bad-tail" <(printf 'xyz\r\n$$$') || fail ".bad-tail: '$(cat -A "$d/$aof.bad-tail")', want the garbage"
R set after fix >/dev/null
stop_kv
start_kv --appendonly yes --dir "$d"
[[ $(R get after) == fix ]] || fail "a write after the fix did not load back"
check_keys $((n + 1)) ""
stop_kv
echo "corrupt tail: refused naming aof-fix-corrupt-tail; --aof-fix-corrupt-tail yes cuts it, data intact"

# ---- shard count -------------------------------------------------------------------
# (More shards than CPUs is refused anyway: the mismatch tried is 1.)
expect_exit_fail "start it with --shards 2" --appendonly yes --dir "$orig" --shards 1
expect_exit_fail "start it with --shards 2" --appendonly no --dir "$orig" --shards 1
start_kv --appendonly no --dir "$orig"
check_keys $n ""
stop_kv
echo "PASS: truncated and corrupt AOF tails handled as configured; a shard-count mismatch refused with 'start it with --shards 2'"
