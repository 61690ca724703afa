#!/usr/bin/env bash
# keel-kv's blocking commands with real redis-cli clients: waiters are
# served in the order they blocked, by writes from any connection (so from
# any shard) and by MULTI/EXEC; timeouts fire (1 ms precision, generous
# margins for a noisy machine); a client that disconnects while blocked
# gives its turn to the next; BLMOVE to a key on another shard; nothing is
# left blocked; clean exit (no sanitizer report in the sanitizer build).
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/kv_lib.sh"

start_kv

blocked() { R info clients | sed -nE 's/^blocked_clients:([0-9]+).*/\1/p' | tr -d '\r'; }
wait_blocked() { # n
  for _ in $(seq 100); do [[ $(blocked) == "$1" ]] && return 0; sleep 0.05; done
  fail "expected $1 blocked clients, have $(blocked)"
}

# Keys on both shards, to be sure a write on one shard wakes a client of
# the other (connections land on shards by the kernel's hash: over a few
# rounds both combinations occur).
for round in 1 2 3; do
  q="fifo:$round"
  kids=()
  for i in 1 2 3; do
    R blpop "$q" 10 >"$work/fifo$i.out" &
    kids+=($!)
    wait_blocked "$i"
  done
  R rpush "$q" a b c >/dev/null
  wait "${kids[@]}"
  for i in 1 2 3; do
    want=$(printf '%s\n%s' "$q" "$(echo a b c | cut -d' ' -f$i)")
    [[ $(cat "$work/fifo$i.out") == "$want" ]] ||
      fail "round $round: client $i got '$(cat "$work/fifo$i.out")', want '$want' (FIFO order)"
  done
done

# MULTI/EXEC writing two keys wakes a client blocked on either.
R blpop multi:a multi:b 10 >"$work/m.out" &
kid=$!
wait_blocked 1
printf 'MULTI\nRPUSH multi:b x\nSET other 1\nEXEC\n' | R >/dev/null
wait $kid
[[ $(cat "$work/m.out") == $'multi:b\nx' ]] || fail "MULTI/EXEC did not wake: '$(cat "$work/m.out")'"

# Sorted sets.
R bzpopmax zq 10 >"$work/z.out" &
kid=$!
wait_blocked 1
R zadd zq 1 one 2 two >/dev/null
wait $kid
[[ $(cat "$work/z.out") == $'zq\ntwo\n2' ]] || fail "BZPOPMAX: '$(cat "$work/z.out")'"

# Timeouts: 0.1 s returns the null after about that (margins for a noisy VM).
start=$(date +%s%N)
out=$(R blpop never 0.1)
ms=$(( ($(date +%s%N) - start) / 1000000 ))
[[ -z $out ]] || fail "BLPOP timeout replied '$out'"
(( ms >= 90 && ms < 3000 )) || fail "BLPOP 0.1 s timeout took $ms ms"
out=$(R blmove never dst left left 0.05)
[[ -z $out ]] || fail "BLMOVE timeout replied '$out'"

# A client that disconnects while blocked gives its turn to the next.
redis-cli -p "$kv_port" blpop gone 10 >/dev/null & # not R: $! must be redis-cli itself
first=$!
wait_blocked 1
R blpop gone 10 >"$work/second.out" &
kid=$!
wait_blocked 2
kill "$first"
wait "$first" 2>/dev/null
wait_blocked 1
R rpush gone v >/dev/null
wait $kid
[[ $(cat "$work/second.out") == $'gone\nv' ]] || fail "the next waiter did not get the element"

# BLMOVE whose destination may live on another shard: every element moves.
kids=()
for i in $(seq 10); do
  R blmove "src:$i" "dst:$i" right left 10 >/dev/null &
  kids+=($!)
done
wait_blocked 10
for i in $(seq 10); do R rpush "src:$i" "v$i" >/dev/null; done
wait "${kids[@]}"
for i in $(seq 10); do
  [[ $(R lrange "dst:$i" 0 -1) == "v$i" ]] || fail "BLMOVE src:$i -> dst:$i lost its element"
  [[ $(R exists "src:$i") == 0 ]] || fail "BLMOVE left src:$i behind"
done

# Inside MULTI a blocking command does not block.
out=$(printf 'MULTI\nBLPOP none 0\nEXEC\n' | R)
[[ $out == $'OK\nQUEUED' ]] || fail "BLPOP in MULTI: '$out'"
[[ $(blocked) == 0 ]] || fail "clients left blocked"

# SIGTERM with a client blocked.
R blpop forever 0 >/dev/null 2>&1 &
wait_blocked 1
stop_kv
echo "PASS: keel-kv blocking commands: FIFO, cross-shard wake-ups, MULTI, timeouts, disconnects"
