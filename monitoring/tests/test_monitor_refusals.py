"""Rows refused by the out-of-distribution gate: the refusal rate of the window and its test,
refused rows left out of drift and classification quality, logs and reference CSVs written before
the gate, and bad gate columns (exit 2, file and column named)."""

from __future__ import annotations

import csv
import sqlite3

import numpy as np
import pandas as pd
import pytest

from covidct_monitor.data import load_current, load_reference, parse_now
from covidct_monitor.tracking import build_metrics

from .monitor_synth import (
    HOUR_MS,
    NOW_MS,
    make_frame,
    make_refused,
    read_summary,
    report_args,
    run_main,
    write_log,
    write_reference,
)

# The column order of `covidct monitor export-reference` (crates/cli/src/commands/monitor.rs).
EXPORTED_COLUMNS = [
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


def _now():
    return parse_now(str(NOW_MS))


def _statuses(summary):
    return {t["name"]: t["status"] for t in summary["tests"]}


@pytest.fixture(scope="module")
def gated(tmp_path_factory):
    """A reference with 150 refused of 550 rows; a log whose 24 h window holds 150 judged rows
    (100 labelled) and 100 refused rows (60 labelled), plus 40 refused rows 30 h old. The refused
    rows are far from the judged ones and come from a model that cannot judge them: counted, they
    would fail the drift and quality tests."""
    base = tmp_path_factory.mktemp("gated")
    reference = write_reference(
        base / "reference.csv", pd.concat([make_frame(400, seed=1), make_refused(150, seed=2)], ignore_index=True)
    )
    log = base / "predictions.sqlite"
    write_log(log, make_refused(40, seed=30), labelled=40, end_ms=NOW_MS - 30 * HOUR_MS)
    refused = make_refused(100, seed=32)
    judged = make_frame(150, seed=31)
    write_log(log, refused, labelled=60, end_ms=NOW_MS - 2 * HOUR_MS, span_ms=20 * HOUR_MS)
    write_log(log, judged, labelled=100, end_ms=NOW_MS)
    median = float(np.median(np.concatenate([refused["ood_score"], judged["ood_score"]])))
    return {"base": base, "reference": reference, "log": log, "ood_score_median": median}


@pytest.fixture(scope="module")
def over_threshold(gated):
    """The default --max-refusal-rate 0.05 against a window refusing 0.4."""
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        code, out, err = run_main(report_args(gated["reference"], gated["log"], gated["base"] / "default"))
    return {"code": code, "out": out, "err": err, "dir": gated["base"] / "default"}


# ---------------------------------------------------------------- loading


def test_reference_columns_follow_the_export(tmp_path):
    path = write_reference(tmp_path / "r.csv", make_frame(4, seed=1))
    with path.open() as handle:
        assert next(csv.reader(handle)) == EXPORTED_COLUMNS


def test_log_gate_columns_are_read(gated):
    frame = load_current(str(gated["log"]), "24h", _now()).frame
    assert len(frame) == 250
    assert frame["in_distribution"].dtype == bool
    refused = frame[~frame["in_distribution"]]
    assert len(refused) == 100
    # Refused rows carry no predicted label, but their probability and features.
    assert refused["predicted_label"].isna().all() and frame[frame["in_distribution"]]["predicted_label"].notna().all()
    assert refused["probability"].notna().all() and refused["mean"].notna().all()
    assert (refused["ood_score"] >= 3.0).all() and (frame[frame["in_distribution"]]["ood_score"] <= 1.5).all()


def test_old_schema_log_counts_every_row_as_judged(tmp_path):
    log = write_log(tmp_path / "old.sqlite", make_frame(12, seed=1), labelled=3, old_schema=True)
    columns = {row[1] for row in sqlite3.connect(log).execute("PRAGMA table_info(predictions)")}
    assert "in_distribution" not in columns and "ood_score" not in columns
    current = load_current(str(log), "24h", _now())
    assert not current.gate_columns
    assert len(current.frame) == 12 and current.frame["in_distribution"].all()
    assert current.frame["ood_score"].isna().all()


def test_reference_gate_columns(tmp_path):
    frame = pd.concat([make_frame(20, seed=1), make_refused(5, seed=2)], ignore_index=True)
    reference = load_reference(str(write_reference(tmp_path / "r.csv", frame)))
    assert reference.gate_columns
    assert reference.frame["in_distribution"].tolist() == [True] * 20 + [False] * 5
    assert reference.frame["ood_score"].to_numpy() == pytest.approx(frame["ood_score"].to_numpy())


def test_reference_of_a_model_without_gate(tmp_path):
    """A model without a gate: every row in distribution, an empty ood_score."""
    frame = make_frame(10, seed=1)
    frame["ood_score"] = np.nan
    reference = load_reference(str(write_reference(tmp_path / "r.csv", frame)))
    assert reference.frame["in_distribution"].all() and reference.frame["ood_score"].isna().all()


def test_old_reference_counts_every_row_as_judged(tmp_path):
    path = write_reference(tmp_path / "old.csv", make_frame(10, seed=1), old=True)
    with path.open() as handle:
        assert "in_distribution" not in next(csv.reader(handle))
    reference = load_reference(str(path))
    assert not reference.gate_columns
    assert len(reference.frame) == 10 and reference.frame["in_distribution"].all()
    assert reference.frame["ood_score"].isna().all()


def test_parquet_reference_with_boolean_gate_column(tmp_path):
    frame = pd.concat([make_frame(8, seed=1), make_refused(2, seed=2)], ignore_index=True)
    frame.to_parquet(tmp_path / "r.parquet")
    reference = load_reference(str(tmp_path / "r.parquet"))
    assert int((~reference.frame["in_distribution"]).sum()) == 2


@pytest.mark.parametrize("with_columns", [True, False])
def test_current_csv_with_and_without_gate_columns(tmp_path, with_columns):
    frame = pd.concat([make_frame(8, seed=1), make_refused(2, seed=2)], ignore_index=True)
    if not with_columns:
        frame = frame.drop(columns=["in_distribution", "ood_score"])
    frame.to_csv(tmp_path / "current.csv", index=False)
    current = load_current(str(tmp_path / "current.csv"), "24h", _now())
    assert current.gate_columns == with_columns
    assert int((~current.frame["in_distribution"]).sum()) == (2 if with_columns else 0)


# ---------------------------------------------------------------- the refusal rate and its test


def test_refusal_rate_over_the_window(over_threshold, gated):
    summary = read_summary(over_threshold["dir"])
    cur, ref = summary["current"], summary["reference"]
    # The 40 refused rows older than the window do not count.
    assert (cur["rows"], cur["refused_rows"]) == (250, 100)
    assert cur["refusal_rate"] == pytest.approx(0.4)
    assert cur["ood_score_median"] == pytest.approx(gated["ood_score_median"])
    assert (ref["rows"], ref["refused_rows"]) == (550, 150)
    assert ref["refusal_rate"] == pytest.approx(150 / 550)
    tests = {t["name"]: t for t in summary["tests"]}
    assert tests["refusal_rate"]["value"] == pytest.approx(0.4)
    assert "100 of 250" in tests["refusal_rate"]["description"]
    assert tests["min_current_rows"]["value"] == 150, "refused rows are no rows to monitor"


def test_refusal_rate_above_the_threshold_fails(over_threshold):
    assert over_threshold["code"] == 1, over_threshold["out"] + over_threshold["err"]
    summary = read_summary(over_threshold["dir"])
    assert summary["status"] == "fail"
    # Everything else passes: the refused rows are left out of drift and classification quality.
    assert summary["failed_tests"] == ["refusal_rate"]
    tests = {t["name"]: t for t in summary["tests"]}
    assert tests["refusal_rate"]["condition"] == "<= 0.05"
    assert "FAIL refusal_rate = 0.4 (condition: <= 0.05)" in over_threshold["err"]
    assert "250 current rows (100 refused" in over_threshold["out"]
    metrics = build_metrics(summary)
    assert metrics["refusal_rate"] == pytest.approx(0.4)
    assert metrics["reference_refusal_rate"] == pytest.approx(150 / 550)
    assert metrics["test.refusal_rate.passed"] == 0.0
    index = (over_threshold["dir"] / "index.html").read_text()
    assert "refused by the out-of-distribution gate" in index and "100 of 250 current rows" in index


def test_refused_rows_left_out_of_drift_and_quality(over_threshold):
    summary = read_summary(over_threshold["dir"])
    assert summary["drift"]["status"] == "run"
    assert summary["drift"]["left_out_refused"] == {"current": 100, "reference": 150}
    assert summary["drift"]["drifted_columns"] == []
    cls = summary["classification"]
    assert cls["status"] == "run" and cls["rows"] == 100
    assert cls["left_out_refused"] == {"current": 60, "reference": 150}
    assert summary["current"]["labelled_rows"] == 100
    assert sum(cls["class_counts"].values()) == 100
    assert cls["metrics"]["accuracy"] >= 0.8
    assert any("60 refused row(s) with feedback labels" in n for n in summary["notes"])


def test_refusal_rate_under_the_threshold_passes(gated, tmp_path, no_tracking):
    out = tmp_path / "out"
    code, stdout, stderr = run_main(report_args(gated["reference"], gated["log"], out, "--max-refusal-rate", "0.5"))
    assert code == 0, stdout + stderr
    summary = read_summary(out)
    assert summary["status"] == "pass" and summary["failed_tests"] == []
    assert summary["thresholds"]["max_refusal_rate"] == 0.5
    tests = {t["name"]: t for t in summary["tests"]}
    assert tests["refusal_rate"]["status"] == "pass" and tests["refusal_rate"]["condition"] == "<= 0.5"


@pytest.mark.parametrize("limit,status", [("0.4", "pass"), ("0.39", "fail")])
def test_refusal_rate_threshold_is_inclusive(gated, tmp_path, no_tracking, limit, status):
    # Without enough rows for the Evidently reports: only the row count and refusal rate tests run.
    out = tmp_path / "out"
    code, stdout, stderr = run_main(
        report_args(
            gated["reference"],
            gated["log"],
            out,
            "--max-refusal-rate",
            limit,
            "--min-rows",
            "1000",
            "--min-labelled-rows",
            "1000",
        )
    )
    assert code == 1, stdout + stderr  # min_current_rows fails in both
    assert _statuses(read_summary(out))["refusal_rate"] == status


def test_empty_window_skips_the_refusal_rate(gated, tmp_path, no_tracking):
    out = tmp_path / "out"
    code, stdout, stderr = run_main(
        report_args(gated["reference"], gated["log"], out, "--now", NOW_MS + 48 * HOUR_MS)  # the last --now wins
    )
    summary = read_summary(out)
    assert code == 1, stdout + stderr
    assert summary["current"]["rows"] == 0 and summary["current"]["refusal_rate"] is None
    assert _statuses(summary)["refusal_rate"] == "skipped"
    assert summary["failed_tests"] == ["min_current_rows"]


def test_old_log_and_old_reference_still_work(tmp_path, no_tracking):
    reference = write_reference(tmp_path / "old.csv", make_frame(400, seed=1), old=True)
    log = write_log(tmp_path / "old.sqlite", make_frame(120, seed=5), labelled=60, old_schema=True)
    out = tmp_path / "out"
    code, stdout, stderr = run_main(report_args(reference, log, out))
    assert code == 0, stdout + stderr
    summary = read_summary(out)
    assert summary["status"] == "pass"
    assert _statuses(summary)["refusal_rate"] == "pass"
    assert summary["current"]["refusal_rate"] == 0.0 and summary["reference"]["refusal_rate"] == 0.0
    assert summary["current"]["ood_score_median"] is None and summary["reference"]["ood_score_median"] is None
    assert summary["drift"]["status"] == "run" and summary["classification"]["rows"] == 60
    gate_notes = [n for n in summary["notes"] if "no in_distribution column" in n]
    assert len(gate_notes) == 2 and "current data" in gate_notes[0] and "reference" in gate_notes[1]


# ---------------------------------------------------------------- bad gate columns: exit 2


def _bad(args):
    code, out, err = run_main(args)
    assert code == 2, (code, out, err)
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize(
    "column,value,needle",
    [
        ("in_distribution", "2", "'predictions.in_distribution' has a value 2 that is not 0 or 1"),
        ("in_distribution", "'yes'", "'predictions.in_distribution' has a value 'yes' that is not 0 or 1"),
        ("ood_score", "'high'", "'predictions.ood_score' has a non-numeric value 'high'"),
    ],
)
def test_bad_gate_value_in_the_log(tmp_path, reference_csv, column, value, needle):
    log = write_log(tmp_path / "p.sqlite", make_frame(5, seed=1))
    con = sqlite3.connect(log)
    con.execute(f"UPDATE predictions SET {column} = {value} WHERE request_id = 'req-000002'")
    con.commit()
    con.close()
    err = _bad(report_args(reference_csv, log, tmp_path / "out"))
    assert str(log) in err and needle in err and "'req-000002'" in err


@pytest.mark.parametrize(
    "column,value,needle",
    [
        ("in_distribution", "maybe", "column 'in_distribution' has a value 'maybe' that is not true/false or 1/0"),
        ("in_distribution", None, "column 'in_distribution' has a value (empty)"),
        ("ood_score", "n/a", "column 'ood_score' has a non-numeric value 'n/a'"),
    ],
)
def test_bad_gate_value_in_the_reference(tmp_path, column, value, needle):
    path = write_reference(tmp_path / "ref.csv", make_frame(10, seed=1))
    frame = pd.read_csv(path, dtype=str)
    frame.loc[3, column] = value
    frame.to_csv(path, index=False)
    err = _bad(report_args(path, write_log(tmp_path / "p.sqlite", make_frame(5, seed=1)), tmp_path / "out"))
    assert str(path) in err and needle in err and "data row 4" in err


def test_bad_gate_value_in_a_current_csv(tmp_path, reference_csv):
    frame = make_frame(10, seed=1)
    frame["in_distribution"] = frame["in_distribution"].astype(object)
    frame.loc[1, "in_distribution"] = "refused"
    path = tmp_path / "current.csv"
    frame.to_csv(path, index=False)
    err = _bad(report_args(reference_csv, path, tmp_path / "out"))
    assert str(path) in err and "'in_distribution'" in err and "'refused'" in err


def test_reference_refused_entirely(tmp_path):
    path = write_reference(tmp_path / "ref.csv", make_refused(10, seed=1))
    err = _bad(report_args(path, write_log(tmp_path / "p.sqlite", make_frame(5, seed=1)), tmp_path / "out"))
    assert str(path) in err and "every row was refused" in err
