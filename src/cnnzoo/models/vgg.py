"""VGG — Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image
Recognition", ICLR 2015 (arXiv:1409.1556).

Variants: ``vgg11/13/16/19`` are the paper's configurations A, B, D and E (Table 1): stacks of
3×3 stride-1 convolutions (padding 1) with ReLU, five 2×2 stride-2 max-pools, then FC 4096 – FC
4096 – FC classes with dropout 0.5 after the first two. ``vgg*_bn`` add a BatchNorm after every
convolution. All eight are state_dict-compatible with torchvision (``features.N``,
``classifier.0/3/6``).

Deviations from the paper:
- An ``AdaptiveAvgPool2d(7)`` before the classifier (as torchvision) lets any input from 32 px
  up reach the 25,088-wide FC layer; at 224 px the map is already 7×7 and the pool is the
  identity. The paper instead evaluates larger images by turning the FC layers into
  convolutions ("dense evaluation", §3.2).
- The ``_bn`` variants are not in the paper (BatchNorm came in 2015).
- Initialisation is torchvision's (He normal, fan-out, for convolutions; N(0, 0.01) for the FC
  layers; zero biases). The paper trained A from N(0, 0.01) and initialised the deeper nets
  from A's layers, noting later that Glorot initialisation works without pre-training.
- ``pool`` can replace the five max-pools by average, min or stochastic pooling (an
  experiment, not the paper); ``dropout`` changes the 0.5 rate.
- Configuration C (with 1×1 convolutions) and A-LRN are not provided.
"""

from __future__ import annotations

import torch
from torch import nn

from cnnzoo.errors import InvalidArgumentError
from cnnzoo.layers import make_pool
from cnnzoo.models.base import ZooModel
from cnnzoo.registry import register_model

_PAPER = (
    "Simonyan & Zisserman 2014, Very Deep Convolutional Networks for Large-Scale Image "
    "Recognition (arXiv:1409.1556)"
)


def _conv_block(
    in_chans: int, out_chans: int, batch_norm: bool, pool: str | None
) -> list[nn.Module]:
    # A flat list, not a Sequential: torchvision's keys number every layer of `features`.
    layers: list[nn.Module] = [nn.Conv2d(in_chans, out_chans, 3, padding=1)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_chans))
    layers.append(nn.ReLU(inplace=True))
    if pool is not None:
        layers.append(make_pool(pool, 2, 2))  # (N, C, H/2, W/2)
    return layers


class VGG(ZooModel):
    """Five stages of 3×3 convolutions, each closed by a 2×2 pool, and three FC layers.

    Args:
        stages: output channels of each convolution, one tuple per stage.
        num_classes: classifier outputs.
        in_chans: input channels.
        batch_norm: put a BatchNorm after every convolution.
        pool: ``"max"`` (the paper), ``"avg"``, ``"min"`` or ``"stochastic"``.
        dropout: dropout rate before the second and third FC layers.
    """

    def __init__(
        self,
        stages: tuple[tuple[int, ...], ...],
        num_classes: int,
        in_chans: int,
        batch_norm: bool = False,
        pool: str = "max",
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if isinstance(dropout, bool) or not 0.0 <= dropout < 1.0:
            raise InvalidArgumentError(f"dropout must be a rate in [0, 1), got {dropout!r}.")
        layers: list[nn.Module] = []
        stage_map: dict[str, list[str]] = {}
        chans = in_chans
        for i, widths in enumerate(stages):
            start = len(layers)
            for j, width in enumerate(widths):
                last = j == len(widths) - 1
                layers += _conv_block(chans, width, batch_norm, pool if last else None)
                chans = width
            stage_map[f"block{i + 1}"] = [f"features.{k}" for k in range(start, len(layers))]
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(7)
        self.classifier = nn.Sequential(
            nn.Linear(chans * 7 * 7, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(4096, num_classes),
        )

        self.num_classes = num_classes
        self.num_features = 4096
        self.classifier_name = "classifier.6"
        # FC6 and FC7 are a stage too: freezing the backbone leaves only the final classifier.
        self.stage_map = stage_map | {"fc": ["classifier.0", "classifier.3"]}

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # (N, 512, H/32, W/32)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(self.avgpool(x), 1)  # (N, 512·7·7)
        x = self.classifier[:-1](x)  # (N, 4096)
        return x if pre_logits else self.classifier[-1](x)


# The paper's Table 1, one tuple of 3×3 convolution widths per stage (a pool closes each stage).
CONFIGS: dict[str, tuple[tuple[int, ...], ...]] = {
    "A": ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    "B": ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
    "D": ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    "E": ((64, 64), (128, 128), (256,) * 4, (512,) * 4, (512,) * 4),
}
DEPTHS = {11: "A", 13: "B", 16: "D", 19: "E"}  # weight layers: convolutions + 3 FC

# Parameters and conv + linear MACs at the default input, as published (torchvision's metadata);
# registered as metadata so that `cnnzoo list` needs no model built. Tests count the real thing.
COUNTS: dict[str, tuple[int, int]] = {
    "vgg11": (132_863_336, 7_609_090_048),
    "vgg11_bn": (132_868_840, 7_609_090_048),
    "vgg13": (133_047_848, 11_308_466_176),
    "vgg13_bn": (133_053_736, 11_308_466_176),
    "vgg16": (138_357_544, 15_470_264_320),
    "vgg16_bn": (138_365_992, 15_470_264_320),
    "vgg19": (143_667_240, 19_632_062_464),
    "vgg19_bn": (143_678_248, 19_632_062_464),
}


def _register(depth: int, batch_norm: bool) -> None:
    config = DEPTHS[depth]

    def builder(*, num_classes: int, in_chans: int, pool: str = "max", dropout: float = 0.5) -> VGG:
        return VGG(CONFIGS[config], num_classes, in_chans, batch_norm, pool, dropout)

    name = f"vgg{depth}{'_bn' if batch_norm else ''}"
    builder.__name__ = name
    with_bn = " with BatchNorm" if batch_norm else ""
    builder.__doc__ = f"VGG-{depth} (configuration {config}){with_bn}, torchvision-compatible."
    # Five 2×2/2 pools: a side of 32 reaches the last pool as 2 and leaves it as 1.
    params, macs = COUNTS[name]
    register_model(
        family="vgg",
        paper=_PAPER,
        year=2014,
        min_size=32,
        torchvision=name,
        params=params,
        macs=macs,
    )(builder)


for _depth in DEPTHS:
    _register(_depth, batch_norm=False)
    _register(_depth, batch_norm=True)
