"""Building blocks shared by families: Conv-BN-activation, squeeze-excitation, drop-path, LRN.

Module and attribute names follow torchvision (``Conv2dNormActivation`` is a ``Sequential`` with
the convolution at index 0 and the norm at 1; squeeze-excitation has ``fc1``/``fc2``) because
module names are the checkpoint format.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypedDict

import torch
from torch import nn


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a channel count to the nearest multiple of ``divisor`` (at least ``divisor``), never
    more than 10% down: the rule of the MobileNet/EfficientNet reference code (TF-slim's and the
    TPU code's ``round_filters``, torchvision's ``_make_divisible``)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class NormArgs(TypedDict):
    """``ConvBNAct``'s BatchNorm settings as one value, for families that change them all."""

    eps: float
    momentum: float


class ConvBNAct(nn.Sequential):
    """Convolution (no bias), BatchNorm, then an activation; 'same' padding for odd kernels.

    Args:
        in_chans: input channels.
        out_chans: output channels.
        kernel_size: square kernel side.
        stride: convolution stride.
        groups: convolution groups (``groups == in_chans`` makes it depthwise).
        act: activation class, or ``None`` for a linear (projection) block.
        eps: BatchNorm epsilon.
        momentum: BatchNorm momentum (PyTorch convention: the weight of the new statistic).
    """

    def __init__(
        self,
        in_chans: int,
        out_chans: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        act: Callable[..., nn.Module] | None = nn.ReLU,
        eps: float = 1e-5,
        momentum: float = 0.1,
    ) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(
                in_chans,
                out_chans,
                kernel_size,
                stride,
                padding=(kernel_size - 1) // 2,
                groups=groups,
                bias=False,
            ),
            nn.BatchNorm2d(out_chans, eps=eps, momentum=momentum),
        ]
        if act is not None:
            layers.append(act(inplace=True))
        super().__init__(*layers)
        self.out_channels = out_chans


class SqueezeExcitation(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018): reweight channels by a gate computed from their
    global average. ``squeeze_chans`` is the bottleneck width of the two 1×1 convolutions;
    ``scale_act`` is the gate (a sigmoid; MobileNet v3 uses a hard sigmoid)."""

    def __init__(
        self,
        in_chans: int,
        squeeze_chans: int,
        act: Callable[..., nn.Module] = nn.SiLU,
        scale_act: Callable[..., nn.Module] = nn.Sigmoid,
    ) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(in_chans, squeeze_chans, 1)
        self.fc2 = nn.Conv2d(squeeze_chans, in_chans, 1)
        self.activation = act()
        self.scale_activation = scale_act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.avgpool(x)  # (N, C, 1, 1)
        scale = self.scale_activation(self.fc2(self.activation(self.fc1(scale))))
        return x * scale


class DropPath(nn.Module):
    """Stochastic depth (Huang et al. 2016): in training, drop a residual branch for a whole
    sample with probability ``p`` and scale the survivors by ``1/(1-p)``; identity in eval."""

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop-path probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask.div_(keep)  # scale the mask, not x: bit-identical to torchvision

    def extra_repr(self) -> str:
        return f"p={self.p}"


def paper_lrn(size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0) -> nn.Module:
    """Local response normalisation with the constants as the AlexNet paper writes them.

    The paper computes ``b = a / (k + alpha * sum(a^2))^beta`` over ``size`` neighbouring
    channels; ``nn.LocalResponseNorm`` divides ``alpha`` by ``size`` first, so the paper's
    ``alpha`` is multiplied by ``size`` here to give the same layer.
    """
    return nn.LocalResponseNorm(size=size, alpha=alpha * size, beta=beta, k=k)
