#!/usr/bin/env bash
# keel's /metrics server, on keel-echo: the output passes `promtool check
# metrics`, has every shard's series, and its counters move with the work
# done; bad requests get an HTTP error and nothing else breaks; /trace/start
# and /trace/stop write a trace; a taken metrics port is a clear error.
#   metrics.sh BACKEND KEEL_ECHO ECHO_CLIENT
source "$(dirname "$0")/echo_lib.sh"

command -v promtool >/dev/null || fail "promtool not found: run tools/deps.sh (package prometheus)"
command -v curl >/dev/null || fail "curl not found: run tools/deps.sh"

shards=$(($(nproc) >= 2 ? 2 : 1))
cd "$work" || exit 1 # /trace/stop?file=NAME writes into the server's working directory

start_echo m --shards "$shards" --metrics-port 0 --metrics-address 127.0.0.1
mline=$(grep -m1 'metrics on http://' "$work/m.out") || fail "no 'metrics on' line at start"
mport=$(sed -nE 's|.*metrics on http://127\.0\.0\.1:([0-9]+)/metrics.*|\1|p' <<<"$mline")
[[ $mport =~ ^[0-9]+$ ]] || fail "no port in: $mline"
pass "metrics announced: ${mline#*: }"

scrape() { curl -sS --max-time 10 "http://127.0.0.1:$mport/metrics" >"$work/$1.prom" || fail "scrape $1 failed"; }
# sum NAME FILE [LABEL_FILTER]: the sum of a family's samples.
sum() {
  awk -v n="$1" -v f="${3:-}" '
    $1 ~ /^#/ { next }
    { name = $1; sub(/\{.*/, "", name) }
    name == n && index($1, f) { s += $2 }
    END { printf "%.0f\n", s }' "$work/$2.prom"
}

scrape a
promtool check metrics <"$work/a.prom" >"$work/promtool.out" 2>&1 ||
  fail "promtool check metrics failed: $(cat "$work/promtool.out")"
[[ -s $work/promtool.out ]] && fail "promtool lint: $(cat "$work/promtool.out")"
pass "promtool check metrics: clean ($(grep -vc '^#' "$work/a.prom") samples)"

for s in $(seq 0 $((shards - 1))); do
  for fam in keel_tasks_total keel_loop_turns_total keel_cpu_seconds_total keel_net_connections \
    keel_sched_group_runtime_seconds_total keel_sched_group_wait_seconds_bucket; do
    grep -q "^$fam{shard=\"$s\"" "$work/a.prom" || fail "no $fam series for shard $s"
  done
done
grep -q '^keel_info{app="keel-echo",backend="' "$work/a.prom" || fail "no keel_info"
grep -q "^keel_shards $shards\$" "$work/a.prom" || fail "keel_shards is not $shards"
grep -q 'group="background"' "$work/a.prom" || fail "no background group series"
pass "every shard has loop, net and group series"

# Work: 200 connections and a few MiB of echo.
client conns conns 200
client split split 4000000
scrape b
for fam in keel_net_accepts_total keel_net_received_bytes_total keel_net_sent_bytes_total \
  keel_loop_turns_total keel_io_completed_total keel_sched_group_tasks_total; do
  a=$(sum "$fam" a) b=$(sum "$fam" b)
  ((b > a)) || fail "$fam did not move with work: $a -> $b"
done
acc=$(($(sum keel_net_accepts_total b) - $(sum keel_net_accepts_total a)))
# 200 + 1 echo connections + the scrape's own connection.
((acc >= 201 && acc <= 203)) || fail "accepts grew by $acc, expected 201 (+ scrapes)"
rx=$(($(sum keel_net_received_bytes_total b) - $(sum keel_net_received_bytes_total a)))
((rx >= 4000000)) || fail "received bytes grew by $rx, expected at least 4000000"
pass "counters move with work: +$acc accepts, +$rx bytes received"

# Bad requests: an HTTP error each, the server keeps serving.
code() { curl -s -o /dev/null -w '%{http_code}' --max-time 10 "$@"; }
[[ $(code "http://127.0.0.1:$mport/nope") == 404 ]] || fail "/nope is not 404"
[[ $(code -X POST "http://127.0.0.1:$mport/metrics") == 405 ]] || fail "POST is not 405"
[[ $(code "http://127.0.0.1:$mport/") == 200 ]] || fail "/ is not 200"
printf 'garbage\r\n\r\n' | timeout 5 bash -c "exec 3<>/dev/tcp/127.0.0.1/$mport; cat >&3; cat <&3" \
  >"$work/garbage.out" 2>&1
grep -q '^HTTP/1.1 400' "$work/garbage.out" || fail "garbage request: $(head -1 "$work/garbage.out")"
head -c 20000 /dev/zero | tr '\0' 'a' |
  timeout 5 bash -c "exec 3<>/dev/tcp/127.0.0.1/$mport; cat >&3; cat <&3" >"$work/big.out" 2>&1
grep -q '^HTTP/1.1 400' "$work/big.out" || fail "oversized request: $(head -1 "$work/big.out")"
for _ in $(seq 20); do # clients that vanish mid-request
  timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$mport; printf 'GET /metr' >&3" 2>/dev/null
done
scrape c
promtool check metrics <"$work/c.prom" >/dev/null 2>&1 || fail "scrape after bad requests invalid"
pass "bad requests: 404, 405, 400, 400; vanishing clients; still serving"

# Tracing at run time through the metrics port.
[[ $(code "http://127.0.0.1:$mport/trace/stop?file=t.json") == 409 ]] ||
  fail "/trace/stop before start is not 409"
[[ $(code "http://127.0.0.1:$mport/trace/start") == 200 ]] || fail "/trace/start failed"
[[ $(code "http://127.0.0.1:$mport/trace/start") == 409 ]] || fail "second /trace/start is not 409"
client split2 split 100000
[[ $(code "http://127.0.0.1:$mport/trace/stop?file=../etc/x") == 400 ]] ||
  fail "/trace/stop with a path is not refused"
[[ $(code "http://127.0.0.1:$mport/trace/stop?file=%2Ftmp%2Fx") == 400 ]] ||
  fail "/trace/stop with an encoded path is not refused"
curl -sS --max-time 20 "http://127.0.0.1:$mport/trace/stop?file=t.json" >"$work/stop.out" ||
  fail "/trace/stop failed"
grep -q "trace written: [0-9]* events to t.json" "$work/stop.out" ||
  fail "/trace/stop said: $(cat "$work/stop.out")"
jq -e '.traceEvents | length > 0' "$work/t.json" >/dev/null || fail "the trace is not valid JSON"
pass "trace via the metrics port: $(cat "$work/stop.out")"

# The port is taken: a clear error naming the option, and a failed start.
"$echo_bin" --port 0 --bind 127.0.0.1 --backend "$backend" --metrics-port "$mport" \
  --metrics-address 127.0.0.1 >"$work/taken.out" 2>&1 &
tpid=$!
pids+=("$tpid")
for _ in $(seq 100); do kill -0 "$tpid" 2>/dev/null || break; sleep 0.1; done
kill -0 "$tpid" 2>/dev/null && fail "keel-echo kept running with its metrics port taken"
wait "$tpid"
trc=$?
((trc != 0)) || fail "keel-echo exited 0 with its metrics port taken"
grep -q "cannot serve metrics on 127.0.0.1 port $mport: .*--metrics-port" "$work/taken.out" ||
  fail "unclear error for a taken port: $(cat "$work/taken.out")"
pass "a taken metrics port: exit $trc, '$(grep -m1 -o 'cannot serve.*' "$work/taken.out")'"

stop_echo m
pass "metrics"
