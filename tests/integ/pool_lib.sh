# Shared by the pool_*.sh integration tests: a private PostgreSQL 15 and the
# pooler under test (keel-pool, or PgBouncer 1.18 to validate the tests
# themselves: keel-pool is meant to behave the same). Each script is run as
#   pool_NAME.sh POOLER_BIN [PG_CLIENT]
# and sources this file first thing. As root (CI), initdb, postgres and the
# pooler run as the OS user postgres (they refuse root); otherwise as the
# current user. Everything started is stopped, and the scratch directory
# removed, on exit, including on failure.
#
# API (the scripts, and others, use these names):
#   pool_init "$@"        pool_bin, pg_client, tmp, run_as, the cleanup trap
#   is_pgbouncer          true when the pooler under test is PgBouncer
#   run_as_user CMD...    runs CMD as the user the servers run as (in $tmp)
#   start_pg [LINES...]   initdb + start; roles, keeldb, pgbench tables,
#                         auth_user + public.user_lookup(); sets pg_port
#   pg_restart            pg_ctl restart -m fast
#   pg_psql [ARGS...]     psql to PostgreSQL directly, superuser, keeldb
#   write_userlist        $tmp/userlist.txt
#   write_ini [K=V...]    $tmp/pool.ini; K=V lines override/add [pgbouncer]
#                         keys; POOL_DBS (lines) replaces the [databases]
#                         body, POOL_USERS (lines) adds a [users] section.
#                         Picks pool_port (kept across calls: a RELOAD'ed ini
#                         keeps the same port).
#   start_pool [ARGS...]  starts the pooler in the foreground (background
#                         job), keel-pool with --shards 2 (POOL_SHARDS);
#                         sets pool_pid; waits for the port (10 s)
#   stop_pool [SIGNAL]    default TERM; the pooler must exit within 10 s
#   pool_alive            fails unless the pooler is still running
#   pq USER [ARGS...]     psql -X -q -At, ON_ERROR_STOP, via the pooler to
#                         keeldb as USER (password from pw_of USER, or PQPASS)
#   admin "SHOW POOLS"    admin console (database pgbouncer) over the unix
#                         socket $tmp/.s.PGSQL.$pool_port as user pgbouncer,
#                         by the OS user running the pooler (no password)
#   admin_tcp "CMD"       admin console over TCP as postgres (admin_users),
#                         password from the userlist
#   admin_hdr "CMD"       like admin but -A -F, with the column header row
#   fail MSG              prints MSG, the pooler's log tail; exits 1
#   pass MSG              prints a PASS line
#   free_port             prints a free TCP port on 127.0.0.1
#   wait_for SECS CMD...  polls CMD every 0.1 s until it succeeds
#   bg_pids               array: PIDs of background jobs the script started
#                         (killed with their children on exit)
# shellcheck shell=bash disable=SC2034,SC2086,SC2119,SC2120 # variables are the scripts'; optional arguments
set -euo pipefail

pg_bindir=${PG_BINDIR:-/usr/lib/postgresql/15/bin}
pool_test=$(basename "$0" .sh)
pool_pid=
pg_started=
bg_pids=()
pool_port=

declare -A pw_of=([md5_user]=md5pass [scram_user]=scrampass [auth_user]=authpass
    [trust_user]="" [postgres]=adminpass [query_user]=querypass)

