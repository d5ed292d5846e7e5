"""One file per family; importing this package registers every model, in paper order.

Look models up from here (``from cnnzoo.models import get_spec``), not from
``cnnzoo.registry``: the registry is the mechanism and imports no family, this package is the
filled zoo.
"""

# isort: skip_file
from cnnzoo.models import (  # noqa: F401
    lenet,
    alexnet,
    vgg,
    googlenet,
    resnet,
    densenet,
    mobilenet,
    efficientnet,
    mlp,
)
from cnnzoo.registry import ModelSpec, build_model, get_spec, list_models

__all__ = ["ModelSpec", "build_model", "get_spec", "list_models"]
