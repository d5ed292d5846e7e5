"""Pictures of a network: the first layer's filters, feature maps of named layers and class
activation maps, as tensors (:mod:`.maps`, :mod:`.cam`) kept apart from their drawing
(:mod:`.draw`) and from the command's files (:mod:`.report`); and the classic optimizers'
paths on 2-D surfaces (:mod:`.optimizers`). See ``docs/visualize.md`` and
``docs/optimizers.md``.

The names below load on first use, so that registering the commands (``cnnzoo --help``)
imports no torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "CAM_METHODS": "cnnzoo.choices",
    "class_activation_map": "cnnzoo.visualize.cam",
    "default_cam_layer": "cnnzoo.visualize.cam",
    "feature_maps": "cnnzoo.visualize.maps",
    "filter_layer": "cnnzoo.visualize.maps",
    "filters": "cnnzoo.visualize.maps",
    "resolve_layers": "cnnzoo.visualize.maps",
    "stage_layers": "cnnzoo.visualize.maps",
}
__all__ = [
    "CAM_METHODS",
    "class_activation_map",
    "default_cam_layer",
    "feature_maps",
    "filter_layer",
    "filters",
    "resolve_layers",
    "stage_layers",
]

if TYPE_CHECKING:
    from cnnzoo.choices import CAM_METHODS
    from cnnzoo.visualize.cam import class_activation_map, default_cam_layer
    from cnnzoo.visualize.maps import (
        feature_maps,
        filter_layer,
        filters,
        resolve_layers,
        stage_layers,
    )


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'cnnzoo.visualize' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
