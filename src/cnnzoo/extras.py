"""Optional packages: import one, or say in one line which extra installs it.

The ONNX pieces (export, the ``onnxruntime`` and ``int8`` backends, reading an exported file's
metadata), the class activation maps (``visualize``: pytorch-grad-cam), the web app
(``explore``) and the OpenVINO backends need packages that a plain ``pip install cnnzoo`` does
not bring; every place that needs one imports it through :func:`require`, so the message and
the extra's name live here.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from cnnzoo.errors import ExportError

# Which extra brings which top-level module (pyproject.toml's optional-dependencies).
EXTRAS = {
    "onnx": "onnx",
    "onnxscript": "onnx",
    "onnxruntime": "onnx",
    "pytorch_grad_cam": "visualize",
    "starlette": "explore",
    "uvicorn": "explore",
    "openvino": "openvino",
    "nncf": "openvino",
}


def require(*modules: str, needed_by: str) -> list[ModuleType]:
    """Import ``modules`` (in order) and return them.

    Args:
        *modules: top-level module names, each one of :data:`EXTRAS`.
        needed_by: what needs them, the subject of the message, e.g. ``"ONNX export"``.

    Raises:
        ExportError: one or more is not installed; one line naming the extra to install and
            every missing module.
    """
    found, missing = [], []
    for name in modules:
        try:
            found.append(importlib.import_module(name))
        except ImportError:
            missing.append(name)
    if missing:
        extra = EXTRAS[missing[0]]
        raise ExportError(
            f"{needed_by} needs the {extra} extra: pip install 'cnnzoo[{extra}]' "
            f"(missing: {', '.join(missing)})"
        )
    return found
