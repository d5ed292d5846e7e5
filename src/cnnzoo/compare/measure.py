"""Inference speed and memory of the trained weights, measured the way ``cnnzoo bench`` does.

:func:`cnnzoo.bench.run_bench` builds each model by name with its default head and channels
(ImageNet's 1,000 classes and 3 channels); a comparison on digits trains 10-class, 1-channel
networks, and at 32 pixels the 1,000-way classifier is a fifth of MobileNetV2's work. So this
module times the trained weights themselves with ``bench``'s pieces: ``optimize(model,
"auto")`` picks the fastest backend for each batch size, :func:`cnnzoo.bench.time_runners`
makes the warmed-up, paused timed calls, the rows are :class:`cnnzoo.bench.BenchRow`, and peak
memory comes from :func:`cnnzoo.bench.memory_probe` on the same weights file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from cnnzoo.analysis import count_params, model_macs
from cnnzoo.bench import BenchRow, make_row, memory_probe, time_runners


def bench_weights(
    name: str,
    weights: Path,
    batch_sizes: Sequence[int],
    *,
    backend: str = "auto",
    rounds: int,
    threads: int | None = None,
    memory: bool = True,
    cache_dir: str | Path | None = None,
    precision: str = "fp32",
    dataset: tuple[str, str | None] = ("digits", None),
) -> list[BenchRow]:
    """Latency, throughput and (at the largest batch) peak memory of a trained model.

    Args:
        name: registry name of the model (names the ``auto`` cache entry).
        weights: the run's ``model.safetensors``.
        batch_sizes: images per call, one row each.
        backend: for :func:`cnnzoo.inference.optimize`; ``"auto"`` picks the fastest per batch.
        rounds: timed calls per row, after the warm-up.
        threads: intra-op threads; ``torch.get_num_threads()`` when ``None``.
        memory: measure peak resident memory at the largest batch in a child process.
        cache_dir: for ``optimize``'s ``auto`` choices (its default when ``None``).
        precision: ``optimize``'s ``precision`` (fp32 unless the user asks for bf16 or int8).
        dataset: ``(name, root)`` whose training images calibrate int8 and measure a reduced
            precision's change against fp32.

    Returns:
        One :class:`~cnnzoo.bench.BenchRow` per batch size; ``picked`` names the backend that
        ran (what ``auto`` chose).
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
    rows = []
    for batch in batch_sizes:
        x = torch.randn(batch, *size, generator=torch.Generator().manual_seed(batch))
        runner = optimize(
            model, backend, precision=precision, example_input=x, threads=threads,
            model_name=name, cache_dir=cache_dir, calibration=calibration,
        )  # fmt: skip
        times = time_runners({backend: runner}, x, rounds)[backend]
        rows.append(make_row(name, backend, runner, batch, size, times, params, macs))
    if memory:
        last = rows[-1]
        last.peak_rss_mb, last.calls_rss_mb = memory_probe(
            {"weights": str(weights)}, last.picked, last.batch, threads
        )
    return rows
