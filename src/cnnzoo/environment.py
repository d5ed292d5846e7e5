"""The machine and the library versions, written next to every measurement and run: one
collector for the trainer's config.json, the comparison's results.json, the bench's JSON and
the key of ``auto``'s cache. The versions are :mod:`cnnzoo.version`'s, the same that
``cnnzoo --version`` prints (read from package metadata: recording them imports nothing).
"""

from __future__ import annotations

import os
import platform
from typing import Any

import torch

from cnnzoo.version import LIBRARIES, __version__, library_versions


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


def environment(threads: int | None = None) -> dict[str, dict[str, Any]]:
    """What shapes the numbers: ``{"machine": ..., "versions": ...}``.

    Args:
        threads: the intra-op thread count the work runs with; ``torch.get_num_threads()``
            when ``None``.

    Returns:
        ``machine``: ``cpu`` (:func:`cpu_name`), ``cores``, ``threads`` and ``cuda`` (the GPU's
        name, or ``None``); ``versions``: ``cnnzoo``, ``python`` and each library of
        :data:`cnnzoo.version.LIBRARIES` (``None`` when not installed).
    """
    installed = library_versions()
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
            **{name: installed.get(name) for name in LIBRARIES},
        },
    }
