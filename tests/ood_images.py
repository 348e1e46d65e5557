"""The varied set of images that are not CT slices a model can judge, for the out-of-distribution
tests (tests/test_ood.py) and benchmark (bench/ood_eval.sh): photographs (in colour and in grey),
documents and text, graphics, other imaging modalities and anatomy, and unusable images (blank,
saturated, noise, gradients, tiny, thin strips). Photographs and the other modalities come from
what registry packages ship (scikit-image, matplotlib, pydicom; scripts/fetch-weights.sh unpacks
them into `$COVIDCT_SAMPLE_IMAGES`); the rest is generated here.

Usage: python tests/ood_images.py SAMPLE_DIR OUT_DIR   (writes OUT_DIR/manifest.csv: file,category)
"""

from __future__ import annotations

import csv
import gzip
import random
import shutil
import sys
from pathlib import Path

from PIL import Image, ImageDraw

# Registry-shipped images by category (files missing from SAMPLE_DIR are skipped).
SHIPPED = {
    "photo": [
        "skimage/astronaut.png",
        "skimage/camera.png",
        "skimage/chelsea.png",
        "skimage/coffee.png",
        "skimage/coins.png",
        "skimage/horse.png",
        "skimage/motorcycle_left.png",
        "skimage/rocket.jpg",
        "skimage/brick.png",
        "skimage/grass.png",
        "skimage/gravel.png",
        "skimage/moon.png",
        "skimage/hubble_deep_field.jpg",
        "skimage/clock_motion.png",
        "skimage/color.png",
        "matplotlib/grace_hopper.jpg",
    ],
    "document": ["skimage/page.png", "skimage/text.png"],
    "graphic": [
        "skimage/logo.png",
        "skimage/chessboard_GRAY.png",
        "skimage/chessboard_RGB.png",
        "matplotlib/logo2.png",
        "matplotlib/Minduka_Present_Blue_Pack.png",
    ],
    "other_modality": [
        "skimage/retina.jpg",
        "skimage/microaneurysms.png",
        "skimage/ihc.png",
        "skimage/cell.png",
        "skimage/phantom.png",
        "pydicom/MR_small.dcm",
        "pydicom/rtdose.dcm",
    ],
}


def _grey_copy(src: Path, dst: Path) -> None:
    Image.open(src).convert("L").save(dst)


def _mri_slice(src: Path, dst: Path) -> None:
    """matplotlib's s1045.ima.gz: a 256×256 16-bit MRI head slice, scaled to 8 bits."""
    raw = gzip.decompress(src.read_bytes())
    values = [int.from_bytes(raw[i : i + 2], "little") for i in range(0, len(raw), 2)]
    top = max(values) or 1
    image = Image.new("L", (256, 256))
    image.putdata([v * 255 // top for v in values])
    image.save(dst)


def _generated(rng: random.Random) -> list:
    """Unusable and synthetic images: (file name, category, image)."""
    side = 256
    images = []

    def add(name, category, image):
        images.append((name, category, image))

    for name, value in (("black", 0), ("white", 255), ("grey", 128), ("dark_grey", 40)):
        add(f"blank_{name}.png", "blank", Image.new("L", (side, side), value))
    for level in (16, 64):
        noise = Image.new("L", (side, side))
        noise.putdata([max(0, min(255, int(rng.gauss(128, level)))) for _ in range(side * side)])
        add(f"noise_gauss_{level}.png", "noise", noise)
    uniform = Image.new("L", (side, side))
    uniform.putdata([rng.randrange(256) for _ in range(side * side)])
    add("noise_uniform.png", "noise", uniform)
    salt = Image.new("L", (side, side))
    salt.putdata([rng.choice((0, 255)) for _ in range(side * side)])
    add("noise_salt_pepper.png", "noise", salt)
    colour = Image.new("RGB", (side, side))
    colour.putdata([tuple(rng.randrange(256) for _ in range(3)) for _ in range(side * side)])
    add("noise_colour.png", "noise", colour)
    gradients = {
        "horizontal": lambda x, y: x * 255 // (side - 1),
        "vertical": lambda x, y: y * 255 // (side - 1),
        "radial": lambda x, y: min(255, int(((x - 128) ** 2 + (y - 128) ** 2) ** 0.5 * 2)),
        "diagonal": lambda x, y: (x + y) * 255 // (2 * side - 2),
    }
    for name, f in gradients.items():
        image = Image.new("L", (side, side))
        image.putdata([f(x, y) for y in range(side) for x in range(side)])
        add(f"gradient_{name}.png", "gradient", image)
    for cell in (8, 32):
        image = Image.new("L", (side, side))
        image.putdata([255 * (((x // cell) + (y // cell)) % 2) for y in range(side) for x in range(side)])
        add(f"checkerboard_{cell}.png", "graphic", image)
    for k in range(3):
        image = Image.new("RGB", (320, 240), tuple(rng.randrange(256) for _ in range(3)))
        draw = ImageDraw.Draw(image)
        for _ in range(12):
            box = sorted(rng.sample(range(320), 2)), sorted(rng.sample(range(240), 2))
            fill = tuple(rng.randrange(256) for _ in range(3))
            shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
            shape([box[0][0], box[1][0], box[0][1], box[1][1]], fill=fill)
        add(f"shapes_{k}.png", "graphic", image)
        grey = image.convert("L")
        add(f"shapes_{k}_grey.png", "graphic", grey)
    for k, text in enumerate(("Patient report: chest CT, no acute findings.", "Invoice 2026-12 total 42.00")):
        image = Image.new("L", (400, 300), 255)
        draw = ImageDraw.Draw(image)
        for line in range(12):
            draw.text((12, 10 + 23 * line), text, fill=0)
        add(f"text_{k}.png", "document", image)
    for size in ((8, 8), (16, 16), (24, 20)):
        tiny = Image.new("L", size)
        tiny.putdata([rng.randrange(256) for _ in range(size[0] * size[1])])
        add(f"tiny_{size[0]}x{size[1]}.png", "tiny", tiny)
    for size in ((512, 16), (20, 400)):
        strip = Image.new("L", size)
        strip.putdata([rng.randrange(60, 200) for _ in range(size[0] * size[1])])
        add(f"strip_{size[0]}x{size[1]}.png", "cropped", strip)
    return images


def build(samples: Path, out: Path, seed: int = 7) -> list:
    """Writes the set into `out`; returns [(path, category)] in a fixed order."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for category, names in SHIPPED.items():
        for name in names:
            src = samples / name
            if not src.is_file():
                continue
            dst = out / f"{category}_{src.name}"
            shutil.copyfile(src, dst)
            written.append((dst, category))
            if category == "photo" and src.suffix != ".dcm":
                grey = out / f"photo_grey_{src.stem}.png"
                _grey_copy(src, grey)
                written.append((grey, "photo_grey"))
    mri = samples / "matplotlib/s1045.ima.gz"
    if mri.is_file():
        dst = out / "other_modality_mri_head.png"
        _mri_slice(mri, dst)
        written.append((dst, "other_modality"))
    for name, category, image in _generated(random.Random(seed)):
        dst = out / name
        image.save(dst)
        written.append((dst, category))
    with (out / "manifest.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "category"])
        writer.writerows((path.name, category) for path, category in written)
    return written


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    build(Path(sys.argv[1]), Path(sys.argv[2]))
