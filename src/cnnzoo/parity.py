"""Does another engine compute what the model computes? One comparison, used by the export's
file checks and by every inference backend's check against eager.

The tolerance is DESIGN.md §4's for different engines: the largest absolute difference within
``1e-4 · max(1, max |y|)`` (``y`` the eager fp32 output) and every row's top-1 class the same,
widened only where the model's own fp32 output is further than that from exact arithmetic.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

RTOL = 1e-4  # different engines: 1e-4 · max(1, max |y|) and the same top-1 (DESIGN.md §4)
# ... unless the model's own fp32 forward is further than that from exact arithmetic. Two fp32
# evaluations each within e of the exact value differ by up to 2e; 4e still rejects an engine
# more than 3× less exact than eager. (A trained network with near-zero BatchNorm variances can
# amplify rounding 300-fold on inputs unlike its data: eager itself then misses float64 by
# 1e-3 of max |y|, and so does every other correct engine.)
ROUNDING_FACTOR = 4


@dataclass
class ParityCheck:
    """One comparison of another engine's outputs with the eager model's.

    Attributes:
        name: what was fed (``"random"`` or ``"real images"``).
        batch: the batch size.
        max_abs_diff: largest absolute difference between the two outputs.
        tolerance: ``1e-4 · max(1, max |y|)``, ``y`` the eager output, or
            ``ROUNDING_FACTOR × rounding_error`` where that is larger.
        top1_agreement: fraction of rows whose top-1 class is the same in both.
        rounding_error: how far the eager fp32 output is from the model run in float64
            (measured only when the difference exceeds the first tolerance; else ``None``).
    """

    name: str
    batch: int
    max_abs_diff: float
    tolerance: float
    top1_agreement: float
    rounding_error: float | None = None

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= self.tolerance and self.top1_agreement == 1.0  # NaN fails

    def line(self) -> str:
        agree = round(self.top1_agreement * self.batch)
        rounding = ""
        if self.rounding_error is not None:
            rounding = f", eager's own fp32 rounding error {self.rounding_error:.2e}"
        return (
            f"{self.name}, batch {self.batch}: max |Δ| {self.max_abs_diff:.2e} (tolerance "
            f"{self.tolerance:.2e}{rounding}), top-1 {agree}/{self.batch} agree"
        )


def compare_outputs(
    name: str, want: torch.Tensor, got: Any, rounding_error: Callable[[], float]
) -> ParityCheck:
    """Check ``got`` (another engine's output) against ``want`` (the model's, fp32, eager):
    max |Δ| within ``1e-4 · max(1, max |want|)`` and the same top-1 (DESIGN.md §4); a wrong
    shape fails. Where the difference exceeds that, ``rounding_error()`` is asked how far
    ``want`` is from exact arithmetic (:func:`fp32_rounding_error`), and the tolerance becomes
    ``ROUNDING_FACTOR`` times that if it is larger: an engine is not blamed for differing from
    eager by what eager itself misses the exact value by."""
    want = want.detach().float().cpu()
    tolerance = RTOL * max(1.0, want.abs().max().item())
    if not isinstance(got, torch.Tensor) or got.shape != want.shape:
        return ParityCheck(name, len(want), float("inf"), tolerance, 0.0)
    got = got.detach().float().cpu()
    check = ParityCheck(
        name,
        len(want),
        (got - want).abs().max().item(),
        tolerance,
        (got.argmax(1) == want.argmax(1)).float().mean().item(),
    )
    if check.max_abs_diff > tolerance and math.isfinite(check.max_abs_diff):
        check.rounding_error = rounding_error()
        check.tolerance = max(tolerance, ROUNDING_FACTOR * check.rounding_error)
    return check


def fp32_rounding_error(model: nn.Module, x: torch.Tensor, want: torch.Tensor) -> float:
    """max |want − model(x) in float64|: how far the model's fp32 output ``want`` is from exact
    arithmetic (a float64 copy of the model, the user's left as it is)."""
    exact = copy.deepcopy(model).double()
    with torch.no_grad():
        reference = exact(x.detach().to(model_device(model), torch.float64))
    return (want.double() - reference.detach().cpu()).abs().max().item()


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (the CPU for a model without any)."""
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")
