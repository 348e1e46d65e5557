#!/usr/bin/env bash
# Installs what covidct needs on a fresh Debian machine with a Rust toolchain, then builds the
# release binary. Idempotent: safe to run again.
#   - the Python virtual environment .venv with the pinned test tools (pytest, Pillow, Selenium,
#     Schemathesis) and the Evidently monitoring job's requirements (monitoring/requirements.txt,
#     included by tests/requirements.txt)
#   - Debian's chromium and chromium-driver (the page test)
#   - target/release/covidct
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null; then
    echo "error: cargo not found. Install Rust (https://rustup.rs) and run this again." >&2
    exit 1
fi
PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null; then
    echo "installing python3-venv with apt-get"
    apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
fi
# Headless Chromium and its driver for the page test (tests/test_page.py).
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    echo "installing chromium and chromium-driver with apt-get"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
fi
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt

cargo build --release --locked -p covidct
echo "setup done: target/release/covidct"
