"""Per-image transforms: channels, resize, augmentation, normalisation (torchvision v2, tensors).

Every transform takes a float tensor ``(C, H, W)`` in [0, 1]. Random choices come from torch's
global generator: inside a data-loader worker that generator is seeded from (seed, epoch, worker
id) by :func:`cnnzoo.data.loader.seed_worker`, and in the main process by the trainer, so no
transform owns a generator of its own.
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2

from cnnzoo.data.colour import convert_channels

AUGMENTS = ("none", "light", "standard")
ROTATION_DEG = 10
SCALE = (0.9, 1.1)


class ToChannels:
    """Gray ↔ RGB by the colour policy (a picklable callable, so it can go to workers)."""

    def __init__(self, chans: int) -> None:
        self.chans = chans

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return convert_channels(x, self.chans)

    def __repr__(self) -> str:
        return f"ToChannels({self.chans})"


def build_transform(
    *,
    chans: int,
    size: int,
    resize: str,
    augment: str,
    flip: bool,
    mean: tuple[float, ...],
    std: tuple[float, ...],
) -> v2.Compose:
    """The transform of one split.

    Args:
        chans: output channels (1 or 3).
        size: output side in pixels.
        resize: ``"none"`` (already ``size``), ``"square"`` (bilinear to ``size × size``) or
            ``"short-side"`` (bilinear, shorter side to ``size``, then centre crop), the last for
            image folders whose images differ in size and aspect.
        augment: ``"none"``, ``"light"`` or ``"standard"`` (see :func:`describe_augment`).
        flip: whether ``"standard"`` may flip horizontally (never for digits: a flipped 2 or 7
            is not a digit, and a flipped 3 is an ε).
        mean: per-channel mean to subtract, from the training split.
        std: per-channel standard deviation to divide by.
    """
    steps: list[object] = [ToChannels(chans)]
    interpolation = v2.InterpolationMode.BILINEAR
    if resize == "square":
        steps.append(v2.Resize((size, size), interpolation=interpolation, antialias=True))
    elif resize == "short-side":
        steps += [v2.Resize(size, interpolation=interpolation, antialias=True), v2.CenterCrop(size)]
    if augment != "none":
        # Zero padding then a random crop: a shift of up to 1/8 of the side, as the CIFAR recipe
        # (pad 4 at 32) and small enough not to push a digit's strokes out of an 8×8 frame.
        steps.append(v2.RandomCrop(size, padding=_pad(size)))
    if augment == "light":
        steps.append(v2.RandomRotation(ROTATION_DEG, interpolation=interpolation))
    elif augment == "standard":
        steps.append(v2.RandomAffine(ROTATION_DEG, scale=SCALE, interpolation=interpolation))
        if flip:
            steps.append(v2.RandomHorizontalFlip())
    steps.append(v2.Normalize(list(mean), list(std)))
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
