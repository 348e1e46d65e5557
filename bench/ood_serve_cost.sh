#!/usr/bin/env bash
# What the out-of-distribution gate costs the service: `covidct serve` with a model package and
# with the same package without its gate (its metadata's `ood` removed, checksums redone), one
# after the other, twice (A B A B), on the same real CT slice, with wrk. The gate's work is the
# image checks while decoding and the feature score after the forward pass.
# Benchmark only (not in CI). Needs target/release/covidct and wrk (apt-get install wrk).
#   bash bench/ood_serve_cost.sh [MODEL] [SLICE] [CONNECTIONS] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-runs/train/model.ctpkg}
SLICE=${2:-../shared/data/sarscov2-ct/COVID/Covid (1).png}
CONNECTIONS=${3:-8}
SECONDS_=${4:-20}
PYTHON=${PYTHON:-.venv/bin/python}
BIN=target/release/covidct
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cp "$SLICE" "$WORK/scan.png"
# The package without its gate (layout: crates/model/src/package.rs).
"$PYTHON" - "$MODEL" "$WORK/ungated.ctpkg" <<'PY'
import hashlib, json, struct, sys
data = open(sys.argv[1], "rb").read()
head, at = data[:16], 16
sections = []
for _ in range(3):
    (n,) = struct.unpack("<Q", data[at:at + 8]); sections.append(data[at + 8:at + 8 + n]); at += 8 + n
meta = json.loads(sections[0]); meta.pop("ood", None)
sections[0] = json.dumps(meta, indent=2).encode()
body = head + b"".join(struct.pack("<Q", len(s)) + s for s in sections)
open(sys.argv[2], "wb").write(body + hashlib.sha256(body).digest())
PY
# shellcheck source=bench/wrk.sh
source bench/wrk.sh
wrk_setup
serve() {  # name package
    rm -f "$WORK/predictions.sqlite"*
    COVIDCT_API_KEYS=bench-key COVIDCT_ADMIN_KEYS=bench-admin "$BIN" serve --model "$2" \
        --bind 127.0.0.1:8092 --prediction-log "$WORK/predictions.sqlite" --max-concurrency 256 \
        --log-level warn &
    local pid=$!
    wait_for http://127.0.0.1:8092/readyz
    run_wrk "$1" http://127.0.0.1:8092/v1/predict
    kill -TERM "$pid"; wait "$pid" || true
}
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); model $MODEL"
for round in 1 2; do
    serve "gate (round $round)" "$MODEL"
    serve "no gate (round $round)" "$WORK/ungated.ctpkg"
done
