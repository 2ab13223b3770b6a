#!/usr/bin/env bash
# Installs tend as a systemd service: the binary to /usr/local/bin, the unit to
# /etc/systemd/system, then enables and starts it. Usage: deploy/install.sh [PATH-TO-tend]
# (default: a release build, made here when missing). Re-running upgrades in place: the
# service restarts, and its workloads keep running (KillMode=process).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then exec sudo -E "$0" "$@"; fi
bin=${1:-target/release/tend}
if [ ! -x "$bin" ]; then
  cargo build --release --bin tend
fi
install -D -m 0755 "$bin" /usr/local/bin/tend
install -D -m 0644 deploy/tend.service /etc/systemd/system/tend.service
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  systemctl enable tend.service
  systemctl restart tend.service
  systemctl --no-pager status tend.service | head -5
else
  echo "install: systemd is not running here; installed /usr/local/bin/tend and the unit only" >&2
  exit 1
fi
