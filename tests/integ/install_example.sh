#!/usr/bin/env bash
# `make install` must give users everything to build a service of their own
# with pkg-config: install into a staging prefix, build the README's example
# with `cc svc.c $(pkg-config --cflags --libs keel)`, run it.
set -euo pipefail
build=$1 src=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cmake --install "$build" --prefix "$work/stage" >/dev/null
pc=$(find "$work/stage" -name keel.pc | head -n1)
[[ -n $pc ]] || { echo "FAIL: make install put no keel.pc under the prefix"; exit 1; }

# The README is the source of truth: compile exactly what it shows.
sed -n '/<!-- example:begin -->/,/<!-- example:end -->/p' "$src/README.md" | sed '1,2d;$d' | sed '$d' \
  >"$work/svc.c"
grep -q 'keel_run' "$work/svc.c" || { echo "FAIL: no example found in README.md"; exit 1; }
if ! diff -q <(tail -n +3 "$src/examples/hello_svc.c") "$work/svc.c" >/dev/null; then
  echo "FAIL: examples/hello_svc.c differs from the README's example"; exit 1
fi

export PKG_CONFIG_PATH=$(dirname "$pc")
flags=$(pkg-config --define-variable=prefix="$work/stage" --cflags --libs keel)
cc -std=gnu11 -Wall -Wextra -Werror "$work/svc.c" $flags -o "$work/svc"

out=$("$work/svc" --shards 2 2>&1)
echo "$out"
grep -q '^shard 1 answered 1$' <<<"$out" || { echo "FAIL: unexpected output"; exit 1; }
echo "PASS: README example builds with pkg-config against a staged install and runs"
