#!/usr/bin/env bash
# keel-pool when things go wrong, as PgBouncer 1.18 behaves: PostgreSQL
# restarted under idle clients and clients inside a transaction (in
# transaction and session mode), query_wait_timeout, client_login_timeout
# with a silent TCP client, bad startup packets, and a client that
# disconnects in the middle of a query. Texts recorded from 1.18 below.
# shellcheck source-path=SCRIPTDIR disable=SC2119,SC2016 # optional arguments; literal $1 of auth_query
source "$(dirname "$0")/pool_lib.sh"
pool_init "$@"

# PgBouncer 1.18's texts.
err_restart='FATAL:  terminating connection due to administrator command' # PostgreSQL's, relayed
err_crashed='FATAL:  server conn crashed?'
err_lost='connection to server was lost' # psql's, once the pooler closes
err_qwait='FATAL:  query_wait_timeout'

restart_pool() {
    [[ -n $pool_pid ]] && stop_pool INT
    write_ini "$@"
    start_pool
}

# new_clients_work WHAT: a few fresh clients get answers.
new_clients_work() {
    local i out
    for i in 1 2 3; do
        out=$(pq md5_user -c "SELECT 'fresh $i'" 2>&1) || true
        [[ $out == "fresh $i" ]] && continue
        # The first one may meet a server the pooler has not yet seen die.
        out=$(pq md5_user -c "SELECT 'fresh $i'" 2>&1) || true
        [[ $out == "fresh $i" ]] || fail "$1: a new client gets '$out'"
    done
}

# expect_dropped SESSION WHAT: SESSION's next query fails with 1.18's
# texts and its psql has lost the connection.
expect_dropped() {
    local out
    out=$(sess_run "$1" "SELECT 'after restart'") || true
    [[ $out != *"after restart"* ]] || fail "$2: query succeeded: '$out'"
    [[ $out == *"$err_crashed"* && $out == *"$err_lost"* ]] ||
        fail "$2: got '$out', want '$err_crashed' and '$err_lost'"
    [[ $out == *"$err_restart"* ]] || fail "$2: got '$out', want '$err_restart'"
}

start_pg
write_userlist

# --- PostgreSQL restart, transaction mode ---
restart_pool pool_mode=transaction default_pool_size=2
sess_open idle md5_user
sess_open tx md5_user
sess_run tx "BEGIN; SELECT 1" >/dev/null
pg_restart
out=$(sess_run idle "SELECT 'after restart'") || true
[[ $out == "after restart" ]] || fail "transaction mode: idle client after PostgreSQL restart: '$out'"
out=$(sess_run idle "SELECT 'again'") || true
[[ $out == again ]] || fail "transaction mode: idle client's second query after restart: '$out'"
pass "transaction mode: an idle client survives a PostgreSQL restart, no error"
expect_dropped tx "transaction mode: client inside BEGIN over a PostgreSQL restart"
pass "transaction mode: a client inside BEGIN gets '$err_crashed' and is disconnected"
new_clients_work "transaction mode, after PostgreSQL restart"
pass "transaction mode: new clients work after the restart"
sess_close idle
sess_close tx

# --- PostgreSQL restart, session mode ---
restart_pool pool_mode=session default_pool_size=4
sess_open idle md5_user
sess_open tx md5_user
sess_run tx "BEGIN; SELECT 1" >/dev/null
pg_restart
expect_dropped idle "session mode: idle client over a PostgreSQL restart"
pass "session mode: an idle client gets '$err_crashed' and is disconnected (as 1.18)"
expect_dropped tx "session mode: client inside BEGIN over a PostgreSQL restart"
pass "session mode: a client inside BEGIN gets '$err_crashed' and is disconnected"
new_clients_work "session mode, after PostgreSQL restart"
pass "session mode: new clients work after the restart"
sess_close idle
sess_close tx

# --- query_wait_timeout ---
restart_pool pool_mode=transaction default_pool_size=1 query_wait_timeout=2
sess_open holder md5_user
sess_run holder "BEGIN; SELECT 1" >/dev/null
t0=$SECONDS
out=$(pq md5_user -c "SELECT 'should wait'" 2>&1) && fail "query_wait_timeout: second client got '$out'"
dt=$((SECONDS - t0))
[[ $out == *"$err_qwait"* ]] || fail "query_wait_timeout: second client got '$out', want '$err_qwait'"
((dt >= 1 && dt <= 15)) || fail "query_wait_timeout=2: the error came after $dt s"
pass "query_wait_timeout=2: a waiting client gets '$err_qwait' (after ${dt}s)"
sess_run holder "COMMIT" >/dev/null
[[ $(sess_run holder "SELECT 'holder ok'") == "holder ok" ]] || fail "the transaction holder broke"
[[ $(pq md5_user -c "SELECT 'next ok'") == "next ok" ]] || fail "a client after the timeout failed"
pass "query_wait_timeout: the pool works on after it"
sess_close holder

