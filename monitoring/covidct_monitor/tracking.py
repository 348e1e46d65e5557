"""Logging a monitoring run to MLflow. Failures are returned as a message, never raised: the report
files exist already and must not be lost because a tracking server is down."""

from __future__ import annotations

import os
import re
from pathlib import Path

KIND_TAG = "covidct.kind"
STATUS_TAG = "covidct.monitoring.status"

_SAFE_KEY = re.compile(r"[^A-Za-z0-9_\-. /]")


def _key(text: str) -> str:
    return _SAFE_KEY.sub("_", str(text))


def tracking_uri(option: str | None) -> str | None:
    uri = option if option else os.environ.get("MLFLOW_TRACKING_URI")
    return uri or None


def log_run(uri: str, experiment: str, summary: dict, run_dir: Path, evidently_version: str) -> dict:
    """Creates an MLflow run with params, metrics, tags and the report files as artifacts.
    Returns {'status': 'logged', 'run_id', 'experiment_id', ...} or {'status': 'failed', 'error'}."""
    # Fail within seconds, not minutes, when the server is unreachable (the user's settings win).
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    run_id = None
    client = None
    try:
        from mlflow.entities import Metric, Param
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=uri)
        found = client.get_experiment_by_name(experiment)
        if found is None:
            experiment_id = client.create_experiment(experiment, tags={KIND_TAG: "monitoring"})
        else:
            experiment_id = found.experiment_id
        tags = build_tags(summary)
        run = client.create_run(experiment_id, tags=tags, run_name=tags["mlflow.runName"])
        run_id = run.info.run_id
        timestamp = int(summary.get("generated_unix_ms") or 0) or None
        params = [Param(k, v) for k, v in build_params(summary, evidently_version).items()]
        metrics = [Metric(k, float(v), timestamp or 0, 0) for k, v in build_metrics(summary).items() if v is not None]
        client.log_batch(run_id, metrics=metrics, params=params, tags=[])
        for path in sorted(Path(run_dir).iterdir()):
            if path.is_file() and not path.name.startswith("."):
                client.log_artifact(run_id, str(path))
        client.set_terminated(run_id, "FINISHED")
        return {
            "status": "logged",
            "tracking_uri": _redact(uri),
            "experiment": experiment,
            "experiment_id": experiment_id,
            "run_id": run_id,
        }
    except Exception as err:  # noqa: BLE001 - a tracking failure is a warning, whatever it is
        if client is not None and run_id is not None:
            try:
                client.set_terminated(run_id, "FAILED")
            except Exception:  # noqa: BLE001
                pass
        return {
            "status": "failed",
            "tracking_uri": _redact(uri),
            "experiment": experiment,
            "run_id": run_id,
            "error": f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:500],
        }


def _redact(uri: str) -> str:
    """Drops user:password@ from an http(s) URI."""
    return re.sub(r"(://)[^/@]+@", r"\1", uri)


def build_tags(summary: dict) -> dict:
    tags = {
        KIND_TAG: "monitoring",
        STATUS_TAG: summary.get("status", "error"),
        "covidct.monitoring.failed_tests": ",".join(summary.get("failed_tests", [])) or "none",
        "mlflow.runName": f"monitoring-{summary.get('generated_at', '')}",
    }
    models = summary.get("current", {}).get("models", [])
    if len(models) == 1:
        tags["covidct.model_name"] = models[0]["model_name"]
        tags["covidct.model_version"] = models[0]["model_version"]
    return tags


def build_params(summary: dict, evidently_version: str) -> dict:
    window = summary.get("window") or {}
    current = summary.get("current", {})
    reference = summary.get("reference", {})
    models = current.get("models", [])
    params = {
        "window": window.get("length", "not applied"),
        "window_start": window.get("start", ""),
        "window_end": window.get("end", ""),
        "reference_path": reference.get("path", ""),
        "current_path": current.get("path", ""),
        "current_kind": current.get("kind", ""),
        "reference_rows": reference.get("rows", 0),
        "current_rows": current.get("rows", 0),
        "labelled_rows": current.get("labelled_rows", 0),
        "model_name": ",".join(sorted({m["model_name"] for m in models})) or "unknown",
        "model_version": ",".join(sorted({m["model_version"] for m in models})) or "unknown",
        "evidently_version": evidently_version,
    }
    for key, value in (summary.get("thresholds") or {}).items():
        params[f"threshold.{key}"] = "default" if value is None else value
    return {_key(k): str(v)[:6000] for k, v in params.items()}


def build_metrics(summary: dict) -> dict:
    current = summary.get("current", {})
    reference = summary.get("reference", {})
    metrics = {
        "reference_rows": reference.get("rows"),
        "current_rows": current.get("rows"),
        "labelled_rows": current.get("labelled_rows"),
        "refused_rows": current.get("refused_rows"),
        "refusal_rate": current.get("refusal_rate"),
        "ood_score_median": current.get("ood_score_median"),
        "reference_refused_rows": reference.get("refused_rows"),
        "reference_refusal_rate": reference.get("refusal_rate"),
        "reference_ood_score_median": reference.get("ood_score_median"),
        "tests_failed": len(summary.get("failed_tests", [])),
        "passed": 1.0 if summary.get("status") == "pass" else 0.0,
    }
    drift = summary.get("drift", {})
    if drift.get("status") == "run":
        metrics["share_of_drifted_columns"] = drift.get("share")
        metrics["drifted_columns"] = drift.get("count")
        for column, item in drift.get("per_column", {}).items():
            metrics[f"drift_score.{column}"] = item.get("score")
            metrics[f"drifted.{column}"] = 1.0 if item.get("drifted") else 0.0
    cls = summary.get("classification", {})
    if cls.get("status") == "run":
        for name, value in cls.get("metrics", {}).items():
            metrics[name] = value
    studies = summary.get("study_quality", {})
    if studies.get("tables"):
        for key in ("studies", "without_verdict", "without_verdict_share", "labelled_studies"):
            metrics[f"study.{key}"] = studies.get(key)
    if studies.get("status") == "run":
        for name, value in studies.get("metrics", {}).items():
            metrics[f"study.{name}"] = value
    for test in summary.get("tests", []):
        if test.get("status") in ("pass", "fail") and isinstance(test.get("value"), (int, float)):
            metrics[f"test.{test['name']}.value"] = test["value"]
            metrics[f"test.{test['name']}.passed"] = 1.0 if test["status"] == "pass" else 0.0
    return {_key(k): (None if v is None else float(v)) for k, v in metrics.items()}
