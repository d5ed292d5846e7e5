"""What ``backend="auto"`` measures and remembers.

:func:`measure` times the candidates side by side: a warm-up, then rounds in which every
candidate runs once, in an order that rotates from round to round, with a short pause before
each timed call; the median of each candidate's times is its speed. When the two fastest are
within 5%, a runoff times the two alone for half as long again, and their medians take in those
calls. The pause is 20 ms, as in ``cnnzoo bench``: torch's OpenMP workers keep spinning for a
few milliseconds after a call returns (measured here: 3.2 ms of CPU time used in the 2 ms after
a googlenet call at 32 px, 0.03 ms after an ONNX Runtime call, whose workers cnnzoo stops), so
with the 2 ms pause auto used before, an ONNX Runtime candidate timed right after a torch one
ran on cores still taken by torch's spinning workers. At small inputs, where a call lasts about
as long as the spinning, that made it 3-5× slower in auto's measurement (6.4 ms against 1.3 ms
alone) and auto picked a slower torch backend.

The choice is cached as one small JSON file per key (model, architecture, input shape, batch,
threads, machine, versions) in ``<cache_dir>/inference/``, written atomically.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import re
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnzoo.environment import environment
from cnnzoo.fileio import atomic_write_text
from cnnzoo.inference.runner import Candidate

BUDGET_S = 2.0  # timed rounds (pauses included) stop after about this long (≥ MIN_ROUNDS)
MIN_ROUNDS, MAX_ROUNDS = 5, 30
WARMUP = 2  # untimed calls per candidate first (allocator, caches, ORT's first run)
# Before each timed call: the previous call's spinning workers have gone to sleep (above).
PAUSE_S = 0.02
# When the two fastest medians are within RUNOFF_MARGIN, the two run again alone for about
# BUDGET_S / 2: on 2 shared cores one call's time spreads ±8% (interquartile, MobileNetV2 at
# batch 1), so a median of about ten calls could not tell ONNX Runtime from OpenVINO 5% apart.
RUNOFF_MARGIN = 0.05
CACHE_VERSION = 1


def measure(
    runners: Mapping[str, Callable[[torch.Tensor], Any]], x: torch.Tensor
) -> dict[str, float]:
    """Median seconds of one call of each runner on ``x``, from interleaved repeats."""
    names = list(runners)
    per_round = PAUSE_S * len(names)
    for name in names:
        for _ in range(WARMUP):
            start = time.perf_counter()
            runners[name](x)
        per_round += time.perf_counter() - start  # the last warm-up call
    times = interleaved(runners, x, _rounds(BUDGET_S, per_round), PAUSE_S)
    medians = {name: statistics.median(t) for name, t in times.items()}
    if len(names) < 2:
        return medians
    first, second = sorted(names, key=lambda name: medians[name])[:2]
    if medians[second] > medians[first] * (1 + RUNOFF_MARGIN):
        return medians
    # A near tie: the two alone for half the budget again; their medians over all their calls.
    pair = {name: runners[name] for name in (first, second)}
    per_round = 2 * PAUSE_S + medians[first] + medians[second]
    for name, more in interleaved(pair, x, _rounds(BUDGET_S / 2, per_round), PAUSE_S).items():
        medians[name] = statistics.median(times[name] + more)
    return medians


def _rounds(budget_s: float, per_round: float) -> int:
    """How many rounds of ``per_round`` seconds fit in ``budget_s``, within the bounds."""
    return min(MAX_ROUNDS, max(MIN_ROUNDS, int(budget_s / per_round)))


def fastest(medians: Mapping[str, float]) -> str:
    """The candidate with the smallest median; on a tie, the first listed (the simpler one:
    candidates are listed eager first)."""
    return min(medians, key=lambda name: medians[name])


def interleaved(
    runners: Mapping[str, Callable[[Any], Any]], x: Any, rounds: int, pause_s: float
) -> dict[str, list[float]]:
    """Seconds of each call of each runner on ``x``: ``rounds`` rounds in which every runner
    runs once, the order rotating from round to round (no runner always follows the same one),
    with a pause of ``pause_s`` before each timed call. No warm-up: do it first."""
    names = list(runners)
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(rounds):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            time.sleep(pause_s)
            start = time.perf_counter()
            runners[name](x)
            times[name].append(time.perf_counter() - start)
    return times


# --- the cache -------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """``$CNNZOO_CACHE``, else ``~/.cache/cnnzoo``."""
    return Path(os.environ.get("CNNZOO_CACHE") or Path.home() / ".cache" / "cnnzoo")


def architecture_hash(model: nn.Module) -> str:
    """A hash of the class and the state_dict's names, shapes and dtypes: it changes with the
    architecture (e.g. another number of classes), not with the weights' values, which do not
    change which backend is fastest."""
    text = type(model).__qualname__ + "".join(
        f"|{k}:{tuple(v.shape)}:{v.dtype}" for k, v in model.state_dict().items()
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cache_key(
    model: nn.Module, name: str, example: torch.Tensor, threads: int, candidates: Sequence[str]
) -> dict[str, Any]:
    """Everything the choice depends on."""
    env = environment(threads)
    versions = env["versions"]
    return {
        "version": CACHE_VERSION,
        "model": name,
        "architecture": architecture_hash(model),
        "input_shape": list(example.shape),
        "batch": len(example),
        "threads": threads,
        "machine": env["machine"]["cpu"],
        "torch": versions["torch"],
        "onnxruntime": versions["onnxruntime"],
        "openvino": versions["openvino"],
        "cnnzoo": versions["cnnzoo"],
        "candidates": list(candidates),
    }


def cache_file(cache_dir: Path, key: dict[str, Any]) -> Path:
    """``<cache_dir>/inference/auto-<model>-<hash of key>.json``."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", key["model"])[:60]
    return Path(cache_dir) / "inference" / f"auto-{slug}-{digest}.json"


def read_cache(path: Path, key: dict[str, Any]) -> dict[str, Any] | None:
    """The cached entry at ``path`` if it is readable and for exactly ``key``."""
    try:
        entry = json.loads(path.read_text())
    except (OSError, ValueError):  # none yet, or damaged: measure again
        return None
    if not isinstance(entry, dict) or entry.get("key") != key:
        return None
    if entry.get("backend") not in key["candidates"]:
        return None
    return entry


def write_cache(path: Path, key: dict[str, Any], backend: str, candidates: list[Candidate]) -> str:
    """Write the choice; return ``""``, or why it could not be written (not an error: the
    next call measures again)."""
    entry = {
        "key": key,
        "backend": backend,
        "candidates": [dataclasses.asdict(c) for c in candidates],
        "measured_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(entry, indent=1) + "\n")
    except OSError as err:
        return f"cache not written to {path}: {err.strerror or err}"
    return ""


def cached_candidates(entry: dict[str, Any]) -> list[Candidate]:
    """The candidates recorded in a cache entry (fields it lacks take their defaults)."""
    fields = {f.name for f in dataclasses.fields(Candidate)}
    return [
        Candidate(**{k: v for k, v in c.items() if k in fields})
        for c in entry.get("candidates", [])
        if isinstance(c, dict) and isinstance(c.get("name"), str)
    ]
