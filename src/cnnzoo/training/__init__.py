"""Training: the named optimizers and schedules (optim), the loop and checkpoints.

The names below load on first use, so that ``cnnzoo.training.config`` (the options, read while
the command line builds its parser) imports no torch."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = ["OPTIMIZERS", "SCHEDULES", "build_optimizer", "build_scheduler"]

if TYPE_CHECKING:
    from cnnzoo.training.optim import OPTIMIZERS, SCHEDULES, build_optimizer, build_scheduler


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("cnnzoo.training.optim"), name)
    # Submodules (`from cnnzoo.training import trainer`) are found by the import system itself.
    raise AttributeError(f"module 'cnnzoo.training' has no attribute {name!r}")
