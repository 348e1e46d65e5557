"""One monitoring run: load, run the Evidently reports, evaluate the tests, write the files."""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from . import __version__, output
from .data import DRIFT_CANDIDATES, InputError, iso, load_current, load_reference, models_seen, parse_now, to_unix_ms
from .reports import Thresholds

DRIFT_HTML, DRIFT_JSON = "drift.html", "drift.json"
CLS_HTML, CLS_JSON = "classification.html", "classification.json"
SUMMARY, INDEX = "summary.json", "index.html"


@dataclass
class Options:
    reference: str
    current: str
    window: str = "24h"
    now: str | None = None
    reference_split: list = field(default_factory=list)
    tracking_uri: str | None = None
    experiment: str = "covidct-monitoring"
    thresholds: Thresholds = field(default_factory=Thresholds)


def _test(name, value, condition, status, description):
    return {"name": name, "value": value, "condition": condition, "status": status, "description": description}


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _median(series: pd.Series) -> float | None:
    values = series.dropna()
    return float(values.median()) if len(values) else None


def _mode(series: pd.Series) -> float | None:
    values = series.dropna()
    if values.empty:
        return None
    return float(values.round(9).mode().iloc[0])


def run_report(opts: Options, out_dir: Path, log=None) -> dict:
    """Runs the reports into `out_dir` and returns the summary (also written as summary.json).
    Raises InputError for bad input before anything is written."""
    t0 = time.monotonic()
    now = parse_now(opts.now)
    th = opts.thresholds
    reference = load_reference(opts.reference, opts.reference_split or None)
    current = load_current(opts.current, opts.window, now)
    cur_all, ref_all = current.frame, reference.frame
    # Rows refused by the out-of-distribution gate (the model gave no answer) count in the refusal
    # rate only; drift and classification quality use the rows the model judged.
    cur = cur_all[cur_all["in_distribution"]].reset_index(drop=True)
    ref = ref_all[ref_all["in_distribution"]].reset_index(drop=True)
    refused_cur, refused_ref = len(cur_all) - len(cur), len(ref_all) - len(ref)
    refused_for_drift = {"current": refused_cur, "reference": refused_ref}
    refused_labelled = {
        "current": int((~cur_all["in_distribution"] & cur_all["label"].notna()).sum()),
        "reference": int((~ref_all["in_distribution"] & ref_all["label"].notna()).sum()),
    }
    notes = list(current.notes)
    for what, has_gate in (("current data", current.gate_columns), ("reference", reference.gate_columns)):
        if not has_gate:
            notes.append(
                f"the {what} has no in_distribution column (written before the out-of-distribution gate): "
                "every row counted as judged"
            )
    if refused_labelled["current"]:
        notes.append(
            f"{refused_labelled['current']} refused row(s) with feedback labels were left out of classification quality"
        )

    # Feedback labels must be one of the reference's classes to count (when it knows both).
    labelled = cur[cur["label"].notna()]
    unknown = labelled[~labelled["label"].isin(reference.classes)] if len(reference.classes) == 2 else labelled.iloc[:0]
    if len(unknown):
        notes.append(
            f"{len(unknown)} feedback label(s) not among the reference classes {reference.classes} were left out: "
            f"{sorted(unknown['label'].unique().tolist())[:5]}"
        )
        labelled = labelled[labelled["label"].isin(reference.classes)]

    generated = datetime.now(timezone.utc)
    summary = {
        "status": None,
        "generated_at": iso(generated),
        "generated_unix_ms": to_unix_ms(generated),
        "tool": {"name": "covidct_monitor", "version": __version__},
        "window": current.window,
        "reference": {
            "path": reference.path,
            "rows": int(len(ref_all)),
            "splits": {str(k): int(v) for k, v in ref_all["split"].value_counts().items()},
            "positive_class": reference.positive_class,
            "classes": reference.classes,
            "refused_rows": refused_ref,
            "refusal_rate": _rate(refused_ref, len(ref_all)),
            "ood_score_median": _median(ref_all["ood_score"]),
        },
        "current": {
            "path": current.path,
            "kind": current.kind,
            "rows": int(len(cur_all)),
            "refused_rows": refused_cur,
            "refusal_rate": _rate(refused_cur, len(cur_all)),
            "ood_score_median": _median(cur_all["ood_score"]),
            "labelled_rows": int(len(labelled)),
            # Slice rows of study predictions (counted in `rows` like any other row).
            "study_rows": int(cur_all["study_id"].notna().sum()) if "study_id" in cur_all else 0,
            "invalid_rows": current.invalid_rows,
            "models": models_seen(cur_all),
        },
        "thresholds": asdict(th),
        "tests": [],
        "failed_tests": [],
        "drift": {},
        "classification": {},
        "study_quality": {},
        "files": {},
        "notes": notes,
    }
    tests = summary["tests"]
    files = summary["files"]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    # ---- minimum number of current rows the model judged
    n = len(cur)
    enough = n >= th.min_rows
    tests.append(
        _test(
            "min_current_rows",
            n,
            f">= {th.min_rows}",
            "pass" if enough else "fail",
            f"{n} current rows judged by the model"
            + (f" ({refused_cur} refused rows do not count)" if refused_cur else "")
            + (
                "" if enough else f"; fewer than {th.min_rows}: drift on so few rows means nothing, drift tests skipped"
            ),
        )
    )

    # ---- share of the window refused by the out-of-distribution gate
    rate = summary["current"]["refusal_rate"]
    if rate is None:
        tests.append(_test("refusal_rate", None, "", "skipped", "no current rows in the window"))
    else:
        tests.append(
            _test(
                "refusal_rate",
                rate,
                f"<= {th.max_refusal_rate}",
                "pass" if rate <= th.max_refusal_rate else "fail",
                f"{refused_cur} of {len(cur_all)} current rows refused by the out-of-distribution gate "
                f"(reference: {refused_ref} of {len(ref_all)})",
            )
        )

    # ---- data drift
    columns = [c for c in DRIFT_CANDIDATES if c in cur.columns and c in ref.columns]
    empty_cols = [c for c in columns if cur[c].notna().sum() == 0 or ref[c].notna().sum() == 0]
    if empty_cols and enough:
        notes.append(f"columns without values in current or reference left out of drift: {empty_cols}")
    columns = [c for c in columns if c not in empty_cols]
    if enough and columns:
        from . import reports

        snapshot, plain, info = reports.run_drift(ref, cur, columns, th)
        output.write_atomic(out_dir / DRIFT_HTML, reports.html_of(snapshot))
        output.write_json(out_dir / DRIFT_JSON, plain)
        files["drift_html"], files["drift_json"] = DRIFT_HTML, DRIFT_JSON
        share = info["share"]
        share_status = "pass" if share is not None and share < th.max_drift_share else "fail"
        tests.append(
            _test(
                "drifted_columns_share",
                share,
                f"< {th.max_drift_share}",
                share_status,
                f"{info['count']} of {len(columns)} columns drifted"
                + (f": {', '.join(info['drifted_columns'])}" if info["drifted_columns"] else ""),
            )
        )
        prob = info["per_column"].get("probability")
        if prob is not None:
            tests.append(
                _test(
                    "probability_drift",
                    prob["score"],
                    f"no drift ({prob['method']}, threshold {prob['threshold']})",
                    "fail" if prob["drifted"] else "pass",
                    prob.get("description") or "",
                )
            )
        summary["drift"] = {
            "status": "run",
            "left_out_refused": refused_for_drift,
            "columns": columns,
            "share": share,
            "count": info["count"],
            "drifted_columns": info["drifted_columns"],
            "per_column": {
                c: {k: v for k, v in item.items() if k != "description"} for c, item in info["per_column"].items()
            },
        }
    else:
        reason = (
            f"{n} current rows judged by the model, fewer than --min-rows {th.min_rows}"
            if not enough
            else "no drift columns in common"
        )
        for name in ("drifted_columns_share", "probability_drift"):
            tests.append(_test(name, None, "", "skipped", reason))
        summary["drift"] = {
            "status": "skipped",
            "reason": reason,
            "left_out_refused": refused_for_drift,
        }
        output.remove_if_exists(out_dir / DRIFT_HTML)
        output.remove_if_exists(out_dir / DRIFT_JSON)

    # ---- classification quality on rows with feedback labels
    classes_seen = sorted(labelled["label"].unique().tolist())
    reason = None
    if len(labelled) < th.min_labelled_rows:
        reason = (
            f"{len(labelled)} current rows with feedback labels, fewer than --min-labelled-rows {th.min_labelled_rows}"
        )
    elif len(classes_seen) < 2:
        reason = f"feedback labels hold one class only ({classes_seen[0]}): ROC-AUC is undefined"
    if reason is None:
        from . import reports

        probas_threshold = _mode(labelled["threshold"]) if "threshold" in labelled else None
        if probas_threshold is None:
            probas_threshold = _mode(ref["threshold"])
        if probas_threshold is None:
            probas_threshold = 0.5
            notes.append("no decision threshold in the data: 0.5 used for the classification report")
        if "threshold" in labelled and labelled["threshold"].dropna().round(9).nunique() > 1:
            notes.append(
                f"labelled rows carry several decision thresholds; the most common, {probas_threshold}, is used"
            )
        ref_labelled = ref[ref["label"].notna() & ref["label"].isin(reference.classes)]
        ref_for_cls = ref_labelled if ref_labelled["label"].nunique() == 2 else None
        snapshot, plain, info = reports.run_classification(
            ref_for_cls, labelled, reference.positive_class, probas_threshold, th
        )
        output.write_atomic(out_dir / CLS_HTML, reports.html_of(snapshot))
        output.write_json(out_dir / CLS_JSON, plain)
        files["classification_html"], files["classification_json"] = CLS_HTML, CLS_JSON
        metrics = info["metrics"]
        left_out = f" ({refused_labelled['current']} refused rows left out)" if refused_labelled["current"] else ""
        for name, key, minimum in (("accuracy", "accuracy", th.min_accuracy), ("roc_auc", "roc_auc", th.min_roc_auc)):
            value = metrics.get(key)
            test = info["tests"].get(key)
            if test is not None:
                status = "pass" if test.get("status") == "SUCCESS" else "fail"
            else:
                status = "pass" if value is not None and value >= minimum else "fail"
            tests.append(
                _test(name, value, f">= {minimum}", status, f"on {len(labelled)} rows with feedback labels{left_out}")
            )
        summary["classification"] = {
            "status": "run",
            "rows": int(len(labelled)),
            "left_out_refused": refused_labelled,
            "class_counts": {str(k): int(v) for k, v in labelled["label"].value_counts().items()},
            "positive_class": reference.positive_class,
            "probas_threshold": probas_threshold,
            "reference_included": ref_for_cls is not None,
            "metrics": metrics,
        }
    else:
        for name in ("accuracy", "roc_auc"):
            tests.append(_test(name, None, "", "skipped", reason))
        summary["classification"] = {
            "status": "skipped",
            "reason": reason,
            "rows": int(len(labelled)),
            "left_out_refused": refused_labelled,
        }
        output.remove_if_exists(out_dir / CLS_HTML)
        output.remove_if_exists(out_dir / CLS_JSON)

    # ---- study-level quality on studies with a verdict and study feedback
    from .studies import evaluate_studies

    summary["study_quality"], study_test, study_files = evaluate_studies(current, reference, th, out_dir, notes)
    tests.append(study_test)
    files.update(study_files)

    summary["failed_tests"] = [t["name"] for t in tests if t["status"] == "fail"]
    summary["status"] = "fail" if summary["failed_tests"] else "pass"
    summary["duration_s"] = round(time.monotonic() - t0, 3)
    files["summary"], files["index"] = SUMMARY, INDEX
    write_summary(out_dir, summary)
    return summary


