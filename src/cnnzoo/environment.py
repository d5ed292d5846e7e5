"""The machine and the library versions, written next to every measurement and run: one
collector for the trainer's config.json, the comparison's results.json, the bench's JSON and
the key of ``auto``'s cache.

The required libraries report the version of the module that runs (``torch.__version__``
carries the build, e.g. ``+cu130``, which the package metadata does not); the optional
onnxruntime is read from its package metadata, so that recording it imports nothing (it takes a
third of a second) and reads ``None`` when it is not installed.
"""

from __future__ import annotations

import importlib
import os
import platform
from importlib import metadata
from typing import Any

import torch

# Every library whose version can change a number cnnzoo reports: the required ones, then the
# optional ones.
REQUIRED = ("torch", "torchvision", "numpy", "matplotlib")
OPTIONAL = ("onnxruntime",)


def cpu_name() -> str:
    """The CPU model (``/proc/cpuinfo`` on Linux, else ``platform.processor()``) and the
    architecture, e.g. ``"AMD EPYC 9654 96-Core Processor (x86_64)"``."""
    name = ""
    try:
        with open("/proc/cpuinfo") as f:
            name = next(
                (ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), ""
            )
    except OSError:
        pass
    return f"{name or platform.processor() or 'unknown CPU'} ({platform.machine()})"


def _version(package: str) -> str | None:
    if package in REQUIRED:
        return str(importlib.import_module(package).__version__)
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def environment(threads: int | None = None) -> dict[str, dict[str, Any]]:
    """What shapes the numbers: ``{"machine": ..., "versions": ...}``.

    Args:
        threads: the intra-op thread count the work runs with; ``torch.get_num_threads()``
            when ``None``.

    Returns:
        ``machine``: ``cpu`` (:func:`cpu_name`), ``cores``, ``threads`` and ``cuda`` (the GPU's
        name, or ``None``); ``versions``: ``cnnzoo``, ``python`` and each of :data:`REQUIRED` and
        :data:`OPTIONAL` (``None`` when not installed).
    """
    from cnnzoo import __version__

    return {
        "machine": {
            "cpu": cpu_name(),
            "cores": os.cpu_count(),
            "threads": torch.get_num_threads() if threads is None else threads,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        },
        "versions": {
            "cnnzoo": __version__,
            "python": platform.python_version(),
            **{name: _version(name) for name in REQUIRED + OPTIONAL},
        },
    }
