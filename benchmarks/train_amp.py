"""Training throughput of ``cnnzoo train --amp`` (bfloat16 autocast) against fp32, on the CPU.

For each model, three contenders train the same network from the same weights on one fixed
random batch: fp32 (contiguous), bf16 autocast (contiguous), and bf16 autocast with weights and
inputs channels_last. One step is the trainer's: forward under ``torch.autocast`` (when on),
cross-entropy, backward, AdamW step (no gradient scaling: bf16 keeps fp32's exponent range).
Contenders are timed in interleaved windows whose order rotates every round, after one untimed
warm-up step each; figures are medians of the windows' steps/s, and ratios are between medians
of the same run (docs/benchmarks.md).

    .venv/bin/python benchmarks/train_amp.py                      # ~10 minutes on 2 cores
    .venv/bin/python benchmarks/train_amp.py --windows 3 --steps 1 --models resnet18_cifar
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

import cnnzoo
from cnnzoo.environment import environment
from cnnzoo.inference.backends import bf16_capable

ROOT = Path(__file__).resolve().parents[1]
# (model, batch, side): the shapes (resnet18_cifar at CIFAR's 32 px, the ImageNet
# networks at 96 px, small enough for a 2-core machine).
CASES = {
    "resnet18_cifar": (128, 32),
    "resnet50": (32, 96),
    "mobilenet_v2": (32, 96),
}
CONTENDERS = (("fp32", False, False), ("amp", True, False), ("amp_channels_last", True, True))


class Contender:
    def __init__(self, name: str, state: dict, model_name: str, amp: bool, cl: bool) -> None:
        model = cnnzoo.create_model(model_name, num_classes=10)
        model.load_state_dict(state)
        if cl:
            model = model.to(memory_format=torch.channels_last)
        self.name, self.model, self.amp, self.cl = name, model.train(), amp, cl
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        self.rates: list[float] = []  # steps/s per window

    def step(self, images: torch.Tensor, target: torch.Tensor) -> float:
        if self.cl:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.amp):
            loss = F.cross_entropy(self.model(images), target)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.item()


def bench_model(name: str, batch: int, side: int, windows: int, steps: int) -> dict:
    torch.manual_seed(0)
    state = cnnzoo.create_model(name, num_classes=10).state_dict()
    contenders = [Contender(n, state, name, amp, cl) for n, amp, cl in CONTENDERS]
    images = torch.randn(batch, 3, side, side)
    target = torch.randint(0, 10, (batch,))
    for c in contenders:
        c.step(images, target)  # warm-up: oneDNN primitives, allocator
    for window in range(windows):
        shift = window % len(contenders)
        for c in contenders[shift:] + contenders[:shift]:
            start = time.perf_counter()
            for _ in range(steps):
                c.step(images, target)
            c.rates.append(steps / (time.perf_counter() - start))
        print(f"  {name}: window {window + 1}/{windows}", flush=True)
    base = statistics.median(contenders[0].rates)
    rows = []
    for c in contenders:
        median = statistics.median(c.rates)
        rows.append({
            "contender": c.name,
            "steps_per_s": median,
            "images_per_s": median * batch,
            "windows_steps_per_s": c.rates,
            "ratio_vs_fp32": median / base,
        })  # fmt: skip
    return {"model": name, "batch": batch, "side": side, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(CASES), help="comma-separated")
    parser.add_argument("--windows", type=int, default=5, help="timed windows per contender")
    parser.add_argument("--steps", type=int, default=3, help="training steps per window")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "train_amp.json"))
    args = parser.parse_args()
    if not bf16_capable():
        raise SystemExit("this CPU has no bfloat16 instructions (avx512_bf16, AMX)")
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    results = []
    for name in args.models.split(","):
        batch, side = CASES[name]
        results.append(bench_model(name, batch, side, args.windows, args.steps))
    print(f"\n{'model':<16} {'shape':>14} {'contender':<18} {'steps/s':>8} {'vs fp32':>8}")
    for r in results:
        for row in r["rows"]:
            shape = f"{r['batch']}×3×{r['side']}²"
            print(f"{r['model']:<16} {shape:>14} {row['contender']:<18} "
                  f"{row['steps_per_s']:>8.3f} {row['ratio_vs_fp32']:>7.2f}×")  # fmt: skip
    result = {
        "benchmark": "train_amp",
        "step": "forward (autocast bf16 when on) + cross-entropy + backward + AdamW, CPU",
        "windows": args.windows,
        "steps_per_window": args.steps,
        "results": results,
        **environment(),  # the machine (CPU, cores, threads) and the library versions
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "command": shlex.join([sys.executable, *sys.argv]),
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
