#!/usr/bin/env bash
# keel-echo's command line: --help works; a bad option is refused; and a
# port another listener already holds (a plain socket, or another
# keel-echo with SO_REUSEPORT) fails fast with a clear message and a
# non-zero exit status.
source "$(dirname "$0")/echo_lib.sh"

"$echo_bin" --help >"$work/help.out" 2>&1 || fail "--help exited with status $?"
for opt in --port --bind --shards --backend --max-conns --steer --help; do
  grep -q -- "$opt" "$work/help.out" || fail "--help does not mention $opt"
done
"$echo_bin" --no-such-option >"$work/badopt.out" 2>&1
rc=$?
[[ $rc -ne 0 ]] || fail "an unknown option exited 0"
grep -q 'no-such-option' "$work/badopt.out" || fail "an unknown option is not named in the error"
pass "--help and unknown options"

# expect_busy NAME PORT: keel-echo on PORT must fail within 10 s. Problems
# are collected (both cases run) and reported at the end.
problems=()
expect_busy() {
  local name=$1 p=$2 rc n=${#problems[@]}
  timeout 10 "$echo_bin" --port "$p" --bind 127.0.0.1 --backend "$backend" >"$work/$name.out" 2>&1
  rc=$?
  [[ $rc -eq 124 ]] && problems+=("$name: keel-echo kept running on a port in use")
  grep -q '^keel-echo: listening on' "$work/$name.out" &&
    problems+=("$name: keel-echo claims to listen on a port in use")
  grep -qiE "port $p.*(in use|already)|(in use|already).*port $p" "$work/$name.out" ||
    problems+=("$name: no clear message naming port $p as in use")
  [[ $rc -ne 0 ]] || problems+=("$name: keel-echo exited with status 0 although it could not listen")
  no_sanitizer_report "$name"
  if [[ ${#problems[@]} -eq $n ]]; then
    pass "$name: refused with a clear message and exit status $rc"
  else
    echo "PROBLEM [$backend]: ${problems[-1]}"
  fi
}

# A plain listener holds the port (busy_plain), then another keel-echo (busy_keel).
"$client_bin" listen --timeout 60 >"$work/plain.out" 2>&1 &
plain_pid=$!
pids+=("$plain_pid")
for _ in $(seq 50); do grep -q '^listening' "$work/plain.out" && break; sleep 0.1; done
plain_port=$(awk '/^listening/ {print $2}' "$work/plain.out")
[[ -n $plain_port ]] || fail "the plain listener did not start"
expect_busy busy_plain "$plain_port"
kill "$plain_pid"

# Another keel-echo holds the port.
start_echo first --shards 1
expect_busy busy_keel "$echo_port"
client still sizes --timeout 30 # the first instance is unharmed
stop_echo first
((${#problems[@]} == 0)) || fail "$(printf '%s; ' "${problems[@]}")"
pass "ports held by a plain listener and by another keel-echo are refused"
