"""The watch loop as a real process (`python -m covidct_monitor watch`, started by conftest when
the session starts): runs into OUT/<UTC timestamp>/, keeps OUT/latest on the newest complete run,
prunes to --keep, logs one JSON line per run, logs each run to MLflow and exits 0 on SIGTERM."""

from __future__ import annotations

import json
import os

from covidct_monitor.output import list_runs


def test_watch_runs_keeps_latest_and_stops_on_sigterm(background_watch):
    watch = background_watch
    assert watch.signalled, f"watch did not complete two runs:\n{watch.stdout}\n{watch.stderr}"
    assert watch.proc.returncode == 0, watch.stderr
    assert "Traceback" not in watch.stderr
    lines = [json.loads(line) for line in watch.stdout.splitlines() if line.startswith("{")]
    events = [line["event"] for line in lines]
    assert events[0] == "monitoring_start" and events[-1] == "monitoring_exit"
    assert "monitoring_stop" in events
    runs = [line for line in lines if line["event"] == "monitoring_run"]
    assert len(runs) >= 2
    for run in runs:
        assert run["status"] == "pass" and run["current_rows"] == 60 and run["failed_tests"] == []
        assert run["labelled_rows"] == 40 and run["mlflow"] == "logged"
        assert run["refusal_rate"] == 0.0
    # Each run got its own directory; `latest` moved from one to the next.
    assert watch.latest_seen == [r["run"] for r in runs][: len(watch.latest_seen)]
    # --keep 1: only the newest run directory is left, and latest points at it.
    out = watch.out
    names = list_runs(out)
    assert names == [runs[-1]["run"]]
    assert os.readlink(out / "latest") == names[0]
    summary = json.loads((out / "latest" / "summary.json").read_text())
    assert summary["status"] == "pass" and summary["run"] == names[0]
    assert (out / "latest" / "drift.html").exists()
    assert names[0] in (out / "index.html").read_text()
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "no partial runs or temp links left"


def test_watch_logs_each_run_to_mlflow(background_watch):
    from mlflow.tracking import MlflowClient

    watch = background_watch
    runs = [json.loads(x) for x in watch.stdout.splitlines() if x.startswith("{")]
    runs = [r for r in runs if r["event"] == "monitoring_run"]
    summary = json.loads((watch.out / "latest" / "summary.json").read_text())
    assert summary["mlflow"]["status"] == "logged", summary["mlflow"]
    client = MlflowClient(tracking_uri=watch.tracking_uri)
    experiment = client.get_experiment_by_name("covidct-monitoring")
    assert experiment is not None
    logged = client.search_runs([experiment.experiment_id])
    assert len(logged) == len(runs)
    run = client.get_run(summary["mlflow"]["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["covidct.kind"] == "monitoring"
    assert run.data.tags["covidct.monitoring.status"] == "pass"
    assert run.data.tags["covidct.model_name"] == "covidct"
    assert run.data.tags["covidct.model_version"] == "3"
    assert run.data.params["window"] == "24h"
    assert run.data.params["current_rows"] == "60"
    assert run.data.params["labelled_rows"] == "40"
    assert run.data.params["model_name"] == "covidct"
    assert run.data.params["current_path"] == str(watch.log)
    assert run.data.params["threshold.max_drift_share"] == "0.3"
    assert run.data.metrics["share_of_drifted_columns"] == summary["drift"]["share"]
    assert run.data.metrics["accuracy"] == summary["classification"]["metrics"]["accuracy"]
    assert "roc_auc" in run.data.metrics and "drift_score.contrast" in run.data.metrics
    assert run.data.metrics["test.min_current_rows.value"] == 60
    assert run.data.metrics["refusal_rate"] == 0.0 and run.data.metrics["test.refusal_rate.passed"] == 1.0
    assert run.data.params["threshold.max_refusal_rate"] == "0.05"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {
        "drift.html",
        "drift.json",
        "classification.html",
        "classification.json",
        "summary.json",
        "index.html",
    } <= artifacts
