#!/usr/bin/env bash
# keel-pool at the protocol level, driven by pg_client (libpq plus raw
# packets): query cancel across shards, ParameterStatus restore and named
# prepared statements in transaction pooling, COPY both ways, LISTEN/NOTIFY
# in session pooling, error recovery, and malformed or abandoned client
# connections (SSLRequest, GSSENCRequest, bad lengths, garbage, a partial
# startup packet, bad messages, clients that vanish mid-query). After each
# raw case pg_client checks that a normal login still works, and the script
# that the pooler is still running.
#
# Against PgBouncer 1.18 (to validate the test) "prepared" runs against
# PostgreSQL directly: 1.18 has no protocol-level prepared statements.
# shellcheck source-path=SCRIPTDIR disable=SC2119 # the lib functions take optional arguments
source "$(dirname "$0")/pool_lib.sh"
pool_init "$@"
[[ -x $pg_client ]] || fail "no pg_client binary at '$pg_client'"

start_pg
write_userlist

login_timeout=3
md5="host=127.0.0.1 port=PORT dbname=keeldb user=md5_user password=md5pass connect_timeout=10"
scram="host=127.0.0.1 port=PORT dbname=keeldb user=scram_user password=scrampass connect_timeout=10"
trust="host=127.0.0.1 port=PORT dbname=keeldb user=trust_user connect_timeout=10"

# client CMD CONNINFO [ARGS...]: pg_client CMD through the pooler.
client() {
    local cmd=$1 conninfo=${2//PORT/$pool_port} user out
    user=${2#*user=}
    user=${user%% *}
    shift 2
    out=$("$pg_client" "$cmd" -d "$conninfo" "$@" 2>&1) || fail "$cmd: $out"
    pool_alive
    out=${out#pg_client: OK "$cmd"}
    pass "$cmd${*:+ $*} as $user$out"
}

# pool_with K=V...: the pooler restarted with these [pgbouncer] settings.
pool_with() {
    [[ -n $pool_pid ]] && stop_pool
    write_ini "$@"
    start_pool
}

# --- transaction pooling, one server connection -----------------------------
tx_settings=(pool_mode=transaction default_pool_size=1 "client_login_timeout=$login_timeout")
is_pgbouncer || tx_settings+=(max_prepared_statements=100)
pool_with "${tx_settings[@]}"

client params "$md5"
client cancel "$md5" -n 6
client cancel "$scram" -n 2
client copy "$md5"
client errors "$scram"
if is_pgbouncer; then
    out=$("$pg_client" prepared -d "${md5//PORT/$pg_port}" 2>&1) || fail "prepared on PostgreSQL: $out"
    pass "prepared (against PostgreSQL directly; PgBouncer 1.18 lacks it)"
else
    # Two server connections: pg_client runs A and B in one thread, and B
    # must not wait for a server that A holds inside BEGIN (a deadlock of
    # the test's own making with one). A's and B's statements still move
    # between both servers.
    pool_with "${tx_settings[@]}" default_pool_size=2
    client prepared "$md5"
fi

# Raw packets log in as trust_user: auth_type trust from here on.
pool_with "${tx_settings[@]}" auth_type=trust
client raw-ssl "$trust"
client raw-badlen "$trust"
client raw-garbage "$trust"
client raw-partial "$trust" -t "$login_timeout"
client raw-badmsg "$trust"
client raw-vanish "$trust"
client raw-gss "$trust"
# After all of that, the one server connection still serves other users.
client errors "$md5"
client params "$md5"

# --- session pooling --------------------------------------------------------
session_settings=(pool_mode=session default_pool_size=5 "client_login_timeout=$login_timeout")
pool_with "${session_settings[@]}"
client notify "$md5"
client notify "$scram"
client copy "$md5" -m session
client cancel "$md5" -n 6
client errors "$md5"
pool_with "${session_settings[@]}" auth_type=trust
client raw-vanish "$trust"
client raw-badmsg "$trust"
client raw-partial "$trust" -t "$login_timeout"
client notify "$md5"

stop_pool
pass "all protocol cases"
