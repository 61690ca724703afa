#!/usr/bin/env bash
# Installs the Debian packages keel needs to build, test and benchmark,
# and only those that are missing: silent and instant when all are there.
set -euo pipefail

pkgs=(
  cmake make gcc pkg-config
  liburing-dev libjemalloc-dev libck-dev libcriterion-dev
  redis-tools redis-server
  libssl-dev libpq-dev postgresql-15 postgresql-client-15 pgbouncer
  curl jq tmux prometheus
  fio
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

# redis-server's package starts a system Redis on port 6379 when installed.
# keel's tests and benchmarks start their own, on ephemeral ports: keep the
# system one from starting (policy-rc.d, which invoke-rc.d and
# deb-systemd-invoke obey), and stop and disable it afterwards in case it
# started anyway (a policy-rc.d that allows it, a manager that ignores it).
policy=/usr/sbin/policy-rc.d
if [[ ! -e $policy ]]; then
  trap 'rm -f "$policy"' EXIT
  printf '#!/bin/sh\n# keel tools/deps.sh: no service starts during this install\nexit 101\n' >"$policy"
  chmod 755 "$policy"
fi
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

if [[ " ${missing[*]} " == *" redis-server "* ]]; then
  if [[ -d /run/systemd/system ]]; then
    systemctl disable --now redis-server >/dev/null 2>&1 || true
  else
    update-rc.d redis-server disable >/dev/null 2>&1 || true
    if [[ -x /etc/init.d/redis-server ]]; then
      /etc/init.d/redis-server stop >/dev/null 2>&1 || true
    fi
  fi
  # Started by something else all the same: Debian's redis.conf names its pidfile.
  pidfile=/run/redis/redis-server.pid
  if [[ -s $pidfile ]]; then
    kill -TERM "$(cat "$pidfile")" 2>/dev/null || true
  fi
fi
