"""Input handling without Evidently runs: the window, reading the prediction log read-only,
bad input (exit 2, the file and column named, no traceback), atomic files and the run history."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from datetime import datetime, timezone

import pytest

from covidct_monitor import output
from covidct_monitor.data import InputError, load_current, load_reference, parse_now, parse_window

from .monitor_synth import (
    HOUR_MS,
    NOW_MS,
    SCHEMA,
    make_frame,
    report_args,
    run_main,
    write_log,
    write_reference,
)

# ---------------------------------------------------------------- window


@pytest.mark.parametrize(
    "text,seconds", [("24h", 86400), ("30m", 1800), ("45s", 45), ("7d", 604800), ("1.5h", 5400), (" 2h ", 7200)]
)
def test_parse_window(text, seconds):
    assert parse_window(text) == seconds


@pytest.mark.parametrize("text", ["24", "h", "24x", "-1h", "0h", "1 day", ""])
def test_parse_window_rejects(text):
    with pytest.raises(InputError):
        parse_window(text)


def test_parse_now():
    assert parse_now(str(NOW_MS)) == datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert parse_now("2026-01-01T00:00:00Z") == datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert parse_now("2026-01-01T01:00:00+01:00") == datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert parse_now("2026-01-01T00:00:00") == datetime(2026, 1, 1, tzinfo=timezone.utc)
    with pytest.raises(InputError):
        parse_now("yesterday")


def test_window_filtering_of_the_log(tmp_path):
    log = tmp_path / "p.sqlite"
    # 10 rows every hour ending 25 h before now, 10 ending 2 h before now, one exactly at the
    # start boundary (excluded), one at now (included), one after now (excluded).
    write_log(log, make_frame(10, seed=1), end_ms=NOW_MS - 25 * HOUR_MS, span_ms=10 * HOUR_MS)
    write_log(log, make_frame(10, seed=2), labelled=4, end_ms=NOW_MS - 2 * HOUR_MS, span_ms=10 * HOUR_MS)
    write_log(log, make_frame(1, seed=3), end_ms=NOW_MS - 24 * HOUR_MS)
    write_log(log, make_frame(1, seed=4), end_ms=NOW_MS)
    write_log(log, make_frame(1, seed=5), end_ms=NOW_MS + 1)
    now = parse_now(str(NOW_MS))
    current = load_current(str(log), "24h", now)
    assert len(current.frame) == 11
    assert current.frame["created_unix_ms"].min() > NOW_MS - 24 * HOUR_MS
    assert current.frame["created_unix_ms"].max() == NOW_MS
    assert current.frame["label"].notna().sum() == 4
    assert set(current.frame.columns) >= {"predicted_label", "label", "probability", "threshold", "model_name", "mean"}
    assert len(load_current(str(log), "3h", now).frame) == 2  # the rows at now-2h and now
    assert len(load_current(str(log), "2d", now).frame) == 22
    assert current.window["start_unix_ms"] == NOW_MS - 24 * HOUR_MS


def test_log_is_opened_read_only(tmp_path):
    """The job must never write to the service's log, not even create WAL files or tables."""
    log = write_log(tmp_path / "p.sqlite", make_frame(5, seed=1), labelled=2)
    before = log.read_bytes()
    current = load_current(str(log), "24h", parse_now(str(NOW_MS)))
    assert len(current.frame) == 5
    assert log.read_bytes() == before
    assert not (tmp_path / "p.sqlite-wal").exists() or (tmp_path / "p.sqlite-wal").stat().st_size == 0


def test_features_json_and_unknown_labels(tmp_path):
    log = write_log(tmp_path / "p.sqlite", make_frame(6, seed=1), labelled=6)
    con = sqlite3.connect(log)
    con.execute("UPDATE predictions SET features = 'not json' WHERE request_id = 'req-000000'")
    con.commit()
    con.close()
    current = load_current(str(log), "24h", parse_now(str(NOW_MS)))
    assert len(current.frame) == 5
    assert current.invalid_rows == 1
    assert any("unreadable features" in n for n in current.notes)


def test_parquet_reference(tmp_path):
    frame = make_frame(20, seed=1)
    path = tmp_path / "reference.parquet"
    frame.to_parquet(path)
    reference = load_reference(str(path))
    assert len(reference.frame) == 20
    assert reference.positive_class == "COVID"
    assert reference.classes == ["non-COVID", "COVID"]


def test_reference_split_filter(tmp_path):
    path = write_reference(tmp_path / "r.csv", make_frame(20, seed=1))
    assert len(load_reference(str(path), ["test"]).frame) == 10
    with pytest.raises(InputError, match="no rows of split train"):
        load_reference(str(path), ["train"])


# ---------------------------------------------------------------- bad input: exit 2


def _good_log(tmp_path):
    return write_log(tmp_path / "good.sqlite", make_frame(5, seed=1))


def _bad(args):
    code, out, err = run_main(args)
    assert code == 2, (code, out, err)
    assert "Traceback" not in err
    return err


def test_missing_reference_file(tmp_path):
    err = _bad(report_args(tmp_path / "nope.csv", _good_log(tmp_path), tmp_path / "out"))
    assert "reference file" in err and "nope.csv" in err and "does not exist" in err
    assert not (tmp_path / "out").exists(), "nothing is written for bad input"


def test_missing_current_file(tmp_path, reference_csv):
    err = _bad(report_args(reference_csv, tmp_path / "predictions.sqlite", tmp_path / "out"))
    assert "current file" in err and "predictions.sqlite" in err


def test_reference_missing_column(tmp_path):
    path = tmp_path / "ref.csv"
    make_frame(10, seed=1).drop(columns=["sharpness"]).to_csv(path, index=False)
    err = _bad(report_args(path, _good_log(tmp_path), tmp_path / "out"))
    assert str(path) in err and "'sharpness'" in err


