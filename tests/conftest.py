"""Fixtures for black-box tests of the real `covidct` binary."""

import os
import subprocess
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATASET = Path(os.environ.get("COVIDCT_DATASET_DIR", ROOT.parent / "shared/data/sarscov2-ct"))


@pytest.fixture(scope="session")
def covidct_bin() -> Path:
    """The binary under test: $COVIDCT_BIN, else the release build."""
    path = Path(os.environ.get("COVIDCT_BIN", ROOT / "target/release/covidct"))
    if not path.exists():
        pytest.fail(f"{path} does not exist: run scripts/setup.sh (cargo build --release) first")
    return path


@pytest.fixture
def run(covidct_bin):
    """Runs covidct with arguments; returns the CompletedProcess (text mode)."""

    def _run(*args, env=None, check=False):
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("COVIDCT_")}
        full_env.update(env or {})
        result = subprocess.run(
            [str(covidct_bin), *map(str, args)], capture_output=True, text=True, env=full_env, timeout=600
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


@pytest.fixture(scope="session")
def model_package(tmp_path_factory, covidct_bin) -> Path:
    """A tiny trained model package (ResNet-18 at 32 px on generated discs and bars, as in
    test_model_cli.py), trained once per session for the service tests."""
    from test_model_cli import TRAIN_FLAGS, shapes_dataset

    base = tmp_path_factory.mktemp("serve-model")
    data = shapes_dataset(base / "data")
    env = {k: v for k, v in os.environ.items() if not k.startswith("COVIDCT_")}
    result = subprocess.run(
        [str(covidct_bin), "train", "--data-dir", str(data), "--out", str(base / "run"), *TRAIN_FLAGS],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    return base / "run" / "model.ctpkg"
