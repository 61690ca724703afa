#!/usr/bin/env bash
# keel-kv's server behaviour with real clients: MULTI/EXEC atomic across
# shards under a concurrent reader, WATCH invalidated by a write from
# another connection, requirepass, maxmemory's noeviction error, a client
# that never reads its replies closed at the output limit while others go
# on, a config file, and SIGTERM with clients connected (no sanitizer
# report in the sanitizer build).
kv_save_log=/tmp/kv_server_last.out # for a post-mortem of the last run
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/kv_lib.sh"
bg=()

# Two keys on different shards (INFO keel counts keys per shard).
start_kv
shard0_keys() { R info keel | sed -nE 's/^shard0:.*keys=([0-9]+),.*/\1/p'; }
shard_of() { # 0 or 1
  local before after
  before=$(shard0_keys)
  R set "$1" 1 >/dev/null
  after=$(shard0_keys)
  R del "$1" >/dev/null
  [[ $after != "$before" ]] && echo 0 || echo 1
}
ka=probe:a
kb=
for i in $(seq 100); do
  if [[ $(shard_of "probe:$i") != $(shard_of "$ka") ]]; then kb="probe:$i"; break; fi
done
[[ -n $kb ]] || fail "found no two keys on different shards"

# MULTI/EXEC across shards: a reader's transactions never see one key
# updated and the other not.
for i in $(seq 3000); do printf 'MULTI\nSET %s %d\nSET %s %d\nEXEC\n' "$ka" "$i" "$kb" "$i"; done >"$work/w.txt"
for i in $(seq 3000); do printf 'MULTI\nGET %s\nGET %s\nEXEC\n' "$ka" "$kb"; done >"$work/r.txt"
R set "$ka" 0 >/dev/null
R set "$kb" 0 >/dev/null
R <"$work/w.txt" >"$work/w.out" &
bg+=($!)
R <"$work/r.txt" >"$work/r.out" || fail "reader failed"
wait "${bg[-1]}" || fail "writer failed"
# Reader output per transaction: OK QUEUED QUEUED a b
awk 'NR % 5 == 4 { a = $0 } NR % 5 == 0 && a != $0 { bad++ } END { exit bad > 0 }' "$work/r.out" ||
  fail "a reader saw half a transaction: $(awk 'NR % 5 == 4 { a = $0 } NR % 5 == 0 && a != $0 { print a, $0; exit }' "$work/r.out")"
[[ $(R get "$ka") == 3000 && $(R get "$kb") == 3000 ]] || fail "writes lost"

# MSET across shards: a concurrent MGET never sees half of one.
for i in $(seq 3000); do printf 'MSET %s m%d %s m%d\n' "$ka" "$i" "$kb" "$i"; done >"$work/mw.txt"
for i in $(seq 3000); do printf 'MGET %s %s\n' "$ka" "$kb"; done >"$work/mr.txt"
R mset "$ka" m0 "$kb" m0 >/dev/null
R <"$work/mw.txt" >/dev/null &
bg+=($!)
R <"$work/mr.txt" >"$work/mr.out" || fail "MGET reader failed"
wait "${bg[-1]}" || fail "MSET writer failed"
awk 'NR % 2 == 1 { a = $0 } NR % 2 == 0 && a != $0 { bad++ } END { exit bad > 0 }' "$work/mr.out" ||
  fail "an MGET saw half an MSET"

# Active expiry: keys with a TTL that nobody reads again still go.
for i in $(seq 2000); do echo "SET ttl:$i v PX 100"; done | R >/dev/null
sleep 1.5
gone=
for _ in $(seq 30); do
  n=$(R info keyspace | sed -nE 's/^db0:keys=([0-9]+).*/\1/p' | tr -d '\r')
  (( ${n:-0} < 100 )) && { gone=1; break; }
  sleep 0.2
done
[[ -n $gone ]] || fail "active expiry left $n keys of 2000 expired ones"

