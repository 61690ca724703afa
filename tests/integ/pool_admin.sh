#!/usr/bin/env bash
# keel-pool's admin console (database pgbouncer), from psql: every SHOW
# with exactly PgBouncer 1.18's column headers (recorded below from
# pgbouncer 1.18.0), SET, PAUSE/RESUME with a waiting client,
# SUSPEND/RESUME, DISABLE/ENABLE, RECONNECT, KILL, RELOAD of a changed
# ini, WAIT_CLOSE, SHUTDOWN; the console over the unix socket as user
# pgbouncer (the pooler's own OS user, no password) and over TCP as an
# admin_users entry with its password.
# shellcheck source-path=SCRIPTDIR disable=SC2119,SC2016 # optional arguments; literal $1 of auth_query
source "$(dirname "$0")/pool_lib.sh"
pool_init "$@"

# SHOW x -> header row of PgBouncer 1.18.0 (psql -A -F,).
declare -A hdr=(
[POOLS]='database,user,cl_active,cl_waiting,cl_active_cancel_req,cl_waiting_cancel_req,sv_active,sv_active_cancel,sv_being_canceled,sv_idle,sv_used,sv_tested,sv_login,maxwait,maxwait_us,pool_mode'
[STATS]='database,total_xact_count,total_query_count,total_received,total_sent,total_xact_time,total_query_time,total_wait_time,avg_xact_count,avg_query_count,avg_recv,avg_sent,avg_xact_time,avg_query_time,avg_wait_time'
[STATS_TOTALS]='database,xact_count,query_count,bytes_received,bytes_sent,xact_time,query_time,wait_time'
[STATS_AVERAGES]='database,xact_count,query_count,bytes_received,bytes_sent,xact_time,query_time,wait_time'
[TOTALS]='name,value'
[CLIENTS]='type,user,database,state,addr,port,local_addr,local_port,connect_time,request_time,wait,wait_us,close_needed,ptr,link,remote_pid,tls,application_name'
[SERVERS]='type,user,database,state,addr,port,local_addr,local_port,connect_time,request_time,wait,wait_us,close_needed,ptr,link,remote_pid,tls,application_name'
[DATABASES]='name,host,port,database,force_user,pool_size,min_pool_size,reserve_pool,pool_mode,max_connections,current_connections,paused,disabled'
[USERS]='name,pool_mode'
[CONFIG]='key,value,default,changeable'
[LISTS]='list,items'
[MEM]='name,size,used,free,memtotal'
[FDS]='fd,task,user,database,addr,port,cancel,link,client_encoding,std_strings,datestyle,timezone,password,scram_client_key,scram_server_key'
[SOCKETS]='type,user,database,state,addr,port,local_addr,local_port,connect_time,request_time,wait,wait_us,close_needed,ptr,link,remote_pid,tls,application_name,recv_pos,pkt_pos,pkt_remain,send_pos,send_remain,pkt_avail,send_avail'
[ACTIVE_SOCKETS]='type,user,database,state,addr,port,local_addr,local_port,connect_time,request_time,wait,wait_us,close_needed,ptr,link,remote_pid,tls,application_name,recv_pos,pkt_pos,pkt_remain,send_pos,send_remain,pkt_avail,send_avail'
[DNS_HOSTS]='hostname,ttl,addrs'
[DNS_ZONES]='zonename,serial,count'
[VERSION]='version'
)
# PgBouncer 1.18 has no SHOW STATE (it came in 1.19): this error.
err_show_state="ERROR:  invalid command 'SHOW STATE', use SHOW HELP;"

start_pg
write_userlist
write_ini default_pool_size=2
start_pool

# Traffic first, so that the SHOWs have rows (a server, stats).
pq md5_user -c "SELECT count(*) FROM pgbench_branches" >/dev/null || fail "query through the pooler failed"
sess_open idle md5_user

# The console both ways.
[[ $(admin "SHOW VERSION") == *PgBouncer* || $(admin "SHOW VERSION") == *keel* ]] ||
    fail "SHOW VERSION over the unix socket as pgbouncer: '$(admin "SHOW VERSION" 2>&1)'"
pass "console over unix socket $tmp/.s.PGSQL.$pool_port as user pgbouncer by OS user $run_user"
out=$(admin_tcp "SHOW VERSION" 2>&1) || fail "console over TCP as postgres: $out"
pass "console over TCP as admin user postgres: $out"
out=$(PGPASSWORD=md5pass PQ_TIMEOUT=10 psql -X -At -w -h 127.0.0.1 -p "$pool_port" -U md5_user -d pgbouncer -c "SHOW POOLS" 2>&1) ||
    fail "SHOW POOLS as stats_users member md5_user: $out"
