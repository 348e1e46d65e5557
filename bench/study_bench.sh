#!/usr/bin/env bash
# Study latency: one study of SLICES 512×512 PNG slices (real CT slices of the shared dataset,
# resized to 512×512 in a temporary folder, never kept), answered by `covidct predict --study`
# (folder) and by `POST /v1/predict/study` (one zip archive, then multipart files), each twice.
# Prints the wall time of each answer and the service's own timing split.
# Benchmark only (not in CI). Needs target/release/covidct (or COVIDCT_BIN; COVIDCT_DEVICE=tch
# for a `--features tch` build) and .venv (Pillow).
#   bash bench/study_bench.sh [MODEL] [SLICES] [DATASET]
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-runs/train/model.ctpkg}
SLICES=${2:-300}
DATA=${3:-../shared/data/sarscov2-ct}
PYTHON=${PYTHON:-.venv/bin/python}
BIN=${COVIDCT_BIN:-target/release/covidct}
WORK=$(mktemp -d)
trap 'kill "${PID:-}" 2>/dev/null || true; rm -rf "$WORK"' EXIT
"$PYTHON" - "$DATA" "$WORK/study" "$SLICES" <<'PY'
import pathlib, sys, zipfile
from PIL import Image
data, out, n = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), int(sys.argv[3])
out.mkdir()
sources = sorted((data / "COVID").glob("*.png"))[:n]
for i, path in enumerate(sources):
    Image.open(path).convert("L").resize((512, 512)).save(out / f"slice{i + 1:04d}.png")
with zipfile.ZipFile(out.parent / "study.zip", "w", zipfile.ZIP_STORED) as z:
    for p in sorted(out.glob("*.png")):
        z.write(p, p.name)
print(f"{len(sources)} slices of 512x512, {sum(p.stat().st_size for p in out.glob('*.png')) / 1e6:.1f} MB")
PY
echo "== covidct predict --study (CLI, folder)"
for run in 1 2; do
    start=$(date +%s.%N)
    "$BIN" predict --model "$MODEL" --study "$WORK/study" --json > "$WORK/cli.json" || true
    end=$(date +%s.%N)
    "$PYTHON" -c "import json,sys; d=json.load(open('$WORK/cli.json')); s=d['studies'][0]; print(f'run $run: {$end-$start:.2f} s wall, {d[\"slices_received\"]} slices, label {s[\"label\"]}, used {s[\"slices_used\"]}, refused {s[\"slices_refused\"]}')"
done
COVIDCT_API_KEYS=bench-key COVIDCT_ADMIN_KEYS=bench-admin "$BIN" serve --model "$MODEL" \
    --bind 127.0.0.1:8093 --prediction-log "$WORK/predictions.sqlite" --log-level warn &
PID=$!
for _ in $(seq 1 600); do curl -sf http://127.0.0.1:8093/readyz >/dev/null && break; sleep 0.2; done
post() {  # name curl-args...
    local name=$1; shift
    for run in 1 2; do
        start=$(date +%s.%N)
        curl -sf -H 'X-API-Key: bench-key' "$@" http://127.0.0.1:8093/v1/predict/study > "$WORK/answer.json"
        end=$(date +%s.%N)
        "$PYTHON" -c "import json; d=json.load(open('$WORK/answer.json')); s=d['studies'][0]; t=d['timing']; print(f'$name run $run: {$end-$start:.2f} s wall; read {t[\"read_ms\"]:.0f} ms, decode {t[\"decode_ms\"]:.0f} ms, inference {t[\"inference_ms\"]:.0f} ms, total {t[\"total_ms\"]:.0f} ms; label {s[\"label\"]}, used {s[\"slices_used\"]}, refused {s[\"slices_refused\"]}')"
    done
}
echo "== POST /v1/predict/study (service)"
post zip -H 'Content-Type: application/zip' --data-binary @"$WORK/study.zip"
forms=()
for p in "$WORK"/study/*.png; do forms+=(-F "image=@$p;type=image/png"); done
post multipart "${forms[@]}"
