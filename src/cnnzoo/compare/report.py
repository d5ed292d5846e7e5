"""``report.html``: one self-contained page (charts inline as base64 data URIs, styles inline, no
scripts, no fonts or anything else from a network) that opens in any browser, offline.
"""

from __future__ import annotations

import base64
import csv
import datetime
import html
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from cnnzoo.bench import BenchRow
from cnnzoo.compare.charts import three_digits
from cnnzoo.compare.plan import Plan
from cnnzoo.compare.reference import imagenet_rows
from cnnzoo.compare.results import CompareRow
from cnnzoo.compare.runs import RunRecord
from cnnzoo.units import human

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f0f0f0; } td:first-child, th:first-child { text-align: left; }
figure { margin: 1.2em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 0.9em; color: #444; max-width: 900px; }
code, pre { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 0.88em; }
pre { background: #f6f6f6; padding: 0.6em; overflow-x: auto; white-space: pre-wrap; }
.note { color: #444; font-size: 0.92em; }
"""

CAPTIONS = {
    "accuracy_vs_macs.png": "Top-1 against multiply-adds per image (log scale); each ball's area "
    "is proportional to the model's parameters. The dashed line is the Pareto front: no model "
    "is both cheaper and more accurate than one on it. Up and to the left is better.",
    "accuracy_vs_throughput.png": "Top-1 against inference throughput at batch 32 on this machine "
    "(log scale), ball area ∝ parameters; the dashed line is the speed/accuracy frontier. Up and "
    "to the right is better. Multiply-adds predict speed only roughly: memory traffic, depthwise "
    "convolutions and layer count matter too.",
    "throughput_vs_batch.png": "Images per second at batch 1 and batch 32 (both axes log). A steep "
    "line means the model leaves the machine idle at batch 1 (small layers, per-call overhead).",
    "accuracy_density.png": "Accuracy density: top-1 points per million parameters (log scale). "
    "It rewards small models; read it beside the accuracy itself.",
    "accuracy_vs_macs_imagenet.png": "The same chart from the published ImageNet-1K figures of the "
    "compared models (torchvision weights' top-1, parameters at 1,000 classes, multiply-adds at "
    "each model's own input size, mostly 224×224), on the same ball scale as the chart above.",
    "degradation.png": "Training error (dashed) and validation error (solid) per epoch. He et al. "
    "2015 (Fig. 1 and 6) found the deeper plain net's training error higher than the shallower "
    "one's, while the deeper residual net trains at least as well as the shallower.",
}


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _table(
    header: Sequence[str], rows: Iterable[Sequence[Any]], row_ids: Sequence[str] = ()
) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        attrs = f' id="{_esc(row_ids[i])}" class="model-row"' if i < len(row_ids) else ""
        cells = "".join(f"<td>{_esc(c)}</td>" for c in row)
        body.append(f"<tr{attrs}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _figure(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    caption = CAPTIONS.get(path.name, "")
    return (
        f'<figure id="fig-{_esc(path.stem)}"><img alt="{_esc(path.name)}" '
        f'src="data:image/png;base64,{data}"><figcaption><b>{_esc(path.name)}</b>: '
        f"{_esc(caption)}</figcaption></figure>"
    )


def _pct(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "–"
    return f"{mean:.2f} ± {std:.2f}" if std is not None else f"{mean:.2f}"


def _page(title: str, sections: Sequence[str]) -> str:
    stamp = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_esc(title)}</title><style>{STYLE}</style></head><body>"
        f'<h1>{_esc(title)}</h1><p class="note">written {_esc(stamp)} by cnnzoo</p>'
        + "".join(sections)
        + "</body></html>\n"
    )


def _commands(plan: Plan, runs: Sequence[RunRecord]) -> str:
    command = " ".join(plan.command) if plan.command else "(called from Python)"
    lines = []
    for r in runs:
        config = r.out / "config.json"
        if config.is_file():
            argv = json.loads(config.read_text()).get("command") or []
            lines.append(" ".join(map(str, argv)))
    return (
        "<h2>Commands</h2><p>The comparison:</p>"
        f"<pre>{_esc(command)}</pre><p>Each run, as the same <code>cnnzoo train</code> command "
        "(the comparison calls the trainer with these settings):</p>"
        f"<pre>{_esc(chr(10).join(lines))}</pre>"
    )


def _machine(machine: Mapping[str, Any], versions: Mapping[str, Any]) -> str:
    rows = [(k, v) for k, v in machine.items()] + [(k, v) for k, v in versions.items()]
    return "<h2>Machine and versions</h2>" + _table(["", "value"], rows)


def _settings(plan: Plan, runs: Sequence[RunRecord]) -> str:
    budget = (
        f"{plan.epochs} epochs per run"
        if plan.epochs
        else f"{plan.budget_seconds:g} s of training per run (epochs planned from a few timed "
        "steps; a run stops after the epoch that crosses the budget)"
    )
    planned = {(r.model, r.seed): (r.planned_epochs, r.epochs) for r in runs}
    size_rows = [
        (m, f"{plan.sizes[m]}×{plan.sizes[m]}", f"{plan.lrs[m]:g}",
         "; ".join(f"seed {s}: {planned[(m, s)][1]}/{planned[(m, s)][0]}" for s in plan.seeds))
        for m in plan.models
    ]  # fmt: skip
    settings = plan.settings()
    items = [
        ("dataset", plan.dataset),
        ("budget", budget),
        ("seeds", ", ".join(map(str, plan.seeds))),
        ("batch size", plan.batch_size),
        ("image side", plan.size_rule),
        ("learning rate", plan.lr_rule),
        ("training recipe", settings["recipe"]),
        ("training precision", settings["train_precision"]),
        ("benchmark", f"batch {' and '.join(map(str, settings['bench_batches']))}, "
         f"{plan.bench_rounds} timed calls per row, memory probe {'on' if plan.memory else 'off'}, "
         f"{plan.threads or 'default'} threads"),
    ]  # fmt: skip
    return (
        "<h2>Settings (the defaults as used)</h2>"
        + _table(["setting", "value"], items)
        + _table(["model", "image side", "lr", "epochs trained / planned"], size_rows)
    )


def _runs_table(runs: Sequence[RunRecord]) -> str:
    rows = [
        (r.model, r.seed, r.epochs, r.planned_epochs, r.status, f"{r.top1:.2f}",
         "–" if r.top5 is None else f"{r.top5:.2f}", f"{r.train_seconds:.1f}", str(r.out))
        for r in runs
    ]  # fmt: skip
    header = [
        "model", "seed", "epochs", "planned", "status", "top-1 %", "top-5 %", "train s", "folder",
    ]  # fmt: skip
    return "<h2>Runs</h2>" + _table(header, rows)


def compare_page(
    plan: Plan,
    rows: Sequence[CompareRow],
    runs: Sequence[RunRecord],
    bench_rows: Sequence[BenchRow],
    files: Mapping[str, Path],
    machine: Mapping[str, Any],
    versions: Mapping[str, Any],
    notes: Sequence[str],
) -> str:
    """The comparison's page: results, charts, reference, settings, runs, commands, machine."""
    header = [
        "model", "side", "params", "MACs", "weights MB", "top-1 %", "top-5 %", "train s",
        "p50 ms (b1)", "img/s (b32)", "peak MB (b32)", "top-1 %/M params", "backend b1 / b32",
    ]  # fmt: skip
    table_rows = [
        (r.model, r.image_size, f"{r.params:,}", human(r.macs, significant=3),
         f"{r.weights_mb:.3g}", _pct(r.top1_pct, r.top1_pct_std),
         _pct(r.top5_pct, r.top5_pct_std), f"{r.train_seconds:.1f}", f"{r.latency_p50_ms_b1:.2f}",
         f"{r.throughput_img_s_b32:.1f}",
         "–" if r.peak_rss_mb_b32 is None else f"{r.peak_rss_mb_b32:.0f}",
         three_digits(r.top1_pct_per_mparams), f"{r.backend_b1} / {r.backend_b32}")
        for r in rows
    ]  # fmt: skip
    sections = [
        "<h2>Results</h2>",
        _table(header, table_rows, [f"row-{r.model}" for r in rows]),
        "".join(f'<p class="note">{_esc(n)}.</p>' for n in notes),
        "<h2>Charts</h2>",
        *(_figure(files[name]) for name in files if name.endswith(".png")),
    ]
    if plan.reference:
        ref = [
            (r["name"], "×".join(map(str, r["input"])), f"{r['params']:,}",
             human(r["macs"], significant=3), r["top1"], "–" if r["top5"] is None else r["top5"],
             r["weights"])
            for r in imagenet_rows(plan.models)
        ]  # fmt: skip
        header = ["model", "input", "params", "MACs", "top-1 %", "top-5 %", "weights"]
        sections.append("<h2>Published ImageNet-1K figures (--reference imagenet)</h2>")
        sections.append(
            _table(header, ref)
            if ref
            else "<p>None of the compared models has published ImageNet figures.</p>"
        )
    speed = [
        (b.model, b.batch, b.picked, f"{b.p50_ms:.3f}", f"{b.p90_ms:.3f}", f"{b.throughput:.1f}",
         "–" if b.peak_rss_mb is None else f"{b.peak_rss_mb:.0f}")
        for b in bench_rows
    ]  # fmt: skip
    sections += [
        "<h2>Benchmark rows</h2>",
        _table(["model", "batch", "backend", "p50 ms", "p90 ms", "img/s", "peak MB"], speed),
        _settings(plan, runs),
        _runs_table(runs),
        _commands(plan, runs),
        _machine(machine, versions),
    ]
    return _page(f"cnnzoo compare: {plan.dataset}", sections)


def degradation_table(runs: Sequence[RunRecord]) -> str:
    """CSV: one line per run and epoch, errors in percent."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["model", "seed", "epoch", "train_error_pct", "val_error_pct"])
    for r in runs:
        for h in r.history:
            writer.writerow(
                [r.model, r.seed, h["epoch"], 100 * (1 - h["train_acc"]), 100 * (1 - h["val_acc"])]
            )
    return buffer.getvalue()


def _final_train_error(runs: Sequence[RunRecord], model: str) -> float:
    errors = [100 * (1 - r.history[-1]["train_acc"]) for r in runs if r.model == model]
    return sum(errors) / len(errors)


# Gaps in final training error below this many points (14 of the digits' 1,437 training
# images) are read as noise: the running training error of one epoch moves that much.
NOISE_POINTS = 1.0


def _compare_depths(kind: str, shallow: float, deep: float, too: str = "") -> str:
    gap = deep - shallow
    if gap > NOISE_POINTS:
        return f"the deeper {kind} net trains worse{too} ({gap:+.2f} points)"
    if gap < -NOISE_POINTS:
        return f"the deeper {kind} net trains better ({gap:+.2f} points)"
    return f"the {kind} nets train alike (within {NOISE_POINTS:g} point)"


def degradation_verdict(runs: Sequence[RunRecord]) -> str:
    """One sentence on what the final training errors show (mean over seeds; gaps within
    :data:`NOISE_POINTS` count as alike)."""
    e = {m: _final_train_error(runs, m) for m in ("plain20", "plain56", "resnet20", "resnet56")}
    plain = _compare_depths("plain", e["plain20"], e["plain56"])
    residual = _compare_depths("residual", e["resnet20"], e["resnet56"], too=" too")
    return (
        f"final training error: plain20 {e['plain20']:.2f}%, plain56 {e['plain56']:.2f}%, "
        f"resnet20 {e['resnet20']:.2f}%, resnet56 {e['resnet56']:.2f}%: {plain}; {residual}"
    )


def degradation_page(
    plan: Plan,
    runs: Sequence[RunRecord],
    files: Mapping[str, Path],
    machine: Mapping[str, Any],
    versions: Mapping[str, Any],
    notes: Sequence[str],
) -> str:
    """The degradation experiment's page: chart, verdict, final errors, per-epoch table."""
    final = [
        (r.model, r.seed, f"{100 * (1 - r.history[-1]['train_acc']):.2f}",
         f"{100 * (1 - r.history[-1]['val_acc']):.2f}",
         f"{min(100 * (1 - h['val_acc']) for h in r.history):.2f}", f"{r.train_seconds:.1f}")
        for r in runs
    ]  # fmt: skip
    final_header = [
        "model", "seed", "final train error %", "final val error %", "best val error %", "train s",
    ]  # fmt: skip
    per_epoch = [
        (r.model, r.seed, h["epoch"], f"{100 * (1 - h['train_acc']):.2f}",
         f"{100 * (1 - h['val_acc']):.2f}")
        for r in runs for h in r.history
    ]  # fmt: skip
    sections = [
        "<h2>Training and validation error</h2>",
        _figure(files["degradation.png"]),
        "".join(f'<p class="note">{_esc(n)}.</p>' for n in notes),
        _table(final_header, final, [f"row-{r.model}-seed{r.seed}" for r in runs]),
        "<h2>Per epoch</h2>",
        _table(["model", "seed", "epoch", "train error %", "val error %"], per_epoch),
        _settings(plan, runs),
        _commands(plan, runs),
        _machine(machine, versions),
    ]
    return _page(f"cnnzoo compare --experiment degradation: {plan.dataset}", sections)
