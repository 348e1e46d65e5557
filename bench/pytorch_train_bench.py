#!/usr/bin/env python3
"""PyTorch peer of `covidct bench train` (CPU, or CUDA with --device): training images/s.

What it measures
----------------
For every architecture x input size: forward + cross-entropy loss + backward + AdamW
update (lr 1e-4), on random normal input of shape [batch, in_channels, size, size] with
labels ``i % 2`` and a 2-class head, the model in train() mode (BatchNorm batch statistics,
dropout active). ``--warmup-steps`` steps run untimed, then ``--steps`` steps are timed with
``time.perf_counter``. The figures are images/s = batch * steps / seconds and s/step, in the
same table (or JSON) layout as the Rust command

    covidct bench train --architectures resnet18,efficientnet-lite0 --sizes 224,128 \
        --batch-size 16 --steps 5 --warmup-steps 2 --in-channels 3

so the two can be compared side by side (see docs/BENCHMARKS.md). Each step draws a fresh
random input, as the Rust command does.

Models: ResNet-18/34/50/152 from torchvision (``weights=None, num_classes=2``; with one input
channel conv1 is replaced by a 1-channel conv), and ``resnet152-c4``, ResNet-152 cut after
layer3 with a 1024-feature head, as covidct's default backbone. torchvision has no EfficientNet-Lite0, so it
is written out below in plain PyTorch exactly as crates/model/src/efficientnet.rs: ReLU6, no
squeeze-excitation, stem 32 / head 1280 not rescaled, BatchNorm eps 1e-3 momentum 0.01,
bias-free convolutions with TensorFlow "same" padding (output = ceil(in / stride), the odd
pixel at the bottom/right), dropout 0.2 before the classifier.

Install (CPU benchmark only; the PyPI wheels pull the CUDA libraries too, ~5 GB; this
machine can only reach PyPI, not download.pytorch.org):

    python3 -m venv /tmp/torch-venv
    /tmp/torch-venv/bin/pip install -r bench/requirements-torch.txt
    # i.e. torch==2.15.0 torchvision==0.29.2

Run the full comparison (from the repository root):

    /tmp/torch-venv/bin/python bench/pytorch_train_bench.py \
        --architectures resnet18,efficientnet-lite0 --sizes 224,128 \
        --batch-size 16 --steps 5 --warmup-steps 2 --in-channels 3

This is a benchmark peer only: it is not part of the covidct product, its build or its CI,
and nothing runs it automatically.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

# EfficientNet-Lite0 MBConv blocks: (input, expanded, kernel, stride, output).
LITE0_BLOCKS = [
    (32, 32, 3, 1, 16),
    (16, 96, 3, 2, 24),
    (24, 144, 3, 1, 24),
    (24, 144, 5, 2, 40),
    (40, 240, 5, 1, 40),
    (40, 240, 3, 2, 80),
    (80, 480, 3, 1, 80),
    (80, 480, 3, 1, 80),
    (80, 480, 5, 1, 112),
    (112, 672, 5, 1, 112),
    (112, 672, 5, 1, 112),
    (112, 672, 5, 2, 192),
    (192, 1152, 5, 1, 192),
    (192, 1152, 5, 1, 192),
    (192, 1152, 5, 1, 192),
    (192, 1152, 3, 1, 320),
]
BN_EPS = 1e-3
BN_MOMENTUM = 0.01  # TensorFlow's decay 0.99 in PyTorch's convention.
STEM = 32
HEAD = 1280
DROPOUT = 0.2

# learnable weights + biases of the ImageNet (1000-class, RGB) EfficientNet-Lite0.
LITE0_IMAGENET_PARAMS = 4_652_008

ARCHITECTURES = ("resnet18", "resnet34", "resnet50", "resnet152", "resnet152-c4", "efficientnet-lite0")


def tf_same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after) padding of TensorFlow SAME: output = ceil(size / stride)."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class Conv2dSame(nn.Conv2d):
    """Bias-free convolution with TensorFlow "same" padding.

    Stride 1 with an odd kernel pads k // 2 on every side, which is exactly SAME, so the
    convolution pads by itself. Otherwise the (possibly asymmetric) padding is computed from
    the input's height and width and applied with F.pad, the extra pixel bottom/right.
    """

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1):
        symmetric = stride == 1 and kernel % 2 == 1
        super().__init__(
            c_in,
            c_out,
            kernel,
            stride=stride,
            padding=kernel // 2 if symmetric else 0,
            groups=groups,
            bias=False,
        )
        self.explicit_pad = not symmetric

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.explicit_pad:
            k, s = self.kernel_size[0], self.stride[0]
            top, bottom = tf_same_padding(x.shape[-2], k, s)
            left, right = tf_same_padding(x.shape[-1], k, s)
            if top or bottom or left or right:
                x = F.pad(x, (left, right, top, bottom))
        return super().forward(x)


def bn(features: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(features, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConv(nn.Module):
    """Optional 1x1 expansion, depthwise kxk (carrying the stride), linear 1x1 projection."""

    def __init__(self, c_in: int, c_exp: int, kernel: int, stride: int, c_out: int):
        super().__init__()
        if c_exp != c_in:
            self.expand = nn.Sequential(Conv2dSame(c_in, c_exp, 1), bn(c_exp), nn.ReLU6())
        else:
            self.expand = nn.Identity()
        self.depthwise = nn.Sequential(Conv2dSame(c_exp, c_exp, kernel, stride, groups=c_exp), bn(c_exp), nn.ReLU6())
        self.project = nn.Sequential(Conv2dSame(c_exp, c_out, 1), bn(c_out))
        self.skip = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.depthwise(self.expand(x)))
        return y + x if self.skip else y


class EfficientNetLite0(nn.Module):
    def __init__(self, in_channels: int = 3, num_classes: int = 2, dropout: float = DROPOUT):
        super().__init__()
        self.stem = nn.Sequential(Conv2dSame(in_channels, STEM, 3, 2), bn(STEM), nn.ReLU6())
        self.blocks = nn.Sequential(*(MBConv(*spec) for spec in LITE0_BLOCKS))
        self.head = nn.Sequential(Conv2dSame(LITE0_BLOCKS[-1][4], HEAD, 1), bn(HEAD), nn.ReLU6())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(HEAD, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.blocks(self.stem(x)))
        return self.fc(self.dropout(torch.flatten(self.pool(x), 1)))


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def expected_lite0_params(in_channels: int, num_classes: int) -> int:
    """The ImageNet count with the stem's input channels and the classifier swapped."""
    imagenet_stem = 3 * 3 * 3 * STEM
    imagenet_fc = HEAD * 1000 + 1000
    return (
        LITE0_IMAGENET_PARAMS
        - imagenet_stem
        - imagenet_fc
        + 3 * 3 * in_channels * STEM
        + HEAD * num_classes
        + num_classes
    )


