#!/usr/bin/env bash
# The main job: set up, then audit and split the dataset.
# Usage: scripts/main.sh [DATASET_DIR] (default ../shared/data/sarscov2-ct); outputs go to runs/.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-${COVIDCT_DATA_DIR:-../shared/data/sarscov2-ct}}
OUT=${COVIDCT_RUN_DIR:-runs}

bash scripts/setup.sh
mkdir -p "$OUT"
BIN=target/release/covidct
"$BIN" data inspect "$DATA" | tee "$OUT/inspect.txt"
"$BIN" data inspect --json "$DATA" > "$OUT/inspect.json"
"$BIN" data split "$DATA" --out "$OUT/split.csv" --report | tee "$OUT/split.txt"
echo "main job done: $OUT/inspect.txt, $OUT/inspect.json, $OUT/split.csv"
