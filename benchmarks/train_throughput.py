"""Training throughput (images/s): our resnet18_cifar vs torchvision's resnet18, same stem.

torchvision's ``resnet18(num_classes=10)`` with ``conv1`` replaced by a 3×3 stride-1 convolution
and ``maxpool`` by ``Identity`` is the same network as ours (same parameter count, checked). One
training step = forward, cross-entropy, backward, SGD step (momentum 0.9) on a fixed random batch.
Contenders are timed in interleaved windows (each window a few steps; the order rotates every
round), after one untimed warm-up step each; the figures are medians over the windows, and the
ratios are between medians of the same run. ``torch.compile`` is timed apart: its first step
(compilation included) is reported as compile time and not counted in the windows.

    .venv/bin/python benchmarks/train_throughput.py                  # ~3-4 minutes on 2 cores
    .venv/bin/python benchmarks/train_throughput.py --no-compile --windows 3
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import cnnzoo
from cnnzoo.environment import environment

ROOT = Path(__file__).resolve().parents[1]


def torchvision_resnet18_cifar() -> nn.Module:
    model = torchvision.models.resnet18(num_classes=10)
    model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


class Contender:
    """A model with its optimizer, memory format and (optionally) compiled step."""

    def __init__(self, name: str, model: nn.Module, *, channels_last: bool, compile: bool) -> None:
        self.name = name
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model.train()
        self.params = sum(p.numel() for p in model.parameters())
        self.channels_last = channels_last
        self.forward = torch.compile(model) if compile else model
        self.optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        self.windows: list[float] = []  # images/s per timed window
        self.first_step_s = 0.0

    def step(self, images: torch.Tensor, target: torch.Tensor) -> None:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        loss = F.cross_entropy(self.forward(images), target)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--windows", type=int, default=5, help="timed windows per contender")
    parser.add_argument("--steps", type=int, default=2, help="training steps per window")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile one")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    load_before = os.getloadavg()

    specs = [
        ("cnnzoo", lambda: cnnzoo.create_model("resnet18_cifar", num_classes=10), False, False),
        ("torchvision", torchvision_resnet18_cifar, False, False),
        ("cnnzoo channels_last", lambda: cnnzoo.create_model("resnet18_cifar", num_classes=10),
         True, False),
    ]  # fmt: skip
    if not args.no_compile:
        specs.append(
            ("cnnzoo compile", lambda: cnnzoo.create_model("resnet18_cifar", num_classes=10),
             False, True)
        )  # fmt: skip
    contenders = [Contender(n, make(), channels_last=cl, compile=c) for n, make, cl, c in specs]
    if len({c.params for c in contenders}) != 1:
        raise SystemExit(f"parameter counts differ: {[(c.name, c.params) for c in contenders]}")

    images = torch.randn(args.batch_size, 3, 32, 32)
    target = torch.randint(0, 10, (args.batch_size,))
    for c in contenders:  # warm-up (and compilation), not timed in the windows
        start = time.perf_counter()
        c.step(images, target)
        c.first_step_s = time.perf_counter() - start
        print(f"warm-up {c.name}: first step {c.first_step_s:.2f} s", flush=True)

    for window in range(args.windows):
        shift = window % len(contenders)
        for c in contenders[shift:] + contenders[:shift]:  # rotate the order every round
            start = time.perf_counter()
            for _ in range(args.steps):
                c.step(images, target)
            c.windows.append(args.steps * args.batch_size / (time.perf_counter() - start))
        print(f"window {window + 1}/{args.windows} done", flush=True)

    base = statistics.median(contenders[0].windows)
    rows = []
    print(f"\n{'contender':<22} {'img/s (median)':>14} {'min':>8} {'max':>8} {'vs cnnzoo':>10}")
    for c in contenders:
        median = statistics.median(c.windows)
        rows.append({
            "name": c.name,
            "throughput_img_s": median,
            "windows_img_s": c.windows,
            "ratio_vs_cnnzoo_eager": median / base,
            "first_step_s": c.first_step_s,
        })  # fmt: skip
        print(f"{c.name:<22} {median:>14.1f} {min(c.windows):>8.1f} {max(c.windows):>8.1f} "
              f"{median / base:>9.3f}×")  # fmt: skip
    theirs = statistics.median(contenders[1].windows)
    print(f"\nours / torchvision: {base / theirs:.3f} (target ≥ 0.95)")
    if not args.no_compile:
        print(f"compile: first step {contenders[-1].first_step_s:.1f} s (compilation included)")

    result = {
        "benchmark": "train_throughput",
        "model": "resnet18_cifar vs torchvision resnet18 (conv1 3×3 s1, maxpool Identity)",
        "input": [args.batch_size, 3, 32, 32],
        "step": "forward + cross-entropy + backward + SGD(momentum 0.9), fp32",
        "windows": args.windows,
        "steps_per_window": args.steps,
        "params": contenders[0].params,
        "rows": rows,
        "ratio_ours_vs_torchvision": base / theirs,
        **environment(),  # the machine (CPU, cores, threads) and the library versions
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")},
        "command": shlex.join([sys.executable, *sys.argv]),
    }
    out = ROOT / "benchmarks" / "results" / "train_throughput.json"
    out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
