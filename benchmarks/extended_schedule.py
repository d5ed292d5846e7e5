"""The learning rate per step of a run extended with ``--resume --epochs``: a 2-epoch run of the
default recipe's schedule (AdamW, cosine, warm-up resolved to half an epoch) on the digits, then
resumed with ``--epochs 4``. Beside it, a run planned for 4 epochs from the start, and what the
trainer did before the resume rules (the 2-epoch schedule's state loaded and stepped past its
end: cosine is periodic, so the rate rose again).

Prints the table of docs/training.md and draws docs/images/resume_extended_lr.png.

    python benchmarks/extended_schedule.py [--out runs/extended] [--figure PATH]
"""

from __future__ import annotations

import argparse
import json
import shutil
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from cnnzoo.training import trainer
from cnnzoo.training.config import TrainConfig
from cnnzoo.training.optim import build_scheduler

RECIPE = dict(model="mlp", augment="none", batch_size=256, deterministic=True, quiet=True)
STEPS = 6  # 1,437 images at batch 256


def record_lrs(fit_call) -> list[float]:
    """The rate each training step used, read around the trainer's own loop."""
    lrs: list[float] = []
    real = trainer.train_one_epoch

    def spy(net, loader, optimizer, scheduler, **kwargs):
        inner = kwargs["on_step"]

        def on_step(n, loss):
            inner(n, loss)
            lrs.append(optimizer.param_groups[0]["lr"])

        lrs.append(optimizer.param_groups[0]["lr"])
        stats = real(net, loader, optimizer, scheduler, **{**kwargs, "on_step": on_step})
        lrs.pop()  # the rate after the epoch's last step: the next epoch's first, read again
        return stats

    trainer.train_one_epoch = spy
    try:
        fit_call()
    finally:
        trainer.train_one_epoch = real
    return lrs


def planned(epochs: int, warmup: float, lr: float, steps: int, *, past_end: int = 0) -> list[float]:
    """The rates of torch's schedulers for a run planned for ``epochs`` (stepped ``past_end``
    steps beyond it: what loading the old schedule's state did)."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched = build_scheduler(
        opt, "cosine", epochs=epochs, steps_per_epoch=steps, warmup_epochs=warmup
    )
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(epochs * steps + past_end):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/extended")
    parser.add_argument("--figure", default="docs/images/resume_extended_lr.png")
    args = parser.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    first = record_lrs(lambda: trainer.fit(TrainConfig(epochs=2, out=str(out), **RECIPE)))
    resumed = record_lrs(
        lambda: trainer.fit(TrainConfig(epochs=4, out=str(out), resume=True, **RECIPE))
    )
    lr = TrainConfig().lr
    fresh = planned(4, 0.5, lr, STEPS)
    before = planned(2, 0.5, lr, STEPS, past_end=2 * STEPS)
    extended = first + resumed
    assert extended[2 * STEPS :] == fresh[2 * STEPS :], "the resume follows the 4-epoch plan"
    print("| step | 2-epoch run, then resumed with --epochs 4 | planned for 4 epochs | before |")
    print("| --- | --- | --- | --- |")
    for k in range(len(extended)):
        print(f"| {k} | {extended[k]:.3g} | {fresh[k]:.3g} | {before[k]:.3g} |")
    record = json.loads((out / "config.json").read_text())
    print("resumes:", record["resumes"])

    fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
    steps = range(len(extended))
    ax.plot(steps, [x * 1e3 for x in before], ":", color="tab:red",
            label="before: the 2-epoch schedule stepped past its end")  # fmt: skip
    ax.plot(steps, [x * 1e3 for x in fresh], "--", color="gray", label="a run planned for 4 epochs")
    ax.plot(steps, [x * 1e3 for x in extended], "o-", ms=3, color="tab:blue",
            label="2 epochs, then --resume --epochs 4")  # fmt: skip
    ax.axvline(2 * STEPS - 0.5, color="black", lw=0.8)
    ax.text(2 * STEPS - 0.3, 1.9, "resume", fontsize=8)
    ax.set_xlabel(f"training step ({STEPS} per epoch)")
    ax.set_ylabel("learning rate (×1e-3)")
    ax.set_title("cosine after half an epoch of warm-up, extended from 2 to 4 epochs", fontsize=9)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2)
    fig.savefig(args.figure, dpi=110)
    print("wrote", args.figure)


if __name__ == "__main__":
    main()
