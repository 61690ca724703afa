#!/usr/bin/env bash
# keel-kv with appendfsync everysec, 2 shards, kill -9 under a SET load
# (kv_writer, 4 connections, 4 in flight each). The issue's bound: a crash
# loses at most about one second of writes, so every write acknowledged
# more than 1.5 s before the kill must be there after a restart. And, as
# with Redis, a reply goes out only once its write reached the kernel, so
# a kill -9 (which leaves the page cache) loses no acknowledged write at
# all: asserted too. Only a power loss could lose the last second.
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/kv_lib.sh"
writer=${2:?usage: $0 KEEL_KV_BIN KV_WRITER}
source "$(dirname "$0")/kv_persist_lib.sh"

dir=$work/data
mkdir -p "$dir"
start_kv --appendonly yes --appendfsync everysec --dir "$dir"
"$writer" set "$kv_port" "$work/acked" -c 4 -d 4 -p e >"$work/writer.out" 2>&1 &
wpid=$!
sleep 2
# The acknowledgements so far, but the last line (it may be half written).
sed '$d' "$work/acked" >"$work/early"
sleep 1.5
kill_kv
wait "$wpid" || fail "writer: $(cat "$work/writer.out")"
n_early=$(wc -l <"$work/early")
n=$(wc -l <"$work/acked")
((n_early > 100)) || fail "only $n_early writes acknowledged in 2 s: $(cat "$work/writer.out")"

start_kv --appendonly yes --appendfsync everysec --dir "$dir"
grep -q "loaded .* keys from .*appendonly.aof" "$work/kv.out" || fail "no 'loaded N keys from ...aof' line"
"$writer" check "$kv_port" "$work/early" >"$work/check.out" ||
    fail "writes acknowledged >1.5 s before kill -9 lost: $(cat "$work/check.out")"
"$writer" check "$kv_port" "$work/acked" >"$work/check_all.out" ||
    fail "an acknowledged write lost to kill -9 (it had not reached the kernel): $(cat "$work/check_all.out")"
# A clean shutdown syncs: everything, after writing more, must be there.
"$writer" set "$kv_port" "$work/acked2" -c 2 -d 8 -p f -n 2000 >"$work/writer.out" || fail "writer: $(cat "$work/writer.out")"
stop_kv
start_kv --appendonly yes --appendfsync everysec --dir "$dir"
"$writer" check "$kv_port" "$work/acked2" >"$work/check.out" || fail "after SIGTERM: $(cat "$work/check.out")"
"$writer" check "$kv_port" "$work/early" >"$work/check.out" || fail "after SIGTERM (older keys): $(cat "$work/check.out")"
stop_kv
echo "PASS: appendfsync everysec keeps every acknowledged write through kill -9 ($n, of which $n_early were more than 1.5 s old), and all after SIGTERM"
