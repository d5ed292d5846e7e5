"""Embeddings: what a network computes at a fixed layer, for transfer learning and retrieval.

``features(model, images)`` returns one vector per image: by default the vector the classifier
reads (``forward_head(pre_logits=True)``); with ``layer=`` the output of a stage (a label of
``model.stage_map``, e.g. ``"layer3"``) or of any module (its dotted path), averaged over space
(``pool="avg"``) or flattened (``pool="flatten"``). The forward pass stops at that layer.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from cnnzoo.errors import InvalidArgumentError
from cnnzoo.models.base import ZooModel

POOLS = ("avg", "flatten")


class _Reached(Exception):
    """Raised by the hook at the chosen layer: nothing after it needs computing."""


def features(
    model: nn.Module,
    images: torch.Tensor | Dataset | Iterable,
    *,
    layer: str | None = None,
    pool: str = "avg",
    batch_size: int = 256,
) -> torch.Tensor:
    """Embeddings of ``images`` from one layer of ``model``, in eval mode, without gradients.

    Args:
        model: a zoo model (any ``ZooModel``), e.g. from ``create_model(name, weights=PATH)``.
        images: a tensor ``(N, C, H, W)`` already prepared for the model, a dataset of
            ``(image, label)`` pairs (such as ``load_dataset(...).val``), or batches of either.
        layer: ``None`` for the classifier's input (``num_features`` wide); a stage label from
            ``model.stage_map``; or a module path from ``model.named_modules()``.
        pool: ``"avg"``: a 4-D output is averaged over its height and width, giving ``(N, C)``;
            ``"flatten"``: ``(N, C·H·W)``. Unused for ``layer=None`` (already a vector).
        batch_size: images per forward pass.

    Returns:
        A float tensor ``(N, D)`` on the CPU; the model's training mode is restored afterwards.

    Raises:
        InvalidArgumentError: an unknown layer or pool; no layer for a module that is not a
            zoo model (only a zoo model says which vector its classifier reads).
    """
    if pool not in POOLS:
        raise InvalidArgumentError(f"pool={pool!r} is not one of {', '.join(POOLS)}.")
    if layer is None and not isinstance(model, ZooModel):
        raise InvalidArgumentError(
            f"{type(model).__name__} is not a zoo model, so it has no classifier input to "
            f"read: pass layer= one of its module paths (see model.named_modules())."
        )
    target = None if layer is None else _module(model, layer)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    outputs = []
    try:
        with torch.inference_mode():
            for batch in _batches(images, batch_size):
                outputs.append(_embed(model, batch.to(device), target, pool).cpu())
    finally:
        model.train(was_training)
    return torch.cat(outputs)


def _module(model: nn.Module, layer: str) -> nn.Module:
    stage_map = getattr(model, "stage_map", {})
    if layer in stage_map:
        return model.get_submodule(stage_map[layer][-1])  # a stage ends with its last module
    try:
        return model.get_submodule(layer)
    except AttributeError:
        stages = ", ".join(stage_map) or "none"
        raise InvalidArgumentError(
            f"layer {layer!r} is neither a stage of {type(model).__name__} ({stages}) nor one of "
            f"its modules: see model.stage_map or model.named_modules()."
        ) from None


def _batches(images: torch.Tensor | Dataset | Iterable, batch_size: int) -> Iterable[torch.Tensor]:
    if isinstance(images, torch.Tensor):
        yield from images.split(batch_size)
        return
    source = DataLoader(images, batch_size=batch_size) if isinstance(images, Dataset) else images
    for batch in source:
        yield batch[0] if isinstance(batch, (tuple, list)) else batch


def _embed(model: nn.Module, x: torch.Tensor, target: nn.Module | None, pool: str) -> torch.Tensor:
    if target is None:
        assert isinstance(model, ZooModel)  # features() refused anything else
        return model.forward_head(model.forward_features(x), pre_logits=True)
    found: list[torch.Tensor] = []

    def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        found.append(output)
        raise _Reached

    handle = target.register_forward_hook(hook)
    try:
        model(x)
    except _Reached:
        pass
    finally:
        handle.remove()
    if not found:
        raise InvalidArgumentError(f"the chosen layer ({type(target).__name__}) never ran.")
    out = found[0]
    if out.ndim == 4 and pool == "avg":
        return out.mean(dim=(2, 3))
    return out.flatten(1)
