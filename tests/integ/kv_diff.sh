#!/usr/bin/env bash
# Differential test: keel-kv must answer every command of a case file as a
# real redis-server does, byte for byte as redis-cli prints it, in RESP2 and
# in RESP3 (redis-cli -3).
#
# usage: tests/integ/kv_diff.sh KEEL_KV_BIN CASEFILE...
# env:   KV_DIFF_PROTOCOLS ("2 3"): the protocols to run, e.g. "2" for RESP2 only.
#        KV_DIFF_TIMEOUT (60): seconds a file may take on a server, @sleep not counted.
#        KV_DIFF_VERBOSE (unset): 1 also prints redis-server's replies in full.
#
# Case files (tests/integ/kv_cases/*.txt, each registered with ctest as
# kv_diff_<name>): one redis-cli command line per line, quoted as at the
# redis-cli prompt ("a b", 'c', "\x00"). Blank lines and lines starting with
# # are ignored, and:
#     @sleep MS       waits MS milliseconds, counted from the previous reply,
#                     before the next command (expiry);
#     @any CMD...     runs CMD on both servers but does not compare its reply
#                     (random or time-dependent replies: SPOP, TTL, ...).
# The commands of a file go through one redis-cli per server and protocol,
# one connection, one command at a time, after a FLUSHALL. Each command is
# preceded by an ECHO marker so that its reply can be paired with it: inside
# MULTI the markers are queued too (QUEUED, then inside EXEC's reply). As at
# the redis-cli prompt, a line starting with a number repeats the command
# ("3 INCR k"), and QUIT/EXIT end the file.
#
# Exit status: 0 when every reply matches, 1 otherwise. Under the sanitizer
# build any sanitizer report in keel-kv's output fails the test as well.
if [[ $# -lt 2 ]]; then
    echo "usage: $0 KEEL_KV_BIN CASEFILE..." >&2
    exit 2
fi
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/kv_lib.sh"
shift
protocols=${KV_DIFF_PROTOCOLS:-"2 3"}

restart_note=
# A fresh keyspace on both: FLUSHALL, or, while keel-kv has no FLUSHALL, a fresh keel-kv.
reset_servers() {
    local r
    r=$(timeout -k 5 30 redis-cli -p "$rs_port" flushall 2>&1)
    [[ $r == OK ]] || fail "FLUSHALL on redis-server: $r"
    r=$(timeout -k 5 30 redis-cli -p "$kv_port" flushall 2>&1)
    if [[ $r != OK ]]; then
        if [[ -z $restart_note ]]; then
            restart_note=1
            echo "kv_diff: note: keel-kv answers FLUSHALL with '$r': restarting it instead"
        fi
        stop_kv 30
        start_kv
    fi
}

start_redis
start_kv
rs_version=$(redis-server --version | sed -nE 's/.*v=([0-9.]+).*/\1/p')

# ---- case files --------------------------------------------------------------------

# prepare CASEFILE: writes $work/cmds (the command lines, numbered by line),
# $work/any (1 where the reply is not compared), $work/feed.N (the chunks between
# @sleep lines, each command after its ECHO marker) and sets sleeps[N].
prepare() {
    rm -f "$work"/feed.* "$work/cmds" "$work/any"
    sleeps=()
    awk -v dir="$work" '
        function chunk_file() { return dir "/feed." chunk }
        BEGIN { chunk = 0; n = 0; printf "" > chunk_file() }
        {
            line = $0
            sub(/^[ \t]+/, "", line); sub(/[ \t\r]+$/, "", line)
            if (line == "" || line ~ /^#/) next
            if (line ~ /^@sleep[ \t]/) {
                ms = line; sub(/^@sleep[ \t]+/, "", ms)
                if (ms !~ /^[0-9]+$/) { print FILENAME ":" FNR ": bad @sleep: " $0 > "/dev/stderr"; exit 2 }
                print chunk, ms > (dir "/sleeps")
                close(chunk_file()); chunk++; printf "" > chunk_file()
                next
            }
            any = 0
            if (line ~ /^@any[ \t]/) { any = 1; sub(/^@any[ \t]+/, "", line) }
            else if (line ~ /^@/) { print FILENAME ":" FNR ": unknown directive: " $0 > "/dev/stderr"; exit 2 }
            n++
            print line > (dir "/cmds")
            print any > (dir "/any")
            print "ECHO @@kv_diff@@:" n > chunk_file()
            print line > chunk_file()
        }
        END { printf "" >> (dir "/cmds"); printf "" >> (dir "/any") }' "$1" || return 1
    if [[ -f $work/sleeps ]]; then
        while read -r c ms; do sleeps[c]=$ms; done <"$work/sleeps"
        rm -f "$work/sleeps"
    fi
    n_chunks=$(ls "$work"/feed.* | wc -l)
    # Time for redis-cli per file: the sleeps, and KV_DIFF_TIMEOUT for the rest.
    run_limit=$((${KV_DIFF_TIMEOUT:-60} + ($(printf '%s+' 0 "${sleeps[@]}")0) / 1000))
    n_cmds=$(wc -l <"$work/cmds")
}

# feed OUT: the chunks for redis-cli, and between two an @sleep counted from when
# redis-cli printed the reply to the chunk's last command (it prints each reply
# as it comes), not from when the chunk was written: on a busy machine
# redis-cli may run a command long after it was written.
feed() {
    local out=$1 c deadline
    for ((c = 0; c < n_chunks; c++)); do
        cat "$work/feed.$c"
        [[ -n ${sleeps[c]:-} ]] || continue
        echo "ECHO @@kv_diff@@:sync:$c"
        deadline=$((SECONDS + run_limit))
        while ((SECONDS < deadline)); do
            grep -qx "\"@@kv_diff@@:sync:$c\"" "$out" 2>/dev/null && break
            sleep 0.01
            # An empty line, which redis-cli ignores: if redis-cli is gone (timed
            # out), writing it ends this loop with SIGPIPE.
            echo || return
        done
        sleep "$(awk -v ms="${sleeps[c]}" 'BEGIN { print ms / 1000 }')"
    done
}

# run PORT PROTO OUT: the file's commands through one redis-cli, then its output
# rewritten so that each reply follows its command line ("> CMD").
run() {
    local port=$1 proto=$2 out=$3 opts=(--no-raw -p "$1")
    [[ $proto == 3 ]] && opts+=(-3)
    rm -f "$out.raw" # feed waits for markers in it: none may be left from the last run
    # Bounded: a server that stops answering must not hang the test.
    feed "$out.raw" | timeout -k 5 "$run_limit" redis-cli "${opts[@]}" >"$out.raw" 2>"$out.err"
    [[ ${PIPESTATUS[1]} -eq 124 ]] &&
        echo "--- redis-cli stopped after $run_limit s: no reply from the server" >>"$out.err"
    awk -v cmds="$work/cmds" -v anys="$work/any" '
        BEGIN {
            while ((getline l < cmds) > 0) cmd[++n] = l
            while ((getline l < anys) > 0) any[++m] = l
        }
        /^"@@kv_diff@@:[0-9]+"$/ {
            i = substr($0, 14, length($0) - 14) + 0
            print "> " cmd[i]
            skip = any[i]
            if (skip) print "(@any: reply not compared)"
            next
        }
        /^"@@kv_diff@@:sync:[0-9]+"$/ { next }
        !skip { print }' "$out.raw" >"$out"
    if [[ -s $out.err ]]; then
        echo "--- redis-cli stderr" >>"$out"
        cat "$out.err" >>"$out"
    fi
}

failed=0
for f in "$@"; do
    name=$(basename "$f")
    [[ -f $f ]] || fail "no case file '$f'"
    prepare "$f" || fail "bad case file '$f'"
    results=()
    for proto in $protocols; do
        reset_servers
        run "$rs_port" "$proto" "$work/redis.txt" &
        run_rs=$!
        run "$kv_port" "$proto" "$work/keel.txt" &
        run_kv=$!
        wait $run_rs $run_kv
        if ! kill -0 "$kv_pid" 2>/dev/null; then
            failed=1
            echo "kv_diff: FAIL $name (RESP$proto): keel-kv died during the file"
            diff -u -F '^> ' --label "redis-server $rs_version" --label keel-kv \
                "$work/redis.txt" "$work/keel.txt" | head -n 60
            fail "keel-kv crashed on $name"
        fi
        if [[ -n ${KV_DIFF_VERBOSE:-} ]]; then
            echo "=== $name (RESP$proto): redis-server's replies"
            cat "$work/redis.txt"
        fi
        if cmp -s "$work/redis.txt" "$work/keel.txt"; then
            results+=("RESP$proto ok")
        else
            failed=1
            results+=("RESP$proto DIFFERS")
            echo "kv_diff: FAIL $name (RESP$proto): replies differ (- redis-server, + keel-kv):"
            diff -u -F '^> ' --label "redis-server $rs_version (RESP$proto)" \
                --label "keel-kv (RESP$proto)" "$work/redis.txt" "$work/keel.txt"
        fi
    done
    echo "kv_diff: $name: $n_cmds commands: ${results[*]}"
done

stop_kv 30
stop_redis
if ((failed)); then
    echo "kv_diff: FAIL: keel-kv's replies differ from redis-server $rs_version's (diffs above)"
    exit 1
fi
echo "PASS: keel-kv answers $# case file(s) as redis-server $rs_version does (RESP ${protocols// /, })"
