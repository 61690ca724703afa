#!/usr/bin/env bash
# HRANDFIELD's random replies, which kv_diff cannot compare: their shapes
# and properties as Redis 7.0 defines them, in both encodings (listpack:
# 10 fields, hashtable: 1000).
#   - no count: one field of the hash;
#   - a positive count below the size: that many distinct fields (in a
#     random order: 7.0 does not keep a listpack's order, 7.2 does);
#   - a count of at least the size: the whole hash;
#   - a negative count: exactly that many, repeats allowed, every field
#     reachable;
#   - WITHVALUES: each field with its own value, flat in RESP2 and as
#     [field, value] pairs in RESP3.
# And HSCAN over a hashtable (table order, server-specific cursors).
# usage: kv_hash_random.sh KEEL_KV_BIN
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/kv_lib.sh"

start_kv

# small: f0..f9 with values v0..v9; large: g0..g999 with values w0..w999
R hset small $(for i in $(seq 0 9); do echo "f$i v$i"; done) >/dev/null
R hset large $(for i in $(seq 0 999); do echo "g$i w$i"; done) >/dev/null
[[ $(R object encoding small) == listpack ]] || fail "small is $(R object encoding small)"
[[ $(R object encoding large) == hashtable ]] || fail "large is $(R object encoding large)"
R hkeys small >"$work/small.keys"
R hkeys large >"$work/large.keys"

# is_member KEY FIELD
is_member() { [[ $(R hexists "$1" "$2") == 1 ]]; }

for key in small large; do
    size=$(R hlen $key)
    sort "$work/$key.keys" >"$work/$key.sorted"

    # No count: a field of the hash.
    for _ in $(seq 20); do
        f=$(R hrandfield $key)
        is_member $key "$f" || fail "HRANDFIELD $key: '$f' is not a field"
    done

    # Positive counts below the size: distinct fields of the hash.
    for count in 1 2 3 $((size / 3)) $((size / 3 + 1)) $((size - 1)); do
        for _ in $(seq 5); do
            R hrandfield $key $count >"$work/got"
            [[ $(wc -l <"$work/got") -eq $count ]] ||
                fail "HRANDFIELD $key $count: $(wc -l <"$work/got") fields"
            [[ $(sort -u "$work/got" | wc -l) -eq $count ]] ||
                fail "HRANDFIELD $key $count: repeated fields"
            [[ -z $(sort "$work/got" | comm -23 - "$work/$key.sorted") ]] ||
                fail "HRANDFIELD $key $count: fields not in the hash"
        done
    done

    # The order is random too: 20 samples of 4 are not all in the hash's order.
    unordered=0
    for _ in $(seq 20); do
        R hrandfield $key 4 >"$work/got"
        grep -nxFf "$work/got" "$work/$key.keys" | cut -d: -f2 >"$work/ordered"
        cmp -s "$work/got" "$work/ordered" || unordered=1
    done
    ((unordered)) || fail "HRANDFIELD $key 4 always answers in the hash's order"

    # At least the size: the whole hash.
    for count in $size $((size + 1)) 100000; do
        R hrandfield $key $count | sort >"$work/got"
        cmp -s "$work/got" "$work/$key.sorted" || fail "HRANDFIELD $key $count is not the whole hash"
    done

    # Negative counts: that many, repeats allowed, every field reachable.
    n=$((size * 40))
    R hrandfield $key -$n >"$work/got"
    [[ $(wc -l <"$work/got") -eq $n ]] || fail "HRANDFIELD $key -$n: $(wc -l <"$work/got") fields"
    [[ -z $(sort -u "$work/got" | comm -23 - "$work/$key.sorted") ]] ||
        fail "HRANDFIELD $key -$n: fields not in the hash"
    distinct=$(sort -u "$work/got" | wc -l)
    ((distinct * 100 >= size * 95)) ||
        fail "HRANDFIELD $key -$n reached only $distinct of $size fields"
    [[ $(R hrandfield $key -1 | wc -l) -eq 1 ]] || fail "HRANDFIELD $key -1"

    # WITHVALUES, RESP2: field, value, flat, each value the field's.
    for count in 3 -25 $((size + 5)); do
        R hrandfield $key $count withvalues >"$work/got"
        want=$((count < 0 ? -count : (count > size ? size : count)))
        [[ $(wc -l <"$work/got") -eq $((want * 2)) ]] ||
            fail "HRANDFIELD $key $count WITHVALUES: $(wc -l <"$work/got") lines, want $((want * 2))"
        vp=$([[ $key == small ]] && echo v || echo w)
        paste - - <"$work/got" | while read -r f v; do
            [[ $v == "$vp${f:1}" ]] || exit 1
        done || fail "HRANDFIELD $key $count WITHVALUES: a value is not its field's"
    done

    # WITHVALUES, RESP3: an array of [field, value] pairs.
    redis-cli -3 -p "$kv_port" --no-raw hrandfield $key -4 withvalues >"$work/got"
    [[ $(grep -cE '^[0-9]+\) 1\) "[fg][0-9]+"$' "$work/got") -eq 4 &&
        $(grep -cE '^ +2\) "[vw][0-9]+"$' "$work/got") -eq 4 ]] ||
        fail "HRANDFIELD $key -4 WITHVALUES in RESP3 is not 4 pairs: $(cat "$work/got")"
    redis-cli -3 -p "$kv_port" --no-raw hrandfield $key 2 >"$work/got"
    [[ $(grep -cE '^[0-9]+\) "[fg][0-9]+"$' "$work/got") -eq 2 ]] ||
        fail "HRANDFIELD $key 2 in RESP3 is not 2 fields: $(cat "$work/got")"
