#!/usr/bin/env bash
# keel-kv snapshots and AOF rewrites under a concurrent writer, 2 shards.
#  - The replies and INFO fields of SAVE / BGSAVE / LASTSAVE / BGREWRITEAOF,
#    and CONFIG SET appendonly yes writing the AOF files.
#  - 200,000 keys k000000.. preloaded with 0; kv_writer (one connection,
#    pipelined, in key order) sets them all to 1, then 2, ...; a BGSAVE in
#    the middle of it: each shard's dump.rdb.<shard> must be one point in
#    time of that shard, i.e. in key order a run of R+1 then a run of R.
#    Restarted from the snapshot (appendonly no): DBSIZE and every value
#    as in the files.
#  - The same writer with appendonly yes, BGREWRITEAOF twice while it
#    writes; the writer stops and reports where; SIGTERM; after a restart
#    every key has the last value the writer was acknowledged.
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/kv_lib.sh"
writer=${2:?usage: $0 KEEL_KV_BIN KV_WRITER}
source "$(dirname "$0")/kv_persist_lib.sh"
need awk
nkeys=200000

# info_field NAME: the value of NAME in INFO persistence.
info_field() { R info persistence | tr -d '\r' | sed -n "s/^$1://p"; }
# wait_info NAME VALUE [SECONDS]
wait_info() {
    for _ in $(seq $((${3:-30} * 10))); do
        [[ $(info_field "$1") == "$2" ]] && return 0
        sleep 0.1
    done
    fail "INFO $1 still '$(info_field "$1")' after ${3:-30} s, want $2"
}
expect() { # expected-output command...
    local want=$1 got
    shift
    got=$(R "$@" 2>&1)
    [[ $got == "$want" ]] || fail "'$*': got '$got', want '$want'"
}

# ---- quick checks -------------------------------------------------------------------
mkdir -p "$work/q"
start_kv --appendonly no --save "" --dir "$work/q"
expect OK set a 1
expect OK mset b 2 c 3
for f in rdb_bgsave_in_progress rdb_last_bgsave_status aof_enabled aof_rewrite_in_progress \
    aof_last_write_status aof_last_bgrewrite_status rdb_last_save_time rdb_changes_since_last_save; do
    [[ -n $(info_field $f) ]] || fail "INFO persistence has no $f"
done
[[ $(info_field aof_enabled) == 0 ]] || fail "aof_enabled $(info_field aof_enabled) with appendonly no"
t0=$(R lastsave)
[[ $t0 =~ ^[0-9]+$ ]] || fail "LASTSAVE: '$t0'"
sleep 1.1
expect OK save
t1=$(R lastsave)
((t1 > t0)) || fail "LASTSAVE $t0 then $t1 after SAVE, want it to increase"
[[ -s $work/q/dump.rdb.0 && -s $work/q/dump.rdb.1 ]] || fail "SAVE wrote no dump.rdb.0/1"
[[ $(info_field rdb_changes_since_last_save) == 0 ]] || fail "rdb_changes_since_last_save not 0 after SAVE"
expect OK set d 4
expect "Background saving started" bgsave
wait_info rdb_bgsave_in_progress 0
[[ $(info_field rdb_last_bgsave_status) == ok ]] || fail "rdb_last_bgsave_status $(info_field rdb_last_bgsave_status)"
[[ $(info_field aof_last_write_status) == ok ]] || fail "aof_last_write_status $(info_field aof_last_write_status)"
expect OK config set appendonly yes
for _ in $(seq 50); do
    [[ -s $work/q/appendonlydir/appendonly.aof.0 && -s $work/q/appendonlydir/appendonly.aof.1 ]] && break
    sleep 0.1
done
[[ -s $work/q/appendonlydir/appendonly.aof.0 && -s $work/q/appendonlydir/appendonly.aof.1 ]] ||
    fail "CONFIG SET appendonly yes: no appendonlydir/appendonly.aof.0 and .1"
wait_info aof_rewrite_in_progress 0
[[ $(info_field aof_enabled) == 1 ]] || fail "aof_enabled $(info_field aof_enabled) after CONFIG SET appendonly yes"
[[ $(R config get appendonly | tail -1) == yes ]] || fail "CONFIG GET appendonly: $(R config get appendonly)"
expect OK set e 5
expect "Background append only file rewriting started" bgrewriteaof
wait_info aof_rewrite_in_progress 0
[[ $(info_field aof_last_bgrewrite_status) == ok ]] || fail "aof_last_bgrewrite_status $(info_field aof_last_bgrewrite_status)"
stop_kv
start_kv --appendonly yes --dir "$work/q"
[[ $(R mget a b c d e | tr '\n' ' ') == "1 2 3 4 5 " ]] || fail "after CONFIG SET appendonly yes and a restart: $(R mget a b c d e | tr '\n' ' ')"
stop_kv
echo "quick checks: SAVE/BGSAVE/LASTSAVE/BGREWRITEAOF replies, INFO persistence, CONFIG SET appendonly yes"

