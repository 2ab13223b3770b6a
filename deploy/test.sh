#!/usr/bin/env bash
# The whole test suite: formatting, lints, then every unit, integration and privileged test,
# then every fuzz target for a bounded time. Ends with one line: "tend: N passed, N failed".
# Privileged tests must run (TEND_REQUIRE_PRIVILEGED=1 turns a skip into a failure).
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/setup-host.sh
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
export TEND_REQUIRE_PRIVILEGED=1
summary=$(mktemp)
trap 'rm -f "$summary"' EXIT
cargo nextest run --workspace --no-fail-fast --failure-output final 2>&1 | tee "$summary"
# Every fuzz target for a bounded time (FUZZ_SECONDS each, default 20).
deploy/fuzz.sh
# nextest's summary: "Summary [ 45s] 230 tests run: 230 passed, 0 skipped" (or "... N failed").
line=$(grep -E "^\s*Summary \[" "$summary" | tail -1)
passed=$(echo "$line" | grep -oE "[0-9]+ passed" | grep -oE "[0-9]+" || echo 0)
failed=$(echo "$line" | grep -oE "[0-9]+ failed" | grep -oE "[0-9]+" || echo 0)
echo "tend: ${passed} passed, ${failed} failed"
