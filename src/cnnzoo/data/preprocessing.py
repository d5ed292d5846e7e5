"""The one definition of "prepare an image for this model": :class:`Preprocessing`.

A ``Preprocessing`` says how an image becomes the tensor a network sees: the colour policy to
its channels, the resize rule (the shorter side to ``resize`` then a centre crop, or straight to
``H × W``), the interpolation, and ``(x - mean) / std``. Datasets (their validation transform,
and the deterministic first steps of the training one), ``eval``, ``predict`` and ``export``'s
check images all prepare images with :meth:`Preprocessing.transform`; the trainer records the
object in every weights file it writes (:meth:`Preprocessing.to_metadata`) and the weight loader
reads it back (:meth:`Preprocessing.from_metadata`), so that an image is prepared after training
exactly as the validation split was during it.

This module sits below both ``cnnzoo.data`` and ``cnnzoo.weights``: it imports only the colour
policy, torch and torchvision.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image
from torchvision.transforms import v2

from cnnzoo.checks import is_int
from cnnzoo.data.colour import convert_channels, pil_to_tensor
from cnnzoo.errors import InvalidArgumentError

INTERPOLATIONS = ("bilinear", "bicubic")


class ToChannels:
    """Gray ↔ RGB by the colour policy (a picklable callable, so it can go to workers)."""

    def __init__(self, chans: int) -> None:
        self.chans = chans

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return convert_channels(x, self.chans)

    def __repr__(self) -> str:
        return f"ToChannels({self.chans})"


class ResizeTo:
    """Resize to ``height × width`` (aspect ratio not kept), antialiased; an image already of
    that size is returned as it is (the resize would give it back unchanged, at a cost)."""

    def __init__(self, height: int, width: int, interpolation: str) -> None:
        self.size = (height, width)
        self.interpolation = interpolation
        self._resize = v2.Resize(self.size, interpolation=v2.InterpolationMode(interpolation),
                                 antialias=True)  # fmt: skip

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x if tuple(x.shape[-2:]) == self.size else self._resize(x)

    def __repr__(self) -> str:
        return f"ResizeTo({self.size[0]}, {self.size[1]}, {self.interpolation})"


class Normalize:
    """``(x - mean) / std`` per channel; the arithmetic of ``v2.Normalize`` without its
    per-call overhead (about 3 µs an image instead of 30)."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean).div_(self.std)

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()})"


class Prepare:
    """:meth:`Preprocessing.transform`: a PIL image (decoded by the colour policy), a float
    tensor ``(C, H, W)`` in [0, 1] or a uint8 one → the normalised tensor the network sees.
    Picklable."""

    def __init__(self, chans: int, steps: list[object]) -> None:
        self.chans = chans
        self.steps = v2.Compose(steps)

    def __call__(self, image: Image.Image | torch.Tensor) -> torch.Tensor:
        if isinstance(image, Image.Image):
            x = pil_to_tensor(image, self.chans)  # (C, H, W) in [0, 1]
        else:  # 8-bit tensors as torchvision's decoders give them, else already in [0, 1]
            x = image.float().div(255) if image.dtype == torch.uint8 else image.float()
        return self.steps(x)

    def __repr__(self) -> str:
        return f"Prepare({self.steps})"


