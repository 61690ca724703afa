#!/usr/bin/env bash
# Runs every test of the Release build, then, in the sanitizer build, the
# unit tests and the integration tests labelled "asan" (leaks, memory
# safety). Exits non-zero if any test failed; ends with the summary.
set -u
cd "$(dirname "$0")/.."

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:halt_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

summary() { # log -> "passed failed"
  sed -nE 's/.*tests passed, ([0-9]+) tests failed out of ([0-9]+).*/\1 \2/p' "$1" | tail -n1
}

rel_log=$(mktemp) asan_log=$(mktemp)
trap 'rm -f "$rel_log" "$asan_log"' EXIT

echo "== Release build (build/): every test"
ctest --test-dir build --output-on-failure --timeout 600 2>&1 | tee "$rel_log"
rel_rc=${PIPESTATUS[0]}

echo "== Sanitizer build (build-asan/): unit tests and the leak/memory-safety integration tests"
ctest --test-dir build-asan -L asan --output-on-failure --timeout 900 2>&1 | tee "$asan_log"
asan_rc=${PIPESTATUS[0]}

read -r rf rt <<<"$(summary "$rel_log")"
read -r af at <<<"$(summary "$asan_log")"
rf=${rf:-0} rt=${rt:-0} af=${af:-0} at=${at:-0}
failed=$((rf + af))
passed=$((rt - rf + at - af))
echo
echo "Release: $((rt - rf))/$rt passed; sanitizer: $((at - af))/$at passed"
echo "tests: $passed passed, $failed failed"
if [[ $rel_rc -ne 0 || $asan_rc -ne 0 || $((rt + at)) -eq 0 ]]; then
  exit 1
fi
