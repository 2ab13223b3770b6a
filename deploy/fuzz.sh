#!/usr/bin/env bash
# Runs every cargo-fuzz target of fuzz/ for a bounded time (FUZZ_SECONDS each, default 20) on
# the stable toolchain: cargo-fuzz needs nightly flags (-Zsanitizer), which RUSTC_BOOTSTRAP=1
# allows on stable. A crash fails the script; the reproducer is in fuzz/artifacts/<target>/
# and belongs in a regression test of the normal suite.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${FUZZ_SECONDS:-20}
export RUSTC_BOOTSTRAP=1
cargo fuzz build -O
for target in $(cargo fuzz list); do
  echo "fuzz: $target for ${seconds}s"
  mkdir -p "corpus/$target"
  log=$(mktemp)
  status=0
  cargo fuzz run -O "$target" "corpus/$target" -- \
    -max_total_time="$seconds" -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 >"$log" 2>&1 || status=$?
  grep -E "^stat::number_of_executed_units|^stat::new_units_added|panicked|SUMMARY|ERROR" "$log" || true
  if [ "$status" -ne 0 ]; then
    tail -40 "$log" >&2
    rm -f "$log"
    echo "fuzz: $target found a crash; the input is in fuzz/artifacts/$target/" >&2
    exit 1
  fi
  rm -f "$log"
done
echo "fuzz: all targets clean"
