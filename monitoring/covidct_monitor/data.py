"""Loading the reference set and the current window; everything here raises `InputError` for bad
input (named file, named column) so that the command line can exit with code 2 and no traceback.

Imports only pandas/numpy/sqlite3 so that bad input is reported before Evidently is imported."""

from __future__ import annotations

import json
import math
import re
import sqlite3
import urllib.parse
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

# The image statistics computed by the Rust side (same function for the reference export and the
# service's prediction log).
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
# The out-of-distribution gate's columns: whether the model judged the image (false/0: refused,
# no answer) and its feature score (empty without a gate). Data written before the gate lacks both:
# every row then counts as judged.
GATE_COLUMNS = ["in_distribution", "ood_score"]
# Columns of `covidct monitor export-reference`, in order.
REFERENCE_COLUMNS = [
    "path",
    "split",
    "group",
    "label",
    "predicted_label",
    "probability",
    "threshold",
    "positive_class",
    "file_bytes",
    *GATE_COLUMNS,
    *FEATURES,
]
REFERENCE_REQUIRED = [c for c in REFERENCE_COLUMNS if c not in GATE_COLUMNS]
NUMERIC_REFERENCE_COLUMNS = ["probability", "threshold", "file_bytes", "ood_score", *FEATURES]
# Candidate drift columns; those missing from the current data (file_bytes for the SQLite log) are
# left out.
DRIFT_CANDIDATES = ["file_bytes", *FEATURES, "probability"]
# What a current CSV (reference format) must have at least.
CURRENT_CSV_REQUIRED = ["predicted_label", "probability", *FEATURES]

PREDICTIONS_COLUMNS = [
    "request_id",
    "created_unix_ms",
    "model_name",
    "model_version",
    "label",
    "probability",
    "threshold",
    "features",
]
FEEDBACK_COLUMNS = ["request_id", "label", "received_unix_ms"]
# Study-level prediction (a CT series answered as one verdict): tables absent from logs written
# before it. The predictions table then also has `study_id` and `slice_index` (NULL for
# single-image predictions); slice rows stay ordinary rows of the window.
STUDIES_COLUMNS = [
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
]
STUDY_FEEDBACK_COLUMNS = ["study_id", "label", "received_unix_ms"]
# Columns of `Current.studies`: `predicted_label` is the study's verdict (NaN without one),
# `label` the study feedback (NaN without it), `verdict` whether the study got a verdict.
STUDY_FRAME_COLUMNS = [
    "study_id",
    "created_unix_ms",
    "model_name",
    "model_version",
    "predicted_label",
    "probability",
    "threshold",
    "rule",
    "slices",
    "used",
    "refused",
    "reason",
    "label",
    "received_unix_ms",
    "verdict",
]

_WINDOW_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class InputError(Exception):
    """Bad input: a missing or unreadable file, a missing column, a bad option value."""


@dataclass
class Reference:
    path: str
    frame: pd.DataFrame  # with a boolean `in_distribution` column and a float `ood_score` column
    positive_class: str
    classes: list  # [negative, positive] when two classes are known, else what was seen
    gate_columns: bool = True  # False: written before the gate, every row counted as judged


@dataclass
class Current:
    path: str
    kind: str  # "sqlite" or "csv"
    frame: pd.DataFrame  # with a boolean `in_distribution` column and a float `ood_score` column
    window: dict | None  # None when no window applied (CSV without created_unix_ms)
    invalid_rows: int = 0
    notes: list = field(default_factory=list)
    gate_columns: bool = True  # False: written before the gate, every row counted as judged
    # Study-level prediction: the window's studies (STUDY_FRAME_COLUMNS), or None when the current
    # data has no `studies` table (a CSV, a log written before studies); then `studies_absent`
    # says why. `study_feedback_table` False: a `studies` table without `study_feedback`.
    studies: pd.DataFrame | None = None
    studies_absent: str | None = None
    study_feedback_table: bool = False


# ---------------------------------------------------------------- window and time


def parse_window(text: str) -> float:
    """'24h' -> 86400.0 seconds. Units s, m, h, d."""
    match = _WINDOW_RE.match(str(text))
    if not match:
        raise InputError(
            f"bad window {text!r}: expected a positive number with a unit s, m, h or d (e.g. 30m, 24h, 7d)"
        )
    seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds <= 0:
        raise InputError(f"bad window {text!r}: must be longer than 0")
    return seconds


