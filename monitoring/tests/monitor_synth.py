"""Synthetic reference sets and prediction logs for the monitoring tests (shared helpers).

The image statistics come from a small generative model (brightness and spread per image, the
percentiles, contrast and entropy derived from them) so that, as with real CT slices, a brightness
or protocol change moves several correlated columns at once."""

from __future__ import annotations

import json
import sqlite3
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from covidct_monitor.data import FEATURES, GATE_COLUMNS, REFERENCE_COLUMNS

POSITIVE, NEGATIVE = "COVID", "non-COVID"
THRESHOLD = 0.42
NOW_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
HOUR_MS = 3_600_000

# The exact schema of the service's prediction log.
SCHEMA = """
CREATE TABLE predictions (request_id TEXT PRIMARY KEY, created_unix_ms INTEGER NOT NULL, model_name TEXT NOT NULL, model_version TEXT NOT NULL, label TEXT NOT NULL /* predicted label; '' when refused */, probability REAL NOT NULL, threshold REAL NOT NULL, features TEXT NOT NULL /* JSON object with keys width,height,mean,std,p01,p05,p25,p50,p75,p95,p99,entropy,contrast,sharpness */, image_path TEXT, in_distribution INTEGER NOT NULL DEFAULT 1 /* 0: refused by the out-of-distribution gate */, ood_score REAL /* the gate's feature score; NULL without a gate */);
CREATE TABLE feedback (request_id TEXT PRIMARY KEY, label TEXT NOT NULL /* true label */, received_unix_ms INTEGER NOT NULL);
CREATE VIEW labelled_predictions AS SELECT p.*, f.label AS true_label, f.received_unix_ms FROM predictions p JOIN feedback f USING (request_id);
"""

# The schema of logs written before the out-of-distribution gate (no in_distribution, ood_score).
_GATE_DDL = (
    ", in_distribution INTEGER NOT NULL DEFAULT 1 /* 0: refused by the out-of-distribution gate */, "
    "ood_score REAL /* the gate's feature score; NULL without a gate */"
)
assert _GATE_DDL in SCHEMA
OLD_SCHEMA = SCHEMA.replace(_GATE_DDL, "").replace(" /* predicted label; '' when refused */", " /* predicted label */")

# The log with study-level prediction: predictions gains study_id and slice_index (NULL for
# single-image predictions), plus the studies and study_feedback tables and the labelled_studies
# view, exactly as the service creates them.
_LAST_PREDICTIONS_COLUMN = "ood_score REAL /* the gate's feature score; NULL without a gate */"
_STUDY_COLUMNS_DDL = (
    ", study_id TEXT /* the study this slice belongs to */, "
    "slice_index INTEGER /* the slice's position in the study's order (0-based) */"
)
STUDY_TABLES = """
CREATE TABLE IF NOT EXISTS studies (
    study_id TEXT PRIMARY KEY,
    created_unix_ms INTEGER NOT NULL,
    model_name TEXT NOT NULL,
    model_version TEXT NOT NULL,
    label TEXT NOT NULL,              -- predicted study label; '' when the study got no verdict
    probability REAL,                 -- calibrated study probability; NULL when no verdict
    threshold REAL NOT NULL,          -- the study threshold
    rule TEXT NOT NULL,               -- aggregation rule, e.g. 'mean-logit', 'top-mean:0.5'
    slices INTEGER NOT NULL,          -- slices received
    used INTEGER NOT NULL,            -- slices that entered the study score
    refused INTEGER NOT NULL,         -- slices refused by the out-of-distribution gate
    study_uid TEXT,                   -- DICOM StudyInstanceUID when known
    series_uid TEXT,                  -- DICOM SeriesInstanceUID when known
    reason TEXT                       -- why there is no verdict, NULL otherwise
);
CREATE TABLE IF NOT EXISTS study_feedback (
    study_id TEXT PRIMARY KEY REFERENCES studies(study_id),
    label TEXT NOT NULL,
    received_unix_ms INTEGER NOT NULL
);
CREATE VIEW IF NOT EXISTS labelled_studies AS
    SELECT s.*, f.label AS true_label, f.received_unix_ms
    FROM studies s JOIN study_feedback f USING (study_id);
"""
assert SCHEMA.count(_LAST_PREDICTIONS_COLUMN + ");") == 1
STUDY_SCHEMA = (
    SCHEMA.replace(_LAST_PREDICTIONS_COLUMN + ");", _LAST_PREDICTIONS_COLUMN + _STUDY_COLUMNS_DDL + ");") + STUDY_TABLES
)
STUDY_THRESHOLD = 0.47
NO_VERDICT_REASONS = [
    "every slice refused by the out-of-distribution gate",
    "too few slices: 2 used, at least 4 needed",
]