if ! is_pgbouncer; then
    # A cancel for a query still waiting for a server: keel-pool answers it
    # as PostgreSQL would (psql sends the CancelRequest on SIGINT).
    restart_pool pool_mode=transaction default_pool_size=1
    sess_open holder md5_user
    sess_run holder "BEGIN; SELECT 1" >/dev/null
    t0=$SECONDS
    out=$(PGPASSWORD=md5pass timeout --preserve-status -k 10 -s INT 1 psql -X -q -At -w \
        -h 127.0.0.1 -p "$pool_port" -U md5_user -d keeldb -c "SELECT pg_sleep(20)" 2>&1) || true
    dt=$((SECONDS - t0))
    [[ $out == *"canceling statement due to user request"* ]] ||
        fail "cancel while waiting for a server: got '$out'"
    ((dt <= 8)) || fail "cancel while waiting for a server took $dt s"
    sess_run holder "COMMIT" >/dev/null
    sess_close holder
    pass "a cancel of a query still waiting for a server answers 57014 at once (keel-only)"
fi

# --- client_login_timeout, bad startup packets ---
restart_pool pool_mode=transaction default_pool_size=1 client_login_timeout=2
# raw MODE: a Python client; prints what happened; exit 0 when the pooler
# closed the connection (optionally after an ErrorResponse) in time.
raw() {
    timeout 30 python3 - "$pool_port" "$1" <<'PY'
import socket, struct, sys, time
port, mode = int(sys.argv[1]), sys.argv[2]
s = socket.create_connection(("127.0.0.1", port), timeout=5)
t0 = time.time()
if mode == "silent":
    pass
elif mode == "huge":
    s.sendall(struct.pack("!II", 0x7FFFFFF0, 196608) + b"user\0md5_user\0\0")
elif mode == "http":
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
elif mode == "short":
    s.sendall(struct.pack("!I", 4))
elif mode == "badproto":
    body = struct.pack("!I", 0x00090000) + b"user\0md5_user\0database\0keeldb\0\0"
    s.sendall(struct.pack("!I", len(body) + 4) + body)
elif mode == "partial":  # a valid length, then only part of the packet
    s.sendall(struct.pack("!II", 64, 196608) + b"user\0")
s.settimeout(15)
data = b""
try:
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
except socket.timeout:
    print("still open after 15 s, got %r" % data)
    sys.exit(1)
except ConnectionResetError:
    pass
dt = time.time() - t0
msg = ""
if data[:1] == b"E":
    msg = " ".join(f.decode(errors="replace")[1:] for f in data[5:].split(b"\0") if f[:1] in (b"S", b"M"))
print("closed after %.1f s%s" % (dt, ", error: " + msg if msg else ", no error message" if not data else ", got %r" % data[:60]))
PY
}
# 1.18 answers the bad packets below with a FATAL ErrorResponse then closes:
#   huge      "bad packet header: '7ffffff000030000'"
#   http      "client sent partial pkt in startup phase"
#   short     (a lone length word 4) nothing until "client_login_timeout"
#   badproto  "bad packet header: '0000002700090000'"
#   partial   "client sent partial pkt in startup phase"
# Only the close (and the pooler serving on) is asserted for those.
out=$(raw silent) || fail "client_login_timeout=2: a silent client: $out"
secs=${out#closed after }
secs=${secs%% s*}
((${secs%.*} <= 12)) || fail "client_login_timeout=2: silent client closed only after $secs s"
[[ $out == *"error: FATAL client_login_timeout"* ]] || fail "client_login_timeout=2: silent client: $out, want 'FATAL client_login_timeout'"
pass "client_login_timeout=2: a silent TCP client is $out"
for mode in huge http short badproto partial; do
    out=$(raw $mode) || fail "startup packet '$mode': $out"
    pool_alive
    [[ $(pq md5_user -c "SELECT 'up'") == up ]] || fail "after a '$mode' startup packet the pooler does not answer"
    pass "bad startup packet '$mode': $out; the pooler serves on"
done

# --- a client that disconnects in the middle of a query ---
restart_pool pool_mode=transaction default_pool_size=1
PQ_TIMEOUT=1 pq md5_user -c "SELECT pg_sleep(3)" >/dev/null 2>&1 && fail "pg_sleep(3) finished within 1 s?"
out=$(pq md5_user -c "SELECT 'next'" 2>&1) || fail "after a client left mid-query, the next one failed: $out"
[[ $out == next ]] || fail "after a client left mid-query: '$out'"
# Not inside a leftover transaction: now() moves between two statements'
# transactions, and BEGIN gives no "already a transaction" warning.
out=$(pq md5_user -c "BEGIN" -c "SELECT 'in tx'" -c "COMMIT" 2>&1)
[[ $out == "in tx" ]] || fail "after a client left mid-query, BEGIN/COMMIT: '$out'"
out=$(pq md5_user -c "SELECT pg_current_xact_id_if_assigned() IS NULL, now() = statement_timestamp()")
[[ $out == "t|t" ]] || fail "after a client left mid-query: in a transaction? '$out'"
pass "a client leaving mid-query (pg_sleep(3)): the next client, pool size 1, works outside any transaction"

pool_alive
stop_pool INT
echo "$pool_test: all checks passed"