def parse_now(text: str | None) -> datetime:
    """None -> now (UTC); digits -> unix milliseconds; else ISO 8601 (naive = UTC)."""
    if text is None or str(text).strip() == "":
        return datetime.now(timezone.utc)
    text = str(text).strip()
    if re.fullmatch(r"-?\d+", text):
        return datetime.fromtimestamp(int(text) / 1000.0, tz=timezone.utc)
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise InputError(
            f"bad --now {text!r}: expected an ISO 8601 time (2025-01-31T12:00:00Z) or unix milliseconds"
        ) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def to_unix_ms(moment: datetime) -> int:
    return int(round(moment.timestamp() * 1000))


def iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def window_dict(window_text: str, seconds: float, now: datetime) -> dict:
    end_ms = to_unix_ms(now)
    start_ms = end_ms - int(round(seconds * 1000))
    start = datetime.fromtimestamp(start_ms / 1000.0, tz=timezone.utc)
    return {
        "length": str(window_text).strip(),
        "seconds": seconds,
        "start": iso(start),
        "end": iso(now),
        "start_unix_ms": start_ms,
        "end_unix_ms": end_ms,
    }


# ---------------------------------------------------------------- tables


def _read_table(path: Path, what: str) -> pd.DataFrame:
    if not path.exists():
        raise InputError(f"{what} file {path} does not exist")
    if not path.is_file():
        raise InputError(f"{what} file {path} is not a regular file")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
        else:
            # Labels and names as text; numbers are converted and checked column by column.
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=["", "NaN", "nan"])
    except pd.errors.EmptyDataError:
        raise InputError(f"{what} file {path} is empty (no header)") from None
    except Exception as err:  # noqa: BLE001 - any parser error is bad input here
        raise InputError(f"{what} file {path} cannot be read: {err}") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def _require_columns(frame: pd.DataFrame, required, path: Path, what: str) -> None:
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise InputError(
            f"{what} file {path} lacks column{'s' if len(missing) > 1 else ''} "
            f"{', '.join(repr(c) for c in missing)} (has: {', '.join(map(str, frame.columns))})"
        )


def _to_numeric(frame: pd.DataFrame, columns, path: Path, what: str) -> None:
    for column in columns:
        if column not in frame.columns:
            continue
        converted = pd.to_numeric(frame[column], errors="coerce")
        bad = converted.isna() & frame[column].notna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise InputError(
                f"{what} file {path}: column {column!r} has a non-numeric value "
                f"{frame[column].iloc[row]!r} (data row {row + 1})"
            )
        frame[column] = converted.astype(float)


_TRUE, _FALSE = {"true", "1", "1.0"}, {"false", "0", "0.0"}


def _table_gate(frame: pd.DataFrame, path: Path, what: str) -> bool:
    """Converts a table's `in_distribution` column (true/false or 1/0, any case) to booleans; a
    missing column: every row in distribution. Adds a NaN `ood_score` when it is missing (the
    column is converted with the other numbers). Returns whether the table had the gate's columns."""
    if "ood_score" not in frame.columns:
        frame["ood_score"] = np.nan
    if "in_distribution" not in frame.columns:
        frame["in_distribution"] = True
        return False
    values = frame["in_distribution"]
    text = values.map(lambda v: "" if pd.isna(v) else str(v).strip().lower())
    valid = text.isin(_TRUE | _FALSE)
    if not valid.all():
        row = int(np.flatnonzero(~valid.to_numpy())[0])
        shown = "(empty)" if text.iloc[row] == "" else repr(values.iloc[row])
        raise InputError(
            f"{what} file {path}: column 'in_distribution' has a value {shown} that is not true/false "
            f"or 1/0 (data row {row + 1})"
        )
    frame["in_distribution"] = text.isin(_TRUE).astype(bool)
    return True


def _clean_labels(series: pd.Series) -> pd.Series:
    values = series.astype(object).where(series.notna(), None)
    values = values.map(lambda v: None if v is None or str(v).strip() == "" else str(v).strip())
    return values.astype(object).where(values.notna(), np.nan)


