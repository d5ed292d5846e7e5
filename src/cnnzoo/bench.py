"""``cnnzoo bench``: what each model costs to run here, per backend and batch size.

For every (model, batch size) the backends are built once (:func:`cnnzoo.inference.optimize`),
warmed up, then timed side by side: rounds in which each backend runs once, in an order that
rotates from round to round, with a short pause before each timed call (ONNX Runtime's worker
threads stop spinning when a run returns, and the pause lets one call's threads settle before
the next).
Latency is the median (p50) and 90th percentile of those calls; throughput is the batch size
over the median.

Peak memory is measured in a separate process per row that builds the model and the backend
the same way, runs it once, then resets the kernel's record of its peak resident memory and
runs a few more calls: the peak resident set during those calls (Python, torch, the weights,
the backend and the calls' working memory), and how much of it the calls add over what was
resident before them. Its own process is the only way to see a peak that the allocator hands
back at once, and to keep the setup's peak (an ONNX export needs more memory than running)
out of it; it costs a few seconds a row, and ``memory=False`` skips it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import statistics
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cnnzoo.environment import environment
from cnnzoo.errors import InvalidArgumentError
from cnnzoo.models import build_model, get_spec

PAUSE_S = 0.02  # before each timed call
WARMUP = 2
PROBE_CALLS = 3


@dataclass
class BenchRow:
    """One (model, backend, batch size).

    Attributes:
        backend: as asked; ``picked`` says what ``auto`` chose.
        p50_ms, p90_ms: latency of one batch, median and 90th percentile.
        throughput: images per second at the median latency.
        peak_rss_mb: peak resident memory of a process running this row (``None`` unmeasured).
        calls_rss_mb: the part of it the calls add over building the model and backend.
        gflops: achieved GFLOP/s, ``2 · MACs · batch / p50``.
        precision: the arithmetic the picked backend runs in (fp32, bf16, int8).
        accuracy: for bf16 and int8, the runner's measured change against fp32 (one line).
    """

    model: str
    backend: str
    picked: str
    batch: int
    input_size: tuple[int, int, int]
    p50_ms: float
    p90_ms: float
    throughput: float
    params: int
    macs: int
    gflops: float
    setup_s: float
    calls: int
    peak_rss_mb: float | None = None
    calls_rss_mb: float | None = None
    precision: str = "fp32"
    accuracy: str | None = None


@dataclass
class BenchResult:
    """Every row, and the machine they were measured on."""

    rows: list[BenchRow]
    machine: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "machine": self.machine,
            "notes": self.notes,
            "rows": [dataclasses.asdict(r) | {"input_size": list(r.input_size)} for r in self.rows],
        }


def run_bench(
    models: Sequence[str],
    backends: Sequence[str],
    batch_sizes: Sequence[int],
    *,
    image_size: int | None = None,
    threads: int | None = None,
    rounds: int = 10,
    memory: bool = True,
    progress: Callable[[str], None] | None = None,
    precision: str = "fp32",
) -> BenchResult:
    """Time ``models`` × ``backends`` × ``batch_sizes`` on this machine.

    Args:
        models: registry names (random weights: speed does not depend on their values).
        backends: names for :func:`cnnzoo.inference.optimize` (``auto``, ``eager``, ...).
        batch_sizes: images per call.
        image_size: side of the square input; ``None`` for each model's own (its paper's).
        threads: intra-op threads for every backend; ``torch.get_num_threads()`` when ``None``.
        rounds: timed calls per backend (after the warm-up).
        memory: measure peak memory in a separate process per row (a few seconds each).
        progress: called with one line as each row is measured.
        precision: what ``auto`` rows measure (``optimize``'s ``precision``); the other
            backends run in their own.

    Raises:
        InvalidArgumentError: empty lists, a batch size or ``rounds`` below 1.
        CnnzooError: an unknown model or backend, a size the model cannot take (before any
            timing).
    """
    from cnnzoo.analysis import check_input, count_params, model_macs
    from cnnzoo.inference import BACKENDS, PRECISIONS, optimize

    if not models or not backends or not batch_sizes:
        raise InvalidArgumentError("give at least one model, backend and batch size.")
    if min(batch_sizes) < 1 or rounds < 1:
        raise InvalidArgumentError("batch sizes and --rounds must be 1 or more.")
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        raise InvalidArgumentError(
            f"unknown backend {unknown[0]!r}: choose from {', '.join(BACKENDS)}."
        )
    if precision not in PRECISIONS:
        raise InvalidArgumentError(
            f"unknown precision {precision!r}: choose from {', '.join(PRECISIONS)}."
        )
    threads = threads or torch.get_num_threads()
    sizes = {}
    for name in models:  # every size is checked before anything is timed
        spec = get_spec(name)
        chans, h, w = spec.input_size
        sizes[name] = (chans, image_size, image_size) if image_size else (chans, h, w)
        check_input(name, sizes[name])
    env = environment(threads)
    result = BenchResult([], {**env["machine"], **env["versions"]})
    result.notes.append(
        f"{rounds} timed calls per row after {WARMUP} warm-up calls, interleaved across "
        f"backends, {PAUSE_S * 1000:.0f} ms pause before each; "
        "ONNX Runtime threads stop spinning after each run"
    )
    for name in models:
        size = sizes[name]
        torch.manual_seed(0)
        model = build_model(name).eval()
        params, macs = count_params(model), model_macs(model, size)
        reduced = any(_reduced(b, precision) for b in backends)
        calibration = _calibration(size) if reduced else None
        for batch in batch_sizes:
            x = torch.randn(batch, *size, generator=torch.Generator().manual_seed(batch))
            runners = {
                b: optimize(model, b, precision=_asked(b, precision), example_input=x,
                            threads=threads, model_name=name, calibration=calibration)
                for b in backends
            }  # fmt: skip
            times = time_runners(runners, x, rounds)
            for b in backends:
                row = make_row(name, b, runners[b], batch, size, times[b], params, macs)
                if memory:
                    row.peak_rss_mb, row.calls_rss_mb = memory_probe(
                        {"model": name, "size": list(size)}, b, batch, threads, _asked(b, precision)
                    )
                result.rows.append(row)
                if progress is not None:
                    progress(_row_line(row))
    return result


def _asked(backend: str, precision: str) -> str | None:
    """The precision ``optimize`` gets for ``backend``: the asked one for auto, else its own."""
    return precision if backend == "auto" else None


def _reduced(backend: str, precision: str) -> bool:
    """Whether the row runs in bf16 or int8 (so that real images are needed: int8 calibrates on
    them, and both measure their change against fp32 on them)."""
    from cnnzoo.choices import ENGINE_PRECISION

    if backend == "auto":
        return precision != "fp32"
    return backend != "cuda" and ENGINE_PRECISION[backend] != "fp32"


CALIBRATION_COUNT = 64  # fewer than eval's 256: speed does not depend on the ranges' quality


def _calibration(size: tuple[int, int, int]) -> torch.Tensor:
    # int8 is calibrated on real images: the built-in digits, prepared at the model's size.
    from cnnzoo.data import load_dataset
    from cnnzoo.inference import calibration_images

    data = load_dataset("digits", image_size=size[1], in_chans=size[0])
    return calibration_images(data.train, CALIBRATION_COUNT)


def time_runners(
    runners: Mapping[str, Callable[[torch.Tensor], Any]], x: torch.Tensor, rounds: int
) -> dict[str, list[float]]:
    """Seconds of each of ``rounds`` calls per runner on ``x``, after :data:`WARMUP` calls each,
    interleaved across runners with a :data:`PAUSE_S` pause before every timed call."""
    from cnnzoo.inference.auto import interleaved

    for runner in runners.values():
        for _ in range(WARMUP):
            runner(x)
    return interleaved(runners, x, rounds, PAUSE_S)


def make_row(
    name: str,
    backend: str,
    runner: Any,
    batch: int,
    size: tuple[int, int, int],
    times: list[float],
    params: int,
    macs: int,
) -> BenchRow:
    """The row of one runner's timed calls (``times`` in seconds, one batch each)."""
    p50 = statistics.median(times)
    return BenchRow(
        model=name, backend=backend, picked=runner.backend, batch=batch, input_size=size,
        p50_ms=1000 * p50, p90_ms=1000 * percentile(times, 0.9), throughput=batch / p50,
        params=params, macs=macs, gflops=2 * macs * batch / p50 / 1e9,
        setup_s=runner.setup_seconds, calls=len(times), precision=runner.precision,
        accuracy=runner.accuracy.line() if runner.accuracy is not None else None,
    )  # fmt: skip


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile of ``values``, interpolated linearly (as numpy's default)."""
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def memory_probe(
    source: dict[str, Any], backend: str, batch: int, threads: int, precision: str | None = None
) -> tuple[float, float]:
    """(peak resident MB while running, MB of it the calls add), from a child process.

    ``source`` is ``{"model": name, "size": [c, h, w]}`` (random weights, seeded as
    :func:`run_bench` makes them) or ``{"weights": path}`` (a weights file at the size it
    records); with ``"onnx": path`` (an export of that model) the backends that load ONNX files
    use it instead of exporting again (``optimize``'s ``onnx_file``).
    """
    job = {"source": source, "backend": backend, "batch": batch, "threads": threads}
    args = json.dumps(job | {"precision": precision})
    code = f"from cnnzoo.bench import _probe_main; _probe_main({args!r})"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        what = source.get("model") or source.get("weights")
        raise RuntimeError(f"memory probe of {what}/{backend} failed: {last}")
    peak, before = json.loads(done.stdout.strip().splitlines()[-1])
    return peak, peak - before


def _probe_main(args: str) -> None:
    """The child of :func:`memory_probe`: the row's build, then its peak resident memory over a
    few calls, printed as JSON ``[peak MB, resident MB before the calls]``.

    A new interpreter, not a fork of one that imported torch already: a forked child's resident
    set leaves out the library pages only the imports touched (LeNet-5's probe: 535 MB forked,
    816 MB in a new process), and a user's process has them. Linux resets the peak (``VmHWM``)
    on writing 5 to ``/proc/self/clear_refs``, so the peak is that of the calls alone, not of
    the setup (an ONNX export or a compile needs more memory than running does); elsewhere the
    process's lifetime peak stands in for it.
    """
    from cnnzoo.inference import optimize

    job = json.loads(args)
    source, backend, batch, threads = job["source"], job["backend"], job["batch"], job["threads"]
    torch.set_num_threads(threads)
    if "weights" in source:
        from cnnzoo.weights import load_weights

        model, report = load_weights(None, source["weights"])
        name, size = report.model, model.pretrained_cfg.input_size
    else:
        torch.manual_seed(0)
        name, size = source["model"], tuple(source["size"])
        model = build_model(name).eval()
    x = torch.randn(batch, *size, generator=torch.Generator().manual_seed(batch))
    precision = job.get("precision")
    reduced = _reduced(backend, precision or "fp32")
    calibration = _calibration(size) if reduced else None
    runner = optimize(
        model, backend, precision=precision, example_input=x, threads=threads, model_name=name,
        calibration=calibration, onnx_file=source.get("onnx"),
    )  # fmt: skip
    runner(x)  # the first call allocates what every later call reuses
    before = _status_mb("VmRSS")
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")
    for _ in range(PROBE_CALLS):
        runner(x)
    print(json.dumps([_status_mb("VmHWM"), before]))


def _status_mb(field_name: str) -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _row_line(row: BenchRow) -> str:
    picked = f" → {row.picked}" if row.picked != row.backend else ""
    memory = f", peak {row.peak_rss_mb:.0f} MB" if row.peak_rss_mb is not None else ""
    return (
        f"{row.model} {row.backend}{picked} batch {row.batch}: p50 {row.p50_ms:.2f} ms, "
        f"p90 {row.p90_ms:.2f} ms, {row.throughput:.1f} img/s, {row.gflops:.1f} GFLOP/s{memory}"
    )
