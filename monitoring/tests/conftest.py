"""Fixtures for the monitoring tests; the synthetic data lives in monitor_synth.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from .monitor_synth import NOW_MS, make_frame, write_log, write_reference

WATCH_TEST = "test_monitor_watch.py"


@pytest.fixture(scope="session")
def reference_csv(tmp_path_factory) -> Path:
    return write_reference(tmp_path_factory.mktemp("ref") / "reference.csv", make_frame(400, seed=1))


@pytest.fixture
def no_tracking(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def pytest_collection_modifyitems(session, config, items):
    config.covidct_monitor_watch = any(WATCH_TEST in item.nodeid for item in items)


class WatchProcess:
    """`python -m covidct_monitor watch` started when the session starts, so that its Evidently
    and MLflow start-up and its runs overlap the in-process tests. A thread sends SIGTERM once `latest` has
    pointed at two different runs, then collects the output."""

    def __init__(self, reference: Path, root: Path):
        self.log = write_log(root / "predictions.sqlite", make_frame(60, seed=21), labelled=40)
        self.out = root / "monitoring"
        # Logged to MLflow (sqlite backend; artifacts under ./mlruns of its working directory).
        self.tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
        self.latest_seen: list = []
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "covidct_monitor",
                "watch",
                "--reference",
                str(reference),
                "--current",
                str(self.log),
                "--out",
                str(self.out),
                "--now",
                str(NOW_MS),
                "--interval",
                "0.5s",
                "--keep",
                "1",
                "--tracking-uri",
                self.tracking_uri,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=root,
        )
        self.stdout = self.stderr = ""
        self.signalled = False
        self.thread = threading.Thread(target=self._drive, daemon=True)
        self.thread.start()

    def _drive(self, timeout=240):
        deadline = time.monotonic() + timeout
        link = self.out / "latest"
        while time.monotonic() < deadline and self.proc.poll() is None:
            if link.is_symlink():
                name = os.readlink(link)
                if name not in self.latest_seen:
                    self.latest_seen.append(name)
                if len(self.latest_seen) >= 2:
                    self.proc.send_signal(signal.SIGTERM)
                    self.signalled = True
                    break
            time.sleep(0.1)
        try:
            self.stdout, self.stderr = self.proc.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.stdout, self.stderr = self.proc.communicate()

    def finish(self):
        self.thread.join(timeout=400)
        return self

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.thread.join(timeout=30)


@pytest.fixture(scope="session", autouse=True)
def _start_background_watch(request, tmp_path_factory, reference_csv):
    if not getattr(request.config, "covidct_monitor_watch", False):
        yield None
        return
    watch = WatchProcess(reference_csv, tmp_path_factory.mktemp("watch"))
    yield watch
    watch.stop()


@pytest.fixture
def background_watch(_start_background_watch):
    if _start_background_watch is None:
        pytest.skip("the watch process was not started")
    return _start_background_watch.finish()
