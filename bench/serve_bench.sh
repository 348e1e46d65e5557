#!/usr/bin/env bash
# Single-image latency and throughput of `covidct serve` (micro-batching on and off; one
# single-threaded inference worker per core, the default, or one worker using every core) and
# of the FastAPI + PyTorch peer (bench/fastapi_peer.py), one after the other on loopback, with wrk.
# Benchmark only (not in CI). Needs: target/release/covidct, wrk (apt-get install wrk), the
# peer's venv (see bench/fastapi_peer.py) in $PEER_PYTHON (default /tmp/torch-venv/bin/python).
#   bash bench/serve_bench.sh [ARCHITECTURE] [SIZE] [CONNECTIONS] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
ARCH=${1:-efficientnet-lite0}
SIZE=${2:-224}
CONNECTIONS=${3:-8}
SECONDS_=${4:-20}
PEER_PYTHON=${PEER_PYTHON:-/tmp/torch-venv/bin/python}
WORK=${WORK:-/tmp/covidct-serve-bench}
BIN=target/release/covidct
mkdir -p "$WORK"

# A package of the architecture at SIZE (weights from a short training on the generated shapes
# of tests/conftest.py, with the test venv .venv:
# inference costs the same whatever the weights).
if [ ! -f "$WORK/$ARCH-$SIZE/model.ctpkg" ]; then
    rm -rf "$WORK/data"
    (cd tests && ../.venv/bin/python -c "from pathlib import Path
from conftest import shapes_dataset; shapes_dataset(Path('$WORK/data'))")
    COVIDCT_NO_TRACKING=true "$BIN" train --data-dir "$WORK/data" --out "$WORK/$ARCH-$SIZE" --architecture "$ARCH" \
        --pretrained none --image-size "$SIZE" --head-epochs 1 --epochs 1 --batch-size 8 \
        --bootstrap 10 --log-level warn >/dev/null
fi
# The request body: a 512 x 512 grey PNG with structure (a CT slice's size).
"$PEER_PYTHON" -c "
from PIL import Image, ImageDraw; import random
r = random.Random(1); im = Image.new('L', (512, 512), 20)
im.putdata([20 + r.randrange(40) for _ in range(512 * 512)])
ImageDraw.Draw(im).ellipse([100, 120, 400, 420], fill=200); im.save('$WORK/scan.png')"
# shellcheck source=bench/wrk.sh
source bench/wrk.sh
wrk_setup

serve() {  # name batch-size batch-wait-ms inference-workers (0: one per core)
    rm -f "$WORK/predictions.sqlite"*
    COVIDCT_API_KEYS=bench-key COVIDCT_ADMIN_KEYS=bench-admin "$BIN" serve \
        --model "$WORK/$ARCH-$SIZE/model.ctpkg" --bind 127.0.0.1:8090 \
        --prediction-log "$WORK/predictions.sqlite" --batch-size "$2" --batch-wait-ms "$3" \
        --inference-workers "$4" --max-concurrency 256 --log-level warn &
    local pid=$!
    wait_for http://127.0.0.1:8090/readyz
    # ood=warn: the synthetic scan is not a slice like the model's training data, and the gate
    # would refuse it; warn answers it anyway after the same work (decode, forward pass, gate).
    run_wrk "$1" "http://127.0.0.1:8090/v1/predict?ood=warn"
    kill -TERM "$pid"; wait "$pid" || true
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
serve "covidct-batch8" 8 2 0
serve "covidct-nobatch" 1 0 0
serve "covidct-batch8-1worker" 8 2 1
serve "covidct-nobatch-1worker" 1 0 1
"$PEER_PYTHON" bench/fastapi_peer.py --architecture "$ARCH" --size "$SIZE" --port 8091 &
PEER=$!
wait_for http://127.0.0.1:8091/healthz
run_wrk "fastapi-peer" http://127.0.0.1:8091/v1/predict
kill -TERM "$PEER"; wait "$PEER" || true
