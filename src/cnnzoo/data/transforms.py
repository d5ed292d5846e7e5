"""Per-image transforms: channels, resize, augmentation, normalisation (tensors).

Every transform takes a float tensor ``(C, H, W)`` in [0, 1]. Random choices come from torch's
global generator: inside a data-loader worker that generator is seeded from (seed, epoch, worker
id) by :func:`cnnzoo.data.loader.seed_worker`, and in the main process by the trainer, so no
transform owns a generator of its own.

The deterministic steps (channels, resize: :meth:`Preprocessing.steps`, the one definition of
how an image is prepared for a model) are separate from the rest (augmentation, normalisation),
so that in-memory datasets can apply them once to all images (:func:`prepare_images`) instead of
once per image per epoch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from cnnzoo.choices import AUGMENTS
from cnnzoo.data.preprocessing import Normalize, Preprocessing, ToChannels

__all__ = [
    "AUGMENTS",
    "Normalize",
    "ShiftRotate",
    "ToChannels",
    "build_transform",
    "describe_augment",
    "prepare_images",
]

ROTATION_DEG = 10
SCALE = (0.9, 1.1)


class ShiftRotate:
    """``light`` augmentation in one pass: a random shift of up to ``pad`` pixels (zero padding
    + random crop) then a random rotation of up to ±``degrees`` (bilinear, zero fill).

    The same distribution, draws and arithmetic as ``v2.RandomCrop(size, padding=pad)`` followed
    by ``v2.RandomRotation(degrees, interpolation=BILINEAR)`` (both drawn from torch's global
    generator in the same order: top, left, angle), with the outputs equal within float rounding
    — but several times faster per image, without the generic per-call machinery: the shift is
    one ``F.pad``, and the rotation one ``grid_sample`` of the image plus a mask channel (which
    darkens the border where bilinear taps fall outside the image, as torchvision does).
    """

    def __init__(self, pad: int, degrees: float) -> None:
        self.pad = pad
        self.degrees = degrees
        self._base: dict[tuple[int, int], torch.Tensor] = {}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        chans, h, w = x.shape
        p = self.pad
        top = int(torch.randint(0, 2 * p + 1, size=()))
        left = int(torch.randint(0, 2 * p + 1, size=()))
        angle = torch.empty(1).uniform_(-self.degrees, self.degrees).item()
        # The shifted image (source pixel (r, c) lands at (r + p - top, c + p - left): the crop
        # window of the padded image), then a mask channel of ones. F.pad with a negative width
        # crops.
        dy, dx = p - top, p - left
        shifted = F.pad(x, (dx, -dx, dy, -dy))
        canvas = torch.cat((shifted, x.new_ones(1, h, w)))[None]
        out = F.grid_sample(
            canvas, self._grid(angle, h, w, x.dtype), mode="bilinear", padding_mode="zeros",
            align_corners=False,
        )[0]  # fmt: skip
        return out[:chans] * out[chans:]

    def _grid(self, angle: float, h: int, w: int, dtype: torch.dtype) -> torch.Tensor:
        """torchvision's rotation grid: output pixel centres (relative to the image centre)
        mapped through the inverse rotation, then scaled to [-1, 1]."""
        base = self._base.get((h, w))
        if base is None or base.dtype != dtype:
            xs = torch.linspace((1.0 - w) * 0.5, (w - 1.0) * 0.5, w, dtype=dtype)
            ys = torch.linspace((1.0 - h) * 0.5, (h - 1.0) * 0.5, h, dtype=dtype)
            gy, gx = torch.meshgrid(ys, xs, indexing="ij")
            base = torch.stack([gx, gy], dim=-1).view(h * w, 2)
            self._base[(h, w)] = base
        a = math.radians(angle)
        cos, sin = math.cos(a), math.sin(a)
        # torchvision's inverse matrix [[cos, -sin], [sin, cos]] (rows: source x, y), transposed
        # for `base @ theta` and divided by the half-sides.
        sx, sy = 0.5 * w, 0.5 * h
        theta = torch.tensor([[cos / sx, sin / sy], [-sin / sx, cos / sy]], dtype=dtype)
        return (base @ theta).view(1, h, w, 2)

    def __repr__(self) -> str:
        return f"ShiftRotate(pad={self.pad}, degrees={self.degrees})"


def prepare_images(images: torch.Tensor, pre: Preprocessing, *, chunk: int = 4096) -> torch.Tensor:
    """The deterministic steps of ``pre`` (:meth:`Preprocessing.steps`: channels, resize, crop)
    applied once to a whole ``(N, C, H, W)`` float tensor in [0, 1] (in chunks), giving
    ``(N, *pre.input_size)`` float32: what each image would be after those steps, computed with
    the same operations batched."""
    prefix = v2.Compose(pre.steps())
    out = torch.empty(len(images), *pre.input_size, dtype=torch.float32)
    for start in range(0, len(images), chunk):
        out[start : start + chunk] = prefix(images[start : start + chunk].float())
    return out


def build_transform(
    pre: Preprocessing, *, augment: str, flip: bool, prefix: bool = True
) -> v2.Compose:
    """The transform of one split: ``pre``'s deterministic steps, the augmentation, then
    ``pre``'s normalisation. With ``augment="none"`` it is ``pre.transform()`` on tensors.

    Args:
        pre: the preparation of the images (channels, resize rule, mean/std).
        augment: ``"none"``, ``"light"`` or ``"standard"`` (see :func:`describe_augment`).
        flip: whether ``"standard"`` may flip horizontally (never for digits: a flipped 2 or 7
            is not a digit, and a flipped 3 is an ε).
        prefix: include the deterministic steps; ``False`` when the images were passed through
            :func:`prepare_images` already.
    """
    steps = pre.steps() if prefix else []
    size = pre.input_size[1]
    interpolation = v2.InterpolationMode.BILINEAR
    # The shift: zero padding then a random crop, up to 1/8 of the side, as the CIFAR recipe
    # (pad 4 at 32) and small enough not to push a digit's strokes out of an 8×8 frame.
    if augment == "light":
        steps.append(ShiftRotate(_pad(size), ROTATION_DEG))
    elif augment == "standard":
        steps.append(v2.RandomCrop(size, padding=_pad(size)))
        steps.append(v2.RandomAffine(ROTATION_DEG, scale=SCALE, interpolation=interpolation))
        if flip:
            steps.append(v2.RandomHorizontalFlip())
    steps.append(pre.normalize())
    return v2.Compose(steps)


def _pad(size: int) -> int:
    return max(1, size // 8)


def describe_augment(augment: str, size: int, flip: bool, name: str) -> str:
    """One line for the notes saying what the training augmentation does."""
    if augment == "none":
        return "augment none: training images are only resized and normalised"
    text = (
        f"augment {augment} (training split only): random shift up to {_pad(size)} px "
        f"(zero padding + crop), rotation ±{ROTATION_DEG}°"
    )
    if augment == "standard":
        text += f", scale {SCALE[0]}–{SCALE[1]}"
        text += ", horizontal flip" if flip else f", no horizontal flip for {name} (not symmetric)"
    return text
