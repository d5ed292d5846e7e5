"""The ``cnnzoo compare`` command: :func:`add_parser` registers it on ``cnnzoo``'s subcommands
(``cnnzoo.cli.build_parser`` calls it); :func:`cmd_compare` runs it. Parsing and printing only:
the work is :func:`cnnzoo.compare.run_compare`'s. Kept light (no trainer, no matplotlib) so that
registering it costs ``cnnzoo --help`` nothing.
"""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from cnnzoo.compare.plan import (
    BATCH_SIZE,
    DEFAULT_EPOCHS,
    DEFAULT_MODELS,
    EXPERIMENTS,
    LR,
    QUICK_MODELS,
    REFERENCES,
    CompareConfig,
)
from cnnzoo.compare.reporter import CompareReporter
from cnnzoo.errors import InvalidArgumentError
from cnnzoo.progress import EpochProgress


class _Progress(EpochProgress, CompareReporter):
    """A line per model, the trainer's lines per epoch under it, and on a terminal a bar per
    epoch; nothing but errors with --quiet."""

    def __init__(self, console: Console, quiet: bool) -> None:
        super().__init__(console, quiet, indent="  ")

    def begin_model(self, index: int, total: int, model: str, text: str) -> None:
        self.label = f"{model} "
        if not self.quiet:
            self.console.print(f"[{index}/{total}] {text}", highlight=False, markup=False)

    def end_model(self, model: str, text: str) -> None:
        self.log(text)


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        seeds = []
    if not seeds:
        raise InvalidArgumentError(f"--seeds {text!r} is not a list of whole numbers, e.g. 0,1,2.")
    return seeds


def cmd_compare(args: argparse.Namespace, console: Console) -> int:
    """Run ``cnnzoo compare`` with parsed ``args``; print the table and where the files are."""
    from cnnzoo.compare.charts import three_digits
    from cnnzoo.compare.core import run_compare
    from cnnzoo.units import human

    models = None if args.models is None else args.models.split(",")
    config = CompareConfig(
        models=models,
        dataset=args.dataset,
        data_root=args.data_root,
        out=args.out or ("runs/degradation" if args.experiment else "runs/compare"),
        image_size=args.image_size,
        epochs=args.epochs,
        budget_seconds=args.budget_seconds,
        seeds=_seeds(args.seeds),
        batch_size=args.batch_size,
        lr=args.lr,
        quick=args.quick,
        reference=args.reference,
        experiment=args.experiment,
        backend=args.backend,
        precision=args.precision,
        bench_rounds=args.rounds,
        memory=False if args.no_memory else None,
        threads=args.threads,
        device=args.device,
        amp=args.amp,
        command=["cnnzoo", *args.argv],  # as typed, for the report
    )
    result = run_compare(config, _Progress(console, args.quiet))
    if args.quiet:
        return 0
    if result.rows:
        table = Table(title=f"cnnzoo compare on {args.dataset} (report: {result.out}/report.html)")
        for col in ("model", "side", "params", "MACs", "weights MB", "top-1 %", "train s",
                    "p50 ms b1", "img/s b32", "peak MB", "top-1/M params"):  # fmt: skip
            table.add_column(col, justify="left" if col == "model" else "right")
        for r in result.rows:
            top1 = f"{r.top1_pct:.2f}" + (
                f" ± {r.top1_pct_std:.2f}" if r.top1_pct_std is not None else ""
            )
            peak = "" if r.peak_rss_mb_b32 is None else f"{r.peak_rss_mb_b32:.0f}"
            table.add_row(
                r.model, str(r.image_size), f"{r.params:,}", human(r.macs, significant=3),
                f"{r.weights_mb:.3g}", top1,
                f"{r.train_seconds:.1f}", f"{r.latency_p50_ms_b1:.2f}",
                f"{r.throughput_img_s_b32:.1f}", peak, three_digits(r.top1_pct_per_mparams),
            )  # fmt: skip
        console.print(table)
    for note in result.notes:
        console.print(f"note: {note}", highlight=False, markup=False)
    console.print(
        f"written to {result.out}: {', '.join(sorted(result.files))}", highlight=False, markup=False
    )
    return 0


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``compare`` (and its options) on ``cnnzoo``'s subcommands; return its parser."""
    p = sub.add_parser(
        "compare",
        help="train the classic CNNs alike on your data; accuracy vs cost vs speed, one report",
        description="Train each model on the same data with the same budget and seed (reusing "
        "finished runs in --out), time the trained weights with the fastest backend, and write "
        "results.json/.csv, the charts and report.html. See docs/compare.md.",
    )
    p.add_argument(
        "--models", help=f"registry names, comma-separated ({','.join(DEFAULT_MODELS)}; with "
        f"--quick {','.join(QUICK_MODELS)})",
    )  # fmt: skip
    p.add_argument("--dataset", default="digits", help="as for train (digits)")
    p.add_argument("--data-root", help="folder holding the dataset files")
    p.add_argument("--image-size", type=int, help="one side for every model (32 where valid)")
    p.add_argument("--epochs", type=int, help=f"epochs per run ({DEFAULT_EPOCHS}; --quick 2)")
    p.add_argument(
        "--budget-seconds", type=float, help="training seconds per run, instead of --epochs"
    )
    p.add_argument("--seeds", default="0", help="comma-separated; several give mean ± s.d. (0)")
    p.add_argument("--batch-size", type=int, default=BATCH_SIZE, help=f"({BATCH_SIZE})")
    p.add_argument(
        "--lr", type=float, help=f"AdamW learning rate of every run ({LR:g}; AlexNet, VGG 5e-4)"
    )
    p.add_argument("--quick", action="store_true", help="a one-minute look (docs/compare.md)")
    p.add_argument("--reference", help=f"add the published figures' chart: {', '.join(REFERENCES)}")
    p.add_argument("--experiment", help=f"{', '.join(EXPERIMENTS)}: plain vs residual nets")
    p.add_argument(
        "--backend", default="auto", help="inference backend timed (auto: the fastest of the "
        "fp32 backends, per model and batch size; eager skips that search)",
    )  # fmt: skip
    p.add_argument(
        "--precision", default="fp32", help="arithmetic timed: fp32 (default), bf16 or int8 "
        "(reduced precision only when asked; the report states it)",
    )  # fmt: skip
    p.add_argument("--rounds", type=int, help="timed calls per benchmark row (10; --quick 5)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory probes")
    p.add_argument("--threads", type=int, help="benchmark threads (torch's default)")
    p.add_argument("--device", default="auto", help="training device, as for train (auto)")
    p.add_argument(
        "--amp", action="store_true", help="train in bfloat16 autocast, as train --amp (CPUs "
        "with AMX or avx512_bf16, GPUs); the report says so",
    )  # fmt: skip
    p.add_argument("--out", help="folder of the comparison (runs/compare; runs/degradation)")
    p.add_argument("--quiet", action="store_true", help="print errors only")
    p.set_defaults(func=cmd_compare)
    return p