def build(architecture: str, in_channels: int, num_classes: int = 2) -> nn.Module:
    if architecture == "efficientnet-lite0":
        model = EfficientNetLite0(in_channels, num_classes)
        expected = expected_lite0_params(in_channels, num_classes)
        actual = count_params(model)
        assert actual == expected, f"EfficientNet-Lite0 has {actual} parameters, expected {expected}"
        # sanity: the layout really is the ImageNet one.
        assert count_params(EfficientNetLite0(3, 1000)) == LITE0_IMAGENET_PARAMS
        return model
    import torchvision

    # resnet152-c4: covidct's ResNet-152 cut after layer3 (1024 pooled features into the head).
    truncated = architecture == "resnet152-c4"
    constructor = getattr(torchvision.models, "resnet152" if truncated else architecture)
    model = constructor(weights=None, num_classes=num_classes)
    if truncated:
        model.layer4 = nn.Identity()
        model.fc = nn.Linear(1024, num_classes)
    if in_channels != 3:
        old = model.conv1
        model.conv1 = nn.Conv2d(
            in_channels,
            old.out_channels,
            kernel_size=old.kernel_size,
            stride=old.stride,
            padding=old.padding,
            bias=False,
        )
    return model


def synchronize(device: torch.device) -> None:
    """Waits for the device's queued work, so that wall-clock timings cover it (CUDA is async)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_one(architecture, size, batch_size, warmup_steps, steps, in_channels, device):
    torch.manual_seed(0)
    model = build(architecture, in_channels).to(device)
    params = count_params(model)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    labels = (torch.arange(batch_size, dtype=torch.long) % 2).to(device)

    def step():
        x = torch.randn(batch_size, in_channels, size, size, device=device)
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), labels)
        loss.backward()
        optimizer.step()

    for _ in range(warmup_steps):
        step()
    synchronize(device)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    seconds = time.perf_counter() - started
    return {
        "architecture": architecture,
        "size": size,
        "batch_size": batch_size,
        "steps": steps,
        "images_per_second": batch_size * steps / seconds if seconds > 0 else float("inf"),
        "seconds_per_step": seconds / max(steps, 1),
        "parameters": params,
    }


def comma_list(kind):
    def parse(text):
        return [kind(item.strip()) for item in text.split(",") if item.strip()]

    return parse


def architecture_list(text):
    names = comma_list(str)(text)
    for name in names:
        if name not in ARCHITECTURES:
            raise argparse.ArgumentTypeError(f"unknown architecture {name!r} (one of {', '.join(ARCHITECTURES)})")
    return names


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description="PyTorch CPU peer of `covidct bench train`: forward + backward + AdamW "
        "update images/s per architecture and input size, on random input."
    )
    parser.add_argument(
        "--architectures",
        type=architecture_list,
        default=["resnet18", "efficientnet-lite0"],
        help="comma-separated (default: resnet18,efficientnet-lite0)",
    )
    parser.add_argument(
        "--sizes", type=comma_list(int), default=[224, 128], help="comma-separated input sides (default: 224,128)"
    )
    parser.add_argument("--batch-size", type=int, default=16, help="images per step (16)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps (5)")
    parser.add_argument("--warmup-steps", type=int, default=2, help="untimed steps first (2)")
    parser.add_argument(
        "--in-channels", type=int, default=3, help="input channels (3 = as ImageNet; 1 = grey, as covidct trains)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's default)")
    parser.add_argument(
        "--device", default="cpu", help="torch device: cpu (default) or cuda[:N], as covidct's --device"
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    device = torch.device(args.device)

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()

    parameters = {a: count_params(build(a, args.in_channels)) for a in args.architectures}
    if not args.json:
        print(f"# torch {torch.__version__}, {device}, {threads} threads, {args.in_channels} input channels, 2 classes")
        print("# parameters: " + "; ".join(f"{a} {n:,}" for a, n in parameters.items()))
        print("architecture        size  batch  steps  images/s  s/step")
    results = []
    for architecture in args.architectures:
        for size in args.sizes:
            r = bench_one(architecture, size, args.batch_size, args.warmup_steps, args.steps, args.in_channels, device)
            results.append(r)
            if not args.json:
                print(
                    f"{r['architecture']:<18} {r['size']:>5} {r['batch_size']:>6} "
                    f"{r['steps']:>6} {r['images_per_second']:>9.2f} "
                    f"{r['seconds_per_step']:>7.3f}",
                    flush=True,
                )
    if args.json:
        print(
            json.dumps(
                {
                    "torch": torch.__version__,
                    "device": str(device),
                    "threads": threads,
                    "in_channels": args.in_channels,
                    "warmup_steps": args.warmup_steps,
                    "parameters": parameters,
                    "results": results,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
