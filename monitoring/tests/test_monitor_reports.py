"""End-to-end runs of `report` (in-process, Evidently imported once) on synthetic prediction logs
with the service's exact schema: no drift, feature drift, probability drift, a bad model on
feedback labels, too few rows; files, summary.json and MLflow logging."""

from __future__ import annotations

import json
import shutil
import sqlite3

import numpy as np
import pandas as pd
import pytest

from covidct_monitor.runner import Options, log_to_mlflow

from .monitor_synth import HOUR_MS, NOW_MS, make_frame, read_summary, report_args, run_main, write_log


def _statuses(summary):
    return {t["name"]: t["status"] for t in summary["tests"]}


@pytest.fixture(scope="module")
def same(reference_csv, tmp_path_factory):
    """Current window from the reference distribution, 100 of 150 rows labelled, a good model.
    Outside the window: older drifted rows of a bad model, and one row after --now. (MLflow
    logging of full runs is tested with the watch process, test_monitor_watch.py.)"""
    base = tmp_path_factory.mktemp("same")
    log = base / "predictions.sqlite"
    write_log(
        log,
        make_frame(200, seed=70, brightness=60, spread=1.6, sharpness=4, model="bad"),
        labelled=200,
        end_ms=NOW_MS - 30 * HOUR_MS,
    )
    write_log(log, make_frame(150, seed=7), labelled=100, end_ms=NOW_MS)
    write_log(log, make_frame(1, seed=8, brightness=80), labelled=1, end_ms=NOW_MS + 60_000)
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        code, out, err = run_main(report_args(reference_csv, log, base / "out"))
    return {"code": code, "out": out, "err": err, "dir": base / "out", "log": log, "base": base}


def test_no_drift_passes(same):
    assert same["code"] == 0, same["out"] + same["err"]
    summary = read_summary(same["dir"])
    assert summary["status"] == "pass"
    assert summary["failed_tests"] == []
    assert _statuses(summary) == {
        "min_current_rows": "pass",
        "refusal_rate": "pass",
        "drifted_columns_share": "pass",
        "probability_drift": "pass",
        "accuracy": "pass",
        "roc_auc": "pass",
        # A log without the study tables: study-level quality is skipped, nothing fails.
        "study_accuracy": "skipped",
    }
    assert "status: pass" in same["out"]
    assert "MLflow" not in same["out"] + same["err"], "no tracking URI, no MLflow"
    assert "mlflow" not in read_summary(same["dir"])
    assert "Traceback" not in same["err"]


def test_window_keeps_only_current_rows(same):
    summary = read_summary(same["dir"])
    # 200 rows 30 h before --now and one after it are outside the 24 h window.
    assert summary["current"]["rows"] == 150
    assert summary["current"]["labelled_rows"] == 100
    assert summary["window"]["length"] == "24h"
    assert summary["window"]["end_unix_ms"] == NOW_MS
    assert summary["window"]["start_unix_ms"] == NOW_MS - 24 * HOUR_MS
    assert summary["window"]["end"] == "2026-01-01T00:00:00Z"


def test_summary_contents(same, reference_csv):
    summary = read_summary(same["dir"])
    assert summary["reference"]["path"] == str(reference_csv)
    assert summary["reference"]["rows"] == 400
    assert summary["reference"]["positive_class"] == "COVID"
    assert summary["current"]["path"] == str(same["log"])
    assert summary["current"]["kind"] == "sqlite"
    assert summary["current"]["models"] == [{"model_name": "covidct", "model_version": "3", "rows": 150}]
    assert summary["generated_at"].endswith("Z")
    for test in summary["tests"]:
        assert set(test) == {"name", "value", "condition", "status", "description"}
    tests = {t["name"]: t for t in summary["tests"]}
    assert tests["min_current_rows"]["value"] == 150
    assert tests["min_current_rows"]["condition"] == ">= 30"
    assert tests["refusal_rate"]["value"] == 0.0 and tests["refusal_rate"]["condition"] == "<= 0.05"
    assert summary["current"]["refused_rows"] == 0 and summary["reference"]["refusal_rate"] == 0.0
    assert tests["drifted_columns_share"]["condition"] == "< 0.3"
    assert tests["accuracy"]["condition"] == ">= 0.8"
    assert tests["roc_auc"]["condition"] == ">= 0.85"
    # file_bytes exists only in the reference: not a drift column.
    assert summary["drift"]["columns"] == [
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
        "probability",
    ]
    assert set(summary["drift"]["per_column"]) == set(summary["drift"]["columns"])
    cls = summary["classification"]
    assert cls["status"] == "run" and cls["rows"] == 100
    assert cls["probas_threshold"] == pytest.approx(0.42)
    assert tests["accuracy"]["value"] == pytest.approx(cls["metrics"]["accuracy"])


