"""ResNet — He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition", CVPR 2016
(arXiv:1512.03385).

Variants:
- ``resnet18/34/50/101/152``: the ImageNet networks of the paper's Table 1, state_dict-compatible
  with torchvision. Like torchvision they are "ResNet v1.5": a downsampling bottleneck strides in
  its 3×3 convolution, which costs more multiply-adds (resnet50: 4.09 G vs 3.86 G) and is
  more accurate. ``stride_in_1x1=True`` gives the paper's v1 placement (same parameters).
  Shortcuts that change shape are 1×1 projections (the paper's option B).
- ``resnet20/32/44/56/110``: the CIFAR-10 networks of §4.2: a 3×3 stem of 16 channels, three
  stages of n = (depth − 2)/6 basic blocks at 16/32/64 channels, and parameter-free option-A
  shortcuts (strided identity, extra channels zero-padded).
- ``plain20/32/44/56/110``: the same stacks without shortcuts, the paper's baselines for the
  degradation problem (deeper plain nets train worse; Fig. 6).
- ``resnet18_cifar``: ResNet-18 for 32×32 inputs as commonly used on CIFAR: a 3×3 stride-1 stem
  and no max-pool; otherwise the ImageNet network.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cnnzoo.models.base import ZooModel
from cnnzoo.registry import register_model

_PAPER = "He et al. 2015, Deep Residual Learning for Image Recognition (arXiv:1512.03385)"


def _conv3x3(in_chans: int, out_chans: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_chans, out_chans, 3, stride, padding=1, bias=False)


def _projection(in_chans: int, out_chans: int, stride: int) -> nn.Sequential:
    # Option B: a 1×1 convolution where the shortcut changes shape (torchvision's `downsample`).
    return nn.Sequential(
        nn.Conv2d(in_chans, out_chans, 1, stride, bias=False), nn.BatchNorm2d(out_chans)
    )


class BasicBlock(nn.Module):
    """Two 3×3 convolutions and a shortcut (ResNet-18/34 and the CIFAR networks)."""

    expansion = 1

    def __init__(
        self,
        in_chans: int,
        out_chans: int,
        stride: int = 1,
        shortcut: str = "B",
        stride_in_1x1: bool = False,
    ) -> None:
        super().__init__()
        del stride_in_1x1  # only bottlenecks have a 1×1 convolution to stride in
        self.conv1 = _conv3x3(in_chans, out_chans, stride)
        self.bn1 = nn.BatchNorm2d(out_chans)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(out_chans, out_chans)
        self.bn2 = nn.BatchNorm2d(out_chans)
        self.shortcut = shortcut
        self.downsample = (
            _projection(in_chans, out_chans, stride)
            if shortcut == "B" and (stride != 1 or in_chans != out_chans)
            else None
        )
        self.pad = out_chans - in_chans

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.shortcut == "none":
            return self.relu(out)
        identity = x if self.downsample is None else self.downsample(x)
        if self.shortcut == "A" and identity.shape != out.shape:
            # Option A: subsample by the stride, zero-pad the new channels half on each side.
            identity = identity[:, :, :: self.conv1.stride[0], :: self.conv1.stride[1]]
            identity = F.pad(identity, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1×1 reduce, 3×3, 1×1 expand (×4), and a shortcut (ResNet-50/101/152)."""

    expansion = 4

    def __init__(
        self,
        in_chans: int,
        out_chans: int,
        stride: int = 1,
        shortcut: str = "B",
        stride_in_1x1: bool = False,
    ) -> None:
        super().__init__()
        width = out_chans // self.expansion
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = nn.Conv2d(in_chans, width, 1, s1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = _conv3x3(width, width, s3)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_chans, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_chans)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = (
            _projection(in_chans, out_chans, stride)
            if stride != 1 or in_chans != out_chans
            else None
        )
        del shortcut  # bottleneck networks always use projections where the shape changes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class ResNet(ZooModel):
    """A stem, residual stages, global average pooling and one fully-connected layer.

    Args:
        block: ``BasicBlock`` or ``Bottleneck``.
        depths: blocks per stage.
        widths: output channels of each stage (after the block's expansion).
        num_classes: classifier outputs.
        in_chans: input channels.
        stem: ``"imagenet"`` (7×7/2 convolution and 3×3/2 max-pool, 64 channels) or ``"cifar"``
            (3×3/1 convolution of ``stem_width`` channels, no pool).
        stem_width: channels of the stem.
        shortcut: ``"B"`` (projection), ``"A"`` (zero-padding identity) or ``"none"`` (plain net).
        stride_in_1x1: put a bottleneck's stride in its first 1×1 convolution (paper v1).
        zero_init_residual: start every block's last BatchNorm at γ = 0, so that each residual
            block begins as the identity (Goyal et al. 2017).
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        depths: tuple[int, ...],
        widths: tuple[int, ...],
        num_classes: int,
        in_chans: int,
        stem: str = "imagenet",
        stem_width: int = 64,
        shortcut: str = "B",
        stride_in_1x1: bool = False,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_chans, stem_width, 7, 2, padding=3, bias=False)
            self.maxpool: nn.Module = nn.MaxPool2d(3, 2, padding=1)
        else:
            self.conv1 = _conv3x3(in_chans, stem_width)
            self.maxpool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(stem_width)
        self.relu = nn.ReLU(inplace=True)

        chans = stem_width
        for i, (depth, width) in enumerate(zip(depths, widths, strict=True)):
            blocks = []
            for j in range(depth):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(block(chans, width, stride, shortcut, stride_in_1x1))
                chans = width
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(chans, num_classes)

        self.num_classes = num_classes
        self.num_features = chans
        self.classifier_name = "fc"
        self.stage_map = {"stem": ["conv1", "bn1"]} | {
            f"layer{i + 1}": [f"layer{i + 1}"] for i in range(len(depths))
        }

        # He (Kaiming) initialisation, as the paper (§3.4) and torchvision.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                last_bn = getattr(m, "bn3", None) if isinstance(m, Bottleneck) else None
                if isinstance(m, BasicBlock):
                    last_bn = m.bn2
                if last_bn is not None:
                    nn.init.zeros_(last_bn.weight)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (N, 64, H/4, W/4) on ImageNet
        for i in range(len(self.stage_map) - 1):
            x = getattr(self, f"layer{i + 1}")(x)
        return x  # (N, C, H/32, W/32) on ImageNet, (N, 64, H/4, W/4) on CIFAR

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(self.avgpool(x), 1)  # (N, C)
        return x if pre_logits else self.fc(x)


# (block, blocks per stage) — the paper's Table 1 and §4.2.
IMAGENET_CONFIGS: dict[int, tuple[type[BasicBlock] | type[Bottleneck], tuple[int, ...]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}
CIFAR_DEPTHS = (20, 32, 44, 56, 110)  # 6n + 2 layers

# Parameters and conv + linear MACs at the default input, as published (torchvision's metadata,
# the paper §4.2; the plain nets count as the ResNets of their depth: option-A shortcuts add
# nothing); registered as metadata so that `cnnzoo list` needs no model built. Tests count the
# real thing.
COUNTS: dict[str, tuple[int, int]] = {
    "resnet18": (11_689_512, 1_814_073_344),
    "resnet34": (21_797_672, 3_663_761_408),
    "resnet50": (25_557_032, 4_089_184_256),
    "resnet101": (44_549_160, 7_801_405_440),
    "resnet152": (60_192_808, 11_513_626_624),
    "resnet20": (269_722, 40_551_040),
    "resnet32": (464_154, 68_862_592),
    "resnet44": (658_586, 97_174_144),
    "resnet56": (853_018, 125_485_696),
    "resnet110": (1_727_962, 252_887_680),
    "plain20": (269_722, 40_551_040),
    "plain32": (464_154, 68_862_592),
    "plain44": (658_586, 97_174_144),
    "plain56": (853_018, 125_485_696),
    "plain110": (1_727_962, 252_887_680),
}


def _imagenet(
    depth: int, num_classes: int, in_chans: int, stride_in_1x1: bool, zero_init_residual: bool
) -> ResNet:
    block, depths = IMAGENET_CONFIGS[depth]
    widths = tuple(w * block.expansion for w in (64, 128, 256, 512))
    return ResNet(
        block, depths, widths, num_classes, in_chans,
        stride_in_1x1=stride_in_1x1, zero_init_residual=zero_init_residual,
    )  # fmt: skip


def _cifar(depth: int, num_classes: int, in_chans: int, shortcut: str) -> ResNet:
    n = (depth - 2) // 6
    return ResNet(
        BasicBlock,
        (n, n, n),
        (16, 32, 64),
        num_classes,
        in_chans,
        stem="cifar",
        stem_width=16,
        shortcut=shortcut,
    )


def _register_imagenet(depth: int) -> None:
    def builder(
        *,
        num_classes: int,
        in_chans: int,
        stride_in_1x1: bool = False,
        zero_init_residual: bool = False,
    ) -> ResNet:
        return _imagenet(
            depth,
            num_classes,
            in_chans,
            stride_in_1x1=stride_in_1x1,
            zero_init_residual=zero_init_residual,
        )

    builder.__name__ = f"resnet{depth}"
    builder.__doc__ = f"ResNet-{depth} (torchvision-compatible, v1.5 unless stride_in_1x1)."
    params, macs = COUNTS[builder.__name__]
    register_model(
        family="resnet",
        paper=_PAPER,
        year=2015,
        min_size=1,
        torchvision=f"resnet{depth}",
        params=params,
        macs=macs,
    )(builder)


def _register_cifar(depth: int, prefix: str, shortcut: str) -> None:
    def builder(*, num_classes: int, in_chans: int) -> ResNet:
        return _cifar(depth, num_classes, in_chans, shortcut)

    builder.__name__ = f"{prefix}{depth}"
    kind = "plain (no shortcuts)" if shortcut == "none" else "option-A shortcuts"
    builder.__doc__ = f"CIFAR {prefix}-{depth}: 3 stages of {(depth - 2) // 6} blocks, {kind}."
    params, macs = COUNTS[builder.__name__]
    register_model(
        family="resnet",
        paper=_PAPER,
        year=2015,
        input_size=(3, 32, 32),
        num_classes=10,
        min_size=1,
        params=params,
        macs=macs,
    )(builder)


for _depth in IMAGENET_CONFIGS:
    _register_imagenet(_depth)
for _depth in CIFAR_DEPTHS:
    _register_cifar(_depth, "resnet", "A")
for _depth in CIFAR_DEPTHS:
    _register_cifar(_depth, "plain", "none")


@register_model(
    family="resnet",
    paper=_PAPER,
    year=2015,
    input_size=(3, 32, 32),
    num_classes=10,
    min_size=1,
    params=11_173_962,
    macs=555_422_720,
)
def resnet18_cifar(*, num_classes: int, in_chans: int) -> ResNet:
    """ResNet-18 for 32×32 inputs: 3×3 stride-1 stem, no max-pool."""
    return ResNet(
        BasicBlock, (2, 2, 2, 2), (64, 128, 256, 512), num_classes, in_chans, stem="cifar"
    )
