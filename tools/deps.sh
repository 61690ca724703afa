#!/usr/bin/env bash
# Installs the Debian packages keel needs to build, test and benchmark,
# and only those that are missing: silent and instant when all are there.
set -euo pipefail

pkgs=(
  cmake make gcc pkg-config
  liburing-dev libjemalloc-dev libck-dev libcriterion-dev
  redis-tools
)

missing=()
for p in "${pkgs[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ $status == "install ok installed" ]] || missing+=("$p")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

if [[ $(id -u) -ne 0 ]]; then
  echo "keel: missing packages: ${missing[*]}" >&2
  echo "keel: install them as root: apt-get update && apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "keel: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
