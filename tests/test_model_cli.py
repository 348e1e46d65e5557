"""Black-box tests of `covidct train | evaluate | predict | weights import` on generated images.

A tiny ResNet-18 (32×32 input, no pretrained weights) trains in seconds on shapes that a network
separates easily: discs for COVID, bars for non-COVID.
"""

import json

import pytest

from conftest import TRAIN_FLAGS, clean_env, shapes_dataset


@pytest.fixture(scope="module")
def trained(tmp_path_factory, covidct_bin):
    """One training run shared by the tests of this module: (dataset, run folder, stdout)."""
    import subprocess

    base = tmp_path_factory.mktemp("train")
    data = shapes_dataset(base / "data")
    out = base / "run"
    result = subprocess.run(
        [str(covidct_bin), "train", "--data-dir", str(data), "--out", str(out), *TRAIN_FLAGS],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=600,
        cwd=base,
    )
    assert result.returncode == 0, result.stderr
    return data, out, result.stdout


def test_train_writes_package_report_card_and_split(trained):
    data, out, stdout = trained
    assert (out / "model.ctpkg").stat().st_size > 1_000_000
    assert (out / "split.csv").is_file()
    assert (out / "MODEL_CARD.md").read_text().startswith("# Model card")
    report = json.loads((out / "evaluation" / "report.json").read_text())
    assert report["dataset"]["split"] == "test"
    assert report["threshold"]["chosen_on"] == "validation"
    assert report["metrics"]["point"]["accuracy"] >= 0.8
    for plot in ("roc.png", "pr.png", "reliability.png", "confusion.png"):
        assert (out / "evaluation" / plot).read_bytes().startswith(b"\x89PNG")
    assert "ROC-AUC" in stdout


def test_evaluate_reproduces_the_training_report(run, trained, tmp_path):
    data, out, _ = trained
    result = run(
        "evaluate",
        "--model",
        out / "model.ctpkg",
        "--data-dir",
        data,
        "--manifest",
        out / "split.csv",
        "--split",
        "test",
        "--bootstrap",
        "50",
        "--out",
        tmp_path / "eval",
        "--json",
        check=True,
    )
    again = json.loads(result.stdout)
    original = json.loads((out / "evaluation" / "report.json").read_text())
    assert again["metrics"]["point"] == original["metrics"]["point"]
    assert (tmp_path / "eval" / "report.html").is_file()


def test_predict_labels_files_and_reports_bad_ones(run, trained, tmp_path):
    data, out, _ = trained
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    files = [data / "COVID" / "COVID (1).png", data / "non-COVID" / "non-COVID (1).png", bad]
    result = run("predict", "--model", out / "model.ctpkg", "--json", *files)
    assert result.returncode == 1
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line.get("label") for line in lines[:2]] == ["COVID", "non-COVID"]
    assert 0.0 <= lines[0]["probability"] <= 1.0 and "threshold" in lines[0]
    assert "bad.png" in lines[2]["error"]


