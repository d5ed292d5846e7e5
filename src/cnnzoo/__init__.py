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
    # The zoo's lookups come from `cnnzoo.models`, which fills the registry as it imports.
    "ModelSpec": "cnnzoo.models",
    "get_spec": "cnnzoo.models",
    "list_models": "cnnzoo.models",
    "create_model": "cnnzoo.factory",
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
    from cnnzoo.factory import create_model
    from cnnzoo.models import ModelSpec, get_spec, list_models
    from cnnzoo.version import __version__


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'cnnzoo' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