def load_reference(path_text: str, splits: list | None = None) -> Reference:
    path = Path(path_text)
    frame = _read_table(path, "reference")
    _require_columns(frame, REFERENCE_REQUIRED, path, "reference")
    if splits:
        frame = frame[frame["split"].astype(str).isin(splits)].reset_index(drop=True)
        if frame.empty:
            raise InputError(f"reference file {path} has no rows of split {', '.join(splits)}")
    if frame.empty:
        raise InputError(f"reference file {path} has no rows")
    gate_columns = _table_gate(frame, path, "reference")
    _to_numeric(frame, NUMERIC_REFERENCE_COLUMNS, path, "reference")
    if not frame["in_distribution"].any():
        raise InputError(f"reference file {path}: every row was refused by the out-of-distribution gate")
    for column in ("label", "predicted_label", "positive_class"):
        frame[column] = _clean_labels(frame[column])
    if frame["probability"].isna().any():
        raise InputError(f"reference file {path}: column 'probability' has empty values")
    positives = sorted(frame["positive_class"].dropna().unique().tolist())
    if len(positives) != 1:
        raise InputError(
            f"reference file {path}: column 'positive_class' must hold one class name, found {positives or 'none'}"
        )
    positive = positives[0]
    labels = set(frame["label"].dropna()) | set(frame["predicted_label"].dropna())
    negatives = sorted(labels - {positive})
    classes = [*negatives, positive] if negatives else [positive]
    if len(negatives) > 1:
        raise InputError(f"reference file {path}: binary classifier expected, found classes {sorted(labels)}")
    return Reference(path=str(path), frame=frame, positive_class=positive, classes=classes, gate_columns=gate_columns)


# ---------------------------------------------------------------- current data


def _looks_like_sqlite(path: Path) -> bool:
    if path.suffix.lower() in (".sqlite", ".sqlite3", ".db"):
        return True
    try:
        with path.open("rb") as handle:
            return handle.read(16) == b"SQLite format 3\x00"
    except OSError:
        return False


def load_current(path_text: str, window_text: str, now: datetime) -> Current:
    path = Path(path_text)
    seconds = parse_window(window_text)
    if not path.exists():
        raise InputError(f"current file {path} does not exist")
    if not path.is_file():
        raise InputError(f"current file {path} is not a regular file")
    window = window_dict(window_text, seconds, now)
    if _looks_like_sqlite(path):
        return _load_sqlite(path, window)
    return _load_current_table(path, window)


def _load_current_table(path: Path, window: dict) -> Current:
    frame = _read_table(path, "current")
    _require_columns(frame, CURRENT_CSV_REQUIRED, path, "current")
    gate_columns = _table_gate(frame, path, "current")
    _to_numeric(frame, [c for c in [*NUMERIC_REFERENCE_COLUMNS, "created_unix_ms"] if c in frame], path, "current")
    notes = []
    applied = None
    if "created_unix_ms" in frame.columns:
        keep = (frame["created_unix_ms"] > window["start_unix_ms"]) & (
            frame["created_unix_ms"] <= window["end_unix_ms"]
        )
        frame = frame[keep].reset_index(drop=True)
        applied = window
    else:
        notes.append("no created_unix_ms column: the window was not applied, all rows are current")
    if "label" not in frame.columns:
        frame["label"] = np.nan
    for column in ("label", "predicted_label"):
        frame[column] = _clean_labels(frame[column])
    if frame["probability"].isna().any():
        raise InputError(f"current file {path}: column 'probability' has empty values")
    return Current(
        path=str(path),
        kind="csv",
        frame=frame,
        window=applied,
        notes=notes,
        gate_columns=gate_columns,
        studies_absent="the current data is a CSV, not the service's log: it has no studies",
    )


