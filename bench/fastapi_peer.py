#!/usr/bin/env python3
"""FastAPI peer of `covidct serve` on PyTorch or ONNX Runtime: the same single-image prediction
endpoint, the same architecture and input size, for a load generator to measure side by side.

What it serves
--------------
``POST /v1/predict`` with the image as the raw body (PNG or JPEG): Pillow decodes it to 8-bit
grey, resizes it to SIZE x SIZE (bilinear), normalises with mean/std 0.5, runs the network in
FastAPI's thread pool (as a typical deployment does), applies softmax and a threshold, and
answers JSON with label, probability, threshold, model name/version, request id and timing. No
authentication, no prediction log, no micro-batching: less work per request than covidct does.

Runtimes (``--runtime``): ``torch``, the network in ``eval()`` mode under
``torch.inference_mode()``; ``onnxruntime``, the same network exported once with
``torch.onnx.export`` (opset 17) and run by an ONNX Runtime CPU session with every graph
optimisation (BatchNorm folded, operators fused). ``--threads`` sets torch's intra-op threads or
the session's; ``--workers`` runs that many uvicorn worker processes, each with its own copy of
the network, as a deployment on several cores does.

The networks come from bench/pytorch_train_bench.py (torchvision ResNet-18 and ResNet-152 cut
after layer3 with a 1-channel stem; EfficientNet-Lite0 written out as
crates/model/src/efficientnet.rs), randomly initialised: inference costs the same whatever the
weights.

Install (benchmark only, never in CI; ~5.4 GB with the CUDA libraries):

    python3 -m venv /tmp/torch-venv
    /tmp/torch-venv/bin/pip install -r bench/requirements-torch.txt -r bench/requirements-serve-peer.txt
    /tmp/torch-venv/bin/python bench/fastapi_peer.py --architecture efficientnet-lite0 --size 224 --port 8091 \
        --runtime onnxruntime --workers 2 --threads 1
"""

import argparse
import io
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import torch
import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from PIL import Image

# bench/ is the script's folder, so Python finds its sibling module.
from pytorch_train_bench import build


def load_runtime(architecture: str, size: int, runtime: str, threads: int | None):
    """A function from a `[1, 1, size, size]` float32 array to the logits `[1, 2]`."""
    if threads:
        torch.set_num_threads(threads)
    model = build(architecture, in_channels=1, num_classes=2).eval()
    example = torch.zeros(1, 1, size, size)
    if runtime == "torch":

        def run(x: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return model(torch.from_numpy(x)).numpy()

    else:
        import onnxruntime

        path = Path(tempfile.mkdtemp(prefix="covidct-peer-")) / f"{architecture}-{size}.onnx"
        torch.onnx.export(
            model, (example,), str(path), input_names=["x"], output_names=["logits"], opset_version=17, dynamo=False
        )
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or 0
        options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

        def run(x: np.ndarray) -> np.ndarray:
            return session.run(None, {"x": x})[0]

    run(example.numpy())  # warm-up
    return run


def make_app(
    architecture: str, size: int, threshold: float, runtime: str = "torch", threads: int | None = None
) -> FastAPI:
    run = load_runtime(architecture, size, runtime, threads)
    app = FastAPI(title="covidct FastAPI peer")

    def infer(data: bytes) -> dict:
        started = time.perf_counter()
        try:
            image = Image.open(io.BytesIO(data)).convert("L").resize((size, size), Image.BILINEAR)
        except Exception as error:
            raise HTTPException(status_code=422, detail=f"invalid image: {error}") from error
        x = (np.asarray(image, dtype=np.float32) / 255.0 - 0.5) / 0.5
        decoded = time.perf_counter()
        logits = run(np.ascontiguousarray(x[None, None]))[0]
        shifted = np.exp(logits - logits.max())
        probability = float(shifted[0] / shifted.sum())
        done = time.perf_counter()
        return {
            "request_id": str(uuid.uuid4()),
            "label": "COVID" if probability >= threshold else "non-COVID",
            "probability": probability,
            "threshold": threshold,
            "model": {"name": f"peer-{architecture}-{runtime}", "version": "random"},
            "timing": {"decode_ms": (decoded - started) * 1e3, "inference_ms": (done - decoded) * 1e3},
        }

    @app.post("/v1/predict")
    async def predict(request: Request) -> dict:
        return await run_in_threadpool(infer, await request.body())

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "alive"}

    return app


def app_from_env() -> FastAPI:
    """The app of one uvicorn worker process, configured by main() through the environment."""
    threads = int(os.environ["PEER_THREADS"]) or None
    return make_app(
        os.environ["PEER_ARCHITECTURE"],
        int(os.environ["PEER_SIZE"]),
        float(os.environ["PEER_THRESHOLD"]),
        os.environ["PEER_RUNTIME"],
        threads,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--architecture", default="efficientnet-lite0", choices=["resnet18", "resnet152-c4", "efficientnet-lite0"]
    )
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--port", type=int, default=8091)
    parser.add_argument("--runtime", default="torch", choices=["torch", "onnxruntime"])
    parser.add_argument(
        "--threads", type=int, default=0, help="intra-op threads per worker (default 0: the runtime's own choice)"
    )
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    args = parser.parse_args()
    os.environ.update(
        PEER_ARCHITECTURE=args.architecture,
        PEER_SIZE=str(args.size),
        PEER_THRESHOLD=str(args.threshold),
        PEER_RUNTIME=args.runtime,
        PEER_THREADS=str(args.threads),
    )
    # An import string, so that every worker process builds its own app.
    uvicorn.run(
        "fastapi_peer:app_from_env",
        factory=True,
        workers=args.workers,
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
