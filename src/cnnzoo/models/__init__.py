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
from cnnzoo import registry
from cnnzoo.models.base import ZooModel
from cnnzoo.registry import ModelSpec, get_spec, list_models


def build_model(
    name: str, *, num_classes: int | None = None, in_chans: int | None = None, **kwargs: object
) -> ZooModel:
    """:func:`cnnzoo.registry.build_model`, typed as the contract every family keeps."""
    model = registry.build_model(name, num_classes=num_classes, in_chans=in_chans, **kwargs)
    # The registry sits below the families and can promise only an nn.Module; every family's
    # network subclasses ZooModel (tests/test_models_contract.py builds each one).
    assert isinstance(model, ZooModel)
    return model


__all__ = ["ModelSpec", "build_model", "get_spec", "list_models"]