def test_a_corrupted_package_is_refused(run, trained, tmp_path):
    data, out, _ = trained
    corrupted = tmp_path / "corrupted.ctpkg"
    raw = bytearray((out / "model.ctpkg").read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    corrupted.write_bytes(bytes(raw))
    result = run("predict", "--model", corrupted, data / "COVID" / "COVID (1).png")
    assert result.returncode != 0
    assert "checksum mismatch" in result.stderr and "corrupted.ctpkg" in result.stderr


def test_interrupted_training_resumes_and_a_second_run_refuses_the_folder(run, tmp_path):
    data = shapes_dataset(tmp_path / "data", per_class=24)
    out = tmp_path / "run"
    run("train", "--data-dir", data, "--out", out, *TRAIN_FLAGS, check=True)
    again = run("train", "--data-dir", data, "--out", out, *TRAIN_FLAGS)
    assert again.returncode != 0 and "--resume" in again.stderr
    resumed = run("train", "--data-dir", data, "--out", tmp_path / "empty", "--resume", *TRAIN_FLAGS)
    assert resumed.returncode != 0 and "no checkpoint" in resumed.stderr


def test_cross_validation_tests_every_group_once_and_continues_where_it_stopped(run, tmp_path):
    import csv

    data = shapes_dataset(tmp_path / "data", per_class=24)
    out = tmp_path / "cv"
    first = run("cross-validate", "--data-dir", data, "--folds", "3", "--out", out, *TRAIN_FLAGS, check=True)
    summary = json.loads((out / "cross-validation.json").read_text())
    assert summary["folds"] == 3 and summary["images"] == 48
    accuracy = next(m for m in summary["metrics"] if m["metric"] == "accuracy")
    reports = [json.loads((out / f"fold-{k}" / "evaluation" / "report.json").read_text()) for k in range(3)]
    assert accuracy["values"] == [r["metrics"]["point"]["accuracy"] for r in reports]
    assert accuracy["min"] <= accuracy["mean"] <= accuracy["max"]
    assert "3-fold group cross-validation" in first.stdout
    # Patient (group) level: every fold's report scores its test groups with the group rule fitted
    # on held-out scores (out-of-fold ones of the cross-fitted probe), and the summary spreads them.
    group_auc = next(m for m in summary["group_metrics"] if m["metric"] == "roc_auc")
    assert group_auc["values"] == [r["group"]["metrics"]["point"]["roc_auc"] for r in reports]
    assert summary["groups"] == 12 == sum(r["group"]["metrics"]["point"]["n"] for r in reports)
    assert all(
        r["group"]["calibration"]["rule"] in {c["rule"] for c in r["group"]["calibration"]["candidates"]}
        for r in reports
    )
    assert "patients (groups)" in first.stdout
    # The released model's card leads with the cross-validated figures.
    released = run(
        "train",
        "--data-dir",
        data,
        "--out",
        tmp_path / "final",
        *TRAIN_FLAGS,
        "--cross-validation",
        out / "cross-validation.json",
        check=True,
    )
    card = (tmp_path / "final" / "MODEL_CARD.md").read_text()
    assert card.index("Quality on unseen patients (3-fold group cross-validation)") < card.index("## Evaluation")
    assert f"{group_auc['mean']:.4f} ± {group_auc['std_dev']:.4f}" in card, card
    assert released.returncode == 0
    # MLflow (the local file store in the working folder): a parent run with the summary,
    # and one child run per fold.
    runs = {}
    for run_dir in (tmp_path / "cwd" / "mlruns").glob("*/*/tags"):
        tags = {tag.name: tag.read_text() for tag in run_dir.iterdir()}
        runs[run_dir.parent.name] = (tags, {m.name for m in (run_dir.parent / "metrics").iterdir()})
    parents = [run_id for run_id, (tags, _) in runs.items() if tags.get("covidct.kind") == "cross-validation"]
    assert len(parents) == 1 and "cv_mean_roc_auc" in runs[parents[0]][1]
    children = sorted(
        tags["covidct.cv_fold"] for tags, _ in runs.values() if tags.get("mlflow.parentRunId") == parents[0]
    )
    assert children == ["0", "1", "2"]
    # Only the released model is logged as an MLflow model: the folds' packages stay in their folders.
    logged = list((tmp_path / "cwd" / "mlruns").glob("*/models/*/artifacts/model.ctpkg"))
    assert len(logged) == 1, logged

    # Every group is a test group of exactly one fold, and fold k validates on fold k+1's test.
    def groups(k, split):
        with open(out / f"split-fold-{k}.csv", newline="") as f:
            return {row["group"] for row in csv.DictReader(f) if row["split"] == split}

    tested = [groups(k, "test") for k in range(3)]
    assert sum(map(len, tested)) == len(set().union(*tested)) == 12
    assert all(groups(k, "val") == tested[(k + 1) % 3] for k in range(3))
    # A second run keeps the finished folds and gives the same summary.
    again = run("cross-validate", "--data-dir", data, "--folds", "3", "--out", out, *TRAIN_FLAGS, check=True)
    assert "fold already trained" in again.stderr
    assert json.loads((out / "cross-validation.json").read_text()) == summary
    bad = run("cross-validate", "--data-dir", data, "--folds", "2", "--out", tmp_path / "bad", *TRAIN_FLAGS)
    assert bad.returncode != 0 and "folds" in bad.stderr


def test_missing_imagenet_weights_say_how_to_get_them(run, tmp_path):
    data = shapes_dataset(tmp_path / "data", per_class=8)
    result = run(
        "train",
        "--data-dir",
        data,
        "--out",
        tmp_path / "run",
        "--weights-dir",
        tmp_path / "none",
        "--image-size",
        "32",
    )
    assert result.returncode != 0
    assert "efficientnet-lite0-57934424.pth" in result.stderr
    assert "scripts/fetch-weights.sh" in result.stderr


def test_bad_settings_name_the_field(run, tmp_path):
    data = shapes_dataset(tmp_path / "data", per_class=8)
    result = run("train", "--data-dir", data, "--out", tmp_path / "run", "--image-size", "8")
    assert result.returncode != 0 and "image_size" in result.stderr
    result = run(
        "train", "--data-dir", data, "--out", tmp_path / "run", "--positive-class", "Flu", "--pretrained", "none"
    )
    assert result.returncode != 0 and "Flu" in result.stderr
