#!/usr/bin/env bash
# keel-echo on two shards holds 10,000 connections at once, each one's echo
# verified while all are open; and a burst of 5,000 connects issued at once
# all succeed and are verified. Both shards take a share.
source "$(dirname "$0")/echo_lib.sh"

start_echo echo --shards 2
client conns conns 10000 --window 1000 --timeout 60
client burst burst 5000 --timeout 60
client after sizes --timeout 30
stop_echo echo
acc=$(total accepted echo)
[[ $acc -eq $((10000 + 5000 + 6)) ]] || fail "accepted=$acc, expected 15006"
for s in 0 1; do
  a=$(shard_field $s accepted echo)
  [[ $a -ge 3000 ]] || fail "shard $s accepted only $a of $acc connections"
  o=$(shard_field $s open echo)
  [[ $o -eq 0 ]] || fail "shard $s still had $o connections open at exit"
done
pass "10,000 concurrent and 5,000 burst connections all echoed ($(shard_field 0 accepted echo) on shard 0, $(shard_field 1 accepted echo) on shard 1)"
