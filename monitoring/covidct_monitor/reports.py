"""The Evidently reports: data drift (DataDriftPreset) and classification quality
(ClassificationPreset), with Evidently tests so that the HTML shows pass/fail.

Evidently is imported lazily (it takes seconds) so that bad input fails fast."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .data import InputError


@dataclass
class Thresholds:
    """The test conditions and their defaults (docs/MONITORING.md explains the choices)."""

    min_rows: int = 30
    max_refusal_rate: float = 0.05
    max_drift_share: float = 0.3
    drift_method: str | None = None
    drift_threshold: float | None = None
    probability_drift_threshold: float | None = None
    min_labelled_rows: int = 30
    min_accuracy: float = 0.80
    min_roc_auc: float = 0.85
    # Study-level quality (labelled studies with a verdict); the same floors as for single images.
    min_labelled_studies: int = 30
    min_study_accuracy: float = 0.80


def _evidently():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import evidently  # noqa: F401
        from evidently import BinaryClassification, DataDefinition, Dataset, Report
        from evidently.presets import ClassificationPreset, DataDriftPreset
        from evidently.tests import gte
    return BinaryClassification, DataDefinition, Dataset, Report, ClassificationPreset, DataDriftPreset, gte


def evidently_version() -> str:
    import evidently

    return evidently.__version__


def numerical_drift_methods() -> list:
    _evidently()
    from evidently.legacy.calculations.stattests.registry import _registered_stat_tests
    from evidently.legacy.core import ColumnType

    return sorted(name for name, by_type in _registered_stat_tests.items() if ColumnType.Numerical in by_type)


def _plain(snapshot) -> dict:
    """The snapshot's metrics and tests as plain JSON data."""
    return json.loads(snapshot.json())


def _run(report, current, reference):
    with warnings.catch_warnings():
        # pandas/numpy deprecation chatter from inside Evidently; the results are what counts.
        warnings.simplefilter("ignore")
        with np.errstate(all="ignore"):
            return report.run(current, reference)


def run_drift(reference: pd.DataFrame, current: pd.DataFrame, columns: list, thresholds: Thresholds):
    """DataDriftPreset over `columns` (all numerical). Returns (snapshot, plain dict, info)."""
    _, DataDefinition, Dataset, Report, _, DataDriftPreset, _ = _evidently()
    if thresholds.drift_method is not None:
        methods = numerical_drift_methods()
        if thresholds.drift_method not in methods:
            raise InputError(
                f"unknown --drift-method {thresholds.drift_method!r}; numerical methods: {', '.join(methods)}"
            )
    per_column_threshold = None
    if thresholds.probability_drift_threshold is not None and "probability" in columns:
        per_column_threshold = {"probability": thresholds.probability_drift_threshold}
    definition = DataDefinition(numerical_columns=list(columns))
    preset = DataDriftPreset(
        columns=list(columns),
        drift_share=thresholds.max_drift_share,
        method=thresholds.drift_method,
        threshold=thresholds.drift_threshold,
        per_column_threshold=per_column_threshold,
    )
    report = Report([preset], include_tests=True)
    snapshot = _run(
        report,
        Dataset.from_pandas(current[columns].reset_index(drop=True), data_definition=definition),
        Dataset.from_pandas(reference[columns].reset_index(drop=True), data_definition=definition),
    )
    plain = _plain(snapshot)
    info = drift_info(plain, columns)
    return snapshot, plain, info


def drift_info(plain: dict, columns: list) -> dict:
    metrics_by_id = {m.get("id"): m for m in plain.get("metrics", [])}
    share = count = None
    per_column = {}
    for metric in plain.get("metrics", []):
        config = metric.get("config", {})
        kind = config.get("type", "")
        if kind.endswith("DriftedColumnsCount"):
            share = float(metric["value"]["share"])
            count = int(metric["value"]["count"])
        elif kind.endswith("ValueDrift"):
            column = config.get("column")
            per_column[column] = {
                "score": _num(metric.get("value")),
                "method": config.get("method"),
                "threshold": _num(config.get("threshold")),
                "drifted": None,
            }
    share_test = None
    for test in plain.get("tests", []):
        metric = metrics_by_id.get(test.get("metric_config", {}).get("metric_id"), {})
        kind = metric.get("config", {}).get("type", "")
        if kind.endswith("ValueDrift"):
            column = metric["config"].get("column")
            if column in per_column:
                per_column[column]["drifted"] = test.get("status") == "FAIL"
                per_column[column]["description"] = test.get("description")
        elif kind.endswith("DriftedColumnsCount"):
            share_test = test
    return {
        "columns": list(columns),
        "share": share,
        "count": count,
        "drifted_columns": [c for c in columns if per_column.get(c, {}).get("drifted")],
        "per_column": per_column,
        "share_test": share_test,
    }


