"""Bounded load against a deployed covidct API, for rolling updates: THREADS workers send
POST /v1/predict (a small PNG) and GET /readyz, each on a new connection, until --requests are
sent, --duration seconds pass or --stop-file appears, whichever is first. Prints counts per
status and every failure; exits 1 on any failure (a non-200 answer or a connection error).

    python tests/deployed/load.py --url http://127.0.0.1:8080 --key KEY [--threads 4]
        [--requests 20000] [--duration 300] [--stop-file PATH] [--json OUT]

Only loopback or the project's own test hosts are valid targets."""

import argparse
import collections
import http.client
import json
import os
import runpy
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path


def png() -> bytes:
    """The first COVID slice of the deployed tiny model's training data (tests/conftest.py:
    shapes_dataset, same seed): an image its out-of-distribution gate accepts."""
    shapes_dataset = runpy.run_path(str(Path(__file__).resolve().parent.parent / "conftest.py"))["shapes_dataset"]
    with tempfile.TemporaryDirectory() as tmp:
        root = shapes_dataset(Path(tmp) / "data")
        return (root / "COVID" / "COVID (1).png").read_bytes()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("COVIDCT_API_URL", "http://127.0.0.1:8080"))
    parser.add_argument("--key", default=os.environ.get("COVIDCT_API_KEY"))
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--requests", type=int, default=20000, help="most requests in all")
    parser.add_argument("--duration", type=float, default=300, help="most seconds")
    parser.add_argument("--stop-file", help="stop as soon as this file exists")
    parser.add_argument("--timeout", type=float, default=30)
    parser.add_argument("--json", help="write the summary here too")
    args = parser.parse_args()
    if not args.key:
        parser.error("--key or COVIDCT_API_KEY is required")
    url = urllib.parse.urlsplit(args.url)
    host, port = url.hostname, url.port or 80
    body = png()
    lock = threading.Lock()
    counts = collections.Counter()
    failures = []
    sent = 0
    started = time.monotonic()
    deadline = started + args.duration

    def take() -> bool:
        nonlocal sent
        with lock:
            if sent >= args.requests or time.monotonic() >= deadline:
                return False
            if args.stop_file and os.path.exists(args.stop_file):
                return False
            sent += 1
            return True

    def worker(index: int) -> None:
        n = 0
        while take():
            n += 1
            if n % 5 == 0:
                method, path, payload, headers = "GET", "/readyz", None, {}
            else:
                method, path = "POST", "/v1/predict"
                payload, headers = body, {"Content-Type": "image/png", "X-API-Key": args.key}
            t0 = time.monotonic()
            try:
                connection = http.client.HTTPConnection(host, port, timeout=args.timeout)
                connection.request(method, path, body=payload, headers=headers)
                response = connection.getresponse()
                data = response.read()
                connection.close()
                outcome = str(response.status)
                ok = response.status == 200
                detail = data[:200].decode("utf-8", "replace")
            except (OSError, http.client.HTTPException) as error:
                outcome, ok, detail = type(error).__name__, False, str(error)
            with lock:
                counts[f"{method} {path} {outcome}"] += 1
                if not ok:
                    failures.append(
                        {
                            "t": round(t0 - started, 3),
                            "request": f"{method} {path}",
                            "outcome": outcome,
                            "detail": detail,
                        }
                    )

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(args.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    total = sum(counts.values())
    summary = {
        "requests": total,
        "failed": len(failures),
        "seconds": round(elapsed, 1),
        "per_second": round(total / elapsed, 1) if elapsed else 0.0,
        "counts": dict(counts),
        "failures": failures[:50],
    }
    print(f"load: {total} requests in {elapsed:.1f} s ({summary['per_second']}/s), {len(failures)} failed")
    for key, value in sorted(counts.items()):
        print(f"  {key}: {value}")
    for failure in failures[:20]:
        print(f"  FAILED at {failure['t']} s: {failure['request']} -> {failure['outcome']} {failure['detail']}")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(summary, out, indent=2)
    return 1 if failures or total == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
