"""bfloat16 training on the CPU (``--amp``), around a fault of torch's CPU convolution kernels.

With torch 2.14.1 on the CPU, the backward pass of a bfloat16 convolution returns garbage weight
gradients (NaN, or values near 1e37) when the convolution is strided, not grouped, has a kernel
wider than one pixel, and its input map is one pixel wide: e.g. ResNet-18's first 3×3 stride-2
convolution of its last stage on a 16-pixel image (its input there is 1×1). Measured with
``aten.convolution_backward`` against fp32 on the same bf16-rounded tensors: 1×1 and 2×1 inputs
at stride 2 or 3 gave non-finite weight gradients in 5-100% of the calls, in either memory format;
1×2, 2×2 and larger inputs, stride 1, 1×1 kernels and depthwise convolutions were all within
bf16's rounding (< 0.4% of the largest gradient). In training it shows as a NaN loss a few dozen
steps in, or as weights silently thrown far off.

:func:`guard_bf16_convolutions` makes every such convolution of a model compute in fp32 when its
input is that small and autocast is on (a one-pixel map costs nothing in fp32); everything else
keeps bf16. It changes no parameter, buffer or state_dict key.
"""

from __future__ import annotations

import torch
from torch import nn


class Bf16SafeConv2d(nn.Conv2d):
    """A :class:`torch.nn.Conv2d` that leaves CPU autocast for inputs one pixel high or wide (the
    shapes whose bf16 weight gradient torch gets wrong: module docstring)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and min(x.shape[-2:]) == 1 and torch.is_autocast_enabled("cpu"):
            with torch.autocast("cpu", enabled=False):
                return super().forward(x.float())
        return super().forward(x)


def at_risk(conv: nn.Module) -> bool:
    """Whether ``conv`` is a convolution whose bf16 weight gradient can go wrong on a one-pixel
    input: a 2-D convolution, strided, not grouped, with a kernel of more than one pixel."""
    return (
        isinstance(conv, nn.Conv2d)
        and conv.groups == 1
        and max(conv.stride) > 1
        and max(conv.kernel_size) > 1
    )


def guard_bf16_convolutions(model: nn.Module) -> int:
    """Make every at-risk convolution of ``model`` a :class:`Bf16SafeConv2d` (in place: the same
    module, parameters and state_dict); the number changed."""
    changed = 0
    for module in model.modules():
        if at_risk(module) and type(module) is nn.Conv2d:
            module.__class__ = Bf16SafeConv2d
            changed += 1
    return changed