_Z = {"p01": -2.326, "p05": -1.645, "p25": -0.674, "p50": 0.0, "p75": 0.674, "p95": 1.645, "p99": 2.326}


def make_frame(
    n: int,
    seed: int,
    *,
    brightness: float = 0.0,
    spread: float = 1.0,
    sharpness: float = 1.0,
    logit_shift: float = 0.0,
    model: str = "good",
) -> pd.DataFrame:
    """Rows in the reference format. `brightness` adds to the mean intensity, `spread` scales the
    standard deviation (and so contrast), `sharpness` scales the Laplacian variance,
    `logit_shift` moves every predicted probability; model 'good' separates the classes, 'bad'
    predicts independently of the true label."""
    rng = np.random.default_rng(seed)
    label_pos = rng.uniform(size=n) < 0.5
    mean = np.clip(95 + 14 * rng.normal(size=n) + brightness, 5, 250)
    std = np.clip((48 + 7 * rng.normal(size=n)) * spread, 1, 120)
    frame = pd.DataFrame({"width": np.full(n, 512.0), "height": np.full(n, 512.0), "mean": mean, "std": std})
    for name, z in _Z.items():
        frame[name] = np.clip(mean + z * std, 0, 255)
    frame["entropy"] = np.clip(6.6 + 0.25 * np.log(std / 48) + 0.1 * rng.normal(size=n), 0, 8)
    frame["contrast"] = (frame["p95"] - frame["p05"]) / 255.0
    frame["sharpness"] = np.exp(rng.normal(np.log(900.0), 0.35, size=n)) * sharpness
    if model == "good":
        logit = np.where(label_pos, 2.4, -2.4) + 1.3 * rng.normal(size=n)
    else:
        logit = np.where(rng.uniform(size=n) < 0.5, 2.4, -2.4) + 1.3 * rng.normal(size=n)
    probability = 1.0 / (1.0 + np.exp(-(logit + logit_shift)))
    frame["probability"] = probability
    frame["threshold"] = THRESHOLD
    frame["label"] = np.where(label_pos, POSITIVE, NEGATIVE)
    frame["predicted_label"] = np.where(probability >= THRESHOLD, POSITIVE, NEGATIVE)
    frame["positive_class"] = POSITIVE
    frame["file_bytes"] = np.round(60_000 + 5_000 * rng.normal(size=n))
    frame["path"] = [f"{'COVID' if p else 'non-COVID'}/img_{seed}_{i}.png" for i, p in enumerate(label_pos)]
    frame["split"] = np.where(np.arange(n) % 2 == 0, "validation", "test")
    frame["group"] = [f"g{i % 17}" for i in range(n)]
    frame["in_distribution"] = True
    frame["ood_score"] = np.clip(1.0 + 0.1 * rng.normal(size=n), 0.5, 1.5)
    return frame


def make_refused(n: int, seed: int) -> pd.DataFrame:
    """Rows the out-of-distribution gate refused: images unlike any CT slice (bright, flat, blurred),
    a high gate score, and probabilities of a model that cannot judge them ('bad'). Counted in the
    drift or the classification quality, they would fail both."""
    frame = make_frame(n, seed, brightness=90, spread=0.3, sharpness=0.1, logit_shift=2.0, model="bad")
    frame["in_distribution"] = False
    frame["ood_score"] = np.random.default_rng(seed).uniform(3.0, 6.0, size=n)
    return frame


