"""Where the preprocessing of a set of weights comes from: the file's own metadata,
torchvision's and timm's published recipes, or an assumption said aloud. The
:class:`Preprocessing` itself (and how it prepares an image) is :mod:`cnnzoo.data.preprocessing`,
below both the datasets and the weights."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from cnnzoo.data.preprocessing import Preprocessing, channel_order
from cnnzoo.errors import WeightsError

if TYPE_CHECKING:
    from cnnzoo.weights.report import LoadReport


IMAGENET_MEAN = (0.485, 0.456, 0.406)


IMAGENET_STD = (0.229, 0.224, 0.225)


class TorchvisionFile(NamedTuple):
    builder: str
    tag: str
    resize: int
    crop: int
    interpolation: str


# torchvision's ImageNet weight files for the architectures we share, with the preprocessing of
# their `transforms` (torchvision/models/*.py, `Weights` enums; mean/std are ImageNet's for all).
# tests/test_weights.py checks this table against the installed torchvision.
TORCHVISION_FILES: dict[str, TorchvisionFile] = {
    f: TorchvisionFile(builder, tag, resize, crop, interpolation)
    for f, builder, tag, resize, crop, interpolation in (
        ("alexnet-owt-7be5be79.pth", "alexnet", "IMAGENET1K_V1", 256, 224, "bilinear"),
        ("vgg11-8a719046.pth", "vgg11", "IMAGENET1K_V1", 256, 224, "bilinear"),
        ("vgg11_bn-6002323d.pth", "vgg11_bn", "IMAGENET1K_V1", 256, 224, "bilinear"),
        ("vgg13-19584684.pth", "vgg13", "IMAGENET1K_V1", 256, 224, "bilinear"),
        ("vgg13_bn-abd245e5.pth", "vgg13_bn", "IMAGENET1K_V1", 256, 224, "bilinear"),
        ("vgg16-397923af.pth", "vgg16", "IMAGENET1K_V1", 256, 224, "bilinear"),
        ("vgg16_bn-6c64b313.pth", "vgg16_bn", "IMAGENET1K_V1", 256, 224, "bilinear"),
        ("vgg19-dcbb9e9d.pth", "vgg19", "IMAGENET1K_V1", 256, 224, "bilinear"),
        ("vgg19_bn-c79401a0.pth", "vgg19_bn", "IMAGENET1K_V1", 256, 224, "bilinear"),
        ("googlenet-1378be20.pth", "googlenet", "IMAGENET1K_V1", 256, 224, "bilinear"),
        ("resnet18-f37072fd.pth", "resnet18", "IMAGENET1K_V1", 256, 224, "bilinear"),
        ("resnet34-b627a593.pth", "resnet34", "IMAGENET1K_V1", 256, 224, "bilinear"),
        ("resnet50-0676ba61.pth", "resnet50", "IMAGENET1K_V1", 256, 224, "bilinear"),
        ("resnet50-11ad3fa6.pth", "resnet50", "IMAGENET1K_V2", 232, 224, "bilinear"),
        ("resnet101-63fe2227.pth", "resnet101", "IMAGENET1K_V1", 256, 224, "bilinear"),
        ("resnet101-cd907fc2.pth", "resnet101", "IMAGENET1K_V2", 232, 224, "bilinear"),
        ("resnet152-394f9c45.pth", "resnet152", "IMAGENET1K_V1", 256, 224, "bilinear"),
        ("resnet152-f82ba261.pth", "resnet152", "IMAGENET1K_V2", 232, 224, "bilinear"),
        ("densenet121-a639ec97.pth", "densenet121", "IMAGENET1K_V1", 256, 224, "bilinear"),
        ("densenet169-b2777c0a.pth", "densenet169", "IMAGENET1K_V1", 256, 224, "bilinear"),
        ("densenet201-c1103571.pth", "densenet201", "IMAGENET1K_V1", 256, 224, "bilinear"),
        ("densenet161-8d451a50.pth", "densenet161", "IMAGENET1K_V1", 256, 224, "bilinear"),
        ("mobilenet_v2-b0353104.pth", "mobilenet_v2", "IMAGENET1K_V1", 256, 224, "bilinear"),
        ("mobilenet_v2-7ebf99e0.pth", "mobilenet_v2", "IMAGENET1K_V2", 232, 224, "bilinear"),
        ("mobilenet_v3_large-8738ca79.pth", "mobilenet_v3_large", "IMAGENET1K_V1", 256, 224,
         "bilinear"),
        ("mobilenet_v3_large-5c1a4163.pth", "mobilenet_v3_large", "IMAGENET1K_V2", 232, 224,
         "bilinear"),
        ("mobilenet_v3_small-047dcff4.pth", "mobilenet_v3_small", "IMAGENET1K_V1", 256, 224,
         "bilinear"),
        ("efficientnet_b0_rwightman-7f5810bc.pth", "efficientnet_b0", "IMAGENET1K_V1", 256, 224,
         "bicubic"),
        ("efficientnet_b1_rwightman-bac287d4.pth", "efficientnet_b1", "IMAGENET1K_V1", 256, 240,
         "bicubic"),
        ("efficientnet_b1-c27df63c.pth", "efficientnet_b1", "IMAGENET1K_V2", 255, 240,
         "bilinear"),
        ("efficientnet_b2_rwightman-c35c1473.pth", "efficientnet_b2", "IMAGENET1K_V1", 288, 288,
         "bicubic"),
        ("efficientnet_b3_rwightman-b3899882.pth", "efficientnet_b3", "IMAGENET1K_V1", 320, 300,
         "bicubic"),
        ("efficientnet_b4_rwightman-23ab8bcd.pth", "efficientnet_b4", "IMAGENET1K_V1", 384, 380,
         "bicubic"),
        ("efficientnet_b5_lukemelas-1a07897c.pth", "efficientnet_b5", "IMAGENET1K_V1", 456, 456,
         "bicubic"),
        ("efficientnet_b6_lukemelas-24a108a5.pth", "efficientnet_b6", "IMAGENET1K_V1", 528, 528,
         "bicubic"),
        ("efficientnet_b7_lukemelas-c5b4e57e.pth", "efficientnet_b7", "IMAGENET1K_V1", 600, 600,
         "bicubic"),
    )
}  # fmt: skip


# timm architectures whose state_dict maps exactly onto ours, and the preprocessing of timm's
# default pretrained tag for each (input side, crop fraction, interpolation, mean, std).
# efficientnet_b5-b7 are left out: timm builds them with BatchNorm eps 1e-5 where ours (as
# torchvision's) use 1e-3, so the same tensors would compute something else; tf_efficientnet_*
# pad like TensorFlow ("SAME"), which no key reveals - docs/weights.md says so.
TIMM_ARCHS: dict[str, tuple[str, int, float, tuple[float, ...], tuple[float, ...]]] = {
    "mobilenet_v1": ("mobilenetv1_100.ra4_e3600_r224_in1k", 224, 0.875, (0.5,) * 3, (0.5,) * 3),
    "efficientnet_b0": ("efficientnet_b0.ra_in1k", 224, 0.875, IMAGENET_MEAN, IMAGENET_STD),
    "efficientnet_b1": ("efficientnet_b1.ra4_e3600_r240_in1k", 240, 0.9, (0.5,) * 3, (0.5,) * 3),
    "efficientnet_b2": ("efficientnet_b2.ra_in1k", 256, 0.875, IMAGENET_MEAN, IMAGENET_STD),
    "efficientnet_b3": ("efficientnet_b3.ra2_in1k", 288, 0.875, IMAGENET_MEAN, IMAGENET_STD),
    "efficientnet_b4": ("efficientnet_b4.ra2_in1k", 320, 0.875, IMAGENET_MEAN, IMAGENET_STD),
}


def cnnzoo_preprocessing(meta: Mapping[str, str], path: Path, kind: str) -> Preprocessing:
    """The preprocessing cnnzoo's trainer records (:meth:`Preprocessing.to_metadata`), read back;
    files from before the resize rule was recorded load too (see
    :meth:`Preprocessing.from_metadata`)."""
    try:
        return Preprocessing.from_metadata(meta, kind)
    except (KeyError, ValueError, TypeError) as err:
        raise WeightsError(f"{path} has incomplete cnnzoo metadata ({err}).") from None


def torchvision_preprocessing(known: TorchvisionFile) -> Preprocessing:
    from torchvision.models._meta import _IMAGENET_CATEGORIES

    return Preprocessing(
        input_size=(3, known.crop, known.crop),
        resize=known.resize,
        crop=known.crop,
        interpolation=known.interpolation,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        channel_order="RGB",
        class_names=tuple(_IMAGENET_CATEGORIES),
        source=f"torchvision {known.builder} {known.tag}",
    )


def timm_preprocessing(model_name: str) -> Preprocessing:
    from torchvision.models._meta import _IMAGENET_CATEGORIES

    tag, side, crop_pct, mean, std = TIMM_ARCHS[model_name]
    return Preprocessing(
        input_size=(3, side, side),
        resize=math.floor(side / crop_pct),
        crop=side,
        interpolation="bicubic",
        mean=mean,
        std=std,
        channel_order="RGB",
        # timm's ImageNet-1k class order is torchvision's (the sorted WordNet ids).
        class_names=tuple(_IMAGENET_CATEGORIES),
        source=f"timm {tag} defaults (assumed: timm files do not record their tag)",
    )


def assumed_preprocessing(spec: Any, chans: int, report: LoadReport) -> Preprocessing:
    side = spec.input_size[1]
    imagenet = chans == 3
    report.notes.append(
        "the file records no preprocessing: assuming "
        + ("ImageNet mean/std" if imagenet else "mean 0.5, std 0.5")
        + f" at {side} px; check it against where the weights came from"
    )
    return Preprocessing(
        input_size=(chans, side, side),
        resize=None,
        crop=None,
        interpolation="bilinear",
        mean=IMAGENET_MEAN if imagenet else (0.5,) * chans,
        std=IMAGENET_STD if imagenet else (0.5,) * chans,
        channel_order=channel_order(chans),
        class_names=None,
        source="assumed",
    )


def adapt_preprocessing(
    pre: Preprocessing, in_chans: int, new_head: bool, report: LoadReport
) -> Preprocessing:
    if new_head and pre.class_names is not None:
        pre = replace(pre, class_names=None)
    file_chans = len(pre.mean)
    if in_chans == file_chans:
        return pre
    mean: tuple[float, ...]
    std: tuple[float, ...]
    if in_chans == 1:
        mean, std = (sum(pre.mean) / file_chans,), (sum(pre.std) / file_chans,)
        rule = "averaged"
    else:
        mean = tuple(pre.mean[i % file_chans] for i in range(in_chans))
        std = tuple(pre.std[i % file_chans] for i in range(in_chans))
        rule = "repeated cyclically"
    report.notes.append(
        f"mean/std {rule} to {in_chans} channel(s): mean {tuple(round(m, 4) for m in mean)}, "
        f"std {tuple(round(s, 4) for s in std)}"
    )
    side = pre.input_size[1:]
    return replace(
        pre,
        input_size=(in_chans, *side),
        mean=mean,
        std=std,
        channel_order=channel_order(in_chans),
    )
