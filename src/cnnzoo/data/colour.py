"""The colour policy: any PIL image or image tensor to the channels a model asks for.

Every image reaches a model as a float tensor ``(C, H, W)`` in [0, 1] with ``C`` = 1 (gray) or
3 (RGB). The rule applied to each PIL mode is fixed and written into the dataset's notes, so that
nothing is dropped silently (an alpha channel, the low byte of a 16-bit image) and no image turns
into a 2- or 4-"channel" tensor:

- ``1``, ``L``: gray, divided by 255.
- ``I;16*``: 16-bit gray, divided by 65535 (``convert("L")`` would clip it instead).
- ``I``: 32-bit integer gray, read as 16-bit (how PNG and TIFF files reach this mode), divided by
  65535 and clipped to [0, 1].
- ``F``: float gray, taken as already in [0, 1] and clipped.
- ``LA``, ``La``, ``RGBA``, ``RGBa``, ``PA`` and ``P`` with a transparent colour: alpha
  composited onto white, because a transparent pixel's colour is arbitrary (often black).
- ``P``: palette expanded to RGB.
- ``CMYK``, ``YCbCr``, ``LAB``, ``HSV`` and anything else: PIL's ``convert("RGB")``.

Then gray → RGB repeats the channel, and RGB → gray is the ITU-R 601-2 luminance
``0.299 R + 0.587 G + 0.114 B`` (the weights PIL uses for ``convert("L")``).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

# ITU-R 601-2 luma, as PIL's RGB → L; used for tensors too so that both paths agree.
LUMA = (0.299, 0.587, 0.114)

_GRAY8 = {"1", "L"}
_GRAY16 = {"I;16", "I;16B", "I;16L", "I;16N"}
_ALPHA = {"LA", "La", "RGBA", "RGBa", "PA"}


def source_kind(img: Image.Image) -> str:
    """The image's mode, with ``"P+transparency"`` for a palette image with a transparent colour
    (it follows the alpha rule, not the plain palette one)."""
    if img.mode == "P" and "transparency" in img.info:
        return "P+transparency"
    return img.mode


def native_channels(kind: str) -> int:
    """1 for the gray modes, 3 for every other (colour, palette, alpha) mode."""
    return 1 if kind in _GRAY8 | _GRAY16 | {"I", "F", "LA", "La"} else 3


def colour_rule(kind: str, chans: int) -> str | None:
    """The rule that turns an image of ``kind`` (see :func:`source_kind`) into ``chans``
    channels, as text for the notes; ``None`` when the image is used as it is (8-bit gray to 1
    channel, RGB to 3)."""
    steps = []
    if kind in _GRAY16:
        steps.append("16-bit gray scaled by 1/65535")
    elif kind == "I":
        steps.append("32-bit gray read as 16-bit (scaled by 1/65535, clipped to [0, 1])")
    elif kind == "F":
        steps.append("float gray clipped to [0, 1]")
    elif kind in _ALPHA or kind == "P+transparency":
        steps.append("alpha composited onto white")
    elif kind == "P":
        steps.append("palette expanded to RGB")
    elif kind not in _GRAY8 | {"RGB"}:
        steps.append("converted to RGB by PIL")
    gray = native_channels(kind) == 1
    if gray and chans == 3:
        steps.append("gray repeated to RGB")
    elif not gray and chans == 1:
        steps.append("RGB → luminance 0.299 R + 0.587 G + 0.114 B")
    if not steps:
        return None
    return f"{kind} → {'L' if chans == 1 else 'RGB'} ({', '.join(steps)})"


def pil_to_tensor(img: Image.Image, chans: int) -> torch.Tensor:
    """Decode ``img`` into a float tensor ``(chans, H, W)`` in [0, 1] by the colour policy."""
    kind = source_kind(img)
    if kind in _GRAY8:
        array = np.asarray(img.convert("L"), dtype=np.float32) / 255
    elif kind in _GRAY16:
        array = np.asarray(img, dtype=np.float32) / 65535
    elif kind == "I":
        array = np.clip(np.asarray(img, dtype=np.float32) / 65535, 0, 1)
    elif kind == "F":
        array = np.clip(np.asarray(img, dtype=np.float32), 0, 1)
    elif kind in ("LA", "La"):
        gray_alpha = np.asarray(img.convert("LA"), dtype=np.float32) / 255
        array = _onto_white(gray_alpha[..., :1], gray_alpha[..., 1:])[..., 0]
    elif kind in _ALPHA or kind == "P+transparency":
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float32) / 255
        array = _onto_white(rgba[..., :3], rgba[..., 3:])
    else:
        array = np.asarray(img.convert("RGB"), dtype=np.float32) / 255
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    tensor = tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1)  # (C, H, W)
    return convert_channels(tensor, chans)


def _onto_white(colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    return colour * alpha + (1 - alpha)


def convert_channels(x: torch.Tensor, chans: int) -> torch.Tensor:
    """Gray ↔ RGB for a float tensor ``(..., C, H, W)``; returned as is when it already has
    ``chans`` channels."""
    have = x.shape[-3]
    if have == chans:
        return x
    if have == 1 and chans == 3:
        return x.expand(*x.shape[:-3], 3, *x.shape[-2:]).contiguous()
    if have == 3 and chans == 1:
        weights = torch.tensor(LUMA, dtype=x.dtype).view(3, 1, 1)
        return (x * weights).sum(dim=-3, keepdim=True)
    raise ValueError(f"cannot convert {have} channels to {chans}")
