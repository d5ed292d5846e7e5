"""EfficientNet — Tan & Le, "EfficientNet: Rethinking Model Scaling for Convolutional Neural
Networks", ICML 2019 (arXiv:1905.11946).

One baseline network, B0 (the paper's Table 1: a 3×3 stem, seven stages of mobile inverted
bottlenecks "MBConv" with squeeze-and-excitation, a 1×1 head convolution), grown into B1–B7 by
compound scaling: every stage's channels are multiplied by ``width`` and rounded to a multiple of
8, every stage's block count by ``depth`` and rounded up, and the input side is set to
``resolution`` (§3.3). Larger variants also use more dropout before the classifier.

Variants: ``efficientnet_b0`` … ``efficientnet_b7``, state_dict-compatible with torchvision's
builders of the same names, each registered at its paper resolution (224 … 600).

Deviations from the paper, all following torchvision so that its checkpoints load and agree:
- BatchNorm: the paper's TPU code uses eps = 1e-3 and momentum 0.99 (TensorFlow convention, i.e.
  0.01 in PyTorch's) everywhere. torchvision does so only for B5–B7, whose weights were ported
  from TensorFlow; B0–B4 use PyTorch's defaults (eps = 1e-5, momentum = 0.1).
- Squeeze-and-excitation width is ``max(1, in // 4)`` of the block's *input* channels (the
  paper's ratio 0.25 of the input, as in the TPU code), not of the expanded channels.
- Stochastic depth (the TPU code's "drop connect") grows linearly with the block index
  ``i`` as ``drop_path_rate · i / total_blocks``: 0 for the first block, just under
  ``drop_path_rate`` for the last. It applies only to blocks with a residual connection.
- Convolutions use symmetric padding ``(k − 1) // 2`` rather than TensorFlow's "SAME" padding,
  which pads asymmetrically on stride-2 layers.
- Initialisation is torchvision's: Kaiming-normal (fan-out) convolutions, and the classifier
  uniform in ±1/√out_features (the TPU code's truncated/variance-scaling initialisers differ).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from cnnzoo.checks import check_rate
from cnnzoo.layers import ConvBNAct, DropPath, NormArgs, SqueezeExcitation, make_divisible
from cnnzoo.models.base import ZooModel
from cnnzoo.registry import register_model

_PAPER = "Tan & Le 2019, EfficientNet: Rethinking Model Scaling for CNNs (arXiv:1905.11946)"


class MBConv(nn.Module):
    """Mobile inverted bottleneck: 1×1 expand, k×k depthwise, squeeze-excitation, 1×1 project.

    Args:
        in_chans: input channels.
        out_chans: output channels.
        expand_ratio: expanded width as a multiple of ``in_chans`` (1 skips the expansion).
        kernel_size: depthwise kernel side (3 or 5).
        stride: depthwise stride (1 or 2).
        drop_path: probability of dropping the residual branch in training.
        bn_eps: BatchNorm epsilon.
        bn_momentum: BatchNorm momentum (PyTorch convention).
    """

    def __init__(
        self,
        in_chans: int,
        out_chans: int,
        expand_ratio: int,
        kernel_size: int,
        stride: int,
        drop_path: float,
        bn_eps: float,
        bn_momentum: float,
    ) -> None:
        super().__init__()
        self.use_res_connect = stride == 1 and in_chans == out_chans
        norm: NormArgs = {"eps": bn_eps, "momentum": bn_momentum}
        mid = make_divisible(in_chans * expand_ratio)
        layers: list[nn.Module] = []
        if mid != in_chans:
            layers.append(ConvBNAct(in_chans, mid, 1, act=nn.SiLU, **norm))
        layers += [
            ConvBNAct(mid, mid, kernel_size, stride, groups=mid, act=nn.SiLU, **norm),
            SqueezeExcitation(mid, max(1, in_chans // 4), act=nn.SiLU),
            ConvBNAct(mid, out_chans, 1, act=None, **norm),  # linear bottleneck: no activation
        ]
        self.block = nn.Sequential(*layers)
        self.stochastic_depth = DropPath(drop_path)
        self.out_channels = out_chans

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)  # (N, out_chans, H/stride, W/stride)
        if self.use_res_connect:
            out = self.stochastic_depth(out) + x
        return out


class Stage(NamedTuple):
    """One row of the paper's Table 1 (B0), as torchvision's ``bneck_conf``."""

    expand_ratio: int
    kernel: int
    stride: int
    in_chans: int
    out_chans: int
    layers: int


class Scaling(NamedTuple):
    """Compound-scaling coefficients of one variant and its BatchNorm constants."""

    width: float
    depth: float
    resolution: int
    dropout: float
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1


class EfficientNet(ZooModel):
    """A 3×3/2 stem, seven MBConv stages, a 1×1 head convolution, pooling, dropout and a Linear.

    Args:
        stages: the baseline (B0) stage table.
        scaling: width/depth multipliers, dropout and BatchNorm constants of the variant.
        num_classes: classifier outputs.
        in_chans: input channels.
        drop_path_rate: stochastic-depth probability that the block index ramps up to.
        dropout: dropout before the classifier; the variant's when ``None``.
    """

    def __init__(
        self,
        stages: tuple[Stage, ...],
        scaling: Scaling,
        num_classes: int,
        in_chans: int,
        drop_path_rate: float = 0.2,
        dropout: float | None = None,
    ) -> None:
        super().__init__()
        dropout = scaling.dropout if dropout is None else dropout
        check_rate("drop_path_rate", drop_path_rate)
        check_rate("dropout", dropout)
        bn: NormArgs = {"eps": scaling.bn_eps, "momentum": scaling.bn_momentum}
        chans = [
            (
                make_divisible(s.in_chans * scaling.width),
                make_divisible(s.out_chans * scaling.width),
            )
            for s in stages
        ]
        depths = [math.ceil(s.layers * scaling.depth) for s in stages]
        total_blocks = sum(depths)

        layers: list[nn.Module] = [
            ConvBNAct(in_chans, chans[0][0], 3, 2, act=nn.SiLU, **bn)  # (N, 32·w, H/2, W/2)
        ]
        block_id = 0
        for stage, (chans_in, chans_out), depth in zip(stages, chans, depths, strict=True):
            blocks = []
            for j in range(depth):
                blocks.append(
                    MBConv(
                        chans_in if j == 0 else chans_out,
                        chans_out,
                        stage.expand_ratio,
                        stage.kernel,
                        stage.stride if j == 0 else 1,
                        drop_path_rate * block_id / total_blocks,
                        scaling.bn_eps,
                        scaling.bn_momentum,
                    )
                )
                block_id += 1
            layers.append(nn.Sequential(*blocks))  # spatial size / stage.stride
        head_chans = 4 * chans[-1][1]  # 1280 for B0
        layers.append(ConvBNAct(chans[-1][1], head_chans, 1, act=nn.SiLU, **bn))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout, inplace=True), nn.Linear(head_chans, num_classes)
        )

        self.num_classes = num_classes
        self.num_features = head_chans
        self.classifier_name = "classifier.1"
        self.stage_map = (
            {"stem": ["features.0"]}
            | {f"stage{i}": [f"features.{i}"] for i in range(1, len(stages) + 1)}
            | {"head_conv": [f"features.{len(stages) + 1}"]}
        )

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                self._init_linear(m)

    @staticmethod
    def _init_linear(m: nn.Linear) -> None:
        bound = 1.0 / math.sqrt(m.out_features)
        nn.init.uniform_(m.weight, -bound, bound)
        nn.init.zeros_(m.bias)

    def _new_classifier(self, num_classes: int) -> nn.Linear:
        fc = super()._new_classifier(num_classes)
        self._init_linear(fc)
        return fc

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # (N, 4·C_last, H/32, W/32)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(self.avgpool(x), 1)  # (N, num_features)
        return x if pre_logits else self.classifier(x)


# The paper's Table 1 (B0): expand ratio, kernel, stride, input and output channels, layers.
B0_STAGES = (
    Stage(1, 3, 1, 32, 16, 1),
    Stage(6, 3, 2, 16, 24, 2),
    Stage(6, 5, 2, 24, 40, 2),
    Stage(6, 3, 2, 40, 80, 3),
    Stage(6, 5, 1, 80, 112, 3),
    Stage(6, 5, 2, 112, 192, 4),
    Stage(6, 3, 1, 192, 320, 1),
)

# Compound-scaling coefficients (TPU efficientnet_builder.py, torchvision's builders); B5–B7
# carry TensorFlow's BatchNorm constants like torchvision's (see the module docstring).
_TF_BN = {"bn_eps": 1e-3, "bn_momentum": 0.01}
SCALINGS = {
    "b0": Scaling(1.0, 1.0, 224, 0.2),
    "b1": Scaling(1.0, 1.1, 240, 0.2),
    "b2": Scaling(1.1, 1.2, 260, 0.3),
    "b3": Scaling(1.2, 1.4, 300, 0.3),
    "b4": Scaling(1.4, 1.8, 380, 0.4),
    "b5": Scaling(1.6, 2.2, 456, 0.4, **_TF_BN),
    "b6": Scaling(1.8, 2.6, 528, 0.5, **_TF_BN),
    "b7": Scaling(2.0, 3.1, 600, 0.5, **_TF_BN),
}

# Every stride-2 layer (stem and four stages) pads (k - 1) // 2, so maps ceil(W / 2): any side
# of at least 1 gives outputs of at least 1.
_MIN_SIZE = 1


# Parameters and conv + linear MACs at the default input, as published (torchvision's metadata,
# at the paper resolution: torchvision quotes B2 at 288 px);
# registered as metadata so that `cnnzoo list` needs no model built. Tests count the real thing.
COUNTS: dict[str, tuple[int, int]] = {
    "efficientnet_b0": (5_288_548, 385_814_752),
    "efficientnet_b1": (7_794_184, 686_802_832),
    "efficientnet_b2": (9_109_994, 993_561_872),
    "efficientnet_b3": (12_233_232, 1_827_141_392),
    "efficientnet_b4": (19_341_616, 4_393_771_024),
    "efficientnet_b5": (30_389_784, 10_266_384_752),
    "efficientnet_b6": (43_040_704, 19_067_593_536),
    "efficientnet_b7": (66_347_960, 37_745_884_192),
}


def _register(variant: str) -> None:
    scaling = SCALINGS[variant]

    def builder(
        *,
        num_classes: int,
        in_chans: int,
        drop_path_rate: float = 0.2,
        dropout: float | None = None,
    ) -> EfficientNet:
        return EfficientNet(
            B0_STAGES,
            scaling,
            num_classes,
            in_chans,
            drop_path_rate=drop_path_rate,
            dropout=dropout,
        )

    name = f"efficientnet_{variant}"
    builder.__name__ = name
    builder.__doc__ = (
        f"EfficientNet-{variant.upper()}: width ×{scaling.width}, depth ×{scaling.depth}, "
        f"{scaling.resolution} px, dropout {scaling.dropout} (torchvision-compatible)."
    )
    params, macs = COUNTS[name]
    register_model(
        family="efficientnet",
        paper=_PAPER,
        year=2019,
        input_size=(3, scaling.resolution, scaling.resolution),
        min_size=_MIN_SIZE,
        torchvision=name,
        params=params,
        macs=macs,
    )(builder)


for _variant in SCALINGS:
    _register(_variant)
