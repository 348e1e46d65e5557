"""Black-box tests of `covidct serve`: the real binary on a free port with a tiny trained model
(the ResNet-18 at 32 px of test_model_cli.py): every endpoint, status code, authentication
failure and limit, the prediction log, reload, graceful shutdown and a bounded load test.

The tests that hold for any deployment take only the `server` fixture and talk to it through
`Client`; tests/deployed/ runs them against a deployed service (COVIDCT_API_URL)."""

import base64
import http.client
import io
import json
import math
import os
import re
import signal
import socket
import sqlite3
import struct
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest
from PIL import Image

from conftest import shapes_dataset

# The keys the tests send; a deployed service under test gives its own (tests/deployed/).
API_KEY = os.environ.get("COVIDCT_API_KEY", "pytest-key")
ADMIN_KEY = os.environ.get("COVIDCT_ADMIN_KEY", "pytest-admin")
# Limits of the module's service (flags below); a deployed one states its own.
LIMITS = {"max_pixels": 1_000_000, "max_body_bytes": 2_000_000, "max_batch_images": 4}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Client:
    """HTTP calls to a covidct service at host:port whose limits are known."""

    def __init__(self, host, port, limits=None):
        self.host, self.port, self.limits = host, port, dict(limits or LIMITS)

    def call(self, method, path, body=None, headers=None, key=API_KEY, timeout=30):
        """Returns (status, headers, body bytes)."""
        connection = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        all_headers = {"X-API-Key": key} if key else {}
        all_headers.update(headers or {})
        connection.request(method, path, body=body, headers=all_headers)
        response = connection.getresponse()
        data = response.read()
        connection.close()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data

    def json(self, method, path, body=None, content_type=None, **kwargs):
        headers = {"Content-Type": content_type} if content_type else {}
        status, response_headers, data = self.call(method, path, body, headers, **kwargs)
        assert response_headers.get("content-type", "").startswith("application/json"), (status, data[:200])
        return status, json.loads(data)


