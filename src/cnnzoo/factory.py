"""``cnnzoo.create_model``: a registered model by name, with random weights or a weight file's.

Above both the registry (which builds) and the weight loader (which builds through the
registry, then loads): timm's split of registry and factory, so that neither calls the other
back.
"""

from __future__ import annotations

import os

from cnnzoo.models import ZooModel, build_model
from cnnzoo.registry import check_arguments
from cnnzoo.weights import load_weights


def create_model(
    name: str,
    *,
    num_classes: int | None = None,
    in_chans: int | None = None,
    weights: str | os.PathLike[str] | None = None,
    **kwargs: object,
) -> ZooModel:
    """Build a registered model by name.

    Args:
        name: registry name, e.g. ``"resnet50"`` (``cnnzoo list`` shows them all).
        num_classes: size of the classifier output; the model's default when ``None`` (the
            file's when ``weights`` is given).
        in_chans: input channels; the model's default (``input_size[0]``) when ``None`` (the
            file's when ``weights`` is given).
        weights: path of a weight file to load (see :func:`cnnzoo.weights.load_weights`, which
            also returns the load report; this prints nothing and keeps only the model).
        **kwargs: family options, e.g. ``aux_logits=True`` for GoogLeNet.

    Raises:
        UnknownModelError: the name is not registered.
        UnknownArgumentError: a keyword argument the model does not take (also a ``TypeError``).
        InvalidArgumentError: ``num_classes`` or ``in_chans`` is not a positive integer.
        WeightsError: the weight file cannot be used (see :func:`cnnzoo.weights.load_weights`).
    """
    if weights is None:
        return build_model(name, num_classes=num_classes, in_chans=in_chans, **kwargs)
    check_arguments(name, num_classes, in_chans, kwargs)  # before the file is read
    return load_weights(name, weights, num_classes=num_classes, in_chans=in_chans, **kwargs)[0]