# ---- BGSAVE under a writer ----------------------------------------------------------
# check_dump FILE: prints "KEYS HI LO SPLIT" (SPLIT: keys with HI) or
# fails unless, in key order, the values are a run of HI then of LO=HI-1
# (or all equal). Also writes FILE.kv: "key value" lines.
check_dump() {
    tr -d '\r' <"$1" | awk -v out="$1.kv" '
        function next_line() { if ((getline l) <= 0) { print "truncated"; exit 1 } return l }
        {
            if ($0 !~ /^\*[0-9]+$/) { print "bad record start: " $0; exit 1 }
            n = substr($0, 2) + 0
            for (i = 0; i < n; i++) { next_line(); a[i] = next_line() }
            if (a[0] == "KEEL-KV") next
            if (a[0] != "SET" || n != 3) { print "unexpected record: " a[0] " " a[1]; exit 1 }
            print a[1], a[2] > out
        }' || return 1
    sort -o "$1.kv" "$1.kv"
    awk '
        NR == 1 { hi = $2; lo = $2; prev = $2 }
        { if ($2 > prev) { print "value rises at " $1 ": " prev " then " $2; exit 1 }
          if ($2 < lo) lo = $2
          if (hi - lo > 1) { print "values " hi " and " lo " in one shard snapshot"; exit 1 }
          if ($2 == hi) nsplit++
          prev = $2 }
        END { if (NR) print NR, hi, lo, nsplit + 0 }' "$1.kv"
}

dir=$work/snap
mkdir -p "$dir"
start_kv --appendonly no --save "" --dir "$dir"
"$writer" rounds "$kv_port" "$work/pre" -k $nkeys -d 256 -r 0 -R 0 >"$work/writer.out" || fail "preload: $(cat "$work/writer.out")"
"$writer" rounds "$kv_port" "$work/status" -k $nkeys -d 64 -r 1 >"$work/writer.out" 2>&1 &
wpid=$!
for _ in $(seq 100); do
    [[ -s $work/status.progress ]] && break
    sleep 0.05
done
sleep 0.4
expect "Background saving started" bgsave
wait_info rdb_bgsave_in_progress 0 60
[[ $(info_field rdb_last_bgsave_status) == ok ]] || fail "rdb_last_bgsave_status $(info_field rdb_last_bgsave_status)"
kill -USR1 "$wpid"
wait "$wpid" || fail "writer: $(cat "$work/writer.out")"
total=0
for s in 0 1; do
    f=$dir/dump.rdb.$s
    [[ -s $f ]] || fail "no $f after BGSAVE"
    res=$(check_dump "$f") || fail "$f is not one point in time of shard $s: $res"
    read -r n hi lo split <<<"$res"
    echo "shard $s snapshot: $n keys, $split with $hi then $((n - split)) with $lo"
    total=$((total + n))
done
((total == nkeys)) || fail "the snapshots hold $total keys, want $nkeys"
mkdir -p "$work/snap2"
cp "$dir"/dump.rdb.0 "$dir"/dump.rdb.1 "$work/snap2/"
stop_kv
start_kv --appendonly no --save "" --dir "$work/snap2"
grep -q "loaded .* keys from .*dump.rdb" "$work/kv.out" || fail "no 'loaded N keys from ...dump.rdb' line"
expect $nkeys dbsize
sort "$work/snap"/dump.rdb.[01].kv >"$work/want.kv"
[[ $(wc -l <"$work/want.kv") -eq $nkeys ]] || fail "parsed $(wc -l <"$work/want.kv") keys from the snapshots"
awk '{ print "V", $1, $2 }' "$work/want.kv" >"$work/want.v"
"$writer" check "$kv_port" "$work/want.v" >"$work/check.out" ||
    fail "values after a restart from the snapshot differ from the files: $(cat "$work/check.out")"
stop_kv
echo "BGSAVE under a writer: each shard's snapshot is one point in time; a restart loads all $nkeys keys"

# ---- BGREWRITEAOF under a writer ----------------------------------------------------
dir=$work/aof
mkdir -p "$dir"
rm -f "$work/status" "$work/status.progress"
start_kv --appendonly yes --appendfsync everysec --save "" --dir "$dir"
"$writer" rounds "$kv_port" "$work/pre" -k $nkeys -d 256 -r 0 -R 0 >"$work/writer.out" || fail "preload: $(cat "$work/writer.out")"
"$writer" rounds "$kv_port" "$work/status" -k $nkeys -d 64 -r 1 >"$work/writer.out" 2>&1 &
wpid=$!
sleep 0.7
for _ in 1 2; do
    expect "Background append only file rewriting started" bgrewriteaof
    wait_info aof_rewrite_in_progress 0 60
    [[ $(info_field aof_last_bgrewrite_status) == ok ]] || fail "aof_last_bgrewrite_status $(info_field aof_last_bgrewrite_status)"
    sleep 0.3
done
kill -USR1 "$wpid"
wait "$wpid" || fail "writer: $(cat "$work/writer.out")"
echo "writer: $(cat "$work/writer.out")"
stop_kv 30
start_kv --appendonly yes --appendfsync everysec --save "" --dir "$dir"
grep -q "loaded .* keys from .*appendonly.aof" "$work/kv.out" || fail "no 'loaded N keys from ...aof' line"
expect $nkeys dbsize
"$writer" checkrounds "$kv_port" "$work/status" -k $nkeys >"$work/check.out" || fail "after BGREWRITEAOF and a restart: $(cat "$work/check.out")"
stop_kv
echo "PASS: snapshot per shard is a point in time under writes, loads back; BGREWRITEAOF under writes loses nothing"
