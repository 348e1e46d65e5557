#!/usr/bin/env bash
# Installs what covidct needs on a fresh Debian machine with a Rust toolchain, by concern.
# Idempotent: safe to run again.
# Usage: scripts/setup.sh [CONCERN…]  (default: all four, what the README's commands need)
#   lint      .venv-lint: the pinned lint tools of tests/requirements-lint.txt (ruff,
#             check-jsonschema for scripts/validate-delivery.sh); shellcheck comes with
#             validate-delivery.sh itself
#   python    .venv: the pinned test tools of tests/requirements.txt (pytest, Pillow, Selenium,
#             Schemathesis, the MLflow server the tracking tests start) with the Evidently
#             monitoring job's requirements (monitoring/requirements.txt, included by it) and
#             monitoring/ itself as the package covidct-monitor (editable: the tests run the
#             working tree)
#   chromium  Debian's chromium and chromium-driver (the page test)
#   release   target/release/covidct
#   libtorch  .venv-torch: the pinned PyPI torch wheel whose libtorch the LibTorch backend links
#             (scripts/requirements-libtorch.txt; ~3 min, 6.7 GB); not in the default set. Then
#             `export $(bash scripts/libtorch-env.sh)` and build with `--features tch`.
# scripts/test.sh installs per phase only what that phase needs.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
PIP=(--quiet --disable-pip-version-check)

CONCERNS=("$@")
[ ${#CONCERNS[@]} -gt 0 ] || CONCERNS=(lint python chromium release)
for concern in "${CONCERNS[@]}"; do
    case $concern in
        lint|python|chromium|release|libtorch) ;;
        *) echo "error: unknown concern $concern (lint, python, chromium, release, libtorch)" >&2; exit 2 ;;
    esac
done

# A virtual environment at $1 (python3-venv installed with apt-get where it is missing).
venv() {
    if ! "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null; then
        echo "installing python3-venv with apt-get"
        apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
    fi
    [ -x "$1/bin/python" ] || "$PYTHON" -m venv "$1"
}

setup_lint() {
    venv .venv-lint
    .venv-lint/bin/python -m pip install "${PIP[@]}" -r tests/requirements-lint.txt
}

setup_python() {
    venv .venv
    .venv/bin/python -m pip install "${PIP[@]}" -r tests/requirements.txt
    # Its dependencies are the exact pins just installed (monitoring/requirements.txt).
    .venv/bin/python -m pip install "${PIP[@]}" --no-deps -e ./monitoring
}

# Headless Chromium and its driver for the page test (tests/test_page.py).
setup_chromium() {
    if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
        echo "installing chromium and chromium-driver with apt-get"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
    fi
}

setup_release() {
    if ! command -v cargo >/dev/null; then
        echo "error: cargo not found. Install Rust (https://rustup.rs) and run this again." >&2
        exit 1
    fi
    cargo build --release --locked -p covidct
}

# The wheels (~2.6 GB downloaded, 6.7 GB installed) are not cached: pip's cache would double the
# disk this needs. Refused up front, naming the space, where the disk cannot hold them.
LIBTORCH_DISK_KB=$((8 * 1024 * 1024))
setup_libtorch() {
    if [ ! -x .venv-torch/bin/python ] || ! bash scripts/libtorch-env.sh >/dev/null 2>&1; then
        free_kb=$(df -Pk . | awk 'NR == 2 { print $4 }')
        if [ "$free_kb" -lt "$LIBTORCH_DISK_KB" ]; then
            echo "error: the torch wheel for .venv-torch needs about 8 GB free in $PWD; $((free_kb / 1024)) MB are free" >&2
            exit 1
        fi
    fi
    venv .venv-torch
    .venv-torch/bin/python -m pip install "${PIP[@]}" --no-cache-dir -r scripts/requirements-libtorch.txt
    bash scripts/libtorch-env.sh >/dev/null
}

for concern in "${CONCERNS[@]}"; do
    "setup_$concern"
done
echo "setup done: ${CONCERNS[*]}"
