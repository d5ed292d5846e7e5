"""Pooling: max, average, min and stochastic.

Stochastic pooling (Zeiler & Fergus 2013, arXiv:1301.3557) treats each window of non-negative
activations ``a_i`` as a distribution ``p_i = a_i / sum_j a_j``:

- in training it outputs one activation of the window, drawn with probability ``p_i`` (so the
  gradient reaches that element only);
- in eval it outputs the probability-weighted average ``sum_i p_i a_i = sum a_i² / sum a_i``.

It is defined for non-negative inputs (put it after a ReLU). A negative input raises
:class:`~cnnzoo.errors.InvalidArgumentError`; a window of zeros outputs 0 in both modes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cnnzoo.errors import InvalidArgumentError

POOL_KINDS = ("max", "avg", "min", "stochastic")


class MinPool2d(nn.MaxPool2d):
    """Min pooling, computed as ``-maxpool(-x)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -super().forward(-x)


class StochasticPool2d(nn.Module):
    """Stochastic pooling over ``kernel_size`` windows with ``stride`` (defaults to the kernel)."""

    def __init__(self, kernel_size: int, stride: int | None = None, padding: int = 0) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding = padding

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        k, s, p = self.kernel_size, self.stride, self.padding
        if x.device.type != "meta" and bool((x < 0).any()):
            raise InvalidArgumentError(
                "stochastic pooling needs non-negative inputs (it samples in proportion to the "
                "activations); place it after a ReLU or use pool='max'."
            )
        out_h = (h + 2 * p - k) // s + 1
        out_w = (w + 2 * p - k) // s + 1
        # Zero padding adds zero-probability entries, so it never changes the result.
        windows = F.unfold(x.reshape(n * c, 1, h, w), k, padding=p, stride=s)  # (NC, k², L)
        windows = windows.transpose(1, 2)  # (NC, L, k²)
        total = windows.sum(dim=-1, keepdim=True)
        if self.training:
            # Inverse-CDF sampling: index i is chosen when cumsum[i-1] <= u < cumsum[i], which
            # has probability a_i / total and never picks a zero entry (all-zero windows give 0).
            u = torch.rand_like(total) * total
            index = (windows.cumsum(dim=-1) <= u).sum(dim=-1, keepdim=True)
            index = index.clamp(max=k * k - 1)
            out = windows.gather(-1, index).squeeze(-1)
        else:
            squares = (windows * windows).sum(dim=-1)
            denom = total.squeeze(-1)
            out = torch.where(denom > 0, squares / denom.clamp_min(torch.finfo(x.dtype).tiny), 0)
        return out.reshape(n, c, out_h, out_w)


def make_pool(
    kind: str, kernel_size: int, stride: int | None = None, padding: int = 0
) -> nn.Module:
    """A pooling layer by name: ``"max"``, ``"avg"``, ``"min"`` or ``"stochastic"``."""
    if kind == "max":
        return nn.MaxPool2d(kernel_size, stride, padding)
    if kind == "avg":
        return nn.AvgPool2d(kernel_size, stride, padding)
    if kind == "min":
        return MinPool2d(kernel_size, stride, padding)
    if kind == "stochastic":
        return StochasticPool2d(kernel_size, stride, padding)
    raise InvalidArgumentError(f"unknown pool {kind!r}: choose one of {', '.join(POOL_KINDS)}.")
