"""The classic optimizers' paths on 2-D loss surfaces (docs/optimizers.md, "Paths"): the paths
as data from ``torch.optim`` (:func:`optimizer_paths`), and their drawing
(:func:`draw_paths`, :func:`animate_paths`) kept apart, so that a web page can plot the same
data its own way.

    from cnnzoo.visualize.optimizers import optimizer_paths, draw_paths
    paths = optimizer_paths("ill-conditioned", steps=100, lrs={"sgd": 0.5})
    paths.points["sgd"]  # (101, 2): the start and the point after each step
    draw_paths(paths, "paths.png")

The names below load on first use, so that ``cnnzoo``'s command line can register
``optimizers`` (``cnnzoo.visualize.optimizers.cli``) without importing torch and matplotlib.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "FUNCTIONS": "paths",
    "OPTIMIZERS": "paths",
    "SURFACES": "paths",
    "Paths": "paths",
    "Surface": "paths",
    "optimizer_paths": "paths",
    "steps_to_reach": "paths",
    "animate_paths": "draw",
    "draw_paths": "draw",
}
__all__ = [
    "FUNCTIONS",
    "OPTIMIZERS",
    "SURFACES",
    "Paths",
    "Surface",
    "animate_paths",
    "draw_paths",
    "optimizer_paths",
    "steps_to_reach",
]

if TYPE_CHECKING:
    from cnnzoo.visualize.optimizers.draw import animate_paths, draw_paths
    from cnnzoo.visualize.optimizers.paths import (
        FUNCTIONS,
        OPTIMIZERS,
        SURFACES,
        Paths,
        Surface,
        optimizer_paths,
        steps_to_reach,
    )


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'cnnzoo.visualize.optimizers' has no attribute {name!r}")
    return getattr(importlib.import_module(f"cnnzoo.visualize.optimizers.{module}"), name)
