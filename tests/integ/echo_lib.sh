# Shared by the echo_*.sh integration tests: starts and stops keel-echo,
# and fails with the programs' output. Each script is run as
#   echo_NAME.sh BACKEND KEEL_ECHO ECHO_CLIENT
# with BACKEND uring or epoll. Everything it starts is killed on exit.
set -uo pipefail

backend=$1
echo_bin=$2
client_bin=$3
case $backend in
  uring) backend_name=io_uring ;;
  epoll) backend_name=epoll ;;
  *) echo "usage: $0 uring|epoll KEEL_ECHO ECHO_CLIENT"; exit 2 ;;
esac

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 1' TERM INT # so that a timeout's kill still cleans up

fail() {
  echo "FAIL [$backend]: $*"
  for f in "$work"/*.out; do
    [[ -e $f ]] || continue
    echo "--- $(basename "$f") (last 40 lines)"
    tail -n 40 "$f"
  done
  exit 1
}
pass() { echo "PASS [$backend]: $*"; }

# start_echo NAME [keel-echo options...]: starts keel-echo on 127.0.0.1, an
# ephemeral port, the backend under test; sets echo_pid and echo_port.
start_echo() {
  local name=$1 line
  shift
  "$echo_bin" --port 0 --bind 127.0.0.1 --backend "$backend" "$@" >"$work/$name.out" 2>&1 &
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
  [[ $echo_port =~ ^[0-9]+$ && $echo_port -gt 0 ]] || fail "no port in the startup line: $line"
  grep -q "backend $backend_name" <<<"$line" || fail "asked for $backend_name, got: $line"
}

# client NAME ARGS...: runs echo_client against the server; fails the test
# if it fails.
client() {
  local name=$1
  shift
  "$client_bin" "$@" --port "$echo_port" >"$work/$name.out" 2>&1 ||
    fail "echo_client $* failed: $(grep -m1 FAIL "$work/$name.out")"
  grep -m1 '^echo_client: OK' "$work/$name.out"
}

# no_sanitizer_report NAME: the program's output has no ASan/LSan/UBSan report.
no_sanitizer_report() {
  if grep -qE 'LeakSanitizer|AddressSanitizer|runtime error:' "$work/$1.out"; then
    fail "sanitizer report in $1's output"
  fi
}

# stop_echo NAME [SECONDS]: SIGTERM; keel-echo must exit 0 within SECONDS
# (10), print its per-shard totals, and show no sanitizer report.
stop_echo() {
  local name=$1 limit=${2:-10} rc t0
  t0=$EPOCHREALTIME
  kill -TERM "$echo_pid"
  for _ in $(seq $((limit * 10))); do
    kill -0 "$echo_pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -0 "$echo_pid" 2>/dev/null && fail "keel-echo ($name) still running $limit s after SIGTERM"
  wait "$echo_pid"
  rc=$?
  stop_secs=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.2f", b - a}')
  [[ $rc -eq 0 ]] || fail "keel-echo ($name) exited with status $rc after SIGTERM, expected 0"
  grep -q '^keel-echo: shard 0: accepted=' "$work/$name.out" || fail "keel-echo ($name) printed no totals"
  grep -q '^keel-echo: total: accepted=' "$work/$name.out" || fail "keel-echo ($name) printed no grand total"
  no_sanitizer_report "$name"
}

# total FIELD NAME: a field of keel-echo's "total:" line (accepted, bytes_in, bytes_out).
total() {
  sed -nE "s/^keel-echo: total: .*$1=([0-9]+).*/\\1/p" "$work/$2.out"
}

# shard_field SHARD FIELD NAME: a field of one shard's totals line.
shard_field() {
  sed -nE "s/^keel-echo: shard $1: .*$2=([0-9]+).*/\\1/p" "$work/$3.out"
}

# rss_kib PID: the process's resident set, in KiB.
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null; }
