#!/usr/bin/env bash
# Runs tend on its embedded default (SQLite store, btrfs loop image or copy backend, native
# runtime), applies the example specs and shows them converging. Needs root (re-runs itself with
# sudo when not root).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then exec sudo -E "$0" "$@"; fi
echo "quickstart: checking the host's packages (deploy/setup-host.sh)"
deploy/setup-host.sh
# The first build compiles a few hundred crates (minutes on two cores): cargo's own progress
# lines say where it is.
echo "quickstart: building tend (cargo build --release; the first build takes minutes)"
cargo build --release
echo "quickstart: starting tend serve on ${TEND_STATE_DIR:-/var/lib/tend}"
tend=target/release/tend
state=${TEND_STATE_DIR:-/var/lib/tend}
export TEND_STATE_DIR=$state

# The example State imports this directory: a tiny rootfs made from busybox-static.
rootfs=/var/lib/tend-examples/busybox-rootfs
if [ ! -x "$rootfs/bin/busybox" ]; then
  mkdir -p "$rootfs"/{bin,etc,tmp,proc,sys,dev,data}
  cp /bin/busybox "$rootfs/bin/busybox"
  for a in sh echo sleep cat ls hostname ps id wc nc ip ping env; do ln -sf busybox "$rootfs/bin/$a"; done
fi

"$tend" serve > "/tmp/tend-quickstart.log" 2>&1 &
serve=$!
trap 'kill -TERM $serve 2>/dev/null; wait $serve 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do [ -f "$state/engine.json" ] && break; sleep 0.1; done

"$tend" apply -f specs/
echo
for _ in $(seq 1 30); do
  "$tend" get all
  not_ready=$("$tend" get all -o json | python3 -c 'import json,sys; print(sum(1 for o in json.load(sys.stdin)["items"] if not any(c.get("type")=="Ready" and c.get("status")=="True" for c in (o.get("status") or {}).get("conditions",[]))))')
  [ "$not_ready" = 0 ] && { echo; echo "all objects Ready"; break; }
  echo "--- $not_ready object(s) not Ready yet"; sleep 1
done
echo
echo "daemon log: /tmp/tend-quickstart.log; state dir: $state"
echo "the daemon stops when this script exits; workloads keep running under their shims and the"
echo "objects stay in the store: 'tend serve' picks them up again, 'tend delete -f specs/ --wait' removes them"
