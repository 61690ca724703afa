#!/usr/bin/env bash
# --trace FILE on the real keel-kv: redis-cli SETs and GETs keys of both
# shards (so commands hop between them with keel_submit_to), SIGTERM
# writes the trace at exit, and jq checks it is Chrome trace-event JSON
# with a track per shard, task slices on both, I/O events, and a flow
# for each cross-shard message, starts and finishes paired.
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/kv_lib.sh"
need jq

trace=$work/trace.json
start_kv --bind 127.0.0.1 --trace "$trace"
[[ -e $trace ]] && fail "the trace was written before tracing stopped"

# 4,000 commands in one pipeline on one connection: about half the keys
# belong to the other shard.
for i in $(seq 2000); do echo "SET trace:$i $i"; echo "GET trace:$i"; done >"$work/pipe.txt"
R <"$work/pipe.txt" >"$work/pipe.out" || fail "pipeline failed"
for i in $(seq 2000); do echo OK; echo "$i"; done >"$work/pipe.want"
cmp -s "$work/pipe.out" "$work/pipe.want" || fail "pipeline replies wrong: $(diff "$work/pipe.out" "$work/pipe.want" | head -5)"
# A few connections one after another, for accepts and receives.
for i in $(seq 5); do [[ $(R get "trace:$i") == "$i" ]] || fail "GET trace:$i"; done

stop_kv
[[ -s $trace ]] || fail "no trace at $trace after SIGTERM"
[[ -e $trace.tmp ]] && fail "the temporary file $trace.tmp was left behind"

# jq_is FILTER: FILTER must print true.
jq_is() {
    local got
    got=$(jq -e "$1" "$trace" 2>&1) || fail "trace check failed: $1 (jq: $got)"
}
# count COND: events matching a jq condition.
count() { jq "[.traceEvents[] | select($1)] | length" "$trace"; }

jq empty "$trace" 2>"$work/jq.err" || fail "the trace is not valid JSON: $(head -c 300 "$work/jq.err")"
jq_is '(.traceEvents | type == "array") and .displayTimeUnit == "ns"'
jq_is '[.traceEvents[] | select(.ph == "M" and .name == "thread_name") | .tid] | sort == [0, 1]'
jq_is '[.traceEvents[] | select(.ph == "M" and .name == "thread_name") | .args.name] | sort == ["shard 0", "shard 1"]'
jq_is 'all(.traceEvents[]; .pid == 1 and (.ts // 0) >= 0 and (.dur // 0) >= 0)'
for tid in 0 1; do
    n=$(count ".ph == \"X\" and .cat == \"task\" and .tid == $tid")
    ((n > 0)) || fail "no task slices on shard $tid"
done
n=$(count '.cat == "io" and (.name | startswith("complete"))')
((n > 0)) || fail "no I/O completions in the trace"

# Flows: every start has exactly one finish with its id and the other way
# round, and messages went both ways.
# shellcheck disable=SC2016 # $s and $f are jq's
jq_is '[.traceEvents[] | select(.ph == "s") | .id] as $s
     | [.traceEvents[] | select(.ph == "f") | .id] as $f
     | ($s | sort) == ($f | sort) and ($s | length) == ($s | unique | length)'
jq_is 'all(.traceEvents[] | select(.ph == "f"); .bp == "e" and .cat == "xshard")'
for dir in "0 1" "1 0"; do
    read -r from to <<<"$dir"
    n=$(jq "INDEX(.traceEvents[] | select(.ph == \"s\" and .tid == $from); .id | tostring) as \$s
          | [.traceEvents[] | select(.ph == \"f\" and .tid == $to and \$s[.id | tostring])]
          | length" "$trace")
    ((n > 0)) || fail "no flow from shard $from to shard $to"
done
echo "trace: $(count '.ph != "M"') events, $(count '.ph == "s"') flows, $(stat -c %s "$trace") bytes: OK"
