"""The comparison's table: one row per model from its runs and its benchmark, and the files.

Units are in the field names: ``top1_pct`` is a percentage, ``macs`` one image's conv + linear
multiply-adds at the trained side (FLOPs are twice that), ``weights_mb`` the size of the
weights file a deployment ships (``model.safetensors``, fp32), ``latency_p50_ms_b1`` the median time
of one image, ``throughput_img_s_b32`` images per second at batch 32, ``peak_rss_mb_b32`` the
peak resident memory of a process running batch 32, and ``top1_pct_per_mparams`` the accuracy
density (top-1 points per million parameters, Canziani et al. 2016).
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cnnzoo.bench import BenchRow
from cnnzoo.compare.runs import WEIGHTS, RunRecord
from cnnzoo.fileio import atomic_write_text

SCHEMA = 1


@dataclass
class CompareRow:
    """One model: its size, cost, accuracy (mean over seeds) and speed on this machine.

    The ``*_std`` fields are the sample standard deviation over seeds (``None`` with one seed).
    """

    model: str
    image_size: int
    seeds: list[int]
    epochs: list[int]
    params: int
    macs: int
    weights_mb: float
    top1_pct: float
    top1_pct_std: float | None
    top5_pct: float | None
    top5_pct_std: float | None
    train_seconds: float
    latency_p50_ms_b1: float
    throughput_img_s_b32: float
    peak_rss_mb_b32: float | None
    top1_pct_per_mparams: float
    backend_b1: str
    backend_b32: str


FIELDS = [name for name in CompareRow.__dataclass_fields__]


def make_row(runs: Sequence[RunRecord], bench_rows: Sequence[BenchRow]) -> CompareRow:
    """The row of one model from its runs (one per seed) and its benchmark rows (batch 1 and
    batch 32; the first and the last row when other sizes were measured); the weights file is
    the first run's."""
    first, last = bench_rows[0], bench_rows[-1]
    top1 = [r.top1 for r in runs]
    top5 = [r.top5 for r in runs if r.top5 is not None]
    has_top5 = len(top5) == len(runs)
    mean_top1 = statistics.fmean(top1)
    return CompareRow(
        model=runs[0].model,
        image_size=runs[0].image_size,
        seeds=[r.seed for r in runs],
        epochs=[r.epochs for r in runs],
        params=first.params,
        macs=first.macs,
        weights_mb=(runs[0].out / WEIGHTS).stat().st_size / 1e6,
        top1_pct=mean_top1,
        top1_pct_std=_std(top1),
        top5_pct=statistics.fmean(top5) if has_top5 else None,
        top5_pct_std=_std(top5) if has_top5 else None,
        train_seconds=statistics.fmean(r.train_seconds for r in runs),
        latency_p50_ms_b1=first.p50_ms,
        throughput_img_s_b32=last.throughput,
        peak_rss_mb_b32=last.peak_rss_mb,
        top1_pct_per_mparams=mean_top1 / (first.params / 1e6),
        backend_b1=first.picked,
        backend_b32=last.picked,
    )


def _std(values: Sequence[float]) -> float | None:
    return statistics.stdev(values) if len(values) > 1 else None


def rows_to_csv(rows: Sequence[CompareRow]) -> str:
    """The rows as CSV, one header line; lists joined with ``;``, ``None`` left empty."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(FIELDS)
    for row in rows:
        values = []
        for name in FIELDS:
            value = getattr(row, name)
            if isinstance(value, list):
                value = ";".join(map(str, value))
            values.append("" if value is None else value)
        writer.writerow(values)
    return buffer.getvalue()


def write_results(
    out: Path,
    rows: Sequence[CompareRow],
    runs: Sequence[RunRecord],
    *,
    settings: dict[str, Any],
    machine: dict[str, Any],
    versions: dict[str, str],
    command: Sequence[str],
    notes: Sequence[str],
) -> None:
    """Write ``results.json`` (rows, every run, the settings, machine, versions, command) and
    ``results.csv`` (the rows), atomically."""
    data = {
        "schema": SCHEMA,
        "rows": [asdict(r) for r in rows],
        "runs": [r.to_dict() for r in runs],
        "settings": settings,
        "machine": machine,
        "versions": versions,
        "command": list(command),
        "notes": list(notes),
    }
    atomic_write_text(out / "results.json", json.dumps(data, indent=2) + "\n")
    atomic_write_text(out / "results.csv", rows_to_csv(rows))


def read_rows(path: Path) -> list[CompareRow]:
    """The rows of a ``results.json``."""
    data = json.loads(Path(path).read_text())
    return [CompareRow(**r) for r in data["rows"]]
