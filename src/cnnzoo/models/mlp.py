"""A multilayer perceptron: the fully-connected baseline that convolutional networks are
contrasted with. LeCun, Bottou, Bengio, Haffner, "Gradient-Based Learning Applied to Document
Recognition", Proc. IEEE 1998 (no arXiv id), §III.C, compares LeNet-5 with fully-connected
networks on MNIST, among them the "3-layer NN, 300+100 hidden units".

Variant:
- ``mlp``: the image flattened, hidden fully-connected layers with ReLU (default widths 300 and
  100, as the paper's 3-layer network), optional dropout after each hidden layer, and a linear
  output layer. 338,610 parameters and 338,200 multiply-adds on 1×32×32 with 10 classes.

Choices and departures:
- The input is 1×32×32, the size LeNet-5 reads, so that both networks take the same data;
  the paper's fully-connected networks read the unpadded MNIST images. The first layer reads
  a fixed number of values, so 32 is the only valid size.
- ReLU instead of the paper's sigmoid-type squashing units; dropout (0 by default) did not
  exist in 1998. Weights start from PyTorch's default initialisation.
- ``forward_features`` returns the last hidden layer's activations, (N, hidden[-1]): an MLP has
  no feature map, and this is the vector the output layer reads, so ``forward_head`` only
  applies the output layer (``pre_logits=True`` returns its input unchanged).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from cnnzoo.checks import check_rate, is_int
from cnnzoo.errors import InputSizeError, InvalidArgumentError
from cnnzoo.models.base import ZooModel
from cnnzoo.registry import register_model

_PAPER = "LeCun et al. 1998, Gradient-based learning applied to document recognition"


class MLP(ZooModel):
    """Flatten, hidden Linear-ReLU-Dropout layers, then one output Linear.

    Args:
        hidden: widths of the hidden layers, input side first (at least one).
        num_classes: classifier outputs.
        in_chans: input channels.
        img_size: side of the square input the first layer reads.
        dropout: dropout probability after each hidden layer's ReLU.
    """

    def __init__(
        self,
        hidden: Sequence[int],
        num_classes: int,
        in_chans: int,
        img_size: int = 32,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        hidden = tuple(hidden) if isinstance(hidden, Sequence) else (hidden,)
        if not hidden or not all(is_int(h) and h >= 1 for h in hidden):
            raise InvalidArgumentError(
                f"hidden must be a non-empty tuple of positive integer widths, got {hidden!r}."
            )
        check_rate("dropout", dropout)
        self.input_shape = (in_chans, img_size, img_size)
        self.flatten = nn.Flatten(1)
        layers: list[nn.Module] = []
        width = in_chans * img_size * img_size
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(inplace=True), nn.Dropout(p=dropout)]
            width = h
        self.hidden = nn.Sequential(*layers)
        self.fc = nn.Linear(width, num_classes)

        self.num_classes = num_classes
        self.num_features = width
        self.classifier_name = "fc"
        self.stage_map = {
            f"hidden{i + 1}": [f"hidden.{3 * i + j}" for j in range(3)] for i in range(len(hidden))
        }
        self.stage_map["hidden1"].insert(0, "flatten")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[1:]) != self.input_shape:
            c, s, _ = self.input_shape
            raise InputSizeError(
                f"mlp takes {c}×{s}×{s} inputs (its first layer reads {c * s * s} values); "
                f"got {'×'.join(map(str, x.shape[1:]))}."
            )
        return self.hidden(self.flatten(x))  # (N, hidden[-1])

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return x if pre_logits else self.fc(x)


# The paper's "3-layer NN, 300+100 hidden units" (§III.C).
MLP_HIDDEN = (300, 100)
MLP_IMG_SIZE = 32


@register_model(
    family="mlp",
    paper=_PAPER,
    year=1998,
    params=338_610,
    macs=338_200,  # by hand: 1024·300 + 300·100 + 100·10
    input_size=(1, MLP_IMG_SIZE, MLP_IMG_SIZE),
    num_classes=10,
    min_size=MLP_IMG_SIZE,
    max_size=MLP_IMG_SIZE,
)
def mlp(
    *,
    num_classes: int,
    in_chans: int,
    hidden: tuple[int, ...] = MLP_HIDDEN,
    dropout: float = 0.0,
) -> MLP:
    """Fully-connected baseline on 32×32 inputs; ``hidden`` gives the hidden widths."""
    return MLP(hidden, num_classes, in_chans, img_size=MLP_IMG_SIZE, dropout=dropout)
