"""End-to-end monitoring: `covidct monitor export-reference` writes the reference, the running
service logs production traffic, and the Evidently job (`python -m covidct_monitor report`)
compares the two. Shifted traffic (contrast, noise, resolution) must fail the drift tests;
unshifted images from a held-out sample of the same source must pass."""

import csv
import json
import random
import sqlite3
import subprocess
import sys

import pytest
from PIL import Image, ImageFilter

from conftest import clean_env, shapes_dataset
from test_serve import Server

FEATURES = [
    "width",
    "height",
    "mean",
    "std",
    "p01",
    "p05",
    "p25",
    "p50",
    "p75",
    "p95",
    "p99",
    "entropy",
    "contrast",
    "sharpness",
]


@pytest.fixture(scope="module")
def reference(run_module, model_package, tmp_path_factory):
    """The reference CSV of a generated held-out dataset (not the training images)."""
    base = tmp_path_factory.mktemp("reference")
    data = shapes_dataset(base / "data", per_class=40, seed=11)
    out = base / "reference.csv"
    run_module(
        "monitor",
        "export-reference",
        "--model",
        model_package,
        "--data-dir",
        data,
        "--out",
        out,
        "--batch-size",
        8,
        check=True,
    )
    return out, data


@pytest.fixture(scope="module")
def run_module(covidct_bin, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("cwd")

    def _run(*args, check=False):
        result = subprocess.run(
            [str(covidct_bin), *map(str, args)],
            capture_output=True,
            text=True,
            env=clean_env(),
            timeout=600,
            cwd=workdir,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"covidct {' '.join(map(str, args))} failed:\n{result.stderr}")
        return result

    return _run


def test_reference_rows_carry_the_prediction_and_the_features_the_service_logs(
    reference, covidct_bin, model_package, tmp_path
):
    out, data = reference
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 80
    assert list(rows[0])[:11] == [
        "path",
        "split",
        "group",
        "label",
        "predicted_label",
        "probability",
        "threshold",
        "positive_class",
        "file_bytes",
        "in_distribution",
        "ood_score",
    ]
    assert list(rows[0])[11:] == FEATURES
    assert {r["label"] for r in rows} == {"COVID", "non-COVID"}
    assert {r["positive_class"] for r in rows} == {"COVID"}
    for r in rows:
        probability, threshold = float(r["probability"]), float(r["threshold"])
        assert 0.0 <= probability <= 1.0
        assert (r["predicted_label"] == "COVID") == (probability >= threshold)
        assert int(r["file_bytes"]) == (data / r["path"]).stat().st_size
    # The tiny model tells discs from bars: the export is a real prediction, not a constant.
    correct = sum(r["predicted_label"] == r["label"] for r in rows)
    assert correct >= 60, correct
    # The service computes the same features and probability for the same file.
    server = Server(covidct_bin, model_package, tmp_path)
    try:
        row = rows[3]
        status, answer = server.json("POST", "/v1/predict", (data / row["path"]).read_bytes(), "image/png")
        assert status == 200
    finally:
        server.stop()
    with sqlite3.connect(server.log_path) as db:
        (logged,) = db.execute(
            "SELECT features FROM predictions WHERE request_id = ?", (answer["request_id"],)
        ).fetchone()
    logged = json.loads(logged)
    for name in FEATURES:
        assert float(row[name]) == pytest.approx(logged[name], rel=1e-12, abs=1e-12), name
    assert float(row["probability"]) == pytest.approx(answer["probability"], abs=1e-6)


def test_export_reference_names_a_bad_split(run_module, model_package, reference, tmp_path):
    _, data = reference
    manifest = tmp_path / "split.csv"
    manifest.write_text("path,label,group,split\n")
    result = run_module(
        "monitor",
        "export-reference",
        "--model",
        model_package,
        "--data-dir",
        data,
        "--manifest",
        manifest,
        "--split",
        "holdout",
        "--out",
        tmp_path / "r.csv",
    )
    assert result.returncode != 0
    assert "--split `holdout`" in result.stderr and "panicked" not in result.stderr
    assert not (tmp_path / "r.csv").exists()


def lower_contrast(image, rng):
    return image.point(lambda v: 100 + (v - 100) // 3)


def add_noise(image, rng):
    pixels = [min(255, max(0, v + int(rng.gauss(0, 40)))) for v in image.getdata()]
    noisy = Image.new("L", image.size)
    noisy.putdata(pixels)
    return noisy


def higher_resolution(image, rng):
    return image.resize((image.width * 3, image.height * 3), Image.BILINEAR).filter(ImageFilter.SMOOTH)


def unshifted(image, rng):
    return image


def monitor_report(reference_csv, log, out):
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "covidct_monitor",
            "report",
            "--reference",
            str(reference_csv),
            "--current",
            str(log),
            "--window",
            "1h",
            "--out",
            str(out),
            "--min-rows",
            "40",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=clean_env(),
    )


@pytest.mark.parametrize(
    "shift, drifted",
    [
        (unshifted, False),
        (lower_contrast, True),
        (add_noise, True),
        (higher_resolution, True),
    ],
    ids=lambda v: getattr(v, "__name__", str(v)),
)
def test_drift_tests_fail_on_shifted_traffic_and_pass_on_held_out_images(
    shift, drifted, reference, covidct_bin, model_package, tmp_path
):
    reference_csv, _ = reference
    traffic = shapes_dataset(tmp_path / "traffic", per_class=30, seed=23)
    rng = random.Random(5)
    refused = 0
    server = Server(covidct_bin, model_package, tmp_path)
    try:
        for path in sorted(traffic.glob("*/*.png")):
            image = shift(Image.open(path).convert("L"), rng)
            target = tmp_path / "shifted.png"
            image.save(target)
            status, answer = server.json("POST", "/v1/predict", target.read_bytes(), "image/png")
            # Shifted images may be refused by the out-of-distribution gate: logged, unlabelled.
            if status == 422 and answer["error"]["code"] == "out_of_distribution":
                refused += 1
                continue
            assert status == 200, answer
            truth = path.parent.name
            assert (
                server.json(
                    "POST",
                    "/v1/feedback",
                    json.dumps({"request_id": answer["request_id"], "label": truth}),
                    "application/json",
                )[0]
                == 200
            )
    finally:
        server.stop()
    out = tmp_path / "report"
    result = monitor_report(reference_csv, server.log_path, out)
    summary = json.loads((out / "summary.json").read_text())
    failed = {t["name"] for t in summary["tests"] if t["status"] == "fail"}
    assert summary["current"]["rows"] == 60 and summary["current"]["labelled_rows"] == 60 - refused
    assert summary["current"]["refused_rows"] == refused
    if drifted:
        # Either the judged images drift or the gate refuses more than the job allows: the
        # shift is flagged one way or the other.
        assert result.returncode == 1, result.stdout + result.stderr
        assert any("drift" in name for name in failed) or "refusal_rate" in failed, summary["tests"]
        assert "FAIL" in result.stderr
        if "refusal_rate" not in failed:
            assert (out / "drift.html").stat().st_size > 10_000
    else:
        # New images of the training distribution: the gate's threshold refuses about 1% of
        # validation slices, so one or two of 60 may be refused; the job's refusal test allows 5%.
        assert refused <= 2, refused
        assert (out / "drift.html").stat().st_size > 10_000
        assert result.returncode == 0, result.stdout + result.stderr
        assert not failed
        assert summary["status"] == "pass"
