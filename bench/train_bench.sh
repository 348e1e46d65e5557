#!/usr/bin/env bash
# Training throughput and peak memory of burn's flex backend, burn's LibTorch backend and PyTorch,
# side by side, in one run: forward + loss + backward + AdamW step on random input, one process
# per (runtime, architecture, size) so that each peak RSS is its own (GNU time's %M).
# Prints a Markdown table: images/s, the ratio of each burn backend to PyTorch, peak RSS in MiB.
#
# Usage (from the repository root, after scripts/setup.sh libtorch and a `--features tch` build):
#   COVIDCT_BIN=target/release/covidct TORCH_PYTHON=/tmp/torch-venv/bin/python bench/train_bench.sh
# Settings (environment): ARCHITECTURES (default resnet18,resnet50,resnet152,efficientnet-lite0),
# SIZES (224,128), BATCH (16), WARMUP (1), STEPS (3), CHANNELS (3), THREADS (2: PyTorch's
# torch.set_num_threads; LibTorch and flex use every core, 2 here).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${COVIDCT_BIN:-target/release/covidct}
PY=${TORCH_PYTHON:-/tmp/torch-venv/bin/python}
ARCHITECTURES=${ARCHITECTURES:-resnet18,resnet50,resnet152,efficientnet-lite0}
SIZES=${SIZES:-224,128}
BATCH=${BATCH:-16}
WARMUP=${WARMUP:-1}
STEPS=${STEPS:-3}
CHANNELS=${CHANNELS:-3}
THREADS=${THREADS:-2}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
COMMON=(--architectures ARCH --sizes SIZE --batch-size "$BATCH" --warmup-steps "$WARMUP"
        --steps "$STEPS" --in-channels "$CHANNELS" --json)

# measure NAME ARCH SIZE COMMAND…: images/s and peak RSS (MiB) of one process, on stdout.
measure() {
    local name=$1 arch=$2 size=$3
    shift 3
    local args=()
    for a in "$@"; do
        case $a in ARCH) args+=("$arch") ;; SIZE) args+=("$size") ;; *) args+=("$a") ;; esac
    done
    /usr/bin/time -f '%M' -o "$WORK/rss" "${args[@]}" > "$WORK/out.json"
    local ips
    ips=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); d=d["results"] if isinstance(d,dict) else d; print("%.2f" % d[0]["images_per_second"])' "$WORK/out.json")
    echo "$ips $(( $(tail -n 1 "$WORK/rss") / 1024 ))"
    echo "  $name $arch $size: $ips images/s" >&2
}

# ratio A B: A / B as "0.00×".
ratio() { python3 -c "print('%.2f×' % ($1 / $2))"; }

echo "| network, size | flex images/s | LibTorch images/s | PyTorch images/s | flex/PyTorch | LibTorch/PyTorch | peak RSS MiB (flex / LibTorch / PyTorch) |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
IFS=, read -r -a archs <<< "$ARCHITECTURES"
IFS=, read -r -a sizes <<< "$SIZES"
for arch in "${archs[@]}"; do
    for size in "${sizes[@]}"; do
        read -r flex flex_rss < <(measure flex "$arch" "$size" "$BIN" bench train "${COMMON[@]}" --device cpu)
        read -r tch tch_rss < <(measure tch "$arch" "$size" "$BIN" bench train "${COMMON[@]}" --device tch)
        read -r torch torch_rss < <(measure pytorch "$arch" "$size" "$PY" bench/pytorch_train_bench.py \
            "${COMMON[@]}" --threads "$THREADS")
        echo "| $arch, $size | $flex | $tch | $torch | $(ratio "$flex" "$torch") | $(ratio "$tch" "$torch") | $flex_rss / $tch_rss / $torch_rss |"
    done
done