pass "SHOW POOLS as stats_users member md5_user"
out=$(PGPASSWORD=md5pass PQ_TIMEOUT=10 psql -X -At -w -h 127.0.0.1 -p "$pool_port" -U md5_user -d pgbouncer -c "PAUSE" 2>&1) &&
    fail "PAUSE allowed to stats-only user md5_user"
pass "PAUSE refused to stats-only user md5_user: $out"

# Every SHOW: the header row.
for c in POOLS STATS STATS_TOTALS STATS_AVERAGES TOTALS CLIENTS SERVERS DATABASES USERS CONFIG \
    LISTS MEM FDS SOCKETS ACTIVE_SOCKETS DNS_HOSTS DNS_ZONES VERSION; do
    out=$(admin_hdr "SHOW $c" 2>&1) || fail "SHOW $c failed: $out"
    got=$(head -n 1 <<<"$out")
    [[ $got == "${hdr[$c]}" ]] || fail "SHOW $c header: got '$got', want '${hdr[$c]}'"
    pass "SHOW $c ($(($(wc -l <<<"$out") - 1)) rows)"
done
if is_pgbouncer; then
    out=$(admin "SHOW STATE" 2>&1) && fail "SHOW STATE succeeded on PgBouncer 1.18: $out"
    [[ $out == *"$err_show_state"* ]] || fail "SHOW STATE: '$out', want '$err_show_state'"
    pass "SHOW STATE: 1.18's error"
else
    # keel-only: either 1.18's error or 1.19's key/value answer.
    out=$(admin "SHOW STATE" 2>&1) || [[ $out == *"$err_show_state"* ]] ||
        fail "SHOW STATE: '$out'"
    pass "SHOW STATE (keel-pool): $(tr '\n' ' ' <<<"$out")"
fi
# Some content.
admin "SHOW DATABASES" | grep -q "^keeldb|127.0.0.1|$pg_port|keeldb|" || fail "SHOW DATABASES has no keeldb row"
admin "SHOW CLIENTS" | grep -q '^C|md5_user|keeldb|active|' || fail "SHOW CLIENTS lacks the idle session"
(($(server_count) >= 1)) || fail "SHOW SERVERS lists no keeldb server"
pass "SHOW DATABASES/CLIENTS/SERVERS contents"

# SET.
admin "SET default_pool_size = 5" >/dev/null || fail "SET default_pool_size failed"
out=$(admin "SHOW CONFIG" | awk -F'|' '$1 == "default_pool_size" { print $2 }')
[[ $out == 5 ]] || fail "SHOW CONFIG default_pool_size: '$out' after SET to 5"
out=$(admin "SET no_such_setting = 1" 2>&1) && fail "SET of an unknown setting succeeded"
pass "SET default_pool_size = 5; unknown key refused ($out)"

# PAUSE keeldb: a new client waits until RESUME.
admin "PAUSE keeldb" >/dev/null || fail "PAUSE keeldb failed"
admin "SHOW DATABASES" | awk -F'|' '$1 == "keeldb" { exit !($12 == 1) }' || fail "SHOW DATABASES: keeldb not paused"
pq md5_user -c "SELECT 'after pause'" >"$tmp/paused.out" 2>&1 &
waiter=$!
bg_pids+=("$waiter")
sleep 1.5
kill -0 "$waiter" 2>/dev/null || fail "a client of a paused database did not wait: $(cat "$tmp/paused.out")"
admin "RESUME keeldb" >/dev/null || fail "RESUME keeldb failed"
wait "$waiter" || fail "the client waiting on PAUSE failed after RESUME: $(cat "$tmp/paused.out")"
[[ $(cat "$tmp/paused.out") == "after pause" ]] || fail "waiting client: '$(cat "$tmp/paused.out")'"
pass "PAUSE keeldb: client waits; RESUME keeldb: it succeeds"

# SUSPEND then RESUME in one console session (a suspended pooler accepts no
# new console connection either): a client connecting meanwhile waits.
run_as_user env PQ_TIMEOUT=30 timeout 30 psql -X -q -At -w -h "$tmp" -p "$pool_port" -U pgbouncer -d pgbouncer \
    >"$tmp/suspend.out" 2>&1 <<EOF2 &
