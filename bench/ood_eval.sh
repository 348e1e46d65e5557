#!/usr/bin/env bash
# The out-of-distribution gate, measured: the share of a varied set of non-CT images that a model
# refuses, by category (photographs in colour and grey, documents, graphics, other modalities and
# anatomy, blank, noise, gradients, tiny and cropped images: tests/ood_images.py), and the share
# of real CT slices of a held-out split it refuses (`covidct evaluate`), in one run.
# Usage: bench/ood_eval.sh MODEL [DATA_DIR] [MANIFEST]   (defaults: runs/train/model.ctpkg,
#        ../shared/data/sarscov2-ct, runs/split.csv; the test split of the manifest)
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-runs/train/model.ctpkg}
DATA=${2:-../shared/data/sarscov2-ct}
MANIFEST=${3:-runs/split.csv}
BIN=${COVIDCT_BIN:-target/release/covidct}
PYTHON=${PYTHON:-.venv/bin/python}
# shellcheck disable=SC2046
export $(bash scripts/fetch-weights.sh)
SET=$(mktemp -d)
trap 'rm -rf "$SET"' EXIT
"$PYTHON" tests/ood_images.py "$COVIDCT_SAMPLE_IMAGES" "$SET"
mapfile -t FILES < <(tail -n +2 "$SET/manifest.csv" | cut -d, -f1 | sed "s|^|$SET/|")
# Exit status 4 (some refused) is the expected outcome here, 1 (some unreadable) is counted.
status=0
"$BIN" predict --model "$MODEL" --json "${FILES[@]}" > "$SET/predictions.jsonl" || status=$?
case $status in 0|1|4) ;; *) exit "$status" ;; esac
"$PYTHON" - "$SET/manifest.csv" "$SET/predictions.jsonl" <<'PY'
import csv, json, sys
from collections import defaultdict
from pathlib import Path
category = {row["file"]: row["category"] for row in csv.DictReader(open(sys.argv[1]))}
counts = defaultdict(lambda: [0, 0, 0])  # images, refused by the gate, unreadable
missed = []
for line in open(sys.argv[2]):
    entry = json.loads(line)
    name = Path(entry["file"]).name
    c = counts[category[name]]
    c[0] += 1
    if "error" in entry:
        c[2] += 1
    elif not entry["in_distribution"]:
        c[1] += 1
    else:
        missed.append(f"{name} (p={entry['probability']:.3f}, score {entry['ood_score']:.2f})")
print(f"{'category':<16}{'images':>8}{'refused':>9}{'unreadable':>12}")
total = [0, 0, 0]
for name in sorted(counts):
    n, refused, unreadable = counts[name]
    total = [a + b for a, b in zip(total, counts[name])]
    print(f"{name:<16}{n:>8}{refused:>9}{unreadable:>12}")
n, refused, unreadable = total
print(f"{'all':<16}{n:>8}{refused:>9}{unreadable:>12}")
print(f"non-CT refused or unreadable: {refused + unreadable}/{n} = {100 * (refused + unreadable) / n:.1f}%")
print("judged as CT:", ", ".join(missed) if missed else "none")
PY
echo "held-out CT slices ($MANIFEST, test split):"
"$BIN" evaluate --model "$MODEL" --data-dir "$DATA" --manifest "$MANIFEST" --split test \
  --out "$SET/evaluation" --no-tracking 2>/dev/null | grep -E "out-of-distribution|images,"