def test_empty_reference(tmp_path):
    path = tmp_path / "ref.csv"
    make_frame(10, seed=1).iloc[:0].to_csv(path, index=False)
    err = _bad(report_args(path, _good_log(tmp_path), tmp_path / "out"))
    assert str(path) in err and "no rows" in err
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert "empty" in _bad(report_args(empty, _good_log(tmp_path), tmp_path / "out"))


def test_reference_non_numeric_value(tmp_path):
    frame = make_frame(10, seed=1)
    frame["contrast"] = frame["contrast"].astype(object)
    frame.loc[3, "contrast"] = "high"
    path = write_reference(tmp_path / "ref.csv", frame)
    err = _bad(report_args(path, _good_log(tmp_path), tmp_path / "out"))
    assert "'contrast'" in err and "'high'" in err


def test_log_without_predictions_table(tmp_path, reference_csv):
    log = tmp_path / "other.sqlite"
    con = sqlite3.connect(log)
    con.execute("CREATE TABLE something (x)")
    con.commit()
    con.close()
    err = _bad(report_args(reference_csv, log, tmp_path / "out"))
    assert str(log) in err and "no table 'predictions'" in err


def test_log_missing_column(tmp_path, reference_csv):
    log = tmp_path / "old.sqlite"
    con = sqlite3.connect(log)
    con.executescript(SCHEMA.replace("probability REAL NOT NULL, ", ""))
    con.close()
    err = _bad(report_args(reference_csv, log, tmp_path / "out"))
    assert str(log) in err and "'probability'" in err and "'predictions'" in err


def test_log_features_missing_key(tmp_path, reference_csv):
    log = write_log(tmp_path / "p.sqlite", make_frame(3, seed=1))
    con = sqlite3.connect(log)
    con.execute("UPDATE predictions SET features = json_remove(features, '$.entropy')")
    con.commit()
    con.close()
    err = _bad(report_args(reference_csv, log, tmp_path / "out"))
    assert "features" in err and "'entropy'" in err


def test_current_csv_missing_column(tmp_path, reference_csv):
    path = tmp_path / "current.csv"
    make_frame(10, seed=1).drop(columns=["probability"]).to_csv(path, index=False)
    err = _bad(report_args(reference_csv, path, tmp_path / "out"))
    assert str(path) in err and "'probability'" in err


def test_not_a_database(tmp_path, reference_csv):
    path = tmp_path / "predictions.sqlite"
    path.write_text("hello")
    err = _bad(report_args(reference_csv, path, tmp_path / "out"))
    assert str(path) in err


@pytest.mark.parametrize(
    "extra,needle",
    [
        (["--window", "24x"], "24x"),
        (["--max-drift-share", "1.5"], "--max-drift-share"),
        (["--max-refusal-rate", "1.5"], "--max-refusal-rate"),
        (["--min-rows", "0"], "--min-rows"),
        (["--min-accuracy", "abc"], "--min-accuracy"),
        (["--now", "yesterday"], "yesterday"),
    ],
)
def test_bad_options(tmp_path, reference_csv, extra, needle):
    err = _bad(report_args(reference_csv, _good_log(tmp_path), tmp_path / "out") + extra)
    assert needle in err


def test_bad_drift_method(tmp_path, reference_csv):
    log = write_log(tmp_path / "p.sqlite", make_frame(40, seed=1))
    err = _bad(report_args(reference_csv, log, tmp_path / "out", "--drift-method", "nonsense"))
    assert "nonsense" in err and "wasserstein" in err


def test_python_m_bad_input_subprocess(tmp_path):
    """`python -m covidct_monitor` itself: exit 2, the file named, no traceback."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "covidct_monitor",
            *report_args(tmp_path / "missing.csv", tmp_path / "x.sqlite", tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert "missing.csv" in result.stderr and "Traceback" not in result.stderr


# ---------------------------------------------------------------- files and history


def test_write_atomic_replaces_and_leaves_no_temp(tmp_path):
    target = tmp_path / "a.json"
    output.write_atomic(target, "one")
    output.write_atomic(target, "two")
    assert target.read_text() == "two"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_latest_symlink_swap_and_prune(tmp_path):
    for name in ["20260101T000000Z", "20260101T010000Z", "20260101T010000Z-2", "20260101T020000Z"]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(json.dumps({"status": "pass"}))
    (tmp_path / "notes").mkdir()  # not a run directory: left alone
    output.point_latest(tmp_path, "20260101T010000Z")
    assert os.readlink(tmp_path / "latest") == "20260101T010000Z"
    output.point_latest(tmp_path, "20260101T020000Z")
    assert os.readlink(tmp_path / "latest") == "20260101T020000Z"
    assert (tmp_path / "latest" / "summary.json").exists()
    removed = output.prune(tmp_path, keep=2)
    assert removed == ["20260101T000000Z", "20260101T010000Z"]
    assert output.list_runs(tmp_path) == ["20260101T010000Z-2", "20260101T020000Z"]
    assert (tmp_path / "notes").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    history = output.render_history(tmp_path)
    assert history.index("20260101T020000Z") < history.index("20260101T010000Z-2")


def test_new_run_name_is_unique(tmp_path):
    moment = datetime(2026, 1, 1, tzinfo=timezone.utc)
    first = output.new_run_name(tmp_path, moment)
    (tmp_path / first).mkdir()
    second = output.new_run_name(tmp_path, moment)
    assert (first, second) == ("20260101T000000Z", "20260101T000000Z-2")


def test_latest_that_is_a_directory_is_refused(tmp_path):
    (tmp_path / "latest").mkdir()
    with pytest.raises(OSError, match="not a symlink"):
        output.point_latest(tmp_path, "20260101T000000Z")
