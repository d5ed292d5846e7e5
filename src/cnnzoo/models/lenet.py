"""LeNet-5 — LeCun, Bottou, Bengio, Haffner, "Gradient-Based Learning Applied to Document
Recognition", Proceedings of the IEEE 86(11):2278-2324, 1998 (no arXiv id).

Variant:
- ``lenet5``: the network of the paper's Fig. 2 in its common modern form, on a 1×32×32 input:
  C1 6@28×28 (5×5 conv) → S2 2×2 pool → C3 16@10×10 (5×5 conv) → S4 2×2 pool →
  C5 120@1×1 (5×5 conv) → F6 84 → 10 outputs. 61,706 parameters, 416,520 multiply-adds.

C5 is a 5×5 convolution, as in the paper ("C5 is labeled as a convolutional layer, instead of a
fully-connected layer, because if LeNet-5 input were made bigger with everything else kept
constant, the feature map dimension would be larger than 1×1"). On a 32×32 input it equals a
fully-connected layer 400 → 120 (same parameters, same multiply-adds). F6 reads exactly 120
values, so the network takes inputs of 32 to 35 pixels a side only.

Departures from the 1998 paper (60,000 trainable parameters; 60,000 + 900 − 44 + 850 = 61,706):

- C3 connects every S2 map to every C3 map: 2,416 parameters instead of the 1,516 of the paper's
  Table I (+900). ``c3_table=True`` restores the sparse table (see :class:`MaskedConv2d`).
- S2 and S4 are plain pools. The paper's subsampling units multiply the 2×2 sum by a trainable
  coefficient, add a trainable bias and squash (12 + 32 parameters, −44).
- The output layer is a linear layer with bias (+850) read by softmax cross-entropy, instead of
  the paper's Euclidean RBF units with fixed prototypes (no trainable parameters).
- Squashing is plain ``tanh`` by default; the paper's ``f(a) = 1.7159 tanh(2a/3)`` (Appendix A)
  is ``act="scaled_tanh"``. ``act="relu"`` is the modern choice.
- Weights start from PyTorch's default initialisation, uniform in ±1/sqrt(F) for a unit with
  fan-in F; the paper draws them uniform in ±2.4/F.

Options ``pool="max" | "min" | "stochastic"`` replace the average pooling of S2 and S4.
Stochastic pooling samples in proportion to the activations, so it needs ``act="relu"``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from cnnzoo.errors import InputSizeError, InvalidArgumentError
from cnnzoo.layers import POOL_KINDS, make_pool
from cnnzoo.models.base import ZooModel
from cnnzoo.registry import register_model

_PAPER = "LeCun et al. 1998, Gradient-based learning applied to document recognition"
ACTS = ("tanh", "scaled_tanh", "relu")


class ScaledTanh(nn.Module):
    """The paper's squashing function ``f(a) = A tanh(S a)``, A = 1.7159, S = 2/3 (Appendix A):
    chosen so that f(±1) = ±1 and the gain is close to 1 around the origin."""

    amplitude = 1.7159
    slope = 2.0 / 3.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.amplitude * torch.tanh(self.slope * x)


class MaskedConv2d(nn.Conv2d):
    """A convolution in which output map ``o`` sees only the input maps ``table[o]``.

    The weight keeps its dense shape, so the state_dict is a plain convolution's ``weight`` and
    ``bias``; a fixed 0/1 mask (a non-persistent buffer derived from ``table``) multiplies it in
    every forward. Masked entries start at zero and get zero gradient (d(w·m)/dw = m), so they
    stay zero under SGD, momentum, Adam and weight decay; the forward ignores them whatever
    they hold.

    Args:
        in_chans: input maps.
        out_chans: output maps; ``len(table)`` must equal it.
        kernel_size: square kernel side.
        table: for each output map, the indices of the input maps it reads.
    """

    mask: torch.Tensor  # the buffer registered in __init__

    def __init__(
        self, in_chans: int, out_chans: int, kernel_size: int, table: tuple[tuple[int, ...], ...]
    ) -> None:
        super().__init__(in_chans, out_chans, kernel_size)
        if len(table) != out_chans:
            raise ValueError(f"table has {len(table)} rows for {out_chans} output maps")
        mask = torch.zeros(out_chans, in_chans, 1, 1)
        for out_map, inputs in enumerate(table):
            mask[out_map, list(inputs)] = 1.0
        self.table = table
        self.register_buffer("mask", mask, persistent=False)
        with torch.no_grad():
            self.weight.mul_(self.mask)

    @property
    def effective_params(self) -> int:
        """Weights the table connects plus one bias per output map (the paper's count)."""
        kernel = math.prod(self.kernel_size)
        return sum(len(inputs) for inputs in self.table) * kernel + self.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.weight * self.mask, self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, connections={sum(len(t) for t in self.table)}"


def _make_act(act: str) -> nn.Module:
    if act == "relu":
        return nn.ReLU(inplace=True)
    if act == "scaled_tanh":
        return ScaledTanh()
    return nn.Tanh()


class LeNet5(ZooModel):
    """C1-S2-C3-S4-C5 feature extractor, then F6 and a linear output layer.

    Args:
        widths: maps of C1, C3, C5 and units of F6.
        num_classes: classifier outputs.
        in_chans: input channels.
        kernel_size: side of the C1, C3 and C5 kernels.
        act: ``"tanh"``, ``"scaled_tanh"`` (the paper's 1.7159 tanh(2a/3)) or ``"relu"``.
        pool: S2/S4 pooling: ``"avg"``, ``"max"``, ``"min"`` or ``"stochastic"`` (needs relu).
        c3_table: for each C3 map, the S2 maps it reads (the paper's Table I); ``None`` connects
            all of them.
    """

    def __init__(
        self,
        widths: tuple[int, int, int, int],
        num_classes: int,
        in_chans: int,
        kernel_size: int = 5,
        act: str = "tanh",
        pool: str = "avg",
        c3_table: tuple[tuple[int, ...], ...] | None = None,
    ) -> None:
        super().__init__()
        if act not in ACTS:
            raise InvalidArgumentError(f"act must be one of {', '.join(ACTS)}, got {act!r}.")
        if pool not in POOL_KINDS:
            raise InvalidArgumentError(
                f"pool must be one of {', '.join(POOL_KINDS)}, got {pool!r}."
            )
        if pool == "stochastic" and act != "relu":
            raise InvalidArgumentError(
                f"pool='stochastic' needs non-negative activations, which act={act!r} does not "
                "give; use act='relu'."
            )
        c1, c3, c5, f6 = widths
        self.c1 = nn.Conv2d(in_chans, c1, kernel_size)
        self.act1 = _make_act(act)
        self.s2 = make_pool(pool, 2)
        self.c3: nn.Conv2d = (
            nn.Conv2d(c1, c3, kernel_size)
            if c3_table is None
            else MaskedConv2d(c1, c3, kernel_size, c3_table)
        )
        self.act3 = _make_act(act)
        self.s4 = make_pool(pool, 2)
        self.c5 = nn.Conv2d(c3, c5, kernel_size)
        self.act5 = _make_act(act)
        self.f6 = nn.Linear(c5, f6)
        self.act6 = _make_act(act)
        self.output = nn.Linear(f6, num_classes)

        self.num_classes = num_classes
        self.num_features = f6
        self.classifier_name = "output"
        self.stage_map = {
            "c1": ["c1", "act1", "s2"],
            "c3": ["c3", "act3", "s4"],
            "c5": ["c5", "act5"],
            "f6": ["f6", "act6"],
        }

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.s2(self.act1(self.c1(x)))  # (N, 6, 14, 14) at 32×32
        x = self.s4(self.act3(self.c3(x)))  # (N, 16, 5, 5)
        return self.act5(self.c5(x))  # (N, 120, 1, 1)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if x.shape[-2:] != (1, 1):
            raise InputSizeError(
                "lenet5 takes inputs of 32 to 35 pixels a side, for which C5 outputs 1×1 maps; "
                f"this input gave {x.shape[-2]}×{x.shape[-1]}."
            )
        x = self.act6(self.f6(torch.flatten(x, 1)))  # (N, 84)
        return x if pre_logits else self.output(x)


# Fig. 2: maps of C1, C3, C5 and units of F6.
LENET5_WIDTHS = (6, 16, 120, 84)

# Table I: the S2 maps that feed each C3 map. Maps 0-5 read 3 contiguous S2 maps, 6-11 read
# 4 contiguous, 12-14 read 4 discontinuous, 15 reads all 6: 60 connections. The paper breaks the
# symmetry so that different C3 maps extract different features.
C3_TABLE = (
    (0, 1, 2),
    (1, 2, 3),
    (2, 3, 4),
    (3, 4, 5),
    (0, 4, 5),
    (0, 1, 5),
    (0, 1, 2, 3),
    (1, 2, 3, 4),
    (2, 3, 4, 5),
    (0, 3, 4, 5),
    (0, 1, 4, 5),
    (0, 1, 2, 5),
    (0, 1, 3, 4),
    (1, 2, 4, 5),
    (0, 2, 3, 5),
    (0, 1, 2, 3, 4, 5),
)


@register_model(
    family="lenet",
    paper=_PAPER,
    year=1998,
    params=61_706,
    macs=416_520,
    input_size=(1, 32, 32),
    num_classes=10,
    min_size=32,
    max_size=35,
)
def lenet5(
    *,
    num_classes: int,
    in_chans: int,
    act: str = "tanh",
    pool: str = "avg",
    c3_table: bool = False,
) -> LeNet5:
    """LeNet-5 (modern form: full C3, plain pooling, linear output); ``c3_table=True`` uses the
    paper's sparse C3 connections. Parameters are stored densely, so the count stays 61,706 with
    the table; the trainable (effective) count is then 60,806 (C3: 1,516 of 2,416)."""
    return LeNet5(
        LENET5_WIDTHS,
        num_classes,
        in_chans,
        act=act,
        pool=pool,
        c3_table=C3_TABLE if c3_table else None,
    )
