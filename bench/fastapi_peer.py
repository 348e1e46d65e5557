#!/usr/bin/env python3
"""FastAPI + PyTorch peer of `covidct serve`: the same single-image prediction endpoint, the
same architecture and input size, for a load generator to measure side by side.

What it serves
--------------
``POST /v1/predict`` with the image as the raw body (PNG or JPEG): Pillow decodes it to 8-bit
grey, resizes it to SIZE x SIZE (bilinear), normalises with mean/std 0.5, runs the network in
``eval()`` mode under ``torch.inference_mode()`` in FastAPI's thread pool (as a typical
deployment does), applies softmax and a threshold, and answers JSON with label, probability,
threshold, model name/version, request id and timing. No authentication, no prediction log,
no micro-batching: less work per request than covidct does.

The networks come from bench/pytorch_train_bench.py (torchvision ResNet-18 with a 1-channel
stem; EfficientNet-Lite0 written out as crates/model/src/efficientnet.rs), randomly
initialised: inference costs the same whatever the weights.

Install (benchmark only, never in CI; ~5.4 GB with the CUDA libraries):

    python3 -m venv /tmp/torch-venv
    /tmp/torch-venv/bin/pip install -r bench/requirements-torch.txt -r bench/requirements-serve-peer.txt
    /tmp/torch-venv/bin/python bench/fastapi_peer.py --architecture efficientnet-lite0 --size 224 --port 8091
"""

import argparse
import io
import sys
import time
import uuid

import numpy as np
import torch
import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from PIL import Image

# bench/ is the script's folder, so Python finds its sibling module.
from pytorch_train_bench import build


def make_app(architecture: str, size: int, threshold: float) -> FastAPI:
    model = build(architecture, in_channels=1, num_classes=2).eval()
    with torch.inference_mode():  # warm-up
        model(torch.zeros(1, 1, size, size))
    app = FastAPI(title="covidct FastAPI peer")

    def infer(data: bytes) -> dict:
        started = time.perf_counter()
        try:
            image = Image.open(io.BytesIO(data)).convert("L").resize((size, size), Image.BILINEAR)
        except Exception as error:
            raise HTTPException(status_code=422, detail=f"invalid image: {error}") from error
        x = (np.asarray(image, dtype=np.float32) / 255.0 - 0.5) / 0.5
        decoded = time.perf_counter()
        with torch.inference_mode():
            logits = model(torch.from_numpy(x)[None, None])
        probability = float(torch.softmax(logits, dim=1)[0, 0])
        done = time.perf_counter()
        return {
            "request_id": str(uuid.uuid4()),
            "label": "COVID" if probability >= threshold else "non-COVID",
            "probability": probability,
            "threshold": threshold,
            "model": {"name": f"peer-{architecture}", "version": "random"},
            "timing": {"decode_ms": (decoded - started) * 1e3, "inference_ms": (done - decoded) * 1e3},
        }

    @app.post("/v1/predict")
    async def predict(request: Request) -> dict:
        return await run_in_threadpool(infer, await request.body())

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "alive"}

    return app


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--architecture", default="efficientnet-lite0", choices=["resnet18", "efficientnet-lite0"])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--port", type=int, default=8091)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    app = make_app(args.architecture, args.size, args.threshold)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
