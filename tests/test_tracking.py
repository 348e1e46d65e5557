"""MLflow tracking and the model registry, checked with MLflow's own Python client against a real
`mlflow server` (sqlite backend, proxied artifacts) started for this module, and against the
local file store that `covidct` writes when no server is configured."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import TRAIN_FLAGS, clean_env, shapes_dataset

mlflow = pytest.importorskip("mlflow", reason="mlflow is pinned in tests/requirements.txt")
from mlflow import MlflowClient  # noqa: E402

MLFLOW = Path(sys.executable).parent / "mlflow"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, store: Path) -> subprocess.Popen:
    """Starts `mlflow server` on 127.0.0.1:port with its state in `store`; waits for /health."""
    store.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [
            str(MLFLOW),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{store}/mlflow.db",
            "--artifacts-destination",
            str(store / "artifacts"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(store / "server.log", "ab"),
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        start_new_session=True,
    )
    if wait_ok(f"http://127.0.0.1:{port}/health", process, timeout=90):
        return process
    process.kill()
    pytest.fail(f"mlflow server did not start: {(store / 'server.log').read_text()[-2000:]}")


def wait_ok(url: str, process: subprocess.Popen, timeout: float) -> bool:
    """Polls `url` until it answers 200 (True), the process exits or the time runs out (False)."""
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return True
        except OSError:
            time.sleep(0.2)
    return False


def stop_server(process: subprocess.Popen) -> None:
    """Stops the server's whole process group (uvicorn workers and job runners included)."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real MLflow server for this module: its tracking URI."""
    if not MLFLOW.exists():
        pytest.fail(f"{MLFLOW} missing: install tests/requirements.txt into the venv (scripts/setup.sh)")
    port = free_port()
    process = start_server(port, tmp_path_factory.mktemp("mlflow"))
    yield f"http://127.0.0.1:{port}"
    stop_server(process)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return shapes_dataset(tmp_path_factory.mktemp("tracking-data") / "data")


def train(run, data, out, env, *extra):
    result = run("train", "--data-dir", data, "--out", out, *TRAIN_FLAGS, *extra, env=env)
    assert result.returncode == 0, result.stderr
    return result


def epochs_trained(stderr: str) -> int:
    return sum(1 for line in stderr.splitlines() if " epoch " in line and "val ROC-AUC" in line)


def http_json(port: int, method: str, path: str) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    with urllib.request.urlopen(request, timeout=60) as answer:
        return json.loads(answer.read())


