"""``run_compare``: train every model alike, time the trained weights, write the table, the charts
and the report. ``run_degradation``: He et al.'s plain-vs-residual experiment on the same machinery.

Order of work: every run first (each reused, resumed or trained: see :mod:`.runs`), then every
benchmark in one block, so that no training competes with the timed calls and all speeds are
measured side by side; the benchmark is repeated on every call (speeds belong to the moment).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnnzoo.bench import BenchResult, BenchRow
from cnnzoo.compare import charts, report
from cnnzoo.compare.plan import BENCH_BATCHES, CompareConfig, Plan, make_plan
from cnnzoo.compare.reference import chart_rows
from cnnzoo.compare.reporter import CompareReporter
from cnnzoo.compare.results import CompareRow, make_row, write_results
from cnnzoo.compare.runs import RunRecord, train_run
from cnnzoo.environment import environment
from cnnzoo.fileio import atomic_write_text
from cnnzoo.training.runfolder import claimed


@dataclass
class CompareResult:
    """What a comparison made.

    Attributes:
        out: its folder.
        rows: one :class:`~cnnzoo.compare.results.CompareRow` per model (empty for the
            degradation experiment).
        runs: every run, one per model and seed.
        bench: the benchmark rows of the trained weights (batch 1 and 32 per model).
        files: the files written, by name (``results.json``, ``report.html``, ...).
        notes: what the report says besides the tables.
    """

    out: Path
    rows: list[CompareRow]
    runs: list[RunRecord]
    bench: list[BenchRow]
    files: dict[str, Path]
    notes: list[str] = field(default_factory=list)


def _train_all(plan: Plan, reporter: CompareReporter) -> list[RunRecord]:
    from cnnzoo.data import load_dataset

    # Loaded once up front: a bad dataset fails before any model trains.
    data = load_dataset(plan.dataset, root=plan.data_root)
    runs = []
    jobs = [(m, s) for m in plan.models for s in plan.seeds]
    for index, (model, seed) in enumerate(jobs, start=1):
        budget = f"{plan.epochs} epochs" if plan.epochs else f"a {plan.budget_seconds:g} s budget"
        side = plan.sizes[model]
        reporter.begin_model(
            index, len(jobs), model, f"{model} at {side}×{side}, {budget}, seed {seed}"
        )
        record = train_run(plan, model, seed, reporter, data)
        stop = " (budget reached)" if record.stopped_by_budget else ""
        reporter.end_model(
            model,
            f"{model}: top-1 {record.top1:.2f}% after {record.epochs} epochs{stop}, "
            f"{record.train_seconds:.1f} s of training ({record.status})",
        )
        runs.append(record)
    return runs


def _bench_all(plan: Plan, reporter: CompareReporter) -> list[BenchRow]:
    """Every model timed at each batch size, one after another, then the memory probes."""
    from cnnzoo.compare.measure import bench_weights, probe_memory

    rows: list[BenchRow] = []
    probes = []
    with tempfile.TemporaryDirectory(prefix="cnnzoo-compare-") as folder:  # the ONNX exports
        for model in plan.models:
            weights = plan.run_dir(model, plan.seeds[0]) / "model.safetensors"
            reporter.log(f"timing {model} at batch {' and '.join(map(str, BENCH_BATCHES))} ...")
            measured, source = bench_weights(
                model, weights, BENCH_BATCHES, folder=Path(folder), backend=plan.backend,
                rounds=plan.bench_rounds, threads=plan.threads, cache_dir=plan.cache_dir,
                precision=plan.precision, dataset=(plan.dataset, plan.data_root),
            )  # fmt: skip
            for r in measured:
                change = f"; {r.precision} {r.accuracy}" if r.accuracy else ""
                reporter.log(
                    f"bench {model} batch {r.batch} ({r.backend} → {r.picked}): p50 "
                    f"{r.p50_ms:.2f} ms, {r.throughput:.1f} img/s{change}"
                )
            rows += measured
            probes.append((measured[-1], source))
        if plan.memory:
            reporter.log(f"peak memory at batch {BENCH_BATCHES[-1]}, a process per model ...")
            probe_memory(probes, plan.threads or _torch_threads())
            for row, _ in probes:
                reporter.log(f"memory {row.model} ({row.picked}): peak {row.peak_rss_mb:.0f} MB")
    return rows


def run_compare(config: CompareConfig, reporter: CompareReporter | None = None) -> CompareResult:
    """Train, measure and chart the models of ``config``; see ``docs/compare.md``.

    With ``config.experiment == "degradation"`` this is :func:`run_degradation`.

    Raises:
        CnnzooError: a bad option (before anything trains), a run of other settings in the
            folder, or what the trainer raises.
    """
    plan = make_plan(config)
    reporter = reporter or CompareReporter()
    # The comparison holds its folder while it runs; each run claims its own (the trainer's).
    with claimed(plan.out, reporter.log):
        if plan.experiment == "degradation":
            return _degradation(plan, reporter)
        return _compare(plan, reporter)


def _compare(plan: Plan, reporter: CompareReporter) -> CompareResult:
    """Every run, every timing, then the files."""
    runs = _train_all(plan, reporter)
    bench_rows = _bench_all(plan, reporter)
    by_model: dict[str, list[BenchRow]] = {}
    for r in bench_rows:
        by_model.setdefault(r.model, []).append(r)
    rows = [make_row([r for r in runs if r.model == m], by_model[m]) for m in plan.models]

    env = environment(plan.threads or _torch_threads())
    machine, libs = env["machine"], env["versions"]
    notes = _notes(plan, runs)
    out = plan.out
    bench = BenchResult(bench_rows, machine, notes=[_bench_note(plan)])
    atomic_write_text(out / "bench.json", json.dumps(bench.to_dict(), indent=2) + "\n")
    write_results(
        out, rows, runs, settings=plan.settings(), machine=machine, versions=libs,
        command=plan.command, notes=notes,
    )  # fmt: skip
    files = {name: out / name for name in ("results.json", "results.csv", "bench.json")}
    files |= _draw(plan, rows, bench_rows)
    files["report.html"] = out / "report.html"
    atomic_write_text(
        files["report.html"],
        report.compare_page(plan, rows, runs, bench_rows, files, machine, libs, notes),
    )
    return CompareResult(out, rows, runs, bench_rows, files, notes)


def run_degradation(
    config: CompareConfig | None = None, reporter: CompareReporter | None = None
) -> CompareResult:
    """He et al. 2015's degradation experiment on ``config``'s data: plain20 and plain56 against
    resnet20 and resnet56, training and validation error per epoch (``degradation.png``, the
    table in ``degradation.csv``/``.json`` and ``report.html``).

    ``config.experiment`` is set to ``"degradation"``; leave ``models`` as ``None``.
    """
    config = dataclasses.replace(config or CompareConfig(out="runs/degradation"))
    config.experiment = "degradation"
    return run_compare(config, reporter)


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def _bench_note(plan: Plan) -> str:
    batches = " and ".join(map(str, BENCH_BATCHES))
    return (
        f"trained weights timed with optimize(..., {plan.backend!r}, precision="
        f"{plan.precision!r}) at batch {batches}: "
        f"{plan.bench_rounds} timed calls per row after 2 warm-up calls, 20 ms pause before each"
    )


def _notes(plan: Plan, runs: list[RunRecord]) -> list[str]:
    how = (
        "the fastest backend `optimize(..., 'auto')` found for each batch size"
        if plan.backend == "auto"
        else f"the {plan.backend} backend"
    )
    notes = [
        "top-1 and top-5 are the final epoch's validation accuracy (the weights in "
        "model.safetensors), in percent; training time is the trainer's (training passes only)",
        "params and MACs are those of the trained network as used for inference (GoogLeNet's "
        "auxiliary heads, used only in training, are not counted); MACs = conv + linear "
        "multiply-adds of one image at its side, FLOPs = 2 × MACs",
        f"speed and memory are measured on the trained weights with {how}; memory: peak "
        "resident set of a process running batch 32 (Python and torch included)",
    ]
    if len(plan.seeds) > 1:
        notes.append(
            f"accuracies are the mean ± sample standard deviation over seeds "
            f"{', '.join(map(str, plan.seeds))}; one validation image of the digits is 0.28 points"
        )
    if plan.reference:  # said before results.json is written: the file and the report agree
        missing = chart_rows(plan.models)[1]
        if missing:
            notes.append(f"no published ImageNet figures for {', '.join(missing)}")
    stopped = sorted({r.model for r in runs if r.stopped_by_budget})
    if stopped:
        notes.append(
            f"the time budget ended {', '.join(stopped)} before the planned epochs (the estimate "
            "from a few timed steps was short)"
        )
    return notes


def _draw(plan: Plan, rows: list[CompareRow], bench_rows: list[BenchRow]) -> dict[str, Path]:
    out = plan.out
    dicts = [dataclasses.asdict(r) for r in rows]
    ref_rows = chart_rows(plan.models)[0] if plan.reference else []
    scale = charts.MAX_AREA / max(r["params"] for r in dicts + ref_rows)
    title = f"{plan.dataset}: top-1 vs multiply-adds (ball area ∝ parameters)"
    # The input side on the axes: MACs and speed depend on it (PITFALLS.md 15).
    sides = charts.sides_text(plan.sizes)
    chart = charts.ball_chart_data(
        dicts, scale=scale, title=title,
        xlabel=f"multiply-adds per image at {sides} (conv + linear MACs, log scale)",
    )  # fmt: skip
    paths = [out / "accuracy_vs_macs.png", out / "accuracy_vs_macs.svg"]
    colors = charts.palette(plan.models)
    charts.draw_ball_chart(chart, paths, colors=colors)
    chart = charts.ball_chart_data(
        dicts, x_key="throughput_img_s_b32", maximize_x=True, scale=scale,
        title=f"{plan.dataset}: top-1 vs inference throughput at batch 32 (ball area ∝ parameters)",
        xlabel=f"throughput at batch 32, {sides} (images/s on this machine, log scale)",
    )  # fmt: skip
    paths.append(out / "accuracy_vs_throughput.png")
    charts.draw_ball_chart(chart, paths[-1:], colors=colors)
    series = charts.throughput_batch_data([dataclasses.asdict(r) for r in bench_rows])
    paths.append(out / "throughput_vs_batch.png")
    charts.draw_throughput_batch(series, paths[-1], colors)
    paths.append(out / "accuracy_density.png")
    charts.draw_density(charts.density_data(dicts), paths[-1])
    if plan.reference and ref_rows:
        ref_sides = charts.sides_text({r["model"]: r["image_size"] for r in ref_rows})
        chart = charts.ball_chart_data(
            ref_rows, yerr_key=None, scale=scale,
            title="ImageNet-1K, published: top-1 vs multiply-adds at each model's own input "
            "(ball area ∝ parameters)",
            xlabel=f"multiply-adds per image at {ref_sides} (conv + linear MACs, log scale)",
        )  # fmt: skip
        paths += [out / "accuracy_vs_macs_imagenet.png", out / "accuracy_vs_macs_imagenet.svg"]
        charts.draw_ball_chart(chart, paths[-2:], colors=colors)
    return {p.name: p for p in paths}


def _degradation(plan: Plan, reporter: CompareReporter) -> CompareResult:
    runs = _train_all(plan, reporter)
    histories = {r.model: r.history for r in runs if r.seed == plan.seeds[0]}
    data = charts.degradation_data(histories)
    out = plan.out
    files = {"degradation.png": out / "degradation.png"}
    charts.draw_degradation(
        data, files["degradation.png"],
        title=f"{plan.dataset}: plain vs residual, training (dashed) and validation (solid) error",
    )  # fmt: skip
    table = report.degradation_table(runs)
    notes = [report.degradation_verdict(runs)]
    payload: dict[str, Any] = {
        "schema": 1,
        "experiment": "degradation",
        "settings": plan.settings(),
        "epochs": data,
        "runs": [r.to_dict() | {"final_train_error_pct": 100 * (1 - r.history[-1]["train_acc"])}
                 for r in runs],
        "verdict": notes[0],
        **environment(plan.threads or _torch_threads()),
        "command": plan.command or sys.argv,
    }  # fmt: skip
    files["degradation.json"] = out / "degradation.json"
    atomic_write_text(files["degradation.json"], json.dumps(payload, indent=2) + "\n")
    files["degradation.csv"] = out / "degradation.csv"
    atomic_write_text(files["degradation.csv"], table)
    files["report.html"] = out / "report.html"
    atomic_write_text(
        files["report.html"],
        report.degradation_page(plan, runs, files, payload["machine"], payload["versions"], notes),
    )
    return CompareResult(out, [], runs, [], files, notes)
