"""GoogLeNet (Inception v1) — Szegedy et al., "Going Deeper with Convolutions", CVPR 2015
(arXiv:1409.4842).

A stem (7×7/2 convolution, 3×3/2 max-pool, 1×1 and 3×3 convolutions, 3×3/2 max-pool), nine
Inception modules in three stages (3a–3b, 4a–4e, 5a–5b) with max-pools between the stages,
global average pooling, dropout and one FC layer. Each module concatenates four branches: a 1×1
convolution; a 1×1 reduction then a 3×3; a 1×1 reduction then a 5×5; a 3×3/1 max-pool then a
1×1 projection. Their widths are the paper's Table 1 (``INCEPTION_TABLE`` below).

Variants:
- ``googlenet``: state_dict-compatible with torchvision. Like torchvision it has a BatchNorm
  (eps 0.001) after every convolution and no convolution biases, max-pools with
  ``ceil_mode=True``, a 2×2 (not 3×3) pool after 4e, dropout 0.2 before the classifier, and a
  **3×3 kernel in the "5×5" branch** — a known torchvision bug (pytorch/vision#906) kept so that
  its weights load. ``transform_input=True`` re-normalises ImageNet-normalised input to the
  [-1, 1] scaling that Google's ported weights expect (torchvision's option; RGB only).
  Initialisation as torchvision: truncated normal, std 0.01, cut at ±2.
- ``googlenet_paper``: as the paper: true 5×5 convolutions, convolution biases, no BatchNorm,
  local response normalisation after the first max-pool and after the 3×3 convolution
  (Figure 3), 3×3/2 max-pools (rounding up, as Caffe does, which gives the paper's 112 → 56 →
  28 → 14 → 7), dropout 0.4. The paper gives no LRN constants or initialisation (it trained
  with DistBelief); both follow the BVLC Caffe replication (``bvlc_googlenet``): LRN over 5
  channels with α = 1e-4, β = 0.75, k = 1 (Caffe, like ``nn.LocalResponseNorm``, divides α by
  the window), Xavier (variance 1/fan-in) weights, biases 0.2 except the classifiers' 0.

Both end in global average pooling (the paper's 7×7/1 average pool at 224 px), so the main
path takes any input from ``min_size`` up.

Auxiliary classifiers (``aux_logits=True``) sit on the outputs of 4a and 4d: average pooling to
4×4, a 1×1 convolution of 128 with ReLU, FC 1024 with ReLU, dropout 0.7, FC classes. The paper
pools 5×5/3, which gives 4×4 only from a 14–16 px map, so ``googlenet_paper`` with aux heads
trains only on square inputs of 223–270 px (other sizes raise ``InputSizeError``); torchvision
pools adaptively to 4×4 and takes any size. The heads run only in training mode, where
``forward`` returns ``GoogLeNetOutputs(logits, aux_logits2, aux_logits1)`` — torchvision's
names and order; the paper weights each auxiliary loss by 0.3. In eval mode, or without aux
heads, ``forward`` returns the logits alone. The aux heads are not part of ``stage_map`` (they
are heads, not backbone), and ``reset_classifier`` resets their final FC layers too.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from cnnzoo.errors import InputSizeError, InvalidArgumentError
from cnnzoo.models.base import ZooModel
from cnnzoo.registry import register_model

_PAPER = "Szegedy et al. 2014, Going deeper with convolutions (arXiv:1409.4842)"


class GoogLeNetOutputs(NamedTuple):
    """Training-mode outputs with auxiliary heads, in torchvision's order."""

    logits: torch.Tensor
    aux_logits2: torch.Tensor  # the head on inception 4d
    aux_logits1: torch.Tensor  # the head on inception 4a


class InceptionRow(NamedTuple):
    """One row of the paper's Table 1: input channels and the widths of the four branches."""

    name: str
    in_chans: int
    ch1x1: int
    ch3x3red: int
    ch3x3: int
    ch5x5red: int
    ch5x5: int
    pool_proj: int

    @property
    def out_chans(self) -> int:
        """Channels of the concatenated output."""
        return self.ch1x1 + self.ch3x3 + self.ch5x5 + self.pool_proj