done

# HSCAN over a hashtable, whose cursors and order kv_diff cannot compare
# either: a full iteration visits every field with its value; a call
# returns about COUNT fields (Redis doubles COUNT for a hash's pairs), at
# least that many unless it ended, more by at most a bucket's chain.
for count in 1 10 100; do
    cursor=0
    : >"$work/scan"
    calls=0
    while :; do
        R hscan large $cursor count $count >"$work/page" 2>&1 || fail "HSCAN: $(cat "$work/page")"
        cursor=$(head -n 1 "$work/page")
        [[ $cursor =~ ^[0-9]+$ ]] || fail "HSCAN large $cursor: not a cursor: '$cursor'"
        tail -n +2 "$work/page" >>"$work/scan"
        n=$(($(wc -l <"$work/page") - 1))
        ((n <= count * 2 + 32)) || fail "HSCAN large COUNT $count returned $n elements"
        ((cursor == 0 || n >= count * 2)) || fail "HSCAN large COUNT $count returned only $n elements"
        calls=$((calls + 1))
        [[ $cursor == 0 ]] && break
        ((calls < 10000)) || fail "HSCAN large COUNT $count does not end"
    done
    paste - - <"$work/scan" | while read -r f v; do
        [[ $v == "w${f:1}" ]] || exit 1
    done || fail "HSCAN large COUNT $count: a value is not its field's"
    paste - - <"$work/scan" | cut -f1 | sort -u >"$work/got"
    cmp -s "$work/got" "$work/large.sorted" || fail "HSCAN large COUNT $count missed fields"
done
R hscan large 0 match 'g99?' count 100000 | tail -n +2 | paste - - | sort >"$work/got"
printf 'g99%d\tw99%d\n' 0 0 1 1 2 2 3 3 4 4 5 5 6 6 7 7 8 8 9 9 >"$work/want"
cmp -s "$work/got" "$work/want" || fail "HSCAN large MATCH g99?: $(cat "$work/got")"

# A negative count too large to answer is refused (Redis would try to
# build the reply and exhaust memory), and the connection lives on.
got=$(R hrandfield small -9223372036854775807)
[[ $got == "ERR keel: HRANDFIELD count too large for one reply" ]] ||
    fail "HRANDFIELD small -9223372036854775807: '$got'"
[[ $(R hlen small) == 10 ]] || fail "HLEN after the refused HRANDFIELD"

stop_kv
echo "PASS: HRANDFIELD's random replies and HSCAN over a hashtable have Redis's properties"
