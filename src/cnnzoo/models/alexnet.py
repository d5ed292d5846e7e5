"""AlexNet — Krizhevsky, Sutskever, Hinton, "ImageNet Classification with Deep Convolutional
Neural Networks", NIPS 2012 (no arXiv id); and Krizhevsky, "One weird trick for parallelizing
convolutional neural networks", 2014 (arXiv:1404.5997).

Variants:
- ``alexnet``: torchvision's AlexNet, which follows the 2014 "one weird trick" network rather than
  the 2012 paper: 64/192/384/256/256 kernels, conv1 padded by 2 for 224×224 inputs, no grouping,
  no response normalisation, dropout before fc6 and fc7, and an adaptive 6×6 average pool so any
  input from 63 pixels up works. state_dict-compatible with torchvision; PyTorch's default
  initialisation, as torchvision. 61,100,840 parameters, 714,188,480 multiply-adds at 224.
- ``alexnet_paper``: the 2012 network at 227×227 (the paper's "224×224" does not give its 55×55
  conv1 maps without padding; 227 does). 96/256/384/384/256 kernels: conv1 11×11 stride 4,
  conv2 5×5 pad 2, conv3-5 3×3 pad 1. conv2, conv4 and conv5 are two-group convolutions, the
  paper's split over two GPUs (conv3 and the fully-connected layers read both halves).
  Local response normalisation with the paper's k=2, n=5, α=1e-4, β=0.75 follows the ReLU of
  conv1 and conv2; overlapping 3×3 stride-2 max-pools follow both normalisations and conv5.
  fc6-fc7-fc8 are 9216-4096-4096-classes, with dropout 0.5 on the outputs of fc6 and fc7 (§4.2).
  No adaptive pool: fc6 reads a 6×6 map, so inputs of 227 to 258 pixels a side work.
  Initialisation as §5: weights N(0, 0.01²); biases 1 in conv2, conv4, conv5, fc6 and fc7 (to
  give the ReLUs positive inputs early on), 0 elsewhere.
  ``groups=1`` merges the two halves (the single-GPU network, 62,378,344 parameters and
  1,135,256,096 multiply-adds instead of 60,965,224 and 724,406,816).

Not reproduced from the paper: the training-time PCA colour augmentation and the test-time
10-crop averaging (data pipeline, not architecture).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from cnnzoo.errors import InputSizeError, InvalidArgumentError
from cnnzoo.layers import paper_lrn
from cnnzoo.models.base import ZooModel
from cnnzoo.registry import register_model

_PAPER = (
    "Krizhevsky, Sutskever, Hinton 2012, ImageNet Classification with Deep Convolutional "
    "Neural Networks (NIPS 2012)"
)
_TV_PAPER = (
    "Krizhevsky 2014, One weird trick for parallelizing convolutional neural networks "
    "(arXiv:1404.5997)"
)


class ConvSpec(NamedTuple):
    """One convolutional layer; each is followed by a ReLU."""

    out_chans: int
    kernel: int
    stride: int
    padding: int
    groups: int
    lrn: bool  # local response normalisation after the ReLU
    pool: bool  # overlapping 3×3 stride-2 max-pool last


class AlexNet(ZooModel):
    """Five convolutional layers (``features``) and three fully-connected ones (``classifier``).

    Module indices follow torchvision (``features.0`` is conv1, ``classifier.6`` is fc8).

    Args:
        convs: the convolutional layers, conv1 first.
        num_classes: classifier outputs.
        in_chans: input channels.
        dropout: dropout probability of the two hidden fully-connected layers.
        paper: follow the 2012 paper where torchvision departs from it: no adaptive pool (a
            fixed input size), dropout on the outputs of fc6 and fc7 rather than on their
            inputs, and the paper's initialisation.
    """

    def __init__(
        self,
        convs: tuple[ConvSpec, ...],
        num_classes: int,
        in_chans: int,
        dropout: float = 0.5,
        paper: bool = False,
    ) -> None:
        super().__init__()
        if (
            not isinstance(dropout, (int, float))
            or isinstance(dropout, bool)
            or not 0 <= dropout < 1
        ):
            raise InvalidArgumentError(f"dropout must be a number in [0, 1), got {dropout!r}.")
        layers: list[nn.Module] = []
        self.stage_map: dict[str, list[str]] = {}
        chans = in_chans
        for i, spec in enumerate(convs):
            start = len(layers)
            layers += [
                nn.Conv2d(
                    chans,
                    spec.out_chans,
                    spec.kernel,
                    spec.stride,
                    spec.padding,
                    groups=spec.groups,
                ),
                nn.ReLU(inplace=True),
            ]
            if spec.lrn:
                layers.append(paper_lrn(size=5, alpha=1e-4, beta=0.75, k=2.0))
            if spec.pool:
                layers.append(nn.MaxPool2d(kernel_size=3, stride=2))
            self.stage_map[f"conv{i + 1}"] = [f"features.{j}" for j in range(start, len(layers))]
            chans = spec.out_chans
        self.features = nn.Sequential(*layers)
        self.avgpool: nn.Module | None = None if paper else nn.AdaptiveAvgPool2d((6, 6))

        fc6 = nn.Linear(chans * 6 * 6, FC_WIDTH)
        fc7 = nn.Linear(FC_WIDTH, FC_WIDTH)
        relu6, relu7 = nn.ReLU(inplace=True), nn.ReLU(inplace=True)
        drop6, drop7 = nn.Dropout(p=dropout), nn.Dropout(p=dropout)
        if paper:
            hidden = [fc6, relu6, drop6, fc7, relu7, drop7]
        else:
            hidden = [drop6, fc6, relu6, drop7, fc7, relu7]
        self.classifier = nn.Sequential(*hidden, nn.Linear(FC_WIDTH, num_classes))
        self.stage_map["fc6"] = ["classifier.0", "classifier.1", "classifier.2"]
        self.stage_map["fc7"] = ["classifier.3", "classifier.4", "classifier.5"]

        self.num_classes = num_classes
        self.num_features = FC_WIDTH
        self.classifier_name = "classifier.6"

        if paper:
            convs_and_fcs = [m for m in self.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
            for layer_number, m in enumerate(convs_and_fcs, start=1):
                nn.init.normal_(m.weight, mean=0.0, std=0.01)
                if m.bias is not None:
                    bias = 1.0 if layer_number in PAPER_UNIT_BIAS_LAYERS else 0.0
                    nn.init.constant_(m.bias, bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # (N, 256, 6, 6) at 224 (torchvision) or 227 (paper)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.avgpool is not None:
            x = self.avgpool(x)  # (N, C, 6, 6)
        elif x.shape[-2:] != (6, 6):
            raise InputSizeError(
                "alexnet_paper takes inputs of 227 to 258 pixels a side, for which conv5 gives "
                f"the 6×6 maps fc6 reads; this input gave {x.shape[-2]}×{x.shape[-1]}."
            )
        x = torch.flatten(x, 1)  # (N, C·36)
        for layer in self.classifier[:-1]:
            x = layer(x)  # (N, 4096)
        return x if pre_logits else self.classifier[-1](x)


# torchvision's configuration (torchvision/models/alexnet.py).
TORCHVISION_CONVS = (
    ConvSpec(64, 11, 4, 2, 1, lrn=False, pool=True),
    ConvSpec(192, 5, 1, 2, 1, lrn=False, pool=True),
    ConvSpec(384, 3, 1, 1, 1, lrn=False, pool=False),
    ConvSpec(256, 3, 1, 1, 1, lrn=False, pool=False),
    ConvSpec(256, 3, 1, 1, 1, lrn=False, pool=True),
)

# The 2012 paper, §3.5 and Fig. 2; groups=2 is the two-GPU split of conv2, conv4 and conv5.
PAPER_CONVS = (
    ConvSpec(96, 11, 4, 0, 1, lrn=True, pool=True),
    ConvSpec(256, 5, 1, 2, 2, lrn=True, pool=True),
    ConvSpec(384, 3, 1, 1, 1, lrn=False, pool=False),
    ConvSpec(384, 3, 1, 1, 2, lrn=False, pool=False),
    ConvSpec(256, 3, 1, 1, 2, lrn=False, pool=True),
)
FC_WIDTH = 4096

# §5: "We initialized the neuron biases in the second, fourth, and fifth convolutional layers,
# as well as in the fully-connected hidden layers, with the constant 1." Layers numbered 1-8.
PAPER_UNIT_BIAS_LAYERS = (2, 4, 5, 6, 7)


@register_model(
    family="alexnet",
    paper=_TV_PAPER,
    year=2014,
    min_size=63,
    torchvision="alexnet",
    params=61_100_840,
    macs=714_188_480,
)
def alexnet(*, num_classes: int, in_chans: int, dropout: float = 0.5) -> AlexNet:
    """AlexNet as torchvision builds it ("one weird trick" layout, adaptive 6×6 pool)."""
    return AlexNet(TORCHVISION_CONVS, num_classes, in_chans, dropout=dropout)


@register_model(
    family="alexnet",
    paper=_PAPER,
    year=2012,
    params=60_965_224,
    macs=724_406_816,
    input_size=(3, 227, 227),
    min_size=227,
    max_size=258,
)
def alexnet_paper(
    *, num_classes: int, in_chans: int, groups: int = 2, dropout: float = 0.5
) -> AlexNet:
    """The 2012 AlexNet at 227×227: LRN, overlapping pools, two-group conv2/4/5 (``groups=2``)
    or the merged single-GPU network (``groups=1``), the paper's initialisation."""
    if isinstance(groups, bool) or groups not in (1, 2):
        raise InvalidArgumentError(
            f"groups must be 2 (the paper's two-GPU split) or 1 (merged), got {groups!r}."
        )
    convs = tuple(c._replace(groups=groups) if c.groups > 1 else c for c in PAPER_CONVS)
    return AlexNet(convs, num_classes, in_chans, dropout=dropout, paper=True)