class BasicConv2d(nn.Module):
    """Convolution ('same' padding), BatchNorm (eps 0.001) when ``batch_norm``, ReLU.

    Without BatchNorm the convolution has a bias and ``bn`` is ``None``.
    """

    def __init__(
        self,
        in_chans: int,
        out_chans: int,
        kernel_size: int,
        stride: int = 1,
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_chans, out_chans, kernel_size, stride, kernel_size // 2, bias=not batch_norm
        )
        self.bn = nn.BatchNorm2d(out_chans, eps=0.001) if batch_norm else None
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return self.relu(x)


class Inception(nn.Module):
    """Four parallel branches concatenated along channels; the spatial size is kept.

    Args:
        row: the branch widths.
        kernel5: kernel of the "5×5" branch (5 in the paper, 3 in torchvision).
        batch_norm: BatchNorm after each convolution (torchvision) or biases (paper).
    """

    def __init__(self, row: InceptionRow, kernel5: int, batch_norm: bool) -> None:
        super().__init__()
        c, bn = row.in_chans, batch_norm
        self.branch1 = BasicConv2d(c, row.ch1x1, 1, batch_norm=bn)
        self.branch2 = nn.Sequential(
            BasicConv2d(c, row.ch3x3red, 1, batch_norm=bn),
            BasicConv2d(row.ch3x3red, row.ch3x3, 3, batch_norm=bn),
        )
        self.branch3 = nn.Sequential(
            BasicConv2d(c, row.ch5x5red, 1, batch_norm=bn),
            BasicConv2d(row.ch5x5red, row.ch5x5, kernel5, batch_norm=bn),
        )
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(3, 1, padding=1, ceil_mode=True),
            BasicConv2d(c, row.pool_proj, 1, batch_norm=bn),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = (self.branch1, self.branch2, self.branch3, self.branch4)
        return torch.cat([b(x) for b in branches], 1)  # (N, 1x1 + 3x3 + 5x5 + proj, H, W)


class InceptionAux(nn.Module):
    """An auxiliary classifier: pool to 4×4, 1×1 convolution 128, FC 1024, dropout, FC.

    Args:
        in_chans: channels of the tapped Inception output.
        num_classes: classifier outputs.
        dropout: dropout rate before the last FC layer.
        paper: pool 5×5/3 (the paper: needs a 14–16 px map) and no BatchNorm, instead of
            torchvision's adaptive pooling to 4×4 and BatchNorm.
    """

    def __init__(self, in_chans: int, num_classes: int, dropout: float, paper: bool) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(5, 3) if paper else nn.AdaptiveAvgPool2d(4)
        self.conv = BasicConv2d(in_chans, 128, 1, batch_norm=not paper)
        self.fc1 = nn.Linear(128 * 4 * 4, 1024)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(1024, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.pool, nn.AvgPool2d) and not all(14 <= s <= 16 for s in x.shape[-2:]):
            # ⌊(s − 5)/3⌋ + 1 = 4 only for s in 14..16; fc1 takes exactly 128·4·4 values.
            raise InputSizeError(
                f"googlenet_paper's auxiliary heads need a 14-16 px map at inception 4a/4d "
                f"(square inputs of 223-270 px), got {tuple(x.shape[-2:])}; resize the input "
                f"or build it with aux_logits=False."
            )
        x = self.conv(self.pool(x))  # (N, 128, 4, 4)
        x = self.relu(self.fc1(torch.flatten(x, 1)))  # (N, 1024)
        return self.fc2(self.dropout(x))


