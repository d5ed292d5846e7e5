"""cnnzoo: the classic convolutional neural networks, built, explained, trained and compared.

The names below load on first use, so that ``import cnnzoo`` (and with it the command line's
``--help`` and ``--version``) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "__version__": "cnnzoo.version",
    "summarize": "cnnzoo.analysis",
    "features": "cnnzoo.embeddings",
    "CnnzooError": "cnnzoo.errors",
    "ModelSpec": "cnnzoo.registry",
    "create_model": "cnnzoo.registry",
    "get_spec": "cnnzoo.registry",
    "list_models": "cnnzoo.registry",
}
__all__ = [
    "CnnzooError",
    "ModelSpec",
    "__version__",
    "create_model",
    "features",
    "get_spec",
    "list_models",
    "summarize",
]

if TYPE_CHECKING:
    from cnnzoo.analysis import summarize
    from cnnzoo.embeddings import features
    from cnnzoo.errors import CnnzooError
    from cnnzoo.registry import ModelSpec, create_model, get_spec, list_models
    from cnnzoo.version import __version__


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'cnnzoo' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
