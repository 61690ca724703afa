#!/usr/bin/env bash
# Clients that reset (SO_LINGER 0, close) in the middle of a large
# transfer: keel-echo survives, keeps serving, and closes every one of
# those connections (its open-file count returns to where it was).
source "$(dirname "$0")/echo_lib.sh"

fds() { ls "/proc/$1/fd" 2>/dev/null | wc -l; }
start_echo echo --shards 2
client before sizes --timeout 60
base=$(fds "$echo_pid")
client reset reset 100 --timeout 60
# Concurrent resets too.
for i in 1 2 3 4; do
  "$client_bin" reset 25 --port "$echo_port" --seed "$i" >"$work/reset$i.out" 2>&1 &
  pids+=($!)
done
for i in 1 2 3 4; do
  wait "${pids[-$i]}" || fail "a concurrent reset client failed"
done
kill -0 "$echo_pid" 2>/dev/null || fail "keel-echo died"
client after sizes --timeout 60
now=$base
for _ in $(seq 50); do
  now=$(fds "$echo_pid")
  ((now <= base)) && break
  sleep 0.1
done
((now <= base)) || fail "keel-echo holds $now open files 5 s after the resets, $base before: reset connections were never closed"
stop_echo echo
pass "200 mid-transfer resets: keel-echo kept serving and closed them all ($now open files, $base before)"
