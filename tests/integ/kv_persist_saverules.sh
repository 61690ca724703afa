#!/usr/bin/env bash
# keel-kv's save rules with appendonly no, 2 shards (as Redis): writes are
# counted (INFO rdb_changes_since_last_save), --save "1 1" snapshots within
# a few seconds of a write, and a clean shutdown (SIGTERM) with save rules
# set writes a final snapshot, so a restart has every key.
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/kv_lib.sh"
: "${2:?usage: $0 KEEL_KV_BIN KV_WRITER}" # kv_writer: unused here, passed to every kv_persist test
source "$(dirname "$0")/kv_persist_lib.sh"
info_field() { R info persistence | tr -d '\r' | sed -n "s/^$1://p"; }

# A rule that fires: "1 1".
dir=$work/a
mkdir -p "$dir"
start_kv --appendonly no --save "1 1" --dir "$dir"
t0=$(R lastsave)
for i in $(seq 100); do echo "SET k$i v$i"; done | R >/dev/null
c=$(info_field rdb_changes_since_last_save)
((c > 0)) || fail "rdb_changes_since_last_save $c after 100 SETs (appendonly no, save rules set)"
for _ in $(seq 50); do
    [[ -s $dir/dump.rdb.0 && -s $dir/dump.rdb.1 ]] && break
    sleep 0.1
done
[[ -s $dir/dump.rdb.0 && -s $dir/dump.rdb.1 ]] || fail "--save '1 1': no dump.rdb.0/1 within 5 s of 100 writes"
for _ in $(seq 30); do
    (($(R lastsave) > t0)) && break
    sleep 0.1
done
(($(R lastsave) > t0)) || fail "LASTSAVE did not move after the save rule fired"
stop_kv
start_kv --appendonly no --save "1 1" --dir "$dir"
[[ $(R dbsize) == 100 ]] || fail "dbsize $(R dbsize) after a restart, want 100"
stop_kv

# A rule that does not fire in time: the shutdown saves.
dir=$work/b
mkdir -p "$dir"
start_kv --appendonly no --save "3600 1" --dir "$dir"
for i in $(seq 100); do echo "SET k$i v$i"; done | R >/dev/null
stop_kv
start_kv --appendonly no --save "3600 1" --dir "$dir"
[[ $(R dbsize) == 100 ]] || fail "dbsize $(R dbsize) after SIGTERM and a restart with save rules set, want 100 (final snapshot at shutdown)"
stop_kv

# A redis.conf gives one rule per line: the lines add up, as in Redis.
printf 'save 3600 1\nsave 300 100\nsave 60 10000\n' >"$work/redis.conf"
start_kv --config "$work/redis.conf" --dir "$dir"
got=$(R config get save | tail -n 1)
[[ $got == "3600 1 300 100 60 10000" ]] || fail "save lines of a config file gave '$got', want '3600 1 300 100 60 10000'"
stop_kv
echo "PASS: save rules with appendonly no: changes counted, rule fires, final snapshot at shutdown; config-file save lines add up"
