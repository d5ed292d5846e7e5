"""Per-layer rows and totals, computed on the meta device (shapes only, no arithmetic).

Only ``Conv2d`` and ``Linear`` carry multiply-adds in this count (the convention of torchvision's
``_ops`` and of the papers); every other leaf reports its parameters and output shape only.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn

from cnnzoo.analysis import formulas


@dataclass
class LayerRow:
    """One leaf module's call: its name, type, output shape, parameters and MACs."""

    name: str
    type: str
    output_shape: tuple[int, ...]
    params: int
    macs: int


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters; each shared tensor is counted once."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def leaf_macs(module: nn.Module, output_shape: tuple[int, ...]) -> int | None:
    """Multiply-adds of one call of a ``Conv2d`` or ``Linear`` with that output shape.

    ``None`` for every other module type: the caller decides whether that type is known to
    cost no multiply-adds by the conv + linear convention, or has no formula.
    """
    if isinstance(module, nn.Conv2d):
        rows, _, h, w = output_shape
        return rows * formulas.conv_macs(
            module.in_channels, module.out_channels, module.kernel_size, h, w, module.groups
        )
    if isinstance(module, nn.Linear):
        rows = math.prod(output_shape[:-1])
        return formulas.linear_macs(module.in_features, module.out_features, rows)
    return None


def _macs(module: nn.Module, out: torch.Tensor) -> int:
    return leaf_macs(module, tuple(out.shape)) or 0


def layer_rows(
    model: nn.Module, input_size: tuple[int, ...], batch_size: int = 1
) -> list[LayerRow]:
    """Run one shape-only forward pass in eval mode and return a row per leaf-module call.

    The pass runs on the meta device (no memory for activations, no arithmetic). A model with
    real weights is copied there first, so the caller's model, its hooks and its mode are left
    exactly as they were.
    """
    if any(p.device.type != "meta" for p in model.parameters()):
        model = copy.deepcopy(model).to("meta")
    rows: list[LayerRow] = []
    names = {m: n for n, m in model.named_modules()}

    def hook(module: nn.Module, _inputs: object, out: object) -> None:
        if not isinstance(out, torch.Tensor):
            return
        own = sum(p.numel() for p in module.parameters(recurse=False))
        rows.append(
            LayerRow(
                names[module], type(module).__name__, tuple(out.shape), own, _macs(module, out)
            )
        )

    leaves = [m for m in model.modules() if next(m.children(), None) is None]
    handles = [m.register_forward_hook(hook) for m in leaves]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.empty((batch_size, *input_size), device="meta"))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return rows


def model_macs(model: nn.Module, input_size: tuple[int, ...]) -> int:
    """Conv + linear multiply-adds of one image of ``input_size`` = (C, H, W)."""
    return sum(r.macs for r in layer_rows(model, input_size))