def test_training_run_is_tracked_registered_promoted_and_pulled(run, covidct_bin, data, server, tmp_path):
    experiment = "covidct-test-registry"
    name = "covidct-test"
    env = {"MLFLOW_TRACKING_URI": server, "MLFLOW_EXPERIMENT_NAME": experiment}
    out = tmp_path / "train"
    result = train(run, data, out, env)
    link = json.loads((out / "tracking.json").read_text())
    run_id = link["run_id"]
    assert run_id and link["model_ids"], link
    assert f"tracked as MLflow run {run_id}" in result.stderr

    client = MlflowClient(tracking_uri=server)
    tracked = client.get_run(run_id)
    assert tracked.info.status == "FINISHED"
    assert client.get_experiment(tracked.info.experiment_id).name == experiment
    params = tracked.data.params
    assert params["architecture"] == "resnet18" and params["image_size"] == "32"
    assert params["learning_rate"] == "0.003" and params["augment.hflip_probability"] == "0.5"
    tags = tracked.data.tags
    assert tags["covidct.architecture"] == "resnet18" and tags["covidct.pretrained"] == "none"
    assert tags["covidct.split_strategy"] == "blocks"
    assert len(tags["covidct.dataset_fingerprint"]) >= 16
    # One point per epoch, steps counting epochs across the head and fine-tuning phases.
    history = client.get_metric_history(run_id, "val_roc_auc")
    steps = [m.step for m in history]
    assert steps == list(range(1, epochs_trained(result.stderr) + 1)), steps
    local_report = json.loads((out / "evaluation" / "report.json").read_text())
    assert tracked.data.metrics["test_roc_auc"] == pytest.approx(local_report["metrics"]["point"]["roc_auc"])
    assert "test_roc_auc_ci_lower" in tracked.data.metrics
    artifacts = {a.path for a in client.list_artifacts(run_id)} | {
        a.path for a in client.list_artifacts(run_id, "evaluation")
    }
    for path in ("MODEL_CARD.md", "split", "evaluation/report.json", "evaluation/report.html", "evaluation/roc.png"):
        assert path in artifacts, artifacts
    downloaded = Path(client.download_artifacts(run_id, "evaluation/report.json", str(tmp_path)))
    assert downloaded.read_bytes() == (out / "evaluation" / "report.json").read_bytes()
    # The package is a logged model of the run, finalised READY.
    model = client.get_logged_model(link["model_ids"][0])
    assert model.source_run_id == run_id and str(model.status).endswith("READY")

    # Register: version 1 points at the run's logged model and gets @challenger.
    result = run("models", "register", out / "model.ctpkg", "--name", name, env=env)
    assert result.returncode == 0, result.stderr
    version = client.get_model_version_by_alias(name, "challenger")
    assert version.version == "1" and version.run_id == run_id
    assert version.source.startswith("mlflow-artifacts:/")
    assert version.tags["covidct.package_sha256"]

    # Pull verifies and caches the package byte for byte.
    cache = tmp_path / "cache"
    result = run("models", "pull", f"models:/{name}@challenger", "--cache-dir", cache, env=env)
    assert result.returncode == 0, result.stderr
    pulled = Path(result.stdout.strip())
    assert pulled.read_bytes() == (out / "model.ctpkg").read_bytes()

    gate = [
        "--name",
        name,
        "--data-dir",
        data,
        "--manifest",
        out / "split.csv",
        "--bootstrap",
        "20",
        "--cache-dir",
        cache,
        "--out",
        tmp_path / "promotion",
    ]
    # No champion yet: the challenger becomes champion.
    result = run("models", "promote", *gate, env=env)
    assert result.returncode == 0, result.stderr
    assert client.get_model_version_by_alias(name, "champion").version == "1"

    # A second version that must beat the champion by 1.0 in ROC-AUC is refused (exit 3).
    result = run("models", "register", out / "model.ctpkg", "--name", name, env=env)
    assert result.returncode == 0, result.stderr
    result = run("models", "promote", *gate, "--margin", "-1", env=env)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "refuse" in result.stdout
    assert client.get_model_version_by_alias(name, "champion").version == "1"
    # The same model with no margin is not worse: promoted, and the old champion is kept.
    result = run("models", "promote", *gate, env=env)
    assert result.returncode == 0, result.stderr
    assert client.get_model_version_by_alias(name, "champion").version == "2"
    assert client.get_model_version_by_alias(name, "previous-champion").version == "1"

    listing = run("models", "list", "--name", name, "--json", env=env)
    assert [v["version"] for v in json.loads(listing.stdout)] == [1, 2]

    # Evaluating the champion logs its own run, tagged with the version it evaluated.
    result = run(
        "evaluate",
        "--model",
        f"models:/{name}@champion",
        "--model-cache",
        cache,
        "--data-dir",
        data,
        "--manifest",
        out / "split.csv",
        "--bootstrap",
        "20",
        "--out",
        tmp_path / "eval",
        env=env,
    )
    assert result.returncode == 0, result.stderr
    eval_link = json.loads((tmp_path / "eval" / "tracking.json").read_text())
    evaluation = client.get_run(eval_link["run_id"])
    assert evaluation.data.tags["covidct.model_version"] == "2"
    assert evaluation.data.tags["covidct.model_run_id"] == run_id
    assert evaluation.data.metrics["test_roc_auc"] == pytest.approx(local_report["metrics"]["point"]["roc_auc"])

    # The service loads @champion from the registry, and a reload follows the alias (rollback).
    port = free_port()
    serve = subprocess.Popen(
        [
            str(covidct_bin),
            "serve",
            "--model",
            f"models:/{name}@champion",
            "--model-cache",
            str(cache),
            "--no-auth",
            "--bind",
            f"127.0.0.1:{port}",
            "--prediction-log",
            str(tmp_path / "p.sqlite"),
        ],
        env=clean_env(env),
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "serve.log", "w"),
        cwd=tmp_path,
    )
    try:
        assert wait_ok(f"http://127.0.0.1:{port}/readyz", serve, timeout=60), (tmp_path / "serve.log").read_text()
        assert http_json(port, "GET", "/v1/model")["model"]["version"] == "2"
        client.set_registered_model_alias(name, "champion", "1")
        http_json(port, "POST", "/v1/admin/reload")
        assert http_json(port, "GET", "/v1/model")["model"]["version"] == "1"
    finally:
        serve.terminate()
        serve.wait(timeout=30)


