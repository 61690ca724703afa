#!/usr/bin/env bash
# A client that sends and never reads: backpressure must bound keel-echo's
# memory (resident set grows by less than 64 MiB while the client pushes
# for 8 s), and other clients are still echoed meanwhile. Then 8 such
# clients at once on one shard: memory stays bounded and another client's
# echo (up to 4 MiB) still completes within 3 s. (A slow echo connection
# may pin its output limit plus its input limit, 1.25 MiB, of the shard's
# 16 MiB of receive buffers: 8 of them leave more than a third free.)
source "$(dirname "$0")/echo_lib.sh"

limit_kib=$((64 * 1024))
start_echo echo --shards 2
client warm sizes --timeout 30 >/dev/null # touch what a normal echo touches
base=$(rss_kib "$echo_pid")
"$client_bin" noread 8 --port "$echo_port" >"$work/noread.out" 2>&1 &
noread_pid=$!
pids+=("$noread_pid")
max=$base
others=0
end=$((SECONDS + 8))
while kill -0 "$noread_pid" 2>/dev/null; do
  r=$(rss_kib "$echo_pid")
  [[ -n $r && $r -gt $max ]] && max=$r
  if ((SECONDS < end - 1)); then
    # Another client's echo still works while the slow reader pushes.
    "$client_bin" split 65536 --port "$echo_port" --timeout 10 >>"$work/others.out" 2>&1 ||
      fail "another client's echo failed while the slow reader pushed"
    others=$((others + 1))
  fi
  sleep 0.2
done
wait "$noread_pid" || fail "the slow-reader client failed"
r=$(rss_kib "$echo_pid")
[[ $r -gt $max ]] && max=$r
grew=$((max - base))
echo "keel-echo RSS: $base KiB before, $max KiB at most; $(grep -m1 OK "$work/noread.out")"
((others > 0)) || fail "no other client ran while the slow reader pushed"
((grew < limit_kib)) || fail "keel-echo's RSS grew by $grew KiB (limit $limit_kib KiB) with a client that never reads"
pass "RSS grew by $grew KiB with a client that never reads; $others other clients echoed meanwhile"

client after sizes --timeout 30
stop_echo echo

start_echo one --shards 1
client warm1 sizes --timeout 30 >/dev/null
base=$(rss_kib "$echo_pid")
slow=()
for i in $(seq 8); do
  "$client_bin" noread 5 --port "$echo_port" >"$work/noread$i.out" 2>&1 &
  slow+=($!)
  pids+=($!)
done
sleep 1.5
t0=$EPOCHREALTIME
"$client_bin" sizes --port "$echo_port" --timeout 3 >"$work/among_slow.out" 2>&1
rc=$?
secs=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.2f", b - a}')
r8=$(rss_kib "$echo_pid")
for p in "${slow[@]}"; do wait "$p" || fail "a slow-reader client failed"; done
[[ $rc -eq 0 ]] || fail "with 8 clients that never read on one shard, another client's echo did not complete within 3 s (took $secs s): $(grep -m1 FAIL "$work/among_slow.out")"
grew8=$((r8 - base))
((grew8 < limit_kib)) || fail "keel-echo's RSS grew by $grew8 KiB (limit $limit_kib KiB) with 8 clients that never read"
client after1 sizes --timeout 30
stop_echo one
pass "8 clients that never read on one shard: RSS grew by $grew8 KiB; another client's echo took $secs s"
