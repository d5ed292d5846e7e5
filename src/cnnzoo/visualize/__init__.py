"""Pictures of a network: the first layer's filters, feature maps of named layers and class
activation maps, as tensors (:mod:`.maps`, :mod:`.cam`) kept apart from their drawing
(:mod:`.draw`) and from the command's files (:mod:`.report`). See ``docs/visualize.md``.
"""

from cnnzoo.visualize.cam import CAM_METHODS, class_activation_map, default_cam_layer
from cnnzoo.visualize.maps import (
    feature_maps,
    filter_layer,
    filters,
    resolve_layers,
    stage_layers,
)

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