pool_init() {
    if [[ $# -lt 1 ]]; then
        echo "usage: $0 POOLER_BIN [PG_CLIENT]" >&2
        exit 2
    fi
    pool_bin=$1
    pg_client=${2:-}
    tmp=$(mktemp -d /tmp/keel-pool-test.XXXXXX)
    chmod 755 "$tmp"
    if [[ $(id -u) -eq 0 ]]; then
        run_user=postgres
        chown postgres: "$tmp"
        # setpriv, not runuser: no PAM session, so no fork (our $! is the
        # server's PID) and the raised ulimit -n is kept.
        run_as=(setpriv --reuid=postgres --regid=postgres --init-groups --)
    else
        run_user=$(id -un)
        run_as=()
    fi
    trap pool_cleanup EXIT
    trap 'exit 130' INT # an interrupt or a timeout's kill still cleans up
    trap 'exit 143' TERM
    trap '' PIPE # a session's psql gone: writing to its FIFO fails, no kill
    [[ -x $pool_bin ]] || fail "no pooler binary at '$pool_bin'"
    [[ -x $pg_bindir/initdb ]] || fail "no PostgreSQL server binaries in $pg_bindir"
    local p
    for p in psql pgbench python3; do
        command -v "$p" >/dev/null || fail "$p is not installed"
    done
}

is_pgbouncer() { [[ $(basename "$pool_bin") == pgbouncer* ]]; }

pool_cleanup() {
    local p kids
    set +e
    [[ -n $pool_pid ]] && { kill -9 "$pool_pid" && wait "$pool_pid"; } 2>/dev/null
    {
        for p in "${bg_pids[@]}" $(jobs -p); do
            kids=$(pgrep -P "$p")
            kill -9 $kids "$p" # $kids: none, one or several PIDs
        done
        wait
    } 2>/dev/null
    if [[ -n $pg_started ]]; then
        run_as_user "$pg_bindir/pg_ctl" -D "$tmp/data" stop -m immediate -s >/dev/null 2>&1
    fi
    [[ -n ${pool_save_log:-} ]] && cp "$tmp/pool.log" "$pool_save_log" 2>/dev/null
    if [[ -n ${POOL_KEEP:-} ]]; then echo "kept $tmp"; elif [[ -n ${tmp:-} && -d $tmp ]]; then rm -rf "$tmp"; fi
}

fail() {
    echo "$pool_test: FAIL: $*"
    # PgBouncer logs both to stderr (pool.out) and its logfile: show the
    # logfile only when its last line is not in pool.out already.
    [[ -s $tmp/pool.out ]] && { echo "--- pool.out (last 30 lines)"; tail -n 30 "$tmp/pool.out"; }
    if [[ -s $tmp/pool.log ]] && ! grep -qsF -- "$(tail -n 1 "$tmp/pool.log")" "$tmp/pool.out"; then
        echo "--- pool.log (last 30 lines)"
        tail -n 30 "$tmp/pool.log"
    fi
    if [[ $* == *postgres* || $* == *PostgreSQL* ]] && [[ -s $tmp/pg.log ]]; then
        echo "--- pg.log (last 20 lines)"
        tail -n 20 "$tmp/pg.log"
    fi
    exit 1
}
pass() { echo "$pool_test: PASS: $*"; }

run_as_user() { (cd "$tmp" && "${run_as[@]}" "$@"); }

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_for() {
    local secs=$1 i
    shift
    for ((i = 0; i < secs * 10; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    return 1
}

# --- PostgreSQL ------------------------------------------------------------

start_pg() {
    pg_port=$(free_port)
    run_as_user "$pg_bindir/initdb" -D "$tmp/data" -U postgres -A trust -E UTF8 \
        --locale=C >"$tmp/initdb.out" 2>&1 || { cat "$tmp/initdb.out"; fail "initdb failed"; }
    cat >"$tmp/data/pg_hba.conf" <<'EOF'
local all postgres                trust
local all all                     trust
host  all postgres   127.0.0.1/32 trust
host  all trust_user 127.0.0.1/32 trust
host  all md5_user   127.0.0.1/32 md5
host  all scram_user 127.0.0.1/32 scram-sha-256
host  all auth_user  127.0.0.1/32 scram-sha-256
host  all all        127.0.0.1/32 scram-sha-256
EOF
    {
        echo "listen_addresses = '127.0.0.1'"
        echo "port = $pg_port"
        echo "unix_socket_directories = '$tmp'"
        echo "max_connections = 60"
        echo "fsync = off"
        echo "synchronous_commit = off"
        echo "full_page_writes = off"
        echo "shared_buffers = 32MB"
        local l
        for l in "$@"; do echo "$l"; done
    } >>"$tmp/data/postgresql.conf"
    [[ $(id -u) -eq 0 ]] && chown postgres: "$tmp/data/pg_hba.conf" "$tmp/data/postgresql.conf"
    run_as_user "$pg_bindir/pg_ctl" -D "$tmp/data" -l "$tmp/pg.log" -w -t 30 start >/dev/null ||
        fail "PostgreSQL did not start"
    pg_started=1
    pg_psql -d postgres -v ON_ERROR_STOP=1 >/dev/null <<'EOF' || fail "PostgreSQL: creating roles failed"
SET password_encryption = 'md5';
CREATE ROLE md5_user LOGIN PASSWORD 'md5pass';
SET password_encryption = 'scram-sha-256';
CREATE ROLE scram_user LOGIN PASSWORD 'scrampass';
CREATE ROLE auth_user LOGIN PASSWORD 'authpass';
CREATE ROLE query_user LOGIN PASSWORD 'querypass';
CREATE ROLE trust_user LOGIN;
CREATE DATABASE keeldb OWNER postgres;
GRANT ALL ON DATABASE keeldb TO md5_user, scram_user, trust_user, query_user;
EOF
    pgbench -h "$tmp" -p "$pg_port" -U postgres -i -s 1 -q keeldb >"$tmp/pgbench_init.out" 2>&1 ||
        { cat "$tmp/pgbench_init.out"; fail "pgbench -i on PostgreSQL failed"; }
    pg_psql -v ON_ERROR_STOP=1 >/dev/null <<'EOF' || fail "PostgreSQL: keeldb setup failed"
GRANT ALL ON SCHEMA public TO md5_user, scram_user, trust_user, query_user;
GRANT ALL ON ALL TABLES IN SCHEMA public TO md5_user, scram_user, trust_user, query_user;
CREATE FUNCTION public.user_lookup(i_username text, OUT usename name, OUT passwd text)
RETURNS record LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog AS $$
    SELECT usename, passwd FROM pg_catalog.pg_shadow WHERE usename = i_username
$$;
REVOKE ALL ON FUNCTION public.user_lookup(text) FROM public;
GRANT EXECUTE ON FUNCTION public.user_lookup(text) TO auth_user;
EOF
}

pg_psql() { psql -X -q -At -h "$tmp" -p "$pg_port" -U postgres -d keeldb "$@"; }

pg_restart() {
    run_as_user "$pg_bindir/pg_ctl" -D "$tmp/data" -l "$tmp/pg.log" -w -t 30 -m fast restart >/dev/null ||
        fail "PostgreSQL did not restart"
}

# --- the pooler --------------------------------------------------------------

write_userlist() {
    local md5 scram
    md5=md5$(printf '%s' "md5passmd5_user" | md5sum | cut -d' ' -f1)
    scram=$(pg_psql -c "SELECT rolpassword FROM pg_authid WHERE rolname = 'scram_user'")
    [[ $scram == SCRAM-SHA-256* ]] || fail "scram_user's secret in PostgreSQL is not SCRAM: '$scram'"
    [[ $(pg_psql -c "SELECT rolpassword FROM pg_authid WHERE rolname = 'md5_user'") == "$md5" ]] ||
        fail "md5_user's secret in PostgreSQL is not $md5"
    cat >"$tmp/userlist.txt" <<EOF
"md5_user" "$md5"
"scram_user" "$scram"
"auth_user" "authpass"
"trust_user" ""
"postgres" "adminpass"
EOF
}

write_ini() {
    [[ -n $pool_port ]] || pool_port=$(free_port)
    local -a keys=(listen_addr listen_port unix_socket_dir auth_type auth_file logfile pidfile
        admin_users stats_users pool_mode default_pool_size max_client_conn
        ignore_startup_parameters server_login_retry)
    local -A v=([listen_addr]=127.0.0.1 [listen_port]=$pool_port [unix_socket_dir]=$tmp
        [auth_type]=md5 [auth_file]=$tmp/userlist.txt [logfile]=$tmp/pool.log
        [pidfile]=$tmp/pool.pid [admin_users]=postgres [stats_users]=md5_user
        [pool_mode]=transaction [default_pool_size]=5 [max_client_conn]=200
        [ignore_startup_parameters]=extra_float_digits [server_login_retry]=1)
    local kv k
    for kv in "$@"; do
        k=${kv%%=*}
        k=${k// /}
        [[ -v v[$k] ]] || keys+=("$k")
        v[$k]=${kv#*=}
        v[$k]=${v[$k]# }
    done
    {
        echo "[databases]"
        if [[ -n ${POOL_DBS:-} ]]; then
            echo "$POOL_DBS"
        else
            echo "keeldb = host=127.0.0.1 port=$pg_port dbname=keeldb"
        fi
        echo
        if [[ -n ${POOL_USERS:-} ]]; then
            echo "[users]"
            echo "$POOL_USERS"
            echo
        fi
        echo "[pgbouncer]"
        for k in "${keys[@]}"; do echo "$k = ${v[$k]}"; done
    } >"$tmp/pool.ini"
}

pool_alive() {
    { [[ -n $pool_pid ]] && kill -0 "$pool_pid" 2>/dev/null; } || fail "the pooler is no longer running (crashed?)"
}

sanitizer_check() {
    if grep -qsE 'ERROR: AddressSanitizer|LeakSanitizer|runtime error:' "$tmp/pool.out" "$tmp/pool.log"; then
        fail "sanitizer report in the pooler's output"
    fi
    return 0
}

start_pool() {
    local -a args=()
    is_pgbouncer || args=(--shards "${POOL_SHARDS:-2}")
    [[ -f $tmp/pool.ini ]] || write_ini
    [[ $(id -u) -eq 0 ]] && chown postgres: "$tmp/pool.ini" "$tmp/userlist.txt" 2>/dev/null
    echo "--- start_pool $(date +%T)" >>"$tmp/pool.out"
    (cd "$tmp" && exec "${run_as[@]}" "$pool_bin" "${args[@]}" "$@" "$tmp/pool.ini") >>"$tmp/pool.out" 2>&1 &
    pool_pid=$!
    local i
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pool_pid" 2>/dev/null || { pool_pid=; fail "the pooler exited at startup"; }
        (exec 3<>"/dev/tcp/127.0.0.1/$pool_port") 2>/dev/null && return 0
        sleep 0.1
    done
    fail "the pooler does not accept on 127.0.0.1:$pool_port after 10 s"
}

# wait_pool_exit SECS: the pooler must exit within SECS; sets pool_rc.
wait_pool_exit() {
    local i
    for ((i = 0; i < $1 * 10; i++)); do
        kill -0 "$pool_pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$pool_pid" 2>/dev/null && fail "the pooler still runs $1 s later"
    pool_rc=0
    wait "$pool_pid" || pool_rc=$?
    pool_pid=
    sanitizer_check
}

stop_pool() {
    local sig=${1:-TERM}
    pool_alive
    kill "-$sig" "$pool_pid"
    wait_pool_exit 10
    # PgBouncer 1.18 exits 1 after SIGTERM ("got SIGTERM, fast exit");
    # keel-pool must exit 0. Neither may die of a signal.
    if is_pgbouncer; then
        ((pool_rc < 128)) || fail "the pooler died of signal $((pool_rc - 128)) after SIG$sig"
    else
        [[ $pool_rc -eq 0 ]] || fail "the pooler's exit status is $pool_rc after SIG$sig"
    fi
}

pq() {
    local user=$1
    shift
    PGPASSWORD=${PQPASS-${pw_of[$user]-}} PGCONNECT_TIMEOUT=10 timeout "${PQ_TIMEOUT:-30}" \
        psql -X -q -At -w -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$pool_port" -U "$user" -d keeldb "$@"
}

admin() {
    run_as_user env PGCONNECT_TIMEOUT=10 timeout "${PQ_TIMEOUT:-30}" psql -X -q -At -w -v ON_ERROR_STOP=1 -h "$tmp" -p "$pool_port" \
        -U pgbouncer -d pgbouncer -c "$1"
}

admin_hdr() {
    run_as_user env PGCONNECT_TIMEOUT=10 timeout "${PQ_TIMEOUT:-30}" psql -X -q -A -F, -P footer=off -w -v ON_ERROR_STOP=1 \
        -h "$tmp" -p "$pool_port" -U pgbouncer -d pgbouncer -c "$1"
}

admin_tcp() {
    PGPASSWORD=${pw_of[postgres]} PGCONNECT_TIMEOUT=10 timeout "${PQ_TIMEOUT:-30}" psql -X -q -At -w -v ON_ERROR_STOP=1 \
        -h 127.0.0.1 -p "$pool_port" -U postgres -d pgbouncer -c "$1"
}

# server_count: server connections of keeldb as SHOW SERVERS lists them.
server_count() { admin "SHOW SERVERS" | awk -F'|' '$3 == "keeldb"' | wc -l; }
# pg_keeldb_conns: client backends of keeldb in PostgreSQL (not ours).
pg_keeldb_conns() {
    pg_psql -d postgres -c "SELECT count(*) FROM pg_stat_activity WHERE datname = 'keeldb' AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
}

# Long-lived psql sessions through the pooler, fed through a FIFO, for
# clients that must stay connected (idle, inside BEGIN, LISTENing...).
#   sess_open NAME USER         starts it (psql -At, errors do not stop it)
#   sess_run NAME SQL [SECS]    sends SQL, waits (SECS, 10) until psql has
#                               run it; prints what it printed (stdout and
#                               stderr); fails the test on timeout. If psql
#                               exited (connection lost), the output ends
#                               with "[session NAME: psql exited]".
#   sess_send NAME SQL          sends without waiting
#   sess_close NAME             \q, waits for psql to exit
#   sess_alive NAME             true while its psql runs
declare -A sess_fd=() sess_pid=()
sess_open() {
    local name=$1 user=$2 fd
    rm -f "$tmp/$name.in"
    mkfifo "$tmp/$name.in"
    PGPASSWORD=${PQPASS-${pw_of[$user]-}} PGCONNECT_TIMEOUT=10 psql -X -q -At -w -v ON_ERROR_STOP=0 \
        -h 127.0.0.1 -p "$pool_port" -U "$user" -d keeldb <"$tmp/$name.in" >"$tmp/$name.out" 2>&1 &
    sess_pid[$name]=$!
    bg_pids+=($!)
    exec {fd}>"$tmp/$name.in"
    sess_fd[$name]=$fd
    [[ $(sess_run "$name" "SELECT 1") == 1 ]] || fail "session $name: could not connect: $(cat "$tmp/$name.out")"
}
sess_send() { { printf '%s\n' "$2" >&"${sess_fd[$1]}"; } 2>/dev/null || true; }
sess_alive() { kill -0 "${sess_pid[$1]}" 2>/dev/null; }
sess_run() {
    local name=$1 secs=${3:-10} n i start
    # Unique without state: sess_run mostly runs in a $(...) subshell.
    n=$BASHPID.$(date +%s%N)
    start=$(grep -c '' "$tmp/$name.out" || true)
    local sql=$2
    [[ $sql == *\; || $sql == \\* ]] || sql+=";"
    sess_send "$name" "$sql"
    sess_send "$name" "\\echo __mark_$n"
    for ((i = 0; i < secs * 20; i++)); do
        if grep -q "^__mark_$n\$" "$tmp/$name.out"; then
            sed -n "$((start + 1)),\$p" "$tmp/$name.out" | { grep -v '^__mark_' || true; }
            return 0
        fi
        if ! sess_alive "$name"; then
            sed -n "$((start + 1)),\$p" "$tmp/$name.out" | { grep -v '^__mark_' || true; }
            echo "[session $name: psql exited]"
            return 0
        fi
        sleep 0.05
    done
    fail "session $name: '$2' not done after $secs s: $(tail -n 5 "$tmp/$name.out")"
}
sess_close() {
    local name=$1
    sess_send "$name" '\q'
    local fd=${sess_fd[$name]}
    exec {fd}>&-
    wait "${sess_pid[$name]}" 2>/dev/null || true
}
