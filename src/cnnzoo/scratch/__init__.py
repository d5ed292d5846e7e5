"""A NumPy reference of the mechanism of a CNN (docs/scratch.md): the layers with their
backward passes (:mod:`cnnzoo.scratch.layers`), the optimizers' update rules
(:mod:`cnnzoo.scratch.optim`), LeNet-5 built from them (:mod:`cnnzoo.scratch.lenet`) and its
training loop (:mod:`cnnzoo.scratch.train`). Written to be read, not to be fast.

    from cnnzoo.scratch import layers, LeNet5, init_params
    y, cache = layers.conv2d_forward(x, w, b, stride=2, padding=1)
    dx, dw, db = layers.conv2d_backward(dy, cache)

These modules import NumPy and nothing else of cnnzoo, so that a reader can take them away
whole; ``cli.py`` (the ``cnnzoo scratch-train`` command) is the one module of the package that
reads the project's data. The names below load on first use, so that registering the command
imports nothing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "layers": None,
    "optim": None,
    "LeNet5": "lenet",
    "init_params": "lenet",
    "train_lenet5": "train",
}
__all__ = ["LeNet5", "init_params", "layers", "optim", "train_lenet5"]

if TYPE_CHECKING:
    from cnnzoo.scratch import layers, optim
    from cnnzoo.scratch.lenet import LeNet5, init_params
    from cnnzoo.scratch.train import train_lenet5


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'cnnzoo.scratch' has no attribute {name!r}")
    module = _EXPORTS[name]
    if module is None:
        return importlib.import_module(f"cnnzoo.scratch.{name}")
    return getattr(importlib.import_module(f"cnnzoo.scratch.{module}"), name)
