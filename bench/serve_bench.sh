#!/usr/bin/env bash
# Single-image latency and throughput of `covidct serve` and of its FastAPI peer
# (bench/fastapi_peer.py) at every configuration tried, one after the other on loopback, with
# wrk; then a table of all of them with each one's ratio to the best peer.
#   covidct: micro-batching on and off; one single-threaded inference worker per core (the
#            default) or one worker using every core; with COVIDCT_TCH_BIN (a `--features tch`
#            build) also on burn's LibTorch backend (`--device tch`)
#   peer:    PEER_CONFIGS, RUNTIME:WORKERS:THREADS each (uvicorn worker processes × intra-op
#            threads, 0 = the runtime's default), on PyTorch and on ONNX Runtime
# BENCH_GROUPS (default "flex tch peer") picks which of the three groups run.
# Benchmark only (not in CI). Needs: target/release/covidct, wrk (apt-get install wrk), the
# peer's venv (see bench/fastapi_peer.py) in $PEER_PYTHON (default /tmp/torch-venv/bin/python).
# MODEL=PATH serves that package instead of one trained here on generated shapes.
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
BENCH_GROUPS=${BENCH_GROUPS:-flex tch peer}
PEER_CONFIGS=${PEER_CONFIGS:-torch:1:0 torch:1:1 torch:1:2 torch:2:1 onnxruntime:1:0 onnxruntime:1:2 onnxruntime:2:1}
mkdir -p "$WORK"
MODEL=${MODEL:-$WORK/$ARCH-$SIZE/model.ctpkg}

# A package of the architecture at SIZE (weights from a short training on the generated shapes
# of tests/conftest.py, with the test venv .venv:
# inference costs the same whatever the weights).
if [ ! -f "$MODEL" ]; then
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

serve() {  # name batch-size batch-wait-ms inference-workers (0: one per core) [binary device]
    rm -f "$WORK/predictions.sqlite"*
    COVIDCT_API_KEYS=bench-key COVIDCT_ADMIN_KEYS=bench-admin "${5:-$BIN}" serve \
        --model "$MODEL" --bind 127.0.0.1:8090 --device "${6:-cpu}" \
        --prediction-log "$WORK/predictions.sqlite" --batch-size "$2" --batch-wait-ms "$3" \
        --inference-workers "$4" --max-concurrency 256 --log-level warn &
    local pid=$!
    wait_for http://127.0.0.1:8090/readyz
    # ood=warn: the synthetic scan is not a slice like the model's training data, and the gate
    # would refuse it; warn answers it anyway after the same work (decode, forward pass, gate).
    run_wrk "$1" "http://127.0.0.1:8090/v1/predict?ood=warn"
    kill -TERM "$pid"; wait "$pid" || true
}

peer() {  # runtime workers threads
    local name="peer-$1-$2w$3t"
    "$PEER_PYTHON" bench/fastapi_peer.py --architecture "$ARCH" --size "$SIZE" --port 8091 \
        --runtime "$1" --workers "$2" --threads "$3" &
    local pid=$!
    wait_for http://127.0.0.1:8091/healthz
    run_wrk "$name" http://127.0.0.1:8091/v1/predict
    kill -TERM "$pid"; wait "$pid" || true
    PEERS+=("$name")
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "model: $MODEL ($ARCH, $SIZE x $SIZE)"
runs() { [[ " $BENCH_GROUPS " == *" $1 "* ]]; }
OURS=()
PEERS=()
if runs flex; then
    serve "covidct-batch8" 8 2 0
    serve "covidct-nobatch" 1 0 0
    serve "covidct-batch8-1worker" 8 2 1
    serve "covidct-nobatch-1worker" 1 0 1
    OURS+=(covidct-batch8 covidct-nobatch covidct-batch8-1worker covidct-nobatch-1worker)
fi
if runs tch && [ -n "${COVIDCT_TCH_BIN:-}" ]; then
    # One worker is the default on tch (libtorch runs its own thread pool over the cores); a
    # worker per core gets one libtorch thread each.
    serve "covidct-tch-nobatch" 1 0 0 "$COVIDCT_TCH_BIN" tch
    OMP_NUM_THREADS=1 serve "covidct-tch-nobatch-2workers" 1 0 2 "$COVIDCT_TCH_BIN" tch
    OURS+=(covidct-tch-nobatch covidct-tch-nobatch-2workers)
fi
if runs peer; then
    for config in $PEER_CONFIGS; do
        IFS=: read -r runtime workers threads <<< "$config"
        peer "$runtime" "$workers" "$threads"
    done
else
    # The best peer of an earlier run in the same $WORK, for the ratio.
    for f in "$WORK"/peer-*.txt; do [ -f "$f" ] && PEERS+=("$(basename "$f" .txt)"); done
fi

# requests/s and p99 (ms) of one run's wrk output.
figures() {
    awk '/^Requests\/sec:/ { rps = $2 }
         $1 == "99%" { v = $2; ms = v + 0; if (v ~ /us$/) ms /= 1000; else if (v ~ /[0-9]s$/ && v !~ /ms$/) ms *= 1000; p99 = ms }
         END { printf "%.1f %.0f", rps, p99 }' "$WORK/$1.txt"
}
best_name=; best=0
for name in "${PEERS[@]}"; do
    read -r rps _ <<< "$(figures "$name")"
    if awk -v a="$rps" -v b="$best" 'BEGIN { exit !(a > b) }'; then best=$rps; best_name=$name; fi
done
echo "== summary ($ARCH $SIZE, $CONNECTIONS connections, ${SECONDS_} s; best peer: $best_name)"
printf '%-30s %12s %9s %14s\n' configuration requests/s "p99 ms" "vs best peer"
for name in "${OURS[@]}" "${PEERS[@]}"; do
    read -r rps p99 <<< "$(figures "$name")"
    printf '%-30s %12s %9s %13.2fx\n' "$name" "$rps" "$p99" "$(awk -v a="$rps" -v b="$best" 'BEGIN { print a / b }')"
done
