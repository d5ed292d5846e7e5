"""Inference speed and memory of the trained weights, measured the way ``cnnzoo bench`` does.

:func:`cnnzoo.bench.run_bench` builds each model by name with its default head and channels
(ImageNet's 1,000 classes and 3 channels); a comparison on digits trains 10-class, 1-channel
networks, and at 32 pixels the 1,000-way classifier is a fifth of MobileNetV2's work. So this
module times the trained weights themselves with ``bench``'s pieces: ``optimize(model,
"auto")`` picks the fastest backend for each batch size, :func:`cnnzoo.bench.time_runners`
makes the warmed-up, paused timed calls, the rows are :class:`cnnzoo.bench.BenchRow`, and peak
memory comes from :func:`cnnzoo.bench.memory_probe` on the same weights file.

The model is exported to ONNX once, and every ``optimize`` call (one per batch size) and the
memory probe load that file: the dynamo exporter takes 2-15 s per model on 2 cores, and each of
them used to export again (three exports per model, half of the comparison's timing phase).
The memory probes run after all the timing, two at a time (:func:`probe_memory`).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from cnnzoo.analysis import count_params, model_macs
from cnnzoo.bench import BenchRow, make_row, memory_probe, time_runners

PROBES_AT_ONCE = 2  # memory probes running side by side (each mostly one busy core)


def bench_weights(
    name: str,
    weights: Path,
    batch_sizes: Sequence[int],
    *,
    folder: Path,
    backend: str = "auto",
    rounds: int,
    threads: int | None = None,
    cache_dir: str | Path | None = None,
    precision: str = "fp32",
    dataset: tuple[str, str | None] = ("digits", None),
) -> tuple[list[BenchRow], dict[str, str]]:
    """Latency and throughput of a trained model, and what its memory probe needs.

    Args:
        name: registry name of the model (names the ``auto`` cache entry).
        weights: the run's ``model.safetensors``.
        batch_sizes: images per call, one row each.
        folder: where the model's ONNX export goes; it stays there for the memory probe.
        backend: for :func:`cnnzoo.inference.optimize`; ``"auto"`` picks the fastest per batch.
        rounds: timed calls per row, after the warm-up.
        threads: intra-op threads; ``torch.get_num_threads()`` when ``None``.
        cache_dir: for ``optimize``'s ``auto`` choices (its default when ``None``).
        precision: ``optimize``'s ``precision`` (fp32 unless the user asks for bf16 or int8).
        dataset: ``(name, root)`` whose training images calibrate int8 and measure a reduced
            precision's change against fp32.

    Returns:
        One :class:`~cnnzoo.bench.BenchRow` per batch size (``picked`` names the backend that
        ran: what ``auto`` chose), and the ``source`` of :func:`cnnzoo.bench.memory_probe` for
        these weights (with the ONNX file, when there is one).
    """
    from cnnzoo.inference import optimize
    from cnnzoo.weights import load_weights

    model, _ = load_weights(None, weights)
    size = model.pretrained_cfg.input_size
    params, macs = count_params(model), model_macs(model, size)
    threads = threads or torch.get_num_threads()
    calibration = None
    if precision != "fp32":
        from cnnzoo.data import load_dataset
        from cnnzoo.inference import calibration_images

        train = load_dataset(dataset[0], root=dataset[1], preprocessing=model.pretrained_cfg).train
        calibration = calibration_images(train)
    onnx = _exported(model, name, size, folder, backend)
    rows = []
    for batch in batch_sizes:
        x = torch.randn(batch, *size, generator=torch.Generator().manual_seed(batch))
        runner = optimize(
            model, backend, precision=precision, example_input=x, threads=threads,
            model_name=name, cache_dir=cache_dir, calibration=calibration, onnx_file=onnx,
        )  # fmt: skip
        times = time_runners({backend: runner}, x, rounds)[backend]
        rows.append(make_row(name, backend, runner, batch, size, times, params, macs))
        del runner  # its sessions' memory, before the next batch size builds its own
    return rows, {"weights": str(weights)} | ({"onnx": str(onnx)} if onnx else {})


def probe_memory(jobs: Sequence[tuple[BenchRow, dict[str, str]]], threads: int) -> None:
    """Peak memory of each row's backend at its batch (:func:`cnnzoo.bench.memory_probe`, a new
    process each), filled into the rows. The probes run :data:`PROBES_AT_ONCE` at a time, after
    every timed call: a peak does not depend on what else runs, and a probe is mostly a new
    interpreter's 3-4 s of single-threaded imports."""
    with ThreadPoolExecutor(max_workers=PROBES_AT_ONCE) as pool:
        futures = [
            pool.submit(memory_probe, source, row.picked, row.batch, threads)
            for row, source in jobs
        ]  # fmt: skip
        for (row, _), future in zip(jobs, futures, strict=True):
            row.peak_rss_mb, row.calls_rss_mb = future.result()


# The backends that load an ONNX file (optimize's onnx_file); auto tries some of them.
_FROM_ONNX = ("auto", "onnxruntime", "openvino", "openvino_bf16", "openvino_int8", "int8")


def _exported(
    model: torch.nn.Module, name: str, size: tuple[int, int, int], folder: Path, backend: str
) -> Path | None:
    """The model's checked ONNX export in ``folder``, for the backends that load one; ``None``
    for the others, or where the export fails (``optimize`` then drops those candidates with
    the reason, as it would have)."""
    if backend not in _FROM_ONNX:
        return None
    from cnnzoo.errors import CnnzooError
    from cnnzoo.export import export_model

    path = folder / f"{name}.onnx"
    try:
        export_model(model, path, "onnx", input_size=size, model_name=name)
    except CnnzooError:
        return None
    return path
