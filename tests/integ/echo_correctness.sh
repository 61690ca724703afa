#!/usr/bin/env bash
# keel-echo echoes every byte back intact: sizes from 1 B to 4 MiB, a
# stream sent in random pieces with small pauses, pipelined requests, and a
# half-closed stream that must be echoed whole before the server's EOF.
# Then SIGTERM stops it cleanly, and its totals account for every byte.
source "$(dirname "$0")/echo_lib.sh"

start_echo echo --shards 2
client sizes sizes --timeout 60
client split split 1048576 --timeout 60
client split2 split 262144 --timeout 60
client pipeline pipeline 2000 --timeout 30
client halfclose halfclose 1048576 --timeout 30
client halfclose0 halfclose 1 --timeout 30
stop_echo echo
# 1+100+4K+64K+1M+4M, 1M, 256K, the pipeline's lines, 1M, 1: in and out alike.
in=$(total bytes_in echo)
out=$(total bytes_out echo)
[[ -n $in && $in -gt $((7 * 1048576)) ]] || fail "bytes_in=$in, expected more than 7 MiB"
[[ $in -eq $out ]] || fail "bytes_in=$in but bytes_out=$out: some input was not echoed"
[[ $(total accepted echo) -eq 11 ]] || fail "accepted=$(total accepted echo), expected 11 connections"
pass "sizes, split writes, pipelining and half-close all echoed intact; totals: $in bytes in and out"