def write_summary(out_dir: Path, summary: dict) -> None:
    """summary.json then index.html, each atomically (the reports are written before them)."""
    output.write_json(Path(out_dir) / SUMMARY, summary)
    output.write_atomic(Path(out_dir) / INDEX, output.render_index(summary))


def log_to_mlflow(opts: Options, out_dir: Path, summary: dict) -> dict | None:
    """Logs the run to MLflow when a tracking URI is configured; records the outcome in the
    summary (rewritten in place). Returns the outcome or None when tracking is off."""
    from .tracking import log_run, tracking_uri

    uri = tracking_uri(opts.tracking_uri)
    if uri is None:
        return None
    from .reports import evidently_version

    outcome = log_run(uri, opts.experiment, summary, Path(out_dir), evidently_version())
    summary["mlflow"] = outcome
    write_summary(out_dir, summary)
    return outcome


def run_into_history(opts: Options, root: Path, keep: int) -> tuple:
    """One run into `root/<UTC timestamp>/`: written in a `.partial` directory, renamed when
    complete, then `root/latest` is swapped to it and old runs are pruned. Returns
    (summary, run_dir)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    name = output.new_run_name(root)
    partial = root / f".{name}{output.PARTIAL_SUFFIX}"
    partial.mkdir()
    try:
        summary = run_report(opts, partial)
        summary["run"] = name
        write_summary(partial, summary)
        os.rename(partial, root / name)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    run_dir = root / name
    output.point_latest(root, name)
    output.prune(root, keep)
    output.write_atomic(root / INDEX, output.render_history(root))
    return summary, run_dir


__all__ = ["Options", "Thresholds", "InputError", "run_report", "run_into_history", "log_to_mlflow"]