def write_reference(path: Path, frame: pd.DataFrame, *, old: bool = False) -> Path:
    """The reference CSV as `covidct monitor export-reference` writes it (in_distribution as
    true/false); `old`: the format before the gate, without its two columns."""
    frame = frame.copy()
    frame["in_distribution"] = frame["in_distribution"].map({True: "true", False: "false"})
    columns = [c for c in REFERENCE_COLUMNS if not (old and c in GATE_COLUMNS)]
    frame[columns].to_csv(path, index=False)
    return path


def write_log(
    path: Path,
    frame: pd.DataFrame,
    *,
    labelled: int = 0,
    end_ms: int = NOW_MS,
    span_ms: int = 20 * HOUR_MS,
    model_name: str = "covidct",
    model_version: str = "3",
    old_schema: bool = False,
    study_schema: bool = False,
) -> Path:
    """A prediction log with the exact schema, WAL mode, rows spread over (end - span, end];
    the first `labelled` rows get feedback with their true label. Refused rows (`in_distribution`
    false, see make_refused) are logged as the service does: label '', probability and features kept.
    `old_schema`: a log written before the gate (no in_distribution, ood_score); `study_schema`: a
    log with study-level prediction (study_id, slice_index, the study tables; see write_studies).
    Appends when the file exists."""
    con = _open_log(path, STUDY_SCHEMA if study_schema else OLD_SCHEMA if old_schema else SCHEMA)
    try:
        _insert_predictions(con, frame, _times(len(frame), end_ms, span_ms), labelled, model_name, model_version)
        con.commit()
    finally:
        con.close()
    return path


def _open_log(path: Path, schema: str) -> sqlite3.Connection:
    fresh = not path.exists()
    con = sqlite3.connect(path)
    if fresh:
        con.execute("PRAGMA journal_mode=WAL")
        con.executescript(schema)
    return con