SUSPEND;
\\! sleep 3
RESUME;
EOF2
suspender=$!
bg_pids+=("$suspender")
sleep 1
pq md5_user -c "SELECT 'after suspend'" >"$tmp/susp.out" 2>&1 &
waiter=$!
bg_pids+=("$waiter")
sleep 1
kill -0 "$waiter" 2>/dev/null || fail "a client connecting during SUSPEND did not wait: $(cat "$tmp/susp.out")"
wait "$suspender" || fail "SUSPEND/RESUME session failed: $(cat "$tmp/suspend.out")"
wait "$waiter" || fail "the client that waited on SUSPEND failed after RESUME: $(cat "$tmp/susp.out")"
[[ $(cat "$tmp/susp.out") == "after suspend" ]] || fail "the client that waited on SUSPEND: '$(cat "$tmp/susp.out")'"
out=$(sess_run idle "SELECT 'still here'")
[[ $out == "still here" ]] || fail "idle client broken by SUSPEND/RESUME: $out"
pass "SUSPEND: a new client waits; RESUME (same console session): it succeeds; idle client fine"

# DISABLE keeldb: new clients refused; ENABLE.
admin "DISABLE keeldb" >/dev/null || fail "DISABLE keeldb failed"
out=$(pq md5_user -c "SELECT 1" 2>&1) && fail "a new client got in to a disabled database"
[[ $out == *'FATAL:  database "keeldb" is disabled'* ]] || fail "new client of a disabled database: '$out'"
admin "ENABLE keeldb" >/dev/null || fail "ENABLE keeldb failed"
[[ $(pq md5_user -c "SELECT 2" 2>&1) == 2 ]] || fail "ENABLE keeldb: a new client still cannot get in"
pass "DISABLE keeldb refuses new clients; ENABLE lets them in"

# RECONNECT: servers replaced (the idle client's next query on a new
# backend), clients unaffected.
pid1=$(pq md5_user -c "SELECT pg_backend_pid()")
admin "RECONNECT keeldb" >/dev/null || fail "RECONNECT keeldb failed"
admin "RECONNECT" >/dev/null || fail "RECONNECT failed"
ok=
for _ in $(seq 50); do
    pids=$(pq md5_user -c "SELECT pg_backend_pid()")
    [[ $pids != "$pid1" ]] && { ok=1; break; }
    sleep 0.1
done
[[ -n $ok ]] || fail "RECONNECT: still on server backend $pid1"
[[ $(sess_run idle "SELECT 'after reconnect'") == "after reconnect" ]] || fail "idle client broken by RECONNECT"
pass "RECONNECT: servers replaced, idle client unaffected"

# RELOAD with a changed pool size: SHOW DATABASES' pool_size changes, a
# connected client stays.
POOL_DBS="keeldb = host=127.0.0.1 port=$pg_port dbname=keeldb pool_size=3" write_ini default_pool_size=2
admin "RELOAD" >/dev/null || fail "RELOAD failed"
out=$(admin "SHOW DATABASES" | awk -F'|' '$1 == "keeldb" { print $6 }')
[[ $out == 3 ]] || fail "SHOW DATABASES pool_size '$out' after RELOAD, want 3"
[[ $(sess_run idle "SELECT 'after reload'") == "after reload" ]] || fail "idle client broken by RELOAD"
pass "RELOAD: pool_size 3, connected client still there"

# WAIT_CLOSE: returns once keeldb's servers are closed (after a RECONNECT
# they close when released).
admin "RECONNECT keeldb" >/dev/null
out=$(admin "WAIT_CLOSE keeldb" 2>&1) || fail "WAIT_CLOSE keeldb failed: $out"
admin "WAIT_CLOSE" >/dev/null 2>&1 || fail "WAIT_CLOSE failed"
pass "WAIT_CLOSE keeldb / WAIT_CLOSE"

# KILL keeldb: its clients dropped, then RESUME lets new ones in.
admin "KILL keeldb" >/dev/null || fail "KILL keeldb failed"
for _ in $(seq 50); do sess_alive idle || break; sleep 0.1; done
sess_run idle "SELECT 'after kill'" >"$tmp/afterkill.out" && [[ $(cat "$tmp/afterkill.out") == "after kill" ]] &&
    fail "the idle client still works after KILL keeldb"
sess_close idle
admin "RESUME keeldb" >/dev/null || fail "RESUME keeldb after KILL failed"
[[ $(pq md5_user -c "SELECT 'after kill'" 2>&1) == "after kill" ]] || fail "new clients refused after KILL + RESUME"
pass "KILL keeldb drops its clients; RESUME keeldb lets new ones in"

# SHUTDOWN: the console connection is lost, the process exits.
admin "SHUTDOWN" >/dev/null 2>&1 || true
wait_pool_exit 10
pass "SHUTDOWN: the pooler exited (status $pool_rc)"
echo "$pool_test: all checks passed"
