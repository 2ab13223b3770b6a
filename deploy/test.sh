#!/usr/bin/env bash
# The whole test suite: formatting, lints, then every unit, integration and privileged test.
# Privileged tests must run (TEND_REQUIRE_PRIVILEGED=1 turns a skip into a failure).
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/setup-host.sh
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
export TEND_REQUIRE_PRIVILEGED=1
cargo nextest run --workspace --no-fail-fast --failure-output final
# Every fuzz target for a bounded time (FUZZ_SECONDS each, default 20).
deploy/fuzz.sh