def test_registry_commands_name_what_is_wrong(run, server, tmp_path):
    env = {"MLFLOW_TRACKING_URI": server}
    result = run("models", "pull", "models:/no-such-model@champion", "--cache-dir", tmp_path, env=env)
    assert result.returncode != 0 and "no-such-model" in result.stderr
    result = run("models", "pull", "covidct@champion", env=env)
    assert result.returncode != 0 and "models:/" in result.stderr
    result = run("models", "list", env={"MLFLOW_TRACKING_URI": str(tmp_path / "mlruns")})
    assert result.returncode != 0 and "tracking server" in result.stderr


def test_without_a_server_runs_go_to_a_local_store_mlflow_opens(run, data, tmp_path):
    workdir = tmp_path / "work"
    workdir.mkdir()
    result = run("train", "--data-dir", data, "--out", tmp_path / "train", *TRAIN_FLAGS, cwd=workdir)
    assert result.returncode == 0, result.stderr
    store = workdir / "mlruns"
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    try:
        client = MlflowClient(tracking_uri=store.as_uri())
        experiment = client.get_experiment_by_name("covidct")
        (tracked,) = client.search_runs([experiment.experiment_id])
    finally:
        del os.environ["MLFLOW_ALLOW_FILE_STORE"]
    assert tracked.info.status == "FINISHED"
    assert tracked.data.params["architecture"] == "resnet18"
    steps = [m.step for m in client.get_metric_history(tracked.info.run_id, "val_loss")]
    assert steps == list(range(1, epochs_trained(result.stderr) + 1))
    assert "test_roc_auc" in tracked.data.metrics
    assert {a.path for a in client.list_artifacts(tracked.info.run_id)} >= {"MODEL_CARD.md", "evaluation", "split"}
    (model,) = client.search_logged_models([experiment.experiment_id])
    assert model.source_run_id == tracked.info.run_id
    assert not (workdir / ".covidct" / "spool").exists() or not any((workdir / ".covidct" / "spool").iterdir())


def test_a_server_outage_loses_nothing_and_sync_delivers_once(run, data, tmp_path):
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    env = {"MLFLOW_TRACKING_URI": uri, "COVIDCT_SPOOL_DIR": str(tmp_path / "spool")}
    out = tmp_path / "train"
    trained = train(run, data, out, env)
    assert "covidct runs sync" in trained.stderr
    assert any((tmp_path / "spool").iterdir())

    process = start_server(port, tmp_path / "mlflow")
    try:
        result = run("runs", "sync", env=env)
        assert result.returncode == 0, result.stdout + result.stderr
        result = run("runs", "sync", env=env)
        assert "nothing to deliver" in result.stdout
        client = MlflowClient(tracking_uri=uri)
        (tracked,) = client.search_runs([client.get_experiment_by_name("covidct").experiment_id])
        assert tracked.info.status == "FINISHED"
        history = client.get_metric_history(tracked.info.run_id, "train_loss")
        assert [m.step for m in history] == list(range(1, epochs_trained(trained.stderr) + 1))
        assert "test_roc_auc" in tracked.data.metrics
        (model,) = client.search_logged_models([tracked.info.experiment_id])
        assert model.source_run_id == tracked.info.run_id
    finally:
        stop_server(process)


def test_an_interrupted_run_resumes_into_the_same_mlflow_run(covidct_bin, data, tmp_path):
    workdir = tmp_path / "work"
    workdir.mkdir()
    out = tmp_path / "train"
    # AdamW head epochs, so that the interruption falls after several epochs of both phases.
    flags = [*TRAIN_FLAGS, "--patience", "8", "--head-solver", "adamw"]
    flags[flags.index("--epochs") + 1] = "8"
    command = [str(covidct_bin), "train", "--data-dir", str(data), "--out", str(out), *flags]
    process = subprocess.Popen(command, cwd=workdir, env=clean_env(), stderr=subprocess.PIPE, text=True)
    first_epochs = 0
    for line in process.stderr:
        if " epoch " in line and "val ROC-AUC" in line:
            first_epochs += 1
            if "FineTune epoch 1" in line:
                process.send_signal(signal.SIGINT)
    assert process.wait(timeout=300) == 130
    resumed = subprocess.run(
        command + ["--resume"], cwd=workdir, env=clean_env(), capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr

    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    try:
        client = MlflowClient(tracking_uri=(workdir / "mlruns").as_uri())
        (tracked,) = client.search_runs([client.get_experiment_by_name("covidct").experiment_id])
        steps = [m.step for m in client.get_metric_history(tracked.info.run_id, "val_roc_auc")]
    finally:
        del os.environ["MLFLOW_ALLOW_FILE_STORE"]
    assert tracked.info.status == "FINISHED"
    # Every epoch once, across the interruption.
    assert steps == list(range(1, first_epochs + epochs_trained(resumed.stderr) + 1)), steps
    assert first_epochs >= 3