class Server(Client):
    """A running `covidct serve` process."""

    def __init__(self, covidct_bin, package, workdir, *flags, env=None, wait=True):
        super().__init__("127.0.0.1", free_port())
        self.log_path = workdir / f"predictions-{self.port}.sqlite"
        keys = workdir / "api-keys.txt"
        keys.write_text(f"# test keys\n{API_KEY}\n")
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("COVIDCT_")}
        full_env.update({"COVIDCT_API_KEYS_FILE": str(keys), "COVIDCT_ADMIN_KEYS": ADMIN_KEY})
        full_env.update(env or {})
        self.stderr = open(workdir / f"serve-{self.port}.log", "w+")
        self.process = subprocess.Popen(
            [
                str(covidct_bin),
                "serve",
                "--model",
                str(package),
                "--bind",
                f"127.0.0.1:{self.port}",
                "--prediction-log",
                str(self.log_path),
                *map(str, flags),
            ],
            stdout=subprocess.DEVNULL,
            stderr=self.stderr,
            env=full_env,
        )
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"covidct serve exited {self.process.returncode}:\n{self.log()}")
            try:
                if self.call("GET", "/readyz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"not ready after {timeout} s:\n{self.log()}")

    def log(self):
        self.stderr.flush()
        self.stderr.seek(0)
        return self.stderr.read()

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.stderr.close()


@pytest.fixture(scope="module")
def server(covidct_bin, model_package, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("serve")
    s = Server(
        covidct_bin,
        model_package,
        workdir,
        "--max-pixels",
        LIMITS["max_pixels"],
        "--max-body-bytes",
        LIMITS["max_body_bytes"],
        "--max-batch-images",
        LIMITS["max_batch_images"],
        "--store-images",
        workdir / "images",
    )
    yield s
    s.stop()


_TRAINING_SLICES = {}


def training_slice(label="COVID", n=1):
    """The n-th `label` image of the session model's training data (tests/conftest.py:
    shapes_dataset, same seed, so byte for byte the file it was trained on): a slice the model's
    out-of-distribution gate accepts."""
    if not _TRAINING_SLICES:
        root = shapes_dataset(Path(tempfile.mkdtemp()) / "data")
        for path in root.glob("*/*.png"):
            _TRAINING_SLICES[path.parent.name, path.name] = Image.open(path).copy()
    return _TRAINING_SLICES[label, f"{label} ({n}).png"]


def png(width=None, height=None, disc=True):
    """A training slice as PNG bytes; with a size, a flat synthetic disc (or blank) image of that
    size instead — for limits, which are checked before any model sees the image."""
    if width is None:
        image = training_slice()
    else:
        image = Image.new("L", (width, height), 30)
        if disc:
            from PIL import ImageDraw

            ImageDraw.Draw(image).ellipse([width // 4, height // 4, 3 * width // 4, 3 * height // 4], fill=240)
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def jpeg():
    out = io.BytesIO()
    training_slice().save(out, "JPEG", quality=95)
    return out.getvalue()


def dicom(image=None, study_uid=None, series_uid=None, instance=None, position=None, orientation=None):
    """A minimal explicit-VR little-endian CT Part 10 file (16-bit, intercept -2048) whose lung
    window (W 1500 / L -600) gives back `image` (default: the training slice). Optionally with
    StudyInstanceUID (0020,000D), SeriesInstanceUID (0020,000E), InstanceNumber (0020,0013),
    ImagePositionPatient (0020,0032, x y z in mm) and ImageOrientationPatient (0020,0037, six
    direction cosines), for the study tests (tests/test_study.py)."""
    image = image or training_slice()
    cols, rows = image.size
    decimals = lambda values: "\\".join(f"{v:g}" for v in values).encode()  # noqa: E731

    def element(group, elem, vr, value):
        if len(value) % 2:
            value += b"\0" if vr in (b"UI", b"OB") else b" "
        if vr in (b"OB", b"OW"):
            return struct.pack("<HH", group, elem) + vr + b"\0\0" + struct.pack("<I", len(value)) + value
        return struct.pack("<HH", group, elem) + vr + struct.pack("<H", len(value)) + value

    us = lambda v: struct.pack("<H", v)  # noqa: E731
    meta = (
        element(2, 1, b"OB", b"\0\1")
        + element(2, 2, b"UI", b"1.2.840.10008.5.1.4.1.1.2")
        + element(2, 3, b"UI", b"1.2.3.4")
        + element(2, 0x10, b"UI", b"1.2.840.10008.1.2.1")
    )
    meta = element(2, 0, b"UL", struct.pack("<I", len(meta))) + meta
    pixels = [round(-1350 + g * 1500 / 255) + 2048 for g in image.getdata()]
    # Group 0020 before 0028: a data set's elements stay in ascending tag order.
    where = b""
    for elem, vr, value in (
        (0x0D, b"UI", study_uid),
        (0x0E, b"UI", series_uid),
        (0x13, b"IS", None if instance is None else str(instance).encode()),
        (0x32, b"DS", position and decimals(position)),
        (0x37, b"DS", orientation and decimals(orientation)),
    ):
        if value is not None:
            where += element(0x20, elem, vr, value.encode() if isinstance(value, str) else value)
    data = where + (
        element(0x28, 2, b"US", us(1))
        + element(0x28, 4, b"CS", b"MONOCHROME2")
        + element(0x28, 0x10, b"US", us(rows))
        + element(0x28, 0x11, b"US", us(cols))
        + element(0x28, 0x100, b"US", us(16))
        + element(0x28, 0x101, b"US", us(16))
        + element(0x28, 0x102, b"US", us(15))
        + element(0x28, 0x103, b"US", us(0))
        + element(0x28, 0x1052, b"DS", b"-2048")
        + element(0x28, 0x1053, b"DS", b"1")
        + element(0x7FE0, 0x10, b"OW", struct.pack(f"<{rows * cols}H", *pixels))
    )
    return b"\0" * 128 + b"DICM" + meta + data


def multipart(files):
    boundary = uuid.uuid4().hex
    body = b""
    for name, data in files:
        body += (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n"
            ).encode()
            + data
            + b"\r\n"
        )
    body += f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def check_prediction(answer):
    assert answer["label"] in ("COVID", "non-COVID")
    assert 0.0 <= answer["probability"] <= 1.0
    assert (answer["label"] == "COVID") == (answer["probability"] >= answer["threshold"])
    assert answer["model"]["name"] and answer["model"]["version"]
    assert answer["timing"]["total_ms"] > 0
    uuid.UUID(answer["request_id"][:36])  # batch entries: "<request id>-<index>"


def test_health_readiness_metrics_docs_and_page(server):
    assert server.json("GET", "/healthz", key=None) == (200, {"status": "alive"})
    status, ready = server.json("GET", "/readyz", key=None)
    assert status == 200 and ready["status"] == "ready"
    status, spec = server.json("GET", "/openapi.json", key=None)
    assert status == 200 and spec["openapi"].startswith("3.1")
    assert {
        "/v1/predict",
        "/v1/predict/batch",
        "/v1/explain",
        "/v1/model",
        "/v1/feedback",
        "/v1/admin/reload",
        "/healthz",
        "/readyz",
        "/metrics",
    } <= set(spec["paths"])
    status, _, html = server.call("GET", "/docs/", key=None)
    assert status == 200 and b"swagger" in html.lower()
    status, headers, page = server.call("GET", "/", key=None)
    assert status == 200 and headers["content-type"].startswith("text/html") and b"covidct" in page
    status, headers, text = server.call("GET", "/metrics", key=None)
    assert status == 200 and b"covidct_model_info" in text


@pytest.mark.parametrize("kind", ["png", "jpeg", "dicom", "multipart", "base64", "bearer"])
def test_predict_every_input_form(server, kind):
    if kind == "multipart":
        body, content_type = multipart([("scan.png", png())])
    elif kind == "base64":
        body, content_type = json.dumps({"image": base64.b64encode(png()).decode()}), "application/json"
    else:
        body, content_type = {
            "png": (png(), "image/png"),
            "jpeg": (jpeg(), "image/jpeg"),
            "dicom": (dicom(), "application/dicom"),
            "bearer": (png(), "image/png"),
        }[kind]
    if kind == "bearer":
        status, _, data = server.call(
            "POST", "/v1/predict", body, {"Content-Type": content_type, "Authorization": f"Bearer {API_KEY}"}, key=None
        )
        answer = json.loads(data)
    else:
        status, answer = server.json("POST", "/v1/predict", body, content_type)
    assert status == 200, answer
    check_prediction(answer)


def test_the_tiny_model_tells_discs_from_bars(server):
    def answer(label):
        out = io.BytesIO()
        training_slice(label, 5).save(out, "PNG")
        return server.json("POST", "/v1/predict", out.getvalue(), "image/png")[1]

    assert answer("COVID")["probability"] > answer("non-COVID")["probability"]


@pytest.mark.parametrize(
    "key,headers,status,code",
    [
        (None, {}, 401, "unauthorized"),
        ("wrong", {}, 401, "unauthorized"),
        (None, {"Authorization": "Basic abc"}, 401, "unauthorized"),
        (ADMIN_KEY, {}, 401, "unauthorized"),
    ],
)
def test_prediction_routes_need_an_api_key(server, key, headers, status, code):
    for method, path in (
        ("POST", "/v1/predict"),
        ("POST", "/v1/predict/batch"),
        ("POST", "/v1/explain"),
        ("GET", "/v1/model"),
        ("POST", "/v1/feedback"),
    ):
        got, _, body = server.call(method, path, png(), {"Content-Type": "image/png", **headers}, key=key)
        assert got == status, (path, body)
        assert json.loads(body)["error"]["code"] == code


def test_admin_reload_needs_the_admin_key(server):
    assert server.json("POST", "/v1/admin/reload", key=None)[0] == 401
    status, body = server.json("POST", "/v1/admin/reload", key=API_KEY)
    assert (status, body["error"]["code"]) == (403, "forbidden")
    status, body = server.json("POST", "/v1/admin/reload", key=ADMIN_KEY)
    assert status == 200, body
    assert body["current"] == body["previous"]


@pytest.mark.parametrize(
    "body,content_type,status,code",
    [
        (b"not an image", "image/png", 422, "invalid_image"),
        (b"", "image/png", 400, "empty_image"),
        (b"hello", "text/plain", 415, "unsupported_media_type"),
        (b'{"image": "@@@"}', "application/json", 400, "invalid_base64"),
        (b'{"image": 1}', "application/json", 400, "invalid_json"),
    ],
)
def test_bad_requests_get_stable_json_errors(server, body, content_type, status, code):
    got, answer = server.json("POST", "/v1/predict", body, content_type)
    assert (got, answer["error"]["code"]) == (status, code), answer
    assert "panicked" not in answer["error"]["message"] and "backtrace" not in answer["error"]["message"]


def test_an_oversized_body_is_refused_from_its_length_before_it_is_read(server):
    # Only the headers are sent: the answer must come without the body (sending megabytes after
    # the server has answered would race with it closing the connection).
    connection = http.client.HTTPConnection(server.host, server.port, timeout=30)
    connection.putrequest("POST", "/v1/predict")
    for name, value in (
        ("X-API-Key", API_KEY),
        ("Content-Type", "application/octet-stream"),
        ("Content-Length", str(server.limits["max_body_bytes"] + 100_000)),
    ):
        connection.putheader(name, value)
    connection.endheaders()
    response = connection.getresponse()
    answer = json.loads(response.read())
    connection.close()
    assert (response.status, answer["error"]["code"]) == (413, "body_too_large")


def test_decompression_bomb_is_refused_from_the_header(server):
    # Four times the pixel limit in one colour compresses to a few kB (4 MP at 1 MP).
    side = 2 * math.isqrt(server.limits["max_pixels"])
    out = io.BytesIO()
    Image.new("L", (side, side), 0).save(out, "PNG")
    assert len(out.getvalue()) < 100_000
    status, answer = server.json("POST", "/v1/predict", out.getvalue(), "image/png")
    assert (status, answer["error"]["code"]) == (413, "image_too_large")


def test_unknown_routes_and_methods_are_json(server):
    assert server.json("GET", "/v1/nothing")[1]["error"]["code"] == "not_found"
    status, answer = server.json("GET", "/v1/predict")
    assert (status, answer["error"]["code"]) == (405, "method_not_allowed")


def test_batch_answers_each_image_and_enforces_the_limit(server):
    body, content_type = multipart([("a.png", png()), ("bad.png", b"garbage"), ("c.dcm", dicom())])
    status, answer = server.json("POST", "/v1/predict/batch", body, content_type)
    assert status == 200, answer
    results = answer["results"]
    assert [r["index"] for r in results] == [0, 1, 2]
    check_prediction(results[0]["prediction"])
    assert results[1]["error"]["code"] == "invalid_image" and "prediction" not in results[1]
    check_prediction(results[2]["prediction"])
    too_many = json.dumps(
        {"images": [{"image": base64.b64encode(png()).decode()}] * (server.limits["max_batch_images"] + 1)}
    )
    status, answer = server.json("POST", "/v1/predict/batch", too_many, "application/json")
    assert (status, answer["error"]["code"]) == (413, "too_many_images")


def test_explain_gives_an_overlay_and_the_raw_map(server):
    status, headers, data = server.call("POST", "/v1/explain", png(), {"Content-Type": "image/png"})
    assert status == 200 and headers["content-type"] == "image/png"
    overlay = Image.open(io.BytesIO(data))
    assert overlay.size == (384, 384) and overlay.mode == "RGB"
    assert headers["x-covidct-label"] in ("COVID", "non-COVID")
    status, answer = server.json("POST", "/v1/explain?format=json", png(), "image/png")
    assert status == 200
    assert len(answer["map"]["values"]) == answer["map"]["width"] * answer["map"]["height"]
    assert all(0.0 <= v <= 1.0 for v in answer["map"]["values"])
    assert answer["explained_class"] == "COVID"


def test_model_card(server):
    status, model = server.json("GET", "/v1/model")
    assert status == 200
    assert model["architecture"] == "resnet18" and model["input_size"] == 32
    assert model["model_card"].startswith("# Model card")
    assert model["class_names"] == ["COVID", "non-COVID"]


def test_predictions_are_logged_with_features_and_feedback_joins(server):
    status, answer = server.json("POST", "/v1/predict", png(), "image/png")
    request_id = answer["request_id"]
    assert (
        server.json(
            "POST", "/v1/feedback", json.dumps({"request_id": request_id, "label": "COVID"}), "application/json"
        )[0]
        == 200
    )
    status, body = server.json(
        "POST", "/v1/feedback", json.dumps({"request_id": "nope", "label": "COVID"}), "application/json"
    )
    assert (status, body["error"]["code"]) == (404, "unknown_request_id")
    status, body = server.json(
        "POST", "/v1/feedback", json.dumps({"request_id": request_id, "label": "flu"}), "application/json"
    )
    assert (status, body["error"]["code"]) == (422, "unknown_label")
    status, body = server.json("POST", "/v1/feedback", b"{}", "application/json")
    assert (status, body["error"]["code"]) == (400, "invalid_json")
    with sqlite3.connect(server.log_path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        row = db.execute(
            "SELECT label, probability, model_version, features, image_path, true_label "
            "FROM labelled_predictions WHERE request_id = ?",
            (request_id,),
        ).fetchone()
    label, probability, version, features, image_path, truth = row
    assert (label, truth, version) == (answer["label"], "COVID", answer["model"]["version"])
    assert abs(probability - answer["probability"]) < 1e-12
    features = json.loads(features)
    assert (features["width"], features["height"]) == training_slice().size
    assert 0 <= features["entropy"] <= 8
    assert open(image_path, "rb").read() == png()


def test_metrics_count_requests_predictions_and_the_queue(server):
    server.json("POST", "/v1/predict", png(), "image/png")
    text = server.call("GET", "/metrics", key=None)[2].decode()
    assert 'covidct_http_requests_total{route="/v1/predict",status="200"}' in text
    assert 'covidct_http_requests_total{route="/v1/predict",status="401"}' in text
    assert "covidct_http_request_duration_seconds_bucket" in text
    assert "covidct_predictions_total{label=" in text
    assert "covidct_prediction_probability_count" in text
    assert "covidct_inference_queue_depth" in text


def test_bounded_load_has_no_errors(server):
    """200 requests from 8 threads: every one answered 200 (within the client's timeout) with the
    verdict the image gets alone. How fast is a benchmark's figure, not a test's (a latency bound
    here would pass or fail with the machine's load): bench/serve_bench.sh, docs/BENCHMARKS.md."""
    image = png()
    status, alone = server.json("POST", "/v1/predict", image, "image/png")
    assert status == 200, alone
    answers = []
    lock = threading.Lock()

    def worker():
        for _ in range(25):
            status, _, body = server.call("POST", "/v1/predict", image, {"Content-Type": "image/png"})
            with lock:
                answers.append((status, body))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [status for status, _ in answers] == [200] * 200
    assert {json.loads(body)["label"] for _, body in answers} == {alone["label"]}


def requests_in_flight(client):
    """`covidct_http_requests_in_flight` of /metrics: requests holding a concurrency slot."""
    text = client.call("GET", "/metrics", key=None)[2].decode()
    found = re.search(r"^covidct_http_requests_in_flight (\d+)$", text, re.M)
    assert found, text
    return int(found.group(1))


def test_overload_timeout_and_graceful_shutdown(covidct_bin, model_package, tmp_path):
    """One slot, held by a request whose body has only half arrived: the slot is taken before
    the body is read, so it stays taken until the test sends the rest (/metrics shows it; no
    timing decides anything). A second request is refused with 503 + Retry-After; SIGTERM then
    lets the first finish before the process exits 0."""
    s = Server(covidct_bin, model_package, tmp_path, "--max-concurrency", 1)
    body = png()
    first = http.client.HTTPConnection(s.host, s.port, timeout=30)
    first.putrequest("POST", "/v1/predict")
    for name, value in (("X-API-Key", API_KEY), ("Content-Type", "image/png"), ("Content-Length", len(body))):
        first.putheader(name, str(value))
    first.endheaders()
    first.send(body[: len(body) // 2])
    # /metrics takes no slot. The deadline only stops a hang; it decides nothing.
    deadline = time.monotonic() + 60
    while requests_in_flight(s) == 0:
        assert time.monotonic() < deadline, "the first request never took the slot"
        time.sleep(0.01)
    status, headers, answer = s.call("POST", "/v1/predict", png(), {"Content-Type": "image/png"})
    assert status == 503 and headers["retry-after"] == "1"
    assert json.loads(answer)["error"]["code"] == "overloaded"
    s.process.send_signal(signal.SIGTERM)
    first.send(body[len(body) // 2 :])
    response = first.getresponse()
    assert response.status == 200, response.read()[:300]
    first.close()
    assert s.process.wait(timeout=30) == 0
    s.stop()

    # A lone image waits a second (the most allowed) for company: a thousand times the timeout.
    t = Server(
        covidct_bin, model_package, tmp_path, "--request-timeout-ms", 1, "--batch-size", 64, "--batch-wait-ms", 1000
    )
    status, answer = t.json("POST", "/v1/predict", png(), "image/png")
    assert (status, answer["error"]["code"]) == (503, "timeout")
    t.stop()


def test_cors_is_off_by_default_and_configurable(server, covidct_bin, model_package, tmp_path):
    _, headers, _ = server.call("GET", "/healthz", headers={"Origin": "https://viewer.example"})
    assert "access-control-allow-origin" not in headers
    s = Server(covidct_bin, model_package, tmp_path, env={"COVIDCT_CORS_ORIGINS": "https://viewer.example"})
    _, headers, _ = s.call("GET", "/healthz", headers={"Origin": "https://viewer.example"})
    assert headers["access-control-allow-origin"] == "https://viewer.example"
    s.stop()


def test_startup_refusals_name_the_problem(run, model_package, tmp_path):
    result = run("serve", "--model", model_package, "--bind", "127.0.0.1:0", "--prediction-log", tmp_path / "p.sqlite")
    assert result.returncode != 0 and "api_keys" in result.stderr
    result = run(
        "serve",
        "--model",
        "models:/covidct@champion",
        "--no-auth",
        "--bind",
        "127.0.0.1:0",
        "--prediction-log",
        tmp_path / "p.sqlite",
    )
    assert result.returncode != 0 and "tracking server" in result.stderr
    result = run(
        "serve",
        "--model",
        tmp_path / "missing.ctpkg",
        "--no-auth",
        "--bind",
        "127.0.0.1:0",
        "--prediction-log",
        tmp_path / "p.sqlite",
    )
    assert result.returncode != 0 and "missing.ctpkg" in result.stderr
    result = run(
        "serve",
        "--model",
        model_package,
        "--no-auth",
        "--max-batch-images",
        0,
        "--prediction-log",
        tmp_path / "p.sqlite",
    )
    assert result.returncode != 0 and "max_batch_images" in result.stderr