def test_files_written(same):
    out = same["dir"]
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        ["drift.html", "drift.json", "classification.html", "classification.json", "summary.json", "index.html"]
    ), "no temporary files may be left behind"
    drift = json.loads((out / "drift.json").read_text())
    assert drift["metrics"] and drift["tests"]
    assert any(t["name"].startswith("Share of Drifted Columns") for t in drift["tests"])
    cls = json.loads((out / "classification.json").read_text())
    assert {t["name"].split(":")[0] for t in cls["tests"]} == {"Accuracy metric", "RocAuc metric"}
    html = (out / "drift.html").read_text()
    assert html.lstrip().lower().startswith("<html") or "<!doctype" in html[:200].lower()
    assert "Value Drift for column probability" in html
    index = (out / "index.html").read_text()
    for needle in ('href="drift.html"', 'href="classification.html"', "drifted_columns_share", "refusal_rate", "PASS"):
        assert needle in index


def test_mlflow_failure_is_a_warning(same, tmp_path, monkeypatch):
    run_dir = tmp_path / "copy"
    shutil.copytree(same["dir"], run_dir)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    summary = read_summary(run_dir)
    opts = Options(reference="r", current="c", tracking_uri="http://127.0.0.1:9")
    outcome = log_to_mlflow(opts, run_dir, summary)
    assert outcome["status"] == "failed" and outcome["error"]
    assert read_summary(run_dir)["mlflow"]["status"] == "failed"
    assert (run_dir / "drift.html").exists()


def test_feature_drift_fails(reference_csv, tmp_path, no_tracking):
    frame = make_frame(120, seed=11, brightness=35, spread=1.4, sharpness=2.5)
    # Feedback only for the COVID rows (written first): one class, so no classification report.
    positives = frame[frame["label"] == "COVID"]
    frame = pd.concat([positives, frame[frame["label"] != "COVID"]])
    log = write_log(tmp_path / "p.sqlite", frame, labelled=len(positives))
    out = tmp_path / "out"
    out.mkdir()
    (out / "classification.html").write_text("stale report of an earlier run")
    code, stdout, stderr = run_main(report_args(reference_csv, log, out, "--max-drift-share", "0.5"))
    assert code == 1, stdout + stderr
    summary = read_summary(out)
    assert summary["status"] == "fail"
    assert summary["failed_tests"] == ["drifted_columns_share"]
    tests = {t["name"]: t for t in summary["tests"]}
    assert tests["drifted_columns_share"]["condition"] == "< 0.5"
    assert tests["drifted_columns_share"]["value"] >= 0.5
    assert {"mean", "contrast", "sharpness"} <= set(summary["drift"]["drifted_columns"])
    assert "probability" not in summary["drift"]["drifted_columns"]
    assert "FAIL drifted_columns_share" in stderr and "contrast" in stderr
    assert summary["classification"]["status"] == "skipped"
    assert "one class" in summary["classification"]["reason"]
    assert tests["accuracy"]["status"] == "skipped" and tests["roc_auc"]["status"] == "skipped"
    assert not (out / "classification.html").exists(), "a stale classification report must not survive"


