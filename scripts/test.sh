#!/usr/bin/env bash
# The whole test suite: formatting, lints, Rust unit and integration tests, pytest black-box
# tests of the release binary and the monitoring job's tests (monitoring/tests). Installs what it
# needs first (scripts/setup.sh) and fetches the registry-shipped ImageNet weights and sample
# photos the model tests use.
#
# Rust tests run with `--release`: numeric code needs optimisation, and sharing the release
# profile with the binary compiles the dependencies (burn among them) once instead of twice.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
# shellcheck disable=SC2046
export $(bash scripts/fetch-weights.sh)
echo "== cargo fmt"
cargo fmt --all --check
echo "== cargo clippy"
cargo clippy --locked --workspace --all-targets -- -D warnings
echo "== cargo test"
cargo test --locked --release --workspace
echo "== pytest"
# --rootdir: keeps monitoring/pyproject.toml from becoming pytest's rootdir and configuration.
COVIDCT_BIN="$PWD/target/release/covidct" .venv/bin/python -m pytest --rootdir=. tests monitoring/tests -q