class GoogLeNet(ZooModel):
    """The stem, the Inception stages of ``table``, global average pooling, dropout, FC.

    Args:
        table: Inception rows in order; a max-pool opens each new stage (3 → 4 → 5).
        num_classes: classifier outputs.
        in_chans: input channels.
        paper: the paper's layers (true 5×5, biases, LRN, 3×3/2 pools) instead of torchvision's.
        aux_logits: add the auxiliary classifiers on 4a and 4d (run in training mode only).
        transform_input: re-normalise ImageNet-normalised RGB input as Google's weights expect.
        dropout: dropout rate before the classifier.
        dropout_aux: dropout rate in the auxiliary classifiers.
    """

    def __init__(
        self,
        table: tuple[InceptionRow, ...],
        num_classes: int,
        in_chans: int,
        paper: bool = False,
        aux_logits: bool = False,
        transform_input: bool = False,
        dropout: float = 0.2,
        dropout_aux: float = 0.7,
    ) -> None:
        super().__init__()
        if transform_input and in_chans != 3:
            raise InvalidArgumentError(
                f"transform_input re-normalises RGB channels and needs in_chans=3, got "
                f"in_chans={in_chans}; drop transform_input or use 3 channels."
            )
        for arg, rate in (("dropout", dropout), ("dropout_aux", dropout_aux)):
            if isinstance(rate, bool) or not 0.0 <= rate < 1.0:
                raise InvalidArgumentError(f"{arg} must be a rate in [0, 1), got {rate!r}.")
        bn = not paper
        self.aux_logits = aux_logits
        self.transform_input = transform_input

        self.conv1 = BasicConv2d(in_chans, 64, 7, 2, batch_norm=bn)
        self.maxpool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = BasicConv2d(64, 64, 1, batch_norm=bn)
        self.conv3 = BasicConv2d(64, 192, 3, batch_norm=bn)
        self.maxpool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        stem = ["conv1", "maxpool1", "conv2", "conv3", "maxpool2"]
        if paper:
            self.lrn1 = nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0)
            self.lrn2 = nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0)
            stem = ["conv1", "maxpool1", "lrn1", "conv2", "conv3", "lrn2", "maxpool2"]

        # Max-pools between the Inception stages; torchvision's after 4e is 2×2 (at 224 px both
        # sizes give 14 → 7, but 2×2 also takes a 1×1 map, hence its smaller minimum input).
        pool_kernels = iter((3, 3) if paper else (3, 2))
        self.stage_map: dict[str, list[str]] = {"stem": stem}
        for row in table:
            stage = f"inception{row.name[0]}"
            if stage not in self.stage_map:
                if len(self.stage_map) > 1:  # a max-pool closes the previous Inception stage
                    pool = f"maxpool{len(self.stage_map) + 1}"
                    self.add_module(pool, nn.MaxPool2d(next(pool_kernels), 2, ceil_mode=True))
                    list(self.stage_map.values())[-1].append(pool)
                self.stage_map[stage] = []
            self.add_module(f"inception{row.name}", Inception(row, 5 if paper else 3, bn))
            self.stage_map[stage].append(f"inception{row.name}")

        chans = {row.name: row.out_chans for row in table}
        self.aux1: InceptionAux | None
        self.aux2: InceptionAux | None
        if aux_logits:
            self.aux1 = InceptionAux(chans["4a"], num_classes, dropout_aux, paper)
            self.aux2 = InceptionAux(chans["4d"], num_classes, dropout_aux, paper)
        else:
            self.aux1 = self.aux2 = None
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(chans[table[-1].name], num_classes)

        self.num_classes = num_classes
        self.num_features = chans[table[-1].name]
        self.classifier_name = "fc"

        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)) and not paper:
                nn.init.trunc_normal_(m.weight, 0.0, 0.01, a=-2.0, b=2.0)
            elif isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_uniform_(m.weight, nonlinearity="linear")  # Caffe's "xavier"
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0.2)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if paper:
            for fc in (self.fc, *(a.fc2 for a in (self.aux1, self.aux2) if a is not None)):
                nn.init.zeros_(fc.bias)

    def _backbone(
        self, x: torch.Tensor, aux: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        if self.transform_input:
            # From ImageNet mean/std normalisation to (x − 0.5)/0.5 per channel.
            mean = x.new_tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
            std = x.new_tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
            x = x * (std / 0.5) + (mean - 0.5) / 0.5
        aux1 = aux2 = None
        for path in (p for paths in self.stage_map.values() for p in paths):
            x = getattr(self, path)(x)
            if aux and path == "inception4a" and self.aux1 is not None:
                aux1 = self.aux1(x)
            elif aux and path == "inception4d" and self.aux2 is not None:
                aux2 = self.aux2(x)
        return x, aux1, aux2  # (N, 1024, 7, 7) at 224 px

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._backbone(x, aux=False)[0]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.dropout(torch.flatten(self.avgpool(x), 1))  # (N, 1024)
        return x if pre_logits else self.fc(x)

    # The contract (DESIGN.md §3) widens ZooModel.forward's return type for this family alone:
    # the auxiliary logits come back beside the main ones in training mode.
    def forward(self, x: torch.Tensor) -> torch.Tensor | GoogLeNetOutputs:  # type: ignore[override]  # the contract's one wider return
        """Logits; in training mode with aux heads, ``GoogLeNetOutputs(logits, aux2, aux1)``."""
        if not (self.training and self.aux_logits):
            return super().forward(x)
        x, aux1, aux2 = self._backbone(x, aux=True)
        assert aux1 is not None and aux2 is not None  # both heads exist when aux_logits
        return GoogLeNetOutputs(self.forward_head(x), aux2, aux1)

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier, and the auxiliary heads' last FC layers, for ``num_classes``."""
        super().reset_classifier(num_classes)
        for aux in (self.aux1, self.aux2):
            if aux is not None:
                old = aux.fc2
                aux.fc2 = nn.Linear(old.in_features, num_classes, device=old.weight.device)


# The paper's Table 1: (name, in, #1×1, #3×3 reduce, #3×3, #5×5 reduce, #5×5, pool proj).
INCEPTION_TABLE = (
    InceptionRow("3a", 192, 64, 96, 128, 16, 32, 32),
    InceptionRow("3b", 256, 128, 128, 192, 32, 96, 64),
    InceptionRow("4a", 480, 192, 96, 208, 16, 48, 64),
    InceptionRow("4b", 512, 160, 112, 224, 24, 64, 64),
    InceptionRow("4c", 512, 128, 128, 256, 24, 64, 64),
    InceptionRow("4d", 512, 112, 144, 288, 32, 64, 64),
    InceptionRow("4e", 528, 256, 160, 320, 32, 128, 128),
    InceptionRow("5a", 832, 256, 160, 320, 32, 128, 128),
    InceptionRow("5b", 832, 384, 192, 384, 48, 128, 128),
)


# min_size: a 3×3/2 max-pool that rounds up needs a 2 px input (its window may overhang);
# conv1 gives ⌊(s+1)/2⌋, each 3×3/2 pool halves (rounding down) and 2×2/2 takes 1 px. torchvision's
# 3×3 pool after 3b needs 2 px, so conv1 must give 8: s = 15. The paper's 3×3 pool after 4e
# needs 2 px there, so conv1 must give 16: s = 31.
@register_model(
    family="googlenet",
    paper=_PAPER,
    year=2014,
    min_size=15,
    torchvision="googlenet",
    params=6_624_904,
    macs=1_498_376_192,
)
def googlenet(
    *,
    num_classes: int,
    in_chans: int,
    aux_logits: bool = False,
    transform_input: bool = False,
    dropout: float = 0.2,
    dropout_aux: float = 0.7,
) -> GoogLeNet:
    """GoogLeNet as torchvision (BatchNorm, 3×3 "5×5" branch), state_dict-compatible."""
    return GoogLeNet(
        INCEPTION_TABLE,
        num_classes,
        in_chans,
        aux_logits=aux_logits,
        transform_input=transform_input,
        dropout=dropout,
        dropout_aux=dropout_aux,
    )


@register_model(
    family="googlenet",
    paper=_PAPER,
    year=2014,
    min_size=31,
    # The paper's aux heads pool 5×5/3 and flatten into a fixed FC: 14-16 px maps at 4a/4d.
    option_sizes={"aux_logits": (223, 270)},
    params=6_998_552,
    macs=1_582_671_872,
)
def googlenet_paper(
    *,
    num_classes: int,
    in_chans: int,
    aux_logits: bool = False,
    dropout: float = 0.4,
    dropout_aux: float = 0.7,
) -> GoogLeNet:
    """GoogLeNet as the paper: true 5×5 branches, biases, no BatchNorm, LRN in the stem."""
    return GoogLeNet(
        INCEPTION_TABLE,
        num_classes,
        in_chans,
        paper=True,
        aux_logits=aux_logits,
        dropout=dropout,
        dropout_aux=dropout_aux,
    )
