"""MobileNets: networks built from depthwise-separable convolutions.

- ``mobilenet_v1``: Howard et al., "MobileNets: Efficient Convolutional Neural Networks for Mobile
  Vision Applications", 2017 (arXiv:1704.04861). A 3×3/2 convolution, then the 13
  depthwise-separable layers of the paper's Table 1 (3×3 depthwise conv-BN-act, 1×1 pointwise
  conv-BN-act), global average pool, dropout (optional) and one Linear. ``width_mult`` is the
  paper's width multiplier α; its resolution multiplier ρ is simply the input side (224, 192,
  160, 128). Not in torchvision.
- ``mobilenet_v2``: Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks",
  CVPR 2018 (arXiv:1801.04381). Inverted residual blocks (1×1 expand by t, 3×3 depthwise, linear
  1×1 projection; a shortcut where stride is 1 and the width is kept), the (t, c, n, s) rows of
  the paper's Table 2, a 1×1 convolution to 1280, pool, dropout 0.2, Linear. torchvision-compatible.
- ``mobilenet_v3_large``, ``mobilenet_v3_small``: Howard et al., "Searching for MobileNetV3",
  ICCV 2019 (arXiv:1905.02244). Tables 1 and 2: bottlenecks with 3×3 or 5×5 depthwise kernels,
  squeeze-excitation on some, ReLU or hard-swish; an "efficient last stage" (1×1 conv, pool,
  Linear to 1280/1024 with hard-swish, dropout, Linear). torchvision-compatible.

Widths under ``width_mult`` are rounded to the nearest multiple of 8, never more than 10% down
(``cnnzoo.layers.make_divisible``: the TensorFlow reference code's rule, as in torchvision and
timm). v2 keeps its last convolution at 1280 for multipliers below one, as the paper does; v3
scales its hidden Linear with the rest, as torchvision does.

Notes and deviations:
- v1 activation: the paper's Figure 3 shows ReLU; its released TensorFlow checkpoints, Keras and
  timm's ``mobilenetv1_100`` use ReLU6, the default here (``activation="relu"`` for the figure).
- v1 Table 1 lists the last depthwise layer as "s2", but its input and output are both 7×7: it is
  stride 1, as in every implementation; this gives the paper's 569 M multiply-adds.
- v1 α rounding: for the paper's α ∈ {1, 0.75, 0.5, 0.25} every width is already a multiple of 8,
  so ``round(α·c)``, TF-slim's ``int(α·c)`` and ``_make_divisible`` agree; other α follow timm.
- v3 squeeze-excitation squeezes to ``make_divisible(exp / 4)`` and gates with a hard sigmoid;
  BatchNorm uses eps 1e-3 and momentum 0.01 (TensorFlow's 0.99), all as in torchvision.
- Initialisation (all three) is torchvision's: Kaiming-normal fan-out convolutions, BN γ = 1 and
  β = 0, Linear weights N(0, 0.01) and zero bias. The v1 paper gives no scheme.

Smallest input: every convolution has 'same' padding and stride ≤ 2, so any side ≥ 1 works.
``stage_map``: the stem, then one stage per resolution (a new one at the first block and at
each stride-2 block), then ``last_conv`` for v2's and v3's final 1×1 convolution, and ``fc`` for
v3's hidden fully-connected layer (everything before the final classifier is a stage).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from cnnzoo.checks import check_number, check_rate
from cnnzoo.errors import InvalidArgumentError
from cnnzoo.layers import ConvBNAct, NormArgs, SqueezeExcitation, make_divisible
from cnnzoo.models.base import ZooModel
from cnnzoo.registry import register_model

_PAPER_V1 = "Howard et al. 2017, MobileNets (arXiv:1704.04861)"
_PAPER_V2 = "Sandler et al. 2018, MobileNetV2 (arXiv:1801.04381)"
_PAPER_V3 = "Howard et al. 2019, Searching for MobileNetV3 (arXiv:1905.02244)"
_V3_BN: NormArgs = {"eps": 1e-3, "momentum": 0.01}


class DepthwiseSeparable(nn.Module):
    """3×3 depthwise conv-BN-act (strided), then 1×1 pointwise conv-BN-act (v1, Figure 3)."""

    def __init__(
        self, in_chans: int, out_chans: int, stride: int, act: Callable[..., nn.Module]
    ) -> None:
        super().__init__()
        self.dw = ConvBNAct(in_chans, in_chans, 3, stride, groups=in_chans, act=act)
        self.pw = ConvBNAct(in_chans, out_chans, 1, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw(self.dw(x))  # (N, out_chans, H/stride, W/stride)


class InvertedResidual(nn.Module):
    """v2 block: 1×1 expand (ReLU6; absent when t = 1), 3×3 depthwise (ReLU6), linear 1×1
    projection, and a shortcut when the shape is kept. Names follow torchvision (``conv``)."""

    def __init__(self, in_chans: int, out_chans: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = in_chans * expand_ratio
        self.use_res_connect = stride == 1 and in_chans == out_chans
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNAct(in_chans, hidden, 1, act=nn.ReLU6))
        layers += [
            ConvBNAct(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6),
            # Linear bottleneck: no activation after the projection (§3.2). A bare conv and BN,
            # not a ConvBNAct, because torchvision's checkpoints name them conv.N and conv.N+1.
            nn.Conv2d(hidden, out_chans, 1, bias=False),
            nn.BatchNorm2d(out_chans),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)  # (N, out_chans, H/stride, W/stride)
        return x + out if self.use_res_connect else out


class Bneck(NamedTuple):
    """One row of the v3 paper's Tables 1-2: kernel, exp size, #out, SE, NL, s."""

    kernel: int
    expanded: int
    out_chans: int
    se: bool
    act: type[nn.Module]
    stride: int


