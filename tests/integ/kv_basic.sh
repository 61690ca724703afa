#!/usr/bin/env bash
# keel-kv against the real redis-cli: replies and errors as Redis 7 gives
# them, a 10,000-command pipeline spanning both shards answered in order, a
# protocol error closing only its own connection, expiry, and a clean exit
# on SIGTERM (no sanitizer report in the sanitizer build).
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/kv_lib.sh"

start_kv

expect() { # expected-output command...
  local want=$1 got
  shift
  got=$(R "$@" 2>&1)
  [[ $got == "$want" ]] || fail "'$*': got '$got', want '$want'"
}
expect PONG ping
expect hello ping hello
expect OK set greeting hi
expect hi get greeting
expect "" get missing
expect OK set counter 10
expect 11 incr counter
expect 16 incrby counter 5
expect 14 decrby counter 2
expect "ERR value is not an integer or out of range" incr greeting
expect "ERR wrong number of arguments for 'get' command" get
expect "ERR unknown command 'nosuch', with args beginning with: 'a' 'b' " nosuch a b
expect "ERR syntax error" set k v bogus
expect "ERR invalid expire time in 'set' command" set k v EX 0
expect "" set k v XX
expect OK set k v NX
expect "" set k w NX
expect v set k w GET
expect 2 append k2 ab
expect 4 append k2 cd
expect abcd get k2
expect 4 strlen k2
expect 2 del greeting k2 missing
expect 1 exists k
expect OK set short v PX 100
sleep 0.3
expect "" get short

# 10,000 commands in one pipeline, keys on both shards, answered in order.
for i in $(seq 5000); do echo "SET key:$i $i"; echo "GET key:$i"; done >"$work/pipe.txt"
R <"$work/pipe.txt" >"$work/pipe.out" || fail "pipeline failed"
for i in $(seq 5000); do echo OK; echo "$i"; done >"$work/pipe.want"
cmp -s "$work/pipe.out" "$work/pipe.want" || fail "pipeline replies out of order or wrong: $(diff "$work/pipe.out" "$work/pipe.want" | head -5)"
dbsize=$(R dbsize)
[[ $dbsize -eq 5002 ]] || fail "dbsize $dbsize, want 5002"

# A protocol error closes only that connection, after Redis's error line.
exec {bad}<>"/dev/tcp/127.0.0.1/$kv_port"
printf '*1\r\n$x\r\n' >&"$bad"
read -r -t 5 line <&"$bad" || fail "no reply to a malformed command"
[[ ${line%$'\r'} == "-ERR Protocol error: invalid bulk length" ]] || fail "protocol error reply: '$line'"
read -r -t 5 line <&"$bad" && fail "the connection stayed open after a protocol error"
exec {bad}>&-
expect PONG ping

stop_kv
echo "PASS: keel-kv answers redis-cli as Redis does, keeps pipeline order across shards, exits cleanly"
