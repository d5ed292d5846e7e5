"""Where the default comparison's training time goes, per model: one training step of each run
of ``cnnzoo compare --dataset digits`` (batch 32, 1 channel, 10 classes, each model at its
comparison side) split into forward + backward and the optimizer step, in fp32 and with
``--amp`` (bfloat16 autocast), with AdamW as the trainer built it before (torch's per-tensor
loop, the CPU default) and as it builds it now (the fused kernel); and what one epoch's
checkpoint (model + AdamW state, saved and fsynced) costs.

Contenders of a model are timed in interleaved windows whose order rotates; medians of the
windows; ratios are within one run (docs/benchmarks.md).

    .venv/bin/python benchmarks/compare_steps.py                     # ~5 minutes on 2 cores
    .venv/bin/python benchmarks/compare_steps.py --models vgg11_bn --windows 3
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from cnnzoo import create_model
from cnnzoo.compare.plan import BATCH_SIZE, DEFAULT_MODELS, DEFAULT_SIDE, LR, LR_BY_FAMILY
from cnnzoo.environment import environment
from cnnzoo.models import get_spec
from cnnzoo.training.config import training_options
from cnnzoo.training.optim import build_optimizer

ROOT = Path(__file__).resolve().parents[1]
# (name, amp, fused AdamW)
CONTENDERS = (
    ("fp32_loop", False, False), ("fp32_fused", False, True), ("amp_loop", True, False),
    ("amp_fused", True, True),
)  # fmt: skip


def _optimizer(model: torch.nn.Module, lr: float, fused: bool) -> torch.optim.Optimizer:
    """The trainer's AdamW (its groups: no decay on norms and biases), with the fused kernel or
    with torch's CPU default, the per-tensor loop (what the trainer ran before)."""
    groups = [
        {k: v for k, v in g.items() if k not in ("fused", "foreach")}
        for g in build_optimizer(model, "adamw", lr=lr, weight_decay=5e-4).param_groups
    ]
    return torch.optim.AdamW(groups, lr=lr, fused=fused, foreach=False if not fused else None)


def bench_model(name: str, windows: int, steps: int) -> dict:
    spec = get_spec(name)
    side = spec.fit_side(DEFAULT_SIDE, **training_options(spec))
    lr = LR_BY_FAMILY.get(spec.family, LR)
    torch.manual_seed(0)
    first = create_model(name, num_classes=10, in_chans=1, **training_options(spec))
    state = first.state_dict()
    x = torch.randn(BATCH_SIZE, 1, side, side)
    y = torch.randint(10, (BATCH_SIZE,))
    runs = []
    for label, amp, fused in CONTENDERS:
        model = create_model(name, num_classes=10, in_chans=1, **training_options(spec))
        model.load_state_dict(state)
        runs.append({"label": label, "amp": amp, "model": model.train(),
                     "opt": _optimizer(model, lr, fused), "fb": [], "opt_s": []})  # fmt: skip

    def step(run: dict) -> tuple[float, float]:
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=run["amp"]):
            out = run["model"](x)
            logits = out[0] if isinstance(out, tuple) else out
            loss = F.cross_entropy(logits, y)
        run["opt"].zero_grad(set_to_none=True)
        loss.backward()
        t1 = time.perf_counter()
        run["opt"].step()
        return t1 - t0, time.perf_counter() - t1

    for run in runs:
        step(run)  # warm-up
    for window in range(windows):
        shift = window % len(runs)
        for run in runs[shift:] + runs[:shift]:
            fb = opt = 0.0
            for _ in range(steps):
                a, b = step(run)
                fb, opt = fb + a, opt + b
            run["fb"].append(fb / steps)
            run["opt_s"].append(opt / steps)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "last.pt"
        start = time.perf_counter()
        with open(path, "wb") as f:
            torch.save({"model": runs[0]["model"].state_dict(),
                        "optimizer": runs[0]["opt"].state_dict()}, f)  # fmt: skip
            f.flush()
            os.fsync(f.fileno())
        checkpoint_s, checkpoint_mb = time.perf_counter() - start, path.stat().st_size / 1e6
    base = statistics.median(runs[0]["fb"]) + statistics.median(runs[0]["opt_s"])
    rows = []
    for run in runs:
        fb, opt = statistics.median(run["fb"]), statistics.median(run["opt_s"])
        rows.append({"contender": run["label"], "forward_backward_s": fb, "optimizer_s": opt,
                     "step_s": fb + opt, "speedup_vs_fp32": base / (fb + opt)})  # fmt: skip
    return {"model": name, "side": side, "batch": BATCH_SIZE, "rows": rows,
            "checkpoint_s": checkpoint_s, "checkpoint_mb": checkpoint_mb}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated")
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--steps", type=int, default=2, help="training steps per window")
    parser.add_argument(
        "--out", default=str(ROOT / "benchmarks" / "results" / "compare_steps.json")
    )
    args = parser.parse_args()
    load_before = os.getloadavg()
    results = []
    print(f"{'model':<16} {'side':>4} {'contender':<10} {'fwd+bwd s':>9} {'optim s':>8} "
          f"{'vs fp32':>8}")  # fmt: skip
    for name in args.models.split(","):
        r = bench_model(name, args.windows, args.steps)
        results.append(r)
        for row in r["rows"]:
            print(f"{name:<16} {r['side']:>4} {row['contender']:<10} "
                  f"{row['forward_backward_s']:>9.3f} {row['optimizer_s']:>8.3f} "
                  f"{row['speedup_vs_fp32']:>7.2f}×", flush=True)  # fmt: skip
        print(f"{name:<16} checkpoint {r['checkpoint_mb']:.0f} MB in {r['checkpoint_s']:.2f} s")
    result = {
        "benchmark": "compare_steps",
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
