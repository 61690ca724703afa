#!/usr/bin/env bash
# SIGTERM with 1,000 open connections: keel-echo closes them, exits 0 in
# under 10 s and prints its totals (with no sanitizer report in the
# sanitizer build).
source "$(dirname "$0")/echo_lib.sh"

start_echo echo --shards 2
"$client_bin" hold 1000 --port "$echo_port" --timeout 30 >"$work/hold.out" 2>&1 &
hold_pid=$!
pids+=("$hold_pid")
for _ in $(seq 300); do
  grep -q '^holding 1000' "$work/hold.out" && break
  kill -0 "$hold_pid" 2>/dev/null || break
  sleep 0.1
done
grep -q '^holding 1000' "$work/hold.out" || fail "the client did not get 1,000 connections verified"
stop_echo echo 10
wait "$hold_pid" || fail "the client did not see all 1,000 connections closed: $(grep -m1 FAIL "$work/hold.out")"
acc=$(total accepted echo)
[[ $acc -eq 1000 ]] || fail "totals say accepted=$acc, expected 1000"
grep -q "^keel-echo: shard 1: accepted=" "$work/echo.out" || fail "no totals for shard 1"
pass "SIGTERM with 1,000 open connections: exit 0 after $stop_secs s, totals printed, all connections closed"
