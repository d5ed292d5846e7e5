"""DenseNet — Huang, Liu, van der Maaten, Weinberger, "Densely Connected Convolutional Networks",
CVPR 2017 (arXiv:1608.06993).

Every layer of a dense block reads the concatenation of all earlier feature maps of the block
and adds ``k`` (the growth rate) new ones. The ImageNet networks are DenseNet-BC (§3, Table 1):

- each layer is BN-ReLU-Conv(1×1, 4k) then BN-ReLU-Conv(3×3, k): the "B" bottleneck;
- transitions between blocks are BN-ReLU-Conv(1×1) that halve the channels (compression
  θ = 0.5, the "C") then a 2×2 average pool of stride 2;
- the stem is a 7×7/2 convolution of 2k channels and a 3×3/2 max-pool.

Variants (growth rate, layers per block, stem width), state_dict-compatible with torchvision's
builders of the same names: ``densenet121`` (32, 6-12-24-16, 64), ``densenet169`` (32,
6-12-32-32, 64), ``densenet201`` (32, 6-12-48-32, 64) and ``densenet161`` (48, 6-12-36-24, 96).

Notes and deviations:
- The paper's "conv" is BN-ReLU-Conv, so its last block ends in a convolution; like the
  reference Torch code and torchvision, a final BatchNorm (``features.norm5``) and ReLU come
  before the global average pool. :meth:`DenseNet.forward_features` returns the map after that
  ReLU, the one the pool reads.
- ``drop_rate`` is dropout on each layer's new maps (the paper uses 0.2 on the data sets without
  augmentation, none on ImageNet; default 0).
- torchvision's ``memory_efficient`` (gradient checkpointing of the concatenation and
  bottleneck) is not offered: it changes memory, not the network or its arithmetic.
- Initialisation is torchvision's: Kaiming-normal convolutions with fan-in (the paper adopts He
  et al.'s scheme without naming the fan), BN γ = 1 and β = 0, zero classifier bias.

Smallest input: the stem (7×7/2 p3, then 3×3/2 p1) maps a side W to ⌊(W − 1)/2⌋ + 1 twice, and
each of the three transitions' 2×2/2 average pools halves it, rounding down, so the map reaching
the pools must be at least 8 wide: 8 after the stem needs 15 after the conv, which needs W ≥ 29.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from cnnzoo.checks import check_rate
from cnnzoo.models.base import ZooModel
from cnnzoo.registry import register_model

_PAPER = "Huang et al. 2017, Densely Connected Convolutional Networks (arXiv:1608.06993)"
_MIN_SIZE = 29  # see the module docstring


class DenseLayer(nn.Module):
    """BN-ReLU-Conv(1×1, ``bn_size``·k), BN-ReLU-Conv(3×3, k): the BC layer, returning the k new
    maps only (the block does the concatenation)."""

    def __init__(self, in_chans: int, growth_rate: int, bn_size: int, drop_rate: float) -> None:
        super().__init__()
        width = bn_size * growth_rate
        self.norm1 = nn.BatchNorm2d(in_chans)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_chans, width, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(width)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(width, growth_rate, 3, padding=1, bias=False)
        self.drop_rate = drop_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.relu1(self.norm1(x)))  # (N, bn_size·k, H, W)
        out = self.conv2(self.relu2(self.norm2(out)))  # (N, k, H, W)
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        return out


class DenseBlock(nn.Module):
    """``num_layers`` dense layers; layer i reads ``in_chans + i·k`` channels."""

    def __init__(
        self, num_layers: int, in_chans: int, growth_rate: int, bn_size: int, drop_rate: float
    ) -> None:
        super().__init__()
        for i in range(num_layers):
            layer = DenseLayer(in_chans + i * growth_rate, growth_rate, bn_size, drop_rate)
            self.add_module(f"denselayer{i + 1}", layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.children():
            features.append(layer(torch.cat(features, 1)))
        return torch.cat(features, 1)  # (N, in_chans + num_layers·k, H, W)


class Transition(nn.Sequential):
    """BN-ReLU-Conv(1×1) to ``out_chans`` (the compression), then 2×2 average pool, stride 2."""

    def __init__(self, in_chans: int, out_chans: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(in_chans)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(in_chans, out_chans, 1, bias=False)
        self.pool = nn.AvgPool2d(2, 2)


class DenseNet(ZooModel):
    """DenseNet-BC: stem, dense blocks joined by transitions, BN-ReLU, global pool, one Linear.

    Args:
        growth_rate: k, the maps each dense layer adds.
        block_config: layers in each dense block.
        num_init_features: channels of the stem convolution (2k in the paper).
        num_classes: classifier outputs.
        in_chans: input channels.
        bn_size: bottleneck width as a multiple of k (4 in the paper).
        compression: θ, the fraction of channels a transition keeps (0.5 in the paper).
        drop_rate: dropout probability on each dense layer's new maps.
    """

    def __init__(
        self,
        growth_rate: int,
        block_config: tuple[int, ...],
        num_init_features: int,
        num_classes: int,
        in_chans: int,
        bn_size: int = 4,
        compression: float = 0.5,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.features = nn.Sequential()
        self.features.add_module(
            "conv0", nn.Conv2d(in_chans, num_init_features, 7, 2, padding=3, bias=False)
        )
        self.features.add_module("norm0", nn.BatchNorm2d(num_init_features))
        self.features.add_module("relu0", nn.ReLU(inplace=True))
        self.features.add_module("pool0", nn.MaxPool2d(3, 2, padding=1))
        self.stage_map = {"stem": ["features.conv0", "features.norm0"]}

        chans = num_init_features
        for i, num_layers in enumerate(block_config, start=1):
            block = DenseBlock(num_layers, chans, growth_rate, bn_size, drop_rate)
            self.features.add_module(f"denseblock{i}", block)
            self.stage_map[f"denseblock{i}"] = [f"features.denseblock{i}"]
            chans += num_layers * growth_rate
            if i < len(block_config):
                out_chans = int(chans * compression)
                self.features.add_module(f"transition{i}", Transition(chans, out_chans))
                self.stage_map[f"transition{i}"] = [f"features.transition{i}"]
                chans = out_chans
        self.features.add_module("norm5", nn.BatchNorm2d(chans))
        # The final BatchNorm normalises the last block's output: it belongs to that stage.
        self.stage_map[f"denseblock{len(block_config)}"].append("features.norm5")
        self.classifier = nn.Linear(chans, num_classes)

        self.num_classes = num_classes
        self.num_features = chans
        self.classifier_name = "classifier"

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # (N, C, H/32, W/32)
        return F.relu(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)  # (N, C)
        return x if pre_logits else self.classifier(x)


class DenseNetConfig(NamedTuple):
    """One column of the paper's Table 1 (k = 48 and a 96-channel stem for DenseNet-161)."""

    growth_rate: int
    block_config: tuple[int, int, int, int]
    num_init_features: int