def _load_sqlite(path: Path, window: dict) -> Current:
    uri = "file:" + urllib.parse.quote(str(path.resolve())) + "?mode=ro"
    try:
        connection = sqlite3.connect(uri, uri=True, timeout=10)
    except sqlite3.Error as err:
        raise InputError(f"current file {path} cannot be opened read-only as SQLite: {err}") from None
    try:
        try:
            tables = {
                row[0]: row[1]
                for row in connection.execute("SELECT name, type FROM sqlite_master WHERE type IN ('table','view')")
            }
        except sqlite3.DatabaseError as err:
            raise InputError(f"current file {path} is not a readable SQLite database: {err}") from None
        for table, required in (("predictions", PREDICTIONS_COLUMNS), ("feedback", FEEDBACK_COLUMNS)):
            if table not in tables:
                raise InputError(f"current file {path} has no table {table!r}")
            have = {row[1] for row in connection.execute(f"PRAGMA table_info({table})")}
            missing = [c for c in required if c not in have]
            if missing:
                raise InputError(
                    f"current file {path}: table {table!r} lacks column"
                    f"{'s' if len(missing) > 1 else ''} {', '.join(repr(c) for c in missing)}"
                )
        have = {row[1] for row in connection.execute("PRAGMA table_info(predictions)")}
        # Optional columns: image_path, the gate's columns (absent from logs written before it) and
        # study_id (absent from logs written before study-level prediction; slice_index is not read).
        gate_columns = "in_distribution" in have
        query = f"""
            SELECT p.request_id, p.created_unix_ms, p.model_name, p.model_version,
                   p.label AS predicted_label, p.probability, p.threshold, p.features,
                   {"p.image_path" if "image_path" in have else "NULL"} AS image_path,
                   {"p.in_distribution" if gate_columns else "1"} AS in_distribution,
                   {"p.ood_score" if "ood_score" in have else "NULL"} AS ood_score,
                   {"p.study_id" if "study_id" in have else "NULL"} AS study_id,
                   f.label AS label, f.received_unix_ms
            FROM predictions p LEFT JOIN feedback f ON f.request_id = p.request_id
            WHERE p.created_unix_ms > ? AND p.created_unix_ms <= ?
            ORDER BY p.created_unix_ms
        """
        try:
            rows = connection.execute(query, (window["start_unix_ms"], window["end_unix_ms"])).fetchall()
        except sqlite3.Error as err:
            raise InputError(f"current file {path}: query on the prediction log failed: {err}") from None
        studies, studies_absent, study_feedback_table = _load_studies(connection, tables, path, window)
    finally:
        connection.close()

    columns = [
        "request_id",
        "created_unix_ms",
        "model_name",
        "model_version",
        "predicted_label",
        "probability",
        "threshold",
        "features",
        "image_path",
        "in_distribution",
        "ood_score",
        "study_id",
        "label",
        "received_unix_ms",
    ]
    frame = pd.DataFrame.from_records(rows, columns=columns)
    _log_gate(frame, path)
    records = []
    invalid = 0
    keep = []
    seen_keys = set()
    for text in frame["features"].tolist():
        try:
            value = json.loads(text) if isinstance(text, str) else None
        except ValueError:
            value = None
        if not isinstance(value, dict):
            invalid += 1
            keep.append(False)
            records.append({})
            continue
        seen_keys.update(value.keys())
        keep.append(True)
        records.append({k: _as_float(value.get(k)) for k in FEATURES})
    # Not from_records: it fails on an empty window.
    features = pd.DataFrame(records, columns=FEATURES, index=frame.index)
    frame = pd.concat([frame.drop(columns=["features"]), features], axis=1)
    frame = frame[np.array(keep, dtype=bool)].reset_index(drop=True) if len(frame) else frame
    if len(frame) and seen_keys:
        missing = [k for k in FEATURES if k not in seen_keys]
        if missing:
            raise InputError(
                f"current file {path}: predictions.features lacks key"
                f"{'s' if len(missing) > 1 else ''} {', '.join(repr(k) for k in missing)}"
            )
    for column in ("probability", "threshold", "created_unix_ms", "received_unix_ms"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
    for column in ("label", "predicted_label"):
        frame[column] = _clean_labels(frame[column])
    notes = []
    if invalid:
        notes.append(f"{invalid} prediction row(s) with unreadable features JSON were left out")
    if studies is not None and not study_feedback_table:
        notes.append("the log has a 'studies' table but no 'study_feedback' table: no study has a feedback label")
    return Current(
        path=str(path),
        kind="sqlite",
        frame=frame,
        window=window,
        invalid_rows=invalid,
        notes=notes,
        gate_columns=gate_columns,
        studies=studies,
        studies_absent=studies_absent,
        study_feedback_table=study_feedback_table,
    )


def _table_columns(connection: sqlite3.Connection, table: str) -> set:
    return {row[1] for row in connection.execute(f"PRAGMA table_info({table})")}


def _require_log_columns(connection: sqlite3.Connection, table: str, required, path: Path) -> None:
    have = _table_columns(connection, table)
    missing = [c for c in required if c not in have]
    if missing:
        raise InputError(
            f"current file {path}: table {table!r} lacks column"
            f"{'s' if len(missing) > 1 else ''} {', '.join(repr(c) for c in missing)}"
        )


def _load_studies(connection: sqlite3.Connection, tables: dict, path: Path, window: dict) -> tuple:
    """The studies created in the window, each with its study feedback label (LEFT JOIN: studies
    without feedback are kept, to count the verdicts). Returns (frame or None, why None,
    whether the log has the study_feedback table). A log written before study-level prediction
    has neither table: (None, reason, False)."""
    if "studies" not in tables:
        return (
            None,
            (
                "the log has no table 'studies' (written before study-level prediction, or the service "
                "has not created it yet)"
            ),
            False,
        )
    _require_log_columns(connection, "studies", STUDIES_COLUMNS, path)
    feedback_table = "study_feedback" in tables
    if feedback_table:
        _require_log_columns(connection, "study_feedback", STUDY_FEEDBACK_COLUMNS, path)
    has_reason = "reason" in _table_columns(connection, "studies")
    query = f"""
        SELECT s.study_id, s.created_unix_ms, s.model_name, s.model_version,
               s.label AS predicted_label, s.probability, s.threshold, s.rule, s.slices, s.used,
               s.refused, {"s.reason" if has_reason else "NULL"} AS reason,
               {"f.label" if feedback_table else "NULL"} AS label,
               {"f.received_unix_ms" if feedback_table else "NULL"} AS received_unix_ms
        FROM studies s
        {"LEFT JOIN study_feedback f ON f.study_id = s.study_id" if feedback_table else ""}
        WHERE s.created_unix_ms > ? AND s.created_unix_ms <= ?
        ORDER BY s.created_unix_ms
    """
    try:
        rows = connection.execute(query, (window["start_unix_ms"], window["end_unix_ms"])).fetchall()
    except sqlite3.Error as err:
        raise InputError(f"current file {path}: query on the table 'studies' failed: {err}") from None
    frame = pd.DataFrame.from_records(rows, columns=STUDY_FRAME_COLUMNS[:-1])
    if frame.empty:
        frame = pd.DataFrame({c: pd.Series(dtype=object) for c in STUDY_FRAME_COLUMNS[:-1]})
    for column in ("probability", "threshold", "slices", "used", "refused"):
        _log_numbers(frame, column, path, allow_null=column == "probability")
    for column in ("created_unix_ms", "received_unix_ms"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
    for column in ("label", "predicted_label"):
        frame[column] = _clean_labels(frame[column])
    # A verdict: a study label and a probability ('' and NULL when the study got none).
    frame["verdict"] = (frame["predicted_label"].notna() & frame["probability"].notna()).astype(bool)
    return frame, None, feedback_table


def _log_numbers(frame: pd.DataFrame, column: str, path: Path, allow_null: bool) -> None:
    """Converts a column of the log's `studies` table to float; text where a number belongs (SQLite
    keeps it as text) or a NULL where none is allowed is bad input, named with its study id."""
    values = frame[column]
    numbers = pd.to_numeric(values, errors="coerce")
    texts = np.array([isinstance(v, (str, bytes)) for v in values.tolist()], dtype=bool)
    wrong = (numbers.isna() & values.notna()).to_numpy() | texts
    if not allow_null:
        wrong |= values.isna().to_numpy()
    if wrong.any():
        row = int(np.flatnonzero(wrong)[0])
        shown = "NULL" if pd.isna(values.iloc[row]) else repr(values.iloc[row])
        raise InputError(
            f"current file {path}: column 'studies.{column}' has a value {shown} that is not a number "
            f"(study_id {frame['study_id'].iloc[row]!r})"
        )
    frame[column] = numbers.astype(float)


def _log_gate(frame: pd.DataFrame, path: Path) -> None:
    """Checks and converts the log's gate columns: `in_distribution` 0 or 1, `ood_score` a number or
    NULL; a bad value is named with its request id."""
    # SQLite keeps text stored in an INTEGER column as text: only the numbers 0 and 1 are valid.
    values = frame["in_distribution"].tolist()
    valid = np.array([isinstance(v, (int, float)) and v in (0, 1) for v in values], dtype=bool)
    if not valid.all():
        row = int(np.flatnonzero(~valid)[0])
        raise InputError(
            f"current file {path}: column 'predictions.in_distribution' has a value {values[row]!r} "
            f"that is not 0 or 1 (request_id {frame['request_id'].iloc[row]!r})"
        )
    frame["in_distribution"] = np.array([v == 1 for v in values], dtype=bool)
    scores = pd.to_numeric(frame["ood_score"], errors="coerce")
    wrong = scores.isna() & frame["ood_score"].notna()
    if wrong.any():
        row = int(np.flatnonzero(wrong.to_numpy())[0])
        raise InputError(
            f"current file {path}: column 'predictions.ood_score' has a non-numeric value "
            f"{frame['ood_score'].iloc[row]!r} (request_id {frame['request_id'].iloc[row]!r})"
        )
    frame["ood_score"] = scores.astype(float)


def _as_float(value) -> float:
    try:
        result = float(value)
    except (TypeError, ValueError):
        return math.nan
    return result


def models_seen(frame: pd.DataFrame) -> list:
    """[{'model_name', 'model_version', 'rows'}] for the current rows (SQLite log only)."""
    if "model_name" not in frame.columns or frame.empty:
        return []
    names = frame["model_name"].fillna("").astype(str)
    versions = frame.get("model_version", pd.Series([""] * len(frame))).fillna("").astype(str)
    counts = pd.DataFrame({"model_name": names, "model_version": versions}).value_counts(sort=True)
    return [
        {"model_name": name, "model_version": version, "rows": int(count)} for (name, version), count in counts.items()
    ]