@dataclass(frozen=True)
class Preprocessing:
    """How images must be prepared for a set of weights.

    Attributes:
        input_size: ``(C, H, W)`` the network sees.
        resize: side the shorter image side is resized to before cropping (``None``: resize
            straight to ``input_size``, aspect ratio not kept).
        crop: side of the centre crop after ``resize`` (``None``: ``H × W`` of ``input_size``).
        interpolation: ``"bilinear"`` or ``"bicubic"`` (resizing, antialiased).
        mean: per-channel mean subtracted after scaling pixels to [0, 1].
        std: per-channel standard deviation divided by after that.
        channel_order: ``"RGB"``, ``"L"`` (one grey channel) or ``"C=N"`` for other counts.
        class_names: the name of each output, or ``None`` when unknown (e.g. a new head).
        source: where these values come from (the file's metadata, a table, ``"assumed"``).
        dataset: the dataset the weights were trained on, when the file says
            (``"imagefolder:PATH"``, ``"digits"``, ...); ``None`` otherwise.
    """

    input_size: tuple[int, int, int]
    resize: int | None
    crop: int | None
    interpolation: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    channel_order: str
    class_names: tuple[str, ...] | None
    source: str
    dataset: str | None = None

    # --- preparing ---------------------------------------------------------------------------

    def steps(self) -> list[object]:
        """The deterministic first steps on a float tensor ``(C, H, W)`` in [0, 1]: the colour
        policy to ``C`` channels, then the resize (and crop). Normalisation is not among them:
        a training transform puts its augmentation between these and :meth:`normalize`.

        Raises:
            InvalidArgumentError: an interpolation other than bilinear or bicubic, or mean/std
                whose length is not the number of channels.
        """
        chans, height, width = self.input_size
        if self.interpolation not in INTERPOLATIONS:
            raise InvalidArgumentError(
                f"interpolation {self.interpolation!r} of the weights' preprocessing is not "
                f"{' or '.join(INTERPOLATIONS)}: fix model.pretrained_cfg."
            )
        if len(self.mean) != chans or len(self.std) != chans:
            raise InvalidArgumentError(
                f"the weights' preprocessing has mean/std for {len(self.mean)}/{len(self.std)} "
                f"channels but input_size {self.input_size}: fix model.pretrained_cfg."
            )
        if not self.resize:
            return [ToChannels(chans), ResizeTo(height, width, self.interpolation)]
        mode = v2.InterpolationMode(self.interpolation)
        # A crop of None would leave the images' aspect ratios, and sizes, unequal.
        crop = (self.crop, self.crop) if self.crop else (height, width)
        return [
            ToChannels(chans),
            v2.Resize(self.resize, interpolation=mode, antialias=True),
            v2.CenterCrop(crop),
        ]

    def normalize(self) -> Normalize:
        """The last step: ``(x - mean) / std``."""
        return Normalize(self.mean, self.std)

    def transform(self) -> Prepare:
        """The whole preparation as one picklable callable: PIL image or float tensor
        ``(C, H, W)`` in [0, 1] → normalised float tensor ``input_size``."""
        return Prepare(self.input_size[0], [*self.steps(), self.normalize()])

    def prepare(self, image: Image.Image | torch.Tensor) -> torch.Tensor:
        """One image prepared for the network (see :meth:`transform`, to prepare many)."""
        return self.transform()(image)

    def keeps(self, shape: tuple[int, ...]) -> bool:
        """True when :meth:`steps` leaves a tensor of ``shape`` (``(C, H, W)``) as it is."""
        if tuple(shape) != tuple(self.input_size):
            return False
        if not self.resize:
            return True
        height, width = self.input_size[1:]
        crop = (self.crop, self.crop) if self.crop else (height, width)
        return self.resize == min(height, width) and crop == (height, width)

    # --- saying what it does -----------------------------------------------------------------

    @property
    def provenance(self) -> str:
        """Where the values come from, as a reader should see it."""
        if self.source == "assumed":
            return "assumed: the file records no preprocessing"
        return f"from {self.source}"

    def describe(self) -> str:
        """One line: resize, crop, interpolation, mean/std, channels and classes."""
        steps = []
        if self.resize:
            steps.append(f"resize {self.resize} ({self.interpolation})")
            crop = self.crop or self.input_size[1]
            steps.append(f"centre crop {crop}")
        else:
            steps.append(f"resize to {self.input_size[1]}×{self.input_size[2]}")
        mean = ", ".join(f"{m:.3f}" for m in self.mean)
        std = ", ".join(f"{s:.3f}" for s in self.std)
        classes = f"{len(self.class_names)} named" if self.class_names else "unnamed"
        return (
            f"{', '.join(steps)}, {self.channel_order} in [0, 1], mean ({mean}), std ({std}); "
            f"{classes} classes [{self.provenance}]"
        )

    def describe_steps(self) -> str:
        """Every step of :meth:`transform` in one line, for a user checking what was done."""
        chans, height, width = self.input_size
        target = {1: "1 gray channel", 3: "RGB"}.get(chans, f"{chans} channels")
        steps = [f"colour policy to {target}, [0, 1]"]
        if self.resize:
            crop = f"{self.crop}×{self.crop}" if self.crop else f"{height}×{width}"
            steps.append(f"shorter side to {self.resize} ({self.interpolation}, antialiased)")
            steps.append(f"centre crop {crop}")
        else:
            steps.append(
                f"resize to {height}×{width} unless already so ({self.interpolation}, antialiased)"
            )
        mean = ", ".join(f"{m:.4g}" for m in self.mean)
        std = ", ".join(f"{s:.4g}" for s in self.std)
        steps.append(f"normalise mean ({mean}) std ({std})")
        return f"{'; '.join(steps)} [{self.provenance}]"

    # --- recording ---------------------------------------------------------------------------

    def to_metadata(self) -> dict[str, str]:
        """The fields a weights file records (safetensors metadata holds strings only)."""
        chans, height, width = self.input_size
        if height != width:
            raise InvalidArgumentError(
                f"input_size {self.input_size} is not square; cnnzoo weights files record one "
                "side: use a square input."
            )
        return {
            "in_chans": str(chans),
            "image_size": str(height),
            "resize": json.dumps(self.resize),
            "crop": json.dumps(self.crop),
            "interpolation": self.interpolation,
            "mean": json.dumps(list(self.mean)),
            "std": json.dumps(list(self.std)),
            "class_names": json.dumps(None if self.class_names is None else list(self.class_names)),
        }

    @classmethod
    def from_metadata(cls, meta: Mapping[str, Any], source: str) -> Preprocessing:
        """What :meth:`to_metadata` wrote (with ``meta["dataset"]`` when present).

        Files written before the resize rule was recorded have no ``resize``/``crop``/
        ``interpolation``: the trainer then prepared image folders by "shorter side to the
        image size, centre crop" and every other dataset by a plain resize, bilinear — which is
        what is returned for them.

        Raises:
            KeyError, ValueError, TypeError: a field missing or malformed.
        """
        chans, side = int(meta["in_chans"]), int(meta["image_size"])
        dataset = meta.get("dataset")
        if "resize" in meta:
            resize, crop = _side_or_none(meta["resize"]), _side_or_none(meta["crop"])
            interpolation = str(meta["interpolation"])
            if interpolation not in INTERPOLATIONS:
                raise ValueError(f"interpolation {interpolation!r}")
        else:
            folder = isinstance(dataset, str) and dataset.lower().startswith("imagefolder:")
            resize = crop = side if folder else None
            interpolation = "bilinear"
        names = json.loads(meta["class_names"])
        mean, std = tuple(json.loads(meta["mean"])), tuple(json.loads(meta["std"]))
        if chans < 1 or side < 1 or len(mean) != chans or len(std) != chans:
            raise ValueError(f"{chans} channels, side {side}, mean {mean}, std {std}")
        return cls(
            input_size=(chans, side, side),
            resize=resize,
            crop=crop,
            interpolation=interpolation,
            mean=tuple(float(m) for m in mean),
            std=tuple(float(s) for s in std),
            channel_order=channel_order(chans),
            class_names=None if names is None else tuple(str(n) for n in names),
            source=source + (f", trained on {dataset}" if dataset else ""),
            dataset=dataset,
        )


def _side_or_none(text: str) -> int | None:
    value = json.loads(text)
    if value is None:
        return None
    if not is_int(value) or value < 1:
        raise ValueError(f"side {value!r}")
    return value


def channel_order(chans: int) -> str:
    """``"L"``, ``"RGB"`` or ``"C=N"``."""
    return {1: "L", 3: "RGB"}.get(chans, f"C={chans}")
