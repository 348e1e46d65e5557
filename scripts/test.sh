#!/usr/bin/env bash
# The whole test suite: formatting, lints (with the offline validation of the CI pipeline and
# the Swarm stack), Rust unit and integration tests, pytest black-box tests of the release
# binary and the monitoring job's tests (monitoring/tests). Installs what it needs first (scripts/setup.sh) and fetches the registry-shipped
# ImageNet weights and sample photos the model tests use.
# Usage: scripts/test.sh [PHASE…]  with phases lint, rust, pytest (the default: all three; the
# GitLab jobs run them separately) and delivery: the real Docker Swarm deployment
# (scripts/swarm-test.sh), not in the default run because building its images from scratch
# takes longer than CI's time allows on 2 cores (docs/OPERATIONS.md has the measurements).
#
# Rust tests run with `--release`: numeric code needs optimisation, and sharing the release
# profile with the binary compiles the dependencies (burn among them) once instead of twice.
set -euo pipefail
cd "$(dirname "$0")/.."

PHASES=("$@")
[ ${#PHASES[@]} -gt 0 ] || PHASES=(lint rust pytest)
for phase in "${PHASES[@]}"; do
    case $phase in
        lint|rust|pytest|delivery) ;;
        *) echo "error: unknown phase $phase (lint, rust, pytest, delivery)" >&2; exit 2 ;;
    esac
done

bash scripts/setup.sh
# shellcheck disable=SC2046
export $(bash scripts/fetch-weights.sh)
for phase in "${PHASES[@]}"; do
    case $phase in
        lint)
            echo "== cargo fmt"
            cargo fmt --all --check
            echo "== cargo clippy"
            cargo clippy --locked --workspace --all-targets -- -D warnings
            echo "== delivery files"
            bash scripts/validate-delivery.sh
            ;;
        rust)
            echo "== cargo test"
            cargo test --locked --release --workspace
            ;;
        pytest)
            echo "== pytest"
            # --rootdir: keeps monitoring/pyproject.toml from becoming pytest's rootdir.
            COVIDCT_BIN="$PWD/target/release/covidct" .venv/bin/python -m pytest --rootdir=. tests monitoring/tests -q
            ;;
        delivery)
            echo "== delivery: a real Docker Swarm deployment (scripts/swarm-test.sh)"
            bash scripts/swarm-test.sh
            ;;
    esac
done
