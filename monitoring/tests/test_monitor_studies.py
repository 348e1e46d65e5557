"""Study-level quality: the service's verdicts for whole CT studies (tables `studies`,
`study_feedback`) against study feedback — the figures in summary.json (checked against values
computed here from the synthetic studies, not from the log), the `study_accuracy` test and
--min-study-accuracy, too few labelled studies, logs without the study tables, slice rows of
studies staying ordinary rows of the window, and bad study tables (exit 2)."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pandas as pd
import pytest

from covidct_monitor.data import load_current, parse_now
from covidct_monitor.tracking import build_metrics

from .monitor_synth import (
    HOUR_MS,
    NEGATIVE,
    NOW_MS,
    POSITIVE,
    SCHEMA,
    STUDY_THRESHOLD,
    make_frame,
    make_studies,
    read_summary,
    report_args,
    run_main,
    write_log,
    write_studies,
)

SECTION_KEYS = {
    "status",
    "tables",
    "studies",
    "with_verdict",
    "without_verdict",
    "without_verdict_share",
    "labelled_studies",
    "labelled_without_verdict",
}


def _tests(summary):
    return {t["name"]: t for t in summary["tests"]}


def expected_figures(studies: pd.DataFrame) -> dict:
    """Accuracy, sensitivity, specificity and ROC-AUC of the verdicts, computed directly from the
    synthetic studies (ROC-AUC by comparing every positive with every negative)."""
    truth = studies["true_label"].to_numpy() == POSITIVE
    verdict = studies["label"].to_numpy() == POSITIVE
    prob = studies["probability"].to_numpy(dtype=float)
    pos, neg = prob[truth], prob[~truth]
    pairs = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return {
        "accuracy": float(np.mean(truth == verdict)),
        "sensitivity": float(np.mean(verdict[truth])) if truth.any() else None,
        "specificity": float(np.mean(~verdict[~truth])) if (~truth).any() else None,
        "roc_auc": float(pairs / (len(pos) * len(neg))) if len(pos) and len(neg) else None,
    }


def _has_verdict(studies: pd.DataFrame) -> pd.Series:
    return studies["label"].ne("") & studies["probability"].notna()


@pytest.fixture(scope="module")
def studied(reference_csv, tmp_path_factory):
    """A log with study-level prediction. In the 24 h window: 150 single-image rows (100 with
    feedback) and 60 studies with their slices, 6 of them without a verdict; 47 studies have
    study feedback, 2 of those without a verdict. Outside the window: 20 labelled studies of a
    model that ignores the truth (30 h old) and one after --now."""
    base = tmp_path_factory.mktemp("studied")
    log = base / "predictions.sqlite"
    write_log(log, make_frame(150, seed=7), labelled=100, study_schema=True)
    write_studies(log, make_studies(20, seed=40, model="bad"), labelled=20, end_ms=NOW_MS - 30 * HOUR_MS)
    studies = make_studies(60, seed=3, no_verdict=6)
    # Two studies without a verdict first, so that they are among the 47 with feedback.
    studies = pd.concat([studies.iloc[54:56], studies.iloc[:54], studies.iloc[56:]], ignore_index=True)
    write_studies(log, studies, labelled=47)
    write_studies(log, make_studies(1, seed=41, model="bad"), labelled=1, end_ms=NOW_MS + HOUR_MS)
    labelled = studies.iloc[:47]
    labelled = labelled[_has_verdict(labelled)]
    assert len(labelled) == 45
    expected = expected_figures(labelled)
    # The data must leave room on both sides of the default floor 0.8: some wrong verdicts.
    assert 0.85 < expected["accuracy"] < 1.0
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        code, out, err = run_main(report_args(reference_csv, log, base / "out"))
    return {
        "code": code,
        "out": out,
        "err": err,
        "dir": base / "out",
        "log": log,
        "studies": studies,
        "labelled": labelled,
        "expected": expected,
    }


# ---------------------------------------------------------------- figures and files


def test_study_quality_figures(studied):
    assert studied["code"] == 0, studied["out"] + studied["err"]
    summary = read_summary(studied["dir"])
    assert summary["status"] == "pass" and summary["failed_tests"] == []
    study = summary["study_quality"]
    assert SECTION_KEYS <= set(study)
    assert study["status"] == "run" and study["tables"] is True
    # The 21 studies outside the window do not count.
    assert study["studies"] == 60
    assert (study["with_verdict"], study["without_verdict"]) == (54, 6)
    assert study["without_verdict_share"] == pytest.approx(6 / 60)
    assert study["without_verdict_reasons"] == {
        "every slice refused by the out-of-distribution gate": 3,
        "too few slices: 2 used, at least 4 needed": 3,
    }
    assert study["labelled_studies"] == 45
    assert study["labelled_without_verdict"] == 2
    labelled = studied["labelled"]
    assert study["class_counts"] == {k: int(v) for k, v in labelled["true_label"].value_counts().items()}
    assert study["positive_class"] == POSITIVE
    assert study["probas_threshold"] == pytest.approx(STUDY_THRESHOLD)
    expected = studied["expected"]
    assert set(study["metrics"]) == {"accuracy", "sensitivity", "specificity", "roc_auc"}
    for key, value in expected.items():
        assert study["metrics"][key] == pytest.approx(value), key
    confusion = study["confusion"]
    assert sum(confusion.values()) == 45
    assert confusion["tp"] + confusion["fn"] == int((labelled["true_label"] == POSITIVE).sum())
    assert study["report"] == {"status": "run"}
    test = _tests(summary)["study_accuracy"]
    assert test["status"] == "pass" and test["condition"] == ">= 0.8"
    assert test["value"] == pytest.approx(expected["accuracy"])
    assert (
        "45 labelled studies" in test["description"] and "2 labelled studies without a verdict" in test["description"]
    )
    assert summary["thresholds"]["min_labelled_studies"] == 30 and summary["thresholds"]["min_study_accuracy"] == 0.8
    assert "PASS    study_accuracy" in studied["out"]
    assert "studies: 60 in the window (6 without a verdict), 45 labelled" in studied["out"]
    assert any("2 studies with feedback but without a verdict" in n for n in summary["notes"])


def test_study_report_files(studied):
    out = studied["dir"]
    summary = read_summary(out)
    assert summary["files"]["study_quality_html"] == "study_quality.html"
    assert summary["files"]["study_quality_json"] == "study_quality.json"
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        [
            "drift.html",
            "drift.json",
            "classification.html",
            "classification.json",
            "study_quality.html",
            "study_quality.json",
            "summary.json",
            "index.html",
        ]
    )
    report = json.loads((out / "study_quality.json").read_text())
    assert [t["name"] for t in report["tests"]] == ["Accuracy metric: Greater or Equal 0.800"]
    assert report["tests"][0]["status"] == "SUCCESS"
    values = {m["config"]["type"].rsplit(":", 1)[-1]: m["value"] for m in report["metrics"]}
    # Evidently, at the study threshold, agrees with the verdicts (the service decides p >= threshold).
    assert values["Accuracy"] == pytest.approx(studied["expected"]["accuracy"])
    assert values["RocAuc"] == pytest.approx(studied["expected"]["roc_auc"])
    assert values["TNR"] == pytest.approx(studied["expected"]["specificity"])
    html = (out / "study_quality.html").read_text()
    assert "<html" in html[:500].lower() or "<!doctype" in html[:200].lower()
    index = (out / "index.html").read_text()
    assert 'href="study_quality.html"' in index and "Study-level quality" in index and "study_accuracy" in index


def test_study_figures_reach_mlflow_metrics(studied):
    metrics = build_metrics(read_summary(studied["dir"]))
    assert metrics["study.accuracy"] == pytest.approx(studied["expected"]["accuracy"])
    assert metrics["study.roc_auc"] == pytest.approx(studied["expected"]["roc_auc"])
    assert metrics["study.labelled_studies"] == 45 and metrics["study.without_verdict"] == 6
    assert metrics["test.study_accuracy.passed"] == 1.0


def test_study_slices_are_ordinary_rows(studied):
    """Slices of studies stay in the window's rows once each: drift and the refusal rate see them,
    slice-level quality counts only slice feedback (study feedback is not copied to slices)."""
    summary = read_summary(studied["dir"])
    studies = studied["studies"]
    slices, refused = int(studies["slices"].sum()), int(studies["refused"].sum())
    assert summary["current"]["rows"] == 150 + slices
    assert summary["current"]["study_rows"] == slices
    assert summary["current"]["refused_rows"] == refused
    assert summary["current"]["labelled_rows"] == 100
    assert summary["classification"]["rows"] == 100
    assert summary["drift"]["status"] == "run"
    assert _tests(summary)["drifted_columns_share"]["status"] == "pass"
    assert _tests(summary)["min_current_rows"]["value"] == 150 + slices - refused
    current = load_current(str(studied["log"]), "24h", parse_now(str(NOW_MS)))
    frame = current.frame
    assert frame["request_id"].is_unique
    in_study = frame[frame["study_id"].notna()]
    assert len(in_study) == slices and in_study["study_id"].nunique() == 60
    assert set(in_study["study_id"]) == set(studies["study_id"])
    assert len(current.studies) == 60 and int(current.studies["verdict"].sum()) == 54


def test_study_log_is_opened_read_only(studied):
    before = studied["log"].read_bytes()
    load_current(str(studied["log"]), "24h", parse_now(str(NOW_MS)))
    assert studied["log"].read_bytes() == before


# ---------------------------------------------------------------- the study_accuracy test


@pytest.mark.parametrize("above,code,status", [(0.0, 0, "pass"), (0.01, 1, "fail")])
def test_min_study_accuracy(studied, reference_csv, tmp_path, no_tracking, above, code, status):
    """The floor is inclusive: the accuracy itself passes, a point above it fails."""
    limit = repr(studied["expected"]["accuracy"] + above)
    out = tmp_path / "out"
    got, stdout, stderr = run_main(report_args(reference_csv, studied["log"], out, "--min-study-accuracy", limit))
    assert got == code, stdout + stderr
    summary = read_summary(out)
    test = _tests(summary)["study_accuracy"]
    assert test["status"] == status and test["condition"] == f">= {float(limit)}"
    assert summary["failed_tests"] == ([] if status == "pass" else ["study_accuracy"])
    if status == "fail":
        assert summary["status"] == "fail"
        assert "FAIL study_accuracy" in stderr and f"(condition: >= {float(limit)})" in stderr
    else:
        assert "FAIL" not in stderr


def test_bad_study_model_fails_the_default_floor(reference_csv, tmp_path, no_tracking):
    studies = make_studies(50, seed=5, model="bad")
    log = write_studies(tmp_path / "p.sqlite", studies, labelled=40)
    out = tmp_path / "out"
    code, stdout, stderr = run_main(report_args(reference_csv, log, out))
    assert code == 1, stdout + stderr
    summary = read_summary(out)
    assert summary["failed_tests"] == ["study_accuracy"]
    expected = expected_figures(studies.iloc[:40])
    assert expected["accuracy"] < 0.8
    study = summary["study_quality"]
    assert study["labelled_studies"] == 40 and study["without_verdict"] == 0
    assert study["without_verdict_share"] == 0.0
    for key, value in expected.items():
        assert study["metrics"][key] == pytest.approx(value), key
    assert _tests(summary)["study_accuracy"]["value"] == pytest.approx(expected["accuracy"])
    assert "FAIL study_accuracy" in stderr
    report = json.loads((out / "study_quality.json").read_text())
    assert report["tests"][0]["status"] == "FAIL"
    # Slice-level quality has no slice feedback here: skipped, not failed.
    assert summary["classification"]["status"] == "skipped"


def test_verdicts_count_not_recomputed_labels(reference_csv, tmp_path, no_tracking):
    """The summary counts what the service answered: a verdict that is not p >= threshold (here
    every verdict flipped) is counted as given, and a note says the Evidently report differs."""
    studies = make_studies(40, seed=6)
    flipped = studies.copy()
    flipped["label"] = flipped["label"].map({POSITIVE: NEGATIVE, NEGATIVE: POSITIVE})
    log = write_studies(tmp_path / "p.sqlite", flipped, labelled=40, with_slices=False)
    write_log(log, make_frame(60, seed=9))
    out = tmp_path / "out"
    code, stdout, stderr = run_main(report_args(reference_csv, log, out))
    assert code == 1, stdout + stderr
    summary = read_summary(out)
    expected = expected_figures(flipped)
    assert summary["study_quality"]["metrics"]["accuracy"] == pytest.approx(expected["accuracy"])
    assert expected["accuracy"] == pytest.approx(1.0 - expected_figures(studies)["accuracy"])
    assert any("40 labelled studies have a verdict other than probability >= threshold" in n for n in summary["notes"])


# ---------------------------------------------------------------- skipped


def test_too_few_labelled_studies_are_skipped(reference_csv, tmp_path, no_tracking):
    studies = make_studies(25, seed=8, no_verdict=3)
    log = write_studies(tmp_path / "p.sqlite", studies, labelled=12)
    out = tmp_path / "out"
    out.mkdir()
    (out / "study_quality.html").write_text("stale report of an earlier run")
    code, stdout, stderr = run_main(report_args(reference_csv, log, out))
    assert code == 0, stdout + stderr
    summary = read_summary(out)
    assert summary["status"] == "pass" and summary["failed_tests"] == []
    study = summary["study_quality"]
    assert study["status"] == "skipped" and study["labelled_studies"] == 12
    assert "12 labelled studies with a verdict, fewer than --min-labelled-studies 30" in study["reason"]
    # The counts of the window are reported all the same.
    assert (study["studies"], study["without_verdict"]) == (25, 3)
    assert study["without_verdict_share"] == pytest.approx(3 / 25)
    assert "metrics" not in study
    test = _tests(summary)["study_accuracy"]
    assert test["status"] == "skipped" and test["value"] is None
    assert "SKIPPED study_accuracy: 12 labelled studies" in stdout
    assert not (out / "study_quality.html").exists(), "a stale study report must not survive"
    assert "study_quality_html" not in summary["files"]
    assert "Skipped: 12 labelled studies" in (out / "index.html").read_text()
    # With a lower minimum the same log is evaluated.
    code, stdout, stderr = run_main(report_args(reference_csv, log, out, "--min-labelled-studies", "12"))
    summary = read_summary(out)
    assert summary["study_quality"]["status"] == "run" and summary["thresholds"]["min_labelled_studies"] == 12
    assert summary["study_quality"]["metrics"]["accuracy"] == pytest.approx(
        expected_figures(studies.iloc[:12])["accuracy"]
    )
    assert _tests(summary)["study_accuracy"]["status"] in ("pass", "fail")
    assert (out / "study_quality.html").exists()


@pytest.mark.parametrize("old_schema", [False, True], ids=["before-studies", "before-gate"])
def test_log_without_study_tables_skips_study_quality(reference_csv, tmp_path, no_tracking, old_schema):
    log = write_log(tmp_path / "p.sqlite", make_frame(120, seed=5), labelled=60, old_schema=old_schema)
    tables = {row[0] for row in sqlite3.connect(log).execute("SELECT name FROM sqlite_master")}
    assert "studies" not in tables and "study_feedback" not in tables
    columns = {row[1] for row in sqlite3.connect(log).execute("PRAGMA table_info(predictions)")}
    assert "study_id" not in columns and "slice_index" not in columns
    out = tmp_path / "out"
    code, stdout, stderr = run_main(report_args(reference_csv, log, out))
    assert code == 0, stdout + stderr
    summary = read_summary(out)
    assert summary["status"] == "pass"
    study = summary["study_quality"]
    assert SECTION_KEYS <= set(study)
    assert study["status"] == "skipped" and study["tables"] is False
    assert (
        "the log has no table 'studies'" in study["reason"]
        and "written before study-level prediction" in study["reason"]
    )
    assert study["studies"] is None and study["labelled_studies"] == 0
    assert summary["current"]["study_rows"] == 0
    assert _tests(summary)["study_accuracy"]["status"] == "skipped"
    assert "SKIPPED study_accuracy: the log has no table 'studies'" in stdout
    assert "studies:" not in stdout
    assert not (out / "study_quality.html").exists()
    assert summary["classification"]["rows"] == 60 and summary["drift"]["status"] == "run"
    assert not any(k.startswith("study.") for k in build_metrics(summary))


def test_current_csv_skips_study_quality(reference_csv, tmp_path, no_tracking):
    path = tmp_path / "current.csv"
    make_frame(80, seed=15).to_csv(path, index=False)
    code, stdout, stderr = run_main(report_args(reference_csv, path, tmp_path / "out", "--min-labelled-rows", "1000"))
    assert code == 0, stdout + stderr
    study = read_summary(tmp_path / "out")["study_quality"]
    assert study["status"] == "skipped" and "CSV" in study["reason"]


def test_studies_table_without_study_feedback(reference_csv, tmp_path, no_tracking):
    log = write_studies(tmp_path / "p.sqlite", make_studies(40, seed=9, no_verdict=4), labelled=40)
    con = sqlite3.connect(log)
    con.executescript("DROP VIEW labelled_studies; DROP TABLE study_feedback;")
    con.close()
    out = tmp_path / "out"
    code, stdout, stderr = run_main(report_args(reference_csv, log, out))
    assert code == 0, stdout + stderr
    summary = read_summary(out)
    study = summary["study_quality"]
    assert study["status"] == "skipped" and study["labelled_studies"] == 0
    assert (study["studies"], study["without_verdict"]) == (40, 4)
    assert any("no 'study_feedback' table" in n for n in summary["notes"])


def test_one_class_of_study_feedback(reference_csv, tmp_path, no_tracking):
    """Only COVID studies labelled: accuracy (= sensitivity) is tested, specificity and ROC-AUC
    are undefined, and Evidently's report (it needs both classes) is skipped."""
    studies = make_studies(80, seed=10)
    studies = pd.concat(
        [studies[studies["true_label"] == POSITIVE], studies[studies["true_label"] != POSITIVE]], ignore_index=True
    )
    positives = int((studies["true_label"] == POSITIVE).sum())
    assert positives >= 30
    log = write_studies(tmp_path / "p.sqlite", studies, labelled=positives)
    out = tmp_path / "out"
    out.mkdir()
    (out / "study_quality.json").write_text("{}")
    code, stdout, stderr = run_main(report_args(reference_csv, log, out, "--min-study-accuracy", "0.5"))
    assert code == 0, stdout + stderr
    study = read_summary(out)["study_quality"]
    expected = expected_figures(studies.iloc[:positives])
    assert study["status"] == "run" and study["class_counts"] == {POSITIVE: positives}
    assert study["metrics"]["accuracy"] == pytest.approx(expected["sensitivity"])
    assert study["metrics"]["sensitivity"] == pytest.approx(expected["sensitivity"])
    assert study["metrics"]["specificity"] is None and study["metrics"]["roc_auc"] is None
    assert study["report"]["status"] == "skipped" and "one class only" in study["report"]["reason"]
    assert not (out / "study_quality.json").exists()


