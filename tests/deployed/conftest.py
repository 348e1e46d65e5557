"""The `server` fixture of test_serve.py for a deployed service: COVIDCT_API_URL (e.g.
http://127.0.0.1:8080, the stack's published port) with COVIDCT_API_KEY and COVIDCT_ADMIN_KEY.
Its limits are serve's defaults unless COVIDCT_API_MAX_PIXELS, COVIDCT_API_MAX_BODY_BYTES or
COVIDCT_API_MAX_BATCH_IMAGES say what the deployment set. Without COVIDCT_API_URL nothing here
is collected (scripts/swarm-test.sh sets it)."""

import os
import time
import urllib.parse

import pytest

URL = os.environ.get("COVIDCT_API_URL")
if not URL:
    collect_ignore_glob = ["test_*.py"]


@pytest.fixture(scope="session")
def server():
    from test_serve import Client

    for name in ("COVIDCT_API_KEY", "COVIDCT_ADMIN_KEY"):
        if not os.environ.get(name):
            pytest.fail(f"{name} must be set with COVIDCT_API_URL")
    url = urllib.parse.urlsplit(URL)
    limits = {
        "max_pixels": int(os.environ.get("COVIDCT_API_MAX_PIXELS", 4096 * 4096)),
        "max_body_bytes": int(os.environ.get("COVIDCT_API_MAX_BODY_BYTES", 32 * 1024 * 1024)),
        "max_batch_images": int(os.environ.get("COVIDCT_API_MAX_BATCH_IMAGES", 16)),
    }
    client = Client(url.hostname, url.port or 80, limits)
    deadline = time.time() + 120
    while True:
        try:
            if client.call("GET", "/readyz", key=None)[0] == 200:
                return client
        except OSError:
            pass
        if time.time() > deadline:
            pytest.fail(f"{URL}/readyz did not answer 200 within 120 s")
        time.sleep(1)
