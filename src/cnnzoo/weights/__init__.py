"""Safe, offline loading of weight files into registered models, with a report of what happened.

Accepted files (read from a local path; nothing here touches the network):

- cnnzoo's ``.safetensors`` exports (``trainer`` writes them); their metadata names the model and
  records its :class:`Preprocessing` (channels, image size, resize rule, interpolation, mean/std,
  class names) and the dataset trained on;
- cnnzoo checkpoints (``last.pt``/``best.pt``: a dict with ``"model_name"`` and ``"model"``);
- torchvision ``.pth`` state_dicts of every architecture cnnzoo shares with torchvision (module
  names are the checkpoint format, so they load as they are), including DenseNet's legacy keys;
- timm state_dicts of ``mobilenetv1_100`` (into ``mobilenet_v1``) and ``efficientnet_b0`` …
  ``efficientnet_b4`` (into the EfficientNets of the same name), through a key mapping.

Safety: a pickled file is only ever read by ``torch.load(weights_only=True)``, which rebuilds
tensors and plain containers and refuses anything that would run code; there is no fallback.
A file whose name ends in hex digits (torchvision and torch.hub's ``name-<sha256 prefix>.pth``)
is hashed and refused when the digits do not match.

Every load returns a :class:`LoadReport` and attaches the weights' :class:`Preprocessing` to the
model as ``model.pretrained_cfg``.
"""

from cnnzoo.weights.load import load_weights
from cnnzoo.weights.preprocessing import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    TIMM_ARCHS,
    TORCHVISION_FILES,
    Preprocessing,
)
from cnnzoo.weights.report import LoadReport

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "TIMM_ARCHS",
    "TORCHVISION_FILES",
    "LoadReport",
    "Preprocessing",
    "load_weights",
]
