"""Fixtures for black-box tests of the real `covidct` binary."""

import os
import random
import subprocess
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATASET = Path(os.environ.get("COVIDCT_DATASET_DIR", ROOT.parent / "shared/data/sarscov2-ct"))


@pytest.fixture(scope="session")
def covidct_bin() -> Path:
    """The binary under test: $COVIDCT_BIN, else the release build."""
    path = Path(os.environ.get("COVIDCT_BIN", ROOT / "target/release/covidct"))
    if not path.exists():
        pytest.fail(f"{path} does not exist: run scripts/setup.sh (cargo build --release) first")
    return path


def clean_env(extra=None) -> dict:
    """The environment without COVIDCT_* and MLFLOW_* settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COVIDCT_", "MLFLOW_"))}
    env.update(extra or {})
    return env


@pytest.fixture
def run(covidct_bin, tmp_path):
    """Runs covidct with arguments in a fresh working folder (so the default local MLflow store
    `./mlruns` and spool `./.covidct` land there); returns the CompletedProcess (text mode)."""
    workdir = tmp_path / "cwd"
    workdir.mkdir(exist_ok=True)

    def _run(*args, env=None, check=False, cwd=None):
        result = subprocess.run(
            [str(covidct_bin), *map(str, args)],
            capture_output=True,
            text=True,
            env=clean_env(env),
            timeout=600,
            cwd=cwd or workdir,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"covidct {' '.join(map(str, args))} failed:\n{result.stderr}")
        return result

    return _run


def write_image(path: Path, mode: str, value: int, size=(48, 32)) -> None:
    """Writes a small synthetic image with a gradient so neighbours differ slightly."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("L", size)
    image.putdata([(value + (x + y) % 9) % 256 for y in range(size[1]) for x in range(size[0])])
    image.convert(mode).save(path)


@pytest.fixture
def small_dataset(tmp_path) -> Path:
    """Two classes of 15 PNGs each, in runs of 5 similar images (pseudo-patients)."""
    root = tmp_path / "dataset"
    for label, mode in (("COVID", "L"), ("non-COVID", "L")):
        for n in range(1, 16):
            write_image(root / label / f"{label} ({n}).png", mode, (n - 1) // 5 * 80 + (label == "COVID") * 20)
    return root


TRAIN_FLAGS = [
    "--architecture",
    "resnet18",
    "--pretrained",
    "none",
    "--image-size",
    "32",
    "--head-epochs",
    "2",
    "--epochs",
    "2",
    "--batch-size",
    "8",
    "--learning-rate",
    "0.003",
    "--bootstrap",
    "50",
]


def shape_image(side, level, disc, offset, rng):
    """A grey `side`×`side` image of noise above `level` with a bright disc (or, when `disc` is
    false, a bright bar) `offset` pixels off the centre."""
    image = Image.new("L", (side, side))
    image.putdata([level + rng.randrange(0, 20) for _ in range(side * side)])
    draw = ImageDraw.Draw(image)
    c = side // 2 + offset
    if disc:
        draw.ellipse([c - side // 4, c - side // 4, c + side // 4, c + side // 4], fill=240)
    else:
        draw.rectangle([c - side // 3, c - 3, c + side // 3, c + 3], fill=240)
    return image


def shapes_dataset(root, per_class=40, seed=7):
    """Writes COVID/ (a bright disc) and non-COVID/ (a bright bar) on noise, sizes varying;
    file numbers in runs of 4 share a background level, like slices of one scan, so the
    default `blocks` split finds one pseudo-patient per run."""
    rng = random.Random(seed)
    for label in ("COVID", "non-COVID"):
        (root / label).mkdir(parents=True)
        for n in range(per_class):
            side = 40 + (n // 4 % 3) * 8
            level = (n // 4 % 4) * 50
            image = shape_image(side, level, label == "COVID", (n // 4) % 5 - 2, rng)
            image.save(root / label / f"{label} ({n + 1}).png")
    return root


@pytest.fixture(scope="session")
def model_package(tmp_path_factory, covidct_bin) -> Path:
    """A tiny trained model package (ResNet-18 at 32 px on generated discs and bars), trained once
    per session for the service tests."""
    base = tmp_path_factory.mktemp("serve-model")
    data = shapes_dataset(base / "data")
    result = subprocess.run(
        [str(covidct_bin), "train", "--data-dir", str(data), "--out", str(base / "run"), *TRAIN_FLAGS],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=600,
        cwd=base,
    )
    assert result.returncode == 0, result.stderr
    return base / "run" / "model.ctpkg"


def training_image(model_package: Path, label: str = "COVID", n: int = 1) -> Path:
    """A slice the session model (`model_package`) was trained on: one its out-of-distribution
    gate accepts, unlike arbitrary generated images (a flat background, a blank image)."""
    return model_package.parent.parent / "data" / label / f"{label} ({n}).png"
