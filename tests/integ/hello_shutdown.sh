#!/usr/bin/env bash
# keel-hello started in the background (so it inherits SIGINT ignored, as
# under a shell without job control) must still stop cleanly on SIGINT and
# on SIGTERM: exit 0, statistics printed, and under ASan no leak report.
set -uo pipefail
bin=$1
work=$(mktemp -d)
pid=
trap '[[ -n $pid ]] && kill -9 $pid 2>/dev/null; rm -rf "$work"' EXIT

fail() { echo "FAIL: $*"; echo "--- output"; cat "$work/out"; exit 1; }

for sig in INT TERM; do
  "$bin" --shards 2 >"$work/out" 2>&1 &
  pid=$!
  for _ in $(seq 100); do
    grep -q 'all 2 shards ready' "$work/out" && break
    sleep 0.1
  done
  grep -q 'all 2 shards ready' "$work/out" || fail "keel-hello did not start within 10 s"
  kill -"$sig" "$pid"
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -0 "$pid" 2>/dev/null && fail "SIG$sig: still running 10 s after the signal"
  wait "$pid"
  rc=$?
  pid=
  [[ $rc -eq 0 ]] || fail "SIG$sig: exit status $rc, expected 0"
  grep -q "SIG$sig received: stopping" "$work/out" || fail "SIG$sig: no shutdown log line"
  grep -q '^shard 1 (cpu' "$work/out" || fail "SIG$sig: no per-shard statistics"
  grep -qE 'LeakSanitizer|AddressSanitizer|runtime error' "$work/out" && fail "SIG$sig: sanitizer report"
  echo "PASS: SIG$sig stops keel-hello cleanly"
done