# WATCH on one connection, a write from another, EXEC fails.
exec {c}<>"/dev/tcp/127.0.0.1/$kv_port"
printf 'WATCH %s %s\r\n' "$ka" "$kb" >&"$c"
read -r -t 5 line <&"$c"
[[ ${line%$'\r'} == "+OK" ]] || fail "WATCH: '$line'"
R set "$kb" changed >/dev/null
printf 'MULTI\r\nSET %s 1\r\nEXEC\r\n' "$ka" >&"$c"
for want in "+OK" "+QUEUED" "*-1"; do
  read -r -t 5 line <&"$c"
  [[ ${line%$'\r'} == "$want" ]] || fail "WATCH then EXEC after another client's write: got '$line', want '$want'"
done
# Unchanged watched keys: EXEC runs.
printf 'WATCH %s\r\nMULTI\r\nSET %s 2\r\nEXEC\r\n' "$ka" "$ka" >&"$c"
for want in "+OK" "+OK" "+QUEUED" "*1" "+OK"; do
  read -r -t 5 line <&"$c"
  [[ ${line%$'\r'} == "$want" ]] || fail "WATCH, no change, EXEC: got '$line', want '$want'"
done
exec {c}>&-

# A client that never reads its replies is closed at the output limit;
# the others go on.
R config set client-output-buffer-limit "normal 1mb 0 0" >/dev/null
head -c 100000 /dev/zero | tr '\0' x >"$work/big"
R -x set big <"$work/big" >/dev/null
exec {s}<>"/dev/tcp/127.0.0.1/$kv_port"
for i in $(seq 200); do printf 'GET big\r\n'; done >&"$s" 2>/dev/null
closed=
for _ in $(seq 50); do
  grep -q 'output buffer over' "$work/kv.out" && { closed=1; break; }
  sleep 0.1
done
[[ -n $closed ]] || fail "a client that never reads was not closed at the output limit"
exec {s}>&- 2>/dev/null
got=$(R ping 2>&1)
[[ $got == PONG ]] || fail "other clients stalled after the slow reader: $got"
R config set client-output-buffer-limit "normal 0 0 0" >/dev/null

# maxmemory with noeviction refuses writes with Redis's error, reads go on.
R del big >/dev/null
R config set maxmemory 200kb >/dev/null
for i in $(seq 4000); do echo "SET fill:$i xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"; done | R >"$work/fill.out"
grep -q "^OOM command not allowed when used memory > 'maxmemory'.$" "$work/fill.out" ||
  fail "no OOM error past maxmemory"
[[ $(R get fill:1) == xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx ]] || fail "reads failed past maxmemory"
R config set maxmemory 0 >/dev/null

# SIGTERM with clients connected.
exec {i1}<>"/dev/tcp/127.0.0.1/$kv_port"
exec {i2}<>"/dev/tcp/127.0.0.1/$kv_port"
printf 'SET held 1\r\n' >&"$i1"
stop_kv
exec {i1}>&- {i2}>&-

# requirepass, from a config file.
# (start_kv's --port 0 must win over the file's port, as redis-server's
# command line wins over its config file; unknown parameters only warn.)
printf '# keel-kv test\nport 7\nrequirepass "s3cret"\nmaxmemory-policy allkeys-lru\nrdbcompression yes\n' >"$work/kv.conf"
start_kv --config "$work/kv.conf"
[[ $kv_port != 7 ]] || fail "the config file's port won over --port on the command line"
[[ $(R ping 2>&1) == "NOAUTH Authentication required." ]] || fail "no NOAUTH before AUTH: $(R ping 2>&1)"
[[ $(R auth wrong 2>&1) == "WRONGPASS invalid username-password pair or user is disabled." ]] ||
  fail "wrong password: $(R auth wrong 2>&1)"
[[ $(R -a s3cret --no-auth-warning ping) == PONG ]] || fail "AUTH with the password failed"
[[ $(R -a s3cret --no-auth-warning config get maxmemory-policy | tail -1) == allkeys-lru ]] ||
  fail "config file not applied"
stop_kv

# A bad option names itself and the fix.
"$kv_bin" --maxmemory lots >"$work/bad.out" 2>&1 && fail "a bad --maxmemory was accepted"
grep -q "maxmemory" "$work/bad.out" || fail "bad option message: $(cat "$work/bad.out")"
echo "PASS: keel-kv transactions are atomic across shards, WATCH, limits, auth, config, SIGTERM"