def test_unknown_study_feedback_label_is_left_out(reference_csv, tmp_path, no_tracking):
    studies = make_studies(12, seed=11)
    log = write_studies(tmp_path / "p.sqlite", studies, labelled=12)
    con = sqlite3.connect(log)
    con.execute("UPDATE study_feedback SET label = 'pneumonia' WHERE study_id = ?", (studies["study_id"][3],))
    con.commit()
    con.close()
    out = tmp_path / "out"
    run_main(report_args(reference_csv, log, out, "--min-labelled-studies", "5"))
    summary = read_summary(out)
    assert summary["study_quality"]["labelled_studies"] == 11
    kept = studies.drop(index=3)
    assert summary["study_quality"]["metrics"]["accuracy"] == pytest.approx(expected_figures(kept)["accuracy"])
    assert any("pneumonia" in n and "study feedback" in n for n in summary["notes"])


# ---------------------------------------------------------------- bad study tables: exit 2


def _bad(args):
    code, out, err = run_main(args)
    assert code == 2, (code, out, err)
    assert "Traceback" not in err
    return err


def test_studies_table_lacking_a_column(reference_csv, tmp_path):
    log = tmp_path / "p.sqlite"
    con = sqlite3.connect(log)
    con.executescript(SCHEMA)
    con.execute("CREATE TABLE studies (study_id TEXT PRIMARY KEY, created_unix_ms INTEGER, label TEXT)")
    con.close()
    err = _bad(report_args(reference_csv, log, tmp_path / "out"))
    assert str(log) in err and "table 'studies' lacks columns" in err and "'probability'" in err and "'rule'" in err


@pytest.mark.parametrize(
    "column,value,needle",
    [
        ("probability", "'high'", "column 'studies.probability' has a value 'high' that is not a number"),
        ("threshold", "'t'", "column 'studies.threshold' has a value 't' that is not a number"),
    ],
)
def test_bad_study_value(reference_csv, tmp_path, column, value, needle):
    studies = make_studies(5, seed=12)
    log = write_studies(tmp_path / "p.sqlite", studies, labelled=5, with_slices=False)
    con = sqlite3.connect(log)
    con.execute(f"UPDATE studies SET {column} = {value} WHERE study_id = ?", (studies["study_id"][2],))
    con.commit()
    con.close()
    err = _bad(report_args(reference_csv, log, tmp_path / "out"))
    assert str(log) in err and needle in err and repr(studies["study_id"][2]) in err