CONFIGS = {
    121: DenseNetConfig(32, (6, 12, 24, 16), 64),
    169: DenseNetConfig(32, (6, 12, 32, 32), 64),
    201: DenseNetConfig(32, (6, 12, 48, 32), 64),
    161: DenseNetConfig(48, (6, 12, 36, 24), 96),
}


def _densenet(depth: int, num_classes: int, in_chans: int, drop_rate: float) -> DenseNet:
    check_rate("drop_rate", drop_rate)
    cfg = CONFIGS[depth]
    return DenseNet(
        cfg.growth_rate,
        cfg.block_config,
        cfg.num_init_features,
        num_classes,
        in_chans,
        drop_rate=float(drop_rate),
    )


# Parameters and conv + linear MACs at the default input, as published (torchvision's metadata);
# registered as metadata so that `cnnzoo list` needs no model built. Tests count the real thing.
COUNTS: dict[str, tuple[int, int]] = {
    "densenet121": (7_978_856, 2_834_161_664),
    "densenet169": (14_149_480, 3_359_843_328),
    "densenet201": (20_013_928, 4_291_365_888),
    "densenet161": (28_681_000, 7_727_907_072),
}


def _register(depth: int) -> None:
    def builder(*, num_classes: int, in_chans: int, drop_rate: float = 0.0) -> DenseNet:
        return _densenet(depth, num_classes, in_chans, drop_rate)

    cfg = CONFIGS[depth]
    builder.__name__ = f"densenet{depth}"
    builder.__doc__ = (
        f"DenseNet-{depth} (BC, k = {cfg.growth_rate}, blocks {cfg.block_config}; "
        "torchvision-compatible)."
    )
    params, macs = COUNTS[builder.__name__]
    register_model(
        family="densenet",
        paper=_PAPER,
        year=2017,
        min_size=_MIN_SIZE,
        torchvision=f"densenet{depth}",
        params=params,
        macs=macs,
    )(builder)


for _depth in CONFIGS:
    _register(_depth)
