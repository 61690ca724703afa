#!/usr/bin/env bash
# Set replies whose order is a hash table's: keel-kv must reply the same
# members as redis-server 7.0 (in any order) for SMEMBERS, SINTER, SUNION,
# SDIFF, SPOP and SRANDMEMBER with a count covering the set, and a full
# SSCAN iteration must visit every member; random replies (SPOP,
# SRANDMEMBER) must have the right size, be distinct when Redis's are, and
# be (or have been) members. kv_cases/set_*.txt cover everything ordered.
#
# usage: tests/integ/kv_set_unordered.sh KEEL_KV_BIN
# Starts its own redis-server and keel-kv (2 shards) on free ports; runs
# the checks in RESP2 and RESP3. Exit status 0 when all hold, 1 otherwise.
if [[ $# -ne 1 ]]; then
    echo "usage: $0 KEEL_KV_BIN" >&2
    exit 2
fi
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/kv_lib.sh"

start_redis
start_kv

failures=0
checks=0
proto_opt=()

# cli PORT ARGS...: one command, its reply one element a line.
cli() {
    local port=$1
    shift
    redis-cli "${proto_opt[@]}" -p "$port" "$@"
}

# same ARGS...: both servers reply the same lines, in any order.
same() {
    checks=$((checks + 1))
    cli "$rs_port" "$@" | sort >"$work/rs.txt"
    cli "$kv_port" "$@" | sort >"$work/kv.txt"
    if [[ ! -s $work/rs.txt ]]; then
        failures=$((failures + 1))
        echo "kv_set_unordered: FAIL: $*: redis-server replied nothing (a broken check)"
    elif ! cmp -s "$work/rs.txt" "$work/kv.txt"; then
        failures=$((failures + 1))
        echo "kv_set_unordered: FAIL (${proto_opt[*]:-RESP2}): $* (sorted, - redis-server, + keel-kv):"
        diff -u "$work/rs.txt" "$work/kv.txt" | head -n 20
    fi
}

# expect WHAT GOT WANT: a property of one server's reply.
expect() {
    checks=$((checks + 1))
    if [[ $2 != "$3" ]]; then
        failures=$((failures + 1))
        echo "kv_set_unordered: FAIL (${proto_opt[*]:-RESP2}): $1: got '$2', want '$3'"
    fi
}

# random_checks PORT NAME: SPOP and SRANDMEMBER properties on one server.
random_checks() {
    local port=$1 name=$2 out n
    # distinct members, all in the set
    out=$(cli "$port" srandmember h 7)
    expect "$name SRANDMEMBER h 7: count" "$(wc -l <<<"$out")" 7
    expect "$name SRANDMEMBER h 7: distinct" "$(sort -u <<<"$out" | wc -l)" 7
    # shellcheck disable=SC2046
    expect "$name SRANDMEMBER h 7: members" "$(cli "$port" smismember h $out | sort -u)" 1
    out=$(cli "$port" srandmember h 150) # more than a third: by elimination
    expect "$name SRANDMEMBER h 150: distinct" "$(sort -u <<<"$out" | wc -l)" 150
    # shellcheck disable=SC2046
    expect "$name SRANDMEMBER h 150: members" "$(cli "$port" smismember h $out | sort -u)" 1
    out=$(cli "$port" srandmember h -500)
    expect "$name SRANDMEMBER h -500: count" "$(wc -l <<<"$out")" 500
    # shellcheck disable=SC2046
    expect "$name SRANDMEMBER h -500: members" "$(cli "$port" smismember h $(sort -u <<<"$out") | sort -u)" 1
    out=$(cli "$port" srandmember i 3) # an intset
    expect "$name SRANDMEMBER i 3: distinct" "$(sort -u <<<"$out" | wc -l)" 3
    # shellcheck disable=SC2046
    expect "$name SRANDMEMBER i 3: members" "$(cli "$port" smismember i $out | sort -u)" 1

    # popped members are gone, the rest stay
    cli "$port" sunionstore p h >/dev/null
    out=$(cli "$port" spop p 5)
    expect "$name SPOP p 5: distinct" "$(sort -u <<<"$out" | wc -l)" 5
    # shellcheck disable=SC2046
    expect "$name SPOP p 5: gone" "$(cli "$port" smismember p $out | sort -u)" 0
    # shellcheck disable=SC2046
    expect "$name SPOP p 5: were members" "$(cli "$port" smismember h $out | sort -u)" 1
    expect "$name SPOP p 5: left" "$(cli "$port" scard p)" 195
    out=$(cli "$port" spop p 180) # most of it: the rest is rebuilt
    expect "$name SPOP p 180: distinct" "$(sort -u <<<"$out" | wc -l)" 180
    # shellcheck disable=SC2046
    expect "$name SPOP p 180: gone" "$(cli "$port" smismember p $out | sort -u)" 0
    expect "$name SPOP p 180: left" "$(cli "$port" scard p)" 15
    n=$(cli "$port" spop p)
    expect "$name SPOP p: gone" "$(cli "$port" sismember p "$n")" 0
    expect "$name SPOP p: was a member" "$(cli "$port" sismember h "$n")" 1
    # the rest: SPOP p with a count covering it, and the key is gone
    out=$(cli "$port" spop p 100)
    expect "$name SPOP p 100: rest" "$(wc -l <<<"$out")" 14
    expect "$name SPOP p 100: key deleted" "$(cli "$port" exists p)" 0
}

# sscan_all PORT KEY [MATCH PAT]: every member an SSCAN iteration returns.
sscan_all() {
    local port=$1 key=$2 cursor=0 out
    shift 2
    while :; do
        out=$(cli "$port" sscan "$key" "$cursor" count 7 "$@") || return 1
        cursor=$(head -n1 <<<"$out")
        tail -n +2 <<<"$out"
        [[ $cursor == 0 ]] && break
    done
}

for proto in 2 3; do
    proto_opt=()
    [[ $proto == 3 ]] && proto_opt=(-3)
    for port in "$rs_port" "$kv_port"; do
        cli "$port" flushall >/dev/null
        # h: 200 words; i: an intset; hi: a hashtable of integers only
        # shellcheck disable=SC2046
        cli "$port" sadd h $(seq -f 'm%g' 1 200) >/dev/null
        # shellcheck disable=SC2046
        cli "$port" sadd g $(seq -f 'm%g' 150 260) $(seq 1 20) >/dev/null
        # shellcheck disable=SC2046
        cli "$port" sadd i $(seq 1 30) >/dev/null
        # shellcheck disable=SC2046
        cli "$port" sadd hi $(seq 1000 1700) >/dev/null
        cli "$port" sadd w x y z 1 2 3 >/dev/null
    done

    same smembers h
    same smembers g
    same smembers hi
    same smembers w
    same sinter h g
    same sinter g h
    same sinter g i w
    same sunion h g
    same sunion w i
    same sdiff h g
    same sdiff g h
    same sdiff g h i
    same sdiff w i
    same srandmember h 1000
    same srandmember hi 701
    same sinterstore s1 h g
    same smembers s1
    same sunionstore s2 g w hi
    same smembers s2
    same sdiffstore s3 g h
    same smembers s3
    same object encoding s3
    same sdiffstore s4 w i
    same smembers s4
    same object encoding s4

    # full SSCAN iterations visit every member, once
    for port in "$rs_port" "$kv_port"; do
        name=$([[ $port == "$rs_port" ]] && echo redis-server || echo keel-kv)
        for key in h hi i g; do
            got=$(sscan_all "$port" "$key" | sort)
            want=$(cli "$port" smembers "$key" | sort)
            expect "$name SSCAN $key: every member" "$got" "$want"
        done
        got=$(sscan_all "$port" h match 'm1?' | sort | tr '\n' ' ')
        expect "$name SSCAN h MATCH m1?: every match" "$got" \
            "$(seq -f 'm%g' 10 19 | sort | tr '\n' ' ')"
        random_checks "$port" "$name"
    done
    same smembers p
    same spop h 1000
    same exists h
done

stop_redis
stop_kv
if ((failures)); then
    echo "kv_set_unordered: FAIL: $failures of $checks checks"
    exit 1
fi
echo "PASS: kv_set_unordered: $checks checks hold on redis-server and keel-kv"