def test_probability_drift_fails(reference_csv, tmp_path, no_tracking):
    log = write_log(tmp_path / "p.sqlite", make_frame(120, seed=12, logit_shift=1.5))
    code, stdout, stderr = run_main(report_args(reference_csv, log, tmp_path / "out"))
    assert code == 1, stdout + stderr
    summary = read_summary(tmp_path / "out")
    assert summary["failed_tests"] == ["probability_drift"]
    assert summary["drift"]["per_column"]["probability"]["drifted"] is True
    assert "FAIL probability_drift" in stderr
    assert summary["classification"]["status"] == "skipped"
    assert "fewer than --min-labelled-rows 30" in summary["classification"]["reason"]
    assert not (tmp_path / "out" / "classification.html").exists()


def test_bad_model_fails_accuracy_gate(reference_csv, tmp_path, no_tracking):
    frame = make_frame(120, seed=13, model="bad")
    log = write_log(tmp_path / "p.sqlite", frame, labelled=100)
    code, stdout, stderr = run_main(
        report_args(reference_csv, log, tmp_path / "out", "--min-accuracy", "0.7", "--min-roc-auc", "0.75")
    )
    assert code == 1, stdout + stderr
    summary = read_summary(tmp_path / "out")
    assert set(summary["failed_tests"]) == {"accuracy", "roc_auc"}
    tests = {t["name"]: t for t in summary["tests"]}
    assert tests["accuracy"]["condition"] == ">= 0.7" and tests["roc_auc"]["condition"] == ">= 0.75"
    # Evidently's accuracy at the model's threshold equals the service's own decisions.
    labelled = frame.iloc[:100]
    expected = float(np.mean(labelled["label"] == labelled["predicted_label"]))
    assert tests["accuracy"]["value"] == pytest.approx(expected)
    assert tests["accuracy"]["value"] < 0.7
    assert "FAIL accuracy" in stderr and "FAIL roc_auc" in stderr
    assert (tmp_path / "out" / "classification.html").exists()


def test_too_few_rows_fails_without_drift(reference_csv, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    log = write_log(tmp_path / "p.sqlite", make_frame(10, seed=14), labelled=10)
    con = sqlite3.connect(log)
    con.execute("UPDATE feedback SET label = 'pneumonia' WHERE request_id = 'req-000003'")
    con.commit()
    con.close()
    out = tmp_path / "out"
    code, stdout, stderr = run_main(
        report_args(reference_csv, log, out, "--min-rows", "25", "--tracking-uri", "http://127.0.0.1:9")
    )
    assert code == 1, stdout + stderr
    summary = read_summary(out)
    assert summary["failed_tests"] == ["min_current_rows"]
    tests = {t["name"]: t for t in summary["tests"]}
    assert tests["min_current_rows"]["value"] == 10
    assert tests["min_current_rows"]["condition"] == ">= 25"
    assert tests["drifted_columns_share"]["status"] == "skipped"
    assert summary["drift"]["status"] == "skipped"
    assert "fewer than --min-rows 25" in summary["drift"]["reason"]
    assert "FAIL min_current_rows = 10" in stderr
    # A feedback label that is not one of the reference's classes does not count.
    assert summary["current"]["labelled_rows"] == 9
    assert any("pneumonia" in note for note in summary["notes"])
    assert not (out / "drift.html").exists()
    # An unreachable tracking server: a warning, the exit code is the tests' verdict.
    assert "warning: MLflow logging failed" in stderr
    assert summary["mlflow"]["status"] == "failed"
    assert "Traceback" not in stderr


def test_current_csv_in_reference_format(reference_csv, tmp_path, no_tracking):
    """A CSV in the reference format as --current (no timestamps: no window); file_bytes is then
    a drift column too."""
    frame = make_frame(80, seed=15)
    path = tmp_path / "current.csv"
    frame.to_csv(path, index=False)
    code, stdout, stderr = run_main(report_args(reference_csv, path, tmp_path / "out", "--min-labelled-rows", "1000"))
    summary = read_summary(tmp_path / "out")
    assert code == 0, stdout + stderr
    assert summary["current"]["kind"] == "csv"
    assert summary["current"]["rows"] == 80
    assert summary["window"] is None
    assert "file_bytes" in summary["drift"]["columns"]
    assert any("window was not applied" in n for n in summary["notes"])
