#!/usr/bin/env bash
# Out of file descriptors at accept: keel-echo must not spin or lose its
# listener. It backs off, logs at most about once a second, keeps serving
# the connections it has, and accepts again once fds are free.
source "$(dirname "$0")/echo_lib.sh"

command -v prlimit >/dev/null || { echo "SKIP: prlimit (util-linux) not installed"; exit 0; }

# 64 fds in all, soft and hard, so keel cannot raise its own limit.
echo_bin_real=$echo_bin
echo_bin="$work/echo-lowfd"
printf '#!/bin/sh\nexec prlimit --nofile=64:64 "%s" "$@"\n' "$echo_bin_real" >"$echo_bin"
chmod +x "$echo_bin"
start_echo echo --shards 1

# One connection that is served before the fds run out.
exec {early}<>"/dev/tcp/127.0.0.1/$echo_port"
# Far more connections than fds: the kernel completes their handshakes in
# the listen backlog; accept fails with EMFILE once the table is full.
fds=()
for _ in $(seq 150); do
  exec {fd}<>"/dev/tcp/127.0.0.1/$echo_port" || fail "could not connect"
  fds+=("$fd")
done

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
t0=$(cpu_ticks "$echo_pid")
sleep 3
t1=$(cpu_ticks "$echo_pid")
hz=$(getconf CLK_TCK)
# A spinning accept loop would use a whole CPU: 3 s. Allow a tenth of it.
(( (t1 - t0) * 10 < hz * 3 )) || fail "keel-echo used $(( (t1 - t0) * 1000 / hz )) ms of CPU in 3 s while out of fds: it spins"
kill -0 "$echo_pid" 2>/dev/null || fail "keel-echo died when it ran out of fds"
logs=$(grep -c 'accept failed: Too many open files' "$work/echo.out")
(( logs >= 1 )) || fail "no log line about EMFILE"
(( logs <= 5 )) || fail "$logs EMFILE log lines in ~3 s: expected about one a second"
grep -q 'raise the open-file limit' "$work/echo.out" || fail "the EMFILE log line does not say how to fix it"

# The connection served before still echoes.
printf 'ping\n' >&"$early"
read -r -t 5 reply <&"$early" || fail "the early connection got no echo while out of fds"
[[ $reply == ping ]] || fail "the early connection echoed '$reply'"

# Free the fds: the backlog drains (those peers are gone) and new
# connections are accepted and served again.
for fd in "${fds[@]}"; do exec {fd}>&-; done
sleep 0.5
client again conns 10 --timeout 20
exec {early}>&-
stop_echo echo 10
pass "out of fds: no spin ($(( (t1 - t0) * 1000 / hz )) ms CPU in 3 s), $logs log line(s), existing connection served, accepting again after"
