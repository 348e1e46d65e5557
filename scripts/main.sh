#!/usr/bin/env bash
# The main job: set up, audit and split the dataset, cross-validate the default configuration
# (5 group folds: every pseudo-patient tested once; the headline figures), then train, calibrate,
# evaluate and package the released model (EfficientNet-Lite0, ImageNet transfer, linear-probe
# head) on the default `blocks` split. Backbone features are computed once per image
# (.cache/features) and shared by the folds and the final fit.
# Usage: scripts/main.sh [DATASET_DIR] (default ../shared/data/sarscov2-ct); outputs go to runs/.
# Interrupted? Run it again: finished folds are kept and training resumes from its checkpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-${COVIDCT_DATA_DIR:-../shared/data/sarscov2-ct}}
OUT=${COVIDCT_RUN_DIR:-runs}

bash scripts/setup.sh
# shellcheck disable=SC2046
export $(bash scripts/fetch-weights.sh)
mkdir -p "$OUT"
BIN=target/release/covidct
# Convert the PyTorch checkpoint once (name and shape check, SHA-256) into
# .cache/weights/efficientnet-lite0-57934424.safetensors, where `train` looks first.
"$BIN" weights import "$COVIDCT_EFFNET_PTH" --architecture efficientnet-lite0 \
  --sha256 579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db \
  --weights-dir "$(dirname "$COVIDCT_EFFNET_PTH")"
"$BIN" data inspect "$DATA" | tee "$OUT/inspect.txt"
"$BIN" data inspect --json "$DATA" > "$OUT/inspect.json"
"$BIN" data split "$DATA" --out "$OUT/split.csv" --report | tee "$OUT/split.txt"
"$BIN" cross-validate --data-dir "$DATA" --folds 5 --out "$OUT/cv" \
  --weights-dir "$(dirname "$COVIDCT_EFFNET_PTH")" | tee "$OUT/cv.txt"
RESUME=()
if [ -d "$OUT/train/checkpoint" ]; then
  RESUME=(--resume)
fi
"$BIN" train --data-dir "$DATA" --manifest "$OUT/split.csv" --out "$OUT/train" \
  --weights-dir "$(dirname "$COVIDCT_EFFNET_PTH")" --cross-validation "$OUT/cv/cross-validation.json" \
  "${RESUME[@]}" | tee "$OUT/train.txt"
echo "main job done: $OUT/cv/cross-validation.json (headline), $OUT/train/model.ctpkg, $OUT/train/evaluation/report.html, $OUT/train/MODEL_CARD.md"
echo "tracked in MLflow at ${MLFLOW_TRACKING_URI:-./mlruns}; to browse a local store:"
echo "  MLFLOW_ALLOW_FILE_STORE=true .venv/bin/mlflow ui --backend-store-uri ./mlruns"
