#!/usr/bin/env bash
# keel-top against a real keel-echo: --once prints a plain snapshot with
# every shard and the main group; the live view renders in a terminal
# (a detached tmux session on a server of our own, fixed size), fits a
# smaller one, says "disconnected, retrying" when the app goes away and
# recovers when it comes back, and quits on q restoring the terminal.
# Error messages name the problem and the fix; a server sending garbage,
# escape sequences, chunked or error replies does not break it.
#   keel_top.sh KEEL_TOP KEEL_ECHO
# Loopback only. Everything it starts is killed on exit.
set -uo pipefail

top_bin=$1
echo_bin=$2

work=$(mktemp -d)
tmux_sock="keel-top-test-$$"
pids=()
cleanup() {
  tmux -L "$tmux_sock" kill-server 2>/dev/null
  rm -f "${TMUX_TMPDIR:-/tmp}/tmux-$(id -u)/$tmux_sock" # the server leaves its socket
  for p in "${pids[@]}"; do
    { kill -9 "$p" && wait "$p"; } 2>/dev/null # no "Killed" job reports
  done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 1' TERM INT # so that a timeout's kill still cleans up

fail() {
  echo "FAIL: $*"
  for f in "$work"/*.out "$work"/*.pane; do
    [[ -e $f ]] || continue
    echo "--- $(basename "$f") (last 40 non-blank lines)"
    grep -v '^$' "$f" | tail -n 40
  done
  exit 1
}
pass() { echo "PASS: $*"; }

no_sanitizer_report() { # FILE...
  if grep -qE 'LeakSanitizer|AddressSanitizer|runtime error:' "$@"; then
    fail "sanitizer report in $*"
  fi
}

# start_echo NAME [options...]: keel-echo on 127.0.0.1 with a metrics
# server; sets echo_pid, echo_port, metrics_port and shards.
start_echo() {
  local name=$1 line
  shift
  "$echo_bin" --bind 127.0.0.1 --port 0 --metrics-address 127.0.0.1 "$@" >"$work/$name.out" 2>&1 &
  echo_pid=$!
  pids+=("$echo_pid")
  for _ in $(seq 100); do
    grep -q '^keel-echo: listening on' "$work/$name.out" && break
    kill -0 "$echo_pid" 2>/dev/null || break
    sleep 0.1
  done
  line=$(grep -m1 '^keel-echo: listening on' "$work/$name.out") ||
    fail "keel-echo ($name) did not start listening within 10 s"
  echo_port=$(sed -E 's/.* port ([0-9]+),.*/\1/' <<<"$line")
  shards=$(sed -E 's/.*, ([0-9]+) shards?,.*/\1/' <<<"$line")
  metrics_port=$(grep -m1 -oE 'metrics on http://127\.0\.0\.1:[0-9]+/metrics' "$work/$name.out" |
    sed -E 's/.*:([0-9]+)\/metrics/\1/')
  [[ $echo_port =~ ^[0-9]+$ && $shards =~ ^[0-9]+$ ]] || fail "cannot read keel-echo's start line: $line"
  [[ $metrics_port =~ ^[0-9]+$ ]] || fail "keel-echo ($name) logged no 'metrics on http://...' line"
}

stop_echo() {
  kill -TERM "$echo_pid" 2>/dev/null
  for _ in $(seq 100); do
    kill -0 "$echo_pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -0 "$echo_pid" 2>/dev/null && fail "keel-echo still running 10 s after SIGTERM"
  wait "$echo_pid" 2>/dev/null
}

# A port nobody listens on: bound by nobody once the probe closes it.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

command -v tmux >/dev/null || fail "tmux not found (tools/deps.sh installs it)"

# ---- the command line ------------------------------------------------------

"$top_bin" --help >"$work/help.out" 2>&1 || fail "--help exited with status $?"
for opt in --delay --iterations --once HOST:PORT; do
  grep -q -- "$opt" "$work/help.out" || fail "--help does not mention $opt"
done
for bad in "" "host:" "1.2.3.4:99999" "::1:80" "-d 0 9100" "-n 0 9100" "--bogus 9100" "a b"; do
  # shellcheck disable=SC2086 # split on purpose: each case is a command line
  "$top_bin" $bad >"$work/bad.out" 2>&1
  rc=$?
  [[ $rc -eq 2 ]] || fail "'keel-top $bad' exited $rc, expected 2"
  grep -q '^keel-top: ' "$work/bad.out" || fail "'keel-top $bad' printed no message"
done
pass "--help, and bad command lines are refused with a message"

# ---- --once against the real app -----------------------------------------

start_echo echo1 --metrics-port 0
"$top_bin" --once "127.0.0.1:$metrics_port" >"$work/once.out" 2>&1 ||
  fail "--once exited with status $?"
grep -q $'\033' "$work/once.out" && fail "--once output has escape sequences"
grep -qE "^keel-top  keel-echo \((io_uring|epoll)\) .* 127\.0\.0\.1:$metrics_port  shards $shards " \
  "$work/once.out" || fail "--once: no header with the app, backend, address and shard count"
for ((s = 0; s < shards; s++)); do
  # Shard rows: CPU% and SLEEP% are numbers (rates from the two scrapes).
  grep -qE "^ +$s +[0-9.]+ +[0-9.]+ +[0-9.kMG]+ +[0-9.kMG]+ " "$work/once.out" ||
    fail "--once: no row with rates for shard $s"
  grep -qE "^ +$s main +[0-9]+ " "$work/once.out" || fail "--once: no main group row for shard $s"
done
# The same, written as the URL the app logs, and as PORT alone.
"$top_bin" --once -d 0.2 "http://127.0.0.1:$metrics_port/metrics" >"$work/once_url.out" 2>&1 ||
  fail "--once with a URL exited with status $?"
"$top_bin" --once -d 0.2 "$metrics_port" >"$work/once_port.out" 2>&1 ||
  fail "--once with PORT alone exited with status $?"
{ grep -q '^ *0 main' "$work/once_url.out" && grep -q '^ *0 main' "$work/once_port.out"; } ||
  fail "--once with a URL or a bare port shows no groups"
pass "--once prints the header, $shards shard rows with rates and the main group"

# ---- error messages --------------------------------------------------------

closed=$(free_port)
"$top_bin" --once "127.0.0.1:$closed" >"$work/closed.out" 2>&1
rc=$?
[[ $rc -eq 1 ]] || fail "--once against a closed port exited $rc, expected 1"
grep -qF "keel-top: cannot connect to 127.0.0.1:$closed: Connection refused — is the app running with --metrics-port $closed?" \
  "$work/closed.out" || fail "no clear message for a closed port: $(cat "$work/closed.out")"
"$top_bin" --once "[::1]:$closed" >"$work/closed6.out" 2>&1
[[ $? -eq 1 ]] || fail "--once against [::1]:$closed did not fail"
grep -qF "keel-top: cannot connect to [::1]:$closed: " "$work/closed6.out" ||
  fail "no clear message for [::1]:$closed: $(cat "$work/closed6.out")"
"$top_bin" --once "127.0.0.1:$echo_port" >"$work/notmetrics.out" 2>&1
[[ $? -eq 1 ]] || fail "--once against the echo port (not HTTP) did not fail"
grep -qF "did not answer in HTTP — is $echo_port the app's --metrics-port, not its service port?" \
  "$work/notmetrics.out" || fail "no clear message for a non-HTTP port: $(cat "$work/notmetrics.out")"
"$top_bin" --once "http://127.0.0.1:$metrics_port/nothing-here" >"$work/404.out" 2>&1
[[ $? -eq 1 ]] || fail "--once against a missing path did not fail"
grep -q "answered \"HTTP/1.[01] 404" "$work/404.out" || fail "no clear message for a 404: $(cat "$work/404.out")"
pass "a closed port, a service port and a 404 each fail with a message naming the fix"

# ---- the live view in a terminal ------------------------------------------

tm() { tmux -L "$tmux_sock" -f /dev/null "$@"; }
pane() { tm capture-pane -p -t top >"$work/$1.pane" 2>/dev/null; }
# wait_pane NAME SECONDS REGEX: until the pane shows a line matching REGEX.
wait_pane() {
  for _ in $(seq $(($2 * 10))); do
    pane "$1"
    grep -qE "$3" "$work/$1.pane" && return 0
    sleep 0.1
  done
  return 1
}
# wait_pane_without NAME SECONDS REGEX: until no line matches REGEX.
wait_pane_without() {
  for _ in $(seq $(($2 * 10))); do
    pane "$1"
    grep -qE "$3" "$work/$1.pane" || return 0
    sleep 0.1
  done
  return 1
}

# After keel-top exits, the shell records its status and the terminal's
# modes, then waits for Enter, so the pane can be inspected before it closes.
tm new-session -d -s top -x 160 -y 50 \
  "'$top_bin' 127.0.0.1:$metrics_port 2>'$work/top_live.out'; echo \$? >'$work/top.status'; stty -a >'$work/stty.out'; echo ended; read -r _" ||
  fail "cannot start tmux"
top_pid=$(tm display-message -p -t top '#{pane_pid}')

# Traffic: three connections that echo a line every 50 ms.
for c in 1 2 3; do
  (
    exec 3<>"/dev/tcp/127.0.0.1/$echo_port" || exit 1
    while :; do
      echo "keel-top traffic $c" >&3 || exit 0
      read -r -t 2 _ <&3 || exit 0
      sleep 0.05
    done
  ) &
  pids+=($!)
done
sleep 3
wait_pane live 10 "^ +$((shards - 1)) +[0-9.]+ +[0-9.]+ " || fail "the live view shows no shard rates"
grep -qE "^keel-top  keel-echo \((io_uring|epoll)\) .* 127\.0\.0\.1:$metrics_port  shards $shards " \
  "$work/live.pane" || fail "the live view has no header"
for ((s = 0; s < shards; s++)); do
  grep -qE "^ +$s +[0-9.]+ +[0-9.]+ +[0-9.kMG]+ +[0-9.kMG]+ +[0-9.kMG]+ +[0-9.kMG]+ " \
    "$work/live.pane" || fail "the live view has no row with numbers for shard $s"
  grep -qE "^ +$s main +1000 +[0-9.]+ " "$work/live.pane" || fail "no main group row for shard $s"
done
# CONNS, the 10th column, summed over the shard rows: our three connections
# (and the scrape's own, which the app counts too).
conns=$(awk '/^SHARD GROUP/ {exit} /^ +[0-9]+ / {n += $10} END {print n + 0}' "$work/live.pane")
[[ $conns -ge 3 && $conns -le 4 ]] || fail "the live view counts $conns connections, expected 3 or 4"
[[ $(tm display-message -p -t top '#{cursor_flag}') == 0 ]] || fail "the cursor is not hidden"
pass "the live view renders the header, $shards shards with numbers, $conns connections, main groups"

# A smaller terminal: lines are cut, not wrapped; rows past the bottom are
# replaced by a note, not scrolled.
tm resize-window -t top -x 70 -y 8
wait_pane small 5 'more: enlarge' || fail "a short terminal shows no '(more ...)' note"
grep -q 'NET-TX' "$work/small.pane" && fail "a narrow terminal still shows the last columns"
grep -q '^SHARD' "$work/small.pane" || fail "a narrow terminal lost the table header"
awk 'length > 70 {exit 1}' "$work/small.pane" || fail "a line is wider than the terminal"
tm resize-window -t top -x 160 -y 50
pass "a 70x8 terminal gets clipped lines and a note"

# The app goes away, then comes back on the same metrics port.
stop_echo
wait_pane gone 10 'disconnected, retrying: cannot connect' ||
  fail "no 'disconnected, retrying' after the app stopped"
kill -0 "$top_pid" 2>/dev/null || fail "keel-top exited when the app stopped"
start_echo echo2 --metrics-port "$metrics_port"
wait_pane_without back 10 'disconnected' || fail "still 'disconnected' after the app came back"
# The first scrape of the new app has no rates (its counters restarted):
# the next one has.
wait_pane back 10 "^ +0 +[0-9.]+ +[0-9.]+ " || fail "no rates after the app came back"
pass "'disconnected, retrying' while the app is down; recovers when it is back"

# q quits, with the terminal as it was: echo and canonical mode back, the
# cursor visible; then the session ends.
tm send-keys -t top q
for _ in $(seq 50); do
  [[ -s $work/top.status ]] && break
  sleep 0.1
done
[[ -s $work/top.status ]] || fail "keel-top did not exit within 5 s of q"
[[ $(cat "$work/top.status") -eq 0 ]] || fail "keel-top exited with status $(cat "$work/top.status") on q"
wait_pane ended 5 '^ended' || fail "the pane did not get back to the shell"
{ grep -qE '(^| )icanon( |$)' "$work/stty.out" && grep -qE '(^| )echo( |$)' "$work/stty.out"; } ||
  fail "the terminal was left in raw mode: $(cat "$work/stty.out")"
[[ $(tm display-message -p -t top '#{cursor_flag}') == 1 ]] || fail "the cursor was left hidden"
tm send-keys -t top Enter
for _ in $(seq 50); do
  tm has-session -t top 2>/dev/null || break
  sleep 0.1
done
tm has-session -t top 2>/dev/null && fail "the tmux session is still there after keel-top quit"
pass "q quits with status 0, restores the terminal, and the session ends"

stop_echo
no_sanitizer_report "$work"/*.out

# ---- a hostile or broken server --------------------------------------------

if ! command -v python3 >/dev/null; then
  echo "SKIP: python3 not found: the broken-server cases did not run"
  exit 0
fi
# Serves a canned reply per path, one connection at a time.
cat >"$work/server.py" <<'PY'
import os, random, socket, sys
random.seed(1)
good = (b'keel_info{app="x\\"\x1b[31m\x07y",backend="\x1b]0;pwned\x07"} 1\n'
        b'keel_tasks_total{shard="0"} 10\nkeel_tasks_total{shard="1"} NaN\n'
        b'keel_tasks_total{shard="99999999999"} 1\nkeel_tasks_total{shard="-1"} 1\n'
        b'keel_cpu_seconds_total{shard="0"} +Inf\nkeel_net_connections{shard="0"} -5\n'
        b'keel_memory_allocated_bytes{shard="0"} 1e300\n'
        b'keel_sched_group_shares{shard="0",group="\x1b[2J' + b'g' * 300 + b'"} 1e308\n'
        b'keel_sched_group_shares{shard="0",group="main"} -1\n')
bodies = {
    "/garbage": bytes(random.getrandbits(8) for _ in range(20000)),
    "/hostile": good,
    "/empty": b"",
    "/other": b"# HELP up x\nup 1\n",
}
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0))
s.listen(16)
print(s.getsockname()[1], flush=True)
scrapes = 0
while True:
    c, _ = s.accept()
    scrapes += 1
    req = b""
    while b"\r\n\r\n" not in req:
        d = c.recv(4096)
        if not d:
            break
        req += d
    path = req.split(b" ")[1].decode() if req.count(b" ") >= 2 else "/"
    if path == "/stalls":
        b = b'keel_stalls_total{shard="0"} %d\n' % scrapes
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(b) + b)
    elif path == "/chunked":
        body = b"keel_tasks_total{shard=\"0\"} 5\n"
        c.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" +
                  b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (10, body[:10], len(body) - 10, body[10:]))
    elif path == "/truncated":
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nkeel_tasks_total 1\n")
    elif path == "/bad-status":
        c.sendall(b"HTTP/1.1 500 Internal\r\nContent-Length: 0\r\n\r\n")
    elif path == "/headers-forever":
        c.sendall(b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 10)
    else:
        b = bodies.get(path, b"")
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(b) + b)
    c.close()
PY
python3 "$work/server.py" >"$work/server.port" 2>"$work/server.out" &
pids+=($!)
for _ in $(seq 50); do
  [[ -s $work/server.port ]] && break
  sleep 0.1
done
sport=$(cat "$work/server.port")
[[ $sport =~ ^[0-9]+$ ]] || fail "the test server did not start"

# run_case PATH STATUS: keel-top --once must exit STATUS, not crash.
run_case() {
  local path=$1 want=$2 rc
  timeout 20 "$top_bin" --once -d 0.1 "http://127.0.0.1:$sport$path" >"$work/case.out" 2>&1
  rc=$?
  [[ $rc -eq $want ]] || fail "keel-top on $path exited $rc, expected $want"
  no_sanitizer_report "$work/case.out"
  # Nothing from the server reaches the terminal raw: no ESC, no BEL.
  if grep -q $'[\033\007]' "$work/case.out"; then
    fail "server bytes reached the output unsanitized on $path"
  fi
}
run_case /garbage 0
grep -q 'malformed lines ignored' "$work/case.out" || fail "garbage is not reported as malformed lines"
grep -q 'no keel_\* metrics' "$work/case.out" || fail "garbage does not say there are no keel metrics"
run_case /hostile 0
grep -qE '^ +0 ' "$work/case.out" || fail "the hostile page lost shard 0"
grep -qE '^ +99999999999 ' "$work/case.out" && fail "an absurd shard number became a row"
run_case /empty 0
run_case /other 0
grep -q 'no keel_\* metrics' "$work/case.out" || fail "a non-keel page is not called out"
run_case /chunked 0
{ grep -qE '^ +0 ' "$work/case.out" && ! grep -q 'malformed' "$work/case.out"; } ||
  fail "a chunked reply was not decoded"
run_case /stalls 0
grep -qE '^ +0 .* [0-9]+\(\+1\) ' "$work/case.out" || fail "a stall between two scrapes is not marked (+1)"
run_case /truncated 1
grep -q 'cut short' "$work/case.out" || fail "a short body is not reported"
run_case /bad-status 1
grep -q 'answered "HTTP/1.1 500 Internal"' "$work/case.out" || fail "a 500 is not reported"
run_case /headers-forever 1
grep -q 'closed before the HTTP headers ended' "$work/case.out" || fail "unterminated headers are not reported"
pass "garbage, hostile labels, chunked, truncated and error replies are handled; new stalls marked"