class MobileBottleneck(nn.Module):
    """v3 block: 1×1 expand (absent when the width is kept), k×k depthwise, squeeze-excitation
    (optional), linear 1×1 projection, and a shortcut when the shape is kept."""

    def __init__(self, in_chans: int, row: Bneck) -> None:
        super().__init__()
        self.use_res_connect = row.stride == 1 and in_chans == row.out_chans
        exp = row.expanded
        layers: list[nn.Module] = []
        if exp != in_chans:
            layers.append(ConvBNAct(in_chans, exp, 1, act=row.act, **_V3_BN))
        layers.append(ConvBNAct(exp, exp, row.kernel, row.stride, exp, act=row.act, **_V3_BN))
        if row.se:
            # The v3 gate (§5.3) is a hard sigmoid.
            se = SqueezeExcitation(exp, make_divisible(exp // 4), nn.ReLU, nn.Hardsigmoid)
            layers.append(se)
        layers.append(ConvBNAct(exp, row.out_chans, 1, act=None, **_V3_BN))
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)  # (N, out_chans, H/stride, W/stride)
        return out + x if self.use_res_connect else out


def _stage_map(strides: list[int], tail: list[str]) -> dict[str, list[str]]:
    # features.0 is the stem and features.i the i-th block; a new resolution starts a new stage.
    stages: dict[str, list[str]] = {"stem": ["features.0"]}
    for i, stride in enumerate(strides, start=1):
        if i == 1 or stride == 2:
            label = f"stage{len(stages)}"
            stages[label] = []
        stages[label].append(f"features.{i}")
    return stages | ({"last_conv": tail} if tail else {})


def _init_weights(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


class DSRow(NamedTuple):
    """One depthwise-separable pair of the v1 paper's Table 1: depthwise stride, pointwise out."""

    stride: int
    out_chans: int


class IRRow(NamedTuple):
    """One row of the v2 paper's Table 2: expansion t, channels c, repeats n, first stride s."""

    expand_ratio: int
    out_chans: int
    repeats: int
    stride: int


class MobileNetV1(ZooModel):
    """MobileNet v1: 3×3/2 stem, depthwise-separable layers, pool, dropout, Linear.

    Args:
        layers: the depthwise-separable rows (Table 1).
        stem_chans: channels of the stem convolution before ``width_mult``.
        num_classes: classifier outputs.
        in_chans: input channels.
        width_mult: α, the multiplier of every layer's width.
        dropout: dropout probability before the classifier.
        act: activation class (``nn.ReLU6`` or ``nn.ReLU``).
    """

    def __init__(
        self,
        layers: tuple[DSRow, ...],
        stem_chans: int,
        num_classes: int,
        in_chans: int,
        width_mult: float = 1.0,
        dropout: float = 0.0,
        act: Callable[..., nn.Module] = nn.ReLU6,
    ) -> None:
        super().__init__()
        chans = make_divisible(stem_chans * width_mult)
        blocks: list[nn.Module] = [ConvBNAct(in_chans, chans, 3, 2, act=act)]
        for row in layers:
            out_chans = make_divisible(row.out_chans * width_mult)
            blocks.append(DepthwiseSeparable(chans, out_chans, row.stride, act))
            chans = out_chans
        # timm's mobilenetv1_100 names, for a weight mapping: conv_stem/bn1 = features.0.0/.0.1;
        # blocks.{s}.{j}.conv_dw/bn1/conv_pw/bn2 = features.{i}.dw.0/dw.1/pw.0/pw.1, where i counts
        # Table 1's rows from 1 and blocks.{s} is stage_map's stage{s+1}; classifier = classifier.
        self.features = nn.Sequential(*blocks)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(chans, num_classes)

        self.num_classes = num_classes
        self.num_features = chans
        self.classifier_name = "classifier"
        self.stage_map = _stage_map([r.stride for r in layers], [])
        _init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # (N, 1024α, H/32, W/32)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)  # (N, 1024α)
        return x if pre_logits else self.classifier(self.dropout(x))


class MobileNetV2(ZooModel):
    """MobileNet v2: 3×3/2 stem, inverted residual rows, 1×1 conv, pool, dropout, Linear.

    Args:
        rows: the (t, c, n, s) rows (Table 2).
        stem_chans: channels of the stem before ``width_mult``.
        last_chans: channels of the final 1×1 convolution (scaled only when ``width_mult > 1``).
        num_classes: classifier outputs.
        in_chans: input channels.
        width_mult: the multiplier of every layer's width.
        dropout: dropout probability before the classifier.
    """

    def __init__(
        self,
        rows: tuple[IRRow, ...],
        stem_chans: int,
        last_chans: int,
        num_classes: int,
        in_chans: int,
        width_mult: float = 1.0,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        chans = make_divisible(stem_chans * width_mult)
        blocks: list[nn.Module] = [ConvBNAct(in_chans, chans, 3, 2, act=nn.ReLU6)]
        strides = []
        for row in rows:
            out_chans = make_divisible(row.out_chans * width_mult)
            for j in range(row.repeats):
                stride = row.stride if j == 0 else 1
                blocks.append(InvertedResidual(chans, out_chans, stride, row.expand_ratio))
                strides.append(stride)
                chans = out_chans
        last = make_divisible(last_chans * max(1.0, width_mult))
        blocks.append(ConvBNAct(chans, last, 1, act=nn.ReLU6))
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(last, num_classes))

        self.num_classes = num_classes
        self.num_features = last
        self.classifier_name = "classifier.1"
        self.stage_map = _stage_map(strides, [f"features.{len(blocks) - 1}"])
        _init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # (N, 1280, H/32, W/32)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)  # (N, 1280)
        return x if pre_logits else self.classifier(x)


class MobileNetV3(ZooModel):
    """MobileNet v3: 3×3/2 hard-swish stem, bottlenecks, 1×1 conv (6× the last width), pool,
    Linear with hard-swish, dropout, Linear.

    Args:
        rows: the bneck rows (Table 1 or 2), before ``width_mult``.
        last_chans: width of the hidden Linear (1280 large, 1024 small), before ``width_mult``.
        num_classes: classifier outputs.
        in_chans: input channels.
        width_mult: the multiplier of every layer's width.
        dropout: dropout probability before the last Linear.
    """

    def __init__(
        self,
        rows: tuple[Bneck, ...],
        last_chans: int,
        num_classes: int,
        in_chans: int,
        width_mult: float = 1.0,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        chans = make_divisible(16 * width_mult)
        blocks: list[nn.Module] = [ConvBNAct(in_chans, chans, 3, 2, act=nn.Hardswish, **_V3_BN)]
        for row in rows:
            scaled = row._replace(
                expanded=make_divisible(row.expanded * width_mult),
                out_chans=make_divisible(row.out_chans * width_mult),
            )
            blocks.append(MobileBottleneck(chans, scaled))
            chans = scaled.out_chans
        blocks.append(ConvBNAct(chans, 6 * chans, 1, act=nn.Hardswish, **_V3_BN))
        self.features = nn.Sequential(*blocks)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        hidden = make_divisible(last_chans * width_mult)
        self.classifier = nn.Sequential(
            nn.Linear(6 * chans, hidden),
            nn.Hardswish(inplace=True),
            nn.Dropout(dropout, inplace=True),
            nn.Linear(hidden, num_classes),
        )

        self.num_classes = num_classes
        self.num_features = hidden
        self.classifier_name = "classifier.3"
        self.stage_map = _stage_map([r.stride for r in rows], [f"features.{len(blocks) - 1}"])
        self.stage_map["fc"] = ["classifier.0"]  # the hidden FC layer that pre-logits include
        _init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # (N, 6·C, H/32, W/32)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(self.avgpool(x), 1)  # (N, 6·C)
        x = self.classifier[1](self.classifier[0](x))  # (N, hidden)
        return x if pre_logits else self.classifier[3](self.classifier[2](x))


# v1, Table 1: after the 32-channel 3×3/2 stem, 13 depthwise-separable pairs (last stride: see
# the module docstring).
V1_LAYERS = (
    DSRow(1, 64),
    DSRow(2, 128),
    DSRow(1, 128),
    DSRow(2, 256),
    DSRow(1, 256),
    DSRow(2, 512),
    *(DSRow(1, 512),) * 5,
    DSRow(2, 1024),
    DSRow(1, 1024),
)

# v2, Table 2: after the 32-channel 3×3/2 stem; a 1×1 conv to 1280 follows.
V2_ROWS = (
    IRRow(1, 16, 1, 1),
    IRRow(6, 24, 2, 2),
    IRRow(6, 32, 3, 2),
    IRRow(6, 64, 4, 2),
    IRRow(6, 96, 3, 1),
    IRRow(6, 160, 3, 2),
    IRRow(6, 320, 1, 1),
)

RE, HS = nn.ReLU, nn.Hardswish  # the v3 tables' "NL" column

# v3, Table 1 (large) and Table 2 (small): after the 16-channel 3×3/2 hard-swish stem.
V3_LARGE = (
    Bneck(3, 16, 16, False, RE, 1),
    Bneck(3, 64, 24, False, RE, 2),
    Bneck(3, 72, 24, False, RE, 1),
    Bneck(5, 72, 40, True, RE, 2),
    Bneck(5, 120, 40, True, RE, 1),
    Bneck(5, 120, 40, True, RE, 1),
    Bneck(3, 240, 80, False, HS, 2),
    Bneck(3, 200, 80, False, HS, 1),
    Bneck(3, 184, 80, False, HS, 1),
    Bneck(3, 184, 80, False, HS, 1),
    Bneck(3, 480, 112, True, HS, 1),
    Bneck(3, 672, 112, True, HS, 1),
    Bneck(5, 672, 160, True, HS, 2),
    Bneck(5, 960, 160, True, HS, 1),
    Bneck(5, 960, 160, True, HS, 1),
)
V3_SMALL = (
    Bneck(3, 16, 16, True, RE, 2),
    Bneck(3, 72, 24, False, RE, 2),
    Bneck(3, 88, 24, False, RE, 1),
    Bneck(5, 96, 40, True, HS, 2),
    Bneck(5, 240, 40, True, HS, 1),
    Bneck(5, 240, 40, True, HS, 1),
    Bneck(5, 120, 48, True, HS, 1),
    Bneck(5, 144, 48, True, HS, 1),
    Bneck(5, 288, 96, True, HS, 2),
    Bneck(5, 576, 96, True, HS, 1),
    Bneck(5, 576, 96, True, HS, 1),
)

V1_ACTIVATIONS = {"relu6": nn.ReLU6, "relu": nn.ReLU}


def _check(width_mult: float, dropout: float) -> None:
    check_number("width_mult", width_mult, low=0, above=True)
    check_rate("dropout", dropout)


@register_model(
    family="mobilenet", paper=_PAPER_V1, year=2017, min_size=1, params=4_231_976, macs=568_740_352
)
def mobilenet_v1(
    *,
    num_classes: int,
    in_chans: int,
    width_mult: float = 1.0,
    dropout: float = 0.0,
    activation: str = "relu6",
) -> MobileNetV1:
    """MobileNet v1 with width multiplier α = ``width_mult`` (1.0, 0.75, 0.5, 0.25 in the paper)
    and ``activation`` "relu6" (released weights, timm) or "relu" (the paper's Figure 3)."""
    _check(width_mult, dropout)
    if activation not in V1_ACTIVATIONS:
        raise InvalidArgumentError(
            f"activation must be one of {sorted(V1_ACTIVATIONS)}, got {activation!r}."
        )
    act = V1_ACTIVATIONS[activation]
    return MobileNetV1(V1_LAYERS, 32, num_classes, in_chans, width_mult, dropout, act)


@register_model(
    family="mobilenet",
    paper=_PAPER_V2,
    year=2018,
    min_size=1,
    torchvision="mobilenet_v2",
    params=3_504_872,
    macs=300_774_272,
)
def mobilenet_v2(
    *, num_classes: int, in_chans: int, width_mult: float = 1.0, dropout: float = 0.2
) -> MobileNetV2:
    """MobileNet v2 (torchvision-compatible at every ``width_mult``)."""
    _check(width_mult, dropout)
    return MobileNetV2(V2_ROWS, 32, 1280, num_classes, in_chans, width_mult, dropout)


@register_model(
    family="mobilenet",
    paper=_PAPER_V3,
    year=2019,
    min_size=1,
    torchvision="mobilenet_v3_large",
    params=5_483_032,
    macs=216_589_760,
)
def mobilenet_v3_large(
    *, num_classes: int, in_chans: int, width_mult: float = 1.0, dropout: float = 0.2
) -> MobileNetV3:
    """MobileNet v3-Large (torchvision-compatible at every ``width_mult``)."""
    _check(width_mult, dropout)
    return MobileNetV3(V3_LARGE, 1280, num_classes, in_chans, width_mult, dropout)


@register_model(
    family="mobilenet",
    paper=_PAPER_V3,
    year=2019,
    min_size=1,
    torchvision="mobilenet_v3_small",
    params=2_542_856,
    macs=56_510_400,
)
def mobilenet_v3_small(
    *, num_classes: int, in_chans: int, width_mult: float = 1.0, dropout: float = 0.2
) -> MobileNetV3:
    """MobileNet v3-Small (torchvision-compatible at every ``width_mult``)."""
    _check(width_mult, dropout)
    return MobileNetV3(V3_SMALL, 1024, num_classes, in_chans, width_mult, dropout)