def run_classification(
    reference: pd.DataFrame | None,
    current: pd.DataFrame,
    positive_class: str,
    probas_threshold: float,
    thresholds: Thresholds,
):
    """ClassificationPreset on labelled current rows (reference side by side when it has both
    classes). Returns (snapshot, plain dict, metrics dict)."""
    _, _, _, _, _, _, gte = _evidently()
    return _classification_report(
        reference,
        current,
        positive_class,
        probas_threshold,
        accuracy_tests=[gte(thresholds.min_accuracy)],
        rocauc_tests=[gte(thresholds.min_roc_auc)],
    )


def run_study_classification(
    studies: pd.DataFrame, positive_class: str, probas_threshold: float, thresholds: Thresholds
):
    """ClassificationPreset on labelled studies with a verdict (columns `label`, `predicted_label`,
    `probability`; both classes needed): one test, accuracy >= --min-study-accuracy. No reference
    (the reference set holds single images). Returns (snapshot, plain dict, metrics dict)."""
    _, _, _, _, _, _, gte = _evidently()
    return _classification_report(
        None,
        studies,
        positive_class,
        probas_threshold,
        accuracy_tests=[gte(thresholds.min_study_accuracy)],
        rocauc_tests=None,
    )


def _classification_report(
    reference: pd.DataFrame | None,
    current: pd.DataFrame,
    positive_class: str,
    probas_threshold: float,
    accuracy_tests,
    rocauc_tests,
):
    BinaryClassification, DataDefinition, Dataset, Report, ClassificationPreset, _, _ = _evidently()
    columns = ["label", "predicted_label", "probability"]
    definition = DataDefinition(
        numerical_columns=["probability"],
        categorical_columns=["label", "predicted_label"],
        classification=[
            BinaryClassification(
                target="label",
                prediction_labels="predicted_label",
                prediction_probas="probability",
                pos_label=positive_class,
            )
        ],
    )
    preset = ClassificationPreset(
        probas_threshold=float(probas_threshold),
        accuracy_tests=accuracy_tests,
        rocauc_tests=rocauc_tests,
        # Only the gates above are tests; `{}` works around Evidently 0.7.23 passing a list
        # where the by-label metrics expect a dict when include_tests=False.
        f1score_by_label_tests={},
        precision_by_label_tests={},
        recall_by_label_tests={},
        rocauc_by_label_tests={},
        include_tests=False,
    )
    report = Report([preset], include_tests=True)
    ref_dataset = None
    if reference is not None:
        ref_dataset = Dataset.from_pandas(reference[columns].reset_index(drop=True), data_definition=definition)
    snapshot = _run(
        report,
        Dataset.from_pandas(current[columns].reset_index(drop=True), data_definition=definition),
        ref_dataset,
    )
    plain = _plain(snapshot)
    return snapshot, plain, classification_info(plain)


_METRIC_KEYS = {
    "Accuracy": "accuracy",
    "Precision": "precision",
    "Recall": "recall",
    "F1Score": "f1",
    "RocAuc": "roc_auc",
    "LogLoss": "log_loss",
    "TPR": "tpr",
    "TNR": "tnr",
    "FPR": "fpr",
    "FNR": "fnr",
}


def classification_info(plain: dict) -> dict:
    metrics = {}
    ids = {}
    for metric in plain.get("metrics", []):
        kind = metric.get("config", {}).get("type", "").rsplit(":", 1)[-1]
        key = _METRIC_KEYS.get(kind)
        if key is not None and key not in metrics:
            metrics[key] = _num(metric.get("value"))
            ids[metric.get("id")] = key
    tests = {}
    for test in plain.get("tests", []):
        key = ids.get(test.get("metric_config", {}).get("metric_id"))
        if key is not None:
            tests[key] = test
    return {"metrics": metrics, "tests": tests}


def _num(value):
    try:
        result = float(value)
    except (TypeError, ValueError):
        return None
    return None if np.isnan(result) else result


def html_of(snapshot) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return snapshot.get_html_str(as_iframe=False)
