#!/usr/bin/env bash
# The whole test suite: formatting, lints, Rust unit and integration tests, pytest black-box
# tests of the release binary. Installs what it needs first (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
echo "== cargo fmt"
cargo fmt --all --check
echo "== cargo clippy"
cargo clippy --locked --workspace --all-targets -- -D warnings
echo "== cargo test"
cargo test --locked --workspace
echo "== pytest"
COVIDCT_BIN="$PWD/target/release/covidct" .venv/bin/python -m pytest tests -q
