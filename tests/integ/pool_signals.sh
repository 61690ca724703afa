#!/usr/bin/env bash
# keel-pool's command line and signals, as PgBouncer's: --help/--version,
# refusing root without -u, a config error naming file and line, the
# pidfile, SIGHUP reloading a changed pool_size, SIGUSR1/SIGUSR2 pausing
# and resuming, SIGINT waiting for a transaction to end before it exits,
# and -d daemonizing. (Keel-only where PgBouncer 1.18 differs: SHOW STATE.)
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/pool_lib.sh"
pool_init "$@"

if ! is_pgbouncer; then
    out=$("$pool_bin" --help) || fail "--help exited non-zero"
    [[ $out == *"CONFIG_FILE"* && $out == *"SIGHUP"* ]] || fail "--help lacks usage: $out"
    [[ $("$pool_bin" -V) == PgBouncer* ]] || fail "-V: $("$pool_bin" -V)"
    pass "--help and --version"
    if [[ $(id -u) -eq 0 ]]; then
        echo "[pgbouncer]" >"$tmp/root.ini"
        out=$("$pool_bin" "$tmp/root.ini" 2>&1) && fail "runs as root without -u"
        [[ $out == *"should not run as root"* ]] || fail "root refusal says: $out"
        pass "refuses to run as root without -u USER"
    fi
    printf '[pgbouncer]\nlisten_port = many\n' >"$tmp/bad.ini"
    chmod 644 "$tmp/bad.ini"
    out=$(run_as_user "$pool_bin" "$tmp/bad.ini" 2>&1) && fail "started with an invalid listen_port"
    [[ $out == *"bad.ini:2"* && $out == *listen_port* ]] || fail "config error does not name file, line and key: $out"
    pass "an invalid value is an error naming file, line and key"
fi

start_pg
write_userlist

# --- SIGHUP: a changed pool_size without dropping clients -------------------
write_ini pool_mode=transaction
start_pool
[[ -s $tmp/pool.pid && $(cat "$tmp/pool.pid") == "$pool_pid" ]] || fail "pidfile $tmp/pool.pid does not hold $pool_pid"
pass "pidfile holds the pooler's pid"
sess_open held md5_user
[[ $(sess_run held "SELECT 'before'") == before ]] || fail "client before SIGHUP"
size_of() { admin "SHOW DATABASES" | awk -F'|' '$1 == "keeldb" {print $6}'; }
size_is() { [[ $(size_of) == "$1" ]]; }
state_paused() { [[ $(admin "SHOW STATE" | cut -d'|' -f2) == "$1" ]]; }
[[ $(size_of) == 5 ]] || fail "pool_size before SIGHUP is $(size_of), want 5"
write_ini pool_mode=transaction default_pool_size=7
kill -HUP "$pool_pid"
wait_for 10 size_is 7 || fail "after SIGHUP pool_size is $(size_of), want 7"
[[ $(sess_run held "SELECT 'after'") == after ]] || fail "the client connected across SIGHUP broke"
pass "SIGHUP reloads (pool_size 5 -> 7) and the connected client goes on"

# --- SIGUSR1 pauses, SIGUSR2 resumes -------------------------------------------
if ! is_pgbouncer; then
    kill -USR1 "$pool_pid"
    wait_for 10 state_paused yes || fail "SHOW STATE after SIGUSR1: $(admin 'SHOW STATE')"
    pq md5_user -c "SELECT 'paused'" >"$tmp/paused.out" 2>&1 &
    bg_pids+=($!)
    sleep 1
    [[ -s $tmp/paused.out ]] && fail "a query ran while paused: $(cat "$tmp/paused.out")"
    kill -USR2 "$pool_pid"
    wait_for 10 grep -q paused "$tmp/paused.out" || fail "the waiting client did not run after SIGUSR2"
    pass "SIGUSR1 pauses (a new query waits), SIGUSR2 resumes it"
fi

# --- SIGINT: waits for the open transaction ----------------------------------------
sess_run held "BEGIN; SELECT 1" >/dev/null
kill -INT "$pool_pid"
sleep 1
kill -0 "$pool_pid" 2>/dev/null || fail "SIGINT did not wait for the transaction in progress"
[[ $(sess_run held "SELECT 'in tx'") == "in tx" ]] || fail "the transaction broke after SIGINT"
sess_run held "COMMIT" >/dev/null
wait_pool_exit 10
[[ $pool_rc -eq 0 ]] || fail "exit status $pool_rc after SIGINT"
[[ ! -e $tmp/pool.pid ]] || fail "pidfile left behind after SIGINT"
pass "SIGINT waits for the transaction in progress, then exits 0 and removes the pidfile"
sess_close held

# --- -d: a daemon that writes the pidfile and logfile --------------------------------
if ! is_pgbouncer; then
    write_ini pool_mode=transaction
    (cd "$tmp" && "${run_as[@]}" "$pool_bin" -d --shards 2 "$tmp/pool.ini") || fail "-d failed"
    wait_for 10 test -s "$tmp/pool.pid" || fail "-d wrote no pidfile"
    pool_pid=$(cat "$tmp/pool.pid")
    wait_for 10 bash -c "exec 3<>/dev/tcp/127.0.0.1/$pool_port" 2>/dev/null || fail "daemon does not listen"
    [[ $(pq md5_user -c "SELECT 'daemon'") == daemon ]] || fail "query through the daemon"
    kill -TERM "$pool_pid"
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pool_pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$pool_pid" 2>/dev/null && fail "daemon still runs 10 s after SIGTERM"
    pool_pid=
    grep -q "shutdown complete" "$tmp/pool.log" || fail "no 'shutdown complete' in the logfile"
    sanitizer_check
    pass "-d runs in the background with pidfile and logfile; SIGTERM stops it"
fi

echo "$pool_test: all checks passed"
