#!/usr/bin/env bash
# keel-kv with appendfsync always, 2 shards: kv_writer SETs from 4
# connections (4 commands in flight each) and logs every acknowledged key;
# keel-kv is killed with SIGKILL mid-load and restarted on the same dir:
# every acknowledged key must be there with its value. Then the same with
# a mixed load (INCR, RPUSH, HSET, MSET across shards): every acknowledged
# command is there, and at most the ones in flight beyond.
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/kv_lib.sh"
writer=${2:?usage: $0 KEEL_KV_BIN KV_WRITER}
source "$(dirname "$0")/kv_persist_lib.sh"

dir=$work/data
mkdir -p "$dir"
start_kv --appendonly yes --appendfsync always --dir "$dir"
"$writer" set "$kv_port" "$work/acked" -c 4 -d 4 -p a >"$work/writer.out" 2>&1 &
wpid=$!
sleep 2
kill_kv
wait "$wpid" || fail "writer: $(cat "$work/writer.out")"
n=$(wc -l <"$work/acked")
((n > 100)) || fail "only $n writes acknowledged in 2 s: $(cat "$work/writer.out")"

start_kv --appendonly yes --appendfsync always --dir "$dir"
grep -q "loaded .* keys from .*appendonly.aof" "$work/kv.out" || fail "no 'loaded N keys from ...aof' line"
"$writer" check "$kv_port" "$work/acked" >"$work/check.out" || fail "after kill -9: $(cat "$work/check.out")"
dbsize=$(R dbsize)
((dbsize >= n && dbsize <= n + 16)) || fail "dbsize $dbsize, want $n..$((n + 16)) (acknowledged + in flight)"
echo "always: $n acknowledged SETs survived kill -9 (dbsize $dbsize)"

# Mixed load on the same server, then kill -9 again.
"$writer" mixed "$kv_port" "$work/mixed" -c 4 -d 4 >"$work/writer.out" 2>&1 &
wpid=$!
sleep 2
kill_kv
wait "$wpid" || fail "mixed writer: $(cat "$work/writer.out")"
start_kv --appendonly yes --appendfsync always --dir "$dir"
"$writer" check "$kv_port" "$work/mixed" -d 4 >"$work/check.out" || fail "mixed after kill -9: $(cat "$work/check.out")"
echo "always mixed: $(cat "$work/check.out")"
grep -q ' [1-9][0-9]* mixed commands' "$work/check.out" || fail "no mixed command acknowledged"
"$writer" check "$kv_port" "$work/acked" >"$work/check.out" || fail "SETs after the second kill -9: $(cat "$work/check.out")"
stop_kv
echo "PASS: appendfsync always loses no acknowledged write on kill -9 (SET and INCR/RPUSH/HSET/MSET)"
