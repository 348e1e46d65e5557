"""Synthetic reference sets and prediction logs for the monitoring tests (shared helpers).

The image statistics come from a small generative model (brightness and spread per image, the
percentiles, contrast and entropy derived from them) so that, as with real CT slices, a brightness
or protocol change moves several correlated columns at once."""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

import numpy as np
import pandas as pd

MONITORING = Path(__file__).resolve().parent.parent
if str(MONITORING) not in sys.path:
    sys.path.insert(0, str(MONITORING))

from covidct_monitor.data import FEATURES, GATE_COLUMNS, REFERENCE_COLUMNS  # noqa: E402

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
) -> Path:
    """A prediction log with the exact schema, WAL mode, rows spread over (end - span, end];
    the first `labelled` rows get feedback with their true label. Refused rows (`in_distribution`
    false, see make_refused) are logged as the service does: label '', probability and features kept.
    `old_schema`: a log written before the gate (no in_distribution, ood_score). Appends when the
    file exists."""
    fresh = not path.exists()
    con = sqlite3.connect(path)
    try:
        if fresh:
            con.execute("PRAGMA journal_mode=WAL")
            con.executescript(OLD_SCHEMA if old_schema else SCHEMA)
        offset = con.execute("SELECT COUNT(*) FROM predictions").fetchone()[0]
        n = len(frame)
        times = end_ms - (np.arange(n)[::-1] * (span_ms // max(n, 1))) if n else []
        for i, (row, created) in enumerate(zip(frame.itertuples(index=False), times)):
            rid = f"req-{offset + i:06d}"
            features = {k: float(getattr(row, k)) for k in FEATURES}
            values = [
                rid, int(created), model_name, model_version, row.predicted_label if row.in_distribution else "",
                float(row.probability), float(row.threshold), json.dumps(features), f"/uploads/{rid}.png",
            ]
            if not old_schema:
                values += [int(row.in_distribution), float(row.ood_score)]
            con.execute(f"INSERT INTO predictions VALUES ({','.join('?' * len(values))})", values)
            if i < labelled:
                con.execute("INSERT INTO feedback VALUES (?,?,?)", (rid, row.label, int(created) + 1000))
        con.commit()
    finally:
        con.close()
    return path


def report_args(reference, current, out, *extra) -> list:
    return [
        "report", "--reference", str(reference), "--current", str(current), "--out", str(out),
        "--window", "24h", "--now", str(NOW_MS), *map(str, extra),
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
