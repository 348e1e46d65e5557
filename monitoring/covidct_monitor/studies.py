"""Study-level quality: the verdicts `covidct serve` gave for whole CT studies (table `studies`),
checked against the study feedback labels (table `study_feedback`).

The figures of summary.json (accuracy, sensitivity, specificity, ROC-AUC) are computed here from
the service's own verdicts, so that they are what users were told; the Evidently report
(ClassificationPreset, study_quality.html/.json) shows the same studies, and needs both classes.
Slice rows of a study stay ordinary rows of the prediction window (drift, refusal rate): this
module reads only the study tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from . import output
from .data import Current, Reference
from .reports import Thresholds

STUDY_HTML, STUDY_JSON = "study_quality.html", "study_quality.json"
TEST_NAME = "study_accuracy"


def roc_auc(positive: np.ndarray, scores: np.ndarray) -> float | None:
    """ROC-AUC of `scores` for the boolean truth `positive` (Mann–Whitney U, ties count half);
    None unless both classes are present."""
    positive = np.asarray(positive, dtype=bool)
    scores = np.asarray(scores, dtype=float)
    n_pos = int(positive.sum())
    n_neg = int(len(positive) - n_pos)
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = pd.Series(scores).rank(method="average").to_numpy()
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def verdict_metrics(frame: pd.DataFrame, positive_class: str) -> tuple:
    """(metrics, confusion) of the verdicts `predicted_label` against the feedback `label`:
    accuracy, sensitivity (recall of the positive class), specificity (recall of the negative
    class) and ROC-AUC of `probability`; a figure without the class it needs is None."""
    truth = (frame["label"] == positive_class).to_numpy()
    predicted = (frame["predicted_label"] == positive_class).to_numpy()
    n = len(frame)
    tp = int((truth & predicted).sum())
    fn = int((truth & ~predicted).sum())
    tn = int((~truth & ~predicted).sum())
    fp = int((~truth & predicted).sum())
    metrics = {
        "accuracy": (tp + tn) / n if n else None,
        "sensitivity": tp / (tp + fn) if tp + fn else None,
        "specificity": tn / (tn + fp) if tn + fp else None,
        "roc_auc": roc_auc(truth, frame["probability"].to_numpy()) if n else None,
    }
    return metrics, {"tp": tp, "fp": fp, "tn": tn, "fn": fn}


def _mode(series: pd.Series) -> float | None:
    values = series.dropna()
    if values.empty:
        return None
    return float(values.round(9).mode().iloc[0])


def _test(value, condition, status, description) -> dict:
    return {"name": TEST_NAME, "value": value, "condition": condition, "status": status, "description": description}


def _remove_report(out_dir: Path) -> None:
    output.remove_if_exists(out_dir / STUDY_HTML)
    output.remove_if_exists(out_dir / STUDY_JSON)


def evaluate_studies(current: Current, reference: Reference, th: Thresholds, out_dir: Path, notes: list) -> tuple:
    """Study-level quality of the window. Returns (summary section, the `study_accuracy` test,
    files written {key: name}); appends to `notes`. Skipped (test `skipped`, nothing fails) when
    the current data has no study tables or holds fewer than --min-labelled-studies labelled
    studies with a verdict."""
    out_dir = Path(out_dir)
    studies = current.studies
    if studies is None:
        reason = f"{current.studies_absent}: study quality skipped"
        _remove_report(out_dir)
        section = {
            "status": "skipped",
            "reason": reason,
            "tables": False,
            "studies": None,
            "with_verdict": None,
            "without_verdict": None,
            "without_verdict_share": None,
            "labelled_studies": 0,
            "labelled_without_verdict": None,
        }
        return section, _test(None, "", "skipped", reason), {}

    total = int(len(studies))
    verdict = studies[studies["verdict"]]
    no_verdict = studies[~studies["verdict"]]
    reasons = no_verdict["reason"].map(
        lambda v: "(no reason logged)" if v is None or pd.isna(v) or str(v) == "" else str(v)
    )
    labelled_no_verdict = int(no_verdict["label"].notna().sum())
    labelled = verdict[verdict["label"].notna()]
    if len(reference.classes) == 2:
        # As for single images: feedback (and verdicts) must be one of the reference's classes.
        known_truth = labelled["label"].isin(reference.classes)
        known_verdict = labelled["predicted_label"].isin(reference.classes)
        unknown = labelled[~known_truth]
        if len(unknown):
            notes.append(
                f"{len(unknown)} study feedback label(s) not among the reference classes {reference.classes} were "
                f"left out of study quality: {sorted(unknown['label'].unique().tolist())[:5]}"
            )
        odd = labelled[known_truth & ~known_verdict]
        if len(odd):
            notes.append(
                f"{len(odd)} labelled studies with a verdict label not among the reference classes "
                f"{reference.classes} were left out of study quality: "
                f"{sorted(odd['predicted_label'].unique().tolist())[:5]}"
            )
        labelled = labelled[known_truth & known_verdict]
    if labelled_no_verdict:
        notes.append(
            f"{labelled_no_verdict} studies with feedback but without a verdict were left out of study quality"
        )
    n = int(len(labelled))
    section = {
        "status": None,
        "tables": True,
        "studies": total,
        "with_verdict": int(len(verdict)),
        "without_verdict": int(len(no_verdict)),
        "without_verdict_share": len(no_verdict) / total if total else None,
        "without_verdict_reasons": {str(k): int(v) for k, v in reasons.value_counts().items()},
        "rules": {str(k): int(v) for k, v in studies["rule"].fillna("").astype(str).value_counts().items()},
        "slices": int(studies["slices"].sum()),
        "refused_slices": int(studies["refused"].sum()),
        "labelled_studies": n,
        "labelled_without_verdict": labelled_no_verdict,
    }
    if n < th.min_labelled_studies:
        reason = (
            f"{n} labelled studies with a verdict, fewer than --min-labelled-studies {th.min_labelled_studies} "
            f"({total} studies in the window, {len(no_verdict)} without a verdict): study quality skipped"
        )
        section["status"], section["reason"] = "skipped", reason
        _remove_report(out_dir)
        return section, _test(None, "", "skipped", reason), {}

    positive = reference.positive_class
    metrics, confusion = verdict_metrics(labelled, positive)
    probas_threshold = _mode(labelled["threshold"])
    if labelled["threshold"].round(9).nunique() > 1:
        notes.append(
            f"labelled studies carry several study thresholds; the most common, {probas_threshold}, is used for the "
            "Evidently study report (the summary counts each study's own verdict)"
        )
    recomputed = labelled["probability"] >= labelled["threshold"]
    disagree = int((recomputed != (labelled["predicted_label"] == positive)).sum())
    if disagree:
        notes.append(
            f"{disagree} labelled studies have a verdict other than probability >= threshold; the summary counts the "
            "verdicts, the Evidently study report recomputes labels from the probability"
        )
    classes_seen = sorted(labelled["label"].unique().tolist())
    files = {}
    if len(classes_seen) == 2:
        from . import reports

        snapshot, plain, _ = reports.run_study_classification(labelled, positive, probas_threshold, th)
        output.write_atomic(out_dir / STUDY_HTML, reports.html_of(snapshot))
        output.write_json(out_dir / STUDY_JSON, plain)
        files = {"study_quality_html": STUDY_HTML, "study_quality_json": STUDY_JSON}
        report = {"status": "run"}
    else:
        _remove_report(out_dir)
        report = {
            "status": "skipped",
            "reason": f"study feedback labels hold one class only ({classes_seen[0]}): the Evidently report needs "
            "both; ROC-AUC is undefined",
        }
    section.update(
        {
            "status": "run",
            "class_counts": {str(k): int(v) for k, v in labelled["label"].value_counts().items()},
            "positive_class": positive,
            "probas_threshold": probas_threshold,
            "metrics": metrics,
            "confusion": confusion,
            "report": report,
        }
    )
    accuracy = metrics["accuracy"]
    status = "pass" if accuracy is not None and accuracy >= th.min_study_accuracy else "fail"
    description = f"on {n} labelled studies with a verdict"
    if labelled_no_verdict:
        description += f" ({labelled_no_verdict} labelled studies without a verdict left out)"
    description += (
        f"; sensitivity {output.format_value(metrics['sensitivity'], missing='-')}, "
        f"specificity {output.format_value(metrics['specificity'], missing='-')}"
    )
    return section, _test(accuracy, f">= {th.min_study_accuracy}", status, description), files