def _times(n: int, end_ms: int, span_ms: int):
    return end_ms - (np.arange(n)[::-1] * (span_ms // max(n, 1))) if n else []


def _insert_predictions(con, frame, times, labelled, model_name, model_version, study_id=None) -> None:
    """Rows of `frame` into predictions (the columns the log has); slices of `study_id` get it and
    their slice_index, and ids `<study_id>-s<index>`."""
    have = [row[1] for row in con.execute("PRAGMA table_info(predictions)")]
    offset = con.execute("SELECT COUNT(*) FROM predictions").fetchone()[0]
    for i, (row, created) in enumerate(zip(frame.itertuples(index=False), times)):
        rid = f"{study_id}-s{i:03d}" if study_id is not None else f"req-{offset + i:06d}"
        features = {k: float(getattr(row, k)) for k in FEATURES}
        values = {
            "request_id": rid,
            "created_unix_ms": int(created),
            "model_name": model_name,
            "model_version": model_version,
            "label": row.predicted_label if row.in_distribution else "",
            "probability": float(row.probability),
            "threshold": float(row.threshold),
            "features": json.dumps(features),
            "image_path": f"/uploads/{rid}.png",
            "in_distribution": int(row.in_distribution),
            "ood_score": float(row.ood_score),
            "study_id": study_id,
            "slice_index": i if study_id is not None else None,
        }
        values = {k: v for k, v in values.items() if k in have}
        con.execute(
            f"INSERT INTO predictions ({','.join(values)}) VALUES ({','.join('?' * len(values))})",
            list(values.values()),
        )
        if i < labelled:
            con.execute("INSERT INTO feedback VALUES (?,?,?)", (rid, row.label, int(created) + 1000))


def make_studies(
    n: int,
    seed: int,
    *,
    model: str = "good",
    no_verdict: int = 0,
    threshold: float = STUDY_THRESHOLD,
    rule: str = "mean-logit",
    slices: int = 6,
) -> pd.DataFrame:
    """`n` studies, one row each with the columns of the `studies` table plus the true label
    (`true_label`). Model 'good': the study probability separates the classes (but not
    perfectly), 'bad': it ignores the truth. The verdict is probability >= threshold, as the
    service decides it. The last `no_verdict` studies got no verdict (label '', probability
    NULL, a reason): alternately every slice refused, and too few slices."""
    rng = np.random.default_rng(seed)
    truth = rng.uniform(size=n) < 0.5
    if model == "good":
        logit = np.where(truth, 2.4, -2.4) + 1.3 * rng.normal(size=n)
    else:
        logit = np.where(rng.uniform(size=n) < 0.5, 2.4, -2.4) + 1.3 * rng.normal(size=n)
    probability = 1.0 / (1.0 + np.exp(-logit))
    rows = []
    for i in range(n):
        row = {
            "study_id": f"study-{seed}-{i:04d}",
            "model_name": "covidct",
            "model_version": "3",
            "label": POSITIVE if probability[i] >= threshold else NEGATIVE,
            "probability": float(probability[i]),
            "threshold": threshold,
            "rule": rule,
            "slices": slices,
            "used": slices,
            "refused": 0,
            "study_uid": f"1.2.826.0.1.{seed}.{i}",
            "series_uid": f"1.2.826.0.1.{seed}.{i}.1",
            "reason": None,
            "true_label": POSITIVE if truth[i] else NEGATIVE,
        }
        k = i - (n - no_verdict)
        if k >= 0:
            reason = NO_VERDICT_REASONS[k % 2]
            row.update({"label": "", "probability": None, "reason": reason})
            if k % 2 == 0:
                row.update({"slices": 3, "used": 0, "refused": 3})
            else:
                row.update({"slices": 2, "used": 2, "refused": 0})
        rows.append(row)
    return pd.DataFrame(rows)


def write_studies(
    path: Path,
    studies: pd.DataFrame,
    *,
    labelled: int = 0,
    end_ms: int = NOW_MS,
    span_ms: int = 20 * HOUR_MS,
    with_slices: bool = True,
) -> Path:
    """Studies into a log with the study schema (created when the file does not exist), spread
    over (end - span, end]; the first `labelled` studies get study feedback with their
    `true_label`. `with_slices`: each study's slices are logged too, as the service does, in
    predictions with study_id and slice_index (image statistics of the reference distribution;
    refused slices with the gate's answer, see make_refused), a minute before the study."""
    con = _open_log(path, STUDY_SCHEMA)
    try:
        columns = [
            "study_id",
            "created_unix_ms",
            "model_name",
            "model_version",
            "label",
            "probability",
            "threshold",
            "rule",
            "slices",
            "used",
            "refused",
            "study_uid",
            "series_uid",
            "reason",
        ]
        for i, (row, created) in enumerate(zip(studies.to_dict("records"), _times(len(studies), end_ms, span_ms))):
            values = {**row, "created_unix_ms": int(created)}
            probability = values["probability"]
            values["probability"] = None if probability is None or pd.isna(probability) else float(probability)
            con.execute(
                f"INSERT INTO studies ({','.join(columns)}) VALUES ({','.join('?' * len(columns))})",
                [values[c] for c in columns],
            )
            if i < labelled:
                con.execute(
                    "INSERT INTO study_feedback VALUES (?,?,?)",
                    (row["study_id"], row["true_label"], int(created) + 5000),
                )
            if with_slices:
                seed = zlib.crc32(str(row["study_id"]).encode())
                judged = make_frame(int(row["slices"]) - int(row["refused"]), seed=seed)
                frame = pd.concat([judged, make_refused(int(row["refused"]), seed=seed)], ignore_index=True)
                _insert_predictions(
                    con,
                    frame,
                    _times(len(frame), int(created) - 60_000, 50_000),
                    0,
                    row["model_name"],
                    row["model_version"],
                    study_id=row["study_id"],
                )
        con.commit()
    finally:
        con.close()
    return path


def report_args(reference, current, out, *extra) -> list:
    return [
        "report",
        "--reference",
        str(reference),
        "--current",
        str(current),
        "--out",
        str(out),
        "--window",
        "24h",
        "--now",
        str(NOW_MS),
        *map(str, extra),
    ]


def read_summary(out: Path) -> dict:
    return json.loads((Path(out) / "summary.json").read_text(encoding="utf-8"))


def run_main(args) -> tuple:
    """Runs `python -m covidct_monitor` in-process (Evidently is imported once per session);
    returns (exit code, stdout, stderr)."""
    import contextlib
    import io

    from covidct_monitor.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse usage errors
            code = exc.code
    return code, out.getvalue(), err.getvalue()
